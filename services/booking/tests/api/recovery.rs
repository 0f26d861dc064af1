//! Crash safety: a booking service dies at every saga checkpoint (the test hook makes
//! its saga stop there without another write, as a killed process would), then a
//! fresh one on the same stores finishes or compensates every saga. The outcome is
//! checked in PostgreSQL (seats) and in the payment service's MongoDB (charges,
//! refunds), not only through the API. And the lease that tells recovery a step died:
//! kept while the step runs, however long, and lapsing once its driver stops.

use marquee_proto::cinema::v1::LockSeatsRequest;
use mongodb::bson::Document;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Pay with a good card: ends CONFIRMED.
    Pay,
    /// Pay with a declined card: ends PAYMENT_FAILED, seats free.
    Decline,
    /// Pay after the hold lapsed and a rival took a seat: ends FAILED, refunded in full.
    SeatsLost,
    /// Cancel a confirmed booking two days ahead: ends CANCELLED, refunded in full.
    Cancel,
    /// The sweeper expires a lapsed hold: ends EXPIRED, no seat held.
    Expire,
}

impl Flow {
    fn ends_in(self) -> &'static str {
        match self {
            Self::Pay => "CONFIRMED",
            Self::Decline => "PAYMENT_FAILED",
            Self::SeatsLost => "FAILED",
            Self::Cancel => "CANCELLED",
            Self::Expire => "EXPIRED",
        }
    }

    fn event(self) -> &'static str {
        match self {
            Self::Pay => "booking.confirmed",
            Self::Decline => "booking.payment_failed",
            Self::SeatsLost => "booking.failed",
            Self::Cancel => "booking.cancelled",
            Self::Expire => "booking.expired",
        }
    }
}

const CASES: &[(Flow, &str)] = &[
    (Flow::Pay, "pay.claimed"),
    (Flow::Pay, "pay.extended"),
    (Flow::Pay, "pay.charged"),
    (Flow::Pay, "confirm.start"),
    (Flow::Pay, "pay.confirmed_seats"),
    (Flow::Decline, "pay.claimed"),
    (Flow::Decline, "pay.charged"),
    (Flow::Decline, "pay.declined_released"),
    (Flow::SeatsLost, "pay.charged"),
    (Flow::SeatsLost, "confirm.start"),
    (Flow::SeatsLost, "refund.start"),
    (Flow::SeatsLost, "refund.done"),
    (Flow::Cancel, "cancel.claimed"),
    (Flow::Cancel, "cancel.released"),
    (Flow::Cancel, "refund.start"),
    (Flow::Cancel, "refund.done"),
    (Flow::Expire, "sweep.expired"),
];

/// Runs `flow` on a booking service that crashes at `point`; returns the booking id.
async fn crash(app: &TestApp, showtime: &str, row_label: &str, flow: Flow, point: &str) -> String {
    let mut settings = app.settings.clone();
    // The dying process never recovers anything itself.
    settings.booking.sweep_interval_ms = 0;
    if matches!(flow, Flow::SeatsLost | Flow::Expire) {
        settings.booking.hold_ttl_seconds = 1;
    }
    let node = BookingNode::start(&settings, &app.shutdown, Some(point)).await;
    let user_id = app.register().await;
    let seats = row(row_label, 2);
    let held = hold_on(&node.client, &user_id, showtime, &seats, "crash").await.unwrap();
    let lapse = || async {
        eventually(Duration::from_secs(10), "the hold to lapse", || async {
            (chrono::Utc::now().timestamp() > held.expires_at.unwrap().seconds).then_some(())
        })
        .await
    };
    let died = match flow {
        Flow::Pay => pay_on(&node.client, &held, "pm_card_ok").await.map(drop),
        Flow::Decline => pay_on(&node.client, &held, "pm_card_declined").await.map(drop),
        Flow::SeatsLost => {
            lapse().await;
            app.cinema
                .clone()
                .lock_seats(LockSeatsRequest {
                    showtime_id: showtime.into(),
                    seat_ids: vec![seats[1].clone()],
                    booking_id: Uuid::now_v7().to_string(),
                    ttl_seconds: 600,
                    ..Default::default()
                })
                .await
                .unwrap();
            pay_on(&node.client, &held, "pm_card_ok").await.map(drop)
        }
        Flow::Cancel => {
            let paid = pay_on(&node.client, &held, "pm_card_ok").await.unwrap();
            assert_eq!(paid.status(), BookingStatus::Confirmed);
            cancel_on(&node.client, &held.id, &user_id, false).await.map(drop)
        }
        Flow::Expire => {
            lapse().await;
            let report = node.sweeper.sweep().await.unwrap();
            assert_eq!(report.expired, 1, "{point}");
            Err(ApiError::new(ErrorCode::Internal, "the sweeper died after its claim"))
        }
    };
    let error = died.expect_err(point);
    assert_eq!(error.code, ErrorCode::Internal, "{flow:?} at {point}: {error}");
    node.kill().await;
    held.id
}

