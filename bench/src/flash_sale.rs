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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_common::Settings;
use mongodb::bson::doc;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::catalog::{Rng, SEATS, SEATS_PER_ROW, seat_id};
use crate::gql::{Answer, Client};
use crate::stats::{Samples, round1};
use crate::stores::{IN_FLIGHT, Stores, is_charged};

const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { token } }";
const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { token } }";
pub const HOLD: &str = "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id status } }";
pub const PAY: &str = "mutation($input: PayBookingInput!) { payBooking(input: $input) { id status } }";
pub const BOOKING: &str = "query($id: ID!) { booking(id: $id) { id status } }";
pub const PASSWORD: &str = "correct horse battery staple";
const REGISTRATIONS_AT_ONCE: usize = 8;

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

    /// Refusals whose code was not SEAT_UNAVAILABLE.
    pub fn wrong_refusals(&self) -> usize {
        self.refused.iter().filter(|(_, code)| code != "SEAT_UNAVAILABLE").count()
    }
}

/// The pause before send `sends + 1`.
fn retry_pause(sends: u32) -> Duration {
    Duration::from_millis(250 << sends.saturating_sub(1).min(4))
}

/// Sends one operation until it gets a definite answer: retries timeouts, dropped
/// connections and retryable errors with the very same variables (so the same
/// idempotency key). Returns the last answer, the time until it, and the sends.
pub async fn send_until_definite(
    client: &Client,
    token: Option<&str>,
    query: &str,
    variables: &Value,
    max_sends: u32,
) -> (Answer, f64, u32) {
    let started = Instant::now();
    let mut sends = 0;
    loop {
        sends += 1;
        let answer = client.send(token, query, variables.clone()).await;
        if !answer.worth_retrying() || sends >= max_sends {
            return (answer, started.elapsed().as_secs_f64() * 1000.0, sends);
        }
        // Exponential backoff, as a well-behaved app does: a retry after an overload
        // (a timeout) must not add to it at once. 250 ms, 500 ms, 1 s, 2 s, then 4 s.
        tokio::time::sleep(retry_pause(sends)).await;
    }
}

/// Registers the account `input` describes (RegisterInput's fields; the password is
/// `PASSWORD`), retrying like `send_until_definite`. A CONFLICT for a registration
/// that was sent before (by a retry here, or by an earlier call: `sent_before`) means
/// an earlier send did get through and the account exists: the customer logs in.
/// Returns the last answer (register's or login's), the time until it, and the sends.
pub async fn register_or_login(
    client: &Client,
    input: &Value,
    sent_before: bool,
    max_sends: u32,
) -> (Answer, f64, u32) {
    let variables = json!({ "input": input });
    let (answer, ms, sends) = send_until_definite(client, None, REGISTER, &variables, max_sends).await;
    match answer {
        Answer::Errors { ref code, .. } if code == "CONFLICT" && (sends > 1 || sent_before) => {
            let login = json!({ "input": { "email": input["email"], "password": PASSWORD } });
            let (answer, login_ms, login_sends) =
                send_until_definite(client, None, LOGIN, &login, max_sends).await;
            (answer, ms + login_ms, sends + login_sends)
        }
        answer => (answer, ms, sends),
    }
}

/// The access token of a `register` or `login` answer.
pub fn token_of(data: &Value) -> Option<&str> {
    data["register"]["token"].as_str().or_else(|| data["login"]["token"].as_str())
}

async fn register(client: &Client, name: &str, max_sends: u32) -> anyhow::Result<(String, f64, u32)> {
    let email = format!("{name}.{}@example.com", Uuid::new_v4().simple());
    let input = json!({ "email": email, "password": PASSWORD, "name": name });
    match register_or_login(client, &input, false, max_sends).await {
        (Answer::Data(data), ms, sends) => {
            let token = token_of(&data).context("no token in the answer")?.to_owned();
            Ok((token, ms, sends))
        }
        (other, _, _) => anyhow::bail!("registration of {name} failed: {}", other.label()),
    }
}

