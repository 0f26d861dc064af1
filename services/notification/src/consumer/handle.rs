//! Handling one event: decoded, claimed in Redis so that it is sent once however
//! often it is delivered, then one message per channel the user chose, rendered with
//! the showtime's details (and a confirmation with its tickets) and delivered through
//! the `Channel`.

use std::time::Duration;

use marquee_kit::backoff::Backoff;
use marquee_kit::shutdown::Shutdown;
use marquee_proto::events::v1::Event;
use prost::Message;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use super::settle::{DeadLetterReason, Outcome};
use super::{Handler, SHUTDOWN_PATIENCE};
use crate::claims::Claim;
use crate::directory::LookupError;
use crate::domain::{Kind, Notice};
use crate::render::{self, Medium, Showing, Tickets};
use crate::store::{NotificationDoc, bson_time};

/// How often a delivery waiting on another delivery's claim looks again.
const CLAIM_POLL: Duration = Duration::from_millis(100);
/// Longest pause between Redis attempts while Redis is down.
const MAX_REDIS_BACKOFF: Duration = Duration::from_secs(2);

/// Pauses between Redis attempts while Redis is down: retry `n` (from 1) waits about
/// `CLAIM_POLL · 2^n`, so 200 ms doubling to `MAX_REDIS_BACKOFF`, jittered.
fn redis_backoff() -> Backoff {
    Backoff::new(CLAIM_POLL, MAX_REDIS_BACKOFF)
}

/// Why sending failed, and so what becomes of the event.
enum SendError {
    Transient(anyhow::Error),
    Permanent(anyhow::Error),
}

impl From<LookupError> for SendError {
    fn from(error: LookupError) -> Self {
        if error.is_transient() { Self::Transient(error.into()) } else { Self::Permanent(error.into()) }
    }
}

/// Either the wait ended with a value, or the process is shutting down.
enum Waited<T> {
    Ready(T),
    ShuttingDown,
}

impl Handler {
    pub(super) async fn handle(&self, data: &[u8], last_chance: bool, shutdown: &Shutdown) -> Outcome {
        let event = match Event::decode(data) {
            Ok(event) => event,
            Err(error) => {
                return Outcome::Permanent(
                    DeadLetterReason::Unparseable,
                    anyhow::Error::new(error).context("undecodable event"),
                );
            }
        };
        let event_type = event.r#type.clone();
        // On the delivery's span (`settle`), so a trace's events can be told apart.
        let consumed = tracing::Span::current();
        consumed.record("event.type", tracing::field::display(&event_type));
        consumed.record("booking.id", tracing::field::display(&event.booking_id));
        let event = match Notice::from_event(event) {
            Ok(Some(event)) => event,
            Ok(None) => {
                tracing::debug!(event.r#type = %event_type, "event notifies nobody; skipped");
                return Outcome::Skipped;
            }
            Err(error) => {
                return Outcome::Permanent(
                    DeadLetterReason::Unparseable,
                    anyhow::Error::new(error).context(format!("invalid {event_type} event")),
                );
            }
        };
        let span = tracing::info_span!("notify", event.id = %event.event_id, booking.id = %event.booking_id);
        self.handle_claimed(&event, last_chance, shutdown).instrument(span).await
    }

    /// Takes the event's claim, waiting while another delivery holds it (it finishes,
    /// or its claim lapses after a crash) and while Redis is unreachable: the
    /// delivery stays unacknowledged meanwhile, so it is neither lost nor requeued
    /// towards its delivery limit. On shutdown it waits a moment more, long enough
    /// for a sibling delivery of the same event to finish, then hands it back.
    async fn claim(&self, event_id: Uuid, shutdown: &Shutdown) -> Waited<Claim> {
        let backoff = redis_backoff();
        // Redis failures in a row.
        let mut failures: u32 = 0;
        let mut redis_down = false;
        let mut give_up_at = None;
        loop {
            let pause = match self.claims.claim(event_id).await {
                Ok(Claim::HeldElsewhere) => {
                    failures = 0;
                    CLAIM_POLL
                }
                Ok(claim) => {
                    if redis_down {
                        tracing::info!("Redis is back; resuming");
                    }
                    return Waited::Ready(claim);
                }
                Err(error) => {
                    if !redis_down {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "Redis unavailable; holding the delivery"
                        );
                    }
                    redis_down = true;
                    failures = failures.saturating_add(1);
                    backoff.delay(failures)
                }
            };
            match give_up_at {
                Some(deadline) if Instant::now() >= deadline => return Waited::ShuttingDown,
                Some(_) => tokio::time::sleep(CLAIM_POLL).await,
                None => tokio::select! {
                    () = shutdown.cancelled() => give_up_at = Some(Instant::now() + SHUTDOWN_PATIENCE),
                    () = tokio::time::sleep(pause) => {}
                },
            }
        }
    }

