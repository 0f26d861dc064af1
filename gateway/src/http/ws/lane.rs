//! The connection's subscriptions served from shared executions (`crate::fanout`):
//! `route` takes a `graphql-transport-ws` `subscribe` of a subscription operation (and
//! its `complete`) out of what async-graphql reads, joins the request's group and
//! spawns a task that writes the group's encoded updates into this connection's `next`
//! messages. Everything else passes through to async-graphql unchanged, which also
//! answers what the lane declines: malformed documents, a subscribe before the
//! handshake, a full connection quota (each with the error it always gave).

use std::collections::HashMap;

use async_graphql::Request;
use async_graphql::http::ClientMessage;
use async_graphql::parser::types::{DocumentOperations, OperationType};
use axum::extract::ws::Message;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::fanout::{Member, SharedSubscriptions};
use crate::live::ConnectionQuota;

pub struct Lane {
    shared: SharedSubscriptions,
    quota: ConnectionQuota,
    out: mpsc::Sender<Message>,
    /// Whether async-graphql has written `connection_ack`: no update goes before it.
    acknowledged: watch::Receiver<bool>,
    /// The connection speaks `graphql-transport-ws`; the legacy `graphql-ws` names its
    /// messages differently and stays with async-graphql.
    modern: bool,
    /// The client sent `connection_init`; before it, async-graphql refuses subscribes.
    initialised: bool,
    /// The lane's subscriptions by the client's id.
    members: HashMap<String, AbortHandle>,
}

impl Lane {
    pub fn new(
        shared: SharedSubscriptions,
        quota: ConnectionQuota,
        out: mpsc::Sender<Message>,
        acknowledged: watch::Receiver<bool>,
        modern: bool,
    ) -> Self {
        Self { shared, quota, out, acknowledged, modern, initialised: false, members: HashMap::new() }
    }

    /// `None` when the lane took the message; otherwise the message, for async-graphql.
    pub fn route(&mut self, message: Result<Message, axum::Error>) -> Option<Result<Message, axum::Error>> {
        if !self.modern {
            return Some(message);
        }
        let Ok(Message::Text(text)) = &message else { return Some(message) };
        let Ok(client) = serde_json::from_str::<ClientMessage>(text.as_str()) else { return Some(message) };
        match client {
            ClientMessage::ConnectionInit { .. } => {
                self.initialised = true;
                Some(message)
            }
            ClientMessage::Start { id, payload } if self.initialised => {
                if self.subscribe(id, &payload) {
                    None
                } else {
                    Some(message)
                }
            }
            ClientMessage::Stop { id } => match self.members.remove(&id) {
                // The client stopped listening: nothing more is sent for it, not even
                // `complete` (graphql-transport-ws).
                Some(task) => {
                    task.abort();
                    None
                }
                None => Some(message),
            },
            _ => Some(message),
        }
    }

    /// Takes the subscribe when it is a subscription the connection has room for.
    fn subscribe(&mut self, id: String, request: &Request) -> bool {
        if !is_subscription(request) {
            return false;
        }
        self.members.retain(|_, task| !task.is_finished());
        // A reused id replaces its subscription, as async-graphql does.
        if let Some(previous) = self.members.remove(&id) {
            previous.abort();
        }
        let Some(slot) = self.quota.take() else { return false };
        let member = self.shared.join(request);
        let task =
            tokio::spawn(deliver(member, id.clone(), self.out.clone(), self.acknowledged.clone(), slot));
        self.members.insert(id, task.abort_handle());
        true
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        for task in self.members.values() {
            task.abort();
        }
    }
}

/// Writes the member's updates as `next` messages of subscription `id`, then
/// `complete` when the group ends. Holds the connection's quota slot while it runs.
async fn deliver(
    mut member: Member,
    id: String,
    out: mpsc::Sender<Message>,
    mut acknowledged: watch::Receiver<bool>,
    _slot: crate::live::QuotaSlot,
) {
    if acknowledged.wait_for(|acked| *acked).await.is_err() {
        return;
    }
    let id = serde_json::Value::String(id).to_string();
    let prefix = format!(r#"{{"type":"next","id":{id},"payload":"#);
    while let Some(payload) = member.next().await {
        let mut text = String::with_capacity(prefix.len() + payload.len() + 1);
        text.push_str(&prefix);
        text.push_str(&payload);
        text.push('}');
        if out.send(Message::Text(text.into())).await.is_err() {
            return;
        }
    }
    let complete = format!(r#"{{"type":"complete","id":{id}}}"#);
    // The connection may be closing; then nobody is left to tell.
    let _ = out.send(Message::Text(complete.into())).await;
}

/// Whether `request` selects a subscription operation of a document that parses; any
/// other document is left to async-graphql, which executes it or reports what is wrong.
fn is_subscription(request: &Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return false };
    let operation = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(operation), None) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => match operations.get(name) {
            Some(operation) => operation,
            None => return false,
        },
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            match operations.values().next() {
                Some(operation) => operation,
                None => return false,
            }
        }
        _ => return false,
    };
    operation.node.ty == OperationType::Subscription
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_subscription_operations_are_taken() {
        let request = |query: &str, name: Option<&str>| {
            let request = Request::new(query);
            match name {
                Some(name) => request.operation_name(name),
                None => request,
            }
        };
        assert!(is_subscription(&request("subscription { seatMap(showtimeId: \"x\") { resync } }", None)));
        assert!(is_subscription(&request("subscription S { seatMap(showtimeId: \"x\") { resync } }", None)));
        let two = "query Q { movies { title } } subscription S { seatMap(showtimeId: \"x\") { resync } }";
        assert!(is_subscription(&request(two, Some("S"))));
        assert!(!is_subscription(&request(two, Some("Q"))));
        assert!(!is_subscription(&request(two, None)), "ambiguous: async-graphql reports it");
        assert!(!is_subscription(&request("{ movies { title } }", None)));
        assert!(!is_subscription(&request("mutation { logout }", None)));
        assert!(!is_subscription(&request("subscription {", None)), "unparsable");
    }
}
