//! The public GraphQL schema (DESIGN.md "Public GraphQL contract"): the roots, the
//! per-request extension (trace context, loader cache), who is calling, and what every
//! resolver reads. The output types over the upstream messages live by domain in
//! `catalog`, `seats`, `bookings` and `account`; nested fields that need another
//! service (a showtime's movie, a user's bookings) are resolved only when selected.

mod account;
mod bookings;
mod catalog;
mod mutation;
mod pagination;
mod query;
mod seats;
mod subscription;
mod tickets;
mod values;

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextPrepareRequest,
};
use async_graphql::{Context, Schema, ServerResult};
use marquee_auth::{Claims, Role};
use marquee_kit::Secret;

use crate::denylist::Session;
use crate::domain::UserId;
use crate::error::GatewayError;
use crate::trace::TraceContext;
use crate::upstream::{RequestCache, Upstreams};

pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::SubscriptionRoot;
pub use tickets::TicketKey;

pub type GatewaySchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Deep enough for `me { bookings { showtime { seatMap { seats { price { amount } } } } } }`
/// with room for fragments; deeper documents are abuse, not clients.
const MAX_DEPTH: usize = 12;
/// Every selected field costs 1; the largest legitimate page asks for ~100 fields.
const MAX_COMPLEXITY: usize = 500;

/// Introspection nests deeper than any data query: graphql-js's standard
/// `getIntrospectionQuery` (GraphiQL, graphql-codegen, Postman, schemathesis) reaches
/// depth 15 through nine `ofType` levels. Introspection reads only the schema, never
/// an upstream, so this bound only stops absurd documents.
const MAX_INTROSPECTION_DEPTH: usize = 20;

pub fn build(upstreams: Upstreams) -> GatewaySchema {
    build_with_depth(upstreams, MAX_DEPTH)
}

/// The same schema for documents that select nothing but introspection (see
/// `http::graphql`), with room for the standard introspection query's depth. It runs
/// them in introspection-only mode, so no resolver of ours is reached through it.
pub fn build_for_introspection(upstreams: Upstreams) -> GatewaySchema {
    build_with_depth(upstreams, MAX_INTROSPECTION_DEPTH)
}

fn build_with_depth(upstreams: Upstreams, depth: usize) -> GatewaySchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .data(upstreams)
        .limit_depth(depth)
        .limit_complexity(MAX_COMPLEXITY)
        .extension(Tracing)
        .finish()
}

/// Gives every request its span (W3C Trace Context): the one the HTTP layer made the
/// child of an incoming `traceparent`, or the root of a new trace. Resolvers stamp it
/// on every upstream call, so one request is one trace. Also gives every request its
/// loader cache when the transport did not.
struct Tracing;

impl ExtensionFactory for Tracing {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Tracing)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Tracing {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: async_graphql::Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<async_graphql::Request> {
        let has = |data: &async_graphql::Data, id: std::any::TypeId| data.contains_key(&id);
        if !has(&request.data, std::any::TypeId::of::<TraceContext>()) {
            request.data.insert(TraceContext::root());
        }
        // Operations over WebSocket get no per-request data from the HTTP layer; each
        // still needs its own loader cache (one per connection would serve stale data).
        if !has(&request.data, std::any::TypeId::of::<RequestCache>()) {
            request.data.insert(RequestCache::default());
        }
        next.run(ctx, request).await
    }

    /// The operation runs in the request's span: its logs (an internal error, above
    /// all) carry the trace id, so they can be found next to the upstream services'
    /// records of the same trace.
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        use tracing::Instrument as _;
        let span = ctx.data_opt::<TraceContext>().map_or_else(tracing::Span::none, |t| t.span().clone());
        next.run(ctx, operation_name).instrument(span).await
    }
}

/// Who is calling: set per request from a verified access token.
#[derive(Clone, Debug)]
pub struct Viewer(Option<Identity>);

#[derive(Clone, Debug)]
pub struct Identity {
    pub user_id: UserId,
    /// From the verified token: a role change applies from the next token on.
    pub role: Role,
    /// Forwarded to the user service on logout, which denies its `jti`.
    pub access_token: Secret<String>,
    /// The token to this gateway's denylist, which a logout here updates at once.
    pub session: Session,
}

impl Viewer {
    pub fn anonymous() -> Self {
        Self(None)
    }

    /// The claims were verified by `TokenKeys::verify`; `sub` is the user id. `None`
    /// when it is not one (a token our key signed for something else).
    pub fn from_claims(claims: Claims, token: &str, session: Session) -> Option<Self> {
        let user_id = UserId::parse(&claims.sub).ok()?;
        let access_token = Secret::new(token.to_owned());
        Some(Self(Some(Identity { user_id, role: claims.role, access_token, session })))
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.0.as_ref()
    }

    pub fn require(&self) -> Result<&Identity, GatewayError> {
        self.identity().ok_or_else(GatewayError::unauthenticated)
    }

