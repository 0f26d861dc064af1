//! Who to tell and what about: the user's contact details and channel preferences
//! (user service) and the showtime's movie, cinema and local start time (cinema
//! service), each cached briefly since one booking produces several events; and a
//! confirmed booking's tickets (ticket service), issued on our request if its own
//! consumer of the same event has not issued them yet, so a confirmation never waits
//! for that consumer. The requests of concurrent confirmations go out together, one
//! IssueTicketsBatch call per batch (a batch call is traced on its own; a booking's
//! trace shows the ticket consumer issuing).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use marquee_kit::batch::Batcher;
use marquee_kit::trace::outgoing;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::cinema::v1::{GetCinemaRequest, GetMovieRequest, GetShowtimeRequest};
use marquee_proto::ticket::v1::issue_tickets_answer::Answer;
use marquee_proto::ticket::v1::ticket_service_client::TicketServiceClient;
use marquee_proto::ticket::v1::{IssueTicketsBatchRequest, IssueTicketsRequest, Ticket, TicketStatus};
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use marquee_proto::user::v1::{GetUserRequest, NotificationPreferences};
use tokio::time::Instant;
use tonic::transport::Channel as GrpcChannel;
use uuid::Uuid;

use crate::domain::{TicketCode, UserId};
use crate::render::{Medium, Showing};

/// Preference changes reach notifications within this long.
const CONTACT_TTL: Duration = Duration::from_secs(30);
/// Showtimes rarely change; this only bounds staleness after an edit.
const SHOWING_TTL: Duration = Duration::from_secs(300);
/// Beyond this many entries a cache drops what has expired, or everything.
const CACHE_CAPACITY: usize = 10_000;

/// Batches of IssueTickets in flight at once: a slow one holds up no other.
const ISSUE_BATCHES: usize = 4;
const ISSUE_CALL: &str = "ticket.IssueTickets";

/// Where a user wants to be notified, in the order messages are sent.
#[derive(Debug, Clone)]
pub struct Contact {
    pub name: String,
    pub addresses: Vec<(Medium, String)>,
}

pub struct Directory {
    users: UserServiceClient<GrpcChannel>,
    cinema: CinemaServiceClient<GrpcChannel>,
    /// IssueTickets of concurrent confirmations, asked together (IssueTicketsBatch).
    issues: Batcher<IssueTicketsRequest, Vec<Ticket>, LookupError>,
    contacts: TtlCache<UserId, Contact>,
    showings: TtlCache<Uuid, Showing>,
}

/// A lookup that failed, and whether trying again later can help.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{call} failed: {code:?}: {message}")]
    Upstream { call: &'static str, code: tonic::Code, message: String },
    /// The answer cannot be used (e.g. a showtime without a start time).
    #[error("{0}")]
    Unusable(String),
}

impl LookupError {
    /// The service is down, overloaded or failed inside (its database may be down):
    /// the same question may well be answered later. NOT_FOUND, INVALID_ARGUMENT and
    /// an unusable answer would be the same next time.
    pub fn is_transient(&self) -> bool {
        use tonic::Code;
        match self {
            Self::Upstream { code, .. } => matches!(
                code,
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::ResourceExhausted
                    | Code::Aborted
                    | Code::Cancelled
                    | Code::Unknown
                    | Code::Internal
            ),
            Self::Unusable(_) => false,
        }
    }
}

fn upstream(call: &'static str) -> impl FnOnce(tonic::Status) -> LookupError {
    move |status| LookupError::Upstream { call, code: status.code(), message: status.message().to_owned() }
}

/// One IssueTicketsBatch call for `bookings`: each answered on its own; when the call
/// itself fails, each gets its failure.
async fn issue_batch(
    mut tickets: TicketServiceClient<GrpcChannel>,
    bookings: Vec<IssueTicketsRequest>,
) -> Vec<Result<Vec<Ticket>, LookupError>> {
    let asked = bookings.len();
    let batch = IssueTicketsBatchRequest { bookings: bookings.clone() };
    let answers = match tickets.issue_tickets_batch(outgoing(batch)).await {
        Ok(response) => response.into_inner().answers,
        // A ticket service older than the batch call (a rolling upgrade): one call each.
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            let one = |booking| {
                let mut tickets = tickets.clone();
                async move {
                    let issued = tickets.issue_tickets(outgoing(booking)).await;
                    Ok(issued.map_err(upstream(ISSUE_CALL))?.into_inner().tickets)
                }
            };
            return futures::future::join_all(bookings.into_iter().map(one)).await;
        }
        Err(status) => {
            let failed = |_| {
                Err(LookupError::Upstream {
                    call: ISSUE_CALL,
                    code: status.code(),
                    message: status.message().to_owned(),
                })
            };
            return (0..asked).map(failed).collect();
        }
    };
    let mut answers: Vec<_> = answers
        .into_iter()
        .map(|answer| match answer.answer {
            Some(Answer::Issued(issued)) => Ok(issued.tickets),
            Some(Answer::Refused(refused)) => Err(LookupError::Upstream {
                call: ISSUE_CALL,
                code: tonic::Code::from(refused.code),
                message: refused.message,
            }),
            None => Err(LookupError::Unusable(format!("{ISSUE_CALL}: an empty answer"))),
        })
        .collect();
    // The batcher fails whatever is left unanswered; an answer too many is not ours.
    answers.truncate(asked);
    answers
}

impl Directory {
    pub fn new(
        users: UserServiceClient<GrpcChannel>,
        cinema: CinemaServiceClient<GrpcChannel>,
        tickets: TicketServiceClient<GrpcChannel>,
    ) -> Self {
        let issues = Batcher::spawn_concurrent(ISSUE_CALL, ISSUE_BATCHES, move |bookings| {
            issue_batch(tickets.clone(), bookings)
        });
        Self {
            users,
            cinema,
            issues,
            contacts: TtlCache::new(CONTACT_TTL),
            showings: TtlCache::new(SHOWING_TTL),
        }
    }

