//! Holm's step-down correction of p-values for many comparisons at once.

/// Holm step-down adjusted p-values, in the input order (statsmodels
/// multipletests(method="holm")). Adjusted values are capped at 1 and
/// monotone: a smaller p never gets a larger adjusted p.
///
/// A NaN p-value stays NaN and is not counted among the tests (statsmodels
/// would spread it to every larger p-value).
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p_values.len())
        .filter(|&i| !p_values[i].is_nan())
        .collect();
    // Stable, so ties keep their order; their adjusted values agree anyway,
    // since the running maximum reaches the first of them.
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let tests = order.len();
    let mut adjusted = vec![f64::NAN; p_values.len()];
    let mut running = f64::NEG_INFINITY;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(p_values[i] * (tests - rank) as f64);
        adjusted[i] = running.min(1.0);
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn no_p_values_adjust_to_none() {
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn one_p_value_is_its_own_adjustment() {
        assert_eq!(holm(&[0.03]), vec![0.03]);
    }

    #[test]
    fn nan_is_left_out_of_the_count() {
        let adjusted = holm(&[0.01, f64::NAN, 0.04]);
        assert!(adjusted[1].is_nan());
        assert_eq!((adjusted[0], adjusted[2]), (0.02, 0.04));
    }

    proptest! {
        #[test]
        fn adjusted_p_values_rise_to_at_most_one_in_rank_order(
            p_values in prop::collection::vec(
                prop_oneof![0.0..=1.0f64, prop::sample::select(vec![0.0, 0.01, 0.05, 0.5, 1.0])],
                0..40,
            ),
        ) {
            let adjusted = holm(&p_values);
            prop_assert_eq!(adjusted.len(), p_values.len());
            for (p, a) in p_values.iter().zip(&adjusted) {
                prop_assert!(p <= a && *a <= 1.0, "{} adjusted to {}", p, a);
            }
            for i in 0..p_values.len() {
                for j in 0..p_values.len() {
                    if p_values[i] < p_values[j] {
                        prop_assert!(adjusted[i] <= adjusted[j]);
                    }
                    if p_values[i] == p_values[j] {
                        prop_assert_eq!(adjusted[i], adjusted[j]);
                    }
                }
            }
        }
    }
}
