//! Paired pass/fail outcomes of two arms: the discordant counts, McNemar's
//! exact test on them, and how many pairs a McNemar test needs.

use statrs::distribution::{Binomial, ContinuousCDF, Discrete, DiscreteCDF, Normal};

/// The discordant counts `(b, c)` of paired outcomes `(a_passed, b_passed)`:
/// b = A passed and B failed, c = A failed and B passed. Concordant pairs
/// (both passed, both failed) count in neither, which is why they never move
/// McNemar's test.
pub fn discordant(pairs: impl IntoIterator<Item = (bool, bool)>) -> (u64, u64) {
    pairs.into_iter().fold((0, 0), |(b, c), pair| match pair {
        (true, false) => (b + 1, c),
        (false, true) => (b, c + 1),
        _ => (b, c),
    })
}

/// Exact McNemar test, two-sided: b and c are the discordant counts (A passed
/// & B failed, A failed & B passed).
/// p = min(1, 2 * BinomCDF(min(b,c); b+c, 0.5)), as
/// statsmodels.stats.contingency_tables.mcnemar(exact=True).
/// b + c = 0 → 1.0.
///
/// Precision, relative to scipy: within 1e-9 for b + c up to 10^6 (down to
/// p ~ 1e-300), 3e-9 up to 2·10^6, ~1e-8 at 10^7 and ~1e-7 at 10^8, where
/// the ln-gamma prefactor of statrs's binomial loses digits to cancellation.
/// statrs's binomial cdf (an incomplete beta by a continued fraction of at
/// most 140 terms) also fails to converge within ~0.7 standard deviations of
/// the centre once b + c passes ~10^5 (p = 0.983 instead of 1 for b = c =
/// 10^6), so there p is found as 1 − P(min < X < max), summing statrs's
/// pmf over those few outcomes instead. p below ~1e-308 underflows to 0, as
/// scipy's does.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b.saturating_add(c);
    if n == 0 {
        return 1.0;
    }
    let binomial = Binomial::new(0.5, n).expect("p = 0.5 is a valid probability");
    let (low, high) = (b.min(c), b.max(c));
    let between = high - low;
    // b = c, or one apart with b + c odd: P(X ≤ min) ≥ 1/2.
    if between <= 1 {
        return 1.0;
    }
    if (between as f64) < CENTRE_SDS * (n as f64).sqrt() && between <= MAX_CENTRE_TERMS {
        // P(X <= low) + P(X >= high), by symmetry.
        let inside: f64 = (low + 1..high).map(|x| binomial.pmf(x)).sum();
        return (1.0 - inside).clamp(0.0, 1.0);
    }
    (2.0 * binomial.cdf(low)).min(1.0)
}

/// Within this many standard deviations (of b − c, √(b + c)) of the centre,
/// McNemar's p is summed from the pmf: statrs's cdf converges from ~0.7 on.
const CENTRE_SDS: f64 = 0.75;
/// The most pmf terms that sum may take (b + c up to ~1.9·10^12).
const MAX_CENTRE_TERMS: u64 = 1 << 20;

