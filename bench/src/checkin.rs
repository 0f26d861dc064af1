//! `marquee-bench checkin`: door scanners through GraphQL. The mesh runs in-process;
//! one showtime gets `--tickets` tickets (bookings of ten seats, issued as the
//! notification worker has a confirmation's tickets issued, so the run measures
//! check-in, not booking); then `--scanners` concurrent STAFF clients scan every ticket twice, the two
//! scans of a ticket back to back in the queue so that they race. Checks: exactly one
//! ADMITTED per ticket, every other scan ALREADY_CHECKED_IN, no error, every ticket
//! CHECKED_IN in MongoDB. Writes `bench/results/checkin.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use marquee_kit::Secret;
use marquee_proto::ticket::v1::ticket_service_client::TicketServiceClient;
use marquee_proto::ticket::v1::{
    IssueTicketsBatchRequest, IssueTicketsRequest, ListTicketsRequest, issue_tickets_answer,
};
use mongodb::bson::doc;
use serde_json::{Value, json};

use crate::gql::{Answer, Client};
use crate::mesh::{Mesh, Service};
use crate::stats::{Samples, round1};

const SEATS_PER_BOOKING: usize = 10;
const ADMIN_EMAIL: &str = "bench-admin@marquee.example";
const ADMIN_PASSWORD: &str = "correct horse battery staple";
const CHECK_IN: &str = "mutation($input: CheckInInput!) { checkIn(input: $input) { outcome ticket { id } } }";

pub struct Options {
    pub tickets: usize,
    pub scanners: usize,
    pub out: PathBuf,
}

impl Options {
    pub const USAGE: &str = "marquee-bench checkin [--tickets 10000] [--scanners 64] [--out FILE]";

    pub fn parse(root: &Path, mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut options =
            Self { tickets: 10_000, scanners: 64, out: root.join("bench/results/checkin.json") };
        while let Some(flag) = args.next() {
            let value = args.next().with_context(|| format!("{flag} needs a value\n{}", Self::USAGE))?;
            match flag.as_str() {
                "--tickets" => options.tickets = value.parse().context("--tickets wants a number")?,
                "--scanners" => options.scanners = value.parse().context("--scanners wants a number")?,
                "--out" => options.out = PathBuf::from(value),
                _ => anyhow::bail!("unknown option {flag}\n{}", Self::USAGE),
            }
        }
        anyhow::ensure!(
            options.tickets.is_multiple_of(SEATS_PER_BOOKING),
            "--tickets must be a multiple of 10"
        );
        Ok(options)
    }
}

async fn login(client: &Client, email: &str, password: &str) -> anyhow::Result<String> {
    let login = "mutation($input: LoginInput!) { login(input: $input) { token } }";
    let answer = client.send(None, login, json!({ "input": { "email": email, "password": password } })).await;
    let Answer::Data(data) = answer else { anyhow::bail!("login failed: {}", answer.label()) };
    data["login"]["token"].as_str().map(str::to_owned).context("login without a token")
}

