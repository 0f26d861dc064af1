//! What `/metrics` reads of the bookings: unfinished sagas by status, those stuck past
//! their deadline, and finished bookings whose seats still wait to be released. Each
//! is a count on one of the sweeper's indexes.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use mongodb::bson::{Document, doc};

use super::BookingStore;
use super::document::bson_time;
use crate::domain::BookingStatus;

impl BookingStore {
    /// Bookings whose saga has not finished, for every such status (zeros included).
    pub async fn unfinished_sagas(&self) -> anyhow::Result<Vec<(BookingStatus, u64)>> {
        let statuses = std::iter::once(BookingStatus::Held).chain(BookingStatus::IN_FLIGHT);
        try_join_all(statuses.map(|status| async move {
            // Through the index that holds the bookings of the status: the hold
            // expiries of HELD ones, the leases of those in flight.
            let indexed = if status == BookingStatus::Held { "expires_at" } else { "lease_until" };
            let count = self.count(doc! { "status": status.as_str(), indexed: { "$exists": true } }).await;
            Ok((status, count.with_context(|| format!("cannot count {status} bookings"))?))
        }))
        .await
    }

    /// Unfinished sagas whose deadline passed before `before`: a held booking's hold
    /// expiry, or the lease of a step in flight (its process presumably died).
    pub async fn stuck_sagas(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        let before = bson_time(before);
        let in_flight: Vec<&str> = BookingStatus::IN_FLIGHT.iter().map(|s| s.as_str()).collect();
        let (held, stalled) = futures::try_join!(
            self.count(doc! { "status": BookingStatus::Held.as_str(), "expires_at": { "$lt": before } }),
            self.count(doc! { "status": { "$in": in_flight }, "lease_until": { "$lt": before } }),
        )
        .context("cannot count stuck sagas")?;
        Ok(held + stalled)
    }

    /// Finished bookings whose seats cinema has not been told to release yet.
    pub async fn pending_release_count(&self) -> anyhow::Result<u64> {
        self.count(doc! { "release_pending": true }).await.context("cannot count pending seat releases")
    }

    async fn count(&self, filter: Document) -> anyhow::Result<u64> {
        Ok(self.bookings.count_documents(filter).await?)
    }
}
