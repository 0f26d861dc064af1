//! The notification service against real RabbitMQ, Redis and MongoDB, with the real
//! user service for recipient lookups, cinema for showtimes and the ticket service
//! issuing the tickets whose codes confirmations carry. Events are published here the
//! way the booking outbox publishes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lapin::PublisherConfirm;
use lapin::message::Delivery;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel as AmqpChannel, Connection};
// Notification, user and cinema on one isolated configuration.
use marquee_e2e::MeshSettings as Settings;
use marquee_kit::secret::Secret;
use marquee_kit::shutdown::Shutdown;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::cinema::v1::{GetCinemaRequest, GetMovieRequest, ListShowtimesRequest, Showtime};
use marquee_proto::common::v1::Money;
use marquee_proto::events::v1::{
    BookingCancelled, BookingConfirmed, BookingExpired, BookingHeld, BookingPaymentFailed, Event,
    PaymentRefunded, event::Payload,
};
use marquee_proto::notification::v1::notification_service_client::NotificationServiceClient;
use marquee_proto::notification::v1::{ListNotificationsRequest, Notification};
use marquee_proto::ticket::v1::ticket_service_client::TicketServiceClient;
use marquee_proto::ticket::v1::{self as ticket_pb, ListTicketsRequest, Ticket};
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use marquee_proto::user::v1::{NotificationPreferences, RegisterRequest, UpdateProfileRequest};
use mongodb::Collection;
use mongodb::bson::{Document, doc};
use prost::Message;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use uuid::Uuid;

struct TestApp {
    settings: Settings,
    notifications: NotificationServiceClient<Channel>,
    users: UserServiceClient<Channel>,
    publisher: Publisher,
    /// The `notifications` collection, read directly to count what was sent.
    log: Collection<Document>,
    worker: Worker,
    shutdown: Shutdown,
    user: Dependency,
    cinema: Dependency,
    /// Issues the tickets of a confirmation when the worker asks (`IssueTicketsBatch`).
    ticket: Dependency,
    tickets: TicketServiceClient<Channel>,
    /// A showtime of the demo catalog, and how notifications must describe it.
    showtime: Showtime,
    movie_title: String,
    cinema_name: String,
    local_start: String,
}

/// A service the worker depends on (user, cinema or ticket), which a test may stop and
/// start again on the same address.
struct Dependency {
    addr: std::net::SocketAddr,
    shutdown: Shutdown,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Dependency {
    async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

/// One running notification Application.
struct Worker {
    addr: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
    shutdown: Shutdown,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.worker.shutdown.cancel();
        self.user.shutdown.cancel();
        self.cinema.shutdown.cancel();
        self.ticket.shutdown.cancel();
    }
}

async fn start_user(settings: &Settings, port: u16) -> Dependency {
    let mut settings = settings.clone();
    settings.user.server.port = port;
    let app = marquee_user::Application::build(settings.user()).await.unwrap();
    let (addr, shutdown) = (app.addr(), Shutdown::new());
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Dependency { addr, shutdown, task: Some(task) }
}

async fn start_cinema(settings: &Settings, port: u16) -> Dependency {
    let mut settings = settings.clone();
    settings.cinema.server.port = port;
    settings.cinema.seed_demo = true;
    let app = marquee_cinema::Application::build(settings.cinema()).await.unwrap();
    let (addr, shutdown) = (app.addr(), Shutdown::new());
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Dependency { addr, shutdown, task: Some(task) }
}

async fn start_ticket(settings: &Settings, port: u16) -> Dependency {
    let mut settings = settings.clone();
    settings.ticket.server.port = port;
    // The worker's prefetch of 1 (queue order) is for the worker alone.
    settings.rabbitmq.prefetch = 100;
    let app = marquee_ticket::Application::build(settings.ticket()).await.unwrap();
    let (addr, shutdown) = (app.addr(), Shutdown::new());
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    Dependency { addr, shutdown, task: Some(task) }
}

/// Spawns the user, cinema and ticket services and the notification service. Prefetch 1 makes the
/// consumer handle deliveries one at a time in queue order, so "a later event was
/// handled" proves every earlier delivery was settled.
async fn spawn_app() -> TestApp {
    spawn_app_with(|settings| settings.rabbitmq.prefetch = 1).await
}

async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    marquee_kit::telemetry::install_crypto_provider();
    let mut settings: Settings = marquee_kit::testing::isolated_settings().await.unwrap();
    marquee_kit::telemetry::init(&settings.telemetry);
    configure(&mut settings);
    let shutdown = Shutdown::new();

    let user = start_user(&settings, 0).await;
    settings.upstream.user_url = format!("http://{}", user.addr);
    let cinema_service = start_cinema(&settings, 0).await;
    settings.upstream.cinema_url = format!("http://{}", cinema_service.addr);
    let ticket = start_ticket(&settings, 0).await;
    settings.upstream.ticket_url = format!("http://{}", ticket.addr);
    let tickets = TicketServiceClient::new(
        marquee_kit::grpc::channel(&settings.upstream.ticket_url, "", &settings.grpc).unwrap(),
    );

    let mut catalog = CinemaServiceClient::connect(settings.upstream.cinema_url.clone()).await.unwrap();
    let showtime = catalog
        .list_showtimes(ListShowtimesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .showtimes
        .remove(0);
    let movie =
        catalog.get_movie(GetMovieRequest { id: showtime.movie_id.clone() }).await.unwrap().into_inner();
    let cinema =
        catalog.get_cinema(GetCinemaRequest { id: showtime.cinema_id.clone() }).await.unwrap().into_inner();
    let zone: chrono_tz::Tz = cinema.time_zone.parse().unwrap();
    let starts_at = marquee_kit::time::from_proto(showtime.starts_at.as_ref().unwrap()).unwrap();
    let local_start = starts_at.with_timezone(&zone).format("%a %-d %b %Y, %H:%M %Z").to_string();

    let (worker, notifications) = start_worker(&settings).await;
    let log = marquee_mongo::connect(&settings.mongo, "notification")
        .await
        .unwrap()
        .collection::<Document>("notifications");
    TestApp {
        notifications,
        users: UserServiceClient::connect(settings.upstream.user_url.clone()).await.unwrap(),
        publisher: Publisher::connect(&settings).await,
        log,
        worker,
        shutdown,
        user,
        cinema: cinema_service,
        ticket,
        tickets,
        settings,
        showtime,
        movie_title: movie.title,
        cinema_name: cinema.name,
        local_start,
    }
}

async fn start_worker(settings: &Settings) -> (Worker, NotificationServiceClient<Channel>) {
    let app = marquee_notification::Application::build(settings.notification()).await.unwrap();
    let addr = app.addr();
    let url = format!("http://{addr}");
    let metrics = app.metrics_addr();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    (Worker { addr, metrics, shutdown, task }, NotificationServiceClient::connect(url).await.unwrap())
}

struct Publisher {
    _connection: Connection,
    channel: AmqpChannel,
    exchange: String,
}

impl Publisher {
    async fn connect(settings: &Settings) -> Self {
        let (connection, channel) =
            marquee_messaging::rabbit::connect_patiently("test publisher", &settings.rabbitmq).await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        Self { _connection: connection, channel, exchange: settings.rabbitmq.exchange.clone() }
    }

    async fn publish(&self, routing_key: &str, body: &[u8]) {
        let confirm = self.publish_unconfirmed(routing_key, body).await;
        assert!(confirm.await.unwrap().is_ack());
    }

