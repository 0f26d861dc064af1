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
//!
//! This file attaches to the broker, reconnecting with backoff, and runs deliveries
//! concurrently; `handle.rs` turns one event into its messages (the claim in Redis,
//! the lookups, the sends) and `settle.rs` tells the broker what became of the
//! delivery (ack, retry later through a delay queue, or dead-letter).
//! `reconcile.rs` handles what the broker confirmed to a publisher but never
//! delivered, found in the publishers' logs.

mod handle;
mod reconcile;
mod settle;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::Channel as AmqpChannel;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use marquee_kit::shutdown::Shutdown;
use marquee_messaging::RabbitSettings;
use marquee_messaging::acks::Acks;
use marquee_messaging::rabbit::{self, short_name};
use tokio::task::JoinSet;

use crate::channel::Channel;
use crate::claims::EventClaims;
use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::topology::{Session, Topology};

pub use self::reconcile::{EventSource, ReconcileSettings, Reconciler};
pub use self::settle::{DEAD_LETTER_ERROR_HEADER, DEAD_LETTER_REASON_HEADER, DeadLetterReason};

/// How long, once shutting down, a delivery still waits for another's claim.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(1);
/// How often the dead-letter and delay queue depths are read for `/metrics`.
const DEPTH_EVERY: Duration = Duration::from_secs(5);

pub struct Consumer {
    topology: Topology,
    prefetch: u16,
    /// The session opened by `connect`, used by the first run.
    session: Option<Session>,
    handler: Arc<Handler>,
    consuming: Arc<AtomicBool>,
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
        let session = rabbit::at_startup("notification consumer", rabbit::STARTUP_BUDGET, || {
            topology.open(settings.prefetch)
        })
        .await?;
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

    /// A reconciler handling events of `sources` that no delivery handled, through
    /// the same handler as this consumer's deliveries.
    pub fn reconciler(&self, sources: Vec<EventSource>, settings: ReconcileSettings) -> Reconciler {
        Reconciler::new(self.handler.clone(), sources, settings)
    }

    /// True while the consumer is attached to the broker (readiness).
    pub fn consuming(&self) -> Arc<AtomicBool> {
        self.consuming.clone()
    }

    /// Consumes until `shutdown`, reconnecting with backoff when the broker goes away.
    pub async fn run(mut self, shutdown: Shutdown) {
        let first = self.session.take();
        let this = &self;
        rabbit::stay_attached(
            "notification consumer",
            first,
            &self.consuming,
            &shutdown,
            || this.topology.open(this.prefetch),
            |session| this.consume(session, &shutdown),
        )
        .await;
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
        let acks = Acks::spawn(session.consume.clone());
        let mut in_flight = JoinSet::new();
        let mut depth_timer = tokio::time::interval(DEPTH_EVERY);
        let spawn = |in_flight: &mut JoinSet<()>, delivery: Delivery| {
            let handler = self.handler.clone();
            let shutdown = shutdown.clone();
            let (publish, acks) = (session.publish.clone(), acks.clone());
            in_flight.spawn(async move { handler.settle(delivery, &publish, &acks, &shutdown).await });
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
        acks.flush().await;
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
