//! Client-side load balancing over every replica of an upstream.
//!
//! An upstream URL may name several endpoints, comma-separated
//! (`http://10.0.0.5:7003,http://10.0.0.6:7003`), and a host name may resolve to
//! several addresses (a Kubernetes headless Service answers with one per ready pod).
//! Calls are spread over them by tower's power-of-two-choices balancer (fewest
//! calls in flight of two picked at random). A task re-resolves the names and asks
//! every address for the service's `grpc.health.v1` status each
//! `grpc.discovery_interval_ms`: only SERVING replicas get calls, so one that was
//! killed, is draining, or lost a store it needs stops getting them within an interval.
//!
//! Without this, a ClusterIP or a single lazy channel sends every call of a process to
//! one pod, and a balancer fed a dead address keeps picking it: its calls fail fast,
//! so it always looks least loaded.
//!
//! When no address answers SERVING (all down, DNS empty, or before the first round)
//! the configured endpoints themselves are balanced, unresolved: calls then fail fast
//! with the connection error as a single-endpoint channel's do, and callers retry
//! transient failures as they always did, instead of waiting for a replica that may
//! never come (a balancer with nothing in it holds calls without a deadline).

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use tokio::sync::mpsc::Sender;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::GrpcSettings;

/// How long connecting to an upstream may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often an idle streaming connection is pinged.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Pending endpoint changes between the discovery task and the balancer.
const CHANGES: usize = 64;

/// One configured endpoint: `scheme://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    url: String,
    scheme: String,
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> anyhow::Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("invalid upstream URL {url:?}"))?;
        let scheme = uri.scheme_str().with_context(|| format!("upstream URL {url:?} has no scheme"))?;
        let host = uri.host().with_context(|| format!("upstream URL {url:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Self { url: url.to_owned(), scheme: scheme.to_owned(), host, port })
    }

    /// An address literal (or `localhost`): nothing to resolve, one replica.
    fn is_fixed(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok() || self.host == "localhost"
    }

    fn url_of(&self, address: SocketAddr) -> String {
        format!("{}://{address}", self.scheme)
    }
}

/// The configured endpoints of an upstream: one URL or several, comma-separated.
fn targets(urls: &str) -> anyhow::Result<Vec<Target>> {
    let targets: Vec<Target> = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(Target::parse)
        .collect::<Result<_, _>>()?;
    anyhow::ensure!(!targets.is_empty(), "upstream URL {urls:?} names no endpoint");
    Ok(targets)
}

/// What the calls on a channel are, which decides how its connections are set up.
#[derive(Clone, Copy, Debug)]
enum Calls {
    /// Each call ends within the deadline.
    Unary { deadline: Duration },
    /// Long-lived server streams: no deadline, and HTTP/2 keep-alive so a dead peer is
    /// noticed on an idle stream instead of waited for forever.
    Streams,
}

fn endpoint(url: &str, calls: Calls) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("invalid upstream URL {url}"))?
        .connect_timeout(CONNECT_TIMEOUT);
    Ok(match calls {
        Calls::Unary { deadline } => endpoint.timeout(deadline),
        Calls::Streams => endpoint.http2_keep_alive_interval(KEEP_ALIVE).keep_alive_while_idle(true),
    })
}

/// A lazily connecting channel to `service` (its gRPC name, e.g.
/// `marquee.booking.v1.BookingService`) at `urls`, every call within
/// `grpc.request_timeout_ms`: a plain channel for one address literal, else balanced
/// over the healthy replicas (module docs). Must be called inside a Tokio runtime.
pub fn channel(urls: &str, service: &'static str, settings: &GrpcSettings) -> anyhow::Result<Channel> {
    let deadline = Duration::from_millis(settings.request_timeout_ms);
    build(urls, service, settings, Calls::Unary { deadline })
}

/// Like `channel`, for long-lived server streams: no deadline, keep-alive pings.
/// Each new stream goes to one healthy replica; a stream stays where it started.
pub fn streaming_channel(
    urls: &str,
    service: &'static str,
    settings: &GrpcSettings,
) -> anyhow::Result<Channel> {
    build(urls, service, settings, Calls::Streams)
}

fn build(
    urls: &str,
    service: &'static str,
    settings: &GrpcSettings,
    calls: Calls,
) -> anyhow::Result<Channel> {
    let targets = targets(urls)?;
    if let [single] = targets.as_slice()
        && single.is_fixed()
    {
        return Ok(endpoint(&single.url, calls)?.connect_lazy());
    }
    let runtime = tokio::runtime::Handle::try_current()
        .context("a balanced upstream channel needs a Tokio runtime for its discovery task")?;
    let fallback: Vec<(String, Endpoint)> = targets
        .iter()
        .map(|t| Ok((t.url.clone(), endpoint(&t.url, calls)?)))
        .collect::<anyhow::Result<_>>()?;
    let (channel, changes) = Channel::balance_channel::<String>(CHANGES);
    let discovery = Discovery {
        service,
        targets,
        fallback,
        calls,
        // Never a busy loop, whatever the configuration says.
        interval: Duration::from_millis(settings.discovery_interval_ms.max(50)),
    };
    runtime.spawn(discovery.run(changes));
    Ok(channel)
}

/// Keeps one balancer's endpoint set equal to the healthy replicas.
struct Discovery {
    service: &'static str,
    targets: Vec<Target>,
    /// What is balanced while no replica answers SERVING.
    fallback: Vec<(String, Endpoint)>,
    calls: Calls,
    interval: Duration,
}

