//! The settings of a whole mesh: every section of the config files, from which each
//! binary's own `Settings` is cut (`MeshSettings::user`, `::cinema`, …). Only the
//! harness and the benchmarks, which run every service in one process, need them; a
//! deployed binary reads its own sections alone.

use marquee_auth::AuthSettings;
use marquee_booking::settings::BookingSettings;
use marquee_cinema::settings::CinemaSettings;
use marquee_gateway::settings::GatewaySettings;
use marquee_kit::config::{
    Config, GrpcSettings, PostgresSettings, RedisSettings, TelemetrySettings, UpstreamSettings,
};
use marquee_messaging::RabbitSettings;
use marquee_mongo::MongoSettings;
use marquee_notification::settings::NotificationSettings;
use marquee_payment::settings::PaymentSettings;
use marquee_ticket::settings::TicketSettings;
use marquee_user::settings::UserSettings;
use serde::Deserialize;

/// Every section, as the files (and `MARQUEE_*` variables) set them.
#[derive(Clone, Debug, Deserialize)]
pub struct MeshSettings {
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

impl MeshSettings {
    pub fn user(&self) -> marquee_user::Settings {
        marquee_user::Settings {
            telemetry: self.telemetry.clone(),
            grpc: self.grpc.clone(),
            mongo: self.mongo.clone(),
            redis: self.redis.clone(),
            auth: self.auth.clone(),
            user: self.user.clone(),
        }
    }

    pub fn cinema(&self) -> marquee_cinema::Settings {
        marquee_cinema::Settings {
            telemetry: self.telemetry.clone(),
            grpc: self.grpc.clone(),
            postgres: self.postgres.clone(),
            cinema: self.cinema.clone(),
        }
    }

    pub fn payment(&self) -> marquee_payment::Settings {
        marquee_payment::Settings {
            telemetry: self.telemetry.clone(),
            grpc: self.grpc.clone(),
            mongo: self.mongo.clone(),
            rabbitmq: self.rabbitmq.clone(),
            payment: self.payment.clone(),
        }
    }

    pub fn booking(&self) -> marquee_booking::Settings {
        marquee_booking::Settings {
            telemetry: self.telemetry.clone(),
            grpc: self.grpc.clone(),
            mongo: self.mongo.clone(),
            rabbitmq: self.rabbitmq.clone(),
            upstream: self.upstream.clone(),
            booking: self.booking.clone(),
        }
    }

    pub fn ticket(&self) -> marquee_ticket::Settings {
        marquee_ticket::Settings {
            telemetry: self.telemetry.clone(),
            grpc: self.grpc.clone(),
            mongo: self.mongo.clone(),
            rabbitmq: self.rabbitmq.clone(),
            upstream: self.upstream.clone(),
            ticket: self.ticket.clone(),
        }
    }

    pub fn notification(&self) -> marquee_notification::Settings {
        marquee_notification::Settings {
            telemetry: self.telemetry.clone(),
            grpc: self.grpc.clone(),
            mongo: self.mongo.clone(),
            redis: self.redis.clone(),
            rabbitmq: self.rabbitmq.clone(),
            upstream: self.upstream.clone(),
            notification: self.notification.clone(),
        }
    }

