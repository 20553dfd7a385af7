//! `gauntlet compare A [B]`: the analytics service's comparison as a table,
//! a JSON document (`gauntlet.compare/v1`, one object per compared pair) or
//! Markdown for a pull-request comment, with exit code 100 on a
//! significant regression for CI gates.

use std::{fmt::Write as _, path::PathBuf};

use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1;

use crate::{client, target::Target};

/// The exit code of a significant regression under `--fail-on-regression`.
pub const REGRESSION_EXIT: i32 = 100;

use gauntlet_reports::comparison::{HEADERS, heading, rows};
pub use gauntlet_reports::comparison::{SCHEMA, document, markdown, p_text};

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

/// `--by` as the API names it.
pub(crate) fn by_proto(by: Option<By>) -> v1::CompareBy {
    match by {
        None => v1::CompareBy::Unspecified,
        Some(By::Provider) => v1::CompareBy::Provider,
        Some(By::Prompt) => v1::CompareBy::Prompt,
    }
}

pub fn parse_alpha(text: &str) -> Result<f64, String> {
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
        by: by_proto(args.by) as i32,
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
