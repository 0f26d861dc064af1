//! Readiness that tells the truth: a service reports NOT_SERVING on
//! `grpc.health.v1` while a store it needs does not answer, and SERVING again once
//! it does, so load balancers, Kubernetes and the gateway's `/readyz` route around it.
//!
//! Two levels: the service's own name covers what its API needs to answer calls;
//! the empty name (the whole process) also covers background work, e.g. the
//! notification worker's broker and Redis, without which it consumes nothing but
//! still lists notifications.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// How often every probe runs.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A store slower than this to answer a ping is as good as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

type Check = Box<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

/// What a failing probe takes down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The API cannot answer without it.
    Api,
    /// Only background work (consuming, relaying) needs it.
    Background,
}

/// One dependency, pinged.
pub struct Probe {
    name: &'static str,
    scope: Scope,
    check: Check,
}

impl Probe {
    pub fn new<F, Fut>(name: &'static str, scope: Scope, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        Self { name, scope, check: Box::new(move || Box::pin(check())) }
    }
}

/// The probes of one service.
#[derive(Default)]
pub struct Readiness {
    probes: Vec<Probe>,
}

/// Which levels are up, from which probes failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub api: bool,
    pub process: bool,
    /// The failing probes and why.
    pub down: Vec<(&'static str, String)>,
}

impl Verdict {
    fn of(results: Vec<(&'static str, Scope, Result<(), String>)>) -> Self {
        let down: Vec<_> =
            results.iter().filter_map(|(name, _, r)| r.clone().err().map(|why| (*name, why))).collect();
        let api = results.iter().all(|(_, scope, r)| *scope != Scope::Api || r.is_ok());
        Self { api, process: down.is_empty(), down }
    }
}

fn status(up: bool) -> ServingStatus {
    if up { ServingStatus::Serving } else { ServingStatus::NotServing }
}

impl Readiness {
    pub fn with(mut self, probe: Probe) -> Self {
        self.probes.push(probe);
        self
    }

    /// Runs every probe once, concurrently.
    pub async fn check(&self) -> Verdict {
        let runs = self.probes.iter().map(|probe| async move {
            let result = match tokio::time::timeout(PROBE_TIMEOUT, (probe.check)()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(format!("{error:#}")),
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            (probe.name, probe.scope, result)
        });
        Verdict::of(join_all(runs).await)
    }

    /// Probes until `shutdown`, reporting each change of verdict.
    pub(crate) async fn watch(
        self,
        reporter: HealthReporter,
        service: &'static str,
        shutdown: CancellationToken,
    ) {
        if self.probes.is_empty() {
            return;
        }
        let mut last = Verdict { api: true, process: true, down: Vec::new() };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PROBE_EVERY) => {}
            }
            let verdict = self.check().await;
            if (verdict.api, verdict.process) != (last.api, last.process) {
                if verdict.process {
                    tracing::info!(service, "every dependency answers again; SERVING");
                } else {
                    tracing::warn!(service, down = ?verdict.down, api = verdict.api, "a dependency is down; NOT_SERVING");
                }
                // Shutdown sets NOT_SERVING itself; do not undo it.
                if shutdown.is_cancelled() {
                    return;
                }
                reporter.set_service_status(service, status(verdict.api)).await;
                reporter.set_service_status("", status(verdict.process)).await;
            }
            last = verdict;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    fn switchable(name: &'static str, scope: Scope) -> (Probe, Arc<AtomicBool>) {
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let probe = Probe::new(name, scope, move || {
            let up = flag.load(Ordering::SeqCst);
            async move { if up { Ok(()) } else { Err(anyhow::anyhow!("connection refused")) } }
        });
        (probe, up)
    }

    #[tokio::test]
    async fn a_background_dependency_takes_down_the_process_but_not_the_api() {
        let (mongo, mongo_up) = switchable("mongodb", Scope::Api);
        let (broker, broker_up) = switchable("rabbitmq", Scope::Background);
        let readiness = Readiness::default().with(mongo).with(broker);
        assert_eq!(readiness.check().await, Verdict { api: true, process: true, down: vec![] });

        broker_up.store(false, Ordering::SeqCst);
        let verdict = readiness.check().await;
        assert!(verdict.api && !verdict.process);
        assert_eq!(verdict.down, [("rabbitmq", "connection refused".to_owned())]);

        mongo_up.store(false, Ordering::SeqCst);
        let verdict = readiness.check().await;
        assert!(!verdict.api && !verdict.process);
        assert_eq!(verdict.down.len(), 2);

        mongo_up.store(true, Ordering::SeqCst);
        broker_up.store(true, Ordering::SeqCst);
        assert!(readiness.check().await.process);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_hangs_counts_as_down() {
        let hangs = Probe::new("postgres", Scope::Api, || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        let verdict = Readiness::default().with(hangs).check().await;
        assert!(!verdict.api);
        assert!(verdict.down[0].1.contains("no answer"), "{:?}", verdict.down);
    }
}
