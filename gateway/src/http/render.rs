//! Writing GraphQL answers as HTTP responses: every error carries an
//! `extensions.code`, a request error (nothing ran) has no `data` entry, and the
//! status follows the media type (GraphQL over HTTP), except that an operation
//! refused for lack of capacity is a 503 with `Retry-After` whatever the media type.

use async_graphql::{ServerError, Value};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use marquee_kit::ErrorCode;

use super::negotiate::ResponseMedia;
use super::observe::ErrorCodes;
use crate::error::GatewayError;

/// The HTTP status of an operation that ran, and the `Retry-After` that goes with it.
pub(super) fn executed_status(
    media: ResponseMedia,
    response: &async_graphql::Response,
) -> (StatusCode, Option<u64>) {
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
/// Parse, validation and limit errors come before any field runs: no data, no path.
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

pub(super) fn server_error(error: &GatewayError) -> ServerError {
    let extended = async_graphql::ErrorExtensions::extend(error);
    let mut server_error = ServerError::new(extended.message, None);
    server_error.extensions = extended.extensions;
    server_error
}

pub(super) fn request_error(status: StatusCode, media: ResponseMedia, message: &str) -> Response {
    let error = server_error(&GatewayError::bad_input(message));
    render(async_graphql::Response::from_errors(vec![error]), media, status)
}

pub(super) fn render(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn busy_error(retry_after_seconds: u64) -> ServerError {
        let error = GatewayError::Upstream(
            marquee_kit::ApiError::new(ErrorCode::ServiceBusy, "busy").with_retry_after(retry_after_seconds),
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
}
