//! The CSV report. Its header names every var of the run, known only once
//! the last result is in, so rows are set aside (with the vars still as
//! JSON) and written under the header by `finish`.

use std::{
    collections::HashSet,
    io::{self, Write},
};

use gauntlet_proto::v1;
use serde_json::{Map, Value};

use super::{ResultSink, result_status_name, spill::Spill};

/// Columns before the vars.
const LEAD: [&str; 7] = [
    "task_index",
    "test_index",
    "prompt_index",
    "provider",
    "prompt",
    "repeat_index",
    "description",
];
/// Columns after the vars.
const TAIL: [&str; 10] = [
    "output",
    "status",
    "score",
    "reason",
    "latency_ms",
    "tokens_in",
    "tokens_out",
    "cost_usd",
    "cached",
    "error",
];

fn vars_of(vars_json: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(vars_json) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

pub(super) struct Csv<W> {
    w: W,
    /// Var names in first-seen order, and the same as a set.
    var_names: Vec<String>,
    seen: HashSet<String>,
    /// Rows as `LEAD`, the vars JSON, `TAIL`.
    rows: Spill,
    record: Vec<u8>,
}

impl<W: Write> Csv<W> {
    pub(super) fn new(w: W, budget: usize) -> Self {
        Self {
            w,
            var_names: Vec::new(),
            seen: HashSet::new(),
            rows: Spill::new(budget),
            record: Vec::new(),
        }
    }
}

impl<W: Write> ResultSink for Csv<W> {
    fn begin(&mut self, _summary: &v1::RunSummary) -> io::Result<()> {
        Ok(())
    }

    fn result(&mut self, r: &v1::Result) -> io::Result<()> {
        for name in vars_of(&r.vars_json).keys() {
            if !self.seen.contains(name) {
                self.seen.insert(name.clone());
                self.var_names.push(name.clone());
            }
        }
        self.record.clear();
        let fields: [&str; LEAD.len() + 1 + TAIL.len()] = [
            &r.task_index.to_string(),
            &r.test_index.to_string(),
            &r.prompt_index.to_string(),
            &r.provider_id,
            &r.prompt_label,
            &r.repeat_index.to_string(),
            &r.test_description,
            &r.vars_json,
            &r.output,
            result_status_name(r.status),
            &format!("{}", r.score),
            &r.reason,
            &r.latency_ms.to_string(),
            &r.tokens_in.to_string(),
            &r.tokens_out.to_string(),
            &format!("{}", r.cost_usd),
            &r.cached.to_string(),
            &r.error,
        ];
        let mut w = ::csv::Writer::from_writer(&mut self.record);
        w.write_record(fields)?;
        w.flush()?;
        drop(w);
        self.rows.append(0, &self.record)
    }

    fn finish(&mut self) -> io::Result<()> {
        let mut out = ::csv::Writer::from_writer(&mut self.w);
        let mut header: Vec<String> = LEAD.iter().map(|s| s.to_string()).collect();
        header.extend(self.var_names.iter().map(|v| format!("var:{v}")));
        header.extend(TAIL.iter().map(|s| s.to_string()));
        out.write_record(&header)?;
        let mut rows = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(self.rows.reader(0));
        let mut row = ::csv::StringRecord::new();
        let mut cells: Vec<String> = Vec::with_capacity(header.len());
        while rows.read_record(&mut row)? {
            cells.clear();
            cells.extend(row.iter().take(LEAD.len()).map(str::to_string));
            let vars = vars_of(&row[LEAD.len()]);
            cells.extend(self.var_names.iter().map(|v| match vars.get(v) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            }));
            cells.extend(row.iter().skip(LEAD.len() + 1).map(str::to_string));
            out.write_record(&cells)?;
        }
        out.flush()?;
        drop(out);
        self.w.flush()
    }
}
