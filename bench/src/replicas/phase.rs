//! The phases of `marquee-bench replicas`: a flash sale on a process mesh (with the
//! chaos killer taking down one replica of each replicated process mid-rush when
//! asked), and the connected users over three gateways. Each ends, once the mesh has
//! settled, with the flash sale's verification from the stores and the chaos suite's
//! checks of every promise.

use std::time::Duration;

use marquee_kit::shutdown::Shutdown;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use super::mesh::{Layout, Place, ProcessMesh};
use crate::catalog::Rng;
use crate::chaos::checks::{self, Check};
use crate::chaos::customer::Told;
use crate::chaos::setup::{KILLED_REPLICAS, rabbitmq_port};
use crate::chaos::{killer, report, verify};
use crate::connected::{self, Scenario};
use crate::cpu;
use crate::flash_sale::{self, Config, Outcome};
use crate::procs::Supervisor;
use crate::stats::{round1, round2};
use crate::stores::Stores;

/// Showtimes only the spread-out subscribers watch, beside the one of the sale (as in
/// the rush bench).
const QUIET_SHOWTIMES: usize = 7;

/// Broken promises, as the results count them.
#[derive(Debug, Default, Clone, Copy)]
pub struct Broken {
    pub double_booked_seats: u64,
    pub double_charges: u64,
    pub lost_notifications: u64,
    pub duplicate_notifications: u64,
    pub store_mismatches: u64,
}

impl Broken {
    /// From the flash sale's verification (`flash_sale::Verdict::to_json`) and the
    /// chaos checks: where both look at one promise, the larger count (the checks also
    /// count a second approved processor attempt as a double charge).
    fn of(verification: &Value, checks: &[Check]) -> Self {
        let check = |name: &str| checks.iter().find(|c| c.name == name).map_or(0, |c| c.count as u64);
        let verified = |key: &str| verification[key].as_u64().unwrap_or(0);
        Self {
            double_booked_seats: verified("double_booked_seats").max(check("no_seat_sold_twice")),
            double_charges: verified("double_charges").max(check("no_booking_charged_twice")),
            lost_notifications: verified("lost_notifications"),
            duplicate_notifications: verified("duplicate_notifications"),
            store_mismatches: verified("store_mismatches").max(check("booked_seats_are_confirmed_bookings")),
        }
    }

    pub fn add(self, other: Self) -> Self {
        Self {
            double_booked_seats: self.double_booked_seats + other.double_booked_seats,
            double_charges: self.double_charges + other.double_charges,
            lost_notifications: self.lost_notifications + other.lost_notifications,
            duplicate_notifications: self.duplicate_notifications + other.duplicate_notifications,
            store_mismatches: self.store_mismatches + other.store_mismatches,
        }
    }

    pub fn to_json(self) -> Value {
        json!({
            "double_booked_seats": self.double_booked_seats,
            "double_charges": self.double_charges,
            "lost_notifications": self.lost_notifications,
            "duplicate_notifications": self.duplicate_notifications,
            "store_mismatches": self.store_mismatches,
        })
    }
}

/// What a phase measured and whether it kept every promise.
pub struct Phase {
    pub json: Value,
    pub clean: bool,
    pub broken: Broken,
    pub bookings_per_s: f64,
    /// From the start signal to the last customer's last answer.
    pub rush_seconds: f64,
    /// Replicas SIGKILLed (and back), and how many of those kills fell inside the rush.
    pub kills: usize,
    pub kills_during_rush: usize,
}

