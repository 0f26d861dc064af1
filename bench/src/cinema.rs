//! The cinema benchmark (`marquee-bench cinema`, run by `scripts/bench-cinema`, never by
//! `scripts/test`).
//!
//! Starts the cinema service in-process on a fresh `marquee_bench` database, builds a
//! 10,000-seat screen through the admin RPCs, then measures:
//! 1. LockSeats + ConfirmSeats through gRPC on random seats, against `pgbench` calling
//!    the same SQL functions with the same concurrency in the same run;
//! 2. hot-seat contention: 1, 8, 64 and 256 clients locking 10 seats (winners release
//!    at once so the race goes on).
//!
//! Writes `bench/results/cinema.json` and `BENCHMARKS.md`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_cinema::Application;
use marquee_e2e::MeshSettings as Settings;
use marquee_kit::Config as _;
use marquee_kit::secret::Secret;
use marquee_kit::shutdown::Shutdown;
use marquee_kit::{ApiError, ErrorCode};
use marquee_proto::cinema::v1 as pb;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use serde_json::json;
use sqlx::Connection;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use crate::catalog::{Rng, SEATS, build_hall, seat_id};
use crate::lean_grpc::LeanChannel;
use crate::stats::{Samples, round1};
use crate::{pgbench, report};

/// Concurrent clients for the throughput comparison, on both sides.
const WORKERS: usize = 16;
/// Lock + confirm pairs per client: together nearly every seat of the showtime.
const OPS_PER_WORKER: usize = 600;
const HOT_SEATS: usize = 10;
const CONTENTION_LEVELS: [usize; 4] = [1, 8, 64, 256];
const CONTENTION_SECONDS: u64 = 3;
/// Hot-seat clients share this many HTTP/2 connections (fewer, fuller writes).
const LEAN_CONNECTIONS: usize = 8;
/// The level also measured through tonic's client.
const TONIC_LEVEL: usize = 256;
const BENCH_DB: &str = "marquee_bench";

/// Runs the benchmark; `root` is the repository (config/, bench/results/, BENCHMARKS.md).
pub async fn run(root: &Path) -> anyhow::Result<()> {
    let mut settings = Settings::load_from(&root.join("config"), "test")?;
    let server_url = recreate_database(&settings).await?;
    settings.postgres.url = Secret::new(format!("{server_url}/{BENCH_DB}"));
    settings.postgres.max_connections = 24;
    settings.cinema.seed_demo = false;
    settings.cinema.no_orphan_seats = false;
    settings.cinema.hold_cutoff_seconds = 0;
    settings.cinema.hold_sweep_interval_ms = 0;

    let app = Application::build(settings.cinema()).await?;
    let app_addr = app.addr();
    let url = format!("http://{app_addr}");
    let shutdown = Shutdown::new();
    let service = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let channels = connect(&url, WORKERS).await?;

    let showtimes = build_hall(channels[0].clone(), 3).await?;
    eprintln!("catalog ready: {} seats per showtime", SEATS);

    let grpc_per_s = lock_confirm_over_grpc(&channels, &showtimes[0]).await?;
    eprintln!("gRPC LockSeats+ConfirmSeats: {grpc_per_s:.0}/s");
    let pgbench_tps =
        pgbench::lock_confirm(&format!("{server_url}/{BENCH_DB}"), &showtimes[1], WORKERS, OPS_PER_WORKER)?;
    eprintln!("pgbench, same SQL: {pgbench_tps:.0}/s");

    let lean: Vec<Caller> = connect_lean(app_addr).await?.into_iter().map(Caller::Lean).collect();
    let mut contention = Vec::new();
    for clients in CONTENTION_LEVELS {
        let level = hot_seats(&lean, &showtimes[2], clients).await?;
        eprintln!("{clients} clients on {HOT_SEATS} seats: {level}");
        contention.push(level);
    }
    // The same top level through tonic's client stack (what the booking service uses),
    // for comparison: the client's own CPU comes out of the server's two cores.
    let tonic: Vec<Caller> = channels
        .iter()
        .take(LEAN_CONNECTIONS)
        .map(|c| Caller::Tonic(CinemaServiceClient::new(c.clone())))
        .collect();
    let via_tonic = hot_seats(&tonic, &showtimes[2], TONIC_LEVEL).await?;
    eprintln!("{TONIC_LEVEL} clients on {HOT_SEATS} seats, tonic client: {via_tonic}");

    shutdown.cancel();
    service.await.context("the cinema service panicked")??;

    let ratio = grpc_per_s / pgbench_tps;
    let results = json!({
        "lock_confirm_per_s": round1(grpc_per_s),
        "pgbench_same_sql_tps": round1(pgbench_tps),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "contention": contention,
        "contention_via_tonic_client": via_tonic,
        "setup": {
            "seats_per_showtime": SEATS,
            "throughput_clients": WORKERS,
            "lock_confirm_pairs": WORKERS * OPS_PER_WORKER,
            "hot_seats": HOT_SEATS,
            "contention_seconds_per_level": CONTENTION_SECONDS,
            "hot_seat_connections": LEAN_CONNECTIONS,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            "measured_at": chrono::Utc::now().to_rfc3339(),
        },
    });
    let out = root.join("bench/results/cinema.json");
    std::fs::write(&out, serde_json::to_string_pretty(&results)? + "\n")
        .with_context(|| format!("cannot write {}", out.display()))?;
    write_summary(&root.join("BENCHMARKS.md"), &results)?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}

