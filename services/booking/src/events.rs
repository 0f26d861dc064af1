//! The events this service publishes, built when the state change that causes them
//! is written, so their id and bytes are fixed before they ever reach the outbox.

use chrono::{DateTime, Utc};
use marquee_kit::time::to_proto;
pub use marquee_messaging::outbox::OutboxEvent;
use marquee_proto::events::v1::{self as proto, event::Payload};
use prost::Message;
use uuid::Uuid;

use crate::domain::{Booking, Money};

pub const BOOKING_HELD: &str = "booking.held";
pub const BOOKING_CONFIRMED: &str = "booking.confirmed";
pub const BOOKING_PAYMENT_FAILED: &str = "booking.payment_failed";
pub const BOOKING_EXPIRED: &str = "booking.expired";
pub const BOOKING_CANCELLED: &str = "booking.cancelled";
pub const BOOKING_FAILED: &str = "booking.failed";

fn event(kind: &'static str, booking: &Booking, at: DateTime<Utc>, payload: Payload) -> OutboxEvent {
    let event_id = Uuid::now_v7();
    let message = proto::Event {
        event_id: event_id.to_string(),
        r#type: kind.to_owned(),
        occurred_at: Some(to_proto(at)),
        booking_id: booking.id.to_string(),
        user_id: booking.user_id.to_string(),
        payload: Some(payload),
    };
    OutboxEvent { event_id, kind, occurred_at: at, data: message.encode_to_vec() }
}

pub fn booking_held(booking: &Booking, at: DateTime<Utc>) -> OutboxEvent {
    let payload = Payload::BookingHeld(proto::BookingHeld {
        showtime_id: booking.showtime_id.to_string(),
        seat_ids: booking.seat_ids(),
        total: Some(booking.total.to_proto()),
        expires_at: Some(to_proto(booking.expires_at)),
    });
    event(BOOKING_HELD, booking, at, payload)
}

pub fn booking_confirmed(booking: &Booking, payment_id: &str, at: DateTime<Utc>) -> OutboxEvent {
    let payload = Payload::BookingConfirmed(proto::BookingConfirmed {
        showtime_id: booking.showtime_id.to_string(),
        seat_ids: booking.seat_ids(),
        total: Some(booking.total.to_proto()),
        payment_id: payment_id.to_owned(),
    });
    event(BOOKING_CONFIRMED, booking, at, payload)
}

pub fn booking_payment_failed(booking: &Booking, reason: &str, at: DateTime<Utc>) -> OutboxEvent {
    let payload = Payload::BookingPaymentFailed(proto::BookingPaymentFailed {
        showtime_id: booking.showtime_id.to_string(),
        reason: reason.to_owned(),
    });
    event(BOOKING_PAYMENT_FAILED, booking, at, payload)
}

pub fn booking_expired(booking: &Booking, at: DateTime<Utc>) -> OutboxEvent {
    let payload = Payload::BookingExpired(proto::BookingExpired {
        showtime_id: booking.showtime_id.to_string(),
        seat_ids: booking.seat_ids(),
    });
    event(BOOKING_EXPIRED, booking, at, payload)
}

pub fn booking_cancelled(booking: &Booking, refund: Option<&Money>, at: DateTime<Utc>) -> OutboxEvent {
    let payload = Payload::BookingCancelled(proto::BookingCancelled {
        showtime_id: booking.showtime_id.to_string(),
        seat_ids: booking.seat_ids(),
        refund: refund.map(|refund| refund.to_proto()),
    });
    event(BOOKING_CANCELLED, booking, at, payload)
}

pub fn booking_failed(booking: &Booking, reason: &str, at: DateTime<Utc>) -> OutboxEvent {
    let payload = Payload::BookingFailed(proto::BookingFailed {
        showtime_id: booking.showtime_id.to_string(),
        reason: reason.to_owned(),
    });
    event(BOOKING_FAILED, booking, at, payload)
}
