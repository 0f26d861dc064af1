//! RabbitMQ: the one way every process connects and declares the events exchange.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use marquee_kit::backoff::{Backoff, Reconnect};
use tokio_util::sync::CancellationToken;

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

/// How long a process that is starting keeps trying a broker that does not answer
/// before it gives up. A broker restarting, or stalled under load (seen here: ~30 s
/// without accepting a connection while a test run started), is not a misconfiguration.
pub const STARTUP_BUDGET: Duration = Duration::from_secs(60);

/// Runs `attempt` (a connect-and-declare that gives up after its own timeout) until it
/// succeeds or `budget` has passed since the first try, pausing with jittered backoff
/// between tries. For startup, where the queues must exist before the process serves.
pub async fn at_startup<T, F, Fut>(what: &str, budget: Duration, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let started = tokio::time::Instant::now();
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut retry = 0;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(error) if started.elapsed() < budget => {
                let pause = backoff.delay(retry);
                tracing::warn!(
                    error = format!("{error:#}"),
                    ?pause,
                    "{what}: RabbitMQ not ready yet; trying again"
                );
                tokio::time::sleep(pause).await;
                retry += 1;
            }
            Err(error) => {
                return Err(error.context(format!("{what}: RabbitMQ still not ready after {budget:?}")));
            }
        }
    }
}

/// `connect`, tried again with backoff for up to `STARTUP_BUDGET`: for anything that
/// needs the broker once before it can go on (a process starting, an admin command, a
/// test's own publisher), where a stalled or restarting broker is not a reason to fail.
pub async fn connect_patiently(
    what: &str,
    settings: &RabbitSettings,
) -> anyhow::Result<(Connection, Channel)> {
    at_startup(what, STARTUP_BUDGET, || connect(settings)).await
}

/// How a consumer that lost the broker waits before it opens a session again.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

/// Keeps a consumer attached to the broker until `shutdown`: runs `consume` on
/// `first` (the session opened at startup) or on one `open` makes, with `consuming`
/// true meanwhile (readiness), and when the session fails opens another after a
/// jittered backoff. `consume` returns `Ok` only when it stopped for shutdown.
pub async fn stay_attached<S, O, OF, C, CF>(
    what: &'static str,
    first: Option<S>,
    consuming: &AtomicBool,
    shutdown: &CancellationToken,
    mut open: O,
    mut consume: C,
) where
    O: FnMut() -> OF,
    OF: Future<Output = anyhow::Result<S>>,
    C: FnMut(S) -> CF,
    CF: Future<Output = anyhow::Result<()>>,
{
    let mut reconnect = Reconnect::new(what, RECONNECT_FIRST, RECONNECT_MAX);
    let mut first = first;
    loop {
        let opened = match first.take() {
            Some(session) => Ok(session),
            None => tokio::select! {
                () = shutdown.cancelled() => return,
                opened = open() => opened,
            },
        };
        let failure = match opened {
            Ok(session) => {
                reconnect.connected();
                consuming.store(true, Ordering::Relaxed);
                let consumed = consume(session).await;
                consuming.store(false, Ordering::Relaxed);
                match consumed {
                    Ok(()) => return,
                    Err(failure) => failure,
                }
            }
            Err(failure) => failure,
        };
        if !reconnect.wait(&failure, shutdown).await {
            return;
        }
    }
}

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

/// The trace a message continues: the context its `traceparent` header names (set
/// by the outbox relay from the transaction that wrote the event, kept on retries),
/// or an empty one, so its consumer's span starts a trace of its own.
pub fn trace_parent(headers: Option<&FieldTable>) -> opentelemetry::Context {
    match headers {
        Some(headers) => marquee_kit::trace::extract(&AmqpHeaders(headers)),
        None => opentelemetry::Context::new(),
    }
}

/// The span a consumer handles one delivery in: a child of the span whose write
/// published the event (the `traceparent` header the outbox relay set; a new trace when
/// there is none), so the consumer's work joins its booking's trace, retries included
/// (a retry keeps the delivery's headers). `event.type` comes from the message's type
/// property; `booking.id` is left for the handler to record once it has read the event.
pub fn consume_span(delivery: &lapin::message::Delivery, service: &'static str) -> tracing::Span {
    let properties = &delivery.properties;
    // Error level: the span must exist whatever the log level, or the trace breaks.
    let span = tracing::error_span!(
        parent: None,
        "event.consume",
        otel.kind = "consumer",
        service,
        messaging.system = "rabbitmq",
        event.id = properties.message_id().as_ref().map_or("", |id| id.as_str()),
        event.r#type = properties.kind().as_ref().map_or("", |kind| kind.as_str()),
        booking.id = tracing::field::Empty,
        trace.id = tracing::field::Empty,
        span.id = tracing::field::Empty,
    );
    marquee_kit::trace::follow(&span, trace_parent(properties.headers().as_ref()));
    span
}

/// `properties` with a `traceparent` header, when there is one to carry.
pub fn with_traceparent(properties: BasicProperties, traceparent: Option<&str>) -> BasicProperties {
    let Some(traceparent) = traceparent else { return properties };
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(marquee_kit::trace::TRACEPARENT.into(), AMQPValue::LongString(traceparent.into()));
    properties.with_headers(headers)
}

/// Reads trace context from AMQP message headers (string values only).
struct AmqpHeaders<'a>(&'a FieldTable);

impl opentelemetry::propagation::Extractor for AmqpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(value) => std::str::from_utf8(value.as_bytes()).ok(),
            AMQPValue::ShortString(value) => Some(value.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(ShortString::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn a_traceparent_header_names_the_trace_a_message_continues() {
        use opentelemetry::trace::TraceContextExt as _;
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let properties = with_traceparent(BasicProperties::default(), Some(sent));
        let parent = trace_parent(properties.headers().as_ref());
        let span = parent.span();
        assert_eq!(span.span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.span_context().span_id().to_string(), "00f067aa0ba902b7");
        assert!(span.span_context().is_remote());

        let untraced = with_traceparent(BasicProperties::default(), None);
        assert!(!trace_parent(untraced.headers().as_ref()).span().span_context().is_valid());
        assert!(!trace_parent(None).span().span_context().is_valid());
    }

    #[tokio::test(start_paused = true)]
    async fn startup_tries_again_until_the_broker_answers() {
        let tries = AtomicU32::new(0);
        let answer = at_startup("test", STARTUP_BUDGET, || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0..=2 => anyhow::bail!("RabbitMQ did not answer"),
                _ => Ok("connected"),
            }
        })
        .await;
        assert_eq!(answer.unwrap(), "connected");
        assert_eq!(tries.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn startup_gives_up_once_the_budget_is_spent() {
        let started = tokio::time::Instant::now();
        let tries = AtomicU32::new(0);
        let error = at_startup::<(), _, _>("test", Duration::from_secs(30), || async {
            tries.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(CONNECT_TIMEOUT).await;
            anyhow::bail!("RabbitMQ did not answer within {CONNECT_TIMEOUT:?}")
        })
        .await
        .unwrap_err();
        let waited = started.elapsed();
        assert!(format!("{error:#}").contains("still not ready after 30s"), "{error:#}");
        assert!((Duration::from_secs(30)..Duration::from_secs(50)).contains(&waited), "{waited:?}");
        assert!(tries.load(Ordering::SeqCst) >= 3);
    }
}
