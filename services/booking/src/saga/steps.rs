//! The step machine: drives a claimed booking from its recorded status (CHARGING,
//! CONFIRMING, REFUNDING, CANCELLING) until it is terminal or held again, one step per
//! in-flight status, each ending with one conditional write of everything it learned.
//! Pay, cancel and recovery all run their bookings through `drive`.

use anyhow::Context;
use chrono::Utc;
use marquee_kit::ErrorCode;
use marquee_proto::payment::v1::{Payment, PaymentStatus};
use tonic::Code;

use super::{Checkpoint, Saga};
use crate::domain::{Booking, BookingStatus, PublicStatus, RefundCause, Step};
use crate::drivers::Driving;
use crate::error::BookingError;
use crate::events;
use crate::store::{Revision, SagaEntry, Transition};

impl Saga {
    /// Runs the booking's saga from its recorded status until it is terminal or held,
    /// telling this process's waiters (through `driving`) each state it reaches. Each
    /// step keeps the lease its in-flight status took until it ends (`lease`).
    pub(super) async fn drive(
        &self,
        mut booking: Booking,
        driving: Option<&Driving>,
    ) -> Result<Booking, BookingError> {
        loop {
            if let Some(driving) = driving {
                driving.publish(&booking);
            }
            let leased = Revision::of(&booking);
            booking = match booking.status {
                BookingStatus::Charging => self.keeping_lease(leased, self.charge_step(booking)).await?,
                BookingStatus::Confirming => self.keeping_lease(leased, self.confirm_step(booking)).await?,
                BookingStatus::Refunding => self.keeping_lease(leased, self.refund_step(booking)).await?,
                BookingStatus::Cancelling => self.keeping_lease(leased, self.cancel_step(booking)).await?,
                _ => return Ok(booking),
            };
        }
    }

    /// CHARGING: extend the hold once if little of it is left, charge under the
    /// booking's key, then confirm at once, however long the charge took (the lease is
    /// kept while the step runs). What the step learns along the way rides along with
    /// the write that ends it. If the process dies before that write, recovery runs the
    /// step again, which is harmless: cinema answers a second extension as already
    /// done, and a charge repeated under the booking's key returns the first result.
    async fn charge_step(&self, booking: Booking) -> Result<Booking, BookingError> {
        let record = if booking.hold_extended {
            Transition::to(BookingStatus::Charging)
        } else if booking.expires_at - Utc::now() >= self.settings.extend_hold_below {
            // Time enough for the charge (and for another try should this one fail).
            Transition::to(BookingStatus::Charging).step(Step::ExtendHold, "not_needed")
        } else {
            self.extend_hold(&booking).await?
        };
        let method = booking.payment_method.clone().context("a charging booking has no payment method")?;
        let payment = match self.charge(&booking, &method).await {
            Ok(payment) => payment,
            Err(error @ BookingError::PaymentUnavailable) => {
                // Nothing charged: hand the booking back for another attempt.
                let change = record.retarget(BookingStatus::Held).step(Step::Charge, "unavailable");
                self.advance(&booking, change).await?;
                return Err(error);
            }
            Err(error @ BookingError::Upstream(_)) => {
                self.advance(&booking, record.retarget(BookingStatus::Held).step(Step::Charge, "refused"))
                    .await?;
                return Err(error);
            }
            // The outcome is unknown: leave it CHARGING for recovery to ask again.
            Err(error) => return Err(error),
        };
        self.checkpoint(Checkpoint::PayCharged)?;
        match PaymentStatus::try_from(payment.status) {
            Ok(PaymentStatus::Succeeded) => {
                let record = record
                    .entry(SagaEntry::new(Step::Charge, "succeeded").detail(&payment.id))
                    .payment_id(&payment.id);
                self.confirm(booking, &payment.id, record).await
            }
            Ok(PaymentStatus::Declined) => {
                let released = self.release_seats(booking.showtime_id, booking.id).await;
                self.checkpoint(Checkpoint::PayDeclinedReleased)?;
                let reason = if payment.decline_reason.is_empty() {
                    "declined"
                } else {
                    payment.decline_reason.as_str()
                };
                let event = events::booking_payment_failed(&booking, reason, Utc::now());
                let change = record
                    .retarget(BookingStatus::PaymentFailed)
                    .entry(SagaEntry::new(Step::Charge, "declined").detail(reason))
                    .seats_released(released)
                    .payment_id(&payment.id)
                    .reason(reason)
                    .event(event);
                let booking = self.advance(&booking, change).await?;
                tracing::info!(booking.id = %booking.id, payment.id = %payment.id, reason, "payment declined");
                Ok(booking)
            }
            other => Err(anyhow::anyhow!("payment {} came back in status {other:?}", payment.id).into()),
        }
    }

