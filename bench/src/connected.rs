//! 50,000 connected users (`marquee-bench rush` over one gateway, `marquee-bench
//! replicas` over three): `seatMap` subscriptions held open over WebSocket while a
//! flash sale runs, each proved live before the sale and checked afterwards for every
//! change of its showtime; each gateway's memory is sampled throughout. The load
//! generator's ends of the connections are held by subscriber hosts
//! (`crate::subscribers`), as many as the descriptor limit makes it take.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_e2e::MeshSettings as Settings;
use marquee_proto::cinema::v1 as pb;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use serde_json::{Value, json};

use crate::catalog::seat_id;
use crate::cpu;
use crate::flash_sale::{self, Config, PROBE_SEAT};
use crate::lag;
use crate::mesh::Gateway;
use crate::report;
use crate::stats::round1;
use crate::subscribers;

/// Descriptors a process keeps free for everything but subscriptions: a gateway's
/// upstream channels, Redis pool and the sale's HTTP customers; a subscriber host's
/// runtime and pipes.
const FD_RESERVE: usize = 2_000;

/// The soft RLIMIT_NOFILE of this process (gateway and subscriber-host children
/// inherit it).
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many of `requested` subscriptions `gateways` gateway processes can hold: each
/// holds one socket per subscriber on it, under a descriptor limit only root can raise
/// (the load generator's ends are no bound: `per_host`). Says so on stderr when it is
/// fewer.
pub fn that_fit(requested: usize, gateways: usize) -> usize {
    let limit = open_files_limit();
    let fits = fitting(requested, gateways, limit);
    if fits < requested {
        eprintln!(
            "RLIMIT_NOFILE is {limit:?}: {gateways} gateway(s) of at most {} subscriptions each hold {fits}, not {requested} (raise the hard limit as root)",
            fits / gateways.max(1)
        );
    }
    fits
}

/// Subscriber i is on gateway i % gateways: the busiest holds ceil(n / gateways).
fn fitting(requested: usize, gateways: usize, limit: Option<usize>) -> usize {
    match limit {
        Some(limit) => requested.min(limit.saturating_sub(FD_RESERVE) * gateways),
        None => requested,
    }
}

/// Subscriptions per subscriber host: what its descriptor limit leaves room for, or
/// fewer when `asked`.
pub fn per_host(asked: Option<usize>) -> usize {
    hosting(asked, open_files_limit())
}

fn hosting(asked: Option<usize>, limit: Option<usize>) -> usize {
    let fits = limit.map_or(usize::MAX, |limit| limit.saturating_sub(FD_RESERVE)).max(1);
    asked.map_or(fits, |asked| asked.clamp(1, fits))
}

/// What the scenario holds open and where.
pub struct Scenario<'a> {
    /// The subscribers are spread evenly over these (subscriber i on `gateways[i % len]`),
    /// and so are the flash sale's customers.
    pub gateways: &'a [Gateway],
    /// A channel to a cinema service, for the probe seat changes.
    pub cinema: &'a tonic::transport::Channel,
    pub settings: &'a Settings,
    /// `focused` subscribers watch `watched[0]`, where the flash sale runs; the rest
    /// are spread over all of `watched`.
    pub watched: &'a [String],
    pub subscribers: usize,
    pub focused: usize,
    /// How many were asked for (more than `subscribers` when the descriptor limit cut it).
    pub requested: usize,
    /// At most this many per subscriber host (default: as many as its descriptor limit
    /// allows).
    pub per_host: Option<usize>,
    /// The sale's customers (one round is run, whatever `rounds` says).
    pub flash: &'a Config,
}

