//! The MongoDB outbox against the real MongoDB-wire server: what the relay reads and
//! how its bulk mark records the broker's confirms.

use marquee_common::config::Settings;
use marquee_common::outbox::{MongoOutbox, OutboxEvent, OutboxStore};
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};

/// A database of this test's own (dropped at the end of the test).
async fn isolated_database() -> anyhow::Result<Database> {
    let mut settings = Settings::for_tests()?;
    settings.mongo.database_prefix = format!("mqt_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    marquee_common::mongo::connect(&settings.mongo, "outbox").await
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
