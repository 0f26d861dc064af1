//! The gateway over real HTTP, in front of the real user, cinema, payment, booking
//! and notification services (each on a random port, isolated per test) on the real
//! PostgreSQL, MongoDB-wire server, Redis and RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod cors;
mod denylist;
mod live;
mod ops;
mod schema;
mod web;

use std::net::SocketAddr;
use std::time::Duration;

use chrono::Utc;
use marquee_auth::{Role, TokenKeys};
use marquee_e2e::MeshSettings as Settings;
use marquee_e2e::{Mesh, Service};
use marquee_kit::Secret;
use marquee_kit::shutdown::Shutdown;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONNECTION, CONTENT_TYPE};
use serde_json::{Value, json};
use tokio_util::sync::DropGuard;

struct TestApp {
    addr: SocketAddr,
    settings: Settings,
    http: reqwest::Client,
    /// The mesh, this gateway included: stops every service when the test ends, pass
    /// or fail. `None` for an extra gateway over another app's mesh…
    _mesh: Option<Mesh>,
    /// …which this stops instead.
    _stop: Option<DropGuard>,
}

/// Starts every upstream in dependency order (user, cinema, payment → booking,
/// notification), then the gateway pointed at their real addresses.
async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// `spawn_app` with the test's own tweaks to the settings (limits, switches).
async fn spawn_app_with(configure: impl FnOnce(&mut Settings) + Send) -> TestApp {
    spawn_app_wired(configure, |_| {}).await
}

/// `spawn_app_with`, and then `wire` may reroute the gateway's upstream URLs (e.g.
/// through a recording proxy) once the services run.
async fn spawn_app_wired(
    configure: impl FnOnce(&mut Settings) + Send,
    wire: impl FnOnce(&mut Settings) + Send,
) -> TestApp {
    let mesh = Mesh::builder()
        .configure(|settings| {
            settings.user.bootstrap_admin_email = Some(ADMIN_EMAIL.to_owned());
            settings.user.bootstrap_admin_password = Some(Secret::new(ADMIN_PASSWORD.to_owned()));
        })
        .configure(configure)
        .before_gateway(wire)
        .start()
        .await
        .expect("the mesh starts");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let addr = mesh.addr(Service::Gateway).unwrap();
    TestApp { addr, settings: mesh.settings.clone(), http, _mesh: Some(mesh), _stop: None }
}

