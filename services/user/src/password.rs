//! argon2id password hashing. Both hashing and verification burn CPU for tens of
//! milliseconds by design, so they run on tokio's blocking pool, never on a worker,
//! and under a bound sized to the cores: an overload is refused (SERVICE_BUSY) rather
//! than queued until every caller has timed out.

use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::Context;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use marquee_auth::AuthSettings;
use marquee_kit::Secret;
use tokio::time::Instant;

use crate::pool::{CpuPool, PoolError};

/// Hashes and verifies passwords with the configured cost, a bounded number at a time.
#[derive(Clone)]
pub struct PasswordHasherService {
    params: Params,
    pool: CpuPool,
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
        let slots = match settings.hash_concurrency {
            0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            n => n,
        };
        let max_wait = Duration::from_millis(settings.hash_max_wait_ms);
        let pool = CpuPool::new(slots, settings.hash_queue_per_slot, max_wait);
        tracing::info!(slots, queue_per_slot = settings.hash_queue_per_slot, "password hashing bounded");
        let mut service = Self { params, pool, dummy_hash: String::new() };
        let dummy = uuid::Uuid::new_v4().to_string();
        service.dummy_hash =
            service.hash(Secret::new(dummy), None).await.context("cannot compute the dummy hash")?;
        Ok(service)
    }

    /// Returns a PHC string (`$argon2id$v=19$m=…`) with a fresh random salt.
    /// `deadline` is when the caller stops waiting, if known.
    pub async fn hash(
        &self,
        password: Secret<String>,
        deadline: Option<Instant>,
    ) -> Result<String, PoolError> {
        let argon2 = self.argon2();
        self.pool
            .run(deadline, move || {
                argon2
                    .hash_password(password.expose().as_bytes())
                    .map(|hash| hash.to_string())
                    .map_err(|e| anyhow::anyhow!("argon2 hashing failed: {e}"))
            })
            .await
    }

    /// True when `password` matches `stored`; a corrupt stored hash is an error.
    pub async fn verify(
        &self,
        password: Secret<String>,
        stored: String,
        deadline: Option<Instant>,
    ) -> Result<bool, PoolError> {
        let argon2 = self.argon2();
        self.pool
            .run(deadline, move || {
                let parsed = PasswordHash::new(&stored)
                    .map_err(|e| anyhow::anyhow!("stored password hash is corrupt: {e}"))?;
                match argon2.verify_password(password.expose().as_bytes(), &parsed) {
                    Ok(()) => Ok(true),
                    Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
                    Err(e) => Err(anyhow::anyhow!("argon2 verification failed: {e}")),
                }
            })
            .await
    }

    /// Spends the same work as a real verification (and waits in the same queue), and
    /// always fails.
    pub async fn verify_dummy(
        &self,
        password: Secret<String>,
        deadline: Option<Instant>,
    ) -> Result<bool, PoolError> {
        self.verify(password, self.dummy_hash.clone(), deadline).await.map(|_| false)
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
            hash_concurrency: 0,
            hash_queue_per_slot: 2,
            hash_max_wait_ms: 1000,
            algorithm: marquee_auth::JwtAlgorithm::Hs256,
            rsa_private_key_path: None,
            rsa_public_key_path: None,
            refresh_token_ttl_seconds: 3600,
            login_max_failures: 5,
            login_failure_window_seconds: 900,
        }
    }

    fn secret(password: &str) -> Secret<String> {
        Secret::new(password.to_owned())
    }

    #[tokio::test]
    async fn hashes_are_salted_argon2id_and_verify() {
        let hasher = PasswordHasherService::new(&settings()).await.unwrap();
        let first = hasher.hash(secret("correct horse"), None).await.unwrap();
        let second = hasher.hash(secret("correct horse"), None).await.unwrap();
        assert!(first.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert_ne!(first, second);
        assert!(hasher.verify(secret("correct horse"), first.clone(), None).await.unwrap());
        assert!(!hasher.verify(secret("wrong horse"), first, None).await.unwrap());
        assert!(!hasher.verify_dummy(secret("correct horse"), None).await.unwrap());
        assert!(hasher.verify(secret("x"), "not a hash".to_owned(), None).await.is_err());
    }

    #[tokio::test]
    async fn hashing_and_every_verification_are_refused_when_the_bound_is_full() {
        let settings = AuthSettings { hash_concurrency: 1, hash_queue_per_slot: 0, ..settings() };
        let hasher = PasswordHasherService::new(&settings).await.unwrap();
        let stored = hasher.hash(secret("correct horse"), None).await.unwrap();
        // Hold the only slot with work that ends when the test says so.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let occupied = hasher.pool.run(None, move || {
            let _ = gate.recv();
            Ok(())
        });
        tokio::pin!(occupied);
        assert!(futures::poll!(&mut occupied).is_pending());

        assert!(matches!(hasher.hash(secret("another horse"), None).await, Err(PoolError::Busy)));
        assert!(matches!(
            hasher.verify(secret("correct horse"), stored.clone(), None).await,
            Err(PoolError::Busy)
        ));
        assert!(matches!(hasher.verify_dummy(secret("correct horse"), None).await, Err(PoolError::Busy)));

        drop(release);
        occupied.await.unwrap();
        assert!(hasher.verify(secret("correct horse"), stored, None).await.unwrap());
    }
}
