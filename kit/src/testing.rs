//! Test isolation: each test gets its own PostgreSQL database, MongoDB database
//! prefix, Redis key prefix, RabbitMQ exchange and queues, so tests run in parallel
//! against the one real server of each kind. The renaming is done on the layers, so
//! every binary's `Settings` (and a mesh of them) reads the same isolated names.
//! Also reading a service's `/metrics` (`scrape`, `sample`).

use std::net::SocketAddr;

use anyhow::Context;
use figment::Figment;
use figment::providers::Serialized;
use sqlx::Connection;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::config::{self, Config};

/// The test layers (`config/test.toml`, then `MARQUEE_*` variables) with every shared
/// resource renamed for this test alone. The PostgreSQL database is created empty;
/// the cinema service migrates it.
pub async fn isolated_layers() -> anyhow::Result<Figment> {
    let layers = config::layers(&config::repository_dir(), "test")?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tag = &id[..12];

    let db_name = format!("marquee_test_{tag}");
    let base: String = layers.extract_inner("postgres.url").context("no postgres.url")?;
    let (server, _) = base.rsplit_once('/').context("postgres url has no database part")?;
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .context("cannot reach PostgreSQL for test database creation")?;
    // db_name is built above from a UUID, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{db_name}""#)))
        .execute(&mut admin)
        .await
        .context("cannot create the test database")?;

    Ok(layers
        .merge(Serialized::default("postgres.url", format!("{server}/{db_name}")))
        .merge(Serialized::default("mongo.database_prefix", format!("mqt_{tag}")))
        .merge(Serialized::default("redis.key_prefix", format!("mqt:{tag}:")))
        .merge(Serialized::default("rabbitmq.exchange", format!("marquee.events.test.{tag}")))
        .merge(Serialized::default(
            "rabbitmq.notification_queue",
            format!("marquee.notifications.test.{tag}"),
        ))
        .merge(Serialized::default("rabbitmq.ticket_queue", format!("marquee.tickets.test.{tag}"))))
}

/// A binary's test settings with every shared resource renamed for this test alone.
pub async fn isolated_settings<T: Config>() -> anyhow::Result<T> {
    config::extract(&isolated_layers().await?, "the isolated test configuration")
}

/// `GET /metrics` at a service's metrics address: its Prometheus text.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream =
        tokio::net::TcpStream::connect(addr).await.with_context(|| format!("no /metrics on {addr}"))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.context("cannot read /metrics")?;
    let (head, body) = response.split_once("\r\n\r\n").context("/metrics answered no HTTP response")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "GET /metrics answered {head}");
    Ok(body.to_owned())
}

/// The value of one series in `scrape`'s text, named as rendered: `name{label="value",…}`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}
