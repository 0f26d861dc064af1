//! One booking is one trace: a customer's requests, carrying the customer's
//! `traceparent`, through the gateway, booking, cinema and payment, and over RabbitMQ
//! (the outbox relay's message headers) to the notification worker and, once it is
//! cancelled, the ticket service's consumer. The whole mesh runs in this process, its
//! spans exported to the kit's in-memory exporter.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use marquee_e2e::Mesh;
use marquee_kit::telemetry::capture::{self, TraceSpan};
use serde_json::{Value, json};

const BOOKING: &str = "marquee.booking.v1.BookingService";
const CINEMA: &str = "marquee.cinema.v1.CinemaService";
const PAYMENT: &str = "marquee.payment.v1.PaymentService";

/// The customer's client: every request carries the same `traceparent`.
struct Customer<'a> {
    mesh: &'a Mesh,
    http: reqwest::Client,
    traceparent: String,
    token: Option<String>,
}

impl Customer<'_> {
    async fn graphql(&self, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(self.mesh.graphql_url().unwrap())
            .header("traceparent", &self.traceparent)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let body: Value = request.send().await.unwrap().json().await.unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }
}

fn rpc<'a>(spans: &'a [TraceSpan], service: &str, method: &str) -> Vec<&'a TraceSpan> {
    let path = format!("/{service}/{method}");
    spans.iter().filter(|span| span.name == "grpc.request" && span.rpc == path).collect()
}

