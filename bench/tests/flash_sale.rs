//! The flash sale in small (32 customers, 5 hot seats, one attempt each) on the real mesh
//! and real stores, with the full verification the benchmark runs: it must never
//! double-book, double-charge or lose a notification, and every refusal must be
//! SEAT_UNAVAILABLE. It also reads the MongoDB server's opcounters around the sale, as
//! the benchmark's profile does. Runs in `scripts/test`; the full-size run is
//! `scripts/bench`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use marquee_bench::catalog::{build_hall, seat_id};
use marquee_bench::flash_sale::{self, Config};
use marquee_bench::gql::{Answer, Client};
use marquee_bench::mesh::{Mesh, Service};
use marquee_bench::mongo_ops;
use serde_json::{Value, json};
use tonic::transport::Endpoint;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_flash_sale_sells_every_seat_once_charges_once_and_notifies_once() {
    let mut settings: marquee_e2e::MeshSettings = marquee_kit::testing::isolated_settings().await.unwrap();
    settings.cinema.no_orphan_seats = false;
    let mesh = Mesh::builder().settings(settings).start().await.unwrap();
    let channel = Endpoint::from_shared(mesh.url(Service::Cinema).unwrap()).unwrap().connect().await.unwrap();
    let showtime = build_hall(channel, 1).await.unwrap().remove(0);
    let config = Config::smoke();

    let mongo = mongodb::Client::with_uri_str(mesh.settings.mongo.url.expose()).await.unwrap();
    let ops_before = mongo_ops::read(&mongo).await.unwrap();
    let mut outcome = flash_sale::run(&[mesh.graphql_url().unwrap()], &showtime, &config).await.unwrap();
    let ops_after = mongo_ops::read(&mongo).await.unwrap();
    let verdict = flash_sale::verify(&mesh.settings, &showtime, &outcome, &config).await.unwrap();
    let report = flash_sale::outcome_json(&mut outcome, &config);

    // Every customer got a definite answer: a confirmed seat or SEAT_UNAVAILABLE.
    assert_eq!(outcome.attempts, config.users, "{report}");
    assert!(outcome.gave_up.is_empty() && outcome.unpaid.is_empty(), "{report}");
    assert_eq!(outcome.confirmed.len() + outcome.refused.len(), config.users, "{report}");
    assert!(outcome.confirmed_after_polling <= outcome.confirmed.len(), "{report}");
    // The 16 hot-seat customers fought over 5 seats: at most 5 of them won, and at
    // least one did per seat someone aimed at; the others lost.
    let hot = flash_sale::hot_seat_ids(config.hot_seats);
    let hot_winners = outcome.confirmed.values().filter(|seat| hot.contains(seat)).count();
    assert!((1..=config.hot_seats).contains(&hot_winners), "{hot_winners} hot winners: {report}");
    assert!(outcome.refused.len() >= config.users / 2 - config.hot_seats, "{report}");

    assert_eq!(verdict.double_booked_seats, 0, "{verdict:?}");
    assert_eq!(verdict.double_charges, 0, "{verdict:?}");
    assert_eq!(verdict.uncharged_confirmed, 0, "{verdict:?}");
    assert_eq!(verdict.charged_unconfirmed, 0, "{verdict:?}");
    assert_eq!(verdict.store_mismatches, 0, "{verdict:?}");
    assert_eq!(verdict.wrong_refusals, 0, "{verdict:?}");
    assert_eq!(verdict.lost_notifications, 0, "{verdict:?}");
    assert_eq!(verdict.duplicate_notifications, 0, "{verdict:?}");
    // The stores agree with what the customers were told.
    assert_eq!(verdict.confirmed_in_store, outcome.confirmed.len(), "{verdict:?}");
    assert_eq!(verdict.booked_seats, outcome.confirmed.len(), "{verdict:?}");
    assert!(verdict.is_clean(), "{verdict:?}");

    // Every confirmed booking was written to MongoDB: the server counted those inserts
    // and updates (among everyone else's on this machine) during the sale.
    let ops = mongo_ops::between(&ops_before, &ops_after, outcome.confirmed.len());
    assert!(ops["commands"]["insert"].as_i64().unwrap() >= outcome.confirmed.len() as i64, "{ops}");
    assert!(ops["commands"]["update"].as_i64().unwrap() >= outcome.confirmed.len() as i64, "{ops}");
    assert!(ops["per_confirmed_booking"]["total"].as_f64().unwrap() > 0.0, "{ops}");
    mesh.stop().await;
}

