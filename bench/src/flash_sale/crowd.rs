//! The rush itself: the crowd registers ahead of the sale, then every customer is
//! released at the same moment and makes its purchase attempts (hold, pay, and poll
//! when the payment has no final answer); what each one saw is gathered into an
//! `Outcome`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde_json::json;
use tokio::sync::Barrier;
use uuid::Uuid;

use super::requests::{
    HOLD, PASSWORD, PAY, Paid, paid, poll_until_settled, register_or_login, send_until_definite, token_of,
};
use super::{Config, Outcome, PROBE_SEAT, hot_seat, is_hot};
use crate::catalog::{Rng, SEATS, seat_id};
use crate::gql::{Answer, Client};
use crate::stats::Samples;

const REGISTRATIONS_AT_ONCE: usize = 8;

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

enum Attempt {
    /// `at_ms`: when the customer learnt it, from the start signal.
    Confirmed {
        booking: String,
        seat: String,
        polled: bool,
        at_ms: f64,
    },
    Refused {
        seat: String,
        code: String,
    },
    Unpaid {
        booking: String,
        label: String,
    },
    GaveUp {
        label: String,
    },
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
    /// One client per gateway: customer `i` talks to `clients[i % len]`.
    clients: Vec<Client>,
    tokens: Vec<String>,
    register_ms: Samples,
    register_retries: usize,
}

/// Registers `config.users` customers, then releases them all at once on `showtime`,
/// the customers split evenly over the gateways at `graphql_urls`.
pub async fn run(graphql_urls: &[String], showtime: &str, config: &Config) -> anyhow::Result<Outcome> {
    let crowd = register_crowd(graphql_urls, config).await?;
    Ok(rush(crowd, showtime, config).await)
}

/// Registers `config.users` customers, split evenly over the gateways at
/// `graphql_urls` (in the rush too, each customer sticks to one gateway, as a client
/// keeps its connection behind a load balancer). Accounts exist before a sale opens:
/// registering is setup, a few at a time, so that password hashing (argon2,
/// deliberately slow) does not time out under load.
pub async fn register_crowd(graphql_urls: &[String], config: &Config) -> anyhow::Result<Crowd> {
    anyhow::ensure!(config.hot_seats > 0 && hot_seat(config.hot_seats) <= SEATS, "bad hot seat count");
    anyhow::ensure!(!graphql_urls.is_empty(), "no gateway to send the crowd to");
    let clients = graphql_urls
        .iter()
        .map(|url| Client::new(url.clone(), config.request_timeout))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let registering = Arc::new(tokio::sync::Semaphore::new(REGISTRATIONS_AT_ONCE));
    let mut registrations = tokio::task::JoinSet::new();
    for i in 0..config.users {
        let (client, registering) = (clients[i % clients.len()].clone(), registering.clone());
        let max_sends = config.max_sends;
        registrations.spawn(async move {
            let _turn = registering.acquire_owned().await;
            register(&client, &format!("fan{i}"), max_sends).await
        });
    }
    let mut crowd = Crowd {
        clients,
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
    let Crowd { clients, tokens, register_ms, register_retries } = crowd;
    let mut outcome = Outcome { registered: tokens.len(), register_ms, ..Outcome::default() };
    outcome.retries.insert("register", register_retries);

    // Everyone waits at the gate; the rush starts when the last one arrives.
    let gate = Arc::new(Barrier::new(tokens.len() + 1));
    let mut customers = tokio::task::JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (client, gate, config, showtime) =
            (clients[i % clients.len()].clone(), gate.clone(), config.clone(), showtime.to_owned());
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
                Attempt::Confirmed { booking, seat, polled, at_ms } => {
                    outcome.confirmed_after_polling += usize::from(polled);
                    outcome.confirmed_at_ms.push(at_ms);
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
    // Called as the gate opens: the start signal.
    let started = Instant::now();
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
                Attempt::Confirmed { booking, seat, polled: false, at_ms: since(started) }
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
                            Attempt::Confirmed { booking, seat, polled: true, at_ms: since(started) }
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

fn since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}
