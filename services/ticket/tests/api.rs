//! The ticket service against real MongoDB and RabbitMQ, with the real cinema
//! service for showtime times. Booking's side of the events runs as booking runs it:
//! events written to an outbox collection, relayed to the test's own exchange by the
//! real outbox relay, which logs them, and the log served by the real `EventLog`.
//! Confirmations reach the ticket service through that log (its reconciler), and
//! cancellations through its queue too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ed25519_dalek::SigningKey;
use lapin::options::{ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel as AmqpChannel, Connection};
use marquee_kit::config::ServerSettings;
use marquee_kit::metrics::Registry;
use marquee_kit::readiness::Readiness;
use marquee_kit::shutdown::Shutdown;
use marquee_kit::{ApiError, ErrorCode, Secret};
use marquee_messaging::outbox::{EventLogApi, MongoOutbox, OutboxEvent, OutboxRelay};
use marquee_ticket::settings::TicketKeySettings;
// Ticket and cinema on one isolated configuration.
use marquee_e2e::MeshSettings as Settings;
use marquee_proto::booking::v1::booking_service_server;
use marquee_proto::cinema::v1::ListShowtimesRequest;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::events::v1::event_log_server::EventLogServer;
use marquee_proto::events::v1::{BookingCancelled, BookingConfirmed, Event, event::Payload};
use marquee_proto::ticket::v1 as pb;
use marquee_proto::ticket::v1::ticket_service_client::TicketServiceClient;
use marquee_ticket::codec::{self, TicketClaims};
use marquee_ticket::keys::PublicKeys;
use mongodb::bson::{Document, doc};
use prost::Message;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::Channel;
use uuid::Uuid;

struct TestApp {
    settings: Settings,
    client: TicketServiceClient<Channel>,
    ticket: Running,
    _cinema: Running,
    booking: Booking,
    /// A showtime of the demo catalog.
    showtime_id: String,
}

struct Running {
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
    /// Where it serves `GET /metrics`.
    metrics: std::net::SocketAddr,
}

