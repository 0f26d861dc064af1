//! Per-request batch loaders (async-graphql DataLoader) for catalog lookups by id and
//! for the tickets of bookings.
//!
//! A list of showtimes asks for each row's movie and cinema, a page of bookings for
//! each one's tickets; each loader collects the ids the resolvers of one execution
//! step ask for and fetches them with one batch RPC (`GetMovies`, `GetCinemas`,
//! `GetShowtimes`, `ListTickets`), so the number of upstream calls does not grow with
//! the list. Values are cached for the request only: a client sees catalog changes
//! and newly issued tickets on its next request.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use marquee_proto::cinema::v1 as cinema;
use marquee_proto::ticket::v1 as ticket;

use crate::domain::{BookingId, CinemaId, MovieId, ShowtimeId, trusted};
use crate::error::GatewayError;
use crate::upstream::Upstreams;

/// The cinema service answers at most this many ids per batch call, and the ticket
/// service's `ListTickets` at most this many bookings.
const MAX_BATCH: usize = 100;

/// What every resolver sharing a failed batch receives.
pub type SharedError = Arc<GatewayError>;

pub struct CatalogLoader {
    upstreams: Upstreams,
}

impl Loader<MovieId> for CatalogLoader {
    type Value = cinema::Movie;
    type Error = SharedError;

    async fn load(&self, keys: &[MovieId]) -> Result<HashMap<MovieId, Self::Value>, Self::Error> {
        let movies = self.upstreams.movies_by_id(keys).await.map_err(Arc::new)?;
        movies
            .into_iter()
            .map(|m| Ok((trusted(&m.id)?, m)))
            .collect::<Result<_, GatewayError>>()
            .map_err(Arc::new)
    }
}

impl Loader<CinemaId> for CatalogLoader {
    type Value = cinema::Cinema;
    type Error = SharedError;

    async fn load(&self, keys: &[CinemaId]) -> Result<HashMap<CinemaId, Self::Value>, Self::Error> {
        let cinemas = self.upstreams.cinemas_by_id(keys).await.map_err(Arc::new)?;
        cinemas
            .into_iter()
            .map(|c| Ok((trusted(&c.id)?, c)))
            .collect::<Result<_, GatewayError>>()
            .map_err(Arc::new)
    }
}

impl Loader<ShowtimeId> for CatalogLoader {
    type Value = cinema::Showtime;
    type Error = SharedError;

    async fn load(&self, keys: &[ShowtimeId]) -> Result<HashMap<ShowtimeId, Self::Value>, Self::Error> {
        let showtimes = self.upstreams.showtimes_by_id(keys).await.map_err(Arc::new)?;
        showtimes
            .into_iter()
            .map(|s| Ok((trusted(&s.id)?, s)))
            .collect::<Result<_, GatewayError>>()
            .map_err(Arc::new)
    }
}

pub struct TicketLoader {
    upstreams: Upstreams,
}

impl Loader<BookingId> for TicketLoader {
    /// By seat; empty for a booking without tickets (not confirmed, or not issued yet),
    /// so that it is cached too and never asked for again in the request.
    type Value = Vec<ticket::Ticket>;
    type Error = SharedError;

    async fn load(&self, keys: &[BookingId]) -> Result<HashMap<BookingId, Self::Value>, Self::Error> {
        let ids: Vec<String> = keys.iter().map(BookingId::to_string).collect();
        let tickets = self.upstreams.tickets_of(&ids).await.map_err(Arc::new)?;
        let mut by_booking: HashMap<BookingId, Self::Value> =
            keys.iter().map(|id| (*id, Vec::new())).collect();
        for ticket in tickets {
            let booking: BookingId = trusted(&ticket.booking_id).map_err(Arc::new)?;
            by_booking.entry(booking).or_default().push(ticket);
        }
        Ok(by_booking)
    }
}

/// Request-scoped loaders. The HTTP layer puts a fresh (empty) one into every request;
/// the loaders are built on first use, from the schema's upstream channels.
#[derive(Default)]
pub struct RequestCache {
    catalog: OnceLock<DataLoader<CatalogLoader, HashMapCache>>,
    tickets: OnceLock<DataLoader<TicketLoader, HashMapCache>>,
}