    pub fn gateway(&self) -> marquee_gateway::Settings {
        marquee_gateway::Settings {
            telemetry: self.telemetry.clone(),
            grpc: self.grpc.clone(),
            redis: self.redis.clone(),
            auth: self.auth.clone(),
            upstream: self.upstream.clone(),
            gateway: self.gateway.clone(),
        }
    }
}

impl Config for MeshSettings {
    /// Every binary's rules, on the settings it would get; all violations at once.
    fn validate(&self) -> anyhow::Result<()> {
        let results = [
            ("user", self.user().validate()),
            ("cinema", self.cinema().validate()),
            ("payment", self.payment().validate()),
            ("booking", self.booking().validate()),
            ("ticket", self.ticket().validate()),
            ("notification", self.notification().validate()),
            ("gateway", self.gateway().validate()),
        ];
        let problems: Vec<String> = results
            .into_iter()
            .filter_map(|(binary, result)| result.err().map(|error| format!("{binary}: {error:#}")))
            .collect();
        anyhow::ensure!(problems.is_empty(), "{}", problems.join("; "));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;
    use figment::providers::{Format as _, Serialized, Toml};
    use marquee_kit::config::{environments, extract, files, repository_dir};

    use super::*;

    /// What a production deployment must add (`MARQUEE_AUTH__JWT_SECRET`,
    /// `MARQUEE_TICKET__SIGNING_KEYS`); production.toml leaves both out on purpose.
    fn deployment_secrets(figment: Figment) -> Figment {
        let key = serde_json::json!([{
            "id": "prod-1",
            "seed": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "valid_from": "2025-01-01T00:00:00Z",
            "valid_until": "2035-01-01T00:00:00Z",
            "active": true,
        }]);
        figment
            .merge(Serialized::default("auth.jwt_secret", "p".repeat(48)))
            .merge(Serialized::default("ticket.signing_keys", key))
    }

    /// Each binary's settings, read from `figment` the way it reads them at load.
    fn every_binary(figment: &Figment, origin: &str) -> Vec<(&'static str, anyhow::Result<()>)> {
        vec![
            ("user", extract::<marquee_user::Settings>(figment, origin).map(drop)),
            ("cinema", extract::<marquee_cinema::Settings>(figment, origin).map(drop)),
            ("payment", extract::<marquee_payment::Settings>(figment, origin).map(drop)),
            ("booking", extract::<marquee_booking::Settings>(figment, origin).map(drop)),
            ("ticket", extract::<marquee_ticket::Settings>(figment, origin).map(drop)),
            ("notification", extract::<marquee_notification::Settings>(figment, origin).map(drop)),
            ("gateway", extract::<marquee_gateway::Settings>(figment, origin).map(drop)),
            ("mesh", extract::<MeshSettings>(figment, origin).map(drop)),
        ]
    }

    #[test]
    fn default_toml_alone_sets_every_setting_of_every_binary() {
        let defaults = Figment::from(Toml::file(repository_dir().join("default.toml")));
        for (binary, result) in every_binary(&defaults, "default.toml") {
            result.unwrap_or_else(|error| panic!("{binary}: {error:#}"));
        }
    }

    #[test]
    fn every_committed_environment_satisfies_every_rule() {
        let envs = environments(&repository_dir());
        for env in ["local", "test", "chaos", "production"] {
            assert!(envs.contains(&env.to_owned()), "{envs:?}");
        }
        for env in envs {
            let mut layers = files(&repository_dir(), &env);
            if env == "production" {
                layers = deployment_secrets(layers);
            }
            for (binary, result) in every_binary(&layers, &env) {
                result.unwrap_or_else(|error| panic!("{binary} in {env}: {error:#}"));
            }
        }
    }

    #[test]
    fn production_runs_only_with_secrets_of_its_own() {
        let layers = files(&repository_dir(), "production");
        for (binary, result) in every_binary(&layers, "production") {
            let refused = result.err().map(|error| format!("{error:#}"));
            match binary {
                "user" | "gateway" => {
                    let error = refused.unwrap_or_default();
                    assert!(error.contains("auth.jwt_secret has 0 bytes"), "{binary}: {error}");
                }
                "ticket" => {
                    let error = refused.unwrap_or_default();
                    assert!(error.contains("0 active keys"), "{binary}: {error}");
                }
                "mesh" => assert!(refused.is_some()),
                // They read neither [auth] nor the ticket keys.
                _ => assert_eq!(refused, None, "{binary}"),
            }
        }
    }

    #[test]
    fn a_mesh_reports_every_binary_s_violation_at_once() {
        let mut settings = MeshSettings::for_tests().unwrap();
        settings.validate().unwrap();
        settings.booking.pay_wait_ms = settings.grpc.request_timeout_ms;
        settings.notification.retry_first_ms = settings.notification.retry_max_ms + 1;
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("booking: booking.pay_wait_ms")
                && error.contains("notification: notification.retry_first_ms"),
            "{error}"
        );
    }
}
