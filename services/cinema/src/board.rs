//! The seat board: per showtime, an in-memory replica of who holds or owns each seat,
//! kept current by the seat change notifications.
//!
//! At a rush nearly every `LockSeats` is a loser asking for a seat someone already has.
//! The board lets the service refuse those without a database round trip, so losers
//! neither wait for a pool connection behind the winners nor load PostgreSQL. The board
//! only ever refuses: a seat it does not know, or believes free, goes to
//! `cinema_lock_seats`, which decides under row locks. A hold the board believes lapsed
//! (its extension is not announced) is simply asked of the database.
//!
//! Changes made by this process (holds won, seats released, cancelled or unblocked) are written
//! on the board as soon as they commit, ahead of their notifications. Each seat keeps
//! the list of its own changes still to be announced, in commit order: notifications
//! still in flight for such a seat are older and are skipped, or are the announcements
//! of earlier changes of the list, until the last one's own arrives. So for its own
//! changes the board is exact: a seat this service freed is never refused, and a seat
//! it just sold is refused at once, even when it changed the seat several times before
//! any of it was announced. Changes made elsewhere
//! (another replica, the hold sweeper) reach the board with
//! the notification delay, so such a seat may be refused for that moment, exactly as a
//! client looking at the live seat map would have seen it taken.
//!
//! `cinema.seat_board` says when the board is asked: always (the default), only while
//! every database connection is busy (`when_busy`: exact answers while the database
//! has room, at the price of sending a rush's losers to it), or never (`off`).
//!
//! A showtime is loaded on first use (a snapshot query) while its notifications are
//! queued, then the queue is replayed on top of the snapshot in commit order. When the
//! listener loses its connection notifications may have been missed, so the whole board
//! is forgotten and reloaded on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::changes::SeatChange;
use crate::domain::SeatState;
use crate::settings::SeatBoardMode;

/// How long a hold this process recorded itself is believed without its notification.
const LOCAL_TRUST: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// Showtimes kept at once; the least recently loaded goes first. A 10,000-seat
/// showtime takes about 1 MB.
const CAPACITY: usize = 256;

#[derive(Clone)]
pub struct SeatBoard {
    pool: PgPool,
    mode: SeatBoardMode,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    showtimes: HashMap<Uuid, Entry>,
    /// Tells a finished load whether its entry is still the one it started.
    next_load: u64,
    /// Counts notifications and loads: what a seat last heard is stamped with it, so a
    /// change this process made can tell whether news of the seat arrived meanwhile.
    heard: u64,
}

/// What seats freed by this process were.
#[derive(Clone, Copy, Debug)]
pub enum Freed {
    /// Held or booked by this booking (released or cancelled).
    OfBooking(Uuid),
    /// Blocked by staff.
    Blocked,
}

/// Where the notifications stood when a change of this process began (`SeatBoard::mark`).
#[derive(Clone, Copy, Debug)]
pub struct Mark(u64);

/// A change this process committed, as `Inner::record` writes it on the board.
struct Change {
    state: SeatState,
    holder: Option<Uuid>,
    hold_expires_at: Option<DateTime<Utc>>,
    since: Mark,
}

enum Entry {
    /// A snapshot query is running; changes wait here in commit order.
    Loading {
        load: u64,
        queued: Vec<SeatChange>,
    },
    Ready {
        load: u64,
        seats: HashMap<String, Occupancy>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Occupancy {
    state: SeatState,
    holder: Option<Uuid>,
    hold_expires_at: Option<DateTime<Utc>>,
    /// `Inner::heard` when the board last heard of the seat from PostgreSQL.
    heard: u64,
    /// Set on a change this process recorded itself, until its own notification
    /// arrives: notifications still in flight are older than it and must not undo it.
    own: Option<Box<Unconfirmed>>,
}

/// Changes this process made to a seat whose notifications have not all arrived.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Unconfirmed {
    /// What each change made of the seat (state, holder), in commit order; the last is
    /// what the board shows.
    awaited: Vec<(SeatState, Option<Uuid>)>,
    /// Believed until this instant at most: a change whose notification never comes
    /// (say, a hold released before it was even answered) must not stick.
    until: DateTime<Utc>,
}

/// More awaited changes than this on one seat within `LOCAL_TRUST` is not a booking
/// flow: the oldest are dropped (their notifications are then skipped as older news).
const MAX_AWAITED: usize = 16;

impl Occupancy {
    fn of(change: &SeatChange, heard: u64) -> Self {
        Self {
            state: change.state,
            holder: change.holder,
            hold_expires_at: change.hold_expires_at,
            heard,
            own: None,
        }
    }

