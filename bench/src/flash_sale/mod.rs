//! The flash sale: many customers register, then all try to book seats of one big
//! showtime through GraphQL at the same moment. Half of them aim at a handful of hot
//! seats, the rest at random seats of the whole hall. Every hold and payment carries an
//! idempotency key and is retried with the same key after a timeout. A payment that
//! ends without a final answer (still in flight, or no answer at all) is followed the way
//! a "payment processing..." screen would: the customer polls `booking(id)` until the
//! booking settles, and only then starts the next purchase.
//!
//! After the rush, `verify` reads the stores themselves (PostgreSQL `showtime_seats`,
//! MongoDB bookings, payments and notifications) and counts every broken promise.
//!
//! Files: `requests.rs` (how one customer talks to the gateway: retried sends, login,
//! a payment's answer, polling a booking), `crowd.rs` (registering the crowd and the
//! rush itself), `verify.rs` (the broken promises counted from the stores); this one
//! holds the sale's configuration, what the customers saw, and its JSON.

mod crowd;
mod requests;
mod verify;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use crate::catalog::{SEATS, SEATS_PER_ROW, seat_id};
use crate::stats::{Samples, round1};

pub use crowd::{Crowd, register_crowd, run, rush};
pub use requests::{
    BOOKING, HOLD, PASSWORD, PAY, Paid, Settled, is_final, paid, poll_until_settled, register_or_login,
    send_until_definite, token_of,
};
pub use verify::{Verdict, verify};

#[derive(Debug, Clone)]
pub struct Config {
    /// Concurrent customers.
    pub users: usize,
    /// How many seats half of the customers fight over.
    pub hot_seats: usize,
    /// Purchase attempts per customer, one after the other (1 = a single rush).
    pub rounds: usize,
    /// Client-side timeout of one GraphQL request; a timed-out request is retried.
    pub request_timeout: Duration,
    /// Sends of one operation (first try + retries) before the customer gives up.
    pub max_sends: u32,
    /// How long to wait for the notification worker to record every confirmation.
    pub notification_deadline: Duration,
    /// How long to wait for sagas the customers gave up on to reach a final status.
    pub saga_deadline: Duration,
    /// After a payment without a final answer, how often the customer asks for the
    /// booking's status, and for how long before giving up on it (UNSETTLED).
    pub settle_poll_interval: Duration,
    pub settle_deadline: Duration,
    /// The cinema refuses holds that would strand a seat (`cinema.no_orphan_seats`,
    /// the production default): SEAT_RULE_VIOLATION is then a right refusal too.
    pub orphan_rule: bool,
}

impl Config {
    pub fn bench() -> Self {
        Self {
            users: 256,
            hot_seats: 10,
            rounds: 8,
            request_timeout: Duration::from_secs(10),
            max_sends: 5,
            notification_deadline: Duration::from_secs(300),
            saga_deadline: Duration::from_secs(120),
            settle_poll_interval: Duration::from_millis(500),
            settle_deadline: Duration::from_secs(60),
            orphan_rule: false,
        }
    }

    pub fn smoke() -> Self {
        Self {
            users: 32,
            hot_seats: 5,
            rounds: 1,
            request_timeout: Duration::from_secs(10),
            max_sends: 5,
            notification_deadline: Duration::from_secs(40),
            saga_deadline: Duration::from_secs(40),
            settle_poll_interval: Duration::from_millis(500),
            settle_deadline: Duration::from_secs(30),
            orphan_rule: false,
        }
    }
}

/// A seat no customer aims at: the subscription scenario changes it to prove its
/// subscribers are live before the rush.
pub const PROBE_SEAT: usize = SEATS - 1;

/// Hot seats sit in the middle of the middle row: the seats everyone wants.
fn hot_seat(index: usize) -> usize {
    50 * SEATS_PER_ROW + 45 + index
}

/// The seat ids the hot half of the customers aim at.
pub fn hot_seat_ids(hot_seats: usize) -> Vec<String> {
    (0..hot_seats).map(|i| seat_id(hot_seat(i))).collect()
}

fn is_hot(k: usize, hot_seats: usize) -> bool {
    (hot_seat(0)..hot_seat(hot_seats)).contains(&k)
}

