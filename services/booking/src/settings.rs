//! What the booking binary reads: `[telemetry]`, `[grpc]`, `[mongo]`, `[rabbitmq]`,
//! `[upstream]` and its own `[booking]` (layered by `marquee_kit::config`).

use marquee_kit::config::{
    Config, GrpcSettings, Rule, ServerSettings, TelemetrySettings, UpstreamSettings, check,
};
use marquee_messaging::RabbitSettings;
use marquee_mongo::MongoSettings;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub telemetry: TelemetrySettings,
    pub grpc: GrpcSettings,
    pub mongo: MongoSettings,
    pub rabbitmq: RabbitSettings,
    pub upstream: UpstreamSettings,
    pub booking: BookingSettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        check(&[
            Rule::below(
                ("booking.pay_wait_ms", self.booking.pay_wait_ms),
                // The gateway's (and booking's) deadline on every upstream call.
                ("grpc.request_timeout_ms", self.grpc.request_timeout_ms),
                "a repeated payBooking would still be waiting when the gateway gives up on it",
            ),
            Rule::below(
                // Booking's deadline on LockSeats, which runs before the booking's
                // insert.
                ("grpc.request_timeout_ms", self.grpc.request_timeout_ms),
                ("booking.abandoned_hold_grace_ms", self.booking.abandoned_hold_grace_ms),
                "recovery would release the seats of a hold still waiting for LockSeats",
            ),
        ])
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct BookingSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    /// Where Prometheus scrapes `/metrics` (on `host`); 0 picks a free port (tests).
    pub metrics_port: u16,
    pub hold_ttl_seconds: i32,
    /// PayBooking extends a hold (once) only when less than this is left of it: a hold
    /// paid early has time enough for its charge, and the extension would cost a call
    /// to cinema and a seat write for nothing.
    pub extend_hold_below_seconds: i64,
    pub outbox_poll_ms: u64,
    pub outbox_lease_ms: u64,
    /// Charge calls per payment attempt when payment answers UNAVAILABLE (same key).
    pub charge_attempts: u32,
    /// Wait before the first charge retry; doubles after each, jittered.
    pub charge_retry_backoff_ms: u64,
    /// Active (held or being paid) bookings one user may have per showtime.
    pub max_active_holds_per_showtime: u32,
    /// A confirmed booking can be cancelled until this long before the show.
    pub cancel_cutoff_minutes: i64,
    /// What a cancellation refunds: the first tier whose `hours_before` the show is
    /// still at least that far away applies; none applying refunds nothing.
    pub refund_tiers: Vec<RefundTier>,
    /// How far ahead a saga step in flight is leased; its driver renews the lease
    /// every third of this while the step runs. Recovery presumes the process of a
    /// step whose lease lapsed dead and resumes the step.
    pub saga_lease_ms: u64,
    /// How long a hold cinema lists with no booking written yet is left alone; after
    /// that recovery presumes it died before the insert and releases its seats.
    pub abandoned_hold_grace_ms: u64,
    /// How often overdue holds are expired and stalled sagas recovered (0: never; tests
    /// trigger it).
    pub sweep_interval_ms: u64,
    /// Calls in total to cinema (and payment refunds) when they fail transiently.
    pub upstream_attempts: u32,
    /// Wait before the first retry of such a call; doubles after each, jittered.
    pub upstream_backoff_ms: u64,
    /// How long a repeated PayBooking waits for the same booking's payment already in
    /// flight to finish, to answer with its outcome instead of CONFLICT. Must stay under
    /// the gateway's upstream deadline, or the wait only ends in the gateway's timeout.
    pub pay_wait_ms: u64,
    /// Hold, pay and cancel steps this process runs at once; beyond it a request is
    /// refused at once with SERVICE_BUSY, before anything is written.
    pub max_in_flight_steps: usize,
}

/// One step of the cancellation refund policy.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct RefundTier {
    /// Applies while the show starts at least this many hours from now.
    pub hours_before: i64,
    /// Percent of the total refunded, 0 to 100.
    pub percent: u8,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn pay_wait_stays_below_the_upstream_deadline() {
        let mut settings: Settings = marquee_kit::config::for_tests().unwrap();
        settings.booking.pay_wait_ms = settings.grpc.request_timeout_ms - 1;
        settings.validate().unwrap();
        settings.booking.pay_wait_ms = settings.grpc.request_timeout_ms;
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("booking.pay_wait_ms (") && error.contains("grpc.request_timeout_ms ("),
            "{error}"
        );
    }

    #[test]
    fn the_abandoned_hold_grace_outlasts_the_lock_seats_deadline() {
        let mut settings: Settings = marquee_kit::config::for_tests().unwrap();
        settings.booking.abandoned_hold_grace_ms = settings.grpc.request_timeout_ms + 1;
        settings.validate().unwrap();
        settings.booking.abandoned_hold_grace_ms = settings.grpc.request_timeout_ms;
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("grpc.request_timeout_ms (")
                && error.contains("booking.abandoned_hold_grace_ms ("),
            "{error}"
        );
    }

    #[test]
    fn loading_refuses_an_inconsistent_environment_file() {
        let dir = std::env::temp_dir().join(format!("marquee-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let repository = marquee_kit::config::repository_dir();
        std::fs::copy(repository.join("default.toml"), dir.join("default.toml")).unwrap();
        std::fs::write(dir.join("broken.toml"), "[booking]\npay_wait_ms = 9000\n").unwrap();
        std::fs::write(dir.join("fine.toml"), "[booking]\npay_wait_ms = 3000\n").unwrap();
        let loaded = marquee_kit::config::load_from::<Settings>(Path::new(&dir), "broken");
        let fine = marquee_kit::config::load_from::<Settings>(Path::new(&dir), "fine");
        std::fs::remove_dir_all(&dir).unwrap();

        let error = format!("{:#}", loaded.unwrap_err());
        assert!(
            error.contains("booking.pay_wait_ms (9000) must be below grpc.request_timeout_ms ("),
            "{error}"
        );
        assert_eq!(fine.unwrap().booking.pay_wait_ms, 3000);
    }
}
