//! Tickets end to end through GraphQL: book and pay, see one ticket per seat with
//! its signed code and QR code, and the same codes in the confirmation email; check in
//! as staff, cancel and see them revoked.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use marquee_e2e::{Gql, Mesh, Service};
use marquee_kit::Secret;
use serde_json::{Value, json};

const ADMIN_EMAIL: &str = "root@marquee.example";
const ADMIN_PASSWORD: &str = "correct horse battery staple";
const TICKETS: &str = "query($id: ID!) { booking(id: $id) { status tickets { id seatId status checkedInAt code qrSvg validFrom } } }";
const CHECK_IN: &str =
    "mutation($input: CheckInInput!) { checkIn(input: $input) { outcome checkedInAt ticket { id status } } }";
const REVOKED: &str = "query($id: ID!, $after: String) { revokedTickets(showtimeId: $id, after: $after) { tickets { ticketId seatId cursor } cursor hasMore } }";

async fn login(mesh: &Mesh, email: &str, password: &str) -> String {
    let gql = mesh
        .graphql(
            None,
            "mutation($input: LoginInput!) { login(input: $input) { token } }",
            json!({ "input": { "email": email, "password": password } }),
        )
        .await
        .unwrap();
    gql.data().unwrap()["login"]["token"].as_str().unwrap().to_owned()
}

