//! GraphQL over HTTP (`POST`/`GET /graphql`, GraphiQL), subscriptions over WebSocket
//! (`GET /graphql` with an upgrade), rate limits, health, readiness and metrics.

mod negotiate;
mod observe;
mod ws;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{ServerError, Value, Variables};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use marquee_common::ErrorCode;
use marquee_common::auth::TokenKeys;
use marquee_common::config::GatewaySettings;
use marquee_common::shutdown::Shutdown;
use serde::Deserialize;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use self::negotiate::{ResponseMedia, prefers_html};
use self::observe::{ErrorCodes, KongOrNewRequestId};
use crate::denylist::Denylist;
use crate::error::GatewayError;
use crate::live::SeatFeeds;
use crate::metrics::Metrics;
use crate::ratelimit::{Caller, RateLimiter, Verdict};
use crate::schema::{GatewaySchema, Viewer};
use crate::upstream::{RequestCache, Upstreams};

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

#[derive(Clone)]
pub struct AppState {
    schema: GatewaySchema,
    keys: Arc<TokenKeys>,
    denylist: Denylist,
    upstreams: Upstreams,
    feeds: SeatFeeds,
    limiter: RateLimiter,
    metrics: Metrics,
    closing: Shutdown,
    options: Arc<Options>,
}

/// The `[gateway]` settings requests consult.
struct Options {
    graphiql: bool,
    introspection: bool,
    max_batch_size: usize,
    trust_forwarded_for: bool,
    max_subscriptions_per_connection: usize,
}

impl AppState {
    pub fn new(schema: GatewaySchema, services: Services, settings: &GatewaySettings) -> Self {
        let Services { keys, denylist, upstreams, feeds, limiter, metrics, closing } = services;
        let options = Options {
            graphiql: settings.graphiql,
            introspection: settings.introspection,
            max_batch_size: settings.max_batch_size,
            trust_forwarded_for: settings.trust_forwarded_for,
            max_subscriptions_per_connection: settings.max_subscriptions_per_connection,
        };
        Self {
            schema,
            keys: Arc::new(keys),
            denylist,
            upstreams,
            feeds,
            limiter,
            metrics,
            closing,
            options: Arc::new(options),
        }
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
        .layer(RequestBodyLimitLayer::new(max_body_bytes));
    Router::new()
        .route(GRAPHQL_PATH, get(graphql_get).post(graphql_post))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // The tower-http limit above is the one limit; axum's 2 MB default would be a second.
        .layer(DefaultBodyLimit::disable())
        .layer(layers)
        .with_state(state)
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
    let unready = state.upstreams.unready().await;
    if unready.is_empty() {
        return Json(serde_json::json!({ "status": "ready" })).into_response();
    }
    for (upstream, why) in &unready {
        tracing::warn!(upstream, why, "upstream not ready");
    }
    let names: Vec<&str> = unready.iter().map(|(name, _)| *name).collect();
    let body = serde_json::json!({ "status": "unavailable", "unready": names });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn graphql_post(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let media = ResponseMedia::negotiate(header_str(&headers, header::ACCEPT));
    let content_type = header_str(&headers, header::CONTENT_TYPE).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    // Also stops browsers' CORS-simple POSTs (form, text/plain) from running mutations.
    if !essence.eq_ignore_ascii_case(negotiate::JSON) {
        let message = "Content-Type must be application/json";
        return request_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, media, message);
    }
    let client = client_address(&state, peer, &headers);
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return execute_batch(&state, &headers, client, &body, media).await;
    }
    let request = match serde_json::from_slice::<async_graphql::Request>(&body) {
        Ok(request) => request,
        Err(error) => {
            let message = format!("the body is not a GraphQL request: {error}");
            return request_error(StatusCode::BAD_REQUEST, media, &message);
        }
    };
    execute(&state, &headers, client, request, media).await
}

