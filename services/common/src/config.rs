//! Typed, layered configuration shared by every process of the mesh.
//!
//! Layers, later wins: `config/default.toml`, `config/<env>.toml` (env from
//! `MARQUEE_ENV`, default `local`), then `MARQUEE_<SECTION>__<KEY>` variables.
//! The config directory is `MARQUEE_CONFIG_DIR`, else `./config`.
//!
//! `config/default.toml` is the one home of every default: no field here has a
//! serde default of its own, so a key missing from it fails the load instead of
//! silently taking a second, different value. Only `Option` fields may be absent
//! (unset); the environment files only override. Rules between fields are checked
//! at load (`rules`).

mod rules;

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

use crate::secret::Secret;

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub telemetry: TelemetrySettings,
    pub grpc: GrpcSettings,
    pub postgres: PostgresSettings,
    pub mongo: MongoSettings,
    pub redis: RedisSettings,
    pub rabbitmq: RabbitSettings,
    pub auth: AuthSettings,
    pub upstream: UpstreamSettings,
    pub user: UserSettings,
    pub cinema: CinemaSettings,
    pub booking: BookingSettings,
    pub payment: PaymentSettings,
    pub notification: NotificationSettings,
    pub ticket: TicketSettings,
    pub gateway: GatewaySettings,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
