//! Connected users: many WebSocket connections to one or more gateways
//! (graphql-transport-ws), each holding one `seatMap(showtimeId)` subscription, counting
//! every seat change it is sent and how late it arrives (receive time minus the
//! change's `changedAt`).
//!
//! Every connection is a descriptor at both ends, and RLIMIT_NOFILE is per process: the
//! load generator holds its ends in subscriber hosts (`marquee-bench subscriber-host`,
//! child processes of this one, each under the limit), so only each gateway's own
//! share is bound by it. Subscriber i of a run goes to the same showtime, gateway and
//! source address whichever host holds it (`Plan::slot`). The hosts report progress
//! and, once stopped, a `Tally` of what their subscribers saw that adds up across
//! hosts; `judge` reads the sum.
//!
//! A source port is picked when the socket is bound, before it knows its destination,
//! so one loopback address has ~28,000 of them whatever the gateways: the connections
//! bind their source to 127.0.0.1, 127.0.0.2, ... in turn, counted over the whole run
//! since the hosts share the machine's ports.
//!
//! Files: `client.rs` (one process's connections), `host.rs` (the subscriber host and
//! what it says to its parent), `fleet.rs` (the parent's handle on its hosts),
//! `tally.rs` (what the subscribers saw, and the verdict on it).

mod client;
mod fleet;
pub mod host;
mod tally;

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use self::fleet::{Stopped, Subscribers, open};
pub use self::tally::{Tally, judge};

/// Connections per source address: well under the ~28,000 ephemeral ports of one.
const PER_SOURCE_ADDRESS: usize = 10_000;

/// A run's subscribers: `count` of them, spread round-robin over `showtimes` (index i
/// watches `showtimes[i % len]`, after the first `focused` which all watch
/// `showtimes[0]`) and over `gateways` (index i connects to `gateways[i % len]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub gateways: Vec<SocketAddr>,
    pub showtimes: Vec<String>,
    pub count: usize,
    pub focused: usize,
}

/// Where one subscriber goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Index into the plan's showtimes.
    pub showtime: usize,
    /// Index into the plan's gateways.
    pub gateway: usize,
    pub source: Ipv4Addr,
}

impl Plan {
    pub fn slot(&self, index: usize) -> anyhow::Result<Slot> {
        anyhow::ensure!(!self.showtimes.is_empty(), "no showtime to watch");
        anyhow::ensure!(!self.gateways.is_empty(), "no gateway to connect to");
        let octet =
            u8::try_from(1 + index / PER_SOURCE_ADDRESS).context("too many connections for 127.0.0.x")?;
        Ok(Slot {
            showtime: if index < self.focused { 0 } else { index % self.showtimes.len() },
            gateway: index % self.gateways.len(),
            source: Ipv4Addr::new(127, 0, 0, octet),
        })
    }

    /// How many subscribers watch each showtime.
    pub fn per_showtime(&self) -> anyhow::Result<Vec<usize>> {
        let mut per_showtime = vec![0; self.showtimes.len()];
        for index in 0..self.count {
            per_showtime[self.slot(index)?.showtime] += 1;
        }
        Ok(per_showtime)
    }

    /// The hosts' shares of the subscribers: consecutive ranges of indices, as even as
    /// can be, none larger than `per_host`.
    pub fn shares(&self, per_host: usize) -> Vec<Range<usize>> {
        let hosts = self.count.div_ceil(per_host.max(1));
        let mut start = 0;
        (0..hosts)
            .map(|host| {
                let size = self.count / hosts + usize::from(host < self.count % hosts);
                start += size;
                start - size..start
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn plan(count: usize, focused: usize) -> Plan {
        let gateways = (0..3).map(|i| SocketAddr::from(([127, 0, 0, 1], 7380 + i))).collect();
        Plan { gateways, showtimes: (0..8).map(|i| format!("showtime-{i}")).collect(), count, focused }
    }

    /// The assignment of the single process that held every subscriber before hosts.
    fn one_process(plan: &Plan, i: usize) -> (usize, usize, IpAddr) {
        let which = if i < plan.focused { 0 } else { i % plan.showtimes.len() };
        let octet = u8::try_from(1 + i / 10_000).unwrap();
        (which, i % plan.gateways.len(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet)))
    }

    #[test]
    fn the_hosts_share_every_subscriber_once_none_over_its_limit() {
        let plan = plan(50_000, 5_000);
        let shares = plan.shares(18_000);
        assert_eq!(shares, vec![0..16_667, 16_667..33_334, 33_334..50_000]);
        assert_eq!(plan.shares(1_000).len(), 50);
        assert!(plan.shares(1_000).iter().all(|s| s.len() == 1_000));
        assert_eq!(
            Plan { count: 3_000, ..plan.clone() }.shares(1_000),
            vec![0..1_000, 1_000..2_000, 2_000..3_000]
        );
        assert_eq!(Plan { count: 1_500, ..plan.clone() }.shares(18_000), vec![0..1_500]);
        assert_eq!(Plan { count: 0, ..plan }.shares(18_000), Vec::<Range<usize>>::new());
    }

    #[test]
    fn a_subscriber_goes_where_it_went_when_one_process_held_them_all() {
        let plan = plan(50_000, 5_000);
        let mut per_host_showtimes = vec![0; plan.showtimes.len()];
        for share in plan.shares(18_000) {
            for i in share {
                let slot = plan.slot(i).unwrap();
                assert_eq!((slot.showtime, slot.gateway, IpAddr::V4(slot.source)), one_process(&plan, i));
                per_host_showtimes[slot.showtime] += 1;
            }
        }
        assert_eq!(per_host_showtimes, plan.per_showtime().unwrap());
        // 18,000 with 5,000 focused, as the runs of 2026-12-05 had them.
        let before = Plan { count: 18_000, ..plan.clone() }.per_showtime().unwrap();
        assert_eq!(before, vec![6625, 1625, 1625, 1625, 1625, 1625, 1625, 1625]);
        assert_eq!(plan.slot(49_999).unwrap().source, Ipv4Addr::new(127, 0, 0, 5));
        assert!(plan.slot(2_550_000).is_err());
        assert!(Plan { gateways: Vec::new(), ..plan }.slot(0).is_err());
    }
}
