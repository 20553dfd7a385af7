//! The roll-up report: several runs in one document (a nightly batch of
//! suites): each run's headline and provider × prompt table, the pass rate
//! of every run with its interval as a chart (HTML), and the totals.

use std::fmt::Write as _;

use gauntlet_proto::v1;
use minijinja::{Value, context};
use serde_json::json;

use crate::render::{Format, charts, html::CSS, interval, partial, pct, xml_text};

/// The version of the roll-up's JSON document.
pub const SCHEMA: &str = "gauntlet.rollup/v1";

/// What a roll-up shows: the runs' summaries, in the order asked for.
pub struct RollupData {
    pub runs: Vec<v1::RunSummary>,
}

fn suite(s: &v1::RunSummary) -> String {
    if s.description.is_empty() {
        format!("run {}", s.run_id)
    } else {
        s.description.clone()
    }
}

struct Totals {
    passed: u64,
    failed: u64,
    errors: u64,
    cost: f64,
}

impl Totals {
    fn of(runs: &[v1::RunSummary]) -> Self {
        Totals {
            passed: runs.iter().map(|r| r.passed).sum(),
            failed: runs.iter().map(|r| r.failed).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            cost: runs.iter().map(|r| r.cost_usd).sum(),
        }
    }

    fn pass_rate(&self) -> f64 {
        let n = self.passed + self.failed + self.errors;
        if n == 0 {
            0.0
        } else {
            self.passed as f64 / n as f64
        }
    }
}

/// The roll-up in `format`.
pub fn render(format: Format, data: &RollupData) -> String {
    match format {
        Format::Json | Format::Jsonl => {
            serde_json::to_string_pretty(&document(data)).expect("a JSON value serializes") + "\n"
        }
        Format::Markdown => markdown(data),
        Format::Html => html(data),
        Format::Csv => csv(data),
        Format::Junit => junit(data),
    }
}

pub fn document(data: &RollupData) -> serde_json::Value {
    let t = Totals::of(&data.runs);
    let runs: Vec<_> = data
        .runs
        .iter()
        .map(|r| {
            let i = r.pass_rate_interval.unwrap_or_default();
            let l = r.latency.unwrap_or_default();
            let groups: Vec<_> = r
                .groups
                .iter()
                .map(|g| {
                    json!({"provider": g.provider_id, "prompt": g.prompt_label,
                           "passed": g.passed, "failed": g.failed, "errors": g.errors,
                           "pass_rate": g.pass_rate})
                })
                .collect();
            json!({
                "run_id": r.run_id, "description": r.description,
                "status": v1::RunStatus::label_of(r.status),
                "total_tasks": r.total_tasks, "completed_tasks": r.completed_tasks,
                "passed": r.passed, "failed": r.failed, "errors": r.errors,
                "pass_rate": r.pass_rate, "pass_rate_low": i.low, "pass_rate_high": i.high,
                "p95_latency_ms": l.p95_ms, "cost_usd": r.cost_usd, "groups": groups,
            })
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "totals": {"passed": t.passed, "failed": t.failed, "errors": t.errors,
                   "pass_rate": t.pass_rate(), "cost_usd": t.cost},
        "runs": runs,
    })
}

/// One row per run and provider × prompt.
pub fn csv(data: &RollupData) -> String {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        "run_id",
        "description",
        "status",
        "provider",
        "prompt",
        "passed",
        "failed",
        "errors",
        "pass_rate",
    ]);
    for r in &data.runs {
        for g in &r.groups {
            let _ = w.write_record([
                r.run_id.clone(),
                r.description.clone(),
                v1::RunStatus::label_of(r.status).to_owned(),
                g.provider_id.clone(),
                g.prompt_label.clone(),
                g.passed.to_string(),
                g.failed.to_string(),
                g.errors.to_string(),
                g.pass_rate.to_string(),
            ]);
        }
    }
    String::from_utf8(w.into_inner().expect("writing to memory cannot fail"))
        .expect("CSV of UTF-8 fields is UTF-8")
}

