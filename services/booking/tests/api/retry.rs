//! A client whose PayBooking timed out (at the gateway) retries it while the first
//! attempt is still running: the repeat waits for that attempt and answers its
//! outcome, within `booking.pay_wait_ms`; past that it still gets CONFLICT.

use super::*;

/// Pays `held` with the slow card, and once that payment is charging (read in the
/// booking's own document), pays it again: the two always overlap.
async fn pay_and_repeat_while_charging(
    app: &TestApp,
    held: &Booking,
) -> (Result<Booking, ApiError>, Result<Booking, ApiError>) {
    let bookings = app.collection("booking", "bookings").await;
    let repeat = async {
        eventually(Duration::from_secs(10), "the first payment to be charging", || {
            let bookings = bookings.clone();
            async move {
                let stored = bookings.find_one(doc! { "_id": &held.id }).await.unwrap()?;
                (stored.get_str("status").unwrap() == "CHARGING").then_some(())
            }
        })
        .await;
        app.pay(held, "pm_card_slow").await
    };
    tokio::join!(app.pay(held, "pm_card_slow"), repeat)
}

/// The saga's "charge started" entries: one per attempt that claimed the booking.
pub(super) fn charges_started(booking: &Booking) -> usize {
    booking.history.iter().filter(|s| s.step == "charge" && s.outcome == "started").count()
}

#[tokio::test]
async fn a_payment_repeated_while_the_first_is_charging_answers_the_same_confirmed_booking() {
    let app = spawn_app_with(|settings| settings.payment.slow_card_delay_ms = 1500).await;
    assert!(app.settings.booking.pay_wait_ms >= 3000, "the repeat must outwait the slow card");
    let user_id = app.register().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let seats = row("A", 2);
    let held = app.hold(&user_id, &showtime, &seats, "retried-pay").await.unwrap();

    let (first, repeat) = pay_and_repeat_while_charging(&app, &held).await;
    let first = first.unwrap();
    let repeat = repeat.expect("the repeat answers the first attempt's outcome, not CONFLICT");
    assert_eq!(first.status(), BookingStatus::Confirmed);
    assert!(!first.payment_id.is_empty());
    assert_eq!(
        (&repeat.id, repeat.status(), &repeat.payment_id),
        (&first.id, BookingStatus::Confirmed, &first.payment_id)
    );
    assert_eq!(charges_started(&repeat), 1, "the repeat started no payment of its own: {:?}", repeat.history);

    // Charged exactly once, and the seats are booked.
    let payments = app.payments_of(&held.id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].get_str("status").unwrap(), "SUCCEEDED");
    assert_eq!(payments[0].get_str("_id").unwrap(), first.payment_id);
    let states = app.seat_states(&showtime).await;
    assert!(seats.iter().all(|s| states[s] == SeatState::Booked), "{states:?}");
    assert_eq!(app.stored_booking(&held.id).await.get_str("status").unwrap(), "CONFIRMED");
}

#[tokio::test]
async fn a_payment_repeated_past_the_wait_gets_conflict_and_a_later_repeat_the_outcome() {
    let app = spawn_app_with(|settings| {
        settings.payment.slow_card_delay_ms = 2500;
        settings.booking.pay_wait_ms = 200;
    })
    .await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let held = app.hold(&user_id, &showtime, &row("A", 1), "impatient-pay").await.unwrap();

    let (first, repeat) = pay_and_repeat_while_charging(&app, &held).await;
    let first = first.unwrap();
    assert_eq!(first.status(), BookingStatus::Confirmed);
    let refused = repeat.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict, "{refused}");
    assert_eq!(
        (
            refused.metadata.get("status").map(String::as_str),
            refused.metadata.get("saga_status").map(String::as_str)
        ),
        (Some("HELD"), Some("CHARGING")),
        "{refused}"
    );

    // Retrying once more, after the first attempt finished, answers its outcome.
    let again = app.pay(&held, "pm_card_slow").await.unwrap();
    assert_eq!(
        (&again.id, again.status(), &again.payment_id),
        (&first.id, BookingStatus::Confirmed, &first.payment_id)
    );
    assert_eq!(charges_started(&again), 1, "{:?}", again.history);
    assert_eq!(app.payments_of(&held.id).await.len(), 1);
}
