//! The `notifications` collection: the log of everything sent, one record per
//! (event, channel), which is also the last line of defence against duplicates.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, doc};
use mongodb::error::{ErrorKind, InsertManyError};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{PageSize, UserId};

const DUPLICATE_KEY: i32 = 11000;

#[derive(Clone)]
pub struct NotificationStore {
    notifications: Collection<NotificationDoc>,
}

/// A sent notification, as stored and listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub booking_id: String,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub event_id: String,
    pub event_type: String,
    pub sent_at: bson::DateTime,
}

impl NotificationDoc {
    pub fn sent_at(&self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.sent_at.timestamp_millis())
    }
}

pub fn bson_time(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

impl NotificationStore {
    pub async fn new(db: &Database) -> anyhow::Result<Self> {
        let notifications = db.collection::<NotificationDoc>("notifications");
        let indexes = vec![
            IndexModel::builder()
                .keys(doc! { "event_id": 1, "channel": 1 })
                .options(IndexOptions::builder().name("event_channel".to_owned()).unique(true).build())
                .build(),
            IndexModel::builder()
                .keys(doc! { "user_id": 1, "sent_at": -1, "_id": -1 })
                .options(IndexOptions::builder().name("user_newest_first".to_owned()).build())
                .build(),
        ];
        notifications.create_indexes(indexes).await.context("cannot create notification indexes")?;
        Ok(Self { notifications })
    }

    /// Records many at once, one result per document in order: a document recorded
    /// before (same event and channel) counts as recorded.
    pub async fn record_many(&self, docs: &[NotificationDoc]) -> Vec<Result<(), String>> {
        let error = match self.notifications.insert_many(docs).ordered(false).await {
            Ok(_) => return vec![Ok(()); docs.len()],
            Err(error) => error,
        };
        if let ErrorKind::InsertMany(InsertManyError {
            write_errors: Some(failed),
            write_concern_error: None,
            ..
        }) = &*error.kind
        {
            let mut results = vec![Ok(()); docs.len()];
            for failure in failed.iter().filter(|f| f.code != DUPLICATE_KEY) {
                if let Some(result) = results.get_mut(failure.index) {
                    *result = Err(format!("cannot record notification: {}", failure.message));
                }
            }
            return results;
        }
        vec![Err(format!("cannot record notifications: {error}")); docs.len()]
    }

    /// The user's notifications, newest first.
    pub async fn list(&self, user_id: UserId, page_size: PageSize) -> anyhow::Result<Vec<NotificationDoc>> {
        self.notifications
            .find(doc! { "user_id": user_id.to_string() })
            // v7 ids order notifications sent within the same millisecond.
            .sort(doc! { "sent_at": -1, "_id": -1 })
            .limit(page_size.get())
            .await
            .context("cannot list notifications")?
            .try_collect()
            .await
            .context("cannot read listed notifications")
    }
}
