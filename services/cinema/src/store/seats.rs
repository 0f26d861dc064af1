//! Seat changes through the seat functions of the migrations: holds, confirmations,
//! releases, cancellations, extensions, and staff blocking. Each answers with typed
//! outcome rows (a PostgreSQL enum per function family), mapped here to results.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_kit::backoff::Backoff;

use super::{Hold, HoldPosition, ListedHold, SeatRow, Store};
use crate::domain::{BookingId, HoldTerms, HoldTtl, Money, SeatSelection, ShowtimeId};
use crate::error::CinemaError;

/// `cinema_lock_outcome`: what `cinema_lock_seats` says of the hold, or of one seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "cinema_lock_outcome", rename_all = "snake_case")]
enum LockOutcome {
    ShowtimeNotFound,
    ShowtimeStarted,
    /// Holds closed: `hold_expires_at` carries the moment they did.
    HoldsClosed,
    Unknown,
    Unavailable,
    /// A free seat the hold would strand (the no-orphan rule).
    Orphan,
    Held,
    /// The booking's seats were released before this lock ran: it holds nothing.
    Released,
    /// The user has as many live holds on the showtime as they may: nothing was locked.
    HoldLimit,
}

/// `cinema_confirm_outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "cinema_confirm_outcome", rename_all = "snake_case")]
enum ConfirmOutcome {
    ShowtimeNotFound,
    Unavailable,
    Booked,
}

/// `cinema_free_outcome`, of `cinema_release_seats` and `cinema_cancel_seats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "cinema_free_outcome", rename_all = "snake_case")]
enum FreeOutcome {
    ShowtimeNotFound,
    Released,
}

/// `cinema_extend_outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "cinema_extend_outcome", rename_all = "snake_case")]
enum ExtendOutcome {
    ShowtimeNotFound,
    NoLiveHold,
    AlreadyExtended,
    Extended,
}

/// `cinema_staff_outcome`, of `cinema_block_seats` and `cinema_unblock_seats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "cinema_staff_outcome", rename_all = "snake_case")]
enum StaffOutcome {
    ShowtimeNotFound,
    Unknown,
    Unavailable,
    Blocked,
    Unblocked,
}

/// One row of `cinema_lock_seats`: an outcome plus, for held seats, the seat.
#[derive(sqlx::FromRow)]
struct LockRow {
    outcome: LockOutcome,
    seat_id: Option<String>,
    row_label: Option<String>,
    seat_number: Option<i32>,
    category: Option<String>,
    amount_minor: Option<i64>,
    currency: Option<String>,
    hold_expires_at: Option<DateTime<Utc>>,
}

/// One row of `cinema_extend_hold`.
#[derive(sqlx::FromRow)]
struct ExtendRow {
    outcome: ExtendOutcome,
    seat_id: Option<String>,
    hold_expires_at: Option<DateTime<Utc>>,
}

/// The seat of an outcome row that names one.
fn named_seat(outcome: impl std::fmt::Debug, seat: Option<String>) -> anyhow::Result<String> {
    seat.with_context(|| format!("seat outcome {outcome:?} without a seat"))
}

/// Refuses a request that names seats the hall does not have or, failing that, seats
/// that are taken; each list sorted, as clients are shown it.
fn refuse_seats(mut unknown: Vec<String>, mut unavailable: Vec<String>) -> Result<(), CinemaError> {
    if !unknown.is_empty() {
        unknown.sort();
        return Err(CinemaError::UnknownSeats(unknown));
    }
    if !unavailable.is_empty() {
        unavailable.sort();
        return Err(CinemaError::SeatsUnavailable(unavailable));
    }
    Ok(())
}

