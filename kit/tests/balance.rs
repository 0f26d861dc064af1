//! Balanced upstream channels against real gRPC servers on loopback: calls spread
//! over the replicas, a stopped replica leaves the rotation, a restarted one joins
//! it again, and with every replica down a call fails fast instead of waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use marquee_kit::config::GrpcSettings;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The service every replica serves, as the balancer probes it.
const SERVICE: &str = "marquee.test.v1.Echo";
const INTERVAL: Duration = Duration::from_millis(100);

fn settings() -> GrpcSettings {
    GrpcSettings { request_timeout_ms: 2_000, shutdown_grace_ms: 0, discovery_interval_ms: 100 }
}

/// One replica: `grpc.health.v1` reporting `SERVICE` and its own name, so a call of
/// `Check("a")` through the balancer tells which replica answered.
struct Replica {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Replica {
    async fn start(name: &'static str, addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status(SERVICE, ServingStatus::Serving).await;
        reporter.set_service_status(name, ServingStatus::Serving).await;
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), signal.cancelled_owned())
                .await
                .unwrap();
        });
        Self { addr, stop, task }
    }

    async fn stop(self) -> SocketAddr {
        self.stop.cancel();
        self.task.await.unwrap();
        self.addr
    }
}

/// Makes `calls` calls of `Check("a")` and counts who answered: replica a knows the
/// name, replica b answers NOT_FOUND; a call that failed otherwise counts under its code.
async fn spread(channel: &Channel, calls: usize) -> Vec<(String, usize)> {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for _ in 0..calls {
        let mut client = HealthClient::new(channel.clone());
        let key = match client.check(HealthCheckRequest { service: "a".to_owned() }).await {
            Ok(_) => "a".to_owned(),
            Err(status) if status.code() == Code::NotFound => "b".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    counts
}

fn count(counts: &[(String, usize)], key: &str) -> usize {
    counts.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
}

#[tokio::test]
async fn calls_spread_over_replicas_and_follow_them_down_and_up() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = Replica::start("a", loopback).await;
    let b = Replica::start("b", loopback).await;
    let urls = format!("http://{}, http://{}", a.addr, b.addr);
    let channel = marquee_kit::grpc::channel(&urls, SERVICE, &settings()).unwrap();
    tokio::time::sleep(3 * INTERVAL).await;

    // Both replicas take calls: neither gets fewer than a fifth.
    let counts = spread(&channel, 100).await;
    assert!(count(&counts, "a") >= 20 && count(&counts, "b") >= 20, "{counts:?}");
    assert_eq!(count(&counts, "a") + count(&counts, "b"), 100, "{counts:?}");

    // Replica a stops: within a few intervals every call goes to b, none fails.
    let a_addr = a.stop().await;
    tokio::time::sleep(3 * INTERVAL).await;
    let counts = spread(&channel, 50).await;
    assert_eq!(count(&counts, "b"), 50, "{counts:?}");

    // a comes back on its address and takes calls again.
    let a = Replica::start("a", a_addr).await;
    tokio::time::sleep(3 * INTERVAL).await;
    let counts = spread(&channel, 100).await;
    assert!(count(&counts, "a") >= 20, "{counts:?}");

    // Every replica down: a call fails at once as UNAVAILABLE (the configured endpoints
    // refuse the connection) rather than waiting for one to come back.
    a.stop().await;
    b.stop().await;
    tokio::time::sleep(3 * INTERVAL).await;
    let started = Instant::now();
    let mut client = HealthClient::new(channel.clone());
    let call = client.check(HealthCheckRequest { service: SERVICE.to_owned() });
    let answer = tokio::time::timeout(Duration::from_secs(10), call).await.expect("the call hangs");
    assert_eq!(answer.unwrap_err().code(), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_replica_not_serving_the_service_gets_no_calls() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let a = Replica::start("a", loopback).await;
    let b = Replica::start("b", loopback).await;
    let urls = format!("http://{},http://{}", a.addr, b.addr);
    // b now reports the service NOT_SERVING (a store it needs is down, or it drains).
    let b_addr = b.stop().await;
    let b = NotServing::start(b_addr).await;
    let channel = marquee_kit::grpc::channel(&urls, SERVICE, &settings()).unwrap();
    tokio::time::sleep(3 * INTERVAL).await;
    let counts = spread(&channel, 50).await;
    assert_eq!(count(&counts, "a"), 50, "{counts:?}");
    b.stop.cancel();
    a.stop().await;
}

/// A replica whose `SERVICE` is NOT_SERVING (it would answer `Check("a")` NOT_FOUND).
struct NotServing {
    stop: CancellationToken,
}

impl NotServing {
    async fn start(addr: SocketAddr) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter.set_service_status(SERVICE, ServingStatus::NotServing).await;
        let stop = CancellationToken::new();
        let signal = stop.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener), signal.cancelled_owned()),
        );
        Self { stop }
    }
}
