//! Validated input: list requests from gRPC and events from RabbitMQ are parsed into
//! these types first; everything deeper trusts them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use marquee_proto::events::v1::{Event, event::Payload};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use marquee_types::{InvalidInput, Money, UserId};
use marquee_types::{SeatId, invalid};

fn uuid(raw: &str, what: &str) -> Result<Uuid, InvalidInput> {
    Uuid::parse_str(raw.trim()).map_err(|_| invalid(format!("{what} must be a UUID")))
}

/// How many notifications one list call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u16);

impl PageSize {
    const DEFAULT: u16 = 20;
    const MAX: u16 = 100;

    /// 0 means the default; larger than the maximum is capped, as AIP-158 suggests.
    pub fn parse(raw: i32) -> Result<Self, InvalidInput> {
        match raw {
            ..0 => Err(invalid("page_size must not be negative")),
            0 => Ok(Self(Self::DEFAULT)),
            n => Ok(Self(u16::try_from(n).unwrap_or(Self::MAX).min(Self::MAX))),
        }
    }

    pub fn get(self) -> i64 {
        i64::from(self.0)
    }

    pub fn len(self) -> usize {
        usize::from(self.0)
    }
}

/// Where a listing resumes: just after the notification sent at `sent_at_ms` with
/// id `id`, in (sent_at, id) descending order. Clients only see it encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken {
    sent_at_ms: i64,
    id: Uuid,
}

impl PageToken {
    pub fn new(sent_at_ms: i64, id: Uuid) -> Self {
        Self { sent_at_ms, id }
    }

    /// An empty token means the first page.
    pub fn parse(raw: &str) -> Result<Option<Self>, InvalidInput> {
        if raw.is_empty() {
            return Ok(None);
        }
        let bad = || invalid("page_token is not one this service issued");
        let decoded = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
        let decoded = std::str::from_utf8(&decoded).map_err(|_| bad())?;
        let (sent_at, id) = decoded.split_once('.').ok_or_else(bad)?;
        Ok(Some(Self {
            sent_at_ms: sent_at.parse().map_err(|_| bad())?,
            id: Uuid::parse_str(id).map_err(|_| bad())?,
        }))
    }

    pub fn sent_at_ms(self) -> i64 {
        self.sent_at_ms
    }

    pub fn id(self) -> Uuid {
        self.id
    }

    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.sent_at_ms, self.id))
    }
}

/// One seat's ticket as a confirmation shows it: the seat and the signed code (README
/// "Ticket codes") that its QR code holds and a scanner reads, as the ticket service
/// issued it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketCode {
    pub seat_id: String,
    pub code: String,
}

impl TicketCode {
    /// Longest code accepted: ten times a typical one, far inside what a QR code holds.
    const MAX_CODE_LEN: usize = 1024;

    /// The code must be base64url without padding: anything else would not be one of
    /// the ticket service's codes, and could break the message it is put in.
    pub fn parse(seat_id: &str, code: &str) -> Result<Self, InvalidInput> {
        let seat_id = SeatId::parse(seat_id)?;
        let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if code.is_empty() || code.len() > Self::MAX_CODE_LEN || !code.chars().all(base64url) {
            return Err(invalid(format!("the ticket code of seat {seat_id} is not base64url")));
        }
        Ok(Self { seat_id: seat_id.to_string(), code: code.to_owned() })
    }
}

/// What happened, with what each message about it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    BookingConfirmed {
        showtime_id: Uuid,
        seat_ids: Vec<String>,
        total: Money,
    },
    /// `refund` is `None` for a hold cancelled before it was paid: nothing was charged.
    BookingCancelled {
        showtime_id: Uuid,
        seat_ids: Vec<String>,
        refund: Option<Money>,
    },
    BookingExpired {
        showtime_id: Uuid,
        seat_ids: Vec<String>,
    },
    BookingPaymentFailed {
        showtime_id: Uuid,
        reason: String,
    },
    PaymentRefunded {
        amount: Money,
        reason: String,
    },
}

impl Kind {
    pub fn showtime_id(&self) -> Option<Uuid> {
        match self {
            Self::BookingConfirmed { showtime_id, .. }
            | Self::BookingCancelled { showtime_id, .. }
            | Self::BookingExpired { showtime_id, .. }
            | Self::BookingPaymentFailed { showtime_id, .. } => Some(*showtime_id),
            Self::PaymentRefunded { .. } => None,
        }
    }
}

/// An event someone is notified about, checked field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event_id: Uuid,
    pub event_type: String,
    pub user_id: UserId,
    pub booking_id: Uuid,
    pub kind: Kind,
}

fn seats(seat_ids: Vec<String>) -> Result<Vec<String>, InvalidInput> {
    if seat_ids.is_empty() {
        return Err(invalid("the seat list is empty"));
    }
    for seat in &seat_ids {
        SeatId::parse(seat)?;
    }
    Ok(seat_ids)
}

impl Notice {
    /// The event types somebody is notified about; the work queue is bound to these
    /// alone (`topology.rs`), so the others never cost a delivery. They are what the
    /// publishers' event logs keep for the reconciler, so the list is theirs.
    pub const EVENT_TYPES: [&str; 5] = marquee_messaging::outbox::LOGGED_EVENT_TYPES;

