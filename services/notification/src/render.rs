//! The text of the notifications, rendered from the templates in `templates/`
//! (compiled in): `{{name}}` placeholders; an email template's first line is
//! `Subject: …`. Also the HTML version of an email carrying tickets, which shows each
//! ticket's QR code (`email_html`).

use anyhow::Context;

use crate::domain::{Kind, Money, Notice, TicketCode};

/// How a message reaches the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    Email,
    Sms,
}

impl Medium {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
        }
    }
}

#[derive(Debug)]
pub struct Message {
    /// Empty for SMS.
    pub subject: String,
    pub body: String,
}

/// The showtime an event is about, as the customer reads it.
#[derive(Debug, Clone)]
pub struct Showing {
    pub movie: String,
    pub cinema: String,
    /// Already in the cinema's time zone.
    pub starts_at: String,
}

impl Showing {
    /// What a message says when the showtime cannot be looked up (the cinema service
    /// stayed down past the retry budget, or the showtime is gone): a confirmation
    /// with the seats, the total and the booking id, pointing to the booking for the
    /// rest, beats no confirmation at all.
    pub fn unknown() -> Self {
        Self {
            movie: "your film".to_owned(),
            cinema: "the cinema".to_owned(),
            starts_at: "the time shown in your booking".to_owned(),
        }
    }
}

/// A confirmation's tickets, as far as the ticket service had them.
#[derive(Debug, Clone)]
pub enum Tickets {
    /// One per seat, in the booking's seat order; revoked ones (the booking was
    /// cancelled meanwhile) left out.
    Issued(Vec<TicketCode>),
    /// Not issued within the retry budget (or the ticket service stayed down): the
    /// message says where they will be, as it does for a showtime it could not look up.
    Pending,
}

impl Tickets {
    /// The codes a message carries (none while pending).
    pub fn codes(&self) -> &[TicketCode] {
        match self {
            Self::Issued(codes) => codes,
            Self::Pending => &[],
        }
    }

    /// The email lists every seat's code; the SMS only says how many were issued and
    /// where their QR codes are: a code is 170-odd characters (two SMS segments each),
    /// and no door scanner reads a code off a text message.
    fn text(&self, medium: Medium, booking: &str) -> String {
        match (self.codes(), medium) {
            ([], Medium::Email) => format!(
                "Your tickets (a QR code per seat, to show at the door) were not ready when this \
                 email was sent: you will find them with your booking {booking}."
            ),
            ([], Medium::Sms) => "Tickets: with your booking once issued.".to_owned(),
            (codes, Medium::Email) => {
                let mut text = "Your tickets, one per seat: show each QR code at the door. The line \
                                under each seat is its ticket code, which the QR code holds."
                    .to_owned();
                for ticket in codes {
                    text.push_str(&format!("\n\nSeat {}\n{}", ticket.seat_id, ticket.code));
                }
                text
            }
            ([_], Medium::Sms) => {
                "1 ticket issued: show its QR code from your email or booking at the door.".to_owned()
            }
            (codes, Medium::Sms) => format!(
                "{} tickets issued: show their QR codes from your email or booking at the door.",
                codes.len()
            ),
        }
    }
}

fn template(kind: &Kind, medium: Medium) -> &'static str {
    use Medium::{Email, Sms};
    match (kind, medium) {
        (Kind::BookingConfirmed { .. }, Email) => include_str!("../templates/booking_confirmed.email.txt"),
        (Kind::BookingConfirmed { .. }, Sms) => include_str!("../templates/booking_confirmed.sms.txt"),
        (Kind::BookingCancelled { .. }, Email) => include_str!("../templates/booking_cancelled.email.txt"),
        (Kind::BookingCancelled { .. }, Sms) => include_str!("../templates/booking_cancelled.sms.txt"),
        (Kind::BookingExpired { .. }, Email) => include_str!("../templates/booking_expired.email.txt"),
        (Kind::BookingExpired { .. }, Sms) => include_str!("../templates/booking_expired.sms.txt"),
        (Kind::BookingPaymentFailed { .. }, Email) => {
            include_str!("../templates/booking_payment_failed.email.txt")
        }
        (Kind::BookingPaymentFailed { .. }, Sms) => {
            include_str!("../templates/booking_payment_failed.sms.txt")
        }
        (Kind::PaymentRefunded { .. }, Email) => include_str!("../templates/payment_refunded.email.txt"),
        (Kind::PaymentRefunded { .. }, Sms) => include_str!("../templates/payment_refunded.sms.txt"),
    }
}

