//! After the load: read the stores (PostgreSQL seats, MongoDB bookings, payments,
//! notifications and users, RabbitMQ queue depths) until the mesh is quiet or the wait
//! is over (`settle`); `checks` then holds that last `Snapshot` to every promise.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use serde_json::{Value, json};

use crate::brokers;
use crate::stats::round1;
use crate::stores::{self, Booking, Notification, Payment, Stores, TakenSeat, User};

/// Events someone is notified about: the ones the notification service's
/// `Notice::from_event` accepts (every other type it acks and skips).
pub const NOTIFIED: [&str; 5] = [
    "booking.confirmed",
    "booking.cancelled",
    "booking.expired",
    "booking.payment_failed",
    "payment.refunded",
];

/// Everything read from the stores at one moment.
pub struct Snapshot {
    pub bookings: Vec<Booking>,
    pub payments: Vec<Payment>,
    pub users: Vec<User>,
    pub notifications: Vec<Notification>,
    pub seats: Vec<TakenSeat>,
    /// Ready and unacknowledged messages of the notification queue, with any queues of
    /// its own where it parks events to retry later (`<queue>.retry...`), and of its
    /// DLQ (None: the queue was not found).
    pub queue: Option<(u64, u64)>,
    pub dead_letters: Option<(u64, u64)>,
}

impl Snapshot {
    pub async fn read(stores: &Stores, showtime: &str, queue: &str) -> anyhow::Result<Self> {
        let depths = brokers::queue_depths().await?;
        let dead_letter_queue = format!("{queue}.dlq");
        let waiting = depths
            .iter()
            .filter(|(name, _)| name.starts_with(&format!("{queue}.")) && **name != dead_letter_queue)
            .fold((0, 0), |(ready, unacked), (_, (r, u))| (ready + r, unacked + u));
        Ok(Self {
            bookings: stores.bookings(doc! {}).await?,
            payments: stores.payments(doc! {}).await?,
            users: stores.users().await?,
            notifications: stores.notifications(doc! {}).await?,
            seats: stores.taken_seats(showtime).await?,
            queue: depths.get(queue).map(|(ready, unacked)| (ready + waiting.0, unacked + waiting.1)),
            dead_letters: depths.get(&dead_letter_queue).copied(),
        })
    }

    pub(super) fn in_flight(&self) -> Vec<String> {
        let bookings = self
            .bookings
            .iter()
            .filter(|b| stores::IN_FLIGHT.contains(&b.status.as_str()))
            .map(|b| format!("{} booking {}", b.id, b.status));
        let payments = self
            .payments
            .iter()
            .filter(|p| p.status == "PROCESSING")
            .map(|p| format!("{} payment {} of booking {}", p.id, p.status, p.booking_id));
        bookings.chain(payments).collect()
    }

    /// Unlapsed holds of a booking that is final, or was never written (its process
    /// died between locking the seats and writing it): the sweeper releases them, the
    /// latter once `booking.abandoned_hold_grace_ms` has passed.
    pub(super) fn orphan_holds(&self) -> Vec<String> {
        let by_id: HashMap<&str, &Booking> = self.bookings.iter().map(|b| (b.id.as_str(), b)).collect();
        self.seats
            .iter()
            .filter(|seat| seat.status == "held" && !seat.lapsed)
            .filter_map(|seat| {
                let booking = seat.booking_id.as_deref()?;
                let status = by_id.get(booking).map_or("MISSING", |b| b.status.as_str());
                (status == "MISSING" || stores::TERMINAL.contains(&status))
                    .then(|| format!("{booking} ({status}) still holds seat {}", seat.seat_id))
            })
            .collect()
    }

    pub(super) fn unsent(&self) -> Vec<String> {
        let bookings =
            self.bookings.iter().filter(|b| b.unsent_events > 0).map(|b| (&b.id, b.unsent_events, "booking"));
        let payments =
            self.payments.iter().filter(|p| p.unsent_events > 0).map(|p| (&p.id, p.unsent_events, "payment"));
        bookings.chain(payments).map(|(id, n, what)| format!("{id} {what} with {n} unsent events")).collect()
    }