    /// UNAUTHENTICATED for anonymous callers, FORBIDDEN unless the token says ADMIN.
    pub fn require_admin(&self) -> Result<&Identity, GatewayError> {
        let identity = self.require()?;
        if !identity.is_admin() {
            return Err(GatewayError::Forbidden("this operation needs the ADMIN role"));
        }
        Ok(identity)
    }
}

impl Identity {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Request-scoped values every resolver reads.
pub(crate) struct Scope<'a> {
    /// Stamped with the request's trace context.
    pub upstreams: Upstreams,
    pub cache: &'a RequestCache,
    pub viewer: &'a Viewer,
}

pub(crate) fn scope<'a>(ctx: &Context<'a>) -> Result<Scope<'a>, GatewayError> {
    // Missing data is a wiring bug in this crate, never the client's fault.
    let missing = |e: async_graphql::Error| GatewayError::Unexpected(anyhow::anyhow!("{}", e.message));
    let trace = ctx.data::<TraceContext>().map_err(missing)?;
    Ok(Scope {
        upstreams: ctx.data::<Upstreams>().map_err(missing)?.traced(trace.clone()),
        cache: ctx.data::<RequestCache>().map_err(missing)?,
        viewer: ctx.data::<Viewer>().map_err(missing)?,
    })
}

/// A lookup by id answers `null` for an unknown id, as the nullable field promises.
pub(crate) fn found<T>(result: Result<T, GatewayError>) -> Result<Option<T>, GatewayError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use marquee_kit::Config as _;

    use super::*;

    /// A query over WebSocket comes with connection data only (the viewer); the
    /// schema supplies the per-operation trace context and loader cache itself.
    #[tokio::test]
    async fn an_operation_without_per_request_data_still_resolves() {
        let settings = crate::Settings::for_tests().unwrap();
        let schema = build(Upstreams::connect(&settings).unwrap());
        let request = async_graphql::Request::new("{ me { id } }").data(Viewer::anonymous());
        let response = schema.execute(request).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        assert_eq!(response.data.to_string(), "{me: null}");
    }

    /// `gateway/schema.graphql` is what the web app's typed operations are generated
    /// from (`npm run codegen` in web/); it must be the schema the gateway serves.
    /// `UPDATE_SCHEMA=1 cargo nextest run -p marquee-gateway committed_sdl` rewrites it.
    #[tokio::test]
    async fn the_committed_sdl_is_the_served_schema() {
        let settings = crate::Settings::for_tests().unwrap();
        let sdl = build(Upstreams::connect(&settings).unwrap()).sdl();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &sdl).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == sdl,
            "gateway/schema.graphql differs from the served schema: run \
             `UPDATE_SCHEMA=1 cargo nextest run -p marquee-gateway committed_sdl`, then \
             `npm run codegen` in web/, and commit both"
        );
    }

    /// The names clients and acceptance tests rely on (DESIGN.md) must not drift.
    #[tokio::test]
    async fn the_sdl_keeps_the_public_contract() {
        let settings = crate::Settings::for_tests().unwrap();
        let sdl = build(Upstreams::connect(&settings).unwrap()).sdl();
        for line in [
            "type Query {",
            "movies(search: String, first: Int, after: String): MovieConnection!",
            "movie(id: ID!): Movie",
            "cinemas(city: String): [Cinema!]!",
            "showtimes(movieId: ID, cinemaId: ID, date: Date): [Showtime!]!",
            "showtime(id: ID!): Showtime",
            "me: User",
            "booking(id: ID!): Booking",
            "type Mutation {",
            "register(input: RegisterInput!): AuthPayload!",
            "login(input: LoginInput!): AuthPayload!",
            "holdSeats(input: HoldSeatsInput!): Booking!",
            "payBooking(input: PayBookingInput!): Booking!",
            "refreshToken(refreshToken: String!): AuthPayload!",
            "logout(refreshToken: String!): Boolean!",
            "updateProfile(input: UpdateProfileInput!): User!",
            "setUserRole(userId: ID!, role: Role!): User!",
            "cancelBooking(id: ID!, reason: String): Booking!",
            "createMovie(input: CreateMovieInput!): Movie!",
            "createCinema(input: CreateCinemaInput!): Cinema!",
            "createScreen(input: CreateScreenInput!): Screen!",
            "createShowtime(input: CreateShowtimeInput!): Showtime!",
            "blockSeats(showtimeId: ID!, seatIds: [ID!]!): [ID!]!",
            "unblockSeats(showtimeId: ID!, seatIds: [ID!]!): [ID!]!",
            "suggestSeats(showtimeId: ID!, count: Int!, category: String, accessible: Boolean): [Seat!]!",
            "bookings(first: Int, after: String, statuses: [BookingStatus!]): BookingConnection!",
            "notifications(first: Int, after: String): NotificationConnection!",
            "scalar Date",
            "seatMap: SeatMap!",
            "amount: Int!",
        ] {
            assert!(sdl.contains(line), "missing `{line}` in\n{sdl}");
        }
    }
}
