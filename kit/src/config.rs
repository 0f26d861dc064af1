//! Typed, layered configuration: how every binary loads its settings, and the
//! sections several binaries share.
//!
//! Layers, later wins: `config/default.toml`, `config/<env>.toml` (env from
//! `MARQUEE_ENV`, default `local`), then `MARQUEE_<SECTION>__<KEY>` variables.
//! The config directory is `MARQUEE_CONFIG_DIR`, else `./config`.
//!
//! Each binary has a `Settings` of its own: the shared sections it needs (here,
//! `marquee_mongo`, `marquee_messaging`, `marquee_auth`) and its own section, and reads
//! nothing else from the layers (`load`). The files stay one set for the whole mesh.
//!
//! `config/default.toml` is the one home of every default: no field has a serde
//! default of its own, so a key missing from it fails the load instead of silently
//! taking a second, different value. Only `Option` fields may be absent (unset); the
//! environment files only override. Rules between fields are checked at load, by the
//! binary that owns the lower key (`Config::validate`, `rules`).

mod rules;

use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use self::rules::{Rule, check};
use crate::secret::Secret;

/// A binary's settings: the sections it reads, and the rules between their keys.
pub trait Config: DeserializeOwned {
    /// Checks every rule between this binary's keys (`Rule`, `check`); the error names
    /// each one violated. Every load calls it.
    fn validate(&self) -> anyhow::Result<()>;

    /// `load`: the environment named by `MARQUEE_ENV`, checked.
    fn load() -> anyhow::Result<Self> {
        load()
    }

    /// `load_from`: `dir`'s files for `env`, then the variables, checked.
    fn load_from(dir: &Path, env: &str) -> anyhow::Result<Self> {
        load_from(dir, env)
    }

    /// `for_tests`: the repository's `config/` with `test.toml`.
    fn for_tests() -> anyhow::Result<Self> {
        for_tests()
    }
}

