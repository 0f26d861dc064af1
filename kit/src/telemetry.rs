//! Tracing setup: one subscriber per process, pretty for humans or JSON for machines,
//! and OpenTelemetry traces: every enabled span becomes an OpenTelemetry span
//! (`tracing-opentelemetry`), sampled parent-based by trace id ratio and exported over
//! OTLP/gRPC by a batch processor when `otlp_endpoint` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::{LogFormat, TelemetrySettings};

/// The process's tracer provider, for flushing on shutdown. Holds nothing when another
/// call installed the subscriber first.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what the batch processor still holds and stops it: call once serving
    /// has stopped, or the last spans of the process are lost.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else { return };
        // Blocks until the exporter's last batch is sent; off the async workers, which
        // drive the export's gRPC connection.
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("cannot flush traces: {error}"),
            Err(error) => eprintln!("cannot flush traces: {error}"),
        }
    }
}

/// Installs the global subscriber and tracer provider. Safe to call more than once
/// (tests start several services in one process): later calls are no-ops. Must run
/// inside the Tokio runtime when `otlp_endpoint` is set (the exporter's channel).
pub fn init(settings: &TelemetrySettings) -> Telemetry {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let output = tracing_subscriber::fmt::layer().with_ansi(ansi);
    let output = match settings.format {
        LogFormat::Json => output.json().flatten_event(true).boxed(),
        LogFormat::Pretty => output.compact().boxed(),
    };
    let (provider, exporter_error) = tracer_provider(settings);
    // One global filter for every layer: per-layer filters can silently drop spans
    // (tokio-rs/tracing#2519). The spans that carry a trace between processes are at
    // error level (`grpc`, `trace`), so no log level breaks propagation.
    let traces = tracing_opentelemetry::layer().with_tracer(provider.tracer("marquee"));
    let subscriber = tracing_subscriber::registry().with(filter).with(output).with(traces);
    if subscriber.try_init().is_err() {
        // Another call won: its provider serves the process; this one was never used.
        return Telemetry { provider: None };
    }
    if let Some(error) = exporter_error {
        tracing::error!(
            endpoint = %settings.otlp_endpoint,
            error = format!("{error:#}"),
            "cannot build the OTLP exporter; traces are not exported"
        );
    }
    opentelemetry::global::set_tracer_provider(provider.clone());
    Telemetry { provider: Some(provider) }
}

/// The provider `init` installs, and why export is off when the exporter cannot be
/// built (reported once the subscriber can log it).
fn tracer_provider(settings: &TelemetrySettings) -> (SdkTracerProvider, Option<anyhow::Error>) {
    // Parent-based: a continued trace keeps its caller's decision, so no trace loses
    // its middle; the ratio decides only for traces that start here.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sampling_ratio)));
    let resource = Resource::builder().with_service_name(service_name(settings)).build();
    let mut builder = SdkTracerProvider::builder().with_sampler(sampler).with_resource(resource);
    let mut exporter_error = None;
    if !settings.otlp_endpoint.is_empty() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.otlp_endpoint.clone())
            .build();
        match exporter {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(error) => exporter_error = Some(anyhow::Error::new(error)),
        }
    }
    #[cfg(feature = "testing")]
    let builder = builder.with_span_processor(capture::Recorder::new());
    (builder.build(), exporter_error)
}

/// The configured name, else the executable's (`marquee-booking`), else "marquee".
fn service_name(settings: &TelemetrySettings) -> String {
    if !settings.service_name.is_empty() {
        return settings.service_name.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "marquee".to_owned())
}

/// Installs ring as the process-wide rustls provider (sqlx, lapin and reqwest share it).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Test hook: an in-memory span exporter (OpenTelemetry's `InMemorySpanExporter`)
/// behind the process's tracer provider, so an integration test can check which
/// services took part in a trace, and how their spans link, without a collector.
/// Records nothing until `start` (the bench binaries link this too).
#[cfg(feature = "testing")]
pub mod capture {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use opentelemetry::Context;
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{
        InMemorySpanExporter, SimpleSpanProcessor, Span, SpanData, SpanProcessor,
    };

