//! One booking is one trace: the caller's `traceparent` reaches every service the
//! saga calls, and the sweep traces each booking it handles on its own. The
//! services run in this process, so the kit's in-memory span exporter sees each
//! one's `grpc.request` spans.

use marquee_kit::telemetry::capture::{self, TraceSpan};

use super::*;

const BOOKING: &str = "marquee.booking.v1.BookingService";
const CINEMA: &str = "marquee.cinema.v1.CinemaService";
const PAYMENT: &str = "marquee.payment.v1.PaymentService";
const USER: &str = "marquee.user.v1.UserService";

async fn traced_app(configure: impl FnOnce(&mut Settings) + Send) -> TestApp {
    let app = spawn_app_with(configure).await;
    assert!(capture::start(), "the kit's subscriber (with the span capture) is the process's");
    app
}

/// A request carrying `traceparent`.
fn with_trace<T>(message: T, traceparent: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("traceparent", traceparent.parse().unwrap());
    request
}

fn calls_to<'a>(spans: &'a [TraceSpan], service: &str) -> Vec<&'a TraceSpan> {
    spans.iter().filter(|span| span.name == "grpc.request" && span.service == service).collect()
}

/// The exported spans of `trace` once `done` holds for them: a span is exported when
/// it ends, which for a server span can be a moment after its caller got the answer.
async fn spans_when(trace: &str, done: impl Fn(&[TraceSpan]) -> bool) -> Vec<TraceSpan> {
    eventually(Duration::from_secs(5), "the trace's spans", || async {
        let spans = capture::spans_of(trace);
        done(&spans).then_some(spans)
    })
    .await
}

