//! The notification service: consumes `booking.confirmed` events from RabbitMQ,
//! deduplicates them by event id in Redis, looks the customer up in the user service
//! and records each email it sends in MongoDB, where ListNotifications reads them.

mod claims;
mod consumer;
mod domain;
mod error;
mod grpc;
mod render;
mod store;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use marquee_common::Settings;
use marquee_common::shutdown::Shutdown;
use marquee_proto::notification::v1::notification_service_server::NotificationServiceServer;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use tokio::net::TcpListener;

use crate::claims::EventClaims;
use crate::consumer::Consumer;
use crate::grpc::NotificationApi;
use crate::store::NotificationStore;

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    api: NotificationApi,
    consumer: Consumer,
    grace: Duration,
}

impl Application {
    /// Connects MongoDB (creating indexes), Redis and RabbitMQ (declaring the
    /// exchange, the quorum queue and its binding) and binds the gRPC listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = marquee_common::mongo::connect(&settings.mongo, "notification").await?;
        let store = NotificationStore::new(&db).await?;
        let claims = EventClaims::connect(&settings.redis, &settings.notification).await?;
        let users = UserServiceClient::new(marquee_common::grpc::channel(
            &settings.upstream.user_url,
            &settings.grpc,
        )?);
        let consumer = Consumer::connect(&settings.rabbitmq, claims, store.clone(), users).await?;
        let (listener, addr) = marquee_common::grpc::bind(&settings.notification.server).await?;
        Ok(Self {
            listener,
            addr,
            api: NotificationApi::new(store),
            consumer,
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves gRPC and consumes events until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        // The consumer also stops if the server fails on its own.
        let consumer_stop = shutdown.child_token();
        let consumer = tokio::spawn(self.consumer.run(consumer_stop.clone()));
        let served = marquee_common::grpc::serve(
            self.listener,
            tonic::service::Routes::new(NotificationServiceServer::new(self.api)),
            <NotificationServiceServer<NotificationApi> as tonic::server::NamedService>::NAME,
            shutdown,
            self.grace,
        )
        .await;
        consumer_stop.cancel();
        consumer.await.context("notification consumer panicked")?;
        served
    }
}
