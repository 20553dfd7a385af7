//! GetInsights: what a run says beyond its summary, each finding with the
//! figures behind it, from the run's outcomes (one read) and the
//! comparison of its providers (compare.rs):
//! - the cost/quality frontier: the best provider by pass rate, every other
//!   tested against it (exact McNemar on paired results, Holm), and the
//!   cheapest one not significantly worse;
//! - flaky cases: a test × provider × prompt whose repeats disagree;
//! - cases no provider and no prompt passed;
//! - latency outliers: answered results above their provider's
//!   Q3 + 3 × IQR (Tukey's far-out fence).

use std::collections::BTreeMap;

use gauntlet_proto::v1;
use gauntlet_store::ResultStatus;

use crate::{
    compare::{self, By, Side},
    stats,
    summary::{CONFIDENCE, interval},
};

/// Cases listed per kind when a request names no limit.
pub const DEFAULT_LISTED: u32 = 20;

/// A provider's results needed before its latencies have outliers.
const MIN_FOR_OUTLIERS: usize = 8;

fn name(list: &[String], i: i32) -> String {
    list.get(i as usize)
        .cloned()
        .unwrap_or_else(|| format!("#{i}"))
}

/// The insights of `side`, lists cut at `max`; descriptions are left
/// empty for the caller to fill from the tests listed ([`listed`]).
pub fn insights(side: &Side, alpha: f64, seed: u64, max: usize) -> v1::Insights {
    let mut out = v1::Insights {
        run_id: side.run_id.clone(),
        alpha,
        ..Default::default()
    };
    frontier(side, alpha, seed, &mut out);

    // Per test × provider × prompt: (passed, repeats); per test: (passed
    // anywhere, results).
    let mut cells: BTreeMap<(i32, i32, i32), (u32, u32)> = BTreeMap::new();
    let mut tests: BTreeMap<i32, (bool, u64)> = BTreeMap::new();
    let mut latencies: BTreeMap<i32, Vec<f64>> = BTreeMap::new();
    for o in &side.outcomes {
        let passed = o.status == ResultStatus::Pass;
        let cell = cells
            .entry((o.test_index, o.provider_index, o.prompt_index))
            .or_default();
        cell.0 += u32::from(passed);
        cell.1 += 1;
        let test = tests.entry(o.test_index).or_default();
        test.0 |= passed;
        test.1 += 1;
        if o.status != ResultStatus::Error {
            latencies
                .entry(o.provider_index)
                .or_default()
                .push(f64::from(o.latency_ms));
        }
    }

    let flaky: Vec<_> = cells
        .iter()
        .filter(|(_, (passed, repeats))| *passed > 0 && passed < repeats)
        .collect();
    out.flaky_count = flaky.len() as u64;
    out.flaky = flaky
        .into_iter()
        .take(max)
        .map(
            |(&(test, provider, prompt), &(passed, repeats))| v1::FlakyCase {
                test_index: test as u32,
                description: String::new(),
                provider: name(&side.providers, provider),
                prompt: name(&side.prompts, prompt),
                passed,
                repeats,
            },
        )
        .collect();

    let everywhere: Vec<_> = tests.iter().filter(|(_, (passed, _))| !passed).collect();
    out.failing_everywhere_count = everywhere.len() as u64;
    out.failing_everywhere = everywhere
        .into_iter()
        .take(max)
        .map(|(&test, &(_, results))| v1::EverywhereFailure {
            test_index: test as u32,
            description: String::new(),
            results,
        })
        .collect();

    // Tukey's far-out fence per provider.
    let fences: BTreeMap<i32, f64> = latencies
        .into_iter()
        .filter(|(_, v)| v.len() >= MIN_FOR_OUTLIERS)
        .map(|(provider, mut v)| {
            v.sort_unstable_by(f64::total_cmp);
            let q1 = gauntlet_core::percentile(&v, 25.0);
            let q3 = gauntlet_core::percentile(&v, 75.0);
            (provider, q3 + 3.0 * (q3 - q1))
        })
        .collect();
    let mut outliers: Vec<v1::LatencyOutlier> = side
        .outcomes
        .iter()
        .filter(|o| o.status != ResultStatus::Error)
        .filter_map(|o| {
            let fence = *fences.get(&o.provider_index)?;
            (f64::from(o.latency_ms) > fence).then(|| v1::LatencyOutlier {
                test_index: o.test_index as u32,
                description: String::new(),
                provider: name(&side.providers, o.provider_index),
                prompt: name(&side.prompts, o.prompt_index),
                repeat_index: o.repeat_index as u32,
                latency_ms: f64::from(o.latency_ms),
                fence_ms: fence,
            })
        })
        .collect();
    out.latency_outlier_count = outliers.len() as u64;
    outliers.sort_by(|a, b| {
        b.latency_ms
            .total_cmp(&a.latency_ms)
            .then(a.test_index.cmp(&b.test_index))
    });
    outliers.truncate(max);
    out.latency_outliers = outliers;
    out
}

