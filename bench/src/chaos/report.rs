//! The chaos run's report: a JSON document (what the load held, what the mesh survived,
//! what it recovered, every check with its counts and ids) and a readable summary, with
//! log lines as evidence for each failed check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use marquee_e2e::MeshSettings as Settings;
use serde_json::{Value, json};

use super::checks::{Blame, Check};
use super::customer::Log;
use super::verify::Settled;
use super::{Options, Ports, killer};
use crate::report::counts;
use crate::stats::{Samples, round1};
use crate::stores::TERMINAL;

/// The notification worker's log message for an event it reconciled
/// (`services/notification/src/consumer/reconcile.rs`).
const RECONCILED_LINE: &str = "handled a published event no delivery had handled";

/// Ids of a failed check whose log lines are quoted, and lines quoted per id.
const EVIDENCE_IDS: usize = 3;
const LINES_PER_ID: usize = 5;
const LINE_CHARS: usize = 400;

/// What was still under way when the last customer was done.
#[derive(Debug, Clone, Copy)]
pub struct AtLoadEnd {
    pub unsent_events: u64,
    pub notifications: usize,
}

pub struct Run<'a> {
    pub tag: &'a str,
    pub options: &'a Options,
    pub ports: Ports,
    pub settings: &'a Settings,
    pub env: &'a [(String, String)],
    pub logs: &'a Path,
    pub bin_dir: &'a Path,
    pub showtime: &'a str,
    pub load_seconds: f64,
    /// From the end of the load until the last customer finished its purchase.
    pub finishing_seconds: f64,
    pub customers: &'a [Log],
    pub killer: &'a killer::Outcome,
    pub at_load_end: AtLoadEnd,
    pub settled: &'a Settled,
    pub checks: &'a [Check],
}

fn add<K: Ord + Clone>(into: &mut BTreeMap<K, usize>, from: &BTreeMap<K, usize>) {
    for (key, n) in from {
        *into.entry(key.clone()).or_default() += n;
    }
}

fn median_and_max(values: &[u64]) -> Value {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    json!({ "median": sorted.get(sorted.len() / 2), "max": sorted.last() })
}

