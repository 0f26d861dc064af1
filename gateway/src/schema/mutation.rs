use async_graphql::{Context, ID, InputObject, Object};

use super::scope;
use super::types::{AuthPayload, Booking, BookingStatus};
use crate::domain::{BookingId, IdempotencyKey, PaymentMethod, SeatSelection, ShowtimeId};
use crate::error::GatewayError;

#[derive(InputObject)]
pub struct RegisterInput {
    pub email: String,
    #[graphql(secret)]
    pub password: String,
    pub name: String,
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
        let response = scope.upstreams.register(input.email, input.password, input.name).await?;
        Ok(AuthPayload::from_proto(response)?)
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
