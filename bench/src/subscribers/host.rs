//! A subscriber host (`marquee-bench subscriber-host SHARE`, started by `fleet.rs`): a
//! child process holding one share of a run's subscribers, so that the load generator's
//! ends of the connections are spread over as many descriptor limits as it takes.
//!
//! It talks JSON lines: `Said` on stdout (progress every `PROGRESS_EVERY`, then the
//! tally), `Command` on stdin. Its stdin closing means its parent is gone: it exits,
//! and its connections with it.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::client::Connections;
use super::{Plan, Tally};

/// Often enough for the parent's waits (probes, quiet) to read the counters as fresh as
/// it polled them when they lived in its own process.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// What a host is to hold: subscribers `range` of `plan`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Share {
    pub plan: Plan,
    pub range: Range<usize>,
    /// Handshakes in flight at once.
    pub handshakes: usize,
}

/// A host's counters so far.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub subscribed: usize,
    pub failed_to_open: usize,
    /// Subscribed and still connected.
    pub open: usize,
    /// Per showtime: subscribers that have received at least one update.
    pub heard: Vec<usize>,
    /// Updates received by all its subscribers together.
    pub delivered: usize,
}

/// A line on the host's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Said {
    Progress(Progress),
    /// The last line: what its subscribers saw, once stopped.
    Done(Tally),
}

/// A line on the host's stdin.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Close every connection and send the tally, each subscriber held to the seats
    /// sold on its showtime (by showtime index).
    Stop { must_book: HashMap<usize, HashSet<String>> },
}

/// The host's life: open its share, report, and tally once told to stop.
pub async fn run(share: &str) -> anyhow::Result<()> {
    let share: Share = serde_json::from_str(share).context("a subscriber host needs its share as JSON")?;
    let connections = Connections::open(&share.plan, share.range, share.handshakes)?;
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let must_book = loop {
        tokio::select! {
            _ = tick.tick() => say(&mut stdout, &Said::Progress(connections.progress())).await?,
            line = commands.next_line() => {
                let line = line.context("cannot read the parent's commands")?;
                let line = line.context("the parent closed its end: stopping")?;
                match serde_json::from_str(&line).with_context(|| format!("not a command: {line}"))? {
                    Command::Stop { must_book } => break must_book,
                }
            }
        }
    };
    let logs = connections.stop().await;
    say(&mut stdout, &Said::Done(Tally::of(&logs, &must_book))).await
}

async fn say(stdout: &mut tokio::io::Stdout, said: &Said) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(said)?;
    line.push(b'\n');
    stdout.write_all(&line).await.context("the parent stopped listening")?;
    stdout.flush().await.context("the parent stopped listening")
}