/// The flash sale through every gateway of a `layout` mesh, the customers split evenly
/// over them. With `kill_spread`, one replica of each replicated process
/// (`KILLED_REPLICAS`) is SIGKILLed and started again after 0.3-1.5 s, the kills spread
/// evenly over that long from the start signal.
pub async fn flash_sale(
    place: &Place,
    name: &str,
    layout: Layout,
    config: &Config,
    kill_spread: Option<Duration>,
    patience: Duration,
    keep_stores: bool,
) -> anyhow::Result<Phase> {
    let (mesh, supervisor) = ProcessMesh::start(place, name, layout, 1).await?;
    let showtime = mesh.showtimes[0].clone();
    eprintln!("[replicas] {name}: {} up; showtime {showtime}", mesh.processes.join(", "));
    let crowd = flash_sale::register_crowd(&mesh.graphql_urls(), config).await?;
    let actions = match kill_spread {
        Some(_) => killer::plan(&KILLED_REPLICAS, KILLED_REPLICAS.len(), false, None, &mut Rng::seeded()),
        None => Vec::new(),
    };
    let pids: Vec<(&str, Option<u32>)> =
        mesh.processes.iter().map(|name| (*name, supervisor.pid(name))).collect();
    let per_process_before: Vec<Option<f64>> =
        pids.iter().map(|(_, pid)| cpu::process_seconds((*pid)?)).collect();
    let cpu_before = cpu::snapshot();
    let rush_started_s = place.epoch.elapsed().as_secs_f64();
    let killer = Killing::start(&mesh, place, supervisor, actions, kill_spread.unwrap_or_default());
    let mut outcome = flash_sale::rush(crowd, &showtime, config).await;
    let rush_ended_s = place.epoch.elapsed().as_secs_f64();
    let cpu_after = cpu::snapshot();
    // Per process: whether both replicas took a share. A replica killed in the rush
    // is null (its restarted process is another pid).
    let per_process: serde_json::Map<String, Value> = pids
        .iter()
        .zip(per_process_before)
        .map(|((name, pid), before)| {
            let used =
                pid.and_then(cpu::process_seconds).zip(before).map(|(after, before)| round2(after - before));
            ((*name).to_owned(), json!(used))
        })
        .collect();
    eprintln!(
        "[replicas] {name}: {} confirmed, {} refused, {:.1} bookings/s over {:.1} s",
        outcome.confirmed.len(),
        outcome.refused.len(),
        outcome.bookings_per_s(),
        outcome.rush_seconds
    );
    // Kills planned past the last answer still happen before the stores are judged.
    killer.plan_done.cancelled().await;
    let told = told(&outcome);
    let mut judged = judge(&mesh, killer, &told, patience).await?;
    let verdict = flash_sale::verify(&mesh.settings, &showtime, &outcome, config).await;
    let verdict = match verdict {
        Ok(verdict) => verdict,
        Err(error) => {
            judged.killer.supervisor.stop_all().await;
            return Err(error.context("cannot verify the flash sale from the stores"));
        }
    };
    let kills_during_rush = judged
        .killer
        .done
        .iter()
        .filter(|d| d.action.starts_with("kill") && d.error.is_none())
        .filter(|d| (rush_started_s..=rush_ended_s).contains(&d.at_s))
        .count();
    let verification = verdict.to_json();
    let broken = Broken::of(&verification, &judged.checks);
    let clean = verdict.is_clean() && judged.checks.iter().all(|c| c.pass);
    // The rate before the tail: a customer whose saga was in flight on a killed booking
    // replica waits for recovery (booking.saga_lease_ms) and holds up the rush's end.
    let first_90pct = outcome.confirmed_at_ms.percentile(0.9).map(|ms| {
        let seconds = ms / 1000.0;
        json!({
            "confirmed_by_s": round1(seconds),
            "bookings_per_s": round1(0.9 * outcome.confirmed.len() as f64 / seconds.max(f64::EPSILON)),
        })
    });
    let mut cpu = cpu::per_booking(&cpu_before, &cpu_after, outcome.rush_seconds, outcome.confirmed.len());
    name_the_load_generator(&mut cpu);
    let mut json = json!({
        "mesh": mesh.describe(),
        "flash_sale": flash_sale::outcome_json(&mut outcome, config),
        "bookings_per_s": round1(outcome.bookings_per_s()),
        "first_90pct_of_bookings": first_90pct,
        "rush": { "started_at_s": round1(rush_started_s), "ended_at_s": round1(rush_ended_s) },
        "kills": {
            "planned": judged.killer.planned,
            "done": judged.kills(),
            "during_rush": kills_during_rush,
            "spread_seconds": kill_spread.map(|s| round1(s.as_secs_f64())),
            "actions": judged.killer.to_json(),
        },
        "cpu_during_rush": cpu,
        "cpu_seconds_per_process_during_rush": per_process,
        "verification": verification,
    });
    judged.finish(&mut json, &mesh, clean, keep_stores).await?;
    Ok(Phase {
        json,
        clean,
        broken,
        bookings_per_s: outcome.bookings_per_s(),
        rush_seconds: outcome.rush_seconds,
        kills: judged.kills(),
        kills_during_rush,
    })
}

/// How many subscribers the connected users' phase holds, and how.
pub struct Audience {
    pub subscribers: usize,
    /// Of those, on the showtime of the sale.
    pub focused: usize,
    /// How many were asked for.
    pub requested: usize,
    /// At most this many per subscriber host.
    pub per_host: Option<usize>,
}

