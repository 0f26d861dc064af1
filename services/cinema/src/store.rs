//! PostgreSQL access: catalog reads and the seat-hold functions from the migrations.
//!
//! Seat changes go through `cinema_lock_seats`, `cinema_confirm_seats`,
//! `cinema_release_seats` and `cinema_extend_hold` (see `0002_seat_functions.sql`): one
//! statement each, so one round trip and one transaction, with row locks taken in seat
//! order and released at commit, before the reply leaves this process.

use std::collections::{BTreeSet, HashMap};

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::catalog::{NewCinema, NewMovie, NewScreen, NewShowtime};
use crate::domain::{
    BookingId, CinemaId, City, HoldCutoff, HoldTtl, Money, MovieCursor, MovieId, PageSize, SeatSelection,
    SeatState, ShowDateRange, ShowtimeId, TitleSearch,
};
use crate::error::CinemaError;

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

#[derive(sqlx::FromRow)]
struct ShowtimeRow {
    id: Uuid,
    movie_id: Uuid,
    cinema_id: Uuid,
    screen_id: Uuid,
    screen_name: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct PriceRow {
    showtime_id: Uuid,
    category: String,
    amount_minor: i64,
    currency: String,
}

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
            price: Money::new(amount_minor, currency)?,
            state: SeatState::from_db(&self.status)?,
            seat_id: self.seat_id,
            row_label: self.row_label,
            seat_number: self.seat_number,
            category: self.category,
            place: None,
        })
    }
}

#[derive(sqlx::FromRow)]
struct MapRow {
    #[sqlx(flatten)]
    seat: SeatRow,
    #[sqlx(flatten)]
    place: SeatPlace,
}

/// One row of `cinema_lock_seats`: an outcome tag plus, for held seats, the seat.
#[derive(sqlx::FromRow)]
struct LockRow {
    outcome: String,
    seat_id: Option<String>,
    row_label: Option<String>,
    seat_number: Option<i32>,
    category: Option<String>,
    amount_minor: Option<i64>,
    currency: Option<String>,
    hold_expires_at: Option<DateTime<Utc>>,
}

/// One row of `cinema_extend_hold`.
#[derive(sqlx::FromRow)]
struct ExtendRow {
    outcome: String,
    seat_id: Option<String>,
    hold_expires_at: Option<DateTime<Utc>>,
}

/// One row of `cinema_confirm_seats` / `cinema_release_seats`.
#[derive(sqlx::FromRow)]
struct OutcomeRow {
    outcome: String,
    seat_id: Option<String>,
}

