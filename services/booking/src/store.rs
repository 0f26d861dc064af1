//! The `bookings` collection: one document per booking carrying its state, its saga
//! history and its outbox, so a state change and the events it causes are written
//! by one atomic single-document update.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use marquee_common::outbox::MongoOutbox;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{
    BookedSeat, Booking, BookingId, BookingStatus, IdempotencyKey, Money, SeatId, ShowtimeId, UserId,
};
use crate::events::OutboxEvent;

#[derive(Clone)]
pub struct BookingStore {
    bookings: Collection<BookingDoc>,
}

/// Why an insert failed: a duplicate idempotency key is an answer, not a fault.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    #[error("a booking with this idempotency key already exists")]
    DuplicateKey,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// One saga step's outcome, appended to the booking's history.
#[derive(Debug, Clone)]
pub struct SagaEntry {
    step: &'static str,
    outcome: &'static str,
    at: DateTime<Utc>,
}

impl SagaEntry {
    pub fn new(step: &'static str, outcome: &'static str) -> Self {
        Self { step, outcome, at: Utc::now() }
    }

    fn to_bson(&self) -> Bson {
        Bson::Document(doc! { "step": self.step, "outcome": self.outcome, "at": bson_time(self.at) })
    }
}

/// A state change: the new status plus what it records alongside.
#[derive(Debug)]
pub struct Transition {
    to: BookingStatus,
    history: Vec<SagaEntry>,
    event: Option<OutboxEvent>,
    payment_id: Option<String>,
    payment_method: Option<String>,
}

impl Transition {
    pub fn to(status: BookingStatus) -> Self {
        Self { to: status, history: Vec::new(), event: None, payment_id: None, payment_method: None }
    }

    pub fn step(mut self, step: &'static str, outcome: &'static str) -> Self {
        self.history.push(SagaEntry::new(step, outcome));
        self
    }

    pub fn event(mut self, event: OutboxEvent) -> Self {
        self.event = Some(event);
        self
    }

    pub fn payment_id(mut self, payment_id: &str) -> Self {
        self.payment_id = Some(payment_id.to_owned());
        self
    }

    pub fn payment_method(mut self, method: &str) -> Self {
        self.payment_method = Some(method.to_owned());
        self
    }

