//! What the gateway binary reads: `[telemetry]`, `[grpc]`, `[redis]`, `[auth]`,
//! `[upstream]` and its own `[gateway]` (layered by `marquee_kit::config`).

use std::path::PathBuf;

use marquee_auth::AuthSettings;
use marquee_kit::config::{
    Config, GrpcSettings, RedisSettings, ServerSettings, TelemetrySettings, UpstreamSettings,
};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub telemetry: TelemetrySettings,
    pub grpc: GrpcSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub upstream: UpstreamSettings,
    pub gateway: GatewaySettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        self.auth.validate()
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct GatewaySettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    pub graphiql: bool,
    pub max_body_bytes: usize,
    /// Operations allowed in one batched `POST /graphql` (a JSON array); 0 refuses batches.
    pub max_batch_size: usize,
    /// Schema introspection (`__schema`, `__type`); production turns it off.
    pub introspection: bool,
    /// Take the client address from the last `X-Forwarded-For` entry (set by Kong)
    /// instead of the TCP peer. Only safe behind a proxy that always sets it.
    pub trust_forwarded_for: bool,
    pub rate_limit: RateLimitSettings,
    /// Subscriptions one WebSocket connection may hold at once.
    pub max_subscriptions_per_connection: usize,
    /// The built web app (`web/dist`) served at `/`; relative to the working directory.
    /// A missing directory leaves the API serving and `/` answering 503.
    pub web_dir: PathBuf,
}

/// Fixed-window request limits kept in Redis, shared by every gateway replica.
#[derive(Clone, Debug, Deserialize)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub window_seconds: u64,
    /// GraphQL operations per window for one signed-in user (the token's `sub`).
    pub per_user: u64,
    /// GraphQL operations per window for one client address without a token.
    pub per_ip: u64,
}
