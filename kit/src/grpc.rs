//! gRPC server scaffolding (health, reflection, tracing, metrics, graceful drain) and
//! client channels.

use std::net::SocketAddr;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::Instrument as _;
use tracing::instrument::Instrumented;

use crate::config::ServerSettings;
use crate::metrics::{GrpcMetricsLayer, Registry};
use crate::readiness::Readiness;

/// Binds the configured address (port 0 picks a free port) and reports the real one.
pub async fn bind(settings: &ServerSettings) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(settings.address())
        .await
        .with_context(|| format!("cannot bind {}", settings.address()))?;
    let addr = listener.local_addr().context("bound socket has no address")?;
    Ok((listener, addr))
}

/// Serves `routes` plus `grpc.health.v1` and server reflection, until `shutdown` is
/// cancelled; then drains in-flight calls for at most `grace`. Health is SERVING
/// while every probe of `readiness` answers (see `readiness`). Every call runs in a
/// `grpc.request` span of the caller's trace (see `TraceLayer`) and is counted and
/// timed on `metrics` (see `metrics::GrpcMetricsLayer`; health and reflection are not).
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    service_name: &'static str,
    readiness: Readiness,
    metrics: &Registry,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status(service_name, ServingStatus::Serving).await;
    reporter.set_service_status("", ServingStatus::Serving).await;
    let watcher = tokio::spawn(readiness.watch(reporter.clone(), service_name, shutdown.clone()));
    let _stop_watching = AbortOnDrop(watcher);

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(marquee_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;

    let signal = shutdown.clone();
    let server = Server::builder()
        .layer(TraceLayer { service: service_name })
        .layer(GrpcMetricsLayer::new(metrics))
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection)
        // TCP_NODELAY: without it a small response frame can wait for the peer's delayed
        // ACK (up to 40 ms on Linux) while another frame of the connection is unacked.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            signal.cancelled().await;
            reporter.set_service_status(service_name, ServingStatus::NotServing).await;
        });
    tokio::pin!(server);

    tokio::select! {
        result = &mut server => return result.context("gRPC server failed"),
        () = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.context("gRPC server failed while draining"),
        Err(_) => {
            tracing::warn!(service = service_name, "drain deadline passed; dropping in-flight calls");
            Ok(())
        }
    }
}

/// Stops a background task when the scope that started it ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub use crate::balance::{channel, streaming_channel};

/// Runs each call in a `grpc.request` span, the child of the caller's span its
/// `traceparent` names (the root of a new trace when it is missing or malformed). The
/// span carries `trace.id` and `span.id`, so every log line of the call carries them;
/// calls the handler makes with `trace::outgoing` become its children.
#[derive(Clone, Copy, Debug)]
pub struct TraceLayer {
    /// Names the service in the span: several services may share one process (tests).
    pub service: &'static str,
}

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Traced { inner, service: self.service }
    }
}

/// The service `TraceLayer` wraps.
#[derive(Clone, Debug)]
pub struct Traced<S> {
    inner: S,
    service: &'static str,
}

impl<S, B> tower::Service<http::Request<B>> for Traced<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Probes every few seconds from every client would drown the traces of real work.
        if request.uri().path().starts_with("/grpc.health.v1.") {
            return self.inner.call(request).instrument(tracing::Span::none());
        }
        // Error level: the span must exist whatever the log level, or the trace breaks
        // here. No implicit parent: only the caller's `traceparent` decides the trace.
        let span = tracing::error_span!(
            parent: None,
            "grpc.request",
            otel.kind = "server",
            service = self.service,
            rpc = request.uri().path(),
            trace.id = tracing::field::Empty,
            span.id = tracing::field::Empty,
        );
        crate::trace::follow(&span, crate::trace::extract(&crate::trace::Headers(request.headers())));
        let call = span.in_scope(|| self.inner.call(request));
        call.instrument(span)
    }
}
