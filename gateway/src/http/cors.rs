//! CORS for front ends hosted on another origin (`gateway.cors.allowed_origins`), by
//! tower-http's `CorsLayer`. A request from an origin that is not listed, or without
//! an `Origin`, passes by untouched: no CORS header at all (tower-http alone would
//! still send its fixed allow-methods and allow-headers), and an `OPTIONS` is the
//! router's 405 as without CORS. With no origin configured nothing changes.
//!
//! The rules follow Kong's `cors` plugin (kong.yml), which answers instead behind Kong.
//! No credentials: tokens travel in `Authorization`, never in cookies. WebSocket
//! upgrades are outside CORS; their token comes in `connection_init` (`ws`).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tower::{Layer as _, ServiceExt as _};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::settings::{AllowedOrigin, CorsSettings};

/// Browsers may cache a preflight's answer this long, as Kong's `max_age`.
const MAX_AGE: Duration = Duration::from_secs(3600);

/// What a page may send: GraphQL over HTTP (`Accept`, `Content-Type`), a token, a
/// request id to correlate, and a W3C trace context the gateway continues. No
/// `Idempotency-Key`: idempotency keys travel in the GraphQL input.
const ALLOWED_HEADERS: [HeaderName; 5] = [
    header::ACCEPT,
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
];

/// What a page may read beyond the CORS-safelisted headers: when to retry (429, 503)
/// and the request id to quote.
const EXPOSED_HEADERS: [HeaderName; 2] = [header::RETRY_AFTER, HeaderName::from_static("x-request-id")];

#[derive(Clone)]
pub(super) struct Cors {
    /// `None`: CORS is off.
    layer: Option<CorsLayer>,
    any: bool,
    origins: Vec<HeaderValue>,
}

impl Cors {
    pub(super) fn new(settings: &CorsSettings) -> Self {
        let any = settings.allowed_origins.contains(&AllowedOrigin::Any);
        let origins: Vec<HeaderValue> = settings
            .allowed_origins
            .iter()
            .filter_map(|origin| match origin {
                AllowedOrigin::Exact(value) => Some(value.clone()),
                AllowedOrigin::Any => None,
            })
            .collect();
        let layer = (any || !origins.is_empty()).then(|| {
            let allow_origin = if any { AllowOrigin::any() } else { AllowOrigin::list(origins.clone()) };
            CorsLayer::new()
                .allow_origin(allow_origin)
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers(ALLOWED_HEADERS)
                .expose_headers(EXPOSED_HEADERS)
                .max_age(MAX_AGE)
        });
        Self { layer, any, origins }
    }

    fn layer_for(&self, request: &Request) -> Option<&CorsLayer> {
        let origin = request.headers().get(header::ORIGIN)?;
        let layer = self.layer.as_ref()?;
        (self.any || self.origins.contains(origin)).then_some(layer)
    }
}

/// The middleware: requests from an allowed origin go through the `CorsLayer`
/// (a preflight is answered there), all others straight on.
pub(super) async fn apply(State(cors): State<Cors>, request: Request, next: Next) -> Response {
    let Some(layer) = cors.layer_for(&request) else { return next.run(request).await };
    match layer.layer(next).oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}
