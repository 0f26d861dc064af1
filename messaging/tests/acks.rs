//! Batched acknowledgements against the real RabbitMQ: every delivery reported
//! finished is settled, out of order and past a gap, and a delivery never reported
//! finished is not (a `multiple` ack must not cover it): it comes back after the
//! consumer's connection closes, alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use marquee_kit::Config;
use marquee_messaging::RabbitSettings;
use marquee_messaging::acks::Acks;

#[derive(serde::Deserialize)]
struct Settings {
    rabbitmq: RabbitSettings,
}

impl Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

const MESSAGES: usize = 300;
/// Never reported: the consumer "crashed" while handling it. Near the end, so that few
/// deliveries above it are acked one by one.
const UNFINISHED: usize = 290;
/// Rejected by the consumer itself (reported `settled`).
const REJECTED: usize = 150;

async fn open(rabbit: &RabbitSettings, queue: &str) -> (Connection, Channel) {
    let (connection, channel) = marquee_messaging::rabbit::connect(rabbit).await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    arguments.insert("x-expires".into(), AMQPValue::LongLongInt(60_000));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), durable, arguments).await.unwrap();
    (connection, channel)
}

async fn consume(channel: &Channel, queue: &str, prefetch: u16) -> lapin::Consumer {
    channel.basic_qos(prefetch, BasicQosOptions::default()).await.unwrap();
    channel
        .basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn finished_deliveries_are_settled_and_an_unfinished_one_comes_back_alone() {
    let settings: Settings = marquee_kit::config::for_tests().unwrap();
    let queue = format!("marquee.test.acks.{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);

    let (publisher, channel) = open(&settings.rabbitmq, &queue).await;
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    for n in 0..MESSAGES {
        publish(&channel, &queue, &n.to_string()).await;
    }
    publisher.close(200, "OK".into()).await.unwrap();

    let (connection, channel) = open(&settings.rabbitmq, &queue).await;
    let mut deliveries = consume(&channel, &queue, MESSAGES as u16).await;
    let acks = Acks::spawn(channel.clone());
    let mut received = Vec::new();
    while received.len() < MESSAGES {
        let delivery = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
            .await
            .expect("the broker stopped delivering")
            .unwrap()
            .unwrap();
        received.push(delivery);
    }
    // Finished in an order far from the delivery order, concurrently.
    fastrand::shuffle(&mut received);
    let mut handlers = tokio::task::JoinSet::new();
    for delivery in received {
        let n: usize = std::str::from_utf8(&delivery.data).unwrap().parse().unwrap();
        let acks = acks.clone();
        handlers.spawn(async move {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(0..20))).await;
            match n {
                UNFINISHED => {}
                REJECTED => {
                    delivery.acker.reject(BasicRejectOptions { requeue: false }).await.unwrap();
                    acks.settled(delivery.delivery_tag);
                }
                _ => acks.ack(delivery.delivery_tag),
            }
        });
    }
    while let Some(handled) = handlers.join_next().await {
        handled.unwrap();
    }
    acks.flush().await;
    // A quorum queue applies settlements asynchronously, and those still on their way
    // when the connection closes are lost (the broker redelivers them). It delivers
    // beyond the prefetch window only what settlements made room for: once every filler
    // has arrived, it has applied every settlement sent.
    let (publisher, filling) = open(&settings.rabbitmq, &queue).await;
    filling.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let fillers = MESSAGES - 1;
    for n in 0..fillers {
        publish(&filling, &queue, &format!("{FILLER}{n}")).await;
    }
    publisher.close(200, "OK".into()).await.unwrap();
    for _ in 0..fillers {
        let filler = tokio::time::timeout(Duration::from_secs(10), deliveries.next())
            .await
            .expect("the broker stopped delivering: a settlement never reached the queue")
            .unwrap()
            .unwrap();
        assert!(filler.data.starts_with(FILLER.as_bytes()), "delivered twice while consuming");
    }
    connection.close(200, "OK".into()).await.unwrap();

    // Whatever was not settled is back in the queue: the fillers and the unfinished one.
    let (connection, channel) = open(&settings.rabbitmq, &queue).await;
    let mut again = consume(&channel, &queue, (MESSAGES * 2) as u16).await;
    let mut back = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(2), again.next()).await {
        back.push(String::from_utf8(delivery.unwrap().data).unwrap());
    }
    let (fillers_back, back): (Vec<String>, Vec<String>) =
        back.into_iter().partition(|m| m.starts_with(FILLER));
    assert_eq!(fillers_back.len(), fillers);
    assert_eq!(back, vec![UNFINISHED.to_string()], "redelivered after the consumer closed");
    connection.close(200, "OK".into()).await.unwrap();
}

/// Messages published after the test's to learn when the queue applied its settlements.
const FILLER: &str = "filler-";

async fn publish(channel: &Channel, queue: &str, body: &str) {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap();
    assert!(confirm.await.unwrap().is_ack());
}
