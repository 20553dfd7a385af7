//! DetectRegressions: a run against its baseline. The comparison per
//! provider × prompt is CompareRuns' (baseline as A); on top, the matched
//! results that flipped between pass and fail, named, and the assertion
//! types and named metrics whose pass rate moved, each tested (unpaired
//! two-proportion z-test, Holm across them).

use std::collections::BTreeMap;

use gauntlet_proto::v1;
use gauntlet_store::AssertionMetrics;

use crate::{
    compare::{Flip, Flips},
    stats,
    summary::{CONFIDENCE, case_name, interval},
};

/// Flipped cases listed per direction when a request names no limit.
pub const DEFAULT_LISTED: u32 = 100;

/// Passed and total assertions per (kind, name), over a run's groups.
pub type Tallies = BTreeMap<(&'static str, String), (u64, u64)>;

/// Adds one rollup row of assertion outcomes to both of its tallies: its
/// type, and its metric when it names one.
pub fn tally(tallies: &mut Tallies, m: &AssertionMetrics) {
    let mut add = |key| {
        let t = tallies.entry(key).or_insert((0, 0));
        t.0 += if m.passed { m.count as u64 } else { 0 };
        t.1 += m.count as u64;
    };
    add(("assertion_type", m.kind.clone()));
    if !m.metric.is_empty() {
        add(("metric", m.metric.clone()));
    }
}

/// Every kind and name both runs have, tested, most significant first.
pub fn shifts(baseline: &Tallies, run: &Tallies, alpha: f64) -> Vec<v1::MetricShift> {
    let mut out: Vec<v1::MetricShift> = baseline
        .iter()
        .filter_map(|(key, &(x1, n1))| {
            let &(x2, n2) = run.get(key)?;
            Some(v1::MetricShift {
                kind: key.0.to_owned(),
                name: key.1.clone(),
                baseline_pass_rate: Some(interval(stats::wilson(x1, n1, CONFIDENCE))),
                pass_rate: Some(interval(stats::wilson(x2, n2, CONFIDENCE))),
                baseline_total: n1,
                total: n2,
                p_value: stats::two_proportion_z_test(x1, n1, x2, n2),
                p_value_adjusted: 1.0,
                significant: false,
            })
        })
        .collect();
    let p: Vec<f64> = out.iter().map(|s| s.p_value).collect();
    for (s, adjusted) in out.iter_mut().zip(stats::holm(&p)) {
        s.p_value_adjusted = adjusted;
        s.significant = adjusted < alpha;
    }
    out.sort_by(|a, b| {
        a.p_value_adjusted
            .total_cmp(&b.p_value_adjusted)
            .then_with(|| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)))
    });
    out
}

/// Whether the run regressed: a pair significantly worse, or an assertion
/// type or metric passing significantly less often.
pub fn regressed(pairs: &[v1::PairComparison], shifts: &[v1::MetricShift]) -> bool {
    let rate = |i: &Option<v1::Interval>| i.as_ref().map_or(0.0, |i| i.estimate);
    pairs.iter().any(|p| p.verdict == v1::Verdict::Worse as i32)
        || shifts
            .iter()
            .any(|s| s.significant && rate(&s.pass_rate) < rate(&s.baseline_pass_rate))
}

/// The test indexes (in the run) of the flips listed, `max` per direction.
pub fn listed(flips: &Flips, max: usize) -> impl Iterator<Item = u32> + '_ {
    flips
        .pass_to_fail
        .iter()
        .take(max)
        .chain(flips.fail_to_pass.iter().take(max))
        .map(|f| f.test_index as u32)
}

/// The first `max` flips as the wire lists them, named by their test head.
pub fn cases(
    flips: &[Flip],
    max: usize,
    heads: &gauntlet_service::tests::Tests<gauntlet_service::tests::TestHead>,
) -> Vec<v1::FlippedCase> {
    flips
        .iter()
        .take(max)
        .map(|f| v1::FlippedCase {
            test_index: f.test_index as u32,
            description: case_name(heads.get(f.test_index as u32)),
            provider: f.provider.clone(),
            prompt: f.prompt.clone(),
            repeat_index: f.repeat as u32,
            baseline_score: f.a_score,
            score: f.b_score,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, metric: &str, passed: bool, count: i64) -> AssertionMetrics {
        AssertionMetrics {
            provider_index: 0,
            prompt_index: 0,
            kind: kind.into(),
            metric: metric.into(),
            passed,
            count,
        }
    }

    fn tallies(rows: &[AssertionMetrics]) -> Tallies {
        let mut t = Tallies::new();
        rows.iter().for_each(|m| tally(&mut t, m));
        t
    }

    #[test]
    fn a_metric_that_fell_is_a_significant_regression_and_listed_first() {
        let baseline = tallies(&[
            row("llm-rubric", "tone", true, 90),
            row("llm-rubric", "tone", false, 10),
            row("contains", "", true, 50),
            row("contains", "", false, 50),
            row("equals", "", true, 5),
        ]);
        let run = tallies(&[
            row("llm-rubric", "tone", true, 60),
            row("llm-rubric", "tone", false, 40),
            row("contains", "", true, 52),
            row("contains", "", false, 48),
            row("is-json", "", true, 5),
        ]);
        let shifts = shifts(&baseline, &run, 0.05);
        let names: Vec<_> = shifts
            .iter()
            .map(|s| (s.kind.as_str(), s.name.as_str()))
            .collect();
        // llm-rubric's type and its metric moved alike; contains did not;
        // equals and is-json are each on one side only.
        assert_eq!(
            names,
            [
                ("assertion_type", "llm-rubric"),
                ("metric", "tone"),
                ("assertion_type", "contains")
            ]
        );
        assert!(shifts[0].significant && shifts[1].significant && !shifts[2].significant);
        // 90/100 vs 60/100: p from the pooled z-test, Holm ×3 then ×2.
        let p = stats::two_proportion_z_test(90, 100, 60, 100);
        assert_eq!(shifts[0].p_value, p);
        assert!((shifts[0].p_value_adjusted - 3.0 * p).abs() < 1e-15);
        assert_eq!((shifts[0].baseline_total, shifts[0].total), (100, 100));
        assert!(regressed(&[], &shifts));
        // The same move the other way is no regression.
        let back = super::shifts(&run, &baseline, 0.05);
        assert!(back[0].significant && !regressed(&[], &back));
    }
}
