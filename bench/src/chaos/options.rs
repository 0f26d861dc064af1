//! The chaos suite's command line: what a run does (load, kills, broker restarts, an
//! outage) and where it writes.

use std::path::PathBuf;

use anyhow::Context;

use crate::catalog::SEATS;

#[derive(Debug, Clone)]
pub struct Options {
    pub short: bool,
    pub customers: usize,
    /// Seconds of load (at least: the load also lasts until the killer is done).
    pub seconds: u64,
    pub kills: usize,
    /// Restart RabbitMQ and Redis once each (they are shared with the whole machine).
    pub brokers: bool,
    /// Customers pick seats among the first `seat_pool` of the 10,000-seat hall.
    pub seat_pool: usize,
    /// Registrations in flight at once (default: every customer at once).
    pub registrations_at_once: Option<usize>,
    pub port_base: u16,
    pub out: Option<PathBuf>,
    pub logs: Option<PathBuf>,
    /// Where the service binaries are (default: next to this one).
    pub bin_dir: Option<PathBuf>,
    /// The processes' configuration directory (default: the repository's `config/`).
    pub config_dir: Option<PathBuf>,
    /// Keep the run's databases even when every check passes.
    pub keep: bool,
    /// How long the mesh may take to settle after the load.
    pub settle_seconds: u64,
    /// A process (by name) or `mongodb`, kept down for `outage_seconds` mid-load.
    pub outage: Option<String>,
    pub outage_seconds: u64,
    /// A second replica of the gateway, booking, cinema and payment (the upstreams
    /// balanced over both, customers split over both gateways); the kills then take
    /// down one replica of each in turn (`setup::KILLED_REPLICAS`) while the other
    /// carries the load.
    pub replicas: bool,
}

impl Options {
    pub const USAGE: &str = "marquee-bench chaos [--short] [--customers N] [--seconds N] [--kills N] \
        [--no-brokers|--brokers] [--seat-pool N] [--registrations-at-once N] [--port-base N] [--settle-seconds N] \
        [--outage PROCESS|mongodb] [--outage-seconds N] [--replicas] \
        [--out FILE] [--logs DIR] [--bin-dir DIR] [--config-dir DIR] [--keep]";

    /// Full run: 32 customers, 60 s, 14 kills (each process twice). `--short`: 32
    /// customers, 20 s, 7 kills (each process once). Both restart each broker once unless `--no-brokers`.
    /// `--outage X`: X down for 30 s in the middle of 90 s of load, and (unless given)
    /// no kills and no broker restarts (`--brokers` adds them), so that the outage is the
    /// only fault. `--replicas`: as many kills as replicated processes (4) unless given,
    /// one replica of each.
    pub fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let args: Vec<String> = args.collect();
        let short = args.iter().any(|a| a == "--short");
        let mut options = Self {
            short,
            customers: 32,
            seconds: if short { 20 } else { 60 },
            kills: if short { 7 } else { 14 },
            brokers: true,
            seat_pool: 2000,
            registrations_at_once: None,
            port_base: 7100,
            out: None,
            logs: None,
            bin_dir: None,
            config_dir: None,
            keep: false,
            settle_seconds: 120,
            outage: None,
            outage_seconds: 30,
            replicas: false,
        };
        let given = |flag: &str| args.iter().any(|a| a == flag);
        if given("--replicas") && !given("--kills") {
            options.kills = super::setup::KILLED_REPLICAS.len();
        }
        if given("--outage") {
            options.seconds = 90;
            options.kills = 0;
            options.brokers = false;
        }
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--short" => {}
                "--no-brokers" => options.brokers = false,
                "--brokers" => options.brokers = true,
                "--outage" => options.outage = Some(value("--outage")?),
                "--outage-seconds" => options.outage_seconds = value("--outage-seconds")?.parse()?,
                "--keep" => options.keep = true,
                "--replicas" => options.replicas = true,
                "--customers" => options.customers = value("--customers")?.parse()?,
                "--seconds" => options.seconds = value("--seconds")?.parse()?,
                "--kills" => options.kills = value("--kills")?.parse()?,
                "--seat-pool" => options.seat_pool = value("--seat-pool")?.parse()?,
                "--registrations-at-once" => {
                    options.registrations_at_once = Some(value("--registrations-at-once")?.parse()?)
                }
                "--port-base" => options.port_base = value("--port-base")?.parse()?,
                "--settle-seconds" => options.settle_seconds = value("--settle-seconds")?.parse()?,
                "--out" => options.out = Some(value("--out")?.into()),
                "--logs" => options.logs = Some(value("--logs")?.into()),
                "--bin-dir" => options.bin_dir = Some(value("--bin-dir")?.into()),
                "--config-dir" => options.config_dir = Some(value("--config-dir")?.into()),
                other => anyhow::bail!("unknown option {other}; usage: {}", Self::USAGE),
            }
        }
        anyhow::ensure!(options.customers >= 1, "--customers must be at least 1");
        anyhow::ensure!((2..=SEATS).contains(&options.seat_pool), "--seat-pool must be 2..={SEATS}");
        anyhow::ensure!(options.port_base <= 65_000, "--port-base must leave room for the block");
        anyhow::ensure!(
            !(options.replicas && options.outage.is_some()),
            "--replicas and --outage are separate runs"
        );
        Ok(options)
    }
}
