//! Catalog administration input, parsed at the edge: new movies, cinemas, screens with
//! their seat layouts, and showtimes with their prices. Each `parse` either returns a
//! value the store can write as is, or a `BadInput` that says exactly what is wrong.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use marquee_proto::cinema::v1 as pb;

use crate::domain::{CinemaId, Money, MovieId, SeatId, ShowDate};
use crate::error::CinemaError;

fn bad(message: impl Into<String>) -> CinemaError {
    CinemaError::BadInput(message.into())
}

/// Trimmed text of at most `max` characters; `min_chars` 0 allows empty.
fn text(field: &str, raw: &str, min_chars: usize, max: usize) -> Result<String, CinemaError> {
    let value = raw.trim();
    let chars = value.chars().count();
    if chars < min_chars {
        return Err(bad(format!("{field} must not be empty")));
    }
    if chars > max {
        return Err(bad(format!("{field} is longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(bad(format!("{field} contains control characters")));
    }
    Ok(value.to_owned())
}

/// A seat category such as "standard" or "premium": lowercase letters, digits, `_`, `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Category(String);

impl Category {
    pub fn parse(raw: &str) -> Result<Self, CinemaError> {
        let valid = (1..=32).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(raw.to_owned()))
        } else {
            Err(bad(format!("invalid seat category {raw:?}: use 1-32 of a-z, 0-9, '_', '-'")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug)]
pub struct NewMovie {
    pub title: String,
    pub synopsis: String,
    pub runtime_minutes: i32,
    pub rating: String,
    pub genres: Vec<String>,
    pub languages: Vec<String>,
    pub poster_url: String,
    pub release_date: Option<NaiveDate>,
}

impl NewMovie {
    pub fn parse(req: pb::CreateMovieRequest) -> Result<Self, CinemaError> {
        if !(1..=1000).contains(&req.runtime_minutes) {
            return Err(bad(format!(
                "runtime_minutes must be between 1 and 1000, got {}",
                req.runtime_minutes
            )));
        }
        let poster_url = text("poster_url", &req.poster_url, 0, 2000)?;
        if !(poster_url.is_empty() || poster_url.starts_with("https://") || poster_url.starts_with("http://"))
        {
            return Err(bad("poster_url must be an http(s) URL"));
        }
        let genres = distinct_list("genres", &req.genres, 10, |g| text("genre", g, 1, 50))?;
        let languages = distinct_list("languages", &req.languages, 20, |l| {
            let valid = (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase());
            if valid {
                Ok(l.to_owned())
            } else {
                Err(bad(format!("invalid language code {l:?}, e.g. \"en\"")))
            }
        })?;
        Ok(Self {
            title: text("title", &req.title, 1, 300)?,
            synopsis: text("synopsis", &req.synopsis, 0, 5000)?,
            runtime_minutes: req.runtime_minutes,
            rating: text("rating", &req.rating, 0, 16)?,
            genres,
            languages,
            poster_url,
            release_date: ShowDate::parse_optional(&req.release_date)?.map(ShowDate::get),
        })
    }
}

fn distinct_list(
    field: &str,
    raw: &[String],
    max: usize,
    parse: impl Fn(&str) -> Result<String, CinemaError>,
) -> Result<Vec<String>, CinemaError> {
    if raw.len() > max {
        return Err(bad(format!("at most {max} {field}")));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for item in raw {
        let value = parse(item)?;
        if !seen.insert(value.clone()) {
            return Err(bad(format!("{field} lists {value:?} twice")));
        }
        out.push(value);
    }
    Ok(out)
}

/// A time zone name in IANA form ("Europe/Berlin"). Whether the zone exists is checked
/// against PostgreSQL's tz database, the one every local-date query uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(raw: &str) -> Result<Self, CinemaError> {
        let valid = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'));
        if valid { Ok(Self(raw.to_owned())) } else { Err(bad(format!("invalid time zone {raw:?}"))) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug)]
pub struct NewCinema {
    pub name: String,
    pub city: String,
    pub address: String,
    pub time_zone: TimeZoneName,
}

impl NewCinema {
    pub fn parse(req: pb::CreateCinemaRequest) -> Result<Self, CinemaError> {
        Ok(Self {
            name: text("name", &req.name, 1, 200)?,
            city: text("city", &req.city, 1, 200)?,
            address: text("address", &req.address, 0, 500)?,
            time_zone: TimeZoneName::parse(&req.time_zone)?,
        })
    }
}

/// One seat of a validated layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutSeat {
    pub seat_id: String,
    pub row_label: String,
    pub number: i32,
    pub position: i32,
    pub category: Category,
    pub accessible: bool,
    pub companion: bool,
    pub blocked: bool,
}

#[derive(Debug)]
pub struct NewScreen {
    pub cinema: CinemaId,
    pub name: String,
    pub seats: Vec<LayoutSeat>,
}

impl NewScreen {
    const MAX_ROWS: usize = 200;
    const MAX_SEATS_PER_ROW: usize = 500;
    const MAX_SEATS: usize = 50_000;
    const MAX_GAP: i32 = 50;

    pub fn parse(req: pb::CreateScreenRequest) -> Result<Self, CinemaError> {
        let cinema = CinemaId::parse(&req.cinema_id)?;
        let name = text("name", &req.name, 1, 100)?;
        if req.rows.is_empty() {
            return Err(bad("a screen needs at least one row"));
        }
        if req.rows.len() > Self::MAX_ROWS {
            return Err(bad(format!("at most {} rows", Self::MAX_ROWS)));
        }
        let mut labels = HashSet::new();
        let mut seat_ids = HashSet::new();
        let mut seats = Vec::new();
        for row in &req.rows {
            let label = &row.label;
            if !(1..=4).contains(&label.len()) || !label.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad(format!("invalid row label {label:?}: use 1-4 letters or digits")));
            }
            if !labels.insert(label.clone()) {
                return Err(bad(format!("row {label} appears twice")));
            }
            if row.seats.is_empty() || row.seats.len() > Self::MAX_SEATS_PER_ROW {
                return Err(bad(format!("row {label} needs 1 to {} seats", Self::MAX_SEATS_PER_ROW)));
            }
            let mut numbers = HashSet::new();
            let mut position = 0;
            for seat in &row.seats {
                if !(1..=9999).contains(&seat.number) {
                    return Err(bad(format!("row {label}: seat number {} is not in 1..9999", seat.number)));
                }
                if !numbers.insert(seat.number) {
                    return Err(bad(format!("row {label}: seat number {} appears twice", seat.number)));
                }
                if !(0..=Self::MAX_GAP).contains(&seat.gap_before) {
                    return Err(bad(format!(
                        "row {label}, seat {}: gap_before must be between 0 and {}",
                        seat.number,
                        Self::MAX_GAP
                    )));
                }
                position += seat.gap_before + 1;
                let seat_id = format!("{label}{}", seat.number);
                SeatId::parse(&seat_id)?;
                if !seat_ids.insert(seat_id.clone()) {
                    return Err(bad(format!("seat id {seat_id} is ambiguous: two rows produce it")));
                }
                seats.push(LayoutSeat {
                    seat_id,
                    row_label: label.clone(),
                    number: seat.number,
                    position,
                    category: Category::parse(&seat.category)?,
                    accessible: seat.accessible,
                    companion: seat.companion,
                    blocked: seat.blocked,
                });
            }
        }
        if seats.len() > Self::MAX_SEATS {
            return Err(bad(format!("at most {} seats per screen", Self::MAX_SEATS)));
        }
        Ok(Self { cinema, name, seats })
    }
}

/// One positive price per category, all in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceList(BTreeMap<Category, Money>);

impl PriceList {
    pub fn parse(raw: &[pb::CategoryPrice]) -> Result<Self, CinemaError> {
        if raw.is_empty() {
            return Err(bad("a showtime needs a price for every seat category"));
        }
        let mut prices = BTreeMap::new();
        let mut currencies = BTreeSet::new();
        for entry in raw {
            let category = Category::parse(&entry.category)?;
            let money =
                entry.price.as_ref().ok_or_else(|| bad(format!("no price for category {category:?}")))?;
            if money.amount_minor <= 0 {
                return Err(bad(format!(
                    "price of category {} must be positive, got {}",
                    category.as_str(),
                    money.amount_minor
                )));
            }
            let price = Money::parse(money.amount_minor, &money.currency).map_err(CinemaError::from)?;
            currencies.insert(price.currency().to_owned());
            if prices.insert(category.clone(), price).is_some() {
                return Err(bad(format!("category {} is priced twice", category.as_str())));
            }
        }
        if currencies.len() > 1 {
            return Err(bad(format!(
                "all prices must share one currency, got {}",
                currencies.into_iter().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(Self(prices))
    }

    pub fn categories(&self) -> impl Iterator<Item = &Category> {
        self.0.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Category, &Money)> {
        self.0.iter()
    }
}

#[derive(Debug)]
pub struct NewShowtime {
    pub movie: MovieId,
    pub screen: crate::domain::ScreenId,
    pub starts_at: DateTime<Utc>,
    pub prices: PriceList,
}

impl NewShowtime {
    /// `now` is passed in so the "not in the past" rule is testable.
    pub fn parse(req: pb::CreateShowtimeRequest, now: DateTime<Utc>) -> Result<Self, CinemaError> {
        let movie = MovieId::parse(&req.movie_id)?;
        let screen = crate::domain::ScreenId::parse(&req.screen_id)?;
        let starts_at = req
            .starts_at
            .as_ref()
            .ok_or_else(|| bad("starts_at is required"))
            .and_then(|t| marquee_kit::time::from_proto(t).ok_or_else(|| bad("invalid starts_at")))?;
        if starts_at <= now {
            return Err(bad(format!("starts_at {starts_at} is in the past")));
        }
        Ok(Self { movie, screen, starts_at, prices: PriceList::parse(&req.prices)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(number: i32, gap_before: i32) -> pb::LayoutSeat {
        pb::LayoutSeat { number, category: "standard".into(), gap_before, ..Default::default() }
    }

    #[test]
    fn layout_positions_count_aisles() {
        let req = pb::CreateScreenRequest {
            cinema_id: uuid::Uuid::new_v4().to_string(),
            name: "Small".into(),
            rows: vec![pb::LayoutRow { label: "A".into(), seats: vec![seat(1, 0), seat(2, 0), seat(3, 2)] }],
        };
        let screen = NewScreen::parse(req).unwrap();
        let positions: Vec<_> = screen.seats.iter().map(|s| (s.seat_id.as_str(), s.position)).collect();
        assert_eq!(positions, [("A1", 1), ("A2", 2), ("A3", 5)]);
    }

    #[test]
    fn ambiguous_seat_ids_are_refused() {
        let req = pb::CreateScreenRequest {
            cinema_id: uuid::Uuid::new_v4().to_string(),
            name: "Odd".into(),
            rows: vec![
                pb::LayoutRow { label: "A1".into(), seats: vec![seat(1, 0)] },
                pb::LayoutRow { label: "A".into(), seats: vec![seat(11, 0)] },
            ],
        };
        assert!(NewScreen::parse(req).unwrap_err().to_string().contains("ambiguous"));
    }
}
