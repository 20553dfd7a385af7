//! A run's tests, read from the store for the few tasks or results at hand.
//! Suites are stored as a header plus one row per test, so whoever needs
//! tests (a worker for its batch, a page of results, a report page) reads
//! only those, and no process ever holds a whole suite.

use gauntlet_core::suite::{Suite, TestCase};
use gauntlet_store::{Store, StoreError};
use uuid::Uuid;

/// Tests of one run, by index.
#[derive(Debug, Default)]
pub struct Tests(Vec<(u32, TestCase)>);

impl Tests {
    pub fn get(&self, test: u32) -> Option<&TestCase> {
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
pub async fn read(
    store: &dyn Store,
    run_id: Uuid,
    suite: &Suite,
    indexes: impl IntoIterator<Item = u32>,
) -> Result<Tests, TestsError> {
    let mut needed: Vec<u32> = indexes.into_iter().collect();
    needed.sort_unstable();
    needed.dedup();
    if !suite.tests.is_empty() {
        return Ok(Tests(
            needed
                .iter()
                .filter_map(|&i| Some((i, suite.tests.get(i as usize)?.clone())))
                .collect(),
        ));
    }
    let mut tests = Vec::with_capacity(needed.len());
    for (first, last) in ranges(&needed) {
        for (index, body) in store
            .get_tests(run_id, i64::from(first), i64::from(last))
            .await?
        {
            if needed.binary_search(&(index as u32)).is_err() {
                continue;
            }
            let test: TestCase = serde_json::from_str(&body).map_err(|e| TestsError::Corrupt {
                index,
                message: e.to_string(),
            })?;
            tests.push((index as u32, test));
        }
    }
    Ok(Tests(tests))
}

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
    fn indexes_group_into_ranges_across_small_gaps() {
        assert_eq!(ranges(&[]), []);
        assert_eq!(ranges(&[3]), [(3, 3)]);
        assert_eq!(ranges(&[0, 1, 2, 30, 31]), [(0, 31)]);
        assert_eq!(ranges(&[0, 1, 40]), [(0, 1), (40, 40)]);
        // A batch spanning a repeat boundary needs the suite's two ends.
        assert_eq!(ranges(&[0, 1, 99_998, 99_999]), [(0, 1), (99_998, 99_999)]);
    }
}
