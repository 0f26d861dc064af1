//! The notification service: consumes booking and payment events from RabbitMQ,
//! deduplicates them by event id in Redis, looks the customer up in the user
//! service (contact, preferences) and the showtime in the cinema service, renders
//! email and SMS text from `templates/`, and delivers each message through a
//! `Channel` (by default: recorded in MongoDB, where ListNotifications reads them;
//! with `notification.smtp_url` set, email is also sent over SMTP).

mod channel;
mod claims;
mod consumer;
mod directory;
mod domain;
mod error;
mod grpc;
mod metrics;
mod render;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use marquee_common::Settings;
use marquee_common::shutdown::Shutdown;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::notification::v1::notification_service_server::NotificationServiceServer;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use tokio::net::TcpListener;

use crate::channel::{Channel, RecordingChannel, SmtpChannel};
use crate::claims::EventClaims;
use crate::consumer::Consumer;
use crate::directory::Directory;
use crate::grpc::NotificationApi;
use crate::metrics::{Metrics, MetricsServer};
use crate::store::NotificationStore;

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    api: NotificationApi,
    consumer: Consumer,
    metrics: MetricsServer,
    grace: Duration,
}

impl Application {
    /// Connects MongoDB (creating indexes), Redis and RabbitMQ (declaring the
    /// exchanges, queues and bindings) and binds the gRPC and metrics listeners.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = marquee_common::mongo::connect(&settings.mongo, "notification").await?;
        let store = NotificationStore::new(&db).await?;
        let claims = EventClaims::connect(&settings.redis, &settings.notification).await?;
        let users = UserServiceClient::new(marquee_common::grpc::channel(
            &settings.upstream.user_url,
            &settings.grpc,
        )?);
        let cinema = CinemaServiceClient::new(marquee_common::grpc::channel(
            &settings.upstream.cinema_url,
            &settings.grpc,
        )?);
        let metrics = Metrics::new();
        let metrics_server = MetricsServer::bind(
            &settings.notification.server.host,
            settings.notification.metrics_port,
            &metrics,
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
            claims,
            Directory::new(users, cinema),
            channel,
            metrics.clone(),
        )
        .await?;
        let (listener, addr) = marquee_common::grpc::bind(&settings.notification.server).await?;
        Ok(Self {
            listener,
            addr,
            api: NotificationApi::new(store),
            consumer,
            metrics: metrics_server,
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
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
        let metrics = self.metrics.serve(consumer_stop.clone());
        let serve = async {
            let served = marquee_common::grpc::serve(
                self.listener,
                tonic::service::Routes::new(NotificationServiceServer::new(self.api)),
                <NotificationServiceServer<NotificationApi> as tonic::server::NamedService>::NAME,
                shutdown,
                self.grace,
            )
            .await;
            consumer_stop.cancel();
            served
        };
        let (served, (), metrics) = tokio::join!(serve, consume, metrics);
        served.and(metrics)
    }
}
