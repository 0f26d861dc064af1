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

/// The paying customer (the user service's id, opaque here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserId(String);

impl UserId {
    /// Empty means the caller did not say.
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, InvalidInput> {
        if raw.is_empty() { Ok(None) } else { parse_token(raw, "user_id").map(|id| Some(Self(id))) }
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

/// Active ISO 4217 alphabetic codes (funds and precious-metal codes excluded).
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD",
    "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY",
    "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP",
    "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR",
    "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
    "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR",
    "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD",
    "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency code, e.g. `EUR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(&'static str);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        ISO_4217
            .iter()
            .find(|code| **code == raw)
            .map(|code| Self(code))
            .ok_or_else(|| invalid("currency must be an ISO 4217 code, e.g. EUR"))
    }

    pub fn as_str(&self) -> &str {
        self.0
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
    fn currencies_are_iso_4217_codes() {
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        assert_eq!(Currency::parse("JPY").unwrap().as_str(), "JPY");
        for raw in ["", "eur", "EURO", "EU", "E1R", "ÉUR", "ABC", "XXX", "XAU"] {
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
        for method in PaymentMethod::ALL {
            assert_eq!(PaymentMethod::parse(method.as_str()).unwrap(), method);
        }
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

    #[test]
    fn refund_reasons_are_required_and_bounded() {
        assert_eq!(RefundReason::parse("  show cancelled ").unwrap().as_str(), "show cancelled");
        assert!(RefundReason::parse("   ").is_err());
        assert!(RefundReason::parse(&"r".repeat(201)).is_err());
        assert!(RefundReason::parse("line\nbreak").is_err());
    }
}
