//! The `UserService` gRPC handlers and the one error type they return.

use anyhow::Context;
use chrono::Utc;
use marquee_auth::{Role, TokenKeys};
use marquee_kit::{ApiError, ErrorCode, Secret};
use marquee_proto::user::v1 as pb;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::domain::{Email, InvalidInput, NewPassword, NotificationPreferences, Phone, UserId, UserName};
use crate::password::PasswordHasherService;
use crate::pool::{PoolError, grpc_deadline};
use crate::store::{Inserted, NotifyDoc, Profile, UserDoc, UserStore};
use crate::throttle::LoginThrottle;
use crate::tokens::{AccessDenylist, RefreshTokens, Spent};

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
    #[error("too many failed logins; try again in {retry_after_seconds} seconds")]
    RateLimited { retry_after_seconds: u64 },
    #[error("invalid or expired refresh token")]
    InvalidRefreshToken,
    /// A spent refresh token came back: its whole family is now revoked.
    #[error("refresh token reuse detected; sign in again")]
    RefreshTokenReused,
    #[error("invalid or expired access token")]
    InvalidAccessToken,
    #[error("only an admin may do this")]
    Forbidden,
    #[error("the profile changed concurrently; retry")]
    ConcurrentUpdate,
    #[error("user not found")]
    NotFound,
    /// Password hashing is at capacity: refused at once, nothing was changed.
    #[error("the service is busy; retry in {retry_after_seconds} s")]
    ServiceBusy { retry_after_seconds: u64 },
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// A refusal is cheap to repeat, and a slot frees within one hash time, so a short hint.
const BUSY_RETRY_AFTER_SECONDS: u64 = 1;

impl From<PoolError> for UserError {
    fn from(error: PoolError) -> Self {
        match error {
            PoolError::Busy => {
                tracing::debug!("password hashing at capacity; call refused");
                UserError::ServiceBusy { retry_after_seconds: BUSY_RETRY_AFTER_SECONDS }
            }
            PoolError::Failed(cause) => UserError::Unexpected(cause),
        }
    }
}

