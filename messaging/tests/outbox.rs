//! The MongoDB outbox against the real MongoDB-wire server: what the relay reads and
//! how its bulk mark records the broker's confirms, the log of published events read
//! back through `EventLog`, and the backlog `/metrics` shows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use marquee_kit::Config;
use marquee_kit::time::to_proto;
use marquee_messaging::outbox::{
    Backlog, EventLogApi, MAX_PAGE, MongoOutbox, OutboxEvent, OutboxGauges, OutboxStore,
};
use marquee_mongo::MongoSettings;
use marquee_proto::events::v1 as proto;
use marquee_proto::events::v1::event_log_server::EventLog;
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};
use tonic::Request;

/// The one section these tests read.
#[derive(serde::Deserialize)]
struct Settings {
    mongo: MongoSettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// A database of this test's own (dropped at the end of the test).
async fn isolated_database() -> anyhow::Result<Database> {
    let mut settings: Settings = marquee_kit::config::for_tests()?;
    settings.mongo.database_prefix = format!("mqt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    marquee_mongo::connect(&settings.mongo, "outbox").await
}

fn event(kind: &'static str) -> OutboxEvent {
    OutboxEvent { event_id: uuid::Uuid::now_v7(), kind, occurred_at: chrono::Utc::now(), data: vec![1, 2, 3] }
}

/// A document with `events` in its outbox, none of them sent.
async fn insert_with_events(
    collection: &Collection<Document>,
    id: &str,
    events: &[OutboxEvent],
) -> anyhow::Result<()> {
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    collection
        .insert_one(doc! {
            "_id": id,
            "outbox": events.iter().map(OutboxEvent::entry).collect::<Vec<_>>(),
            "pending_events": &ids,
            "unsent_events": ids.len() as i32,
        })
        .await?;
    Ok(())
}

#[tokio::test]
async fn one_bulk_mark_records_every_confirmed_event_and_a_repeat_changes_nothing() {
    let db = isolated_database().await.unwrap();
    let collection = db.collection::<Document>("bookings");
    let outbox = MongoOutbox::new(&collection).await.unwrap();
    let (held, confirmed, other) = (event("booking.held"), event("booking.confirmed"), event("booking.held"));
    insert_with_events(&collection, "b1", &[held.clone(), confirmed.clone()]).await.unwrap();
    insert_with_events(&collection, "b2", std::slice::from_ref(&other)).await.unwrap();

    let pending = outbox.pending_events(100).await.unwrap();
    let mut ids: Vec<String> = pending.iter().map(|p| p.event_id.clone()).collect();
    ids.sort();
    let mut expected: Vec<String> =
        [&held, &confirmed, &other].iter().map(|e| e.event_id.to_string()).collect();
    expected.sort();
    assert_eq!(ids, expected);

    // Only the first document's events were confirmed.
    let first: Vec<_> = pending.iter().filter(|p| p.document_id == "b1").cloned().collect();
    outbox.mark_sent(&first).await.unwrap();
    outbox.mark_sent(&first).await.unwrap();

    let b1 = collection.find_one(doc! { "_id": "b1" }).await.unwrap().unwrap();
    assert_eq!(b1.get_i32("unsent_events").unwrap(), 0, "a repeated mark must not count twice");
    assert!(b1.get_array("pending_events").unwrap().is_empty());
    for entry in b1.get_array("outbox").unwrap() {
        assert!(entry.as_document().unwrap().get_datetime("sent_at").is_ok(), "{entry:?} has no sent_at");
    }
    let left = outbox.pending_events(100).await.unwrap();
    assert_eq!(left.iter().map(|p| p.event_id.clone()).collect::<Vec<_>>(), [other.event_id.to_string()]);
    let b2 = collection.find_one(doc! { "_id": "b2" }).await.unwrap().unwrap();
    assert_eq!(b2.get_i32("unsent_events").unwrap(), 1);

    db.drop().await.unwrap();
}

/// Every page of `ListPublished` up to `before`, `limit` at a time, as event ids.
async fn read_log(api: &EventLogApi, before: chrono::DateTime<chrono::Utc>, limit: u32) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<proto::PublishedEvent> = None;
    loop {
        let request = proto::ListPublishedRequest {
            after_sent_at: after.as_ref().and_then(|event| event.sent_at),
            after_event_id: after.as_ref().map(|event| event.event_id.clone()).unwrap_or_default(),
            sent_before: Some(to_proto(before)),
            limit,
        };
        let page = api.list_published(Request::new(request)).await.unwrap().into_inner().events;
        assert!(page.len() <= limit as usize);
        ids.extend(page.iter().map(|event| event.event_id.clone()));
        match page.last() {
            Some(last) if page.len() == limit as usize => after = Some(last.clone()),
            _ => return ids,
        }
    }
}

#[tokio::test]
async fn what_was_marked_sent_is_logged_once_and_read_back_in_order_page_by_page() {
    let db = isolated_database().await.unwrap();
    let collection = db.collection::<Document>("bookings");
    let outbox = MongoOutbox::new(&collection).await.unwrap();
    let api = EventLogApi::new(outbox.log());
    let early: Vec<OutboxEvent> = (0..3).map(|_| event("booking.cancelled")).collect();
    let late: Vec<OutboxEvent> = (0..2).map(|_| event("booking.confirmed")).collect();
    // Sent with the others, but of a type no consumer reconciles: not logged.
    let unlogged = [event("booking.held"), event("payment.succeeded")];
    let b1: Vec<OutboxEvent> = early[..2].iter().chain(&unlogged[..1]).cloned().collect();
    let b3: Vec<OutboxEvent> = late.iter().chain(&unlogged[1..]).cloned().collect();
    insert_with_events(&collection, "b1", &b1).await.unwrap();
    insert_with_events(&collection, "b2", &early[2..]).await.unwrap();
    insert_with_events(&collection, "b3", &b3).await.unwrap();

    let pending = outbox.pending_events(100).await.unwrap();
    let (first, second): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.document_id != "b3");
    outbox.mark_sent(&first).await.unwrap();
    // A repeat (the relay died before it knew the first had landed) logs nothing twice.
    outbox.mark_sent(&first).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    outbox.mark_sent(&second).await.unwrap();
    let now = chrono::Utc::now() + chrono::Duration::seconds(1);

