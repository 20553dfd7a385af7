//! Wilcoxon's signed-rank test on paired score differences, as scipy 1.17's
//! `scipy.stats.wilcoxon(d)` computes it with its defaults
//! (`zero_method="wilcox"`, `correction=False`, `method="auto"`).

use statrs::distribution::{ContinuousCDF, Normal};

/// How the p-value is found. scipy 1.17's `method="auto"` picks, from the
/// differences as given (zeros included in their number):
/// - more than 50 → the normal approximation;
/// - no zeros and no ties in |d| → the exact null distribution;
/// - else, 13 or fewer → a permutation test, which at that size enumerates
///   every sign flip (2^13 < scipy's 9,999 resamples), so it is exact too;
/// - else the normal approximation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Exact,
    Permutation,
    Asymptotic,
}

impl Method {
    fn for_sample(len: usize, zeros: usize, ties: bool) -> Method {
        if len > 50 {
            Method::Asymptotic
        } else if zeros == 0 && !ties {
            Method::Exact
        } else if len <= 13 {
            Method::Permutation
        } else {
            Method::Asymptotic
        }
    }
}

/// Wilcoxon signed-rank test, two-sided, on paired differences (a - b).
/// Zero differences are dropped (scipy zero_method="wilcox"). Ties get
/// average ranks.
///
/// Matches scipy 1.17.1's `wilcoxon(d)` (see [`Method`] for when each way is
/// used): the exact null distribution for n ≤ 50 without zeros or ties; the
/// exact distribution of all sign flips (scipy's permutation test, exact at
/// that size) for n ≤ 13 with zeros or ties; else the normal approximation
/// with the tie correction of the variance and no continuity correction.
///
/// None when no non-zero difference remains, and when a difference is NaN.
pub fn wilcoxon_signed_rank(diffs: &[f64]) -> Option<f64> {
    wilcoxon(diffs).map(|(_, p)| p)
}

/// The p-value and the way it was found.
pub(super) fn wilcoxon(diffs: &[f64]) -> Option<(Method, f64)> {
    if diffs.iter().any(|d| d.is_nan()) {
        return None;
    }
    let mut nonzero: Vec<f64> = diffs.iter().copied().filter(|&d| d != 0.0).collect();
    if nonzero.is_empty() {
        return None;
    }
    let zeros = diffs.len() - nonzero.len();
    nonzero.sort_by(|a, b| a.abs().total_cmp(&b.abs()));

    let ranks = Ranks::of_sorted_magnitudes(&nonzero);
    let method = Method::for_sample(diffs.len(), zeros, ranks.tie_term > 0.0);
    let p = match method {
        Method::Exact | Method::Permutation => {
            // Without ties the doubled ranks are 2, 4, …, 2n, and the sign
            // flips' distribution is the exact one: one computation serves both.
            let (at_most, at_least) = ranks.sign_flip_tails();
            let smaller = at_most.min(at_least);
            // Counts and 2^n are exact in f64 for n ≤ 50.
            2.0 * smaller as f64 / 2f64.powi(nonzero.len() as i32)
        }
        Method::Asymptotic => {
            let n = nonzero.len() as f64;
            let mean = n * (n + 1.0) * 0.25;
            let variance_24 = n * (n + 1.0) * (2.0 * n + 1.0) - ranks.tie_term / 2.0;
            let standard_error = (variance_24 / 24.0).sqrt();
            let z = (ranks.positive_doubled as f64 / 2.0 - mean) / standard_error;
            2.0 * Normal::standard().sf(z.abs())
        }
    };
    Some((method, p.min(1.0)))
}

/// Average ranks of the non-zero |d|, doubled so that a tie's half rank
/// stays an integer.
struct Ranks {
    /// Doubled rank of each difference, in the order of |d|.
    doubled: Vec<u64>,
    /// The doubled rank sum of the positive differences (2·r_plus).
    positive_doubled: u64,
    /// Σ (t³ − t) over groups of t tied |d|: the variance's tie correction.
    tie_term: f64,
}

