//! The RabbitMQ consumer: turns each booking or payment event a user is told about
//! into exactly one message per channel the user chose, acknowledging a delivery
//! only once its work is durable.
//!
//! A failure is either transient (a dependency is down: user, cinema, MongoDB) or
//! permanent (the message can never be handled). A transient one goes to a delay
//! queue and comes back later, with backoff, for `retry_budget_seconds`; after that
//! a confirmation is sent without the showtime's details rather than not at all, and
//! only what still cannot be sent is dead-lettered. A permanent one is dead-lettered
//! at once. Queues: `topology.rs`; the schedule: `retry.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicRejectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel as AmqpChannel};
use marquee_common::config::RabbitSettings;
use marquee_common::rabbit::{PERSISTENT, publish_confirmed, short_name};
use marquee_common::shutdown::Shutdown;
use marquee_proto::events::v1::Event;
use prost::Message;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::channel::Channel;
use crate::claims::{Claim, EventClaims};
use crate::directory::{Directory, LookupError};
use crate::domain::Notice;
use crate::metrics::Metrics;
use crate::render::{self, Showing};
use crate::retry::{Next, RetryPolicy, RetryState, delay_queue};
use crate::store::{NotificationDoc, bson_time};
use crate::topology::{Session, Topology};

/// Pause before requeueing when even the delay queue cannot take a message.
const REQUEUE_DELAY: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a delivery waiting on another delivery's claim looks again.
const CLAIM_POLL: Duration = Duration::from_millis(100);
/// How long, once shutting down, a delivery still waits for another's claim.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(1);
/// Longest pause between Redis attempts while Redis is down.
const MAX_REDIS_BACKOFF: Duration = Duration::from_secs(2);
/// How often the dead-letter and delay queue depths are read for `/metrics`.
const DEPTH_EVERY: Duration = Duration::from_secs(5);

/// Why a message went to the dead-letter queue (`x-marquee-dead-letter-reason`).
pub const DEAD_LETTER_REASON_HEADER: &str = "x-marquee-dead-letter-reason";
/// The error that put it there (`x-marquee-error`).
pub const DEAD_LETTER_ERROR_HEADER: &str = "x-marquee-error";

pub struct Consumer {
    topology: Topology,
    prefetch: u16,
    /// The session opened by `connect`, used by the first run.
    session: Option<Session>,
    handler: Arc<Handler>,
    consuming: Arc<AtomicBool>,
}

/// What to tell the broker about one delivery.
#[derive(Debug)]
enum Outcome {
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

/// Why sending failed, and so what becomes of the event.
enum SendError {
    Transient(anyhow::Error),
    Permanent(anyhow::Error),
}

impl From<LookupError> for SendError {
    fn from(error: LookupError) -> Self {
        if error.is_transient() { Self::Transient(error.into()) } else { Self::Permanent(error.into()) }
    }
}

struct Handler {
    claims: EventClaims,
    directory: Directory,
    channel: Arc<dyn Channel>,
    metrics: Metrics,
    delivery_limit: u32,
    policy: RetryPolicy,
    queue: String,
    dead_letter_exchange: String,
}

/// What the worker is given to build its consumer.
pub struct ConsumerParts {
    pub claims: EventClaims,
    pub directory: Directory,
    pub channel: Arc<dyn Channel>,
    pub metrics: Metrics,
}

impl Consumer {
    /// Connects and declares the topology now, so that once the application is built
    /// its queue exists and receives every event published from then on.
    pub async fn connect(
        settings: &RabbitSettings,
        delivery_limit: u32,
        policy: RetryPolicy,
        parts: ConsumerParts,
    ) -> anyhow::Result<Self> {
        let topology = Topology::new(settings, delivery_limit, policy);
        let session = topology.open(settings.prefetch).await?;
        let ConsumerParts { claims, directory, channel, metrics } = parts;
        let handler = Handler {
            claims,
            directory,
            channel,
            metrics,
            delivery_limit,
            policy,
            queue: topology.names.queue.clone(),
            dead_letter_exchange: topology.names.dead_letter_exchange.clone(),
        };
        Ok(Self {
            topology,
            prefetch: settings.prefetch,
            session: Some(session),
            handler: Arc::new(handler),
            consuming: Arc::new(AtomicBool::new(false)),
        })
    }

    /// True while the consumer is attached to the broker (readiness).
    pub fn consuming(&self) -> Arc<AtomicBool> {
        self.consuming.clone()
    }