    /// `Ok(None)` for the events nobody is notified about (e.g. `booking.held`);
    /// an error for a malformed one, which can only be dead-lettered.
    pub fn from_event(event: Event) -> Result<Option<Self>, InvalidInput> {
        let kind = match (event.r#type.as_str(), event.payload) {
            ("booking.confirmed", Some(Payload::BookingConfirmed(p))) => Kind::BookingConfirmed {
                showtime_id: uuid(&p.showtime_id, "showtime_id")?,
                seat_ids: seats(p.seat_ids)?,
                total: Money::from_proto(p.total.as_ref(), "total")?,
            },
            ("booking.cancelled", Some(Payload::BookingCancelled(p))) => Kind::BookingCancelled {
                showtime_id: uuid(&p.showtime_id, "showtime_id")?,
                seat_ids: seats(p.seat_ids)?,
                refund: p
                    .refund
                    .as_ref()
                    .map(|refund| Money::from_proto(Some(refund), "refund"))
                    .transpose()?,
            },
            ("booking.expired", Some(Payload::BookingExpired(p))) => Kind::BookingExpired {
                showtime_id: uuid(&p.showtime_id, "showtime_id")?,
                seat_ids: seats(p.seat_ids)?,
            },
            ("booking.payment_failed", Some(Payload::BookingPaymentFailed(p))) => {
                Kind::BookingPaymentFailed {
                    showtime_id: uuid(&p.showtime_id, "showtime_id")?,
                    reason: p.reason,
                }
            }
            ("payment.refunded", Some(Payload::PaymentRefunded(p))) => Kind::PaymentRefunded {
                amount: Money::from_proto(p.amount.as_ref(), "amount")?,
                reason: p.reason,
            },
            (
                kind @ ("booking.confirmed"
                | "booking.cancelled"
                | "booking.expired"
                | "booking.payment_failed"
                | "payment.refunded"),
                _,
            ) => return Err(invalid(format!("{kind} does not carry its payload"))),
            _ => return Ok(None),
        };
        Ok(Some(Self {
            event_id: uuid(&event.event_id, "event_id")?,
            event_type: event.r#type,
            user_id: UserId::parse(&event.user_id)?,
            booking_id: uuid(&event.booking_id, "booking_id")?,
            kind,
        }))
    }
}

#[cfg(test)]
mod tests {
    use marquee_proto::common::v1::Money;
    use marquee_proto::events::v1::BookingConfirmed as Payloaded;

    use super::*;

    #[test]
    fn the_queue_is_bound_to_exactly_the_event_types_that_notify_someone() {
        let every_type = [
            "booking.held",
            "booking.confirmed",
            "booking.cancelled",
            "booking.expired",
            "booking.payment_failed",
            "booking.failed",
            "payment.succeeded",
            "payment.refunded",
        ];
        for event_type in every_type {
            // Without its payload a type that notifies is refused; any other is skipped.
            let bare = Event { r#type: event_type.into(), payload: None, ..event() };
            let notifies = Notice::from_event(bare).is_err();
            assert_eq!(notifies, Notice::EVENT_TYPES.contains(&event_type), "{event_type}");
        }
    }

    fn event() -> Event {
        Event {
            event_id: Uuid::new_v4().to_string(),
            r#type: "booking.confirmed".into(),
            occurred_at: None,
            booking_id: Uuid::new_v4().to_string(),
            user_id: Uuid::new_v4().to_string(),
            payload: Some(Payload::BookingConfirmed(Payloaded {
                showtime_id: Uuid::new_v4().to_string(),
                seat_ids: vec!["A1".into()],
                total: Some(Money { amount_minor: 1250, currency: "EUR".into() }),
                payment_id: "p1".into(),
            })),
        }
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(PageSize::parse(0).unwrap().get(), 20);
        assert_eq!(PageSize::parse(5).unwrap().get(), 5);
        assert_eq!(PageSize::parse(1000).unwrap().get(), 100);
        assert!(PageSize::parse(-1).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_foreign_ones_are_refused() {
        let token = PageToken::new(1_700_000_000_123, Uuid::now_v7());
        assert_eq!(PageToken::parse(&token.encode()), Ok(Some(token)));
        assert_eq!(PageToken::parse(""), Ok(None));
        for foreign in ["%%%", "bm90LWEtdG9rZW4", &URL_SAFE_NO_PAD.encode("12.not-a-uuid")] {
            assert!(PageToken::parse(foreign).is_err(), "{foreign}");
        }
    }

    #[test]
    fn ticket_codes_must_be_base64url() {
        let ticket = TicketCode::parse("C7", "AQ-_z09").unwrap();
        assert_eq!((ticket.seat_id.as_str(), ticket.code.as_str()), ("C7", "AQ-_z09"));
        for bad in ["", "AQ==", "AQ+/", "<b>", &"A".repeat(1025)] {
            assert!(TicketCode::parse("C7", bad).is_err(), "{bad}");
        }
        assert!(TicketCode::parse("not a seat", "AQ").is_err());
    }

    #[test]
    fn only_well_formed_notified_events_parse() {
        let parsed = Notice::from_event(event()).unwrap().unwrap();
        assert!(
            matches!(parsed.kind, Kind::BookingConfirmed { ref total, .. } if total.to_string() == "12.50 EUR")
        );
        let mut bad_id = event();
        bad_id.event_id = "not-a-uuid".into();
        assert!(Notice::from_event(bad_id).is_err());
        let mut no_payload = event();
        no_payload.payload = None;
        assert!(Notice::from_event(no_payload).is_err());
        let mut wrong_payload = event();
        wrong_payload.r#type = "booking.cancelled".into();
        assert!(Notice::from_event(wrong_payload).is_err());
        let held = Event { r#type: "booking.held".into(), payload: None, ..event() };
        assert_eq!(Notice::from_event(held), Ok(None));
    }
}