impl Running {
    async fn stop(mut self) {
        self.shutdown.cancel();
        (&mut self.task).await.unwrap().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Booking's outbox, relay and event log, on the test's database and exchange.
struct Booking {
    outbox: mongodb::Collection<Document>,
    /// `published_events`, the log the relay writes.
    log: mongodb::Collection<Document>,
    written: Arc<Notify>,
    /// Where its `EventLog` is served.
    url: String,
    stop: Shutdown,
    /// For what the tests do to the broker themselves.
    channel: AmqpChannel,
    _connection: Connection,
}

impl Drop for Booking {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Booking {
    async fn start(settings: &Settings) -> Self {
        let db = marquee_mongo::connect(&settings.mongo, "booking").await.unwrap();
        let bookings = db.collection::<Document>("bookings");
        let outbox = MongoOutbox::new(&bookings).await.unwrap();
        let api = EventLogApi::new(outbox.log());
        let written = Arc::new(Notify::new());
        let stop = Shutdown::new();
        let relay = OutboxRelay::new(
            outbox,
            &settings.rabbitmq,
            Duration::from_millis(50),
            Duration::from_secs(5),
            written.clone(),
        )
        .unwrap();
        tokio::spawn(relay.run(stop.clone()));
        let server = ServerSettings { host: "127.0.0.1".to_owned(), port: 0 };
        let (listener, addr) = marquee_kit::grpc::bind(&server).await.unwrap();
        let serving = stop.clone();
        tokio::spawn(async move {
            let registry = Registry::new().unwrap();
            let routes = Routes::new(EventLogServer::new(api));
            let name = booking_service_server::SERVICE_NAME;
            let grace = Duration::from_secs(1);
            marquee_kit::grpc::serve(listener, routes, name, Readiness::default(), &registry, serving, grace)
                .await
        });
        let (connection, channel) =
            marquee_messaging::rabbit::connect_patiently("test booking", &settings.rabbitmq).await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        Self {
            outbox: bookings,
            log: db.collection("published_events"),
            written,
            url: format!("http://{addr}"),
            stop,
            channel,
            _connection: connection,
        }
    }

    /// Writes the event to the outbox, as booking does with the state change that
    /// causes it, and returns once the relay has published and logged it.
    async fn publish(&self, event: &Event) {
        let kind = match event.r#type.as_str() {
            "booking.confirmed" => "booking.confirmed",
            "booking.cancelled" => "booking.cancelled",
            other => panic!("not a booking event tickets follow: {other}"),
        };
        let entry = OutboxEvent {
            event_id: event.event_id.parse().unwrap(),
            kind,
            occurred_at: Utc::now(),
            data: event.encode_to_vec(),
        }
        .entry();
        let id = Uuid::new_v4().to_string();
        let document =
            doc! { "_id": &id, "outbox": [entry], "pending_events": [&event.event_id], "unsent_events": 1 };
        self.outbox.insert_one(document).await.unwrap();
        self.written.notify_one();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self
            .outbox
            .find_one(doc! { "_id": &id, "pending_events": &event.event_id })
            .await
            .unwrap()
            .is_some()
        {
            assert!(tokio::time::Instant::now() < deadline, "the relay never published {}", event.event_id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes straight to the exchange, as the relay would (mandatory: refused when
    /// no queue is bound for it), but logs nothing.
    async fn publish_unlogged(&self, settings: &Settings, event: &Event) -> anyhow::Result<()> {
        let properties = BasicProperties::default()
            .with_delivery_mode(marquee_messaging::rabbit::PERSISTENT)
            .with_message_id(event.event_id.clone().into());
        marquee_messaging::rabbit::publish_confirmed(
            &self.channel,
            &settings.rabbitmq.exchange,
            &event.r#type,
            &event.encode_to_vec(),
            properties,
        )
        .await
    }

    /// When the relay logged the event (its first publication).
    async fn logged_at(&self, event: &Event) -> mongodb::bson::DateTime {
        let logged = self.log.find_one(doc! { "_id": &event.event_id }).await.unwrap();
        *logged.expect("the event was logged").get_datetime("sent_at").unwrap()
    }
}

fn event(kind: &str, booking_id: &str, payload: Payload) -> Event {
    Event {
        event_id: Uuid::now_v7().to_string(),
        r#type: kind.to_owned(),
        occurred_at: Some(marquee_kit::time::to_proto(Utc::now())),
        booking_id: booking_id.to_owned(),
        user_id: Uuid::new_v4().to_string(),
        payload: Some(payload),
    }
}

fn key_settings(id: &str, seed: [u8; 32], active: bool) -> TicketKeySettings {
    use base64::Engine as _;
    TicketKeySettings {
        id: id.to_owned(),
        seed: Some(Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(seed))),
        seed_file: None,
        valid_from: "2026-01-01T00:00:00Z".parse().unwrap(),
        valid_until: "2036-01-01T00:00:00Z".parse().unwrap(),
        active,
    }
}

async fn start_ticket(settings: &Settings) -> (Running, TicketServiceClient<Channel>) {
    let app = marquee_ticket::Application::build(settings.ticket()).await.expect("build ticket service");
    let (addr, metrics) = (app.addr(), app.metrics_addr());
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = TicketServiceClient::connect(format!("http://{addr}")).await.unwrap();
    (Running { shutdown, task, metrics }, client)
}

async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    marquee_kit::telemetry::install_crypto_provider();
    let mut settings: Settings = marquee_kit::testing::isolated_settings().await.unwrap();
    // Events older than a second are read from booking's log, every 100 ms.
    settings.ticket.reconcile_every_ms = 100;
    settings.ticket.reconcile_grace_ms = 1000;
    configure(&mut settings);
    let mut cinema_settings = settings.clone();
    cinema_settings.cinema.seed_demo = true;
    let cinema = marquee_cinema::Application::build(cinema_settings.cinema()).await.unwrap();
    let cinema_metrics = cinema.metrics_addr();
    settings.upstream.cinema_url = format!("http://{}", cinema.addr());
    let cinema_shutdown = Shutdown::new();
    let cinema_task = tokio::spawn(cinema.run_until_stopped(cinema_shutdown.clone()));
    let mut catalog = CinemaServiceClient::connect(settings.upstream.cinema_url.clone()).await.unwrap();
    let showtime_id =
        catalog.list_showtimes(ListShowtimesRequest::default()).await.unwrap().into_inner().showtimes[0]
            .id
            .clone();
    let booking = Booking::start(&settings).await;
    settings.upstream.booking_url = booking.url.clone();
    let (ticket, client) = start_ticket(&settings).await;
    TestApp {
        booking,
        settings,
        client,
        ticket,
        _cinema: Running { shutdown: cinema_shutdown, task: cinema_task, metrics: cinema_metrics },
        showtime_id,
    }
}

/// One check-in's answer, or the error a client would see.
type Scan = Result<pb::CheckInResponse, ApiError>;

impl TestApp {
    fn confirmed(&self, booking_id: &str, seats: &[&str]) -> Event {
        let payload = BookingConfirmed {
            showtime_id: self.showtime_id.clone(),
            seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
            total: None,
            payment_id: Uuid::new_v4().to_string(),
        };
        event("booking.confirmed", booking_id, Payload::BookingConfirmed(payload))
    }

    fn cancelled(&self, booking_id: &str, seats: &[&str]) -> Event {
        let payload = BookingCancelled {
            showtime_id: self.showtime_id.clone(),
            seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
            refund: None,
        };
        event("booking.cancelled", booking_id, Payload::BookingCancelled(payload))
    }

    async fn tickets(&self, booking_id: &str) -> Vec<pb::Ticket> {
        let request = pb::ListTicketsRequest { booking_ids: vec![booking_id.to_owned()] };
        self.client.clone().list_tickets(request).await.unwrap().into_inner().tickets
    }

    async fn issue(&self, booking_id: &str, seats: &[&str]) -> Result<Vec<pb::Ticket>, tonic::Status> {
        let request = pb::IssueTicketsRequest {
            booking_id: booking_id.to_owned(),
            showtime_id: self.showtime_id.clone(),
            seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
        };
        self.client.clone().issue_tickets(request).await.map(|r| r.into_inner().tickets)
    }

    /// Waits (up to 10 s) until the ticket service has recorded the booking's cancellation.
    async fn await_revocation_mark(&self, booking_id: &str) {
        let db = marquee_mongo::connect(&self.settings.mongo, "ticket").await.unwrap();
        let marks = db.collection::<mongodb::bson::Document>("cancelled_bookings");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while marks.find_one(mongodb::bson::doc! { "_id": booking_id }).await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the cancellation was never recorded");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits (up to 10 s) until the ticket service has read booking's log past `event`.
    async fn await_reconciled(&self, event: &Event) {
        let logged_at = self.booking.logged_at(event).await;
        let db = marquee_mongo::connect(&self.settings.mongo, "ticket").await.unwrap();
        let positions = db.collection::<Document>("reconciliation");
        let past = doc! {
            "_id": "booking",
            "$or": [
                { "sent_at": { "$gt": logged_at } },
                { "sent_at": logged_at, "event_id": { "$gte": &event.event_id } },
            ],
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while positions.find_one(past.clone()).await.unwrap().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "booking's log was never read past the event");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls until `check` holds for the booking's tickets (or fails after 10 s).
    async fn await_tickets(
        &self,
        booking_id: &str,
        check: impl Fn(&[pb::Ticket]) -> bool,
    ) -> Vec<pb::Ticket> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let tickets = self.tickets(booking_id).await;
            if check(&tickets) {
                return tickets;
            }
            assert!(tokio::time::Instant::now() < deadline, "tickets never got there: {tickets:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Publishes a confirmation and waits for its tickets.
    async fn book(&self, seats: &[&str]) -> (String, Vec<pb::Ticket>) {
        let booking_id = Uuid::now_v7().to_string();
        self.booking.publish(&self.confirmed(&booking_id, seats)).await;
        let tickets = self.await_tickets(&booking_id, |t| t.len() == seats.len()).await;
        (booking_id, tickets)
    }

    async fn scan_at(&self, code: &str, showtime_id: &str, nonce: &str, at: DateTime<Utc>) -> Scan {
        let request = pb::CheckInRequest {
            code: code.to_owned(),
            showtime_id: showtime_id.to_owned(),
            nonce: nonce.to_owned(),
            scanned_at: Some(marquee_kit::time::to_proto(at)),
            staff_id: "staff-1".to_owned(),
        };
        self.client
            .clone()
            .check_in(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    /// A scan of `ticket` at its show, inside its admission window, with a fresh nonce.
    async fn scan(&self, ticket: &pb::Ticket) -> pb::CheckInResponse {
        self.scan_at(&ticket.code, &self.showtime_id, &nonce(), during(ticket)).await.unwrap()
    }

    async fn outcome_of(&self, code: &str) -> pb::CheckInOutcome {
        let at = Utc::now();
        self.scan_at(code, &self.showtime_id, &nonce(), at).await.unwrap().outcome()
    }

    async fn keys(&self) -> PublicKeys {
        let listed = self.client.clone().list_keys(pb::ListKeysRequest {}).await.unwrap().into_inner().keys;
        let published = listed
            .into_iter()
            .map(|key| {
                use base64::Engine as _;
                marquee_ticket::keys::PublicKey {
                    id: key.id,
                    algorithm: key.algorithm,
                    public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key.public_key),
                    valid_from: time(key.valid_from.as_ref()),
                    valid_until: time(key.valid_until.as_ref()),
                }
            })
            .collect();
        PublicKeys::from_published(published).unwrap()
    }

    async fn revoked(&self, after: &str, limit: u32) -> pb::ListRevokedResponse {
        let request =
            pb::ListRevokedRequest { showtime_id: self.showtime_id.clone(), after: after.to_owned(), limit };
        self.client.clone().list_revoked(request).await.unwrap().into_inner()
    }
}

fn nonce() -> String {
    format!("scan-{}", Uuid::new_v4().simple())
}

fn time(ts: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    marquee_kit::time::from_proto(ts.unwrap()).unwrap()
}

/// A moment inside the ticket's admission window.
fn during(ticket: &pb::Ticket) -> DateTime<Utc> {
    time(ticket.valid_from.as_ref()) + chrono::Duration::minutes(1)
}

#[tokio::test]
async fn a_confirmed_booking_gets_one_signed_ticket_per_seat_once() {
    let app = spawn_app().await;
    let booking_id = Uuid::now_v7().to_string();
    let confirmed = app.confirmed(&booking_id, &["E7", "E8"]);
    app.booking.publish(&confirmed).await;
    // Redelivered, and confirmed again under another event id: still two tickets.
    app.booking.publish(&confirmed).await;
    let mut again = app.confirmed(&booking_id, &["E7", "E8"]);
    again.event_id = Uuid::now_v7().to_string();
    app.booking.publish(&again).await;
    let tickets = app.await_tickets(&booking_id, |t| t.len() == 2).await;
    app.await_reconciled(&again).await;
    let tickets_later = app.tickets(&booking_id).await;
    assert_eq!(tickets_later, tickets, "a repeated confirmation issued more tickets");

    let keys = app.keys().await;
    let seats: Vec<&str> = tickets.iter().map(|t| t.seat_id.as_str()).collect();
    assert_eq!(seats, ["E7", "E8"]);
    for ticket in &tickets {
        assert_eq!(ticket.status(), pb::TicketStatus::Valid);
        let claims = keys.verify(&ticket.code).unwrap();
        assert_eq!(claims.ticket_id.to_string(), ticket.id);
        assert_eq!(claims.booking_id.to_string(), booking_id);
        assert_eq!(claims.showtime_id.to_string(), app.showtime_id);
        assert_eq!(claims.seat_id, ticket.seat_id);
        assert_eq!(claims.valid_from, time(ticket.valid_from.as_ref()));
        assert!(claims.valid_from < claims.valid_until);
        assert!(ticket.code.len() < 200, "{}", ticket.code.len());
    }
}

#[tokio::test]
async fn every_check_in_outcome() {
    let app = spawn_app().await;
    let (booking_id, tickets) = app.book(&["A1", "A2"]).await;
    let ticket = &tickets[0];
    let show = app.showtime_id.clone();
    let from = time(ticket.valid_from.as_ref());
    let until = time(ticket.valid_until.as_ref());

    let early =
        app.scan_at(&ticket.code, &show, &nonce(), from - chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(early.outcome(), pb::CheckInOutcome::NotYetValid);
    assert_eq!(early.ticket.unwrap().id, ticket.id);
    let late = app.scan_at(&ticket.code, &show, &nonce(), until).await.unwrap();
    assert_eq!(late.outcome(), pb::CheckInOutcome::Expired);
    let elsewhere =
        app.scan_at(&ticket.code, &Uuid::new_v4().to_string(), &nonce(), during(ticket)).await.unwrap();
    assert_eq!(elsewhere.outcome(), pb::CheckInOutcome::WrongShowtime);
    assert_eq!(app.outcome_of("not-a-ticket").await, pb::CheckInOutcome::Invalid);

    let first = app.scan(ticket).await;
    assert_eq!(first.outcome(), pb::CheckInOutcome::Admitted);
    assert_eq!(first.checked_in_at, Some(marquee_kit::time::to_proto(during(ticket))));
    let admitted = first.ticket.unwrap();
    assert_eq!(admitted.status(), pb::TicketStatus::CheckedIn);

    let later =
        app.scan_at(&ticket.code, &show, &nonce(), during(ticket) + chrono::Duration::minutes(5)).await;
    let later = later.unwrap();
    assert_eq!(later.outcome(), pb::CheckInOutcome::AlreadyCheckedIn);
    assert_eq!(later.checked_in_at, first.checked_in_at, "the first admission's time");

    app.booking.publish(&app.cancelled(&booking_id, &["A1", "A2"])).await;
    app.await_tickets(&booking_id, |t| t.iter().all(|t| t.status() == pb::TicketStatus::Revoked)).await;
    let revoked = app.scan(&tickets[1]).await;
    assert_eq!(revoked.outcome(), pb::CheckInOutcome::Revoked);

    // Bad input is an error, not an outcome.
    let error = app.scan_at(&ticket.code, "nope", &nonce(), Utc::now()).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::BadUserInput);
    let error = app.scan_at(&ticket.code, &show, "short", Utc::now()).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::BadUserInput);
}

#[tokio::test]
async fn metrics_count_calls_by_method_and_grpc_status() {
    let app = spawn_app().await;
    app.keys().await;
    let (_, tickets) = app.book(&["D4"]).await;
    let error = app.scan_at(&tickets[0].code, "nope", &nonce(), Utc::now()).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::BadUserInput);

    let text = marquee_kit::testing::scrape(app.ticket.metrics).await.unwrap();
    let calls = |rpc: &str, code: &str| {
        let series = format!(
            "grpc_server_requests_total{{service=\"marquee.ticket.v1.TicketService\",rpc=\"{rpc}\",code=\"{code}\"}}"
        );
        marquee_kit::testing::sample(&text, &series)
    };
    assert_eq!(calls("ListKeys", "OK"), Some(1.0), "{text}");
    assert_eq!(calls("CheckIn", "INVALID_ARGUMENT"), Some(1.0), "{text}");
    assert!(calls("ListTickets", "OK").is_some_and(|calls| calls >= 1.0), "{text}");
}

#[tokio::test]
async fn of_sixteen_concurrent_scans_of_one_ticket_exactly_one_admits() {
    let app = spawn_app().await;
    let (_, tickets) = app.book(&["C5"]).await;
    let ticket = &tickets[0];
    let scans = (0..16).map(|_| app.scan(ticket));
    let answers = futures::future::join_all(scans).await;
    let admitted = answers.iter().filter(|a| a.outcome() == pb::CheckInOutcome::Admitted).count();
    let already = answers.iter().filter(|a| a.outcome() == pb::CheckInOutcome::AlreadyCheckedIn).count();
    assert_eq!((admitted, already), (1, 15), "{answers:?}");
}

#[tokio::test]
async fn a_repeated_scan_answers_the_same() {
    let app = spawn_app().await;
    let (_, tickets) = app.book(&["D1", "D2"]).await;
    let (ticket, show) = (&tickets[0], app.showtime_id.clone());
    let scan = nonce();
    let at = during(ticket);
    let first = app.scan_at(&ticket.code, &show, &scan, at).await.unwrap();
    assert_eq!(first.outcome(), pb::CheckInOutcome::Admitted);
    // The device retries its upload (concurrently, even): the same answer every time.
    let repeats =
        futures::future::join_all((0..4).map(|_| app.scan_at(&ticket.code, &show, &scan, at))).await;
    for repeat in repeats {
        assert_eq!(repeat.unwrap(), first);
    }
    // Another device scanning the same ticket is not admitted.
    let other = app.scan_at(&ticket.code, &show, &nonce(), at).await.unwrap();
    assert_eq!(other.outcome(), pb::CheckInOutcome::AlreadyCheckedIn);
    // A nonce answers for one scan only.
    let error = app.scan_at(&tickets[1].code, &show, &scan, at).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::Conflict);
    // A first scan answered INVALID is answered INVALID again.
    let bad = nonce();
    for _ in 0..2 {
        let answer = app.scan_at("bogus", &show, &bad, at).await.unwrap();
        assert_eq!(answer.outcome(), pb::CheckInOutcome::Invalid);
    }
}

/// Scans are looked up and recorded in batches: copies of one scan arriving together
/// share a batch, and each must still get the one answer.
#[tokio::test]
async fn copies_of_an_unseen_scan_uploaded_at_once_all_get_its_one_answer() {
    let app = spawn_app().await;
    let (_, tickets) = app.book(&["E1", "E2", "E3", "E4"]).await;
    let (app, show, at) = (&app, &app.showtime_id, during(&tickets[0]));
    let scans: Vec<(&str, String)> = tickets.iter().map(|t| (t.code.as_str(), nonce())).collect();
    let uploads =
        scans.iter().flat_map(|(code, scan)| (0..6).map(move |_| app.scan_at(code, show, scan, at)));
    let answers = futures::future::join_all(uploads).await;
    for (copies, (_, scan)) in answers.chunks(6).zip(&scans) {
        let first = copies[0].as_ref().expect("a repeated upload is not an error");
        assert_eq!(first.outcome(), pb::CheckInOutcome::Admitted, "scan {scan}: {first:?}");
        for copy in copies {
            assert_eq!(copy.as_ref().ok(), Some(first), "copies of scan {scan} were answered differently");
        }
    }
}

#[tokio::test]
async fn cancelling_revokes_and_scanners_page_through_revocations() {
    let app = spawn_app().await;
    let (first, _) = app.book(&["F1", "F2"]).await;
    let (second, _) = app.book(&["F3"]).await;
    assert!(app.revoked("", 0).await.tickets.is_empty());

    app.booking.publish(&app.cancelled(&first, &["F1", "F2"])).await;
    app.await_tickets(&first, |t| t.iter().all(|t| t.status() == pb::TicketStatus::Revoked)).await;
    let page = app.revoked("", 1).await;
    assert_eq!(page.tickets.len(), 1);
    assert!(page.has_more);
    let rest = app.revoked(&page.cursor, 0).await;
    assert_eq!(rest.tickets.len(), 1);
    assert!(!rest.has_more);
    let mut seats: Vec<String> =
        page.tickets.iter().chain(&rest.tickets).map(|t| t.seat_id.clone()).collect();
    seats.sort();
    assert_eq!(seats, ["F1", "F2"]);

    // Only what changed since the cursor; a redelivered cancellation adds nothing.
    assert!(app.revoked(&rest.cursor, 0).await.tickets.is_empty());
    let cancel_second = app.cancelled(&second, &["F3"]);
    app.booking.publish(&cancel_second).await;
    app.booking.publish(&cancel_second).await;
    app.await_tickets(&second, |t| t[0].status() == pb::TicketStatus::Revoked).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let since = app.revoked(&rest.cursor, 0).await;
    assert_eq!(since.tickets.iter().map(|t| t.seat_id.as_str()).collect::<Vec<_>>(), ["F3"]);
    assert_eq!(since.tickets[0].booking_id, second);
    assert_eq!(app.revoked("", 0).await.tickets.len(), 3);

    let error = app
        .client
        .clone()
        .list_revoked(pb::ListRevokedRequest {
            showtime_id: app.showtime_id.clone(),
            after: "x".into(),
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(ApiError::from_status(&error).code, ErrorCode::BadUserInput);
}

/// IssueTickets and the confirmation found in booking's log issue the same tickets,
/// once, whoever comes first, and every caller is answered the stored ones.
#[tokio::test]
async fn issue_tickets_and_the_event_issue_each_seat_once_whoever_comes_first() {
    let app = spawn_app().await;

    // Asked for first: issued, answered, and the event changes nothing after.
    let first = Uuid::now_v7().to_string();
    let issued = app.issue(&first, &["H2", "H1"]).await.unwrap();
    assert_eq!(issued.iter().map(|t| t.seat_id.as_str()).collect::<Vec<_>>(), ["H1", "H2"]);
    assert_eq!(app.tickets(&first).await, issued, "the answer is what is stored");
    let confirmed = app.confirmed(&first, &["H1", "H2"]);
    app.booking.publish(&confirmed).await;
    app.await_reconciled(&confirmed).await;
    assert_eq!(app.tickets(&first).await, issued, "the event issued more tickets");

    // The event first: asking answers its tickets.
    let (second, by_event) = app.book(&["H3"]).await;
    assert_eq!(app.issue(&second, &["H3"]).await.unwrap(), by_event);

    // Sixteen at once, with the event among them: one ticket per seat, and every
    // caller answered those.
    let third = Uuid::now_v7().to_string();
    let asks = (0..16).map(|_| app.issue(&third, &["H5", "H6"]));
    let confirmed = app.confirmed(&third, &["H5", "H6"]);
    let (answers, ()) = tokio::join!(futures::future::join_all(asks), app.booking.publish(&confirmed));
    let stored = app.await_tickets(&third, |t| t.len() == 2).await;
    for answer in answers {
        assert_eq!(answer.unwrap(), stored);
    }
    app.await_reconciled(&confirmed).await;
    assert_eq!(app.tickets(&third).await, stored);
}

#[tokio::test]
async fn issue_tickets_after_a_cancellation_answers_them_revoked() {
    let app = spawn_app().await;
    let booking_id = Uuid::now_v7().to_string();
    app.booking.publish(&app.cancelled(&booking_id, &["J1"])).await;
    app.await_revocation_mark(&booking_id).await;

    let answered = app.issue(&booking_id, &["J1"]).await.unwrap();
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].status(), pb::TicketStatus::Revoked);
    assert_eq!(app.tickets(&booking_id).await, answered);
    assert_eq!(app.scan(&answered[0]).await.outcome(), pb::CheckInOutcome::Revoked);
}

#[tokio::test]
async fn issue_tickets_refuses_bad_input_and_unknown_showtimes_and_issues_nothing() {
    let app = spawn_app().await;
    let booking_id = Uuid::now_v7().to_string();
    let too_many: Vec<String> = (1..=11).map(|n| format!("K{n}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    for seats in [&[][..], &["K1", "K1"], &["K 1"], &too_many[..]] {
        let status = app.issue(&booking_id, seats).await.unwrap_err();
        assert_eq!(ApiError::from_status(&status).code, ErrorCode::BadUserInput, "{seats:?}: {status:?}");
    }
    let bad_booking = pb::IssueTicketsRequest {
        booking_id: "not-a-booking".into(),
        showtime_id: app.showtime_id.clone(),
        seat_ids: vec!["K1".into()],
    };
    let status = app.client.clone().issue_tickets(bad_booking).await.unwrap_err();
    assert_eq!(ApiError::from_status(&status).code, ErrorCode::BadUserInput);

    let unknown_showtime = pb::IssueTicketsRequest {
        booking_id: booking_id.clone(),
        showtime_id: Uuid::now_v7().to_string(),
        seat_ids: vec!["K1".into()],
    };
    let status = app.client.clone().issue_tickets(unknown_showtime).await.unwrap_err();
    assert_eq!(ApiError::from_status(&status).code, ErrorCode::NotFound, "{status:?}");
    assert!(app.tickets(&booking_id).await.is_empty());
}

#[tokio::test]
async fn a_cancellation_handled_before_its_confirmation_still_revokes() {
    let app = spawn_app().await;
    let booking_id = Uuid::now_v7().to_string();
    app.booking.publish(&app.cancelled(&booking_id, &["G1"])).await;
    app.await_revocation_mark(&booking_id).await;
    app.booking.publish(&app.confirmed(&booking_id, &["G1"])).await;
    app.await_tickets(&booking_id, |t| t.len() == 1).await;
    let tickets =
        app.await_tickets(&booking_id, |t| t.iter().all(|t| t.status() == pb::TicketStatus::Revoked)).await;
    assert_eq!(app.scan(&tickets[0]).await.outcome(), pb::CheckInOutcome::Revoked);
    assert_eq!(app.revoked("", 0).await.tickets.len(), 1);
}

#[tokio::test]
async fn a_retired_key_admits_while_listed_and_not_after() {
    let old = key_settings("k-old", [1; 32], true);
    let app = spawn_app_with(|s| s.ticket.signing_keys = vec![old.clone()]).await;
    let (_, old_tickets) = app.book(&["H1", "H2"]).await;
    assert_eq!(app.keys().await.verify(&old_tickets[0].code).unwrap().key_id, "k-old");
    let TestApp { mut settings, ticket, booking, showtime_id, _cinema, .. } = app;
    ticket.stop().await;

    // Rotated: a new key signs, the old one stays listed.
    let mut retired = old.clone();
    retired.active = false;
    settings.ticket.signing_keys = vec![retired, key_settings("k-new", [2; 32], true)];
    let (ticket, client) = start_ticket(&settings).await;
    let app = TestApp { settings, client, ticket, _cinema, booking, showtime_id };
    assert_eq!(app.scan(&old_tickets[0]).await.outcome(), pb::CheckInOutcome::Admitted);
    let (_, new_tickets) = app.book(&["H3"]).await;
    assert_eq!(app.keys().await.verify(&new_tickets[0].code).unwrap().key_id, "k-new");
    assert_eq!(app.keys().await.listed().len(), 2);
    let TestApp { mut settings, ticket, booking, showtime_id, _cinema, .. } = app;
    ticket.stop().await;

    // The old key removed: its codes are refused, the new key's still admit.
    settings.ticket.signing_keys = vec![key_settings("k-new", [2; 32], true)];
    let (ticket, client) = start_ticket(&settings).await;
    let app = TestApp { settings, client, ticket, _cinema, booking, showtime_id };
    let refused = app.scan(&old_tickets[1]).await;
    assert_eq!(refused.outcome(), pb::CheckInOutcome::Invalid);
    assert!(refused.ticket.is_none());
    assert_eq!(app.scan(&new_tickets[0]).await.outcome(), pb::CheckInOutcome::Admitted);
}

#[tokio::test]
async fn forged_truncated_tampered_and_foreign_codes_are_invalid() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let app = spawn_app().await;
    let (_, tickets) = app.book(&["J1"]).await;
    let genuine = &tickets[0];
    let claims = app.keys().await.verify(&genuine.code).unwrap();
    let bytes = URL_SAFE_NO_PAD.decode(&genuine.code).unwrap();

    let mut forged = Vec::new();
    forged.push(genuine.code[..genuine.code.len() - 1].to_owned());
    forged.push(URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 10]));
    forged.push(format!("{}AA", genuine.code));
    for index in [5, 50, 60, bytes.len() - 1] {
        let mut tampered = bytes.clone();
        tampered[index] ^= 0x01;
        forged.push(URL_SAFE_NO_PAD.encode(tampered));
    }
    // Same claims, same key id, another key: a re-signed code.
    let other_key = SigningKey::from_bytes(&[42; 32]);
    forged.push(codec::encode(&claims, &other_key).unwrap());
    // Another seat, signed by a key that is not listed.
    let unlisted = TicketClaims { seat_id: "J2".to_owned(), key_id: "rogue".to_owned(), ..claims.clone() };
    forged.push(codec::encode(&unlisted, &other_key).unwrap());
    let mut version = bytes.clone();
    version[0] = 9;
    forged.push(URL_SAFE_NO_PAD.encode(version));
    forged.push(String::new());
    forged.push("%%%".to_owned());
    forged.push("A".repeat(5000));

    for code in &forged {
        let answer = app.scan_at(code, &app.showtime_id, &nonce(), during(genuine)).await.unwrap();
        assert_eq!(answer.outcome(), pb::CheckInOutcome::Invalid, "{code}");
        assert!(answer.ticket.is_none());
    }
    // None of them checked the genuine ticket in.
    assert_eq!(app.scan(genuine).await.outcome(), pb::CheckInOutcome::Admitted);
}

#[tokio::test]
async fn a_batch_answers_each_booking_on_its_own_in_the_order_asked() {
    let app = spawn_app().await;
    let ask = |booking: &str, showtime: &str, seats: &[&str]| pb::IssueTicketsRequest {
        booking_id: booking.to_owned(),
        showtime_id: showtime.to_owned(),
        seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
    };
    let (first, second, unknown) =
        (Uuid::now_v7().to_string(), Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let bookings = vec![
        ask(&first, &app.showtime_id, &["L1", "L2"]),
        ask("not-a-booking", &app.showtime_id, &["L3"]),
        ask(&unknown, &Uuid::now_v7().to_string(), &["L4"]),
        ask(&second, &app.showtime_id, &["L5"]),
        // The first again, in the same batch: the same tickets, issued once.
        ask(&first, &app.showtime_id, &["L1", "L2"]),
    ];
    let answers = app
        .client
        .clone()
        .issue_tickets_batch(pb::IssueTicketsBatchRequest { bookings })
        .await
        .unwrap()
        .into_inner()
        .answers;
    use pb::issue_tickets_answer::Answer;
    let issued = |n: usize| match &answers[n].answer {
        Some(Answer::Issued(issued)) => issued.tickets.clone(),
        other => panic!("answer {n}: {other:?}"),
    };
    let refused = |n: usize| match &answers[n].answer {
        Some(Answer::Refused(refused)) => tonic::Code::from(refused.code),
        other => panic!("answer {n}: {other:?}"),
    };
    assert_eq!(answers.len(), 5);
    let stored_first = app.tickets(&first).await;
    assert_eq!(stored_first.len(), 2, "one ticket per seat however often asked");
    for n in [0, 4] {
        let mut answered: Vec<_> = issued(n).iter().map(|t| (t.seat_id.clone(), t.code.clone())).collect();
        let mut stored: Vec<_> = stored_first.iter().map(|t| (t.seat_id.clone(), t.code.clone())).collect();
        answered.sort();
        stored.sort();
        assert_eq!(answered, stored, "answer {n} is what is stored");
    }
    assert_eq!(refused(1), tonic::Code::InvalidArgument);
    assert_eq!(refused(2), tonic::Code::NotFound);
    assert!(app.tickets(&unknown).await.is_empty());
    assert_eq!(issued(3).iter().map(|t| t.seat_id.as_str()).collect::<Vec<_>>(), ["L5"]);

    let too_many = (0..=256).map(|_| ask(&Uuid::now_v7().to_string(), &app.showtime_id, &["M1"])).collect();
    let status = app
        .client
        .clone()
        .issue_tickets_batch(pb::IssueTicketsBatchRequest { bookings: too_many })
        .await
        .unwrap_err();
    assert_eq!(ApiError::from_status(&status).code, ErrorCode::BadUserInput, "{status:?}");
}

/// Where reading booking's log stopped is stored: a confirmation logged while the
/// service was down gets its tickets after a restart, though the restarted service
/// would look back no further than its start.
#[tokio::test]
async fn a_confirmation_logged_while_the_service_was_down_gets_its_tickets_after_a_restart() {
    let app = spawn_app_with(|s| s.ticket.reconcile_lookback_seconds = 0).await;
    let first = Uuid::now_v7().to_string();
    let confirmed = app.confirmed(&first, &["N1"]);
    app.booking.publish(&confirmed).await;
    app.await_tickets(&first, |t| t.len() == 1).await;
    app.await_reconciled(&confirmed).await;

    let second = Uuid::now_v7().to_string();
    let while_down = app.confirmed(&second, &["N2"]);
    let TestApp { settings, ticket, booking, showtime_id, _cinema, .. } = app;
    ticket.stop().await;
    booking.publish(&while_down).await;
    let (ticket, client) = start_ticket(&settings).await;
    let app = TestApp { settings, client, ticket, _cinema, booking, showtime_id };
    let tickets = app.await_tickets(&second, |t| t.len() == 1).await;
    assert_eq!(tickets[0].seat_id, "N2");
    assert_eq!(tickets[0].status(), pb::TicketStatus::Valid);
}

/// A cancellation the broker lost on its way to the ticket queue is found in
/// booking's log, and the booking's tickets are revoked all the same.
#[tokio::test]
async fn a_cancellation_the_broker_lost_is_found_in_bookings_log() {
    let app = spawn_app().await;
    let (booking_id, _) = app.book(&["P1", "P2"]).await;
    let cancelled = app.cancelled(&booking_id, &["P1", "P2"]);
    let TestApp { settings, ticket, booking, showtime_id, _cinema, .. } = app;
    ticket.stop().await;
    booking.publish(&cancelled).await;
    let queue = settings.rabbitmq.ticket_queue.as_str();
    let lost = booking.channel.queue_purge(queue.into(), QueuePurgeOptions::default()).await.unwrap();
    assert_eq!(lost, 1, "the cancellation had reached the queue");

    let (ticket, client) = start_ticket(&settings).await;
    let app = TestApp { settings, client, ticket, _cinema, booking, showtime_id };
    let tickets =
        app.await_tickets(&booking_id, |t| t.iter().all(|t| t.status() == pb::TicketStatus::Revoked)).await;
    assert_eq!(tickets.len(), 2);
    assert_eq!(app.scan(&tickets[0]).await.outcome(), pb::CheckInOutcome::Revoked);
    let text = marquee_kit::testing::scrape(app.ticket.metrics).await.unwrap();
    assert_eq!(marquee_kit::testing::sample(&text, "ticket_reconciled_total"), Some(1.0), "{text}");
}

/// An earlier version bound the ticket queue to `booking.confirmed` too: starting
/// unbinds it, and the confirmations already in the queue are still handled.
#[tokio::test]
async fn a_queue_bound_to_confirmations_by_an_earlier_version_is_unbound_and_its_backlog_handled() {
    let app = spawn_app().await;
    let (left, after, cancelled) =
        (Uuid::now_v7().to_string(), Uuid::now_v7().to_string(), Uuid::now_v7().to_string());
    let (left_event, after_event, cancelled_event) =
        (app.confirmed(&left, &["Q1"]), app.confirmed(&after, &["Q2"]), app.cancelled(&cancelled, &["Q3"]));
    let TestApp { settings, ticket, booking, showtime_id, _cinema, .. } = app;
    ticket.stop().await;
    let (queue, exchange) = (settings.rabbitmq.ticket_queue.as_str(), settings.rabbitmq.exchange.as_str());
    booking
        .channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "booking.confirmed".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Routed by the old binding and never logged: only its delivery can issue it.
    booking.publish_unlogged(&settings, &left_event).await.unwrap();

    let (ticket, client) = start_ticket(&settings).await;
    let app = TestApp { settings, client, ticket, _cinema, booking, showtime_id };
    assert_eq!(app.await_tickets(&left, |t| t.len() == 1).await[0].seat_id, "Q1");

    // With the consumer stopped, a confirmation no longer reaches the queue; a
    // cancellation still does.
    let TestApp { settings, ticket, booking, .. } = app;
    ticket.stop().await;
    let unrouted = booking.publish_unlogged(&settings, &after_event).await.unwrap_err().to_string();
    assert!(unrouted.contains("no queue is bound"), "{unrouted}");
    booking.publish_unlogged(&settings, &cancelled_event).await.unwrap();
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let queue = settings.rabbitmq.ticket_queue.as_str();
    let declared = booking.channel.queue_declare(queue.into(), passive, FieldTable::default()).await.unwrap();
    assert_eq!(declared.message_count(), 1, "only the cancellation was routed to the queue");
}