impl Run<'_> {
    fn load(&self) -> Value {
        let (mut sends, mut retries, mut answers) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut latency: BTreeMap<&str, Samples> = BTreeMap::new();
        let mut last_told: BTreeMap<&str, &str> = BTreeMap::new();
        for log in self.customers {
            add(&mut sends, &log.sends);
            add(&mut retries, &log.retries);
            add(&mut answers, &log.answers);
            for (op, samples) in &log.latency {
                latency.entry(op).or_default().extend(samples.clone());
            }
            for told in log.told.iter().filter(|t| TERMINAL.contains(&t.status.as_str())) {
                last_told.insert(&told.booking, &told.status);
            }
        }
        let mut told: BTreeMap<&str, usize> = BTreeMap::new();
        for status in last_told.values() {
            *told.entry(status).or_default() += 1;
        }
        let latency: BTreeMap<&str, Value> =
            latency.into_iter().map(|(op, mut samples)| (op, samples.summary())).collect();
        json!({
            "seconds": round1(self.load_seconds),
            "customers_finishing_seconds": round1(self.finishing_seconds),
            "customers": self.customers.len(),
            "registered": self.customers.iter().filter(|l| l.registered).count(),
            "requests": sends.values().sum::<usize>(),
            "retries": retries.values().sum::<usize>(),
            "requests_by_operation": sends,
            "retries_by_operation": retries,
            "final_answers": answers,
            "until_final_answer_by_operation": latency,
            "bookings_by_last_status_told": told,
            "bookings_never_settled_for_their_customer":
                self.customers.iter().map(|l| l.unsettled.len()).sum::<usize>(),
        })
    }

    fn chaos(&self) -> Value {
        let processes: BTreeMap<&str, Value> = self
            .killer
            .supervisor
            .counts()
            .into_iter()
            .map(|(name, c)| {
                (
                    name,
                    json!({
                        "kills_survived": c.kill_to_ready_ms.len(),
                        "kills": c.kills,
                        "starts": c.starts,
                        "failed_starts": c.failed_starts,
                        "unexpected_exits": c.unexpected_exits,
                        "kill_to_ready_ms": median_and_max(&c.kill_to_ready_ms),
                        "final_exit": c.final_exit,
                    }),
                )
            })
            .collect();
        json!({
            "actions_planned": self.killer.planned,
            "kills": self.killer.count("kill"),
            "rabbitmq_restarts": self.killer.count("restart rabbitmq"),
            "redis_restarts": self.killer.count("restart redis"),
            "processes": processes,
            "actions": self.killer.to_json(),
            "timeline": self.killer.supervisor.incidents_json(),
        })
    }

    fn recovery(&self) -> Value {
        let snapshot = &self.settled.snapshot;
        json!({
            "settle_seconds": self.settled.seconds,
            "settled_quiet": self.settled.quiet,
            "at_settle_end": self.settled.last.to_json(),
            "outbox_events_unsent_when_customers_done": self.at_load_end.unsent_events,
            "notifications_recorded_after_customers_done":
                snapshot.notifications.len().saturating_sub(self.at_load_end.notifications),
            "sagas_resumed_by_recovery": snapshot.bookings.iter().filter(|b| b.was_recovered()).count(),
            "events_reconciled": self.events_reconciled(),
            "bookings": snapshot.bookings.len(),
            "payments": snapshot.payments.len(),
            "notifications": snapshot.notifications.len(),
        })
    }

    /// Events the notification worker found in a publisher's log with no delivery
    /// having handled them (the broker lost them, or their retry was still waiting):
    /// its log line per event, counted over every life of the process.
    fn events_reconciled(&self) -> usize {
        let log = std::fs::read_to_string(self.logs.join("notification.log")).unwrap_or_default();
        log.lines().filter(|line| line.contains(RECONCILED_LINE)).count()
    }

    pub fn to_json(&self) -> Value {
        let failed: Vec<&str> = self.checks.iter().filter(|c| !c.pass).map(|c| c.name).collect();
        let s = self.settings;
        json!({
            "verdict": if failed.is_empty() { "pass" } else { "fail" },
            "failed_checks": failed,
            "load": self.load(),
            "chaos": self.chaos(),
            "recovery": self.recovery(),
            "checks": self.checks.iter().map(Check::to_json).collect::<Vec<_>>(),
            "setup": {
                "mode": if self.options.short { "short" } else { "full" },
                "run": self.tag,
                "customers": self.options.customers,
                "load_seconds_planned": self.options.seconds,
                "kills_planned": self.options.kills,
                "broker_restarts": self.options.brokers,
                "outage": self.options.outage,
                "outage_seconds": self.options.outage.as_ref().map(|_| self.options.outage_seconds),
                "replicas": self.options.replicas,
                "seat_pool": self.options.seat_pool,
                "registrations_at_once": self.options.registrations_at_once,
                "showtime": self.showtime,
                "ports": {
                    "user": self.ports.user, "cinema": self.ports.cinema, "booking": self.ports.booking,
                    "payment": self.ports.payment, "notification": self.ports.notification,
                    "gateway": self.ports.gateway, "metrics": self.ports.metrics,
                },
                "stores": {
                    "postgres_database": s.postgres.url.expose().rsplit('/').next(),
                    "mongo_database_prefix": s.mongo.database_prefix,
                    "redis_key_prefix": s.redis.key_prefix,
                    "rabbitmq_exchange": s.rabbitmq.exchange,
                    "notification_queue": s.rabbitmq.notification_queue,
                },
                "environment": self.env.iter()
                    .filter(|(k, _)| !k.ends_with("_URL") && !k.contains("PORT"))
                    .map(|(k, v)| (k.clone(), Value::from(v.clone())))
                    .collect::<serde_json::Map<_, _>>(),
                "binaries": self.bin_dir.display().to_string(),
                "logs": self.logs.display().to_string(),
                "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
                "measured_at": chrono::Utc::now().to_rfc3339(),
            },
        })
    }

    pub fn summary(&self, out: &Path) -> String {
        let load = self.load();
        let chaos = self.chaos();
        let recovery = self.recovery();
        let mut text = format!(
            "marquee-bench chaos ({mode}, run {tag}): {customers} customers ({registered} registered), \
             {secs} s of load\n\
             load held: {requests} requests, {retries} retries; last status told per booking: {told}; \
             customers finished {finishing} s after the load\n",
            mode = if self.options.short { "short" } else { "full" },
            tag = self.tag,
            customers = load["customers"],
            registered = load["registered"],
            secs = load["seconds"],
            requests = load["requests"],
            retries = load["retries"],
            told = counts(&load["bookings_by_last_status_told"]),
            finishing = load["customers_finishing_seconds"],
        );
        let mut survived = Vec::new();
        if let Some(processes) = chaos["processes"].as_object() {
            for (name, p) in processes {
                survived.push(format!(
                    "{name} {} (ready again in <= {} ms)",
                    p["kills_survived"], p["kill_to_ready_ms"]["max"]
                ));
            }
        }
        text.push_str(&format!("kills survived: {}\n", survived.join(", ")));
        for done in self.killer.done.iter().filter(|d| !d.action.starts_with("kill")) {
            let outcome = done.error.as_deref().map_or("ok".to_owned(), |e| format!("FAILED: {e}"));
            text.push_str(&format!(
                "{} at +{} s: back after {} ms, {outcome}\n",
                done.action, done.at_s, done.took_ms
            ));
        }
        text.push_str(&format!(
            "recovered: settled in {} s (quiet: {}); {} outbox events unsent when the customers were \
             done, {} notifications recorded after that, {} sagas resumed by recovery, {} events sent \
             by reconciliation\nchecks:\n",
            recovery["settle_seconds"],
            recovery["settled_quiet"],
            recovery["outbox_events_unsent_when_customers_done"],
            recovery["notifications_recorded_after_customers_done"],
            recovery["sagas_resumed_by_recovery"],
            recovery["events_reconciled"],
        ));
        for check in self.checks {
            let verdict = if check.pass { "PASS" } else { "FAIL" };
            let blame = if check.blame == Blame::Mesh { "mesh" } else { "harness" };
            text.push_str(&format!(
                "  {verdict} {} [{blame}] {}: {}\n",
                check.name, check.count, check.detail
            ));
            for id in check.ids.iter().take(8) {
                text.push_str(&format!("       - {id}\n"));
            }
            for line in &check.evidence {
                text.push_str(&format!("       > {line}\n"));
            }
        }
        let failed: Vec<&Check> = self.checks.iter().filter(|c| !c.pass).collect();
        let verdict = if failed.is_empty() {
            "PASS".to_owned()
        } else {
            let mesh = failed.iter().filter(|c| c.blame == Blame::Mesh).count();
            format!(
                "FAIL: {} checks failed ({mesh} the mesh's, {} the harness's)",
                failed.len(),
                failed.len() - mesh
            )
        };
        text.push_str(&format!(
            "verdict: {verdict}\nreport: {}; logs: {}\n",
            out.display(),
            self.logs.display()
        ));
        text
    }
}

