//! The booking service's error boundary: what a caller can act on, and the rest.

use marquee_common::{ApiError, ErrorCode};
use tonic::Status;

use crate::domain::{BookingStatus, InvalidInput};

#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("booking not found")]
    NotFound,
    #[error("this idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("booking is {0}: another payment attempt is in progress")]
    PaymentInProgress(BookingStatus),
    #[error("the hold on this booking has expired")]
    HoldExpired,
    /// The payment processor failed transiently on every retry; nothing was charged
    /// and the booking is still held, so paying again later is safe.
    #[error("the payment could not be processed right now; nothing was charged, try again")]
    PaymentUnavailable,
    /// A client-actionable error from user, cinema or payment, passed through as is
    /// (e.g. SEAT_UNAVAILABLE with its seat ids).
    #[error("{0}")]
    Upstream(ApiError),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl BookingError {
    /// Classifies a failed call to another service: its client errors pass through,
    /// anything else (transport, INTERNAL) is ours to log and hide.
    pub fn upstream(call: &'static str, status: &Status) -> Self {
        let error = ApiError::from_status(status);
        if error.code == ErrorCode::Internal {
            Self::Unexpected(anyhow::anyhow!("{call} failed: {:?}: {}", status.code(), status.message()))
        } else {
            Self::Upstream(error)
        }
    }
}

impl From<BookingError> for Status {
    fn from(error: BookingError) -> Self {
        let message = error.to_string();
        match error {
            BookingError::InvalidInput(_) => ApiError::bad_input(message).into(),
            BookingError::NotFound => ApiError::not_found(message).into(),
            BookingError::IdempotencyKeyReused => ApiError::new(ErrorCode::Conflict, message).into(),
            BookingError::PaymentInProgress(status) => {
                ApiError::new(ErrorCode::Conflict, message).with_meta("status", status.as_str()).into()
            }
            BookingError::HoldExpired => ApiError::new(ErrorCode::HoldExpired, message).into(),
            BookingError::PaymentUnavailable => ApiError::new(ErrorCode::PaymentDeclined, message)
                .with_meta("retryable", "true")
                .with_grpc_code(tonic::Code::Unavailable)
                .into(),
            BookingError::Upstream(error) => error.into(),
            BookingError::Unexpected(error) => marquee_common::error::internal(&error),
        }
    }
}