impl From<UserError> for Status {
    fn from(error: UserError) -> Self {
        let code = match &error {
            UserError::InvalidInput(_) => ErrorCode::BadUserInput,
            UserError::EmailTaken | UserError::ConcurrentUpdate => ErrorCode::Conflict,
            UserError::InvalidCredentials
            | UserError::InvalidRefreshToken
            | UserError::RefreshTokenReused
            | UserError::InvalidAccessToken => ErrorCode::Unauthenticated,
            UserError::RateLimited { .. } => ErrorCode::RateLimited,
            UserError::Forbidden => ErrorCode::Forbidden,
            UserError::NotFound => ErrorCode::NotFound,
            UserError::ServiceBusy { .. } => ErrorCode::ServiceBusy,
            UserError::Unexpected(e) => return marquee_mongo::internal(e),
        };
        let mut api = ApiError::new(code, error.to_string());
        match &error {
            UserError::RateLimited { retry_after_seconds }
            | UserError::ServiceBusy { retry_after_seconds } => {
                api = api.with_retry_after(*retry_after_seconds);
            }
            // The contract's gRPC code for a taken email; clients still see CONFLICT.
            UserError::EmailTaken => api = api.with_grpc_code(tonic::Code::AlreadyExists),
            _ => {}
        }
        api.into()
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct UserServiceImpl {
    pub store: UserStore,
    pub hasher: PasswordHasherService,
    pub tokens: TokenKeys,
    pub refresh: RefreshTokens,
    pub denylist: AccessDenylist,
    pub throttle: LoginThrottle,
}

impl UserServiceImpl {
    /// `deadline`, here and below: when the caller stops waiting (its `grpc-timeout`).
    async fn register(
        &self,
        req: pb::RegisterRequest,
        deadline: Option<Instant>,
    ) -> Result<pb::AuthResponse, UserError> {
        let email = Email::parse(&req.email)?;
        let name = UserName::parse(&req.name)?;
        let password = NewPassword::parse(req.password, &email)?;
        let phone = match req.phone.trim() {
            "" => None,
            raw => Some(Phone::parse(raw)?),
        };

        let password_hash = self.hasher.hash(password.into_secret(), deadline).await?;
        let id = UserId::generate();
        tracing::Span::current().record("user.id", tracing::field::display(id));
        let mut user = new_user(id, &email, &name, Role::Customer, password_hash);
        user.phone = phone.map(|p| p.as_str().to_owned());
        match self.store.insert(&user).await? {
            Inserted::Created => {}
            Inserted::EmailTaken => return Err(UserError::EmailTaken),
        }
        tracing::info!("user registered");
        self.auth_response(&user, None).await
    }

    async fn login(
        &self,
        req: pb::LoginRequest,
        deadline: Option<Instant>,
    ) -> Result<pb::AuthResponse, UserError> {
        // A malformed email cannot belong to an account, so it gets the same answer.
        let Ok(email) = Email::parse(&req.email) else {
            return Err(UserError::InvalidCredentials);
        };
        if let Some(retry_after_seconds) = self.throttle.blocked_for(&email).await? {
            tracing::warn!("login refused: too many failures for this email");
            return Err(UserError::RateLimited { retry_after_seconds });
        }
        let password = Secret::new(req.password);
        let verified = match self.store.find_by_email(&email).await? {
            Some(user) => {
                tracing::Span::current().record("user.id", user.id.as_str());
                let ok = self.hasher.verify(password, user.password_hash.clone(), deadline).await?;
                ok.then_some(user)
            }
            None => {
                self.hasher.verify_dummy(password, deadline).await?;
                None
            }
        };
        let Some(user) = verified else {
            self.throttle.record_failure(&email).await?;
            return Err(UserError::InvalidCredentials);
        };
        self.throttle.clear(&email).await?;
        self.auth_response(&user, None).await
    }

    async fn get_user(&self, req: pb::GetUserRequest) -> Result<pb::User, UserError> {
        let id = UserId::parse(&req.id)?;
        tracing::Span::current().record("user.id", tracing::field::display(id));
        let user = self.store.find_by_id(id).await?.ok_or(UserError::NotFound)?;
        Ok(to_proto(&user))
    }

    async fn refresh_token(&self, req: pb::RefreshTokenRequest) -> Result<pb::AuthResponse, UserError> {
        let (user_id, family_id) = match self.refresh.spend(&req.refresh_token, Utc::now()).await? {
            Spent::Fresh { user_id, family_id } => (user_id, family_id),
            Spent::Invalid => return Err(UserError::InvalidRefreshToken),
            Spent::Reused => {
                tracing::warn!("spent refresh token presented again; family revoked");
                return Err(UserError::RefreshTokenReused);
            }
        };
        tracing::Span::current().record("user.id", user_id.as_str());
        let id = UserId::parse(&user_id).context("stored refresh token has a malformed user id")?;
        // The role is read afresh, so a role change shows in the next access token.
        let user = self.store.find_by_id(id).await?.ok_or(UserError::InvalidRefreshToken)?;
        self.auth_response(&user, Some(family_id)).await
    }

    async fn logout(&self, req: pb::LogoutRequest) -> Result<pb::LogoutResponse, UserError> {
        let claims = self.tokens.verify(&req.access_token).map_err(|_| UserError::InvalidAccessToken)?;
        let user = UserId::parse(&claims.sub).map_err(|_| UserError::InvalidAccessToken)?;
        tracing::Span::current().record("user.id", tracing::field::display(user));
        let now = Utc::now();
        // An unknown refresh token (expired and swept) leaves nothing to revoke; one of
        // another user must not let this caller revoke that user's sessions.
        if let Some((owner, family)) = self.refresh.family_of(&req.refresh_token).await? {
            if owner != claims.sub {
                return Err(UserError::InvalidRefreshToken);
            }
            self.refresh.revoke_family(&family, now).await?;
        }
        self.denylist.deny(user, &claims.jti, claims.exp, now).await?;
        tracing::info!("user logged out");
        Ok(pb::LogoutResponse {})
    }

    async fn update_profile(&self, req: pb::UpdateProfileRequest) -> Result<pb::User, UserError> {
        let id = UserId::parse(&req.id)?;
        tracing::Span::current().record("user.id", tracing::field::display(id));
        let current = self.store.find_by_id(id).await?.ok_or(UserError::NotFound)?;
        let name = UserName::parse(req.name.as_deref().unwrap_or(&current.name))?;
        let phone = match req.phone.as_deref().map(str::trim) {
            Some("") => None,
            Some(raw) => Some(Phone::parse(raw)?),
            None => {
                current.phone.as_deref().map(Phone::parse).transpose().context("stored phone is invalid")?
            }
        };
        let wanted = req
            .notification_preferences
            .unwrap_or(pb::NotificationPreferences { email: current.notify.email, sms: current.notify.sms });
        let notify = NotificationPreferences::parse(wanted.email, wanted.sms, phone.as_ref())?;
        let profile = Profile { name, phone, notify };
        match self.store.replace_profile(id, current.phone.as_deref(), &profile).await? {
            Some(user) => Ok(to_proto(&user)),
            None => Err(UserError::ConcurrentUpdate),
        }
    }

    async fn set_user_role(&self, req: pb::SetUserRoleRequest) -> Result<pb::User, UserError> {
        let actor = UserId::parse(&req.actor_id)?;
        let target = UserId::parse(&req.user_id)?;
        tracing::Span::current().record("user.id", tracing::field::display(target));
        let role = match req.role() {
            pb::Role::Customer => Role::Customer,
            pb::Role::Staff => Role::Staff,
            pb::Role::Admin => Role::Admin,
            pb::Role::Unspecified => return Err(InvalidInput("role must be set".to_owned()).into()),
        };
        let actor = self.store.find_by_id(actor).await?.ok_or(UserError::Forbidden)?;
        if actor.role != Role::Admin {
            return Err(UserError::Forbidden);
        }
        let user = self.store.set_role(target, role).await?.ok_or(UserError::NotFound)?;
        tracing::info!(role = role.as_str(), "user role changed");
        Ok(to_proto(&user))
    }

    /// Makes sure `email` is an admin: creates the account, or promotes an existing one
    /// that has the configured password. Safe to run at every startup and from many
    /// replicas. An account someone else registered under that email (another password)
    /// is never promoted: that would hand them the admin role.
    pub async fn ensure_admin(&self, email: &str, password: Secret<String>) -> anyhow::Result<()> {
        let email = Email::parse(email).context("user.bootstrap_admin_email is not a valid email")?;
        let policy_checked = NewPassword::parse(password.expose().clone(), &email)
            .context("user.bootstrap_admin_password breaks the password policy")?;
        if self.store.find_by_email(&email).await?.is_none() {
            let hash = self.hasher.hash(policy_checked.into_secret(), None).await?;
            let name = UserName::parse("Administrator").context("admin display name")?;
            let admin = new_user(UserId::generate(), &email, &name, Role::Admin, hash);
            if let Inserted::Created = self.store.insert(&admin).await? {
                tracing::info!("bootstrap admin created");
                return Ok(());
            }
            // Another replica (or a registration) took the email in between: judge that account.
        }
        let existing = self.store.find_by_email(&email).await?.context("bootstrap admin vanished")?;
        if existing.role == Role::Admin {
            return Ok(());
        }
        if self.hasher.verify(password, existing.password_hash.clone(), None).await? {
            self.store.set_role_by_email(&email, Role::Admin).await?;
            tracing::info!("bootstrap admin promoted");
        } else {
            tracing::error!(
                "bootstrap admin email belongs to an account with another password; not promoting it"
            );
        }
        Ok(())
    }

    async fn auth_response(
        &self,
        user: &UserDoc,
        family: Option<String>,
    ) -> Result<pb::AuthResponse, UserError> {
        let now = Utc::now();
        let (access_token, expires_at) =
            self.tokens.issue(&user.id, user.role, now).context("cannot issue access token")?;
        let refresh = self.refresh.issue(&user.id, family, now).await?;
        Ok(pb::AuthResponse {
            access_token,
            expires_at: Some(marquee_kit::time::to_proto(expires_at)),
            user: Some(to_proto(user)),
            refresh_token: refresh.token.expose().clone(),
            refresh_expires_at: Some(marquee_kit::time::to_proto(refresh.expires_at)),
        })
    }
}

fn new_user(id: UserId, email: &Email, name: &UserName, role: Role, password_hash: String) -> UserDoc {
    UserDoc {
        id: id.to_string(),
        email: email.as_str().to_owned(),
        name: name.as_str().to_owned(),
        role,
        password_hash,
        created_at: mongodb::bson::DateTime::now(),
        phone: None,
        notify: NotifyDoc::default(),
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
        created_at: Some(marquee_kit::time::to_proto(user.created_at())),
        phone: user.phone.clone().unwrap_or_default(),
        notification_preferences: Some(pb::NotificationPreferences {
            email: user.notify.email,
            sms: user.notify.sms,
        }),
    }
}

#[tonic::async_trait]
impl pb::user_service_server::UserService for UserServiceImpl {
    #[tracing::instrument(name = "user.register", skip_all, fields(user.id = tracing::field::Empty))]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        let deadline = grpc_deadline(request.metadata());
        Ok(Response::new(UserServiceImpl::register(self, request.into_inner(), deadline).await?))
    }

    #[tracing::instrument(name = "user.login", skip_all, fields(user.id = tracing::field::Empty))]
    async fn login(&self, request: Request<pb::LoginRequest>) -> Result<Response<pb::AuthResponse>, Status> {
        let deadline = grpc_deadline(request.metadata());
        Ok(Response::new(UserServiceImpl::login(self, request.into_inner(), deadline).await?))
    }

    #[tracing::instrument(name = "user.get_user", skip_all, fields(user.id = tracing::field::Empty))]
    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(UserServiceImpl::get_user(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "user.refresh_token", skip_all, fields(user.id = tracing::field::Empty))]
    async fn refresh_token(
        &self,
        request: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::AuthResponse>, Status> {
        Ok(Response::new(UserServiceImpl::refresh_token(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "user.logout", skip_all, fields(user.id = tracing::field::Empty))]
    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        Ok(Response::new(UserServiceImpl::logout(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "user.update_profile", skip_all, fields(user.id = tracing::field::Empty))]
    async fn update_profile(
        &self,
        request: Request<pb::UpdateProfileRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(UserServiceImpl::update_profile(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "user.set_user_role", skip_all, fields(user.id = tracing::field::Empty))]
    async fn set_user_role(
        &self,
        request: Request<pb::SetUserRoleRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(UserServiceImpl::set_user_role(self, request.into_inner()).await?))
    }
}
