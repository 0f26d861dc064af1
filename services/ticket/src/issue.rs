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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_kit::batch::Batcher;
use marquee_kit::turns::Turns;
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
    inserts: Batcher<Vec<TicketDoc>, usize, mongodb::error::Error>,
    /// Per booking, whether it was cancelled.
    cancellations: Batcher<String, bool, mongodb::error::Error>,
    /// Per booking, its stored tickets.
    reads: Batcher<String, Vec<TicketDoc>, mongodb::error::Error>,
    /// The tickets of bookings issued here lately.
    recent: Recent,
    /// Per booking: the consumer's event and IssueTickets arrive together, and the
    /// second waits for the first, then finds its tickets in `recent` instead of
    /// signing and inserting them again.
    turns: Turns<Uuid>,
}

/// How long, and for at most how many bookings, `Recent` remembers tickets.
const RECENT_TTL: Duration = Duration::from_secs(60);
const RECENT_CAPACITY: usize = 10_000;

/// Tickets this process issued (or read back) lately, by booking. The consumer of
/// `booking.confirmed` and IssueTickets both see each confirmation, usually in the same
/// process and milliseconds apart: the second is answered from here instead of signing,
/// inserting and reading again. A cancellation handled here forgets its booking; one
/// handled by another replica is not seen, so for up to `RECENT_TTL` IssueTickets may
/// answer a ticket as valid that was revoked meanwhile (the door refuses it all the same).
#[derive(Default)]
struct Recent(Mutex<HashMap<Uuid, (Instant, Vec<TicketDoc>)>>);

impl Recent {
    /// The booking's tickets for exactly these seats, in their order, if remembered.
    fn get(&self, booking_id: Uuid, seat_ids: &[String]) -> Option<Vec<TicketDoc>> {
        let entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, tickets) = entries.get(&booking_id)?;
        if at.elapsed() >= RECENT_TTL || tickets.len() != seat_ids.len() {
            return None;
        }
        seat_ids.iter().map(|seat| tickets.iter().find(|t| t.seat_id == *seat).cloned()).collect()
    }

    fn put(&self, booking_id: Uuid, tickets: &[TicketDoc]) {
        let mut entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= RECENT_CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < RECENT_TTL);
            if entries.len() >= RECENT_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(booking_id, (Instant::now(), tickets.to_vec()));
    }

    fn forget(&self, booking_id: Uuid) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).remove(&booking_id);
    }
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
            recent: Recent::default(),
            turns: Turns::default(),
        })
    }

    pub async fn handle(&self, data: &[u8]) -> Result<Handled, IssueError> {
        let event = Event::decode(data)
            .map_err(|e| IssueError::Permanent(anyhow::Error::new(e).context("undecodable event")))?;
        let permanent = |e: domain::InvalidInput| IssueError::Permanent(anyhow::Error::new(e));
        let booking_id = domain::parse_uuid(&event.booking_id, "booking id").map_err(permanent)?;
        // A delivery's `event.consume` span names the booking (other spans have no such field).
        tracing::Span::current().record("booking.id", tracing::field::display(booking_id));
        let now = Utc::now();
        Ok(match event.payload {
            Some(Payload::BookingConfirmed(confirmed)) => {
                let showtime_id =
                    domain::parse_uuid(&confirmed.showtime_id, "showtime id").map_err(permanent)?;
                let _turn = self.turns.take(booking_id).await;
                if self.recent.get(booking_id, &confirmed.seat_ids).is_some() {
                    return Ok(Handled::Issued(0));
                }
                let inserted = self.insert(booking_id, showtime_id, &confirmed.seat_ids, now).await?;
                if let Inserted::All(tickets) = &inserted {
                    self.recent.put(booking_id, tickets);
                }
                Handled::Issued(inserted.fresh())
            }
            Some(Payload::BookingCancelled(_)) => {
                // After an issue running here, so that it cannot remember what this revokes.
                let _turn = self.turns.take(booking_id).await;
                self.recent.forget(booking_id);
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
        let _turn = self.turns.take(booking_id).await;
        if let Some(tickets) = self.recent.get(booking_id, seat_ids) {
            return Ok(Issued { fresh: 0, tickets });
        }
        let inserted = self.insert(booking_id, showtime_id, seat_ids, now).await?;
        let fresh = inserted.fresh();
        if let Inserted::All(tickets) = inserted {
            self.recent.put(booking_id, &tickets);
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
        self.recent.put(booking_id, &tickets);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(booking_id: Uuid, seat_id: &str) -> TicketDoc {
        let at = bson_time(Utc::now());
        TicketDoc {
            id: Uuid::new_v4().to_string(),
            booking_id: booking_id.to_string(),
            showtime_id: Uuid::new_v4().to_string(),
            seat_id: seat_id.to_owned(),
            status: TicketStatus::Valid,
            code: format!("code-{seat_id}"),
            key_id: "k1".to_owned(),
            valid_from: at,
            valid_until: at,
            issued_at: at,
            checked_in_at: None,
            checked_in_nonce: None,
            revoked_at: None,
        }
    }

    fn seats(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn recent_tickets_answer_exactly_their_booking_and_seats_until_forgotten() {
        let recent = Recent::default();
        let (booking, other) = (Uuid::new_v4(), Uuid::new_v4());
        recent.put(booking, &[ticket(booking, "A1"), ticket(booking, "A2")]);

        let answered = recent.get(booking, &seats(&["A2", "A1"])).expect("remembered");
        assert_eq!(answered.iter().map(|t| t.seat_id.as_str()).collect::<Vec<_>>(), ["A2", "A1"]);
        assert!(recent.get(booking, &seats(&["A1"])).is_none(), "other seats are not answered");
        assert!(recent.get(booking, &seats(&["A1", "A3"])).is_none(), "other seats are not answered");
        assert!(recent.get(other, &seats(&["A1", "A2"])).is_none());

        recent.forget(booking);
        assert!(recent.get(booking, &seats(&["A1", "A2"])).is_none(), "a cancellation forgets");
    }

    #[test]
    fn recent_tickets_stay_bounded() {
        let recent = Recent::default();
        for _ in 0..RECENT_CAPACITY + 5 {
            let booking = Uuid::new_v4();
            recent.put(booking, &[ticket(booking, "A1")]);
        }
        let remembered = recent.0.lock().unwrap_or_else(PoisonError::into_inner).len();
        assert!(remembered <= RECENT_CAPACITY, "{remembered}");
    }
}
