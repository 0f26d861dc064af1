//! Trace context across processes, so one booking is one trace across the gateway,
//! every service it reaches and the events it causes.
//!
//! Spans are `tracing` spans; the OpenTelemetry layer `telemetry::init` installs gives
//! each one its OpenTelemetry identity. What crosses a process boundary is the W3C
//! `traceparent` of the sending span, written and read by OpenTelemetry's propagator:
//! on gRPC metadata (`outgoing`, read by `grpc::serve`'s layer), on the gateway's HTTP
//! requests and on RabbitMQ message headers (`marquee_messaging`). The first span of
//! every hop is made the caller's child with `follow`, which also records the trace id
//! on it so every log line inside carries `trace.id`.

use std::future::Future;

pub use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http::HeaderMap;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header (HTTP), metadata key (gRPC), AMQP header and outbox field defined by W3C
/// Trace Context.
pub const TRACEPARENT: &str = "traceparent";

/// The caller's context named by `carrier`; an empty context (so the hop starts a new
/// trace) when it carries no valid `traceparent`: the spec says to restart on an
/// unparsable header rather than fail the request.
pub fn extract(carrier: &dyn Extractor) -> Context {
    TraceContextPropagator::new().extract(carrier)
}

/// Writes `span`'s `traceparent` (and `tracestate`) into `carrier`; nothing when the
/// span has no trace (no OpenTelemetry layer installed).
pub fn inject(span: &tracing::Span, carrier: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(&span.context(), carrier);
}

/// Makes `span` (the first span of a hop, not yet entered) a child of `parent`, or the
/// root of a new trace when `parent` is empty, and records its ids on the span's
/// `trace.id` and `span.id` fields (which it must declare, `Empty`) for log correlation.
pub fn follow(span: &tracing::Span, parent: Context) {
    // Fails only without the OpenTelemetry layer (a unit test's subscriber) or for a
    // span the filter disabled: then there is no trace to join, and nothing to log.
    if span.set_parent(parent).is_err() {
        return;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace.id", tracing::field::display(span_context.trace_id()));
        span.record("span.id", tracing::field::display(span_context.span_id()));
    }
}

/// The trace id of `span` in hex, empty outside any trace.
pub fn trace_id(span: &tracing::Span) -> String {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() { span_context.trace_id().to_string() } else { String::new() }
}

/// The `traceparent` of the current span, to store beside work that continues later
/// in another process (an outbox event); `None` outside any trace.
pub fn current_traceparent() -> Option<String> {
    let mut carrier = Fields::default();
    inject(&tracing::Span::current(), &mut carrier);
    carrier.traceparent
}

/// A request for an outgoing gRPC call, carrying the current span's `traceparent`: the
/// callee's span becomes its child.
pub fn outgoing<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    stamp(&tracing::Span::current(), request.metadata_mut());
    request
}

/// Sets `span`'s `traceparent` on outgoing gRPC metadata.
pub fn stamp(span: &tracing::Span, metadata: &mut MetadataMap) {
    inject(span, &mut Metadata(metadata));
}

/// Runs `work` as the root of a new trace, inside a span that carries its id, for
/// background work no caller traced (one trace per booking swept).
pub async fn in_new_trace<F: Future>(work: F) -> F::Output {
    // Error level: the span must exist whatever the log level, or the trace is lost.
    let span = tracing::error_span!(parent: None, "trace", trace.id = tracing::field::Empty, span.id = tracing::field::Empty);
    follow(&span, Context::new());
    work.instrument(span).await
}

/// Reads trace context from HTTP or gRPC headers (which share the header map type).
pub struct Headers<'a>(pub &'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|key| key.as_str()).collect()
    }
}

/// Writes trace context into gRPC metadata.
struct Metadata<'a>(&'a mut MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Propagator keys and values are ASCII; never fail a call over tracing.
        if let (Ok(key), Ok(value)) =
            (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value.as_str()))
        {
            self.0.insert(key, value);
        }
    }
}

/// Keeps only `traceparent`: what an outbox entry stores.
#[derive(Default)]
struct Fields {
    traceparent: Option<String>,
}

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.traceparent = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Runs `test` under a subscriber with the OpenTelemetry layer (no exporter).
    fn traced<T>(test: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), test)
    }

    fn hop(traceparent: Option<&str>) -> tracing::Span {
        let mut headers = HeaderMap::new();
        if let Some(value) = traceparent {
            headers.insert(TRACEPARENT, value.parse().unwrap());
        }
        let span = tracing::error_span!(parent: None, "hop", trace.id = tracing::field::Empty, span.id = tracing::field::Empty);
        follow(&span, extract(&Headers(&headers)));
        span
    }

    fn sent(span: &tracing::Span) -> String {
        let mut carrier = HashMap::new();
        inject(span, &mut carrier);
        carrier.remove(TRACEPARENT).expect("a traceparent")
    }

    #[test]
    fn a_hop_continues_a_valid_incoming_trace_as_a_new_span() {
        traced(|| {
            let span = hop(Some(SPEC_EXAMPLE));
            assert_eq!(trace_id(&span), "4bf92f3577b34da6a3ce929d0e0e4736");
            let header = sent(&span);
            assert!(header.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{header}");
            assert!(!header.contains("00f067aa0ba902b7"), "a new span, a child of the caller's: {header}");
            assert!(header.ends_with("-01"), "{header}");
        });
    }

    #[test]
    fn a_missing_or_invalid_header_starts_a_new_trace() {
        traced(|| {
            for raw in [
                None,
                Some("garbage"),
                Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
                Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
                Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ] {
                let span = hop(raw);
                let id = trace_id(&span);
                assert_eq!(id.len(), 32, "{raw:?}");
                assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736", "{raw:?}");
            }
            assert_ne!(trace_id(&hop(None)), trace_id(&hop(None)));
        });
    }

    #[test]
    fn outgoing_calls_carry_the_current_span() {
        traced(|| {
            let span = hop(Some(SPEC_EXAMPLE));
            let (header, stored) = span.in_scope(|| {
                let request = outgoing(());
                let header = request.metadata().get(TRACEPARENT).unwrap().to_str().unwrap().to_owned();
                (header, current_traceparent())
            });
            assert_eq!(header, sent(&span));
            assert_eq!(stored.as_deref(), Some(header.as_str()));
        });
    }

    #[tokio::test]
    async fn background_work_is_a_new_trace_of_its_own() {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let outer = hop(Some(SPEC_EXAMPLE));
        let inner = in_new_trace(async { trace_id(&tracing::Span::current()) }).instrument(outer).await;
        assert_eq!(inner.len(), 32);
        assert_ne!(inner, "4bf92f3577b34da6a3ce929d0e0e4736", "not the surrounding trace");
    }
}
