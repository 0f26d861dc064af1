//! Wiring: connect MongoDB and Redis, ensure indexes and the bootstrap admin, bind the
//! gRPC and metrics ports, serve until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use marquee_auth::TokenKeys;
use marquee_kit::metrics::{MetricsServer, Registry};
use marquee_kit::readiness::{Probe, Readiness, Scope};
use marquee_kit::shutdown::Shutdown;
use marquee_proto::user::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::Settings;
use crate::password::PasswordHasherService;
use crate::service::UserServiceImpl;
use crate::store::UserStore;
use crate::throttle::LoginThrottle;
use crate::tokens::{AccessDenylist, RefreshTokens};

/// The user service, built and bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    service: UserServiceImpl,
    grace: Duration,
    readiness: Readiness,
    registry: Registry,
    metrics: MetricsServer,
    /// Shut down once serving stops (`marquee_mongo::disconnect`).
    db: mongodb::Database,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let tokens = TokenKeys::new(&settings.auth)?;
        let hasher = PasswordHasherService::new(&settings.auth).await?;
        let db = marquee_mongo::connect(&settings.mongo, "user").await?;
        let store = UserStore::init(&db).await?;
        let refresh = RefreshTokens::init(&db, settings.auth.refresh_token_ttl_seconds).await?;
        let client =
            redis::Client::open(settings.redis.url.expose().as_str()).context("invalid Redis URL")?;
        let redis = redis::aio::ConnectionManager::new(client).await.context("cannot connect to Redis")?;
        let redis_probe = redis.clone();
        let prefix = settings.redis.key_prefix.clone();
        let throttle = LoginThrottle::new(
            redis.clone(),
            prefix.clone(),
            settings.auth.login_max_failures,
            settings.auth.login_failure_window_seconds,
        );
        let service = UserServiceImpl {
            store,
            hasher,
            tokens,
            refresh,
            denylist: AccessDenylist::new(redis, prefix),
            throttle,
        };
        match (&settings.user.bootstrap_admin_email, &settings.user.bootstrap_admin_password) {
            (Some(email), Some(password)) => service.ensure_admin(email, password.clone()).await?,
            (None, None) => {}
            _ => anyhow::bail!(
                "set both user.bootstrap_admin_email and user.bootstrap_admin_password, or neither"
            ),
        }
        let (listener, addr) = marquee_kit::grpc::bind(&settings.user.server).await?;
        let registry = Registry::new()?;
        let metrics =
            MetricsServer::bind(&settings.user.server.host, settings.user.metrics_port, &registry).await?;
        Ok(Application {
            readiness: readiness(&db, redis_probe),
            listener,
            addr,
            service,
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

    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let metrics = self.metrics.spawn(&shutdown);
        let served = marquee_kit::grpc::serve(
            self.listener,
            Routes::new(UserServiceServer::new(self.service)),
            <UserServiceServer<UserServiceImpl> as NamedService>::NAME,
            self.readiness,
            &self.registry,
            shutdown,
            self.grace,
        )
        .await;
        let stopped = served.and(metrics.stop().await);
        marquee_mongo::disconnect(&self.db).await;
        stopped
    }
}

/// Accounts live in MongoDB; login throttling and the logout denylist in Redis.
fn readiness(db: &mongodb::Database, redis: redis::aio::ConnectionManager) -> Readiness {
    Readiness::default().with(marquee_mongo::probe(db, Scope::Api)).with(Probe::new(
        "redis",
        Scope::Api,
        move || {
            let mut redis = redis.clone();
            async move {
                let _: String = redis::cmd("PING").query_async(&mut redis).await?;
                Ok(())
            }
        },
    ))
}
