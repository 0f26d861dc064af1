//! End to end through GraphQL over HTTP, on the real mesh and real infrastructure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use marquee_e2e::{Gql, Mesh};
use serde_json::{Value, json};

const SHOWTIMES: &str = "{ showtimes { id startsAt movie { title } cinema { city } } }";
const SEAT_MAP: &str = "query($id: ID!) { showtime(id: $id) { seatMap { seats { id state category price { amount currency } } } } }";
const HOLD: &str = "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id status total { amount currency } expiresAt seats { seatId } } }";
const PAY: &str = "mutation($input: PayBookingInput!) { payBooking(input: $input) { id status } }";
const BOOKING: &str = "query($id: ID!) { booking(id: $id) { id status } }";

/// The first demo showtime starting more than an hour from now, so that no hold in a
/// test can meet a showtime that starts mid-test.
async fn a_showtime(mesh: &Mesh) -> String {
    let gql = mesh.graphql(None, SHOWTIMES, json!({})).await.unwrap();
    let showtimes = gql.data().unwrap()["showtimes"].as_array().unwrap().clone();
    let later = chrono::Utc::now() + chrono::Duration::hours(1);
    let showtime = showtimes
        .iter()
        .find(|s| {
            s["startsAt"].as_str().and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok()) > Some(later)
        })
        .expect("the demo catalog has showtimes over the next days");
    assert!(showtime["movie"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    showtime["id"].as_str().unwrap().to_owned()
}

async fn seat_states(mesh: &Mesh, showtime: &str) -> Vec<Value> {
    let gql = mesh.graphql(None, SEAT_MAP, json!({ "id": showtime })).await.unwrap();
    gql.data().unwrap()["showtime"]["seatMap"]["seats"].as_array().unwrap().clone()
}

fn state_of<'a>(seats: &'a [Value], id: &str) -> &'a str {
    seats.iter().find(|s| s["id"] == id).and_then(|s| s["state"].as_str()).unwrap()
}

/// Two available seats side by side in the map's order.
fn two_available(seats: &[Value]) -> Vec<String> {
    let free: Vec<String> = seats
        .iter()
        .filter(|s| s["state"] == "AVAILABLE")
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    free[..2].to_vec()
}

async fn hold(mesh: &Mesh, token: &str, showtime: &str, seats: &[String]) -> Gql {
    let input = json!({ "showtimeId": showtime, "seatIds": seats, "idempotencyKey": uuid::Uuid::new_v4().to_string() });
    mesh.graphql(Some(token), HOLD, json!({ "input": input })).await.unwrap()
}

