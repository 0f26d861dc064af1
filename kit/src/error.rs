//! The one place where errors become `tonic::Status` and back.
//!
//! Every client-actionable error travels as a gRPC status whose `ErrorInfo` detail
//! carries a stable `reason` (the public error code the gateway exposes as GraphQL
//! `extensions.code`) and metadata such as the unavailable seat ids. Anything else is
//! an opaque INTERNAL (UNAVAILABLE when a store could not be reached: worth retrying;
//! `marquee_mongo::internal` tells which): its cause chain is logged once, here, and
//! never sent.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The domain in every `ErrorInfo` Marquee emits.
pub const ERROR_DOMAIN: &str = "marquee";

/// `ErrorInfo` metadata key: whole seconds a client should wait before retrying.
pub const RETRY_AFTER_SECONDS: &str = "retry_after_seconds";

/// Public error codes (the DESIGN.md contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    BadUserInput,
    NotFound,
    SeatUnavailable,
    /// The hold would break a seating rule (e.g. strand a single seat).
    SeatRuleViolation,
    HoldExpired,
    PaymentDeclined,
    Conflict,
    RateLimited,
    /// The service is at capacity for expensive work right now; retry after a pause.
    ServiceBusy,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::NotFound => "NOT_FOUND",
            Self::SeatUnavailable => "SEAT_UNAVAILABLE",
            Self::SeatRuleViolation => "SEAT_RULE_VIOLATION",
            Self::HoldExpired => "HOLD_EXPIRED",
            Self::PaymentDeclined => "PAYMENT_DECLINED",
            Self::Conflict => "CONFLICT",
            Self::RateLimited => "RATE_LIMITED",
            Self::ServiceBusy => "SERVICE_BUSY",
            Self::Internal => "INTERNAL",
        }
    }

    pub fn parse(reason: &str) -> Option<Self> {
        Some(match reason {
            "UNAUTHENTICATED" => Self::Unauthenticated,
            "FORBIDDEN" => Self::Forbidden,
            "BAD_USER_INPUT" => Self::BadUserInput,
            "NOT_FOUND" => Self::NotFound,
            "SEAT_UNAVAILABLE" => Self::SeatUnavailable,
            "SEAT_RULE_VIOLATION" => Self::SeatRuleViolation,
            "HOLD_EXPIRED" => Self::HoldExpired,
            "PAYMENT_DECLINED" => Self::PaymentDeclined,
            "CONFLICT" => Self::Conflict,
            "RATE_LIMITED" => Self::RateLimited,
            "SERVICE_BUSY" => Self::ServiceBusy,
            "INTERNAL" => Self::Internal,
            _ => return None,
        })
    }

    /// The gRPC code a status with this reason carries.
    pub fn grpc_code(self) -> Code {
        match self {
            Self::Unauthenticated => Code::Unauthenticated,
            Self::Forbidden => Code::PermissionDenied,
            Self::BadUserInput => Code::InvalidArgument,
            Self::NotFound => Code::NotFound,
            Self::SeatUnavailable | Self::SeatRuleViolation | Self::HoldExpired | Self::PaymentDeclined => {
                Code::FailedPrecondition
            }
            Self::Conflict => Code::Aborted,
            Self::RateLimited | Self::ServiceBusy => Code::ResourceExhausted,
            Self::Internal => Code::Internal,
        }
    }

    /// Best guess for a status that carries no `ErrorInfo` (e.g. from tonic itself).
    fn from_grpc_code(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => Self::BadUserInput,
            Code::NotFound => Self::NotFound,
            Code::AlreadyExists | Code::Aborted => Self::Conflict,
            Code::Unauthenticated => Self::Unauthenticated,
            Code::PermissionDenied => Self::Forbidden,
            // Only a status with an ErrorInfo can say SERVICE_BUSY.
            Code::ResourceExhausted => Self::RateLimited,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error a client can act on: a code, a human message and structured metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub metadata: HashMap<String, String>,
    /// The gRPC code to send instead of `code.grpc_code()`, where a contract asks for a
    /// more precise one (e.g. FAILED_PRECONDITION for a reused idempotency key, which
    /// clients still see as CONFLICT).
    pub grpc_code: Option<Code>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), metadata: HashMap::new(), grpc_code: None }
    }

    pub fn with_meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn with_grpc_code(mut self, code: Code) -> Self {
        self.grpc_code = Some(code);
        self
    }

    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadUserInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// Tells the client how long to back off; travels as metadata and as a `RetryInfo`.
    pub fn with_retry_after(self, seconds: u64) -> Self {
        self.with_meta(RETRY_AFTER_SECONDS, seconds.to_string())
    }

    /// The back-off hint set by `with_retry_after`, if any.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.metadata.get(RETRY_AFTER_SECONDS).and_then(|v| v.parse().ok())
    }

    /// Reads the error back out of a status received from another service.
    /// Transport failures and statuses without details become `Internal` (or the
    /// closest code), with the original message kept for logs.
    pub fn from_status(status: &Status) -> Self {
        match status.get_details_error_info() {
            Some(info) if info.domain == ERROR_DOMAIN => {
                let code = ErrorCode::parse(&info.reason).unwrap_or(ErrorCode::Internal);
                Self {
                    code,
                    message: status.message().to_owned(),
                    metadata: info.metadata,
                    grpc_code: Some(status.code()),
                }
            }
            _ => Self::new(ErrorCode::from_grpc_code(status.code()), status.message())
                .with_grpc_code(status.code()),
        }
    }

    /// Comma-separated metadata value split into its parts (e.g. `seat_ids`).
    pub fn meta_list(&self, key: &str) -> Vec<String> {
        self.metadata
            .get(key)
            .map(|v| v.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        if error.code == ErrorCode::Internal {
            return Status::internal("internal error");
        }
        let retry_after = error.retry_after_seconds();
        let mut details = ErrorDetails::with_error_info(error.code.as_str(), ERROR_DOMAIN, error.metadata);
        if let Some(seconds) = retry_after {
            // The standard detail, for gRPC clients that know nothing of our metadata.
            details.set_retry_info(Some(Duration::from_secs(seconds)));
        }
        let grpc_code = error.grpc_code.unwrap_or_else(|| error.code.grpc_code());
        Status::with_error_details(grpc_code, error.message, details)
    }
}

