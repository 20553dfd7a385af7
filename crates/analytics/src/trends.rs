//! GetTrends: one suite's completed runs over time, per provider and
//! bucket (hour, day, week), from the runs' rollups. The rows arrive per
//! run; they are gathered per run × provider index × bucket first (the
//! provider's name is in each run's suite, read once per run afterwards),
//! then merged per provider name × bucket.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, DurationRound, Utc};
use gauntlet_core::stats::LatencyCounts;
use gauntlet_proto::v1;
use gauntlet_service::convert;
use gauntlet_store::{ResultStatus, TrendMetrics, TrendRow};
use uuid::Uuid;

use crate::{
    stats,
    summary::{CONFIDENCE, interval},
};

/// Buckets a request may span, at most.
pub const MAX_BUCKETS: i64 = 1000;
/// Buckets back from `until` when a request names no `since`.
pub const DEFAULT_BUCKETS: i32 = 30;

/// A bucket's length.
pub fn length(bucket: v1::TrendBucket) -> Duration {
    match bucket {
        v1::TrendBucket::Hour => Duration::hours(1),
        v1::TrendBucket::Unspecified | v1::TrendBucket::Day => Duration::days(1),
        v1::TrendBucket::Week => Duration::weeks(1),
    }
}

/// The start of the bucket holding `t` (UTC; weeks start on Monday).
pub fn start(t: DateTime<Utc>, bucket: v1::TrendBucket) -> DateTime<Utc> {
    let day = t.duration_trunc(Duration::days(1)).unwrap_or(t);
    match bucket {
        v1::TrendBucket::Hour => t.duration_trunc(Duration::hours(1)).unwrap_or(t),
        v1::TrendBucket::Unspecified | v1::TrendBucket::Day => day,
        v1::TrendBucket::Week => {
            day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
        }
    }
}

#[derive(Default)]
struct Point {
    runs: BTreeSet<Uuid>,
    passed: u64,
    total: u64,
    latencies: LatencyCounts,
    cost_usd: f64,
}

impl Point {
    fn merge(&mut self, other: &Point) {
        self.runs.extend(&other.runs);
        self.passed += other.passed;
        self.total += other.total;
        self.latencies.merge(&other.latencies);
        self.cost_usd += other.cost_usd;
    }
}

/// Gathers a trend's rows.
pub struct Trend {
    bucket: v1::TrendBucket,
    /// (run, provider index) → its bucket's figures.
    per_run: BTreeMap<(Uuid, i32), (DateTime<Utc>, Point)>,
}

