//! Live seat changes for subscriptions: one upstream `WatchSeats` stream per watched
//! showtime, shared by every subscriber of that showtime.
//!
//! The first subscriber of a showtime starts a feed task that opens the stream and
//! broadcasts each change; later subscribers join the broadcast. The last one to
//! leave stops the task, which drops the stream. A broken stream is re-opened with
//! backoff, and subscribers are told to reload the seat map, since changes between
//! the break and the re-open are lost. Per subscriber the cost is one broadcast
//! receiver; the buffer is per showtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use marquee_kit::backoff::Backoff;
use marquee_proto::cinema::v1 as cinema;
use marquee_proto::cinema::v1::cinema_service_client::CinemaServiceClient;
use metrics::Histogram;
use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use tonic::transport::Channel;

use crate::Settings;
use crate::domain::ShowtimeId;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::shared_task::{Claim, SharedTasks};

/// Changes of one showtime a slow subscriber may fall behind before it is told to
/// reload; shared by all its subscribers, so the memory is per showtime.
const BACKLOG: usize = 256;
/// Pauses before re-opening a feed: 100 ms doubling to 5 s, jittered so that the feeds
/// of every showtime, broken together by a cinema restart, do not all come back at once.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Attempts at the first open before waiting subscribers get the error: a transient
/// failure (timeout, cinema restarting) should not fail thousands of them at once.
const FIRST_OPEN_ATTEMPTS: u32 = 3;

/// What a feed delivers to each subscriber.
#[derive(Clone, Debug)]
pub enum FeedEvent {
    Change(Arc<cinema::SeatChange>),
    /// Changes may have been missed (the subscriber fell behind, or the upstream
    /// stream broke and was re-opened): reload the seat map.
    Resync,
    /// The feed ended for good (e.g. the showtime is gone).
    Closed(Arc<GatewayError>),
}

/// Where a feed's first upstream open stands; subscribers wait for it, so the first
/// answer to a subscription is a real one (e.g. NOT_FOUND for an unknown showtime).
#[derive(Clone)]
enum Opening {
    Pending,
    Open,
    Failed(Arc<GatewayError>),
}

/// Cheap to clone; clones share the feeds.
#[derive(Clone)]
pub struct SeatFeeds {
    inner: Arc<Inner>,
}

struct Inner {
    /// Long-lived streams need a channel without the per-call deadline of
    /// `Upstreams`, which would cut every stream after `grpc.request_timeout_ms`.
    cinema: Channel,
    open_timeout: Duration,
    feeds: SharedTasks<ShowtimeId, Feed>,
    metrics: Metrics,
}

struct Feed {
    events: broadcast::Sender<FeedEvent>,
    opening: watch::Receiver<Opening>,
}

