//! Suites of a few hundred bytes that multiply into billions of test cases
//! (issue 8): the parser must refuse them by counting, in milliseconds and
//! without building any. A binary of its own, apart from `tests/it`,
//! because it swaps in a counting global allocator, which would otherwise
//! cap and measure every other integration test as well.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use gauntlet_core::{FileResolver, SuiteError, SuiteFormat, parse_suite, parse_suite_with};

/// A global allocator that counts live bytes, keeps their peak, and fails
/// any allocation past a hard cap, so a regression aborts this binary
/// instead of taking the machine's memory.
#[allow(unsafe_code)] // `GlobalAlloc` is an unsafe trait; every call forwards to `System`.
mod counting {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        sync::atomic::{AtomicUsize, Ordering},
    };

    /// Far above what refusing a bomb needs, far below what building one does.
    const CAP: usize = 1 << 30;

    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    pub struct Counting;

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    fn grow(bytes: usize) -> bool {
        let before = LIVE.fetch_add(bytes, Ordering::SeqCst);
        if before + bytes > CAP {
            LIVE.fetch_sub(bytes, Ordering::SeqCst);
            return false;
        }
        PEAK.fetch_max(before + bytes, Ordering::SeqCst);
        true
    }

    fn shrink(bytes: usize) {
        LIVE.fetch_sub(bytes, Ordering::SeqCst);
    }

    // SAFETY: every method forwards to `System` with the caller's arguments
    // unchanged; the counting only decides whether to ask at all.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if !grow(layout.size()) {
                return std::ptr::null_mut();
            }
            // SAFETY: forwarded as received.
            let ptr = unsafe { System.alloc(layout) };
            if ptr.is_null() {
                shrink(layout.size());
            }
            ptr
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if !grow(layout.size()) {
                return std::ptr::null_mut();
            }
            // SAFETY: forwarded as received.
            let ptr = unsafe { System.alloc_zeroed(layout) };
            if ptr.is_null() {
                shrink(layout.size());
            }
            ptr
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded as received.
            unsafe { System.dealloc(ptr, layout) };
            shrink(layout.size());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if new_size > layout.size() && !grow(new_size - layout.size()) {
                return std::ptr::null_mut();
            }
            // SAFETY: forwarded as received.
            let new = unsafe { System.realloc(ptr, layout, new_size) };
            if new.is_null() {
                if new_size > layout.size() {
                    shrink(new_size - layout.size());
                }
            } else if new_size < layout.size() {
                shrink(layout.size() - new_size);
            }
            new
        }
    }

    /// Live bytes now, and the peak is reset to them.
    pub fn reset_peak() -> usize {
        let live = LIVE.load(Ordering::SeqCst);
        PEAK.store(live, Ordering::SeqCst);
        live
    }

    pub fn peak() -> usize {
        PEAK.load(Ordering::SeqCst)
    }
}

/// Most a refusal may allocate above what was live before it.
const PEAK_BUDGET: usize = 64 << 20;
/// Most a refusal may take (a debug build, on a busy machine).
const TIME_BUDGET: Duration = Duration::from_secs(1);

/// Runs `parse`, returning its result with the most bytes it had allocated
/// at once (above what was live before) and its duration. One at a time:
/// the allocator's counters are process-wide.
fn measure<T>(parse: impl FnOnce() -> T) -> (T, usize, Duration) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let base = counting::reset_peak();
    let start = Instant::now();
    let out = parse();
    let elapsed = start.elapsed();
    (out, counting::peak().saturating_sub(base), elapsed)
}

/// Parses `text`, which must be refused, within the memory and time budgets.
fn refused(
    what: &str,
    parse: impl FnOnce() -> Result<gauntlet_core::Suite, SuiteError>,
) -> SuiteError {
    let (result, peak, elapsed) = measure(parse);
    eprintln!("{what}: peak {peak} bytes above baseline, {elapsed:?}");
    let err = match result {
        Ok(suite) => panic!("{what}: accepted with {} tests", suite.tests.len()),
        Err(err) => err,
    };
    assert!(
        peak < PEAK_BUDGET,
        "{what}: allocated {peak} bytes at peak refusing it: {err}"
    );
    assert!(elapsed < TIME_BUDGET, "{what}: took {elapsed:?}: {err}");
    err
}

/// `n` list vars `v0..`, each of `items` one-letter strings, as YAML flow.
fn list_vars(n: usize, items: usize) -> String {
    let list: Vec<String> = (0..items).map(|i| format!("i{i}")).collect();
    let vars: Vec<String> = (0..n)
        .map(|v| format!("v{v}: [{}]", list.join(", ")))
        .collect();
    format!("{{{}}}", vars.join(", "))
}

/// A prompt using every var of [`list_vars`].
fn prompt(n: usize) -> String {
    (0..n).map(|v| format!("{{{{v{v}}}}}")).collect()
}

#[test]
fn eight_lists_of_twenty_are_refused_by_count_before_any_test_is_built() {
    let yaml = format!(
        "prompts: ['{}']\nproviders: [echo]\ntests:\n  - vars: {}\n",
        prompt(8),
        list_vars(8, 20)
    );
    let err = refused("20^8 bomb (yaml)", || parse_suite(&yaml, SuiteFormat::Yaml));
    assert_eq!(err.path, "tests[0].vars");
    assert_eq!(
        err.message,
        "expands into 25600000000 test cases, more than the limit of 1000000"
    );
    assert_eq!(err.line, Some(4), "{err}");
    eprintln!("{err}");

    // JSON suites take another route (their tests read one at a time).
    let value: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let json = serde_json::to_string(&value).unwrap();
    let err = refused("20^8 bomb (json)", || parse_suite(&json, SuiteFormat::Json));
    assert_eq!(err.path, "tests[0].vars");
    assert!(
        err.message
            .starts_with("expands into 25600000000 test cases"),
        "{err}"
    );
}

