//! An outbox's backlog on `/metrics`, read at scrape time: what an operator pages on
//! when the relay stops (RabbitMQ unreachable, a relay stuck). Every replica of a
//! publisher reads the same outbox, so dashboards and alerts take the `max`.

use chrono::Utc;
use marquee_kit::metrics::{Gauge, Registry};

use super::MongoOutbox;

const UNSENT_DOCUMENTS: &str = "outbox_unsent_documents";
const OLDEST_UNSENT_AGE: &str = "outbox_oldest_unsent_age_seconds";

/// `outbox_unsent_documents{publisher}` and `outbox_oldest_unsent_age_seconds{publisher}`.
#[derive(Clone)]
pub struct OutboxGauges {
    unsent_documents: Gauge,
    oldest_unsent_age: Gauge,
}

impl OutboxGauges {
    /// `publisher` names the outbox's service (`booking`, `payment`), as the
    /// notification worker's reconciler does.
    pub fn new(registry: &Registry, publisher: &'static str) -> Self {
        let labels = [("publisher", publisher)];
        Self {
            unsent_documents: registry.gauge(
                UNSENT_DOCUMENTS,
                "Documents of the outbox with events not yet confirmed by RabbitMQ",
                &labels,
            ),
            oldest_unsent_age: registry.gauge(
                OLDEST_UNSENT_AGE,
                "Seconds since the oldest event not yet confirmed by RabbitMQ occurred (0: none)",
                &labels,
            ),
        }
    }

    /// Sets both from the outbox now.
    pub async fn refresh(&self, outbox: &MongoOutbox) -> anyhow::Result<()> {
        let backlog = outbox.backlog().await?;
        self.unsent_documents.set(backlog.documents as f64);
        let age = backlog.oldest_unsent.map_or(0, |at| (Utc::now() - at).num_milliseconds().max(0));
        self.oldest_unsent_age.set(age as f64 / 1000.0);
        Ok(())
    }
}
