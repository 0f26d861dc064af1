//! The booking saga: hold seats, charge, confirm, and compensate when a step fails.
//!
//! ```text
//! HELD ──pay──▶ CHARGING ──charged──▶ CONFIRMING ──seats booked──▶ CONFIRMED ──cancel──▶ CANCELLING
//!  │  │            │ declined: release ▶ PAYMENT_FAILED   │ seats taken             │ seats freed
//!  │  │            │ unavailable ──▶ HELD                  ▼                         ▼
//!  │  │            │                              REFUNDING (full) ──▶ FAILED    REFUNDING (policy) ──▶ CANCELLED
//!  │  └─cancel──▶ CANCELLING ──seats freed──▶ CANCELLED
//!  └─lapsed (sweeper)──▶ EXPIRED
//! ```
//!
//! Every state change is one conditional update on the booking's `version`, so two
//! callers can never both run a step. A step with effects elsewhere is recorded
//! before it runs (an in-flight status with a lease: CHARGING, CONFIRMING, REFUNDING,
//! CANCELLING) and after it completes (the next status). Every remote effect is
//! idempotent: the charge and the refund are keyed by the booking, cinema's confirm,
//! release and cancel are idempotent by booking. While a step runs, its driver renews
//! the lease every third of it (`lease`), so the lease bounds how long a dead driver
//! goes unnoticed, not how long a step may take. So when a process dies mid-step,
//! recovery re-runs the step from the recorded status once the lease lapses (seconds),
//! and a repeat is harmless (a re-run charge returns the first result). A hold whose
//! booking was never written (its process died after LockSeats) is found among the
//! holds cinema lists, and its seats released, after `abandoned_hold_grace_ms`.
//!
//! MongoDB round trips are the scarce resource, so a step writes once, at its end,
//! with everything it learned (history entries, fields, event) in that one update; a
//! lease renewal changes only the lease, and only a step slower than a third of the
//! lease makes one. In particular CHARGING runs the confirm too, going straight to
//! CONFIRMED, FAILED's refund or PAYMENT_FAILED: a crash before that write re-runs
//! the charge, which returns the first result. Only a confirm that failed records the
//! charge as CONFIRMING, for recovery to confirm without asking payment again.
//! A PayBooking repeating a pay that this process is driving waits for the driver
//! (`drivers`) to finish instead of polling the booking.
//!
//! Where each part lives: `hold` (HoldSeats), `pay` (PayBooking and how a repeat
//! waits for the pay in flight), `cancel` (CancelBooking's claim), `steps` (the step
//! machine that drives a claimed booking: charge, confirm, refund, free seats),
//! `lease` (how a running step keeps its lease), `recovery` (the sweep: expiry,
//! resuming stalled sagas, late and abandoned seat releases), `upstream` (the typed
//! cinema and payment clients), `checkpoint` (the crash test hook) and `reads`
//! (GetBooking, ListBookings). This module holds the shared handle and what every part
//! uses.

mod cancel;
mod checkpoint;
mod hold;
mod lease;
mod pay;
mod reads;
mod recovery;
mod steps;
mod upstream;

use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::payment::v1::payment_service_client::PaymentServiceClient;
use tokio::sync::{Notify, Semaphore};
use tonic::transport::Channel;
use tracing::Instrument as _;

pub use self::checkpoint::Checkpoint;
pub use self::recovery::SweepReport;
pub use self::upstream::Retry;
pub(crate) use self::upstream::unanswered;
use self::upstream::{Cinema, HoldAt, Payments};
use crate::domain::{BookingId, RefundPolicy, ShowtimeId};
use crate::drivers::Drivers;
use crate::error::BookingError;
use crate::store::BookingStore;
use marquee_kit::turns::Turns;

/// What the saga is configured with.
#[derive(Debug, Clone)]
pub struct SagaSettings {
    pub hold_ttl_seconds: i32,
    /// A pay extends the hold only when less than this is left of it.
    pub extend_hold_below: chrono::Duration,
    pub max_active_holds: u32,
    pub charge_retry: Retry,
    pub upstream_retry: Retry,
    /// The deadline every outgoing call carries.
    pub deadline: Duration,
    pub policy: RefundPolicy,
    /// How long a repeated PayBooking waits for the payment in flight to finish.
    pub pay_wait: Duration,
    /// How far ahead a step in flight is leased; renewed every third of it while the
    /// step runs, so recovery takes over only the steps of a driver that stopped.
    pub lease: Duration,
    /// Steps (hold, pay, cancel) running at once before SERVICE_BUSY.
    pub max_in_flight: usize,
    /// How long after cinema locked a hold's seats its booking must be written; after
    /// that the sweeper presumes the hold died before the insert and releases them.
    pub abandoned_hold_grace: Duration,
}

