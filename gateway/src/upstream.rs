//! gRPC clients for the services behind the gateway. Every call returns
//! `GatewayError`, so upstream statuses are mapped in exactly one place.

use std::time::Duration;

use marquee_proto::booking::v1 as booking;
use marquee_proto::booking::v1::booking_service_client::BookingServiceClient;
use marquee_proto::cinema::v1 as cinema;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::notification::v1 as notification;
use marquee_proto::notification::v1::notification_service_client::NotificationServiceClient;
use marquee_proto::ticket::v1 as ticket;
use marquee_proto::ticket::v1::ticket_service_client::TicketServiceClient;
use marquee_proto::user::v1 as user;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use tonic::Status;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Settings;
use crate::domain::{
    BookingId, CinemaId, Filter, IdempotencyKey, MovieId, PaymentMethod, SeatSelection, ShowtimeId, UserId,
};
use crate::error::GatewayError;
pub use crate::loaders::RequestCache;
use crate::trace::TraceContext;

/// Readiness must answer quickly even when an upstream hangs.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// One lazily connecting channel per upstream; cloning is cheap.
#[derive(Clone)]
pub struct Upstreams {
    user: Channel,
    cinema: Channel,
    booking: Channel,
    notification: Channel,
    ticket: Channel,
    /// The request this handle serves; `None` outside a request (each call then
    /// starts its own trace).
    trace: Option<TraceContext>,
    /// Sent as `grpc-timeout`, so a service knows when its caller gives up and can
    /// refuse work it could not finish in time (the channel enforces it here too).
    deadline: Duration,
}

/// One page of a cursor-paged upstream list.
pub struct Page<T> {
    pub items: Vec<T>,
    /// Empty on the last page.
    pub next_page_token: String,
}

type TracedChannel = InterceptedService<Channel, Traced>;

/// Stamps the request's `traceparent` and the deadline on every upstream call.
#[derive(Clone)]
pub struct Traced(Option<TraceContext>, Duration);

impl Interceptor for Traced {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request.set_timeout(self.1);
        // Outside a request nothing is stamped: the callee starts a trace of its own.
        if let Some(context) = &self.0 {
            context.stamp(request.metadata_mut());
        }
        Ok(request)
    }
}

impl Upstreams {
    pub fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let urls = &settings.upstream;
        use marquee_proto::booking::v1::booking_service_server::SERVICE_NAME as BOOKING;
        use marquee_proto::cinema::v1::cinema_service_server::SERVICE_NAME as CINEMA;
        use marquee_proto::notification::v1::notification_service_server::SERVICE_NAME as NOTIFICATION;
        use marquee_proto::ticket::v1::ticket_service_server::SERVICE_NAME as TICKET;
        use marquee_proto::user::v1::user_service_server::SERVICE_NAME as USER;