    // One batch shares a sent_at: the order within it is by event id.
    let mut early_ids: Vec<String> = early.iter().map(|e| e.event_id.to_string()).collect();
    early_ids.sort();
    let mut late_ids: Vec<String> = late.iter().map(|e| e.event_id.to_string()).collect();
    late_ids.sort();
    let all: Vec<String> = early_ids.iter().chain(&late_ids).cloned().collect();
    for limit in [1, 2, 3, 1000] {
        assert_eq!(read_log(&api, now, limit).await, all, "pages of {limit}");
    }
    assert_eq!(read_log(&api, between, 2).await, early_ids, "only what was sent before `sent_before`");
    // The unlogged events were marked sent all the same.
    assert!(outbox.pending_events(100).await.unwrap().is_empty());
    // A batch of unlogged events alone writes no log entry and still marks them sent.
    let quiet = event("booking.held");
    insert_with_events(&collection, "b4", std::slice::from_ref(&quiet)).await.unwrap();
    outbox.mark_sent(&outbox.pending_events(100).await.unwrap()).await.unwrap();
    assert!(outbox.pending_events(100).await.unwrap().is_empty());
    let later = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(read_log(&api, later, 1000).await, all);

    db.drop().await.unwrap();
}

#[tokio::test]
async fn a_malformed_log_request_is_refused_as_invalid_argument() {
    let db = isolated_database().await.unwrap();
    let outbox = MongoOutbox::new(&db.collection::<Document>("bookings")).await.unwrap();
    let api = EventLogApi::new(outbox.log());
    let valid = proto::ListPublishedRequest {
        after_sent_at: None,
        after_event_id: String::new(),
        sent_before: Some(to_proto(chrono::Utc::now())),
        limit: 10,
    };
    let cases = [
        ("no limit", proto::ListPublishedRequest { limit: 0, ..valid.clone() }),
        ("a page too large", proto::ListPublishedRequest { limit: MAX_PAGE + 1, ..valid.clone() }),
        ("no sent_before", proto::ListPublishedRequest { sent_before: None, ..valid.clone() }),
        (
            "an id without a time",
            proto::ListPublishedRequest { after_event_id: "x".to_owned(), ..valid.clone() },
        ),
    ];
    for (case, request) in cases {
        let status = api.list_published(Request::new(request)).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{case}: {status:?}");
    }
    assert!(api.list_published(Request::new(valid)).await.unwrap().into_inner().events.is_empty());
    db.drop().await.unwrap();
}