impl Ranks {
    /// `sorted` holds the non-zero differences ordered by magnitude.
    fn of_sorted_magnitudes(sorted: &[f64]) -> Ranks {
        let mut doubled = Vec::with_capacity(sorted.len());
        let mut positive_doubled = 0;
        let mut tie_term = 0.0;
        let mut start = 0;
        while start < sorted.len() {
            let magnitude = sorted[start].abs();
            let end = start
                + sorted[start..]
                    .iter()
                    .take_while(|d| d.abs() == magnitude)
                    .count();
            // Ranks start+1 ..= end, averaged, doubled.
            let rank = (start + 1 + end) as u64;
            for d in &sorted[start..end] {
                doubled.push(rank);
                if *d > 0.0 {
                    positive_doubled += rank;
                }
            }
            let tied = (end - start) as f64;
            tie_term += tied * tied * tied - tied;
            start = end;
        }
        Ranks {
            doubled,
            positive_doubled,
            tie_term,
        }
    }

    /// Over all 2^n sign flips of the differences: how many have a doubled
    /// positive rank sum at most, and at least, the observed one. Only called
    /// for n ≤ 50, where the counts fit in u64.
    fn sign_flip_tails(&self) -> (u64, u64) {
        let total: u64 = self.doubled.iter().sum();
        // ways[s] = number of sign flips whose doubled positive rank sum is s.
        let mut ways = vec![0u64; total as usize + 1];
        ways[0] = 1;
        let mut reached = 0;
        for &rank in &self.doubled {
            let rank = rank as usize;
            for sum in (0..=reached).rev() {
                if ways[sum] > 0 {
                    ways[sum + rank] += ways[sum];
                }
            }
            reached += rank;
        }
        let observed = self.positive_doubled as usize;
        let at_most = ways[..=observed].iter().sum();
        let at_least = ways[observed..].iter().sum();
        (at_most, at_least)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn only_zeros_give_none() {
        assert_eq!(wilcoxon_signed_rank(&[]), None);
        assert_eq!(wilcoxon_signed_rank(&[0.0, -0.0, 0.0]), None);
    }

    #[test]
    fn a_nan_difference_gives_none() {
        assert_eq!(wilcoxon_signed_rank(&[1.0, f64::NAN, 2.0]), None);
    }

    #[test]
    fn method_follows_scipy_auto() {
        let distinct: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(wilcoxon(&distinct).unwrap().0, Method::Exact);
        let mut longer = distinct.clone();
        longer.push(51.0);
        assert_eq!(wilcoxon(&longer).unwrap().0, Method::Asymptotic);
        assert_eq!(wilcoxon(&[1.0, -1.0, 2.0]).unwrap().0, Method::Permutation);
        assert_eq!(wilcoxon(&[0.0, 1.0, 2.0]).unwrap().0, Method::Permutation);
        let mut tied: Vec<f64> = (1..=13).map(f64::from).collect();
        tied.push(13.0);
        assert_eq!(wilcoxon(&tied).unwrap().0, Method::Asymptotic);
        // 60 differences of which 40 are non-zero: scipy counts the zeros.
        let mut padded = vec![0.0; 20];
        padded.extend((1..=40).map(f64::from));
        assert_eq!(wilcoxon(&padded).unwrap().0, Method::Asymptotic);
    }

    #[test]
    fn ranks_average_over_ties() {
        let sorted = [1.0, -1.0, 2.0, 3.0, 3.0, -3.0];
        let ranks = Ranks::of_sorted_magnitudes(&sorted);
        // Ranks 1.5, 1.5, 3, 5, 5, 5.
        assert_eq!(ranks.doubled, vec![3, 3, 6, 10, 10, 10]);
        assert_eq!(ranks.positive_doubled, 3 + 6 + 10 + 10);
        assert_eq!(ranks.tie_term, (8.0 - 2.0) + (27.0 - 3.0));
    }

    #[test]
    fn all_positive_differences_give_the_smallest_exact_p() {
        let (method, p) = wilcoxon(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(method, Method::Exact);
        assert_eq!(p, 2.0 / 32.0);
    }

    /// Differences with ties and zeros (a grid of halves), or without.
    fn differences() -> impl Strategy<Value = Vec<f64>> {
        prop_oneof![
            prop::collection::vec((-6i32..=6).prop_map(|k| f64::from(k) / 2.0), 0..80),
            prop::collection::vec(-10.0..10.0f64, 0..80),
        ]
    }

    proptest! {
        #[test]
        fn swapping_the_arms_keeps_p(diffs in differences()) {
            let negated: Vec<f64> = diffs.iter().map(|d| -d).collect();
            let result = wilcoxon(&diffs);
            prop_assert_eq!(result, wilcoxon(&negated));
            if let Some((_, p)) = result {
                prop_assert!(p > 0.0 && p <= 1.0);
            }
        }
    }
}
