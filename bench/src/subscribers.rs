//! Connected users: many WebSocket connections to one or more gateways
//! (graphql-transport-ws), each holding one `seatMap(showtimeId)` subscription, counting
//! every seat change it is sent and how late it arrives (receive time minus the
//! change's `changedAt`).
//!
//! A source port is picked when the socket is bound, before it knows its destination,
//! so one loopback address has ~28,000 of them whatever the gateways: the connections
//! bind their source to 127.0.0.1, 127.0.0.2, ... in turn.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::stats::Samples;

/// Coalesced: a subscriber that fell behind during the rush gets the changes waiting
/// for it in one message (as a real seat-map client would ask for).
const SUBSCRIBE: &str = "subscription($id: ID!) { seatMap(showtimeId: $id, coalesce: true) { \
     resync changes { seatId state changedAt } } }";
/// Connections per source address: well under the ~28,000 ephemeral ports of one.
const PER_SOURCE_ADDRESS: usize = 10_000;
/// Handshakes in flight at once: the gateway's accept queue is finite.
const CONCURRENT_HANDSHAKES: usize = 256;

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Log {
    pub showtime: usize,
    /// Which gateway (index into the ones `open` was given) it is connected to.
    pub gateway: usize,
    pub changes: usize,
    /// `next` messages: fewer than `changes` when changes were coalesced.
    pub messages: usize,
    pub resyncs: usize,
    /// Seats this subscriber was told became BOOKED.
    pub booked: HashSet<String>,
    pub latency_ms: Samples,
    /// Protocol errors, error messages, a connection closed before the end.
    pub failures: Vec<String>,
}

/// The open subscriptions. `stop` closes them and returns what each one saw.
pub struct Subscribers {
    tasks: JoinSet<Log>,
    /// The subscribers' own runtime, as if they ran on client machines: their sockets'
    /// wake-ups must not queue ahead of the services this process embeds (one runtime
    /// for both starved booking and payment while 1.8M changes arrived).
    runtime: Option<tokio::runtime::Runtime>,
    stop: watch::Sender<bool>,
    /// Per showtime index: subscribers that have received at least one change.
    heard: Arc<Vec<AtomicUsize>>,
    /// Updates received by all subscribers together.
    delivered: Arc<AtomicUsize>,
    pub per_showtime: Vec<usize>,
    pub failed_to_open: usize,
}

/// Opens `count` subscriptions spread round-robin over `showtimes` (index i watches
/// `showtimes[i % len]`, after the first `focused` which all watch `showtimes[0]`) and
/// over `gateways` (index i connects to `gateways[i % len]`).
pub async fn open(
    gateways: &[SocketAddr],
    showtimes: &[String],
    count: usize,
    focused: usize,
) -> anyhow::Result<Subscribers> {
    anyhow::ensure!(!showtimes.is_empty(), "no showtime to watch");
    anyhow::ensure!(!gateways.is_empty(), "no gateway to connect to");
    let (stop, stopped) = watch::channel(false);
    let heard: Arc<Vec<AtomicUsize>> = Arc::new(showtimes.iter().map(|_| AtomicUsize::new(0)).collect());
    let subscribed = Arc::new(AtomicUsize::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let handshakes = Arc::new(Semaphore::new(CONCURRENT_HANDSHAKES));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("subscribers")
        .enable_all()
        .build()
        .context("cannot start the subscribers' runtime")?;
    let mut tasks = JoinSet::new();
    let mut per_showtime = vec![0; showtimes.len()];
    for i in 0..count {
        let which = if i < focused { 0 } else { i % showtimes.len() };
        per_showtime[which] += 1;
        let (gateway_index, gateway) = (i % gateways.len(), gateways[i % gateways.len()]);
        let octet = u8::try_from(1 + i / PER_SOURCE_ADDRESS).context("too many connections for 127.0.0.x")?;
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet));
        let (showtime, stopped, heard, subscribed, handshakes, delivered) = (
            showtimes[which].clone(),
            stopped.clone(),
            heard.clone(),
            subscribed.clone(),
            handshakes.clone(),
            delivered.clone(),
        );
        tasks.spawn_on(
            async move {
                let mut log = Log { showtime: which, gateway: gateway_index, ..Log::default() };
                let permit = handshakes.acquire_owned().await;
                match connect(gateway, source, &showtime).await {
                    Ok(socket) => {
                        drop(permit);
                        subscribed.fetch_add(1, Ordering::Relaxed);
                        listen(socket, &mut log, stopped, &heard[which], &delivered).await;
                    }
                    Err(error) => log.failures.push(format!("open: {error:#}")),
                }
                log
            },
            runtime.handle(),
        );
    }
    // Wait until every connection is subscribed or has failed.
    let mut failed_to_open = 0;
    loop {
        let done = subscribed.load(Ordering::Relaxed);
        while let Some(finished) = tasks.try_join_next() {
            if finished.map(|log| !log.failures.is_empty()).unwrap_or(true) {
                failed_to_open += 1;
            }
        }
        if done + failed_to_open >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Subscribers { tasks, runtime: Some(runtime), stop, heard, delivered, per_showtime, failed_to_open })
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn connect(gateway: SocketAddr, source: IpAddr, showtime: &str) -> anyhow::Result<Socket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("cannot bind {source}"))?;
    let stream = socket.connect(gateway).await.context("connect")?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{gateway}/graphql").into_client_request()?;
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut ws, _) =
        tokio_tungstenite::client_async(request, stream).await.context("WebSocket handshake")?;
    ws.send(Message::text(json!({ "type": "connection_init", "payload": {} }).to_string())).await?;
    loop {
        let message = ws.next().await.context("closed before connection_ack")??;
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text)?;
            match value["type"].as_str() {
                Some("connection_ack") => break,
                Some("ping") => ws.send(Message::text(r#"{"type":"pong"}"#)).await?,
                _ => anyhow::bail!("unexpected before connection_ack: {text}"),
            }
        }
    }
    let subscribe = json!({
        "id": "1",
        "type": "subscribe",
        "payload": { "query": SUBSCRIBE, "variables": { "id": showtime } },
    });
    ws.send(Message::text(subscribe.to_string())).await?;
    Ok(ws)
}

