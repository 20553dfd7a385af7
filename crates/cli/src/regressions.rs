//! `gauntlet regressions RUN` and `gauntlet run --baseline`: the analytics
//! service's DetectRegressions as text, JSON (`gauntlet.regressions/v1`) or
//! Markdown: the comparison with the baseline per provider × prompt, the
//! cases that flipped, and the assertion types and metrics that moved.

use std::{fmt::Write as _, path::PathBuf};

use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1;
use serde_json::json;

use crate::{
    client,
    compare::{self, Format, REGRESSION_EXIT, p_text, parse_alpha},
    output::{clip, pct},
    target::Target,
};

/// The version of the JSON document `regressions -o FILE.json` writes.
pub const SCHEMA: &str = "gauntlet.regressions/v1";

/// Flipped cases printed per direction (files list what the service sent).
const PRINTED: usize = 10;

#[derive(clap::Args, Debug)]
pub struct RegressionsArgs {
    /// The run to check.
    pub run: String,
    /// The baseline run. Default: the newest completed run created before
    /// RUN whose suite has the same description.
    #[arg(long, value_name = "RUN_ID")]
    pub baseline: Option<String>,
    /// Significance level, after Holm's correction.
    #[arg(long, default_value_t = 0.05, value_parser = parse_alpha)]
    pub alpha: f64,
    /// Seed of the score bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Flipped cases listed per direction in the output file.
    #[arg(long, default_value_t = 100)]
    pub max_listed: u32,
    /// Exit 100 on a regression: a provider × prompt significantly worse,
    /// or an assertion type or metric passing significantly less often.
    #[arg(long)]
    pub fail_on_regression: bool,
    /// Also write the findings to FILE: .json (schema
    /// gauntlet.regressions/v1) or .md.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

pub async fn regressions(config: &GauntletConfig, args: &RegressionsArgs) -> anyhow::Result<i32> {
    let format = match &args.output {
        Some(path) => Some(Format::of(path)?),
        None => None,
    };
    let request = v1::DetectRegressionsRequest {
        run_id: args.run.clone(),
        baseline_run_id: args.baseline.clone().unwrap_or_default(),
        alpha: args.alpha,
        seed: args.seed,
        max_listed: args.max_listed,
    };
    let found = args
        .target
        .with_gateway(config, async |gateway| detect(gateway, request).await)
        .await?;
    print!("{}", text(&found));
    if let (Some(path), Some(format)) = (&args.output, format) {
        let body = match format {
            Format::Json => serde_json::to_string_pretty(&document(&found))? + "\n",
            Format::Markdown => markdown(&found),
        };
        crate::output::write_file(path, &body)?;
    }
    Ok(if found.regressed && args.fail_on_regression {
        REGRESSION_EXIT
    } else {
        0
    })
}

/// Asks the gateway.
pub async fn detect(
    gateway: &mut client::Gateway,
    request: v1::DetectRegressionsRequest,
) -> anyhow::Result<v1::Regressions> {
    Ok(gateway
        .analytics
        .detect_regressions(request)
        .await
        .map_err(|s| client::status_message("regressions", &s))?
        .into_inner())
}

fn rate(i: Option<&v1::Interval>) -> f64 {
    i.map_or(0.0, |i| i.estimate)
}

fn case_line(c: &v1::FlippedCase) -> String {
    let mut where_ = vec![clip(&c.provider, 30)];
    if !c.prompt.is_empty() {
        where_.push(clip(&c.prompt, 40));
    }
    if c.repeat_index > 0 {
        where_.push(format!("repeat {}", c.repeat_index));
    }
    let name = if c.description.is_empty() {
        format!("test {}", c.test_index)
    } else {
        format!("test {}: {}", c.test_index, clip(&c.description, 60))
    };
    format!("{name} ({})", where_.join(" · "))
}

fn shift_line(s: &v1::MetricShift) -> String {
    let what = if s.kind == "metric" {
        format!("metric {}", s.name)
    } else {
        s.name.clone()
    };
    let mark = if s.significant {
        "  ← significant"
    } else {
        ""
    };
    format!(
        "{what}: {} → {} (n {} → {}), p (Holm) {}{mark}",
        pct(rate(s.baseline_pass_rate.as_ref())),
        pct(rate(s.pass_rate.as_ref())),
        s.baseline_total,
        s.total,
        p_text(Some(s.p_value_adjusted)),
    )
}

/// What the terminal shows.
pub fn text(r: &v1::Regressions) -> String {
    let mut out = r
        .comparison
        .as_ref()
        .map(compare::table)
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "flipped: {} pass → fail, {} fail → pass",
        r.pass_to_fail_count, r.fail_to_pass_count
    );
    for (label, list, count) in [
        ("pass → fail", &r.pass_to_fail, r.pass_to_fail_count),
        ("fail → pass", &r.fail_to_pass, r.fail_to_pass_count),
    ] {
        for c in list.iter().take(PRINTED) {
            let _ = writeln!(out, "  {label}: {}", case_line(c));
        }
        if count as usize > PRINTED.min(list.len()) {
            let _ = writeln!(
                out,
                "  … and {} more {label}",
                count as usize - PRINTED.min(list.len())
            );
        }
    }
    if !r.metrics.is_empty() {
        let _ = writeln!(out, "assertions and metrics, baseline → run:");
        for s in &r.metrics {
            let _ = writeln!(out, "  {}", shift_line(s));
        }
    }
    let _ = writeln!(
        out,
        "{}",
        if r.regressed {
            "verdict: REGRESSION"
        } else {
            "verdict: no significant regression"
        }
    );
    out
}

