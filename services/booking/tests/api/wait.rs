//! How a PayBooking repeating one in flight waits, and what a booking costs in writes.
//! While this process drives the payment (also after the first call's caller gave
//! up), a repeat waits for the driver to say it is done instead of polling MongoDB;
//! with no local driver (another process drives it, or it awaits recovery after a
//! crash) the repeat polls. Either way it answers the payment's outcome, and no driver
//! is left registered afterwards.

use super::retry::charges_started;
use super::*;

#[tokio::test]
async fn repeats_of_a_pay_in_flight_wait_for_its_local_driver_and_answer_its_outcome() {
    let app = spawn_app_with(|settings| {
        settings.payment.slow_card_delay_ms = 3500;
        settings.booking.pay_wait_ms = 20_000;
    })
    .await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let seats = row("A", 2);
    let held = app.hold(&user_id, &showtime, &seats, "waited-pay").await.unwrap();

    // Once the first pay is charging, four repeats at once, each with a card that
    // would be declined: they must answer the first pay's outcome, not charge.
    let bookings = app.collection("booking", "bookings").await;
    let id = &held.id;
    let repeats = async {
        eventually(Duration::from_secs(10), "the first payment to be charging", || {
            let bookings = bookings.clone();
            async move {
                let stored = bookings.find_one(doc! { "_id": id }).await.unwrap()?;
                (stored.get_str("status").unwrap() == "CHARGING").then_some(())
            }
        })
        .await;
        futures::future::join_all((0..4).map(|_| app.pay(&held, "pm_card_declined"))).await
    };
    let (first, repeats) = tokio::join!(app.pay(&held, "pm_card_slow"), repeats);
    let first = first.unwrap();
    assert_eq!(first.status(), BookingStatus::Confirmed);
    for repeat in repeats {
        let repeat = repeat.expect("a repeat answers the first pay's outcome");
        assert_eq!(
            (&repeat.id, repeat.status(), &repeat.payment_id),
            (&first.id, BookingStatus::Confirmed, &first.payment_id)
        );
        assert_eq!(charges_started(&repeat), 1, "{:?}", repeat.history);
    }
    let payments = app.payments_of(&held.id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(
        (payments[0].get_str("status").unwrap(), payments[0].get_str("payment_method").unwrap()),
        ("SUCCEEDED", "pm_card_slow")
    );

    // The repeats were told by the driver; nobody polled, and nothing is left registered.
    assert!(app.pay_waits.woken() >= 1, "no repeat waited for the driver");
    assert_eq!(app.pay_waits.polls(), 0);
    assert_eq!(app.pay_waits.in_flight(), 0);
}

#[tokio::test]
async fn a_pay_whose_caller_gives_up_still_finishes_and_its_repeat_waits_for_it() {
    // Nothing recovers stalled sagas here: only the abandoned call can finish the payment.
    let app = spawn_app_with(|settings| {
        settings.booking.sweep_interval_ms = 0;
        settings.booking.pay_wait_ms = 20_000;
        settings.payment.slow_card_delay_ms = 3000;
    })
    .await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let held = app.hold(&user_id, &showtime, &row("A", 2), "abandoned-pay").await.unwrap();

    // The caller's deadline passes while the card is being charged, as a gateway's
    // does under load; the booking service drops the call.
    let mut request = tonic::Request::new(PayBookingRequest {
        booking_id: held.id.clone(),
        user_id: user_id.clone(),
        payment_method: "pm_card_slow".into(),
        idempotency_key: Uuid::new_v4().to_string(),
    });
    request.set_timeout(Duration::from_millis(500));
    let gave_up = app.booking.clone().pay_booking(request).await.unwrap_err();
    assert!(matches!(gave_up.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded), "{gave_up:?}");

    // The client retries at once: the payment is still running, and answers it.
    let repeat = app.pay(&held, "pm_card_ok").await.expect("the repeat answers the payment's outcome");
    assert_eq!((&repeat.id, repeat.status()), (&held.id, BookingStatus::Confirmed));
    assert_eq!(charges_started(&repeat), 1, "{:?}", repeat.history);
    let payments = app.payments_of(&held.id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].get_str("_id").unwrap(), repeat.payment_id);
    assert_eq!((app.pay_waits.woken(), app.pay_waits.polls(), app.pay_waits.in_flight()), (1, 0, 0));
}

