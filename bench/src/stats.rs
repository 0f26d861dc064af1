//! Latency samples and their percentiles: raw (`Samples`), or in 1 ms buckets where
//! they must travel between processes and add up (`Histogram`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
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

    pub fn values(&self) -> &[f64] {
        &self.0
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

/// Latencies in 1 ms buckets (bucket k counts the samples in [k, k + 1) ms) and the
/// exact maximum: a few thousand numbers however many millions of samples, so a
/// subscriber host can send its own and the parent can add them up. Percentiles are
/// nearest-rank as `Samples`' are, read as the bucket's upper edge (overstated by less
/// than 1 ms, never understated) capped at the maximum.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    buckets: BTreeMap<i64, u64>,
    count: u64,
    max_ms: Option<f64>,
}

impl Histogram {
    pub fn push(&mut self, ms: f64) {
        *self.buckets.entry(ms.floor() as i64).or_default() += 1;
        self.count += 1;
        self.max_ms = Some(self.max_ms.map_or(ms, |max| max.max(ms)));
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (bucket, count) in &other.buckets {
            *self.buckets.entry(*bucket).or_default() += count;
        }
        self.count += other.count;
        self.max_ms = match (self.max_ms, other.max_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// The nearest-rank percentile, `q` in 0..=1; `None` without samples.
    pub fn percentile(&self, q: f64) -> Option<f64> {
        let max = self.max_ms?;
        let rank = ((self.count as f64 * q).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        let bucket = self.buckets.iter().find_map(|(bucket, count)| {
            seen += count;
            (seen >= rank).then_some(*bucket)
        })?;
        Some(((bucket + 1) as f64).min(max))
    }

    /// `{count, p50_ms, p99_ms, p999_ms, max_ms}` as `Samples::summary` has them.
    pub fn summary(&self) -> Value {
        json!({
            "count": self.count,
            "p50_ms": self.percentile(0.50).map(round2),
            "p99_ms": self.percentile(0.99).map(round2),
            "p999_ms": self.percentile(0.999).map(round2),
            "max_ms": self.max_ms.map(round2),
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
    use super::{Histogram, Samples};

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

    #[test]
    fn a_histogram_reads_as_the_raw_samples_do_to_the_millisecond() {
        let (mut samples, mut histogram) = (Samples::default(), Histogram::default());
        for i in 0..10_000u32 {
            // 0.0 to ~3,000 ms in uneven steps.
            let ms = f64::from(i * i % 30_011) / 10.0;
            samples.push(ms);
            histogram.push(ms);
        }
        for q in [0.5, 0.9, 0.99, 0.999] {
            let (exact, bucketed) = (samples.percentile(q).unwrap(), histogram.percentile(q).unwrap());
            assert!(bucketed >= exact && bucketed - exact <= 1.0, "q {q}: {exact} vs {bucketed}");
            assert_eq!(bucketed, exact.floor() + 1.0, "q {q}");
        }
        assert_eq!(histogram.percentile(1.0), samples.percentile(1.0));
        assert_eq!(histogram.summary()["count"], 10_000);
        assert_eq!(Histogram::default().percentile(0.5), None);
        assert!(Histogram::default().summary()["p99_ms"].is_null());
    }

    #[test]
    fn merged_histograms_are_one_histogram_of_all_the_samples() {
        let (mut one, mut a, mut b) = (Histogram::default(), Histogram::default(), Histogram::default());
        for ms in [0.4, 12.5, 12.9, 250.0, 3_000.2, -0.3] {
            one.push(ms);
            a.push(ms);
        }
        for ms in [7.0, 12.1, 999.9] {
            one.push(ms);
            b.push(ms);
        }
        let mut merged = Histogram::default();
        merged.merge(&a);
        merged.merge(&Histogram::default());
        merged.merge(&b);
        assert_eq!(merged, one);
        // Through the wire and back, as a host sends it.
        let sent: Histogram = serde_json::from_str(&serde_json::to_string(&merged).unwrap()).unwrap();
        assert_eq!(sent, one);
        assert_eq!(sent.percentile(0.5), Some(13.0));
        assert_eq!(sent.percentile(1.0), Some(3_000.2));
        assert_eq!(sent.percentile(0.0), Some(0.0));
    }
}
