//! Typed clients of the services the saga coordinates, cinema and payment. Every call
//! carries the deadline and continues the current trace; a transiently failing call is
//! retried with backoff as far as its kind of idempotency allows. Failures come back as
//! the upstream's `Status`: what one means for the booking is the saga's to decide.

use std::future::Future;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::cinema::v1::{
    CancelSeatsRequest, ConfirmSeatsRequest, ExtendHoldRequest, ExtendHoldResponse, GetShowtimeRequest,
    HoldCursor, ListHoldsRequest, LockSeatsRequest, LockSeatsResponse, ReleaseSeatsRequest, Showtime,
};
use marquee_proto::payment::v1::payment_service_client::PaymentServiceClient;
use marquee_proto::payment::v1::{ChargeRequest, Payment, RefundRequest, RefundResponse};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::domain::{Booking, BookingId, HoldRequest, Refund, RefundCause, ShowtimeId};

/// How often, and how patiently, a transiently failing call is retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Calls in total, at least one.
    pub attempts: u32,
    /// Wait before the first retry; doubles after each, jittered.
    pub first_backoff: Duration,
}

/// A retried call never waits longer than this between attempts: the caller waits.
const MAX_CALL_BACKOFF: Duration = Duration::from_secs(5);

/// Which way a transiently failing call may be retried.
#[derive(Clone, Copy)]
enum Idempotent {
    /// Cinema: repeating is harmless, retry when the call did not get through.
    ByBooking,
    /// Payment: also ABORTED, which means the same key is still in flight.
    ByKey,
}

/// Whether a call ended without an outcome: never connected, timed out (tonic's own
/// deadline ends a call as CANCELLED), cut off mid-way (the callee died: UNKNOWN), or
/// refused with UNAVAILABLE (also the callee's word for its own store out of reach).
/// Its effect, if any, is unknown, and repeating it may succeed.
pub fn unanswered(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled)
}

/// Which errors of another service are worth repeating the same call for: an
/// unanswered call of either kind; ABORTED only where it means the key is in flight.
fn transient(status: &Status, kind: Idempotent) -> bool {
    unanswered(status) || (status.code() == Code::Aborted && matches!(kind, Idempotent::ByKey))
}

/// Every outgoing call: within the deadline, and in the current trace (the caller's,
/// or the sweep's per booking) as a new span.
fn outgoing_request<T>(deadline: Duration, message: T) -> Request<T> {
    let mut request = marquee_kit::trace::outgoing(message);
    request.set_timeout(deadline);
    request
}

/// Calls `call` until it succeeds, fails for good, or the attempts run out.
async fn retrying<T, F, Fut>(name: &'static str, kind: Idempotent, retry: Retry, call: F) -> Result<T, Status>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let backoff = marquee_kit::backoff::Backoff::new(retry.first_backoff, MAX_CALL_BACKOFF);
    let mut attempt = 1;
    loop {
        match call().await {
            Ok(response) => return Ok(response.into_inner()),
            Err(status) if attempt < retry.attempts && transient(&status, kind) => {
                tracing::warn!(call = name, attempt, code = ?status.code(), message = status.message(), "retrying");
                tokio::time::sleep(backoff.delay(attempt - 1)).await;
                attempt += 1;
            }
            Err(status) => return Err(status),
        }
    }
}

/// Cinema: seat holds, their extension, confirmation and release. Every call but
/// LockSeats is retried: repeating it is harmless, cinema's effects are per booking.
#[derive(Clone)]
pub struct Cinema {
    client: CinemaServiceClient<Channel>,
    deadline: Duration,
    retry: Retry,
}

impl Cinema {
    pub fn new(client: CinemaServiceClient<Channel>, deadline: Duration, retry: Retry) -> Self {
        Self { client, deadline, retry }
    }

    /// Holds the requested seats for `booking_id`, all or none. Called once: when the
    /// outcome is unknown, the hold gives the seats back itself (`Saga::hold_seats`).
    pub async fn lock_seats(
        &self,
        hold: &HoldRequest,
        booking_id: BookingId,
        ttl_seconds: i32,
        max_holds_per_user: u32,
    ) -> Result<LockSeatsResponse, Status> {
        let locked = self
            .client
            .clone()
            .lock_seats(outgoing_request(
                self.deadline,
                LockSeatsRequest {
                    showtime_id: hold.showtime_id.to_string(),
                    seat_ids: hold.seats.seats().iter().map(|s| s.as_str().to_owned()).collect(),
                    booking_id: booking_id.to_string(),
                    ttl_seconds,
                    user_id: hold.user_id.to_string(),
                    max_holds_per_user,
                },
            ))
            .await?;
        Ok(locked.into_inner())
    }

    pub async fn get_showtime(&self, showtime_id: ShowtimeId) -> Result<Showtime, Status> {
        retrying("cinema.GetShowtime", Idempotent::ByBooking, self.retry, || {
            let mut client = self.client.clone();
            let request = outgoing_request(self.deadline, GetShowtimeRequest { id: showtime_id.to_string() });
            async move { client.get_showtime(request).await }
        })
        .await
    }

    pub async fn extend_hold(&self, booking: &Booking) -> Result<ExtendHoldResponse, Status> {
        retrying("cinema.ExtendHold", Idempotent::ByBooking, self.retry, || {
            let mut client = self.client.clone();
            let request = outgoing_request(
                self.deadline,
                ExtendHoldRequest {
                    showtime_id: booking.showtime_id.to_string(),
                    booking_id: booking.id.to_string(),
                },
            );
            async move { client.extend_hold(request).await }
        })
        .await
    }

