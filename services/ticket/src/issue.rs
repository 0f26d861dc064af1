//! Issuing and revoking. `booking.confirmed` issues one ticket per seat, signed for the
//! showtime's admission window (from cinema); `booking.cancelled` revokes them. The
//! notification service also asks for a confirmed booking's tickets to be issued
//! (IssueTickets), so that its confirmation carries their codes without waiting for
//! this service's consumer: whoever comes first issues them, the unique (booking, seat)
//! index makes the second a no-op that reads them back. So a redelivered event changes
//! nothing, and no record of handled events is kept (it cost two MongoDB commands per
//! booking for a guard the index already gives).
//!
//! The MongoDB commands of concurrent issues go out together (`Batcher`): one insert,
//! one cancellation lookup and one read-back per batch, not per booking.

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

use crate::batch::Batcher;
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
    /// The event can never be handled (undecodable, invalid, a showtime without times).
    #[error(transparent)]
    Permanent(anyhow::Error),
    /// Cinema does not know the showtime: never handled either.
    #[error("{0}")]
    UnknownShowtime(String),
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
    /// Per booking, how many of its tickets were new.
    inserts: Batcher<Vec<TicketDoc>, usize>,
    /// Per booking, whether it was cancelled.
    cancellations: Batcher<String, bool>,
    /// Per booking, its stored tickets.
    reads: Batcher<String, Vec<TicketDoc>>,
}

/// A booking's tickets, and how many of them this call issued.
#[derive(Debug)]
pub struct Issued {
    pub fresh: usize,
    pub tickets: Vec<TicketDoc>,
}

/// What an insert added: every ticket (as stored, still valid), some of them (or
/// all, revoked since), or none (an earlier issue had).
enum Inserted {
    All(Vec<TicketDoc>),
    Part(usize),
    Nothing,
}

impl Inserted {
    fn fresh(&self) -> usize {
        match self {
            Self::All(tickets) => tickets.len(),
            Self::Part(fresh) => *fresh,
            Self::Nothing => 0,
        }
    }
}

/// What became of an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// How many tickets were new.
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
        let inserts = Batcher::spawn("insert tickets", {
            let store = store.clone();
            move |bookings: Vec<Vec<TicketDoc>>| {
                let store = store.clone();
                async move { store.insert_bookings(&bookings).await }
            }
        });
        let cancellations = Batcher::spawn("look up cancellations", {
            let store = store.clone();
            move |ids: Vec<String>| {
                let store = store.clone();
                async move { store.cancelled_among(&ids).await }
            }
        });
        let reads = Batcher::spawn("read tickets", {
            let store = store.clone();
            move |ids: Vec<String>| {
                let store = store.clone();
                async move { store.tickets_among(&ids).await }
            }
        });
        Arc::new(Self {
            store,
            signer,
            cinema,
            admit_before,
            showtimes: Mutex::default(),
            inserts,
            cancellations,
            reads,
        })
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
                let inserted = self.insert(booking_id, showtime_id, &confirmed.seat_ids, now).await?;
                Handled::Issued(inserted.fresh())
            }
            Some(Payload::BookingCancelled(_)) => {
                self.store.mark_cancelled(&booking_id.to_string(), now).await?;
                Handled::Revoked(self.store.revoke_booking(&booking_id.to_string(), now).await?)
            }
            _ => Handled::Ignored,
        })
    }

    /// Issues the booking's tickets not issued yet and answers all of them, in the
    /// order of `seat_ids` (revoked ones too, if the booking was cancelled).
    pub async fn issue(
        &self,
        booking_id: Uuid,
        showtime_id: Uuid,
        seat_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Issued, IssueError> {
        let inserted = self.insert(booking_id, showtime_id, seat_ids, now).await?;
        let fresh = inserted.fresh();
        if let Inserted::All(tickets) = inserted {
            return Ok(Issued { fresh, tickets });
        }
        let stored = self.reads.call(booking_id.to_string()).await?;
        let tickets = seat_ids
            .iter()
            .map(|seat| {
                stored.iter().find(|t| t.seat_id == *seat).cloned().with_context(|| {
                    format!("ticket of booking {booking_id} for seat {seat} is missing after its insert")
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Issued { fresh, tickets })
    }

    /// Inserts the booking's tickets not issued yet. A cancellation handled before left
    /// its mark: what is inserted after it is revoked at once. An insert that added
    /// nothing leaves that check to the one that did: it ran after that insert, so it
    /// saw the mark, or the cancellation's own revocation ran after the insert.
    async fn insert(
        &self,
        booking_id: Uuid,
        showtime_id: Uuid,
        seat_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Inserted, IssueError> {
        let built = self.build(booking_id, showtime_id, seat_ids, now).await?;
        let booking = booking_id.to_string();
        let fresh = self.inserts.call(built.clone()).await?;
        if fresh == 0 {
            return Ok(Inserted::Nothing);
        }
        if self.cancellations.call(booking.clone()).await? {
            self.store.revoke_booking(&booking, now).await?;
            return Ok(Inserted::Part(fresh));
        }
        Ok(if fresh == built.len() { Inserted::All(built) } else { Inserted::Part(fresh) })
    }

    /// The booking's tickets, signed, as they would be stored.
    async fn build(
        &self,
        booking_id: Uuid,
        showtime_id: Uuid,
        seat_ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<Vec<TicketDoc>, IssueError> {
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
        Ok(tickets)
    }

    async fn showtime(&self, id: Uuid) -> Result<Window, IssueError> {
        if let Some(window) = self.showtimes.lock().ok().and_then(|cache| cache.get(&id).copied()) {
            return Ok(window);
        }
        let request = marquee_kit::trace::outgoing(GetShowtimeRequest { id: id.to_string() });
        let showtime = match self.cinema.clone().get_showtime(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                return Err(IssueError::UnknownShowtime(format!("showtime {id}: {}", status.message())));
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
