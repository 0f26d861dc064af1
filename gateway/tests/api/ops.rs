//! What operators rely on: rate limits, batches, introspection switches, request
//! ids, Prometheus metrics and readiness.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use marquee_kit::Secret;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{TestApp, code, spawn_app, spawn_app_wired, spawn_app_with};

/// The value of one series in `/metrics`, e.g. `gateway_subscriptions_active` or
/// `gateway_graphql_errors_total{code="NOT_FOUND"}`; 0 when not exported (yet).
pub async fn metric(app: &TestApp, series: &str) -> f64 {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// Polls `/metrics` until `series` reads `want`; fails after a generous deadline.
pub async fn wait_for_metric(app: &TestApp, series: &str, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let value = metric(app, series).await;
        if value == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{series} stayed {value}, expected {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ME: &str = "{ me { id } }";

impl TestApp {
    /// `POST /graphql` with extra headers; returns the raw response.
    async fn post_with(
        &self,
        token: Option<&str>,
        body: Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.http.post(self.url("/graphql")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("gateway unreachable")
    }
}

/// Asserts a RATE_LIMITED refusal and returns its retry-after seconds.
async fn assert_limited(response: reqwest::Response, window: u64) -> u64 {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let header: u64 = response.headers()[RETRY_AFTER].to_str().unwrap().parse().unwrap();
    let body: Value = response.json().await.unwrap();
    let error = &body["errors"][0];
    assert_eq!(code(error), "RATE_LIMITED", "{body}");
    assert_eq!(error["extensions"]["retryAfterSeconds"], header, "{body}");
    assert!((1..=window).contains(&header), "retry after {header} s in a {window} s window");
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_rate_limited_per_user_and_per_anonymous_address() {
    let app = spawn_app_with(|settings| {
        let limits = &mut settings.gateway.rate_limit;
        (limits.window_seconds, limits.per_user, limits.per_ip) = (120, 3, 4);
        settings.gateway.trust_forwarded_for = true;
    })
    .await;
    // Registering is anonymous: two of the loopback address's four.
    let (ada, _) = app.register("ada").await;
    let (bob, _) = app.register("bob").await;

    for _ in 0..3 {
        app.data(Some(&ada), ME, json!({})).await;
    }
    assert_limited(app.post_with(Some(&ada), json!({ "query": ME }), &[]).await, 120).await;
    // graphql-response+json clients get the same 429.
    let accept = [(ACCEPT.as_str(), "application/graphql-response+json")];
    assert_limited(app.post_with(Some(&ada), json!({ "query": ME }), &accept).await, 120).await;

    // Bob has his own budget; a batch spends one per operation.
    app.data(Some(&bob), ME, json!({})).await;
    let batch = json!([{ "query": ME }, { "query": ME }, { "query": ME }]);
    assert_limited(app.post_with(Some(&bob), batch, &[]).await, 120).await;

    // Anonymous callers spend their address's budget; signed-in ones did not touch it.
    app.data(None, ME, json!({})).await;
    app.data(None, ME, json!({})).await;
    assert_limited(app.post_with(None, json!({ "query": ME }), &[]).await, 120).await;

    // Behind Kong the address is the last X-Forwarded-For entry, the one Kong added.
    let kong_saw = |client: &'static str| [("x-forwarded-for", client)];
    for _ in 0..4 {
        let response = app.post_with(None, json!({ "query": ME }), &kong_saw("203.0.113.7")).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let spoofed = app.post_with(None, json!({ "query": ME }), &kong_saw("198.51.100.1, 203.0.113.7")).await;
    assert_limited(spoofed, 120).await;
    let other = app.post_with(None, json!({ "query": ME }), &kong_saw("203.0.113.7, 198.51.100.1")).await;
    assert_eq!(other.status(), StatusCode::OK);

    // A WebSocket connection spends one of its address's budget too.
    let mut request = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    let upgrade = tokio_tungstenite::connect_async(request).await;
    match upgrade {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert!(response.headers().contains_key(RETRY_AFTER));
        }
        other => panic!("expected a refused upgrade, got {other:?}"),
    }

    assert_eq!(metric(&app, "gateway_rate_limited_total").await, 6.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_request_ids_and_metrics_are_served() {
    let app = spawn_app().await;

    // A batch is answered in order; too many operations, or none, are refused whole.
    let batch = json!([{ "query": "{ cinemas { city } }" }, { "query": "{ movie(id: \"x y\") { id } }" }]);
    let response = app.post_with(None, batch, &[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answers: Value = response.json().await.unwrap();
    assert_eq!(answers[0]["data"]["cinemas"].as_array().unwrap().len(), 2, "{answers}");
    assert_eq!(code(&answers[1]["errors"][0]), "BAD_USER_INPUT", "{answers}");
    let max = app.settings.gateway.max_batch_size;
    let too_many = Value::Array(vec![json!({ "query": "{ cinemas { city } }" }); max + 1]);
    for refused in [too_many, json!([])] {
        let response = app.post_with(None, refused, &[]).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body: Value = response.json().await.unwrap();
        assert_eq!(code(&body["errors"][0]), "BAD_USER_INPUT", "{body}");
    }

    // Request ids: the caller's X-Request-ID, else Kong's, else a new one.
    let id_of =
        |response: &reqwest::Response| response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let query = json!({ "query": "{ cinemas { city } }" });
    let kong = app.post_with(None, query.clone(), &[("kong-request-id", "kong-7f3a")]).await;
    assert_eq!(id_of(&kong), "kong-7f3a");
    let both = app
        .post_with(None, query.clone(), &[("kong-request-id", "kong-1"), ("x-request-id", "mine-1")])
        .await;
    assert_eq!(id_of(&both), "mine-1");
    let fresh = app.post_with(None, query, &[]).await;
    assert!(uuid::Uuid::parse_str(&id_of(&fresh)).is_ok());

    // Introspection is on outside production.
    let (_, body) = app.post(None, "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query", "{body}");

    // Prometheus: requests and latency by route and status, errors by code, live gauges.
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert!(response.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("text/plain"));
    let body = response.text().await.unwrap();
    assert!(body.contains("# TYPE gateway_http_request_duration_seconds histogram"), "{body}");
    assert!(
        body.contains(r#"gateway_http_request_duration_seconds_bucket{route="/graphql",le="+Inf"}"#),
        "{body}"
    );
    assert!(metric(&app, r#"gateway_http_requests_total{route="/graphql",status="200"}"#).await >= 4.0);
    assert_eq!(metric(&app, r#"gateway_http_requests_total{route="/graphql",status="400"}"#).await, 2.0);
    // One bad id in the batch, two refused batches.
    assert_eq!(metric(&app, r#"gateway_graphql_errors_total{code="BAD_USER_INPUT"}"#).await, 3.0);
    assert!(body.contains("gateway_subscriptions_active 0"), "{body}");
    assert!(body.contains("gateway_seat_streams_active 0"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_switches_turn_introspection_and_graphiql_off() {
    let app = spawn_app_with(|settings| {
        settings.gateway.introspection = false;
        settings.gateway.graphiql = false;
    })
    .await;
    let (status, body) = app.post(None, "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(code(&body["errors"][0]), "FORBIDDEN", "{body}");
    assert!(body["data"].is_null(), "{body}");
    let fragment = "query { ...F } fragment F on Query { __type(name: \"Movie\") { name } }";
    assert_eq!(code(&app.error(None, fragment, json!({})).await), "FORBIDDEN");
    // __typename is not introspection of the schema.
    assert_eq!(app.data(None, "{ __typename }", json!({})).await["__typename"], "Query");
    // Ordinary queries still run.
    let data = app.data(None, "{ cinemas { city } }", json!({})).await;
    assert_eq!(data["cinemas"].as_array().unwrap().len(), 2);

    // A browser gets no GraphiQL page, just the API's answer to a GET without a query.
    let response =
        app.http.get(app.url("/graphql")).header(ACCEPT, "text/html,*/*;q=0.8").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(!response.text().await.unwrap().to_lowercase().contains("graphiql"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_or_a_coded_error_never_a_5xx() {
    let app = spawn_app().await;
    let json = "application/json";
    let deep_document = format!("{}{}", "{ movies ".repeat(5_000), "}".repeat(5_000));
    let deep_variables = format!(
        r#"{{"query": "{{ cinemas {{ city }} }}", "variables": {{"v": {}1{}}}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let huge_search =
        format!(r#"{{ movies(search: "{}") {{ pageInfo {{ hasNextPage }} }} }}"#, "x".repeat(60_000));
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("invalid JSON", json, br#"{"query": "{ cinemas "#.to_vec()),
        ("not an object", json, b"42".to_vec()),
        ("query not a string", json, br#"{"query": 42}"#.to_vec()),
        ("variables not an object", json, br#"{"query": "{ cinemas { city } }", "variables": "v"}"#.to_vec()),
        ("wrong content type", "text/plain", b"{ cinemas { city } }".to_vec()),
        ("form post", "application/x-www-form-urlencoded", b"query=%7B%20cinemas%20%7B%20city%20%7D%20%7D".to_vec()),
        ("unknown field", json, br#"{"query": "{ cinemas { nope } }"}"#.to_vec()),
        (
            "wrong variable type",
            json,
            br#"{"query": "query($n: Int) { movies(first: $n) { pageInfo { hasNextPage } } }", "variables": {"n": "ten"}}"#.to_vec(),
        ),
        ("huge string", json, serde_json::to_vec(&json!({ "query": huge_search })).unwrap()),
        ("deeply nested document", json, serde_json::to_vec(&json!({ "query": deep_document })).unwrap()),
        ("deeply nested variables", json, deep_variables.into_bytes()),
    ];
    for (name, content_type, body) in cases {
        let response = app
            .http
            .post(app.url("/graphql"))
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(status.is_client_error() || status == StatusCode::OK, "{name}: {status}");
        let body: Value = response.json().await.unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        let errors = body["errors"].as_array().unwrap_or_else(|| panic!("{name}: no errors in {body}"));
        assert!(errors.iter().all(|e| e["extensions"]["code"].is_string()), "{name}: {body}");
        assert!(errors.iter().all(|e| e["extensions"]["code"] != "INTERNAL"), "{name}: {body}");
    }
    // A 10 MB body is refused from its Content-Length, before it is read (a client
    // still writing it would see the connection close, so this one waits).
    let mut socket = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: {json}\r\nContent-Length: {}\r\n\r\n",
        app.addr,
        10 << 20
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 64];
    let read = socket.read(&mut answer).await.unwrap();
    let status_line = String::from_utf8_lossy(&answer[..read]);
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");

    // The gateway is still fine.
    assert_eq!(
        app.data(None, "{ cinemas { city } }", json!({})).await["cinemas"].as_array().unwrap().len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_user_service_is_a_503_with_retry_after() {
    let app = spawn_app_with(|s| {
        // One hash at a time and no queue, at a cost (64 MiB, 3 passes) that keeps the
        // slot busy while the other registrations arrive: those are refused.
        s.auth.hash_concurrency = 1;
        s.auth.hash_queue_per_slot = 0;
        s.auth.argon2_memory_kib = 65536;
        s.auth.argon2_iterations = 3;
    })
    .await;
    const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { token } }";
    const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";
    let attempts = (0..16).map(|i| {
        let app = &app;
        // Half ask for graphql-response+json, half are legacy JSON clients.
        let accept = if i % 2 == 0 { GRAPHQL_RESPONSE } else { "application/json" };
        async move {
            let input = json!({ "input": {
                "email": format!("fan{i}@example.com"), "password": "correct horse battery", "name": "Fan" } });
            let body = json!({ "query": REGISTER, "variables": input });
            (accept, app.post_with(None, body, &[(ACCEPT.as_str(), accept)]).await)
        }
    });
    let responses = futures::future::join_all(attempts).await;

    let (mut registered, mut busy_graphql_response, mut busy_json) = (0, 0, 0);
    for (accept, response) in responses {
        let status = response.status();
        let retry_after = response.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap();
        if body.get("errors").is_none() {
            assert_eq!(status, StatusCode::OK);
            assert!(body["data"]["register"]["token"].is_string(), "{body}");
            registered += 1;
            continue;
        }
        let error = &body["errors"][0];
        assert_eq!(code(error), "SERVICE_BUSY", "{body}");
        assert_eq!(error["extensions"]["retryAfterSeconds"], 1, "{body}");
        assert_eq!(error["extensions"]["retryable"], true, "{body}");
        assert!(body["data"].is_null(), "{body}");
        // Both media types: the server is refusing, as with a 429.
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{accept}: {body}");
        assert_eq!(retry_after.as_deref(), Some("1"));
        if accept == GRAPHQL_RESPONSE {
            busy_graphql_response += 1;
        } else {
            busy_json += 1;
        }
    }
    assert!(
        registered >= 1 && busy_graphql_response >= 1 && busy_json >= 1,
        "{registered} {busy_graphql_response} {busy_json}"
    );
    let counted = metric(&app, r#"gateway_graphql_errors_total{code="SERVICE_BUSY"}"#).await;
    assert_eq!(counted, f64::from(busy_graphql_response + busy_json));
}

/// A TCP proxy the test can cut: cutting closes every open connection and closes each
/// new one as soon as it is accepted, until the proxy is restored.
struct CuttableProxy {
    open: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl CuttableProxy {
    /// Proxies to the host and port of `url` (e.g. `redis://127.0.0.1:6379/0`); returns
    /// `url` pointed at the proxy instead.
    fn start(url: &str) -> (String, Self) {
        let (url, listener, target) = super::listen_in_front_of(url);
        let (open, _) = watch::channel(true);
        let accepting = tokio::spawn(Self::accept(listener, target, open.clone()));
        (url, Self { open, accepting })
    }

    async fn accept(listener: TcpListener, target: String, open: watch::Sender<bool>) {
        loop {
            let Ok((mut client, _)) = listener.accept().await else { continue };
            if !*open.borrow() {
                continue; // dropped: closed at once
            }
            let mut cut = open.subscribe();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut server) = TcpStream::connect(&target).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = cut.wait_for(|open| !open) => {}
                }
            });
        }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

/// Polls `/readyz` until it answers `want`; returns the body. Fails after a deadline.
async fn wait_for_readiness(app: &TestApp, want: StatusCode) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let response = app.http.get(app.url("/readyz")).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if status == want {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_gateways_own_redis() {
    let mut proxy = None;
    let app = spawn_app_wired(
        |_| {},
        |settings| {
            let (url, started) = CuttableProxy::start(settings.redis.url.expose());
            settings.redis.url = Secret::new(url);
            proxy = Some(started);
        },
    )
    .await;
    let redis = proxy.unwrap();
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());

    // Without its Redis the gateway can check no token and count no request: it is
    // alive but not ready, and says which dependency is missing.
    redis.cut();
    let body = wait_for_readiness(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(body, json!({ "status": "unavailable", "unready": ["redis"] }));
    let healthz = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);

    // Once Redis answers again, so does readiness, on the same gateway.
    redis.restore();
    let body = wait_for_readiness(&app, StatusCode::OK).await;
    assert_eq!(body, json!({ "status": "ready" }));
}
