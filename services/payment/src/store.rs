//! The `payments` collection. The unique index on `idempotency_key` is what makes a
//! charge happen at most once: the document is inserted before the card is charged,
//! and a processor attempt runs only under a lease taken by a conditional update.
//! Each document also carries its refunds and its outbox (`marquee_messaging::outbox`),
//! so a state change and the event it causes are one single-document write.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use marquee_kit::batch::Batcher;
use marquee_messaging::outbox::{MongoOutbox, OutboxEvent};
use marquee_mongo::{Inserted, insert_outcomes};
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{BookingId, Charge, PaymentId, Refund};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Processing,
    Succeeded,
    Declined,
    /// The last attempt failed transiently; nothing is charged; a retry re-attempts.
    Failed,
    PartiallyRefunded,
    Refunded,
}

impl Status {
    fn bson(self) -> anyhow::Result<Bson> {
        bson::to_bson(&self).context("cannot encode payment status")
    }

    /// Statuses a charge retry answers with instead of attempting again.
    pub fn is_settled(self) -> bool {
        !matches!(self, Self::Processing | Self::Failed)
    }

    pub fn is_refundable(self) -> bool {
        matches!(self, Self::Succeeded | Self::PartiallyRefunded)
    }
}

/// One state a payment entered, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub status: Status,
    pub at: bson::DateTime,
}

/// One call to the processor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptDoc {
    /// `approved`, `declined` or `error`.
    pub outcome: String,
    pub reason: Option<String>,
    pub started_at: bson::DateTime,
    pub finished_at: bson::DateTime,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RefundDoc {
    pub refund_id: String,
    pub idempotency_key: String,
    pub amount_minor: i64,
    pub reason: String,
    pub created_at: bson::DateTime,
}

impl RefundDoc {
    pub fn new(refund: &Refund, now: DateTime<Utc>) -> Self {
        Self {
            // v7: time-ordered like payment ids.
            refund_id: uuid::Uuid::now_v7().to_string(),
            idempotency_key: refund.idempotency_key.as_str().to_owned(),
            amount_minor: refund.amount.amount_minor(),
            reason: refund.reason.as_str().to_owned(),
            created_at: bson_time(now),
        }
    }

    /// True when this refund was made for exactly this request (the key matched).
    pub fn matches(&self, refund: &Refund) -> bool {
        self.amount_minor == refund.amount.amount_minor() && self.reason == refund.reason.as_str()
    }
}

/// The right to run one processor attempt for a payment, until `until`.
#[derive(Clone, Debug)]
pub struct Lease {
    id: String,
    until: bson::DateTime,
}

