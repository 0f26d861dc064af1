//! The `payments` collection. The unique index on `idempotency_key` is what makes a
//! charge happen at most once: the document is inserted before the card is charged.

use anyhow::Context;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{Charge, PaymentId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Processing,
    Succeeded,
    Declined,
}

/// One state a payment entered, and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub status: Status,
    pub at: bson::DateTime,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PaymentDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub idempotency_key: String,
    pub booking_id: String,
    pub amount_minor: i64,
    pub currency: String,
    pub payment_method: String,
    pub status: Status,
    pub decline_reason: Option<String>,
    pub created_at: bson::DateTime,
    pub updated_at: bson::DateTime,
    pub history: Vec<Transition>,
}

impl PaymentDoc {
    /// A new payment, not yet sent to the processor.
    pub fn processing(id: PaymentId, charge: &Charge, now: DateTime<Utc>) -> Self {
        let at = bson::DateTime::from_millis(now.timestamp_millis());
        Self {
            id: id.to_string(),
            idempotency_key: charge.idempotency_key.as_str().to_owned(),
            booking_id: charge.booking_id.as_str().to_owned(),
            amount_minor: charge.amount.amount_minor(),
            currency: charge.amount.currency().as_str().to_owned(),
            payment_method: charge.method.as_str().to_owned(),
            status: Status::Processing,
            decline_reason: None,
            created_at: at,
            updated_at: at,
            history: vec![Transition { status: Status::Processing, at }],
        }
    }

    /// True when this payment was created for exactly this charge.
    pub fn matches(&self, charge: &Charge) -> bool {
        self.booking_id == charge.booking_id.as_str()
            && self.amount_minor == charge.amount.amount_minor()
            && self.currency == charge.amount.currency().as_str()
            && self.payment_method == charge.method.as_str()
    }

    pub fn created_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.created_at.timestamp_millis()).unwrap_or_default()
    }
}

/// Result of claiming an idempotency key.
pub enum Claim {
    /// The key was free; this payment is ours to process.
    Created,
    /// The key was already used; here is the payment that holds it.
    Existing(PaymentDoc),
}

#[derive(Clone)]
pub struct PaymentStore {
    payments: Collection<PaymentDoc>,
}

impl PaymentStore {
    /// Opens the collection and ensures its indexes exist (idempotent).
    pub async fn init(db: &Database) -> anyhow::Result<Self> {
        let payments = db.collection::<PaymentDoc>("payments");
        let unique_key = IndexModel::builder()
            .keys(doc! { "idempotency_key": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("payments_idempotency_key_unique".to_owned())
                    .build(),
            )
            .build();
        payments.create_index(unique_key).await.context("cannot create payments.idempotency_key index")?;
        Ok(Self { payments })
    }

    /// Inserts `payment` unless its idempotency key is taken.
    pub async fn claim(&self, payment: &PaymentDoc) -> anyhow::Result<Claim> {
        match self.payments.insert_one(payment).await {
            Ok(_) => Ok(Claim::Created),
            Err(e) if marquee_common::mongo::is_duplicate_key(&e) => {
                let existing = self
                    .payments
                    .find_one(doc! { "idempotency_key": &payment.idempotency_key })
                    .await
                    .context("cannot load the payment holding an idempotency key")?
                    .context("duplicate idempotency key but no payment holds it")?;
                Ok(Claim::Existing(existing))
            }
            Err(e) => Err(e).context("cannot insert payment"),
        }
    }

    /// Moves a PROCESSING payment to its final status, recording the transition.
    pub async fn finish(
        &self,
        id: &str,
        status: Status,
        decline_reason: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<PaymentDoc> {
        let at = bson::DateTime::from_millis(now.timestamp_millis());
        let status_bson = bson::to_bson(&status).context("cannot encode payment status")?;
        let update = doc! {
            "$set": { "status": status_bson.clone(), "decline_reason": decline_reason, "updated_at": at },
            "$push": { "history": { "status": status_bson, "at": at } },
        };
        self.payments
            .find_one_and_update(doc! { "_id": id, "status": "PROCESSING" }, update)
            .return_document(ReturnDocument::After)
            .await
            .context("cannot record the payment outcome")?
            .with_context(|| format!("payment {id} was no longer PROCESSING"))
    }

    pub async fn find(&self, id: PaymentId) -> anyhow::Result<Option<PaymentDoc>> {
        self.payments.find_one(doc! { "_id": id.to_string() }).await.context("cannot look up payment")
    }
}