#[tokio::test]
async fn a_crash_at_any_saga_step_is_finished_or_compensated_by_a_fresh_application() {
    // The mesh's own booking service must not expire or resume anything either.
    let app = spawn_app_with(|settings| settings.booking.sweep_interval_ms = 0).await;
    let labels: Vec<String> = (0..CASES.len()).map(|n| char::from(b'A' + n as u8).to_string()).collect();
    let rows: Vec<(&str, i32)> = labels.iter().map(|l| (l.as_str(), 3)).collect();
    let showtime = app.create_showtime(chrono::Duration::hours(48), &rows).await;

    // Concurrently, except the sweeper's case: its sweep would expire the other
    // lapsed holds too, before they are paid.
    let cases = || CASES.iter().zip(&labels);
    let mut crashed = futures::future::join_all(
        cases()
            .filter(|((flow, _), _)| *flow != Flow::Expire)
            .map(|((flow, point), label)| crash(&app, &showtime, label, *flow, point)),
    )
    .await;
    for ((flow, point), label) in cases().filter(|((flow, _), _)| *flow == Flow::Expire) {
        crashed.push(crash(&app, &showtime, label, *flow, point).await);
    }

    // A fresh process on the same stores; its sweeper resumes what the lease says died.
    let mut settings = app.settings.clone();
    settings.booking.sweep_interval_ms = 500;
    let fresh = BookingNode::start(&settings, &app.shutdown, None).await;
    let pg = app.pg().await;
    let in_crash_order = cases()
        .filter(|((flow, _), _)| *flow != Flow::Expire)
        .chain(cases().filter(|((flow, _), _)| *flow == Flow::Expire));
    for (((flow, point), label), id) in in_crash_order.zip(&crashed) {
        let case = format!("{flow:?} crashed at {point}");
        let stored = eventually(Duration::from_secs(30), &case, || async {
            let stored = app.stored_booking(id).await;
            (stored.get_str("status").unwrap() == flow.ends_in()).then_some(stored)
        })
        .await;

        // Exactly one terminal event was written for the outbox.
        let events: Vec<&str> = stored
            .get_array("outbox")
            .unwrap()
            .iter()
            .map(|e| e.as_document().unwrap().get_str("type").unwrap())
            .collect();
        assert_eq!(events.iter().filter(|e| **e == flow.event()).count(), 1, "{case}: {events:?}");

        // Seats: booked by this booking when confirmed; otherwise none held live or booked by it.
        let seats: Vec<(String, String, Option<Uuid>, bool)> = sqlx::query_as(
            "SELECT seat_id, status, booking_id, coalesce(hold_expires_at > now(), false)
               FROM showtime_seats WHERE showtime_id = $1::uuid AND seat_id = ANY ($2) ORDER BY seat_id",
        )
        .bind(&showtime)
        .bind(row(label, 2))
        .fetch_all(&pg)
        .await
        .unwrap();
        let mine = Uuid::parse_str(id).unwrap();
        for (seat, status, holder, live) in &seats {
            if *flow == Flow::Pay {
                assert_eq!((status.as_str(), *holder), ("booked", Some(mine)), "{case}: {seat}");
            } else {
                let taken_by_me =
                    *holder == Some(mine) && (status == "booked" || (status == "held" && *live));
                assert!(!taken_by_me, "{case}: seat {seat} still {status} for the booking");
            }
        }

        // Charges: never more than one payment per booking; refunds exactly once.
        let payments = app.payments_of(id).await;
        let statuses: Vec<&str> = payments.iter().map(|p| p.get_str("status").unwrap()).collect();
        let expected: &[&str] = match flow {
            Flow::Pay => &["SUCCEEDED"],
            Flow::Decline => &["DECLINED"],
            Flow::SeatsLost | Flow::Cancel => &["REFUNDED"],
            Flow::Expire => &[],
        };
        assert_eq!(statuses, expected, "{case}");
        if matches!(flow, Flow::SeatsLost | Flow::Cancel) {
            let payment = &payments[0];
            assert_eq!(payment.get_array("refunds").unwrap().len(), 1, "{case}");
            assert_eq!(
                payment.get_i64("refunded_minor").unwrap(),
                payment.get_i64("amount_minor").unwrap(),
                "{case}"
            );
        }
    }
    fresh.kill().await;
}

