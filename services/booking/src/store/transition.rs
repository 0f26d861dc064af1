//! A booking's state changes: `Transition` gathers a new status and what it records
//! alongside (history, fields, event), and `BookingStore::transition` writes it as one
//! conditional update on the booking's version. `BookingStore::renew_lease` keeps the
//! lease of a step in flight, on the same condition.

use anyhow::Context;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::ReturnDocument;

use super::BookingStore;
use super::document::{BookingDoc, bson_time, money_bson};
use crate::domain::{Booking, BookingId, BookingStatus, Money, PublicStatus, RefundCause, Step};
use crate::events::OutboxEvent;

/// One saga step's outcome, appended to the booking's history.
#[derive(Debug, Clone)]
pub struct SagaEntry {
    step: Step,
    outcome: String,
    detail: String,
    at: DateTime<Utc>,
}

impl SagaEntry {
    pub fn new(step: Step, outcome: impl Into<String>) -> Self {
        Self { step, outcome: outcome.into(), detail: String::new(), at: Utc::now() }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub(super) fn to_bson(&self) -> Bson {
        Bson::Document(doc! {
            "step": self.step.as_str(),
            "outcome": &self.outcome,
            "detail": &self.detail,
            "at": bson_time(self.at),
        })
    }
}

/// A booking as its writer loaded it. Every write of a saga is conditional on it, so
/// a writer changes the booking only while nobody else has since.
#[derive(Debug, Clone, Copy)]
pub struct Revision {
    pub id: BookingId,
    pub version: i64,
}

impl Revision {
    pub fn of(booking: &Booking) -> Self {
        Self { id: booking.id, version: booking.version }
    }

    /// The version alone pins the status too: every status change is a `transition`,
    /// which bumps it. (A filter with one field fewer is cheaper for secantusd-rs to
    /// plan on every write of a saga.)
    fn filter(&self) -> Document {
        doc! { "_id": self.id.to_string(), "version": self.version }
    }
}

/// A state change: the new status plus what it records alongside.
#[derive(Debug)]
pub struct Transition {
    to: BookingStatus,
    history: Vec<SagaEntry>,
    event: Option<OutboxEvent>,
    set: Document,
    refund_cause: Option<RefundCause>,
}

impl Transition {
    pub fn to(status: BookingStatus) -> Self {
        Self { to: status, history: Vec::new(), event: None, set: Document::new(), refund_cause: None }
    }

    /// The same record (history, fields, event) written with another status: a step
    /// gathers what it learned and lets it ride along with the write that follows.
    pub fn retarget(mut self, status: BookingStatus) -> Self {
        self.to = status;
        self
    }

    pub fn step(mut self, step: Step, outcome: impl Into<String>) -> Self {
        self.history.push(SagaEntry::new(step, outcome));
        self
    }

    pub fn entry(mut self, entry: SagaEntry) -> Self {
        self.history.push(entry);
        self
    }

    pub fn event(mut self, event: OutboxEvent) -> Self {
        self.event = Some(event);
        self
    }

    pub fn payment_id(mut self, payment_id: &str) -> Self {
        self.set.insert("payment_id", payment_id);
        self
    }

    /// The payment starts with this method, asked for with this idempotency key.
    pub fn payment(mut self, method: &str, key: &str) -> Self {
        self.set.insert("payment_method", method);
        self.set.insert("pay_key", key);
        self
    }

    /// The seats could not be released (cinema was down): the sweeper tries again
    /// until it can, rather than leaving them held until the hold lapses.
    pub fn seats_released(mut self, released: bool) -> Self {
        self.history.push(SagaEntry::new(Step::ReleaseSeats, if released { "succeeded" } else { "failed" }));
        if !released {
            self.set.insert("release_pending", true);
        }
        self
    }

    pub fn reason(mut self, reason: &str) -> Self {
        self.set.insert("reason", reason);
        self
    }

