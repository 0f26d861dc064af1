//! The RabbitMQ consumer: turns each booking or payment event a user is told about
//! into exactly one message per channel the user chose, acknowledging a delivery
//! only once its work is durable.
//!
//! Topology: the quorum queue `<queue>` bound to `booking.*` and `payment.*` on the
//! events exchange, dead-lettering into the fanout exchange `<queue>.dlx` and its
//! queue `<queue>.dlq` once a message fails `delivery_limit` times, or at once
//! when it cannot be parsed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel as AmqpChannel, Connection, ExchangeKind};
use marquee_common::config::RabbitSettings;
use marquee_common::rabbit::short_name;
use marquee_common::shutdown::Shutdown;
use marquee_proto::events::v1::Event;
use prost::Message;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::channel::Channel;
use crate::claims::{Claim, EventClaims};
use crate::directory::Directory;
use crate::domain::Notice;
use crate::metrics::Metrics;
use crate::render;
use crate::store::{NotificationDoc, bson_time};

/// Pause before requeueing, so a failing event does not spin.
const RETRY_DELAY: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often a delivery waiting on another delivery's claim looks again.
const CLAIM_POLL: Duration = Duration::from_millis(100);
/// How long, once shutting down, a delivery still waits for another's claim.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(1);
/// Longest pause between Redis attempts while Redis is down.
const MAX_REDIS_BACKOFF: Duration = Duration::from_secs(2);
/// The events the queue receives; those nobody is notified about are acked and skipped.
const BINDINGS: [&str; 2] = ["booking.*", "payment.*"];

/// Exchanges, queues and bindings; declared on every (re)connect, idempotently.
struct Topology {
    settings: RabbitSettings,
    exchange: ShortString,
    queue: ShortString,
    dead_letter_exchange: ShortString,
    dead_letter_queue: ShortString,
    delivery_limit: u32,
    prefetch: u16,
    queue_expires_ms: Option<u32>,
}

/// An open consuming session.
struct Session {
    connection: Connection,
    channel: AmqpChannel,
}

impl Topology {
    fn new(settings: &RabbitSettings, delivery_limit: u32) -> anyhow::Result<Self> {
        let queue = &settings.notification_queue;
        Ok(Self {
            settings: settings.clone(),
            exchange: short_name(&settings.exchange, "rabbitmq.exchange")?,
            queue: short_name(queue, "rabbitmq.notification_queue")?,
            dead_letter_exchange: short_name(&format!("{queue}.dlx"), "dead-letter exchange")?,
            dead_letter_queue: short_name(&format!("{queue}.dlq"), "dead-letter queue")?,
            delivery_limit,
            prefetch: settings.prefetch,
            queue_expires_ms: settings.queue_expires_ms,
        })
    }

    fn quorum_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        if let Some(expires) = self.queue_expires_ms {
            arguments.insert("x-expires".into(), AMQPValue::LongLongInt(i64::from(expires)));
        }
        arguments
    }

    async fn open(&self) -> anyhow::Result<Session> {
        let (connection, channel) = marquee_common::rabbit::connect(&self.settings).await?;
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel
            .exchange_declare(
                self.dead_letter_exchange.clone(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .context("cannot declare the dead-letter exchange")?;
        channel
            .queue_declare(self.dead_letter_queue.clone(), durable, self.quorum_arguments())
            .await
            .context("cannot declare the dead-letter queue")?;
        channel
            .queue_bind(
                self.dead_letter_queue.clone(),
                self.dead_letter_exchange.clone(),
                ShortString::default(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("cannot bind the dead-letter queue")?;

        let mut arguments = self.quorum_arguments();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.dead_letter_exchange.as_str().into()),
        );
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(self.delivery_limit)));
        channel
            .queue_declare(self.queue.clone(), durable, arguments)
            .await
            // Queue arguments are fixed at creation: one declared by an older version
            // (without dead-lettering) must be deleted once to be redeclared.
            .with_context(|| {
                format!(
                    "cannot declare the notification queue {} (if it exists with other arguments, \
                     drain it and run `rabbitmqctl delete_queue {}` once)",
                    self.queue, self.queue
                )
            })?;
        for pattern in BINDINGS {
            channel
                .queue_bind(
                    self.queue.clone(),
                    self.exchange.clone(),
                    pattern.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("cannot bind the notification queue to {pattern}"))?;
        }
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .context("cannot set the consumer prefetch")?;
        Ok(Session { connection, channel })
    }
}

