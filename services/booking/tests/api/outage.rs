//! Outages. A RabbitMQ outage never blocks bookings: events wait in the outbox and are
//! published once the broker is back, none lost and none twice. A cinema that does not
//! answer a hold (stalled or unreachable) gets the client a retryable SERVICE_BUSY, no
//! booking and no seat kept. An outage is a test-owned TCP proxy between the services
//! and the real dependency being cut, or seat rows a test keeps locked.

use std::collections::HashMap;
use std::net::SocketAddr;

use marquee_kit::Secret;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;

/// Forwards TCP connections to `upstream` while up; cutting it drops every open
/// connection and refuses new ones (accepted, then closed at once).
struct Proxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = watch::channel(true);
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                let mut watcher = state.subscribe();
                if !*watcher.borrow_and_update() {
                    continue; // dropped: the broker is "down"
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = watcher.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

#[tokio::test]
async fn bookings_succeed_while_rabbitmq_is_down_and_their_events_follow_once_it_is_back() {
    let real = <marquee_booking::Settings as marquee_kit::Config>::for_tests()
        .unwrap()
        .rabbitmq
        .url
        .expose()
        .clone();
    let (credentials, rest) = real.split_once('@').expect("the broker url has credentials");
    let (broker, vhost) = rest.split_once('/').expect("the broker url has a vhost");
    let proxy = Proxy::start(broker.to_owned()).await;
    let proxied = format!("{credentials}@{}/{vhost}", proxy.addr);
    let app = spawn_app_with(|settings| settings.rabbitmq.url = Secret::new(proxied)).await;
    // The test listens on the broker directly, through no proxy.
    let (_connection, mut events) = app.subscribe_at(&real, "booking.#").await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 10)]).await;

    // Through the proxy, events flow (a hold's with the booking's next one).
    let user_id = app.register().await;
    let before = app.hold(&user_id, &showtime, &row("A", 1), "before").await.unwrap();
    app.pay(&before, "pm_card_ok").await.unwrap();
    next_event_for(&mut events, &before.id).await;

    proxy.cut();
    let mut booked = Vec::new();
    for n in 2..=5 {
        let user_id = app.register().await;
        let held = app.hold(&user_id, &showtime, &[format!("A{n}")], "during").await.unwrap();
        let paid = app.pay(&held, "pm_card_ok").await.unwrap();
        assert_eq!(paid.status(), BookingStatus::Confirmed);
        booked.push(paid.id);
    }
    // Nothing could be published: every event waits in its booking's outbox.
    for id in &booked {
        assert_eq!(app.stored_booking(id).await.get_i32("unsent_events").unwrap(), 2, "{id}");
    }

    proxy.restore();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut kinds: Vec<(String, String)> = Vec::new();
    let wanted = booked.len() * 2;
    tokio::time::timeout(Duration::from_secs(40), async {
        while kinds.len() < wanted {
            let delivery = events.next().await.expect("consumer ended").unwrap();
            delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
            let event = Event::decode(delivery.data.as_slice()).unwrap();
            if booked.contains(&event.booking_id) {
                *seen.entry(event.event_id.clone()).or_default() += 1;
                if seen[&event.event_id] == 1 {
                    kinds.push((event.booking_id, event.r#type));
                }
            }
        }
    })
    .await
    .expect("the outbox was not relayed after the broker came back");
    for id in &booked {
        let mut types: Vec<&str> = kinds.iter().filter(|(b, _)| b == id).map(|(_, t)| t.as_str()).collect();
        types.sort_unstable();
        assert_eq!(types, ["booking.confirmed", "booking.held"], "{id}");
    }
    // Once every event is marked sent, nothing arrives a second time.
    for id in &booked {
        eventually(Duration::from_secs(10), "the outbox to be marked sent", || async {
            (app.stored_booking(id).await.get_i32("unsent_events").unwrap() == 0).then_some(())
        })
        .await;
    }
    while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        let event = Event::decode(delivery.unwrap().data.as_slice()).unwrap();
        if booked.contains(&event.booking_id) {
            *seen.entry(event.event_id).or_default() += 1;
        }
    }
    assert!(seen.values().all(|n| *n == 1), "duplicated events: {seen:?}");
}