/// Public booking statuses a booking never leaves. HELD is not one: it also covers a
/// payment whose charge or confirmation is still running.
pub fn is_final(status: &str) -> bool {
    matches!(status, "CONFIRMED" | "PAYMENT_FAILED" | "EXPIRED" | "CANCELLED" | "FAILED")
}

/// What a payBooking answer tells the customer about the booking.
#[derive(Debug, PartialEq, Eq)]
pub enum Paid {
    /// The booking's final status.
    Settled(String),
    /// A definite refusal (e.g. HOLD_EXPIRED, or a decline that is not worth retrying).
    Refused(String),
    /// Nothing final: CONFLICT (another send of this payment is still in flight), a
    /// timeout or retryable error after the last send, or a booking still HELD.
    Unknown,
}

pub fn paid(answer: &Answer) -> Paid {
    match answer {
        Answer::Data(data) => match data["payBooking"]["status"].as_str() {
            Some(status) if is_final(status) => Paid::Settled(status.to_owned()),
            _ => Paid::Unknown,
        },
        Answer::Errors { code, .. } if code != "CONFLICT" && !answer.worth_retrying() => {
            Paid::Refused(code.clone())
        }
        _ => Paid::Unknown,
    }
}

/// What polling a booking ended with.
#[derive(Debug)]
pub struct Settled {
    /// The final status; None when the deadline passed first.
    pub status: Option<String>,
    /// `booking` queries sent, and how many of them got no status back.
    pub polls: usize,
    pub polls_without_status: usize,
    /// What the queries without a status got instead, by label.
    pub failures: BTreeMap<String, usize>,
}

/// The "payment processing..." screen: asks for the booking's status every
/// `settle_poll_interval` until it is final or `settle_deadline` has passed.
pub async fn poll_until_settled(client: &Client, token: &str, booking: &str, config: &Config) -> Settled {
    let deadline = Instant::now() + config.settle_deadline;
    let variables = json!({ "id": booking });
    let mut settled = Settled { status: None, polls: 0, polls_without_status: 0, failures: BTreeMap::new() };
    loop {
        // The payment was just reported in flight: give it a moment before asking.
        tokio::time::sleep(config.settle_poll_interval).await;
        settled.polls += 1;
        match client.send(Some(token), BOOKING, variables.clone()).await {
            Answer::Data(data) if data["booking"]["status"].is_string() => {
                let status = data["booking"]["status"].as_str().unwrap_or_default();
                if is_final(status) {
                    settled.status = Some(status.to_owned());
                    return settled;
                }
            }
            other => {
                settled.polls_without_status += 1;
                *settled.failures.entry(other.label()).or_default() += 1;
            }
        }
        if Instant::now() + config.settle_poll_interval > deadline {
            return settled;
        }
    }
}

enum Attempt {
    Confirmed { booking: String, seat: String, polled: bool },
    Refused { seat: String, code: String },
    Unpaid { booking: String, label: String },
    GaveUp { label: String },
}

#[derive(Default)]
struct UserLog {
    attempts: Vec<Attempt>,
    hold_won_ms: Samples,
    hold_lost_ms: Samples,
    pay_ms: Samples,
    pay_until_final_ms: Samples,
    polled_after: BTreeMap<String, usize>,
    polls: usize,
    polls_without_status: usize,
    poll_failures: BTreeMap<String, usize>,
    hold_retries: usize,
    pay_retries: usize,
}

/// Registered customers waiting for the sale to open.
pub struct Crowd {
    client: Client,
    tokens: Vec<String>,
    register_ms: Samples,
    register_retries: usize,
}

/// Registers `config.users` customers, then releases them all at once on `showtime`.
pub async fn run(graphql_url: &str, showtime: &str, config: &Config) -> anyhow::Result<Outcome> {
    let crowd = register_crowd(graphql_url, config).await?;
    Ok(rush(crowd, showtime, config).await)
}

