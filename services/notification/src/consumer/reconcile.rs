//! Reconciliation: finds events the broker confirmed to their publisher but never
//! delivered here (a queue lost or deleted, a broker fault) and handles them.
//!
//! Booking and payment log every event the broker confirmed (`EventLog`). Every
//! round, for each of them, the reconciler reads the log from where it stopped up to
//! `grace` ago and hands each event not yet marked done in Redis to the same
//! `Handler` a delivery goes through: its claim settles a race with a late delivery,
//! and the unique (event, channel) record absorbs a marker Redis lost. A transient
//! failure (the publisher, a dependency or a store is down) ends that log's round
//! where it stands; the next round starts there.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use marquee_kit::shutdown::Shutdown;
use marquee_kit::time::{from_proto, to_proto};
use marquee_messaging::outbox::Position;
use marquee_proto::events::v1::ListPublishedRequest;
use marquee_proto::events::v1::event_log_client::EventLogClient;
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel as GrpcChannel;
use uuid::Uuid;

use super::Handler;
use super::settle::Outcome;

/// Events read per `ListPublished` call.
const PAGE: u32 = 200;

/// One publisher's log and how far it has been read.
pub struct EventSource {
    pub name: &'static str,
    pub client: EventLogClient<GrpcChannel>,
}

pub struct ReconcileSettings {
    /// Between rounds.
    pub every: Duration,
    /// Events younger than this are left to the broker.
    pub grace: Duration,
    /// At start, how far back to look.
    pub lookback: Duration,
}

pub struct Reconciler {
    handler: Arc<Handler>,
    sources: Vec<(EventSource, Position)>,
    settings: ReconcileSettings,
}

/// How a round over one log ended.
#[derive(Debug, PartialEq, Eq)]
enum RoundEnd {
    /// Read up to `grace` ago.
    CaughtUp,
    ShuttingDown,
}

impl Reconciler {
    pub(super) fn new(handler: Arc<Handler>, sources: Vec<EventSource>, settings: ReconcileSettings) -> Self {
        let start = chrono::Utc::now()
            - chrono::Duration::from_std(settings.lookback).unwrap_or(chrono::Duration::zero());
        let sources = sources
            .into_iter()
            .map(|source| (source, Position { sent_at: start, event_id: String::new() }))
            .collect();
        Self { handler, sources, settings }
    }

    /// Reconciles every `every` until `shutdown`.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.settings.every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            for index in 0..self.sources.len() {
                match self.round(index, &shutdown).await {
                    Ok(RoundEnd::CaughtUp) => {}
                    Ok(RoundEnd::ShuttingDown) => return,
                    Err(error) => {
                        self.handler.metrics.reconcile_failures.increment(1);
                        tracing::warn!(
                            source = self.sources[index].0.name,
                            error = format!("{error:#}"),
                            "reconciliation stopped early; it resumes there next round"
                        );
                    }
                }
            }
        }
    }

    /// Reads one log from its position up to `grace` ago, handling what no delivery
    /// handled; the position advances past each event once it is settled.
    async fn round(&mut self, index: usize, shutdown: &Shutdown) -> anyhow::Result<RoundEnd> {
        let grace = chrono::Duration::from_std(self.settings.grace).context("grace out of range")?;
        let before = chrono::Utc::now() - grace;
        let (source, position) = &mut self.sources[index];
        loop {
            let request = ListPublishedRequest {
                after_sent_at: Some(to_proto(position.sent_at)),
                after_event_id: position.event_id.clone(),
                sent_before: Some(to_proto(before)),
                limit: PAGE,
            };
            let events = source
                .client
                .list_published(request)
                .await
                .with_context(|| format!("cannot read {}'s published events", source.name))?
                .into_inner()
                .events;
            let ids: Vec<Uuid> =
                events.iter().map(|event| event.event_id.parse().unwrap_or_default()).collect();
            let done = self.handler.claims.done_among(&ids).await?;
            for (event, done) in events.iter().zip(done) {
                if !done {
                    match self.handler.handle(&event.data, false, shutdown).await {
                        Outcome::Handled => {
                            self.handler.metrics.reconciled.increment(1);
                            tracing::warn!(
                                event.id = %event.event_id,
                                event.r#type = %event.r#type,
                                source = source.name,
                                "handled a published event no delivery had handled"
                            );
                        }
                        Outcome::Skipped | Outcome::Duplicate => {}
                        Outcome::Permanent(reason, error) => tracing::error!(
                            event.id = %event.event_id,
                            reason = reason.as_str(),
                            error = format!("{error:#}"),
                            "a published event can never be handled; reconciliation passes it"
                        ),
                        Outcome::Transient(error) => {
                            return Err(error.context(format!("event {}", event.event_id)));
                        }
                        Outcome::Abandon => return Ok(RoundEnd::ShuttingDown),
                    }
                }
                let sent_at = event.sent_at.as_ref().and_then(from_proto).with_context(|| {
                    format!("{} logged event {} without a valid time", source.name, event.event_id)
                })?;
                *position = Position { sent_at, event_id: event.event_id.clone() };
            }
            if events.len() < PAGE as usize {
                return Ok(RoundEnd::CaughtUp);
            }
        }
    }
}
