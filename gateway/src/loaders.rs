//! Per-request batch loaders (async-graphql DataLoader) for catalog lookups by id.
//!
//! A list of showtimes asks for each row's movie and cinema; each loader collects the
//! ids the resolvers of one execution step ask for and fetches them with one batch RPC
//! (`GetMovies`, `GetCinemas`, `GetShowtimes`), so the number of upstream calls does
//! not grow with the list. Values are cached for the request only: a client sees
//! catalog changes on its next request.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use marquee_proto::cinema::v1 as cinema;

use crate::domain::{CinemaId, MovieId, ShowtimeId, trusted};
use crate::error::GatewayError;
use crate::upstream::Upstreams;

/// The cinema service answers at most this many ids per batch call.
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

/// Request-scoped loaders. The HTTP layer puts a fresh (empty) one into every request;
/// the loaders are built on first use, from the schema's upstream channels.
#[derive(Default)]
pub struct RequestCache {
    catalog: OnceLock<DataLoader<CatalogLoader, HashMapCache>>,
}

impl RequestCache {
    fn catalog(&self, upstreams: &Upstreams) -> &DataLoader<CatalogLoader, HashMapCache> {
        self.catalog.get_or_init(|| {
            let loader = CatalogLoader { upstreams: upstreams.clone() };
            DataLoader::with_cache(loader, tokio::spawn, HashMapCache::default()).max_batch_size(MAX_BATCH)
        })
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
