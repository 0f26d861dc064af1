//! A step in flight keeps its lease: while the step runs, its driver renews the lease
//! every third of it, so recovery takes over only a step whose driver stopped (its
//! process died or lost the store), never one that is merely slow. That lets the lease
//! be short, and a dead replica's sagas be resumed a few seconds after it died.
//!
//! The renewal runs inside the step's own future, raced with it: it ends with the step
//! (or its task) and outlives nothing.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use super::Saga;
use crate::store::Revision;

impl Saga {
    /// Runs `step`, the step of the booking at `revision` (as the write that took the
    /// lease left it), renewing its lease until the step ends.
    pub(super) async fn keeping_lease<T>(&self, revision: Revision, step: impl Future<Output = T>) -> T {
        renewing(step, self.settings.lease / 3, || self.renew_lease(revision)).await
    }

    /// One renewal; `false` once the booking has moved on without this step (recovery
    /// in another replica took it over), when there is nothing left to renew. A failed
    /// renewal is no reason to stop the step: the next one may land in time, and if
    /// none does, recovery re-runs the step, which is harmless.
    async fn renew_lease(&self, revision: Revision) -> bool {
        match self.store.renew_lease(&revision).await {
            Ok(renewed) => {
                if !renewed {
                    tracing::info!(booking.id = %revision.id, status = %revision.status, "the booking moved on; no longer renewing this step's lease");
                }
                renewed
            }
            Err(error) => {
                tracing::warn!(booking.id = %revision.id, error = format!("{error:#}"), "cannot renew a saga step's lease; trying again");
                true
            }
        }
    }
}

/// Runs `step`, calling `renew` every `every` (after the previous call answered) while
/// it runs, until `renew` says to stop. Returns the step's output, and drops a renewal
/// still in flight when the step ends.
async fn renewing<T, R>(step: impl Future<Output = T>, every: Duration, mut renew: impl FnMut() -> R) -> T
where
    R: Future<Output = bool>,
{
    let heartbeat = async {
        loop {
            tokio::time::sleep(every).await;
            if !renew().await {
                return;
            }
        }
    };
    let mut step = pin!(step);
    tokio::select! {
        biased;
        done = &mut step => return done,
        () = heartbeat => {}
    }
    step.await
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use tokio::time::{Instant, sleep};

    use super::*;

    const EVERY: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn a_step_is_renewed_every_period_while_it_runs_and_returns_its_output() {
        let renewed_at = RefCell::new(Vec::new());
        let started = Instant::now();
        let step = async {
            sleep(Duration::from_secs(7)).await;
            "done"
        };
        let output = renewing(step, EVERY, || {
            renewed_at.borrow_mut().push(started.elapsed().as_secs());
            async { true }
        })
        .await;
        assert_eq!(output, "done");
        assert_eq!(*renewed_at.borrow(), [2, 4, 6]);
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_quicker_than_the_period_is_never_renewed() {
        let renewals = Cell::new(0);
        let output = renewing(async { 42 }, EVERY, || {
            renewals.set(renewals.get() + 1);
            async { true }
        })
        .await;
        assert_eq!((output, renewals.get()), (42, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn renewing_stops_once_the_booking_moved_on_and_the_step_still_finishes() {
        let renewals = Cell::new(0);
        let started = Instant::now();
        let output = renewing(
            async {
                sleep(Duration::from_secs(9)).await;
                "done"
            },
            EVERY,
            || {
                renewals.set(renewals.get() + 1);
                // The second renewal finds the booking taken over.
                let renewed = renewals.get() < 2;
                async move { renewed }
            },
        )
        .await;
        assert_eq!((output, renewals.get()), ("done", 2));
        assert_eq!(started.elapsed(), Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_still_in_flight_when_the_step_ends_is_dropped_with_it() {
        let (answered, started) = (Cell::new(false), Instant::now());
        renewing(sleep(Duration::from_secs(3)), EVERY, || async {
            // A store that takes its time answering.
            sleep(Duration::from_secs(5)).await;
            answered.set(true);
            true
        })
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert!(!answered.get());
    }
}