pub struct TelemetrySettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Debug, Deserialize)]
pub struct GrpcSettings {
    pub request_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct PostgresSettings {
    pub url: Secret<String>,
    pub max_connections: u32,
}

#[derive(Clone, Debug, Deserialize)]
pub struct MongoSettings {
    pub url: Secret<String>,
    pub database_prefix: String,
}

impl MongoSettings {
    /// The database a service owns, e.g. `marquee_booking`.
    pub fn database_name(&self, service: &str) -> String {
        format!("{}_{service}", self.database_prefix)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct RedisSettings {
    pub url: Secret<String>,
    pub key_prefix: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RabbitSettings {
    pub url: Secret<String>,
    pub exchange: String,
    pub notification_queue: String,
    /// The ticket service's quorum queue (`booking.confirmed`, `booking.cancelled`).
    pub ticket_queue: String,
    pub prefetch: u16,
    /// Test runs set this so abandoned per-test queues delete themselves (`x-expires`).
    #[serde(default)]
    pub queue_expires_ms: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AuthSettings {
    /// The JWT `iss`; also the key of Kong's jwt_secret.
    pub issuer: String,
    pub jwt_secret: Secret<String>,
    pub access_token_ttl_seconds: i64,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
    /// Password hashes (and verifications) computed at once; 0 = one per CPU core.
    pub hash_concurrency: usize,
    /// Callers that may wait for a hashing slot, per slot; beyond that SERVICE_BUSY at once.
    pub hash_queue_per_slot: usize,
    /// Longest wait for a hashing slot (shorter if the caller's gRPC deadline is nearer).
    pub hash_max_wait_ms: u64,
    /// `HS256` signs with `jwt_secret`; `RS256` with the PEM key files below.
    pub algorithm: JwtAlgorithm,
    /// RS256 only: the signer needs the private key, verifiers only the public one.
    #[serde(default)]
    pub rsa_private_key_path: Option<PathBuf>,
    #[serde(default)]
    pub rsa_public_key_path: Option<PathBuf>,
    pub refresh_token_ttl_seconds: i64,
    /// Failed logins for one email allowed within the window before RATE_LIMITED.
    pub login_max_failures: u32,
    pub login_failure_window_seconds: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum JwtAlgorithm {
    #[serde(rename = "HS256")]
    Hs256,
    #[serde(rename = "RS256")]
    Rs256,
}

#[derive(Clone, Debug, Deserialize)]
pub struct UserSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    /// Created (or promoted) as admin at startup when both are set; idempotent.
    #[serde(default)]
    pub bootstrap_admin_email: Option<String>,
    #[serde(default)]
    pub bootstrap_admin_password: Option<Secret<String>>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct UpstreamSettings {
    pub user_url: String,
    pub cinema_url: String,
    pub booking_url: String,
    pub payment_url: String,
    pub notification_url: String,
    pub ticket_url: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ServerSettings {
    pub host: String,
    /// 0 binds a random free port (tests).
    pub port: u16,
}

impl ServerSettings {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct CinemaSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
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

#[derive(Clone, Debug, Deserialize)]
pub struct BookingSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    pub hold_ttl_seconds: i32,
    pub outbox_poll_ms: u64,
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
    /// How long a saga step may run before recovery presumes its process dead and
    /// resumes it.
    pub saga_lease_ms: u64,
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

#[derive(Clone, Debug, Deserialize)]
pub struct PaymentSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
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

#[derive(Clone, Debug, Deserialize)]
pub struct TicketSettings {
    #[serde(flatten)]
    pub server: ServerSettings,
    /// A ticket admits from this long before its show starts until the show ends.
    pub admit_before_start_minutes: i64,
    /// The keys ticket codes are signed with: exactly one `active` signs new tickets;
    /// the others stay listed (and verify the codes they signed) until removed.
    pub signing_keys: Vec<TicketKeySettings>,
    /// An event whose work failed transiently (MongoDB, cinema) is retried after this
    /// pause, doubling up to `retry_max_ms`, jittered, while its delivery is held.
    pub retry_first_ms: u64,
    pub retry_max_ms: u64,
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

impl Settings {
    /// Loads settings for the environment named by `MARQUEE_ENV` (default `local`).
    pub fn load() -> anyhow::Result<Self> {
        let env = std::env::var("MARQUEE_ENV").unwrap_or_else(|_| "local".to_owned());
        let dir = std::env::var_os("MARQUEE_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("config"));
        Self::load_from(&dir, &env)
    }

    /// Loads `default.toml` and `<env>.toml` from `dir`, then `MARQUEE_*` variables.
    /// `<env>.toml` must exist: a misspelt `MARQUEE_ENV` (say `prodution`) would otherwise
    /// run on the development defaults (GraphiQL and introspection on) without a word.
    pub fn load_from(dir: &Path, env: &str) -> anyhow::Result<Self> {
        let default = dir.join("default.toml");
        anyhow::ensure!(default.is_file(), "config file {} not found", default.display());
        let environment = dir.join(format!("{env}.toml"));
        anyhow::ensure!(
            environment.is_file(),
            "MARQUEE_ENV={env}: there is no {}; the environments are {}",
            environment.display(),
            environments(dir).join(", ")
        );
        let settings: Self = Figment::new()
            .merge(Toml::file(default))
            .merge(Toml::file(environment))
            .merge(Env::prefixed("MARQUEE_").split("__"))
            .extract()
            .with_context(|| format!("invalid configuration in {} (env {env})", dir.display()))?;
        settings
            .validate()
            .with_context(|| format!("inconsistent configuration in {} (env {env})", dir.display()))?;
        Ok(settings)
    }

    /// The settings tests start from: the repository's `config/` with `test.toml`.
    pub fn for_tests() -> anyhow::Result<Self> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        Self::load_from(&dir, "test")
    }
}

/// The environment files in `dir` (every `<name>.toml` but `default.toml`), sorted.
fn environments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|name| name.strip_suffix(".toml").map(str::to_owned))
        .filter(|name| name != "default")
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use figment::Provider as _;
    use figment::value::{Dict, Value};

    use super::*;

    fn config_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
    }

    #[test]
    fn repository_config_loads_and_test_layer_overrides_ports() {
        let settings = Settings::for_tests().unwrap();
        assert_eq!(settings.user.server.port, 0);
        assert_eq!(settings.booking.server.port, 0);
        assert_eq!(settings.booking.hold_ttl_seconds, 480);
        assert_eq!(settings.rabbitmq.exchange, "marquee.events");
        // Secrets load but never print.
        assert!(!format!("{settings:?}").contains(settings.auth.jwt_secret.expose().as_str()));
    }

    /// Keys that may be left out (`Option` fields): default.toml names them in comments.
    const OPTIONAL: [&str; 6] = [
        "rabbitmq.queue_expires_ms",
        "auth.rsa_private_key_path",
        "auth.rsa_public_key_path",
        "user.bootstrap_admin_email",
        "user.bootstrap_admin_password",
        "notification.smtp_url",
    ];

    fn keys(prefix: &str, dict: &Dict, out: &mut Vec<(String, Value)>) {
        for (key, value) in dict {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                Value::Dict(_, inner) => keys(&path, inner, out),
                other => out.push((path, other.clone())),
            }
        }
    }

    fn file_keys(name: &str) -> Vec<(String, Value)> {
        let data = Toml::file(config_dir().join(name)).data().unwrap();
        let mut out = Vec::new();
        for dict in data.values() {
            keys("", dict, &mut out);
        }
        out
    }

    #[test]
    fn default_toml_alone_sets_every_setting() {
        let defaults = Figment::from(Toml::file(config_dir().join("default.toml")));
        let settings: Settings = defaults.extract().unwrap();
        settings.validate().unwrap();
        let text = std::fs::read_to_string(config_dir().join("default.toml")).unwrap();
        for key in OPTIONAL {
            let name = key.rsplit('.').next().unwrap();
            assert!(text.contains(name), "default.toml does not mention the optional key {key}");
        }
    }

    #[test]
    fn environment_files_only_override_defaults() {
        let defaults = file_keys("default.toml");
        let mut files: Vec<String> = std::fs::read_dir(config_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".toml") && name != "default.toml")
            .collect();
        files.sort();
        assert!(files.contains(&"test.toml".to_owned()), "{files:?}");
        for file in files {
            for (key, value) in file_keys(&file) {
                match defaults.iter().find(|(default, _)| *default == key) {
                    Some((_, default)) => {
                        assert_ne!(*default, value, "{file} repeats the default of {key}")
                    }
                    None => assert!(
                        OPTIONAL.contains(&key.as_str()),
                        "{file} sets {key}, which default.toml lacks"
                    ),
                }
            }
        }
    }
}
