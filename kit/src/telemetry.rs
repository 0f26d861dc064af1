//! Tracing setup: one subscriber per process, pretty for humans or JSON for machines.

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, TelemetrySettings};

/// Installs the global subscriber. Safe to call more than once (tests start several
/// services in one process): later calls are no-ops.
pub fn init(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Tests log at `warn`, but the capture needs the kit's trace spans. One global
    // filter for every layer: per-layer filters can silently drop spans
    // (tokio-rs/tracing#2519), which would cost log lines their trace id.
    #[cfg(feature = "testing")]
    let filter = capture::TARGETS
        .iter()
        .filter_map(|target| format!("{target}=info").parse().ok())
        .fold(filter, EnvFilter::add_directive);
    // Colour only for a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let output = tracing_subscriber::fmt::layer().with_ansi(ansi);
    let output = match settings.format {
        LogFormat::Json => output.json().flatten_event(true).boxed(),
        LogFormat::Pretty => output.compact().boxed(),
    };
    let subscriber = tracing_subscriber::registry().with(filter).with(output);
    #[cfg(feature = "testing")]
    let subscriber = subscriber.with(capture::Capture);
    if subscriber.try_init().is_ok() {
        #[cfg(feature = "testing")]
        capture::installed();
    }
}

/// Installs ring as the process-wide rustls provider (sqlx, lapin and reqwest share it).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Test hook: records the trace spans every service in the process opens (the
/// `grpc.request` span of each call, the root span of each background trace), so an
/// integration test can check which services took part in a trace without a proxy.
/// Records nothing until `start`.
#[cfg(feature = "testing")]
pub mod capture {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tracing::Subscriber;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::Context;
    use tracing_subscriber::registry::LookupSpan;

    /// One captured span and the trace fields it carried.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct TraceSpan {
        pub name: &'static str,
        /// The gRPC service that served the call (empty for background traces).
        pub service: String,
        /// The called method's path, e.g. `/marquee.cinema.v1.CinemaService/LockSeats`.
        pub rpc: String,
        pub trace_id: String,
        pub span_id: String,
        /// The caller's span, from a valid incoming `traceparent`.
        pub parent_id: Option<String>,
    }

    static RECORDING: AtomicBool = AtomicBool::new(false);
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    static SPANS: Mutex<Vec<TraceSpan>> = Mutex::new(Vec::new());

    /// Starts recording; `false` when another subscriber was installed first, so
    /// nothing can be recorded.
    pub fn start() -> bool {
        RECORDING.store(true, Ordering::SeqCst);
        INSTALLED.load(Ordering::SeqCst)
    }

    /// The recorded spans of one trace, in the order they were opened.
    pub fn spans_of(trace_id: &str) -> Vec<TraceSpan> {
        let spans = SPANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        spans.iter().filter(|span| span.trace_id == trace_id).cloned().collect()
    }

    /// Every recorded span, in the order they were opened.
    pub fn all() -> Vec<TraceSpan> {
        SPANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    pub(super) fn installed() {
        INSTALLED.store(true, Ordering::SeqCst);
    }

    /// Where the kit opens its trace spans: the only spans recorded.
    pub(super) const TARGETS: [&str; 2] = ["marquee_kit::grpc", "marquee_kit::trace"];

    pub(super) struct Capture;

    /// Where a span's record sits in `SPANS`, kept in the span's extensions.
    struct Slot(usize);

    impl<S> Layer<S> for Capture
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            if !RECORDING.load(Ordering::Relaxed) || !TARGETS.contains(&attrs.metadata().target()) {
                return;
            }
            let mut span = TraceSpan { name: attrs.metadata().name(), ..TraceSpan::default() };
            attrs.record(&mut Fields(&mut span));
            let mut spans = SPANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            spans.push(span);
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(Slot(spans.len() - 1));
            }
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(id) else { return };
            let extensions = span.extensions();
            let Some(Slot(slot)) = extensions.get::<Slot>() else { return };
            let mut spans = SPANS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(span) = spans.get_mut(*slot) {
                values.record(&mut Fields(span));
            }
        }
    }

    struct Fields<'a>(&'a mut TraceSpan);

    impl Visit for Fields<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.record_debug(field, &format_args!("{value}"));
        }

        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let value = format!("{value:?}");
            match field.name() {
                "service" => self.0.service = value,
                "rpc" => self.0.rpc = value,
                "trace.id" => self.0.trace_id = value,
                "span.id" => self.0.span_id = value,
                "parent.id" => self.0.parent_id = Some(value),
                _ => {}
            }
        }
    }
}
