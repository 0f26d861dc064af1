//! Acknowledgements sent together. A consumer that handles deliveries concurrently
//! finishes them out of order; acknowledging each on its own costs the broker one
//! settlement per message (for a quorum queue, one more entry in its log). Here the
//! deliveries a consumer finished are gathered per channel, and every run of them with
//! no unfinished delivery in between goes out as one `basic.ack` with `multiple`: the
//! broker settles them all at once.
//!
//! A `multiple` ack covers every unsettled delivery up to its tag, so it is only ever
//! sent for a tag below which every delivery was reported finished; safety never rests
//! on guessing which tags exist. A finished delivery stuck behind an unfinished one (a
//! slow delivery, one left unsettled for redelivery) is acknowledged on its own after
//! `LINGER`, so the prefetch window never fills up with finished deliveries.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::Channel;
use lapin::options::BasicAckOptions;
use lapin::types::DeliveryTag;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a finished delivery may wait for the ones before it to finish too.
pub const LINGER: Duration = Duration::from_millis(5);

/// Reports about one channel's deliveries (cheap to clone). Every delivery must be
/// reported once, by `ack` or `settled`, or never if it is left for redelivery.
#[derive(Clone)]
pub struct Acks {
    reports: mpsc::UnboundedSender<Report>,
}

enum Report {
    /// Finished: acknowledge it.
    Ack(DeliveryTag),
    /// Settled by the consumer itself (nack, reject): nothing to send, but the
    /// deliveries after it need not wait for it.
    Settled(DeliveryTag),
    /// Send what can be sent, then answer.
    Flush(oneshot::Sender<()>),
}

impl Acks {
    /// Starts acknowledging `channel`'s deliveries; the task ends once every clone is
    /// dropped, after sending what it still holds.
    pub fn spawn(channel: Channel) -> Self {
        let (reports, incoming) = mpsc::unbounded_channel();
        tokio::spawn(run(channel, incoming));
        Self { reports }
    }

    /// The delivery is finished (its work durable): acknowledge it, soon.
    pub fn ack(&self, tag: DeliveryTag) {
        // The task only stops once every sender is gone.
        let _ = self.reports.send(Report::Ack(tag));
    }

    /// The delivery was settled some other way (nack, reject) and must not be acked.
    pub fn settled(&self, tag: DeliveryTag) {
        let _ = self.reports.send(Report::Settled(tag));
    }

    /// Sends every acknowledgement reported so far; before closing the channel on
    /// shutdown, so that finished deliveries are not redelivered. Not a guarantee: a
    /// quorum queue holds back a client's settlements beyond a few dozen in flight, and
    /// those still held back when the connection closes are lost, so the broker
    /// redelivers those deliveries (the consumers are idempotent).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.reports.send(Report::Flush(done)).is_ok() {
            let _ = flushed.await;
        }
    }
}

