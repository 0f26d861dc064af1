//! The `TicketService` gRPC handlers, check-in, and the one error type they return.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use marquee_kit::batch::Batcher;
use marquee_kit::time::{from_proto, to_proto};
use marquee_kit::{ApiError, ErrorCode};
use marquee_proto::ticket::v1 as pb;
use marquee_types::SeatSelection;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::domain::{self, InvalidInput, Nonce, Outcome, TicketStatus};
use crate::issue::{IssueError, Issuer};
use crate::keys::PublicKeys;
use crate::store::{Admission, CheckInDoc, TicketDoc, TicketStore, bson_time, chrono_time};

const MAX_BOOKINGS_PER_LIST: usize = 100;
/// As many as one of the notification worker's batches carries.
const MAX_BOOKINGS_PER_ISSUE: usize = marquee_kit::batch::MAX_BATCH;
const MAX_REVOKED_PER_PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("this nonce was used for another code or showtime")]
    NonceReused,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<TicketError> for Status {
    fn from(error: TicketError) -> Self {
        let message = error.to_string();
        match error {
            TicketError::InvalidInput(_) => ApiError::bad_input(message).into(),
            TicketError::NonceReused => ApiError::new(ErrorCode::Conflict, message).into(),
            TicketError::Unexpected(e) => marquee_mongo::internal(&e),
        }
    }
}

#[derive(Clone)]
pub struct TicketServiceImpl {
    store: TicketStore,
    keys: PublicKeys,
    /// Issues tickets for IssueTickets, as the consumer does for `booking.confirmed`.
    issuer: Arc<Issuer>,
    /// Nonce lookups and scan records of concurrent scans, each kind one command per
    /// batch: at a busy door these were two of a scan's three or four MongoDB commands.
    scans_seen: Batcher<String, Option<CheckInDoc>, mongodb::error::Error>,
    scans_recorded: Batcher<CheckInDoc, Option<CheckInDoc>, mongodb::error::Error>,
    /// The conditional admissions of concurrent scans, one update and one read per batch.
    admissions: Batcher<Admission, Option<TicketDoc>, mongodb::error::Error>,
}

/// A check-in's answer before it is turned into the reply.
struct Answer {
    outcome: Outcome,
    ticket: Option<TicketDoc>,
    checked_in_at: Option<DateTime<Utc>>,
}

fn status(status: TicketStatus) -> pb::TicketStatus {
    match status {
        TicketStatus::Valid => pb::TicketStatus::Valid,
        TicketStatus::CheckedIn => pb::TicketStatus::CheckedIn,
        TicketStatus::Revoked => pb::TicketStatus::Revoked,
    }
}

fn outcome(outcome: Outcome) -> pb::CheckInOutcome {
    match outcome {
        Outcome::Admitted => pb::CheckInOutcome::Admitted,
        Outcome::AlreadyCheckedIn => pb::CheckInOutcome::AlreadyCheckedIn,
        Outcome::Revoked => pb::CheckInOutcome::Revoked,
        Outcome::Invalid => pb::CheckInOutcome::Invalid,
        Outcome::WrongShowtime => pb::CheckInOutcome::WrongShowtime,
        Outcome::NotYetValid => pb::CheckInOutcome::NotYetValid,
        Outcome::Expired => pb::CheckInOutcome::Expired,
    }
}

fn to_pb(ticket: TicketDoc) -> pb::Ticket {
    pb::Ticket {
        id: ticket.id,
        booking_id: ticket.booking_id,
        showtime_id: ticket.showtime_id,
        seat_id: ticket.seat_id,
        status: status(ticket.status).into(),
        checked_in_at: ticket.checked_in_at.map(|at| to_proto(chrono_time(at))),
        code: ticket.code,
        valid_from: Some(to_proto(chrono_time(ticket.valid_from))),
        valid_until: Some(to_proto(chrono_time(ticket.valid_until))),
    }
}

impl TicketServiceImpl {
    /// Starts the check-in batchers, so it must run inside the Tokio runtime.
    pub fn new(store: TicketStore, keys: PublicKeys, issuer: Arc<Issuer>) -> Self {
        let scans_seen = Batcher::spawn("look up scan nonces", {
            let store = store.clone();
            move |nonces| {
                let store = store.clone();
                async move { store.check_ins(nonces).await }
            }
        });
        let scans_recorded = Batcher::spawn("record scans", {
            let store = store.clone();
            move |records| {
                let store = store.clone();
                async move { store.record_check_ins(records).await }
            }
        });
        let admissions = Batcher::spawn("admit tickets", {
            let store = store.clone();
            move |scans| {
                let store = store.clone();
                async move { store.admit_many(scans).await }
            }
        });
        Self { store, keys, issuer, scans_seen, scans_recorded, admissions }
    }

