//! The cinema service through its real gRPC server against a real PostgreSQL; each
//! test gets its own database, migrated and seeded with the demo catalog.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use marquee_cinema::Application;
use marquee_cinema::Settings;
use marquee_kit::shutdown::Shutdown;
use marquee_kit::{ApiError, ErrorCode};
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
    /// Where the service serves `GET /metrics`.
    metrics: std::net::SocketAddr,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    marquee_kit::telemetry::install_crypto_provider();
    let mut settings: marquee_cinema::Settings = marquee_kit::testing::isolated_settings().await.unwrap();
    settings.cinema.seed_demo = true;
    configure(&mut settings);
    let app = Application::build(settings.clone()).await.unwrap();
    let (url, metrics) = (format!("http://{}", app.addr()), app.metrics_addr());
    let shutdown = Shutdown::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = CinemaServiceClient::connect(url.clone()).await.unwrap();
    let db = PgPool::connect(settings.postgres.url.expose()).await.unwrap();
    TestApp { settings, url, client, db, metrics, shutdown }
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
        self.spawn_lock(showtime, booking, seats).await.unwrap()
    }

    /// `lock` on its own task, for tests that hold it up inside PostgreSQL.
    fn spawn_lock(
        &self,
        showtime: &str,
        booking: &str,
        seats: &[&str],
    ) -> tokio::task::JoinHandle<Result<pb::LockSeatsResponse, ApiError>> {
        let mut client = self.client.clone();
        let request = pb::LockSeatsRequest {
            showtime_id: showtime.into(),
            seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
            booking_id: booking.into(),
            ttl_seconds: 300,
            ..Default::default()
        };
        tokio::spawn(async move {
            client
                .lock_seats(request)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| ApiError::from_status(&s))
        })
    }

    /// `lock` for `user`, who may have at most `max_holds` live holds on the showtime.
    async fn lock_as(
        &self,
        user: &str,
        max_holds: u32,
        showtime: &str,
        booking: &str,
        seats: &[&str],
    ) -> Result<pb::LockSeatsResponse, ApiError> {
        let request = pb::LockSeatsRequest {
            showtime_id: showtime.into(),
            seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
            booking_id: booking.into(),
            ttl_seconds: 300,
            user_id: user.into(),
            max_holds_per_user: max_holds,
        };
        let answer = self.client.clone().lock_seats(request).await;
        answer.map(tonic::Response::into_inner).map_err(|s| ApiError::from_status(&s))
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

/// For tests that expire holds with `expire_holds`: that rewrites expiries in SQL, out
/// of sight of the seat board (which judges expiry by its own clock and has its own
/// tests), so these run without it: they are about the database deciding alone.
async fn spawn_app_for_time_travel() -> TestApp {
    spawn_app_with(|s| s.cinema.seat_board = marquee_cinema::settings::SeatBoardMode::Off).await
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
async fn batch_lookups_answer_the_known_ids_in_one_call_and_skip_unknown_ones() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let missing = Uuid::new_v4().to_string();

    let ids = vec![PROJECTIONIST.to_owned(), missing.clone(), PROJECTIONIST.to_owned()];
    let movies = client.get_movies(pb::GetMoviesRequest { ids }).await.unwrap().into_inner().movies;
    assert_eq!(movies.iter().map(|m| m.title.as_str()).collect::<Vec<_>>(), ["The Last Projectionist"]);

    let ids = vec![BERLIN.to_owned(), LISBON.to_owned(), missing.clone()];
    let cinemas = client.get_cinemas(pb::GetCinemasRequest { ids }).await.unwrap().into_inner().cinemas;
    let cities: BTreeSet<&str> = cinemas.iter().map(|c| c.city.as_str()).collect();
    assert_eq!(cities, BTreeSet::from(["Berlin", "Lisbon"]));

    let wanted = app.showtimes_in_saal_1().await;
    let mut ids: Vec<String> = wanted.iter().take(3).map(|s| s.id.clone()).collect();
    ids.push(missing);
    let found = client.get_showtimes(pb::GetShowtimesRequest { ids }).await.unwrap().into_inner().showtimes;
    assert_eq!(found.len(), wanted.len().min(3));
    for showtime in &found {
        let listed = wanted.iter().find(|s| s.id == showtime.id).unwrap();
        assert_eq!(showtime, listed, "the same showtime, prices included");
    }

    // Nothing asked, nothing answered; a malformed id or an oversized batch is refused.
    let none = client.get_movies(pb::GetMoviesRequest { ids: vec![] }).await.unwrap().into_inner();
    assert!(none.movies.is_empty());
    let err = client.get_movies(pb::GetMoviesRequest { ids: vec!["42".into()] }).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::BadUserInput);
    let too_many = vec![BERLIN.to_owned(); 101];
    let err = client.get_cinemas(pb::GetCinemasRequest { ids: too_many }).await.unwrap_err();
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

    // A range: Berlin over the next three local days holds exactly those days' shows.
    let (first, last): (String, String) = sqlx::query_as(
        "SELECT ((now() AT TIME ZONE 'Europe/Berlin')::date + 1)::text,
                ((now() AT TIME ZONE 'Europe/Berlin')::date + 3)::text",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    let range = client
        .list_showtimes(pb::ListShowtimesRequest {
            cinema_id: BERLIN.into(),
            date: first.clone(),
            end_date: last.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .showtimes;
    assert_eq!(range.len(), 3 * 8, "Berlin from {first} to {last}");
    assert!(range.windows(2).all(|w| w[0].starts_at.unwrap().seconds <= w[1].starts_at.unwrap().seconds));
    for (date, end) in [(last.as_str(), first.as_str()), ("", first.as_str())] {
        let err = client
            .list_showtimes(pb::ListShowtimesRequest {
                date: date.into(),
                end_date: end.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(code(err), ErrorCode::BadUserInput, "{date}..{end}");
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
    let expires = marquee_kit::time::from_proto(&hold.expires_at.unwrap()).unwrap();
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
                ..Default::default()
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
    let app = spawn_app_for_time_travel().await;
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
async fn a_user_holds_at_most_their_limit_of_bookings_per_showtime_even_when_racing() {
    let app = spawn_app_for_time_travel().await;
    let showtimes = app.showtimes_in_saal_1().await;
    let (showtime, other_showtime) = (showtimes[0].id.as_str(), showtimes[1].id.as_str());
    let (ida, bo) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());

    // Six holds of one user at once, on six free seats: two are taken, four refused
    // before anything was locked.
    let seats = ["A1", "A2", "A3", "A4", "A5", "A6"];
    let bookings: Vec<String> = seats.iter().map(|_| new_booking()).collect();
    let answers = futures::future::join_all(
        seats
            .iter()
            .zip(&bookings)
            .map(|(seat, booking)| app.lock_as(&ida, 2, showtime, booking, std::slice::from_ref(seat))),
    )
    .await;
    let won: Vec<&String> =
        bookings.iter().zip(&answers).filter(|(_, a)| a.is_ok()).map(|(b, _)| b).collect();
    assert_eq!(won.len(), 2, "{answers:?}");
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(
            (refused.code, refused.metadata.get("limit").map(String::as_str)),
            (ErrorCode::Conflict, Some("2"))
        );
    }
    let taken = app.taken_seats(showtime).await;
    assert_eq!(taken.len(), 2, "the refused holds locked nothing: {taken:?}");
    assert!(taken.values().all(|(status, booking)| status == "held"
        && won.iter().any(|w| Some(w.parse::<Uuid>().unwrap()) == *booking)));

    // A repeat of a live hold is the same hold, not another; other users and other
    // showtimes have their own count; without a limit nothing is counted.
    let first_seat = taken.iter().find(|(_, (_, b))| *b == Some(won[0].parse().unwrap())).unwrap().0.clone();
    app.lock_as(&ida, 2, showtime, won[0], &[first_seat.as_str()]).await.unwrap();
    app.lock_as(&bo, 2, showtime, &new_booking(), &["B1"]).await.unwrap();
    app.lock_as(&ida, 2, other_showtime, &new_booking(), &["A1"]).await.unwrap();
    app.lock_as(&ida, 0, showtime, &new_booking(), &["B2"]).await.unwrap();
    let full = app.lock_as(&ida, 2, showtime, &new_booking(), &["B3"]).await.unwrap_err();
    assert_eq!(full.code, ErrorCode::Conflict, "{full:?}");

    // A booked, a released and a lapsed hold count no more: each frees a place.
    let seat_of = |booking: &str| {
        let taken = taken.clone();
        let booking: Uuid = booking.parse().unwrap();
        move || taken.iter().find(|(_, (_, b))| *b == Some(booking)).unwrap().0.clone()
    };
    let confirmed_seat = seat_of(won[0])();
    app.confirm(showtime, won[0], &[confirmed_seat.as_str()]).await.unwrap();
    let third = new_booking();
    app.lock_as(&ida, 2, showtime, &third, &["C1"]).await.unwrap();
    assert_eq!(
        app.lock_as(&ida, 2, showtime, &new_booking(), &["C2"]).await.unwrap_err().code,
        ErrorCode::Conflict
    );
    app.release(showtime, won[1]).await;
    app.lock_as(&ida, 2, showtime, &new_booking(), &["C3"]).await.unwrap();
    app.expire_holds(showtime, &third).await;
    app.lock_as(&ida, 2, showtime, &new_booking(), &["C4"]).await.unwrap();
    assert_eq!(
        app.lock_as(&ida, 2, showtime, &new_booking(), &["C5"]).await.unwrap_err().code,
        ErrorCode::Conflict
    );

    let bad = app.lock_as("not-a-user", 2, showtime, &new_booking(), &["C6"]).await.unwrap_err();
    assert_eq!(bad.code, ErrorCode::BadUserInput, "{bad:?}");
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
                ..Default::default()
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

// --------------------------------------------------------------------- hold rules

impl TestApp {
    async fn extend(&self, showtime: &str, booking: &str) -> Result<pb::ExtendHoldResponse, ApiError> {
        self.client
            .clone()
            .extend_hold(pb::ExtendHoldRequest { showtime_id: showtime.into(), booking_id: booking.into() })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn hold_expiry(&self, showtime: &str, seat: &str) -> chrono::DateTime<chrono::Utc> {
        sqlx::query_scalar(
            "SELECT hold_expires_at FROM showtime_seats WHERE showtime_id = $1::uuid AND seat_id = $2",
        )
        .bind(showtime)
        .bind(seat)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }
}

impl TestApp {
    async fn list_holds(
        &self,
        min_age_ms: u32,
        after: Option<&pb::ListedHold>,
        limit: u32,
    ) -> Result<Vec<pb::ListedHold>, ApiError> {
        let after =
            after.map(|hold| pb::HoldCursor { held_at: hold.held_at, booking_id: hold.booking_id.clone() });
        self.client
            .clone()
            .list_holds(pb::ListHoldsRequest { min_age_ms, after, limit })
            .await
            .map(|r| r.into_inner().holds)
            .map_err(|s| ApiError::from_status(&s))
    }

    /// Makes `booking`'s holds look taken `seconds` ago.
    async fn age_holds(&self, booking: &str, seconds: i32) {
        sqlx::query(
            "UPDATE showtime_seats SET held_at = now() - make_interval(secs => $2)
              WHERE booking_id = $1::uuid AND status = 'held'",
        )
        .bind(booking)
        .bind(f64::from(seconds))
        .execute(&self.db)
        .await
        .unwrap();
    }
}

fn listed(holds: &[pb::ListedHold]) -> Vec<(&str, &str)> {
    holds.iter().map(|hold| (hold.showtime_id.as_str(), hold.booking_id.as_str())).collect()
}

#[tokio::test]
async fn live_holds_are_listed_once_old_enough_oldest_first_a_page_at_a_time() {
    let app = spawn_app().await;
    let showtimes = app.showtimes_in_saal_1().await;
    let (first, second) = (showtimes[0].id.as_str(), showtimes[1].id.as_str());
    let [oldest, middle, youngest, fresh, paid, released, lapsed] = std::array::from_fn(|_| new_booking());
    app.lock(first, &oldest, &["A1", "A2"]).await.unwrap();
    app.lock(second, &middle, &["A1"]).await.unwrap();
    app.lock(first, &youngest, &["B1"]).await.unwrap();
    app.lock(first, &fresh, &["B2"]).await.unwrap();
    for (booking, seat) in [(&paid, "C1"), (&released, "C2"), (&lapsed, "C3")] {
        app.lock(first, booking, &[seat]).await.unwrap();
        app.age_holds(booking, 40).await;
    }
    app.confirm(first, &paid, &["C1"]).await.unwrap();
    app.release(first, &released).await;
    app.expire_holds(first, &lapsed).await;
    for (booking, seconds) in [(&oldest, 30), (&middle, 20), (&youngest, 10)] {
        app.age_holds(booking, seconds).await;
    }
    // A repeated lock by the same booking is the same hold: it keeps its age.
    app.lock(first, &oldest, &["A1", "A2"]).await.unwrap();

    // Only live holds of at least the age asked for: not booked, released or lapsed
    // seats, and one entry per booking and showtime, however many seats it holds.
    let all = app.list_holds(5_000, None, 10).await.unwrap();
    assert_eq!(
        listed(&all),
        [(first, oldest.as_str()), (second, middle.as_str()), (first, youngest.as_str())]
    );
    let older = app.list_holds(25_000, None, 10).await.unwrap();
    assert_eq!(listed(&older), [(first, oldest.as_str())]);
    assert!(app.list_holds(60_000, None, 10).await.unwrap().is_empty());
    let with_fresh = app.list_holds(0, None, 10).await.unwrap();
    assert_eq!(with_fresh.len(), 4, "{with_fresh:?}");
    assert_eq!(with_fresh[3].booking_id, fresh);

    // Pages go on after the last hold of the previous one.
    let page = app.list_holds(5_000, None, 2).await.unwrap();
    assert_eq!(listed(&page), listed(&all[..2]));
    let next = app.list_holds(5_000, page.last(), 2).await.unwrap();
    assert_eq!(listed(&next), listed(&all[2..]));
    assert!(app.list_holds(5_000, next.last(), 2).await.unwrap().is_empty());

    for limit in [0, 1001] {
        let err = app.list_holds(5_000, None, limit).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::BadUserInput, "{limit}: {err}");
    }
    let bad_cursor = pb::ListedHold { booking_id: "nobody".to_owned(), ..all[0].clone() };
    let err = app.list_holds(5_000, Some(&bad_cursor), 2).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BadUserInput, "{err}");
}

#[tokio::test]
async fn the_seat_functions_plan_their_statements_once() {
    let app = spawn_app().await;
    let functions = [
        "cinema_lock_seats",
        "cinema_lock_seats_unfenced",
        "cinema_clean_block_exists",
        "cinema_stranded_seats",
        "cinema_confirm_seats",
        "cinema_release_seats",
        "cinema_release_seats_unfenced",
        "cinema_cancel_seats",
        "cinema_extend_hold",
    ];
    // A CREATE OR REPLACE drops a function's SET clauses: each migration replacing one
    // of these must set it again.
    let settings: Vec<(String, Option<Vec<String>>)> =
        sqlx::query_as("SELECT proname::text, proconfig FROM pg_proc WHERE proname = ANY ($1) ORDER BY 1")
            .bind(functions)
            .fetch_all(&app.db)
            .await
            .unwrap();
    // Every overload of each (cinema_lock_seats keeps the last version's call).
    let names: BTreeSet<&str> = settings.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, functions.into_iter().collect(), "{settings:?}");
    for (function, config) in settings {
        let config = config.unwrap_or_default();
        assert!(config.iter().any(|c| c == "plan_cache_mode=force_generic_plan"), "{function}: {config:?}");
    }
}

#[tokio::test]
async fn metrics_count_calls_and_the_seats_held_now() {
    let app = spawn_app().await;
    let showtime = app.showtime().await;
    let (kept, lapsed) = (new_booking(), new_booking());
    app.lock(&showtime.id, &kept, &["A1", "A2", "A3"]).await.unwrap();
    app.lock(&showtime.id, &lapsed, &["B1", "B2"]).await.unwrap();
    // A lapsed hold no longer holds its seats, swept or not.
    sqlx::query(
        "UPDATE showtime_seats SET hold_expires_at = now() - interval '1 second' WHERE booking_id = $1::uuid",
    )
    .bind(&lapsed)
    .execute(&app.db)
    .await
    .unwrap();
    let missing = Uuid::new_v4().to_string();
    let err = app.client.clone().get_movie(pb::GetMovieRequest { id: missing }).await.unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);

    let text = marquee_kit::testing::scrape(app.metrics).await.unwrap();
    let calls = |rpc: &str, code: &str| {
        let series = format!(
            "grpc_server_requests_total{{service=\"marquee.cinema.v1.CinemaService\",rpc=\"{rpc}\",code=\"{code}\"}}"
        );
        marquee_kit::testing::sample(&text, &series)
    };
    assert_eq!(calls("LockSeats", "OK"), Some(2.0), "{text}");
    assert_eq!(calls("GetMovie", "NOT_FOUND"), Some(1.0), "{text}");
    assert_eq!(marquee_kit::testing::sample(&text, "cinema_holds_active"), Some(3.0), "{text}");
}

#[tokio::test]
async fn holds_are_refused_for_showtimes_starting_within_the_cutoff() {
    let app = spawn_app_with(|s| s.cinema.hold_cutoff_seconds = 3600).await;
    let showtimes = app.showtimes_in_saal_1().await;
    let (soon, later) = (showtimes[0].id.as_str(), showtimes[1].id.as_str());
    // Minutes past the round slot times, so no clash with the seeded (screen, start) pairs.
    for (showtime, starts_in) in [(soon, "59 minutes 7 seconds"), (later, "61 minutes 7 seconds")] {
        sqlx::query(
            "UPDATE showtimes SET starts_at = now() + $2::interval, ends_at = now() + $2::interval + interval '2 hours'
              WHERE id = $1::uuid",
        )
        .bind(showtime)
        .bind(starts_in)
        .execute(&app.db)
        .await
        .unwrap();
    }

    let booking = new_booking();
    let err = app.lock(soon, &booking, &["A1"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BadUserInput);
    assert!(err.message.contains("closed"), "{err}");
    let closed_at = chrono::DateTime::parse_from_rfc3339(&err.metadata["closed_at"]).unwrap();
    let minutes_ago = (chrono::Utc::now() - closed_at.to_utc()).num_seconds();
    assert!((50..=60).contains(&minutes_ago), "closed {minutes_ago}s ago");
    assert!(app.taken_seats(soon).await.is_empty());

    app.lock(later, &booking, &["A1"]).await.unwrap();
}

#[tokio::test]
async fn confirm_re_acquires_seats_a_lapsed_hold_left_free_and_changes_nothing_if_one_was_taken() {
    let app = spawn_app_for_time_travel().await;
    let showtime = app.showtime().await.id;
    let (late, unlucky, thief) = (new_booking(), new_booking(), new_booking());

    // The hold lapsed and was released, but nobody took the seats: payment still wins them.
    app.lock(&showtime, &late, &["H5", "H6"]).await.unwrap();
    app.expire_holds(&showtime, &late).await;
    assert_eq!(app.release(&showtime, &late).await, ["H5", "H6"]);
    assert_eq!(app.confirm(&showtime, &late, &["H5", "H6"]).await.unwrap(), ["H5", "H6"]);
    assert_eq!(app.confirm(&showtime, &late, &["H5", "H6"]).await.unwrap(), ["H5", "H6"]);

    // Here one seat went to another booking in between (and even came free again).
    app.lock(&showtime, &unlucky, &["H8", "H9"]).await.unwrap();
    app.expire_holds(&showtime, &unlucky).await;
    app.lock(&showtime, &thief, &["H9"]).await.unwrap();
    assert_eq!(app.release(&showtime, &thief).await, ["H9"]);
    let before = app.taken_seats(&showtime).await;
    let err = app.confirm(&showtime, &unlucky, &["H8", "H9"]).await.unwrap_err();
    assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatUnavailable, vec!["H9".to_owned()]));
    assert_eq!(app.taken_seats(&showtime).await, before);
    assert_eq!(
        before,
        BTreeMap::from([
            ("H5".to_owned(), booked(&late)),
            ("H6".to_owned(), booked(&late)),
            ("H8".to_owned(), held(&unlucky)),
        ])
    );
}

#[tokio::test]
async fn a_hold_is_extended_once_and_only_while_it_lives() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let extension = i64::from(app.settings.cinema.hold_extension_seconds);
    let (paying, lapsed) = (new_booking(), new_booking());

    let hold = app.lock(&showtime, &paying, &["I1", "I2"]).await.unwrap();
    let first_expiry = marquee_kit::time::from_proto(&hold.expires_at.unwrap()).unwrap();
    let extended = app.extend(&showtime, &paying).await.unwrap();
    assert_eq!(extended.seat_ids, ["I1", "I2"]);
    let new_expiry = marquee_kit::time::from_proto(&extended.expires_at.unwrap()).unwrap();
    assert_eq!((new_expiry - first_expiry).num_seconds(), extension);
    assert_eq!(app.hold_expiry(&showtime, "I2").await, new_expiry);

    let err = app.extend(&showtime, &paying).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert_eq!(app.hold_expiry(&showtime, "I1").await, new_expiry, "a refused extension changes nothing");

    app.lock(&showtime, &lapsed, &["I5"]).await.unwrap();
    app.expire_holds(&showtime, &lapsed).await;
    assert_eq!(app.extend(&showtime, &lapsed).await.unwrap_err().code, ErrorCode::HoldExpired);
    assert_eq!(app.extend(&showtime, &new_booking()).await.unwrap_err().code, ErrorCode::HoldExpired);
    app.release(&showtime, &paying).await;
    assert_eq!(app.extend(&showtime, &paying).await.unwrap_err().code, ErrorCode::HoldExpired);
    let err = app.extend(&Uuid::new_v4().to_string(), &paying).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn two_hundred_fifty_six_clients_on_ten_seats_leave_exactly_one_winner_per_seat() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let seats: Vec<String> = (1..=10).map(|n| format!("E{n}")).collect();
    let wanted = (0..256).map(|i| vec![seats[i % seats.len()].clone()]).collect();

    let results = race(&app, &showtime, wanted).await;

    let mut winner_of: BTreeMap<String, (String, Option<Uuid>)> = BTreeMap::new();
    for (booking, asked, outcome) in &results {
        match outcome {
            Ok(got) => {
                assert_eq!(got, asked);
                assert!(winner_of.insert(asked[0].clone(), held(booking)).is_none(), "two winners");
            }
            Err(err) => {
                assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatUnavailable, asked.clone()))
            }
        }
    }
    assert_eq!(winner_of.len(), 10, "every seat has a winner");
    assert_eq!(app.taken_seats(&showtime).await, winner_of);
    let holders_per_seat: Vec<i64> = sqlx::query_scalar(
        "SELECT count(DISTINCT booking_id) FROM showtime_seats
          WHERE showtime_id = $1::uuid AND seat_id = ANY ($2) GROUP BY seat_id",
    )
    .bind(&showtime)
    .bind(&seats)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(holders_per_seat, vec![1; 10]);
}