#[tokio::test]
async fn a_hold_that_dies_after_locking_seats_gives_them_back_on_recovery() {
    let app = spawn_app_with(|settings| settings.booking.sweep_interval_ms = 0).await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let user_id = app.register().await;
    // A hold whose booking was written, as old as the dead one: it keeps its seats.
    let written = app.hold(&app.register().await, &showtime, &["A4".to_owned()], "written").await.unwrap();
    let mut settings = app.settings.clone();
    let node = BookingNode::start(&settings, &app.shutdown, Some("hold.locked")).await;
    let died = hold_on(&node.client, &user_id, &showtime, &row("A", 2), "dies").await.unwrap_err();
    assert_eq!(died.code, ErrorCode::Internal);
    node.kill().await;

    // Cinema holds the seats for a booking that was never written.
    let pg = app.pg().await;
    let live_holds = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM showtime_seats
              WHERE showtime_id = $1::uuid AND status = 'held' AND hold_expires_at > now()",
        )
        .bind(&showtime)
        .fetch_one(&pg)
        .await
        .unwrap()
    };
    assert_eq!(live_holds().await, 3);
    let bookings = app.collection("booking", "bookings").await;
    assert_eq!(bookings.count_documents(doc! { "showtime_id": &showtime }).await.unwrap(), 1);

    // Once the abandoned hold grace has passed, a fresh process finds the hold among
    // cinema's with no booking and releases it, and only it.
    settings.booking.sweep_interval_ms = 500;
    let fresh = BookingNode::start(&settings, &app.shutdown, None).await;
    eventually(Duration::from_secs(20), "the abandoned hold to be released", || async {
        (live_holds().await == 1).then_some(())
    })
    .await;
    let states = app.seat_states(&showtime).await;
    assert_eq!(states.get("A4"), Some(&SeatState::Held), "{states:?}");
    let paid = pay_on(&fresh.client, &written, "pm_card_ok").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    for n in 1..=2 {
        let seats = [format!("A{n}")];
        hold_on(&fresh.client, &user_id, &showtime, &seats, &format!("again-{n}")).await.unwrap();
    }
    fresh.kill().await;
}

/// The stored saga history: each entry as `step:outcome`, with when it was recorded
/// (milliseconds since the epoch).
fn stored_history(stored: &Document) -> Vec<(String, i64)> {
    let entries = stored.get_array("saga").unwrap().iter().map(|entry| entry.as_document().unwrap());
    entries
        .map(|entry| {
            let step = format!("{}:{}", entry.get_str("step").unwrap(), entry.get_str("outcome").unwrap());
            (step, entry.get_datetime("at").unwrap().timestamp_millis())
        })
        .collect()
}

#[tokio::test]
async fn a_step_several_leases_long_is_never_taken_over_while_its_process_lives() {
    let app = spawn_app_with(|settings| {
        settings.payment.slow_card_delay_ms = 6000;
        // Booking's deadline on the charge outlasts the slow card.
        settings.grpc.request_timeout_ms = 10_000;
    })
    .await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 2)]).await;
    let user_id = app.register().await;

    // A replica whose lease is a quarter of its charge. The mesh's booking service is
    // the other replica: it sweeps every 500 ms and, not driving the step itself, would
    // resume it the moment its lease lapsed.
    let mut settings = app.settings.clone();
    settings.booking.saga_lease_ms = 1500;
    settings.booking.sweep_interval_ms = 0;
    let node = BookingNode::start(&settings, &app.shutdown, None).await;
    let held = hold_on(&node.client, &user_id, &showtime, &row("A", 2), "slow").await.unwrap();
    let paid = pay_on(&node.client, &held, "pm_card_slow").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);

    // Confirmed by its one driver: nothing resumed it, one charge of one attempt.
    let stored = app.stored_booking(&held.id).await;
    assert_eq!(stored.get_str("status").unwrap(), "CONFIRMED");
    let history: Vec<String> = stored_history(&stored).into_iter().map(|(step, _)| step).collect();
    assert_eq!(history, PAID_STEPS, "{stored:?}");
    let payments = app.payments_of(&held.id).await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0].get_str("status").unwrap(), "SUCCEEDED");
    assert_eq!(payments[0].get_array("attempts").unwrap().len(), 1, "{payments:?}");
    node.kill().await;
}

