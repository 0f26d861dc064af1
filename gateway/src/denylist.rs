//! Access tokens revoked before their `exp` (logout), as the user service records them
//! in Redis under `marquee_auth::denied_jti_key`. Its connection also answers
//! readiness: without Redis no token can be checked, so no request can be served.
//!
//! Answers are kept in this process per `jti`: while the gateway fanned out seat
//! changes to thousands of subscribers, a Redis call per request was what timed out.
//! "Not denied" is kept for `gateway.denylist_cache_ms`, "denied" until the token
//! expires, so a signed-in customer's requests mostly stay off Redis. The price: a
//! logout handled by another gateway is seen here within `denylist_cache_ms` at worst.
//! The gateway that handles a logout forwards it to the user service, which writes
//! Redis before it answers; that gateway then records the token as denied itself
//! (`Session::ended`), so it refuses the token from the next request on.
//!
//! Concurrent lookups of one `jti` share one Redis call. A lookup waits at most
//! `gateway.denylist_timeout_ms`; without an answer the caller refuses the request
//! (`http::admit`: SERVICE_BUSY), never lets it through unchecked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_kit::config::RedisSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;

use crate::metrics::DenylistLookups;
use crate::settings::GatewaySettings;

/// How long `/readyz` waits for Redis: a load balancer's probe must not hang on it.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers kept: at most two generations of this many. An answer is ~100 bytes (a
/// 36-character `jti`, its deadline, the map's overhead), so the cache stays under
/// ~7 MB however many tokens call.
const GENERATION: usize = 32_768;

/// Why a lookup has no answer. Cloned to every request that shared the lookup.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Unanswered {
    #[error("Redis did not answer the token denylist lookup within {0:?}")]
    TimedOut(Duration),
    #[error("cannot check the token denylist")]
    Failed(#[source] redis::RedisError),
    #[error("the token denylist lookup ended without an answer")]
    Abandoned,
}

type Outcome = Result<bool, Unanswered>;
/// A lookup in flight: `None` until its Redis call ends.
type Flight = watch::Receiver<Option<Outcome>>;

#[derive(Clone)]
pub struct Denylist {
    redis: ConnectionManager,
    prefix: String,
    timeout: Duration,
    cache: Arc<Cache>,
    lookups: DenylistLookups,
}

impl Denylist {
    pub async fn connect(
        settings: &RedisSettings,
        gateway: &GatewaySettings,
        lookups: DenylistLookups,
    ) -> anyhow::Result<Self> {
        let client = redis::Client::open(settings.url.expose().as_str()).context("invalid Redis URL")?;
        // The lookup and the ping carry their own bounds (`timeout`, PING_TIMEOUT); the
        // client's 500 ms default for every command would be a third, hidden one.
        let config = ConnectionManagerConfig::new().set_response_timeout(None);
        let redis =
            ConnectionManager::new_with_config(client, config).await.context("cannot connect to Redis")?;
        Ok(Self {
            redis,
            prefix: settings.key_prefix.clone(),
            timeout: Duration::from_millis(gateway.denylist_timeout_ms),
            cache: Arc::new(Cache::new(Duration::from_millis(gateway.denylist_cache_ms))),
            lookups,
        })
    }

    /// Whether the token `jti` (which expires at `expires_at`, Unix seconds) was logged
    /// out: from this process's answers, else from Redis, sharing a call in flight.
    pub async fn is_denied(&self, jti: &str, expires_at: i64) -> Result<bool, Unanswered> {
        let (flight, led) = {
            let mut state = self.cache.lock();
            if let Some(denied) = state.answers.get(jti, Instant::now()) {
                self.lookups.hit.increment(1);
                return Ok(denied);
            }
            match state.flights.get(jti) {
                // A closed flight lost its task (a panic) without answering: start anew.
                Some(flight) if flight.has_changed().is_ok() => (flight.clone(), false),
                _ => {
                    let (answer, flight) = watch::channel(None);
                    state.flights.insert(jti.to_owned(), flight.clone());
                    // Its own task: a request that goes away does not cut the call short
                    // for the others waiting on it, and the answer is kept either way.
                    tokio::spawn(self.clone().ask(jti.to_owned(), expires_at, answer));
                    (flight, true)
                }
            }
        };
        let outcome = wait(flight).await;
        let counter = match (&outcome, led) {
            (Err(_), _) => &self.lookups.error,
            (Ok(_), true) => &self.lookups.miss,
            (Ok(_), false) => &self.lookups.hit,
        };
        counter.increment(1);
        outcome
    }

