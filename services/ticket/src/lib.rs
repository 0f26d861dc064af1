//! The ticket service: one ticket per seat of a confirmed booking, each with a
//! self-verifying code (Ed25519, `codec`), check-in at the door (exactly one
//! admission per ticket, idempotent per scan nonce) and revocation when the booking
//! is cancelled. Owns MongoDB `<prefix>_ticket`; issues when the notification worker
//! asks (`IssueTicketsBatch`) and, behind it, for the confirmations it finds in
//! booking's event log; consumes `booking.cancelled` from RabbitMQ; asks cinema for
//! showtime times; the gateway is its caller. Also the offline scanner's verification
//! (`codec`, `keys`).

pub mod codec;
mod consumer;
pub mod domain;
mod issue;
pub mod keys;
pub mod offline;
mod reconcile;
mod service;
pub mod settings;
mod startup;
mod store;

pub use settings::Settings;

pub use startup::Application;
