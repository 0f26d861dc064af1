//! GraphQL over HTTP (`POST`/`GET /graphql`, GraphiQL), health and readiness.

mod negotiate;

use std::sync::Arc;

use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{ServerError, Value, Variables};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use marquee_common::ErrorCode;
use marquee_common::auth::TokenKeys;
use serde::Deserialize;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use self::negotiate::{ResponseMedia, prefers_html};
use crate::denylist::Denylist;
use crate::error::GatewayError;
use crate::schema::{GatewaySchema, Viewer};
use crate::upstream::{RequestCache, Upstreams};

const GRAPHQL_PATH: &str = "/graphql";

#[derive(Clone)]
pub struct AppState {
    schema: GatewaySchema,
    keys: Arc<TokenKeys>,
    denylist: Denylist,
    upstreams: Upstreams,
    graphiql: bool,
}

impl AppState {
    pub fn new(
        schema: GatewaySchema,
        keys: TokenKeys,
        denylist: Denylist,
        upstreams: Upstreams,
        graphiql: bool,
    ) -> Self {
        Self { schema, keys: Arc::new(keys), denylist, upstreams, graphiql }
    }
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let layers = ServiceBuilder::new()
        // Outermost first: the id exists before the trace span reads it; a caller's
        // X-Request-ID is kept.
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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

async fn graphql_post(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let media = ResponseMedia::negotiate(header_str(&headers, header::ACCEPT));
    let content_type = header_str(&headers, header::CONTENT_TYPE).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    // Also stops browsers' CORS-simple POSTs (form, text/plain) from running mutations.
    if !essence.eq_ignore_ascii_case(negotiate::JSON) {
        let message = "Content-Type must be application/json";
        return request_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, media, message);
    }
    let request = match serde_json::from_slice::<async_graphql::Request>(&body) {
        Ok(request) => request,
        Err(error) => {
            let message = format!("the body is not a GraphQL request: {error}");
            return request_error(StatusCode::BAD_REQUEST, media, &message);
        }
    };
    execute(&state, &headers, request, media).await
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

async fn graphql_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Response {
    let accept = header_str(&headers, header::ACCEPT);
    if state.graphiql && prefers_html(accept) {
        return Html(GraphiQLSource::build().endpoint(GRAPHQL_PATH).finish()).into_response();
    }
    let media = ResponseMedia::negotiate(accept);
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
    execute(&state, &headers, request, media).await
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
    request: async_graphql::Request,
    media: ResponseMedia,
) -> Response {
    let viewer = match authenticate(state, headers).await {
        Ok(viewer) => viewer,
        Err(error) => {
            let status = match media {
                ResponseMedia::Json => StatusCode::OK,
                ResponseMedia::GraphqlResponseJson => StatusCode::UNAUTHORIZED,
            };
            let mut response = render(async_graphql::Response::from_errors(vec![error]), media, status);
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    };
    let response = state.schema.execute(request.data(viewer).data(RequestCache::default())).await;
    let status = match media {
        ResponseMedia::GraphqlResponseJson if is_request_error(&response) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    };
    render(response, media, status)
}

/// No token is an anonymous caller; a token that does not verify, or was logged out,
/// is refused outright rather than silently downgraded to anonymous.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Viewer, ServerError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Viewer::anonymous()) };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
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

fn render(mut response: async_graphql::Response, media: ResponseMedia, status: StatusCode) -> Response {
    for error in &mut response.errors {
        // Our resolvers always set a code; what lacks one is async-graphql's own
        // rejection of the document (syntax, validation, depth, argument coercion).
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", ErrorCode::BadUserInput.as_str());
        }
    }
    match serde_json::to_vec(&response) {
        Ok(body) => (status, [(header::CONTENT_TYPE, media.as_str())], body).into_response(),
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