/// The first UUID in `text`, if any.
fn first_uuid(text: &str) -> Option<&str> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .find(|word| word.len() == 36 && uuid::Uuid::parse_str(word).is_ok())
}

/// What to look for in the logs when a check has no ids to go by.
fn keywords(check: &str) -> &'static [&'static str] {
    match check {
        "dead_letter_queue_empty" => &["delivery limit reached", "dead-lettering"],
        "notification_queue_drained" => &["notification failed", "notification consumer interrupted"],
        // Registrations that never got an answer: the gateway's side, and the user
        // service's own count of accounts made.
        "every_customer_registered" => &["Timeout expired", "user registered"],
        _ => &[],
    }
}

/// Quotes, for each failed check, the log lines (errors first, then warnings) that
/// mention its first few ids.
pub fn attach_evidence(checks: &mut [Check], logs: &[(&'static str, PathBuf)]) {
    let files: Vec<(&str, String)> =
        logs.iter().filter_map(|(name, path)| Some((*name, std::fs::read_to_string(path).ok()?))).collect();
    let find = |needle: &str| -> Vec<String> {
        let mut hits: Vec<(u8, String)> = Vec::new();
        for (process, text) in &files {
            for line in text.lines().filter(|l| l.contains(needle)) {
                let rank = if line.contains("\"ERROR\"") {
                    0
                } else if line.contains("\"WARN\"") {
                    1
                } else {
                    2
                };
                let line: String = line.chars().take(LINE_CHARS).collect();
                hits.push((rank, format!("{process}: {line}")));
            }
        }
        // Errors, then warnings, then the rest, each in log order.
        hits.sort_by_key(|(rank, _)| *rank);
        hits.into_iter().take(LINES_PER_ID).map(|(_, line)| line).collect()
    };
    for check in checks.iter_mut().filter(|c| !c.pass) {
        let mut needles: Vec<String> = Vec::new();
        for id in check.ids.iter().filter_map(|id| first_uuid(id)) {
            if needles.len() < EVIDENCE_IDS && !needles.iter().any(|n| n == id) {
                needles.push(id.to_owned());
            }
        }
        needles.extend(keywords(check.name).iter().map(|k| (*k).to_owned()));
        for needle in needles {
            check.evidence.extend(find(&needle));
        }
    }
}
