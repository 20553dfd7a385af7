//! Summary statistics for results: percentiles, latency summaries, pass rates.

use serde::{Deserialize, Serialize};

/// The `p`-th percentile (`p` in 0..=100) of ascending `sorted` data, by
/// linear interpolation between closest ranks — the "inclusive" definition
/// (NumPy's default `linear`, Excel's `PERCENTILE.INC`): rank
/// `r = p/100 · (n−1)`, result `x[⌊r⌋] + (r−⌊r⌋)·(x[⌈r⌉] − x[⌊r⌋])`.
/// `p` is clamped to 0..=100; empty data or a NaN `p` gives NaN.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() || p.is_nan() {
        return f64::NAN;
    }
    let rank = p.clamp(0.0, 100.0) / 100.0 * (sorted.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = rank.ceil() as usize;
    let fraction = rank - lower as f64;
    if lower == upper {
        sorted[lower]
    } else {
        sorted[lower] + fraction * (sorted[upper] - sorted[lower])
    }
}

/// Latency distribution of a set of results, in the unit of its input.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: f64,
    #[serde(default)]
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub mean: f64,
    pub max: f64,
    pub count: u64,
}

impl LatencySummary {
    /// Summarizes `values`, ignoring NaNs. No values gives all zeros.
    pub fn from_unsorted(mut values: Vec<f64>) -> Self {
        values.retain(|v| !v.is_nan());
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let sum: f64 = values.iter().sum();
        Self {
            p50: percentile(&values, 50.0),
            p90: percentile(&values, 90.0),
            p95: percentile(&values, 95.0),
            p99: percentile(&values, 99.0),
            mean: sum / values.len() as f64,
            max: values[values.len() - 1],
            count: values.len() as u64,
        }
    }
}

/// Whole-number latencies counted by value: the same summary as
/// [`LatencySummary::from_unsorted`] over the values, exactly, in memory
/// that grows with the distinct values (a few thousand milliseconds), not
/// with their count, so a run of a million results is summarized in a few
/// kilobytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyCounts {
    counts: std::collections::BTreeMap<i64, u64>,
    count: u64,
    sum: i128,
}

impl LatencyCounts {
    pub fn add(&mut self, value: i64) {
        self.add_n(value, 1);
    }

    /// Counts `value` `n` times.
    pub fn add_n(&mut self, value: i64, n: u64) {
        if n == 0 {
            return;
        }
        *self.counts.entry(value).or_default() += n;
        self.count += n;
        self.sum += i128::from(value) * i128::from(n);
    }

    /// Adds every value `other` counted (as summing two runs' latencies).
    pub fn merge(&mut self, other: &LatencyCounts) {
        for (&value, &n) in &other.counts {
            self.add_n(value, n);
        }
    }

    /// The value at `index` of the values in ascending order.
    fn at(&self, index: u64) -> f64 {
        let mut seen = 0;
        for (&value, &n) in &self.counts {
            seen += n;
            if index < seen {
                return value as f64;
            }
        }
        f64::NAN
    }

    /// As [`percentile`] over the sorted values.
    fn percentile(&self, p: f64) -> f64 {
        let rank = p.clamp(0.0, 100.0) / 100.0 * (self.count - 1) as f64;
        let (lower, upper) = (rank.floor() as u64, rank.ceil() as u64);
        let fraction = rank - lower as f64;
        let low = self.at(lower);
        if lower == upper {
            low
        } else {
            low + fraction * (self.at(upper) - low)
        }
    }

    pub fn summary(&self) -> LatencySummary {
        if self.count == 0 {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: self.percentile(50.0),
            p90: self.percentile(90.0),
            p95: self.percentile(95.0),
            p99: self.percentile(99.0),
            mean: self.sum as f64 / self.count as f64,
            max: self.counts.keys().next_back().map_or(0.0, |&v| v as f64),
            count: self.count,
        }
    }
}

/// `passed / total` in 0..=1; 0 when there is nothing to count.
pub fn pass_rate(passed: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        passed as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn counted_latencies_summarize_exactly_as_the_values(
            values in prop::collection::vec(-5i64..100_000, 0..400),
            repeats in 1usize..4,
        ) {
            let mut counts = LatencyCounts::default();
            let mut grouped = LatencyCounts::default();
            let mut all = Vec::new();
            for _ in 0..repeats {
                for &v in &values {
                    counts.add(v);
                    all.push(v as f64);
                }
            }
            // As a database's GROUP BY hands them: each value once, counted.
            for &v in &values {
                grouped.add_n(v, repeats as u64);
            }
            prop_assert_eq!(grouped.summary(), counts.summary());
            prop_assert_eq!(counts.summary(), LatencySummary::from_unsorted(all));
        }

        #[test]
        fn merged_counts_are_the_counts_of_both(
            a in prop::collection::vec(0i64..5_000, 0..200),
            b in prop::collection::vec(0i64..5_000, 0..200),
        ) {
            let (mut left, mut right, mut both) =
                (LatencyCounts::default(), LatencyCounts::default(), LatencyCounts::default());
            a.iter().for_each(|&v| { left.add(v); both.add(v) });
            b.iter().for_each(|&v| { right.add(v); both.add(v) });
            left.merge(&right);
            prop_assert_eq!(left, both);
        }
    }

    #[test]
    fn percentile_interpolates_between_closest_ranks() {
        let data = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(percentile(&data, 0.0), 10.0);
        assert_eq!(percentile(&data, 100.0), 40.0);
        assert_eq!(percentile(&data, 50.0), 25.0);
        // rank 0.95 * 3 = 2.85 → 30 + 0.85 * 10
        assert!((percentile(&data, 95.0) - 38.5).abs() < 1e-9);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&data, 150.0), 40.0);
        assert_eq!(percentile(&data, -5.0), 10.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert!(percentile(&data, f64::NAN).is_nan());
    }

    #[test]
    fn latency_summary_of_unsorted_values() {
        let s = LatencySummary::from_unsorted(vec![300.0, 100.0, f64::NAN, 200.0, 400.0, 500.0]);
        assert_eq!(s.count, 5);
        assert_eq!(s.p50, 300.0);
        assert_eq!(s.max, 500.0);
        assert_eq!(s.mean, 300.0);
        assert!((s.p95 - 480.0).abs() < 1e-9);
        assert!((s.p99 - 496.0).abs() < 1e-9);
    }

    #[test]
    fn latency_summary_of_nothing_is_zero() {
        assert_eq!(
            LatencySummary::from_unsorted(vec![]),
            LatencySummary::default()
        );
    }

    #[test]
    fn pass_rate_handles_empty_totals() {
        assert_eq!(pass_rate(3, 4), 0.75);
        assert_eq!(pass_rate(0, 0), 0.0);
    }

    proptest! {
        #[test]
        fn percentile_is_monotonic_and_bounded(
            mut data in proptest::collection::vec(-1e6f64..1e6, 1..50),
            p in 0.0f64..100.0, q in 0.0f64..100.0,
        ) {
            data.sort_by(f64::total_cmp);
            let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
            let a = percentile(&data, lo);
            let b = percentile(&data, hi);
            prop_assert!(a <= b + 1e-9 * b.abs().max(1.0));
            prop_assert!(a >= data[0] && b <= data[data.len() - 1]);
        }

        #[test]
        fn summary_is_ordered(data in proptest::collection::vec(0.0f64..1e5, 1..60)) {
            let s = LatencySummary::from_unsorted(data);
            prop_assert!(s.p50 <= s.p95 && s.p95 <= s.p99 && s.p99 <= s.max);
            prop_assert!(s.mean <= s.max);
        }
    }
}
