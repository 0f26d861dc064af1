//! The gateway's own account of how late seat changes were
//! (`gateway_seat_change_lag_seconds{stage}` on its `/metrics`), read next to what the
//! subscribers measured: it splits a late seat map into "late before the gateway"
//! (`received`: cinema's change feed), "late in the gateway" (`built`: the shared
//! update carrying the change, after pacing) and the rest (sockets, the subscribers'
//! own CPU).

use std::net::SocketAddr;

use anyhow::Context;
use serde_json::{Value, json};

const SERIES: &str = "gateway_seat_change_lag_seconds_bucket{";
const STAGES: [&str; 2] = ["received", "built"];

/// The lag summary of the gateway at `addr` (see `summarise`).
pub async fn of_gateway(addr: SocketAddr) -> anyhow::Result<Value> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET /metrics of the gateway at {addr}"))?
        .text()
        .await?;
    Ok(summarise(&text))
}

/// Per stage: how many changes were recorded and the bucket bounds (ms) under which
/// half and 99% of them fell (`"> N"` when beyond the largest bucket, N ms). Buckets
/// make these upper bounds, not exact quantiles.
pub fn summarise(metrics: &str) -> Value {
    let mut stages = serde_json::Map::new();
    for stage in STAGES {
        let buckets = buckets(metrics, stage);
        let count = buckets.last().map_or(0.0, |(_, n)| *n);
        let largest = buckets.iter().map(|(le, _)| *le).filter(|le| le.is_finite()).fold(0.0, f64::max);
        let at_most = |q: f64| match buckets.iter().find(|(_, n)| *n >= q * count) {
            Some((le, _)) if le.is_finite() => json!((le * 1000.0).round()),
            _ => json!(format!("> {}", (largest * 1000.0).round())),
        };
        let summary = if count > 0.0 {
            json!({ "count": count, "p50_at_most_ms": at_most(0.5), "p99_at_most_ms": at_most(0.99) })
        } else {
            json!({ "count": 0 })
        };
        stages.insert(stage.to_owned(), summary);
    }
    Value::Object(stages)
}

/// `(le, cumulative count)` of one stage's buckets, in ascending `le` (`+Inf` last).
fn buckets(metrics: &str, stage: &str) -> Vec<(f64, f64)> {
    let stage_label = format!("stage=\"{stage}\"");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|line| {
            let (labels, value) = line.strip_prefix(SERIES)?.split_once("} ")?;
            if !labels.split(',').any(|label| label == stage_label) {
                return None;
            }
            let le = labels.split(',').find_map(|label| label.strip_prefix("le=\""))?.trim_end_matches('"');
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, value.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# TYPE gateway_seat_change_lag_seconds histogram
gateway_seat_change_lag_seconds_bucket{stage="received",le="0.01"} 90
gateway_seat_change_lag_seconds_bucket{stage="received",le="0.025"} 99
gateway_seat_change_lag_seconds_bucket{stage="received",le="0.05"} 100
gateway_seat_change_lag_seconds_bucket{stage="received",le="+Inf"} 100
gateway_seat_change_lag_seconds_sum{stage="received"} 0.6
gateway_seat_change_lag_seconds_count{stage="received"} 100
gateway_seat_change_lag_seconds_bucket{stage="built",le="0.1"} 10
gateway_seat_change_lag_seconds_bucket{stage="built",le="0.25"} 60
gateway_seat_change_lag_seconds_bucket{stage="built",le="30"} 98
gateway_seat_change_lag_seconds_bucket{stage="built",le="+Inf"} 100
gateway_http_requests_total{route="graphql",status="200"} 7
"#;

    #[test]
    fn quantiles_are_the_bounds_of_the_buckets_that_reach_them() {
        let lag = summarise(SCRAPE);
        assert_eq!(
            lag["received"],
            json!({ "count": 100.0, "p50_at_most_ms": 10.0, "p99_at_most_ms": 25.0 })
        );
        // 99 of 100 only under +Inf: beyond the largest bucket.
        assert_eq!(
            lag["built"],
            json!({ "count": 100.0, "p50_at_most_ms": 250.0, "p99_at_most_ms": "> 30000" })
        );
    }

    #[test]
    fn a_gateway_that_saw_no_change_says_so() {
        assert_eq!(summarise("gateway_subscriptions_active 0\n")["built"], json!({ "count": 0 }));
    }
}
