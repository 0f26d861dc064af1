//! Test helpers for events: a consumer of a test's own events exchange.

use anyhow::Context;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::RabbitSettings;

/// A consumer of the test's events exchange for `routing_key`, through a server-named,
/// exclusive queue. Subscribe before anything is published so no event is missed;
/// keep the connection alive while consuming.
pub async fn subscribe_events(
    rabbit: &RabbitSettings,
    routing_key: &str,
) -> anyhow::Result<(lapin::Connection, lapin::Consumer)> {
    let (connection, channel) = crate::rabbit::connect_patiently("test subscriber", rabbit).await?;
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
