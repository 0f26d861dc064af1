//! Bookings an earlier version wrote, made readable by this one. Up to 2026-12-06 the
//! sweeper read three indexes (`leased_steps`, `held_by_expiry`, `seats_to_release`),
//! and bookings had no `sweep_at`; the bookings it may still have to act on get theirs
//! here, before the retired indexes go. An upgrade cut off in between is done again
//! at the next start: the retired indexes are still there.

use anyhow::Context;
use chrono::Utc;
use futures::TryStreamExt;
use mongodb::Collection;
use mongodb::bson::{self, Document, doc};

use super::document::{BookingDoc, bson_time, chrono_time};
use super::transition::SweepDue;
use crate::domain::BookingStatus;

/// The sweeper's indexes of earlier versions.
pub(super) const RETIRED_INDEXES: [&str; 6] = [
    "stalled_sagas",
    "overdue_holds",
    "pending_releases",
    "leased_steps",
    "held_by_expiry",
    "seats_to_release",
];

/// Gives each booking the sweeper may have to act on (HELD, a step in flight, seats
/// waiting to be released) its `sweep_at`, if an earlier version left any without.
/// One pass over the collection, once per upgrade. Each write is conditional on the
/// status read, so a booking an older replica moves on meanwhile is left as it is.
/// (Replicas of the earlier version write bookings without `sweep_at`: stop them
/// before starting this one, as a rolling upgrade of the sweeper's index requires.)
pub(super) async fn backfill_sweep_at(bookings: &Collection<BookingDoc>) -> anyhow::Result<()> {
    let namespace = bookings.namespace();
    let existing = bookings.list_index_names().await.context("cannot list the booking indexes")?;
    if !existing.iter().any(|name| RETIRED_INDEXES.contains(&name.as_str())) {
        return Ok(());
    }
    let unfinished: Vec<&str> = std::iter::once(BookingStatus::Held)
        .chain(BookingStatus::IN_FLIGHT)
        .map(BookingStatus::as_str)
        .collect();
    let filter = doc! {
        "sweep_at": { "$exists": false },
        "$or": [{ "status": { "$in": unfinished } }, { "release_pending": true }],
    };
    let bookings = bookings.clone_with_type::<Document>();
    let mut found = bookings
        .find(filter)
        .projection(doc! { "status": 1, "expires_at": 1, "lease_until": 1, "release_pending": 1 })
        .await
        .with_context(|| format!("cannot look for bookings without sweep_at in {namespace}"))?;
    let mut backfilled = 0_u64;
    while let Some(stored) = found.try_next().await.context("cannot read bookings without sweep_at")? {
        let id = stored.get_str("_id").context("a stored booking has no id")?;
        let status: BookingStatus = bson::from_bson(stored.get("status").cloned().unwrap_or_default())
            .with_context(|| format!("stored booking {id} has an invalid status"))?;
        let release_pending = stored.get_bool("release_pending").unwrap_or(false);
        let Some(due) = SweepDue::after(status, release_pending) else { continue };
        let now = Utc::now();
        let time = |field: &str| stored.get_datetime(field).ok().copied().map(chrono_time).transpose();
        let expires_at = time("expires_at")?.unwrap_or(now);
        let lease_until = time("lease_until")?.unwrap_or(now);
        let sweep_at = bson_time(due.at(now, lease_until, expires_at));
        bookings
            .update_one(
                doc! { "_id": id, "status": status.as_str(), "sweep_at": { "$exists": false } },
                doc! { "$set": { "sweep_at": sweep_at } },
            )
            .await
            .with_context(|| format!("cannot give booking {id} its sweep_at"))?;
        backfilled += 1;
    }
    tracing::info!(%namespace, backfilled, "bookings the sweeper may act on have their sweep_at");
    Ok(())
}
