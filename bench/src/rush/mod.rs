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
//!
//! Files: `summary.rs` (the Markdown written into BENCHMARKS.md); this one holds the
//! options and the run itself, with its CPU and MongoDB profile. The WebSocket
//! subscribers held open through a second flash sale are `crate::connected`.

mod summary;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_e2e::MeshSettings as Settings;
use serde_json::{Value, json};
use tonic::transport::Endpoint;

use crate::catalog::{SEATS, build_hall};
use crate::connected::{self, Scenario};
use crate::flash_sale::{self, Config};
use crate::gql::{Answer, Client};
use crate::mesh::{GatewayProcess, Mesh, Service};
use crate::stats::{round1, round2, round3};
use crate::{browse, cpu, mongo_ops, pgbench, report};

use self::summary::summary;

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
    /// `--users N --rounds N --hot-seats N --no-browse --subscribers N --focused N
    /// --orphan-rule`.
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
                "--orphan-rule" => options.flash.orphan_rule = true,
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
pub async fn bench_settings(orphan_rule: bool) -> anyhow::Result<Settings> {
    let mut settings: Settings = marquee_kit::testing::isolated_settings().await?;
    settings.telemetry.level = "warn".to_owned();
    settings.postgres.max_connections = 16;
    // Production password hashing (test.toml makes it cheap).
    settings.auth.argon2_memory_kib = 19456;
    settings.auth.argon2_iterations = 2;
    // Browsing needs an ordinary catalog next to the benchmark hall.
    settings.cinema.seed_demo = true;
    // The orphan-seat rule refuses random single seats for a reason other than
    // contention; the flash sale measures contention, unless asked for the rule's cost
    // (`--orphan-rule`: the production default).
    settings.cinema.no_orphan_seats = orphan_rule;
    settings.cinema.hold_sweep_interval_ms = 5000;
    settings.booking.outbox_poll_ms = 1000;
    settings.booking.charge_retry_backoff_ms = 200;
    settings.payment.outbox_poll_ms = 1000;
    settings.notification.claim_ttl_seconds = 30;
    // Reading booking's log for what no delivery handled: off in test.toml (its URLs
    // could be a running mesh's), config/default.toml's rounds here.
    settings.notification.reconcile_every_ms = 30_000;
    settings.notification.reconcile_grace_ms = 60_000;
    settings.ticket.reconcile_every_ms = 5_000;
    settings.ticket.reconcile_grace_ms = 15_000;
    Ok(settings)
}

/// Showtimes of the hall: flash sale, pgbench baseline, the flash sale under
/// subscriptions, and quiet ones that only the spread-out subscribers watch.
const QUIET_SHOWTIMES: usize = 7;

pub async fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    let settings = bench_settings(options.flash.orphan_rule).await?;
    let database_url = settings.postgres.url.expose().clone();
    let mesh = Mesh::builder().settings(settings).without_gateway().start().await?;
    let gateway = GatewayProcess::start(&mesh, &root.join("config")).await?;
    let graphql_url = gateway.graphql_url();
    let channel =
        Endpoint::from_shared(mesh.url(Service::Cinema)?)?.connect().await.context("cinema unreachable")?;
    let showtimes = build_hall(channel.clone(), 3 + QUIET_SHOWTIMES).await?;
    eprintln!("mesh up; hall of {SEATS} seats; gateway process at {graphql_url}");

    // pgbench's CPU per booking, every process on the machine as for the rush: the
    // rush's CPU per booking over it is a measure of the code that the machine's speed,
    // which drifts by tens of percent within the hour here, cancels out of.
    // pgbench and its backends end inside the window: count them once waited for.
    let pgbench_cpu_before = cpu::snapshot_with_children();
    let pgbench_started = Instant::now();
    let pgbench_tps = {
        let (url, showtime) = (database_url.clone(), showtimes[1].clone());
        tokio::task::spawn_blocking(move || {
            pgbench::lock_confirm(&url, &showtime, PGBENCH_CLIENTS, PGBENCH_PER_CLIENT)
        })
        .await
        .context("pgbench task failed")??
    };
    let pgbench_cpu = cpu::per_booking(
        &pgbench_cpu_before,
        &cpu::snapshot_with_children(),
        pgbench_started.elapsed().as_secs_f64(),
        PGBENCH_CLIENTS * PGBENCH_PER_CLIENT,
    );
    eprintln!("pgbench, same SQL: {pgbench_tps:.0} bookings/s");

    let config = options.flash.clone();
    let crowd = flash_sale::register_crowd(std::slice::from_ref(&graphql_url), &config).await?;
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
    // Shut down before the runtime ends: see `marquee_mongo::disconnect`.
    mongo.shutdown().immediate(true).await;
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

    let requested = options.subscribers;
    // One gateway holds them all: its own descriptor limit is the cut.
    let held = connected::that_fit(requested, 1);
    let connected = if held > 0 {
        let watched = [&showtimes[2..3], &showtimes[3..]].concat();
        let mut c = connected::connected_users(Scenario {
            gateways: &[gateway.handle()],
            cinema: &channel,
            settings: &mesh.settings,
            watched: &watched,
            subscribers: held,
            focused: options.focused.min(held),
            requested,
            per_host: None,
            flash: &options.flash,
        })
        .await?;
        // One gateway: its memory where the results have always had it.
        c["gateway_rss_mb"] = c["gateways"][0]["rss_mb"].clone();
        Some(c)
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
        "pgbench_cpu_ms_per_booking": pgbench_cpu["total_cpu_ms_per_confirmed_booking"].clone(),
        "cpu_per_booking_over_pgbench": over(
            &profile["cpu"]["total_cpu_ms_per_confirmed_booking"],
            &pgbench_cpu["total_cpu_ms_per_confirmed_booking"],
        ),
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
        "pgbench_cpu": pgbench_cpu,
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

/// `a / b` to two decimals; null unless both are numbers and `b` is positive.
fn over(a: &Value, b: &Value) -> Value {
    match (a.as_f64(), b.as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!(round2(a / b)),
        _ => Value::Null,
    }
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
        // `$gte: 1` as the relays query it (marquee_messaging::outbox says why not `$gt: 0`).
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_of_two_readings_is_null_unless_both_were_measured() {
        assert_eq!(over(&json!(9.65), &json!(2.5)), json!(3.86));
        assert_eq!(over(&Value::Null, &json!(2.5)), Value::Null);
        assert_eq!(over(&json!(9.65), &Value::Null), Value::Null);
        assert_eq!(over(&json!(9.65), &json!(0.0)), Value::Null);
    }
}
