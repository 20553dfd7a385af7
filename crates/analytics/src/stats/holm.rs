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
}
