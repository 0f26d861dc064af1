//! PostgreSQL access: the records the service works with, and the one `Store` over
//! the pool. `catalog` reads and administers the catalog; `seats` changes seats through
//! the seat functions of the migrations (one statement, so one round trip and one
//! transaction, each; row locks taken in seat order and released at commit, before the
//! reply leaves this process).

mod catalog;
mod seats;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{BookingId, Money, SeatState, ShowtimeId};

#[derive(Debug, sqlx::FromRow)]
pub struct MovieRecord {
    pub id: Uuid,
    pub title: String,
    pub synopsis: String,
    pub runtime_minutes: i32,
    pub rating: String,
    pub genres: Vec<String>,
    pub poster_url: String,
    pub release_date: Option<NaiveDate>,
    pub languages: Vec<String>,
}

#[derive(Debug, sqlx::FromRow)]
pub struct CinemaRecord {
    pub id: Uuid,
    pub name: String,
    pub city: String,
    pub address: String,
    pub time_zone: String,
}

#[derive(Debug)]
pub struct CategoryPrice {
    pub category: String,
    pub price: Money,
}

#[derive(Debug)]
pub struct ShowtimeRecord {
    pub id: Uuid,
    pub movie_id: Uuid,
    pub cinema_id: Uuid,
    pub screen_id: Uuid,
    pub screen_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub prices: Vec<CategoryPrice>,
}

#[derive(Debug)]
pub struct SeatRecord {
    pub seat_id: String,
    pub row_label: String,
    pub seat_number: i32,
    pub category: String,
    pub price: Money,
    pub state: SeatState,
    /// Where the seat is and what kind it is; only seat maps load it.
    pub place: Option<SeatPlace>,
}

#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct SeatPlace {
    pub position: i32,
    pub accessible: bool,
    pub companion: bool,
}

#[derive(Debug)]
pub struct ScreenRecord {
    pub id: Uuid,
    pub cinema_id: Uuid,
    pub name: String,
    pub seat_count: i32,
    pub categories: Vec<String>,
}

/// Seats now held by a booking, with what they cost.
#[derive(Debug)]
pub struct Hold {
    pub seats: Vec<SeatRecord>,
    pub total: Money,
    pub expires_at: DateTime<Utc>,
}

/// Where a hold stands in `list_holds`' order: when it was taken, then its booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldPosition {
    pub held_at: DateTime<Utc>,
    pub booking_id: BookingId,
}

/// A live hold as `list_holds` finds it: a booking's seats on one showtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedHold {
    pub showtime_id: ShowtimeId,
    pub position: HoldPosition,
}

/// A seat with its price, as seat maps and holds read it.
#[derive(sqlx::FromRow)]
struct SeatRow {
    seat_id: String,
    row_label: String,
    seat_number: i32,
    category: String,
    amount_minor: Option<i64>,
    currency: Option<String>,
    status: String,
}

impl SeatRow {
    fn into_record(self) -> anyhow::Result<SeatRecord> {
        let (Some(amount_minor), Some(currency)) = (self.amount_minor, self.currency) else {
            anyhow::bail!("seat {} (category {}) has no price", self.seat_id, self.category);
        };
        Ok(SeatRecord {
            price: Money::parse(amount_minor, &currency)?,
            state: SeatState::from_db(&self.status)?,
            seat_id: self.seat_id,
            row_label: self.row_label,
            seat_number: self.seat_number,
            category: self.category,
            place: None,
        })
    }
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Loads the demo catalog; `demo.sql` is idempotent, so every start may run it.
pub async fn seed_demo(pool: &PgPool) -> anyhow::Result<()> {
    // Several statements in one simple query run as one implicit transaction.
    sqlx::raw_sql(include_str!("../../../../init-scripts/postgres/demo.sql"))
        .execute(pool)
        .await
        .context("cannot load the demo catalog")?;
    Ok(())
}
