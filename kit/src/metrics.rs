//! Prometheus metrics for every service: a `Registry` of its own per service (not the
//! process-global recorder: several services share one process in tests and the
//! benchmarks), the gRPC server metrics `grpc::serve` records on it (`GrpcMetricsLayer`),
//! and `MetricsServer`, which serves it at `GET /metrics` on the service's
//! `metrics_port`, refreshing the gauges that are read from a store first.

mod grpc;

pub use self::grpc::{GrpcMetered, GrpcMetricsLayer, MeteredBody};
pub use metrics::{Counter, Gauge, Histogram, Unit};

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long a scrape waits for the gauges read from stores. Past it, the scrape
/// answers with their previous values (and counts the failure) instead of hanging.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Scrapes whose gauge refresh failed or timed out.
const COLLECT_FAILURES: &str = "metrics_collect_failures_total";

static META: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// One service's metrics. Cheap to clone; every clone feeds the same registry.
#[derive(Clone)]
pub struct Registry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Registry {
    /// An empty registry, with histogram buckets for the gRPC latency.
    pub fn new() -> anyhow::Result<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(grpc::DURATION.to_owned()), grpc::DURATION_BUCKETS)
            .context("invalid gRPC latency buckets")?
            .build_recorder();
        let registry = Self { handle: recorder.handle(), recorder: Arc::new(recorder) };
        grpc::describe(&registry);
        Ok(registry)
    }

    /// A counter with fixed labels (none, or a closed set chosen by the caller).
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Counter {
        self.recorder.describe_counter(name.into(), None, help.into());
        self.recorder.register_counter(&key(name, labels), &META)
    }

    /// A gauge with fixed labels.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Gauge {
        self.recorder.describe_gauge(name.into(), None, help.into());
        self.recorder.register_gauge(&key(name, labels), &META)
    }

    /// A histogram (rendered as a summary unless `new` gave it buckets).
    pub fn histogram(&self, name: &'static str, unit: Option<Unit>, help: &'static str) -> Histogram {
        self.recorder.describe_histogram(name.into(), unit, help.into());
        self.recorder.register_histogram(&Key::from_static_name(name), &META)
    }

    /// The recorder itself, for metrics whose labels are only known per event.
    pub fn recorder(&self) -> &PrometheusRecorder {
        &self.recorder
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        // Keeps summaries bounded even when scrapes are rare.
        self.handle.run_upkeep();
        self.handle.render()
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels.iter().map(|(k, v)| Label::from_static_parts(k, v)).collect();
    Key::from_parts(name, labels)
}

type Collect = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

/// The bound `/metrics` listener of one service.
pub struct MetricsServer {
    listener: TcpListener,
    addr: SocketAddr,
    registry: Registry,
    collectors: Vec<Collect>,
}

impl MetricsServer {
    /// Binds `host:port` (0 picks a free port, tests) for `registry`.
    pub async fn bind(host: &str, port: u16, registry: &Registry) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((host, port))
            .await
            .with_context(|| format!("cannot bind the metrics port {host}:{port}"))?;
        let addr = listener.local_addr().context("the metrics listener has no address")?;
        Ok(Self { listener, addr, registry: registry.clone(), collectors: Vec::new() })
    }

    /// Runs `collect` (which sets gauges read from a store) before every scrape, all
    /// collectors at once and one scrape at a time, for at most `COLLECT_TIMEOUT`.
    /// Reading at scrape time costs nothing between scrapes and is never stale.
    pub fn collecting<F, Fut>(mut self, collect: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.collectors.push(Arc::new(move || Box::pin(collect())));
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves in a task of its own, for a service whose gRPC server runs beside it,
    /// until `Serving::stop` or `shutdown` (so it answers while the server drains), or
    /// until the `Serving` is dropped (an aborted service stops serving metrics too).
    pub fn spawn(self, shutdown: &CancellationToken) -> Serving {
        let stop = shutdown.child_token();
        Serving { task: tokio::spawn(self.serve(stop.clone())), stop }
    }

    /// Serves `GET /metrics` until `shutdown`.
    pub async fn serve(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let scrape = Arc::new(Scrape {
            failures: self.registry.counter(
                COLLECT_FAILURES,
                "Scrapes whose gauges read from a store failed or timed out (their previous values were served)",
                &[],
            ),
            registry: self.registry,
            collectors: self.collectors,
            one_at_a_time: tokio::sync::Mutex::new(()),
        });
        let router = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let scrape = scrape.clone();
                async move { scrape.render().await }
            }),
        );
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .context("the metrics server failed")
    }
}

/// A `MetricsServer` serving in its own task.
pub struct Serving {
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: CancellationToken,
}

impl Serving {
    /// Stops serving; the error, if serving failed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        (&mut self.task).await.context("the metrics server panicked")?
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Scrape {
    registry: Registry,
    collectors: Vec<Collect>,
    failures: Counter,
    /// Concurrent scrapes take turns, so they never multiply the store reads.
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Scrape {
    async fn render(&self) -> String {
        if !self.collectors.is_empty() {
            let collected = tokio::time::timeout(COLLECT_TIMEOUT, async {
                let _turn = self.one_at_a_time.lock().await;
                join_all(self.collectors.iter().map(|collect| collect())).await
            })
            .await;
            match collected {
                Ok(results) => {
                    for error in results.into_iter().filter_map(Result::err) {
                        self.failures.increment(1);
                        tracing::warn!(error = format!("{error:#}"), "cannot read a gauge for /metrics");
                    }
                }
                Err(_) => {
                    self.failures.increment(1);
                    tracing::warn!(timeout = ?COLLECT_TIMEOUT, "reading the gauges for /metrics timed out");
                }
            }
        }
        self.registry.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scrape_refreshes_gauges_and_survives_a_failing_store() {
        let registry = Registry::new().unwrap();
        let gauge = registry.gauge("test_depth", "A depth", &[("queue", "a")]);
        let server = MetricsServer::bind("127.0.0.1", 0, &registry)
            .await
            .unwrap()
            .collecting(move || {
                let gauge = gauge.clone();
                async move {
                    gauge.set(7.0);
                    Ok(())
                }
            })
            .collecting(|| async { anyhow::bail!("the store is down") });
        let scrape = Scrape {
            failures: registry.counter(COLLECT_FAILURES, "failures", &[]),
            registry: server.registry.clone(),
            collectors: server.collectors,
            one_at_a_time: tokio::sync::Mutex::new(()),
        };
        let text = scrape.render().await;
        assert!(text.contains("test_depth{queue=\"a\"} 7"), "{text}");
        assert!(text.contains("metrics_collect_failures_total 1"), "{text}");
    }
}
