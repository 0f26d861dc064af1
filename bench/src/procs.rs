//! A supervisor of the mesh's real processes (the chaos suite's): each service binary
//! runs with its own environment and appends to its own log file; it counts as up once
//! it answers (gRPC health, or an HTTP GET); it can be SIGKILLed and started again,
//! and is stopped with SIGTERM at the end. A process that exits without being killed
//! is noticed by `reap`, counted, and started again.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::lean_grpc::LeanChannel;
use crate::stats::round1;

/// How a process shows it is ready.
#[derive(Debug, Clone)]
pub enum Probe {
    /// `grpc.health.v1.Health/Check` answers OK.
    Grpc(SocketAddr),
    /// A GET of this URL answers 2xx.
    Http(String),
    /// A TCP connection is accepted (a store, not one of the mesh's services).
    Tcp(SocketAddr),
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub name: &'static str,
    pub binary: PathBuf,
    pub args: Vec<String>,
    /// Set on top of the inherited environment.
    pub env: Vec<(String, String)>,
    pub probe: Probe,
}

/// Something that happened to a process, for the report's timeline.
#[derive(Debug, Clone)]
pub struct Incident {
    /// Seconds since the run started.
    pub at_s: f64,
    pub process: &'static str,
    pub what: String,
}

#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub starts: u32,
    pub kills: u32,
    /// Starts that did not get ready in time (or exited at once), retried.
    pub failed_starts: u32,
    /// Exits nobody asked for.
    pub unexpected_exits: u32,
    /// From each kill until the process answered again.
    pub kill_to_ready_ms: Vec<u64>,
    /// Exit status of the final SIGTERM, when it exited in time.
    pub final_exit: Option<String>,
}

struct Process {
    spec: Spec,
    log: PathBuf,
    child: Option<Child>,
    counts: Counts,
}

pub struct Supervisor {
    processes: Vec<Process>,
    epoch: Instant,
    ready_timeout: Duration,
    http: reqwest::Client,
    pub incidents: Vec<Incident>,
}

/// Starts that may fail in a row before the supervisor gives up on a process.
const START_ATTEMPTS: u32 = 3;
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long a SIGTERMed process may drain before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

impl Supervisor {
    /// Nothing is started yet; each process logs to `<log_dir>/<name>.log`.
    pub fn new(
        specs: Vec<Spec>,
        log_dir: &Path,
        epoch: Instant,
        ready_timeout: Duration,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(log_dir).with_context(|| format!("cannot create {}", log_dir.display()))?;
        let processes = specs
            .into_iter()
            .map(|spec| Process {
                log: log_dir.join(format!("{}.log", spec.name)),
                spec,
                child: None,
                counts: Counts::default(),
            })
            .collect();
        let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        Ok(Self { processes, epoch, ready_timeout, http, incidents: Vec::new() })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.processes.iter().map(|p| p.spec.name).collect()
    }

