//! Live seat changes and the hold sweeper.
//!
//! A trigger (migrations 0002, 0003) NOTIFYs `cinema_seat_changes` inside every transaction
//! that changes a seat, so PostgreSQL delivers each change once it commits, in commit
//! order. One `PgListener` per process receives them and fans them out to every
//! `WatchSeats` stream through a broadcast channel.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_kit::backoff::Backoff;
use marquee_kit::shutdown::Shutdown;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use uuid::Uuid;

use crate::board::SeatBoard;
use crate::domain::SeatState;

pub const CHANNEL: &str = "cinema_seat_changes";

/// How many changes a slow watcher may fall behind before its stream is ended.
const BACKLOG: usize = 4096;
/// Pauses between attempts to reconnect the listener while PostgreSQL is unreachable:
/// 100 ms doubling to 5 s, jittered so that the replicas, cut off together, do not all
/// come back at once.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Lapsed holds freed per sweeper statement.
const SWEEP_BATCH: i32 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeReason {
    Held,
    Booked,
    Released,
    Expired,
    Blocked,
    Unblocked,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeatChange {
    pub showtime_id: Uuid,
    pub seat_id: String,
    pub state: SeatState,
    pub reason: ChangeReason,
    pub changed_at: DateTime<Utc>,
    /// The booking holding or owning the seat, when held or booked.
    pub holder: Option<Uuid>,
    /// When a hold lapses, as written (a later ExtendHold is not announced).
    pub hold_expires_at: Option<DateTime<Utc>>,
}

impl SeatChange {
    /// Parses `showtime_id|seat_id|status|reason|changed_at_micros|booking_id|hold_expires_micros`
    /// (migration 0003; the first five fields alone are what migration 0002 wrote).
    pub fn parse(payload: &str) -> anyhow::Result<Self> {
        let fields: Vec<&str> = payload.split('|').collect();
        let (showtime_id, seat_id, status, reason, micros, holder, expires) = match fields[..] {
            [a, b, c, d, e] => (a, b, c, d, e, "", ""),
            [a, b, c, d, e, f, g] => (a, b, c, d, e, f, g),
            _ => anyhow::bail!("malformed seat change {payload:?}"),
        };
        let reason = match reason {
            "held" => ChangeReason::Held,
            "booked" => ChangeReason::Booked,
            "released" => ChangeReason::Released,
            "expired" => ChangeReason::Expired,
            "blocked" => ChangeReason::Blocked,
            "unblocked" => ChangeReason::Unblocked,
            other => anyhow::bail!("unknown seat change reason {other:?}"),
        };
        let micros: i64 = micros.parse().with_context(|| format!("bad change time in {payload:?}"))?;
        Ok(Self {
            showtime_id: Uuid::parse_str(showtime_id)
                .with_context(|| format!("bad showtime in {payload:?}"))?,
            seat_id: seat_id.to_owned(),
            state: SeatState::from_db(status)?,
            reason,
            changed_at: DateTime::from_timestamp_micros(micros).context("change time out of range")?,
            holder: optional_field(holder, |raw| Uuid::parse_str(raw).ok())
                .with_context(|| format!("bad holder in {payload:?}"))?,
            hold_expires_at: optional_field(expires, |raw| {
                raw.parse().ok().and_then(DateTime::from_timestamp_micros)
            })
            .with_context(|| format!("bad hold expiry in {payload:?}"))?,
        })
    }
}

/// `Ok(None)` for an empty field, `Err` for one that does not parse.
fn optional_field<T>(raw: &str, parse: impl FnOnce(&str) -> Option<T>) -> anyhow::Result<Option<T>> {
    if raw.is_empty() { Ok(None) } else { parse(raw).map(Some).context("unreadable field") }
}

/// What the relay broadcasts: a change, or word that changes may have gone unheard.
#[derive(Clone, Debug)]
enum Relayed {
    Change(SeatChange),
    Gap,
}

/// The sending side of the fan-out; `subscribe` before answering a watcher so it
/// misses nothing committed after its call was answered.
#[derive(Clone)]
pub struct SeatChanges {
    sender: broadcast::Sender<Relayed>,
}

impl SeatChanges {
    pub fn subscribe(&self) -> SeatWatch {
        SeatWatch(self.sender.subscribe())
    }

    fn send(&self, relayed: Relayed) {
        // No watcher at all is the common case, not an error.
        drop(self.sender.send(relayed));
    }
}

/// Why a watcher's seat map can no longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum Missed {
    #[error("the watcher fell {0} changes behind")]
    Behind(u64),
    #[error("seat changes may have been missed while the service was cut off from its database")]
    Gap,
}

