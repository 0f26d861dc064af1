//! Access tokens: the `[auth]` section, the claims the user service signs and every
//! other hop verifies, and roles.
//!
//! HS256 with the secret from config (default) or RS256 with PEM key files; the
//! configured `alg` is pinned on verification, and `iss`, `exp` and `nbf` are always
//! checked. The user id is the token's `sub`. Logged-out tokens are denied by `jti`
//! in Redis under [`denied_jti_key`]: the user service writes it, the gateway reads it.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use marquee_kit::Secret;
use serde::{Deserialize, Serialize};

/// `[auth]`: read by the user service (which signs tokens and hashes passwords) and
/// the gateway (which verifies tokens).
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

/// HS256 keys shorter than its 256-bit output are guessable offline from one token.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

impl AuthSettings {
    /// The rule every binary that reads `[auth]` checks at load: an HS256 secret long
    /// enough (production.toml leaves it empty on purpose, so a deployment must set it).
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.algorithm == JwtAlgorithm::Hs256 {
            let bytes = self.jwt_secret.expose().len();
            anyhow::ensure!(
                bytes >= MIN_HS256_SECRET_BYTES,
                "auth.jwt_secret has {bytes} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES}: \
                 set MARQUEE_AUTH__JWT_SECRET (production.toml leaves it empty on purpose)"
            );
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Staff,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Staff => "staff",
            Self::Admin => "admin",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY_SECONDS: i64 = 5;

/// The Redis key that denies one access token (by `jti`) until it expires.
pub fn denied_jti_key(redis_prefix: &str, jti: &str) -> String {
    format!("{redis_prefix}auth:denied-jti:{jti}")
}

/// Signs and verifies access tokens with one configured key.
#[derive(Clone)]
pub struct TokenKeys {
    issuer: String,
    ttl: chrono::Duration,
    algorithm: Algorithm,
    /// `None` for an RS256 verifier that was given only the public key.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
}

/// Why a token was refused. Deliberately coarse: clients only learn UNAUTHENTICATED.
#[derive(Debug, thiserror::Error)]
#[error("invalid access token: {0}")]
pub struct InvalidToken(#[from] jsonwebtoken::errors::Error);

impl TokenKeys {
    pub fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        anyhow::ensure!(
            settings.access_token_ttl_seconds > 0,
            "auth.access_token_ttl_seconds must be positive"
        );
        let (algorithm, encoding, decoding) = match settings.algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = settings.jwt_secret.expose().as_bytes();
                anyhow::ensure!(
                    secret.len() >= MIN_HS256_SECRET_BYTES,
                    "auth.jwt_secret must be at least {MIN_HS256_SECRET_BYTES} bytes"
                );
                (Algorithm::HS256, Some(EncodingKey::from_secret(secret)), DecodingKey::from_secret(secret))
            }
            JwtAlgorithm::Rs256 => {
                let public = settings
                    .rsa_public_key_path
                    .as_deref()
                    .context("auth.rsa_public_key_path is required for RS256")?;
                let public = std::fs::read(public)
                    .with_context(|| format!("cannot read RSA public key {}", public.display()))?;
                let decoding = DecodingKey::from_rsa_pem(&public).context("invalid RSA public key PEM")?;
                let encoding = match settings.rsa_private_key_path.as_deref() {
                    Some(path) => {
                        let private = std::fs::read(path)
                            .with_context(|| format!("cannot read RSA private key {}", path.display()))?;
                        Some(EncodingKey::from_rsa_pem(&private).context("invalid RSA private key PEM")?)
                    }
                    None => None,
                };
                (Algorithm::RS256, encoding, decoding)
            }
        };
        Ok(Self {
            issuer: settings.issuer.clone(),
            ttl: chrono::Duration::seconds(settings.access_token_ttl_seconds),
            algorithm,
            encoding,
            decoding,
        })
    }