impl TestApp {
    /// Another gateway over this app's mesh with `configure`d settings of its own (its
    /// own denylist cache, CORS), stopped when it is dropped.
    async fn another_gateway(&self, configure: impl FnOnce(&mut marquee_gateway::Settings)) -> TestApp {
        let mut settings = self.settings.gateway();
        configure(&mut settings);
        let gateway = marquee_gateway::Application::build(settings).await.unwrap();
        let stop = Shutdown::new();
        let other = TestApp {
            addr: gateway.addr(),
            settings: self.settings.clone(),
            http: self.http.clone(),
            _mesh: None,
            _stop: Some(stop.clone().drop_guard()),
        };
        tokio::spawn(gateway.run_until_stopped(stop));
        other
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET /graphql?query=…`.
    fn get_url(&self, query: &str) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&self.url("/graphql")).unwrap();
        url.query_pairs_mut().append_pair("query", query);
        url
    }

    /// `POST /graphql` as a JSON client; returns the HTTP status and the body.
    async fn post(&self, token: Option<&str>, query: &str, variables: Value) -> (StatusCode, Value) {
        let mut request =
            self.http.post(self.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("gateway unreachable");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// A request that must succeed: returns `data`.
    async fn data(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(token, query, variables).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// A request that must fail: returns the first error.
    async fn error(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(token, query, variables).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["errors"][0].clone()
    }

    async fn register(&self, name: &str) -> (String, String) {
        let email = format!("{name}.{}@example.com", uuid::Uuid::new_v4().simple());
        let data = self
            .data(
                None,
                "mutation($input: RegisterInput!) { register(input: $input) { token user { id email name } } }",
                json!({ "input": { "email": email, "password": "correct horse battery", "name": name } }),
            )
            .await;
        assert_eq!(data["register"]["user"]["email"], email.as_str());
        (data["register"]["token"].as_str().unwrap().to_owned(), email)
    }

    async fn seat_map(&self, showtime: &str) -> Vec<Value> {
        let query = "query($id: ID!) { showtime(id: $id) { seatMap { showtimeId seats { id row number category state price { amount currency } } } } }";
        let data = self.data(None, query, json!({ "id": showtime })).await;
        assert_eq!(data["showtime"]["seatMap"]["showtimeId"], showtime);
        data["showtime"]["seatMap"]["seats"].as_array().unwrap().clone()
    }

    async fn first_showtime(&self) -> String {
        let data = self.data(None, "{ showtimes { id } }", json!({})).await;
        // The latest one: days away, so no test meets a showtime starting mid-test.
        let showtimes = data["showtimes"].as_array().expect("a showtime list");
        showtimes.last().and_then(|s| s["id"].as_str()).expect("the demo catalog has showtimes").to_owned()
    }
}

fn state_of<'a>(seats: &'a [Value], id: &str) -> &'a str {
    seats.iter().find(|s| s["id"] == id).and_then(|s| s["state"].as_str()).unwrap()
}

const ADMIN_EMAIL: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin password from config";
const AUTH_FIELDS: &str =
    "token refreshToken user { id email role phone notificationPreferences { email sms } }";

fn code(error: &Value) -> &str {
    error["extensions"]["code"].as_str().unwrap_or_else(|| panic!("error without a code: {error}"))
}

const HOLD: &str = "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id status total { amount currency } expiresAt seats { seatId category price { amount } } showtime { id } } }";
const PAY: &str = "mutation($input: PayBookingInput!) { payBooking(input: $input) { id status paymentId } }";

fn hold_input(showtime: &str, seats: &[&str]) -> Value {
    json!({ "input": { "showtimeId": showtime, "seatIds": seats, "idempotencyKey": uuid::Uuid::new_v4().to_string() } })
}

fn pay_input(booking: &str, method: &str) -> Value {
    json!({ "input": { "bookingId": booking, "paymentMethod": method, "idempotencyKey": uuid::Uuid::new_v4().to_string() } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn movies_page_through_the_whole_catalog_with_first_and_after() {
    let app = spawn_app().await;
    let query = "query($first: Int, $after: String) { movies(first: $first, after: $after) {
        edges { cursor node { id title runtimeMinutes genres releaseDate } } pageInfo { hasNextPage endCursor } } }";

    let mut titles = Vec::new();
    let mut after = Value::Null;
    let mut first_page = Value::Null;
    loop {
        let data = app.data(None, query, json!({ "first": 3, "after": after })).await;
        let connection = &data["movies"];
        let edges = connection["edges"].as_array().unwrap();
        assert!(edges.len() <= 3);
        titles.extend(edges.iter().map(|e| e["node"]["title"].as_str().unwrap().to_owned()));
        if first_page.is_null() {
            first_page = connection.clone();
        }
        if connection["pageInfo"]["hasNextPage"] == false {
            break;
        }
        assert_eq!(connection["pageInfo"]["endCursor"], edges.last().unwrap()["cursor"]);
        after = connection["pageInfo"]["endCursor"].clone();
    }
    titles.sort();
    assert_eq!(
        titles,
        ["Nightshift at the Marquee", "Orbit of Ashes", "Paper Lanterns", "The Last Projectionist"],
        "every demo movie exactly once"
    );

    // Any edge's cursor resumes right after that edge, not just endCursor.
    let first_edges = first_page["edges"].as_array().unwrap();
    let data = app.data(None, query, json!({ "first": 1, "after": first_edges[0]["cursor"] })).await;
    assert_eq!(data["movies"]["edges"][0]["node"]["id"], first_edges[1]["node"]["id"]);

    // Search narrows the catalog; bad paging input is the client's error.
    let data = app.data(None, r#"{ movies(search: "orbit") { edges { node { title } } } }"#, json!({})).await;
    assert_eq!(data["movies"]["edges"][0]["node"]["title"], "Orbit of Ashes");
    let error =
        app.error(None, r#"{ movies(after: "not-a-cursor") { pageInfo { hasNextPage } } }"#, json!({})).await;
    assert_eq!(code(&error), "BAD_USER_INPUT");
    let error = app.error(None, "{ movies(first: 1000) { pageInfo { hasNextPage } } }", json!({})).await;
    assert_eq!(code(&error), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn showtimes_carry_their_movie_cinema_prices_and_seat_map() {
    let app = spawn_app().await;
    let data = app.data(None, r#"{ cinemas(city: "Berlin") { id name city timeZone } }"#, json!({})).await;
    let cinemas = data["cinemas"].as_array().unwrap();
    assert_eq!(cinemas.len(), 1);
    assert_eq!(cinemas[0]["timeZone"], "Europe/Berlin");
    let berlin = cinemas[0]["id"].as_str().unwrap();

    let query = "query($cinema: ID) { showtimes(cinemaId: $cinema) {
        id screenName startsAt endsAt movie { title } cinema { city } prices { category price { amount currency } } } }";
    let data = app.data(None, query, json!({ "cinema": berlin })).await;
    let showtimes = data["showtimes"].as_array().unwrap();
    assert!(!showtimes.is_empty());
    for showtime in showtimes {
        assert_eq!(showtime["cinema"]["city"], "Berlin");
        assert!(showtime["movie"]["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(showtime["startsAt"].as_str().unwrap() < showtime["endsAt"].as_str().unwrap());
        assert!(showtime["prices"].as_array().unwrap().iter().all(|p| p["price"]["currency"] == "EUR"));
    }

    // A date filter takes the custom Date scalar; a malformed date is rejected.
    let first_day = &showtimes[0]["startsAt"].as_str().unwrap()[..10];
    let query = "query($d: Date) { showtimes(date: $d) { id } }";
    assert!(
        !app.data(None, query, json!({ "d": first_day })).await["showtimes"].as_array().unwrap().is_empty()
    );
    let error = app.error(None, query, json!({ "d": "next tuesday" })).await;
    assert_eq!(code(&error), "BAD_USER_INPUT");

    let seats = app.seat_map(showtimes[0]["id"].as_str().unwrap()).await;
    assert!(!seats.is_empty());
    assert!(seats.iter().all(|s| s["state"] == "AVAILABLE" && s["price"]["amount"].as_i64().unwrap() > 0));

    // Unknown ids are null, malformed ids are the client's error.
    let data =
        app.data(None, r#"{ showtime(id: "00000000-0000-4000-8000-000000000000") { id } }"#, json!({})).await;
    assert!(data["showtime"].is_null());
    let error = app.error(None, r#"{ movie(id: "x y") { id } }"#, json!({})).await;
    assert_eq!(code(&error), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_register_log_in_and_see_themselves() {
    let app = spawn_app().await;
    let (token, email) = app.register("ada").await;

    let me = "{ me { id email name role bookings { nodes { id } } notifications { nodes { id } } } }";
    let data = app.data(Some(&token), me, json!({})).await;
    assert_eq!(data["me"]["email"], email.as_str());
    assert_eq!(data["me"]["name"], "ada");
    assert_eq!(data["me"]["role"], "CUSTOMER");
    assert_eq!(data["me"]["bookings"]["nodes"], json!([]));

    let login = "mutation($input: LoginInput!) { login(input: $input) { token user { email } } }";
    let data = app
        .data(None, login, json!({ "input": { "email": email, "password": "correct horse battery" } }))
        .await;
    let second = data["login"]["token"].as_str().unwrap();
    assert_eq!(app.data(Some(second), "{ me { email } }", json!({})).await["me"]["email"], email.as_str());

    let error =
        app.error(None, login, json!({ "input": { "email": email, "password": "wrong password!" } })).await;
    assert_eq!(code(&error), "UNAUTHENTICATED");

    // Anonymous callers are nobody, not an error.
    assert!(app.data(None, "{ me { id } }", json!({})).await["me"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_operations_need_a_valid_token() {
    let app = spawn_app().await;
    let showtime = app.first_showtime().await;

    let (status, body) = app.post(None, HOLD, hold_input(&showtime, &["A1"])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(code(&body["errors"][0]), "UNAUTHENTICATED");
    assert!(body["data"].is_null());
    let error = app.error(None, r#"{ booking(id: "b1") { id } }"#, json!({})).await;
    assert_eq!(code(&error), "UNAUTHENTICATED");

    // A token signed with another key, an expired one, or garbage is refused even
    // for public queries, never downgraded to anonymous.
    let mut forger = app.settings.auth.clone();
    forger.jwt_secret = Secret::new("an-attacker-chosen-secret-of-32-bytes!!".to_owned());
    let (forged, _) = TokenKeys::new(&forger).unwrap().issue("someone", Role::Admin, Utc::now()).unwrap();
    let keys = TokenKeys::new(&app.settings.auth).unwrap();
    let (expired, _) =
        keys.issue("someone", Role::Customer, Utc::now() - chrono::Duration::hours(2)).unwrap();
    for token in [forged.as_str(), expired.as_str(), "not.a.jwt"] {
        let (status, body) =
            app.post(Some(token), "{ movies { pageInfo { hasNextPage } } }", json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(code(&body["errors"][0]), "UNAUTHENTICATED", "{body}");
        assert!(body.get("data").is_none_or(Value::is_null));
    }

    // graphql-response+json clients get the HTTP status too.
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&expired)
        .header(ACCEPT, "application/graphql-response+json")
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_seats_are_paid_for_and_only_their_owner_sees_the_booking() {
    let app = spawn_app().await;
    let (ada, _) = app.register("ada").await;
    let (bob, _) = app.register("bob").await;
    let showtime = app.first_showtime().await;
    let seats = app.seat_map(&showtime).await;
    let free: Vec<&str> = seats
        .iter()
        .filter(|s| s["state"] == "AVAILABLE")
        .map(|s| s["id"].as_str().unwrap())
        .take(2)
        .collect();
    let price_of =
        |id: &str| seats.iter().find(|s| s["id"] == id).unwrap()["price"]["amount"].as_i64().unwrap();

    let held = app.data(Some(&ada), HOLD, hold_input(&showtime, &free)).await["holdSeats"].clone();
    assert_eq!(held["status"], "HELD");
    assert_eq!(held["showtime"]["id"], showtime.as_str());
    assert_eq!(held["total"]["amount"].as_i64().unwrap(), price_of(free[0]) + price_of(free[1]));
    assert!(held["expiresAt"].is_string());
    let booking = held["id"].as_str().unwrap();
    let map = app.seat_map(&showtime).await;
    assert!(free.iter().all(|s| state_of(&map, s) == "HELD"));

    // Someone else reaching for a held seat learns which one is taken.
    let error = app.error(Some(&bob), HOLD, hold_input(&showtime, &[free[1]])).await;
    assert_eq!(code(&error), "SEAT_UNAVAILABLE");
    assert_eq!(error["extensions"]["seatIds"], json!([free[1]]));

    let paid = app.data(Some(&ada), PAY, pay_input(booking, "pm_card_ok")).await["payBooking"].clone();
    assert_eq!(paid["status"], "CONFIRMED");
    assert!(paid["paymentId"].is_string());
    let map = app.seat_map(&showtime).await;
    assert!(free.iter().all(|s| state_of(&map, s) == "BOOKED"));

    let query = "query($id: ID!) { booking(id: $id) { id status seats { seatId } } }";
    let own = app.data(Some(&ada), query, json!({ "id": booking })).await;
    assert_eq!(own["booking"]["status"], "CONFIRMED");
    let mine = app.data(Some(&ada), "{ me { bookings { nodes { id status } } } }", json!({})).await;
    assert_eq!(mine["me"]["bookings"]["nodes"], json!([{ "id": booking, "status": "CONFIRMED" }]));
    // Another customer cannot tell the booking exists.
    let (status, body) = app.post(Some(&bob), query, json!({ "id": booking })).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["data"]["booking"].is_null(), "{body}");
    assert!(body.get("errors").is_none_or(|e| e.as_array().unwrap().iter().all(|e| code(e) == "NOT_FOUND")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_is_payment_declined_and_frees_the_seats() {
    let app = spawn_app().await;
    let (ada, _) = app.register("ada").await;
    let showtime = app.first_showtime().await;
    let held = app.data(Some(&ada), HOLD, hold_input(&showtime, &["A1"])).await;
    let booking = held["holdSeats"]["id"].as_str().unwrap();

    let error = app.error(Some(&ada), PAY, pay_input(booking, "pm_card_declined")).await;
    assert_eq!(code(&error), "PAYMENT_DECLINED");
    assert!(error["message"].as_str().unwrap().contains("declined"));

    let status = app
        .data(Some(&ada), "query($id: ID!) { booking(id: $id) { status } }", json!({ "id": booking }))
        .await;
    assert_eq!(status["booking"]["status"], "PAYMENT_FAILED");
    assert_eq!(state_of(&app.seat_map(&showtime).await, "A1"), "AVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_follows_graphql_over_http() {
    let app = spawn_app().await;
    let graphql = app.url("/graphql");

    // GET runs queries from the query string...
    let response = app.http.get(app.get_url("{ cinemas { city } }")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"]["cinemas"].as_array().unwrap().len(), 2);

    // ...but never mutations.
    let mutation = r#"mutation { login(input: { email: "a@b.c", password: "x" }) { token } }"#;
    let response = app.http.get(app.get_url(mutation)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");

    // Browsers get GraphiQL.
    let response = app.http.get(&graphql).header(ACCEPT, "text/html,*/*;q=0.8").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().to_lowercase().contains("graphiql"));

    // Malformed JSON is the client's fault, not a server error.
    let response = app
        .http
        .post(&graphql)
        .header(CONTENT_TYPE, "application/json")
        .body(r#"{"query": "{ movies { "#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(code(&response.json::<Value>().await.unwrap()["errors"][0]), "BAD_USER_INPUT");

    // Bodies over gateway.max_body_bytes are refused before parsing.
    let padding = "x".repeat(app.settings.gateway.max_body_bytes + 1);
    let response = app
        .http
        .post(&graphql)
        .json(&json!({ "query": "{ me { id } }", "pad": padding }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The unread body ends the connection; the answer says so, so the client does not
    // reuse it for the next request (which then failed with an incomplete message).
    assert_eq!(response.headers()[CONNECTION], "close");

    // graphql-response+json: asked for by name, and request errors get a 4xx.
    let response = app
        .http
        .post(&graphql)
        .header(ACCEPT, "application/graphql-response+json")
        .json(&json!({ "query": "{ movies { " }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/graphql-response+json");
    // The same syntax error for a legacy JSON client is a 200 with a coded error.
    let (status, body) = app.post(None, "{ movies { ", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(code(&body["errors"][0]), "BAD_USER_INPUT");

    // Absurdly deep documents are refused by the depth limit; introspection has its own,
    // deeper one (tools' standard query nests 15 deep: web::the_standard_introspection_query…).
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {}name{} }} }} }} }} }}",
        "ofType { ".repeat(18),
        " }".repeat(18)
    );
    let (_, body) = app.post(None, &deep, json!({})).await;
    assert_eq!(code(&body["errors"][0]), "BAD_USER_INPUT");
    assert!(body["errors"][0]["message"].as_str().unwrap().to_lowercase().contains("nested"), "{body}");

    // A caller's request id is kept and echoed.
    let response =
        app.http.get(app.url("/healthz")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_upstreams() {
    let app = spawn_app().await;
    let response = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{}", response.text().await.unwrap());

    // A gateway whose booking service is gone is alive but not ready.
    let mut settings = app.settings.clone();
    settings.upstream.booking_url = "http://127.0.0.1:1".to_owned();
    let lonely = marquee_gateway::Application::build(settings.gateway()).await.unwrap();
    let addr = lonely.addr();
    let stop = Shutdown::new();
    tokio::spawn(lonely.run_until_stopped(stop.clone()));
    let _stop = stop.drop_guard();
    let healthz = app.http.get(format!("http://{addr}/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    let readyz = app.http.get(format!("http://{addr}/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(readyz.json::<Value>().await.unwrap()["unready"], json!(["booking"]));

    // An unreachable service reaches clients as an opaque INTERNAL, marked retryable
    // (the idempotency key makes a repeat safe), naming nothing of the mesh.
    let (token, _) = app.register("ada").await;
    let showtime = app.first_showtime().await;
    let response = app
        .http
        .post(format!("http://{addr}/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": HOLD, "variables": hold_input(&showtime, &["A1"]) }))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body["errors"][0]), "INTERNAL");
    assert_eq!(body["errors"][0]["extensions"]["retryable"], true);
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("127.0.0.1") && !message.contains("booking"), "{message}");
}

impl TestApp {
    /// Registers through GraphQL and returns the whole `AuthPayload`.
    async fn register_session(&self, name: &str, phone: Option<&str>) -> Value {
        let email = format!("{name}.{}@example.com", uuid::Uuid::new_v4().simple());
        let query =
            format!("mutation($input: RegisterInput!) {{ register(input: $input) {{ {AUTH_FIELDS} }} }}");
        let input =
            json!({ "email": email, "password": "correct horse battery", "name": name, "phone": phone });
        self.data(None, &query, json!({ "input": input })).await["register"].clone()
    }

    async fn refresh(&self, refresh_token: &Value) -> (StatusCode, Value) {
        let query = format!("mutation($r: String!) {{ refreshToken(refreshToken: $r) {{ {AUTH_FIELDS} }} }}");
        self.post(None, &query, json!({ "r": refresh_token })).await
    }
}

fn token(payload: &Value) -> &str {
    payload["token"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_forged_token_is_unauthenticated() {
    let app = spawn_app().await;
    let session = app.register_session("ada", None).await;
    let genuine = token(&session);
    let user_id = session["user"]["id"].as_str().unwrap();
    // The genuine token works, and the user comes from its `sub`.
    assert_eq!(app.data(Some(genuine), "{ me { id } }", json!({})).await["me"]["id"], user_id);

    let keys = TokenKeys::new(&app.settings.auth).unwrap();
    let segments: Vec<&str> = genuine.split('.').collect();

    // alg "none": a real payload, no signature.
    let alg_none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", segments[1]);
    // Signed with a key of the attacker's choosing.
    let mut forger = app.settings.auth.clone();
    forger.jwt_secret = Secret::new("an-attacker-chosen-secret-of-32-bytes!!".to_owned());
    let (wrong_key, _) = TokenKeys::new(&forger).unwrap().issue(user_id, Role::Admin, Utc::now()).unwrap();
    // Ours in every way but its age.
    let (expired, _) = keys.issue(user_id, Role::Customer, Utc::now() - chrono::Duration::hours(1)).unwrap();
    // Payload edited to claim admin, the genuine signature kept.
    let (admin_claims, _) = TokenKeys::new(&forger).unwrap().issue(user_id, Role::Admin, Utc::now()).unwrap();
    let admin_payload = admin_claims.split('.').nth(1).unwrap();
    assert_ne!(admin_payload, segments[1]);
    let tampered = format!("{}.{admin_payload}.{}", segments[0], segments[2]);
    // Another issuer, even with our secret.
    let mut other_issuer = app.settings.auth.clone();
    other_issuer.issuer = "someone-else".to_owned();
    let (wrong_iss, _) =
        TokenKeys::new(&other_issuer).unwrap().issue(user_id, Role::Customer, Utc::now()).unwrap();
    // Our secret under another HMAC algorithm: alg is pinned, not read from the header.
    let claims = keys.verify(genuine).unwrap();
    let secret = jsonwebtoken::EncodingKey::from_secret(app.settings.auth.jwt_secret.expose().as_bytes());
    let hs512 =
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512), &claims, &secret)
            .unwrap();

    for (name, forged) in [
        ("alg none", alg_none.as_str()),
        ("wrong key", wrong_key.as_str()),
        ("expired", expired.as_str()),
        ("tampered role", tampered.as_str()),
        ("wrong iss", wrong_iss.as_str()),
        ("HS512", hs512.as_str()),
    ] {
        let (status, body) = app.post(Some(forged), "{ me { id role } }", json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(code(&body["errors"][0]), "UNAUTHENTICATED", "{name}: {body}");
        assert!(body.get("data").is_none_or(Value::is_null), "{name}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_reuse_signs_the_family_out() {
    let app = spawn_app().await;
    let first = app.register_session("ada", None).await;

    let (_, body) = app.refresh(&first["refreshToken"]).await;
    let second = body["data"]["refreshToken"].clone();
    assert_eq!(second["user"]["id"], first["user"]["id"], "{body}");
    assert_ne!(second["refreshToken"], first["refreshToken"]);
    assert_eq!(
        app.data(Some(token(&second)), "{ me { id } }", json!({})).await["me"]["id"],
        first["user"]["id"]
    );

    // The spent first token comes back: refused, and the live second one dies with it.
    let (_, body) = app.refresh(&first["refreshToken"]).await;
    assert_eq!(code(&body["errors"][0]), "UNAUTHENTICATED", "{body}");
    let (_, body) = app.refresh(&second["refreshToken"]).await;
    assert_eq!(code(&body["errors"][0]), "UNAUTHENTICATED", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_out_token_is_unauthenticated() {
    let app = spawn_app().await;
    let session = app.register_session("ada", None).await;
    let other = app.register_session("grace", None).await;
    let logout = "mutation($r: String!) { logout(refreshToken: $r) }";

    let error = app.error(None, logout, json!({ "r": session["refreshToken"] })).await;
    assert_eq!(code(&error), "UNAUTHENTICATED");
    let data = app.data(Some(token(&session)), logout, json!({ "r": session["refreshToken"] })).await;
    assert_eq!(data["logout"], true);

    let error = app.error(Some(token(&session)), "{ me { id } }", json!({})).await;
    assert_eq!(code(&error), "UNAUTHENTICATED");
    let (_, body) = app.refresh(&session["refreshToken"]).await;
    assert_eq!(code(&body["errors"][0]), "UNAUTHENTICATED", "{body}");
    // Only that session ends.
    assert_eq!(
        app.data(Some(token(&other)), "{ me { id } }", json!({})).await["me"]["id"],
        other["user"]["id"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_carry_phone_and_notification_preferences() {
    let app = spawn_app().await;
    let plain = app.register_session("ada", None).await;
    assert_eq!(plain["user"]["phone"], Value::Null);
    assert_eq!(plain["user"]["notificationPreferences"], json!({ "email": true, "sms": false }));

    let with_phone = app.register_session("grace", Some("+1 415 555 0100")).await;
    assert_eq!(with_phone["user"]["phone"], "+14155550100");
    let error = app
        .error(
            None,
            "mutation($input: RegisterInput!) { register(input: $input) { token } }",
            json!({ "input": { "email": "bad.phone@example.com", "password": "correct horse battery", "name": "B", "phone": "12345" } }),
        )
        .await;
    assert_eq!(code(&error), "BAD_USER_INPUT");
    assert_eq!(app.error(None, "mutation { login(input: { email: \"bad.phone@example.com\", password: \"correct horse battery\" }) { token } }", json!({})).await["extensions"]["code"], "UNAUTHENTICATED");

    let update = "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { name phone notificationPreferences { email sms } } }";
    let error = app.error(None, update, json!({ "input": { "name": "x" } })).await;
    assert_eq!(code(&error), "UNAUTHENTICATED");
    let error = app
        .error(
            Some(token(&plain)),
            update,
            json!({ "input": { "notificationPreferences": { "email": true, "sms": true } } }),
        )
        .await;
    assert_eq!(code(&error), "BAD_USER_INPUT");
    let input = json!({ "input": { "name": "Ada L.", "phone": "+4915112345678", "notificationPreferences": { "email": false, "sms": true } } });
    let updated = app.data(Some(token(&plain)), update, input).await["updateProfile"].clone();
    assert_eq!(
        updated,
        json!({ "name": "Ada L.", "phone": "+4915112345678", "notificationPreferences": { "email": false, "sms": true } })
    );
    let me = app
        .data(Some(token(&plain)), "{ me { name phone notificationPreferences { email sms } } }", json!({}))
        .await;
    assert_eq!(me["me"], updated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_set_roles() {
    let app = spawn_app().await;
    let ada = app.register_session("ada", None).await;
    let grace = app.register_session("grace", None).await;
    let set_role = "mutation($id: ID!, $role: Role!) { setUserRole(userId: $id, role: $role) { id role } }";

    let error =
        app.error(Some(token(&ada)), set_role, json!({ "id": ada["user"]["id"], "role": "ADMIN" })).await;
    assert_eq!(code(&error), "FORBIDDEN");
    let error = app.error(None, set_role, json!({ "id": ada["user"]["id"], "role": "ADMIN" })).await;
    assert_eq!(code(&error), "UNAUTHENTICATED");

    let login = format!(
        "mutation {{ login(input: {{ email: \"{ADMIN_EMAIL}\", password: \"{ADMIN_PASSWORD}\" }}) {{ {AUTH_FIELDS} }} }}"
    );
    let admin = app.data(None, &login, json!({})).await["login"].clone();
    assert_eq!(admin["user"]["role"], "ADMIN");
    let data =
        app.data(Some(token(&admin)), set_role, json!({ "id": grace["user"]["id"], "role": "STAFF" })).await;
    assert_eq!(data["setUserRole"], json!({ "id": grace["user"]["id"], "role": "STAFF" }));
    let error =
        app.error(Some(token(&admin)), set_role, json!({ "id": "no such user", "role": "STAFF" })).await;
    assert_eq!(code(&error), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_are_rate_limited() {
    let app = spawn_app().await;
    let (_, email) = app.register("ada").await;
    let login = "mutation($input: LoginInput!) { login(input: $input) { token } }";
    let attempt = |password: &str| json!({ "input": { "email": email, "password": password } });

    for _ in 0..5 {
        assert_eq!(code(&app.error(None, login, attempt("wrong password!")).await), "UNAUTHENTICATED");
    }
    let error = app.error(None, login, attempt("correct horse battery")).await;
    assert_eq!(code(&error), "RATE_LIMITED", "{error}");
}

/// For a test proxy in front of the server of `url` (e.g. `redis://127.0.0.1:6379/0`):
/// `url` pointed at a new local listener, the listener, and the server's `host:port`.
fn listen_in_front_of(url: &str) -> (String, tokio::net::TcpListener, String) {
    let mut url = reqwest::Url::parse(url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(6379));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(listener.local_addr().unwrap().port())).unwrap();
    (url.to_string(), tokio::net::TcpListener::from_std(listener).unwrap(), target)
}
