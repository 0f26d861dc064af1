//! Wiring: connect MongoDB, ensure indexes, bind the gRPC and metrics ports, serve
//! (payments and the log of published events, `/metrics` with the outbox backlog) and
//! relay the outbox until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use marquee_kit::metrics::{MetricsServer, Registry};
use marquee_kit::readiness::{Readiness, Scope};
use marquee_kit::shutdown::Shutdown;
use marquee_messaging::outbox::{EventLogApi, MongoOutbox, OutboxGauges, OutboxRelay};
use marquee_proto::events::v1::event_log_server::EventLogServer;
use marquee_proto::payment::v1::payment_service_server::PaymentServiceServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::Settings;
use crate::processor::Processor;
use crate::service::{ChargePolicy, PaymentServiceImpl};
use crate::store::PaymentStore;

/// The payment service, built and bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    service: PaymentServiceImpl,
    relay: OutboxRelay<MongoOutbox>,
    events: EventLogApi,
    grace: Duration,
    readiness: Readiness,
    registry: Registry,
    metrics: MetricsServer,
    /// Shut down once serving stops (`marquee_mongo::disconnect`).
    db: mongodb::Database,
}

impl Application {
    /// Connects MongoDB (creating indexes) and binds the gRPC listener. RabbitMQ is only
    /// needed by the relay, which connects in the background so a broker outage never
    /// blocks payments.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let config = &settings.payment;
        let db = marquee_mongo::connect(&settings.mongo, "payment").await?;
        let store = PaymentStore::init(&db).await?;
        let outbox_written = Arc::new(Notify::new());
        let outbox = store.outbox().await?;
        let events = EventLogApi::new(outbox.log());
        let registry = Registry::new()?;
        let gauges = OutboxGauges::new(&registry, "payment");
        let backlog = outbox.clone();
        let metrics = MetricsServer::bind(&config.server.host, config.metrics_port, &registry)
            .await?
            .collecting(move || {
                let (gauges, outbox) = (gauges.clone(), backlog.clone());
                async move { gauges.refresh(&outbox).await }
            });
        let relay = OutboxRelay::new(
            outbox,
            &settings.rabbitmq,
            Duration::from_millis(config.outbox_poll_ms),
            Duration::from_millis(config.outbox_lease_ms),
            outbox_written.clone(),
        )?;
        let policy = ChargePolicy {
            wait: Duration::from_millis(config.charge_wait_ms),
            lease: chrono::Duration::milliseconds(
                i64::try_from(config.charge_lease_ms).context("payment.charge_lease_ms is too large")?,
            ),
        };
        let processor = Processor::new(Duration::from_millis(config.slow_card_delay_ms));
        let (listener, addr) = marquee_kit::grpc::bind(&config.server).await?;
        Ok(Application {
            // Only MongoDB: while RabbitMQ is down, events wait in the outbox.
            readiness: Readiness::default().with(marquee_mongo::probe(&db, Scope::Api)),
            listener,
            addr,
            service: PaymentServiceImpl::new(store, processor, policy, outbox_written),
            relay,
            events,
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
            registry,
            metrics,
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

    /// Serves gRPC and runs the outbox relay until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        // The relay also stops if the server fails on its own.
        let relay_stop = shutdown.child_token();
        let relay = tokio::spawn(self.relay.run(relay_stop.clone()));
        let metrics = self.metrics.spawn(&shutdown);
        let served = marquee_kit::grpc::serve(
            self.listener,
            Routes::new(PaymentServiceServer::new(self.service))
                .add_service(EventLogServer::new(self.events)),
            <PaymentServiceServer<PaymentServiceImpl> as NamedService>::NAME,
            self.readiness,
            &self.registry,
            shutdown,
            self.grace,
        )
        .await;
        relay_stop.cancel();
        relay.await.context("outbox relay panicked")?;
        let stopped = served.and(metrics.stop().await);
        marquee_mongo::disconnect(&self.db).await;
        stopped
    }
}
