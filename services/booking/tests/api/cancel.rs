//! Cancellation, its refund policy, the per-user hold limit and hold expiry.

use marquee_proto::cinema::v1::ConfirmSeatsRequest;

use super::*;

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

#[tokio::test]
async fn cancelling_refunds_by_the_policy_tier_frees_the_seats_and_closes_before_the_show() {
    let app = spawn_app().await;
    let (_connection, mut cancelled_events) = app.subscribe("booking.cancelled").await;
    let (owner, stranger) = (app.register().await, app.register().await);
    // Policy (default config): 100% until 24 h before, 50% after, closed 30 min before.
    let far = app.create_showtime(hours(48), &[("A", 4)]).await;
    let near = app.create_showtime(hours(3), &[("A", 4)]).await;
    let imminent = app.create_showtime(chrono::Duration::minutes(20), &[("A", 4)]).await;

    let mut confirmed = Vec::new();
    for showtime in [&far, &near, &imminent] {
        let held = app.hold(&owner, showtime, &row("A", 2), &format!("k-{showtime}")).await.unwrap();
        confirmed.push(app.pay(&held, "pm_card_ok").await.unwrap());
    }
    let total = confirmed[0].total.clone().unwrap();
    assert_eq!(total.amount_minor, 2500);

    // Only the owner (or an admin) may cancel; anyone else learns nothing.
    let refused = app.cancel(&confirmed[0].id, &stranger, false).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::NotFound);
    assert_eq!(app.get(&confirmed[0].id, &owner).await.unwrap().status(), BookingStatus::Confirmed);

    let full = app.cancel(&confirmed[0].id, &owner, false).await.unwrap();
    let half = app.cancel(&confirmed[1].id, &owner, false).await.unwrap();
    for (booking, refunded, fee) in [(&full, 2500, 0), (&half, 1250, 1250)] {
        assert_eq!(booking.status(), BookingStatus::Cancelled);
        let refund = booking.refund.as_ref().expect("a refund is stated");
        assert_eq!(refund.amount.as_ref().unwrap().amount_minor, refunded);
        assert_eq!(refund.fee.as_ref().unwrap().amount_minor, fee);
        assert!(!refund.refund_id.is_empty());
        // The money went back exactly once, in the payment service's own records.
        let payments = app.payments_of(&booking.id).await;
        assert_eq!(payments.len(), 1);
        assert_eq!(payments[0].get_i64("refunded_minor").unwrap(), refunded);
        assert_eq!(payments[0].get_array("refunds").unwrap().len(), 1);
        let steps: Vec<_> = booking.history.iter().map(|s| (s.step.as_str(), s.outcome.as_str())).collect();
        assert!(
            steps.contains(&("release_seats", "succeeded")) && steps.contains(&("refund", "succeeded")),
            "{steps:?}"
        );
        let event = next_event_for(&mut cancelled_events, &booking.id).await;
        let Some(Payload::BookingCancelled(payload)) = event.payload else {
            panic!("wrong payload: {event:?}")
        };
        assert_eq!(payload.refund.unwrap().amount_minor, refunded);
    }
    for showtime in [&far, &near] {
        let states = app.seat_states(showtime).await;
        assert!(row("A", 2).iter().all(|s| states[s] == SeatState::Available), "{states:?}");
    }
    // Cinema forgot the cancelled booking: a late confirmation cannot take the seats back.
    let late_confirm = app
        .cinema
        .clone()
        .confirm_seats(ConfirmSeatsRequest {
            showtime_id: far.clone(),
            booking_id: full.id.clone(),
            seat_ids: row("A", 2),
        })
        .await
        .unwrap_err();
    assert_eq!(ApiError::from_status(&late_confirm).code, ErrorCode::SeatUnavailable);
    // Cancelling again answers with the outcome and refunds nothing more.
    let again = app.cancel(&full.id, &owner, false).await.unwrap();
    assert_eq!(again.status(), BookingStatus::Cancelled);
    assert_eq!(app.payments_of(&full.id).await[0].get_array("refunds").unwrap().len(), 1);

    // Within the cutoff: refused, nothing changes.
    let late = app.cancel(&confirmed[2].id, &owner, false).await.unwrap_err();
    assert_eq!(late.code, ErrorCode::BadUserInput, "{late}");
    assert!(late.metadata.contains_key("closed_at"));
    assert_eq!(app.get(&confirmed[2].id, &owner).await.unwrap().status(), BookingStatus::Confirmed);
    assert_eq!(app.seat_states(&imminent).await["A1"], SeatState::Booked);
    assert_eq!(app.payments_of(&confirmed[2].id).await[0].get_i64("refunded_minor").unwrap(), 0);
}