async fn run(channel: Channel, mut incoming: mpsc::UnboundedReceiver<Report>) {
    let mut window = Window::default();
    let mut reports = Vec::new();
    loop {
        let deadline = window.oldest_lingering().map(|since| since + LINGER);
        let closed = tokio::select! {
            received = incoming.recv_many(&mut reports, 1024) => received == 0,
            () = sleep_until(deadline) => false,
        };
        let now = Instant::now();
        let mut flushed = Vec::new();
        for report in reports.drain(..) {
            match report {
                Report::Ack(tag) => window.finished(tag, true, now),
                Report::Settled(tag) => window.finished(tag, false, now),
                Report::Flush(done) => flushed.push(done),
            }
        }
        if let Some(upto) = window.take_run() {
            send(&channel, upto, true).await;
        }
        let everything = closed || !flushed.is_empty();
        for tag in window.take_lingering(if everything { None } else { Some(now) }) {
            send(&channel, tag, false).await;
        }
        for done in flushed {
            let _ = done.send(());
        }
        if closed {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn send(channel: &Channel, tag: DeliveryTag, multiple: bool) {
    if let Err(error) = channel.basic_ack(tag, BasicAckOptions { multiple }).await {
        // The channel is gone: the broker redelivers whatever it had not settled.
        tracing::debug!(%error, tag, multiple, "cannot acknowledge; the broker will redeliver");
    }
}

/// Which deliveries of a channel are finished, by tag (tags count up from 1 per
/// channel, one per delivery).
#[derive(Debug, Default)]
struct Window {
    /// Every delivery up to this tag is settled.
    floor: DeliveryTag,
    /// Finished deliveries above `floor`: whether each still needs an ack (and since
    /// when it waits), or is settled already.
    finished: BTreeMap<DeliveryTag, Option<Instant>>,
}

impl Window {
    fn finished(&mut self, tag: DeliveryTag, needs_ack: bool, now: Instant) {
        if tag > self.floor {
            self.finished.insert(tag, needs_ack.then_some(now));
        }
    }

    /// Moves the floor over the finished deliveries right above it; answers the tag to
    /// acknowledge with `multiple` if any of them needs an ack.
    fn take_run(&mut self) -> Option<DeliveryTag> {
        let mut upto = None;
        while let Some(entry) = self.finished.first_entry() {
            if *entry.key() != self.floor + 1 {
                break;
            }
            self.floor += 1;
            if entry.remove().is_some() {
                upto = Some(self.floor);
            }
        }
        upto
    }

    /// The finished deliveries that waited `LINGER` for an ack by `now` (all of them
    /// with `None`), now to be acknowledged one by one. They stay in the window,
    /// settled, so the floor can pass them later.
    fn take_lingering(&mut self, now: Option<Instant>) -> Vec<DeliveryTag> {
        let mut due = Vec::new();
        for (tag, since) in &mut self.finished {
            if since.is_some_and(|at| now.is_none_or(|now| at + LINGER <= now)) {
                *since = None;
                due.push(*tag);
            }
        }
        due
    }

    fn oldest_lingering(&self) -> Option<Instant> {
        self.finished.values().flatten().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(reports: &[(DeliveryTag, bool)], now: Instant) -> Window {
        let mut window = Window::default();
        for &(tag, needs_ack) in reports {
            window.finished(tag, needs_ack, now);
        }
        window
    }

    #[test]
    fn a_run_from_the_floor_is_acknowledged_once_up_to_its_last_ack() {
        let now = Instant::now();
        let mut w = window(&[(2, true), (1, true), (3, false), (5, true)], now);
        // 1 and 2 need acks, 3 was rejected: one multiple ack up to 2 covers them, and
        // the floor passes 3; 5 waits for 4.
        assert_eq!(w.take_run(), Some(2));
        assert_eq!(w.floor, 3);
        assert_eq!(w.take_run(), None);
        w.finished(4, true, now);
        assert_eq!(w.take_run(), Some(5));
        assert_eq!(w.floor, 5);
        assert!(w.finished.is_empty());
    }

    #[test]
    fn nothing_is_acknowledged_past_an_unfinished_delivery() {
        let now = Instant::now();
        let mut w = window(&[(2, true), (3, true)], now);
        assert_eq!(w.take_run(), None, "1 is not finished; a multiple ack would settle it");
        assert_eq!(w.floor, 0);
    }

    #[test]
    fn a_run_of_settled_deliveries_only_moves_the_floor() {
        let now = Instant::now();
        let mut w = window(&[(1, false), (2, false)], now);
        assert_eq!(w.take_run(), None);
        assert_eq!(w.floor, 2);
    }

    #[test]
    fn deliveries_stuck_behind_a_gap_are_acked_alone_once_they_lingered() {
        let start = Instant::now();
        let later = start + LINGER * 2;
        let mut w = window(&[(2, true)], start);
        w.finished(3, true, later);
        assert_eq!(w.oldest_lingering(), Some(start));
        assert_eq!(w.take_lingering(Some(later)), vec![2], "3 has not waited long enough");
        assert_eq!(w.oldest_lingering(), Some(later));
        assert_eq!(w.take_lingering(None), vec![3]);
        assert_eq!(w.oldest_lingering(), None);
        // Once 1 finishes, the floor passes 2 and 3 without acking them again.
        w.finished(1, true, later);
        assert_eq!(w.take_run(), Some(1));
        assert_eq!(w.floor, 3);
    }

    #[test]
    fn reports_at_or_below_the_floor_are_ignored() {
        let now = Instant::now();
        let mut w = window(&[(1, true)], now);
        assert_eq!(w.take_run(), Some(1));
        w.finished(1, true, now);
        assert_eq!(w.take_run(), None);
        assert!(w.finished.is_empty());
    }
}
