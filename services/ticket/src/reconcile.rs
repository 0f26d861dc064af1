//! The tickets of confirmations nobody issued, found in booking's log of published
//! events (`marquee.events.v1.EventLog`, the log the notification worker reconciles
//! against too).
//!
//! The notification worker issues a confirmation's tickets as it handles the event
//! (`IssueTicketsBatch`: it needs their codes for the email), milliseconds after
//! payment. This is the safety net behind it, for a worker that is down or that gave up
//! on this service after its retry budget: every `every`, the log is read from where
//! the last round stopped up to `grace` ago, and each confirmation without tickets and
//! each cancellation not recorded goes to the same `Issuer` a delivery goes through
//! (idempotent, cancellation-checked). Normally a page of 200 events costs one
//! `ListPublished` and two lookups here, and nothing is issued. Cancellations also
//! come at once through the ticket queue; the log catches one the broker lost.
//!
//! Where reading stopped is stored (`reconciliation`), so neither a restart nor an
//! outage skips an event the log still keeps (a week); the first start looks back
//! `lookback`. Every replica reconciles (issuing is idempotent); the latest position
//! is kept. A transient failure (booking, cinema or MongoDB down) ends the round where
//! it stands; the next round starts there.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use marquee_kit::metrics::{Counter, Registry};
use marquee_kit::shutdown::Shutdown;
use marquee_kit::time::{from_proto, to_proto};
use marquee_messaging::outbox::Position;
use marquee_proto::events::v1::event_log_client::EventLogClient;
use marquee_proto::events::v1::{Event, ListPublishedRequest, PublishedEvent};
use prost::Message;
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;

use crate::issue::{Handled, IssueError, Issuer};
use crate::store::TicketStore;

/// The log read, as its position is stored.
const LOG: &str = "booking";
/// Events read per `ListPublished` call.
const PAGE: u32 = 200;
const CONFIRMED: &str = "booking.confirmed";
const CANCELLED: &str = "booking.cancelled";

pub struct ReconcileSettings {
    /// Between rounds.
    pub every: Duration,
    /// Events younger than this are left to the notification worker and the queue.
    pub grace: Duration,
    /// At the first start, how far back to read.
    pub lookback: Duration,
}

pub struct Reconciler {
    issuer: Arc<Issuer>,
    store: TicketStore,
    booking: EventLogClient<Channel>,
    settings: ReconcileSettings,
    /// Events handled here that no other path had handled.
    reconciled: Counter,
    /// Rounds that stopped early.
    failures: Counter,
}

impl Reconciler {
    pub fn new(
        issuer: Arc<Issuer>,
        store: TicketStore,
        booking: EventLogClient<Channel>,
        settings: ReconcileSettings,
        registry: &Registry,
    ) -> Self {
        Self {
            issuer,
            store,
            booking,
            settings,
            reconciled: registry.counter(
                "ticket_reconciled_total",
                "Booking events found in booking's log that no other path had handled",
                &[],
            ),
            failures: registry.counter(
                "ticket_reconcile_failures_total",
                "Reconciliation rounds that stopped early (booking, cinema or MongoDB down)",
                &[],
            ),
        }
    }