    /// Asks cinema once for more time, so the hold outlives the charge, and returns
    /// the record of it (for the step's next write). Its refusal is no failure:
    /// confirming re-acquires lapsed seats nobody took.
    async fn extend_hold(&self, booking: &Booking) -> Result<Transition, BookingError> {
        let extended = self.cinema.extend_hold(booking).await;
        let (outcome, expires_at) = match extended {
            Ok(reply) => ("succeeded", reply.expires_at.as_ref().and_then(marquee_kit::time::from_proto)),
            Err(status) => match marquee_kit::ApiError::from_status(&status).code {
                ErrorCode::HoldExpired => ("hold_expired", None),
                ErrorCode::Conflict => ("already_extended", None),
                _ => {
                    tracing::warn!(booking.id = %booking.id, code = ?status.code(), message = status.message(), "cannot extend the hold");
                    ("error", None)
                }
            },
        };
        self.checkpoint(Checkpoint::PayExtended)?;
        Ok(Transition::to(BookingStatus::Charging).step(Step::ExtendHold, outcome).hold_extended(expires_at))
    }

    /// Charges under the booking's key (`Payments::charge` retries the transient
    /// failures), and says what a failure means for the booking.
    async fn charge(&self, booking: &Booking, method: &str) -> Result<Payment, BookingError> {
        match self.payments.charge(booking, method).await {
            Ok(payment) => Ok(payment),
            // Still in flight elsewhere: its outcome is unknown, so do not claim nothing was charged.
            Err(status) if status.code() == Code::Aborted => {
                Err(BookingError::Conflict(PublicStatus::Held, BookingStatus::Charging))
            }
            Err(status) if status.code() == Code::Unavailable => Err(BookingError::PaymentUnavailable),
            Err(status) => Err(BookingError::upstream("payment.Charge", &status)),
        }
    }

    /// CONFIRMING (a charge recorded before a confirm that failed): book the seats.
    async fn confirm_step(&self, booking: Booking) -> Result<Booking, BookingError> {
        let payment_id = booking.payment_id.clone().context("a confirming booking has no payment")?;
        self.confirm(booking, &payment_id, Transition::to(BookingStatus::Confirming)).await
    }

    /// Books the seats of a paid booking, CHARGING (`record` holds what its step
    /// learned, the charge included) or CONFIRMING; if another booking took them,
    /// refunds in full.
    async fn confirm(
        &self,
        booking: Booking,
        payment_id: &str,
        record: Transition,
    ) -> Result<Booking, BookingError> {
        self.checkpoint(Checkpoint::ConfirmStart)?;
        match self.cinema.confirm_seats(&booking).await {
            Ok(_) => {
                self.checkpoint(Checkpoint::PayConfirmedSeats)?;
                let event = events::booking_confirmed(&booking, payment_id, Utc::now());
                let change = record
                    .retarget(BookingStatus::Confirmed)
                    .step(Step::ConfirmSeats, "succeeded")
                    .event(event);
                let booking = self.advance(&booking, change).await?;
                tracing::info!(booking.id = %booking.id, payment.id = %payment_id, "booking confirmed");
                Ok(booking)
            }
            Err(status) => match BookingError::upstream("cinema.ConfirmSeats", &status) {
                BookingError::Upstream(lost) if lost.code == ErrorCode::SeatUnavailable => {
                    let seats = lost.meta_list("seat_ids").join(",");
                    tracing::warn!(booking.id = %booking.id, payment.id = %payment_id, seat_ids = %seats, "paid but seats lost; refunding");
                    let nothing = booking.total.with_amount(0);
                    let change = record
                        .retarget(BookingStatus::Refunding)
                        .entry(SagaEntry::new(Step::ConfirmSeats, "seat_unavailable").detail(seats))
                        .reason("seats_lost")
                        .refund_due(RefundCause::SeatsLost, &booking.total, &nothing);
                    self.advance(&booking, change).await
                }
                error => {
                    // Recovery tries again once the lease lapses. A charge not recorded
                    // yet is recorded now, so that it need not ask payment again.
                    if booking.status == BookingStatus::Charging {
                        self.advance(&booking, record.retarget(BookingStatus::Confirming)).await?;
                    }
                    Err(error)
                }
            },
        }
    }

