//! What the events do: `booking.confirmed` issues one ticket per seat, signed for the
//! showtime's admission window (from cinema); `booking.cancelled` revokes them. Both
//! are idempotent, so a redelivered event changes nothing, and no record of handled
//! events is kept (it cost two MongoDB commands per booking for a guard the unique
//! (booking, seat) index already gives).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_proto::cinema::v1::GetShowtimeRequest;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::events::v1::{Event, event::Payload};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::codec::TicketClaims;
use crate::domain::{self, TicketStatus};
use crate::keys::Signer;
use crate::store::{TicketDoc, TicketStore, bson_time};

/// Why an event's work failed, and so whether to try again.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A dependency is down (MongoDB, cinema): the same event may succeed later.
    #[error(transparent)]
    Transient(anyhow::Error),
    /// The event can never be handled (undecodable, invalid, an unknown showtime).
    #[error(transparent)]
    Permanent(anyhow::Error),
}

impl From<anyhow::Error> for IssueError {
    fn from(error: anyhow::Error) -> Self {
        Self::Transient(error)
    }
}

/// Start and end of a showtime.
type Window = (DateTime<Utc>, DateTime<Utc>);

pub struct Issuer {
    store: TicketStore,
    signer: Signer,
    cinema: CinemaServiceClient<Channel>,
    admit_before: chrono::Duration,
    /// Showtimes' times, which do not change once tickets are sold.
    showtimes: Mutex<HashMap<Uuid, Window>>,
}

/// What became of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    Issued(usize),
    Revoked(usize),
    /// Not an event tickets care about.
    Ignored,
}

impl Issuer {
    pub fn new(
        store: TicketStore,
        signer: Signer,
        cinema: CinemaServiceClient<Channel>,
        admit_before: chrono::Duration,
    ) -> Arc<Self> {
        Arc::new(Self { store, signer, cinema, admit_before, showtimes: Mutex::default() })
    }

    pub async fn handle(&self, data: &[u8]) -> Result<Handled, IssueError> {
        let event = Event::decode(data)
            .map_err(|e| IssueError::Permanent(anyhow::Error::new(e).context("undecodable event")))?;
        let permanent = |e: domain::InvalidInput| IssueError::Permanent(anyhow::Error::new(e));
        let booking_id = domain::parse_uuid(&event.booking_id, "booking id").map_err(permanent)?;
        let now = Utc::now();
        Ok(match event.payload {
            Some(Payload::BookingConfirmed(confirmed)) => {
                let showtime_id =
                    domain::parse_uuid(&confirmed.showtime_id, "showtime id").map_err(permanent)?;
                let issued = self.issue(booking_id, showtime_id, &confirmed.seat_ids, now).await?;
                // A cancellation handled first left its mark: revoke what was just issued.
                if self.store.is_cancelled(&booking_id.to_string()).await? {
                    self.store.revoke_booking(&booking_id.to_string(), now).await?;
                }
                Handled::Issued(issued)
            }
            Some(Payload::BookingCancelled(_)) => {
                self.store.mark_cancelled(&booking_id.to_string(), now).await?;
                Handled::Revoked(self.store.revoke_booking(&booking_id.to_string(), now).await?)
            }
            _ => Handled::Ignored,
        })
    }

    async fn issue(
        &self,
        booking_id: Uuid,
        showtime_id: Uuid,
        seat_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<usize, IssueError> {
        let (starts_at, ends_at) = self.showtime(showtime_id).await?;
        let (valid_from, valid_until) = domain::validity(starts_at, ends_at, self.admit_before);
        let mut tickets = Vec::with_capacity(seat_ids.len());
        for seat_id in seat_ids {
            let claims = TicketClaims {
                ticket_id: Uuid::new_v4(),
                booking_id,
                showtime_id,
                seat_id: seat_id.clone(),
                valid_from,
                valid_until,
                key_id: self.signer.id().to_owned(),
            };
            let code = self
                .signer
                .sign(claims.clone())
                .map_err(|e| IssueError::Permanent(anyhow::Error::new(e).context("cannot sign a ticket")))?;
            tickets.push(TicketDoc {
                id: claims.ticket_id.to_string(),
                booking_id: booking_id.to_string(),
                showtime_id: showtime_id.to_string(),
                seat_id: seat_id.clone(),
                status: TicketStatus::Valid,
                code,
                key_id: self.signer.id().to_owned(),
                valid_from: bson_time(valid_from),
                valid_until: bson_time(valid_until),
                issued_at: bson_time(now),
                checked_in_at: None,
                checked_in_nonce: None,
                revoked_at: None,
            });
        }
        self.store.insert_tickets(&tickets).await?;
        Ok(tickets.len())
    }

    async fn showtime(&self, id: Uuid) -> Result<Window, IssueError> {
        if let Some(window) = self.showtimes.lock().ok().and_then(|cache| cache.get(&id).copied()) {
            return Ok(window);
        }
        let request = marquee_kit::trace::outgoing(GetShowtimeRequest { id: id.to_string() });
        let showtime = match self.cinema.clone().get_showtime(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                return Err(IssueError::Permanent(anyhow::anyhow!("showtime {id}: {}", status.message())));
            }
            Err(status) => {
                return Err(IssueError::Transient(anyhow::Error::new(status).context("cinema GetShowtime")));
            }
        };
        let time = |ts: Option<&prost_types::Timestamp>| ts.and_then(marquee_kit::time::from_proto);
        let window = time(showtime.starts_at.as_ref())
            .zip(time(showtime.ends_at.as_ref()))
            .with_context(|| format!("showtime {id} has no start or end"))
            .map_err(IssueError::Permanent)?;
        if let Ok(mut cache) = self.showtimes.lock() {
            cache.insert(id, window);
        }
        Ok(window)
    }
}
