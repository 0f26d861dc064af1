//! Client input parsed at the edge: resolvers turn GraphQL arguments into these
//! before anything reaches an upstream service.

pub use marquee_types::{
    BookingId, CinemaId, IdempotencyKey, MovieId, PaymentMethod, ScreenId, SeatSelection, ShowtimeId, UserId,
};

use crate::error::GatewayError;

const MAX_TEXT_LEN: usize = 200;

/// Client input parsed by the shared rules (`marquee-types`), refused as
/// BAD_USER_INPUT. Resolvers wrap every `parse` in it: `InvalidInput` is `Display`, and
/// a bare `?` would let async-graphql turn it into an error without `extensions.code`.
pub fn checked<T>(parsed: Result<T, marquee_types::InvalidInput>) -> Result<T, GatewayError> {
    parsed.map_err(GatewayError::from)
}

/// An id one of our services sent (a response, a verified token): a malformed one is
/// that service's bug, never the client's, so it is INTERNAL.
pub fn trusted<T: std::str::FromStr<Err = marquee_types::InvalidInput>>(
    raw: &str,
) -> Result<T, GatewayError> {
    raw.parse().map_err(|error: marquee_types::InvalidInput| {
        GatewayError::Unexpected(anyhow::anyhow!("an upstream sent a malformed id {raw:?}: {}", error.0))
    })
}

/// A short free-text filter (movie search, city), trimmed; empty means "no filter".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter(String);

impl Filter {
    pub fn parse(raw: Option<&str>, field: &str) -> Result<Self, GatewayError> {
        let text = raw.unwrap_or_default().trim();
        if text.chars().count() > MAX_TEXT_LEN {
            return Err(GatewayError::bad_input(format!("{field} is longer than {MAX_TEXT_LEN} characters")));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A phone number in E.164 form, checked here so that `register` refuses a bad number
/// before creating the account; the user service applies the same rule and stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, GatewayError> {
        let compact: String = raw.chars().filter(|c| !matches!(c, ' ' | '-' | '(' | ')')).collect();
        let digits = compact.strip_prefix('+').unwrap_or_default();
        if !(8..=15).contains(&digits.len())
            || !digits.chars().all(|c| c.is_ascii_digit())
            || digits.starts_with('0')
        {
            return Err(GatewayError::bad_input("phone must be in E.164 form, e.g. +4915112345678"));
        }
        Ok(Self(compact))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_our_services_must_be_uuids_or_it_is_their_bug() {
        let id = "0190f3c2-7a4e-7c3b-9f1e-2b8c4d5e6f70";
        assert_eq!(trusted::<MovieId>(id).unwrap().to_string(), id);
        assert!(matches!(trusted::<MovieId>("65f1c2a9e4b0a1b2c3d4e5f6"), Err(GatewayError::Unexpected(_))));
    }

    #[test]
    fn phones_are_e164() {
        assert_eq!(Phone::parse("+49 151 1234-5678").unwrap().into_inner(), "+4915112345678");
        for raw in ["", "4915112345678", "+0151123456", "+1234567", "+49abc12345678"] {
            assert!(Phone::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn filters_are_trimmed_and_bounded() {
        assert_eq!(Filter::parse(Some("  Berlin "), "city").unwrap().into_inner(), "Berlin");
        assert_eq!(Filter::parse(None, "city").unwrap(), Filter::default());
        assert!(Filter::parse(Some(&"x".repeat(MAX_TEXT_LEN + 1)), "search").is_err());
    }
}