    /// Writes the "done" marker, waiting for Redis if needed: acking before it is
    /// written would let a duplicate delivery send again.
    async fn finish(&self, event_id: Uuid, shutdown: &Shutdown) -> Waited<()> {
        let backoff = redis_backoff();
        let mut failures: u32 = 0;
        loop {
            match self.claims.finish(event_id).await {
                Ok(()) => return Waited::Ready(()),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "cannot mark the event done; retrying")
                }
            }
            failures = failures.saturating_add(1);
            tokio::select! {
                () = shutdown.cancelled() => return Waited::ShuttingDown,
                () = tokio::time::sleep(backoff.delay(failures)) => {}
            }
        }
    }

    async fn handle_claimed(&self, event: &Notice, last_chance: bool, shutdown: &Shutdown) -> Outcome {
        let token = match self.claim(event.event_id, shutdown).await {
            Waited::Ready(Claim::Acquired(token)) => token,
            Waited::Ready(Claim::Done) => {
                tracing::info!(event.id = %event.event_id, "duplicate event skipped");
                return Outcome::Duplicate;
            }
            // `claim` waits these out.
            Waited::Ready(Claim::HeldElsewhere) | Waited::ShuttingDown => return Outcome::Abandon,
        };
        let sent = self.send(event, last_chance).await;
        if sent.is_err()
            && let Err(error) = self.claims.release(event.event_id, &token).await
        {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot release claim; a retry waits for it to lapse"
            );
        }
        match sent {
            Ok(()) => match self.finish(event.event_id, shutdown).await {
                Waited::Ready(()) => {
                    tracing::info!(event.id = %event.event_id, booking.id = %event.booking_id, "notification sent");
                    Outcome::Handled
                }
                // The record exists; its unique index turns the redelivery into a no-op.
                Waited::ShuttingDown => Outcome::Abandon,
            },
            Err(SendError::Transient(error)) => Outcome::Transient(error),
            Err(SendError::Permanent(error)) => Outcome::Permanent(DeadLetterReason::Permanent, error),
        }
    }

    /// Sends one message per channel the user chose (none if they chose none).
    /// The showtime's details and a confirmation's ticket codes are waited for while
    /// the retry budget lasts (cinema or the ticket service may be down), but only as a
    /// courtesy: on the last chance, or when the showtime is gone, the message goes out
    /// with what the event carries, pointing to the booking for the rest.
    async fn send(&self, notice: &Notice, last_chance: bool) -> Result<(), SendError> {
        let contact = self.directory.contact(notice.user_id).await?;
        if contact.addresses.is_empty() {
            tracing::info!(user.id = %notice.user_id, "the user wants no notifications");
            return Ok(());
        }
        let showing = match notice.kind.showtime_id() {
            Some(showtime_id) => match self.directory.showing(showtime_id).await {
                Ok(showing) => Some(showing),
                Err(error) if error.is_transient() && !last_chance => return Err(error.into()),
                Err(error) => {
                    tracing::warn!(error = format!("{error:#}"), "sending without the showtime's details");
                    self.metrics.without_showtime.increment(1);
                    Some(Showing::unknown())
                }
            },
            None => None,
        };
        let tickets = match &notice.kind {
            Kind::BookingConfirmed { showtime_id, seat_ids, .. } => {
                match self.directory.tickets(notice.booking_id, *showtime_id, seat_ids).await {
                    Ok(codes) => Some(Tickets::Issued(codes)),
                    Err(error) if error.is_transient() && !last_chance => return Err(error.into()),
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "sending without the ticket codes");
                        self.metrics.without_tickets.increment(1);
                        Some(Tickets::Pending)
                    }
                }
            }
            _ => None,
        };
        for (medium, recipient) in &contact.addresses {
            let message = render::render(notice, &contact.name, showing.as_ref(), tickets.as_ref(), *medium)
                .map_err(SendError::Permanent)?;
            let record = NotificationDoc {
                id: Uuid::now_v7().to_string(),
                user_id: notice.user_id.to_string(),
                booking_id: notice.booking_id.to_string(),
                channel: medium.as_str().to_owned(),
                recipient: recipient.clone(),
                subject: message.subject,
                body: message.body,
                // The SMTP channel draws their QR codes into the email's HTML version.
                tickets: match (*medium, &tickets) {
                    (Medium::Email, Some(tickets)) => tickets.codes().to_vec(),
                    _ => Vec::new(),
                },
                event_id: notice.event_id.to_string(),
                event_type: notice.event_type.clone(),
                sent_at: bson_time(chrono::Utc::now()),
            };
            // MongoDB or the SMTP relay being down passes.
            self.channel.deliver(&record).await.map_err(SendError::Transient)?;
            self.metrics.sent.increment(1);
        }
        Ok(())
    }
}
