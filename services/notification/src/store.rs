//! The `notifications` collection: the log of everything sent, one record per
//! (event, channel), which is also the last line of defence against duplicates.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{PageSize, UserId};

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

    /// Records a sent notification. An existing record for the same event and
    /// channel means a redelivery already got this far, which is success.
    pub async fn record(&self, notification: &NotificationDoc) -> anyhow::Result<()> {
        match self.notifications.insert_one(notification).await {
            Ok(_) => Ok(()),
            Err(e) if marquee_common::mongo::is_duplicate_key(&e) => {
                tracing::debug!(event.id = %notification.event_id, "notification already recorded");
                Ok(())
            }
            Err(e) => Err(anyhow::Error::new(e).context("cannot record notification")),
        }
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
