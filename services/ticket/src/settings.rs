//! What the ticket binaries read: `[telemetry]`, `[grpc]`, `[mongo]`, `[rabbitmq]`,
//! `[upstream]` and their own `[ticket]` (layered by `marquee_kit::config`).

use std::path::PathBuf;

use marquee_kit::Secret;
use marquee_kit::config::{Config, GrpcSettings, Rule, ServerSettings, TelemetrySettings, UpstreamSettings};
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
    pub ticket: TicketSettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        self.ticket.validate()
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct TicketSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    /// Where Prometheus scrapes `/metrics` (on `host`); 0 picks a free port (tests).
    pub metrics_port: u16,
    /// A ticket admits from this long before its show starts until the show ends.
    pub admit_before_start_minutes: i64,
    /// The keys ticket codes are signed with: exactly one `active` signs new tickets;
    /// the others stay listed (and verify the codes they signed) until removed.
    pub signing_keys: Vec<TicketKeySettings>,
    /// An event whose work failed transiently (MongoDB, cinema) is retried after this
    /// pause, doubling up to `retry_max_ms`, jittered, while its delivery is held.
    pub retry_first_ms: u64,
    pub retry_max_ms: u64,
    /// Booking's log of published events is read every `reconcile_every_ms` (0:
    /// never) for confirmations without tickets and cancellations not recorded,
    /// older than `reconcile_grace_ms`; the first start reads back
    /// `reconcile_lookback_seconds` (`reconcile.rs`).
    pub reconcile_every_ms: u64,
    pub reconcile_grace_ms: u64,
    pub reconcile_lookback_seconds: u64,
}

/// One Ed25519 signing key: its 32-byte seed, base64url, inline (`seed`, e.g. from
/// `MARQUEE_TICKET__SIGNING_KEYS`) or in a file (`seed_file`).
#[derive(Clone, Debug, Deserialize)]
pub struct TicketKeySettings {
    /// Short and stable (1 to 32 bytes of ASCII); travels in every code.
    pub id: String,
    #[serde(default)]
    pub seed: Option<Secret<String>>,
    #[serde(default)]
    pub seed_file: Option<PathBuf>,
    /// Published with the public key: when the key was introduced and when scanners
    /// should stop trusting it.
    pub valid_from: chrono::DateTime<chrono::Utc>,
    pub valid_until: chrono::DateTime<chrono::Utc>,
    /// Signs new tickets; exactly one key is active.
    pub active: bool,
}

/// A key id travels in every ticket code, length-prefixed by one byte; short ids keep
/// the QR code small.
pub const MAX_TICKET_KEY_ID_BYTES: usize = 32;

impl TicketSettings {
    /// The ticket service's own rules (checked at load, and again by `keys::load`):
    /// production lists no key, so the service refuses to start there until keys of
    /// its own are configured.
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut rules = vec![Rule::at_most(
            ("ticket.retry_first_ms", self.retry_first_ms),
            ("ticket.retry_max_ms", self.retry_max_ms),
            "the retry backoff could not grow from its first step to its cap",
        )];
        let mut problems: Vec<String> = rules.drain(..).filter_map(|rule| rule.violation()).collect();
        let active = self.signing_keys.iter().filter(|key| key.active).count();
        if active != 1 {
            problems.push(format!(
                "ticket.signing_keys has {active} active keys; exactly one must be active \
                 (set MARQUEE_TICKET__SIGNING_KEYS; production.toml lists none on purpose)"
            ));
        }
        for (index, key) in self.signing_keys.iter().enumerate() {
            let id_ok = !key.id.is_empty()
                && key.id.len() <= MAX_TICKET_KEY_ID_BYTES
                && key.id.bytes().all(|b| b.is_ascii_graphic());
            if !id_ok {
                problems.push(format!(
                    "ticket.signing_keys[{index}].id {:?} must be 1 to {MAX_TICKET_KEY_ID_BYTES} printable ASCII bytes",
                    key.id
                ));
            }
            if self.signing_keys[..index].iter().any(|other| other.id == key.id) {
                problems.push(format!("ticket.signing_keys: the id {:?} is listed twice", key.id));
            }
            if key.seed.is_some() == key.seed_file.is_some() {
                problems.push(format!(
                    "ticket.signing_keys[{index}] ({}) needs exactly one of seed and seed_file",
                    key.id
                ));
            }
            if key.valid_from >= key.valid_until {
                problems.push(format!(
                    "ticket.signing_keys[{index}] ({}): valid_from must be before valid_until",
                    key.id
                ));
            }
        }
        if self.admit_before_start_minutes < 0 {
            problems.push("ticket.admit_before_start_minutes must not be negative".to_owned());
        }
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_keys_need_exactly_one_active_key() {
        let mut ticket = marquee_kit::config::for_tests::<Settings>().unwrap().ticket;
        ticket.validate().unwrap();
        let mut second = ticket.signing_keys[0].clone();
        second.id = "other".to_owned();
        ticket.signing_keys.push(second.clone());
        let error = ticket.validate().unwrap_err().to_string();
        assert!(error.contains("2 active keys"), "{error}");
        ticket.signing_keys[1].active = false;
        ticket.validate().unwrap();
        ticket.signing_keys[1].id = ticket.signing_keys[0].id.clone();
        let error = ticket.validate().unwrap_err().to_string();
        assert!(error.contains("listed twice"), "{error}");
        ticket.signing_keys[1].id = "x".repeat(MAX_TICKET_KEY_ID_BYTES + 1);
        ticket.signing_keys[1].seed_file = Some("/keys/other".into());
        let error = ticket.validate().unwrap_err().to_string();
        assert!(error.contains("printable ASCII") && error.contains("exactly one of seed"), "{error}");
    }

    #[test]
    fn production_has_no_ticket_signing_key_of_its_own() {
        let files = marquee_kit::config::files(&marquee_kit::config::repository_dir(), "production");
        let error =
            format!("{:#}", marquee_kit::config::extract::<Settings>(&files, "production").unwrap_err());
        assert!(error.contains("0 active keys"), "{error}");
    }
}