fn variables(
    notice: &Notice,
    name: &str,
    showing: Option<&Showing>,
    tickets: Option<&Tickets>,
    medium: Medium,
) -> Vec<(&'static str, String)> {
    let booking = notice.booking_id.to_string();
    let mut vars = vec![("name", name.to_owned()), ("booking", booking.clone())];
    if let Some(showing) = showing {
        vars.push(("movie", showing.movie.clone()));
        vars.push(("cinema", showing.cinema.clone()));
        vars.push(("starts_at", showing.starts_at.clone()));
    }
    match &notice.kind {
        Kind::BookingConfirmed { seat_ids, total, .. } => {
            vars.push(("seats", seat_ids.join(", ")));
            vars.push(("total", total.to_string()));
            vars.push(("tickets", tickets.unwrap_or(&Tickets::Pending).text(medium, &booking)));
        }
        Kind::BookingCancelled { seat_ids, refund, .. } => {
            vars.push(("seats", seat_ids.join(", ")));
            let refund = refund.as_ref().map_or_else(|| "nothing was charged".to_owned(), Money::to_string);
            vars.push(("refund", refund));
        }
        Kind::BookingExpired { seat_ids, .. } => vars.push(("seats", seat_ids.join(", "))),
        Kind::BookingPaymentFailed { reason, .. } => vars.push(("reason", reason.clone())),
        Kind::PaymentRefunded { amount, reason } => {
            vars.push(("amount", amount.to_string()));
            vars.push(("reason", reason.clone()));
        }
    }
    vars
}

