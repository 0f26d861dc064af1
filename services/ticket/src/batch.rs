//! Group commit for check-in: the small MongoDB operations of many concurrent scans
//! (nonce lookups, admissions, scan records) sent as one command per kind. While one
//! batch is in flight the next one gathers, so at a busy door each of a scan's steps
//! costs a fraction of a round trip, and an idle door's single scan goes out at once
//! (there is no timer to wait for).

use std::future::Future;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};

/// The most operations one command carries.
const MAX_BATCH: usize = 256;
/// Operations waiting beyond the batch in flight; when full, callers wait their turn,
/// so memory stays bounded however many scans arrive.
const QUEUE: usize = 4096;

type Reply<Out> = oneshot::Sender<Result<Out, mongodb::error::Error>>;

/// A queue of operations and the task that runs them in batches. Cloning shares the
/// queue; the task ends when the last clone is dropped.
pub struct Batcher<In, Out> {
    queue: mpsc::Sender<(In, Reply<Out>)>,
    what: &'static str,
}

impl<In, Out> Clone for Batcher<In, Out> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone(), what: self.what }
    }
}

impl<In: Send + 'static, Out: Send + 'static> Batcher<In, Out> {
    /// Starts the task. `run` gets a batch and answers one result per input, in order.
    pub fn spawn<F, Fut>(what: &'static str, run: F) -> Self
    where
        F: Fn(Vec<In>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<Result<Out, mongodb::error::Error>>> + Send,
    {
        let (queue, mut incoming) = mpsc::channel::<(In, Reply<Out>)>(QUEUE);
        tokio::spawn(async move {
            let mut pending = Vec::with_capacity(MAX_BATCH);
            while incoming.recv_many(&mut pending, MAX_BATCH).await > 0 {
                let (inputs, replies): (Vec<In>, Vec<Reply<Out>>) = pending.drain(..).unzip();
                let results = run(inputs).await;
                // A caller that gave up has dropped its receiver; its answer goes nowhere.
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
        });
        Self { queue, what }
    }

    /// Queues one operation and waits for its batch's answer.
    pub async fn call(&self, input: In) -> anyhow::Result<Out> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((input, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the {} batcher has stopped", self.what))?;
        let result = answer.await.with_context(|| format!("the {} batch lost this operation", self.what))?;
        result.with_context(|| format!("cannot {}", self.what))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_each_gets_its_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&batches);
        let doubler = Batcher::spawn("double", move |inputs: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                // Callers arriving meanwhile queue for the next batch.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                inputs.into_iter().map(|n| Ok(n * 2)).collect()
            }
        });
        let calls = (0..100u32).map(|n| {
            let doubler = doubler.clone();
            tokio::spawn(async move { (n, doubler.call(n).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (n, answer) = call.expect("the task panicked");
            assert_eq!(answer.expect("no error"), n * 2);
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!(batches < 100, "100 calls went out in {batches} batches");
    }

    #[tokio::test]
    async fn a_batch_that_answers_too_few_fails_the_unanswered_calls_instead_of_hanging() {
        let short = Batcher::spawn("shortchange", |inputs: Vec<u32>| async move {
            inputs.into_iter().skip(1).map(Ok).collect()
        });
        let error = short.call(7).await.expect_err("the only input got no answer");
        assert!(error.to_string().contains("shortchange batch lost"), "{error:#}");
    }
}
