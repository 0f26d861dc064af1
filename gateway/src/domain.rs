//! Client input parsed at the edge: resolvers turn GraphQL arguments into these
//! before anything reaches an upstream service.

use std::fmt;

pub use marquee_types::{IdempotencyKey, PaymentMethod, SeatSelection};

use crate::error::GatewayError;

const MAX_ID_LEN: usize = 64;
const MAX_TEXT_LEN: usize = 200;

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

macro_rules! entity_id {
    ($name:ident, $what:literal) => {
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name(String);

        #[allow(dead_code, reason = "one macro for every id; not each id needs each accessor")]
        impl $name {
            pub fn parse(raw: &str) -> Result<Self, GatewayError> {
                if raw.is_empty() || raw.len() > MAX_ID_LEN || !raw.chars().all(is_id_char) {
                    return Err(GatewayError::bad_input(concat!("not a valid ", $what)));
                }
                Ok(Self(raw.to_owned()))
            }

            /// An id vouched for by our own services (a response, a verified token),
            /// not typed by a client.
            pub(crate) fn from_trusted(raw: String) -> Self {
                Self(raw)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

entity_id!(MovieId, "movie id");
entity_id!(CinemaId, "cinema id");
entity_id!(ShowtimeId, "showtime id");
entity_id!(BookingId, "booking id");
entity_id!(UserId, "user id");
entity_id!(ScreenId, "screen id");

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
    use marquee_common::ErrorCode;

    #[test]
    fn ids_accept_uuids_object_ids_and_seat_labels() {
        for raw in ["0190f3c2-7a4e-7c3b-9f1e-2b8c4d5e6f70", "65f1c2a9e4b0a1b2c3d4e5f6", "C7", "dune_2"] {
            assert_eq!(MovieId::parse(raw).unwrap().as_str(), raw);
        }
    }

    #[test]
    fn ids_reject_empty_long_and_odd_characters() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        for raw in ["", " a", "a b", "{\"$ne\":1}", "x/../y", long.as_str()] {
            assert_eq!(ShowtimeId::parse(raw).unwrap_err().code(), ErrorCode::BadUserInput, "{raw:?}");
        }
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
