//! The `hold_slots` collection: a user's active holds per showtime, capped by slot
//! documents with unique ids (`user:showtime:n`). A slot is claimed once cinema has
//! locked the hold's seats, and freed when the hold ends.

use anyhow::Context;
use chrono::Utc;
use marquee_mongo::Inserted;
use mongodb::bson::doc;

use super::BookingStore;
use super::document::{bson_time, chrono_time};
use crate::domain::{BookingId, ShowtimeId, UserId};

/// A slot claimed but never used by a booking (its hold crashed before the insert)
/// is reclaimed after this long.
const ABANDONED_SLOT: chrono::Duration = chrono::Duration::minutes(2);

fn slot_id(user_id: UserId, showtime_id: ShowtimeId, n: u32) -> String {
    format!("{user_id}:{showtime_id}:{n}")
}

impl BookingStore {
    /// Claims one of the user's `limit` hold slots for this showtime for `booking_id`,
    /// or `None` when all are taken by active bookings. A slot's unique id makes two
    /// concurrent claims of it exclusive. Free slots are tried first (one insert each);
    /// only when none is free is a slot left behind by a finished booking (or by a hold
    /// that died before its booking was written) taken over, with a conditional update
    /// on its previous holder.
    pub async fn claim_slot(
        &self,
        user_id: UserId,
        showtime_id: ShowtimeId,
        booking_id: BookingId,
        limit: u32,
    ) -> anyhow::Result<Option<String>> {
        let now = Utc::now();
        let claim = |id: &str| {
            doc! {
                "_id": id,
                "booking_id": booking_id.to_string(),
                "showtime_id": showtime_id.to_string(),
                "claimed_at": bson_time(now),
            }
        };
        for n in 0..limit {
            let id = slot_id(user_id, showtime_id, n);
            if self.batches.slot_claims.call(claim(&id)).await? == Inserted::New {
                return Ok(Some(id));
            }
        }
        for n in 0..limit {
            let id = slot_id(user_id, showtime_id, n);
            let Some(slot) =
                self.slots.find_one(doc! { "_id": &id }).await.context("cannot read a hold slot")?
            else {
                continue;
            };
            let holder = slot.get_str("booking_id").unwrap_or_default().to_owned();
            let claimed_at = slot.get_datetime("claimed_at").ok().and_then(|at| chrono_time(*at).ok());
            let in_use = match BookingId::parse(&holder).ok() {
                Some(holder_id) => match self.find(holder_id).await? {
                    Some(booking) => booking.status.is_active_hold(),
                    None => claimed_at.is_some_and(|at| now - at < ABANDONED_SLOT),
                },
                None => false,
            };
            if in_use {
                continue;
            }
            let taken = self
                .slots
                .update_one(
                    doc! { "_id": &id, "booking_id": &holder },
                    doc! {
                        "$set": {
                            "booking_id": booking_id.to_string(),
                            "showtime_id": showtime_id.to_string(),
                            "claimed_at": bson_time(now),
                        },
                    },
                )
                .await
                .context("cannot take over a hold slot")?;
            if taken.modified_count == 1 {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Gives a slot back; a no-op unless `booking_id` still holds it.
    pub async fn free_slot(&self, slot: &str, booking_id: BookingId) -> anyhow::Result<()> {
        self.batches.slot_frees.call((slot.to_owned(), booking_id.to_string())).await
    }
}
