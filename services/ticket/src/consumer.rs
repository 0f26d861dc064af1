//! The RabbitMQ consumer: the ticket service's own quorum queue, bound to
//! `booking.cancelled` on the events exchange, so that a cancelled booking's tickets
//! are revoked at once. It is not bound to `booking.confirmed`: the notification worker
//! issues a confirmation's tickets anyway (it needs their codes), and a second queue's
//! copy of every confirmation cost a quarter of the notification pipeline's CPU; the
//! confirmations nobody issued are found in booking's event log (`reconcile.rs`). A
//! queue bound to it by an earlier version is unbound at startup; the confirmations
//! already in it are still handled. A delivery is
//! acknowledged only once its work is durable; a transient failure (MongoDB or cinema
//! down) is retried with backoff while the delivery is held, so nothing needs a delay
//! queue; a crash meanwhile leaves it unacknowledged and the broker redelivers it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};
use marquee_kit::backoff::Backoff;
use marquee_kit::shutdown::Shutdown;
use marquee_messaging::RabbitSettings;
use marquee_messaging::acks::Acks;
use marquee_messaging::rabbit::{self, short_name};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::issue::{IssueError, Issuer};

/// The events the queue receives.
pub const BINDINGS: [&str; 1] = ["booking.cancelled"];
/// What earlier versions bound the queue to, unbound at startup.
const RETIRED_BINDINGS: [&str; 1] = ["booking.confirmed"];

pub struct Consumer {
    settings: RabbitSettings,
    issuer: Arc<Issuer>,
    retry: Backoff,
    session: Option<(Connection, Channel)>,
    consuming: Arc<AtomicBool>,
}

impl Consumer {
    /// Connects and declares the queue now, so that once the service is built every
    /// event published from then on reaches it.
    pub async fn connect(
        settings: &RabbitSettings,
        issuer: Arc<Issuer>,
        retry: Backoff,
    ) -> anyhow::Result<Self> {
        let session =
            rabbit::at_startup("ticket consumer", rabbit::STARTUP_BUDGET, || open(settings)).await?;
        Ok(Self {
            settings: settings.clone(),
            issuer,
            retry,
            session: Some(session),
            consuming: Arc::new(AtomicBool::new(false)),
        })
    }

    /// True while attached to the broker (readiness of the background work).
    pub fn consuming(&self) -> Arc<AtomicBool> {
        self.consuming.clone()
    }

    /// Consumes until `shutdown`, reconnecting with backoff when the broker goes away.
    pub async fn run(mut self, shutdown: Shutdown) {
        let first = self.session.take();
        let this = &self;
        rabbit::stay_attached(
            "ticket consumer",
            first,
            &self.consuming,
            &shutdown,
            || open(&this.settings),
            |(connection, channel): (Connection, Channel)| {
                let shutdown = &shutdown;
                async move {
                    let consumed = this.consume(&channel, shutdown).await;
                    if let Err(error) = connection.close(200, "OK".into()).await {
                        tracing::debug!(%error, "RabbitMQ connection was already closed");
                    }
                    consumed
                }
            },
        )
        .await;
    }

    /// Handles deliveries concurrently (at most `prefetch` unacknowledged) until
    /// shutdown (`Ok`) or a broker failure (`Err`). Deliveries still being retried at
    /// shutdown are dropped unacknowledged: the broker hands them out again.
    async fn consume(&self, channel: &Channel, shutdown: &Shutdown) -> anyhow::Result<()> {
        let queue = short_name(&self.settings.ticket_queue, "rabbitmq.ticket_queue")?;
        let mut deliveries = channel
            .basic_consume(
                queue,
                ShortString::default(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("cannot start consuming")?;
        tracing::info!(queue = %self.settings.ticket_queue, "ticket consumer started");
        let acks = Acks::spawn(channel.clone());
        let mut in_flight = JoinSet::new();
        let result = loop {
            tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => {
                        let (issuer, retry, stop, acks) =
                            (self.issuer.clone(), self.retry, shutdown.clone(), acks.clone());
                        let span = rabbit::consume_span(&delivery, "ticket");
                        in_flight.spawn(
                            async move { settle(&issuer, retry, delivery, &acks, &stop).await }.instrument(span),
                        );
                    }
                    Some(Err(error)) => break Err(anyhow::Error::new(error).context("consuming failed")),
                    None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
                },
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => log_panic(joined),
            }
        };
        if result.is_err() {
            in_flight.abort_all();
        }
        while let Some(joined) = in_flight.join_next().await {
            log_panic(joined);
        }
        acks.flush().await;
        result
    }
}

/// Connects, declares the quorum queue, binds it and drops retired bindings.
async fn open(settings: &RabbitSettings) -> anyhow::Result<(Connection, Channel)> {
    let (connection, channel) = marquee_messaging::rabbit::connect(settings).await?;
    let queue = short_name(&settings.ticket_queue, "rabbitmq.ticket_queue")?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    if let Some(expires) = settings.queue_expires_ms {
        arguments.insert("x-expires".into(), AMQPValue::LongLongInt(i64::from(expires)));
    }
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel
        .queue_declare(queue.clone(), durable, arguments)
        .await
        .context("cannot declare the ticket queue")?;
    let exchange = short_name(&settings.exchange, "rabbitmq.exchange")?;
    for key in BINDINGS {
        channel
            .queue_bind(
                queue.clone(),
                exchange.clone(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("cannot bind the ticket queue to {key}"))?;
    }
    // Unbinding what is not bound succeeds.
    for key in RETIRED_BINDINGS {
        channel
            .queue_unbind(queue.clone(), exchange.clone(), key.into(), FieldTable::default())
            .await
            .with_context(|| format!("cannot unbind the ticket queue from {key}"))?;
    }
    channel
        .basic_qos(settings.prefetch, BasicQosOptions::default())
        .await
        .context("cannot set the prefetch")?;
    Ok((connection, channel))
}

/// Handles one delivery, retrying transient failures until it succeeds or the
/// process stops, then acknowledges it (with the next batch of `acks`). A permanent
/// failure is logged and acknowledged: it would fail the same way every time.
async fn settle(issuer: &Issuer, retry: Backoff, delivery: Delivery, acks: &Acks, shutdown: &Shutdown) {
    let mut attempt = 0;
    loop {
        match issuer.handle(&delivery.data).await {
            Ok(handled) => {
                tracing::debug!(?handled, "ticket event handled");
                break;
            }
            Err(error @ (IssueError::Permanent(_) | IssueError::UnknownShowtime(_))) => {
                tracing::error!(
                    error = format!("{:#}", anyhow::Error::new(error)),
                    "ticket event can never be handled; dropped"
                );
                break;
            }
            Err(IssueError::Transient(error)) => {
                let pause = retry.delay(attempt);
                attempt = attempt.saturating_add(1);
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = pause.as_millis() as u64,
                    "ticket event failed; retrying"
                );
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    acks.ack(delivery.delivery_tag);
}

fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        tracing::error!(%error, "a ticket event handler panicked; the broker will redeliver it");
    }
}
