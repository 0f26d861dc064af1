//! The cinema service: the catalog (movies, cinemas, screens, showtimes), seat maps
//! and seat holds, over gRPC (`marquee.cinema.v1.CinemaService`). It owns the
//! PostgreSQL database and talks to nothing else; the booking service drives holds.
//!
//! Holds never oversell: each lock, confirm or release is one SQL function call that
//! row-locks the seats in a fixed order and changes all of them or none. An expired
//! hold counts as free the moment it expires, whether or not anything released it.

mod api;
mod board;
mod catalog;
mod changes;
mod domain;
mod error;
mod seating;
pub mod settings;
mod startup;
mod store;
mod turns;

pub use settings::Settings;

pub use startup::Application;
