//! Where a booking is in its saga (`BookingStatus`) and what clients see of it
//! (`PublicStatus`).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::RefundCause;

/// Where a booking is in its saga. The `-ing` statuses are internal: a step with
/// effects elsewhere is running (or its process died, and recovery resumes it once the
/// lease lapses). Clients see them as the public status they lead to or come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BookingStatus {
    Held,
    /// Hold extension and charge in flight (payment method recorded).
    Charging,
    /// Charged (payment id recorded); the seats are being booked.
    Confirming,
    /// Money is going back (amount recorded); ends FAILED or CANCELLED.
    Refunding,
    /// Seats are being given back; then a refund if one is due.
    Cancelling,
    Confirmed,
    PaymentFailed,
    Failed,
    Expired,
    Cancelled,
}

impl BookingStatus {
    pub const IN_FLIGHT: [Self; 4] = [Self::Charging, Self::Confirming, Self::Refunding, Self::Cancelling];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "HELD",
            Self::Charging => "CHARGING",
            Self::Confirming => "CONFIRMING",
            Self::Refunding => "REFUNDING",
            Self::Cancelling => "CANCELLING",
            Self::Confirmed => "CONFIRMED",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::Failed => "FAILED",
            Self::Expired => "EXPIRED",
            Self::Cancelled => "CANCELLED",
        }
    }

    /// No saga step runs on a booking in a terminal status.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Confirmed | Self::PaymentFailed | Self::Failed | Self::Expired | Self::Cancelled)
    }
}

impl fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What clients see. Stored beside the internal status so list filters can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicStatus {
    Held,
    Confirmed,
    PaymentFailed,
    Expired,
    Cancelled,
    Failed,
}

impl PublicStatus {
    /// What a booking at `status` shows; a refund shows as the cancellation or the
    /// failure that caused it.
    pub fn of(status: BookingStatus, refund_cause: Option<RefundCause>) -> Self {
        match status {
            BookingStatus::Held | BookingStatus::Charging | BookingStatus::Confirming => Self::Held,
            BookingStatus::Confirmed => Self::Confirmed,
            BookingStatus::PaymentFailed => Self::PaymentFailed,
            BookingStatus::Expired => Self::Expired,
            BookingStatus::Cancelling | BookingStatus::Cancelled => Self::Cancelled,
            BookingStatus::Failed => Self::Failed,
            BookingStatus::Refunding => match refund_cause {
                Some(RefundCause::Cancelled) => Self::Cancelled,
                _ => Self::Failed,
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "HELD",
            Self::Confirmed => "CONFIRMED",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::Expired => "EXPIRED",
            Self::Cancelled => "CANCELLED",
            Self::Failed => "FAILED",
        }
    }
}
