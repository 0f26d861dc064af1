//! gRPC clients for the services behind the gateway. Every call returns
//! `GatewayError`, so upstream statuses are mapped in exactly one place.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use marquee_common::Settings;
use marquee_proto::booking::v1 as booking;
use marquee_proto::booking::v1::booking_service_client::BookingServiceClient;
use marquee_proto::cinema::v1 as cinema;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::notification::v1 as notification;
use marquee_proto::notification::v1::notification_service_client::NotificationServiceClient;
use marquee_proto::user::v1 as user;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use tokio::sync::OnceCell;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::domain::{
    BookingId, CinemaId, Filter, IdempotencyKey, MovieId, PaymentMethod, SeatSelection, ShowtimeId, UserId,
};
use crate::error::GatewayError;

/// How many notifications `User.notifications` shows.
const NOTIFICATIONS_PAGE: i32 = 50;
/// Readiness must answer quickly even when an upstream hangs.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// One lazily connecting channel per upstream; cloning is cheap.
#[derive(Clone)]
pub struct Upstreams {
    user: Channel,
    cinema: Channel,
    booking: Channel,
    notification: Channel,
}

pub struct MoviePage {
    pub movies: Vec<cinema::Movie>,
    pub next_page_token: String,
}

impl Upstreams {
    pub fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let urls = &settings.upstream;
        let channel = |url: &str| marquee_common::grpc::channel(url, &settings.grpc);
        Ok(Self {
            user: channel(&urls.user_url)?,
            cinema: channel(&urls.cinema_url)?,
            booking: channel(&urls.booking_url)?,
            notification: channel(&urls.notification_url)?,
        })
    }

    fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.user.clone())
    }

    fn cinemas(&self) -> CinemaServiceClient<Channel> {
        CinemaServiceClient::new(self.cinema.clone())
    }

    fn bookings(&self) -> BookingServiceClient<Channel> {
        BookingServiceClient::new(self.booking.clone())
    }

    fn notifications(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.notification.clone())
    }

    pub async fn register(&self, request: user::RegisterRequest) -> Result<user::AuthResponse, GatewayError> {
        Ok(self.users().register(request).await?.into_inner())
    }

    pub async fn login(&self, email: String, password: String) -> Result<user::AuthResponse, GatewayError> {
        Ok(self.users().login(user::LoginRequest { email, password }).await?.into_inner())
    }

    pub async fn user(&self, id: &UserId) -> Result<user::User, GatewayError> {
        Ok(self.users().get_user(user::GetUserRequest { id: id.to_string() }).await?.into_inner())
    }

    pub async fn refresh_token(&self, refresh_token: String) -> Result<user::AuthResponse, GatewayError> {
        let request = user::RefreshTokenRequest { refresh_token };
        Ok(self.users().refresh_token(request).await?.into_inner())
    }

    pub async fn logout(&self, access_token: String, refresh_token: String) -> Result<(), GatewayError> {
        self.users().logout(user::LogoutRequest { access_token, refresh_token }).await?;
        Ok(())
    }

    pub async fn update_profile(
        &self,
        request: user::UpdateProfileRequest,
    ) -> Result<user::User, GatewayError> {
        Ok(self.users().update_profile(request).await?.into_inner())
    }

    /// The user service checks that `actor` is an admin, from its own records.
    pub async fn set_user_role(
        &self,
        actor: &UserId,
        target: &UserId,
        role: user::Role,
    ) -> Result<user::User, GatewayError> {
        let request = user::SetUserRoleRequest {
            actor_id: actor.to_string(),
            user_id: target.to_string(),
            role: role.into(),
        };
        Ok(self.users().set_user_role(request).await?.into_inner())
    }

    pub async fn movies(
        &self,
        search: Filter,
        page_size: i32,
        page_token: String,
    ) -> Result<MoviePage, GatewayError> {
        let request = cinema::ListMoviesRequest { search: search.into_inner(), page_size, page_token };
        let response = self.cinemas().list_movies(request).await?.into_inner();
        Ok(MoviePage { movies: response.movies, next_page_token: response.next_page_token })
    }

    pub async fn movie(&self, id: &MovieId) -> Result<cinema::Movie, GatewayError> {
        Ok(self.cinemas().get_movie(cinema::GetMovieRequest { id: id.to_string() }).await?.into_inner())
    }

    pub async fn cinema_list(&self, city: Filter) -> Result<Vec<cinema::Cinema>, GatewayError> {
        let request = cinema::ListCinemasRequest { city: city.into_inner() };
        Ok(self.cinemas().list_cinemas(request).await?.into_inner().cinemas)
    }

    pub async fn cinema(&self, id: &CinemaId) -> Result<cinema::Cinema, GatewayError> {
        Ok(self.cinemas().get_cinema(cinema::GetCinemaRequest { id: id.to_string() }).await?.into_inner())
    }

    pub async fn showtimes(
        &self,
        movie: Option<MovieId>,
        cinema_id: Option<CinemaId>,
        date: Option<chrono::NaiveDate>,
    ) -> Result<Vec<cinema::Showtime>, GatewayError> {
        let request = cinema::ListShowtimesRequest {
            movie_id: movie.map(MovieId::into_inner).unwrap_or_default(),
            cinema_id: cinema_id.map(CinemaId::into_inner).unwrap_or_default(),
            date: date.map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default(),
            ..Default::default()
        };
        Ok(self.cinemas().list_showtimes(request).await?.into_inner().showtimes)
    }

    pub async fn showtime(&self, id: &ShowtimeId) -> Result<cinema::Showtime, GatewayError> {
        let request = cinema::GetShowtimeRequest { id: id.to_string() };
        Ok(self.cinemas().get_showtime(request).await?.into_inner())
    }

    pub async fn seat_map(&self, showtime: &ShowtimeId) -> Result<cinema::SeatMap, GatewayError> {
        let request = cinema::GetSeatMapRequest { showtime_id: showtime.to_string() };
        Ok(self.cinemas().get_seat_map(request).await?.into_inner())
    }

    pub async fn hold_seats(
        &self,
        user: &UserId,
        showtime: ShowtimeId,
        seats: SeatSelection,
        key: IdempotencyKey,
    ) -> Result<booking::Booking, GatewayError> {
        let request = booking::HoldSeatsRequest {
            user_id: user.to_string(),
            showtime_id: showtime.into_inner(),
            seat_ids: seats.into_strings(),
            idempotency_key: key.into_inner(),
        };
        Ok(self.bookings().hold_seats(request).await?.into_inner())
    }

    pub async fn pay_booking(
        &self,
        user: &UserId,
        booking_id: BookingId,
        method: PaymentMethod,
        key: IdempotencyKey,
    ) -> Result<booking::Booking, GatewayError> {
        let request = booking::PayBookingRequest {
            booking_id: booking_id.into_inner(),
            user_id: user.to_string(),
            payment_method: method.into_inner(),
            idempotency_key: key.into_inner(),
        };
        Ok(self.bookings().pay_booking(request).await?.into_inner())
    }

    /// NOT_FOUND unless the booking belongs to `user`: the booking service enforces it.
    pub async fn booking(&self, user: &UserId, id: &BookingId) -> Result<booking::Booking, GatewayError> {
        let request =
            booking::GetBookingRequest { id: id.to_string(), user_id: user.to_string(), as_admin: false };
        Ok(self.bookings().get_booking(request).await?.into_inner())
    }

    pub async fn bookings_of(&self, user: &UserId) -> Result<Vec<booking::Booking>, GatewayError> {
        let request = booking::ListBookingsRequest { user_id: user.to_string(), ..Default::default() };
        Ok(self.bookings().list_bookings(request).await?.into_inner().bookings)
    }

    pub async fn notifications_of(
        &self,
        user: &UserId,
    ) -> Result<Vec<notification::Notification>, GatewayError> {
        let request = notification::ListNotificationsRequest {
            user_id: user.to_string(),
            page_size: NOTIFICATIONS_PAGE,
            ..Default::default()
        };
        Ok(self.notifications().list_notifications(request).await?.into_inner().notifications)
    }

    /// Asks every upstream's `grpc.health.v1` for its own service; returns the ones
    /// that are not SERVING, with why.
    pub async fn unready(&self) -> Vec<(&'static str, String)> {
        use marquee_proto::booking::v1::booking_service_server::SERVICE_NAME as BOOKING;
        use marquee_proto::cinema::v1::cinema_service_server::SERVICE_NAME as CINEMA;
        use marquee_proto::notification::v1::notification_service_server::SERVICE_NAME as NOTIFICATION;
        use marquee_proto::user::v1::user_service_server::SERVICE_NAME as USER;

        let (user, cinema, booking, notification) = tokio::join!(
            serving(&self.user, USER),
            serving(&self.cinema, CINEMA),
            serving(&self.booking, BOOKING),
            serving(&self.notification, NOTIFICATION),
        );
        [("user", user), ("cinema", cinema), ("booking", booking), ("notification", notification)]
            .into_iter()
            .filter_map(|(name, result)| result.err().map(|why| (name, why)))
            .collect()
    }
}

