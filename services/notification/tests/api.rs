//! The notification service against real RabbitMQ, Redis and MongoDB, with the real
//! user service for recipient lookups. Events are published here the way the
//! booking outbox publishes them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel as AmqpChannel, Connection, ConnectionProperties, ExchangeKind};
use marquee_common::Settings;
use marquee_common::shutdown::Shutdown;
use marquee_proto::common::v1::Money;
use marquee_proto::events::v1::{BookingConfirmed, Event, event::Payload};
use marquee_proto::notification::v1::notification_service_client::NotificationServiceClient;
use marquee_proto::notification::v1::{ListNotificationsRequest, Notification};
use marquee_proto::user::v1::RegisterRequest;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use prost::Message;
use tonic::transport::Channel;
use uuid::Uuid;

struct TestApp {
    notifications: NotificationServiceClient<Channel>,
    users: UserServiceClient<Channel>,
    publisher: Publisher,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Spawns the user service and the notification service. Prefetch 1 makes the
/// consumer handle deliveries one at a time in queue order, so "a later event was
/// handled" proves every earlier delivery was settled.
async fn spawn_app() -> TestApp {
    marquee_common::telemetry::install_crypto_provider();
    let mut settings = marquee_common::testing::isolated_settings().await.unwrap();
    marquee_common::telemetry::init(&settings.telemetry);
    settings.rabbitmq.prefetch = 1;
    let shutdown = Shutdown::new();

    let user = marquee_user::Application::build(settings.clone()).await.unwrap();
    settings.upstream.user_url = format!("http://{}", user.addr());
    tokio::spawn(user.run_until_stopped(shutdown.clone()));

    let app = marquee_notification::Application::build(settings.clone()).await.unwrap();
    let url = format!("http://{}", app.addr());
    tokio::spawn(app.run_until_stopped(shutdown.clone()));

    TestApp {
        notifications: NotificationServiceClient::connect(url).await.unwrap(),
        users: UserServiceClient::connect(settings.upstream.user_url.clone()).await.unwrap(),
        publisher: Publisher::connect(&settings).await,
        shutdown,
    }
}

struct Publisher {
    _connection: Connection,
    channel: AmqpChannel,
    exchange: String,
}

impl Publisher {
    async fn connect(settings: &Settings) -> Self {
        let connection = Connection::connect(settings.rabbitmq.url.expose(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        channel
            .exchange_declare(
                settings.rabbitmq.exchange.clone().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self { _connection: connection, channel, exchange: settings.rabbitmq.exchange.clone() }
    }

    async fn publish(&self, routing_key: &str, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                self.exchange.clone().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack());
    }

    async fn publish_event(&self, event: &Event) {
        self.publish(&event.r#type, &event.encode_to_vec()).await;
    }
}

impl TestApp {
    async fn register(&self, name: &str) -> (String, String) {
        let email = format!("{name}.{}@example.com", Uuid::new_v4().simple());
        let response = self
            .users
            .clone()
            .register(RegisterRequest {
                email: email.clone(),
                password: "correct horse battery staple".into(),
                name: name.into(),
            })
            .await
            .unwrap()
            .into_inner();
        (response.user.unwrap().id, email)
    }

    async fn notifications_of(&self, user_id: &str) -> Vec<Notification> {
        self.notifications
            .clone()
            .list_notifications(ListNotificationsRequest { user_id: user_id.into(), page_size: 0 })
            .await
            .unwrap()
            .into_inner()
            .notifications
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

fn confirmed_event(user_id: &str, seats: &[&str]) -> Event {
    Event {
        event_id: Uuid::now_v7().to_string(),
        r#type: "booking.confirmed".into(),
        occurred_at: Some(marquee_common::time::to_proto(chrono::Utc::now())),
        booking_id: Uuid::now_v7().to_string(),
        user_id: user_id.into(),
        payload: Some(Payload::BookingConfirmed(BookingConfirmed {
            showtime_id: Uuid::new_v4().to_string(),
            seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
            total: Some(Money { amount_minor: 2500, currency: "EUR".into() }),
            payment_id: Uuid::new_v4().to_string(),
        })),
    }
}

#[tokio::test]
async fn each_confirmed_booking_is_notified_exactly_once_even_when_redelivered() {
    let app = spawn_app().await;
    let (alice, alice_email) = app.register("alice").await;
    let (bob, _) = app.register("bob").await;
    let events = [
        confirmed_event(&alice, &["A1"]),
        confirmed_event(&alice, &["B1", "B2"]),
        confirmed_event(&alice, &["C3"]),
    ];

    for event in &events {
        app.publisher.publish_event(event).await;
    }
    app.publisher.publish_event(&events[1]).await;
    // Deliveries are handled in order, so once Bob's later event is listed the
    // duplicate before it has been settled.
    app.publisher.publish_event(&confirmed_event(&bob, &["D4"])).await;
    app.await_notifications(&bob, 1).await;

    let listed = app.notifications_of(&alice).await;
    assert_eq!(listed.len(), 3, "one notification per distinct event: {listed:#?}");
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
    assert!(newest.body.contains("C3") && newest.body.contains("25.00 EUR"), "{}", newest.body);
    let sent_at = |n: &Notification| n.sent_at.map(|t| (t.seconds, t.nanos)).unwrap();
    assert!(listed.windows(2).all(|w| sent_at(&w[0]) >= sent_at(&w[1])));
}

#[tokio::test]
async fn an_undecodable_message_is_dropped_without_blocking_the_next_event() {
    let app = spawn_app().await;
    let (carol, _) = app.register("carol").await;

    app.publisher.publish("booking.confirmed", b"\xff\xffnot protobuf at all").await;
    let valid = confirmed_event(&carol, &["E5"]);
    app.publisher.publish_event(&valid).await;

    let listed = app.await_notifications(&carol, 1).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].event_id, valid.event_id);
}

#[tokio::test]
async fn listing_validates_the_user_and_caps_the_page() {
    let app = spawn_app().await;
    let invalid = app
        .notifications
        .clone()
        .list_notifications(ListNotificationsRequest { user_id: "nobody".into(), page_size: 0 })
        .await
        .unwrap_err();
    assert_eq!(marquee_common::ApiError::from_status(&invalid).code, marquee_common::ErrorCode::BadUserInput);

    let (dave, _) = app.register("dave").await;
    for seat in ["F1", "F2", "F3"] {
        app.publisher.publish_event(&confirmed_event(&dave, &[seat])).await;
    }
    app.await_notifications(&dave, 3).await;
    let page = app
        .notifications
        .clone()
        .list_notifications(ListNotificationsRequest { user_id: dave.clone(), page_size: 2 })
        .await
        .unwrap()
        .into_inner()
        .notifications;
    assert_eq!(page.len(), 2);
}
