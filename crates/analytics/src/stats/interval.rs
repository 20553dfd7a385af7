//! Intervals of one arm: a pass rate (Wilson), a mean score (Student t), and
//! and the interpolation the bootstrap reads its bounds off with.

use statrs::distribution::{Continuous, ContinuousCDF, StudentsT};

use super::{Interval, normal_upper_quantile, tail_mass};

/// Wilson score interval for a binomial proportion (statsmodels
/// `proportion_confint(method="wilson")`, whose bounds are clipped to [0, 1]).
/// n = 0 gives Interval { 0, 0, 0 } (never NaN: these go on the wire).
/// `successes` above `n` counts as `n`.
pub fn wilson(successes: u64, n: u64, confidence: f64) -> Interval {
    if n == 0 {
        return Interval::ZERO;
    }
    let n = n as f64;
    let rate = successes as f64 / n;
    let rate = rate.min(1.0);
    let z = normal_upper_quantile(tail_mass(confidence));
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let center = (rate + z2 / (2.0 * n)) / denominator;
    let half_width = z * (rate * (1.0 - rate) / n + z2 / (4.0 * (n * n))).sqrt() / denominator;
    Interval::containing(
        rate,
        (center - half_width).clamp(0.0, 1.0),
        (center + half_width).clamp(0.0, 1.0),
    )
}

/// Mean with a Student-t interval (scipy `stats.t.interval(confidence, n - 1,
/// loc=mean, scale=sem)`). n = 0 → all 0; n = 1 → low = high = estimate.
/// Values must be finite (a NaN makes the interval NaN).
pub fn mean_interval(values: &[f64], confidence: f64) -> Interval {
    let n = values.len();
    match values {
        [] => Interval::ZERO,
        [only] => Interval::containing(*only, *only, *only),
        _ => {
            let mean = values.iter().sum::<f64>() / n as f64;
            // Two passes, as numpy's std(ddof=1): no cancellation from sum of squares.
            let squares: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
            let standard_error = (squares / (n - 1) as f64).sqrt() / (n as f64).sqrt();
            let half_width =
                t_upper_quantile((n - 1) as f64, tail_mass(confidence)) * standard_error;
            Interval::containing(mean, mean - half_width, mean + half_width)
        }
    }
}

/// [`mean_interval`] of `n` values known only by their sum and their sum of
/// squares (what the database adds up per group): the same interval, with
/// the variance taken as (Σx² − n·mean²)/(n − 1), which loses digits only
/// when the spread is tiny against the mean (scores lie in 0..=1).
pub fn mean_interval_from_sums(n: u64, sum: f64, sum_sq: f64, confidence: f64) -> Interval {
    match n {
        0 => Interval::ZERO,
        1 => Interval::containing(sum, sum, sum),
        _ => {
            let nf = n as f64;
            let mean = sum / nf;
            let variance = ((sum_sq - nf * mean * mean) / (nf - 1.0)).max(0.0);
            let half_width =
                t_upper_quantile(nf - 1.0, tail_mass(confidence)) * (variance / nf).sqrt();
            Interval::containing(mean, mean - half_width, mean + half_width)
        }
    }
}

/// Degrees of freedom from which [`t_upper_quantile`] uses the expansion.
const T_EXPANSION_DF: f64 = 1e4;

/// The quantile of Student's t with `df` degrees of freedom that has `tail`
/// above it (scipy `t.isf`).
///
/// statrs's `inverse_cdf` drifts as `df` grows (7e-7 relative in the cdf at
/// df = 5·10^4, 6.8e-6 in the quantile at 10^5) and does not return for some
/// df past 10^7, and for df = 1 it is far off in the extreme tails. So:
/// - below df = 10^4 its answer is polished by Newton steps on statrs's own
///   `cdf`, accurate to ~1e-12 there;
/// - from df = 10^4 on, the Cornish–Fisher expansion of t in the normal
///   quantile x (Abramowitz & Stegun 26.7.5, to the 1/df⁴ term), which
///   agrees with scipy within 1e-14 there for tails down to 5e-16.
fn t_upper_quantile(df: f64, tail: f64) -> f64 {
    if df >= T_EXPANSION_DF {
        t_expansion(df, tail)
    } else {
        t_polished(df, tail)
    }
}