impl RequestCache {
    fn catalog(&self, upstreams: &Upstreams) -> &DataLoader<CatalogLoader, HashMapCache> {
        self.catalog.get_or_init(|| {
            let loader = CatalogLoader { upstreams: upstreams.clone() };
            DataLoader::with_cache(loader, tokio::spawn, HashMapCache::default()).max_batch_size(MAX_BATCH)
        })
    }

    fn ticket_loader(&self, upstreams: &Upstreams) -> &DataLoader<TicketLoader, HashMapCache> {
        self.tickets.get_or_init(|| {
            let loader = TicketLoader { upstreams: upstreams.clone() };
            DataLoader::with_cache(loader, tokio::spawn, HashMapCache::default()).max_batch_size(MAX_BATCH)
        })
    }

    /// The tickets of a booking, by seat (none until it is confirmed and they are issued).
    pub async fn tickets(
        &self,
        upstreams: &Upstreams,
        booking: BookingId,
    ) -> Result<Vec<ticket::Ticket>, GatewayError> {
        let loaded = self.ticket_loader(upstreams).load_one(booking).await.map_err(|e| e.duplicate())?;
        Ok(loaded.unwrap_or_default())
    }

    /// NOT_FOUND when the id names nothing (an id taken from a response, so that means
    /// it was deleted in between, or an upstream is inconsistent).
    pub async fn movie(&self, upstreams: &Upstreams, id: &MovieId) -> Result<cinema::Movie, GatewayError> {
        load(self.catalog(upstreams), *id, "movie").await
    }

    pub async fn cinema(&self, upstreams: &Upstreams, id: &CinemaId) -> Result<cinema::Cinema, GatewayError> {
        load(self.catalog(upstreams), *id, "cinema").await
    }

    pub async fn showtime(
        &self,
        upstreams: &Upstreams,
        id: &ShowtimeId,
    ) -> Result<cinema::Showtime, GatewayError> {
        load(self.catalog(upstreams), *id, "showtime").await
    }
}

/// Primes the cache with one batch call per kind, for list resolvers that know every
/// id their rows will ask for: the DataLoader's own batching waits a short delay for
/// the rows' lookups to gather, and on a busy machine a long list can outlast it.
impl RequestCache {
    pub async fn prime_movies(
        &self,
        upstreams: &Upstreams,
        ids: impl IntoIterator<Item = MovieId>,
    ) -> Result<(), GatewayError> {
        self.catalog(upstreams).load_many(ids).await.map_err(|e| e.duplicate())?;
        Ok(())
    }

    pub async fn prime_cinemas(
        &self,
        upstreams: &Upstreams,
        ids: impl IntoIterator<Item = CinemaId>,
    ) -> Result<(), GatewayError> {
        self.catalog(upstreams).load_many(ids).await.map_err(|e| e.duplicate())?;
        Ok(())
    }

    /// The tickets of these bookings, with one `ListTickets` per hundred bookings.
    pub async fn prime_tickets(
        &self,
        upstreams: &Upstreams,
        bookings: impl IntoIterator<Item = BookingId>,
    ) -> Result<(), GatewayError> {
        self.ticket_loader(upstreams).load_many(bookings).await.map_err(|e| e.duplicate())?;
        Ok(())
    }

    /// The showtimes found.
    pub async fn prime_showtimes(
        &self,
        upstreams: &Upstreams,
        ids: impl IntoIterator<Item = ShowtimeId>,
    ) -> Result<Vec<cinema::Showtime>, GatewayError> {
        let found = self.catalog(upstreams).load_many(ids).await.map_err(|e| e.duplicate())?;
        Ok(found.into_values().collect())
    }
}

async fn load<K, V>(
    loader: &DataLoader<CatalogLoader, HashMapCache>,
    id: K,
    what: &'static str,
) -> Result<V, GatewayError>
where
    K: Send + Sync + std::hash::Hash + Eq + Clone + std::fmt::Display + 'static,
    CatalogLoader: Loader<K, Value = V, Error = SharedError>,
{
    let shown = id.to_string();
    match loader.load_one(id).await {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(GatewayError::Upstream(marquee_kit::ApiError::new(
            marquee_kit::ErrorCode::NotFound,
            format!("{what} {shown} not found"),
        ))),
        Err(shared) => Err(shared.duplicate()),
    }
}
