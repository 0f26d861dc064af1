//! The `notifications` collection: the log of everything sent, one record per
//! (event, channel), which is also the last line of defence against duplicates.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use marquee_mongo::insert_outcomes;
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use uuid::Uuid;

use crate::domain::{PageSize, PageToken, TicketCode, UserId};

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
    /// The ticket codes an email carries (the body lists them too), so that the SMTP
    /// channel can add their QR codes; empty otherwise, and then not stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tickets: Vec<TicketCode>,
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
    pub async fn record_many(&self, docs: Vec<NotificationDoc>) -> Vec<Result<(), mongodb::error::Error>> {
        let count = docs.len();
        insert_outcomes(self.notifications.insert_many(docs).ordered(false).await, count)
            .into_iter()
            .map(|outcome| outcome.map(drop))
            .collect()
    }

    /// Whether the message of this event on this medium was recorded (hence sent).
    pub async fn is_recorded(&self, event_id: &str, channel: &str) -> anyhow::Result<bool> {
        let found = self
            .notifications
            .find_one(doc! { "event_id": event_id, "channel": channel })
            .await
            .context("cannot look up a recorded notification")?;
        Ok(found.is_some())
    }

    /// One page of the user's notifications, newest first, resuming after `after`;
    /// with the token of the next page if there is one. Keyset paging on the
    /// (user_id, sent_at desc, _id desc) index: each page costs the same however
    /// deep it is, and notifications recorded meanwhile neither shift nor repeat it.
    pub async fn list(
        &self,
        user_id: UserId,
        page_size: PageSize,
        after: Option<PageToken>,
    ) -> anyhow::Result<(Vec<NotificationDoc>, Option<PageToken>)> {
        let mut filter = doc! { "user_id": user_id.to_string() };
        if let Some(after) = after {
            let sent_at = bson::DateTime::from_millis(after.sent_at_ms());
            filter.insert(
                "$or",
                vec![
                    doc! { "sent_at": { "$lt": sent_at } },
                    doc! { "sent_at": sent_at, "_id": { "$lt": after.id().to_string() } },
                ],
            );
        }
        let mut docs: Vec<NotificationDoc> = self
            .notifications
            .find(filter)
            // v7 ids order notifications sent within the same millisecond.
            .sort(doc! { "sent_at": -1, "_id": -1 })
            // One more than asked tells whether another page follows.
            .limit(page_size.get() + 1)
            .await
            .context("cannot list notifications")?
            .try_collect()
            .await
            .context("cannot read listed notifications")?;
        let more = docs.len() > page_size.len();
        docs.truncate(page_size.len());
        let next = match docs.last() {
            Some(last) if more => Some(PageToken::new(
                last.sent_at.timestamp_millis(),
                Uuid::parse_str(&last.id).context("a stored notification id is not a UUID")?,
            )),
            _ => None,
        };
        Ok((docs, next))
    }
}