    /// Whether `news` (a notification) must be skipped: it is older than this process's
    /// unconfirmed changes of the seat. Notifications arrive in commit order, so news
    /// matching none of the awaited changes was committed before the last of them, and
    /// news matching one that is not the last announces that earlier change (it and
    /// the ones before it are no longer awaited). News of the last is applied: the
    /// board then shows what PostgreSQL announced. Another process's change that looks
    /// exactly like an awaited one of this process (the same state and holder) is
    /// taken for it; past `Unconfirmed::until` every notification is applied.
    fn skips(&mut self, news: &Occupancy, now: DateTime<Utc>) -> bool {
        let Some(own) = self.own.as_mut().filter(|own| own.until > now) else { return false };
        match own.awaited.iter().position(|&change| change == (news.state, news.holder)) {
            Some(i) if i + 1 == own.awaited.len() => false,
            Some(i) => {
                own.awaited.drain(..=i);
                true
            }
            None => true,
        }
    }

    /// Mirrors `cinema_lock_seats`: taken unless available, lapsed, or held by `booking`.
    /// A hold without a known expiry is not judged here.
    fn surely_taken_from(&self, booking: Uuid, now: DateTime<Utc>) -> bool {
        match self.state {
            SeatState::Available => false,
            SeatState::Booked | SeatState::Blocked => true,
            SeatState::Held => {
                self.holder != Some(booking) && self.hold_expires_at.is_some_and(|expires| expires > now)
            }
        }
    }
}

/// What the board can say about a hold request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ask the database (showtime not loaded yet, or a seat it does not know).
    Unknown,
    /// Every seat looks free; the database still decides.
    LooksFree,
    /// These seats are taken by someone else: refuse without asking the database.
    Taken(Vec<String>),
}

impl SeatBoard {
    pub fn new(pool: PgPool, mode: SeatBoardMode) -> Self {
        Self { pool, mode, inner: Arc::default() }
    }

