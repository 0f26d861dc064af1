//! `marquee-bench chaos` (run by `scripts/chaos`): the mesh's six real processes
//! (`marquee-user`, `-cinema`, `-payment`, `-booking`, `-notification`, `-gateway`,
//! from the build directory this binary sits in) on a fixed port block of their own,
//! with stores of their own for the run, under customers booking through GraphQL while
//! a killer SIGKILLs every process in turn and restarts RabbitMQ and Redis once each.
//! Afterwards it waits (bounded) for the mesh to settle and checks the stores against
//! every promise made to the customers (`verify`), then writes a JSON report and prints
//! a summary; any failed check makes the run fail.
//!
//! Ports: the block `--port-base` (default 7100) + 1..5 for user, cinema, booking,
//! payment and notification, + 80 for the gateway and + 95 for notification metrics:
//! below Linux's ephemeral range, clear of `scripts/up`'s 7001-7005, 8080 and 9105.
//! Stores: PostgreSQL database `marquee_chaos_<tag>`, MongoDB databases
//! `mqchaos_<tag>_<service>`, Redis keys `mqchaos:<tag>:`, RabbitMQ exchange
//! `marquee.events.chaos.<tag>` and queue `marquee.notifications.chaos.<tag>` (with its
//! dead-letter and retry queues, deleted at the end of every run). A clean run drops
//! its databases; a failed one keeps them for inspection (and `--keep` always does).
//! Configuration: `config/default.toml` (the production defaults) and the `MARQUEE_*`
//! variables of `environment`; the brokers are restarted as `crate::brokers` says.

mod checks;
mod customer;
mod killer;
mod report;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_common::Secret;
use marquee_common::Settings;
use marquee_common::shutdown::Shutdown;
use sqlx::Connection;
use tonic::transport::Endpoint;

use crate::brokers::{self, RedisServer};
use crate::catalog::{Rng, SEATS, build_hall};
use crate::flash_sale::Config;
use crate::gql::Client;
use crate::procs::{Probe, Spec, Supervisor};
use crate::stores::Stores;

/// After the load, how long customers may still start a new round of the purchase
/// they are in (a payment sent again after polling).
const GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Options {
    pub short: bool,
    pub customers: usize,
    /// Seconds of load (at least: the load also lasts until the killer is done).
    pub seconds: u64,
    pub kills: usize,
    /// Restart RabbitMQ and Redis once each (they are shared with the whole machine).
    pub brokers: bool,
    /// Customers pick seats among the first `seat_pool` of the 10,000-seat hall.
    pub seat_pool: usize,
    /// Registrations in flight at once (default: every customer at once).
    pub registrations_at_once: Option<usize>,
    pub port_base: u16,
    pub out: Option<PathBuf>,
    pub logs: Option<PathBuf>,
    /// Where the service binaries are (default: next to this one).
    pub bin_dir: Option<PathBuf>,
    /// The processes' configuration directory (default: the repository's `config/`).
    pub config_dir: Option<PathBuf>,
    /// Keep the run's databases even when every check passes.
    pub keep: bool,
    /// How long the mesh may take to settle after the load.
    pub settle_seconds: u64,
    /// A process (by name) or `mongodb`, kept down for `outage_seconds` mid-load.
    pub outage: Option<String>,
    pub outage_seconds: u64,
}

impl Options {
    pub const USAGE: &str = "marquee-bench chaos [--short] [--customers N] [--seconds N] [--kills N] \
        [--no-brokers|--brokers] [--seat-pool N] [--registrations-at-once N] [--port-base N] [--settle-seconds N] \
        [--outage PROCESS|mongodb] [--outage-seconds N] \
        [--out FILE] [--logs DIR] [--bin-dir DIR] [--config-dir DIR] [--keep]";

