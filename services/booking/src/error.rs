//! The booking service's error boundary: what a caller can act on, and the rest.
//! The mapping to gRPC statuses (ErrorInfo reason = public code) lives here alone.

use chrono::{DateTime, SecondsFormat, Utc};
use marquee_kit::{ApiError, ErrorCode};
use tonic::Status;

use crate::domain::{BookingStatus, InvalidInput, PublicStatus};
use crate::saga::unanswered;

#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("booking not found")]
    NotFound,
    #[error("this idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// Another saga step holds the booking, or its status does not allow the request
    /// (e.g. paying a cancelled booking, or the loser of a pay/cancel race). Carries the
    /// status clients see and the saga's own.
    #[error("booking is {} ({}); the request does not apply to it now", .0.as_str(), .1.as_str())]
    Conflict(PublicStatus, BookingStatus),
    #[error("the hold on this booking has expired")]
    HoldExpired,
    #[error("at most {0} active bookings per showtime; pay for or cancel one first")]
    HoldLimitReached(u32),
    #[error("this booking can no longer be cancelled (cancellation closed at {})", .0.to_rfc3339_opts(SecondsFormat::Secs, true))]
    CancellationClosed(DateTime<Utc>),
    /// The payment processor failed transiently on every retry; nothing was charged
    /// and the booking is still held, so paying again later is safe.
    #[error("the payment could not be processed right now; nothing was charged, try again")]
    PaymentUnavailable,
    /// Cinema did not answer a hold in time (or could not be reached). The hold gave
    /// back whatever cinema may have locked for it and wrote no booking, so the same
    /// request may be repeated; until cinema's late lock, if any, is released the
    /// seats can still show as taken.
    #[error("cinema did not answer in time; no booking was made, retry in a moment")]
    SeatsUnanswered,
    /// Too many steps in flight in this process; nothing was done.
    #[error("the booking service is busy; nothing was done, retry in a moment")]
    Busy,
    /// A client-actionable error from user, cinema or payment, passed through as is
    /// (e.g. SEAT_UNAVAILABLE with its seat ids).
    #[error("{0}")]
    Upstream(ApiError),
    /// Cinema or payment did not answer a step's call (timed out, unreachable, cut
    /// off) even after its retries. The step is recorded and goes on (recovery, or a
    /// repeat of the request with the same key), so the caller is told to repeat it.
    #[error(transparent)]
    Unanswered(anyhow::Error),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl BookingError {
    /// Classifies a failed call to another service: its client errors pass through, a
    /// call that got no answer is the caller's to repeat, anything else (INTERNAL) is
    /// ours to log and hide.
    pub fn upstream(call: &'static str, status: &Status) -> Self {
        let error = ApiError::from_status(status);
        if error.code != ErrorCode::Internal {
            return Self::Upstream(error);
        }
        let cause = anyhow::anyhow!("{call} failed: {:?}: {}", status.code(), status.message());
        if unanswered(status) { Self::Unanswered(cause) } else { Self::Unexpected(cause) }
    }
}

impl From<BookingError> for Status {
    fn from(error: BookingError) -> Self {
        let message = error.to_string();
        match error {
            BookingError::InvalidInput(_) => ApiError::bad_input(message).into(),
            BookingError::NotFound => ApiError::not_found(message).into(),
            BookingError::IdempotencyKeyReused => ApiError::new(ErrorCode::Conflict, message).into(),
            BookingError::Conflict(status, saga_status) => ApiError::new(ErrorCode::Conflict, message)
                .with_meta("status", status.as_str())
                .with_meta("saga_status", saga_status.as_str())
                .into(),
            BookingError::HoldExpired => ApiError::new(ErrorCode::HoldExpired, message).into(),
            BookingError::HoldLimitReached(limit) => {
                ApiError::new(ErrorCode::Conflict, message).with_meta("limit", limit.to_string()).into()
            }
            BookingError::CancellationClosed(at) => ApiError::bad_input(message)
                .with_meta("closed_at", at.to_rfc3339_opts(SecondsFormat::Secs, true))
                .into(),
            BookingError::PaymentUnavailable => ApiError::new(ErrorCode::PaymentDeclined, message)
                .with_meta("retryable", "true")
                .with_grpc_code(tonic::Code::Unavailable)
                .into(),
            BookingError::Busy => ApiError::new(ErrorCode::ServiceBusy, message).with_retry_after(1).into(),
            BookingError::SeatsUnanswered => ApiError::new(ErrorCode::ServiceBusy, message)
                .with_retry_after(1)
                .with_grpc_code(tonic::Code::Unavailable)
                .into(),
            BookingError::Upstream(error) => error.into(),
            // Plain UNAVAILABLE, as for a database out of reach: the gateway answers
            // INTERNAL marked retryable.
            BookingError::Unanswered(error) => marquee_kit::error::unavailable(&error, "a service"),
            BookingError::Unexpected(error) => marquee_mongo::internal(&error),
        }
    }
}