/// Registers `config.users` customers. Accounts exist before a sale opens: registering
/// is setup, a few at a time, so that password hashing (argon2, deliberately slow) does
/// not time out under load.
pub async fn register_crowd(graphql_url: &str, config: &Config) -> anyhow::Result<Crowd> {
    anyhow::ensure!(config.hot_seats > 0 && hot_seat(config.hot_seats) <= SEATS, "bad hot seat count");
    let client = Client::new(graphql_url.to_owned(), config.request_timeout)?;
    let registering = Arc::new(tokio::sync::Semaphore::new(REGISTRATIONS_AT_ONCE));
    let mut registrations = tokio::task::JoinSet::new();
    for i in 0..config.users {
        let (client, registering) = (client.clone(), registering.clone());
        let max_sends = config.max_sends;
        registrations.spawn(async move {
            let _turn = registering.acquire_owned().await;
            register(&client, &format!("fan{i}"), max_sends).await
        });
    }
    let mut crowd = Crowd {
        client,
        tokens: Vec::with_capacity(config.users),
        register_ms: Samples::default(),
        register_retries: 0,
    };
    for registration in registrations.join_all().await {
        let (token, ms, sends) = registration?;
        crowd.register_ms.push(ms);
        crowd.register_retries += (sends - 1) as usize;
        crowd.tokens.push(token);
    }
    Ok(crowd)
}

/// Releases the whole crowd at once on `showtime` and collects what each customer saw.
pub async fn rush(crowd: Crowd, showtime: &str, config: &Config) -> Outcome {
    let Crowd { client, tokens, register_ms, register_retries } = crowd;
    let mut outcome = Outcome { registered: tokens.len(), register_ms, ..Outcome::default() };
    outcome.retries.insert("register", register_retries);

    // Everyone waits at the gate; the rush starts when the last one arrives.
    let gate = Arc::new(Barrier::new(tokens.len() + 1));
    let mut customers = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (client, gate, config, showtime) =
            (client.clone(), gate.clone(), config.clone(), showtime.to_owned());
        let aims_hot = i % 2 == 0;
        customers.spawn(async move {
            gate.wait().await;
            customer(&client, &token, &showtime, aims_hot, &config).await
        });
    }
    gate.wait().await;
    let started = Instant::now();
    let logs = customers.join_all().await;
    outcome.rush_seconds = started.elapsed().as_secs_f64();

    let (mut hold_retries, mut pay_retries) = (0, 0);
    for log in logs {
        outcome.attempts += log.attempts.len();
        hold_retries += log.hold_retries;
        pay_retries += log.pay_retries;
        outcome.polls += log.polls;
        outcome.polls_without_status += log.polls_without_status;
        for (label, count) in log.poll_failures {
            *outcome.poll_failures.entry(label).or_default() += count;
        }
        outcome.hold_won_ms.extend(log.hold_won_ms);
        outcome.hold_lost_ms.extend(log.hold_lost_ms);
        outcome.pay_ms.extend(log.pay_ms);
        outcome.pay_until_final_ms.extend(log.pay_until_final_ms);
        for (label, n) in log.polled_after {
            *outcome.polled_after.entry(label).or_default() += n;
        }
        for attempt in log.attempts {
            match attempt {
                Attempt::Confirmed { booking, seat, polled } => {
                    outcome.confirmed_after_polling += usize::from(polled);
                    outcome.confirmed.insert(booking, seat);
                }
                Attempt::Refused { seat, code } => outcome.refused.push((seat, code)),
                Attempt::Unpaid { booking, label } => outcome.unpaid.push((booking, label)),
                Attempt::GaveUp { label } => *outcome.gave_up.entry(label).or_default() += 1,
            }
        }
    }
    outcome.retries.insert("holdSeats", hold_retries);
    outcome.retries.insert("payBooking", pay_retries);
    outcome
}

