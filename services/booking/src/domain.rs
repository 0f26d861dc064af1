//! Validated booking input and the booking as the saga sees it. Handlers parse raw
//! proto strings into these types first; everything deeper trusts them.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why some input was refused; the message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

fn invalid(message: impl Into<String>) -> InvalidInput {
    InvalidInput(message.into())
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(Uuid);

        impl $name {
            pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
                Uuid::parse_str(raw.trim())
                    .map(Self)
                    .map_err(|_| invalid(concat!($what, " must be a UUID")))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// The user service's id of the customer.
    UserId,
    "user_id"
);
uuid_id!(
    /// The cinema service's id of a showtime.
    ShowtimeId,
    "showtime_id"
);
uuid_id!(
    /// A booking id; also the id cinema holds seats under and payment charges for.
    BookingId,
    "booking_id"
);

impl BookingId {
    pub fn generate() -> Self {
        // v7 ids are time-ordered, so the `_id` index grows at its right edge.
        Self(Uuid::now_v7())
    }
}

/// A seat label within a screen, e.g. "C7".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeatId(String);

impl SeatId {
    const MAX_LEN: usize = 16;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let seat = raw.trim();
        let valid = !seat.is_empty()
            && seat.len() <= Self::MAX_LEN
            && seat.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid { Ok(Self(seat.to_owned())) } else { Err(invalid(format!("seat id {raw:?} is not valid"))) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The distinct seats of one hold, sorted, between 1 and [`SeatSelection::MAX`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatSelection(Vec<SeatId>);

impl SeatSelection {
    pub const MAX: usize = 10;

    pub fn parse(raw: &[String]) -> Result<Self, InvalidInput> {
        if raw.is_empty() {
            return Err(invalid("select at least one seat"));
        }
        if raw.len() > Self::MAX {
            return Err(invalid(format!("at most {} seats per booking", Self::MAX)));
        }
        let seats = raw.iter().map(|s| SeatId::parse(s)).collect::<Result<BTreeSet<_>, _>>()?;
        if seats.len() != raw.len() {
            return Err(invalid("seat ids must be distinct"));
        }
        Ok(Self(seats.into_iter().collect()))
    }

    pub fn seats(&self) -> &[SeatId] {
        &self.0
    }
}

/// The client's key for retrying HoldSeats safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    const MAX_LEN: usize = 200;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.trim().is_empty() {
            return Err(invalid("idempotency_key is required"));
        }
        if raw.len() > Self::MAX_LEN || raw.chars().any(char::is_control) {
            return Err(invalid("idempotency_key is not valid"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque payment method token (e.g. `pm_card_ok`); the payment service judges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod(String);

impl PaymentMethod {
    const MAX_LEN: usize = 64;

    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let method = raw.trim();
        if method.is_empty() {
            return Err(invalid("payment_method is required"));
        }
        if method.len() > Self::MAX_LEN || !method.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid("payment_method is not valid"));
        }
        Ok(Self(method.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Money in integer minor units of an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    amount_minor: i64,
    currency: String,
}

impl Money {
    pub fn parse(amount_minor: i64, currency: &str) -> Result<Self, InvalidInput> {
        if amount_minor < 0 {
            return Err(invalid("amount must not be negative"));
        }
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(invalid(format!("currency {currency:?} is not an ISO 4217 code")));
        }
        Ok(Self { amount_minor, currency: currency.to_owned() })
    }

    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// The same currency, another (non-negative) amount.
    pub fn with_amount(&self, amount_minor: i64) -> Self {
        Self { amount_minor: amount_minor.max(0), currency: self.currency.clone() }
    }
}

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

    /// Counts against the user's limit of active holds.
    pub fn is_active_hold(self) -> bool {
        matches!(self, Self::Held | Self::Charging)
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

/// One step of the saga as recorded in the booking's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaStep {
    pub step: String,
    pub outcome: String,
    pub at: DateTime<Utc>,
    pub detail: String,
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookedSeat {
    pub seat_id: SeatId,
    pub category: String,
    pub price: Money,
}

/// A validated HoldSeats request.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    pub user_id: UserId,
    pub showtime_id: ShowtimeId,
    pub seats: SeatSelection,
    pub idempotency_key: IdempotencyKey,
}

/// A validated PayBooking request.
#[derive(Debug, Clone)]
pub struct PayRequest {
    pub booking_id: BookingId,
    pub user_id: UserId,
    pub payment_method: PaymentMethod,
}

/// Who asks: a user reads and cancels only their own bookings, an admin any.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: UserId,
    pub admin: bool,
}

impl Caller {
    pub fn may_see(&self, booking: &Booking) -> bool {
        self.admin || booking.user_id == self.user_id
    }
}

/// A validated CancelBooking request.
#[derive(Debug, Clone)]
pub struct CancelRequest {
    pub booking_id: BookingId,
    pub caller: Caller,
    pub reason: Option<String>,
}

/// A validated ListBookings request: one page, newest first.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub user_id: UserId,
    pub statuses: Vec<PublicStatus>,
    pub showtime_id: Option<ShowtimeId>,
    pub page_size: u32,
    /// Bookings older than this one (ids are time-ordered).
    pub after: Option<BookingId>,
}

impl ListQuery {
    pub const DEFAULT_PAGE: u32 = 20;
    pub const MAX_PAGE: u32 = 100;

    pub fn page_size(raw: i32) -> Result<u32, InvalidInput> {
        match u32::try_from(raw) {
            Ok(0) => Ok(Self::DEFAULT_PAGE),
            Ok(n) => Ok(n.min(Self::MAX_PAGE)),
            Err(_) => Err(invalid("page_size must not be negative")),
        }
    }
}

/// Parses a cancellation reason: optional, one line, bounded.
pub fn cancel_reason(raw: &str) -> Result<Option<String>, InvalidInput> {
    let reason = raw.trim();
    if reason.is_empty() {
        return Ok(None);
    }
    if reason.len() > 200 || reason.chars().any(char::is_control) {
        return Err(invalid("reason must be one line of at most 200 bytes"));
    }
    Ok(Some(reason.to_owned()))
}

#[derive(Debug, Clone)]
pub struct Booking {
    pub id: BookingId,
    pub user_id: UserId,
    pub showtime_id: ShowtimeId,
    pub idempotency_key: IdempotencyKey,
    /// Sorted by seat id.
    pub seats: Vec<BookedSeat>,
    pub total: Money,
    pub status: BookingStatus,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Bumped by every state change; saga steps claim the booking by it.
    pub version: i64,
    pub payment_id: Option<String>,
    /// Recorded when payment starts, so recovery can re-run the charge.
    pub payment_method: Option<String>,
    /// Cinema extends a hold once; recorded so a resumed charge does not ask again.
    pub hold_extended: bool,
    pub refund: Option<Refund>,
    pub reason: Option<String>,
    pub history: Vec<SagaStep>,
    /// The `hold_slots` document this booking counts against while it is active.
    pub slot: Option<String>,
}

impl Booking {
    /// Why a request that does not apply to this booking now was refused.
    pub fn conflict(&self) -> crate::error::BookingError {
        crate::error::BookingError::Conflict(self.public_status(), self.status)
    }

    /// A payment's steps are running: the charge, the confirm, or the full refund when
    /// the seats were lost after the charge (a cancellation's refund is not a payment's).
    pub fn is_paying(&self) -> bool {
        match self.status {
            BookingStatus::Charging | BookingStatus::Confirming => true,
            BookingStatus::Refunding => {
                self.refund.as_ref().is_some_and(|r| r.cause == RefundCause::SeatsLost)
            }
            _ => false,
        }
    }

    /// The status clients see.
    pub fn public_status(&self) -> PublicStatus {
        match self.status {
            BookingStatus::Held | BookingStatus::Charging | BookingStatus::Confirming => PublicStatus::Held,
            BookingStatus::Confirmed => PublicStatus::Confirmed,
            BookingStatus::PaymentFailed => PublicStatus::PaymentFailed,
            BookingStatus::Expired => PublicStatus::Expired,
            BookingStatus::Cancelling | BookingStatus::Cancelled => PublicStatus::Cancelled,
            BookingStatus::Failed => PublicStatus::Failed,
            BookingStatus::Refunding => match self.refund.as_ref().map(|r| r.cause) {
                Some(RefundCause::Cancelled) => PublicStatus::Cancelled,
                _ => PublicStatus::Failed,
            },
        }
    }
    /// True when `request` asks for exactly what this booking holds, so a retry
    /// with the same idempotency key may return it.
    pub fn answers(&self, request: &HoldRequest) -> bool {
        self.user_id == request.user_id
            && self.showtime_id == request.showtime_id
            && self.seats.iter().map(|s| &s.seat_id).eq(request.seats.seats().iter())
    }

    pub fn seat_ids(&self) -> Vec<String> {
        self.seats.iter().map(|s| s.seat_id.as_str().to_owned()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(raw: &[&str]) -> Vec<String> {
        raw.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn seat_selection_is_sorted_distinct_and_bounded() {
        let seats = SeatSelection::parse(&strings(&["C7", "A1"])).unwrap();
        assert_eq!(seats.seats().iter().map(SeatId::as_str).collect::<Vec<_>>(), ["A1", "C7"]);
        assert!(SeatSelection::parse(&[]).is_err());
        assert!(SeatSelection::parse(&strings(&["A1", "A1"])).is_err());
        assert!(SeatSelection::parse(&strings(&["A1", "bad seat"])).is_err());
        let eleven: Vec<String> = (1..=11).map(|n| format!("A{n}")).collect();
        assert!(SeatSelection::parse(&eleven).is_err());
        assert!(SeatSelection::parse(&eleven[..10]).is_ok());
    }

    #[test]
    fn ids_keys_and_money_are_validated() {
        assert!(UserId::parse("not-a-uuid").is_err());
        assert!(BookingId::parse(&BookingId::generate().to_string()).is_ok());
        assert!(IdempotencyKey::parse("  ").is_err());
        assert!(IdempotencyKey::parse("key-1").is_ok());
        assert!(PaymentMethod::parse("pm card").is_err());
        assert!(Money::parse(-1, "EUR").is_err());
        assert!(Money::parse(100, "eur").is_err());
        assert_eq!(Money::parse(1250, "EUR").unwrap().amount_minor(), 1250);
    }

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

    /// A HELD booking of 20.00 EUR for nobody in particular, no seats: tests set the rest.
    fn held_booking() -> Booking {
        Booking {
            id: BookingId::generate(),
            user_id: UserId::parse(&Uuid::new_v4().to_string()).unwrap(),
            showtime_id: ShowtimeId::parse(&Uuid::new_v4().to_string()).unwrap(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
            seats: Vec::new(),
            total: Money::parse(2000, "EUR").unwrap(),
            status: BookingStatus::Held,
            expires_at: Utc::now(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
            version: 1,
            payment_id: None,
            payment_method: None,
            hold_extended: false,
            refund: None,
            reason: None,
            history: Vec::new(),
            slot: None,
        }
    }

    #[test]
    fn a_booking_answers_only_the_same_request() {
        let user_id = UserId::parse(&Uuid::new_v4().to_string()).unwrap();
        let showtime_id = ShowtimeId::parse(&Uuid::new_v4().to_string()).unwrap();
        let price = Money::parse(1000, "EUR").unwrap();
        let seat = |id: &str| BookedSeat {
            seat_id: SeatId::parse(id).unwrap(),
            category: "standard".into(),
            price: price.clone(),
        };
        let booking = Booking { user_id, showtime_id, seats: vec![seat("A1"), seat("A2")], ..held_booking() };
        let request = |seats: &[&str]| HoldRequest {
            user_id,
            showtime_id,
            seats: SeatSelection::parse(&strings(seats)).unwrap(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
        };
        assert!(booking.answers(&request(&["A2", "A1"])));
        assert!(!booking.answers(&request(&["A1"])));
        assert!(!booking.answers(&request(&["A1", "A3"])));
    }

    #[test]
    fn only_the_steps_of_a_payment_count_as_paying() {
        let booking = |status, cause: Option<RefundCause>| {
            let held = held_booking();
            let refund = cause.map(|cause| Refund {
                cause,
                amount: held.total.clone(),
                fee: held.total.with_amount(0),
                refund_id: None,
                at: None,
            });
            Booking { status, refund, ..held }
        };
        assert!(booking(BookingStatus::Charging, None).is_paying());
        assert!(booking(BookingStatus::Confirming, None).is_paying());
        assert!(booking(BookingStatus::Refunding, Some(RefundCause::SeatsLost)).is_paying());
        assert!(!booking(BookingStatus::Refunding, Some(RefundCause::Cancelled)).is_paying());
        assert!(!booking(BookingStatus::Cancelling, None).is_paying());
        assert!(!booking(BookingStatus::Held, None).is_paying());
        assert!(!booking(BookingStatus::Confirmed, None).is_paying());
    }
}
