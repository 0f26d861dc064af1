//! The one place the mesh is started in-process: each service on a random port,
//! brought up in dependency order and pointed at the real addresses of the ones
//! before it, against the real stores, isolated per mesh by `marquee_kit::testing`; each gets its own `Settings`, cut from
//! the mesh's (`MeshSettings`).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use marquee_booking::{PayWaits, Sweeper};
use marquee_kit::shutdown::Shutdown;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::{Gql, MeshSettings};

/// A part of the mesh. `ALL` is the start order: a service only calls ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    User,
    Cinema,
    Payment,
    Booking,
    Ticket,
    Notification,
    Gateway,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::User,
        Service::Cinema,
        Service::Payment,
        Service::Booking,
        Service::Ticket,
        Service::Notification,
        Service::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::User => "user",
            Service::Cinema => "cinema",
            Service::Payment => "payment",
            Service::Booking => "booking",
            Service::Ticket => "ticket",
            Service::Notification => "notification",
            Service::Gateway => "gateway",
        }
    }

    /// Where the services that call this one look for it.
    fn upstream_url(self, settings: &mut MeshSettings) -> Option<&mut String> {
        let upstream = &mut settings.upstream;
        match self {
            Service::User => Some(&mut upstream.user_url),
            Service::Cinema => Some(&mut upstream.cinema_url),
            Service::Payment => Some(&mut upstream.payment_url),
            Service::Booking => Some(&mut upstream.booking_url),
            Service::Ticket => Some(&mut upstream.ticket_url),
            Service::Notification => Some(&mut upstream.notification_url),
            Service::Gateway => None,
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

type Hook<'a> = Box<dyn FnOnce(&mut MeshSettings) + Send + 'a>;

/// What to start, on which settings; `Mesh::builder()`.
#[must_use = "nothing starts until `start`"]
pub struct MeshBuilder<'a> {
    settings: Option<MeshSettings>,
    seed_demo: Option<bool>,
    skipped: Vec<Service>,
    configure: Vec<Hook<'a>>,
    before_gateway: Vec<Hook<'a>>,
}

impl<'a> MeshBuilder<'a> {
    /// Starts from these settings as they are, instead of fresh isolated test
    /// settings with the demo catalog seeded.
    pub fn settings(mut self, settings: MeshSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Whether cinema seeds the demo catalog.
    pub fn seed_demo(mut self, seed: bool) -> Self {
        self.seed_demo = Some(seed);
        self
    }

    /// Leaves `service` out; the others keep its configured upstream URL.
    pub fn without(mut self, service: Service) -> Self {
        self.skipped.push(service);
        self
    }

    pub fn without_gateway(self) -> Self {
        self.without(Service::Gateway)
    }

    /// Adjusts the settings every service gets (limits, switches). Hooks run in order.
    pub fn configure(mut self, hook: impl FnOnce(&mut MeshSettings) + Send + 'a) -> Self {
        self.configure.push(Box::new(hook));
        self
    }

    /// Adjusts the settings once the services run, for the gateway alone: e.g. routes
    /// its upstream URLs through a recording proxy. `Mesh::settings` keeps the result.
    pub fn before_gateway(mut self, hook: impl FnOnce(&mut MeshSettings) + Send + 'a) -> Self {
        self.before_gateway.push(Box::new(hook));
        self
    }

    /// Starts the chosen services in dependency order. If one fails to start, the ones
    /// already running are stopped.
    pub async fn start(self) -> anyhow::Result<Mesh> {
        let MeshBuilder { settings, seed_demo, skipped, configure, mut before_gateway } = self;
        marquee_kit::telemetry::install_crypto_provider();
        let mut settings = match settings {
            Some(settings) => settings,
            None => {
                let mut settings: MeshSettings = marquee_kit::testing::isolated_settings().await?;
                settings.cinema.seed_demo = true;
                settings
            }
        };
        if let Some(seed) = seed_demo {
            settings.cinema.seed_demo = seed;
        }
        for hook in configure {
            hook(&mut settings);
        }
        marquee_kit::telemetry::init(&settings.telemetry);

        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        let mut mesh = Mesh {
            settings,
            services: Vec::new(),
            metrics: Vec::new(),
            booking: None,
            http,
            shutdown: Shutdown::new(),
            tasks: JoinSet::new(),
        };
        for service in Service::ALL {
            if service == Service::Gateway {
                // `ALL` ends with the gateway: every other service runs by now.
                for hook in std::mem::take(&mut before_gateway) {
                    hook(&mut mesh.settings);
                }
            }
            if skipped.contains(&service) {
                continue;
            }
            let settings = &mesh.settings;
            let stop = mesh.shutdown.clone();
            let cannot = || format!("cannot build {service}");
            match service {
                Service::User => {
                    let app = marquee_user::Application::build(settings.user()).await.with_context(cannot)?;
                    mesh.serve(service, app.addr(), app.metrics_addr(), app.run_until_stopped(stop));
                }
                Service::Cinema => {
                    let app =
                        marquee_cinema::Application::build(settings.cinema()).await.with_context(cannot)?;
                    mesh.serve(service, app.addr(), app.metrics_addr(), app.run_until_stopped(stop));
                }
                Service::Payment => {
                    let app =
                        marquee_payment::Application::build(settings.payment()).await.with_context(cannot)?;
                    mesh.serve(service, app.addr(), app.metrics_addr(), app.run_until_stopped(stop));
                }
                Service::Booking => {
                    let app =
                        marquee_booking::Application::build(settings.booking()).await.with_context(cannot)?;
                    mesh.booking = Some((app.sweeper(), app.pay_waits()));
                    mesh.serve(service, app.addr(), app.metrics_addr(), app.run_until_stopped(stop));
                }
                Service::Ticket => {
                    let app =
                        marquee_ticket::Application::build(settings.ticket()).await.with_context(cannot)?;
                    mesh.serve(service, app.addr(), app.metrics_addr(), app.run_until_stopped(stop));
                }
                Service::Notification => {
                    let app = marquee_notification::Application::build(settings.notification())
                        .await
                        .with_context(cannot)?;
                    mesh.serve(service, app.addr(), app.metrics_addr(), app.run_until_stopped(stop));
                }
                Service::Gateway => {
                    let app =
                        marquee_gateway::Application::build(settings.gateway()).await.with_context(cannot)?;
                    // The gateway serves `/metrics` beside `/graphql`.
                    mesh.serve(service, app.addr(), app.addr(), app.run_until_stopped(stop));
                }
            }
        }
        Ok(mesh)
    }
}

/// A running mesh. Dropping it stops every service (they drain on their own);
/// `stop` also waits for them.
pub struct Mesh {
    /// What the services got, with the upstream URLs of the ones that run.
    pub settings: MeshSettings,
    services: Vec<(Service, SocketAddr)>,
    /// Where each service serves `/metrics`.
    metrics: Vec<(Service, SocketAddr)>,
    booking: Option<(Sweeper, PayWaits)>,
    http: reqwest::Client,
    shutdown: Shutdown,
    tasks: JoinSet<()>,
}

impl Mesh {
    /// Every service and the gateway, on fresh isolated settings with the demo
    /// catalog seeded, unless told otherwise.
    pub fn builder<'a>() -> MeshBuilder<'a> {
        MeshBuilder {
            settings: None,
            seed_demo: None,
            skipped: Vec::new(),
            configure: Vec::new(),
            before_gateway: Vec::new(),
        }
    }

    /// `Mesh::builder().start()`.
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    fn serve(
        &mut self,
        service: Service,
        addr: SocketAddr,
        metrics: SocketAddr,
        serving: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        if let Some(url) = service.upstream_url(&mut self.settings) {
            *url = format!("http://{addr}");
        }
        self.services.push((service, addr));
        self.metrics.push((service, metrics));
        self.tasks.spawn(async move {
            if let Err(error) = serving.await {
                eprintln!("{service} stopped with an error: {error:#}");
            }
        });
    }

    /// The bound address of `service`, if this mesh runs it.
    pub fn addr(&self, service: Service) -> Option<SocketAddr> {
        self.services.iter().find(|(s, _)| *s == service).map(|(_, addr)| *addr)
    }

    /// `http://` and the address of `service`.
    pub fn url(&self, service: Service) -> anyhow::Result<String> {
        let addr = self.addr(service).with_context(|| format!("this mesh runs no {service}"))?;
        Ok(format!("http://{addr}"))
    }

    /// Where `service` serves `GET /metrics`, if this mesh runs it.
    pub fn metrics_addr(&self, service: Service) -> Option<SocketAddr> {
        self.metrics.iter().find(|(s, _)| *s == service).map(|(_, addr)| *addr)
    }

    /// `service`'s metrics, as Prometheus text (`marquee_kit::testing::sample` reads them).
    pub async fn scrape(&self, service: Service) -> anyhow::Result<String> {
        let addr = self.metrics_addr(service).with_context(|| format!("this mesh runs no {service}"))?;
        marquee_kit::testing::scrape(addr).await
    }

    pub fn graphql_url(&self) -> anyhow::Result<String> {
        Ok(format!("{}/graphql", self.url(Service::Gateway)?))
    }

    /// The token every service watches: a node a test starts on its own can stop
    /// with the mesh through a child token.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The booking service's sweeper, for tests that turn the periodic sweep off.
    pub fn booking_sweeper(&self) -> Option<&Sweeper> {
        self.booking.as_ref().map(|(sweeper, _)| sweeper)
    }

    /// The booking service's saga drivers and how repeated pays waited.
    pub fn booking_pay_waits(&self) -> Option<&PayWaits> {
        self.booking.as_ref().map(|(_, pay_waits)| pay_waits)
    }

    /// Sends one GraphQL operation as `POST /graphql`; returns the response body.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> anyhow::Result<Gql> {
        let mut request =
            self.http.post(self.graphql_url()?).json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.context("gateway unreachable")?;
        let status = response.status();
        let body: Value = response.json().await.context("gateway answered non-JSON")?;
        anyhow::ensure!(status.is_success() || body.get("errors").is_some(), "HTTP {status}: {body}");
        Ok(Gql(body))
    }

    /// Registers a fresh customer and returns its access token.
    pub async fn register(&self, name: &str) -> anyhow::Result<String> {
        let email = format!("{name}.{}@example.com", uuid::Uuid::new_v4().simple());
        let gql = self
            .graphql(
                None,
                "mutation($input: RegisterInput!) { register(input: $input) { token user { id email } } }",
                json!({ "input": { "email": email, "password": "correct horse battery", "name": name } }),
            )
            .await?;
        gql.data()?["register"]["token"].as_str().map(str::to_owned).context("register returned no token")
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
        // Let them drain rather than abort them mid-request.
        self.tasks.detach_all();
    }
}
