//! The schema half of issue #7 through the real mesh: batched catalog and ticket
//! lookups (counted at the wire by a recording gRPC proxy), trace propagation, relay connections, admin
//! mutations, cancellation, seat suggestions and idempotent holds and payments.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::Utc;
use marquee_e2e::MeshSettings as Settings;
use serde_json::{Value, json};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, http};
use tonic::transport::Channel;
use tower::ServiceExt;

use super::{
    ADMIN_EMAIL, ADMIN_PASSWORD, HOLD, PAY, TestApp, code, hold_input, pay_input, spawn_app, state_of,
};

/// One gRPC call the gateway made, as an upstream received it.
#[derive(Clone, Debug)]
struct Call {
    /// e.g. "/marquee.cinema.v1.CinemaService/GetMovies".
    path: String,
    traceparent: Option<String>,
}

/// What a proxy recorded, and a switch that holds its calls back.
#[derive(Clone)]
struct CallLog {
    calls: Arc<Mutex<Vec<Call>>>,
    /// Calls are forwarded while this is true (see `hold`).
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for CallLog {
    fn default() -> Self {
        Self { calls: Arc::default(), open: Arc::new(tokio::sync::watch::Sender::new(true)) }
    }
}

impl CallLog {
    fn all(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn len(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// From now on calls are recorded but not forwarded until `release`, as by an
    /// upstream slow to answer.
    fn hold(&self) {
        self.open.send_replace(false);
    }

    fn release(&self) {
        self.open.send_replace(true);
    }

    /// Calls to `method` (e.g. "HoldSeats").
    fn count(&self, method: &str) -> usize {
        self.all().iter().filter(|c| c.path.ends_with(&format!("/{method}"))).count()
    }

    /// The calls `action` caused.
    async fn during<F: Future>(&self, action: F) -> (F::Output, Vec<Call>) {
        let before = self.len();
        let output = action.await;
        (output, self.all()[before..].to_vec())
    }
}

trait Upstream: Send + Sync + 'static {
    const NAME: &'static str;
}

struct CinemaService;
impl Upstream for CinemaService {
    const NAME: &'static str = "marquee.cinema.v1.CinemaService";
}

struct BookingService;
impl Upstream for BookingService {
    const NAME: &'static str = "marquee.booking.v1.BookingService";
}

struct TicketService;
impl Upstream for TicketService {
    const NAME: &'static str = "marquee.ticket.v1.TicketService";
}

/// A gRPC server that records and forwards every call of one service to the real one.
struct Proxy<U> {
    upstream: Channel,
    log: CallLog,
    _service: PhantomData<fn() -> U>,
}

impl<U> Clone for Proxy<U> {
    fn clone(&self) -> Self {
        Self { upstream: self.upstream.clone(), log: self.log.clone(), _service: PhantomData }
    }
}

impl<U: Upstream> tonic::server::NamedService for Proxy<U> {
    const NAME: &'static str = U::NAME;
}

impl<U: Upstream> tower::Service<http::Request<Body>> for Proxy<U> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let traceparent =
            request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
        self.log.calls.lock().unwrap().push(Call { path: request.uri().path().to_owned(), traceparent });
        let upstream = self.upstream.clone();
        let mut open = self.log.open.subscribe();
        Box::pin(async move {
            // The sender lives in the log, which outlives the proxy's calls.
            let _ = open.wait_for(|open| *open).await;
            match upstream.oneshot(request).await {
                Ok(response) => Ok(response),
                Err(error) => Ok(tonic::Status::unavailable(error.to_string()).into_http()),
            }
        })
    }
}

/// Puts a recording proxy in front of `url`; returns the proxy's URL and its log.
fn proxy<U: Upstream>(url: &str, settings: &Settings) -> (String, CallLog) {
    let upstream = marquee_kit::grpc::channel(url, "", &settings.grpc).unwrap();
    let log = CallLog::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let service = Proxy::<U> { upstream, log: log.clone(), _service: PhantomData };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (format!("http://{addr}"), log)
}

/// The whole mesh, with the gateway's cinema and booking calls recorded.
async fn spawn_recorded_app() -> (TestApp, CallLog, CallLog) {
    spawn_recorded_app_with(|_| {}).await
}

/// `spawn_recorded_app` with the test's own tweaks to the settings.
async fn spawn_recorded_app_with(
    configure: impl FnOnce(&mut Settings) + Send,
) -> (TestApp, CallLog, CallLog) {
    let mut logs = None;
    let app = super::spawn_app_wired(configure, |settings| {
        let (cinema_url, cinema) = proxy::<CinemaService>(&settings.upstream.cinema_url, settings);
        let (booking_url, booking) = proxy::<BookingService>(&settings.upstream.booking_url, settings);
        settings.upstream.cinema_url = cinema_url;
        settings.upstream.booking_url = booking_url;
        logs = Some((cinema, booking));
    })
    .await;
    let (cinema, booking) = logs.unwrap();
    (app, cinema, booking)
}