/// Loads `T` for the environment named by `MARQUEE_ENV` (default `local`) from
/// `MARQUEE_CONFIG_DIR` (default `./config`).
pub fn load<T: Config>() -> anyhow::Result<T> {
    let env = std::env::var("MARQUEE_ENV").unwrap_or_else(|_| "local".to_owned());
    let dir =
        std::env::var_os("MARQUEE_CONFIG_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("config"));
    load_from(&dir, &env)
}

/// Loads `default.toml` and `<env>.toml` from `dir`, then `MARQUEE_*` variables, and
/// checks `T`'s rules.
pub fn load_from<T: Config>(dir: &Path, env: &str) -> anyhow::Result<T> {
    extract(&layers(dir, env)?, &format!("{} (env {env})", dir.display()))
}

/// The settings tests start from: the repository's `config/` with `test.toml`.
pub fn for_tests<T: Config>() -> anyhow::Result<T> {
    load_from(&repository_dir(), "test")
}

/// The repository's `config/` directory (tests).
pub fn repository_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

/// The layers of `dir` for `env`, not yet read. `<env>.toml` must exist: a misspelt
/// `MARQUEE_ENV` (say `prodution`) would otherwise run on the development defaults
/// (GraphiQL and introspection on) without a word.
pub fn layers(dir: &Path, env: &str) -> anyhow::Result<Figment> {
    let default = dir.join("default.toml");
    anyhow::ensure!(default.is_file(), "config file {} not found", default.display());
    let environment = dir.join(format!("{env}.toml"));
    anyhow::ensure!(
        environment.is_file(),
        "MARQUEE_ENV={env}: there is no {}; the environments are {}",
        environment.display(),
        environments(dir).join(", ")
    );
    Ok(files(dir, env).merge(Env::prefixed("MARQUEE_").split("__")))
}

/// The committed files alone, `default.toml` then `<env>.toml`, without the variables
/// of whoever runs this (tests of the files themselves).
pub fn files(dir: &Path, env: &str) -> Figment {
    Figment::new()
        .merge(Toml::file(dir.join("default.toml")))
        .merge(Toml::file(dir.join(format!("{env}.toml"))))
}

/// Reads `T`'s sections out of `figment` and checks its rules; `origin` names where
/// the layers came from in the error.
pub fn extract<T: Config>(figment: &Figment, origin: &str) -> anyhow::Result<T> {
    let settings: T = figment.extract().with_context(|| format!("invalid configuration in {origin}"))?;
    settings.validate().with_context(|| format!("inconsistent configuration in {origin}"))?;
    Ok(settings)
}

/// The environment files in `dir` (every `<name>.toml` but `default.toml`), sorted.
pub fn environments(dir: &Path) -> Vec<String> {
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

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

/// `[telemetry]`: every binary.
#[derive(Clone, Debug, Deserialize)]
pub struct TelemetrySettings {
    pub level: String,
    pub format: LogFormat,
    /// Where spans are exported over OTLP/gRPC (e.g. `http://otel-collector:4317`);
    /// empty exports nothing (trace context still propagates, logs still carry ids).
    pub otlp_endpoint: String,
    /// The share of new traces recorded, 0.0 to 1.0; a trace continued from a caller
    /// keeps the caller's decision (parent-based), so a trace is whole or absent.
    pub sampling_ratio: f64,
    /// `service.name` on exported spans; empty means the executable's name
    /// (`marquee-booking`, ...).
    pub service_name: String,
}

/// `[grpc]`: every gRPC server and client.
#[derive(Clone, Debug, Deserialize)]
pub struct GrpcSettings {
    pub request_timeout_ms: u64,
    pub shutdown_grace_ms: u64,
    /// How often a balanced upstream channel re-resolves and health-checks its replicas.
    pub discovery_interval_ms: u64,
}

/// `[postgres]`: cinema's database.
#[derive(Clone, Debug, Deserialize)]
pub struct PostgresSettings {
    pub url: Secret<String>,
    pub max_connections: u32,
}

/// `[redis]`: user, notification and the gateway.
#[derive(Clone, Debug, Deserialize)]
pub struct RedisSettings {
    pub url: Secret<String>,
    pub key_prefix: String,
}

/// `[upstream]`: where the services that call others find them.
#[derive(Clone, Debug, Deserialize)]
pub struct UpstreamSettings {
    pub user_url: String,
    pub cinema_url: String,
    pub booking_url: String,
    pub payment_url: String,
    pub notification_url: String,
    pub ticket_url: String,
}

/// The listening address in every service's own section (`host`, `port`), flattened.
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

#[cfg(test)]
mod tests {
    use figment::Provider as _;
    use figment::value::{Dict, Value};

    use super::*;

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
        let data = Toml::file(repository_dir().join(name)).data().unwrap();
        let mut out = Vec::new();
        for dict in data.values() {
            keys("", dict, &mut out);
        }
        out
    }

    #[derive(Debug, Deserialize)]
    struct Shared {
        telemetry: TelemetrySettings,
        grpc: GrpcSettings,
        postgres: PostgresSettings,
        redis: RedisSettings,
        upstream: UpstreamSettings,
    }

    impl Config for Shared {
        fn validate(&self) -> anyhow::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_shared_sections_load_and_secrets_never_print() {
        let shared: Shared = for_tests().unwrap();
        assert!(shared.grpc.request_timeout_ms > 0);
        assert_eq!(shared.telemetry.format, LogFormat::Pretty);
        assert!(!shared.upstream.cinema_url.is_empty());
        assert!(!format!("{shared:?}").contains(shared.redis.url.expose().as_str()));
        assert!(shared.postgres.max_connections > 0);
    }

    #[test]
    fn default_toml_names_every_optional_key() {
        let text = std::fs::read_to_string(repository_dir().join("default.toml")).unwrap();
        for key in OPTIONAL {
            let name = key.rsplit('.').next().unwrap();
            assert!(text.contains(name), "default.toml does not mention the optional key {key}");
        }
    }

    #[test]
    fn environment_files_only_override_defaults() {
        let defaults = file_keys("default.toml");
        let files = environments(&repository_dir());
        assert!(files.contains(&"test".to_owned()), "{files:?}");
        for file in files.iter().map(|name| format!("{name}.toml")) {
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

    #[test]
    fn loading_refuses_a_misspelt_environment() {
        let dir = std::env::temp_dir().join(format!("marquee-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(repository_dir().join("default.toml"), dir.join("default.toml")).unwrap();
        std::fs::write(dir.join("broken.toml"), "[grpc]\nrequest_timeout_ms = 9000\n").unwrap();
        std::fs::write(dir.join("fine.toml"), "[grpc]\nrequest_timeout_ms = 3000\n").unwrap();
        let fine: anyhow::Result<Shared> = load_from(&dir, "fine");
        let misspelt: anyhow::Result<Shared> = load_from(&dir, "brokn");
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(fine.unwrap().grpc.request_timeout_ms, 3000);
        let error = format!("{:#}", misspelt.unwrap_err());
        assert!(error.contains("MARQUEE_ENV=brokn") && error.contains("broken, fine"), "{error}");
    }
}
