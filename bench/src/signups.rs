//! `marquee-bench signups`: a burst of registrations at once through GraphQL against a
//! running mesh (`scripts/up`, default configuration), the load that once livelocked
//! the user service. Every answer must be an account or a fast SERVICE_BUSY, none may
//! hang, a refusal must leave no account behind, and the machine must go back to idle
//! within seconds. Writes `bench/results/signups.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use mongodb::bson::doc;
use serde_json::{Value, json};

use crate::gql::{Answer, Client};
use crate::stats::{Samples, round2};

const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { token } }";
/// A request still unanswered after this long counts as hung.
const HUNG_AFTER: Duration = Duration::from_secs(30);
/// How long a refusal may take: "refused fast".
const BUSY_WITHIN: Duration = Duration::from_secs(1);
/// Machine CPU busy above the pre-burst reading by less than this is idle again.
const IDLE_MARGIN: f64 = 0.10;

pub struct Options {
    pub url: String,
    pub count: usize,
    pub out: PathBuf,
}

impl Options {
    pub const USAGE: &str =
        "marquee-bench signups [--url http://127.0.0.1:8080/graphql] [--count 256] [--out FILE]";

    pub fn parse(root: &Path, mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut options = Self {
            url: "http://127.0.0.1:8080/graphql".to_owned(),
            count: 256,
            out: root.join("bench/results/signups.json"),
        };
        while let Some(flag) = args.next() {
            let value = args.next().with_context(|| format!("{flag} needs a value\n{}", Self::USAGE))?;
            match flag.as_str() {
                "--url" => options.url = value,
                "--count" => options.count = value.parse().context("--count wants a number")?,
                "--out" => options.out = PathBuf::from(value),
                _ => anyhow::bail!("unknown option {flag}\n{}", Self::USAGE),
            }
        }
        Ok(options)
    }
}

/// (busy, total) jiffies of the whole machine.
fn cpu_jiffies() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = stat.lines().next().context("/proc/stat is empty")?;
    let fields: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// The fraction of the machine's CPU busy over the next `window`.
async fn busy_over(window: Duration) -> anyhow::Result<f64> {
    let (busy_before, total_before) = cpu_jiffies()?;
    tokio::time::sleep(window).await;
    let (busy_after, total_after) = cpu_jiffies()?;
    let total = total_after.saturating_sub(total_before).max(1);
    Ok(busy_after.saturating_sub(busy_before) as f64 / total as f64)
}

pub async fn run(root: &Path, options: Options) -> anyhow::Result<()> {
    let client = Client::new(options.url.clone(), HUNG_AFTER)?;
    let idle_before = busy_over(Duration::from_secs(2)).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let email = |i: usize| format!("signup-{run}-{i}@example.com");
    println!("{} registrations at once against {}", options.count, options.url);

    let started = Instant::now();
    let attempts = (0..options.count).map(|i| {
        let (client, email) = (client.clone(), email(i));
        async move {
            let input =
                json!({ "input": { "email": email, "password": "correct horse battery", "name": "Fan" } });
            let asked = Instant::now();
            let answer = client.send(None, REGISTER, input).await;
            (email, answer, asked.elapsed())
        }
    });
    let answers = futures::future::join_all(attempts).await;
    let burst = started.elapsed();

    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let (mut ok_ms, mut busy_ms, mut other_ms) = (Samples::default(), Samples::default(), Samples::default());
    let (mut created, mut refused) = (Vec::new(), Vec::new());
    let mut slowest_busy = Duration::ZERO;
    for (email, answer, took) in &answers {
        *tally.entry(answer.label()).or_default() += 1;
        let ms = took.as_secs_f64() * 1000.0;
        match answer {
            Answer::Data(_) => {
                ok_ms.push(ms);
                created.push(email.clone());
            }
            Answer::Errors { code, .. } if code == "SERVICE_BUSY" => {
                busy_ms.push(ms);
                slowest_busy = slowest_busy.max(*took);
                refused.push(email.clone());
            }
            _ => other_ms.push(ms),
        }
    }

    // Back to idle: one-second readings until the machine is as quiet as before.
    let mut seconds_to_idle = None;
    let mut readings = Vec::new();
    for second in 1..=60 {
        let busy = busy_over(Duration::from_secs(1)).await?;
        readings.push(round2(busy));
        if busy <= idle_before + IDLE_MARGIN {
            seconds_to_idle = Some(second);
            break;
        }
    }

    // A refusal changed nothing; every account answered OK exists.
    let settings =
        <marquee_e2e::MeshSettings as marquee_kit::Config>::load_from(&root.join("config"), "local")?;
    let db = marquee_mongo::connect(&settings.mongo, "user").await?;
    let users = db.collection::<mongodb::bson::Document>("users");
    let existing = |emails: Vec<String>| {
        let users = users.clone();
        async move { users.count_documents(doc! { "email": { "$in": emails } }).await }
    };
    let created_found = existing(created.clone()).await?;
    let refused_found = existing(refused.clone()).await?;

    let checks = json!({
        "every_answer_an_account_or_service_busy": other_ms.is_empty(),
        "refusals_within_1s": slowest_busy <= BUSY_WITHIN,
        "none_hung": !tally.keys().any(|label| label.starts_with("TRANSPORT")),
        "every_account_answered_ok_exists": created_found == created.len() as u64,
        "no_account_for_a_refusal": refused_found == 0,
        "idle_again_within_10s": seconds_to_idle.is_some_and(|s| s <= 10),
    });
    let passed = checks.as_object().is_some_and(|c| c.values().all(|v| v == &Value::Bool(true)));
    let report = json!({
        "verdict": if passed { "pass" } else { "fail" },
        "registrations": options.count,
        "answers": tally,
        "burst_seconds": round2(burst.as_secs_f64()),
        "latency_ms": { "ok": ok_ms.summary(), "service_busy": busy_ms.summary(), "other": other_ms.summary() },
        "machine_cpu_busy": { "before": round2(idle_before), "after_burst_per_second": readings },
        "seconds_to_idle": seconds_to_idle,
        "checks": checks,
    });
    crate::report::write_json(&options.out, &report)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    anyhow::ensure!(passed, "signups: a check failed (see {})", options.out.display());
    Ok(())
}
