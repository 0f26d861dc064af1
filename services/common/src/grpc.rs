//! gRPC server scaffolding (health, reflection, graceful drain) and client channels.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::ServingStatus;

use crate::config::{GrpcSettings, ServerSettings};

/// Binds the configured address (port 0 picks a free port) and reports the real one.
pub async fn bind(settings: &ServerSettings) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(settings.address())
        .await
        .with_context(|| format!("cannot bind {}", settings.address()))?;
    let addr = listener.local_addr().context("bound socket has no address")?;
    Ok((listener, addr))
}

/// Serves `routes` plus `grpc.health.v1` (the service reported SERVING) and server
/// reflection, until `shutdown` is cancelled; then drains in-flight calls for at most
/// `grace`.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    service_name: &'static str,
    shutdown: CancellationToken,
    grace: Duration,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status(service_name, ServingStatus::Serving).await;
    reporter.set_service_status("", ServingStatus::Serving).await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(marquee_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;

    let signal = shutdown.clone();
    let server = Server::builder()
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
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

/// A lazily connecting channel to another service, with the configured deadline.
pub fn channel(url: &str, settings: &GrpcSettings) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid upstream URL {url}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_millis(settings.request_timeout_ms));
    Ok(endpoint.connect_lazy())
}
