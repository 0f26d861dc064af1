//! The `CinemaService` gRPC handlers: parse the request, call the store, map the reply.

use std::time::Duration;

use marquee_kit::shutdown::Shutdown;
use marquee_kit::time::{from_proto, to_proto};
use marquee_proto::cinema::v1 as pb;
use marquee_proto::common::v1::Money as PbMoney;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::board::{Freed, SeatBoard, Verdict};
use crate::catalog::{Category, NewCinema, NewMovie, NewScreen, NewShowtime};
use crate::changes::{ChangeReason, SeatChange, SeatChanges};
use crate::domain::{
    BookingId, CinemaId, City, HoldCutoff, HoldLimit, HoldTerms, HoldTtl, Money, MovieCursor, MovieId,
    PageSize, SeatSelection, SeatState, ShowDateRange, ShowtimeId, TitleSearch, optional,
};
use crate::error::CinemaError;
use crate::seating;
use crate::store::{CinemaRecord, HoldPosition, MovieRecord, SeatRecord, ShowtimeRecord, Store};
use crate::turns::SeatTurns;

/// Seat-hold limits and catalog rules from config, checked once at startup.
#[derive(Clone, Copy, Debug)]
pub struct HoldPolicy {
    pub max_seats_per_hold: usize,
    pub cutoff: HoldCutoff,
    pub extension: HoldTtl,
    pub cleaning_buffer_minutes: i32,
    pub no_orphan_seats: bool,
}

/// Staff may block or unblock a whole row or more at once; this bounds one request.

#[derive(Clone)]
pub struct CinemaApi {
    store: Store,
    policy: HoldPolicy,
    changes: SeatChanges,
    board: SeatBoard,
    turns: SeatTurns,
    /// Ends open `WatchSeats` streams, so a graceful shutdown need not wait for them.
    stop: Shutdown,
}

impl CinemaApi {
    pub fn new(store: Store, policy: HoldPolicy, changes: SeatChanges, board: SeatBoard) -> Self {
        Self { store, policy, changes, board, turns: SeatTurns::default(), stop: Shutdown::new() }
    }

    pub fn stopping_with(self, stop: Shutdown) -> Self {
        Self { stop, ..self }
    }
}

/// Bounds one batch lookup, like a page.
const MAX_BATCH_IDS: usize = 100;

