//! The mesh of the scenarios: the services in-process through the shared harness
//! (`marquee_e2e::Mesh`, on the settings a scenario chooses), and the gateway as its
//! own process when its memory is measured (`Gateway`: any gateway process, also one
//! the chaos supervisor started).

use std::net::SocketAddr;

use anyhow::Context;
pub use marquee_e2e::{Mesh, Service};

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

    /// Where it listens and which process it is, for the subscribers' scenario.
    pub fn handle(&self) -> Gateway {
        Gateway { addr: self.addr, pid: self.child.id() }
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A running gateway process, however it was started: its address, and its process id
/// (None once it exited) for reading its memory.
#[derive(Debug, Clone, Copy)]
pub struct Gateway {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
}

impl Gateway {
    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.addr)
    }

    /// Resident memory (VmRSS) in MiB.
    pub fn rss_mb(&self) -> Option<f64> {
        rss_mb(self.pid?)
    }
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib / 1024.0)
}
