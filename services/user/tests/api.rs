#![allow(clippy::unwrap_used, clippy::expect_used)]

use marquee_auth::{Role, TokenKeys};
use marquee_kit::shutdown::Shutdown;
use marquee_kit::{ApiError, ErrorCode};
use marquee_proto::user::v1 as pb;
use marquee_proto::user::v1::user_service_client::UserServiceClient;
use marquee_user::Application;
use marquee_user::Settings;
use mongodb::bson::{Document, doc};
use tonic::transport::Channel;
use tonic_types::StatusExt;

struct TestApp {
    client: UserServiceClient<Channel>,
    settings: Settings,
    users: mongodb::Collection<Document>,
    refresh_tokens: mongodb::Collection<Document>,
    /// Where the service serves `GET /metrics`.
    metrics: std::net::SocketAddr,
    shutdown: Shutdown,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings: marquee_user::Settings =
        marquee_kit::testing::isolated_settings().await.expect("isolated settings");
    configure(&mut settings);
    let app = Application::build(settings.clone()).await.expect("build user service");
    let (addr, metrics) = (app.addr(), app.metrics_addr());
    let shutdown = Shutdown::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = UserServiceClient::connect(format!("http://{addr}")).await.expect("connect");
    let db = marquee_mongo::connect(&settings.mongo, "user").await.expect("mongo");
    TestApp {
        client,
        users: db.collection("users"),
        refresh_tokens: db.collection("refresh_tokens"),
        settings,
        metrics,
        shutdown,
    }
}

