//! Crash checkpoints: points between a saga's writes where its process may die. A test
//! builds an application that fails at one of them exactly as if it died there, and
//! checks that recovery finishes or compensates the booking.

use super::Saga;
use crate::error::BookingError;

/// A point where the test hook can make the saga fail as if its process died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// Cinema locked the seats; the booking is not written yet.
    HoldLocked,
    /// A pay claimed the booking (CHARGING).
    PayClaimed,
    /// The hold extension was asked for; nothing charged yet.
    PayExtended,
    /// Payment answered the charge; its outcome is not recorded yet.
    PayCharged,
    /// A declined payment's seats were given back (or that failed); PAYMENT_FAILED not
    /// written yet.
    PayDeclinedReleased,
    /// About to ask cinema to confirm a paid booking's seats.
    ConfirmStart,
    /// Cinema booked the seats; CONFIRMED not written yet.
    PayConfirmedSeats,
    /// About to refund.
    RefundStart,
    /// Payment refunded; the refund is not recorded yet.
    RefundDone,
    /// A cancel claimed the booking (CANCELLING).
    CancelClaimed,
    /// Cinema freed a cancelled booking's seats; the next status is not written yet.
    CancelReleased,
    /// The sweeper released the seats and wrote EXPIRED; nothing is logged yet.
    SweepExpired,
}

impl Checkpoint {
    const ALL: [Self; 12] = [
        Self::HoldLocked,
        Self::PayClaimed,
        Self::PayExtended,
        Self::PayCharged,
        Self::PayDeclinedReleased,
        Self::ConfirmStart,
        Self::PayConfirmedSeats,
        Self::RefundStart,
        Self::RefundDone,
        Self::CancelClaimed,
        Self::CancelReleased,
        Self::SweepExpired,
    ];

    /// The name tests use for it (`Application::build_crashing_at`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HoldLocked => "hold.locked",
            Self::PayClaimed => "pay.claimed",
            Self::PayExtended => "pay.extended",
            Self::PayCharged => "pay.charged",
            Self::PayDeclinedReleased => "pay.declined_released",
            Self::ConfirmStart => "confirm.start",
            Self::PayConfirmedSeats => "pay.confirmed_seats",
            Self::RefundStart => "refund.start",
            Self::RefundDone => "refund.done",
            Self::CancelClaimed => "cancel.claimed",
            Self::CancelReleased => "cancel.released",
            Self::SweepExpired => "sweep.expired",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|point| point.as_str() == name)
    }
}

impl Saga {
    /// The test hook: fails exactly like a process dying at `point` (no write after it).
    pub(super) fn checkpoint(&self, point: Checkpoint) -> Result<(), BookingError> {
        if self.crash_at == Some(point) {
            let point = point.as_str();
            tracing::warn!(point, "injected crash");
            return Err(anyhow::anyhow!("injected crash at {point}").into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_checkpoint_is_found_by_its_name_and_nothing_else() {
        for point in Checkpoint::ALL {
            assert_eq!(Checkpoint::parse(point.as_str()), Some(point));
        }
        assert_eq!(Checkpoint::parse("pay.nowhere"), None);
    }
}