/// Logs an unexpected error with its whole cause chain and returns an opaque
/// INTERNAL. (`marquee_mongo::internal` answers UNAVAILABLE instead when MongoDB could
/// not be reached.)
pub fn internal(error: &anyhow::Error) -> Status {
    tracing::error!(error = format!("{error:#}"), "unexpected error");
    Status::internal("internal error")
}

/// Logs an error caused by a dependency that did not answer and returns UNAVAILABLE:
/// the same call may succeed once it is back (the gateway tells the client to retry).
/// `what` names the dependency in the log line and the status.
pub fn unavailable(error: &anyhow::Error, what: &str) -> Status {
    tracing::warn!(error = format!("{error:#}"), "{what} did not answer");
    Status::unavailable(format!("{what} did not answer; retry"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexpected_errors_are_opaque() {
        let bug = anyhow::anyhow!("a document without a status").context("cannot read booking");
        assert_eq!(internal(&bug).code(), Code::Internal);
        assert_eq!(internal(&bug).message(), "internal error");
        let down = anyhow::anyhow!("connection refused");
        let status = unavailable(&down, "the database");
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unavailable, "the database did not answer; retry")
        );
    }

    #[test]
    fn api_errors_round_trip_through_status() {
        let sent = ApiError::new(ErrorCode::SeatUnavailable, "seats taken").with_meta("seat_ids", "A1,A2");
        let status = Status::from(sent.clone());
        assert_eq!(status.code(), Code::FailedPrecondition);
        let received = ApiError::from_status(&status);
        assert_eq!(received, sent.clone().with_grpc_code(Code::FailedPrecondition));
        assert_eq!(received.meta_list("seat_ids"), vec!["A1", "A2"]);
    }

    #[test]
    fn a_precise_grpc_code_keeps_the_public_reason() {
        let status = Status::from(
            ApiError::new(ErrorCode::Conflict, "key reused").with_grpc_code(Code::FailedPrecondition),
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(ApiError::from_status(&status).code, ErrorCode::Conflict);
    }

    #[test]
    fn service_busy_is_resource_exhausted_with_a_retry_hint() {
        assert_eq!(ErrorCode::parse("SERVICE_BUSY"), Some(ErrorCode::ServiceBusy));
        assert_eq!(ErrorCode::ServiceBusy.as_str(), "SERVICE_BUSY");
        let status = Status::from(ApiError::new(ErrorCode::ServiceBusy, "busy").with_retry_after(1));
        assert_eq!(status.code(), Code::ResourceExhausted);
        let info = status.get_details_error_info().map(|i| (i.reason, i.metadata));
        let expected_meta = HashMap::from([(RETRY_AFTER_SECONDS.to_owned(), "1".to_owned())]);
        assert_eq!(info, Some(("SERVICE_BUSY".to_owned(), expected_meta)));
        let retry = status.get_details_retry_info().and_then(|r| r.retry_delay);
        assert_eq!(retry, Some(Duration::from_secs(1)));
        let received = ApiError::from_status(&status);
        assert_eq!((received.code, received.retry_after_seconds()), (ErrorCode::ServiceBusy, Some(1)));
        // Without an ErrorInfo, RESOURCE_EXHAUSTED stays the rate limit it always was.
        assert_eq!(ApiError::from_status(&Status::resource_exhausted("x")).code, ErrorCode::RateLimited);
    }

    #[test]
    fn plain_statuses_map_by_grpc_code_and_internal_stays_opaque() {
        assert_eq!(ApiError::from_status(&Status::not_found("x")).code, ErrorCode::NotFound);
        assert_eq!(ApiError::from_status(&Status::unavailable("down")).code, ErrorCode::Internal);
        let status = Status::from(ApiError::new(ErrorCode::Internal, "db password is hunter2"));
        assert_eq!(status.message(), "internal error");
    }
}