    /// Books the held seats; cinema re-acquires them if the hold lapsed but they are free.
    pub async fn confirm_seats(&self, booking: &Booking) -> Result<(), Status> {
        retrying("cinema.ConfirmSeats", Idempotent::ByBooking, self.retry, || {
            let mut client = self.client.clone();
            let request = outgoing_request(
                self.deadline,
                ConfirmSeatsRequest {
                    showtime_id: booking.showtime_id.to_string(),
                    booking_id: booking.id.to_string(),
                    seat_ids: booking.seat_ids(),
                },
            );
            async move { client.confirm_seats(request).await }
        })
        .await
        .map(drop)
    }

    /// Frees the seats a booking holds.
    pub async fn release_seats(&self, showtime_id: ShowtimeId, booking_id: BookingId) -> Result<(), Status> {
        retrying("cinema.ReleaseSeats", Idempotent::ByBooking, self.retry, || {
            let mut client = self.client.clone();
            let request = outgoing_request(
                self.deadline,
                ReleaseSeatsRequest {
                    showtime_id: showtime_id.to_string(),
                    booking_id: booking_id.to_string(),
                },
            );
            async move { client.release_seats(request).await }
        })
        .await
        .map(drop)
    }

    /// Live holds taken at least `min_age` ago, oldest first, after `after`.
    pub async fn list_holds(
        &self,
        min_age: Duration,
        after: Option<HoldAt>,
        limit: u32,
    ) -> anyhow::Result<Vec<ListedHold>> {
        let message = ListHoldsRequest {
            min_age_ms: u32::try_from(min_age.as_millis()).unwrap_or(u32::MAX),
            after: after.map(|at| HoldCursor {
                held_at: Some(marquee_kit::time::to_proto(at.held_at)),
                booking_id: at.booking_id.to_string(),
            }),
            limit,
        };
        let listed = retrying("cinema.ListHolds", Idempotent::ByBooking, self.retry, || {
            let mut client = self.client.clone();
            let request = outgoing_request(self.deadline, message.clone());
            async move { client.list_holds(request).await }
        })
        .await
        .context("cinema cannot list its holds")?;
        listed
            .holds
            .into_iter()
            .map(|hold| {
                Ok(ListedHold {
                    showtime_id: ShowtimeId::parse(&hold.showtime_id)?,
                    at: HoldAt {
                        held_at: hold
                            .held_at
                            .as_ref()
                            .and_then(marquee_kit::time::from_proto)
                            .context("a listed hold has no time")?,
                        booking_id: BookingId::parse(&hold.booking_id)?,
                    },
                })
            })
            .collect::<anyhow::Result<_>>()
            .context("cinema listed an invalid hold")
    }

    /// Frees every seat of a booking, held or booked, and makes cinema forget it.
    pub async fn cancel_seats(&self, booking: &Booking) -> Result<(), Status> {
        retrying("cinema.CancelSeats", Idempotent::ByBooking, self.retry, || {
            let mut client = self.client.clone();
            let request = outgoing_request(
                self.deadline,
                CancelSeatsRequest {
                    showtime_id: booking.showtime_id.to_string(),
                    booking_id: booking.id.to_string(),
                },
            );
            async move { client.cancel_seats(request).await }
        })
        .await
        .map(drop)
    }
}

/// Where a hold stands in the order cinema lists holds: when it was taken, then booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldAt {
    pub held_at: DateTime<Utc>,
    pub booking_id: BookingId,
}

/// A booking's live hold on one showtime, as cinema lists it.
#[derive(Debug, Clone, Copy)]
pub struct ListedHold {
    pub showtime_id: ShowtimeId,
    pub at: HoldAt,
}

/// Payment: the booking's charge and refund, each under a key derived from the
/// booking, so that no retry, repeat or recovery can charge or refund twice.
#[derive(Clone)]
pub struct Payments {
    client: PaymentServiceClient<Channel>,
    deadline: Duration,
    charge_retry: Retry,
    refund_retry: Retry,
}

impl Payments {
    pub fn new(
        client: PaymentServiceClient<Channel>,
        deadline: Duration,
        charge_retry: Retry,
        refund_retry: Retry,
    ) -> Self {
        Self { client, deadline, charge_retry, refund_retry }
    }

    /// Charges the booking's total under `booking:{id}:charge`, retrying with backoff
    /// while payment answers UNAVAILABLE (a transient processor or transport failure)
    /// or ABORTED (this very charge still in flight). The key makes every retry return
    /// the first charge instead of making a second one.
    pub async fn charge(&self, booking: &Booking, method: &str) -> Result<Payment, Status> {
        let charge = ChargeRequest {
            booking_id: booking.id.to_string(),
            amount: Some(booking.total.to_proto()),
            payment_method: method.to_owned(),
            idempotency_key: format!("booking:{}:charge", booking.id),
            user_id: booking.user_id.to_string(),
        };
        retrying("payment.Charge", Idempotent::ByKey, self.charge_retry, || {
            let mut client = self.client.clone();
            let request = outgoing_request(self.deadline, charge.clone());
            async move { client.charge(request).await }
        })
        .await
    }

    /// Gives `refund` back from the booking's payment under `booking:{id}:refund`.
    pub async fn refund(
        &self,
        booking: &Booking,
        payment_id: String,
        refund: &Refund,
    ) -> Result<RefundResponse, Status> {
        let message = RefundRequest {
            payment_id,
            amount: Some(refund.amount.to_proto()),
            reason: match refund.cause {
                RefundCause::SeatsLost => "seats lost after payment".to_owned(),
                RefundCause::Cancelled => "booking cancelled".to_owned(),
            },
            idempotency_key: format!("booking:{}:refund", booking.id),
        };
        retrying("payment.Refund", Idempotent::ByKey, self.refund_retry, || {
            let mut client = self.client.clone();
            let request = outgoing_request(self.deadline, message.clone());
            async move { client.refund(request).await }
        })
        .await
    }
}
