//! The gRPC face of the saga: parses requests into domain types, renders bookings.

use marquee_kit::time::to_proto;
use marquee_proto::booking::v1 as proto;
use marquee_proto::booking::v1::booking_service_server::BookingService;
use tonic::{Request, Response, Status};

use crate::domain::{
    Booking, BookingId, Caller, CancelRequest, HoldRequest, IdempotencyKey, InvalidInput, ListQuery,
    PayRequest, PaymentMethod, PublicStatus, ShowtimeId, UserId, cancel_reason, hold_seats,
};
use crate::error::BookingError;
use crate::saga::Saga;

pub struct BookingApi {
    saga: Saga,
}

impl BookingApi {
    pub fn new(saga: Saga) -> Self {
        Self { saga }
    }
}

fn render_status(status: PublicStatus) -> proto::BookingStatus {
    match status {
        PublicStatus::Held => proto::BookingStatus::Held,
        PublicStatus::Confirmed => proto::BookingStatus::Confirmed,
        PublicStatus::PaymentFailed => proto::BookingStatus::PaymentFailed,
        PublicStatus::Expired => proto::BookingStatus::Expired,
        PublicStatus::Cancelled => proto::BookingStatus::Cancelled,
        PublicStatus::Failed => proto::BookingStatus::Failed,
    }
}

fn parse_status(raw: i32) -> Result<PublicStatus, InvalidInput> {
    match proto::BookingStatus::try_from(raw) {
        Ok(proto::BookingStatus::Held) => Ok(PublicStatus::Held),
        Ok(proto::BookingStatus::Confirmed) => Ok(PublicStatus::Confirmed),
        Ok(proto::BookingStatus::PaymentFailed) => Ok(PublicStatus::PaymentFailed),
        Ok(proto::BookingStatus::Expired) => Ok(PublicStatus::Expired),
        Ok(proto::BookingStatus::Cancelled) => Ok(PublicStatus::Cancelled),
        Ok(proto::BookingStatus::Failed) => Ok(PublicStatus::Failed),
        _ => Err(InvalidInput(format!("status {raw} is not a booking status"))),
    }
}

