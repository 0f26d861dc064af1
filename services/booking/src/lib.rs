//! The booking service: owns bookings (MongoDB) and orchestrates the booking saga
//! over gRPC (user validates the customer, cinema holds, confirms and frees seats,
//! payment charges and refunds), with every state change's events relayed from an
//! outbox to RabbitMQ (and served back as a log, `EventLog`). A background sweep
//! expires overdue holds and resumes sagas whose process died mid-step. `/metrics`
//! shows the gRPC calls, the outbox backlog and the sagas by status (`metrics`).

mod domain;
mod drivers;
mod error;
mod events;
mod grpc;
mod metrics;
mod saga;
pub mod settings;
mod store;

pub use settings::Settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use marquee_kit::metrics::{MetricsServer, Registry};
use marquee_kit::readiness::{Readiness, Scope};
use marquee_kit::shutdown::Shutdown;
use marquee_messaging::outbox::{EventLogApi, MongoOutbox, OutboxGauges, OutboxRelay};
use marquee_proto::booking::v1::booking_service_server::BookingServiceServer;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::events::v1::event_log_server::EventLogServer;
use marquee_proto::payment::v1::payment_service_client::PaymentServiceClient;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::domain::RefundPolicy;
use crate::drivers::Drivers;
use crate::grpc::BookingApi;
use crate::metrics::SagaGauges;
pub use crate::saga::SweepReport;
use crate::saga::{Checkpoint, Retry, Saga, SagaSettings};
use crate::store::BookingStore;

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    api: BookingApi,
    relay: OutboxRelay<MongoOutbox>,
    events: EventLogApi,
    sweeper: Sweeper,
    drivers: Drivers,
    grace: Duration,
    readiness: Readiness,
    registry: Registry,
    metrics: MetricsServer,
    /// Shut down once serving stops (`marquee_mongo::disconnect`).
    db: mongodb::Database,
}

/// Expires overdue holds and resumes stalled sagas; `run` does it at startup and
/// periodically, `sweep` once, now.
#[derive(Clone)]
pub struct Sweeper {
    saga: Saga,
    interval: Duration,
}

impl Sweeper {
    pub async fn sweep(&self) -> anyhow::Result<SweepReport> {
        self.saga.sweep().await
    }

