//! The `bookings` collection: one document per booking carrying its state, its saga
//! history and its outbox, so a state change and the events it causes are written
//! by one atomic single-document update. (A user's active holds per showtime are capped
//! by cinema, under the hold's own locks; earlier versions kept `hold_slots` here.)
//!
//! This module opens the collection and its indexes; `bookings` inserts and reads
//! bookings, `transition` writes their state changes, `stats` counts what `/metrics` shows and `document` is how a booking is stored.

mod batched;
mod bookings;
mod document;
mod stats;
mod transition;
mod upgrade;

use std::time::Duration;

use anyhow::Context;
use marquee_messaging::outbox::MongoOutbox;
use mongodb::bson::{Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};

use self::batched::Batches;
pub use self::bookings::InsertError;
use self::document::BookingDoc;
pub use self::transition::{Revision, SagaEntry, Transition};

/// The sweeper's index: every booking with a `sweep_at`.
const SWEEP_INDEX: &str = "sweep_due";

#[derive(Clone)]
pub struct BookingStore {
    bookings: Collection<BookingDoc>,
    /// How far ahead a step in flight is leased, by the write that starts it and by
    /// each renewal while it runs; recovery takes over a booking whose lease lapsed.
    lease: chrono::Duration,
    /// Concurrent calls' lookups and inserts, one command per batch.
    batches: Batches,
}

impl BookingStore {
    /// Opens the collections and creates the indexes every query here relies on.
    pub async fn new(db: &Database, lease: Duration) -> anyhow::Result<Self> {
        let bookings = db.collection::<BookingDoc>("bookings");
        let index = |keys: Document, name: &str, mut options: IndexOptions| {
            options.name = Some(name.to_owned());
            IndexModel::builder().keys(keys).options(options).build()
        };
        // The sweeper reads one sparse index: only the bookings it may have to act on
        // have a `sweep_at`. (secantusd-rs weighs and diffs every index on every write
        // of a booking, touched or not, so each index costs every saga step.)
        let indexes = vec![
            index(
                doc! { "user_id": 1, "idempotency_key": 1 },
                "user_idempotency_key",
                IndexOptions::builder().unique(true).build(),
            ),
            // Listing pages newest first: ids are time-ordered (UUIDv7).
            index(doc! { "user_id": 1, "_id": -1 }, "user_newest_id_first", IndexOptions::default()),
            index(doc! { "sweep_at": 1 }, SWEEP_INDEX, IndexOptions::builder().sparse(true).build()),
        ];
        bookings.create_indexes(indexes).await.context("cannot create booking indexes")?;
        upgrade::backfill_sweep_at(&bookings).await?;
        marquee_mongo::drop_retired_indexes(&bookings, &upgrade::RETIRED_INDEXES).await?;
        let lease = chrono::Duration::from_std(lease).context("booking.saga_lease_ms is out of range")?;
        let batches = Batches::spawn(&bookings);
        Ok(Self { bookings, lease, batches })
    }

    /// The outbox the relay drains: events live in the booking documents.
    pub async fn outbox(&self) -> anyhow::Result<MongoOutbox> {
        MongoOutbox::new(&self.bookings).await
    }
}
