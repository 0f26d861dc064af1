//! Validated charge input. Handlers parse the proto request into these types first;
//! everything deeper trusts them.

use std::fmt;

use uuid::Uuid;

use marquee_types::invalid;
pub use marquee_types::{BookingId, IdempotencyKey, InvalidInput, Money, UserId};

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

/// A user id, or `None` when the field is empty (the caller did not say).
pub fn optional_user(raw: &str) -> Result<Option<UserId>, InvalidInput> {
    if raw.is_empty() { Ok(None) } else { UserId::parse(raw).map(Some) }
}

/// An amount to charge or refund: money, and more than nothing.
pub fn positive(money: Money) -> Result<Money, InvalidInput> {
    if money.amount_minor() > 0 { Ok(money) } else { Err(invalid("amount must be positive")) }
}

/// The simulated processor's test cards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMethod {
    /// `pm_card_ok`: always approved.
    CardOk,
    /// `pm_card_declined`: always declined with `card_declined`.
    CardDeclined,
    /// `pm_card_insufficient_funds`: always declined with `insufficient_funds`.
    CardInsufficientFunds,
    /// `pm_card_error`: the processor always fails transiently.
    CardError,
    /// `pm_card_slow`: approved after the configured delay.
    CardSlow,
}

impl PaymentMethod {
    const ALL: [Self; 5] =
        [Self::CardOk, Self::CardDeclined, Self::CardInsufficientFunds, Self::CardError, Self::CardSlow];

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Self::ALL
            .into_iter()
            .find(|method| method.as_str() == raw)
            .ok_or_else(|| invalid("unsupported payment_method"))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CardOk => "pm_card_ok",
            Self::CardDeclined => "pm_card_declined",
            Self::CardInsufficientFunds => "pm_card_insufficient_funds",
            Self::CardError => "pm_card_error",
            Self::CardSlow => "pm_card_slow",
        }
    }
}

/// A fully validated charge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub booking_id: BookingId,
    pub user_id: Option<UserId>,
    pub amount: Money,
    pub method: PaymentMethod,
    pub idempotency_key: IdempotencyKey,
}

/// Why money goes back: free text for people, bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReason(String);

impl RefundReason {
    const MAX_CHARS: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let reason = raw.trim();
        if reason.is_empty() {
            return Err(invalid("reason is required"));
        }
        if reason.chars().count() > Self::MAX_CHARS || reason.chars().any(char::is_control) {
            return Err(invalid(format!("reason must be at most {} printable characters", Self::MAX_CHARS)));
        }
        Ok(Self(reason.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A fully validated refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub payment_id: PaymentId,
    pub amount: Money,
    pub reason: RefundReason,
    pub idempotency_key: IdempotencyKey,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn amounts_must_be_positive() {
        assert_eq!(positive(Money::parse(1, "EUR").unwrap()).unwrap().amount_minor(), 1);
        assert!(positive(Money::parse(0, "EUR").unwrap()).is_err());
    }

    #[test]
    fn only_the_test_cards_are_known() {
        assert_eq!(PaymentMethod::parse("pm_card_ok").unwrap(), PaymentMethod::CardOk);
        assert_eq!(PaymentMethod::parse("pm_card_declined").unwrap().as_str(), "pm_card_declined");
        for method in PaymentMethod::ALL {
            assert_eq!(PaymentMethod::parse(method.as_str()).unwrap(), method);
        }
        assert!(PaymentMethod::parse("pm_card_stolen").is_err());
        assert!(PaymentMethod::parse("").is_err());
    }

    #[test]
    fn a_user_is_optional_but_a_given_one_is_a_uuid() {
        assert_eq!(optional_user("").unwrap(), None);
        let id = UserId::generate();
        assert_eq!(optional_user(&id.to_string()).unwrap(), Some(id));
        assert!(optional_user("user-1").is_err());
    }

    #[test]
    fn refund_reasons_are_required_and_bounded() {
        assert_eq!(RefundReason::parse("  show cancelled ").unwrap().as_str(), "show cancelled");
        assert!(RefundReason::parse("   ").is_err());
        assert!(RefundReason::parse(&"r".repeat(201)).is_err());
        assert!(RefundReason::parse("line\nbreak").is_err());
    }
}
