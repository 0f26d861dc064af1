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
/// Pauses between background retries of a settlement that failed.
const SETTLE_RETRY_PAUSES: [Duration; 3] =
    [Duration::from_millis(100), Duration::from_millis(400), Duration::from_millis(1600)];

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
            for pause in SETTLE_RETRY_PAUSES {
                tokio::time::sleep(pause).await;
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
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use marquee_proto::booking::v1::Booking;
    use tokio::sync::oneshot;

    use super::*;

    fn store() -> IdempotencyStore {
        IdempotencyStore::new(&redis_settings()).unwrap()
    }

    /// The test Redis, under a key prefix of this test's own.
    fn redis_settings() -> RedisSettings {
        let mut settings = marquee_common::Settings::for_tests().unwrap().redis;
        settings.key_prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        settings
    }

    fn booking(id: &str) -> Booking {
        Booking { id: id.to_owned(), ..Default::default() }
    }

    /// Runs `operation` for (user, key, payload); `calls` counts the upstream calls.
    async fn run(
        store: &IdempotencyStore,
        key: &str,
        payload: &str,
        calls: &AtomicUsize,
        result: Result<Booking, GatewayError>,
    ) -> Result<Booking, GatewayError> {
        let user = UserId::from_trusted("user-1".to_owned());
        let key = IdempotencyKey::parse(key).unwrap();
        let operation =
            Operation { user: &user, mutation: "holdSeats", key: &key, payload: payload.to_owned() };
        store
            .run(operation, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                result
            })
            .await
    }

    /// Starts a first call of `mutation` for `key` whose upstream part blocks until the
    /// returned sender fires (answering booking `id`); returns once it is in flight.
    async fn start_blocked(
        store: &IdempotencyStore,
        mutation: &'static str,
        key: &'static str,
        payload: &'static str,
        id: &'static str,
    ) -> (tokio::task::JoinHandle<Result<Booking, GatewayError>>, oneshot::Sender<()>) {
        let (started_tx, started) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let store = store.clone();
        let first = tokio::spawn(async move {
            let user = UserId::from_trusted("user-1".to_owned());
            let key = IdempotencyKey::parse(key).unwrap();
            let operation = Operation { user: &user, mutation, key: &key, payload: payload.to_owned() };
            store
                .run(operation, || async {
                    let _ = started_tx.send(());
                    let _ = released.await;
                    Ok(booking(id))
                })
                .await
        });
        started.await.unwrap();
        (first, release)
    }

    /// Against the real Redis: what a repeat sees while the first call is in flight,
    /// after it succeeded, and after it failed.
    #[tokio::test]
    async fn repeats_wait_for_the_first_call_get_its_result_or_a_conflict() {
        let store = store().waiting_at_most(Duration::from_millis(200));
        let (first, release) = start_blocked(&store, "holdSeats", "k-1", "A1", "b-1").await;

        // In flight: a repeat waits, then gives up; another payload is refused at once.
        let calls = AtomicUsize::new(0);
        let waited = run(&store, "k-1", "A1", &calls, Ok(booking("never"))).await.unwrap_err();
        assert_eq!(waited.code(), marquee_common::ErrorCode::Conflict);
        let other = run(&store, "k-1", "A2", &calls, Ok(booking("never"))).await.unwrap_err();
        assert_eq!(other.code(), marquee_common::ErrorCode::Conflict);

        // Done: repeats get the stored result.
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().id, "b-1");
        assert_eq!(run(&store, "k-1", "A1", &calls, Ok(booking("never"))).await.unwrap().id, "b-1");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "no repeat reached upstream");
        let other = run(&store, "k-1", "A2", &calls, Ok(booking("never"))).await.unwrap_err();
        assert_eq!(other.code(), marquee_common::ErrorCode::Conflict);

        // A failure is not stored: the same key runs again, and then sticks.
        let failed = run(&store, "k-2", "B1", &calls, Err(GatewayError::bad_input("no"))).await.unwrap_err();
        assert_eq!(failed.code(), marquee_common::ErrorCode::BadUserInput);
        assert_eq!(run(&store, "k-2", "B1", &calls, Ok(booking("b-2"))).await.unwrap().id, "b-2");
        assert_eq!(run(&store, "k-2", "B1", &calls, Ok(booking("never"))).await.unwrap().id, "b-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    /// A repeat that arrives while the first call runs gets the first call's result.
    #[tokio::test]
    async fn a_waiting_repeat_gets_the_first_calls_result() {
        let store = store();
        let (first, release) = start_blocked(&store, "payBooking", "k-3", "p", "b-3").await;
        let repeat = {
            let store = store.clone();
            tokio::spawn(async move {
                let user = UserId::from_trusted("user-1".to_owned());
                let key = IdempotencyKey::parse("k-3").unwrap();
                let operation =
                    Operation { user: &user, mutation: "payBooking", key: &key, payload: "p".to_owned() };
                store.run(operation, || async { Ok(booking("second call")) }).await
            })
        };
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap().unwrap().id, "b-3");
        assert_eq!(repeat.await.unwrap().unwrap().id, "b-3");
    }

    /// Against the real Redis: a first call cancelled mid-way (its client left) frees
    /// the key, so a retry runs at once instead of waiting for the claim to lapse.
    #[tokio::test]
    async fn a_call_cancelled_mid_way_frees_its_key_for_the_retry() {
        let store = store().waiting_at_most(Duration::from_secs(5));
        let (first, _release) = start_blocked(&store, "holdSeats", "k-4", "C1", "never").await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());

        let calls = AtomicUsize::new(0);
        let retry = tokio::time::timeout(
            Duration::from_secs(2),
            run(&store, "k-4", "C1", &calls, Ok(booking("b-4"))),
        )
        .await
        .expect("the retry waited for a cancelled call's claim");
        assert_eq!(retry.unwrap().id, "b-4");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "the retry ran the call");
    }

    /// A TCP proxy to the real Redis that can hold the next reply back for longer than
    /// the connection's 500 ms response timeout, as a gateway too busy to read it does:
    /// the command was applied, but its sender hears "timed out".
    struct SlowReplies {
        addr: std::net::SocketAddr,
        hold_next: Arc<std::sync::atomic::AtomicBool>,
    }

    impl SlowReplies {
        const HOLD: Duration = Duration::from_millis(800);

        async fn start() -> Self {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let settings = redis_settings();
            let redis = settings.url.expose().trim_start_matches("redis://").trim_end_matches('/').to_owned();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let hold_next = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let hold = hold_next.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let server = tokio::net::TcpStream::connect(&redis).await.unwrap();
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
                    let hold = hold.clone();
                    tokio::spawn(async move {
                        let mut buffer = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = server_read.read(&mut buffer).await {
                            if hold.swap(false, Ordering::SeqCst) {
                                tokio::time::sleep(Self::HOLD).await;
                            }
                            if client_write.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            });
            Self { addr, hold_next }
        }

        fn store(&self) -> IdempotencyStore {
            let mut settings = redis_settings();
            settings.url = marquee_common::secret::Secret::new(format!("redis://{}", self.addr));
            IdempotencyStore::new(&settings).unwrap()
        }

        fn hold_next_reply(&self) {
            self.hold_next.store(true, Ordering::SeqCst);
        }
    }

    /// Against the real Redis: the claim's reply comes after the response timeout.
    /// The claim was applied all the same, so it is this request's: the call runs and
    /// its result is stored, instead of the request failing and leaving the key
    /// claimed by nobody (every retry waiting, then CONFLICT, for a minute).
    #[tokio::test]
    async fn a_claim_answered_too_late_is_still_this_requests() {
        let proxy = SlowReplies::start().await;
        let store = proxy.store();
        let calls = AtomicUsize::new(0);
        // The connection is made (through the proxy) before any reply is held back.
        run(&store, "k-5-warm", "W", &calls, Ok(booking("w"))).await.unwrap();

        proxy.hold_next_reply();
        let first = run(&store, "k-5", "D1", &calls, Ok(booking("b-5"))).await;
        assert_eq!(first.expect("the late claim was this request's").id, "b-5");
        let repeat = tokio::time::timeout(
            Duration::from_secs(2),
            run(&store, "k-5", "D1", &calls, Ok(booking("never"))),
        )
        .await
        .expect("the repeat waited for a claim nobody works on");
        assert_eq!(repeat.unwrap().id, "b-5", "the repeat gets the stored result");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the warm-up and the first call reached upstream");
    }

    #[test]
    fn stored_records_round_trip_their_state_hash_and_body() {
        let hash = sha256_hex("showtime\nA1,A2");
        let claim = claim_value(&hash);
        let (state, stored_hash, _) = parse_stored(&claim).unwrap();
        assert_eq!((state, stored_hash), (PENDING, hash.as_bytes()));
        assert_ne!(claim_value(&hash), claim, "every claim is unique");

        let mut done = vec![DONE];
        done.extend_from_slice(hash.as_bytes());
        done.extend_from_slice(b"\x0a\x02id");
        let (state, stored_hash, body) = parse_stored(&done).unwrap();
        assert_eq!((state, stored_hash, body), (DONE, hash.as_bytes(), &b"\x0a\x02id"[..]));

        assert!(parse_stored(b"").is_err());
        assert!(parse_stored(b"Dshort").is_err());
        assert!(parse_stored(&[b'X'; 80]).is_err());
    }
}
