//! `Subscription.seatMap`: live seat changes of one showtime, fanned out from one
//! shared upstream stream per showtime (see `crate::live`).

use std::sync::Arc;

use async_graphql::futures_util::{Stream, StreamExt as _, stream};
use async_graphql::{Context, Enum, ErrorExtensions, ID, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use marquee_kit::{ApiError, ErrorCode};
use marquee_proto::cinema::v1 as cinema;

use super::seats::SeatState;
use crate::domain::{ShowtimeId, checked};
use crate::error::GatewayError;
use crate::fanout::{ResyncOnly, SharedExecution};
use crate::live::{Batch, ConnectionQuota, FeedEvent, QuotaSlot, SeatFeeds, SeatWatch};

pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Every seat change of the showtime from now on, in commit order: holds,
    /// confirmations, releases, lapsed holds, blocks. An update with `resync: true`
    /// means changes may have been missed: reload `showtime(id).seatMap`.
    ///
    /// With `coalesce: true` an update carries in `changes` every change that was
    /// waiting when it was built (at most 256), so during a rush fewer, fuller messages
    /// are sent; `change` is then the latest of them. Without it every update carries
    /// exactly one change.
    async fn seat_map(
        &self,
        ctx: &Context<'_>,
        showtime_id: ID,
        #[graphql(default = false)] coalesce: bool,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<SeatMapUpdate>> + use<>> {
        let showtime = checked(ShowtimeId::parse(showtime_id.as_str()))?;
        if ctx.data_opt::<ResyncOnly>().is_some() {
            return Ok(stream::iter([Ok(SeatMapUpdate::resync_of(showtime_id))]).left_stream());
        }
        // Missing data is a wiring bug in this crate, never the client's fault.
        let missing = |e: async_graphql::Error| GatewayError::Unexpected(anyhow::anyhow!("{}", e.message));
        let feeds = ctx.data::<SeatFeeds>().map_err(missing)?;
        let quota = ctx.data::<ConnectionQuota>().map_err(missing)?;
        let slot = quota.take().ok_or_else(|| {
            let message = format!("a connection holds at most {} subscriptions", quota.max());
            GatewayError::Upstream(ApiError::new(ErrorCode::RateLimited, message))
        })?;
        let shared = ctx.data_opt::<SharedExecution>();
        let watch = feeds.watch(&showtime, shared.is_none()).await.map_err(|error| error.extend())?;
        if let Some(shared) = shared {
            shared.opened.send_replace(true);
        }
        let batch = if coalesce { MAX_COALESCED } else { 1 };
        Ok(updates(watch, slot, showtime_id, batch).right_stream())
    }
}

/// The most changes one coalesced update carries: the feed's whole backlog.
const MAX_COALESCED: usize = 256;

/// The stream owns the quota slot: ending the subscription gives it back.
fn updates(
    watch: SeatWatch,
    slot: QuotaSlot,
    showtime: ID,
    batch: usize,
) -> impl Stream<Item = async_graphql::Result<SeatMapUpdate>> {
    stream::unfold(Some((watch, slot)), move |state| {
        let showtime = showtime.clone();
        async move {
            let (mut watch, slot) = state?;
            let update = match watch.next_batch(batch).await? {
                Batch::Changes(changes) => SeatMapUpdate::from_changes(showtime, &changes),
                Batch::Other(FeedEvent::Change(change)) => SeatMapUpdate::from_changes(showtime, &[change]),
                Batch::Other(FeedEvent::Resync) => Ok(SeatMapUpdate::resync_of(showtime)),
                // The last item: the feed is over.
                Batch::Other(FeedEvent::Closed(error)) => return Some((Err(error.extend()), None)),
            };
            Some((update, Some((watch, slot))))
        }
    })
}

/// One message of `Subscription.seatMap`.
#[derive(Clone, Debug, SimpleObject)]
pub struct SeatMapUpdate {
    pub showtime_id: ID,
    /// What changed (with `coalesce`, the latest of `changes`); null on a resync.
    pub change: Option<SeatChange>,
    /// Every change this update carries, in commit order: one, or with `coalesce`
    /// all that were waiting; empty on a resync.
    pub changes: Vec<SeatChange>,
    /// Changes may have been missed (this subscriber fell behind, or the gateway had
    /// to re-open its upstream stream): reload the seat map.
    pub resync: bool,
}

