//! Which bookings this process is driving a saga step for right now, so that a call
//! that has to wait for such a step (a PayBooking repeating one in flight) is told
//! when it is done instead of polling the booking in MongoDB. A booking whose step
//! is driven elsewhere (another replica, or a step orphaned by a crash that awaits
//! recovery) has no entry here; its waiters still poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::domain::{Booking, BookingId};

/// The registry: at most one local driver per booking.
#[derive(Clone, Default)]
pub struct Drivers {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each driver's channel; the driver holds the sending half (`Driving`).
    driving: Mutex<HashMap<BookingId, watch::Receiver<Option<Booking>>>>,
    /// Waits that a local driver answered.
    woken: AtomicU64,
    /// Reads of a booking whose step had no local driver.
    polls: AtomicU64,
}

impl Drivers {
    fn map(&self) -> MutexGuard<'_, HashMap<BookingId, watch::Receiver<Option<Booking>>>> {
        // Nothing is left half-done while the lock is held, so a panic elsewhere
        // cannot have broken the map.
        self.inner.driving.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes this call the booking's local driver, or `None` if another call of this
    /// process already is. The entry lives as long as the returned guard.
    pub fn enter(&self, id: BookingId) -> Option<Driving> {
        let mut map = self.map();
        if map.contains_key(&id) {
            return None;
        }
        let (sender, receiver) = watch::channel(None);
        map.insert(id, receiver);
        Some(Driving { drivers: self.clone(), id, sender })
    }

    /// The local driver of `id`, if there is one.
    pub fn driver(&self, id: BookingId) -> Option<Driver> {
        self.map().get(&id).map(|receiver| Driver { receiver: receiver.clone() })
    }

    pub fn count_woken(&self) {
        self.inner.woken.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_poll(&self) {
        self.inner.polls.fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> usize {
        self.map().len()
    }

    pub fn woken(&self) -> u64 {
        self.inner.woken.load(Ordering::Relaxed)
    }

    pub fn polls(&self) -> u64 {
        self.inner.polls.load(Ordering::Relaxed)
    }
}

/// Held by the call driving a booking; dropping it (when the call ends, fails, panics
/// or is cancelled) removes the entry and tells every waiter the driver is gone.
pub struct Driving {
    drivers: Drivers,
    id: BookingId,
    sender: watch::Sender<Option<Booking>>,
}

impl Driving {
    /// Tells waiters the state the booking has reached.
    pub fn publish(&self, booking: &Booking) {
        self.sender.send_replace(Some(booking.clone()));
    }
}

impl Drop for Driving {
    fn drop(&mut self) {
        // Only this guard's owner could insert the entry, and none can replace it
        // while it is there, so the entry under this id is this guard's.
        self.drivers.map().remove(&self.id);
    }
}

/// A local driver as seen by a waiter.
pub struct Driver {
    receiver: watch::Receiver<Option<Booking>>,
}

impl Driver {
    /// The first state the driver publishes that no payment is running in any more,
    /// or `None` once the driver is gone without publishing one (it failed, or left
    /// the booking in flight for recovery): then only the store knows.
    pub async fn settled(mut self) -> Option<Booking> {
        loop {
            if let Some(booking) = self.receiver.borrow_and_update().as_ref().filter(|b| !b.is_paying()) {
                return Some(booking.clone());
            }
            if self.receiver.changed().await.is_err() {
                return self.receiver.borrow().as_ref().filter(|b| !b.is_paying()).cloned();
            }
        }
    }
}
