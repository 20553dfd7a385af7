//! The summary of one run, computed from its results.

use std::collections::BTreeMap;

use gauntlet_core::{stats::LatencyCounts, suite::Suite};
use gauntlet_proto::v1;
use gauntlet_service::{convert, tests::TestHead};
use gauntlet_store::{
    AssertionMetrics, LatencyCount, Outcome, ResultMetrics, ResultStatus, RunRecord, TestFailures,
};

use crate::stats;

/// The confidence of every interval in a summary.
pub const CONFIDENCE: f64 = 0.95;

/// Slowest results and most-failed tests listed, at most.
pub const LISTED: u32 = 10;

#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

impl Tally {
    fn message(&self, name: &str) -> v1::AssertionStats {
        v1::AssertionStats {
            name: name.to_owned(),
            passed: self.passed,
            failed: self.failed,
            pass_rate: Some(interval(stats::wilson(
                self.passed,
                self.passed + self.failed,
                CONFIDENCE,
            ))),
        }
    }
}

pub(crate) fn interval(i: stats::Interval) -> v1::Interval {
    v1::Interval {
        estimate: i.estimate,
        low: i.low,
        high: i.high,
    }
}

#[derive(Default)]
struct Acc {
    passed: u64,
    failed: u64,
    errors: u64,
    latencies: LatencyCounts,
    tokens_in: u64,
    tokens_out: u64,
    cost: f64,
    score_sum: f64,
    score_sq_sum: f64,
    types: BTreeMap<String, Tally>,
    metrics: BTreeMap<String, Tally>,
}

impl Acc {
    fn add(&mut self, m: &ResultMetrics) {
        let n = m.count.max(0) as u64;
        match m.status {
            ResultStatus::Pass => self.passed += n,
            ResultStatus::Fail => self.failed += n,
            ResultStatus::Error => self.errors += n,
        }
        self.tokens_in += m.tokens_in.max(0) as u64;
        self.tokens_out += m.tokens_out.max(0) as u64;
        self.cost += m.cost_usd;
        self.score_sum += m.score_sum;
        self.score_sq_sum += m.score_sq_sum;
    }

    /// Answered results only: errors have no meaningful latency, they would
    /// drag percentiles towards the timeout (the store counts none).
    fn add_latency(&mut self, l: &LatencyCount) {
        self.latencies
            .add_n(i64::from(l.latency_ms), l.count.max(0) as u64);
    }

    fn add_assertions(&mut self, m: &AssertionMetrics) {
        let n = m.count.max(0) as u64;
        let count = |tally: &mut Tally| {
            if m.passed {
                tally.passed += n;
            } else {
                tally.failed += n;
            }
        };
        count(self.types.entry(m.kind.clone()).or_default());
        if !m.metric.is_empty() {
            count(self.metrics.entry(m.metric.clone()).or_default());
        }
    }

    fn total(&self) -> u64 {
        self.passed + self.failed + self.errors
    }

    fn pass_rate(&self) -> f64 {
        gauntlet_core::pass_rate(self.passed, self.total())
    }

    fn latency(&self) -> v1::LatencyStats {
        let s = self.latencies.summary();
        v1::LatencyStats {
            p50_ms: s.p50,
            p90_ms: s.p90,
            p95_ms: s.p95,
            p99_ms: s.p99,
            mean_ms: s.mean,
            max_ms: s.max,
        }
    }

    /// The interval figures and the per-assertion tallies.
    fn details(&self) -> Details {
        let list = |m: &BTreeMap<String, Tally>| m.iter().map(|(k, t)| t.message(k)).collect();
        Details {
            pass_rate_interval: interval(stats::wilson(self.passed, self.total(), CONFIDENCE)),
            score: interval(stats::mean_interval_from_sums(
                self.total(),
                self.score_sum,
                self.score_sq_sum,
                CONFIDENCE,
            )),
            assertion_types: list(&self.types),
            metrics: list(&self.metrics),
        }
    }
}

struct Details {
    pass_rate_interval: v1::Interval,
    score: v1::Interval,
    assertion_types: Vec<v1::AssertionStats>,
    metrics: Vec<v1::AssertionStats>,
}

/// What a summary lists of single results and tests, with the tests'
/// heads to name them.
pub struct Cases {
    pub slowest: Vec<(i64, Outcome)>,
    pub most_failed: Vec<TestFailures>,
    pub heads: gauntlet_service::tests::Tests<TestHead>,
}

