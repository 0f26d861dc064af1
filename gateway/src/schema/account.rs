//! The caller's account: the user (only ever the caller themself) with their role,
//! profile, notification preferences, bookings and notifications, and what
//! `register`, `login` and `refreshToken` answer.

use async_graphql::connection::Connection;
use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};
use marquee_proto::notification::v1 as notification;
use marquee_proto::user::v1 as user;

use super::bookings::{Booking, BookingStatus, prefetch_for_bookings};
use super::pagination::{PageCursor, PageRequest};
use super::scope;
use super::values::{broken, non_empty, timestamp};
use crate::domain::{UserId, trusted};
use crate::error::GatewayError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum Role {
    Customer,
    Staff,
    Admin,
}

impl Role {
    pub fn to_proto(self) -> user::Role {
        match self {
            Self::Customer => user::Role::Customer,
            Self::Staff => user::Role::Staff,
            Self::Admin => user::Role::Admin,
        }
    }
}

/// Only ever built for the caller themself (`me`, `register`, `login`), so the
/// bookings and notifications it lists are the caller's own.
pub struct User(pub user::User);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn email(&self) -> &str {
        &self.0.email
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// E.164, e.g. "+4915112345678"; null when none was given.
    async fn phone(&self) -> Option<&str> {
        non_empty(&self.0.phone)
    }

    async fn notification_preferences(&self) -> NotificationPreferences {
        // Every stored account has preferences; a missing message is the default.
        let prefs = self
            .0
            .notification_preferences
            .unwrap_or(user::NotificationPreferences { email: true, sms: false });
        NotificationPreferences { email: prefs.email, sms: prefs.sms }
    }

    async fn role(&self) -> async_graphql::Result<Role> {
        match user::Role::try_from(self.0.role) {
            Ok(user::Role::Customer) => Ok(Role::Customer),
            Ok(user::Role::Staff) => Ok(Role::Staff),
            Ok(user::Role::Admin) => Ok(Role::Admin),
            Ok(user::Role::Unspecified) | Err(_) => Err(broken("a user without a role").into()),
        }
    }

    /// Newest first; `statuses` keeps only those (all when omitted).
    async fn bookings(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        statuses: Option<Vec<BookingStatus>>,
    ) -> async_graphql::Result<Connection<PageCursor, Booking>> {
        let scope = scope(ctx)?;
        let request = PageRequest::new(first, after.as_deref())?;
        let id: UserId = trusted(&self.0.id)?;
        let statuses = statuses.unwrap_or_default().into_iter().map(BookingStatus::to_proto).collect();
        let page =
            scope.upstreams.bookings_of(&id, statuses, request.page_size, request.page_token.clone()).await?;
        let paged = request.page(page.items, &page.next_page_token);
        let look = ctx.look_ahead();
        let nodes = [look.field("edges").field("node"), look.field("nodes")];
        prefetch_for_bookings(&scope, paged.edges.iter().map(|(_, b)| b), &nodes).await?;
        Ok(paged.into_connection(Booking))
    }

    /// Newest first.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<PageCursor, Notification>> {
        let scope = scope(ctx)?;
        let request = PageRequest::new(first, after.as_deref())?;
        let id: UserId = trusted(&self.0.id)?;
        let page =
            scope.upstreams.notifications_of(&id, request.page_size, request.page_token.clone()).await?;
        Ok(request.page(page.items, &page.next_page_token).into_connection(Notification))
    }
}

pub struct Notification(pub notification::Notification);

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn booking_id(&self) -> Option<ID> {
        non_empty(&self.0.booking_id).map(|id| ID(id.to_owned()))
    }

    /// "email" or "sms".
    async fn channel(&self) -> &str {
        &self.0.channel
    }

    async fn recipient(&self) -> &str {
        &self.0.recipient
    }

    async fn subject(&self) -> &str {
        &self.0.subject
    }

    async fn body(&self) -> &str {
        &self.0.body
    }

    /// The event that caused it, e.g. "booking.confirmed".
    async fn event_type(&self) -> &str {
        &self.0.event_type
    }

    async fn sent_at(&self) -> async_graphql::Result<DateTime<Utc>> {
        Ok(timestamp(self.0.sent_at.as_ref(), "a notification without sent_at")?)
    }
}

/// Which channels the user is notified on.
#[derive(SimpleObject)]
pub struct NotificationPreferences {
    pub email: bool,
    pub sms: bool,
}

#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Bearer access token for the `Authorization` header; short-lived.
    pub token: String,
    /// One use: exchange it with `refreshToken` for a new pair. Reusing a spent one
    /// signs out every session descended from the same login.
    pub refresh_token: String,
    pub user: User,
}

impl AuthPayload {
    pub fn from_proto(response: user::AuthResponse) -> Result<Self, GatewayError> {
        let user = response.user.ok_or_else(|| broken("an auth response without a user"))?;
        Ok(Self { token: response.access_token, refresh_token: response.refresh_token, user: User(user) })
    }
}
