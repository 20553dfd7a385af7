//! Report documents. Pure functions of the gathered data, so they are
//! tested without any service running.

use std::fmt::Write as _;

use gauntlet_proto::v1;
use serde_json::{Value, json};

use crate::ReportData;

/// Failed and errored results listed in a Markdown report, at most.
const MAX_LISTED_FAILURES: usize = 50;

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

fn pct(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

pub fn markdown(data: &ReportData) -> String {
    let s = &data.summary;
    let mut out = String::new();
    let title = if s.description.is_empty() {
        "Gauntlet run"
    } else {
        &s.description
    };
    let _ = writeln!(out, "# {}\n", cell(title, 200));
    let _ = writeln!(out, "- Run: `{}`", s.run_id);
    let _ = writeln!(out, "- Status: {}", v1::RunStatus::label_of(s.status));
    let _ = writeln!(
        out,
        "- Results: {} of {} — {} passed, {} failed, {} errors ({} pass rate)",
        s.completed_tasks,
        s.total_tasks,
        s.passed,
        s.failed,
        s.errors,
        pct(s.pass_rate)
    );
    let _ = writeln!(
        out,
        "- Tokens: {} in, {} out; cost ${:.4}\n",
        s.tokens_in, s.tokens_out, s.cost_usd
    );
    let _ = writeln!(out, "## By provider and prompt\n");
    let _ = writeln!(
        out,
        "| Provider | Prompt | Pass rate | Passed | Failed | Errors | p50 ms | p95 ms | p99 ms | Tokens in | Tokens out | Cost $ |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for g in &s.groups {
        let l = g.latency.unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.4} |",
            cell(&g.provider_id, 60),
            cell(&g.prompt_label, 60),
            pct(g.pass_rate),
            g.passed,
            g.failed,
            g.errors,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            g.tokens_in,
            g.tokens_out,
            g.cost_usd
        );
    }
    let failures: Vec<&v1::Result> = data
        .results
        .iter()
        .filter(|r| r.status != v1::ResultStatus::Pass as i32)
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(out, "\n## Failures\n");
        let _ = writeln!(out, "| Task | Provider | Test | Status | Reason | Output |");
        let _ = writeln!(out, "|---:|---|---|---|---|---|");
        for r in failures.iter().take(MAX_LISTED_FAILURES) {
            let test = if r.test_description.is_empty() {
                &r.vars_json
            } else {
                &r.test_description
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                r.task_index,
                cell(&r.provider_id, 40),
                cell(test, 60),
                result_status_name(r.status),
                cell(&r.reason, 120),
                cell(&r.output, 80)
            );
        }
        if failures.len() > MAX_LISTED_FAILURES {
            let _ = writeln!(out, "\n…and {} more.", failures.len() - MAX_LISTED_FAILURES);
        }
    }
    out
}

fn latency_json(l: Option<v1::LatencyStats>) -> Value {
    let l = l.unwrap_or_default();
    json!({"p50_ms": l.p50_ms, "p95_ms": l.p95_ms, "p99_ms": l.p99_ms, "mean_ms": l.mean_ms, "max_ms": l.max_ms})
}

pub fn json(data: &ReportData) -> String {
    let s = &data.summary;
    let groups: Vec<Value> = s
        .groups
        .iter()
        .map(|g| {
            json!({
                "provider": g.provider_id,
                "provider_index": g.provider_index,
                "prompt": g.prompt_label,
                "prompt_index": g.prompt_index,
                "total": g.total,
                "passed": g.passed,
                "failed": g.failed,
                "errors": g.errors,
                "pass_rate": g.pass_rate,
                "latency": latency_json(g.latency),
                "tokens_in": g.tokens_in,
                "tokens_out": g.tokens_out,
                "cost_usd": g.cost_usd,
            })
        })
        .collect();
    let results: Vec<Value> = data
        .results
        .iter()
        .map(|r| {
            json!({
                "task_index": r.task_index,
                "test_index": r.test_index,
                "prompt_index": r.prompt_index,
                "provider": r.provider_id,
                "repeat_index": r.repeat_index,
                "description": r.test_description,
                "vars": serde_json::from_str::<Value>(&r.vars_json).unwrap_or(Value::Null),
                "prompt": r.rendered_prompt,
                "output": r.output,
                "status": result_status_name(r.status),
                "score": r.score,
                "reason": r.reason,
                "assertions": r.assertions.iter().map(|a| json!({
                    "type": a.r#type, "pass": a.pass, "score": a.score, "reason": a.reason,
                })).collect::<Vec<_>>(),
                "latency_ms": r.latency_ms,
                "tokens_in": r.tokens_in,
                "tokens_out": r.tokens_out,
                "cost_usd": r.cost_usd,
                "cached": r.cached,
                "error": r.error,
            })
        })
        .collect();
    let doc = json!({
        "run_id": s.run_id,
        "description": s.description,
        "status": v1::RunStatus::label_of(s.status),
        "total_tasks": s.total_tasks,
        "completed_tasks": s.completed_tasks,
        "passed": s.passed,
        "failed": s.failed,
        "errors": s.errors,
        "pass_rate": s.pass_rate,
        "latency": latency_json(s.latency),
        "tokens_in": s.tokens_in,
        "tokens_out": s.tokens_out,
        "cost_usd": s.cost_usd,
        "groups": groups,
        "results": results,
    });
    serde_json::to_string_pretty(&doc).expect("a JSON value always serializes")
}

