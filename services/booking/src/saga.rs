//! The booking saga: hold seats, charge, confirm, and compensate when a step fails.
//!
//! Every state change is one conditional update on the booking's `version`, so two
//! callers can never both run a step, and each step's effects on other services are
//! idempotent (the charge key is derived from the booking), so a retry is harmless.
//! A charge the payment service answers UNAVAILABLE is retried under that same key
//! with backoff; if it keeps failing the booking goes back to HELD, nothing charged.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_common::ErrorCode;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::cinema::v1::{
    ConfirmSeatsRequest, LockSeatsRequest, LockSeatsResponse, ReleaseSeatsRequest,
};
use marquee_proto::payment::v1::payment_service_client::PaymentServiceClient;
use marquee_proto::payment::v1::{ChargeRequest, Payment, PaymentStatus};
use marquee_proto::user::v1::GetUserRequest;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use tokio::sync::Notify;
use tonic::Code;
use tonic::transport::Channel;

use crate::domain::{
    BookedSeat, Booking, BookingId, BookingStatus, HoldRequest, Money, PayRequest, PaymentMethod, SeatId,
    ShowtimeId, UserId,
};
use crate::error::BookingError;
use crate::events;
use crate::store::{BookingStore, InsertError, SagaEntry, Transition};

/// The orchestrator and the clients of the services it coordinates.
#[derive(Clone)]
pub struct Saga {
    store: BookingStore,
    users: UserServiceClient<Channel>,
    cinema: CinemaServiceClient<Channel>,
    payments: PaymentServiceClient<Channel>,
    hold_ttl_seconds: i32,
    charge_retry: ChargeRetry,
    /// Wakes the outbox relay as soon as an event is written.
    outbox_written: Arc<Notify>,
}

/// How often, and how patiently, a transiently failing charge is retried.
#[derive(Debug, Clone, Copy)]
pub struct ChargeRetry {
    /// Calls in total, at least one.
    pub attempts: u32,
    /// Wait before the first retry; doubles after each.
    pub first_backoff: Duration,
}

impl Saga {
    pub fn new(
        store: BookingStore,
        users: UserServiceClient<Channel>,
        cinema: CinemaServiceClient<Channel>,
        payments: PaymentServiceClient<Channel>,
        hold_ttl_seconds: i32,
        charge_retry: ChargeRetry,
        outbox_written: Arc<Notify>,
    ) -> Self {
        Self { store, users, cinema, payments, hold_ttl_seconds, charge_retry, outbox_written }
    }

    pub async fn hold(&self, request: HoldRequest) -> Result<Booking, BookingError> {
        if let Some(existing) = self.store.find_by_key(request.user_id, &request.idempotency_key).await? {
            return replay(existing, &request);
        }
        self.users
            .clone()
            .get_user(GetUserRequest { id: request.user_id.to_string() })
            .await
            .map_err(|s| BookingError::upstream("user.GetUser", &s))?;

        let booking_id = BookingId::generate();
        let locked = self
            .cinema
            .clone()
            .lock_seats(LockSeatsRequest {
                showtime_id: request.showtime_id.to_string(),
                seat_ids: request.seats.seats().iter().map(|s| s.as_str().to_owned()).collect(),
                booking_id: booking_id.to_string(),
                ttl_seconds: self.hold_ttl_seconds,
            })
            .await
            .map_err(|s| BookingError::upstream("cinema.LockSeats", &s))?
            .into_inner();

        // From here on the seats are ours: every failure must give them back.
        let now = Utc::now();
        let booking = match held_booking(booking_id, &request, locked, now, self.hold_ttl_seconds) {
            Ok(booking) => booking,
            Err(error) => {
                self.release_seats(request.showtime_id, booking_id).await;
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
                self.release_seats(request.showtime_id, booking_id).await;
                let existing = self
                    .store
                    .find_by_key(request.user_id, &request.idempotency_key)
                    .await?
                    .context("booking with a duplicate idempotency key vanished")?;
                replay(existing, &request)
            }
            Err(InsertError::Other(error)) => {
                self.release_seats(request.showtime_id, booking_id).await;
                Err(error.into())
            }
        }
    }

