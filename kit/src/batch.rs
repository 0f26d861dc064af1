//! Group commit: the small operations of many concurrent callers (MongoDB lookups and
//! inserts, calls to another service) sent as one command per batch. While a batch is
//! in flight the next one gathers, so under load each operation costs a fraction of a
//! round trip, and a lone operation goes out at once (there is no timer to wait for).

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The most operations one batch carries.
pub const MAX_BATCH: usize = 256;
/// Operations waiting beyond the batches in flight; when full, callers wait their
/// turn, so memory stays bounded however many arrive.
const QUEUE: usize = 4096;

type Reply<Out, E> = oneshot::Sender<Result<Out, E>>;

/// A queue of operations and the task that runs them in batches. Cloning shares the
/// queue; the task ends when the last clone is dropped.
pub struct Batcher<In, Out, E> {
    queue: mpsc::Sender<(In, Reply<Out, E>)>,
    what: &'static str,
}

impl<In, Out, E> Clone for Batcher<In, Out, E> {
    fn clone(&self) -> Self {
        Self { queue: self.queue.clone(), what: self.what }
    }
}

/// The batcher stopped, or its batch gave no answer for this operation.
#[derive(Debug, thiserror::Error)]
#[error("the {0} batch lost this operation")]
pub struct Lost(&'static str);

impl<In, Out, E> Batcher<In, Out, E>
where
    In: Send + 'static,
    Out: Send + 'static,
    E: Send + 'static,
{
    /// Starts the task, one batch in flight at a time. `run` gets a batch and answers
    /// one result per input, in order (an input left unanswered gets `Lost`).
    pub fn spawn<F, Fut>(what: &'static str, run: F) -> Self
    where
        F: Fn(Vec<In>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<Out, E>>> + Send + 'static,
    {
        Self::spawn_concurrent(what, 1, run)
    }

    /// As `spawn`, with up to `batches` batches in flight at once: one slow batch does
    /// not hold up the operations arriving meanwhile.
    pub fn spawn_concurrent<F, Fut>(what: &'static str, batches: usize, run: F) -> Self
    where
        F: Fn(Vec<In>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<Out, E>>> + Send + 'static,
    {
        let (queue, mut incoming) = mpsc::channel::<(In, Reply<Out, E>)>(QUEUE);
        let run = Arc::new(run);
        let in_flight = Arc::new(Semaphore::new(batches.max(1)));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
                let mut pending = Vec::with_capacity(MAX_BATCH);
                if incoming.recv_many(&mut pending, MAX_BATCH).await == 0 {
                    return;
                }
                let run = Arc::clone(&run);
                tokio::spawn(async move {
                    let (inputs, replies): (Vec<In>, Vec<Reply<Out, E>>) = pending.into_iter().unzip();
                    let results = run(inputs).await;
                    drop(permit);
                    // A caller that gave up has dropped its receiver; its answer goes nowhere.
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(result);
                    }
                });
            }
        });
        Self { queue, what }
    }

    /// Queues one operation and waits for its batch's answer to it.
    pub async fn answer(&self, input: In) -> Result<Result<Out, E>, Lost> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((input, reply)).await.map_err(|_| Lost(self.what))?;
        answer.await.map_err(|_| Lost(self.what))
    }
}

impl<In, Out, E> Batcher<In, Out, E>
where
    In: Send + 'static,
    Out: Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    /// `answer`, with its error as "cannot <what>".
    pub async fn call(&self, input: In) -> anyhow::Result<Out> {
        let result = self.answer(input).await?;
        result.with_context(|| format!("cannot {}", self.what))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_calls_share_batches_and_each_gets_its_own_answer() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&batches);
        let doubler = Batcher::spawn("double", move |inputs: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                // Callers arriving meanwhile queue for the next batch.
                tokio::time::sleep(Duration::from_millis(50)).await;
                inputs.into_iter().map(|n| Ok::<_, Infallible>(n * 2)).collect()
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
    async fn a_slow_batch_holds_up_no_other_when_several_may_be_in_flight() {
        let echo = Batcher::spawn_concurrent("echo", 2, |inputs: Vec<u64>| async move {
            // Input 0 is slow; the others are not.
            if inputs.contains(&0) {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            inputs.into_iter().map(Ok::<_, Infallible>).collect()
        });
        let slow = tokio::spawn({
            let echo = echo.clone();
            async move { echo.call(0).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let quick = tokio::time::timeout(Duration::from_secs(5), echo.call(1)).await;
        assert_eq!(quick.expect("held up behind the slow batch").expect("answered"), 1);
        slow.abort();
    }

    #[tokio::test]
    async fn each_error_reaches_its_own_caller() {
        let parse = Batcher::spawn("parse", |inputs: Vec<&'static str>| async move {
            inputs.into_iter().map(str::parse::<u8>).collect()
        });
        assert_eq!(parse.call("7").await.expect("a number"), 7);
        let refused = parse.answer("x").await.expect("answered");
        assert!(refused.is_err());
        let error = parse.call("300").await.expect_err("too big for u8");
        assert!(error.to_string().contains("cannot parse"), "{error:#}");
    }

    #[tokio::test]
    async fn a_batch_that_answers_too_few_fails_the_unanswered_calls_instead_of_hanging() {
        let short = Batcher::spawn("shortchange", |inputs: Vec<u32>| async move {
            inputs.into_iter().skip(1).map(Ok::<_, Infallible>).collect()
        });
        let error = short.call(7).await.expect_err("the only input got no answer");
        assert!(error.to_string().contains("shortchange batch lost"), "{error:#}");
    }
}
