//! CancelBooking: decide the refund a confirmed booking is due under the policy (from
//! the showtime's start, asked of cinema), claim the booking (CANCELLING) and drive it
//! until its seats are free and the refund made. A held booking is cancelled without
//! a refund; a cancelled one answers as it is. QuoteCancellation states the same
//! decision without acting on it.

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::{Checkpoint, Saga};
use crate::domain::{Booking, BookingId, BookingStatus, Caller, CancelRequest, Money, RefundCause, Step};
use crate::error::BookingError;
use crate::store::{SagaEntry, Transition};

/// What cancelling a booking now would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancellationQuote {
    pub cancellable: bool,
    pub refund: Money,
    pub fee: Money,
    /// The cutoff of a confirmed booking.
    pub closes_at: Option<DateTime<Utc>>,
}

impl Saga {
    /// The refund `cancel` would decide now, by the same policy; changes nothing.
    pub async fn quote_cancellation(
        &self,
        id: BookingId,
        caller: Caller,
    ) -> Result<CancellationQuote, BookingError> {
        let booking = self.visible(id, caller).await?;
        let nothing = booking.total.with_amount(0);
        let quote = match booking.status {
            BookingStatus::Held => CancellationQuote {
                cancellable: true,
                refund: nothing.clone(),
                fee: nothing,
                closes_at: None,
            },
            BookingStatus::Confirmed => {
                let starts_at = self.show_start(&booking).await?;
                let policy = &self.settings.policy;
                let closes_at = Some(policy.closes_at(starts_at));
                match policy.refund(&booking.total, starts_at, Utc::now()) {
                    Some((refund, fee)) => CancellationQuote { cancellable: true, refund, fee, closes_at },
                    None => CancellationQuote {
                        cancellable: false,
                        refund: nothing,
                        fee: booking.total.clone(),
                        closes_at,
                    },
                }
            }
            _ => CancellationQuote {
                cancellable: false,
                refund: nothing.clone(),
                fee: nothing,
                closes_at: None,
            },
        };
        Ok(quote)
    }

    /// When the booking's show starts, asked of cinema.
    async fn show_start(&self, booking: &Booking) -> Result<DateTime<Utc>, BookingError> {
        let showtime = self
            .cinema
            .get_showtime(booking.showtime_id)
            .await
            .map_err(|s| BookingError::upstream("cinema.GetShowtime", &s))?;
        Ok(showtime
            .starts_at
            .as_ref()
            .and_then(marquee_kit::time::from_proto)
            .context("cinema returned a showtime without a start")?)
    }

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
                let starts_at = self.show_start(&booking).await?;
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