/// One customer's rush: `rounds` purchase attempts, each a hold then a payment, the next
/// one only once the previous booking is settled (or given up on at the deadline).
async fn customer(client: &Client, token: &str, showtime: &str, aims_hot: bool, config: &Config) -> UserLog {
    let mut rng = Rng::seeded();
    let mut log = UserLog::default();
    for _ in 0..config.rounds {
        let k = if aims_hot {
            hot_seat(rng.below(config.hot_seats))
        } else {
            loop {
                let k = rng.below(SEATS);
                if !is_hot(k, config.hot_seats) && k != PROBE_SEAT {
                    break k;
                }
            }
        };
        let seat = seat_id(k);
        let hold = json!({ "input": {
            "showtimeId": showtime,
            "seatIds": [seat],
            "idempotencyKey": Uuid::new_v4().to_string(),
        } });
        let (answer, ms, sends) =
            send_until_definite(client, Some(token), HOLD, &hold, config.max_sends).await;
        log.hold_retries += (sends - 1) as usize;
        // An error the client may not retry is the gateway's final word on this hold.
        let definite = !answer.worth_retrying();
        let booking = match answer {
            Answer::Data(data) => {
                log.hold_won_ms.push(ms);
                match data["holdSeats"]["id"].as_str() {
                    Some(id) => id.to_owned(),
                    None => {
                        log.attempts.push(Attempt::GaveUp { label: "HOLD_WITHOUT_ID".to_owned() });
                        continue;
                    }
                }
            }
            Answer::Errors { code, .. } if definite => {
                log.hold_lost_ms.push(ms);
                log.attempts.push(Attempt::Refused { seat, code });
                continue;
            }
            other => {
                log.attempts.push(Attempt::GaveUp { label: format!("holdSeats {}", other.label()) });
                continue;
            }
        };
        let pay = json!({ "input": {
            "bookingId": booking,
            "paymentMethod": "pm_card_ok",
            "idempotencyKey": Uuid::new_v4().to_string(),
        } });
        let paying = Instant::now();
        let (answer, ms, sends) = send_until_definite(client, Some(token), PAY, &pay, config.max_sends).await;
        log.pay_retries += (sends - 1) as usize;
        log.pay_ms.push(ms);
        let attempt = match paid(&answer) {
            Paid::Settled(status) if status == "CONFIRMED" => {
                Attempt::Confirmed { booking, seat, polled: false }
            }
            Paid::Settled(status) => Attempt::Unpaid { booking, label: format!("status {status}") },
            Paid::Refused(code) => Attempt::Unpaid { booking, label: code },
            Paid::Unknown => {
                *log.polled_after.entry(answer.label()).or_default() += 1;
                let settled = poll_until_settled(client, token, &booking, config).await;
                log.polls += settled.polls;
                log.polls_without_status += settled.polls_without_status;
                for (label, count) in settled.failures {
                    *log.poll_failures.entry(label).or_default() += count;
                }
                match settled.status {
                    Some(status) => {
                        log.pay_until_final_ms.push(paying.elapsed().as_secs_f64() * 1000.0);
                        if status == "CONFIRMED" {
                            Attempt::Confirmed { booking, seat, polled: true }
                        } else {
                            Attempt::Unpaid { booking, label: format!("status {status}") }
                        }
                    }
                    None => Attempt::Unpaid { booking, label: "UNSETTLED".to_owned() },
                }
            }
        };
        log.attempts.push(attempt);
    }
    log
}

