//! A booking's saga history: the steps a saga records (`Step`, written) and an entry
//! as read back (`SagaStep`). Step names are stored and shown to clients as is.

use chrono::{DateTime, Utc};

/// A step the saga records in a booking's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The hold: cinema locked the seats and the booking was written.
    LockSeats,
    /// The hold's one extension before the charge.
    ExtendHold,
    Charge,
    ConfirmSeats,
    Refund,
    /// A cancellation claimed the booking.
    Cancel,
    ReleaseSeats,
    /// The sweeper expired a lapsed hold.
    Expire,
    /// Recovery took over a step whose process died.
    Recover,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LockSeats => "lock_seats",
            Self::ExtendHold => "extend_hold",
            Self::Charge => "charge",
            Self::ConfirmSeats => "confirm_seats",
            Self::Refund => "refund",
            Self::Cancel => "cancel",
            Self::ReleaseSeats => "release_seats",
            Self::Expire => "expire",
            Self::Recover => "recover",
        }
    }
}

/// One step of the saga as recorded in the booking's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaStep {
    pub step: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
    pub detail: String,
}
