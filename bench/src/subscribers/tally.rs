//! What the subscribers saw, in a form that travels and adds up: each host boils its
//! subscribers' logs down to a `Tally` (how many saw how many changes, per showtime and
//! gateway; their latencies in 1 ms buckets), the parent adds the hosts' together and
//! `judge`s the sum as if one process had held every subscriber.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::client::Log;
use crate::stats::Histogram;

/// Failure messages kept as examples, whatever the number of failures.
const FAILURE_EXAMPLES: usize = 5;

/// Subscribers alike in everything `judge` looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Cohort {
    showtime: usize,
    gateway: usize,
    changes: usize,
    /// Saw a resync, or was never told a seat that had to be booked was: it missed
    /// changes whatever the others of its showtime saw.
    short: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Members {
    subscribers: usize,
    messages: usize,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    #[serde(with = "pairs")]
    cohorts: BTreeMap<Cohort, Members>,
    /// Per gateway index.
    latency: BTreeMap<usize, Histogram>,
    /// Subscribers with a failure (protocol error, error message, closed early).
    failed: usize,
    /// Of those, the ones that never subscribed.
    pub failed_to_open: usize,
    failure_examples: Vec<String>,
}

impl Tally {
    /// `logs` tallied, each held to the seats `must_book` says its showtime sold.
    pub fn of(logs: &[Log], must_book: &HashMap<usize, HashSet<String>>) -> Self {
        let mut tally = Self::default();
        for log in logs {
            let sold = must_book.get(&log.showtime);
            let cohort = Cohort {
                showtime: log.showtime,
                gateway: log.gateway,
                changes: log.changes,
                short: log.resyncs > 0 || sold.is_some_and(|seats| !seats.is_subset(&log.booked)),
            };
            let members = tally.cohorts.entry(cohort).or_default();
            members.subscribers += 1;
            members.messages += log.messages;
            let latency = tally.latency.entry(log.gateway).or_default();
            for ms in log.latency_ms.values() {
                latency.push(*ms);
            }
            if let Some(first) = log.failures.first() {
                tally.failed += 1;
                tally.failed_to_open += usize::from(first.starts_with("open"));
                if tally.failure_examples.len() < FAILURE_EXAMPLES {
                    tally.failure_examples.push(first.clone());
                }
            }
        }
        tally
    }

    pub fn add(&mut self, other: &Tally) {
        for (cohort, members) in &other.cohorts {
            let into = self.cohorts.entry(*cohort).or_default();
            into.subscribers += members.subscribers;
            into.messages += members.messages;
        }
        for (gateway, latency) in &other.latency {
            self.latency.entry(*gateway).or_default().merge(latency);
        }
        self.failed += other.failed;
        self.failed_to_open += other.failed_to_open;
        let room = FAILURE_EXAMPLES.saturating_sub(self.failure_examples.len());
        self.failure_examples.extend(other.failure_examples.iter().take(room).cloned());
    }

    /// Subscribers with a failure.
    pub fn failed(&self) -> usize {
        self.failed
    }

    pub fn subscribers(&self) -> usize {
        self.cohorts.values().map(|m| m.subscribers).sum()
    }

    /// Subscribers on gateway `index`.
    pub fn subscribers_on(&self, index: usize) -> usize {
        self.cohorts.iter().filter(|(c, _)| c.gateway == index).map(|(_, m)| m.subscribers).sum()
    }
}

/// Per showtime: did every subscriber get every change? A subscriber missed changes
/// when it saw fewer than the most any subscriber of its showtime saw, saw a resync,
/// or was not told about a seat its host was told had to be booked.
pub fn judge(tally: &Tally) -> Value {
    let mut most: BTreeMap<usize, usize> = BTreeMap::new();
    for cohort in tally.cohorts.keys() {
        let entry = most.entry(cohort.showtime).or_default();
        *entry = (*entry).max(cohort.changes);
    }
    let (mut missed, mut delivered, mut messages) = (0, 0, 0);
    let mut per_gateway: BTreeMap<usize, Gateway> = BTreeMap::new();
    for (cohort, members) in &tally.cohorts {
        let complete = !cohort.short && cohort.changes == most[&cohort.showtime];
        let missing = if complete { 0 } else { members.subscribers };
        missed += missing;
        delivered += cohort.changes * members.subscribers;
        messages += members.messages;
        let gateway = per_gateway.entry(cohort.gateway).or_default();
        gateway.subscribers += members.subscribers;
        gateway.delivered += cohort.changes * members.subscribers;
        gateway.missed += missing;
    }
    let mut latency = Histogram::default();
    for (gateway, histogram) in &tally.latency {
        latency.merge(histogram);
        per_gateway.entry(*gateway).or_default().latency = histogram.clone();
    }
    json!({
        "subscribers": tally.subscribers(),
        "changes_per_showtime": most,
        "delivered": delivered,
        "messages": messages,
        "subscribers_missing_changes": missed,
        "subscribers_with_failures": tally.failed,
        "failure_examples": tally.failure_examples,
        "delivery_latency": latency.summary(),
        "per_gateway": per_gateway.into_values().map(|g| json!({
            "subscribers": g.subscribers,
            "delivered": g.delivered,
            "subscribers_missing_changes": g.missed,
            "delivery_latency": g.latency.summary(),
        })).collect::<Vec<_>>(),
    })
}

