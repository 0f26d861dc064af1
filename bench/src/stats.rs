//! Latency samples and their percentiles.

use serde_json::{Value, json};

/// Latencies in milliseconds. Kept raw (a few hundred thousand at most) and sorted once
/// on read, so percentiles are exact rather than bucketed.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn push(&mut self, ms: f64) {
        self.0.push(ms);
    }

    pub fn extend(&mut self, other: Samples) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The nearest-rank percentile, `q` in 0..=1; `None` without samples.
    pub fn percentile(&mut self, q: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_by(f64::total_cmp);
        let rank = ((self.0.len() as f64 * q).ceil() as usize).clamp(1, self.0.len());
        Some(self.0[rank - 1])
    }

    /// `{count, p50_ms, p99_ms, p999_ms, max_ms}`, null percentiles without samples.
    pub fn summary(&mut self) -> Value {
        json!({
            "count": self.len(),
            "p50_ms": self.percentile(0.50).map(round2),
            "p99_ms": self.percentile(0.99).map(round2),
            "p999_ms": self.percentile(0.999).map(round2),
            "max_ms": self.percentile(1.0).map(round2),
        })
    }
}

pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples = Samples::default();
        for ms in (1..=1000).rev() {
            samples.push(f64::from(ms));
        }
        assert_eq!(samples.percentile(0.5), Some(500.0));
        assert_eq!(samples.percentile(0.99), Some(990.0));
        assert_eq!(samples.percentile(0.999), Some(999.0));
        assert_eq!(samples.percentile(1.0), Some(1000.0));
        assert_eq!(Samples::default().percentile(0.5), None);
    }
}
