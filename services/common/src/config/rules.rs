//! Rules between settings that no single field can state but the code relies on.
//! `Settings::load_from` checks them, so a bad combination fails at startup with both
//! keys named, instead of showing up as timeouts under load.

use super::{JwtAlgorithm, PaymentSettings, Settings, TicketSettings};

/// HS256 keys shorter than its 256-bit output are guessable offline from one token.
const MIN_HS256_SECRET_BYTES: usize = 32;

/// `lower` must stay below `upper` (or at most equal, when `or_equal`).
struct Rule {
    lower: (&'static str, u64),
    upper: (&'static str, u64),
    or_equal: bool,
    /// What goes wrong otherwise.
    why: &'static str,
}

impl Rule {
    fn below(lower: (&'static str, u64), upper: (&'static str, u64), why: &'static str) -> Self {
        Self { lower, upper, or_equal: false, why }
    }

    fn at_most(lower: (&'static str, u64), upper: (&'static str, u64), why: &'static str) -> Self {
        Self { lower, upper, or_equal: true, why }
    }

    fn violation(&self) -> Option<String> {
        let ((low_key, low), (up_key, up)) = (self.lower, self.upper);
        let holds = if self.or_equal { low <= up } else { low < up };
        let relation = if self.or_equal { "at most" } else { "below" };
        (!holds).then(|| format!("{low_key} ({low}) must be {relation} {up_key} ({up}): {}", self.why))
    }
}

fn check(rules: &[Rule]) -> anyhow::Result<()> {
    let violations: Vec<String> = rules.iter().filter_map(Rule::violation).collect();
    anyhow::ensure!(violations.is_empty(), "{}", violations.join("; "));
    Ok(())
}

impl Settings {
    /// Checks every rule between fields; the error names each one violated.
    pub fn validate(&self) -> anyhow::Result<()> {
        // The gateway's (and booking's) deadline on every upstream call.
        let deadline = ("grpc.request_timeout_ms", self.grpc.request_timeout_ms);
        let mut rules = vec![
            Rule::below(
                ("booking.pay_wait_ms", self.booking.pay_wait_ms),
                deadline,
                "a repeated payBooking would still be waiting when the gateway gives up on it",
            ),
            Rule::below(
                ("auth.hash_max_wait_ms", self.auth.hash_max_wait_ms),
                deadline,
                "a register or login would queue for a hashing slot past the gateway's deadline \
                 instead of being refused with SERVICE_BUSY",
            ),
            Rule::below(
                ("payment.charge_wait_ms", self.payment.charge_wait_ms),
                deadline,
                "a repeated charge would run into booking's deadline instead of answering ABORTED",
            ),
            Rule::below(
                ("payment.slow_card_delay_ms", self.payment.slow_card_delay_ms),
                ("booking.saga_lease_ms", self.booking.saga_lease_ms),
                "recovery would resume a slow-card payment while it is still running",
            ),
            Rule::at_most(
                ("notification.retry_first_ms", self.notification.retry_first_ms),
                ("notification.retry_max_ms", self.notification.retry_max_ms),
                "the retry backoff could not grow from its first step to its cap",
            ),
        ];
        rules.extend(self.payment.rules());
        check(&rules)?;
        if self.auth.algorithm == JwtAlgorithm::Hs256 {
            let bytes = self.auth.jwt_secret.expose().len();
            anyhow::ensure!(
                bytes >= MIN_HS256_SECRET_BYTES,
                "auth.jwt_secret has {bytes} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES}: \
                 set MARQUEE_AUTH__JWT_SECRET (production.toml leaves it empty on purpose)"
            );
        }
        Ok(())
    }
}

impl PaymentSettings {
    /// The payment service's own rules; its `Application::build` checks them too.
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

/// A key id travels in every ticket code, length-prefixed by one byte; short ids keep
/// the QR code small.
pub const MAX_TICKET_KEY_ID_BYTES: usize = 32;

impl TicketSettings {
    /// The ticket service's own rules (only it holds the signing keys, so only its
    /// `Application::build` checks them): production lists no key, so the service
    /// refuses to start there until keys of its own are configured.
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
    use std::path::Path;

    use super::*;

    fn settings() -> Settings {
        Settings::for_tests().unwrap()
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
    fn pay_wait_stays_below_the_upstream_deadline() {
        assert_valid(|s| s.booking.pay_wait_ms = s.grpc.request_timeout_ms - 1);
        assert_violates(
            |s| s.booking.pay_wait_ms = s.grpc.request_timeout_ms,
            "booking.pay_wait_ms",
            "grpc.request_timeout_ms",
        );
    }

    #[test]
    fn hash_slot_wait_stays_below_the_upstream_deadline() {
        assert_valid(|s| s.auth.hash_max_wait_ms = s.grpc.request_timeout_ms - 1);
        assert_violates(
            |s| s.grpc.request_timeout_ms = s.auth.hash_max_wait_ms,
            "auth.hash_max_wait_ms",
            "grpc.request_timeout_ms",
        );
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
    fn saga_lease_outlasts_the_slow_card() {
        assert_valid(|s| s.booking.saga_lease_ms = s.payment.slow_card_delay_ms + 1);
        assert_violates(
            |s| s.booking.saga_lease_ms = s.payment.slow_card_delay_ms,
            "payment.slow_card_delay_ms",
            "booking.saga_lease_ms",
        );
    }

    #[test]
    fn retry_backoff_starts_at_most_at_its_cap() {
        assert_valid(|s| s.notification.retry_first_ms = s.notification.retry_max_ms);
        assert_violates(
            |s| s.notification.retry_first_ms = s.notification.retry_max_ms + 1,
            "notification.retry_first_ms",
            "notification.retry_max_ms",
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
        settings.booking.pay_wait_ms = settings.grpc.request_timeout_ms;
        settings.notification.retry_first_ms = settings.notification.retry_max_ms + 1;
        let error = settings.validate().unwrap_err().to_string();
        assert!(
            error.contains("booking.pay_wait_ms") && error.contains("notification.retry_first_ms"),
            "{error}"
        );
    }

    #[test]
    fn loading_refuses_an_inconsistent_environment_file() {
        let dir = std::env::temp_dir().join(format!("marquee-config-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        std::fs::copy(repository.join("default.toml"), dir.join("default.toml")).unwrap();
        std::fs::write(dir.join("broken.toml"), "[booking]\npay_wait_ms = 9000\n").unwrap();

        std::fs::write(dir.join("fine.toml"), "[booking]\npay_wait_ms = 3000\n").unwrap();
        let loaded = Settings::load_from(&dir, "broken");
        let fine = Settings::load_from(&dir, "fine");
        let misspelt = Settings::load_from(&dir, "brokn");
        std::fs::remove_dir_all(&dir).unwrap();

        let error = format!("{:#}", loaded.unwrap_err());
        assert!(
            error.contains("booking.pay_wait_ms (9000) must be below grpc.request_timeout_ms ("),
            "{error}"
        );
        fine.unwrap();
        let error = format!("{:#}", misspelt.unwrap_err());
        assert!(error.contains("MARQUEE_ENV=brokn") && error.contains("broken, fine"), "{error}");
    }

    #[test]
    fn hs256_refuses_a_short_or_missing_secret() {
        let mut settings = settings();
        settings.auth.algorithm = JwtAlgorithm::Hs256;
        settings.auth.jwt_secret = crate::Secret::new(String::new());
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("MARQUEE_AUTH__JWT_SECRET"), "{error}");
        settings.auth.jwt_secret = crate::Secret::new("x".repeat(MIN_HS256_SECRET_BYTES));
        settings.validate().unwrap();
    }

    #[test]
    fn ticket_keys_need_exactly_one_active_key() {
        let mut ticket = settings().ticket;
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
        use figment::providers::{Format as _, Toml};

        // Loading production stops at the missing JWT secret; read the files as layered.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let figment = figment::Figment::new()
            .merge(Toml::file(dir.join("default.toml")))
            .merge(Toml::file(dir.join("production.toml")));
        let settings: Settings = figment.extract().unwrap();
        let error = settings.ticket.validate().unwrap_err().to_string();
        assert!(error.contains("0 active keys"), "{error}");
    }

    #[test]
    fn production_runs_only_with_a_secret_of_its_own() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let error = format!("{:#}", Settings::load_from(&dir, "production").unwrap_err());
        assert!(error.contains("auth.jwt_secret has 0 bytes"), "{error}");
    }
}
