//! Wiring: PostgreSQL pool, migrations, optional demo seed, the gRPC server and
//! `/metrics` (with the seats held now).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use marquee_kit::metrics::{MetricsServer, Registry};
use marquee_kit::readiness::{Probe, Readiness, Scope};
use marquee_kit::shutdown::Shutdown;
use marquee_proto::cinema::v1::cinema_service_server::CinemaServiceServer;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::net::TcpListener;

use crate::Settings;
use crate::api::{CinemaApi, HoldPolicy};
use crate::board::SeatBoard;
use crate::changes::{self, SeatChanges};
use crate::domain::{HoldCutoff, HoldTtl};
use crate::store::{self, Store};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../init-scripts/postgres/migrations");

/// A pooled connection idle this long is pinged before use (see `Application::build`).
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(10);

/// The cinema service, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    api: CinemaApi,
    grace: Duration,
    pool: PgPool,
    seat_listener: PgListener,
    changes: SeatChanges,
    board: SeatBoard,
    sweep_interval: Option<Duration>,
    readiness: Readiness,
    registry: Registry,
    metrics: MetricsServer,
}

impl Application {
    /// Connects to PostgreSQL, applies migrations, seeds the demo catalog when
    /// `cinema.seed_demo` is set, and binds the gRPC port (0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let policy = HoldPolicy {
            max_seats_per_hold: settings.cinema.max_seats_per_hold,
            cutoff: HoldCutoff::new(settings.cinema.hold_cutoff_seconds)?,
            extension: HoldTtl::parse(settings.cinema.hold_extension_seconds)
                .context("invalid cinema.hold_extension_seconds")?,
            cleaning_buffer_minutes: settings.cinema.cleaning_buffer_minutes.max(0),
            no_orphan_seats: settings.cinema.no_orphan_seats,
        };
        let pool = PgPoolOptions::new()
            .max_connections(settings.postgres.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx pings every connection it hands out: a second round trip (and a
            // wake-up of the server process) for every statement. A connection in
            // steady use proves itself on each query; only one that sat idle, which
            // the server or network may have dropped meanwhile, is pinged first.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect(settings.postgres.url.expose())
            .await
            .context("cannot connect to PostgreSQL")?;
        MIGRATOR.run(&pool).await.context("cannot apply the cinema migrations")?;
        if settings.cinema.seed_demo {
            store::seed_demo(&pool).await?;
        }
        let (seat_changes, seat_listener) = changes::listen(&pool).await?;
        let (listener, addr) = marquee_kit::grpc::bind(&settings.cinema.server).await?;
        let registry = Registry::new()?;
        let metrics = metrics_server(&settings, &registry, Store::new(pool.clone())).await?;
        let sweep_ms = settings.cinema.hold_sweep_interval_ms;
        let board = SeatBoard::new(pool.clone(), settings.cinema.seat_board);
        let ping = pool.clone();
        let readiness = Readiness::default().with(Probe::new("postgres", Scope::Api, move || {
            let pool = ping.clone();
            async move {
                sqlx::query("select 1").execute(&pool).await?;
                Ok(())
            }
        }));
        Ok(Application {
            readiness,
            listener,
            addr,
            api: CinemaApi::new(Store::new(pool.clone()), policy, seat_changes.clone(), board.clone()),
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
            pool,
            seat_listener,
            changes: seat_changes,
            board,
            sweep_interval: (sweep_ms > 0).then(|| Duration::from_millis(sweep_ms)),
            registry,
            metrics,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `GET /metrics` is served.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.addr()
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls. Meanwhile
    /// relays seat changes to watchers and, if configured, sweeps lapsed holds.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        // Background work also stops if the server fails on its own.
        let background = shutdown.child_token();
        let relay = tokio::spawn(changes::relay(
            self.seat_listener,
            self.pool.clone(),
            self.changes,
            self.board,
            background.clone(),
        ));
        let sweeper = self
            .sweep_interval
            .map(|interval| tokio::spawn(changes::sweep(self.pool.clone(), interval, background.clone())));
        let metrics = self.metrics.spawn(&shutdown);
        let served = marquee_kit::grpc::serve(
            self.listener,
            tonic::service::Routes::new(CinemaServiceServer::new(self.api.stopping_with(background.clone()))),
            <CinemaServiceServer<CinemaApi> as tonic::server::NamedService>::NAME,
            self.readiness,
            &self.registry,
            shutdown,
            self.grace,
        )
        .await;
        background.cancel();
        relay.await.context("the seat change relay panicked")??;
        if let Some(sweeper) = sweeper {
            sweeper.await.context("the hold sweeper panicked")??;
        }
        served.and(metrics.stop().await)
    }
}

/// `/metrics` with `cinema_holds_active`, counted at each scrape.
async fn metrics_server(
    settings: &Settings,
    registry: &Registry,
    store: Store,
) -> anyhow::Result<MetricsServer> {
    let holds =
        registry.gauge("cinema_holds_active", "Seats held now (unexpired holds), over every showtime", &[]);
    let server =
        MetricsServer::bind(&settings.cinema.server.host, settings.cinema.metrics_port, registry).await?;
    Ok(server.collecting(move || {
        let (holds, store) = (holds.clone(), store.clone());
        async move {
            holds.set(store.active_holds().await? as f64);
            Ok(())
        }
    }))
}
