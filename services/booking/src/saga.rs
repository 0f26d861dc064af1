//! The booking saga: hold seats, charge, confirm, and compensate when a step fails.
//!
//! ```text
//! HELD ──pay──▶ CHARGING ──charged──▶ CONFIRMING ──seats booked──▶ CONFIRMED ──cancel──▶ CANCELLING
//!  │  │            │ declined: release ▶ PAYMENT_FAILED   │ seats taken             │ seats freed
//!  │  │            │ unavailable ──▶ HELD                  ▼                         ▼
//!  │  │            │                              REFUNDING (full) ──▶ FAILED    REFUNDING (policy) ──▶ CANCELLED
//!  │  └─cancel──▶ CANCELLING ──seats freed──▶ CANCELLED
//!  └─lapsed (sweeper)──▶ EXPIRED
//! ```
//!
//! Every state change is one conditional update on the booking's `version`, so two
//! callers can never both run a step. A step with effects elsewhere is recorded
//! before it runs (an in-flight status with a lease: CHARGING, CONFIRMING, REFUNDING,
//! CANCELLING) and after it completes (the next status). Every remote effect is
//! idempotent: the charge and the refund are keyed by the booking, cinema's confirm,
//! release and cancel are idempotent by booking. So when a process dies mid-step,
//! recovery re-runs the step from the recorded status once the lease lapses, and a
//! repeat is harmless (a re-run charge returns the first result). A hold is recorded
//! before LockSeats by its hold-slot claim, which recovery uses to release the seats
//! of a hold whose booking was never written.
//!
//! MongoDB round trips are the scarce resource, so a step writes once, at its end,
//! with everything it learned (history entries, fields, event) in that one update.
//! In particular CHARGING normally runs the confirm too, going straight to
//! CONFIRMED, FAILED's refund or PAYMENT_FAILED: a crash before that write re-runs
//! the charge, which returns the first result. Only a charge that used up half the
//! lease is recorded as CONFIRMING before the confirm, which then gets a fresh lease.
//! A PayBooking repeating a pay that this process is driving waits for the driver
//! (`drivers`) to finish instead of polling the booking.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_common::ErrorCode;
use marquee_common::trace::in_new_trace;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::cinema::v1::{
    CancelSeatsRequest, ConfirmSeatsRequest, ExtendHoldRequest, GetShowtimeRequest, LockSeatsRequest,
    LockSeatsResponse, ReleaseSeatsRequest,
};
use marquee_proto::payment::v1::payment_service_client::PaymentServiceClient;
use marquee_proto::payment::v1::{ChargeRequest, Payment, PaymentStatus, RefundRequest};
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tracing::Instrument as _;

use crate::domain::{
    BookedSeat, Booking, BookingId, BookingStatus, Caller, CancelRequest, HoldRequest, ListQuery, Money,
    PayRequest, PublicStatus, RefundCause, RefundPolicy, SeatId, ShowtimeId,
};
use crate::drivers::{Drivers, Driving};
use crate::error::BookingError;
use crate::events;
use crate::store::{BookingStore, InsertError, SagaEntry, SlotClaim, Transition};
use crate::turns::Turns;

/// Bookings looked at per sweep query.
const SWEEP_BATCH: i64 = 100;

/// How often, and how patiently, a transiently failing call is retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Calls in total, at least one.
    pub attempts: u32,
    /// Wait before the first retry; doubles after each, jittered.
    pub first_backoff: Duration,
}

/// A retried call never waits longer than this between attempts: the caller waits.
const MAX_CALL_BACKOFF: Duration = Duration::from_secs(5);

/// What the saga is configured with.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    pub hold_ttl_seconds: i32,
    pub max_active_holds: u32,
    pub charge_retry: Retry,
    pub upstream_retry: Retry,
    /// The deadline every outgoing call carries.
    pub deadline: Duration,
    pub policy: RefundPolicy,
    /// How long a repeated PayBooking waits for the payment in flight to finish.
    pub pay_wait: Duration,
    /// How long a saga step may run before recovery may take the booking over.
    pub lease: Duration,
    /// Steps (hold, pay, cancel) running at once before SERVICE_BUSY.
    pub max_in_flight: usize,
}

