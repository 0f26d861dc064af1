//! The cinema benchmark (run by `scripts/bench-cinema`, never by `scripts/test`).
//!
//! Starts the cinema service in-process on a fresh `marquee_bench` database, builds a
//! 10,000-seat screen through the admin RPCs, then measures:
//! 1. LockSeats + ConfirmSeats through gRPC on random seats, against `pgbench` calling
//!    the same SQL functions with the same concurrency in the same run;
//! 2. hot-seat contention: 1, 8, 64 and 256 clients locking 10 seats (winners release
//!    at once so the race goes on).
//!
//! Writes `bench/results/cinema.json` and `BENCHMARKS.md`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_cinema::Application;
use marquee_common::secret::Secret;
use marquee_common::shutdown::Shutdown;
use marquee_common::{ApiError, ErrorCode, Settings};
use marquee_proto::cinema::v1 as pb;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use serde_json::json;
use sqlx::Connection;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

const ROWS: usize = 100;
const SEATS_PER_ROW: usize = 100;
/// Concurrent clients for the throughput comparison, on both sides.
const WORKERS: usize = 16;
/// Lock + confirm pairs per client: together nearly every seat of the showtime.
const OPS_PER_WORKER: usize = 600;
const HOT_SEATS: usize = 10;
const CONTENTION_LEVELS: [usize; 4] = [1, 8, 64, 256];
const CONTENTION_SECONDS: u64 = 3;
const BENCH_DB: &str = "marquee_bench";

fn row_label(row: usize) -> String {
    // Letters only, so "AB" + "12" can never collide with another row's seat id.
    let letter = |i: usize| char::from(b'A' + u8::try_from(i).unwrap_or(0));
    format!("{}{}", letter(row / 26), letter(row % 26))
}

/// Seat `k` of the big layout; `pgbench_seat_sql` computes the same id in SQL.
fn seat_id(k: usize) -> String {
    format!("{}{}", row_label(k / SEATS_PER_ROW), k % SEATS_PER_ROW + 1)
}

fn pgbench_seat_sql() -> String {
    format!(
        "chr(65 + (:k / {SEATS_PER_ROW}) / 26) || chr(65 + (:k / {SEATS_PER_ROW}) % 26) || (:k % {SEATS_PER_ROW} + 1)"
    )
}

