//! The ticket's vocabulary, parsed at the edge, and the part of a check-in decided
//! from the code alone (no database): signature, showtime and validity window.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::TicketClaims;

pub use marquee_types::InvalidInput;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TicketStatus {
    Valid,
    CheckedIn,
    Revoked,
}

/// What one scan at the door comes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    Admitted,
    AlreadyCheckedIn,
    Revoked,
    /// Malformed, unknown key, bad signature, or no such ticket.
    Invalid,
    WrongShowtime,
    NotYetValid,
    Expired,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admitted => "ADMITTED",
            Self::AlreadyCheckedIn => "ALREADY_CHECKED_IN",
            Self::Revoked => "REVOKED",
            Self::Invalid => "INVALID",
            Self::WrongShowtime => "WRONG_SHOWTIME",
            Self::NotYetValid => "NOT_YET_VALID",
            Self::Expired => "EXPIRED",
        }
    }
}

/// A UUID-shaped id (booking, showtime, ticket).
pub fn parse_uuid(raw: &str, what: &str) -> Result<Uuid, InvalidInput> {
    Uuid::parse_str(raw.trim()).map_err(|_| InvalidInput(format!("{what} {raw:?} is not a UUID")))
}

/// Fixed by the scanning device per scan; a retried upload repeats it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nonce(String);

impl Nonce {
    pub const MIN: usize = 8;
    pub const MAX: usize = 128;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let ok = (Self::MIN..=Self::MAX).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(InvalidInput(format!(
                "nonce must be {} to {} printable ASCII characters",
                Self::MIN,
                Self::MAX
            )));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The outcome decided by a verified code alone, or `None` when only the ticket's
/// state can tell (admitted, already checked in, revoked). The window is inclusive
/// of `valid_from` and exclusive of `valid_until`.
pub fn screen(claims: &TicketClaims, showtime_id: Uuid, at: DateTime<Utc>) -> Option<Outcome> {
    if claims.showtime_id != showtime_id {
        Some(Outcome::WrongShowtime)
    } else if at < claims.valid_from {
        Some(Outcome::NotYetValid)
    } else if at >= claims.valid_until {
        Some(Outcome::Expired)
    } else {
        None
    }
}

/// When a ticket for a show admits: from `admit_before` ahead of its start until it ends.
pub fn validity(
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    admit_before: chrono::Duration,
) -> (DateTime<Utc>, DateTime<Utc>) {
    (starts_at - admit_before, ends_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(showtime: Uuid) -> TicketClaims {
        TicketClaims {
            ticket_id: Uuid::new_v4(),
            booking_id: Uuid::new_v4(),
            showtime_id: showtime,
            seat_id: "A1".to_owned(),
            valid_from: DateTime::from_timestamp(1_000, 0).unwrap(),
            valid_until: DateTime::from_timestamp(2_000, 0).unwrap(),
            key_id: "k".to_owned(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn the_showtime_comes_first_then_the_window() {
        let showtime = Uuid::new_v4();
        let claims = claims(showtime);
        assert_eq!(screen(&claims, Uuid::new_v4(), at(1_500)), Some(Outcome::WrongShowtime));
        assert_eq!(screen(&claims, Uuid::new_v4(), at(5)), Some(Outcome::WrongShowtime));
        assert_eq!(screen(&claims, showtime, at(999)), Some(Outcome::NotYetValid));
        assert_eq!(screen(&claims, showtime, at(1_000)), None);
        assert_eq!(screen(&claims, showtime, at(1_999)), None);
        assert_eq!(screen(&claims, showtime, at(2_000)), Some(Outcome::Expired));
    }

    #[test]
    fn nonces_are_short_printable_strings() {
        assert!(Nonce::parse("scan-0001").is_ok());
        assert!(Nonce::parse("short").is_err());
        assert!(Nonce::parse("has a space").is_err());
        assert!(Nonce::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn a_ticket_admits_from_before_the_start_until_the_end() {
        let (from, until) = validity(at(10_000), at(17_000), chrono::Duration::minutes(120));
        assert_eq!((from, until), (at(2_800), at(17_000)));
    }
}
