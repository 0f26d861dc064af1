//! The moviegoer's web app (`web/`, built into `gateway.web_dir`) at `/`, on the same
//! origin as `/graphql`, so it works without Kong or CORS. Vite names every built
//! asset under `/assets/` by its content hash, so those are cached for a year and
//! never revalidated; everything else (`index.html`) is revalidated on every load, so
//! a new build reaches browsers at once. Every answer carries a Content-Security-Policy
//! that allows only this origin's scripts, styles and connections (the GraphQL API and
//! its WebSocket), which is what keeps an injected script from reading the session.

use std::path::Path;

use axum::Router;
use axum::extract::Request;
use axum::handler::HandlerWithoutStateExt;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use tower_http::services::ServeDir;

/// Where Vite writes the hashed bundles (`build.assetsDir`).
const HASHED_PREFIX: &str = "/assets/";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";
/// Posters may come from any https host; the API and its WebSocket are same-origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; \
     connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The app's files when `dir` holds a build, else a page that says the app is not built
/// (the API is unaffected either way).
pub(super) fn service<S: Clone + Send + Sync + 'static>(dir: &Path) -> Router<S> {
    let index = dir.join("index.html");
    let router = if index.is_file() {
        tracing::info!(web.dir = %dir.display(), "serving the web app at /");
        let files = ServeDir::new(dir)
            .append_index_html_on_directories(true)
            .not_found_service(not_found.into_service());
        Router::new().fallback_service(files)
    } else {
        tracing::warn!(web.dir = %dir.display(), "no web app build here; / answers 503 (npm run build in web/)");
        Router::new().fallback(not_built)
    };
    router.layer(axum::middleware::from_fn(headers))
}

async fn headers(request: Request, next: Next) -> Response {
    let hashed = request.uri().path().starts_with(HASHED_PREFIX);
    let mut response = next.run(request).await;
    let cache = if hashed && response.status().is_success() { IMMUTABLE } else { REVALIDATE };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// A path that is no file of the build (the app routes with `#/…`, so a deep link
/// never needs the server).
async fn not_found() -> Html<String> {
    page("Page not found", "<p>There is nothing here. <a href=\"/\">Go to showtimes</a>.</p>")
}

async fn not_built() -> Response {
    let body = "<p>The Marquee web app is not built on this server, so there is nothing to show \
         here yet. The GraphQL API at <a href=\"/graphql\">/graphql</a> works as usual.</p>\
         <p>Build it with <code>npm ci &amp;&amp; npm run build</code> in <code>web/</code> \
         (<code>scripts/up</code> does this), or point <code>gateway.web_dir</code> \
         (<code>MARQUEE_GATEWAY__WEB_DIR</code>) at a build.</p>";
    (StatusCode::SERVICE_UNAVAILABLE, page("Web app not available", body)).into_response()
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Marquee</title></head><body><main><h1>{title}</h1>{body}</main></body></html>"
    ))
}
