//! How a booking is stored: the document shapes of the `bookings` collection and
//! their conversion to and from the domain's `Booking`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, Document, doc};
use serde::{Deserialize, Serialize};

use crate::domain::{
    BookedSeat, Booking, BookingId, BookingStatus, IdempotencyKey, Money, Refund, RefundCause, SagaStep,
    SeatId, ShowtimeId, UserId,
};

pub(super) fn money_bson(money: &Money) -> Document {
    doc! { "amount_minor": money.amount_minor(), "currency": money.currency() }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoneyDoc {
    amount_minor: i64,
    currency: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SeatDoc {
    seat_id: String,
    category: String,
    price: MoneyDoc,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefundDoc {
    cause: RefundCause,
    amount: MoneyDoc,
    fee: MoneyDoc,
    #[serde(default)]
    refund_id: Option<String>,
    #[serde(default)]
    at: Option<bson::DateTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StepDoc {
    step: String,
    outcome: String,
    #[serde(default)]
    detail: String,
    at: bson::DateTime,
}

/// The booking fields reads need; the outbox stays in the document but is only
/// ever appended to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct BookingDoc {
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
    pay_key: Option<String>,
    #[serde(default)]
    hold_extended: bool,
    #[serde(default)]
    refund: Option<RefundDoc>,
    #[serde(default)]
    reason: Option<String>,
    /// While an in-flight step runs: when recovery may presume its process dead.
    /// Absent otherwise (the `leased_steps` index is sparse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_until: Option<bson::DateTime>,
    #[serde(default, rename = "saga", skip_serializing)]
    history: Vec<StepDoc>,
    /// Outbox events published only with the booking's next one (`Booking::deferred_events`).
    #[serde(default)]
    deferred_events: Vec<String>,
}

impl BookingDoc {
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The user and idempotency key the booking answers.
    pub(super) fn key(&self) -> (&str, &str) {
        (&self.user_id, &self.idempotency_key)
    }
}

pub(super) fn bson_time(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

pub(super) fn chrono_time(at: bson::DateTime) -> anyhow::Result<DateTime<Utc>> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).context("stored time is out of range")
}

fn money_doc(money: &Money) -> MoneyDoc {
    MoneyDoc { amount_minor: money.amount_minor(), currency: money.currency().to_owned() }
}

fn money(doc: MoneyDoc) -> anyhow::Result<Money> {
    Ok(Money::parse(doc.amount_minor, &doc.currency)?)
}

impl BookingDoc {
    pub(super) fn from_booking(booking: &Booking) -> Self {
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
            pay_key: booking.pay_key.clone(),
            hold_extended: booking.hold_extended,
            refund: None,
            reason: booking.reason.clone(),
            lease_until: None,
            history: Vec::new(),
            deferred_events: booking.deferred_events.clone(),
        }
    }

    pub(super) fn into_booking(self) -> anyhow::Result<Booking> {
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
                pay_key: self.pay_key,
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
                deferred_events: self.deferred_events,
            })
        };
        parse().with_context(|| format!("stored booking {id} is invalid"))
    }
}
