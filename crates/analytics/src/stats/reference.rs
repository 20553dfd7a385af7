//! Agreement with scipy, statsmodels and numpy, on the values
//! `scripts/stats_reference.py` wrote to `tests/fixtures/stats_reference.json`.
//!
//! Tolerances: values of order one (interval bounds, means, percentiles)
//! within 1e-9 absolute, scaled up by the value's magnitude past 1;
//! p-values within 1e-9 relative (they run down to 1e-301), except McNemar
//! past 10^6 discordant pairs, where statrs is good to 3e-9 relative up to
//! 2·10^6 and 1e-7 past that (see `mcnemar_exact`); sample sizes exactly.

use serde::Deserialize;

use super::{
    holm, mcnemar_exact, mcnemar_sample_size, mean_interval,
    wilcoxon::{Method, wilcoxon},
    wilson,
};

const FIXTURE: &str = include_str!("../../tests/fixtures/stats_reference.json");

#[derive(Deserialize)]
struct Fixture {
    versions: Versions,
    wilson: Vec<WilsonCase>,
    mean_interval: Vec<MeanCase>,
    mcnemar_exact: Vec<McNemarCase>,
    wilcoxon: Vec<WilcoxonCase>,
    holm: Vec<HolmCase>,
    percentile: Vec<PercentileCase>,
    mcnemar_sample_size: Vec<SampleSizeCase>,
}

#[derive(Deserialize)]
struct Versions {
    scipy: String,
    statsmodels: String,
    numpy: String,
}

#[derive(Deserialize)]
struct WilsonCase {
    successes: u64,
    n: u64,
    confidence: f64,
    estimate: f64,
    low: f64,
    high: f64,
}

#[derive(Deserialize)]
struct MeanCase {
    /// Repeated `repeat` times, so large samples stay small in the file.
    values: Vec<f64>,
    repeat: usize,
    confidence: f64,
    estimate: f64,
    low: f64,
    high: f64,
}

#[derive(Deserialize)]
struct McNemarCase {
    b: u64,
    c: u64,
    p: f64,
}

#[derive(Deserialize)]
struct WilcoxonCase {
    name: String,
    diffs: Vec<f64>,
    method: Option<String>,
    p: Option<f64>,
}

#[derive(Deserialize)]
struct HolmCase {
    p_values: Vec<f64>,
    adjusted: Vec<f64>,
}

#[derive(Deserialize)]
struct PercentileCase {
    sorted: Vec<f64>,
    q: f64,
    value: f64,
}

#[derive(Deserialize)]
struct SampleSizeCase {
    p10: f64,
    p01: f64,
    alpha: f64,
    power: f64,
    n: Option<u64>,
}

fn fixture() -> Fixture {
    serde_json::from_str(FIXTURE).expect("the fixture parses")
}

/// Within 1e-9, relative to the expected value once it exceeds 1.
#[track_caller]
fn assert_close(actual: f64, expected: f64, what: &str) {
    let tolerance = 1e-9 * expected.abs().max(1.0);
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual:e} vs reference {expected:e}"
    );
}

/// Within `relative` of the expected value (and equal below the smallest
/// normal numbers, where both sides have underflowed).
#[track_caller]
fn assert_relative(actual: f64, expected: f64, relative: f64, what: &str) {
    let tolerance = relative * expected.abs() + f64::MIN_POSITIVE;
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual:e} vs reference {expected:e} (relative {:e})",
        ((actual - expected) / expected).abs()
    );
}

#[test]
fn fixture_names_the_pinned_library_versions() {
    let versions = fixture().versions;
    assert_eq!(
        (
            versions.scipy.as_str(),
            versions.statsmodels.as_str(),
            versions.numpy.as_str()
        ),
        ("1.17.1", "0.15.0", "2.4.6"),
        "the code follows these versions' behaviour (wilcoxon's method choice): \
         review it when the fixture is regenerated with others"
    );
}

#[test]
fn wilson_matches_statsmodels() {
    for case in fixture().wilson {
        let what = format!(
            "wilson({}, {}, {})",
            case.successes, case.n, case.confidence
        );
        let interval = wilson(case.successes, case.n, case.confidence);
        assert_close(interval.estimate, case.estimate, &what);
        assert_close(interval.low, case.low, &what);
        assert_close(interval.high, case.high, &what);
    }
}

#[test]
fn mean_interval_matches_scipy_t() {
    for case in fixture().mean_interval {
        let what = format!(
            "mean_interval({:?} × {}, {})",
            case.values, case.repeat, case.confidence
        );
        let values = case.values.repeat(case.repeat);
        let interval = mean_interval(&values, case.confidence);
        assert_close(interval.estimate, case.estimate, &what);
        assert_close(interval.low, case.low, &what);
        assert_close(interval.high, case.high, &what);
    }
}

#[test]
fn mcnemar_matches_statsmodels() {
    for case in fixture().mcnemar_exact {
        let n = case.b + case.c;
        let relative = if n <= 1_000_000 {
            1e-9
        } else if n <= 2_000_000 {
            3e-9
        } else {
            1e-7
        };
        let what = format!("mcnemar_exact({}, {})", case.b, case.c);
        assert_relative(mcnemar_exact(case.b, case.c), case.p, relative, &what);
    }
}

#[test]
fn wilcoxon_matches_scipy_and_its_method() {
    for case in fixture().wilcoxon {
        let what = format!("wilcoxon: {}", case.name);
        let result = wilcoxon(&case.diffs);
        match (result, case.p) {
            (None, None) => {}
            (Some((method, p)), Some(expected)) => {
                let method = match method {
                    Method::Exact => "exact",
                    Method::Permutation => "permutation",
                    Method::Asymptotic => "asymptotic",
                };
                assert_eq!(Some(method), case.method.as_deref(), "{what}");
                assert_relative(p, expected, 1e-9, &what);
            }
            (got, expected) => panic!("{what}: {got:?} vs reference {expected:?}"),
        }
    }
}

#[test]
fn holm_matches_statsmodels() {
    for case in fixture().holm {
        let what = format!("holm({:?})", case.p_values);
        let adjusted = holm(&case.p_values);
        assert_eq!(adjusted.len(), case.adjusted.len(), "{what}");
        for (actual, expected) in adjusted.into_iter().zip(case.adjusted) {
            assert_relative(actual, expected, 1e-9, &what);
        }
    }
}

/// Core's percentile, the one latency summaries and comparisons use.
#[test]
fn percentile_matches_numpy() {
    use gauntlet_core::percentile;
    for case in fixture().percentile {
        let what = format!("percentile({:?}, {})", case.sorted, case.q);
        assert_close(percentile(&case.sorted, case.q), case.value, &what);
    }
}

#[test]
fn sample_size_matches_the_formula_with_scipy_quantiles() {
    for case in fixture().mcnemar_sample_size {
        assert_eq!(
            mcnemar_sample_size(case.p10, case.p01, case.alpha, case.power),
            case.n,
            "mcnemar_sample_size({}, {}, {}, {})",
            case.p10,
            case.p01,
            case.alpha,
            case.power
        );
    }
}
