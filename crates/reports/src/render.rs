//! Report documents, one streaming implementation per format: a
//! [`ResultSink`] takes the run's summary, then its results one at a time,
//! and writes the document to any [`Write`] as they arrive, so rendering a
//! run holds a bounded amount of memory however many results it has. The
//! `String`-returning functions render gathered data through the same sinks.
//!
//! Two formats cannot be written strictly in result order: CSV spreads vars
//! into columns whose set is known only at the end, and JUnit groups results
//! by provider × prompt while results arrive in task order. Those sinks set
//! their rows aside in a [`spill::Spill`] (memory up to a budget, then a
//! temporary file) and write the document when finished.

pub(crate) mod charts;
mod csv;
pub(crate) mod html;
mod json;
pub use json::SCHEMA;
mod junit;
mod markdown;
mod spill;

use std::io::{self, Write};

use gauntlet_proto::v1;

use crate::ReportData;

/// A report document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    /// One pretty-printed document: the summary's fields and `results`.
    Json,
    /// JSON Lines: one compact object per result, the same object as an
    /// element of the JSON report's `results`, and nothing else (no summary
    /// line), so every line has one shape and the file can be concatenated,
    /// counted with `wc -l` and loaded as a table.
    Jsonl,
    Html,
    Csv,
    Junit,
}

/// Renders one document as results arrive: [`begin`](Self::begin) once,
/// [`result`](Self::result) per result in task order, then
/// [`finish`](Self::finish), which completes the document and flushes the
/// writer. The document is incomplete until `finish` returns `Ok`.
///
/// What `result` writes never depends on the summary `begin` was given, so
/// a caller that learns the summary last may call `result` first with the
/// writer pointed elsewhere, then `begin` and copy those bytes after the
/// head (`gauntlet run` renders its result files so while the run goes).
pub trait ResultSink {
    fn begin(&mut self, summary: &v1::RunSummary) -> io::Result<()>;
    fn result(&mut self, result: &v1::Result) -> io::Result<()>;
    fn finish(&mut self) -> io::Result<()>;
}

/// The sink that writes `format` to `writer`.
pub fn sink<'w, W: Write + Send + 'w>(
    format: Format,
    writer: W,
) -> Box<dyn ResultSink + Send + 'w> {
    sink_with_budget(format, writer, spill::DEFAULT_BUDGET)
}

/// [`sink`] with the bytes a CSV or JUnit sink keeps in memory before
/// spilling to disk; tests make it tiny to go through the file.
fn sink_with_budget<'w, W: Write + Send + 'w>(
    format: Format,
    writer: W,
    budget: usize,
) -> Box<dyn ResultSink + Send + 'w> {
    match format {
        Format::Markdown => Box::new(markdown::Markdown::new(writer)),
        Format::Json => Box::new(json::Json::new(writer)),
        Format::Jsonl => Box::new(json::Jsonl::new(writer)),
        Format::Html => Box::new(html::Html::new(writer)),
        Format::Csv => Box::new(csv::Csv::new(writer, budget)),
        Format::Junit => Box::new(junit::Junit::new(writer, budget)),
    }
}

/// Renders gathered data at once, through the format's sink.
pub fn render(format: Format, data: &ReportData) -> String {
    let mut out = Vec::new();
    // The data is in memory already, so nothing is spilled to disk and
    // writing can only go to the Vec, which cannot fail.
    let mut sink = sink_with_budget(format, &mut out, usize::MAX);
    sink.begin(&data.summary)
        .and_then(|()| data.results.iter().try_for_each(|r| sink.result(r)))
        .and_then(|()| sink.finish())
        .expect("rendering into memory cannot fail");
    drop(sink);
    String::from_utf8(out).expect("every sink writes UTF-8")
}

pub fn markdown(data: &ReportData) -> String {
    render(Format::Markdown, data)
}

pub fn json(data: &ReportData) -> String {
    render(Format::Json, data)
}

