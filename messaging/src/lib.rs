//! Messaging over RabbitMQ, for the services that publish or consume events
//! (booking, payment, notification, ticket): the `[rabbitmq]` section, connecting and
//! confirmed publishing (`rabbit`), and the transactional outbox in MongoDB with its
//! relay to the events exchange and the log of what it published (`outbox`), and the
//! consumers' acknowledgements, sent in batches (`acks`).

pub mod acks;
pub mod outbox;
pub mod rabbit;
#[cfg(feature = "testing")]
pub mod testing;

use marquee_kit::Secret;
use serde::Deserialize;

/// `[rabbitmq]`.
#[derive(Clone, Debug, Deserialize)]
pub struct RabbitSettings {
    pub url: Secret<String>,
    pub exchange: String,
    pub notification_queue: String,
    /// The ticket service's quorum queue (`booking.confirmed`, `booking.cancelled`).
    pub ticket_queue: String,
    pub prefetch: u16,
    /// Test runs set this so abandoned per-test queues delete themselves (`x-expires`).
    #[serde(default)]
    pub queue_expires_ms: Option<u32>,
}
