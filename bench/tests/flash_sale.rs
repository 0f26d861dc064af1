//! The flash sale in small (32 customers, 5 hot seats, one attempt each) on the real mesh
//! and real stores, with the full verification the benchmark runs: it must never
//! double-book, double-charge or lose a notification, and every refusal must be
//! SEAT_UNAVAILABLE. Runs in `scripts/test`; the full-size run is `scripts/bench`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use marquee_bench::catalog::build_hall;
use marquee_bench::flash_sale::{self, Config};
use marquee_bench::mesh::Mesh;
use tonic::transport::Endpoint;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_flash_sale_sells_every_seat_once_charges_once_and_notifies_once() {
    let mut settings = marquee_common::testing::isolated_settings().await.unwrap();
    settings.cinema.no_orphan_seats = false;
    let mesh = Mesh::start(settings).await.unwrap();
    let channel = Endpoint::from_shared(mesh.cinema_url()).unwrap().connect().await.unwrap();
    let showtime = build_hall(channel, 1).await.unwrap().remove(0);
    let config = Config::smoke();

    let mut outcome = flash_sale::run(&mesh.graphql_url().unwrap(), &showtime, &config).await.unwrap();
    let verdict = flash_sale::verify(&mesh.settings, &showtime, &outcome, &config).await.unwrap();
    let report = flash_sale::outcome_json(&mut outcome, &config);

    // Every customer got a definite answer: a confirmed seat or SEAT_UNAVAILABLE.
    assert_eq!(outcome.attempts, config.users, "{report}");
    assert!(outcome.gave_up.is_empty() && outcome.unpaid.is_empty(), "{report}");
    assert_eq!(outcome.confirmed.len() + outcome.refused.len(), config.users, "{report}");
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
    mesh.stop().await;
}