async fn listen(
    mut ws: Socket,
    log: &mut Log,
    mut stopped: watch::Receiver<bool>,
    heard: &AtomicUsize,
    delivered: &AtomicUsize,
) {
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = stopped.changed() => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                log.failures.push("closed by the gateway".to_owned());
                return;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                log.failures.push(format!("read: {error}"));
                return;
            }
        };
        let received = chrono::Utc::now();
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            log.failures.push("a message that is not JSON".to_owned());
            continue;
        };
        match value["type"].as_str() {
            Some("next") => {
                let update = &value["payload"]["data"]["seatMap"];
                if update.is_null() {
                    log.failures.push(format!("next without data: {text}"));
                    continue;
                }
                if log.changes == 0 && log.resyncs == 0 {
                    heard.fetch_add(1, Ordering::Relaxed);
                }
                log.messages += 1;
                if update["resync"] == true {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    log.resyncs += 1;
                    continue;
                }
                let changes = update["changes"].as_array().map(Vec::as_slice).unwrap_or_default();
                if changes.is_empty() {
                    log.failures.push(format!("an update without changes: {text}"));
                    continue;
                }
                delivered.fetch_add(changes.len(), Ordering::Relaxed);
                for change in changes {
                    log.changes += 1;
                    if change["state"] == "BOOKED" {
                        log.booked.insert(change["seatId"].as_str().unwrap_or_default().to_owned());
                    }
                    if let Some(at) = change["changedAt"]
                        .as_str()
                        .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                    {
                        log.latency_ms.push((received - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                    }
                }
            }
            Some("ping") => {
                if ws.send(Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                    log.failures.push("cannot answer ping".to_owned());
                    return;
                }
            }
            Some("pong") => {}
            _ => log.failures.push(format!("unexpected: {text}")),
        }
    }
    let _ = ws.close(None).await;
}

impl Subscribers {
    /// Subscribers of showtime `index` that have received something.
    pub fn heard(&self, index: usize) -> usize {
        self.heard[index].load(Ordering::Relaxed)
    }

    /// Waits until every open subscriber of showtime `index` has received something.
    pub async fn wait_heard(&self, index: usize, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        while self.heard(index) < self.per_showtime[index].saturating_sub(self.failed_to_open) {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// Connections still open.
    pub fn open_now(&self) -> usize {
        self.tasks.len()
    }

    /// Waits until no update has arrived for `quiet`, or `deadline` passed; returns
    /// whether it went quiet.
    pub async fn wait_quiet(&self, quiet: Duration, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        let mut last = self.delivered.load(Ordering::Relaxed);
        let mut since = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.delivered.load(Ordering::Relaxed);
            if now != last {
                (last, since) = (now, tokio::time::Instant::now());
            } else if since.elapsed() >= quiet {
                return true;
            }
            if tokio::time::Instant::now() >= until {
                return false;
            }
        }
    }

    /// Closes every connection and collects the logs.
    pub async fn stop(mut self) -> Vec<Log> {
        let _ = self.stop.send(true);
        let mut logs = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(log) = done {
                logs.push(log);
            }
        }
        logs
    }
}

