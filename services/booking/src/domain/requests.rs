//! The validated requests the saga serves (hold, pay, cancel, list) and who asks.

use super::{
    Booking, BookingId, IdempotencyKey, InvalidInput, PaymentMethod, PublicStatus, SeatSelection, ShowtimeId,
    UserId, invalid,
};

/// A validated HoldSeats request.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub user_id: UserId,
    pub showtime_id: ShowtimeId,
    pub seats: SeatSelection,
    pub idempotency_key: IdempotencyKey,
}

/// A validated PayBooking request.
#[derive(Debug, Clone)]
pub struct PayRequest {
    pub booking_id: BookingId,
    pub user_id: UserId,
    pub payment_method: PaymentMethod,
    pub idempotency_key: IdempotencyKey,
}

/// Who asks: a user reads and cancels only their own bookings, an admin any.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: UserId,
    pub admin: bool,
}

impl Caller {
    pub fn may_see(&self, booking: &Booking) -> bool {
        self.admin || booking.user_id == self.user_id
    }
}

/// A validated CancelBooking request.
#[derive(Debug, Clone)]
pub struct CancelRequest {
    pub booking_id: BookingId,
    pub caller: Caller,
    pub reason: Option<String>,
}

/// A validated ListBookings request: one page, newest first.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub user_id: UserId,
    pub statuses: Vec<PublicStatus>,
    pub showtime_id: Option<ShowtimeId>,
    pub page_size: u32,
    /// Bookings older than this one (ids are time-ordered).
    pub after: Option<BookingId>,
}

impl ListQuery {
    pub const DEFAULT_PAGE: u32 = 20;
    pub const MAX_PAGE: u32 = 100;

    pub fn page_size(raw: i32) -> Result<u32, InvalidInput> {
        match u32::try_from(raw) {
            Ok(0) => Ok(Self::DEFAULT_PAGE),
            Ok(n) => Ok(n.min(Self::MAX_PAGE)),
            Err(_) => Err(invalid("page_size must not be negative")),
        }
    }
}

/// Parses a cancellation reason: optional, one line, bounded.
pub fn cancel_reason(raw: &str) -> Result<Option<String>, InvalidInput> {
    let reason = raw.trim();
    if reason.is_empty() {
        return Ok(None);
    }
    if reason.len() > 200 || reason.chars().any(char::is_control) {
        return Err(invalid("reason must be one line of at most 200 bytes"));
    }
    Ok(Some(reason.to_owned()))
}
