//! The chaos run's checks: a pure function of what the stores held once the mesh
//! settled (`Snapshot`) and what happened during the run (`Inputs`). Each check says
//! whose fault a failure is, how many things broke it, and which (ids first, so they
//! can be looked up in the logs).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Value, json};

use super::customer::Told;
use super::killer;
use super::verify::{NOTIFIED, Snapshot};
use crate::stores::{self, Booking, Payment};

/// Ids listed per failed check (the count says how many there are in all).
const IDS_SHOWN: usize = 20;

/// Whose fault a failed check is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// A promise of the mesh was broken.
    Mesh,
    /// The suite could not do its part (a broker did not restart, the run was cut short).
    Harness,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub blame: Blame,
    pub pass: bool,
    /// How many things broke it (0 when it passes).
    pub count: usize,
    pub detail: String,
    /// What broke it, each naming the id to look for in the logs.
    pub ids: Vec<String>,
    /// Log lines about the first few ids (filled in by the report, which has the logs).
    pub evidence: Vec<String>,
}

impl Check {
    fn new(name: &'static str, blame: Blame, detail: impl Into<String>, mut ids: Vec<String>) -> Self {
        ids.sort();
        ids.dedup();
        let count = ids.len();
        ids.truncate(IDS_SHOWN);
        Self { name, blame, pass: count == 0, count, detail: detail.into(), ids, evidence: Vec::new() }
    }

    fn mesh(name: &'static str, detail: impl Into<String>, ids: Vec<String>) -> Self {
        Self::new(name, Blame::Mesh, detail, ids)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "blame": if self.blame == Blame::Mesh { "mesh" } else { "harness" },
            "pass": self.pass,
            "count": self.count,
            "detail": self.detail,
            "ids": self.ids,
            "evidence": self.evidence,
        })
    }
}

/// What happened during the run, next to what the stores say.
pub struct Inputs<'a> {
    pub snapshot: &'a Snapshot,
    /// Everything every customer was told, each customer's in order.
    pub told: &'a [Told],
    /// Emails of the customers that never got an account.
    pub unregistered: &'a [String],
    pub killer: &'a killer::Outcome,
    /// Processes not running when the checks ran.
    pub down_at_end: &'a [&'static str],
    pub settled_quiet: bool,
    pub settle_seconds: f64,
}

pub fn checks(inputs: &Inputs<'_>) -> Vec<Check> {
    let s = inputs.snapshot;
    let mut checks = run_checks(inputs);
    let quiet = if inputs.settled_quiet { vec![] } else { vec!["not quiet when the wait ended".to_owned()] };
    checks.push(Check::mesh(
        "mesh_settled",
        format!(
            "quiet (nothing in flight, outboxes sent, notifications recorded, queue empty) \
             {} s after the load",
            inputs.settle_seconds
        ),
        quiet,
    ));
    checks.push(Check::mesh(
        "nothing_in_flight",
        "bookings CHARGING/CONFIRMING/REFUNDING/CANCELLING, payments PROCESSING",
        s.in_flight(),
    ));
    checks.push(Check::mesh(
        "outboxes_drained",
        "documents with events the broker never confirmed",
        s.unsent(),
    ));
    checks.extend(seat_checks(s, inputs.told));
    checks.extend(payment_checks(s));
    checks.extend(notification_checks(s));
    checks.extend(told_checks(s, inputs.told));
    let depth = |name: &str, queue: Option<(u64, u64)>| match queue {
        Some((0, 0)) => vec![],
        Some((ready, unacked)) => vec![format!("{name}: {ready} ready, {unacked} unacknowledged")],
        None => vec![format!("{name}: not found")],
    };
    checks.push(Check::mesh(
        "dead_letter_queue_empty",
        "<notification queue>.dlq, by rabbitmqctl list_queues",
        depth("dlq", s.dead_letters),
    ));
    checks.push(Check::mesh(
        "notification_queue_drained",
        "the notification queue (and its retry queues), ready and unacknowledged",
        depth("queue", s.queue),
    ));
    checks
}

