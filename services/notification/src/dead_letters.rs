//! The operator's side of the dead-letter queue: what waits there and why, and
//! replaying it into the work queue (`marquee-notification dead-letters list|replay`).
//!
//! Replaying is exactly-once in effect: each message is republished (with publisher
//! confirms) before it is acked in the dead-letter queue, so a crash in between can
//! only replay it twice, and the worker's per-event claims turn the second copy into
//! a skipped duplicate. A replayed event starts a fresh retry budget.

use anyhow::Context;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use marquee_messaging::RabbitSettings;
use marquee_messaging::rabbit::{PERSISTENT, publish_confirmed, short_name};
use marquee_proto::events::v1::Event;
use prost::Message;

use crate::consumer::{DEAD_LETTER_ERROR_HEADER, DEAD_LETTER_REASON_HEADER};
use crate::retry::{FIRST_FAILURE_HEADER, RETRIES_HEADER};
use crate::topology::QueueNames;

/// Headers of a message's earlier life that a replay drops: it starts afresh.
const STALE_HEADERS: [&str; 6] = [
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_ERROR_HEADER,
    RETRIES_HEADER,
    FIRST_FAILURE_HEADER,
    "x-death",
    "x-delivery-count",
];

/// One dead-lettered message, as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Empty when the message is not a decodable event.
    pub event_id: String,
    pub event_type: String,
    pub booking_id: String,
    /// `unparseable`, `permanent`, `retries_exhausted`, or the broker's own reason
    /// (`delivery_limit` when the worker crashed on it too often).
    pub reason: String,
    pub error: String,
    pub bytes: usize,
}

impl DeadLetter {
    fn read(data: &[u8], headers: Option<&FieldTable>) -> Self {
        let text = |key: &str| match headers.and_then(|h| h.inner().get(key)) {
            Some(AMQPValue::LongString(value)) => {
                Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
            }
            _ => None,
        };
        let reason = text(DEAD_LETTER_REASON_HEADER).or_else(|| broker_reason(headers)).unwrap_or_default();
        let (event_id, event_type, booking_id) = match Event::decode(data) {
            Ok(event) => (event.event_id, event.r#type, event.booking_id),
            Err(_) => Default::default(),
        };
        Self {
            event_id,
            event_type,
            booking_id,
            reason,
            error: text(DEAD_LETTER_ERROR_HEADER).unwrap_or_default(),
            bytes: data.len(),
        }
    }
}

/// `x-death[0].reason`, set when the broker itself dead-lettered the message.
fn broker_reason(headers: Option<&FieldTable>) -> Option<String> {
    let Some(AMQPValue::FieldArray(deaths)) = headers?.inner().get("x-death") else { return None };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else { return None };
    match death.inner().get("reason") {
        Some(AMQPValue::LongString(reason)) => Some(String::from_utf8_lossy(reason.as_bytes()).into_owned()),
        _ => None,
    }
}

/// How a replay went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub replayed: u32,
    /// Still in the dead-letter queue afterwards.
    pub left: u32,
}

async fn depth(channel: &lapin::Channel, queue: &str) -> anyhow::Result<u32> {
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let declared = channel
        .queue_declare(short_name(queue, "dead-letter queue")?, passive, FieldTable::default())
        .await
        .with_context(|| {
            format!("the dead-letter queue {queue} does not exist (has the worker ever run?)")
        })?;
    Ok(declared.message_count())
}

/// Up to `limit` dead letters, oldest first, left in the queue.
pub async fn list(settings: &RabbitSettings, limit: u32) -> anyhow::Result<(u32, Vec<DeadLetter>)> {
    let names = QueueNames::new(settings);
    let (connection, channel) =
        marquee_messaging::rabbit::connect_patiently("dead-letter admin", settings).await?;
    let total = depth(&channel, &names.dead_letter_queue).await?;
    let queue = short_name(&names.dead_letter_queue, "dead-letter queue")?;
    let mut letters = Vec::new();
    // Fetched unacknowledged; closing the connection puts them all back in order.
    while letters.len() < usize::try_from(limit.min(total)).unwrap_or(usize::MAX) {
        let Some(message) = channel.basic_get(queue.clone(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        let delivery = message.delivery;
        letters.push(DeadLetter::read(&delivery.data, delivery.properties.headers().as_ref()));
    }
    connection.close(200, "OK".into()).await.context("cannot close the RabbitMQ connection")?;
    Ok((total, letters))
}

/// Moves up to `limit` dead letters back into the work queue, oldest first. Only
/// the messages there when it starts are replayed: one that fails again and comes
/// back meanwhile is not picked up a second time.
pub async fn replay(settings: &RabbitSettings, limit: u32) -> anyhow::Result<Replayed> {
    let names = QueueNames::new(settings);
    let (connection, channel) =
        marquee_messaging::rabbit::connect_patiently("dead-letter admin", settings).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("cannot enable publisher confirms")?;
    let queue = short_name(&names.dead_letter_queue, "dead-letter queue")?;
    let mut replayed = 0;
    for _ in 0..limit.min(depth(&channel, &names.dead_letter_queue).await?) {
        let Some(message) = channel.basic_get(queue.clone(), BasicGetOptions { no_ack: false }).await? else {
            break;
        };
        let delivery = message.delivery;
        let mut headers = FieldTable::default();
        for (key, value) in delivery.properties.headers().iter().flat_map(|h| h.inner()) {
            if !STALE_HEADERS.contains(&key.as_str()) {
                headers.insert(key.clone(), value.clone());
            }
        }
        let properties = delivery.properties.clone().with_headers(headers).with_delivery_mode(PERSISTENT);
        if let Err(error) = publish_confirmed(&channel, "", &names.queue, &delivery.data, properties).await {
            delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await?;
            return Err(error.context(format!("replayed {replayed}, then could not replay the next")));
        }
        delivery.acker.ack(BasicAckOptions::default()).await?;
        replayed += 1;
    }
    let left = depth(&channel, &names.dead_letter_queue).await?;
    connection.close(200, "OK".into()).await.context("cannot close the RabbitMQ connection")?;
    Ok(Replayed { replayed, left })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_shows_its_event_and_why() {
        let event = Event {
            event_id: "e1".into(),
            r#type: "booking.confirmed".into(),
            booking_id: "b1".into(),
            ..Event::default()
        };
        let mut headers = FieldTable::default();
        headers.insert(DEAD_LETTER_REASON_HEADER.into(), AMQPValue::LongString("permanent".into()));
        headers.insert(DEAD_LETTER_ERROR_HEADER.into(), AMQPValue::LongString("user.GetUser failed".into()));
        let letter = DeadLetter::read(&event.encode_to_vec(), Some(&headers));
        assert_eq!(
            (letter.event_id.as_str(), letter.event_type.as_str(), letter.booking_id.as_str()),
            ("e1", "booking.confirmed", "b1")
        );
        assert_eq!((letter.reason.as_str(), letter.error.as_str()), ("permanent", "user.GetUser failed"));

        let garbage = DeadLetter::read(b"\xff\xff", None);
        assert_eq!((garbage.event_id.as_str(), garbage.reason.as_str(), garbage.bytes), ("", "", 2));
    }
}