async fn serving(channel: &Channel, service: &str) -> Result<(), String> {
    let mut client = HealthClient::new(channel.clone());
    let request = HealthCheckRequest { service: service.to_owned() };
    match tokio::time::timeout(HEALTH_TIMEOUT, client.check(request)).await {
        Err(_) => Err("health check timed out".to_owned()),
        Ok(Err(status)) => Err(format!("health check failed: {:?}", status.code())),
        Ok(Ok(response)) => match response.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(other.as_str_name().to_owned()),
        },
    }
}

/// Per-request memo of catalog lookups: a showtime list names the same few movies
/// and cinemas many times, and each should cost one upstream call per request.
#[derive(Default)]
pub struct RequestCache {
    movies: Memo<cinema::Movie>,
    cinemas: Memo<cinema::Cinema>,
}

type Memo<T> = Mutex<HashMap<String, Arc<OnceCell<T>>>>;

fn cell<T>(memo: &Memo<T>, key: &str) -> Arc<OnceCell<T>> {
    // A poisoned lock only means another resolver panicked; the map is still valid.
    let mut map = memo.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    map.entry(key.to_owned()).or_default().clone()
}

impl RequestCache {
    pub async fn movie(&self, upstreams: &Upstreams, id: &MovieId) -> Result<cinema::Movie, GatewayError> {
        let cell = cell(&self.movies, id.as_str());
        cell.get_or_try_init(|| upstreams.movie(id)).await.cloned()
    }

    pub async fn cinema(&self, upstreams: &Upstreams, id: &CinemaId) -> Result<cinema::Cinema, GatewayError> {
        let cell = cell(&self.cinemas, id.as_str());
        cell.get_or_try_init(|| upstreams.cinema(id)).await.cloned()
    }
}
