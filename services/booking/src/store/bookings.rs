//! Inserting and reading bookings: by id, by idempotency key, a user's pages, and the
//! queries the sweeper runs (overdue holds, stalled sagas, pending seat releases).

use std::collections::HashSet;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use marquee_mongo::Inserted;
use mongodb::bson::{self, Document, doc};

use super::document::{BookingDoc, bson_time};
use super::{BookingStore, SagaEntry};
use crate::domain::{Booking, BookingId, BookingStatus, IdempotencyKey, ListQuery, ShowtimeId, UserId};
use crate::events::OutboxEvent;

/// Why an insert failed: a duplicate idempotency key is an answer, not a fault.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("a booking with this idempotency key already exists")]
    DuplicateKey,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl BookingStore {
    /// Inserts a new booking with its first saga entry and its event, deferred: the
    /// event waits in the outbox for the booking's next one (`Booking::deferred_events`),
    /// so nothing is pending for the relay yet.
    pub async fn insert(
        &self,
        booking: &Booking,
        entry: SagaEntry,
        event: &OutboxEvent,
    ) -> Result<(), InsertError> {
        let mut document = bson::to_document(&BookingDoc::from_booking(booking))
            .context("cannot encode booking document")?;
        document.insert("saga", vec![entry.to_bson()]);
        document.insert("outbox", vec![event.entry()]);
        document.insert("deferred_events", vec![event.event_id.to_string()]);
        document.insert("pending_events", Vec::<String>::new());
        document.insert("unsent_events", 0_i32);
        match self.batches.inserts.call(document).await.context("cannot insert booking")? {
            Inserted::New => Ok(()),
            Inserted::Duplicate => Err(InsertError::DuplicateKey),
        }
    }

    pub async fn find(&self, id: BookingId) -> anyhow::Result<Option<Booking>> {
        let found = self.batches.by_id.call(id.to_string()).await.context("cannot load booking")?;
        found.map(BookingDoc::into_booking).transpose()
    }

    pub async fn find_by_key(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
    ) -> anyhow::Result<Option<Booking>> {
        let found = self.batches.by_key.call((user_id.to_string(), key.as_str().to_owned())).await?;
        found.map(BookingDoc::into_booking).transpose()
    }

    /// One page of the user's bookings, newest first, and whether more follow.
    pub async fn list(&self, query: &ListQuery) -> anyhow::Result<(Vec<Booking>, bool)> {
        let mut filter = doc! { "user_id": query.user_id.to_string() };
        if !query.statuses.is_empty() {
            let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
            filter.insert("public_status", doc! { "$in": statuses });
        }
        if let Some(showtime_id) = query.showtime_id {
            filter.insert("showtime_id", showtime_id.to_string());
        }
        if let Some(after) = query.after {
            filter.insert("_id", doc! { "$lt": after.to_string() });
        }
        let docs: Vec<BookingDoc> = self
            .bookings
            .find(filter)
            .sort(doc! { "_id": -1 })
            .limit(i64::from(query.page_size) + 1)
            .await
            .context("cannot list bookings")?
            .try_collect()
            .await
            .context("cannot read listed bookings")?;
        let more = docs.len() > query.page_size as usize;
        let bookings = docs
            .into_iter()
            .take(query.page_size as usize)
            .map(BookingDoc::into_booking)
            .collect::<Result<_, _>>()?;
        Ok((bookings, more))
    }

    /// Bookings whose in-flight step's lease lapsed: their process presumably died.
    pub async fn stalled(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<Booking>> {
        let statuses: Vec<&str> = BookingStatus::IN_FLIGHT.iter().map(|s| s.as_str()).collect();
        self.query(doc! { "status": { "$in": statuses }, "lease_until": { "$lt": bson_time(now) } }, limit)
            .await
            .context("cannot look for stalled sagas")
    }

    /// Finished bookings whose seats cinema could not be told to release (it was
    /// down): (booking, showtime) pairs for the sweeper to try again.
    pub async fn pending_releases(&self, limit: i64) -> anyhow::Result<Vec<(BookingId, ShowtimeId)>> {
        let bookings = self.query(doc! { "release_pending": true }, limit).await;
        let bookings = bookings.context("cannot look for pending seat releases")?;
        Ok(bookings.into_iter().map(|booking| (booking.id, booking.showtime_id)).collect())
    }

    /// The seats of a finished booking are released at last.
    pub async fn release_done(&self, id: BookingId) -> anyhow::Result<()> {
        self.bookings
            .update_one(doc! { "_id": id.to_string() }, doc! { "$set": { "release_pending": false } })
            .await
            .context("cannot record a seat release")?;
        Ok(())
    }

    /// HELD bookings whose hold has lapsed.
    pub async fn overdue_holds(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<Booking>> {
        self.query(
            doc! { "status": BookingStatus::Held.as_str(), "expires_at": { "$lte": bson_time(now) } },
            limit,
        )
        .await
        .context("cannot look for overdue holds")
    }

    async fn query(&self, filter: Document, limit: i64) -> anyhow::Result<Vec<Booking>> {
        let docs: Vec<BookingDoc> = self.bookings.find(filter).limit(limit).await?.try_collect().await?;
        docs.into_iter().map(BookingDoc::into_booking).collect()
    }

    /// Which of `ids` have a booking document.
    pub async fn existing(&self, ids: &[BookingId]) -> anyhow::Result<HashSet<BookingId>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let found: Vec<Document> = self
            .bookings
            .clone_with_type::<Document>()
            .find(doc! { "_id": { "$in": ids } })
            .projection(doc! { "_id": 1 })
            .await
            .context("cannot look up bookings by id")?
            .try_collect()
            .await
            .context("cannot read bookings looked up by id")?;
        found
            .iter()
            .map(|doc| Ok(BookingId::parse(doc.get_str("_id")?)?))
            .collect::<anyhow::Result<_>>()
            .context("stored booking id is invalid")
    }
}
