//! The mesh test harness: starts the Marquee mesh in-process (user, cinema, payment,
//! booking, ticket, notification and the gateway, each on a random port, or the part a test
//! chooses) against the real PostgreSQL, MongoDB-wire server, Redis and RabbitMQ,
//! isolated per mesh, and talks to it the way clients do: GraphQL over HTTP. Used by
//! the end-to-end tests here, the gateway's and booking's tests, and the benchmarks.

mod mesh;
mod settings;

use anyhow::Context;
use serde_json::Value;

pub use mesh::{Mesh, MeshBuilder, Service};
pub use settings::MeshSettings;

/// A GraphQL response body.
#[derive(Debug)]
pub struct Gql(pub Value);

impl Gql {
    /// The `data` object, or an error carrying the GraphQL errors.
    pub fn data(&self) -> anyhow::Result<&Value> {
        if let Some(errors) = self.0.get("errors") {
            anyhow::bail!("GraphQL errors: {errors}");
        }
        self.0.get("data").context("response has neither data nor errors")
    }

    /// `extensions.code` of the first error, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.0.get("errors")?.get(0)?.get("extensions")?.get("code")?.as_str()
    }

    pub fn first_error(&self) -> Option<&Value> {
        self.0.get("errors")?.get(0)
    }
}
