//! The HTML report: one self-contained page (no external script, font or
//! image; a Content-Security-Policy lets only its own script run) with the
//! run's identity, the headline numbers, the provider × prompt table, the
//! results matrix and inline SVG charts.
//!
//! The page is laid out by two minijinja templates, `head.html` (written by
//! `begin`) and `tail.html` (by `finish`); between them, results go out as
//! they arrive as the matrix's rows, JSON in `<script type=
//! "application/json">` chunks that the page's script parses when a page of
//! the matrix needs them. A row is one test (and repetition), its cells the
//! provider × prompt results, which are adjacent in task order, so only the
//! row being filled is held. The charts come from the summary and from a
//! latency histogram counted as results pass; they are written last and
//! placed above the matrix by CSS.

use std::{
    borrow::Cow,
    io::{self, Write},
    sync::OnceLock,
};

use base64::Engine as _;
use gauntlet_proto::v1;
use minijinja::{Environment, Value, context};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{
    ResultSink,
    charts::{self, Bar, Point},
    interval, pct, result_status_name,
};

/// Matrix rows per JSON chunk: what the page parses at once.
pub(crate) const CHUNK_ROWS: usize = 200;
/// Bytes of an output kept in the page; the rest is cut with a marker.
pub(crate) const OUTPUT_KEPT: usize = 16 * 1024;
/// Bytes of a description, vars, reason or error kept in the page.
const TEXT_KEPT: usize = 4 * 1024;

/// Every report page's stylesheet.
pub(crate) const CSS: &str = include_str!("html/report.css");
const SCRIPT: &str = include_str!("html/report.js");

/// Upper bounds, in milliseconds, of the latency histogram's buckets; the
/// last bucket has none.
const LATENCY_BOUNDS: [u32; 11] = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 30_000];

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        // `.html` names turn on HTML auto-escaping for every value.
        env.add_template("layout.html", include_str!("html/layout.html"))
            .expect("layout.html parses");
        env.add_template("head.html", include_str!("html/head.html"))
            .expect("head.html parses");
        env.add_template("tail.html", include_str!("html/tail.html"))
            .expect("tail.html parses");
        env.add_template("comparison.html", include_str!("html/comparison.html"))
            .expect("comparison.html parses");
        env.add_template("trend.html", include_str!("html/trend.html"))
            .expect("trend.html parses");
        env.add_template("rollup.html", include_str!("html/rollup.html"))
            .expect("rollup.html parses");
        env
    })
}

/// The CSP source that lets the page's own script run, and no other.
fn script_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        format!(
            "sha256-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(SCRIPT))
        )
    })
}

/// `s` cut to at most `max` bytes (on a character boundary), with a marker
/// saying how much was left out.
pub(crate) fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}\n… [cut: {} of {} bytes shown; the JSON and CSV reports hold all of it]",
        &s[..end],
        end,
        s.len()
    ))
}

/// A JSON writer for text inside `<script>`: every `<` (which JSON only has
/// inside strings) is written `\u003c`, so no data can close the element.
struct ScriptSafe<'a>(&'a mut Vec<u8>);

impl Write for ScriptSafe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for part in buf.split_inclusive(|&b| b == b'<') {
            match part.split_last() {
                Some((b'<', head)) => {
                    self.0.extend_from_slice(head);
                    self.0.extend_from_slice(b"\\u003c");
                }
                _ => self.0.extend_from_slice(part),
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn to_script_json(out: &mut Vec<u8>, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(ScriptSafe(out), value).map_err(io::Error::other)
}

#[derive(Serialize)]
struct RowHead<'a> {
    t: u32,
    r: u32,
    d: Cow<'a, str>,
    v: Cow<'a, str>,
}

#[derive(Serialize)]
struct CellJson<'a> {
    /// Task index.
    i: u64,
    p: u32,
    q: u32,
    s: &'static str,
    o: Cow<'a, str>,
    sc: f64,
    #[serde(skip_serializing_if = "str::is_empty")]
    why: Cow<'a, str>,
    a: Vec<(&'a str, bool, Cow<'a, str>)>,
    ms: u32,
    #[serde(skip_serializing_if = "is_zero")]
    usd: f64,
    #[serde(skip_serializing_if = "str::is_empty")]
    e: Cow<'a, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    k: bool,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

pub(super) struct Html<W> {
    w: W,
    summary: Option<v1::RunSummary>,
    /// The row being filled: its (repeat, test), and its JSON so far.
    row: Option<(u32, u32)>,
    row_json: Vec<u8>,
    /// Rows written in the open chunk (0: none is open).
    in_chunk: usize,
    latency: [u64; LATENCY_BOUNDS.len() + 1],
}

impl<W: Write> Html<W> {
    pub(super) fn new(w: W) -> Self {
        Self {
            w,
            summary: None,
            row: None,
            row_json: Vec::new(),
            in_chunk: 0,
            latency: [0; LATENCY_BOUNDS.len() + 1],
        }
    }

