//! The `bookings` collection: one document per booking carrying its state, its saga
//! history and its outbox, so a state change and the events it causes are written
//! by one atomic single-document update. Beside it, `hold_slots` caps a user's active
//! holds per showtime: slot documents with unique ids, so the cap holds under races.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use marquee_common::outbox::MongoOutbox;
use mongodb::bson::{self, Bson, Document, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{
    BookedSeat, Booking, BookingId, BookingStatus, IdempotencyKey, ListQuery, Money, PublicStatus, Refund,
    RefundCause, SagaStep, SeatId, ShowtimeId, UserId,
};
use crate::events::OutboxEvent;

#[derive(Clone)]
pub struct BookingStore {
    bookings: Collection<BookingDoc>,
    slots: Collection<Document>,
    /// How long a saga step may run before recovery may take the booking over.
    lease: chrono::Duration,
}

/// A hold slot's claim: which booking's hold it counts, on which showtime.
#[derive(Debug, Clone)]
pub struct SlotClaim {
    pub slot: String,
    pub booking_id: BookingId,
    pub showtime_id: ShowtimeId,
}

/// A slot claimed but never used by a booking (its hold crashed before the insert)
/// is reclaimed after this long.
const ABANDONED_SLOT: chrono::Duration = chrono::Duration::minutes(2);

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
    outcome: String,
    detail: String,
    at: DateTime<Utc>,
}