/// A test as a person recognizes it: its description, else its vars.
pub(crate) fn case_name(head: Option<&TestHead>) -> String {
    match head {
        Some(TestHead {
            description: Some(d),
            ..
        }) => d.clone(),
        Some(h) => h
            .vars
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                v => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        None => String::new(),
    }
}

/// Counts, pass rate, latency percentiles, tokens and cost, overall and per
/// provider × prompt, gathered a group of like results at a time (see
/// [`ResultMetrics`]): memory grows with the groups and the distinct
/// latencies, never with the results.
#[derive(Default)]
pub struct Summarizer {
    groups: BTreeMap<(i32, i32), Acc>,
    all: Acc,
}

impl Summarizer {
    pub fn add(&mut self, m: &ResultMetrics) {
        self.groups
            .entry((m.provider_index, m.prompt_index))
            .or_default()
            .add(m);
        self.all.add(m);
    }

    pub fn add_latency(&mut self, l: &LatencyCount) {
        self.groups
            .entry((l.provider_index, l.prompt_index))
            .or_default()
            .add_latency(l);
        self.all.add_latency(l);
    }

    pub fn add_assertions(&mut self, m: &AssertionMetrics) {
        self.groups
            .entry((m.provider_index, m.prompt_index))
            .or_default()
            .add_assertions(m);
        self.all.add_assertions(m);
    }

    /// The summary, groups in suite order.
    pub fn finish(self, run: &RunRecord, suite: &Suite, cases: Cases) -> v1::RunSummary {
        let Self { groups, all } = self;
        let provider_name = |i: i32| {
            suite
                .providers
                .get(i as usize)
                .map(|p| p.name().to_owned())
                .unwrap_or_default()
        };
        let prompt_label = |i: i32| {
            suite
                .prompts
                .get(i as usize)
                .map(|p| p.label.clone())
                .unwrap_or_default()
        };
        let groups = groups
            .into_iter()
            .map(|((provider, prompt), acc)| {
                let details = acc.details();
                v1::GroupSummary {
                    provider_index: provider as u32,
                    provider_id: provider_name(provider),
                    prompt_index: prompt as u32,
                    prompt_label: prompt_label(prompt),
                    total: acc.total(),
                    passed: acc.passed,
                    failed: acc.failed,
                    errors: acc.errors,
                    pass_rate: acc.pass_rate(),
                    latency: Some(acc.latency()),
                    tokens_in: acc.tokens_in,
                    tokens_out: acc.tokens_out,
                    cost_usd: acc.cost,
                    pass_rate_interval: Some(details.pass_rate_interval),
                    score: Some(details.score),
                    assertion_types: details.assertion_types,
                    metrics: details.metrics,
                }
            })
            .collect();
        let slowest = cases
            .slowest
            .iter()
            .map(|(task, o)| v1::SlowCase {
                task_index: *task as u64,
                test_index: o.test_index as u32,
                description: case_name(cases.heads.get(o.test_index as u32)),
                provider_id: provider_name(o.provider_index),
                prompt_label: prompt_label(o.prompt_index),
                latency_ms: f64::from(o.latency_ms),
                status: convert::result_status(o.status) as i32,
            })
            .collect();
        let most_failed = cases
            .most_failed
            .iter()
            .map(|f| v1::FailedCase {
                test_index: f.test_index as u32,
                description: case_name(cases.heads.get(f.test_index as u32)),
                unpassed: f.unpassed as u64,
                total: f.total as u64,
            })
            .collect();
        let details = all.details();
        v1::RunSummary {
            run_id: run.id.to_string(),
            status: convert::run_status(run.status) as i32,
            description: run.description.clone(),
            total_tasks: run.total_tasks as u64,
            completed_tasks: run.completed_tasks as u64,
            passed: all.passed,
            failed: all.failed,
            errors: all.errors,
            pass_rate: all.pass_rate(),
            groups,
            latency: Some(all.latency()),
            tokens_in: all.tokens_in,
            tokens_out: all.tokens_out,
            cost_usd: all.cost,
            pass_rate_interval: Some(details.pass_rate_interval),
            score: Some(details.score),
            assertion_types: details.assertion_types,
            metrics: details.metrics,
            slowest,
            most_failed,
            label: run.label.clone(),
            trace_id: run.trace_id.clone(),
            created_at: Some(convert::timestamp(run.created_at)),
            finished_at: run.finished_at.map(convert::timestamp),
        }
    }
}
