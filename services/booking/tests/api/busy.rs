//! Saga steps run on tasks of their own that outlive their callers, so they are
//! bounded: with every slot taken, another request is refused at once with
//! SERVICE_BUSY and changes nothing.

use super::*;

#[tokio::test]
async fn with_every_step_slot_taken_a_hold_is_refused_at_once_and_changes_nothing() {
    let slow_charge = Duration::from_millis(2000);
    let app = spawn_app_with(|settings| {
        settings.payment.slow_card_delay_ms = 2000;
        settings.booking.max_in_flight_steps = 1;
    })
    .await;
    let (payer, other) = (app.register().await, app.register().await);
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 6)]).await;
    let held = app.hold(&payer, &showtime, &row("A", 2), "paying").await.unwrap();
    let wanted = row("A", 6)[4..].to_vec();

    // The slow payment takes the only slot; a hold meanwhile finds none.
    let bookings = app.collection("booking", "bookings").await;
    let held_id = held.id.clone();
    let refused = async {
        eventually(Duration::from_secs(10), "the payment to be charging", || {
            let (bookings, id) = (bookings.clone(), held_id.clone());
            async move {
                let stored = bookings.find_one(doc! { "_id": &id }).await.unwrap()?;
                (stored.get_str("status").unwrap() == "CHARGING").then_some(())
            }
        })
        .await;
        let asked = tokio::time::Instant::now();
        let answer = app.hold(&other, &showtime, &wanted, "refused").await;
        (answer, asked.elapsed())
    };
    let (paid, (refused, waited)) = tokio::join!(app.pay(&held, "pm_card_slow"), refused);

    let error = refused.expect_err("no slot is free while the slow charge runs");
    assert_eq!(error.code, ErrorCode::ServiceBusy, "{error:?}");
    assert_eq!(error.retry_after_seconds(), Some(1));
    assert!(waited < slow_charge / 2, "refused at once, not after waiting for the slot: {waited:?}");
    assert_eq!(paid.unwrap().status(), BookingStatus::Confirmed);

    // The refusal wrote nothing: no booking, the seats still free.
    assert_eq!(bookings.count_documents(doc! { "user_id": &other }).await.unwrap(), 0);
    let states = app.seat_states(&showtime).await;
    assert!(wanted.iter().all(|s| states[s] == SeatState::Available), "{states:?}");

    // With the slot free again, the same request goes through.
    let retried = app.hold(&other, &showtime, &wanted, "refused").await.unwrap();
    assert_eq!(retried.status(), BookingStatus::Held);
}
