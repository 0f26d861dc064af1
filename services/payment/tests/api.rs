#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::StreamExt;
use lapin::options::BasicAckOptions;
use marquee_kit::shutdown::Shutdown;
use marquee_kit::{ApiError, ErrorCode};
use marquee_payment::Application;
use marquee_payment::Settings;
use marquee_proto::common::v1::Money;
use marquee_proto::events::v1::{Event, event::Payload};
use marquee_proto::payment::v1 as pb;
use marquee_proto::payment::v1::payment_service_client::PaymentServiceClient;
use mongodb::bson::{Document, doc};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

/// The bookings and users the tests charge for (the booking and user services' ids).
const BOOKING_1: &str = "0190f3c2-7a4e-7c3b-9f1e-000000000001";
const BOOKING_2: &str = "0190f3c2-7a4e-7c3b-9f1e-000000000002";
const BOOKING_NONE: &str = "0190f3c2-7a4e-7c3b-9f1e-0000000000ff";
const USER_1: &str = "0190f3c2-7a4e-7c3b-9f1e-100000000001";
const USER_2: &str = "0190f3c2-7a4e-7c3b-9f1e-100000000002";

struct TestApp {
    settings: Settings,
    client: PaymentServiceClient<Channel>,
    payments: mongodb::Collection<Document>,
    /// Where the service serves `GET /metrics`.
    metrics: std::net::SocketAddr,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    marquee_kit::telemetry::install_crypto_provider();
    let mut settings: marquee_payment::Settings =
        marquee_kit::testing::isolated_settings().await.expect("isolated settings");
    configure(&mut settings);
    let app = Application::build(settings.clone()).await.expect("build payment service");
    let (addr, metrics) = (app.addr(), app.metrics_addr());
    let shutdown = Shutdown::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = PaymentServiceClient::connect(format!("http://{addr}")).await.expect("connect");
    let db = marquee_mongo::connect(&settings.mongo, "payment").await.expect("mongo");
    TestApp { settings, client, payments: db.collection("payments"), metrics, shutdown }
}

fn charge(key: &str, method: &str, amount_minor: i64) -> pb::ChargeRequest {
    pb::ChargeRequest {
        booking_id: BOOKING_1.into(),
        amount: Some(Money { amount_minor, currency: "EUR".into() }),
        payment_method: method.into(),
        idempotency_key: key.into(),
        user_id: USER_1.into(),
    }
}

trait WithCurrency {
    fn with_currency(self, currency: &str) -> Self;
}

impl WithCurrency for pb::ChargeRequest {
    fn with_currency(mut self, currency: &str) -> Self {
        self.amount.as_mut().unwrap().currency = currency.into();
        self
    }
}

