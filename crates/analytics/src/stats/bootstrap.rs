//! The paired percentile bootstrap of a mean score difference.
//!
//! Resampling n differences with replacement only decides how many times
//! each one is drawn: a multinomial draw of n over the differences. When
//! few distinct values make up the differences (scores are mostly 0, 1 and a
//! handful of fractions), the draw over the distinct values, weighted by how
//! often each occurs, gives the same resampled means at a cost of one
//! binomial per distinct value instead of n uniform draws. Otherwise the
//! differences are drawn one by one. Either way the work of one call is
//! capped (see [`WORK_BUDGET`]).

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};

use super::{Interval, interval::lerp, tail_mass};

/// Work allowed per call, in uniform index draws (a binomial draw counts as
/// [`BINOMIAL_COST`] of them): about 0.1 s in release builds.
const WORK_BUDGET: u64 = 1 << 25;
/// The fewest resamples the budget cuts a call down to. 64 still puts the
/// 2.5th percentile between the second and third smallest mean. Only many
/// distinct differences reach it: 1,000,000 of them cost 64 × 10^6 index
/// draws, a few tenths of a second in release builds.
const MIN_SAMPLES: u32 = 64;
/// A binomial draw (sampler set-up included) costs about this many uniform
/// index draws: the distinct-value path is taken while it is the cheaper.
const BINOMIAL_COST: u64 = 8;

/// Paired percentile bootstrap interval of the mean of `diffs`, `samples`
/// resamples, reproducible for a given seed on every platform
/// (rand_chacha::ChaCha8Rng seeded from `seed`).
/// estimate = the plain mean of diffs. Empty → all 0. Diffs must be finite.
///
/// The bounds are the `(1 - confidence) / 2` percentiles of the resampled
/// means counted from each end (numpy's linear interpolation, taken from the
/// bottom for `low` and from the top for `high`, so that negated diffs give
/// exactly the mirrored interval), widened to hold the estimate when few
/// resamples all fall on one side of it.
///
/// Fast for 1,000,000 diffs: with k distinct values, k ≤ 1 + n / 8, a
/// resample is a multinomial draw of their counts, as a chain of k − 1
/// conditional binomials, instead of n index draws. The work is capped at
/// [`WORK_BUDGET`]: with many distinct values fewer resamples are made, down
/// to [`MIN_SAMPLES`] (or `samples`, if fewer).
///
/// Reproducibility: the ChaCha8 stream and its seeding are fixed by
/// rand_chacha, the distinct values are taken in an order that depends only
/// on the multiset of diffs (not their order), and the means are summed in
/// a fixed order. The binomial sampler (rand_distr) uses `ln`/`powf`, so a
/// platform whose libm rounds those differently could in principle take
/// another branch of its rejection step; mainstream libms agree.
///
/// Mirror: the interval of the negated diffs is exactly `[-high, -low]`,
/// except when some value v ≠ 0 and −v occur equally often on the
/// distinct-value path: the negated diffs are then the same multiset on
/// those two values, so they resample the same way, and the mirror holds
/// within the bootstrap's noise only.
pub fn paired_bootstrap_mean(diffs: &[f64], samples: u32, seed: u64, confidence: f64) -> Interval {
    if diffs.is_empty() {
        return Interval::ZERO;
    }
    let estimate = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let mut means = resample_means(diffs, samples, seed).means;
    if means.is_empty() {
        return Interval::containing(estimate, estimate, estimate);
    }
    means.sort_unstable_by(f64::total_cmp);
    let index = (means.len() - 1) as f64 * tail_mass(confidence);
    let low = interpolate(means.iter(), index);
    let high = interpolate(means.iter().rev(), index);
    Interval::containing(estimate, low, high)
}

/// The value at `index` (fractional) along `values`.
fn interpolate<'a>(mut values: impl Iterator<Item = &'a f64>, index: f64) -> f64 {
    let below = index.floor();
    let Some(&a) = values.nth(below as usize) else {
        return f64::NAN;
    };
    let b = values.next().copied().unwrap_or(a);
    lerp(a, b, index - below)
}

/// How the resamples were drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    /// A multinomial draw over this many distinct values per resample.
    Distinct { values: usize },
    /// n index draws per resample.
    Direct,
}

