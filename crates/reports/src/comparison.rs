//! The comparison report: CompareRuns' verdicts (run A, the baseline,
//! against run B, the candidate, or the providers or prompts of one run with
//! each other) in every format. `gauntlet compare` prints and writes the
//! same rows and documents.

use std::fmt::Write as _;

use gauntlet_proto::v1;
use minijinja::{Value, context};
use serde_json::json;

use crate::render::{Format, charts, html::CSS, one_line as clip, pct};

/// The version of the comparison's JSON document.
pub const SCHEMA: &str = "gauntlet.compare/v1";

/// What a comparison report shows: the comparison and the runs' summaries
/// (B's absent for a comparison within run A).
pub struct ComparisonData {
    pub comparison: v1::Comparison,
    pub a: v1::RunSummary,
    pub b: Option<v1::RunSummary>,
}

/// A verdict's name in documents: `better`, `worse`,
/// `no_significant_difference`, `no_data`.
pub fn verdict(v: i32) -> &'static str {
    match v1::Verdict::try_from(v) {
        Ok(v1::Verdict::Better) => "better",
        Ok(v1::Verdict::Worse) => "worse",
        Ok(v1::Verdict::NoSignificantDifference) => "no_significant_difference",
        Ok(v1::Verdict::NoData) => "no_data",
        _ => "unknown",
    }
}

/// An arm as the table shows it: its provider and prompt (the heading
/// says which run is A and which B).
pub fn arm_name(arm: Option<&v1::Arm>) -> String {
    let Some(arm) = arm else {
        return String::new();
    };
    let mut parts = Vec::new();
    if !arm.provider.is_empty() {
        parts.push(clip(&arm.provider, 30));
    }
    if !arm.prompt.is_empty() {
        parts.push(clip(&arm.prompt, 40));
    }
    parts.join(" · ")
}

/// The comparison file: one object per compared pair.
pub fn document(c: &v1::Comparison) -> serde_json::Value {
    let arm = |a: Option<&v1::Arm>| {
        a.map(|a| json!({"run_id": a.run_id, "provider": a.provider, "prompt": a.prompt}))
    };
    let pairs: Vec<_> = c
        .pairs
        .iter()
        .map(|p| {
            let m = p.mcnemar.unwrap_or_default();
            let s = p.score_diff.unwrap_or_default();
            json!({
                "a": arm(p.a.as_ref()),
                "b": arm(p.b.as_ref()),
                "n_pairs": p.n_pairs,
                "a_pass_rate": p.a_pass_rate,
                "b_pass_rate": p.b_pass_rate,
                "mcnemar": {
                    "b": m.b,
                    "c": m.c,
                    "p_value": m.p_value,
                    "p_value_adjusted": m.p_value_adjusted,
                },
                "score_diff": {"mean": s.mean, "ci_low": s.ci_low, "ci_high": s.ci_high},
                "latency_wilcoxon_p": p.latency_wilcoxon_p,
                "latency_median_diff_ms": p.latency_median_diff_ms,
                "a_cost_usd": p.a_cost_usd,
                "b_cost_usd": p.b_cost_usd,
                "cost_diff_usd": p.cost_diff_usd,
                "pairs_needed": p.pairs_needed,
                "verdict": verdict(p.verdict),
            })
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "run_a": c.run_a,
        "run_b": c.run_b,
        "alpha": c.alpha,
        "seed": c.seed,
        "partial": c.partial,
        "pairs": pairs,
    })
}

pub fn p_text(p: Option<f64>) -> String {
    match p {
        None => "-".into(),
        Some(p) if p < 0.0001 => "<0.0001".into(),
        Some(p) => format!("{p:.4}"),
    }
}

/// One row per pair, as printed and as in Markdown.
pub fn rows(c: &v1::Comparison) -> Vec<[String; 9]> {
    c.pairs
        .iter()
        .map(|p| {
            let m = p.mcnemar.unwrap_or_default();
            let s = p.score_diff.unwrap_or_default();
            [
                arm_name(p.a.as_ref()),
                arm_name(p.b.as_ref()),
                p.n_pairs.to_string(),
                format!("{} → {}", pct(p.a_pass_rate), pct(p.b_pass_rate)),
                format!("{}/{}", m.b, m.c),
                p_text(Some(m.p_value_adjusted)),
                format!("{:+.3} [{:+.3}, {:+.3}]", s.mean, s.ci_low, s.ci_high),
                p_text(p.latency_wilcoxon_p),
                verdict(p.verdict).replace('_', " "),
            ]
        })
        .collect()
}

