use async_graphql::connection::Connection;
use async_graphql::{Context, ID, Object};
use marquee_proto::cinema::v1 as cinema;

use super::account::User;
use super::bookings::Booking;
use super::catalog::{Cinema, Movie, Showtime, prefetch_for_showtimes};
use super::pagination::{PageCursor, PageRequest};
use super::seats::Seat;
use super::values::Date;
use super::{found, scope};
use crate::domain::{BookingId, CinemaId, Filter, MovieId, ShowtimeId, checked};
use crate::error::GatewayError;

/// Relay connection named `MovieConnection` / `MovieEdge`.
pub type MovieConnection = Connection<PageCursor, Movie>;

/// A party larger than this is not one booking (the cinema caps holds lower still).
const MAX_PARTY: i32 = 50;

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
        Ok(request.page(page.items, &page.next_page_token).into_connection(Movie))
    }

    async fn movie(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Movie>> {
        let scope = scope(ctx)?;
        let id = checked(MovieId::parse(&id))?;
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
        let movie = movie_id.map(|id| checked(MovieId::parse(&id))).transpose()?;
        let cinema = cinema_id.map(|id| checked(CinemaId::parse(&id))).transpose()?;
        let showtimes = scope.upstreams.showtimes(movie, cinema, date.map(|d| d.0)).await?;
        prefetch_for_showtimes(&scope, &showtimes, &[ctx.look_ahead()]).await?;
        Ok(showtimes.into_iter().map(Showtime).collect())
    }

    async fn showtime(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Showtime>> {
        let scope = scope(ctx)?;
        let id = checked(ShowtimeId::parse(&id))?;
        Ok(found(scope.upstreams.showtime(&id).await)?.map(Showtime))
    }

    /// The best free block of `count` adjacent seats: rows nearest the middle first,
    /// never stranding a single seat unless no other block exists. Empty when no block
    /// of that size is free. `accessible` asks for a block with a wheelchair space.
    async fn suggest_seats(
        &self,
        ctx: &Context<'_>,
        showtime_id: ID,
        count: i32,
        category: Option<String>,
        accessible: Option<bool>,
    ) -> async_graphql::Result<Vec<Seat>> {
        let scope = scope(ctx)?;
        let showtime = checked(ShowtimeId::parse(&showtime_id))?;
        if !(1..=MAX_PARTY).contains(&count) {
            return Err(GatewayError::bad_input(format!("count must be between 1 and {MAX_PARTY}")).into());
        }
        let category = Filter::parse(category.as_deref(), "category")?;
        let request = cinema::SuggestSeatsRequest {
            showtime_id: showtime.to_string(),
            count,
            category: category.into_inner(),
            accessible: accessible.unwrap_or(false),
        };
        let seats = scope.upstreams.suggest_seats(request).await?;
        Ok(seats.into_iter().map(Seat::from_proto).collect::<Result<_, GatewayError>>()?)
    }

    /// The caller; null when the request carries no access token.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let scope = scope(ctx)?;
        let Some(identity) = scope.viewer.identity() else { return Ok(None) };
        Ok(found(scope.upstreams.user(&identity.user_id).await)?.map(User))
    }

    /// One of the caller's bookings (any booking for an ADMIN); null for an unknown id
    /// or someone else's booking, so its existence does not leak.
    async fn booking(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Booking>> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let id = checked(BookingId::parse(&id))?;
        let booking = scope.upstreams.booking(&identity.user_id, &id, identity.is_admin()).await;
        Ok(found(booking)?.map(Booking))
    }

    /// The public keys that verify ticket codes (README "Ticket codes"): the signing
    /// key and retired keys still honoured. Public.
    async fn ticket_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::tickets::TicketKey>> {
        super::tickets::ticket_keys(ctx).await
    }

    /// STAFF: tickets of a showtime revoked after `after` (the `cursor` of the previous
    /// page), oldest first, so a scanner fetches only what changed since its last sync.
    async fn revoked_tickets(
        &self,
        ctx: &Context<'_>,
        showtime_id: ID,
        after: Option<String>,
    ) -> async_graphql::Result<super::tickets::RevokedTicketPage> {
        super::tickets::revoked_tickets(ctx, showtime_id, after).await
    }
}
