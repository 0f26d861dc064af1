//! The worker's Prometheus metrics, on the service's own registry (served at
//! `GET /metrics` by `marquee_kit::metrics::MetricsServer`, beside the gRPC metrics).

use std::time::Duration;

use marquee_kit::metrics::{Counter, Gauge, Histogram, Registry, Unit};

const CONSUMED: &str = "notification_events_consumed_total";
const SENT: &str = "notification_messages_sent_total";
const DUPLICATES: &str = "notification_duplicates_skipped_total";
const DEAD_LETTERED: &str = "notification_dead_lettered_total";
const LATENCY: &str = "notification_processing_seconds";
const RETRIES: &str = "notification_retries_scheduled_total";
const WITHOUT_SHOWTIME: &str = "notification_sent_without_showtime_total";
const WITHOUT_TICKETS: &str = "notification_sent_without_tickets_total";
const DEAD_LETTER_DEPTH: &str = "notification_dead_letter_queue_depth";
const RETRY_DEPTH: &str = "notification_retry_queue_depth";
const RECONCILED: &str = "notification_reconciled_total";
const RECONCILE_FAILURES: &str = "notification_reconcile_failures_total";

use crate::consumer::DeadLetterReason;

#[derive(Clone)]
pub struct Metrics {
    /// Deliveries received, redeliveries included.
    pub consumed: Counter,
    /// Messages delivered through a channel (one event may send an email and an SMS).
    pub sent: Counter,
    pub duplicates: Counter,
    /// Dead-lettered at once because the message cannot be parsed.
    unparseable: Counter,
    /// Dead-lettered at once because it can never be handled (e.g. an unknown user).
    permanent: Counter,
    /// Dead-lettered because a dependency stayed down for the whole retry budget.
    retries_exhausted: Counter,
    /// Requeued on the last delivery the queue allows: the broker dead-letters it.
    pub over_delivery_limit: Counter,
    /// Events put in a delay queue because a dependency was down.
    pub retries: Counter,
    /// Confirmations sent without the showtime's details (cinema down too long).
    pub without_showtime: Counter,
    /// Confirmations sent without their ticket codes (tickets not issued, or the
    /// ticket service down, for the whole retry budget).
    pub without_tickets: Counter,
    /// Messages waiting in the dead-letter queue for an operator.
    pub dead_letter_depth: Gauge,
    /// Events waiting in the delay queues for their next attempt.
    pub retry_depth: Gauge,
    /// Events found in a publisher's log and handled by the reconciler because no
    /// delivery had handled them (lost by the broker, or still waiting to be retried).
    pub reconciled: Counter,
    /// Reconciliation rounds that stopped early (a publisher, dependency or store down).
    pub reconcile_failures: Counter,
    /// From receiving a delivery to settling it.
    pub latency: Histogram,
}

impl Metrics {
    pub fn new(registry: &Registry) -> Self {
        let counter = |name: &'static str, help: &'static str| registry.counter(name, help, &[]);
        let gauge = |name: &'static str, help: &'static str| registry.gauge(name, help, &[]);
        let dead_lettered = |reason: &'static str| {
            registry.counter(DEAD_LETTERED, "Messages sent to the dead-letter queue", &[("reason", reason)])
        };
        Self {
            consumed: counter(CONSUMED, "Deliveries received from the queue"),
            sent: counter(SENT, "Messages delivered through a channel"),
            duplicates: counter(DUPLICATES, "Deliveries of already notified events, skipped"),
            unparseable: dead_lettered(DeadLetterReason::Unparseable.as_str()),
            permanent: dead_lettered(DeadLetterReason::Permanent.as_str()),
            retries_exhausted: dead_lettered(DeadLetterReason::RetriesExhausted.as_str()),
            over_delivery_limit: dead_lettered("delivery_limit"),
            retries: counter(RETRIES, "Events delayed for another attempt because a dependency was down"),
            without_showtime: counter(
                WITHOUT_SHOWTIME,
                "Notifications sent without the showtime's details after the retry budget",
            ),
            without_tickets: counter(
                WITHOUT_TICKETS,
                "Confirmations sent without their ticket codes after the retry budget",
            ),
            dead_letter_depth: gauge(DEAD_LETTER_DEPTH, "Messages waiting in the dead-letter queue"),
            retry_depth: gauge(RETRY_DEPTH, "Events waiting in the delay queues"),
            reconciled: counter(
                RECONCILED,
                "Published events no delivery had handled, handled by the reconciler",
            ),
            reconcile_failures: counter(RECONCILE_FAILURES, "Reconciliation rounds that stopped early"),
            latency: registry.histogram(
                LATENCY,
                Some(Unit::Seconds),
                "Time from receiving a delivery to settling it",
            ),
        }
    }

    pub fn dead_lettered(&self, reason: DeadLetterReason) -> &Counter {
        match reason {
            DeadLetterReason::Unparseable => &self.unparseable,
            DeadLetterReason::Permanent => &self.permanent,
            DeadLetterReason::RetriesExhausted => &self.retries_exhausted,
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        self.latency.record(elapsed.as_secs_f64());
    }
}
