//! A bound on CPU-heavy work (password hashing): a few jobs run at once on tokio's
//! blocking pool, a short queue waits for them, and everything beyond is refused at
//! once. Without it an overload livelocks: callers time out and retry, and every hash
//! whose caller has gone keeps burning a core.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

/// Why pooled work did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every slot and queue place was taken, or no slot freed up in time for the caller.
    #[error("at capacity; retry shortly")]
    Busy,
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

/// Cheap to clone; clones share the bound.
#[derive(Clone, Debug)]
pub struct CpuPool {
    /// Slots plus queue places. Taken without waiting, or the call is refused: this is
    /// what keeps the queue short.
    admitted: Arc<Semaphore>,
    /// One permit per job allowed to run at once.
    running: Arc<Semaphore>,
    max_wait: Duration,
    /// How long the last job ran (µs): a waiter whose slot would come too late to
    /// finish before its deadline is refused instead of started.
    last_run_micros: Arc<AtomicU64>,
}

impl CpuPool {
    /// `slots` jobs at once (at least one), `queue_per_slot` waiting callers per slot,
    /// each waiting at most `max_wait`.
    pub fn new(slots: usize, queue_per_slot: usize, max_wait: Duration) -> Self {
        let slots = slots.max(1);
        let admitted = slots.saturating_add(slots.saturating_mul(queue_per_slot));
        Self {
            admitted: Arc::new(Semaphore::new(admitted.min(Semaphore::MAX_PERMITS))),
            running: Arc::new(Semaphore::new(slots.min(Semaphore::MAX_PERMITS))),
            max_wait,
            last_run_micros: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Runs `work` on the blocking pool once a slot is free. The slot is taken here, in
    /// the caller's future, so a caller that goes away while queued never starts the
    /// work; once started, the work keeps its slot until it really ends.
    pub async fn run<T, F>(&self, deadline: Option<Instant>, work: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> anyhow::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let Ok(admitted) = Arc::clone(&self.admitted).try_acquire_owned() else {
            return Err(PoolError::Busy);
        };
        let wait = self.wait_budget(deadline, Instant::now());
        let running = match tokio::time::timeout(wait, Arc::clone(&self.running).acquire_owned()).await {
            Ok(permit) => permit.context("the CPU pool's semaphore was closed")?,
            Err(_elapsed) => return Err(PoolError::Busy),
        };
        let last_run = Arc::clone(&self.last_run_micros);
        let task = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            let started = std::time::Instant::now();
            let result = work();
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            last_run.store(micros, Ordering::Relaxed);
            result
        });
        Ok(task.await.context("a pooled CPU task panicked")??)
    }

    /// How long a call may wait for a slot: the configured maximum, or less when the
    /// caller's deadline would pass before work started then could finish.
    fn wait_budget(&self, deadline: Option<Instant>, now: Instant) -> Duration {
        let Some(deadline) = deadline else { return self.max_wait };
        let last_run = Duration::from_micros(self.last_run_micros.load(Ordering::Relaxed));
        deadline.saturating_duration_since(now).saturating_sub(last_run).min(self.max_wait)
    }
}

/// The instant the caller stops waiting, from the `grpc-timeout` header, if it sent one.
pub fn grpc_deadline(metadata: &MetadataMap) -> Option<Instant> {
    let timeout = metadata.get("grpc-timeout")?.to_str().ok().and_then(parse_grpc_timeout)?;
    Instant::now().checked_add(timeout)
}

