//! The user service: owns accounts (MongoDB database `<prefix>_user`), hashes and
//! verifies passwords with argon2id, and issues the access tokens every other hop
//! verifies. Talks to nothing but MongoDB; its callers are the gateway and booking.

pub mod domain;
mod password;
mod service;
mod startup;
mod store;

pub use startup::Application;
