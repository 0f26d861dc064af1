//! The notification service's gRPC error boundary.

use marquee_kit::ApiError;
use tonic::Status;

use crate::domain::InvalidInput;

#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<NotificationError> for Status {
    fn from(error: NotificationError) -> Self {
        match error {
            NotificationError::InvalidInput(e) => ApiError::bad_input(e.0).into(),
            NotificationError::Unexpected(e) => marquee_mongo::internal(&e),
        }
    }
}