/// Abramowitz & Stegun 26.7.5, to the 1/df⁴ term.
fn t_expansion(df: f64, tail: f64) -> f64 {
    let x = normal_upper_quantile(tail);
    let x2 = x * x;
    let g1 = x * (x2 + 1.0) / 4.0;
    let g2 = x * ((5.0 * x2 + 16.0) * x2 + 3.0) / 96.0;
    let g3 = x * (((3.0 * x2 + 19.0) * x2 + 17.0) * x2 - 15.0) / 384.0;
    let g4 = x * ((((79.0 * x2 + 776.0) * x2 + 1482.0) * x2 - 1920.0) * x2 - 945.0) / 92160.0;
    x + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df
}

/// statrs's inverse cdf, polished by Newton steps on its cdf.
fn t_polished(df: f64, tail: f64) -> f64 {
    let t = StudentsT::new(0.0, 1.0, df).expect("df >= 1 and a unit scale are valid");
    // The lower-tail quantile, where a small `tail` keeps its precision.
    let mut x = t.inverse_cdf(tail);
    let mut error = t.cdf(x) - tail;
    // Far in a heavy tail Newton only doubles x each step: allow enough.
    for _ in 0..100 {
        let density = t.pdf(x);
        if error == 0.0 || density.is_nan() || density <= 0.0 {
            break;
        }
        let next = x - error / density;
        let next_error = t.cdf(next) - tail;
        // Stop where the cdf's own noise is reached.
        if next_error.is_nan() || next_error.abs() >= error.abs() {
            break;
        }
        x = next;
        error = next_error;
    }
    -x
}

/// numpy's `_lerp`: from the nearer end, so `t` = 0 and 1 give the ends exactly.
pub(super) fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let difference = b - a;
    if t >= 0.5 {
        b - difference * (1.0 - t)
    } else {
        a + difference * t
    }
}

#[cfg(test)]
mod tests {
    use gauntlet_core::percentile;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_interval_from_sums_is_the_interval_from_the_values() {
        let values = [0.0, 1.0, 1.0, 0.5, 0.25, 1.0, 0.0, 0.75];
        let sum: f64 = values.iter().sum();
        let sum_sq: f64 = values.iter().map(|v| v * v).sum();
        let direct = mean_interval(&values, 0.95);
        let summed = mean_interval_from_sums(values.len() as u64, sum, sum_sq, 0.95);
        for (a, b) in [
            (direct.estimate, summed.estimate),
            (direct.low, summed.low),
            (direct.high, summed.high),
        ] {
            assert!((a - b).abs() < 1e-12, "{direct:?} vs {summed:?}");
        }
        assert_eq!(mean_interval_from_sums(0, 0.0, 0.0, 0.95), Interval::ZERO);
        let one = mean_interval_from_sums(1, 0.5, 0.25, 0.95);
        assert_eq!((one.low, one.high), (0.5, 0.5));
    }

    #[test]
    fn wilson_of_no_trials_is_zero() {
        assert_eq!(wilson(0, 0, 0.95), Interval::ZERO);
        assert_eq!(wilson(3, 0, 0.95), Interval::ZERO);
    }

    #[test]
    fn wilson_bounds_stay_in_the_unit_interval_at_the_extremes() {
        let none = wilson(0, 40, 0.95);
        assert_eq!((none.estimate, none.low), (0.0, 0.0));
        assert!(none.high > 0.0 && none.high < 1.0);
        let all = wilson(40, 40, 0.95);
        assert_eq!((all.estimate, all.high), (1.0, 1.0));
        assert!(all.low > 0.0 && all.low < 1.0);
    }

    #[test]
    fn wilson_with_a_bad_confidence_stays_finite() {
        for confidence in [f64::NAN, -1.0, 0.0, 1.0, 2.0] {
            let interval = wilson(7, 20, confidence);
            assert!(interval.low.is_finite() && interval.high.is_finite());
            assert!(interval.low <= 0.35 && 0.35 <= interval.high);
        }
        assert_eq!(wilson(7, 20, 0.0), Interval::containing(0.35, 0.35, 0.35));
    }