#[tokio::test]
async fn an_admin_may_cancel_anyones_hold_and_read_any_booking() {
    let app = spawn_app().await;
    let (owner, admin) = (app.register().await, app.register().await);
    let showtime = app.create_showtime(hours(48), &[("A", 4)]).await;
    let held = app.hold(&owner, &showtime, &row("A", 3), "held").await.unwrap();

    let as_admin = GetBookingRequest { id: held.id.clone(), user_id: admin.clone(), as_admin: true };
    let read = app.booking.clone().get_booking(as_admin).await.unwrap().into_inner();
    assert_eq!(read.user_id, owner);

    let cancelled = app.cancel(&held.id, &admin, true).await.unwrap();
    assert_eq!(cancelled.status(), BookingStatus::Cancelled);
    assert!(cancelled.refund.is_none(), "nothing was paid, nothing is refunded");
    assert_eq!(cancelled.reason, "cancelled by an admin");
    let states = app.seat_states(&showtime).await;
    assert!(row("A", 3).iter().all(|s| states[s] == SeatState::Available), "{states:?}");
    assert!(app.payments_of(&held.id).await.is_empty());
    // A cancelled hold cannot be paid any more.
    let late = app.pay(&held, "pm_card_ok").await.unwrap_err();
    assert_eq!(
        (late.code, late.metadata.get("status").map(String::as_str)),
        (ErrorCode::Conflict, Some("CANCELLED"))
    );
}