#[tokio::test]
async fn a_pay_repeated_while_its_step_awaits_recovery_polls_until_another_process_finishes_it() {
    // Only the nodes below sweep, and only the one meant to recover.
    let app = spawn_app_with(|settings| settings.booking.sweep_interval_ms = 0).await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;

    // A process claims the payment and dies: the booking stays CHARGING, driven by nobody.
    let dying = BookingNode::start(&app.settings, &app.shutdown, Some("pay.claimed")).await;
    let held = hold_on(&dying.client, &user_id, &showtime, &row("A", 2), "orphaned").await.unwrap();
    let died = pay_on(&dying.client, &held, "pm_card_ok").await.unwrap_err();
    assert_eq!(died.code, ErrorCode::Internal);
    assert_eq!(dying.pay_waits.in_flight(), 0, "the failed driver left its entry");
    dying.kill().await;
    assert_eq!(app.stored_booking(&held.id).await.get_str("status").unwrap(), "CHARGING");

    // Without a local driver a repeat polls; past its wait it gets CONFLICT, as ever.
    let mut impatient = app.settings.clone();
    impatient.booking.pay_wait_ms = 200;
    let impatient = BookingNode::start(&impatient, &app.shutdown, None).await;
    let refused = pay_on(&impatient.client, &held, "pm_card_ok").await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::Conflict, "{refused}");
    assert_eq!(refused.metadata.get("saga_status").map(String::as_str), Some("CHARGING"), "{refused}");
    assert!(impatient.pay_waits.polls() >= 1);
    assert_eq!(impatient.pay_waits.woken(), 0);

    // A patient repeat polls until a recovering process has finished the payment.
    let mut patient = app.settings.clone();
    patient.booking.pay_wait_ms = 60_000;
    let patient = BookingNode::start(&patient, &app.shutdown, None).await;
    let repeat = tokio::spawn({
        let (client, held) = (patient.client.clone(), held.clone());
        async move { pay_on(&client, &held, "pm_card_ok").await }
    });
    eventually(Duration::from_secs(10), "the repeat to poll", || async {
        (patient.pay_waits.polls() >= 1).then_some(())
    })
    .await;
    let mut recovering = app.settings.clone();
    recovering.booking.sweep_interval_ms = 500;
    let recovering = BookingNode::start(&recovering, &app.shutdown, None).await;

    let repeat = repeat.await.unwrap().expect("the repeat answers the recovered payment's outcome");
    assert_eq!((&repeat.id, repeat.status()), (&held.id, BookingStatus::Confirmed));
    let payments = app.payments_of(&held.id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].get_str("_id").unwrap(), repeat.payment_id);
    assert_eq!(charges_started(&repeat), 1, "{:?}", repeat.history);
    assert_eq!((patient.pay_waits.woken(), patient.pay_waits.in_flight()), (0, 0));
    eventually(Duration::from_secs(10), "the recovering driver to finish", || async {
        (recovering.pay_waits.in_flight() == 0).then_some(())
    })
    .await;
    for node in [impatient, patient, recovering] {
        node.kill().await;
    }
}

#[tokio::test]
async fn no_driver_stays_registered_whichever_way_a_step_ends() {
    let app = spawn_app().await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let (app, user_id, showtime) = (&app, &user_id, &showtime);
    let hold = move |seat: &'static str| async move {
        app.hold(user_id, showtime, &[seat.to_owned()], seat).await.unwrap()
    };

    let declined = app.pay(&hold("A1").await, "pm_card_declined").await.unwrap();
    assert_eq!(declined.status(), BookingStatus::PaymentFailed);
    assert_eq!(app.pay_waits.in_flight(), 0);

    // The processor fails on every retry: the step ends in an error, back in HELD.
    let flaky = hold("A2").await;
    let error = app.pay(&flaky, "pm_card_error").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::PaymentDeclined);
    assert_eq!(app.pay_waits.in_flight(), 0);
    let released = app.cancel(&flaky.id, user_id, false).await.unwrap();
    assert_eq!(released.status(), BookingStatus::Cancelled);
    assert_eq!(app.pay_waits.in_flight(), 0);

    let paid = app.pay(&hold("A3").await, "pm_card_ok").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    let refunded = app.cancel(&paid.id, user_id, false).await.unwrap();
    assert_eq!(refunded.status(), BookingStatus::Cancelled);
    assert_eq!(app.pay_waits.in_flight(), 0);
    assert_eq!(app.pay_waits.polls(), 0);
}

