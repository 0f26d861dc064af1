//! The parent's handle on its subscriber hosts (`host.rs`): one child process per share
//! of the subscribers, their reports summed into what one process holding them all
//! would have said. A host that dies fails the run at the next wait, never hangs it;
//! the hosts are killed with the handle.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::watch;
use tokio::time::Instant;

use super::host::{Command, Progress, Said, Share};
use super::{Plan, Tally};

/// Handshakes in flight at once, over all hosts: the gateways' accept queues are finite.
const CONCURRENT_HANDSHAKES: usize = 256;
/// Opening 18,000 took 8 s on two busy cores; this is for a host that is stuck.
const OPEN_DEADLINE: Duration = Duration::from_secs(600);
/// Closing every connection and tallying what they saw.
const STOP_DEADLINE: Duration = Duration::from_secs(180);
/// How long a host may take to exit once it has said everything.
const EXIT_DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(100);

/// What a host said last, and whether it is gone.
#[derive(Debug, Default, Clone)]
struct Latest {
    progress: Progress,
    tally: Option<Tally>,
    /// Why its stdout ended before it said `Done` (then the run fails).
    lost: Option<String>,
}

struct Host {
    share: Range<usize>,
    child: Child,
    pid: Option<u32>,
    stdin: Option<ChildStdin>,
    latest: watch::Receiver<Latest>,
}

/// The open subscriptions, held by the hosts. `stop` closes them and returns what the
/// subscribers saw.
pub struct Subscribers {
    hosts: Vec<Host>,
    pub per_showtime: Vec<usize>,
    pub failed_to_open: usize,
}

/// What the hosts sent back once stopped.
pub struct Stopped {
    pub tally: Tally,
    /// Per host: its share, pid and failures.
    pub hosts: Vec<Value>,
}

/// Opens `count` subscriptions spread over `showtimes` and `gateways` as `Plan` says,
/// held by as many hosts as it takes for none to hold more than `per_host`, and waits
/// until every one is subscribed or has failed.
pub async fn open(
    gateways: &[SocketAddr],
    showtimes: &[String],
    count: usize,
    focused: usize,
    per_host: usize,
) -> anyhow::Result<Subscribers> {
    let plan = Plan { gateways: gateways.to_vec(), showtimes: showtimes.to_vec(), count, focused };
    // Every index must have a place before any host starts on its share.
    if count > 0 {
        plan.slot(count - 1)?;
    }
    let per_showtime = plan.per_showtime()?;
    let shares = plan.shares(per_host);
    let handshakes = (CONCURRENT_HANDSHAKES / shares.len().max(1)).max(1);
    let binary = std::env::current_exe().context("cannot find this binary to start subscriber hosts")?;
    let mut hosts = Vec::new();
    for (index, range) in shares.into_iter().enumerate() {
        let share = Share { plan: plan.clone(), range, handshakes };
        hosts.push(Host::start(&binary, index, share)?);
    }
    eprintln!("{count} subscriptions held by {} subscriber host(s) of at most {per_host}", hosts.len());
    let mut subscribers = Subscribers { hosts, per_showtime, failed_to_open: 0 };
    let until = Instant::now() + OPEN_DEADLINE;
    let mut said = Instant::now();
    loop {
        let latest = subscribers.latest()?;
        let (subscribed, failed): (usize, usize) = latest
            .iter()
            .fold((0, 0), |(s, f), h| (s + h.progress.subscribed, f + h.progress.failed_to_open));
        if subscribed + failed >= count {
            subscribers.failed_to_open = failed;
            return Ok(subscribers);
        }
        if said.elapsed() >= Duration::from_secs(10) {
            eprintln!("{subscribed} of {count} subscribed, {failed} failed");
            said = Instant::now();
        }
        anyhow::ensure!(
            Instant::now() < until,
            "{} of {count} subscriptions neither open nor failed after {OPEN_DEADLINE:?}",
            count - subscribed - failed
        );
        tokio::time::sleep(POLL).await;
    }
}

impl Host {
    fn start(binary: &std::path::Path, index: usize, share: Share) -> anyhow::Result<Self> {
        let range = share.range.clone();
        let mut child = tokio::process::Command::new(binary)
            .arg("subscriber-host")
            .arg(serde_json::to_string(&share)?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start subscriber host {index}"))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (stdout, stderr) = stdout.zip(stderr).context("a subscriber host without its pipes")?;
        let (tell, latest) = watch::channel(Latest::default());
        // Its last words on stderr are the reason given if it dies.
        let last_words = Arc::new(Mutex::new(String::new()));
        let label = format!("subscriber host {index} ({}..{})", range.start, range.end);
        tokio::spawn(forward_stderr(stderr, label.clone(), last_words.clone()));
        tokio::spawn(read_stdout(stdout, label, tell, last_words));
        Ok(Self { share: range, pid: child.id(), stdin: child.stdin.take(), child, latest })
    }

    async fn send(&mut self, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        let stdin = self.stdin.as_mut().context("already told to stop")?;
        stdin.write_all(&line).await?;
        stdin.flush().await?;
        Ok(())
    }
}

async fn read_stdout(
    stdout: tokio::process::ChildStdout,
    label: String,
    tell: watch::Sender<Latest>,
    last_words: Arc<Mutex<String>>,
) {
    let mut lines = BufReader::new(stdout).lines();
    let lost = loop {
        match lines.next_line().await {
            Ok(Some(line)) => match serde_json::from_str::<Said>(&line) {
                Ok(Said::Progress(progress)) => tell.send_modify(|h| h.progress = progress),
                Ok(Said::Done(tally)) => {
                    tell.send_modify(|h| h.tally = Some(tally));
                    return;
                }
                Err(error) => break format!("said something unreadable ({error}): {line}"),
            },
            Ok(None) => break "exited".to_owned(),
            Err(error) => break format!("cannot be read: {error}"),
        }
    };
    // The stderr reader may still hold the last line: give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let words = last_words.lock().map(|w| w.clone()).unwrap_or_default();
    let words = if words.is_empty() { String::new() } else { format!("; its last words: {words}") };
    tell.send_modify(|h| h.lost = Some(format!("{label} {lost} before its tally{words}")));
}

async fn forward_stderr(stderr: tokio::process::ChildStderr, label: String, last_words: Arc<Mutex<String>>) {
    let mut lines = BufReader::new(stderr).lines();
    let mut cause_seen = false;
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[{label}] {line}");
        // The error or panic, not the backtrace printed after it.
        let cause = line.starts_with("Error:") || line.contains("panicked at");
        if (cause || !cause_seen)
            && let Ok(mut words) = last_words.lock()
        {
            *words = line;
        }
        cause_seen |= cause;
    }
}

