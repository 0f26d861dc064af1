//! Validated charge input. Handlers parse the proto request into these types first;
//! everything deeper trusts them.

use std::fmt;

use uuid::Uuid;

/// Why some input was refused; the message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

fn invalid(message: impl Into<String>) -> InvalidInput {
    InvalidInput(message.into())
}

/// A payment id: a UUID, stored as the MongoDB `_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentId(Uuid);

impl PaymentId {
    pub fn generate() -> Self {
        // v7 ids are time-ordered, so the `_id` index grows at its right edge.
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Uuid::parse_str(raw.trim()).map(Self).map_err(|_| invalid("payment id must be a UUID"))
    }
}

impl fmt::Display for PaymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A short opaque token chosen by the caller: non-empty, bounded, printable ASCII.
fn parse_token(raw: &str, field: &str) -> Result<String, InvalidInput> {
    const MAX_LEN: usize = 128;
    if raw.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    if raw.len() > MAX_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(format!("{field} must be at most {MAX_LEN} printable ASCII characters")));
    }
    Ok(raw.to_owned())
}

/// The booking a charge pays for (the booking service's id, opaque here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingId(String);

impl BookingId {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        parse_token(raw, "booking_id").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The caller's key that makes a retried charge return the first result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        parse_token(raw, "idempotency_key").map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 4217-shaped currency code: three uppercase ASCII letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(invalid("currency must be three uppercase letters, e.g. EUR"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A positive amount in integer minor units of a currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, InvalidInput> {
        if amount_minor <= 0 {
            return Err(invalid("amount must be positive"));
        }
        Ok(Self { amount_minor, currency })
    }

    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    pub fn currency(&self) -> &Currency {
        &self.currency
    }
}

/// The simulated processor's test cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMethod {
    /// `pm_card_ok`: always approved.
    CardOk,
    /// `pm_card_declined`: always declined with `card_declined`.
    CardDeclined,
}

impl PaymentMethod {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        match raw {
            "pm_card_ok" => Ok(Self::CardOk),
            "pm_card_declined" => Ok(Self::CardDeclined),
            _ => Err(invalid("unsupported payment_method")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CardOk => "pm_card_ok",
            Self::CardDeclined => "pm_card_declined",
        }
    }
}

/// A fully validated charge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub booking_id: BookingId,
    pub amount: Money,
    pub method: PaymentMethod,
    pub idempotency_key: IdempotencyKey,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn currencies_are_three_uppercase_letters() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        for raw in ["", "eur", "EURO", "EU", "E1R", "ÉUR"] {
            assert!(Currency::parse(raw).is_err(), "{raw:?} was accepted");
        }
    }

    #[test]
    fn amounts_must_be_positive() {
        let eur = Currency::parse("EUR").unwrap();
        assert_eq!(Money::new(1, eur.clone()).unwrap().amount_minor(), 1);
        assert!(Money::new(0, eur.clone()).is_err());
        assert!(Money::new(-500, eur).is_err());
    }

    #[test]
    fn only_the_test_cards_are_known() {
        assert_eq!(PaymentMethod::parse("pm_card_ok").unwrap(), PaymentMethod::CardOk);
        assert_eq!(PaymentMethod::parse("pm_card_declined").unwrap().as_str(), "pm_card_declined");
        assert!(PaymentMethod::parse("pm_card_stolen").is_err());
        assert!(PaymentMethod::parse("").is_err());
    }

    #[test]
    fn tokens_are_required_and_bounded() {
        assert!(IdempotencyKey::parse("booking-1:pay").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(BookingId::parse(&"b".repeat(129)).is_err());
        assert!(BookingId::parse(&"b".repeat(128)).is_ok());
    }
}
