//! The catalog: movies, cinemas, screens and showtimes. A showtime's movie, cinema
//! and seat map each need another upstream call, made only when selected; for a
//! list of showtimes the movies and cinemas are fetched up front in one batch each.

use async_graphql::{Context, ID, Lookahead, Object, SimpleObject};
use chrono::{DateTime, NaiveDate, Utc};
use marquee_proto::cinema::v1 as cinema;

use super::seats::SeatMap;
use super::values::{Date, Money, broken, non_empty, timestamp};
use super::{Scope, scope};
use crate::domain::{CinemaId, MovieId, ShowtimeId, trusted};
use crate::error::GatewayError;

/// Loads, with one batch call per kind, the movies and cinemas the selected fields of
/// these showtimes will ask for (see `RequestCache` priming).
pub(crate) async fn prefetch_for_showtimes(
    scope: &Scope<'_>,
    showtimes: &[cinema::Showtime],
    selection: &[Lookahead<'_>],
) -> Result<(), GatewayError> {
    let selected = |field: &str| selection.iter().any(|s| s.field(field).exists());
    let movies = async {
        if !selected("movie") {
            return Ok(());
        }
        let ids = showtimes.iter().map(|s| trusted(&s.movie_id)).collect::<Result<Vec<MovieId>, _>>()?;
        scope.cache.prime_movies(&scope.upstreams, ids).await
    };
    let cinemas = async {
        if !selected("cinema") {
            return Ok(());
        }
        let ids = showtimes.iter().map(|s| trusted(&s.cinema_id)).collect::<Result<Vec<CinemaId>, _>>()?;
        scope.cache.prime_cinemas(&scope.upstreams, ids).await
    };
    tokio::try_join!(movies, cinemas)?;
    Ok(())
}

pub struct Movie(pub cinema::Movie);

#[Object]
impl Movie {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn title(&self) -> &str {
        &self.0.title
    }

    async fn synopsis(&self) -> &str {
        &self.0.synopsis
    }

    async fn runtime_minutes(&self) -> i32 {
        self.0.runtime_minutes
    }

    async fn rating(&self) -> &str {
        &self.0.rating
    }

    async fn genres(&self) -> &[String] {
        &self.0.genres
    }

    async fn poster_url(&self) -> Option<&str> {
        non_empty(&self.0.poster_url)
    }

    async fn release_date(&self) -> async_graphql::Result<Option<Date>> {
        let Some(raw) = non_empty(&self.0.release_date) else { return Ok(None) };
        let date =
            NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| broken("a malformed release date"))?;
        Ok(Some(Date(date)))
    }
}

pub struct Cinema(pub cinema::Cinema);

#[Object]
impl Cinema {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn city(&self) -> &str {
        &self.0.city
    }

    async fn address(&self) -> &str {
        &self.0.address
    }

    /// IANA time zone, e.g. "Europe/Berlin".
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }
}

#[derive(Clone, Debug, SimpleObject)]
pub struct CategoryPrice {
    pub category: String,
    pub price: Money,
}

pub struct Showtime(pub cinema::Showtime);

#[Object]
impl Showtime {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn movie(&self, ctx: &Context<'_>) -> async_graphql::Result<Movie> {
        let scope = scope(ctx)?;
        let id: MovieId = trusted(&self.0.movie_id)?;
        Ok(Movie(scope.cache.movie(&scope.upstreams, &id).await?))
    }

    async fn cinema(&self, ctx: &Context<'_>) -> async_graphql::Result<Cinema> {
        let scope = scope(ctx)?;
        let id: CinemaId = trusted(&self.0.cinema_id)?;
        Ok(Cinema(scope.cache.cinema(&scope.upstreams, &id).await?))
    }

    async fn screen_id(&self) -> ID {
        ID(self.0.screen_id.clone())
    }

    async fn screen_name(&self) -> &str {
        &self.0.screen_name
    }

    async fn starts_at(&self) -> async_graphql::Result<DateTime<Utc>> {
        Ok(timestamp(self.0.starts_at.as_ref(), "a showtime without starts_at")?)
    }

    async fn ends_at(&self) -> async_graphql::Result<DateTime<Utc>> {
        Ok(timestamp(self.0.ends_at.as_ref(), "a showtime without ends_at")?)
    }

    async fn prices(&self) -> async_graphql::Result<Vec<CategoryPrice>> {
        let prices = self.0.prices.iter().map(|p| {
            let price = Money::from_proto(p.price.as_ref(), "a category without a price")?;
            Ok(CategoryPrice { category: p.category.clone(), price })
        });
        Ok(prices.collect::<Result<_, GatewayError>>()?)
    }

    async fn seat_map(&self, ctx: &Context<'_>) -> async_graphql::Result<SeatMap> {
        let scope = scope(ctx)?;
        let id: ShowtimeId = trusted(&self.0.id)?;
        Ok(SeatMap::from_proto(scope.upstreams.seat_map(&id).await?)?)
    }
}

/// A screen of a cinema, as created by `createScreen`.
pub struct Screen(pub cinema::Screen);

#[Object]
impl Screen {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn cinema_id(&self) -> ID {
        ID(self.0.cinema_id.clone())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn seat_count(&self) -> i32 {
        self.0.seat_count
    }

    /// Distinct seat categories, sorted; each showtime prices every one.
    async fn categories(&self) -> &[String] {
        &self.0.categories
    }
}
