//! The logout denylist under load: answers kept per token, a logout seen at once by
//! the gateway that handled it, one Redis call shared by concurrent checks, and a
//! Redis that does not answer turned into a retryable SERVICE_BUSY, never INTERNAL
//! and never a request let through unchecked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use marquee_auth::{Role, TokenKeys};
use marquee_kit::Secret;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, RETRY_AFTER, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::ops::metric;
use super::{TestApp, code, spawn_app_wired, spawn_app_with, token};

const ME: &str = "{ me { id } }";
/// Longer than any test: an answer that is refused was refused by the logout, not by
/// its cache period running out.
const TEN_MINUTES_MS: u64 = 600_000;

/// `gateway_denylist_lookups_total{result}`.
async fn lookups(app: &TestApp, result: &str) -> f64 {
    metric(app, &format!(r#"gateway_denylist_lookups_total{{result="{result}"}}"#)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_looked_up_once_per_cache_period_and_a_logout_is_seen_at_once_where_it_happened() {
    let app = spawn_app_with(|s| s.gateway.denylist_cache_ms = TEN_MINUTES_MS).await;
    let session = app.register_session("ada", None).await;
    let ada = token(&session);
    for _ in 0..5 {
        assert_eq!(app.data(Some(ada), ME, json!({})).await["me"]["id"], session["user"]["id"]);
    }
    assert_eq!(lookups(&app, "miss").await, 1.0, "one Redis call for five requests");
    assert_eq!(lookups(&app, "hit").await, 4.0);

    // Two more gateways over the same mesh: one asks Redis every time, one keeps answers.
    let uncached = app.another_gateway(|s| s.gateway.denylist_cache_ms = 0).await;
    let cached = app.another_gateway(|s| s.gateway.denylist_cache_ms = TEN_MINUTES_MS).await;
    for gateway in [&uncached, &cached] {
        assert_eq!(gateway.data(Some(ada), ME, json!({})).await["me"]["id"], session["user"]["id"]);
    }

    let logout = "mutation($r: String!) { logout(refreshToken: $r) }";
    let data = app.data(Some(ada), logout, json!({ "r": session["refreshToken"] })).await;
    assert_eq!(data["logout"], true);

    // The gateway that handled the logout refuses the token from the next request,
    // though its "not denied" had ten minutes to go, and without asking Redis.
    let error = app.error(Some(ada), ME, json!({})).await;
    assert_eq!(code(&error), "UNAUTHENTICATED", "{error}");
    assert_eq!(lookups(&app, "miss").await, 1.0);
    assert_eq!(lookups(&app, "hit").await, 6.0, "the logout and the refusal came from the cache");
    // A gateway that asks Redis refuses it as well.
    let error = uncached.error(Some(ada), ME, json!({})).await;
    assert_eq!(code(&error), "UNAUTHENTICATED", "{error}");
    assert_eq!(lookups(&uncached, "miss").await, 2.0);
    assert_eq!(lookups(&uncached, "hit").await, 0.0);
    // The price of the cache (README): a gateway that kept "not denied" before the
    // logout admits the token until its `denylist_cache_ms` runs out.
    assert_eq!(cached.data(Some(ada), ME, json!({})).await["me"]["id"], session["user"]["id"]);
    assert_eq!(lookups(&cached, "miss").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_does_not_answer_makes_unknown_tokens_service_busy_never_internal() {
    let mut proxy = None;
    let app = spawn_app_wired(
        |s| {
            s.gateway.denylist_cache_ms = TEN_MINUTES_MS;
            // Generous, so that the concurrent requests below surely meet one lookup.
            s.gateway.denylist_timeout_ms = 2000;
        },
        |s| {
            let (url, started) = MutableRedis::start(s.redis.url.expose());
            s.redis.url = Secret::new(url);
            proxy = Some(started);
        },
    )
    .await;
    let redis = proxy.unwrap();
    let session = app.register_session("ada", None).await;
    let known = token(&session);
    assert_eq!(app.data(Some(known), ME, json!({})).await["me"]["id"], session["user"]["id"]);

    redis.mute();
    // A token whose answer this gateway keeps carries its customer on.
    assert_eq!(app.data(Some(known), ME, json!({})).await["me"]["id"], session["user"]["id"]);

    // A valid token this gateway has not seen yet cannot be checked: eight requests
    // with it at once, half of them asking for graphql-response+json.
    let keys = TokenKeys::new(&app.settings.auth).unwrap();
    let user = session["user"]["id"].as_str().unwrap();
    let (unseen, _) = keys.issue(user, Role::Customer, Utc::now()).unwrap();
    let jti = keys.verify(&unseen).unwrap().jti;
    let requests = (0..8).map(|i| {
        let (app, unseen) = (&app, &unseen);
        let accept = if i % 2 == 0 { "application/graphql-response+json" } else { "application/json" };
        async move {
            app.http
                .post(app.url("/graphql"))
                .bearer_auth(unseen)
                .header(ACCEPT, accept)
                .json(&json!({ "query": ME }))
                .send()
                .await
                .unwrap()
        }
    });
    for response in futures::future::join_all(requests).await {
        // Refused, retryable, and told when to come back: never let through.
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        assert!(response.headers().get(WWW_AUTHENTICATE).is_none(), "the token is not at fault");
        let body: Value = response.json().await.unwrap();
        let error = &body["errors"][0];
        assert_eq!(code(error), "SERVICE_BUSY", "{body}");
        assert_eq!(error["extensions"]["retryable"], true, "{body}");
        assert_eq!(error["extensions"]["retryAfterSeconds"], 1, "{body}");
        assert!(body.get("data").is_none_or(Value::is_null), "{body}");
    }
    // The eight shared one lookup: Redis was asked about this token once.
    assert_eq!(redis.heard().matches(&jti).count(), 1);
    assert_eq!(lookups(&app, "error").await, 8.0);
    assert_eq!(metric(&app, r#"gateway_graphql_errors_total{code="SERVICE_BUSY"}"#).await, 8.0);
    assert_eq!(metric(&app, r#"gateway_graphql_errors_total{code="INTERNAL"}"#).await, 0.0);
    // Anonymous requests need no token check and go on being served.
    assert_eq!(app.data(None, ME, json!({})).await["me"], Value::Null);
}

/// A TCP proxy to Redis that the test can mute: from then on it keeps every connection
/// open but passes nothing on to Redis, like a Redis too busy to answer, and keeps what
/// the clients sent.
struct MutableRedis {
    muted: Arc<AtomicBool>,
    heard: Arc<Mutex<Vec<u8>>>,
    accepting: JoinHandle<()>,
}

impl MutableRedis {
    /// Proxies to the host and port of `url`; returns `url` pointed at the proxy.
    fn start(url: &str) -> (String, Self) {
        let (url, listener, target) = super::listen_in_front_of(url);
        let (muted, heard) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
        let accepting = tokio::spawn(Self::accept(listener, target, muted.clone(), heard.clone()));
        (url, Self { muted, heard, accepting })
    }

    async fn accept(
        listener: TcpListener,
        target: String,
        muted: Arc<AtomicBool>,
        heard: Arc<Mutex<Vec<u8>>>,
    ) {
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            let Ok(server) = TcpStream::connect(&target).await else { continue };
            let (muted, heard) = (muted.clone(), heard.clone());
            tokio::spawn(async move {
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let requests = async {
                    let mut buffer = vec![0; 16 * 1024];
                    loop {
                        let read = match from_client.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => read,
                        };
                        if muted.load(Ordering::SeqCst) {
                            heard.lock().unwrap().extend_from_slice(&buffer[..read]);
                        } else if to_server.write_all(&buffer[..read]).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::select! {
                    () = requests => {}
                    _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
                }
            });
        }
    }

    fn mute(&self) {
        self.muted.store(true, Ordering::SeqCst);
    }

    /// What clients sent while muted.
    fn heard(&self) -> String {
        String::from_utf8_lossy(&self.heard.lock().unwrap()).into_owned()
    }
}

impl Drop for MutableRedis {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