/// What the run itself must have achieved: customers served, processes back after each
/// kill, the brokers restarted, the plan carried out.
fn run_checks(inputs: &Inputs<'_>) -> Vec<Check> {
    let killer = inputs.killer;
    let kills: u32 = killer.supervisor.counts().values().map(|c| c.kills).sum();
    // A failure while the machine's RabbitMQ was not answering is the environment's.
    let (stalled, failures): (Vec<_>, Vec<_>) = killer.failures().into_iter().partition(|d| d.broker_stalled);
    let (kill_failures, broker_failures): (Vec<_>, Vec<_>) =
        failures.into_iter().partition(|d| d.action.starts_with("kill"));
    let failed = |list: Vec<&killer::Done>| -> Vec<String> {
        list.iter()
            .map(|d| format!("{} at +{}s: {}", d.action, d.at_s, d.error.as_deref().unwrap_or("")))
            .collect()
    };
    let exits: Vec<String> = killer
        .supervisor
        .incidents
        .iter()
        .filter(|i| i.what.starts_with("exited on its own"))
        .map(|i| format!("{} at +{}s: {}", i.process, i.at_s, i.what))
        .collect();
    let done = killer.done.len();
    let skipped = (done..killer.planned).map(|n| format!("action {} of {} skipped", n + 1, killer.planned));
    vec![
        Check::mesh(
            "every_customer_registered",
            format!("{} customers got no account before the load ended", inputs.unregistered.len()),
            inputs.unregistered.to_vec(),
        ),
        Check::mesh(
            "processes_back_after_every_kill",
            format!("{kills} kills; each process must answer again within the start timeout"),
            failed(kill_failures),
        ),
        Check::mesh("no_unexpected_exits", "processes that exited without being killed", exits),
        Check::mesh(
            "all_processes_up_at_end",
            "processes running when the checks ran",
            inputs.down_at_end.iter().map(|p| format!("{p} down")).collect(),
        ),
        Check::new(
            "brokers_restarted",
            Blame::Harness,
            "RabbitMQ and Redis restarts",
            failed(broker_failures),
        ),
        Check::new(
            "rabbitmq_answering",
            Blame::Harness,
            "actions that failed while the machine's RabbitMQ answered no AMQP handshake",
            failed(stalled),
        ),
        Check::new(
            "chaos_plan_completed",
            Blame::Harness,
            format!("{done} of {} planned actions done", killer.planned),
            skipped.collect(),
        ),
    ]
}

/// The last final status each booking's customer was told.
fn last_told(told: &[Told]) -> BTreeMap<&str, &Told> {
    let mut last = BTreeMap::new();
    for t in told.iter().filter(|t| stores::TERMINAL.contains(&t.status.as_str())) {
        last.insert(t.booking.as_str(), t);
    }
    last
}

fn status_of<'a>(by_id: &HashMap<&str, &'a Booking>, id: &str) -> &'a str {
    by_id.get(id).map_or("MISSING", |b| b.status.as_str())
}

/// PostgreSQL's seats against MongoDB's bookings (and what customers were told).
fn seat_checks(s: &Snapshot, told: &[Told]) -> Vec<Check> {
    let by_id: HashMap<&str, &Booking> = s.bookings.iter().map(|b| (b.id.as_str(), b)).collect();
    let booked: HashMap<&str, &str> = s
        .seats
        .iter()
        .filter(|seat| seat.status == "booked")
        .map(|seat| (seat.seat_id.as_str(), seat.booking_id.as_deref().unwrap_or("NONE")))
        .collect();
    let confirmed: Vec<&Booking> = s.bookings.iter().filter(|b| b.status == "CONFIRMED").collect();
    let mut mismatched = Vec::new();
    for (seat, booking) in &booked {
        let status = status_of(&by_id, booking);
        let listed = by_id.get(booking).is_some_and(|b| b.seat_ids().any(|id| id == *seat));
        if status != "CONFIRMED" || !listed {
            mismatched.push(format!("{booking} ({status}) has seat {seat} booked"));
        }
    }
    for b in &confirmed {
        for seat in b.seat_ids().filter(|seat| booked.get(seat) != Some(&b.id.as_str())) {
            let state = s.seats.iter().find(|t| t.seat_id == seat).map_or("available".to_owned(), |t| {
                format!("{} for {}", t.status, t.booking_id.as_deref().unwrap_or("nobody"))
            });
            mismatched.push(format!("{} CONFIRMED but its seat {seat} is {state}", b.id));
        }
    }

    // Owners of each seat: CONFIRMED in the store, or last told CONFIRMED.
    let mut owners: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    let told_confirmed =
        last_told(told).into_iter().filter(|(_, t)| t.status == "CONFIRMED").map(|(id, _)| id);
    for b in confirmed.iter().copied().chain(told_confirmed.filter_map(|id| by_id.get(id).copied())) {
        for seat in b.seat_ids() {
            owners.entry(seat).or_default().insert(b.id.as_str());
        }
    }
    let twice: Vec<String> = owners
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(seat, ids)| {
            let mut ids: Vec<&str> = ids.iter().copied().collect();
            ids.sort_unstable();
            format!("{} sold seat {seat} too", ids.join(" and "))
        })
        .collect();

    let held_by_finished = s.orphan_holds();
    vec![
        Check::mesh(
            "booked_seats_are_confirmed_bookings",
            format!(
                "{} seats booked, {} bookings CONFIRMED: each booked seat is a CONFIRMED \
                 booking's and vice versa",
                booked.len(),
                confirmed.len()
            ),
            mismatched,
        ),
        Check::mesh("no_seat_sold_twice", "seats of more than one CONFIRMED (stored or told) booking", twice),
        Check::mesh(
            "no_seat_held_by_finished_booking",
            "unlapsed holds of a booking that is final (or unknown)",
            held_by_finished,
        ),
    ]
}