impl SeatFeeds {
    pub fn new(settings: &Settings, metrics: Metrics) -> anyhow::Result<Self> {
        let cinema = marquee_kit::grpc::streaming_channel(
            &settings.upstream.cinema_url,
            marquee_proto::cinema::v1::cinema_service_server::SERVICE_NAME,
            &settings.grpc,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                cinema,
                open_timeout: Duration::from_millis(settings.grpc.request_timeout_ms),
                feeds: SharedTasks::new(),
                metrics,
            }),
        })
    }

    /// Joins the showtime's feed, starting it if nobody watches the showtime yet.
    /// Returns once the upstream stream is open: every change committed after that
    /// reaches the watch.
    /// The error is shared by every subscriber that waited on the same open; it was
    /// logged once, when it happened. `count`: whether the watch is one subscriber in
    /// the active-subscriptions gauge (a shared execution's members count themselves).
    pub async fn watch(&self, showtime: &ShowtimeId, count: bool) -> Result<SeatWatch, Arc<GatewayError>> {
        let ((events, mut opening), claim, _) = self.inner.feeds.join(
            *showtime,
            |generation| self.start(showtime, generation),
            |feed| (feed.events.subscribe(), feed.opening.clone()),
        );
        let membership = Membership { inner: self.inner.clone(), claim, counted: false };
        // `membership` leaves the feed on every early return, cancellation included.
        let outcome = opening.wait_for(|o| !matches!(o, Opening::Pending)).await.map(|o| o.clone());
        match outcome {
            Ok(Opening::Open) => {}
            Ok(Opening::Failed(error)) => return Err(error),
            // The task is gone without a verdict: a bug, since a member keeps it alive.
            Ok(Opening::Pending) | Err(_) => {
                tracing::error!(%showtime, "the seat feed stopped while opening");
                return Err(Arc::new(GatewayError::Unexpected(anyhow::anyhow!("the seat feed stopped"))));
            }
        }
        let mut membership = membership;
        if count {
            membership.counted = true;
            self.inner.metrics.subscriptions.increment(1.0);
        }
        // A shared execution builds each update once for all its members: its lag is
        // the fan-out's. A watch per subscriber would count each change once per
        // subscriber instead.
        let built = (!count).then(|| self.inner.metrics.seat_change_lag.built.clone());
        Ok(SeatWatch { events, held_back: None, built, _membership: membership })
    }

    fn start(&self, showtime: &ShowtimeId, generation: u64) -> (Feed, AbortHandle) {
        let (events, _) = broadcast::channel(BACKLOG);
        let (opened, opening) = watch::channel(Opening::Pending);
        let task = tokio::spawn(run_feed(self.inner.clone(), *showtime, generation, events.clone(), opened));
        (Feed { events, opening }, task.abort_handle())
    }
}

/// One subscriber's view of a feed.
pub struct SeatWatch {
    events: broadcast::Receiver<FeedEvent>,
    /// An event read while gathering a batch that cannot join it (see `next_batch`).
    held_back: Option<FeedEvent>,
    /// Where the lag of each change handed out is recorded (shared executions only).
    built: Option<Histogram>,
    _membership: Membership,
}

/// What `SeatWatch::next_batch` delivers.
#[derive(Debug)]
pub enum Batch {
    /// One or more changes, in commit order.
    Changes(Vec<Arc<cinema::SeatChange>>),
    /// A resync or the feed's end: never merged with changes.
    Other(FeedEvent),
}

