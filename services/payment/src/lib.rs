//! The payment service: a simulated card processor with idempotent charges. Owns the
//! `payments` collection (MongoDB database `<prefix>_payment`), where every payment
//! keeps its state history. Talks to nothing but MongoDB; booking is its caller.

pub mod domain;
mod processor;
mod service;
mod startup;
mod store;

pub use startup::Application;
