//! Gateway-level idempotency for `holdSeats` and `payBooking`.
//!
//! A result is stored in Redis under (caller, mutation, idempotency key) for 24 hours,
//! next to a hash of the request's payload. A repeat with the same key and payload
//! gets the stored result without reaching the booking service again; the same key
//! with another payload is CONFLICT. While the first request is still running, a
//! repeat waits for its result (polling) and gets CONFLICT if it does not come in time.
//!
//! Only successful upstream answers are stored. A failed attempt frees the key (so does
//! one cancelled mid-call because its client went away), so the
//! client may retry it (the booking service is itself idempotent for holds and keys
//! charges by booking, so such a retry cannot double-book or double-charge).
//!
//! A Redis command whose reply is lost (the connection's 500 ms response timeout, e.g.
//! while the gateway is busy) may still have been applied. A claim is therefore sent
//! again with the same unique value and recognised as this request's own when it
//! was; a request that gives up frees whatever it may hold; and a settlement that
//! fails is retried in the background. Otherwise a claim nobody works on would make
//! every retry of the key wait and get CONFLICT until it lapsed, a minute later.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use marquee_common::backoff::Backoff;
use marquee_common::config::RedisSettings;
use prost::Message;
use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::domain::{IdempotencyKey, UserId};
use crate::error::GatewayError;

/// How long a stored result answers repeats.
const RESULT_TTL_SECONDS: u64 = 24 * 60 * 60;
/// A claim outlives the longest upstream call (grpc.request_timeout_ms) by far; it only
/// matters when a gateway dies mid-call, and then frees the key after this long.
const PENDING_TTL_SECONDS: u64 = 60;
/// How long a repeat waits for the first request's result before giving up.
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(25);
/// Sends of a claim whose reply does not come before the request fails.
const CLAIM_ATTEMPTS: u32 = 3;
/// Background retries of a settlement that failed, with pauses of (jittered) 100 ms,
/// 400 ms and 1.6 s: every other step of a backoff from `SETTLE_FIRST_PAUSE`, so that
/// the settlements a Redis blip failed together do not retry together.
const SETTLE_RETRIES: u32 = 3;
const SETTLE_FIRST_PAUSE: Duration = Duration::from_millis(100);
const SETTLE_MAX_PAUSE: Duration = Duration::from_millis(1600);

const PENDING: u8 = b'P';
const DONE: u8 = b'D';
/// Hex SHA-256 of the payload.
const HASH_LEN: usize = 64;

/// `SET key done EX ttl`, but only while the key still holds this request's claim.
const COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0";
/// `DEL key`, but only while the key still holds this request's claim.
const ABANDON: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Connects on first use, so the gateway starts while Redis is still coming up.
#[derive(Clone)]
pub struct IdempotencyStore {
    client: redis::Client,
    connection: Arc<OnceCell<ConnectionManager>>,
    prefix: String,
    wait: Duration,
}

/// One idempotent mutation call.
pub struct Operation<'a> {
    pub user: &'a UserId,
    /// The GraphQL field, e.g. "holdSeats".
    pub mutation: &'static str,
    pub key: &'a IdempotencyKey,
    /// Everything that makes two requests "the same request", in a canonical form.
    pub payload: String,
}