/// A JSON array of requests, run one after another and answered as an array.
async fn execute_batch(
    state: &AppState,
    headers: &HeaderMap,
    client: IpAddr,
    body: &[u8],
    media: ResponseMedia,
) -> Response {
    let requests = match serde_json::from_slice::<Vec<async_graphql::Request>>(body) {
        Ok(requests) => requests,
        Err(error) => {
            let message = format!("the body is not a batch of GraphQL requests: {error}");
            return request_error(StatusCode::BAD_REQUEST, media, &message);
        }
    };
    let max = state.options.max_batch_size;
    if requests.is_empty() || requests.len() > max {
        let message = format!("a batch holds 1 to {max} operations, not {}", requests.len());
        return request_error(StatusCode::BAD_REQUEST, media, &message);
    }
    let viewer = match admit(state, headers, client, requests.len(), media).await {
        Ok(viewer) => viewer,
        Err(refusal) => return refusal,
    };
    let mut responses = Vec::with_capacity(requests.len());
    for request in requests {
        let request = request.data(crate::trace::TraceContext::from_headers(headers));
        responses.push(run(state, &viewer, request).await);
    }
    render(async_graphql::BatchResponse::Batch(responses), media, StatusCode::OK)
}

/// GraphQL-over-HTTP GET parameters; `variables` and `extensions` are JSON strings.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

async fn graphql_get(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, _) = request.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned().map(Extension);
    if ws::is_upgrade(&parts.headers) {
        let client = client_address(&state, peer, &parts.headers);
        return ws::upgrade(state, parts, client).await;
    }
    let headers = parts.headers;
    let accept = header_str(&headers, header::ACCEPT);
    if state.options.graphiql && prefers_html(accept) {
        let page = GraphiQLSource::build().endpoint(GRAPHQL_PATH).subscription_endpoint(GRAPHQL_PATH);
        return Html(page.finish()).into_response();
    }
    let media = ResponseMedia::negotiate(accept);
    let params = Query::<GetParams>::try_from_uri(&parts.uri);
    let request = match params.map_err(|e| e.body_text()).and_then(|Query(p)| get_request(p)) {
        Ok(request) => request,
        Err(message) => return request_error(StatusCode::BAD_REQUEST, media, &message),
    };
    if is_mutation(&request) {
        // GET must be safe: mutations only over POST (GraphQL-over-HTTP §GET).
        let mut response =
            request_error(StatusCode::METHOD_NOT_ALLOWED, media, "mutations are only accepted over POST");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let client = client_address(&state, peer, &headers);
    execute(&state, &headers, client, request, media).await
}

fn get_request(params: GetParams) -> Result<async_graphql::Request, String> {
    let query = params.query.ok_or("the `query` parameter is required")?;
    let json = |raw: Option<String>, what: &str| -> Result<Option<serde_json::Value>, String> {
        raw.map(|raw| serde_json::from_str(&raw).map_err(|e| format!("`{what}` is not JSON: {e}")))
            .transpose()
    };
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(variables) = json(params.variables, "variables")? {
        request = request.variables(Variables::from_json(variables));
    }
    if let Some(extensions) = json(params.extensions, "extensions")? {
        request.extensions =
            serde_json::from_value(extensions).map_err(|e| format!("bad `extensions`: {e}"))?;
    }
    Ok(request)
}

/// Whether the operation this request would run is a mutation. A document that does
/// not parse or names no single operation is left to the executor to reject.
fn is_mutation(request: &async_graphql::Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return false };
    let operation = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    };
    operation.is_some_and(|op| op.node.ty == OperationType::Mutation)
}

