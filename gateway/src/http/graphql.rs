//! GraphQL over HTTP: `POST /graphql` (one operation or a batch), `GET /graphql`
//! (queries only; GraphiQL for browsers; a WebSocket upgrade is handed to `ws`), and
//! running an admitted operation, with introspection refused where it is switched off.

use std::net::{IpAddr, SocketAddr};

use async_graphql::Variables;
use async_graphql::http::GraphiQLSource;
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType};
use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use marquee_kit::ErrorCode;
use serde::Deserialize;

use super::admit::{admit, client_address};
use super::negotiate::{self, ResponseMedia, prefers_html};
use super::render::{executed_status, render, request_error, server_error};
use super::{AppState, GRAPHQL_PATH, header_str, ws};
use crate::error::GatewayError;
use crate::schema::Viewer;
use crate::upstream::RequestCache;

pub(super) async fn graphql_post(
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

pub(super) async fn graphql_get(State(state): State<AppState>, request: axum::extract::Request) -> Response {
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
    let mut request = match params.map_err(|e| e.body_text()).and_then(|Query(p)| get_request(p)) {
        Ok(request) => request,
        Err(message) => return request_error(StatusCode::BAD_REQUEST, media, &message),
    };
    let operation_name = request.operation_name.clone();
    let document = state.documents.attach(&mut request);
    if document.is_some_and(|document| is_mutation(document, operation_name.as_deref())) {
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

/// Whether the operation a request naming `operation_name` would run is a mutation. A
/// document that names no single operation is left to the executor to reject.
fn is_mutation(document: &ExecutableDocument, operation_name: Option<&str>) -> bool {
    let operation = match (&document.operations, operation_name) {
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

async fn run(
    state: &AppState,
    viewer: &Viewer,
    mut request: async_graphql::Request,
) -> async_graphql::Response {
    // Parsed here once; the executor runs this copy. One that does not parse is left
    // to the executor to reject.
    let introspection = state.options.introspection;
    let (refused, only_introspection) = match state.documents.attach(&mut request) {
        Some(document) if !introspection => (asks_for_introspection(document), false),
        Some(document) => (false, selects_only_introspection(document)),
        None => (false, false),
    };
    if !introspection {
        // async-graphql alone would answer `__schema: null`; say why instead.
        if refused {
            let error = server_error(&GatewayError::Upstream(marquee_kit::ApiError::new(
                ErrorCode::Forbidden,
                "introspection is disabled on this server",
            )));
            return async_graphql::Response::from_errors(vec![error]);
        }
        request = request.disable_introspection();
    } else if only_introspection {
        // Tools' standard introspection query is deeper than the data depth limit.
        let request = request.only_introspection().data(viewer.clone()).data(RequestCache::default());
        return state.introspection_schema.execute(request).await;
    }
    state.schema.execute(request.data(viewer.clone()).data(RequestCache::default())).await
}

/// Whether every operation of the document is a query whose top-level fields are all
/// `__schema`, `__type` or `__typename`: nothing that reaches an upstream.
fn selects_only_introspection(document: &ExecutableDocument) -> bool {
    use async_graphql::parser::types::Selection;
    document.operations.iter().all(|(_, op)| {
        op.node.ty == OperationType::Query
            && op.node.selection_set.node.items.iter().all(|item| match &item.node {
                Selection::Field(field) => {
                    matches!(field.node.name.node.as_str(), "__schema" | "__type" | "__typename")
                }
                Selection::InlineFragment(_) | Selection::FragmentSpread(_) => false,
            })
    })
}

/// Whether the document selects `__schema` or `__type` anywhere (fragments included).
fn asks_for_introspection(document: &ExecutableDocument) -> bool {
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
    document.operations.iter().any(|(_, op)| walk(&op.node.selection_set.node))
        || document.fragments.values().any(|fragment| walk(&fragment.node.selection_set.node))
}

#[cfg(test)]
mod tests {
    use async_graphql::Value;

    use super::*;

    fn parsed(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).expect("a document")
    }

    #[test]
    fn finds_the_mutation_a_get_would_run() {
        let is_mutation = |query: &str, operation: Option<&str>| is_mutation(&parsed(query), operation);
        assert!(is_mutation("mutation { login(input: {}) { token } }", None));
        assert!(!is_mutation("{ movies { edges { cursor } } }", None));
        assert!(!is_mutation("query Q { me { id } }", None));
        let both = "query Q { me { id } } mutation M { login { token } }";
        assert!(is_mutation(both, Some("M")));
        assert!(!is_mutation(both, Some("Q")));
        assert!(!is_mutation(both, None));
    }

    #[test]
    fn introspection_is_found_wherever_it_hides() {
        let asks = |query: &str| asks_for_introspection(&parsed(query));
        assert!(asks("{ __schema { types { name } } }"));
        assert!(asks(r#"query { movie(id: "1") { id } __type(name: "Movie") { name } }"#));
        assert!(asks("query { ...F } fragment F on Query { __schema { queryType { name } } }"));
        assert!(asks("{ ... on Query { __schema { queryType { name } } } }"));
        assert!(!asks("{ __typename cinemas { __typename city } }"));
    }

    #[test]
    fn only_pure_introspection_documents_skip_the_data_depth_limit() {
        let only = |query: &str| selects_only_introspection(&parsed(query));
        assert!(only("query IntrospectionQuery { __schema { types { name } } }"));
        assert!(only(r#"{ __type(name: "Seat") { name } __typename }"#));
        assert!(!only("{ __schema { queryType { name } } me { id } }"));
        assert!(!only("{ ...F } fragment F on Query { __schema { types { name } } }"));
        assert!(!only("mutation { __typename }"));
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
