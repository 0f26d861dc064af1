//! Opaque tokens a client chooses or names: idempotency keys and payment methods.

use crate::{InvalidInput, invalid};

/// A client-chosen key that makes a retried mutation safe: 1 to 128 printable ASCII
/// characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(format!(
                "idempotency key must be 1 to {} printable ASCII characters",
                Self::MAX_LEN
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A payment method token such as `pm_card_ok` (the payment service decides what it
/// means): 1 to 64 ASCII letters, digits, `_` or `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod(String);

impl PaymentMethod {
    pub const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_LEN
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid { Ok(Self(raw.to_owned())) } else { Err(invalid("payment method is not a valid token")) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_bounded_printable_ascii() {
        assert!(IdempotencyKey::parse("order-42").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(IdempotencyKey::MAX_LEN)).is_ok());
        for raw in ["", "has space", "tab\t", "ü"] {
            assert!(IdempotencyKey::parse(raw).is_err(), "{raw:?}");
        }
        assert!(IdempotencyKey::parse(&"k".repeat(IdempotencyKey::MAX_LEN + 1)).is_err());
    }

    #[test]
    fn payment_methods_are_short_tokens() {
        assert_eq!(PaymentMethod::parse("pm_card_ok").unwrap().as_str(), "pm_card_ok");
        for raw in ["", "pm card", "pm.card", "{\"$ne\":1}"] {
            assert!(PaymentMethod::parse(raw).is_err(), "{raw:?}");
        }
        assert!(PaymentMethod::parse(&"p".repeat(PaymentMethod::MAX_LEN + 1)).is_err());
    }
}
