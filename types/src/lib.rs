//! The values every Marquee process passes around, one rule each: ids, seats, money,
//! idempotency keys and payment method tokens. Each parses raw input (a proto field,
//! a GraphQL argument, a stored document) or refuses it with an `InvalidInput` whose
//! message is safe to show the client. The gateway and every service use these, so a
//! seat id valid at the edge is valid everywhere behind it.

mod ids;
mod money;
mod seats;
mod tokens;

pub use self::ids::{BookingId, CinemaId, MovieId, ScreenId, ShowtimeId, UserId};
pub use self::money::Money;
pub use self::seats::{SeatId, SeatSelection};
pub use self::tokens::{IdempotencyKey, PaymentMethod};

/// Why some input was refused; the message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// An `InvalidInput` saying `message`.
pub fn invalid(message: impl Into<String>) -> InvalidInput {
    InvalidInput(message.into())
}