    /// The tickets of a confirmed booking, one per seat of `seat_ids` in that order,
    /// revoked ones (the booking was cancelled meanwhile) left out. The ticket service
    /// issues them now unless its consumer of the same event already has (issuing is
    /// idempotent per booking and seat), so this never waits for that consumer.
    pub async fn tickets(
        &self,
        booking_id: Uuid,
        showtime_id: Uuid,
        seat_ids: &[String],
    ) -> Result<Vec<TicketCode>, LookupError> {
        let booking = booking_id.to_string();
        let asked = IssueTicketsRequest {
            booking_id: booking.clone(),
            showtime_id: showtime_id.to_string(),
            seat_ids: seat_ids.to_vec(),
        };
        let issued = self.issues.answer(asked).await.map_err(|lost| LookupError::Upstream {
            call: ISSUE_CALL,
            code: tonic::Code::Unavailable,
            message: lost.to_string(),
        })??;
        let mut codes = Vec::with_capacity(seat_ids.len());
        for seat in seat_ids {
            let ticket = issued.iter().find(|t| t.seat_id == *seat).ok_or_else(|| {
                LookupError::Unusable(format!(
                    "ticket.IssueTickets: no ticket for seat {seat} of booking {booking}"
                ))
            })?;
            if ticket.status() == TicketStatus::Revoked {
                continue;
            }
            let code = TicketCode::parse(seat, &ticket.code).map_err(|e| {
                LookupError::Unusable(format!("ticket {} of booking {booking}: {e}", ticket.id))
            })?;
            codes.push(code);
        }
        Ok(codes)
    }

    pub async fn contact(&self, user_id: UserId) -> Result<Contact, LookupError> {
        if let Some(contact) = self.contacts.get(&user_id) {
            return Ok(contact);
        }
        let user = self
            .users
            .clone()
            .get_user(outgoing(GetUserRequest { id: user_id.to_string() }))
            .await
            .map_err(upstream("user.GetUser"))?
            .into_inner();
        // A user service that predates preferences means the original default.
        let wanted =
            user.notification_preferences.unwrap_or(NotificationPreferences { email: true, sms: false });
        let mut addresses = Vec::new();
        if wanted.email && !user.email.is_empty() {
            addresses.push((Medium::Email, user.email));
        }
        if wanted.sms && !user.phone.is_empty() {
            addresses.push((Medium::Sms, user.phone));
        }
        let contact = Contact { name: user.name, addresses };
        self.contacts.put(user_id, contact.clone());
        Ok(contact)
    }

    pub async fn showing(&self, showtime_id: Uuid) -> Result<Showing, LookupError> {
        if let Some(showing) = self.showings.get(&showtime_id) {
            return Ok(showing);
        }
        let showtime = self
            .cinema
            .clone()
            .get_showtime(outgoing(GetShowtimeRequest { id: showtime_id.to_string() }))
            .await
            .map_err(upstream("cinema.GetShowtime"))?
            .into_inner();
        let (mut movies, mut cinemas) = (self.cinema.clone(), self.cinema.clone());
        let (movie, cinema) = tokio::try_join!(
            async {
                movies
                    .get_movie(outgoing(GetMovieRequest { id: showtime.movie_id.clone() }))
                    .await
                    .map_err(upstream("cinema.GetMovie"))
            },
            async {
                cinemas
                    .get_cinema(outgoing(GetCinemaRequest { id: showtime.cinema_id.clone() }))
                    .await
                    .map_err(upstream("cinema.GetCinema"))
            },
        )?;
        let (movie, cinema) = (movie.into_inner(), cinema.into_inner());
        let starts_at =
            showtime.starts_at.as_ref().and_then(marquee_kit::time::from_proto).ok_or_else(|| {
                LookupError::Unusable(format!("showtime {showtime_id} has no valid start time"))
            })?;
        let zone: chrono_tz::Tz = cinema.time_zone.parse().map_err(|e| {
            LookupError::Unusable(format!("cinema {} has an unknown time zone: {e}", cinema.id))
        })?;
        let showing =
            Showing { movie: movie.title, cinema: cinema.name, starts_at: local_start(starts_at, zone) };
        self.showings.put(showtime_id, showing.clone());
        Ok(showing)
    }
}

/// E.g. "Sat 21 Nov 2026, 19:30 CET": the wall clock the customer goes by.
pub fn local_start(at: chrono::DateTime<chrono::Utc>, zone: chrono_tz::Tz) -> String {
    at.with_timezone(&zone).format("%a %-d %b %Y, %H:%M %Z").to_string()
}

/// A small map whose entries expire.
struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: &K) -> Option<V> {
        // A panic elsewhere cannot leave a map half-updated in a way that matters here.
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.get(key).filter(|(expires, _)| *expires > Instant::now()).map(|(_, value)| value.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (now + self.ttl, value));
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn start_times_are_shown_on_the_cinemas_wall_clock() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 11, 21, 18, 30, 0).unwrap();
        assert_eq!(local_start(at, chrono_tz::Europe::Berlin), "Sat 21 Nov 2026, 19:30 CET");
        assert_eq!(local_start(at, chrono_tz::America::New_York), "Sat 21 Nov 2026, 13:30 EST");
    }

    #[test]
    fn cache_entries_expire() {
        let fresh = TtlCache::new(Duration::from_secs(30));
        fresh.put(1, "a");
        assert_eq!(fresh.get(&1), Some("a"));
        let stale = TtlCache::new(Duration::ZERO);
        stale.put(1, "a");
        assert_eq!(stale.get(&1), None);
    }
}
