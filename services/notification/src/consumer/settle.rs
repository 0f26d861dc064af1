//! What becomes of a delivery once it was handled: acked; republished to a delay queue
//! to come back later (a transient failure); or published to the dead-letter exchange
//! with the reason and the error (a permanent failure, or retries exhausted).

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel as AmqpChannel};
use marquee_kit::backoff::Backoff;
use marquee_kit::shutdown::Shutdown;
use marquee_messaging::acks::Acks;
use marquee_messaging::rabbit::{PERSISTENT, publish_confirmed};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::Handler;
use crate::retry::{Next, RetryState, delay_queue};

/// Pause before requeueing when even the delay queue cannot take a message: one
/// jittered backoff step, so the deliveries it refused together come back spread out.
const REQUEUE_DELAY: Duration = Duration::from_millis(500);

/// Why a message went to the dead-letter queue (`x-marquee-dead-letter-reason`).
pub const DEAD_LETTER_REASON_HEADER: &str = "x-marquee-dead-letter-reason";
/// The error that put it there (`x-marquee-error`).
pub const DEAD_LETTER_ERROR_HEADER: &str = "x-marquee-error";

/// What to tell the broker about one delivery.
#[derive(Debug)]
pub(super) enum Outcome {
    Handled,
    /// An event type nobody is notified about.
    Skipped,
    Duplicate,
    /// A dependency is down: try again later through a delay queue.
    Transient(anyhow::Error),
    /// It can never succeed: straight to the dead-letter queue.
    Permanent(DeadLetterReason, anyhow::Error),
    /// Shutting down mid-way: leave it unsettled, the broker redelivers it.
    Abandon,
}

/// What is left to do once a delivery's fate is decided.
enum Settled {
    /// Acknowledge it.
    Ack,
    /// Nothing: it was nacked or rejected.
    Already,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Not an event, or not a valid one.
    Unparseable,
    /// Well formed, but it cannot be handled (e.g. its user does not exist).
    Permanent,
    /// Its dependency stayed down for the whole retry budget.
    RetriesExhausted,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unparseable => "unparseable",
            Self::Permanent => "permanent",
            Self::RetriesExhausted => "retries_exhausted",
        }
    }
}

