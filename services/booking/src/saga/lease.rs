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
        renewing(step, self.settings.lease / 3, || self.store.renew_lease(&revision)).await
    }
}
