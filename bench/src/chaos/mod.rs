//! `marquee-bench chaos` (run by `scripts/chaos`): the mesh's seven real processes
//! (`marquee-user`, `-cinema`, `-payment`, `-booking`, `-ticket`, `-notification`, `-gateway`,
//! from the build directory this binary sits in) on a fixed port block of their own,
//! with stores of their own for the run, under customers booking through GraphQL while
//! a killer SIGKILLs every process in turn and restarts RabbitMQ and Redis once each.
//! Afterwards it waits (bounded) for the mesh to settle and checks the stores against
//! every promise made to the customers (`verify`), then writes a JSON report and prints
//! a summary; any failed check makes the run fail.
//!
//! `--replicas` adds a second gateway, cinema, booking and payment (`setup::REPLICATED`)
//! and kills one replica of each instead (`setup::KILLED_REPLICAS`).
//!
//! Ports: the block `--port-base` (default 7100) + 1..6 for user, cinema, booking,
//! payment, notification and ticket, + 80 for the gateway and + 91..96 for their
//! `/metrics`: below Linux's ephemeral range, clear of `scripts/up`'s 7001-7006, 8080
//! and 9101-9106.
//! Stores: PostgreSQL database `marquee_chaos_<tag>`, MongoDB databases
//! `mqchaos_<tag>_<service>`, Redis keys `mqchaos:<tag>:`, RabbitMQ exchange
//! `marquee.events.chaos.<tag>` and queues `marquee.notifications.chaos.<tag>` (with its
//! dead-letter and retry queues) and `marquee.tickets.chaos.<tag>`, deleted at the end
//! of every run. A clean run drops
//! its databases; a failed one keeps them for inspection (and `--keep` always does).
//! Configuration: `config/default.toml` (the production defaults) and the `MARQUEE_*`
//! variables of `environment`; the brokers are restarted as `crate::brokers` says.

// The process mesh, the killer and the store checks are `marquee-bench replicas`'s too.
pub(crate) mod checks;
pub(crate) mod customer;
pub(crate) mod killer;
mod options;
pub(crate) mod report;
pub(crate) mod setup;
pub(crate) mod verify;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_kit::Secret;
use marquee_kit::shutdown::Shutdown;
use tonic::transport::Endpoint;

pub use self::options::Options;
use self::setup::{Ports, PrivateMongo, drop_stores, environment, isolated_settings, rabbitmq_port, specs};
use crate::brokers::{self, RedisServer};
use crate::catalog::{Rng, build_hall};
use crate::flash_sale::Config;
use crate::gql::Client;
use crate::procs::Supervisor;
use crate::stores::Stores;

/// After the load, how long customers may still start a new round of the purchase
/// they are in (a payment sent again after polling).
const GRACE: Duration = Duration::from_secs(60);

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
        _ if options.replicas => "bench/results/chaos-replicas.json".to_owned(),
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
    let env = environment(&settings, ports, &config_dir, options.replicas);
    let specs = specs(&bin_dir, &env, ports, mongo.as_ref(), options.replicas);
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
    let (settled, mut outcome) = killer::stop_after(settled, &load.stop_killer, load.killer).await?;
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
    for queue in [&settings.rabbitmq.notification_queue, &settings.rabbitmq.ticket_queue] {
        if let Err(error) = brokers::delete_queue_family(queue).await {
            eprintln!("[chaos] cannot delete the run's queues (they expire in 10 minutes): {error:#}");
        }
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
    let gateway =
        |port: u16| Client::new(format!("http://127.0.0.1:{port}/graphql"), target.config.request_timeout);
    // With replicas, every other customer talks to the second gateway.
    let clients = if options.replicas {
        vec![gateway(ports.gateway)?, gateway(ports.gateway_2)?]
    } else {
        vec![gateway(ports.gateway)?]
    };
    let stops = customer::Stops { load_over: Shutdown::new(), grace_over: Shutdown::new(), epoch };
    let started = Instant::now();
    let mut customers = tokio::task::JoinSet::new();
    for i in 0..options.customers {
        let client = clients[i % clients.len()].clone();
        customers.spawn(customer::run(i, client, target.clone(), stops.clone()));
    }
    let mut rng = Rng::seeded();
    let window = Duration::from_secs(options.seconds);
    // Kills go round the mesh's services (with replicas, one replica of each replicated
    // one: the other carries the load meanwhile); a store of the run's own goes down
    // only in an outage.
    let services: Vec<&'static str> = if options.replicas {
        setup::KILLED_REPLICAS.to_vec()
    } else {
        supervisor.names().into_iter().filter(|name| *name != PrivateMongo::NAME).collect()
    };
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

/// Waits for the gateway to find every upstream healthy, then builds the hall and
/// returns the showtime two days out (so refunds never cross the 24 h tier mid-run).
async fn setup_showtime(ports: Ports) -> anyhow::Result<String> {
    setup::wait_until_ready(ports.gateway).await?;
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", ports.cinema))?
        .connect()
        .await
        .context("cinema unreachable")?;
    let mut showtimes = build_hall(channel, 2).await.context("cannot build the hall")?;
    showtimes.pop().context("no showtime was created")
}
