//! The one retry schedule for a dependency that is down: exponential backoff with
//! jitter, so that callers who failed together do not all come back together.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// `first · 2^attempt`, capped at `max`, with "equal jitter": the pause is a random
/// point in the upper half of that step, never shorter than half of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { first, max: max.max(first) }
    }

    /// The step of retry number `attempt` (0 for the first retry) before jitter.
    pub fn step(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.first.saturating_mul(factor).min(self.max)
    }

    /// The pause before retry number `attempt`, jittered.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_at(attempt, fastrand::f64())
    }

    /// `delay` with the random draw passed in (`unit` in `[0, 1)`), for tests.
    pub fn delay_at(&self, attempt: u32, unit: f64) -> Duration {
        let step = self.step(attempt);
        step / 2 + step.mul_f64(unit.clamp(0.0, 1.0) / 2.0)
    }

    /// Every distinct step, shortest first: `first`, `2·first`, … up to `max`.
    pub fn steps(&self) -> Vec<Duration> {
        let mut steps = Vec::new();
        let mut attempt = 0;
        loop {
            let step = self.step(attempt);
            if steps.last() == Some(&step) || step.is_zero() {
                return steps;
            }
            steps.push(step);
            attempt += 1;
        }
    }
}

/// The retries of a long-running task that fails now and then (a broker session, a
/// listener): how many failures in a row, and the pause after each.
#[derive(Debug)]
pub struct Reconnect {
    backoff: Backoff,
    /// Failures since the task last got going.
    failures: u32,
    /// Names the task in logs, e.g. "outbox relay".
    what: &'static str,
}

impl Reconnect {
    pub fn new(what: &'static str, first: Duration, max: Duration) -> Self {
        Self { backoff: Backoff::new(first, max), failures: 0, what }
    }

    /// The task got going again: the next failure starts the backoff over.
    pub fn connected(&mut self) {
        self.failures = 0;
    }

    /// Logs `failure` ("<what> interrupted", with the pause) and sleeps the pause,
    /// longer after each failure in a row. `false` when `stop` was cancelled first:
    /// the caller stops retrying.
    pub async fn wait(&mut self, failure: &anyhow::Error, stop: &CancellationToken) -> bool {
        let pause = self.backoff.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        tracing::warn!(
            error = format!("{failure:#}"),
            retry_in_ms = pause.as_millis() as u64,
            "{} interrupted",
            self.what
        );
        tokio::select! {
            () = stop.cancelled() => false,
            () = tokio::time::sleep(pause) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn steps_double_up_to_the_cap() {
        let backoff = Backoff::new(SECOND, SECOND * 10);
        let steps: Vec<u64> = backoff.steps().iter().map(Duration::as_secs).collect();
        assert_eq!(steps, [1, 2, 4, 8, 10]);
        assert_eq!(backoff.step(40), SECOND * 10, "huge attempt numbers stay at the cap");
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_the_step() {
        let backoff = Backoff::new(SECOND, SECOND * 60);
        assert_eq!(backoff.delay_at(2, 0.0), SECOND * 2);
        assert_eq!(backoff.delay_at(2, 1.0), SECOND * 4);
        for _ in 0..1000 {
            let delay = backoff.delay(3);
            assert!(delay >= SECOND * 4 && delay <= SECOND * 8, "{delay:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_pauses_grow_until_connected_and_stop_at_once_when_cancelled() {
        let mut reconnect = Reconnect::new("test task", SECOND, SECOND * 60);
        let stop = CancellationToken::new();
        let failure = anyhow::anyhow!("down");
        let mut pauses = Vec::new();
        for _ in 0..3 {
            let started = tokio::time::Instant::now();
            assert!(reconnect.wait(&failure, &stop).await);
            pauses.push(started.elapsed());
        }
        assert!(pauses[0] >= SECOND / 2 && pauses[0] <= SECOND, "{pauses:?}");
        assert!(pauses[2] >= SECOND * 2 && pauses[2] <= SECOND * 4, "{pauses:?}");
        reconnect.connected();
        let started = tokio::time::Instant::now();
        assert!(reconnect.wait(&failure, &stop).await);
        assert!(started.elapsed() <= SECOND, "the backoff started over");
        stop.cancel();
        assert!(!reconnect.wait(&failure, &stop).await);
    }

    #[test]
    fn a_cap_below_the_first_step_is_the_first_step() {
        let backoff = Backoff::new(SECOND * 5, SECOND);
        assert_eq!(backoff.steps(), [SECOND * 5]);
    }
}
