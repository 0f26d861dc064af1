//! MongoDB helpers shared by the services that store documents.

use anyhow::Context;
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::{Client, Database};

use crate::config::MongoSettings;

/// Connects and returns the service's own database (`<prefix>_<service>`).
pub async fn connect(settings: &MongoSettings, service: &str) -> anyhow::Result<Database> {
    let client =
        Client::with_uri_str(settings.url.expose()).await.context("invalid MongoDB connection string")?;
    let db = client.database(&settings.database_name(service));
    db.run_command(mongodb::bson::doc! { "ping": 1 }).await.context("MongoDB did not answer ping")?;
    Ok(db)
}

/// True for a unique-index violation. Matched by code 11000, never by message text.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::InsertMany(e) => {
            e.write_errors.as_ref().is_some_and(|errors| errors.iter().any(|e| e.code == 11000))
        }
        ErrorKind::Command(e) => e.code == 11000,
        _ => false,
    }
}
