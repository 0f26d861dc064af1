//! `disconnect` against the real MongoDB-wire server of the test configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use marquee_mongo::MongoSettings;
use mongodb::bson::doc;
use mongodb::error::ErrorKind;
use serde::Deserialize;

#[derive(Deserialize)]
struct Settings {
    mongo: MongoSettings,
}

impl marquee_kit::Config for Settings {
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_disconnected_client_is_shut_down_for_every_handle() {
    let settings: Settings = marquee_kit::testing::isolated_settings().await.expect("settings");
    let db = marquee_mongo::connect(&settings.mongo, "disconnect").await.expect("connect");
    // A handle made before, as a service's stores and batchers hold theirs.
    let kept = db.collection::<mongodb::bson::Document>("kept");
    kept.insert_one(doc! { "n": 1 }).await.expect("insert before");

    marquee_mongo::disconnect(&db).await;

    // Shut down, so no last handle's drop ends the sessions on a task of its own.
    let error = kept.insert_one(doc! { "n": 2 }).await.expect_err("the client is shut down");
    assert!(matches!(*error.kind, ErrorKind::Shutdown), "{error}");
    let error = db.run_command(doc! { "ping": 1 }).await.expect_err("the client is shut down");
    assert!(matches!(*error.kind, ErrorKind::Shutdown), "{error}");
}
