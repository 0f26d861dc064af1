//! Wiring: load the signing keys, connect MongoDB (indexes), declare and bind the
//! queue, bind the gRPC and metrics ports, then serve, consume and reconcile until
//! shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use marquee_kit::backoff::Backoff;
use marquee_kit::metrics::{MetricsServer, Registry};
use marquee_kit::readiness::{Probe, Readiness, Scope};
use marquee_kit::shutdown::Shutdown;
use marquee_proto::booking::v1::booking_service_server;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::events::v1::event_log_client::EventLogClient;
use marquee_proto::ticket::v1::ticket_service_server::TicketServiceServer;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::Settings;
use crate::consumer::Consumer;
use crate::issue::Issuer;
use crate::reconcile::{ReconcileSettings, Reconciler};
use crate::service::TicketServiceImpl;
use crate::store::TicketStore;

/// The ticket service, built and bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    service: TicketServiceImpl,
    consumer: Consumer,
    /// None when `ticket.reconcile_every_ms` is 0.
    reconciler: Option<Reconciler>,
    grace: Duration,
    readiness: Readiness,
    registry: Registry,
    metrics: MetricsServer,
    /// Shut down once serving stops (`marquee_mongo::disconnect`).
    db: mongodb::Database,
}

impl Application {
    /// Loads the keys (refusing a configuration without exactly one active key),
    /// connects MongoDB and RabbitMQ (the queue exists once this returns) and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let config = &settings.ticket;
        let (signer, public) = crate::keys::load(config).context("invalid ticket.signing_keys")?;
        let db = marquee_mongo::connect(&settings.mongo, "ticket").await?;
        let store = TicketStore::init(&db).await?;
        let cinema = CinemaServiceClient::new(marquee_kit::grpc::channel(
            &settings.upstream.cinema_url,
            marquee_proto::cinema::v1::cinema_service_server::SERVICE_NAME,
            &settings.grpc,
        )?);
        let issuer = Issuer::new(
            store.clone(),
            signer,
            cinema,
            chrono::Duration::minutes(config.admit_before_start_minutes),
        );
        let retry = Backoff::new(
            Duration::from_millis(config.retry_first_ms),
            Duration::from_millis(config.retry_max_ms),
        );
        let consumer = Consumer::connect(&settings.rabbitmq, issuer.clone(), retry).await?;
        let consuming = consumer.consuming();
        let readiness = Readiness::default().with(marquee_mongo::probe(&db, Scope::Api)).with(Probe::new(
            "rabbitmq",
            Scope::Background,
            move || {
                let consuming = consuming.load(Ordering::Relaxed);
                async move {
                    anyhow::ensure!(consuming, "not consuming from RabbitMQ");
                    Ok(())
                }
            },
        ));
        let (listener, addr) = marquee_kit::grpc::bind(&config.server).await?;
        let registry = Registry::new()?;
        let reconciler = reconciler(&settings, issuer.clone(), store.clone(), &registry)?;
        let metrics = MetricsServer::bind(&config.server.host, config.metrics_port, &registry).await?;
        Ok(Application {
            registry,
            metrics,
            listener,
            addr,
            service: TicketServiceImpl::new(store, public, issuer),
            consumer,
            reconciler,
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
            readiness,
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

    /// Serves gRPC and consumes events until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let consumer_stop = shutdown.child_token();
        let consumer = tokio::spawn(self.consumer.run(consumer_stop.clone()));
        let reconciler =
            self.reconciler.map(|reconciler| tokio::spawn(reconciler.run(consumer_stop.clone())));
        let metrics = self.metrics.spawn(&shutdown);
        let served = marquee_kit::grpc::serve(
            self.listener,
            Routes::new(TicketServiceServer::new(self.service)),
            <TicketServiceServer<TicketServiceImpl> as NamedService>::NAME,
            self.readiness,
            &self.registry,
            shutdown,
            self.grace,
        )
        .await;
        consumer_stop.cancel();
        consumer.await.context("ticket consumer panicked")?;
        if let Some(reconciler) = reconciler {
            reconciler.await.context("ticket reconciler panicked")?;
        }
        let stopped = served.and(metrics.stop().await);
        marquee_mongo::disconnect(&self.db).await;
        stopped
    }
}

/// Reads booking's log of published events, unless turned off.
fn reconciler(
    settings: &Settings,
    issuer: Arc<Issuer>,
    store: TicketStore,
    registry: &Registry,
) -> anyhow::Result<Option<Reconciler>> {
    let config = &settings.ticket;
    if config.reconcile_every_ms == 0 {
        return Ok(None);
    }
    // A replica is asked for its log while booking is SERVING.
    let channel = marquee_kit::grpc::channel(
        &settings.upstream.booking_url,
        booking_service_server::SERVICE_NAME,
        &settings.grpc,
    )?;
    let reconcile = ReconcileSettings {
        every: Duration::from_millis(config.reconcile_every_ms),
        grace: Duration::from_millis(config.reconcile_grace_ms),
        lookback: Duration::from_secs(config.reconcile_lookback_seconds),
    };
    Ok(Some(Reconciler::new(issuer, store, EventLogClient::new(channel), reconcile, registry)))
}
