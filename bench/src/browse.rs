//! Browsing at a fixed arrival rate (an open model): requests are sent on a schedule,
//! never waiting for earlier answers, and each latency runs from the moment the request
//! was due, so a slow gateway cannot hide its queue by slowing the load down.
//! Catalog queries and seat-map queries alternate; a GraphQL `errors` answer is a failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::catalog::Rng;
use crate::gql::{Answer, Client};
use crate::stats::{Samples, round1, round2};

const CATALOG: &str = "{ showtimes { id startsAt movie { title runtimeMinutes } cinema { name city } } }";
const SEAT_MAP: &str = "query($id: ID!) { showtime(id: $id) { id seatMap { seats { id state category } } } }";

/// A request that would exceed this many in flight is not sent and counts as failed:
/// the client must not become the bottleneck or run out of sockets.
const MAX_IN_FLIGHT: usize = 2048;

pub struct Level {
    pub rate: f64,
    pub seconds: f64,
    pub sent: usize,
    pub ok: usize,
    /// Failures by label: GraphQL error codes, transport failures, `NOT_SENT`.
    pub failures: BTreeMap<String, usize>,
    pub latency: Samples,
}

impl Level {
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }

    pub fn failure_ratio(&self) -> f64 {
        self.failed() as f64 / (self.sent + self.failures.get("NOT_SENT").copied().unwrap_or(0)).max(1) as f64
    }

    /// Keeps up with the offered rate: at most 1% failures and a p99 under a second
    /// (beyond that the queue is growing, not being served).
    pub fn sustainable(&mut self) -> bool {
        self.failure_ratio() <= 0.01 && self.latency.percentile(0.99).is_some_and(|p99| p99 <= 1000.0)
    }

    pub fn to_json(&mut self) -> Value {
        json!({
            "rate_per_s": round1(self.rate),
            "seconds": round1(self.seconds),
            "sent": self.sent,
            "ok": self.ok,
            "failures": self.failures,
            "failure_ratio": round2(self.failure_ratio() * 100.0) / 100.0,
            "latency": self.latency.summary(),
        })
    }
}

/// Offers `rate` requests per second for `duration`; showtime ids are seat-map targets.
pub async fn at_rate(client: &Client, showtimes: &[String], rate: f64, duration: Duration) -> Level {
    let total = (rate * duration.as_secs_f64()).round() as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut rng = Rng::seeded();
    let mut level = Level {
        rate,
        seconds: duration.as_secs_f64(),
        sent: 0,
        ok: 0,
        failures: BTreeMap::new(),
        latency: Samples::default(),
    };
    let start = Instant::now();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due).await;
        // Reap finished requests as we go so memory stays flat at high rates.
        while let Some(done) = tasks.try_join_next() {
            level.record(done);
        }
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            *level.failures.entry("NOT_SENT".to_owned()).or_default() += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        level.sent += 1;
        let (client, in_flight) = (client.clone(), in_flight.clone());
        let target =
            (i % 2 == 1 && !showtimes.is_empty()).then(|| showtimes[rng.below(showtimes.len())].clone());
        tasks.spawn(async move {
            let answer = match target {
                Some(id) => client.send(None, SEAT_MAP, json!({ "id": id })).await,
                None => client.send(None, CATALOG, json!({})).await,
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            (answer, due.elapsed().as_secs_f64() * 1000.0)
        });
    }
    while let Some(done) = tasks.join_next().await {
        level.record(done);
    }
    level
}

impl Level {
    fn record(&mut self, done: Result<(Answer, f64), tokio::task::JoinError>) {
        match done {
            Ok((Answer::Data(_), ms)) => {
                self.ok += 1;
                self.latency.push(ms);
            }
            Ok((answer, ms)) => {
                // Failures count in the latency too: a fast error is not a fast answer,
                // but leaving them out would flatter the percentiles under overload.
                self.latency.push(ms);
                *self.failures.entry(answer.label()).or_default() += 1;
            }
            Err(_) => *self.failures.entry("PANIC".to_owned()).or_default() += 1,
        }
    }
}

/// Steps the rate up until it is no longer sustainable, then measures at half the
/// highest sustainable rate. Returns (steps, highest sustainable rate, the half-rate level).
pub async fn step_up(
    client: &Client,
    showtimes: &[String],
    rates: &[f64],
    step: Duration,
    measure: Duration,
) -> (Vec<Level>, Option<f64>, Option<Level>) {
    let mut steps = Vec::new();
    let mut max_sustainable = None;
    for &rate in rates {
        let mut level = at_rate(client, showtimes, rate, step).await;
        let ok = level.sustainable();
        eprintln!(
            "browse {rate}/s: {} ok, {} failed, p99 {:?} ms{}",
            level.ok,
            level.failed(),
            level.latency.percentile(0.99).map(round2),
            if ok { "" } else { " (not sustainable)" }
        );
        steps.push(level);
        if !ok {
            break;
        }
        max_sustainable = Some(rate);
        // Let the last step's stragglers and pooled connections settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let half = match max_sustainable {
        Some(max) => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Some(at_rate(client, showtimes, max / 2.0, measure).await)
        }
        None => None,
    };
    (steps, max_sustainable, half)
}