async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    client: IpAddr,
    request: async_graphql::Request,
    media: ResponseMedia,
) -> Response {
    let viewer = match admit(state, headers, client, 1, media).await {
        Ok(viewer) => viewer,
        Err(refusal) => return refusal,
    };
    let request = request.data(crate::trace::TraceContext::from_headers(headers));
    let response = run(state, &viewer, request).await;
    let (status, retry_after_seconds) = executed_status(media, &response);
    let mut rendered = render(response, media, status);
    if let Some(seconds) = retry_after_seconds {
        rendered.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    rendered
}

/// The HTTP status of an operation that ran, and the `Retry-After` that goes with it.
fn executed_status(media: ResponseMedia, response: &async_graphql::Response) -> (StatusCode, Option<u64>) {
    match media {
        ResponseMedia::GraphqlResponseJson if is_request_error(response) => (StatusCode::BAD_REQUEST, None),
        // Nothing came back because a service had no capacity: 503 tells clients and
        // proxies to back off, whatever the media type (like a 429, the server is
        // refusing, not judging the request). Partial data must stay 2xx.
        _ if response.data == Value::Null => match service_busy(response) {
            Some(seconds) => (StatusCode::SERVICE_UNAVAILABLE, Some(seconds)),
            None => (StatusCode::OK, None),
        },
        _ => (StatusCode::OK, None),
    }
}

/// The longest `retryAfterSeconds` among the response's SERVICE_BUSY errors, if any.
fn service_busy(response: &async_graphql::Response) -> Option<u64> {
    response
        .errors
        .iter()
        .filter_map(|error| error.extensions.as_ref())
        .filter(|extensions| extensions.get("code") == Some(&Value::from(ErrorCode::ServiceBusy.as_str())))
        .map(|extensions| match extensions.get("retryAfterSeconds") {
            Some(Value::Number(seconds)) => seconds.as_u64().unwrap_or(1),
            _ => 1,
        })
        .max()
}

async fn run(
    state: &AppState,
    viewer: &Viewer,
    mut request: async_graphql::Request,
) -> async_graphql::Response {
    if !state.options.introspection {
        // async-graphql alone would answer `__schema: null`; say why instead.
        if asks_for_introspection(&request.query) {
            let error = server_error(&GatewayError::Upstream(marquee_common::ApiError::new(
                ErrorCode::Forbidden,
                "introspection is disabled on this server",
            )));
            return async_graphql::Response::from_errors(vec![error]);
        }
        request = request.disable_introspection();
    }
    state.schema.execute(request.data(viewer.clone()).data(RequestCache::default())).await
}

/// Who is calling, if they may: the token verifies and the caller has budget left
/// for `operations` more. Otherwise the finished refusal.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    client: IpAddr,
    operations: usize,
    media: ResponseMedia,
) -> Result<Viewer, Response> {
    let viewer = match authenticate(state, header_str(headers, header::AUTHORIZATION)).await {
        Ok(viewer) => viewer,
        Err(error) => {
            let status = match media {
                ResponseMedia::Json => StatusCode::OK,
                ResponseMedia::GraphqlResponseJson => StatusCode::UNAUTHORIZED,
            };
            let mut response = render(async_graphql::Response::from_errors(vec![error]), media, status);
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return Err(response);
        }
    };
    let caller = match viewer.identity() {
        Some(identity) => Caller::User(&identity.user_id),
        None => Caller::Address(client),
    };
    let operations = u64::try_from(operations).unwrap_or(u64::MAX);
    match state.limiter.check(&caller, operations).await {
        Ok(Verdict::Allowed) => Ok(viewer),
        Ok(Verdict::Limited { retry_after_seconds }) => {
            state.metrics.rate_limited.increment(1);
            Err(rate_limited(media, retry_after_seconds))
        }
        // Fail open: an outage of the limiter's Redis must not take the API down with it.
        Err(error) => {
            tracing::warn!(error = format!("{error:#}"), "rate limit not checked");
            Ok(viewer)
        }
    }
}

/// HTTP 429 whatever the media type: like 413, the request was refused before any
/// GraphQL ran. The hint is in both the `Retry-After` header and the error.
fn rate_limited(media: ResponseMedia, retry_after_seconds: u64) -> Response {
    let mut error = ServerError::new(format!("too many requests; retry in {retry_after_seconds} s"), None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", ErrorCode::RateLimited.as_str());
    extensions.set("retryAfterSeconds", retry_after_seconds);
    error.extensions = Some(extensions);
    let mut response =
        render(async_graphql::Response::from_errors(vec![error]), media, StatusCode::TOO_MANY_REQUESTS);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds));
    response
}

