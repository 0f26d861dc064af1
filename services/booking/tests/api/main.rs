//! The booking saga end to end: the real user, cinema and payment services on
//! port 0, the booking service pointed at them, against real MongoDB, PostgreSQL
//! and RabbitMQ.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use lapin::Connection;
use lapin::options::BasicAckOptions;
use marquee_booking::{PayWaits, Sweeper};
use marquee_e2e::MeshSettings as Settings;
use marquee_e2e::{Mesh, Service};
use marquee_kit::shutdown::Shutdown;
use marquee_kit::{ApiError, ErrorCode};
use marquee_proto::booking::v1::booking_service_client::BookingServiceClient;
use marquee_proto::booking::v1::{
    Booking, BookingStatus, CancelBookingRequest, GetBookingRequest, HoldSeatsRequest, ListBookingsRequest,
    PayBookingRequest,
};
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::cinema::v1::{
    CategoryPrice, CreateCinemaRequest, CreateMovieRequest, CreateScreenRequest, CreateShowtimeRequest,
    GetSeatMapRequest, LayoutRow, LayoutSeat, ListShowtimesRequest, SeatState,
};
use marquee_proto::events::v1::{Event, event::Payload};
use marquee_proto::user::v1::RegisterRequest;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use mongodb::bson::doc;
use prost::Message;
use tonic::transport::Channel;
use uuid::Uuid;

mod busy;
mod cancel;
mod metrics;
mod outage;
mod recovery;
mod retry;
mod rush;
mod trace;
mod wait;

struct TestApp {
    settings: Settings,
    booking: BookingServiceClient<Channel>,
    /// The booking service's sweeper (tests that turn the periodic one off run it).
    sweeper: Sweeper,
    /// The booking service's local saga drivers and how repeated pays waited.
    pay_waits: PayWaits,
    users: UserServiceClient<Channel>,
    cinema: CinemaServiceClient<Channel>,
    /// What the mesh's services watch; nodes a test starts stop with them.
    shutdown: Shutdown,
    /// Stops every service when the test ends, pass or fail; scrapes their `/metrics`.
    mesh: Mesh,
}