    /// Consumes until `shutdown`, reconnecting with backoff when the broker goes away.
    pub async fn run(mut self, shutdown: Shutdown) {
        let backoff = marquee_common::backoff::Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        let mut failures = 0;
        loop {
            let opened = match self.session.take() {
                Some(session) => Ok(session),
                None => tokio::select! {
                    () = shutdown.cancelled() => return,
                    opened = self.topology.open(self.prefetch) => opened,
                },
            };
            let failure = match opened {
                Ok(session) => {
                    failures = 0;
                    self.consuming.store(true, Ordering::Relaxed);
                    let consumed = self.consume(session, &shutdown).await;
                    self.consuming.store(false, Ordering::Relaxed);
                    match consumed {
                        Ok(()) => return,
                        Err(failure) => failure,
                    }
                }
                Err(failure) => failure,
            };
            let pause = backoff.delay(failures);
            failures = failures.saturating_add(1);
            tracing::warn!(
                error = format!("{failure:#}"),
                retry_in_ms = pause.as_millis() as u64,
                "notification consumer interrupted"
            );
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Handles deliveries concurrently (at most `prefetch` are unacknowledged) until
    /// shutdown (`Ok`) or a broker failure (`Err`). On shutdown in-flight deliveries
    /// finish; on a broker failure they are dropped, as their acks could no longer
    /// reach the broker, which requeues whatever was never settled.
    async fn consume(&self, session: Session, shutdown: &Shutdown) -> anyhow::Result<()> {
        let queue = short_name(&self.topology.names.queue, "rabbitmq.notification_queue")?;
        let mut deliveries = session
            .consume
            .basic_consume(
                queue,
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("cannot start consuming")?;
        tracing::info!(queue = %self.topology.names.queue, "notification consumer started");
        let mut in_flight = JoinSet::new();
        let mut depth_timer = tokio::time::interval(DEPTH_EVERY);
        let spawn = |in_flight: &mut JoinSet<()>, delivery: Delivery| {
            let handler = self.handler.clone();
            let shutdown = shutdown.clone();
            let publish = session.publish.clone();
            in_flight.spawn(async move { handler.settle(delivery, &publish, &shutdown).await });
        };
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => spawn(&mut in_flight, delivery),
                    Some(Err(error)) => break Err(anyhow::Error::new(error).context("consuming failed")),
                    None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
                },
                _ = depth_timer.tick() => {
                    let (channel, topology) = (session.publish.clone(), self.depth_probe());
                    in_flight.spawn(async move { topology.refresh(&channel).await });
                }
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => log_panic(joined),
            }
        };
        match &result {
            Ok(()) => {
                // Stop the broker sending more, but handle what it already sent: the
                // stream yields those, then ends once the cancel is confirmed.
                let drained = async {
                    session
                        .consume
                        .basic_cancel(deliveries.tag(), BasicCancelOptions::default())
                        .await
                        .context("cannot cancel the consumer")?;
                    while let Some(Ok(delivery)) = deliveries.next().await {
                        spawn(&mut in_flight, delivery);
                    }
                    anyhow::Ok(())
                };
                match tokio::time::timeout(SHUTDOWN_PATIENCE, drained).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(error = format!("{error:#}"), "cannot drain the consumer")
                    }
                    Err(_) => tracing::warn!("the consumer did not drain in time; the rest is redelivered"),
                }
            }
            Err(_) => in_flight.abort_all(),
        }
        while let Some(joined) = in_flight.join_next().await {
            log_panic(joined);
        }
        if let Err(error) = session.connection.close(200, "OK".into()).await {
            tracing::debug!(%error, "RabbitMQ connection was already closed");
        }
        result
    }

    fn depth_probe(&self) -> DepthProbe {
        DepthProbe {
            dead_letter_queue: self.topology.names.dead_letter_queue.clone(),
            delay_queues: self.topology.delay_queues().into_iter().map(|(_, name)| name).collect(),
            metrics: self.handler.metrics.clone(),
        }
    }
}

/// Reads how many messages wait in the dead-letter and delay queues.
struct DepthProbe {
    dead_letter_queue: String,
    delay_queues: Vec<String>,
    metrics: Metrics,
}

