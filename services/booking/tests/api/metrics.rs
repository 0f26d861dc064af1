//! `/metrics`: the gRPC calls by status, and the sagas and the outbox as the store has
//! them.

use marquee_kit::testing::sample;

use super::*;

fn calls(service: &str, rpc: &str, code: &str) -> String {
    format!("grpc_server_requests_total{{service=\"marquee.{service}\",rpc=\"{rpc}\",code=\"{code}\"}}")
}

const HELD: &str = "booking_sagas{status=\"HELD\"}";
const UNSENT: &str = "outbox_unsent_documents{publisher=\"booking\"}";

/// Scrapes booking until `series` reads `value` (the relay works in the background).
async fn await_sample(app: &TestApp, series: &str, value: f64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = app.mesh.scrape(Service::Booking).await.unwrap();
        if sample(&text, series) == Some(value) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{series} never read {value}: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_count_calls_and_show_sagas_by_status_and_the_outbox_drained() {
    let app = spawn_app().await;
    let user = app.register().await;
    let (showtime, seats) = app.showtime_and_free_seats(2).await;
    let held = app.hold(&user, &showtime, &seats, "metrics-hold").await.unwrap();
    let missing = app.get(&Uuid::now_v7().to_string(), &user).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);

    // Nothing to relay (booking.held waits for the booking's next event), and the saga
    // waits for payment.
    let text = await_sample(&app, UNSENT, 0.0).await;
    assert_eq!(sample(&text, &calls("booking.v1.BookingService", "HoldSeats", "OK")), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, &calls("booking.v1.BookingService", "GetBooking", "NOT_FOUND")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, HELD), Some(1.0), "{text}");
    assert_eq!(sample(&text, "booking_sagas{status=\"CHARGING\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "booking_sagas_stuck"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "outbox_oldest_unsent_age_seconds{publisher=\"booking\"}"), Some(0.0), "{text}");
    // Booking's calls are counted by the services it called.
    let cinema = app.mesh.scrape(Service::Cinema).await.unwrap();
    assert_eq!(sample(&cinema, &calls("cinema.v1.CinemaService", "LockSeats", "OK")), Some(1.0), "{cinema}");

    let paid = app.pay(&held, "pm_card_ok").await.unwrap();
    assert_eq!(paid.status(), BookingStatus::Confirmed);
    let text = await_sample(&app, UNSENT, 0.0).await;
    assert_eq!(sample(&text, HELD), Some(0.0), "a confirmed saga is finished: {text}");
    let payment = app.mesh.scrape(Service::Payment).await.unwrap();
    assert_eq!(sample(&payment, &calls("payment.v1.PaymentService", "Charge", "OK")), Some(1.0), "{payment}");
}
