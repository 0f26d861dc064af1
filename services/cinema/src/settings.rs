//! What the cinema binary reads: `[telemetry]`, `[grpc]`, `[postgres]` and its own
//! `[cinema]` (layered by `marquee_kit::config`).

use marquee_kit::config::{Config, GrpcSettings, PostgresSettings, ServerSettings, TelemetrySettings};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub telemetry: TelemetrySettings,
    pub grpc: GrpcSettings,
    pub postgres: PostgresSettings,
    pub cinema: CinemaSettings,
}

impl Config for Settings {
    /// No rule spans cinema's keys.
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct CinemaSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    /// Where Prometheus scrapes `/metrics` (on `host`); 0 picks a free port (tests).
    pub metrics_port: u16,
    pub max_seats_per_hold: usize,
    pub seed_demo: bool,
    /// Holds are refused for showtimes starting within this many seconds.
    pub hold_cutoff_seconds: i32,
    /// How much longer a hold lives after its one `ExtendHold`.
    pub hold_extension_seconds: i32,
    /// A showtime ends this long after its movie does (cleaning, doors).
    pub cleaning_buffer_minutes: i32,
    /// Refuse holds that leave a single free seat stranded in a row.
    pub no_orphan_seats: bool,
    /// How often lapsed holds are released and announced; 0 turns the sweeper off.
    pub hold_sweep_interval_ms: u64,
    /// When LockSeats may refuse a seat from the in-memory seat board without asking
    /// PostgreSQL (the board lags PostgreSQL by the notification delay).
    pub seat_board: SeatBoardMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatBoardMode {
    /// Every hold goes to PostgreSQL.
    Off,
    /// Only while every database connection is busy, i.e. when the request would
    /// otherwise queue behind others (a rush on the same seats).
    WhenBusy,
    /// Always: the service's own changes are on the board the moment they commit;
    /// other replicas' arrive with the notification delay.
    Always,
}