/// The connected users over three gateways (two replicas of cinema, booking and
/// payment behind them): the audience's WebSocket subscriptions spread evenly over the
/// gateways, the focused ones on the showtime of a single-round flash sale run
/// meanwhile (`crate::connected`).
pub async fn connected_users(
    place: &Place,
    config: &Config,
    audience: Audience,
    patience: Duration,
    keep_stores: bool,
) -> anyhow::Result<Phase> {
    let name = "three-gateways";
    let (mesh, supervisor) =
        ProcessMesh::start(place, name, Layout::THREE_GATEWAYS, 1 + QUIET_SHOWTIMES).await?;
    eprintln!("[replicas] {name}: {} up", mesh.processes.join(", "));
    let gateways = mesh.gateways(&supervisor);
    let cinema = mesh.cinema().await;
    let killer = Killing::start(&mesh, place, supervisor, Vec::new(), Duration::ZERO);
    let held = match cinema {
        Ok(cinema) => {
            connected::connected_users(Scenario {
                gateways: &gateways,
                cinema: &cinema,
                settings: &mesh.settings,
                watched: &mesh.showtimes,
                subscribers: audience.subscribers,
                focused: audience.focused,
                requested: audience.requested,
                per_host: audience.per_host,
                flash: config,
            })
            .await
        }
        Err(error) => Err(error),
    };
    let mut judged = judge(&mesh, killer, &[], patience).await?;
    let held = match held {
        Ok(held) => held,
        Err(error) => {
            judged.killer.supervisor.stop_all().await;
            return Err(error.context("the connected users' scenario failed"));
        }
    };
    let broken = Broken::of(&held["flash_sale_verification"], &judged.checks);
    let clean = held["clean"] == true && judged.checks.iter().all(|c| c.pass);
    let mut json = json!({ "mesh": mesh.describe(), "connected_users": held });
    judged.finish(&mut json, &mesh, clean, keep_stores).await?;
    Ok(Phase { json, clean, broken, bookings_per_s: 0.0, rush_seconds: 0.0, kills: 0, kills_during_rush: 0 })
}

/// The chaos killer at work on a phase's supervisor (with no actions it only restarts
/// processes that exit on their own, and counts them).
struct Killing {
    task: JoinHandle<killer::Outcome>,
    plan_done: Shutdown,
    stop: Shutdown,
}

impl Killing {
    fn start(
        mesh: &ProcessMesh,
        place: &Place,
        supervisor: Supervisor,
        actions: Vec<killer::Action>,
        spread: Duration,
    ) -> Self {
        let (plan_done, stop) = (Shutdown::new(), Shutdown::new());
        let task = tokio::spawn(killer::run(
            killer::Killer {
                supervisor,
                actions,
                spread,
                brokers: killer::Brokers { rabbitmq_port: rabbitmq_port(&mesh.settings), redis: None },
                outage: Duration::ZERO,
                rng: Rng::seeded(),
                epoch: place.epoch,
            },
            plan_done.clone(),
            stop.clone(),
        ));
        Self { task, plan_done, stop }
    }
}

/// A phase's mesh once settled: the chaos checks, and the supervisor back from the killer.
struct Judged {
    killer: killer::Outcome,
    settled: verify::Settled,
    checks: Vec<Check>,
}

/// Waits (up to `patience`) for the mesh to settle, stops the killer, and holds the
/// stores to every promise the chaos suite checks.
async fn judge(
    mesh: &ProcessMesh,
    killing: Killing,
    told: &[Told],
    patience: Duration,
) -> anyhow::Result<Judged> {
    let queue = &mesh.settings.rabbitmq.notification_queue;
    let settled = async {
        let stores = Stores::connect(&mesh.settings).await?;
        verify::settle(&stores, &mesh.showtimes[0], queue, patience).await
    }
    .await;
    let (settled, mut outcome) = killer::stop_after(settled, &killing.stop, killing.task).await?;
    let down_at_end = outcome.supervisor.down();
    let mut checks = checks::checks(&checks::Inputs {
        snapshot: &settled.snapshot,
        told,
        unregistered: &[],
        killer: &outcome,
        down_at_end: &down_at_end,
        settled_quiet: settled.quiet,
        settle_seconds: settled.seconds,
    });
    report::attach_evidence(&mut checks, &outcome.supervisor.log_files());
    Ok(Judged { killer: outcome, settled, checks })
}

impl Judged {
    /// Kills done (the process answered again afterwards).
    fn kills(&self) -> usize {
        self.killer.count("kill")
    }

