//! How one customer talks to the gateway: every operation is sent until it gets a
//! definite answer, with the same idempotency key on every retry; a registration whose
//! first send got through becomes a login; a payment's answer is read as final or not,
//! and a booking without a final answer is polled until it settles. Shared by the
//! flash sale and the chaos customers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Config;
use crate::gql::{Answer, Client};

const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { token } }";
const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { token } }";
pub const HOLD: &str = "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id status } }";
pub const PAY: &str = "mutation($input: PayBookingInput!) { payBooking(input: $input) { id status } }";
pub const BOOKING: &str = "query($id: ID!) { booking(id: $id) { id status } }";
pub const PASSWORD: &str = "correct horse battery staple";

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
