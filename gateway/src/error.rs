//! The one place where gateway failures become GraphQL errors with `extensions.code`.

use async_graphql::ErrorExtensions;
use marquee_kit::{ApiError, ErrorCode};
use tonic::{Code, Status};

/// The wait suggested with a SERVICE_BUSY that came without a hint of its own: a
/// refusal for lack of capacity usually clears within a second.
pub const BUSY_RETRY_AFTER_SECONDS: u64 = 1;

/// Everything a resolver can fail with.
///
/// Deliberately not `Display`: async-graphql converts any `Display` type into an
/// error without extensions, so a `?` could silently drop the code. Without it,
/// `?` can only go through the `From` impl below, which always sets one.
#[derive(Debug)]
pub enum GatewayError {
    /// No credentials where they are required, or credentials that do not verify.
    Unauthenticated(&'static str),
    /// Authenticated, but the role does not allow this operation.
    Forbidden(&'static str),
    /// The request clashes with another one (e.g. an idempotency key reused for a
    /// different payload, or still in flight).
    Conflict(String),
    /// The client sent something malformed (an ID, a cursor, an empty list...).
    BadInput(String),
    /// The charge was declined; the booking is `PAYMENT_FAILED` and its seats are free.
    PaymentDeclined,
    /// A client-actionable error reported by an upstream service.
    Upstream(ApiError),
    /// An upstream did not answer in time or could not be reached. Still `INTERNAL`
    /// (the contract has no other code for it) but marked retryable: repeating the
    /// request with the same idempotency key is safe and may succeed.
    Transient(anyhow::Error),
    /// The gateway could not serve the request now and did nothing (its Redis did not
    /// answer a token check): SERVICE_BUSY, retryable, like an upstream at capacity.
    Busy(anyhow::Error),
    /// Anything else: logged once when it becomes a GraphQL error, opaque to clients.
    Unexpected(anyhow::Error),
}

impl From<marquee_types::InvalidInput> for GatewayError {
    fn from(error: marquee_types::InvalidInput) -> Self {
        Self::BadInput(error.0)
    }
}

impl GatewayError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::BadInput(message.into())
    }

    pub fn unauthenticated() -> Self {
        Self::Unauthenticated("authentication required")
    }

    /// A copy for each of the several resolvers that share one failed batch lookup.
    /// The cause of an unexpected error survives as text, which is all the log needs.
    pub fn duplicate(&self) -> Self {
        match self {
            Self::Unauthenticated(message) => Self::Unauthenticated(message),
            Self::Forbidden(message) => Self::Forbidden(message),
            Self::Conflict(message) => Self::Conflict(message.clone()),
            Self::BadInput(message) => Self::BadInput(message.clone()),
            Self::PaymentDeclined => Self::PaymentDeclined,
            Self::Upstream(api) => Self::Upstream(api.clone()),
            Self::Transient(cause) => Self::Transient(anyhow::anyhow!("{cause:#}")),
            Self::Busy(cause) => Self::Busy(anyhow::anyhow!("{cause:#}")),
            Self::Unexpected(cause) => Self::Unexpected(anyhow::anyhow!("{cause:#}")),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::BadInput(_) => ErrorCode::BadUserInput,
            Self::PaymentDeclined => ErrorCode::PaymentDeclined,
            Self::Upstream(api) => api.code,
            Self::Busy(_) => ErrorCode::ServiceBusy,
            Self::Transient(_) | Self::Unexpected(_) => ErrorCode::Internal,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == ErrorCode::NotFound
    }

    /// How long the client should wait before repeating the request, when the upstream
    /// said (a login lock-out, a busy service).
    fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::Busy(_) => Some(BUSY_RETRY_AFTER_SECONDS),
            // SERVICE_BUSY always carries a hint, even from an upstream that sent none.
            Self::Upstream(api) => api
                .retry_after_seconds()
                .or_else(|| (api.code == ErrorCode::ServiceBusy).then_some(BUSY_RETRY_AFTER_SECONDS)),
            _ => None,
        }
    }
}

impl From<Status> for GatewayError {
    fn from(status: Status) -> Self {
        let api = ApiError::from_status(&status);
        let transient = matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled);
        if api.code == ErrorCode::Internal && transient {
            // A deadline, a timeout or a refused connection: the call may still have
            // taken effect upstream, which the idempotency key makes safe to repeat.
            return Self::Transient(anyhow::anyhow!(
                "upstream call did not complete: {:?}: {}",
                status.code(),
                status.message()
            ));
        }
        if api.code == ErrorCode::Internal {
            // Keep the upstream's own words for the log; the client sees none of it.
            return Self::Unexpected(anyhow::anyhow!(
                "upstream call failed: {:?}: {}",
                status.code(),
                status.message()
            ));
        }
        Self::Upstream(api)
    }
}

impl From<anyhow::Error> for GatewayError {
    fn from(error: anyhow::Error) -> Self {
        Self::Unexpected(error)
    }
}