#[tokio::test]
async fn a_paid_booking_is_written_three_times_even_when_its_charge_outlasts_the_lease() {
    let app = spawn_app_with(|settings| {
        settings.booking.sweep_interval_ms = 0;
        settings.payment.slow_card_delay_ms = 1500;
    })
    .await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;

    // Held (insert), claimed for payment, then confirmed with everything the payment
    // step learned (hold extension, charge, seats booked) in one update.
    let held = app.hold(&user_id, &showtime, &row("A", 2), "fast").await.unwrap();
    let paid = app.pay(&held, "pm_card_ok").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    let stored = app.stored_booking(&held.id).await;
    assert_eq!(stored.get_i64("version").unwrap(), 3, "{stored:?}");
    assert!(stored.get_bool("hold_extended").unwrap());
    assert_eq!(stored.get_str("payment_id").unwrap(), paid.payment_id);
    assert_eq!(steps(&paid), PAID_STEPS);

    // A charge longer than the lease: renewing the lease while it runs changes only
    // the lease, never the version, so the step still ends in its one write.
    let mut short_lease = app.settings.clone();
    short_lease.booking.saga_lease_ms = 1000;
    let node = BookingNode::start(&short_lease, &app.shutdown, None).await;
    let held = hold_on(&node.client, &user_id, &showtime, &row("A", 4)[2..], "slow").await.unwrap();
    let paid = pay_on(&node.client, &held, "pm_card_slow").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    let stored = app.stored_booking(&held.id).await;
    assert_eq!(stored.get_i64("version").unwrap(), 3, "{stored:?}");
    assert_eq!(stored.get_str("payment_id").unwrap(), paid.payment_id);
    assert_eq!(steps(&paid), PAID_STEPS);
    // The final write dropped the lease; a renewal, conditional on the step's version,
    // cannot set it again.
    assert_eq!(stored.get("lease_until"), None, "{stored:?}");
    node.kill().await;
}

#[tokio::test]
async fn a_pay_extends_the_hold_only_when_little_of_it_is_left() {
    let app = spawn_app_with(|settings| settings.booking.sweep_interval_ms = 0).await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let expires = |booking: &Booking| booking.expires_at.unwrap().seconds;

    // 8 minutes left, 5 asked for: the charge has time enough, cinema is not asked.
    let mut settings = app.settings.clone();
    settings.booking.extend_hold_below_seconds = 300;
    settings.booking.hold_ttl_seconds = 480;
    let node = BookingNode::start(&settings, &app.shutdown, None).await;
    let held = hold_on(&node.client, &user_id, &showtime, &row("A", 2), "early").await.unwrap();
    let paid = pay_on(&node.client, &held, "pm_card_ok").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    assert!(steps(&paid).contains(&"extend_hold:not_needed".to_owned()), "{:?}", steps(&paid));
    assert_eq!(expires(&paid), expires(&held));
    let stored = app.stored_booking(&held.id).await;
    assert!(!stored.get_bool("hold_extended").unwrap(), "{stored:?}");
    assert_eq!(stored.get_i64("version").unwrap(), 3, "{stored:?}");
    node.kill().await;

    // 4 minutes left, 5 asked for: extended once, by cinema's extension.
    settings.booking.hold_ttl_seconds = 240;
    let node = BookingNode::start(&settings, &app.shutdown, None).await;
    let held = hold_on(&node.client, &user_id, &showtime, &row("A", 4)[2..], "late").await.unwrap();
    let paid = pay_on(&node.client, &held, "pm_card_ok").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    assert_eq!(steps(&paid), PAID_STEPS);
    let extension = i64::from(app.settings.cinema.hold_extension_seconds);
    assert_eq!(expires(&paid), expires(&held) + extension);
    assert!(app.stored_booking(&held.id).await.get_bool("hold_extended").unwrap());
    node.kill().await;
}
