//! GraphQL output types over the upstream messages. Nested fields that need another
//! service (a showtime's movie, a user's bookings) are resolved only when selected.

use async_graphql::connection::Connection;
use async_graphql::{
    Context, Enum, ID, InputValueError, InputValueResult, Lookahead, Object, Scalar, ScalarType,
    SimpleObject, Value,
};
use chrono::{DateTime, NaiveDate, Utc};
use marquee_proto::booking::v1 as booking;
use marquee_proto::cinema::v1 as cinema;
use marquee_proto::common::v1 as common;
use marquee_proto::notification::v1 as notification;
use marquee_proto::user::v1 as user;

use super::pagination::{PageCursor, PageRequest};
use super::{Scope, scope};
use crate::domain::{CinemaId, MovieId, ShowtimeId, UserId};
use crate::error::GatewayError;

/// A response from our own services that breaks its contract (a missing timestamp,
/// an unknown enum value): a bug upstream, never the client's fault.
fn broken(what: &str) -> GatewayError {
    GatewayError::Unexpected(anyhow::anyhow!("upstream sent {what}"))
}

fn timestamp(ts: Option<&prost_types::Timestamp>, what: &str) -> Result<DateTime<Utc>, GatewayError> {
    ts.and_then(marquee_common::time::from_proto).ok_or_else(|| broken(what))
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

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
        let ids = showtimes.iter().map(|s| MovieId::from_trusted(s.movie_id.clone()));
        scope.cache.prime_movies(&scope.upstreams, ids).await
    };
    let cinemas = async {
        if !selected("cinema") {
            return Ok(());
        }
        let ids = showtimes.iter().map(|s| CinemaId::from_trusted(s.cinema_id.clone()));
        scope.cache.prime_cinemas(&scope.upstreams, ids).await
    };
    tokio::try_join!(movies, cinemas)?;
    Ok(())
}

/// As `prefetch_for_showtimes`, for the showtimes of these bookings and what they show.
async fn prefetch_for_bookings<'b>(
    scope: &Scope<'_>,
    bookings: impl Iterator<Item = &'b booking::Booking>,
    selection: &[Lookahead<'_>],
) -> Result<(), GatewayError> {
    let showtime: Vec<Lookahead<'_>> = selection.iter().map(|s| s.field("showtime")).collect();
    if !showtime.iter().any(Lookahead::exists) {
        return Ok(());
    }
    let ids = bookings.map(|b| ShowtimeId::from_trusted(b.showtime_id.clone()));
    let showtimes = scope.cache.prime_showtimes(&scope.upstreams, ids).await?;
    prefetch_for_showtimes(scope, &showtimes, &showtime).await
}