/// The whole mesh, with the gateway's ticket calls recorded.
async fn spawn_app_with_recorded_tickets() -> (TestApp, CallLog) {
    let mut log = None;
    let app = super::spawn_app_wired(
        |_| {},
        |settings| {
            let (ticket_url, tickets) = proxy::<TicketService>(&settings.upstream.ticket_url, settings);
            settings.upstream.ticket_url = ticket_url;
            log = Some(tickets);
        },
    )
    .await;
    (app, log.unwrap())
}

impl TestApp {
    /// The latest `n` showtimes (days away, so none starts mid-test).
    async fn later_showtimes(&self, n: usize) -> Vec<String> {
        let data = self.data(None, "{ showtimes { id } }", json!({})).await;
        let all: Vec<String> = data["showtimes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        assert!(all.len() >= n);
        all[all.len() - n..].to_vec()
    }

    async fn admin_token(&self) -> String {
        let login = format!(
            "mutation {{ login(input: {{ email: \"{ADMIN_EMAIL}\", password: \"{ADMIN_PASSWORD}\" }}) {{ token user {{ role }} }} }}"
        );
        let data = self.data(None, &login, json!({})).await;
        assert_eq!(data["login"]["user"]["role"], "ADMIN");
        data["login"]["token"].as_str().unwrap().to_owned()
    }

    /// As `post`, with extra request headers.
    async fn data_with_headers(&self, headers: &[(&str, &str)], query: &str, variables: Value) -> Value {
        let mut request =
            self.http.post(self.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }
}

const CREATE_MOVIE: &str = "mutation($input: CreateMovieInput!) { createMovie(input: $input) { id title runtimeMinutes genres releaseDate } }";
const CREATE_CINEMA: &str =
    "mutation($input: CreateCinemaInput!) { createCinema(input: $input) { id name city timeZone } }";
const CREATE_SCREEN: &str = "mutation($input: CreateScreenInput!) { createScreen(input: $input) { id cinemaId name seatCount categories } }";
const CREATE_SHOWTIME: &str = "mutation($input: CreateShowtimeInput!) { createShowtime(input: $input) { id screenId startsAt endsAt movie { title } cinema { name } prices { category price { amount currency } } } }";
const BLOCK: &str = "mutation($s: ID!, $seats: [ID!]!) { blockSeats(showtimeId: $s, seatIds: $seats) }";
const UNBLOCK: &str = "mutation($s: ID!, $seats: [ID!]!) { unblockSeats(showtimeId: $s, seatIds: $seats) }";

fn movie_input(title: &str) -> Value {
    json!({ "input": { "title": title, "runtimeMinutes": 95, "genres": ["Drama"], "releaseDate": "2026-01-30" } })
}

fn cinema_input(name: &str) -> Value {
    json!({ "input": { "name": name, "city": "Porto", "address": "Rua 1", "timeZone": "Europe/Lisbon" } })
}

/// Two rows of four standard seats with an aisle after the second seat.
fn screen_input(cinema: &str) -> Value {
    let row = |label: &str| {
        json!({ "label": label, "seats": [
            { "number": 1, "category": "standard" },
            { "number": 2, "category": "standard" },
            { "number": 3, "category": "standard", "gapBefore": 1 },
            { "number": 4, "category": "standard" },
        ] })
    };
    json!({ "input": { "cinemaId": cinema, "name": "Sala 1", "rows": [row("A"), row("B")] } })
}

fn showtime_input(movie: &str, screen: &str, days_ahead: i64) -> Value {
    let starts_at =
        (Utc::now() + chrono::Duration::days(days_ahead)).format("%Y-%m-%dT%H:00:00Z").to_string();
    json!({ "input": { "movieId": movie, "screenId": screen, "startsAt": starts_at,
        "prices": [{ "category": "standard", "price": { "amount": 900, "currency": "EUR" } }] } })
}

/// Creates a cinema with one screen and one showtime; returns (cinema, showtime).
async fn small_cinema(app: &TestApp, admin: &str) -> (String, String) {
    let movie =
        app.data(Some(admin), CREATE_MOVIE, movie_input("Tiny Film")).await["createMovie"]["id"].clone();
    let cinema =
        app.data(Some(admin), CREATE_CINEMA, cinema_input("Cine Pequeno")).await["createCinema"]["id"]
            .clone();
    let screen = app.data(Some(admin), CREATE_SCREEN, screen_input(cinema.as_str().unwrap())).await;
    let screen = screen["createScreen"]["id"].as_str().unwrap().to_owned();
    let showtime =
        app.data(Some(admin), CREATE_SHOWTIME, showtime_input(movie.as_str().unwrap(), &screen, 3)).await;
    (cinema.as_str().unwrap().to_owned(), showtime["createShowtime"]["id"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_showtime_list_costs_the_same_upstream_calls_whatever_its_length() {
    let (app, cinema_calls, _) = spawn_recorded_app().await;
    let admin = app.admin_token().await;
    let (small, _) = small_cinema(&app, &admin).await;
    let query = "query($cinema: ID) { showtimes(cinemaId: $cinema) { id movie { title } cinema { name } } }";

    let (one, one_calls) = cinema_calls.during(app.data(None, query, json!({ "cinema": small }))).await;
    let (many, many_calls) = cinema_calls.during(app.data(None, query, json!({ "cinema": null }))).await;

    assert_eq!(one["showtimes"].as_array().unwrap().len(), 1);
    let many = many["showtimes"].as_array().unwrap();
    assert!(many.len() >= 10, "the demo catalog lists many showtimes, got {}", many.len());
    assert!(many.iter().all(|s| s["movie"]["title"].is_string() && s["cinema"]["name"].is_string()));
    let methods = |calls: &[Call]| {
        let mut names: Vec<String> =
            calls.iter().map(|c| c.path.rsplit('/').next().unwrap().to_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(methods(&one_calls), ["GetCinemas", "GetMovies", "ListShowtimes"], "{one_calls:?}");
    assert_eq!(methods(&many_calls), methods(&one_calls), "{many_calls:?}");

    // A showtime's movie asked for twice in one request is fetched once.
    let twice = "query($cinema: ID) { showtimes(cinemaId: $cinema) { movie { id } again: movie { title } } }";
    let (_, calls) = cinema_calls.during(app.data(None, twice, json!({ "cinema": null }))).await;
    assert_eq!(methods(&calls), ["GetMovies", "ListShowtimes"], "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_call_of_a_request_carries_its_trace() {
    let (app, cinema_calls, booking_calls) = spawn_recorded_app().await;
    let (token, _) = app.register("ada").await;
    let showtime = app.first_showtime().await;
    let query = "{ showtimes { id movie { title } cinema { name } } }";

    // The caller's trace is continued; the gateway is a new span within it.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, calls) =
        cinema_calls.during(app.data_with_headers(&[("traceparent", incoming)], query, json!({}))).await;
    assert_eq!(calls.len(), 3, "{calls:?}");
    let parents: Vec<&str> = calls.iter().map(|c| c.traceparent.as_deref().expect("a traceparent")).collect();
    for parent in &parents {
        assert!(parent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{parent}");
        assert!(!parent.contains("00f067aa0ba902b7"), "the gateway's own span is the parent: {parent}");
        assert!(parent.ends_with("-01"));
    }
    assert!(parents.windows(2).all(|w| w[0] == w[1]), "one gateway span per request: {parents:?}");

    // Each operation of a batch continues it too.
    let batch = app
        .http
        .post(app.url("/graphql"))
        .header("traceparent", incoming)
        .json(&json!([{ "query": query }, { "query": "{ showtimes { id movie { title } } }" }]));
    let (response, calls) = cinema_calls.during(batch.send()).await;
    assert!(response.unwrap().status().is_success());
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert!(
        calls.iter().all(|c| c.traceparent.as_deref().unwrap().contains("4bf92f3577b34da6a3ce929d0e0e4736"))
    );

    // Without one, the gateway starts a trace: one per request, shared by its calls.
    let trace_of = |call: &Call| call.traceparent.as_deref().unwrap()[3..35].to_owned();
    let (_, first) = cinema_calls.during(app.data(None, query, json!({}))).await;
    let (_, second) = cinema_calls.during(app.data(None, query, json!({}))).await;
    assert!(first.iter().all(|c| trace_of(c) == trace_of(&first[0])), "{first:?}");
    assert_ne!(trace_of(&first[0]), trace_of(&second[0]));

    // A booking: the hold's call to the booking service carries the caller's trace too.
    let booking_trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let input = hold_input(&showtime, &["B3"]);
    let request = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .header("traceparent", booking_trace)
        .json(&json!({ "query": HOLD, "variables": input }));
    let (response, calls) = booking_calls.during(request.send()).await;
    let body: Value = response.unwrap().json().await.unwrap();
    assert_eq!(body["data"]["holdSeats"]["status"], "HELD", "{body}");
    let hold = calls.iter().find(|c| c.path.ends_with("/HoldSeats")).unwrap();
    assert!(hold.traceparent.as_deref().unwrap().starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_build_a_cinema_and_sell_its_showtime_while_others_are_refused() {
    let app = spawn_app().await;
    let (customer, _) = app.register("ada").await;
    let admin = app.admin_token().await;

    // Anonymous callers must sign in; customers are forbidden; nothing is written.
    for (token, expected) in [(None, "UNAUTHENTICATED"), (Some(customer.as_str()), "FORBIDDEN")] {
        assert_eq!(code(&app.error(token, CREATE_MOVIE, movie_input("Nope")).await), expected);
        assert_eq!(code(&app.error(token, CREATE_CINEMA, cinema_input("Nope")).await), expected);
    }
    let search = r#"{ movies(search: "Nope") { nodes { id } } }"#;
    assert_eq!(app.data(None, search, json!({})).await["movies"]["nodes"], json!([]));

    let movie = app.data(Some(&admin), CREATE_MOVIE, movie_input("Tiny Film")).await["createMovie"].clone();
    assert_eq!(movie["title"], "Tiny Film");
    assert_eq!(movie["releaseDate"], "2026-01-30");
    let cinema =
        app.data(Some(&admin), CREATE_CINEMA, cinema_input("Cine Pequeno")).await["createCinema"].clone();
    assert_eq!(cinema["timeZone"], "Europe/Lisbon");
    let screen = app.data(Some(&admin), CREATE_SCREEN, screen_input(cinema["id"].as_str().unwrap())).await;
    let screen = &screen["createScreen"];
    assert_eq!((screen["seatCount"].as_i64(), &screen["categories"]), (Some(8), &json!(["standard"])));
    let screen_id = screen["id"].as_str().unwrap();
    let movie_id = movie["id"].as_str().unwrap();
    let showtime = app.data(Some(&admin), CREATE_SHOWTIME, showtime_input(movie_id, screen_id, 3)).await;
    let showtime = &showtime["createShowtime"];
    assert_eq!(showtime["movie"]["title"], "Tiny Film");
    assert_eq!(showtime["cinema"]["name"], "Cine Pequeno");
    assert_eq!(showtime["prices"][0]["price"], json!({ "amount": 900, "currency": "EUR" }));
    let showtime_id = showtime["id"].as_str().unwrap();

    // The cinema service's precise refusals keep their codes.
    let mut bad_zone = cinema_input("Cine Marte");
    bad_zone["input"]["timeZone"] = json!("Mars/Olympus_Mons");
    assert_eq!(code(&app.error(Some(&admin), CREATE_CINEMA, bad_zone).await), "BAD_USER_INPUT");
    let overlap = app.error(Some(&admin), CREATE_SHOWTIME, showtime_input(movie_id, screen_id, 3)).await;
    assert_eq!(code(&overlap), "CONFLICT", "{overlap}");
    let mut unpriced = showtime_input(movie_id, screen_id, 5);
    unpriced["input"]["prices"] = json!([]);
    assert_eq!(code(&app.error(Some(&admin), CREATE_SHOWTIME, unpriced).await), "BAD_USER_INPUT");
    let unknown_cinema = screen_input("00000000-0000-4000-8000-000000000000");
    assert_eq!(code(&app.error(Some(&admin), CREATE_SCREEN, unknown_cinema).await), "NOT_FOUND");

    // Blocked seats are out of sale until unblocked; only admins do either.
    let seats = json!({ "s": showtime_id, "seats": ["A1", "A2"] });
    assert_eq!(code(&app.error(Some(&customer), BLOCK, seats.clone()).await), "FORBIDDEN");
    assert_eq!(app.data(Some(&admin), BLOCK, seats.clone()).await["blockSeats"], json!(["A1", "A2"]));
    assert_eq!(state_of(&app.seat_map(showtime_id).await, "A1"), "BLOCKED");
    let refused = app.error(Some(&customer), HOLD, hold_input(showtime_id, &["A2"])).await;
    assert_eq!(code(&refused), "SEAT_UNAVAILABLE");
    assert_eq!(code(&app.error(None, UNBLOCK, seats.clone()).await), "UNAUTHENTICATED");
    assert_eq!(app.data(Some(&admin), UNBLOCK, seats).await["unblockSeats"], json!(["A1", "A2"]));
    assert_eq!(state_of(&app.seat_map(showtime_id).await, "A2"), "AVAILABLE");

    // A held seat cannot be blocked: SEAT_UNAVAILABLE names it.
    app.data(Some(&customer), HOLD, hold_input(showtime_id, &["B1"])).await;
    let error = app.error(Some(&admin), BLOCK, json!({ "s": showtime_id, "seats": ["B1", "B2"] })).await;
    assert_eq!(code(&error), "SEAT_UNAVAILABLE");
    assert_eq!(error["extensions"]["seatIds"], json!(["B1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggested_seats_are_a_free_adjacent_block() {
    let app = spawn_app().await;
    let admin = app.admin_token().await;
    let (_, showtime) = small_cinema(&app, &admin).await;
    let suggest = "query($s: ID!, $n: Int!, $c: String) { suggestSeats(showtimeId: $s, count: $n, category: $c) { id row number state category price { amount } } }";

    let seats = app.data(None, suggest, json!({ "s": showtime, "n": 2 })).await["suggestSeats"].clone();
    let seats = seats.as_array().unwrap();
    assert_eq!(seats.len(), 2, "{seats:?}");
    assert_eq!(seats[0]["row"], seats[1]["row"]);
    assert_eq!((seats[1]["number"].as_i64().unwrap() - seats[0]["number"].as_i64().unwrap()).abs(), 1);
    assert!(seats.iter().all(|s| s["state"] == "AVAILABLE" && s["price"]["amount"] == 900));

    // No block of that size in that category: an empty answer, not an error.
    let none = app.data(None, suggest, json!({ "s": showtime, "n": 2, "c": "premium" })).await;
    assert_eq!(none["suggestSeats"], json!([]));
    for n in [0, -1, 1000] {
        assert_eq!(code(&app.error(None, suggest, json!({ "s": showtime, "n": n })).await), "BAD_USER_INPUT");
    }
    let unknown = json!({ "s": "00000000-0000-4000-8000-000000000000", "n": 2 });
    assert_eq!(code(&app.error(None, suggest, unknown).await), "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_and_notifications_page_with_relay_cursors() {
    let app = spawn_app().await;
    let (ada, _) = app.register("ada").await;
    // One hold per showtime: a customer may hold only a few per showtime.
    let showtimes = app.later_showtimes(3).await;
    let mut held = Vec::new();
    for showtime in &showtimes {
        let booking = app.data(Some(&ada), HOLD, hold_input(showtime, &["C1"])).await;
        held.push(booking["holdSeats"]["id"].as_str().unwrap().to_owned());
    }
    let page = "query($first: Int, $after: String, $statuses: [BookingStatus!]) { me { bookings(first: $first, after: $after, statuses: $statuses) {
        edges { cursor node { id status showtime { id movie { title } } } } nodes { id } pageInfo { hasNextPage endCursor } } } }";

    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let data = app.data(Some(&ada), page, json!({ "first": 2, "after": after })).await;
        let connection = &data["me"]["bookings"];
        let edges = connection["edges"].as_array().unwrap();
        assert!(!edges.is_empty() && edges.len() <= 2, "{connection}");
        let ids: Vec<&str> = edges.iter().map(|e| e["node"]["id"].as_str().unwrap()).collect();
        let nodes: Vec<&str> =
            connection["nodes"].as_array().unwrap().iter().map(|n| n["id"].as_str().unwrap()).collect();
        assert_eq!(ids, nodes, "nodes is edges' nodes");
        assert!(edges.iter().all(|e| showtimes.iter().any(|s| e["node"]["showtime"]["id"] == s.as_str())));
        assert!(edges.iter().all(|e| e["node"]["showtime"]["movie"]["title"].is_string()));
        seen.extend(ids.iter().map(|id| (*id).to_owned()));
        if connection["pageInfo"]["hasNextPage"] == false {
            break;
        }
        assert_eq!(connection["pageInfo"]["endCursor"], edges.last().unwrap()["cursor"]);
        after = connection["pageInfo"]["endCursor"].clone();
    }
    let mut expected = held.clone();
    expected.sort();
    seen.sort();
    assert_eq!(seen, expected, "every booking exactly once");

    // Paying one confirms it; the status filter finds it, and its notification follows.
    app.data(Some(&ada), PAY, pay_input(&held[0], "pm_card_ok")).await;
    let confirmed = app.data(Some(&ada), page, json!({ "statuses": ["CONFIRMED"] })).await;
    assert_eq!(confirmed["me"]["bookings"]["nodes"], json!([{ "id": held[0] }]));
    assert_eq!(code(&app.error(Some(&ada), page, json!({ "first": 0 })).await), "BAD_USER_INPUT");
    assert_eq!(code(&app.error(Some(&ada), page, json!({ "after": "nope" })).await), "BAD_USER_INPUT");

    let notifications = "query($after: String) { me { notifications(first: 1, after: $after) {
        edges { cursor node { id bookingId eventType } } pageInfo { hasNextPage endCursor } } } }";
    // The newest notification, once it is about `booking` (notifications arrive
    // asynchronously, through the broker).
    let newest_about = |booking: String| {
        let app = &app;
        let ada = &ada;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let data = app.data(Some(ada), notifications, json!({})).await;
                let connection = data["me"]["notifications"].clone();
                if connection["edges"][0]["node"]["bookingId"] == booking.as_str() {
                    return connection;
                }
                assert!(tokio::time::Instant::now() < deadline, "no notification about {booking}: {data}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let first = newest_about(held[0].clone()).await;
    assert_eq!(first["edges"][0]["node"]["eventType"], "booking.confirmed");
    assert_eq!(first["pageInfo"]["hasNextPage"], false, "one notification so far: {first}");

    // A second confirmation: two pages of one, newest first.
    app.data(Some(&ada), PAY, pay_input(&held[1], "pm_card_ok")).await;
    let newest = newest_about(held[1].clone()).await;
    assert_eq!(newest["pageInfo"]["hasNextPage"], true, "{newest}");
    let next = app.data(Some(&ada), notifications, json!({ "after": newest["pageInfo"]["endCursor"] })).await;
    let next = &next["me"]["notifications"];
    assert_eq!(next["edges"][0]["node"], first["edges"][0]["node"], "the older one: {next}");
    assert_eq!(next["pageInfo"]["hasNextPage"], false, "{next}");
}

const BOOKING: &str = "query($id: ID!) { booking(id: $id) { id status } }";
const QUOTE: &str = "query($id: ID!) { booking(id: $id) { cancellation { cancellable refund { amount currency } fee { amount } closesAt } } }";
const CANCEL: &str = "mutation($id: ID!) { cancelBooking(id: $id) { id status refund { amount { amount currency } fee { amount } } history { step outcome } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_and_admins_see_and_cancel_bookings_others_get_not_found() {
    let app = spawn_app().await;
    let (ada, _) = app.register("ada").await;
    let (bob, _) = app.register("bob").await;
    let admin = app.admin_token().await;
    let showtime = app.first_showtime().await;
    let held = app.data(Some(&ada), HOLD, hold_input(&showtime, &["D1", "D2"])).await["holdSeats"].clone();
    let id = held["id"].as_str().unwrap();

    // Someone else's booking does not exist for them; an admin sees any.
    assert_eq!(code(&app.error(Some(&bob), CANCEL, json!({ "id": id })).await), "NOT_FOUND");
    assert!(app.post(Some(&bob), BOOKING, json!({ "id": id })).await.1["data"]["booking"].is_null());
    assert_eq!(app.data(Some(&admin), BOOKING, json!({ "id": id })).await["booking"]["status"], "HELD");
    assert_eq!(code(&app.error(None, CANCEL, json!({ "id": id })).await), "UNAUTHENTICATED");

    // The owner cancels the hold: the seats are on sale again.
    let cancelled = app.data(Some(&ada), CANCEL, json!({ "id": id })).await["cancelBooking"].clone();
    assert_eq!(cancelled["status"], "CANCELLED");
    assert!(cancelled["refund"].is_null(), "nothing was paid: {cancelled}");
    let map = app.seat_map(&showtime).await;
    assert_eq!((state_of(&map, "D1"), state_of(&map, "D2")), ("AVAILABLE", "AVAILABLE"));

    // A paid booking cancelled by an admin is refunded by policy: amount + fee = total.
    let held = app.data(Some(&ada), HOLD, hold_input(&showtime, &["D5"])).await["holdSeats"].clone();
    let paid_id = held["id"].as_str().unwrap();
    app.data(Some(&ada), PAY, pay_input(paid_id, "pm_card_ok")).await;
    // The quote states beforehand what the cancellation then refunds, and changes nothing.
    let quote =
        app.data(Some(&ada), QUOTE, json!({ "id": paid_id })).await["booking"]["cancellation"].clone();
    assert_eq!(quote["cancellable"], true, "{quote}");
    assert!(quote["closesAt"].is_string(), "{quote}");
    assert_eq!(
        app.data(Some(&ada), BOOKING, json!({ "id": paid_id })).await["booking"]["status"],
        "CONFIRMED"
    );
    let cancelled = app.data(Some(&admin), CANCEL, json!({ "id": paid_id })).await["cancelBooking"].clone();
    assert_eq!(cancelled["status"], "CANCELLED", "{cancelled}");
    let refund = &cancelled["refund"];
    let total = held["total"]["amount"].as_i64().unwrap();
    assert_eq!(
        refund["amount"]["amount"].as_i64().unwrap() + refund["fee"]["amount"].as_i64().unwrap(),
        total
    );
    assert_eq!(quote["refund"], refund["amount"], "{quote} vs {refund}");
    assert_eq!(quote["fee"]["amount"], refund["fee"]["amount"], "{quote} vs {refund}");
    let after =
        app.data(Some(&ada), QUOTE, json!({ "id": paid_id })).await["booking"]["cancellation"].clone();
    assert_eq!(after["cancellable"], false, "a cancelled booking cannot be cancelled again: {after}");
    assert!(cancelled["history"].as_array().unwrap().iter().any(|s| s["step"] == "refund"), "{cancelled}");
    assert_eq!(state_of(&app.seat_map(&showtime).await, "D5"), "AVAILABLE");
}

/// The ids of `token`'s bookings.
async fn booking_ids(app: &TestApp, token: &str) -> Vec<String> {
    let data = app.data(Some(token), "{ me { bookings(first: 50) { nodes { id } } } }", json!({})).await;
    let nodes = data["me"]["bookings"]["nodes"].as_array().unwrap();
    nodes.iter().map(|n| n["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_hold_or_payment_answers_the_same_booking_and_never_books_or_charges_twice() {
    let (app, _, _) = spawn_recorded_app().await;
    let (ada, _) = app.register("ada").await;
    let (bob, _) = app.register("bob").await;
    let showtime = app.first_showtime().await;

    let input = hold_input(&showtime, &["E1", "E2"]);
    let first = app.data(Some(&ada), HOLD, input.clone()).await["holdSeats"].clone();
    let again = app.data(Some(&ada), HOLD, input.clone()).await["holdSeats"].clone();
    assert_eq!(again, first, "the same booking, field for field");

    // The same seats in another order are the same request.
    let mut reordered = input.clone();
    reordered["input"]["seatIds"] = json!(["E2", "E1"]);
    assert_eq!(app.data(Some(&ada), HOLD, reordered).await["holdSeats"]["id"], first["id"]);
    // The same key for other seats is a conflict.
    let mut other = input.clone();
    other["input"]["seatIds"] = json!(["E3"]);
    let error = app.error(Some(&ada), HOLD, other).await;
    assert_eq!(code(&error), "CONFLICT", "{error}");
    assert_eq!(booking_ids(&app, &ada).await, [first["id"].as_str().unwrap()], "one booking");
    // Keys are per user: bob's identical key is his own request.
    let mut bobs = input.clone();
    bobs["input"]["seatIds"] = json!(["E5"]);
    assert_eq!(app.data(Some(&bob), HOLD, bobs).await["holdSeats"]["status"], "HELD");

    // A refused attempt leaves nothing behind: the key may be retried, and is refused alike.
    let taken = hold_input(&showtime, &["E1"]);
    assert_eq!(code(&app.error(Some(&bob), HOLD, taken.clone()).await), "SEAT_UNAVAILABLE");
    assert_eq!(code(&app.error(Some(&bob), HOLD, taken).await), "SEAT_UNAVAILABLE");
    assert_eq!(booking_ids(&app, &bob).await.len(), 1);

    // Payment: one charge, however often the client retries.
    let booking = first["id"].as_str().unwrap();
    let pay = pay_input(booking, "pm_card_ok");
    let paid = app.data(Some(&ada), PAY, pay.clone()).await["payBooking"].clone();
    assert_eq!(paid["status"], "CONFIRMED");
    assert_eq!(app.data(Some(&ada), PAY, pay.clone()).await["payBooking"], paid);
    let mut other_card = pay;
    other_card["input"]["paymentMethod"] = json!("pm_card_declined");
    assert_eq!(code(&app.error(Some(&ada), PAY, other_card).await), "CONFLICT");
    let query = "query($id: ID!) { booking(id: $id) { history { step outcome } } }";
    let history = app.data(Some(&ada), query, json!({ "id": booking })).await;
    let steps = history["booking"]["history"].as_array().unwrap();
    let charges = steps.iter().filter(|s| s["step"] == "charge" && s["outcome"] == "started").count();
    assert_eq!(charges, 1, "one charge started: {history}");

    // A declined payment is declined again on repeat, uncharged.
    let declined_hold = app.data(Some(&bob), HOLD, hold_input(&showtime, &["E7"])).await;
    let declined = pay_input(declined_hold["holdSeats"]["id"].as_str().unwrap(), "pm_card_declined");
    assert_eq!(code(&app.error(Some(&bob), PAY, declined.clone()).await), "PAYMENT_DECLINED");
    assert_eq!(code(&app.error(Some(&bob), PAY, declined).await), "PAYMENT_DECLINED");
}

/// Polls `check` until it holds; fails with `what` after a generous deadline.
async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_booking_input_is_bad_user_input_and_reaches_nobody() {
    let (app, _, booking_calls) = spawn_recorded_app().await;
    let (ada, _) = app.register("ada").await;
    let showtime = app.first_showtime().await;
    let mut cases = vec![
        ("a seat id with a dash", hold_input(&showtime, &["A-1"])),
        (
            "eleven seats",
            hold_input(&showtime, &["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "A10", "A11"]),
        ),
        ("a showtime id that is no UUID", hold_input("showtime-1", &["A1"])),
    ];
    let mut spaced_key = hold_input(&showtime, &["A1"]);
    spaced_key["input"]["idempotencyKey"] = json!("has space");
    cases.push(("a key with a space", spaced_key));
    for (case, input) in cases {
        let error = app.error(Some(&ada), HOLD, input).await;
        assert_eq!(code(&error), "BAD_USER_INPUT", "{case}: {error}");
    }
    let pay = pay_input("0190f3c2-7a4e-7c3b-9f1e-2b8c4d5e6f70", "pm card ok");
    assert_eq!(code(&app.error(Some(&ada), PAY, pay).await), "BAD_USER_INPUT");
    assert_eq!(booking_calls.count("HoldSeats") + booking_calls.count("PayBooking"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_of_one_hold_make_one_booking() {
    let (app, _, booking_calls) = spawn_recorded_app().await;
    let (ada, _) = app.register("ada").await;
    let showtimes = app.later_showtimes(3).await;
    let app = Arc::new(app);

    for (round, showtime) in showtimes.iter().enumerate() {
        let input = hold_input(showtime, &["F1"]);
        let before = booking_calls.count("HoldSeats");
        booking_calls.hold();
        let repeats: Vec<_> = (0..8)
            .map(|_| {
                let (app, ada, input) = (app.clone(), ada.clone(), input.clone());
                tokio::spawn(async move { app.post(Some(&ada), HOLD, input).await.1 })
            })
            .collect();
        // The race is forced, not hoped for: all eight are held at the booking
        // service's door, then let in together.
        wait_until(&format!("round {round}: the eight did not reach the booking service"), async || {
            booking_calls.count("HoldSeats") - before == 8
        })
        .await;
        booking_calls.release();
        let mut bodies = Vec::new();
        for repeat in repeats {
            bodies.push(repeat.await.unwrap());
        }
        let ids: Vec<&Value> = bodies.iter().map(|b| &b["data"]["holdSeats"]["id"]).collect();
        // Each repeat answers the one booking; none may make a second.
        assert!(bodies.iter().all(|b| b.get("errors").is_none()), "round {round}: {bodies:?}");
        assert!(ids.iter().all(|id| id.is_string() && *id == ids[0]), "round {round}: {ids:?}");
        assert_eq!(booking_ids(&app, &ada).await.len(), round + 1, "round {round}: one booking per key");
    }
}

/// The booking id inside a ticket code (README "Ticket codes": version, ticket id,
/// then the booking id's 16 bytes).
fn booking_in_code(code: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(code).unwrap();
    uuid::Uuid::from_slice(&bytes[17..33]).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_bookings_asking_for_tickets_costs_one_list_tickets_call() {
    let (app, ticket_calls) = spawn_app_with_recorded_tickets().await;
    let (token, _) = app.register("tess").await;
    let showtimes = app.later_showtimes(3).await;
    // Three paid bookings (one seat, two, one) on three showtimes, and one only held.
    let mut paid = Vec::new();
    for (showtime, seats) in showtimes.iter().zip([&["A1"][..], &["A2", "A3"][..], &["A4"][..]]) {
        let held = app.data(Some(&token), HOLD, hold_input(showtime, seats)).await;
        let id = held["holdSeats"]["id"].as_str().unwrap().to_owned();
        let confirmed = app.data(Some(&token), PAY, pay_input(&id, "pm_card_ok")).await;
        assert_eq!(confirmed["payBooking"]["status"], "CONFIRMED");
        paid.push((id, seats.len()));
    }
    let held = app.data(Some(&token), HOLD, hold_input(&showtimes[0], &["B1"])).await;
    let unpaid = held["holdSeats"]["id"].as_str().unwrap().to_owned();

    let query =
        "{ me { bookings(first: 10) { nodes { id status seats { seatId } tickets { seatId code } } } } }";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let (nodes, calls) = loop {
        let (data, calls) = ticket_calls.during(app.data(Some(&token), query, json!({}))).await;
        let nodes = data["me"]["bookings"]["nodes"].as_array().unwrap().clone();
        let issued = |(id, seats): &(String, usize)| {
            nodes.iter().any(|b| b["id"] == id.as_str() && b["tickets"].as_array().unwrap().len() == *seats)
        };
        if paid.iter().all(issued) {
            break (nodes, calls);
        }
        assert!(tokio::time::Instant::now() < deadline, "tickets were never issued: {nodes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    assert_eq!(nodes.len(), 4, "{nodes:?}");
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/marquee.ticket.v1.TicketService/ListTickets"], "one call for the page");
    for booking in &nodes {
        let id = booking["id"].as_str().unwrap();
        let tickets = booking["tickets"].as_array().unwrap();
        if id == unpaid {
            assert_eq!(booking["status"], "HELD");
            assert!(tickets.is_empty(), "{booking}");
            continue;
        }
        // Each booking's own tickets: one per seat, each code signed for this booking.
        let mut seats: Vec<&str> =
            booking["seats"].as_array().unwrap().iter().map(|s| s["seatId"].as_str().unwrap()).collect();
        let mut ticketed: Vec<&str> = tickets.iter().map(|t| t["seatId"].as_str().unwrap()).collect();
        seats.sort_unstable();
        ticketed.sort_unstable();
        assert_eq!(ticketed, seats, "{booking}");
        for ticket in tickets {
            assert_eq!(booking_in_code(ticket["code"].as_str().unwrap()), id, "{booking}");
        }
    }

    // Without `tickets` in the selection, no ticket call at all.
    let (_, calls) = ticket_calls
        .during(app.data(Some(&token), "{ me { bookings(first: 10) { nodes { id } } } }", json!({})))
        .await;
    assert!(calls.is_empty(), "{calls:?}");
}