/// Every id of a batch lookup parsed, duplicates folded; all or nothing.
fn batch_ids<T>(
    raw: &[String],
    parse: impl Fn(&str) -> Result<T, marquee_types::InvalidInput>,
    uuid: impl Fn(&T) -> uuid::Uuid,
) -> Result<Vec<uuid::Uuid>, CinemaError> {
    if raw.len() > MAX_BATCH_IDS {
        return Err(CinemaError::BadInput(format!(
            "at most {MAX_BATCH_IDS} ids per call, got {}",
            raw.len()
        )));
    }
    let mut ids = raw
        .iter()
        .map(|id| parse(id).map(|id| uuid(&id)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CinemaError::from)?;
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

#[tonic::async_trait]
impl pb::cinema_service_server::CinemaService for CinemaApi {
    type WatchSeatsStream = ReceiverStream<Result<pb::SeatChange, Status>>;

    #[tracing::instrument(skip_all, fields(showtime.id = %request.get_ref().showtime_id))]
    async fn watch_seats(
        &self,
        request: Request<pb::WatchSeatsRequest>,
    ) -> Result<Response<Self::WatchSeatsStream>, Status> {
        let showtime = ShowtimeId::parse(&request.get_ref().showtime_id).map_err(CinemaError::from)?;
        // Subscribed before answering: nothing committed after the answer is missed.
        let mut changes = self.changes.subscribe();
        if !self.store.showtime_exists(showtime).await.map_err(CinemaError::from)? {
            return Err(CinemaError::not_found("showtime", showtime).into());
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    () = stop.cancelled() => return,
                    () = tx.closed() => return,
                    received = changes.next(showtime.as_uuid()) => received,
                };
                let item = match received {
                    Some(Ok(change)) => Ok(change_to_pb(change)),
                    Some(Err(missed)) => {
                        Err(CinemaError::Conflict(format!("{missed}; reload the seat map and watch again"))
                            .into())
                    }
                    None => return,
                };
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_movies(
        &self,
        request: Request<pb::ListMoviesRequest>,
    ) -> Result<Response<pb::ListMoviesResponse>, Status> {
        let req = request.into_inner();
        let search = TitleSearch::parse_optional(&req.search)?;
        let page_size = PageSize::parse(req.page_size)?;
        let after = MovieCursor::decode_optional(&req.page_token)?;
        let (movies, next) = self
            .store
            .list_movies(search.as_ref(), after.as_ref(), page_size)
            .await
            .map_err(CinemaError::from)?;
        Ok(Response::new(pb::ListMoviesResponse {
            movies: movies.into_iter().map(movie_to_pb).collect(),
            next_page_token: next.map(|c| c.encode()).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all, fields(movie.id = %request.get_ref().id))]
    async fn get_movie(&self, request: Request<pb::GetMovieRequest>) -> Result<Response<pb::Movie>, Status> {
        let id = MovieId::parse(&request.get_ref().id).map_err(CinemaError::from)?;
        let movie = self
            .store
            .get_movie(id)
            .await
            .map_err(CinemaError::from)?
            .ok_or_else(|| CinemaError::not_found("movie", id))?;
        Ok(Response::new(movie_to_pb(movie)))
    }

    #[tracing::instrument(skip_all)]
    async fn list_cinemas(
        &self,
        request: Request<pb::ListCinemasRequest>,
    ) -> Result<Response<pb::ListCinemasResponse>, Status> {
        let city = City::parse_optional(&request.get_ref().city)?;
        let cinemas = self.store.list_cinemas(city.as_ref()).await.map_err(CinemaError::from)?;
        Ok(Response::new(pb::ListCinemasResponse {
            cinemas: cinemas.into_iter().map(cinema_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(cinema.id = %request.get_ref().id))]
    async fn get_cinema(
        &self,
        request: Request<pb::GetCinemaRequest>,
    ) -> Result<Response<pb::Cinema>, Status> {
        let id = CinemaId::parse(&request.get_ref().id).map_err(CinemaError::from)?;
        let cinema = self
            .store
            .get_cinema(id)
            .await
            .map_err(CinemaError::from)?
            .ok_or_else(|| CinemaError::not_found("cinema", id))?;
        Ok(Response::new(cinema_to_pb(cinema)))
    }

    #[tracing::instrument(skip_all, fields(
        movie.id = %request.get_ref().movie_id,
        cinema.id = %request.get_ref().cinema_id,
        date = %request.get_ref().date,
    ))]
    async fn list_showtimes(
        &self,
        request: Request<pb::ListShowtimesRequest>,
    ) -> Result<Response<pb::ListShowtimesResponse>, Status> {
        let req = request.into_inner();
        let movie = optional(&req.movie_id, MovieId::parse).map_err(CinemaError::from)?;
        let cinema = optional(&req.cinema_id, CinemaId::parse).map_err(CinemaError::from)?;
        let days = ShowDateRange::parse_optional(&req.date, &req.end_date)?;
        let showtimes = self.store.list_showtimes(movie, cinema, days).await.map_err(CinemaError::from)?;
        Ok(Response::new(pb::ListShowtimesResponse {
            showtimes: showtimes.into_iter().map(showtime_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(showtime.id = %request.get_ref().id))]
    async fn get_showtime(
        &self,
        request: Request<pb::GetShowtimeRequest>,
    ) -> Result<Response<pb::Showtime>, Status> {
        let id = ShowtimeId::parse(&request.get_ref().id).map_err(CinemaError::from)?;
        let showtime = self
            .store
            .get_showtime(id)
            .await
            .map_err(CinemaError::from)?
            .ok_or_else(|| CinemaError::not_found("showtime", id))?;
        Ok(Response::new(showtime_to_pb(showtime)))
    }

    #[tracing::instrument(skip_all, fields(ids = request.get_ref().ids.len()))]
    async fn get_movies(
        &self,
        request: Request<pb::GetMoviesRequest>,
    ) -> Result<Response<pb::GetMoviesResponse>, Status> {
        let ids = batch_ids(&request.get_ref().ids, MovieId::parse, MovieId::as_uuid)?;
        let movies = self.store.get_movies(&ids).await.map_err(CinemaError::from)?;
        Ok(Response::new(pb::GetMoviesResponse { movies: movies.into_iter().map(movie_to_pb).collect() }))
    }

    #[tracing::instrument(skip_all, fields(ids = request.get_ref().ids.len()))]
    async fn get_cinemas(
        &self,
        request: Request<pb::GetCinemasRequest>,
    ) -> Result<Response<pb::GetCinemasResponse>, Status> {
        let ids = batch_ids(&request.get_ref().ids, CinemaId::parse, CinemaId::as_uuid)?;
        let cinemas = self.store.get_cinemas(&ids).await.map_err(CinemaError::from)?;
        Ok(Response::new(pb::GetCinemasResponse { cinemas: cinemas.into_iter().map(cinema_to_pb).collect() }))
    }

    #[tracing::instrument(skip_all, fields(ids = request.get_ref().ids.len()))]
    async fn get_showtimes(
        &self,
        request: Request<pb::GetShowtimesRequest>,
    ) -> Result<Response<pb::GetShowtimesResponse>, Status> {
        let ids = batch_ids(&request.get_ref().ids, ShowtimeId::parse, ShowtimeId::as_uuid)?;
        let showtimes = self.store.get_showtimes(&ids).await.map_err(CinemaError::from)?;
        Ok(Response::new(pb::GetShowtimesResponse {
            showtimes: showtimes.into_iter().map(showtime_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(showtime.id = %request.get_ref().showtime_id))]
    async fn get_seat_map(
        &self,
        request: Request<pb::GetSeatMapRequest>,
    ) -> Result<Response<pb::SeatMap>, Status> {
        let id = ShowtimeId::parse(&request.get_ref().showtime_id).map_err(CinemaError::from)?;
        let seats = self.store.seat_map(id).await?;
        Ok(Response::new(pb::SeatMap {
            showtime_id: id.to_string(),
            seats: seats.into_iter().map(seat_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(
        showtime.id = %request.get_ref().showtime_id,
        booking.id = %request.get_ref().booking_id,
        seats.count = request.get_ref().seat_ids.len(),
    ))]
    async fn lock_seats(
        &self,
        request: Request<pb::LockSeatsRequest>,
    ) -> Result<Response<pb::LockSeatsResponse>, Status> {
        let req = request.into_inner();
        let showtime = ShowtimeId::parse(&req.showtime_id).map_err(CinemaError::from)?;
        let booking = BookingId::parse(&req.booking_id).map_err(CinemaError::from)?;
        let seats =
            SeatSelection::parse(&req.seat_ids, self.policy.max_seats_per_hold).map_err(CinemaError::from)?;
        let terms = HoldTerms {
            limit: HoldLimit::parse(&req.user_id, req.max_holds_per_user)?,
            ttl: HoldTtl::parse(req.ttl_seconds)?,
            cutoff: self.policy.cutoff,
            no_orphans: self.policy.no_orphan_seats,
        };
        let wanted = seats.to_strings();
        if let Verdict::Taken(taken) =
            self.board.judge(showtime.as_uuid(), &wanted, booking.as_uuid(), chrono::Utc::now())
        {
            tracing::info!(seats.unavailable = %taken.join(","), "seats not locked (seat board)");
            return Err(CinemaError::SeatsUnavailable(taken).into());
        }
        let mut turns = match self.turns.take(showtime.as_uuid(), &wanted, booking.as_uuid()).await {
            Ok(turns) => turns,
            Err(taken) => {
                tracing::info!(seats.unavailable = %taken.join(","), "seats not locked (seat turns)");
                return Err(CinemaError::SeatsUnavailable(taken).into());
            }
        };
        let since = self.board.mark();
        let hold = self
            .store
            .lock_seats(showtime, &seats, booking, terms)
            .await
            .inspect_err(|e| match e {
                CinemaError::SeatsUnavailable(taken) => {
                    tracing::info!(seats.unavailable = %taken.join(","), "seats not locked");
                }
                CinemaError::SeatRule(stranded) => {
                    tracing::info!(seats.stranded = %stranded.join(","), "hold refused by the no-orphan rule");
                }
                CinemaError::HoldLimit(limit) => {
                    tracing::info!(limit, "hold refused: the user is at the hold limit");
                }
                _ => {}
            })?;
        self.board.record_hold(showtime.as_uuid(), &wanted, booking.as_uuid(), hold.expires_at, since);
        turns.won_by(booking.as_uuid());
        drop(turns);
        tracing::info!(expires_at = %hold.expires_at, "seats locked");
        Ok(Response::new(pb::LockSeatsResponse {
            seats: hold.seats.into_iter().map(seat_to_pb).collect(),
            total: Some(money_to_pb(hold.total)),
            expires_at: Some(to_proto(hold.expires_at)),
        }))
    }

    #[tracing::instrument(skip_all, fields(
        showtime.id = %request.get_ref().showtime_id,
        booking.id = %request.get_ref().booking_id,
    ))]
    async fn confirm_seats(
        &self,
        request: Request<pb::ConfirmSeatsRequest>,
    ) -> Result<Response<pb::ConfirmSeatsResponse>, Status> {
        let req = request.into_inner();
        let showtime = ShowtimeId::parse(&req.showtime_id).map_err(CinemaError::from)?;
        let booking = BookingId::parse(&req.booking_id).map_err(CinemaError::from)?;
        let seats =
            SeatSelection::parse(&req.seat_ids, self.policy.max_seats_per_hold).map_err(CinemaError::from)?;
        let seat_ids = self.store.confirm_seats(showtime, booking, &seats).await?;
        tracing::info!(seats = %seat_ids.join(","), "seats booked");
        Ok(Response::new(pb::ConfirmSeatsResponse { seat_ids }))
    }

    #[tracing::instrument(skip_all, fields(
        showtime.id = %request.get_ref().showtime_id,
        booking.id = %request.get_ref().booking_id,
    ))]
    async fn release_seats(
        &self,
        request: Request<pb::ReleaseSeatsRequest>,
    ) -> Result<Response<pb::ReleaseSeatsResponse>, Status> {
        let req = request.into_inner();
        let showtime = ShowtimeId::parse(&req.showtime_id).map_err(CinemaError::from)?;
        let booking = BookingId::parse(&req.booking_id).map_err(CinemaError::from)?;
        let since = self.board.mark();
        let seat_ids = self.store.release_seats(showtime, booking).await?;
        self.board.record_freed(showtime.as_uuid(), &seat_ids, Freed::OfBooking(booking.as_uuid()), since);
        tracing::info!(seats = %seat_ids.join(","), "seats released");
        Ok(Response::new(pb::ReleaseSeatsResponse { seat_ids }))
    }

    #[tracing::instrument(skip_all, fields(
        showtime.id = %request.get_ref().showtime_id,
        booking.id = %request.get_ref().booking_id,
    ))]
    async fn cancel_seats(
        &self,
        request: Request<pb::CancelSeatsRequest>,
    ) -> Result<Response<pb::CancelSeatsResponse>, Status> {
        let req = request.into_inner();
        let showtime = ShowtimeId::parse(&req.showtime_id).map_err(CinemaError::from)?;
        let booking = BookingId::parse(&req.booking_id).map_err(CinemaError::from)?;
        let since = self.board.mark();
        let seat_ids = self.store.cancel_seats(showtime, booking).await?;
        self.board.record_freed(showtime.as_uuid(), &seat_ids, Freed::OfBooking(booking.as_uuid()), since);
        tracing::info!(seats = %seat_ids.join(","), "seats of a cancelled booking released");
        Ok(Response::new(pb::CancelSeatsResponse { seat_ids }))
    }

    #[tracing::instrument(skip_all, fields(
        showtime.id = %request.get_ref().showtime_id,
        booking.id = %request.get_ref().booking_id,
    ))]
    async fn extend_hold(
        &self,
        request: Request<pb::ExtendHoldRequest>,
    ) -> Result<Response<pb::ExtendHoldResponse>, Status> {
        let req = request.into_inner();
        let showtime = ShowtimeId::parse(&req.showtime_id).map_err(CinemaError::from)?;
        let booking = BookingId::parse(&req.booking_id).map_err(CinemaError::from)?;
        let (seat_ids, expires_at) = self.store.extend_hold(showtime, booking, self.policy.extension).await?;
        tracing::info!(%expires_at, "hold extended");
        Ok(Response::new(pb::ExtendHoldResponse { seat_ids, expires_at: Some(to_proto(expires_at)) }))
    }

    #[tracing::instrument(skip_all, fields(limit = request.get_ref().limit))]
    async fn list_holds(
        &self,
        request: Request<pb::ListHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        let req = request.into_inner();
        if !(1..=MAX_LISTED_HOLDS).contains(&req.limit) {
            let message = format!("limit must be between 1 and {MAX_LISTED_HOLDS}, got {}", req.limit);
            return Err(CinemaError::BadInput(message).into());
        }
        let after = req.after.as_ref().map(hold_position).transpose()?;
        let min_age = Duration::from_millis(u64::from(req.min_age_ms));
        let holds = self.store.list_holds(min_age, after, req.limit).await.map_err(CinemaError::from)?;
        let holds = holds
            .into_iter()
            .map(|hold| pb::ListedHold {
                showtime_id: hold.showtime_id.to_string(),
                booking_id: hold.position.booking_id.to_string(),
                held_at: Some(to_proto(hold.position.held_at)),
            })
            .collect();
        Ok(Response::new(pb::ListHoldsResponse { holds }))
    }

    #[tracing::instrument(skip_all, fields(
        showtime.id = %request.get_ref().showtime_id,
        seats.count = request.get_ref().count,
    ))]
    async fn suggest_seats(
        &self,
        request: Request<pb::SuggestSeatsRequest>,
    ) -> Result<Response<pb::SuggestSeatsResponse>, Status> {
        let req = request.into_inner();
        let showtime = ShowtimeId::parse(&req.showtime_id).map_err(CinemaError::from)?;
        let count = usize::try_from(req.count)
            .ok()
            .filter(|n| (1..=self.policy.max_seats_per_hold).contains(n))
            .ok_or_else(|| {
                CinemaError::BadInput(format!(
                    "count must be between 1 and {}, got {}",
                    self.policy.max_seats_per_hold, req.count
                ))
            })?;
        let category = optional(&req.category, Category::parse)?;
        let map = self.store.seat_map(showtime).await?;
        let party = seating::PartyRequest {
            count,
            category: category.as_ref().map(Category::as_str),
            accessible: req.accessible,
        };
        let chosen = seating::suggest(&map, &party).unwrap_or_default();
        let seats = map.into_iter().filter(|s| chosen.contains(&s.seat_id)).map(seat_to_pb).collect();
        Ok(Response::new(pb::SuggestSeatsResponse { seats }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_movie(
        &self,
        request: Request<pb::CreateMovieRequest>,
    ) -> Result<Response<pb::Movie>, Status> {
        let movie = NewMovie::parse(request.into_inner())?;
        let created = self.store.create_movie(&movie).await.map_err(CinemaError::from)?;
        tracing::info!(movie.id = %created.id, "movie created");
        Ok(Response::new(movie_to_pb(created)))
    }

    #[tracing::instrument(skip_all)]
    async fn create_cinema(
        &self,
        request: Request<pb::CreateCinemaRequest>,
    ) -> Result<Response<pb::Cinema>, Status> {
        let cinema = NewCinema::parse(request.into_inner())?;
        let created = self.store.create_cinema(&cinema).await?;
        tracing::info!(cinema.id = %created.id, "cinema created");
        Ok(Response::new(cinema_to_pb(created)))
    }

    #[tracing::instrument(skip_all, fields(cinema.id = %request.get_ref().cinema_id))]
    async fn create_screen(
        &self,
        request: Request<pb::CreateScreenRequest>,
    ) -> Result<Response<pb::Screen>, Status> {
        let screen = NewScreen::parse(request.into_inner())?;
        let created = self.store.create_screen(&screen).await?;
        tracing::info!(screen.id = %created.id, seats = created.seat_count, "screen created");
        Ok(Response::new(pb::Screen {
            id: created.id.to_string(),
            cinema_id: created.cinema_id.to_string(),
            name: created.name,
            seat_count: created.seat_count,
            categories: created.categories,
        }))
    }

    #[tracing::instrument(skip_all, fields(
        movie.id = %request.get_ref().movie_id,
        screen.id = %request.get_ref().screen_id,
    ))]
    async fn create_showtime(
        &self,
        request: Request<pb::CreateShowtimeRequest>,
    ) -> Result<Response<pb::Showtime>, Status> {
        let showtime = NewShowtime::parse(request.into_inner(), chrono::Utc::now())?;
        let created = self.store.create_showtime(&showtime, self.policy.cleaning_buffer_minutes).await?;
        tracing::info!(showtime.id = %created.id, "showtime created");
        Ok(Response::new(showtime_to_pb(created)))
    }

    #[tracing::instrument(skip_all, fields(showtime.id = %request.get_ref().showtime_id))]
    async fn block_seats(
        &self,
        request: Request<pb::BlockSeatsRequest>,
    ) -> Result<Response<pb::BlockSeatsResponse>, Status> {
        let req = request.into_inner();
        let showtime = ShowtimeId::parse(&req.showtime_id).map_err(CinemaError::from)?;
        let seats = SeatSelection::parse(&req.seat_ids, SeatSelection::MAX_PER_STAFF_CHANGE)
            .map_err(CinemaError::from)?;
        let seat_ids = self.store.block_seats(showtime, &seats).await?;
        tracing::info!(seats = %seat_ids.join(","), "seats blocked");
        Ok(Response::new(pb::BlockSeatsResponse { seat_ids }))
    }

    #[tracing::instrument(skip_all, fields(showtime.id = %request.get_ref().showtime_id))]
    async fn unblock_seats(
        &self,
        request: Request<pb::UnblockSeatsRequest>,
    ) -> Result<Response<pb::UnblockSeatsResponse>, Status> {
        let req = request.into_inner();
        let showtime = ShowtimeId::parse(&req.showtime_id).map_err(CinemaError::from)?;
        let seats = SeatSelection::parse(&req.seat_ids, SeatSelection::MAX_PER_STAFF_CHANGE)
            .map_err(CinemaError::from)?;
        let since = self.board.mark();
        let seat_ids = self.store.unblock_seats(showtime, &seats).await?;
        self.board.record_freed(showtime.as_uuid(), &seat_ids, Freed::Blocked, since);
        tracing::info!(seats = %seat_ids.join(","), "seats unblocked");
        Ok(Response::new(pb::UnblockSeatsResponse { seat_ids }))
    }
}

