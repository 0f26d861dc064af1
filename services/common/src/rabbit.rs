//! RabbitMQ: the one way every process connects and declares the events exchange.

use anyhow::Context;
use lapin::options::ExchangeDeclareOptions;
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::RabbitSettings;

/// A configured name (exchange, queue, routing key) as an AMQP short string.
pub fn short_name(value: &str, what: &str) -> anyhow::Result<ShortString> {
    ShortString::try_new(value.to_owned()).map_err(|e| anyhow::anyhow!("{what} {value:?} is not valid: {e}"))
}

/// Connects, opens a channel and declares the durable topic exchange (idempotent).
/// The connection must be kept alive for as long as the channel is used.
pub async fn connect(settings: &RabbitSettings) -> anyhow::Result<(Connection, Channel)> {
    let exchange = short_name(&settings.exchange, "rabbitmq.exchange")?;
    let connection = Connection::connect(settings.url.expose(), ConnectionProperties::default())
        .await
        .context("cannot connect to RabbitMQ")?;
    let channel = connection.create_channel().await.context("cannot open a RabbitMQ channel")?;
    channel
        .exchange_declare(
            exchange,
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
            FieldTable::default(),
        )
        .await
        .context("cannot declare the events exchange")?;
    Ok((connection, channel))
}
