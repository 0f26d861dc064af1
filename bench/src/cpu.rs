//! Where the CPU went: per-process CPU time from /proc, grouped by what the process is
//! (this process = the in-process mesh plus the load generator; its subscriber hosts;
//! the gateway's own process; the other services' own processes; PostgreSQL; the
//! MongoDB-wire server; RabbitMQ; Redis; everything else on the machine), and the
//! machine's steal time: CPU the hypervisor gave to other guests while this one wanted
//! it, which makes the same work cost more CPU here and readings of a busy host noisy.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::stats::{round1, round2, round3};

/// Linux's USER_HZ; `getconf CLK_TCK` is 100 on every mainstream kernel config.
const TICKS_PER_SECOND: f64 = 100.0;

/// The group of the gateway's own processes.
pub const GATEWAY: &str = "marquee-gateway";
/// The group of the load generator's subscriber hosts.
pub const SUBSCRIBER_HOSTS: &str = "marquee-bench (subscriber hosts)";

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// CPU ticks (user + system) per group.
    groups: BTreeMap<&'static str, u64>,
    /// The machine's steal ticks, all CPUs together (0 where the kernel counts none).
    steal: u64,
}

fn group(pid: u32, comm: &str) -> &'static str {
    if pid == std::process::id() {
        return "marquee (mesh + load generator)";
    }
    match comm {
        // comm is the executable's name cut to 15 bytes: exactly this one.
        "marquee-gateway" => GATEWAY,
        // Another marquee-bench: this one's subscriber hosts.
        "marquee-bench" => SUBSCRIBER_HOSTS,
        // The services as their own binaries (`marquee-bench replicas`, scripts/up).
        c if c.starts_with("marquee-") => "marquee services (own processes)",
        "postgres" | "pgbench" => "postgresql",
        c if c.starts_with("secantus") => "secantusd-rs (mongodb wire)",
        "beam.smp" | "erl_child_setup" | "inet_gethost" | "epmd" => "rabbitmq",
        "redis-server" => "redis",
        _ => "other",
    }
}

/// CPU ticks (user + system) of every process, summed per group.
pub fn snapshot() -> Snapshot {
    take(false)
}

/// `snapshot`, each process also counting the children it has waited for: so a window
/// in which processes start and end (pgbench, and PostgreSQL's backends for its
/// connections, waited for by the postmaster) loses none of their CPU. Only for such a
/// window: one in which a process waits for a child started before it would count the
/// child's whole life.
pub fn snapshot_with_children() -> Snapshot {
    take(true)
}

fn take(with_children: bool) -> Snapshot {
    let mut totals = BTreeMap::new();
    let steal = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| steal_ticks(&stat)).unwrap_or(0);
    let Ok(entries) = std::fs::read_dir("/proc") else { return Snapshot { groups: totals, steal } };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((comm, ticks)) = parse_stat(&stat) else { continue };
        let ticks = if with_children { ticks.own + ticks.children } else { ticks.own };
        *totals.entry(group(pid, comm)).or_default() += ticks;
    }
    Snapshot { groups: totals, steal }
}

/// The steal ticks of `/proc/stat`'s "cpu" line (all CPUs): "cpu user nice system idle
/// iowait irq softirq steal ...".
fn steal_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    line.split_whitespace().nth(8)?.parse().ok()
}

/// CPU seconds (user + system) process `pid` has used so far; None once it is gone.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_stat(&stat)?.1.own as f64 / TICKS_PER_SECOND)
}

/// A process's CPU ticks (user + system): its own, and those of the children it has
/// waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticks {
    own: u64,
    children: u64,
}

/// A `/proc/<pid>/stat` line's command name and CPU ticks.
fn parse_stat(stat: &str) -> Option<(&str, Ticks)> {
    // "pid (comm) state ppid ...": comm may hold spaces, so split at the last ')'.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After comm: state(0) ... utime(11) stime(12) cutime(13) cstime(14).
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    Some((&stat[open + 1..close], Ticks { own: ticks(11) + ticks(12), children: ticks(13) + ticks(14) }))
}

/// CPU seconds per group between two snapshots, and the share of the machine's
/// CPU capacity over `seconds` of wall time.
pub fn between(before: &Snapshot, after: &Snapshot, seconds: f64) -> Value {
    per_group(before, after, seconds, None)
}

/// `between`, plus each group's CPU seconds per confirmed booking (null without one).
pub fn per_booking(before: &Snapshot, after: &Snapshot, seconds: f64, confirmed: usize) -> Value {
    per_group(before, after, seconds, Some(confirmed))
}

fn per_group(before: &Snapshot, after: &Snapshot, seconds: f64, confirmed: Option<usize>) -> Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let mut groups = serde_json::Map::new();
    let mut total = 0.0;
    for (name, &end) in &after.groups {
        let start = before.groups.get(name).copied().unwrap_or(0);
        // A process that exited in between drops out of `after`; others only grow.
        let cpu_seconds = end.saturating_sub(start) as f64 / TICKS_PER_SECOND;
        total += cpu_seconds;
        let mut group = json!({
            "cpu_seconds": round1(cpu_seconds),
            "share_of_machine_pct": round1(100.0 * cpu_seconds / (seconds * cpus).max(f64::EPSILON)),
        });
        if let Some(confirmed) = confirmed {
            group["cpu_seconds_per_confirmed_booking"] =
                json!((confirmed > 0).then(|| round3(cpu_seconds / confirmed as f64)));
            group["cpu_ms_per_confirmed_booking"] = ms_per(cpu_seconds, confirmed);
        }
        groups.insert((*name).to_owned(), group);
    }
    let mut summary = json!({
        "wall_seconds": round1(seconds),
        "cpus": cpus,
        "groups": groups,
        "total_cpu_seconds": round1(total),
        "machine_busy_pct": round1(100.0 * total / (seconds * cpus).max(f64::EPSILON)),
        "steal_pct": round1(
            100.0 * after.steal.saturating_sub(before.steal) as f64 / TICKS_PER_SECOND / (seconds * cpus).max(f64::EPSILON)
        ),
    });
    if let Some(confirmed) = confirmed {
        summary["total_cpu_ms_per_confirmed_booking"] = ms_per(total, confirmed);
    }
    summary
}

/// Milliseconds of CPU per confirmed booking; null without one.
fn ms_per(cpu_seconds: f64, confirmed: usize) -> Value {
    json!((confirmed > 0).then(|| round2(1000.0 * cpu_seconds / confirmed as f64)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_command_and_its_own_and_its_waited_for_childrens_ticks() {
        let stat = "4242 (post gres) S 1 4242 4242 0 -1 4194560 900 5 0 0 120 30 700 45 20 0 1 0 99 0 0";
        assert_eq!(parse_stat(stat), Some(("post gres", Ticks { own: 150, children: 745 })));
        assert_eq!(parse_stat("no parentheses"), None);
    }

    #[test]
    fn steal_is_the_eighth_count_of_the_all_cpus_line() {
        let stat =
            "cpu  4705 150 1120 16250 520 0 31 977 0 0\ncpu0 2000 75 560 8000 260 0 15 488 0 0\nintr 1\n";
        assert_eq!(steal_ticks(stat), Some(977));
        assert_eq!(steal_ticks("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(steal_ticks("cpu  1 2 3 4\n"), None);
    }
}
