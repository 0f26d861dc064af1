//! The cinema service through its real gRPC server against a real PostgreSQL; each
//! test gets its own database, migrated and seeded with the demo catalog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use marquee_cinema::Application;
use marquee_common::shutdown::Shutdown;
use marquee_common::{ApiError, ErrorCode, Settings};
use marquee_proto::cinema::v1 as pb;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

const BERLIN: &str = "b0000000-0000-4000-8000-000000000001";
const LISBON: &str = "b0000000-0000-4000-8000-000000000002";
const PROJECTIONIST: &str = "a0000000-0000-4000-8000-000000000001";

struct TestApp {
    settings: Settings,
    url: String,
    client: CinemaServiceClient<Channel>,
    db: PgPool,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_app() -> TestApp {
    marquee_common::telemetry::install_crypto_provider();
    let mut settings = marquee_common::testing::isolated_settings().await.unwrap();
    settings.cinema.seed_demo = true;
    let app = Application::build(settings.clone()).await.unwrap();
    let url = format!("http://{}", app.addr());
    let shutdown = Shutdown::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = CinemaServiceClient::connect(url.clone()).await.unwrap();
    let db = PgPool::connect(settings.postgres.url.expose()).await.unwrap();
    TestApp { settings, url, client, db, shutdown }
}

impl TestApp {
    /// The first upcoming showtime in Berlin's "Saal 1": rows A-J, 12 seats each, H-J premium.
    async fn showtime(&self) -> pb::Showtime {
        self.showtimes_in_saal_1().await.into_iter().next().unwrap()
    }