#[tokio::test]
async fn a_step_whose_driver_stopped_is_resumed_once_its_lease_lapses() {
    // The mesh's booking service sweeps every 500 ms.
    let app = spawn_app().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 2)]).await;
    let user_id = app.register().await;

    // The pay dies right after the charge, but its process lives on: only the renewals
    // its step no longer makes kept the lease.
    let mut settings = app.settings.clone();
    settings.booking.sweep_interval_ms = 0;
    let node = BookingNode::start(&settings, &app.shutdown, Some("pay.charged")).await;
    let held = hold_on(&node.client, &user_id, &showtime, &row("A", 2), "stops").await.unwrap();
    let died = pay_on(&node.client, &held, "pm_card_ok").await.unwrap_err();
    assert_eq!(died.code, ErrorCode::Internal, "{died}");

    // The other replica resumes and confirms it once the lease has lapsed, not before.
    let stored = eventually(Duration::from_secs(20), "recovery to confirm the booking", || async {
        let stored = app.stored_booking(&held.id).await;
        (stored.get_str("status").unwrap() == "CONFIRMED").then_some(stored)
    })
    .await;
    let history = stored_history(&stored);
    let at = |step: &str| history.iter().find(|(s, _)| s == step).map(|(_, at)| *at);
    let claimed = at("charge:started").unwrap();
    let resumed = at("recover:resumed").unwrap_or_else(|| panic!("not resumed by recovery: {stored:?}"));
    let lease_ms = i64::try_from(settings.booking.saga_lease_ms).unwrap();
    assert!(resumed - claimed > lease_ms, "resumed {} ms after the claim", resumed - claimed);
    let payments = app.payments_of(&held.id).await;
    let statuses: Vec<&str> = payments.iter().map(|p| p.get_str("status").unwrap()).collect();
    assert_eq!(statuses, ["SUCCEEDED"]);
    node.kill().await;
}

/// The sweeper's and `/metrics`' queries as the booking store asks them, and the
/// index that should answer each: one holding only the bookings that query can find.
fn sweeper_queries() -> [(Document, &'static str); 5] {
    let now = mongodb::bson::DateTime::now();
    let in_flight = ["CHARGING", "CONFIRMING", "REFUNDING", "CANCELLING"];
    [
        (doc! { "status": { "$in": in_flight.as_slice() }, "lease_until": { "$lt": now } }, "leased_steps"),
        (doc! { "status": "HELD", "expires_at": { "$lte": now } }, "held_by_expiry"),
        (doc! { "release_pending": true }, "seats_to_release"),
        (doc! { "status": "HELD", "expires_at": { "$exists": true } }, "held_by_expiry"),
        (doc! { "status": "CHARGING", "lease_until": { "$exists": true } }, "leased_steps"),
    ]
}

#[tokio::test]
async fn a_booking_service_replaces_the_retired_sweeper_indexes_and_its_sweeps_read_the_new_ones() {
    let app = spawn_app_with(|settings| settings.booking.sweep_interval_ms = 0).await;
    let bookings = app.collection("booking", "bookings").await;
    // The indexes of an earlier version, keyed by status: every booking in each.
    for (keys, name) in [
        (doc! { "status": 1, "lease_until": 1 }, "stalled_sagas"),
        (doc! { "status": 1, "expires_at": 1 }, "overdue_holds"),
        (doc! { "release_pending": 1 }, "pending_releases"),
    ] {
        let options = mongodb::options::IndexOptions::builder().name(name.to_owned()).build();
        bookings
            .create_index(mongodb::IndexModel::builder().keys(keys).options(options).build())
            .await
            .unwrap();
    }

    let node = BookingNode::start(&app.settings, &app.shutdown, None).await;
    let mut names = bookings.list_index_names().await.unwrap();
    names.sort();
    let expected = [
        "_id_",
        "held_by_expiry",
        "leased_steps",
        "seats_to_release",
        "user_idempotency_key",
        "user_newest_id_first",
        "with_unsent_events",
    ];
    assert_eq!(names, expected);
    for (query, index) in sweeper_queries() {
        assert_eq!(marquee_mongo::plan_indexes(&bookings, query.clone()).await.unwrap(), [index], "{query}");
    }
    // The sweep runs on them (the gauges' counts: `metrics.rs`).
    node.sweeper.sweep().await.unwrap();
    node.kill().await;
}
