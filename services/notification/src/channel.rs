//! Delivery: every rendered message goes out through a `Channel`. The default one
//! records it in MongoDB, the log that ListNotifications reads.

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

use crate::store::{NotificationDoc, NotificationStore};

/// Most records written by one insert.
const MAX_BATCH: usize = 256;

#[tonic::async_trait]
pub trait Channel: Send + Sync {
    /// Delivers one message. A redelivered event may deliver the same (event,
    /// medium) again after a crash; a channel should make that harmless if it can.
    async fn deliver(&self, message: &NotificationDoc) -> anyhow::Result<()>;
}

type Pending = (NotificationDoc, oneshot::Sender<Result<(), String>>);

/// Records each message as sent; the unique (event, medium) index absorbs repeats.
/// Concurrent deliveries are written together, one insert per batch: the store
/// takes far fewer large inserts than many small ones.
pub struct RecordingChannel {
    pending: mpsc::Sender<Pending>,
}

impl RecordingChannel {
    /// Starts the writer task; it ends once the channel is dropped.
    pub fn new(store: NotificationStore) -> Self {
        let (pending, queue) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(store, queue));
        Self { pending }
    }
}

async fn write_batches(store: NotificationStore, mut queue: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Takes whatever queued up while the previous insert ran.
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (docs, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let results = store.record_many(&docs).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // The delivery may have been abandoned meanwhile; its redelivery retries.
            let _ = reply.send(result);
        }
    }
}

#[tonic::async_trait]
impl Channel for RecordingChannel {
    async fn deliver(&self, message: &NotificationDoc) -> anyhow::Result<()> {
        let (reply, recorded) = oneshot::channel();
        self.pending
            .send((message.clone(), reply))
            .await
            .map_err(|_| anyhow::anyhow!("the notification writer has stopped"))?;
        recorded.await.context("the notification writer dropped a message")?.map_err(anyhow::Error::msg)
    }
}