/// The orchestrator and the clients of the services it coordinates: a handle to one
/// shared `Core`, cheap to clone onto the task a step runs on.
#[derive(Clone)]
pub struct Saga(Arc<Core>);

/// What every handle of a [`Saga`] shares.
pub struct Core {
    store: BookingStore,
    cinema: Cinema,
    payments: Payments,
    settings: SagaSettings,
    /// Wakes the outbox relay as soon as an event is written.
    outbox_written: Arc<Notify>,
    /// The bookings this process drives a step of right now.
    drivers: Drivers,
    /// Holds of this process by idempotency key: a repeat waits for the first. A client
    /// (or the gateway) that timed out and retried a HoldSeats while the first call
    /// still ran would otherwise run the whole hold again (LockSeats refused by its own
    /// first attempt, key lookup): in a rush, when every call is slow, those repeats
    /// were most of the MongoDB load. Taking turns, the repeat runs after the first and
    /// finds its booking with one key lookup.
    turns: Turns,
    /// Test hook: the checkpoint fails as if the process died there.
    crash_at: Option<Checkpoint>,
    /// One permit per hold, pay or cancel step running on its own task.
    in_flight: Arc<Semaphore>,
    /// The last of cinema's holds the sweeper looked at (`recovery`).
    holds_seen: Mutex<Option<HoldAt>>,
}

impl Deref for Saga {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.0
    }
}

impl Saga {
    pub fn new(
        store: BookingStore,
        cinema: CinemaServiceClient<Channel>,
        payments: PaymentServiceClient<Channel>,
        settings: SagaSettings,
        outbox_written: Arc<Notify>,
        crash_at: Option<Checkpoint>,
    ) -> Self {
        Self(Arc::new(Core {
            store,
            cinema: Cinema::new(cinema, settings.deadline, settings.upstream_retry),
            payments: Payments::new(
                payments,
                settings.deadline,
                settings.charge_retry,
                settings.upstream_retry,
            ),
            outbox_written,
            drivers: Drivers::default(),
            turns: Turns::default(),
            crash_at,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            holds_seen: Mutex::new(None),
            settings,
        }))
    }

    pub fn drivers(&self) -> Drivers {
        self.drivers.clone()
    }

    /// Runs saga work on a task of its own, in the caller's trace, and waits for it. A
    /// gRPC handler is dropped when its caller gives up (deadline, disconnect); work it
    /// ran itself would stop halfway, leaving seats held for a booking never written or a
    /// step in flight until recovery takes it over after the lease, while the caller's
    /// retry finds the seats taken or has to wait. On its own task the work finishes, and
    /// a repeated pay waits for it here.
    ///
    /// Detached work outlives its callers, so it is bounded: with `max_in_flight` steps
    /// running, another is refused at once, before it writes anything.
    async fn detached<T, F>(&self, work: F) -> Result<T, BookingError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, BookingError>> + Send + 'static,
    {
        let permit = self.in_flight.clone().try_acquire_owned().map_err(|_| BookingError::Busy)?;
        let work = async move {
            let result = work.await;
            drop(permit);
            result
        }
        // The caller's span goes along: the work stays in its trace.
        .instrument(tracing::Span::current());
        tokio::spawn(work).await.context("a saga task panicked")?
    }

    /// Frees a booking's held seats. Failure is logged, not raised: the hold lapses
    /// by itself, so the caller's outcome does not depend on it.
    async fn release_seats(&self, showtime_id: ShowtimeId, booking_id: BookingId) -> bool {
        match self.cinema.release_seats(showtime_id, booking_id).await {
            Ok(_) => true,
            Err(status) => {
                tracing::error!(
                    booking.id = %booking_id,
                    code = ?status.code(),
                    message = status.message(),
                    "cannot release seats; they stay held until the hold expires"
                );
                false
            }
        }
    }
}