/// The resampled means, and how they were made (which the tests check).
struct Resamples {
    means: Vec<f64>,
    #[cfg_attr(not(test), allow(dead_code))]
    scheme: Scheme,
    /// Random draws made: binomials, or indexes.
    #[cfg_attr(not(test), allow(dead_code))]
    draws: u64,
}

fn resample_means(diffs: &[f64], samples: u32, seed: u64) -> Resamples {
    let n = diffs.len() as u64;
    let most_values = usize::try_from(1 + n / BINOMIAL_COST).unwrap_or(usize::MAX);
    match distinct_values(diffs, most_values) {
        Some(values) => {
            let cost = (values.len() as u64).saturating_sub(1).max(1) * BINOMIAL_COST;
            distinct_means(&values, n, within_budget(samples, cost), seed)
        }
        None => direct_means(diffs, within_budget(samples, n), seed),
    }
}

/// The resamples the budget allows at `cost` per resample.
fn within_budget(samples: u32, cost: u64) -> u32 {
    let affordable = u32::try_from(WORK_BUDGET / cost.max(1)).unwrap_or(u32::MAX);
    samples.min(affordable.max(MIN_SAMPLES))
}

/// The distinct values of `diffs` with their counts, in an order that
/// depends only on the multiset and turns into the mirrored order for
/// negated diffs: by magnitude, then the more frequent first, then the
/// positive first. None when there are more than `most`.
fn distinct_values(diffs: &[f64], most: usize) -> Option<Vec<(f64, u64)>> {
    /// While this few, a linear scan beats hashing.
    const SCANNED: usize = 16;
    let mut values: Vec<(f64, u64)> = Vec::new();
    let mut index: HashMap<u64, usize> = HashMap::new();
    for &d in diffs {
        // -0.0 and 0.0 are one value.
        let d = d + 0.0;
        let bits = d.to_bits();
        let found = if values.len() <= SCANNED {
            values.iter().position(|(v, _)| v.to_bits() == bits)
        } else {
            index.get(&bits).copied()
        };
        match found {
            Some(i) => values[i].1 += 1,
            None => {
                values.push((d, 1));
                if values.len() > most {
                    return None;
                }
                if values.len() == SCANNED + 1 {
                    index.extend(
                        values
                            .iter()
                            .enumerate()
                            .map(|(i, (v, _))| (v.to_bits(), i)),
                    );
                } else if values.len() > SCANNED {
                    index.insert(bits, values.len() - 1);
                }
            }
        }
    }
    values.sort_by(|(a, count_a), (b, count_b)| {
        a.abs()
            .total_cmp(&b.abs())
            .then(count_b.cmp(count_a))
            .then(a.is_sign_negative().cmp(&b.is_sign_negative()))
    });
    Some(values)
}

/// Resampled means from multinomial draws of `n` over the distinct
/// `values`, each drawn as a binomial of the trials left, with the value's
/// share of the weight left.
fn distinct_means(values: &[(f64, u64)], n: u64, samples: u32, seed: u64) -> Resamples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut draws = 0;
    let means = (0..samples)
        .map(|_| {
            let mut trials = n;
            let mut weight = n;
            let mut sum = 0.0;
            for &(value, count) in values {
                if trials == 0 {
                    break;
                }
                let drawn = if count == weight {
                    trials
                } else {
                    draws += 1;
                    Binomial::new(trials, count as f64 / weight as f64)
                        .expect("a count over a larger weight is a probability")
                        .sample(&mut rng)
                };
                sum += drawn as f64 * value;
                trials -= drawn;
                weight -= count;
            }
            sum / n as f64
        })
        .collect();
    Resamples {
        means,
        scheme: Scheme::Distinct {
            values: values.len(),
        },
        draws,
    }
}

