//! What the user binary reads: `[telemetry]`, `[grpc]`, `[mongo]`, `[redis]`, `[auth]`
//! and its own `[user]` (layered by `marquee_kit::config`).

use marquee_auth::AuthSettings;
use marquee_kit::Secret;
use marquee_kit::config::{
    Config, GrpcSettings, RedisSettings, Rule, ServerSettings, TelemetrySettings, check,
};
use marquee_mongo::MongoSettings;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub telemetry: TelemetrySettings,
    pub grpc: GrpcSettings,
    pub mongo: MongoSettings,
    pub redis: RedisSettings,
    pub auth: AuthSettings,
    pub user: UserSettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        check(&[Rule::below(
            ("auth.hash_max_wait_ms", self.auth.hash_max_wait_ms),
            ("grpc.request_timeout_ms", self.grpc.request_timeout_ms),
            "a register or login would queue for a hashing slot past the gateway's deadline \
             instead of being refused with SERVICE_BUSY",
        )])?;
        self.auth.validate()
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct UserSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    /// Where Prometheus scrapes `/metrics` (on `host`); 0 picks a free port (tests).
    pub metrics_port: u16,
    /// Created (or promoted) as admin at startup when both are set; idempotent.
    #[serde(default)]
    pub bootstrap_admin_email: Option<String>,
    #[serde(default)]
    pub bootstrap_admin_password: Option<Secret<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        marquee_kit::config::for_tests().unwrap()
    }

    #[test]
    fn hash_slot_wait_stays_below_the_upstream_deadline() {
        let mut settings = settings();
        settings.auth.hash_max_wait_ms = settings.grpc.request_timeout_ms - 1;
        settings.validate().unwrap();
        settings.grpc.request_timeout_ms = settings.auth.hash_max_wait_ms;
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("auth.hash_max_wait_ms (") && error.contains("grpc.request_timeout_ms ("),
            "{error}"
        );
    }

    #[test]
    fn loading_checks_the_jwt_secret() {
        let mut settings = settings();
        settings.auth.jwt_secret = Secret::new(String::new());
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("MARQUEE_AUTH__JWT_SECRET"), "{error}");
        // Secrets load but never print.
        let loaded = self::settings();
        assert!(!format!("{loaded:?}").contains(loaded.auth.jwt_secret.expose().as_str()));
    }
}
