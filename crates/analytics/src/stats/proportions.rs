//! Two independent proportions: did a pass rate move between two runs when
//! the results cannot be paired (an assertion type's or a metric's pass
//! rate, counted over whatever assertions of that name each run has)?

use statrs::distribution::{ContinuousCDF, Normal};

/// Two-sided p of the pooled two-proportion z-test of `x1` of `n1` against
/// `x2` of `n2` (statsmodels `proportions_ztest([x1, x2], [n1, n2])`).
/// Where the test has nothing to say (an empty side, or every count on one
/// outcome, so the pooled variance is 0 and the rates are equal) it gives
/// 1, never NaN.
pub fn two_proportion_z_test(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    if n1 == 0 || n2 == 0 {
        return 1.0;
    }
    let (x1, n1, x2, n2) = (x1 as f64, n1 as f64, x2 as f64, n2 as f64);
    let pooled = (x1 + x2) / (n1 + n2);
    let variance = pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2);
    if variance <= 0.0 {
        return 1.0;
    }
    let z = (x1 / n1 - x2 / n2) / variance.sqrt();
    // 2 · sf(|z|), from the lower tail, where small p keep their precision.
    (2.0 * Normal::standard().cdf(-z.abs())).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference p from the same formula in Python, with the tail as
    /// `math.erfc(|z| / √2)` (what scipy's `norm.sf` computes), which
    /// statsmodels' `proportions_ztest` gives for these counts.
    #[test]
    fn matches_the_reference_within_1e_9() {
        for ((x1, n1, x2, n2), p) in [
            ((50, 100, 70, 100), 0.0038924171227786427),
            ((3, 10, 9, 12), 0.03479921620986434),
            ((990, 1000, 1000, 1000), 0.0015232716476467928),
            (
                (400_000, 1_000_000, 401_000, 1_000_000),
                0.14899911540070068,
            ),
        ] {
            let got = two_proportion_z_test(x1, n1, x2, n2);
            assert!(
                (got - p).abs() < 1e-9,
                "{x1}/{n1} vs {x2}/{n2}: {got} != {p}"
            );
            // The test is symmetric.
            assert_eq!(got, two_proportion_z_test(x2, n2, x1, n1));
        }
    }

    #[test]
    fn no_evidence_gives_one_never_nan() {
        assert_eq!(two_proportion_z_test(0, 0, 5, 10), 1.0);
        assert_eq!(two_proportion_z_test(5, 10, 0, 0), 1.0);
        assert_eq!(two_proportion_z_test(10, 10, 7, 7), 1.0);
        assert_eq!(two_proportion_z_test(0, 10, 0, 7), 1.0);
        assert_eq!(two_proportion_z_test(30, 60, 1, 2), 1.0);
    }
}