    /// One exported span, reduced to what tests compare.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct TraceSpan {
        pub name: String,
        /// The `service` attribute: the gRPC service that served the call, or the
        /// process part (`gateway`, `notification`, `ticket`) that opened the span.
        pub service: String,
        /// The called method's path, e.g. `/marquee.cinema.v1.CinemaService/LockSeats`.
        pub rpc: String,
        pub trace_id: String,
        pub span_id: String,
        /// The parent span, `None` for the root of a trace.
        pub parent_id: Option<String>,
        /// Every attribute, as text.
        pub attributes: Vec<(String, String)>,
    }

    impl TraceSpan {
        /// Whether this span is `ancestor` or below it, by the parent links among `spans`.
        pub fn descends_from(&self, ancestor: &TraceSpan, spans: &[TraceSpan]) -> bool {
            let mut at = Some(self);
            while let Some(current) = at {
                if current.span_id == ancestor.span_id {
                    return true;
                }
                at =
                    current.parent_id.as_ref().and_then(|parent| spans.iter().find(|s| &s.span_id == parent));
            }
            false
        }

        pub fn attribute(&self, key: &str) -> Option<&str> {
            self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
        }
    }

    impl From<&SpanData> for TraceSpan {
        fn from(span: &SpanData) -> Self {
            let attributes: Vec<(String, String)> =
                span.attributes.iter().map(|kv| (kv.key.to_string(), kv.value.to_string())).collect();
            let text = |key: &str| {
                attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default()
            };
            let parent = span.parent_span_id;
            Self {
                name: span.name.to_string(),
                service: text("service"),
                rpc: text("rpc"),
                trace_id: span.span_context.trace_id().to_string(),
                span_id: span.span_context.span_id().to_string(),
                parent_id: (parent != opentelemetry::trace::SpanId::INVALID).then(|| parent.to_string()),
                attributes,
            }
        }
    }

    static RECORDING: AtomicBool = AtomicBool::new(false);
    static EXPORTER: OnceLock<InMemorySpanExporter> = OnceLock::new();

    /// Starts recording; `false` when another subscriber was installed first, so
    /// nothing can be recorded.
    pub fn start() -> bool {
        RECORDING.store(true, Ordering::SeqCst);
        EXPORTER.get().is_some()
    }

    /// Every span exported so far, in the order they ended.
    pub fn all() -> Vec<TraceSpan> {
        let spans = EXPORTER.get().and_then(|exporter| exporter.get_finished_spans().ok());
        spans.unwrap_or_default().iter().map(TraceSpan::from).collect()
    }

    /// The exported spans of one trace, in the order they ended.
    pub fn spans_of(trace_id: &str) -> Vec<TraceSpan> {
        all().into_iter().filter(|span| span.trace_id == trace_id).collect()
    }

    /// Sends ended spans to the in-memory exporter while recording, at once (a simple
    /// processor), so a test sees a span as soon as it ended.
    #[derive(Debug)]
    pub(super) struct Recorder(SimpleSpanProcessor<InMemorySpanExporter>);

    impl Recorder {
        pub(super) fn new() -> Self {
            let exporter = EXPORTER.get_or_init(InMemorySpanExporter::default).clone();
            Self(SimpleSpanProcessor::new(exporter))
        }
    }

    impl SpanProcessor for Recorder {
        fn on_start(&self, span: &mut Span, cx: &Context) {
            self.0.on_start(span, cx);
        }

        fn on_end(&self, span: SpanData) {
            if RECORDING.load(Ordering::Relaxed) {
                self.0.on_end(span);
            }
        }

        fn force_flush(&self) -> OTelSdkResult {
            self.0.force_flush()
        }

        fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
            self.0.shutdown_with_timeout(timeout)
        }
    }
}