impl Lease {
    pub fn new(now: DateTime<Utc>, length: chrono::Duration) -> Self {
        Self { id: uuid::Uuid::new_v4().to_string(), until: bson_time(now + length) }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub idempotency_key: String,
    pub booking_id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub payment_method: String,
    pub status: Status,
    pub decline_reason: Option<String>,
    pub created_at: bson::DateTime,
    pub updated_at: bson::DateTime,
    pub history: Vec<Transition>,
    #[serde(default)]
    pub attempts: Vec<AttemptDoc>,
    /// The attempt in flight, if any: its id and when it is presumed dead.
    #[serde(default)]
    pub lease_id: Option<String>,
    #[serde(default)]
    pub lease_until: Option<bson::DateTime>,
    #[serde(default)]
    pub refunded_minor: i64,
    #[serde(default)]
    pub refunds: Vec<RefundDoc>,
}

pub fn bson_time(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

pub fn chrono_time(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

impl PaymentDoc {
    /// A new payment, its first attempt leased to the caller.
    pub fn processing(id: PaymentId, charge: &Charge, now: DateTime<Utc>, lease: &Lease) -> Self {
        let at = bson_time(now);
        Self {
            id: id.to_string(),
            idempotency_key: charge.idempotency_key.as_str().to_owned(),
            booking_id: charge.booking_id.to_string(),
            user_id: charge.user_id.as_ref().map(ToString::to_string),
            amount_minor: charge.amount.amount_minor(),
            currency: charge.amount.currency().to_owned(),
            payment_method: charge.method.as_str().to_owned(),
            status: Status::Processing,
            decline_reason: None,
            created_at: at,
            updated_at: at,
            history: vec![Transition { status: Status::Processing, at }],
            attempts: Vec::new(),
            lease_id: Some(lease.id.clone()),
            lease_until: Some(lease.until),
            refunded_minor: 0,
            refunds: Vec::new(),
        }
    }

    /// True when this payment was created for exactly this charge.
    pub fn matches(&self, charge: &Charge) -> bool {
        self.booking_id == charge.booking_id.to_string()
            && self.user_id == charge.user_id.as_ref().map(ToString::to_string)
            && self.amount_minor == charge.amount.amount_minor()
            && self.currency == charge.amount.currency()
            && self.payment_method == charge.method.as_str()
    }

    /// True while another call's attempt may still be running.
    pub fn attempt_in_flight(&self, now: DateTime<Utc>) -> bool {
        self.status == Status::Processing && self.lease_until.is_some_and(|until| until > bson_time(now))
    }

    pub fn refund_by_key(&self, key: &str) -> Option<&RefundDoc> {
        self.refunds.iter().find(|r| r.idempotency_key == key)
    }
}

/// How a processor attempt ended, as the store records it.
pub struct Finish {
    pub status: Status,
    pub attempt: AttemptDoc,
    pub decline_reason: Option<String>,
    pub event: Option<OutboxEvent>,
}

/// Result of claiming an idempotency key.
pub enum Claim {
    /// The key was free; this payment is ours to process.
    Created,
    /// The key was already used; here is the payment that holds it.
    Existing(Box<PaymentDoc>),
}

#[derive(Clone)]
pub struct PaymentStore {
    payments: Collection<PaymentDoc>,
    /// Concurrent charges' inserts, one command per batch.
    inserts: Batcher<PaymentDoc, Inserted, mongodb::error::Error>,
}

/// Appends `event` to the outbox in the update being built.
fn push_event(update: &mut Document, event: &OutboxEvent) -> anyhow::Result<()> {
    let push = update.get_document_mut("$push").context("update has no $push")?;
    push.insert("outbox", event.entry());
    push.insert("pending_events", event.event_id.to_string());
    update.insert("$inc", doc! { "unsent_events": 1_i32 });
    Ok(())
}

impl PaymentStore {
    /// Opens the collection and ensures its indexes exist (idempotent).
    pub async fn init(db: &Database) -> anyhow::Result<Self> {
        let payments = db.collection::<PaymentDoc>("payments");
        let indexes = vec![
            IndexModel::builder()
                .keys(doc! { "idempotency_key": 1 })
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name("payments_idempotency_key_unique".to_owned())
                        .build(),
                )
                .build(),
            IndexModel::builder()
                .keys(doc! { "booking_id": 1, "created_at": 1 })
                .options(IndexOptions::builder().name("payments_by_booking".to_owned()).build())
                .build(),
        ];
        payments.create_indexes(indexes).await.context("cannot create payments indexes")?;
        let inserts = Batcher::spawn("insert payments", {
            let payments = payments.clone();
            move |docs: Vec<PaymentDoc>| {
                let payments = payments.clone();
                async move {
                    let count = docs.len();
                    insert_outcomes(payments.insert_many(docs).ordered(false).await, count)
                }
            }
        });
        Ok(Self { payments, inserts })
    }

    /// The outbox the relay drains: events live in the payment documents.
    pub async fn outbox(&self) -> anyhow::Result<MongoOutbox> {
        MongoOutbox::new(&self.payments).await
    }

    /// Inserts `payment` unless its idempotency key is taken.
    pub async fn claim(&self, payment: &PaymentDoc) -> anyhow::Result<Claim> {
        match self.inserts.call(payment.clone()).await? {
            Inserted::New => Ok(Claim::Created),
            Inserted::Duplicate => {
                let existing = self
                    .payments
                    .find_one(doc! { "idempotency_key": &payment.idempotency_key })
                    .await
                    .context("cannot load the payment holding an idempotency key")?
                    .context("duplicate idempotency key but no payment holds it")?;
                Ok(Claim::Existing(Box::new(existing)))
            }
        }
    }

    /// Leases a new attempt on a payment whose last attempt failed, or whose attempt
    /// outlived its lease (its process died). `None`: someone else got it first.
    pub async fn take_over(
        &self,
        id: &str,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<PaymentDoc>> {
        let at = bson_time(now);
        let processing = Status::Processing.bson()?;
        let filter = doc! {
            "_id": id,
            "$or": [
                { "status": Status::Failed.bson()? },
                { "status": processing.clone(), "lease_until": { "$lt": at } },
            ],
        };
        let update = doc! {
            "$set": { "status": processing.clone(), "lease_id": &lease.id, "lease_until": lease.until, "updated_at": at },
            "$push": { "history": { "status": processing, "at": at } },
        };
        self.payments
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::After)
            .await
            .context("cannot lease a payment attempt")
    }

    /// Pushes the attempt's lease `length` further while it runs. `false`: the lease
    /// is no longer this attempt's (a retry took the key over), so there is nothing
    /// left to renew.
    pub async fn renew_lease(
        &self,
        id: &str,
        lease: &Lease,
        length: chrono::Duration,
    ) -> anyhow::Result<bool> {
        let until = bson_time(Utc::now() + length);
        let renewed = self
            .payments
            .update_one(doc! { "_id": id, "lease_id": &lease.id }, doc! { "$set": { "lease_until": until } })
            .await
            .context("cannot renew a payment attempt's lease")?;
        Ok(renewed.matched_count == 1)
    }

    /// Records how the leased attempt ended and releases the lease.
    pub async fn finish(&self, id: &str, lease: &Lease, finish: Finish) -> anyhow::Result<PaymentDoc> {
        let at = finish.attempt.finished_at;
        let status = finish.status.bson()?;
        let attempt = bson::to_bson(&finish.attempt).context("cannot encode payment attempt")?;
        let mut update = doc! {
            "$set": {
                "status": status.clone(),
                "decline_reason": finish.decline_reason,
                "updated_at": at,
                "lease_id": Bson::Null,
                "lease_until": Bson::Null,
            },
            "$push": { "history": { "status": status, "at": at }, "attempts": attempt },
        };
        if let Some(event) = &finish.event {
            push_event(&mut update, event)?;
        }
        self.payments
            .find_one_and_update(doc! { "_id": id, "lease_id": &lease.id }, update)
            .return_document(ReturnDocument::After)
            .await
            .context("cannot record the payment outcome")?
            .with_context(|| format!("payment {id}: the attempt's lease was taken over before it finished"))
    }

    /// Adds a refund if the refunded total is still what `seen` says, so two refunds
    /// decided against the same total can never both land. `None`: the total moved;
    /// decide again.
    pub async fn add_refund(
        &self,
        seen: &PaymentDoc,
        refund: &RefundDoc,
        event: &OutboxEvent,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<PaymentDoc>> {
        let refunded = seen.refunded_minor + refund.amount_minor;
        anyhow::ensure!(refunded <= seen.amount_minor, "refund would exceed the captured amount");
        let status = if refunded == seen.amount_minor { Status::Refunded } else { Status::PartiallyRefunded }
            .bson()?;
        let at = bson_time(now);
        let filter = doc! {
            "_id": &seen.id,
            "status": { "$in": [Status::Succeeded.bson()?, Status::PartiallyRefunded.bson()?] },
            "refunded_minor": seen.refunded_minor,
        };
        let mut update = doc! {
            "$set": { "status": status.clone(), "refunded_minor": refunded, "updated_at": at },
            "$push": {
                "history": { "status": status, "at": at },
                "refunds": bson::to_bson(refund).context("cannot encode refund")?,
            },
        };
        push_event(&mut update, event)?;
        self.payments
            .find_one_and_update(filter, update)
            .return_document(ReturnDocument::After)
            .await
            .with_context(|| format!("cannot add a refund to payment {}", seen.id))
    }

    pub async fn find(&self, id: &str) -> anyhow::Result<Option<PaymentDoc>> {
        self.payments.find_one(doc! { "_id": id }).await.context("cannot look up payment")
    }

    /// A booking's payments, oldest first.
    pub async fn list_for_booking(&self, booking_id: &BookingId) -> anyhow::Result<Vec<PaymentDoc>> {
        self.payments
            .find(doc! { "booking_id": booking_id.to_string() })
            .sort(doc! { "created_at": 1 })
            .await
            .context("cannot list payments")?
            .try_collect()
            .await
            .context("cannot read listed payments")
    }
}
