//! Bookings: status, seats, total, refund and saga history. A booking's showtime
//! needs another upstream call, made only when selected; for a page of bookings the
//! showtimes (and what they show) are fetched up front.

use async_graphql::{Context, Enum, ID, Lookahead, Object, SimpleObject};
use chrono::{DateTime, Utc};
use marquee_proto::booking::v1 as booking;

use super::catalog::{Showtime, prefetch_for_showtimes};
use super::values::{Money, broken, non_empty, timestamp};
use super::{Scope, scope};
use crate::domain::{BookingId, ShowtimeId, trusted};
use crate::error::GatewayError;

/// As `prefetch_for_showtimes`, for the showtimes of these bookings and what they
/// show, and for their tickets when selected.
pub(super) async fn prefetch_for_bookings<'b>(
    scope: &Scope<'_>,
    bookings: impl Iterator<Item = &'b booking::Booking>,
    selection: &[Lookahead<'_>],
) -> Result<(), GatewayError> {
    let bookings: Vec<&booking::Booking> = bookings.collect();
    let showtime: Vec<Lookahead<'_>> = selection.iter().map(|s| s.field("showtime")).collect();
    let tickets = selection.iter().any(|s| s.field("tickets").exists());
    let prefetch_tickets = async {
        if !tickets {
            return Ok(());
        }
        let ids = bookings.iter().map(|b| trusted(&b.id)).collect::<Result<Vec<BookingId>, _>>()?;
        scope.cache.prime_tickets(&scope.upstreams, ids).await
    };
    let prefetch_showtimes = async {
        if !showtime.iter().any(Lookahead::exists) {
            return Ok(());
        }
        let ids = bookings.iter().map(|b| trusted(&b.showtime_id)).collect::<Result<Vec<ShowtimeId>, _>>()?;
        let showtimes = scope.cache.prime_showtimes(&scope.upstreams, ids).await?;
        prefetch_for_showtimes(scope, &showtimes, &showtime).await
    };
    tokio::try_join!(prefetch_tickets, prefetch_showtimes)?;
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum BookingStatus {
    Held,
    Confirmed,
    PaymentFailed,
    Expired,
    Cancelled,
    Failed,
}

impl BookingStatus {
    pub fn from_proto(raw: i32) -> Result<Self, GatewayError> {
        use booking::BookingStatus as Proto;
        match Proto::try_from(raw) {
            Ok(Proto::Held) => Ok(Self::Held),
            Ok(Proto::Confirmed) => Ok(Self::Confirmed),
            Ok(Proto::PaymentFailed) => Ok(Self::PaymentFailed),
            Ok(Proto::Expired) => Ok(Self::Expired),
            Ok(Proto::Cancelled) => Ok(Self::Cancelled),
            Ok(Proto::Failed) => Ok(Self::Failed),
            Ok(Proto::Unspecified) | Err(_) => Err(broken("a booking without a status")),
        }
    }

    pub fn to_proto(self) -> booking::BookingStatus {
        use booking::BookingStatus as Proto;
        match self {
            Self::Held => Proto::Held,
            Self::Confirmed => Proto::Confirmed,
            Self::PaymentFailed => Proto::PaymentFailed,
            Self::Expired => Proto::Expired,
            Self::Cancelled => Proto::Cancelled,
            Self::Failed => Proto::Failed,
        }
    }
}

/// Money that went back to the customer.
#[derive(Clone, Debug, SimpleObject)]
pub struct Refund {
    pub amount: Money,
    /// What the cancellation policy kept.
    pub fee: Money,
    pub refunded_at: Option<DateTime<Utc>>,
}

/// One step of the booking saga, e.g. `charge` / `succeeded`.
#[derive(Clone, Debug, SimpleObject)]
pub struct BookingStep {
    /// e.g. "lock_seats", "charge", "confirm_seats", "release_seats", "refund".
    pub step: String,
    /// e.g. "started", "succeeded", "declined", "error".
    pub outcome: String,
    pub at: Option<DateTime<Utc>>,
}

/// What `cancelBooking` would do if called now, by the same policy and clock.
#[derive(Clone, Debug, SimpleObject)]
pub struct CancellationQuote {
    /// False past the cancellation cutoff, or for a booking neither HELD nor CONFIRMED.
    pub cancellable: bool,
    /// Zero for a HELD booking: nothing was charged.
    pub refund: Money,
    /// What the policy would keep.
    pub fee: Money,
    /// The last moment a CONFIRMED booking can be cancelled.
    pub closes_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, SimpleObject)]
