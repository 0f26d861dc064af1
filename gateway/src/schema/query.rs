use async_graphql::connection::{Connection, DefaultConnectionName, DefaultEdgeName, Edge, EmptyFields};
use async_graphql::{Context, ID, Object};

use super::pagination::{MovieCursor, PageRequest};
use super::types::{Booking, Cinema, Date, Movie, Showtime, User};
use super::{found, scope};
use crate::domain::{BookingId, CinemaId, Filter, MovieId, ShowtimeId};

/// Relay connection named `MovieConnection` / `MovieEdge`, without the `nodes` shortcut.
pub type MovieConnection = Connection<
    MovieCursor,
    Movie,
    EmptyFields,
    EmptyFields,
    DefaultConnectionName,
    DefaultEdgeName,
    async_graphql::connection::DisableNodesField,
>;

pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// The catalog, a page at a time; `search` matches titles case-insensitively.
    async fn movies(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<MovieConnection> {
        let scope = scope(ctx)?;
        let search = Filter::parse(search.as_deref(), "search")?;
        let request = PageRequest::new(first, after.as_deref())?;
        let page = scope.upstreams.movies(search, request.page_size, request.page_token.clone()).await?;
        let mut connection = MovieConnection::new(false, !page.next_page_token.is_empty());
        connection.edges = request
            .edges(page.movies, &page.next_page_token)
            .into_iter()
            .map(|(cursor, movie)| Edge::new(cursor, Movie(movie)))
            .collect();
        Ok(connection)
    }

    async fn movie(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Movie>> {
        let scope = scope(ctx)?;
        let id = MovieId::parse(&id)?;
        Ok(found(scope.upstreams.movie(&id).await)?.map(Movie))
    }

    async fn cinemas(&self, ctx: &Context<'_>, city: Option<String>) -> async_graphql::Result<Vec<Cinema>> {
        let scope = scope(ctx)?;
        let city = Filter::parse(city.as_deref(), "city")?;
        Ok(scope.upstreams.cinema_list(city).await?.into_iter().map(Cinema).collect())
    }

    /// Upcoming showtimes; `date` is a day in the cinema's own time zone.
    async fn showtimes(
        &self,
        ctx: &Context<'_>,
        movie_id: Option<ID>,
        cinema_id: Option<ID>,
        date: Option<Date>,
    ) -> async_graphql::Result<Vec<Showtime>> {
        let scope = scope(ctx)?;
        let movie = movie_id.map(|id| MovieId::parse(&id)).transpose()?;
        let cinema = cinema_id.map(|id| CinemaId::parse(&id)).transpose()?;
        let showtimes = scope.upstreams.showtimes(movie, cinema, date.map(|d| d.0)).await?;
        Ok(showtimes.into_iter().map(Showtime).collect())
    }

    async fn showtime(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Showtime>> {
        let scope = scope(ctx)?;
        let id = ShowtimeId::parse(&id)?;
        Ok(found(scope.upstreams.showtime(&id).await)?.map(Showtime))
    }

    /// The caller; null when the request carries no access token.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let scope = scope(ctx)?;
        let Some(identity) = scope.viewer.identity() else { return Ok(None) };
        Ok(found(scope.upstreams.user(&identity.user_id).await)?.map(User))
    }

    /// One of the caller's bookings; null for an unknown id or someone else's booking.
    async fn booking(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Booking>> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let id = BookingId::parse(&id)?;
        Ok(found(scope.upstreams.booking(&identity.user_id, &id).await)?.map(Booking))
    }
}