/// Replaces every `{{name}}`; a placeholder without a value is an error, never
/// left in the text.
fn fill(template: &str, vars: &[(&str, String)]) -> anyhow::Result<String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").context("a template has an unclosed placeholder")?;
        let name = after[..end].trim();
        let value = vars
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
            .with_context(|| format!("no value for the template placeholder {name:?}"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `tickets` only matters for a confirmation (none there means pending).
pub fn render(
    notice: &Notice,
    name: &str,
    showing: Option<&Showing>,
    tickets: Option<&Tickets>,
    medium: Medium,
) -> anyhow::Result<Message> {
    let text = fill(template(&notice.kind, medium), &variables(notice, name, showing, tickets, medium))?;
    Ok(match medium {
        Medium::Email => {
            let (subject, body) = text
                .strip_prefix("Subject: ")
                .and_then(|t| t.split_once('\n'))
                .context("an email template does not start with a Subject line")?;
            Message { subject: subject.trim().to_owned(), body: body.trim_start_matches('\n').to_owned() }
        }
        Medium::Sms => Message { subject: String::new(), body: text.trim().to_owned() },
    })
}

/// The `Content-ID` of the QR image of `ticket` in the email of `event_id`, which the
/// HTML refers to as `cid:…`.
pub fn qr_content_id(event_id: &str, ticket: &TicketCode) -> String {
    format!("ticket-{}.{event_id}@marquee", ticket.seat_id)
}

/// The HTML version of an email body carrying tickets: the same text, with each
/// ticket code's line preceded by its QR code (the inline image `qr_content_id`).
pub fn email_html(event_id: &str, body: &str, tickets: &[TicketCode]) -> String {
    let mut html =
        String::from("<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif; line-height: 1.4\">\n");
    for paragraph in body.split("\n\n") {
        html.push_str("<p>");
        for (i, line) in paragraph.lines().enumerate() {
            if i > 0 {
                html.push_str("<br>\n");
            }
            match tickets.iter().find(|ticket| ticket.code == line) {
                Some(ticket) => html.push_str(&format!(
                    "<img src=\"cid:{}\" alt=\"QR code of the ticket for seat {}\"><br>\n\
                     <code style=\"word-break: break-all; font-size: 11px\">{}</code>",
                    qr_content_id(event_id, ticket),
                    ticket.seat_id,
                    ticket.code
                )),
                None => html.push_str(&escape(line)),
            }
        }
        html.push_str("</p>\n");
    }
    html.push_str("</body></html>\n");
    html
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use marquee_proto::common::v1::Money;
    use marquee_proto::events::v1::{self as events, Event, event::Payload};
    use uuid::Uuid;

    use super::*;

    fn notice(event_type: &str, payload: Payload) -> Notice {
        let event = Event {
            event_id: Uuid::new_v4().to_string(),
            r#type: event_type.into(),
            occurred_at: None,
            booking_id: Uuid::new_v4().to_string(),
            user_id: Uuid::new_v4().to_string(),
            payload: Some(payload),
        };
        Notice::from_event(event).unwrap().unwrap()
    }

    fn eur(amount_minor: i64) -> Option<Money> {
        Some(Money { amount_minor, currency: "EUR".into() })
    }

    fn showtime() -> String {
        Uuid::new_v4().to_string()
    }

    #[test]
    fn every_template_renders_completely_on_both_media() {
        let seats = vec!["C7".to_owned(), "C8".to_owned()];
        let notices = [
            notice(
                "booking.confirmed",
                Payload::BookingConfirmed(events::BookingConfirmed {
                    showtime_id: showtime(),
                    seat_ids: seats.clone(),
                    total: eur(2500),
                    payment_id: "p".into(),
                }),
            ),
            notice(
                "booking.cancelled",
                Payload::BookingCancelled(events::BookingCancelled {
                    showtime_id: showtime(),
                    seat_ids: seats.clone(),
                    refund: eur(1250),
                }),
            ),
            notice(
                "booking.expired",
                Payload::BookingExpired(events::BookingExpired { showtime_id: showtime(), seat_ids: seats }),
            ),
            notice(
                "booking.payment_failed",
                Payload::BookingPaymentFailed(events::BookingPaymentFailed {
                    showtime_id: showtime(),
                    reason: "card declined".into(),
                }),
            ),
            notice(
                "payment.refunded",
                Payload::PaymentRefunded(events::PaymentRefunded {
                    payment_id: "p".into(),
                    refund_id: "r".into(),
                    amount: eur(990),
                    reason: "booking cancelled".into(),
                }),
            ),
        ];
        let showing = Showing {
            movie: "Dune".into(),
            cinema: "Odeon".into(),
            starts_at: "Sat 21 Nov 2026, 19:30 CET".into(),
        };
        for notice in &notices {
            let showing = notice.kind.showtime_id().map(|_| &showing);
            for medium in [Medium::Email, Medium::Sms] {
                let message = render(notice, "Ada", showing, None, medium).unwrap();
                let text = format!("{}\n{}", message.subject, message.body);
                assert!(!text.contains("{{") && !text.contains("}}"), "{text}");
                assert!(text.contains(&notice.booking_id.to_string()) || medium == Medium::Sms, "{text}");
                assert_eq!(message.subject.is_empty(), medium == Medium::Sms);
            }
        }
        let confirmed = render(&notices[0], "Ada", Some(&showing), None, Medium::Email).unwrap();
        assert_eq!(confirmed.subject, "Your tickets for Dune are confirmed");
        assert!(confirmed.body.contains("C7, C8") && confirmed.body.contains("25.00 EUR"));
        assert!(confirmed.body.contains("Sat 21 Nov 2026, 19:30 CET"));

        // A hold cancelled before it was paid: nothing to refund, and the message says so.
        let unpaid = notice(
            "booking.cancelled",
            Payload::BookingCancelled(events::BookingCancelled {
                showtime_id: showtime(),
                seat_ids: vec!["C7".to_owned()],
                refund: None,
            }),
        );
        let cancelled = render(&unpaid, "Ada", Some(&showing), None, Medium::Sms).unwrap();
        assert!(cancelled.body.contains("Refund: nothing was charged"), "{}", cancelled.body);

        let unknown = Showing::unknown();
        let degraded = render(&notices[0], "Ada", Some(&unknown), None, Medium::Sms).unwrap();
        assert!(degraded.body.contains("C7, C8") && degraded.body.contains("25.00 EUR"), "{}", degraded.body);
        assert!(degraded.body.contains(&notices[0].booking_id.to_string()));
    }

    #[test]
    fn a_confirmation_carries_every_seats_code_by_email_and_a_short_form_by_sms() {
        let seats = vec!["C7".to_owned(), "C8".to_owned()];
        let confirmed = notice(
            "booking.confirmed",
            Payload::BookingConfirmed(events::BookingConfirmed {
                showtime_id: showtime(),
                seat_ids: seats,
                total: eur(2500),
                payment_id: "p".into(),
            }),
        );
        let showing = Some(&Showing::unknown());
        let (c7, c8) = ("A".repeat(171), "B_-9".repeat(43));
        let tickets = Tickets::Issued(vec![
            TicketCode::parse("C7", &c7).unwrap(),
            TicketCode::parse("C8", &c8).unwrap(),
        ]);
        let email = render(&confirmed, "Ada", showing, Some(&tickets), Medium::Email).unwrap();
        assert!(email.body.contains(&format!("Seat C7\n{c7}\n\nSeat C8\n{c8}")), "{}", email.body);
        let sms = render(&confirmed, "Ada", showing, Some(&tickets), Medium::Sms).unwrap();
        assert!(
            sms.body
                .ends_with("2 tickets issued: show their QR codes from your email or booking at the door.")
        );
        assert!(!sms.body.contains(&c7) && !sms.body.contains(&c8), "{}", sms.body);

        let booking = confirmed.booking_id.to_string();
        for pending in [None, Some(&Tickets::Pending), Some(&Tickets::Issued(Vec::new()))] {
            let email = render(&confirmed, "Ada", showing, pending, Medium::Email).unwrap();
            assert!(email.body.contains("were not ready") && email.body.contains(&booking), "{}", email.body);
            assert!(!email.body.contains("Seat C7"), "{}", email.body);
            let sms = render(&confirmed, "Ada", showing, pending, Medium::Sms).unwrap();
            assert!(sms.body.ends_with("Tickets: with your booking once issued."), "{}", sms.body);
        }

        // The HTML version: each code's line gets its QR image; the text is escaped.
        let html =
            email_html("e1", &format!("Hi <Ada> & co\n\nSeat C7\n{c7}\n\nSeat C8\n{c8}"), tickets.codes());
        assert!(html.contains("Hi &lt;Ada&gt; &amp; co"), "{html}");
        for (seat, code) in [("C7", &c7), ("C8", &c8)] {
            let image = format!(
                "<img src=\"cid:ticket-{seat}.e1@marquee\" alt=\"QR code of the ticket for seat {seat}\">"
            );
            assert_eq!(html.matches(&image).count(), 1, "{html}");
            assert!(html.contains(&format!("{image}<br>\n<code")), "{html}");
            assert_eq!(html.matches(code.as_str()).count(), 1, "{html}");
        }
    }

    #[test]
    fn a_missing_value_is_an_error_not_a_gap() {
        assert!(fill("Hi {{name}}, {{nope}}", &[("name", "Ada".into())]).is_err());
        assert!(fill("Hi {{name", &[("name", "Ada".into())]).is_err());
        assert_eq!(fill("Hi {{ name }}!", &[("name", "Ada".into())]).unwrap(), "Hi Ada!");
    }
}