impl TestApp {
    async fn charge(&self, request: pb::ChargeRequest) -> Result<pb::Payment, ApiError> {
        self.client
            .clone()
            .charge(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn get_payment(&self, id: &str) -> Result<pb::Payment, ApiError> {
        let request = pb::GetPaymentRequest { id: id.into() };
        self.client
            .clone()
            .get_payment(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn refund(
        &self,
        payment_id: &str,
        amount_minor: i64,
        key: &str,
    ) -> Result<pb::RefundResponse, ApiError> {
        self.refund_request(pb::RefundRequest {
            payment_id: payment_id.into(),
            amount: Some(Money { amount_minor, currency: "EUR".into() }),
            reason: "customer request".into(),
            idempotency_key: key.into(),
        })
        .await
    }

    async fn refund_request(&self, request: pb::RefundRequest) -> Result<pb::RefundResponse, ApiError> {
        self.client
            .clone()
            .refund(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn list_payments(&self, booking_id: &str) -> Vec<pb::Payment> {
        let request = pb::ListPaymentsRequest { booking_id: booking_id.into() };
        self.client.clone().list_payments(request).await.unwrap().into_inner().payments
    }

    /// A server-named queue bound to this test's exchange, declared before anything
    /// is published so no event is missed.
    async fn subscribe(&self, routing_key: &str) -> (lapin::Connection, lapin::Consumer) {
        marquee_messaging::testing::subscribe_events(&self.settings.rabbitmq, routing_key).await.unwrap()
    }

    async fn stored_payments(&self) -> u64 {
        self.payments.count_documents(doc! {}).await.unwrap()
    }

    /// Returns once the first charge has claimed its key (its payment is stored), so a
    /// repeat sent next finds it in flight.
    async fn until_a_payment_is_stored(&self) {
        while self.stored_payments().await == 0 {
            tokio::task::yield_now().await;
        }
    }

    async fn history(&self, id: &str) -> Vec<String> {
        let stored = self.payments.find_one(doc! { "_id": id }).await.unwrap().expect("payment stored");
        let history = stored.get_array("history").unwrap();
        history
            .iter()
            .map(|entry| {
                let entry = entry.as_document().unwrap();
                entry.get_datetime("at").expect("transition has a timestamp");
                entry.get_str("status").unwrap().to_owned()
            })
            .collect()
    }
}

#[tokio::test]
async fn a_good_card_is_charged() {
    let app = spawn_app().await;

    let payment = app.charge(charge("key-ok", "pm_card_ok", 2500)).await.unwrap();
    assert_eq!(payment.status(), pb::PaymentStatus::Succeeded);
    assert_eq!(payment.booking_id, BOOKING_1);
    assert_eq!(payment.amount, Some(Money { amount_minor: 2500, currency: "EUR".into() }));
    assert_eq!(payment.payment_method, "pm_card_ok");
    assert_eq!(payment.decline_reason, "");
    assert!(payment.created_at.is_some());
    assert_eq!(app.history(&payment.id).await, ["PROCESSING", "SUCCEEDED"]);

    assert_eq!(app.get_payment(&payment.id).await.unwrap(), payment);
}

#[tokio::test]
async fn a_declined_card_is_a_normal_reply_with_a_reason() {
    let app = spawn_app().await;

    let payment = app.charge(charge("key-declined", "pm_card_declined", 2500)).await.unwrap();
    assert_eq!(payment.status(), pb::PaymentStatus::Declined);
    assert_eq!(payment.decline_reason, "card_declined");
    assert_eq!(app.history(&payment.id).await, ["PROCESSING", "DECLINED"]);
}

#[tokio::test]
async fn a_retried_charge_returns_the_first_payment_and_charges_once() {
    let app = spawn_app().await;

    let first = app.charge(charge("key-retry", "pm_card_ok", 2500)).await.unwrap();
    let retried = app.charge(charge("key-retry", "pm_card_ok", 2500)).await.unwrap();
    assert_eq!(retried, first);
    assert_eq!(app.stored_payments().await, 1);

    let declined = app.charge(charge("key-retry-declined", "pm_card_declined", 2500)).await.unwrap();
    let declined_again = app.charge(charge("key-retry-declined", "pm_card_declined", 2500)).await.unwrap();
    assert_eq!(declined_again, declined);
    assert_eq!(app.stored_payments().await, 2);
}

#[tokio::test]
async fn a_key_reused_with_other_parameters_is_a_conflict() {
    let app = spawn_app().await;
    let first = app.charge(charge("key-reused", "pm_card_ok", 2500)).await.unwrap();

    let mut other_booking = charge("key-reused", "pm_card_ok", 2500);
    other_booking.booking_id = BOOKING_2.into();
    let mut other_user = charge("key-reused", "pm_card_ok", 2500);
    other_user.user_id = USER_2.into();
    let mut other_currency = charge("key-reused", "pm_card_ok", 2500);
    other_currency.amount.as_mut().unwrap().currency = "USD".into();
    for request in [
        charge("key-reused", "pm_card_ok", 9900),
        charge("key-reused", "pm_card_declined", 2500),
        other_booking,
        other_user,
        other_currency,
    ] {
        let err = app.charge(request).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict);
        assert_eq!(err.grpc_code, Some(Code::FailedPrecondition));
        assert_eq!(err.message, "idempotency key reused with different parameters");
    }
    assert_eq!(app.stored_payments().await, 1);
    assert_eq!(app.get_payment(&first.id).await.unwrap(), first);
}

#[tokio::test]
async fn concurrent_charges_with_one_key_charge_once_and_all_get_the_same_payment() {
    let app = spawn_app().await;

    // A caller told ABORTED (the charge is still in flight) retries with the same key.
    let calls = (0..32).map(|_| async {
        loop {
            match app.charge(charge("key-race", "pm_card_ok", 2500)).await {
                Ok(payment) => return payment,
                Err(err) => {
                    assert_eq!(
                        (err.code, err.grpc_code),
                        (ErrorCode::Conflict, Some(Code::Aborted)),
                        "{err}"
                    );
                    assert_eq!(err.message, "charge in progress, retry");
                }
            }
        }
    });
    let payments = futures::future::join_all(calls).await;

    assert_eq!(payments.len(), 32);
    assert_eq!(payments[0].status(), pb::PaymentStatus::Succeeded);
    assert!(payments.iter().all(|p| *p == payments[0]), "callers got different payments");
    assert_eq!(app.stored_payments().await, 1);
    assert_eq!(app.history(&payments[0].id).await, ["PROCESSING", "SUCCEEDED"]);
    assert_eq!(payments[0].attempts.len(), 1, "the card was sent to the processor once");
}

#[tokio::test]
async fn invalid_charges_are_refused_and_store_nothing() {
    let app = spawn_app().await;

    let mut no_amount = charge("key-1", "pm_card_ok", 2500);
    no_amount.amount = None;
    let mut lowercase_currency = charge("key-2", "pm_card_ok", 2500);
    lowercase_currency.amount.as_mut().unwrap().currency = "eur".into();
    let mut long_currency = charge("key-3", "pm_card_ok", 2500);
    long_currency.amount.as_mut().unwrap().currency = "EURO".into();
    let mut no_booking = charge("key-4", "pm_card_ok", 2500);
    no_booking.booking_id = String::new();
    let cases = [
        charge("key-5", "pm_card_ok", 0),
        charge("key-6", "pm_card_ok", -100),
        charge("key-7", "pm_card_stolen", 2500),
        charge("key-8", "pm_card_ok", 2500).with_currency("XYZ"),
        charge("", "pm_card_ok", 2500),
        no_amount,
        lowercase_currency,
        long_currency,
        no_booking,
    ];
    for request in cases {
        let err = app.charge(request.clone()).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::BadUserInput, "{request:?}: {err}");
    }
    assert_eq!(app.stored_payments().await, 0);
}

#[tokio::test]
async fn metrics_count_calls_and_show_the_outbox_drained_by_the_relay() {
    let app = spawn_app().await;
    let payment = app.charge(charge("key-metrics", "pm_card_ok", 2500)).await.unwrap();
    let missing = app.get_payment(&uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);

    let text = marquee_kit::testing::scrape(app.metrics).await.unwrap();
    let calls = |rpc: &str, code: &str| {
        let series = format!(
            "grpc_server_requests_total{{service=\"marquee.payment.v1.PaymentService\",rpc=\"{rpc}\",code=\"{code}\"}}"
        );
        marquee_kit::testing::sample(&text, &series)
    };
    assert_eq!(calls("Charge", "OK"), Some(1.0), "{text}");
    assert_eq!(calls("GetPayment", "NOT_FOUND"), Some(1.0), "{text}");

    // payment.succeeded went through the outbox: the relay sends it and the backlog
    // the gauges read empties, as the document says.
    let unsent = "outbox_unsent_documents{publisher=\"payment\"}";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = marquee_kit::testing::scrape(app.metrics).await.unwrap();
        if marquee_kit::testing::sample(&text, unsent) == Some(0.0) {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "the outbox never drained: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stored = app.payments.find_one(doc! { "_id": &payment.id }).await.unwrap().unwrap();
    assert_eq!(stored.get_i32("unsent_events").unwrap(), 0);
    let age = "outbox_oldest_unsent_age_seconds{publisher=\"payment\"}";
    assert_eq!(marquee_kit::testing::sample(&text, age), Some(0.0), "{text}");
}

#[tokio::test]
async fn get_payment_rejects_unknown_and_malformed_ids() {
    let app = spawn_app().await;

    let missing = app.get_payment(&uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);
    let malformed = app.get_payment("not-a-uuid").await.unwrap_err();
    assert_eq!(malformed.code, ErrorCode::BadUserInput);
}

/// The next event on `consumer`, within a deadline.
async fn next_event(consumer: &mut lapin::Consumer) -> Event {
    let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("no event before the deadline")
        .expect("consumer ended")
        .unwrap();
    delivery.acker.ack(BasicAckOptions::default()).await.unwrap();
    let event = Event::decode(delivery.data.as_slice()).unwrap();
    assert_eq!(delivery.routing_key.as_str(), event.r#type);
    assert_eq!(delivery.properties.message_id().as_ref().map(|m| m.as_str()), Some(event.event_id.as_str()));
    event
}

#[tokio::test]
async fn insufficient_funds_is_a_decline_with_its_reason() {
    let app = spawn_app().await;

    let payment = app.charge(charge("key-poor", "pm_card_insufficient_funds", 2500)).await.unwrap();
    assert_eq!(payment.status(), pb::PaymentStatus::Declined);
    assert_eq!(payment.decline_reason, "insufficient_funds");
    assert_eq!(payment.attempts.len(), 1);
    assert_eq!(
        (payment.attempts[0].outcome.as_str(), payment.attempts[0].reason.as_str()),
        ("declined", "insufficient_funds")
    );
}

#[tokio::test]
async fn a_processor_error_is_unavailable_recorded_and_re_attempted_on_retry() {
    let app = spawn_app().await;

    let err = app.charge(charge("key-flaky", "pm_card_error", 2500)).await.unwrap_err();
    assert_eq!(err.grpc_code, Some(Code::Unavailable), "{err}");
    assert_eq!(err.metadata.get("retryable").map(String::as_str), Some("true"));
    let err = app.charge(charge("key-flaky", "pm_card_error", 2500)).await.unwrap_err();
    assert_eq!(err.grpc_code, Some(Code::Unavailable), "{err}");

    // One payment, two recorded attempts, nothing charged.
    assert_eq!(app.stored_payments().await, 1);
    let payment = app.list_payments(BOOKING_1).await.remove(0);
    assert_eq!(payment.status(), pb::PaymentStatus::Failed);
    assert_eq!(payment.attempts.len(), 2);
    for attempt in &payment.attempts {
        assert_eq!((attempt.outcome.as_str(), attempt.reason.as_str()), ("error", "processor_error"));
        assert!(attempt.started_at.unwrap().seconds <= attempt.finished_at.unwrap().seconds);
    }
    assert_eq!(app.history(&payment.id).await, ["PROCESSING", "FAILED", "PROCESSING", "FAILED"]);
    assert_eq!(
        payment.history.iter().map(|c| c.status()).collect::<Vec<_>>(),
        [
            pb::PaymentStatus::Processing,
            pb::PaymentStatus::Failed,
            pb::PaymentStatus::Processing,
            pb::PaymentStatus::Failed
        ]
    );
    assert!(payment.history.iter().all(|c| c.at.is_some()));

    // The key still belongs to this charge: other parameters are refused.
    let other = app.charge(charge("key-flaky", "pm_card_ok", 2500)).await.unwrap_err();
    assert_eq!(other.grpc_code, Some(Code::FailedPrecondition));
}

#[tokio::test]
async fn a_slow_charge_makes_repeats_wait_for_it_or_abort_and_never_charges_twice() {
    // Repeats give up at once: they must see ABORTED while the slow charge runs.
    let app = spawn_app_with(|s| {
        s.payment.slow_card_delay_ms = 800;
        s.payment.charge_wait_ms = 0;
    })
    .await;

    let started = tokio::time::Instant::now();
    let (first, repeat) = tokio::join!(app.charge(charge("key-slow", "pm_card_slow", 2500)), async {
        // Let the first call claim the key.
        app.until_a_payment_is_stored().await;
        app.charge(charge("key-slow", "pm_card_slow", 2500)).await
    });
    let first = first.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(800), "the slow card answered early");
    assert_eq!(first.status(), pb::PaymentStatus::Succeeded);
    let repeat = repeat.unwrap_err();
    assert_eq!((repeat.code, repeat.grpc_code), (ErrorCode::Conflict, Some(Code::Aborted)));

    assert_eq!(app.charge(charge("key-slow", "pm_card_slow", 2500)).await.unwrap(), first);
    assert_eq!(first.attempts.len(), 1);
}

#[tokio::test]
async fn a_slow_attempt_keeps_its_key_past_its_lease_by_renewing_it() {
    // The attempt outlasts its lease five times over: only the renewals keep a repeat
    // from presuming it dead and running a second attempt.
    let app = spawn_app_with(|s| {
        s.payment.slow_card_delay_ms = 1500;
        s.payment.charge_lease_ms = 300;
        s.payment.charge_wait_ms = 0;
    })
    .await;

    let (first, repeat) = tokio::join!(app.charge(charge("key-renewed", "pm_card_slow", 2500)), async {
        app.until_a_payment_is_stored().await;
        // Well past the lease the claim took (300 ms), well before the card answers.
        tokio::time::sleep(Duration::from_millis(900)).await;
        app.charge(charge("key-renewed", "pm_card_slow", 2500)).await
    });
    let first = first.unwrap();
    assert_eq!(first.status(), pb::PaymentStatus::Succeeded);
    let repeat = repeat.unwrap_err();
    assert_eq!((repeat.code, repeat.grpc_code), (ErrorCode::Conflict, Some(Code::Aborted)), "{repeat:?}");
    let stored = app.charge(charge("key-renewed", "pm_card_slow", 2500)).await.unwrap();
    assert_eq!(stored, first);
    assert_eq!(stored.attempts.len(), 1, "the card went to the processor once");
}

#[tokio::test]
async fn a_repeat_waits_briefly_for_the_charge_in_flight() {
    let app = spawn_app_with(|s| {
        s.payment.slow_card_delay_ms = 300;
        s.payment.charge_wait_ms = 5000;
    })
    .await;

    let (first, repeat) = tokio::join!(app.charge(charge("key-wait", "pm_card_slow", 2500)), async {
        app.until_a_payment_is_stored().await;
        app.charge(charge("key-wait", "pm_card_slow", 2500)).await
    });
    assert_eq!(repeat.unwrap(), first.unwrap());
    assert_eq!(app.stored_payments().await, 1);
}

#[tokio::test]
async fn refunds_are_partial_or_full_idempotent_and_never_exceed_the_charge() {
    let app = spawn_app().await;
    let payment = app.charge(charge("key-refund", "pm_card_ok", 2500)).await.unwrap();

    let first = app.refund(&payment.id, 1000, "refund-1").await.unwrap();
    let refund = first.refund.clone().unwrap();
    assert_eq!(refund.amount, Some(Money { amount_minor: 1000, currency: "EUR".into() }));
    assert_eq!(refund.reason, "customer request");
    let after_first = first.payment.clone().unwrap();
    assert_eq!(after_first.status(), pb::PaymentStatus::PartiallyRefunded);
    assert_eq!(after_first.refunded.as_ref().unwrap().amount_minor, 1000);

    // Same key, same request: the first refund, nothing added.
    assert_eq!(app.refund(&payment.id, 1000, "refund-1").await.unwrap().refund, first.refund);
    // Same key, other amount: refused.
    let reused = app.refund(&payment.id, 500, "refund-1").await.unwrap_err();
    assert_eq!((reused.code, reused.grpc_code), (ErrorCode::Conflict, Some(Code::FailedPrecondition)));

    // More than what is left: refused, with what is left.
    let over = app.refund(&payment.id, 1501, "refund-2").await.unwrap_err();
    assert_eq!(over.grpc_code, Some(Code::FailedPrecondition), "{over}");
    assert_eq!(over.metadata.get("refundable_minor").map(String::as_str), Some("1500"));

    let rest = app.refund(&payment.id, 1500, "refund-3").await.unwrap();
    assert_eq!(rest.payment.as_ref().unwrap().status(), pb::PaymentStatus::Refunded);
    let none_left = app.refund(&payment.id, 1, "refund-4").await.unwrap_err();
    assert_eq!(none_left.grpc_code, Some(Code::FailedPrecondition));

    let stored = app.get_payment(&payment.id).await.unwrap();
    assert_eq!(stored.refunded.as_ref().unwrap().amount_minor, 2500);
    assert_eq!(
        stored.refunds.iter().map(|r| r.amount.as_ref().unwrap().amount_minor).collect::<Vec<_>>(),
        [1000, 1500]
    );
    assert!(stored.refunds.iter().all(|r| r.created_at.is_some() && !r.id.is_empty()));
    assert_eq!(app.history(&payment.id).await, ["PROCESSING", "SUCCEEDED", "PARTIALLY_REFUNDED", "REFUNDED"]);
}

#[tokio::test]
async fn only_captured_money_in_its_currency_can_be_refunded() {
    let app = spawn_app().await;
    let declined = app.charge(charge("key-declined", "pm_card_declined", 2500)).await.unwrap();
    let err = app.refund(&declined.id, 100, "r").await.unwrap_err();
    assert_eq!((err.code, err.grpc_code), (ErrorCode::Conflict, Some(Code::FailedPrecondition)));

    let paid = app.charge(charge("key-paid", "pm_card_ok", 2500)).await.unwrap();
    let mut in_dollars = pb::RefundRequest {
        payment_id: paid.id.clone(),
        amount: Some(Money { amount_minor: 100, currency: "USD".into() }),
        reason: "wrong currency".into(),
        idempotency_key: "r-usd".into(),
    };
    assert_eq!(app.refund_request(in_dollars.clone()).await.unwrap_err().code, ErrorCode::BadUserInput);
    in_dollars.amount = Some(Money { amount_minor: 0, currency: "EUR".into() });
    assert_eq!(app.refund_request(in_dollars.clone()).await.unwrap_err().code, ErrorCode::BadUserInput);
    in_dollars.amount = Some(Money { amount_minor: 100, currency: "EUR".into() });
    in_dollars.reason = " ".into();
    assert_eq!(app.refund_request(in_dollars).await.unwrap_err().code, ErrorCode::BadUserInput);
    let missing = app.refund(&uuid::Uuid::new_v4().to_string(), 100, "r").await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn concurrent_partial_refunds_never_exceed_the_captured_amount() {
    let app = spawn_app().await;
    let payment = app.charge(charge("key-many-refunds", "pm_card_ok", 1000)).await.unwrap();

    // 16 refunds of 100 against 1000 captured: exactly 10 can land.
    let refunds = (0..16).map(|n| {
        let key = format!("refund-{n}");
        let id = payment.id.clone();
        let app = &app;
        async move { app.refund(&id, 100, &key).await }
    });
    let results = futures::future::join_all(refunds).await;
    let mut landed = 0;
    for result in results {
        match result {
            Ok(_) => landed += 1,
            Err(err) => assert_eq!(err.grpc_code, Some(Code::FailedPrecondition), "{err}"),
        }
    }
    assert_eq!(landed, 10);
    let stored = app.get_payment(&payment.id).await.unwrap();
    assert_eq!(stored.refunded.as_ref().unwrap().amount_minor, 1000);
    assert_eq!(stored.refunds.len(), 10);
    assert_eq!(stored.status(), pb::PaymentStatus::Refunded);

    // Two concurrent refunds that each fit alone but not together: one wins.
    let other = app.charge(charge("key-two-refunds", "pm_card_ok", 1000)).await.unwrap();
    let (a, b) = tokio::join!(app.refund(&other.id, 600, "a"), app.refund(&other.id, 600, "b"));
    assert!(a.is_ok() != b.is_ok(), "{a:?} {b:?}");
    assert_eq!(app.get_payment(&other.id).await.unwrap().refunded.unwrap().amount_minor, 600);
}

#[tokio::test]
async fn payments_are_listed_by_booking() {
    let app = spawn_app().await;
    let declined = app.charge(charge("key-a", "pm_card_declined", 2500)).await.unwrap();
    let paid = app.charge(charge("key-b", "pm_card_ok", 2500)).await.unwrap();
    let mut elsewhere = charge("key-c", "pm_card_ok", 2500);
    elsewhere.booking_id = BOOKING_2.into();
    app.charge(elsewhere).await.unwrap();

    let listed = app.list_payments(BOOKING_1).await;
    assert_eq!(listed, [declined, paid]);
    assert!(app.list_payments(BOOKING_NONE).await.is_empty());
}

#[tokio::test]
async fn successes_and_refunds_are_published_as_events() {
    let app = spawn_app().await;
    let (_connection, mut events) = app.subscribe("payment.#").await;

    let payment = app.charge(charge("key-events", "pm_card_ok", 2500)).await.unwrap();
    app.charge(charge("key-events-declined", "pm_card_declined", 2500)).await.unwrap();
    let refund = app.refund(&payment.id, 700, "refund-events").await.unwrap().refund.unwrap();

    let succeeded = next_event(&mut events).await;
    assert_eq!((succeeded.r#type.as_str(), succeeded.booking_id.as_str()), ("payment.succeeded", BOOKING_1));
    let Some(Payload::PaymentSucceeded(paid)) = succeeded.payload else { panic!("{succeeded:?}") };
    assert_eq!(paid.payment_id, payment.id);
    assert_eq!(succeeded.user_id, USER_1);
    assert_eq!(paid.amount, payment.amount);

    // A decline emits nothing, so the refund is next.
    let refunded = next_event(&mut events).await;
    assert_eq!(refunded.r#type, "payment.refunded");
    let Some(Payload::PaymentRefunded(body)) = refunded.payload else { panic!("{refunded:?}") };
    assert_eq!(
        (body.payment_id, body.refund_id, body.reason),
        (payment.id.clone(), refund.id, "customer request".to_owned())
    );
    assert_eq!(body.amount.unwrap().amount_minor, 700);
    assert_eq!(refunded.user_id, USER_1);

    // Marked sent only after the broker confirmed them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stored = app.payments.find_one(doc! { "_id": &payment.id }).await.unwrap().unwrap();
        if stored.get_i32("unsent_events").unwrap() == 0 {
            let outbox = stored.get_array("outbox").unwrap();
            assert_eq!(outbox.len(), 2);
            assert!(outbox.iter().all(|e| e.as_document().unwrap().get_datetime("sent_at").is_ok()));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "outbox not drained: {stored:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_attempt_abandoned_past_its_lease_is_taken_over_by_a_retry() {
    let app = spawn_app_with(|s| s.payment.charge_wait_ms = 0).await;
    app.charge(charge("key-crash", "pm_card_error", 2500)).await.unwrap_err();

    // As if a process died mid-attempt: PROCESSING, leased to no one alive.
    let lease_until = |offset: chrono::Duration| {
        mongodb::bson::DateTime::from_millis((chrono::Utc::now() + offset).timestamp_millis())
    };
    let abandon =
        |until| doc! { "$set": { "status": "PROCESSING", "lease_id": "dead", "lease_until": until } };
    let key = doc! { "idempotency_key": "key-crash" };
    app.payments.update_one(key.clone(), abandon(lease_until(chrono::Duration::hours(1)))).await.unwrap();

    // While the lease may still be honoured, a retry is told to come back.
    let busy = app.charge(charge("key-crash", "pm_card_error", 2500)).await.unwrap_err();
    assert_eq!(busy.grpc_code, Some(Code::Aborted), "{busy}");

    // Once it has lapsed, a retry runs a new attempt.
    app.payments.update_one(key, abandon(lease_until(chrono::Duration::seconds(-1)))).await.unwrap();
    let retried = app.charge(charge("key-crash", "pm_card_error", 2500)).await.unwrap_err();
    assert_eq!(retried.grpc_code, Some(Code::Unavailable), "{retried}");
    let payment = app.list_payments(BOOKING_1).await.remove(0);
    assert_eq!(payment.attempts.len(), 2);
    assert_eq!(payment.status(), pb::PaymentStatus::Failed);
}