impl Subscribers {
    /// What every host said last; an error as soon as one is gone.
    fn latest(&self) -> anyhow::Result<Vec<Latest>> {
        let latest: Vec<Latest> = self.hosts.iter().map(|h| h.latest.borrow().clone()).collect();
        if let Some(lost) = latest.iter().find_map(|h| h.lost.clone()) {
            anyhow::bail!("{lost}");
        }
        Ok(latest)
    }

    fn sum(&self, of: impl Fn(&Progress) -> usize) -> anyhow::Result<usize> {
        Ok(self.latest()?.iter().map(|h| of(&h.progress)).sum())
    }

    /// Subscribers of showtime `index` that have received something.
    pub fn heard(&self, index: usize) -> anyhow::Result<usize> {
        self.sum(|p| p.heard.get(index).copied().unwrap_or(0))
    }

    /// Waits until every open subscriber of showtime `index` has received something;
    /// false when `deadline` passed first.
    pub async fn wait_heard(&self, index: usize, deadline: Duration) -> anyhow::Result<bool> {
        let until = Instant::now() + deadline;
        let expected = self.per_showtime[index].saturating_sub(self.failed_to_open);
        while self.heard(index)? < expected {
            if Instant::now() >= until {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(true)
    }

    /// Connections still open, as the hosts last said.
    pub fn open_now(&self) -> anyhow::Result<usize> {
        self.sum(|p| p.open)
    }

    /// Subscriber hosts (child processes) holding the subscriptions.
    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Waits until no update has arrived for `quiet`, or `deadline` passed; returns
    /// whether it went quiet.
    pub async fn wait_quiet(&self, quiet: Duration, deadline: Duration) -> anyhow::Result<bool> {
        let until = Instant::now() + deadline;
        let mut last = self.sum(|p| p.delivered)?;
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.sum(|p| p.delivered)?;
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= quiet {
                return Ok(true);
            }
            if Instant::now() >= until {
                return Ok(false);
            }
        }
    }

    /// Closes every connection and adds up the hosts' tallies, each subscriber held to
    /// the seats `must_book` says its showtime sold.
    pub async fn stop(mut self, must_book: &HashMap<usize, HashSet<String>>) -> anyhow::Result<Stopped> {
        let command = Command::Stop { must_book: must_book.clone() };
        for (index, host) in self.hosts.iter_mut().enumerate() {
            host.send(&command)
                .await
                .with_context(|| format!("cannot tell subscriber host {index} to stop"))?;
        }
        let until = Instant::now() + STOP_DEADLINE;
        let mut sum = Tally::default();
        let mut hosts = Vec::new();
        for (index, host) in self.hosts.iter_mut().enumerate() {
            let latest = tokio::time::timeout_at(
                until,
                host.latest.wait_for(|h| h.tally.is_some() || h.lost.is_some()),
            )
            .await
            .with_context(|| format!("subscriber host {index} sent no tally within {STOP_DEADLINE:?}"))?
            .map(|h| h.clone())
            .with_context(|| format!("subscriber host {index} went silent"))?;
            let tally = match (latest.tally, latest.lost) {
                (Some(tally), _) => tally,
                (None, lost) => anyhow::bail!("{}", lost.unwrap_or_default()),
            };
            // Its end of stdin closing lets it exit (its stdin reader is a blocking read).
            host.stdin = None;
            let exit = match tokio::time::timeout(EXIT_DEADLINE, host.child.wait()).await {
                Ok(status) => status.map(|s| s.to_string()).unwrap_or_else(|e| format!("unknown: {e}")),
                Err(_) => {
                    let _ = host.child.kill().await;
                    format!("killed, still running {EXIT_DEADLINE:?} after its tally")
                }
            };
            hosts.push(json!({
                "pid": host.pid,
                "subscribers": host.share.len(),
                "first_index": host.share.start,
                "failed_to_open": tally.failed_to_open,
                "subscribers_with_failures": tally.failed(),
                "exit": exit,
            }));
            sum.add(&tally);
        }
        Ok(Stopped { tally: sum, hosts })
    }
}
