//! Recovery and the sweep, run at startup and every `sweep_interval_ms` by each
//! replica: expires overdue holds, resumes sagas whose process died mid-step (their
//! lease lapsed), releases the seats of finished bookings that cinema could not be
//! told about, and those of holds whose booking was never written.

use std::sync::PoisonError;

use chrono::{DateTime, Utc};
use marquee_kit::trace::in_new_trace;
use tracing::Instrument as _;

use super::{Checkpoint, Saga};
use crate::domain::{Booking, BookingId, BookingStatus, Step};
use crate::events;
use crate::store::Transition;

/// Bookings looked at per sweep query.
const SWEEP_BATCH: i64 = 100;

/// Cinema's holds looked at per page, and pages per sweep at most (after a restart
/// every live hold is looked at once).
const HOLDS_PER_PAGE: u32 = 100;
const HOLD_PAGES_PER_SWEEP: usize = 20;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: usize,
    pub resumed: usize,
    /// Holds whose process died after locking seats but before writing the booking.
    pub abandoned: usize,
    /// Finished bookings whose seats are released now, after cinema was down.
    pub released_late: usize,
}

impl Saga {
    /// Expires overdue holds, then resumes sagas whose process died mid-step. Safe to
    /// run in every replica at once: each booking is claimed by a conditional update.
    /// No caller traced this work, so each booking handled is a trace of its own.
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        let now = Utc::now();
        for booking in self.store.overdue_holds(now, SWEEP_BATCH).await? {
            // Each span is opened inside the new trace, so it is that trace's.
            in_new_trace(async {
                let span = tracing::info_span!("sweep.expire", booking.id = %booking.id);
                self.expire(booking, now, &mut report).instrument(span).await
            })
            .await?;
        }
        for booking in self.store.stalled(Utc::now(), SWEEP_BATCH).await? {
            in_new_trace(async {
                let span = tracing::info_span!("sweep.resume", booking.id = %booking.id);
                self.resume(booking, &mut report).instrument(span).await
            })
            .await?;
        }
        for (booking_id, showtime_id) in self.store.pending_releases(SWEEP_BATCH).await? {
            let released = in_new_trace(async {
                let span = tracing::info_span!("sweep.release", booking.id = %booking_id);
                self.release_seats(showtime_id, booking_id).instrument(span).await
            })
            .await;
            if released {
                self.store.release_done(booking_id).await?;
                report.released_late += 1;
                tracing::info!(booking.id = %booking_id, "seats of a finished booking released");
            }
        }
        report.abandoned = self.release_unwritten_holds().await?;
        Ok(report)
    }

    /// Releases the seats first, so the expiry records how that went in its own
    /// write. The hold has lapsed, so cinema already lets anyone take the seats:
    /// releasing them early changes nothing for a pay that claims the booking first
    /// (its confirm re-acquires them if nobody took them, as for any lapsed hold).
    async fn expire(
        &self,
        booking: Booking,
        now: DateTime<Utc>,
        report: &mut SweepReport,
    ) -> anyhow::Result<()> {
        if self.drivers.driver(booking.id).is_some() {
            // A pay of this process is claiming it right now; the next sweep looks again.
            return Ok(());
        }
        let released = self.release_seats(booking.showtime_id, booking.id).await;
        let event = events::booking_expired(&booking, now);
        let change = Transition::to(BookingStatus::Expired)
            .step(Step::Expire, "succeeded")
            .seats_released(released)
            .event(event);
        // Losing the claim means it was paid, cancelled or expired by another replica.
        let Some(expired) = self.store.transition(&booking, change).await? else { return Ok(()) };
        self.outbox_written.notify_one();
        report.expired += 1;
        if self.checkpoint(Checkpoint::SweepExpired).is_err() {
            return Ok(());
        }
        tracing::info!(booking.id = %expired.id, "hold expired");
        Ok(())
    }

    async fn resume(&self, booking: Booking, report: &mut SweepReport) -> anyhow::Result<()> {
        let Some(driving) = self.drivers.enter(booking.id) else {
            // This process is driving it: the step is alive, its renewals just did not
            // land in time (MongoDB was slow or away).
            return Ok(());
        };
        let status = booking.status;
        let claim = Transition::to(status).step(Step::Recover, "resumed");
        let Some(claimed) = self.store.transition(&booking, claim).await? else { return Ok(()) };
        report.resumed += 1;
        tracing::warn!(booking.id = %claimed.id, %status, "resuming a stalled saga");
        match self.drive(claimed, Some(&driving)).await {
            Ok(done) => {
                tracing::info!(booking.id = %done.id, status = %done.status, "stalled saga resumed")
            }
            Err(error) => {
                tracing::warn!(booking.id = %booking.id, error = %error, "stalled saga still unfinished")
            }
        }
        Ok(())
    }

    /// Gives back the seats of holds whose booking was never written: the hold's
    /// process died between LockSeats and the insert, or could not give the seats back
    /// itself. Cinema lists its live holds taken longer than the grace ago, oldest
    /// first; those with no booking here are released. Each sweep goes on from where
    /// this process's last one stopped, so a hold is looked at once (after a restart,
    /// each live one once more); a release that fails is tried again by the next sweep.
    async fn release_unwritten_holds(&self) -> anyhow::Result<usize> {
        let mut released = 0;
        for _ in 0..HOLD_PAGES_PER_SWEEP {
            let after = *self.holds_seen.lock().unwrap_or_else(PoisonError::into_inner);
            let grace = self.settings.abandoned_hold_grace;
            let holds = match self.cinema.list_holds(grace, after, HOLDS_PER_PAGE).await {
                Ok(holds) => holds,
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cannot look for holds never written");
                    return Ok(released);
                }
            };
            let ids: Vec<BookingId> = holds.iter().map(|hold| hold.at.booking_id).collect();
            let written = self.store.existing(&ids).await?;
            for hold in &holds {
                let booking_id = hold.at.booking_id;
                if !written.contains(&booking_id) {
                    let freed = in_new_trace(async {
                        let span = tracing::info_span!("sweep.abandoned", booking.id = %booking_id);
                        self.release_seats(hold.showtime_id, booking_id).instrument(span).await
                    })
                    .await;
                    if !freed {
                        return Ok(released);
                    }
                    released += 1;
                    tracing::warn!(booking.id = %booking_id, "released the seats of a hold never written");
                }
                *self.holds_seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(hold.at);
            }
            if holds.len() < HOLDS_PER_PAGE as usize {
                break;
            }
        }
        Ok(released)
    }
}