    /// Reconciles every `every` until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        let mut ticker = tokio::time::interval(self.settings.every);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut position = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            // A round cut short by shutdown leaves its page to be read again.
            let round = tokio::select! {
                () = shutdown.cancelled() => return,
                round = self.round(&mut position) => round,
            };
            if let Err(error) = round {
                self.failures.increment(1);
                tracing::warn!(
                    error = format!("{error:#}"),
                    "ticket reconciliation stopped early; it resumes there next round"
                );
            }
        }
    }

    /// Reads the log from `position` (the stored one, at first) up to `grace` ago.
    async fn round(&self, position: &mut Option<Position>) -> anyhow::Result<()> {
        let position = match position {
            Some(position) => position,
            None => position.insert(self.start().await?),
        };
        let grace = chrono::Duration::from_std(self.settings.grace).context("grace out of range")?;
        let before = Utc::now() - grace;
        loop {
            let request = marquee_kit::trace::outgoing(ListPublishedRequest {
                after_sent_at: Some(to_proto(position.sent_at)),
                after_event_id: position.event_id.clone(),
                sent_before: Some(to_proto(before)),
                limit: PAGE,
            });
            let events = self
                .booking
                .clone()
                .list_published(request)
                .await
                .context("cannot read booking's published events")?
                .into_inner()
                .events;
            let from = position.clone();
            let read = self.page(&events, position).await;
            if *position != from {
                self.store.save_reconciled_to(LOG, position).await?;
            }
            read?;
            if events.len() < PAGE as usize {
                return Ok(());
            }
        }
    }

    /// Where the first round starts: where the last one stopped, or `lookback` ago.
    async fn start(&self) -> anyhow::Result<Position> {
        let stored = self.store.reconciled_to(LOG).await?;
        Ok(stored.unwrap_or_else(|| {
            let lookback =
                chrono::Duration::from_std(self.settings.lookback).unwrap_or(chrono::Duration::zero());
            Position { sent_at: Utc::now() - lookback, event_id: String::new() }
        }))
    }

    /// Handles the page's unsettled events together (a confirmation and its
    /// cancellation may be handled in either order), then advances `position` past
    /// every event up to the first that failed transiently.
    async fn page(&self, events: &[PublishedEvent], position: &mut Position) -> anyhow::Result<()> {
        let unsettled = self.unsettled(events).await?;
        let outcomes = futures::future::join_all(events.iter().map(|event| async {
            if unsettled.contains(&event.event_id) {
                Some(self.issuer.handle(&event.data).await)
            } else {
                None
            }
        }))
        .await;
        for (event, outcome) in events.iter().zip(outcomes) {
            match outcome {
                None | Some(Ok(Handled::Ignored | Handled::Issued(0))) => {}
                Some(Ok(handled)) => {
                    self.reconciled.increment(1);
                    tracing::warn!(
                        event.id = %event.event_id,
                        event.r#type = %event.r#type,
                        ?handled,
                        "handled a booking event found only in booking's log"
                    );
                }
                Some(Err(error @ (IssueError::Permanent(_) | IssueError::UnknownShowtime(_)))) => {
                    tracing::error!(
                        event.id = %event.event_id,
                        error = format!("{:#}", anyhow::Error::new(error)),
                        "a logged booking event can never be handled; reconciliation passes it"
                    );
                }
                Some(Err(IssueError::Transient(error))) => {
                    return Err(error.context(format!("event {}", event.event_id)));
                }
            }
            let sent_at =
                event.sent_at.as_ref().and_then(from_proto).with_context(|| {
                    format!("booking logged event {} without a valid time", event.event_id)
                })?;
            *position = Position { sent_at, event_id: event.event_id.clone() };
        }
        Ok(())
    }

    /// The ids of the events whose work is not done: confirmations whose booking has
    /// no ticket, cancellations not recorded. Undecodable ones count as unsettled, so
    /// that the issuer reports them.
    async fn unsettled(&self, events: &[PublishedEvent]) -> anyhow::Result<HashSet<String>> {
        let decoded: Vec<(&PublishedEvent, Option<String>)> = events
            .iter()
            .filter(|event| event.r#type == CONFIRMED || event.r#type == CANCELLED)
            .map(|event| (event, Event::decode(event.data.as_slice()).ok().map(|e| e.booking_id)))
            .collect();
        let of_kind = |kind: &str| -> Vec<String> {
            decoded
                .iter()
                .filter(|(event, _)| event.r#type == kind)
                .filter_map(|(_, booking)| booking.clone())
                .collect()
        };
        let (confirmed, cancelled) = (of_kind(CONFIRMED), of_kind(CANCELLED));
        let issued =
            if confirmed.is_empty() { HashSet::new() } else { self.store.with_tickets(&confirmed).await? };
        let recorded = if cancelled.is_empty() {
            HashSet::new()
        } else {
            self.store.cancelled_of(&cancelled).await.context("cannot look up cancellations")?
        };
        Ok(decoded
            .into_iter()
            .filter(|(event, booking)| match booking {
                None => true,
                Some(booking) if event.r#type == CONFIRMED => !issued.contains(booking),
                Some(booking) => !recorded.contains(booking),
            })
            .map(|(event, _)| event.event_id.clone())
            .collect())
    }
}
