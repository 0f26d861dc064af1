//! After the rush: reads the stores the mesh wrote (PostgreSQL `showtime_seats`,
//! MongoDB bookings, payments, notifications and tickets) and counts every broken
//! promise.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use marquee_e2e::MeshSettings as Settings;
use mongodb::bson::doc;
use serde_json::{Value, json};

use super::{Config, Outcome};
use crate::stats::round1;
use crate::stores::{IN_FLIGHT, Stores, is_charged};

/// Broken promises, counted from the stores after the rush.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Seats that more than one confirmed booking claims (as stored, or as told to the
    /// customers).
    pub double_booked_seats: usize,
    /// Bookings charged (a succeeded payment) more than once.
    pub double_charges: usize,
    /// CONFIRMED bookings without any succeeded payment.
    pub uncharged_confirmed: usize,
    /// Succeeded payments of bookings that are not CONFIRMED.
    pub charged_unconfirmed: usize,
    /// Confirmed bookings (client or store) that disagree with the seat table or with
    /// each other: a CONFIRMED booking whose seat is not `booked` for it, a `booked` seat
    /// of no CONFIRMED booking, a client-confirmed booking the store does not have.
    pub store_mismatches: usize,
    /// Holds refused with any code but SEAT_UNAVAILABLE.
    pub wrong_refusals: usize,
    /// CONFIRMED bookings without a `booking.confirmed` notification at the deadline.
    pub lost_notifications: usize,
    /// CONFIRMED bookings with more than one `booking.confirmed` notification.
    pub duplicate_notifications: usize,
    /// Seats of CONFIRMED bookings without a valid ticket once their confirmations were
    /// notified (a confirmation is sent with the codes of tickets already stored).
    pub seats_without_ticket: usize,
    /// Bookings still mid-saga (CHARGING, CONFIRMING, ...) when the deadline passed.
    pub unsettled_sagas: usize,
    pub confirmed_in_store: usize,
    pub booked_seats: usize,
    /// Seconds from the end of the rush until every confirmation was notified (or the
    /// deadline passed).
    pub notification_drain_seconds: f64,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.double_booked_seats == 0
            && self.double_charges == 0
            && self.uncharged_confirmed == 0
            && self.charged_unconfirmed == 0
            && self.store_mismatches == 0
            && self.wrong_refusals == 0
            && self.lost_notifications == 0
            && self.duplicate_notifications == 0
            && self.seats_without_ticket == 0
            && self.unsettled_sagas == 0
    }

    pub fn to_json(&self) -> Value {
        json!({
            "double_booked_seats": self.double_booked_seats,
            "double_charges": self.double_charges,
            "uncharged_confirmed": self.uncharged_confirmed,
            "charged_unconfirmed": self.charged_unconfirmed,
            "store_mismatches": self.store_mismatches,
            "wrong_refusals": self.wrong_refusals,
            "lost_notifications": self.lost_notifications,
            "duplicate_notifications": self.duplicate_notifications,
            "seats_without_ticket": self.seats_without_ticket,
            "unsettled_sagas": self.unsettled_sagas,
            "confirmed_in_store": self.confirmed_in_store,
            "booked_seats": self.booked_seats,
            "notification_drain_seconds": round1(self.notification_drain_seconds),
        })
    }
}