#[tokio::test]
async fn concurrent_pay_and_cancel_on_one_booking_let_exactly_one_win() {
    // The slow card keeps a payment in flight long enough that the two always overlap.
    let app = spawn_app_with(|settings| settings.payment.slow_card_delay_ms = 1500).await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(hours(48), &[("A", 10)]).await;

    for round in 1..=4 {
        let seat = vec![format!("A{round}")];
        let held = app.hold(&user_id, &showtime, &seat, &format!("race-{round}")).await.unwrap();
        let (paid, cancelled) =
            tokio::join!(app.pay(&held, "pm_card_slow"), app.cancel(&held.id, &user_id, false));
        let stored = app.stored_booking(&held.id).await;
        let seat_state = app.seat_states(&showtime).await[&seat[0]];
        let succeeded_charges = app
            .payments_of(&held.id)
            .await
            .iter()
            .filter(|p| p.get_str("status").unwrap() == "SUCCEEDED")
            .count();
        match (paid, cancelled) {
            (Ok(paid), Err(lost)) => {
                assert_eq!(paid.status(), BookingStatus::Confirmed);
                assert_eq!(lost.code, ErrorCode::Conflict, "{lost}");
                assert_eq!(lost.metadata.get("status").map(String::as_str), Some("HELD"), "paying: {lost}");
                assert_eq!(stored.get_str("status").unwrap(), "CONFIRMED");
                assert_eq!((seat_state, succeeded_charges), (SeatState::Booked, 1));
            }
            (Err(lost), Ok(cancelled)) => {
                assert_eq!(cancelled.status(), BookingStatus::Cancelled);
                assert_eq!(lost.code, ErrorCode::Conflict, "{lost}");
                assert_eq!(lost.metadata.get("status").map(String::as_str), Some("CANCELLED"));
                let saga_status = lost.metadata.get("saga_status").map(String::as_str);
                assert!(matches!(saga_status, Some("CANCELLING" | "CANCELLED")), "{lost}");
                assert_eq!(stored.get_str("status").unwrap(), "CANCELLED");
                assert_eq!((seat_state, succeeded_charges), (SeatState::Available, 0));
            }
            other => panic!("exactly one of pay and cancel must win: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_user_holds_at_most_two_active_bookings_per_showtime_even_when_racing() {
    let app = spawn_app().await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(hours(48), &[("A", 10)]).await;
    let other_showtime = app.create_showtime(hours(72), &[("A", 10)]).await;
    assert_eq!(app.settings.booking.max_active_holds_per_showtime, 2);

    let attempts = futures::future::join_all((1..=6).map(|n| {
        let seat = vec![format!("A{n}")];
        let showtime = showtime.clone();
        let user_id = user_id.clone();
        let app = &app;
        async move { app.hold(&user_id, &showtime, &seat, &format!("burst-{n}")).await }
    }))
    .await;
    let held: Vec<&Booking> = attempts.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert_eq!(held.len(), 2, "{attempts:?}");
    for refused in attempts.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(
            (refused.code, refused.metadata.get("limit").map(String::as_str)),
            (ErrorCode::Conflict, Some("2"))
        );
    }
    // Refused holds kept no seats.
    let states = app.seat_states(&showtime).await;
    assert_eq!(states.values().filter(|s| **s == SeatState::Held).count(), 2, "{states:?}");

    // Another showtime has its own limit; finishing a booking frees a place.
    app.hold(&user_id, &other_showtime, &row("A", 1), "elsewhere").await.unwrap();
    let paid = app.pay(held[0], "pm_card_ok").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    app.cancel(&held[1].id, &user_id, false).await.unwrap();
    let seats = vec!["A9".to_owned()];
    app.hold(&user_id, &showtime, &seats, "after-1").await.unwrap();
    app.hold(&user_id, &showtime, &["A10".to_owned()], "after-2").await.unwrap();
    let full = app.hold(&user_id, &showtime, &["A8".to_owned()], "after-3").await.unwrap_err();
    assert_eq!(full.code, ErrorCode::Conflict);
    // Cinema locked A8 before the limit refused the hold: it was given back.
    assert_eq!(app.seat_states(&showtime).await.get("A8"), Some(&SeatState::Available));
    // The same key replays instead of counting twice.
    assert_eq!(app.hold(&user_id, &showtime, &seats, "after-1").await.unwrap().status(), BookingStatus::Held);
}

#[tokio::test]
async fn overdue_holds_expire_once_even_with_two_sweepers_and_free_their_seats() {
    let app = spawn_app_with(|settings| {
        settings.booking.hold_ttl_seconds = 1;
        settings.booking.sweep_interval_ms = 0;
    })
    .await;
    let (_connection, mut expired_events) = app.subscribe("booking.expired").await;
    let second = BookingNode::start(&app.settings, &app.shutdown, None).await;
    let user_id = app.register().await;
    let showtime = app.create_showtime(hours(48), &[("A", 4)]).await;
    let first = app.hold(&user_id, &showtime, &row("A", 2), "first").await.unwrap();
    let other = app.hold(&app.register().await, &showtime, &["A3".to_owned()], "other").await.unwrap();

    // Both replicas sweep at once until the holds lapse: each booking expires once.
    let expired = std::sync::atomic::AtomicUsize::new(0);
    eventually(Duration::from_secs(15), "both holds to expire", || async {
        let (a, b) = tokio::join!(app.sweeper.sweep(), second.sweeper.sweep());
        let swept = a.unwrap().expired + b.unwrap().expired;
        let total = expired.fetch_add(swept, std::sync::atomic::Ordering::SeqCst) + swept;
        (total >= 2).then_some(())
    })
    .await;
    let expired = expired.into_inner();
    assert_eq!(expired, 2);
    for booking in [&first, &other] {
        let stored = app.stored_booking(&booking.id).await;
        assert_eq!(stored.get_str("status").unwrap(), "EXPIRED");
        let kinds: Vec<_> = stored
            .get_array("outbox")
            .unwrap()
            .iter()
            .map(|e| e.as_document().unwrap().get_str("type").unwrap())
            .collect();
        assert_eq!(kinds, ["booking.held", "booking.expired"]);
        let event = next_event_for(&mut expired_events, &booking.id).await;
        assert_eq!(event.r#type, "booking.expired");
    }
    let pg = app.pg().await;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM showtime_seats WHERE showtime_id = $1::uuid AND status <> 'available'",
    )
    .bind(&showtime)
    .fetch_one(&pg)
    .await
    .unwrap();
    assert_eq!(held, 0, "expired holds give their seats back");
    let late = app.pay(&first, "pm_card_ok").await.unwrap_err();
    assert_eq!(late.code, ErrorCode::HoldExpired);
    assert!(app.payments_of(&first.id).await.is_empty());
    second.kill().await;
}

#[tokio::test]
async fn paying_after_expiry_reacquires_free_seats_and_refunds_in_full_when_they_were_taken() {
    let app = spawn_app_with(|settings| {
        settings.booking.hold_ttl_seconds = 1;
        settings.booking.sweep_interval_ms = 0;
    })
    .await;
    let (_connection, mut failed_events) = app.subscribe("booking.failed").await;
    let (late_payer, unlucky, rival) = (app.register().await, app.register().await, app.register().await);
    let showtime = app.create_showtime(hours(48), &[("A", 6)]).await;
    let still_free = app.hold(&late_payer, &showtime, &row("A", 2), "free").await.unwrap();
    let taken = app.hold(&unlucky, &showtime, &["A5".to_owned(), "A6".to_owned()], "taken").await.unwrap();
    let lapsed = |b: &Booking| chrono::Utc::now().timestamp() > b.expires_at.unwrap().seconds;
    eventually(Duration::from_secs(10), "the holds to lapse", || async {
        (lapsed(&still_free) && lapsed(&taken)).then_some(())
    })
    .await;
    // Someone else takes one of the lapsed seats.
    app.hold(&rival, &showtime, &["A6".to_owned()], "rival").await.unwrap();

    let confirmed = app.pay(&still_free, "pm_card_ok").await.unwrap();
    assert_eq!(confirmed.status(), BookingStatus::Confirmed);
    let states = app.seat_states(&showtime).await;
    assert_eq!((states["A1"], states["A2"]), (SeatState::Booked, SeatState::Booked));

    let failed = app.pay(&taken, "pm_card_ok").await.unwrap();
    assert_eq!(failed.status(), BookingStatus::Failed);
    assert_eq!(failed.reason, "seats_lost");
    let refund = failed.refund.as_ref().expect("the charge is refunded");
    assert_eq!(
        (refund.amount.as_ref().unwrap().amount_minor, refund.fee.as_ref().unwrap().amount_minor),
        (2500, 0)
    );
    let payments = app.payments_of(&taken.id).await;
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0].get_str("status").unwrap(), "REFUNDED");
    assert_eq!(payments[0].get_i64("refunded_minor").unwrap(), 2500);
    let states = app.seat_states(&showtime).await;
    assert_eq!((states["A5"], states["A6"]), (SeatState::Available, SeatState::Held), "{states:?}");
    let event = next_event_for(&mut failed_events, &taken.id).await;
    assert_eq!(event.r#type, "booking.failed");
    // Paying again answers with the outcome; no second charge, no second refund.
    assert_eq!(app.pay(&taken, "pm_card_ok").await.unwrap().status(), BookingStatus::Failed);
    assert_eq!(app.payments_of(&taken.id).await[0].get_array("refunds").unwrap().len(), 1);
}

#[tokio::test]
async fn bookings_list_newest_first_in_pages_filtered_by_status_and_showtime_with_their_history() {
    let app = spawn_app().await;
    let user_id = app.register().await;
    let first = app.create_showtime(hours(48), &[("A", 10)]).await;
    let second = app.create_showtime(hours(72), &[("A", 10)]).await;
    let mut ids = Vec::new();
    for (n, showtime) in [&first, &first, &second].into_iter().enumerate() {
        let held =
            app.hold(&user_id, showtime, &[format!("A{}", n + 1)], &format!("list-{n}")).await.unwrap();
        let done = app.pay(&held, if n == 1 { "pm_card_declined" } else { "pm_card_ok" }).await.unwrap();
        ids.push(done.id);
    }
    let list = |request: ListBookingsRequest| {
        let client = app.booking.clone();
        async move { client.clone().list_bookings(request).await.map(tonic::Response::into_inner) }
    };
    let base = ListBookingsRequest { user_id: user_id.clone(), ..Default::default() };

    let page1 = list(ListBookingsRequest { page_size: 2, ..base.clone() }).await.unwrap();
    let page2 =
        list(ListBookingsRequest { page_size: 2, page_token: page1.next_page_token.clone(), ..base.clone() })
            .await
            .unwrap();
    let paged: Vec<_> = page1.bookings.iter().chain(&page2.bookings).map(|b| b.id.clone()).collect();
    assert_eq!(paged, [ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    assert!(!page1.next_page_token.is_empty() && page2.next_page_token.is_empty());

    let confirmed =
        list(ListBookingsRequest { statuses: vec![BookingStatus::Confirmed.into()], ..base.clone() })
            .await
            .unwrap();
    assert_eq!(
        confirmed.bookings.iter().map(|b| b.id.clone()).collect::<Vec<_>>(),
        [ids[2].clone(), ids[0].clone()]
    );
    let on_first = list(ListBookingsRequest { showtime_id: first.clone(), ..base.clone() }).await.unwrap();
    assert_eq!(on_first.bookings.len(), 2);

    let history = &confirmed.bookings[1].history;
    assert_eq!(steps(&confirmed.bookings[1]), PAID_STEPS);
    assert!(history.windows(2).all(|w| w[0].at.unwrap().seconds <= w[1].at.unwrap().seconds));

    let bad = list(ListBookingsRequest { page_token: "nonsense".into(), ..base.clone() }).await.unwrap_err();
    assert_eq!(ApiError::from_status(&bad).code, ErrorCode::BadUserInput);
    let bad = list(ListBookingsRequest { statuses: vec![42], ..base }).await.unwrap_err();
    assert_eq!(ApiError::from_status(&bad).code, ErrorCode::BadUserInput);
}
