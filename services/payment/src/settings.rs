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
        let [own] = self.payment.rules();
        check(&[
            own,
            Rule::below(
                ("payment.charge_wait_ms", self.payment.charge_wait_ms),
                ("grpc.request_timeout_ms", self.grpc.request_timeout_ms),
                "a repeated charge would run into booking's deadline instead of answering ABORTED",
            ),
        ])
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
    /// How long one processor attempt may hold a key; after that (a crashed attempt)
    /// a retry takes over.
    pub charge_lease_ms: u64,
    /// The outbox relay also wakes on every write; this is its fallback poll.
    pub outbox_poll_ms: u64,
    pub outbox_lease_ms: u64,
}

impl PaymentSettings {
    /// The rules within `[payment]`; `Application::build` checks them too.
    pub fn validate(&self) -> anyhow::Result<()> {
        check(&self.rules())
    }

    fn rules(&self) -> [Rule; 1] {
        [Rule::below(
            ("payment.slow_card_delay_ms", self.slow_card_delay_ms),
            ("payment.charge_lease_ms", self.charge_lease_ms),
            "slow charges would be re-attempted while still running",
        )]
    }
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

    #[test]
    fn charge_lease_outlasts_the_slow_card() {
        assert_valid(|s| s.payment.charge_lease_ms = s.payment.slow_card_delay_ms + 1);
        assert_violates(
            |s| s.payment.charge_lease_ms = s.payment.slow_card_delay_ms,
            "payment.slow_card_delay_ms",
            "payment.charge_lease_ms",
        );
        let mut payment = settings().payment;
        payment.charge_lease_ms = payment.slow_card_delay_ms;
        assert!(payment.validate().is_err());
    }

    #[test]
    fn every_violation_is_reported_at_once() {
        let mut settings = settings();
        settings.payment.charge_wait_ms = settings.grpc.request_timeout_ms;
        settings.payment.charge_lease_ms = settings.payment.slow_card_delay_ms;
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("payment.charge_wait_ms") && error.contains("payment.charge_lease_ms"),
            "{error}"
        );
    }
}