/// The address whose anonymous budget a request spends: the TCP peer, or behind a
/// trusted proxy the address the proxy appended last to `X-Forwarded-For`.
fn client_address(
    state: &AppState,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: &HeaderMap,
) -> IpAddr {
    let forwarded = || {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
    };
    let peer = peer.map(|Extension(ConnectInfo(addr))| addr.ip());
    let forwarded = if state.options.trust_forwarded_for { forwarded() } else { None };
    forwarded.or(peer).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// No token is an anonymous caller; a token that does not verify, or was logged out,
/// is refused outright rather than silently downgraded to anonymous.
/// `authorization` is the header value, `Bearer <token>`.
async fn authenticate(state: &AppState, authorization: Option<&str>) -> Result<Viewer, ServerError> {
    let Some(value) = authorization else { return Ok(Viewer::anonymous()) };
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let refused = || server_error(&GatewayError::Unauthenticated("invalid or expired access token"));
    let token = token.ok_or_else(refused)?;
    let claims = match state.keys.verify(token) {
        Ok(claims) => claims,
        Err(error) => {
            tracing::debug!(%error, "access token refused");
            return Err(refused());
        }
    };
    match state.denylist.is_denied(&claims.jti).await {
        Ok(false) => Ok(Viewer::from_claims(claims, token)),
        Ok(true) => {
            tracing::debug!("logged-out access token refused");
            Err(refused())
        }
        // Fail closed: without the denylist a logged-out token would pass.
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "unexpected error");
            Err(server_error(&GatewayError::Unexpected(error)))
        }
    }
}

/// Whether the document selects `__schema` or `__type` anywhere (fragments included).
/// A document that does not parse is left to the executor to reject.
fn asks_for_introspection(query: &str) -> bool {
    use async_graphql::parser::types::{Selection, SelectionSet};
    fn walk(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                matches!(field.node.name.node.as_str(), "__schema" | "__type")
                    || walk(&field.node.selection_set.node)
            }
            Selection::InlineFragment(fragment) => walk(&fragment.node.selection_set.node),
            // Fragment definitions are walked on their own below.
            Selection::FragmentSpread(_) => false,
        })
    }
    let Ok(document) = async_graphql::parser::parse_query(query) else { return false };
    document.operations.iter().any(|(_, op)| walk(&op.node.selection_set.node))
        || document.fragments.values().any(|fragment| walk(&fragment.node.selection_set.node))
}

/// Parse, validation and limit errors come before any field runs: no data, no path.
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

fn server_error(error: &GatewayError) -> ServerError {
    let extended = async_graphql::ErrorExtensions::extend(error);
    let mut server_error = ServerError::new(extended.message, None);
    server_error.extensions = extended.extensions;
    server_error
}

fn request_error(status: StatusCode, media: ResponseMedia, message: &str) -> Response {
    let error = server_error(&GatewayError::bad_input(message));
    render(async_graphql::Response::from_errors(vec![error]), media, status)
}