    #[test]
    fn mean_interval_of_no_values_is_zero() {
        assert_eq!(mean_interval(&[], 0.95), Interval::ZERO);
    }

    #[test]
    fn mean_interval_of_one_value_is_that_value() {
        let interval = mean_interval(&[0.25], 0.95);
        assert_eq!(
            (interval.estimate, interval.low, interval.high),
            (0.25, 0.25, 0.25)
        );
    }

    #[test]
    fn mean_interval_of_equal_values_has_no_width() {
        let interval = mean_interval(&[0.5; 10], 0.95);
        assert_eq!((interval.low, interval.high), (0.5, 0.5));
    }

    #[test]
    fn mean_interval_at_confidence_one_stays_finite() {
        let interval = mean_interval(&[0.0, 1.0, 1.0], 1.0);
        assert!(interval.low.is_finite() && interval.high.is_finite());
    }

    #[test]
    fn t_quantile_tends_to_the_normal_one() {
        let z = normal_upper_quantile(0.025);
        let t = t_upper_quantile(1e9, 0.025);
        assert!((t - z).abs() < 1e-8, "t {t} z {z}");
    }

    #[test]
    fn t_quantile_ways_agree_where_the_expansion_takes_over() {
        for tail in [5e-16, 1e-6, 0.025, 0.25] {
            let polished = t_polished(T_EXPANSION_DF, tail);
            let expanded = t_expansion(T_EXPANSION_DF, tail);
            assert!(
                (polished - expanded).abs() < 1e-10,
                "tail {tail}: {polished} vs {expanded}"
            );
        }
    }

    #[test]
    fn t_quantile_of_one_df_is_cauchy_far_in_the_tail() {
        // Cauchy: the quantile with `tail` above it is cot(π·tail).
        for tail in [5e-16, 1e-10, 0.025] {
            let expected = 1.0 / (std::f64::consts::PI * tail).tan();
            let t = t_upper_quantile(1.0, tail);
            assert!(
                ((t - expected) / expected).abs() < 1e-9,
                "tail {tail}: {t} vs {expected}"
            );
        }
    }

    #[test]
    fn percentile_ends_are_the_extremes() {
        // The percentile is core's (the one latency summaries use); numpy's
        // agreement is checked in `reference`.
        let sorted = [-2.0, 0.1, 0.3, 7.0];
        assert_eq!(percentile(&sorted, 0.0), -2.0);
        assert_eq!(percentile(&sorted, 100.0), 7.0);
        assert_eq!(percentile(&sorted, -5.0), -2.0);
        assert_eq!(percentile(&sorted, 250.0), 7.0);
    }

    proptest! {
        #[test]
        fn wilson_holds_its_estimate(
            n in 0u64..2_000_000,
            share in 0.0..=1.0f64,
            confidence in 0.5..0.9999f64,
        ) {
            let successes = (share * n as f64).round() as u64;
            let interval = wilson(successes, n, confidence);
            prop_assert!(0.0 <= interval.low && interval.low <= interval.estimate);
            prop_assert!(interval.estimate <= interval.high && interval.high <= 1.0);
        }

        #[test]
        fn mean_interval_holds_its_estimate(
            values in prop::collection::vec(-1e3..1e3f64, 0..60),
            confidence in 0.5..0.9999f64,
        ) {
            let interval = mean_interval(&values, confidence);
            prop_assert!(interval.low <= interval.estimate && interval.estimate <= interval.high);
        }

        #[test]
        fn percentile_rises_with_q_between_the_extremes(
            mut values in prop::collection::vec(-1e3..1e3f64, 1..40),
            q in 0.0..=100.0f64,
            r in 0.0..=100.0f64,
        ) {
            values.sort_by(f64::total_cmp);
            let (low, high) = (q.min(r), q.max(r));
            let (at_low, at_high) = (percentile(&values, low), percentile(&values, high));
            prop_assert!(values[0] <= at_low && at_low <= at_high);
            prop_assert!(at_high <= values[values.len() - 1]);
        }
    }
}
