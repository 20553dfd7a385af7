//! Rendering holds a bounded amount of memory however many results pass
//! through a sink: a counting allocator records the peak of live bytes
//! while 200,000 results are rendered in every format.

// A global allocator is unsafe to implement; this one only counts and
// forwards to the system allocator, and lives in its own test binary.
#![allow(unsafe_code)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    io,
    sync::atomic::{AtomicUsize, Ordering},
};

use gauntlet_proto::v1;
use gauntlet_reports::render::{self, Format};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; the counters are
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on to `System`.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Results a million-result run would be cut from.
const RESULTS: u64 = 200_000;
/// Live bytes a sink may add, at most, whatever the number of results.
const CEILING: usize = 4 << 20;

fn result(i: u64) -> v1::Result {
    v1::Result {
        trace_id: String::new(),
        run_id: "run".into(),
        task_index: i,
        test_index: (i / 12) as u32,
        prompt_index: (i / 3 % 2) as u32,
        provider_index: (i % 3) as u32,
        repeat_index: (i / 6 % 2) as u32,
        provider_id: format!("provider-{}", i % 3),
        prompt_label: format!("prompt {}", i / 3 % 2),
        vars_json: format!("{{\"topic\":\"t{i}\",\"n\":{}}}", i % 7),
        rendered_prompt: format!("Tell me about t{i}"),
        output: format!("Here is something about t{i}.\nIt has <two> lines & a | pipe."),
        status: (i % 3 + 1) as i32,
        score: 0.5,
        reason: format!("reason {i}"),
        assertions: vec![v1::AssertionResult {
            r#type: "contains".into(),
            pass: i.is_multiple_of(3),
            score: 1.0,
            reason: "looked".into(),
        }],
        latency_ms: (i % 1000) as u32,
        tokens_in: 20,
        tokens_out: 40,
        cost_usd: 0.0001,
        cached: false,
        error: String::new(),
        test_description: format!("test {}", i / 12),
    }
}

/// Peak live bytes above what was live when rendering started.
fn peak_while_rendering(format: Format) -> usize {
    let summary = v1::RunSummary {
        run_id: "run".into(),
        total_tasks: RESULTS,
        completed_tasks: RESULTS,
        ..Default::default()
    };
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut sink = render::sink(format, io::sink());
    sink.begin(&summary).unwrap();
    for i in 0..RESULTS {
        sink.result(&result(i)).unwrap();
    }
    sink.finish().unwrap();
    drop(sink);
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

// One test in this binary, so no other test allocates meanwhile.
#[test]
fn rendering_200k_results_holds_a_few_megabytes_in_every_format() {
    for format in [
        Format::Json,
        Format::Jsonl,
        Format::Junit,
        Format::Csv,
        Format::Html,
        Format::Markdown,
    ] {
        let peak = peak_while_rendering(format);
        eprintln!("{format:?}: peak {peak} bytes above the start");
        assert!(
            peak < CEILING,
            "{format:?} held {peak} bytes at its peak for {RESULTS} results"
        );
    }
}