/// xorshift64*: reproducible, dependency-free randomness for seat picks.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        Self(Uuid::new_v4().as_u64_pair().0 | 1)
    }

    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound as u64) as usize
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    marquee_common::telemetry::install_crypto_provider();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut settings = Settings::load_from(&root.join("config"), "test")?;
    let server_url = recreate_database(&settings).await?;
    settings.postgres.url = Secret::new(format!("{server_url}/{BENCH_DB}"));
    settings.postgres.max_connections = 24;
    settings.cinema.seed_demo = false;
    settings.cinema.no_orphan_seats = false;
    settings.cinema.hold_cutoff_seconds = 0;
    settings.cinema.hold_sweep_interval_ms = 0;

    let app = Application::build(settings.clone()).await?;
    let url = format!("http://{}", app.addr());
    let shutdown = Shutdown::new();
    let service = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let channels = connect(&url, WORKERS).await?;

    let showtimes = build_catalog(channels[0].clone()).await?;
    eprintln!("catalog ready: {} seats per showtime", ROWS * SEATS_PER_ROW);

    let grpc_per_s = lock_confirm_over_grpc(&channels, &showtimes[0]).await?;
    eprintln!("gRPC LockSeats+ConfirmSeats: {grpc_per_s:.0}/s");
    let pgbench_tps = lock_confirm_with_pgbench(&server_url, &showtimes[1])?;
    eprintln!("pgbench, same SQL: {pgbench_tps:.0}/s");

    let mut contention = Vec::new();
    for clients in CONTENTION_LEVELS {
        let level = hot_seats(&channels, &showtimes[2], clients).await?;
        eprintln!("{clients} clients on {HOT_SEATS} seats: {level}");
        contention.push(level);
    }

    shutdown.cancel();
    service.await.context("the cinema service panicked")??;

    let ratio = grpc_per_s / pgbench_tps;
    let results = json!({
        "lock_confirm_per_s": round(grpc_per_s),
        "pgbench_same_sql_tps": round(pgbench_tps),
        "ratio": (ratio * 1000.0).round() / 1000.0,
        "contention": contention,
        "setup": {
            "seats_per_showtime": ROWS * SEATS_PER_ROW,
            "throughput_clients": WORKERS,
            "lock_confirm_pairs": WORKERS * OPS_PER_WORKER,
            "hot_seats": HOT_SEATS,
            "contention_seconds_per_level": CONTENTION_SECONDS,
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

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
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

async fn connect(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(Endpoint::from_shared(url.to_owned())?.connect().await.context("cannot connect")?);
    }
    Ok(channels)
}

/// A cinema with one 100 x 100 screen and three showtimes on it: gRPC throughput,
/// pgbench throughput, and contention each get fresh seats.
async fn build_catalog(channel: Channel) -> anyhow::Result<Vec<String>> {
    let mut client = CinemaServiceClient::new(channel);
    let movie = client
        .create_movie(pb::CreateMovieRequest {
            title: "Benchmark".into(),
            runtime_minutes: 120,
            ..Default::default()
        })
        .await?
        .into_inner();
    let cinema = client
        .create_cinema(pb::CreateCinemaRequest {
            name: "Bench Palace".into(),
            city: "Benchville".into(),
            address: String::new(),
            time_zone: "Europe/Berlin".into(),
        })
        .await?
        .into_inner();
    let rows = (0..ROWS)
        .map(|r| pb::LayoutRow {
            label: row_label(r),
            seats: (1..=SEATS_PER_ROW)
                .map(|n| pb::LayoutSeat {
                    number: i32::try_from(n).unwrap_or(1),
                    category: "standard".into(),
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    let screen = client
        .create_screen(pb::CreateScreenRequest { cinema_id: cinema.id, name: "Hall".into(), rows })
        .await?
        .into_inner();
    let mut showtimes = Vec::new();
    for day in 1..=3 {
        let starts_at = chrono::Utc::now() + chrono::Duration::days(day);
        let showtime = client
            .create_showtime(pb::CreateShowtimeRequest {
                movie_id: movie.id.clone(),
                screen_id: screen.id.clone(),
                starts_at: Some(marquee_common::time::to_proto(starts_at)),
                prices: vec![pb::CategoryPrice {
                    category: "standard".into(),
                    price: Some(marquee_proto::common::v1::Money {
                        amount_minor: 1000,
                        currency: "EUR".into(),
                    }),
                }],
            })
            .await?
            .into_inner();
        showtimes.push(showtime.id);
    }
    Ok(showtimes)
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

/// The same two SQL calls per booking, from pgbench clients over the same seat pattern.
fn lock_confirm_with_pgbench(server_url: &str, showtime: &str) -> anyhow::Result<f64> {
    let seat = pgbench_seat_sql();
    let script = format!(
        "\\set i :i + 1\n\
         \\set k :client_id + (:i - 1) * {WORKERS}\n\
         SELECT count(*) FROM cinema_lock_seats('{showtime}'::uuid, ARRAY[{seat}], md5('pgb' || :k)::uuid, 300, 0);\n\
         SELECT count(*) FROM cinema_confirm_seats('{showtime}'::uuid, md5('pgb' || :k)::uuid, ARRAY[{seat}]);\n"
    );
    let path: PathBuf = std::env::temp_dir().join(format!("marquee-bench-{}.sql", Uuid::new_v4()));
    std::fs::write(&path, script).context("cannot write the pgbench script")?;
    let output = std::process::Command::new("pgbench")
        .args(["-n", "-M", "prepared", "-D", "i=0"])
        .args(["-c", &WORKERS.to_string(), "-j", "2", "-t", &OPS_PER_WORKER.to_string()])
        .arg("-f")
        .arg(&path)
        .arg(format!("{server_url}/{BENCH_DB}"))
        .output()
        .context("cannot run pgbench (is it installed?)")?;
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let failed: i64 = sqlx_free_count(&stdout, "number of failed transactions:").unwrap_or(0);
    anyhow::ensure!(failed == 0, "pgbench had {failed} failed transactions:\n{stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = ")?.split_whitespace().next()?.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output:\n{stdout}"))
}

fn sqlx_free_count(text: &str, prefix: &str) -> Option<i64> {
    text.lines().find_map(|l| l.trim().strip_prefix(prefix)?.split_whitespace().next()?.parse().ok())
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
            "resolved_per_s": round(self.resolved_per_s),
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
async fn hot_seats(channels: &[Channel], showtime: &str, clients: usize) -> anyhow::Result<Level> {
    let deadline = Instant::now() + Duration::from_secs(CONTENTION_SECONDS);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let mut client = CinemaServiceClient::new(channels[c % channels.len()].clone());
        let showtime = showtime.to_owned();
        tasks.spawn(async move {
            let mut rng = Rng::seeded();
            let (mut won, mut lost) = (Vec::new(), Vec::new());
            while Instant::now() < deadline {
                let booking = Uuid::new_v4().to_string();
                let t0 = Instant::now();
                let outcome = client
                    .lock_seats(pb::LockSeatsRequest {
                        showtime_id: showtime.clone(),
                        seat_ids: vec![seat_id(rng.below(HOT_SEATS))],
                        booking_id: booking.clone(),
                        ttl_seconds: 300,
                    })
                    .await;
                let elapsed = t0.elapsed().as_secs_f64() * 1000.0;
                match outcome {
                    Ok(_) => {
                        won.push(elapsed);
                        client
                            .release_seats(pb::ReleaseSeatsRequest {
                                showtime_id: showtime.clone(),
                                booking_id: booking,
                            })
                            .await
                            .context("release")?;
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
    let (mut all, mut losers, mut winners) = (Vec::new(), Vec::new(), 0);
    for outcome in tasks.join_all().await {
        let (won, lost) = outcome?;
        winners += won.len();
        all.extend(won);
        all.extend(lost.iter().copied());
        losers.extend(lost);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(Level {
        clients,
        resolved_per_s: all.len() as f64 / elapsed,
        winners,
        losers: losers.len(),
        p50_ms: percentile(&mut all, 0.50),
        p99_ms: percentile(&mut all, 0.99),
        loser_p99_ms: percentile(&mut losers, 0.99),
    })
}

fn percentile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

fn write_summary(path: &Path, results: &serde_json::Value) -> anyhow::Result<()> {
    let mut table = String::new();
    for level in results["contention"].as_array().into_iter().flatten() {
        table.push_str(&format!(
            "| {} | {} | {} / {} | {} | {} | {} |\n",
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
         Latency is per LockSeats call; resolved = winners + losers.\n\n\
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
    );
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    std::fs::write(path, replace_section(&current, "bench-cinema", &text))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Replaces the text between `<!-- {name}:begin -->` and `<!-- {name}:end -->` (or
/// appends the marked section), so each benchmark rewrites only its own part of
/// BENCHMARKS.md.
fn replace_section(document: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    match (document.find(&begin), document.find(&end)) {
        (Some(start), Some(stop)) if start < stop => {
            format!("{}{section}{}", &document[..start], &document[stop + end.len()..])
        }
        _ => format!("{}\n\n{section}\n", document.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_section;

    #[test]
    fn a_section_is_replaced_in_place_and_the_rest_is_kept() {
        let doc = "# B\n\n<!-- x:begin -->\nold\n<!-- x:end -->\n\n## Other\nkept\n";
        let updated = replace_section(doc, "x", "new\n");
        assert_eq!(updated, "# B\n\n<!-- x:begin -->\nnew\n<!-- x:end -->\n\n## Other\nkept\n");
        assert_eq!(replace_section("# B\n", "y", "body"), "# B\n\n<!-- y:begin -->\nbody\n<!-- y:end -->\n");
    }
}
