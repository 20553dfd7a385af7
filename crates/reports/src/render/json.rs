//! The JSON report (one pretty-printed document) and JSON Lines (one
//! compact object per result). Both encode a result with [`ResultJson`].
//!
//! The JSON document is written the way `serde_json`'s pretty printer lays
//! out an object, key by key in the map's order, with the `results` array
//! streamed in place: the summary's fields before `results` are written by
//! `begin`, the ones after it are kept (they are small) for `finish`.

use std::io::{self, Write};

use gauntlet_proto::v1;
use serde_json::{Map, Value, json};

use super::{ResultSink, result_status_name};

const RESULTS: &str = "results";

/// The version of the JSON report's layout, its `schema` field; see
/// `docs/report-json.md`. A change that removes or retypes a field gets a
/// new version; new fields do not.
pub const SCHEMA: &str = "gauntlet.report/v1";

fn latency_json(l: Option<v1::LatencyStats>) -> Value {
    let l = l.unwrap_or_default();
    json!({"p50_ms": l.p50_ms, "p95_ms": l.p95_ms, "p99_ms": l.p99_ms, "mean_ms": l.mean_ms, "max_ms": l.max_ms})
}

/// A result as the JSON report and JSON Lines write it. Its fields are in
/// alphabetical order, the order a document built with `serde_json::json!`
/// has (and this one had before it was a struct): written straight from
/// the result, with no intermediate tree.
#[derive(serde::Serialize)]
struct ResultJson<'a> {
    assertions: Vec<AssertionJson<'a>>,
    cached: bool,
    cost_usd: f64,
    description: &'a str,
    error: &'a str,
    latency_ms: u32,
    output: &'a str,
    prompt: &'a str,
    prompt_index: u32,
    provider: &'a str,
    reason: &'a str,
    repeat_index: u32,
    score: f64,
    status: &'static str,
    task_index: u64,
    test_index: u32,
    tokens_in: u32,
    tokens_out: u32,
    trace_id: &'a str,
    /// Parsed, so its keys are sorted and it is laid out like the rest.
    vars: Value,
}

#[derive(serde::Serialize)]
struct AssertionJson<'a> {
    pass: bool,
    reason: &'a str,
    score: f64,
    #[serde(rename = "type")]
    kind: &'a str,
}

fn result_json(r: &v1::Result) -> ResultJson<'_> {
    ResultJson {
        assertions: r
            .assertions
            .iter()
            .map(|a| AssertionJson {
                pass: a.pass,
                reason: &a.reason,
                score: a.score,
                kind: &a.r#type,
            })
            .collect(),
        cached: r.cached,
        cost_usd: r.cost_usd,
        description: &r.test_description,
        error: &r.error,
        latency_ms: r.latency_ms,
        output: &r.output,
        prompt: &r.rendered_prompt,
        prompt_index: r.prompt_index,
        provider: &r.provider_id,
        reason: &r.reason,
        repeat_index: r.repeat_index,
        score: r.score,
        status: result_status_name(r.status),
        task_index: r.task_index,
        test_index: r.test_index,
        tokens_in: r.tokens_in,
        tokens_out: r.tokens_out,
        trace_id: &r.trace_id,
        vars: serde_json::from_str::<Value>(&r.vars_json).unwrap_or(Value::Null),
    }
}

/// The document's fields, `results` a placeholder.
fn summary_json(s: &v1::RunSummary) -> Map<String, Value> {
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
    let doc = json!({
        "schema": SCHEMA,
        "run_id": s.run_id,
        "description": s.description,
        "label": s.label,
        "trace_id": s.trace_id,
        "created_at": super::rfc3339(s.created_at.as_ref()),
        "finished_at": super::rfc3339(s.finished_at.as_ref()),
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
        "results": Value::Null,
    });
    match doc {
        Value::Object(map) => map,
        _ => unreachable!("json! of braces is an object"),
    }
}

/// Passes bytes through, following every newline with `indent`: pretty JSON
/// nested one level deeper. JSON strings escape their newlines, so every
/// newline the pretty printer writes is layout.
struct Indented<'a, W> {
    w: &'a mut W,
    indent: &'static [u8],
}

impl<W: Write> Write for Indented<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(at) = rest.iter().position(|&b| b == b'\n') {
            self.w.write_all(&rest[..=at])?;
            self.w.write_all(self.indent)?;
            rest = &rest[at + 1..];
        }
        self.w.write_all(rest)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn pretty_at<W: Write>(
    w: &mut W,
    indent: &'static [u8],
    value: &impl serde::Serialize,
) -> io::Result<()> {
    serde_json::to_writer_pretty(Indented { w, indent }, value).map_err(io::Error::from)
}

/// Writes `  "key": ` as the `first` or a following member of the
/// top-level object.
fn key<W: Write>(w: &mut W, first: bool, name: &str) -> io::Result<()> {
    w.write_all(if first { b"\n  " } else { b",\n  " })?;
    serde_json::to_writer(&mut *w, name)?;
    w.write_all(b": ")
}

fn member<W: Write>(w: &mut W, first: bool, name: &str, value: &Value) -> io::Result<()> {
    key(w, first, name)?;
    pretty_at(w, b"  ", value)
}

pub(super) struct Json<W> {
    w: W,
    /// Members that follow `results`, written by `finish`.
    after: Vec<(String, Value)>,
    results: u64,
    /// A result's text, written to `w` whole.
    buf: Vec<u8>,
}

impl<W: Write> Json<W> {
    pub(super) fn new(w: W) -> Self {
        Self {
            w,
            after: Vec::new(),
            results: 0,
            buf: Vec::new(),
        }
    }
}

impl<W: Write> ResultSink for Json<W> {
    fn begin(&mut self, summary: &v1::RunSummary) -> io::Result<()> {
        self.w.write_all(b"{")?;
        let mut members = summary_json(summary).into_iter();
        let mut first = true;
        for (name, value) in members.by_ref() {
            if name == RESULTS {
                key(&mut self.w, first, &name)?;
                break;
            }
            member(&mut self.w, first, &name, &value)?;
            first = false;
        }
        self.after = members.collect();
        Ok(())
    }

    fn result(&mut self, r: &v1::Result) -> io::Result<()> {
        self.buf.clear();
        self.buf.extend_from_slice(if self.results == 0 {
            b"[\n    "
        } else {
            b",\n    "
        });
        self.results += 1;
        pretty_at(&mut self.buf, b"    ", &result_json(r))?;
        self.w.write_all(&self.buf)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.w
            .write_all(if self.results == 0 { b"[]" } else { b"\n  ]" })?;
        for (name, value) in std::mem::take(&mut self.after) {
            member(&mut self.w, false, &name, &value)?;
        }
        self.w.write_all(b"\n}")?;
        self.w.flush()
    }
}

pub(super) struct Jsonl<W> {
    w: W,
    /// A result's line, written to `w` whole.
    buf: Vec<u8>,
}

impl<W: Write> Jsonl<W> {
    pub(super) fn new(w: W) -> Self {
        Self { w, buf: Vec::new() }
    }
}

impl<W: Write> ResultSink for Jsonl<W> {
    fn begin(&mut self, _summary: &v1::RunSummary) -> io::Result<()> {
        Ok(())
    }

    fn result(&mut self, r: &v1::Result) -> io::Result<()> {
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, &result_json(r))?;
        self.buf.push(b'\n');
        self.w.write_all(&self.buf)
    }

    fn finish(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}