/// One watcher's end of the fan-out.
pub struct SeatWatch(broadcast::Receiver<Relayed>);

impl SeatWatch {
    /// The next change to `showtime`, or why some were missed; `None` once the relay has
    /// stopped. Cancel-safe, like the receiver it wraps.
    pub async fn next(&mut self, showtime: Uuid) -> Option<Result<SeatChange, Missed>> {
        loop {
            return match self.0.recv().await {
                Ok(Relayed::Change(change)) if change.showtime_id == showtime => Some(Ok(change)),
                Ok(Relayed::Change(_)) => continue,
                Ok(Relayed::Gap) => Some(Err(Missed::Gap)),
                Err(RecvError::Lagged(missed)) => Some(Err(Missed::Behind(missed))),
                Err(RecvError::Closed) => None,
            };
        }
    }
}

/// Listens on the change channel. Returns once LISTEN is in place, so every change
/// committed after `build` is seen.
pub async fn listen(pool: &PgPool) -> anyhow::Result<(SeatChanges, PgListener)> {
    let listener = open_listener(pool).await?;
    let (sender, _) = broadcast::channel(BACKLOG);
    Ok((SeatChanges { sender }, listener))
}

async fn open_listener(pool: &PgPool) -> anyhow::Result<PgListener> {
    let mut listener =
        PgListener::connect_with(pool).await.context("cannot open the seat change listener")?;
    listener.listen(CHANNEL).await.context("cannot LISTEN for seat changes")?;
    Ok(listener)
}

/// Forwards notifications to the seat board and the broadcast channel until shutdown.
/// An unreachable PostgreSQL is waited out, however long; only a closed pool ends it.
/// Whenever changes may have been missed, the board forgets what it has and every
/// watcher is told to reload.
pub async fn relay(
    mut listener: PgListener,
    pool: PgPool,
    changes: SeatChanges,
    board: SeatBoard,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            received = listener.try_recv() => received,
        };
        let notification = match received {
            Ok(Some(notification)) => notification,
            Ok(None) => {
                // The connection dropped and sqlx re-opened it, LISTEN included; what was
                // sent meanwhile is gone, so neither the board nor a watcher may trust
                // what it has.
                tracing::warn!("seat change listener lost its connection; forgetting the seat board");
                board.forget_all();
                changes.send(Relayed::Gap);
                continue;
            }
            Err(error @ sqlx::Error::PoolClosed) => {
                return Err(error).context("the seat change listener failed");
            }
            Err(error) => {
                // PostgreSQL is unreachable (the reconnect failed). Giving up would leave
                // every watcher waiting forever for changes that never come, so wait it out.
                tracing::warn!(error = format!("{error:#}"), "seat change listener cannot reconnect");
                let Some(back) = reconnect(&pool, &board, &shutdown).await? else { return Ok(()) };
                listener = back;
                // LISTEN is back, but a showtime loaded while it was away, and every
                // watcher's seat map, may lack changes committed before it returned.
                board.forget_all();
                changes.send(Relayed::Gap);
                continue;
            }
        };
        match SeatChange::parse(notification.payload()) {
            Ok(change) => {
                board.apply(&change);
                changes.send(Relayed::Change(change));
            }
            Err(error) => tracing::error!(error = format!("{error:#}"), "dropping an unreadable seat change"),
        }
    }
}