    /// Whether to ask the board now. Under `WhenBusy` only while every connection is
    /// in use: then a request would queue, and a loser is better answered at once. With
    /// connections to spare the database answers exactly (no notification lag).
    fn consulted(&self) -> bool {
        match self.mode {
            SeatBoardMode::Off => false,
            SeatBoardMode::Always => true,
            SeatBoardMode::WhenBusy => {
                self.pool.size() >= self.pool.options().get_max_connections() && self.pool.num_idle() == 0
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The map stays consistent even if a holder panicked: every update is one insert.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Judges `seats` of `showtime` for `booking`; starts loading an unknown showtime
    /// in the background so the next request can be judged.
    pub fn judge(&self, showtime: Uuid, seats: &[String], booking: Uuid, now: DateTime<Utc>) -> Verdict {
        if !self.consulted() {
            return Verdict::Unknown;
        }
        let mut inner = self.lock();
        if let Some(verdict) = inner.judge(showtime, seats, booking, now) {
            return verdict;
        }
        let load = inner.start_loading(showtime);
        drop(inner);
        tokio::spawn(self.clone().load(showtime, load));
        Verdict::Unknown
    }

    /// Records a committed change (called for every notification, in commit order).
    pub fn apply(&self, change: &SeatChange) {
        self.lock().apply(change, Utc::now());
    }

    /// Notes where the notifications stand, before a change of this process begins.
    pub fn mark(&self) -> Mark {
        Mark(self.lock().heard)
    }

    /// Records a hold this process committed (begun at `since`) before its notification
    /// arrives, so the board refuses the seats at once instead of sending every request
    /// to the database until then. Nothing can free a hold before its booking is told it
    /// has it, so a seat heard of as free since `since` heard of an older release; a
    /// seat heard of otherwise is left alone (the news is as new as this hold, or newer).
    /// The one exception, a release sent for a hold still being taken, is covered by
    /// trusting the record for `LOCAL_TRUST` only: then the board asks the database.
    pub fn record_hold(
        &self,
        showtime: Uuid,
        seats: &[String],
        holder: Uuid,
        expires_at: DateTime<Utc>,
        since: Mark,
    ) {
        self.lock().record_hold(showtime, seats, holder, expires_at, since, Utc::now());
    }

    /// Records seats this process freed (begun at `since`), likewise, so a seat freed a
    /// moment ago is not refused until its notification arrives. `from` says what the
    /// seats were (held or booked by a booking, or blocked): news of that heard since
    /// `since` is older than the change; other news of the seat is left alone.
    pub fn record_freed(&self, showtime: Uuid, seats: &[String], from: Freed, since: Mark) {
        self.lock().record_freed(showtime, seats, from, since, Utc::now());
    }

    /// Drops everything: notifications may have been missed.
    pub fn forget_all(&self) {
        self.lock().showtimes.clear();
    }

    async fn load(self, showtime: Uuid, load: u64) {
        let snapshot = sqlx::query_as::<_, SnapshotRow>(
            "SELECT seat_id, status, booking_id, hold_expires_at FROM showtime_seats WHERE showtime_id = $1",
        )
        .bind(showtime)
        .fetch_all(&self.pool)
        .await
        .map_err(anyhow::Error::from)
        .and_then(|rows| {
            rows.into_iter().map(SnapshotRow::into_seat).collect::<anyhow::Result<HashMap<_, _>>>()
        });
        if let Err(error) = &snapshot {
            tracing::warn!(showtime.id = %showtime, error = format!("{error:#}"), "cannot load the seat board");
        }
        self.lock().finish_loading(showtime, load, snapshot.ok());
    }
}

impl Inner {
    /// `None` when the showtime is not on the board at all.
    fn judge(&self, showtime: Uuid, seats: &[String], booking: Uuid, now: DateTime<Utc>) -> Option<Verdict> {
        let board = match self.showtimes.get(&showtime)? {
            Entry::Ready { seats, .. } => seats,
            Entry::Loading { .. } => return Some(Verdict::Unknown),
        };
        let mut taken = Vec::new();
        for seat in seats {
            match board.get(seat) {
                None => return Some(Verdict::Unknown),
                Some(occupancy) if occupancy.surely_taken_from(booking, now) => taken.push(seat.clone()),
                Some(_) => {}
            }
        }
        Some(if taken.is_empty() { Verdict::LooksFree } else { Verdict::Taken(taken) })
    }

    fn apply(&mut self, change: &SeatChange, now: DateTime<Utc>) {
        self.heard += 1;
        match self.showtimes.get_mut(&change.showtime_id) {
            Some(Entry::Loading { queued, .. }) => queued.push(change.clone()),
            Some(Entry::Ready { seats, .. }) => {
                let news = Occupancy::of(change, self.heard);
                match seats.get_mut(&change.seat_id) {
                    Some(known) => {
                        // Unless already superseded by this process's own record.
                        if !known.skips(&news, now) {
                            *known = news;
                        }
                    }
                    None => {
                        seats.insert(change.seat_id.clone(), news);
                    }
                }
            }
            None => {}
        }
    }

    fn record_hold(
        &mut self,
        showtime: Uuid,
        seats: &[String],
        holder: Uuid,
        expires_at: DateTime<Utc>,
        since: Mark,
        now: DateTime<Utc>,
    ) {
        let trusted_until = now + LOCAL_TRUST;
        let change = Change {
            state: SeatState::Held,
            holder: Some(holder),
            hold_expires_at: Some(expires_at.min(trusted_until)),
            since,
        };
        // A repeated hold of the same booking changes neither state nor holder, so it is
        // never announced: it is not awaited.
        self.record(showtime, seats, &change, now, |known| known.state == SeatState::Available);
    }

    fn record_freed(
        &mut self,
        showtime: Uuid,
        seats: &[String],
        from: Freed,
        since: Mark,
        now: DateTime<Utc>,
    ) {
        let change = Change { state: SeatState::Available, holder: None, hold_expires_at: None, since };
        self.record(showtime, seats, &change, now, |known| match from {
            Freed::OfBooking(booking) => known.holder == Some(booking),
            Freed::Blocked => known.state == SeatState::Blocked,
        });
    }

    /// Writes a change of this process over seats not heard of since it began, or heard
    /// of as `older` says, and awaits its notification unless the board already showed
    /// the seat so (then the row's state and holder did not change: nothing is
    /// announced). A showtime not (yet) on the board is left to its load.
    fn record(
        &mut self,
        showtime: Uuid,
        seat_ids: &[String],
        change: &Change,
        now: DateTime<Utc>,
        older: impl Fn(&Occupancy) -> bool,
    ) {
        let Some(Entry::Ready { seats, .. }) = self.showtimes.get_mut(&showtime) else { return };
        let shown = (change.state, change.holder);
        for seat in seat_ids {
            let Some(known) = seats.get_mut(seat) else { continue };
            if known.heard > change.since.0 && !older(known) {
                continue;
            }
            let mut own = known.own.take().filter(|own| own.until > now);
            if (known.state, known.holder) != shown {
                let own =
                    own.get_or_insert_with(|| Box::new(Unconfirmed { awaited: Vec::new(), until: now }));
                if own.awaited.len() == MAX_AWAITED {
                    own.awaited.remove(0);
                }
                own.awaited.push(shown);
                own.until = now + LOCAL_TRUST;
            }
            *known = Occupancy {
                state: change.state,
                holder: change.holder,
                hold_expires_at: change.hold_expires_at,
                heard: change.since.0,
                own,
            };
        }
    }

    fn start_loading(&mut self, showtime: Uuid) -> u64 {
        if self.showtimes.len() >= CAPACITY {
            let oldest = self
                .showtimes
                .iter()
                .filter_map(|(id, entry)| match entry {
                    Entry::Ready { load, .. } => Some((*load, *id)),
                    Entry::Loading { .. } => None,
                })
                .min();
            if let Some((_, id)) = oldest {
                self.showtimes.remove(&id);
            }
        }
        self.next_load += 1;
        let load = self.next_load;
        self.showtimes.insert(showtime, Entry::Loading { load, queued: Vec::new() });
        load
    }

    /// Replays the changes queued during the load on top of its snapshot (`None` when
    /// it failed). A load that was forgotten meanwhile is discarded: it may predate
    /// notifications that were missed.
    fn finish_loading(&mut self, showtime: Uuid, load: u64, snapshot: Option<HashMap<String, Occupancy>>) {
        let current =
            matches!(self.showtimes.get(&showtime), Some(Entry::Loading { load: l, .. }) if *l == load);
        if !current {
            return;
        }
        let Some(Entry::Loading { queued, .. }) = self.showtimes.remove(&showtime) else { return };
        // An empty snapshot is an unknown showtime: nothing to judge, nothing to keep.
        let Some(mut seats) = snapshot.filter(|seats| !seats.is_empty()) else { return };
        // Everything loaded counts as heard now: a change begun before the load is not
        // written over it.
        self.heard += 1;
        for occupancy in seats.values_mut() {
            occupancy.heard = self.heard;
        }
        for change in queued {
            seats.insert(change.seat_id.clone(), Occupancy::of(&change, self.heard));
        }
        self.showtimes.insert(showtime, Entry::Ready { load, seats });
    }
}

#[derive(sqlx::FromRow)]
struct SnapshotRow {
    seat_id: String,
    status: String,
    booking_id: Option<Uuid>,
    hold_expires_at: Option<DateTime<Utc>>,
}

impl SnapshotRow {
    fn into_seat(self) -> anyhow::Result<(String, Occupancy)> {
        let state = SeatState::from_db(&self.status)?;
        Ok((
            self.seat_id,
            Occupancy {
                state,
                holder: self.booking_id,
                hold_expires_at: self.hold_expires_at,
                heard: 0,
                own: None,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::changes::ChangeReason;

    fn occupancy(state: SeatState, holder: Option<Uuid>, expires: Option<DateTime<Utc>>) -> Occupancy {
        Occupancy { state, holder, hold_expires_at: expires, heard: 0, own: None }
    }

    #[test]
    fn only_a_live_hold_of_another_booking_or_a_sold_or_blocked_seat_is_taken() {
        let now = Utc::now();
        let (me, other) = (Uuid::new_v4(), Uuid::new_v4());
        let live = Some(now + Duration::seconds(60));
        let lapsed = Some(now - Duration::seconds(1));
        assert!(!occupancy(SeatState::Available, None, None).surely_taken_from(me, now));
        assert!(occupancy(SeatState::Booked, Some(other), None).surely_taken_from(me, now));
        assert!(occupancy(SeatState::Blocked, None, None).surely_taken_from(me, now));
        assert!(occupancy(SeatState::Held, Some(other), live).surely_taken_from(me, now));
        assert!(!occupancy(SeatState::Held, Some(me), live).surely_taken_from(me, now));
        assert!(!occupancy(SeatState::Held, Some(other), lapsed).surely_taken_from(me, now));
        // An old-format notification without an expiry is left to the database.
        assert!(!occupancy(SeatState::Held, Some(other), None).surely_taken_from(me, now));
    }

    fn held_by(showtime: Uuid, seat: &str, holder: Uuid, expires: DateTime<Utc>) -> SeatChange {
        SeatChange {
            showtime_id: showtime,
            seat_id: seat.into(),
            state: SeatState::Held,
            reason: ChangeReason::Held,
            changed_at: expires,
            holder: Some(holder),
            hold_expires_at: Some(expires),
        }
    }

    fn free(seats: &[&str]) -> HashMap<String, Occupancy> {
        seats.iter().map(|s| ((*s).to_owned(), occupancy(SeatState::Available, None, None))).collect()
    }

    fn ask(
        inner: &Inner,
        showtime: Uuid,
        seats: &[&str],
        booking: Uuid,
        now: DateTime<Utc>,
    ) -> Option<Verdict> {
        inner.judge(showtime, &seats.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(), booking, now)
    }

    #[test]
    fn changes_queued_while_loading_land_on_top_of_the_snapshot() {
        let mut inner = Inner::default();
        let (showtime, holder, me) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), None);

        let load = inner.start_loading(showtime);
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::Unknown));
        inner.apply(&held_by(showtime, "A1", holder, now + Duration::seconds(60)), now);
        // The snapshot was read before the hold committed: it says both seats are free.
        inner.finish_loading(showtime, load, Some(free(&["A1", "A2"])));

        assert_eq!(ask(&inner, showtime, &["A1", "A2"], me, now), Some(Verdict::Taken(vec!["A1".into()])));
        assert_eq!(ask(&inner, showtime, &["A2"], me, now), Some(Verdict::LooksFree));
        assert_eq!(ask(&inner, showtime, &["A1"], holder, now), Some(Verdict::LooksFree));
        assert_eq!(ask(&inner, showtime, &["Z9"], me, now), Some(Verdict::Unknown));
        // Once the hold lapses the board no longer refuses it.
        assert_eq!(ask(&inner, showtime, &["A1"], me, now + Duration::seconds(61)), Some(Verdict::LooksFree));
    }

    #[test]
    fn a_load_forgotten_meanwhile_or_of_an_unknown_showtime_is_not_kept() {
        let mut inner = Inner::default();
        let showtime = Uuid::new_v4();
        let load = inner.start_loading(showtime);
        inner.showtimes.clear();
        inner.finish_loading(showtime, load, Some(free(&["A1"])));
        assert!(inner.showtimes.is_empty());

        let load = inner.start_loading(showtime);
        inner.finish_loading(showtime, load, Some(HashMap::new()));
        assert!(inner.showtimes.is_empty());

        let load = inner.start_loading(showtime);
        inner.finish_loading(showtime, load, None);
        assert!(inner.showtimes.is_empty());
    }

    #[test]
    fn a_full_board_makes_room_by_dropping_the_oldest_showtime() {
        let mut inner = Inner::default();
        let first = Uuid::new_v4();
        for i in 0..CAPACITY {
            let showtime = if i == 0 { first } else { Uuid::new_v4() };
            let load = inner.start_loading(showtime);
            inner.finish_loading(showtime, load, Some(free(&["A1"])));
        }
        let newest = Uuid::new_v4();
        inner.start_loading(newest);
        assert_eq!(inner.showtimes.len(), CAPACITY);
        assert!(!inner.showtimes.contains_key(&first));
        assert!(inner.showtimes.contains_key(&newest));
    }

    fn released(showtime: Uuid, seat: &str, at: DateTime<Utc>) -> SeatChange {
        SeatChange {
            showtime_id: showtime,
            seat_id: seat.into(),
            state: SeatState::Available,
            reason: ChangeReason::Released,
            changed_at: at,
            holder: None,
            hold_expires_at: None,
        }
    }

    fn ready(seats: &[&str]) -> (Inner, Uuid) {
        let mut inner = Inner::default();
        let showtime = Uuid::new_v4();
        let load = inner.start_loading(showtime);
        inner.finish_loading(showtime, load, Some(free(seats)));
        (inner, showtime)
    }

    #[test]
    fn a_hold_of_this_process_is_refused_at_once_and_older_news_in_flight_does_not_undo_it() {
        let (mut inner, showtime) = ready(&["A1"]);
        let (previous, winner, me) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let expires = now + Duration::seconds(300);
        // `previous` held and released A1; its notifications are still in flight when
        // this process's hold for `winner` commits.
        let since = Mark(inner.heard);
        inner.record_hold(showtime, &["A1".into()], winner, expires, since, now);
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::Taken(vec!["A1".into()])));
        assert_eq!(ask(&inner, showtime, &["A1"], winner, now), Some(Verdict::LooksFree));

        inner.apply(&held_by(showtime, "A1", previous, expires), now);
        inner.apply(&released(showtime, "A1", now), now);
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::Taken(vec!["A1".into()])));

