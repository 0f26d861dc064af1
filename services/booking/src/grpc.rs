//! The gRPC face of the saga: parses requests into domain types, renders bookings.

use marquee_common::time::to_proto;
use marquee_proto::booking::v1 as proto;
use marquee_proto::booking::v1::booking_service_server::BookingService;
use tonic::{Request, Response, Status};

use crate::domain::{
    Booking, BookingId, BookingStatus, HoldRequest, IdempotencyKey, PayRequest, PaymentMethod, SeatSelection,
    ShowtimeId, UserId,
};
use crate::error::BookingError;
use crate::events::money;
use crate::saga::Saga;

pub struct BookingApi {
    saga: Saga,
}

impl BookingApi {
    pub fn new(saga: Saga) -> Self {
        Self { saga }
    }
}

fn status(status: BookingStatus) -> proto::BookingStatus {
    match status {
        // A charge in flight is still a hold to the client.
        BookingStatus::Held | BookingStatus::Charging => proto::BookingStatus::Held,
        BookingStatus::Confirmed => proto::BookingStatus::Confirmed,
        BookingStatus::PaymentFailed => proto::BookingStatus::PaymentFailed,
        BookingStatus::Failed => proto::BookingStatus::Failed,
    }
}

fn render(booking: Booking) -> proto::Booking {
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
                price: Some(money(&seat.price)),
            })
            .collect(),
        status: status(booking.status).into(),
        total: Some(money(&booking.total)),
        expires_at: Some(to_proto(booking.expires_at)),
        created_at: Some(to_proto(booking.created_at)),
        payment_id: booking.payment_id.unwrap_or_default(),
        ..Default::default()
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
            seats: SeatSelection::parse(&raw.seat_ids).map_err(BookingError::from)?,
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
        // The charge is keyed by the booking, so the request's key only has to be present.
        IdempotencyKey::parse(&raw.idempotency_key).map_err(BookingError::from)?;
        let request = PayRequest {
            booking_id: BookingId::parse(&raw.booking_id).map_err(BookingError::from)?,
            user_id: UserId::parse(&raw.user_id).map_err(BookingError::from)?,
            payment_method: PaymentMethod::parse(&raw.payment_method).map_err(BookingError::from)?,
        };
        Ok(Response::new(render(self.saga.pay(request).await?)))
    }

    #[tracing::instrument(skip_all, fields(booking.id = %request.get_ref().id, user.id = %request.get_ref().user_id))]
    async fn get_booking(
        &self,
        request: Request<proto::GetBookingRequest>,
    ) -> Result<Response<proto::Booking>, Status> {
        let raw = request.into_inner();
        let id = BookingId::parse(&raw.id).map_err(BookingError::from)?;
        let user_id = UserId::parse(&raw.user_id).map_err(BookingError::from)?;
        Ok(Response::new(render(self.saga.get(id, user_id).await?)))
    }

    #[tracing::instrument(skip_all, fields(user.id = %request.get_ref().user_id))]
    async fn list_bookings(
        &self,
        request: Request<proto::ListBookingsRequest>,
    ) -> Result<Response<proto::ListBookingsResponse>, Status> {
        let user_id = UserId::parse(&request.get_ref().user_id).map_err(BookingError::from)?;
        let bookings = self.saga.list(user_id).await?.into_iter().map(render).collect();
        Ok(Response::new(proto::ListBookingsResponse { bookings, next_page_token: String::new() }))
    }

    async fn cancel_booking(
        &self,
        _request: Request<proto::CancelBookingRequest>,
    ) -> Result<Response<proto::Booking>, Status> {
        // Replaced by the cancellation saga (issue #5) in the next commit.
        Err(Status::unimplemented("CancelBooking is not available yet"))
    }
}
