//! Delivery: every rendered message goes out through a `Channel`. The default one
//! records it in MongoDB, the log that ListNotifications reads; with SMTP
//! configured, email is also sent for real before it is recorded (plain text, and
//! when it carries tickets also HTML with each ticket's QR code as an inline PNG).

use std::sync::Arc;

use anyhow::Context;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use marquee_kit::batch::Batcher;

use crate::render::{self, Medium};
use crate::store::{NotificationDoc, NotificationStore};

#[tonic::async_trait]
pub trait Channel: Send + Sync {
    /// Delivers one message. A redelivered event may deliver the same (event,
    /// medium) again after a crash; a channel should make that harmless if it can.
    async fn deliver(&self, message: &NotificationDoc) -> anyhow::Result<()>;
}

/// Records each message as sent; the unique (event, medium) index absorbs repeats.
/// Concurrent deliveries are written together, one insert per batch: the store
/// takes far fewer large inserts than many small ones.
pub struct RecordingChannel {
    records: Batcher<NotificationDoc, (), mongodb::error::Error>,
}

impl RecordingChannel {
    /// Starts the writer task; it ends once the channel is dropped.
    pub fn new(store: NotificationStore) -> Self {
        let records = Batcher::spawn("record notifications", move |docs: Vec<NotificationDoc>| {
            let store = store.clone();
            async move { store.record_many(docs).await }
        });
        Self { records }
    }
}

#[tonic::async_trait]
impl Channel for RecordingChannel {
    async fn deliver(&self, message: &NotificationDoc) -> anyhow::Result<()> {
        // A delivery abandoned meanwhile is retried by its redelivery.
        self.records.call(message.clone()).await
    }
}

/// Sends email over plain SMTP, then hands every message (email or not) to `record`.
/// An email already recorded was already sent, so a redelivery does not resend it;
/// only a crash between sending and recording sends it twice, and then with the
/// same Message-ID, which receiving servers may use to drop the copy.
pub struct SmtpChannel {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    store: NotificationStore,
    record: Arc<dyn Channel>,
}

impl SmtpChannel {
    /// `url` is `smtp://host[:port]` (port 25 if omitted); TLS and authentication
    /// are not supported, this is for a relay on a trusted network.
    pub fn new(
        url: &str,
        from: &str,
        store: NotificationStore,
        record: Arc<dyn Channel>,
    ) -> anyhow::Result<Self> {
        let (host, port) = relay(url)?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port).build();
        let from =
            from.parse().with_context(|| format!("notification.smtp_from {from:?} is not an address"))?;
        Ok(Self { transport, from, store, record })
    }

    async fn send(&self, message: &NotificationDoc) -> anyhow::Result<()> {
        let to: Mailbox = message
            .recipient
            .parse()
            .with_context(|| format!("cannot email notification {}: bad recipient", message.id))?;
        let builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .message_id(Some(format!("<{}.{}@marquee>", message.event_id, message.channel)));
        let email = if message.tickets.is_empty() {
            builder.header(ContentType::TEXT_PLAIN).body(message.body.clone())
        } else {
            builder.multipart(with_qr_codes(message)?)
        }
        .context("cannot build the notification email")?;
        self.transport.send(email).await.context("the SMTP relay did not accept the email")?;
        Ok(())
    }
}

#[tonic::async_trait]
impl Channel for SmtpChannel {
    async fn deliver(&self, message: &NotificationDoc) -> anyhow::Result<()> {
        if message.channel == Medium::Email.as_str()
            && !self.store.is_recorded(&message.event_id, &message.channel).await?
        {
            self.send(message).await?;
        }
        self.record.deliver(message).await
    }
}

/// The body as text, or as HTML showing each ticket's QR code: multipart/alternative
/// of text/plain and multipart/related (the HTML and one image/png per ticket, which
/// it shows by Content-ID).
fn with_qr_codes(message: &NotificationDoc) -> anyhow::Result<MultiPart> {
    let png = ContentType::parse("image/png").context("image/png is a content type")?;
    let html = render::email_html(&message.event_id, &message.body, &message.tickets);
    let mut related = MultiPart::related().singlepart(SinglePart::html(html));
    for ticket in &message.tickets {
        let image = crate::qr::png(&ticket.code)
            .with_context(|| format!("cannot draw the QR code of seat {}", ticket.seat_id))?;
        let content_id = render::qr_content_id(&message.event_id, ticket);
        related = related.singlepart(Attachment::new_inline(content_id).body(image, png.clone()));
    }
    Ok(MultiPart::alternative().singlepart(SinglePart::plain(message.body.clone())).multipart(related))
}

/// The host and port of an `smtp://host[:port]` URL.
fn relay(url: &str) -> anyhow::Result<(&str, u16)> {
    let authority = url
        .strip_prefix("smtp://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.is_empty() && !rest.contains(['/', '@']))
        .with_context(|| format!("notification.smtp_url must look like smtp://host:port, not {url:?}"))?;
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            Ok((host, port.parse().with_context(|| format!("bad port in notification.smtp_url {url:?}"))?))
        }
        None => Ok((authority, 25)),
    }
}

#[cfg(test)]
mod tests {
    use super::relay;

    #[test]
    fn only_plain_smtp_urls_name_a_relay() {
        assert_eq!(relay("smtp://127.0.0.1:2525").unwrap(), ("127.0.0.1", 2525));
        assert_eq!(relay("smtp://mail.example/").unwrap(), ("mail.example", 25));
        for refused in ["smtps://mail.example", "smtp://", "smtp://user:pw@mail.example", "smtp://h:port"] {
            assert!(relay(refused).is_err(), "{refused}");
        }
    }
}