    /// Publishes without waiting for the broker's confirm, which the caller awaits.
    async fn publish_unconfirmed(&self, routing_key: &str, body: &[u8]) -> PublisherConfirm {
        self.channel
            .basic_publish(
                self.exchange.clone().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
    }

    /// Publishes straight to `queue` (the default exchange), bypassing the bindings;
    /// the caller awaits the confirm.
    async fn publish_to_queue(&self, queue: &str, body: &[u8]) -> PublisherConfirm {
        self.channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
    }

    /// Publishes every event in order, then waits for all the confirms.
    async fn publish_all<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        let mut confirms = Vec::new();
        for event in events {
            confirms.push(self.publish_unconfirmed(&event.r#type, &event.encode_to_vec()).await);
        }
        for confirm in futures::future::join_all(confirms).await {
            assert!(confirm.unwrap().is_ack());
        }
    }

    /// Messages ready in a queue (delivered but unacknowledged ones are not counted).
    async fn ready(&self, queue: &str) -> u32 {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count()
    }

    /// Takes every message out of a queue.
    async fn drain(&self, queue: &str) -> Vec<Delivery> {
        let mut taken = Vec::new();
        while let Some(message) =
            self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap()
        {
            taken.push(message.delivery);
        }
        taken
    }

    async fn publish_event(&self, event: &Event) {
        self.publish(&event.r#type, &event.encode_to_vec()).await;
    }
}

/// The total of every `confirmed_event`, and how a notification must show it.
const CONFIRMED_TOTAL_MINOR: i64 = 2500;
const CONFIRMED_TOTAL_SHOWN: &str = "25.00 EUR";

impl TestApp {
    /// As `publish_all`, for one event.
    async fn publish_event(&self, event: &Event) {
        self.publish_all([event]).await;
    }

    /// Publishes the events as booking's outbox does: to the exchange, so the ticket
    /// service's consumer gets each confirmation too.
    async fn publish_all<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        self.publisher.publish_all(events).await;
    }

    /// The tickets of these bookings, as the ticket service lists them.
    async fn tickets_of(&self, booking_ids: &[String]) -> Vec<Ticket> {
        let request = ListTicketsRequest { booking_ids: booking_ids.to_vec() };
        self.tickets.clone().list_tickets(request).await.unwrap().into_inner().tickets
    }

    fn confirmed_event(&self, user_id: &str, seats: &[&str]) -> Event {
        let payload = BookingConfirmed {
            showtime_id: self.showtime.id.clone(),
            seat_ids: seat_list(seats),
            total: eur(CONFIRMED_TOTAL_MINOR),
            payment_id: Uuid::new_v4().to_string(),
        };
        event("booking.confirmed", user_id, Payload::BookingConfirmed(payload))
    }

    fn queue(&self) -> String {
        self.settings.rabbitmq.notification_queue.clone()
    }

    fn dead_letter_queue(&self) -> String {
        format!("{}.dlq", self.settings.rabbitmq.notification_queue)
    }

    /// (records, distinct event ids) in the notification log.
    async fn logged(&self) -> (u64, usize) {
        let records = self.log.count_documents(doc! {}).await.unwrap();
        let distinct = self.log.distinct("event_id", doc! {}).await.unwrap().len();
        (records, distinct)
    }

    /// Polls until the log holds at least `count` records (or fails at the deadline).
    async fn await_logged(&self, count: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (records, _) = self.logged().await;
            if records >= count {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {records} of {count} notifications recorded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the worker gracefully: in-flight deliveries are settled first.
    async fn stop_worker(&mut self) {
        self.worker.shutdown.cancel();
        (&mut self.worker.task).await.unwrap().unwrap();
    }

    /// Kills the worker's task mid-flight, as a crash would: no draining, no acks.
    async fn kill_worker(&mut self) {
        self.worker.task.abort();
        assert!((&mut self.worker.task).await.unwrap_err().is_cancelled());
    }

    async fn start_worker(&mut self) {
        let (worker, notifications) = start_worker(&self.settings).await;
        self.worker = worker;
        self.notifications = notifications;
    }

    /// Scrapes the worker's Prometheus endpoint: `series` is e.g. `name{label="v"}`.
    async fn metric(&self, series: &str) -> f64 {
        let url = format!("http://{}/metrics", self.worker.metrics);
        let text = reqwest::get(url).await.unwrap().error_for_status().unwrap().text().await.unwrap();
        text.lines()
            .filter_map(|line| line.split_once(' '))
            .find(|(name, _)| *name == series)
            .map_or(0.0, |(_, value)| value.parse().unwrap())
    }

    /// Polls until the metric reaches `value`, which it must not pass.
    async fn await_metric(&self, series: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let current = self.metric(series).await;
            assert!(current <= value, "{series} is {current}, beyond {value}");
            if current == value {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{series} stuck at {current}, not {value}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The worker's `grpc.health.v1` status for `service` ("" = the whole process).
    async fn health(&self, service: &str) -> tonic_health::pb::health_check_response::ServingStatus {
        use tonic_health::pb::HealthCheckRequest;
        use tonic_health::pb::health_client::HealthClient;
        let url = format!("http://{}", self.worker.addr);
        let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
        let mut client = HealthClient::new(channel);
        let request = HealthCheckRequest { service: service.to_owned() };
        client.check(request).await.unwrap().into_inner().status()
    }

    async fn await_health(
        &self,
        service: &str,
        wanted: tonic_health::pb::health_check_response::ServingStatus,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let status = self.health(service).await;
            if status == wanted {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "health of {service:?} stuck at {status:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until a gauge, which may go up and down, reads `value`.
    async fn await_gauge(&self, series: &str, value: f64) {
        self.await_metric_where(series, &format!("= {value}"), |current| current == value).await;
    }

    /// Polls until the metric reaches at least `value`.
    async fn await_metric_at_least(&self, series: &str, value: f64) {
        self.await_metric_where(series, &format!(">= {value}"), |current| current >= value).await;
    }

    async fn await_metric_where(&self, series: &str, wanted: &str, done: impl Fn(f64) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let current = self.metric(series).await;
            if done(current) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{series} stuck at {current}, wanted {wanted}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls until every delivery the worker took is settled (the latency histogram
    /// counts settlements) and no new one arrived for a moment. After a crash, a
    /// redelivered event whose processing claim the dead worker still holds waits for
    /// the claim to lapse, unacknowledged: an empty queue alone does not mean done.
    async fn await_all_taken_deliveries_settled(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut previous = None;
        loop {
            let consumed = self.metric("notification_events_consumed_total").await;
            let settled = self.metric("notification_processing_seconds_count").await;
            if consumed == settled && previous == Some(consumed) {
                return;
            }
            previous = (consumed == settled).then_some(consumed);
            assert!(tokio::time::Instant::now() < deadline, "{settled} of {consumed} deliveries settled");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Polls until `queue` has exactly `count` messages ready.
    async fn await_ready(&self, queue: &str, count: u32) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ready = self.publisher.ready(queue).await;
            if ready == count {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{ready} messages ready in {queue}, not {count}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the dead-letter queue until it has given at least `count` messages.
    async fn await_dead_letters(&self, count: usize) -> Vec<Delivery> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut dead = Vec::new();
        loop {
            dead.extend(self.publisher.drain(&self.dead_letter_queue()).await);
            if dead.len() >= count {
                return dead;
            }
            assert!(tokio::time::Instant::now() < deadline, "only {} dead letters", dead.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After a graceful stop: nothing left in the queue (every delivery was acked,
    /// as unsettled ones return to it), nothing dead-lettered, and exactly one
    /// record per distinct event.
    async fn assert_settled_exactly_once(&mut self, distinct_events: usize) {
        self.await_ready(&self.queue(), 0).await;
        self.await_all_taken_deliveries_settled().await;
        self.stop_worker().await;
        assert_eq!(self.publisher.ready(&self.queue()).await, 0, "unsettled deliveries remain");
        assert_eq!(self.publisher.ready(&self.dead_letter_queue()).await, 0, "nothing is dead-lettered");
        assert_eq!(self.logged().await, (distinct_events as u64, distinct_events));
    }

    async fn register(&self, name: &str) -> (String, String) {
        let email = format!("{name}.{}@example.com", Uuid::new_v4().simple());
        let response = self
            .users
            .clone()
            .register(RegisterRequest {
                email: email.clone(),
                password: "correct horse battery staple".into(),
                name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (response.user.unwrap().id, email)
    }

    async fn set_contact(&self, user_id: &str, phone: &str, email: bool, sms: bool) {
        self.users
            .clone()
            .update_profile(UpdateProfileRequest {
                id: user_id.into(),
                name: None,
                phone: Some(phone.into()),
                notification_preferences: Some(NotificationPreferences { email, sms }),
            })
            .await
            .unwrap();
    }

    async fn notifications_of(&self, user_id: &str) -> Vec<Notification> {
        self.notifications
            .clone()
            .list_notifications(ListNotificationsRequest { user_id: user_id.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .notifications
    }

    /// Every page of `user_id`'s notifications, following the page tokens to the end.
    async fn pages_of(&self, user_id: &str, page_size: i32) -> Vec<Vec<Notification>> {
        let mut pages = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .notifications
                .clone()
                .list_notifications(ListNotificationsRequest {
                    user_id: user_id.into(),
                    page_size,
                    page_token,
                })
                .await
                .unwrap()
                .into_inner();
            pages.push(page.notifications);
            if page.next_page_token.is_empty() {
                return pages;
            }
            assert!(pages.len() < 100, "paging does not end");
            page_token = page.next_page_token;
        }
    }

    /// Polls until `user_id` has at least `count` notifications (or fails at the deadline).
    async fn await_notifications(&self, user_id: &str, count: usize) -> Vec<Notification> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let listed = self.notifications_of(user_id).await;
            if listed.len() >= count {
                return listed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} notifications arrived",
                listed.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn event(event_type: &str, user_id: &str, payload: Payload) -> Event {
    Event {
        event_id: Uuid::now_v7().to_string(),
        r#type: event_type.into(),
        occurred_at: Some(marquee_kit::time::to_proto(chrono::Utc::now())),
        booking_id: Uuid::now_v7().to_string(),
        user_id: user_id.into(),
        payload: Some(payload),
    }
}

fn seat_list(seats: &[&str]) -> Vec<String> {
    seats.iter().map(|s| (*s).to_owned()).collect()
}

fn eur(amount_minor: i64) -> Option<Money> {
    Some(Money { amount_minor, currency: "EUR".into() })
}

#[tokio::test]
async fn each_confirmed_booking_is_notified_exactly_once_even_when_redelivered() {
    let app = spawn_app().await;
    let (alice, alice_email) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let events = [
        app.confirmed_event(&alice, &["A1"]),
        app.confirmed_event(&alice, &["B1", "B2"]),
        app.confirmed_event(&alice, &["C3"]),
    ];

    for event in &events {
        app.publish_event(event).await;
    }
    app.publish_event(&events[1]).await;
    // Deliveries are handled in order, so once Bob's later event is listed the
    // duplicate before it has been settled.
    app.publish_event(&app.confirmed_event(&bob, &["D4"])).await;
    app.await_notifications(&bob, 1).await;

    let listed = app.notifications_of(&alice).await;
    assert_eq!(listed.len(), events.len(), "one notification per distinct event: {listed:#?}");
    let listed_events: BTreeSet<_> = listed.iter().map(|n| n.event_id.clone()).collect();
    let published: BTreeSet<_> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(listed_events, published);

    // Newest first, addressed to the user's email, describing the booking.
    let newest = &listed[0];
    assert_eq!(newest.event_id, events[2].event_id);
    assert_eq!((newest.channel.as_str(), newest.recipient.as_str()), ("email", alice_email.as_str()));
    assert_eq!(
        (newest.booking_id.as_str(), newest.event_type.as_str()),
        (events[2].booking_id.as_str(), "booking.confirmed")
    );
    assert!(newest.body.contains("C3") && newest.body.contains(CONFIRMED_TOTAL_SHOWN), "{}", newest.body);
    let sent_at = |n: &Notification| n.sent_at.map(|t| (t.seconds, t.nanos)).unwrap();
    assert!(listed.windows(2).all(|w| sent_at(&w[0]) >= sent_at(&w[1])));
}

#[tokio::test]
async fn each_consumed_event_is_one_trace_through_its_user_and_cinema_lookups() {
    use marquee_kit::telemetry::capture;
    let app = spawn_app().await;
    assert!(capture::start(), "the kit's subscriber (with the span capture) is the process's");
    let (alice, _) = app.register("alice").await;
    // Published without a `traceparent` (as by a producer outside any trace): the
    // consumer starts a trace for the event; its lookups are calls in it.
    app.publish_event(&app.confirmed_event(&alice, &["A1"])).await;
    app.await_notifications(&alice, 1).await;

    let lookups = eventually_spans(|spans| {
        let consumed = spans.iter().filter(|span| span.name == "event.consume").find(|root| {
            let of_trace = capture::spans_of(&root.trace_id);
            let called =
                |rpc: &str| of_trace.iter().any(|span| span.name == "grpc.request" && span.rpc == rpc);
            root.parent_id.is_none()
                && called("/marquee.user.v1.UserService/GetUser")
                && called("/marquee.cinema.v1.CinemaService/GetShowtime")
        })?;
        Some(capture::spans_of(&consumed.trace_id))
    })
    .await;
    assert!(lookups.iter().filter(|span| span.name == "grpc.request").all(|span| span.parent_id.is_some()));
}

#[tokio::test]
async fn a_consumed_event_continues_the_trace_its_message_names() {
    use marquee_kit::telemetry::capture;
    let app = spawn_app().await;
    assert!(capture::start(), "the kit's subscriber (with the span capture) is the process's");
    let (alice, _) = app.register("alice").await;
    let (trace, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let held = event(
        "booking.expired",
        &alice,
        Payload::BookingExpired(BookingExpired {
            showtime_id: app.showtime.id.clone(),
            seat_ids: seat_list(&["A1"]),
        }),
    );
    // As the outbox relay publishes it: with the writer's `traceparent` header.
    let traced = marquee_messaging::rabbit::with_traceparent(
        BasicProperties::default().with_delivery_mode(2),
        Some(&format!("00-{trace}-{parent}-01")),
    );
    let confirm = app
        .publisher
        .channel
        .basic_publish(
            app.publisher.exchange.clone().into(),
            held.r#type.clone().into(),
            BasicPublishOptions::default(),
            &held.encode_to_vec(),
            traced,
        )
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_ack());
    app.await_notifications(&alice, 1).await;

    // The delivery's span is the publisher's child; the lookups are in that trace.
    let spans = eventually_spans(|_| {
        let spans = capture::spans_of(trace);
        spans.iter().any(|span| span.rpc == "/marquee.user.v1.UserService/GetUser").then_some(spans)
    })
    .await;
    let consumed: Vec<_> = spans.iter().filter(|span| span.name == "event.consume").collect();
    assert_eq!(consumed.len(), 1, "{spans:#?}");
    assert_eq!(consumed[0].parent_id.as_deref(), Some(parent));
    assert_eq!(consumed[0].service, "notification");
}

/// Waits until `found` finds what it looks for among the exported spans: a span is
/// exported when it ends, a moment after the work a test waits for.
async fn eventually_spans<T>(
    found: impl Fn(&[marquee_kit::telemetry::capture::TraceSpan]) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = found(&marquee_kit::telemetry::capture::all()) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "the spans never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn each_event_kind_is_rendered_with_its_details_on_every_channel_the_user_chose() {
    let app = spawn_app().await;
    let (ida, ida_email) = app.register("ida").await;
    let ida_phone = "+4915112345678";
    let (by_email, by_sms) = (true, true);
    app.set_contact(&ida, ida_phone, by_email, by_sms).await;
    let (jo, _) = app.register("jo").await;
    app.set_contact(&jo, "+4915199999999", false, true).await;
    let showtime_id = app.showtime.id.clone();

    let held = event(
        "booking.held",
        &ida,
        Payload::BookingHeld(BookingHeld {
            showtime_id: showtime_id.clone(),
            seat_ids: seat_list(&["C7", "C8"]),
            total: eur(2500),
            expires_at: None,
        }),
    );
    let confirmed = app.confirmed_event(&ida, &["C7", "C8"]);
    let cancelled = event(
        "booking.cancelled",
        &ida,
        Payload::BookingCancelled(BookingCancelled {
            showtime_id: showtime_id.clone(),
            seat_ids: seat_list(&["C7", "C8"]),
            refund: eur(1250),
        }),
    );
    let refunded = event(
        "payment.refunded",
        &ida,
        Payload::PaymentRefunded(PaymentRefunded {
            payment_id: Uuid::new_v4().to_string(),
            refund_id: Uuid::new_v4().to_string(),
            amount: eur(1250),
            reason: "booking cancelled".into(),
        }),
    );
    let expired = event(
        "booking.expired",
        &ida,
        Payload::BookingExpired(BookingExpired {
            showtime_id: showtime_id.clone(),
            seat_ids: seat_list(&["D1"]),
        }),
    );
    let failed = event(
        "booking.payment_failed",
        &ida,
        Payload::BookingPaymentFailed(BookingPaymentFailed { showtime_id, reason: "card declined".into() }),
    );
    let for_jo = app.confirmed_event(&jo, &["E1"]);
    // In queue order (prefetch 1): once Jo's is listed, everything before it is settled.
    app.publish_all([&held, &confirmed, &cancelled, &refunded, &expired, &failed, &for_jo]).await;
    let jo_notes = app.await_notifications(&jo, 1).await;

    assert_eq!(jo_notes.len(), 1);
    assert_eq!((jo_notes[0].channel.as_str(), jo_notes[0].recipient.as_str()), ("sms", "+4915199999999"));
    let notes = app.notifications_of(&ida).await;
    // booking.held notifies nobody; every other event goes out on each channel Ida chose.
    let notified = [&confirmed, &cancelled, &refunded, &expired, &failed];
    let channels = usize::from(by_email) + usize::from(by_sms);
    assert_eq!(notes.len(), notified.len() * channels, "nothing for booking.held: {notes:#?}");
    let note = |event: &Event, channel: &str| {
        notes.iter().find(|n| n.event_id == event.event_id && n.channel == channel).unwrap().clone()
    };
    for event in notified {
        let (email, sms) = (note(event, "email"), note(event, "sms"));
        assert_eq!((email.recipient.as_str(), sms.recipient.as_str()), (ida_email.as_str(), ida_phone));
        assert_eq!(
            (email.event_type.as_str(), email.booking_id.as_str()),
            (event.r#type.as_str(), event.booking_id.as_str())
        );
        assert!(!email.subject.is_empty() && sms.subject.is_empty());
        assert!(!email.body.contains("{{") && !sms.body.contains("{{"), "{}", email.body);
        if event.event_id != refunded.event_id {
            for text in [&email.body, &sms.body] {
                assert!(text.contains(&app.movie_title) && text.contains(&app.local_start), "{text}");
            }
            assert!(email.body.contains(&app.cinema_name), "{}", email.body);
        }
    }
    let confirmed_email = note(&confirmed, "email");
    assert!(confirmed_email.subject.contains(&app.movie_title), "{}", confirmed_email.subject);
    assert!(confirmed_email.body.contains("C7, C8") && confirmed_email.body.contains(CONFIRMED_TOTAL_SHOWN));
    assert!(note(&confirmed, "sms").body.contains("C7, C8"));
    assert!(note(&cancelled, "email").body.contains("Refund: 12.50 EUR"));
    assert!(note(&refunded, "email").subject.contains("12.50 EUR"));
    assert!(note(&refunded, "sms").body.contains("booking cancelled"));
    assert!(note(&expired, "email").body.contains("D1"));
    assert!(note(&failed, "email").body.contains("card declined"));
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_at_once_without_blocking_the_next_event() {
    let app = spawn_app().await;
    let (carol, _) = app.register("carol").await;

    let garbage = b"\xff\xffnot protobuf at all";
    app.publisher.publish("booking.confirmed", garbage).await;
    let valid = app.confirmed_event(&carol, &["E5"]);
    app.publish_event(&valid).await;

    let listed = app.await_notifications(&carol, 1).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id, valid.event_id);
    let dead = app.await_dead_letters(1).await;
    assert_eq!(dead[0].data, garbage);
    assert_eq!(death_reason(&dead[0]), "unparseable", "dead-lettered on its first delivery, never retried");
    app.await_metric(r#"notification_dead_lettered_total{reason="unparseable"}"#, 1.0).await;
    // Each message published here was consumed once: the garbage, then the valid event.
    app.await_metric("notification_events_consumed_total", 2.0).await;
}

#[tokio::test]
async fn an_event_for_an_unknown_user_is_dead_lettered_at_once_while_others_keep_flowing() {
    let mut app = spawn_app().await;
    let (erin, _) = app.register("erin").await;
    // Well formed, but its user does not exist: no retry can help (NOT_FOUND).
    let poison = app.confirmed_event(&Uuid::new_v4().to_string(), &["P1"]);
    let healthy: Vec<Event> = (0..50).map(|i| app.confirmed_event(&erin, &[&format!("H{i}")])).collect();

    app.publish_all(std::iter::once(&poison).chain(&healthy)).await;

    app.await_logged(healthy.len() as u64, Duration::from_secs(30)).await;
    let dead = app.await_dead_letters(1).await;
    assert_eq!(Event::decode(dead[0].data.as_slice()).unwrap().event_id, poison.event_id);
    assert_eq!(death_reason(&dead[0]), "permanent");
    app.await_metric(r#"notification_dead_lettered_total{reason="permanent"}"#, 1.0).await;
    assert_eq!(
        app.metric("notification_retries_scheduled_total").await,
        0.0,
        "a permanent failure is not retried"
    );
    app.await_metric("notification_messages_sent_total", healthy.len() as f64).await;
    app.assert_settled_exactly_once(healthy.len()).await;
}

#[tokio::test]
async fn a_thousand_events_published_two_or_three_times_are_notified_exactly_once() {
    // 400 deliveries at once on cold caches (showtime, and a ticket lookup each) can
    // take a send past the test config's 5 s claim on this 2-core machine, and a
    // duplicate then takes the claim over and sends again: this test is about
    // duplicate deliveries, so the claim lives as long as in production.
    let mut app = spawn_app_with(|settings| settings.notification.claim_ttl_seconds = 30).await;
    let (frank, _) = app.register("frank").await;
    let events: Vec<Event> = (0..1000).map(|i| app.confirmed_event(&frank, &[&format!("S{i}")])).collect();
    let thrice: Vec<&Event> = events.iter().step_by(7).collect();

    app.publish_all(events.iter().chain(&events).chain(thrice.iter().copied())).await;
    let deliveries = 2 * events.len() + thrice.len();

    app.await_logged(events.len() as u64, Duration::from_secs(120)).await;
    // Every delivery is counted once, and only first deliveries are sent.
    app.await_metric("notification_events_consumed_total", deliveries as f64).await;
    app.await_metric("notification_processing_seconds_count", deliveries as f64).await;
    assert_eq!(app.metric("notification_messages_sent_total").await, events.len() as f64);
    assert_eq!(app.metric("notification_duplicates_skipped_total").await, (deliveries - events.len()) as f64);
    assert_eq!(app.metric(r#"notification_dead_lettered_total{reason="unparseable"}"#).await, 0.0);
    app.assert_settled_exactly_once(events.len()).await;
}

#[tokio::test]
async fn a_message_recorded_before_its_done_marker_was_lost_is_not_recorded_twice() {
    let mut app = spawn_app_with(|_| {}).await;
    let (lea, _) = app.register("lea").await;
    let event = app.confirmed_event(&lea, &["M1"]);
    app.publish_event(&event).await;
    app.await_logged(1, Duration::from_secs(20)).await;
    app.await_metric("notification_messages_sent_total", 1.0).await;

    // As if the worker crashed between recording the message and marking the event done.
    let mut redis = redis::Client::open(app.settings.redis.url.expose().as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let key = format!("{}notification:event:{}", app.settings.redis.key_prefix, event.event_id);
    let deleted: i64 = redis::cmd("DEL").arg(&key).query_async(&mut redis).await.unwrap();
    assert_eq!(deleted, 1, "the done marker existed");
    app.publish_event(&event).await;

    // The redelivery goes all the way to the store, which already has the record.
    app.await_metric("notification_messages_sent_total", 2.0).await;
    app.assert_settled_exactly_once(1).await;
}

#[tokio::test]
async fn a_worker_killed_mid_batch_and_restarted_notifies_every_event_exactly_once() {
    // One delivery at a time (prefetch 1): 500 events take ~10 s in a debug build, so
    // the kill at the first records always lands mid-batch (with prefetch 100, CI once
    // notified every remaining event between two polls).
    let mut app = spawn_app().await;
    let (gina, _) = app.register("gina").await;
    let events: Vec<Event> = (0..500).map(|i| app.confirmed_event(&gina, &[&format!("K{i}")])).collect();

    app.publish_all(&events).await;
    app.await_logged(1, Duration::from_secs(60)).await;
    app.kill_worker().await;
    let (at_the_crash, _) = app.logged().await;
    assert!(at_the_crash < events.len() as u64, "killed mid-batch, with events left to notify");

    app.start_worker().await;
    app.await_logged(events.len() as u64, Duration::from_secs(120)).await;
    app.assert_settled_exactly_once(events.len()).await;
}

#[tokio::test]
async fn while_redis_is_down_nothing_is_acked_and_everything_is_notified_once_it_returns() {
    let mut redis = PrivateRedis::start();
    // A single requeue would dead-letter: holding deliveries must not requeue them.
    let mut app = spawn_app_with(|settings| {
        settings.redis.url = Secret::new(redis.url());
        settings.notification.delivery_limit = 1;
    })
    .await;
    let (hana, _) = app.register("hana").await;
    let before: Vec<Event> = (0..50).map(|i| app.confirmed_event(&hana, &[&format!("A{i}")])).collect();
    let during: Vec<Event> = (0..50).map(|i| app.confirmed_event(&hana, &[&format!("B{i}")])).collect();

    app.publish_all(&before).await;
    app.await_logged(before.len() as u64, Duration::from_secs(30)).await;

    redis.shut_down();
    app.publish_all(&during).await;
    // The worker takes every delivery (prefetch 100) and holds it unacknowledged.
    app.await_ready(&app.queue(), 0).await;
    // For a while nothing is sent, settled, or dead-lettered.
    let window = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < window {
        assert_eq!(app.logged().await, (before.len() as u64, before.len()), "nothing is sent without Redis");
        assert_eq!(app.publisher.ready(&app.dead_letter_queue()).await, 0, "nothing is dead-lettered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stop the worker now and everything returns to the queue: nothing was acked.
    app.kill_worker().await;
    app.await_ready(&app.queue(), during.len() as u32).await;

    redis.restart();
    app.start_worker().await;
    let all = before.len() + during.len();
    app.await_logged(all as u64, Duration::from_secs(30)).await;
    app.assert_settled_exactly_once(all).await;
}

/// Retries every 0.1 s doubling to 0.4 s, and a delivery limit of 2: the dozens of
/// attempts an outage causes must not count towards it.
fn quick_retries(settings: &mut Settings) {
    settings.notification.retry_first_ms = 100;
    settings.notification.retry_max_ms = 400;
    settings.notification.retry_budget_seconds = 120;
    settings.notification.delivery_limit = 2;
}

#[tokio::test]
async fn a_confirmation_published_while_cinema_is_down_is_sent_in_full_once_it_returns() {
    let mut app = spawn_app_with(quick_retries).await;
    let (ivy, _) = app.register("ivy").await;
    app.cinema.stop().await;
    let event = app.confirmed_event(&ivy, &["F1"]);
    // Cinema is down, so the ticket service cannot issue the tickets either.
    app.publisher.publish_event(&event).await;

    app.await_metric_at_least("notification_retries_scheduled_total", 5.0).await;
    assert_eq!(app.logged().await, (0, 0), "nothing is sent while the showtime cannot be looked up");
    assert_eq!(app.publisher.ready(&app.dead_letter_queue()).await, 0, "an outage is not a poison message");

    app.cinema = start_cinema(&app.settings, app.cinema.addr.port()).await;
    let listed = app.await_notifications(&ivy, 1).await;
    assert_eq!(listed[0].event_id, event.event_id);
    let body = &listed[0].body;
    assert!(body.contains(&app.movie_title) && body.contains(&app.local_start), "{body}");
    app.assert_settled_exactly_once(1).await;
}

#[tokio::test]
async fn when_cinema_stays_down_past_the_budget_the_confirmation_goes_out_without_the_showtime() {
    let mut app = spawn_app_with(|settings| {
        quick_retries(settings);
        settings.notification.retry_budget_seconds = 1;
    })
    .await;
    let (kim, _) = app.register("kim").await;
    app.cinema.stop().await;
    app.publisher.publish_event(&app.confirmed_event(&kim, &["F2"])).await;

    let listed = app.await_notifications(&kim, 1).await;
    let body = &listed[0].body;
    assert!(
        body.contains("F2") && body.contains(CONFIRMED_TOTAL_SHOWN) && body.contains("your film"),
        "{body}"
    );
    assert!(!body.contains(&app.movie_title), "{body}");
    // Without cinema the ticket service could not issue the tickets either.
    assert!(body.contains("were not ready") && codes_in(body).is_empty(), "{body}");
    assert!(app.metric("notification_retries_scheduled_total").await >= 2.0);
    app.await_metric("notification_sent_without_showtime_total", 1.0).await;
    app.await_metric("notification_sent_without_tickets_total", 1.0).await;
    app.assert_settled_exactly_once(1).await;
}

/// The ticket codes in a message: its lines of 100 or more base64url characters.
fn codes_in(body: &str) -> BTreeSet<String> {
    let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    body.lines().filter(|line| line.len() >= 100 && line.chars().all(base64url)).map(str::to_owned).collect()
}

fn codes_of(tickets: &[Ticket]) -> BTreeSet<String> {
    tickets.iter().map(|ticket| ticket.code.clone()).collect()
}

#[tokio::test]
async fn a_confirmation_email_carries_exactly_the_codes_the_ticket_service_issued_and_the_sms_their_count() {
    let app = spawn_app().await;
    let (ida, _) = app.register("ida").await;
    app.set_contact(&ida, "+4915112345678", true, true).await;
    let event = app.confirmed_event(&ida, &["C7", "C8"]);
    // As booking's outbox publishes it: the worker and the ticket service race for it.
    app.publisher.publish_event(&event).await;

    let notes = app.await_notifications(&ida, 2).await;
    let tickets = app.tickets_of(std::slice::from_ref(&event.booking_id)).await;
    assert_eq!(tickets.iter().map(|t| t.seat_id.as_str()).collect::<Vec<_>>(), ["C7", "C8"]);
    let email = notes.iter().find(|n| n.channel == "email").unwrap();
    assert_eq!(codes_in(&email.body), codes_of(&tickets), "{}", email.body);
    for ticket in &tickets {
        assert!(
            email.body.contains(&format!("Seat {}\n{}\n", ticket.seat_id, ticket.code)),
            "{}",
            email.body
        );
    }
    let sms = notes.iter().find(|n| n.channel == "sms").unwrap();
    assert!(
        sms.body.contains("Seats C7, C8.")
            && sms
                .body
                .ends_with("2 tickets issued: show their QR codes from your email or booking at the door."),
        "{}",
        sms.body
    );
    assert!(tickets.iter().all(|t| !sms.body.contains(&t.code)), "{}", sms.body);
    assert_eq!(app.metric("notification_sent_without_tickets_total").await, 0.0);
}

/// The worker does not wait for the ticket service's own consumer of the event: here
/// that consumer never gets it (published to the notification queue alone), and the
/// confirmation still carries codes, which are the tickets the ticket service stores.
#[tokio::test]
async fn a_confirmation_carries_codes_the_ticket_services_consumer_never_issued() {
    let mut app = spawn_app().await;
    let (ada, _) = app.register("ada").await;
    let event = app.confirmed_event(&ada, &["D1", "D2"]);
    let confirm = app.publisher.publish_to_queue(&app.queue(), &event.encode_to_vec()).await;
    assert!(confirm.await.unwrap().is_ack());

    let listed = app.await_notifications(&ada, 1).await;
    let tickets = app.tickets_of(std::slice::from_ref(&event.booking_id)).await;
    assert_eq!(tickets.iter().map(|t| t.seat_id.as_str()).collect::<Vec<_>>(), ["D1", "D2"]);
    assert_eq!(codes_in(&listed[0].body), codes_of(&tickets), "{}", listed[0].body);
    assert_eq!(app.metric("notification_retries_scheduled_total").await, 0.0, "nothing waited");
    assert_eq!(app.publisher.ready(&app.settings.rabbitmq.ticket_queue).await, 0, "the consumer got nothing");
    app.assert_settled_exactly_once(1).await;
}

#[tokio::test]
async fn while_the_ticket_service_is_down_the_confirmation_waits_and_then_carries_the_codes() {
    let mut app = spawn_app_with(quick_retries).await;
    let (lea, _) = app.register("lea").await;
    app.ticket.stop().await;
    let event = app.confirmed_event(&lea, &["T1", "T2"]);
    app.publisher.publish_event(&event).await;

    app.await_metric_at_least("notification_retries_scheduled_total", 5.0).await;
    assert_eq!(app.logged().await, (0, 0), "nothing is sent while the tickets cannot be looked up");
    assert_eq!(app.publisher.ready(&app.dead_letter_queue()).await, 0, "an outage is not a poison message");

    // Back on its address, it issues the tickets from its queue, which kept the event.
    app.ticket = start_ticket(&app.settings, app.ticket.addr.port()).await;
    let listed = app.await_notifications(&lea, 1).await;
    let tickets = app.tickets_of(std::slice::from_ref(&event.booking_id)).await;
    assert_eq!(tickets.len(), 2);
    assert_eq!(codes_in(&listed[0].body), codes_of(&tickets), "{}", listed[0].body);
    assert_eq!(app.metric("notification_sent_without_tickets_total").await, 0.0);
    app.assert_settled_exactly_once(1).await;
}

#[tokio::test]
async fn when_the_ticket_service_stays_down_past_the_budget_the_confirmation_goes_out_without_codes() {
    let mut app = spawn_app_with(|settings| {
        quick_retries(settings);
        settings.notification.retry_budget_seconds = 1;
    })
    .await;
    let (max, _) = app.register("max").await;
    app.ticket.stop().await;
    let event = app.confirmed_event(&max, &["T3"]);
    app.publisher.publish_event(&event).await;

    let listed = app.await_notifications(&max, 1).await;
    let body = &listed[0].body;
    assert!(body.contains(&app.movie_title) && body.contains("T3"), "the showtime is there: {body}");
    assert!(
        body.contains("were not ready") && body.contains(&event.booking_id) && codes_in(body).is_empty(),
        "{body}"
    );
    assert!(app.metric("notification_retries_scheduled_total").await >= 2.0);
    app.await_metric("notification_sent_without_tickets_total", 1.0).await;
    assert_eq!(app.metric("notification_sent_without_showtime_total").await, 0.0);
    app.assert_settled_exactly_once(1).await;
}

#[tokio::test]
async fn an_event_dead_lettered_after_a_long_user_outage_is_listed_and_replayed_exactly_once() {
    use marquee_notification::dead_letters::{self, Replayed};
    let mut app = spawn_app_with(|settings| {
        quick_retries(settings);
        settings.notification.retry_budget_seconds = 1;
    })
    .await;
    let (jo, _) = app.register("jo").await;
    app.user.stop().await;
    let event = app.confirmed_event(&jo, &["G1"]);
    app.publish_event(&event).await;

    app.await_metric(r#"notification_dead_lettered_total{reason="retries_exhausted"}"#, 1.0).await;
    app.await_gauge("notification_dead_letter_queue_depth", 1.0).await;
    let (total, listed) = dead_letters::list(&app.settings.rabbitmq, 10).await.unwrap();
    assert_eq!((total, listed.len()), (1, 1));
    assert_eq!(
        (listed[0].event_id.as_str(), listed[0].reason.as_str()),
        (event.event_id.as_str(), "retries_exhausted")
    );
    assert!(listed[0].error.contains("user.GetUser"), "{}", listed[0].error);
    app.await_ready(&app.dead_letter_queue(), 1).await;

    app.user = start_user(&app.settings, app.user.addr.port()).await;
    let replayed = dead_letters::replay(&app.settings.rabbitmq, 10).await.unwrap();
    assert_eq!(replayed, Replayed { replayed: 1, left: 0 });
    let sent = app.await_notifications(&jo, 1).await;
    assert_eq!(sent[0].event_id, event.event_id);
    assert!(sent[0].body.contains(&app.movie_title), "a replayed event is sent in full: {}", sent[0].body);

    // Nothing is left to replay, and a second copy of the event (a replay that
    // crashed between publishing and acking) is skipped.
    assert_eq!(
        dead_letters::replay(&app.settings.rabbitmq, 10).await.unwrap(),
        Replayed { replayed: 0, left: 0 }
    );
    app.publish_event(&event).await;
    app.await_metric("notification_duplicates_skipped_total", 1.0).await;
    app.await_gauge("notification_dead_letter_queue_depth", 0.0).await;
    app.assert_settled_exactly_once(1).await;
}

#[tokio::test]
async fn health_is_not_serving_while_redis_is_down_and_serving_once_it_returns() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut redis = PrivateRedis::start();
    let app = spawn_app_with(|settings| settings.redis.url = Secret::new(redis.url())).await;
    let api = "marquee.notification.v1.NotificationService";
    assert_eq!(app.health("").await, ServingStatus::Serving);

    redis.shut_down();
    app.await_health("", ServingStatus::NotServing).await;
    // Listing needs only MongoDB: the API itself stays up, only consuming stops.
    assert_eq!(app.health(api).await, ServingStatus::Serving);

    redis.restart();
    app.await_health("", ServingStatus::Serving).await;
}

#[tokio::test]
async fn listing_validates_the_user_and_caps_the_page() {
    let app = spawn_app().await;
    let invalid = app
        .notifications
        .clone()
        .list_notifications(ListNotificationsRequest { user_id: "nobody".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(marquee_kit::ApiError::from_status(&invalid).code, marquee_kit::ErrorCode::BadUserInput);

    let (dave, _) = app.register("dave").await;
    let seats = ["F1", "F2", "F3"];
    for seat in seats {
        app.publish_event(&app.confirmed_event(&dave, &[seat])).await;
    }
    app.await_notifications(&dave, seats.len()).await;
    let page_size = 2;
    assert!(seats.len() > page_size, "more notifications than fit on a page");
    let page = app
        .notifications
        .clone()
        .list_notifications(ListNotificationsRequest {
            user_id: dave.clone(),
            page_size: page_size as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(page.len(), page_size);
}

#[tokio::test]
async fn metrics_count_grpc_calls_by_grpc_status() {
    let app = spawn_app().await;
    let (frank, _) = app.register("frank").await;
    assert!(app.notifications_of(&frank).await.is_empty());
    let invalid = app
        .notifications
        .clone()
        .list_notifications(ListNotificationsRequest { user_id: "nobody".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);

    let calls = |code: &str| {
        format!(
            "grpc_server_requests_total{{service=\"marquee.notification.v1.NotificationService\",rpc=\"ListNotifications\",code=\"{code}\"}}"
        )
    };
    assert_eq!(app.metric(&calls("OK")).await, 1.0);
    assert_eq!(app.metric(&calls("INVALID_ARGUMENT")).await, 1.0);
}

#[tokio::test]
async fn pages_cover_every_notification_exactly_once_newest_first() {
    let app = spawn_app().await;
    let (erin, _) = app.register("erin").await;
    let events: Vec<Event> = ["G1", "G2", "G3", "G4", "G5", "G6", "G7"]
        .iter()
        .map(|seat| app.confirmed_event(&erin, &[seat]))
        .collect();
    app.publish_all(&events).await;
    app.await_notifications(&erin, events.len()).await;

    let page_size = 3;
    let pages = app.pages_of(&erin, page_size as i32).await;
    assert_eq!(page_lengths(&pages), page_lengths_of(&events, page_size), "no empty trailing page");
    let listed: Vec<&Notification> = pages.iter().flatten().collect();
    let published: Vec<&str> = events.iter().rev().map(|e| e.event_id.as_str()).collect();
    assert_eq!(listed.iter().map(|n| n.event_id.as_str()).collect::<Vec<_>>(), published, "newest first");

    // Notifications sent within one millisecond are ordered, and paged, by id.
    let frank = Uuid::new_v4().to_string();
    let sent_at = mongodb::bson::DateTime::now();
    let ids: Vec<String> = (0..5).map(|_| Uuid::now_v7().to_string()).collect();
    for id in &ids {
        app.log
            .insert_one(doc! {
                "_id": id, "user_id": &frank, "booking_id": Uuid::new_v4().to_string(), "channel": "email",
                "recipient": "frank@example.com", "subject": "s", "body": "b",
                "event_id": Uuid::new_v4().to_string(), "event_type": "booking.confirmed", "sent_at": sent_at,
            })
            .await
            .unwrap();
    }
    let page_size = 2;
    let pages = app.pages_of(&frank, page_size as i32).await;
    assert_eq!(page_lengths(&pages), page_lengths_of(&ids, page_size));
    let listed: Vec<&str> = pages.iter().flatten().map(|n| n.id.as_str()).collect();
    assert_eq!(listed, ids.iter().rev().map(String::as_str).collect::<Vec<_>>());

    let garbled = app
        .notifications
        .clone()
        .list_notifications(ListNotificationsRequest {
            user_id: frank.clone(),
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(marquee_kit::ApiError::from_status(&garbled).code, marquee_kit::ErrorCode::BadUserInput);
}

fn page_lengths(pages: &[Vec<Notification>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

/// How one notification per item of `published` fills pages of `page_size`: full
/// pages, then the rest.
fn page_lengths_of<T>(published: &[T], page_size: usize) -> Vec<usize> {
    published.chunks(page_size).map(<[T]>::len).collect()
}

#[tokio::test]
async fn with_smtp_configured_each_email_is_sent_once_to_the_users_address() {
    let sink = SmtpSink::start();
    let smtp_url = sink.url();
    let app = spawn_app_with(|settings| {
        settings.rabbitmq.prefetch = 1;
        settings.notification.smtp_url = Some(smtp_url);
    })
    .await;
    let (grace, grace_email) = app.register("grace").await;
    let (by_email, by_sms) = (true, true);
    app.set_contact(&grace, "+31612345678", by_email, by_sms).await;
    let first = app.confirmed_event(&grace, &["H1"]);
    let second = app.confirmed_event(&grace, &["H2", "H3"]);
    app.publish_all([&first, &first, &second]).await;
    let distinct = [&first, &second];

    // A message is recorded only once the relay has accepted it.
    let channels = usize::from(by_email) + usize::from(by_sms);
    let listed = app.await_notifications(&grace, distinct.len() * channels).await;
    let mails = sink.received();
    assert_eq!(mails.len(), distinct.len(), "one email per event, none for SMS or the duplicate: {mails:#?}");
    for (event, seat) in [(&first, "H1"), (&second, "H3")] {
        let recorded = listed
            .iter()
            .find(|n| n.event_id == event.event_id && n.channel == "email")
            .expect("the email is recorded");
        let mail = mails
            .iter()
            .find(|m| m.contains(&format!("Message-ID: <{}.email@marquee>", event.event_id)))
            .unwrap_or_else(|| panic!("no email for {}: {mails:#?}", event.event_id));
        assert!(mail.contains(&format!("X-RcptTo: {grace_email}\n")), "{mail}");
        assert!(mail.contains(&format!("To: {grace_email}\n")), "{mail}");
        assert!(mail.contains(&format!("Subject: {}\n", recorded.subject)), "{mail}");
        assert!(mail.contains("From: Marquee <no-reply@marquee.example>"), "{mail}");
        assert!(mail.contains(seat) && recorded.body.contains(seat), "{mail}");
    }
    // The text with every code, and the HTML showing each ticket's QR code, an
    // inline PNG it refers to by Content-ID.
    for event in distinct {
        let tickets = app.tickets_of(std::slice::from_ref(&event.booking_id)).await;
        let mail = mails.iter().find(|m| m.contains(&event.event_id)).unwrap();
        assert!(mail.contains("Content-Type: multipart/alternative"), "{mail}");
        assert_eq!(mail.matches("Content-Type: image/png").count(), tickets.len(), "{mail}");
        let decoded = quoted_printable(mail);
        for ticket in &tickets {
            let content_id = format!("ticket-{}.{}@marquee", ticket.seat_id, event.event_id);
            assert!(decoded.contains(&format!("Seat {}\n{}", ticket.seat_id, ticket.code)), "{decoded}");
            assert!(decoded.contains(&format!("<img src=\"cid:{content_id}\"")), "{decoded}");
            let png = inline_part(mail, &format!("Content-ID: <{content_id}>"));
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG: {png:?}");
        }
    }
}

/// Undoes quoted-printable soft line breaks and the escaped `=` (enough for our mail).
fn quoted_printable(mail: &str) -> String {
    mail.replace("=\n", "").replace("=3D", "=")
}

/// The decoded body of the base64 part whose headers include `header`.
fn inline_part(mail: &str, header: &str) -> Vec<u8> {
    use base64::Engine;
    let start = mail.find(header).unwrap_or_else(|| panic!("no part with {header}: {mail}"));
    let body = &mail[start..];
    let body = &body[body.find("\n\n").unwrap() + 2..];
    let encoded: String =
        body.lines().take_while(|line| !line.is_empty() && !line.starts_with("--")).collect();
    base64::engine::general_purpose::STANDARD.decode(encoded).unwrap()
}

/// A real SMTP server (aiosmtpd from the infra venv) on a random port, writing each
/// message it accepts into a maildir of this test's own.
struct SmtpSink {
    port: u16,
    dir: std::path::PathBuf,
    process: Child,
}

impl SmtpSink {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("marquee-smtp-{}", Uuid::new_v4().simple()));
        let home = std::env::var_os("MARQUEE_HOME").map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/marquee")
        });
        let process = Command::new(home.join("venv/bin/python"))
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("aiosmtpd must be installed: run scripts/infra up");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "the SMTP sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, dir, process }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, headers unfolded, line ends as `\n`.
    fn received(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("new")) else { return Vec::new() };
        entries
            .map(|entry| {
                let raw = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                raw.replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", "\t")
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why a message was dead-lettered: the worker's reason header, or the broker's
/// own (`x-death[0].reason`) when the broker did it.
fn death_reason(delivery: &Delivery) -> String {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    if let Some(AMQPValue::LongString(reason)) = headers.inner().get("x-marquee-dead-letter-reason") {
        return String::from_utf8_lossy(reason.as_bytes()).into_owned();
    }
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        panic!("a dead letter without x-death: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("an empty x-death: {headers:?}");
    };
    match death.inner().get("reason") {
        Some(AMQPValue::LongString(reason)) => String::from_utf8_lossy(reason.as_bytes()).into_owned(),
        other => panic!("x-death without a reason: {other:?}"),
    }
}

/// A Redis server of this test's own, on a random port, that the test can stop.
struct PrivateRedis {
    port: u16,
    process: Child,
}

impl PrivateRedis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self { port, process: Self::spawn(port) }
    }

    fn spawn(port: u16) -> Child {
        let process = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while redis_cli(port, &["ping"]) != "PONG" {
            assert!(std::time::Instant::now() < deadline, "private Redis did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn shut_down(&mut self) {
        redis_cli(self.port, &["shutdown", "nosave"]);
        self.process.wait().unwrap();
    }

    /// Starts it again, empty, on the same port.
    fn restart(&mut self) {
        self.process = Self::spawn(self.port);
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli").args(["-p", &port.to_string()]).args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A ticket service from before `IssueTicketsBatch` (as during a rolling upgrade): it
/// answers `IssueTickets` (by asking the real one) and nothing else.
struct TicketServiceWithoutBatch {
    real: TicketServiceClient<Channel>,
}

#[tonic::async_trait]
impl ticket_pb::ticket_service_server::TicketService for TicketServiceWithoutBatch {
    async fn issue_tickets(
        &self,
        request: tonic::Request<ticket_pb::IssueTicketsRequest>,
    ) -> Result<tonic::Response<ticket_pb::IssueTicketsResponse>, tonic::Status> {
        self.real.clone().issue_tickets(request.into_inner()).await
    }

    async fn issue_tickets_batch(
        &self,
        _: tonic::Request<ticket_pb::IssueTicketsBatchRequest>,
    ) -> Result<tonic::Response<ticket_pb::IssueTicketsBatchResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this version"))
    }

    async fn list_tickets(
        &self,
        _: tonic::Request<ticket_pb::ListTicketsRequest>,
    ) -> Result<tonic::Response<ticket_pb::ListTicketsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used here"))
    }

    async fn list_keys(
        &self,
        _: tonic::Request<ticket_pb::ListKeysRequest>,
    ) -> Result<tonic::Response<ticket_pb::ListKeysResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used here"))
    }

    async fn list_revoked(
        &self,
        _: tonic::Request<ticket_pb::ListRevokedRequest>,
    ) -> Result<tonic::Response<ticket_pb::ListRevokedResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used here"))
    }

    async fn check_in(
        &self,
        _: tonic::Request<ticket_pb::CheckInRequest>,
    ) -> Result<tonic::Response<ticket_pb::CheckInResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not used here"))
    }
}

#[tokio::test]
async fn a_ticket_service_without_the_batch_call_is_asked_once_per_booking() {
    use marquee_proto::ticket::v1::ticket_service_server::TicketServiceServer;
    use tonic::server::NamedService;

    let mut app = spawn_app().await;
    let old = TicketServiceWithoutBatch { real: app.tickets.clone() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let old_addr = listener.local_addr().unwrap();
    let registry = marquee_kit::metrics::Registry::new().unwrap();
    let stop = app.shutdown.clone();
    tokio::spawn(async move {
        marquee_kit::grpc::serve(
            listener,
            tonic::service::Routes::new(TicketServiceServer::new(old)),
            <TicketServiceServer<TicketServiceWithoutBatch> as NamedService>::NAME,
            marquee_kit::readiness::Readiness::default(),
            &registry,
            stop,
            Duration::from_secs(1),
        )
        .await
    });
    app.stop_worker().await;
    app.settings.upstream.ticket_url = format!("http://{old_addr}");
    app.start_worker().await;

    let (bo, _) = app.register("bo").await;
    let events: Vec<Event> =
        [["E1"], ["E2"], ["E3"]].iter().map(|seats| app.confirmed_event(&bo, seats)).collect();
    for event in &events {
        // Straight to the worker's queue: only its IssueTickets can issue these tickets.
        let confirm = app.publisher.publish_to_queue(&app.queue(), &event.encode_to_vec()).await;
        assert!(confirm.await.unwrap().is_ack());
    }
    let listed = app.await_notifications(&bo, 3).await;
    for event in &events {
        let sent = listed.iter().find(|n| n.event_id == event.event_id).expect("a confirmation per event");
        let tickets = app.tickets_of(std::slice::from_ref(&event.booking_id)).await;
        assert_eq!(tickets.len(), 1);
        assert_eq!(codes_in(&sent.body), codes_of(&tickets), "{}", sent.body);
    }
    assert_eq!(app.metric("notification_sent_without_tickets_total").await, 0.0);
    app.assert_settled_exactly_once(3).await;
}