fn payment_checks(s: &Snapshot) -> Vec<Check> {
    let by_id: HashMap<&str, &Booking> = s.bookings.iter().map(|b| (b.id.as_str(), b)).collect();
    let mut charged: BTreeMap<&str, Vec<&Payment>> = BTreeMap::new();
    let mut approvals: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &s.payments {
        *approvals.entry(p.booking_id.as_str()).or_default() += p.approved_attempts();
        if stores::is_charged(&p.status) {
            charged.entry(p.booking_id.as_str()).or_default().push(p);
        }
    }
    let twice: Vec<String> = approvals
        .iter()
        .filter_map(|(booking, &approved)| {
            let payments = charged.get(booking).map_or(0, Vec::len);
            (payments > 1 || approved > 1).then(|| {
                format!("{booking}: {payments} charged payments, {approved} approved processor attempts")
            })
        })
        .collect();
    let mut uncharged = Vec::new();
    for b in s.bookings.iter().filter(|b| b.status == "CONFIRMED") {
        match charged.get(b.id.as_str()).map(Vec::as_slice) {
            Some([p]) if p.status == "SUCCEEDED" && p.amount_minor == b.total.amount_minor => {}
            Some(payments) => {
                let list: Vec<String> =
                    payments.iter().map(|p| format!("{} {} {}", p.id, p.status, p.amount_minor)).collect();
                uncharged.push(format!(
                    "{} CONFIRMED for {}, charged: {}",
                    b.id,
                    b.total.amount_minor,
                    list.join(", ")
                ));
            }
            None => uncharged.push(format!("{} CONFIRMED without a charge", b.id)),
        }
    }
    let mut unrefunded = Vec::new();
    for (booking, payments) in &charged {
        let status = status_of(&by_id, booking);
        if status == "CONFIRMED" {
            continue;
        }
        for p in payments.iter().filter(|p| p.status == "SUCCEEDED") {
            unrefunded
                .push(format!("{booking} {status} but its payment {} is SUCCEEDED, not refunded", p.id));
        }
    }
    vec![
        Check::mesh(
            "no_booking_charged_twice",
            "per booking: charged payments and approved processor attempts",
            twice,
        ),
        Check::mesh(
            "confirmed_bookings_charged_once",
            "each CONFIRMED booking has exactly one SUCCEEDED payment of its total",
            uncharged,
        ),
        Check::mesh(
            "other_charges_refunded",
            "a charge of a booking that is not CONFIRMED (cancelled, failed) is refunded",
            unrefunded,
        ),
    ]
}