impl ErrorExtensions for GatewayError {
    fn extend(&self) -> async_graphql::Error {
        let message = match self {
            Self::Unauthenticated(message) | Self::Forbidden(message) => (*message).to_owned(),
            Self::BadInput(message) | Self::Conflict(message) => message.clone(),
            Self::PaymentDeclined => "payment declined: the card was declined".to_owned(),
            Self::Upstream(api) => api.message.clone(),
            Self::Transient(_) => {
                "a service did not answer in time; retry with the same idempotency key".to_owned()
            }
            Self::Busy(_) => "the gateway is busy; retry in a moment".to_owned(),
            Self::Unexpected(_) => "internal error".to_owned(),
        };
        let code = self.code();
        async_graphql::Error::new(message).extend_with(|_, extensions| {
            extensions.set("code", code.as_str());
            if let Self::Transient(_) | Self::Busy(_) = self {
                extensions.set("retryable", true);
            }
            if let Self::Upstream(api) = self {
                if matches!(code, ErrorCode::SeatUnavailable | ErrorCode::SeatRuleViolation) {
                    extensions.set("seatIds", api.meta_list("seat_ids"));
                }
                // A transient failure (e.g. the payment processor, or a service at
                // capacity that refused without doing anything): the same request may succeed.
                if code == ErrorCode::ServiceBusy
                    || api.metadata.get("retryable").is_some_and(|v| v == "true")
                {
                    extensions.set("retryable", true);
                }
            }
            if let Some(seconds) = self.retry_after_seconds() {
                extensions.set("retryAfterSeconds", seconds);
            }
        })
    }
}

impl From<GatewayError> for async_graphql::Error {
    fn from(error: GatewayError) -> Self {
        match &error {
            // Runs inside the HTTP request span, which carries the request id.
            GatewayError::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "unexpected error")
            }
            GatewayError::Transient(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "upstream unavailable")
            }
            GatewayError::Busy(cause) => tracing::warn!(error = format!("{cause:#}"), "refused as busy"),
            _ => {}
        }
        error.extend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::Value;

    fn extension(error: &async_graphql::Error, key: &str) -> Option<Value> {
        error.extensions.as_ref().and_then(|e| e.get(key)).cloned()
    }

    #[test]
    fn seat_unavailable_carries_the_seat_ids() {
        let status = Status::from(
            ApiError::new(ErrorCode::SeatUnavailable, "seats are taken").with_meta("seat_ids", "A1,A2"),
        );
        let error = async_graphql::Error::from(GatewayError::from(status));
        assert_eq!(error.message, "seats are taken");
        assert_eq!(extension(&error, "code"), Some(Value::from("SEAT_UNAVAILABLE")));
        assert_eq!(extension(&error, "seatIds"), Some(Value::List(vec!["A1".into(), "A2".into()])));
    }

    #[test]
    fn transient_upstream_errors_say_they_are_retryable() {
        let status = Status::from(
            ApiError::new(ErrorCode::PaymentDeclined, "processor unavailable").with_meta("retryable", "true"),
        );
        let error = async_graphql::Error::from(GatewayError::from(status));
        assert_eq!(extension(&error, "code"), Some(Value::from("PAYMENT_DECLINED")));
        assert_eq!(extension(&error, "retryable"), Some(Value::from(true)));
        let declined = async_graphql::Error::from(GatewayError::from(Status::from(ApiError::new(
            ErrorCode::PaymentDeclined,
            "declined",
        ))));
        assert_eq!(extension(&declined, "retryable"), None);
    }

    #[test]
    fn a_busy_upstream_says_when_to_retry() {
        let status = Status::from(ApiError::new(ErrorCode::ServiceBusy, "busy").with_retry_after(2));
        let error = async_graphql::Error::from(GatewayError::from(status));
        assert_eq!(extension(&error, "code"), Some(Value::from("SERVICE_BUSY")));
        assert_eq!(extension(&error, "retryAfterSeconds"), Some(Value::from(2u64)));
        assert_eq!(extension(&error, "retryable"), Some(Value::from(true)));
        let without_hint = GatewayError::from(Status::from(ApiError::new(ErrorCode::ServiceBusy, "busy")));
        let error = async_graphql::Error::from(without_hint);
        assert_eq!(extension(&error, "retryAfterSeconds"), Some(Value::from(1u64)));
    }

    #[test]
    fn a_gateway_that_cannot_check_tokens_is_busy_retryable_and_opaque() {
        let busy = GatewayError::Busy(anyhow::anyhow!("Redis at 10.0.0.7:6379 did not answer"));
        let error = async_graphql::Error::from(busy);
        assert_eq!(extension(&error, "code"), Some(Value::from("SERVICE_BUSY")));
        assert_eq!(extension(&error, "retryable"), Some(Value::from(true)));
        assert_eq!(extension(&error, "retryAfterSeconds"), Some(Value::from(BUSY_RETRY_AFTER_SECONDS)));
        assert!(!error.message.contains("10.0.0.7"), "{}", error.message);
    }

    #[test]
    fn internal_upstream_errors_are_opaque() {
        let error =
            async_graphql::Error::from(GatewayError::from(Status::internal("mongo write failed at node 3")));
        assert_eq!(error.message, "internal error");
        assert_eq!(extension(&error, "code"), Some(Value::from("INTERNAL")));
        assert_eq!(extension(&error, "retryable"), None);
    }

    #[test]
    fn an_upstream_that_did_not_answer_is_internal_but_retryable_and_still_opaque() {
        for status in [
            Status::unavailable("tcp connect error 127.0.0.1:7003"),
            Status::deadline_exceeded("deadline"),
            Status::cancelled("Timeout expired"),
        ] {
            let error = async_graphql::Error::from(GatewayError::from(status));
            assert_eq!(extension(&error, "code"), Some(Value::from("INTERNAL")));
            assert_eq!(extension(&error, "retryable"), Some(Value::from(true)));
            assert!(
                !error.message.contains("127.0.0.1") && !error.message.contains("Timeout"),
                "{}",
                error.message
            );
        }
    }

    #[test]
    fn plain_grpc_codes_map_to_public_codes() {
        let error = async_graphql::Error::from(GatewayError::from(Status::not_found("no such movie")));
        assert_eq!(extension(&error, "code"), Some(Value::from("NOT_FOUND")));
        assert_eq!(error.message, "no such movie");
    }
}