impl SeatWatch {
    /// The next event; `None` once the feed has ended.
    pub async fn next(&mut self) -> Option<FeedEvent> {
        if let Some(event) = self.held_back.take() {
            return Some(event);
        }
        match self.events.recv().await {
            Ok(event) => Some(event),
            // The receiver skips ahead to the oldest change still buffered.
            Err(broadcast::error::RecvError::Lagged(_)) => Some(FeedEvent::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event and, when it is a change, every change already waiting behind it
    /// (at most `max`): a subscriber that fell behind catches up in one message
    /// instead of one per change, so the fan-out costs less exactly when it is behind.
    /// A resync or the feed's end is held back for the following call.
    pub async fn next_batch(&mut self, max: usize) -> Option<Batch> {
        let first = match self.next().await? {
            FeedEvent::Change(change) => change,
            other => return Some(Batch::Other(other)),
        };
        let mut changes = vec![first];
        while changes.len() < max {
            match self.events.try_recv() {
                Ok(FeedEvent::Change(change)) => changes.push(change),
                Ok(other) => {
                    self.held_back = Some(other);
                    break;
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    self.held_back = Some(FeedEvent::Resync);
                    break;
                }
                // Empty: caught up. Closed: the next call reports the end.
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => break,
            }
        }
        if let Some(built) = &self.built {
            for change in &changes {
                record_lag(built, change);
            }
        }
        Some(Batch::Changes(changes))
    }
}

/// Records how long ago `change` was committed. Clocks of two machines may disagree: a
/// change "from the future" counts as no lag rather than being dropped.
fn record_lag(histogram: &Histogram, change: &cinema::SeatChange) {
    if let Some(at) = change.changed_at.as_ref().and_then(marquee_kit::time::from_proto) {
        let lag = chrono::Utc::now().signed_duration_since(at);
        histogram.record(lag.to_std().unwrap_or_default().as_secs_f64());
    }
}

/// A subscriber's place in a feed; leaving stops the feed when it was the last one.
struct Membership {
    inner: Arc<Inner>,
    claim: Claim<ShowtimeId>,
    /// Counted in the active-subscriptions gauge (only once the stream was open).
    counted: bool,
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.counted {
            self.inner.metrics.subscriptions.decrement(1.0);
        }
        self.inner.feeds.leave(&self.claim);
    }
}

/// How many subscriptions one WebSocket connection may hold at once; shared by the
/// connection's subscriptions through the connection data.
#[derive(Clone)]
pub struct ConnectionQuota {
    open: Arc<AtomicUsize>,
    max: usize,
}

/// One subscription's share of its connection's quota, given back on drop.
pub struct QuotaSlot(Arc<AtomicUsize>);

impl ConnectionQuota {
    pub fn new(max: usize) -> Self {
        Self { open: Arc::new(AtomicUsize::new(0)), max }
    }

    /// A slot, or `None` when the connection already holds `max` subscriptions.
    pub fn take(&self) -> Option<QuotaSlot> {
        let max = self.max;
        self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok()?;
        Some(QuotaSlot(self.open.clone()))
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for QuotaSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts an open upstream stream for as long as it lives, however the task ends.
struct OpenStream(Metrics);

impl OpenStream {
    fn new(metrics: &Metrics) -> Self {
        metrics.seat_streams.increment(1.0);
        metrics.seat_streams_opened.increment(1);
        Self(metrics.clone())
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.seat_streams.decrement(1.0);
    }
}

async fn run_feed(
    inner: Arc<Inner>,
    showtime: ShowtimeId,
    generation: u64,
    events: broadcast::Sender<FeedEvent>,
    opening: watch::Sender<Opening>,
) {
    let backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
    // Failed opens since the stream last opened.
    let mut failures: u32 = 0;
    let mut opened_before = false;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match open(&inner, &showtime).await {
            Ok(mut stream) => {
                let _open = OpenStream::new(&inner.metrics);
                if opened_before {
                    // Nobody listening is fine; `send` only fails then.
                    let _ = events.send(FeedEvent::Resync);
                } else {
                    opening.send_replace(Opening::Open);
                    opened_before = true;
                }
                failures = 0;
                loop {
                    match stream.message().await {
                        Ok(Some(change)) => {
                            record_lag(&inner.metrics.seat_change_lag.received, &change);
                            let _ = events.send(FeedEvent::Change(Arc::new(change)));
                        }
                        Ok(None) => {
                            tracing::info!(%showtime, "seat stream ended upstream; re-opening");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(%showtime, code = ?status.code(), message = status.message(), "seat stream broke; re-opening");
                            break;
                        }
                    }
                }
            }
            // Client errors (unknown or malformed showtime) are final at once.
            Err(GatewayError::Unexpected(cause) | GatewayError::Transient(cause))
                if !opened_before && attempts < FIRST_OPEN_ATTEMPTS =>
            {
                tracing::warn!(%showtime, error = format!("{cause:#}"), "cannot open the seat stream; retrying");
            }
            Err(error) if !opened_before => {
                // Removed first, so a subscriber arriving now starts afresh.
                inner.feeds.finish(&showtime, generation, |_| ());
                if let GatewayError::Unexpected(cause) | GatewayError::Transient(cause) = &error {
                    tracing::error!(%showtime, error = format!("{cause:#}"), "cannot open the seat stream");
                }
                opening.send_replace(Opening::Failed(Arc::new(error)));
                return;
            }
            Err(error) if error.is_not_found() => {
                inner.feeds.finish(&showtime, generation, |_| ());
                let _ = events.send(FeedEvent::Closed(Arc::new(error)));
                return;
            }
            Err(error) => {
                tracing::warn!(%showtime, error = ?error, "cannot re-open the seat stream");
            }
        }
        tokio::time::sleep(backoff.delay(failures)).await;
        failures = failures.saturating_add(1);
    }
}

async fn open(
    inner: &Inner,
    showtime: &ShowtimeId,
) -> Result<tonic::Streaming<cinema::SeatChange>, GatewayError> {
    let mut client = CinemaServiceClient::new(inner.cinema.clone());
    let request = cinema::WatchSeatsRequest { showtime_id: showtime.to_string() };
    match tokio::time::timeout(inner.open_timeout, client.watch_seats(request)).await {
        Ok(response) => Ok(response?.into_inner()),
        Err(_) => Err(GatewayError::Unexpected(anyhow::anyhow!("opening the seat stream timed out"))),
    }
}

#[cfg(test)]
mod tests {
    use marquee_kit::Config as _;

    use super::*;

    fn change(seat: &str) -> FeedEvent {
        FeedEvent::Change(Arc::new(cinema::SeatChange { seat_id: seat.to_owned(), ..Default::default() }))
    }

    fn seat(event: Option<FeedEvent>) -> String {
        match event {
            Some(FeedEvent::Change(change)) => change.seat_id.clone(),
            other => panic!("expected a change, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_to_resync_then_continues() {
        let settings = Settings::for_tests().unwrap();
        let feeds = SeatFeeds::new(&settings, Metrics::new().unwrap()).unwrap();
        let (sender, events) = broadcast::channel(2);
        let mut watch = watch_of(&feeds, events);

        for seat in ["A1", "A2", "A3"] {
            sender.send(change(seat)).unwrap();
        }
        assert!(matches!(watch.next().await, Some(FeedEvent::Resync)));
        // The oldest changes still buffered follow, then whatever comes next.
        assert_eq!(seat(watch.next().await), "A2");
        assert_eq!(seat(watch.next().await), "A3");
        sender.send(change("A4")).unwrap();
        assert_eq!(seat(watch.next().await), "A4");
        drop(sender);
        assert!(watch.next().await.is_none(), "the feed ended");
    }

    /// A member of no feed in the map: leaving touches nothing.
    fn watch_of(feeds: &SeatFeeds, events: broadcast::Receiver<FeedEvent>) -> SeatWatch {
        let membership = Membership {
            inner: feeds.inner.clone(),
            claim: Claim::detached(ShowtimeId::parse("00000000-0000-4000-8000-000000000000").unwrap()),
            counted: false,
        };
        SeatWatch { events, held_back: None, built: None, _membership: membership }
    }

    fn seats(batch: Option<Batch>) -> Vec<String> {
        match batch {
            Some(Batch::Changes(changes)) => changes.iter().map(|c| c.seat_id.clone()).collect(),
            other => panic!("expected changes, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_batch_gathers_the_waiting_changes_up_to_its_limit_and_never_merges_a_resync() {
        let settings = Settings::for_tests().unwrap();
        let feeds = SeatFeeds::new(&settings, Metrics::new().unwrap()).unwrap();
        let (sender, events) = broadcast::channel(4);
        let mut watch = watch_of(&feeds, events);

        for seat in ["A1", "A2", "A3"] {
            sender.send(change(seat)).unwrap();
        }
        assert_eq!(seats(watch.next_batch(2).await), ["A1", "A2"]);
        assert_eq!(seats(watch.next_batch(2).await), ["A3"]);

        sender.send(change("B1")).unwrap();
        sender.send(FeedEvent::Resync).unwrap();
        sender.send(change("B2")).unwrap();
        assert_eq!(seats(watch.next_batch(10).await), ["B1"]);
        assert!(matches!(watch.next_batch(10).await, Some(Batch::Other(FeedEvent::Resync))));
        assert_eq!(seats(watch.next_batch(10).await), ["B2"]);

        // Falling behind the backlog while gathering: the gathered changes, then a resync,
        // then the oldest changes still buffered.
        sender.send(change("C1")).unwrap();
        let first = watch.next().await;
        assert_eq!(seat(first), "C1");
        for seat in ["C2", "C3", "C4", "C5", "C6"] {
            sender.send(change(seat)).unwrap();
        }
        assert!(matches!(watch.next_batch(10).await, Some(Batch::Other(FeedEvent::Resync))));
        assert_eq!(seats(watch.next_batch(10).await), ["C3", "C4", "C5", "C6"]);

        drop(sender);
        assert!(watch.next_batch(10).await.is_none(), "the feed ended");
    }
}