    pub fn emits_event(&self) -> bool {
        self.event.is_some()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct MoneyDoc {
    amount_minor: i64,
    currency: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct SeatDoc {
    seat_id: String,
    category: String,
    price: MoneyDoc,
}

/// The booking fields reads need; saga history and outbox stay in the document
/// but are only ever appended to.
#[derive(Debug, Serialize, Deserialize)]
struct BookingDoc {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    showtime_id: String,
    idempotency_key: String,
    seats: Vec<SeatDoc>,
    total: MoneyDoc,
    status: BookingStatus,
    expires_at: bson::DateTime,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    version: i64,
    #[serde(default)]
    payment_id: Option<String>,
}

fn bson_time(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

fn chrono_time(at: bson::DateTime) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).context("stored time is out of range")
}

fn money_doc(money: &Money) -> MoneyDoc {
    MoneyDoc { amount_minor: money.amount_minor(), currency: money.currency().to_owned() }
}

fn money(doc: MoneyDoc) -> anyhow::Result<Money> {
    Ok(Money::parse(doc.amount_minor, &doc.currency)?)
}

impl BookingDoc {
    fn from_booking(booking: &Booking) -> Self {
        Self {
            id: booking.id.to_string(),
            user_id: booking.user_id.to_string(),
            showtime_id: booking.showtime_id.to_string(),
            idempotency_key: booking.idempotency_key.as_str().to_owned(),
            seats: booking
                .seats
                .iter()
                .map(|s| SeatDoc {
                    seat_id: s.seat_id.as_str().to_owned(),
                    category: s.category.clone(),
                    price: money_doc(&s.price),
                })
                .collect(),
            total: money_doc(&booking.total),
            status: booking.status,
            expires_at: bson_time(booking.expires_at),
            created_at: bson_time(booking.created_at),
            updated_at: bson_time(booking.created_at),
            version: booking.version,
            payment_id: booking.payment_id.clone(),
        }
    }

    fn into_booking(self) -> anyhow::Result<Booking> {
        let id = self.id.clone();
        let parse = move || -> anyhow::Result<Booking> {
            Ok(Booking {
                id: BookingId::parse(&self.id)?,
                user_id: UserId::parse(&self.user_id)?,
                showtime_id: ShowtimeId::parse(&self.showtime_id)?,
                idempotency_key: IdempotencyKey::parse(&self.idempotency_key)?,
                seats: self
                    .seats
                    .into_iter()
                    .map(|s| {
                        Ok(BookedSeat {
                            seat_id: SeatId::parse(&s.seat_id)?,
                            category: s.category,
                            price: money(s.price)?,
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
                total: money(self.total)?,
                status: self.status,
                expires_at: chrono_time(self.expires_at)?,
                created_at: chrono_time(self.created_at)?,
                version: self.version,
                payment_id: self.payment_id,
            })
        };
        parse().with_context(|| format!("stored booking {id} is invalid"))
    }
}

impl BookingStore {
    /// Opens the collection and creates the indexes every query here relies on.
    pub async fn new(db: &Database) -> anyhow::Result<Self> {
        let bookings = db.collection::<BookingDoc>("bookings");
        let indexes = vec![
            IndexModel::builder()
                .keys(doc! { "user_id": 1, "idempotency_key": 1 })
                .options(IndexOptions::builder().name("user_idempotency_key".to_owned()).unique(true).build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "user_id": 1, "created_at": -1 })
                .options(IndexOptions::builder().name("user_newest_first".to_owned()).build())
                .build(),
        ];
        bookings.create_indexes(indexes).await.context("cannot create booking indexes")?;
        Ok(Self { bookings })
    }

    /// Inserts a new booking with its first saga entry and event.
    pub async fn insert(
        &self,
        booking: &Booking,
        entry: SagaEntry,
        event: &OutboxEvent,
    ) -> Result<(), InsertError> {
        let mut document = bson::to_document(&BookingDoc::from_booking(booking))
            .context("cannot encode booking document")?;
        document.insert("saga", vec![entry.to_bson()]);
        document.insert("outbox", vec![event.entry()]);
        document.insert("pending_events", vec![event.event_id.to_string()]);
        document.insert("unsent_events", 1_i32);
        match self.bookings.clone_with_type::<Document>().insert_one(document).await {
            Ok(_) => Ok(()),
            Err(e) if marquee_common::mongo::is_duplicate_key(&e) => Err(InsertError::DuplicateKey),
            Err(e) => Err(anyhow::Error::new(e).context("cannot insert booking").into()),
        }
    }

    pub async fn find(&self, id: BookingId) -> anyhow::Result<Option<Booking>> {
        let found =
            self.bookings.find_one(doc! { "_id": id.to_string() }).await.context("cannot load booking")?;
        found.map(BookingDoc::into_booking).transpose()
    }

    pub async fn find_by_key(
        &self,
        user_id: UserId,
        key: &IdempotencyKey,
    ) -> anyhow::Result<Option<Booking>> {
        let found = self
            .bookings
            .find_one(doc! { "user_id": user_id.to_string(), "idempotency_key": key.as_str() })
            .await
            .context("cannot look up booking by idempotency key")?;
        found.map(BookingDoc::into_booking).transpose()
    }

    /// The user's bookings, newest first.
    pub async fn list_for_user(&self, user_id: UserId) -> anyhow::Result<Vec<Booking>> {
        let docs: Vec<BookingDoc> = self
            .bookings
            .find(doc! { "user_id": user_id.to_string() })
            .sort(doc! { "created_at": -1 })
            .await
            .context("cannot list bookings")?
            .try_collect()
            .await
            .context("cannot read listed bookings")?;
        docs.into_iter().map(BookingDoc::into_booking).collect()
    }

    /// Applies `change` only if the booking is still at the version and status it was
    /// loaded with. `None` means another writer got there first.
    pub async fn transition(&self, booking: &Booking, change: Transition) -> anyhow::Result<Option<Booking>> {
        let mut set = doc! { "status": change.to.as_str(), "updated_at": bson_time(Utc::now()) };
        if let Some(payment_id) = &change.payment_id {
            set.insert("payment_id", payment_id);
        }
        if let Some(method) = &change.payment_method {
            set.insert("payment_method", method);
        }
        let mut inc = doc! { "version": 1_i64 };
        let history: Vec<Bson> = change.history.iter().map(SagaEntry::to_bson).collect();
        let mut push = doc! { "saga": { "$each": history } };
        if let Some(event) = &change.event {
            inc.insert("unsent_events", 1_i32);
            push.insert("outbox", doc! { "$each": [event.entry()] });
            push.insert("pending_events", doc! { "$each": [event.event_id.to_string()] });
        }
        let filter = doc! {
            "_id": booking.id.to_string(),
            "version": booking.version,
            "status": booking.status.as_str(),
        };
        let updated = self
            .bookings
            .find_one_and_update(filter, doc! { "$set": set, "$inc": inc, "$push": push })
            .return_document(ReturnDocument::After)
            .await
            .with_context(|| format!("cannot move booking {} to {}", booking.id, change.to))?;
        updated.map(BookingDoc::into_booking).transpose()
    }

    /// The outbox the relay drains: events live in the booking documents.
    pub async fn outbox(&self) -> anyhow::Result<MongoOutbox> {
        MongoOutbox::new(&self.bookings).await
    }
}
