//! HoldSeats: have cinema lock the seats (within the user's limit of active holds on
//! the showtime, which cinema decides under the hold's locks) and write the booking HELD
//! with its `booking.held` event, giving the seats back when writing it fails. A repeat
//! of a hold (same user and key) waits its turn and answers the first one's booking.

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_kit::ErrorCode;
use marquee_proto::cinema::v1::LockSeatsResponse;

use super::{Checkpoint, Saga};
use crate::domain::{BookedSeat, Booking, BookingId, BookingStatus, HoldRequest, Money, SeatId, Step};
use crate::error::BookingError;
use crate::events;
use crate::store::{InsertError, SagaEntry};

impl Saga {
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

    /// Holds the seats and records the booking: the part of a hold that must not stop
    /// halfway because its caller gave up. A hold cinema refuses (most of them, in a
    /// rush; also one over the user's limit) writes nothing here.
    async fn hold_seats(&self, request: HoldRequest) -> Result<Booking, BookingError> {
        let booking_id = BookingId::generate();
        let (ttl, limit) = (self.settings.hold_ttl_seconds, self.settings.max_active_holds);
        let locked = self.cinema.lock_seats(&request, booking_id, ttl, limit).await;
        let locked = match locked {
            Ok(locked) => locked,
            Err(status) => {
                let refused = BookingError::upstream("cinema.LockSeats", &status);
                // Refused for a reason (seats taken, a seating rule): nothing was locked.
                // Cut off, timed out or failing inside, cinema may have committed the
                // lock all the same: give the seats back. Should even that fail, the
                // sweeper finds the hold among cinema's with no booking written and
                // releases it after the abandoned hold grace.
                if matches!(refused, BookingError::Unexpected(_) | BookingError::Unanswered(_)) {
                    self.release_seats(request.showtime_id, booking_id).await;
                }
                // A concurrent retry of this very request may have taken the seats first.
                if may_be_a_concurrent_retry(&refused, &request)
                    && let Some(existing) =
                        self.store.find_by_key(request.user_id, &request.idempotency_key).await?
                {
                    return replay(existing, &request);
                }
                if let BookingError::Unanswered(cause) = &refused {
                    // Not the client's fault, and nothing of it stays: say so, retryable.
                    tracing::warn!(booking.id = %booking_id, error = %cause, "cinema did not answer the hold; refused as busy");
                    return Err(BookingError::SeatsUnanswered);
                }
                return Err(at_the_limit(refused));
            }
        };

        // From here on the seats are ours: every failure must give them back. If this
        // process dies before the booking is written, the sweeper finds the hold among
        // cinema's with no booking and releases it (after the abandoned hold grace).
        self.checkpoint(Checkpoint::HoldLocked)?;
        let now = to_millis(Utc::now());
        let booking = match held_booking(booking_id, &request, locked, now, ttl) {
            Ok(booking) => booking,
            Err(error) => {
                self.release_seats(request.showtime_id, booking_id).await;
                return Err(error.into());
            }
        };
        let event = events::booking_held(&booking, now);
        let booking = Booking { deferred_events: vec![event.event_id.to_string()], ..booking };
        match self.store.insert(&booking, SagaEntry::new(Step::LockSeats, "succeeded"), &event).await {
            // Nothing for the relay yet: the event rides with the booking's next one.
            Ok(()) => {
                tracing::info!(booking.id = %booking.id, seats = booking.seats.len(), "seats held");
                Ok(booking)
            }
            Err(InsertError::DuplicateKey) => {
                // A concurrent request with the same key won the insert.
                self.release_seats(booking.showtime_id, booking.id).await;
                let existing = self
                    .store
                    .find_by_key(request.user_id, &request.idempotency_key)
                    .await?
                    .context("booking with a duplicate idempotency key vanished")?;
                replay(existing, &request)
            }
            Err(InsertError::Other(error)) => {
                // Should cinema not take the seats back, the sweeper releases them after
                // the abandoned hold grace (it finds the hold with no booking written).
                self.release_seats(booking.showtime_id, booking.id).await;
                Err(error.into())
            }
        }
    }
}

/// Cinema refuses a hold over the user's limit as CONFLICT with the `limit` in its
/// details; it is this service's HoldLimitReached (its own message and status).
fn at_the_limit(refused: BookingError) -> BookingError {
    match &refused {
        BookingError::Upstream(error) if error.code == ErrorCode::Conflict => {
            match error.metadata.get("limit").and_then(|limit| limit.parse().ok()) {
                Some(limit) => BookingError::HoldLimitReached(limit),
                None => refused,
            }
        }
        _ => refused,
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

/// `at` to the millisecond, as MongoDB keeps times: the booking a hold answers must
/// equal the one its repeat reads back.
fn to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at)
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
        .and_then(marquee_kit::time::from_proto)
        .map_or_else(|| now + chrono::Duration::seconds(i64::from(hold_ttl_seconds)), to_millis);
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
        pay_key: None,
        hold_extended: false,
        refund: None,
        reason: None,
        history: Vec::new(),
        deferred_events: Vec::new(),
    })
}