    /// Full run: 32 customers, 60 s, 12 kills. `--short`: 32 customers, 20 s, 6 kills
    /// (each process once). Both restart each broker once unless `--no-brokers`.
    /// `--outage X`: X down for 30 s in the middle of 90 s of load, and (unless given)
    /// no kills and no broker restarts (`--brokers` adds them), so that the outage is the
    /// only fault.
    pub fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let args: Vec<String> = args.collect();
        let short = args.iter().any(|a| a == "--short");
        let mut options = Self {
            short,
            customers: 32,
            seconds: if short { 20 } else { 60 },
            kills: if short { 6 } else { 12 },
            brokers: true,
            seat_pool: 2000,
            registrations_at_once: None,
            port_base: 7100,
            out: None,
            logs: None,
            bin_dir: None,
            config_dir: None,
            keep: false,
            settle_seconds: 120,
            outage: None,
            outage_seconds: 30,
        };
        let given = |flag: &str| args.iter().any(|a| a == flag);
        if given("--outage") {
            options.seconds = 90;
            options.kills = 0;
            options.brokers = false;
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--short" => {}
                "--no-brokers" => options.brokers = false,
                "--brokers" => options.brokers = true,
                "--outage" => options.outage = Some(value("--outage")?),
                "--outage-seconds" => options.outage_seconds = value("--outage-seconds")?.parse()?,
                "--keep" => options.keep = true,
                "--customers" => options.customers = value("--customers")?.parse()?,
                "--seconds" => options.seconds = value("--seconds")?.parse()?,
                "--kills" => options.kills = value("--kills")?.parse()?,
                "--seat-pool" => options.seat_pool = value("--seat-pool")?.parse()?,
                "--registrations-at-once" => {
                    options.registrations_at_once = Some(value("--registrations-at-once")?.parse()?)
                }
                "--port-base" => options.port_base = value("--port-base")?.parse()?,
                "--settle-seconds" => options.settle_seconds = value("--settle-seconds")?.parse()?,
                "--out" => options.out = Some(value("--out")?.into()),
                "--logs" => options.logs = Some(value("--logs")?.into()),
                "--bin-dir" => options.bin_dir = Some(value("--bin-dir")?.into()),
                "--config-dir" => options.config_dir = Some(value("--config-dir")?.into()),
                other => anyhow::bail!("unknown option {other}; usage: {}", Self::USAGE),
            }
        }
        anyhow::ensure!(options.customers >= 1, "--customers must be at least 1");
        anyhow::ensure!((2..=SEATS).contains(&options.seat_pool), "--seat-pool must be 2..={SEATS}");
        anyhow::ensure!(options.port_base <= 65_000, "--port-base must leave room for the block");
        Ok(options)
    }
}

/// The run's fixed port block (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub user: u16,
    pub cinema: u16,
    pub booking: u16,
    pub payment: u16,
    pub notification: u16,
    pub gateway: u16,
    pub metrics: u16,
    /// The run's own MongoDB-wire server, when MongoDB is what an outage takes down.
    pub mongo: u16,
}

impl Ports {
    pub fn from_base(base: u16) -> Self {
        Self {
            user: base + 1,
            cinema: base + 2,
            booking: base + 3,
            payment: base + 4,
            notification: base + 5,
            gateway: base + 80,
            metrics: base + 95,
            mongo: base + 17,
        }
    }

    fn all(&self) -> [u16; 8] {
        [
            self.user,
            self.cinema,
            self.booking,
            self.payment,
            self.notification,
            self.gateway,
            self.metrics,
            self.mongo,
        ]
    }

    /// Fails unless every port of the block is free now.
    fn ensure_free(&self) -> anyhow::Result<()> {
        for port in self.all() {
            std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
                format!("port {port} is in use (another chaos run, or scripts/up?): pick another --port-base")
            })?;
        }
        Ok(())
    }
}

/// The configuration environment of the processes: there is no `config/chaos.toml`,
/// so they run on `config/default.toml` (the production defaults: retry backoffs, saga
/// and charge leases, claim lifetimes) plus the `MARQUEE_*` variables of `environment`.
const CONFIG_ENV: &str = "chaos";

/// Settings of the processes, with everything shared renamed for this run; creates the
/// run's (empty) PostgreSQL database, which the cinema service migrates.
async fn isolated_settings(config_dir: &Path, tag: &str) -> anyhow::Result<Settings> {
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
    // Like test queues: gone 10 minutes after their last consumer.
    settings.rabbitmq.queue_expires_ms = Some(600_000);
    Ok(settings)
}

