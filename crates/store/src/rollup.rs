//! Incremental rollups: what a run summary reads, kept up to date by every
//! result write instead of recomputed from the results at every read.
//!
//! A batch's inserted rows are folded here, in Rust, into three tallies that
//! both backends then add to their rollup tables in the same transaction as
//! the rows themselves, so a rollup never disagrees with the results
//! (redelivered rows that `ON CONFLICT DO NOTHING` skipped are not folded):
//! - `run_metrics`: per provider × prompt × status, the count and the sums
//!   of tokens, cost, score and score²;
//! - `run_latencies`: per provider × prompt × latency (exact milliseconds,
//!   so percentiles stay exact), how many answered results (errors have no
//!   meaningful latency and are left out);
//! - `run_assertions`: per provider × prompt × assertion type × metric ×
//!   verdict, the count;
//! - `run_test_tallies`: per test case, results and unpassed results.
//!
//! Keys are kept sorted ([`BTreeMap`]) so every writer takes the rollup
//! rows' locks in one order: concurrent batches of a run can wait on each
//! other, never deadlock.

use std::collections::{BTreeMap, HashSet};

use crate::{NewResult, ResultStatus};

/// (provider, prompt, status as stored).
pub(crate) type MetricKey = (i32, i32, i16);

/// (provider, prompt, latency ms).
pub(crate) type LatencyKey = (i32, i32, i32);

#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct MetricSums {
    pub n: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    pub score_sum: f64,
    pub score_sq_sum: f64,
}

/// (provider, prompt, assertion type, metric name or "", passed).
pub(crate) type AssertionKey = (i32, i32, String, String, bool);

/// One batch's contribution to a run's rollups.
#[derive(Debug, Default)]
pub(crate) struct Rollup {
    pub metrics: BTreeMap<MetricKey, MetricSums>,
    pub latencies: BTreeMap<LatencyKey, i64>,
    pub assertions: BTreeMap<AssertionKey, i64>,
    /// test index → (unpassed, total).
    pub tests: BTreeMap<i32, (i64, i64)>,
    pub passed: i64,
    pub failed: i64,
    pub errors: i64,
    pub cost_usd: f64,
}

impl Rollup {
    /// Folds one stored result in.
    pub fn add(&mut self, r: &NewResult) {
        let sums = self
            .metrics
            .entry((r.provider_index, r.prompt_index, r.status as i16))
            .or_default();
        sums.n += 1;
        sums.tokens_in += i64::from(r.tokens_in);
        sums.tokens_out += i64::from(r.tokens_out);
        sums.cost_usd += r.cost_usd;
        sums.score_sum += r.score;
        sums.score_sq_sum += r.score * r.score;
        if r.status != ResultStatus::Error {
            *self
                .latencies
                .entry((r.provider_index, r.prompt_index, r.latency_ms))
                .or_default() += 1;
        }

        // As `jsonb_array_elements` reads them: a missing type or metric is
        // "", a missing or non-boolean verdict is a failure.
        if let Some(items) = r.assertions.as_array() {
            for a in items {
                let text = |key: &str| a.get(key).and_then(|v| v.as_str()).unwrap_or("");
                let key = (
                    r.provider_index,
                    r.prompt_index,
                    text("type").to_owned(),
                    text("metric").to_owned(),
                    a.get("pass").and_then(|v| v.as_bool()).unwrap_or(false),
                );
                *self.assertions.entry(key).or_default() += 1;
            }
        }

        let passed = r.status == ResultStatus::Pass;
        let test = self.tests.entry(r.test_index).or_default();
        test.0 += i64::from(!passed);
        test.1 += 1;

        match r.status {
            ResultStatus::Pass => self.passed += 1,
            ResultStatus::Fail => self.failed += 1,
            ResultStatus::Error => self.errors += 1,
        }
        self.cost_usd += r.cost_usd;
    }

    /// The rollup of the `rows` whose task is in `inserted` (what
    /// `INSERT … ON CONFLICT DO NOTHING RETURNING task_index` gave back):
    /// a redelivered row adds nothing, nor does the second of a task that
    /// one batch holds twice.
    pub fn of_inserted(rows: &[NewResult], inserted: &[i64]) -> Rollup {
        let mut rollup = Rollup::default();
        if inserted.len() == rows.len() {
            rows.iter().for_each(|r| rollup.add(r));
        } else {
            // A task twice in one batch is stored once, the first time.
            let mut inserted: HashSet<i64> = inserted.iter().copied().collect();
            rows.iter()
                .filter(|r| inserted.remove(&r.task_index))
                .for_each(|r| rollup.add(r));
        }
        rollup
    }

    /// Results folded in.
    pub fn inserted(&self) -> i64 {
        self.passed + self.failed + self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        test: i32,
        status: ResultStatus,
        latency_ms: i32,
        asserts: serde_json::Value,
    ) -> NewResult {
        NewResult {
            task_index: 0,
            project_id: "p".into(),
            test_index: test,
            prompt_index: 1,
            provider_index: 0,
            repeat_index: 0,
            provider_id: "echo".into(),
            status,
            score: if status == ResultStatus::Pass {
                1.0
            } else {
                0.25
            },
            reason: String::new(),
            rendered_prompt: String::new(),
            output: String::new(),
            assertions: asserts,
            latency_ms,
            tokens_in: 3,
            tokens_out: 4,
            cost_usd: 0.5,
            cached: false,
            error: String::new(),
        }
    }

    #[test]
    fn a_batch_folds_into_groups_tallies_and_counters() {
        let mut rollup = Rollup::default();
        let asserts = serde_json::json!([
            {"type": "contains", "pass": true},
            {"type": "llm-rubric", "metric": "tone", "pass": false},
            {"metric": null, "pass": "yes"}
        ]);
        rollup.add(&result(7, ResultStatus::Pass, 120, asserts.clone()));
        rollup.add(&result(7, ResultStatus::Fail, 120, asserts));
        rollup.add(&result(8, ResultStatus::Fail, 120, serde_json::json!({})));
        rollup.add(&result(8, ResultStatus::Error, 90, serde_json::json!([])));

        assert_eq!((rollup.passed, rollup.failed, rollup.errors), (1, 2, 1));
        assert_eq!(rollup.inserted(), 4);
        assert_eq!(rollup.cost_usd, 2.0);
        let failed = rollup.metrics[&(0, 1, ResultStatus::Fail as i16)];
        assert_eq!(failed.n, 2);
        assert_eq!((failed.tokens_in, failed.tokens_out), (6, 8));
        assert_eq!((failed.score_sum, failed.score_sq_sum), (0.5, 0.125));
        assert_eq!(rollup.metrics.len(), 3);
        // The error's 90 ms is no latency.
        assert_eq!(rollup.latencies, BTreeMap::from([((0, 1, 120), 3)]));
        let count = |kind: &str, metric: &str, passed| {
            rollup.assertions[&(0, 1, kind.to_owned(), metric.to_owned(), passed)]
        };
        assert_eq!(count("contains", "", true), 2);
        assert_eq!(count("llm-rubric", "tone", false), 2);
        // Neither a type nor a boolean verdict: counted as "" and failed.
        assert_eq!(count("", "", false), 2);
        assert_eq!(rollup.assertions.len(), 3);
        assert_eq!(rollup.tests[&7], (1, 2));
        assert_eq!(rollup.tests[&8], (2, 2));
    }
}