fn money_to_pb(money: Money) -> PbMoney {
    PbMoney { amount_minor: money.amount_minor(), currency: money.currency().to_owned() }
}

fn movie_to_pb(m: MovieRecord) -> pb::Movie {
    pb::Movie {
        id: m.id.to_string(),
        title: m.title,
        synopsis: m.synopsis,
        runtime_minutes: m.runtime_minutes,
        rating: m.rating,
        genres: m.genres,
        poster_url: m.poster_url,
        release_date: m.release_date.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
        languages: m.languages,
    }
}

fn cinema_to_pb(c: CinemaRecord) -> pb::Cinema {
    pb::Cinema {
        id: c.id.to_string(),
        name: c.name,
        city: c.city,
        address: c.address,
        time_zone: c.time_zone,
    }
}

fn showtime_to_pb(s: ShowtimeRecord) -> pb::Showtime {
    pb::Showtime {
        id: s.id.to_string(),
        movie_id: s.movie_id.to_string(),
        cinema_id: s.cinema_id.to_string(),
        screen_id: s.screen_id.to_string(),
        screen_name: s.screen_name,
        starts_at: Some(to_proto(s.starts_at)),
        ends_at: Some(to_proto(s.ends_at)),
        prices: s
            .prices
            .into_iter()
            .map(|p| pb::CategoryPrice { category: p.category, price: Some(money_to_pb(p.price)) })
            .collect(),
    }
}

