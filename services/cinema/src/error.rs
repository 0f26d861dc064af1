//! The cinema service's error boundary: what a client can act on, and everything else.

use marquee_kit::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum CinemaError {
    #[error("{0}")]
    BadInput(String),
    /// Seat ids that do not exist in the showtime's screen.
    #[error("unknown seats: {}", .0.join(","))]
    UnknownSeats(Vec<String>),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// Seats held or booked by someone else (or, for a confirmation, not held by the
    /// booking). Nothing was changed.
    #[error("seats unavailable: {}", .0.join(","))]
    SeatsUnavailable(Vec<String>),
    /// The showtime starts too soon (or has started) to hold seats for it.
    #[error("holds for showtime {showtime} closed at {closed_at}")]
    HoldsClosed { showtime: String, closed_at: chrono::DateTime<chrono::Utc> },
    /// The booking holds nothing live any more (released, or its hold lapsed).
    #[error("{0}")]
    HoldExpired(String),
    #[error("{0}")]
    Conflict(String),
    /// The hold would leave these free seats stranded (the no-orphan rule).
    #[error("the hold would leave seat {} alone", .0.join(","))]
    SeatRule(Vec<String>),
    /// The user already has this many live holds on the showtime; nothing was locked.
    #[error("at most {0} active bookings per showtime; pay for or cancel one first")]
    HoldLimit(u32),
    /// The new showtime would overlap this one on the same screen.
    #[error("the screen is busy with showtime {0} at that time")]
    OverlappingShowtime(String),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl CinemaError {
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound { what, id: id.to_string() }
    }
}

impl From<marquee_types::InvalidInput> for CinemaError {
    fn from(error: marquee_types::InvalidInput) -> Self {
        Self::BadInput(error.0)
    }
}

impl From<CinemaError> for tonic::Status {
    fn from(error: CinemaError) -> Self {
        let message = error.to_string();
        match error {
            CinemaError::BadInput(_) => ApiError::bad_input(message).into(),
            CinemaError::UnknownSeats(seats) => {
                ApiError::bad_input(message).with_meta("seat_ids", seats.join(",")).into()
            }
            CinemaError::NotFound { .. } => ApiError::not_found(message).into(),
            CinemaError::SeatsUnavailable(seats) => ApiError::new(ErrorCode::SeatUnavailable, message)
                .with_meta("seat_ids", seats.join(","))
                .into(),
            CinemaError::HoldsClosed { closed_at, .. } => {
                ApiError::bad_input(message).with_meta("closed_at", closed_at.to_rfc3339()).into()
            }
            CinemaError::HoldExpired(_) => ApiError::new(ErrorCode::HoldExpired, message).into(),
            CinemaError::Conflict(_) => ApiError::new(ErrorCode::Conflict, message).into(),
            CinemaError::SeatRule(stranded) => ApiError::new(ErrorCode::SeatRuleViolation, message)
                .with_meta("seat_ids", stranded.join(","))
                .into(),
            CinemaError::HoldLimit(limit) => {
                ApiError::new(ErrorCode::Conflict, message).with_meta("limit", limit.to_string()).into()
            }
            CinemaError::OverlappingShowtime(id) => {
                ApiError::new(ErrorCode::Conflict, message).with_meta("showtime_id", id).into()
            }
            CinemaError::Unexpected(e) => marquee_kit::error::internal(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_seats_travel_as_metadata() {
        let status = tonic::Status::from(CinemaError::SeatsUnavailable(vec!["A1".into(), "A2".into()]));
        let api = ApiError::from_status(&status);
        assert_eq!(api.code, ErrorCode::SeatUnavailable);
        assert_eq!(api.meta_list("seat_ids"), vec!["A1", "A2"]);
    }

    #[test]
    fn unexpected_errors_stay_opaque() {
        let status = tonic::Status::from(CinemaError::Unexpected(anyhow::anyhow!("password=hunter2")));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }
}
