//! A rush: 256 concurrent clients through the booking gRPC API, on 10 hot seats and
//! 1,000 other seats of one showtime. Checked in PostgreSQL (showtime_seats) against
//! the booking documents and the payment service's charges.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;

use super::*;

const CLIENTS: usize = 256;

/// Client `n`'s seats: half the clients fight over the 10 hot seats of row A (a
/// pair of them, so holds overlap partially); the others take two seats from rows
/// B..K with some collisions.
fn wanted_seats(n: usize) -> Vec<String> {
    if n.is_multiple_of(2) {
        let first = n / 2 % 10;
        let second = (first + 1 + n / 20) % 10;
        if first == second {
            vec![format!("A{}", first + 1)]
        } else {
            vec![format!("A{}", first + 1), format!("A{}", second + 1)]
        }
    } else {
        let seat = |k: usize| format!("{}{}", char::from(b'B' + (k / 100) as u8), k % 100 + 1);
        let first = n * 7 % 1000;
        let second = (first + 1 + n % 3) % 1000;
        vec![seat(first), seat(second)]
    }
}

/// Holds as a client told to come back does: a SERVICE_BUSY refusal (a hold cinema
/// did not answer in time, on a machine slowed by the rush, made no booking) is
/// repeated with the same key after its `retry_after`, a few times.
async fn hold_as_told(
    app: &TestApp,
    user_id: &str,
    showtime: &str,
    seats: &[String],
) -> Result<Booking, ApiError> {
    let mut attempt = 1;
    loop {
        match app.hold(user_id, showtime, seats, "rush").await {
            Err(busy) if busy.code == ErrorCode::ServiceBusy && attempt < 5 => {
                let pause = busy.retry_after_seconds().expect("SERVICE_BUSY says when to come back");
                tokio::time::sleep(Duration::from_secs(pause)).await;
                attempt += 1;
            }
            answer => return answer,
        }
    }
}

#[tokio::test]
async fn a_rush_of_256_clients_never_books_a_seat_twice_and_charges_each_confirmed_booking_once() {
    let app = spawn_app().await;
    let mut rows = vec![("A", 10)];
    rows.extend(["B", "C", "D", "E", "F", "G", "H", "I", "J", "K"].map(|label| (label, 100)));
    let showtime = app.create_showtime(chrono::Duration::hours(48), &rows).await;
    let users: Vec<String> =
        futures::stream::iter(0..CLIENTS).map(|_| app.register()).buffer_unordered(32).collect().await;

    let started = std::time::Instant::now();
    let outcomes = futures::future::join_all(users.iter().enumerate().map(|(n, user_id)| {
        let (app, showtime) = (&app, &showtime);
        async move {
            let seats = wanted_seats(n);
            let held = hold_as_told(app, user_id, showtime, &seats).await?;
            // Every fifth client's card is declined.
            let method = if n % 5 == 0 { "pm_card_declined" } else { "pm_card_ok" };
            app.pay(&held, method).await
        }
    }))
    .await;
    let elapsed = started.elapsed();

    let mut confirmed = 0;
    for outcome in &outcomes {
        match outcome {
            Ok(booking) => {
                assert!(
                    matches!(booking.status(), BookingStatus::Confirmed | BookingStatus::PaymentFailed),
                    "{booking:?}"
                );
                confirmed += usize::from(booking.status() == BookingStatus::Confirmed);
            }
            Err(error) => assert_eq!(error.code, ErrorCode::SeatUnavailable, "{error}"),
        }
    }
    assert!(confirmed >= 10, "the hot seats and the others sell: {confirmed} confirmed");
    println!("{CLIENTS} clients: {confirmed} confirmed in {elapsed:?}");

    // The booking documents of this showtime, by id.
    let bookings: Vec<mongodb::bson::Document> = app
        .collection("booking", "bookings")
        .await
        .find(doc! { "showtime_id": &showtime })
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let status_of: HashMap<String, String> = bookings
        .iter()
        .map(|b| (b.get_str("_id").unwrap().to_owned(), b.get_str("status").unwrap().to_owned()))
        .collect();
    let seats_of = |b: &mongodb::bson::Document| -> Vec<String> {
        b.get_array("seats")
            .unwrap()
            .iter()
            .map(|s| s.as_document().unwrap().get_str("seat_id").unwrap().to_owned())
            .collect()
    };

    // No seat is in two confirmed bookings.
    let mut sold = HashSet::new();
    for booking in bookings.iter().filter(|b| b.get_str("status").unwrap() == "CONFIRMED") {
        for seat in seats_of(booking) {
            assert!(sold.insert(seat.clone()), "seat {seat} confirmed twice");
        }
    }
    assert_eq!(
        sold.len(),
        bookings
            .iter()
            .filter(|b| b.get_str("status").unwrap() == "CONFIRMED")
            .map(|b| seats_of(b).len())
            .sum::<usize>()
    );

    // PostgreSQL agrees: every booked seat belongs to a CONFIRMED booking that lists
    // it, every seat of a CONFIRMED booking is booked by it, and no seat is held or
    // booked by a booking whose payment failed.
    let pg = app.pg().await;
    let taken: Vec<(String, String, Option<Uuid>)> = sqlx::query_as(
        "SELECT seat_id, status, booking_id FROM showtime_seats
          WHERE showtime_id = $1::uuid AND status IN ('held', 'booked')",
    )
    .bind(&showtime)
    .fetch_all(&pg)
    .await
    .unwrap();
    let booked: HashMap<String, String> = taken
        .iter()
        .filter(|(_, status, _)| status == "booked")
        .map(|(seat, _, holder)| (seat.clone(), holder.unwrap().to_string()))
        .collect();
    for (seat, holder) in &booked {
        assert_eq!(
            status_of.get(holder).map(String::as_str),
            Some("CONFIRMED"),
            "seat {seat} booked by {holder}"
        );
    }
    assert_eq!(booked.keys().cloned().collect::<HashSet<_>>(), sold);
    for booking in &bookings {
        let id = booking.get_str("_id").unwrap();
        if booking.get_str("status").unwrap() == "CONFIRMED" {
            assert!(
                seats_of(booking).iter().all(|seat| booked.get(seat).map(String::as_str) == Some(id)),
                "{id}"
            );
        }
        if booking.get_str("status").unwrap() == "PAYMENT_FAILED" {
            assert!(
                taken.iter().all(|(_, _, holder)| holder.map(|h| h.to_string()).as_deref() != Some(id)),
                "{id}"
            );
        }
    }

    // Charges: one successful charge per CONFIRMED booking, none for a failed one.
    let payments: Vec<mongodb::bson::Document> =
        app.collection("payment", "payments").await.find(doc! {}).await.unwrap().try_collect().await.unwrap();
    let mut succeeded: HashMap<String, usize> = HashMap::new();
    for payment in &payments {
        if payment.get_str("status").unwrap() == "SUCCEEDED" {
            *succeeded.entry(payment.get_str("booking_id").unwrap().to_owned()).or_default() += 1;
        }
    }
    for (id, status) in &status_of {
        let charges = succeeded.get(id).copied().unwrap_or(0);
        match status.as_str() {
            "CONFIRMED" => assert_eq!(charges, 1, "{id}"),
            _ => assert_eq!(charges, 0, "{id} is {status}"),
        }
    }
}

