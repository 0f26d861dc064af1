//! PayBooking: claim a held booking for its charge (CHARGING) and drive it to its
//! outcome. A pay repeating one in flight (typically the gateway's retry after a
//! timeout) waits for it instead: on this process's driver of it when there is one
//! (`drivers`), otherwise by polling the booking, for at most `pay_wait`.

use std::time::Duration;

use marquee_kit::backoff::Backoff;
use tokio::time::Instant;

use super::{Checkpoint, Saga};
use crate::domain::{Booking, BookingStatus, Caller, PayRequest, Step};
use crate::error::BookingError;
use crate::store::Transition;

impl Saga {
    pub async fn pay(&self, request: PayRequest) -> Result<Booking, BookingError> {
        let caller = Caller { user_id: request.user_id, admin: false };
        let mut booking = self.visible(request.booking_id, caller).await?;
        // A booking is charged once, whatever the key; a key names one request, so its
        // repeat must ask for the same method.
        if booking.pay_key.as_deref() == Some(request.idempotency_key.as_str())
            && booking.payment_method.as_deref() != Some(request.payment_method.as_str())
        {
            return Err(BookingError::IdempotencyKeyReused);
        }
        // Only the owner sees the booking, so a pay in flight is this caller's own
        // earlier attempt (typically timed out at the gateway and retried): wait for it.
        // If it ended back in HELD (nothing charged), this call pays afresh, as a retry
        // after it would have.
        let deadline = Instant::now() + self.settings.pay_wait;
        let driving = loop {
            booking = self.await_payment(booking, deadline).await?;
            if booking.status != BookingStatus::Held {
                return paid_outcome(booking);
            }
            // Entered before the claim, so that a repeat arriving meanwhile waits for
            // this call instead of losing the claim to it.
            if let Some(driving) = self.drivers.enter(booking.id) {
                break driving;
            }
            if Instant::now() >= deadline {
                let current = self.store.find(booking.id).await?.ok_or(BookingError::NotFound)?;
                return paid_outcome(current);
            }
            // A repeat of this pay in this process is claiming the booking right now.
            booking = self.await_local_driver(booking, deadline).await?;
        };
        // An expired hold that the sweeper has not reached yet may still be paid: cinema
        // re-acquires the seats on confirm if nobody took them, else the charge is refunded.
        let claim = Transition::to(BookingStatus::Charging)
            .step(Step::Charge, "started")
            .payment(request.payment_method.as_str(), request.idempotency_key.as_str());
        let (this, id) = (self.clone(), booking.id);
        let paid = self
            .detached(async move {
                let Some(booking) = this.store.transition(&booking, claim).await? else { return Ok(None) };
                this.checkpoint(Checkpoint::PayClaimed)?;
                this.drive(booking, Some(&driving)).await.map(Some)
            })
            .await?;
        if let Some(paid) = paid {
            return Ok(paid);
        }
        // A pay in another process won the claim (wait for its outcome), or a cancel
        // or the expiry did.
        let current = self.store.find(id).await?.ok_or(BookingError::NotFound)?;
        paid_outcome(self.await_payment(current, deadline).await?)
    }

    /// Waits until a booking's payment steps are done or `deadline` has passed, and
    /// returns it as last seen. Any other booking (e.g. one being cancelled) comes back
    /// at once: only a pay repeating a pay waits. While this process drives the step,
    /// its driver says when it is done; otherwise (another replica drives it, or it
    /// awaits recovery after a crash) the booking is polled. A step whose process died
    /// stays in flight until recovery resumes it after the lease, so the wait may end
    /// with the booking still in flight (CONFLICT, as before).
    async fn await_payment(&self, mut booking: Booking, deadline: Instant) -> Result<Booking, BookingError> {
        // 250 ms doubling to 1 s, jittered: the repeats of many bookings a dead replica
        // left in flight do not all read MongoDB at the same moments.
        const FIRST_POLL: Duration = Duration::from_millis(250);
        const MAX_POLL: Duration = Duration::from_secs(1);
        let polls = Backoff::new(FIRST_POLL, MAX_POLL);
        let mut polled: u32 = 0;
        while booking.is_paying() {
            let now = Instant::now();
            if now >= deadline {
                tracing::info!(booking.id = %booking.id, status = %booking.status, "payment still in flight; giving up waiting");
                break;
            }
            if self.drivers.driver(booking.id).is_some() {
                booking = self.await_local_driver(booking, deadline).await?;
                continue;
            }
            tokio::time::sleep(polls.delay(polled).min(deadline - now)).await;
            polled = polled.saturating_add(1);
            self.drivers.count_poll();
            booking = self.store.find(booking.id).await?.ok_or(BookingError::NotFound)?;
        }
        Ok(booking)
    }

    /// Waits for this process's driver of the booking to settle it (no payment
    /// running any more) or to finish, and returns the booking then: as the driver
    /// published it, else as stored. At the deadline, or without a local driver, it
    /// returns `booking` unchanged.
    async fn await_local_driver(&self, booking: Booking, deadline: Instant) -> Result<Booking, BookingError> {
        let Some(driver) = self.drivers.driver(booking.id) else { return Ok(booking) };
        let Ok(settled) = tokio::time::timeout_at(deadline, driver.settled()).await else {
            return Ok(booking);
        };
        self.drivers.count_woken();
        match settled {
            Some(settled) => Ok(settled),
            // It failed, or left the booking in flight for recovery.
            None => self.store.find(booking.id).await?.ok_or(BookingError::NotFound),
        }
    }
}

/// What PayBooking answers for a booking it did not (or no longer can) claim: a
/// finished payment's outcome, else why not.
fn paid_outcome(booking: Booking) -> Result<Booking, BookingError> {
    match booking.status {
        BookingStatus::Confirmed | BookingStatus::PaymentFailed | BookingStatus::Failed => Ok(booking),
        BookingStatus::Expired => Err(BookingError::HoldExpired),
        _ => Err(booking.conflict()),
    }
}