/// A small xorshift generator: reproducible "random" seat orders without a dependency.
struct Shuffle(u64);

impl Shuffle {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

#[tokio::test]
async fn sixty_four_clients_locking_confirming_and_releasing_overlapping_seats_never_deadlock() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let row: Vec<String> = (1..=12).map(|n| format!("C{n}")).collect();

    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..64u64 {
        let mut rng = Shuffle(0x9E37_79B9_7F4A_7C15 ^ (client + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let mut pool = row.clone();
        let mut seats = Vec::new();
        for _ in 0..2 + rng.next(3) {
            seats.push(pool.swap_remove(rng.next(pool.len())));
        }
        let confirm = rng.next(2) == 0;
        let (url, showtime, barrier) = (app.url.clone(), showtime.clone(), barrier.clone());
        tasks.spawn(async move {
            let mut client = CinemaServiceClient::connect(url).await.unwrap();
            let booking = new_booking();
            barrier.wait().await;
            let locked = client
                .lock_seats(pb::LockSeatsRequest {
                    showtime_id: showtime.clone(),
                    seat_ids: seats.clone(),
                    booking_id: booking.clone(),
                    ttl_seconds: 300,
                    ..Default::default()
                })
                .await;
            if let Err(status) = locked {
                return (booking, seats, Err(ApiError::from_status(&status)), false, false);
            }
            let next = if confirm {
                client
                    .confirm_seats(pb::ConfirmSeatsRequest {
                        showtime_id: showtime,
                        booking_id: booking.clone(),
                        seat_ids: seats.clone(),
                    })
                    .await
                    .map(drop)
            } else {
                client
                    .release_seats(pb::ReleaseSeatsRequest {
                        showtime_id: showtime,
                        booking_id: booking.clone(),
                    })
                    .await
                    .map(drop)
            };
            (booking, seats, next.map_err(|s| ApiError::from_status(&s)), confirm, true)
        });
    }
    let results = tasks.join_all().await;

    let mut expected = BTreeMap::new();
    for (booking, seats, outcome, confirmed, _) in &results {
        match outcome {
            Ok(()) if *confirmed => {
                for seat in seats {
                    assert!(expected.insert(seat.clone(), booked(booking)).is_none(), "{seat} sold twice");
                }
            }
            Ok(()) => {}
            Err(err) => assert_eq!(err.code, ErrorCode::SeatUnavailable, "{err}"),
        }
    }
    // The first lock to commit always wins, so the race had winners. Whether any winner
    // was a buyer depends on timing (all winners may have been releasers).
    assert!(results.iter().any(|(.., locked)| *locked), "some lock must have won");
    assert_eq!(app.taken_seats(&showtime).await, expected, "booked seats are exactly the confirmed ones");
}

#[tokio::test]
async fn a_deadlock_inside_postgres_is_retried_and_never_reaches_the_client() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let lock_row = "SELECT 1 FROM showtime_seats WHERE showtime_id = $1::uuid AND seat_id = $2 FOR UPDATE";

    // An outside transaction holds B5 and waits long before checking for deadlocks, so
    // PostgreSQL picks the service's statement as the victim.
    let mut outsider = app.db.begin().await.unwrap();
    sqlx::query("SET LOCAL deadlock_timeout = '30s'").execute(&mut *outsider).await.unwrap();
    sqlx::query(lock_row).bind(&showtime).bind("B5").execute(&mut *outsider).await.unwrap();

    // The service locks B1, then queues behind the outsider for B5.
    let booking = new_booking();
    let lock = app.spawn_lock(&showtime, &booking, &["B1", "B5"]);
    until_waiting_inside(&app.db, "cinema_lock_seats", 1).await;

    // Closing the cycle: PostgreSQL aborts the service's statement to break it, which
    // hands B1 to the outsider; the service's retry then waits for the outsider's end.
    sqlx::query(lock_row).bind(&showtime).bind("B1").execute(&mut *outsider).await.unwrap();
    outsider.rollback().await.unwrap();

    let hold = lock.await.unwrap().expect("the client never sees the deadlock");
    assert_eq!(seat_ids(&hold.seats), ["B1", "B5"]);
    assert_eq!(
        app.taken_seats(&showtime).await,
        BTreeMap::from([("B1".to_owned(), held(&booking)), ("B5".to_owned(), held(&booking))])
    );
}

/// A caller that gave up on a LockSeats (its deadline passed, the cinema replica it
/// called was killed) releases the booking at once, not knowing whether the lock took;
/// PostgreSQL may still be running the lock statement then. The release must free what
/// that statement holds, whichever of the two reaches the database first.
#[tokio::test]
async fn a_release_racing_its_own_lock_leaves_no_seat_held() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let lock_row = "SELECT 1 FROM showtime_seats WHERE showtime_id = $1::uuid AND seat_id = $2 FOR UPDATE";