        let channel = |url: &str, service| marquee_kit::grpc::channel(url, service, &settings.grpc);
        Ok(Self {
            user: channel(&urls.user_url, USER)?,
            cinema: channel(&urls.cinema_url, CINEMA)?,
            booking: channel(&urls.booking_url, BOOKING)?,
            notification: channel(&urls.notification_url, NOTIFICATION)?,
            ticket: channel(&urls.ticket_url, TICKET)?,
            trace: None,
            deadline: Duration::from_millis(settings.grpc.request_timeout_ms),
        })
    }

    /// The same upstreams, for calls made on behalf of one traced request.
    pub fn traced(&self, trace: TraceContext) -> Self {
        Self { trace: Some(trace), ..self.clone() }
    }

    fn users(&self) -> UserServiceClient<TracedChannel> {
        UserServiceClient::with_interceptor(self.user.clone(), Traced(self.trace.clone(), self.deadline))
    }

    fn cinemas(&self) -> CinemaServiceClient<TracedChannel> {
        CinemaServiceClient::with_interceptor(self.cinema.clone(), Traced(self.trace.clone(), self.deadline))
    }

    fn bookings(&self) -> BookingServiceClient<TracedChannel> {
        BookingServiceClient::with_interceptor(
            self.booking.clone(),
            Traced(self.trace.clone(), self.deadline),
        )
    }

    fn notifications(&self) -> NotificationServiceClient<TracedChannel> {
        NotificationServiceClient::with_interceptor(
            self.notification.clone(),
            Traced(self.trace.clone(), self.deadline),
        )
    }

    fn tickets(&self) -> TicketServiceClient<TracedChannel> {
        TicketServiceClient::with_interceptor(self.ticket.clone(), Traced(self.trace.clone(), self.deadline))
    }

    /// The tickets of these bookings (at most 100), by booking then seat.
    pub async fn tickets_of(&self, booking_ids: &[String]) -> Result<Vec<ticket::Ticket>, GatewayError> {
        let request = ticket::ListTicketsRequest { booking_ids: booking_ids.to_vec() };
        Ok(self.tickets().list_tickets(request).await?.into_inner().tickets)
    }

    pub async fn ticket_keys(&self) -> Result<Vec<ticket::TicketKey>, GatewayError> {
        Ok(self.tickets().list_keys(ticket::ListKeysRequest {}).await?.into_inner().keys)
    }

    pub async fn revoked_tickets(
        &self,
        showtime: &ShowtimeId,
        after: String,
    ) -> Result<ticket::ListRevokedResponse, GatewayError> {
        let request = ticket::ListRevokedRequest { showtime_id: showtime.to_string(), after, limit: 0 };
        Ok(self.tickets().list_revoked(request).await?.into_inner())
    }

    pub async fn check_in(
        &self,
        request: ticket::CheckInRequest,
    ) -> Result<ticket::CheckInResponse, GatewayError> {
        Ok(self.tickets().check_in(request).await?.into_inner())
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
    ) -> Result<Page<cinema::Movie>, GatewayError> {
        let request = cinema::ListMoviesRequest { search: search.into_inner(), page_size, page_token };
        let response = self.cinemas().list_movies(request).await?.into_inner();
        Ok(Page { items: response.movies, next_page_token: response.next_page_token })
    }

    /// The movies among `ids` that exist (at most 100 ids).
    pub async fn movies_by_id(&self, ids: &[MovieId]) -> Result<Vec<cinema::Movie>, GatewayError> {
        let ids = ids.iter().map(MovieId::to_string).collect();
        Ok(self.cinemas().get_movies(cinema::GetMoviesRequest { ids }).await?.into_inner().movies)
    }

    pub async fn cinemas_by_id(&self, ids: &[CinemaId]) -> Result<Vec<cinema::Cinema>, GatewayError> {
        let ids = ids.iter().map(CinemaId::to_string).collect();
        Ok(self.cinemas().get_cinemas(cinema::GetCinemasRequest { ids }).await?.into_inner().cinemas)
    }

    pub async fn showtimes_by_id(&self, ids: &[ShowtimeId]) -> Result<Vec<cinema::Showtime>, GatewayError> {
        let ids = ids.iter().map(ShowtimeId::to_string).collect();
        Ok(self.cinemas().get_showtimes(cinema::GetShowtimesRequest { ids }).await?.into_inner().showtimes)
    }

    pub async fn suggest_seats(
        &self,
        request: cinema::SuggestSeatsRequest,
    ) -> Result<Vec<cinema::Seat>, GatewayError> {
        Ok(self.cinemas().suggest_seats(request).await?.into_inner().seats)
    }

    pub async fn create_movie(
        &self,
        request: cinema::CreateMovieRequest,
    ) -> Result<cinema::Movie, GatewayError> {
        Ok(self.cinemas().create_movie(request).await?.into_inner())
    }

    pub async fn create_cinema(
        &self,
        request: cinema::CreateCinemaRequest,
    ) -> Result<cinema::Cinema, GatewayError> {
        Ok(self.cinemas().create_cinema(request).await?.into_inner())
    }

    pub async fn create_screen(
        &self,
        request: cinema::CreateScreenRequest,
    ) -> Result<cinema::Screen, GatewayError> {
        Ok(self.cinemas().create_screen(request).await?.into_inner())
    }

    pub async fn create_showtime(
        &self,
        request: cinema::CreateShowtimeRequest,
    ) -> Result<cinema::Showtime, GatewayError> {
        Ok(self.cinemas().create_showtime(request).await?.into_inner())
    }

    /// The seats now blocked.
    pub async fn block_seats(
        &self,
        showtime: &ShowtimeId,
        seats: SeatSelection,
    ) -> Result<Vec<String>, GatewayError> {
        let request =
            cinema::BlockSeatsRequest { showtime_id: showtime.to_string(), seat_ids: seats.into_strings() };
        Ok(self.cinemas().block_seats(request).await?.into_inner().seat_ids)
    }

    /// The seats that were blocked and are on sale again.
    pub async fn unblock_seats(
        &self,
        showtime: &ShowtimeId,
        seats: SeatSelection,
    ) -> Result<Vec<String>, GatewayError> {
        let request =
            cinema::UnblockSeatsRequest { showtime_id: showtime.to_string(), seat_ids: seats.into_strings() };
        Ok(self.cinemas().unblock_seats(request).await?.into_inner().seat_ids)
    }

    pub async fn movie(&self, id: &MovieId) -> Result<cinema::Movie, GatewayError> {
        Ok(self.cinemas().get_movie(cinema::GetMovieRequest { id: id.to_string() }).await?.into_inner())
    }

    pub async fn cinema_list(&self, city: Filter) -> Result<Vec<cinema::Cinema>, GatewayError> {
        let request = cinema::ListCinemasRequest { city: city.into_inner() };
        Ok(self.cinemas().list_cinemas(request).await?.into_inner().cinemas)
    }

    pub async fn showtimes(
        &self,
        movie: Option<MovieId>,
        cinema_id: Option<CinemaId>,
        date: Option<chrono::NaiveDate>,
    ) -> Result<Vec<cinema::Showtime>, GatewayError> {
        let request = cinema::ListShowtimesRequest {
            movie_id: movie.map(|id| id.to_string()).unwrap_or_default(),
            cinema_id: cinema_id.map(|id| id.to_string()).unwrap_or_default(),
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
            showtime_id: showtime.to_string(),
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
            booking_id: booking_id.to_string(),
            user_id: user.to_string(),
            payment_method: method.into_inner(),
            idempotency_key: key.into_inner(),
        };
        Ok(self.bookings().pay_booking(request).await?.into_inner())
    }

    /// NOT_FOUND unless the booking belongs to `user` or `as_admin` is set (the caller's
    /// verified role): the booking service enforces it.
    pub async fn booking(
        &self,
        user: &UserId,
        id: &BookingId,
        as_admin: bool,
    ) -> Result<booking::Booking, GatewayError> {
        let request = booking::GetBookingRequest { id: id.to_string(), user_id: user.to_string(), as_admin };
        Ok(self.bookings().get_booking(request).await?.into_inner())
    }

    /// What cancelling would refund now; same ownership rule as `booking`.
    pub async fn cancellation_quote(
        &self,
        user: &UserId,
        id: &BookingId,
        as_admin: bool,
    ) -> Result<booking::CancellationQuote, GatewayError> {
        let request = booking::GetBookingRequest { id: id.to_string(), user_id: user.to_string(), as_admin };
        Ok(self.bookings().quote_cancellation(request).await?.into_inner())
    }

    /// Same ownership rule as `booking`.
    pub async fn cancel_booking(
        &self,
        user: &UserId,
        id: BookingId,
        as_admin: bool,
        reason: String,
    ) -> Result<booking::Booking, GatewayError> {
        let request = booking::CancelBookingRequest {
            booking_id: id.to_string(),
            user_id: user.to_string(),
            as_admin,
            reason,
        };
        Ok(self.bookings().cancel_booking(request).await?.into_inner())
    }

    /// Newest first.
    pub async fn bookings_of(
        &self,
        user: &UserId,
        statuses: Vec<booking::BookingStatus>,
        page_size: i32,
        page_token: String,
    ) -> Result<Page<booking::Booking>, GatewayError> {
        let request = booking::ListBookingsRequest {
            user_id: user.to_string(),
            statuses: statuses.into_iter().map(i32::from).collect(),
            page_size,
            page_token,
            ..Default::default()
        };
        let response = self.bookings().list_bookings(request).await?.into_inner();
        Ok(Page { items: response.bookings, next_page_token: response.next_page_token })
    }

    /// Newest first.
    pub async fn notifications_of(
        &self,
        user: &UserId,
        page_size: i32,
        page_token: String,
    ) -> Result<Page<notification::Notification>, GatewayError> {
        let request =
            notification::ListNotificationsRequest { user_id: user.to_string(), page_size, page_token };
        let response = self.notifications().list_notifications(request).await?.into_inner();
        Ok(Page { items: response.notifications, next_page_token: response.next_page_token })
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
