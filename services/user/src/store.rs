//! The `users` collection: one document per account, unique by normalised email.

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_common::auth::Role;
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{Email, UserId};

/// A stored account. `password_hash` never leaves this crate.
#[derive(Clone, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: bson::DateTime,
}

impl UserDoc {
    pub fn created_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.created_at.timestamp_millis()).unwrap_or_default()
    }
}

/// Result of an insert that may hit the unique email index.
pub enum Inserted {
    Created,
    EmailTaken,
}

#[derive(Clone)]
pub struct UserStore {
    users: Collection<UserDoc>,
}

impl UserStore {
    /// Opens the collection and ensures its indexes exist (idempotent).
    pub async fn init(db: &Database) -> anyhow::Result<Self> {
        let users = db.collection::<UserDoc>("users");
        let unique_email = IndexModel::builder()
            .keys(doc! { "email": 1 })
            .options(IndexOptions::builder().unique(true).name("users_email_unique".to_owned()).build())
            .build();
        users.create_index(unique_email).await.context("cannot create users.email index")?;
        Ok(Self { users })
    }

    pub async fn insert(&self, user: &UserDoc) -> anyhow::Result<Inserted> {
        match self.users.insert_one(user).await {
            Ok(_) => Ok(Inserted::Created),
            Err(e) if marquee_common::mongo::is_duplicate_key(&e) => Ok(Inserted::EmailTaken),
            Err(e) => Err(e).context("cannot insert user"),
        }
    }

    pub async fn find_by_email(&self, email: &Email) -> anyhow::Result<Option<UserDoc>> {
        self.users.find_one(doc! { "email": email.as_str() }).await.context("cannot look up user by email")
    }

    pub async fn find_by_id(&self, id: UserId) -> anyhow::Result<Option<UserDoc>> {
        self.users.find_one(doc! { "_id": id.to_string() }).await.context("cannot look up user by id")
    }
}