/// A booking service of its own on the test's stores, stoppable alone (a "crash").
struct BookingNode {
    client: BookingServiceClient<Channel>,
    sweeper: Sweeper,
    pay_waits: PayWaits,
    stop: Shutdown,
    stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl BookingNode {
    async fn start(settings: &Settings, parent: &Shutdown, crash_at: Option<&str>) -> Self {
        let app = match crash_at {
            Some(point) => marquee_booking::Application::build_crashing_at(settings.booking(), point).await,
            None => marquee_booking::Application::build(settings.booking()).await,
        }
        .unwrap();
        let url = format!("http://{}", app.addr());
        let (sweeper, pay_waits) = (app.sweeper(), app.pay_waits());
        let stop = parent.child_token();
        let stopped = tokio::spawn(app.run_until_stopped(stop.clone()));
        Self { client: BookingServiceClient::connect(url).await.unwrap(), sweeper, pay_waits, stop, stopped }
    }

    /// Stops serving, sweeping and relaying, and waits until it has.
    async fn kill(self) {
        self.stop.cancel();
        self.stopped.await.unwrap().unwrap();
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// User, cinema, payment and booking on port 0 with the demo catalog; `configure`
/// adjusts the settings every service gets.
async fn spawn_app_with(configure: impl FnOnce(&mut Settings) + Send) -> TestApp {
    let mesh = Mesh::builder()
        .without(Service::Notification)
        .without_gateway()
        .configure(configure)
        .start()
        .await
        .unwrap();
    TestApp {
        booking: BookingServiceClient::connect(mesh.url(Service::Booking).unwrap()).await.unwrap(),
        sweeper: mesh.booking_sweeper().unwrap().clone(),
        pay_waits: mesh.booking_pay_waits().unwrap().clone(),
        users: UserServiceClient::connect(mesh.url(Service::User).unwrap()).await.unwrap(),
        cinema: CinemaServiceClient::connect(mesh.url(Service::Cinema).unwrap()).await.unwrap(),
        settings: mesh.settings.clone(),
        shutdown: mesh.shutdown().clone(),
        mesh,
    }
}

impl TestApp {
    async fn register(&self) -> String {
        let response = self
            .users
            .clone()
            .register(RegisterRequest {
                email: format!("fan.{}@example.com", Uuid::new_v4().simple()),
                password: "correct horse battery staple".into(),
                name: "Film Fan".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        response.user.unwrap().id
    }

    /// An upcoming showtime from the demo catalog and `count` of its free seats.
    async fn showtime_and_free_seats(&self, count: usize) -> (String, Vec<String>) {
        let showtimes = self
            .cinema
            .clone()
            .list_showtimes(ListShowtimesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .showtimes;
        // The latest one: days away, so no test meets a showtime starting mid-test.
        let showtime_id = showtimes.last().expect("the demo catalog has showtimes").id.clone();
        let free: Vec<String> = self
            .seat_states(&showtime_id)
            .await
            .into_iter()
            .filter(|(_, state)| *state == SeatState::Available)
            .map(|(seat, _)| seat)
            .take(count)
            .collect();
        assert_eq!(free.len(), count);
        (showtime_id, free)
    }

    async fn seat_states(&self, showtime_id: &str) -> BTreeMap<String, SeatState> {
        let map = self
            .cinema
            .clone()
            .get_seat_map(GetSeatMapRequest { showtime_id: showtime_id.into() })
            .await
            .unwrap()
            .into_inner();
        map.seats.into_iter().map(|s| (s.seat_id.clone(), s.state())).collect()
    }

    async fn hold(
        &self,
        user_id: &str,
        showtime_id: &str,
        seats: &[String],
        key: &str,
    ) -> Result<Booking, ApiError> {
        hold_on(&self.booking, user_id, showtime_id, seats, key).await
    }

    async fn pay(&self, booking: &Booking, method: &str) -> Result<Booking, ApiError> {
        pay_on(&self.booking, booking, method).await
    }

    async fn get(&self, id: &str, user_id: &str) -> Result<Booking, ApiError> {
        self.booking
            .clone()
            .get_booking(GetBookingRequest { id: id.into(), user_id: user_id.into(), as_admin: false })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| ApiError::from_status(&status))
    }

    async fn cancel(&self, booking_id: &str, user_id: &str, as_admin: bool) -> Result<Booking, ApiError> {
        cancel_on(&self.booking, booking_id, user_id, as_admin).await
    }

    async fn pg(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(self.settings.postgres.url.expose()).await.unwrap()
    }

    /// A new showtime starting `starts_in` from now on a screen of its own with
    /// `rows` (label, seat count), every seat "standard" at 12.50 EUR.
    async fn create_showtime(&self, starts_in: chrono::Duration, rows: &[(&str, i32)]) -> String {
        let mut cinema = self.cinema.clone();
        let movie = cinema
            .create_movie(CreateMovieRequest {
                title: format!("Saga {}", Uuid::new_v4().simple()),
                runtime_minutes: 60,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let site = cinema
            .create_cinema(CreateCinemaRequest {
                name: format!("Test House {}", Uuid::new_v4().simple()),
                city: "Berlin".into(),
                address: "Testweg 1".into(),
                time_zone: "Europe/Berlin".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let layout = rows
            .iter()
            .map(|(label, seats)| LayoutRow {
                label: (*label).into(),
                seats: (1..=*seats)
                    .map(|number| LayoutSeat { number, category: "standard".into(), ..Default::default() })
                    .collect(),
            })
            .collect();
        let screen = cinema
            .create_screen(CreateScreenRequest { cinema_id: site.id, name: "Main".into(), rows: layout })
            .await
            .unwrap()
            .into_inner();
        let starts_at = chrono::Utc::now() + starts_in;
        cinema
            .create_showtime(CreateShowtimeRequest {
                movie_id: movie.id,
                screen_id: screen.id,
                starts_at: Some(marquee_kit::time::to_proto(starts_at)),
                prices: vec![CategoryPrice {
                    category: "standard".into(),
                    price: Some(marquee_proto::common::v1::Money {
                        amount_minor: 1250,
                        currency: "EUR".into(),
                    }),
                }],
            })
            .await
            .unwrap()
            .into_inner()
            .id
    }

    async fn stored_booking(&self, id: &str) -> mongodb::bson::Document {
        self.collection("booking", "bookings").await.find_one(doc! { "_id": id }).await.unwrap().unwrap()
    }

    async fn payments_of(&self, booking_id: &str) -> Vec<mongodb::bson::Document> {
        let payments = self.collection("payment", "payments").await;
        payments.find(doc! { "booking_id": booking_id }).await.unwrap().try_collect().await.unwrap()
    }

    async fn collection(&self, service: &str, name: &str) -> mongodb::Collection<mongodb::bson::Document> {
        mongodb::Client::with_uri_str(self.settings.mongo.url.expose())
            .await
            .unwrap()
            .database(&self.settings.mongo.database_name(service))
            .collection(name)
    }

    /// A server-named queue bound to the test's exchange, declared before any event
    /// is published so nothing is missed.
    async fn subscribe(&self, routing_key: &str) -> (Connection, lapin::Consumer) {
        self.subscribe_at(self.settings.rabbitmq.url.expose(), routing_key).await
    }

    /// Like `subscribe`, connecting to the broker at `url`.
    async fn subscribe_at(&self, url: &str, routing_key: &str) -> (Connection, lapin::Consumer) {
        let mut rabbit = self.settings.rabbitmq.clone();
        rabbit.url = marquee_kit::Secret::new(url.to_owned());
        marquee_messaging::testing::subscribe_events(&rabbit, routing_key).await.unwrap()
    }
}

async fn hold_on(
    client: &BookingServiceClient<Channel>,
    user_id: &str,
    showtime_id: &str,
    seats: &[String],
    key: &str,
) -> Result<Booking, ApiError> {
    client
        .clone()
        .hold_seats(HoldSeatsRequest {
            user_id: user_id.into(),
            showtime_id: showtime_id.into(),
            seat_ids: seats.to_vec(),
            idempotency_key: key.into(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| ApiError::from_status(&status))
}

async fn pay_on(
    client: &BookingServiceClient<Channel>,
    booking: &Booking,
    method: &str,
) -> Result<Booking, ApiError> {
    pay_with_key(client, booking, method, &Uuid::new_v4().to_string()).await
}

async fn pay_with_key(
    client: &BookingServiceClient<Channel>,
    booking: &Booking,
    method: &str,
    key: &str,
) -> Result<Booking, ApiError> {
    client
        .clone()
        .pay_booking(PayBookingRequest {
            booking_id: booking.id.clone(),
            user_id: booking.user_id.clone(),
            payment_method: method.into(),
            idempotency_key: key.into(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| ApiError::from_status(&status))
}

async fn cancel_on(
    client: &BookingServiceClient<Channel>,
    booking_id: &str,
    user_id: &str,
    as_admin: bool,
) -> Result<Booking, ApiError> {
    client
        .clone()
        .cancel_booking(CancelBookingRequest {
            booking_id: booking_id.into(),
            user_id: user_id.into(),
            as_admin,
            reason: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| ApiError::from_status(&status))
}

/// The saga history as `step:outcome`.
fn steps(booking: &Booking) -> Vec<String> {
    booking.history.iter().map(|s| format!("{}:{}", s.step, s.outcome)).collect()
}

/// The steps of a hold paid without trouble.
const PAID_STEPS: [&str; 5] = [
    "lock_seats:succeeded",
    "charge:started",
    "extend_hold:succeeded",
    "charge:succeeded",
    "confirm_seats:succeeded",
];

/// Seat ids of a row: "A1".."A{count}".
fn row(label: &str, count: i32) -> Vec<String> {
    (1..=count).map(|n| format!("{label}{n}")).collect()
}

/// Polls `check` until it returns `Some`, failing after `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (with a deadline) for the event about `booking_id` on `consumer`.
async fn next_event_for(consumer: &mut lapin::Consumer, booking_id: &str) -> Event {
    let deadline = Duration::from_secs(20);
    tokio::time::timeout(deadline, async {
        loop {
            let delivery = consumer.next().await.expect("consumer ended").unwrap();
            delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
            assert_eq!(
                delivery.properties.content_type().as_ref().map(|c| c.as_str()),
                Some("application/x-protobuf")
            );
            let event = Event::decode(delivery.data.as_slice()).unwrap();
            assert_eq!(
                delivery.properties.message_id().as_ref().map(|m| m.as_str()),
                Some(event.event_id.as_str())
            );
            if event.booking_id == booking_id {
                return event;
            }
        }
    })
    .await
    .expect("no event for the booking before the deadline")
}

#[tokio::test]
async fn paying_a_hold_confirms_the_booking_books_the_seats_and_publishes_the_event() {
    let app = spawn_app().await;
    let (_connection, mut confirmed_events) = app.subscribe("booking.confirmed").await;
    let (_every_connection, mut booking_events) = app.subscribe("booking.*").await;
    let user_id = app.register().await;
    let (showtime_id, seats) = app.showtime_and_free_seats(2).await;

    let held = app.hold(&user_id, &showtime_id, &seats, "hold-1").await.unwrap();
    assert_eq!(held.status(), BookingStatus::Held);
    assert_eq!(held.seats.iter().map(|s| s.seat_id.clone()).collect::<Vec<_>>(), seats);
    let total: i64 = held.seats.iter().map(|s| s.price.as_ref().unwrap().amount_minor).sum();
    assert_eq!(held.total.as_ref().unwrap().amount_minor, total);
    assert!(held.expires_at.unwrap().seconds > held.created_at.unwrap().seconds);
    let states = app.seat_states(&showtime_id).await;
    assert!(seats.iter().all(|s| states[s] == SeatState::Held));
    // booking.held waits in the outbox for the booking's next event: nothing to relay.
    let stored = app.stored_booking(&held.id).await;
    assert_eq!(stored.get_i32("unsent_events").unwrap(), 0, "{stored:?}");
    let deferred = stored.get_array("deferred_events").unwrap();
    assert_eq!(deferred.len(), 1, "{stored:?}");
    let quiet = tokio::time::timeout(Duration::from_millis(500), booking_events.next()).await;
    assert!(quiet.is_err(), "an event was published before the booking's next one: {quiet:?}");

    let paid = app.pay(&held, "pm_card_ok").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    assert!(!paid.payment_id.is_empty());
    let states = app.seat_states(&showtime_id).await;
    assert!(seats.iter().all(|s| states[s] == SeatState::Booked), "{states:?}");

    // Paying again answers with the outcome instead of charging twice.
    let again = app.pay(&held, "pm_card_ok").await.unwrap();
    assert_eq!(
        (again.status(), again.payment_id.as_str()),
        (BookingStatus::Confirmed, paid.payment_id.as_str())
    );

    let event = next_event_for(&mut confirmed_events, &held.id).await;
    assert_eq!((event.r#type.as_str(), event.user_id.as_str()), ("booking.confirmed", user_id.as_str()));
    // The held event went out with it, first.
    let first = next_event_for(&mut booking_events, &held.id).await;
    let second = next_event_for(&mut booking_events, &held.id).await;
    assert_eq!([first.r#type.as_str(), second.r#type.as_str()], ["booking.held", "booking.confirmed"]);
    assert_eq!(first.event_id, deferred[0].as_str().unwrap());
    let Some(Payload::BookingConfirmed(payload)) = event.payload else { panic!("wrong payload: {event:?}") };
    assert_eq!((payload.seat_ids, payload.payment_id), (seats, paid.payment_id));
    assert_eq!(payload.total.unwrap().amount_minor, total);

    // Both events (held, confirmed) are marked sent once the broker confirmed them.
    let bookings = app.collection("booking", "bookings").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stored = bookings.find_one(doc! { "_id": &held.id }).await.unwrap().unwrap();
        let outbox = stored.get_array("outbox").unwrap();
        if stored.get_i32("unsent_events").unwrap() == 0 {
            assert_eq!(outbox.len(), 2);
            assert!(stored.get("deferred_events").is_none(), "{stored:?}");
            assert!(stored.get_array("pending_events").unwrap().is_empty(), "{stored:?}");
            assert!(outbox.iter().all(|e| e.as_document().unwrap().get_datetime("sent_at").is_ok()));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "outbox not drained: {stored:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_retried_hold_returns_the_same_booking_and_a_reused_key_conflicts() {
    let app = spawn_app().await;
    let user_id = app.register().await;
    let (showtime_id, seats) = app.showtime_and_free_seats(3).await;
    let first_two = seats[..2].to_vec();

    let held = app.hold(&user_id, &showtime_id, &first_two, "key-a").await.unwrap();
    let reversed: Vec<String> = first_two.iter().rev().cloned().collect();
    let replay = app.hold(&user_id, &showtime_id, &reversed, "key-a").await.unwrap();
    assert_eq!(replay.id, held.id);

    let reused = app.hold(&user_id, &showtime_id, &seats, "key-a").await.unwrap_err();
    assert_eq!(reused.code, ErrorCode::Conflict);

    let second = app.hold(&user_id, &showtime_id, &seats[2..], "key-b").await.unwrap();
    let listed = app
        .booking
        .clone()
        .list_bookings(ListBookingsRequest { user_id: user_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .bookings;
    assert_eq!(
        listed.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(),
        [second.id.as_str(), held.id.as_str()]
    );
}

#[tokio::test]
async fn a_repeated_payment_answers_the_outcome_and_its_key_cannot_name_another_method() {
    let app = spawn_app().await;
    let user_id = app.register().await;
    let (showtime_id, seats) = app.showtime_and_free_seats(2).await;
    let held = app.hold(&user_id, &showtime_id, &seats, "hold").await.unwrap();

    let paid = pay_with_key(&app.booking, &held, "pm_card_ok", "pay-1").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    let again = pay_with_key(&app.booking, &held, "pm_card_ok", "pay-1").await.unwrap();
    assert_eq!((again.id.as_str(), again.status()), (paid.id.as_str(), BookingStatus::Confirmed));
    let reused = pay_with_key(&app.booking, &held, "pm_card_declined", "pay-1").await.unwrap_err();
    assert_eq!(reused.code, ErrorCode::Conflict, "{reused:?}");
    // Another key is another request for the same booking: it is paid already.
    let other = pay_with_key(&app.booking, &held, "pm_card_declined", "pay-2").await.unwrap();
    assert_eq!(other.status(), BookingStatus::Confirmed);
    assert_eq!(app.payments_of(&held.id).await.len(), 1, "charged once");
}

#[tokio::test]
async fn seats_held_by_someone_else_are_reported_with_their_ids() {
    let app = spawn_app().await;
    let (alice, bob) = (app.register().await, app.register().await);
    let (showtime_id, seats) = app.showtime_and_free_seats(2).await;

    app.hold(&alice, &showtime_id, &seats[..1], "alice").await.unwrap();
    let taken = app.hold(&bob, &showtime_id, &seats, "bob").await.unwrap_err();
    assert_eq!(taken.code, ErrorCode::SeatUnavailable);
    assert_eq!(taken.meta_list("seat_ids"), seats[..1]);

    let too_many: Vec<String> = (1..=11).map(|n| format!("Z{n}")).collect();
    let invalid = app.hold(&alice, &showtime_id, &too_many, "many").await.unwrap_err();
    assert_eq!(invalid.code, ErrorCode::BadUserInput);
}

#[tokio::test]
async fn a_declined_payment_fails_the_booking_and_frees_the_seats() {
    let app = spawn_app().await;
    let user_id = app.register().await;
    let (showtime_id, seats) = app.showtime_and_free_seats(2).await;
    let held = app.hold(&user_id, &showtime_id, &seats, "declined").await.unwrap();

    let failed = app.pay(&held, "pm_card_declined").await.unwrap();
    assert_eq!(failed.status(), BookingStatus::PaymentFailed);
    let states = app.seat_states(&showtime_id).await;
    assert!(seats.iter().all(|s| states[s] == SeatState::Available), "{states:?}");
    assert_eq!(app.get(&held.id, &user_id).await.unwrap().status(), BookingStatus::PaymentFailed);
}

#[tokio::test]
async fn a_booking_is_invisible_to_other_users() {
    let app = spawn_app().await;
    let (owner, stranger) = (app.register().await, app.register().await);
    let (showtime_id, seats) = app.showtime_and_free_seats(1).await;
    let held = app.hold(&owner, &showtime_id, &seats, "mine").await.unwrap();

    assert_eq!(app.get(&held.id, &owner).await.unwrap().id, held.id);
    assert_eq!(app.get(&held.id, &stranger).await.unwrap_err().code, ErrorCode::NotFound);
    let mut stolen = held.clone();
    stolen.user_id = stranger;
    assert_eq!(app.pay(&stolen, "pm_card_ok").await.unwrap_err().code, ErrorCode::NotFound);
}

#[tokio::test]
async fn concurrent_payments_charge_once_and_confirm_once() {
    let app = spawn_app().await;
    let user_id = app.register().await;
    let (showtime_id, seats) = app.showtime_and_free_seats(2).await;
    let held = app.hold(&user_id, &showtime_id, &seats, "race").await.unwrap();

    let attempts = futures::future::join_all((0..5).map(|_| app.pay(&held, "pm_card_ok"))).await;
    // One attempt claims the booking and charges; the others wait for its outcome.
    for attempt in &attempts {
        let booking = attempt.as_ref().expect("every attempt answers the outcome");
        assert_eq!(booking.status(), BookingStatus::Confirmed);
    }
    assert_eq!(app.get(&held.id, &user_id).await.unwrap().status(), BookingStatus::Confirmed);

    let payments = app.collection("payment", "payments").await;
    let charges = payments.count_documents(doc! { "booking_id": &held.id }).await.unwrap();
    assert_eq!(charges, 1);
}

#[tokio::test]
async fn insufficient_funds_fails_the_booking_like_a_decline() {
    let app = spawn_app().await;
    let user_id = app.register().await;
    let (showtime_id, seats) = app.showtime_and_free_seats(1).await;
    let held = app.hold(&user_id, &showtime_id, &seats, "poor").await.unwrap();

    let failed = app.pay(&held, "pm_card_insufficient_funds").await.unwrap();
    assert_eq!(failed.status(), BookingStatus::PaymentFailed);
    let states = app.seat_states(&showtime_id).await;
    assert_eq!(states[&seats[0]], SeatState::Available);
}

#[tokio::test]
async fn a_processor_error_is_retried_with_the_same_key_then_fails_cleanly() {
    let app = spawn_app().await;
    let user_id = app.register().await;
    let (showtime_id, seats) = app.showtime_and_free_seats(2).await;
    let held = app.hold(&user_id, &showtime_id, &seats, "flaky").await.unwrap();
    let attempts = app.settings.booking.charge_attempts as usize;
    assert!(attempts > 1, "the test config retries");

    let error = app.pay(&held, "pm_card_error").await.unwrap_err();
    assert_eq!((error.code, error.grpc_code), (ErrorCode::PaymentDeclined, Some(tonic::Code::Unavailable)));
    assert_eq!(error.metadata.get("retryable").map(String::as_str), Some("true"));

    // Still held, seats still ours, one payment with every retry recorded as an attempt.
    assert_eq!(app.get(&held.id, &user_id).await.unwrap().status(), BookingStatus::Held);
    let states = app.seat_states(&showtime_id).await;
    assert!(seats.iter().all(|s| states[s] == SeatState::Held), "{states:?}");
    let payments = app.collection("payment", "payments").await;
    let stored_attempts = || async {
        let stored: Vec<_> =
            payments.find(doc! { "booking_id": &held.id }).await.unwrap().try_collect().await.unwrap();
        assert_eq!(stored.len(), 1, "one payment per booking");
        assert_eq!(stored[0].get_str("status").unwrap(), "FAILED");
        stored[0].get_array("attempts").unwrap().len()
    };
    assert_eq!(stored_attempts().await, attempts);

    // Paying again re-attempts under the same key: still one payment, nothing charged.
    let again = app.pay(&held, "pm_card_error").await.unwrap_err();
    assert_eq!(again.grpc_code, Some(tonic::Code::Unavailable));
    assert_eq!(stored_attempts().await, 2 * attempts);
    let bookings = app.collection("booking", "bookings").await;
    let stored = bookings.find_one(doc! { "_id": &held.id }).await.unwrap().unwrap();
    let outcomes: Vec<_> = stored
        .get_array("saga")
        .unwrap()
        .iter()
        .map(|e| e.as_document().unwrap().get_str("outcome").unwrap().to_owned())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| *o == "unavailable").count(), 2, "{outcomes:?}");
}
