//! The HTML report: a self-contained page whose header comes from the
//! summary, so every result becomes a table row as it arrives.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use gauntlet_proto::v1;

use super::{ResultSink, esc, pct, result_status_name};

pub(super) struct Html<W> {
    w: W,
}

impl<W: Write> Html<W> {
    pub(super) fn new(w: W) -> Self {
        Self { w }
    }
}

impl<W: Write> ResultSink for Html<W> {
    fn begin(&mut self, s: &v1::RunSummary) -> io::Result<()> {
        let out = &mut self.w;
        let title = if s.description.is_empty() {
            "Gauntlet run"
        } else {
            &s.description
        };
        write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}\
table{{border-collapse:collapse;margin:1rem 0}}th,td{{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top;text-align:left}}\
td.n{{text-align:right}}tr.pass td.s{{color:#17692b}}tr.fail td.s{{color:#b00020}}tr.error td.s{{color:#a65e00}}\
pre{{white-space:pre-wrap;margin:0;max-width:40rem}}\
</style></head><body>\n",
            esc(title)
        )?;
        writeln!(out, "<h1>{}</h1>", esc(title))?;
        writeln!(
            out,
            "<p>Run <code>{}</code> — {}. {} of {} results: {} passed, {} failed, {} errors ({} pass rate). Tokens {} in, {} out; cost ${:.4}.</p>",
            esc(&s.run_id),
            v1::RunStatus::label_of(s.status),
            s.completed_tasks,
            s.total_tasks,
            s.passed,
            s.failed,
            s.errors,
            pct(s.pass_rate),
            s.tokens_in,
            s.tokens_out,
            s.cost_usd
        )?;
        writeln!(
            out,
            "<h2>By provider and prompt</h2>\n<table><tr><th>Provider</th><th>Prompt</th><th>Pass rate</th><th>Passed</th><th>Failed</th><th>Errors</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>Tokens in</th><th>Tokens out</th><th>Cost $</th></tr>"
        )?;
        for g in &s.groups {
            let l = g.latency.unwrap_or_default();
            writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.0}</td><td class=\"n\">{:.0}</td><td class=\"n\">{:.0}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.4}</td></tr>",
                esc(&g.provider_id),
                esc(&g.prompt_label),
                pct(g.pass_rate),
                g.passed,
                g.failed,
                g.errors,
                l.p50_ms,
                l.p95_ms,
                l.p99_ms,
                g.tokens_in,
                g.tokens_out,
                g.cost_usd
            )?;
        }
        writeln!(
            out,
            "</table>\n<h2>Results</h2>\n<table><tr><th>Task</th><th>Provider</th><th>Test</th><th>Status</th><th>Output</th><th>Assertions</th><th>Latency ms</th></tr>"
        )
    }

    fn result(&mut self, r: &v1::Result) -> io::Result<()> {
        let status = result_status_name(r.status);
        let test = if r.test_description.is_empty() {
            &r.vars_json
        } else {
            &r.test_description
        };
        let mut verdicts = String::new();
        for a in &r.assertions {
            let _ = write!(
                verdicts,
                "{} <code>{}</code> {}<br>",
                if a.pass { "✔" } else { "✘" },
                esc(&a.r#type),
                esc(&a.reason)
            );
        }
        if !r.error.is_empty() {
            let _ = write!(verdicts, "error: {}", esc(&r.error));
        }
        writeln!(
            self.w,
            "<tr class=\"{status}\"><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"s\">{status}</td><td><pre>{}</pre></td><td>{}</td><td class=\"n\">{}</td></tr>",
            r.task_index,
            esc(&r.provider_id),
            esc(test),
            esc(&r.output),
            verdicts,
            r.latency_ms
        )
    }

    fn finish(&mut self) -> io::Result<()> {
        self.w.write_all(b"</table>\n</body></html>\n")?;
        self.w.flush()
    }
}