/// One gateway's share of the deliveries.
#[derive(Default)]
struct Gateway {
    subscribers: usize,
    delivered: usize,
    missed: usize,
    latency: Histogram,
}

/// A map with structured keys as a JSON list of `[key, value]` pairs (JSON object keys
/// are strings).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, K: Serialize, V: Serialize>(
        map: &BTreeMap<K, V>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(map.iter())
    }

    pub fn deserialize<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(deserializer)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Samples;

    fn log(gateway: usize, changes: usize, latency_ms: &[f64]) -> Log {
        let mut samples = Samples::default();
        for ms in latency_ms {
            samples.push(*ms);
        }
        Log { showtime: 0, gateway, changes, messages: changes, latency_ms: samples, ..Log::default() }
    }

    /// Through the wire and back, as a host sends it.
    fn sent(tally: Tally) -> Tally {
        serde_json::from_str(&serde_json::to_string(&tally).unwrap()).unwrap()
    }

    #[test]
    fn each_gateway_is_judged_on_its_own_subscribers() {
        // Gateway 1's second subscriber missed one of the showtime's three changes.
        let logs =
            vec![log(0, 3, &[10.0, 20.0, 30.0]), log(1, 3, &[40.0, 50.0, 60.0]), log(1, 2, &[70.0, 80.0])];
        let tally = sent(Tally::of(&logs, &HashMap::new()));
        let judged = judge(&tally);
        assert_eq!(judged["subscribers_missing_changes"], 1);
        assert_eq!(judged["delivered"], 8);
        let per_gateway = judged["per_gateway"].as_array().cloned().unwrap_or_default();
        assert_eq!(per_gateway.len(), 2);
        assert_eq!(per_gateway[0]["subscribers"], 1);
        assert_eq!(per_gateway[0]["subscribers_missing_changes"], 0);
        assert_eq!(per_gateway[0]["delivery_latency"]["max_ms"], 30.0);
        assert_eq!(per_gateway[1]["subscribers"], 2);
        assert_eq!(per_gateway[1]["delivered"], 5);
        assert_eq!(per_gateway[1]["subscribers_missing_changes"], 1);
        assert_eq!(per_gateway[1]["delivery_latency"]["max_ms"], 80.0);
        assert_eq!(judged["delivery_latency"]["count"], 8);
        assert_eq!(judged["delivery_latency"]["p50_ms"], 41.0);
        assert_eq!((tally.subscribers_on(0), tally.subscribers_on(1), tally.subscribers_on(2)), (1, 2, 0));
    }

    #[test]
    fn hosts_tallied_apart_are_judged_as_one_process_would_be() {
        let booked = |seats: &[&str]| seats.iter().map(|s| (*s).to_owned()).collect::<HashSet<_>>();
        let must_book = HashMap::from([(0, booked(&["A1", "A2"]))]);
        let sold = |mut log: Log| {
            log.booked = booked(&["A1", "A2"]);
            log
        };
        let resynced = Log { resyncs: 1, ..sold(log(2, 3, &[5.0])) };
        let failed = Log { failures: vec!["open: connect".to_owned()], ..Log::default() };
        let closed = Log { failures: vec!["closed by the gateway".to_owned()], ..sold(log(1, 3, &[])) };
        // Host 1 saw every change; host 2 has the showtime's most changes (4), so host
        // 1's subscribers missed one they could not know of. Host 2 also has one never
        // told A2 was booked, one that resynced, one that never opened, one closed early.
        let host_one = [sold(log(0, 3, &[1.0, 2.0, 3.0])), sold(log(1, 3, &[4.0, 5.0, 6.0]))];
        let host_two = [
            sold(log(2, 4, &[7.0, 8.0, 9.0, 10.0])),
            Log { booked: booked(&["A1"]), ..log(0, 4, &[]) },
            resynced,
            failed,
            closed,
        ];
        let mut all: Vec<Log> = Vec::new();
        let mut sum = Tally::default();
        for host in [Vec::from(host_one), Vec::from(host_two)] {
            sum.add(&sent(Tally::of(&host, &must_book)));
            all.extend(host);
        }
        let one = judge(&Tally::of(&all, &must_book));
        assert_eq!(judge(&sum), one);
        assert_eq!(one["subscribers"], 7);
        assert_eq!(one["changes_per_showtime"]["0"], 4);
        assert_eq!(one["subscribers_missing_changes"], 6);
        assert_eq!(one["subscribers_with_failures"], 2);
        assert_eq!(sum.failed_to_open, 1);
        assert_eq!(one["delivery_latency"]["count"], 11);
        assert_eq!(one["delivery_latency"]["max_ms"], 10.0);
    }
}
