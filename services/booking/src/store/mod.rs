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
use crate::domain::BookingStatus;

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
        // The sweeper's indexes hold only the bookings it may have to act on, so a
        // booking's state changes add or remove one entry instead of moving entries
        // from one status to the next.
        let indexes = vec![
            index(
                doc! { "user_id": 1, "idempotency_key": 1 },
                "user_idempotency_key",
                IndexOptions::builder().unique(true).build(),
            ),
            // Listing pages newest first: ids are time-ordered (UUIDv7).
            index(doc! { "user_id": 1, "_id": -1 }, "user_newest_id_first", IndexOptions::default()),
            // `lease_until` is there only while a step is in flight.
            index(doc! { "lease_until": 1 }, "leased_steps", IndexOptions::builder().sparse(true).build()),
            index(
                doc! { "expires_at": 1 },
                "held_by_expiry",
                IndexOptions::builder()
                    .partial_filter_expression(doc! { "status": BookingStatus::Held.as_str() })
                    .build(),
            ),
            index(
                doc! { "release_pending": 1 },
                "seats_to_release",
                IndexOptions::builder().partial_filter_expression(doc! { "release_pending": true }).build(),
            ),
        ];
        bookings.create_indexes(indexes).await.context("cannot create booking indexes")?;
        marquee_mongo::drop_retired_indexes(
            &bookings,
            &["stalled_sagas", "overdue_holds", "pending_releases"],
        )
        .await?;
        let lease = chrono::Duration::from_std(lease).context("booking.saga_lease_ms is out of range")?;
        let batches = Batches::spawn(&bookings);
        Ok(Self { bookings, lease, batches })
    }

    /// The outbox the relay drains: events live in the booking documents.
    pub async fn outbox(&self) -> anyhow::Result<MongoOutbox> {
        MongoOutbox::new(&self.bookings).await
    }
}