/// Holds listed per ListHolds call at most.
const MAX_LISTED_HOLDS: u32 = 1000;

fn hold_position(cursor: &pb::HoldCursor) -> Result<HoldPosition, CinemaError> {
    let held_at = cursor
        .held_at
        .as_ref()
        .and_then(from_proto)
        .ok_or_else(|| CinemaError::BadInput("after.held_at must be a valid time".to_owned()))?;
    Ok(HoldPosition { held_at, booking_id: BookingId::parse(&cursor.booking_id)? })
}

fn seat_to_pb(s: SeatRecord) -> pb::Seat {
    let state = state_to_pb(s.state);
    pb::Seat {
        seat_id: s.seat_id,
        row: s.row_label,
        number: s.seat_number,
        category: s.category,
        price: Some(money_to_pb(s.price)),
        state: state as i32,
        accessible: s.place.is_some_and(|p| p.accessible),
        companion: s.place.is_some_and(|p| p.companion),
        position: s.place.map_or(0, |p| p.position),
    }
}

fn state_to_pb(state: SeatState) -> pb::SeatState {
    match state {
        SeatState::Available => pb::SeatState::Available,
        SeatState::Held => pb::SeatState::Held,
        SeatState::Booked => pb::SeatState::Booked,
        SeatState::Blocked => pb::SeatState::Blocked,
    }
}

fn change_to_pb(change: SeatChange) -> pb::SeatChange {
    let reason = match change.reason {
        ChangeReason::Held => pb::SeatChangeReason::Held,
        ChangeReason::Booked => pb::SeatChangeReason::Booked,
        ChangeReason::Released => pb::SeatChangeReason::Released,
        ChangeReason::Expired => pb::SeatChangeReason::Expired,
        ChangeReason::Blocked => pb::SeatChangeReason::Blocked,
        ChangeReason::Unblocked => pb::SeatChangeReason::Unblocked,
    };
    pb::SeatChange {
        showtime_id: change.showtime_id.to_string(),
        seat_id: change.seat_id,
        state: state_to_pb(change.state) as i32,
        reason: reason as i32,
        changed_at: Some(to_proto(change.changed_at)),
    }
}
