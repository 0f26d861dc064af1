//! Several outbox relays over one collection (one per booking or payment replica),
//! against the real MongoDB-wire server and RabbitMQ: one publishes at a time, each
//! event reaches the exchange once, and when the one publishing dies or stops another
//! takes over.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use marquee_kit::Config;
use marquee_messaging::RabbitSettings;
use marquee_messaging::outbox::{MongoOutbox, OutboxEvent, OutboxRelay, OutboxStore, PendingEvent};
use marquee_mongo::MongoSettings;
use mongodb::Collection;
use mongodb::bson::{Document, doc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(serde::Deserialize)]
struct Settings {
    mongo: MongoSettings,
    rabbitmq: RabbitSettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// This test's own database and exchange.
fn isolated_settings() -> Settings {
    let mut settings: Settings = marquee_kit::config::for_tests().unwrap();
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..12];
    settings.mongo.database_prefix = format!("mqt_{tag}");
    settings.rabbitmq.exchange = format!("marquee.events.test.{tag}");
    settings
}

const LEASE: Duration = Duration::from_millis(600);
const POLL: Duration = Duration::from_millis(50);

/// A relay running as it does in a service, with the handles to stop it gracefully
/// or kill it (no lease release: as a SIGKILL leaves it).
struct Relay {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(settings: &Settings, collection: &Collection<Document>) -> Self {
        Self::over(MongoOutbox::new(collection).await.unwrap(), settings)
    }

    fn over<S: OutboxStore>(store: S, settings: &Settings) -> Self {
        let relay =
            OutboxRelay::new(store, &settings.rabbitmq, POLL, LEASE, Arc::new(Notify::new())).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(relay.run(stop.clone()));
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }

    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Inserts `documents` documents of two unsent events each; returns the event ids.
async fn write_events(collection: &Collection<Document>, documents: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..documents {
        let events: Vec<OutboxEvent> = ["booking.held", "booking.confirmed"]
            .into_iter()
            .map(|kind| OutboxEvent {
                event_id: uuid::Uuid::now_v7(),
                kind,
                occurred_at: chrono::Utc::now(),
                data: vec![7],
            })
            .collect();
        let pending: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
        collection
            .insert_one(doc! {
                "_id": uuid::Uuid::new_v4().to_string(),
                "outbox": events.iter().map(OutboxEvent::entry).collect::<Vec<_>>(),
                "pending_events": &pending,
                "unsent_events": 2,
            })
            .await
            .unwrap();
        ids.extend(pending);
    }
    ids
}

/// Every message of the test's exchange, counted by message id.
struct Received {
    _connection: lapin::Connection,
    consumer: lapin::Consumer,
    counts: HashMap<String, usize>,
}

impl Received {
    async fn subscribe(rabbit: &RabbitSettings) -> Self {
        let (connection, channel) =
            marquee_messaging::rabbit::connect_patiently("test subscriber", rabbit).await.unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.name().clone(),
                rabbit.exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self { _connection: connection, consumer, counts: HashMap::new() }
    }

    /// Receives until every one of `ids` has arrived, then for `settle` more (a copy
    /// would arrive in that time); panics after `limit`.
    async fn until_all(&mut self, ids: &[String], settle: Duration, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !ids.iter().all(|id| self.counts.contains_key(id)) {
            let next = tokio::time::timeout_at(deadline, self.consumer.next()).await;
            let delivery = next.expect("events missing at the deadline").unwrap().unwrap();
            self.count(&delivery);
        }
        while let Ok(Some(delivery)) = tokio::time::timeout(settle, self.consumer.next()).await {
            self.count(&delivery.unwrap());
        }
    }

    fn count(&mut self, delivery: &lapin::message::Delivery) {
        let id = delivery.properties.message_id().as_ref().map(ToString::to_string).unwrap_or_default();
        *self.counts.entry(id).or_default() += 1;
        let acker = delivery.acker.clone();
        tokio::spawn(async move { acker.ack(BasicAckOptions::default()).await });
    }