pub struct Consumer {
    topology: Topology,
    /// The session opened by `connect`, used by the first run.
    session: Option<Session>,
    handler: Arc<Handler>,
}

/// What to tell the broker about one delivery.
#[derive(Debug)]
enum Outcome {
    Handled,
    /// An event type nobody is notified about.
    Skipped,
    Duplicate,
    /// Requeue: counts towards the delivery limit.
    Retry,
    /// Straight to the dead-letter queue.
    DeadLetter(String),
    /// Shutting down mid-way: leave it unsettled, the broker redelivers it.
    Abandon,
}

struct Handler {
    claims: EventClaims,
    directory: Directory,
    channel: Arc<dyn Channel>,
    metrics: Metrics,
    delivery_limit: u32,
}

impl Consumer {
    /// Connects and declares the topology now, so that once the application is built
    /// its queue exists and receives every event published from then on.
    pub async fn connect(
        settings: &RabbitSettings,
        delivery_limit: u32,
        claims: EventClaims,
        directory: Directory,
        channel: Arc<dyn Channel>,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let topology = Topology::new(settings, delivery_limit)?;
        let session = topology.open().await?;
        let handler = Handler { claims, directory, channel, metrics, delivery_limit };
        Ok(Self { topology, session: Some(session), handler: Arc::new(handler) })
    }

