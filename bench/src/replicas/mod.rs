//! "Run it like production" (`marquee-bench replicas`, run by `scripts/bench-replicas`):
//! the rush bench's flash sale and connected users, but on the real service binaries,
//! each its own process (started and supervised as the chaos suite does), with
//! replicas sharing the same stores:
//!
//! 1. `one-replica`: one process of each service, the flash sale through the gateway
//!    (`bookings_per_s_one_replica`).
//! 2. `two-replicas`: two gateways, cinemas, bookings and payments (the other
//!    processes call both replicas through the balanced upstream channels), the
//!    customers split over both gateways; one replica of each is SIGKILLed mid-rush
//!    and started again after 0.3-1.5 s (`bookings_per_s`, `replicas_killed`).
//! 3. `three-gateways`: the same with a third gateway; WebSocket `seatMap` subscribers
//!    spread evenly over the three while a single-round flash sale runs; every change
//!    must reach every subscriber (`subscribers`, `gateway_rss_mb` per gateway,
//!    `seat_change_p99_ms`). Each gateway's descriptor limit bounds its share (50,000
//!    over three fit under 20,000 each); the load generator holds its ends in as many
//!    subscriber hosts as its own limit makes it take (`load_generator_processes`).
//!
//! Each phase has fresh stores of its own and ends with the flash sale's verification
//! from the stores and the chaos suite's checks, once the mesh has settled. Writes
//! `bench/results/replicas.json` and the `bench-replicas` section of BENCHMARKS.md;
//! fails when a promise was broken (a double booking, a double charge, a lost or
//! duplicated notification, a store mismatch, a process not back after its kill).
//!
//! Files: `mesh.rs` (a phase's processes), `phase.rs` (the phases and their checks),
//! `summary.rs` (the Markdown).

mod mesh;
mod phase;
mod summary;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use self::mesh::{Layout, Place};
use self::phase::Phase;
use crate::catalog::SEATS;
use crate::connected;
use crate::flash_sale::Config;
use crate::report;
use crate::stats::round1;

#[derive(Debug, Clone)]
pub struct Options {
    /// The crowd of each flash sale (users, hot seats, rounds).
    pub flash: Config,
    /// WebSocket subscriptions asked for in the third phase (0: skip it).
    pub subscribers: usize,
    /// At most this many per subscriber host (default: as many as the descriptor limit
    /// allows); fewer starts more hosts.
    pub subscribers_per_host: Option<usize>,
    /// How many of them watch the showtime of the sale (default: a tenth).
    pub focused: Option<usize>,
    /// Over how long from the start signal the four kills are spread (default: 0.8 x
    /// the one-replica rush, so that they land inside the rush).
    pub kill_spread: Option<Duration>,
    /// How long each phase's mesh may take to settle before the checks.
    pub settle_seconds: u64,
    pub port_base: u16,
    pub out: Option<PathBuf>,
    /// Keep every phase's databases (a phase that broke a promise always keeps them).
    pub keep: bool,
}

impl Options {
    pub const USAGE: &str = "marquee-bench replicas [--users N] [--rounds N] [--hot-seats N] \
        [--subscribers N] [--subscribers-per-host N] [--focused N] [--kill-spread-seconds N] \
        [--settle-seconds N] [--port-base N] [--out FILE] [--keep]";

    /// Defaults: the rush bench's crowd (256 customers, 10 hot seats, 8 rounds) and
    /// 50,000 subscribers (as many as the gateways' descriptor limits allow).
    pub fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut options = Self {
            flash: customers(),
            subscribers: 50_000,
            subscribers_per_host: None,
            focused: None,
            kill_spread: None,
            settle_seconds: 120,
            // Clear of the chaos suite's block (7100) and of scripts/up's ports.
            port_base: 7300,
            out: None,
            keep: false,
        };
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--users" => options.flash.users = value("--users")?.parse()?,
                "--rounds" => options.flash.rounds = value("--rounds")?.parse()?,
                "--hot-seats" => options.flash.hot_seats = value("--hot-seats")?.parse()?,
                "--subscribers" => options.subscribers = value("--subscribers")?.parse()?,
                "--subscribers-per-host" => {
                    options.subscribers_per_host = Some(value("--subscribers-per-host")?.parse()?)
                }
                "--focused" => options.focused = Some(value("--focused")?.parse()?),
                "--kill-spread-seconds" => {
                    options.kill_spread =
                        Some(Duration::from_secs_f64(value("--kill-spread-seconds")?.parse()?))
                }
                "--settle-seconds" => options.settle_seconds = value("--settle-seconds")?.parse()?,
                "--port-base" => options.port_base = value("--port-base")?.parse()?,
                "--out" => options.out = Some(value("--out")?.into()),
                "--keep" => options.keep = true,
                other => anyhow::bail!("unknown option {other}; usage: {}", Self::USAGE),
            }
        }
        anyhow::ensure!(options.flash.users >= 2, "--users must be at least 2");
        anyhow::ensure!(options.flash.rounds >= 1, "--rounds must be at least 1");
        anyhow::ensure!(options.subscribers_per_host != Some(0), "--subscribers-per-host must be at least 1");
        anyhow::ensure!(options.port_base <= 65_000, "--port-base must leave room for the block");
        Ok(options)
    }
}

/// The rush bench's customers, with the chaos suite's patience: a request outlives the
/// gateway's longest answer (a repeat waits for the first send of its key), and a
/// customer whose gateway was just killed keeps retrying (same key) until it is back.
fn customers() -> Config {
    Config { request_timeout: Duration::from_secs(15), max_sends: 8, ..Config::bench() }
}

