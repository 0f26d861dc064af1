//! Wiring: connect MongoDB, ensure indexes, bind the gRPC port, serve until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use marquee_common::Settings;
use marquee_common::auth::TokenKeys;
use marquee_common::shutdown::Shutdown;
use marquee_proto::user::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::password::PasswordHasherService;
use crate::service::UserServiceImpl;
use crate::store::UserStore;

/// The user service, built and bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    service: UserServiceImpl,
    grace: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let tokens = TokenKeys::new(&settings.auth)?;
        let hasher = PasswordHasherService::new(&settings.auth).await?;
        let db = marquee_common::mongo::connect(&settings.mongo, "user").await?;
        let store = UserStore::init(&db).await?;
        let (listener, addr) = marquee_common::grpc::bind(&settings.user).await?;
        Ok(Application {
            listener,
            addr,
            service: UserServiceImpl::new(store, hasher, tokens),
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        marquee_common::grpc::serve(
            self.listener,
            Routes::new(UserServiceServer::new(self.service)),
            <UserServiceServer<UserServiceImpl> as NamedService>::NAME,
            shutdown,
            self.grace,
        )
        .await
    }
}
