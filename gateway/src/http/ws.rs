//! GraphQL subscriptions over WebSocket on `GET /graphql` with an upgrade:
//! `graphql-transport-ws` (and the legacy `graphql-ws` subprotocol).
//!
//! A token, when the client has one, comes in the `connection_init` payload as
//! `{"Authorization": "Bearer <token>"}` (browsers cannot set headers on a
//! WebSocket), or else in the upgrade request's `Authorization` header. An invalid
//! one closes the connection, as over HTTP it is refused rather than downgraded to
//! anonymous.

use async_graphql::Data;
use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::{FromRequestParts, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{AppState, authenticate};

pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

pub async fn upgrade(state: AppState, mut parts: Parts) -> Response {
    let Ok(protocol) = GraphQLProtocol::from_request_parts(&mut parts, &()).await else {
        let message = "Sec-WebSocket-Protocol must be graphql-transport-ws";
        return (StatusCode::BAD_REQUEST, message).into_response();
    };
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| {
        let schema = state.schema.clone();
        GraphQLWebSocket::new(socket, schema, protocol)
            .on_connection_init(move |payload| connection_data(state, header, payload))
            .serve()
    })
}

/// The per-connection data every subscription of the connection sees.
async fn connection_data(
    state: AppState,
    header: Option<String>,
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
    Ok(data)
}
