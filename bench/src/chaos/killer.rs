//! The chaos suite's killer: SIGKILLs the mesh's processes one at a time (each round of
//! seven covers all of them, in a shuffled order), starting each again after a random
//! 0.3-1.5 s, and restarts RabbitMQ and Redis once each; the actions are spread evenly
//! over the load. An outage (`--outage`) keeps one process (a service, or the run's own
//! MongoDB-wire server) down for much longer (30 s by default) in the middle of the plan. Between actions,
//! during an outage, and after the last action until it is told to stop, it restarts
//! any process that exited on its own.

use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_kit::shutdown::Shutdown;
use serde_json::{Value, json};

use crate::brokers::{self, RedisServer};
use crate::catalog::Rng;
use crate::procs::Supervisor;
use crate::stats::round1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Kill(&'static str),
    RestartRabbitMq,
    RestartRedis,
    /// SIGKILLed and kept down for the killer's whole `outage`.
    Outage(&'static str),
}

impl Action {
    /// A process's outage is a kill too ("kill ..."): counted, and checked, as one.
    fn label(self) -> String {
        match self {
            Self::Kill(process) => format!("kill {process}"),
            Self::RestartRabbitMq => "restart rabbitmq".to_owned(),
            Self::RestartRedis => "restart redis".to_owned(),
            Self::Outage(process) => format!("kill {process} for an outage"),
        }
    }
}

/// `kills` kills in rounds over `processes` (shuffled per round), with the broker
/// restarts (when `brokers`) at random places, never first: the mesh has some load
/// before the first broker goes. An `outage` goes in the middle.
pub fn plan(
    processes: &[&'static str],
    kills: usize,
    brokers: bool,
    outage: Option<&'static str>,
    rng: &mut Rng,
) -> Vec<Action> {
    let mut actions = Vec::with_capacity(kills + 3);
    while actions.len() < kills {
        let mut round: Vec<&'static str> = processes.to_vec();
        for i in (1..round.len()).rev() {
            round.swap(i, rng.below(i + 1));
        }
        actions.extend(round.into_iter().take(kills - actions.len()).map(Action::Kill));
    }
    if brokers {
        for broker in [Action::RestartRabbitMq, Action::RestartRedis] {
            let at = 1 + rng.below(actions.len().max(1));
            actions.insert(at.min(actions.len()), broker);
        }
    }
    if let Some(process) = outage {
        actions.insert(actions.len() / 2, Action::Outage(process));
    }
    actions
}

/// What the killer needs of the brokers.
pub struct Brokers {
    pub rabbitmq_port: u16,
    pub redis: Option<RedisServer>,
}

/// One action taken.
#[derive(Debug, Clone)]
pub struct Done {
    pub action: String,
    pub at_s: f64,
    pub down_ms: u64,
    pub took_ms: u64,
    pub error: Option<String>,
    /// The action failed while RabbitMQ answered no AMQP handshake: the machine's
    /// broker, not the mesh, kept the process from starting.
    pub broker_stalled: bool,
}

pub struct Outcome {
    pub supervisor: Supervisor,
    pub planned: usize,
    pub done: Vec<Done>,
}

impl Outcome {
    pub fn failures(&self) -> Vec<&Done> {
        self.done.iter().filter(|d| d.error.is_some()).collect()
    }

    pub fn count(&self, prefix: &str) -> usize {
        self.done.iter().filter(|d| d.action.starts_with(prefix) && d.error.is_none()).count()
    }

    pub fn to_json(&self) -> Value {
        Value::Array(
            self.done
                .iter()
                .map(|d| {
                    json!({
                        "action": d.action,
                        "at_s": d.at_s,
                        "down_ms": d.down_ms,
                        "took_ms": d.took_ms,
                        "error": d.error,
                        "rabbitmq_stalled": d.broker_stalled,
                    })
                })
                .collect(),
        )
    }
}

/// How often the killer looks for processes that exited on their own.
const REAP_EVERY: Duration = Duration::from_millis(250);

/// Everything the killer works with.
pub struct Killer {
    pub supervisor: Supervisor,
    pub actions: Vec<Action>,
    /// The actions are spread evenly over this long from the start.
    pub spread: Duration,
    pub brokers: Brokers,
    /// How long an `Action::Outage` lasts.
    pub outage: Duration,
    pub rng: Rng,
    /// The run's start, for the timeline.
    pub epoch: Instant,
}

/// Runs the actions (cancelling `plan_done` after the last), then keeps reaping until
/// `stop`. Stopping early skips what is left, but never interrupts an action: a broker
/// that was stopped is always started again.
/// Stops the killer once the stores were read after the load (`settled`) and returns
/// both. If they could not be read, the supervised processes are stopped before the
/// error goes up, so a failed run leaves nothing running.
pub async fn stop_after<T>(
    settled: anyhow::Result<T>,
    stop: &Shutdown,
    killer: tokio::task::JoinHandle<Outcome>,
) -> anyhow::Result<(T, Outcome)> {
    stop.cancel();
    let mut outcome = killer.await.context("the killer failed")?;
    match settled {
        Ok(settled) => Ok((settled, outcome)),
        Err(error) => {
            outcome.supervisor.stop_all().await;
            Err(error.context("cannot read the stores after the load"))
        }
    }
}

pub async fn run(killer: Killer, plan_done: Shutdown, stop: Shutdown) -> Outcome {
    let Killer { mut supervisor, actions, spread, brokers, outage, mut rng, epoch } = killer;
    let started = Instant::now();
    let spacing = spread / u32::try_from(actions.len().max(1)).unwrap_or(1);
    let mut done = Vec::with_capacity(actions.len());
    let planned = actions.len();
    for (n, action) in actions.into_iter().enumerate() {
        // Half a spacing of load before the first action.
        let due = started + spacing / 2 + spacing * u32::try_from(n).unwrap_or(0);
        while Instant::now() < due && !stop.is_cancelled() {
            supervisor.reap().await;
            tokio::time::sleep(REAP_EVERY.min(due.saturating_duration_since(Instant::now()))).await;
        }
        if stop.is_cancelled() {
            break;
        }
        let down = match action {
            Action::Outage(_) => outage,
            _ => Duration::from_millis(300 + rng.below(1201) as u64),
        };
        let at_s = round1(epoch.elapsed().as_secs_f64());
        let began = Instant::now();
        let result = match action {
            Action::Kill(process) => supervisor.kill_and_restart(process, down).await,
            Action::RestartRabbitMq => {
                supervisor.note("rabbitmq", format!("stop_app; start_app in {} ms", down.as_millis()));
                brokers::restart_rabbitmq(brokers.rabbitmq_port, down).await
            }
            Action::RestartRedis => match &brokers.redis {
                Some(redis) => {
                    supervisor
                        .note("redis", format!("SHUTDOWN SAVE; started again in {} ms", down.as_millis()));
                    redis.restart(down).await
                }
                None => Err(anyhow::anyhow!("no Redis to restart")),
            },
            Action::Outage(process) => take_down(&mut supervisor, process, down).await,
        };
        let took_ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
        let error = result.err().map(|e| format!("{e:#}"));
        let broker_stalled =
            error.is_some() && !brokers::amqp_answers(brokers.rabbitmq_port, Duration::from_secs(2)).await;
        let broker = match action {
            Action::RestartRabbitMq => Some("rabbitmq"),
            Action::RestartRedis => Some("redis"),
            Action::Kill(_) | Action::Outage(_) => None,
        };
        if let Some(broker) = broker {
            match &error {
                None => supervisor.note(broker, format!("back after {took_ms} ms")),
                Some(error) => supervisor.note(broker, format!("RESTART FAILED: {error}")),
            }
        }
        let down_ms = down.as_millis() as u64;
        done.push(Done { action: action.label(), at_s, down_ms, took_ms, error, broker_stalled });
    }
    plan_done.cancel();
    while !stop.is_cancelled() {
        supervisor.reap().await;
        tokio::select! {
            () = stop.cancelled() => {}
            () = tokio::time::sleep(REAP_EVERY) => {}
        }
    }
    Outcome { supervisor, planned, done }
}

/// Services whose answers the notification worker caches (showtimes for minutes,
/// contacts for seconds).
const CACHED_BY_NOTIFICATION: [&str; 2] = ["cinema", "user"];

/// `process` SIGKILLed and kept down for `down` while the rest of the mesh runs on (and
/// is reaped: a process that gives up while a dependency is down is noticed), then
/// started again. When the notification worker caches what `process` answers, it is
/// restarted at once too, so that it starts cold and every event it handles during the
/// outage asks the service that is down.
async fn take_down(supervisor: &mut Supervisor, process: &str, down: Duration) -> anyhow::Result<()> {
    let killed_at = supervisor.kill(process, down).await?;
    if CACHED_BY_NOTIFICATION.contains(&process) && supervisor.names().contains(&"notification") {
        supervisor.kill_and_restart("notification", Duration::from_millis(300)).await?;
    }
    reap_for(supervisor, down.saturating_sub(killed_at.elapsed())).await;
    supervisor.restart_killed(process, killed_at).await
}

/// Waits `how_long`, restarting processes that exit meanwhile.
async fn reap_for(supervisor: &mut Supervisor, how_long: Duration) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        supervisor.reap().await;
        tokio::time::sleep(REAP_EVERY.min(until.saturating_duration_since(Instant::now()))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIX: [&str; 6] = ["user", "cinema", "payment", "booking", "notification", "gateway"];

    #[test]
    fn every_round_of_kills_covers_every_process_and_brokers_never_go_first() {
        let mut rng = Rng::seeded();
        let actions = plan(&SIX, 12, true, None, &mut rng);
        assert_eq!(actions.len(), 14);
        assert!(!matches!(actions[0], Action::RestartRabbitMq | Action::RestartRedis));
        let kills: Vec<&str> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Kill(p) => Some(*p),
                _ => None,
            })
            .collect();
        for round in kills.chunks(6) {
            let mut names = round.to_vec();
            names.sort_unstable();
            let mut all = SIX.to_vec();
            all.sort_unstable();
            assert_eq!(names, all);
        }
        assert_eq!(actions.iter().filter(|a| **a == Action::RestartRabbitMq).count(), 1);
        assert_eq!(actions.iter().filter(|a| **a == Action::RestartRedis).count(), 1);
        assert_eq!(plan(&SIX, 6, false, None, &mut rng).len(), 6);
    }
}
