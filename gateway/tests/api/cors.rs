//! CORS for front ends hosted on another origin: listed origins get the headers,
//! every other origin and the default configuration get none.

use marquee_e2e::MeshSettings;
use marquee_gateway::settings::AllowedOrigin;
use marquee_kit::Config as _;
use reqwest::header::{HeaderMap, ORIGIN};
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{TestApp, spawn_app_with};

const FRONT_END: &str = "https://tickets.example.com";

fn origin(entry: &str) -> AllowedOrigin {
    AllowedOrigin::try_from(entry.to_owned()).unwrap()
}

/// A browser's preflight for a signed-in `POST /graphql` from `from`.
async fn preflight(app: &TestApp, from: &str) -> reqwest::Response {
    app.http
        .request(Method::OPTIONS, app.url("/graphql"))
        .header(ORIGIN, from)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap()
}

async fn post_from(app: &TestApp, from: &str) -> reqwest::Response {
    let body = json!({ "query": "{ cinemas { city } }" });
    app.http.post(app.url("/graphql")).header(ORIGIN, from).json(&body).send().await.unwrap()
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers.keys().map(|name| name.as_str().to_owned()).filter(|n| n.starts_with("access-control-")).collect()
}

fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    let value = headers.get(name).map(|v| v.to_str().unwrap().to_lowercase()).unwrap_or_default();
    value.split(',').map(|item| item.trim().to_owned()).filter(|item| !item.is_empty()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_origins_get_cors_headers_and_others_none() {
    let app = spawn_app_with(|s| {
        s.gateway.cors.allowed_origins = vec![origin(FRONT_END), origin("http://localhost:5173")];
    })
    .await;

    let response = preflight(&app, FRONT_END).await;
    assert!(response.status().is_success(), "{}", response.status());
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], FRONT_END);
    assert!(list(headers, "access-control-allow-methods").contains(&"post".to_owned()), "{headers:?}");
    let allowed = list(headers, "access-control-allow-headers");
    for header in ["authorization", "content-type", "x-request-id"] {
        assert!(allowed.contains(&header.to_owned()), "{header} not allowed: {allowed:?}");
    }
    assert_eq!(headers["access-control-max-age"], "3600");
    assert!(list(headers, "vary").contains(&"origin".to_owned()), "{headers:?}");
    assert!(headers.get("access-control-allow-credentials").is_none(), "tokens are not cookies");

    // The request itself: the page may read the answer, Retry-After and X-Request-ID.
    let response = post_from(&app, FRONT_END).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["access-control-allow-origin"], FRONT_END);
    let exposed = list(response.headers(), "access-control-expose-headers");
    assert!(exposed.contains(&"retry-after".to_owned()) && exposed.contains(&"x-request-id".to_owned()));

    // Another origin gets no CORS header at all: its preflight fails, and its page may
    // not read the answer (the request itself is served: CORS binds browsers only).
    for other in ["https://evil.example.com", "https://tickets.example.com.evil.example", "null"] {
        let response = preflight(&app, other).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{other}");
        assert_eq!(cors_headers(response.headers()), Vec::<String>::new(), "{other}");
        let response = post_from(&app, other).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(cors_headers(response.headers()), Vec::<String>::new(), "{other}");
    }

    // The committed configuration lists no origin: same origin only, no CORS headers.
    let defaults = MeshSettings::for_tests().unwrap().gateway.cors;
    assert!(defaults.allowed_origins.is_empty());
    let plain = app.another_gateway(|s| s.gateway.cors = defaults).await;
    for from in [FRONT_END, "https://evil.example.com"] {
        assert_eq!(cors_headers(preflight(&plain, from).await.headers()), Vec::<String>::new());
        assert_eq!(cors_headers(post_from(&plain, from).await.headers()), Vec::<String>::new());
    }
}
