//! The trend report: one suite's completed runs over time (GetTrends), per
//! provider and hour, day or week: pass rate with its 95 % interval, p95
//! latency and cost, as charts (HTML), a table (Markdown), a document
//! (JSON, `gauntlet.trends/v1`, as `gauntlet trends -o`) or rows (CSV). A trend has no test cases,
//! so there is no JUnit form.

use std::fmt::Write as _;

use chrono::DateTime;
use gauntlet_proto::v1;
use minijinja::{Value, context};
use serde_json::json;

use crate::render::{Format, charts, datetime, html::CSS, pct, range, rfc3339_text};

/// The version of the trend's JSON document (also what `gauntlet trends -o
/// FILE.json` writes).
pub const SCHEMA: &str = "gauntlet.trends/v1";

/// What a trend report shows: the trend, and the run it is as of.
pub struct TrendData {
    pub trends: v1::Trends,
    /// The suite's newest completed run when the report was asked for.
    pub run_id: String,
}

fn bucket_name(b: i32) -> &'static str {
    match v1::TrendBucket::try_from(b) {
        Ok(v1::TrendBucket::Hour) => "hour",
        Ok(v1::TrendBucket::Week) => "week",
        _ => "day",
    }
}

fn start_text(t: Option<&prost_types::Timestamp>, bucket: i32) -> String {
    datetime(t).map_or_else(String::new, |t| match bucket_name(bucket) {
        "hour" => t.format("%Y-%m-%d %H:00").to_string(),
        _ => t.format("%Y-%m-%d").to_string(),
    })
}

/// The trend report in `format`; JUnit has no trend form.
pub fn render(format: Format, data: &TrendData) -> Result<String, String> {
    Ok(match format {
        Format::Json | Format::Jsonl => {
            serde_json::to_string_pretty(&document(&data.trends)).expect("a JSON value serializes")
                + "\n"
        }
        Format::Markdown => markdown(data),
        Format::Html => html(data),
        Format::Csv => csv(&data.trends),
        Format::Junit => return Err("JUnit is for run and comparison reports".into()),
    })
}

/// The JSON document: the trend's window and one object per point.
pub fn document(t: &v1::Trends) -> serde_json::Value {
    let rfc = |ts: Option<&prost_types::Timestamp>| rfc3339_text(ts).unwrap_or_default();
    let points: Vec<_> = t
        .points
        .iter()
        .map(|p| {
            let i = p.pass_rate.unwrap_or_default();
            json!({
                "provider": p.provider,
                "start": rfc(p.start.as_ref()),
                "runs": p.runs,
                "total": p.total,
                "passed": p.passed,
                "pass_rate": {"estimate": i.estimate, "low": i.low, "high": i.high},
                "p95_latency_ms": p.p95_latency_ms,
                "cost_usd": p.cost_usd,
            })
        })
        .collect();
    json!({
        "schema": SCHEMA,
        "description": t.description,
        "label": t.label,
        "bucket": bucket_name(t.bucket),
        "since": rfc(t.since.as_ref()),
        "until": rfc(t.until.as_ref()),
        "points": points,
    })
}

/// One row per provider and bucket.
pub fn csv(t: &v1::Trends) -> String {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let _ = w.write_record([
        "provider",
        "start",
        "runs",
        "total",
        "passed",
        "pass_rate",
        "pass_rate_low",
        "pass_rate_high",
        "p95_latency_ms",
        "cost_usd",
    ]);
    for p in &t.points {
        let i = p.pass_rate.unwrap_or_default();
        let _ = w.write_record([
            p.provider.clone(),
            datetime(p.start.as_ref())
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            p.runs.to_string(),
            p.total.to_string(),
            p.passed.to_string(),
            i.estimate.to_string(),
            i.low.to_string(),
            i.high.to_string(),
            p.p95_latency_ms.to_string(),
            p.cost_usd.to_string(),
        ]);
    }
    String::from_utf8(w.into_inner().expect("writing to memory cannot fail"))
        .expect("CSV of UTF-8 fields is UTF-8")
}

