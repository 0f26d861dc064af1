//! `GET /.well-known/marquee/ticket-keys.json`: the public keys that verify ticket
//! codes, for scanners and third parties that do not speak GraphQL (the same list as
//! `ticketKeys`). Public and cacheable for a short while: a new key is listed well
//! before it signs anything.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::schema::TicketKey;

pub const TICKET_KEYS_PATH: &str = "/.well-known/marquee/ticket-keys.json";

pub async fn ticket_keys(State(state): State<AppState>) -> Response {
    let listed = match state.upstreams.ticket_keys().await {
        Ok(keys) => keys,
        Err(error) => {
            tracing::warn!(error = ?error, "cannot list ticket keys");
            let body = serde_json::json!({ "error": "ticket keys are unavailable; retry" });
            return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
        }
    };
    let keys: Vec<serde_json::Value> = listed
        .into_iter()
        .filter_map(|key| TicketKey::from_proto(key).ok())
        .map(|key| {
            serde_json::json!({
                "id": key.id.to_string(),
                "algorithm": key.algorithm,
                "publicKey": key.public_key,
                "validFrom": key.valid_from.to_rfc3339(),
                "validUntil": key.valid_until.to_rfc3339(),
            })
        })
        .collect();
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(serde_json::json!({ "keys": keys })))
        .into_response()
}
