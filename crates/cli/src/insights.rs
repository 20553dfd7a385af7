//! `gauntlet insights RUN`: the analytics service's GetInsights as text or
//! JSON (`gauntlet.insights/v1`): which provider to use and why, flaky
//! cases, cases failing everywhere, latency outliers.

use std::{fmt::Write as _, path::PathBuf};

use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1;
use serde_json::json;

use crate::{
    client,
    compare::{p_text, parse_alpha},
    output::{clip, pct},
    target::Target,
};

/// The version of the JSON document `insights -o FILE.json` writes.
pub const SCHEMA: &str = "gauntlet.insights/v1";

/// Cases printed per kind (the file lists what the service sent).
const PRINTED: usize = 10;

#[derive(clap::Args, Debug)]
pub struct InsightsArgs {
    pub run: String,
    /// Significance level of "not significantly worse than the best".
    #[arg(long, default_value_t = 0.05, value_parser = parse_alpha)]
    pub alpha: f64,
    /// Cases listed per kind in the output file.
    #[arg(long, default_value_t = 20)]
    pub max_listed: u32,
    /// Also write the insights to FILE.json (schema gauntlet.insights/v1).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

pub async fn insights(config: &GauntletConfig, args: &InsightsArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.output
        && path.extension().and_then(|e| e.to_str()) != Some("json")
    {
        anyhow::bail!("{}: insights are written as .json", path.display());
    }
    let request = v1::GetInsightsRequest {
        run_id: args.run.clone(),
        alpha: args.alpha,
        max_listed: args.max_listed,
    };
    let found = args
        .target
        .with_gateway(config, async |gateway| {
            Ok(gateway
                .analytics
                .get_insights(request)
                .await
                .map_err(|s| client::status_message("insights", &s))?
                .into_inner())
        })
        .await?;
    print!("{}", text(&found));
    if let Some(path) = &args.output {
        let body = serde_json::to_string_pretty(&document(&found))? + "\n";
        crate::output::write_file(path, &body)?;
    }
    Ok(())
}

fn case(test: u32, description: &str) -> String {
    if description.is_empty() {
        format!("test {test}")
    } else {
        format!("test {test}: {}", clip(description, 60))
    }
}

fn more(out: &mut String, count: u64, shown: usize) {
    if count as usize > shown {
        let _ = writeln!(out, "  … and {} more", count as usize - shown);
    }
}

/// What the terminal shows.
pub fn text(i: &v1::Insights) -> String {
    let mut out = format!(
        "Insights of run {}{}\n",
        i.run_id,
        if i.partial {
            " — PARTIAL: the run has not ended"
        } else {
            ""
        }
    );
    if !i.recommended_provider.is_empty() {
        let _ = writeln!(out, "recommended: {}", i.recommendation);
        for s in &i.providers {
            let r = s.pass_rate.unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}{}: {} [{:.1}–{:.1}] of {}, ${:.4}, vs best p (Holm) {}{}",
                if s.recommended { "* " } else { "  " },
                clip(&s.provider, 40),
                pct(r.estimate),
                100.0 * r.low,
                100.0 * r.high,
                s.total,
                s.cost_usd,
                p_text(Some(s.p_vs_best)),
                if s.significantly_worse {
                    "  ← significantly worse"
                } else {
                    ""
                },
            );
        }
    }
    let _ = writeln!(out, "flaky (repeats disagree): {}", i.flaky_count);
    for c in i.flaky.iter().take(PRINTED) {
        let _ = writeln!(
            out,
            "  {} ({} · {}): passed {} of {}",
            case(c.test_index, &c.description),
            clip(&c.provider, 30),
            clip(&c.prompt, 30),
            c.passed,
            c.repeats
        );
    }
    more(&mut out, i.flaky_count, i.flaky.len().min(PRINTED));
    let _ = writeln!(
        out,
        "failing on every provider and prompt: {}",
        i.failing_everywhere_count
    );
    for c in i.failing_everywhere.iter().take(PRINTED) {
        let _ = writeln!(
            out,
            "  {} ({} results)",
            case(c.test_index, &c.description),
            c.results
        );
    }
    more(
        &mut out,
        i.failing_everywhere_count,
        i.failing_everywhere.len().min(PRINTED),
    );
    let _ = writeln!(
        out,
        "latency outliers (> Q3 + 3 × IQR): {}",
        i.latency_outlier_count
    );
    for c in i.latency_outliers.iter().take(PRINTED) {
        let _ = writeln!(
            out,
            "  {} ({}): {:.0} ms, fence {:.0} ms",
            case(c.test_index, &c.description),
            clip(&c.provider, 30),
            c.latency_ms,
            c.fence_ms
        );
    }
    more(
        &mut out,
        i.latency_outlier_count,
        i.latency_outliers.len().min(PRINTED),
    );
    out
}

/// The insights file.
pub fn document(i: &v1::Insights) -> serde_json::Value {
    let providers: Vec<_> = i
        .providers
        .iter()
        .map(|s| {
            let r = s.pass_rate.unwrap_or_default();
            json!({
                "provider": s.provider,
                "total": s.total,
                "passed": s.passed,
                "pass_rate": {"estimate": r.estimate, "low": r.low, "high": r.high},
                "cost_usd": s.cost_usd,
                "p_vs_best": s.p_vs_best,
                "significantly_worse": s.significantly_worse,
                "recommended": s.recommended,
            })
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "run_id": i.run_id,
        "partial": i.partial,
        "alpha": i.alpha,
        "recommended_provider": i.recommended_provider,
        "recommendation": i.recommendation,
        "providers": providers,
        "flaky_count": i.flaky_count,
        "flaky": i.flaky.iter().map(|c| json!({
            "test_index": c.test_index, "description": c.description, "provider": c.provider,
            "prompt": c.prompt, "passed": c.passed, "repeats": c.repeats,
        })).collect::<Vec<_>>(),
        "failing_everywhere_count": i.failing_everywhere_count,
        "failing_everywhere": i.failing_everywhere.iter().map(|c| json!({
            "test_index": c.test_index, "description": c.description, "results": c.results,
        })).collect::<Vec<_>>(),
        "latency_outlier_count": i.latency_outlier_count,
        "latency_outliers": i.latency_outliers.iter().map(|c| json!({
            "test_index": c.test_index, "description": c.description, "provider": c.provider,
            "prompt": c.prompt, "repeat_index": c.repeat_index, "latency_ms": c.latency_ms,
            "fence_ms": c.fence_ms,
        })).collect::<Vec<_>>(),
    })
}