fn consumed<'a>(spans: &'a [TraceSpan], service: &str) -> Vec<&'a TraceSpan> {
    spans.iter().filter(|span| span.name == "event.consume" && span.service == service).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_booking_is_one_trace_from_the_gateway_to_the_notification() {
    let mesh = Mesh::start().await.unwrap();
    assert!(capture::start(), "the kit's subscriber (with the in-memory exporter) is the process's");
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let client_span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    let mut customer = Customer {
        mesh: &mesh,
        http: reqwest::Client::new(),
        traceparent: format!("00-{trace}-{client_span}-01"),
        token: None,
    };

    // Register, hold a seat, pay, and wait for the confirmation.
    let email = format!("ada.{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = customer
        .graphql(
            "mutation($input: RegisterInput!) { register(input: $input) { token } }",
            json!({ "input": { "email": email, "password": "correct horse battery", "name": "Ada" } }),
        )
        .await;
    customer.token = Some(registered["register"]["token"].as_str().unwrap().to_owned());
    let showtimes = customer.graphql("{ showtimes { id startsAt } }", json!({})).await;
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let showtime = showtimes["showtimes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["startsAt"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok()) > Some(later)
        })
        .expect("the demo catalog has showtimes over the next days")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let map = customer
        .graphql(
            "query($id: ID!) { showtime(id: $id) { seatMap { seats { id state } } } }",
            json!({ "id": showtime }),
        )
        .await;
    let seat = map["showtime"]["seatMap"]["seats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["state"] == "AVAILABLE")
        .unwrap()["id"]
        .clone();
    let held = customer
        .graphql(
            "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id status } }",
            json!({ "input": { "showtimeId": showtime, "seatIds": [seat], "idempotencyKey": uuid::Uuid::new_v4().to_string() } }),
        )
        .await;
    let booking = held["holdSeats"]["id"].as_str().unwrap().to_owned();
    let paid = customer
        .graphql(
            "mutation($input: PayBookingInput!) { payBooking(input: $input) { id status } }",
            json!({ "input": { "bookingId": booking, "paymentMethod": "pm_card_ok", "idempotencyKey": uuid::Uuid::new_v4().to_string() } }),
        )
        .await;
    assert_eq!(paid["payBooking"]["status"], "CONFIRMED");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let notes =
            customer.graphql("{ me { notifications { nodes { bookingId eventType } } } }", json!({})).await;
        let notes = notes["me"]["notifications"]["nodes"].as_array().unwrap().clone();
        if notes.iter().any(|n| n["bookingId"] == booking.as_str() && n["eventType"] == "booking.confirmed") {
            break;
        }
        assert!(Instant::now() < deadline, "no confirmation for booking {booking} within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cancelled = customer
        .graphql("mutation($id: ID!) { cancelBooking(id: $id) { status } }", json!({ "id": booking }))
        .await;
    assert_eq!(cancelled["cancelBooking"]["status"], "CANCELLED");

    // A span is exported when it ends: the workers' spans end once they acked.
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = capture::all();
        let of = |kind: &'static str| move |span: &&TraceSpan| span.attribute("event.type") == Some(kind);
        let notification = consumed(&spans, "notification");
        if notification.iter().any(of("booking.confirmed"))
            && notification.iter().any(of("booking.cancelled"))
            && consumed(&spans, "ticket").iter().any(of("booking.cancelled"))
        {
            break spans;
        }
        assert!(Instant::now() < deadline, "the workers' spans were never exported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Every span of the booking is in the customer's trace: all the gateway's (only
    // this customer called it), the booking's calls, and the workers' handling of its
    // events (which only the outbox's `traceparent` header can put there).
    let gateway: Vec<&TraceSpan> = spans.iter().filter(|span| span.service == "gateway").collect();
    let calls: Vec<&TraceSpan> = [
        rpc(&spans, BOOKING, "HoldSeats"),
        rpc(&spans, BOOKING, "PayBooking"),
        rpc(&spans, BOOKING, "CancelBooking"),
        rpc(&spans, CINEMA, "LockSeats"),
        rpc(&spans, CINEMA, "ConfirmSeats"),
        rpc(&spans, PAYMENT, "Charge"),
    ]
    .concat();
    let workers = [consumed(&spans, "notification"), consumed(&spans, "ticket")].concat();
    for part in [&gateway, &calls, &workers] {
        assert!(!part.is_empty());
        let outside: Vec<&&TraceSpan> = part.iter().filter(|span| span.trace_id != trace).collect();
        assert!(outside.is_empty(), "spans of the booking outside its trace {trace}: {outside:#?}");
    }
    // booking.held notifies nobody, so it never reaches the notification worker; the
    // ticket service's queue gets the cancellation alone (the worker has a
    // confirmation's tickets issued).
    let of_booking = |span: &&TraceSpan| span.attribute("booking.id") == Some(booking.as_str());
    let types_of = |service: &str| -> Vec<String> {
        let mut types: Vec<String> = consumed(&spans, service)
            .into_iter()
            .filter(of_booking)
            .filter_map(|span| span.attribute("event.type").map(str::to_owned))
            .collect();
        types.sort();
        types.dedup();
        types
    };
    let notified = types_of("notification");
    assert!(!notified.contains(&"booking.held".to_owned()), "{notified:?}");
    assert!(notified.contains(&"booking.confirmed".to_owned()), "{notified:?}");
    assert_eq!(types_of("ticket"), ["booking.cancelled"]);

    // Each service took part, under the right parent.
    let spans = capture::spans_of(&trace);
    let one = |found: Vec<&TraceSpan>, what: &str| {
        assert_eq!(found.len(), 1, "one {what}: {found:#?}");
        found[0].clone()
    };
    let hold = one(rpc(&spans, BOOKING, "HoldSeats"), "hold");
    let pay = one(rpc(&spans, BOOKING, "PayBooking"), "pay");
    let cancel = one(rpc(&spans, BOOKING, "CancelBooking"), "cancel");
    let gateway_ids: Vec<&str> = gateway.iter().map(|span| span.span_id.as_str()).collect();
    for request in [&hold, &pay, &cancel] {
        let parent = request.parent_id.as_deref().unwrap();
        assert!(gateway_ids.contains(&parent), "gateway -> booking: {request:#?}");
    }
    assert!(gateway.iter().all(|span| span.parent_id.as_deref() == Some(client_span.as_str())));
    // Retried calls are spans of their own, each under the request that made it.
    for lock in rpc(&spans, CINEMA, "LockSeats") {
        assert!(lock.descends_from(&hold, &spans), "booking -> cinema: {lock:#?}");
    }
    for confirm in rpc(&spans, CINEMA, "ConfirmSeats") {
        assert!(confirm.descends_from(&pay, &spans), "booking -> cinema: {confirm:#?}");
    }
    for charge in rpc(&spans, PAYMENT, "Charge") {
        assert!(charge.descends_from(&pay, &spans), "booking -> payment: {charge:#?}");
    }
    let event = |service: &str, kind: &str| {
        let found: Vec<&TraceSpan> = consumed(&spans, service)
            .into_iter()
            .filter(|span| span.attribute("event.type") == Some(kind))
            .collect();
        assert!(!found.is_empty(), "{service} handled {kind}: {spans:#?}");
        found
    };
    // booking's outbox -> RabbitMQ -> the workers: the event written while paying is
    // handled under the pay, the one written while cancelling under the cancel.
    for notified in event("notification", "booking.confirmed") {
        assert!(notified.descends_from(&pay, &spans), "booking outbox -> notification: {notified:#?}");
    }
    for notified in event("notification", "booking.cancelled") {
        assert!(notified.descends_from(&cancel, &spans), "booking outbox -> notification: {notified:#?}");
    }
    for revoked in event("ticket", "booking.cancelled") {
        assert!(revoked.descends_from(&cancel, &spans), "booking outbox -> ticket: {revoked:#?}");
    }
    mesh.stop().await;
}
