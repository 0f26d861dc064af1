//! `marquee-healthcheck <http://host:port> [service]`: exits 0 when the gRPC server
//! answers `grpc.health.v1.Health/Check` with SERVING (the container health check of
//! docker-compose; the images carry no other gRPC client).

use std::process::ExitCode;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: marquee-healthcheck <http://host:port> [service]");
        return ExitCode::from(2);
    };
    let service = args.next().unwrap_or_default();
    match check(url, service).await {
        Ok(ServingStatus::Serving) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("not serving: {status:?}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("health check failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(url: String, service: String) -> anyhow::Result<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let reply = HealthClient::new(channel).check(HealthCheckRequest { service }).await?.into_inner();
    Ok(reply.status())
}