fn render(booking: Booking) -> proto::Booking {
    let status = render_status(booking.public_status());
    proto::Booking {
        id: booking.id.to_string(),
        user_id: booking.user_id.to_string(),
        showtime_id: booking.showtime_id.to_string(),
        seats: booking
            .seats
            .iter()
            .map(|seat| proto::BookedSeat {
                seat_id: seat.seat_id.as_str().to_owned(),
                category: seat.category.clone(),
                price: Some(seat.price.to_proto()),
            })
            .collect(),
        status: status.into(),
        total: Some(booking.total.to_proto()),
        expires_at: Some(to_proto(booking.expires_at)),
        created_at: Some(to_proto(booking.created_at)),
        payment_id: booking.payment_id.unwrap_or_default(),
        history: booking
            .history
            .into_iter()
            .map(|step| proto::SagaStep {
                step: step.step,
                outcome: step.outcome,
                at: Some(to_proto(step.at)),
                detail: step.detail,
            })
            .collect(),
        updated_at: Some(to_proto(booking.updated_at)),
        // Stated once the booking is finished: while REFUNDING, the money is not back yet.
        refund: booking.refund.filter(|_| booking.status.is_terminal()).map(|r| proto::BookingRefund {
            amount: Some(r.amount.to_proto()),
            fee: Some(r.fee.to_proto()),
            refund_id: r.refund_id.unwrap_or_default(),
            at: r.at.map(to_proto),
        }),
        reason: booking.reason.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl BookingService for BookingApi {
    #[tracing::instrument(skip_all, fields(user.id = %request.get_ref().user_id, showtime.id = %request.get_ref().showtime_id))]
    async fn hold_seats(
        &self,
        request: Request<proto::HoldSeatsRequest>,
    ) -> Result<Response<proto::Booking>, Status> {
        let raw = request.into_inner();
        let request = HoldRequest {
            user_id: UserId::parse(&raw.user_id).map_err(BookingError::from)?,
            showtime_id: ShowtimeId::parse(&raw.showtime_id).map_err(BookingError::from)?,
            seats: hold_seats(&raw.seat_ids).map_err(BookingError::from)?,
            idempotency_key: IdempotencyKey::parse(&raw.idempotency_key).map_err(BookingError::from)?,
        };
        Ok(Response::new(render(self.saga.hold(request).await?)))
    }

    #[tracing::instrument(skip_all, fields(booking.id = %request.get_ref().booking_id, user.id = %request.get_ref().user_id))]
    async fn pay_booking(
        &self,
        request: Request<proto::PayBookingRequest>,
    ) -> Result<Response<proto::Booking>, Status> {
        let raw = request.into_inner();
        let request = PayRequest {
            booking_id: BookingId::parse(&raw.booking_id).map_err(BookingError::from)?,
            user_id: UserId::parse(&raw.user_id).map_err(BookingError::from)?,
            payment_method: PaymentMethod::parse(&raw.payment_method).map_err(BookingError::from)?,
            idempotency_key: IdempotencyKey::parse(&raw.idempotency_key).map_err(BookingError::from)?,
        };
        Ok(Response::new(render(self.saga.pay(request).await?)))
    }

    #[tracing::instrument(skip_all, fields(
        booking.id = %request.get_ref().booking_id,
        user.id = %request.get_ref().user_id,
        as_admin = request.get_ref().as_admin,
    ))]
    async fn cancel_booking(
        &self,
        request: Request<proto::CancelBookingRequest>,
    ) -> Result<Response<proto::Booking>, Status> {
        let raw = request.into_inner();
        let request = CancelRequest {
            booking_id: BookingId::parse(&raw.booking_id).map_err(BookingError::from)?,
            caller: Caller {
                user_id: UserId::parse(&raw.user_id).map_err(BookingError::from)?,
                admin: raw.as_admin,
            },
            reason: cancel_reason(&raw.reason).map_err(BookingError::from)?,
        };
        Ok(Response::new(render(self.saga.cancel(request).await?)))
    }

    #[tracing::instrument(skip_all, fields(booking.id = %request.get_ref().id, user.id = %request.get_ref().user_id))]
    async fn get_booking(
        &self,
        request: Request<proto::GetBookingRequest>,
    ) -> Result<Response<proto::Booking>, Status> {
        let raw = request.into_inner();
        let id = BookingId::parse(&raw.id).map_err(BookingError::from)?;
        let caller =
            Caller { user_id: UserId::parse(&raw.user_id).map_err(BookingError::from)?, admin: raw.as_admin };
        Ok(Response::new(render(self.saga.get(id, caller).await?)))
    }

    #[tracing::instrument(skip_all, fields(booking.id = %request.get_ref().id, user.id = %request.get_ref().user_id))]
    async fn quote_cancellation(
        &self,
        request: Request<proto::GetBookingRequest>,
    ) -> Result<Response<proto::CancellationQuote>, Status> {
        let raw = request.into_inner();
        let id = BookingId::parse(&raw.id).map_err(BookingError::from)?;
        let caller =
            Caller { user_id: UserId::parse(&raw.user_id).map_err(BookingError::from)?, admin: raw.as_admin };
        let quote = self.saga.quote_cancellation(id, caller).await?;
        Ok(Response::new(proto::CancellationQuote {
            cancellable: quote.cancellable,
            refund: Some(quote.refund.to_proto()),
            fee: Some(quote.fee.to_proto()),
            closes_at: quote.closes_at.map(to_proto),
        }))
    }

    #[tracing::instrument(skip_all, fields(user.id = %request.get_ref().user_id))]
    async fn list_bookings(
        &self,
        request: Request<proto::ListBookingsRequest>,
    ) -> Result<Response<proto::ListBookingsResponse>, Status> {
        let raw = request.into_inner();
        let query = ListQuery {
            user_id: UserId::parse(&raw.user_id).map_err(BookingError::from)?,
            statuses: raw
                .statuses
                .iter()
                .map(|s| parse_status(*s))
                .collect::<Result<_, _>>()
                .map_err(BookingError::from)?,
            showtime_id: match raw.showtime_id.trim() {
                "" => None,
                id => Some(ShowtimeId::parse(id).map_err(BookingError::from)?),
            },
            page_size: ListQuery::page_size(raw.page_size).map_err(BookingError::from)?,
            after: match raw.page_token.trim() {
                "" => None,
                token => Some(
                    BookingId::parse(token)
                        .map_err(|_| InvalidInput("page_token is not valid".to_owned()))
                        .map_err(BookingError::from)?,
                ),
            },
        };
        let (bookings, next) = self.saga.list(query).await?;
        Ok(Response::new(proto::ListBookingsResponse {
            bookings: bookings.into_iter().map(render).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }
}