#[derive(Clone, Debug, SimpleObject)]
pub struct SeatChange {
    pub seat_id: ID,
    /// The seat's state after the change.
    pub state: SeatState,
    pub reason: SeatChangeReason,
    pub changed_at: DateTime<Utc>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum SeatChangeReason {
    Held,
    Booked,
    Released,
    /// A lapsed hold was freed.
    Expired,
    Blocked,
    Unblocked,
}

impl SeatMapUpdate {
    fn resync_of(showtime: ID) -> Self {
        Self { showtime_id: showtime, change: None, changes: Vec::new(), resync: true }
    }

    fn from_changes(showtime: ID, changes: &[Arc<cinema::SeatChange>]) -> async_graphql::Result<Self> {
        let changes =
            changes.iter().map(|c| SeatChange::from_proto(c)).collect::<async_graphql::Result<Vec<_>>>()?;
        Ok(Self { showtime_id: showtime, change: changes.last().cloned(), changes, resync: false })
    }
}

impl SeatChange {
    fn from_proto(change: &cinema::SeatChange) -> async_graphql::Result<Self> {
        let broken = |what: &str| {
            async_graphql::Error::from(GatewayError::Unexpected(anyhow::anyhow!("upstream sent {what}")))
        };
        let state = match cinema::SeatState::try_from(change.state) {
            Ok(cinema::SeatState::Available) => SeatState::Available,
            Ok(cinema::SeatState::Held) => SeatState::Held,
            Ok(cinema::SeatState::Booked) => SeatState::Booked,
            Ok(cinema::SeatState::Blocked) => SeatState::Blocked,
            Ok(cinema::SeatState::Unspecified) | Err(_) => {
                return Err(broken("a seat change without a state"));
            }
        };
        let reason = match cinema::SeatChangeReason::try_from(change.reason) {
            Ok(cinema::SeatChangeReason::Held) => SeatChangeReason::Held,
            Ok(cinema::SeatChangeReason::Booked) => SeatChangeReason::Booked,
            Ok(cinema::SeatChangeReason::Released) => SeatChangeReason::Released,
            Ok(cinema::SeatChangeReason::Expired) => SeatChangeReason::Expired,
            Ok(cinema::SeatChangeReason::Blocked) => SeatChangeReason::Blocked,
            Ok(cinema::SeatChangeReason::Unblocked) => SeatChangeReason::Unblocked,
            Ok(cinema::SeatChangeReason::Unspecified) | Err(_) => {
                return Err(broken("a seat change without a reason"));
            }
        };
        let changed_at = change
            .changed_at
            .as_ref()
            .and_then(marquee_kit::time::from_proto)
            .ok_or_else(|| broken("a seat change without a time"))?;
        Ok(Self { seat_id: ID(change.seat_id.clone()), state, reason, changed_at })
    }
}

#[cfg(test)]
mod tests {
    use crate::upstream::Upstreams;
    use marquee_kit::Config as _;

    /// The subscription names clients rely on (DESIGN.md) must not drift.
    #[tokio::test]
    async fn the_sdl_keeps_the_subscription_contract() {
        let settings = crate::Settings::for_tests().unwrap();
        let sdl = super::super::build(Upstreams::connect(&settings).unwrap()).sdl();
        for line in [
            "type Subscription {",
            // DESIGN.md's `seatMap(showtimeId: ID!): SeatMapUpdate!`, plus an optional
            // argument: every query written against the contract stays valid.
            "seatMap(showtimeId: ID!, coalesce: Boolean! = false): SeatMapUpdate!",
            "type SeatMapUpdate {",
            "change: SeatChange",
            "changes: [SeatChange!]!",
            "resync: Boolean!",
            "seatId: ID!",
            "state: SeatState!",
            "reason: SeatChangeReason!",
            "changedAt: DateTime!",
        ] {
            assert!(sdl.contains(line), "missing `{line}` in\n{sdl}");
        }
    }
}