/// Opens a new listener, with backoff, until one has LISTEN in place; `None` on shutdown.
/// Changes are missed meanwhile, so the board forgets what it has after every failure.
async fn reconnect(
    pool: &PgPool,
    board: &SeatBoard,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<PgListener>> {
    let backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    let mut failures: u32 = 0;
    loop {
        board.forget_all();
        tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            () = tokio::time::sleep(backoff.delay(failures)) => {}
        }
        let opened = tokio::select! {
            () = shutdown.cancelled() => return Ok(None),
            opened = open_listener(pool) => opened,
        };
        match opened {
            Ok(listener) => {
                tracing::info!(failures, "seat change listener reconnected; forgetting the seat board");
                return Ok(Some(listener));
            }
            Err(error) if pool.is_closed() => return Err(error),
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    error = format!("{error:#}"),
                    attempt = failures,
                    "seat change listener cannot reconnect; forgetting the seat board and retrying"
                );
            }
        }
    }
}

/// Frees lapsed holds every `interval` until shutdown, so watchers see them go, and
/// forgets release records older than a day.
pub async fn sweep(pool: PgPool, interval: Duration, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        // A failed sweep is retried on the next tick: holds lapse lazily anyway.
        if let Err(error) = sweep_once(&pool).await {
            tracing::warn!(error = format!("{error:#}"), "hold sweep failed");
        }
    }
}

async fn sweep_once(pool: &PgPool) -> anyhow::Result<()> {
    loop {
        let freed: i32 = sqlx::query_scalar("SELECT cinema_release_expired_holds($1)")
            .bind(SWEEP_BATCH)
            .fetch_one(pool)
            .await
            .context("cannot release lapsed holds")?;
        if freed > 0 {
            tracing::info!(seats = freed, "lapsed holds released");
        }
        if freed < SWEEP_BATCH {
            break;
        }
    }
    // Release records outlive any lock they could refuse by far (migration 0008).
    let forgotten: i32 = sqlx::query_scalar("SELECT cinema_forget_released_bookings($1)")
        .bind(SWEEP_BATCH)
        .fetch_one(pool)
        .await
        .context("cannot forget old release records")?;
    if forgotten > 0 {
        tracing::debug!(bookings = forgotten, "old release records forgotten");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse_or_fail_loudly() {
        let id = Uuid::new_v4();
        let change = SeatChange::parse(&format!("{id}|C7|available|expired|1763772000123456")).unwrap();
        assert_eq!(change.showtime_id, id);
        assert_eq!(
            (change.seat_id.as_str(), change.state, change.reason),
            ("C7", SeatState::Available, ChangeReason::Expired)
        );
        assert_eq!(change.changed_at.timestamp_micros(), 1_763_772_000_123_456);
        assert_eq!((change.holder, change.hold_expires_at), (None, None));

        let holder = Uuid::new_v4();
        let held =
            SeatChange::parse(&format!("{id}|C7|held|held|1763772000123456|{holder}|1763772480000000"))
                .unwrap();
        assert_eq!(held.holder, Some(holder));
        assert_eq!(held.hold_expires_at.unwrap().timestamp_micros(), 1_763_772_480_000_000);
        let freed = SeatChange::parse(&format!("{id}|C7|available|released|1763772000123456||")).unwrap();
        assert_eq!((freed.holder, freed.hold_expires_at), (None, None));

        for bad in [
            "",
            "x|C7|held|held|1",
            &format!("{id}|C7|held|stolen|1"),
            &format!("{id}|C7|held|held"),
            &format!("{id}|C7|held|held|1|not-a-uuid|2"),
            &format!("{id}|C7|held|held|1|{holder}|soon"),
            &format!("{id}|C7|held|held|1|{holder}"),
        ] {
            assert!(SeatChange::parse(bad).is_err(), "{bad}");
        }
    }
}
