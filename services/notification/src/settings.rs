//! What the notification binary reads: `[telemetry]`, `[grpc]`, `[mongo]`, `[redis]`,
//! `[rabbitmq]`, `[upstream]` and its own `[notification]` (layered by
//! `marquee_kit::config`).

use marquee_kit::config::{
    Config, GrpcSettings, RedisSettings, Rule, ServerSettings, TelemetrySettings, UpstreamSettings, check,
};
use marquee_messaging::RabbitSettings;
use marquee_mongo::MongoSettings;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub telemetry: TelemetrySettings,
    pub grpc: GrpcSettings,
    pub mongo: MongoSettings,
    pub redis: RedisSettings,
    pub rabbitmq: RabbitSettings,
    pub upstream: UpstreamSettings,
    pub notification: NotificationSettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        check(&[Rule::at_most(
            ("notification.retry_first_ms", self.notification.retry_first_ms),
            ("notification.retry_max_ms", self.notification.retry_max_ms),
            "the retry backoff could not grow from its first step to its cap",
        )])
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct NotificationSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    pub claim_ttl_seconds: u64,
    pub done_ttl_seconds: u64,
    /// Deliveries of one message (`x-delivery-limit`) before the broker dead-letters
    /// it. Only deliveries that were never settled count (the worker crashed or lost
    /// its connection holding it): failures the worker sees are retried through the
    /// retry queues instead.
    pub delivery_limit: u32,
    /// The first pause before retrying an event whose dependency (user, cinema,
    /// MongoDB) is down; it doubles on each retry up to `retry_max_ms`, jittered.
    pub retry_first_ms: u64,
    pub retry_max_ms: u64,
    /// How long an event keeps being retried after its first failure before it is
    /// sent with what it carries (showtime details missing) or dead-lettered.
    pub retry_budget_seconds: u64,
    /// Between reconciliation rounds (events booking and payment published that no
    /// delivery handled are handled then); 0 turns reconciliation off.
    pub reconcile_every_ms: u64,
    /// Published events younger than this are left to the broker.
    pub reconcile_grace_ms: u64,
    /// At start, how far back the publishers' logs are read (at most the week they keep).
    pub reconcile_lookback_seconds: u64,
    /// Where Prometheus scrapes `/metrics` (on `host`); 0 picks a free port (tests).
    pub metrics_port: u16,
    /// `smtp://host[:port]` of a plain (no TLS, no auth) SMTP relay; when set, email
    /// notifications are also sent there. Unset: they are only recorded.
    #[serde(default)]
    pub smtp_url: Option<String>,
    /// The From address of email notifications.
    pub smtp_from: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_starts_at_most_at_its_cap() {
        let mut settings: Settings = marquee_kit::config::for_tests().unwrap();
        settings.notification.retry_first_ms = settings.notification.retry_max_ms;
        settings.validate().unwrap();
        settings.notification.retry_first_ms = settings.notification.retry_max_ms + 1;
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("notification.retry_first_ms (") && error.contains("notification.retry_max_ms ("),
            "{error}"
        );
    }
}
