//! When to try a failed event again: the pure part of the retry queues.
//!
//! A delivery that failed because a dependency is down is republished to a delay
//! queue and acknowledged; the queue's TTL hands it back to the work queue later.
//! One delay queue per backoff step (`<queue>.retry.<ms>`), each message expiring a
//! jittered time within its step: a queue only expires messages at its head, so
//! mixing long and short delays in one queue would hold short ones behind long ones.
//! How often an event was retried and when it first failed travel in its headers,
//! so the schedule survives restarts of the worker and of the broker.

use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use marquee_kit::backoff::Backoff;

/// Retries so far (`LongUInt`).
pub const RETRIES_HEADER: &str = "x-marquee-retries";
/// Milliseconds since the epoch of the first failure (`LongLongInt`).
pub const FIRST_FAILURE_HEADER: &str = "x-marquee-first-failure-ms";

/// Where an event stands in its retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryState {
    pub retries: u32,
    pub first_failure_ms: Option<i64>,
}

impl RetryState {
    /// Read from a delivery's headers; a first delivery has none.
    pub fn from_headers(headers: Option<&FieldTable>) -> Self {
        let Some(headers) = headers else { return Self::default() };
        let inner = headers.inner();
        let retries = inner.get(RETRIES_HEADER).and_then(as_i64).and_then(|n| u32::try_from(n).ok());
        Self {
            retries: retries.unwrap_or(0),
            first_failure_ms: inner.get(FIRST_FAILURE_HEADER).and_then(as_i64),
        }
    }

    /// `headers` with this state written in.
    pub fn write(self, headers: &mut FieldTable) {
        headers.insert(RETRIES_HEADER.into(), AMQPValue::LongUInt(self.retries));
        if let Some(first) = self.first_failure_ms {
            headers.insert(FIRST_FAILURE_HEADER.into(), AMQPValue::LongLongInt(first));
        }
    }
}

fn as_i64(value: &AMQPValue) -> Option<i64> {
    match *value {
        AMQPValue::LongLongInt(n) => Some(n),
        AMQPValue::LongInt(n) => Some(i64::from(n)),
        AMQPValue::LongUInt(n) => Some(i64::from(n)),
        AMQPValue::ShortInt(n) => Some(i64::from(n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(n)),
        _ => None,
    }
}

/// What to do with an event that just failed for a transient reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Republish to the delay queue of `step`, expiring after `after`.
    RetryIn { step: Duration, after: Duration, state: RetryState },
    /// The budget is spent.
    GiveUp,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// How long after its first failure an event is still retried.
    pub budget: Duration,
}

impl RetryPolicy {
    /// The delay queues to declare, one per step.
    pub fn steps(&self) -> Vec<Duration> {
        self.backoff.steps()
    }

    /// True when a failure of this attempt would spend the budget: the attempt
    /// should then settle for what it can do (e.g. a message without the showtime's
    /// details) rather than fail.
    pub fn last_chance(&self, state: RetryState, now_ms: i64) -> bool {
        state.first_failure_ms.is_some_and(|first| elapsed(first, now_ms) >= self.budget)
    }

    /// After a transient failure at `now_ms`; `unit` is the jitter draw in `[0, 1)`.
    pub fn next(&self, state: RetryState, now_ms: i64, unit: f64) -> Next {
        let first = state.first_failure_ms.unwrap_or(now_ms);
        if elapsed(first, now_ms) >= self.budget {
            return Next::GiveUp;
        }
        Next::RetryIn {
            step: self.backoff.step(state.retries),
            after: self.backoff.delay_at(state.retries, unit),
            state: RetryState { retries: state.retries.saturating_add(1), first_failure_ms: Some(first) },
        }
    }
}

fn elapsed(since_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms.saturating_sub(since_ms)).unwrap_or(0))
}

/// The delay queue of one step.
pub fn delay_queue(queue: &str, step: Duration) -> String {
    format!("{queue}.retry.{}", step.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn policy() -> RetryPolicy {
        RetryPolicy { backoff: Backoff::new(SECOND, SECOND * 8), budget: SECOND * 60 }
    }

    #[test]
    fn the_first_failure_starts_the_clock_and_the_first_step() {
        let next = policy().next(RetryState::default(), 10_000, 0.0);
        assert_eq!(
            next,
            Next::RetryIn {
                step: SECOND,
                after: SECOND / 2,
                state: RetryState { retries: 1, first_failure_ms: Some(10_000) }
            }
        );
    }

    #[test]
    fn later_failures_keep_the_first_failure_time_and_climb_the_steps() {
        let state = RetryState { retries: 5, first_failure_ms: Some(10_000) };
        let Next::RetryIn { step, after, state } = policy().next(state, 40_000, 0.999) else {
            panic!("within the budget");
        };
        assert_eq!(step, SECOND * 8, "capped");
        assert!(after > SECOND * 7 && after <= step);
        assert_eq!(state, RetryState { retries: 6, first_failure_ms: Some(10_000) });
    }

    #[test]
    fn once_the_budget_is_spent_it_gives_up_and_the_attempt_before_knows_it() {
        let state = RetryState { retries: 9, first_failure_ms: Some(10_000) };
        assert!(!policy().last_chance(state, 69_999));
        assert!(policy().last_chance(state, 70_000));
        assert_eq!(policy().next(state, 70_000, 0.5), Next::GiveUp);
        assert!(!policy().last_chance(RetryState::default(), 70_000), "a first attempt is never the last");
    }

    #[test]
    fn the_state_travels_in_headers() {
        let state = RetryState { retries: 3, first_failure_ms: Some(1_764_000_000_000) };
        let mut headers = FieldTable::default();
        state.write(&mut headers);
        assert_eq!(RetryState::from_headers(Some(&headers)), state);
        assert_eq!(RetryState::from_headers(None), RetryState::default());
    }

    #[test]
    fn each_step_has_its_own_delay_queue() {
        let names: Vec<String> =
            policy().steps().into_iter().map(|step| delay_queue("marquee.notifications", step)).collect();
        assert_eq!(
            names,
            [
                "marquee.notifications.retry.1000",
                "marquee.notifications.retry.2000",
                "marquee.notifications.retry.4000",
                "marquee.notifications.retry.8000"
            ]
        );
    }
}
