//! "Friday-night rush" (`marquee-bench rush`, run by `scripts/bench`): the whole mesh
//! in-process in one release binary, driven through GraphQL over HTTP.
//!
//! 1. Baseline: pgbench on the cinema's seat SQL (lock + confirm of one seat), on a
//!    showtime of the same 10,000-seat hall in the mesh's own database.
//! 2. Flash sale (`flash_sale`) on another showtime of that hall, then verification from
//!    PostgreSQL and MongoDB.
//! 3. Browse (`browse`): step the arrival rate up to the highest sustainable rate, then
//!    measure at half of it.
//!
//! Writes `bench/results/flash_sale.json` and the `bench-rush` section of BENCHMARKS.md.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_common::Settings;
use serde_json::{Value, json};
use tonic::transport::Endpoint;

use marquee_proto::cinema::v1 as pb;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;

use crate::catalog::{SEATS, build_hall, seat_id};
use crate::flash_sale::{self, Config, PROBE_SEAT};
use crate::gql::{Answer, Client};
use crate::mesh::{GatewayProcess, Mesh};
use crate::stats::{round1, round2, round3};
use crate::{browse, cpu, mongo_ops, pgbench, report, subscribers};

/// pgbench clients and bookings per client: 16 x 600 = 9,600 of the 10,000 seats.
const PGBENCH_CLIENTS: usize = 16;
const PGBENCH_PER_CLIENT: usize = 600;
const BROWSE_RATES: [f64; 8] = [50.0, 100.0, 200.0, 400.0, 800.0, 1200.0, 1600.0, 2400.0];
const BROWSE_STEP: Duration = Duration::from_secs(5);
const BROWSE_MEASURE: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Options {
    pub flash: Config,
    pub browse: bool,
    /// WebSocket `seatMap` subscriptions held open during a second flash sale (0: skip).
    pub subscribers: usize,
    /// How many of them watch the showtime of that flash sale; the rest are spread
    /// over other showtimes of the hall.
    pub focused: usize,
}

impl Options {
    /// `--users N --rounds N --hot-seats N --no-browse --subscribers N --focused N`.
    pub fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut options = Self { flash: Config::bench(), browse: true, subscribers: 50_000, focused: 5_000 };
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> anyhow::Result<usize> {
                args.next()
                    .with_context(|| format!("{name} needs a value"))?
                    .parse()
                    .with_context(|| format!("{name} takes a whole number"))
            };
            match arg.as_str() {
                "--users" => options.flash.users = number("--users")?,
                "--rounds" => options.flash.rounds = number("--rounds")?,
                "--hot-seats" => options.flash.hot_seats = number("--hot-seats")?,
                "--no-browse" => options.browse = false,
                "--subscribers" => options.subscribers = number("--subscribers")?,
                "--focused" => options.focused = number("--focused")?,
                other => anyhow::bail!("unknown option {other}"),
            }
        }
        anyhow::ensure!(options.flash.users >= 2, "--users must be at least 2");
        options.focused = options.focused.min(options.subscribers);
        Ok(options)
    }
}

/// The mesh's settings for the benchmark: the isolated test stores, with the
/// production values wherever the test configuration trades realism for speed.
pub async fn bench_settings() -> anyhow::Result<Settings> {
    let mut settings = marquee_common::testing::isolated_settings().await?;
    settings.telemetry.level = "warn".to_owned();
    settings.postgres.max_connections = 16;
    // Production password hashing (test.toml makes it cheap).
    settings.auth.argon2_memory_kib = 19456;
    settings.auth.argon2_iterations = 2;
    // Browsing needs an ordinary catalog next to the benchmark hall.
    settings.cinema.seed_demo = true;
    // The orphan-seat rule would refuse random single seats for a reason other than
    // contention; the flash sale measures contention.
    settings.cinema.no_orphan_seats = false;
    settings.cinema.hold_sweep_interval_ms = 5000;
    settings.booking.outbox_poll_ms = 1000;
    settings.booking.charge_retry_backoff_ms = 200;
    settings.payment.outbox_poll_ms = 1000;
    settings.notification.claim_ttl_seconds = 30;
    Ok(settings)
}