/// Standings, the best first, and the recommendation.
fn frontier(side: &Side, alpha: f64, seed: u64, out: &mut v1::Insights) {
    // provider index → (passed, total, cost)
    let mut tally: BTreeMap<i32, (u64, u64, f64)> = BTreeMap::new();
    for o in &side.outcomes {
        let t = tally.entry(o.provider_index).or_default();
        t.0 += u64::from(o.status == ResultStatus::Pass);
        t.1 += 1;
        t.2 += o.cost_usd;
    }
    let mut standings: Vec<v1::ProviderStanding> = tally
        .iter()
        .map(|(&p, &(passed, total, cost))| v1::ProviderStanding {
            provider: name(&side.providers, p),
            total,
            passed,
            pass_rate: Some(interval(stats::wilson(passed, total, CONFIDENCE))),
            cost_usd: cost,
            p_vs_best: 1.0,
            significantly_worse: false,
            recommended: false,
        })
        .collect();
    let rate = |s: &v1::ProviderStanding| s.pass_rate.map_or(0.0, |r| r.estimate);
    // Best pass rate first; ties: the cheaper, then by name.
    standings.sort_by(|a, b| {
        rate(b)
            .total_cmp(&rate(a))
            .then(a.cost_usd.total_cmp(&b.cost_usd))
            .then(a.provider.cmp(&b.provider))
    });
    let Some(best) = standings.first().map(|s| s.provider.clone()) else {
        return;
    };
    if standings.len() > 1
        && let Ok(pairs) = compare::compare(side, None, By::Provider, alpha, seed)
    {
        for s in standings.iter_mut().skip(1) {
            let against = pairs.iter().find_map(|p| {
                let (a, b) = (
                    p.a.as_ref()?.provider.as_str(),
                    p.b.as_ref()?.provider.as_str(),
                );
                let worse = if (a, b) == (best.as_str(), s.provider.as_str()) {
                    v1::Verdict::Worse
                } else if (a, b) == (s.provider.as_str(), best.as_str()) {
                    v1::Verdict::Better
                } else {
                    return None;
                };
                let m = p.mcnemar.as_ref()?;
                Some((m.p_value_adjusted, p.verdict == worse as i32))
            });
            if let Some((p, worse)) = against {
                s.p_vs_best = p;
                s.significantly_worse = worse;
            }
        }
    }
    let pick = standings
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.significantly_worse)
        .min_by(|(i, a), (j, b)| a.cost_usd.total_cmp(&b.cost_usd).then(i.cmp(j)))
        .map(|(i, _)| i)
        .unwrap_or(0);
    standings[pick].recommended = true;
    let chosen = &standings[pick];
    let top = &standings[0];
    out.recommended_provider = chosen.provider.clone();
    out.recommendation = if pick == 0 {
        format!(
            "{}: the best pass rate ({:.1}%) and no provider as good is cheaper",
            chosen.provider,
            100.0 * rate(chosen)
        )
    } else {
        let share = if top.cost_usd > 0.0 {
            format!(
                ", at {:.0}% of its cost",
                100.0 * chosen.cost_usd / top.cost_usd
            )
        } else {
            String::new()
        };
        format!(
            "{}: pass rate {:.1}% against {:.1}% for {}, not significantly worse (p = {:.3} after Holm){share}",
            chosen.provider,
            100.0 * rate(chosen),
            100.0 * rate(top),
            top.provider,
            chosen.p_vs_best,
        )
    };
    out.providers = standings;
}

/// The test indexes an answer lists, to be named.
pub fn listed(i: &v1::Insights) -> Vec<u32> {
    i.flaky
        .iter()
        .map(|c| c.test_index)
        .chain(i.failing_everywhere.iter().map(|c| c.test_index))
        .chain(i.latency_outliers.iter().map(|c| c.test_index))
        .collect()
}

/// Fills each listed case's description by `describe(test_index)`.
pub fn name_cases(i: &mut v1::Insights, describe: impl Fn(u32) -> String) {
    for c in &mut i.flaky {
        c.description = describe(c.test_index);
    }
    for c in &mut i.failing_everywhere {
        c.description = describe(c.test_index);
    }
    for c in &mut i.latency_outliers {
        c.description = describe(c.test_index);
    }
}

#[cfg(test)]
mod tests {
    use gauntlet_store::Outcome;

