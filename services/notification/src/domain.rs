//! Validated input: list requests from gRPC and events from RabbitMQ are parsed into
//! these types first; everything deeper trusts them.

use std::fmt;

use marquee_proto::events::v1::{Event, event::Payload};
use uuid::Uuid;

/// Why some input was refused; the message is safe to show the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

fn invalid(message: impl Into<String>) -> InvalidInput {
    InvalidInput(message.into())
}

fn uuid(raw: &str, what: &str) -> Result<Uuid, InvalidInput> {
    Uuid::parse_str(raw.trim()).map_err(|_| invalid(format!("{what} must be a UUID")))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserId(Uuid);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        uuid(raw, "user_id").map(Self)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
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
}

/// A `booking.confirmed` event, checked field by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingConfirmed {
    pub event_id: Uuid,
    pub event_type: String,
    pub user_id: UserId,
    pub booking_id: Uuid,
    pub showtime_id: Uuid,
    pub seat_ids: Vec<String>,
    pub total_minor: i64,
    pub currency: String,
    pub payment_id: String,
}

impl BookingConfirmed {
    pub const TYPE: &str = "booking.confirmed";

    pub fn from_event(event: Event) -> Result<Self, InvalidInput> {
        let Some(Payload::BookingConfirmed(payload)) = event.payload else {
            return Err(invalid(format!(
                "event type {:?} carries no booking_confirmed payload",
                event.r#type
            )));
        };
        if event.r#type != Self::TYPE {
            return Err(invalid(format!("unexpected event type {:?}", event.r#type)));
        }
        let total = payload.total.ok_or_else(|| invalid("booking_confirmed has no total"))?;
        if payload.seat_ids.is_empty() {
            return Err(invalid("booking_confirmed lists no seats"));
        }
        Ok(Self {
            event_id: uuid(&event.event_id, "event_id")?,
            event_type: event.r#type,
            user_id: UserId::parse(&event.user_id)?,
            booking_id: uuid(&event.booking_id, "booking_id")?,
            showtime_id: uuid(&payload.showtime_id, "showtime_id")?,
            seat_ids: payload.seat_ids,
            total_minor: total.amount_minor,
            currency: total.currency,
            payment_id: payload.payment_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use marquee_proto::common::v1::Money;
    use marquee_proto::events::v1::BookingConfirmed as Payloaded;

    use super::*;

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
    fn only_well_formed_confirmed_events_parse() {
        assert!(BookingConfirmed::from_event(event()).is_ok());
        let mut bad_id = event();
        bad_id.event_id = "not-a-uuid".into();
        assert!(BookingConfirmed::from_event(bad_id).is_err());
        let mut no_payload = event();
        no_payload.payload = None;
        assert!(BookingConfirmed::from_event(no_payload).is_err());
        let mut wrong_type = event();
        wrong_type.r#type = "booking.held".into();
        assert!(BookingConfirmed::from_event(wrong_type).is_err());
    }
}
