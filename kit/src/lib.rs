//! The service kit every Marquee binary uses: layered configuration (the loading and
//! the shared sections), tracing and trace context, shutdown, the gRPC server
//! scaffolding (health + reflection + drain) and client channels balanced over
//! replicas, Prometheus metrics (a registry per service, gRPC server metrics,
//! `/metrics`), readiness probes,
//! the mapping of errors to `tonic::Status`, the backoff schedule, secrets and time
//! conversions; and the `marquee-healthcheck` binary. It talks to nothing itself:
//! stores, brokers and tokens live in `marquee-mongo`, `marquee-messaging` and
//! `marquee-auth`.

pub mod backoff;
pub mod balance;
pub mod batch;
pub mod config;
pub mod error;
pub mod grpc;
pub mod lease;
pub mod memory;
pub mod metrics;
pub mod readiness;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod trace;
pub mod turns;

pub use config::Config;
pub use error::{ApiError, ErrorCode};
pub use secret::Secret;