impl Trend {
    pub fn new(bucket: v1::TrendBucket) -> Self {
        Trend {
            bucket,
            per_run: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, row: &TrendMetrics) {
        let provider = match &row.row {
            TrendRow::Metrics(m) => m.provider_index,
            TrendRow::Latency(l) => l.provider_index,
        };
        let (_, point) = self
            .per_run
            .entry((row.run_id, provider))
            .or_insert_with(|| (start(row.created_at, self.bucket), Point::default()));
        point.runs.insert(row.run_id);
        match &row.row {
            TrendRow::Metrics(m) => {
                let n = m.count.max(0) as u64;
                point.total += n;
                if m.status == ResultStatus::Pass {
                    point.passed += n;
                }
                point.cost_usd += m.cost_usd;
            }
            // Answered results only, as in a summary.
            TrendRow::Latency(l) => point
                .latencies
                .add_n(i64::from(l.latency_ms), l.count.max(0) as u64),
        }
    }

    /// The runs seen, to name their providers.
    pub fn runs(&self) -> BTreeSet<Uuid> {
        self.per_run.keys().map(|(run, _)| *run).collect()
    }

    /// The points per provider name (from `names`: run → its providers'
    /// names, by index), keeping only `only` when it is given.
    pub fn finish(
        self,
        names: &BTreeMap<Uuid, Vec<String>>,
        only: Option<&str>,
    ) -> Vec<v1::TrendPoint> {
        let mut merged: BTreeMap<(String, DateTime<Utc>), Point> = BTreeMap::new();
        for ((run, provider), (at, point)) in &self.per_run {
            let name = names
                .get(run)
                .and_then(|n| n.get(*provider as usize))
                .cloned()
                .unwrap_or_else(|| format!("provider {provider}"));
            if only.is_some_and(|only| only != name) {
                continue;
            }
            merged.entry((name, *at)).or_default().merge(point);
        }
        merged
            .into_iter()
            .map(|((provider, at), p)| v1::TrendPoint {
                provider,
                start: Some(convert::timestamp(at)),
                runs: p.runs.len() as u32,
                total: p.total,
                passed: p.passed,
                pass_rate: Some(interval(stats::wilson(p.passed, p.total, CONFIDENCE))),
                p95_latency_ms: p.latencies.summary().p95,
                cost_usd: p.cost_usd,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use gauntlet_store::{LatencyCount, ResultMetrics};

    use super::*;

    fn at(d: u32, h: u32) -> DateTime<Utc> {
        // 2026-11-02 is a Monday.
        Utc.with_ymd_and_hms(2026, 11, d, h, 17, 5).unwrap()
    }

    #[test]
    fn buckets_start_on_the_hour_the_day_and_monday() {
        let t = at(5, 13); // a Thursday
        assert_eq!(
            start(t, v1::TrendBucket::Hour),
            Utc.with_ymd_and_hms(2026, 11, 5, 13, 0, 0).unwrap()
        );
        assert_eq!(
            start(t, v1::TrendBucket::Day),
            Utc.with_ymd_and_hms(2026, 11, 5, 0, 0, 0).unwrap()
        );
        assert_eq!(
            start(t, v1::TrendBucket::Unspecified),
            start(t, v1::TrendBucket::Day)
        );
        assert_eq!(
            start(t, v1::TrendBucket::Week),
            Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()
        );
        assert_eq!(
            start(at(2, 0), v1::TrendBucket::Week),
            Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()
        );
        assert_eq!(
            start(at(8, 23), v1::TrendBucket::Week),
            Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap()
        );
    }

    /// A group of `n` results, and their latency unless they errored.
    fn rows(
        run: Uuid,
        created: DateTime<Utc>,
        provider: i32,
        status: ResultStatus,
        latency: i32,
        n: i64,
    ) -> Vec<TrendMetrics> {
        let row = |row| TrendMetrics {
            run_id: run,
            created_at: created,
            row,
        };
        let mut out = vec![row(TrendRow::Metrics(ResultMetrics {
            provider_index: provider,
            prompt_index: 0,
            status,
            count: n,
            tokens_in: 0,
            tokens_out: 0,
            cost_usd: 0.25 * n as f64,
            score_sum: 0.0,
            score_sq_sum: 0.0,
        }))];
        if status != ResultStatus::Error {
            out.push(row(TrendRow::Latency(LatencyCount {
                provider_index: provider,
                prompt_index: 0,
                latency_ms: latency,
                count: n,
            })));
        }
        out
    }

    #[test]
    fn runs_merge_per_provider_name_and_bucket() {
        let (r1, r2, r3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut trend = Trend::new(v1::TrendBucket::Day);
        // Day 3: r1 and r2; provider "a" is index 0 in r1 and index 1 in r2.
        rows(r1, at(3, 1), 0, ResultStatus::Pass, 100, 3)
            .iter()
            .for_each(|r| trend.add(r));
        rows(r1, at(3, 1), 0, ResultStatus::Fail, 300, 1)
            .iter()
            .for_each(|r| trend.add(r));
        rows(r1, at(3, 1), 1, ResultStatus::Pass, 50, 4)
            .iter()
            .for_each(|r| trend.add(r));
        rows(r2, at(3, 22), 1, ResultStatus::Pass, 200, 4)
            .iter()
            .for_each(|r| trend.add(r));
        rows(r2, at(3, 22), 1, ResultStatus::Error, 9_000, 2)
            .iter()
            .for_each(|r| trend.add(r));
        // Day 4: r3.
        rows(r3, at(4, 9), 0, ResultStatus::Fail, 100, 2)
            .iter()
            .for_each(|r| trend.add(r));
        let names = BTreeMap::from([
            (r1, vec!["a".to_owned(), "b".to_owned()]),
            (r2, vec!["b".to_owned(), "a".to_owned()]),
            (r3, vec!["a".to_owned()]),
        ]);
        assert_eq!(trend.runs(), BTreeSet::from([r1, r2, r3]));
        let points = trend.finish(&names, None);
        let got: Vec<_> = points
            .iter()
            .map(|p| {
                (
                    p.provider.as_str(),
                    p.runs,
                    p.passed,
                    p.total,
                    (p.p95_latency_ms * 1e9).round() / 1e9,
                    p.cost_usd,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                // 100×3, 200×4, 300 (the errors' 9 s left out): p95 at
                // rank 0.95 × 7 = 6.65, between 200 and 300.
                ("a", 2, 7, 10, 265.0, 2.5),
                ("a", 1, 0, 2, 100.0, 0.5),
                ("b", 1, 4, 4, 50.0, 1.0),
            ]
        );
        let day = |p: &v1::TrendPoint| p.start.unwrap().seconds;
        assert!(day(&points[0]) < day(&points[1]));
        let first = points[0].pass_rate.unwrap();
        assert_eq!(first.estimate, 0.7);
        assert!(first.low < 0.7 && first.high > 0.7);

        let mut again = Trend::new(v1::TrendBucket::Day);
        rows(r1, at(3, 1), 1, ResultStatus::Pass, 50, 4)
            .iter()
            .for_each(|r| again.add(r));
        assert!(again.finish(&names, Some("a")).is_empty());
    }
}
