//! The outbox relay: publishes every unsent event to the RabbitMQ topic exchange
//! with publisher confirms, and marks an event sent only after the broker's ack.
//! Delivery is at least once (a crash between ack and mark republishes); consumers
//! deduplicate by `event_id`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use marquee_common::config::RabbitSettings;
use marquee_common::shutdown::Shutdown;
use tokio::sync::Notify;

use crate::store::{BookingStore, PendingEvent};

/// Bookings read per outbox query.
const BATCH: i64 = 100;
const PERSISTENT: u8 = 2;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct OutboxRelay {
    store: BookingStore,
    settings: RabbitSettings,
    exchange: ShortString,
    poll: Duration,
    written: Arc<Notify>,
}

impl OutboxRelay {
    pub fn new(
        store: BookingStore,
        settings: &RabbitSettings,
        poll: Duration,
        written: Arc<Notify>,
    ) -> anyhow::Result<Self> {
        let exchange = marquee_common::rabbit::short_name(&settings.exchange, "rabbitmq.exchange")?;
        Ok(Self { store, settings: settings.clone(), exchange, poll, written })
    }

    /// Relays until `shutdown`, reconnecting with backoff whenever the broker or the
    /// database fails. Stopping mid-batch is safe: unconfirmed events stay unsent.
    pub async fn run(self, shutdown: Shutdown) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let failure = tokio::select! {
                () = shutdown.cancelled() => return,
                failure = self.connect_and_relay(&mut backoff) => failure,
            };
            tracing::warn!(
                error = format!("{failure:#}"),
                retry_in_ms = backoff.as_millis() as u64,
                "outbox relay interrupted"
            );
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs until something fails; the error says what.
    async fn connect_and_relay(&self, backoff: &mut Duration) -> anyhow::Error {
        // The connection is held here so it lives exactly as long as this session.
        let (_connection, channel) = match self.open_channel().await {
            Ok(session) => session,
            Err(error) => return error,
        };
        *backoff = FIRST_BACKOFF;
        tracing::info!(exchange = %self.exchange, "outbox relay connected to RabbitMQ");
        loop {
            if let Err(error) = self.drain(&channel).await {
                return error;
            }
            // notify_one stores a permit, so a write during the drain is not missed.
            tokio::select! {
                () = self.written.notified() => {}
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    async fn open_channel(&self) -> anyhow::Result<(Connection, Channel)> {
        let (connection, channel) = marquee_common::rabbit::connect(&self.settings).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("cannot enable publisher confirms")?;
        Ok((connection, channel))
    }

    /// Publishes every unsent event, a batch at a time, until none is left.
    async fn drain(&self, channel: &Channel) -> anyhow::Result<()> {
        loop {
            let batch = self.store.pending_events(BATCH).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let mut confirms = Vec::with_capacity(batch.len());
            for event in &batch {
                confirms.push(self.publish(channel, event).await?);
            }
            for (event, confirm) in batch.iter().zip(confirms) {
                match confirm.await.with_context(|| format!("no confirm for event {}", event.event_id))? {
                    Confirmation::Ack(_) => self.store.mark_sent(event).await?,
                    Confirmation::Nack(_) => anyhow::bail!("broker refused event {}", event.event_id),
                    Confirmation::NotRequested => anyhow::bail!("publisher confirms are not enabled"),
                }
            }
        }
    }

    async fn publish(
        &self,
        channel: &Channel,
        event: &PendingEvent,
    ) -> anyhow::Result<lapin::PublisherConfirm> {
        let routing_key = ShortString::try_new(event.kind.clone())
            .map_err(|e| anyhow::anyhow!("event type {:?} is not a valid routing key: {e}", event.kind))?;
        let message_id = ShortString::try_new(event.event_id.clone())
            .map_err(|e| anyhow::anyhow!("event id {:?} is not a valid message id: {e}", event.event_id))?;
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_message_id(message_id)
            .with_content_type("application/x-protobuf".into())
            .with_type(routing_key.clone());
        channel
            .basic_publish(
                self.exchange.clone(),
                routing_key,
                BasicPublishOptions::default(),
                &event.data,
                properties,
            )
            .await
            .with_context(|| format!("cannot publish event {}", event.event_id))
    }
}
