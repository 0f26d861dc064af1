//! The whole mesh in-process (user, cinema, payment, booking, notification, gateway),
//! each on its own port against the real infrastructure, with the settings a scenario
//! chooses. Same wiring as `marquee-e2e`'s `Mesh`, which takes no settings.

use std::net::SocketAddr;

use anyhow::Context;
use marquee_common::Settings;
use marquee_common::shutdown::Shutdown;

pub struct Mesh {
    pub settings: Settings,
    /// The in-process gateway; `None` after `start_services`.
    pub gateway: Option<SocketAddr>,
    pub cinema: SocketAddr,
    shutdown: Shutdown,
    tasks: tokio::task::JoinSet<()>,
}

impl Mesh {
    /// Starts every service and the gateway in dependency order, each pointed at the
    /// real addresses of the ones it calls.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        Self::start_with(settings, true).await
    }

    /// Every service but the gateway (see `GatewayProcess`).
    pub async fn start_services(settings: Settings) -> anyhow::Result<Self> {
        Self::start_with(settings, false).await
    }

    async fn start_with(mut settings: Settings, with_gateway: bool) -> anyhow::Result<Self> {
        marquee_common::telemetry::install_crypto_provider();
        marquee_common::telemetry::init(&settings.telemetry);
        let shutdown = Shutdown::new();
        let mut tasks = tokio::task::JoinSet::new();

        macro_rules! start {
            ($name:literal, $app:ty, $url:ident) => {{
                let app = <$app>::build(settings.clone()).await.context(concat!("cannot build ", $name))?;
                let addr = app.addr();
                settings.upstream.$url = format!("http://{addr}");
                let token = shutdown.clone();
                tasks.spawn(async move {
                    if let Err(error) = app.run_until_stopped(token).await {
                        eprintln!("{} stopped with an error: {error:#}", $name);
                    }
                });
                addr
            }};
        }
        start!("user", marquee_user::Application, user_url);
        let cinema = start!("cinema", marquee_cinema::Application, cinema_url);
        start!("payment", marquee_payment::Application, payment_url);
        start!("booking", marquee_booking::Application, booking_url);
        start!("notification", marquee_notification::Application, notification_url);

        let mut gateway = None;
        if with_gateway {
            let app = marquee_gateway::Application::build(settings.clone())
                .await
                .context("cannot build gateway")?;
            gateway = Some(app.addr());
            let token = shutdown.clone();
            tasks.spawn(async move {
                if let Err(error) = app.run_until_stopped(token).await {
                    eprintln!("gateway stopped with an error: {error:#}");
                }
            });
        }
        Ok(Self { settings, gateway, cinema, shutdown, tasks })
    }

    pub fn graphql_url(&self) -> anyhow::Result<String> {
        let gateway = self.gateway.context("this mesh runs no gateway of its own")?;
        Ok(format!("http://{gateway}/graphql"))
    }

    pub fn cinema_url(&self) -> String {
        format!("http://{}", self.cinema)
    }

    /// Stops every service and waits for them to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The real gateway binary (`marquee-gateway`, built next to this one) as its own
/// process, so that its memory is its own: it reads the same configuration the
/// in-process services got, through `MARQUEE_*` variables.
pub struct GatewayProcess {
    child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl GatewayProcess {
    /// Starts the gateway against the services of `mesh` and waits for `/healthz`.
    pub async fn start(mesh: &Mesh, config_dir: &std::path::Path) -> anyhow::Result<Self> {
        let binary = std::env::current_exe()?.with_file_name("marquee-gateway");
        anyhow::ensure!(binary.is_file(), "{} not found: build it (scripts/bench does)", binary.display());
        // A free port: bind port 0, read it, let it go for the gateway to take.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let s = &mesh.settings;
        let child = tokio::process::Command::new(&binary)
            .env("MARQUEE_ENV", "test")
            .env("MARQUEE_CONFIG_DIR", config_dir)
            .env("MARQUEE_TELEMETRY__LEVEL", &s.telemetry.level)
            .env("MARQUEE_GATEWAY__HOST", "127.0.0.1")
            .env("MARQUEE_GATEWAY__PORT", port.to_string())
            .env("MARQUEE_UPSTREAM__USER_URL", &s.upstream.user_url)
            .env("MARQUEE_UPSTREAM__CINEMA_URL", &s.upstream.cinema_url)
            .env("MARQUEE_UPSTREAM__BOOKING_URL", &s.upstream.booking_url)
            .env("MARQUEE_UPSTREAM__PAYMENT_URL", &s.upstream.payment_url)
            .env("MARQUEE_UPSTREAM__NOTIFICATION_URL", &s.upstream.notification_url)
            .env("MARQUEE_REDIS__URL", s.redis.url.expose())
            .env("MARQUEE_REDIS__KEY_PREFIX", &s.redis.key_prefix)
            .env("MARQUEE_MONGO__URL", s.mongo.url.expose())
            .env("MARQUEE_MONGO__DATABASE_PREFIX", &s.mongo.database_prefix)
            .env("MARQUEE_POSTGRES__URL", s.postgres.url.expose())
            .env("MARQUEE_RABBITMQ__EXCHANGE", &s.rabbitmq.exchange)
            .env("MARQUEE_AUTH__JWT_SECRET", s.auth.jwt_secret.expose())
            .env("MARQUEE_AUTH__ISSUER", &s.auth.issuer)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(2)).build()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(format!("http://{addr}/healthz")).send().await
                && response.status().is_success()
            {
                break;
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "the gateway did not come up on {addr}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(Self { child, addr })
    }

    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// Resident memory (VmRSS) in MiB.
    pub fn rss_mb(&self) -> Option<f64> {
        rss_mb(self.child.id()?)
    }

    /// A reader of the gateway's RSS that can move into a sampling task.
    pub fn rss_reader(&self) -> impl Fn() -> Option<f64> + Send + 'static {
        let pid = self.child.id();
        move || rss_mb(pid?)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib / 1024.0)
}