    /// The token of a request, to record its logout here (`Session::ended`).
    pub fn session(&self, jti: &str, expires_at: i64) -> Session {
        Session { jti: jti.to_owned(), expires_at, cache: self.cache.clone() }
    }

    /// One Redis call for `jti`; its answer is kept, then handed to every waiter.
    async fn ask(self, jti: String, expires_at: i64, answer: watch::Sender<Option<Outcome>>) {
        let mut redis = self.redis.clone();
        let key = marquee_auth::denied_jti_key(&self.prefix, &jti);
        // Redis's answer is at least as new as this, so a logout written after it is
        // seen within the cache period of the logout, however long the call took.
        let asked_at = Instant::now();
        let mut exists = redis::cmd("EXISTS");
        let exists = exists.arg(key).query_async::<bool>(&mut redis);
        let outcome = match tokio::time::timeout(self.timeout, exists).await {
            Ok(Ok(denied)) => Ok(denied),
            Ok(Err(error)) => Err(Unanswered::Failed(error)),
            Err(_) => Err(Unanswered::TimedOut(self.timeout)),
        };
        {
            let mut state = self.cache.lock();
            state.flights.remove(&jti);
            if let Ok(denied) = outcome {
                self.cache.keep(&mut state, jti, denied, expires_at, asked_at);
            }
        }
        answer.send_replace(Some(outcome));
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

async fn wait(mut flight: Flight) -> Outcome {
    match flight.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or(Err(Unanswered::Abandoned)),
        Err(_) => Err(Unanswered::Abandoned),
    }
}

/// A verified access token as this gateway's denylist knows it.
#[derive(Clone)]
pub struct Session {
    jti: String,
    expires_at: i64,
    cache: Arc<Cache>,
}

impl Session {
    /// The user service denied this token (logout): refuse it here from now on,
    /// without waiting for a cached "not denied" to lapse.
    pub fn ended(&self) {
        let mut state = self.cache.lock();
        self.cache.keep(&mut state, self.jti.clone(), true, self.expires_at, Instant::now());
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("jti", &self.jti).finish_non_exhaustive()
    }
}

struct Cache {
    /// How long "not denied" is kept; zero keeps nothing.
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    answers: Answers,
    /// One per `jti` being looked up; each ends within the lookup timeout.
    flights: HashMap<String, Flight>,
}

impl Cache {
    fn new(ttl: Duration) -> Self {
        Self { ttl, state: Mutex::default() }
    }