    pub async fn pay(&self, request: PayRequest) -> Result<Booking, BookingError> {
        let booking = self.owned(request.booking_id, request.user_id).await?;
        match booking.status {
            BookingStatus::Held => {}
            BookingStatus::Charging => return Err(BookingError::PaymentInProgress(booking.status)),
            // Paying a finished booking again answers with its outcome.
            _ => return Ok(booking),
        }
        if booking.expires_at <= Utc::now() {
            return Err(BookingError::HoldExpired);
        }

        let claim = Transition::to(BookingStatus::Charging)
            .step("charge", "started")
            .payment_method(request.payment_method.as_str());
        let Some(booking) = self.store.transition(&booking, claim).await? else {
            return self.lost_race(booking.id).await;
        };

        let payment = match self.charge(&booking, &request.payment_method).await {
            Ok(payment) => payment,
            Err(error) => {
                // The charge key makes a later retry safe, so hand the booking back for one.
                let outcome =
                    if matches!(error, BookingError::PaymentUnavailable) { "unavailable" } else { "error" };
                self.step(&booking, Transition::to(BookingStatus::Held).step("charge", outcome)).await?;
                return Err(error);
            }
        };
        match PaymentStatus::try_from(payment.status) {
            Ok(PaymentStatus::Succeeded) => self.confirm(booking, payment).await,
            Ok(PaymentStatus::Declined) => self.compensate_decline(booking, payment).await,
            other => {
                self.step(&booking, Transition::to(BookingStatus::Held).step("charge", "error")).await?;
                Err(anyhow::anyhow!("payment {} came back in status {other:?}", payment.id).into())
            }
        }
    }

    /// Charges under the booking's key, retrying with backoff while payment answers
    /// UNAVAILABLE (a transient processor or transport failure) or ABORTED (this very
    /// charge still in flight). The key makes every retry return the first charge
    /// instead of making a second one.
    async fn charge(&self, booking: &Booking, method: &PaymentMethod) -> Result<Payment, BookingError> {
        let request = ChargeRequest {
            booking_id: booking.id.to_string(),
            amount: Some(events::money(&booking.total)),
            payment_method: method.as_str().to_owned(),
            idempotency_key: format!("booking:{}:charge", booking.id),
            user_id: booking.user_id.to_string(),
        };
        let mut backoff = self.charge_retry.first_backoff;
        let mut last = Code::Unavailable;
        for attempt in 1..=self.charge_retry.attempts {
            match self.payments.clone().charge(request.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if matches!(status.code(), Code::Unavailable | Code::Aborted) => {
                    tracing::warn!(
                        booking.id = %booking.id,
                        attempt,
                        code = ?status.code(),
                        message = status.message(),
                        "charge failed transiently"
                    );
                    last = status.code();
                    if attempt < self.charge_retry.attempts {
                        tokio::time::sleep(backoff).await;
                        backoff *= 2;
                    }
                }
                Err(status) => return Err(BookingError::upstream("payment.Charge", &status)),
            }
        }
        if last == Code::Aborted {
            // Still in flight elsewhere: its outcome is unknown, so do not claim nothing was charged.
            return Err(BookingError::PaymentInProgress(BookingStatus::Charging));
        }
        Err(BookingError::PaymentUnavailable)
    }

