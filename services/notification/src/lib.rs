//! The notification service: consumes booking and payment events from RabbitMQ,
//! deduplicates them by event id in Redis, looks the customer up in the user
//! service (contact, preferences), the showtime in the cinema service and a
//! confirmed booking's tickets in the ticket service, renders email and SMS text
//! from `templates/`, and delivers each message through a `Channel` (by default:
//! recorded in MongoDB, where ListNotifications reads them; with
//! `notification.smtp_url` set, email is also sent over SMTP, with each ticket's QR
//! code in its HTML version). Events the
//! broker never delivered are found in booking's and payment's logs of published
//! events and handled all the same (reconciliation).

mod channel;
mod claims;
mod consumer;
pub mod dead_letters;
mod directory;
mod domain;
mod error;
mod grpc;
mod metrics;
mod qr;
mod render;
mod retry;
pub mod settings;
mod store;
mod topology;

pub use settings::Settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use marquee_kit::backoff::Backoff;
use marquee_kit::metrics::{MetricsServer, Registry};
use marquee_kit::readiness::{Probe, Readiness, Scope};
use marquee_kit::shutdown::Shutdown;
use marquee_proto::booking::v1::booking_service_server;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::cinema::v1::cinema_service_server;
use marquee_proto::events::v1::event_log_client::EventLogClient;
use marquee_proto::notification::v1::notification_service_server::NotificationServiceServer;
use marquee_proto::payment::v1::payment_service_server;
use marquee_proto::ticket::v1::ticket_service_client::TicketServiceClient;
use marquee_proto::ticket::v1::ticket_service_server;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use marquee_proto::user::v1::user_service_server;
use tokio::net::TcpListener;

use crate::channel::{Channel, RecordingChannel, SmtpChannel};
use crate::claims::EventClaims;
use crate::consumer::{Consumer, ConsumerParts, EventSource, ReconcileSettings, Reconciler};
use crate::directory::Directory;
use crate::grpc::NotificationApi;
use crate::metrics::Metrics;
use crate::retry::RetryPolicy;
use crate::settings::NotificationSettings;
use crate::store::NotificationStore;

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    api: NotificationApi,
    consumer: Consumer,
    reconciler: Option<Reconciler>,
    registry: Registry,
    metrics: MetricsServer,
    grace: Duration,
    readiness: Readiness,
    /// Shut down once serving stops (`marquee_mongo::disconnect`).
    db: mongodb::Database,
}