    /// Writes the row being filled, opening a chunk first or closing a full
    /// one after.
    fn end_row(&mut self) -> io::Result<()> {
        if self.row.take().is_none() {
            return Ok(());
        }
        self.row_json.extend_from_slice(b"]}");
        if self.in_chunk == 0 {
            self.w
                .write_all(b"<script type=\"application/json\" class=\"gx-rows\">[")?;
        } else {
            self.w.write_all(b",\n")?;
        }
        self.w.write_all(&self.row_json)?;
        self.row_json.clear();
        self.in_chunk += 1;
        if self.in_chunk == CHUNK_ROWS {
            self.close_chunk()?;
        }
        Ok(())
    }

    fn close_chunk(&mut self) -> io::Result<()> {
        if self.in_chunk > 0 {
            self.w.write_all(b"]</script>\n")?;
            self.in_chunk = 0;
        }
        Ok(())
    }
}

fn title(s: &v1::RunSummary) -> &str {
    if s.description.is_empty() {
        "Gauntlet run"
    } else {
        &s.description
    }
}

fn group_name(g: &v1::GroupSummary) -> String {
    if g.prompt_label.is_empty() {
        g.provider_id.clone()
    } else {
        format!("{} / {}", g.provider_id, g.prompt_label)
    }
}

fn render(name: &str, ctx: Value) -> io::Result<String> {
    render_template(name, ctx).map_err(io::Error::other)
}

/// Renders one of the report templates.
pub(crate) fn render_template(name: &str, ctx: Value) -> Result<String, minijinja::Error> {
    templates().get_template(name).and_then(|t| t.render(ctx))
}

impl<W: Write> ResultSink for Html<W> {
    fn begin(&mut self, s: &v1::RunSummary) -> io::Result<()> {
        let latency = s.latency.unwrap_or_default();
        let groups: Vec<Value> = s
            .groups
            .iter()
            .map(|g| {
                let l = g.latency.unwrap_or_default();
                context! {
                    provider => g.provider_id, prompt => g.prompt_label,
                    pass_rate => pct(g.pass_rate),
                    interval => interval(g.pass_rate_interval.as_ref()),
                    passed => g.passed, failed => g.failed, errors => g.errors,
                    p50 => format!("{:.0}", l.p50_ms), p95 => format!("{:.0}", l.p95_ms),
                    p99 => format!("{:.0}", l.p99_ms),
                    tokens_in => g.tokens_in, tokens_out => g.tokens_out,
                    cost => format!("{:.4}", g.cost_usd),
                }
            })
            .collect();
        let cols: Vec<Value> = s
            .groups
            .iter()
            .map(|g| {
                context! {
                    p => g.provider_index, q => g.prompt_index,
                    provider => g.provider_id, prompt => g.prompt_label,
                }
            })
            .collect();
        let head = render(
            "head.html",
            context! {
                title => title(s),
                run_id => s.run_id,
                status => v1::RunStatus::label_of(s.status),
                created => super::utc_text(s.created_at.as_ref()),
                finished => super::utc_text(s.finished_at.as_ref()),
                label => s.label,
                trace_id => s.trace_id,
                partial => super::partial(s),
                completed => s.completed_tasks,
                total => s.total_tasks,
                pass_rate => pct(s.pass_rate),
                interval => interval(s.pass_rate_interval.as_ref()),
                passed => s.passed, failed => s.failed, errors => s.errors,
                p50 => format!("{:.0} ms", latency.p50_ms),
                p95 => format!("{:.0} ms", latency.p95_ms),
                tokens => format!("{} / {}", s.tokens_in, s.tokens_out),
                cost => format!("${:.4}", s.cost_usd),
                groups => groups,
                cols => cols,
                chunk_rows => CHUNK_ROWS,
                css => Value::from_safe_string(CSS.to_owned()),
                script_hash => script_hash(),
            },
        )?;
        self.w.write_all(head.as_bytes())?;
        self.summary = Some(s.clone());
        Ok(())
    }