    use super::*;
    use crate::compare::TestKeys;

    fn outcome(
        test: i32,
        provider: i32,
        repeat: i32,
        passed: bool,
        latency_ms: i32,
        cost: f64,
    ) -> Outcome {
        Outcome {
            test_index: test,
            prompt_index: 0,
            provider_index: provider,
            repeat_index: repeat,
            status: if passed {
                ResultStatus::Pass
            } else {
                ResultStatus::Fail
            },
            score: f64::from(u8::from(passed)),
            latency_ms,
            cost_usd: cost,
        }
    }

    fn side(outcomes: Vec<Outcome>) -> Side {
        Side {
            run_id: "r".into(),
            providers: vec!["big".into(), "small".into(), "tiny".into()],
            prompts: vec!["q".into()],
            test_keys: TestKeys::Index,
            outcomes,
        }
    }

    #[test]
    fn the_cheapest_provider_not_significantly_worse_is_recommended() {
        // 40 tests, 2 repeats. big passes all (cost 1.0 a result), small
        // fails 2 tests (0.1), tiny fails 20 (0.01).
        let mut outcomes = Vec::new();
        for t in 0..40 {
            for r in 0..2 {
                outcomes.push(outcome(t, 0, r, true, 100, 1.0));
                outcomes.push(outcome(t, 1, r, t >= 2, 100, 0.1));
                outcomes.push(outcome(t, 2, r, t >= 20, 100, 0.01));
            }
        }
        let i = insights(&side(outcomes), 0.05, 1, 20);
        let names: Vec<_> = i.providers.iter().map(|s| s.provider.as_str()).collect();
        assert_eq!(names, ["big", "small", "tiny"]);
        assert!(!i.providers[1].significantly_worse, "{:?}", i.providers[1]);
        assert!(i.providers[2].significantly_worse, "{:?}", i.providers[2]);
        assert!(i.providers[1].p_vs_best > 0.05 && i.providers[2].p_vs_best < 0.05);
        assert_eq!(i.providers[0].p_vs_best, 1.0);
        assert_eq!(i.recommended_provider, "small");
        assert!(i.providers[1].recommended && !i.providers[0].recommended);
        assert!(
            i.recommendation
                .starts_with("small: pass rate 95.0% against 100.0% for big"),
            "{}",
            i.recommendation
        );
        assert!(
            i.recommendation.ends_with("at 10% of its cost"),
            "{}",
            i.recommendation
        );
        // Nothing flaky, nothing failing everywhere, no outliers.
        assert_eq!(
            (
                i.flaky_count,
                i.failing_everywhere_count,
                i.latency_outlier_count
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn flaky_failing_everywhere_and_outliers_are_found_and_counted() {
        let mut outcomes = Vec::new();
        for t in 0..10 {
            for r in 0..3 {
                // Test 3 is flaky on provider 0 (passes on repeat 0 only);
                // test 7 fails everywhere; test 5 repeat 2 is very slow.
                let passed = match t {
                    3 => r == 0,
                    7 => false,
                    _ => true,
                };
                let latency = if (t, r) == (5, 2) {
                    5_000
                } else {
                    100 + t * 3 + r
                };
                outcomes.push(outcome(t, 0, r, passed, latency, 0.0));
                outcomes.push(outcome(t, 1, r, t != 7, 100, 0.0));
            }
        }
        let i = insights(&side(outcomes), 0.05, 1, 20);
        assert_eq!(i.flaky_count, 1);
        assert_eq!(
            (
                i.flaky[0].test_index,
                i.flaky[0].provider.as_str(),
                i.flaky[0].passed,
                i.flaky[0].repeats
            ),
            (3, "big", 1, 3)
        );
        assert_eq!(i.failing_everywhere_count, 1);
        assert_eq!(
            (
                i.failing_everywhere[0].test_index,
                i.failing_everywhere[0].results
            ),
            (7, 6)
        );
        assert_eq!(i.latency_outlier_count, 1);
        let o = &i.latency_outliers[0];
        assert_eq!(
            (o.test_index, o.repeat_index, o.latency_ms),
            (5, 2, 5_000.0)
        );
        assert!(o.fence_ms > 100.0 && o.fence_ms < 5_000.0);
        assert_eq!(listed(&i), [3, 7, 5]);
        let mut named = i.clone();
        name_cases(&mut named, |t| format!("case {t}"));
        assert_eq!(named.latency_outliers[0].description, "case 5");

        // Lists are cut, counts are not.
        let cut = insights(&side(Vec::new()), 0.05, 1, 0);
        assert_eq!(cut.providers.len(), 0);
        assert!(cut.recommended_provider.is_empty());
    }
}
