//! Wiring: connect MongoDB, ensure indexes, bind the gRPC port, serve until shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use marquee_common::Settings;
use marquee_common::shutdown::Shutdown;
use marquee_proto::payment::v1::payment_service_server::PaymentServiceServer;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::service::PaymentServiceImpl;
use crate::store::PaymentStore;

/// The payment service, built and bound but not yet serving.
pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    service: PaymentServiceImpl,
    grace: Duration,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let db = marquee_common::mongo::connect(&settings.mongo, "payment").await?;
        let store = PaymentStore::init(&db).await?;
        let (listener, addr) = marquee_common::grpc::bind(&settings.payment).await?;
        Ok(Application {
            listener,
            addr,
            service: PaymentServiceImpl::new(store),
            grace: Duration::from_millis(settings.grpc.shutdown_grace_ms),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        marquee_common::grpc::serve(
            self.listener,
            Routes::new(PaymentServiceServer::new(self.service)),
            <PaymentServiceServer<PaymentServiceImpl> as NamedService>::NAME,
            shutdown,
            self.grace,
        )
        .await
    }
}
