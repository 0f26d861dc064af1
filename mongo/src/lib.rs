//! MongoDB for the services that store documents (user, booking, payment,
//! notification, ticket, and the outbox in `marquee-messaging`): the `[mongo]`
//! section, connecting to a service's own database, the readiness probe, and telling
//! an unreachable server (UNAVAILABLE, worth retrying) from any other failure.

use std::collections::HashMap;

use anyhow::Context;
use futures::TryStreamExt;
use marquee_kit::Secret;
use marquee_kit::readiness::{Probe, Scope};
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, InsertManyError, WriteFailure};
use mongodb::results::InsertManyResult;
use mongodb::{Client, Collection, Database};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// `[mongo]`.
#[derive(Clone, Debug, Deserialize)]
pub struct MongoSettings {
    pub url: Secret<String>,
    pub database_prefix: String,
}

impl MongoSettings {
    /// The database a service owns, e.g. `marquee_booking`.
    pub fn database_name(&self, service: &str) -> String {
        format!("{}_{service}", self.database_prefix)
    }
}

/// Connects and returns the service's own database (`<prefix>_<service>`).
pub async fn connect(settings: &MongoSettings, service: &str) -> anyhow::Result<Database> {
    let client =
        Client::with_uri_str(settings.url.expose()).await.context("invalid MongoDB connection string")?;
    let db = client.database(&settings.database_name(service));
    db.run_command(mongodb::bson::doc! { "ping": 1 }).await.context("MongoDB did not answer ping")?;
    Ok(db)
}

/// Ends the client's server sessions and closes its connections; call once the
/// process no longer uses `db` (serving has stopped). Left to the last `Client`'s
/// `Drop`, the driver ends the sessions on a task of its own; while the runtime shuts
/// down that task can outlive the connection pool it asks and panic (mongodb 3.9.1,
/// `cmap/connection_requester.rs`). A client shut down here never starts that task.
/// Does not wait for cursors still open elsewhere: the server times them out.
pub async fn disconnect(db: &Database) {
    db.client().clone().shutdown().immediate(true).await;
}

/// True for a unique-index violation. Matched by code 11000, never by message text.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => {
            e.write_errors.as_ref().is_some_and(|errors| errors.iter().any(|e| e.code == DUPLICATE_KEY))
        }
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// What an unordered `insert_many` did with one of its documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// A unique index already held its key.
    Duplicate,
}

/// One outcome per document of an unordered `insert_many` of `count` documents, in
/// order: inserted, refused as a duplicate, or the error that stopped it. A failure
/// not tied to documents (the server out of reach, a write concern error) is every
/// document's.
pub fn insert_outcomes(
    result: Result<InsertManyResult, mongodb::error::Error>,
    count: usize,
) -> Vec<Result<Inserted, mongodb::error::Error>> {
    let error = match result {
        Ok(_) => return vec![Ok(Inserted::New); count],
        Err(error) => error,
    };
    let ErrorKind::InsertMany(InsertManyError {
        write_errors: Some(failed), write_concern_error: None, ..
    }) = error.kind.as_ref()
    else {
        return vec![Err(error); count];
    };
    let mut outcomes = vec![Ok(Inserted::New); count];
    for failure in failed {
        if let Some(outcome) = outcomes.get_mut(failure.index) {
            *outcome =
                if failure.code == DUPLICATE_KEY { Ok(Inserted::Duplicate) } else { Err(error.clone()) };
        }
    }
    outcomes
}

/// Per id, in order, the document with that `_id` or `None`: one `find` for all of
/// them (a [`marquee_kit::batch::Batcher`] batch of lookups). `id_of` reads a found
/// document's `_id`.
pub async fn find_each<T>(
    collection: &Collection<T>,
    ids: &[String],
    id_of: impl Fn(&T) -> &str,
) -> Vec<Result<Option<T>, mongodb::error::Error>>
where
    T: DeserializeOwned + Clone + Send + Sync,
{
    let filter = match ids {
        [id] => doc! { "_id": id },
        _ => doc! { "_id": { "$in": ids } },
    };
    let found: Result<Vec<T>, _> = async { collection.find(filter).await?.try_collect().await }.await;
    match found {
        Ok(found) => {
            let found: HashMap<&str, &T> = found.iter().map(|doc| (id_of(doc), doc)).collect();
            ids.iter().map(|id| Ok(found.get(id.as_str()).map(|&doc| doc.clone()))).collect()
        }
        Err(error) => vec![Err(error); ids.len()],
    }
}