/// Broken promises, counted from the stores after the rush.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Seats that more than one confirmed booking claims (as stored, or as told to the
    /// customers).
    pub double_booked_seats: usize,
    /// Bookings charged (a succeeded payment) more than once.
    pub double_charges: usize,
    /// CONFIRMED bookings without any succeeded payment.
    pub uncharged_confirmed: usize,
    /// Succeeded payments of bookings that are not CONFIRMED.
    pub charged_unconfirmed: usize,
    /// Confirmed bookings (client or store) that disagree with the seat table or with
    /// each other: a CONFIRMED booking whose seat is not `booked` for it, a `booked` seat
    /// of no CONFIRMED booking, a client-confirmed booking the store does not have.
    pub store_mismatches: usize,
    /// Holds refused with any code but SEAT_UNAVAILABLE.
    pub wrong_refusals: usize,
    /// CONFIRMED bookings without a `booking.confirmed` notification at the deadline.
    pub lost_notifications: usize,
    /// CONFIRMED bookings with more than one `booking.confirmed` notification.
    pub duplicate_notifications: usize,
    /// Bookings still mid-saga (CHARGING, CONFIRMING, ...) when the deadline passed.
    pub unsettled_sagas: usize,
    pub confirmed_in_store: usize,
    pub booked_seats: usize,
    /// Seconds from the end of the rush until every confirmation was notified (or the
    /// deadline passed).
    pub notification_drain_seconds: f64,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.double_booked_seats == 0
            && self.double_charges == 0
            && self.uncharged_confirmed == 0
            && self.charged_unconfirmed == 0
            && self.store_mismatches == 0
            && self.wrong_refusals == 0
            && self.lost_notifications == 0
            && self.duplicate_notifications == 0
            && self.unsettled_sagas == 0
    }

    pub fn to_json(&self) -> Value {
        json!({
            "double_booked_seats": self.double_booked_seats,
            "double_charges": self.double_charges,
            "uncharged_confirmed": self.uncharged_confirmed,
            "charged_unconfirmed": self.charged_unconfirmed,
            "store_mismatches": self.store_mismatches,
            "wrong_refusals": self.wrong_refusals,
            "lost_notifications": self.lost_notifications,
            "duplicate_notifications": self.duplicate_notifications,
            "unsettled_sagas": self.unsettled_sagas,
            "confirmed_in_store": self.confirmed_in_store,
            "booked_seats": self.booked_seats,
            "notification_drain_seconds": round1(self.notification_drain_seconds),
        })
    }
}