/// A fresh user promoted to STAFF by the admin, signed in again to carry the role.
async fn staff_token(mesh: &Mesh) -> String {
    let email = format!("usher.{}@example.com", uuid::Uuid::new_v4().simple());
    let registered = mesh
        .graphql(
            None,
            "mutation($input: RegisterInput!) { register(input: $input) { user { id } } }",
            json!({ "input": { "email": email, "password": "correct horse battery", "name": "Usher" } }),
        )
        .await
        .unwrap();
    let id = registered.data().unwrap()["register"]["user"]["id"].clone();
    let admin = login(mesh, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let set_role = "mutation($id: ID!) { setUserRole(userId: $id, role: STAFF) { role } }";
    let promoted = mesh.graphql(Some(&admin), set_role, json!({ "id": id })).await.unwrap();
    assert_eq!(promoted.data().unwrap()["setUserRole"]["role"], "STAFF");
    login(mesh, &email, "correct horse battery").await
}

async fn booking_tickets(
    mesh: &Mesh,
    token: &str,
    booking: &str,
    until: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let gql = mesh.graphql(Some(token), TICKETS, json!({ "id": booking })).await.unwrap();
        let tickets = gql.data().unwrap()["booking"]["tickets"].as_array().unwrap().clone();
        if until(&tickets) {
            return tickets;
        }
        assert!(tokio::time::Instant::now() < deadline, "tickets never got there: {tickets:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn scan(ticket: &Value, showtime: &str) -> Value {
    let valid_from: chrono::DateTime<chrono::Utc> = ticket["validFrom"].as_str().unwrap().parse().unwrap();
    json!({ "input": {
        "code": ticket["code"],
        "showtimeId": showtime,
        "nonce": uuid::Uuid::new_v4().to_string(),
        "scannedAt": (valid_from + chrono::Duration::minutes(1)).to_rfc3339(),
    } })
}

fn outcome(gql: &Gql) -> String {
    gql.data().unwrap()["checkIn"]["outcome"].as_str().unwrap().to_owned()
}

async fn spawn_mesh() -> Mesh {
    Mesh::builder()
        .configure(|settings| {
            settings.user.bootstrap_admin_email = Some(ADMIN_EMAIL.to_owned());
            settings.user.bootstrap_admin_password = Some(Secret::new(ADMIN_PASSWORD.to_owned()));
        })
        .start()
        .await
        .unwrap()
}

/// Holds and pays two free seats of a showtime more than two hours away (so it can
/// still be cancelled); returns the showtime, the booking and the seats.
async fn book_two_seats(mesh: &Mesh, customer: &str) -> (String, String, Vec<String>) {
    let showtimes = mesh.graphql(None, "{ showtimes { id startsAt } }", json!({})).await.unwrap();
    let later = chrono::Utc::now() + chrono::Duration::hours(2);
    let showtime = showtimes.data().unwrap()["showtimes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["startsAt"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap() > later)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let map = mesh
        .graphql(
            None,
            "query($id: ID!) { showtime(id: $id) { seatMap { seats { id state } } } }",
            json!({ "id": showtime }),
        )
        .await
        .unwrap();
    let seats: Vec<String> = map.data().unwrap()["showtime"]["seatMap"]["seats"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "AVAILABLE")
        .take(2)
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();

    let hold = "mutation($input: HoldSeatsInput!) { holdSeats(input: $input) { id tickets { id } } }";
    let input = json!({ "showtimeId": showtime, "seatIds": seats, "idempotencyKey": uuid::Uuid::new_v4().to_string() });
    let held = mesh.graphql(Some(customer), hold, json!({ "input": input })).await.unwrap();
    let booking = held.data().unwrap()["holdSeats"]["id"].as_str().unwrap().to_owned();
    assert_eq!(held.data().unwrap()["holdSeats"]["tickets"], json!([]), "no tickets before payment");
    let pay = "mutation($input: PayBookingInput!) { payBooking(input: $input) { status } }";
    let input = json!({ "bookingId": booking, "paymentMethod": "pm_card_ok", "idempotencyKey": uuid::Uuid::new_v4().to_string() });
    let paid = mesh.graphql(Some(customer), pay, json!({ "input": input })).await.unwrap();
    assert_eq!(paid.data().unwrap()["payBooking"]["status"], "CONFIRMED");
    (showtime, booking, seats)
}

/// One valid ticket per seat.
fn assert_valid_tickets_of(tickets: &[Value], seats: &[String]) {
    let mut seat_ids: Vec<&str> = tickets.iter().map(|t| t["seatId"].as_str().unwrap()).collect();
    seat_ids.sort();
    let mut expected: Vec<&str> = seats.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(seat_ids, expected);
    assert!(tickets.iter().all(|t| t["status"] == "VALID"), "{tickets:?}");
}

/// The ticket codes in a message: its lines of 100 or more base64url characters.
fn codes_in(body: &str) -> BTreeSet<String> {
    let base64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    body.lines().filter(|line| line.len() >= 100 && line.chars().all(base64url)).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_confirmation_email_carries_exactly_the_codes_booking_tickets_shows_and_the_sms_their_count() {
    let mesh = spawn_mesh().await;
    let customer = mesh.register("ada").await.unwrap();
    let contact = "mutation { updateProfile(input: { phone: \"+351912345678\", notificationPreferences: { email: true, sms: true } }) { phone } }";
    mesh.graphql(Some(&customer), contact, json!({})).await.unwrap().data().unwrap();

    let (_, booking, seats) = book_two_seats(&mesh, &customer).await;
    let tickets = booking_tickets(&mesh, &customer, &booking, |t| t.len() == 2).await;
    let codes: BTreeSet<String> = tickets.iter().map(|t| t["code"].as_str().unwrap().to_owned()).collect();
    assert_eq!(codes.len(), 2);

    let notifications = "{ me { notifications(first: 20) { nodes { bookingId channel eventType body } } } }";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let confirmations = loop {
        let gql = mesh.graphql(Some(&customer), notifications, json!({})).await.unwrap();
        let nodes = gql.data().unwrap()["me"]["notifications"]["nodes"].as_array().unwrap().clone();
        let confirmations: Vec<Value> = nodes
            .into_iter()
            .filter(|n| n["bookingId"] == booking.as_str() && n["eventType"] == "booking.confirmed")
            .collect();
        if confirmations.len() == 2 {
            break confirmations;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no confirmation by email and SMS: {confirmations:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let body = |channel: &str| {
        confirmations.iter().find(|n| n["channel"] == channel).unwrap()["body"].as_str().unwrap().to_owned()
    };
    let email = body("email");
    assert_eq!(codes_in(&email), codes, "{email}");
    for ticket in &tickets {
        let (seat, code) = (ticket["seatId"].as_str().unwrap(), ticket["code"].as_str().unwrap());
        assert!(email.contains(&format!("Seat {seat}\n{code}\n")), "{email}");
    }
    let sms = body("sms");
    assert!(seats.iter().all(|seat| sms.contains(seat.as_str())), "{sms}");
    assert!(
        sms.ends_with("2 tickets issued: show their QR codes from your email or booking at the door."),
        "{sms}"
    );
    assert!(codes_in(&sms).is_empty() && codes.iter().all(|c| !sms.contains(c.as_str())), "{sms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_booking_gets_tickets_that_staff_check_in_and_cancelling_revokes() {
    let mesh = spawn_mesh().await;
    let customer = mesh.register("ada").await.unwrap();
    let staff = staff_token(&mesh).await;

    let (showtime, booking, seats) = book_two_seats(&mesh, &customer).await;
    let tickets = booking_tickets(&mesh, &customer, &booking, |t| t.len() == 2).await;
    assert_valid_tickets_of(&tickets, &seats);
    for ticket in &tickets {
        assert!(ticket["code"].as_str().unwrap().len() > 100);
        assert!(ticket["qrSvg"].as_str().unwrap().starts_with("<?xml"), "{}", ticket["qrSvg"]);
    }

    // The keys are public, in GraphQL and at the well-known address.
    let keys =
        mesh.graphql(None, "{ ticketKeys { id algorithm publicKey validFrom validUntil } }", json!({})).await;
    let keys = keys.unwrap().data().unwrap()["ticketKeys"].clone();
    assert_eq!(keys[0]["algorithm"], "Ed25519");
    let url = format!("{}/.well-known/marquee/ticket-keys.json", mesh.url(Service::Gateway).unwrap());
    let published: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    assert_eq!(published["keys"], keys);

    // Only staff check in.
    let refused = mesh.graphql(Some(&customer), CHECK_IN, scan(&tickets[0], &showtime)).await.unwrap();
    assert_eq!(refused.error_code(), Some("FORBIDDEN"));
    let refused = mesh.graphql(None, CHECK_IN, scan(&tickets[0], &showtime)).await.unwrap();
    assert_eq!(refused.error_code(), Some("UNAUTHENTICATED"));
    let admitted = mesh.graphql(Some(&staff), CHECK_IN, scan(&tickets[0], &showtime)).await.unwrap();
    assert_eq!(outcome(&admitted), "ADMITTED");
    assert_eq!(admitted.data().unwrap()["checkIn"]["ticket"]["status"], "CHECKED_IN");
    let again = mesh.graphql(Some(&staff), CHECK_IN, scan(&tickets[0], &showtime)).await.unwrap();
    assert_eq!(outcome(&again), "ALREADY_CHECKED_IN");
    assert_eq!(
        again.data().unwrap()["checkIn"]["checkedInAt"],
        admitted.data().unwrap()["checkIn"]["checkedInAt"]
    );
    let mut forged = scan(&tickets[1], &showtime);
    forged["input"]["code"] = json!(format!("{}x", &tickets[1]["code"].as_str().unwrap()[1..]));
    assert_eq!(outcome(&mesh.graphql(Some(&staff), CHECK_IN, forged).await.unwrap()), "INVALID");

    // Cancelled: both tickets revoked; scanners see them in the revocation feed.
    let cancel = "mutation($id: ID!) { cancelBooking(id: $id) { status } }";
    let cancelled = mesh.graphql(Some(&customer), cancel, json!({ "id": booking })).await.unwrap();
    assert_eq!(cancelled.data().unwrap()["cancelBooking"]["status"], "CANCELLED");
    booking_tickets(&mesh, &customer, &booking, |t| t.iter().all(|t| t["status"] == "REVOKED")).await;
    let revoked = mesh.graphql(Some(&customer), REVOKED, json!({ "id": showtime })).await.unwrap();
    assert_eq!(revoked.error_code(), Some("FORBIDDEN"));
    let revoked = mesh.graphql(Some(&staff), REVOKED, json!({ "id": showtime })).await.unwrap();
    let page = revoked.data().unwrap()["revokedTickets"].clone();
    assert_eq!(page["tickets"].as_array().unwrap().len(), 2);
    let since = mesh.graphql(Some(&staff), REVOKED, json!({ "id": showtime, "after": page["cursor"] })).await;
    assert_eq!(since.unwrap().data().unwrap()["revokedTickets"]["tickets"], json!([]));
    let late = mesh.graphql(Some(&staff), CHECK_IN, scan(&tickets[1], &showtime)).await.unwrap();
    assert_eq!(outcome(&late), "REVOKED");
}

/// With the notification worker down nothing asks for a confirmation's tickets: the
/// ticket service finds the confirmation in booking's log of published events and
/// issues them itself, and a cancellation still revokes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_notification_worker_a_paid_booking_gets_its_tickets_from_bookings_log() {
    let mesh = Mesh::builder()
        .without(Service::Notification)
        .configure(|settings| {
            settings.ticket.reconcile_every_ms = 200;
            settings.ticket.reconcile_grace_ms = 1000;
        })
        .start()
        .await
        .unwrap();
    let customer = mesh.register("noor").await.unwrap();
    let (_, booking, seats) = book_two_seats(&mesh, &customer).await;
    let tickets = booking_tickets(&mesh, &customer, &booking, |t| t.len() == 2).await;
    assert_valid_tickets_of(&tickets, &seats);

    let cancel = "mutation($id: ID!) { cancelBooking(id: $id) { status } }";
    let cancelled = mesh.graphql(Some(&customer), cancel, json!({ "id": booking })).await.unwrap();
    assert_eq!(cancelled.data().unwrap()["cancelBooking"]["status"], "CANCELLED");
    booking_tickets(&mesh, &customer, &booking, |t| t.iter().all(|t| t["status"] == "REVOKED")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_scanners_admit_alone_and_upload_reports_double_admissions() {
    use marquee_ticket::domain::Outcome;
    use marquee_ticket::offline::{Gateway, ScannerState};

    let mesh = spawn_mesh().await;
    let customer = mesh.register("ada").await.unwrap();
    let staff = staff_token(&mesh).await;
    let (showtime, booking, _) = book_two_seats(&mesh, &customer).await;
    let tickets = booking_tickets(&mesh, &customer, &booking, |t| t.len() == 2).await;
    let code = |i: usize| tickets[i]["code"].as_str().unwrap().to_owned();
    let valid_from: chrono::DateTime<chrono::Utc> =
        tickets[0]["validFrom"].as_str().unwrap().parse().unwrap();
    let door_opens = valid_from + chrono::Duration::minutes(1);
    let showtime_id = uuid::Uuid::parse_str(&showtime).unwrap();

    let gateway = Gateway::new(&mesh.graphql_url().unwrap(), &staff).unwrap();
    let (mut front, mut side) = (ScannerState::default(), ScannerState::default());
    gateway.sync(&mut front, showtime_id).await.unwrap();
    gateway.sync(&mut side, showtime_id).await.unwrap();
    let keys = front.verifier().unwrap();

    // Both doors are offline; one ticket is shown at both.
    assert_eq!(front.scan(&keys, &code(0), door_opens).unwrap().outcome, Outcome::Admitted);
    let local_repeat = front.scan(&keys, &code(0), door_opens + chrono::Duration::seconds(5)).unwrap();
    assert_eq!(local_repeat.outcome, Outcome::AlreadyCheckedIn);
    let later = door_opens + chrono::Duration::minutes(2);
    assert_eq!(side.scan(&keys, &code(0), later).unwrap().outcome, Outcome::Admitted);

    let report = gateway.upload(&mut front).await.unwrap();
    assert_eq!(report.uploaded, 2);
    assert!(report.double_admissions.is_empty(), "{report:?}");
    let report = gateway.upload(&mut side).await.unwrap();
    assert_eq!(report.uploaded, 1);
    assert_eq!(report.double_admissions.len(), 1, "{report:?}");
    let double = &report.double_admissions[0];
    assert_eq!(double.ticket_id.to_string(), tickets[0]["id"].as_str().unwrap());
    assert_eq!(double.admitted_here_at, later);
    assert_eq!(double.first_admitted_at, Some(door_opens), "the front door's original scan time");
    // Uploading again sends nothing twice.
    assert_eq!(gateway.upload(&mut side).await.unwrap().uploaded, 0);

    // A cancellation reaches an offline scanner with its next sync.
    let cancel = "mutation($id: ID!) { cancelBooking(id: $id) { status } }";
    mesh.graphql(Some(&customer), cancel, json!({ "id": booking })).await.unwrap().data().unwrap();
    booking_tickets(&mesh, &customer, &booking, |t| t.iter().all(|t| t["status"] == "REVOKED")).await;
    assert_eq!(side.scan(&keys, &code(1), later).unwrap().outcome, Outcome::Admitted, "not synced yet");
    assert_eq!(gateway.sync(&mut side, showtime_id).await.unwrap(), 2);
    assert_eq!(gateway.sync(&mut side, showtime_id).await.unwrap(), 0, "only what changed");
    assert_eq!(side.scan(&keys, &code(1), later).unwrap().outcome, Outcome::Revoked);
    let report = gateway.upload(&mut side).await.unwrap();
    assert_eq!(report.admitted_but_revoked.len(), 1, "{report:?}");
}
