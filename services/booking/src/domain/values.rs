//! The validated values a booking is made of: ids, seats, the client's idempotency
//! key, the payment method token and money. Each parses raw input or refuses it.

use std::collections::BTreeSet;
use std::fmt;

use uuid::Uuid;

use super::{InvalidInput, invalid};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(Uuid);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
                Uuid::parse_str(raw.trim())
                    .map(Self)
                    .map_err(|_| invalid(concat!($what, " must be a UUID")))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// The user service's id of the customer.
    UserId,
    "user_id"
);
uuid_id!(
    /// The cinema service's id of a showtime.
    ShowtimeId,
    "showtime_id"
);
uuid_id!(
    /// A booking id; also the id cinema holds seats under and payment charges for.
    BookingId,
    "booking_id"
);

impl BookingId {
    pub fn generate() -> Self {
        // v7 ids are time-ordered, so the `_id` index grows at its right edge.
        Self(Uuid::now_v7())
    }
}

/// A seat label within a screen, e.g. "C7".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeatId(String);

impl SeatId {
    const MAX_LEN: usize = 16;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let seat = raw.trim();
        let valid = !seat.is_empty()
            && seat.len() <= Self::MAX_LEN
            && seat.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid { Ok(Self(seat.to_owned())) } else { Err(invalid(format!("seat id {raw:?} is not valid"))) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The distinct seats of one hold, sorted, between 1 and [`SeatSelection::MAX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatSelection(Vec<SeatId>);

impl SeatSelection {
    pub const MAX: usize = 10;

    pub fn parse(raw: &[String]) -> Result<Self, InvalidInput> {
        if raw.is_empty() {
            return Err(invalid("select at least one seat"));
        }
        if raw.len() > Self::MAX {
            return Err(invalid(format!("at most {} seats per booking", Self::MAX)));
        }
        let seats = raw.iter().map(|s| SeatId::parse(s)).collect::<Result<BTreeSet<_>, _>>()?;
        if seats.len() != raw.len() {
            return Err(invalid("seat ids must be distinct"));
        }
        Ok(Self(seats.into_iter().collect()))
    }

    pub fn seats(&self) -> &[SeatId] {
        &self.0
    }
}

/// The client's key for retrying HoldSeats safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    const MAX_LEN: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.trim().is_empty() {
            return Err(invalid("idempotency_key is required"));
        }
        if raw.len() > Self::MAX_LEN || raw.chars().any(char::is_control) {
            return Err(invalid("idempotency_key is not valid"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque payment method token (e.g. `pm_card_ok`); the payment service judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod(String);

impl PaymentMethod {
    const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let method = raw.trim();
        if method.is_empty() {
            return Err(invalid("payment_method is required"));
        }
        if method.len() > Self::MAX_LEN || !method.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid("payment_method is not valid"));
        }
        Ok(Self(method.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Money in integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    amount_minor: i64,
    currency: String,
}

impl Money {
    pub fn parse(amount_minor: i64, currency: &str) -> Result<Self, InvalidInput> {
        if amount_minor < 0 {
            return Err(invalid("amount must not be negative"));
        }
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(invalid(format!("currency {currency:?} is not an ISO 4217 code")));
        }
        Ok(Self { amount_minor, currency: currency.to_owned() })
    }

    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The same currency, another (non-negative) amount.
    pub fn with_amount(&self, amount_minor: i64) -> Self {
        Self { amount_minor: amount_minor.max(0), currency: self.currency.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn seat_selection_is_sorted_distinct_and_bounded() {
        let seats = SeatSelection::parse(&strings(&["C7", "A1"])).unwrap();
        assert_eq!(seats.seats().iter().map(SeatId::as_str).collect::<Vec<_>>(), ["A1", "C7"]);
        assert!(SeatSelection::parse(&[]).is_err());
        assert!(SeatSelection::parse(&strings(&["A1", "A1"])).is_err());
        assert!(SeatSelection::parse(&strings(&["A1", "bad seat"])).is_err());
        let eleven: Vec<String> = (1..=11).map(|n| format!("A{n}")).collect();
        assert!(SeatSelection::parse(&eleven).is_err());
        assert!(SeatSelection::parse(&eleven[..10]).is_ok());
    }

    #[test]
    fn ids_keys_and_money_are_validated() {
        assert!(UserId::parse("not-a-uuid").is_err());
        assert!(BookingId::parse(&BookingId::generate().to_string()).is_ok());
        assert!(IdempotencyKey::parse("  ").is_err());
        assert!(IdempotencyKey::parse("key-1").is_ok());
        assert!(PaymentMethod::parse("pm card").is_err());
        assert!(Money::parse(-1, "EUR").is_err());
        assert!(Money::parse(100, "eur").is_err());
        assert_eq!(Money::parse(1250, "EUR").unwrap().amount_minor(), 1250);
    }
}
