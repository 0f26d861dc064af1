//! Live seat changes and the hold sweeper.
//!
//! A trigger (migration 0005) NOTIFYs `cinema_seat_changes` inside every transaction
//! that changes a seat, so PostgreSQL delivers each change once it commits, in commit
//! order. One `PgListener` per process receives them and fans them out to every
//! `WatchSeats` stream through a broadcast channel.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_common::shutdown::Shutdown;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::domain::SeatState;

pub const CHANNEL: &str = "cinema_seat_changes";

/// How many changes a slow watcher may fall behind before its stream is ended.
const BACKLOG: usize = 4096;
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
}

impl SeatChange {
    /// Parses `showtime_id|seat_id|status|reason|changed_at_micros` (see migration 0005).
    pub fn parse(payload: &str) -> anyhow::Result<Self> {
        let fields: Vec<&str> = payload.split('|').collect();
        let [showtime_id, seat_id, status, reason, micros] = fields[..] else {
            anyhow::bail!("malformed seat change {payload:?}");
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
        })
    }
}

/// The sending side of the fan-out; `subscribe` before answering a watcher so it
/// misses nothing committed after its call was answered.
#[derive(Clone)]
pub struct SeatChanges {
    sender: broadcast::Sender<SeatChange>,
}

impl SeatChanges {
    pub fn subscribe(&self) -> broadcast::Receiver<SeatChange> {
        self.sender.subscribe()
    }
}

/// Listens on the change channel. Returns once LISTEN is in place, so every change
/// committed after `build` is seen.
pub async fn listen(pool: &PgPool) -> anyhow::Result<(SeatChanges, PgListener)> {
    let mut listener =
        PgListener::connect_with(pool).await.context("cannot open the seat change listener")?;
    listener.listen(CHANNEL).await.context("cannot LISTEN for seat changes")?;
    let (sender, _) = broadcast::channel(BACKLOG);
    Ok((SeatChanges { sender }, listener))
}

/// Forwards notifications to the broadcast channel until shutdown.
pub async fn relay(mut listener: PgListener, changes: SeatChanges, shutdown: Shutdown) -> anyhow::Result<()> {
    loop {
        let notification = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            received = listener.recv() => received.context("the seat change listener failed")?,
        };
        match SeatChange::parse(notification.payload()) {
            // No watcher at all is the common case, not an error.
            Ok(change) => drop(changes.sender.send(change)),
            Err(error) => tracing::error!(error = format!("{error:#}"), "dropping an unreadable seat change"),
        }
    }
}

/// Frees lapsed holds every `interval` until shutdown, so watchers see them go.
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
            return Ok(());
        }
    }
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
        for bad in ["", "x|C7|held|held|1", &format!("{id}|C7|held|stolen|1"), &format!("{id}|C7|held|held")]
        {
            assert!(SeatChange::parse(bad).is_err(), "{bad}");
        }
    }
}