        // The hold's own notification confirms it, with its real expiry.
        inner.apply(&held_by(showtime, "A1", winner, expires), now);
        let later = now + LOCAL_TRUST + Duration::seconds(1);
        assert_eq!(ask(&inner, showtime, &["A1"], me, later), Some(Verdict::Taken(vec!["A1".into()])));
        // And later news applies as usual.
        inner.apply(&released(showtime, "A1", later), later);
        assert_eq!(ask(&inner, showtime, &["A1"], me, later), Some(Verdict::LooksFree));
    }

    #[test]
    fn an_unconfirmed_hold_is_believed_only_briefly() {
        let (mut inner, showtime) = ready(&["A1"]);
        let (winner, me) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let since = Mark(inner.heard);
        inner.record_hold(showtime, &["A1".into()], winner, now + Duration::seconds(300), since, now);
        // Its notification never came (say the hold was released before it was even
        // answered): past the trust window the database is asked again.
        let later = now + LOCAL_TRUST + Duration::milliseconds(1);
        assert_eq!(ask(&inner, showtime, &["A1"], me, later), Some(Verdict::LooksFree));
        // And news of the seat is no longer held back by it.
        inner.apply(&held_by(showtime, "A1", me, later + Duration::seconds(60)), later);
        assert_eq!(ask(&inner, showtime, &["A1"], winner, later), Some(Verdict::Taken(vec!["A1".into()])));
    }

    #[test]
    fn a_seat_this_process_freed_is_not_refused_while_its_notification_is_in_flight() {
        let (mut inner, showtime) = ready(&["A1", "A2"]);
        let (holder, other, me) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let expires = now + Duration::seconds(300);
        inner.apply(&held_by(showtime, "A1", holder, expires), now);
        inner.apply(&held_by(showtime, "A2", holder, expires), now);
        let since = Mark(inner.heard);
        // While the release ran, A1's hold was heard of again (news older than the
        // release) and A2 was taken by someone else right after it (newer news).
        inner.apply(&held_by(showtime, "A1", holder, expires), now);
        inner.apply(&held_by(showtime, "A2", other, expires), now);
        inner.record_freed(showtime, &["A1".into(), "A2".into()], Freed::OfBooking(holder), since, now);
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::LooksFree));
        assert_eq!(ask(&inner, showtime, &["A2"], me, now), Some(Verdict::Taken(vec!["A2".into()])));
        // A stale hold notification of A1 arriving now does not bring it back.
        inner.apply(&held_by(showtime, "A1", holder, expires), now);
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::LooksFree));
    }

    #[test]
    fn a_seat_this_process_changed_several_times_before_any_news_arrived_shows_the_last_change() {
        let (mut inner, showtime) = ready(&["A1"]);
        let (first, next, other, me) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let expires = now + Duration::seconds(300);
        let seat = ["A1".to_owned()];
        // Two bookings in turn hold and release A1 before a single notification arrives.
        inner.record_hold(showtime, &seat, first, expires, Mark(inner.heard), now);
        inner.record_freed(showtime, &seat, Freed::OfBooking(first), Mark(inner.heard), now);
        inner.record_hold(showtime, &seat, next, expires, Mark(inner.heard), now);
        inner.record_freed(showtime, &seat, Freed::OfBooking(next), Mark(inner.heard), now);
        // The first release's notification is not the last one's: the hold of `next`
        // announced after it must not show A1 taken.
        for news in [
            held_by(showtime, "A1", first, expires),
            released(showtime, "A1", now),
            held_by(showtime, "A1", next, expires),
        ] {
            inner.apply(&news, now);
            assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::LooksFree), "after {news:?}");
        }
        inner.apply(&released(showtime, "A1", now), now);
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::LooksFree));
        // Confirmed: the next news applies at once.
        inner.apply(&held_by(showtime, "A1", other, expires), now);
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::Taken(vec!["A1".into()])));
    }

    #[test]
    fn a_repeated_hold_is_not_awaited_so_a_release_made_elsewhere_shows_at_once() {
        let (mut inner, showtime) = ready(&["A1"]);
        let (holder, me) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let expires = now + Duration::seconds(300);
        let seat = ["A1".to_owned()];
        inner.record_hold(showtime, &seat, holder, expires, Mark(inner.heard), now);
        inner.apply(&held_by(showtime, "A1", holder, expires), now);
        // The same booking holds A1 again: the row's state and holder do not change, so
        // PostgreSQL announces nothing.
        inner.record_hold(showtime, &seat, holder, expires, Mark(inner.heard), now);
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::Taken(vec!["A1".into()])));
        // Another replica releases the hold: the board follows at once.
        inner.apply(&released(showtime, "A1", now), now);
        assert_eq!(ask(&inner, showtime, &["A1"], me, now), Some(Verdict::LooksFree));
    }
}