    /// Sweeps at once (recovery at startup), then every interval; never when it is 0.
    async fn run(self, shutdown: Shutdown) {
        if self.interval.is_zero() {
            return;
        }
        loop {
            if let Err(error) = self.saga.sweep().await {
                tracing::warn!(error = format!("{error:#}"), "booking sweep failed");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

/// What a test can see of the local saga drivers (`Application::pay_waits`).
#[doc(hidden)]
#[derive(Clone)]
pub struct PayWaits(Drivers);

impl PayWaits {
    /// Bookings whose saga step this process is driving right now.
    pub fn in_flight(&self) -> usize {
        self.0.in_flight()
    }

    /// Waits for a payment in flight that this process's driver of it answered.
    pub fn woken(&self) -> u64 {
        self.0.woken()
    }

    /// Reads of a booking whose payment was in flight with no local driver.
    pub fn polls(&self) -> u64 {
        self.0.polls()
    }
}

impl Application {
    /// Connects MongoDB (creating indexes), prepares the upstream clients (they
    /// connect lazily) and binds the gRPC listener. RabbitMQ is only needed by the
    /// relay, which connects in the background so a broker outage never blocks bookings.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, None).await
    }

    /// Test hook: an application whose saga fails at the named checkpoint exactly as
    /// if its process died there (see `saga::Checkpoint`; an unknown name is an error).
    #[doc(hidden)]
    pub async fn build_crashing_at(settings: Settings, checkpoint: &str) -> anyhow::Result<Self> {
        let point = Checkpoint::parse(checkpoint)
            .with_context(|| format!("no saga checkpoint is named {checkpoint:?}"))?;
        Self::build_with(settings, Some(point)).await
    }

    async fn build_with(settings: Settings, crash_at: Option<Checkpoint>) -> anyhow::Result<Self> {
        let config = &settings.booking;
        let db = marquee_mongo::connect(&settings.mongo, "booking").await?;
        let store = BookingStore::new(&db, Duration::from_millis(config.saga_lease_ms)).await?;
        let channel = |url: &str, service| marquee_kit::grpc::channel(url, service, &settings.grpc);
        let outbox_written = Arc::new(Notify::new());
        let tiers: Vec<(i64, u8)> = config.refund_tiers.iter().map(|t| (t.hours_before, t.percent)).collect();
        let saga_settings = SagaSettings {
            hold_ttl_seconds: config.hold_ttl_seconds,
            extend_hold_below: chrono::Duration::try_seconds(config.extend_hold_below_seconds)
                .context("booking.extend_hold_below_seconds is out of range")?,
            max_active_holds: config.max_active_holds_per_showtime.max(1),
            charge_retry: Retry {
                attempts: config.charge_attempts.max(1),
                first_backoff: Duration::from_millis(config.charge_retry_backoff_ms),
            },
            upstream_retry: Retry {
                attempts: config.upstream_attempts.max(1),
                first_backoff: Duration::from_millis(config.upstream_backoff_ms),
            },
            deadline: Duration::from_millis(settings.grpc.request_timeout_ms),
            policy: RefundPolicy::new(config.cancel_cutoff_minutes, &tiers)?,
            pay_wait: Duration::from_millis(config.pay_wait_ms),
            lease: Duration::from_millis(config.saga_lease_ms),
            max_in_flight: config.max_in_flight_steps.max(1),
            abandoned_hold_grace: Duration::from_millis(config.abandoned_hold_grace_ms),
        };
        let saga = Saga::new(
            store.clone(),
            CinemaServiceClient::new(channel(
                &settings.upstream.cinema_url,
                marquee_proto::cinema::v1::cinema_service_server::SERVICE_NAME,
            )?),
            PaymentServiceClient::new(channel(
                &settings.upstream.payment_url,
                marquee_proto::payment::v1::payment_service_server::SERVICE_NAME,
            )?),
            saga_settings,
            outbox_written.clone(),
            crash_at,
        );
        let outbox = store.outbox().await?;
        let events = EventLogApi::new(outbox.log());
        let registry = Registry::new()?;
        let metrics = metrics_server(&settings, &registry, &store, &outbox).await?;
        let relay = OutboxRelay::new(
            outbox,
            &settings.rabbitmq,
            Duration::from_millis(config.outbox_poll_ms),
            Duration::from_millis(config.outbox_lease_ms),
            outbox_written,
        )?;
        let (listener, addr) = marquee_kit::grpc::bind(&config.server).await?;
        Ok(Self {
            // Only MongoDB: while RabbitMQ is down, events wait in the outbox.
            readiness: Readiness::default().with(marquee_mongo::probe(&db, Scope::Api)),
            listener,
            addr,
            sweeper: Sweeper {
                saga: saga.clone(),
                interval: Duration::from_millis(config.sweep_interval_ms),
            },
            drivers: saga.drivers(),
            api: BookingApi::new(saga),
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

    pub fn sweeper(&self) -> Sweeper {
        self.sweeper.clone()
    }

    /// Test probe: the saga steps this process drives and how repeated pays waited.
    #[doc(hidden)]
    pub fn pay_waits(&self) -> PayWaits {
        PayWaits(self.drivers.clone())
    }

    /// Serves gRPC and runs the outbox relay and the sweeper until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        // The relay and the sweeper also stop if the server fails on its own.
        let relay_stop = shutdown.child_token();
        let relay = tokio::spawn(self.relay.run(relay_stop.clone()));
        let sweeper = tokio::spawn(self.sweeper.run(relay_stop.clone()));
        let metrics = self.metrics.spawn(&shutdown);
        let served = marquee_kit::grpc::serve(
            self.listener,
            tonic::service::Routes::new(BookingServiceServer::new(self.api))
                .add_service(EventLogServer::new(self.events)),
            <BookingServiceServer<BookingApi> as tonic::server::NamedService>::NAME,
            self.readiness,
            &self.registry,
            shutdown,
            self.grace,
        )
        .await;
        relay_stop.cancel();
        relay.await.context("outbox relay panicked")?;
        sweeper.await.context("booking sweeper panicked")?;
        let stopped = served.and(metrics.stop().await);
        marquee_mongo::disconnect(&self.db).await;
        stopped
    }
}

/// `/metrics` with the outbox's and the sagas' gauges, read at each scrape.
async fn metrics_server(
    settings: &Settings,
    registry: &Registry,
    store: &BookingStore,
    outbox: &MongoOutbox,
) -> anyhow::Result<MetricsServer> {
    let config = &settings.booking;
    let (sagas, store) = (SagaGauges::new(registry), store.clone());
    let (backlog, outbox) = (OutboxGauges::new(registry, "booking"), outbox.clone());
    Ok(MetricsServer::bind(&config.server.host, config.metrics_port, registry)
        .await?
        .collecting(move || {
            let (sagas, store) = (sagas.clone(), store.clone());
            async move { sagas.refresh(&store).await }
        })
        .collecting(move || {
            let (backlog, outbox) = (backlog.clone(), outbox.clone());
            async move { backlog.refresh(&outbox).await }
        }))
}
