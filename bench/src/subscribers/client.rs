//! One process's share of the subscribers: the WebSocket clients themselves, run by a
//! subscriber host (`host.rs`).

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use super::Plan;
use super::host::Progress;
use crate::stats::Samples;

/// Coalesced: a subscriber that fell behind during the rush gets the changes waiting
/// for it in one message (as a real seat-map client would ask for).
const SUBSCRIBE: &str = "subscription($id: ID!) { seatMap(showtimeId: $id, coalesce: true) { \
     resync changes { seatId state changedAt } } }";
/// A handshake the gateway never finishes is a failure to open, not a run that hangs.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Closing politely must not hold up the stop when a gateway stopped reading.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Log {
    pub showtime: usize,
    /// Which gateway (index into the plan's) it is connected to.
    pub gateway: usize,
    pub changes: usize,
    /// `next` messages: fewer than `changes` when changes were coalesced.
    pub messages: usize,
    pub resyncs: usize,
    /// Seats this subscriber was told became BOOKED.
    pub booked: HashSet<String>,
    pub latency_ms: Samples,
    /// Protocol errors, error messages, a connection closed before the end; a failure
    /// to open starts with "open".
    pub failures: Vec<String>,
}

/// Counters every connection of the process adds to, read for the progress reports.
#[derive(Default)]
struct Counters {
    subscribed: AtomicUsize,
    failed_to_open: AtomicUsize,
    /// Subscribed and not yet ended.
    open: AtomicUsize,
    /// Updates received by all subscribers together.
    delivered: AtomicUsize,
}

/// The open subscriptions. `stop` closes them and returns what each one saw.
pub struct Connections {
    tasks: JoinSet<Log>,
    stop: watch::Sender<bool>,
    counters: Arc<Counters>,
    /// Per showtime index: subscribers that have received at least one change.
    heard: Arc<Vec<AtomicUsize>>,
}

impl Connections {
    /// Starts opening the subscriptions `share` of `plan`, at most `handshakes` at a
    /// time (the gateways' accept queues are finite); `progress` tells how far it got.
    pub fn open(plan: &Plan, share: Range<usize>, handshakes: usize) -> anyhow::Result<Self> {
        let (stop, stopped) = watch::channel(false);
        let heard: Arc<Vec<AtomicUsize>> =
            Arc::new(plan.showtimes.iter().map(|_| AtomicUsize::new(0)).collect());
        let counters = Arc::new(Counters::default());
        let handshakes = Arc::new(Semaphore::new(handshakes.max(1)));
        let mut tasks = JoinSet::new();
        for index in share {
            let slot = plan.slot(index)?;
            let gateway = plan.gateways[slot.gateway];
            let (showtime, stopped, heard, counters, handshakes) = (
                plan.showtimes[slot.showtime].clone(),
                stopped.clone(),
                heard.clone(),
                counters.clone(),
                handshakes.clone(),
            );
            tasks.spawn(async move {
                let mut log = Log { showtime: slot.showtime, gateway: slot.gateway, ..Log::default() };
                let permit = handshakes.acquire_owned().await;
                let opened =
                    tokio::time::timeout(OPEN_TIMEOUT, connect(gateway, slot.source.into(), &showtime))
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("no subscription after {OPEN_TIMEOUT:?}")));
                drop(permit);
                match opened {
                    Ok(socket) => {
                        counters.subscribed.fetch_add(1, Ordering::Relaxed);
                        counters.open.fetch_add(1, Ordering::Relaxed);
                        listen(socket, &mut log, stopped, &heard[slot.showtime], &counters.delivered).await;
                        counters.open.fetch_sub(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        counters.failed_to_open.fetch_add(1, Ordering::Relaxed);
                        log.failures.push(format!("open: {error:#}"));
                    }
                }
                log
            });
        }
        Ok(Self { tasks, stop, counters, heard })
    }

    pub fn progress(&self) -> Progress {
        let count = |counter: &AtomicUsize| counter.load(Ordering::Relaxed);
        Progress {
            subscribed: count(&self.counters.subscribed),
            failed_to_open: count(&self.counters.failed_to_open),
            open: count(&self.counters.open),
            heard: self.heard.iter().map(count).collect(),
            delivered: count(&self.counters.delivered),
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

/// A server message of graphql-transport-ws, as far as a `seatMap` subscriber reads it.
#[derive(Deserialize)]
struct ServerMessage<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    payload: Option<NextPayload<'a>>,
}

#[derive(Deserialize)]
struct NextPayload<'a> {
    #[serde(borrow)]
    data: Option<SeatMapData<'a>>,
}