/// A table of the runs and the totals, for a pull-request comment or a
/// nightly summary.
pub fn markdown(data: &RollupData) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let t = Totals::of(&data.runs);
    let mut out = format!(
        "# Roll-up of {} runs\n\n{} passed, {} failed, {} errors ({} pass rate); cost ${:.4}\n",
        data.runs.len(),
        t.passed,
        t.failed,
        t.errors,
        pct(t.pass_rate()),
        t.cost
    );
    if data.runs.iter().any(partial) {
        out.push_str("\n> **Partial roll-up**: a run has not ended; its figures are of the results stored so far.\n");
    }
    out.push_str("\n| Suite | Run | Status | Pass rate | 95 % CI | Passed | Failed | Errors | p95 ms | Cost $ |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &data.runs {
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {:.0} | {:.4} |",
            cell(&suite(r)),
            r.run_id,
            v1::RunStatus::label_of(r.status),
            pct(r.pass_rate),
            interval(r.pass_rate_interval.as_ref()),
            r.passed,
            r.failed,
            r.errors,
            r.latency.unwrap_or_default().p95_ms,
            r.cost_usd
        );
    }
    out
}

/// A testsuite per run, a testcase per provider × prompt, failing when any
/// of its results did not pass.
pub fn junit(data: &RollupData) -> String {
    let cases = |r: &v1::RunSummary| r.groups.len();
    let failing = |r: &v1::RunSummary| r.groups.iter().filter(|g| g.failed + g.errors > 0).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"Roll-up of {} runs\" tests=\"{}\" failures=\"{}\">",
        data.runs.len(),
        data.runs.iter().map(cases).sum::<usize>(),
        data.runs.iter().map(failing).sum::<usize>()
    );
    for r in &data.runs {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" id=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\">",
            xml_text(&suite(r)),
            xml_text(&r.run_id),
            cases(r),
            failing(r)
        );
        for g in &r.groups {
            let name = format!("{} / {}", g.provider_id, g.prompt_label);
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\"",
                xml_text(&suite(r)),
                xml_text(&name)
            );
            if g.failed + g.errors > 0 {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{} failed, {} errors of {}\"/>\n    </testcase>",
                    g.failed, g.errors, g.total
                );
            } else {
                out.push_str("/>\n");
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// A self-contained page: the totals, every run's pass rate with its
/// interval, the runs table and each run's provider × prompt table.
pub fn html(data: &RollupData) -> String {
    let t = Totals::of(&data.runs);
    let bars: Vec<charts::Bar> = data
        .runs
        .iter()
        .map(|r| charts::Bar {
            label: suite(r),
            value: r.pass_rate,
            interval: r
                .pass_rate_interval
                .filter(|i| i.high > 0.0)
                .map(|i| (i.low, i.high)),
            light: false,
        })
        .collect();
    let mut chart_list = Vec::new();
    if let Some(svg) = charts::rates(&bars, "pass rate") {
        chart_list.push(context! {
            id => "chart-rollup-pass-rate", title => "Pass rate per run (95 % Wilson interval)",
            svg => Value::from_safe_string(svg),
        });
    }
    let runs: Vec<Value> = data
        .runs
        .iter()
        .map(|r| {
            let groups: Vec<Value> = r
                .groups
                .iter()
                .map(|g| {
                    context! {
                        provider => g.provider_id, prompt => g.prompt_label,
                        rate => pct(g.pass_rate), passed => g.passed, failed => g.failed,
                        errors => g.errors,
                    }
                })
                .collect();
            context! {
                suite => suite(r), id => r.run_id, status => v1::RunStatus::label_of(r.status),
                results => format!("{} of {}", r.completed_tasks, r.total_tasks),
                rate => pct(r.pass_rate), interval => interval(r.pass_rate_interval.as_ref()),
                passed => r.passed, failed => r.failed, errors => r.errors,
                p95 => format!("{:.0}", r.latency.unwrap_or_default().p95_ms),
                cost => format!("{:.4}", r.cost_usd),
                class => if r.failed + r.errors > 0 { "fail" } else { "pass" },
                groups => groups,
            }
        })
        .collect();
    crate::render::html::render_template(
        "rollup.html",
        context! {
            title => format!("Roll-up of {} runs", data.runs.len()),
            partial => data.runs.iter().any(partial),
            pass_rate => pct(t.pass_rate()), passed => t.passed, failed => t.failed,
            errors => t.errors, cost => format!("${:.4}", t.cost),
            charts => chart_list, runs => runs,
            css => Value::from_safe_string(CSS.to_owned()),
        },
    )
    .expect("the roll-up template renders")
}
