//! The `CinemaService` gRPC handlers: parse the request, call the store, map the reply.

use marquee_common::time::to_proto;
use marquee_proto::cinema::v1 as pb;
use marquee_proto::common::v1::Money as PbMoney;
use tonic::{Request, Response, Status};

use crate::domain::{
    BookingId, CinemaId, City, HoldTtl, Money, MovieCursor, MovieId, PageSize, SeatSelection, SeatState,
    ShowDate, ShowtimeId, TitleSearch, optional,
};
use crate::error::CinemaError;
use crate::store::{CinemaRecord, MovieRecord, SeatRecord, ShowtimeRecord, Store};

#[derive(Clone)]
pub struct CinemaApi {
    store: Store,
    max_seats_per_hold: usize,
}

impl CinemaApi {
    pub fn new(store: Store, max_seats_per_hold: usize) -> Self {
        Self { store, max_seats_per_hold }
    }
}

#[tonic::async_trait]
impl pb::cinema_service_server::CinemaService for CinemaApi {
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
        let id = MovieId::parse(&request.get_ref().id)?;
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
        let id = CinemaId::parse(&request.get_ref().id)?;
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
        let movie = optional(&req.movie_id, MovieId::parse)?;
        let cinema = optional(&req.cinema_id, CinemaId::parse)?;
        let date = ShowDate::parse_optional(&req.date)?;
        let showtimes = self.store.list_showtimes(movie, cinema, date).await.map_err(CinemaError::from)?;
        Ok(Response::new(pb::ListShowtimesResponse {
            showtimes: showtimes.into_iter().map(showtime_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(showtime.id = %request.get_ref().id))]
    async fn get_showtime(
        &self,
        request: Request<pb::GetShowtimeRequest>,
    ) -> Result<Response<pb::Showtime>, Status> {
        let id = ShowtimeId::parse(&request.get_ref().id)?;
        let showtime = self
            .store
            .get_showtime(id)
            .await
            .map_err(CinemaError::from)?
            .ok_or_else(|| CinemaError::not_found("showtime", id))?;
        Ok(Response::new(showtime_to_pb(showtime)))
    }

    #[tracing::instrument(skip_all, fields(showtime.id = %request.get_ref().showtime_id))]
    async fn get_seat_map(
        &self,
        request: Request<pb::GetSeatMapRequest>,
    ) -> Result<Response<pb::SeatMap>, Status> {
        let id = ShowtimeId::parse(&request.get_ref().showtime_id)?;
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
        let showtime = ShowtimeId::parse(&req.showtime_id)?;
        let booking = BookingId::parse(&req.booking_id)?;
        let seats = SeatSelection::parse(&req.seat_ids, self.max_seats_per_hold)?;
        let ttl = HoldTtl::parse(req.ttl_seconds)?;
        let hold = self.store.lock_seats(showtime, &seats, booking, ttl).await.inspect_err(|e| {
            if let CinemaError::SeatsUnavailable(taken) = e {
                tracing::info!(seats.unavailable = %taken.join(","), "seats not locked");
            }
        })?;
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
        let showtime = ShowtimeId::parse(&req.showtime_id)?;
        let booking = BookingId::parse(&req.booking_id)?;
        let seats = SeatSelection::parse(&req.seat_ids, self.max_seats_per_hold)?;
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
        let showtime = ShowtimeId::parse(&req.showtime_id)?;
        let booking = BookingId::parse(&req.booking_id)?;
        let seat_ids = self.store.release_seats(showtime, booking).await?;
        tracing::info!(seats = %seat_ids.join(","), "seats released");
        Ok(Response::new(pb::ReleaseSeatsResponse { seat_ids }))
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

fn seat_to_pb(s: SeatRecord) -> pb::Seat {
    let state = match s.state {
        SeatState::Available => pb::SeatState::Available,
        SeatState::Held => pb::SeatState::Held,
        SeatState::Booked => pb::SeatState::Booked,
        SeatState::Blocked => pb::SeatState::Blocked,
    };
    pb::Seat {
        seat_id: s.seat_id,
        row: s.row_label,
        number: s.seat_number,
        category: s.category,
        price: Some(money_to_pb(s.price)),
        state: state as i32,
    }
}
