//! `marquee-checkin`: the offline door scanner (`marquee_ticket::offline`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_ticket::offline::{Gateway, ScannerState};

const USAGE: &str =
    "usage: marquee-checkin [--state FILE] sync --showtime ID   keys and revocations for a showtime
       marquee-checkin [--state FILE] scan CODE [--at TIME]   decide one scan offline (TIME: RFC 3339)
       marquee-checkin [--state FILE] upload                  send queued scans; report double admissions
       marquee-checkin bench [N]                              verify N codes on one core, codes/s
The state file defaults to ./marquee-checkin.json. sync and upload talk to the gateway at
MARQUEE_CHECKIN_GATEWAY (default http://127.0.0.1:8080/graphql) with the STAFF access token in
MARQUEE_CHECKIN_TOKEN.";

fn gateway() -> anyhow::Result<Gateway> {
    let url = std::env::var("MARQUEE_CHECKIN_GATEWAY")
        .unwrap_or_else(|_| "http://127.0.0.1:8080/graphql".to_owned());
    let token = std::env::var("MARQUEE_CHECKIN_TOKEN")
        .context("set MARQUEE_CHECKIN_TOKEN to a STAFF access token")?;
    Gateway::new(&url, &token)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut path = PathBuf::from("marquee-checkin.json");
    if args.first().map(String::as_str) == Some("--state") {
        anyhow::ensure!(args.len() >= 2, "{USAGE}");
        path = PathBuf::from(args.remove(1));
        args.remove(0);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["sync", "--showtime", showtime] => {
            let showtime = marquee_ticket::domain::parse_uuid(showtime, "showtime id")?;
            let mut state = ScannerState::load(&path)?;
            let fresh = gateway()?.sync(&mut state, showtime).await?;
            state.save(&path)?;
            println!(
                "synced showtime {showtime}: {} key(s), {} revoked ticket(s) ({fresh} new)",
                state.keys.len(),
                state.revoked.len()
            );
        }
        ["scan", code, rest @ ..] => {
            let at = match rest {
                [] => Utc::now(),
                ["--at", time] => time.parse::<DateTime<Utc>>().context("--at wants an RFC 3339 time")?,
                _ => anyhow::bail!("{USAGE}"),
            };
            let mut state = ScannerState::load(&path)?;
            let keys = state.verifier()?;
            let scan = state.scan(&keys, code, at)?.clone();
            state.save(&path)?;
            println!("{} {}", scan.outcome.as_str(), scan.seat_id.unwrap_or_default());
        }
        ["upload"] => {
            let mut state = ScannerState::load(&path)?;
            let result = gateway()?.upload(&mut state).await;
            // Whatever was uploaded before a failure is recorded, so a rerun resumes.
            state.save(&path)?;
            let report = result?;
            println!("uploaded {} scan(s)", report.uploaded);
            for double in &report.double_admissions {
                let first = double.first_admitted_at.map(|t| t.to_rfc3339()).unwrap_or_default();
                println!(
                    "DOUBLE ADMISSION ticket {} seat {}: admitted here at {}, first admitted at {first}",
                    double.ticket_id,
                    double.seat_id,
                    double.admitted_here_at.to_rfc3339()
                );
            }
            for ticket in &report.admitted_but_revoked {
                println!("ADMITTED BUT REVOKED ticket {ticket}");
            }
        }
        ["bench", rest @ ..] => {
            let count = match rest {
                [] => 200_000,
                [n] => n.parse().context("bench wants a number of codes")?,
                _ => anyhow::bail!("{USAGE}"),
            };
            bench(count)?;
        }
        _ => anyhow::bail!("{USAGE}"),
    }
    Ok(())
}

/// Codes per batch verification in `bench` (1,000 is a multiple).
const BATCH: usize = 100;

/// Verifies `count` codes (1,000 distinct ones, round robin) on this thread, one at a
/// time and then in batches.
fn bench(count: usize) -> anyhow::Result<()> {
    use base64::Engine as _;
    use ed25519_dalek::SigningKey;
    use marquee_ticket::codec::{self, TicketClaims};
    use marquee_ticket::keys::{ALGORITHM, PublicKey, PublicKeys};

    let key = SigningKey::from_bytes(&[7; 32]);
    let now = Utc::now();
    let published = PublicKey {
        id: "bench".to_owned(),
        algorithm: ALGORITHM.to_owned(),
        public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
        valid_from: now,
        valid_until: now + chrono::Duration::days(1),
    };
    let keys = PublicKeys::from_published(vec![published])?;
    let showtime = uuid::Uuid::new_v4();
    let codes = (0..1000)
        .map(|i| {
            let claims = TicketClaims {
                ticket_id: uuid::Uuid::new_v4(),
                booking_id: uuid::Uuid::new_v4(),
                showtime_id: showtime,
                seat_id: format!("R{}", i % 500),
                valid_from: now,
                valid_until: now + chrono::Duration::hours(3),
                key_id: "bench".to_owned(),
            };
            codec::encode(&claims, &key)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let mut valid = 0usize;
    for code in codes.iter().cycle().take(count) {
        if keys.verify(code).is_ok() {
            valid += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(valid == count, "only {valid} of {count} codes verified");
    println!(
        "one at a time: {count} codes in {elapsed:.3} s on one thread: {:.0} codes/s",
        count as f64 / elapsed
    );

    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut valid = 0usize;
    for batch in refs.chunks(BATCH).cycle().take(count.div_ceil(BATCH)) {
        valid += keys.verify_many(batch).iter().filter(|r| r.is_ok()).count();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let verified = count.div_ceil(BATCH) * BATCH;
    anyhow::ensure!(valid == verified, "only {valid} of {verified} codes verified");
    println!(
        "in batches of {BATCH}: {verified} codes in {elapsed:.3} s on one thread: {:.0} codes/s",
        verified as f64 / elapsed
    );
    Ok(())
}