    /// Records the hold's new expiry after cinema extended it.
    pub fn hold_extended(mut self, expires_at: Option<DateTime<Utc>>) -> Self {
        self.set.insert("hold_extended", true);
        if let Some(at) = expires_at {
            self.set.insert("expires_at", bson_time(at));
        }
        self
    }

    /// Decides a refund (before it is made).
    pub fn refund_due(mut self, cause: RefundCause, amount: &Money, fee: &Money) -> Self {
        self.refund_cause = Some(cause);
        self.set.insert(
            "refund",
            doc! {
                "cause": bson::to_bson(&cause).unwrap_or(Bson::Null),
                "amount": money_bson(amount),
                "fee": money_bson(fee),
                "refund_id": Bson::Null,
                "at": Bson::Null,
            },
        );
        self
    }

    /// Records the refund payment made.
    pub fn refunded(mut self, refund_id: &str, at: DateTime<Utc>) -> Self {
        self.set.insert("refund.refund_id", refund_id);
        self.set.insert("refund.at", bson_time(at));
        self
    }

    pub fn emits_event(&self) -> bool {
        self.event.is_some()
    }
}

impl BookingStore {
    /// Applies `change` only if the booking is still at the version it was loaded
    /// with. `None` means another writer got there first. Moving into an
    /// in-flight status takes a fresh lease; any other status drops it.
    pub async fn transition(&self, booking: &Booking, change: Transition) -> anyhow::Result<Option<Booking>> {
        let now = Utc::now();
        let cause = change.refund_cause.or(booking.refund.as_ref().map(|r| r.cause));
        let mut set = change.set;
        set.insert("status", change.to.as_str());
        set.insert("public_status", PublicStatus::of(change.to, cause).as_str());
        set.insert("updated_at", bson_time(now));
        // Only a step in flight has a lease: the sparse index of leased steps holds
        // just those.
        let mut unset = Document::new();
        if BookingStatus::IN_FLIGHT.contains(&change.to) {
            set.insert("lease_until", bson_time(now + self.lease));
        } else {
            unset.insert("lease_until", "");
        }
        let mut inc = doc! { "version": 1_i64 };
        let history: Vec<Bson> = change.history.iter().map(SagaEntry::to_bson).collect();
        let mut push = doc! { "saga": { "$each": history } };
        if let Some(event) = &change.event {
            // The deferred events go out with this one, ahead of it.
            let mut pending = booking.deferred_events.clone();
            pending.push(event.event_id.to_string());
            inc.insert("unsent_events", i32::try_from(pending.len()).unwrap_or(i32::MAX));
            push.insert("outbox", doc! { "$each": [event.entry()] });
            push.insert("pending_events", doc! { "$each": pending });
            if !booking.deferred_events.is_empty() {
                unset.insert("deferred_events", "");
            }
        }
        let mut update = Document::new();
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        update.insert("$set", set);
        update.insert("$inc", inc);
        update.insert("$push", push);
        let updated = self
            .bookings
            .find_one_and_update(Revision::of(booking).filter(), update)
            .return_document(ReturnDocument::After)
            .await
            .with_context(|| format!("cannot move booking {} to {}", booking.id, change.to))?;
        updated.map(BookingDoc::into_booking).transpose()
    }

    /// Moves the lease of the step in flight at `revision` a full lease ahead. The
    /// version stays: the step's own write is conditional on the one it loaded.
    /// `false`: the booking is no longer at `revision` (its step ended, or recovery in
    /// another replica took it over), so there is no lease of this step to renew.
    pub async fn renew_lease(&self, revision: &Revision) -> anyhow::Result<bool> {
        let until = bson_time(Utc::now() + self.lease);
        let renewed = self
            .bookings
            .update_one(revision.filter(), doc! { "$set": { "lease_until": until } })
            .await
            .with_context(|| format!("cannot renew the lease of booking {}", revision.id))?;
        Ok(renewed.matched_count == 1)
    }
}
