//! 50,000 connected users: `seatMap` subscriptions held open over WebSocket while a
//! second flash sale runs, each proved live before the sale and checked afterwards for
//! every change of its showtime; the gateway's memory is sampled throughout.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_e2e::MeshSettings as Settings;
use marquee_proto::cinema::v1 as pb;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use serde_json::{Value, json};

use super::Options;
use crate::catalog::seat_id;
use crate::flash_sale::{self, Config, PROBE_SEAT};
use crate::mesh::GatewayProcess;
use crate::stats::round1;
use crate::subscribers;

/// Descriptors kept free for everything but subscriptions (pools, the mesh's own
/// connections, the browse client).
pub(super) const FD_RESERVE: usize = 2_000;

/// The soft RLIMIT_NOFILE of this process (the gateway child inherits it).
pub(super) fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// 50,000 connected users: opens the subscriptions (`focused` of them on `watched[0]`,
/// the rest spread over all of `watched`), proves each is live with a probe seat change
/// per showtime, runs a single-round flash sale on `watched[0]` while they are held,
/// then checks that every subscriber got every change of its showtime.
pub(super) async fn connected_users(
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
