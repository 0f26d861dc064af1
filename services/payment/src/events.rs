//! The events this service publishes, built when the state change that causes them
//! is written, so their id and bytes are fixed before they reach the outbox.

use chrono::{DateTime, Utc};
use marquee_kit::time::to_proto;
use marquee_messaging::outbox::OutboxEvent;
use marquee_proto::common::v1::Money;
use marquee_proto::events::v1::{self as proto, event::Payload};
use prost::Message;
use uuid::Uuid;

use crate::store::{PaymentDoc, RefundDoc};

pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";
pub const PAYMENT_REFUNDED: &str = "payment.refunded";

fn event(kind: &'static str, payment: &PaymentDoc, at: DateTime<Utc>, payload: Payload) -> OutboxEvent {
    let event_id = Uuid::now_v7();
    let message = proto::Event {
        event_id: event_id.to_string(),
        r#type: kind.to_owned(),
        occurred_at: Some(to_proto(at)),
        booking_id: payment.booking_id.clone(),
        // Empty when the caller did not name the customer.
        user_id: payment.user_id.clone().unwrap_or_default(),
        payload: Some(payload),
    };
    OutboxEvent { event_id, kind, occurred_at: at, data: message.encode_to_vec() }
}

fn money(amount_minor: i64, payment: &PaymentDoc) -> Money {
    Money { amount_minor, currency: payment.currency.clone() }
}

pub fn payment_succeeded(payment: &PaymentDoc, at: DateTime<Utc>) -> OutboxEvent {
    let payload = Payload::PaymentSucceeded(proto::PaymentSucceeded {
        payment_id: payment.id.clone(),
        amount: Some(money(payment.amount_minor, payment)),
    });
    event(PAYMENT_SUCCEEDED, payment, at, payload)
}

pub fn payment_refunded(payment: &PaymentDoc, refund: &RefundDoc, at: DateTime<Utc>) -> OutboxEvent {
    let payload = Payload::PaymentRefunded(proto::PaymentRefunded {
        payment_id: payment.id.clone(),
        refund_id: refund.refund_id.clone(),
        amount: Some(money(refund.amount_minor, payment)),
        reason: refund.reason.clone(),
    });
    event(PAYMENT_REFUNDED, payment, at, payload)
}