/// A calendar day, `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(Date)
                .map_err(|_| InputValueError::custom("expected a date as YYYY-MM-DD")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// An amount in integer minor units (cents) of `currency`.
#[derive(Clone, Debug, SimpleObject)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

impl Money {
    pub fn from_proto(money: Option<&common::Money>, what: &str) -> Result<Self, GatewayError> {
        let money = money.ok_or_else(|| broken(what))?;
        Ok(Self { amount: money.amount_minor, currency: money.currency.clone() })
    }
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
        let id = MovieId::from_trusted(self.0.movie_id.clone());
        Ok(Movie(scope.cache.movie(&scope.upstreams, &id).await?))
    }

    async fn cinema(&self, ctx: &Context<'_>) -> async_graphql::Result<Cinema> {
        let scope = scope(ctx)?;
        let id = CinemaId::from_trusted(self.0.cinema_id.clone());
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
        let id = ShowtimeId::from_trusted(self.0.id.clone());
        Ok(SeatMap::from_proto(scope.upstreams.seat_map(&id).await?)?)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum SeatState {
    Available,
    Held,
    Booked,
    Blocked,
}

impl SeatState {
    fn from_proto(raw: i32) -> Result<Self, GatewayError> {
        match cinema::SeatState::try_from(raw) {
            Ok(cinema::SeatState::Available) => Ok(Self::Available),
            Ok(cinema::SeatState::Held) => Ok(Self::Held),
            Ok(cinema::SeatState::Booked) => Ok(Self::Booked),
            Ok(cinema::SeatState::Blocked) => Ok(Self::Blocked),
            Ok(cinema::SeatState::Unspecified) | Err(_) => Err(broken("a seat without a state")),
        }
    }
}

#[derive(Clone, Debug, SimpleObject)]
pub struct Seat {
    /// Stable seat label within the screen, e.g. "C7".
    pub id: ID,
    pub row: String,
    pub number: i32,
    pub category: String,
    pub state: SeatState,
    pub price: Money,
    /// A wheelchair space.
    pub accessible: bool,
}

impl Seat {
    pub fn from_proto(seat: cinema::Seat) -> Result<Self, GatewayError> {
        Ok(Seat {
            price: Money::from_proto(seat.price.as_ref(), "a seat without a price")?,
            state: SeatState::from_proto(seat.state)?,
            id: ID(seat.seat_id),
            row: seat.row,
            number: seat.number,
            category: seat.category,
            accessible: seat.accessible,
        })
    }
}

#[derive(Clone, Debug, SimpleObject)]
pub struct SeatMap {
    pub showtime_id: ID,
    pub seats: Vec<Seat>,
}

impl SeatMap {
    fn from_proto(map: cinema::SeatMap) -> Result<Self, GatewayError> {
        let seats = map.seats.into_iter().map(Seat::from_proto).collect::<Result<_, GatewayError>>()?;
        Ok(Self { showtime_id: ID(map.showtime_id), seats })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum BookingStatus {
    Held,
    Confirmed,
    PaymentFailed,
    Expired,
    Cancelled,
    Failed,
}

impl BookingStatus {
    pub fn from_proto(raw: i32) -> Result<Self, GatewayError> {
        use booking::BookingStatus as Proto;
        match Proto::try_from(raw) {
            Ok(Proto::Held) => Ok(Self::Held),
            Ok(Proto::Confirmed) => Ok(Self::Confirmed),
            Ok(Proto::PaymentFailed) => Ok(Self::PaymentFailed),
            Ok(Proto::Expired) => Ok(Self::Expired),
            Ok(Proto::Cancelled) => Ok(Self::Cancelled),
            Ok(Proto::Failed) => Ok(Self::Failed),
            Ok(Proto::Unspecified) | Err(_) => Err(broken("a booking without a status")),
        }
    }

    pub fn to_proto(self) -> booking::BookingStatus {
        use booking::BookingStatus as Proto;
        match self {
            Self::Held => Proto::Held,
            Self::Confirmed => Proto::Confirmed,
            Self::PaymentFailed => Proto::PaymentFailed,
            Self::Expired => Proto::Expired,
            Self::Cancelled => Proto::Cancelled,
            Self::Failed => Proto::Failed,
        }
    }
}

/// Money that went back to the customer.
#[derive(Clone, Debug, SimpleObject)]
pub struct Refund {
    pub amount: Money,
    /// What the cancellation policy kept.
    pub fee: Money,
    pub refunded_at: Option<DateTime<Utc>>,
}

/// One step of the booking saga, e.g. `charge` / `succeeded`.
#[derive(Clone, Debug, SimpleObject)]
pub struct BookingStep {
    /// e.g. "lock_seats", "charge", "confirm_seats", "release_seats", "refund".
    pub step: String,
    /// e.g. "started", "succeeded", "declined", "error".
    pub outcome: String,
    pub at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, SimpleObject)]
pub struct BookedSeat {
    pub seat_id: ID,
    pub category: String,
    pub price: Money,
}

pub struct Booking(pub booking::Booking);

#[Object]
impl Booking {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn status(&self) -> async_graphql::Result<BookingStatus> {
        Ok(BookingStatus::from_proto(self.0.status)?)
    }

    async fn showtime(&self, ctx: &Context<'_>) -> async_graphql::Result<Showtime> {
        let scope = scope(ctx)?;
        let id = ShowtimeId::from_trusted(self.0.showtime_id.clone());
        Ok(Showtime(scope.cache.showtime(&scope.upstreams, &id).await?))
    }

    async fn seats(&self) -> async_graphql::Result<Vec<BookedSeat>> {
        let seats = self.0.seats.iter().map(|seat| {
            Ok(BookedSeat {
                seat_id: ID(seat.seat_id.clone()),
                category: seat.category.clone(),
                price: Money::from_proto(seat.price.as_ref(), "a booked seat without a price")?,
            })
        });
        Ok(seats.collect::<Result<_, GatewayError>>()?)
    }

    async fn total(&self) -> async_graphql::Result<Money> {
        Ok(Money::from_proto(self.0.total.as_ref(), "a booking without a total")?)
    }

    /// When an unpaid hold lapses; null once the booking no longer expires.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at.as_ref().and_then(marquee_common::time::from_proto)
    }

    async fn created_at(&self) -> async_graphql::Result<DateTime<Utc>> {
        Ok(timestamp(self.0.created_at.as_ref(), "a booking without created_at")?)
    }

    async fn payment_id(&self) -> Option<&str> {
        non_empty(&self.0.payment_id)
    }

    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at.as_ref().and_then(marquee_common::time::from_proto)
    }

    /// Why it ended PAYMENT_FAILED, FAILED or CANCELLED, when known.
    async fn reason(&self) -> Option<&str> {
        non_empty(&self.0.reason)
    }

    /// Set once money went back to the customer (a cancellation or a compensation).
    async fn refund(&self) -> async_graphql::Result<Option<Refund>> {
        let Some(refund) = &self.0.refund else { return Ok(None) };
        Ok(Some(Refund {
            amount: Money::from_proto(refund.amount.as_ref(), "a refund without an amount")?,
            fee: Money::from_proto(refund.fee.as_ref(), "a refund without a fee")?,
            refunded_at: refund.at.as_ref().and_then(marquee_common::time::from_proto),
        }))
    }

    /// The saga's steps, oldest first.
    async fn history(&self) -> Vec<BookingStep> {
        self.0
            .history
            .iter()
            .map(|step| BookingStep {
                step: step.step.clone(),
                outcome: step.outcome.clone(),
                at: step.at.as_ref().and_then(marquee_common::time::from_proto),
            })
            .collect()
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum Role {
    Customer,
    Staff,
    Admin,
}

impl Role {
    pub fn to_proto(self) -> user::Role {
        match self {
            Self::Customer => user::Role::Customer,
            Self::Staff => user::Role::Staff,
            Self::Admin => user::Role::Admin,
        }
    }
}

/// Only ever built for the caller themself (`me`, `register`, `login`), so the
/// bookings and notifications it lists are the caller's own.
pub struct User(pub user::User);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// E.164, e.g. "+4915112345678"; null when none was given.
    async fn phone(&self) -> Option<&str> {
        non_empty(&self.0.phone)
    }

    async fn notification_preferences(&self) -> NotificationPreferences {
        // Every stored account has preferences; a missing message is the default.
        let prefs = self
            .0
            .notification_preferences
            .unwrap_or(user::NotificationPreferences { email: true, sms: false });
        NotificationPreferences { email: prefs.email, sms: prefs.sms }
    }

    async fn role(&self) -> async_graphql::Result<Role> {
        match user::Role::try_from(self.0.role) {
            Ok(user::Role::Customer) => Ok(Role::Customer),
            Ok(user::Role::Staff) => Ok(Role::Staff),
            Ok(user::Role::Admin) => Ok(Role::Admin),
            Ok(user::Role::Unspecified) | Err(_) => Err(broken("a user without a role").into()),
        }
    }

    /// Newest first; `statuses` keeps only those (all when omitted).
    async fn bookings(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        statuses: Option<Vec<BookingStatus>>,
    ) -> async_graphql::Result<Connection<PageCursor, Booking>> {
        let scope = scope(ctx)?;
        let request = PageRequest::new(first, after.as_deref())?;
        let id = UserId::from_trusted(self.0.id.clone());
        let statuses = statuses.unwrap_or_default().into_iter().map(BookingStatus::to_proto).collect();
        let page =
            scope.upstreams.bookings_of(&id, statuses, request.page_size, request.page_token.clone()).await?;
        let paged = request.page(page.items, &page.next_page_token);
        let look = ctx.look_ahead();
        let nodes = [look.field("edges").field("node"), look.field("nodes")];
        prefetch_for_bookings(&scope, paged.edges.iter().map(|(_, b)| b), &nodes).await?;
        Ok(paged.into_connection(Booking))
    }

    /// Newest first.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<PageCursor, Notification>> {
        let scope = scope(ctx)?;
        let request = PageRequest::new(first, after.as_deref())?;
        let id = UserId::from_trusted(self.0.id.clone());
        let page =
            scope.upstreams.notifications_of(&id, request.page_size, request.page_token.clone()).await?;
        Ok(request.page(page.items, &page.next_page_token).into_connection(Notification))
    }
}

pub struct Notification(pub notification::Notification);

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn booking_id(&self) -> Option<ID> {
        non_empty(&self.0.booking_id).map(|id| ID(id.to_owned()))
    }

    /// "email" or "sms".
    async fn channel(&self) -> &str {
        &self.0.channel
    }

    async fn recipient(&self) -> &str {
        &self.0.recipient
    }

    async fn subject(&self) -> &str {
        &self.0.subject
    }

    async fn body(&self) -> &str {
        &self.0.body
    }

    /// The event that caused it, e.g. "booking.confirmed".
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }

    async fn sent_at(&self) -> async_graphql::Result<DateTime<Utc>> {
        Ok(timestamp(self.0.sent_at.as_ref(), "a notification without sent_at")?)
    }
}

/// Which channels the user is notified on.
#[derive(SimpleObject)]
pub struct NotificationPreferences {
    pub email: bool,
    pub sms: bool,
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Bearer access token for the `Authorization` header; short-lived.
    pub token: String,
    /// One use: exchange it with `refreshToken` for a new pair. Reusing a spent one
    /// signs out every session descended from the same login.
    pub refresh_token: String,
    pub user: User,
}

impl AuthPayload {
    pub fn from_proto(response: user::AuthResponse) -> Result<Self, GatewayError> {
        let user = response.user.ok_or_else(|| broken("an auth response without a user"))?;
        Ok(Self { token: response.access_token, refresh_token: response.refresh_token, user: User(user) })
    }
}