fn notification_checks(s: &Snapshot) -> Vec<Check> {
    let owed = s.owed();
    let mut per_key: HashMap<(&str, &str), usize> = HashMap::new();
    for n in &s.notifications {
        *per_key.entry((n.event_id.as_str(), n.channel.as_str())).or_default() += 1;
    }
    let owed_keys: HashSet<(&str, &str)> =
        owed.keys().map(|(event, channel)| (event.as_str(), *channel)).collect();
    let mut duplicates = Vec::new();
    let mut unowed = Vec::new();
    for n in &s.notifications {
        let key = (n.event_id.as_str(), n.channel.as_str());
        let about = format!("{} {} event {} by {}", n.booking_id, n.event_type, n.event_id, n.channel);
        match per_key.get(&key).copied().unwrap_or(0) {
            0 | 1 => {}
            times => duplicates.push(format!("{about}: recorded {times} times")),
        }
        if !owed_keys.contains(&key) {
            unowed.push(format!("{about}: not owed"));
        }
    }
    let missing = s.missing_notifications();
    // The promise customers care about most, on its own: a CONFIRMED booking's
    // `booking.confirmed`, once per channel the user chose.
    let confirmed: HashSet<&str> =
        s.bookings.iter().filter(|b| b.status == "CONFIRMED").map(|b| b.id.as_str()).collect();
    let about_confirmed = |line: &&String| {
        line.contains(" booking.confirmed ") && confirmed.contains(line.split(' ').next().unwrap_or_default())
    };
    let mut confirmed_broken: Vec<String> =
        missing.iter().chain(&duplicates).filter(about_confirmed).cloned().collect();
    for b in s.bookings.iter().filter(|b| b.status == "CONFIRMED") {
        if !b.outbox.iter().any(|e| e.kind == "booking.confirmed") {
            confirmed_broken.push(format!("{} CONFIRMED without a booking.confirmed event", b.id));
        }
    }
    // Which kinds of event went missing: the ids list shows only the first few.
    let mut missing_by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for line in &missing {
        let kind = line.split(' ').nth(1).unwrap_or_default();
        *missing_by_type.entry(NOTIFIED.iter().find(|k| **k == kind).copied().unwrap_or("?")).or_default() +=
            1;
    }
    let by_type: Vec<String> = missing_by_type.iter().map(|(kind, n)| format!("{kind} {n}")).collect();
    let detail = format!(
        "{} (event, channel) notifications owed for {}; {} recorded; missing by event: {}",
        owed.len(),
        NOTIFIED.join(", "),
        s.notifications.len(),
        if by_type.is_empty() { "none".to_owned() } else { by_type.join(", ") }
    );
    let mut all = missing;
    all.extend(duplicates);
    all.extend(unowed);
    vec![
        Check::mesh(
            "confirmed_bookings_notified_once_per_channel",
            format!(
                "{} CONFIRMED bookings: booking.confirmed once per channel the user chose",
                confirmed.len()
            ),
            confirmed_broken,
        ),
        Check::mesh("events_notified_once_per_channel", detail, all),
    ]
}

