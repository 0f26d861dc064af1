//! Starts the whole Marquee mesh in-process (user, cinema, payment, booking,
//! notification and the gateway, each on a random port) against the real
//! PostgreSQL, MongoDB-wire server, Redis and RabbitMQ, isolated per test, and
//! talks to it the way clients do: GraphQL over HTTP.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use marquee_common::Settings;
use marquee_common::shutdown::Shutdown;
use serde_json::{Value, json};

/// A running mesh. Dropping it stops every service.
pub struct Mesh {
    pub settings: Settings,
    pub services: Vec<(&'static str, SocketAddr)>,
    pub gateway: SocketAddr,
    http: reqwest::Client,
    shutdown: Shutdown,
}

impl Mesh {
    /// Starts every service in dependency order, each pointed at the real addresses
    /// of the ones it calls, with the demo catalog seeded.
    pub async fn start() -> anyhow::Result<Self> {
        marquee_common::telemetry::install_crypto_provider();
        let mut settings = marquee_common::testing::isolated_settings().await?;
        settings.cinema.seed_demo = true;
        marquee_common::telemetry::init(&settings.telemetry);
        let shutdown = Shutdown::new();
        let mut services = Vec::new();

        macro_rules! start {
            ($name:literal, $app:ty, $url:ident) => {{
                let app = <$app>::build(settings.clone()).await.context(concat!("cannot build ", $name))?;
                let addr = app.addr();
                settings.upstream.$url = format!("http://{addr}");
                services.push(($name, addr));
                let token = shutdown.clone();
                tokio::spawn(async move {
                    if let Err(error) = app.run_until_stopped(token).await {
                        eprintln!("{} stopped with an error: {error:#}", $name);
                    }
                });
            }};
        }
        start!("user", marquee_user::Application, user_url);
        start!("cinema", marquee_cinema::Application, cinema_url);
        start!("payment", marquee_payment::Application, payment_url);
        start!("booking", marquee_booking::Application, booking_url);
        start!("notification", marquee_notification::Application, notification_url);

        let gateway =
            marquee_gateway::Application::build(settings.clone()).await.context("cannot build gateway")?;
        let gateway_addr = gateway.addr();
        let token = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = gateway.run_until_stopped(token).await {
                eprintln!("gateway stopped with an error: {error:#}");
            }
        });

        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        Ok(Self { settings, services, gateway: gateway_addr, http, shutdown })
    }

    pub fn graphql_url(&self) -> String {
        format!("http://{}/graphql", self.gateway)
    }

    /// Sends one GraphQL operation as `POST /graphql`; returns the response body.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> anyhow::Result<Gql> {
        let mut request =
            self.http.post(self.graphql_url()).json(&json!({ "query": query, "variables": variables }));
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
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A GraphQL response body.
#[derive(Debug)]
pub struct Gql(pub Value);

impl Gql {
    /// The `data` object, or an error carrying the GraphQL errors.
    pub fn data(&self) -> anyhow::Result<&Value> {
        if let Some(errors) = self.0.get("errors") {
            anyhow::bail!("GraphQL errors: {errors}");
        }
        self.0.get("data").context("response has neither data nor errors")
    }

    /// `extensions.code` of the first error, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.0.get("errors")?.get(0)?.get("extensions")?.get("code")?.as_str()
    }

    pub fn first_error(&self) -> Option<&Value> {
        self.0.get("errors")?.get(0)
    }
}
