//! Seats: a label within a screen ("C7") and the seats one request names.

use std::collections::BTreeSet;
use std::fmt;

use crate::{InvalidInput, invalid};

/// A seat label within a screen, e.g. "C7": 1 to 16 ASCII letters or digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeatId(String);

impl SeatId {
    pub const MAX_LEN: usize = 16;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let valid =
            !raw.is_empty() && raw.len() <= Self::MAX_LEN && raw.bytes().all(|b| b.is_ascii_alphanumeric());
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(invalid(format!("seat id {raw:?} is not valid (1 to {} letters or digits)", Self::MAX_LEN)))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Display for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The distinct seats of one request, sorted: between 1 and a limit the caller sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatSelection(Vec<SeatId>);

impl SeatSelection {
    /// The most seats one booking may hold.
    pub const MAX_PER_BOOKING: usize = 10;
    /// The most seats staff block or unblock in one request.
    pub const MAX_PER_STAFF_CHANGE: usize = 500;

    pub fn parse<S: AsRef<str>>(raw: &[S], max: usize) -> Result<Self, InvalidInput> {
        if raw.is_empty() {
            return Err(invalid("select at least one seat"));
        }
        if raw.len() > max {
            return Err(invalid(format!("at most {max} seats per request, got {}", raw.len())));
        }
        let mut seats = BTreeSet::new();
        for seat in raw {
            let seat = seat.as_ref();
            if !seats.insert(SeatId::parse(seat)?) {
                return Err(invalid(format!("seat {seat:?} is listed twice")));
            }
        }
        Ok(Self(seats.into_iter().collect()))
    }

    pub fn seats(&self) -> &[SeatId] {
        &self.0
    }

    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|seat| seat.0.clone()).collect()
    }

    pub fn into_strings(self) -> Vec<String> {
        self.0.into_iter().map(SeatId::into_inner).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_ids_are_short_alphanumeric_labels() {
        for raw in ["C7", "A1", "ROW12SEAT3", "a"] {
            assert_eq!(SeatId::parse(raw).unwrap().as_str(), raw);
        }
        let long = "A".repeat(SeatId::MAX_LEN + 1);
        for raw in ["", " A1", "A-1", "A_1", "bad seat", "Ä1", long.as_str()] {
            assert!(SeatId::parse(raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn a_selection_is_sorted_distinct_and_bounded() {
        let seats = SeatSelection::parse(&["C7", "A1"], 10).unwrap();
        assert_eq!(seats.to_strings(), ["A1", "C7"]);
        assert!(SeatSelection::parse::<&str>(&[], 10).is_err());
        assert!(SeatSelection::parse(&["A1", "A1"], 10).is_err());
        assert!(SeatSelection::parse(&["A1", "bad seat"], 10).is_err());
        let eleven: Vec<String> = (1..=11).map(|n| format!("A{n}")).collect();
        assert!(SeatSelection::parse(&eleven, SeatSelection::MAX_PER_BOOKING).is_err());
        assert!(SeatSelection::parse(&eleven[..10], SeatSelection::MAX_PER_BOOKING).is_ok());
    }
}
