//! A run's tests, read from the store for the few tasks or results at hand.
//! Suites are stored as a header plus one row per test, so whoever needs
//! tests (a worker for its batch, a page of results, a report page) reads
//! only those, and no process ever holds a whole suite.

use std::collections::BTreeMap;

use gauntlet_core::suite::{Suite, TestCase};
use gauntlet_store::{Store, StoreError};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

/// Tests of one run, by index: whole ([`TestCase`], what a worker grades
/// with) or only what a result shows of them ([`TestHead`]).
#[derive(Debug)]
pub struct Tests<T = TestCase>(Vec<(u32, T)>);

/// What a result shows of its test. A page of results reads only this:
/// reading each stored test whole, its assertions included, cost a page
/// of 1,000 results more than the rest of the page did.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TestHead {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
}

/// A test as [`read`] gives it: read from its stored row, or taken from
/// a suite that holds its tests inline.
pub trait StoredTest: DeserializeOwned {
    fn from_test(test: &TestCase) -> Self;
}

impl StoredTest for TestCase {
    fn from_test(test: &TestCase) -> Self {
        test.clone()
    }
}

impl StoredTest for TestHead {
    fn from_test(test: &TestCase) -> Self {
        Self {
            description: test.description.clone(),
            vars: test.vars.clone(),
        }
    }
}

impl<T> Default for Tests<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> Tests<T> {
    pub fn get(&self, test: u32) -> Option<&T> {
        self.0
            .binary_search_by_key(&test, |(i, _)| *i)
            .ok()
            .map(|at| &self.0[at].1)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored test that does not read back as a test case.
    #[error("stored test {index} is unusable: {message}")]
    Corrupt { index: i64, message: String },
}

/// The tests `indexes` (in any order, repeats allowed) of run `run_id`,
/// whose suite header is `suite`. A run stored with its tests inline (before
/// tests became rows) is served from `suite` itself.
pub async fn read<T: StoredTest>(
    store: &dyn Store,
    run_id: Uuid,
    suite: &Suite,
    indexes: impl IntoIterator<Item = u32>,
) -> Result<Tests<T>, TestsError> {
    let mut needed: Vec<u32> = indexes.into_iter().collect();
    needed.sort_unstable();
    needed.dedup();
    if !suite.tests.is_empty() {
        return Ok(Tests(
            needed
                .iter()
                .filter_map(|&i| Some((i, T::from_test(suite.tests.get(i as usize)?))))
                .collect(),
        ));
    }
    // The ranges are read at once (a few at a time): the tests a summary
    // names are scattered over the suite, one range each.
    use futures::{StreamExt, TryStreamExt};
    let read: Vec<Vec<(i64, String)>> = futures::stream::iter(ranges(&needed))
        .map(|(first, last)| store.get_tests(run_id, i64::from(first), i64::from(last)))
        .buffered(RANGES_AT_ONCE)
        .try_collect()
        .await?;
    let mut tests = Vec::with_capacity(needed.len());
    for (index, body) in read.into_iter().flatten() {
        {
            if needed.binary_search(&(index as u32)).is_err() {
                continue;
            }
            let test: T = serde_json::from_str(&body).map_err(|e| TestsError::Corrupt {
                index,
                message: e.to_string(),
            })?;
            tests.push((index as u32, test));
        }
    }
    Ok(Tests(tests))
}

/// Range reads in flight at once.
const RANGES_AT_ONCE: usize = 8;

/// Tests read past (and dropped) rather than split a read in two.
const MERGE_GAP: u32 = 32;

/// Sorted, distinct indexes as inclusive ranges; gaps of up to
/// [`MERGE_GAP`] are read through rather than split into another query.
fn ranges(sorted: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &i in sorted {
        match out.last_mut() {
            Some((_, last)) if i <= *last + MERGE_GAP => *last = i,
            _ => out.push((i, i)),
        }
    }
    out
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn a_stored_test_reads_as_the_same_head_as_an_inline_one() {
        let case: TestCase = serde_json::from_value(serde_json::json!({
            "description": "d",
            "vars": {"b": [1, {"c": null}], "a": "x"},
            "assert": [{"kind": "contains", "value": "x", "metric": "m"}],
            "threshold": 0.5,
        }))
        .unwrap();
        let stored: TestHead =
            serde_json::from_str(&serde_json::to_string(&case).unwrap()).unwrap();
        assert_eq!(stored, TestHead::from_test(&case));
        assert_eq!(stored.description.as_deref(), Some("d"));
        assert_eq!(
            serde_json::to_string(&stored.vars).unwrap(),
            r#"{"a":"x","b":[1,{"c":null}]}"#
        );
    }

    #[test]
    fn indexes_group_into_ranges_across_small_gaps() {
        assert_eq!(ranges(&[]), []);
        assert_eq!(ranges(&[3]), [(3, 3)]);
        assert_eq!(ranges(&[0, 1, 2, 30, 31]), [(0, 31)]);
        assert_eq!(ranges(&[0, 1, 40]), [(0, 1), (40, 40)]);
        // A batch spanning a repeat boundary needs the suite's two ends.
        assert_eq!(ranges(&[0, 1, 99_998, 99_999]), [(0, 1), (99_998, 99_999)]);
    }
}
