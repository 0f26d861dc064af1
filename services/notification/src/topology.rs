//! The worker's queues, declared on every (re)connect, idempotently:
//!
//! - `<queue>`: the quorum work queue, bound on the events exchange to the event types
//!   somebody is notified about (`Notice::EVENT_TYPES`; the others, a booking held or a
//!   payment succeeded, never reach it). A message delivered `delivery_limit` times without ever being
//!   settled (the worker crashed holding it) is dead-lettered by the broker.
//! - `<queue>.retry.<ms>`: one delay queue per backoff step. The worker republishes
//!   an event whose dependency is down there; when its per-message TTL runs out the
//!   broker dead-letters it back into `<queue>` (at-least-once, so a broker crash
//!   cannot lose it in between).
//! - `<queue>.dlx` (fanout) and `<queue>.dlq`: events that can never be handled, for
//!   an operator to read and replay (`marquee-notification dead-letters`).

use std::time::Duration;

use anyhow::Context;
use lapin::options::{
    BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel as AmqpChannel, Connection, ExchangeKind};
use marquee_messaging::RabbitSettings;
use marquee_messaging::rabbit::short_name;

use crate::domain::Notice;
use crate::retry::{RetryPolicy, delay_queue};

/// What versions before 2026-12-05 bound the queue to: every booking and payment
/// event, most of which notify nobody. Unbound at start (a no-op once gone).
const WIDE_BINDINGS: [&str; 2] = ["booking.*", "payment.*"];

/// The names derived from the configured work queue.
#[derive(Clone, Debug)]
pub struct QueueNames {
    pub exchange: String,
    pub queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
}

impl QueueNames {
    pub fn new(settings: &RabbitSettings) -> Self {
        let queue = &settings.notification_queue;
        Self {
            exchange: settings.exchange.clone(),
            queue: queue.clone(),
            dead_letter_exchange: format!("{queue}.dlx"),
            dead_letter_queue: format!("{queue}.dlq"),
        }
    }
}

pub struct Topology {
    settings: RabbitSettings,
    pub names: QueueNames,
    delivery_limit: u32,
    policy: RetryPolicy,
}

/// An open session: deliveries arrive on `consume`; retries and dead letters are
/// published on `publish`, in confirm mode, so a delivery is acked only once its
/// copy is safely queued.
pub struct Session {
    pub connection: Connection,
    pub consume: AmqpChannel,
    pub publish: AmqpChannel,
}

impl Topology {
    pub fn new(settings: &RabbitSettings, delivery_limit: u32, policy: RetryPolicy) -> Self {
        Self { settings: settings.clone(), names: QueueNames::new(settings), delivery_limit, policy }
    }

    fn quorum_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        if let Some(expires) = self.settings.queue_expires_ms {
            arguments.insert("x-expires".into(), AMQPValue::LongLongInt(i64::from(expires)));
        }
        arguments
    }

    /// The delay queue of one backoff step: its TTL caps every message's own (the
    /// jittered delay), and expired messages go back to the work queue.
    fn delay_arguments(&self, step: Duration) -> FieldTable {
        let mut arguments = self.quorum_arguments();
        let ttl = i64::try_from(step.as_millis()).unwrap_or(i64::MAX);
        arguments.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("".into()));
        arguments.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(self.names.queue.as_str().into()),
        );
        // At-least-once dead-lettering needs publishers refused (not old messages
        // dropped) when a queue is full.
        arguments.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        arguments.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        arguments
    }

    /// Every delay queue, with its step.
    pub fn delay_queues(&self) -> Vec<(Duration, String)> {
        self.policy.steps().into_iter().map(|step| (step, delay_queue(&self.names.queue, step))).collect()
    }

    /// Connects and declares everything, or gives up after twice the connect timeout
    /// (a broker that is stopping may never answer).
    pub async fn open(&self, prefetch: u16) -> anyhow::Result<Session> {
        let limit = marquee_messaging::rabbit::CONNECT_TIMEOUT * 2;
        tokio::time::timeout(limit, self.open_now(prefetch))
            .await
            .map_err(|_| anyhow::anyhow!("RabbitMQ did not set up the queues within {limit:?}"))?
    }

    async fn open_now(&self, prefetch: u16) -> anyhow::Result<Session> {
        let (connection, consume) = marquee_messaging::rabbit::connect(&self.settings).await?;
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        let names = &self.names;
        let queue = short_name(&names.queue, "rabbitmq.notification_queue")?;
        let dead_letter_exchange = short_name(&names.dead_letter_exchange, "dead-letter exchange")?;
        let dead_letter_queue = short_name(&names.dead_letter_queue, "dead-letter queue")?;
        consume
            .exchange_declare(
                dead_letter_exchange.clone(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .context("cannot declare the dead-letter exchange")?;
        consume
            .queue_declare(dead_letter_queue.clone(), durable, self.quorum_arguments())
            .await
            .context("cannot declare the dead-letter queue")?;
        consume
            .queue_bind(
                dead_letter_queue,
                dead_letter_exchange.clone(),
                ShortString::default(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("cannot bind the dead-letter queue")?;

        let mut arguments = self.quorum_arguments();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dead_letter_exchange.as_str().into()),
        );
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(self.delivery_limit)));
        consume
            .queue_declare(queue.clone(), durable, arguments)
            .await
            // Queue arguments are fixed at creation: one declared by an older version
            // (another delivery limit, say) must be deleted once to be redeclared.
            .with_context(|| {
                format!(
                    "cannot declare the notification queue {queue} (if it exists with other arguments, \
                     drain it and run `rabbitmqctl delete_queue {queue}` once)"
                )
            })?;
        for (step, name) in self.delay_queues() {
            consume
                .queue_declare(short_name(&name, "delay queue")?, durable, self.delay_arguments(step))
                .await
                .with_context(|| format!("cannot declare the delay queue {name}"))?;
        }
        let exchange = short_name(&names.exchange, "rabbitmq.exchange")?;
        for event_type in Notice::EVENT_TYPES {
            consume
                .queue_bind(
                    queue.clone(),
                    exchange.clone(),
                    event_type.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("cannot bind the notification queue to {event_type}"))?;
        }
        for pattern in WIDE_BINDINGS {
            consume
                .queue_unbind(queue.clone(), exchange.clone(), pattern.into(), FieldTable::default())
                .await
                .with_context(|| format!("cannot unbind the notification queue from {pattern}"))?;
        }
        consume
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .context("cannot set the consumer prefetch")?;
        let publish = connection.create_channel().await.context("cannot open the publishing channel")?;
        publish
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("cannot enable publisher confirms")?;
        Ok(Session { connection, consume, publish })
    }
}
