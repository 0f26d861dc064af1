//! Who may call, decided before any GraphQL runs: the bearer token is verified (and
//! checked against the logout denylist), then the caller's rate-limit budget is
//! spent, per user or per client address. A refusal comes back finished (401 with
//! `WWW-Authenticate`, 429 with `Retry-After`, 503 with `Retry-After` when the token
//! could not be checked).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use async_graphql::ServerError;
use axum::Extension;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use marquee_kit::ErrorCode;

use super::negotiate::ResponseMedia;
use super::render::{render, server_error};
use super::{AppState, header_str};
use crate::error::{BUSY_RETRY_AFTER_SECONDS, GatewayError};
use crate::ratelimit::{Caller, Verdict};
use crate::schema::Viewer;

/// Who is calling, if they may: the token verifies and the caller has budget left
/// for `operations` more. Otherwise the finished refusal.
pub(super) async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    client: IpAddr,
    operations: usize,
    media: ResponseMedia,
) -> Result<Viewer, Response> {
    let viewer = match verify(state, header_str(headers, header::AUTHORIZATION)).await {
        Ok(viewer) => viewer,
        Err(error @ GatewayError::Busy(_)) => {
            // As every SERVICE_BUSY without data: 503 whatever the media type (`render`).
            let errors = vec![server_error(&error)];
            let status = StatusCode::SERVICE_UNAVAILABLE;
            let mut response = render(async_graphql::Response::from_errors(errors), media, status);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_AFTER_SECONDS));
            return Err(response);
        }
        Err(error) => {
            let status = match media {
                ResponseMedia::Json => StatusCode::OK,
                ResponseMedia::GraphqlResponseJson => StatusCode::UNAUTHORIZED,
            };
            let errors = vec![server_error(&error)];
            let mut response = render(async_graphql::Response::from_errors(errors), media, status);
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
pub(super) fn rate_limited(media: ResponseMedia, retry_after_seconds: u64) -> Response {
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
pub(super) fn client_address(
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

/// `verify` for the WebSocket's `connection_init`, whose refusal is a GraphQL error.
pub(super) async fn authenticate(
    state: &AppState,
    authorization: Option<&str>,
) -> Result<Viewer, ServerError> {
    verify(state, authorization).await.map_err(|error| server_error(&error))
}

/// No token is an anonymous caller; a token that does not verify, or was logged out,
/// is refused outright rather than silently downgraded to anonymous. A token whose
/// logout cannot be checked now is refused as busy (retryable), never let through.
/// `authorization` is the header value, `Bearer <token>`.
async fn verify(state: &AppState, authorization: Option<&str>) -> Result<Viewer, GatewayError> {
    let Some(value) = authorization else { return Ok(Viewer::anonymous()) };
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let refused = || GatewayError::Unauthenticated("invalid or expired access token");
    let token = token.ok_or_else(refused)?;
    let claims = match state.keys.verify(token) {
        Ok(claims) => claims,
        Err(error) => {
            tracing::debug!(%error, "access token refused");
            return Err(refused());
        }
    };
    match state.denylist.is_denied(&claims.jti, claims.exp).await {
        Ok(false) => {
            let session = state.denylist.session(&claims.jti, claims.exp);
            Viewer::from_claims(claims, token, session).ok_or_else(refused)
        }
        Ok(true) => {
            tracing::debug!("logged-out access token refused");
            Err(refused())
        }
        // Fail closed: without the denylist a logged-out token would pass.
        Err(error) => {
            let error = anyhow::Error::new(error);
            tracing::warn!(error = format!("{error:#}"), "access token not checked: refused as busy");
            Err(GatewayError::Busy(error))
        }
    }
}