#[derive(Deserialize)]
struct SeatMapData<'a> {
    #[serde(rename = "seatMap", borrow)]
    seat_map: Option<SeatMapUpdate<'a>>,
}

#[derive(Deserialize)]
struct SeatMapUpdate<'a> {
    resync: Option<bool>,
    #[serde(borrow)]
    changes: Option<Vec<SeatChange<'a>>>,
}

#[derive(Deserialize)]
struct SeatChange<'a> {
    #[serde(rename = "seatId")]
    seat_id: &'a str,
    state: &'a str,
    #[serde(rename = "changedAt")]
    changed_at: &'a str,
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
        // Typed and borrowing: the subscriber hosts share the cores with what they
        // measure, so a message costs them as little as it can.
        let Ok(message) = serde_json::from_str::<ServerMessage<'_>>(&text) else {
            // An `error` message (its payload is a list) lands here too.
            log.failures.push(format!("unexpected: {text}"));
            continue;
        };
        match message.kind {
            "next" => {
                let Some(update) = message.payload.and_then(|p| p.data).and_then(|d| d.seat_map) else {
                    log.failures.push(format!("next without data: {text}"));
                    continue;
                };
                if log.changes == 0 && log.resyncs == 0 {
                    heard.fetch_add(1, Ordering::Relaxed);
                }
                log.messages += 1;
                if update.resync == Some(true) {
                    delivered.fetch_add(1, Ordering::Relaxed);
                    log.resyncs += 1;
                    continue;
                }
                let changes = update.changes.unwrap_or_default();
                if changes.is_empty() {
                    log.failures.push(format!("an update without changes: {text}"));
                    continue;
                }
                delivered.fetch_add(changes.len(), Ordering::Relaxed);
                for change in &changes {
                    log.changes += 1;
                    if change.state == "BOOKED" {
                        log.booked.insert(change.seat_id.to_owned());
                    }
                    // RFC 3339's own parser: the generic one (`str::parse`) was the
                    // subscriber hosts' costliest function.
                    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(change.changed_at) {
                        let late = received.signed_duration_since(at.with_timezone(&chrono::Utc));
                        log.latency_ms.push(late.num_microseconds().unwrap_or(0) as f64 / 1000.0);
                    }
                }
            }
            "ping" => {
                if ws.send(Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                    log.failures.push("cannot answer ping".to_owned());
                    return;
                }
            }
            "pong" => {}
            _ => log.failures.push(format!("unexpected: {text}")),
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ws.close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_messages_parse_into_what_a_subscriber_reads() {
        let next = r#"{"type":"next","id":"1","payload":{"data":{"seatMap":{"resync":false,"changes":[
            {"seatId":"A-1","state":"BOOKED","changedAt":"2026-12-05T12:00:00.123Z"}]}}}}"#;
        let message: ServerMessage<'_> = serde_json::from_str(next).unwrap();
        assert_eq!(message.kind, "next");
        let update = message.payload.unwrap().data.unwrap().seat_map.unwrap();
        assert_eq!(update.resync, Some(false));
        let changes = update.changes.unwrap();
        assert_eq!((changes[0].seat_id, changes[0].state), ("A-1", "BOOKED"));
        assert!(chrono::DateTime::parse_from_rfc3339(changes[0].changed_at).is_ok());

        let resync =
            r#"{"type":"next","id":"1","payload":{"data":{"seatMap":{"resync":true,"changes":null}}}}"#;
        let update =
            serde_json::from_str::<ServerMessage<'_>>(resync).unwrap().payload.unwrap().data.unwrap();
        assert_eq!(update.seat_map.unwrap().resync, Some(true));

        let ping: ServerMessage<'_> = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert!(ping.kind == "ping" && ping.payload.is_none());
        // An error's payload is a list: not a message this subscriber can read.
        assert!(
            serde_json::from_str::<ServerMessage<'_>>(r#"{"type":"error","id":"1","payload":[]}"#).is_err()
        );
    }
}
