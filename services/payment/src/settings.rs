//! What the payment binary reads: `[telemetry]`, `[grpc]`, `[mongo]`, `[rabbitmq]` and
//! its own `[payment]` (layered by `marquee_kit::config`).

use marquee_kit::config::{Config, GrpcSettings, Rule, ServerSettings, TelemetrySettings, check};
use marquee_messaging::RabbitSettings;
use marquee_mongo::MongoSettings;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub telemetry: TelemetrySettings,
    pub grpc: GrpcSettings,
    pub mongo: MongoSettings,
    pub rabbitmq: RabbitSettings,
    pub payment: PaymentSettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        check(&[Rule::below(
            ("payment.charge_wait_ms", self.payment.charge_wait_ms),
            ("grpc.request_timeout_ms", self.grpc.request_timeout_ms),
            "a repeated charge would run into booking's deadline instead of answering ABORTED",
        )])
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct PaymentSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    /// Where Prometheus scrapes `/metrics` (on `host`); 0 picks a free port (tests).
    pub metrics_port: u16,
    /// How long the `pm_card_slow` test card takes to answer.
    pub slow_card_delay_ms: u64,
    /// How long a charge that finds its key in flight waits for the result before
    /// answering ABORTED.
    pub charge_wait_ms: u64,
    /// How long one processor attempt holds a key without a renewal; the attempt renews
    /// it every third of this while it runs, so only a crashed attempt is taken over.
    pub charge_lease_ms: u64,
    /// The outbox relay also wakes on every write; this is its fallback poll.
    pub outbox_poll_ms: u64,
    pub outbox_lease_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        marquee_kit::config::for_tests().unwrap()
    }

    /// `change` breaks the rule between `lower` and `upper`: the error names both.
    fn assert_violates(change: impl FnOnce(&mut Settings), lower: &str, upper: &str) {
        let mut settings = settings();
        change(&mut settings);
        let error = format!("{:#}", settings.validate().unwrap_err());
        assert!(error.contains(&format!("{lower} (")) && error.contains(&format!("{upper} (")), "{error}");
    }

    fn assert_valid(change: impl FnOnce(&mut Settings)) {
        let mut settings = settings();
        change(&mut settings);
        settings.validate().unwrap();
    }

    #[test]
    fn charge_wait_stays_below_the_upstream_deadline() {
        assert_valid(|s| s.payment.charge_wait_ms = s.grpc.request_timeout_ms - 1);
        assert_violates(
            |s| s.payment.charge_wait_ms = s.grpc.request_timeout_ms + 1,
            "payment.charge_wait_ms",
            "grpc.request_timeout_ms",
        );
    }
}