pub fn jsonl(data: &ReportData) -> String {
    render(Format::Jsonl, data)
}

/// One row per result, vars spread into `var:<name>` columns (the union
/// over the run, in first-seen order), so a spreadsheet can filter on them.
pub fn csv(data: &ReportData) -> String {
    render(Format::Csv, data)
}

/// A self-contained page: the totals, the provider × prompt table, and
/// every result with its per-assertion verdicts.
pub fn html(data: &ReportData) -> String {
    render(Format::Html, data)
}

/// JUnit XML as CI systems read it: one `<testsuite>` per provider × prompt,
/// one `<testcase>` per result; a failed result carries `<failure>`, an
/// errored one `<error>`.
pub fn junit(data: &ReportData) -> String {
    render(Format::Junit, data)
}

fn result_status_name(status: i32) -> &'static str {
    match v1::ResultStatus::try_from(status) {
        Ok(v1::ResultStatus::Pass) => "pass",
        Ok(v1::ResultStatus::Fail) => "fail",
        Ok(v1::ResultStatus::Error) => "error",
        _ => "unknown",
    }
}

/// Table cells cannot hold pipes or newlines.
fn cell(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| match c {
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out.replace('|', "\\|")
}

/// A protobuf time as a UTC time, if set and in range.
pub(crate) fn datetime(
    t: Option<&prost_types::Timestamp>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
}

/// A protobuf time as `2026-11-29 14:03:07 UTC`; empty when unset.
pub(crate) fn utc_text(t: Option<&prost_types::Timestamp>) -> String {
    datetime(t)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// A protobuf time in RFC 3339 to the second, if set.
pub(crate) fn rfc3339_text(t: Option<&prost_types::Timestamp>) -> Option<String> {
    datetime(t).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A protobuf time in RFC 3339, or `null` when unset.
pub(crate) fn rfc3339(t: Option<&prost_types::Timestamp>) -> serde_json::Value {
    rfc3339_text(t).map_or(serde_json::Value::Null, serde_json::Value::String)
}

/// An interval as `84.5%–97.5%`.
pub(crate) fn range(i: &v1::Interval) -> String {
    format!("{}–{}", pct(i.low), pct(i.high))
}

/// [`range`] of an interval that was computed (all 0 means no data);
/// empty otherwise.
pub(crate) fn interval(i: Option<&v1::Interval>) -> String {
    i.filter(|i| i.high > 0.0).map(range).unwrap_or_default()
}

/// Whether a report of this run covers only part of it: the run is still
/// going, or it ended with tasks that have no result.
pub(crate) fn partial(s: &v1::RunSummary) -> bool {
    matches!(
        v1::RunStatus::try_from(s.status),
        Ok(v1::RunStatus::Queued | v1::RunStatus::Running)
    ) || s.completed_tasks < s.total_tasks
}

/// `s` on one line, at most `max` characters, `…` marking a cut.
pub fn one_line(s: &str, max: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max - 1).collect::<String>())
    } else {
        one_line
    }
}