    async fn confirm(&self, booking: Booking, payment: Payment) -> Result<Booking, BookingError> {
        let confirmed = self
            .cinema
            .clone()
            .confirm_seats(ConfirmSeatsRequest {
                showtime_id: booking.showtime_id.to_string(),
                booking_id: booking.id.to_string(),
                seat_ids: booking.seat_ids(),
            })
            .await;
        match confirmed {
            Ok(_) => {
                let event = events::booking_confirmed(&booking, &payment.id, Utc::now());
                let change = Transition::to(BookingStatus::Confirmed)
                    .step("charge", "succeeded")
                    .step("confirm_seats", "succeeded")
                    .payment_id(&payment.id)
                    .event(event);
                let booking = self.step(&booking, change).await?;
                tracing::info!(booking.id = %booking.id, payment.id = %payment.id, "booking confirmed");
                Ok(booking)
            }
            Err(status) => match BookingError::upstream("cinema.ConfirmSeats", &status) {
                BookingError::Upstream(lost) if lost.code == ErrorCode::SeatUnavailable => {
                    tracing::error!(
                        booking.id = %booking.id,
                        payment.id = %payment.id,
                        seat_ids = ?lost.meta_list("seat_ids"),
                        "PAID BUT SEATS LOST: booking marked FAILED; the payment needs a refund"
                    );
                    let change = Transition::to(BookingStatus::Failed)
                        .step("charge", "succeeded")
                        .step("confirm_seats", "seat_unavailable")
                        .payment_id(&payment.id);
                    Ok(self.step(&booking, change).await?)
                }
                error => {
                    // Paid but not confirmed: back to HELD so a retry re-runs the
                    // (idempotent) charge and the confirmation.
                    let change = Transition::to(BookingStatus::Held)
                        .step("charge", "succeeded")
                        .step("confirm_seats", "error")
                        .payment_id(&payment.id);
                    self.step(&booking, change).await?;
                    Err(error)
                }
            },
        }
    }

    async fn compensate_decline(&self, booking: Booking, payment: Payment) -> Result<Booking, BookingError> {
        let released = self.release_seats(booking.showtime_id, booking.id).await;
        let reason =
            if payment.decline_reason.is_empty() { "declined" } else { payment.decline_reason.as_str() };
        let event = events::booking_payment_failed(&booking, reason, Utc::now());
        let change = Transition::to(BookingStatus::PaymentFailed)
            .step("charge", "declined")
            .step("release_seats", if released { "succeeded" } else { "failed" })
            .payment_id(&payment.id)
            .event(event);
        let booking = self.step(&booking, change).await?;
        tracing::info!(booking.id = %booking.id, payment.id = %payment.id, reason, "payment declined");
        Ok(booking)
    }

    /// A state change on a booking this call has claimed; losing it means the
    /// claim was broken, which the version check should make impossible.
    async fn step(&self, booking: &Booking, change: Transition) -> anyhow::Result<Booking> {
        let emits_event = change.emits_event();
        let updated = self.store.transition(booking, change).await?.with_context(|| {
            format!("booking {} changed while this call held its payment step", booking.id)
        })?;
        if emits_event {
            self.outbox_written.notify_one();
        }
        Ok(updated)
    }

    async fn lost_race(&self, id: BookingId) -> Result<Booking, BookingError> {
        let current = self.store.find(id).await?.ok_or(BookingError::NotFound)?;
        if current.status.is_terminal() {
            Ok(current)
        } else {
            Err(BookingError::PaymentInProgress(current.status))
        }
    }

    /// Frees a booking's seats. Failure is logged, not raised: the hold expires by
    /// itself, so the caller's outcome does not depend on it.
    async fn release_seats(&self, showtime_id: ShowtimeId, booking_id: BookingId) -> bool {
        let released = self
            .cinema
            .clone()
            .release_seats(ReleaseSeatsRequest {
                showtime_id: showtime_id.to_string(),
                booking_id: booking_id.to_string(),
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

    async fn owned(&self, id: BookingId, user_id: UserId) -> Result<Booking, BookingError> {
        match self.store.find(id).await? {
            Some(booking) if booking.user_id == user_id => Ok(booking),
            _ => Err(BookingError::NotFound),
        }
    }

    pub async fn get(&self, id: BookingId, user_id: UserId) -> Result<Booking, BookingError> {
        self.owned(id, user_id).await
    }

    pub async fn list(&self, user_id: UserId) -> Result<Vec<Booking>, BookingError> {
        Ok(self.store.list_for_user(user_id).await?)
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
        version: 1,
        payment_id: None,
    })
}