pub const HEADERS: [&str; 9] = [
    "A",
    "B",
    "pairs",
    "pass A → B",
    "b/c",
    "p (Holm)",
    "score Δ [CI]",
    "latency p",
    "verdict",
];

pub fn heading(c: &v1::Comparison) -> String {
    let what = if c.run_b.is_empty() {
        format!("within run {}", c.run_a)
    } else {
        format!("run {} (A) vs run {} (B)", c.run_a, c.run_b)
    };
    let partial = if c.partial {
        " — PARTIAL: a run has not ended, figures are of the results so far"
    } else {
        ""
    };
    format!(
        "Comparison {what}, alpha {} (Holm-corrected McNemar){partial}",
        c.alpha
    )
}

/// The comparison for a pull-request comment.
pub fn markdown(c: &v1::Comparison) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = format!("### {}\n\n", heading(c));
    let _ = writeln!(out, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(HEADERS.len()));
    for r in rows(c) {
        let cells: Vec<String> = r.iter().map(|s| cell(s)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

/// The comparison report in `format` (JSON Lines writes the JSON document).
pub fn render(format: Format, data: &ComparisonData) -> String {
    match format {
        Format::Json | Format::Jsonl => {
            serde_json::to_string_pretty(&document(&data.comparison))
                .expect("a JSON value serializes")
                + "\n"
        }
        Format::Markdown => markdown(&data.comparison),
        Format::Html => html(data),
        Format::Csv => csv(&data.comparison),
        Format::Junit => junit(&data.comparison),
    }
}

/// One row per compared pair.
pub fn csv(c: &v1::Comparison) -> String {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let header = [
        "a_run",
        "a_provider",
        "a_prompt",
        "b_run",
        "b_provider",
        "b_prompt",
        "n_pairs",
        "a_pass_rate",
        "b_pass_rate",
        "mcnemar_b",
        "mcnemar_c",
        "p_value",
        "p_value_adjusted",
        "score_diff",
        "score_diff_low",
        "score_diff_high",
        "latency_wilcoxon_p",
        "latency_median_diff_ms",
        "a_cost_usd",
        "b_cost_usd",
        "cost_diff_usd",
        "pairs_needed",
        "verdict",
    ];
    let _ = w.write_record(header);
    for p in &c.pairs {
        let (a, b) = (
            p.a.clone().unwrap_or_default(),
            p.b.clone().unwrap_or_default(),
        );
        let m = p.mcnemar.unwrap_or_default();
        let s = p.score_diff.unwrap_or_default();
        let _ = w.write_record([
            a.run_id,
            a.provider,
            a.prompt,
            b.run_id,
            b.provider,
            b.prompt,
            p.n_pairs.to_string(),
            p.a_pass_rate.to_string(),
            p.b_pass_rate.to_string(),
            m.b.to_string(),
            m.c.to_string(),
            m.p_value.to_string(),
            m.p_value_adjusted.to_string(),
            s.mean.to_string(),
            s.ci_low.to_string(),
            s.ci_high.to_string(),
            p.latency_wilcoxon_p
                .map(|p| p.to_string())
                .unwrap_or_default(),
            p.latency_median_diff_ms.to_string(),
            p.a_cost_usd.to_string(),
            p.b_cost_usd.to_string(),
            p.cost_diff_usd.to_string(),
            p.pairs_needed.to_string(),
            verdict(p.verdict).to_string(),
        ]);
    }
    String::from_utf8(w.into_inner().expect("writing to memory cannot fail"))
        .expect("CSV of UTF-8 fields is UTF-8")
}

/// One testcase per compared pair; a significant regression (B worse) is a
/// failure naming its figures, so a CI system shows the comparison as tests.
pub fn junit(c: &v1::Comparison) -> String {
    let esc = crate::render::xml_text;
    let worse = c
        .pairs
        .iter()
        .filter(|p| p.verdict == v1::Verdict::Worse as i32)
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{worse}\">",
        esc(&heading(c)),
        c.pairs.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"comparison\" tests=\"{}\" failures=\"{worse}\" errors=\"0\">",
        c.pairs.len()
    );
    for (p, row) in c.pairs.iter().zip(rows(c)) {
        let name = format!("{} vs {}", row[0], row[1]);
        let _ = write!(
            out,
            "    <testcase classname=\"gauntlet.compare\" name=\"{}\"",
            esc(&name)
        );
        if p.verdict == v1::Verdict::Worse as i32 {
            let _ = writeln!(
                out,
                ">\n      <failure message=\"{}\"/>\n    </testcase>",
                esc(&format!(
                    "B passes significantly less often: {} over {} pairs, Holm p {}",
                    row[3], row[2], row[5]
                ))
            );
        } else {
            out.push_str("/>\n");
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn verdict_class(v: i32) -> &'static str {
    match v1::Verdict::try_from(v) {
        Ok(v1::Verdict::Better) => "pass",
        Ok(v1::Verdict::Worse) => "fail",
        _ => "same",
    }
}

/// A self-contained page: both runs' identity and headline, a chart of the
/// pass rates of each pair, one of the score differences with their
/// intervals, and the verdicts table.
pub fn html(data: &ComparisonData) -> String {
    let c = &data.comparison;
    let title = |s: &v1::RunSummary| {
        if s.description.is_empty() {
            format!("run {}", s.run_id)
        } else {
            s.description.clone()
        }
    };
    let pairs: Vec<Value> = c
        .pairs
        .iter()
        .zip(rows(c))
        .map(|(p, row)| {
            context! {
                a => row[0], b => row[1], n => row[2], rates => row[3], bc => row[4],
                p => row[5], score => row[6], latency => row[7],
                cost => format!("{:+.4}", p.cost_diff_usd),
                verdict => row[8], class => verdict_class(p.verdict),
            }
        })
        .collect();
    let name = |i: usize, p: &v1::PairComparison| {
        let (a, b) = (arm_name(p.a.as_ref()), arm_name(p.b.as_ref()));
        if a == b {
            format!("{} {a}", i + 1)
        } else {
            format!("{} {a} → {b}", i + 1)
        }
    };
    let mut rates = Vec::new();
    for (i, p) in c.pairs.iter().enumerate() {
        rates.push(charts::Bar {
            label: format!("A · {}", name(i, p)),
            value: p.a_pass_rate,
            interval: None,
            light: true,
        });
        rates.push(charts::Bar {
            label: format!("B · {}", name(i, p)),
            value: p.b_pass_rate,
            interval: None,
            light: false,
        });
    }
    let diffs: Vec<charts::Bar> = c
        .pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = p.score_diff.unwrap_or_default();
            charts::Bar {
                label: name(i, p),
                value: s.mean,
                interval: Some((s.ci_low, s.ci_high)),
                light: false,
            }
        })
        .collect();
    let mut chart_list = Vec::new();
    if !rates.is_empty() {
        if let Some(svg) = charts::rates(&rates, "pass rate over the matched pairs") {
            chart_list.push(context! {
                id => "chart-compare-rates", title => "Pass rate of A and of B, per pair",
                svg => Value::from_safe_string(svg), note => "",
            });
        }
        if let Some(svg) = charts::diffs(&diffs, "mean score difference B − A") {
            chart_list.push(context! {
                id => "chart-compare-scores",
                title => "Score difference B − A with its paired bootstrap interval",
                svg => Value::from_safe_string(svg), note => "",
            });
        }
    }
    let worse = c
        .pairs
        .iter()
        .filter(|p| p.verdict == v1::Verdict::Worse as i32)
        .count();
    let better = c
        .pairs
        .iter()
        .filter(|p| p.verdict == v1::Verdict::Better as i32)
        .count();
    crate::render::html::render_template(
        "comparison.html",
        context! {
            title => heading(c),
            a_title => title(&data.a), a_id => c.run_a, a_rate => pct(data.a.pass_rate),
            b_title => data.b.as_ref().map(title), b_id => c.run_b,
            b_rate => data.b.as_ref().map(|b| pct(b.pass_rate)),
            alpha => c.alpha, partial => c.partial,
            worse => worse, better => better, compared => c.pairs.len(),
            pairs => pairs, charts => chart_list,
            css => Value::from_safe_string(CSS.to_owned()),
        },
    )
    .expect("the comparison template renders")
}
