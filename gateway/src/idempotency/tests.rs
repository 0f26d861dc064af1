//! The idempotency store against the real Redis (and a proxy in front of it that
//! shows what was sent and can hold a reply back): repeats, waits, conflicts, failures,
//! cancellations and claims answered too late.

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
    let operation = Operation { user: &user, mutation: "holdSeats", key: &key, payload: payload.to_owned() };
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
    // The repeat talks to Redis through a proxy that shows what it sent.
    let proxy = SlowReplies::start().await;
    let (first, release) = start_blocked(&proxy.direct_store(), "payBooking", "k-3", "p", "b-3").await;
    let repeat = {
        let store = proxy.store();
        tokio::spawn(async move {
            let user = UserId::from_trusted("user-1".to_owned());
            let key = IdempotencyKey::parse("k-3").unwrap();
            let operation =
                Operation { user: &user, mutation: "payBooking", key: &key, payload: "p".to_owned() };
            store.run(operation, || async { Ok(booking("second call")) }).await
        })
    };
    // Only a read that found the first call's claim leads to a second read: the
    // repeat is waiting before the first call ends.
    let waiting = async {
        while proxy.sent("GET") < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the repeat never waited");
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
    let retry =
        tokio::time::timeout(Duration::from_secs(2), run(&store, "k-4", "C1", &calls, Ok(booking("b-4"))))
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
    /// Every byte clients sent, in order; and the settings of the Redis behind.
    sent: Arc<std::sync::Mutex<Vec<u8>>>,
    settings: RedisSettings,
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
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (hold, all_sent) = (hold_next.clone(), sent.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&redis).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let sent = all_sent.clone();
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 16 * 1024];
                    while let Ok(n @ 1..) = client_read.read(&mut buffer).await {
                        sent.lock().unwrap().extend_from_slice(&buffer[..n]);
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
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
        Self { addr, hold_next, sent, settings }
    }

    fn store(&self) -> IdempotencyStore {
        let mut settings = self.settings.clone();
        settings.url = marquee_common::secret::Secret::new(format!("redis://{}", self.addr));
        IdempotencyStore::new(&settings).unwrap()
    }

    /// A store with the same keys that talks to Redis directly.
    fn direct_store(&self) -> IdempotencyStore {
        IdempotencyStore::new(&self.settings).unwrap()
    }

    /// How many `command`s clients sent through the proxy.
    fn sent(&self, command: &str) -> usize {
        let pattern = format!("\r\n${}\r\n{command}\r\n", command.len());
        let sent = self.sent.lock().unwrap();
        sent.windows(pattern.len()).filter(|w| *w == pattern.as_bytes()).count()
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
    let repeat =
        tokio::time::timeout(Duration::from_secs(2), run(&store, "k-5", "D1", &calls, Ok(booking("never"))))
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
