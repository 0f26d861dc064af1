//! Request values parsed at the edge. Handlers turn proto fields into these first, so
//! the store never sees an unchecked string.

use chrono::NaiveDate;
use uuid::Uuid;

pub use marquee_types::{
    BookingId, CinemaId, Money, MovieId, ScreenId, SeatId, SeatSelection, ShowtimeId, UserId,
};

use crate::error::CinemaError;

/// An empty proto field means "no filter"; anything else must parse.
pub fn optional<T, E>(raw: &str, parse: impl FnOnce(&str) -> Result<T, E>) -> Result<Option<T>, E> {
    if raw.is_empty() { Ok(None) } else { parse(raw).map(Some) }
}

/// How long a hold lives before another booking may take the seats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldTtl(i32);

impl HoldTtl {
    const MAX_SECONDS: i32 = 3600;

    pub fn parse(seconds: i32) -> Result<Self, CinemaError> {
        if (1..=Self::MAX_SECONDS).contains(&seconds) {
            Ok(Self(seconds))
        } else {
            Err(CinemaError::BadInput(format!(
                "ttl_seconds must be between 1 and {}, got {seconds}",
                Self::MAX_SECONDS
            )))
        }
    }

    pub fn seconds(self) -> i32 {
        self.0
    }
}

/// How long before a showtime starts holds are no longer taken (from config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldCutoff(i32);

impl HoldCutoff {
    pub fn new(seconds: i32) -> anyhow::Result<Self> {
        anyhow::ensure!(seconds >= 0, "cinema.hold_cutoff_seconds must not be negative, got {seconds}");
        Ok(Self(seconds))
    }

    pub fn seconds(self) -> i32 {
        self.0
    }
}

/// Whose hold it is, and how many live holds (bookings) on the showtime they may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldLimit {
    pub user: UserId,
    pub max: u32,
}

impl HoldLimit {
    /// From a LockSeats request: no user, or a limit of 0, means no limit.
    pub fn parse(user_id: &str, max: u32) -> Result<Option<Self>, CinemaError> {
        let user = optional(user_id, UserId::parse)?;
        Ok(user.filter(|_| max > 0).map(|user| Self { user, max }))
    }
}

/// What a hold is asked for besides its seats.
#[derive(Clone, Copy, Debug)]
pub struct HoldTerms {
    pub limit: Option<HoldLimit>,
    pub ttl: HoldTtl,
    pub cutoff: HoldCutoff,
    /// Refuse a hold that would strand a single free seat.
    pub no_orphans: bool,
}

/// A case-insensitive title substring, turned into an ILIKE pattern with `\` escapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TitleSearch(String);

impl TitleSearch {
    const MAX_LEN: usize = 200;

    pub fn parse_optional(raw: &str) -> Result<Option<Self>, CinemaError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.chars().count() > Self::MAX_LEN {
            return Err(CinemaError::BadInput(format!("search is longer than {} characters", Self::MAX_LEN)));
        }
        let mut pattern = String::with_capacity(raw.len() + 2);
        pattern.push('%');
        for c in raw.chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        Ok(Some(Self(pattern)))
    }

    pub fn ilike_pattern(&self) -> &str {
        &self.0
    }
}

/// Number of results per page: 0 means the default, larger than the maximum is capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize(i64);

impl PageSize {
    const DEFAULT: i64 = 20;
    const MAX: i64 = 100;

    pub fn parse(raw: i32) -> Result<Self, CinemaError> {
        match i64::from(raw) {
            0 => Ok(Self(Self::DEFAULT)),
            n if n < 0 => Err(CinemaError::BadInput(format!("page_size must not be negative, got {n}"))),
            n => Ok(Self(n.min(Self::MAX))),
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// Keyset cursor over movies ordered by (title, id). Opaque to clients: hex of
/// `<id>|<title>`, which never needs escaping since a UUID holds no `|`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovieCursor {
    pub title: String,
    pub id: Uuid,
}

impl MovieCursor {
    pub fn encode(&self) -> String {
        format!("{}|{}", self.id, self.title).bytes().map(|b| format!("{b:02x}")).collect()
    }

    pub fn decode_optional(token: &str) -> Result<Option<Self>, CinemaError> {
        if token.is_empty() {
            return Ok(None);
        }
        Self::decode(token).map(Some).ok_or_else(|| CinemaError::BadInput("invalid page_token".to_owned()))
    }

    fn decode(token: &str) -> Option<Self> {
        // An odd length or a non-ASCII character makes `get` fail, rejecting the token.
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let text = String::from_utf8(bytes).ok()?;
        let (id, title) = text.split_once('|')?;
        Some(Self { title: title.to_owned(), id: Uuid::parse_str(id).ok()? })
    }
}

/// A calendar day (YYYY-MM-DD), read in each cinema's own time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShowDate(NaiveDate);

impl ShowDate {
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, CinemaError> {
        if raw.is_empty() {
            return Ok(None);
        }
        NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .ok()
            .filter(|_| raw.len() == 10)
            .map(|d| Some(Self(d)))
            .ok_or_else(|| CinemaError::BadInput(format!("invalid date {raw:?}, expected YYYY-MM-DD")))
    }

    pub fn get(self) -> NaiveDate {
        self.0
    }
}

/// Days to list showtimes for, both ends inclusive, in each cinema's own time zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShowDateRange {
    first: NaiveDate,
    last: NaiveDate,
}

impl ShowDateRange {
    /// The longest range one listing may span.
    pub const MAX_DAYS: i64 = 31;

