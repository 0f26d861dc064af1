//! The run's own world: its port block, its configuration (shared stores renamed for
//! the run, `MARQUEE_*` variables), the processes to supervise (and a MongoDB-wire server
//! of its own for an outage of MongoDB), and dropping its stores afterwards.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_e2e::MeshSettings as Settings;
use marquee_kit::Config as _;
use marquee_kit::Secret;
use sqlx::Connection;

use crate::procs::{Probe, Spec};

/// The run's fixed port block (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub user: u16,
    pub cinema: u16,
    pub booking: u16,
    pub payment: u16,
    pub notification: u16,
    pub ticket: u16,
    pub gateway: u16,
    /// `/metrics` of user, cinema, booking, payment, notification and ticket.
    pub metrics: [u16; 6],
    /// The run's own MongoDB-wire server, when MongoDB is what an outage takes down.
    pub mongo: u16,
    /// The second replicas of a `--replicas` run.
    pub cinema_2: u16,
    pub booking_2: u16,
    pub payment_2: u16,
    pub gateway_2: u16,
    /// `/metrics` of the second cinema, booking and payment.
    pub metrics_2: [u16; 3],
    /// A third gateway (`marquee-bench replicas` holds its subscribers over three).
    pub gateway_3: u16,
}

impl Ports {
    pub fn from_base(base: u16) -> Self {
        Self {
            user: base + 1,
            cinema: base + 2,
            booking: base + 3,
            payment: base + 4,
            notification: base + 5,
            ticket: base + 6,
            gateway: base + 80,
            metrics: [base + 91, base + 92, base + 93, base + 94, base + 95, base + 96],
            mongo: base + 17,
            cinema_2: base + 12,
            booking_2: base + 13,
            payment_2: base + 14,
            gateway_2: base + 81,
            metrics_2: [base + 82, base + 83, base + 84],
            gateway_3: base + 85,
        }
    }

    fn all(&self) -> Vec<u16> {
        let grpc = [self.user, self.cinema, self.booking, self.payment, self.notification, self.ticket];
        let second = [self.cinema_2, self.booking_2, self.payment_2, self.gateway_2, self.gateway_3];
        grpc.into_iter()
            .chain([self.gateway, self.mongo])
            .chain(self.metrics)
            .chain(second)
            .chain(self.metrics_2)
            .collect()
    }

    /// Fails unless every port of the block is free now.
    pub fn ensure_free(&self) -> anyhow::Result<()> {
        for port in self.all() {
            std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                format!("port {port} is in use (another chaos run, or scripts/up?): pick another --port-base")
            })?;
        }
        Ok(())
    }
}

/// The configuration environment of the processes: `config/chaos.toml` overrides
/// nothing, so they run on `config/default.toml` (the production defaults: retry
/// backoffs, saga and charge leases, claim lifetimes) plus the `MARQUEE_*` variables of
/// `environment`.
pub const CONFIG_ENV: &str = "chaos";

/// Settings of the processes, with everything shared renamed for this run; creates the
/// run's (empty) PostgreSQL database, which the cinema service migrates.
pub async fn isolated_settings(config_dir: &Path, tag: &str) -> anyhow::Result<Settings> {
    let mut settings = Settings::load_from(config_dir, CONFIG_ENV)?;
    let base = settings.postgres.url.expose().clone();
    let (server, _) = base.rsplit_once('/').context("postgres url has no database part")?;
    let database = format!("marquee_chaos_{tag}");
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .context("cannot reach PostgreSQL to create the run's database")?;
    // The name is built from a UUID above, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{database}""#)))
        .execute(&mut admin)
        .await
        .context("cannot create the run's database")?;
    settings.postgres.url = Secret::new(format!("{server}/{database}"));
    settings.mongo.database_prefix = format!("mqchaos_{tag}");
    settings.redis.key_prefix = format!("mqchaos:{tag}:");
    settings.rabbitmq.exchange = format!("marquee.events.chaos.{tag}");
    settings.rabbitmq.notification_queue = format!("marquee.notifications.chaos.{tag}");
    settings.rabbitmq.ticket_queue = format!("marquee.tickets.chaos.{tag}");
    // Like test queues: gone 10 minutes after their last consumer.
    settings.rabbitmq.queue_expires_ms = Some(600_000);
    Ok(settings)
}

