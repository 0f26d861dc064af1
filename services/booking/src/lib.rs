//! The booking service: owns bookings (MongoDB) and orchestrates the booking saga
//! over gRPC (user validates the customer, cinema holds and confirms seats, payment
//! charges), with every state change's events relayed from an outbox to RabbitMQ.

mod domain;
mod error;
mod events;
mod grpc;
mod saga;
mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use marquee_common::Settings;
use marquee_common::outbox::{MongoOutbox, OutboxRelay};
use marquee_common::shutdown::Shutdown;
use marquee_proto::booking::v1::booking_service_server::BookingServiceServer;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::payment::v1::payment_service_client::PaymentServiceClient;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::grpc::BookingApi;
use crate::saga::{ChargeRetry, Saga};
use crate::store::BookingStore;

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    api: BookingApi,
    relay: OutboxRelay<MongoOutbox>,
    grace: Duration,
}

impl Application {
    /// Connects MongoDB (creating indexes), prepares the upstream clients (they
    /// connect lazily) and binds the gRPC listener. RabbitMQ is only needed by the
    /// relay, which connects in the background so a broker outage never blocks bookings.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = marquee_common::mongo::connect(&settings.mongo, "booking").await?;
        let store = BookingStore::new(&db).await?;
        let channel = |url: &str| marquee_common::grpc::channel(url, &settings.grpc);
        let outbox_written = Arc::new(Notify::new());
        let saga = Saga::new(
            store.clone(),
            UserServiceClient::new(channel(&settings.upstream.user_url)?),
            CinemaServiceClient::new(channel(&settings.upstream.cinema_url)?),
            PaymentServiceClient::new(channel(&settings.upstream.payment_url)?),
            settings.booking.hold_ttl_seconds,
            ChargeRetry {
                attempts: settings.booking.charge_attempts.max(1),
                first_backoff: Duration::from_millis(settings.booking.charge_retry_backoff_ms),
            },
            outbox_written.clone(),
        );
        let relay = OutboxRelay::new(
            store.outbox().await?,
            &settings.rabbitmq,
            Duration::from_millis(settings.booking.outbox_poll_ms),
            outbox_written,
        )?;
        let (listener, addr) = marquee_common::grpc::bind(&settings.booking.server).await?;
        Ok(Self {
            listener,
            addr,
            api: BookingApi::new(saga),
            relay,
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves gRPC and runs the outbox relay until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        // The relay also stops if the server fails on its own.
        let relay_stop = shutdown.child_token();
        let relay = tokio::spawn(self.relay.run(relay_stop.clone()));
        let served = marquee_common::grpc::serve(
            self.listener,
            tonic::service::Routes::new(BookingServiceServer::new(self.api)),
            <BookingServiceServer<BookingApi> as tonic::server::NamedService>::NAME,
            shutdown,
            self.grace,
        )
        .await;
        relay_stop.cancel();
        relay.await.context("outbox relay panicked")?;
        served
    }
}