/// A booking service of its own, reaching the mesh's cinema through a proxy the test
/// can cut, sweeping on demand.
async fn booking_through_a_cinema_proxy(app: &TestApp) -> (Proxy, BookingNode) {
    let cinema_addr = app.settings.upstream.cinema_url.trim_start_matches("http://").to_owned();
    let proxy = Proxy::start(cinema_addr).await;
    let mut through_proxy = app.settings.clone();
    through_proxy.upstream.cinema_url = format!("http://{}", proxy.addr);
    through_proxy.booking.sweep_interval_ms = 0;
    let node = BookingNode::start(&through_proxy, &app.shutdown, None).await;
    (proxy, node)
}

#[tokio::test]
async fn seats_a_declined_payment_could_not_release_while_cinema_was_down_are_released_by_the_sweeper() {
    let app = spawn_app().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let (proxy, node) = booking_through_a_cinema_proxy(&app).await;
    let user_id = app.register().await;
    let seats = row("A", 2);
    let held = hold_on(&node.client, &user_id, &showtime, &seats, "declined").await.unwrap();

    // Cinema unreachable for the whole payment: the decline cannot release the seats.
    proxy.cut();
    let failed = pay_on(&node.client, &held, "pm_card_declined").await.unwrap();
    assert_eq!(failed.status(), BookingStatus::PaymentFailed);
    let stored = app.stored_booking(&held.id).await;
    assert!(stored.get_bool("release_pending").unwrap(), "{stored:?}");
    let states = app.seat_states(&showtime).await;
    assert!(seats.iter().all(|s| states[s] == SeatState::Held), "still held: {states:?}");

    // Cinema is back: the next sweep releases them, once.
    proxy.restore();
    let report = node.sweeper.sweep().await.unwrap();
    assert_eq!(report.released_late, 1);
    let states = app.seat_states(&showtime).await;
    assert!(seats.iter().all(|s| states[s] == SeatState::Available), "{states:?}");
    assert!(!app.stored_booking(&held.id).await.get_bool("release_pending").unwrap());
    assert_eq!(node.sweeper.sweep().await.unwrap().released_late, 0, "nothing left to release");
}

#[tokio::test]
async fn a_hold_cinema_does_not_answer_in_time_is_refused_as_busy_and_leaves_its_seats_free() {
    let deadline = Duration::from_millis(2000);
    let app = spawn_app_with(|settings| {
        settings.grpc.request_timeout_ms = 2000;
        // The waits that must stay below that deadline.
        settings.booking.pay_wait_ms = 1500;
        settings.payment.charge_wait_ms = 1500;
    })
    .await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let user_id = app.register().await;
    let seats = row("A", 2);

    // A stalled PostgreSQL, as under a rush on a slow machine: the seat rows stay
    // locked a while past booking's deadline on LockSeats.
    let pg = app.pg().await;
    let mut stall = pg.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM showtime_seats WHERE showtime_id = $1::uuid AND seat_id = ANY($2) FOR UPDATE")
        .bind(&showtime)
        .bind(&seats)
        .execute(&mut *stall)
        .await
        .unwrap();
    let asked = tokio::time::Instant::now();
    let (refused, ()) = tokio::join!(app.hold(&user_id, &showtime, &seats, "stalled"), async {
        tokio::time::sleep(deadline + Duration::from_millis(1000)).await;
        stall.rollback().await.unwrap();
    });

    let error = refused.expect_err("cinema did not answer within the deadline");
    assert!(asked.elapsed() >= deadline, "refused only once the deadline passed");
    assert_eq!(error.code, ErrorCode::ServiceBusy, "{error:?}");
    assert_eq!(error.retry_after_seconds(), Some(1));
    // No booking, and whatever cinema locked late was given back.
    let bookings = app.collection("booking", "bookings").await;
    assert_eq!(bookings.count_documents(doc! { "user_id": &user_id }).await.unwrap(), 0);
    eventually(Duration::from_secs(20), "the late lock to be released", || async {
        let states = app.seat_states(&showtime).await;
        seats.iter().all(|s| states[s] == SeatState::Available).then_some(())
    })
    .await;

    // As the refusal says, the same request a moment later holds the seats.
    let retried = app.hold(&user_id, &showtime, &seats, "stalled").await.unwrap();
    assert_eq!(retried.status(), BookingStatus::Held);
    assert_eq!(bookings.count_documents(doc! { "user_id": &user_id }).await.unwrap(), 1);
}