impl IdempotencyStore {
    pub fn new(settings: &RedisSettings) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.url.expose().as_str()).context("invalid Redis URL")?;
        Ok(Self {
            client,
            connection: Arc::new(OnceCell::new()),
            prefix: settings.key_prefix.clone(),
            wait: WAIT_FOR_FIRST,
        })
    }

    #[cfg(test)]
    fn waiting_at_most(self, wait: Duration) -> Self {
        Self { wait, ..self }
    }

    async fn redis(&self) -> Result<ConnectionManager, GatewayError> {
        let connection = self
            .connection
            .get_or_try_init(|| ConnectionManager::new(self.client.clone()))
            .await
            .context("cannot connect to Redis for idempotency keys")?;
        Ok(connection.clone())
    }

    /// Runs `call` once per (user, mutation, key); see the module docs.
    pub async fn run<T, F, Fut>(&self, operation: Operation<'_>, call: F) -> Result<T, GatewayError>
    where
        T: Message + Default,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        let key = format!(
            "{}gateway:idempotency:{}:{}:{}",
            self.prefix,
            sha256_hex(operation.user.as_str()),
            operation.mutation,
            sha256_hex(operation.key.as_str())
        );
        let hash = sha256_hex(&operation.payload);
        let mut redis = self.redis().await?;
        let deadline = tokio::time::Instant::now() + self.wait;
        let claim = claim_value(&hash);
        // Armed from the first claim that may have been applied: dropped armed (an
        // error, or the client went away), it frees the key if it holds this claim.
        let mut held =
            HeldClaim { redis: redis.clone(), key: key.clone(), claim: claim.clone(), armed: false };
        let mut lost_claims = 0;
        loop {
            let claimed: redis::RedisResult<Option<String>> = redis::cmd("SET")
                .arg(&key)
                .arg(&claim)
                .arg("NX")
                .arg("EX")
                .arg(PENDING_TTL_SECONDS)
                .query_async(&mut redis)
                .await;
            let claimed = match claimed {
                Ok(claimed) => claimed.is_some(),
                Err(error) => {
                    held.armed = true;
                    lost_claims += 1;
                    if lost_claims >= CLAIM_ATTEMPTS {
                        return Err(anyhow::Error::new(error)
                            .context("cannot claim an idempotency key")
                            .into());
                    }
                    tracing::debug!(%error, "an idempotency claim got no answer; sending it again");
                    continue;
                }
            };
            let stored: Option<Vec<u8>> = if claimed {
                None
            } else {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .context("cannot read an idempotency key")?
            };
            // Claimed now, or by an earlier send of this request whose answer was lost.
            if claimed || stored.as_deref() == Some(claim.as_slice()) {
                held.armed = true;
                let result = call().await;
                self.settle(&mut redis, &key, &claim, &hash, &result).await;
                held.armed = false;
                return result;
            }
            // Gone between SET and GET: the first attempt failed or its claim lapsed.
            let Some(stored) = stored else { continue };
            let (state, stored_hash, body) = parse_stored(&stored)?;
            if stored_hash != hash.as_bytes() {
                return Err(GatewayError::Conflict(format!(
                    "idempotencyKey was already used for a different {} request",
                    operation.mutation
                )));
            }
            if state == DONE {
                return T::decode(body).map_err(|e| {
                    GatewayError::Unexpected(anyhow::anyhow!("a stored result does not decode: {e}"))
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(GatewayError::Conflict(format!(
                    "a {} request with this idempotencyKey is still in progress; retry later",
                    operation.mutation
                )));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Stores a success for repeats, frees the key after a failure. A Redis failure
    /// here must not turn the caller's completed call into an error: the settlement is
    /// retried in the background (both scripts only act on this request's claim, so a
    /// repeat is harmless), and if a result still cannot be stored the key is freed,
    /// so that a repeat runs the idempotent upstream call again instead of waiting.
    async fn settle<T: Message>(
        &self,
        redis: &mut ConnectionManager,
        key: &str,
        claim: &[u8],
        hash: &str,
        result: &Result<T, GatewayError>,
    ) {
        let settlement = match result {
            Ok(value) => {
                let mut done = Vec::with_capacity(1 + HASH_LEN + value.encoded_len());
                done.push(DONE);
                done.extend_from_slice(hash.as_bytes());
                done.extend_from_slice(&value.encode_to_vec());
                Settlement::Complete(done)
            }
            Err(_) => Settlement::Abandon,
        };
        let Err(error) = settlement.apply(redis, key, claim).await else { return };
        tracing::warn!(%error, "cannot settle an idempotency key yet; retrying in the background");
        let (mut redis, key, claim) = (redis.clone(), key.to_owned(), claim.to_vec());
        tokio::spawn(async move {
            let backoff = Backoff::new(SETTLE_FIRST_PAUSE, SETTLE_MAX_PAUSE);
            for retry in 0..SETTLE_RETRIES {
                tokio::time::sleep(backoff.delay(2 * retry)).await;
                if settlement.apply(&mut redis, &key, &claim).await.is_ok() {
                    return;
                }
            }
            if let Err(error) = Settlement::Abandon.apply(&mut redis, &key, &claim).await {
                tracing::warn!(%error, "cannot settle an idempotency key; it lapses on its own");
            }
        });
    }
}

/// What becomes of a claim once its call has an answer.
enum Settlement {
    /// Store this record (a success) for repeats.
    Complete(Vec<u8>),
    /// Free the key.
    Abandon,
}

impl Settlement {
    /// Acts only while the key holds `claim`; applying it twice changes nothing more.
    async fn apply(&self, redis: &mut ConnectionManager, key: &str, claim: &[u8]) -> redis::RedisResult<i64> {
        match self {
            Settlement::Complete(done) => {
                redis::Script::new(COMPLETE)
                    .key(key)
                    .arg(claim)
                    .arg(done.as_slice())
                    .arg(RESULT_TTL_SECONDS)
                    .invoke_async(redis)
                    .await
            }
            Settlement::Abandon => redis::Script::new(ABANDON).key(key).arg(claim).invoke_async(redis).await,
        }
    }
}

/// A claim this request holds or may hold. Dropped armed, the request was cancelled
/// mid-call (its client went away, so axum dropped the handler) or gave up after a
/// claim whose answer was lost: the key is freed in the background, or every retry of
/// it would wait and then get CONFLICT until the claim lapsed.
struct HeldClaim {
    redis: ConnectionManager,
    key: String,
    claim: Vec<u8>,
    armed: bool,
}

impl Drop for HeldClaim {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (mut redis, key, claim) =
            (self.redis.clone(), std::mem::take(&mut self.key), std::mem::take(&mut self.claim));
        runtime.spawn(async move {
            // Compare-and-delete: a no-op if the result was stored after all.
            if let Err(error) = Settlement::Abandon.apply(&mut redis, &key, &claim).await {
                tracing::warn!(%error, "cannot free an abandoned idempotency key; it lapses on its own");
            }
        });
    }
}

/// A unique claim: the payload hash plus a random token, so only its owner settles it.
fn claim_value(hash: &str) -> Vec<u8> {
    let mut token = [0u8; 16];
    // Uniqueness only guards against settling someone else's claim after ours lapsed;
    // the clock is a good enough fallback.
    if getrandom::fill(&mut token).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        token = nanos.as_nanos().to_be_bytes();
    }
    let mut value = Vec::with_capacity(1 + HASH_LEN + 32);
    value.push(PENDING);
    value.extend_from_slice(hash.as_bytes());
    value.extend_from_slice(hex(&token).as_bytes());
    value
}

fn parse_stored(stored: &[u8]) -> Result<(u8, &[u8], &[u8]), GatewayError> {
    match stored {
        [state @ (PENDING | DONE), rest @ ..] if rest.len() >= HASH_LEN => {
            let (hash, body) = rest.split_at(HASH_LEN);
            Ok((*state, hash, body))
        }
        _ => Err(GatewayError::Unexpected(anyhow::anyhow!("a malformed idempotency record"))),
    }
}

fn sha256_hex(input: &str) -> String {
    hex(&Sha256::digest(input.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests;
