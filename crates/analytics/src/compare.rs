//! Comparisons: run A against run B, or within one run each provider (or
//! prompt) against each other, on pairs of results matched by test case.
//!
//! The arms and how results pair up:
//! - two runs, by provider × prompt (the default): each provider × prompt of
//!   A against the same of B; pairs share the test case and the repeat;
//! - two runs, by provider (prompt): each provider (prompt) of A against the
//!   same of B, over all prompts (providers); pairs also share the prompt
//!   (provider);
//! - one run, by provider (prompt): every two providers (prompts) of the
//!   run, pairs sharing the test, the repeat and the prompt (provider).
//!
//! Test cases of two runs are matched by content (the stored test's digest,
//! the n-th of equal tests with the n-th), so a test added or moved in the
//! suite between the runs pairs with itself, not with its neighbour.
//! Providers and prompts of two runs are matched by label when both runs
//! have the same labels, else by position when both have as many, else by
//! the labels they share: an edited prompt (new label, same place) is
//! still compared with the one it replaced.

use std::collections::{BTreeMap, HashMap};

use gauntlet_proto::v1;
use gauntlet_store::{Outcome, ResultStatus};

use crate::stats;

/// Bootstrap resamples of a score difference.
pub const BOOTSTRAP_SAMPLES: u32 = 2000;
/// Power at which `pairs_needed` is computed.
pub const POWER: f64 = 0.8;

/// One run, as a comparison reads it.
pub struct Side {
    pub run_id: String,
    pub providers: Vec<String>,
    pub prompts: Vec<String>,
    /// Test index → the key its test case is matched by (for two runs, the
    /// digest of its content and which of equal tests it is).
    pub test_keys: TestKeys,
    pub outcomes: Vec<Outcome>,
}

/// How a side's test indexes are matched with the other side's.
pub enum TestKeys {
    /// By index (one run compared with itself).
    Index,
    /// By content: `(digest, occurrence)` for each test index.
    Content(Vec<(i64, u32)>),
}

impl TestKeys {
    /// From `(test_index, digest)` in index order.
    pub fn from_digests(digests: &[(i64, i64)]) -> Self {
        let mut seen: HashMap<i64, u32> = HashMap::new();
        let len = digests.last().map_or(0, |(i, _)| *i as usize + 1);
        let mut keys = vec![(0, u32::MAX); len];
        for &(index, digest) in digests {
            let n = seen.entry(digest).or_default();
            keys[index as usize] = (digest, *n);
            *n += 1;
        }
        TestKeys::Content(keys)
    }
}

/// Why a comparison cannot be made: the client's to fix.
#[derive(Debug, PartialEq)]
pub struct Refusal(pub String);

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
struct MatchKey {
    test: (i64, u32),
    other: u32,
    repeat: i32,
}

#[derive(Clone, Copy)]
struct Cell {
    test_index: i32,
    repeat: i32,
    passed: bool,
    error: bool,
    score: f64,
    latency_ms: i32,
    cost_usd: f64,
}

/// The results of one arm, sorted by their match key.
type ArmCells = Vec<(MatchKey, Cell)>;

/// A provider's or a prompt's id as the pairing sees it: for two runs the
/// same id on both sides means "the same provider (prompt)".
fn canonical(a: &[String], b: Option<&[String]>) -> (Vec<u32>, Vec<u32>) {
    let positions = |n: usize| (0..n as u32).collect::<Vec<_>>();
    let Some(b) = b else {
        return (positions(a.len()), Vec::new());
    };
    fn sorted(l: &[String]) -> Vec<&String> {
        let mut s: Vec<&String> = l.iter().collect();
        s.sort();
        s
    }
    let (sa, sb) = (sorted(a), sorted(b));
    let unique = |s: &[&String]| s.windows(2).all(|w| w[0] != w[1]);
    let by_label = unique(&sa) && unique(&sb);
    if a.len() == b.len() && (sa != sb || !by_label) {
        return (positions(a.len()), positions(b.len()));
    }
    if !by_label {
        // Neither labels nor places say which is which.
        let b_ids = (0..b.len() as u32).map(|i| i + a.len() as u32).collect();
        return (positions(a.len()), b_ids);
    }
    // By label; a label only one side has gets an id of its own.
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut id_of = |label| {
        let next = ids.len() as u32;
        *ids.entry(label).or_insert(next)
    };
    let ca: Vec<u32> = a.iter().map(|l| id_of(l.as_str())).collect();
    let cb: Vec<u32> = b.iter().map(|l| id_of(l.as_str())).collect();
    (ca, cb)
}

