//! Tasks shared by everyone who asks for the same thing under one key (a showtime's
//! seat feed in `crate::live`, a subscription's one execution in `crate::fanout`): the
//! first member starts the task, the last one to leave stops it, and a task that ends
//! by itself removes its own entry.
//!
//! Each entry has a generation, so that a late leaver (or a task ending late) never
//! touches a later entry of the same key.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::task::AbortHandle;

pub struct SharedTasks<K, V> {
    entries: Mutex<HashMap<K, Entry<V>>>,
    next_generation: AtomicU64,
}

struct Entry<V> {
    generation: u64,
    value: V,
    members: usize,
    task: AbortHandle,
}

/// One member's place in an entry; `SharedTasks::leave` gives it back.
#[derive(Clone, Debug)]
pub struct Claim<K> {
    key: K,
    generation: u64,
}

impl<K> Claim<K> {
    /// A claim on no entry: leaving with it changes nothing.
    #[cfg(test)]
    pub fn detached(key: K) -> Self {
        Self { key, generation: u64::MAX }
    }
}

impl<K: Eq + Hash + Clone, V> SharedTasks<K, V> {
    pub fn new() -> Self {
        Self { entries: Mutex::new(HashMap::new()), next_generation: AtomicU64::new(0) }
    }

    /// Joins `key`'s entry, first starting it with `start(generation)` (its value and
    /// its task) if there is none. `with` runs under the lock on the entry's value, so
    /// nothing the task sends in `finish` can slip between joining and subscribing.
    /// Returns what `with` returned, the claim, and how many entries there are now.
    pub fn join<R>(
        &self,
        key: K,
        start: impl FnOnce(u64) -> (V, AbortHandle),
        with: impl FnOnce(&V) -> R,
    ) -> (R, Claim<K>, usize) {
        let mut entries = self.lock();
        let entry = entries.entry(key.clone()).or_insert_with(|| {
            let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
            let (value, task) = start(generation);
            Entry { generation, value, members: 0, task }
        });
        entry.members += 1;
        let claim = Claim { key, generation: entry.generation };
        let joined = with(&entry.value);
        (joined, claim, entries.len())
    }

    /// Leaves the claimed entry; the last member leaving stops its task and removes
    /// it. Returns how many entries there are now.
    pub fn leave(&self, claim: &Claim<K>) -> usize {
        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(&claim.key)
            && entry.generation == claim.generation
        {
            entry.members -= 1;
            if entry.members == 0 {
                entry.task.abort();
                entries.remove(&claim.key);
            }
        }
        entries.len()
    }

    /// The task of `key`'s entry of `generation` ended by itself: removes the entry if
    /// it is still that one, so a later join starts afresh, then runs `then` (with the
    /// number of entries left) under the lock, so that no member joins the ended entry
    /// between the removal and what `then` sends.
    pub fn finish<R>(&self, key: &K, generation: u64, then: impl FnOnce(usize) -> R) -> R {
        let mut entries = self.lock();
        if entries.get(key).is_some_and(|entry| entry.generation == generation) {
            entries.remove(key);
        }
        then(entries.len())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Entry<V>>> {
        // A poisoned lock only means a panic elsewhere; the map itself stays valid.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn idle_task() -> AbortHandle {
        tokio::spawn(tokio::time::sleep(Duration::from_secs(3600))).abort_handle()
    }

    #[tokio::test]
    async fn the_first_member_starts_the_task_and_the_last_to_leave_stops_it() {
        let tasks: SharedTasks<&str, (u64, AbortHandle)> = SharedTasks::new();
        let start = |generation| {
            let task = idle_task();
            ((generation, task.clone()), task)
        };
        let read = |(generation, task): &(u64, AbortHandle)| (*generation, task.clone());
        let ((first, task), one, count) = tasks.join("a", start, read);
        let ((second, _), two, again) = tasks.join("a", start, read);
        assert_eq!((first, second, count, again), (0, 0, 1, 1), "one entry, started once");
        assert_eq!(tasks.leave(&one), 1, "a member is still in");
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "the task runs while a member is in");
        assert_eq!(tasks.leave(&two), 0);
        tokio::task::yield_now().await;
        assert!(task.is_finished(), "the last member leaving stopped the task");
        let ((third, _), _three, _) = tasks.join("a", start, read);
        assert_eq!(third, 1, "a new entry, of the next generation");
    }

    #[tokio::test]
    async fn a_leaver_or_finisher_of_an_ended_generation_never_touches_its_successor() {
        let tasks: SharedTasks<&str, u64> = SharedTasks::new();
        let (_, old, _) = tasks.join("a", |g| (g, idle_task()), |v| *v);
        assert_eq!(tasks.finish(&"a", 0, |left| left), 0, "the task ended by itself");
        let (value, new, count) = tasks.join("a", |g| (g, idle_task()), |v| *v);
        assert_eq!((value, count), (1, 1));
        assert_eq!(tasks.leave(&old), 1, "the old member's leaving kept the new entry");
        assert_eq!(tasks.finish(&"a", 0, |left| left), 1, "the old task's end kept it too");
        assert_eq!(tasks.leave(&Claim::detached("a")), 1);
        assert_eq!(tasks.leave(&new), 0);
    }
}
