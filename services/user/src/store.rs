//! The `users` collection: one document per account, unique by normalised email.

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_auth::Role;
use marquee_kit::batch::Batcher;
use mongodb::bson::{self, doc};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{Email, NotificationPreferences, Phone, UserId, UserName};

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
    /// E.164; absent when the user gave none.
    #[serde(default)]
    pub phone: Option<String>,
    /// Accounts stored before preferences existed are notified by email.
    #[serde(default)]
    pub notify: NotifyDoc,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct NotifyDoc {
    pub email: bool,
    pub sms: bool,
}

impl Default for NotifyDoc {
    fn default() -> Self {
        NotificationPreferences::EMAIL_ONLY.into()
    }
}

impl From<NotificationPreferences> for NotifyDoc {
    fn from(prefs: NotificationPreferences) -> Self {
        Self { email: prefs.email(), sms: prefs.sms() }
    }
}

impl UserDoc {
    pub fn created_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.created_at.timestamp_millis()).unwrap_or_default()
    }
}

/// The outcome of an insert that may hit the unique email index.
pub enum Inserted {
    Created,
    EmailTaken,
}

/// A whole profile, already validated against itself (SMS needs a phone).
pub struct Profile {
    pub name: UserName,
    pub phone: Option<Phone>,
    pub notify: NotificationPreferences,
}

#[derive(Clone)]
pub struct UserStore {
    users: Collection<UserDoc>,
    /// Concurrent lookups by id (other services' GetUser), one find per batch.
    by_id: Batcher<String, Option<UserDoc>, mongodb::error::Error>,
}

impl UserStore {
    /// Opens the collection and makes sure its indexes exist (idempotent).
    pub async fn init(db: &Database) -> anyhow::Result<Self> {
        let users = db.collection::<UserDoc>("users");
        let unique_email = IndexModel::builder()
            .keys(doc! { "email": 1 })
            .options(IndexOptions::builder().unique(true).name("users_email_unique".to_owned()).build())
            .build();
        users.create_index(unique_email).await.context("cannot create users.email index")?;
        let by_id = Batcher::spawn("look up users by id", {
            let users = users.clone();
            move |ids: Vec<String>| {
                let users = users.clone();
                async move { marquee_mongo::find_each(&users, &ids, |user| user.id.as_str()).await }
            }
        });
        Ok(Self { users, by_id })
    }

    pub async fn insert(&self, user: &UserDoc) -> anyhow::Result<Inserted> {
        match self.users.insert_one(user).await {
            Ok(_) => Ok(Inserted::Created),
            Err(e) if marquee_mongo::is_duplicate_key(&e) => Ok(Inserted::EmailTaken),
            Err(e) => Err(e).context("cannot insert user"),
        }
    }

    pub async fn find_by_email(&self, email: &Email) -> anyhow::Result<Option<UserDoc>> {
        self.users.find_one(doc! { "email": email.as_str() }).await.context("cannot look up user by email")
    }

    pub async fn find_by_id(&self, id: UserId) -> anyhow::Result<Option<UserDoc>> {
        self.by_id.call(id.to_string()).await
    }

    /// Writes `profile` if the stored phone is still `expected_phone`: the profile was
    /// validated against that phone, so a concurrent change must not slip in between.
    /// `None` means the account is gone or was changed concurrently.
    pub async fn replace_profile(
        &self,
        id: UserId,
        expected_phone: Option<&str>,
        profile: &Profile,
    ) -> anyhow::Result<Option<UserDoc>> {
        let phone = profile.phone.as_ref().map(Phone::as_str);
        let update = doc! { "$set": {
            "name": profile.name.as_str(),
            "phone": phone,
            "notify": { "email": profile.notify.email(), "sms": profile.notify.sms() },
        } };
        self.users
            .find_one_and_update(doc! { "_id": id.to_string(), "phone": expected_phone }, update)
            .return_document(ReturnDocument::After)
            .await
            .context("cannot update user profile")
    }

    pub async fn set_role(&self, id: UserId, role: Role) -> anyhow::Result<Option<UserDoc>> {
        self.users
            .find_one_and_update(doc! { "_id": id.to_string() }, doc! { "$set": { "role": role.as_str() } })
            .return_document(ReturnDocument::After)
            .await
            .context("cannot set user role")
    }

    pub async fn set_role_by_email(&self, email: &Email, role: Role) -> anyhow::Result<bool> {
        let result = self
            .users
            .update_one(doc! { "email": email.as_str() }, doc! { "$set": { "role": role.as_str() } })
            .await
            .context("cannot set user role by email")?;
        Ok(result.matched_count == 1)
    }
}