async fn pay(mesh: &Mesh, token: &str, booking: &str, method: &str) -> Gql {
    let input = json!({ "bookingId": booking, "paymentMethod": method, "idempotencyKey": uuid::Uuid::new_v4().to_string() });
    mesh.graphql(Some(token), PAY, json!({ "input": input })).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_books_two_seats_pays_and_is_notified() {
    let mesh = Mesh::start().await.unwrap();
    let token = mesh.register("ada").await.unwrap();

    // Login works with the registered credentials too.
    let me = mesh.graphql(Some(&token), "{ me { id email } }", json!({})).await.unwrap();
    let email = me.data().unwrap()["me"]["email"].as_str().unwrap().to_owned();
    let login = mesh
        .graphql(
            None,
            "mutation($input: LoginInput!) { login(input: $input) { token user { email } } }",
            json!({ "input": { "email": email, "password": "correct horse battery" } }),
        )
        .await
        .unwrap();
    let token = login.data().unwrap()["login"]["token"].as_str().unwrap().to_owned();

    let showtime = a_showtime(&mesh).await;
    let seats = two_available(&seat_states(&mesh, &showtime).await);

    let held = hold(&mesh, &token, &showtime, &seats).await;
    let booking = held.data().unwrap()["holdSeats"].clone();
    assert_eq!(booking["status"], "HELD");
    assert!(booking["total"]["amount"].as_i64().unwrap() > 0);
    let booking_id = booking["id"].as_str().unwrap().to_owned();
    let map = seat_states(&mesh, &showtime).await;
    assert!(seats.iter().all(|s| state_of(&map, s) == "HELD"));

    let paid = pay(&mesh, &token, &booking_id, "pm_card_ok").await;
    assert_eq!(paid.data().unwrap()["payBooking"]["status"], "CONFIRMED");

    let map = seat_states(&mesh, &showtime).await;
    assert!(seats.iter().all(|s| state_of(&map, s) == "BOOKED"), "paid seats are BOOKED");

    let mine =
        mesh.graphql(Some(&token), "{ me { bookings { nodes { id status } } } }", json!({})).await.unwrap();
    assert_eq!(
        mine.data().unwrap()["me"]["bookings"]["nodes"],
        json!([{ "id": booking_id, "status": "CONFIRMED" }])
    );

    // booking.confirmed travels booking outbox -> RabbitMQ -> notification worker.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let gql = mesh
            .graphql(
                Some(&token),
                "{ me { notifications { nodes { bookingId channel eventType subject } } } }",
                json!({}),
            )
            .await
            .unwrap();
        let notes = gql.data().unwrap()["me"]["notifications"]["nodes"].as_array().unwrap().clone();
        if let Some(note) = notes.iter().find(|n| n["bookingId"] == booking_id.as_str()) {
            assert_eq!(note["eventType"], "booking.confirmed");
            assert_eq!(notes.len(), 1, "exactly one notification: {notes:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no notification for booking {booking_id} within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_fails_the_booking_and_frees_the_seats() {
    let mesh = Mesh::start().await.unwrap();
    let token = mesh.register("bob").await.unwrap();
    let showtime = a_showtime(&mesh).await;
    let seats = two_available(&seat_states(&mesh, &showtime).await);

    let held = hold(&mesh, &token, &showtime, &seats).await;
    let booking_id = held.data().unwrap()["holdSeats"]["id"].as_str().unwrap().to_owned();

    let paid = pay(&mesh, &token, &booking_id, "pm_card_declined").await;
    assert_eq!(paid.error_code(), Some("PAYMENT_DECLINED"), "{paid:?}");

    let booking = mesh.graphql(Some(&token), BOOKING, json!({ "id": booking_id })).await.unwrap();
    assert_eq!(booking.data().unwrap()["booking"]["status"], "PAYMENT_FAILED");
    let map = seat_states(&mesh, &showtime).await;
    assert!(seats.iter().all(|s| state_of(&map, s) == "AVAILABLE"), "declined seats are free at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_held_by_one_customer_are_unavailable_to_another() {
    let mesh = Mesh::start().await.unwrap();
    let alice = mesh.register("alice").await.unwrap();
    let carol = mesh.register("carol").await.unwrap();
    let showtime = a_showtime(&mesh).await;
    let map = seat_states(&mesh, &showtime).await;
    let free: Vec<String> = map
        .iter()
        .filter(|s| s["state"] == "AVAILABLE")
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    let (alices, extra) = (free[..2].to_vec(), free[5].clone());

    hold(&mesh, &alice, &showtime, &alices).await.data().unwrap();

    let wanted = vec![alices[0].clone(), alices[1].clone(), extra.clone()];
    let refused = hold(&mesh, &carol, &showtime, &wanted).await;
    assert_eq!(refused.error_code(), Some("SEAT_UNAVAILABLE"), "{refused:?}");
    let mut named: Vec<String> =
        serde_json::from_value(refused.first_error().unwrap()["extensions"]["seatIds"].clone())
            .expect("SEAT_UNAVAILABLE names the seats");
    named.sort();
    let mut expected = alices.clone();
    expected.sort();
    assert_eq!(named, expected);

    // All-or-nothing: the free seat in carol's request was not taken either.
    let map = seat_states(&mesh, &showtime).await;
    assert_eq!(state_of(&map, &extra), "AVAILABLE");

    // Anonymous clients cannot hold seats at all.
    let anonymous = mesh
        .graphql(
            None,
            HOLD,
            json!({ "input": { "showtimeId": showtime, "seatIds": [extra], "idempotencyKey": "k" } }),
        )
        .await
        .unwrap();
    assert_eq!(anonymous.error_code(), Some("UNAUTHENTICATED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_outage_fails_cleanly_and_keeps_the_hold() {
    let mesh = Mesh::start().await.unwrap();
    let token = mesh.register("dana").await.unwrap();
    let showtime = a_showtime(&mesh).await;
    let seats = two_available(&seat_states(&mesh, &showtime).await);
    let held = hold(&mesh, &token, &showtime, &seats).await;
    let booking_id = held.data().unwrap()["holdSeats"]["id"].as_str().unwrap().to_owned();

    let paid = pay(&mesh, &token, &booking_id, "pm_card_error").await;
    assert_eq!(paid.error_code(), Some("PAYMENT_DECLINED"), "{paid:?}");
    assert_eq!(paid.first_error().unwrap()["extensions"]["retryable"], true);

    // Nothing was lost: the booking is still held, and so are its seats.
    let booking = mesh.graphql(Some(&token), BOOKING, json!({ "id": booking_id })).await.unwrap();
    assert_eq!(booking.data().unwrap()["booking"]["status"], "HELD");
    let map = seat_states(&mesh, &showtime).await;
    assert!(seats.iter().all(|s| state_of(&map, s) == "HELD"));
}

/// The customer's notifications, as (booking id, event type) pairs.
async fn notifications(mesh: &Mesh, token: &str) -> Vec<(String, String)> {
    let query = "{ me { notifications { nodes { bookingId eventType } } } }";
    let gql = mesh.graphql(Some(token), query, json!({})).await.unwrap();
    let nodes = gql.data().unwrap()["me"]["notifications"]["nodes"].as_array().unwrap().clone();
    nodes
        .iter()
        .map(|n| (n["bookingId"].as_str().unwrap().to_owned(), n["eventType"].as_str().unwrap().to_owned()))
        .collect()
}

/// Books two seats and pays; returns the booking id.
async fn book(mesh: &Mesh, token: &str, showtime: &str) -> String {
    let seats = two_available(&seat_states(mesh, showtime).await);
    let held = hold(mesh, token, showtime, &seats).await;
    let booking_id = held.data().unwrap()["holdSeats"]["id"].as_str().unwrap().to_owned();
    let paid = pay(mesh, token, &booking_id, "pm_card_ok").await;
    assert_eq!(paid.data().unwrap()["payBooking"]["status"], "CONFIRMED");
    booking_id
}

async fn wait_for_notification(mesh: &Mesh, token: &str, booking_id: &str) -> Vec<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let notes = notifications(mesh, token).await;
        if notes.iter().any(|(booking, _)| booking == booking_id) {
            return notes;
        }
        assert!(Instant::now() < deadline, "no notification for booking {booking_id} within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_the_broker_drops_is_found_in_bookings_log_and_sent_once() {
    let mesh = Mesh::builder()
        .configure(|settings| {
            settings.notification.reconcile_every_ms = 200;
            settings.notification.reconcile_grace_ms = 1000;
        })
        .start()
        .await
        .unwrap();
    let token = mesh.register("grace").await.unwrap();
    let showtime = a_showtime(&mesh).await;

    // Delivered by the broker; reconciliation, running alongside, must not add a copy.
    let first = book(&mesh, &token, &showtime).await;
    wait_for_notification(&mesh, &token, &first).await;

    // The broker now drops booking events on the floor: with the work queue unbound,
    // a booking.confirmed is confirmed to booking's relay and routed nowhere.
    let rabbit = &mesh.settings.rabbitmq;
    let (connection, channel) = marquee_messaging::rabbit::connect_patiently("test", rabbit).await.unwrap();
    channel
        .queue_unbind(
            rabbit.notification_queue.as_str().into(),
            rabbit.exchange.as_str().into(),
            "booking.*".into(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let lost = book(&mesh, &token, &showtime).await;

    // Only the reconciler can send it while the queue stays unbound.
    let notes = wait_for_notification(&mesh, &token, &lost).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let notes_later = notifications(&mesh, &token).await;
    assert_eq!(notes_later, notes, "no copy arrives later");
    let mut confirmed: Vec<&str> = notes
        .iter()
        .filter(|(_, kind)| kind == "booking.confirmed")
        .map(|(booking, _)| booking.as_str())
        .collect();
    confirmed.sort_unstable();
    let mut expected = vec![first.as_str(), lost.as_str()];
    expected.sort_unstable();
    assert_eq!(confirmed, expected, "one confirmation per booking: {notes:?}");
    connection.close(200, "OK".into()).await.unwrap();
}
