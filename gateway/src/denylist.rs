//! Access tokens revoked before their `exp` (logout), as the user service records them
//! in Redis under `marquee_common::auth::denied_jti_key`.

use anyhow::Context;
use marquee_common::config::RedisSettings;
use redis::aio::ConnectionManager;

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
        let key = marquee_common::auth::denied_jti_key(&self.prefix, jti);
        redis::cmd("EXISTS").arg(key).query_async(&mut redis).await.context("cannot check the token denylist")
    }
}
