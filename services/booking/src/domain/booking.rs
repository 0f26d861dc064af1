//! The booking as the saga sees it: its seats, money, saga state and history, and
//! the questions the saga asks of it.

use chrono::{DateTime, Utc};

use super::{
    BookingId, BookingStatus, HoldRequest, IdempotencyKey, Money, PublicStatus, Refund, RefundCause,
    SagaStep, SeatId, ShowtimeId, UserId,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookedSeat {
    pub seat_id: SeatId,
    pub category: String,
    pub price: Money,
}

#[derive(Debug, Clone)]
pub struct Booking {
    pub id: BookingId,
    pub user_id: UserId,
    pub showtime_id: ShowtimeId,
    pub idempotency_key: IdempotencyKey,
    /// Sorted by seat id.
    pub seats: Vec<BookedSeat>,
    pub total: Money,
    pub status: BookingStatus,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every state change; saga steps claim the booking by it.
    pub version: i64,
    pub payment_id: Option<String>,
    /// Recorded when payment starts, so recovery can re-run the charge.
    pub payment_method: Option<String>,
    /// The idempotency key of the PayBooking that started the payment: a repeat with
    /// this key must name the same method.
    pub pay_key: Option<String>,
    /// Cinema extends a hold once; recorded so a resumed charge does not ask again.
    pub hold_extended: bool,
    pub refund: Option<Refund>,
    pub reason: Option<String>,
    pub history: Vec<SagaStep>,
    /// Events in the booking's outbox that are published only with its next event (the
    /// hold's `booking.held`): the next transition that writes an event moves them onto
    /// the relay's pending list ahead of it.
    pub deferred_events: Vec<String>,
}

impl Booking {
    /// Why a request that does not apply to this booking now was refused.
    pub fn conflict(&self) -> crate::error::BookingError {
        crate::error::BookingError::Conflict(self.public_status(), self.status)
    }

    /// A payment's steps are running: the charge, the confirm, or the full refund when
    /// the seats were lost after the charge (a cancellation's refund is not a payment's).
    pub fn is_paying(&self) -> bool {
        match self.status {
            BookingStatus::Charging | BookingStatus::Confirming => true,
            BookingStatus::Refunding => {
                self.refund.as_ref().is_some_and(|r| r.cause == RefundCause::SeatsLost)
            }
            _ => false,
        }
    }

    /// The status clients see.
    pub fn public_status(&self) -> PublicStatus {
        PublicStatus::of(self.status, self.refund.as_ref().map(|r| r.cause))
    }

    /// True when `request` asks for exactly what this booking holds, so a retry
    /// with the same idempotency key may return it.
    pub fn answers(&self, request: &HoldRequest) -> bool {
        self.user_id == request.user_id
            && self.showtime_id == request.showtime_id
            && self.seats.iter().map(|s| &s.seat_id).eq(request.seats.seats().iter())
    }

    pub fn seat_ids(&self) -> Vec<String> {
        self.seats.iter().map(|s| s.seat_id.as_str().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::domain::SeatSelection;

    fn strings(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A HELD booking of 20.00 EUR for nobody in particular, no seats: tests set the rest.
    fn held_booking() -> Booking {
        Booking {
            id: BookingId::generate(),
            user_id: UserId::parse(&Uuid::new_v4().to_string()).unwrap(),
            showtime_id: ShowtimeId::parse(&Uuid::new_v4().to_string()).unwrap(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            seats: Vec::new(),
            total: Money::parse(2000, "EUR").unwrap(),
            status: BookingStatus::Held,
            expires_at: Utc::now(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            version: 1,
            payment_id: None,
            payment_method: None,
            pay_key: None,
            hold_extended: false,
            refund: None,
            reason: None,
            history: Vec::new(),
            deferred_events: Vec::new(),
        }
    }

    #[test]
    fn a_booking_answers_only_the_same_request() {
        let user_id = UserId::parse(&Uuid::new_v4().to_string()).unwrap();
        let showtime_id = ShowtimeId::parse(&Uuid::new_v4().to_string()).unwrap();
        let price = Money::parse(1000, "EUR").unwrap();
        let seat = |id: &str| BookedSeat {
            seat_id: SeatId::parse(id).unwrap(),
            category: "standard".into(),
            price: price.clone(),
        };
        let booking = Booking { user_id, showtime_id, seats: vec![seat("A1"), seat("A2")], ..held_booking() };
        let request = |seats: &[&str]| HoldRequest {
            user_id,
            showtime_id,
            seats: SeatSelection::parse(&strings(seats), SeatSelection::MAX_PER_BOOKING).unwrap(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
        };
        assert!(booking.answers(&request(&["A2", "A1"])));
        assert!(!booking.answers(&request(&["A1"])));
        assert!(!booking.answers(&request(&["A1", "A3"])));
    }

    #[test]
    fn only_the_steps_of_a_payment_count_as_paying() {
        let booking = |status, cause: Option<RefundCause>| {
            let held = held_booking();
            let refund = cause.map(|cause| Refund {
                cause,
                amount: held.total.clone(),
                fee: held.total.with_amount(0),
                refund_id: None,
                at: None,
            });
            Booking { status, refund, ..held }
        };
        assert!(booking(BookingStatus::Charging, None).is_paying());
        assert!(booking(BookingStatus::Confirming, None).is_paying());
        assert!(booking(BookingStatus::Refunding, Some(RefundCause::SeatsLost)).is_paying());
        assert!(!booking(BookingStatus::Refunding, Some(RefundCause::Cancelled)).is_paying());
        assert!(!booking(BookingStatus::Cancelling, None).is_paying());
        assert!(!booking(BookingStatus::Held, None).is_paying());
        assert!(!booking(BookingStatus::Confirmed, None).is_paying());
    }
}
