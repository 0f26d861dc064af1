//! The transactional outbox, shared by every service that publishes events.
//!
//! A service writes an event into the same MongoDB document update as the state
//! change that causes it (`entry` builds the array element; the document also carries
//! `pending_events`, the ids not yet confirmed, and `unsent_events`, their count, which
//! is indexed). A writer may also defer an event: it goes into `outbox` with its id in
//! `deferred_events` instead, uncounted, and the document's next write of an event
//! moves it onto `pending_events` (counted) ahead of that one, so the two are
//! published in order and marked sent by one write (booking's `booking.held`, which
//! rides with the booking's next event). `OutboxRelay` publishes pending events to the
//! RabbitMQ topic exchange with publisher confirms and marks an event sent only after
//! the broker's ack.
//! Delivery is at least once (a crash between ack and mark republishes); consumers
//! deduplicate by `event_id`. What the broker confirmed of the types consumers
//! reconcile is also logged for a week (`log.rs`), for them to reconcile against.
//! With several replicas only the one holding the outbox's lease relays (`lease.rs`).
//! What waits to be sent is exposed on `/metrics` (`gauges.rs`).

mod gauges;
mod lease;
mod log;

pub use self::gauges::OutboxGauges;
pub use self::log::{EventLogApi, LOGGED_EVENT_TYPES, MAX_PAGE, Position, PublishedEvent, PublishedLog};

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::{Collection, Database, IndexModel};
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::lease::Lease;
use crate::RabbitSettings;
use marquee_kit::backoff::Reconnect;

/// The index of the documents with unsent events.
const UNSENT_INDEX: &str = "with_unsent_events";
/// Documents read per outbox query.
const BATCH: i64 = 100;
/// Reconnect pauses while the broker or the database is down: 250 ms doubling to 30 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the published events log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Documents with unsent events read to find the oldest one (`MongoOutbox::backlog`).
const BACKLOG_SCAN: i64 = 500;

/// An encoded event, fixed (id and bytes) when the state change that causes it is
/// written.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_id: uuid::Uuid,
    /// Also the routing key, e.g. `booking.confirmed`.
    pub kind: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub data: Vec<u8>,
}

impl OutboxEvent {
    /// The element to push onto a document's `outbox` array (its id goes onto
    /// `pending_events`, and `unsent_events` is incremented, in the same update).
    /// Built where the write happens, it records the `traceparent` of the current
    /// span: the relay publishes it as a message header, so whatever consumes the
    /// event joins the trace of the request that caused it.
    pub fn entry(&self) -> Bson {
        let mut entry = doc! {
            "event_id": self.event_id.to_string(),
            "type": self.kind,
            "occurred_at": bson::DateTime::from_millis(self.occurred_at.timestamp_millis()),
            "data": bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: self.data.clone() },
            "sent_at": Bson::Null,
        };
        if let Some(traceparent) = marquee_kit::trace::current_traceparent() {
            entry.insert(marquee_kit::trace::TRACEPARENT, traceparent);
        }
        Bson::Document(entry)
    }
}

/// An outbox event not yet confirmed by the broker, with where it is stored.
#[derive(Debug, Clone)]
pub struct PendingEvent {
    pub document_id: String,
    /// Its position in the document's `outbox` array.
    pub index: usize,
    pub event_id: String,
    pub kind: String,
    pub data: Vec<u8>,
    /// The trace of the write that produced it (`OutboxEvent::entry`), if traced.
    pub traceparent: Option<String>,
}