/// Showtimes of the hall: flash sale, pgbench baseline, the flash sale under
/// subscriptions, and quiet ones that only the spread-out subscribers watch.
const QUIET_SHOWTIMES: usize = 7;

pub async fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    let settings = bench_settings().await?;
    let database_url = settings.postgres.url.expose().clone();
    let mesh = Mesh::start_services(settings).await?;
    let gateway = GatewayProcess::start(&mesh, &root.join("config")).await?;
    let graphql_url = gateway.graphql_url();
    let channel = Endpoint::from_shared(mesh.cinema_url())?.connect().await.context("cinema unreachable")?;
    let showtimes = build_hall(channel.clone(), 3 + QUIET_SHOWTIMES).await?;
    eprintln!("mesh up; hall of {SEATS} seats; gateway process at {graphql_url}");

    let pgbench_tps = {
        let (url, showtime) = (database_url.clone(), showtimes[1].clone());
        tokio::task::spawn_blocking(move || {
            pgbench::lock_confirm(&url, &showtime, PGBENCH_CLIENTS, PGBENCH_PER_CLIENT)
        })
        .await
        .context("pgbench task failed")??
    };
    eprintln!("pgbench, same SQL: {pgbench_tps:.0} bookings/s");

    let config = options.flash.clone();
    let crowd = flash_sale::register_crowd(&graphql_url, &config).await?;
    // The profile covers the rush alone, not the registrations before it.
    let mongo = mongodb::Client::with_uri_str(mesh.settings.mongo.url.expose())
        .await
        .context("cannot reach MongoDB")?;
    let ops_before = mongo_ops::read(&mongo).await;
    let cpu_before = cpu::snapshot();
    let started = Instant::now();
    let mut outcome = flash_sale::rush(crowd, &showtimes[0], &config).await;
    let rush_wall = started.elapsed().as_secs_f64();
    // Work a booking causes after its customer's last answer (outbox relays, the
    // notification worker) is part of its cost: the profile ends once it is done.
    let settled = settle(&mongo, &mesh.settings, outcome.confirmed.len()).await;
    let cpu_after = cpu::snapshot();
    let wall = started.elapsed().as_secs_f64();
    let ops_after = mongo_ops::read(&mongo).await;
    let window = Window { wall, rush: rush_wall, settled };
    let profile = rush_profile(&outcome, &cpu_before, &cpu_after, window, ops_before, ops_after);
    eprintln!(
        "flash sale: {} confirmed ({} after polling), {} refused, {:.1} bookings/s over {:.1} s",
        outcome.confirmed.len(),
        outcome.confirmed_after_polling,
        outcome.refused.len(),
        outcome.bookings_per_s(),
        outcome.rush_seconds
    );
    eprintln!("profile: {profile}");
    let verdict = flash_sale::verify(&mesh.settings, &showtimes[0], &outcome, &config).await?;
    eprintln!("verification: {verdict:?}");

    let browse_results = if options.browse {
        let client = Client::new(graphql_url.clone(), Duration::from_secs(5))?;
        let targets = demo_showtimes(&client).await?;
        let cpu_before = cpu::snapshot();
        let started = Instant::now();
        let (mut steps, max, mut half) =
            browse::step_up(&client, &targets, &BROWSE_RATES, BROWSE_STEP, BROWSE_MEASURE).await;
        let cpu_browse = cpu::between(&cpu_before, &cpu::snapshot(), started.elapsed().as_secs_f64());
        Some(json!({
            "seat_map_showtimes": targets.len(),
            "steps": steps.iter_mut().map(browse::Level::to_json).collect::<Vec<_>>(),
            "max_sustainable_rate_per_s": max,
            "at_half_max": half.as_mut().map(browse::Level::to_json),
            "cpu": cpu_browse,
        }))
    } else {
        None
    };

    // Each subscription is a socket in the gateway and one in this process; both
    // inherit this process's descriptor limit, which only root can raise.
    let fd_limit = open_files_limit();
    let requested = options.subscribers;
    let fits = fd_limit.map(|limit| limit.saturating_sub(FD_RESERVE));
    let mut options = options;
    if let Some(fits) = fits
        && options.subscribers > fits
    {
        eprintln!(
            "RLIMIT_NOFILE is {fd_limit:?}: holding {fits} subscriptions, not {} (raise the hard limit as root)",
            options.subscribers
        );
        options.subscribers = fits;
        options.focused = options.focused.min(fits);
    }
    let connected = if options.subscribers > 0 {
        let watched = [&showtimes[2..3], &showtimes[3..]].concat();
        Some(connected_users(&gateway, &channel, &mesh.settings, &watched, &options, requested).await?)
    } else {
        None
    };
    gateway.stop().await;
    mesh.stop().await;

    let bookings_per_s = outcome.bookings_per_s();
    let browse_p99 = browse_results.as_ref().and_then(|b| b["at_half_max"]["latency"]["p99_ms"].as_f64());
    let connected_clean = connected.as_ref().is_none_or(|c| c["clean"] == true);
    let results = json!({
        "bookings_per_s": round1(bookings_per_s),
        "pgbench_same_sql_tps": round1(pgbench_tps),
        "ratio": round3(bookings_per_s / pgbench_tps),
        "double_booked_seats": verdict.double_booked_seats
            + connected.as_ref().and_then(|c| c["flash_sale_verification"]["double_booked_seats"].as_u64()).unwrap_or(0) as usize,
        "double_charges": verdict.double_charges
            + connected.as_ref().and_then(|c| c["flash_sale_verification"]["double_charges"].as_u64()).unwrap_or(0) as usize,
        "lost_notifications": verdict.lost_notifications
            + connected.as_ref().and_then(|c| c["flash_sale_verification"]["lost_notifications"].as_u64()).unwrap_or(0) as usize,
        "cpu_ms_per_booking": profile["cpu"]["total_cpu_ms_per_confirmed_booking"].clone(),
        "mongodb_commands_per_booking": profile["mongodb_opcounters"]["per_confirmed_booking"]["total"].clone(),
        "browse_p99_ms": browse_p99.map(round2),
        // Null when the scenario did not run: never a made-up number.
        "subscribers": connected.as_ref().map(|c| c["subscribers_held"].clone()),
        "gateway_rss_mb": connected.as_ref().map(|c| c["gateway_rss_mb"]["peak"].clone()),
        "seat_change_p99_ms": connected.as_ref().map(|c| c["deliveries"]["delivery_latency"]["p99_ms"].clone()),
        "verification": verdict.to_json(),
        "verification_clean": verdict.is_clean() && connected_clean,
        "flash_sale": flash_sale::outcome_json(&mut outcome, &config),
        "profile": profile,
        "browse": browse_results,
        "connected_users": connected,
        "setup": {
            "seats_per_showtime": SEATS,
            "pgbench_clients": PGBENCH_CLIENTS,
            "pgbench_bookings": PGBENCH_CLIENTS * PGBENCH_PER_CLIENT,
            "mesh": "user, cinema, payment, booking and notification in the load generator's release process (marquee-bench rush), each on its own loopback port; the gateway is the release marquee-gateway binary in its own process",
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "measured_at": chrono::Utc::now().to_rfc3339(),
        },
    });
    report::write_json(&root.join("bench/results/flash_sale.json"), &results)?;
    report::update_section(&root.join("BENCHMARKS.md"), "bench-rush", &summary(&results))?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    anyhow::ensure!(verdict.is_clean() && connected_clean, "the rush broke a promise; see the results");
    Ok(())
}