impl Application {
    /// Connects MongoDB (creating indexes), Redis and RabbitMQ (declaring the
    /// exchanges, queues and bindings) and binds the gRPC and metrics listeners.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = marquee_mongo::connect(&settings.mongo, "notification").await?;
        let store = NotificationStore::new(&db).await?;
        let claims = EventClaims::connect(&settings.redis, &settings.notification).await?;
        let upstream = &settings.upstream;
        let channel = |url: &str, service| marquee_kit::grpc::channel(url, service, &settings.grpc);
        let users = UserServiceClient::new(channel(&upstream.user_url, user_service_server::SERVICE_NAME)?);
        let cinema =
            CinemaServiceClient::new(channel(&upstream.cinema_url, cinema_service_server::SERVICE_NAME)?);
        let tickets =
            TicketServiceClient::new(channel(&upstream.ticket_url, ticket_service_server::SERVICE_NAME)?);
        let registry = Registry::new()?;
        let metrics = Metrics::new(&registry);
        let metrics_server = MetricsServer::bind(
            &settings.notification.server.host,
            settings.notification.metrics_port,
            &registry,
        )
        .await?;
        let record: Arc<dyn Channel> = Arc::new(RecordingChannel::new(store.clone()));
        let channel: Arc<dyn Channel> = match &settings.notification.smtp_url {
            Some(url) => {
                Arc::new(SmtpChannel::new(url, &settings.notification.smtp_from, store.clone(), record)?)
            }
            None => record,
        };
        let consumer = Consumer::connect(
            &settings.rabbitmq,
            settings.notification.delivery_limit,
            retry_policy(&settings.notification)?,
            ConsumerParts {
                claims: claims.clone(),
                directory: Directory::new(users, cinema, tickets),
                channel,
                metrics: metrics.clone(),
            },
        )
        .await?;
        let reconciler = reconciler(&settings, &consumer)?;
        let readiness = readiness(&db, &claims, consumer.consuming());
        let (listener, addr) = marquee_kit::grpc::bind(&settings.notification.server).await?;
        Ok(Self {
            listener,
            addr,
            api: NotificationApi::new(store),
            consumer,
            reconciler,
            readiness,
            registry,
            metrics: metrics_server,
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
            db,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.addr()
    }

    /// Serves gRPC and consumes events until `shutdown`. Everything runs inside this
    /// one future, so aborting its task drops the broker connection at once, as a
    /// crash would: unacknowledged deliveries return to the queue.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        // The consumer also stops if the server fails on its own.
        let consumer_stop = shutdown.child_token();
        let consume = self.consumer.run(consumer_stop.clone());
        let reconcile = async {
            if let Some(reconciler) = self.reconciler {
                reconciler.run(consumer_stop.clone()).await;
            }
        };
        let metrics = self.metrics.serve(consumer_stop.clone());
        let serve = async {
            let served = marquee_kit::grpc::serve(
                self.listener,
                tonic::service::Routes::new(NotificationServiceServer::new(self.api)),
                <NotificationServiceServer<NotificationApi> as tonic::server::NamedService>::NAME,
                self.readiness,
                &self.registry,
                shutdown,
                self.grace,
            )
            .await;
            consumer_stop.cancel();
            served
        };
        let (served, (), (), metrics) = tokio::join!(serve, consume, reconcile, metrics);
        marquee_mongo::disconnect(&self.db).await;
        served.and(metrics)
    }
}

/// Listing notifications needs MongoDB; consuming also needs Redis and the broker.
fn readiness(db: &mongodb::Database, claims: &EventClaims, consuming: Arc<AtomicBool>) -> Readiness {
    let claims = claims.clone();
    Readiness::default()
        .with(marquee_mongo::probe(db, Scope::Api))
        .with(Probe::new("redis", Scope::Background, move || {
            let claims = claims.clone();
            async move { claims.ping().await }
        }))
        .with(Probe::new("rabbitmq", Scope::Background, move || {
            let attached = consuming.load(Ordering::Relaxed);
            async move {
                anyhow::ensure!(attached, "the consumer is not attached to the broker");
                Ok(())
            }
        }))
}

/// Reads booking's and payment's logs of published events, unless turned off.
fn reconciler(settings: &Settings, consumer: &Consumer) -> anyhow::Result<Option<Reconciler>> {
    let config = &settings.notification;
    if config.reconcile_every_ms == 0 {
        return Ok(None);
    }
    // A replica is asked for its log while the service that writes it is SERVING.
    let source = |name, url: &str, service| -> anyhow::Result<EventSource> {
        let channel = marquee_kit::grpc::channel(url, service, &settings.grpc)?;
        Ok(EventSource { name, client: EventLogClient::new(channel) })
    };
    let sources = vec![
        source("booking", &settings.upstream.booking_url, booking_service_server::SERVICE_NAME)?,
        source("payment", &settings.upstream.payment_url, payment_service_server::SERVICE_NAME)?,
    ];
    Ok(Some(consumer.reconciler(
        sources,
        ReconcileSettings {
            every: Duration::from_millis(config.reconcile_every_ms),
            grace: Duration::from_millis(config.reconcile_grace_ms),
            lookback: Duration::from_secs(config.reconcile_lookback_seconds),
        },
    )))
}

fn retry_policy(settings: &NotificationSettings) -> anyhow::Result<RetryPolicy> {
    anyhow::ensure!(settings.retry_first_ms > 0, "notification.retry_first_ms must be positive");
    Ok(RetryPolicy {
        backoff: Backoff::new(
            Duration::from_millis(settings.retry_first_ms),
            Duration::from_millis(settings.retry_max_ms),
        ),
        budget: Duration::from_secs(settings.retry_budget_seconds),
    })
}
