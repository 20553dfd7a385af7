//! Every format, rendered from a varied run, against documents written by
//! the renderers as they were before they streamed: the streaming sinks must
//! not change a byte. `GAUNTLET_BLESS=1` rewrites the fixtures.

use std::path::PathBuf;

use gauntlet_proto::v1;
use gauntlet_reports::{ReportData, render};

/// A run with three providers and two prompts whose results interleave in
/// task order, more failures than a Markdown report lists, vars whose keys
/// change along the run, and text that every format must escape.
fn varied_run() -> ReportData {
    let providers = ["openai:chat:a", "echo", "anthropic:<b> & \"c\""];
    let prompts = ["Say {{x}}", "Summarize | {{y}}\nplease"];
    let mut results = Vec::new();
    let mut task = 0u64;
    for test in 0..7u32 {
        for repeat in 0..2u32 {
            for (prompt_index, prompt) in prompts.iter().enumerate() {
                for (provider_index, provider) in providers.iter().enumerate() {
                    let status = match (task + u64::from(test)) % 3 {
                        0 => v1::ResultStatus::Pass,
                        1 => v1::ResultStatus::Fail,
                        _ => v1::ResultStatus::Error,
                    };
                    let vars_json = match test % 4 {
                        0 => format!("{{\"x\":\"{test}\",\"y\":null}}"),
                        1 => format!("{{\"x\":{test},\"z\":[1,2],\"nested\":{{\"a\":true}}}}"),
                        2 => "not json".to_string(),
                        _ => format!("{{\"w\":\"é | ü\\n{test}\",\"x\":\"<i>\"}}"),
                    };
                    results.push(v1::Result {
                        trace_id: String::new(),
                        run_id: "run-1".into(),
                        task_index: task,
                        test_index: test,
                        prompt_index: prompt_index as u32,
                        provider_index: provider_index as u32,
                        repeat_index: repeat,
                        provider_id: (*provider).into(),
                        prompt_label: (*prompt).into(),
                        vars_json,
                        rendered_prompt: format!("{prompt} #{task}"),
                        output: format!("line1\r\nline2 | <b>{task}</b> \u{1}\t\"q\" 'a' & ✓"),
                        status: status as i32,
                        score: (task % 5) as f64 / 4.0,
                        reason: if status == v1::ResultStatus::Pass {
                            String::new()
                        } else {
                            format!("Expected output to contain \"{task}\" | ok?")
                        },
                        assertions: vec![
                            v1::AssertionResult {
                                r#type: "contains".into(),
                                pass: status == v1::ResultStatus::Pass,
                                score: 1.0,
                                reason: "looked for <x>".into(),
                            },
                            v1::AssertionResult {
                                r#type: "llm-rubric".into(),
                                pass: true,
                                score: 0.75,
                                reason: String::new(),
                            },
                        ],
                        latency_ms: 17 * (task as u32 % 11) + 3,
                        tokens_in: 10 + task as u32,
                        tokens_out: 3 * task as u32,
                        cost_usd: task as f64 * 0.000123,
                        cached: task.is_multiple_of(4),
                        error: if status == v1::ResultStatus::Error {
                            format!("HTTP 500 after {} attempts", task % 3 + 1)
                        } else {
                            String::new()
                        },
                        test_description: if test.is_multiple_of(3) {
                            String::new()
                        } else {
                            format!("test \"{test}\" | with <tags> & ünïcode")
                        },
                    });
                    task += 1;
                }
            }
        }
    }
    let group = |provider_index: u32, prompt_index: u32| v1::GroupSummary {
        provider_id: providers[provider_index as usize].into(),
        provider_index,
        prompt_label: prompts[prompt_index as usize].into(),
        prompt_index,
        total: 14,
        passed: 5,
        failed: 5,
        errors: 4,
        pass_rate: 5.0 / 14.0,
        latency: Some(v1::LatencyStats {
            p50_ms: 12.5,
            p95_ms: 40.25,
            p99_ms: 50.0,
            mean_ms: 15.333,
            max_ms: 51.0,
            ..Default::default()
        }),
        tokens_in: 100 + u64::from(provider_index),
        tokens_out: 200 + u64::from(prompt_index),
        cost_usd: 0.012345,
        ..Default::default()
    };
    ReportData {
        summary: v1::RunSummary {
            run_id: "run-1".into(),
            status: v1::RunStatus::Completed as i32,
            description: "Nightly | <regression> & \"more\"".into(),
            total_tasks: results.len() as u64,
            completed_tasks: results.len() as u64,
            passed: 28,
            failed: 28,
            errors: 28,
            pass_rate: 1.0 / 3.0,
            groups: (0..3)
                .flat_map(|p| (0..2).map(move |q| group(p, q)))
                .collect(),
            latency: Some(v1::LatencyStats {
                p50_ms: 10.0,
                p95_ms: 30.0,
                p99_ms: 45.5,
                mean_ms: 12.0,
                max_ms: 99.0,
                ..Default::default()
            }),
            tokens_in: 1234,
            tokens_out: 5678,
            cost_usd: 1.5,
            ..Default::default()
        },
        results,
    }
}

/// A run that produced nothing yet.
fn empty_run() -> ReportData {
    ReportData {
        summary: v1::RunSummary {
            run_id: "run-0".into(),
            status: v1::RunStatus::Cancelled as i32,
            total_tasks: 10,
            ..Default::default()
        },
        results: Vec::new(),
    }
}

fn check(name: &str, rendered: String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    if std::env::var_os("GAUNTLET_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        rendered == expected,
        "{name} differs from the fixture; first difference at byte {}",
        rendered
            .bytes()
            .zip(expected.bytes())
            .position(|(a, b)| a != b)
            .unwrap_or(rendered.len().min(expected.len()))
    );
}

#[test]
fn every_format_renders_a_varied_run_byte_for_byte_as_before() {
    let data = varied_run();
    check("varied.md", render::markdown(&data));
    check("varied.json", render::json(&data));
    check("varied.csv", render::csv(&data));
    check("varied.html", render::html(&data));
    check("varied.xml", render::junit(&data));
}

#[test]
fn every_format_renders_an_empty_run_byte_for_byte_as_before() {
    let data = empty_run();
    check("empty.md", render::markdown(&data));
    check("empty.json", render::json(&data));
    check("empty.csv", render::csv(&data));
    check("empty.html", render::html(&data));
    check("empty.xml", render::junit(&data));
}
