//! Subscriptions over WebSocket (`graphql-transport-ws`): live seat maps fanned out
//! from one upstream `WatchSeats` stream per showtime.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use marquee_kit::shutdown::Shutdown;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::ops::{metric, wait_for_metric};
use super::{HOLD, PAY, TestApp, code, hold_input, pay_input, spawn_app};

const SEAT_MAP: &str = "subscription($id: ID!) { seatMap(showtimeId: $id) {
    showtimeId resync change { seatId state reason changedAt } } }";
/// Long enough for a loaded CI machine; a missing message fails the test, not hangs it.
const PATIENCE: Duration = Duration::from_secs(20);

struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects with `graphql-transport-ws` and completes the handshake.
    async fn connect(app: &TestApp, init: Value) -> Client {
        let mut client = Self::open(app).await;
        client.send(json!({ "type": "connection_init", "payload": init })).await;
        let ack = client.next().await.expect("an answer to connection_init");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        client
    }

    async fn open(app: &TestApp) -> Client {
        Self::open_with(app, None).await
    }

    /// Opens the WebSocket, with an `Authorization` header on the upgrade request.
    async fn open_with(app: &TestApp, authorization: Option<&str>) -> Client {
        let mut request = format!("ws://{}/graphql", app.addr).into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
        if let Some(value) = authorization {
            request.headers_mut().insert("authorization", value.parse().unwrap());
        }
        // Small buffers: one test holds thousands of these clients.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (socket, response) = tokio_tungstenite::connect_async_with_config(request, Some(config), false)
            .await
            .expect("WebSocket upgrade");
        assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
        Client { socket }
    }

    async fn send(&mut self, message: Value) {
        self.socket.send(Message::Text(message.to_string().into())).await.unwrap();
    }

    async fn subscribe(&mut self, id: &str, showtime: &str) {
        let payload = json!({ "query": SEAT_MAP, "variables": { "id": showtime } });
        self.send(json!({ "id": id, "type": "subscribe", "payload": payload })).await;
    }

    /// The next protocol message; `None` once the server closed the connection.
    async fn next(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(PATIENCE, self.socket.next())
                .await
                .expect("no WebSocket message in time")?
                .ok()?;
            match frame {
                Message::Text(text) => return Some(serde_json::from_str(text.as_str()).unwrap()),
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// The next `seatMap` update of subscription `id`.
    async fn update(&mut self, id: &str) -> Value {
        let message = self.next().await.expect("the connection stays open");
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], id, "{message}");
        assert!(message["payload"].get("errors").is_none(), "{message}");
        message["payload"]["data"]["seatMap"].clone()
    }
}

