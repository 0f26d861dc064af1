//! The log of published events: every event of the `LOGGED_EVENT_TYPES` whose
//! publication the broker confirmed, kept for a week in the service's
//! `published_events` collection and served over gRPC (`marquee.events.v1.EventLog`).
//!
//! A broker confirm means the broker took the message, not that every consumer will
//! get it: a queue deleted or lost in between, or a broker bug, drops it silently.
//! The log lets a consumer that must not miss an event (the notification service)
//! compare what it handled with what was published, and handle the difference. Events
//! of other types are published all the same but not logged: no consumer reconciles
//! them, and in a booking they are two of the three events (`booking.held`,
//! `payment.succeeded`), each a document written and read back for nothing.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use marquee_proto::events::v1 as proto;
use marquee_proto::events::v1::event_log_server::EventLog;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::{Collection, Database, IndexModel};
use serde::Deserialize;
use tonic::{Request, Response, Status};

use super::PendingEvent;
use marquee_kit::ApiError;
use marquee_kit::time::{from_proto, to_proto};

const COLLECTION: &str = "published_events";
/// How long an event stays in the log.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The event types the log keeps: those a consumer reconciles against it. The
/// notification worker notifies about exactly these, and is bound to them alone.
pub const LOGGED_EVENT_TYPES: [&str; 5] = [
    "booking.confirmed",
    "booking.cancelled",
    "booking.expired",
    "booking.payment_failed",
    "payment.refunded",
];
/// The largest page `ListPublished` returns.
pub const MAX_PAGE: u32 = 1000;
const DUPLICATE_KEY: i32 = 11000;

/// One logged event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedEvent {
    pub event_id: String,
    pub kind: String,
    pub sent_at: DateTime<Utc>,
    pub data: Vec<u8>,
}

#[derive(Debug, Deserialize)]
struct PublishedDoc {
    #[serde(rename = "_id")]
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    sent_at: bson::DateTime,
    data: bson::Binary,
}

/// Where a page starts: after this event in (sent_at, event id) order. An empty id
/// means "from this time on".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub sent_at: DateTime<Utc>,
    pub event_id: String,
}

#[derive(Clone)]
pub struct PublishedLog {
    collection: Collection<Document>,
}

impl PublishedLog {
    /// The log of `database`, with the index its pages are read by.
    pub async fn new(database: &Database) -> anyhow::Result<Self> {
        let collection = database.collection::<Document>(COLLECTION);
        let index = IndexModel::builder()
            .keys(doc! { "sent_at": 1, "_id": 1 })
            .options(mongodb::options::IndexOptions::builder().name("sent_at".to_owned()).build())
            .build();
        collection.create_index(index).await.context("cannot create the published_events index")?;
        Ok(Self { collection })
    }

    /// Logs those of `events` whose type is logged as confirmed at `sent_at`, in one
    /// round trip (none when there are none). An event already logged (the relay
    /// republished it after a crash) keeps its first entry.
    pub(super) async fn record(
        &self,
        events: &[PendingEvent],
        sent_at: bson::DateTime,
    ) -> anyhow::Result<()> {
        let documents: Vec<Document> = events
            .iter()
            .filter(|event| LOGGED_EVENT_TYPES.contains(&event.kind.as_str()))
            .map(|event| {
                doc! {
                    "_id": &event.event_id,
                    "type": &event.kind,
                    "sent_at": sent_at,
                    "data": bson::Binary {
                        subtype: bson::spec::BinarySubtype::Generic,
                        bytes: event.data.clone(),
                    },
                }
            })
            .collect();
        if documents.is_empty() {
            return Ok(());
        }
        let database = self.collection.client().database(&self.collection.namespace().db);
        let reply = database
            .run_command(doc! { "insert": self.collection.name(), "documents": documents, "ordered": false })
            .await
            .with_context(|| format!("cannot log {} published events", events.len()))?;
        let errors = reply.get_array("writeErrors").map(Vec::as_slice).unwrap_or_default();
        let other = errors.iter().find(
            |error| !matches!(error, Bson::Document(error) if error.get_i32("code") == Ok(DUPLICATE_KEY)),
        );
        match other {
            Some(error) => anyhow::bail!("cannot log published events: {error:?}"),
            None => Ok(()),
        }
    }

