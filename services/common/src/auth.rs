//! Access tokens: the claims the user service signs and every other hop verifies.
//!
//! HS256 with the secret from config; `alg` is pinned on verification, and `iss`,
//! `exp` and `nbf` are always checked. The user id is the token's `sub`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthSettings;

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

/// Signs and verifies access tokens with one configured key.
#[derive(Clone)]
pub struct TokenKeys {
    issuer: String,
    ttl: chrono::Duration,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

/// Why a token was refused. Deliberately coarse: clients only learn UNAUTHENTICATED.
#[derive(Debug, thiserror::Error)]
#[error("invalid access token: {0}")]
pub struct InvalidToken(#[from] jsonwebtoken::errors::Error);

impl TokenKeys {
    pub fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        let secret = settings.jwt_secret.expose().as_bytes();
        anyhow::ensure!(secret.len() >= 32, "auth.jwt_secret must be at least 32 bytes");
        anyhow::ensure!(
            settings.access_token_ttl_seconds > 0,
            "auth.access_token_ttl_seconds must be positive"
        );
        Ok(Self {
            issuer: settings.issuer.clone(),
            ttl: chrono::Duration::seconds(settings.access_token_ttl_seconds),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
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
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .context("cannot sign access token")?;
        Ok((token, expires_at))
    }

    /// Verifies signature (HS256 only), issuer, `exp` and `nbf`.
    pub fn verify(&self, token: &str) -> Result<Claims, InvalidToken> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        Ok(jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)?.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn settings(secret: &str, issuer: &str) -> AuthSettings {
        AuthSettings {
            issuer: issuer.to_owned(),
            jwt_secret: Secret::new(secret.to_owned()),
            access_token_ttl_seconds: 900,
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
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
}