/// Reads the stores the mesh wrote and checks every promise of the flash sale.
pub async fn verify(
    settings: &Settings,
    showtime: &str,
    outcome: &Outcome,
    config: &Config,
) -> anyhow::Result<Verdict> {
    let mut verdict =
        Verdict { wrong_refusals: outcome.wrong_refusals(config.orphan_rule), ..Verdict::default() };

    // MongoDB: the bookings of the showtime, as the booking service stored them, once
    // no saga is mid-step (a payment the customer gave up on may still be confirming).
    let stores = Stores::connect(settings).await?;
    let settling = Instant::now() + config.saga_deadline;
    let bookings = loop {
        let bookings = stores.bookings(doc! { "showtime_id": showtime }).await?;
        verdict.unsettled_sagas = bookings.iter().filter(|b| IN_FLIGHT.contains(&b.status.as_str())).count();
        if verdict.unsettled_sagas == 0 || Instant::now() >= settling {
            break bookings;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // PostgreSQL, after the sagas settled: who holds each taken seat of the showtime.
    let booked: HashMap<String, String> = stores
        .taken_seats(showtime)
        .await?
        .into_iter()
        .filter(|seat| seat.status == "booked")
        .filter_map(|seat| Some((seat.seat_id, seat.booking_id?)))
        .collect();
    verdict.booked_seats = booked.len();
    let confirmed: HashMap<&str, Vec<&str>> = bookings
        .iter()
        .filter(|b| b.status == "CONFIRMED")
        .map(|b| (b.id.as_str(), b.seat_ids().collect()))
        .collect();
    verdict.confirmed_in_store = confirmed.len();

    // Who was told (client) or recorded (store) to own each seat.
    let mut claims: HashMap<&str, HashSet<&str>> = HashMap::new();
    for (id, seats) in &confirmed {
        for seat in seats {
            claims.entry(seat).or_default().insert(id);
        }
    }
    for (id, seat) in &outcome.confirmed {
        claims.entry(seat.as_str()).or_default().insert(id.as_str());
    }
    verdict.double_booked_seats = claims.values().filter(|owners| owners.len() > 1).count();
    let mut mismatches = 0;
    for (id, seats) in &confirmed {
        mismatches += seats.iter().filter(|seat| booked.get(**seat).map(String::as_str) != Some(*id)).count();
    }
    mismatches += booked.values().filter(|id| !confirmed.contains_key(id.as_str())).count();
    mismatches += outcome.confirmed.keys().filter(|id| !confirmed.contains_key(id.as_str())).count();
    verdict.store_mismatches = mismatches;

    // Payments: one succeeded charge per confirmed booking, none for any other.
    let payments = stores.payments(doc! {}).await?;
    let ours: HashSet<&str> = bookings.iter().map(|b| b.id.as_str()).collect();
    let mut charges: HashMap<&str, usize> = HashMap::new();
    for payment in &payments {
        if is_charged(&payment.status) && ours.contains(payment.booking_id.as_str()) {
            *charges.entry(payment.booking_id.as_str()).or_default() += 1;
        }
    }
    verdict.double_charges = charges.values().filter(|&&n| n > 1).count();
    verdict.uncharged_confirmed = confirmed.keys().filter(|id| !charges.contains_key(*id)).count();
    verdict.charged_unconfirmed = charges.keys().filter(|id| !confirmed.contains_key(*id)).count();

    // Notifications: the worker drains RabbitMQ at its own pace; wait for it.
    let waiting = Instant::now();
    let deadline = waiting + config.notification_deadline;
    loop {
        let notes = stores.notifications(doc! { "event_type": "booking.confirmed" }).await?;
        let mut per_booking: HashMap<&str, usize> = HashMap::new();
        for note in &notes {
            *per_booking.entry(note.booking_id.as_str()).or_default() += 1;
        }
        verdict.lost_notifications = confirmed.keys().filter(|id| !per_booking.contains_key(*id)).count();
        verdict.duplicate_notifications = per_booking.values().filter(|&&n| n > 1).count();
        if verdict.lost_notifications == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    verdict.notification_drain_seconds = waiting.elapsed().as_secs_f64();

    // Tickets: one valid ticket per seat of every confirmed booking.
    let ids: Vec<&str> = confirmed.keys().copied().collect();
    let mut valid: HashSet<(String, String)> = HashSet::new();
    for chunk in ids.chunks(500) {
        let tickets = stores.tickets(doc! { "booking_id": { "$in": chunk }, "status": "VALID" }).await?;
        valid.extend(tickets.into_iter().map(|t| (t.booking_id, t.seat_id)));
    }
    verdict.seats_without_ticket = confirmed
        .iter()
        .flat_map(|(id, seats)| seats.iter().map(move |seat| (*id, *seat)))
        .filter(|(id, seat)| !valid.contains(&((*id).to_owned(), (*seat).to_owned())))
        .count();
    Ok(verdict)
}