    // The lock queues for C5's row lock behind an outside transaction...
    let mut outsider = app.db.begin().await.unwrap();
    sqlx::query(lock_row).bind(&showtime).bind("C5").execute(&mut *outsider).await.unwrap();
    let booking = new_booking();
    let lock = app.spawn_lock(&showtime, &booking, &["C4", "C5"]);
    until_waiting_inside(&app.db, "cinema_lock_seats", 1).await;

    // ...and the release of the same booking arrives meanwhile: it waits for the lock.
    let release = tokio::spawn({
        let (client, showtime, booking) = (app.client.clone(), showtime.clone(), booking.clone());
        async move {
            client
                .clone()
                .release_seats(pb::ReleaseSeatsRequest { showtime_id: showtime, booking_id: booking })
                .await
        }
    });
    until_waiting_inside(&app.db, "cinema_release_seats", 1).await;
    outsider.rollback().await.unwrap();

    let held = lock.await.unwrap().expect("the lock itself succeeds");
    assert_eq!(seat_ids(&held.seats), ["C4", "C5"]);
    let released = release.await.unwrap().expect("the release succeeds").into_inner();
    assert_eq!(released.seat_ids, ["C4", "C5"], "the release frees what the lock took");
    assert_eq!(app.taken_seats(&showtime).await, BTreeMap::new());
}

