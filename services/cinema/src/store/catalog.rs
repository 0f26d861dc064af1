//! Catalog reads (movies, cinemas, showtimes with prices, seat maps) and catalog
//! administration (new movies, cinemas, screens and showtimes).

use std::collections::{BTreeSet, HashMap};

use anyhow::Context;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    CategoryPrice, CinemaRecord, MovieRecord, ScreenRecord, SeatPlace, SeatRecord, SeatRow, ShowtimeRecord,
    Store,
};
use crate::catalog::{NewCinema, NewMovie, NewScreen, NewShowtime};
use crate::domain::{
    CinemaId, City, Money, MovieCursor, MovieId, PageSize, ShowDateRange, ShowtimeId, TitleSearch,
};
use crate::error::CinemaError;

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
struct MapRow {
    #[sqlx(flatten)]
    seat: SeatRow,
    #[sqlx(flatten)]
    place: SeatPlace,
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

impl Store {
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
            by_showtime.entry(p.showtime_id).or_default().push(CategoryPrice {
                category: p.category,
                price: Money::parse(p.amount_minor, &p.currency).context("stored price")?,
            });
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
              ORDER BY length(s.row_label), s.row_label, ss.position",
        )
        .bind(showtime.as_uuid())
        .fetch_all(&self.pool)
        .await
        .with_context(|| format!("cannot load the seat map of showtime {showtime}"))?;
        let map = rows
            .into_iter()
            .map(|row| Ok(SeatRecord { place: Some(row.place), ..row.seat.into_record()? }))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if map.is_empty() && !self.showtime_exists(showtime).await? {
            return Err(CinemaError::not_found("showtime", showtime));
        }
        Ok(map)
    }

    pub async fn showtime_exists(&self, id: ShowtimeId) -> anyhow::Result<bool> {
        sqlx::query_scalar::<_, bool>("SELECT EXISTS (SELECT 1 FROM showtimes WHERE id = $1)")
            .bind(id.as_uuid())
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("cannot look up showtime {id}"))
    }
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
}