/// Defaults for knobs a run may tune through the environment (`MARQUEE_...` set when
/// the suite starts wins): logs as JSON lines (grep-able by id), random seats allowed
/// to strand a neighbour (the seating rule would refuse them for another reason than
/// contention), and no rate limits (every customer comes from 127.0.0.1).
const TUNING: [(&str, &str); 7] = [
    ("MARQUEE_TELEMETRY__LEVEL", "info"),
    // A run lasts minutes: reconciliation looks every 2 s at events over 10 s old.
    ("MARQUEE_NOTIFICATION__RECONCILE_EVERY_MS", "2000"),
    ("MARQUEE_NOTIFICATION__RECONCILE_GRACE_MS", "10000"),
    ("MARQUEE_TELEMETRY__FORMAT", "json"),
    ("MARQUEE_CINEMA__NO_ORPHAN_SEATS", "false"),
    ("MARQUEE_GATEWAY__RATE_LIMIT__PER_IP", "1000000000"),
    ("MARQUEE_GATEWAY__RATE_LIMIT__PER_USER", "1000000000"),
];

/// The processes a `--replicas` run starts twice: (second replica's name, the first's).
pub const REPLICATED: [(&str, &str); 4] =
    [("cinema-2", "cinema"), ("booking-2", "booking"), ("payment-2", "payment"), ("gateway-2", "gateway")];

/// What a `--replicas` run kills: one replica of each replicated process. For booking
/// and payment the first, which starts first and so holds the outbox lease: the
/// second must take the lease over. For cinema and the gateway the second.
pub const KILLED_REPLICAS: [&str; 4] = ["cinema-2", "booking", "payment", "gateway-2"];