    /// Up to `limit` events after `after` (from the oldest kept when `None`) and
    /// confirmed before `before`, oldest first.
    pub async fn page(
        &self,
        after: Option<&Position>,
        before: DateTime<Utc>,
        limit: u32,
    ) -> anyhow::Result<Vec<PublishedEvent>> {
        let before = bson_time(before);
        let filter = match after {
            None => doc! { "sent_at": { "$lt": before } },
            Some(after) => {
                let at = bson_time(after.sent_at);
                doc! {
                    "sent_at": { "$lt": before },
                    "$or": [
                        { "sent_at": { "$gt": at } },
                        { "sent_at": at, "_id": { "$gt": &after.event_id } },
                    ],
                }
            }
        };
        let docs: Vec<PublishedDoc> = self
            .collection
            .clone_with_type::<PublishedDoc>()
            .find(filter)
            .sort(doc! { "sent_at": 1, "_id": 1 })
            .limit(i64::from(limit))
            .await
            .context("cannot query the published events")?
            .try_collect()
            .await
            .context("cannot read the published events")?;
        Ok(docs
            .into_iter()
            .map(|doc| PublishedEvent {
                event_id: doc.event_id,
                kind: doc.kind,
                sent_at: DateTime::from_timestamp_millis(doc.sent_at.timestamp_millis()).unwrap_or_default(),
                data: doc.data.bytes,
            })
            .collect())
    }

    /// Forgets events older than `RETENTION`.
    pub(super) async fn prune(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let cutoff = now - chrono::Duration::from_std(RETENTION).context("retention out of range")?;
        let deleted = self
            .collection
            .delete_many(doc! { "sent_at": { "$lt": bson_time(cutoff) } })
            .await
            .context("cannot prune the published events")?;
        Ok(deleted.deleted_count)
    }
}

fn bson_time(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

/// `marquee.events.v1.EventLog` over a service's log.
pub struct EventLogApi {
    log: PublishedLog,
}

impl EventLogApi {
    pub fn new(log: PublishedLog) -> Self {
        Self { log }
    }
}

#[tonic::async_trait]
impl EventLog for EventLogApi {
    #[tracing::instrument(skip_all)]
    async fn list_published(
        &self,
        request: Request<proto::ListPublishedRequest>,
    ) -> Result<Response<proto::ListPublishedResponse>, Status> {
        let request = request.into_inner();
        if !(1..=MAX_PAGE).contains(&request.limit) {
            return Err(ApiError::bad_input(format!("limit must be 1 to {MAX_PAGE}")).into());
        }
        let before = request
            .sent_before
            .as_ref()
            .and_then(from_proto)
            .ok_or_else(|| ApiError::bad_input("sent_before must be a valid time"))?;
        let after = match &request.after_sent_at {
            Some(at) => Some(Position {
                sent_at: from_proto(at)
                    .ok_or_else(|| ApiError::bad_input("after_sent_at is out of range"))?,
                event_id: request.after_event_id,
            }),
            None if request.after_event_id.is_empty() => None,
            None => return Err(ApiError::bad_input("after_event_id needs after_sent_at").into()),
        };
        let events = self
            .log
            .page(after.as_ref(), before, request.limit)
            .await
            .map_err(|error| marquee_mongo::internal(&error))?;
        let events = events
            .into_iter()
            .map(|event| proto::PublishedEvent {
                event_id: event.event_id,
                r#type: event.kind,
                sent_at: Some(to_proto(event.sent_at)),
                data: event.data,
            })
            .collect();
        Ok(Response::new(proto::ListPublishedResponse { events }))
    }
}