impl Store {
    /// Holds all of `seats` for `booking`, or none of them. With `no_orphans` the hold
    /// is also refused (`SeatRule`) if it would strand a free seat, decided by the same
    /// statement under the same row locks, so racing holds cannot strand one together.
    /// With a limit, a user who already has that many live holds on the showtime is
    /// refused (`HoldLimit`) before anything is locked; a user's holds take turns, so
    /// racing holds cannot pass the limit together.
    pub async fn lock_seats(
        &self,
        showtime: ShowtimeId,
        seats: &SeatSelection,
        booking: BookingId,
        terms: HoldTerms,
    ) -> Result<Hold, CinemaError> {
        let seat_ids = seats.to_strings();
        let max_holds = terms.limit.map_or(0, |limit| i32::try_from(limit.max).unwrap_or(i32::MAX));
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, LockRow>("SELECT * FROM cinema_lock_seats($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(showtime.as_uuid())
                .bind(&seat_ids)
                .bind(booking.as_uuid())
                .bind(terms.limit.map(|limit| limit.user.as_uuid()))
                .bind(max_holds)
                .bind(terms.ttl.seconds())
                .bind(terms.cutoff.seconds())
                .bind(terms.no_orphans)
                .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot lock seats of showtime {showtime}"))?;

        let mut unknown = Vec::new();
        let mut unavailable = Vec::new();
        let mut stranded = Vec::new();
        let mut held = Vec::new();
        let mut expires_at = None;
        for row in rows {
            match row.outcome {
                LockOutcome::ShowtimeNotFound => return Err(CinemaError::not_found("showtime", showtime)),
                LockOutcome::ShowtimeStarted => {
                    return Err(CinemaError::BadInput(format!("showtime {showtime} has already started")));
                }
                LockOutcome::HoldsClosed => {
                    let closed_at = row.hold_expires_at.context("closed holds without a closing time")?;
                    return Err(CinemaError::HoldsClosed { showtime: showtime.to_string(), closed_at });
                }
                LockOutcome::Released => {
                    return Err(CinemaError::Conflict(format!(
                        "booking {booking} was released; it cannot hold seats again"
                    )));
                }
                LockOutcome::HoldLimit => {
                    let limit = terms.limit.context("a hold refused at a limit it was not given")?;
                    return Err(CinemaError::HoldLimit(limit.max));
                }
                LockOutcome::Unknown => unknown.push(named_seat(row.outcome, row.seat_id)?),
                LockOutcome::Unavailable => unavailable.push(named_seat(row.outcome, row.seat_id)?),
                LockOutcome::Orphan => stranded.push(named_seat(row.outcome, row.seat_id)?),
                LockOutcome::Held => {
                    expires_at = row.hold_expires_at;
                    held.push(
                        SeatRow {
                            seat_id: named_seat(row.outcome, row.seat_id)?,
                            row_label: row.row_label.context("held seat without row")?,
                            seat_number: row.seat_number.context("held seat without number")?,
                            category: row.category.context("held seat without category")?,
                            amount_minor: row.amount_minor,
                            currency: row.currency,
                            status: "held".to_owned(),
                        }
                        .into_record()?,
                    );
                }
            }
        }
        refuse_seats(unknown, unavailable)?;
        if !stranded.is_empty() {
            stranded.sort();
            return Err(CinemaError::SeatRule(stranded));
        }
        let total = Money::sum(held.iter().map(|s| &s.price))?.context("lock returned no seats")?;
        let expires_at = expires_at.context("lock returned no expiry")?;
        Ok(Hold { seats: held, total, expires_at })
    }

    /// Books `seats` for `booking` if it holds (or already booked) every one of them.
    pub async fn confirm_seats(
        &self,
        showtime: ShowtimeId,
        booking: BookingId,
        seats: &SeatSelection,
    ) -> Result<Vec<String>, CinemaError> {
        let seat_ids = seats.to_strings();
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, (ConfirmOutcome, Option<String>)>(
                "SELECT outcome, seat_id FROM cinema_confirm_seats($1, $2, $3)",
            )
            .bind(showtime.as_uuid())
            .bind(booking.as_uuid())
            .bind(&seat_ids)
            .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot confirm seats of showtime {showtime}"))?;
        let mut booked = Vec::new();
        let mut unavailable = Vec::new();
        for (outcome, seat) in rows {
            match outcome {
                ConfirmOutcome::ShowtimeNotFound => return Err(CinemaError::not_found("showtime", showtime)),
                ConfirmOutcome::Unavailable => unavailable.push(named_seat(outcome, seat)?),
                ConfirmOutcome::Booked => booked.push(named_seat(outcome, seat)?),
            }
        }
        if unavailable.is_empty() { Ok(booked) } else { Err(CinemaError::SeatsUnavailable(unavailable)) }
    }

    /// Frees the seats `booking` holds; returns them (none on a repeated call).
    pub async fn release_seats(
        &self,
        showtime: ShowtimeId,
        booking: BookingId,
    ) -> Result<Vec<String>, CinemaError> {
        self.free_seats(
            "SELECT outcome, seat_id FROM cinema_release_seats($1, $2)",
            "release",
            showtime,
            booking,
        )
        .await
    }

    /// Frees every seat `booking` holds or has booked (a cancelled booking); returns
    /// them (none on a repeated call).
    pub async fn cancel_seats(
        &self,
        showtime: ShowtimeId,
        booking: BookingId,
    ) -> Result<Vec<String>, CinemaError> {
        self.free_seats(
            "SELECT outcome, seat_id FROM cinema_cancel_seats($1, $2)",
            "cancel",
            showtime,
            booking,
        )
        .await
    }

    /// Runs one of the seat-freeing SQL functions for `booking`; returns the freed seats.
    async fn free_seats(
        &self,
        sql: &'static str,
        verb: &str,
        showtime: ShowtimeId,
        booking: BookingId,
    ) -> Result<Vec<String>, CinemaError> {
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, (FreeOutcome, Option<String>)>(sql)
                .bind(showtime.as_uuid())
                .bind(booking.as_uuid())
                .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot {verb} seats of showtime {showtime}"))?;
        let mut freed = Vec::new();
        for (outcome, seat) in rows {
            match outcome {
                FreeOutcome::ShowtimeNotFound => return Err(CinemaError::not_found("showtime", showtime)),
                FreeOutcome::Released => freed.push(named_seat(outcome, seat)?),
            }
        }
        Ok(freed)
    }

    /// Seats held now, over every showtime: a lapsed hold counts as free even before
    /// the sweeper releases it. Reads the partial index on held seats' expiry.
    pub async fn active_holds(&self) -> anyhow::Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM showtime_seats WHERE status = 'held' AND hold_expires_at > now()",
        )
        .fetch_one(&self.pool)
        .await
        .context("cannot count the active holds")
    }

    /// Live holds taken at least `min_age` ago, one per booking and showtime, oldest
    /// first, after `after` (when the hold was taken, then booking). Reads the partial
    /// index on held seats' expiry, so it costs what the live holds number, not the
    /// showtimes' seats.
    pub async fn list_holds(
        &self,
        min_age: Duration,
        after: Option<HoldPosition>,
        limit: u32,
    ) -> anyhow::Result<Vec<ListedHold>> {
        let min_age_ms = i64::try_from(min_age.as_millis()).context("hold age out of range")?;
        let (after_at, after_booking) = match after {
            Some(position) => (Some(position.held_at), Some(position.booking_id.as_uuid())),
            None => (None, None),
        };
        let rows: Vec<(uuid::Uuid, uuid::Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT showtime_id, booking_id, held_at
               FROM showtime_seats
              WHERE status = 'held' AND hold_expires_at > now()
                AND held_at <= now() - $1 * interval '1 millisecond'
                AND ($2::timestamptz IS NULL OR (held_at, booking_id) > ($2, $3::uuid))
              GROUP BY showtime_id, booking_id, held_at
              ORDER BY held_at, booking_id
              LIMIT $4",
        )
        .bind(min_age_ms)
        .bind(after_at)
        .bind(after_booking)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("cannot list the live holds")?;
        Ok(rows
            .into_iter()
            .map(|(showtime_id, booking_id, held_at)| ListedHold {
                showtime_id: ShowtimeId::from_uuid(showtime_id),
                position: HoldPosition { held_at, booking_id: BookingId::from_uuid(booking_id) },
            })
            .collect())
    }

    /// Pushes `booking`'s live hold back by `extension`, once per hold; returns the
    /// seats and their new expiry.
    pub async fn extend_hold(
        &self,
        showtime: ShowtimeId,
        booking: BookingId,
        extension: HoldTtl,
    ) -> Result<(Vec<String>, DateTime<Utc>), CinemaError> {
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, ExtendRow>("SELECT * FROM cinema_extend_hold($1, $2, $3)")
                .bind(showtime.as_uuid())
                .bind(booking.as_uuid())
                .bind(extension.seconds())
                .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot extend the hold of booking {booking}"))?;
        let mut seats = Vec::new();
        let mut expires_at = None;
        for row in rows {
            match row.outcome {
                ExtendOutcome::ShowtimeNotFound => return Err(CinemaError::not_found("showtime", showtime)),
                ExtendOutcome::NoLiveHold => {
                    return Err(CinemaError::HoldExpired(format!(
                        "booking {booking} holds no seats of showtime {showtime} any more"
                    )));
                }
                ExtendOutcome::AlreadyExtended => {
                    return Err(CinemaError::Conflict(format!(
                        "the hold of booking {booking} was already extended"
                    )));
                }
                ExtendOutcome::Extended => {
                    expires_at = row.hold_expires_at;
                    seats.push(named_seat(row.outcome, row.seat_id)?);
                }
            }
        }
        Ok((seats, expires_at.context("extension returned no expiry")?))
    }
}

