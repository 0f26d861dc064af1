//! Test isolation: each test gets its own PostgreSQL database, MongoDB database
//! prefix, Redis key prefix, RabbitMQ exchange and queue, so tests run in parallel
//! against the one real server of each kind.

use anyhow::Context;
use sqlx::Connection;

use crate::config::Settings;
use crate::secret::Secret;

/// Test settings with every shared resource renamed for this test alone.
/// The PostgreSQL database is created empty; the cinema service migrates it.
pub async fn isolated_settings() -> anyhow::Result<Settings> {
    let mut settings = Settings::for_tests()?;
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tag = &id[..12];

    let db_name = format!("marquee_test_{tag}");
    let base = settings.postgres.url.expose().clone();
    let (server, _) = base.rsplit_once('/').context("postgres url has no database part")?;
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .context("cannot reach PostgreSQL for test database creation")?;
    // db_name is built above from a UUID, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{db_name}""#)))
        .execute(&mut admin)
        .await
        .context("cannot create the test database")?;
    settings.postgres.url = Secret::new(format!("{server}/{db_name}"));

    settings.mongo.database_prefix = format!("mqt_{tag}");
    settings.redis.key_prefix = format!("mqt:{tag}:");
    settings.rabbitmq.exchange = format!("marquee.events.test.{tag}");
    settings.rabbitmq.notification_queue = format!("marquee.notifications.test.{tag}");
    settings.rabbitmq.ticket_queue = format!("marquee.tickets.test.{tag}");
    Ok(settings)
}

/// A consumer of the test's events exchange for `routing_key`, through a server-named,
/// exclusive queue. Subscribe before anything is published so no event is missed;
/// keep the connection alive while consuming.
pub async fn subscribe_events(
    rabbit: &crate::config::RabbitSettings,
    routing_key: &str,
) -> anyhow::Result<(lapin::Connection, lapin::Consumer)> {
    use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    let (connection, channel) = crate::rabbit::connect(rabbit).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .context("cannot declare a test queue")?;
    channel
        .queue_bind(
            queue.name().clone(),
            crate::rabbit::short_name(&rabbit.exchange, "rabbitmq.exchange")?,
            crate::rabbit::short_name(routing_key, "routing key")?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("cannot bind the test queue")?;
    let consumer = channel
        .basic_consume(queue.name().clone(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .context("cannot consume the test queue")?;
    Ok((connection, consumer))
}
