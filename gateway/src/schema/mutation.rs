use async_graphql::{Context, ID, InputObject, Object};
use chrono::{DateTime, Utc};
use marquee_proto::cinema::v1 as cinema;
use marquee_proto::common::v1 as common;
use marquee_proto::user::v1 as user;

use super::account::{AuthPayload, Role, User};
use super::bookings::{Booking, BookingStatus};
use super::catalog::{Cinema, Movie, Screen, Showtime};
use super::scope;
use super::values::Date;
use crate::domain::{
    BookingId, CinemaId, IdempotencyKey, MovieId, PaymentMethod, Phone, ScreenId, SeatSelection, ShowtimeId,
    UserId, checked,
};
use crate::error::GatewayError;

/// The cinema service judges titles, layouts, prices and time zones precisely; the
/// gateway only bounds what it forwards.
const MAX_LIST: usize = 100;

/// What blocking and unblocking seats both need: an admin, and the showtime and seats
/// they name, checked.
fn staff_seat_change<'a>(
    ctx: &Context<'a>,
    showtime_id: &ID,
    seat_ids: &[ID],
) -> Result<(super::Scope<'a>, ShowtimeId, SeatSelection), GatewayError> {
    let scope = scope(ctx)?;
    scope.viewer.require_admin()?;
    let showtime = checked(ShowtimeId::parse(showtime_id))?;
    let seats = checked(SeatSelection::parse(
        &seat_ids.iter().map(|id| id.as_str()).collect::<Vec<_>>(),
        SeatSelection::MAX_PER_STAFF_CHANGE,
    ))?;
    Ok((scope, showtime, seats))
}

fn bounded<T>(list: Vec<T>, field: &str) -> Result<Vec<T>, GatewayError> {
    if list.len() > MAX_LIST {
        return Err(GatewayError::bad_input(format!("{field} takes at most {MAX_LIST} entries")));
    }
    Ok(list)
}

#[derive(InputObject)]
pub struct CreateMovieInput {
    pub title: String,
    #[graphql(default)]
    pub synopsis: String,
    pub runtime_minutes: i32,
    /// e.g. "PG-13".
    #[graphql(default)]
    pub rating: String,
    #[graphql(default)]
    pub genres: Vec<String>,
    pub poster_url: Option<String>,
    pub release_date: Option<Date>,
    /// Spoken languages, e.g. "en".
    #[graphql(default)]
    pub languages: Vec<String>,
}

#[derive(InputObject)]
pub struct CreateCinemaInput {
    pub name: String,
    pub city: String,
    pub address: String,
    /// IANA time zone, e.g. "Europe/Berlin".
    pub time_zone: String,
}

#[derive(InputObject)]
pub struct LayoutSeatInput {
    /// Unique within its row; the seat id is row label + number, e.g. "C7".
    pub number: i32,
    /// e.g. "standard"; every showtime prices each category of its screen.
    pub category: String,
    #[graphql(default)]
    pub accessible: bool,
    #[graphql(default)]
    pub companion: bool,
    /// Blocked in every showtime of this screen.
    #[graphql(default)]
    pub blocked: bool,
    /// Empty places (aisle, gap) before this seat.
    #[graphql(default)]
    pub gap_before: i32,
}

#[derive(InputObject)]
pub struct LayoutRowInput {
    /// e.g. "A"; rows front to back, seats left to right.
    pub label: String,
    pub seats: Vec<LayoutSeatInput>,
}

#[derive(InputObject)]
pub struct CreateScreenInput {
    pub cinema_id: ID,
    pub name: String,
    pub rows: Vec<LayoutRowInput>,
}

#[derive(InputObject)]
pub struct MoneyInput {
    /// Integer minor units (cents).
    pub amount: i64,
    /// ISO 4217, e.g. "EUR".
    pub currency: String,
}

#[derive(InputObject)]
pub struct CategoryPriceInput {
    pub category: String,
    pub price: MoneyInput,
}

#[derive(InputObject)]
pub struct CreateShowtimeInput {
    pub movie_id: ID,
    pub screen_id: ID,
    pub starts_at: DateTime<Utc>,
    /// Exactly one positive price per seat category of the screen, one currency.
    pub prices: Vec<CategoryPriceInput>,
}

#[derive(InputObject)]
pub struct RegisterInput {
    pub email: String,
    #[graphql(secret)]
    pub password: String,
    pub name: String,
    /// E.164, for SMS notifications.
    pub phone: Option<String>,
}

/// Omitted fields keep their value; `phone: ""` removes the number.
#[derive(InputObject)]
pub struct UpdateProfileInput {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub notification_preferences: Option<NotificationPreferencesInput>,
}

#[derive(InputObject)]
pub struct NotificationPreferencesInput {
    pub email: bool,
    pub sms: bool,
}

#[derive(InputObject)]
pub struct LoginInput {
    pub email: String,
    #[graphql(secret)]
    pub password: String,
}

#[derive(InputObject)]
pub struct HoldSeatsInput {
    pub showtime_id: ID,
    pub seat_ids: Vec<ID>,
    /// Retrying with the same key returns the same booking instead of a second hold.
    pub idempotency_key: String,
}

