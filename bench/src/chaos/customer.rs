//! The chaos suite's customers. Each registers (a third with a phone and SMS on top of
//! email, a third with SMS only), then, until the load is over, holds one or two random
//! adjacent seats, pays (mostly with the ok card, some declined), and sometimes cancels
//! the hold or the confirmed booking, all through GraphQL. Every operation is retried
//! with the very same variables (so the same idempotency key) while the answer is not
//! definite: a transport error, INTERNAL or a retryable error, SERVICE_BUSY or
//! RATE_LIMITED. A payment or cancellation without a final answer is followed by
//! polling the booking, like a "processing..." screen. Each customer writes down what
//! the mesh told it about its bookings, which the verification holds the stores to.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use marquee_kit::shutdown::Shutdown;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::catalog::{Rng, SEATS_PER_ROW, seat_id};
use crate::flash_sale::{
    Config, HOLD, PASSWORD, PAY, Paid, is_final, paid, poll_until_settled, register_or_login,
    send_until_definite, token_of,
};
use crate::gql::{Answer, Client};
use crate::stats::Samples;

const UPDATE_PROFILE: &str = "mutation($input: UpdateProfileInput!) { updateProfile(input: $input) { id } }";
const CANCEL: &str = "mutation($id: ID!) { cancelBooking(id: $id) { id status } }";
const MY_HELD: &str = "{ me { bookings(first: 50, statuses: [HELD]) { nodes { id status } } } }";

/// Out of 100 purchases: holds given up before paying, declined cards (two kinds),
/// and confirmed bookings cancelled afterwards.
const CANCEL_HOLD_PCT: usize = 5;
const DECLINED_PCT: usize = 10;
const INSUFFICIENT_PCT: usize = 5;
const CANCEL_CONFIRMED_PCT: usize = 10;
/// Payment rounds (payBooking with its one key, then polling the booking) before the
/// customer gives up on a booking: enough to outlast an idempotency claim that the
/// gateway could not free while Redis was down (it lapses after a minute).
const PAY_ROUNDS: usize = 6;

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Target {
    pub showtime: String,
    /// Seats 0..seat_pool of the hall (row-major) are the ones customers pick from.
    pub seat_pool: usize,
    /// Request timeout, sends per operation, and the polling of unsettled bookings.
    pub config: Config,
    /// Registrations in flight at once (all customers at once unless limited).
    pub registering: Arc<Semaphore>,
}

/// Something the mesh told a customer about a booking.
#[derive(Debug, Clone)]
pub struct Told {
    pub booking: String,
    /// The public status: HELD, CONFIRMED, PAYMENT_FAILED, CANCELLED, ...
    pub status: String,
    /// The operation that said so.
    pub via: &'static str,
    pub at_s: f64,
}

/// What one customer did and heard.
#[derive(Debug, Default)]
pub struct Log {
    pub email: String,
    pub registered: bool,
    /// Requests sent, and sends beyond the first of an operation, per operation.
    pub sends: BTreeMap<&'static str, usize>,
    pub retries: BTreeMap<&'static str, usize>,
    /// Final answers per operation, e.g. "holdSeats SEAT_UNAVAILABLE".
    pub answers: BTreeMap<String, usize>,
    pub told: Vec<Told>,
    /// Bookings whose payment or cancellation never showed a final status.
    pub unsettled: Vec<String>,
    /// From the first send of an operation to its last answer, per operation.
    pub latency: BTreeMap<&'static str, Samples>,
}

impl Log {
    fn count(&mut self, op: &'static str, answer: &Answer, ms: f64, sends: u32) {
        self.latency.entry(op).or_default().push(ms);
        *self.sends.entry(op).or_default() += sends as usize;
        *self.retries.entry(op).or_default() += sends.saturating_sub(1) as usize;
        *self.answers.entry(format!("{op} {}", describe(answer))).or_default() += 1;
    }

    fn tell(&mut self, booking: &str, status: &str, via: &'static str, epoch: Instant) {
        self.told.push(Told {
            booking: booking.to_owned(),
            status: status.to_owned(),
            via,
            at_s: epoch.elapsed().as_secs_f64(),
        });
    }
}

