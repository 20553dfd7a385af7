//! A suite's tests streamed one at a time take memory that does not grow
//! with their number (issue 8): a binary of its own, like `tests/bombs.rs`,
//! because it counts every allocation with a global allocator.

use std::{fmt::Write as _, sync::Mutex};

use gauntlet_core::{FileResolver, SuiteFormat, parse_suite_stream, parse_suite_with};

/// A global allocator that counts live bytes and keeps their peak.
#[allow(unsafe_code)] // `GlobalAlloc` is an unsafe trait; every call forwards to `System`.
mod counting {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        sync::atomic::{AtomicUsize, Ordering},
    };

    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    pub struct Counting;

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    fn grow(bytes: usize) {
        let before = LIVE.fetch_add(bytes, Ordering::SeqCst);
        PEAK.fetch_max(before + bytes, Ordering::SeqCst);
    }

    fn shrink(bytes: usize) {
        LIVE.fetch_sub(bytes, Ordering::SeqCst);
    }

    // SAFETY: every method forwards to `System` with the caller's arguments
    // unchanged; the counting only observes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            grow(layout.size());
            // SAFETY: forwarded as received.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            grow(layout.size());
            // SAFETY: forwarded as received.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded as received.
            unsafe { System.dealloc(ptr, layout) };
            shrink(layout.size());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            grow(new_size);
            // SAFETY: forwarded as received.
            let new = unsafe { System.realloc(ptr, layout, new_size) };
            shrink(layout.size());
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

/// Tests in each generated suite.
const TESTS: usize = 200_000;
/// Most a stream of them may hold at once above what was live before it
/// (the suite's text is allocated before).
const STREAM_BUDGET: usize = 64 << 20;

struct OneFile(String);

impl FileResolver for OneFile {
    fn read(&self, _path: &str) -> Result<String, String> {
        Ok(self.0.clone())
    }
}

/// A file read in pieces, as from disk: the text lives before the
/// measurement starts and is never copied.
struct OnDisk(&'static str);

impl FileResolver for OnDisk {
    fn read(&self, _path: &str) -> Result<String, String> {
        Ok(self.0.to_owned())
    }

    fn open(&self, _path: &str) -> Result<Box<dyn std::io::BufRead + Send>, String> {
        Ok(Box::new(std::io::Cursor::new(self.0.as_bytes())))
    }
}

/// One measurement at a time: the allocator's counters are process-wide.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Streams `text`'s tests, dropping each; the peak above the baseline.
fn stream_peak(text: &str, files: &dyn FileResolver) -> usize {
    let base = counting::reset_peak();
    let mut stream = parse_suite_stream(text, SuiteFormat::Auto, files, usize::MAX).unwrap();
    let mut count = 0usize;
    for test in stream.by_ref() {
        let test = test.unwrap();
        assert_eq!(test.assert.len(), 1);
        count += 1;
    }
    assert_eq!(count, TESTS);
    drop(stream);
    counting::peak() - base
}

/// `TESTS` inline tests; the test at `broken` has an unknown assertion type.
fn yaml_suite(broken: Option<usize>) -> String {
    let mut text = String::from(
        "prompts: ['Answer {{q}}']\nproviders: [echo]\ndefaultTest:\n  assert: [{type: contains, value: '{{a}}'}]\ntests:\n",
    );
    for i in 0..TESTS {
        writeln!(
            text,
            "  - description: test {i}\n    vars:\n      q: what is {i} + {i}?\n      a: '{}'",
            2 * i
        )
        .unwrap();
        if broken == Some(i) {
            text.push_str("    assert: [{type: containz, value: x}]\n");
        }
    }
    text
}

#[test]
fn an_inline_yaml_suite_streams_in_flat_memory() {
    let _turn = one_at_a_time();
    let text = yaml_suite(None);
    let streamed = stream_peak(&text, &gauntlet_core::NoFiles);
    let base = counting::reset_peak();
    let suite = parse_suite_with(&text, SuiteFormat::Auto, &gauntlet_core::NoFiles).unwrap();
    let collected = counting::peak() - base;
    assert_eq!(suite.tests.len(), TESTS);
    eprintln!(
        "{TESTS} inline YAML tests ({} bytes): {streamed} bytes at peak streamed, {collected} collected",
        text.len()
    );
    assert!(streamed < STREAM_BUDGET, "{streamed}");
    assert!(streamed * 8 < collected, "{streamed} vs {collected}");
}

#[test]
fn a_jsonl_test_file_streams_in_flat_memory() {
    let _turn = one_at_a_time();
    let mut lines = String::new();
    for i in 0..TESTS {
        writeln!(
            lines,
            "{{\"vars\": {{\"q\": \"what is {i} + {i}?\"}}, \"assert\": [{{\"type\": \"contains\", \"value\": \"{}\"}}]}}",
            2 * i
        )
        .unwrap();
    }
    let files = OneFile(lines);
    let text = "prompts: ['Answer {{q}}']\nproviders: [echo]\ntests: file://tests.jsonl\n";
    let streamed = stream_peak(text, &files);
    // The stream reads (and holds) the file's text, a copy of it here.
    eprintln!(
        "{TESTS} JSONL tests ({} bytes): {streamed} bytes at peak streamed",
        files.0.len()
    );
    assert!(streamed < STREAM_BUDGET + files.0.len(), "{streamed}");

    // Opened rather than read, the file costs a line at a time.
    let on_disk = OnDisk(files.0.leak());
    let streamed = stream_peak(text, &on_disk);
    eprintln!("the same file opened: {streamed} bytes at peak streamed");
    assert!(streamed < STREAM_BUDGET, "{streamed}");
    assert!(streamed * 8 < on_disk.0.len(), "{streamed}");
}

#[test]
fn an_error_near_the_end_is_located_in_flat_memory_too() {
    let _turn = one_at_a_time();
    let broken = TESTS - 10;
    let text = yaml_suite(Some(broken));
    let base = counting::reset_peak();
    let stream = parse_suite_stream(
        &text,
        SuiteFormat::Auto,
        &gauntlet_core::NoFiles,
        usize::MAX,
    )
    .unwrap();
    let mut tests = 0;
    let mut error = None;
    for test in stream {
        match test {
            Ok(_) => tests += 1,
            Err(err) => error = Some(err),
        }
    }
    let peak = counting::peak() - base;
    let err = error.expect("the broken test is refused");
    eprintln!("an error after {tests} tests: {peak} bytes at peak: {err}");
    assert_eq!(tests, broken);
    assert_eq!(err.path, format!("tests[{broken}].assert[0].type"));
    // Its line: 5 header lines, 4 per test, and the broken test's `assert`.
    assert_eq!(err.line, Some(5 + 4 * broken + 5));
    assert!(peak < STREAM_BUDGET, "{peak}");
}