    fn duplicates(&self) -> Vec<(&String, &usize)> {
        self.counts.iter().filter(|(_, n)| **n > 1).collect()
    }
}

#[tokio::test]
async fn the_lease_has_one_holder_until_it_lapses_or_is_released() {
    let settings = isolated_settings();
    let db = marquee_mongo::connect(&settings.mongo, "outbox").await.unwrap();
    let collection = db.collection::<Document>("bookings");
    let (a, b) = (MongoOutbox::new(&collection).await.unwrap(), MongoOutbox::new(&collection).await.unwrap());
    let term = Duration::from_millis(400);

    assert!(a.hold_lease("a", term).await.unwrap(), "a free lease is taken");
    assert!(!b.hold_lease("b", term).await.unwrap(), "a held lease is not");
    assert!(a.hold_lease("a", term).await.unwrap(), "the holder renews");
    tokio::time::sleep(term + Duration::from_millis(100)).await;
    assert!(b.hold_lease("b", term).await.unwrap(), "a lapsed lease is taken");
    assert!(!a.hold_lease("a", term).await.unwrap(), "the old holder lost it");
    b.release_lease("b").await.unwrap();
    assert!(a.hold_lease("a", term).await.unwrap(), "a released lease is free at once");
    // Another collection's outbox has a lease of its own.
    let payments = MongoOutbox::new(&db.collection::<Document>("payments")).await.unwrap();
    assert!(payments.hold_lease("b", term).await.unwrap());
    db.drop().await.unwrap();
}

#[tokio::test]
async fn replicas_publish_each_event_once_and_a_survivor_takes_over() {
    let settings = isolated_settings();
    let db = marquee_mongo::connect(&settings.mongo, "outbox").await.unwrap();
    let collection = db.collection::<Document>("bookings");
    let mut received = Received::subscribe(&settings.rabbitmq).await;

    // Two replicas start over an outbox full of unsent events: without the lease both
    // would read the same batch and publish every event twice.
    let burst = write_events(&collection, 100).await;
    let (a, b) = tokio::join!(Relay::start(&settings, &collection), Relay::start(&settings, &collection));
    received.until_all(&burst, Duration::from_millis(500), Duration::from_secs(20)).await;
    assert_eq!(received.duplicates(), Vec::<(&String, &usize)>::new());

    // Each dies in turn, the lease unreleased (one of them held it): the events written
    // meanwhile are published once the term lapses, by b and then by c.
    a.kill().await;
    let after_a = write_events(&collection, 20).await;
    received.until_all(&after_a, Duration::from_millis(500), Duration::from_secs(10)).await;
    b.kill().await;
    let c = Relay::start(&settings, &collection).await;
    let after_b = write_events(&collection, 20).await;
    received.until_all(&after_b, Duration::from_millis(500), Duration::from_secs(10)).await;

    // c, alone and so holding the lease, stops gracefully and gives it up: d takes over
    // without waiting for the term to lapse.
    let d = Relay::start(&settings, &collection).await;
    c.stop().await;
    let handed_over = write_events(&collection, 20).await;
    let started = tokio::time::Instant::now();
    received.until_all(&handed_over, Duration::ZERO, Duration::from_secs(10)).await;
    assert!(started.elapsed() < LEASE, "took {:?} after a release", started.elapsed());
    received.until_all(&handed_over, Duration::from_millis(500), Duration::from_secs(1)).await;

    assert_eq!(received.duplicates(), Vec::<(&String, &usize)>::new());
    assert_eq!(received.counts.len(), burst.len() + after_a.len() + after_b.len() + handed_over.len());
    let unsent = collection.count_documents(doc! { "unsent_events": { "$gte": 1 } }).await.unwrap();
    assert_eq!(unsent, 0);
    d.stop().await;
    db.drop().await.unwrap();
}

/// The real outbox with every read of pending events slowed down, so that a drain
/// lasts as long as writes keep coming, as in a rush.
struct SlowReads(MongoOutbox);

/// Longer than the writer's pause: every read finds new events, the drain never ends.
const SLOW_READ: Duration = Duration::from_millis(150);

impl OutboxStore for SlowReads {
    async fn pending_events(&self, limit: i64) -> anyhow::Result<Vec<PendingEvent>> {
        tokio::time::sleep(SLOW_READ).await;
        self.0.pending_events(limit).await
    }