    /// Issues a token for `user_id`; returns it with its expiry.
    pub fn issue(
        &self,
        user_id: &str,
        role: Role,
        now: DateTime<Utc>,
    ) -> anyhow::Result<(String, DateTime<Utc>)> {
        let expires_at = now + self.ttl;
        let claims = Claims {
            sub: user_id.to_owned(),
            role,
            iss: self.issuer.clone(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let encoding =
            self.encoding.as_ref().context("no signing key: auth.rsa_private_key_path is unset")?;
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, encoding)
            .context("cannot sign access token")?;
        Ok((token, expires_at))
    }

    /// Verifies signature (the configured `alg` only), issuer, `exp` and `nbf`.
    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let mut validation = Validation::new(self.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS.unsigned_abs();
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: &str, issuer: &str) -> AuthSettings {
        AuthSettings {
            issuer: issuer.to_owned(),
            jwt_secret: Secret::new(secret.to_owned()),
            access_token_ttl_seconds: 900,
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            hash_concurrency: 0,
            hash_queue_per_slot: 2,
            hash_max_wait_ms: 1000,
            algorithm: JwtAlgorithm::Hs256,
            rsa_private_key_path: None,
            rsa_public_key_path: None,
            refresh_token_ttl_seconds: 3600,
            login_max_failures: 5,
            login_failure_window_seconds: 900,
        }
    }

    fn rs256(private: Option<&str>, public: &str) -> AuthSettings {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        AuthSettings {
            algorithm: JwtAlgorithm::Rs256,
            rsa_private_key_path: private.map(|name| dir.join(name)),
            rsa_public_key_path: Some(dir.join(public)),
            ..settings(SECRET, "marquee-user")
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn issued_tokens_verify_and_carry_the_user() {
        let keys = TokenKeys::new(&settings(SECRET, "marquee-user")).unwrap();
        let (token, exp) = keys.issue("u1", Role::Customer, Utc::now()).unwrap();
        let claims = keys.verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role, claims.exp), ("u1", Role::Customer, exp.timestamp()));
    }

    #[test]
    fn rejects_wrong_key_wrong_issuer_expired_and_alg_none() {
        let keys = TokenKeys::new(&settings(SECRET, "marquee-user")).unwrap();
        let other_key =
            TokenKeys::new(&settings("ffffffffffffffffffffffffffffffff", "marquee-user")).unwrap();
        let other_iss = TokenKeys::new(&settings(SECRET, "someone-else")).unwrap();

        let (forged, _) = other_key.issue("u1", Role::Admin, Utc::now()).unwrap();
        assert!(keys.verify(&forged).is_err());
        let (wrong_iss, _) = other_iss.issue("u1", Role::Customer, Utc::now()).unwrap();
        assert!(keys.verify(&wrong_iss).is_err());
        let (expired, _) = keys.issue("u1", Role::Customer, Utc::now() - chrono::Duration::hours(1)).unwrap();
        assert!(keys.verify(&expired).is_err());

        // alg "none": header {"alg":"none","typ":"JWT"} with valid-looking claims, no signature.
        let (good, _) = keys.issue("u1", Role::Customer, Utc::now()).unwrap();
        let payload = good.split('.').nth(1).unwrap();
        let none_token = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(keys.verify(&none_token).is_err());
    }

    #[test]
    fn rs256_tokens_verify_with_the_public_key_alone_and_alg_is_pinned() {
        let signer = TokenKeys::new(&rs256(Some("rs256-private.pem"), "rs256-public.pem")).unwrap();
        let verifier = TokenKeys::new(&rs256(None, "rs256-public.pem")).unwrap();
        let (token, _) = signer.issue("u1", Role::Staff, Utc::now()).unwrap();
        assert_eq!(jsonwebtoken::decode_header(&token).unwrap().alg, Algorithm::RS256);
        assert_eq!(verifier.verify(&token).unwrap().role, Role::Staff);
        assert!(verifier.issue("u1", Role::Staff, Utc::now()).is_err());

        // A key pair we did not configure, and an HS256 token, are both refused.
        let other = TokenKeys::new(&rs256(Some("rs256-other-private.pem"), "rs256-public.pem")).unwrap();
        let (forged, _) = other.issue("u1", Role::Admin, Utc::now()).unwrap();
        assert!(verifier.verify(&forged).is_err());
        let hs = TokenKeys::new(&settings(SECRET, "marquee-user")).unwrap();
        let (hs_token, _) = hs.issue("u1", Role::Admin, Utc::now()).unwrap();
        assert!(verifier.verify(&hs_token).is_err());
        assert!(hs.verify(&token).is_err());
    }

    #[test]
    fn hs256_refuses_a_short_or_missing_secret() {
        let mut settings = settings("", "marquee-user");
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("MARQUEE_AUTH__JWT_SECRET") && error.contains("has 0 bytes"), "{error}");
        settings.jwt_secret = Secret::new("x".repeat(MIN_HS256_SECRET_BYTES - 1));
        assert!(settings.validate().is_err());
        settings.jwt_secret = Secret::new("x".repeat(MIN_HS256_SECRET_BYTES));
        settings.validate().unwrap();
        // RS256 signs with key files: the secret is not used.
        let rs256 =
            AuthSettings { jwt_secret: Secret::new(String::new()), ..rs256(None, "rs256-public.pem") };
        rs256.validate().unwrap();
    }
}