    /// `None` when neither end is given (showtimes from now on).
    pub fn parse_optional(date: &str, end_date: &str) -> Result<Option<Self>, CinemaError> {
        let (first, last) = (ShowDate::parse_optional(date)?, ShowDate::parse_optional(end_date)?);
        let (first, last) = match (first, last) {
            (None, None) => return Ok(None),
            (None, Some(_)) => return Err(CinemaError::BadInput("end_date needs date".to_owned())),
            (Some(first), last) => (first.get(), last.map_or(first.get(), ShowDate::get)),
        };
        if last < first {
            return Err(CinemaError::BadInput(format!("end_date {last} is before date {first}")));
        }
        if (last - first).num_days() > Self::MAX_DAYS {
            return Err(CinemaError::BadInput(format!("a date range spans at most {} days", Self::MAX_DAYS)));
        }
        Ok(Some(Self { first, last }))
    }

    pub fn first(self) -> NaiveDate {
        self.first
    }

    pub fn last(self) -> NaiveDate {
        self.last
    }
}

/// A city filter, matched case-insensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct City(String);

impl City {
    pub fn parse_optional(raw: &str) -> Result<Option<Self>, CinemaError> {
        let raw = raw.trim();
        match raw.chars().count() {
            0 => Ok(None),
            1..=200 => Ok(Some(Self(raw.to_lowercase()))),
            _ => Err(CinemaError::BadInput("city is longer than 200 characters".to_owned())),
        }
    }

    pub fn lowercase(&self) -> &str {
        &self.0
    }
}

/// What a seat map shows for one seat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeatState {
    Available,
    Held,
    Booked,
    Blocked,
}

impl SeatState {
    pub fn from_db(status: &str) -> anyhow::Result<Self> {
        Ok(match status {
            "available" => Self::Available,
            "held" => Self::Held,
            "booked" => Self::Booked,
            "blocked" => Self::Blocked,
            other => anyhow::bail!("unknown seat status {other:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_ttl_bounds() {
        assert!(HoldTtl::parse(0).is_err());
        assert!(HoldTtl::parse(3601).is_err());
        assert_eq!(HoldTtl::parse(480).unwrap().seconds(), 480);
    }

    #[test]
    fn search_escapes_like_wildcards() {
        assert_eq!(TitleSearch::parse_optional("  ").unwrap(), None);
        let s = TitleSearch::parse_optional("50%_off\\").unwrap().unwrap();
        assert_eq!(s.ilike_pattern(), "%50\\%\\_off\\\\%");
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(PageSize::parse(0).unwrap().get(), 20);
        assert_eq!(PageSize::parse(500).unwrap().get(), 100);
        assert_eq!(PageSize::parse(7).unwrap().get(), 7);
        assert!(PageSize::parse(-1).is_err());
    }

    #[test]
    fn movie_cursor_round_trips_and_rejects_garbage() {
        let cursor = MovieCursor { title: "Amélie | 2".to_owned(), id: Uuid::new_v4() };
        assert_eq!(MovieCursor::decode_optional(&cursor.encode()).unwrap(), Some(cursor));
        assert_eq!(MovieCursor::decode_optional("").unwrap(), None);
        for bad in ["zz", "abc", "6869", "c3a9"] {
            assert!(MovieCursor::decode_optional(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_are_strict_iso() {
        assert_eq!(
            ShowDate::parse_optional("2026-11-21").unwrap().map(ShowDate::get),
            NaiveDate::from_ymd_opt(2026, 11, 21)
        );
        assert_eq!(ShowDate::parse_optional("").unwrap(), None);
        let one_day = ShowDateRange::parse_optional("2026-11-21", "").unwrap().unwrap();
        assert_eq!(one_day.first(), one_day.last(), "a date alone is a one-day range");
        let week = ShowDateRange::parse_optional("2026-11-21", "2026-11-27").unwrap().unwrap();
        assert_eq!((week.last() - week.first()).num_days(), 6);
        assert_eq!(ShowDateRange::parse_optional("", "").unwrap(), None);
        for (date, end) in [("", "2026-11-21"), ("2026-11-21", "2026-11-20"), ("2026-11-01", "2026-12-03")] {
            assert!(ShowDateRange::parse_optional(date, end).is_err(), "{date}..{end}");
        }
        for bad in ["2026-13-01", "21.11.2026", "2026-1-5", "tomorrow"] {
            assert!(ShowDate::parse_optional(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_parse_or_say_what_was_wrong() {
        let id = Uuid::new_v4();
        assert_eq!(ShowtimeId::parse(&id.to_string()).unwrap().as_uuid(), id);
        let err = MovieId::parse("nope").unwrap_err();
        assert!(err.to_string().contains("movie id must be a UUID"), "{err}");
        assert_eq!(optional("", CinemaId::parse).unwrap(), None);
        assert!(optional("x", CinemaId::parse).is_err());
    }
}
