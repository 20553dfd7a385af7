//! The summary of one run, computed from its results.

use std::collections::BTreeMap;

use gauntlet_core::{stats::LatencyCounts, suite::Suite};
use gauntlet_proto::v1;
use gauntlet_service::convert;
use gauntlet_store::{ResultMetrics, ResultStatus, RunRecord};

#[derive(Default)]
struct Acc {
    passed: u64,
    failed: u64,
    errors: u64,
    latencies: LatencyCounts,
    tokens_in: u64,
    tokens_out: u64,
    cost: f64,
}

impl Acc {
    fn add(&mut self, m: &ResultMetrics) {
        let n = m.count.max(0) as u64;
        match m.status {
            ResultStatus::Pass => self.passed += n,
            ResultStatus::Fail => self.failed += n,
            ResultStatus::Error => self.errors += n,
        }
        // Errors have no meaningful latency: they would drag percentiles
        // towards the timeout.
        if m.status != ResultStatus::Error {
            self.latencies.add_n(i64::from(m.latency_ms), n);
        }
        self.tokens_in += m.tokens_in.max(0) as u64;
        self.tokens_out += m.tokens_out.max(0) as u64;
        self.cost += m.cost_usd;
    }

    fn total(&self) -> u64 {
        self.passed + self.failed + self.errors
    }

    fn pass_rate(&self) -> f64 {
        match self.total() {
            0 => 0.0,
            n => self.passed as f64 / n as f64,
        }
    }

    fn latency(&self) -> v1::LatencyStats {
        let s = self.latencies.summary();
        v1::LatencyStats {
            p50_ms: s.p50,
            p95_ms: s.p95,
            p99_ms: s.p99,
            mean_ms: s.mean,
            max_ms: s.max,
        }
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

    /// The summary, groups in suite order.
    pub fn finish(self, run: &RunRecord, suite: &Suite) -> v1::RunSummary {
        let Self { groups, all } = self;
        let groups = groups
            .into_iter()
            .map(|((provider, prompt), acc)| {
                let spec = suite.providers.get(provider as usize);
                v1::GroupSummary {
                    provider_index: provider as u32,
                    provider_id: spec
                        .map(|p| p.label.clone().unwrap_or_else(|| p.id.clone()))
                        .unwrap_or_default(),
                    prompt_index: prompt as u32,
                    prompt_label: suite
                        .prompts
                        .get(prompt as usize)
                        .map(|p| p.label.clone())
                        .unwrap_or_default(),
                    total: acc.total(),
                    passed: acc.passed,
                    failed: acc.failed,
                    errors: acc.errors,
                    pass_rate: acc.pass_rate(),
                    latency: Some(acc.latency()),
                    tokens_in: acc.tokens_in,
                    tokens_out: acc.tokens_out,
                    cost_usd: acc.cost,
                }
            })
            .collect();
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
        }
    }
}
