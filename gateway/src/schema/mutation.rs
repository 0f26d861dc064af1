use async_graphql::{Context, ID, InputObject, Object};

use marquee_proto::user::v1 as user;

use super::scope;
use super::types::{AuthPayload, Booking, BookingStatus, Role, User};
use crate::domain::{BookingId, IdempotencyKey, PaymentMethod, Phone, SeatSelection, ShowtimeId, UserId};
use crate::error::GatewayError;

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
        let target = UserId::parse(&user_id)?;
        Ok(User(scope.upstreams.set_user_role(&identity.user_id, &target, role.to_proto()).await?))
    }

    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> async_graphql::Result<AuthPayload> {
        let scope = scope(ctx)?;
        let response = scope.upstreams.login(input.email, input.password).await?;
        Ok(AuthPayload::from_proto(response)?)
    }

    /// Holds every listed seat for the caller, or none (SEAT_UNAVAILABLE with `seatIds`).
    async fn hold_seats(&self, ctx: &Context<'_>, input: HoldSeatsInput) -> async_graphql::Result<Booking> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let showtime = ShowtimeId::parse(&input.showtime_id)?;
        let seat_ids: Vec<&str> = input.seat_ids.iter().map(|id| id.as_str()).collect();
        let seats = SeatSelection::parse(&seat_ids)?;
        let key = IdempotencyKey::parse(&input.idempotency_key)?;
        let booking = scope.upstreams.hold_seats(&identity.user_id, showtime, seats, key).await?;
        Ok(Booking(booking))
    }

    /// Charges the held booking. A declined card is PAYMENT_DECLINED; the booking is
    /// then PAYMENT_FAILED and its seats are free again.
    async fn pay_booking(&self, ctx: &Context<'_>, input: PayBookingInput) -> async_graphql::Result<Booking> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let booking_id = BookingId::parse(&input.booking_id)?;
        let method = PaymentMethod::parse(&input.payment_method)?;
        let key = IdempotencyKey::parse(&input.idempotency_key)?;
        let booking = scope.upstreams.pay_booking(&identity.user_id, booking_id, method, key).await?;
        if BookingStatus::from_proto(booking.status)? == BookingStatus::PaymentFailed {
            return Err(GatewayError::PaymentDeclined.into());
        }
        Ok(Booking(booking))
    }
}