/// Defaults for knobs a run may tune through the environment (`MARQUEE_...` set when
/// the suite starts wins): logs as JSON lines (grep-able by id), random seats allowed
/// to strand a neighbour (the seating rule would refuse them for another reason than
/// contention), and no rate limits (every customer comes from 127.0.0.1).
const TUNING: [(&str, &str); 5] = [
    ("MARQUEE_TELEMETRY__LEVEL", "info"),
    ("MARQUEE_TELEMETRY__FORMAT", "json"),
    ("MARQUEE_CINEMA__NO_ORPHAN_SEATS", "false"),
    ("MARQUEE_GATEWAY__RATE_LIMIT__PER_IP", "1000000000"),
    ("MARQUEE_GATEWAY__RATE_LIMIT__PER_USER", "1000000000"),
];

/// The environment every process gets on top of the inherited one.
fn environment(settings: &Settings, ports: Ports, config_dir: &Path) -> Vec<(String, String)> {
    let url = |port: u16| format!("http://127.0.0.1:{port}");
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
        ("MARQUEE_RABBITMQ__QUEUE_EXPIRES_MS", expires),
        ("MARQUEE_CINEMA__SEED_DEMO", "false".to_owned()),
        ("MARQUEE_USER__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_CINEMA__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_BOOKING__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_PAYMENT__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_NOTIFICATION__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_GATEWAY__HOST", "127.0.0.1".to_owned()),
        ("MARQUEE_USER__PORT", ports.user.to_string()),
        ("MARQUEE_CINEMA__PORT", ports.cinema.to_string()),
        ("MARQUEE_BOOKING__PORT", ports.booking.to_string()),
        ("MARQUEE_PAYMENT__PORT", ports.payment.to_string()),
        ("MARQUEE_NOTIFICATION__PORT", ports.notification.to_string()),
        ("MARQUEE_NOTIFICATION__METRICS_PORT", ports.metrics.to_string()),
        ("MARQUEE_GATEWAY__PORT", ports.gateway.to_string()),
        ("MARQUEE_UPSTREAM__USER_URL", url(ports.user)),
        ("MARQUEE_UPSTREAM__CINEMA_URL", url(ports.cinema)),
        ("MARQUEE_UPSTREAM__BOOKING_URL", url(ports.booking)),
        ("MARQUEE_UPSTREAM__PAYMENT_URL", url(ports.payment)),
        ("MARQUEE_UPSTREAM__NOTIFICATION_URL", url(ports.notification)),
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

/// The six processes in start order: cinema migrates before booking needs it, and the
/// gateway comes last; the run's own MongoDB-wire server before them all when there is
/// one.
fn specs(bin_dir: &Path, env: &[(String, String)], ports: Ports, mongo: Option<&PrivateMongo>) -> Vec<Spec> {
    let grpc = |port: u16| Probe::Grpc(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    let mut specs: Vec<Spec> = [
        ("user", grpc(ports.user)),
        ("cinema", grpc(ports.cinema)),
        ("payment", grpc(ports.payment)),
        ("booking", grpc(ports.booking)),
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
    if let Some(mongo) = mongo {
        specs.insert(0, mongo.spec(ports.mongo));
    }
    specs
}

/// A MongoDB-wire server of the run's own (`secantusd-rs`, the binary `scripts/infra`
/// builds, found through `MARQUEE_SECANTUS_BIN`; its storage settings come with the
/// environment `scripts/infra secantus-env` gives `scripts/chaos`, as for the shared
/// one), so that an outage of MongoDB takes down only this run's store, not the
/// machine's shared one.
struct PrivateMongo {
    binary: PathBuf,
    data: PathBuf,
}

impl PrivateMongo {
    const NAME: &str = "mongodb";

    fn new(data: PathBuf) -> anyhow::Result<Self> {
        let binary: PathBuf = std::env::var_os("MARQUEE_SECANTUS_BIN")
            .context("MARQUEE_SECANTUS_BIN is not set: run the outage of MongoDB through scripts/chaos")?
            .into();
        std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        Ok(Self { binary, data })
    }

    /// `configured` (`mongodb://host:port/...`) pointed at this server instead, keeping
    /// its options.
    fn url(configured: &str, port: u16) -> anyhow::Result<String> {
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
async fn drop_stores(settings: &Settings, mongo: Option<&PrivateMongo>) -> anyhow::Result<()> {
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
    for service in ["user", "booking", "payment", "notification"] {
        mongo.database(&settings.mongo.database_name(service)).drop().await?;
    }
    Ok(())
}

pub async fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    let epoch = Instant::now();
    let root = root.canonicalize().with_context(|| format!("no repository at {}", root.display()))?;
    let tag = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let ports = Ports::from_base(options.port_base);
    ports.ensure_free()?;
    let bin_dir = match &options.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?.parent().context("this binary has no directory")?.to_owned(),
    };
    let config_dir = options.config_dir.clone().unwrap_or_else(|| root.join("config"));
    let logs = options.logs.clone().unwrap_or_else(|| root.join(format!(".run/chaos-{tag}")));
    let default_out = match (&options.outage, options.short) {
        (Some(target), _) => format!("bench/results/chaos-outage-{target}.json"),
        (None, true) => "bench/results/chaos-short.json".to_owned(),
        (None, false) => "bench/results/chaos.json".to_owned(),
    };
    let out = options.out.clone().unwrap_or_else(|| root.join(default_out));
    // The suite reads its own settings from this repository's config (it may differ
    // from the processes', e.g. older binaries with their own `--config-dir`).
    let mut settings = isolated_settings(&root.join("config"), &tag).await?;
    let mongo = match options.outage.as_deref() {
        Some(PrivateMongo::NAME) => {
            settings.mongo.url = Secret::new(PrivateMongo::url(settings.mongo.url.expose(), ports.mongo)?);
            Some(PrivateMongo::new(logs.join("mongodb-data"))?)
        }
        _ => None,
    };
    let env = environment(&settings, ports, &config_dir);
    let specs = specs(&bin_dir, &env, ports, mongo.as_ref());
    let outage = match options.outage.as_deref() {
        None => None,
        Some(name) => Some(specs.iter().map(|spec| spec.name).find(|n| *n == name).with_context(|| {
            let names: Vec<&str> = specs.iter().map(|spec| spec.name).collect();
            format!("--outage takes mongodb or a process ({}), not {name}", names.join(", "))
        })?),
    };
    for spec in &specs {
        let binary = spec.binary.display();
        anyhow::ensure!(spec.binary.is_file(), "{binary} not found: build it (scripts/chaos does)");
    }
    // A broker too busy to talk (other tests on the machine) is not the mesh's fault.
    brokers::wait_for_amqp(rabbitmq_port(&settings), Duration::from_secs(120)).await.context(
        "RabbitMQ does not answer AMQP handshakes (busy with other clients?): not starting the mesh",
    )?;
    // Asked before anything is stopped: how to start this Redis again as it is.
    let redis =
        if options.brokers { Some(RedisServer::inspect(settings.redis.url.expose()).await?) } else { None };
    eprintln!("[chaos] run {tag}: ports {ports:?}, logs {}", logs.display());

    let mut supervisor = Supervisor::new(specs, &logs, epoch, Duration::from_secs(60))?;
    let started = async {
        supervisor
            .start_all()
            .await
            .with_context(|| format!("the mesh did not start; see {}", logs.display()))?;
        setup_showtime(ports).await
    };
    let showtime = match started.await {
        Ok(showtime) => showtime,
        Err(error) => {
            supervisor.stop_all().await;
            if !brokers::amqp_answers(rabbitmq_port(&settings), Duration::from_secs(2)).await {
                return Err(error.context(
                    "RabbitMQ answers no AMQP handshake (the machine's broker is stalled, e.g. its file \
                     handles used up by other tests' quorum queues): not the mesh's fault",
                ));
            }
            return Err(error);
        }
    };
    eprintln!("[chaos] mesh up at +{:.1}s; showtime {showtime}", epoch.elapsed().as_secs_f64());

    let brokers = killer::Brokers { rabbitmq_port: rabbitmq_port(&settings), redis };
    let load = drive(&options, ports, &showtime, supervisor, brokers, outage, epoch).await?;
    eprintln!(
        "[chaos] load over after {:.1} s, customers done {:.1} s later; waiting for the mesh to settle",
        load.seconds, load.finishing_seconds
    );

    let stores = Stores::connect(&settings).await?;
    let at_load_end = report::AtLoadEnd {
        unsent_events: stores.unsent_events().await?,
        notifications: stores.notifications(mongodb::bson::doc! {}).await?.len(),
    };
    let queue = settings.rabbitmq.notification_queue.clone();
    let settled =
        verify::settle(&stores, &showtime, &queue, Duration::from_secs(options.settle_seconds)).await;
    load.stop_killer.cancel();
    let mut outcome = load.killer.await.context("the killer failed")?;
    let settled = match settled {
        Ok(settled) => settled,
        Err(error) => {
            outcome.supervisor.stop_all().await;
            return Err(error.context("cannot read the stores after the load"));
        }
    };
    let down_at_end = outcome.supervisor.down();
    let told: Vec<customer::Told> = load.customers.iter().flat_map(|l| l.told.iter().cloned()).collect();
    let unregistered: Vec<String> =
        load.customers.iter().filter(|l| !l.registered).map(|l| l.email.clone()).collect();
    let mut checks = checks::checks(&checks::Inputs {
        snapshot: &settled.snapshot,
        told: &told,
        unregistered: &unregistered,
        killer: &outcome,
        down_at_end: &down_at_end,
        settled_quiet: settled.quiet,
        settle_seconds: settled.seconds,
    });
    report::attach_evidence(&mut checks, &outcome.supervisor.log_files());
    outcome.supervisor.stop_all().await;
    // Quorum queues are costly for the shared broker (each holds file handles; used up,
    // it stops taking connections): they go now, whatever the verdict, rather than when
    // they expire. Their depths are in the report.
    if let Err(error) = brokers::delete_queue_family(&settings.rabbitmq.notification_queue).await {
        eprintln!("[chaos] cannot delete the run's queues (they expire in 10 minutes): {error:#}");
    }

    let run = report::Run {
        tag: &tag,
        options: &options,
        ports,
        settings: &settings,
        env: &env,
        logs: &logs,
        bin_dir: &bin_dir,
        showtime: &showtime,
        load_seconds: load.seconds,
        finishing_seconds: load.finishing_seconds,
        customers: &load.customers,
        killer: &outcome,
        at_load_end,
        settled: &settled,
        checks: &checks,
    };
    let results = run.to_json();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::report::write_json(&out, &results)?;
    println!("{}", run.summary(&out));

    let failed: Vec<&str> = checks.iter().filter(|c| !c.pass).map(|c| c.name).collect();
    if failed.is_empty() && !options.keep {
        drop_stores(&settings, mongo.as_ref()).await.context("cannot drop the run's stores")?;
    }
    anyhow::ensure!(failed.is_empty(), "{} checks failed: {}", failed.len(), failed.join(", "));
    Ok(())
}

/// The load and the killer, running.
struct Load {
    customers: Vec<customer::Log>,
    /// Until the load was over (the window, and the killer's plan, done).
    seconds: f64,
    /// From then until the last customer was done.
    finishing_seconds: f64,
    /// The killer keeps restarting crashed processes until this is cancelled.
    stop_killer: Shutdown,
    killer: tokio::task::JoinHandle<killer::Outcome>,
}

/// Runs the customers and the killer for the load window (and until the killer's plan
/// is done), then lets the customers finish the purchases they are in.
async fn drive(
    options: &Options,
    ports: Ports,
    showtime: &str,
    supervisor: Supervisor,
    brokers: killer::Brokers,
    outage: Option<&'static str>,
    epoch: Instant,
) -> anyhow::Result<Load> {
    let config = Config {
        // Above the gateway's longest answer (a repeat waits 10 s for the first send of
        // its key), so that a slow answer is heard rather than timed out.
        request_timeout: Duration::from_secs(15),
        max_sends: 8,
        settle_deadline: Duration::from_secs(10),
        settle_poll_interval: Duration::from_millis(500),
        ..Config::smoke()
    };
    let at_once = options.registrations_at_once.unwrap_or(options.customers).max(1);
    let target = customer::Target {
        showtime: showtime.to_owned(),
        seat_pool: options.seat_pool,
        config,
        registering: Arc::new(tokio::sync::Semaphore::new(at_once)),
    };
    let client =
        Client::new(format!("http://127.0.0.1:{}/graphql", ports.gateway), target.config.request_timeout)?;
    let stops = customer::Stops { load_over: Shutdown::new(), grace_over: Shutdown::new(), epoch };
    let started = Instant::now();
    let mut customers = tokio::task::JoinSet::new();
    for i in 0..options.customers {
        customers.spawn(customer::run(i, client.clone(), target.clone(), stops.clone()));
    }
    let mut rng = Rng::seeded();
    let window = Duration::from_secs(options.seconds);
    // Kills go round the mesh's services; a store of the run's own goes down only in an outage.
    let services: Vec<&'static str> =
        supervisor.names().into_iter().filter(|name| *name != PrivateMongo::NAME).collect();
    let actions = killer::plan(&services, options.kills, options.brokers, outage, &mut rng);
    let (plan_done, stop_killer) = (Shutdown::new(), Shutdown::new());
    // The last action lands at ~90% of the window, leaving load to run on after it.
    let spread = window.mul_f64(0.85);
    let killer = tokio::spawn(killer::run(
        killer::Killer {
            supervisor,
            actions,
            spread,
            brokers,
            outage: Duration::from_secs(options.outage_seconds),
            rng,
            epoch,
        },
        plan_done.clone(),
        stop_killer.clone(),
    ));

    let interrupted = tokio::select! {
        _ = tokio::signal::ctrl_c() => true,
        () = async { tokio::time::sleep(window).await; plan_done.cancelled().await } => false,
    };
    stops.load_over.cancel();
    let seconds = started.elapsed().as_secs_f64();
    if interrupted {
        stop_killer.cancel();
        customers.abort_all();
        let mut outcome = killer.await.context("the killer failed")?;
        outcome.supervisor.stop_all().await;
        anyhow::bail!("interrupted; the run's stores are kept");
    }
    // Purchases under way finish, but start no new payment round after the grace.
    let grace_over = stops.grace_over.clone();
    let grace = tokio::spawn(async move {
        tokio::time::sleep(GRACE).await;
        grace_over.cancel();
    });
    let mut logs = Vec::with_capacity(options.customers);
    while let Some(joined) = customers.join_next().await {
        if let Ok(log) = joined {
            logs.push(log);
        }
    }
    grace.abort();
    let finishing_seconds = started.elapsed().as_secs_f64() - seconds;
    Ok(Load { customers: logs, seconds, finishing_seconds, stop_killer, killer })
}

/// The AMQP port of the broker the mesh uses (from `amqp://user:pass@host:port/vhost`).
fn rabbitmq_port(settings: &Settings) -> u16 {
    let url = settings.rabbitmq.url.expose();
    url.rsplit('@')
        .next()
        .and_then(|host| host.split('/').next())
        .and_then(|authority| authority.rsplit_once(':'))
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(5672)
}

/// Waits for the gateway to find every upstream healthy, then builds the hall and
/// returns the showtime two days out (so refunds never cross the 24 h tier mid-run).
async fn setup_showtime(ports: Ports) -> anyhow::Result<String> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let ready = format!("http://127.0.0.1:{}/readyz", ports.gateway);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
        anyhow::ensure!(Instant::now() < deadline, "the gateway's /readyz did not answer 200 within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", ports.cinema))?
        .connect()
        .await
        .context("cinema unreachable")?;
    let mut showtimes = build_hall(channel, 2).await.context("cannot build the hall")?;
    showtimes.pop().context("no showtime was created")
}
