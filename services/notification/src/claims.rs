//! Redis keys that make event handling idempotent.
//!
//! Per event: absent (never handled), `processing:<token>` with a short TTL (one
//! delivery is working on it), or `done` with a long TTL. A crash mid-way leaves only
//! the short claim, so a redelivery retries once it lapses; a finished event is
//! never handled twice while its `done` marker lives.

use anyhow::Context;
use marquee_kit::config::RedisSettings;
use redis::aio::ConnectionManager;
use uuid::Uuid;

use crate::settings::NotificationSettings;

const DONE: &str = "done";

/// Deletes the claim only if it is still ours: it may have lapsed and been retaken.
const RELEASE: &str =
    r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

#[derive(Clone)]
pub struct EventClaims {
    redis: ConnectionManager,
    prefix: String,
    claim_ttl_seconds: u64,
    done_ttl_seconds: u64,
    release: redis::Script,
}

/// Proof of a claim: only its holder may release it.
pub struct ClaimToken(String);

pub enum Claim {
    Acquired(ClaimToken),
    /// Handled before: acknowledge and skip.
    Done,
    /// Another delivery is handling it right now.
    HeldElsewhere,
}

impl EventClaims {
    pub async fn connect(redis: &RedisSettings, settings: &NotificationSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis.url.expose().as_str()).context("invalid Redis URL")?;
        let connection = ConnectionManager::new(client).await.context("cannot connect to Redis")?;
        Ok(Self {
            redis: connection,
            prefix: redis.key_prefix.clone(),
            claim_ttl_seconds: settings.claim_ttl_seconds,
            done_ttl_seconds: settings.done_ttl_seconds,
            release: redis::Script::new(RELEASE),
        })
    }

    fn key(&self, event_id: Uuid) -> String {
        format!("{}notification:event:{event_id}", self.prefix)
    }

    /// Redis answers PING (readiness).
    pub async fn ping(&self) -> anyhow::Result<()> {
        let _: String =
            redis::cmd("PING").query_async(&mut self.redis.clone()).await.context("Redis PING failed")?;
        Ok(())
    }

    pub async fn claim(&self, event_id: Uuid) -> anyhow::Result<Claim> {
        let key = self.key(event_id);
        let token = format!("processing:{}", Uuid::new_v4());
        let mut redis = self.redis.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("NX")
            .arg("EX")
            .arg(self.claim_ttl_seconds)
            .query_async(&mut redis)
            .await
            .context("cannot claim event in Redis")?;
        if set.is_some() {
            return Ok(Claim::Acquired(ClaimToken(token)));
        }
        let current: Option<String> =
            redis::cmd("GET").arg(&key).query_async(&mut redis).await.context("cannot read event claim")?;
        Ok(if current.as_deref() == Some(DONE) { Claim::Done } else { Claim::HeldElsewhere })
    }

    pub async fn finish(&self, event_id: Uuid) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let () = redis::cmd("SET")
            .arg(self.key(event_id))
            .arg(DONE)
            .arg("EX")
            .arg(self.done_ttl_seconds)
            .query_async(&mut redis)
            .await
            .context("cannot mark event done in Redis")?;
        Ok(())
    }

    /// Which of `event_ids` are marked done, in one round trip.
    pub async fn done_among(&self, event_ids: &[Uuid]) -> anyhow::Result<Vec<bool>> {
        if event_ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = event_ids.iter().map(|id| self.key(*id)).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.redis.clone())
            .await
            .context("cannot read event markers")?;
        Ok(values.into_iter().map(|value| value.as_deref() == Some(DONE)).collect())
    }

    /// Gives up a claim after a failure, so the retry need not wait for it to lapse.
    pub async fn release(&self, event_id: Uuid, token: &ClaimToken) -> anyhow::Result<()> {
        let mut redis = self.redis.clone();
        let mut invocation = self.release.prepare_invoke();
        invocation.key(self.key(event_id)).arg(&token.0);
        let _deleted: i64 =
            invocation.invoke_async(&mut redis).await.context("cannot release event claim")?;
        Ok(())
    }
}
