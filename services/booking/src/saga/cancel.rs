//! CancelBooking: decide the refund a confirmed booking is due under the policy (from
//! the showtime's start, asked of cinema), claim the booking (CANCELLING) and drive it
//! until its seats are free and the refund made. A held booking is cancelled without
//! a refund; a cancelled one answers as it is.

use anyhow::Context;
use chrono::Utc;

use super::{Checkpoint, Saga};
use crate::domain::{Booking, BookingStatus, CancelRequest, RefundCause, Step};
use crate::error::BookingError;
use crate::store::{SagaEntry, Transition};

impl Saga {
    pub async fn cancel(&self, request: CancelRequest) -> Result<Booking, BookingError> {
        let booking = self.visible(request.booking_id, request.caller).await?;
        let reason = request.reason.as_deref().unwrap_or(
            if request.caller.admin && booking.user_id != request.caller.user_id {
                "cancelled by an admin"
            } else {
                "cancelled by the customer"
            },
        );
        let claim = match booking.status {
            BookingStatus::Held => {
                Transition::to(BookingStatus::Cancelling).step(Step::Cancel, "started").reason(reason)
            }
            BookingStatus::Confirmed => {
                let showtime = self
                    .cinema
                    .get_showtime(booking.showtime_id)
                    .await
                    .map_err(|s| BookingError::upstream("cinema.GetShowtime", &s))?;
                let starts_at = showtime
                    .starts_at
                    .as_ref()
                    .and_then(marquee_common::time::from_proto)
                    .context("cinema returned a showtime without a start")?;
                let policy = &self.settings.policy;
                let (amount, fee) = policy
                    .refund(&booking.total, starts_at, Utc::now())
                    .ok_or(BookingError::CancellationClosed(policy.closes_at(starts_at)))?;
                Transition::to(BookingStatus::Cancelling)
                    .entry(SagaEntry::new(Step::Cancel, "started").detail(format!(
                        "refund {} of {}",
                        amount.amount_minor(),
                        booking.total.amount_minor()
                    )))
                    .reason(reason)
                    .refund_due(RefundCause::Cancelled, &amount, &fee)
            }
            // Cancelling again answers with the outcome.
            BookingStatus::Cancelled => return Ok(booking),
            _ => return Err(booking.conflict()),
        };
        let (this, id) = (self.clone(), booking.id);
        let cancelled = self
            .detached(async move {
                let Some(booking) = this.store.transition(&booking, claim).await? else { return Ok(None) };
                this.checkpoint(Checkpoint::CancelClaimed)?;
                // Unregistered only if a pay of this process was about to claim it (and lost).
                let driving = this.drivers.enter(booking.id);
                this.drive(booking, driving.as_ref()).await.map(Some)
            })
            .await?;
        match cancelled {
            Some(cancelled) => Ok(cancelled),
            None => Err(self.store.find(id).await?.ok_or(BookingError::NotFound)?.conflict()),
        }
    }
}
