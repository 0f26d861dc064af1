//! A step in flight keeps its lease: while the step runs, its driver renews the lease
//! every third of it, so recovery takes over only a step whose driver stopped (its
//! process died or lost the store), never one that is merely slow. That lets the lease
//! be short, and a dead replica's sagas be resumed a few seconds after it died.
//!
//! The renewal runs inside the step's own future, raced with it: it ends with the step
//! (or its task) and outlives nothing.

use std::future::Future;

use marquee_kit::lease::renewing;

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