    async fn mark_sent(&self, events: &[PendingEvent]) -> anyhow::Result<()> {
        self.0.mark_sent(events).await
    }

    async fn prune(&self) -> anyhow::Result<()> {
        self.0.prune().await
    }

    async fn hold_lease(&self, holder: &str, ttl: Duration) -> anyhow::Result<bool> {
        self.0.hold_lease(holder, ttl).await
    }

    async fn release_lease(&self, holder: &str) -> anyhow::Result<()> {
        self.0.release_lease(holder).await
    }
}

#[tokio::test]
async fn a_holder_whose_drain_never_ends_keeps_renewing_and_publishes_alone() {
    let settings = isolated_settings();
    let db = marquee_mongo::connect(&settings.mongo, "outbox").await.unwrap();
    let collection = db.collection::<Document>("bookings");
    let mut received = Received::subscribe(&settings.rabbitmq).await;
    let a = Relay::over(SlowReads(MongoOutbox::new(&collection).await.unwrap()), &settings);
    let first = write_events(&collection, 1).await;
    received.until_all(&first, Duration::ZERO, Duration::from_secs(10)).await;
    let b = Relay::start(&settings, &collection).await;

    // A write every 30 ms for five lease terms: each of a's reads finds new events, so
    // its drain lasts the whole time. A holder that renewed only between drains would
    // let its term lapse, and b would take the lease and publish the same events.
    let mut written = Vec::new();
    let until = tokio::time::Instant::now() + LEASE * 5;
    while tokio::time::Instant::now() < until {
        written.extend(write_events(&collection, 1).await);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    received.until_all(&written, Duration::from_millis(500), Duration::from_secs(20)).await;
    assert_eq!(received.duplicates(), Vec::<(&String, &usize)>::new(), "of {} events", written.len());
    a.stop().await;
    b.stop().await;
    db.drop().await.unwrap();
}

#[tokio::test]
async fn an_event_is_published_with_the_trace_of_the_write_that_caused_it() {
    let settings = isolated_settings();
    let db = marquee_mongo::connect(&settings.mongo, "outbox").await.unwrap();
    let collection = db.collection::<Document>("bookings");
    let mut received = Received::subscribe(&settings.rabbitmq).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (traced, untraced) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    let entry = |id: &str| doc! { "event_id": id, "type": "booking.held", "data": mongodb::bson::Binary { subtype: mongodb::bson::spec::BinarySubtype::Generic, bytes: vec![7] }, "sent_at": null };
    let mut with_trace = entry(&traced);
    with_trace.insert("traceparent", traceparent);
    collection
        .insert_one(doc! {
            "_id": uuid::Uuid::new_v4().to_string(),
            "outbox": [with_trace, entry(&untraced)],
            "pending_events": [&traced, &untraced],
            "unsent_events": 2,
        })
        .await
        .unwrap();
    let relay = Relay::start(&settings, &collection).await;

    let mut headers = HashMap::new();
    while headers.len() < 2 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), received.consumer.next())
            .await
            .expect("both events published")
            .unwrap()
            .unwrap();
        let id = delivery.properties.message_id().as_ref().map(ToString::to_string).unwrap();
        let context = marquee_messaging::rabbit::trace_parent(delivery.properties.headers().as_ref());
        headers.insert(id, context);
    }
    use opentelemetry::trace::TraceContextExt as _;
    let parent = headers[&traced].span().span_context().clone();
    assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(parent.span_id().to_string(), "00f067aa0ba902b7");
    assert!(!headers[&untraced].span().span_context().is_valid(), "no trace, no header");
    relay.stop().await;
    db.drop().await.unwrap();
}
