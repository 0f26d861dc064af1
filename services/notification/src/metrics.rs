//! The worker's Prometheus metrics, kept on a recorder of its own rather than the
//! process-global one (several services share a process in tests and the dev
//! launcher), and served at `GET /metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use marquee_kit::shutdown::Shutdown;
use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

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
    handle: PrometheusHandle,
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let meta = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
        let counter = |name: &'static str, help: &'static str| {
            recorder.describe_counter(name.into(), None, help.into());
            recorder.register_counter(&Key::from_static_name(name), &meta)
        };
        let gauge = |name: &'static str, help: &'static str| {
            recorder.describe_gauge(name.into(), None, help.into());
            recorder.register_gauge(&Key::from_static_name(name), &meta)
        };
        let dead_lettered = |reason: &'static str| {
            let key = Key::from_parts(DEAD_LETTERED, vec![Label::from_static_parts("reason", reason)]);
            recorder.register_counter(&key, &meta)
        };
        recorder.describe_counter(
            DEAD_LETTERED.into(),
            None,
            "Messages sent to the dead-letter queue".into(),
        );
        recorder.describe_histogram(
            LATENCY.into(),
            Some(metrics::Unit::Seconds),
            "Time from receiving a delivery to settling it".into(),
        );
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
            latency: recorder.register_histogram(&Key::from_static_name(LATENCY), &meta),
            handle: recorder.handle(),
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

/// The bound `/metrics` listener.
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
    handle: PrometheusHandle,
}

impl MetricsServer {
    pub async fn bind(host: &str, port: u16, metrics: &Metrics) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((host, port))
            .await
            .with_context(|| format!("cannot bind the metrics port {host}:{port}"))?;
        let addr = listener.local_addr().context("the metrics listener has no address")?;
        Ok(Self { listener, addr, handle: metrics.handle.clone() })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn serve(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let handle = self.handle;
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move {
                    // Keeps summaries bounded even when scrapes are rare.
                    handle.run_upkeep();
                    handle.render()
                }
            }),
        );
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("the metrics server failed")
    }
}