/// `(seatId, state, reason)` of a change update.
fn change(update: &Value) -> (&str, &str, &str) {
    assert_eq!(update["resync"], false, "{update}");
    let change = &update["change"];
    assert!(change["changedAt"].is_string(), "{update}");
    (
        change["seatId"].as_str().unwrap(),
        change["state"].as_str().unwrap(),
        change["reason"].as_str().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_map_subscribers_share_one_upstream_stream_and_see_every_change() {
    let app = spawn_app().await;
    let (ada, _) = app.register("ada").await;
    let showtime = app.first_showtime().await;

    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&app, json!({})).await;
        client.subscribe("seats", &showtime).await;
        clients.push(client);
    }
    // A second subscription on one connection is one more subscriber, same stream.
    clients[0].subscribe("again", &showtime).await;
    // Counted once the upstream stream is open: changes from here on reach everyone.
    wait_for_metric(&app, "gateway_subscriptions_active", 4.0).await;
    assert_eq!(metric(&app, "gateway_seat_streams_opened_total").await, 1.0);
    assert_eq!(metric(&app, "gateway_seat_streams_active").await, 1.0);
    // The same request from four subscribers is executed (and each update encoded) once.
    assert_eq!(metric(&app, "gateway_shared_subscriptions_active").await, 1.0);

    // Hold → confirm → cancel of one seat.
    let held = app.data(Some(&ada), HOLD, hold_input(&showtime, &["A1"])).await;
    let booking = held["holdSeats"]["id"].as_str().unwrap().to_owned();
    app.data(Some(&ada), PAY, pay_input(&booking, "pm_card_ok")).await;
    // → cancel, which releases the booked seat.
    let cancel = "mutation($id: ID!) { cancelBooking(id: $id) { status } }";
    let cancelled = app.data(Some(&ada), cancel, json!({ "id": booking })).await;
    assert_eq!(cancelled["cancelBooking"]["status"], "CANCELLED", "{cancelled}");
    // Hold → declined payment, which releases.
    let held = app.data(Some(&ada), HOLD, hold_input(&showtime, &["A2"])).await;
    let declined = held["holdSeats"]["id"].as_str().unwrap().to_owned();
    let error = app.error(Some(&ada), PAY, pay_input(&declined, "pm_card_declined")).await;
    assert_eq!(code(&error), "PAYMENT_DECLINED");

    let expected = [
        ("A1", "HELD", "HELD"),
        ("A1", "BOOKED", "BOOKED"),
        ("A1", "AVAILABLE", "RELEASED"),
        ("A2", "HELD", "HELD"),
        ("A2", "AVAILABLE", "RELEASED"),
    ];
    for client in &mut clients[1..] {
        for want in expected {
            let update = client.update("seats").await;
            assert_eq!(update["showtimeId"], showtime.as_str());
            assert_eq!(change(&update), want);
        }
    }
    // Both subscriptions of the first connection get every change, interleaved.
    let (mut seats, mut again) = (Vec::new(), Vec::new());
    while seats.len() < expected.len() || again.len() < expected.len() {
        let message = clients[0].next().await.expect("the connection stays open");
        let update = message["payload"]["data"]["seatMap"].clone();
        let (seat, state, reason) = change(&update);
        let entry = (seat.to_owned(), state.to_owned(), reason.to_owned());
        match message["id"].as_str() {
            Some("seats") => seats.push(entry),
            Some("again") => again.push(entry),
            other => panic!("unexpected message for {other:?}: {message}"),
        }
    }
    let expected: Vec<_> =
        expected.iter().map(|(s, st, r)| ((*s).to_owned(), (*st).to_owned(), (*r).to_owned())).collect();
    assert_eq!(seats, expected);
    assert_eq!(again, expected);
    assert_eq!(
        metric(&app, "gateway_seat_streams_opened_total").await,
        1.0,
        "one stream for every subscriber"
    );
    // Each change's lag is recorded once where it arrived and once where the shared
    // update carrying it was built, not once per subscriber (there are four).
    let changes = expected.len() as f64;
    assert_eq!(metric(&app, r#"gateway_seat_change_lag_seconds_count{stage="received"}"#).await, changes);
    assert_eq!(metric(&app, r#"gateway_seat_change_lag_seconds_count{stage="built"}"#).await, changes);
    let under_ten_seconds = r#"gateway_seat_change_lag_seconds_bucket{stage="built",le="10"}"#;
    assert_eq!(metric(&app, under_ten_seconds).await, changes, "lags are seconds, not a clock's epoch");

    // `complete` ends one subscription; the stream stays for the others.
    clients[0].send(json!({ "id": "again", "type": "complete" })).await;
    wait_for_metric(&app, "gateway_subscriptions_active", 3.0).await;
    assert_eq!(metric(&app, "gateway_seat_streams_active").await, 1.0);

    // The last subscriber leaving closes the upstream stream...
    drop(clients);
    wait_for_metric(&app, "gateway_subscriptions_active", 0.0).await;
    wait_for_metric(&app, "gateway_seat_streams_active", 0.0).await;
    assert_eq!(metric(&app, "gateway_shared_subscriptions_active").await, 0.0);

    // ...and the next one opens a fresh one, live from its start.
    let mut late = Client::connect(&app, json!({})).await;
    late.subscribe("late", &showtime).await;
    wait_for_metric(&app, "gateway_subscriptions_active", 1.0).await;
    assert_eq!(metric(&app, "gateway_seat_streams_opened_total").await, 2.0);
    app.data(Some(&ada), HOLD, hold_input(&showtime, &["A3"])).await;
    assert_eq!(change(&late.update("late").await), ("A3", "HELD", "HELD"));
}

const COALESCED: &str = "subscription($id: ID!) { seatMap(showtimeId: $id, coalesce: true) {
    resync change { seatId state } changes { seatId state reason changedAt } } }";

/// The `(seatId, state)` pairs an update carries in `changes`; with `coalesce`,
/// `change` must be the latest of them.
fn carried(update: &Value) -> Vec<(String, String)> {
    assert_eq!(update["resync"], false, "{update}");
    let changes: Vec<(String, String)> = update["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes list: {update}"))
        .iter()
        .map(|c| {
            assert!(c["changedAt"].is_string(), "{update}");
            (c["seatId"].as_str().unwrap().to_owned(), c["state"].as_str().unwrap().to_owned())
        })
        .collect();
    let last = changes.last().unwrap_or_else(|| panic!("an update without changes: {update}"));
    assert_eq!(
        (update["change"]["seatId"].as_str().unwrap(), update["change"]["state"].as_str().unwrap()),
        (last.0.as_str(), last.1.as_str())
    );
    changes
}

/// Two subscribers of `showtime` on connections of their own, open: `c` with
/// `coalesce: true`, `s` without.
async fn coalesced_and_single(app: &TestApp, showtime: &str) -> (Client, Client) {
    let mut coalesced = Client::connect(app, json!({})).await;
    let payload = json!({ "query": COALESCED, "variables": { "id": showtime } });
    coalesced.send(json!({ "id": "c", "type": "subscribe", "payload": payload })).await;
    let mut single = Client::connect(app, json!({})).await;
    single.subscribe("s", showtime).await;
    wait_for_metric(app, "gateway_subscriptions_active", 2.0).await;
    (coalesced, single)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_subscribers_get_every_change_once_in_order_and_others_one_per_update() {
    let app = spawn_app().await;
    let (ada, _) = app.register("ada").await;
    let showtime = app.first_showtime().await;

    let (mut coalesced, mut single) = coalesced_and_single(&app, &showtime).await;
    // Two documents: two executions, over one upstream stream.
    assert_eq!(metric(&app, "gateway_shared_subscriptions_active").await, 2.0);
    assert_eq!(metric(&app, "gateway_seat_streams_active").await, 1.0);

    // One transaction holds four seats (four changes committed at once), then the
    // payment books them.
    let seats = ["B1", "B2", "B3", "B4"];
    let held = app.data(Some(&ada), HOLD, hold_input(&showtime, &seats)).await;
    let booking = held["holdSeats"]["id"].as_str().unwrap().to_owned();
    app.data(Some(&ada), PAY, pay_input(&booking, "pm_card_ok")).await;

    let mut received = Vec::new();
    while received.len() < 2 * seats.len() {
        received.extend(carried(&coalesced.update("c").await));
    }
    assert_eq!(received.len(), 2 * seats.len(), "no change twice: {received:?}");
    let mut held: Vec<_> =
        received[..4].iter().map(|(seat, state)| (seat.as_str(), state.as_str())).collect();
    let mut booked: Vec<_> =
        received[4..].iter().map(|(seat, state)| (seat.as_str(), state.as_str())).collect();
    held.sort_unstable();
    booked.sort_unstable();
    assert_eq!(held, seats.map(|seat| (seat, "HELD")), "every hold before any booking");
    assert_eq!(booked, seats.map(|seat| (seat, "BOOKED")));

    // Without `coalesce`, one change per update, the same changes in the same order.
    let mut one_by_one = Vec::new();
    for _ in 0..2 * seats.len() {
        let update = single.update("s").await;
        let (seat, state, _) = change(&update);
        assert_eq!(update["changes"], Value::Null, "not selected: {update}");
        one_by_one.push((seat.to_owned(), state.to_owned()));
    }
    assert_eq!(one_by_one, received);

    // Nothing was left over: the next update of each carries only the next change, so
    // no change came twice, not even after the last of the eight.
    app.data(Some(&ada), HOLD, hold_input(&showtime, &["B5"])).await;
    assert_eq!(carried(&coalesced.update("c").await), [("B5".to_owned(), "HELD".to_owned())]);
    assert_eq!(change(&single.update("s").await), ("B5", "HELD", "HELD"));
}

/// A rush's seat changes go out in paced rounds: what is committed while a round's pause
/// runs waits for the next round, in one update for a coalescing subscriber and as a
/// burst of single-change updates for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_committed_between_rounds_go_out_together_in_the_next_round() {
    // Long enough that the two later holds surely commit inside the pause.
    let app = super::spawn_app_with(|settings| settings.gateway.subscription_pace_ms = 5_000).await;
    // Two customers: one holds at most two bookings of a showtime at once.
    let (ada, _) = app.register("ada").await;
    let (bob, _) = app.register("bob").await;
    let showtime = app.first_showtime().await;
    let (mut coalesced, mut single) = coalesced_and_single(&app, &showtime).await;

    // The first change finds the groups idle: it goes out at once, and a pause starts.
    app.data(Some(&ada), HOLD, hold_input(&showtime, &["D1"])).await;
    assert_eq!(carried(&coalesced.update("c").await), [("D1".to_owned(), "HELD".to_owned())]);
    assert_eq!(change(&single.update("s").await), ("D1", "HELD", "HELD"));
    app.data(Some(&bob), HOLD, hold_input(&showtime, &["D3"])).await;
    app.data(Some(&bob), HOLD, hold_input(&showtime, &["D5"])).await;

    let held = |seat: &str| (seat.to_owned(), "HELD".to_owned());
    assert_eq!(carried(&coalesced.update("c").await), [held("D3"), held("D5")], "one update for the round");
    assert_eq!(change(&single.update("s").await), ("D3", "HELD", "HELD"));
    assert_eq!(change(&single.update("s").await), ("D5", "HELD", "HELD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_refuse_unknown_showtimes_and_bad_tokens() {
    let app = spawn_app().await;

    let mut client = Client::connect(&app, json!({})).await;
    client.subscribe("unknown", "00000000-0000-4000-8000-000000000000").await;
    let message = client.next().await.unwrap();
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(code(&message["payload"]["errors"][0]), "NOT_FOUND", "{message}");
    assert_eq!(client.next().await.unwrap(), json!({ "id": "unknown", "type": "complete" }));

    client.subscribe("malformed", "not a showtime id").await;
    let message = client.next().await.unwrap();
    assert_eq!(code(&message["payload"]["errors"][0]), "BAD_USER_INPUT", "{message}");
    assert_eq!(metric(&app, "gateway_seat_streams_active").await, 0.0, "failed opens leave no stream");

    // A signed-in viewer may subscribe too; a forged token ends the connection.
    let (token, _) = app.register("ada").await;
    let mut signed_in = Client::connect(&app, json!({ "Authorization": format!("Bearer {token}") })).await;
    signed_in.subscribe("seats", &app.first_showtime().await).await;
    wait_for_metric(&app, "gateway_subscriptions_active", 1.0).await;

    let mut forged = Client::open(&app).await;
    forged
        .send(json!({ "type": "connection_init", "payload": { "Authorization": "Bearer not.a.jwt" } }))
        .await;
    assert_eq!(forged.next().await, None, "the server closes the connection");

    // Clients that can set headers may send the token on the upgrade request instead.
    let mut by_header = Client::open_with(&app, Some(&format!("Bearer {token}"))).await;
    by_header.send(json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(by_header.next().await.unwrap()["type"], "connection_ack");
    let mut forged = Client::open_with(&app, Some("Bearer not.a.jwt")).await;
    forged.send(json!({ "type": "connection_init", "payload": {} })).await;
    assert_eq!(forged.next().await, None, "the server closes the connection");
}

/// A TCP forwarder to `target` whose every open connection can be cut at once, like
/// a network failure between the gateway and cinema.
fn cuttable_route(target: &str) -> (String, tokio::sync::watch::Sender<u64>) {
    let target = target.trim_start_matches("http://").to_owned();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let (cut, cuts) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            let mut cuts = cuts.clone();
            cuts.borrow_and_update();
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(&target).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cuts.changed() => {}
                }
            });
        }
    });
    (url, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_upstream_stream_is_reopened_and_subscribers_told_to_resync() {
    let mut cut = None;
    let app = super::spawn_app_wired(
        |_| {},
        |settings| {
            let (url, switch) = cuttable_route(&settings.upstream.cinema_url);
            settings.upstream.cinema_url = url;
            cut = Some(switch);
        },
    )
    .await;
    let cut = cut.unwrap();
    let (ada, _) = app.register("ada").await;
    let showtime = app.first_showtime().await;

    let mut client = Client::connect(&app, json!({})).await;
    client.subscribe("seats", &showtime).await;
    wait_for_metric(&app, "gateway_subscriptions_active", 1.0).await;

    cut.send_modify(|cuts| *cuts += 1);
    // Re-opened behind the subscriber's back; it is told changes may be lost...
    let update = client.update("seats").await;
    assert_eq!(update, json!({ "showtimeId": showtime, "resync": true, "change": null }));
    assert_eq!(metric(&app, "gateway_seat_streams_opened_total").await, 2.0);
    assert_eq!(metric(&app, "gateway_seat_streams_active").await, 1.0);

    // ...and stays subscribed to the new stream.
    app.data(Some(&ada), HOLD, hold_input(&showtime, &["B1"])).await;
    assert_eq!(change(&client.update("seats").await), ("B1", "HELD", "HELD"));
}

/// The fan-out at scale, counted rather than weighed: thousands of subscribers of one
/// showtime share one upstream stream, one change reaches every one of them, and once
/// they leave the gateway holds neither their subscriptions nor the stream. (What a
/// subscriber costs in memory is a benchmark figure: `marquee-bench rush` reads the
/// gateway's RSS.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_subscribers_share_one_upstream_stream_which_closes_when_they_leave() {
    const USERS: usize = 2_000;
    // Every connection spends its address's budget; these all come from loopback.
    let app = super::spawn_app_with(|settings| settings.gateway.rate_limit.enabled = false).await;
    let (ada, _) = app.register("ada").await;
    let showtime = app.first_showtime().await;

    let mut clients = Vec::with_capacity(USERS);
    for _ in 0..USERS {
        let mut client = Client::connect(&app, json!({})).await;
        client.subscribe("seats", &showtime).await;
        clients.push(client);
    }
    wait_for_metric(&app, "gateway_subscriptions_active", USERS as f64).await;
    assert_eq!(metric(&app, "gateway_seat_streams_opened_total").await, 1.0);
    assert_eq!(metric(&app, "gateway_seat_streams_active").await, 1.0);
    assert_eq!(metric(&app, "gateway_shared_subscriptions_active").await, 1.0, "one execution for all");

    app.data(Some(&ada), HOLD, hold_input(&showtime, &["C1"])).await;
    for client in &mut clients {
        assert_eq!(change(&client.update("seats").await), ("C1", "HELD", "HELD"));
    }

    drop(clients);
    wait_for_metric(&app, "gateway_subscriptions_active", 0.0).await;
    wait_for_metric(&app, "gateway_seat_streams_active", 0.0).await;
    assert_eq!(metric(&app, "gateway_seat_streams_opened_total").await, 1.0, "never re-opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_holds_a_bounded_number_of_subscriptions() {
    let app = super::spawn_app_with(|settings| settings.gateway.max_subscriptions_per_connection = 2).await;
    let showtime = app.first_showtime().await;
    let mut client = Client::connect(&app, json!({})).await;
    client.subscribe("a", &showtime).await;
    client.subscribe("b", &showtime).await;
    wait_for_metric(&app, "gateway_subscriptions_active", 2.0).await;

    client.subscribe("c", &showtime).await;
    let refused = client.next().await.unwrap();
    assert_eq!(refused["id"], "c", "{refused}");
    assert_eq!(code(&refused["payload"]["errors"][0]), "RATE_LIMITED", "{refused}");
    assert_eq!(client.next().await.unwrap(), json!({ "id": "c", "type": "complete" }));

    // Ending one frees its place; other connections have their own.
    client.send(json!({ "id": "a", "type": "complete" })).await;
    wait_for_metric(&app, "gateway_subscriptions_active", 1.0).await;
    client.subscribe("d", &showtime).await;
    let mut other = Client::connect(&app, json!({})).await;
    other.subscribe("a", &showtime).await;
    other.subscribe("b", &showtime).await;
    wait_for_metric(&app, "gateway_subscriptions_active", 4.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_shutting_down_sends_its_subscribers_away() {
    let app = spawn_app().await;
    let showtime = app.first_showtime().await;
    // A second gateway over the same mesh, stopped on its own.
    let gateway = marquee_gateway::Application::build(app.settings.gateway()).await.unwrap();
    let stop = Shutdown::new();
    let lone = TestApp {
        addr: gateway.addr(),
        settings: app.settings.clone(),
        http: app.http.clone(),
        _mesh: None,
        _stop: Some(stop.clone().drop_guard()),
    };
    let server = tokio::spawn(gateway.run_until_stopped(stop.clone()));
    let mut client = Client::connect(&lone, json!({})).await;
    client.subscribe("seats", &showtime).await;
    wait_for_metric(&lone, "gateway_subscriptions_active", 1.0).await;

    stop.cancel();
    let frame = loop {
        match tokio::time::timeout(PATIENCE, client.socket.next()).await.expect("a close frame in time") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(frame.expect("a close code").code, CloseCode::Away);
    // The open subscription does not hold the shutdown up.
    tokio::time::timeout(PATIENCE, server).await.expect("a prompt shutdown").unwrap().unwrap();
}
