//! The `bookings` collection: one document per booking carrying its state, its saga
//! history and its outbox, so a state change and the events it causes are written
//! by one atomic single-document update. Beside it, `hold_slots` caps a user's active
//! holds per showtime: slot documents with unique ids, so the cap holds under races.
//!
//! This module opens the collections and their indexes; `bookings` inserts and reads
//! bookings, `transition` writes their state changes, `slots` keeps the hold slots,
//! `stats` counts what `/metrics` shows and `document` is how a booking is stored.

mod batched;
mod bookings;
mod document;
mod slots;
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
pub use self::slots::SlotClaim;
pub use self::transition::{Revision, SagaEntry, Transition};

#[derive(Clone)]
pub struct BookingStore {
    bookings: Collection<BookingDoc>,
    slots: Collection<Document>,
    /// How far ahead a step in flight is leased, by the write that starts it and by
    /// each renewal while it runs; recovery takes over a booking whose lease lapsed.
    lease: chrono::Duration,
    /// How long after its claim a hold slot with no booking written counts as the
    /// record of a hold that died, whose seats recovery releases.
    slot_grace: chrono::Duration,
    /// Concurrent calls' lookups, inserts and slot commands, one command per batch.
    batches: Batches,
}

impl BookingStore {
    /// Opens the collections and creates the indexes every query here relies on.
    pub async fn new(db: &Database, lease: Duration, slot_grace: Duration) -> anyhow::Result<Self> {
        let bookings = db.collection::<BookingDoc>("bookings");
        let index = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).unique(unique).build())
                .build()
        };
        let indexes = vec![
            index(doc! { "user_id": 1, "idempotency_key": 1 }, "user_idempotency_key", true),
            // Listing pages newest first: ids are time-ordered (UUIDv7).
            index(doc! { "user_id": 1, "_id": -1 }, "user_newest_id_first", false),
            index(doc! { "status": 1, "lease_until": 1 }, "stalled_sagas", false),
            index(doc! { "status": 1, "expires_at": 1 }, "overdue_holds", false),
            index(doc! { "release_pending": 1 }, "pending_releases", false),
        ];
        bookings.create_indexes(indexes).await.context("cannot create booking indexes")?;
        let lease = chrono::Duration::from_std(lease).context("booking.saga_lease_ms is out of range")?;
        let slot_grace =
            chrono::Duration::from_std(slot_grace).context("booking.hold_slot_grace_ms is out of range")?;
        let slots = db.collection(batched::SLOTS);
        let batches = Batches::spawn(db, &bookings, &slots);
        Ok(Self { bookings, slots, lease, slot_grace, batches })
    }

    /// The outbox the relay drains: events live in the booking documents.
    pub async fn outbox(&self) -> anyhow::Result<MongoOutbox> {
        MongoOutbox::new(&self.bookings).await
    }
}