/// The orchestrator and the clients of the services it coordinates.
#[derive(Clone)]
pub struct Saga {
    store: BookingStore,
    cinema: CinemaServiceClient<Channel>,
    payments: PaymentServiceClient<Channel>,
    settings: Arc<SagaSettings>,
    /// Wakes the outbox relay as soon as an event is written.
    outbox_written: Arc<Notify>,
    /// The bookings this process drives a step of right now.
    drivers: Drivers,
    /// Holds of this process by idempotency key: a repeat waits for the first.
    turns: Turns,
    /// Test hook: the named checkpoint fails as if the process died there.
    crash_at: Option<Arc<str>>,
    /// One permit per hold, pay or cancel step running on its own task.
    in_flight: Arc<Semaphore>,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: usize,
    pub resumed: usize,
    /// Holds whose process died after locking seats but before writing the booking.
    pub abandoned: usize,
    /// Finished bookings whose seats are released now, after cinema was down.
    pub released_late: usize,
}

/// Which way a transiently failing call may be retried.
#[derive(Clone, Copy)]
enum Idempotent {
    /// Cinema: repeating is harmless, retry when the call did not get through.
    ByBooking,
    /// Payment: also ABORTED, which means the same key is still in flight.
    ByKey,
}

impl Saga {
    pub fn new(
        store: BookingStore,
        cinema: CinemaServiceClient<Channel>,
        payments: PaymentServiceClient<Channel>,
        settings: SagaSettings,
        outbox_written: Arc<Notify>,
        crash_at: Option<String>,
    ) -> Self {
        Self {
            store,
            cinema,
            payments,
            outbox_written,
            drivers: Drivers::default(),
            turns: Turns::default(),
            crash_at: crash_at.map(Arc::from),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            settings: Arc::new(settings),
        }
    }

    pub fn drivers(&self) -> Drivers {
        self.drivers.clone()
    }

    /// The test hook: fails exactly like a process dying at `point` (no write after it).
    fn checkpoint(&self, point: &'static str) -> Result<(), BookingError> {
        if self.crash_at.as_deref() == Some(point) {
            tracing::warn!(point, "injected crash");
            return Err(anyhow::anyhow!("injected crash at {point}").into());
        }
        Ok(())
    }