/// A macro rather than a const so `concat!` keeps every query a `&'static str`.
macro_rules! select_showtimes {
    () => {
        "SELECT st.id, st.movie_id, sc.cinema_id, st.screen_id, sc.name AS screen_name,
                st.starts_at, st.ends_at
           FROM showtimes st
           JOIN screens sc ON sc.id = st.screen_id
           JOIN cinemas c ON c.id = sc.cinema_id"
    };
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// One page of movies in (title, id) order, and the cursor of the next page if any.
    pub async fn list_movies(
        &self,
        search: Option<&TitleSearch>,
        after: Option<&MovieCursor>,
        page_size: PageSize,
    ) -> anyhow::Result<(Vec<MovieRecord>, Option<MovieCursor>)> {
        let mut movies = sqlx::query_as::<_, MovieRecord>(
            "SELECT id, title, synopsis, runtime_minutes, rating, genres, poster_url, release_date, languages
               FROM movies
              WHERE ($1::text IS NULL OR title ILIKE $1)
                AND ($2::text IS NULL OR (title, id) > ($2, $3::uuid))
              ORDER BY title, id
              LIMIT $4",
        )
        .bind(search.map(TitleSearch::ilike_pattern))
        .bind(after.map(|c| c.title.as_str()))
        .bind(after.map(|c| c.id))
        // One extra row tells whether another page exists.
        .bind(page_size.get() + 1)
        .fetch_all(&self.pool)
        .await
        .context("cannot list movies")?;
        let has_more = movies.len() as i64 > page_size.get();
        movies.truncate(page_size.get() as usize);
        let next =
            movies.last().filter(|_| has_more).map(|m| MovieCursor { title: m.title.clone(), id: m.id });
        Ok((movies, next))
    }

    pub async fn get_movie(&self, id: MovieId) -> anyhow::Result<Option<MovieRecord>> {
        sqlx::query_as::<_, MovieRecord>(
            "SELECT id, title, synopsis, runtime_minutes, rating, genres, poster_url, release_date, languages
               FROM movies WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("cannot load movie {id}"))
    }

    /// The movies among `ids` that exist, in no particular order.
    pub async fn get_movies(&self, ids: &[Uuid]) -> anyhow::Result<Vec<MovieRecord>> {
        sqlx::query_as::<_, MovieRecord>(
            "SELECT id, title, synopsis, runtime_minutes, rating, genres, poster_url, release_date, languages
               FROM movies WHERE id = ANY ($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .context("cannot load movies by id")
    }

    /// The cinemas among `ids` that exist, in no particular order.
    pub async fn get_cinemas(&self, ids: &[Uuid]) -> anyhow::Result<Vec<CinemaRecord>> {
        sqlx::query_as::<_, CinemaRecord>(
            "SELECT id, name, city, address, time_zone FROM cinemas WHERE id = ANY ($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .context("cannot load cinemas by id")
    }

    /// The showtimes among `ids` that exist (past ones too), with their prices.
    pub async fn get_showtimes(&self, ids: &[Uuid]) -> anyhow::Result<Vec<ShowtimeRecord>> {
        let rows = sqlx::query_as::<_, ShowtimeRow>(concat!(select_showtimes!(), " WHERE st.id = ANY ($1)"))
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .context("cannot load showtimes by id")?;
        self.with_prices(rows).await
    }

    pub async fn list_cinemas(&self, city: Option<&City>) -> anyhow::Result<Vec<CinemaRecord>> {
        sqlx::query_as::<_, CinemaRecord>(
            "SELECT id, name, city, address, time_zone FROM cinemas
              WHERE ($1::text IS NULL OR lower(city) = $1)
              ORDER BY city, name, id",
        )
        .bind(city.map(City::lowercase))
        .fetch_all(&self.pool)
        .await
        .context("cannot list cinemas")
    }

    pub async fn get_cinema(&self, id: CinemaId) -> anyhow::Result<Option<CinemaRecord>> {
        sqlx::query_as::<_, CinemaRecord>(
            "SELECT id, name, city, address, time_zone FROM cinemas WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .with_context(|| format!("cannot load cinema {id}"))
    }

    /// Showtimes in start order. With dates, those starting on those days in their
    /// cinema's time zone; without, those starting from now on.
    pub async fn list_showtimes(
        &self,
        movie: Option<MovieId>,
        cinema: Option<CinemaId>,
        days: Option<ShowDateRange>,
    ) -> anyhow::Result<Vec<ShowtimeRecord>> {
        let sql = concat!(
            select_showtimes!(),
            "
              WHERE ($1::uuid IS NULL OR st.movie_id = $1)
                AND ($2::uuid IS NULL OR sc.cinema_id = $2)
                AND CASE WHEN $3::date IS NULL THEN st.starts_at >= now()
                         ELSE st.starts_at >= ($3::date::timestamp AT TIME ZONE c.time_zone)
                          AND st.starts_at < (($4::date + 1)::timestamp AT TIME ZONE c.time_zone)
                    END
              ORDER BY st.starts_at, st.id"
        );
        let rows = sqlx::query_as::<_, ShowtimeRow>(sql)
            .bind(movie.map(|m| m.as_uuid()))
            .bind(cinema.map(|c| c.as_uuid()))
            .bind(days.map(ShowDateRange::first))
            .bind(days.map(ShowDateRange::last))
            .fetch_all(&self.pool)
            .await
            .context("cannot list showtimes")?;
        self.with_prices(rows).await
    }

    pub async fn get_showtime(&self, id: ShowtimeId) -> anyhow::Result<Option<ShowtimeRecord>> {
        let row = sqlx::query_as::<_, ShowtimeRow>(concat!(select_showtimes!(), " WHERE st.id = $1"))
            .bind(id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .with_context(|| format!("cannot load showtime {id}"))?;
        Ok(self.with_prices(row.into_iter().collect()).await?.pop())
    }

    async fn with_prices(&self, rows: Vec<ShowtimeRow>) -> anyhow::Result<Vec<ShowtimeRecord>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let prices = sqlx::query_as::<_, PriceRow>(
            "SELECT showtime_id, category, amount_minor, currency FROM showtime_prices
              WHERE showtime_id = ANY ($1) ORDER BY showtime_id, amount_minor, category",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .context("cannot load showtime prices")?;
        let mut by_showtime: HashMap<Uuid, Vec<CategoryPrice>> = HashMap::new();
        for p in prices {
            by_showtime
                .entry(p.showtime_id)
                .or_default()
                .push(CategoryPrice { category: p.category, price: Money::new(p.amount_minor, p.currency)? });
        }
        Ok(rows
            .into_iter()
            .map(|r| ShowtimeRecord {
                prices: by_showtime.remove(&r.id).unwrap_or_default(),
                id: r.id,
                movie_id: r.movie_id,
                cinema_id: r.cinema_id,
                screen_id: r.screen_id,
                screen_name: r.screen_name,
                starts_at: r.starts_at,
                ends_at: r.ends_at,
            })
            .collect())
    }

    /// Every seat of the showtime; a hold past its expiry shows as available, which is
    /// exactly what `cinema_lock_seats` would treat it as.
    pub async fn seat_map(&self, showtime: ShowtimeId) -> Result<Vec<SeatRecord>, CinemaError> {
        let map = self.seat_map_rows(showtime, None).await?;
        if map.is_empty() && !self.showtime_exists(showtime).await? {
            return Err(CinemaError::not_found("showtime", showtime));
        }
        Ok(map)
    }

    /// The seat map of only the rows the given seats sit in (empty for an unknown
    /// showtime): all a row-local rule like the no-orphan rule needs to look at.
    pub async fn seat_map_of_rows(
        &self,
        showtime: ShowtimeId,
        seats: &[String],
    ) -> Result<Vec<SeatRecord>, CinemaError> {
        self.seat_map_rows(showtime, Some(seats)).await
    }

    async fn seat_map_rows(
        &self,
        showtime: ShowtimeId,
        rows_of: Option<&[String]>,
    ) -> Result<Vec<SeatRecord>, CinemaError> {
        let rows = sqlx::query_as::<_, MapRow>(
            "SELECT s.seat_id, s.row_label, s.seat_number, s.category, p.amount_minor, p.currency,
                    CASE WHEN s.status = 'held' AND s.hold_expires_at <= now() THEN 'available'
                         ELSE s.status END AS status,
                    ss.position, ss.accessible, ss.companion
               FROM showtime_seats s
               JOIN showtimes st ON st.id = s.showtime_id
               JOIN screen_seats ss ON ss.screen_id = st.screen_id AND ss.seat_id = s.seat_id
               LEFT JOIN showtime_prices p ON p.showtime_id = s.showtime_id AND p.category = s.category
              WHERE s.showtime_id = $1
                AND ($2::text[] IS NULL
                     OR s.row_label IN (SELECT r.row_label FROM showtime_seats r
                                         WHERE r.showtime_id = $1 AND r.seat_id = ANY ($2)))
              ORDER BY length(s.row_label), s.row_label, ss.position",
        )
        .bind(showtime.as_uuid())
        .bind(rows_of)
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("cannot load the seat map of showtime {showtime}"))?;
        Ok(rows
            .into_iter()
            .map(|row| Ok(SeatRecord { place: Some(row.place), ..row.seat.into_record()? }))
            .collect::<anyhow::Result<_>>()?)
    }

    pub async fn showtime_exists(&self, id: ShowtimeId) -> anyhow::Result<bool> {
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM showtimes WHERE id = $1)")
            .bind(id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("cannot look up showtime {id}"))
    }

    /// Holds all of `seats` for `booking`, or none of them.
    pub async fn lock_seats(
        &self,
        showtime: ShowtimeId,
        seats: &SeatSelection,
        booking: BookingId,
        ttl: HoldTtl,
        cutoff: HoldCutoff,
    ) -> Result<Hold, CinemaError> {
        let seat_ids = seats.to_strings();
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, LockRow>("SELECT * FROM cinema_lock_seats($1, $2, $3, $4, $5)")
                .bind(showtime.as_uuid())
                .bind(&seat_ids)
                .bind(booking.as_uuid())
                .bind(ttl.seconds())
                .bind(cutoff.seconds())
                .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot lock seats of showtime {showtime}"))?;

        let mut unknown = Vec::new();
        let mut unavailable = Vec::new();
        let mut held = Vec::new();
        let mut expires_at = None;
        for row in rows {
            match (row.outcome.as_str(), row.seat_id) {
                ("showtime_not_found", _) => return Err(CinemaError::not_found("showtime", showtime)),
                ("showtime_started", _) => {
                    return Err(CinemaError::BadInput(format!("showtime {showtime} has already started")));
                }
                ("holds_closed", _) => {
                    let closed_at = row.hold_expires_at.context("closed holds without a closing time")?;
                    return Err(CinemaError::HoldsClosed { showtime: showtime.to_string(), closed_at });
                }
                ("unknown", Some(seat)) => unknown.push(seat),
                ("unavailable", Some(seat)) => unavailable.push(seat),
                ("held", Some(seat_id)) => {
                    expires_at = row.hold_expires_at;
                    held.push(
                        SeatRow {
                            seat_id,
                            row_label: row.row_label.context("held seat without row")?,
                            seat_number: row.seat_number.context("held seat without number")?,
                            category: row.category.context("held seat without category")?,
                            amount_minor: row.amount_minor,
                            currency: row.currency,
                            status: "held".to_owned(),
                        }
                        .into_record()?,
                    );
                }
                (other, seat) => {
                    return Err(anyhow::anyhow!("unexpected lock outcome {other:?} for seat {seat:?}").into());
                }
            }
        }
        if !unknown.is_empty() {
            unknown.sort();
            return Err(CinemaError::UnknownSeats(unknown));
        }
        if !unavailable.is_empty() {
            unavailable.sort();
            return Err(CinemaError::SeatsUnavailable(unavailable));
        }
        let total = Money::sum(held.iter().map(|s| &s.price))?.context("lock returned no seats")?;
        let expires_at = expires_at.context("lock returned no expiry")?;
        Ok(Hold { seats: held, total, expires_at })
    }

    /// Books `seats` for `booking` if it holds (or already booked) every one of them.
    pub async fn confirm_seats(
        &self,
        showtime: ShowtimeId,
        booking: BookingId,
        seats: &SeatSelection,
    ) -> Result<Vec<String>, CinemaError> {
        let seat_ids = seats.to_strings();
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, OutcomeRow>("SELECT * FROM cinema_confirm_seats($1, $2, $3)")
                .bind(showtime.as_uuid())
                .bind(booking.as_uuid())
                .bind(&seat_ids)
                .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot confirm seats of showtime {showtime}"))?;
        let (booked, unavailable) = split_outcomes(showtime, rows, "booked", "unavailable")?;
        if unavailable.is_empty() { Ok(booked) } else { Err(CinemaError::SeatsUnavailable(unavailable)) }
    }

    /// Frees the seats `booking` holds; returns them (none on a repeated call).
    pub async fn release_seats(
        &self,
        showtime: ShowtimeId,
        booking: BookingId,
    ) -> Result<Vec<String>, CinemaError> {
        self.free_seats("SELECT * FROM cinema_release_seats($1, $2)", "release", showtime, booking).await
    }

    /// Frees every seat `booking` holds or has booked (a cancelled booking); returns
    /// them (none on a repeated call).
    pub async fn cancel_seats(
        &self,
        showtime: ShowtimeId,
        booking: BookingId,
    ) -> Result<Vec<String>, CinemaError> {
        self.free_seats("SELECT * FROM cinema_cancel_seats($1, $2)", "cancel", showtime, booking).await
    }

    /// Runs one of the seat-freeing SQL functions for `booking`; returns the freed seats.
    async fn free_seats(
        &self,
        sql: &'static str,
        verb: &str,
        showtime: ShowtimeId,
        booking: BookingId,
    ) -> Result<Vec<String>, CinemaError> {
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, OutcomeRow>(sql)
                .bind(showtime.as_uuid())
                .bind(booking.as_uuid())
                .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot {verb} seats of showtime {showtime}"))?;
        let (freed, _) = split_outcomes(showtime, rows, "released", "")?;
        Ok(freed)
    }

    /// Pushes `booking`'s live hold back by `extension`, once per hold; returns the
    /// seats and their new expiry.
    pub async fn extend_hold(
        &self,
        showtime: ShowtimeId,
        booking: BookingId,
        extension: HoldTtl,
    ) -> Result<(Vec<String>, DateTime<Utc>), CinemaError> {
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, ExtendRow>("SELECT * FROM cinema_extend_hold($1, $2, $3)")
                .bind(showtime.as_uuid())
                .bind(booking.as_uuid())
                .bind(extension.seconds())
                .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot extend the hold of booking {booking}"))?;
        let mut seats = Vec::new();
        let mut expires_at = None;
        for row in rows {
            match (row.outcome.as_str(), row.seat_id) {
                ("showtime_not_found", _) => return Err(CinemaError::not_found("showtime", showtime)),
                ("no_live_hold", _) => {
                    return Err(CinemaError::HoldExpired(format!(
                        "booking {booking} holds no seats of showtime {showtime} any more"
                    )));
                }
                ("already_extended", _) => {
                    return Err(CinemaError::Conflict(format!(
                        "the hold of booking {booking} was already extended"
                    )));
                }
                ("extended", Some(seat)) => {
                    expires_at = row.hold_expires_at;
                    seats.push(seat);
                }
                (other, seat) => {
                    return Err(
                        anyhow::anyhow!("unexpected extend outcome {other:?} for seat {seat:?}").into()
                    );
                }
            }
        }
        Ok((seats, expires_at.context("extension returned no expiry")?))
    }
}

/// How often a seat function is re-run after PostgreSQL aborted it to break a deadlock
/// or a serialization conflict. Seat functions lock in seat order, so neither should
/// happen among themselves; this covers anything else that locks seats (ad-hoc SQL,
/// future statements) and keeps such aborts from ever reaching a client.
const CONFLICT_ATTEMPTS: u32 = 5;

/// Runs `call` again when PostgreSQL reports a deadlock (40P01) or a serialization
/// failure (40001): the aborted transaction changed nothing, so a rerun is safe.
async fn retry_conflicts<T, F, Fut>(mut call: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < CONFLICT_ATTEMPTS && is_transient_conflict(&e) => {
                tracing::warn!(attempt, error = %e, "seat statement aborted by a lock conflict; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(u64::from(attempt) * 5)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn is_transient_conflict(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "40P01" || code == "40001")
}

/// Splits function outcome rows into (success seats, refused seats).
fn split_outcomes(
    showtime: ShowtimeId,
    rows: Vec<OutcomeRow>,
    success: &str,
    refused: &str,
) -> Result<(Vec<String>, Vec<String>), CinemaError> {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for row in rows {
        match (row.outcome.as_str(), row.seat_id) {
            ("showtime_not_found", _) => return Err(CinemaError::not_found("showtime", showtime)),
            (outcome, Some(seat)) if outcome == success => ok.push(seat),
            (outcome, Some(seat)) if !refused.is_empty() && outcome == refused => bad.push(seat),
            (other, seat) => {
                return Err(anyhow::anyhow!("unexpected seat outcome {other:?} for seat {seat:?}").into());
            }
        }
    }
    Ok((ok, bad))
}

/// Loads the demo catalog; `demo.sql` is idempotent, so every start may run it.
pub async fn seed_demo(pool: &PgPool) -> anyhow::Result<()> {
    // Several statements in one simple query run as one implicit transaction.
    sqlx::raw_sql(include_str!("../../../init-scripts/postgres/demo.sql"))
        .execute(pool)
        .await
        .context("cannot load the demo catalog")?;
    Ok(())
}

/// Catalog administration. Each write is one transaction: a refused call writes nothing.
impl Store {
    pub async fn create_movie(&self, movie: &NewMovie) -> anyhow::Result<MovieRecord> {
        sqlx::query_as::<_, MovieRecord>(
            "INSERT INTO movies (id, title, synopsis, runtime_minutes, rating, genres, poster_url,
                                 release_date, languages)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             RETURNING id, title, synopsis, runtime_minutes, rating, genres, poster_url, release_date,
                       languages",
        )
        .bind(Uuid::now_v7())
        .bind(&movie.title)
        .bind(&movie.synopsis)
        .bind(movie.runtime_minutes)
        .bind(&movie.rating)
        .bind(&movie.genres)
        .bind(&movie.poster_url)
        .bind(movie.release_date)
        .bind(&movie.languages)
        .fetch_one(&self.pool)
        .await
        .context("cannot insert a movie")
    }

    pub async fn create_cinema(&self, cinema: &NewCinema) -> Result<CinemaRecord, CinemaError> {
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
                .bind(cinema.time_zone.as_str())
                .fetch_one(&self.pool)
                .await
                .context("cannot look up a time zone")?;
        if !known {
            return Err(CinemaError::BadInput(format!(
                "unknown time zone {:?}: use an IANA name such as Europe/Berlin",
                cinema.time_zone.as_str()
            )));
        }
        Ok(sqlx::query_as::<_, CinemaRecord>(
            "INSERT INTO cinemas (id, name, city, address, time_zone) VALUES ($1, $2, $3, $4, $5)
             RETURNING id, name, city, address, time_zone",
        )
        .bind(Uuid::now_v7())
        .bind(&cinema.name)
        .bind(&cinema.city)
        .bind(&cinema.address)
        .bind(cinema.time_zone.as_str())
        .fetch_one(&self.pool)
        .await
        .context("cannot insert a cinema")?)
    }

    pub async fn create_screen(&self, screen: &NewScreen) -> Result<ScreenRecord, CinemaError> {
        let mut tx = self.pool.begin().await.context("cannot begin a transaction")?;
        let cinema_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cinemas WHERE id = $1 FOR SHARE)")
                .bind(screen.cinema.as_uuid())
                .fetch_one(&mut *tx)
                .await
                .context("cannot look up the cinema")?;
        if !cinema_exists {
            return Err(CinemaError::not_found("cinema", screen.cinema));
        }
        let id = Uuid::now_v7();
        let inserted = sqlx::query("INSERT INTO screens (id, cinema_id, name) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(screen.cinema.as_uuid())
            .bind(&screen.name)
            .execute(&mut *tx)
            .await;
        if let Err(e) = &inserted
            && e.as_database_error().and_then(|d| d.constraint()) == Some("screens_cinema_id_name_key")
        {
            return Err(CinemaError::Conflict(format!(
                "cinema {} already has a screen named {:?}",
                screen.cinema, screen.name
            )));
        }
        inserted.context("cannot insert a screen")?;

        let seats = &screen.seats;
        sqlx::query(
            "INSERT INTO screen_seats (screen_id, seat_id, row_label, seat_number, position, category,
                                       accessible, companion, blocked)
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::int[], $5::int[], $6::text[],
                                      $7::bool[], $8::bool[], $9::bool[])",
        )
        .bind(id)
        .bind(seats.iter().map(|s| s.seat_id.clone()).collect::<Vec<_>>())
        .bind(seats.iter().map(|s| s.row_label.clone()).collect::<Vec<_>>())
        .bind(seats.iter().map(|s| s.number).collect::<Vec<_>>())
        .bind(seats.iter().map(|s| s.position).collect::<Vec<_>>())
        .bind(seats.iter().map(|s| s.category.as_str().to_owned()).collect::<Vec<_>>())
        .bind(seats.iter().map(|s| s.accessible).collect::<Vec<_>>())
        .bind(seats.iter().map(|s| s.companion).collect::<Vec<_>>())
        .bind(seats.iter().map(|s| s.blocked).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .context("cannot insert the screen's seats")?;
        tx.commit().await.context("cannot commit a new screen")?;

        let categories: BTreeSet<String> = seats.iter().map(|s| s.category.as_str().to_owned()).collect();
        Ok(ScreenRecord {
            id,
            cinema_id: screen.cinema.as_uuid(),
            name: screen.name.clone(),
            seat_count: i32::try_from(seats.len()).context("seat count overflows")?,
            categories: categories.into_iter().collect(),
        })
    }

    /// Creates the showtime with its prices and seats. The screen row stays locked until
    /// commit, so two overlapping showtimes created at once cannot both pass the check.
    pub async fn create_showtime(
        &self,
        showtime: &NewShowtime,
        cleaning_buffer_minutes: i32,
    ) -> Result<ShowtimeRecord, CinemaError> {
        let mut tx = self.pool.begin().await.context("cannot begin a transaction")?;
        let runtime: Option<i32> = sqlx::query_scalar("SELECT runtime_minutes FROM movies WHERE id = $1")
            .bind(showtime.movie.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .context("cannot look up the movie")?;
        let runtime = runtime.ok_or_else(|| CinemaError::not_found("movie", showtime.movie))?;
        let screen_found: Option<Uuid> =
            sqlx::query_scalar("SELECT id FROM screens WHERE id = $1 FOR UPDATE")
                .bind(showtime.screen.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .context("cannot lock the screen")?;
        if screen_found.is_none() {
            return Err(CinemaError::not_found("screen", showtime.screen));
        }

        let seated: BTreeSet<String> =
            sqlx::query_scalar("SELECT DISTINCT category FROM screen_seats WHERE screen_id = $1")
                .bind(showtime.screen.as_uuid())
                .fetch_all(&mut *tx)
                .await
                .context("cannot load the screen's seat categories")?
                .into_iter()
                .collect();
        let priced: BTreeSet<String> = showtime.prices.categories().map(|c| c.as_str().to_owned()).collect();
        let unknown: Vec<_> = priced.difference(&seated).cloned().collect();
        if !unknown.is_empty() {
            return Err(CinemaError::BadInput(format!(
                "the screen has no seats of category {}",
                unknown.join(", ")
            )));
        }
        let unpriced: Vec<_> = seated.difference(&priced).cloned().collect();
        if !unpriced.is_empty() {
            return Err(CinemaError::BadInput(format!("no price for seat category {}", unpriced.join(", "))));
        }

        let ends_at = showtime.starts_at
            + chrono::Duration::minutes(i64::from(runtime) + i64::from(cleaning_buffer_minutes));
        let overlapping: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM showtimes WHERE screen_id = $1 AND starts_at < $3 AND ends_at > $2
              ORDER BY starts_at LIMIT 1",
        )
        .bind(showtime.screen.as_uuid())
        .bind(showtime.starts_at)
        .bind(ends_at)
        .fetch_optional(&mut *tx)
        .await
        .context("cannot check for overlapping showtimes")?;
        if let Some(other) = overlapping {
            return Err(CinemaError::OverlappingShowtime(other.to_string()));
        }

        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO showtimes (id, movie_id, screen_id, starts_at, ends_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(showtime.movie.as_uuid())
        .bind(showtime.screen.as_uuid())
        .bind(showtime.starts_at)
        .bind(ends_at)
        .execute(&mut *tx)
        .await
        .context("cannot insert a showtime")?;
        let (categories, amounts, currencies): (Vec<String>, Vec<i64>, Vec<String>) = showtime
            .prices
            .iter()
            .map(|(c, m)| (c.as_str().to_owned(), m.amount_minor(), m.currency().to_owned()))
            .collect();
        sqlx::query(
            "INSERT INTO showtime_prices (showtime_id, category, amount_minor, currency)
             SELECT $1, * FROM unnest($2::text[], $3::bigint[], $4::text[])",
        )
        .bind(id)
        .bind(&categories)
        .bind(&amounts)
        .bind(&currencies)
        .execute(&mut *tx)
        .await
        .context("cannot insert showtime prices")?;
        sqlx::query(
            "INSERT INTO showtime_seats (showtime_id, seat_id, row_label, seat_number, category, status)
             SELECT $1, seat_id, row_label, seat_number, category,
                    CASE WHEN blocked THEN 'blocked' ELSE 'available' END
               FROM screen_seats WHERE screen_id = $2",
        )
        .bind(id)
        .bind(showtime.screen.as_uuid())
        .execute(&mut *tx)
        .await
        .context("cannot materialise showtime seats")?;
        tx.commit().await.context("cannot commit a new showtime")?;

        self.get_showtime(ShowtimeId::from_uuid(id))
            .await?
            .ok_or_else(|| anyhow::anyhow!("showtime {id} vanished after its creation").into())
    }

    /// Blocks every requested seat, or none if any is unknown, held or booked.
    pub async fn block_seats(
        &self,
        showtime: ShowtimeId,
        seats: &SeatSelection,
    ) -> Result<Vec<String>, CinemaError> {
        self.staff_change("SELECT * FROM cinema_block_seats($1, $2)", "block", showtime, seats).await
    }

    /// Puts the blocked ones among `seats` back on sale; returns those.
    pub async fn unblock_seats(
        &self,
        showtime: ShowtimeId,
        seats: &SeatSelection,
    ) -> Result<Vec<String>, CinemaError> {
        self.staff_change("SELECT * FROM cinema_unblock_seats($1, $2)", "unblock", showtime, seats).await
    }

    /// Runs the block or unblock SQL function (`verb`) over `seats`; its success tag is
    /// the verb's past tense.
    async fn staff_change(
        &self,
        sql: &'static str,
        verb: &str,
        showtime: ShowtimeId,
        seats: &SeatSelection,
    ) -> Result<Vec<String>, CinemaError> {
        let seat_ids = seats.to_strings();
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, OutcomeRow>(sql)
                .bind(showtime.as_uuid())
                .bind(&seat_ids)
                .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot {verb} seats of showtime {showtime}"))?;
        seat_outcomes(showtime, rows, &format!("{verb}ed"))
    }
}

/// Outcome rows with 'unknown' / 'unavailable' refusals and one success tag.
fn seat_outcomes(
    showtime: ShowtimeId,
    rows: Vec<OutcomeRow>,
    success: &str,
) -> Result<Vec<String>, CinemaError> {
    let mut ok = Vec::new();
    let mut unknown = Vec::new();
    let mut unavailable = Vec::new();
    for row in rows {
        match (row.outcome.as_str(), row.seat_id) {
            ("showtime_not_found", _) => return Err(CinemaError::not_found("showtime", showtime)),
            ("unknown", Some(seat)) => unknown.push(seat),
            ("unavailable", Some(seat)) => unavailable.push(seat),
            (outcome, Some(seat)) if outcome == success => ok.push(seat),
            (other, seat) => {
                return Err(anyhow::anyhow!("unexpected seat outcome {other:?} for seat {seat:?}").into());
            }
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        return Err(CinemaError::UnknownSeats(unknown));
    }
    if !unavailable.is_empty() {
        unavailable.sort();
        return Err(CinemaError::SeatsUnavailable(unavailable));
    }
    Ok(ok)
}