impl DepthProbe {
    async fn refresh(self, channel: &AmqpChannel) {
        let depth = |name: String| async move {
            let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
            let queue =
                channel.queue_declare(short_name(&name, "queue")?, passive, FieldTable::default()).await?;
            anyhow::Ok(f64::from(queue.message_count()))
        };
        match depth(self.dead_letter_queue.clone()).await {
            Ok(count) => self.metrics.dead_letter_depth.set(count),
            Err(error) => {
                tracing::debug!(error = format!("{error:#}"), "cannot read the dead-letter queue depth")
            }
        }
        let mut waiting = 0.0;
        for name in self.delay_queues {
            match depth(name).await {
                Ok(count) => waiting += count,
                Err(error) => {
                    tracing::debug!(error = format!("{error:#}"), "cannot read a delay queue depth");
                    return;
                }
            }
        }
        self.metrics.retry_depth.set(waiting);
    }
}

fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        tracing::error!(%error, "a delivery handler panicked; the broker will redeliver its message");
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

/// Either the wait ended with a value, or the process is shutting down.
enum Waited<T> {
    Ready(T),
    ShuttingDown,
}

impl Handler {
    async fn settle(&self, delivery: Delivery, publish: &AmqpChannel, shutdown: &Shutdown) {
        let started = Instant::now();
        self.metrics.consumed.increment(1);
        let retry = RetryState::from_headers(delivery.properties.headers().as_ref());
        let last_chance = self.policy.last_chance(retry, now_ms());
        let outcome = self.handle(&delivery.data, last_chance, shutdown).await;
        let settled = match outcome {
            Outcome::Handled | Outcome::Skipped => delivery.acker.ack(BasicAckOptions::default()).await,
            Outcome::Duplicate => {
                self.metrics.duplicates.increment(1);
                delivery.acker.ack(BasicAckOptions::default()).await
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
        if let Err(error) = settled {
            tracing::warn!(%error, "cannot settle a delivery; the broker will redeliver it");
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
    ) -> Result<bool, lapin::Error> {
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
                    error = format!("{error:#}"),
                    retry = state.retries,
                    retry_in_ms = after.as_millis() as u64,
                    "a dependency is unavailable; the event is retried later"
                );
                delivery.acker.ack(BasicAckOptions::default()).await
            }
            Err(refused) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    delay_queue = format!("{refused:#}"),
                    "cannot delay the event; requeueing it"
                );
                if previous_deliveries(delivery) + 1 > u64::from(self.delivery_limit) {
                    tracing::error!("delivery limit reached; the broker dead-letters this event");
                    self.metrics.over_delivery_limit.increment(1);
                }
                tokio::time::sleep(REQUEUE_DELAY).await;
                delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await
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
    ) -> Result<bool, lapin::Error> {
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
            Ok(()) => delivery.acker.ack(BasicAckOptions::default()).await,
            Err(refused) => {
                tracing::warn!(
                    error = format!("{refused:#}"),
                    "cannot publish the dead letter; rejecting it"
                );
                delivery.acker.reject(BasicRejectOptions { requeue: false }).await
            }
        }
    }

    async fn handle(&self, data: &[u8], last_chance: bool, shutdown: &Shutdown) -> Outcome {
        let event = match Event::decode(data) {
            Ok(event) => event,
            Err(error) => {
                return Outcome::Permanent(
                    DeadLetterReason::Unparseable,
                    anyhow::Error::new(error).context("undecodable event"),
                );
            }
        };
        let event_type = event.r#type.clone();
        let event = match Notice::from_event(event) {
            Ok(Some(event)) => event,
            Ok(None) => {
                tracing::debug!(event.r#type = %event_type, "event notifies nobody; skipped");
                return Outcome::Skipped;
            }
            Err(error) => {
                return Outcome::Permanent(
                    DeadLetterReason::Unparseable,
                    anyhow::Error::new(error).context(format!("invalid {event_type} event")),
                );
            }
        };
        let span = tracing::info_span!("notify", event.id = %event.event_id, booking.id = %event.booking_id);
        // Each consumed event is a trace of its own, through its calls to user and cinema.
        marquee_common::trace::in_new_trace(
            self.handle_claimed(&event, last_chance, shutdown).instrument(span),
        )
        .await
    }

    /// Takes the event's claim, waiting while another delivery holds it (it finishes,
    /// or its claim lapses after a crash) and while Redis is unreachable: the
    /// delivery stays unacknowledged meanwhile, so it is neither lost nor requeued
    /// towards its delivery limit. On shutdown it waits a moment more, long enough
    /// for a sibling delivery of the same event to finish, then hands it back.
    async fn claim(&self, event_id: Uuid, shutdown: &Shutdown) -> Waited<Claim> {
        let mut pause = CLAIM_POLL;
        let mut redis_down = false;
        let mut give_up_at = None;
        loop {
            match self.claims.claim(event_id).await {
                Ok(Claim::HeldElsewhere) => pause = CLAIM_POLL,
                Ok(claim) => {
                    if redis_down {
                        tracing::info!("Redis is back; resuming");
                    }
                    return Waited::Ready(claim);
                }
                Err(error) => {
                    if !redis_down {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "Redis unavailable; holding the delivery"
                        );
                    }
                    redis_down = true;
                    pause = (pause * 2).min(MAX_REDIS_BACKOFF);
                }
            }
            match give_up_at {
                Some(deadline) if Instant::now() >= deadline => return Waited::ShuttingDown,
                Some(_) => tokio::time::sleep(CLAIM_POLL).await,
                None => tokio::select! {
                    () = shutdown.cancelled() => give_up_at = Some(Instant::now() + SHUTDOWN_PATIENCE),
                    () = tokio::time::sleep(pause) => {}
                },
            }
        }
    }

    /// Writes the "done" marker, waiting for Redis if needed: acking before it is
    /// written would let a duplicate delivery send again.
    async fn finish(&self, event_id: Uuid, shutdown: &Shutdown) -> Waited<()> {
        let mut pause = CLAIM_POLL;
        loop {
            match self.claims.finish(event_id).await {
                Ok(()) => return Waited::Ready(()),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cannot mark the event done; retrying")
                }
            }
            pause = (pause * 2).min(MAX_REDIS_BACKOFF);
            tokio::select! {
                () = shutdown.cancelled() => return Waited::ShuttingDown,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn handle_claimed(&self, event: &Notice, last_chance: bool, shutdown: &Shutdown) -> Outcome {
        let token = match self.claim(event.event_id, shutdown).await {
            Waited::Ready(Claim::Acquired(token)) => token,
            Waited::Ready(Claim::Done) => {
                tracing::info!(event.id = %event.event_id, "duplicate event skipped");
                return Outcome::Duplicate;
            }
            // `claim` waits these out.
            Waited::Ready(Claim::HeldElsewhere) | Waited::ShuttingDown => return Outcome::Abandon,
        };
        let sent = self.send(event, last_chance).await;
        if sent.is_err()
            && let Err(error) = self.claims.release(event.event_id, &token).await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot release claim; a retry waits for it to lapse"
            );
        }
        match sent {
            Ok(()) => match self.finish(event.event_id, shutdown).await {
                Waited::Ready(()) => {
                    tracing::info!(event.id = %event.event_id, booking.id = %event.booking_id, "notification sent");
                    Outcome::Handled
                }
                // The record exists; its unique index turns the redelivery into a no-op.
                Waited::ShuttingDown => Outcome::Abandon,
            },
            Err(SendError::Transient(error)) => Outcome::Transient(error),
            Err(SendError::Permanent(error)) => Outcome::Permanent(DeadLetterReason::Permanent, error),
        }
    }

    /// Sends one message per channel the user chose (none if they chose none).
    /// The showtime's details are only a courtesy: on the last chance, or when the
    /// showtime is gone, the message goes out with what the event carries.
    async fn send(&self, notice: &Notice, last_chance: bool) -> Result<(), SendError> {
        let contact = self.directory.contact(notice.user_id).await?;
        if contact.addresses.is_empty() {
            tracing::info!(user.id = %notice.user_id, "the user wants no notifications");
            return Ok(());
        }
        let showing = match notice.kind.showtime_id() {
            Some(showtime_id) => match self.directory.showing(showtime_id).await {
                Ok(showing) => Some(showing),
                Err(error) if error.is_transient() && !last_chance => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "sending without the showtime's details");
                    self.metrics.without_showtime.increment(1);
                    Some(Showing::unknown())
                }
            },
            None => None,
        };
        for (medium, recipient) in &contact.addresses {
            let message = render::render(notice, &contact.name, showing.as_ref(), *medium)
                .map_err(SendError::Permanent)?;
            let record = NotificationDoc {
                id: Uuid::now_v7().to_string(),
                user_id: notice.user_id.to_string(),
                booking_id: notice.booking_id.to_string(),
                channel: medium.as_str().to_owned(),
                recipient: recipient.clone(),
                subject: message.subject,
                body: message.body,
                event_id: notice.event_id.to_string(),
                event_type: notice.event_type.clone(),
                sent_at: bson_time(chrono::Utc::now()),
            };
            // MongoDB or the SMTP relay being down passes.
            self.channel.deliver(&record).await.map_err(SendError::Transient)?;
            self.metrics.sent.increment(1);
        }
        Ok(())
    }
}
