//! Seat turns: attempts to hold one seat take turns inside this process, and a hold
//! that wins answers the attempts that waited behind it.
//!
//! When a contested seat comes free (a hold is released or lapses), every request for
//! it looks free to the seat board until the next hold's notification arrives. Without
//! turns they all go to `cinema_lock_seats` together: they queue for pool connections,
//! then for the seat's row lock, and all but one lose after tens of milliseconds. With
//! turns one of them asks the database; the rest wait for its answer. If it won, each
//! waiter of another booking is refused on the spot: the hold committed before the
//! round ended, every waiter arrived before that, and a hold cannot be released before
//! its booking hears it was taken, so it was live during the waiter's request. That is
//! the answer the database would have given, a round trip sooner and without touching
//! a connection. Any other outcome (lost, failed, cancelled) tells waiters nothing,
//! and the next one asks the database.
//!
//! A request for several seats takes its turns in seat order (a selection is sorted),
//! so two requests never wait for each other crosswise. Turns only order attempts of
//! this process; the row locks in `cinema_lock_seats` still decide between processes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

type SeatKey = (Uuid, String);

/// The lines of every seat with an attempt running or waiting.
#[derive(Clone, Default)]
pub struct SeatTurns {
    lines: Arc<Mutex<HashMap<SeatKey, Arc<Line>>>>,
}

/// One seat's line. A "round" is one attempt at the database that included the seat.
#[derive(Default)]
struct Line {
    /// Rounds finished so far; a waiter notes it on arrival.
    finished: AtomicU64,
    /// Held while a round runs; holds the last finished round's result.
    turn: Arc<tokio::sync::Mutex<LastRound>>,
}

#[derive(Clone, Copy, Default)]
struct LastRound {
    number: u64,
    /// The booking the round's hold won the seat for.
    won_by: Option<Uuid>,
}

/// The turns of one request: taken one by one, then held while it asks the database.
pub struct Turns {
    owner: SeatTurns,
    seats: Vec<Seat>,
    /// Every turn is taken: dropping ends a round at each seat. Until then, dropping
    /// (a refusal, or the caller gave up waiting) leaves the lines as they were.
    complete: bool,
    won_by: Option<Uuid>,
}

struct Seat {
    key: SeatKey,
    line: Arc<Line>,
    finished_on_arrival: u64,
    turn: Option<OwnedMutexGuard<LastRound>>,
}

