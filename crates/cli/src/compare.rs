//! `gauntlet compare A [B]`: the analytics service's comparison as a table,
//! a JSON document (`gauntlet.compare/v1`, one object per compared pair) or
//! Markdown for a pull-request comment, with exit code 100 on a
//! significant regression for CI gates.

use std::{fmt::Write as _, path::PathBuf};

use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1;
use serde_json::json;

use crate::{
    client,
    output::{clip, pct},
    target::Target,
};

/// The exit code of a significant regression under `--fail-on-regression`.
pub const REGRESSION_EXIT: i32 = 100;

/// The version of the JSON document `compare -o FILE.json` writes.
pub const SCHEMA: &str = "gauntlet.compare/v1";

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum By {
    Provider,
    Prompt,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// The baseline run.
    pub run_a: String,
    /// The candidate run. Without it, the providers (or prompts, with
    /// --by prompt) of RUN_A are compared with each other.
    pub run_b: Option<String>,
    /// Compare per provider (over all prompts) or per prompt (over all
    /// providers). Default: two runs per provider × prompt; one run per
    /// provider.
    #[arg(long, value_enum)]
    pub by: Option<By>,
    /// Significance level, after Holm's correction across the pairs.
    #[arg(long, default_value_t = 0.05, value_parser = parse_alpha)]
    pub alpha: f64,
    /// Seed of the score bootstrap (the same seed, the same intervals).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Exit 100 when any pair is significantly worse on B than on A.
    #[arg(long)]
    pub fail_on_regression: bool,
    /// Also write the comparison to FILE: .json (schema gauntlet.compare/v1)
    /// or .md.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

pub(crate) fn parse_alpha(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(a) if a > 0.0 && a < 1.0 => Ok(a),
        _ => Err(format!("`{text}` is not a significance level in (0, 1)")),
    }
}

pub async fn compare(config: &GauntletConfig, args: &CompareArgs) -> anyhow::Result<i32> {
    // Checked before anything is asked: a typo costs no comparison.
    let format = match &args.output {
        Some(path) => Some(Format::of(path)?),
        None => None,
    };
    let request = v1::CompareRunsRequest {
        run_a: args.run_a.clone(),
        run_b: args.run_b.clone().unwrap_or_default(),
        by: match args.by {
            None => v1::CompareBy::Unspecified,
            Some(By::Provider) => v1::CompareBy::Provider,
            Some(By::Prompt) => v1::CompareBy::Prompt,
        } as i32,
        alpha: args.alpha,
        seed: args.seed,
    };
    let comparison = args
        .target
        .with_gateway(config, async |gateway| {
            Ok(gateway
                .analytics
                .compare_runs(request)
                .await
                .map_err(|s| client::status_message("compare", &s))?
                .into_inner())
        })
        .await?;
    print!("{}", table(&comparison));
    if let (Some(path), Some(format)) = (&args.output, format) {
        let text = match format {
            Format::Json => serde_json::to_string_pretty(&document(&comparison))? + "\n",
            Format::Markdown => markdown(&comparison),
        };
        crate::output::write_file(path, &text)?;
    }
    let regressed = comparison
        .pairs
        .iter()
        .any(|p| p.verdict == v1::Verdict::Worse as i32);
    Ok(if regressed && args.fail_on_regression {
        REGRESSION_EXIT
    } else {
        0
    })
}

#[derive(Clone, Copy)]
pub(crate) enum Format {
    Json,
    Markdown,
}

impl Format {
    pub(crate) fn of(path: &std::path::Path) -> anyhow::Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Ok(Format::Json),
            Some("md") => Ok(Format::Markdown),
            _ => anyhow::bail!(
                "{}: cannot tell the format from the extension (use .json or .md)",
                path.display()
            ),
        }
    }
}

fn verdict(v: i32) -> &'static str {
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
fn arm_name(arm: Option<&v1::Arm>) -> String {
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

pub(crate) fn p_text(p: Option<f64>) -> String {
    match p {
        None => "-".into(),
        Some(p) if p < 0.0001 => "<0.0001".into(),
        Some(p) => format!("{p:.4}"),
    }
}

/// One row per pair, as printed and as in Markdown.
fn rows(c: &v1::Comparison) -> Vec<[String; 9]> {
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

const HEADERS: [&str; 9] = [
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

fn heading(c: &v1::Comparison) -> String {
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

/// The comparison as a text table.
pub fn table(c: &v1::Comparison) -> String {
    let rows = rows(c);
    let mut widths = HEADERS.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = heading(c) + "\n";
    let line = |cells: &[String], out: &mut String| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&HEADERS.map(String::from), &mut out);
    for r in &rows {
        line(r, &mut out);
    }
    out
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
