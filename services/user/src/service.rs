//! The `UserService` gRPC handlers and the one error type they return.

use anyhow::Context;
use chrono::Utc;
use marquee_common::auth::{Role, TokenKeys};
use marquee_common::{ApiError, ErrorCode, Secret};
use marquee_proto::user::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::{Email, InvalidInput, NewPassword, UserId, UserName};
use crate::password::PasswordHasherService;
use crate::store::{Inserted, UserDoc, UserStore};

/// Everything that can go wrong at this service's boundary.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("an account with this email already exists")]
    EmailTaken,
    /// One message for unknown email and wrong password: no account enumeration.
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("user not found")]
    NotFound,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<UserError> for Status {
    fn from(error: UserError) -> Self {
        let code = match &error {
            UserError::InvalidInput(_) => ErrorCode::BadUserInput,
            UserError::EmailTaken => ErrorCode::Conflict,
            UserError::InvalidCredentials => ErrorCode::Unauthenticated,
            UserError::NotFound => ErrorCode::NotFound,
            UserError::Unexpected(e) => return marquee_common::error::internal(e),
        };
        ApiError::new(code, error.to_string()).into()
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct UserServiceImpl {
    store: UserStore,
    hasher: PasswordHasherService,
    tokens: TokenKeys,
}

impl UserServiceImpl {
    pub fn new(store: UserStore, hasher: PasswordHasherService, tokens: TokenKeys) -> Self {
        Self { store, hasher, tokens }
    }

    async fn register(&self, req: pb::RegisterRequest) -> Result<pb::AuthResponse, UserError> {
        let email = Email::parse(&req.email)?;
        let name = UserName::parse(&req.name)?;
        let password = NewPassword::parse(req.password, &email)?;

        let password_hash = self.hasher.hash(password.into_secret()).await?;
        let id = UserId::generate();
        tracing::Span::current().record("user.id", tracing::field::display(id));
        let user = UserDoc {
            id: id.to_string(),
            email: email.as_str().to_owned(),
            name: name.as_str().to_owned(),
            role: Role::Customer,
            password_hash,
            created_at: mongodb::bson::DateTime::now(),
        };
        match self.store.insert(&user).await? {
            Inserted::Created => {}
            Inserted::EmailTaken => return Err(UserError::EmailTaken),
        }
        tracing::info!("user registered");
        self.auth_response(&user)
    }

    async fn login(&self, req: pb::LoginRequest) -> Result<pb::AuthResponse, UserError> {
        // A malformed email cannot belong to an account, so it gets the same answer.
        let Ok(email) = Email::parse(&req.email) else {
            return Err(UserError::InvalidCredentials);
        };
        let password = Secret::new(req.password);
        let Some(user) = self.store.find_by_email(&email).await? else {
            self.hasher.verify_dummy(password).await?;
            return Err(UserError::InvalidCredentials);
        };
        tracing::Span::current().record("user.id", user.id.as_str());
        if !self.hasher.verify(password, user.password_hash.clone()).await? {
            return Err(UserError::InvalidCredentials);
        }
        self.auth_response(&user)
    }

    async fn get_user(&self, req: pb::GetUserRequest) -> Result<pb::User, UserError> {
        let id = UserId::parse(&req.id)?;
        tracing::Span::current().record("user.id", tracing::field::display(id));
        let user = self.store.find_by_id(id).await?.ok_or(UserError::NotFound)?;
        Ok(to_proto(&user))
    }

    fn auth_response(&self, user: &UserDoc) -> Result<pb::AuthResponse, UserError> {
        let (access_token, expires_at) =
            self.tokens.issue(&user.id, user.role, Utc::now()).context("cannot issue access token")?;
        Ok(pb::AuthResponse {
            access_token,
            expires_at: Some(marquee_common::time::to_proto(expires_at)),
            user: Some(to_proto(user)),
        })
    }
}

fn to_proto(user: &UserDoc) -> pb::User {
    let role = match user.role {
        Role::Customer => pb::Role::Customer,
        Role::Staff => pb::Role::Staff,
        Role::Admin => pb::Role::Admin,
    };
    pb::User {
        id: user.id.clone(),
        email: user.email.clone(),
        name: user.name.clone(),
        role: role.into(),
        created_at: Some(marquee_common::time::to_proto(user.created_at())),
        // No phone or preference is stored yet: every user is notified by email.
        phone: String::new(),
        notification_preferences: Some(pb::NotificationPreferences { email: true, sms: false }),
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserServiceImpl {
    #[tracing::instrument(name = "user.register", skip_all, fields(user.id = tracing::field::Empty))]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        Ok(Response::new(UserServiceImpl::register(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "user.login", skip_all, fields(user.id = tracing::field::Empty))]
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::AuthResponse>, Status> {
        Ok(Response::new(UserServiceImpl::login(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "user.get_user", skip_all, fields(user.id = tracing::field::Empty))]
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(UserServiceImpl::get_user(self, request.into_inner()).await?))
    }
}