impl SeatTurns {
    /// Waits for the turn at each of `seats` (sorted) of `showtime`. `Err` names the
    /// seats a hold for another booking won while this request waited.
    pub async fn take(&self, showtime: Uuid, seats: &[String], booking: Uuid) -> Result<Turns, Vec<String>> {
        let seats = {
            let mut lines = self.lock();
            seats
                .iter()
                .map(|seat| {
                    let key = (showtime, seat.clone());
                    let line = Arc::clone(lines.entry(key.clone()).or_default());
                    let finished_on_arrival = line.finished.load(Ordering::Acquire);
                    Seat { key, line, finished_on_arrival, turn: None }
                })
                .collect()
        };
        let mut turns = Turns { owner: self.clone(), seats, complete: false, won_by: None };
        for i in 0..turns.seats.len() {
            let seat = &mut turns.seats[i];
            let last = Arc::clone(&seat.line.turn).lock_owned().await;
            if seat.won_meanwhile(&last, booking) {
                // The winning round wrote every seat it won before letting anyone in,
                // so the rest of this request's seats it took are already known.
                let mut taken = vec![seat.key.1.clone()];
                for rest in &turns.seats[i + 1..] {
                    if rest.line.turn.try_lock().is_ok_and(|last| rest.won_meanwhile(&last, booking)) {
                        taken.push(rest.key.1.clone());
                    }
                }
                return Err(taken);
            }
            seat.turn = Some(last);
        }
        turns.complete = true;
        Ok(turns)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SeatKey, Arc<Line>>> {
        // Every update of the map is one insert or remove: it stays consistent.
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Seat {
    /// Whether a round that ended after this request arrived won the seat for another
    /// booking.
    fn won_meanwhile(&self, last: &LastRound, booking: Uuid) -> bool {
        last.number > self.finished_on_arrival && last.won_by.is_some_and(|holder| holder != booking)
    }
}

impl Turns {
    /// The attempt held every seat for `booking`: waiters of other bookings are refused.
    pub fn won_by(&mut self, booking: Uuid) {
        self.won_by = Some(booking);
    }
}

impl Drop for Turns {
    /// Ends this round at every seat (recording whether it won) and lets the next
    /// request in; drops the lines nobody else holds or waits in.
    fn drop(&mut self) {
        // Every seat's result is written before any turn is let go (see `take`).
        for seat in &mut self.seats {
            if let Some(last) = seat.turn.as_mut()
                && self.complete
            {
                let number = last.number + 1;
                **last = LastRound { number, won_by: self.won_by };
                seat.line.finished.store(number, Ordering::Release);
            }
        }
        for seat in &mut self.seats {
            seat.turn = None;
        }
        let mut lines = self.owner.lock();
        for seat in self.seats.drain(..) {
            // Clones are made only under this lock, so a count of 2 (the map's and
            // this one) cannot grow before the removal.
            if Arc::strong_count(&seat.line) == 2 {
                lines.remove(&seat.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;

    use futures::poll;

    use super::*;

    fn seats(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn waiters_behind_a_winning_hold_are_refused_but_its_own_booking_is_not() {
        let turns = SeatTurns::default();
        let (showtime, winner, other) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut leading = turns.take(showtime, &seats(&["A1", "A2"]), winner).await.unwrap();
        let want_a1 = seats(&["A1"]);
        let want_a1_a2 = seats(&["A1", "A2", "A3"]);
        let mut other_waits = pin!(turns.take(showtime, &want_a1, other));
        let mut other_wants_two = pin!(turns.take(showtime, &want_a1_a2, other));
        let mut repeat_waits = pin!(turns.take(showtime, &want_a1, winner));
        assert!(poll!(&mut other_waits).is_pending());
        assert!(poll!(&mut other_wants_two).is_pending());
        assert!(poll!(&mut repeat_waits).is_pending());

        leading.won_by(winner);
        drop(leading);
        assert_eq!(other_waits.await.err(), Some(seats(&["A1"])));
        // Every seat the winner took is named, not only the first.
        assert_eq!(other_wants_two.await.err(), Some(seats(&["A1", "A2"])));
        // The winner's own repeat asks the database, which says it holds the seat.
        let repeat = repeat_waits.await.expect("a booking is never refused its own hold");
        drop(repeat);
        assert!(turns.lock().is_empty(), "lines nobody waits in are dropped");
    }

    #[tokio::test]
    async fn a_round_that_did_not_win_tells_waiters_nothing() {
        let turns = SeatTurns::default();
        let showtime = Uuid::new_v4();
        let want = seats(&["B7"]);
        let leading = turns.take(showtime, &want, Uuid::new_v4()).await.unwrap();
        let mut waiting = pin!(turns.take(showtime, &want, Uuid::new_v4()));
        assert!(poll!(&mut waiting).is_pending());
        drop(leading); // lost, failed or cancelled: no winner recorded
        let next = waiting.await.expect("the next waiter gets its turn");
        assert_eq!(next.seats.len(), 1);
    }

    #[tokio::test]
    async fn a_win_that_ended_before_a_request_arrived_does_not_refuse_it() {
        let turns = SeatTurns::default();
        let (showtime, winner) = (Uuid::new_v4(), Uuid::new_v4());
        // A request queued at B0 keeps C3's line (and its last result) alive.
        let blocker = turns.take(showtime, &seats(&["B0"]), Uuid::new_v4()).await.unwrap();
        let want_both = seats(&["B0", "C3"]);
        let mut keeper = pin!(turns.take(showtime, &want_both, Uuid::new_v4()));
        assert!(poll!(&mut keeper).is_pending());
        let mut leading = turns.take(showtime, &seats(&["C3"]), winner).await.unwrap();
        leading.won_by(winner);
        drop(leading);
        // The hold may have been released since: a newcomer asks the database.
        let newcomer = turns.take(showtime, &seats(&["C3"]), Uuid::new_v4()).await;
        assert!(newcomer.is_ok(), "refused by a win that ended before it arrived");
        drop(newcomer);
        drop(blocker);
        drop(keeper.await.unwrap());
        assert!(turns.lock().is_empty());
    }

    #[tokio::test]
    async fn requests_for_overlapping_seats_take_turns_in_seat_order_without_deadlock() {
        let turns = SeatTurns::default();
        let showtime = Uuid::new_v4();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let turns = turns.clone();
            // Every selection is sorted, as SeatSelection is.
            let want = if i % 2 == 0 { seats(&["D1", "D2", "D3"]) } else { seats(&["D2", "D3", "D4"]) };
            tasks.spawn(async move {
                let held = turns.take(showtime, &want, Uuid::new_v4()).await.unwrap();
                tokio::task::yield_now().await;
                drop(held);
            });
        }
        let done = tokio::time::timeout(std::time::Duration::from_secs(10), tasks.join_all()).await;
        assert!(done.is_ok(), "overlapping requests deadlocked");
        assert!(turns.lock().is_empty());
    }
}