    fn result(&mut self, r: &v1::Result) -> io::Result<()> {
        if r.status != v1::ResultStatus::Error as i32 {
            let bucket = LATENCY_BOUNDS
                .iter()
                .position(|&b| r.latency_ms < b)
                .unwrap_or(LATENCY_BOUNDS.len());
            self.latency[bucket] += 1;
        }
        let key = (r.repeat_index, r.test_index);
        if self.row != Some(key) {
            self.end_row()?;
            self.row = Some(key);
            to_script_json(
                &mut self.row_json,
                &RowHead {
                    t: r.test_index,
                    r: r.repeat_index,
                    d: clip(&r.test_description, TEXT_KEPT),
                    v: clip(&r.vars_json, TEXT_KEPT),
                },
            )?;
            // Reopen the object to append the cells.
            self.row_json.pop();
            self.row_json.extend_from_slice(b",\"c\":[");
        } else {
            self.row_json.push(b',');
        }
        to_script_json(
            &mut self.row_json,
            &CellJson {
                i: r.task_index,
                p: r.provider_index,
                q: r.prompt_index,
                s: result_status_name(r.status),
                o: clip(&r.output, OUTPUT_KEPT),
                sc: r.score,
                why: clip(&r.reason, TEXT_KEPT),
                a: r.assertions
                    .iter()
                    .map(|a| (a.r#type.as_str(), a.pass, clip(&a.reason, TEXT_KEPT)))
                    .collect(),
                ms: r.latency_ms,
                usd: r.cost_usd,
                e: clip(&r.error, TEXT_KEPT),
                k: r.cached,
            },
        )
    }

    fn finish(&mut self) -> io::Result<()> {
        self.end_row()?;
        self.close_chunk()?;
        let summary = self.summary.take().unwrap_or_default();
        let tail = render(
            "tail.html",
            context! {
                charts => chart_list(&summary, &self.latency),
                script => Value::from_safe_string(SCRIPT.to_owned()),
            },
        )?;
        self.w.write_all(tail.as_bytes())?;
        self.w.flush()
    }
}

/// The charts, each `{id, title, svg, note}`; a chart with nothing to show
/// is left out.
fn chart_list(s: &v1::RunSummary, latency: &[u64]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut push = |id: &str, title: &str, svg: Option<String>, note: String| {
        if let Some(svg) = svg {
            out.push(context! {
                id => id, title => title, svg => Value::from_safe_string(svg), note => note,
            });
        }
    };
    let cut = |n: usize| {
        if n > charts::MAX_BARS {
            format!("The first {} of {n} are drawn.", charts::MAX_BARS)
        } else {
            String::new()
        }
    };
    let rate_bar = |label: String, rate: f64, i: Option<&v1::Interval>| Bar {
        label,
        value: rate,
        interval: i.filter(|i| i.high > 0.0).map(|i| (i.low, i.high)),
        light: false,
    };

    if !s.groups.is_empty() {
        let bars: Vec<Bar> = s
            .groups
            .iter()
            .map(|g| rate_bar(group_name(g), g.pass_rate, g.pass_rate_interval.as_ref()))
            .collect();
        push(
            "chart-pass-rate",
            "Pass rate by provider × prompt (95 % Wilson interval)",
            charts::rates(&bars, "pass rate"),
            cut(bars.len()),
        );
    }
    if latency.iter().any(|&n| n > 0) {
        let label = |ms: u32| {
            if ms >= 1000 {
                format!("{}s", ms / 1000)
            } else {
                ms.to_string()
            }
        };
        let buckets: Vec<(String, u64)> = latency
            .iter()
            .enumerate()
            .map(|(i, &n)| match LATENCY_BOUNDS.get(i) {
                Some(&high) => (format!("<{}", label(high)), n),
                None => (format!("≥{}", label(LATENCY_BOUNDS[i - 1])), n),
            })
            .collect();
        push(
            "chart-latency",
            "Latency distribution (errors left out)",
            charts::histogram(&buckets, "latency (ms, s)", "results"),
            String::new(),
        );
    }
    if !s.groups.is_empty() {
        let points: Vec<Point> = s
            .groups
            .iter()
            .map(|g| Point {
                label: group_name(g),
                x: g.cost_usd,
                y: g.pass_rate,
            })
            .collect();
        push(
            "chart-cost",
            "Cost against pass rate, per provider × prompt",
            charts::scatter(&points, "cost $"),
            String::new(),
        );
    }
    let metrics: Vec<Bar> = s
        .assertion_types
        .iter()
        .chain(&s.metrics)
        .map(|m| {
            let i = m.pass_rate.unwrap_or_default();
            rate_bar(m.name.clone(), i.estimate, m.pass_rate.as_ref())
        })
        .collect();
    if !metrics.is_empty() {
        push(
            "chart-metrics",
            "Pass rate per assertion type and metric (95 % Wilson interval)",
            charts::rates(&metrics, "pass rate"),
            cut(metrics.len()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_a_character_boundary_and_says_how_much() {
        assert_eq!(clip("short", 10), "short");
        let s = "é".repeat(10); // 20 bytes
        let c = clip(&s, 5);
        assert!(c.starts_with("éé\n… [cut: 4 of 20 bytes shown"), "{c}");
    }

    #[test]
    fn script_json_cannot_close_its_element() {
        let mut out = Vec::new();
        to_script_json(&mut out, &"</script><!-- <b>").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains('<'), "{text}");
        assert_eq!(
            serde_json::from_str::<String>(&text).unwrap(),
            "</script><!-- <b>"
        );
    }

    #[test]
    fn the_policy_hash_is_of_the_script_the_page_carries() {
        assert!(script_hash().starts_with("sha256-"));
        assert_eq!(script_hash().len(), "sha256-".len() + 44);
    }
}
