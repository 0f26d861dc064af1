//! Subscriptions shared by every subscriber that sent the same request: one execution
//! and one JSON encoding per update, whatever the number of subscribers.
//!
//! A rush is thousands of people watching one showtime's seat map with the same
//! document (the web app's). Run per subscriber, as async-graphql's WebSocket protocol
//! does, every seat change is resolved and serialized once per subscriber: that work,
//! not the sockets, was what kept changes seconds late. Here the subscribers of one
//! request (document, variables and operation name alike) are the members of a group:
//! the group executes the request once, encodes each response once, and each member
//! writes those bytes into its own `next` message. (`http::ws` decides which
//! subscriptions come here and speaks the protocol.)
//!
//! A member that falls more than `BACKLOG` updates behind is sent the group's resync
//! update (the request run once on a feed that only says "resync", encoded once), then
//! continues with the oldest update still buffered: as with `crate::live`, the client
//! reloads the seat map instead of the gateway buffering without bound.

use std::sync::Arc;
use std::time::Duration;

use async_graphql::futures_util::{FutureExt as _, StreamExt as _};
use async_graphql::{Request, Response, Variables};
use tokio::sync::{OnceCell, broadcast, watch};
use tokio::task::AbortHandle;

use crate::live::{ConnectionQuota, SeatFeeds};
use crate::metrics::Metrics;
use crate::schema::GatewaySchema;
use crate::shared_task::{Claim, SharedTasks};

/// Updates a member may fall behind before it is told to resync; the buffer is the
/// group's, shared by its members (each update is one `Arc<str>`).
const BACKLOG: usize = 256;

/// Request data of a shared execution: the resolver must not count it as a
/// subscriber (the members are counted) and reports through `opened` once the
/// upstream stream is open, so that a member counts as subscribed only from then on.
#[derive(Clone)]
pub struct SharedExecution {
    pub opened: watch::Sender<bool>,
}

/// Request data asking the subscription resolver for one resync update and nothing
/// else, so the group can encode a resync in its members' selection set.
#[derive(Clone, Copy)]
pub struct ResyncOnly;

/// What a group sends its members.
#[derive(Clone, Debug)]
enum Update {
    /// A response, encoded: the `payload` of a `next` message.
    Next(Arc<str>),
    /// The subscription is over: the member sends `complete`.
    End,
}

/// Cheap to clone; clones share the groups.
#[derive(Clone)]
pub struct SharedSubscriptions {
    inner: Arc<Inner>,
}

struct Inner {
    schema: GatewaySchema,
    feeds: SeatFeeds,
    metrics: Metrics,
    /// The shortest time between two rounds of one group's updates.
    pace: Duration,
    groups: SharedTasks<Key, Arc<Group>>,
}

/// What makes two subscribe requests the same subscription.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    query: String,
    /// Serialized: variables compare as their JSON text.
    variables: String,
    operation_name: Option<String>,
}

struct Group {
    updates: broadcast::Sender<Update>,
    opened: watch::Receiver<bool>,
    request: (String, Variables, Option<String>),
    resync: OnceCell<Arc<str>>,
}

impl SharedSubscriptions {
    pub fn new(schema: GatewaySchema, feeds: SeatFeeds, metrics: Metrics, pace: Duration) -> Self {
        let inner = Inner { schema, feeds, metrics, pace, groups: SharedTasks::new() };
        Self { inner: Arc::new(inner) }
    }

    /// Joins the group of `request`'s subscription, starting it if nobody runs it yet.
    /// Only `query`, `variables` and `operation_name` of the request count; the
    /// execution gets none of the connection's data, so only subscriptions that do
    /// not depend on who is watching may be shared.
    pub fn join(&self, request: &Request) -> Member {
        let key = Key {
            query: request.query.clone(),
            variables: serde_json::to_string(&request.variables).unwrap_or_default(),
            operation_name: request.operation_name.clone(),
        };
        let ((updates, group), claim, groups) = self.inner.groups.join(
            key.clone(),
            |generation| self.start(key, generation, request),
            |group| (group.updates.subscribe(), group.clone()),
        );
        self.inner.metrics.shared_subscriptions.set(groups as f64);
        Member {
            updates,
            opened: group.opened.clone(),
            group,
            inner: self.inner.clone(),
            claim,
            opening: true,
            counted: false,
        }
    }