/// How often a seat function is re-run after PostgreSQL aborted it to break a deadlock
/// or a serialization conflict. Seat functions lock in seat order, so neither should
/// happen among themselves; this covers anything else that locks seats (ad-hoc SQL,
/// future statements) and keeps such aborts from ever reaching a client.
const CONFLICT_ATTEMPTS: u32 = 5;
/// Pauses between those reruns: 5 ms doubling to 20 ms, jittered, so that the two
/// transactions a deadlock aborted do not collide again on their reruns.
const CONFLICT_FIRST_PAUSE: Duration = Duration::from_millis(5);
const CONFLICT_MAX_PAUSE: Duration = Duration::from_millis(20);

/// Runs `call` again when PostgreSQL reports a deadlock (40P01) or a serialization
/// failure (40001): the aborted transaction changed nothing, so a rerun is safe.
async fn retry_conflicts<T, F, Fut>(mut call: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let backoff = Backoff::new(CONFLICT_FIRST_PAUSE, CONFLICT_MAX_PAUSE);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if attempt < CONFLICT_ATTEMPTS && is_transient_conflict(&e) => {
                tracing::warn!(attempt, error = %e, "seat statement aborted by a lock conflict; retrying");
                tokio::time::sleep(backoff.delay(attempt - 1)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}

fn is_transient_conflict(error: &sqlx::Error) -> bool {
    error.as_database_error().and_then(|e| e.code()).is_some_and(|code| code == "40P01" || code == "40001")
}

/// Staff blocking and unblocking.
impl Store {
    /// Blocks every requested seat, or none if any is unknown, held or booked.
    pub async fn block_seats(
        &self,
        showtime: ShowtimeId,
        seats: &SeatSelection,
    ) -> Result<Vec<String>, CinemaError> {
        let sql = "SELECT outcome, seat_id FROM cinema_block_seats($1, $2)";
        self.staff_change(sql, "block", StaffOutcome::Blocked, showtime, seats).await
    }

    /// Puts the blocked ones among `seats` back on sale; returns those.
    pub async fn unblock_seats(
        &self,
        showtime: ShowtimeId,
        seats: &SeatSelection,
    ) -> Result<Vec<String>, CinemaError> {
        let sql = "SELECT outcome, seat_id FROM cinema_unblock_seats($1, $2)";
        self.staff_change(sql, "unblock", StaffOutcome::Unblocked, showtime, seats).await
    }

    /// Runs the block or unblock SQL function (`verb`) over `seats`; `done` is its
    /// outcome for a changed seat.
    async fn staff_change(
        &self,
        sql: &'static str,
        verb: &str,
        done: StaffOutcome,
        showtime: ShowtimeId,
        seats: &SeatSelection,
    ) -> Result<Vec<String>, CinemaError> {
        let seat_ids = seats.to_strings();
        let rows = retry_conflicts(|| {
            sqlx::query_as::<_, (StaffOutcome, Option<String>)>(sql)
                .bind(showtime.as_uuid())
                .bind(&seat_ids)
                .fetch_all(&self.pool)
        })
        .await
        .with_context(|| format!("cannot {verb} seats of showtime {showtime}"))?;
        staff_outcomes(showtime, rows, done)
    }
}

/// The changed seats, or why nothing changed.
fn staff_outcomes(
    showtime: ShowtimeId,
    rows: Vec<(StaffOutcome, Option<String>)>,
    done: StaffOutcome,
) -> Result<Vec<String>, CinemaError> {
    let mut ok = Vec::new();
    let mut unknown = Vec::new();
    let mut unavailable = Vec::new();
    for (outcome, seat) in rows {
        match outcome {
            StaffOutcome::ShowtimeNotFound => return Err(CinemaError::not_found("showtime", showtime)),
            StaffOutcome::Unknown => unknown.push(named_seat(outcome, seat)?),
            StaffOutcome::Unavailable => unavailable.push(named_seat(outcome, seat)?),
            StaffOutcome::Blocked | StaffOutcome::Unblocked if outcome == done => {
                ok.push(named_seat(outcome, seat)?);
            }
            StaffOutcome::Blocked | StaffOutcome::Unblocked => {
                return Err(anyhow::anyhow!("unexpected staff outcome {outcome:?} for seat {seat:?}").into());
            }
        }
    }
    refuse_seats(unknown, unavailable)?;
    Ok(ok)
}
