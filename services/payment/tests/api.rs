#![allow(clippy::unwrap_used, clippy::expect_used)]

use marquee_common::shutdown::Shutdown;
use marquee_common::{ApiError, ErrorCode};
use marquee_payment::Application;
use marquee_proto::common::v1::Money;
use marquee_proto::payment::v1 as pb;
use marquee_proto::payment::v1::payment_service_client::PaymentServiceClient;
use mongodb::bson::{Document, doc};
use tonic::transport::Channel;

struct TestApp {
    client: PaymentServiceClient<Channel>,
    payments: mongodb::Collection<Document>,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_app() -> TestApp {
    let settings = marquee_common::testing::isolated_settings().await.expect("isolated settings");
    let app = Application::build(settings.clone()).await.expect("build payment service");
    let addr = app.addr();
    let shutdown = Shutdown::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = PaymentServiceClient::connect(format!("http://{addr}")).await.expect("connect");
    let db = marquee_common::mongo::connect(&settings.mongo, "payment").await.expect("mongo");
    TestApp { client, payments: db.collection("payments"), shutdown }
}

fn charge(key: &str, method: &str, amount_minor: i64) -> pb::ChargeRequest {
    pb::ChargeRequest {
        booking_id: "booking-1".into(),
        amount: Some(Money { amount_minor, currency: "EUR".into() }),
        payment_method: method.into(),
        idempotency_key: key.into(),
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

    async fn stored_payments(&self) -> u64 {
        self.payments.count_documents(doc! {}).await.unwrap()
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
    assert_eq!(payment.booking_id, "booking-1");
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
    other_booking.booking_id = "booking-2".into();
    let mut other_currency = charge("key-reused", "pm_card_ok", 2500);
    other_currency.amount.as_mut().unwrap().currency = "USD".into();
    for request in [
        charge("key-reused", "pm_card_ok", 9900),
        charge("key-reused", "pm_card_declined", 2500),
        other_booking,
        other_currency,
    ] {
        let err = app.charge(request).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Conflict);
        assert_eq!(err.message, "idempotency key reused with different parameters");
    }
    assert_eq!(app.stored_payments().await, 1);
    assert_eq!(app.get_payment(&first.id).await.unwrap(), first);
}

#[tokio::test]
async fn concurrent_charges_with_one_key_charge_once() {
    let app = spawn_app().await;

    let calls = (0..20).map(|_| app.charge(charge("key-race", "pm_card_ok", 2500)));
    let results = futures::future::join_all(calls).await;

    let mut ids = Vec::new();
    for result in results {
        match result {
            Ok(payment) => {
                assert_eq!(payment.status(), pb::PaymentStatus::Succeeded);
                ids.push(payment.id);
            }
            Err(err) => {
                assert_eq!(err.code, ErrorCode::Conflict, "{err}");
                assert_eq!(err.message, "charge in progress, retry");
            }
        }
    }
    assert!(!ids.is_empty(), "at least the winning call succeeds");
    ids.dedup();
    assert_eq!(ids.len(), 1, "every successful call returned the same payment: {ids:?}");
    assert_eq!(app.stored_payments().await, 1);
    assert_eq!(app.history(&ids[0]).await, ["PROCESSING", "SUCCEEDED"]);

    // Once the winner has finished, a retry gets its result.
    assert_eq!(app.charge(charge("key-race", "pm_card_ok", 2500)).await.unwrap().id, ids[0]);
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
async fn get_payment_rejects_unknown_and_malformed_ids() {
    let app = spawn_app().await;

    let missing = app.get_payment(&uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);
    let malformed = app.get_payment("not-a-uuid").await.unwrap_err();
    assert_eq!(malformed.code, ErrorCode::BadUserInput);
}