    /// One scan. A repeat of a nonce answers what the first got; otherwise the code
    /// is verified and screened (showtime, window), then the ticket is admitted by a
    /// conditional update that only one scan can win.
    async fn check_in(&self, request: pb::CheckInRequest) -> Result<Answer, TicketError> {
        let nonce = Nonce::parse(&request.nonce)?;
        let showtime_id = domain::parse_uuid(&request.showtime_id, "showtime id")?;
        let scanned_at = match request.scanned_at.as_ref() {
            Some(ts) => from_proto(ts).ok_or_else(|| InvalidInput("scannedAt is out of range".to_owned()))?,
            None => Utc::now(),
        };
        if let Some(first) = self.scans_seen.call(nonce.as_str().to_owned()).await? {
            return self.replay(first, &request.code, showtime_id).await;
        }
        let answer = self.decide(&request.code, showtime_id, &nonce, scanned_at).await?;
        let record = CheckInDoc {
            nonce: nonce.as_str().to_owned(),
            code: request.code.clone(),
            showtime_id: showtime_id.to_string(),
            outcome: answer.outcome,
            ticket_id: answer.ticket.as_ref().map(|t| t.id.clone()),
            checked_in_at: answer.checked_in_at.map(bson_time),
            scanned_at: bson_time(scanned_at),
            staff_id: request.staff_id.clone(),
            recorded_at: bson_time(Utc::now()),
        };
        match self.scans_recorded.call(record).await? {
            // The same scan, concurrently, was recorded first: answer as it was.
            Some(first) => self.replay(first, &request.code, showtime_id).await,
            None => Ok(answer),
        }
    }

    async fn replay(&self, first: CheckInDoc, code: &str, showtime_id: Uuid) -> Result<Answer, TicketError> {
        if first.code != code || first.showtime_id != showtime_id.to_string() {
            return Err(TicketError::NonceReused);
        }
        let ticket = match &first.ticket_id {
            Some(id) => self.store.ticket(id).await?,
            None => None,
        };
        Ok(Answer { outcome: first.outcome, ticket, checked_in_at: first.checked_in_at.map(chrono_time) })
    }

    async fn decide(
        &self,
        code: &str,
        showtime_id: Uuid,
        nonce: &Nonce,
        at: DateTime<Utc>,
    ) -> Result<Answer, TicketError> {
        let claims = match self.keys.verify(code) {
            Ok(claims) => claims,
            Err(invalid) => {
                tracing::info!(reason = %invalid, "invalid ticket code scanned");
                return Ok(Answer { outcome: Outcome::Invalid, ticket: None, checked_in_at: None });
            }
        };
        let ticket_id = claims.ticket_id.to_string();
        if let Some(outcome) = domain::screen(&claims, showtime_id, at) {
            let ticket = self.store.ticket(&ticket_id).await?;
            return Ok(Answer { outcome, ticket, checked_in_at: None });
        }
        let admission = Admission { ticket_id: ticket_id.clone(), nonce: nonce.as_str().to_owned(), at };
        let Some(ticket) = self.admissions.call(admission).await? else {
            // Signed by our key, but never issued here (another deployment's ticket).
            return Ok(Answer { outcome: Outcome::Invalid, ticket: None, checked_in_at: None });
        };
        let checked_in_at = ticket.checked_in_at.map(chrono_time);
        let outcome = match ticket.status {
            TicketStatus::Revoked => Outcome::Revoked,
            // This scan admitted it: now, or in an earlier try whose record was not
            // written (the nonce is the scan's).
            TicketStatus::CheckedIn if ticket.checked_in_nonce.as_deref() == Some(nonce.as_str()) => {
                Outcome::Admitted
            }
            TicketStatus::CheckedIn => Outcome::AlreadyCheckedIn,
            // The conditional update just ran on it, and nothing turns a ticket back to VALID.
            TicketStatus::Valid => {
                return Err(anyhow::anyhow!("ticket {ticket_id} is VALID but could not be admitted").into());
            }
        };
        Ok(Answer { outcome, ticket: Some(ticket), checked_in_at })
    }
}

/// Refuses a request naming more than `max` bookings.
fn at_most(bookings: usize, max: usize) -> Result<(), Status> {
    if bookings > max {
        return Err(ApiError::bad_input(format!("at most {max} bookings at once")).into());
    }
    Ok(())
}

impl TicketServiceImpl {
    /// IssueTickets for one booking: its tickets, issued now unless they were already.
    async fn issue_one(&self, request: pb::IssueTicketsRequest) -> Result<pb::IssueTicketsResponse, Status> {
        let booking_id = domain::parse_uuid(&request.booking_id, "booking id").map_err(TicketError::from)?;
        let showtime_id =
            domain::parse_uuid(&request.showtime_id, "showtime id").map_err(TicketError::from)?;
        let seats = SeatSelection::parse(&request.seat_ids, SeatSelection::MAX_PER_BOOKING)
            .map_err(TicketError::from)?
            .into_strings();
        let issued = match self.issuer.issue(booking_id, showtime_id, &seats, Utc::now()).await {
            Ok(issued) => issued,
            Err(IssueError::Transient(error)) => {
                return Err(marquee_kit::error::unavailable(&error, "the ticket store or cinema"));
            }
            Err(IssueError::Permanent(error)) => return Err(marquee_mongo::internal(&error)),
            Err(IssueError::UnknownShowtime(message)) => return Err(ApiError::not_found(message).into()),
        };
        tracing::info!(booking.id = %booking_id, issued = issued.fresh, "tickets issued on request");
        Ok(pb::IssueTicketsResponse { tickets: issued.tickets.into_iter().map(to_pb).collect() })
    }
}