impl Drop for Subscribers {
    /// A runtime may not be dropped inside another one's task; its (finished or
    /// aborted) tasks need no waiting for.
    fn drop(&mut self) {
        self.tasks.abort_all();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Per showtime: did every subscriber get every change? A subscriber missed changes
/// when it saw fewer than the most any subscriber of its showtime saw, saw a resync,
/// or was not told about a seat `must_book` says was booked.
pub fn judge(logs: &mut [Log], must_book: &HashMap<usize, HashSet<String>>) -> Value {
    let mut most: HashMap<usize, usize> = HashMap::new();
    for log in logs.iter() {
        let entry = most.entry(log.showtime).or_default();
        *entry = (*entry).max(log.changes);
    }
    let (mut missed, mut failed, mut delivered, mut messages) = (0, 0, 0, 0);
    let mut latency = Samples::default();
    let mut per_gateway: BTreeMap<usize, Gateway> = BTreeMap::new();
    let mut failure_examples = Vec::new();
    for log in logs.iter_mut() {
        delivered += log.changes;
        messages += log.messages;
        let complete = log.changes == most[&log.showtime]
            && log.resyncs == 0
            && must_book.get(&log.showtime).is_none_or(|seats| seats.is_subset(&log.booked));
        if !complete {
            missed += 1;
        }
        let gateway = per_gateway.entry(log.gateway).or_default();
        gateway.subscribers += 1;
        gateway.delivered += log.changes;
        gateway.missed += usize::from(!complete);
        gateway.latency.extend(log.latency_ms.clone());
        if !log.failures.is_empty() {
            failed += 1;
            if failure_examples.len() < 5 {
                failure_examples.push(log.failures[0].clone());
            }
        }
        latency.extend(std::mem::take(&mut log.latency_ms));
    }
    json!({
        "subscribers": logs.len(),
        "changes_per_showtime": most,
        "delivered": delivered,
        "messages": messages,
        "subscribers_missing_changes": missed,
        "subscribers_with_failures": failed,
        "failure_examples": failure_examples,
        "delivery_latency": latency.summary(),
        "per_gateway": per_gateway.into_values().map(|mut g| json!({
            "subscribers": g.subscribers,
            "delivered": g.delivered,
            "subscribers_missing_changes": g.missed,
            "delivery_latency": g.latency.summary(),
        })).collect::<Vec<_>>(),
    })
}

/// One gateway's share of the deliveries.
#[derive(Default)]
struct Gateway {
    subscribers: usize,
    delivered: usize,
    missed: usize,
    latency: Samples,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(gateway: usize, changes: usize, latency_ms: &[f64]) -> Log {
        let mut samples = Samples::default();
        for ms in latency_ms {
            samples.push(*ms);
        }
        Log { showtime: 0, gateway, changes, messages: changes, latency_ms: samples, ..Log::default() }
    }

    #[test]
    fn each_gateway_is_judged_on_its_own_subscribers() {
        // Gateway 1's second subscriber missed one of the showtime's three changes.
        let mut logs =
            vec![log(0, 3, &[10.0, 20.0, 30.0]), log(1, 3, &[40.0, 50.0, 60.0]), log(1, 2, &[70.0, 80.0])];
        let judged = judge(&mut logs, &HashMap::new());
        assert_eq!(judged["subscribers_missing_changes"], 1);
        assert_eq!(judged["delivered"], 8);
        let per_gateway = judged["per_gateway"].as_array().cloned().unwrap_or_default();
        assert_eq!(per_gateway.len(), 2);
        assert_eq!(per_gateway[0]["subscribers"], 1);
        assert_eq!(per_gateway[0]["subscribers_missing_changes"], 0);
        assert_eq!(per_gateway[0]["delivery_latency"]["max_ms"], 30.0);
        assert_eq!(per_gateway[1]["subscribers"], 2);
        assert_eq!(per_gateway[1]["delivered"], 5);
        assert_eq!(per_gateway[1]["subscribers_missing_changes"], 1);
        assert_eq!(per_gateway[1]["delivery_latency"]["max_ms"], 80.0);
        assert_eq!(judged["delivery_latency"]["count"], 8);
    }
}