#[derive(InputObject)]
pub struct PayBookingInput {
    pub booking_id: ID,
    /// A payment method token, e.g. `pm_card_ok`.
    pub payment_method: String,
    pub idempotency_key: String,
}

pub struct MutationRoot;

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Email, password and name rules are the user service's; its errors come back as is.
    async fn register(&self, ctx: &Context<'_>, input: RegisterInput) -> async_graphql::Result<AuthPayload> {
        let scope = scope(ctx)?;
        let phone = input.phone.as_deref().map(Phone::parse).transpose()?;
        let request = user::RegisterRequest {
            email: input.email,
            password: input.password,
            name: input.name,
            phone: phone.map(Phone::into_inner).unwrap_or_default(),
        };
        Ok(AuthPayload::from_proto(scope.upstreams.register(request).await?)?)
    }

    /// Spends a refresh token for a new access token and refresh token.
    async fn refresh_token(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] refresh_token: String,
    ) -> async_graphql::Result<AuthPayload> {
        let scope = scope(ctx)?;
        let response = scope.upstreams.refresh_token(refresh_token).await?;
        Ok(AuthPayload::from_proto(response)?)
    }

    /// Ends the session: the refresh token's family is revoked and the bearer access
    /// token stops working at once.
    async fn logout(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] refresh_token: String,
    ) -> async_graphql::Result<bool> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        scope.upstreams.logout(identity.access_token.expose().clone(), refresh_token).await?;
        // The user service has denied the token in Redis; this gateway may hold a
        // "not denied" for it (denylist.rs), which must not outlive the logout here.
        identity.session.ended();
        Ok(true)
    }

    async fn update_profile(
        &self,
        ctx: &Context<'_>,
        input: UpdateProfileInput,
    ) -> async_graphql::Result<User> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let request = user::UpdateProfileRequest {
            id: identity.user_id.to_string(),
            name: input.name,
            phone: input.phone,
            notification_preferences: input
                .notification_preferences
                .map(|p| user::NotificationPreferences { email: p.email, sms: p.sms }),
        };
        Ok(User(scope.upstreams.update_profile(request).await?))
    }

    /// Admin only (FORBIDDEN otherwise), judged by the caller's role as stored now.
    async fn set_user_role(&self, ctx: &Context<'_>, user_id: ID, role: Role) -> async_graphql::Result<User> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let target = checked(UserId::parse(&user_id))?;
        Ok(User(scope.upstreams.set_user_role(&identity.user_id, &target, role.to_proto()).await?))
    }

    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> async_graphql::Result<AuthPayload> {
        let scope = scope(ctx)?;
        let response = scope.upstreams.login(input.email, input.password).await?;
        Ok(AuthPayload::from_proto(response)?)
    }

    /// Holds every listed seat for the caller, or none (SEAT_UNAVAILABLE with `seatIds`).
    /// A repeat with the same `idempotencyKey` and seats returns the booking the first
    /// one made (as it is now); the same key with other seats is CONFLICT. The booking
    /// service owns the key, durably (ARCHITECTURE.md, "Idempotency").
    async fn hold_seats(&self, ctx: &Context<'_>, input: HoldSeatsInput) -> async_graphql::Result<Booking> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let showtime = checked(ShowtimeId::parse(&input.showtime_id))?;
        let seat_ids: Vec<&str> = input.seat_ids.iter().map(|id| id.as_str()).collect();
        let seats = checked(SeatSelection::parse(&seat_ids, SeatSelection::MAX_PER_BOOKING))?;
        let key = checked(IdempotencyKey::parse(&input.idempotency_key))?;
        let booking = scope.upstreams.hold_seats(&identity.user_id, showtime, seats, key).await?;
        Ok(Booking(booking))
    }

    /// Charges the held booking. A declined card is PAYMENT_DECLINED; the booking is
    /// then PAYMENT_FAILED and its seats are free again. A booking is charged at most
    /// once: any repeat answers its outcome, and a repeat of the same `idempotencyKey`
    /// with another payment method is CONFLICT.
    async fn pay_booking(&self, ctx: &Context<'_>, input: PayBookingInput) -> async_graphql::Result<Booking> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let booking_id = checked(BookingId::parse(&input.booking_id))?;
        let method = checked(PaymentMethod::parse(&input.payment_method))?;
        let key = checked(IdempotencyKey::parse(&input.idempotency_key))?;
        let booking = scope.upstreams.pay_booking(&identity.user_id, booking_id, method, key).await?;
        if BookingStatus::from_proto(booking.status)? == BookingStatus::PaymentFailed {
            return Err(GatewayError::PaymentDeclined.into());
        }
        Ok(Booking(booking))
    }

    /// Cancels one of the caller's bookings (any booking for an ADMIN): a HELD one at
    /// once, a CONFIRMED one until the cutoff before the show, refunded by policy
    /// (`refund` states amount and fee). Someone else's booking is NOT_FOUND.
    async fn cancel_booking(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: Option<String>,
    ) -> async_graphql::Result<Booking> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let id = checked(BookingId::parse(&id))?;
        let reason = crate::domain::Filter::parse(reason.as_deref(), "reason")?.into_inner();
        let booking =
            scope.upstreams.cancel_booking(&identity.user_id, id, identity.is_admin(), reason).await?;
        Ok(Booking(booking))
    }

    /// STAFF (or ADMIN): one scan at the door. Idempotent per `nonce`; of concurrent
    /// scans of one ticket exactly one is ADMITTED; a bad code is INVALID, not an error.
    async fn check_in(
        &self,
        ctx: &Context<'_>,
        input: super::tickets::CheckInInput,
    ) -> async_graphql::Result<super::tickets::CheckInResult> {
        super::tickets::check_in(ctx, input).await
    }

    /// Admin only.
    async fn create_movie(&self, ctx: &Context<'_>, input: CreateMovieInput) -> async_graphql::Result<Movie> {
        let scope = scope(ctx)?;
        scope.viewer.require_admin()?;
        let request = cinema::CreateMovieRequest {
            title: input.title,
            synopsis: input.synopsis,
            runtime_minutes: input.runtime_minutes,
            rating: input.rating,
            genres: bounded(input.genres, "genres")?,
            poster_url: input.poster_url.unwrap_or_default(),
            release_date: input.release_date.map(|d| d.0.format("%Y-%m-%d").to_string()).unwrap_or_default(),
            languages: bounded(input.languages, "languages")?,
        };
        Ok(Movie(scope.upstreams.create_movie(request).await?))
    }

    /// Admin only.
    async fn create_cinema(
        &self,
        ctx: &Context<'_>,
        input: CreateCinemaInput,
    ) -> async_graphql::Result<Cinema> {
        let scope = scope(ctx)?;
        scope.viewer.require_admin()?;
        let request = cinema::CreateCinemaRequest {
            name: input.name,
            city: input.city,
            address: input.address,
            time_zone: input.time_zone,
        };
        Ok(Cinema(scope.upstreams.create_cinema(request).await?))
    }

    /// Admin only. The layout lists rows front to back, seats left to right.
    async fn create_screen(
        &self,
        ctx: &Context<'_>,
        input: CreateScreenInput,
    ) -> async_graphql::Result<Screen> {
        let scope = scope(ctx)?;
        scope.viewer.require_admin()?;
        let cinema_id = checked(CinemaId::parse(&input.cinema_id))?;
        let rows = bounded(input.rows, "rows")?
            .into_iter()
            .map(|row| {
                let seats = bounded(row.seats, "a row's seats")?
                    .into_iter()
                    .map(|seat| cinema::LayoutSeat {
                        number: seat.number,
                        category: seat.category,
                        accessible: seat.accessible,
                        companion: seat.companion,
                        blocked: seat.blocked,
                        gap_before: seat.gap_before,
                    })
                    .collect();
                Ok(cinema::LayoutRow { label: row.label, seats })
            })
            .collect::<Result<_, GatewayError>>()?;
        let request =
            cinema::CreateScreenRequest { cinema_id: cinema_id.to_string(), name: input.name, rows };
        Ok(Screen(scope.upstreams.create_screen(request).await?))
    }

    /// Admin only. CONFLICT when it overlaps another showtime on the screen.
    async fn create_showtime(
        &self,
        ctx: &Context<'_>,
        input: CreateShowtimeInput,
    ) -> async_graphql::Result<Showtime> {
        let scope = scope(ctx)?;
        scope.viewer.require_admin()?;
        let movie_id = checked(MovieId::parse(&input.movie_id))?;
        let screen_id = checked(ScreenId::parse(&input.screen_id))?;
        let prices = bounded(input.prices, "prices")?
            .into_iter()
            .map(|p| cinema::CategoryPrice {
                category: p.category,
                price: Some(common::Money { amount_minor: p.price.amount, currency: p.price.currency }),
            })
            .collect();
        let request = cinema::CreateShowtimeRequest {
            movie_id: movie_id.to_string(),
            screen_id: screen_id.to_string(),
            starts_at: Some(marquee_kit::time::to_proto(input.starts_at)),
            prices,
        };
        Ok(Showtime(scope.upstreams.create_showtime(request).await?))
    }

    /// Admin only: takes seats out of sale; returns the seats now blocked.
    /// SEAT_UNAVAILABLE (with `seatIds`) if any is held or booked.
    async fn block_seats(
        &self,
        ctx: &Context<'_>,
        showtime_id: ID,
        seat_ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<ID>> {
        let (scope, showtime, seats) = staff_seat_change(ctx, &showtime_id, &seat_ids)?;
        Ok(scope.upstreams.block_seats(&showtime, seats).await?.into_iter().map(ID).collect())
    }

    /// Admin only: puts blocked seats back on sale; returns those that were blocked.
    async fn unblock_seats(
        &self,
        ctx: &Context<'_>,
        showtime_id: ID,
        seat_ids: Vec<ID>,
    ) -> async_graphql::Result<Vec<ID>> {
        let (scope, showtime, seats) = staff_seat_change(ctx, &showtime_id, &seat_ids)?;
        Ok(scope.upstreams.unblock_seats(&showtime, seats).await?.into_iter().map(ID).collect())
    }
}