/// `grpc-timeout` is 1 to 8 ASCII digits and a unit (gRPC over HTTP/2, "Timeout").
fn parse_grpc_timeout(raw: &str) -> Option<Duration> {
    let digits = raw.get(..raw.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    Some(match raw.get(digits.len()..)? {
        "H" => Duration::from_secs(value * 3600),
        "M" => Duration::from_secs(value * 60),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    use super::*;

    /// Work that blocks its thread until the test drops the returned sender.
    fn gated() -> (mpsc::Sender<()>, impl FnOnce() -> anyhow::Result<()> + Send + 'static) {
        let (release, gate) = mpsc::channel::<()>();
        (release, move || {
            let _ = gate.recv();
            Ok(())
        })
    }

    const LONG: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn beyond_the_slots_and_the_queue_a_call_is_refused_at_once() {
        let pool = CpuPool::new(1, 1, LONG);
        let (release_first, first_work) = gated();
        let first = pool.run(None, first_work);
        let second = pool.run(None, || Ok("second"));
        tokio::pin!(first, second);
        // The first runs, the second queues behind it.
        assert!(futures::poll!(&mut first).is_pending());
        assert!(futures::poll!(&mut second).is_pending());

        let started = std::time::Instant::now();
        let third = pool.run(None, || Ok("third")).await;
        assert!(matches!(third, Err(PoolError::Busy)), "{third:?}");
        assert!(started.elapsed() < Duration::from_millis(100), "refusal took {:?}", started.elapsed());

        drop(release_first);
        first.await.unwrap();
        assert_eq!(second.await.unwrap(), "second");
        // Every permit came back.
        assert_eq!(pool.run(None, || Ok(1)).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_waiter_is_refused_when_no_slot_frees_within_the_wait() {
        let pool = CpuPool::new(1, 4, Duration::from_millis(30));
        let (release, work) = gated();
        let busy = pool.run(None, work);
        tokio::pin!(busy);
        assert!(futures::poll!(&mut busy).is_pending());
        assert!(matches!(pool.run(None, || Ok(())).await, Err(PoolError::Busy)));
        drop(release);
        busy.await.unwrap();
    }

    #[tokio::test]
    async fn a_near_caller_deadline_shortens_the_wait() {
        let pool = CpuPool::new(1, 4, LONG);
        let (release, work) = gated();
        let busy = pool.run(None, work);
        tokio::pin!(busy);
        assert!(futures::poll!(&mut busy).is_pending());
        let deadline = Instant::now() + Duration::from_millis(30);
        let waited = tokio::time::timeout(Duration::from_secs(5), pool.run(Some(deadline), || Ok(())));
        assert!(matches!(waited.await, Ok(Err(PoolError::Busy))));
        drop(release);
        busy.await.unwrap();
    }

    #[test]
    fn the_wait_leaves_room_for_the_work_before_the_deadline() {
        let pool = CpuPool::new(1, 1, Duration::from_secs(1));
        pool.last_run_micros.store(200_000, Ordering::Relaxed);
        let now = Instant::now();
        assert_eq!(pool.wait_budget(None, now), Duration::from_secs(1));
        assert_eq!(pool.wait_budget(Some(now + Duration::from_millis(500)), now), Duration::from_millis(300));
        assert_eq!(pool.wait_budget(Some(now + Duration::from_secs(10)), now), Duration::from_secs(1));
        assert_eq!(pool.wait_budget(Some(now + Duration::from_millis(100)), now), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_caller_that_leaves_the_queue_never_starts_its_work() {
        let pool = CpuPool::new(1, 1, LONG);
        let (release, work) = gated();
        let busy = pool.run(None, work);
        tokio::pin!(busy);
        assert!(futures::poll!(&mut busy).is_pending());

        let ran = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let mut abandoned = Box::pin(pool.run(None, move || {
            flag.store(true, Ordering::SeqCst);
            Ok(())
        }));
        assert!(futures::poll!(&mut abandoned).is_pending());
        drop(abandoned);

        drop(release);
        busy.await.unwrap();
        // Its queue place came back, and its work never ran.
        assert_eq!(pool.admitted.available_permits(), 2);
        assert!(!ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn started_work_keeps_its_slot_after_the_caller_leaves() {
        let pool = CpuPool::new(1, 0, Duration::ZERO);
        let (release, work) = gated();
        let mut gone = Box::pin(pool.run(None, work));
        assert!(futures::poll!(&mut gone).is_pending());
        drop(gone);
        // The hash is still running on its thread: no room for another.
        assert!(matches!(pool.run(None, || Ok(())).await, Err(PoolError::Busy)));
        drop(release);
        let freed = tokio::time::timeout(Duration::from_secs(5), async {
            while pool.running.available_permits() == 0 {
                tokio::task::yield_now().await;
            }
        });
        freed.await.expect("the slot is freed when the work ends");
        pool.run(None, || Ok(())).await.unwrap();
    }

    #[test]
    fn grpc_timeouts_parse_per_the_spec() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("30000000u"), Some(Duration::from_secs(30)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7n"), Some(Duration::from_nanos(7)));
        for bad in ["", "S", "5", "5s", "123456789S", "-5S", "5 S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
