//! Per idempotency key turns: calls of this process that carry the same key run one
//! after the other. A client (or the gateway) that timed out and retried a HoldSeats
//! while the first call is still running would otherwise run the whole hold again
//! (slot claim, LockSeats refused by its own first attempt, slot release, key
//! lookup): in a rush, when every call is slow, those repeats were most of the
//! MongoDB load. Taking turns, the repeat runs after the first and finds its
//! booking with one key lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// Cheap to clone; clones share the turns.
#[derive(Clone, Default)]
pub struct Turns {
    waiting: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Turns {
    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        // Nothing is left half-done while the lock is held.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no other call of this process holds `key`'s turn, then holds it
    /// until the returned guard is dropped.
    pub async fn take(&self, key: String) -> Turn {
        let lock = self.map().entry(key.clone()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        Turn { turns: self.clone(), key, lock, guard: Some(guard) }
    }

    /// Keys someone holds or waits for (tests: nothing may be left behind).
    #[cfg(test)]
    fn keys(&self) -> usize {
        self.map().len()
    }
}

/// A held turn; dropping it lets the next caller with the same key go.
pub struct Turn {
    turns: Turns,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.turns.map();
        // Clones are only made under the map's lock: the map's and ours are the only
        // ones left when nobody else holds or waits for this key.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_with_one_key_take_turns_and_leave_nothing_behind() {
        let turns = Turns::default();
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let (turns, running, most) = (turns.clone(), running.clone(), most.clone());
            tasks.spawn(async move {
                let _turn = turns.take("user:key".to_owned()).await;
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        tasks.join_all().await;
        assert_eq!(most.load(Ordering::SeqCst), 1, "two calls with one key ran at once");
        assert_eq!(turns.keys(), 0);
    }

    #[tokio::test]
    async fn other_keys_do_not_wait() {
        let turns = Turns::default();
        let _first = turns.take("a".to_owned()).await;
        // Would never complete if "b" waited for "a".
        let second = turns.take("b".to_owned()).await;
        assert_eq!(turns.keys(), 2);
        drop(second);
        assert_eq!(turns.keys(), 1);
    }
}
