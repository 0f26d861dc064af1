//! Per key turns: calls of this process that name the same key (an idempotency key, a
//! booking) run one after the other, so a repeat finds what the first call did
//! instead of doing it again alongside. Other keys never wait.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OwnedMutexGuard;

type Locks<K> = HashMap<K, Arc<tokio::sync::Mutex<()>>>;

/// Cheap to clone; clones share the turns.
#[derive(Clone)]
pub struct Turns<K = String> {
    waiting: Arc<Mutex<Locks<K>>>,
}

impl<K> Default for Turns<K> {
    fn default() -> Self {
        Self { waiting: Arc::new(Mutex::new(HashMap::new())) }
    }
}

impl<K: Hash + Eq + Clone> Turns<K> {
    fn map(&self) -> MutexGuard<'_, Locks<K>> {
        // Nothing is left half-done while the lock is held.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no other call of this process holds `key`'s turn, then holds it
    /// until the returned guard is dropped.
    pub async fn take(&self, key: K) -> Turn<K> {
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
pub struct Turn<K: Hash + Eq + Clone = String> {
    turns: Turns<K>,
    key: K,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Hash + Eq + Clone> Drop for Turn<K> {
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
        let turns = Turns::<String>::default();
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
        let turns = Turns::<u32>::default();
        let _first = turns.take(1).await;
        // Would never complete if 2 waited for 1.
        let second = turns.take(2).await;
        assert_eq!(turns.keys(), 2);
        drop(second);
        assert_eq!(turns.keys(), 1);
    }
}
