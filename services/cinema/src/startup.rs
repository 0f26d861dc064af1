//! Wiring: PostgreSQL pool, migrations, optional demo seed, and the gRPC server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use marquee_common::Settings;
use marquee_common::shutdown::Shutdown;
use marquee_proto::cinema::v1::cinema_service_server::CinemaServiceServer;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;

use crate::api::CinemaApi;
use crate::store::{self, Store};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../init-scripts/postgres/migrations");

/// The cinema service, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    api: CinemaApi,
    grace: Duration,
}

impl Application {
    /// Connects to PostgreSQL, applies migrations, seeds the demo catalog when
    /// `cinema.seed_demo` is set, and binds the gRPC port (0 picks a free one).
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.postgres.max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(settings.postgres.url.expose())
            .await
            .context("cannot connect to PostgreSQL")?;
        MIGRATOR.run(&pool).await.context("cannot apply the cinema migrations")?;
        if settings.cinema.seed_demo {
            store::seed_demo(&pool).await?;
        }
        let (listener, addr) = marquee_common::grpc::bind(&settings.cinema.server).await?;
        Ok(Application {
            listener,
            addr,
            api: CinemaApi::new(Store::new(pool), settings.cinema.max_seats_per_hold),
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight calls.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        marquee_common::grpc::serve(
            self.listener,
            tonic::service::Routes::new(CinemaServiceServer::new(self.api)),
            <CinemaServiceServer<CinemaApi> as tonic::server::NamedService>::NAME,
            shutdown,
            self.grace,
        )
        .await
    }
}