impl TestApp {
    async fn register(&self, email: &str, password: &str, name: &str) -> Result<pb::AuthResponse, ApiError> {
        let request = pb::RegisterRequest {
            email: email.into(),
            password: password.into(),
            name: name.into(),
            ..Default::default()
        };
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

    async fn refresh(&self, refresh_token: &str) -> Result<pb::AuthResponse, ApiError> {
        let request = pb::RefreshTokenRequest { refresh_token: refresh_token.into() };
        self.client
            .clone()
            .refresh_token(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn logout(&self, auth: &pb::AuthResponse) -> Result<(), ApiError> {
        let request = pb::LogoutRequest {
            access_token: auth.access_token.clone(),
            refresh_token: auth.refresh_token.clone(),
        };
        self.client.clone().logout(request).await.map(|_| ()).map_err(|s| ApiError::from_status(&s))
    }

    async fn update_profile(&self, request: pb::UpdateProfileRequest) -> Result<pb::User, ApiError> {
        self.client
            .clone()
            .update_profile(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn set_role(&self, actor: &str, user: &str, role: pb::Role) -> Result<pb::User, ApiError> {
        let request =
            pb::SetUserRoleRequest { actor_id: actor.into(), user_id: user.into(), role: role.into() };
        self.client
            .clone()
            .set_user_role(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|s| ApiError::from_status(&s))
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.settings.redis.url.expose().as_str()).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
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
    assert_eq!(err.grpc_code, Some(tonic::Code::AlreadyExists), "the contract's gRPC code");
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

fn prefs(email: bool, sms: bool) -> Option<pb::NotificationPreferences> {
    Some(pb::NotificationPreferences { email, sms })
}

#[tokio::test]
async fn metrics_count_each_call_by_method_and_grpc_status() {
    let app = spawn_app().await;
    let registered = app.register("ada@example.com", PASSWORD, "Ada").await.unwrap().user.unwrap();
    app.get_user(&registered.id).await.unwrap();
    app.get_user(&registered.id).await.unwrap();
    let missing = app.get_user(&uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_eq!(missing.code, ErrorCode::NotFound);

    let text = marquee_kit::testing::scrape(app.metrics).await.unwrap();
    let calls = |rpc: &str, code: &str| {
        let series = format!(
            "grpc_server_requests_total{{service=\"marquee.user.v1.UserService\",rpc=\"{rpc}\",code=\"{code}\"}}"
        );
        marquee_kit::testing::sample(&text, &series)
    };
    assert_eq!(calls("Register", "OK"), Some(1.0), "{text}");
    assert_eq!(calls("GetUser", "OK"), Some(2.0), "{text}");
    assert_eq!(calls("GetUser", "NOT_FOUND"), Some(1.0), "{text}");
    let timed =
        "grpc_server_request_duration_seconds_count{service=\"marquee.user.v1.UserService\",rpc=\"GetUser\"}";
    assert_eq!(marquee_kit::testing::sample(&text, timed), Some(3.0), "{text}");
    // Health checks (the readiness watcher's own, clients') are not counted.
    assert!(!text.contains("grpc.health"), "{text}");
}

#[tokio::test]
async fn new_accounts_are_notified_by_email_only_and_get_full_claims() {
    let app = spawn_app().await;
    let keys = TokenKeys::new(&app.settings.auth).unwrap();
    let registered = app.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    let user = registered.user.clone().unwrap();
    assert_eq!(user.phone, "");
    assert_eq!(user.notification_preferences, prefs(true, false));
    assert_eq!(registered.refresh_token.len(), 64, "256 random bits, hex");

    let claims = keys.verify(&registered.access_token).unwrap();
    assert_eq!(claims.iss, app.settings.auth.issuer);
    assert_eq!((claims.iat, claims.nbf), (claims.exp - 900, claims.exp - 900));
    uuid::Uuid::parse_str(&claims.jti).expect("jti is a UUID");
    let again = app.login("ada@example.com", PASSWORD).await.unwrap();
    assert_ne!(keys.verify(&again.access_token).unwrap().jti, claims.jti);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_registrations_of_one_email_make_one_account() {
    // Room for all sixteen: this is about the unique email, not about overload.
    let app = spawn_app_with(|s| s.auth.hash_queue_per_slot = 16).await;
    let attempts = (0..16).map(|i| {
        let app = &app;
        async move { app.register(" Race@Example.com", PASSWORD, &format!("Racer {i}")).await }
    });
    let results = futures::future::join_all(attempts).await;

    let winners = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results.iter().filter(|r| matches!(r, Err(e) if e.code == ErrorCode::Conflict)).count();
    assert_eq!((winners, conflicts), (1, 15), "{results:?}");
    assert_eq!(app.stored_users().await, 1);
}

#[tokio::test]
async fn profiles_update_name_phone_and_preferences() {
    let app = spawn_app().await;
    let id = app.register("ada@example.com", PASSWORD, "Ada").await.unwrap().user.unwrap().id;
    let update = |name: Option<&str>, phone: Option<&str>, notify| pb::UpdateProfileRequest {
        id: id.clone(),
        name: name.map(str::to_owned),
        phone: phone.map(str::to_owned),
        notification_preferences: notify,
    };

    // SMS needs a phone number; a malformed number or no channel at all is refused.
    for (request, why) in [
        (update(None, None, prefs(true, true)), "sms without phone"),
        (update(None, Some("0151 1234"), None), "not E.164"),
        (update(None, Some("+4915112345678"), prefs(false, false)), "no channel"),
        (update(Some("  "), None, None), "blank name"),
    ] {
        assert_eq!(app.update_profile(request).await.unwrap_err().code, ErrorCode::BadUserInput, "{why}");
    }

    let updated = app
        .update_profile(update(Some("Ada Lovelace"), Some("+49 151 1234 5678"), prefs(false, true)))
        .await
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), updated.phone.as_str(), updated.notification_preferences),
        ("Ada Lovelace", "+4915112345678", prefs(false, true))
    );
    assert_eq!(app.get_user(&id).await.unwrap(), updated);

    // Unset fields keep their value; the phone cannot go while SMS depends on it.
    let renamed = app.update_profile(update(Some("Ada"), None, None)).await.unwrap();
    assert_eq!(
        (renamed.phone.as_str(), renamed.notification_preferences),
        ("+4915112345678", prefs(false, true))
    );
    let err = app.update_profile(update(None, Some(""), None)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BadUserInput);
    let cleared = app.update_profile(update(None, Some(""), prefs(true, false))).await.unwrap();
    assert_eq!((cleared.phone.as_str(), cleared.notification_preferences), ("", prefs(true, false)));

    let missing = update(None, None, None);
    let missing = pb::UpdateProfileRequest { id: uuid::Uuid::new_v4().to_string(), ..missing };
    assert_eq!(app.update_profile(missing).await.unwrap_err().code, ErrorCode::NotFound);
}

#[tokio::test]
async fn five_failed_logins_lock_the_email_even_for_the_right_password() {
    let app = spawn_app().await;
    app.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    app.register("grace@example.com", PASSWORD, "Grace").await.unwrap();

    for _ in 0..5 {
        let err = app.login("ada@example.com", "not the password").await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated);
    }
    let locked = app.login("ADA@example.com", PASSWORD).await.unwrap_err();
    assert_eq!(locked.code, ErrorCode::RateLimited);
    let retry_after: u64 = locked.metadata.get("retry_after_seconds").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");

    // The lock is per email, and unknown emails are counted the same way.
    app.login("grace@example.com", PASSWORD).await.unwrap();
    for _ in 0..5 {
        app.login("nobody@example.com", PASSWORD).await.unwrap_err();
    }
    assert_eq!(app.login("nobody@example.com", PASSWORD).await.unwrap_err().code, ErrorCode::RateLimited);
}

#[tokio::test]
async fn the_login_lock_lifts_when_the_window_passes() {
    let app = spawn_app_with(|s| {
        s.auth.login_max_failures = 2;
        s.auth.login_failure_window_seconds = 1;
    })
    .await;
    app.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    for _ in 0..2 {
        app.login("ada@example.com", "not the password").await.unwrap_err();
    }
    assert_eq!(app.login("ada@example.com", PASSWORD).await.unwrap_err().code, ErrorCode::RateLimited);

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match app.login("ada@example.com", PASSWORD).await {
            Ok(_) => break,
            Err(e) if e.code == ErrorCode::RateLimited && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("still locked at the deadline: {e}"),
        }
    }
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_family() {
    let app = spawn_app().await;
    let keys = TokenKeys::new(&app.settings.auth).unwrap();
    let first = app.register("ada@example.com", PASSWORD, "Ada").await.unwrap();

    let second = app.refresh(&first.refresh_token).await.unwrap();
    assert_ne!(second.refresh_token, first.refresh_token);
    assert_eq!(keys.verify(&second.access_token).unwrap().sub, first.user.as_ref().unwrap().id);
    let third = app.refresh(&second.refresh_token).await.unwrap();

    // Only hashes are stored.
    let tokens = &app.refresh_tokens;
    assert!(tokens.find_one(doc! { "_id": &third.refresh_token }).await.unwrap().is_none());
    assert_eq!(tokens.count_documents(doc! {}).await.unwrap(), 3);

    // Replaying the spent first token is theft: it fails and takes the live one down too.
    let reused = app.refresh(&first.refresh_token).await.unwrap_err();
    assert_eq!(reused.code, ErrorCode::Unauthenticated);
    assert_eq!(app.refresh(&third.refresh_token).await.unwrap_err().code, ErrorCode::Unauthenticated);
    assert_eq!(app.refresh("0".repeat(64).as_str()).await.unwrap_err().code, ErrorCode::Unauthenticated);

    // Another login starts a new family, unaffected.
    let other = app.login("ada@example.com", PASSWORD).await.unwrap();
    app.refresh(&other.refresh_token).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_of_one_token_succeed_once() {
    let app = spawn_app().await;
    let first = app.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    let attempts = (0..8).map(|_| app.refresh(&first.refresh_token));
    let results = futures::future::join_all(attempts).await;
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    // The losers replayed a spent token: the family is gone, the winner's new token too.
    let err = app.refresh(&winners[0].refresh_token).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
}

#[tokio::test]
async fn logout_denies_the_access_token_until_it_expires_and_revokes_the_family() {
    let app = spawn_app().await;
    let keys = TokenKeys::new(&app.settings.auth).unwrap();
    let session = app.register("ada@example.com", PASSWORD, "Ada").await.unwrap();
    let claims = keys.verify(&session.access_token).unwrap();

    app.logout(&session).await.unwrap();

    let key = marquee_auth::denied_jti_key(&app.settings.redis.key_prefix, &claims.jti);
    let mut redis = app.redis().await;
    let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut redis).await.unwrap();
    let remaining = claims.exp - chrono::Utc::now().timestamp();
    assert!(ttl >= remaining && ttl <= remaining + 10, "ttl {ttl}, token lives {remaining}s more");
    assert_eq!(app.refresh(&session.refresh_token).await.unwrap_err().code, ErrorCode::Unauthenticated);

    // Someone else's refresh token cannot be revoked with my access token.
    let grace = app.register("grace@example.com", PASSWORD, "Grace").await.unwrap();
    let mine = app.login("ada@example.com", PASSWORD).await.unwrap();
    let crossed = pb::AuthResponse { refresh_token: grace.refresh_token.clone(), ..mine };
    assert_eq!(app.logout(&crossed).await.unwrap_err().code, ErrorCode::Unauthenticated);
    app.refresh(&grace.refresh_token).await.unwrap();
    let garbage = pb::AuthResponse { access_token: "not.a.jwt".into(), ..grace };
    assert_eq!(app.logout(&garbage).await.unwrap_err().code, ErrorCode::Unauthenticated);
}

#[tokio::test]
async fn the_bootstrap_admin_is_idempotent_and_only_admins_set_roles() {
    let admin_email = "root@example.com";
    let configure = |s: &mut Settings| {
        s.user.bootstrap_admin_email = Some(admin_email.to_owned());
        s.user.bootstrap_admin_password = Some(marquee_kit::Secret::new("bootstrap password".to_owned()));
    };
    let app = spawn_app_with(configure).await;
    // A second start on the same database changes nothing.
    let mut again = app.settings.clone();
    configure(&mut again);
    marquee_user::Application::build(again).await.unwrap();
    assert_eq!(app.users.count_documents(doc! { "email": admin_email }).await.unwrap(), 1);

    let admin = app.login(admin_email, "bootstrap password").await.unwrap().user.unwrap();

    // An account someone registered under the configured email with their own password
    // is not promoted when that email is configured later.
    let squatter = app.register("boss@example.com", PASSWORD, "Not the boss").await.unwrap().user.unwrap();
    let mut later = app.settings.clone();
    later.user.bootstrap_admin_email = Some("boss@example.com".to_owned());
    later.user.bootstrap_admin_password = Some(marquee_kit::Secret::new("the real boss password".to_owned()));
    marquee_user::Application::build(later).await.unwrap();
    assert_eq!(app.get_user(&squatter.id).await.unwrap().role(), pb::Role::Customer);
    assert_eq!(admin.role(), pb::Role::Admin);
    let ada = app.register("ada@example.com", PASSWORD, "Ada").await.unwrap().user.unwrap();
    let grace = app.register("grace@example.com", PASSWORD, "Grace").await.unwrap().user.unwrap();

    let err = app.set_role(&ada.id, &ada.id, pb::Role::Admin).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    let staff = app.set_role(&admin.id, &ada.id, pb::Role::Staff).await.unwrap();
    assert_eq!(staff.role(), pb::Role::Staff);
    // Staff is not admin either; the role is read from the database, not a token.
    let err = app.set_role(&ada.id, &grace.id, pb::Role::Staff).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Forbidden);
    let err = app.set_role(&admin.id, &uuid::Uuid::new_v4().to_string(), pb::Role::Staff).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound);
    let err = app.set_role(&admin.id, &ada.id, pb::Role::Unspecified).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BadUserInput);

    // The next refreshed access token carries the new role.
    let session = app.login("ada@example.com", PASSWORD).await.unwrap();
    let keys = TokenKeys::new(&app.settings.auth).unwrap();
    assert_eq!(
        keys.verify(&app.refresh(&session.refresh_token).await.unwrap().access_token).unwrap().role,
        Role::Staff
    );
}

/// One argon2id hash with the service's parameters, timed on a blocking thread as the
/// service runs it.
async fn one_hash_time(auth: &marquee_auth::AuthSettings) -> std::time::Duration {
    use argon2::password_hash::PasswordHasher;
    let params =
        argon2::Params::new(auth.argon2_memory_kib, auth.argon2_iterations, auth.argon2_parallelism, None)
            .unwrap();
    let argon2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        argon2.hash_password(PASSWORD.as_bytes()).unwrap();
        started.elapsed()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_overload_of_registrations_is_refused_at_once_and_a_refusal_changes_nothing() {
    let app = spawn_app_with(|s| {
        // One hash at a time, two waiting. RFC 9106's second recommended cost (64 MiB,
        // 3 passes): one hash keeps the slot busy while the rest arrive, and is long
        // next to a refusal's round trip through a debug-built gRPC stack.
        s.auth.hash_concurrency = 1;
        s.auth.hash_queue_per_slot = 2;
        s.auth.argon2_memory_kib = 65536;
        s.auth.argon2_iterations = 3;
        // Whoever got a queue place runs; only the bound refuses here (the wait limit
        // has its own unit test).
        s.auth.hash_max_wait_ms = 60_000;
    })
    .await;
    let hash_time = one_hash_time(&app.settings.auth).await;

    let calls = (0..64).map(|i| {
        let mut client = app.client.clone();
        async move {
            let email = format!("fan{i}@example.com");
            let request = pb::RegisterRequest {
                email: email.clone(),
                password: PASSWORD.into(),
                name: format!("Fan {i}"),
                ..Default::default()
            };
            let started = std::time::Instant::now();
            let result = client.register(request).await;
            (email, result, started.elapsed())
        }
    });
    let outcomes = futures::future::join_all(calls).await;

    let (mut registered, mut refused, mut refusal_times) = (Vec::new(), Vec::new(), Vec::new());
    for (email, result, took) in outcomes {
        match result {
            Ok(_) => registered.push(email),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                let info = status.get_details_error_info().expect("an ErrorInfo");
                assert_eq!(info.reason, "SERVICE_BUSY");
                assert_eq!(info.metadata.get("retry_after_seconds").map(String::as_str), Some("1"));
                let retry = status.get_details_retry_info().and_then(|r| r.retry_delay);
                assert_eq!(retry, Some(std::time::Duration::from_secs(1)));
                refused.push(email);
                refusal_times.push(took);
            }
        }
    }
    refusal_times.sort();
    eprintln!(
        "one hash {hash_time:?}; {} registered, {} refused; refusal median {:?}, max {:?}",
        registered.len(),
        refused.len(),
        refusal_times.get(refusal_times.len() / 2),
        refusal_times.last()
    );
    assert!(!registered.is_empty() && !refused.is_empty(), "{} registered", registered.len());
    // Refused without waiting for anyone's hash.
    for took in &refusal_times {
        assert!(*took < hash_time / 2, "a refusal took {took:?}; one hash takes {hash_time:?}");
    }

    for email in &registered {
        assert_eq!(app.users.count_documents(doc! { "email": email }).await.unwrap(), 1, "{email}");
    }
    for email in &refused {
        assert_eq!(app.users.count_documents(doc! { "email": email }).await.unwrap(), 0, "{email}");
    }
    let registered_count = u64::try_from(registered.len()).unwrap();
    assert_eq!(app.stored_users().await, registered_count);
    assert_eq!(app.refresh_tokens.count_documents(doc! {}).await.unwrap(), registered_count);

    // Once the rush is over, a refused registration goes through as it is.
    let retried = app.register(&refused[0], PASSWORD, "Fan again").await.unwrap();
    assert_eq!(retried.user.unwrap().email, refused[0]);
}