/// A user promoted to STAFF by the bootstrap admin, signed in again with the role.
async fn staff_token(client: &Client) -> anyhow::Result<String> {
    let email = format!("usher-{}@example.com", uuid::Uuid::new_v4().simple());
    let register = "mutation($input: RegisterInput!) { register(input: $input) { user { id } } }";
    let input = json!({ "input": { "email": email, "password": "correct horse battery", "name": "Usher" } });
    let Answer::Data(data) = client.send(None, register, input).await else {
        anyhow::bail!("register failed")
    };
    let admin = login(client, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let promote = "mutation($id: ID!) { setUserRole(userId: $id, role: STAFF) { role } }";
    let answer = client.send(Some(&admin), promote, json!({ "id": data["register"]["user"]["id"] })).await;
    anyhow::ensure!(answer.is_ok(), "setUserRole failed: {}", answer.label());
    login(client, &email, "correct horse battery").await
}

/// Has `tickets / 10` bookings of one showtime issued, as the notification worker asks
/// for a confirmation's tickets (`IssueTicketsBatch`), and returns every ticket's code
/// once all are stored.
async fn issue(mesh: &Mesh, showtime: &str, tickets: usize) -> anyhow::Result<Vec<(String, String)>> {
    let booking_ids: Vec<String> =
        (0..tickets / SEATS_PER_BOOKING).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let mut issuer = TicketServiceClient::connect(mesh.url(Service::Ticket)?).await?;
    for (chunk_index, chunk) in booking_ids.chunks(marquee_kit::batch::MAX_BATCH).enumerate() {
        let bookings = chunk
            .iter()
            .enumerate()
            .map(|(n, booking_id)| {
                let b = chunk_index * marquee_kit::batch::MAX_BATCH + n;
                IssueTicketsRequest {
                    booking_id: booking_id.clone(),
                    showtime_id: showtime.to_owned(),
                    seat_ids: (0..SEATS_PER_BOOKING)
                        .map(|s| format!("S{}", b * SEATS_PER_BOOKING + s))
                        .collect(),
                }
            })
            .collect();
        let answers =
            issuer.issue_tickets_batch(IssueTicketsBatchRequest { bookings }).await?.into_inner().answers;
        for answer in answers {
            anyhow::ensure!(
                matches!(answer.answer, Some(issue_tickets_answer::Answer::Issued(_))),
                "a booking's tickets were refused: {answer:?}"
            );
        }
    }
    let mut codes = Vec::with_capacity(tickets);
    for chunk in booking_ids.chunks(100) {
        let request = ListTicketsRequest { booking_ids: chunk.to_vec() };
        let listed = issuer.list_tickets(request).await?.into_inner().tickets;
        codes.extend(listed.into_iter().map(|t| (t.id, t.code)));
    }
    anyhow::ensure!(codes.len() == tickets, "only {} of {tickets} tickets were stored", codes.len());
    Ok(codes)
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    // Notifications play no part in check-in; they would only share the two cores.
    let mesh = Mesh::builder()
        .without(Service::Notification)
        .configure(|settings| {
            settings.user.bootstrap_admin_email = Some(ADMIN_EMAIL.to_owned());
            settings.user.bootstrap_admin_password = Some(Secret::new(ADMIN_PASSWORD.to_owned()));
            settings.gateway.rate_limit.enabled = false;
        })
        .start()
        .await?;
    let client = Client::new(mesh.graphql_url()?, Duration::from_secs(30))?;
    let Answer::Data(showtimes) = client.send(None, "{ showtimes { id } }", json!({})).await else {
        anyhow::bail!("no showtimes")
    };
    let showtime = showtimes["showtimes"][0]["id"].as_str().context("no showtime")?.to_owned();
    let staff = staff_token(&client).await?;

    let issuing = Instant::now();
    let tickets = issue(&mesh, &showtime, options.tickets).await?;
    let issue_seconds = issuing.elapsed().as_secs_f64();
    println!("{} tickets issued in {issue_seconds:.1} s", tickets.len());

    // A moment inside every ticket's window: the showtime's start.
    let query = "query($id: ID!) { showtime(id: $id) { startsAt } }";
    let Answer::Data(started) = client.send(None, query, json!({ "id": showtime })).await else {
        anyhow::bail!("no showtime")
    };
    let scanned_at = started["showtime"]["startsAt"].as_str().context("no start")?.to_owned();

    // Each ticket twice, back to back, so its two scans race.
    let scans: Arc<Vec<(String, String)>> =
        Arc::new(tickets.iter().flat_map(|t| [t.clone(), t.clone()]).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..options.scanners).map(|_| {
        let (client, scans, next, staff, showtime, at) =
            (client.clone(), scans.clone(), next.clone(), staff.clone(), showtime.clone(), scanned_at.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut latency = Samples::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((ticket_id, code)) = scans.get(i) else { break };
                let input = json!({ "input": {
                    "code": code, "showtimeId": showtime, "nonce": uuid::Uuid::new_v4().to_string(), "scannedAt": at,
                } });
                let asked = Instant::now();
                let answer = client.send(Some(&staff), CHECK_IN, input).await;
                latency.push(asked.elapsed().as_secs_f64() * 1000.0);
                let outcome = match &answer {
                    Answer::Data(data) => data["checkIn"]["outcome"].as_str().unwrap_or("NONE").to_owned(),
                    other => other.label(),
                };
                seen.push((ticket_id.clone(), outcome));
            }
            (seen, latency)
        })
    });
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut admitted: HashMap<String, usize> = HashMap::new();
    let mut latency = Samples::default();
    for worker in futures::future::join_all(workers).await {
        let (seen, samples) = worker.context("a scanner panicked")?;
        latency.extend(samples);
        for (ticket, outcome) in seen {
            if outcome == "ADMITTED" {
                *admitted.entry(ticket).or_default() += 1;
            }
            *outcomes.entry(outcome).or_default() += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let scans_per_second = scans.len() as f64 / elapsed;

    let db = marquee_mongo::connect(&mesh.settings.mongo, "ticket").await?;
    let checked_in = db
        .collection::<mongodb::bson::Document>("tickets")
        .count_documents(doc! { "status": "CHECKED_IN" })
        .await?;
    let double_admissions = admitted.values().filter(|n| **n > 1).count();
    let checks = json!({
        "every_ticket_admitted_once": admitted.len() == tickets.len() && double_admissions == 0,
        "every_other_scan_already_checked_in": outcomes.get("ALREADY_CHECKED_IN") == Some(&tickets.len()),
        "every_ticket_checked_in_in_the_store": checked_in == tickets.len() as u64,
        "at_least_2000_scans_per_second": scans_per_second >= 2000.0,
    });
    let passed = checks.as_object().is_some_and(|c| c.values().all(|v| v == &Value::Bool(true)));
    let report = json!({
        "verdict": if passed { "pass" } else { "fail" },
        "tickets": tickets.len(),
        "scanners": options.scanners,
        "scans": scans.len(),
        "seconds": round1(elapsed),
        "scans_per_second": round1(scans_per_second),
        "outcomes": outcomes,
        "double_admissions": double_admissions,
        "latency_ms": latency.summary(),
        "issue_seconds": round1(issue_seconds),
        "machine": format!("{} cores, the mesh in-process, release build", std::thread::available_parallelism().map_or(0, usize::from)),
        "checks": checks,
    });
    crate::report::write_json(&options.out, &report)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    mesh.stop().await;
    Ok(())
}
