//! A lease kept alive while the work it guards runs: the holder renews it on a
//! period, so others take the work over only when the holder stopped (its process
//! died), never while it is merely slow. Booking's saga steps and payment's processor
//! attempts both hold one.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

/// Runs `step`, calling `renew` every `every` (after the previous call answered) while
/// it runs, until `renew` answers `Ok(false)`: the lease is no longer the holder's (the
/// work was taken over), so there is nothing left to renew. A failed renewal (the store
/// briefly away) is logged and tried again at the next period: it is no reason to stop
/// the work, and if no renewal lands the work is taken over and re-run, which the
/// holders of these leases make harmless. Returns the step's output, and drops a
/// renewal still in flight when the step ends. Runs in the caller's span, which names
/// what the lease guards.
pub async fn renewing<T, R>(step: impl Future<Output = T>, every: Duration, mut renew: impl FnMut() -> R) -> T
where
    R: Future<Output = anyhow::Result<bool>>,
{
    let heartbeat = async {
        loop {
            tokio::time::sleep(every).await;
            match renew().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!("the work was taken over; no longer renewing its lease");
                    return;
                }
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cannot renew a lease; trying again");
                }
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
            async { Ok(true) }
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
            async { Ok(true) }
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
                async move { Ok(renewed) }
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
            Ok(true)
        })
        .await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert!(!answered.get());
    }
}