/// What the arms of a comparison are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum By {
    /// Provider × prompt (two runs only).
    Group,
    Provider,
    Prompt,
}

impl By {
    pub fn from_proto(by: v1::CompareBy, two_runs: bool) -> Self {
        match by {
            v1::CompareBy::Provider => By::Provider,
            v1::CompareBy::Prompt => By::Prompt,
            v1::CompareBy::Unspecified if two_runs => By::Group,
            v1::CompareBy::Unspecified => By::Provider,
        }
    }
}

/// The arms of one side: arm key → its results sorted by match key, and
/// each arm key's display (provider, prompt).
struct Arms {
    cells: BTreeMap<(u32, u32), ArmCells>,
    names: BTreeMap<(u32, u32), (String, String)>,
}

fn arms(side: &Side, by: By, providers: &[u32], prompts: &[u32]) -> Arms {
    let mut cells: BTreeMap<(u32, u32), ArmCells> = BTreeMap::new();
    let mut names = BTreeMap::new();
    let name = |list: &[String], i: i32| list.get(i as usize).cloned().unwrap_or_default();
    for o in &side.outcomes {
        let provider = providers
            .get(o.provider_index as usize)
            .copied()
            .unwrap_or(u32::MAX);
        let prompt = prompts
            .get(o.prompt_index as usize)
            .copied()
            .unwrap_or(u32::MAX);
        let (arm, other, display) = match by {
            By::Group => (
                (provider, prompt),
                0,
                (
                    name(&side.providers, o.provider_index),
                    name(&side.prompts, o.prompt_index),
                ),
            ),
            By::Provider => (
                (provider, 0),
                prompt,
                (name(&side.providers, o.provider_index), String::new()),
            ),
            By::Prompt => (
                (prompt, 0),
                provider,
                (String::new(), name(&side.prompts, o.prompt_index)),
            ),
        };
        let test = match &side.test_keys {
            TestKeys::Index => (i64::from(o.test_index), 0),
            TestKeys::Content(keys) => match keys.get(o.test_index as usize) {
                Some(&k) if k.1 != u32::MAX => k,
                // A result whose test is not stored cannot be matched.
                _ => continue,
            },
        };
        let key = MatchKey {
            test,
            other,
            repeat: o.repeat_index,
        };
        let cell = Cell {
            test_index: o.test_index,
            repeat: o.repeat_index,
            passed: o.status == ResultStatus::Pass,
            error: o.status == ResultStatus::Error,
            score: o.score,
            latency_ms: o.latency_ms,
            cost_usd: o.cost_usd,
        };
        cells.entry(arm).or_default().push((key, cell));
        names.entry(arm).or_insert(display);
    }
    for v in cells.values_mut() {
        v.sort_unstable_by_key(|(k, _)| *k);
    }
    Arms { cells, names }
}

/// The pairs of two arms: results with the same match key.
fn matched(a: &ArmCells, b: &ArmCells) -> Vec<(Cell, Cell)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push((a[i].1, b[j].1));
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// The comparison of two arms, before the correction across arms.
fn pair(
    a: v1::Arm,
    b: v1::Arm,
    pairs: &[(Cell, Cell)],
    alpha: f64,
    seed: u64,
) -> v1::PairComparison {
    let n = pairs.len() as u64;
    let (mut a_pass, mut b_pass, mut only_a, mut only_b) = (0u64, 0u64, 0u64, 0u64);
    let (mut a_cost, mut b_cost) = (0.0, 0.0);
    let mut score_diffs = Vec::with_capacity(pairs.len());
    let mut latency_diffs = Vec::new();
    for (x, y) in pairs {
        a_pass += u64::from(x.passed);
        b_pass += u64::from(y.passed);
        only_a += u64::from(x.passed && !y.passed);
        only_b += u64::from(y.passed && !x.passed);
        a_cost += x.cost_usd;
        b_cost += y.cost_usd;
        score_diffs.push(y.score - x.score);
        if !x.error && !y.error {
            latency_diffs.push(f64::from(y.latency_ms) - f64::from(x.latency_ms));
        }
    }
    let rate = |k: u64| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    let score = stats::paired_bootstrap_mean(&score_diffs, BOOTSTRAP_SAMPLES, seed, 1.0 - alpha);
    latency_diffs.sort_unstable_by(f64::total_cmp);
    let pairs_needed = if n == 0 {
        0
    } else {
        stats::mcnemar_sample_size(rate(only_a), rate(only_b), alpha, POWER).unwrap_or(0)
    };
    v1::PairComparison {
        a: Some(a),
        b: Some(b),
        n_pairs: n,
        a_pass_rate: rate(a_pass),
        b_pass_rate: rate(b_pass),
        mcnemar: Some(v1::McNemarTest {
            b: only_a,
            c: only_b,
            p_value: stats::mcnemar_exact(only_a, only_b),
            p_value_adjusted: 1.0,
        }),
        score_diff: Some(v1::MeanDiff {
            mean: score.estimate,
            ci_low: score.low,
            ci_high: score.high,
        }),
        latency_wilcoxon_p: stats::wilcoxon_signed_rank(&latency_diffs),
        latency_median_diff_ms: if latency_diffs.is_empty() {
            0.0
        } else {
            gauntlet_core::percentile(&latency_diffs, 50.0)
        },
        a_cost_usd: a_cost,
        b_cost_usd: b_cost,
        cost_diff_usd: b_cost - a_cost,
        verdict: v1::Verdict::Unspecified as i32,
        pairs_needed,
    }
}