/// Drops and recreates the bench database; returns the server part of the URL.
async fn recreate_database(settings: &Settings) -> anyhow::Result<String> {
    let base = settings.postgres.url.expose().clone();
    let (server, _) = base.rsplit_once('/').context("postgres url has no database part")?;
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .context("cannot reach PostgreSQL")?;
    // BENCH_DB is a constant, never input.
    for sql in
        [format!("DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"), format!("CREATE DATABASE {BENCH_DB}")]
    {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .context("cannot recreate the bench database")?;
    }
    Ok(server.to_owned())
}

const LOCK_SEATS: &str = "/marquee.cinema.v1.CinemaService/LockSeats";
const RELEASE_SEATS: &str = "/marquee.cinema.v1.CinemaService/ReleaseSeats";

async fn connect_lean(addr: std::net::SocketAddr) -> anyhow::Result<Vec<LeanChannel>> {
    let mut channels = Vec::with_capacity(LEAN_CONNECTIONS);
    for _ in 0..LEAN_CONNECTIONS {
        channels.push(LeanChannel::connect(addr).await?);
    }
    Ok(channels)
}

/// A hot-seat client's connection: the lean load-tool client, or tonic's.
#[derive(Clone)]
enum Caller {
    Lean(LeanChannel),
    Tonic(CinemaServiceClient<Channel>),
}

impl Caller {
    async fn lock(&mut self, request: pb::LockSeatsRequest) -> anyhow::Result<Result<(), tonic::Status>> {
        match self {
            Self::Lean(channel) => channel.unary(LOCK_SEATS, &request).await,
            Self::Tonic(client) => Ok(client.lock_seats(request).await.map(drop)),
        }
    }

    async fn release(&mut self, request: pb::ReleaseSeatsRequest) -> anyhow::Result<()> {
        let outcome = match self {
            Self::Lean(channel) => channel.unary(RELEASE_SEATS, &request).await?,
            Self::Tonic(client) => client.release_seats(request).await.map(drop),
        };
        outcome.context("release")
    }
}

async fn connect(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(Endpoint::from_shared(url.to_owned())?.connect().await.context("cannot connect")?);
    }
    Ok(channels)
}