#[tokio::test]
async fn the_backlog_counts_documents_with_unsent_events_and_dates_the_oldest_unsent_one() {
    let db = isolated_database().await.unwrap();
    let collection = db.collection::<Document>("bookings");
    let outbox = MongoOutbox::new(&collection).await.unwrap();
    let registry = marquee_kit::metrics::Registry::new().unwrap();
    let gauges = OutboxGauges::new(&registry, "booking");
    let empty = Backlog { documents: 0, oldest_unsent: None };
    assert_eq!(outbox.backlog().await.unwrap(), empty);

    // Stored to the millisecond.
    let now = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis()).unwrap();
    let at = |seconds_ago: i64| OutboxEvent {
        occurred_at: now - chrono::Duration::seconds(seconds_ago),
        ..event("booking.held")
    };
    let (oldest, newer, other) = (at(120), at(10), at(30));
    insert_with_events(&collection, "b1", &[oldest.clone(), newer]).await.unwrap();
    insert_with_events(&collection, "b2", std::slice::from_ref(&other)).await.unwrap();
    assert_eq!(
        outbox.backlog().await.unwrap(),
        Backlog { documents: 2, oldest_unsent: Some(oldest.occurred_at) }
    );

    // Once the oldest is sent, the oldest unsent one is another document's.
    let pending = outbox.pending_events(100).await.unwrap();
    let sent: Vec<_> =
        pending.iter().filter(|p| p.event_id == oldest.event_id.to_string()).cloned().collect();
    outbox.mark_sent(&sent).await.unwrap();
    assert_eq!(
        outbox.backlog().await.unwrap(),
        Backlog { documents: 2, oldest_unsent: Some(other.occurred_at) }
    );
    gauges.refresh(&outbox).await.unwrap();
    let text = registry.render();
    let sample = |series: &str| marquee_kit::testing::sample(&text, series).unwrap();
    assert_eq!(sample("outbox_unsent_documents{publisher=\"booking\"}"), 2.0, "{text}");
    let age = sample("outbox_oldest_unsent_age_seconds{publisher=\"booking\"}");
    assert!((30.0..60.0).contains(&age), "{text}");

    outbox.mark_sent(&outbox.pending_events(100).await.unwrap()).await.unwrap();
    assert_eq!(outbox.backlog().await.unwrap(), empty);
    gauges.refresh(&outbox).await.unwrap();
    let text = registry.render();
    assert_eq!(
        marquee_kit::testing::sample(&text, "outbox_unsent_documents{publisher=\"booking\"}"),
        Some(0.0)
    );
    assert_eq!(
        marquee_kit::testing::sample(&text, "outbox_oldest_unsent_age_seconds{publisher=\"booking\"}"),
        Some(0.0)
    );

    db.drop().await.unwrap();
}

#[tokio::test]
async fn the_outbox_replaces_the_retired_unsent_index_and_its_query_reads_only_the_partial_one() {
    let db = isolated_database().await.unwrap();
    let collection = db.collection::<Document>("bookings");
    // A deployment of an earlier version: every document in the index, sent or not.
    let retired = mongodb::IndexModel::builder()
        .keys(doc! { "unsent_events": 1 })
        .options(mongodb::options::IndexOptions::builder().name("unsent_events".to_owned()).build())
        .build();
    collection.create_index(retired).await.unwrap();
    let unsent = event("booking.held");
    insert_with_events(&collection, "unsent", std::slice::from_ref(&unsent)).await.unwrap();
    insert_with_events(&collection, "sent", &[]).await.unwrap();

    let outbox = MongoOutbox::new(&collection).await.unwrap();
    // Opening it again (a restart, or a second replica) changes nothing.
    MongoOutbox::new(&collection).await.unwrap();
    let mut names = collection.list_index_names().await.unwrap();
    names.sort();
    assert_eq!(names, ["_id_", "with_unsent_events"]);
    let relay_query = doc! { "unsent_events": { "$gte": 1 } };
    assert_eq!(marquee_mongo::plan_indexes(&collection, relay_query).await.unwrap(), ["with_unsent_events"]);
    let pending = outbox.pending_events(100).await.unwrap();
    assert_eq!(pending.iter().map(|p| p.event_id.clone()).collect::<Vec<_>>(), [unsent.event_id.to_string()]);

    db.drop().await.unwrap();
}
