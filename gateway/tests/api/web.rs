//! The web app's files beside the API (issue #20): content types, caching (hashed
//! assets immutable, index.html revalidated), the CSP, GraphiQL still at
//! `GET /graphql`, a gateway without a build, and the standard introspection query
//! that tools (GraphiQL, graphql-codegen, Postman, schemathesis) send.

use std::path::PathBuf;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use serde_json::json;

use super::{spawn_app, spawn_app_with};

/// A stand-in for `web/dist`: an index and one hashed script, as Vite lays them out.
fn fake_build() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("marquee-web-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>Marquee</title>").unwrap();
    std::fs::write(dir.join("assets/index-Ab12Cd34.js"), "console.log('marquee')").unwrap();
    std::fs::write(dir.join("assets/index-Ef56Gh78.css"), "body{}").unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_is_served_at_the_root_beside_the_api() {
    let dir = fake_build();
    let web_dir = dir.clone();
    let app = spawn_app_with(move |settings| settings.gateway.web_dir = web_dir).await;

    let index = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(index.status(), StatusCode::OK);
    let headers = index.headers().clone();
    assert_eq!(headers[CONTENT_TYPE], "text/html");
    assert_eq!(headers[CACHE_CONTROL], "no-cache", "a new build must reach browsers at once");
    let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    for directive in
        ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"]
    {
        assert!(csp.contains(directive), "CSP lacks {directive}: {csp}");
    }
    assert!(index.text().await.unwrap().contains("<title>Marquee</title>"));

    for (path, content_type) in
        [("/assets/index-Ab12Cd34.js", "text/javascript"), ("/assets/index-Ef56Gh78.css", "text/css")]
    {
        let asset = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(asset.status(), StatusCode::OK, "{path}");
        assert_eq!(asset.headers()[CONTENT_TYPE], content_type, "{path}");
        assert_eq!(asset.headers()[CACHE_CONTROL], "public, max-age=31536000, immutable", "{path}");
    }

    // A missing file is a page saying so, never cached as immutable.
    let missing = app.http.get(app.url("/assets/index-gone.js")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(missing.headers()[CACHE_CONTROL], "no-cache");

    // The API and GraphiQL keep their routes.
    let graphiql = app.http.get(app.url("/graphql")).header(ACCEPT, "text/html").send().await.unwrap();
    assert_eq!(graphiql.status(), StatusCode::OK);
    assert!(graphiql.text().await.unwrap().to_lowercase().contains("graphiql"));
    let data = app.data(None, "{ cinemas { id } }", json!({})).await;
    assert!(!data["cinemas"].as_array().unwrap().is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_a_web_build_still_serves_the_api() {
    let nowhere = std::env::temp_dir().join(format!("marquee-no-web-{}", uuid::Uuid::new_v4().simple()));
    let app = spawn_app_with(move |settings| settings.gateway.web_dir = nowhere).await;

    let root = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(root.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(root.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(root.text().await.unwrap().contains("web app is not built"));

    let data = app.data(None, "{ cinemas { id } }", json!({})).await;
    assert!(!data["cinemas"].as_array().unwrap().is_empty());
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
}

/// graphql-js 16's `getIntrospectionQuery()`, verbatim (tests/fixtures), is deeper
/// than the data depth limit; it must still be answered, while ordinary documents
/// keep that limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_introspection_query_gets_the_schema() {
    let app = spawn_app().await;
    let query = include_str!("../fixtures/introspection_query.graphql");
    let data = app.data(None, query, json!({})).await;
    let schema = &data["__schema"];
    assert_eq!(schema["queryType"]["name"], "Query");
    assert_eq!(schema["subscriptionType"]["name"], "Subscription");
    let types = schema["types"].as_array().unwrap();
    let seat = types.iter().find(|t| t["name"] == "Seat").expect("the Seat type");
    assert!(seat["fields"].as_array().unwrap().iter().any(|f| f["name"] == "position"));

    // The same depth beside an ordinary field goes through the data limits: refused.
    let type_ref = format!("type {{ {}name{} }}", "ofType { ".repeat(9), " }".repeat(9));
    let deep = format!("{{ me {{ id }} __schema {{ types {{ fields {{ {type_ref} }} }} }} }}");
    let (_, body) = app.post(None, &deep, json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nested too deep"), "{body}");
}