/// An answer's label, with the message of an error (ids masked, so that equal errors
/// tally together): "CONFLICT" alone does not say which conflict it was.
fn describe(answer: &Answer) -> String {
    let Answer::Errors { code, body, .. } = answer else { return answer.label() };
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    let masked: Vec<&str> = message
        .split(' ')
        .map(|word| {
            let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-');
            if Uuid::parse_str(bare).is_ok() { "<id>" } else { word }
        })
        .collect();
    format!("{code}: {}", masked.join(" "))
}

/// When customers stop: no new purchase once the load is over; no new round of a
/// purchase (a payment retried after polling) once the grace after it is over too.
#[derive(Clone)]
pub struct Stops {
    pub load_over: Shutdown,
    pub grace_over: Shutdown,
    /// The run's start, for the times in `Told`.
    pub epoch: Instant,
}

struct Customer<'a> {
    client: &'a Client,
    target: &'a Target,
    stops: &'a Stops,
    token: String,
    rng: Rng,
    log: Log,
}

/// Customer `index`: registers, then buys until the load is over; finishes the
/// purchase it is in the middle of first (within the grace).
pub async fn run(index: usize, client: Client, target: Target, stops: Stops) -> Log {
    let load_over = &stops.load_over;
    let mut log =
        Log { email: format!("chaos{index}.{}@example.com", Uuid::new_v4().simple()), ..Log::default() };
    // A third email only (the default), a third email and SMS, a third SMS only.
    let variant = index % 3;
    let mut input = json!({ "email": log.email, "password": PASSWORD, "name": format!("Chaos {index}") });
    if variant != 0 {
        input["phone"] = json!(format!("+4915{:09}", index));
    }
    let mut sent_before = false;
    let token = loop {
        if load_over.is_cancelled() {
            return log;
        }
        let turn = target.registering.acquire().await;
        let (answer, ms, sends) =
            register_or_login(&client, &input, sent_before, target.config.max_sends).await;
        drop(turn);
        sent_before = true;
        log.count("register", &answer, ms, sends);
        if let Answer::Data(data) = &answer
            && let Some(token) = token_of(data)
        {
            break token.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    log.registered = true;
    let mut customer =
        Customer { client: &client, target: &target, stops: &stops, token, rng: Rng::seeded(), log };
    if variant != 0 {
        let preferences = json!({ "email": variant == 1, "sms": true });
        let variables = json!({ "input": { "notificationPreferences": preferences } });
        while !load_over.is_cancelled() {
            if !customer.send("updateProfile", UPDATE_PROFILE, &variables).await.worth_retrying() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    while !load_over.is_cancelled() {
        customer.purchase().await;
        let think = Duration::from_millis(50 + customer.rng.below(250) as u64);
        tokio::time::sleep(think).await;
    }
    customer.log
}

impl Customer<'_> {
    async fn send(&mut self, op: &'static str, query: &str, variables: &Value) -> Answer {
        let max_sends = self.target.config.max_sends;
        let (answer, ms, sends) =
            send_until_definite(self.client, Some(&self.token), query, variables, max_sends).await;
        self.log.count(op, &answer, ms, sends);
        answer
    }

    /// One or two adjacent seats of the pool, in one row.
    fn pick_seats(&mut self) -> Vec<String> {
        let k = self.rng.below(self.target.seat_pool);
        let pair = self.rng.below(2) == 1 && k % SEATS_PER_ROW != SEATS_PER_ROW - 1;
        let mut seats = vec![seat_id(k)];
        if pair {
            seats.push(seat_id(k + 1));
        }
        seats
    }

    async fn purchase(&mut self) {
        let hold = json!({ "input": {
            "showtimeId": self.target.showtime,
            "seatIds": self.pick_seats(),
            "idempotencyKey": Uuid::new_v4().to_string(),
        } });
        let booking = match self.send("holdSeats", HOLD, &hold).await {
            Answer::Data(data) => match data["holdSeats"]["id"].as_str() {
                Some(id) => id.to_owned(),
                None => return,
            },
            // The customer is at the hold limit (holds whose answers were lost), or
            // the key is still claimed by a send whose answer was lost: give up those
            // holds, so that the next attempt (with a new key) can go ahead.
            Answer::Errors { code, .. } if code == "CONFLICT" => return self.cancel_my_holds().await,
            // Seats taken, or no definite answer after every send: next attempt.
            _ => return,
        };
        let roll = self.rng.below(100);
        if roll < CANCEL_HOLD_PCT {
            return self.cancel(&booking).await;
        }
        let method = match roll - CANCEL_HOLD_PCT {
            r if r < DECLINED_PCT => "pm_card_declined",
            r if r < DECLINED_PCT + INSUFFICIENT_PCT => "pm_card_insufficient_funds",
            _ => "pm_card_ok",
        };
        let pay = json!({ "input": {
            "bookingId": booking,
            "paymentMethod": method,
            "idempotencyKey": Uuid::new_v4().to_string(),
        } });
        let status = self.pay(&booking, &pay).await;
        if status.as_deref() == Some("CONFIRMED") && self.rng.below(100) < CANCEL_CONFIRMED_PCT {
            self.cancel(&booking).await;
        }
    }

    /// Pays with one idempotency key until the booking is final: a payment without a
    /// final answer is followed by polling, and sent again (same key) while the booking
    /// still shows HELD.
    async fn pay(&mut self, booking: &str, pay: &Value) -> Option<String> {
        for _ in 0..PAY_ROUNDS {
            let answer = self.send("payBooking", PAY, pay).await;
            let told = match paid(&answer) {
                Paid::Settled(status) => Some(status),
                // The gateway says PAYMENT_DECLINED (not retryable) for a PAYMENT_FAILED booking.
                Paid::Refused(code) if code == "PAYMENT_DECLINED" => Some("PAYMENT_FAILED".to_owned()),
                Paid::Refused(_) | Paid::Unknown => None,
            };
            if let Some(status) = told {
                self.log.tell(booking, &status, "payBooking", self.stops.epoch);
                return Some(status);
            }
            if let Some(status) = self.poll(booking).await {
                return Some(status);
            }
            if self.stops.grace_over.is_cancelled() {
                break;
            }
        }
        self.log.unsettled.push(booking.to_owned());
        None
    }

    /// Cancels `booking`; a cancellation without a final answer is followed by polling.
    async fn cancel(&mut self, booking: &str) {
        let answer = self.send("cancelBooking", CANCEL, &json!({ "id": booking })).await;
        if let Answer::Data(data) = &answer
            && let Some(status) = data["cancelBooking"]["status"].as_str()
            && is_final(status)
        {
            self.log.tell(booking, status, "cancelBooking", self.stops.epoch);
            return;
        }
        if self.poll(booking).await.is_none() {
            self.log.unsettled.push(booking.to_owned());
        }
    }

    /// Asks for the booking's status until it is final (or the polling deadline);
    /// what it says is what the customer was told.
    async fn poll(&mut self, booking: &str) -> Option<String> {
        let settled = poll_until_settled(self.client, &self.token, booking, &self.target.config).await;
        *self.log.sends.entry("booking").or_default() += settled.polls;
        for (label, n) in settled.failures {
            *self.log.answers.entry(format!("booking {label}")).or_default() += n;
        }
        let status = settled.status?;
        self.log.tell(booking, &status, "booking", self.stops.epoch);
        Some(status)
    }

    async fn cancel_my_holds(&mut self) {
        let Answer::Data(data) = self.send("me.bookings", MY_HELD, &json!({})).await else { return };
        let held: Vec<String> = data["me"]["bookings"]["nodes"]
            .as_array()
            .map(|nodes| nodes.iter().filter_map(|n| n["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        for booking in held {
            self.cancel(&booking).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::describe;
    use crate::gql::Answer;

    #[test]
    fn errors_are_told_apart_by_their_message_with_ids_masked() {
        let body =
            json!({ "errors": [{ "message": "booking 01a241e3-d1be-7002-8803-60e332741598 is busy" }] });
        let answer = Answer::Errors { code: "CONFLICT".to_owned(), retryable: false, body };
        assert_eq!(describe(&answer), "CONFLICT: booking <id> is busy");
        assert_eq!(describe(&Answer::Transport("timeout".to_owned())), "TRANSPORT(timeout)");
    }
}
