//! The RabbitMQ consumer: turns each `booking.confirmed` event into exactly one
//! recorded notification, acknowledging a delivery only once its work is durable.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};
use marquee_common::ErrorCode;
use marquee_common::config::RabbitSettings;
use marquee_common::rabbit::short_name;
use marquee_common::shutdown::Shutdown;
use marquee_proto::events::v1::Event;
use marquee_proto::user::v1::GetUserRequest;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use prost::Message;
use tokio::task::JoinSet;
use tonic::transport::Channel as GrpcChannel;
use tracing::Instrument;
use uuid::Uuid;

use crate::claims::{Claim, EventClaims};
use crate::domain::BookingConfirmed;
use crate::render;
use crate::store::{NotificationDoc, NotificationStore, bson_time};

/// Pause before requeueing, so a busy or failing event does not spin.
const RETRY_DELAY: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
const EMAIL: &str = "email";

/// Exchange, queue and binding; declared on every (re)connect, idempotently.
struct Topology {
    settings: RabbitSettings,
    exchange: ShortString,
    queue: ShortString,
    prefetch: u16,
    queue_expires_ms: Option<u32>,
}

/// An open consuming session.
struct Session {
    connection: Connection,
    channel: Channel,
}

impl Topology {
    fn new(settings: &RabbitSettings) -> anyhow::Result<Self> {
        Ok(Self {
            settings: settings.clone(),
            exchange: short_name(&settings.exchange, "rabbitmq.exchange")?,
            queue: short_name(&settings.notification_queue, "rabbitmq.notification_queue")?,
            prefetch: settings.prefetch,
            queue_expires_ms: settings.queue_expires_ms,
        })
    }

    async fn open(&self) -> anyhow::Result<Session> {
        let (connection, channel) = marquee_common::rabbit::connect(&self.settings).await?;
        let mut arguments = FieldTable::default();
        arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        if let Some(expires) = self.queue_expires_ms {
            arguments.insert("x-expires".into(), AMQPValue::LongLongInt(i64::from(expires)));
        }
        channel
            .queue_declare(
                self.queue.clone(),
                QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() },
                arguments,
            )
            .await
            .context("cannot declare the notification queue")?;
        channel
            .queue_bind(
                self.queue.clone(),
                self.exchange.clone(),
                BookingConfirmed::TYPE.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .context("cannot bind the notification queue")?;
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
    Duplicate,
    Retry,
    Discard(String),
}

struct Handler {
    claims: EventClaims,
    store: NotificationStore,
    users: UserServiceClient<GrpcChannel>,
}

impl Consumer {
    /// Connects and declares the topology now, so that once the application is built
    /// its queue exists and receives every event published from then on.
    pub async fn connect(
        settings: &RabbitSettings,
        claims: EventClaims,
        store: NotificationStore,
        users: UserServiceClient<GrpcChannel>,
    ) -> anyhow::Result<Self> {
        let topology = Topology::new(settings)?;
        let session = topology.open().await?;
        Ok(Self { topology, session: Some(session), handler: Arc::new(Handler { claims, store, users }) })
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
    /// shutdown (`Ok`) or a broker failure (`Err`). In-flight deliveries finish
    /// either way; the broker requeues whatever was never settled.
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
                        in_flight.spawn(async move { handler.settle(delivery).await });
                    }
                    Some(Err(error)) => break Err(anyhow::Error::new(error).context("consuming failed")),
                    None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
                },
                Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => log_panic(joined),
            }
        };
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
    if let Err(error) = joined {
        tracing::error!(%error, "a delivery handler panicked; the broker will redeliver its message");
    }
}

impl Handler {
    async fn settle(&self, delivery: Delivery) {
        let outcome = self.handle(&delivery.data).await;
        let settled = match &outcome {
            Outcome::Handled | Outcome::Duplicate => delivery.acker.ack(BasicAckOptions::default()).await,
            Outcome::Retry => {
                tokio::time::sleep(RETRY_DELAY).await;
                delivery.acker.nack(BasicNackOptions { requeue: true, multiple: false }).await
            }
            Outcome::Discard(reason) => {
                tracing::error!(reason, "discarding a message that can never be handled");
                delivery.acker.reject(BasicRejectOptions { requeue: false }).await
            }
        };
        if let Err(error) = settled {
            tracing::warn!(%error, ?outcome, "cannot settle a delivery; the broker will redeliver it");
        }
    }

    async fn handle(&self, data: &[u8]) -> Outcome {
        let event = match Event::decode(data) {
            Ok(event) => event,
            Err(error) => return Outcome::Discard(format!("undecodable event: {error}")),
        };
        let event = match BookingConfirmed::from_event(event) {
            Ok(event) => event,
            Err(error) => return Outcome::Discard(format!("invalid booking.confirmed event: {error}")),
        };
        let span = tracing::info_span!("notify", event.id = %event.event_id, booking.id = %event.booking_id);
        self.handle_claimed(&event).instrument(span).await
    }

    async fn handle_claimed(&self, event: &BookingConfirmed) -> Outcome {
        let token = match self.claims.claim(event.event_id).await {
            Ok(Claim::Acquired(token)) => token,
            Ok(Claim::Done) => {
                tracing::info!(event.id = %event.event_id, "duplicate event skipped");
                return Outcome::Duplicate;
            }
            Ok(Claim::HeldElsewhere) => return Outcome::Retry,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), event.id = %event.event_id, "Redis unavailable; will retry");
                return Outcome::Retry;
            }
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
            Ok(()) => match self.claims.finish(event.event_id).await {
                Ok(()) => {
                    tracing::info!(event.id = %event.event_id, booking.id = %event.booking_id, "notification sent");
                    Outcome::Handled
                }
                // The record exists; its unique index turns the retry into a no-op.
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), event.id = %event.event_id, "cannot mark done; will retry");
                    Outcome::Retry
                }
            },
            Err(Failure::Permanent(reason)) => Outcome::Discard(reason),
            Err(Failure::Transient(error)) => {
                tracing::warn!(error = format!("{error:#}"), event.id = %event.event_id, "notification failed; will retry");
                Outcome::Retry
            }
        }
    }

    /// Looks up the recipient, renders the message and records it as sent.
    async fn send(&self, event: &BookingConfirmed) -> Result<(), Failure> {
        let user = match self.users.clone().get_user(GetUserRequest { id: event.user_id.to_string() }).await {
            Ok(user) => user.into_inner(),
            Err(status) if marquee_common::ApiError::from_status(&status).code == ErrorCode::NotFound => {
                return Err(Failure::Permanent(format!(
                    "user {} of event {} does not exist",
                    event.user_id, event.event_id
                )));
            }
            Err(status) => {
                return Err(Failure::Transient(anyhow::anyhow!(
                    "user.GetUser failed: {:?}: {}",
                    status.code(),
                    status.message()
                )));
            }
        };
        let message = render::booking_confirmed(event);
        let record = NotificationDoc {
            id: Uuid::now_v7().to_string(),
            user_id: event.user_id.to_string(),
            booking_id: event.booking_id.to_string(),
            channel: EMAIL.to_owned(),
            recipient: user.email,
            subject: message.subject,
            body: message.body,
            event_id: event.event_id.to_string(),
            event_type: event.event_type.clone(),
            sent_at: bson_time(chrono::Utc::now()),
        };
        self.store.record(&record).await.map_err(Failure::Transient)
    }
}

enum Failure {
    /// Retrying cannot help (e.g. the user no longer exists).
    Permanent(String),
    Transient(anyhow::Error),
}