/// The lookups and inserts of concurrent holds go out in batches: each hold must still
/// get its own answer, and a refused hold must keep no seat and count against no limit.
#[tokio::test]
async fn concurrent_holds_sharing_batches_each_get_their_own_answer() {
    const USERS: usize = 48;
    let app = spawn_app().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 1), ("B", 50), ("C", 50)]).await;
    let users: Vec<String> =
        futures::stream::iter(0..USERS).map(|_| app.register()).buffer_unordered(16).collect().await;
    let hot = vec!["A1".to_owned()];

    // Every user asks twice at once for the one hot seat, under the same key.
    let answers = futures::future::join_all(users.iter().flat_map(|user| {
        let (app, showtime, hot) = (&app, &showtime, &hot);
        [0, 1].map(move |_| async move { (user.clone(), app.hold(user, showtime, hot, "hot").await) })
    }))
    .await;
    let won: Vec<&(String, Result<Booking, ApiError>)> = answers.iter().filter(|(_, a)| a.is_ok()).collect();
    assert_eq!(won.len(), 2, "one user's hold and its repeat win: {answers:?}");
    let winner = won[0].0.clone();
    let hot_booking = won[0].1.as_ref().unwrap();
    assert!(won.iter().all(|(user, a)| *user == winner && a.as_ref().unwrap().id == hot_booking.id));
    assert_eq!(hot_booking.user_id, winner);
    for (_, refused) in answers.iter().filter_map(|(user, a)| a.as_ref().err().map(|e| (user, e))) {
        assert_eq!(refused.code, ErrorCode::SeatUnavailable, "{refused:?}");
        assert_eq!(refused.meta_list("seat_ids"), ["A1"]);
    }

    // Refused holds count against no limit: every loser may still hold two bookings
    // (the limit), the winner only one more. Then the same requests again answer the
    // same bookings.
    let first = hold_two_each(&app, &showtime, &users).await;
    for ((user, key), answer) in &first {
        if *user == winner {
            continue;
        }
        assert!(answer.is_ok(), "{user} {key}: {answer:?}");
    }
    let winner_held = ["b", "c"].iter().filter(|key| first[&(winner.clone(), **key)].is_ok()).count();
    assert_eq!(winner_held, 1, "{first:?}");
    let again = hold_two_each(&app, &showtime, &users).await;
    for (held, answer) in &first {
        match answer {
            Ok(id) => assert_eq!(again[held].as_ref().ok(), Some(id), "{held:?}"),
            Err(refused) => assert_eq!(refused.code, ErrorCode::Conflict, "{held:?}: {refused:?}"),
        }
    }

    let bookings = app.collection("booking", "bookings").await;
    let stored = bookings.count_documents(doc! { "showtime_id": &showtime }).await.unwrap();
    assert_eq!(stored, 1 + 2 * (USERS as u64 - 1) + 1);
    // Every booking holds one seat; no refused hold kept one.
    let states = app.seat_states(&showtime).await;
    let held = states.values().filter(|state| **state == SeatState::Held).count();
    assert_eq!(held as u64, stored, "{states:?}");
}

/// User `n` holds seat B{n+1} under key "b" and C{n+1} under key "c", all users at once:
/// each answer (its booking id) by user and key.
async fn hold_two_each(
    app: &TestApp,
    showtime: &str,
    users: &[String],
) -> HashMap<(String, &'static str), Result<String, ApiError>> {
    let holds = users.iter().enumerate().flat_map(|(n, user)| {
        [("B", "b"), ("C", "c")].map(move |(row, key)| async move {
            let seat = vec![format!("{row}{}", n + 1)];
            ((user.clone(), key), app.hold(user, showtime, &seat, key).await.map(|b| b.id))
        })
    });
    futures::future::join_all(holds).await.into_iter().collect()
}
