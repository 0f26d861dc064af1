//! RabbitMQ: the one way every process connects and declares the events exchange.

use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use crate::RabbitSettings;

/// A configured name (exchange, queue, routing key) as an AMQP short string.
pub fn short_name(value: &str, what: &str) -> anyhow::Result<ShortString> {
    ShortString::try_new(value.to_owned()).map_err(|e| anyhow::anyhow!("{what} {value:?} is not valid: {e}"))
}

/// Connects, opens a channel and declares the durable topic exchange (idempotent).
/// The connection must be kept alive for as long as the channel is used. Gives up
/// after `CONNECT_TIMEOUT`: a broker that is stopping can accept a connection and
/// never finish the handshake, which would otherwise hang the caller for good.
pub async fn connect(settings: &RabbitSettings) -> anyhow::Result<(Connection, Channel)> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_now(settings))
        .await
        .map_err(|_| anyhow::anyhow!("RabbitMQ did not answer within {CONNECT_TIMEOUT:?}"))?
}

/// How long connecting, opening a channel and declaring the exchange may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn connect_now(settings: &RabbitSettings) -> anyhow::Result<(Connection, Channel)> {
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

/// `delivery_mode` of a message the broker writes to disk.
pub const PERSISTENT: u8 = 2;

/// Publishes one message on a channel in confirm mode and waits for the broker to
/// take responsibility for it: only then may the caller forget its copy (ack the
/// delivery it came from, say). Mandatory: a message no queue would receive is an
/// error, not silently dropped.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    data: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let confirm = channel
        .basic_publish(
            short_name(exchange, "exchange")?,
            short_name(routing_key, "routing key")?,
            BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
            data,
            properties,
        )
        .await
        .with_context(|| format!("cannot publish to {exchange:?} with key {routing_key:?}"))?;
    match confirm.await.context("no publisher confirm")? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => anyhow::bail!("no queue is bound for {routing_key:?} on {exchange:?}"),
        Confirmation::Nack(_) => anyhow::bail!("the broker refused the message for {routing_key:?}"),
        Confirmation::NotRequested => anyhow::bail!("publisher confirms are not enabled on this channel"),
    }
}
