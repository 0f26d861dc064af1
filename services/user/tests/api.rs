#![allow(clippy::unwrap_used, clippy::expect_used)]

use marquee_common::auth::{Role, TokenKeys};
use marquee_common::shutdown::Shutdown;
use marquee_common::{ApiError, ErrorCode, Settings};
use marquee_proto::user::v1 as pb;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use marquee_user::Application;
use mongodb::bson::{Document, doc};
use tonic::transport::Channel;

struct TestApp {
    client: UserServiceClient<Channel>,
    settings: Settings,
    users: mongodb::Collection<Document>,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_app() -> TestApp {
    let settings = marquee_common::testing::isolated_settings().await.expect("isolated settings");
    let app = Application::build(settings.clone()).await.expect("build user service");
    let addr = app.addr();
    let shutdown = Shutdown::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = UserServiceClient::connect(format!("http://{addr}")).await.expect("connect");
    let db = marquee_common::mongo::connect(&settings.mongo, "user").await.expect("mongo");
    TestApp { client, users: db.collection("users"), settings, shutdown }
}

impl TestApp {
    async fn register(&self, email: &str, password: &str, name: &str) -> Result<pb::AuthResponse, ApiError> {
        let request =
            pb::RegisterRequest { email: email.into(), password: password.into(), name: name.into() };
        self.client
            .clone()
            .register(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn login(&self, email: &str, password: &str) -> Result<pb::AuthResponse, ApiError> {
        let request = pb::LoginRequest { email: email.into(), password: password.into() };
        self.client
            .clone()
            .login(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn get_user(&self, id: &str) -> Result<pb::User, ApiError> {
        let request = pb::GetUserRequest { id: id.into() };
        self.client
            .clone()
            .get_user(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn stored_users(&self) -> u64 {
        self.users.count_documents(doc! {}).await.unwrap()
    }
}

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn register_then_login_issues_tokens_for_the_user() {
    let app = spawn_app().await;
    let keys = TokenKeys::new(&app.settings.auth).unwrap();

    let registered = app.register("  Ada@Example.com ", PASSWORD, "  Ada Lovelace ").await.unwrap();
    let user = registered.user.clone().unwrap();
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.name, "Ada Lovelace");
    assert_eq!(user.role(), pb::Role::Customer);
    uuid::Uuid::parse_str(&user.id).expect("user id is a UUID");
    let claims = keys.verify(&registered.access_token).unwrap();
    assert_eq!((claims.sub.as_str(), claims.role), (user.id.as_str(), Role::Customer));
    assert_eq!(registered.expires_at.unwrap().seconds, claims.exp);

    let logged_in = app.login("ADA@example.com", PASSWORD).await.unwrap();
    assert_eq!(logged_in.user.unwrap().id, user.id);
    assert_eq!(keys.verify(&logged_in.access_token).unwrap().sub, user.id);

    // The stored hash is argon2id with the configured cost, never the password itself.
    let stored = app.users.find_one(doc! { "_id": &user.id }).await.unwrap().unwrap();
    let hash = stored.get_str("password_hash").unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
    assert!(!hash.contains(PASSWORD));
}

#[tokio::test]
async fn a_second_account_for_the_same_email_is_a_conflict() {
    let app = spawn_app().await;
    app.register("ada@example.com", PASSWORD, "Ada").await.unwrap();

    let err = app.register("  ADA@Example.COM", "another password", "Ada 2").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert_eq!(app.stored_users().await, 1);
}

#[tokio::test]
async fn invalid_registrations_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let too_long = "x".repeat(129);
    let long_name = "n".repeat(101);
    let cases = [
        ("ada@example.com", "short", "Ada"),
        ("ada@example.com", too_long.as_str(), "Ada"),
        ("ada.lovelace@example.com", "Ada.Lovelace@example.com", "Ada"),
        ("not-an-email", PASSWORD, "Ada"),
        ("ada@example.com", PASSWORD, "   "),
        ("ada@example.com", PASSWORD, long_name.as_str()),
    ];
    for (email, password, name) in cases {
        let err = app.register(email, password, name).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::BadUserInput, "{email} / {name}: {err}");
    }
    assert_eq!(app.stored_users().await, 0);
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    app.register("ada@example.com", PASSWORD, "Ada").await.unwrap();

    let wrong_password = app.login("ada@example.com", "not the password").await.unwrap_err();
    let unknown_email = app.login("grace@example.com", PASSWORD).await.unwrap_err();
    let malformed_email = app.login("grace", PASSWORD).await.unwrap_err();
    assert_eq!(wrong_password.code, ErrorCode::Unauthenticated);
    assert_eq!(wrong_password.message, "invalid email or password");
    assert_eq!(unknown_email, wrong_password);
    assert_eq!(malformed_email, wrong_password);
}

#[tokio::test]
async fn get_user_returns_the_account_without_secrets() {
    let app = spawn_app().await;
    let registered = app.register("ada@example.com", PASSWORD, "Ada").await.unwrap().user.unwrap();

    let fetched = app.get_user(&registered.id).await.unwrap();
    assert_eq!(fetched, registered);

    let missing = app.get_user(&uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);
    let malformed = app.get_user("not-a-uuid").await.unwrap_err();
    assert_eq!(malformed.code, ErrorCode::BadUserInput);
}