fn interval(i: Option<&v1::Interval>) -> serde_json::Value {
    let i = i.copied().unwrap_or_default();
    json!({"estimate": i.estimate, "low": i.low, "high": i.high})
}

/// The regressions file.
pub fn document(r: &v1::Regressions) -> serde_json::Value {
    let cases = |list: &[v1::FlippedCase]| {
        list.iter()
            .map(|c| {
                json!({
                    "test_index": c.test_index,
                    "description": c.description,
                    "provider": c.provider,
                    "prompt": c.prompt,
                    "repeat_index": c.repeat_index,
                    "baseline_score": c.baseline_score,
                    "score": c.score,
                })
            })
            .collect::<Vec<_>>()
    };
    let metrics: Vec<_> = r
        .metrics
        .iter()
        .map(|s| {
            json!({
                "kind": s.kind,
                "name": s.name,
                "baseline_pass_rate": interval(s.baseline_pass_rate.as_ref()),
                "pass_rate": interval(s.pass_rate.as_ref()),
                "baseline_total": s.baseline_total,
                "total": s.total,
                "p_value": s.p_value,
                "p_value_adjusted": s.p_value_adjusted,
                "significant": s.significant,
            })
        })
        .collect();
    let mut comparison = r
        .comparison
        .as_ref()
        .map(compare::document)
        .unwrap_or_default();
    if let Some(c) = comparison.as_object_mut() {
        c.remove("schema");
    }
    json!({
        "schema": SCHEMA,
        "run_id": r.run_id,
        "baseline_run_id": r.baseline_run_id,
        "alpha": r.alpha,
        "partial": r.partial,
        "regressed": r.regressed,
        "comparison": comparison,
        "pass_to_fail_count": r.pass_to_fail_count,
        "fail_to_pass_count": r.fail_to_pass_count,
        "pass_to_fail": cases(&r.pass_to_fail),
        "fail_to_pass": cases(&r.fail_to_pass),
        "metrics": metrics,
    })
}

/// The findings for a pull-request comment.
pub fn markdown(r: &v1::Regressions) -> String {
    let mut out = r
        .comparison
        .as_ref()
        .map(compare::markdown)
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\n**{}** — {} pass → fail, {} fail → pass\n",
        if r.regressed {
            "Regression"
        } else {
            "No significant regression"
        },
        r.pass_to_fail_count,
        r.fail_to_pass_count
    );
    for c in r.pass_to_fail.iter().take(PRINTED) {
        let _ = writeln!(out, "- ❌ {}", case_line(c).replace('|', "\\|"));
    }
    for c in r.fail_to_pass.iter().take(PRINTED) {
        let _ = writeln!(out, "- ✅ {}", case_line(c).replace('|', "\\|"));
    }
    if !r.metrics.is_empty() {
        out += "\n| assertion / metric | baseline | run | p (Holm) | significant |\n|---|---|---|---|---|\n";
        for s in &r.metrics {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                if s.kind == "metric" {
                    format!("metric {}", s.name)
                } else {
                    s.name.clone()
                }
                .replace('|', "\\|"),
                pct(rate(s.baseline_pass_rate.as_ref())),
                pct(rate(s.pass_rate.as_ref())),
                p_text(Some(s.p_value_adjusted)),
                if s.significant { "yes" } else { "no" },
            );
        }
    }
    out
}