/// Client `w` books seats w, w + WORKERS, w + 2 WORKERS, ... in random order: random
/// seats all over the showtime, never two clients on one seat.
async fn lock_confirm_over_grpc(channels: &[Channel], showtime: &str) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WORKERS {
        let mut client = CinemaServiceClient::new(channels[w % channels.len()].clone());
        let showtime = showtime.to_owned();
        tasks.spawn(async move {
            let mut seats: Vec<usize> = (0..OPS_PER_WORKER).map(|i| w + i * WORKERS).collect();
            let mut rng = Rng::seeded();
            for i in (1..seats.len()).rev() {
                seats.swap(i, rng.below(i + 1));
            }
            for k in seats {
                let booking = Uuid::new_v4().to_string();
                let seat_ids = vec![seat_id(k)];
                client
                    .lock_seats(pb::LockSeatsRequest {
                        showtime_id: showtime.clone(),
                        seat_ids: seat_ids.clone(),
                        booking_id: booking.clone(),
                        ttl_seconds: 300,
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("lock of seat {k}"))?;
                client
                    .confirm_seats(pb::ConfirmSeatsRequest {
                        showtime_id: showtime.clone(),
                        booking_id: booking,
                        seat_ids,
                    })
                    .await
                    .with_context(|| format!("confirm of seat {k}"))?;
            }
            anyhow::Ok(())
        });
    }
    for outcome in tasks.join_all().await {
        outcome?;
    }
    Ok((WORKERS * OPS_PER_WORKER) as f64 / started.elapsed().as_secs_f64())
}

struct Level {
    clients: usize,
    resolved_per_s: f64,
    winners: usize,
    losers: usize,
    p50_ms: f64,
    p99_ms: f64,
    loser_p99_ms: f64,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} resolved/s ({} won, {} lost), p50 {:.2} ms, p99 {:.2} ms, losers p99 {:.2} ms",
            self.resolved_per_s, self.winners, self.losers, self.p50_ms, self.p99_ms, self.loser_p99_ms
        )
    }
}

impl serde::Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json!({
            "clients": self.clients,
            "resolved_per_s": round1(self.resolved_per_s),
            "winners": self.winners,
            "losers": self.losers,
            "p50_ms": (self.p50_ms * 100.0).round() / 100.0,
            "p99_ms": (self.p99_ms * 100.0).round() / 100.0,
            "loser_p99_ms": (self.loser_p99_ms * 100.0).round() / 100.0,
        })
        .serialize(s)
    }
}

/// `clients` clients each lock one of the hot seats for a fresh booking, over and over;
/// a winner releases at once (not timed) so the seat is contested again.
async fn hot_seats(callers: &[Caller], showtime: &str, clients: usize) -> anyhow::Result<Level> {
    let deadline = Instant::now() + Duration::from_secs(CONTENTION_SECONDS);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let mut caller = callers[c % callers.len()].clone();
        let showtime = showtime.to_owned();
        tasks.spawn(async move {
            let mut rng = Rng::seeded();
            let (mut won, mut lost) = (Samples::default(), Samples::default());
            while Instant::now() < deadline {
                let booking = Uuid::new_v4().to_string();
                let lock = pb::LockSeatsRequest {
                    showtime_id: showtime.clone(),
                    seat_ids: vec![seat_id(rng.below(HOT_SEATS))],
                    booking_id: booking.clone(),
                    ttl_seconds: 300,
                    ..Default::default()
                };
                let t0 = Instant::now();
                let outcome = caller.lock(lock).await?;
                let elapsed = t0.elapsed().as_secs_f64() * 1000.0;
                match outcome {
                    Ok(()) => {
                        won.push(elapsed);
                        caller
                            .release(pb::ReleaseSeatsRequest {
                                showtime_id: showtime.clone(),
                                booking_id: booking,
                            })
                            .await?;
                    }
                    Err(status) if ApiError::from_status(&status).code == ErrorCode::SeatUnavailable => {
                        lost.push(elapsed)
                    }
                    Err(status) => anyhow::bail!("unexpected lock failure: {status}"),
                }
            }
            anyhow::Ok((won, lost))
        });
    }
    let (mut all, mut losers, mut winners) = (Samples::default(), Samples::default(), 0);
    for outcome in tasks.join_all().await {
        let (won, lost) = outcome?;
        winners += won.len();
        all.extend(won);
        all.extend(lost.clone());
        losers.extend(lost);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Level {
        clients,
        resolved_per_s: all.len() as f64 / elapsed,
        winners,
        losers: losers.len(),
        p50_ms: all.percentile(0.50).unwrap_or(0.0),
        p99_ms: all.percentile(0.99).unwrap_or(0.0),
        loser_p99_ms: losers.percentile(0.99).unwrap_or(0.0),
    })
}