    /// Every outgoing call: within the deadline, and in the current trace (the
    /// caller's, or the sweep's per booking) as a new span.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = marquee_common::trace::outgoing(message);
        request.set_timeout(self.settings.deadline);
        request
    }

    /// Calls `call` until it succeeds, fails for good, or the attempts run out.
    async fn retrying<T, F, Fut>(
        &self,
        name: &'static str,
        kind: Idempotent,
        retry: Retry,
        call: F,
    ) -> Result<T, Status>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let backoff = marquee_common::backoff::Backoff::new(retry.first_backoff, MAX_CALL_BACKOFF);
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if attempt < retry.attempts && transient(&status, kind) => {
                    tracing::warn!(call = name, attempt, code = ?status.code(), message = status.message(), "retrying");
                    tokio::time::sleep(backoff.delay(attempt - 1)).await;
                    attempt += 1;
                }
                Err(status) => return Err(status),
            }
        }
    }

    pub async fn hold(&self, request: HoldRequest) -> Result<Booking, BookingError> {
        let this = self.clone();
        self.detached(async move {
            // A repeat of a hold still running here waits for it, then finds its booking.
            let key = format!("{}:{}", request.user_id, request.idempotency_key.as_str());
            let _turn = this.turns.take(key).await;
            if let Some(existing) = this.store.find_by_key(request.user_id, &request.idempotency_key).await? {
                return replay(existing, &request);
            }
            // The user id is the gateway's, from a token the user service signed (and
            // accounts are never deleted), so it is not looked up again here.
            this.hold_seats(request).await
        })
        .await
    }

    /// Claims a hold slot, holds the seats and records the booking: the part of a hold
    /// that must not stop halfway because its caller gave up.
    async fn hold_seats(&self, request: HoldRequest) -> Result<Booking, BookingError> {
        let booking_id = BookingId::generate();
        let limit = self.settings.max_active_holds;
        let Some(slot) =
            self.store.claim_slot(request.user_id, request.showtime_id, booking_id, limit).await?
        else {
            // A concurrent retry of this very request may hold the last slot.
            return match self.store.find_by_key(request.user_id, &request.idempotency_key).await? {
                Some(existing) => replay(existing, &request),
                None => Err(BookingError::HoldLimitReached(limit)),
            };
        };
        let locked = self
            .cinema
            .clone()
            .lock_seats(self.request(LockSeatsRequest {
                showtime_id: request.showtime_id.to_string(),
                seat_ids: request.seats.seats().iter().map(|s| s.as_str().to_owned()).collect(),
                booking_id: booking_id.to_string(),
                ttl_seconds: self.settings.hold_ttl_seconds,
            }))
            .await;
        let locked = match locked {
            Ok(locked) => locked.into_inner(),
            Err(status) => {
                let refused = BookingError::upstream("cinema.LockSeats", &status);
                // Refused for a reason (seats taken, a seating rule): nothing was locked.
                // Cut off, timed out or failing inside, cinema may have committed the
                // lock all the same: give the seats back first, and if even that fails,
                // keep the slot claim, which makes the sweeper release them after the
                // lease (as for a hold whose process died here).
                let outcome_unknown = matches!(refused, BookingError::Unexpected(_));
                if outcome_unknown && !self.release_seats(request.showtime_id, booking_id).await {
                    return Err(refused);
                }
                self.free_slot(&slot, booking_id).await;
                // A concurrent retry of this very request may have taken the seats first.
                if may_be_a_concurrent_retry(&refused, &request)
                    && let Some(existing) =
                        self.store.find_by_key(request.user_id, &request.idempotency_key).await?
                {
                    return replay(existing, &request);
                }
                return Err(refused);
            }
        };

        // From here on the seats are ours: every failure must give them back. If this
        // process dies before the insert, the slot claim (written before LockSeats)
        // tells recovery to release them.
        self.checkpoint("hold.locked")?;
        let now = Utc::now();
        let booking = match held_booking(booking_id, &request, locked, now, self.settings.hold_ttl_seconds) {
            Ok(booking) => Booking { slot: Some(slot.clone()), ..booking },
            Err(error) => {
                self.release_seats(request.showtime_id, booking_id).await;
                self.free_slot(&slot, booking_id).await;
                return Err(error.into());
            }
        };
        let event = events::booking_held(&booking, now);
        match self.store.insert(&booking, SagaEntry::new("lock_seats", "succeeded"), &event).await {
            Ok(()) => {
                self.outbox_written.notify_one();
                tracing::info!(booking.id = %booking.id, seats = booking.seats.len(), "seats held");
                Ok(booking)
            }
            Err(InsertError::DuplicateKey) => {
                // A concurrent request with the same key won the insert.
                self.release_seats(booking.showtime_id, booking.id).await;
                self.free_slot(&slot, booking_id).await;
                let existing = self
                    .store
                    .find_by_key(request.user_id, &request.idempotency_key)
                    .await?
                    .context("booking with a duplicate idempotency key vanished")?;
                replay(existing, &request)
            }
            Err(InsertError::Other(error)) => {
                self.release_seats(booking.showtime_id, booking.id).await;
                self.free_slot(&slot, booking_id).await;
                Err(error.into())
            }
        }
    }

    pub async fn pay(&self, request: PayRequest) -> Result<Booking, BookingError> {
        let caller = Caller { user_id: request.user_id, admin: false };
        let mut booking = self.visible(request.booking_id, caller).await?;
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
            .step("charge", "started")
            .payment_method(request.payment_method.as_str());
        let (this, id) = (self.clone(), booking.id);
        let paid = self
            .detached(async move {
                let Some(booking) = this.store.transition(&booking, claim).await? else { return Ok(None) };
                this.checkpoint("pay.claimed")?;
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
        const FIRST_POLL: Duration = Duration::from_millis(250);
        const MAX_POLL: Duration = Duration::from_secs(1);
        let mut poll = FIRST_POLL;
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
            tokio::time::sleep(poll.min(deadline - now)).await;
            poll = (poll * 2).min(MAX_POLL);
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
                Transition::to(BookingStatus::Cancelling).step("cancel", "started").reason(reason)
            }
            BookingStatus::Confirmed => {
                let showtime = self
                    .retrying(
                        "cinema.GetShowtime",
                        Idempotent::ByBooking,
                        self.settings.upstream_retry,
                        || {
                            let mut client = self.cinema.clone();
                            let request =
                                self.request(GetShowtimeRequest { id: booking.showtime_id.to_string() });
                            async move { client.get_showtime(request).await }
                        },
                    )
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
                    .entry(SagaEntry::new("cancel", "started").detail(format!(
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
                this.checkpoint("cancel.claimed")?;
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

    /// Runs the booking's saga from its recorded status until it is terminal or held,
    /// telling this process's waiters (through `driving`) each state it reaches.
    async fn drive(&self, mut booking: Booking, driving: Option<&Driving>) -> Result<Booking, BookingError> {
        loop {
            if let Some(driving) = driving {
                driving.publish(&booking);
            }
            // Every step starts right after the write that took its lease.
            let leased_at = Instant::now();
            booking = match booking.status {
                BookingStatus::Charging => self.charge_step(booking, leased_at).await?,
                BookingStatus::Confirming => self.confirm_step(booking).await?,
                BookingStatus::Refunding => self.refund_step(booking).await?,
                BookingStatus::Cancelling => self.cancel_step(booking).await?,
                _ => return Ok(booking),
            };
        }
    }

    /// CHARGING: extend the hold once, charge under the booking's key, then (normally)
    /// confirm at once. What the step learns along the way rides along with the write
    /// that ends it. If the process dies before that write, recovery runs the step
    /// again, which is harmless: cinema answers a second extension as already done, and
    /// a charge repeated under the booking's key returns the first result.
    async fn charge_step(&self, booking: Booking, leased_at: Instant) -> Result<Booking, BookingError> {
        let record = if booking.hold_extended {
            Transition::to(BookingStatus::Charging)
        } else {
            self.extend_hold(&booking).await?
        };
        let method = booking.payment_method.clone().context("a charging booking has no payment method")?;
        let payment = match self.charge(&booking, &method).await {
            Ok(payment) => payment,
            Err(error @ BookingError::PaymentUnavailable) => {
                // Nothing charged: hand the booking back for another attempt.
                let change = record.retarget(BookingStatus::Held).step("charge", "unavailable");
                self.advance(&booking, change).await?;
                return Err(error);
            }
            Err(error @ BookingError::Upstream(_)) => {
                self.advance(&booking, record.retarget(BookingStatus::Held).step("charge", "refused"))
                    .await?;
                return Err(error);
            }
            // The outcome is unknown: leave it CHARGING for recovery to ask again.
            Err(error) => return Err(error),
        };
        self.checkpoint("pay.charged")?;
        match PaymentStatus::try_from(payment.status) {
            Ok(PaymentStatus::Succeeded) => {
                let record = record
                    .entry(SagaEntry::new("charge", "succeeded").detail(&payment.id))
                    .payment_id(&payment.id);
                if leased_at.elapsed() > self.settings.lease / 2 {
                    // A slow charge: record it, with a fresh lease, before confirming,
                    // so that recovery does not take over a live confirm.
                    return self.advance(&booking, record.retarget(BookingStatus::Confirming)).await;
                }
                self.confirm(booking, &payment.id, record).await
            }
            Ok(PaymentStatus::Declined) => {
                let released = self.release_seats(booking.showtime_id, booking.id).await;
                self.checkpoint("pay.declined_released")?;
                let reason = if payment.decline_reason.is_empty() {
                    "declined"
                } else {
                    payment.decline_reason.as_str()
                };
                let event = events::booking_payment_failed(&booking, reason, Utc::now());
                let change = record
                    .retarget(BookingStatus::PaymentFailed)
                    .entry(SagaEntry::new("charge", "declined").detail(reason))
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
        let extended = self
            .retrying("cinema.ExtendHold", Idempotent::ByBooking, self.settings.upstream_retry, || {
                let mut client = self.cinema.clone();
                let request = self.request(ExtendHoldRequest {
                    showtime_id: booking.showtime_id.to_string(),
                    booking_id: booking.id.to_string(),
                });
                async move { client.extend_hold(request).await }
            })
            .await;
        let (outcome, expires_at) = match extended {
            Ok(reply) => ("succeeded", reply.expires_at.as_ref().and_then(marquee_common::time::from_proto)),
            Err(status) => match marquee_common::ApiError::from_status(&status).code {
                ErrorCode::HoldExpired => ("hold_expired", None),
                ErrorCode::Conflict => ("already_extended", None),
                _ => {
                    tracing::warn!(booking.id = %booking.id, code = ?status.code(), message = status.message(), "cannot extend the hold");
                    ("error", None)
                }
            },
        };
        self.checkpoint("pay.extended")?;
        Ok(Transition::to(BookingStatus::Charging).step("extend_hold", outcome).hold_extended(expires_at))
    }

    /// Charges under the booking's key, retrying with backoff while payment answers
    /// UNAVAILABLE (a transient processor or transport failure) or ABORTED (this very
    /// charge still in flight). The key makes every retry return the first charge
    /// instead of making a second one.
    async fn charge(&self, booking: &Booking, method: &str) -> Result<Payment, BookingError> {
        let request = ChargeRequest {
            booking_id: booking.id.to_string(),
            amount: Some(events::money(&booking.total)),
            payment_method: method.to_owned(),
            idempotency_key: format!("booking:{}:charge", booking.id),
            user_id: booking.user_id.to_string(),
        };
        let charged = self
            .retrying("payment.Charge", Idempotent::ByKey, self.settings.charge_retry, || {
                let mut client = self.payments.clone();
                let request = self.request(request.clone());
                async move { client.charge(request).await }
            })
            .await;
        match charged {
            Ok(payment) => Ok(payment),
            // Still in flight elsewhere: its outcome is unknown, so do not claim nothing was charged.
            Err(status) if status.code() == Code::Aborted => {
                Err(BookingError::Conflict(PublicStatus::Held, BookingStatus::Charging))
            }
            Err(status) if status.code() == Code::Unavailable => Err(BookingError::PaymentUnavailable),
            Err(status) => Err(BookingError::upstream("payment.Charge", &status)),
        }
    }

    /// CONFIRMING (a charge recorded before its confirm): book the seats.
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
        self.checkpoint("confirm.start")?;
        let confirmed = self
            .retrying("cinema.ConfirmSeats", Idempotent::ByBooking, self.settings.upstream_retry, || {
                let mut client = self.cinema.clone();
                let request = self.request(ConfirmSeatsRequest {
                    showtime_id: booking.showtime_id.to_string(),
                    booking_id: booking.id.to_string(),
                    seat_ids: booking.seat_ids(),
                });
                async move { client.confirm_seats(request).await }
            })
            .await;
        match confirmed {
            Ok(_) => {
                self.checkpoint("pay.confirmed_seats")?;
                let event = events::booking_confirmed(&booking, payment_id, Utc::now());
                let change =
                    record.retarget(BookingStatus::Confirmed).step("confirm_seats", "succeeded").event(event);
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
                        .entry(SagaEntry::new("confirm_seats", "seat_unavailable").detail(seats))
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
        self.checkpoint("refund.start")?;
        let refund = booking.refund.clone().context("a refunding booking has no refund decided")?;
        let mut change = Transition::to(refund.cause.ends_in());
        if refund.amount.amount_minor() > 0 {
            let payment_id = booking.payment_id.clone().context("a refunding booking has no payment")?;
            let request = RefundRequest {
                payment_id,
                amount: Some(events::money(&refund.amount)),
                reason: match refund.cause {
                    RefundCause::SeatsLost => "seats lost after payment".to_owned(),
                    RefundCause::Cancelled => "booking cancelled".to_owned(),
                },
                idempotency_key: format!("booking:{}:refund", booking.id),
            };
            let refunded = self
                .retrying("payment.Refund", Idempotent::ByKey, self.settings.upstream_retry, || {
                    let mut client = self.payments.clone();
                    let request = self.request(request.clone());
                    async move { client.refund(request).await }
                })
                .await
                .map_err(|s| BookingError::upstream("payment.Refund", &s))?;
            self.checkpoint("refund.done")?;
            let refund_id = refunded.refund.map(|r| r.id).unwrap_or_default();
            change = change
                .entry(SagaEntry::new("refund", "succeeded").detail(&refund_id))
                .refunded(&refund_id, Utc::now());
        } else {
            change = change.step("refund", "nothing_due");
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
        self.retrying("cinema.CancelSeats", Idempotent::ByBooking, self.settings.upstream_retry, || {
            let mut client = self.cinema.clone();
            let request = self.request(CancelSeatsRequest {
                showtime_id: booking.showtime_id.to_string(),
                booking_id: booking.id.to_string(),
            });
            async move { client.cancel_seats(request).await }
        })
        .await
        .map_err(|s| BookingError::upstream("cinema.CancelSeats", &s))?;
        self.checkpoint("cancel.released")?;
        let refund_due = booking.payment_id.is_some()
            && booking.refund.as_ref().is_some_and(|r| r.amount.amount_minor() > 0);
        let change = if refund_due {
            Transition::to(BookingStatus::Refunding).step("release_seats", "succeeded")
        } else {
            let refund = booking.refund.as_ref().map(|r| &r.amount);
            let event = events::booking_cancelled(&booking, refund, Utc::now());
            Transition::to(BookingStatus::Cancelled).step("release_seats", "succeeded").event(event)
        };
        self.advance(&booking, change).await
    }

    /// A state change on a booking this call drives. If another driver moved it first
    /// (recovery, or a racing request), its outcome stands: a terminal booking is the
    /// answer, anything else is a conflict.
    async fn advance(&self, booking: &Booking, change: Transition) -> Result<Booking, BookingError> {
        let emits_event = change.emits_event();
        let target = change.target();
        let Some(updated) = self.store.transition(booking, change).await? else {
            let current = self.store.find(booking.id).await?.ok_or(BookingError::NotFound)?;
            tracing::info!(booking.id = %booking.id, status = %current.status, "another driver moved the booking first");
            return if current.status.is_terminal() { Ok(current) } else { Err(current.conflict()) };
        };
        if emits_event {
            self.outbox_written.notify_one();
        }
        if let Some(slot) =
            updated.slot.as_ref().filter(|_| booking.status.is_active_hold() && !target.is_active_hold())
        {
            self.free_slot(slot, updated.id).await;
        }
        Ok(updated)
    }

    /// Frees a booking's held seats. Failure is logged, not raised: the hold lapses
    /// by itself, so the caller's outcome does not depend on it.
    async fn release_seats(&self, showtime_id: ShowtimeId, booking_id: BookingId) -> bool {
        let released = self
            .retrying("cinema.ReleaseSeats", Idempotent::ByBooking, self.settings.upstream_retry, || {
                let mut client = self.cinema.clone();
                let request = self.request(ReleaseSeatsRequest {
                    showtime_id: showtime_id.to_string(),
                    booking_id: booking_id.to_string(),
                });
                async move { client.release_seats(request).await }
            })
            .await;
        match released {
            Ok(_) => true,
            Err(status) => {
                tracing::error!(
                    booking.id = %booking_id,
                    code = ?status.code(),
                    message = status.message(),
                    "cannot release seats; they stay held until the hold expires"
                );
                false
            }
        }
    }

    /// A leftover slot is reclaimed by the next claim, so failing here is only logged.
    async fn free_slot(&self, slot: &str, booking_id: BookingId) {
        if let Err(error) = self.store.free_slot(slot, booking_id).await {
            tracing::warn!(booking.id = %booking_id, error = format!("{error:#}"), "cannot free a hold slot");
        }
    }

    /// Expires overdue holds, then resumes sagas whose process died mid-step. Safe to
    /// run in every replica at once: each booking is claimed by a conditional update.
    /// No caller traced this work, so each booking handled is a trace of its own.
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        let now = Utc::now();
        for booking in self.store.overdue_holds(now, SWEEP_BATCH).await? {
            let span = tracing::info_span!("sweep.expire", booking.id = %booking.id);
            in_new_trace(self.expire(booking, now, &mut report).instrument(span)).await?;
        }
        for booking in self.store.stalled(Utc::now(), SWEEP_BATCH).await? {
            let span = tracing::info_span!("sweep.resume", booking.id = %booking.id);
            in_new_trace(self.resume(booking, &mut report).instrument(span)).await?;
        }
        for (booking_id, showtime_id) in self.store.pending_releases(SWEEP_BATCH).await? {
            let span = tracing::info_span!("sweep.release", booking.id = %booking_id);
            let released = in_new_trace(self.release_seats(showtime_id, booking_id).instrument(span)).await;
            if released {
                self.store.release_done(booking_id).await?;
                report.released_late += 1;
                tracing::info!(booking.id = %booking_id, "seats of a finished booking released");
            }
        }
        // One look-up and one update for the whole batch of slots, not two per slot.
        let claims = self.store.unchecked_slots(Utc::now(), SWEEP_BATCH).await?;
        let ids: Vec<BookingId> = claims.iter().map(|claim| claim.booking_id).collect();
        let written = self.store.existing(&ids).await?;
        let (checked, abandoned): (Vec<&SlotClaim>, Vec<&SlotClaim>) =
            claims.iter().partition(|claim| written.contains(&claim.booking_id));
        self.store.mark_slots_checked(&checked).await?;
        for claim in abandoned {
            let span = tracing::info_span!("sweep.slot", booking.id = %claim.booking_id);
            in_new_trace(self.release_abandoned(claim, &mut report).instrument(span)).await;
        }
        Ok(report)
    }

    /// Releases the seats first, so the expiry records how that went in its own
    /// write. The hold has lapsed, so cinema already lets anyone take the seats:
    /// releasing them early changes nothing for a pay that claims the booking first
    /// (its confirm re-acquires them if nobody took them, as for any lapsed hold).
    async fn expire(
        &self,
        booking: Booking,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> anyhow::Result<()> {
        if self.drivers.driver(booking.id).is_some() {
            // A pay of this process is claiming it right now; the next sweep looks again.
            return Ok(());
        }
        let released = self.release_seats(booking.showtime_id, booking.id).await;
        let event = events::booking_expired(&booking, now);
        let change = Transition::to(BookingStatus::Expired)
            .step("expire", "succeeded")
            .seats_released(released)
            .event(event);
        // Losing the claim means it was paid, cancelled or expired by another replica.
        let Some(expired) = self.store.transition(&booking, change).await? else { return Ok(()) };
        self.outbox_written.notify_one();
        report.expired += 1;
        if self.checkpoint("sweep.expired").is_err() {
            return Ok(());
        }
        if let Some(slot) = &expired.slot {
            self.free_slot(slot, expired.id).await;
        }
        tracing::info!(booking.id = %expired.id, "hold expired");
        Ok(())
    }

    async fn resume(&self, booking: Booking, report: &mut SweepReport) -> anyhow::Result<()> {
        let Some(driving) = self.drivers.enter(booking.id) else {
            // This process is driving it: its step is slow, not dead.
            return Ok(());
        };
        let status = booking.status;
        let claim = Transition::to(status).step("recover", "resumed");
        let Some(claimed) = self.store.transition(&booking, claim).await? else { return Ok(()) };
        report.resumed += 1;
        tracing::warn!(booking.id = %claimed.id, %status, "resuming a stalled saga");
        match self.drive(claimed, Some(&driving)).await {
            Ok(done) => {
                tracing::info!(booking.id = %done.id, status = %done.status, "stalled saga resumed")
            }
            Err(error) => {
                tracing::warn!(booking.id = %booking.id, error = %error, "stalled saga still unfinished")
            }
        }
        Ok(())
    }

    /// The hold died between claiming its slot and writing its booking: gives back
    /// whatever cinema may hold for it (idempotent by booking id), then the slot.
    async fn release_abandoned(&self, claim: &SlotClaim, report: &mut SweepReport) {
        if self.release_seats(claim.showtime_id, claim.booking_id).await {
            self.free_slot(&claim.slot, claim.booking_id).await;
            report.abandoned += 1;
            tracing::warn!(booking.id = %claim.booking_id, "released the seats of an abandoned hold");
        }
    }

    async fn visible(&self, id: BookingId, caller: Caller) -> Result<Booking, BookingError> {
        match self.store.find(id).await? {
            Some(booking) if caller.may_see(&booking) => Ok(booking),
            _ => Err(BookingError::NotFound),
        }
    }

    pub async fn get(&self, id: BookingId, caller: Caller) -> Result<Booking, BookingError> {
        self.visible(id, caller).await
    }

    /// One page, newest first, and the cursor of the next (if any).
    pub async fn list(&self, query: ListQuery) -> Result<(Vec<Booking>, Option<BookingId>), BookingError> {
        let (bookings, more) = self.store.list(&query).await?;
        let next = if more { bookings.last().map(|b| b.id) } else { None };
        Ok((bookings, next))
    }
}

impl Saga {
    /// Runs saga work on a task of its own, in the caller's trace, and waits for it. A
    /// gRPC handler is dropped when its caller gives up (deadline, disconnect); work it
    /// ran itself would stop halfway, leaving seats held for a booking never written or a
    /// step in flight until recovery takes it over after the lease, while the caller's
    /// retry finds the seats taken or has to wait. On its own task the work finishes, and
    /// a repeated pay waits for it here.
    ///
    /// Detached work outlives its callers, so it is bounded: with `max_in_flight` steps
    /// running, another is refused at once, before it writes anything.
    async fn detached<T, F>(&self, work: F) -> Result<T, BookingError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, BookingError>> + Send + 'static,
    {
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| BookingError::Busy)?;
        let work = async move {
            let result = work.await;
            drop(permit);
            result
        }
        .instrument(tracing::Span::current());
        let task = match marquee_common::trace::current() {
            Some(context) => tokio::spawn(context.scope(work)),
            None => tokio::spawn(work),
        };
        task.await.context("a saga task panicked")?
    }
}

/// Which errors of another service are worth repeating the same call for.
fn transient(status: &Status, kind: Idempotent) -> bool {
    match status.code() {
        // UNKNOWN and CANCELLED: the call was cut off mid-way (the callee died); both
        // kinds of call are safe to repeat.
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled => true,
        Code::Aborted => matches!(kind, Idempotent::ByKey),
        _ => false,
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

/// Whether a refused LockSeats may be explained by a concurrent retry of this very
/// request holding the seats. Holds are all or nothing, so such a retry holds every
/// seat asked for: a SEAT_UNAVAILABLE naming only some of them is somebody else's.
fn may_be_a_concurrent_retry(refused: &BookingError, request: &HoldRequest) -> bool {
    match refused {
        BookingError::Upstream(error) if error.code == ErrorCode::SeatUnavailable => {
            let taken = error.meta_list("seat_ids");
            request.seats.seats().iter().all(|seat| taken.iter().any(|t| t == seat.as_str()))
        }
        _ => true,
    }
}

fn replay(existing: Booking, request: &HoldRequest) -> Result<Booking, BookingError> {
    if existing.answers(request) { Ok(existing) } else { Err(BookingError::IdempotencyKeyReused) }
}

/// The booking cinema's answer describes; anything malformed there is cinema's bug.
fn held_booking(
    id: BookingId,
    request: &HoldRequest,
    locked: LockSeatsResponse,
    now: DateTime<Utc>,
    hold_ttl_seconds: i32,
) -> anyhow::Result<Booking> {
    let mut seats = locked
        .seats
        .into_iter()
        .map(|seat| {
            let price = seat.price.context("locked seat has no price")?;
            Ok(BookedSeat {
                seat_id: SeatId::parse(&seat.seat_id)?,
                category: seat.category,
                price: Money::parse(price.amount_minor, &price.currency)?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .context("cinema returned an invalid locked seat")?;
    seats.sort_by(|a, b| a.seat_id.cmp(&b.seat_id));
    anyhow::ensure!(
        seats.iter().map(|s| &s.seat_id).eq(request.seats.seats().iter()),
        "cinema locked other seats than requested"
    );
    let total = locked.total.context("cinema returned no total")?;
    let total =
        Money::parse(total.amount_minor, &total.currency).context("cinema returned an invalid total")?;
    let expires_at = locked
        .expires_at
        .as_ref()
        .and_then(marquee_common::time::from_proto)
        .unwrap_or_else(|| now + chrono::Duration::seconds(i64::from(hold_ttl_seconds)));
    Ok(Booking {
        id,
        user_id: request.user_id,
        showtime_id: request.showtime_id,
        idempotency_key: request.idempotency_key.clone(),
        seats,
        total,
        status: BookingStatus::Held,
        expires_at,
        created_at: now,
        updated_at: now,
        version: 1,
        payment_id: None,
        payment_method: None,
        hold_extended: false,
        refund: None,
        reason: None,
        history: Vec::new(),
        slot: None,
    })
}
