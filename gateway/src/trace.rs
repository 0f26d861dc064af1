//! W3C Trace Context for the gateway, so one booking is one trace across the gateway
//! and every service it calls.
//!
//! Each GraphQL request is one span of the gateway (`graphql.request`): the child of
//! the caller's span when the request carries a valid `traceparent`, the root of a new
//! trace otherwise. Every gRPC call the request makes carries that span's
//! `traceparent`, so the services' spans are its children. Propagation is the service
//! kit's (OpenTelemetry's W3C propagator), shared with the services.

use marquee_kit::trace::{Context, Headers, extract, follow, stamp};
use tonic::codegen::http::HeaderMap;
use tonic::metadata::MetadataMap;

/// The span of one GraphQL request.
#[derive(Clone, Debug)]
pub struct TraceContext(tracing::Span);

impl TraceContext {
    /// The span for a request with these headers: continues the caller's trace, or
    /// starts one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::child_of(extract(&Headers(headers)))
    }

    /// A request no caller traced (an operation over WebSocket): a new trace.
    pub fn root() -> Self {
        Self::child_of(Context::new())
    }

    fn child_of(parent: Context) -> Self {
        // Error level: the span must exist whatever the log level, or the trace breaks
        // here. No implicit parent: only the caller's `traceparent` decides the trace.
        let span = tracing::error_span!(
            parent: None,
            "graphql.request",
            otel.kind = "server",
            service = "gateway",
            trace.id = tracing::field::Empty,
            span.id = tracing::field::Empty,
        );
        follow(&span, parent);
        Self(span)
    }

    /// The request's span: its operation runs inside it.
    pub fn span(&self) -> &tracing::Span {
        &self.0
    }

    /// Sets this request's `traceparent` on an upstream call.
    pub fn stamp(&self, metadata: &mut MetadataMap) {
        stamp(&self.0, metadata);
    }
}
