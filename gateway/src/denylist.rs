//! Access tokens revoked before their `exp` (logout), as the user service records them
//! in Redis under `marquee_auth::denied_jti_key`. Its connection also answers
//! readiness: without Redis no token can be checked, so no request can be served.

use std::time::Duration;

use anyhow::Context;
use marquee_kit::config::RedisSettings;
use redis::aio::ConnectionManager;

/// How long `/readyz` waits for Redis: a load balancer's probe must not hang on it.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Denylist {
    redis: ConnectionManager,
    prefix: String,
}

impl Denylist {
    pub async fn connect(settings: &RedisSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.url.expose().as_str()).context("invalid Redis URL")?;
        let redis = ConnectionManager::new(client).await.context("cannot connect to Redis")?;
        Ok(Self { redis, prefix: settings.key_prefix.clone() })
    }

    pub async fn is_denied(&self, jti: &str) -> anyhow::Result<bool> {
        let mut redis = self.redis.clone();
        let key = marquee_auth::denied_jti_key(&self.prefix, jti);
        redis::cmd("EXISTS").arg(key).query_async(&mut redis).await.context("cannot check the token denylist")
    }

    /// Succeeds when Redis answers a `PING` within `PING_TIMEOUT`. A lost connection is
    /// re-established by the manager, so this succeeds again once Redis is back.
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let ping = redis::cmd("PING");
        tokio::time::timeout(PING_TIMEOUT, ping.query_async::<String>(&mut redis))
            .await
            .context("Redis did not answer a ping in time")?
            .context("cannot ping Redis")?;
        Ok(())
    }
}