/// Waits until the rush's after-effects are done: no unsent outbox event in booking or
/// payment, and a `booking.confirmed` notification recorded for each of `confirmed`
/// bookings. Gives up after a minute (the verification then reports what is missing).
async fn settle(mongo: &mongodb::Client, settings: &Settings, confirmed: usize) -> anyhow::Result<f64> {
    use mongodb::bson::{Document, doc};
    const PATIENCE: Duration = Duration::from_secs(60);
    let started = Instant::now();
    let collection = |service: &str, name: &str| {
        mongo.database(&settings.mongo.database_name(service)).collection::<Document>(name)
    };
    let (bookings, payments) = (collection("booking", "bookings"), collection("payment", "payments"));
    let notifications = collection("notification", "notifications");
    loop {
        // `$gte: 1` as the relays query it (marquee_common::outbox says why not `$gt: 0`).
        let unsent = bookings.count_documents(doc! { "unsent_events": { "$gte": 1 } }).await?
            + payments.count_documents(doc! { "unsent_events": { "$gte": 1 } }).await?;
        let notified = notifications.count_documents(doc! { "event_type": "booking.confirmed" }).await?;
        if (unsent == 0 && notified >= confirmed as u64) || started.elapsed() >= PATIENCE {
            return Ok(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How long the profiled window lasted: in all, until the last customer's last answer,
/// and the wait for the after-effects (`settle`) that followed.
struct Window {
    wall: f64,
    rush: f64,
    settled: anyhow::Result<f64>,
}

/// Where the rush's time went: CPU per process group and MongoDB commands, in all and
/// per confirmed booking, from the start signal until the rush's after-effects are done.
fn rush_profile(
    outcome: &flash_sale::Outcome,
    cpu_before: &cpu::Snapshot,
    cpu_after: &cpu::Snapshot,
    window: Window,
    ops_before: anyhow::Result<mongo_ops::OpCounters>,
    ops_after: anyhow::Result<mongo_ops::OpCounters>,
) -> Value {
    let confirmed = outcome.confirmed.len();
    let mongodb = match (ops_before, ops_after) {
        (Ok(before), Ok(after)) => mongo_ops::between(&before, &after, confirmed),
        // Not measured is said so, never a made-up zero.
        (Err(error), _) | (_, Err(error)) => json!({ "error": format!("{error:#}") }),
    };
    json!({
        "window": "from the start signal until every outbox event was sent and every booking.confirmed notification recorded (after the last customer's last answer)",
        "wall_seconds": round1(window.wall),
        "rush_seconds": round1(window.rush),
        "settle_seconds": match window.settled {
            Ok(seconds) => json!(round1(seconds)),
            Err(error) => json!({ "error": format!("{error:#}") }),
        },
        "confirmed_bookings": confirmed,
        "cpu": cpu::per_booking(cpu_before, cpu_after, window.wall, confirmed),
        "mongodb_opcounters": mongodb,
    })
}

/// Descriptors kept free for everything but subscriptions (pools, the mesh's own
/// connections, the browse client).
const FD_RESERVE: usize = 2_000;

/// The soft RLIMIT_NOFILE of this process (the gateway child inherits it).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// 50,000 connected users: opens the subscriptions (`focused` of them on `watched[0]`,
/// the rest spread over all of `watched`), proves each is live with a probe seat change
/// per showtime, runs a single-round flash sale on `watched[0]` while they are held,
/// then checks that every subscriber got every change of its showtime.
async fn connected_users(
    gateway: &GatewayProcess,
    channel: &tonic::transport::Channel,
    settings: &Settings,
    watched: &[String],
    options: &Options,
    requested: usize,
) -> anyhow::Result<Value> {
    let rss_before = gateway.rss_mb();
    let opening = Instant::now();
    let subs = subscribers::open(gateway.addr, watched, options.subscribers, options.focused).await?;
    let open_seconds = opening.elapsed().as_secs_f64();
    let rss_open = gateway.rss_mb();
    eprintln!(
        "{} subscriptions open in {open_seconds:.1} s ({} failed); gateway RSS {rss_open:?} MiB",
        subs.open_now(),
        subs.failed_to_open
    );

    // A probe change per showtime: every subscriber must hear it before the rush, so a
    // subscription that was not yet live cannot count as a missed change later.
    let mut cinema = CinemaServiceClient::new(channel.clone());
    let probe = seat_id(PROBE_SEAT);
    let mut live = true;
    for (index, showtime) in watched.iter().enumerate() {
        let booking = uuid::Uuid::new_v4().to_string();
        cinema
            .lock_seats(pb::LockSeatsRequest {
                showtime_id: showtime.clone(),
                seat_ids: vec![probe.clone()],
                booking_id: booking.clone(),
                ttl_seconds: 300,
            })
            .await
            .context("probe hold")?;
        live &= subs.wait_heard(index, Duration::from_secs(120)).await;
        cinema
            .release_seats(pb::ReleaseSeatsRequest { showtime_id: showtime.clone(), booking_id: booking })
            .await
            .context("probe release")?;
    }
    eprintln!("probes heard by every subscriber: {live}");

    // RSS sampled through the rush: the peak is what a machine must provide.
    let peak = std::sync::Arc::new(std::sync::Mutex::new(rss_open.unwrap_or(0.0)));
    let sampler = {
        let (peak, pid_rss) = (peak.clone(), gateway.rss_reader());
        tokio::spawn(async move {
            loop {
                if let Some(rss) = pid_rss()
                    && let Ok(mut p) = peak.lock()
                {
                    *p = p.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let config = Config { rounds: 1, ..options.flash.clone() };
    let mut outcome = flash_sale::run(&gateway.graphql_url(), &watched[0], &config).await?;
    eprintln!(
        "flash sale under subscriptions: {} confirmed, {:.1} bookings/s",
        outcome.confirmed.len(),
        outcome.bookings_per_s()
    );
    let verdict = flash_sale::verify(settings, &watched[0], &outcome, &config).await?;
    let quiet = subs.wait_quiet(Duration::from_secs(3), Duration::from_secs(300)).await;
    sampler.abort();
    let rss_peak = peak.lock().map(|p| *p).unwrap_or(0.0);
    let held = subs.open_now();
    let mut logs = subs.stop().await;
    let booked: HashSet<String> = outcome.confirmed.values().cloned().collect();
    let deliveries = subscribers::judge(&mut logs, &HashMap::from([(0, booked)]));
    let clean = verdict.is_clean()
        && live
        && quiet
        && held == options.subscribers
        && deliveries["subscribers_missing_changes"] == 0
        && deliveries["subscribers_with_failures"] == 0;
    eprintln!("deliveries: {deliveries}");
    Ok(json!({
        "subscribers_requested": requested,
        "open_files_limit": open_files_limit(),
        "subscribers_held": held,
        "focused_on_rush_showtime": options.focused,
        "showtimes_watched": watched.len(),
        "failed_to_open": logs.iter().filter(|l| l.failures.iter().any(|f| f.starts_with("open"))).count(),
        "open_seconds": round1(open_seconds),
        "probes_heard_by_all": live,
        "deliveries_settled": quiet,
        "gateway_rss_mb": {
            "before": rss_before.map(round1),
            "subscriptions_open": rss_open.map(round1),
            "peak": round1(rss_peak),
        },
        "deliveries": deliveries,
        "flash_sale": flash_sale::outcome_json(&mut outcome, &config),
        "flash_sale_verification": verdict.to_json(),
        "clean": clean,
    }))
}

/// Seat-map targets for browsing: the demo catalog's showtimes (ordinary screens), not
/// the 10,000-seat benchmark hall.
async fn demo_showtimes(client: &Client) -> anyhow::Result<Vec<String>> {
    match client.send(None, "{ showtimes { id cinema { name } } }", json!({})).await {
        Answer::Data(data) => Ok(data["showtimes"]
            .as_array()
            .context("showtimes is not a list")?
            .iter()
            .filter(|s| s["cinema"]["name"] != "Bench Palace")
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect()),
        other => anyhow::bail!("cannot list showtimes: {}", other.label()),
    }
}

fn summary(results: &Value) -> String {
    let flash = &results["flash_sale"];
    let verification = &results["verification"];
    let latency = &flash["latency"];
    let mut ops = String::new();
    for op in
        ["register", "holdSeats_won", "holdSeats_lost", "payBooking", "payBooking_until_final_after_polling"]
    {
        let l = &latency[op];
        ops.push_str(&format!(
            "| {op} | {} | {} | {} | {} |\n",
            l["count"],
            report::cell(&l["p50_ms"]),
            report::cell(&l["p99_ms"]),
            report::cell(&l["p999_ms"])
        ));
    }
    let profile = &results["profile"];
    let mut cpu = String::new();
    if let Some(groups) = profile["cpu"]["groups"].as_object() {
        for (name, g) in groups {
            cpu.push_str(&format!(
                "| {name} | {} | {}% | {} |\n",
                g["cpu_seconds"],
                g["share_of_machine_pct"],
                report::cell(&g["cpu_ms_per_confirmed_booking"])
            ));
        }
        cpu.push_str(&format!(
            "| **all processes** | {} | {}% | **{}** (goal <= 7) |\n",
            profile["cpu"]["total_cpu_seconds"],
            profile["cpu"]["machine_busy_pct"],
            report::cell(&profile["cpu"]["total_cpu_ms_per_confirmed_booking"])
        ));
    }
    let mongo = mongo_summary(&profile["mongodb_opcounters"]);
    let mut browse = String::new();
    if let Some(steps) = results["browse"]["steps"].as_array() {
        for s in steps {
            browse.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} |\n",
                s["rate_per_s"],
                s["ok"],
                browse_failures(s),
                report::cell(&s["latency"]["p50_ms"]),
                report::cell(&s["latency"]["p99_ms"]),
                report::cell(&s["latency"]["p999_ms"]),
            ));
        }
        let half = &results["browse"]["at_half_max"];
        if !half.is_null() {
            browse.push_str(&format!(
                "| **{} (half of max)** | {} | {} | {} | {} | {} |\n",
                half["rate_per_s"],
                half["ok"],
                browse_failures(half),
                report::cell(&half["latency"]["p50_ms"]),
                report::cell(&half["latency"]["p99_ms"]),
                report::cell(&half["latency"]["p999_ms"]),
            ));
        }
    }
    let setup = &results["setup"];
    let connected = connected_summary(&results["connected_users"]);
    format!(
        "## Friday-night rush: the whole mesh through GraphQL\n\n\
         Generated by `scripts/bench` (release build of `marquee-bench rush`; not part of\n\
         `scripts/test`) on {measured_at}, {cpus} CPUs shared by the mesh, the load generator and\n\
         the infrastructure (PostgreSQL, secantusd-rs, RabbitMQ, Redis on loopback).\n\
         Raw numbers: `bench/results/flash_sale.json`. {mesh}.\n\n\
         **Flash sale.** {users} customers register, then all start at once on one showtime of a\n\
         {seats}-seat hall: half aim at {hot} hot seats, half at random seats of the hall; each\n\
         makes {rounds} purchase attempt(s) in a row (holdSeats with an idempotency key, then\n\
         payBooking with `pm_card_ok`; a timeout, a retryable error or INTERNAL\n\
         is retried with the same key, up to 5 sends). A payment that ends without a final\n\
         answer (CONFLICT while it is in flight, or still no answer after the sends) is followed\n\
         like a \"payment processing...\" screen: the customer polls `booking(id)` every\n\
         {poll_ms} ms until the booking settles (up to {poll_s} s, then UNSETTLED), and only then\n\
         starts the next attempt; a booking CONFIRMED that way counts as a winner.\n\
         pgbench runs the cinema's lock + confirm SQL for one seat per booking\n\
         (`cinema_lock_seats`, `cinema_confirm_seats`) with {pg_clients} clients in the same run.\n\n\
         | bookings/s end to end | pgbench same SQL /s | ratio (goal >= 0.3) | winners (after polling) | losers | unpaid | attempts/s |\n\
         |---|---|---|---|---|---|---|\n\
         | {bps} | {pg} | {ratio} | {winners} ({polled}) | {losers} | {unpaid} | {aps} |\n\n\
         Holds refused, by code: {refusals}. Payments without a confirmation, by final answer:\n\
         {unpaid_by}. payBooking answers that sent the customer polling: {polled_after}\n\
         ({queries} `booking` queries).\n\n\
         | operation | count | p50 ms | p99 ms | p99.9 ms |\n\
         |---|---|---|---|---|\n\
         {ops}\n\
         **Verified from the stores** (PostgreSQL `showtime_seats`, MongoDB bookings, payments,\n\
         notifications) after the rush; notifications waited for {drain} s:\n\n\
         | double-booked seats | double charges | confirmed without charge | charged unconfirmed | store mismatches | sagas unsettled after 120 s | losers without SEAT_UNAVAILABLE | lost notifications | duplicate notifications |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {dbs} | {dc} | {uc} | {cu} | {sm} | {us} | {wr} | {ln} | {dn} |\n\n\
         **Where the time went during the rush**, from the start signal until the rush's\n\
         after-effects were done ({wall} s: {rush} s until the last customer's last answer,\n\
         then {settle} s until every outbox event was sent and every confirmation recorded;\n\
         registrations excluded), per {confirmed} confirmed bookings.\n\
         CPU seconds per process group from /proc (100% = all cores):\n\n\
         | process | CPU s | share | CPU ms per confirmed booking |\n\
         |---|---|---|---|\n\
         {cpu}\n\
         {mongo}\n\
         **Browse** (open model: fixed arrival rate, latency from the scheduled send time;\n\
         catalog `showtimes` and `showtime.seatMap` alternate; GraphQL `errors` count as failures;\n\
         a step is sustainable with <= 1% failures and p99 <= 1 s). Goal: p99 <= 50 ms at half\n\
         the highest sustainable rate.\n\n\
         | offered /s | ok | failed | p50 ms | p99 ms | p99.9 ms |\n\
         |---|---|---|---|---|---|\n\
         {browse}\n\
         {connected}",
        measured_at = setup["measured_at"].as_str().unwrap_or_default(),
        cpus = setup["cpus"],
        mesh = setup["mesh"].as_str().unwrap_or_default(),
        users = flash["users"],
        seats = setup["seats_per_showtime"],
        hot = flash["hot_seats"],
        rounds = flash["rounds"],
        pg_clients = setup["pgbench_clients"],
        bps = results["bookings_per_s"],
        pg = results["pgbench_same_sql_tps"],
        ratio = results["ratio"],
        winners = flash["winners"],
        polled = flash["confirmed_after_polling"],
        losers = flash["losers"],
        unpaid = flash["unpaid"],
        refusals = counts(&flash["refusals_by_code"]),
        unpaid_by = counts(&flash["unpaid_by_answer"]),
        polled_after = counts(&flash["polling"]["after_pay_answer"]),
        queries = flash["polling"]["queries"],
        poll_ms = flash["polling"]["settle_poll_interval_ms"],
        poll_s = flash["polling"]["settle_deadline_s"],
        confirmed = profile["confirmed_bookings"],
        mongo = mongo,
        aps = flash["attempts_per_s"],
        drain = verification["notification_drain_seconds"],
        dbs = verification["double_booked_seats"],
        dc = verification["double_charges"],
        uc = verification["uncharged_confirmed"],
        cu = verification["charged_unconfirmed"],
        sm = verification["store_mismatches"],
        us = verification["unsettled_sagas"],
        wr = verification["wrong_refusals"],
        ln = verification["lost_notifications"],
        dn = verification["duplicate_notifications"],
        wall = profile["wall_seconds"],
        rush = profile["rush_seconds"],
        settle = report::cell(&profile["settle_seconds"]),
        connected = connected,
    )
}

/// `{"A": 1, "B": 2}` as "A 1, B 2"; "none" when empty.
fn counts(tally: &Value) -> String {
    match tally.as_object() {
        Some(map) if !map.is_empty() => {
            map.iter().map(|(label, n)| format!("{label} {n}")).collect::<Vec<_>>().join(", ")
        }
        _ => "none".to_owned(),
    }
}

fn mongo_summary(ops: &Value) -> String {
    if !ops["error"].is_null() {
        return format!(
            "MongoDB opcounters: not measured ({}).\n",
            ops["error"].as_str().unwrap_or_default()
        );
    }
    let mut head = String::from("| |");
    let mut rule = String::from("|---|");
    let (mut during, mut per) = (String::from("| commands |"), String::from("| per confirmed booking |"));
    for bucket in mongo_ops::BUCKETS.iter().chain(&["total"]) {
        head.push_str(&format!(" {bucket} |"));
        rule.push_str("---|");
        during.push_str(&format!(" {} |", ops["commands"][bucket]));
        per.push_str(&format!(" {} |", report::cell(&ops["per_confirmed_booking"][bucket])));
    }
    format!(
        "Commands the MongoDB-wire server (secantusd-rs) counted in `serverStatus` `opcounters`\n\
         over the same window (server-wide: every client, including the drivers' monitoring\n\
         `hello`s in `command`):\n\n{head}\n{rule}\n{during}\n{per}\n"
    )
}

fn connected_summary(c: &Value) -> String {
    if c.is_null() {
        return "**Connected users (WebSocket subscriptions): not measured in this run** (`--subscribers 0`);\n\
                `subscribers`, `gateway_rss_mb` and `seat_change_p99_ms` are null.\n"
            .to_owned();
    }
    let d = &c["deliveries"];
    let rss = &c["gateway_rss_mb"];
    let v = &c["flash_sale_verification"];
    format!(
        "**Connected users.** {held} `seatMap` subscriptions (graphql-transport-ws) held open over\n\
         WebSocket connections from 127.0.0.1, 127.0.0.2, ... ({requested} requested; this\n\
         process's RLIMIT_NOFILE is {limit}, and each connection is a descriptor in the gateway\n\
         and one in the load generator). {focused} of them watch the showtime of a second,\n\
         single-round flash sale ({users} customers) run while they are held; the rest are spread\n\
         over {showtimes} showtimes of the hall. Before the sale a probe seat change per showtime\n\
         proves every subscription live. Every subscriber must receive every change of its\n\
         showtime (as many as any subscriber of that showtime, no resync, every sold seat seen\n\
         BOOKED). Latency = arrival at the subscriber minus the change's `changedAt`. The gateway\n\
         is the release `marquee-gateway` binary in its own process; RSS is its VmRSS.\n\n\
         | subscribers held | changes delivered | missing changes | failures | seat-change p50 ms | p99 ms (goal <= 250) | p99.9 ms | gateway RSS before / open / peak MiB (goal <= 1536) |\n\
         |---|---|---|---|---|---|---|---|\n\
         | {held} | {delivered} | {missing} | {failures} | {p50} | {p99} | {p999} | {before} / {open} / {peak} |\n\n\
         The second flash sale verified from the stores too: {dbs} double-booked seats, {dc} double\n\
         charges, {ln} lost notifications, {wr} losers without SEAT_UNAVAILABLE.\n",
        held = c["subscribers_held"],
        requested = c["subscribers_requested"],
        limit = report::cell(&c["open_files_limit"]),
        focused = c["focused_on_rush_showtime"],
        users = c["flash_sale"]["users"],
        showtimes = c["showtimes_watched"],
        delivered = d["delivered"],
        missing = d["subscribers_missing_changes"],
        failures = d["subscribers_with_failures"],
        p50 = report::cell(&d["delivery_latency"]["p50_ms"]),
        p99 = report::cell(&d["delivery_latency"]["p99_ms"]),
        p999 = report::cell(&d["delivery_latency"]["p999_ms"]),
        before = report::cell(&rss["before"]),
        open = report::cell(&rss["subscriptions_open"]),
        peak = report::cell(&rss["peak"]),
        dbs = v["double_booked_seats"],
        dc = v["double_charges"],
        ln = v["lost_notifications"],
        wr = v["wrong_refusals"],
    )
}

/// A browse step's failures, every label counted: answers with errors, transport
/// failures and requests not sent because too many were in flight.
fn browse_failures(step: &Value) -> u64 {
    step["failures"].as_object().map_or(0, |by_label| by_label.values().filter_map(Value::as_u64).sum())
}