#[tokio::test]
async fn a_lock_arriving_after_its_release_holds_nothing() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let booking = new_booking();

    assert!(app.release(&showtime, &booking).await.is_empty());
    let err = app.lock(&showtime, &booking, &["C7", "C8"]).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict, "{err}");
    assert!(err.message.contains("released"), "{err}");
    assert_eq!(app.taken_seats(&showtime).await, BTreeMap::new());

    // Other bookings are not affected.
    let other = new_booking();
    assert_eq!(seat_ids(&app.lock(&showtime, &other, &["C7", "C8"]).await.unwrap().seats), ["C7", "C8"]);
}

// ------------------------------------------------------------------ catalog admin

const SAAL_1: &str = "c0000000-0000-4000-8000-000000000001";

fn layout_seat(number: i32, category: &str, gap_before: i32) -> pb::LayoutSeat {
    pb::LayoutSeat { number, category: category.into(), gap_before, ..Default::default() }
}

/// Two rows of 8 with aisles after seats 2 and 6; A3 is a wheelchair space with its
/// companion seat A4; B8 is permanently blocked.
fn small_layout() -> Vec<pb::LayoutRow> {
    let row = |label: &str, category: &str| {
        let mut seats: Vec<_> =
            (1..=8).map(|n| layout_seat(n, category, if n == 3 || n == 7 { 1 } else { 0 })).collect();
        if label == "A" {
            seats[2].accessible = true;
            seats[3].companion = true;
        } else {
            seats[7].blocked = true;
        }
        pb::LayoutRow { label: label.into(), seats }
    };
    vec![row("A", "standard"), row("B", "premium")]
}

fn price(category: &str, amount_minor: i64, currency: &str) -> pb::CategoryPrice {
    pb::CategoryPrice {
        category: category.into(),
        price: Some(marquee_proto::common::v1::Money { amount_minor, currency: currency.into() }),
    }
}

fn in_days(days: i64) -> prost_types::Timestamp {
    marquee_kit::time::to_proto(chrono::Utc::now() + chrono::Duration::days(days))
}

impl TestApp {
    async fn catalog_counts(&self) -> (i64, i64, i64, i64, i64, i64, i64) {
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM movies), (SELECT count(*) FROM cinemas),
                    (SELECT count(*) FROM screens), (SELECT count(*) FROM screen_seats),
                    (SELECT count(*) FROM showtimes), (SELECT count(*) FROM showtime_prices),
                    (SELECT count(*) FROM showtime_seats)",
        )
        .fetch_one(&self.db)
        .await
        .unwrap()
    }
}

