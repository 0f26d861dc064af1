//! What the MongoDB-wire server was asked to do: its `serverStatus` opcounters (commands
//! per bucket since the server started, server-wide: every client on the machine counts,
//! including drivers' own monitoring `hello`s in `command`), read before and after a
//! stretch of load.

use anyhow::Context;
use mongodb::bson::{Document, doc};
use serde_json::{Value, json};

use crate::stats::round1;

/// mongod's opcounter buckets, in its order.
pub const BUCKETS: [&str; 6] = ["insert", "query", "update", "delete", "getmore", "command"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpCounters([i64; 6]);

impl OpCounters {
    /// The counters of a `serverStatus` answer.
    pub fn from_server_status(status: &Document) -> anyhow::Result<Self> {
        let counters = status.get_document("opcounters").context("serverStatus has no opcounters")?;
        let mut counts = [0; 6];
        for (count, bucket) in counts.iter_mut().zip(BUCKETS) {
            let value = counters.get(bucket).with_context(|| format!("no opcounters.{bucket}"))?;
            // mongod answers int32 or int64 depending on the size; some servers a double.
            *count = value
                .as_i64()
                .or_else(|| value.as_i32().map(i64::from))
                .or_else(|| value.as_f64().map(|f| f as i64))
                .with_context(|| format!("opcounters.{bucket} is not a number: {value}"))?;
        }
        Ok(Self(counts))
    }
}

/// Reads the server's opcounters now.
pub async fn read(client: &mongodb::Client) -> anyhow::Result<OpCounters> {
    let status = client
        .database("admin")
        .run_command(doc! { "serverStatus": 1 })
        .await
        .context("serverStatus failed")?;
    OpCounters::from_server_status(&status)
}

/// Commands per bucket between two readings, in all and per confirmed booking (null
/// without a confirmed booking).
pub fn between(before: &OpCounters, after: &OpCounters, confirmed: usize) -> Value {
    let mut counts = serde_json::Map::new();
    let mut per_booking = serde_json::Map::new();
    let per = |n: i64| (confirmed > 0).then(|| round1(n as f64 / confirmed as f64));
    let mut total = 0;
    for (i, bucket) in BUCKETS.iter().enumerate() {
        // A restarted server starts from zero again: no negative counts.
        let n = (after.0[i] - before.0[i]).max(0);
        total += n;
        counts.insert((*bucket).to_owned(), json!(n));
        per_booking.insert((*bucket).to_owned(), json!(per(n)));
    }
    counts.insert("total".to_owned(), json!(total));
    per_booking.insert("total".to_owned(), json!(per(total)));
    json!({ "commands": counts, "per_confirmed_booking": per_booking })
}

#[cfg(test)]
mod tests {
    use mongodb::bson::{Bson, doc};

    use super::{OpCounters, between};

    #[test]
    fn counts_the_commands_between_two_readings_per_confirmed_booking() {
        let before = OpCounters::from_server_status(&doc! { "opcounters": {
            "insert": 10, "query": 20_i64, "update": 5, "delete": 0, "getmore": 1, "command": 100.0,
        } })
        .unwrap();
        let after = OpCounters::from_server_status(&doc! { "opcounters": {
            "insert": 30, "query": 60_i64, "update": 25, "delete": 4, "getmore": 1, "command": 140.0,
        } })
        .unwrap();
        let ops = between(&before, &after, 4);
        assert_eq!(ops["commands"]["insert"], 20);
        assert_eq!(ops["commands"]["query"], 40);
        assert_eq!(ops["commands"]["total"], 124);
        assert_eq!(ops["per_confirmed_booking"]["update"], 5.0);
        assert_eq!(ops["per_confirmed_booking"]["total"], 31.0);
        assert!(between(&before, &after, 0)["per_confirmed_booking"]["total"].is_null());
    }

    #[test]
    fn a_status_without_opcounters_is_an_error() {
        assert!(OpCounters::from_server_status(&doc! { "ok": 1.0 }).is_err());
        let bad = doc! { "opcounters": { "insert": Bson::String("x".to_owned()) } };
        assert!(OpCounters::from_server_status(&bad).is_err());
    }
}