/// MongoDB's code for a unique-index violation.
const DUPLICATE_KEY: i32 = 11000;
/// MongoDB's code for dropping an index that is not there.
const INDEX_NOT_FOUND: i32 = 27;

/// Drops those of the indexes named `retired` that `collection` has: indexes a later
/// definition replaced under another name (an index's keys or options cannot change
/// under the same name). Another replica starting at the same time may drop one
/// first; that is not an error.
pub async fn drop_retired_indexes<T: Send + Sync>(
    collection: &Collection<T>,
    retired: &[&str],
) -> anyhow::Result<()> {
    let namespace = collection.namespace();
    let existing = collection
        .list_index_names()
        .await
        .with_context(|| format!("cannot list the indexes of {namespace}"))?;
    for name in retired.iter().filter(|name| existing.iter().any(|e| e == *name)) {
        match collection.drop_index(*name).await {
            Ok(()) => tracing::info!(%namespace, index = name, "dropped a retired index"),
            Err(error) if command_code(&error) == Some(INDEX_NOT_FOUND) => {}
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot drop the retired index {name} of {namespace}"));
            }
        }
    }
    Ok(())
}

/// The names of the indexes the server plans to read `filter` through on
/// `collection` (none: a collection scan), from its `explain`. For tests and
/// diagnostics: which index answers a query.
pub async fn plan_indexes<T: Send + Sync>(
    collection: &Collection<T>,
    filter: Document,
) -> anyhow::Result<Vec<String>> {
    let explain =
        doc! { "explain": { "find": collection.name(), "filter": filter }, "verbosity": "queryPlanner" };
    let explained = collection
        .client()
        .database(&collection.namespace().db)
        .run_command(explain)
        .await
        .context("cannot explain a query")?;
    let plan = explained
        .get_document("queryPlanner")
        .and_then(|planner| planner.get_document("winningPlan"))
        .context("explain has no winning plan")?;
    let mut names = Vec::new();
    index_names(&Bson::Document(plan.clone()), &mut names);
    Ok(names)
}

fn index_names(value: &Bson, names: &mut Vec<String>) {
    match value {
        Bson::Document(doc) => {
            for (key, value) in doc {
                match value {
                    Bson::String(name) if key == "indexName" => names.push(name.clone()),
                    _ => index_names(value, names),
                }
            }
        }
        Bson::Array(values) => values.iter().for_each(|value| index_names(value, names)),
        _ => {}
    }
}

fn command_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        _ => None,
    }
}

/// Readiness: MongoDB answers `ping`.
pub fn probe(db: &Database, scope: Scope) -> Probe {
    let db = db.clone();
    Probe::new("mongodb", scope, move || {
        let db = db.clone();
        async move {
            db.run_command(mongodb::bson::doc! { "ping": 1 }).await?;
            Ok(())
        }
    })
}

/// `marquee_kit::error::internal` for a service that stores in MongoDB: UNAVAILABLE
/// when MongoDB could not be reached (the same call may succeed once it is back; the
/// gateway tells the client to retry), an opaque INTERNAL otherwise. Logs the cause
/// chain either way.
pub fn internal(error: &anyhow::Error) -> tonic::Status {
    if unreachable(error) {
        return marquee_kit::error::unavailable(error, "the database");
    }
    marquee_kit::error::internal(error)
}

/// Whether `error` was caused by MongoDB being out of reach (connection refused or
/// reset, no server to select, a pool cleared after such a failure) rather than by
/// anything it answered.
pub fn unreachable(error: &anyhow::Error) -> bool {
    error.chain().filter_map(|cause| cause.downcast_ref::<mongodb::error::Error>()).any(|e| {
        matches!(
            *e.kind,
            ErrorKind::Io(_) | ErrorKind::ServerSelection { .. } | ErrorKind::ConnectionPoolCleared { .. }
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tonic::Code;

    use super::*;

    #[test]
    fn an_unreachable_mongodb_is_unavailable_and_anything_else_internal() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let unreachable_error =
            anyhow::Error::new(mongodb::error::Error::from(reset)).context("cannot claim a slot");
        assert!(unreachable(&unreachable_error));
        assert_eq!(internal(&unreachable_error).code(), Code::Unavailable);

        let bug = anyhow::anyhow!("a document without a status").context("cannot read booking");
        assert!(!unreachable(&bug));
        assert_eq!(internal(&bug).code(), Code::Internal);
    }
}