#[tokio::test]
async fn staff_build_a_screen_with_aisles_and_sell_its_showtime() {
    let app = spawn_app().await;
    let mut client = app.client.clone();

    let movie = client
        .create_movie(pb::CreateMovieRequest {
            title: "  Quiet Reels ".into(),
            runtime_minutes: 100,
            genres: vec!["Drama".into()],
            languages: vec!["en".into(), "de".into()],
            release_date: "2026-12-01".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(movie.title, "Quiet Reels");
    let fetched = client.get_movie(pb::GetMovieRequest { id: movie.id.clone() }).await.unwrap().into_inner();
    assert_eq!(fetched, movie);
    assert_eq!(fetched.languages, ["en", "de"]);

    let cinema = client
        .create_cinema(pb::CreateCinemaRequest {
            name: "Marquee Harbour".into(),
            city: "Hamburg".into(),
            address: "Kai 1".into(),
            time_zone: "Europe/Berlin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let screen = client
        .create_screen(pb::CreateScreenRequest {
            cinema_id: cinema.id.clone(),
            name: "Studio".into(),
            rows: small_layout(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (screen.seat_count, screen.categories.clone()),
        (16, vec!["premium".into(), "standard".into()])
    );

    let starts_at = in_days(2);
    let showtime = client
        .create_showtime(pb::CreateShowtimeRequest {
            movie_id: movie.id.clone(),
            screen_id: screen.id.clone(),
            starts_at: Some(starts_at),
            prices: vec![price("standard", 900, "EUR"), price("premium", 1200, "EUR")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((showtime.cinema_id.as_str(), showtime.screen_name.as_str()), (cinema.id.as_str(), "Studio"));
    let buffer = i64::from(app.settings.cinema.cleaning_buffer_minutes);
    assert_eq!(showtime.ends_at.unwrap().seconds - starts_at.seconds, (100 + buffer) * 60);
    let listed = client
        .list_showtimes(pb::ListShowtimesRequest { cinema_id: cinema.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .showtimes;
    assert_eq!(listed, std::slice::from_ref(&showtime));

    let seats = app.seat_states(&showtime.id).await;
    assert_eq!(seats.len(), 16);
    let a: Vec<(i32, i32)> = (1..=8).map(|n| (n, seats[&format!("A{n}")].position)).collect();
    assert_eq!(a, [(1, 1), (2, 2), (3, 4), (4, 5), (5, 6), (6, 7), (7, 9), (8, 10)]);
    assert!(seats["A3"].accessible && !seats["A3"].companion);
    assert!(seats["A4"].companion && !seats["A4"].accessible);
    assert_eq!(seats.values().filter(|s| s.accessible).count(), 1);
    assert_eq!(seats["B8"].state, pb::SeatState::Blocked as i32);
    assert_eq!(seats["B1"].price.as_ref().unwrap().amount_minor, 1200);

    let booking = new_booking();
    let err = app.lock(&showtime.id, &booking, &["B8"]).await.unwrap_err();
    assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatUnavailable, vec!["B8".to_owned()]));
    let hold = app.lock(&showtime.id, &booking, &["A3", "A4"]).await.unwrap();
    assert_eq!(hold.total.unwrap().amount_minor, 1800);
}

#[tokio::test]
async fn every_invalid_catalog_request_is_refused_with_a_precise_error_and_writes_nothing() {
    let app = spawn_app().await;
    let mut client = app.client.clone();
    let before = app.catalog_counts().await;

    let movie = |f: fn(&mut pb::CreateMovieRequest)| {
        let mut req =
            pb::CreateMovieRequest { title: "Fine".into(), runtime_minutes: 90, ..Default::default() };
        f(&mut req);
        req
    };
    for (req, why) in [
        (movie(|r| r.title = "   ".into()), "title"),
        (movie(|r| r.runtime_minutes = 0), "runtime_minutes"),
        (movie(|r| r.release_date = "2026-02-30".into()), "date"),
        (movie(|r| r.poster_url = "javascript:alert(1)".into()), "poster_url"),
        (movie(|r| r.genres = vec!["Drama".into(), "Drama".into()]), "twice"),
        (movie(|r| r.languages = vec!["English".into()]), "language"),
    ] {
        let err = ApiError::from_status(&client.create_movie(req).await.unwrap_err());
        assert_eq!(err.code, ErrorCode::BadUserInput, "{why}");
        assert!(err.message.contains(why), "{why}: {err}");
    }

    let cinema = |zone: &str| pb::CreateCinemaRequest {
        name: "Somewhere".into(),
        city: "Nowhere".into(),
        address: String::new(),
        time_zone: zone.into(),
    };
    for zone in ["Mars/Olympus_Mons", "Europe/Berlin'; --", ""] {
        let err = ApiError::from_status(&client.create_cinema(cinema(zone)).await.unwrap_err());
        assert_eq!(err.code, ErrorCode::BadUserInput, "{zone}");
        assert!(err.message.contains("time zone"), "{err}");
    }

    let screen = |f: fn(&mut pb::CreateScreenRequest)| {
        let mut req =
            pb::CreateScreenRequest { cinema_id: BERLIN.into(), name: "Saal 9".into(), rows: small_layout() };
        f(&mut req);
        req
    };
    for (req, code, why) in [
        (screen(|r| r.rows.clear()), ErrorCode::BadUserInput, "at least one row"),
        (screen(|r| r.rows[1].label = "A".into()), ErrorCode::BadUserInput, "row A appears twice"),
        (screen(|r| r.rows[0].seats[1].number = 1), ErrorCode::BadUserInput, "seat number 1 appears twice"),
        (screen(|r| r.rows[0].seats[0].category = "VIP!".into()), ErrorCode::BadUserInput, "category"),
        (screen(|r| r.rows[0].seats[0].gap_before = -1), ErrorCode::BadUserInput, "gap_before"),
        (screen(|r| r.rows[0].label = "A-1".into()), ErrorCode::BadUserInput, "row label"),
        (
            screen(|r| r.cinema_id = "f0000000-0000-4000-8000-000000000000".into()),
            ErrorCode::NotFound,
            "cinema",
        ),
        (screen(|r| r.name = "Saal 1".into()), ErrorCode::Conflict, "Saal 1"),
    ] {
        let err = ApiError::from_status(&client.create_screen(req).await.unwrap_err());
        assert_eq!(err.code, code, "{why}: {err}");
        assert!(err.message.contains(why), "{why}: {err}");
    }

    let existing = app.showtime().await;
    let clash_at = prost_types::Timestamp { seconds: existing.starts_at.unwrap().seconds + 1800, nanos: 0 };
    let showtime = |f: &dyn Fn(&mut pb::CreateShowtimeRequest)| {
        let mut req = pb::CreateShowtimeRequest {
            movie_id: PROJECTIONIST.into(),
            screen_id: SAAL_1.into(),
            starts_at: Some(in_days(30)),
            prices: vec![price("standard", 1000, "EUR"), price("premium", 1400, "EUR")],
        };
        f(&mut req);
        req
    };
    for (req, code, why) in [
        (showtime(&|r| r.starts_at = Some(in_days(-1))), ErrorCode::BadUserInput, "in the past"),
        (showtime(&|r| r.starts_at = None), ErrorCode::BadUserInput, "starts_at"),
        (
            showtime(&|r| r.prices.push(price("vip", 2000, "EUR"))),
            ErrorCode::BadUserInput,
            "no seats of category vip",
        ),
        (showtime(&|r| r.prices.truncate(1)), ErrorCode::BadUserInput, "no price for seat category premium"),
        (
            showtime(&|r| r.prices[0] = price("standard", 0, "EUR")),
            ErrorCode::BadUserInput,
            "must be positive",
        ),
        (
            showtime(&|r| r.prices[1] = price("premium", -5, "EUR")),
            ErrorCode::BadUserInput,
            "must be positive",
        ),
        (showtime(&|r| r.prices[1] = price("premium", 1400, "USD")), ErrorCode::BadUserInput, "one currency"),
        (showtime(&|r| r.prices[1] = price("premium", 1400, "eur")), ErrorCode::BadUserInput, "currency"),
        (showtime(&|r| r.prices.push(price("premium", 1, "EUR"))), ErrorCode::BadUserInput, "twice"),
        (showtime(&|r| r.movie_id = Uuid::new_v4().to_string()), ErrorCode::NotFound, "movie"),
        (showtime(&|r| r.screen_id = Uuid::new_v4().to_string()), ErrorCode::NotFound, "screen"),
        (showtime(&|r| r.starts_at = Some(clash_at)), ErrorCode::Conflict, "busy"),
    ] {
        let err = ApiError::from_status(&client.create_showtime(req).await.unwrap_err());
        assert_eq!(err.code, code, "{why}: {err}");
        assert!(err.message.contains(why), "{why}: {err}");
        if code == ErrorCode::Conflict {
            assert_eq!(err.metadata["showtime_id"], existing.id);
        }
    }

    assert_eq!(app.catalog_counts().await, before, "refused requests wrote nothing");
}

#[tokio::test]
async fn blocked_seats_are_never_holdable_until_staff_unblock_them() {
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    let mut client = app.client.clone();
    let block = |seats: &[&str]| pb::BlockSeatsRequest {
        showtime_id: showtime.clone(),
        seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
    };
    let (holder, lapsed, buyer) = (new_booking(), new_booking(), new_booking());
    app.lock(&showtime, &holder, &["A9"]).await.unwrap();
    app.lock(&showtime, &lapsed, &["A8"]).await.unwrap();
    app.expire_holds(&showtime, &lapsed).await;

    let blocked = client.block_seats(block(&["A6", "A5", "A8"])).await.unwrap().into_inner();
    assert_eq!(blocked.seat_ids, ["A5", "A6", "A8"], "a lapsed hold does not protect a seat");
    client.block_seats(block(&["A5"])).await.unwrap();

    let err = app.lock(&showtime, &buyer, &["A5", "A7"]).await.unwrap_err();
    assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatUnavailable, vec!["A5".to_owned()]));
    assert_eq!(app.confirm(&showtime, &lapsed, &["A8"]).await.unwrap_err().code, ErrorCode::SeatUnavailable);
    assert_eq!(app.seat_states(&showtime).await["A6"].state, pb::SeatState::Blocked as i32);

    let before = app.taken_seats(&showtime).await;
    let err = ApiError::from_status(&client.block_seats(block(&["A1", "A9"])).await.unwrap_err());
    assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatUnavailable, vec!["A9".to_owned()]));
    let err = ApiError::from_status(&client.block_seats(block(&["A1", "Z1"])).await.unwrap_err());
    assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::BadUserInput, vec!["Z1".to_owned()]));
    assert_eq!(app.taken_seats(&showtime).await, before, "refused blocks change nothing");

    let unblocked = client
        .unblock_seats(pb::UnblockSeatsRequest {
            showtime_id: showtime.clone(),
            seat_ids: vec!["A5".into(), "A6".into(), "A7".into(), "A9".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unblocked.seat_ids, ["A5", "A6"]);
    app.lock(&showtime, &buyer, &["A5", "A6", "A7"]).await.unwrap();
    assert_eq!(app.taken_seats(&showtime).await["A9"], held(&holder));
}

// ------------------------------------------------------------------ seating rules

impl TestApp {
    /// A fresh showtime on `small_layout()`; returns its id.
    async fn small_showtime(&self) -> String {
        let mut client = self.client.clone();
        let cinema = client
            .create_cinema(pb::CreateCinemaRequest {
                name: "Marquee Lab".into(),
                city: "Leipzig".into(),
                address: String::new(),
                time_zone: "Europe/Berlin".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let screen = client
            .create_screen(pb::CreateScreenRequest {
                cinema_id: cinema.id,
                name: "Lab".into(),
                rows: small_layout(),
            })
            .await
            .unwrap()
            .into_inner();
        client
            .create_showtime(pb::CreateShowtimeRequest {
                movie_id: PROJECTIONIST.into(),
                screen_id: screen.id,
                starts_at: Some(in_days(1)),
                prices: vec![price("standard", 900, "EUR"), price("premium", 1200, "EUR")],
            })
            .await
            .unwrap()
            .into_inner()
            .id
    }

    async fn suggest(&self, showtime: &str, count: i32, category: &str, accessible: bool) -> Vec<String> {
        self.client
            .clone()
            .suggest_seats(pb::SuggestSeatsRequest {
                showtime_id: showtime.into(),
                count,
                category: category.into(),
                accessible,
            })
            .await
            .unwrap()
            .into_inner()
            .seats
            .into_iter()
            .map(|s| s.seat_id)
            .collect()
    }
}

#[tokio::test]
async fn holds_may_not_strand_a_single_seat_unless_no_other_block_exists() {
    let app = spawn_app_with(|s| s.cinema.no_orphan_seats = true).await;
    // Sections: A1-A2 | A3(accessible) A4(companion) A5 A6 | A7-A8; B likewise, B8 blocked.
    let showtime = app.small_showtime().await;
    let (one, two, three) = (new_booking(), new_booking(), new_booking());

    let err = app.lock(&showtime, &one, &["A5"]).await.unwrap_err();
    assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatRuleViolation, vec!["A6".to_owned()]));
    let err = app.lock(&showtime, &one, &["B1"]).await.unwrap_err();
    assert_eq!((err.code, err.meta_list("seat_ids")), (ErrorCode::SeatRuleViolation, vec!["B2".to_owned()]));
    assert!(app.taken_seats(&showtime).await.values().all(|(status, _)| status == "blocked"));

    app.lock(&showtime, &one, &["A5", "A6"]).await.unwrap();
    app.lock(&showtime, &two, &["B1", "B2"]).await.unwrap();
    // B7 sits alone next to the blocked B8 already: taking it strands nobody new.
    app.lock(&showtime, &two, &["B1", "B2", "B7"]).await.unwrap();

    // Clean pairs exist (B3-B4, B5-B6), so a pair in the middle of B3-B6 is refused.
    let err = app.lock(&showtime, &three, &["B4", "B5"]).await.unwrap_err();
    assert_eq!(
        (err.code, err.meta_list("seat_ids")),
        (ErrorCode::SeatRuleViolation, vec!["B3".into(), "B6".into()])
    );
    // No block of three strands nobody any more: the rule gives way.
    app.lock(&showtime, &three, &["B3", "B4", "B5"]).await.unwrap();
}

#[tokio::test]
async fn forty_eight_clients_holding_pairs_in_three_rows_never_deadlock_or_strand_a_seat() {
    let app = spawn_app_with(|s| s.cinema.no_orphan_seats = true).await;
    // Rows D-J stay free, so a clean pair always exists and the rule never gives way:
    // whatever the interleaving, rows A-C must end without a lone free seat.
    let mut refused_by_rule = 0;
    for showtime in app.showtimes_in_saal_1().await.iter().take(3).map(|s| s.id.as_str()) {
        let wanted: Vec<Vec<String>> = (0..48)
            .map(|i| {
                let (row, first) = (["A", "B", "C"][i % 3], (i * 5) % 11 + 1);
                vec![format!("{row}{first}"), format!("{row}{}", first + 1)]
            })
            .collect();
        let results = race(&app, showtime, wanted).await;
        let mut won = BTreeMap::new();
        for (booking, seats, outcome) in &results {
            match outcome {
                Ok(got) => won.extend(got.iter().map(|s| (s.clone(), held(booking)))),
                Err(e) if e.code == ErrorCode::SeatRuleViolation => refused_by_rule += 1,
                Err(e) => assert_eq!(e.code, ErrorCode::SeatUnavailable, "{seats:?}: {e}"),
            }
        }
        let taken = app.taken_seats(showtime).await;
        assert_eq!(taken, won, "the database holds exactly what the winners were told");
        for row in ["A", "B", "C"] {
            let free = |n: i32| (1..=12).contains(&n) && !taken.contains_key(&format!("{row}{n}"));
            let alone: Vec<i32> = (1..=12).filter(|&n| free(n) && !free(n - 1) && !free(n + 1)).collect();
            assert!(alone.is_empty(), "row {row} strands seats {alone:?}: {taken:?}");
        }
    }
    assert!(refused_by_rule > 0, "the rule was never put to the test");
}

impl TestApp {
    /// A showtime tomorrow on a new screen of `rows` (one string per row, A first, every
    /// seat standard): `.` free, `x` taken (blocked), `a` a free accessible space, `|`
    /// an aisle. Returns the showtime and the screen.
    async fn layout_showtime(&self, rows: &[&str]) -> (Uuid, Uuid) {
        let (screen, showtime) = (Uuid::new_v4(), Uuid::new_v4());
        let (mut ids, mut labels, mut numbers, mut positions, mut accessible, mut blocked) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for (r, layout) in rows.iter().enumerate() {
            let label = char::from(b'A' + r as u8).to_string();
            let mut number = 0;
            for (position, c) in (1..).zip(layout.chars()).filter(|(_, c)| *c != '|') {
                number += 1;
                ids.push(format!("{label}{number}"));
                labels.push(label.clone());
                numbers.push(number);
                positions.push(position);
                accessible.push(c == 'a');
                blocked.push(c == 'x');
            }
        }
        let mut tx = self.db.begin().await.unwrap();
        sqlx::query("INSERT INTO screens (id, cinema_id, name) VALUES ($1, $2::uuid, $1::text)")
            .bind(screen)
            .bind(BERLIN)
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO screen_seats (screen_id, seat_id, row_label, seat_number, position, category,
                                       accessible, blocked)
             SELECT $1, i, l, n, p, 'standard', a, b
               FROM unnest($2::text[], $3::text[], $4::int[], $5::int[], $6::bool[], $7::bool[])
                    AS u(i, l, n, p, a, b)",
        )
        .bind(screen)
        .bind(&ids)
        .bind(&labels)
        .bind(&numbers)
        .bind(&positions)
        .bind(&accessible)
        .bind(&blocked)
        .execute(&mut *tx)
        .await
        .unwrap();
        for sql in [
            "INSERT INTO showtimes (id, movie_id, screen_id, starts_at, ends_at)
             VALUES ($1, $3::uuid, $2, now() + interval '1 day', now() + interval '2 days')",
            "INSERT INTO showtime_prices (showtime_id, category, amount_minor, currency)
             VALUES ($1, 'standard', 900, 'EUR')",
            "INSERT INTO showtime_seats (showtime_id, seat_id, row_label, seat_number, category, status)
             SELECT $1, seat_id, row_label, seat_number, category,
                    CASE WHEN blocked THEN 'blocked' ELSE 'available' END
               FROM screen_seats WHERE screen_id = $2",
        ] {
            sqlx::query(sql).bind(showtime).bind(screen).bind(PROJECTIONIST).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
        (showtime, screen)
    }
}

#[tokio::test]
async fn the_no_orphan_rule_refuses_exactly_the_holds_that_leave_a_seat_alone() {
    let app = spawn_app().await;
    // (row A, seats taken, seats stranded). Row B, all free, is added to each layout so a
    // clean block always exists and the rule never gives way here.
    let cases: [(&str, &[&str], &[&str]); 9] = [
        ("....|..", &["A2"], &["A1"]),
        ("x...|..", &["A3"], &["A2", "A4"]),
        ("....|..", &["A3", "A4"], &[]),
        ("....|..", &["A3"], &["A4"]), // the aisle ends the section
        ("....|..", &["A5"], &["A6"]),
        ("....|..", &["A1", "A2"], &[]),
        // Orphans that existed before the hold are not its fault.
        (".x....", &["A3", "A4"], &[]),
        (".|....", &["A2", "A3"], &[]),
        // The two racing holds of the race test, as one hold.
        ("............", &["A1", "A2", "A4", "A5"], &["A3"]),
    ];
    for (row, taking, stranded) in cases {
        let (showtime, _) = app.layout_showtime(&[row, "........"]).await;
        let outcome: Vec<(String, String)> =
            sqlx::query_as("SELECT outcome::text, seat_id FROM cinema_lock_seats($1, $2, $3, 300, 0, true)")
                .bind(showtime)
                .bind(taking.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .bind(Uuid::new_v4())
                .fetch_all(&app.db)
                .await
                .unwrap();
        let expected: Vec<(String, String)> = if stranded.is_empty() {
            taking.iter().map(|s| ("held".to_owned(), (*s).to_owned())).collect()
        } else {
            stranded.iter().map(|s| ("orphan".to_owned(), (*s).to_owned())).collect()
        };
        assert_eq!(outcome, expected, "row {row}, taking {taking:?}");
    }
}

#[tokio::test]
async fn the_no_orphan_rule_gives_way_when_no_block_of_that_size_strands_nobody() {
    let app = spawn_app_with(|s| s.cinema.no_orphan_seats = true).await;
    // (rows, party size, whether a block of ordinary seats strands nobody)
    let cases: [(&[&str], i32, bool); 8] = [
        (&["...x.."], 2, true),
        (&[".x.x.x"], 1, true), // taking a lone seat strands nobody
        (&["..x..."], 4, false),
        (&["x...x"], 2, false), // any pair strands the third seat
        (&["a.."], 2, false),   // A1-A2 would do, but A1 is a wheelchair space
        // Rows are looked at one by one: the clean block may be in the last, or in none.
        (&["x...x", "x...x", "...."], 2, true),
        (&["x...x", "x...x", "x...x"], 2, false),
        (&["x...x", "....", "x...x"], 4, true),
    ];
    for (rows, party, clean) in cases {
        let (showtime, screen) = app.layout_showtime(rows).await;
        let exists: bool = sqlx::query_scalar("SELECT cinema_clean_block_exists($1, $2, $3)")
            .bind(showtime)
            .bind(screen)
            .bind(party)
            .fetch_one(&app.db)
            .await
            .unwrap();
        assert_eq!(exists, clean, "rows {rows:?}, party of {party}");
    }

    // So in x...x a pair that strands a seat is held: there is no other choice.
    let (showtime, _) = app.layout_showtime(&["x...x"]).await;
    let hold = app.lock(&showtime.to_string(), &new_booking(), &["A2", "A3"]).await.unwrap();
    assert_eq!(seat_ids(&hold.seats), ["A2", "A3"]);
}

/// Backends of this test's database waiting for a lock (a row's, an advisory one) inside
/// a statement that calls `function`.
async fn waiting_inside(db: &PgPool, function: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'
            AND query LIKE '%' || $1 || '%'",
    )
    .bind(function)
    .fetch_one(db)
    .await
    .unwrap()
}

/// Waits (up to 10 s) until `count` statements calling `function` wait for a lock.
async fn until_waiting_inside(db: &PgPool, function: &str, count: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while waiting_inside(db, function).await < count {
        assert!(std::time::Instant::now() < deadline, "{function} never queued for a lock");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn two_holds_racing_in_one_row_never_strand_the_seat_between_them() {
    let app = spawn_app_with(|s| s.cinema.no_orphan_seats = true).await;
    // Row A has 12 seats and no aisle. A1-A2 alone strands nobody (A3 still has A4), nor
    // does A4-A5 alone (A3 still has A2); together they leave A3 alone, and clean pairs
    // abound elsewhere, so the rule must refuse whichever hold comes second.
    let showtime = app.showtime().await.id;

    // An outside transaction row-locks A2 and A4, so both holds get as far as their row
    // locks and queue there: the race is forced, not hoped for.
    let mut outsider = app.db.begin().await.unwrap();
    sqlx::query(
        "SELECT 1 FROM showtime_seats WHERE showtime_id = $1::uuid AND seat_id IN ('A2', 'A4')
          ORDER BY seat_id FOR UPDATE",
    )
    .bind(&showtime)
    .execute(&mut *outsider)
    .await
    .unwrap();

    let mut holds = tokio::task::JoinSet::new();
    for seats in [["A1", "A2"], ["A4", "A5"]] {
        let (url, showtime) = (app.url.clone(), showtime.clone());
        holds.spawn(async move {
            let mut client = CinemaServiceClient::connect(url).await.unwrap();
            let booking = new_booking();
            let outcome = client
                .lock_seats(pb::LockSeatsRequest {
                    showtime_id: showtime,
                    seat_ids: seats.map(String::from).to_vec(),
                    booking_id: booking.clone(),
                    ttl_seconds: 300,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner().seats.into_iter().map(|s| s.seat_id).collect::<Vec<_>>())
                .map_err(|s| ApiError::from_status(&s));
            (booking, outcome)
        });
    }
    // Proof that the race happened: both holds are inside the database at the same
    // time, each waiting for a row lock, neither decided yet.
    until_waiting_inside(&app.db, "cinema_lock_seats", 2).await;
    outsider.rollback().await.unwrap();

    let results = holds.join_all().await;
    let winners: Vec<_> =
        results.iter().filter_map(|(b, r)| r.as_ref().ok().map(|seats| (b, seats))).collect();
    let refusals: Vec<_> = results.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    assert_eq!(winners.len(), 1, "exactly one of the two holds may win: {results:?}");
    assert_eq!(
        refusals.iter().map(|e| (e.code, e.meta_list("seat_ids"))).collect::<Vec<_>>(),
        [(ErrorCode::SeatRuleViolation, vec!["A3".to_owned()])],
        "the second hold is refused for stranding A3"
    );
    let (winner, seats) = winners[0];
    assert_eq!(
        app.taken_seats(&showtime).await,
        seats.iter().map(|s| (s.clone(), held(winner))).collect::<BTreeMap<_, _>>()
    );
}

/// What one connection sent PostgreSQL up to a Sync, i.e. in one round trip: the SQL of
/// each statement it executed.
type RoundTrip = Vec<String>;

/// A proxy between the service and PostgreSQL that writes down every round trip of the
/// extended query protocol (and every simple query), so a test can count them, and
/// that a test can cut off (an outage of PostgreSQL) and restore.
#[derive(Clone, Default)]
struct PgProxy {
    trips: Arc<std::sync::Mutex<Vec<RoundTrip>>>,
    /// Ends the relays of the connections open now; `None` while cut off.
    open: Arc<std::sync::Mutex<Option<Shutdown>>>,
    /// Connections turned away while cut off.
    refused: Arc<std::sync::atomic::AtomicUsize>,
}

impl PgProxy {
    /// Starts a proxy in front of the PostgreSQL of `settings` and points them at it.
    fn intercept(settings: &mut Settings) -> Self {
        let url = settings.postgres.url.expose().clone();
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, database) = rest.split_once('/').unwrap();
        let (user, upstream) = authority.rsplit_once('@').map_or(("", authority), |(u, h)| (u, h));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let proxy = Self::default();
        proxy.restore();
        let (upstream, relaying) = (upstream.to_owned(), proxy.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let open = relaying.open.lock().unwrap().clone();
                let Some(open) = open else {
                    // Accepted and closed at once: the client's connect fails without
                    // waiting, as when PostgreSQL is down.
                    relaying.refused.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    drop(client);
                    continue;
                };
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let relay = relaying.clone().relay(client, server);
                tokio::spawn(async move {
                    // Dropping the relay closes both of its sockets.
                    tokio::select! {
                        () = open.cancelled() => {}
                        () = relay => {}
                    }
                });
            }
        });
        let user = if user.is_empty() { String::new() } else { format!("{user}@") };
        let params = if database.contains('?') { '&' } else { '?' };
        settings.postgres.url = marquee_kit::secret::Secret::new(format!(
            "{scheme}://{user}{proxy_addr}/{database}{params}sslmode=disable"
        ));
        proxy
    }

    /// Closes every proxied connection and turns new ones away until `restore`.
    fn cut(&self) {
        if let Some(open) = self.open.lock().unwrap().take() {
            open.cancel();
        }
    }

    fn restore(&self) {
        self.open.lock().unwrap().get_or_insert_with(Shutdown::new);
    }

    fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    async fn relay(self, client: tokio::net::TcpStream, server: tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        fn cstr(bytes: &[u8]) -> (String, &[u8]) {
            let end = bytes.iter().position(|b| *b == 0).unwrap();
            (String::from_utf8_lossy(&bytes[..end]).into_owned(), &bytes[end + 1..])
        }
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        let replies = async move {
            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        };
        let requests = async move {
            let (mut pending, mut chunk) = (Vec::new(), vec![0; 16 * 1024]);
            let mut prepared: HashMap<String, String> = HashMap::new();
            let (mut started, mut bound, mut trip) = (false, String::new(), RoundTrip::new());
            'relay: loop {
                let n = match from_client.read(&mut chunk).await {
                    Ok(0) | Err(_) => break 'relay,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&chunk[..n]);
                // Startup packets have no type byte; every later message has one.
                let header = |started: bool| if started { 5 } else { 4 };
                while pending.len() >= header(started) {
                    let h = header(started);
                    let total = h - 4 + u32::from_be_bytes(pending[h - 4..h].try_into().unwrap()) as usize;
                    if pending.len() < total {
                        break;
                    }
                    let message: Vec<u8> = pending.drain(..total).collect();
                    if !started {
                        // An SSL or GSS encryption request is answered before the real startup.
                        let code = u32::from_be_bytes(message[4..8].try_into().unwrap());
                        started = code != 80_877_103 && code != 80_877_104;
                    } else {
                        let body = &message[5..];
                        match message[0] {
                            b'P' => {
                                let (name, rest) = cstr(body);
                                prepared.insert(name, cstr(rest).0);
                            }
                            b'B' => bound = prepared.get(&cstr(cstr(body).1).0).cloned().unwrap_or_default(),
                            b'E' => trip.push(bound.clone()),
                            b'S' => self.trips.lock().unwrap().push(std::mem::take(&mut trip)),
                            b'Q' => self.trips.lock().unwrap().push(vec![cstr(body).0]),
                            _ => {}
                        }
                    }
                    if to_server.write_all(&message).await.is_err() {
                        break 'relay;
                    }
                }
            }
            // The server hears the client's end, and ends the replies in turn.
            let _ = to_server.shutdown().await;
        };
        tokio::join!(replies, requests);
    }

    /// Round trips so far.
    fn len(&self) -> usize {
        self.trips.lock().unwrap().len()
    }

    /// The round trips that ran statements since `len()` was `from`, leaving out pings:
    /// sqlx's (a bare Sync whenever a connection goes back to the pool, off the request's
    /// path) and the readiness probe's `select 1`.
    fn since(&self, from: usize) -> Vec<RoundTrip> {
        let log = self.trips.lock().unwrap();
        log[from..].iter().filter(|trip| !trip.is_empty() && *trip != &["select 1"]).cloned().collect()
    }
}

#[tokio::test]
async fn a_hold_under_the_no_orphan_rule_is_one_round_trip_to_postgres() {
    let mut wire = None;
    let app = spawn_app_with(|s| {
        s.cinema.no_orphan_seats = true;
        // Only the database decides, and on one connection (the other is the seat change
        // listener's), so a statement is prepared once, in the warm-up, and every later
        // hold shows only what it costs each time.
        s.cinema.seat_board = marquee_cinema::settings::SeatBoardMode::Off;
        s.postgres.max_connections = 2;
        wire = Some(PgProxy::intercept(s));
    })
    .await;
    let wire = wire.unwrap();
    let showtime = app.showtime().await.id;
    app.lock(&showtime, &new_booking(), &["J1", "J2"]).await.unwrap();

    let holds: [(&[&str], Option<ErrorCode>); 3] = [
        (&["A1", "A2"], None),
        // Strands A3; a clean pair exists elsewhere, so it is refused.
        (&["A4", "A5"], Some(ErrorCode::SeatRuleViolation)),
        (&["A2", "A3"], Some(ErrorCode::SeatUnavailable)),
    ];
    for (seats, refusal) in holds {
        let from = wire.len();
        let outcome = app.lock(&showtime, &new_booking(), seats).await;
        assert_eq!(outcome.err().map(|e| e.code), refusal, "{seats:?}");
        let trips = wire.since(from);
        assert!(
            trips.len() == 1 && trips[0].len() == 1 && trips[0][0].contains("cinema_lock_seats("),
            "a hold of {seats:?} must be one statement in one round trip, was {trips:#?}"
        );
    }
}

#[tokio::test]
async fn suggestions_take_central_seats_keep_the_rule_and_offer_accessible_seats_only_when_asked() {
    let app = spawn_app_with(|s| s.cinema.no_orphan_seats = true).await;
    let showtime = app.small_showtime().await;
    let taken = new_booking();
    app.lock(&showtime, &taken, &["A5", "A6", "B1", "B2", "B7"]).await.unwrap();

    // B4-B5 is the most central pair but would strand B3 and B6.
    assert_eq!(app.suggest(&showtime, 2, "", false).await, ["B3", "B4"]);
    assert_eq!(app.suggest(&showtime, 2, "standard", false).await, ["A1", "A2"]);
    assert_eq!(app.suggest(&showtime, 2, "", true).await, ["A3", "A4"]);
    assert_eq!(app.suggest(&showtime, 4, "premium", false).await, ["B3", "B4", "B5", "B6"]);
    assert!(app.suggest(&showtime, 5, "", false).await.is_empty());

    // A suggestion is always a hold the rule accepts.
    let suggested = app.suggest(&showtime, 3, "", false).await;
    assert_eq!(suggested, ["B3", "B4", "B5"], "no clean block of three: the best stranding one");
    let seats: Vec<&str> = suggested.iter().map(String::as_str).collect();
    app.lock(&showtime, &new_booking(), &seats).await.unwrap();

    let err = app
        .client
        .clone()
        .suggest_seats(pb::SuggestSeatsRequest {
            showtime_id: showtime.clone(),
            count: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::BadUserInput);
}

// -------------------------------------------------------------- live seat changes

#[tokio::test]
async fn watchers_see_holds_confirmations_releases_and_lapsed_holds_in_commit_order() {
    let app = spawn_app_with(|s| s.cinema.hold_sweep_interval_ms = 100).await;
    let showtimes = app.showtimes_in_saal_1().await;
    let (showtime, elsewhere) = (showtimes[0].id.clone(), showtimes[1].id.clone());
    let mut changes = app
        .client
        .clone()
        .watch_seats(pb::WatchSeatsRequest { showtime_id: showtime.clone() })
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        let change = tokio::time::timeout(std::time::Duration::from_secs(10), changes.message())
            .await
            .expect("no seat change within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(change.showtime_id, showtime);
        (
            change.seat_id,
            pb::SeatState::try_from(change.state).unwrap(),
            pb::SeatChangeReason::try_from(change.reason).unwrap(),
        )
    };
    use pb::SeatChangeReason as Why;
    use pb::SeatState as State;
    let (buyer, quitter, sleeper) = (new_booking(), new_booking(), new_booking());

    app.lock(&showtime, &buyer, &["A1"]).await.unwrap();
    app.lock(&elsewhere, &buyer, &["A1"]).await.unwrap();
    app.confirm(&showtime, &buyer, &["A1"]).await.unwrap();
    app.lock(&showtime, &quitter, &["A2", "A3"]).await.unwrap();
    app.release(&showtime, &quitter).await;
    app.lock(&showtime, &sleeper, &["A4"]).await.unwrap();
    app.expire_holds(&showtime, &sleeper).await;

    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(next().await);
    }
    let expected = [
        ("A1", State::Held, Why::Held),
        ("A1", State::Booked, Why::Booked),
        ("A2", State::Held, Why::Held),
        ("A3", State::Held, Why::Held),
        ("A2", State::Available, Why::Released),
        ("A3", State::Available, Why::Released),
        ("A4", State::Held, Why::Held),
    ];
    let expected: Vec<_> = expected.into_iter().map(|(s, st, why)| (s.to_owned(), st, why)).collect();
    // Transactions arrive in commit order; the seats within one, in no promised order.
    seen[2..4].sort();
    seen[4..6].sort();
    assert_eq!(seen, expected);
    // The sweeper frees the lapsed hold, and says so.
    assert_eq!(next().await, ("A4".to_owned(), State::Available, Why::Expired));
    assert_eq!(app.taken_seats(&showtime).await, BTreeMap::from([("A1".to_owned(), booked(&buyer))]));

    let err = app
        .client
        .clone()
        .watch_seats(pb::WatchSeatsRequest { showtime_id: Uuid::new_v4().to_string() })
        .await
        .unwrap_err();
    assert_eq!(code(err), ErrorCode::NotFound);
}

#[tokio::test]
async fn watchers_are_told_to_reload_once_postgres_is_back_after_the_listener_failed_to_reconnect() {
    let mut proxy = None;
    let app = spawn_app_with(|s| proxy = Some(PgProxy::intercept(s))).await;
    let proxy = proxy.unwrap();
    let showtime = app.showtime().await.id;
    let watch = || {
        let (mut client, showtime_id) = (app.client.clone(), showtime.clone());
        async move { client.watch_seats(pb::WatchSeatsRequest { showtime_id }).await }
    };
    let mut changes = watch().await.unwrap().into_inner();

    // PostgreSQL goes away: the listener's connection closes, and it tries again at once
    // (and so, every 2 s, does the readiness probe). Stay down until several attempts
    // have been turned away.
    proxy.cut();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while proxy.refused() < 3 {
        assert!(std::time::Instant::now() < deadline, "nothing tried to reconnect");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    proxy.restore();

    // Whatever was committed while the listener was away was never announced, so once it
    // is back the watcher is told to reload, as a watcher that fell behind is.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), changes.message())
        .await
        .expect("the watcher was never told it may have missed changes");
    let status = ended.expect_err("the watch went on as if nothing was missed");
    assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
    assert_eq!(code(status.clone()), ErrorCode::Conflict);
    assert!(status.message().contains("may have been missed"), "{status:?}");
    assert!(status.message().ends_with("reload the seat map and watch again"), "{status:?}");

    // Watching again (once the pool has replaced its dead connections) sees the next hold.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut changes = loop {
        match watch().await {
            Ok(changes) => break changes.into_inner(),
            Err(status) => assert!(std::time::Instant::now() < deadline, "cannot watch again: {status:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    while let Err(error) = app.lock(&showtime, &new_booking(), &["C7"]).await {
        assert!(std::time::Instant::now() < deadline, "cannot hold after the outage: {error:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let change = tokio::time::timeout(std::time::Duration::from_secs(5), changes.message())
        .await
        .expect("the hold after the outage was never announced")
        .unwrap()
        .expect("the watch ended");
    assert_eq!((change.showtime_id.as_str(), change.seat_id.as_str()), (showtime.as_str(), "C7"));
    assert_eq!(pb::SeatState::try_from(change.state).unwrap(), pb::SeatState::Held);
}

// ------------------------------------------------------------------------- seat board

impl TestApp {
    /// Changes a seat with the notify trigger off, as if the board had missed it.
    async fn behind_the_boards_back(&self, showtime: &str, seat: &str, holder: Option<&str>) {
        let mut tx = self.db.begin().await.unwrap();
        sqlx::query("SET LOCAL session_replication_role = replica").execute(&mut *tx).await.unwrap();
        sqlx::query(
            "UPDATE showtime_seats
                SET status = CASE WHEN $3::uuid IS NULL THEN 'available' ELSE 'held' END,
                    booking_id = $3::uuid,
                    hold_expires_at = CASE WHEN $3::uuid IS NULL THEN NULL ELSE now() + interval '5 minutes' END,
                    hold_extended = false
              WHERE showtime_id = $1::uuid AND seat_id = $2",
        )
        .bind(showtime)
        .bind(seat)
        .bind(holder)
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
}

#[tokio::test]
async fn a_seat_this_service_freed_is_never_refused_while_its_notification_is_in_flight() {
    // The board is consulted on every hold (the default); each release is on it the
    // moment it commits, not when its notification arrives. Before that, a few percent
    // of these back-to-back holds were refused a seat freed a moment earlier.
    let app = spawn_app().await;
    let showtime = app.showtime().await.id;
    for round in 0..200 {
        let (first, next) = (new_booking(), new_booking());
        app.lock(&showtime, &first, &["G4", "G5"]).await.unwrap();
        assert_eq!(app.release(&showtime, &first).await, ["G4", "G5"]);
        let hold = app.lock(&showtime, &next, &["G5"]).await;
        assert!(hold.is_ok(), "round {round}: a freed seat was refused: {hold:?}");
        assert_eq!(app.release(&showtime, &next).await, ["G5"]);
    }
    assert!(app.taken_seats(&showtime).await.is_empty());
}

#[tokio::test]
async fn the_seat_board_refuses_taken_seats_without_asking_the_database_and_follows_notified_changes() {
    let app = spawn_app_with(|s| s.cinema.seat_board = marquee_cinema::settings::SeatBoardMode::Always).await;
    let showtime = app.showtime().await.id;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);

    // Make the database and the board disagree: a hold the board was told about, then
    // freed behind its back. Only the board can still call F5 taken. Until it has loaded
    // the showtime the database decides (and grants the seat), so go round until then.
    // (Both seats are free in the database each time round; the board may still be
    // catching up with the previous round's release, so the first lock may have to wait.)
    let (believed_holder, refusal) = loop {
        assert!(std::time::Instant::now() < deadline, "the seat board never answered");
        let holder = new_booking();
        while let Err(err) = app.lock(&showtime, &holder, &["F5"]).await {
            assert_eq!(err.code, ErrorCode::SeatUnavailable);
            assert!(std::time::Instant::now() < deadline, "the board never saw F5 released");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        app.behind_the_boards_back(&showtime, "F5", None).await;
        let other = new_booking();
        match app.lock(&showtime, &other, &["F5", "F6"]).await {
            Err(refusal) => break (holder, refusal),
            Ok(_) => assert_eq!(app.release(&showtime, &other).await, ["F5", "F6"]),
        }
    };
    assert_eq!(
        (refusal.code, refusal.meta_list("seat_ids")),
        (ErrorCode::SeatUnavailable, vec!["F5".to_owned()])
    );
    assert!(app.taken_seats(&showtime).await.is_empty(), "the database had F5 free: the board answered");

    // A notified change reaches the board: put the hold back silently, release it the
    // normal way, and F5 can be held again (once the notification has arrived).
    app.behind_the_boards_back(&showtime, "F5", Some(&believed_holder)).await;
    assert_eq!(app.release(&showtime, &believed_holder).await, ["F5"]);
    let winner = new_booking();
    loop {
        match app.lock(&showtime, &winner, &["F5"]).await {
            Ok(hold) => {
                assert_eq!(seat_ids(&hold.seats), ["F5"]);
                break;
            }
            Err(err) => {
                assert_eq!(err.code, ErrorCode::SeatUnavailable);
                assert!(std::time::Instant::now() < deadline, "the board never saw F5 released");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    assert_eq!(app.taken_seats(&showtime).await, BTreeMap::from([("F5".to_owned(), held(&winner))]));
}
