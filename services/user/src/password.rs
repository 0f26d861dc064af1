//! argon2id password hashing. Both hashing and verification burn CPU for tens of
//! milliseconds by design, so they run on tokio's blocking pool, never on a worker.

use anyhow::Context;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use marquee_common::Secret;
use marquee_common::config::AuthSettings;

/// Hashes and verifies passwords with the configured cost.
#[derive(Clone)]
pub struct PasswordHasherService {
    params: Params,
    /// Verified when the email is unknown, so that answer costs as much as a wrong password.
    dummy_hash: String,
}

impl PasswordHasherService {
    pub async fn new(settings: &AuthSettings) -> anyhow::Result<Self> {
        let params = Params::new(
            settings.argon2_memory_kib,
            settings.argon2_iterations,
            settings.argon2_parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let mut service = Self { params, dummy_hash: String::new() };
        let dummy = uuid::Uuid::new_v4().to_string();
        service.dummy_hash =
            service.hash(Secret::new(dummy)).await.context("cannot compute the dummy hash")?;
        Ok(service)
    }

    /// Returns a PHC string (`$argon2id$v=19$m=…`) with a fresh random salt.
    pub async fn hash(&self, password: Secret<String>) -> anyhow::Result<String> {
        let argon2 = self.argon2();
        tokio::task::spawn_blocking(move || {
            argon2
                .hash_password(password.expose().as_bytes())
                .map(|hash| hash.to_string())
                .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
        })
        .await
        .context("password hashing task failed")?
    }

    /// True when `password` matches `stored`; a corrupt stored hash is an error.
    pub async fn verify(&self, password: Secret<String>, stored: String) -> anyhow::Result<bool> {
        let argon2 = self.argon2();
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&stored)
                .map_err(|e| anyhow::anyhow!("stored password hash is corrupt: {e}"))?;
            match argon2.verify_password(password.expose().as_bytes(), &parsed) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                Err(e) => Err(anyhow::anyhow!("argon2 verification failed: {e}")),
            }
        })
        .await
        .context("password verification task failed")?
    }

    /// Spends the same work as a real verification and always fails.
    pub async fn verify_dummy(&self, password: Secret<String>) -> anyhow::Result<bool> {
        self.verify(password, self.dummy_hash.clone()).await.map(|_| false)
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings() -> AuthSettings {
        AuthSettings {
            issuer: "test".to_owned(),
            jwt_secret: Secret::new("x".repeat(32)),
            access_token_ttl_seconds: 60,
            argon2_memory_kib: 1024,
            argon2_iterations: 1,
            argon2_parallelism: 1,
            algorithm: marquee_common::config::JwtAlgorithm::Hs256,
            rsa_private_key_path: None,
            rsa_public_key_path: None,
            refresh_token_ttl_seconds: 3600,
            login_max_failures: 5,
            login_failure_window_seconds: 900,
        }
    }

    #[tokio::test]
    async fn hashes_are_salted_argon2id_and_verify() {
        let hasher = PasswordHasherService::new(&settings()).await.unwrap();
        let first = hasher.hash(Secret::new("correct horse".to_owned())).await.unwrap();
        let second = hasher.hash(Secret::new("correct horse".to_owned())).await.unwrap();
        assert!(first.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_ne!(first, second);
        assert!(hasher.verify(Secret::new("correct horse".to_owned()), first.clone()).await.unwrap());
        assert!(!hasher.verify(Secret::new("wrong horse".to_owned()), first).await.unwrap());
        assert!(!hasher.verify_dummy(Secret::new("correct horse".to_owned())).await.unwrap());
        assert!(hasher.verify(Secret::new("x".to_owned()), "not a hash".to_owned()).await.is_err());
    }
}