/// Holm across the pairs, then each pair's verdict.
fn conclude(pairs: &mut [v1::PairComparison], alpha: f64) {
    let p: Vec<f64> = pairs
        .iter()
        .map(|c| c.mcnemar.as_ref().map_or(1.0, |m| m.p_value))
        .collect();
    for (c, adjusted) in pairs.iter_mut().zip(stats::holm(&p)) {
        let m = c.mcnemar.get_or_insert_default();
        m.p_value_adjusted = adjusted;
        c.verdict = if c.n_pairs == 0 {
            v1::Verdict::NoData
        } else if adjusted < alpha && m.c > m.b {
            v1::Verdict::Better
        } else if adjusted < alpha && m.b > m.c {
            v1::Verdict::Worse
        } else {
            v1::Verdict::NoSignificantDifference
        } as i32;
    }
}

fn arm(side: &Side, names: &(String, String)) -> v1::Arm {
    v1::Arm {
        run_id: side.run_id.clone(),
        provider: names.0.clone(),
        prompt: names.1.clone(),
    }
}

/// One matched result whose verdict differs between the two runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Flip {
    /// In run B.
    pub test_index: i32,
    pub provider: String,
    pub prompt: String,
    pub repeat: i32,
    pub a_score: f64,
    pub b_score: f64,
}

/// The matched results of two runs that flipped, each list in run B's
/// test order.
#[derive(Debug, Default, PartialEq)]
pub struct Flips {
    /// Passed in A, did not in B.
    pub pass_to_fail: Vec<Flip>,
    pub fail_to_pass: Vec<Flip>,
}

impl Flips {
    fn add(&mut self, names: &(String, String), pairs: &[(Cell, Cell)]) {
        for (x, y) in pairs.iter().filter(|(x, y)| x.passed != y.passed) {
            let flip = Flip {
                test_index: y.test_index,
                provider: names.0.clone(),
                prompt: names.1.clone(),
                repeat: y.repeat,
                a_score: x.score,
                b_score: y.score,
            };
            if x.passed {
                self.pass_to_fail.push(flip);
            } else {
                self.fail_to_pass.push(flip);
            }
        }
    }

    fn sort(&mut self) {
        for list in [&mut self.pass_to_fail, &mut self.fail_to_pass] {
            list.sort_by(|x, y| {
                (x.test_index, &x.provider, &x.prompt, x.repeat).cmp(&(
                    y.test_index,
                    &y.provider,
                    &y.prompt,
                    y.repeat,
                ))
            });
        }
    }
}

/// Run B against the baseline A per provider × prompt, with the results
/// that flipped between them.
pub fn regressions(
    a: &Side,
    b: &Side,
    alpha: f64,
    seed: u64,
) -> Result<(Vec<v1::PairComparison>, Flips), Refusal> {
    let mut flips = Flips::default();
    let pairs = compare_into(a, Some(b), By::Group, alpha, seed, Some(&mut flips))?;
    flips.sort();
    Ok((pairs, flips))
}