    /// REFUNDING: give the decided amount back under the booking's refund key.
    async fn refund_step(&self, booking: Booking) -> Result<Booking, BookingError> {
        self.checkpoint(Checkpoint::RefundStart)?;
        let refund = booking.refund.clone().context("a refunding booking has no refund decided")?;
        let mut change = Transition::to(refund.cause.ends_in());
        if refund.amount.amount_minor() > 0 {
            let payment_id = booking.payment_id.clone().context("a refunding booking has no payment")?;
            let refunded = self
                .payments
                .refund(&booking, payment_id, &refund)
                .await
                .map_err(|s| BookingError::upstream("payment.Refund", &s))?;
            self.checkpoint(Checkpoint::RefundDone)?;
            let refund_id = refunded.refund.map(|r| r.id).unwrap_or_default();
            change = change
                .entry(SagaEntry::new(Step::Refund, "succeeded").detail(&refund_id))
                .refunded(&refund_id, Utc::now());
        } else {
            change = change.step(Step::Refund, "nothing_due");
        }
        let now = Utc::now();
        let event = match refund.cause {
            RefundCause::SeatsLost => events::booking_failed(&booking, "seats_lost", now),
            RefundCause::Cancelled => events::booking_cancelled(&booking, Some(&refund.amount), now),
        };
        let booking = self.advance(&booking, change.event(event)).await?;
        tracing::info!(booking.id = %booking.id, amount_minor = refund.amount.amount_minor(), status = %booking.status, "refunded");
        Ok(booking)
    }

    /// CANCELLING: give every seat back (held or booked), then refund if one is due.
    async fn cancel_step(&self, booking: Booking) -> Result<Booking, BookingError> {
        self.cinema
            .cancel_seats(&booking)
            .await
            .map_err(|s| BookingError::upstream("cinema.CancelSeats", &s))?;
        self.checkpoint(Checkpoint::CancelReleased)?;
        let refund_due = booking.payment_id.is_some()
            && booking.refund.as_ref().is_some_and(|r| r.amount.amount_minor() > 0);
        let change = if refund_due {
            Transition::to(BookingStatus::Refunding).step(Step::ReleaseSeats, "succeeded")
        } else {
            let refund = booking.refund.as_ref().map(|r| &r.amount);
            let event = events::booking_cancelled(&booking, refund, Utc::now());
            Transition::to(BookingStatus::Cancelled).step(Step::ReleaseSeats, "succeeded").event(event)
        };
        self.advance(&booking, change).await
    }

    /// A state change on a booking this call drives. If another driver moved it first
    /// (recovery, or a racing request), its outcome stands: a terminal booking is the
    /// answer, anything else is a conflict.
    async fn advance(&self, booking: &Booking, change: Transition) -> Result<Booking, BookingError> {
        let emits_event = change.emits_event();
        let Some(updated) = self.store.transition(booking, change).await? else {
            let current = self.store.find(booking.id).await?.ok_or(BookingError::NotFound)?;
            tracing::info!(booking.id = %booking.id, status = %current.status, "another driver moved the booking first");
            return if current.status.is_terminal() { Ok(current) } else { Err(current.conflict()) };
        };
        if emits_event {
            self.outbox_written.notify_one();
        }
        Ok(updated)
    }
}