/// How often the broker returned this message before (quorum queues count it).
fn previous_deliveries(delivery: &Delivery) -> u64 {
    let count =
        delivery.properties.headers().as_ref().and_then(|h| h.inner().get("x-delivery-count").cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => u64::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u64::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => u64::from(n),
        Some(AMQPValue::ShortInt(n)) => u64::try_from(n).unwrap_or(0),
        _ => 0,
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Handler {
    /// Handles and settles one delivery in a span of the trace that published it (the
    /// `traceparent` header the outbox relay set from the write that caused the
    /// event; a new trace when it has none), so the notification joins its booking's
    /// trace, retries included (a retry keeps the delivery's headers).
    /// Acknowledgements go out with the next batch of `acks`.
    pub(super) async fn settle(
        &self,
        delivery: Delivery,
        publish: &AmqpChannel,
        acks: &Acks,
        shutdown: &Shutdown,
    ) {
        let span = marquee_messaging::rabbit::consume_span(&delivery, "notification");
        self.settle_traced(delivery, publish, acks, shutdown).instrument(span).await
    }

    async fn settle_traced(
        &self,
        delivery: Delivery,
        publish: &AmqpChannel,
        acks: &Acks,
        shutdown: &Shutdown,
    ) {
        let started = Instant::now();
        self.metrics.consumed.increment(1);
        let retry = RetryState::from_headers(delivery.properties.headers().as_ref());
        let last_chance = self.policy.last_chance(retry, now_ms());
        let outcome = self.handle(&delivery.data, last_chance, shutdown).await;
        let settled = match outcome {
            Outcome::Handled | Outcome::Skipped => Ok(Settled::Ack),
            Outcome::Duplicate => {
                self.metrics.duplicates.increment(1);
                Ok(Settled::Ack)
            }
            Outcome::Transient(error) => match self.policy.next(retry, now_ms(), fastrand::f64()) {
                Next::RetryIn { step, after, state } => {
                    self.retry_later(&delivery, publish, &error, step, after, state).await
                }
                Next::GiveUp => {
                    let error =
                        error.context(format!("still failing after {:?} of retries", self.policy.budget));
                    self.dead_letter(&delivery, publish, DeadLetterReason::RetriesExhausted, &error).await
                }
            },
            Outcome::Permanent(reason, error) => self.dead_letter(&delivery, publish, reason, &error).await,
            Outcome::Abandon => return,
        };
        self.metrics.observe(started.elapsed());
        match settled {
            Ok(Settled::Ack) => acks.ack(delivery.delivery_tag),
            Ok(Settled::Already) => acks.settled(delivery.delivery_tag),
            Err(error) => tracing::warn!(%error, "cannot settle a delivery; the broker will redeliver it"),
        }
    }

    /// Republishes the event to the delay queue of `step`, expiring after `after`,
    /// then acks this delivery. Should the delay queue refuse it, the delivery is
    /// requeued instead (that counts towards the delivery limit).
    async fn retry_later(
        &self,
        delivery: &Delivery,
        publish: &AmqpChannel,
        error: &anyhow::Error,
        step: Duration,
        after: Duration,
        state: RetryState,
    ) -> Result<Settled, lapin::Error> {
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        state.write(&mut headers);
        let properties = delivery
            .properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(PERSISTENT)
            .with_expiration(after.as_millis().to_string().into());
        let queue = delay_queue(&self.queue, step);
        match publish_confirmed(publish, "", &queue, &delivery.data, properties).await {
            Ok(()) => {
                self.metrics.retries.increment(1);
                tracing::warn!(
                    event.id = event_id(delivery),
                    delay_queue = queue.as_str(),
                    error = format!("{error:#}"),
                    retry = state.retries,
                    retry_in_ms = after.as_millis() as u64,
                    "a dependency is unavailable; the event is retried later"
                );
                Ok(Settled::Ack)
            }
            Err(refused) => {
                tracing::warn!(
                    event.id = event_id(delivery),
                    error = format!("{error:#}"),
                    delay_queue = format!("{refused:#}"),
                    "cannot delay the event; requeueing it"
                );
                if previous_deliveries(delivery) + 1 > u64::from(self.delivery_limit) {
                    tracing::error!("delivery limit reached; the broker dead-letters this event");
                    self.metrics.over_delivery_limit.increment(1);
                }
                tokio::time::sleep(Backoff::new(REQUEUE_DELAY, REQUEUE_DELAY).delay(0)).await;
                delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await?;
                Ok(Settled::Already)
            }
        }
    }

    /// Publishes the event to the dead-letter exchange with why, then acks it; if
    /// that fails, rejects it, which dead-letters it without the why.
    async fn dead_letter(
        &self,
        delivery: &Delivery,
        publish: &AmqpChannel,
        reason: DeadLetterReason,
        error: &anyhow::Error,
    ) -> Result<Settled, lapin::Error> {
        let error = format!("{error:#}");
        tracing::error!(reason = reason.as_str(), error, "dead-lettering an event that cannot be handled");
        self.metrics.dead_lettered(reason).increment(1);
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert(DEAD_LETTER_REASON_HEADER.into(), AMQPValue::LongString(reason.as_str().into()));
        headers.insert(DEAD_LETTER_ERROR_HEADER.into(), AMQPValue::LongString(error.as_str().into()));
        let properties: BasicProperties =
            delivery.properties.clone().with_headers(headers).with_delivery_mode(PERSISTENT);
        let routing_key = delivery.routing_key.as_str();
        match publish_confirmed(publish, &self.dead_letter_exchange, routing_key, &delivery.data, properties)
            .await
        {
            Ok(()) => Ok(Settled::Ack),
            Err(refused) => {
                tracing::warn!(
                    error = format!("{refused:#}"),
                    "cannot publish the dead letter; rejecting it"
                );
                delivery.acker.reject(BasicRejectOptions { requeue: false }).await?;
                Ok(Settled::Already)
            }
        }
    }
}

/// The event's id as the outbox relay published it (`message_id`), for logs written
/// outside the event's own span (a delivery being settled).
fn event_id(delivery: &Delivery) -> &str {
    delivery.properties.message_id().as_ref().map_or("", |id| id.as_str())
}
