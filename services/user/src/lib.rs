//! The user service: owns accounts and refresh tokens (MongoDB database `<prefix>_user`),
//! hashes and verifies passwords with argon2id, and issues the access tokens every other
//! hop verifies. Talks to MongoDB and Redis (failed-login counts, the logout denylist);
//! its callers are the gateway, booking and notification.

pub mod domain;
mod password;
mod pool;
mod service;
pub mod settings;
mod startup;
mod store;
mod throttle;
mod tokens;

pub use settings::Settings;

pub use startup::Application;