/// Resampled means from `n` uniform index draws each.
fn direct_means(diffs: &[f64], samples: u32, seed: u64) -> Resamples {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = diffs.len();
    // u32 indexes when they fit: half the stream per draw.
    let narrow = u32::try_from(n).ok();
    let mut draw = move || match narrow {
        Some(n) => rng.random_range(0..n) as usize,
        None => rng.random_range(0..n as u64) as usize,
    };
    let means = (0..samples)
        .map(|_| {
            // Four running sums: one chain of dependent additions would be
            // the slowest part of the loop.
            let mut sums = [0.0; 4];
            for i in 0..n {
                sums[i % 4] += diffs[draw()];
            }
            ((sums[0] + sums[1]) + (sums[2] + sums[3])) / n as f64
        })
        .collect();
    Resamples {
        means,
        scheme: Scheme::Direct,
        draws: u64::from(samples) * n as u64,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// 1,000,000 diffs of three values: 20% −1, 50% 0, 30% 1.
    fn million_scores() -> Vec<f64> {
        (0..1_000_000)
            .map(|i| match i % 10 {
                0 | 1 => -1.0,
                2..=6 => 0.0,
                _ => 1.0,
            })
            .collect()
    }

    #[test]
    fn a_million_diffs_of_three_values_take_the_distinct_value_path() {
        let diffs = million_scores();
        let resamples = resample_means(&diffs, 2000, 7);
        assert_eq!(resamples.scheme, Scheme::Distinct { values: 3 });
        assert_eq!(resamples.means.len(), 2000);
        // Two binomials per resample, not a million index draws.
        assert!(resamples.draws <= 2 * 2000, "{} draws", resamples.draws);

        let interval = paired_bootstrap_mean(&diffs, 2000, 7, 0.95);
        assert!((interval.estimate - 0.1).abs() < 1e-12);
        // Standard error sqrt(0.49 / 10^6) = 7e-4: the 95% interval is ±1.4e-3.
        let half = (interval.high - interval.low) / 2.0;
        assert!((half - 1.372e-3).abs() < 1.5e-4, "half width {half}");
    }

    #[test]
    fn many_distinct_values_draw_indexes() {
        let diffs: Vec<f64> = (0..1_000).map(|i| f64::from(i) / 1000.0).collect();
        let resamples = resample_means(&diffs, 10, 3);
        assert_eq!(resamples.scheme, Scheme::Direct);
        assert_eq!(resamples.means.len(), 10);
        assert_eq!(resamples.draws, 10 * 1_000);
    }

    #[test]
    fn budget_cuts_resamples_down_to_the_floor() {
        // 1,000 distinct diffs: a resample costs 1,000 index draws.
        assert_eq!(within_budget(100_000, 1_000), 33_554);
        assert!(u64::from(within_budget(100_000, 1_000)) * 1_000 <= WORK_BUDGET);
        // 1,000,000 distinct diffs: the floor, 64 × 10^6 draws.
        assert_eq!(within_budget(10_000, 1_000_000), MIN_SAMPLES);
        assert_eq!(within_budget(10, 1_000_000), 10);
        assert_eq!(within_budget(10_000, 16), 10_000);
    }

    #[test]
    fn distinct_value_path_agrees_with_index_draws() {
        // 300 diffs of five values; both schemes resample the same way.
        let diffs: Vec<f64> = (0..300)
            .map(|i| [-1.0, -0.5, 0.0, 0.5, 1.0][(i * 7 + i / 3) % 5])
            .collect();
        let values = distinct_values(&diffs, usize::MAX).unwrap();
        let n = diffs.len() as u64;
        let mut by_values = distinct_means(&values, n, 40_000, 11).means;
        let mut by_index = direct_means(&diffs, 40_000, 12).means;
        by_values.sort_unstable_by(f64::total_cmp);
        by_index.sort_unstable_by(f64::total_cmp);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let spread = |v: &[f64]| {
            let m = mean(v);
            (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt()
        };
        // The bootstrap standard error is about 0.04; 40,000 resamples pin
        // each summary within a few thousandths.
        assert!((mean(&by_values) - mean(&by_index)).abs() < 0.002);
        assert!((spread(&by_values) - spread(&by_index)).abs() < 0.002);
        for q in [2.5, 25.0, 50.0, 75.0, 97.5] {
            let (a, b) = (
                gauntlet_core::percentile(&by_values, q),
                gauntlet_core::percentile(&by_index, q),
            );
            assert!((a - b).abs() < 0.006, "q {q}: {a} vs {b}");
        }
    }

    #[test]
    fn distinct_values_ignore_order_and_mirror_under_negation() {
        let diffs = [1.0, -0.5, 0.0, -0.0, 1.0, 0.25, -1.0, 1.0];
        let values = distinct_values(&diffs, usize::MAX).unwrap();
        assert_eq!(
            values,
            vec![(0.0, 2), (0.25, 1), (-0.5, 1), (1.0, 3), (-1.0, 1)]
        );
        let mut reversed = diffs;
        reversed.reverse();
        assert_eq!(distinct_values(&reversed, usize::MAX).unwrap(), values);
        let negated: Vec<f64> = diffs.iter().map(|d| -d).collect();
        let mirrored: Vec<(f64, u64)> = values.iter().map(|&(v, c)| (-v + 0.0, c)).collect();
        assert_eq!(distinct_values(&negated, usize::MAX).unwrap(), mirrored);
    }

    #[test]
    fn too_many_distinct_values_stop_the_count() {
        let diffs: Vec<f64> = (0..40).map(f64::from).collect();
        assert!(distinct_values(&diffs, 39).is_none());
        assert_eq!(distinct_values(&diffs, 40).unwrap().len(), 40);
    }

    #[test]
    fn empty_diffs_give_zero() {
        assert_eq!(paired_bootstrap_mean(&[], 1000, 1, 0.95), Interval::ZERO);
    }

    #[test]
    fn no_samples_give_the_estimate() {
        let interval = paired_bootstrap_mean(&[1.0, 0.0], 0, 1, 0.95);
        assert_eq!((interval.low, interval.high), (0.5, 0.5));
    }

    #[test]
    fn one_value_gives_a_point() {
        let interval = paired_bootstrap_mean(&[0.5; 1000], 500, 1, 0.95);
        assert_eq!(
            (interval.estimate, interval.low, interval.high),
            (0.5, 0.5, 0.5)
        );
    }

    /// Score differences (few values, often on the distinct-value path), or
    /// many distinct ones.
    fn differences() -> impl Strategy<Value = Vec<f64>> {
        prop_oneof![
            prop::collection::vec(
                prop::sample::select(vec![-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]),
                1..160,
            ),
            prop::collection::vec(-1.0..1.0f64, 1..60),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn interval_holds_its_estimate_and_repeats_for_a_seed(
            diffs in differences(),
            seed in any::<u64>(),
            confidence in 0.5..0.999f64,
        ) {
            let interval = paired_bootstrap_mean(&diffs, 200, seed, confidence);
            prop_assert!(interval.low <= interval.estimate && interval.estimate <= interval.high);
            prop_assert_eq!(interval, paired_bootstrap_mean(&diffs, 200, seed, confidence));
        }

        #[test]
        fn negated_diffs_mirror_the_interval(
            diffs in differences(),
            seed in any::<u64>(),
            confidence in 0.5..0.999f64,
        ) {
            let negated: Vec<f64> = diffs.iter().map(|d| -d).collect();
            let interval = paired_bootstrap_mean(&diffs, 200, seed, confidence);
            let mirror = paired_bootstrap_mean(&negated, 200, seed, confidence);
            prop_assert_eq!(mirror.estimate, -interval.estimate);
            let n = diffs.len() as u64;
            let equally_frequent_opposites = distinct_values(&diffs, 1 + (n / BINOMIAL_COST) as usize)
                .is_some_and(|values| {
                    values.iter().any(|&(v, count)| v > 0.0 && values.contains(&(-v, count)))
                });
            if equally_frequent_opposites {
                // Not the same draws: only the same distribution. 200
                // resamples put each bound within ~0.2 standard errors.
                let sd = (diffs.iter().map(|d| (d - interval.estimate).powi(2)).sum::<f64>()
                    / n as f64)
                    .sqrt();
                let tolerance = 3.0 * sd / (n as f64).sqrt() + 1e-12;
                prop_assert!((mirror.low + interval.high).abs() <= tolerance);
                prop_assert!((mirror.high + interval.low).abs() <= tolerance);
            } else {
                prop_assert_eq!((mirror.low, mirror.high), (-interval.high, -interval.low));
            }
        }
    }
}