    async fn showtimes_in_saal_1(&self) -> Vec<pb::Showtime> {
        let all = self
            .client
            .clone()
            .list_showtimes(pb::ListShowtimesRequest { cinema_id: BERLIN.into(), ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .showtimes;
        all.into_iter().filter(|s| s.screen_name == "Saal 1").collect()
    }

    async fn lock(
        &self,
        showtime: &str,
        booking: &str,
        seats: &[&str],
    ) -> Result<pb::LockSeatsResponse, ApiError> {
        self.client
            .clone()
            .lock_seats(pb::LockSeatsRequest {
                showtime_id: showtime.into(),
                seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
                booking_id: booking.into(),
                ttl_seconds: 300,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn confirm(&self, showtime: &str, booking: &str, seats: &[&str]) -> Result<Vec<String>, ApiError> {
        self.client
            .clone()
            .confirm_seats(pb::ConfirmSeatsRequest {
                showtime_id: showtime.into(),
                booking_id: booking.into(),
                seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
            })
            .await
            .map(|r| r.into_inner().seat_ids)
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn release(&self, showtime: &str, booking: &str) -> Vec<String> {
        self.client
            .clone()
            .release_seats(pb::ReleaseSeatsRequest {
                showtime_id: showtime.into(),
                booking_id: booking.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .seat_ids
    }

    async fn seat_states(&self, showtime: &str) -> HashMap<String, pb::Seat> {
        let map = self
            .client
            .clone()
            .get_seat_map(pb::GetSeatMapRequest { showtime_id: showtime.into() })
            .await
            .unwrap()
            .into_inner();
        map.seats.into_iter().map(|s| (s.seat_id.clone(), s)).collect()
    }

    /// (status, booking_id) of every seat of the showtime that is not available.
    async fn taken_seats(&self, showtime: &str) -> BTreeMap<String, (String, Option<Uuid>)> {
        let rows: Vec<(String, String, Option<Uuid>)> = sqlx::query_as(
            "SELECT seat_id, status, booking_id FROM showtime_seats
              WHERE showtime_id = $1::uuid AND status <> 'available'",
        )
        .bind(showtime)
        .fetch_all(&self.db)
        .await
        .unwrap();
        rows.into_iter().map(|(seat, status, booking)| (seat, (status, booking))).collect()
    }

    async fn expire_holds(&self, showtime: &str, booking: &str) {
        sqlx::query(
            "UPDATE showtime_seats SET hold_expires_at = now() - interval '1 second'
              WHERE showtime_id = $1::uuid AND booking_id = $2::uuid AND status = 'held'",
        )
        .bind(showtime)
        .bind(booking)
        .execute(&self.db)
        .await
        .unwrap();
    }
}

fn new_booking() -> String {
    Uuid::new_v4().to_string()
}

fn held(booking: &str) -> (String, Option<Uuid>) {
    ("held".to_owned(), Some(booking.parse().unwrap()))
}

fn booked(booking: &str) -> (String, Option<Uuid>) {
    ("booked".to_owned(), Some(booking.parse().unwrap()))
}

fn seat_ids(seats: &[pb::Seat]) -> Vec<&str> {
    seats.iter().map(|s| s.seat_id.as_str()).collect()
}

fn code(status: tonic::Status) -> ErrorCode {
    ApiError::from_status(&status).code
}

// ---------------------------------------------------------------------------- catalog

#[tokio::test]
async fn movies_page_through_the_catalog_and_search_titles_case_insensitively() {
    let app = spawn_app().await;
    let mut client = app.client.clone();

    let mut titles = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_movies(pb::ListMoviesRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.movies.len() <= 3);
        titles.extend(page.movies.into_iter().map(|m| m.title));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        titles,
        ["Nightshift at the Marquee", "Orbit of Ashes", "Paper Lanterns", "The Last Projectionist"]
    );

    let found = client
        .list_movies(pb::ListMoviesRequest { search: "LAST proj".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.movies.len(), 1);
    let movie = &found.movies[0];
    assert_eq!((movie.id.as_str(), movie.runtime_minutes), (PROJECTIONIST, 118));
    assert_eq!(movie.release_date, "2026-03-13");
    assert!(found.next_page_token.is_empty());

    // LIKE wildcards in the search are literal characters.
    let none = client
        .list_movies(pb::ListMoviesRequest { search: "%".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(none.movies.is_empty());

    for bad in [
        pb::ListMoviesRequest { page_token: "not-a-token".into(), ..Default::default() },
        pb::ListMoviesRequest { page_size: -1, ..Default::default() },
    ] {
        assert_eq!(code(client.list_movies(bad).await.unwrap_err()), ErrorCode::BadUserInput);
    }
}

#[tokio::test]
async fn movies_and_cinemas_are_found_by_id_or_the_error_says_why_not() {
    let app = spawn_app().await;
    let mut client = app.client.clone();

    let movie =
        client.get_movie(pb::GetMovieRequest { id: PROJECTIONIST.into() }).await.unwrap().into_inner();
    assert_eq!(movie.title, "The Last Projectionist");
    assert_eq!(movie.genres, ["Drama"]);
    let cinema = client.get_cinema(pb::GetCinemaRequest { id: LISBON.into() }).await.unwrap().into_inner();
    assert_eq!((cinema.city.as_str(), cinema.time_zone.as_str()), ("Lisbon", "Europe/Lisbon"));

    let missing = Uuid::new_v4().to_string();
    let err = client.get_movie(pb::GetMovieRequest { id: missing.clone() }).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);
    let err = client.get_cinema(pb::GetCinemaRequest { id: missing.clone() }).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);
    let err = client.get_showtime(pb::GetShowtimeRequest { id: missing }).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);
    let err = client.get_movie(pb::GetMovieRequest { id: "42".into() }).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::BadUserInput);
}

#[tokio::test]
async fn cinemas_filter_by_city_ignoring_case() {
    let app = spawn_app().await;
    let mut client = app.client.clone();

    let all = client.list_cinemas(pb::ListCinemasRequest::default()).await.unwrap().into_inner().cinemas;
    let cities: BTreeSet<_> = all.iter().map(|c| c.city.as_str()).collect();
    assert_eq!(cities, BTreeSet::from(["Berlin", "Lisbon"]));

    let berlin =
        client.list_cinemas(pb::ListCinemasRequest { city: "bERLIN".into() }).await.unwrap().into_inner();
    assert_eq!(berlin.cinemas.len(), 1);
    assert_eq!(
        (berlin.cinemas[0].id.as_str(), berlin.cinemas[0].time_zone.as_str()),
        (BERLIN, "Europe/Berlin")
    );

    let nowhere = client.list_cinemas(pb::ListCinemasRequest { city: "Atlantis".into() }).await.unwrap();
    assert!(nowhere.into_inner().cinemas.is_empty());
}

#[tokio::test]
async fn showtimes_filter_by_movie_cinema_and_the_cinemas_local_date() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let now = chrono::Utc::now();

    // Without a date: everything from now on, in start order.
    let upcoming =
        client.list_showtimes(pb::ListShowtimesRequest::default()).await.unwrap().into_inner().showtimes;
    let starts: Vec<_> = upcoming.iter().map(|s| s.starts_at.unwrap().seconds).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]));
    assert!(starts.iter().all(|&s| s >= now.timestamp() - 1));
    let db_upcoming: i64 = sqlx::query_scalar("SELECT count(*) FROM showtimes WHERE starts_at >= now()")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(upcoming.len() as i64 >= db_upcoming && db_upcoming >= 6 * 4 * 3);

    let by_movie = client
        .list_showtimes(pb::ListShowtimesRequest { movie_id: PROJECTIONIST.into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .showtimes;
    assert!(!by_movie.is_empty());
    assert!(by_movie.iter().all(|s| s.movie_id == PROJECTIONIST));

    // Tomorrow as each cinema sees it: 4 slots a day per screen, Berlin has 2 screens.
    for (cinema, zone, expected) in [(BERLIN, "Europe/Berlin", 8), (LISBON, "Europe/Lisbon", 4)] {
        let tomorrow: String = sqlx::query_scalar("SELECT ((now() AT TIME ZONE $1)::date + 1)::text")
            .bind(zone)
            .fetch_one(&app.db)
            .await
            .unwrap();
        let shows = client
            .list_showtimes(pb::ListShowtimesRequest {
                cinema_id: cinema.into(),
                date: tomorrow.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .showtimes;
        assert_eq!(shows.len(), expected, "{cinema} on {tomorrow}");
        assert!(shows.iter().all(|s| s.cinema_id == cinema));
        let ids: Vec<Uuid> = shows.iter().map(|s| s.id.parse().unwrap()).collect();
        let all_local_tomorrow: bool = sqlx::query_scalar(
            "SELECT bool_and((starts_at AT TIME ZONE $1)::date = $2::date) FROM showtimes WHERE id = ANY ($3)",
        )
        .bind(zone)
        .bind(&tomorrow)
        .bind(&ids)
        .fetch_one(&app.db)
        .await
        .unwrap();
        assert!(all_local_tomorrow);
    }

    for bad in ["2026-02-30", "tomorrow"] {
        let err = client
            .list_showtimes(pb::ListShowtimesRequest { date: bad.into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(code(err), ErrorCode::BadUserInput);
    }
    let err = client
        .list_showtimes(pb::ListShowtimesRequest { cinema_id: "berlin".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::BadUserInput);
}

#[tokio::test]
async fn a_showtime_carries_its_screen_and_category_prices() {
    let app = spawn_app().await;
    let listed = app.showtime().await;
    let showtime = app
        .client
        .clone()
        .get_showtime(pb::GetShowtimeRequest { id: listed.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(showtime, listed);
    assert_eq!(showtime.cinema_id, BERLIN);
    let prices: Vec<_> = showtime
        .prices
        .iter()
        .map(|p| {
            let money = p.price.as_ref().unwrap();
            (p.category.as_str(), money.amount_minor, money.currency.as_str())
        })
        .collect();
    assert_eq!(prices, [("standard", 1150, "EUR"), ("premium", 1590, "EUR")]);
    let (starts, ends) = (showtime.starts_at.unwrap().seconds, showtime.ends_at.unwrap().seconds);
    assert!(ends > starts);
}

#[tokio::test]
async fn seeding_again_adds_nothing_and_keeps_seat_states() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let booking = new_booking();
    app.lock(&showtime.id, &booking, &["A1"]).await.unwrap();

    let counts = || async {
        let row: (i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM movies), (SELECT count(*) FROM cinemas),
                    (SELECT count(*) FROM screens), (SELECT count(*) FROM screen_seats),
                    (SELECT count(*) FROM showtimes), (SELECT count(*) FROM showtime_prices),
                    (SELECT count(*) FROM showtime_seats)",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        row
    };
    let before = counts().await;
    assert_eq!((before.0, before.1, before.2), (4, 2, 3));
    assert_eq!(before.3, 120 + 112 + 100);
    assert!(before.4 >= 6 * 4 * 3, "showtimes for at least six more days: {before:?}");

    // A second start against the same database runs migrations and the seed again.
    let again = Application::build(app.settings.clone()).await.unwrap();
    drop(again);
    assert_eq!(counts().await, before);
    assert_eq!(app.taken_seats(&showtime.id).await, BTreeMap::from([("A1".to_owned(), held(&booking))]));
}

// ------------------------------------------------------------------------- seat holds

#[tokio::test]
async fn a_lock_takes_every_requested_seat_or_none_and_names_the_taken_ones() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let (alice, bob) = (new_booking(), new_booking());

    let hold = app.lock(&showtime, &alice, &["H2", "A1", "A2"]).await.unwrap();
    assert_eq!(seat_ids(&hold.seats), ["A1", "A2", "H2"]);
    assert!(hold.seats.iter().all(|s| s.state == pb::SeatState::Held as i32));
    let total = hold.total.unwrap();
    assert_eq!((total.amount_minor, total.currency.as_str()), (1150 + 1150 + 1590, "EUR"));
    let expires = marquee_common::time::from_proto(&hold.expires_at.unwrap()).unwrap();
    let ttl = expires - chrono::Utc::now();
    assert!(ttl > chrono::Duration::seconds(290) && ttl <= chrono::Duration::seconds(300), "{ttl}");

    let err = app.lock(&showtime, &bob, &["A3", "A2", "A4", "H2"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::SeatUnavailable);
    assert_eq!(err.meta_list("seat_ids"), ["A2", "H2"]);

    // Bob got nothing, not even the free seats he asked for.
    let taken = app.taken_seats(&showtime).await;
    assert_eq!(
        taken,
        BTreeMap::from([
            ("A1".to_owned(), held(&alice)),
            ("A2".to_owned(), held(&alice)),
            ("H2".to_owned(), held(&alice))
        ])
    );
    app.lock(&showtime, &bob, &["A3", "A4"]).await.unwrap();
}

#[tokio::test]
async fn bad_lock_requests_are_refused_before_touching_seats() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let booking = new_booking();
    let max = app.settings.cinema.max_seats_per_hold;

    let err = app.lock(&showtime, &booking, &["A1", "Z99", "Q1"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BadUserInput);
    assert_eq!(err.meta_list("seat_ids"), ["Q1", "Z99"]);

    let too_many: Vec<String> = (1..=max + 1).map(|n| format!("B{n}")).collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    for (seats, booking_id, showtime_id) in [
        (&["A1", "A1"][..], booking.as_str(), showtime.as_str()),
        (&[][..], booking.as_str(), showtime.as_str()),
        (&too_many[..], booking.as_str(), showtime.as_str()),
        (&["A1"][..], "not-a-uuid", showtime.as_str()),
        (&["A1"][..], booking.as_str(), "not-a-uuid"),
    ] {
        let err = app.lock(showtime_id, booking_id, seats).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::BadUserInput, "{seats:?} {booking_id} {showtime_id}");
    }
    for ttl_seconds in [0, 3601] {
        let err = app
            .client
            .clone()
            .lock_seats(pb::LockSeatsRequest {
                showtime_id: showtime.clone(),
                seat_ids: vec!["A1".into()],
                booking_id: booking.clone(),
                ttl_seconds,
            })
            .await
            .unwrap_err();
        assert_eq!(code(err), ErrorCode::BadUserInput);
    }
    let err = app.lock(&Uuid::new_v4().to_string(), &booking, &["A1"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(app.taken_seats(&showtime).await.is_empty());

    sqlx::query(
        "UPDATE showtimes SET starts_at = now() - interval '1 minute', ends_at = now() + interval '2 hours'
          WHERE id = $1::uuid",
    )
    .bind(&showtime)
    .execute(&app.db)
    .await
    .unwrap();
    let err = app.lock(&showtime, &booking, &["A1"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BadUserInput);
    assert!(err.message.contains("started"), "{err}");
}

#[tokio::test]
async fn the_seat_map_shows_each_seat_with_price_and_state() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let (holder, buyer, late) = (new_booking(), new_booking(), new_booking());
    app.lock(&showtime, &holder, &["C1", "C2"]).await.unwrap();
    app.lock(&showtime, &buyer, &["C3"]).await.unwrap();
    app.confirm(&showtime, &buyer, &["C3"]).await.unwrap();
    app.lock(&showtime, &late, &["C5"]).await.unwrap();
    app.expire_holds(&showtime, &late).await;
    sqlx::query(
        "UPDATE showtime_seats SET status = 'blocked' WHERE showtime_id = $1::uuid AND seat_id = 'C4'",
    )
    .bind(&showtime)
    .execute(&app.db)
    .await
    .unwrap();

    let seats = app.seat_states(&showtime).await;
    assert_eq!(seats.len(), 120);
    let state = |id: &str| pb::SeatState::try_from(seats[id].state).unwrap();
    assert_eq!(state("C1"), pb::SeatState::Held);
    assert_eq!(state("C2"), pb::SeatState::Held);
    assert_eq!(state("C3"), pb::SeatState::Booked);
    assert_eq!(state("C4"), pb::SeatState::Blocked);
    assert_eq!(state("C5"), pb::SeatState::Available, "an expired hold shows as free");
    assert_eq!(state("C6"), pb::SeatState::Available);

    let c1 = &seats["C1"];
    assert_eq!((c1.row.as_str(), c1.number, c1.category.as_str()), ("C", 1, "standard"));
    assert_eq!(c1.price.as_ref().unwrap().amount_minor, 1150);
    let j12 = &seats["J12"];
    assert_eq!((j12.category.as_str(), j12.price.as_ref().unwrap().amount_minor), ("premium", 1590));

    let err = app
        .client
        .clone()
        .get_seat_map(pb::GetSeatMapRequest { showtime_id: Uuid::new_v4().to_string() })
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);
}

#[tokio::test]
async fn an_expired_hold_is_taken_by_the_next_booking_without_any_sweeper() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let (first, second) = (new_booking(), new_booking());
    app.lock(&showtime, &first, &["D1", "D2"]).await.unwrap();
    assert_eq!(app.lock(&showtime, &second, &["D2", "D3"]).await.unwrap_err().meta_list("seat_ids"), ["D2"]);

    app.expire_holds(&showtime, &first).await;
    let hold = app.lock(&showtime, &second, &["D2", "D3"]).await.unwrap();
    assert_eq!(seat_ids(&hold.seats), ["D2", "D3"]);

    // The first booking lost D2, so it can confirm neither seat: nothing changes.
    let err = app.confirm(&showtime, &first, &["D1", "D2"]).await.unwrap_err();
    assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatUnavailable, vec!["D2".to_owned()]));
    assert_eq!(
        app.taken_seats(&showtime).await,
        BTreeMap::from([
            ("D1".to_owned(), held(&first)),
            ("D2".to_owned(), held(&second)),
            ("D3".to_owned(), held(&second))
        ])
    );
}

#[tokio::test]
async fn a_repeated_lock_by_the_same_booking_succeeds_and_extends_the_hold() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let booking = new_booking();
    app.lock(&showtime, &booking, &["E1", "E2"]).await.unwrap();
    app.expire_holds(&showtime, &booking).await;

    let retry = app.lock(&showtime, &booking, &["E1", "E2"]).await.unwrap();
    assert_eq!(seat_ids(&retry.seats), ["E1", "E2"]);
    let live: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM showtime_seats WHERE showtime_id = $1::uuid AND hold_expires_at > now()",
    )
    .bind(&showtime)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(live, 2);
}

#[tokio::test]
async fn confirm_books_only_this_bookings_holds_and_is_idempotent() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let (owner, other) = (new_booking(), new_booking());
    app.lock(&showtime, &owner, &["F1", "F2"]).await.unwrap();

    let err = app.confirm(&showtime, &other, &["F1"]).await.unwrap_err();
    assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatUnavailable, vec!["F1".to_owned()]));
    let err = app.confirm(&showtime, &owner, &["F1", "F2", "F3"]).await.unwrap_err();
    assert_eq!(err.meta_list("seat_ids"), ["F3"]);
    assert_eq!(app.taken_seats(&showtime).await.values().filter(|(s, _)| s == "booked").count(), 0);

    // Payment can land after the hold's expiry: the seats are still this booking's.
    app.expire_holds(&showtime, &owner).await;
    assert_eq!(app.confirm(&showtime, &owner, &["F2", "F1"]).await.unwrap(), ["F1", "F2"]);
    assert_eq!(app.confirm(&showtime, &owner, &["F1", "F2"]).await.unwrap(), ["F1", "F2"]);
    assert_eq!(
        app.taken_seats(&showtime).await,
        BTreeMap::from([("F1".to_owned(), booked(&owner)), ("F2".to_owned(), booked(&owner))])
    );

    // Booked seats are not lockable by anyone, including their owner.
    assert_eq!(app.lock(&showtime, &other, &["F1"]).await.unwrap_err().code, ErrorCode::SeatUnavailable);
    assert_eq!(app.lock(&showtime, &owner, &["F1"]).await.unwrap_err().code, ErrorCode::SeatUnavailable);
}

#[tokio::test]
async fn release_frees_only_this_bookings_holds_and_is_idempotent() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let (mine, theirs) = (new_booking(), new_booking());
    app.lock(&showtime, &mine, &["G1", "G2", "G3"]).await.unwrap();
    app.confirm(&showtime, &mine, &["G1"]).await.unwrap();
    app.lock(&showtime, &theirs, &["G4"]).await.unwrap();

    assert_eq!(app.release(&showtime, &mine).await, ["G2", "G3"]);
    assert!(app.release(&showtime, &mine).await.is_empty());
    assert!(app.release(&showtime, &new_booking()).await.is_empty());
    assert_eq!(
        app.taken_seats(&showtime).await,
        BTreeMap::from([("G1".to_owned(), booked(&mine)), ("G4".to_owned(), held(&theirs))])
    );
    // Freed seats are free at once.
    app.lock(&showtime, &theirs, &["G2", "G3"]).await.unwrap();

    let err = app
        .client
        .clone()
        .release_seats(pb::ReleaseSeatsRequest { showtime_id: Uuid::new_v4().to_string(), booking_id: mine })
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);
}

// ------------------------------------------------------------------------------ races

/// Every task opens its own connection and fires its lock at the same moment.
async fn race(
    app: &TestApp,
    showtime: &str,
    wanted: Vec<Vec<String>>,
) -> Vec<(String, Vec<String>, Result<Vec<String>, ApiError>)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(wanted.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for seats in wanted {
        let (url, showtime, barrier) = (app.url.clone(), showtime.to_owned(), barrier.clone());
        tasks.spawn(async move {
            let mut client = CinemaServiceClient::connect(url).await.unwrap();
            let booking = new_booking();
            let request = pb::LockSeatsRequest {
                showtime_id: showtime,
                seat_ids: seats.clone(),
                booking_id: booking.clone(),
                ttl_seconds: 300,
            };
            barrier.wait().await;
            let outcome = client
                .lock_seats(request)
                .await
                .map(|r| r.into_inner().seats.into_iter().map(|s| s.seat_id).collect())
                .map_err(|s| ApiError::from_status(&s));
            (booking, seats, outcome)
        });
    }
    tasks.join_all().await
}

#[tokio::test]
async fn concurrent_overlapping_locks_never_give_a_seat_to_two_bookings() {
    let app = spawn_app().await;
    let showtimes = app.showtimes_in_saal_1().await;

    for showtime in showtimes.iter().take(3).map(|s| s.id.as_str()) {
        // 32 clients, each wanting 3 seats of row B; neighbours overlap by one or two.
        let wanted: Vec<Vec<String>> =
            (0..32).map(|i| (0..3).map(|k| format!("B{}", (i * 2 + k * 3) % 12 + 1)).collect()).collect();
        let results = race(&app, showtime, wanted).await;

        let mut owner_of: BTreeMap<String, (String, Option<Uuid>)> = BTreeMap::new();
        let mut refusals = Vec::new();
        for (booking, seats, outcome) in &results {
            match outcome {
                Ok(got) => {
                    let mut asked = seats.clone();
                    asked.sort();
                    assert_eq!(got, &asked, "a successful lock holds exactly what was asked");
                    for seat in got {
                        let previous = owner_of.insert(seat.clone(), held(booking));
                        assert!(previous.is_none(), "seat {seat} given to two bookings");
                    }
                }
                Err(err) => {
                    assert_eq!(err.code, ErrorCode::SeatUnavailable, "{err}");
                    let named = err.meta_list("seat_ids");
                    assert!(
                        !named.is_empty() && named.iter().all(|s| seats.contains(s)),
                        "{named:?} vs {seats:?}"
                    );
                    refusals.push(named);
                }
            }
        }
        assert!(!owner_of.is_empty(), "someone must win");
        // The database holds exactly what the winners were told, nothing more.
        assert_eq!(app.taken_seats(showtime).await, owner_of);
        // Every refusal named seats that really are taken by a winner.
        for named in refusals {
            assert!(named.iter().all(|s| owner_of.contains_key(s)), "{named:?} refused but free");
        }
    }
}

#[tokio::test]
async fn thirty_two_clients_racing_for_the_same_seats_leave_exactly_one_winner() {
    let app = spawn_app().await;
    let seats: Vec<String> = ["J5", "J6", "J7"].map(String::from).to_vec();

    for showtime in app.showtimes_in_saal_1().await.iter().take(3).map(|s| s.id.as_str()) {
        let results = race(&app, showtime, vec![seats.clone(); 32]).await;

        let winners: Vec<_> = results.iter().filter(|(_, _, r)| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "exactly one winner");
        for (_, _, outcome) in results.iter().filter(|(_, _, r)| r.is_err()) {
            let err = outcome.as_ref().unwrap_err();
            assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatUnavailable, seats.clone()));
        }
        let winner = &winners[0].0;
        assert_eq!(
            app.taken_seats(showtime).await,
            seats.iter().map(|s| (s.clone(), held(winner))).collect::<BTreeMap<_, _>>()
        );
    }
}