    /// Every (event, channel) a notification is owed for, with the booking it is about.
    pub(super) fn owed(&self) -> BTreeMap<(String, &'static str), String> {
        let channels: HashMap<&str, Vec<&'static str>> =
            self.users.iter().map(|u| (u.id.as_str(), u.channels())).collect();
        let owner: HashMap<&str, &str> =
            self.bookings.iter().map(|b| (b.id.as_str(), b.user_id.as_str())).collect();
        let mut owed = BTreeMap::new();
        let booking_events =
            self.bookings.iter().map(|b| (b.id.as_str(), Some(b.user_id.as_str()), &b.outbox));
        let payment_events = self.payments.iter().map(|p| {
            let user = p.user_id.as_deref().or_else(|| owner.get(p.booking_id.as_str()).copied());
            (p.booking_id.as_str(), user, &p.outbox)
        });
        for (booking, user, outbox) in booking_events.chain(payment_events) {
            let chosen = user.and_then(|u| channels.get(u)).map(Vec::as_slice).unwrap_or_default();
            for event in outbox.iter().filter(|e| NOTIFIED.contains(&e.kind.as_str())) {
                for channel in chosen {
                    owed.insert((event.event_id.clone(), *channel), format!("{booking} {}", event.kind));
                }
            }
        }
        owed
    }

    /// Owed notifications not recorded, as "booking event channel" lines.
    pub(super) fn missing_notifications(&self) -> Vec<String> {
        let recorded: HashSet<(&str, &str)> =
            self.notifications.iter().map(|n| (n.event_id.as_str(), n.channel.as_str())).collect();
        self.owed()
            .into_iter()
            .filter(|((event, channel), _)| !recorded.contains(&(event.as_str(), *channel)))
            .map(|((event, channel), about)| format!("{about} event {event} by {channel}: not notified"))
            .collect()
    }
}

/// How quiet the mesh is.
#[derive(Debug, Clone, Default)]
pub struct Quiet {
    pub in_flight: usize,
    pub unsent_events: usize,
    pub missing_notifications: usize,
    /// Ready + unacknowledged in the notification queue.
    pub queued: u64,
    pub orphan_holds: usize,
}

impl Quiet {
    fn of(snapshot: &Snapshot) -> Self {
        Self {
            in_flight: snapshot.in_flight().len(),
            unsent_events: snapshot.unsent().len(),
            missing_notifications: snapshot.missing_notifications().len(),
            queued: snapshot.queue.map_or(0, |(ready, unacked)| ready + unacked),
            orphan_holds: snapshot.orphan_holds().len(),
        }
    }

    fn is_quiet(&self) -> bool {
        self.in_flight == 0
            && self.unsent_events == 0
            && self.missing_notifications == 0
            && self.queued == 0
            && self.orphan_holds == 0
    }

    /// Nothing moves any more, though notifications are missing: they never come.
    /// Orphan holds are not stuck: the sweeper gets to them after the abandoned hold grace.
    fn is_stuck(&self) -> bool {
        self.in_flight == 0 && self.unsent_events == 0 && self.queued == 0 && self.orphan_holds == 0
    }

    pub fn to_json(&self) -> Value {
        json!({
            "bookings_or_payments_in_flight": self.in_flight,
            "documents_with_unsent_events": self.unsent_events,
            "notifications_missing": self.missing_notifications,
            "notification_queue_messages": self.queued,
            "orphan_holds": self.orphan_holds,
        })
    }
}

pub struct Settled {
    pub seconds: f64,
    pub quiet: bool,
    pub last: Quiet,
    pub snapshot: Snapshot,
}

/// With nothing in flight and the queue empty, how long missing notifications are
/// waited for before they count as lost.
const STUCK_PATIENCE: Duration = Duration::from_secs(15);

/// Reads the stores every second until the mesh is quiet (nothing in flight, outboxes
/// sent, every owed notification recorded, the queue empty), stuck, or `patience` is
/// over; returns the last snapshot.
pub async fn settle(
    stores: &Stores,
    showtime: &str,
    queue: &str,
    patience: Duration,
) -> anyhow::Result<Settled> {
    let started = Instant::now();
    let mut stuck_since: Option<Instant> = None;
    loop {
        let snapshot = Snapshot::read(stores, showtime, queue).await?;
        let last = Quiet::of(&snapshot);
        let quiet = last.is_quiet();
        stuck_since = if last.is_stuck() { stuck_since.or(Some(Instant::now())) } else { None };
        let stuck = stuck_since.is_some_and(|since| since.elapsed() >= STUCK_PATIENCE);
        if quiet || stuck || started.elapsed() >= patience {
            return Ok(Settled { seconds: round1(started.elapsed().as_secs_f64()), quiet, last, snapshot });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
