//! The whole mesh in-process (user, cinema, payment, booking, notification, gateway),
//! each on its own port against the real infrastructure, with the settings a scenario
//! chooses. Same wiring as `marquee-e2e`'s `Mesh`, which takes no settings.

use std::net::SocketAddr;

use anyhow::Context;
use marquee_common::Settings;
use marquee_common::shutdown::Shutdown;

pub struct Mesh {
    pub settings: Settings,
    pub gateway: SocketAddr,
    pub cinema: SocketAddr,
    shutdown: Shutdown,
    tasks: tokio::task::JoinSet<()>,
}

impl Mesh {
    /// Starts every service in dependency order, each pointed at the real addresses of
    /// the ones it calls.
    pub async fn start(mut settings: Settings) -> anyhow::Result<Self> {
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

        let app =
            marquee_gateway::Application::build(settings.clone()).await.context("cannot build gateway")?;
        let gateway = app.addr();
        let token = shutdown.clone();
        tasks.spawn(async move {
            if let Err(error) = app.run_until_stopped(token).await {
                eprintln!("gateway stopped with an error: {error:#}");
            }
        });
        Ok(Self { settings, gateway, cinema, shutdown, tasks })
    }

    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.gateway)
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