/// Pairs needed for a two-sided exact-ish McNemar test at `alpha` to detect
/// the observed discordant proportions p10 (A pass, B fail) and p01 (A fail,
/// B pass) with `power` (Connor 1987 normal approximation:
/// n = (z_{1-α/2}·sqrt(ψ) + z_{power}·sqrt(ψ − δ²))² / δ², ψ = p10 + p01,
/// δ = p10 − p01), rounded up.
/// None when δ = 0 (no difference to detect), and when the inputs are not
/// proportions (p10, p01 and p10 + p01 in [0, 1]; alpha and power in (0, 1)).
/// The approximation assumes power ≥ 1/2; below that it is at least 1.
pub fn mcnemar_sample_size(p10: f64, p01: f64, alpha: f64, power: f64) -> Option<u64> {
    let proportion = |p: f64| (0.0..=1.0).contains(&p);
    let open = |p: f64| p > 0.0 && p < 1.0;
    if !(proportion(p10) && proportion(p01) && proportion(p10 + p01) && open(alpha) && open(power))
    {
        return None;
    }
    let delta = p10 - p01;
    if delta == 0.0 {
        return None;
    }
    let psi = p10 + p01;
    let normal = Normal::standard();
    let z_alpha = normal.inverse_cdf(1.0 - alpha / 2.0);
    let z_power = normal.inverse_cdf(power);
    let root = z_alpha * psi.sqrt() + z_power * (psi - delta * delta).max(0.0).sqrt();
    let n = root.max(0.0).powi(2) / (delta * delta);
    Some((n.ceil() as u64).max(1))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn no_discordant_pairs_mean_no_evidence() {
        assert_eq!(mcnemar_exact(0, 0), 1.0);
    }

    #[test]
    fn equal_discordant_counts_give_one() {
        for k in [1, 2, 10, 12_345, 1_000_000] {
            assert_eq!(mcnemar_exact(k, k), 1.0, "k = {k}");
        }
    }

    #[test]
    fn near_equal_counts_are_summed_from_the_centre() {
        // statrs's cdf alone gives 0.9833 here.
        let p = mcnemar_exact(999_999, 1_000_001);
        assert!(p > 0.998 && p < 1.0, "{p}");
    }

    #[test]
    fn huge_counts_neither_overflow_nor_panic() {
        assert!(mcnemar_exact(u64::MAX, u64::MAX).is_finite());
        assert_eq!(mcnemar_exact(1, 10_000_000), 0.0);
    }

    #[test]
    fn discordant_counts_only_the_pairs_that_differ() {
        let pairs = [
            (true, true),
            (true, false),
            (false, true),
            (true, false),
            (false, false),
        ];
        assert_eq!(discordant(pairs), (2, 1));
        assert_eq!(discordant([]), (0, 0));
    }

    #[test]
    fn sample_size_without_a_difference_is_none() {
        assert_eq!(mcnemar_sample_size(0.2, 0.2, 0.05, 0.8), None);
        assert_eq!(mcnemar_sample_size(0.0, 0.0, 0.05, 0.8), None);
    }

    #[test]
    fn sample_size_of_impossible_inputs_is_none() {
        for (p10, p01, alpha, power) in [
            (-0.1, 0.2, 0.05, 0.8),
            (0.7, 0.6, 0.05, 0.8),
            (0.2, 0.1, 0.0, 0.8),
            (0.2, 0.1, 0.05, 1.0),
            (f64::NAN, 0.1, 0.05, 0.8),
        ] {
            assert_eq!(mcnemar_sample_size(p10, p01, alpha, power), None);
        }
    }

    #[test]
    fn sample_size_grows_as_the_difference_shrinks() {
        let wide = mcnemar_sample_size(0.3, 0.1, 0.05, 0.8).unwrap();
        let narrow = mcnemar_sample_size(0.3, 0.25, 0.05, 0.8).unwrap();
        assert!(narrow > wide, "{narrow} <= {wide}");
    }

    proptest! {
        #[test]
        fn swapping_the_arms_keeps_p(b in 0u64..3_000, c in 0u64..3_000) {
            prop_assert_eq!(mcnemar_exact(b, c), mcnemar_exact(c, b));
        }

        #[test]
        fn swapping_the_arms_keeps_p_for_large_counts(
            b in 0u64..3_000_000,
            c in 0u64..3_000_000,
        ) {
            let p = mcnemar_exact(b, c);
            prop_assert_eq!(p, mcnemar_exact(c, b));
            prop_assert!((0.0..=1.0).contains(&p));
        }

        #[test]
        fn concordant_pairs_change_nothing(
            pairs in prop::collection::vec(any::<(bool, bool)>(), 0..200),
            concordant in prop::collection::vec((any::<bool>(), any::<usize>()), 0..50),
        ) {
            let before = discordant(pairs.iter().copied());
            let mut more = pairs.clone();
            for (passed, at) in concordant {
                more.insert(at % (more.len() + 1), (passed, passed));
            }
            let after = discordant(more);
            prop_assert_eq!(before, after);
            prop_assert_eq!(mcnemar_exact(before.0, before.1), mcnemar_exact(after.0, after.1));
        }
    }
}

/// Discordant counts past 10^5, near the centre where statrs's cdf falls
/// short, against scipy 1.17.1's
/// `min(1, 2 * binom.cdf(k, n, 0.5))`, within the bound its doc states.
#[cfg(test)]
mod large_counts {
    #[test]
    fn agree_with_scipy_within_the_documented_bound() {
        let cases: [(u64, u64, f64); 21] = [
            (99988, 200000, 0.9589832447157143),
            (99977, 200000, 0.9198497241294381),
            (99955, 200000, 0.8422549453721222),
            (99932, 200000, 0.762751880640862),
            (99888, 200000, 0.6180309046592879),
            (99843, 200000, 0.4839965474544601),
            (99776, 200000, 0.317541700493089),
            (999964, 2000000, 0.9599593623422338),
            (999929, 2000000, 0.9205808713743138),
            (999858, 2000000, 0.8413936055350928),
            (999787, 2000000, 0.7637802605976791),
            (999646, 2000000, 0.6171282553360772),
            (999505, 2000000, 0.4843467027243346),
            (999292, 2000000, 0.3170414650645402),
            (9999888, 20000000, 0.9602305138640355),
            (9999776, 20000000, 0.9203822438871849),
            (9999552, 20000000, 0.8413804104170467),
            (9999329, 20000000, 0.7642864525473707),
            (9998881, 20000000, 0.6169283407465851),
            (9998434, 20000000, 0.4838568113671665),
            (9997763, 20000000, 0.3172170163405293),
        ];
        for (k, n, want) in cases {
            let got = super::mcnemar_exact(k, n - k);
            let bound = if n <= 200_000 {
                1e-9
            } else if n <= 2_000_000 {
                5e-9
            } else {
                5e-8
            };
            let relative = (got - want).abs() / want;
            assert!(
                relative < bound,
                "k = {k}, n = {n}: {got} vs {want} ({relative:e})"
            );
        }
    }
}
