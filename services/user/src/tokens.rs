//! Refresh tokens (MongoDB `refresh_tokens`) and the access-token denylist (Redis).
//!
//! A refresh token is 256 random bits, handed out once and stored only as its SHA-256
//! (a fast hash is enough for a secret nobody can guess). Tokens chain into a family:
//! each refresh spends one and issues the next. Presenting a spent token means two
//! parties hold the chain, so the whole family is revoked.

use std::fmt::Write as _;

use anyhow::Context;
use chrono::{DateTime, Utc};
use marquee_kit::Secret;
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::UserId;

#[derive(Clone, Serialize, Deserialize)]
struct RefreshDoc {
    /// SHA-256 of the token, hex.
    #[serde(rename = "_id")]
    hash: String,
    family_id: String,
    user_id: String,
    expires_at: bson::DateTime,
    used_at: Option<bson::DateTime>,
    revoked_at: Option<bson::DateTime>,
}

/// A freshly issued refresh token; the plain value exists only here and in the response.
pub struct IssuedRefresh {
    pub token: Secret<String>,
    pub expires_at: DateTime<Utc>,
}

/// What spending a refresh token found.
pub enum Spent {
    /// Valid and now spent: issue the next one in `family_id` for `user_id`.
    Fresh { user_id: String, family_id: String },
    /// Unknown, expired or revoked.
    Invalid,
    /// Already spent once: the family has just been revoked.
    Reused,
}

#[derive(Clone)]
pub struct RefreshTokens {
    tokens: Collection<RefreshDoc>,
    ttl: chrono::Duration,
}

fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    Ok(bytes.iter().fold(String::with_capacity(64), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    }))
}

impl RefreshTokens {
    pub async fn init(db: &Database, ttl_seconds: i64) -> anyhow::Result<Self> {
        anyhow::ensure!(ttl_seconds > 0, "auth.refresh_token_ttl_seconds must be positive");
        let tokens = db.collection::<RefreshDoc>("refresh_tokens");
        let family = IndexModel::builder()
            .keys(doc! { "family_id": 1 })
            .options(IndexOptions::builder().name("refresh_family".to_owned()).build())
            .build();
        // Expired tokens are useless: the server deletes them on its TTL sweep.
        let expiry = IndexModel::builder()
            .keys(doc! { "expires_at": 1 })
            .options(
                IndexOptions::builder()
                    .name("refresh_expiry".to_owned())
                    .expire_after(std::time::Duration::ZERO)
                    .build(),
            )
            .build();
        tokens.create_index(family).await.context("cannot create refresh_tokens.family_id index")?;
        tokens.create_index(expiry).await.context("cannot create refresh_tokens.expires_at index")?;
        Ok(Self { tokens, ttl: chrono::Duration::seconds(ttl_seconds) })
    }

    /// Issues a token in `family_id`, or starts a new family when it is `None` (a login).
    pub async fn issue(
        &self,
        user: &str,
        family_id: Option<String>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<IssuedRefresh> {
        let token = generate()?;
        let expires_at = now + self.ttl;
        let doc = RefreshDoc {
            hash: hash(&token),
            family_id: family_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            user_id: user.to_owned(),
            expires_at: bson::DateTime::from_millis(expires_at.timestamp_millis()),
            used_at: None,
            revoked_at: None,
        };
        self.tokens.insert_one(&doc).await.context("cannot store refresh token")?;
        Ok(IssuedRefresh { token: Secret::new(token), expires_at })
    }

    /// Spends `token` atomically: of two concurrent uses, exactly one is `Fresh`.
    pub async fn spend(&self, token: &str, now: DateTime<Utc>) -> anyhow::Result<Spent> {
        let hash = hash(token);
        let now_bson = bson::DateTime::from_millis(now.timestamp_millis());
        let spent = self
            .tokens
            .find_one_and_update(
                doc! { "_id": &hash, "used_at": null, "revoked_at": null, "expires_at": { "$gt": now_bson } },
                doc! { "$set": { "used_at": now_bson } },
            )
            .await
            .context("cannot spend refresh token")?;
        if let Some(doc) = spent {
            // A reuse may have revoked the family after this token was issued (its
            // predecessor replayed while the refresh that made it was in flight): any
            // other revoked member dooms the whole family. This token itself does not:
            // a concurrent replay of it revokes it right after this spend, and then this
            // spend is the one use that wins (its successor is born into a revoked family).
            let revoked = self
                .tokens
                .find_one(doc! {
                    "family_id": &doc.family_id,
                    "revoked_at": { "$ne": null },
                    "_id": { "$ne": &hash },
                })
                .await
                .context("cannot check refresh token family")?;
            if revoked.is_some() {
                return Ok(Spent::Reused);
            }
            return Ok(Spent::Fresh { user_id: doc.user_id, family_id: doc.family_id });
        }
        let Some(existing) =
            self.tokens.find_one(doc! { "_id": &hash }).await.context("cannot look up refresh token")?
        else {
            return Ok(Spent::Invalid);
        };
        if existing.used_at.is_some() {
            self.revoke_family(&existing.family_id, now).await?;
            return Ok(Spent::Reused);
        }
        Ok(Spent::Invalid)
    }

    /// The owner of a live token, for logout; `None` when it is unknown.
    /// Returns `(user_id, family_id)`.
    pub async fn family_of(&self, token: &str) -> anyhow::Result<Option<(String, String)>> {
        let found = self
            .tokens
            .find_one(doc! { "_id": hash(token) })
            .await
            .context("cannot look up refresh token")?;
        Ok(found.map(|doc| (doc.user_id, doc.family_id)))
    }

    pub async fn revoke_family(&self, family_id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        self.tokens
            .update_many(
                doc! { "family_id": family_id, "revoked_at": null },
                doc! { "$set": { "revoked_at": bson::DateTime::from_millis(now.timestamp_millis()) } },
            )
            .await
            .context("cannot revoke refresh token family")?;
        Ok(())
    }
}

/// Access tokens denied before their `exp` (logout). The gateway reads the same keys.
#[derive(Clone)]
pub struct AccessDenylist {
    redis: ConnectionManager,
    prefix: String,
}

impl AccessDenylist {
    pub fn new(redis: ConnectionManager, prefix: String) -> Self {
        Self { redis, prefix }
    }

    /// Denies `jti` until `exp`; a token already past `exp` needs no entry.
    pub async fn deny(&self, user: UserId, jti: &str, exp: i64, now: DateTime<Utc>) -> anyhow::Result<()> {
        // The verifier accepts a token for its leeway past `exp`, so the entry must outlive that.
        let Ok(ttl) = u64::try_from(exp - now.timestamp() + marquee_auth::LEEWAY_SECONDS + 1) else {
            return Ok(());
        };
        let key = marquee_auth::denied_jti_key(&self.prefix, jti);
        let mut redis = self.redis.clone();
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(user.to_string())
            .arg("EX")
            .arg(ttl)
            .query_async(&mut redis)
            .await
            .context("cannot deny access token")?;
        Ok(())
    }
}