/// Reads the stores the mesh wrote and checks every promise of the flash sale.
pub async fn verify(
    settings: &Settings,
    showtime: &str,
    outcome: &Outcome,
    config: &Config,
) -> anyhow::Result<Verdict> {
    let mut verdict = Verdict { wrong_refusals: outcome.wrong_refusals(), ..Verdict::default() };

    // MongoDB: the bookings of the showtime, as the booking service stored them, once
    // no saga is mid-step (a payment the customer gave up on may still be confirming).
    let stores = Stores::connect(settings).await?;
    let settling = Instant::now() + config.saga_deadline;
    let bookings = loop {
        let bookings = stores.bookings(doc! { "showtime_id": showtime }).await?;
        verdict.unsettled_sagas = bookings.iter().filter(|b| IN_FLIGHT.contains(&b.status.as_str())).count();
        if verdict.unsettled_sagas == 0 || Instant::now() >= settling {
            break bookings;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // PostgreSQL, after the sagas settled: who holds each taken seat of the showtime.
    let booked: HashMap<String, String> = stores
        .taken_seats(showtime)
        .await?
        .into_iter()
        .filter(|seat| seat.status == "booked")
        .filter_map(|seat| Some((seat.seat_id, seat.booking_id?)))
        .collect();
    verdict.booked_seats = booked.len();
    let confirmed: HashMap<&str, Vec<&str>> = bookings
        .iter()
        .filter(|b| b.status == "CONFIRMED")
        .map(|b| (b.id.as_str(), b.seat_ids().collect()))
        .collect();
    verdict.confirmed_in_store = confirmed.len();

    // Who was told (client) or recorded (store) to own each seat.
    let mut claims: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (id, seats) in &confirmed {
        for seat in seats {
            claims.entry(seat).or_default().insert(id);
        }
    }
    for (id, seat) in &outcome.confirmed {
        claims.entry(seat.as_str()).or_default().insert(id.as_str());
    }
    verdict.double_booked_seats = claims.values().filter(|owners| owners.len() > 1).count();
    let mut mismatches = 0;
    for (id, seats) in &confirmed {
        mismatches += seats.iter().filter(|seat| booked.get(**seat).map(String::as_str) != Some(*id)).count();
    }
    mismatches += booked.values().filter(|id| !confirmed.contains_key(id.as_str())).count();
    mismatches += outcome.confirmed.keys().filter(|id| !confirmed.contains_key(id.as_str())).count();
    verdict.store_mismatches = mismatches;

    // Payments: one succeeded charge per confirmed booking, none for any other.
    let payments = stores.payments(doc! {}).await?;
    let ours: HashSet<&str> = bookings.iter().map(|b| b.id.as_str()).collect();
    let mut charges: HashMap<&str, usize> = HashMap::new();
    for payment in &payments {
        if is_charged(&payment.status) && ours.contains(payment.booking_id.as_str()) {
            *charges.entry(payment.booking_id.as_str()).or_default() += 1;
        }
    }
    verdict.double_charges = charges.values().filter(|&&n| n > 1).count();
    verdict.uncharged_confirmed = confirmed.keys().filter(|id| !charges.contains_key(*id)).count();
    verdict.charged_unconfirmed = charges.keys().filter(|id| !confirmed.contains_key(*id)).count();

    // Notifications: the worker drains RabbitMQ at its own pace; wait for it.
    let waiting = Instant::now();
    let deadline = waiting + config.notification_deadline;
    loop {
        let notes = stores.notifications(doc! { "event_type": "booking.confirmed" }).await?;
        let mut per_booking: HashMap<&str, usize> = HashMap::new();
        for note in &notes {
            *per_booking.entry(note.booking_id.as_str()).or_default() += 1;
        }
        verdict.lost_notifications = confirmed.keys().filter(|id| !per_booking.contains_key(*id)).count();
        verdict.duplicate_notifications = per_booking.values().filter(|&&n| n > 1).count();
        if verdict.lost_notifications == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    verdict.notification_drain_seconds = waiting.elapsed().as_secs_f64();
    Ok(verdict)
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use std::time::Duration;

    use super::{Paid, paid, retry_pause};
    use crate::gql::Answer;

    #[test]
    fn retries_back_off_exponentially_up_to_four_seconds() {
        let pauses: Vec<Duration> = (1..=7).map(retry_pause).collect();
        let ms = |m| Duration::from_millis(m);
        assert_eq!(pauses, [ms(250), ms(500), ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)]);
    }

    fn error(code: &str, retryable: bool) -> Answer {
        Answer::Errors { code: code.to_owned(), retryable, body: json!({}) }
    }

    fn booking(status: &str) -> Answer {
        Answer::Data(json!({ "payBooking": { "id": "b", "status": status } }))
    }

    #[test]
    fn only_a_final_status_or_a_definite_refusal_ends_a_payment_without_polling() {
        assert_eq!(paid(&booking("CONFIRMED")), Paid::Settled("CONFIRMED".to_owned()));
        assert_eq!(paid(&booking("EXPIRED")), Paid::Settled("EXPIRED".to_owned()));
        assert_eq!(paid(&error("HOLD_EXPIRED", false)), Paid::Refused("HOLD_EXPIRED".to_owned()));
        assert_eq!(paid(&error("PAYMENT_DECLINED", false)), Paid::Refused("PAYMENT_DECLINED".to_owned()));
        // Still HELD, the payment in flight, or no answer at all: the status will tell.
        assert_eq!(paid(&booking("HELD")), Paid::Unknown);
        assert_eq!(paid(&error("CONFLICT", false)), Paid::Unknown);
        assert_eq!(paid(&error("PAYMENT_DECLINED", true)), Paid::Unknown);
        assert_eq!(paid(&error("INTERNAL", false)), Paid::Unknown);
        assert_eq!(paid(&Answer::Transport("timeout".to_owned())), Paid::Unknown);
    }
}