    /// Consumes until `shutdown`, reconnecting with backoff when the broker goes away.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let opened = match self.session.take() {
                Some(session) => Ok(session),
                None => tokio::select! {
                    () = shutdown.cancelled() => return,
                    opened = self.topology.open() => opened,
                },
            };
            let failure = match opened {
                Ok(session) => {
                    backoff = FIRST_BACKOFF;
                    match self.consume(session, &shutdown).await {
                        Ok(()) => return,
                        Err(failure) => failure,
                    }
                }
                Err(failure) => failure,
            };
            tracing::warn!(
                error = format!("{failure:#}"),
                retry_in_ms = backoff.as_millis() as u64,
                "notification consumer interrupted"
            );
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Handles deliveries concurrently (at most `prefetch` are unacknowledged) until
    /// shutdown (`Ok`) or a broker failure (`Err`). On shutdown in-flight deliveries
    /// finish; on a broker failure they are dropped, as their acks could no longer
    /// reach the broker, which requeues whatever was never settled.
    async fn consume(&self, session: Session, shutdown: &Shutdown) -> anyhow::Result<()> {
        let mut deliveries = session
            .channel
            .basic_consume(
                self.topology.queue.clone(),
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("cannot start consuming")?;
        tracing::info!(queue = %self.topology.queue, "notification consumer started");
        let mut in_flight = JoinSet::new();
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        let handler = self.handler.clone();
                        let shutdown = shutdown.clone();
                        in_flight.spawn(async move { handler.settle(delivery, &shutdown).await });
                    }
                    Some(Err(error)) => break Err(anyhow::Error::new(error).context("consuming failed")),
                    None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
                },
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => log_panic(joined),
            }
        };
        match &result {
            Ok(()) => {
                // Stop the broker sending more, but handle what it already sent: the
                // stream yields those, then ends once the cancel is confirmed.
                let drained = async {
                    session
                        .channel
                        .basic_cancel(deliveries.tag(), BasicCancelOptions::default())
                        .await
                        .context("cannot cancel the consumer")?;
                    while let Some(Ok(delivery)) = deliveries.next().await {
                        let handler = self.handler.clone();
                        let shutdown = shutdown.clone();
                        in_flight.spawn(async move { handler.settle(delivery, &shutdown).await });
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

/// Either the wait ended with a value, or the process is shutting down.
enum Waited<T> {
    Ready(T),
    ShuttingDown,
}

impl Handler {
    async fn settle(&self, delivery: Delivery, shutdown: &Shutdown) {
        let started = Instant::now();
        self.metrics.consumed.increment(1);
        let outcome = self.handle(&delivery.data, shutdown).await;
        let settled = match &outcome {
            Outcome::Handled | Outcome::Skipped => delivery.acker.ack(BasicAckOptions::default()).await,
            Outcome::Duplicate => {
                self.metrics.duplicates.increment(1);
                delivery.acker.ack(BasicAckOptions::default()).await
            }
            Outcome::Retry => {
                // The broker dead-letters once a message was returned more than the limit.
                if previous_deliveries(&delivery) + 1 > u64::from(self.delivery_limit) {
                    tracing::error!("delivery limit reached; the broker dead-letters this event");
                    self.metrics.over_delivery_limit.increment(1);
                }
                tokio::time::sleep(RETRY_DELAY).await;
                delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await
            }
            Outcome::DeadLetter(reason) => {
                tracing::error!(reason, "dead-lettering a message that can never be handled");
                self.metrics.unparseable.increment(1);
                delivery.acker.reject(BasicRejectOptions { requeue: false }).await
            }
            Outcome::Abandon => return,
        };
        self.metrics.observe(started.elapsed());
        if let Err(error) = settled {
            tracing::warn!(%error, ?outcome, "cannot settle a delivery; the broker will redeliver it");
        }
    }

    async fn handle(&self, data: &[u8], shutdown: &Shutdown) -> Outcome {
        let event = match Event::decode(data) {
            Ok(event) => event,
            Err(error) => return Outcome::DeadLetter(format!("undecodable event: {error}")),
        };
        let event_type = event.r#type.clone();
        let event = match Notice::from_event(event) {
            Ok(Some(event)) => event,
            Ok(None) => {
                tracing::debug!(event.r#type = %event_type, "event notifies nobody; skipped");
                return Outcome::Skipped;
            }
            Err(error) => return Outcome::DeadLetter(format!("invalid {event_type} event: {error}")),
        };
        let span = tracing::info_span!("notify", event.id = %event.event_id, booking.id = %event.booking_id);
        // Each consumed event is a trace of its own, through its calls to user and cinema.
        marquee_common::trace::in_new_trace(self.handle_claimed(&event, shutdown).instrument(span)).await
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

    async fn handle_claimed(&self, event: &Notice, shutdown: &Shutdown) -> Outcome {
        let token = match self.claim(event.event_id, shutdown).await {
            Waited::Ready(Claim::Acquired(token)) => token,
            Waited::Ready(Claim::Done) => {
                tracing::info!(event.id = %event.event_id, "duplicate event skipped");
                return Outcome::Duplicate;
            }
            // `claim` waits these out.
            Waited::Ready(Claim::HeldElsewhere) | Waited::ShuttingDown => return Outcome::Abandon,
        };
        let sent = self.send(event).await;
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
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), event.id = %event.event_id, "notification failed; will retry");
                Outcome::Retry
            }
        }
    }

    /// Sends one message per channel the user chose (none if they chose none).
    /// Every failure is retried, an unknown user or showtime too, up to the
    /// delivery limit, after which the event waits in the dead-letter queue.
    async fn send(&self, notice: &Notice) -> anyhow::Result<()> {
        let contact = self.directory.contact(notice.user_id).await?;
        if contact.addresses.is_empty() {
            tracing::info!(user.id = %notice.user_id, "the user wants no notifications");
            return Ok(());
        }
        let showing = match notice.kind.showtime_id() {
            Some(showtime_id) => Some(self.directory.showing(showtime_id).await?),
            None => None,
        };
        for (medium, recipient) in &contact.addresses {
            let message = render::render(notice, &contact.name, showing.as_ref(), *medium)?;
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
            self.channel.deliver(&record).await?;
            self.metrics.sent.increment(1);
        }
        Ok(())
    }
}
