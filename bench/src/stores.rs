//! What the mesh stored, read back for the scenarios' verification (the flash sale, the
//! chaos suite): the seat table in PostgreSQL, and bookings, payments, notifications
//! and users in MongoDB, as plain structs holding only the fields a check needs.

use anyhow::Context;
use futures::TryStreamExt;
use marquee_e2e::MeshSettings as Settings;
use mongodb::bson::{Document, doc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sqlx::Connection;
use uuid::Uuid;

/// Booking statuses of a saga between two steps: none may be left once the mesh is quiet.
pub const IN_FLIGHT: [&str; 4] = ["CHARGING", "CONFIRMING", "REFUNDING", "CANCELLING"];

/// Booking statuses no saga step leaves.
pub const TERMINAL: [&str; 5] = ["CONFIRMED", "PAYMENT_FAILED", "FAILED", "EXPIRED", "CANCELLED"];

/// Payment statuses of a card that was charged (and perhaps refunded since).
pub fn is_charged(status: &str) -> bool {
    matches!(status, "SUCCEEDED" | "PARTIALLY_REFUNDED" | "REFUNDED")
}

/// One element of a document's transactional outbox (`marquee_messaging::outbox`).
#[derive(Debug, Clone, Deserialize)]
pub struct OutboxEntry {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SeatDoc {
    pub seat_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AmountDoc {
    pub amount_minor: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StepDoc {
    pub step: String,
}

/// A booking as the booking service stored it.
#[derive(Debug, Clone, Deserialize)]
pub struct Booking {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub showtime_id: String,
    pub status: String,
    pub seats: Vec<SeatDoc>,
    pub total: AmountDoc,
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
    #[serde(default)]
    pub unsent_events: i64,
    /// The saga's history (`step`, `outcome`, `at`).
    #[serde(default)]
    pub saga: Vec<StepDoc>,
}

impl Booking {
    pub fn seat_ids(&self) -> impl Iterator<Item = &str> {
        self.seats.iter().map(|s| s.seat_id.as_str())
    }

    /// Whether crash recovery resumed one of its steps.
    pub fn was_recovered(&self) -> bool {
        self.saga.iter().any(|s| s.step == "recover")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct AttemptDoc {
    pub outcome: String,
}

/// A payment as the payment service stored it.
#[derive(Debug, Clone, Deserialize)]
pub struct Payment {
    #[serde(rename = "_id")]
    pub id: String,
    pub booking_id: String,
    #[serde(default)]
    pub user_id: Option<String>,
    pub status: String,
    pub amount_minor: i64,
    /// Processor calls; `approved` ones took money.
    #[serde(default)]
    pub attempts: Vec<AttemptDoc>,
    #[serde(default)]
    pub outbox: Vec<OutboxEntry>,
    #[serde(default)]
    pub unsent_events: i64,
}

impl Payment {
    pub fn approved_attempts(&self) -> usize {
        self.attempts.iter().filter(|a| a.outcome == "approved").count()
    }
}

/// A ticket, as the ticket service stored it (one per booking and seat).
#[derive(Debug, Clone, Deserialize)]
pub struct Ticket {
    pub booking_id: String,
    pub seat_id: String,
}

/// A recorded notification (one per event and channel).
#[derive(Debug, Clone, Deserialize)]
pub struct Notification {
    pub event_id: String,
    pub event_type: String,
    pub booking_id: String,
    pub channel: String,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct NotifyDoc {
    pub email: bool,
    pub sms: bool,
}

impl Default for NotifyDoc {
    /// Accounts stored before preferences existed are notified by email.
    fn default() -> Self {
        Self { email: true, sms: false }
    }
}

/// An account as the user service stored it: where it wants to be notified.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    #[serde(rename = "_id")]
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub notify: NotifyDoc,
}

impl User {
    /// The channels a notification about this user goes out on, as the notification
    /// service chooses them (`directory::Directory::contact`): a preference counts
    /// only with an address to send to.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut channels = Vec::new();
        if self.notify.email && !self.email.is_empty() {
            channels.push("email");
        }
        if self.notify.sms && self.phone.as_deref().is_some_and(|p| !p.is_empty()) {
            channels.push("sms");
        }
        channels
    }
}

/// A seat of a showtime that is not plainly available.
#[derive(Debug, Clone)]
pub struct TakenSeat {
    pub seat_id: String,
    /// `held`, `booked` or `blocked`.
    pub status: String,
    pub booking_id: Option<String>,
    /// A hold whose expiry has passed: free for anyone, however it still reads.
    pub lapsed: bool,
}

/// The mesh's stores, named by the settings its processes run with.
pub struct Stores {
    mongo: mongodb::Client,
    settings: Settings,
}

impl Stores {
    pub async fn connect(settings: &Settings) -> anyhow::Result<Self> {
        let mongo = mongodb::Client::with_uri_str(settings.mongo.url.expose())
            .await
            .context("cannot reach MongoDB")?;
        Ok(Self { mongo, settings: settings.clone() })
    }

    async fn read<T>(&self, service: &str, collection: &str, filter: Document) -> anyhow::Result<Vec<T>>
    where
        T: DeserializeOwned + Send + Sync,
    {
        self.mongo
            .database(&self.settings.mongo.database_name(service))
            .collection::<T>(collection)
            .find(filter)
            .await
            .with_context(|| format!("cannot query {service}.{collection}"))?
            .try_collect()
            .await
            .with_context(|| format!("cannot read {service}.{collection}"))
    }

    /// Bookings matching `filter` (e.g. `doc! { "showtime_id": id }`).
    pub async fn bookings(&self, filter: Document) -> anyhow::Result<Vec<Booking>> {
        self.read("booking", "bookings", filter).await
    }

    pub async fn payments(&self, filter: Document) -> anyhow::Result<Vec<Payment>> {
        self.read("payment", "payments", filter).await
    }

    pub async fn notifications(&self, filter: Document) -> anyhow::Result<Vec<Notification>> {
        self.read("notification", "notifications", filter).await
    }

    pub async fn tickets(&self, filter: Document) -> anyhow::Result<Vec<Ticket>> {
        self.read("ticket", "tickets", filter).await
    }

    pub async fn users(&self) -> anyhow::Result<Vec<User>> {
        self.read("user", "users", doc! {}).await
    }

    /// Outbox events of bookings and payments the broker has not confirmed yet.
    pub async fn unsent_events(&self) -> anyhow::Result<u64> {
        // `$gte: 1` as the relays query it (marquee_messaging::outbox says why not `$gt: 0`).
        let unsent = doc! { "unsent_events": { "$gte": 1 } };
        let mut count = 0;
        for (service, collection) in [("booking", "bookings"), ("payment", "payments")] {
            count += self
                .mongo
                .database(&self.settings.mongo.database_name(service))
                .collection::<Document>(collection)
                .count_documents(unsent.clone())
                .await
                .with_context(|| format!("cannot count unsent events of {service}"))?;
        }
        Ok(count)
    }

    /// Every seat of `showtime` that is not `available`, from PostgreSQL.
    pub async fn taken_seats(&self, showtime: &str) -> anyhow::Result<Vec<TakenSeat>> {
        let mut pg = sqlx::PgConnection::connect(self.settings.postgres.url.expose())
            .await
            .context("cannot reach PostgreSQL")?;
        let rows: Vec<(String, String, Option<Uuid>, bool)> = sqlx::query_as(
            "SELECT seat_id, status, booking_id, coalesce(hold_expires_at <= now(), false) \
             FROM showtime_seats WHERE showtime_id = $1::uuid AND status <> 'available'",
        )
        .bind(showtime)
        .fetch_all(&mut pg)
        .await
        .context("cannot read showtime_seats")?;
        Ok(rows
            .into_iter()
            .map(|(seat_id, status, booking, lapsed)| TakenSeat {
                seat_id,
                status,
                booking_id: booking.map(|id| id.to_string()),
                lapsed,
            })
            .collect())
    }
}