fn write_summary(path: &Path, results: &serde_json::Value) -> anyhow::Result<()> {
    let mut table = String::new();
    let tonic_row = results["contention_via_tonic_client"].clone();
    let rows = results["contention"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| (l, ""))
        .chain([(&tonic_row, " (tonic client)")]);
    for (level, via) in rows {
        table.push_str(&format!(
            "| {}{via} | {} | {} / {} | {} | {} | {} |\n",
            level["clients"],
            level["resolved_per_s"],
            level["winners"],
            level["losers"],
            level["p50_ms"],
            level["p99_ms"],
            level["loser_p99_ms"]
        ));
    }
    let setup = &results["setup"];
    let text = format!(
        "## Cinema: seat holds\n\n\
         Generated by `scripts/bench-cinema` (release build; not part of `scripts/test`) on {measured_at},\n\
         {cpus} CPUs, PostgreSQL on loopback. Raw numbers: `bench/results/cinema.json`.\n\n\
         The cinema service runs in-process on a fresh `{BENCH_DB}` database with one showtime of\n\
         {seats} seats per scenario, created through the admin RPCs.\n\n\
         **LockSeats + ConfirmSeats through gRPC vs pgbench on the same SQL.** {clients} concurrent\n\
         clients, {pairs} bookings of one random seat each (no two clients on one seat), each a\n\
         LockSeats then a ConfirmSeats call. pgbench runs the same two SQL function calls per\n\
         booking (`cinema_lock_seats`, `cinema_confirm_seats`, prepared) with the same clients and\n\
         seat pattern, in the same run.\n\n\
         | gRPC lock+confirm /s | pgbench same SQL /s | ratio (goal >= 0.5) |\n\
         |---|---|---|\n\
         | {grpc} | {pgbench} | {ratio} |\n\n\
         **Hot seats.** N clients lock one of {hot} seats for a fresh booking, over and over, for\n\
         {secs} s per level; a winner releases at once (untimed) so the seat stays contested.\n\
         Latency is per LockSeats call; resolved = winners + losers. The clients share {conns}\n\
         HTTP/2 connections and call through a lean gRPC client (`bench/src/lean_grpc.rs`:\n\
         frames the request on an h2 stream and reads the status, as h2load or ghz would),\n\
         because the load generator runs on the same 2 cores as the service and PostgreSQL.\n\
         The last row is the top level again through tonic's client stack, which the\n\
         booking service uses.\n\n\
         | clients | resolved/s | won / lost | p50 ms | p99 ms | losers p99 ms |\n\
         |---|---|---|---|---|---|\n\
         {table}",
        measured_at = setup["measured_at"].as_str().unwrap_or_default(),
        cpus = setup["cpus"],
        seats = setup["seats_per_showtime"],
        clients = setup["throughput_clients"],
        pairs = setup["lock_confirm_pairs"],
        grpc = results["lock_confirm_per_s"],
        pgbench = results["pgbench_same_sql_tps"],
        ratio = results["ratio"],
        hot = setup["hot_seats"],
        secs = setup["contention_seconds_per_level"],
        conns = setup["hot_seat_connections"],
    );
    report::update_section(path, "bench-cinema", &text)
}