pub struct BookedSeat {
    pub seat_id: ID,
    pub category: String,
    pub price: Money,
}

pub struct Booking(pub booking::Booking);

#[Object]
impl Booking {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn status(&self) -> async_graphql::Result<BookingStatus> {
        Ok(BookingStatus::from_proto(self.0.status)?)
    }

    async fn showtime(&self, ctx: &Context<'_>) -> async_graphql::Result<Showtime> {
        let scope = scope(ctx)?;
        let id: ShowtimeId = trusted(&self.0.showtime_id)?;
        Ok(Showtime(scope.cache.showtime(&scope.upstreams, &id).await?))
    }

    async fn seats(&self) -> async_graphql::Result<Vec<BookedSeat>> {
        let seats = self.0.seats.iter().map(|seat| {
            Ok(BookedSeat {
                seat_id: ID(seat.seat_id.clone()),
                category: seat.category.clone(),
                price: Money::from_proto(seat.price.as_ref(), "a booked seat without a price")?,
            })
        });
        Ok(seats.collect::<Result<_, GatewayError>>()?)
    }

    async fn total(&self) -> async_graphql::Result<Money> {
        Ok(Money::from_proto(self.0.total.as_ref(), "a booking without a total")?)
    }

    /// When an unpaid hold lapses; null once the booking no longer expires.
    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at.as_ref().and_then(marquee_kit::time::from_proto)
    }

    async fn created_at(&self) -> async_graphql::Result<DateTime<Utc>> {
        Ok(timestamp(self.0.created_at.as_ref(), "a booking without created_at")?)
    }

    async fn payment_id(&self) -> Option<&str> {
        non_empty(&self.0.payment_id)
    }

    async fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.0.updated_at.as_ref().and_then(marquee_kit::time::from_proto)
    }

    /// Why it ended PAYMENT_FAILED, FAILED or CANCELLED, when known.
    async fn reason(&self) -> Option<&str> {
        non_empty(&self.0.reason)
    }

    /// Set once money went back to the customer (a cancellation or a compensation).
    async fn refund(&self) -> async_graphql::Result<Option<Refund>> {
        let Some(refund) = &self.0.refund else { return Ok(None) };
        Ok(Some(Refund {
            amount: Money::from_proto(refund.amount.as_ref(), "a refund without an amount")?,
            fee: Money::from_proto(refund.fee.as_ref(), "a refund without a fee")?,
            refunded_at: refund.at.as_ref().and_then(marquee_kit::time::from_proto),
        }))
    }

    /// What cancelling now would refund (asks the booking service each time it is
    /// selected): for a confirmation before `cancelBooking`.
    async fn cancellation(&self, ctx: &Context<'_>) -> async_graphql::Result<CancellationQuote> {
        let scope = scope(ctx)?;
        let identity = scope.viewer.require()?;
        let id: BookingId = trusted(&self.0.id)?;
        let quote = scope.upstreams.cancellation_quote(&identity.user_id, &id, identity.is_admin()).await?;
        Ok(CancellationQuote {
            cancellable: quote.cancellable,
            refund: Money::from_proto(quote.refund.as_ref(), "a quote without a refund")?,
            fee: Money::from_proto(quote.fee.as_ref(), "a quote without a fee")?,
            closes_at: quote.closes_at.as_ref().and_then(marquee_kit::time::from_proto),
        })
    }

    /// One per seat once the booking is CONFIRMED (issued moments after it).
    async fn tickets(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<super::tickets::Ticket>> {
        super::tickets::booking_tickets(ctx, &self.0.id).await
    }

    /// The saga's steps, oldest first.
    async fn history(&self) -> Vec<BookingStep> {
        self.0
            .history
            .iter()
            .map(|step| BookingStep {
                step: step.step.clone(),
                outcome: step.outcome.clone(),
                at: step.at.as_ref().and_then(marquee_kit::time::from_proto),
            })
            .collect()
    }
}