#[tokio::test]
async fn a_booking_is_one_trace_across_booking_cinema_and_payment() {
    let app = traced_app(|_| {}).await;
    let user_id = app.register().await;
    let (showtime_id, seats) = app.showtime_and_free_seats(2).await;

    let hold_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let hold_parent = "00f067aa0ba902b7";
    let held = app
        .booking
        .clone()
        .hold_seats(with_trace(
            HoldSeatsRequest {
                user_id: user_id.clone(),
                showtime_id,
                seat_ids: seats,
                idempotency_key: Uuid::new_v4().to_string(),
            },
            &format!("00-{hold_trace}-{hold_parent}-01"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(held.status(), BookingStatus::Held);

    let spans = spans_when(hold_trace, |spans| {
        !calls_to(spans, BOOKING).is_empty()
            && calls_to(spans, CINEMA).iter().any(|span| span.rpc.ends_with("/LockSeats"))
    })
    .await;
    let booking = calls_to(&spans, BOOKING);
    assert_eq!(booking.len(), 1, "{spans:#?}");
    assert_eq!(booking[0].rpc, format!("/{BOOKING}/HoldSeats"));
    assert_eq!(booking[0].parent_id.as_deref(), Some(hold_parent), "booking continues the caller's span");
    let cinema = calls_to(&spans, CINEMA);
    // A hold trusts the gateway's user id: the user service is not called.
    assert!(calls_to(&spans, USER).is_empty(), "{spans:#?}");
    assert!(cinema.iter().any(|span| span.rpc.ends_with("/LockSeats")), "{spans:#?}");
    for downstream in &cinema {
        let parent = downstream.parent_id.as_deref().expect("a valid traceparent reached it");
        // Each call is a span of its own under booking's, not a copy of the caller's.
        assert_ne!(parent, hold_parent);
        assert_ne!(downstream.span_id, booking[0].span_id);
        assert!(downstream.descends_from(booking[0], &spans), "{downstream:#?} under {:#?}", booking[0]);
    }

    // Paying is another request of the same booking, in a trace of its own.
    let pay_trace = "0af7651916cd43dd8448eb211c80319c";
    let paid = app
        .booking
        .clone()
        .pay_booking(with_trace(
            PayBookingRequest {
                booking_id: held.id.clone(),
                user_id,
                payment_method: "pm_card_ok".into(),
                idempotency_key: Uuid::new_v4().to_string(),
            },
            &format!("00-{pay_trace}-b7ad6b7169203331-01"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    let spans = spans_when(pay_trace, |spans| {
        calls_to(spans, PAYMENT).iter().any(|span| span.rpc.ends_with("/Charge"))
            && calls_to(spans, CINEMA).iter().any(|span| span.rpc.ends_with("/ConfirmSeats"))
    })
    .await;
    assert!(calls_to(&spans, PAYMENT).iter().any(|span| span.rpc.ends_with("/Charge")), "{spans:#?}");
    assert!(calls_to(&spans, CINEMA).iter().any(|span| span.rpc.ends_with("/ConfirmSeats")), "{spans:#?}");
    assert!(
        capture::spans_of(hold_trace).iter().all(|span| !span.rpc.ends_with("/Charge")),
        "the hold's trace holds only the hold's calls"
    );
}

#[tokio::test]
async fn a_malformed_traceparent_starts_one_new_trace_that_still_spans_the_services() {
    let app = traced_app(|_| {}).await;
    let user_id = app.register().await;
    let (showtime_id, seats) = app.showtime_and_free_seats(1).await;
    let key = Uuid::new_v4().to_string();

    // Upper-case hex is not a valid traceparent: ignored, never a failed request.
    let malformed = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
    let request = HoldSeatsRequest { user_id, showtime_id, seat_ids: seats, idempotency_key: key.clone() };
    let held = app.booking.clone().hold_seats(with_trace(request, malformed)).await.unwrap().into_inner();
    assert_eq!(held.status(), BookingStatus::Held);

    // Booking served the hold as the root of a new trace, and cinema's LockSeats is in it.
    let started = eventually(Duration::from_secs(5), "a new trace from the hold to cinema", || async {
        let holds = capture::all().into_iter().filter(|span| {
            span.service == BOOKING && span.rpc.ends_with("/HoldSeats") && span.parent_id.is_none()
        });
        holds.into_iter().find(|hold| {
            let spans = capture::spans_of(&hold.trace_id);
            calls_to(&spans, CINEMA).iter().any(|span| span.rpc.ends_with("/LockSeats"))
        })
    })
    .await;
    assert_ne!(started.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(started.trace_id.to_uppercase(), "4BF92F3577B34DA6A3CE929D0E0E4736");
    let hex =
        |id: &str, len: usize| id.len() == len && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    assert!(hex(&started.trace_id, 32) && hex(&started.span_id, 16), "{started:#?}");
}

#[tokio::test]
async fn the_sweep_traces_each_expired_booking_on_its_own() {
    let app = traced_app(|settings| {
        settings.booking.hold_ttl_seconds = 1;
        settings.booking.sweep_interval_ms = 0;
    })
    .await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let hold_trace = "5c1d6d2a8f3e4b7c9a0b1c2d3e4f5a6b";
    for (user, seat) in [(app.register().await, "A1"), (app.register().await, "A2")] {
        let request = HoldSeatsRequest {
            user_id: user,
            showtime_id: showtime.clone(),
            seat_ids: vec![seat.to_owned()],
            idempotency_key: Uuid::new_v4().to_string(),
        };
        app.booking
            .clone()
            .hold_seats(with_trace(request, &format!("00-{hold_trace}-00f067aa0ba902b7-01")))
            .await
            .unwrap();
    }

    let expired = std::sync::atomic::AtomicUsize::new(0);
    eventually(Duration::from_secs(15), "both holds to expire", || async {
        let swept = app.sweeper.sweep().await.unwrap().expired;
        let total = expired.fetch_add(swept, std::sync::atomic::Ordering::SeqCst) + swept;
        (total >= 2).then_some(())
    })
    .await;

    // Each release is a cinema call in a trace the sweep started for that booking.
    let (releases, traces) = eventually(Duration::from_secs(5), "one trace per expired booking", || async {
        let all = capture::all();
        let sweep_traces: Vec<&str> =
            all.iter().filter(|span| span.name == "trace").map(|span| span.trace_id.as_str()).collect();
        let releases: Vec<TraceSpan> = calls_to(&all, CINEMA)
            .into_iter()
            .filter(|span| {
                span.rpc.ends_with("/ReleaseSeats") && sweep_traces.contains(&span.trace_id.as_str())
            })
            .cloned()
            .collect();
        let mut traces: Vec<String> = releases.iter().map(|span| span.trace_id.clone()).collect();
        traces.sort_unstable();
        traces.dedup();
        (traces.len() >= 2).then_some((releases, traces))
    })
    .await;
    assert!(!traces.iter().any(|trace| trace == hold_trace), "the sweep is not the caller's trace");
    assert!(releases.iter().all(|span| span.parent_id.is_some()));
}
