//! What `/metrics` reads of the bookings: unfinished sagas by status, those stuck past
//! their deadline, and finished bookings whose seats still wait to be released. Each
//! is a count on the sweeper's index (`sweep_at`, present only on those bookings).

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
            let count = self.count(doc! { "sweep_at": { "$exists": true }, "status": status.as_str() }).await;
            Ok((status, count.with_context(|| format!("cannot count {status} bookings"))?))
        }))
        .await
    }

    /// Unfinished sagas whose deadline passed before `before`: a held booking's hold
    /// expiry, or the lease of a step in flight (its process presumably died).
    pub async fn stuck_sagas(&self, before: DateTime<Utc>) -> anyhow::Result<u64> {
        let before = bson_time(before);
        let in_flight: Vec<&str> = BookingStatus::IN_FLIGHT.iter().map(|s| s.as_str()).collect();
        // A booking is due by its hold's expiry while HELD and by its lease in flight.
        let filter = doc! {
            "sweep_at": { "$lt": before },
            "$or": [
                { "status": BookingStatus::Held.as_str(), "expires_at": { "$lt": before } },
                { "status": { "$in": in_flight }, "lease_until": { "$lt": before } },
            ],
        };
        self.count(filter).await.context("cannot count stuck sagas")
    }

    /// Finished bookings whose seats cinema has not been told to release yet.
    pub async fn pending_release_count(&self) -> anyhow::Result<u64> {
        let filter = doc! { "sweep_at": { "$exists": true }, "release_pending": true };
        self.count(filter).await.context("cannot count pending seat releases")
    }

    async fn count(&self, filter: Document) -> anyhow::Result<u64> {
        Ok(self.bookings.count_documents(filter).await?)
    }
}
