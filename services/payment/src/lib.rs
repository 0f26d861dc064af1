//! The payment service: a simulated card processor with idempotent charges and
//! refunds. Owns the `payments` collection (MongoDB database `<prefix>_payment`),
//! where every payment keeps its attempts, state history, refunds and outbox.
//! Talks to MongoDB, and to RabbitMQ through the outbox relay (`payment.succeeded`,
//! `payment.refunded`); booking is its caller.

pub mod domain;
mod events;
mod processor;
mod service;
pub mod settings;
mod startup;
mod store;

pub use settings::Settings;

pub use startup::Application;
