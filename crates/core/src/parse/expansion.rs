//! How many test cases a suite multiplies into, counted before any is built:
//! array vars (one test per combination) and `scenarios` (config entries ×
//! tests) are products, and a few hundred bytes of suite can ask for
//! billions of tests. [`TestBudget`] refuses them while they are still
//! numbers; [`combination`] then builds a test's combinations one at a time,
//! so memory holds only the tests produced.

use serde_yaml_ng::Value as Yaml;

use crate::error::SuiteError;

/// Most test cases a suite may expand to. [`super::parse_suite_limited`]
/// takes a lower limit.
pub const MAX_TESTS: usize = 1_000_000;

/// The test cases a suite has claimed so far, against its limit.
pub(super) struct TestBudget {
    limit: u64,
    used: u64,
}

impl TestBudget {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit: to_u64(limit.min(MAX_TESTS)),
            used: 0,
        }
    }

    /// Claims `count` more test cases (`None`: more than a `u64` holds) for
    /// the field at `path`, or refuses them, naming the count.
    pub(super) fn take(&mut self, path: &str, count: Option<u64>) -> Result<(), SuiteError> {
        self.check(path, count, "expands into")?;
        self.used += count.unwrap_or_default();
        Ok(())
    }

    /// Refuses `count` test cases (`None`: more than a `u64` holds) that the
    /// field at `path` would add, without claiming them; `what` says how
    /// they come about (`expands into`).
    pub(super) fn check(
        &self,
        path: &str,
        count: Option<u64>,
        what: &str,
    ) -> Result<(), SuiteError> {
        let limit = self.limit;
        let Some(count) = count else {
            return Err(SuiteError::at(
                path,
                format!(
                    "{what} more than {} test cases, more than the limit of {limit}",
                    u64::MAX
                ),
            ));
        };
        if count > limit {
            return Err(SuiteError::at(
                path,
                format!(
                    "{what} {}, more than the limit of {limit}",
                    test_cases(count)
                ),
            ));
        }
        if self.used + count > limit {
            return Err(SuiteError::at(
                path,
                format!(
                    "{what} {}, which with the {} before it is more than the limit of {limit}",
                    test_cases(count),
                    self.used
                ),
            ));
        }
        Ok(())
    }
}

fn test_cases(n: u64) -> String {
    if n == 1 {
        "1 test case".to_owned()
    } else {
        format!("{n} test cases")
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// `a × b` test cases, `None` past what a `u64` holds.
pub(super) fn product(a: usize, b: usize) -> Option<u64> {
    to_u64(a).checked_mul(to_u64(b))
}

/// The values each var takes across a test's combinations, in the test's
/// var order: a var holding a list of strings takes each element (when
/// expansion is on), any other var its one value.
pub(super) fn choices(vars: &[(String, Yaml)], expand: bool) -> Vec<(&String, &[Yaml])> {
    vars.iter()
        .map(|(name, value)| match value {
            Yaml::Sequence(items) if expand && items.first().is_some_and(Yaml::is_string) => {
                (name, items.as_slice())
            }
            other => (name, std::slice::from_ref(other)),
        })
        .collect()
}

/// How many combinations `choices` gives; `None` past what a `u64` holds.
/// Never 0: a var always has at least one value.
pub(super) fn count(choices: &[(&String, &[Yaml])]) -> Option<u64> {
    choices
        .iter()
        .try_fold(1u64, |n, (_, values)| n.checked_mul(to_u64(values.len())))
}

/// Combination `n` (from 0 to [`count`] − 1) of promptfoo's
/// `generateVarCombinations`, in its order: an odometer over the vars'
/// values whose last var turns fastest. By index, so a test's combinations
/// are built one at a time as a stream asks for them.
pub(super) fn combination<'a>(
    choices: &[(&'a String, &'a [Yaml])],
    mut n: u64,
) -> Vec<(&'a String, &'a Yaml)> {
    let mut combo = Vec::with_capacity(choices.len());
    for (name, values) in choices.iter().rev() {
        let len = to_u64(values.len()).max(1);
        let i = usize::try_from(n % len).unwrap_or_default();
        n /= len;
        if let Some(value) = values.get(i) {
            combo.push((*name, value));
        }
    }
    combo.reverse();
    combo
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Yaml {
        Yaml::Sequence(
            items
                .iter()
                .map(|s| Yaml::String((*s).to_owned()))
                .collect(),
        )
    }

    fn names(combo: &[(&String, &Yaml)]) -> String {
        combo
            .iter()
            .map(|(_, v)| v.as_str().unwrap_or("?"))
            .collect()
    }

    #[test]
    fn the_last_list_var_turns_fastest() {
        let vars = vec![
            ("a".to_owned(), list(&["1", "2"])),
            ("b".to_owned(), Yaml::String("x".to_owned())),
            ("c".to_owned(), list(&["p", "q", "r"])),
        ];
        let choices = choices(&vars, true);
        assert_eq!(count(&choices), Some(6));
        let combos: Vec<String> = (0..6).map(|n| names(&combination(&choices, n))).collect();
        assert_eq!(combos, ["1xp", "1xq", "1xr", "2xp", "2xq", "2xr"]);
    }

    #[test]
    fn a_test_without_vars_is_one_empty_combination() {
        let combos: Vec<_> = (0..1)
            .map(|n| combination(&choices(&[], true), n))
            .collect();
        assert_eq!(combos, [Vec::new()]);
        assert_eq!(count(&[]), Some(1));
    }

    #[test]
    fn lists_stay_whole_without_expansion_or_strings() {
        let vars = vec![
            ("a".to_owned(), list(&["1", "2"])),
            ("b".to_owned(), Yaml::Sequence(Vec::new())),
        ];
        assert_eq!(count(&choices(&vars, false)), Some(1));
        assert_eq!(count(&choices(&vars, true)), Some(2));
    }

    #[test]
    fn counts_past_u64_are_none_not_a_wrap() {
        let items: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        let refs: Vec<&str> = items.iter().map(String::as_str).collect();
        let vars: Vec<(String, Yaml)> = (0..7).map(|i| (format!("v{i}"), list(&refs))).collect();
        assert_eq!(count(&choices(&vars, true)), None);
        let err = TestBudget::new(MAX_TESTS)
            .take("tests[0].vars", None)
            .unwrap_err();
        assert_eq!(
            err.message,
            "expands into more than 18446744073709551615 test cases, more than the limit of 1000000"
        );
    }

    #[test]
    fn the_budget_counts_across_claims_and_names_what_came_before() {
        let mut budget = TestBudget::new(10);
        budget.take("tests[0].vars", Some(6)).unwrap();
        budget.take("tests[1].vars", Some(4)).unwrap();
        let err = budget.take("tests[2]", Some(1)).unwrap_err();
        assert_eq!(err.path, "tests[2]");
        assert_eq!(
            err.message,
            "expands into 1 test case, which with the 10 before it is more than the limit of 10"
        );
    }

    #[test]
    fn a_caller_cannot_raise_the_limit() {
        let err = TestBudget::new(usize::MAX)
            .take("tests[0].vars", product(MAX_TESTS, 2))
            .unwrap_err();
        assert!(
            err.message.ends_with("more than the limit of 1000000"),
            "{err}"
        );
    }
}