/// Where the relay finds unsent events and records the broker's confirms.
pub trait OutboxStore: Send + Sync + 'static {
    /// Unsent events, each document's in write order.
    fn pending_events(&self, limit: i64) -> impl Future<Output = anyhow::Result<Vec<PendingEvent>>> + Send;
    /// Marks events sent (and logs them as published); repeating it is harmless.
    fn mark_sent(&self, events: &[PendingEvent]) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Forgets published events older than the log keeps; the relay calls it hourly.
    fn prune(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Takes the relay lease for `holder` for `ttl`, or renews it; false while another
    /// holder's term runs.
    fn hold_lease(&self, holder: &str, ttl: Duration) -> impl Future<Output = anyhow::Result<bool>> + Send;
    /// Ends `holder`'s term now, if it holds the lease.
    fn release_lease(&self, holder: &str) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The outbox of a MongoDB collection whose documents carry `outbox`,
/// `pending_events` and `unsent_events` as described in the module docs.
#[derive(Clone)]
pub struct MongoOutbox {
    collection: Collection<Document>,
    /// The collection's database, for the bulk `update` command.
    database: Database,
    log: PublishedLog,
    /// `outbox_leases`: which relay publishes this outbox (`lease.rs`).
    leases: Collection<Document>,
}

#[derive(Debug, Deserialize)]
struct OutboxDoc {
    #[serde(rename = "_id")]
    id: String,
    outbox: Vec<OutboxEntryDoc>,
    pending_events: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct OutboxEntryDoc {
    event_id: String,
    #[serde(rename = "type")]
    kind: String,
    data: bson::Binary,
    /// Absent on entries written before traces were recorded, or outside any trace.
    #[serde(default)]
    traceparent: Option<String>,
}

/// A document with unsent events, as the backlog reads it.
#[derive(Debug, Deserialize)]
struct UnsentDoc {
    outbox: Vec<UnsentEntryDoc>,
    pending_events: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct UnsentEntryDoc {
    event_id: String,
    occurred_at: bson::DateTime,
}

/// What waits in an outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Documents with at least one unsent event.
    pub documents: u64,
    /// When the oldest unsent event occurred, among the first `BACKLOG_SCAN` of those
    /// documents in the index's order (a longer backlog is read in part).
    pub oldest_unsent: Option<DateTime<Utc>>,
}

impl MongoOutbox {
    /// Wraps `collection` and creates the index the relay's query needs.
    pub async fn new<T: Send + Sync>(collection: &Collection<T>) -> anyhow::Result<Self> {
        let collection = collection.clone_with_type::<Document>();
        // Only documents with events to relay are in it: the relay's query (`$gte: 1`,
        // which implies the filter) reads nothing else, and the last mark of a
        // document removes its entry rather than moving it to 0.
        let options = mongodb::options::IndexOptions::builder()
            .name(UNSENT_INDEX.to_owned())
            .partial_filter_expression(doc! { "unsent_events": { "$gte": 1 } })
            .build();
        let index = IndexModel::builder().keys(doc! { "unsent_events": 1 }).options(options).build();
        collection.create_index(index).await.context("cannot create the unsent events index")?;
        marquee_mongo::drop_retired_indexes(&collection, &["unsent_events"]).await?;
        let database = collection.client().database(&collection.namespace().db);
        let log = PublishedLog::new(&database).await?;
        let leases = database.collection::<Document>("outbox_leases");
        Ok(Self { collection, database, log, leases })
    }

    /// The log of what this outbox published.
    pub fn log(&self) -> PublishedLog {
        self.log.clone()
    }

    /// What waits to be relayed: a count on the `unsent_events` index, then the
    /// unsent events' times of a bounded number of those documents.
    pub async fn backlog(&self) -> anyhow::Result<Backlog> {
        // `$gte: 1` for the reason given in `pending_events`.
        let unsent = doc! { "unsent_events": { "$gte": 1 } };
        let documents = self
            .collection
            .count_documents(unsent.clone())
            .await
            .context("cannot count the outbox backlog")?;
        if documents == 0 {
            return Ok(Backlog { documents, oldest_unsent: None });
        }
        let docs: Vec<UnsentDoc> = self
            .collection
            .clone_with_type::<UnsentDoc>()
            .find(unsent)
            .projection(doc! { "outbox.event_id": 1, "outbox.occurred_at": 1, "pending_events": 1 })
            .limit(BACKLOG_SCAN)
            .await
            .context("cannot query the outbox backlog")?
            .try_collect()
            .await
            .context("cannot read the outbox backlog")?;
        let oldest = docs
            .iter()
            .flat_map(|doc| doc.outbox.iter().filter(|entry| doc.pending_events.contains(&entry.event_id)))
            .map(|entry| entry.occurred_at.timestamp_millis())
            .min()
            .and_then(DateTime::from_timestamp_millis);
        Ok(Backlog { documents, oldest_unsent: oldest })
    }
}

impl OutboxStore for MongoOutbox {
    async fn pending_events(&self, limit: i64) -> anyhow::Result<Vec<PendingEvent>> {
        let docs: Vec<OutboxDoc> = self
            .collection
            .clone_with_type::<OutboxDoc>()
            // `$gte: 1`, not the equivalent `$gt: 0`: secantusd-rs (0.5.3-beta.196) walks
            // the whole index for an exclusive lower bound (16.6 ms against 0.7 ms for
            // 5,000 documents, two matching), and this query runs on every drain.
            .find(doc! { "unsent_events": { "$gte": 1 } })
            .projection(doc! { "outbox": 1, "pending_events": 1 })
            .limit(limit)
            .await
            .context("cannot query unsent outbox events")?
            .try_collect()
            .await
            .context("cannot read unsent outbox events")?;
        let mut pending = Vec::new();
        for doc in docs {
            for (index, entry) in doc.outbox.into_iter().enumerate() {
                if doc.pending_events.contains(&entry.event_id) {
                    pending.push(PendingEvent {
                        document_id: doc.id.clone(),
                        index,
                        event_id: entry.event_id,
                        kind: entry.kind,
                        data: entry.data.bytes,
                        traceparent: entry.traceparent,
                    });
                }
            }
        }
        Ok(pending)
    }

    async fn mark_sent(&self, events: &[PendingEvent]) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let sent_at = bson::DateTime::now();
        // Logged first: an event marked sent is always in the log (a crash in between
        // republishes it, and the log keeps its first entry).
        self.log.record(events, sent_at).await?;
        // One `update` command (what drivers send for an unordered bulk write) with a
        // statement per document: a document's events published together (a deferred
        // event with the one that brought it along) cost one write of it, not one each.
        // Matching on all their pending ids makes a repeat a no-op.
        let updates: Vec<Document> = events
            .chunk_by(|a, b| a.document_id == b.document_id)
            .map(|group| {
                let ids: Vec<&str> = group.iter().map(|event| event.event_id.as_str()).collect();
                let sent: Document = group
                    .iter()
                    .map(|event| (format!("outbox.{}.sent_at", event.index), Bson::DateTime(sent_at)))
                    .collect();
                let count = i32::try_from(group.len()).unwrap_or(i32::MAX);
                doc! {
                    "q": { "_id": &group[0].document_id, "pending_events": { "$all": &ids } },
                    "u": {
                        "$pull": { "pending_events": { "$in": &ids } },
                        "$inc": { "unsent_events": -count },
                        "$set": sent,
                    },
                }
            })
            .collect();
        let reply = self
            .database
            .run_command(doc! { "update": self.collection.name(), "updates": updates, "ordered": false })
            .await
            .with_context(|| format!("cannot mark {} outbox events sent", events.len()))?;
        // A command-level success may still carry per-statement failures.
        match reply.get_array("writeErrors") {
            Ok(errors) if !errors.is_empty() => {
                anyhow::bail!("cannot mark outbox events sent: {errors:?}")
            }
            _ => Ok(()),
        }
    }

    async fn prune(&self) -> anyhow::Result<()> {
        let pruned = self.log.prune(Utc::now()).await?;
        if pruned > 0 {
            tracing::info!(pruned, "pruned the published events log");
        }
        Ok(())
    }

    async fn hold_lease(&self, holder: &str, ttl: Duration) -> anyhow::Result<bool> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(ttl).context("lease term out of range")?;
        let now = bson::DateTime::from_millis(now.timestamp_millis());
        let until = bson::DateTime::from_millis(until.timestamp_millis());
        // Ours to renew, or lapsed, or missing (the upsert creates it). When another
        // holder's term runs, the filter misses and the upsert collides on `_id`.
        let taken = self
            .leases
            .update_one(
                doc! {
                    "_id": self.collection.name(),
                    "$or": [ { "holder": holder }, { "until": { "$lt": now } } ],
                },
                doc! { "$set": { "holder": holder, "until": until } },
            )
            .upsert(true)
            .await;
        match taken {
            Ok(_) => Ok(true),
            Err(error) if marquee_mongo::is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(error).context("cannot take or renew the outbox relay lease"),
        }
    }

    async fn release_lease(&self, holder: &str) -> anyhow::Result<()> {
        self.leases
            .update_one(
                doc! { "_id": self.collection.name(), "holder": holder },
                doc! { "$set": { "until": bson::DateTime::from_millis(0) } },
            )
            .await
            .context("cannot release the outbox relay lease")?;
        Ok(())
    }
}