#[test]
fn defaults_multiplied_into_every_test_are_counted_across_tests() {
    // Each test is 20^4 = 160,000 cases, under the limit alone; the seventh
    // takes the suite past it, and none of the first six is built either.
    let tests = "  - vars: {v4: a}\n".repeat(7);
    let yaml = format!(
        "prompts: ['{}']\nproviders: [echo]\ndefaultTest:\n  vars: {}\ntests:\n{tests}",
        prompt(5),
        list_vars(4, 20)
    );
    let err = refused("7 x 20^4 (defaultTest)", || {
        parse_suite(&yaml, SuiteFormat::Yaml)
    });
    assert_eq!(err.path, "tests[6].vars");
    assert_eq!(
        err.message,
        "expands into 160000 test cases, which with the 960000 before it is more than the limit of 1000000"
    );
}

#[test]
fn scenarios_crossing_too_many_configs_with_tests_are_refused() {
    let configs = "{vars: {x: a}}, ".repeat(2000);
    let tests = "{vars: {y: b}}, ".repeat(1000);
    let yaml = format!(
        "prompts: ['{{{{x}}}}{{{{y}}}}']\nproviders: [echo]\nscenarios:\n  - config: [{configs}]\n    tests: [{tests}]\n"
    );
    let err = refused("2000 configs x 1000 tests", || {
        parse_suite(&yaml, SuiteFormat::Yaml)
    });
    assert_eq!(err.path, "scenarios[0]");
    assert_eq!(
        err.message,
        "crosses 2000 config entries with 1000 tests into 2000000 test cases, more than the limit of 1000000"
    );
}

#[test]
fn list_vars_inside_scenarios_are_counted_per_config_entry() {
    let yaml = format!(
        "prompts: ['{}']\nproviders: [echo]\nscenarios:\n  - config: [{{vars: {{z: a}}}}, {{vars: {{z: b}}}}]\n    tests: [{{vars: {}}}]\n",
        prompt(8),
        list_vars(8, 20)
    );
    let err = refused("scenario with a 20^8 test", || {
        parse_suite(&yaml, SuiteFormat::Yaml)
    });
    assert_eq!(err.path, "scenarios[0].tests[0].vars");
    assert_eq!(
        err.message,
        "expands into 25600000000 test cases, more than the limit of 1000000 (in scenarios[0].config[0])"
    );
}

/// Serves one file of tests and one file of vars, both bombs.
struct BombFiles;

impl FileResolver for BombFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        match path {
            "tests.jsonl" => {
                let vars: serde_json::Value = serde_yaml_ng::from_str(&list_vars(8, 20)).unwrap();
                Ok(format!(
                    "{{\"vars\": {{\"x\": \"a\"}}}}\n{}\n",
                    serde_json::json!({ "vars": vars })
                ))
            }
            "vars.yaml" => Ok(list_vars(8, 20)),
            _ => Err("no such file".to_owned()),
        }
    }
}

#[test]
fn tests_and_vars_from_files_are_counted_like_inline_ones() {
    let suite = format!(
        "prompts: ['{}']\nproviders: [echo]\ndefaultTest:\n  vars: {{v0: a, v1: a, v2: a, v3: a, v4: a, v5: a, v6: a, v7: a}}\ntests: file://tests.jsonl\n",
        prompt(8)
    );
    let err = refused("20^8 bomb in a .jsonl", || {
        parse_suite_with(&suite, SuiteFormat::Yaml, &BombFiles)
    });
    assert_eq!(err.path, "tests[1].vars");
    assert!(
        err.message.starts_with("expands into 25600000000 test cases, more than the limit of 1000000 (in line 2 of file://tests.jsonl)"),
        "{err}"
    );

    let suite = format!(
        "prompts: ['{}']\nproviders: [echo]\ntests:\n  - vars: file://vars.yaml\n",
        prompt(8)
    );
    let err = refused("20^8 bomb in a vars file", || {
        parse_suite_with(&suite, SuiteFormat::Yaml, &BombFiles)
    });
    assert_eq!(err.path, "tests[0].vars");
    assert_eq!(
        err.message,
        "expands into 25600000000 test cases, more than the limit of 1000000"
    );
}

#[test]
fn products_past_u64_are_refused_without_wrapping() {
    let yaml = format!(
        "prompts: ['{}']\nproviders: [echo]\ntests:\n  - vars: {}\n",
        prompt(16),
        list_vars(16, 20)
    );
    let err = refused("20^16 bomb", || parse_suite(&yaml, SuiteFormat::Yaml));
    assert_eq!(err.path, "tests[0].vars");
    assert_eq!(
        err.message,
        "expands into more than 18446744073709551615 test cases, more than the limit of 1000000"
    );
}

#[test]
fn the_fuzzing_seed_bombs_are_refused_cheaply() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let mut bombs = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("bomb") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let err = refused(&name, || parse_suite(&text, SuiteFormat::Auto));
        assert!(
            err.message.contains("more than the limit of 1000000"),
            "{name}: {err}"
        );
        bombs += 1;
    }
    assert!(bombs >= 2, "no bomb seeds in {}", seeds.display());
}