fn render(
    response: impl Into<async_graphql::BatchResponse>,
    media: ResponseMedia,
    status: StatusCode,
) -> Response {
    let mut response = response.into();
    let responses = match &mut response {
        async_graphql::BatchResponse::Single(one) => std::slice::from_mut(one),
        async_graphql::BatchResponse::Batch(many) => many.as_mut_slice(),
    };
    let mut codes = ErrorCodes::default();
    for error in responses.iter_mut().flat_map(|r| r.errors.iter_mut()) {
        // Our resolvers always set a code; what lacks one is async-graphql's own
        // rejection of the document (syntax, validation, depth, argument coercion).
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", ErrorCode::BadUserInput.as_str());
        }
        codes.push(extensions.get("code"));
    }
    let body = match &response {
        // Nothing ran, so there is no `data` entry at all (GraphQL spec §7.1.2).
        async_graphql::BatchResponse::Single(one) if is_request_error(one) => serde_json::to_value(&response)
            .and_then(|mut value| {
                if let Some(object) = value.as_object_mut() {
                    object.remove("data");
                }
                serde_json::to_vec(&value)
            }),
        _ => serde_json::to_vec(&response),
    };
    match body {
        Ok(body) => {
            let mut response = (status, [(header::CONTENT_TYPE, media.as_str())], body).into_response();
            response.extensions_mut().insert(codes);
            response
        }
        Err(error) => {
            tracing::error!(%error, "cannot serialize a GraphQL response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(query: &str, operation: Option<&str>) -> async_graphql::Request {
        let request = async_graphql::Request::new(query);
        match operation {
            Some(name) => request.operation_name(name),
            None => request,
        }
    }

    #[test]
    fn finds_the_mutation_a_get_would_run() {
        assert!(is_mutation(&request("mutation { login(input: {}) { token } }", None)));
        assert!(!is_mutation(&request("{ movies { edges { cursor } } }", None)));
        assert!(!is_mutation(&request("query Q { me { id } }", None)));
        let both = "query Q { me { id } } mutation M { login { token } }";
        assert!(is_mutation(&request(both, Some("M"))));
        assert!(!is_mutation(&request(both, Some("Q"))));
        assert!(!is_mutation(&request(both, None)));
        assert!(!is_mutation(&request("not graphql", None)));
    }

    #[test]
    fn introspection_is_found_wherever_it_hides() {
        assert!(asks_for_introspection("{ __schema { types { name } } }"));
        assert!(asks_for_introspection(r#"query { movie(id: "1") { id } __type(name: "Movie") { name } }"#));
        assert!(asks_for_introspection(
            "query { ...F } fragment F on Query { __schema { queryType { name } } }"
        ));
        assert!(asks_for_introspection("{ ... on Query { __schema { queryType { name } } } }"));
        assert!(!asks_for_introspection("{ __typename cinemas { __typename city } }"));
        assert!(!asks_for_introspection("not graphql"));
    }

    fn busy_error(retry_after_seconds: u64) -> ServerError {
        let error = GatewayError::Upstream(
            marquee_common::ApiError::new(ErrorCode::ServiceBusy, "busy")
                .with_retry_after(retry_after_seconds),
        );
        let mut error = server_error(&error);
        error.path = vec![async_graphql::PathSegment::Field("register".to_owned())];
        error
    }

    #[test]
    fn service_busy_errors_carry_the_longest_retry_hint() {
        let mut response = async_graphql::Response::from_errors(vec![busy_error(1), busy_error(3)]);
        assert_eq!(service_busy(&response), Some(3));
        response.errors = vec![server_error(&GatewayError::bad_input("no"))];
        assert_eq!(service_busy(&response), None);
    }

    #[test]
    fn a_busy_refusal_is_503_only_where_graphql_over_http_allows() {
        use ResponseMedia::{GraphqlResponseJson, Json};
        let busy = async_graphql::Response::from_errors(vec![busy_error(1)]);
        assert_eq!(executed_status(GraphqlResponseJson, &busy), (StatusCode::SERVICE_UNAVAILABLE, Some(1)));
        assert_eq!(executed_status(Json, &busy), (StatusCode::SERVICE_UNAVAILABLE, Some(1)));
        // With partial data the spec requires a 2xx.
        let mut partial = async_graphql::Response::from_errors(vec![busy_error(1)]);
        partial.data = Value::from_json(serde_json::json!({ "me": { "id": "u1" } })).unwrap();
        assert_eq!(executed_status(GraphqlResponseJson, &partial), (StatusCode::OK, None));
        // Request errors (no path, no data) stay 400.
        let invalid = async_graphql::Response::from_errors(vec![ServerError::new("syntax error", None)]);
        assert_eq!(executed_status(GraphqlResponseJson, &invalid), (StatusCode::BAD_REQUEST, None));
    }

    #[test]
    fn get_parameters_become_a_request() {
        let params = GetParams {
            query: Some("query($s: String) { movies(search: $s) { edges { cursor } } }".into()),
            operation_name: None,
            variables: Some(r#"{"s":"dune"}"#.into()),
            extensions: None,
        };
        let request = get_request(params).unwrap();
        assert_eq!(request.variables.get("s"), Some(&Value::from("dune")));

        let bad = GetParams {
            query: Some("{ me { id } }".into()),
            operation_name: None,
            variables: Some("{".into()),
            extensions: None,
        };
        assert!(get_request(bad).is_err());
    }
}