/// Publishes a store's pending events until shutdown.
pub struct OutboxRelay<S> {
    store: S,
    settings: RabbitSettings,
    exchange: ShortString,
    poll: Duration,
    lease_ttl: Duration,
    written: Arc<Notify>,
}

impl<S: OutboxStore> OutboxRelay<S> {
    /// `written` is notified by every write that adds an event, so the relay
    /// publishes at once; `poll` is the fallback, and how soon the lease holder sees
    /// events another replica wrote. `lease_ttl`: the term of the relay lease
    /// (`lease.rs`), how long a dead holder's events wait for another replica.
    pub fn new(
        store: S,
        settings: &RabbitSettings,
        poll: Duration,
        lease_ttl: Duration,
        written: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let exchange = crate::rabbit::short_name(&settings.exchange, "rabbitmq.exchange")?;
        anyhow::ensure!(!lease_ttl.is_zero(), "the outbox relay lease needs a term");
        Ok(Self { store, settings: settings.clone(), exchange, poll, lease_ttl, written })
    }

    /// Relays until `shutdown`, reconnecting with backoff whenever the broker or the
    /// database fails. Stopping mid-batch is safe: unconfirmed events stay unsent.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut reconnect = Reconnect::new("outbox relay", FIRST_BACKOFF, MAX_BACKOFF);
        let mut lease = Lease::new(self.lease_ttl);
        loop {
            let failure = tokio::select! {
                () = shutdown.cancelled() => break,
                failure = self.connect_and_relay(&mut reconnect, &mut lease) => failure,
            };
            if !reconnect.wait(&failure, &shutdown).await {
                break;
            }
        }
        lease.release(&self.store).await;
    }

    /// Runs until something fails; the error says what. A connection that opens
    /// starts the backoff over.
    async fn connect_and_relay(&self, reconnect: &mut Reconnect, lease: &mut Lease) -> anyhow::Error {
        // The connection is held here so it lives exactly as long as this session.
        let (_connection, channel) = match self.open_channel().await {
            Ok(session) => session,
            Err(error) => return error,
        };
        reconnect.connected();
        tracing::info!(exchange = %self.exchange, "outbox relay connected to RabbitMQ");
        let mut prune_at = tokio::time::Instant::now();
        loop {
            // Only a relay connected to the broker takes the lease, and one whose
            // session broke stops renewing it: a replica that can publish takes over.
            let holding = match lease.holds(&self.store).await {
                Ok(holding) => holding,
                Err(error) => return error,
            };
            if holding {
                if let Err(error) = self.drain(&channel, lease).await {
                    return error;
                }
                if tokio::time::Instant::now() >= prune_at {
                    prune_at += PRUNE_EVERY;
                    // Housekeeping: a failure waits for the next round.
                    if let Err(error) = self.store.prune().await {
                        tracing::warn!(error = format!("{error:#}"), "cannot prune the published events log");
                    }
                }
            }
            let pause = if holding { self.poll } else { self.poll.min(lease.pause()) };
            // notify_one stores a permit, so a write during the drain is not missed.
            tokio::select! {
                () = self.written.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn open_channel(&self) -> anyhow::Result<(Connection, Channel)> {
        let (connection, channel) = crate::rabbit::connect(&self.settings).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("cannot enable publisher confirms")?;
        Ok((connection, channel))
    }

    /// Publishes every unsent event, a batch at a time, until none is left or the
    /// lease is lost. The lease is renewed between batches: in a rush the outbox may
    /// never be empty, and a drain that renewed only when it ends would let the term
    /// lapse while it publishes (a run here had two replicas publishing for ~9 s).
    async fn drain(&self, channel: &Channel, lease: &mut Lease) -> anyhow::Result<()> {
        loop {
            if !lease.holds(&self.store).await? {
                return Ok(());
            }
            let batch = self.store.pending_events(BATCH).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let mut confirms = Vec::with_capacity(batch.len());
            for event in &batch {
                confirms.push(self.publish(channel, event).await?);
            }
            for (acked, (event, confirm)) in batch.iter().zip(confirms).enumerate() {
                let failure = match confirm.await {
                    Ok(Confirmation::Ack(_)) => continue,
                    Ok(Confirmation::Nack(_)) => anyhow::anyhow!("broker refused event {}", event.event_id),
                    Ok(Confirmation::NotRequested) => anyhow::anyhow!("publisher confirms are not enabled"),
                    Err(error) => {
                        anyhow::Error::new(error).context(format!("no confirm for event {}", event.event_id))
                    }
                };
                // The events before it were acked: record them so they are not sent again.
                self.store.mark_sent(&batch[..acked]).await?;
                return Err(failure);
            }
            self.store.mark_sent(&batch).await?;
        }
    }

    async fn publish(
        &self,
        channel: &Channel,
        event: &PendingEvent,
    ) -> anyhow::Result<lapin::PublisherConfirm> {
        let routing_key = ShortString::try_new(event.kind.clone())
            .map_err(|e| anyhow::anyhow!("event type {:?} is not a valid routing key: {e}", event.kind))?;
        let message_id = ShortString::try_new(event.event_id.clone())
            .map_err(|e| anyhow::anyhow!("event id {:?} is not a valid message id: {e}", event.event_id))?;
        let properties = BasicProperties::default()
            .with_delivery_mode(crate::rabbit::PERSISTENT)
            .with_message_id(message_id)
            .with_content_type("application/x-protobuf".into())
            .with_type(routing_key.clone());
        let properties = crate::rabbit::with_traceparent(properties, event.traceparent.as_deref());
        channel
            .basic_publish(
                self.exchange.clone(),
                routing_key,
                BasicPublishOptions::default(),
                &event.data,
                properties,
            )
            .await
            .with_context(|| format!("cannot publish event {}", event.event_id))
    }
}