/// The environment every process gets on top of the inherited one. With `replicas`,
/// the upstream URLs of cinema, booking and payment list both replicas.
pub fn environment(
    settings: &Settings,
    ports: Ports,
    config_dir: &Path,
    replicas: bool,
) -> Vec<(String, String)> {
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let urls = |first: u16, second: u16| {
        if replicas { format!("{},{}", url(first), url(second)) } else { url(first) }
    };
    let expires = settings.rabbitmq.queue_expires_ms.map(|ms| ms.to_string()).unwrap_or_default();
    let mut env: Vec<(String, String)> = [
        ("MARQUEE_ENV", CONFIG_ENV.to_owned()),
        ("MARQUEE_CONFIG_DIR", config_dir.display().to_string()),
        ("MARQUEE_POSTGRES__URL", settings.postgres.url.expose().clone()),
        ("MARQUEE_MONGO__URL", settings.mongo.url.expose().clone()),
        ("MARQUEE_MONGO__DATABASE_PREFIX", settings.mongo.database_prefix.clone()),
        ("MARQUEE_REDIS__KEY_PREFIX", settings.redis.key_prefix.clone()),
        ("MARQUEE_RABBITMQ__EXCHANGE", settings.rabbitmq.exchange.clone()),
        ("MARQUEE_RABBITMQ__NOTIFICATION_QUEUE", settings.rabbitmq.notification_queue.clone()),
        ("MARQUEE_RABBITMQ__TICKET_QUEUE", settings.rabbitmq.ticket_queue.clone()),
        ("MARQUEE_RABBITMQ__QUEUE_EXPIRES_MS", expires),
        ("MARQUEE_CINEMA__SEED_DEMO", "false".to_owned()),
        ("MARQUEE_USER__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_CINEMA__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_BOOKING__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_PAYMENT__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_NOTIFICATION__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_TICKET__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_GATEWAY__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_USER__PORT", ports.user.to_string()),
        ("MARQUEE_CINEMA__PORT", ports.cinema.to_string()),
        ("MARQUEE_BOOKING__PORT", ports.booking.to_string()),
        ("MARQUEE_PAYMENT__PORT", ports.payment.to_string()),
        ("MARQUEE_NOTIFICATION__PORT", ports.notification.to_string()),
        ("MARQUEE_USER__METRICS_PORT", ports.metrics[0].to_string()),
        ("MARQUEE_CINEMA__METRICS_PORT", ports.metrics[1].to_string()),
        ("MARQUEE_BOOKING__METRICS_PORT", ports.metrics[2].to_string()),
        ("MARQUEE_PAYMENT__METRICS_PORT", ports.metrics[3].to_string()),
        ("MARQUEE_NOTIFICATION__METRICS_PORT", ports.metrics[4].to_string()),
        ("MARQUEE_TICKET__METRICS_PORT", ports.metrics[5].to_string()),
        ("MARQUEE_TICKET__PORT", ports.ticket.to_string()),
        ("MARQUEE_GATEWAY__PORT", ports.gateway.to_string()),
        ("MARQUEE_UPSTREAM__USER_URL", url(ports.user)),
        ("MARQUEE_UPSTREAM__CINEMA_URL", urls(ports.cinema, ports.cinema_2)),
        ("MARQUEE_UPSTREAM__BOOKING_URL", urls(ports.booking, ports.booking_2)),
        ("MARQUEE_UPSTREAM__PAYMENT_URL", urls(ports.payment, ports.payment_2)),
        ("MARQUEE_UPSTREAM__NOTIFICATION_URL", url(ports.notification)),
        ("MARQUEE_UPSTREAM__TICKET_URL", url(ports.ticket)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (key, value) in TUNING {
        if std::env::var_os(key).is_none() {
            env.push((key.to_owned(), value.to_owned()));
        }
    }
    env
}

/// The seven processes in start order: cinema migrates before booking needs it, the
/// ticket service runs before the notification worker (which puts its codes in
/// confirmations, waiting for them while it is down), and the gateway comes last; the
/// run's own MongoDB-wire server before them all when there is one, and the second
/// replicas (`REPLICATED`) after them when `replicas`.
pub fn specs(
    bin_dir: &Path,
    env: &[(String, String)],
    ports: Ports,
    mongo: Option<&PrivateMongo>,
    replicas: bool,
) -> Vec<Spec> {
    let grpc = |port: u16| Probe::Grpc(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let mut specs: Vec<Spec> = [
        ("user", grpc(ports.user)),
        ("cinema", grpc(ports.cinema)),
        ("payment", grpc(ports.payment)),
        ("booking", grpc(ports.booking)),
        ("ticket", grpc(ports.ticket)),
        ("notification", grpc(ports.notification)),
        ("gateway", Probe::Http(format!("http://127.0.0.1:{}/healthz", ports.gateway))),
    ]
    .into_iter()
    .map(|(name, probe)| Spec {
        name,
        binary: bin_dir.join(format!("marquee-{name}")),
        args: Vec::new(),
        env: env.to_vec(),
        probe,
    })
    .collect();
    if replicas {
        for (name, of) in REPLICATED {
            let upper = of.to_uppercase();
            let (port, metrics) = match of {
                "cinema" => (ports.cinema_2, ports.metrics_2[0]),
                "booking" => (ports.booking_2, ports.metrics_2[1]),
                "payment" => (ports.payment_2, ports.metrics_2[2]),
                // The gateway serves /metrics on its HTTP port.
                _ => {
                    specs.push(gateway_replica(bin_dir, env, name, ports.gateway_2));
                    continue;
                }
            };
            // Set after the first replica's ports, so they win.
            let mut env = env.to_vec();
            env.push((format!("MARQUEE_{upper}__PORT"), port.to_string()));
            env.push((format!("MARQUEE_{upper}__METRICS_PORT"), metrics.to_string()));
            specs.push(Spec {
                name,
                binary: bin_dir.join(format!("marquee-{of}")),
                args: Vec::new(),
                env,
                probe: grpc(port),
            });
        }
    }
    if let Some(mongo) = mongo {
        specs.insert(0, mongo.spec(ports.mongo));
    }
    specs
}

/// One more gateway process, `name`, listening on `port` (it serves `/healthz` and
/// `/metrics` there): the environment of the first with its port.
pub fn gateway_replica(bin_dir: &Path, env: &[(String, String)], name: &'static str, port: u16) -> Spec {
    // Set after the first replica's port, so it wins.
    let mut env = env.to_vec();
    env.push(("MARQUEE_GATEWAY__PORT".to_owned(), port.to_string()));
    Spec {
        name,
        binary: bin_dir.join("marquee-gateway"),
        args: Vec::new(),
        env,
        probe: Probe::Http(format!("http://127.0.0.1:{port}/healthz")),
    }
}

/// Waits (up to 30 s) until the gateway on `port` finds every upstream healthy
/// (`/readyz` answers 200).
pub async fn wait_until_ready(port: u16) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
        anyhow::ensure!(Instant::now() < deadline, "the gateway's /readyz did not answer 200 within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A MongoDB-wire server of the run's own (`secantusd-rs`, the binary `scripts/infra`
/// builds, found through `MARQUEE_SECANTUS_BIN`; its storage settings come with the
/// environment `scripts/infra secantus-env` gives `scripts/chaos`, as for the shared
/// one), so that an outage of MongoDB takes down only this run's store, not the
/// machine's shared one.
pub struct PrivateMongo {
    binary: PathBuf,
    data: PathBuf,
}

impl PrivateMongo {
    pub const NAME: &str = "mongodb";

    pub fn new(data: PathBuf) -> anyhow::Result<Self> {
        let binary: PathBuf = std::env::var_os("MARQUEE_SECANTUS_BIN")
            .context("MARQUEE_SECANTUS_BIN is not set: run the outage of MongoDB through scripts/chaos")?
            .into();
        std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        Ok(Self { binary, data })
    }

    /// `configured` (`mongodb://host:port/...`) pointed at this server instead, keeping
    /// its options.
    pub fn url(configured: &str, port: u16) -> anyhow::Result<String> {
        let rest = configured.strip_prefix("mongodb://").context("only mongodb:// URLs are supported")?;
        let tail = rest.find(['/', '?']).map_or("", |at| &rest[at..]);
        Ok(format!("mongodb://127.0.0.1:{port}{tail}"))
    }

    fn spec(&self, port: u16) -> Spec {
        let args = ["--host", "127.0.0.1", "--port", &port.to_string(), "--storage-path"]
            .into_iter()
            .map(str::to_owned)
            .chain([self.data.display().to_string(), "--cache-size".to_owned(), "256M".to_owned()])
            .collect();
        Spec {
            name: Self::NAME,
            binary: self.binary.clone(),
            args,
            env: Vec::new(),
            probe: Probe::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        }
    }
}

/// Drops the run's PostgreSQL and MongoDB databases (the data of the run's own MongoDB,
/// stopped by now, when it had one).
pub async fn drop_stores(settings: &Settings, mongo: Option<&PrivateMongo>) -> anyhow::Result<()> {
    let url = settings.postgres.url.expose();
    let (server, database) = url.rsplit_once('/').context("postgres url has no database part")?;
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#)))
        .execute(&mut admin)
        .await
        .context("cannot drop the run's database")?;
    if let Some(mongo) = mongo {
        return std::fs::remove_dir_all(&mongo.data)
            .with_context(|| format!("cannot remove {}", mongo.data.display()));
    }
    let mongo = mongodb::Client::with_uri_str(settings.mongo.url.expose()).await?;
    for service in ["user", "booking", "payment", "notification", "ticket"] {
        mongo.database(&settings.mongo.database_name(service)).drop().await?;
    }
    Ok(())
}

/// The AMQP port of the broker the mesh uses (from `amqp://user:pass@host:port/vhost`).
pub fn rabbitmq_port(settings: &Settings) -> u16 {
    let url = settings.rabbitmq.url.expose();
    url.rsplit('@')
        .next()
        .and_then(|host| host.split('/').next())
        .and_then(|authority| authority.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(5672)
}
