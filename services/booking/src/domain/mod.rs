//! Validated booking input and the booking as the saga sees it. Handlers parse raw
//! proto strings into these types first; everything deeper trusts them.

mod booking;
mod history;
mod refund;
mod requests;
mod status;
mod values;

pub use self::booking::{BookedSeat, Booking};
pub use self::history::{SagaStep, Step};
pub use self::refund::{Refund, RefundCause, RefundPolicy};
pub use self::requests::{Caller, CancelRequest, HoldRequest, ListQuery, PayRequest, cancel_reason};
pub use self::status::{BookingStatus, PublicStatus};
pub use self::values::{
    BookingId, IdempotencyKey, Money, PaymentMethod, SeatId, SeatSelection, ShowtimeId, UserId, hold_seats,
};
pub use marquee_types::InvalidInput;
use marquee_types::invalid;
