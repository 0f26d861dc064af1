//! Per-caller request limits, counted in Redis so every gateway replica shares them:
//! a fixed window per signed-in user (token `sub`) or, without a token, per client
//! address.

use std::net::IpAddr;

use anyhow::Context;
use marquee_kit::config::RedisSettings;
use redis::aio::ConnectionManager;

use crate::domain::UserId;
use crate::settings::RateLimitSettings;

/// Counts `ARGV[2]` operations against the window in `KEYS[1]`, starting the window
/// (expiry `ARGV[1]` ms) with its first request; answers the count and the window's
/// remaining milliseconds. One script, so a crash can never leave a counter without
/// its expiry.
const COUNT: &str = r"
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
";

/// Whose budget a request spends.
#[derive(Clone, Debug)]
pub enum Caller<'a> {
    User(&'a UserId),
    Address(IpAddr),
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit; the window ends in this many seconds (at least 1).
    Limited {
        retry_after_seconds: u64,
    },
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: ConnectionManager,
    prefix: String,
    settings: RateLimitSettings,
    script: redis::Script,
}

impl RateLimiter {
    pub async fn connect(redis: &RedisSettings, settings: &RateLimitSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis.url.expose().as_str()).context("invalid Redis URL")?;
        let connection = ConnectionManager::new(client).await.context("cannot connect to Redis")?;
        Ok(Self {
            redis: connection,
            prefix: redis.key_prefix.clone(),
            settings: settings.clone(),
            script: redis::Script::new(COUNT),
        })
    }

    /// Spends `operations` (a batch counts each of its operations) of `caller`'s budget.
    pub async fn check(&self, caller: &Caller<'_>, operations: u64) -> anyhow::Result<Verdict> {
        if !self.settings.enabled {
            return Ok(Verdict::Allowed);
        }
        let (key, limit) = match caller {
            Caller::User(id) => (format!("{}ratelimit:user:{id}", self.prefix), self.settings.per_user),
            Caller::Address(ip) => (format!("{}ratelimit:ip:{ip}", self.prefix), self.settings.per_ip),
        };
        let window_ms = self.settings.window_seconds.saturating_mul(1000).max(1);
        let mut redis = self.redis.clone();
        let (count, ttl_ms): (u64, i64) = self
            .script
            .key(key)
            .arg(window_ms)
            .arg(operations.max(1))
            .invoke_async(&mut redis)
            .await
            .context("cannot count the request against its rate limit")?;
        Ok(verdict(count, limit, ttl_ms))
    }
}

fn verdict(count: u64, limit: u64, ttl_ms: i64) -> Verdict {
    if count <= limit {
        return Verdict::Allowed;
    }
    let ms = u64::try_from(ttl_ms).unwrap_or(0);
    Verdict::Limited { retry_after_seconds: ms.div_ceil(1000).max(1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_itself_is_allowed_and_retry_after_rounds_up() {
        assert_eq!(verdict(10, 10, 500), Verdict::Allowed);
        assert_eq!(verdict(11, 10, 1), Verdict::Limited { retry_after_seconds: 1 });
        assert_eq!(verdict(11, 10, 1001), Verdict::Limited { retry_after_seconds: 2 });
        // A key caught between INCRBY and PEXPIRE reports no ttl; never "retry in 0".
        assert_eq!(verdict(11, 10, -1), Verdict::Limited { retry_after_seconds: 1 });
    }
}