    fn start(&self, key: Key, generation: u64, request: &Request) -> (Arc<Group>, AbortHandle) {
        let (updates, _) = broadcast::channel(BACKLOG);
        let (opened_tx, opened) = watch::channel(false);
        let request = (request.query.clone(), request.variables.clone(), request.operation_name.clone());
        let group = Arc::new(Group { updates, opened, request, resync: OnceCell::new() });
        let execution = group.request(&self.inner).data(SharedExecution { opened: opened_tx });
        let task = tokio::spawn(run(self.inner.clone(), key, generation, group.clone(), execution));
        (group, task.abort_handle())
    }
}

impl Inner {
    /// Ends the group if it is still this generation's: removed first, so a request
    /// arriving now starts afresh, then `last` (if any) and the end are sent, under the
    /// lock, so every member that joined gets them.
    fn finish(&self, key: &Key, generation: u64, group: &Group, last: Option<Arc<str>>) {
        self.groups.finish(key, generation, |groups| {
            self.metrics.shared_subscriptions.set(groups as f64);
            // Nobody listening is fine; `send` only fails then.
            if let Some(payload) = last {
                let _ = group.updates.send(Update::Next(payload));
            }
            let _ = group.updates.send(Update::End);
        });
    }
}

impl Group {
    /// The group's request with what every execution of it needs.
    fn request(&self, inner: &Inner) -> Request {
        let (query, variables, operation_name) = &self.request;
        let mut request = Request::new(query.clone()).variables(variables.clone());
        if let Some(name) = operation_name {
            request = request.operation_name(name.clone());
        }
        // The connection's quota was charged for each member; the execution is one.
        request.data(inner.feeds.clone()).data(ConnectionQuota::new(usize::MAX))
    }

    /// The resync update in this group's selection set, built once.
    async fn resync(&self, inner: &Inner) -> Arc<str> {
        let build = async {
            let request = self.request(inner).data(ResyncOnly);
            let mut responses = inner.schema.execute_stream(request);
            match responses.next().await {
                Some(response) => encode(&response),
                None => encode(&Response::from_errors(vec![async_graphql::ServerError::new(
                    "the subscription ended",
                    None,
                )])),
            }
        };
        self.resync.get_or_init(|| build).await.clone()
    }
}

/// The one execution of a group: every response encoded once and sent to the
/// members. A response with errors ends the subscription, as a subscription stream
/// that fails does.
///
/// Rounds are paced: after a round, the group waits `pace` before it takes more, then
/// sends whatever is ready at once. Each round costs one message per member, so
/// during a rush the pace, not the rate of seat changes, sets the fan-out's cost.
async fn run(inner: Arc<Inner>, key: Key, generation: u64, group: Arc<Group>, request: Request) {
    let mut responses = inner.schema.execute_stream(request);
    'rounds: while let Some(first) = responses.next().await {
        let mut next = Some(first);
        while let Some(response) = next {
            let payload = encode(&response);
            if response.is_err() {
                inner.finish(&key, generation, &group, Some(payload));
                return;
            }
            let _ = group.updates.send(Update::Next(payload));
            next = match responses.next().now_or_never() {
                Some(Some(response)) => Some(response),
                Some(None) => break 'rounds,
                None => None,
            };
        }
        tokio::time::sleep(inner.pace).await;
    }
    inner.finish(&key, generation, &group, None);
}

fn encode(response: &Response) -> Arc<str> {
    // A `Response` is plain data; serializing it cannot fail.
    serde_json::to_string(response).unwrap_or_else(|_| "{}".to_owned()).into()
}

/// One subscriber of a group; dropping it leaves the group, and the last member
/// leaving stops the execution.
pub struct Member {
    updates: broadcast::Receiver<Update>,
    opened: watch::Receiver<bool>,
    group: Arc<Group>,
    inner: Arc<Inner>,
    claim: Claim<Key>,
    /// Still waiting for the upstream stream to open.
    opening: bool,
    /// Counted in the active-subscriptions gauge (once the upstream stream is open).
    counted: bool,
}

