//! Conversions between `chrono` instants and protobuf timestamps.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

pub fn to_proto(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        // Always within 0..1e9, so the cast is lossless.
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// `None` for a timestamp outside chrono's range.
pub fn from_proto(ts: &Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_nanoseconds() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        assert_eq!(from_proto(&to_proto(at)), Some(at));
        assert_eq!(from_proto(&Timestamp { seconds: 0, nanos: -1 }), None);
    }
}
