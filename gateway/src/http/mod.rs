//! The gateway's HTTP surface: the router and its layers (metrics, request ids,
//! tracing, the body limit), the state every handler shares, and health, readiness
//! (the upstreams and the gateway's own Redis) and metrics. GraphQL over HTTP
//! (`POST`/`GET /graphql`, GraphiQL) is `graphql`, subscriptions over WebSocket
//! (`GET /graphql` with an upgrade) are `ws`, who may call (tokens, rate limits) is
//! `admit`, and how answers are written is `render`. Every other path is the web app
//! (`web`).

mod admit;
mod cors;
mod documents;
mod graphql;
mod negotiate;
mod observe;
mod render;
mod web;
mod well_known;
mod ws;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use marquee_auth::TokenKeys;
use marquee_kit::shutdown::Shutdown;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use self::graphql::{graphql_get, graphql_post};
use self::observe::KongOrNewRequestId;
use crate::denylist::Denylist;
use crate::fanout::SharedSubscriptions;
use crate::live::SeatFeeds;
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::schema::GatewaySchema;
use crate::settings::GatewaySettings;
use crate::upstream::Upstreams;

const GRAPHQL_PATH: &str = "/graphql";

/// What serving a request needs besides the schema.
#[derive(Clone)]
pub struct Services {
    pub keys: TokenKeys,
    pub denylist: Denylist,
    pub upstreams: Upstreams,
    pub feeds: SeatFeeds,
    pub limiter: RateLimiter,
    pub metrics: Metrics,
    /// Cancelled when the gateway starts shutting down.
    pub closing: Shutdown,
}

/// What every request reads, behind one `Arc`: axum clones the state for each request
/// and each middleware, and a copy of the fields (a channel per upstream, the
/// schemas, the limiter's connection, the metrics) was ~5% of the gateway's CPU.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    schema: GatewaySchema,
    /// `schema` with room for tools' introspection query (`schema::build_for_introspection`).
    introspection_schema: GatewaySchema,
    keys: Arc<TokenKeys>,
    denylist: Denylist,
    upstreams: Upstreams,
    feeds: SeatFeeds,
    /// Subscriptions over WebSocket, executed once per distinct request.
    shared: SharedSubscriptions,
    limiter: RateLimiter,
    metrics: Metrics,
    closing: Shutdown,
    options: Arc<Options>,
    /// Parsed documents by query text, shared by every request.
    documents: documents::Documents,
}

/// The `[gateway]` settings requests consult.
struct Options {
    graphiql: bool,
    introspection: bool,
    max_batch_size: usize,
    trust_forwarded_for: bool,
    max_subscriptions_per_connection: usize,
    web_dir: PathBuf,
    cors: cors::Cors,
}

impl AppState {
    pub fn new(
        (schema, introspection_schema): (GatewaySchema, GatewaySchema),
        services: Services,
        settings: &GatewaySettings,
    ) -> Self {
        let Services { keys, denylist, upstreams, feeds, limiter, metrics, closing } = services;
        let options = Options {
            graphiql: settings.graphiql,
            introspection: settings.introspection,
            max_batch_size: settings.max_batch_size,
            trust_forwarded_for: settings.trust_forwarded_for,
            max_subscriptions_per_connection: settings.max_subscriptions_per_connection,
            web_dir: settings.web_dir.clone(),
            cors: cors::Cors::new(&settings.cors),
        };
        let pace = std::time::Duration::from_millis(settings.subscription_pace_ms);
        let shared = SharedSubscriptions::new(schema.clone(), feeds.clone(), metrics.clone(), pace);
        Self(Arc::new(Shared {
            schema,
            introspection_schema,
            keys: Arc::new(keys),
            denylist,
            upstreams,
            feeds,
            shared,
            limiter,
            metrics,
            closing,
            options: Arc::new(options),
            documents: documents::Documents::default(),
        }))
    }
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let layers = ServiceBuilder::new()
        // Outermost first: every answer is counted, even a refused one.
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), observe::count))
        // The id exists before the trace span reads it; a caller's X-Request-ID is
        // kept, else Kong's Kong-Request-ID, else a new one.
        .layer(SetRequestIdLayer::x_request_id(KongOrNewRequestId))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO))
                // A 503 from /readyz is an answer, not a gateway fault.
                .on_failure(DefaultOnFailure::new().level(Level::WARN)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        // Inside the request id and metrics: a preflight is counted and carries its id.
        .layer(axum::middleware::from_fn_with_state(state.options.cors.clone(), cors::apply))
        .layer(SetResponseHeaderLayer::overriding(header::CONNECTION, close_after_refused_body))
        .layer(RequestBodyLimitLayer::new(max_body_bytes));
    Router::new()
        .route(GRAPHQL_PATH, get(graphql_get).post(graphql_post))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(well_known::TICKET_KEYS_PATH, get(well_known::ticket_keys))
        .merge(web::service(&state.options.web_dir))
        // The tower-http limit above is the one limit; axum's 2 MB default would be a second.
        .layer(DefaultBodyLimit::disable())
        .layer(layers)
        .with_state(state)
}

/// A body refused as too large is left unread, so hyper must drop the connection after
/// answering. Saying so in the answer keeps the client from pooling that connection and
/// sending its next request into a socket that is about to close.
fn close_after_refused_body<B>(response: &axum::http::Response<B>) -> Option<header::HeaderValue> {
    (response.status() == StatusCode::PAYLOAD_TOO_LARGE).then(|| header::HeaderValue::from_static("close"))
}

fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let request_id = request.extensions().get::<RequestId>().and_then(|id| id.header_value().to_str().ok());
    // The path only: a GET query string may carry variables, and variables may be secrets.
    // At ERROR level so the request id stays on error events even when INFO is filtered out.
    tracing::error_span!(
        "http.request",
        http.method = %request.method(),
        http.path = request.uri().path(),
        request.id = request_id.unwrap_or_default(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(state): State<AppState>) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.metrics.render()).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (mut unready, redis) = tokio::join!(state.upstreams.unready(), state.denylist.ping());
    if let Err(error) = redis {
        unready.push(("redis", format!("{error:#}")));
    }
    if unready.is_empty() {
        return Json(serde_json::json!({ "status": "ready" })).into_response();
    }
    for (dependency, why) in &unready {
        tracing::warn!(dependency, why, "dependency not ready");
    }
    let names: Vec<&str> = unready.iter().map(|(name, _)| *name).collect();
    let body = serde_json::json!({ "status": "unavailable", "unready": names });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
