//! One relay per outbox at a time, however many replicas run: a lease in MongoDB.
//!
//! Every replica of booking (or payment) runs a relay over the same collection. Without
//! a lease each would read the same pending events and publish every one of them once
//! per replica: a duplicate storm the consumers must absorb. The lease is one document
//! per outbox collection in `outbox_leases`, `{ _id: <collection>, holder, until }`:
//! a relay publishes only while it holds it, renews it at half its term, and a relay
//! that stops gives it up; one that dies leaves it to lapse, and another replica takes
//! over within `ttl` plus a third of it. Publishing stays at least once: two holders
//! at once (a paused holder whose term ran out, clocks apart) can only repeat an event,
//! which consumers deduplicate by id, never lose one.

use std::time::Duration;

use tokio::time::Instant;

use super::OutboxStore;

/// This relay's view of the lease.
pub(crate) struct Lease {
    holder: String,
    ttl: Duration,
    /// Until when this relay may publish (earlier than the stored term, so a slow
    /// renewal or a clock a little ahead elsewhere does not make two holders).
    held_until: Option<Instant>,
    /// When a relay without the lease tries to take it again.
    next_try: Instant,
}

impl Lease {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self { holder: uuid::Uuid::new_v4().to_string(), ttl, held_until: None, next_try: Instant::now() }
    }

    /// Whether this relay may publish now, renewing or taking the lease when due: a
    /// holder renews at half its term, a waiting relay tries every third of one (never
    /// on each write, which would cost a command per write).
    pub(crate) async fn holds<S: OutboxStore>(&mut self, store: &S) -> anyhow::Result<bool> {
        let now = Instant::now();
        match self.held_until {
            Some(until) if now + self.ttl / 2 < until => return Ok(true),
            None if now < self.next_try => return Ok(false),
            _ => {}
        }
        let held = store.hold_lease(&self.holder, self.ttl).await?;
        if held {
            if self.held_until.is_none() {
                tracing::info!(holder = %self.holder, "outbox relay took the lease; publishing");
            }
            self.held_until = Some(now + self.ttl * 4 / 5);
        } else {
            if self.held_until.is_some() {
                tracing::warn!(holder = %self.holder, "outbox relay lost the lease; another replica publishes");
            }
            self.held_until = None;
            self.next_try = now + self.pause();
        }
        Ok(held)
    }

    /// How long a relay without the lease waits before it looks again.
    pub(crate) fn pause(&self) -> Duration {
        self.ttl / 3
    }

    /// Gives the lease up (on shutdown) so another replica takes over at once.
    pub(crate) async fn release<S: OutboxStore>(&mut self, store: &S) {
        if self.held_until.take().is_none() {
            return;
        }
        match tokio::time::timeout(RELEASE_PATIENCE, store.release_lease(&self.holder)).await {
            Ok(Ok(())) => tracing::info!(holder = %self.holder, "outbox relay released the lease"),
            Ok(Err(error)) => tracing::warn!(
                error = format!("{error:#}"),
                "cannot release the outbox relay lease; it lapses by itself"
            ),
            Err(_) => tracing::warn!("releasing the outbox relay lease timed out; it lapses by itself"),
        }
    }
}

/// How long shutdown waits for the lease to be given up.
const RELEASE_PATIENCE: Duration = Duration::from_secs(1);