/// One row per result, vars spread into `var:<name>` columns (the union
/// over the run, in first-seen order), so a spreadsheet can filter on them.
pub fn csv(data: &ReportData) -> String {
    let vars: Vec<serde_json::Map<String, Value>> = data
        .results
        .iter()
        .map(|r| match serde_json::from_str::<Value>(&r.vars_json) {
            Ok(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        })
        .collect();
    let mut var_names: Vec<&str> = Vec::new();
    for m in &vars {
        for k in m.keys() {
            if !var_names.contains(&k.as_str()) {
                var_names.push(k);
            }
        }
    }
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "task_index",
        "test_index",
        "prompt_index",
        "provider",
        "prompt",
        "repeat_index",
        "description",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    header.extend(var_names.iter().map(|v| format!("var:{v}")));
    header.extend(
        [
            "output",
            "status",
            "score",
            "reason",
            "latency_ms",
            "tokens_in",
            "tokens_out",
            "cost_usd",
            "cached",
            "error",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    // Writing to a Vec cannot fail.
    let _ = w.write_record(&header);
    for (r, m) in data.results.iter().zip(&vars) {
        let mut row = vec![
            r.task_index.to_string(),
            r.test_index.to_string(),
            r.prompt_index.to_string(),
            r.provider_id.clone(),
            r.prompt_label.clone(),
            r.repeat_index.to_string(),
            r.test_description.clone(),
        ];
        row.extend(var_names.iter().map(|v| match m.get(*v) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        }));
        row.extend([
            r.output.clone(),
            result_status_name(r.status).to_string(),
            format!("{}", r.score),
            r.reason.clone(),
            r.latency_ms.to_string(),
            r.tokens_in.to_string(),
            r.tokens_out.to_string(),
            format!("{}", r.cost_usd),
            r.cached.to_string(),
            r.error.clone(),
        ]);
        let _ = w.write_record(&row);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
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
fn xml_text(s: &str) -> String {
    esc(&s
        .chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 => '\u{fffd}',
            c => c,
        })
        .collect::<String>())
}

/// A self-contained page: the totals, the provider × prompt table, and
/// every result with its per-assertion verdicts.
pub fn html(data: &ReportData) -> String {
    let s = &data.summary;
    let title = if s.description.is_empty() {
        "Gauntlet run"
    } else {
        &s.description
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}\
table{{border-collapse:collapse;margin:1rem 0}}th,td{{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top;text-align:left}}\
td.n{{text-align:right}}tr.pass td.s{{color:#17692b}}tr.fail td.s{{color:#b00020}}tr.error td.s{{color:#a65e00}}\
pre{{white-space:pre-wrap;margin:0;max-width:40rem}}\
</style></head><body>\n",
        esc(title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", esc(title));
    let _ = writeln!(
        out,
        "<p>Run <code>{}</code> — {}. {} of {} results: {} passed, {} failed, {} errors ({} pass rate). Tokens {} in, {} out; cost ${:.4}.</p>",
        esc(&s.run_id),
        v1::RunStatus::label_of(s.status),
        s.completed_tasks,
        s.total_tasks,
        s.passed,
        s.failed,
        s.errors,
        pct(s.pass_rate),
        s.tokens_in,
        s.tokens_out,
        s.cost_usd
    );
    let _ = writeln!(
        out,
        "<h2>By provider and prompt</h2>\n<table><tr><th>Provider</th><th>Prompt</th><th>Pass rate</th><th>Passed</th><th>Failed</th><th>Errors</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>Tokens in</th><th>Tokens out</th><th>Cost $</th></tr>"
    );
    for g in &s.groups {
        let l = g.latency.unwrap_or_default();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.0}</td><td class=\"n\">{:.0}</td><td class=\"n\">{:.0}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.4}</td></tr>",
            esc(&g.provider_id),
            esc(&g.prompt_label),
            pct(g.pass_rate),
            g.passed,
            g.failed,
            g.errors,
            l.p50_ms,
            l.p95_ms,
            l.p99_ms,
            g.tokens_in,
            g.tokens_out,
            g.cost_usd
        );
    }
    let _ = writeln!(
        out,
        "</table>\n<h2>Results</h2>\n<table><tr><th>Task</th><th>Provider</th><th>Test</th><th>Status</th><th>Output</th><th>Assertions</th><th>Latency ms</th></tr>"
    );
    for r in &data.results {
        let status = result_status_name(r.status);
        let test = if r.test_description.is_empty() {
            &r.vars_json
        } else {
            &r.test_description
        };
        let mut verdicts = String::new();
        for a in &r.assertions {
            let _ = write!(
                verdicts,
                "{} <code>{}</code> {}<br>",
                if a.pass { "✔" } else { "✘" },
                esc(&a.r#type),
                esc(&a.reason)
            );
        }
        if !r.error.is_empty() {
            let _ = write!(verdicts, "error: {}", esc(&r.error));
        }
        let _ = writeln!(
            out,
            "<tr class=\"{status}\"><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"s\">{status}</td><td><pre>{}</pre></td><td>{}</td><td class=\"n\">{}</td></tr>",
            r.task_index,
            esc(&r.provider_id),
            esc(test),
            esc(&r.output),
            verdicts,
            r.latency_ms
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}

/// JUnit XML as CI systems read it: one `<testsuite>` per provider × prompt,
/// one `<testcase>` per result; a failed result carries `<failure>`, an
/// errored one `<error>`.
pub fn junit(data: &ReportData) -> String {
    let s = &data.summary;
    let mut suites: Vec<((u32, u32), Vec<&v1::Result>)> = Vec::new();
    for r in &data.results {
        let key = (r.provider_index, r.prompt_index);
        match suites.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(r),
            None => suites.push((key, vec![r])),
        }
    }
    suites.sort_by_key(|(k, _)| *k);
    let count = |list: &[&v1::Result], status: v1::ResultStatus| {
        list.iter().filter(|r| r.status == status as i32).count()
    };
    let secs = |list: &[&v1::Result]| {
        list.iter().map(|r| u64::from(r.latency_ms)).sum::<u64>() as f64 / 1000.0
    };
    let all: Vec<&v1::Result> = data.results.iter().collect();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let name = if s.description.is_empty() {
        "gauntlet"
    } else {
        &s.description
    };
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">",
        xml_text(name),
        all.len(),
        count(&all, v1::ResultStatus::Fail),
        count(&all, v1::ResultStatus::Error),
        secs(&all)
    );
    for (_, list) in &suites {
        let first = list[0];
        let suite_name = format!("{} / {}", first.provider_id, first.prompt_label);
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{:.3}\">",
            xml_text(&suite_name),
            list.len(),
            count(list, v1::ResultStatus::Fail),
            count(list, v1::ResultStatus::Error),
            secs(list)
        );
        for r in list {
            let mut case = if r.test_description.is_empty() {
                format!("test {}", r.test_index)
            } else {
                r.test_description.clone()
            };
            if r.repeat_index > 0 {
                let _ = write!(case, " (repeat {})", r.repeat_index);
            }
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                xml_text(&case),
                xml_text(&r.provider_id),
                f64::from(r.latency_ms) / 1000.0
            );
            match v1::ResultStatus::try_from(r.status) {
                Ok(v1::ResultStatus::Fail) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml_text(&r.reason),
                        xml_text(&r.output)
                    );
                }
                Ok(v1::ResultStatus::Error) => {
                    let message = if r.error.is_empty() {
                        &r.reason
                    } else {
                        &r.error
                    };
                    let _ = writeln!(
                        out,
                        ">\n      <error message=\"{}\"/>\n    </testcase>",
                        xml_text(message)
                    );
                }
                _ => out.push_str("/>\n"),
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn markdown_names_every_provider_and_lists_failures_in_valid_cells() {
        let md = markdown(&data());
        assert!(md.starts_with("# Nightly \\| regression\n"), "{md}");
        assert!(md.contains("| openai:chat:a | Say {{x}} | 100.0% | 2 | 0 |"));
        assert!(md.contains("| echo | Say {{x}} | 50.0% | 1 | 1 |"));
        assert!(md.contains("## Failures"));
        assert!(md.contains("line1 line2 \\| pipe"));
        assert!(md.contains("75.0% pass rate"));
    }

    #[test]
    fn json_report_round_trips_counts_and_results() {
        let doc: Value = serde_json::from_str(&json(&data())).unwrap();
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
    fn html_escapes_user_text() {
        let mut d = data();
        d.results[0].output = "<script>alert(1)</script>".into();
        let page = html(&d);
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!page.contains("<script>"));
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