pub(crate) fn pct(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// Escapes text for HTML element content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// XML 1.0 forbids most control characters even when escaped.
pub(crate) fn xml_text(s: &str) -> String {
    esc(&s
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 => '\u{fffd}',
            c => c,
        })
        .collect::<String>())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const FORMATS: [Format; 6] = [
        Format::Markdown,
        Format::Json,
        Format::Jsonl,
        Format::Html,
        Format::Csv,
        Format::Junit,
    ];

    fn data() -> ReportData {
        let group = |provider: &str, passed, failed| v1::GroupSummary {
            provider_id: provider.into(),
            prompt_label: "Say {{x}}".into(),
            total: passed + failed,
            passed,
            failed,
            pass_rate: passed as f64 / (passed + failed) as f64,
            latency: Some(v1::LatencyStats {
                p50_ms: 12.0,
                p95_ms: 40.0,
                p99_ms: 50.0,
                mean_ms: 15.0,
                max_ms: 51.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        ReportData {
            summary: v1::RunSummary {
                run_id: "r1".into(),
                status: v1::RunStatus::Completed as i32,
                description: "Nightly | regression".into(),
                total_tasks: 4,
                completed_tasks: 4,
                passed: 3,
                failed: 1,
                pass_rate: 0.75,
                groups: vec![group("openai:chat:a", 2, 0), group("echo", 1, 1)],
                ..Default::default()
            },
            results: vec![v1::Result {
                task_index: 3,
                provider_id: "echo".into(),
                status: v1::ResultStatus::Fail as i32,
                reason: "Expected output to contain \"x\"".into(),
                output: "line1\nline2 | pipe".into(),
                vars_json: "{\"x\":\"1\"}".into(),
                ..Default::default()
            }],
        }
    }

    /// Many results over four provider × prompt groups, interleaved in task
    /// order, with vars whose keys change along the run.
    fn many(n: u64) -> ReportData {
        let mut d = data();
        d.results = (0..n)
            .map(|i| v1::Result {
                task_index: i,
                test_index: (i / 4) as u32,
                provider_index: (i % 2) as u32,
                prompt_index: (i / 2 % 2) as u32,
                provider_id: format!("p{}", i % 2),
                prompt_label: format!("prompt {}", i / 2 % 2),
                status: (i % 3 + 1) as i32,
                vars_json: format!("{{\"v{}\":{i}}}", i % 5),
                output: format!("out {i}\n<b>|"),
                latency_ms: (i % 97) as u32,
                ..Default::default()
            })
            .collect();
        d
    }

    fn render_in_pages(format: Format, data: &ReportData, page: usize, budget: usize) -> String {
        let mut out = Vec::new();
        let mut sink = sink_with_budget(format, &mut out, budget);
        sink.begin(&data.summary).unwrap();
        for chunk in data.results.chunks(page) {
            for r in chunk {
                sink.result(r).unwrap();
            }
        }
        sink.finish().unwrap();
        drop(sink);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_format_gives_the_same_bytes_in_pages_as_at_once() {
        let d = many(500);
        for format in FORMATS {
            let at_once = render(format, &d);
            assert!(!at_once.is_empty(), "{format:?}");
            for page in [1, 7, 1000] {
                assert_eq!(
                    render_in_pages(format, &d, page, spill::DEFAULT_BUDGET),
                    at_once,
                    "{format:?}, pages of {page}"
                );
            }
        }
    }

    #[test]
    fn spilling_to_disk_does_not_change_a_byte() {
        let d = many(500);
        for format in FORMATS {
            assert_eq!(
                render_in_pages(format, &d, 50, 64),
                render(format, &d),
                "{format:?}"
            );
        }
    }

    #[test]
    fn jsonl_has_one_parsable_line_per_result_shaped_like_json_results() {
        let d = many(40);
        let text = jsonl(&d);
        assert!(text.ends_with('\n'));
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), d.results.len());
        let doc: Value = serde_json::from_str(&json(&d)).unwrap();
        assert_eq!(Value::Array(lines), doc["results"]);
    }

    #[test]
    fn a_result_is_written_with_every_field_under_its_name_in_alphabetical_order() {
        let r = v1::Result {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            run_id: "r".into(),
            task_index: 7,
            test_index: 3,
            prompt_index: 1,
            provider_index: 2,
            repeat_index: 1,
            provider_id: "echo".into(),
            prompt_label: "p".into(),
            vars_json: r#"{"z":1,"a":"x"}"#.into(),
            rendered_prompt: "Say x".into(),
            output: "x\"y".into(),
            status: v1::ResultStatus::Fail as i32,
            score: 0.5,
            reason: "why".into(),
            assertions: vec![v1::AssertionResult {
                r#type: "contains".into(),
                pass: false,
                score: 0.25,
                reason: "no".into(),
            }],
            latency_ms: 12,
            tokens_in: 4,
            tokens_out: 5,
            cost_usd: 0.001,
            cached: true,
            error: "e".into(),
            test_description: "d".into(),
        };
        let d = ReportData {
            summary: v1::RunSummary::default(),
            results: vec![r],
        };
        // The schema: `serde_json::json!` sorts an object's keys.
        let want = serde_json::json!({
            "task_index": 7, "test_index": 3, "prompt_index": 1, "provider": "echo",
            "repeat_index": 1, "description": "d", "vars": {"a": "x", "z": 1},
            "prompt": "Say x", "output": "x\"y", "status": "fail", "score": 0.5,
            "reason": "why",
            "assertions": [{"type": "contains", "pass": false, "score": 0.25, "reason": "no"}],
            "latency_ms": 12, "tokens_in": 4, "tokens_out": 5, "cost_usd": 0.001,
            "cached": true, "error": "e", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        });
        assert_eq!(jsonl(&d), format!("{want}\n"));
        let doc = json(&d);
        let pretty = serde_json::to_string_pretty(&want)
            .unwrap()
            .replace('\n', "\n    ");
        assert!(doc.contains(&format!("[\n    {pretty}\n  ]")), "{doc}");
    }

    #[test]
    fn jsonl_of_no_results_is_empty() {
        let mut d = data();
        d.results.clear();
        assert_eq!(jsonl(&d), "");
    }

    #[test]
    fn markdown_names_every_provider_and_lists_failures_in_valid_cells() {
        let md = markdown(&data());
        assert!(md.starts_with("# Nightly \\| regression\n"), "{md}");
        assert!(md.contains("| openai:chat:a | Say {{x}} | 100.0% | 2 | 0 |"));
        assert!(md.contains("| echo | Say {{x}} | 50.0% | 1 | 1 |"));
        assert!(md.contains("## Failures"));
        assert!(!md.contains("## Most failed tests"));
        let mut d = data();
        d.summary.most_failed = vec![v1::FailedCase {
            test_index: 7,
            description: "greets | waves".into(),
            unpassed: 3,
            total: 4,
        }];
        let with_most = markdown(&d);
        assert!(
            with_most.contains("## Most failed tests\n\n| Test | Not passed | Of |\n|---|---:|---:|\n| #7 greets \\| waves | 3 | 4 |\n"),
            "{with_most}"
        );
        assert!(md.contains("line1 line2 \\| pipe"));
        assert!(md.contains("75.0% pass rate"));
    }

    #[test]
    fn every_report_names_when_the_run_ran_and_its_label() {
        let mut d = data();
        d.summary.label = "nightly <7>".into();
        d.summary.created_at = Some(prost_types::Timestamp {
            seconds: 1_795_960_987,
            nanos: 0,
        });
        let page = html(&d);
        assert!(
            page.contains("<dt>Started</dt><dd>2026-11-29 14:03:07 UTC</dd>"),
            "{page}"
        );
        assert!(page.contains("<dt>Label</dt><dd>nightly &lt;7&gt;</dd>"));
        assert!(!page.contains("<dt>Ended</dt>"), "not ended yet");
        let md = markdown(&d);
        assert!(
            md.contains("- Started: 2026-11-29 14:03:07 UTC\n- Label: nightly <7>\n"),
            "{md}"
        );
        let doc: Value = serde_json::from_str(&json(&d)).unwrap();
        assert_eq!(doc["created_at"], "2026-11-29T14:03:07Z");
        assert_eq!(doc["finished_at"], Value::Null);
        assert_eq!(doc["label"], "nightly <7>");
    }

    #[test]
    fn a_report_of_a_run_still_going_says_it_is_partial() {
        let mut d = data();
        d.summary.status = v1::RunStatus::Running as i32;
        d.summary.total_tasks = 10;
        let md = markdown(&d);
        assert!(
            md.contains("> **Partial report**: the run is running; 4 of 10 results"),
            "{md}"
        );
        let page = html(&d);
        assert!(page.contains("id=\"partial\""), "{page}");
        assert!(!html(&data()).contains("id=\"partial\""));
        assert!(!markdown(&data()).contains("Partial report"));
    }

    #[test]
    fn a_megabyte_output_is_cut_in_the_page_with_a_marker() {
        let mut d = data();
        d.results[0].output = format!("{}<script>alert(1)</script>", "é".repeat(512 * 1024));
        let page = html(&d);
        assert!(
            page.len() < 64 * 1024,
            "the page holds {} bytes",
            page.len()
        );
        assert!(
            page.contains(
                "[cut: 16384 of 1048601 bytes shown; the JSON and CSV reports hold all of it]"
            ),
            "{}",
            &page[page.len() - 4000..]
        );
        assert!(!page.contains("alert"), "the cut tail is not in the page");
        // The JSON report keeps it whole.
        let doc: Value = serde_json::from_str(&json(&d)).unwrap();
        assert_eq!(
            doc["results"][0]["output"].as_str().unwrap().len(),
            1_048_601
        );
    }

    #[test]
    fn json_report_round_trips_counts_and_results() {
        let doc: Value = serde_json::from_str(&json(&data())).unwrap();
        assert_eq!(doc["schema"], "gauntlet.report/v1");
        assert_eq!(doc["passed"], 3);
        assert_eq!(doc["groups"][1]["provider"], "echo");
        assert_eq!(doc["groups"][0]["latency"]["p95_ms"], 40.0);
        assert_eq!(doc["results"][0]["status"], "fail");
        assert_eq!(doc["results"][0]["vars"]["x"], "1");
    }
    #[test]
    fn csv_has_one_row_per_result_with_vars_spread_into_columns() {
        let text = csv(&data());
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        let header = reader.headers().unwrap().clone();
        assert!(header.iter().any(|h| h == "var:x"), "{header:?}");
        let rows: Vec<_> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 1);
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        assert_eq!(&rows[0][col("var:x")], "1");
        assert_eq!(&rows[0][col("status")], "fail");
        assert_eq!(&rows[0][col("output")], "line1\nline2 | pipe");
    }

    #[test]
    fn html_carries_user_text_as_data_and_runs_only_its_own_script() {
        let mut d = data();
        d.summary.description = "<b>Nightly</b>".into();
        d.results[0].output = "<script>alert(1)</script>".into();
        let page = html(&d);
        assert!(
            page.contains("<title>&lt;b&gt;Nightly&lt;&#x2f;b&gt;</title>"),
            "{page}"
        );
        assert!(
            page.contains(r#""o":"\u003cscript>alert(1)\u003c/script>""#),
            "{page}"
        );
        // The page's own script and nothing else.
        assert_eq!(page.matches("<script>").count(), 1, "{page}");
        assert!(page.contains("<td>echo</td>"));
    }

    #[test]
    fn junit_counts_failures_and_errors_per_suite() {
        let mut d = data();
        d.results.push(v1::Result {
            task_index: 4,
            provider_id: "echo".into(),
            status: v1::ResultStatus::Error as i32,
            error: "HTTP 500 after 3 attempts".into(),
            ..Default::default()
        });
        d.results.push(v1::Result {
            task_index: 0,
            provider_index: 1,
            provider_id: "openai:chat:a".into(),
            status: v1::ResultStatus::Pass as i32,
            test_description: "greets \u{1} & waves".into(),
            ..Default::default()
        });
        let xml = junit(&d);
        assert!(xml.starts_with("<?xml"));
        assert!(
            xml.contains(
                "<testsuites name=\"Nightly | regression\" tests=\"3\" failures=\"1\" errors=\"1\""
            ),
            "{xml}"
        );
        assert!(
            xml.contains("<testsuite name=\"echo / \" tests=\"2\" failures=\"1\" errors=\"1\""),
            "{xml}"
        );
        assert!(xml.contains("<error message=\"HTTP 500 after 3 attempts\"/>"));
        assert!(
            xml.contains("name=\"greets \u{fffd} &amp; waves\""),
            "{xml}"
        );
    }
}
