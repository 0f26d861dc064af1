//! The service kit every Marquee binary uses: layered configuration, tracing,
//! shutdown, the gRPC server scaffolding (health + reflection), the mapping of
//! errors to `tonic::Status`, the outbox relay to RabbitMQ, and small helpers for
//! MongoDB, time and gRPC clients.

pub mod auth;
pub mod backoff;
pub mod config;
pub mod error;
pub mod grpc;
pub mod mongo;
pub mod outbox;
pub mod rabbit;
pub mod readiness;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod trace;

pub use config::Settings;
pub use error::{ApiError, ErrorCode};
pub use secret::Secret;
