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
/// deliveries above it are acked one by one: a quorum queue holds back a client's
/// settlements beyond a few dozen in flight, and those still held back when the
/// connection closes are lost (the broker redelivers them, which is harmless for an
/// idempotent consumer but not what this test checks).
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
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                n.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap();
        assert!(confirm.await.unwrap().is_ack());
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
    // A round trip on the channel: the broker has taken every ack sent before its answer.
    channel.basic_qos(MESSAGES as u16, BasicQosOptions::default()).await.unwrap();
    connection.close(200, "OK".into()).await.unwrap();

    // Whatever was not settled is back in the queue: only the unfinished one.
    let (connection, channel) = open(&settings.rabbitmq, &queue).await;
    let mut again = consume(&channel, &queue, 10).await;
    let mut back = Vec::new();
    while let Ok(Some(delivery)) = tokio::time::timeout(Duration::from_secs(2), again.next()).await {
        back.push(String::from_utf8(delivery.unwrap().data).unwrap());
    }
    assert_eq!(back, vec![UNFINISHED.to_string()], "redelivered after the consumer closed");
    connection.close(200, "OK".into()).await.unwrap();
}