impl Member {
    /// The `payload` of the next `next` message; `None` once the subscription is over.
    pub async fn next(&mut self) -> Option<Arc<str>> {
        loop {
            let (opened, updates) = (&mut self.opened, &mut self.updates);
            let update = tokio::select! {
                // Changes committed after the upstream stream opened reach every
                // member, so that is when a member counts as subscribed.
                opened = async { opened.wait_for(|open| *open).await.is_ok() }, if self.opening => {
                    Err(opened)
                }
                update = updates.recv() => Ok(update),
            };
            return match update {
                Err(opened) => {
                    self.opening = false;
                    // Not opened: the execution ended without opening; its end follows.
                    if opened {
                        self.counted = true;
                        self.inner.metrics.subscriptions.increment(1.0);
                    }
                    continue;
                }
                Ok(Ok(Update::Next(payload))) => Some(payload),
                Ok(Ok(Update::End) | Err(broadcast::error::RecvError::Closed)) => None,
                // The receiver skips ahead to the oldest update still buffered.
                Ok(Err(broadcast::error::RecvError::Lagged(_))) => Some(self.group.resync(&self.inner).await),
            };
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.counted {
            self.inner.metrics.subscriptions.decrement(1.0);
        }
        let groups = self.inner.groups.leave(&self.claim);
        self.inner.metrics.shared_subscriptions.set(groups as f64);
    }
}

#[cfg(test)]
mod tests {
    use marquee_kit::Config as _;

    use super::*;
    use crate::upstream::Upstreams;

    const SHOWTIME: &str = "00000000-0000-4000-8000-000000000000";

    /// A group of `request` with a buffer of `backlog` updates and no execution, and
    /// one member of it (a member of no group in the map: leaving touches nothing).
    fn group_and_member(request: &Request, backlog: usize) -> (Arc<Group>, Member) {
        let settings = crate::Settings::for_tests().unwrap();
        let metrics = Metrics::new().unwrap();
        let schema = crate::schema::build(Upstreams::connect(&settings).unwrap());
        let feeds = SeatFeeds::new(&settings, metrics.clone()).unwrap();
        let shared = SharedSubscriptions::new(schema, feeds, metrics, Duration::ZERO);
        let (updates, _) = broadcast::channel(backlog);
        let (_, opened) = watch::channel(false);
        let request = (request.query.clone(), request.variables.clone(), request.operation_name.clone());
        let group = Arc::new(Group { updates, opened, request, resync: OnceCell::new() });
        let member = Member {
            updates: group.updates.subscribe(),
            opened: group.opened.clone(),
            group: group.clone(),
            inner: shared.inner.clone(),
            claim: Claim::detached(Key {
                query: String::new(),
                variables: String::new(),
                operation_name: None,
            }),
            opening: false,
            counted: false,
        };
        (group, member)
    }

    #[tokio::test]
    async fn a_member_that_falls_behind_gets_a_resync_in_its_selection_then_the_oldest_buffered() {
        let query =
            "subscription($id: ID!) { seatMap(showtimeId: $id) { id: showtimeId resync change { seatId } } }";
        let variables = Variables::from_json(serde_json::json!({ "id": SHOWTIME }));
        let (group, mut member) = group_and_member(&Request::new(query).variables(variables), 2);

        for update in ["1", "2", "3"] {
            group.updates.send(Update::Next(update.into())).unwrap();
        }
        let resync = member.next().await.unwrap();
        let resync: serde_json::Value = serde_json::from_str(&resync).unwrap();
        assert_eq!(
            resync,
            serde_json::json!({ "data": { "seatMap": { "id": SHOWTIME, "resync": true, "change": null } } })
        );
        assert_eq!(member.next().await.as_deref(), Some("2"));
        assert_eq!(member.next().await.as_deref(), Some("3"));
        group.updates.send(Update::End).unwrap();
        assert_eq!(member.next().await, None, "the group ended");
    }
}
