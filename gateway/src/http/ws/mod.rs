//! GraphQL subscriptions over WebSocket on `GET /graphql` with an upgrade:
//! `graphql-transport-ws` (and the legacy `graphql-ws` subprotocol).
//!
//! A token, when the client has one, comes in the `connection_init` payload as
//! `{"Authorization": "Bearer <token>"}` (browsers cannot set headers on a
//! WebSocket), or else in the upgrade request's `Authorization` header. An invalid
//! one closes the connection, as over HTTP it is refused rather than downgraded to
//! anonymous.

use async_graphql::Data;
use async_graphql::futures_util::stream::SplitSink;
use async_graphql::futures_util::{SinkExt, StreamExt, sink};
use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use axum::extract::{FromRequestParts, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::net::IpAddr;

use tokio::sync::{mpsc, watch};

use super::AppState;
use super::admit::{authenticate, rate_limited};
use super::negotiate::ResponseMedia;
use crate::live::ConnectionQuota;
use crate::ratelimit::{Caller, Verdict};
use lane::Lane;

mod lane;

const WS_BUFFER_BYTES: usize = 4 * 1024;
/// The largest client message (a `subscribe` carries a document), as
/// `gateway.max_body_bytes`' default is for HTTP.
const WS_MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// `client` spends one of its address's rate-limit budget per connection; the
/// subscriptions on it are bounded by `max_subscriptions_per_connection`.
pub async fn upgrade(state: AppState, mut parts: Parts, client: IpAddr) -> Response {
    let Ok(protocol) = GraphQLProtocol::from_request_parts(&mut parts, &()).await else {
        let message = "Sec-WebSocket-Protocol must be graphql-transport-ws";
        return (StatusCode::BAD_REQUEST, message).into_response();
    };
    let modern = offers_graphql_transport_ws(&parts.headers);
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    match state.limiter.check(&Caller::Address(client), 1).await {
        Ok(Verdict::Allowed) => {}
        Ok(Verdict::Limited { retry_after_seconds }) => {
            state.metrics.rate_limited.increment(1);
            return rate_limited(ResponseMedia::Json, retry_after_seconds);
        }
        // Fail open, as for HTTP requests.
        Err(error) => tracing::warn!(error = format!("{error:#}"), "rate limit not checked"),
    }
    let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        // tungstenite's defaults: a 128 KiB read buffer, zero-filled on first read, so
        // ~130 KB resident per idle connection; and 64 MiB messages one client could
        // make the gateway buffer. Protocol messages are small.
        .read_buffer_size(WS_BUFFER_BYTES)
        .write_buffer_size(WS_BUFFER_BYTES)
        .max_message_size(WS_MAX_MESSAGE_BYTES)
        .max_frame_size(WS_MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(state, socket, (protocol, modern), header))
}

/// Serves the connection until the client leaves or the gateway shuts down; then it
/// closes with 1001 (going away), so the client reconnects to another replica.
///
/// Subscriptions of `graphql-transport-ws` are served by `lane` from shared executions
/// (`crate::fanout`); everything else (the handshake, pings, queries and mutations
/// over the socket, the legacy protocol) by async-graphql. Both write through one
/// queue that `write` drains into the socket.
async fn serve(
    state: AppState,
    socket: WebSocket,
    (protocol, modern): (GraphQLProtocol, bool),
    header: Option<String>,
) {
    let schema = state.schema.clone();
    let closing = state.closing.clone();
    let quota = ConnectionQuota::new(state.options.max_subscriptions_per_connection);
    let (sink, stream) = socket.split();
    let (out, queue) = mpsc::channel(OUT_QUEUE);
    let (acked, acknowledged) = watch::channel(false);
    let mut lane = Lane::new(state.shared.clone(), quota.clone(), out.clone(), acknowledged, modern);
    // Ending the input ends the session and drops its subscriptions.
    let input = stream
        .take_until(closing.clone().cancelled_owned())
        .filter_map(move |message| std::future::ready(lane.route(message)));
    let graphql_out = sink::unfold(out.clone(), move |out, message: Message| {
        if is_ack(&message) {
            acked.send_replace(true);
        }
        async move { out.send(message).await.map(|()| out) }
    });
    let session = async move {
        GraphQLWebSocket::new_with_pair(graphql_out, input, schema, protocol)
            .on_connection_init(move |payload| connection_data(state, header, quota, payload))
            .serve()
            .await;
        if closing.is_cancelled() {
            let frame = CloseFrame { code: close_code::AWAY, reason: "the server is shutting down".into() };
            // The client may be gone already; nothing is left to do either way.
            let _ = out.send(Message::Close(Some(frame))).await;
        }
    };
    // The session ends first (its input ends); the writer then drains what is queued.
    tokio::join!(session, write(sink, queue));
}

/// Messages waiting for one connection's socket: a member of a shared subscription
/// waits here when its client reads slowly, and falls behind its group (then resyncs)
/// rather than making the gateway buffer without bound.
const OUT_QUEUE: usize = 64;

/// Writes the queued messages, flushing once per burst: a subscriber behind by ten
/// updates costs one write, not ten.
async fn write(mut sink: SplitSink<WebSocket, Message>, mut queue: mpsc::Receiver<Message>) {
    while let Some(message) = queue.recv().await {
        if sink.feed(message).await.is_err() {
            return;
        }
        while let Ok(message) = queue.try_recv() {
            if sink.feed(message).await.is_err() {
                return;
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
}

/// Whether the protocol async-graphql chose (`GraphQLProtocol`: the first one offered
/// that it speaks) is `graphql-transport-ws` rather than the legacy `graphql-ws`.
fn offers_graphql_transport_ws(headers: &HeaderMap) -> bool {
    let offered =
        headers.get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok()).unwrap_or_default();
    offered
        .split(',')
        .map(str::trim)
        .find_map(|name| name.parse::<WebSocketProtocols>().ok())
        .is_some_and(|protocol| protocol == WebSocketProtocols::GraphQLWS)
}

fn is_ack(message: &Message) -> bool {
    let Message::Text(text) = message else { return false };
    // Only the handshake's short answer needs parsing; updates are long.
    text.len() < 64
        && serde_json::from_str::<serde_json::Value>(text.as_str())
            .is_ok_and(|v| v["type"] == "connection_ack")
}

/// The per-connection data every subscription of the connection sees.
async fn connection_data(
    state: AppState,
    header: Option<String>,
    quota: ConnectionQuota,
    payload: serde_json::Value,
) -> async_graphql::Result<Data> {
    let in_payload = ["Authorization", "authorization"]
        .iter()
        .find_map(|key| payload.get(key))
        .and_then(serde_json::Value::as_str);
    let viewer = authenticate(&state, in_payload.or(header.as_deref()))
        .await
        .map_err(|e| async_graphql::Error { message: e.message, source: None, extensions: e.extensions })?;
    let mut data = Data::default();
    data.insert(viewer);
    data.insert(state.feeds.clone());
    // Shared with `lane`: one budget for the connection's subscriptions however served.
    data.insert(quota);
    Ok(data)
}
