//! Failed-login throttling per email in Redis: a fixed window that starts at the
//! first failure. Once the window holds `max_failures`, every attempt for that email
//! is refused, right password or not, until the window's key expires.

use anyhow::Context;
use redis::aio::ConnectionManager;

use crate::domain::Email;

#[derive(Clone)]
pub struct LoginThrottle {
    redis: ConnectionManager,
    prefix: String,
    max_failures: u32,
    window_seconds: u64,
}

impl LoginThrottle {
    pub fn new(redis: ConnectionManager, prefix: String, max_failures: u32, window_seconds: u64) -> Self {
        Self { redis, prefix, max_failures, window_seconds }
    }

    fn key(&self, email: &Email) -> String {
        format!("{}user:login-failures:{}", self.prefix, email.as_str())
    }

    /// Seconds until attempts are allowed again, or `None` when they are allowed now.
    pub async fn blocked_for(&self, email: &Email) -> anyhow::Result<Option<u64>> {
        let mut redis = self.redis.clone();
        let (failures, ttl): (Option<u32>, i64) = redis::pipe()
            .get(self.key(email))
            .ttl(self.key(email))
            .query_async(&mut redis)
            .await
            .context("cannot read login failures")?;
        if failures.unwrap_or(0) < self.max_failures {
            return Ok(None);
        }
        Ok(Some(u64::try_from(ttl).unwrap_or(1).max(1)))
    }

    /// Counts one failure; the first failure of a window starts its expiry.
    pub async fn record_failure(&self, email: &Email) -> anyhow::Result<()> {
        let key = self.key(email);
        let mut redis = self.redis.clone();
        let () = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(self.window_seconds)
            .arg("NX")
            .ignore()
            .query_async(&mut redis)
            .await
            .context("cannot record a failed login")?;
        Ok(())
    }

    /// A successful login starts the count afresh.
    pub async fn clear(&self, email: &Email) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let () = redis::cmd("DEL")
            .arg(self.key(email))
            .query_async(&mut redis)
            .await
            .context("cannot clear login failures")?;
        Ok(())
    }
}
