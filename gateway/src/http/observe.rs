//! Request ids and per-request metrics.

use std::time::Instant;

use async_graphql::Value;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tower_http::request_id::{MakeRequestId, RequestId};

use crate::metrics::Metrics;

/// Kong's correlation-id plugin header.
const KONG_REQUEST_ID: &str = "kong-request-id";

/// Used when the caller sent no `X-Request-ID`: Kong's id when Kong sent one, so
/// the gateway's logs join Kong's; a new UUID otherwise.
#[derive(Clone, Copy, Default)]
pub struct KongOrNewRequestId;

impl MakeRequestId for KongOrNewRequestId {
    fn make_request_id<B>(&mut self, request: &axum::http::Request<B>) -> Option<RequestId> {
        let kong = request.headers().get(KONG_REQUEST_ID).filter(|v| !v.is_empty() && v.len() <= 200);
        let id = match kong {
            Some(id) => id.clone(),
            None => HeaderValue::try_from(uuid::Uuid::new_v4().to_string()).ok()?,
        };
        Some(RequestId::new(id))
    }
}

/// The `extensions.code` of every error in a GraphQL response, left on the HTTP
/// response for `count` to tally.
#[derive(Clone, Debug, Default)]
pub struct ErrorCodes(Vec<String>);

impl ErrorCodes {
    pub fn push(&mut self, code: Option<&Value>) {
        if let Some(Value::String(code)) = code {
            self.0.push(code.clone());
        }
    }
}

/// Counts every HTTP answer by route and status, its latency, and its GraphQL
/// error codes.
pub async fn count(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let route = route(request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics.http_request(route, response.status().as_u16(), started.elapsed());
    if let Some(ErrorCodes(codes)) = response.extensions().get::<ErrorCodes>() {
        for code in codes {
            metrics.graphql_error(code);
        }
    }
    response
}

/// A fixed label per served path: raw paths would let any client mint new series.
fn route(path: &str) -> &'static str {
    match path {
        "/graphql" => "/graphql",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        _ => "other",
    }
}