    /// Stops the mesh (keeping the stores when asked or when a promise was broken) and
    /// adds the checks, the settling and each process's life to `json`.
    async fn finish(
        &mut self,
        json: &mut Value,
        mesh: &ProcessMesh,
        clean: bool,
        keep: bool,
    ) -> anyhow::Result<()> {
        let supervisor = &mut self.killer.supervisor;
        mesh.stop(supervisor, keep || !clean).await?;
        let processes: serde_json::Map<String, Value> = supervisor
            .counts()
            .into_iter()
            .map(|(name, c)| {
                let value = json!({
                    "starts": c.starts,
                    "kills": c.kills,
                    "kill_to_ready_ms": c.kill_to_ready_ms,
                    "failed_starts": c.failed_starts,
                    "unexpected_exits": c.unexpected_exits,
                    "final_exit": c.final_exit,
                });
                (name.to_owned(), value)
            })
            .collect();
        let bookings = &self.settled.snapshot.bookings;
        json["settled"] = json!({
            "seconds": self.settled.seconds,
            "quiet": self.settled.quiet,
            "at_end": self.settled.last.to_json(),
            // Sagas a dead replica left mid-step, taken over once their lease lapsed.
            "sagas_resumed_by_recovery": bookings.iter().filter(|b| b.was_recovered()).count(),
        });
        json["checks"] = Value::Array(self.checks.iter().map(Check::to_json).collect());
        json["failed_checks"] =
            json!(self.checks.iter().filter(|c| !c.pass).map(|c| c.name).collect::<Vec<_>>());
        json["processes"] = Value::Object(processes);
        json["timeline"] = supervisor.incidents_json();
        json["clean"] = json!(clean);
        Ok(())
    }
}

/// What the customers were told about their bookings, for the chaos checks.
fn told(outcome: &Outcome) -> Vec<Told> {
    let told = |booking: &str, status: &str| Told {
        booking: booking.to_owned(),
        status: status.to_owned(),
        via: "flash sale",
        at_s: 0.0,
    };
    let confirmed = outcome.confirmed.keys().map(|booking| told(booking, "CONFIRMED"));
    let other = outcome
        .unpaid
        .iter()
        .filter_map(|(booking, answer)| Some(told(booking, answer.strip_prefix("status ")?)));
    confirmed.chain(other).collect()
}

/// In `cpu::snapshot`'s groups this process is "the mesh and the load generator" (the
/// rush embeds the services); here it is the load generator alone.
fn name_the_load_generator(cpu: &mut Value) {
    if let Some(groups) = cpu["groups"].as_object_mut()
        && let Some(this) = groups.remove("marquee (mesh + load generator)")
    {
        groups.insert("marquee-bench (load generator)".to_owned(), this);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::checks::Blame;

    fn check(name: &'static str, count: usize) -> Check {
        Check {
            name,
            blame: Blame::Mesh,
            pass: count == 0,
            count,
            detail: String::new(),
            ids: Vec::new(),
            evidence: Vec::new(),
        }
    }

    #[test]
    fn a_broken_promise_counts_once_however_many_checks_saw_it() {
        // The sale's verification saw one double charge; the chaos check saw it too,
        // and a second booking whose processor approved two attempts.
        let verification = json!({
            "double_booked_seats": 0,
            "double_charges": 1,
            "lost_notifications": 2,
            "duplicate_notifications": 0,
            "store_mismatches": 0,
        });
        let checks = [check("no_booking_charged_twice", 2), check("no_seat_sold_twice", 0)];
        let broken = Broken::of(&verification, &checks);
        assert_eq!(broken.double_charges, 2);
        assert_eq!(broken.lost_notifications, 2);
        assert_eq!(broken.double_booked_seats, 0);
        let twice = broken.add(broken);
        assert_eq!((twice.double_charges, twice.lost_notifications), (4, 4));
    }

    #[test]
    fn what_customers_were_told_is_their_final_statuses() {
        let mut outcome = Outcome::default();
        outcome.confirmed.insert("b1".to_owned(), "AA1".to_owned());
        outcome.unpaid.push(("b2".to_owned(), "status PAYMENT_FAILED".to_owned()));
        outcome.unpaid.push(("b3".to_owned(), "UNSETTLED".to_owned()));
        let mut told: Vec<(String, String)> =
            told(&outcome).into_iter().map(|t| (t.booking, t.status)).collect();
        told.sort();
        assert_eq!(
            told,
            vec![("b1".to_owned(), "CONFIRMED".to_owned()), ("b2".to_owned(), "PAYMENT_FAILED".to_owned())]
        );
    }
}
