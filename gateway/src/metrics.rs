//! The gateway's Prometheus metrics, on a recorder of its own rather than the
//! process-global one (several gateways share a process in tests), rendered at
//! `GET /metrics`.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

const REQUESTS: &str = "gateway_http_requests_total";
const LATENCY: &str = "gateway_http_request_duration_seconds";
const ERRORS: &str = "gateway_graphql_errors_total";
const RATE_LIMITED: &str = "gateway_rate_limited_total";
const SUBSCRIPTIONS: &str = "gateway_subscriptions_active";
const SHARED_SUBSCRIPTIONS: &str = "gateway_shared_subscriptions_active";
const SEAT_STREAMS: &str = "gateway_seat_streams_active";
const SEAT_STREAMS_OPENED: &str = "gateway_seat_streams_opened_total";
const DENYLIST_LOOKUPS: &str = "gateway_denylist_lookups_total";
const SEAT_CHANGE_LAG: &str = "gateway_seat_change_lag_seconds";

/// Seconds; from a cached catalog read to a payment that waits on the processor.
const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Seconds; a live seat map should be well under a second behind, a rush shows by how much not.
const LAG_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Cheap to clone; every clone feeds the same registry.
#[derive(Clone)]
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    /// GraphQL subscriptions currently delivering (WebSocket operations).
    pub subscriptions: Gauge,
    /// Subscription executions shared by their subscribers (`crate::fanout` groups).
    pub shared_subscriptions: Gauge,
    /// Upstream `WatchSeats` streams currently open (one per watched showtime).
    pub seat_streams: Gauge,
    /// Upstream `WatchSeats` streams opened since start, reconnects included.
    pub seat_streams_opened: Counter,
    pub rate_limited: Counter,
    pub denylist: DenylistLookups,
    pub seat_change_lag: SeatChangeLag,
}

/// `gateway_seat_change_lag_seconds{stage}`: how long after cinema committed a seat
/// change (its `changedAt`) the gateway got to it, per change. Compared with what a
/// client measures, it says whether a late seat map was late before the gateway, in
/// the gateway, or after it (sockets, the client's own CPU).
#[derive(Clone)]
pub struct SeatChangeLag {
    /// The change arrived on the upstream `WatchSeats` stream: cinema's side.
    pub received: Histogram,
    /// A shared subscription built the update carrying it (`crate::fanout`, once per
    /// group, after any pacing wait); what is left is writing it to each subscriber.
    pub built: Histogram,
}

/// `gateway_denylist_lookups_total{result}`: how each token check was answered.
#[derive(Clone)]
pub struct DenylistLookups {
    /// Without a Redis call of its own: from this gateway's cache, or by sharing the
    /// call already in flight for the same token.
    pub hit: Counter,
    /// By a Redis call it made.
    pub miss: Counter,
    /// Not at all: Redis did not answer (timeout, connection error), the request was
    /// refused SERVICE_BUSY.
    pub error: Counter,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(LATENCY.to_owned()), LATENCY_BUCKETS)?
            .set_buckets_for_metric(Matcher::Full(SEAT_CHANGE_LAG.to_owned()), LAG_BUCKETS)?
            .build_recorder();
        recorder.describe_counter(REQUESTS.into(), None, "HTTP requests by route and status".into());
        recorder.describe_histogram(
            LATENCY.into(),
            Some(Unit::Seconds),
            "Time to answer an HTTP request, by route".into(),
        );
        recorder.describe_counter(ERRORS.into(), None, "GraphQL errors sent, by extensions.code".into());
        recorder.describe_counter(RATE_LIMITED.into(), None, "Requests refused as RATE_LIMITED".into());
        recorder.describe_gauge(SUBSCRIPTIONS.into(), None, "Active GraphQL subscriptions".into());
        recorder.describe_gauge(
            SHARED_SUBSCRIPTIONS.into(),
            None,
            "Subscription executions shared by every subscriber of the same request".into(),
        );
        recorder.describe_gauge(SEAT_STREAMS.into(), None, "Open upstream WatchSeats streams".into());
        recorder.describe_counter(
            SEAT_STREAMS_OPENED.into(),
            None,
            "Upstream WatchSeats streams opened, reconnects included".into(),
        );
        recorder.describe_counter(
            DENYLIST_LOOKUPS.into(),
            None,
            "Access-token denylist checks by result: hit (no Redis call of its own), miss (a Redis call), \
             error (Redis did not answer)"
                .into(),
        );
        recorder.describe_histogram(
            SEAT_CHANGE_LAG.into(),
            Some(Unit::Seconds),
            "Time from a seat change's commit in cinema to the gateway, by stage: received (upstream stream), \
             built (the shared update carrying it)"
                .into(),
        );
        let name = Key::from_static_name;
        let lag = |stage: &'static str| {
            let key = Key::from_parts(SEAT_CHANGE_LAG, vec![Label::from_static_parts("stage", stage)]);
            recorder.register_histogram(&key, &META)
        };
        let seat_change_lag = SeatChangeLag { received: lag("received"), built: lag("built") };
        let lookups = |result: &'static str| {
            let key = Key::from_parts(DENYLIST_LOOKUPS, vec![Label::from_static_parts("result", result)]);
            recorder.register_counter(&key, &META)
        };
        let denylist =
            DenylistLookups { hit: lookups("hit"), miss: lookups("miss"), error: lookups("error") };
        Ok(Self {
            subscriptions: recorder.register_gauge(&name(SUBSCRIPTIONS), &META),
            shared_subscriptions: recorder.register_gauge(&name(SHARED_SUBSCRIPTIONS), &META),
            seat_streams: recorder.register_gauge(&name(SEAT_STREAMS), &META),
            seat_streams_opened: recorder.register_counter(&name(SEAT_STREAMS_OPENED), &META),
            rate_limited: recorder.register_counter(&name(RATE_LIMITED), &META),
            denylist,
            seat_change_lag,
            handle: recorder.handle(),
            recorder: Arc::new(recorder),
        })
    }

    /// `route` is one of the gateway's own paths (or "other"), never the raw path:
    /// label values must stay few.
    pub fn http_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        let status = Label::new("status", status.to_string());
        let counter = Key::from_parts(REQUESTS, vec![Label::from_static_parts("route", route), status]);
        self.recorder.register_counter(&counter, &META).increment(1);
        let histogram = Key::from_parts(LATENCY, vec![Label::from_static_parts("route", route)]);
        self.recorder.register_histogram(&histogram, &META).record(elapsed.as_secs_f64());
    }

    /// `code` is one of the public error codes (DESIGN.md), a closed set.
    pub fn graphql_error(&self, code: &str) {
        let key = Key::from_parts(ERRORS, vec![Label::new("code", code.to_owned())]);
        self.recorder.register_counter(&key, &META).increment(1);
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        // Keeps summaries and histograms bounded even when scrapes are rare.
        self.handle.run_upkeep();
        self.handle.render()
    }
}
