//! Statistics for comparing runs: intervals for pass rates and mean scores,
//! paired tests of two arms over the same test cases (McNemar, Wilcoxon), a
//! paired bootstrap of a score difference, Holm's correction across many
//! comparisons, and the pairs a comparison needs.
//!
//! Each function follows a named scipy, statsmodels or numpy routine, and
//! `reference.rs` checks it against values those libraries computed
//! (`scripts/stats_reference.py` writes `tests/fixtures/stats_reference.json`).
//! The distributions are statrs's; where statrs alone falls short of 1e-9 the
//! function's doc says so and what it does about it.
//!
//! These numbers go on the wire, so no input makes them NaN or infinite
//! unless the input itself holds a NaN or an infinity: no data gives zeros,
//! and a confidence out of range is clamped.

mod bootstrap;
mod holm;
mod interval;
mod mcnemar;
mod proportions;
mod wilcoxon;

#[cfg(test)]
mod reference;

use statrs::distribution::{ContinuousCDF, Normal};

pub use bootstrap::paired_bootstrap_mean;
pub use holm::holm;
pub use interval::{mean_interval, mean_interval_from_sums, wilson};
pub use mcnemar::{discordant, mcnemar_exact, mcnemar_sample_size};
pub use proportions::two_proportion_z_test;
pub use wilcoxon::wilcoxon_signed_rank;

/// An estimate with its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    /// What an interval of no data is.
    const ZERO: Interval = Interval {
        estimate: 0.0,
        low: 0.0,
        high: 0.0,
    };

    /// The interval `[low, high]` widened, if rounding or resampling left it
    /// off to one side, so that it holds `estimate`.
    fn containing(estimate: f64, low: f64, high: f64) -> Interval {
        Interval {
            estimate,
            low: low.min(estimate),
            high: high.max(estimate),
        }
    }
}

/// The largest confidence used: at 1 the bounds of a mean would be infinite.
const MAX_CONFIDENCE: f64 = 1.0 - 1e-15;

/// The mass `(1 - confidence) / 2` in each tail of a two-sided interval.
/// A confidence outside [0, 1] (or NaN, taken as 0) is clamped rather than
/// refused, so a bad setting gives a degenerate interval, never a NaN.
fn tail_mass(confidence: f64) -> f64 {
    let confidence = if confidence.is_nan() {
        0.0
    } else {
        confidence.clamp(0.0, MAX_CONFIDENCE)
    };
    (1.0 - confidence) / 2.0
}

/// The standard normal quantile with `tail` above it (scipy `norm.isf`),
/// taken from the lower tail, where a small `tail` keeps its precision.
fn normal_upper_quantile(tail: f64) -> f64 {
    -Normal::standard().inverse_cdf(tail)
}