impl Discovery {
    /// Runs until the channel (every clone of it) is dropped.
    async fn run(self, changes: Sender<Change<String, Endpoint>>) {
        let mut current: BTreeSet<String> = BTreeSet::new();
        // Last good answer per name: a DNS hiccup must not empty the set.
        let mut resolved: HashMap<String, Vec<SocketAddr>> = HashMap::new();
        // One health client per address, kept across rounds (one connection each).
        let mut probes: HashMap<String, HealthClient<Channel>> = HashMap::new();
        if !self.apply(&changes, &mut current, self.fallback.clone()).await {
            return;
        }
        loop {
            let addresses = self.resolve(&mut resolved).await;
            probes.retain(|url, _| addresses.contains(url));
            let mut clients = Vec::with_capacity(addresses.len());
            for url in &addresses {
                let client = match probes.get(url) {
                    Some(client) => client.clone(),
                    None => match endpoint(url, Calls::Unary { deadline: self.interval }) {
                        Ok(endpoint) => {
                            let client = HealthClient::new(endpoint.connect_lazy());
                            probes.insert(url.clone(), client.clone());
                            client
                        }
                        Err(error) => {
                            tracing::warn!(error = format!("{error:#}"), "skipping an unusable address");
                            continue;
                        }
                    },
                };
                clients.push((url.clone(), client));
            }
            let this = &self;
            let answers = join_all(clients.into_iter().map(|(url, client)| async move {
                let serving = this.serving(client).await;
                (url, serving)
            }))
            .await;
            let healthy: Vec<(String, Endpoint)> = answers
                .into_iter()
                .filter(|(_, serving)| *serving)
                .filter_map(|(url, _)| endpoint(&url, self.calls).ok().map(|e| (url, e)))
                .collect();
            let desired = if healthy.is_empty() { self.fallback.clone() } else { healthy };
            if !self.apply(&changes, &mut current, desired).await {
                return;
            }
            tokio::time::sleep(self.interval).await;
        }
    }

    /// Every address of every target, as `scheme://ip:port`, in configuration order.
    async fn resolve(&self, resolved: &mut HashMap<String, Vec<SocketAddr>>) -> Vec<String> {
        let mut addresses = Vec::new();
        for target in &self.targets {
            if let Ok(ip) = target.host.parse::<IpAddr>() {
                addresses.push(target.url_of(SocketAddr::new(ip, target.port)));
                continue;
            }
            let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
            match tokio::time::timeout(self.interval.max(CONNECT_TIMEOUT), lookup).await {
                Ok(Ok(found)) => {
                    let mut found: Vec<SocketAddr> = found.collect();
                    found.sort_unstable();
                    found.dedup();
                    resolved.insert(target.host.clone(), found);
                }
                Ok(Err(error)) => {
                    tracing::warn!(host = %target.host, %error, "cannot resolve an upstream; keeping its last addresses");
                }
                Err(_) => {
                    tracing::warn!(host = %target.host, "resolving an upstream timed out; keeping its last addresses")
                }
            }
            for address in resolved.get(&target.host).into_iter().flatten() {
                addresses.push(target.url_of(*address));
            }
        }
        addresses.dedup();
        addresses
    }

    /// Whether the replica says it can serve `service` now.
    async fn serving(&self, mut client: HealthClient<Channel>) -> bool {
        let request = HealthCheckRequest { service: self.service.to_owned() };
        let limit = self.interval.min(CONNECT_TIMEOUT);
        matches!(
            tokio::time::timeout(limit, client.check(request)).await,
            Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving
        )
    }

    /// Makes the balancer's set `desired`; false once the channel is gone.
    async fn apply(
        &self,
        changes: &Sender<Change<String, Endpoint>>,
        current: &mut BTreeSet<String>,
        desired: Vec<(String, Endpoint)>,
    ) -> bool {
        let wanted: BTreeSet<String> = desired.iter().map(|(url, _)| url.clone()).collect();
        for gone in current.difference(&wanted) {
            tracing::info!(service = self.service, endpoint = %gone, "upstream endpoint out of rotation");
            if changes.send(Change::Remove(gone.clone())).await.is_err() {
                return false;
            }
        }
        for (url, endpoint) in desired {
            if current.contains(&url) {
                continue;
            }
            tracing::info!(service = self.service, endpoint = %url, "upstream endpoint in rotation");
            if changes.send(Change::Insert(url, endpoint)).await.is_err() {
                return false;
            }
        }
        *current = wanted;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_several_endpoints_parse_and_literals_are_fixed() {
        let parsed = targets(" http://127.0.0.1:7003 , http://booking:7003,").unwrap();
        assert_eq!(parsed.len(), 2);
        assert!(parsed[0].is_fixed());
        assert_eq!((parsed[1].host.as_str(), parsed[1].port), ("booking", 7003));
        assert!(!parsed[1].is_fixed());
        assert_eq!(parsed[1].url_of("10.0.0.5:7003".parse().unwrap()), "http://10.0.0.5:7003");
        assert_eq!(
            Target::parse("http://[::1]:7003").unwrap().url_of("[::1]:7003".parse().unwrap()),
            "http://[::1]:7003"
        );
        assert!(Target::parse("http://[::1]:7003").unwrap().is_fixed());
    }

    #[test]
    fn an_empty_or_malformed_list_is_refused() {
        assert!(targets("").is_err());
        assert!(targets(" , ").is_err());
        assert!(targets("not a url").is_err());
        assert!(targets("127.0.0.1:7003").is_err(), "no scheme");
    }
}