#[tokio::test]
async fn a_hold_while_cinema_is_unreachable_is_refused_as_busy_and_writes_nothing() {
    let app = spawn_app().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let (proxy, node) = booking_through_a_cinema_proxy(&app).await;
    let user_id = app.register().await;
    let seats = row("A", 2);

    proxy.cut();
    let error = hold_on(&node.client, &user_id, &showtime, &seats, "down").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::ServiceBusy, "{error:?}");
    assert_eq!(error.retry_after_seconds(), Some(1));
    let bookings = app.collection("booking", "bookings").await;
    assert_eq!(bookings.count_documents(doc! { "user_id": &user_id }).await.unwrap(), 0);
    let states = app.seat_states(&showtime).await;
    assert!(seats.iter().all(|s| states[s] == SeatState::Available), "{states:?}");

    proxy.restore();
    let held = hold_on(&node.client, &user_id, &showtime, &seats, "down").await.unwrap();
    assert_eq!(held.status(), BookingStatus::Held);
}

#[tokio::test]
async fn a_paid_booking_cinema_cannot_confirm_is_answered_retryable_and_confirmed_once_cinema_is_back() {
    let app = spawn_app().await;
    let showtime = app.create_showtime(chrono::Duration::hours(48), &[("A", 4)]).await;
    let (proxy, node) = booking_through_a_cinema_proxy(&app).await;
    let user_id = app.register().await;
    let seats = row("A", 2);
    let held = hold_on(&node.client, &user_id, &showtime, &seats, "confirm").await.unwrap();

    // Charged (payment is reached directly), but cinema does not answer the confirm on
    // any retry: not an internal error but a call to repeat, the charge recorded.
    proxy.cut();
    let key = Uuid::new_v4().to_string();
    let error = pay_with_key(&node.client, &held, "pm_card_ok", &key).await.unwrap_err();
    assert_eq!(error.grpc_code, Some(tonic::Code::Unavailable), "{error:?}");
    assert_eq!(error.message, "a service did not answer; retry");
    let stored = app.stored_booking(&held.id).await;
    assert_eq!(stored.get_str("status").unwrap(), "CONFIRMING", "{stored:?}");

    // Cinema is back: the step is taken up again once its lease lapses, and the same
    // request answers the booking confirmed, charged once.
    proxy.restore();
    eventually(Duration::from_secs(20), "the booking to be confirmed", || async {
        node.sweeper.sweep().await.unwrap();
        (app.stored_booking(&held.id).await.get_str("status").unwrap() == "CONFIRMED").then_some(())
    })
    .await;
    let repeated = pay_with_key(&node.client, &held, "pm_card_ok", &key).await.unwrap();
    assert_eq!(repeated.status(), BookingStatus::Confirmed);
    let states = app.seat_states(&showtime).await;
    assert!(seats.iter().all(|s| states[s] == SeatState::Booked), "{states:?}");
    let charges = app.payments_of(&held.id).await;
    assert_eq!(charges.len(), 1, "{charges:?}");
}
