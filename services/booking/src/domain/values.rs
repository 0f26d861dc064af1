//! The validated values a booking is made of, from the shared `marquee-types` (one
//! rule each across the mesh), and the one of booking's own.

pub use marquee_types::{
    BookingId, IdempotencyKey, Money, PaymentMethod, SeatId, SeatSelection, ShowtimeId, UserId,
};

use super::InvalidInput;

/// The seats of one HoldSeats request: at most `SeatSelection::MAX_PER_BOOKING`.
pub fn hold_seats(raw: &[String]) -> Result<SeatSelection, InvalidInput> {
    SeatSelection::parse(raw, SeatSelection::MAX_PER_BOOKING)
}