    /// The process id of `name`'s running instance, if it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.processes.iter().find(|p| p.spec.name == name)?.child.as_ref()?.id()
    }

    pub fn log_files(&self) -> Vec<(&'static str, PathBuf)> {
        self.processes.iter().map(|p| (p.spec.name, p.log.clone())).collect()
    }

    fn at_s(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Adds to the timeline (and says it on stderr as it happens).
    pub fn note(&mut self, process: &'static str, what: String) {
        let at_s = round1(self.at_s());
        eprintln!("[chaos +{at_s:>5.1}s] {process}: {what}");
        self.incidents.push(Incident { at_s, process, what });
    }

    fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.processes.iter().position(|p| p.spec.name == name).with_context(|| format!("no process {name}"))
    }

    /// Starts every process in order, each once the one before answers.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        for name in self.names() {
            self.start(name).await?;
        }
        Ok(())
    }

    /// Starts `name` and waits until it answers; a start that fails is retried a few
    /// times (the failure is counted and logged).
    pub async fn start(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name)?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match self.start_once(i).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    let process = self.processes[i].spec.name;
                    self.processes[i].counts.failed_starts += 1;
                    self.note(process, format!("start failed: {error:#}"));
                    if let Some(mut child) = self.processes[i].child.take() {
                        let _ = child.kill().await;
                    }
                    last_error = Some(error);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{name} did not start")))
    }

    async fn start_once(&mut self, i: usize) -> anyhow::Result<()> {
        let at_s = self.at_s();
        let process = &mut self.processes[i];
        process.counts.starts += 1;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&process.log)
            .with_context(|| format!("cannot open {}", process.log.display()))?;
        writeln!(log, "=== marquee-bench chaos: start #{} at +{at_s:.1}s ===", process.counts.starts)?;
        let stderr = log.try_clone()?;
        let child = Command::new(&process.spec.binary)
            .args(&process.spec.args)
            .envs(process.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", process.spec.binary.display()))?;
        process.child = Some(child);
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            if self.answers(i).await {
                return Ok(());
            }
            let process = &mut self.processes[i];
            if let Some(child) = process.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!("exited at once ({status}); see {}", process.log.display());
            }
            anyhow::ensure!(Instant::now() < deadline, "not ready after {:?}", self.ready_timeout);
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    async fn answers(&self, i: usize) -> bool {
        match &self.processes[i].spec.probe {
            Probe::Grpc(addr) => {
                let check = async {
                    let channel = LeanChannel::connect(*addr).await?;
                    // HealthCheckRequest with no service name: the server as a whole.
                    channel.unary("/grpc.health.v1.Health/Check", &()).await
                };
                matches!(tokio::time::timeout(Duration::from_secs(2), check).await, Ok(Ok(Ok(()))))
            }
            Probe::Http(url) => {
                self.http.get(url).send().await.is_ok_and(|response| response.status().is_success())
            }
            Probe::Tcp(addr) => tokio::net::TcpStream::connect(addr).await.is_ok(),
        }
    }

    /// SIGKILLs `name` (no drain, no goodbye), waits `down`, starts it again and waits
    /// until it answers.
    pub async fn kill_and_restart(&mut self, name: &str, down: Duration) -> anyhow::Result<()> {
        let killed_at = self.kill(name, down).await?;
        tokio::time::sleep(down).await;
        self.restart_killed(name, killed_at).await
    }

    /// SIGKILLs `name` and leaves it down (`reap` does not start it again) until
    /// `restart_killed`; `down` is for the timeline. Returns when it was killed.
    pub async fn kill(&mut self, name: &str, down: Duration) -> anyhow::Result<Instant> {
        let i = self.index(name)?;
        let killed_at = Instant::now();
        let process = self.processes[i].spec.name;
        if let Some(mut child) = self.processes[i].child.take() {
            // tokio's kill is SIGKILL; it also reaps the process.
            child.kill().await.with_context(|| format!("cannot kill {process}"))?;
        }
        self.processes[i].counts.kills += 1;
        self.note(process, format!("SIGKILL; restarting in {} ms", down.as_millis()));
        Ok(killed_at)
    }

    /// Starts `name` again after `kill` and waits until it answers.
    pub async fn restart_killed(&mut self, name: &str, killed_at: Instant) -> anyhow::Result<()> {
        let i = self.index(name)?;
        let process = self.processes[i].spec.name;
        self.start(name).await?;
        let ms = u64::try_from(killed_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.processes[i].counts.kill_to_ready_ms.push(ms);
        self.note(process, format!("answering again {ms} ms after the kill"));
        Ok(())
    }

    /// Notices processes that exited on their own, and starts them again.
    pub async fn reap(&mut self) {
        for i in 0..self.processes.len() {
            let exited = match self.processes[i].child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => status.to_string(),
                Some(Err(error)) => format!("cannot be waited for: {error}"),
                _ => continue,
            };
            let process = self.processes[i].spec.name;
            self.processes[i].child = None;
            self.processes[i].counts.unexpected_exits += 1;
            self.note(process, format!("exited on its own ({exited}); restarting"));
            if let Err(error) = self.start(process).await {
                self.note(process, format!("could not be restarted: {error:#}"));
            }
        }
    }

    /// Names of the processes that are not running now.
    pub fn down(&mut self) -> Vec<&'static str> {
        let mut down = Vec::new();
        for process in &mut self.processes {
            let running = process.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)));
            if !running {
                down.push(process.spec.name);
            }
        }
        down
    }

    /// SIGTERMs every process (in reverse start order) and waits for each to drain;
    /// one that does not exit in time is killed.
    pub async fn stop_all(&mut self) {
        for i in (0..self.processes.len()).rev() {
            let Some(mut child) = self.processes[i].child.take() else { continue };
            let termed = match child.id() {
                Some(pid) => Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await
                    .is_ok_and(|s| s.success()),
                None => false,
            };
            let exit = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(Ok(status)) if termed => status.to_string(),
                _ => {
                    let _ = child.kill().await;
                    format!("killed: no exit within {STOP_GRACE:?} of SIGTERM")
                }
            };
            self.processes[i].counts.final_exit = Some(exit);
        }
    }

    pub fn counts(&self) -> BTreeMap<&'static str, Counts> {
        self.processes.iter().map(|p| (p.spec.name, p.counts.clone())).collect()
    }

    pub fn incidents_json(&self) -> Value {
        Value::Array(
            self.incidents
                .iter()
                .map(|i| json!({ "at_s": i.at_s, "process": i.process, "what": i.what }))
                .collect(),
        )
    }
}