/// Opens the subscriptions, proves each is live with a probe seat change per showtime,
/// runs a single-round flash sale on `watched[0]` while they are held, then checks
/// that every subscriber got every change of its showtime.
pub async fn connected_users(s: Scenario<'_>) -> anyhow::Result<Value> {
    let gateways = s.gateways;
    let rss = || gateways.iter().map(Gateway::rss_mb).collect::<Vec<_>>();
    let rss_before = rss();
    let opening = Instant::now();
    let addrs: Vec<_> = gateways.iter().map(|g| g.addr).collect();
    let at_most = per_host(s.per_host);
    let subs = subscribers::open(&addrs, s.watched, s.subscribers, s.focused, at_most).await?;
    let open_seconds = opening.elapsed().as_secs_f64();
    let rss_open = rss();
    eprintln!(
        "{} subscriptions open in {open_seconds:.1} s ({} failed) from {} subscriber host(s); gateway RSS {rss_open:?} MiB",
        subs.open_now()?,
        subs.failed_to_open,
        subs.hosts()
    );

    // A probe change per showtime: every subscriber must hear it before the rush, so a
    // subscription that was not yet live cannot count as a missed change later.
    let mut cinema = CinemaServiceClient::new(s.cinema.clone());
    let probe = seat_id(PROBE_SEAT);
    let mut live = true;
    for (index, showtime) in s.watched.iter().enumerate() {
        let booking = uuid::Uuid::new_v4().to_string();
        cinema
            .lock_seats(pb::LockSeatsRequest {
                showtime_id: showtime.clone(),
                seat_ids: vec![probe.clone()],
                booking_id: booking.clone(),
                ttl_seconds: 300,
                ..Default::default()
            })
            .await
            .context("probe hold")?;
        live &= subs.wait_heard(index, Duration::from_secs(120)).await?;
        cinema
            .release_seats(pb::ReleaseSeatsRequest { showtime_id: showtime.clone(), booking_id: booking })
            .await
            .context("probe release")?;
    }
    eprintln!("probes heard by every subscriber: {live}");

    // RSS sampled through the rush: the peak is what a machine must provide.
    let peaks: Arc<Mutex<Vec<f64>>> =
        Arc::new(Mutex::new(rss_open.iter().map(|r| r.unwrap_or(0.0)).collect()));
    let sampler = {
        let (peaks, gateways) = (peaks.clone(), gateways.to_vec());
        tokio::spawn(async move {
            loop {
                if let Ok(mut peaks) = peaks.lock() {
                    for (peak, gateway) in peaks.iter_mut().zip(&gateways) {
                        *peak = peak.max(gateway.rss_mb().unwrap_or(0.0));
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let config = Config { rounds: 1, ..s.flash.clone() };
    // The CPU of the sale and of delivering its changes: the window ends once every
    // subscriber has been quiet for a while.
    let (cpu_before, sale_started) = (cpu::snapshot(), Instant::now());
    let urls: Vec<String> = gateways.iter().map(Gateway::graphql_url).collect();
    let mut outcome = flash_sale::run(&urls, &s.watched[0], &config).await?;
    eprintln!(
        "flash sale under subscriptions: {} confirmed, {:.1} bookings/s",
        outcome.confirmed.len(),
        outcome.bookings_per_s()
    );
    let verdict = flash_sale::verify(s.settings, &s.watched[0], &outcome, &config).await?;
    let quiet = subs.wait_quiet(Duration::from_secs(3), Duration::from_secs(300)).await;
    let cpu_sale = cpu::between(&cpu_before, &cpu::snapshot(), sale_started.elapsed().as_secs_f64());
    sampler.abort();
    let quiet = quiet?;
    let rss_peak = peaks.lock().map(|p| p.clone()).unwrap_or_default();
    let held = subs.open_now()?;
    let per_showtime = subs.per_showtime.clone();
    let booked: HashSet<String> = outcome.confirmed.values().cloned().collect();
    let stopped = subs.stop(&HashMap::from([(0, booked)])).await?;
    let deliveries = subscribers::judge(&stopped.tally);
    let clean = verdict.is_clean()
        && live
        && quiet
        && held == s.subscribers
        && deliveries["subscribers_missing_changes"] == 0
        && deliveries["subscribers_with_failures"] == 0;
    eprintln!("deliveries: {deliveries}");
    let per_message = cpu_per_message(&cpu_sale, &deliveries);
    let mut per_gateway = Vec::with_capacity(gateways.len());
    for (i, gateway) in gateways.iter().enumerate() {
        // A gateway that cannot be read now is reported as such; the run stands.
        let lag = lag::of_gateway(gateway.addr)
            .await
            .unwrap_or_else(|error| json!({ "error": format!("{error:#}") }));
        per_gateway.push(json!({
            "address": gateway.addr.to_string(),
            "subscribers": stopped.tally.subscribers_on(i),
            "rss_mb": {
                "before": rss_before[i].map(round1),
                "subscriptions_open": rss_open[i].map(round1),
                "peak": rss_peak.get(i).copied().map(round1),
            },
            "seat_change_lag": lag,
        }));
    }
    Ok(json!({
        "subscribers_requested": s.requested,
        "open_files_limit": open_files_limit(),
        "subscribers_held": held,
        "subscribers_per_host_at_most": at_most,
        "subscriber_hosts": stopped.hosts,
        "focused_on_rush_showtime": s.focused,
        "showtimes_watched": s.watched.len(),
        "subscribers_per_showtime": per_showtime,
        "failed_to_open": stopped.tally.failed_to_open,
        "open_seconds": round1(open_seconds),
        "probes_heard_by_all": live,
        "deliveries_settled": quiet,
        "gateways": per_gateway,
        "deliveries": deliveries,
        "cpu_during_sale_and_delivery": cpu_sale,
        "cpu_us_per_message": per_message,
        "flash_sale": flash_sale::outcome_json(&mut outcome, &config),
        "flash_sale_verification": verdict.to_json(),
        "clean": clean,
    }))
}

/// CPU microseconds per `next` message of the sale, of the gateways and of the load
/// generator's subscriber hosts (each holds one end of every message's socket). The
/// probes before the sale, one message per subscriber, are not in the window.
fn cpu_per_message(cpu: &Value, deliveries: &Value) -> Value {
    let all = deliveries["messages"].as_u64().unwrap_or(0);
    let messages = all.saturating_sub(deliveries["subscribers"].as_u64().unwrap_or(0));
    let per = |group: &str| {
        let seconds = cpu["groups"][group]["cpu_seconds"].as_f64()?;
        (messages > 0).then(|| round1(seconds * 1e6 / messages as f64))
    };
    json!({
        "messages": messages,
        "gateways": per(cpu::GATEWAY),
        "subscriber_hosts": per(cpu::SUBSCRIBER_HOSTS),
    })
}

/// One Markdown paragraph on the CPU of the sale under subscriptions and of its
/// delivery, for the summaries of `rush` and `replicas`.
pub fn cpu_paragraph(c: &Value) -> String {
    let cpu = &c["cpu_during_sale_and_delivery"];
    if cpu.is_null() {
        return String::new();
    }
    let seconds = |group: &str| cpu["groups"][group]["cpu_seconds"].as_f64().unwrap_or(0.0);
    let (gateways, hosts) = (seconds(cpu::GATEWAY), seconds(cpu::SUBSCRIBER_HOSTS));
    let total = cpu["total_cpu_seconds"].as_f64().unwrap_or(0.0);
    let per = &c["cpu_us_per_message"];
    format!(
        "CPU from the sale's start until every subscriber was quiet ({wall} s, machine {busy}%\n\
         busy): the gateways {gateways:.1} s ({g_per} us per `next` message of the sale, {messages}\n\
         messages), the subscriber hosts {hosts:.1} s ({h_per} us per message), everything else\n\
         (the sale's mesh, stores, load generator) {rest:.1} s.\n",
        wall = report::cell(&cpu["wall_seconds"]),
        busy = report::cell(&cpu["machine_busy_pct"]),
        g_per = report::cell(&per["gateways"]),
        h_per = report::cell(&per["subscriber_hosts"]),
        messages = per["messages"],
        rest = (total - gateways - hosts).max(0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_descriptor_limits_cut_the_subscribers_not_the_load_generators() {
        // 50,000 over three gateways is 16,667 on the busiest, under 20,000 - 2,000.
        assert_eq!(fitting(50_000, 3, Some(20_000)), 50_000);
        assert_eq!(fitting(60_000, 3, Some(20_000)), 54_000);
        // One gateway (the rush) holds what its own limit allows.
        assert_eq!(fitting(50_000, 1, Some(20_000)), 18_000);
        assert_eq!(fitting(50_000, 1, None), 50_000);
        // The load generator's ends: three hosts of at most 18,000 for 50,000.
        assert_eq!(hosting(None, Some(20_000)), 18_000);
        assert_eq!(hosting(Some(1_000), Some(20_000)), 1_000);
        assert_eq!(hosting(Some(30_000), Some(20_000)), 18_000);
        assert_eq!(hosting(Some(0), None), 1);
    }
}