/// What customers were told against what the stores say.
fn told_checks(s: &Snapshot, told: &[Told]) -> Vec<Check> {
    let by_id: HashMap<&str, &Booking> = s.bookings.iter().map(|b| (b.id.as_str(), b)).collect();
    let last = last_told(told);
    let mut told_confirmed = Vec::new();
    let mut told_other = Vec::new();
    for (booking, t) in &last {
        let stored = status_of(&by_id, booking);
        let line = format!("{booking} told {} by {} at +{:.1}s, stored {stored}", t.status, t.via, t.at_s);
        if t.status == "CONFIRMED" && stored != "CONFIRMED" {
            told_confirmed.push(line);
        } else if t.status != stored {
            told_other.push(line);
        }
    }
    let confirmed = last.values().filter(|t| t.status == "CONFIRMED").count();
    vec![
        Check::mesh(
            "told_confirmed_is_confirmed",
            format!("{confirmed} bookings whose customer was last told CONFIRMED"),
            told_confirmed,
        ),
        Check::mesh(
            "told_final_status_is_stored",
            format!("{} bookings whose customer was told a final status", last.len()),
            told_other,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stores::{AmountDoc, AttemptDoc, Notification, OutboxEntry, SeatDoc, TakenSeat, User};

    fn booking(id: &str, status: &str, seats: &[&str], events: &[(&str, &str)]) -> Booking {
        Booking {
            id: id.to_owned(),
            user_id: "u1".to_owned(),
            showtime_id: "s".to_owned(),
            status: status.to_owned(),
            seats: seats.iter().map(|s| SeatDoc { seat_id: (*s).to_owned() }).collect(),
            total: AmountDoc { amount_minor: 1000 },
            outbox: events
                .iter()
                .map(|(id, kind)| OutboxEntry { event_id: (*id).to_owned(), kind: (*kind).to_owned() })
                .collect(),
            unsent_events: 0,
            saga: vec![],
        }
    }

    fn payment(id: &str, booking: &str, status: &str, approved: usize) -> Payment {
        Payment {
            id: id.to_owned(),
            booking_id: booking.to_owned(),
            user_id: Some("u1".to_owned()),
            status: status.to_owned(),
            amount_minor: 1000,
            attempts: (0..approved).map(|_| AttemptDoc { outcome: "approved".to_owned() }).collect(),
            outbox: vec![],
            unsent_events: 0,
        }
    }

    fn seat(id: &str, status: &str, booking: &str, lapsed: bool) -> TakenSeat {
        TakenSeat {
            seat_id: id.to_owned(),
            status: status.to_owned(),
            booking_id: Some(booking.to_owned()),
            lapsed,
        }
    }

    fn note(event: &str, channel: &str, booking: &str) -> Notification {
        Notification {
            event_id: event.to_owned(),
            event_type: "booking.confirmed".to_owned(),
            booking_id: booking.to_owned(),
            channel: channel.to_owned(),
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            bookings: vec![
                booking(
                    "b1",
                    "CONFIRMED",
                    &["A1", "A2"],
                    &[("e1", "booking.held"), ("e2", "booking.confirmed")],
                ),
                booking("b2", "PAYMENT_FAILED", &["A3"], &[("e3", "booking.payment_failed")]),
            ],
            payments: vec![payment("p1", "b1", "SUCCEEDED", 1), payment("p2", "b2", "DECLINED", 0)],
            users: vec![User {
                id: "u1".to_owned(),
                email: "a@example.com".to_owned(),
                phone: Some("+4915100000001".to_owned()),
                notify: crate::stores::NotifyDoc { email: true, sms: true },
            }],
            notifications: vec![
                note("e2", "email", "b1"),
                note("e2", "sms", "b1"),
                note("e3", "email", "b2"),
                note("e3", "sms", "b2"),
            ],
            seats: vec![seat("A1", "booked", "b1", false), seat("A2", "booked", "b1", false)],
            queue: Some((0, 0)),
            dead_letters: Some((0, 0)),
        }
    }

    fn told(booking: &str, status: &str) -> Told {
        Told { booking: booking.to_owned(), status: status.to_owned(), via: "payBooking", at_s: 1.0 }
    }

    fn failed(checks: &[Check]) -> Vec<(&'static str, usize)> {
        checks.iter().filter(|c| !c.pass).map(|c| (c.name, c.count)).collect()
    }

    #[test]
    fn a_consistent_snapshot_passes_every_store_check() {
        let s = snapshot();
        let told = [told("b1", "CONFIRMED"), told("b2", "PAYMENT_FAILED")];
        let mut all = seat_checks(&s, &told);
        all.extend(payment_checks(&s));
        all.extend(notification_checks(&s));
        all.extend(told_checks(&s, &told));
        assert_eq!(failed(&all), vec![]);
    }

    #[test]
    fn broken_promises_are_counted_with_their_ids() {
        let mut s = snapshot();
        // A lost seat, a leftover hold, a second charge, a lost SMS and a duplicate.
        s.seats.remove(1);
        s.seats.push(seat("A3", "held", "b2", false));
        s.payments.push(payment("p3", "b1", "SUCCEEDED", 1));
        s.notifications.retain(|n| !(n.event_id == "e2" && n.channel == "sms"));
        s.notifications.push(note("e3", "email", "b2"));
        let told = [told("b1", "CONFIRMED"), told("b2", "CONFIRMED")];
        let mut all = seat_checks(&s, &told);
        all.extend(payment_checks(&s));
        all.extend(notification_checks(&s));
        all.extend(told_checks(&s, &told));
        assert_eq!(
            failed(&all),
            vec![
                ("booked_seats_are_confirmed_bookings", 1),
                ("no_seat_held_by_finished_booking", 1),
                ("no_booking_charged_twice", 1),
                ("confirmed_bookings_charged_once", 1),
                ("confirmed_bookings_notified_once_per_channel", 1),
                ("events_notified_once_per_channel", 2),
                ("told_confirmed_is_confirmed", 1),
            ]
        );
        let held = all.iter().find(|c| c.name == "no_seat_held_by_finished_booking").map(|c| &c.ids);
        assert_eq!(held, Some(&vec!["b2 (PAYMENT_FAILED) still holds seat A3".to_owned()]));
    }

    #[test]
    fn a_lapsed_hold_of_a_finished_booking_is_free_and_not_a_leak() {
        let mut s = snapshot();
        s.seats.push(seat("A3", "held", "b2", true));
        assert!(seat_checks(&s, &[]).iter().all(|c| c.pass));
    }
}
