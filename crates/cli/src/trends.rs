//! `gauntlet trends SUITE`: one suite's completed runs over time, per
//! provider and hour, day or week (the analytics service's GetTrends), as a
//! table or a JSON document (`gauntlet.trends/v1`).

use std::{fmt::Write as _, path::PathBuf};

use anyhow::Context;
use gauntlet_config::GauntletConfig;
use gauntlet_proto::{Timestamp, v1};

use crate::{client, output::pct, suite_file, target::Target};

/// The JSON document `trends -o FILE.json` writes: the trend report's.
pub use gauntlet_reports::trend::{SCHEMA, document};

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Bucket {
    Hour,
    Day,
    Week,
}

impl Bucket {
    pub fn proto(self) -> v1::TrendBucket {
        match self {
            Bucket::Hour => v1::TrendBucket::Hour,
            Bucket::Day => v1::TrendBucket::Day,
            Bucket::Week => v1::TrendBucket::Week,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct TrendsArgs {
    /// The suite: a suite file (its description is used) or the
    /// description itself. Empty ("") with --label: every suite's runs
    /// with that label.
    pub suite: String,
    /// Only runs with this label.
    #[arg(long)]
    pub label: Option<String>,
    /// Only this provider (its label, else its id).
    #[arg(long)]
    pub provider: Option<String>,
    #[arg(long, value_enum, default_value = "day")]
    pub bucket: Bucket,
    /// From when: an RFC 3339 time, or a span back from now (36h, 14d,
    /// 8w). Default: 30 buckets back.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Also write the points to FILE.json (schema gauntlet.trends/v1).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub target: Target,
}

fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let bad = || format!("`{text}` is neither an RFC 3339 time nor a span like 36h, 14d or 8w");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let span = match unit {
        "h" => chrono::Duration::try_hours(n),
        "d" => chrono::Duration::try_days(n),
        "w" => chrono::Duration::try_weeks(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(chrono::Utc::now() - span)
}

/// The description SUITE names: a file's, else SUITE itself.
/// The description runs of `suite` carry: a suite file's, or `suite`
/// itself.
pub fn description(suite: &str) -> anyhow::Result<String> {
    let path = std::path::Path::new(suite);
    if !path.is_file() {
        return Ok(suite.to_owned());
    }
    let file = suite_file::open(path, suite_file::Filters::default())?;
    let header = file.tests()?.header;
    header
        .description
        .filter(|d| !d.is_empty())
        .with_context(|| {
            format!(
                "{suite}: the suite has no description, so its runs cannot be told from others; give it one, or use --label"
            )
        })
}

pub async fn trends(config: &GauntletConfig, args: &TrendsArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.output
        && path.extension().and_then(|e| e.to_str()) != Some("json")
    {
        anyhow::bail!("{}: trends are written as .json", path.display());
    }
    let request = v1::GetTrendsRequest {
        description: description(&args.suite)?,
        label: args.label.clone().unwrap_or_default(),
        provider: args.provider.clone().unwrap_or_default(),
        bucket: args.bucket.proto() as i32,
        since: args
            .since
            .map(|t| gauntlet_proto::timestamp(t.timestamp(), t.timestamp_subsec_nanos())),
        until: None,
    };
    let trends = args
        .target
        .with_gateway(config, async |gateway| {
            Ok(gateway
                .analytics
                .get_trends(request)
                .await
                .map_err(|s| client::status_message("trends", &s))?
                .into_inner())
        })
        .await?;
    print!("{}", table(&trends));
    if let Some(path) = &args.output {
        let text = serde_json::to_string_pretty(&document(&trends))? + "\n";
        crate::output::write_file(path, &text)?;
    }
    Ok(())
}

fn time(t: Option<&Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn what(t: &v1::Trends) -> String {
    match (t.description.is_empty(), t.label.is_empty()) {
        (false, false) => format!("\"{}\" labelled {}", t.description, t.label),
        (false, true) => format!("\"{}\"", t.description),
        _ => format!("runs labelled {}", t.label),
    }
}

/// The points as a text table, a provider's buckets in time order.
pub fn table(t: &v1::Trends) -> String {
    let mut out = format!(
        "Trends of {} from {} to {}\n",
        what(t),
        time(t.since.as_ref()),
        time(t.until.as_ref())
    );
    if t.points.is_empty() {
        out += "no completed runs in that time\n";
        return out;
    }
    let rows: Vec<[String; 6]> = t
        .points
        .iter()
        .map(|p| {
            let i = p.pass_rate.unwrap_or_default();
            [
                p.provider.clone(),
                time(p.start.as_ref()),
                p.runs.to_string(),
                format!("{}/{}", p.passed, p.total),
                format!(
                    "{} [{:.1}–{:.1}]",
                    pct(i.estimate),
                    100.0 * i.low,
                    100.0 * i.high
                ),
                format!("{:.0} ms  ${:.4}", p.p95_latency_ms, p.cost_usd),
            ]
        })
        .collect();
    let headers = [
        "provider",
        "from",
        "runs",
        "passed",
        "pass rate [95% CI]",
        "p95 · cost",
    ];
    let mut widths = headers.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&headers.map(String::from));
    for r in &rows {
        line(r);
    }
    out
}