pub async fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    let started_at = chrono::Utc::now();
    let root = root.canonicalize().with_context(|| format!("no repository at {}", root.display()))?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let place = Place {
        bin_dir: std::env::current_exe()?.parent().context("this binary has no directory")?.to_owned(),
        config_dir: root.join("config"),
        port_base: options.port_base,
        logs: root.join(format!(".run/replicas-{run}")),
        epoch: Instant::now(),
    };
    eprintln!("[replicas] run {run}; process logs in {}", place.logs.display());
    let patience = Duration::from_secs(options.settle_seconds);
    let flash = &options.flash;

    let one =
        phase::flash_sale(&place, "one-replica", Layout::ONE, flash, None, patience, options.keep).await?;
    let spread = options.kill_spread.unwrap_or_else(|| Duration::from_secs_f64(0.8 * one.rush_seconds));
    let two =
        phase::flash_sale(&place, "two-replicas", Layout::TWO, flash, Some(spread), patience, options.keep)
            .await?;
    let requested = options.subscribers;
    let held = connected::that_fit(requested, Layout::THREE_GATEWAYS.gateway_count());
    let three = if held > 0 {
        let audience = phase::Audience {
            subscribers: held,
            focused: options.focused.unwrap_or(requested / 10).min(held),
            requested,
            per_host: options.subscribers_per_host,
        };
        Some(phase::connected_users(&place, flash, audience, patience, options.keep).await?)
    } else {
        None
    };

    let results = results(&options, &place, [&one, &two], three.as_ref(), started_at, spread);
    let out = options.out.clone().unwrap_or_else(|| root.join("bench/results/replicas.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    report::write_json(&out, &results)?;
    let section = summary::summary(&results);
    report::update_section(&root.join("BENCHMARKS.md"), "bench-replicas", &section)?;
    println!("{section}\nresults: {}", out.display());
    let failed: Vec<&str> = [Some(&one), Some(&two), three.as_ref()]
        .into_iter()
        .flatten()
        .filter(|p| !p.clean)
        .filter_map(|p| p.json["mesh"]["phase"].as_str())
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "broken promises in phase(s) {}; see {}",
        failed.join(", "),
        out.display()
    );
    Ok(())
}

fn results(
    options: &Options,
    place: &Place,
    [one, two]: [&Phase; 2],
    three: Option<&Phase>,
    started_at: chrono::DateTime<chrono::Utc>,
    spread: Duration,
) -> Value {
    let broken = [Some(one), Some(two), three]
        .into_iter()
        .flatten()
        .fold(phase::Broken::default(), |sum, p| sum.add(p.broken));
    let connected = three.map(|p| &p.json["connected_users"]);
    let peaks = connected
        .and_then(|c| c["gateways"].as_array())
        .map(|gateways| gateways.iter().map(|g| g["rss_mb"]["peak"].clone()).collect::<Vec<_>>());
    let clean = [Some(one), Some(two), three].into_iter().flatten().all(|p| p.clean);
    let hosts = connected.and_then(|c| c["subscriber_hosts"].as_array()).map(Vec::len);
    let mut results = json!({
        "bookings_per_s": round1(two.bookings_per_s),
        "bookings_per_s_one_replica": round1(one.bookings_per_s),
        "replicas_killed": two.kills,
        "kills_during_rush": two.kills_during_rush,
        // Null when the scenario did not run: never a made-up number.
        "subscribers": connected.map(|c| c["subscribers_held"].clone()),
        "gateway_rss_mb": peaks,
        "seat_change_p99_ms": connected.map(|c| c["deliveries"]["delivery_latency"]["p99_ms"].clone()),
        // The subscribers' WebSockets are held by subscriber hosts beside this process.
        "load_generator_processes": 1 + hosts.unwrap_or(0),
        "subscriber_hosts": hosts,
        "verification_clean": clean,
        "one_replica": one.json,
        "two_replicas": two.json,
        "three_gateways": three.map(|p| p.json.clone()),
        "setup": {
            "processes": "the release binaries marquee-user, -cinema, -payment, -booking, -ticket, -notification and -gateway, each its own process on loopback (started and supervised as scripts/chaos does, production defaults of config/default.toml), fresh stores per phase; the load generator (marquee-bench) is a process of its own, and holds the subscribers' WebSockets in subscriber hosts (marquee-bench subscriber-host, its child processes, each under the descriptor limit)",
            "options": {
                "users": options.flash.users,
                "rounds": options.flash.rounds,
                "hot_seats": options.flash.hot_seats,
                "subscribers_requested": options.subscribers,
                "subscribers_per_host": options.subscribers_per_host,
                "focused": options.focused,
                "kill_spread_seconds": round1(spread.as_secs_f64()),
                "settle_seconds": options.settle_seconds,
                "port_base": options.port_base,
            },
            "customers": {
                "request_timeout_s": options.flash.request_timeout.as_secs(),
                "max_sends": options.flash.max_sends,
                "settle_poll_interval_ms": options.flash.settle_poll_interval.as_millis(),
                "settle_deadline_s": options.flash.settle_deadline.as_secs(),
            },
            "seats_per_showtime": SEATS,
            "telemetry_level": std::env::var("MARQUEE_TELEMETRY__LEVEL").unwrap_or_else(|_| "warn".to_owned()),
            "open_files_limit": connected::open_files_limit(),
            "binaries": place.bin_dir.display().to_string(),
            "logs": place.logs.display().to_string(),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "started_at": started_at.to_rfc3339(),
            "measured_at": chrono::Utc::now().to_rfc3339(),
            "wall_seconds": round1(place.epoch.elapsed().as_secs_f64()),
        },
    });
    if let (Some(into), Some(from)) = (results.as_object_mut(), broken.to_json().as_object()) {
        into.extend(from.clone());
    }
    results
}
