//! Refunds: why money goes back (which decides where the booking ends), a refund as
//! decided and made, and the cancellation policy that decides how much.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BookingStatus, Money};

/// Why money goes back, which decides where a refund ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundCause {
    /// Charged but the seats were taken: full refund, booking FAILED.
    SeatsLost,
    /// Cancelled by the customer or an admin: refund by policy, booking CANCELLED.
    Cancelled,
}

impl RefundCause {
    pub fn ends_in(self) -> BookingStatus {
        match self {
            Self::SeatsLost => BookingStatus::Failed,
            Self::Cancelled => BookingStatus::Cancelled,
        }
    }
}

/// A refund decided (amount and fee) and, once payment made it, its id and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub cause: RefundCause,
    pub amount: Money,
    pub fee: Money,
    pub refund_id: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

/// The cancellation refund policy: percent tiers by how long before the show.
#[derive(Debug, Clone)]
pub struct RefundPolicy {
    cutoff: chrono::Duration,
    /// Sorted by `hours_before`, largest first.
    tiers: Vec<(chrono::Duration, u8)>,
}

impl RefundPolicy {
    pub fn new(cutoff_minutes: i64, tiers: &[(i64, u8)]) -> anyhow::Result<Self> {
        anyhow::ensure!(cutoff_minutes >= 0, "booking.cancel_cutoff_minutes must not be negative");
        let mut sorted = Vec::with_capacity(tiers.len());
        for &(hours, percent) in tiers {
            anyhow::ensure!(hours >= 0 && percent <= 100, "refund tier ({hours} h, {percent}%) is not valid");
            sorted.push((chrono::Duration::hours(hours), percent));
        }
        sorted.sort_by_key(|tier| std::cmp::Reverse(tier.0));
        Ok(Self { cutoff: chrono::Duration::minutes(cutoff_minutes), tiers: sorted })
    }

    /// The last moment a booking for a show starting at `starts_at` can be cancelled.
    pub fn closes_at(&self, starts_at: DateTime<Utc>) -> DateTime<Utc> {
        starts_at - self.cutoff
    }

    /// (refund, fee) of cancelling `total` at `now`, or `None` past the cutoff.
    pub fn refund(
        &self,
        total: &Money,
        starts_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(Money, Money)> {
        if now > self.closes_at(starts_at) {
            return None;
        }
        let ahead = starts_at - now;
        let percent = self.tiers.iter().find(|(before, _)| ahead >= *before).map_or(0, |(_, p)| *p);
        let amount = total.amount_minor() * i64::from(percent) / 100;
        Some((total.with_amount(amount), total.with_amount(total.amount_minor() - amount)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refunds_follow_the_first_tier_the_show_is_far_enough_away_for() {
        let policy = RefundPolicy::new(30, &[(0, 50), (24, 100)]).unwrap();
        let total = Money::parse(1999, "EUR").unwrap();
        let now = Utc::now();
        let at = |hours: i64, minutes: i64| {
            now + chrono::Duration::hours(hours) + chrono::Duration::minutes(minutes)
        };
        let split =
            |starts| policy.refund(&total, starts, now).map(|(r, f)| (r.amount_minor(), f.amount_minor()));
        assert_eq!(split(at(48, 0)), Some((1999, 0)));
        assert_eq!(split(at(24, 0)), Some((1999, 0)));
        assert_eq!(split(at(23, 59)), Some((999, 1000)));
        assert_eq!(split(at(0, 30)), Some((999, 1000)));
        assert_eq!(split(at(0, 29)), None);
        let nothing_late = RefundPolicy::new(0, &[(24, 100)]).unwrap();
        assert_eq!(nothing_late.refund(&total, at(2, 0), now).map(|(r, _)| r.amount_minor()), Some(0));
        assert!(RefundPolicy::new(30, &[(1, 101)]).is_err());
    }
}