/// A table per provider, for a pull-request comment or a wiki page.
pub fn markdown(data: &TrendData) -> String {
    let t = &data.trends;
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = format!(
        "# Trend: {}\n\nPer {}, completed runs, as of run `{}`.\n",
        cell(&t.description),
        bucket_name(t.bucket),
        data.run_id
    );
    let mut provider: Option<&str> = None;
    for p in &t.points {
        if provider != Some(p.provider.as_str()) {
            provider = Some(&p.provider);
            let _ = write!(
                out,
                "\n## {}\n\n| {} from | Runs | Results | Pass rate | 95 % CI | p95 ms | Cost $ |\n|---|---:|---:|---:|---:|---:|---:|\n",
                cell(&p.provider),
                bucket_name(t.bucket)
            );
        }
        let i = p.pass_rate.unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.0} | {:.4} |",
            start_text(p.start.as_ref(), t.bucket),
            p.runs,
            p.total,
            pct(i.estimate),
            range(&i),
            p.p95_latency_ms,
            p.cost_usd
        );
    }
    if t.points.is_empty() {
        out.push_str("\nNo completed run in this window.\n");
    }
    out
}

/// The series of one figure per provider, in the order providers come.
fn series(
    t: &v1::Trends,
    y: impl Fn(&v1::TrendPoint) -> (f64, Option<(f64, f64)>),
) -> Vec<charts::Series> {
    let mut out: Vec<charts::Series> = Vec::new();
    for p in &t.points {
        let x = p.start.as_ref().map_or(0.0, |s| s.seconds as f64);
        let (v, i) = y(p);
        match out.last_mut() {
            Some(s) if s.label == p.provider => s.points.push((x, v, i)),
            _ => out.push(charts::Series {
                label: p.provider.clone(),
                points: vec![(x, v, i)],
            }),
        }
    }
    out
}

/// A self-contained page: the window, a pass-rate line per provider with
/// its intervals, p95 latency and cost lines, and the table of points.
pub fn html(data: &TrendData) -> String {
    let t = &data.trends;
    // Ticks fall between buckets: each says its day and time.
    let x_label = |x: &f64| {
        DateTime::from_timestamp(*x as i64, 0)
            .map_or_else(String::new, |t| t.format("%m-%d %H:%M").to_string())
    };
    let mut chart_list = Vec::new();
    let mut push = |id: &str, title: &str, svg: Option<String>| {
        if let Some(svg) = svg {
            chart_list
                .push(context! { id => id, title => title, svg => Value::from_safe_string(svg) });
        }
    };
    push(
        "chart-trend-pass-rate",
        "Pass rate per provider (95 % Wilson interval)",
        charts::lines(
            &series(t, |p| {
                let i = p.pass_rate.unwrap_or_default();
                (i.estimate, Some((i.low, i.high)))
            }),
            "pass rate",
            true,
            &x_label,
        ),
    );
    push(
        "chart-trend-latency",
        "p95 latency per provider (ms)",
        charts::lines(
            &series(t, |p| (p.p95_latency_ms, None)),
            "p95 ms",
            false,
            &x_label,
        ),
    );
    push(
        "chart-trend-cost",
        "Cost per provider ($)",
        charts::lines(
            &series(t, |p| (p.cost_usd, None)),
            "cost $",
            false,
            &x_label,
        ),
    );
    let points: Vec<Value> = t
        .points
        .iter()
        .map(|p| {
            let i = p.pass_rate.unwrap_or_default();
            context! {
                provider => p.provider, start => start_text(p.start.as_ref(), t.bucket),
                runs => p.runs, total => p.total, rate => pct(i.estimate),
                interval => range(&i), p95 => format!("{:.0}", p.p95_latency_ms),
                cost => format!("{:.4}", p.cost_usd),
            }
        })
        .collect();
    let mut providers: Vec<&str> = t.points.iter().map(|p| p.provider.as_str()).collect();
    providers.sort_unstable();
    providers.dedup();
    let mut starts: Vec<i64> = t
        .points
        .iter()
        .filter_map(|p| p.start.as_ref().map(|s| s.seconds))
        .collect();
    starts.sort_unstable();
    starts.dedup();
    // Runs per bucket, counted once across providers.
    let mut runs_per_start: std::collections::BTreeMap<i64, u32> = Default::default();
    for p in &t.points {
        let s = p.start.as_ref().map_or(0, |s| s.seconds);
        let e = runs_per_start.entry(s).or_default();
        *e = (*e).max(p.runs);
    }
    crate::render::html::render_template(
        "trend.html",
        context! {
            title => format!("Trend: {}", t.description),
            suite => t.description, bucket => bucket_name(t.bucket),
            since => start_text(t.since.as_ref(), t.bucket),
            until => start_text(t.until.as_ref(), t.bucket),
            run_id => data.run_id,
            runs => runs_per_start.values().sum::<u32>(),
            providers => providers.len(), buckets => starts.len(),
            charts => chart_list, points => points,
            css => Value::from_safe_string(CSS.to_owned()),
        },
    )
    .expect("the trend template renders")
}