/// What the customers saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub registered: usize,
    pub attempts: usize,
    /// booking id -> seat, for every booking the client saw CONFIRMED: in payBooking's
    /// answer, or by polling the booking after a payment without a final answer.
    pub confirmed: HashMap<String, String>,
    /// How many of `confirmed` the customers learnt by polling.
    pub confirmed_after_polling: usize,
    /// When each of `confirmed` was learnt, from the start signal: a rush's tail.
    pub confirmed_at_ms: Samples,
    /// Seats whose hold was refused, with the refusal's code.
    pub refused: Vec<(String, String)>,
    /// Holds that succeeded but whose payment did not confirm, with the final answer: an
    /// error code, `status X` for a final booking status, or UNSETTLED for a booking still
    /// in flight at the settle deadline.
    pub unpaid: Vec<(String, String)>,
    /// The payBooking answers that sent customers polling, by label.
    pub polled_after: BTreeMap<String, usize>,
    /// `booking` queries sent while polling, and how many of them got no status back.
    pub polls: usize,
    pub polls_without_status: usize,
    /// What the `booking` queries without a status got instead, by label.
    pub poll_failures: BTreeMap<String, usize>,
    /// Operations that gave up after `max_sends`, by final label.
    pub gave_up: BTreeMap<String, usize>,
    /// Sends beyond the first, per operation.
    pub retries: BTreeMap<&'static str, usize>,
    pub register_ms: Samples,
    pub hold_won_ms: Samples,
    pub hold_lost_ms: Samples,
    pub pay_ms: Samples,
    /// Payments that needed polling: from the first payBooking send until the customer
    /// saw a final status.
    pub pay_until_final_ms: Samples,
    /// From the start signal to the last customer's last answer.
    pub rush_seconds: f64,
}

impl Outcome {
    pub fn bookings_per_s(&self) -> f64 {
        self.confirmed.len() as f64 / self.rush_seconds.max(f64::EPSILON)
    }

    /// Refusals whose code was not SEAT_UNAVAILABLE (nor SEAT_RULE_VIOLATION when
    /// the orphan rule is on).
    pub fn wrong_refusals(&self, orphan_rule: bool) -> usize {
        let right = |code: &str| code == "SEAT_UNAVAILABLE" || (orphan_rule && code == "SEAT_RULE_VIOLATION");
        self.refused.iter().filter(|(_, code)| !right(code)).count()
    }
}

/// The outcome as JSON, for results files.
pub fn outcome_json(outcome: &mut Outcome, config: &Config) -> Value {
    json!({
        "users": config.users,
        "hot_seats": config.hot_seats,
        "rounds": config.rounds,
        "attempts": outcome.attempts,
        "winners": outcome.confirmed.len(),
        "confirmed_after_polling": outcome.confirmed_after_polling,
        "losers": outcome.refused.len(),
        "unpaid": outcome.unpaid.len(),
        "refusals_by_code": tally(outcome.refused.iter().map(|(_, code)| code.as_str())),
        "unpaid_by_answer": tally(outcome.unpaid.iter().map(|(_, answer)| answer.as_str())),
        "polling": {
            "settle_poll_interval_ms": config.settle_poll_interval.as_millis(),
            "settle_deadline_s": config.settle_deadline.as_secs(),
            "after_pay_answer": outcome.polled_after,
            "queries": outcome.polls,
            "queries_without_status": outcome.polls_without_status,
            "queries_without_status_by_answer": outcome.poll_failures,
        },
        "gave_up": outcome.gave_up,
        "retries": outcome.retries,
        "rush_seconds": round1(outcome.rush_seconds),
        "bookings_per_s": round1(outcome.bookings_per_s()),
        "attempts_per_s": round1(outcome.attempts as f64 / outcome.rush_seconds.max(f64::EPSILON)),
        "latency": {
            "register": outcome.register_ms.summary(),
            "holdSeats_won": outcome.hold_won_ms.summary(),
            "holdSeats_lost": outcome.hold_lost_ms.summary(),
            "payBooking": outcome.pay_ms.summary(),
            "payBooking_until_final_after_polling": outcome.pay_until_final_ms.summary(),
            "confirmed_since_start_signal": outcome.confirmed_at_ms.summary(),
        },
    })
}

fn tally<'a>(labels: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for label in labels {
        *counts.entry(label).or_default() += 1;
    }
    counts
}