/// Compares `a` with `b`, or within `a` when `b` is `None`.
pub fn compare(
    a: &Side,
    b: Option<&Side>,
    by: By,
    alpha: f64,
    seed: u64,
) -> Result<Vec<v1::PairComparison>, Refusal> {
    compare_into(a, b, by, alpha, seed, None)
}

fn compare_into(
    a: &Side,
    b: Option<&Side>,
    by: By,
    alpha: f64,
    seed: u64,
    mut flips: Option<&mut Flips>,
) -> Result<Vec<v1::PairComparison>, Refusal> {
    let (prov_a, prov_b) = canonical(&a.providers, b.map(|s| s.providers.as_slice()));
    let (prompt_a, prompt_b) = canonical(&a.prompts, b.map(|s| s.prompts.as_slice()));
    // Each side's arms are sorted by match key: at a million results a
    // side, the sides are sorted on two threads at once.
    let (arms_a, arms_b) = std::thread::scope(|scope| {
        let arms_b = b.map(|b| scope.spawn(|| arms(b, by, &prov_b, &prompt_b)));
        let arms_a = arms(a, by, &prov_a, &prompt_a);
        (
            arms_a,
            arms_b.map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))),
        )
    });
    let mut out = Vec::new();
    match (b, arms_b) {
        (Some(b), Some(arms_b)) => {
            for (key, cells_a) in &arms_a.cells {
                let Some(cells_b) = arms_b.cells.get(key) else {
                    continue;
                };
                let pairs = matched(cells_a, cells_b);
                if let Some(flips) = flips.as_deref_mut() {
                    flips.add(&arms_b.names[key], &pairs);
                }
                out.push(pair(
                    arm(a, &arms_a.names[key]),
                    arm(b, &arms_b.names[key]),
                    &pairs,
                    alpha,
                    seed,
                ));
            }
            if out.is_empty() {
                let what = match by {
                    By::Group => "provider × prompt",
                    By::Provider => "provider",
                    By::Prompt => "prompt",
                };
                return Err(Refusal(format!(
                    "runs {} and {} share no {what} with results to compare",
                    a.run_id, b.run_id
                )));
            }
            if out.iter().all(|p| p.n_pairs == 0) {
                return Err(Refusal(format!(
                    "runs {} and {} share no test case with results on both (test cases are matched by content)",
                    a.run_id, b.run_id
                )));
            }
        }
        _ => {
            let what = if by == By::Prompt {
                "prompt"
            } else {
                "provider"
            };
            if arms_a.cells.len() < 2 {
                return Err(Refusal(format!(
                    "run {} has results for {} {what}: a comparison within one run needs two",
                    a.run_id,
                    arms_a.cells.len()
                )));
            }
            let keys: Vec<_> = arms_a.cells.keys().collect();
            for (i, x) in keys.iter().enumerate() {
                for y in &keys[i + 1..] {
                    out.push(pair(
                        arm(a, &arms_a.names[x]),
                        arm(a, &arms_a.names[y]),
                        &matched(&arms_a.cells[x], &arms_a.cells[y]),
                        alpha,
                        seed,
                    ));
                }
            }
        }
    }
    conclude(&mut out, alpha);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(test: i32, provider: i32, prompt: i32, passed: bool, latency_ms: i32) -> Outcome {
        Outcome {
            test_index: test,
            prompt_index: prompt,
            provider_index: provider,
            repeat_index: 0,
            status: if passed {
                ResultStatus::Pass
            } else {
                ResultStatus::Fail
            },
            score: f64::from(u8::from(passed)),
            latency_ms,
            cost_usd: 0.01,
        }
    }

    fn side(id: &str, providers: &[&str], prompts: &[&str], outcomes: Vec<Outcome>) -> Side {
        Side {
            run_id: id.into(),
            providers: providers.iter().map(|s| s.to_string()).collect(),
            prompts: prompts.iter().map(|s| s.to_string()).collect(),
            test_keys: TestKeys::Index,
            outcomes,
        }
    }

    fn verdict(p: &v1::PairComparison) -> v1::Verdict {
        v1::Verdict::try_from(p.verdict).unwrap()
    }

    #[test]
    fn tests_pair_by_content_not_by_position() {
        // A's tests are digests 10, 20, 30; B has them as 30, 10, 20, 40.
        let digests = |d: &[i64]| {
            TestKeys::from_digests(
                &d.iter()
                    .enumerate()
                    .map(|(i, &d)| (i as i64, d))
                    .collect::<Vec<_>>(),
            )
        };
        let mut a = side(
            "a",
            &["p"],
            &["q"],
            (0..3).map(|t| outcome(t, 0, 0, true, 100)).collect(),
        );
        a.test_keys = digests(&[10, 20, 30]);
        // On B only the test with digest 10 (index 1) fails.
        let mut b = side(
            "b",
            &["p"],
            &["q"],
            (0..4).map(|t| outcome(t, 0, 0, t != 1, 100)).collect(),
        );
        b.test_keys = digests(&[30, 10, 20, 40]);
        let out = compare(&a, Some(&b), By::Group, 0.05, 1).unwrap();
        assert_eq!(out.len(), 1);
        let m = out[0].mcnemar.unwrap();
        assert_eq!((out[0].n_pairs, m.b, m.c), (3, 1, 0));
    }

    #[test]
    fn flips_are_named_by_the_run_b_test_in_both_directions() {
        // Two providers; A's tests are digests 10, 20, 30, B has them as
        // 30, 10, 20. On B, digest 10 (index 1) fails on provider x, and
        // digest 30 (index 0) passes on y where it failed on A.
        let keys = |d: &[i64]| {
            TestKeys::from_digests(
                &d.iter()
                    .enumerate()
                    .map(|(i, &d)| (i as i64, d))
                    .collect::<Vec<_>>(),
            )
        };
        let mut a_out = Vec::new();
        let mut b_out = Vec::new();
        for t in 0..3 {
            for p in 0..2 {
                a_out.push(outcome(t, p, 0, !(t == 2 && p == 1), 100));
                b_out.push(outcome(t, p, 0, !(t == 1 && p == 0), 100));
            }
        }
        let mut a = side("a", &["x", "y"], &["q"], a_out);
        a.test_keys = keys(&[10, 20, 30]);
        let mut b = side("b", &["x", "y"], &["q"], b_out);
        b.test_keys = keys(&[30, 10, 20]);
        let (pairs, flips) = regressions(&a, &b, 0.05, 1).unwrap();
        assert_eq!(pairs.len(), 2);
        let flip = |test, provider: &str, a_score, b_score| Flip {
            test_index: test,
            provider: provider.into(),
            prompt: "q".into(),
            repeat: 0,
            a_score,
            b_score,
        };
        assert_eq!(flips.pass_to_fail, [flip(1, "x", 1.0, 0.0)]);
        assert_eq!(flips.fail_to_pass, [flip(0, "y", 0.0, 1.0)]);
        // The comparison is compare's, by provider × prompt.
        assert_eq!(pairs, compare(&a, Some(&b), By::Group, 0.05, 1).unwrap());
    }

    #[test]
    fn equal_tests_pair_in_order_of_occurrence() {
        let keys = TestKeys::from_digests(&[(0, 7), (1, 7), (2, 8)]);
        let TestKeys::Content(k) = keys else {
            unreachable!()
        };
        assert_eq!(k, [(7, 0), (7, 1), (8, 0)]);
    }

    #[test]
    fn providers_pair_by_label_else_by_position() {
        // Same labels, another order: by label.
        let (a, b) = canonical(&["x".into(), "y".into()], Some(&["y".into(), "x".into()]));
        assert_eq!((a[0], a[1]), (b[1], b[0]));
        // An edited label in the same place: by position.
        let (a, b) = canonical(&["x".into(), "y".into()], Some(&["x".into(), "z".into()]));
        assert_eq!(a, b);
        // One more on B: by the labels they share; the new one pairs with nothing.
        let (a, b) = canonical(&["x".into()], Some(&["z".into(), "x".into()]));
        assert_eq!(a[0], b[1]);
        assert!(!a.contains(&b[0]));
    }

    #[test]
    fn within_a_run_every_two_providers_are_compared_and_holm_corrects() {
        let mut outcomes = Vec::new();
        for t in 0..40 {
            outcomes.push(outcome(t, 0, 0, true, 100));
            outcomes.push(outcome(t, 1, 0, t % 2 == 0, 120));
            outcomes.push(outcome(t, 2, 0, t >= 1, 90));
        }
        let a = side("r", &["p0", "p1", "p2"], &["q"], outcomes);
        let out = compare(&a, None, By::Provider, 0.05, 1).unwrap();
        assert_eq!(out.len(), 3);
        let names: Vec<_> = out
            .iter()
            .map(|p| (p.a.clone().unwrap().provider, p.b.clone().unwrap().provider))
            .collect();
        assert_eq!(
            names,
            [
                ("p0".into(), "p1".into()),
                ("p0".into(), "p2".into()),
                ("p1".into(), "p2".into())
            ]
        );
        // p1 fails half: worse than p0, with p ≈ 2·0.5^20 before Holm.
        assert_eq!(verdict(&out[0]), v1::Verdict::Worse);
        let m = out[0].mcnemar.unwrap();
        assert!(m.p_value_adjusted >= m.p_value);
        assert_eq!(verdict(&out[1]), v1::Verdict::NoSignificantDifference);
        assert_eq!(verdict(&out[2]), v1::Verdict::Better);
        // Latency: p1 is always 20 ms slower than p0.
        assert_eq!(out[0].latency_median_diff_ms, 20.0);
        assert!(out[0].latency_wilcoxon_p.unwrap() < 1e-6);
        // Connor: discordant shares 0.5 and 0 need (1.96·√0.5 + 0.84·√0.25)² / 0.25 = 13.06 pairs.
        assert_eq!(out[0].pairs_needed, 14);
    }

    #[test]
    fn swapping_a_and_b_flips_signs_and_verdicts() {
        let a = side(
            "a",
            &["p"],
            &["q"],
            (0..50)
                .map(|t| outcome(t, 0, 0, t % 5 != 0, 100 + t))
                .collect(),
        );
        let b = side(
            "b",
            &["p"],
            &["q"],
            (0..50).map(|t| outcome(t, 0, 0, t % 2 == 0, 90)).collect(),
        );
        let ab = &compare(&a, Some(&b), By::Group, 0.05, 7).unwrap()[0];
        let ba = &compare(&b, Some(&a), By::Group, 0.05, 7).unwrap()[0];
        let (mab, mba) = (ab.mcnemar.unwrap(), ba.mcnemar.unwrap());
        assert_eq!((mab.b, mab.c), (mba.c, mba.b));
        assert_eq!(mab.p_value, mba.p_value);
        assert_eq!(verdict(ab), v1::Verdict::Worse);
        assert_eq!(verdict(ba), v1::Verdict::Better);
        let (sab, sba) = (ab.score_diff.unwrap(), ba.score_diff.unwrap());
        assert_eq!(sab.mean, -sba.mean);
        assert_eq!(ab.cost_diff_usd, -ba.cost_diff_usd);
        assert_eq!(ab.latency_median_diff_ms, -ba.latency_median_diff_ms);
        assert_eq!(ab.latency_wilcoxon_p, ba.latency_wilcoxon_p);
    }

    #[test]
    fn identical_runs_differ_in_nothing() {
        let outcomes: Vec<_> = (0..30).map(|t| outcome(t, 0, 0, t % 3 == 0, 50)).collect();
        let a = side("a", &["p"], &["q"], outcomes.clone());
        let b = side("b", &["p"], &["q"], outcomes);
        let p = &compare(&a, Some(&b), By::Group, 0.05, 1).unwrap()[0];
        assert_eq!(verdict(p), v1::Verdict::NoSignificantDifference);
        assert_eq!(p.mcnemar.unwrap().p_value, 1.0);
        assert_eq!(p.latency_wilcoxon_p, None);
        assert_eq!(p.pairs_needed, 0);
        let s = p.score_diff.unwrap();
        assert_eq!((s.mean, s.ci_low, s.ci_high), (0.0, 0.0, 0.0));
    }

    #[test]
    fn runs_sharing_no_test_are_refused_saying_why() {
        let mut a = side("a", &["p"], &["q"], vec![outcome(0, 0, 0, true, 1)]);
        a.test_keys = TestKeys::from_digests(&[(0, 1)]);
        let mut b = side("b", &["p"], &["q"], vec![outcome(0, 0, 0, true, 1)]);
        b.test_keys = TestKeys::from_digests(&[(0, 2)]);
        let err = compare(&a, Some(&b), By::Group, 0.05, 1).unwrap_err();
        assert!(err.0.contains("share no test case"), "{err:?}");
        let lonely = side("a", &["p"], &["q"], vec![outcome(0, 0, 0, true, 1)]);
        let err = compare(&lonely, None, By::Provider, 0.05, 1).unwrap_err();
        assert!(err.0.contains("has results for 1 provider"), "{err:?}");
    }
}