#[tonic::async_trait]
impl pb::ticket_service_server::TicketService for TicketServiceImpl {
    #[tracing::instrument(skip_all, fields(bookings = request.get_ref().booking_ids.len()))]
    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        let ids = request.into_inner().booking_ids;
        at_most(ids.len(), MAX_BOOKINGS_PER_LIST)?;
        let ids = ids
            .iter()
            .map(|id| domain::parse_uuid(id, "booking id").map(|id| id.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TicketError::from)?;
        let tickets = self.store.by_bookings(&ids).await.map_err(TicketError::from)?;
        Ok(Response::new(pb::ListTicketsResponse { tickets: tickets.into_iter().map(to_pb).collect() }))
    }

    #[tracing::instrument(skip_all, fields(booking.id = %request.get_ref().booking_id))]
    async fn issue_tickets(
        &self,
        request: Request<pb::IssueTicketsRequest>,
    ) -> Result<Response<pb::IssueTicketsResponse>, Status> {
        self.issue_one(request.into_inner()).await.map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(bookings = request.get_ref().bookings.len()))]
    async fn issue_tickets_batch(
        &self,
        request: Request<pb::IssueTicketsBatchRequest>,
    ) -> Result<Response<pb::IssueTicketsBatchResponse>, Status> {
        let bookings = request.into_inner().bookings;
        at_most(bookings.len(), MAX_BOOKINGS_PER_ISSUE)?;
        // Concurrently, so that the issuer's batching gives them shared MongoDB commands.
        let answers = futures::future::join_all(bookings.into_iter().map(|booking| self.issue_one(booking)))
            .await
            .into_iter()
            .map(|issued| pb::IssueTicketsAnswer {
                answer: Some(match issued {
                    Ok(issued) => pb::issue_tickets_answer::Answer::Issued(issued),
                    Err(status) => pb::issue_tickets_answer::Answer::Refused(pb::IssueTicketsRefusal {
                        code: status.code() as i32,
                        message: status.message().to_owned(),
                    }),
                }),
            })
            .collect();
        Ok(Response::new(pb::IssueTicketsBatchResponse { answers }))
    }

    async fn list_keys(
        &self,
        _: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let keys = self
            .keys
            .listed()
            .iter()
            .map(|key| pb::TicketKey {
                id: key.id.clone(),
                algorithm: key.algorithm.clone(),
                public_key: self.keys.raw(&key.id).map(Vec::from).unwrap_or_default(),
                valid_from: Some(to_proto(key.valid_from)),
                valid_until: Some(to_proto(key.valid_until)),
            })
            .collect();
        Ok(Response::new(pb::ListKeysResponse { keys }))
    }

    #[tracing::instrument(skip_all, fields(showtime.id = %request.get_ref().showtime_id))]
    async fn list_revoked(
        &self,
        request: Request<pb::ListRevokedRequest>,
    ) -> Result<Response<pb::ListRevokedResponse>, Status> {
        let request = request.into_inner();
        let showtime_id =
            domain::parse_uuid(&request.showtime_id, "showtime id").map_err(TicketError::from)?;
        let after = match request.after.as_str() {
            "" => 0,
            raw => raw
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq >= 0)
                .ok_or_else(|| ApiError::bad_input(format!("cursor {raw:?} is not one of ours")))?,
        };
        let limit = match request.limit as usize {
            0 => MAX_REVOKED_PER_PAGE,
            n => n.min(MAX_REVOKED_PER_PAGE),
        };
        let (entries, has_more) = self
            .store
            .revoked_after(&showtime_id.to_string(), after, limit)
            .await
            .map_err(TicketError::from)?;
        let cursor = entries.last().map_or(after, |e| e.seq).to_string();
        let tickets = entries
            .into_iter()
            .map(|e| pb::RevokedTicket {
                ticket_id: e.ticket_id,
                booking_id: e.booking_id,
                seat_id: e.seat_id,
                revoked_at: Some(to_proto(chrono_time(e.revoked_at))),
                cursor: e.seq.to_string(),
            })
            .collect();
        Ok(Response::new(pb::ListRevokedResponse { tickets, cursor, has_more }))
    }

    #[tracing::instrument(skip_all, fields(showtime.id = %request.get_ref().showtime_id))]
    async fn check_in(
        &self,
        request: Request<pb::CheckInRequest>,
    ) -> Result<Response<pb::CheckInResponse>, Status> {
        let answer = TicketServiceImpl::check_in(self, request.into_inner()).await?;
        tracing::info!(check_in.outcome = answer.outcome.as_str(), "ticket scanned");
        Ok(Response::new(pb::CheckInResponse {
            outcome: outcome(answer.outcome).into(),
            ticket: answer.ticket.map(to_pb),
            checked_in_at: answer.checked_in_at.map(to_proto),
        }))
    }
}