impl SagaEntry {
    pub fn new(step: &'static str, outcome: impl Into<String>) -> Self {
        Self { step, outcome: outcome.into(), detail: String::new(), at: Utc::now() }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    fn to_bson(&self) -> Bson {
        Bson::Document(doc! {
            "step": self.step,
            "outcome": &self.outcome,
            "detail": &self.detail,
            "at": bson_time(self.at),
        })
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

    pub fn target(&self) -> BookingStatus {
        self.to
    }

    /// The same record (history, fields, event) written with another status: a step
    /// gathers what it learned and lets it ride along with the write that follows.
    pub fn retarget(mut self, status: BookingStatus) -> Self {
        self.to = status;
        self
    }

    pub fn step(mut self, step: &'static str, outcome: impl Into<String>) -> Self {
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

    pub fn payment_method(mut self, method: &str) -> Self {
        self.set.insert("payment_method", method);
        self
    }

    /// The seats could not be released (cinema was down): the sweeper tries again
    /// until it can, rather than leaving them held until the hold lapses.
    pub fn seats_released(mut self, released: bool) -> Self {
        self.history.push(SagaEntry::new("release_seats", if released { "succeeded" } else { "failed" }));
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

fn money_bson(money: &Money) -> Document {
    doc! { "amount_minor": money.amount_minor(), "currency": money.currency() }
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

#[derive(Debug, Serialize, Deserialize)]
struct RefundDoc {
    cause: RefundCause,
    amount: MoneyDoc,
    fee: MoneyDoc,
    #[serde(default)]
    refund_id: Option<String>,
    #[serde(default)]
    at: Option<bson::DateTime>,
}

#[derive(Debug, Serialize, Deserialize)]
struct StepDoc {
    step: String,
    outcome: String,
    #[serde(default)]
    detail: String,
    at: bson::DateTime,
}

/// The booking fields reads need; the outbox stays in the document but is only
/// ever appended to.
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
    /// What clients see, kept beside `status` for list filters.
    #[serde(default)]
    public_status: String,
    expires_at: bson::DateTime,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    version: i64,
    #[serde(default)]
    payment_id: Option<String>,
    #[serde(default)]
    payment_method: Option<String>,
    #[serde(default)]
    hold_extended: bool,
    #[serde(default)]
    refund: Option<RefundDoc>,
    #[serde(default)]
    reason: Option<String>,
    /// The `hold_slots` document this booking counts against while active.
    #[serde(default)]
    slot: Option<String>,
    /// While an in-flight step runs: when recovery may presume its process dead.
    #[serde(default)]
    lease_until: Option<bson::DateTime>,
    #[serde(default, rename = "saga", skip_serializing)]
    history: Vec<StepDoc>,
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
            public_status: booking.public_status().as_str().to_owned(),
            expires_at: bson_time(booking.expires_at),
            created_at: bson_time(booking.created_at),
            updated_at: bson_time(booking.updated_at),
            version: booking.version,
            payment_id: booking.payment_id.clone(),
            payment_method: booking.payment_method.clone(),
            hold_extended: booking.hold_extended,
            refund: None,
            reason: booking.reason.clone(),
            slot: booking.slot.clone(),
            lease_until: None,
            history: Vec::new(),
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
                updated_at: chrono_time(self.updated_at)?,
                version: self.version,
                payment_id: self.payment_id,
                payment_method: self.payment_method,
                hold_extended: self.hold_extended,
                refund: self
                    .refund
                    .map(|r| -> anyhow::Result<Refund> {
                        Ok(Refund {
                            cause: r.cause,
                            amount: money(r.amount)?,
                            fee: money(r.fee)?,
                            refund_id: r.refund_id,
                            at: r.at.map(chrono_time).transpose()?,
                        })
                    })
                    .transpose()?,
                reason: self.reason,
                slot: self.slot,
                history: self
                    .history
                    .into_iter()
                    .map(|h| {
                        Ok(SagaStep {
                            step: h.step,
                            outcome: h.outcome,
                            at: chrono_time(h.at)?,
                            detail: h.detail,
                        })
                    })
                    .collect::<anyhow::Result<_>>()?,
            })
        };
        parse().with_context(|| format!("stored booking {id} is invalid"))
    }
}

fn public_status(to: BookingStatus, cause: Option<RefundCause>) -> PublicStatus {
    match to {
        BookingStatus::Held | BookingStatus::Charging | BookingStatus::Confirming => PublicStatus::Held,
        BookingStatus::Confirmed => PublicStatus::Confirmed,
        BookingStatus::PaymentFailed => PublicStatus::PaymentFailed,
        BookingStatus::Expired => PublicStatus::Expired,
        BookingStatus::Cancelling | BookingStatus::Cancelled => PublicStatus::Cancelled,
        BookingStatus::Failed => PublicStatus::Failed,
        BookingStatus::Refunding => match cause {
            Some(RefundCause::Cancelled) => PublicStatus::Cancelled,
            _ => PublicStatus::Failed,
        },
    }
}

fn slot_id(user_id: UserId, showtime_id: ShowtimeId, n: u32) -> String {
    format!("{user_id}:{showtime_id}:{n}")
}

impl BookingStore {
    /// Opens the collections and creates the indexes every query here relies on.
    pub async fn new(db: &Database, lease: Duration) -> anyhow::Result<Self> {
        let bookings = db.collection::<BookingDoc>("bookings");
        let index = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).unique(unique).build())
                .build()
        };
        let indexes = vec![
            index(doc! { "user_id": 1, "idempotency_key": 1 }, "user_idempotency_key", true),
            // Listing pages newest first: ids are time-ordered (UUIDv7).
            index(doc! { "user_id": 1, "_id": -1 }, "user_newest_id_first", false),
            index(doc! { "status": 1, "lease_until": 1 }, "stalled_sagas", false),
            index(doc! { "status": 1, "expires_at": 1 }, "overdue_holds", false),
            index(doc! { "release_pending": 1 }, "pending_releases", false),
        ];
        bookings.create_indexes(indexes).await.context("cannot create booking indexes")?;
        let lease = chrono::Duration::from_std(lease).context("booking.saga_lease_ms is out of range")?;
        Ok(Self { bookings, slots: db.collection("hold_slots"), lease })
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

    /// One page of the user's bookings, newest first, and whether more follow.
    pub async fn list(&self, query: &ListQuery) -> anyhow::Result<(Vec<Booking>, bool)> {
        let mut filter = doc! { "user_id": query.user_id.to_string() };
        if !query.statuses.is_empty() {
            let statuses: Vec<&str> = query.statuses.iter().map(|s| s.as_str()).collect();
            filter.insert("public_status", doc! { "$in": statuses });
        }
        if let Some(showtime_id) = query.showtime_id {
            filter.insert("showtime_id", showtime_id.to_string());
        }
        if let Some(after) = query.after {
            filter.insert("_id", doc! { "$lt": after.to_string() });
        }
        let docs: Vec<BookingDoc> = self
            .bookings
            .find(filter)
            .sort(doc! { "_id": -1 })
            .limit(i64::from(query.page_size) + 1)
            .await
            .context("cannot list bookings")?
            .try_collect()
            .await
            .context("cannot read listed bookings")?;
        let more = docs.len() > query.page_size as usize;
        let bookings = docs
            .into_iter()
            .take(query.page_size as usize)
            .map(BookingDoc::into_booking)
            .collect::<Result<_, _>>()?;
        Ok((bookings, more))
    }

    /// Bookings whose in-flight step's lease lapsed: their process presumably died.
    pub async fn stalled(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<Booking>> {
        let statuses: Vec<&str> = BookingStatus::IN_FLIGHT.iter().map(|s| s.as_str()).collect();
        self.query(doc! { "status": { "$in": statuses }, "lease_until": { "$lt": bson_time(now) } }, limit)
            .await
            .context("cannot look for stalled sagas")
    }

    /// Finished bookings whose seats cinema could not be told to release (it was
    /// down): (booking, showtime) pairs for the sweeper to try again.
    pub async fn pending_releases(&self, limit: i64) -> anyhow::Result<Vec<(BookingId, ShowtimeId)>> {
        let bookings = self.query(doc! { "release_pending": true }, limit).await;
        let bookings = bookings.context("cannot look for pending seat releases")?;
        Ok(bookings.into_iter().map(|booking| (booking.id, booking.showtime_id)).collect())
    }

    /// The seats of a finished booking are released at last.
    pub async fn release_done(&self, id: BookingId) -> anyhow::Result<()> {
        self.bookings
            .update_one(doc! { "_id": id.to_string() }, doc! { "$set": { "release_pending": false } })
            .await
            .context("cannot record a seat release")?;
        Ok(())
    }

    /// HELD bookings whose hold has lapsed.
    pub async fn overdue_holds(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<Booking>> {
        self.query(
            doc! { "status": BookingStatus::Held.as_str(), "expires_at": { "$lte": bson_time(now) } },
            limit,
        )
        .await
        .context("cannot look for overdue holds")
    }

    async fn query(&self, filter: Document, limit: i64) -> anyhow::Result<Vec<Booking>> {
        let docs: Vec<BookingDoc> = self.bookings.find(filter).limit(limit).await?.try_collect().await?;
        docs.into_iter().map(BookingDoc::into_booking).collect()
    }

    /// Applies `change` only if the booking is still at the version and status it was
    /// loaded with. `None` means another writer got there first. Moving into an
    /// in-flight status takes a fresh lease; any other status drops it.
    pub async fn transition(&self, booking: &Booking, change: Transition) -> anyhow::Result<Option<Booking>> {
        let now = Utc::now();
        let cause = change.refund_cause.or(booking.refund.as_ref().map(|r| r.cause));
        let mut set = change.set;
        set.insert("status", change.to.as_str());
        set.insert("public_status", public_status(change.to, cause).as_str());
        set.insert("updated_at", bson_time(now));
        let lease = BookingStatus::IN_FLIGHT.contains(&change.to).then(|| bson_time(now + self.lease));
        set.insert("lease_until", lease.map_or(Bson::Null, Bson::DateTime));
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

    /// Claims one of the user's `limit` hold slots for this showtime for `booking_id`,
    /// or `None` when all are taken by active bookings. A slot's unique id makes two
    /// concurrent claims of it exclusive. Free slots are tried first (one insert each);
    /// only when none is free is a slot left behind by a finished booking (or by a hold
    /// that died before its booking was written) taken over, with a conditional update
    /// on its previous holder.
    pub async fn claim_slot(
        &self,
        user_id: UserId,
        showtime_id: ShowtimeId,
        booking_id: BookingId,
        limit: u32,
    ) -> anyhow::Result<Option<String>> {
        let now = Utc::now();
        let claim = |id: &str| {
            doc! {
                "_id": id,
                "booking_id": booking_id.to_string(),
                "showtime_id": showtime_id.to_string(),
                "claimed_at": bson_time(now),
            }
        };
        for n in 0..limit {
            let id = slot_id(user_id, showtime_id, n);
            match self.slots.insert_one(claim(&id)).await {
                Ok(_) => return Ok(Some(id)),
                Err(e) if marquee_common::mongo::is_duplicate_key(&e) => {}
                Err(e) => return Err(anyhow::Error::new(e).context("cannot claim a hold slot")),
            }
        }
        for n in 0..limit {
            let id = slot_id(user_id, showtime_id, n);
            let Some(slot) =
                self.slots.find_one(doc! { "_id": &id }).await.context("cannot read a hold slot")?
            else {
                continue;
            };
            let holder = slot.get_str("booking_id").unwrap_or_default().to_owned();
            let claimed_at = slot.get_datetime("claimed_at").ok().and_then(|at| chrono_time(*at).ok());
            let in_use = match BookingId::parse(&holder).ok() {
                Some(holder_id) => match self.find(holder_id).await? {
                    Some(booking) => booking.status.is_active_hold(),
                    None => claimed_at.is_some_and(|at| now - at < ABANDONED_SLOT),
                },
                None => false,
            };
            if in_use {
                continue;
            }
            let taken = self
                .slots
                .update_one(
                    doc! { "_id": &id, "booking_id": &holder },
                    doc! {
                        "$set": {
                            "booking_id": booking_id.to_string(),
                            "showtime_id": showtime_id.to_string(),
                            "claimed_at": bson_time(now),
                            "checked": false,
                        },
                    },
                )
                .await
                .context("cannot take over a hold slot")?;
            if taken.modified_count == 1 {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Slots claimed longer than a lease ago that recovery has not looked at yet: the
    /// claim is the record, written before LockSeats, that a hold is under way.
    pub async fn unchecked_slots(&self, now: DateTime<Utc>, limit: i64) -> anyhow::Result<Vec<SlotClaim>> {
        let filter =
            doc! { "checked": { "$ne": true }, "claimed_at": { "$lt": bson_time(now - self.lease) } };
        let docs: Vec<Document> = self
            .slots
            .find(filter)
            .limit(limit)
            .await
            .context("cannot look for unchecked hold slots")?
            .try_collect()
            .await
            .context("cannot read unchecked hold slots")?;
        docs.iter()
            .map(|slot| {
                Ok(SlotClaim {
                    slot: slot.get_str("_id")?.to_owned(),
                    booking_id: BookingId::parse(slot.get_str("booking_id")?)?,
                    showtime_id: ShowtimeId::parse(slot.get_str("showtime_id")?)?,
                })
            })
            .collect::<anyhow::Result<_>>()
            .context("stored hold slot is invalid")
    }

    /// Which of `ids` have a booking document.
    pub async fn existing(&self, ids: &[BookingId]) -> anyhow::Result<HashSet<BookingId>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let found: Vec<Document> = self
            .bookings
            .clone_with_type::<Document>()
            .find(doc! { "_id": { "$in": ids } })
            .projection(doc! { "_id": 1 })
            .await
            .context("cannot look up bookings by id")?
            .try_collect()
            .await
            .context("cannot read bookings looked up by id")?;
        found
            .iter()
            .map(|doc| Ok(BookingId::parse(doc.get_str("_id")?)?))
            .collect::<anyhow::Result<_>>()
            .context("stored booking id is invalid")
    }

    /// Marks slots whose booking was written: recovery need not look at them again. A
    /// slot some other booking has claimed since is left alone.
    pub async fn mark_slots_checked(&self, claims: &[&SlotClaim]) -> anyhow::Result<()> {
        if claims.is_empty() {
            return Ok(());
        }
        let held_by: Vec<Document> = claims
            .iter()
            .map(|claim| doc! { "_id": &claim.slot, "booking_id": claim.booking_id.to_string() })
            .collect();
        self.slots
            .update_many(doc! { "$or": held_by }, doc! { "$set": { "checked": true } })
            .await
            .context("cannot mark hold slots checked")?;
        Ok(())
    }

    /// Gives a slot back; a no-op unless `booking_id` still holds it.
    pub async fn free_slot(&self, slot: &str, booking_id: BookingId) -> anyhow::Result<()> {
        self.slots
            .delete_one(doc! { "_id": slot, "booking_id": booking_id.to_string() })
            .await
            .context("cannot free a hold slot")?;
        Ok(())
    }

    /// The outbox the relay drains: events live in the booking documents.
    pub async fn outbox(&self) -> anyhow::Result<MongoOutbox> {
        MongoOutbox::new(&self.bookings).await
    }
}