/// What a customer's "payment processing..." screen does: it polls `booking(id)` until
/// the booking is final. A paid booking settles CONFIRMED at the first look; an unpaid
/// hold stays HELD, which is not final, so polling gives up at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_a_booking_ends_at_its_final_status_or_at_the_deadline() {
    let mut settings: marquee_e2e::MeshSettings = marquee_kit::testing::isolated_settings().await.unwrap();
    settings.cinema.no_orphan_seats = false;
    let mesh = Mesh::builder().settings(settings).start().await.unwrap();
    let channel = Endpoint::from_shared(mesh.url(Service::Cinema).unwrap()).unwrap().connect().await.unwrap();
    let showtime = build_hall(channel, 1).await.unwrap().remove(0);
    let config = Config { settle_deadline: Duration::from_secs(2), ..Config::smoke() };
    let client = Client::new(mesh.graphql_url().unwrap(), config.request_timeout).unwrap();

    let email = format!("poller.{}@example.com", Uuid::new_v4().simple());
    let registered = data(
        client
            .send(
                None,
                "mutation($input: RegisterInput!) { register(input: $input) { token } }",
                json!({ "input": { "email": email, "password": "correct horse battery staple", "name": "Poller" } }),
            )
            .await,
    );
    let token = registered["register"]["token"].as_str().unwrap().to_owned();
    let hold = |seat: &str| {
        client.send(
            Some(&token),
            "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id } }",
            json!({ "input": {
                "showtimeId": showtime,
                "seatIds": [seat],
                "idempotencyKey": Uuid::new_v4().to_string(),
            } }),
        )
    };
    let paid = data(hold(&seat_id(0)).await)["holdSeats"]["id"].as_str().unwrap().to_owned();
    let payment = data(
        client
            .send(
                Some(&token),
                "mutation($input: PayBookingInput!) { payBooking(input: $input) { status } }",
                json!({ "input": {
                    "bookingId": paid,
                    "paymentMethod": "pm_card_ok",
                    "idempotencyKey": Uuid::new_v4().to_string(),
                } }),
            )
            .await,
    );
    assert_eq!(payment["payBooking"]["status"], "CONFIRMED");
    let unpaid = data(hold(&seat_id(1)).await)["holdSeats"]["id"].as_str().unwrap().to_owned();

    let settled = flash_sale::poll_until_settled(&client, &token, &paid, &config).await;
    assert_eq!(settled.status.as_deref(), Some("CONFIRMED"), "{settled:?}");
    assert_eq!((settled.polls, settled.polls_without_status), (1, 0), "{settled:?}");

    let started = Instant::now();
    let settled = flash_sale::poll_until_settled(&client, &token, &unpaid, &config).await;
    assert_eq!(settled.status, None, "{settled:?}");
    assert_eq!(settled.polls_without_status, 0, "HELD is a status, just not a final one: {settled:?}");
    // Every 500 ms for 2 s: a few looks, and none past the deadline.
    assert!((2..=4).contains(&settled.polls), "{settled:?}");
    assert!(started.elapsed() < config.settle_deadline + Duration::from_secs(1));
    mesh.stop().await;
}

fn data(answer: Answer) -> Value {
    match answer {
        Answer::Data(data) => data,
        other => panic!("expected data, got {other:?}"),
    }
}
