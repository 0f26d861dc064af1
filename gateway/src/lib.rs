//! The public GraphQL gateway: serves the DESIGN.md GraphQL contract over HTTP
//! (axum + async-graphql), verifies access tokens itself (signature, pinned `alg`,
//! expiry, issuer, and the Redis logout denylist), and resolves every field through
//! gRPC calls to the user, cinema, booking and notification services.

mod denylist;
mod domain;
mod error;
mod fanout;
mod http;
mod live;
mod loaders;
mod metrics;
mod ratelimit;
mod schema;
pub mod settings;
mod shared_task;
mod trace;
mod upstream;

pub use settings::Settings;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::serve::ListenerExt as _;
use marquee_auth::TokenKeys;
use marquee_kit::shutdown::Shutdown;
use tokio::net::TcpListener;

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    grace: Duration,
    /// Cancelled when shutdown starts: WebSocket connections are upgraded out of the
    /// HTTP server's sight, so they watch this to close themselves.
    closing: Shutdown,
}

impl Application {
    /// Binds `settings.gateway` (port 0 picks a free port). Upstream channels connect
    /// lazily, so the gateway starts even while a service is still coming up.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let keys = TokenKeys::new(&settings.auth).context("invalid auth settings")?;
        let upstreams = upstream::Upstreams::connect(&settings)?;
        let schemas = (schema::build(upstreams.clone()), schema::build_for_introspection(upstreams.clone()));
        let metrics = metrics::Metrics::new()?;
        let denylist =
            denylist::Denylist::connect(&settings.redis, &settings.gateway, metrics.denylist.clone()).await?;
        let limiter = ratelimit::RateLimiter::connect(&settings.redis, &settings.gateway.rate_limit).await?;
        let feeds = live::SeatFeeds::new(&settings, metrics.clone())?;
        let closing = Shutdown::new();
        let services =
            http::Services { keys, denylist, upstreams, feeds, limiter, metrics, closing: closing.clone() };
        let state = http::AppState::new(schemas, services, &settings.gateway);
        let router = http::router(state, settings.gateway.max_body_bytes);
        let (listener, addr) = marquee_kit::grpc::bind(&settings.gateway.server).await?;
        let grace = Duration::from_millis(settings.grpc.shutdown_grace_ms);
        Ok(Self { listener, addr, router, grace, closing })
    }

    /// The HTTP address, e.g. `http://{addr}/graphql`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish for
    /// at most the configured grace period.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let signal = shutdown.clone();
        // The peer address is the anonymous caller's rate-limit bucket.
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        // TCP_NODELAY: a small response must not wait for the client's delayed ACK.
        let listener = self.listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let server = axum::serve(listener, service)
            .with_graceful_shutdown(async move { signal.cancelled().await })
            .into_future();
        tokio::pin!(server);
        let stopped = tokio::select! {
            result = &mut server => Some(result),
            () = shutdown.cancelled() => None,
        };
        // Subscribers are told to go (1001) and reconnect to another replica, however the
        // server stopped: their upgraded connections are not the HTTP server's to wait
        // for, so on shutdown it may finish first (no HTTP request in flight).
        self.closing.cancel();
        if let Some(result) = stopped {
            return result.context("HTTP server failed");
        }
        match tokio::time::timeout(self.grace, server).await {
            Ok(result) => result.context("HTTP server failed while draining"),
            Err(_) => {
                tracing::warn!("drain deadline passed; dropping in-flight requests");
                Ok(())
            }
        }
    }
}