    /// Never held across an await. A panic while it was held leaves the maps whole
    /// (no step of ours breaks them midway), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps an answer that holds as of `since`.
    fn keep(&self, state: &mut State, jti: String, denied: bool, expires_at: i64, since: Instant) {
        let now_unix = chrono::Utc::now().timestamp();
        if let Some(kept) = keep_for(self.ttl, denied, expires_at, now_unix) {
            state.answers.insert(jti, Answer { denied, until: since + kept }, Instant::now());
        }
    }
}

/// How long an answer is kept: "denied" until the token could no longer verify anyway
/// (its `exp` plus the verifier's leeway), "not denied" for `ttl`. `None`: not kept
/// (the cache is off, or the token has expired).
fn keep_for(ttl: Duration, denied: bool, expires_at: i64, now_unix: i64) -> Option<Duration> {
    if ttl.is_zero() {
        return None;
    }
    if !denied {
        return Some(ttl);
    }
    let seconds = expires_at.saturating_add(marquee_auth::LEEWAY_SECONDS).saturating_sub(now_unix);
    u64::try_from(seconds).ok().filter(|s| *s > 0).map(Duration::from_secs)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Answer {
    denied: bool,
    until: Instant,
}

impl Answer {
    fn fresh(&self, now: Instant) -> bool {
        now < self.until
    }
}

/// Answers by `jti`, bounded by two generations: when the newer one is full, the older
/// is dropped whole, so the oldest answers go first without per-entry bookkeeping,
/// and an answer still in use moves to the newer generation when read. Time is passed in.
#[derive(Default)]
struct Answers {
    current: HashMap<String, Answer>,
    previous: HashMap<String, Answer>,
}

impl Answers {
    fn get(&mut self, jti: &str, now: Instant) -> Option<bool> {
        if let Some(answer) = self.current.get(jti) {
            if answer.fresh(now) {
                return Some(answer.denied);
            }
            self.current.remove(jti);
            return None;
        }
        let answer = self.previous.remove(jti).filter(|a| a.fresh(now))?;
        self.insert(jti.to_owned(), answer, now);
        Some(answer.denied)
    }

    /// A denied token stays denied until it expires, so a fresh "denied" is never
    /// replaced by "not denied": that could only come from a lookup that started
    /// before the logout and ended after it.
    fn insert(&mut self, jti: String, answer: Answer, now: Instant) {
        let known = self.current.get(&jti).or_else(|| self.previous.get(&jti));
        if !answer.denied && known.is_some_and(|k| k.denied && k.fresh(now)) {
            return;
        }
        self.previous.remove(&jti);
        if self.current.len() >= GENERATION && !self.current.contains_key(&jti) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(jti, answer);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn allowed(until: Instant) -> Answer {
        Answer { denied: false, until }
    }

    fn denied(until: Instant) -> Answer {
        Answer { denied: true, until }
    }

    #[test]
    fn an_answer_is_kept_until_its_deadline_then_asked_again() {
        let now = Instant::now();
        let mut answers = Answers::default();
        answers.insert("a".into(), allowed(now + 2 * SECOND), now);
        answers.insert("d".into(), denied(now + 900 * SECOND), now);
        assert_eq!(answers.get("a", now), Some(false));
        assert_eq!(answers.get("a", now + SECOND), Some(false));
        assert_eq!(answers.get("a", now + 2 * SECOND), None);
        assert_eq!(answers.get("d", now + 899 * SECOND), Some(true));
        assert_eq!(answers.get("d", now + 900 * SECOND), None);
        assert_eq!(answers.get("unknown", now), None);
        assert_eq!(answers.len(), 0, "lapsed answers are dropped when read");
    }

    #[test]
    fn a_logout_is_not_undone_by_a_lookup_that_started_before_it() {
        let now = Instant::now();
        let mut answers = Answers::default();
        answers.insert("t".into(), allowed(now + 2 * SECOND), now);
        // The logout, recorded by the gateway that handled it...
        answers.insert("t".into(), denied(now + 900 * SECOND), now);
        // ...then a Redis answer read before the user service wrote the denial.
        answers.insert("t".into(), allowed(now + SECOND + 2 * SECOND), now + SECOND);
        assert_eq!(answers.get("t", now + SECOND), Some(true));
        assert_eq!(answers.get("t", now + 100 * SECOND), Some(true));
        // Once the denial has lapsed (the token expired), anything may be kept again.
        answers.insert("t".into(), allowed(now + 1000 * SECOND), now + 950 * SECOND);
        assert_eq!(answers.get("t", now + 950 * SECOND), Some(false));
    }

    #[test]
    fn the_cache_holds_at_most_two_generations_and_keeps_what_is_read() {
        let now = Instant::now();
        let until = now + 60 * SECOND;
        let mut answers = Answers::default();
        for i in 0..GENERATION {
            answers.insert(format!("old-{i}"), allowed(until), now);
        }
        answers.insert("kept".into(), denied(until), now);
        assert_eq!(answers.len(), GENERATION + 1);
        // Read while the older generation still holds it: it moves to the newer one.
        assert_eq!(answers.get("old-0", now), Some(false));
        for i in 0..3 * GENERATION {
            answers.insert(format!("new-{i}"), allowed(until), now);
            assert!(answers.len() <= 2 * GENERATION);
        }
        assert_eq!(answers.get("old-1", now), None, "the oldest answers went first");
        assert_eq!(answers.get(&format!("new-{}", 3 * GENERATION - 1), now), Some(false));
    }

    #[test]
    fn denied_answers_last_until_the_token_expires_and_zero_keeps_nothing() {
        let ttl = 2 * SECOND;
        let now_unix = 1_800_000_000;
        assert_eq!(keep_for(ttl, false, now_unix + 900, now_unix), Some(ttl));
        let leeway = marquee_auth::LEEWAY_SECONDS;
        assert_eq!(
            keep_for(ttl, true, now_unix + 900, now_unix),
            Some(Duration::from_secs(900 + leeway.unsigned_abs()))
        );
        // A token past its exp and leeway no longer verifies: nothing to keep.
        assert_eq!(keep_for(ttl, true, now_unix - leeway, now_unix), None);
        assert_eq!(keep_for(Duration::ZERO, false, now_unix + 900, now_unix), None);
        assert_eq!(keep_for(Duration::ZERO, true, now_unix + 900, now_unix), None);
    }
}
