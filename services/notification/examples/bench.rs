//! Notification throughput: events published to RabbitMQ with publisher confirms
//! (as the booking outbox relay publishes them) → the notification worker (and the
//! ticket service, issuing the tickets whose codes the confirmations carry) →
//! messages recorded in MongoDB. Run by `scripts/bench-notifications`; writes
//! `{"events_per_s","produced","notified","lost","duplicates","sent_without_codes",…}`
//! as JSON.
//!
//! Usage: bench [EVENTS] [OUTPUT.json] [PREFETCH]

#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use marquee_kit::config::extract;
use marquee_kit::shutdown::Shutdown;
use marquee_proto::cinema::v1::ListShowtimesRequest;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use marquee_proto::common::v1::Money;
use marquee_proto::events::v1::{BookingConfirmed, Event, event::Payload};
use marquee_proto::user::v1::RegisterRequest;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use mongodb::bson::{Document, doc};
use prost::Message;
use uuid::Uuid;

/// The allocator the services' binaries run with (their `main.rs`): this process
/// stands in for four of them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USERS: usize = 50;
const PUBLISH_WINDOW: usize = 2000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    marquee_kit::memory::no_transparent_huge_pages();
    marquee_kit::telemetry::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let produced: usize =
        args.next().map(|n| n.parse()).transpose().context("EVENTS must be a number")?.unwrap_or(20_000);
    let output = args.next().unwrap_or_else(|| "bench/results/notifications.json".to_owned());
    let prefetch: Option<u16> =
        args.next().map(|n| n.parse()).transpose().context("PREFETCH must be a number")?;

    // The four services read their own sections of the same isolated layers.
    let layers = marquee_kit::testing::isolated_layers().await?;
    let mut settings: marquee_notification::Settings = extract(&layers, "the bench")?;
    let user_settings: marquee_user::Settings = extract(&layers, "the bench")?;
    let mut cinema_settings: marquee_cinema::Settings = extract(&layers, "the bench")?;
    marquee_kit::telemetry::init(&settings.telemetry);
    cinema_settings.cinema.seed_demo = true;
    if let Some(prefetch) = prefetch {
        settings.rabbitmq.prefetch = prefetch;
    }
    let shutdown = Shutdown::new();
    let user = marquee_user::Application::build(user_settings).await?;
    settings.upstream.user_url = format!("http://{}", user.addr());
    tokio::spawn(user.run_until_stopped(shutdown.clone()));
    let cinema = marquee_cinema::Application::build(cinema_settings).await?;
    settings.upstream.cinema_url = format!("http://{}", cinema.addr());
    tokio::spawn(cinema.run_until_stopped(shutdown.clone()));
    let mut ticket_settings: marquee_ticket::Settings = extract(&layers, "the bench")?;
    ticket_settings.upstream.cinema_url = settings.upstream.cinema_url.clone();
    let ticket = marquee_ticket::Application::build(ticket_settings).await?;
    settings.upstream.ticket_url = format!("http://{}", ticket.addr());
    tokio::spawn(ticket.run_until_stopped(shutdown.clone()));
    let worker = marquee_notification::Application::build(settings.clone()).await?;
    let metrics_url = format!("http://{}/metrics", worker.metrics_addr());
    let worker = tokio::spawn(worker.run_until_stopped(shutdown.clone()));

    let showtime = CinemaServiceClient::connect(settings.upstream.cinema_url.clone())
        .await?
        .list_showtimes(ListShowtimesRequest::default())
        .await?
        .into_inner()
        .showtimes
        .into_iter()
        .next()
        .context("the demo catalog has no showtime")?;
    let mut users = UserServiceClient::connect(settings.upstream.user_url.clone()).await?;
    let mut user_ids = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let registered = users
            .register(RegisterRequest {
                email: format!("bench{i}.{}@example.com", Uuid::new_v4().simple()),
                password: "correct horse battery staple".into(),
                name: format!("Bench {i}"),
                ..Default::default()
            })
            .await?
            .into_inner();
        user_ids.push(registered.user.context("register returned no user")?.id);
    }
    let events: Vec<Vec<u8>> = (0..produced)
        .map(|i| {
            Event {
                event_id: Uuid::now_v7().to_string(),
                r#type: "booking.confirmed".into(),
                occurred_at: Some(marquee_kit::time::to_proto(chrono::Utc::now())),
                booking_id: Uuid::now_v7().to_string(),
                user_id: user_ids[i % USERS].clone(),
                payload: Some(Payload::BookingConfirmed(BookingConfirmed {
                    showtime_id: showtime.id.clone(),
                    seat_ids: vec![format!("A{}", i % 20 + 1)],
                    total: Some(Money { amount_minor: 1250, currency: "EUR".into() }),
                    payment_id: Uuid::new_v4().to_string(),
                })),
            }
            .encode_to_vec()
        })
        .collect();

    let connection =
        Connection::connect(settings.rabbitmq.url.expose(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let log = marquee_mongo::connect(&settings.mongo, "notification")
        .await?
        .collection::<Document>("notifications");

    let started = Instant::now();
    let publishing = async {
        for window in events.chunks(PUBLISH_WINDOW) {
            let mut confirms = Vec::with_capacity(window.len());
            for body in window {
                confirms.push(
                    channel
                        .basic_publish(
                            settings.rabbitmq.exchange.clone().into(),
                            "booking.confirmed".into(),
                            BasicPublishOptions::default(),
                            body,
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await?,
                );
            }
            for confirm in confirms {
                anyhow::ensure!(confirm.await?.is_ack(), "the broker refused an event");
            }
        }
        anyhow::Ok(started.elapsed())
    };
    let published_in = publishing.await?;

    // Done when the worker reports every event sent, or nothing moved for a while. Its
    // metrics are polled rather than the store, whose counting would slow it down;
    // the store is counted once at the end.
    let mut sent = 0.0;
    let mut last_progress = Instant::now();
    while sent < produced as f64 && last_progress.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = sent_so_far(&metrics_url).await?;
        if now > sent {
            sent = now;
            last_progress = Instant::now();
        }
    }
    let elapsed = started.elapsed();
    let distinct = log.distinct("event_id", doc! {}).await?.len() as u64;
    let records = log.count_documents(doc! {}).await?;
    // Every confirmation must carry its ticket's code; the worker sends without codes
    // only when the ticket service stayed unreachable past the retry budget.
    let without_codes = log.count_documents(doc! { "tickets": { "$size": 0 } }).await?;
    shutdown.cancel();
    worker.await??;

    let result = serde_json::json!({
        "events_per_s": (distinct as f64 / elapsed.as_secs_f64()).round(),
        "produced": produced,
        "notified": distinct,
        "lost": produced as u64 - distinct,
        "duplicates": records - distinct,
        "sent_without_codes": without_codes,
        "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "publish_seconds": (published_in.as_secs_f64() * 100.0).round() / 100.0,
        "prefetch": settings.rabbitmq.prefetch,
        "users": USERS,
        "channel": "MongoDB record (email only: default preferences)",
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(dir) = std::path::Path::new(&output).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&output, serde_json::to_string_pretty(&result)? + "\n")
        .context("cannot write the result")?;
    Ok(())
}

async fn sent_so_far(metrics_url: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(metrics_url).await?.error_for_status()?.text().await?;
    Ok(text
        .lines()
        .filter_map(|line| line.strip_prefix("notification_messages_sent_total "))
        .find_map(|value| value.trim().parse().ok())
        .unwrap_or(0.0))
}
