//! The Markdown report: totals, the provider × prompt table, the tests that
//! failed most (from the summary), and the first failures as they arrive.

use std::io::{self, Write};

use gauntlet_proto::v1;

use super::{ResultSink, cell, pct, result_status_name};

/// Failed and errored results listed in a Markdown report, at most.
const MAX_LISTED_FAILURES: u64 = 50;

pub(super) struct Markdown<W> {
    w: W,
    failures: u64,
}

impl<W: Write> Markdown<W> {
    pub(super) fn new(w: W) -> Self {
        Self { w, failures: 0 }
    }
}

impl<W: Write> ResultSink for Markdown<W> {
    fn begin(&mut self, s: &v1::RunSummary) -> io::Result<()> {
        let out = &mut self.w;
        let title = if s.description.is_empty() {
            "Gauntlet run"
        } else {
            &s.description
        };
        writeln!(out, "# {}\n", cell(title, 200))?;
        if super::partial(s) {
            writeln!(
                out,
                "> **Partial report**: the run is {}; {} of {} results were stored when it was made.\n",
                v1::RunStatus::label_of(s.status),
                s.completed_tasks,
                s.total_tasks
            )?;
        }
        writeln!(out, "- Run: `{}`", s.run_id)?;
        if s.created_at.is_some() {
            writeln!(out, "- Started: {}", super::utc_text(s.created_at.as_ref()))?;
        }
        if !s.label.is_empty() {
            writeln!(out, "- Label: {}", cell(&s.label, 100))?;
        }
        writeln!(out, "- Status: {}", v1::RunStatus::label_of(s.status))?;
        if !s.trace_id.is_empty() {
            writeln!(out, "- Trace: `{}`", cell(&s.trace_id, 32))?;
        }
        writeln!(
            out,
            "- Results: {} of {} — {} passed, {} failed, {} errors ({} pass rate)",
            s.completed_tasks,
            s.total_tasks,
            s.passed,
            s.failed,
            s.errors,
            pct(s.pass_rate)
        )?;
        writeln!(
            out,
            "- Tokens: {} in, {} out; cost ${:.4}\n",
            s.tokens_in, s.tokens_out, s.cost_usd
        )?;
        writeln!(out, "## By provider and prompt\n")?;
        writeln!(
            out,
            "| Provider | Prompt | Pass rate | Passed | Failed | Errors | p50 ms | p95 ms | p99 ms | Tokens in | Tokens out | Cost $ |"
        )?;
        writeln!(
            out,
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )?;
        for g in &s.groups {
            let l = g.latency.unwrap_or_default();
            writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {:.4} |",
                cell(&g.provider_id, 60),
                cell(&g.prompt_label, 60),
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
        if !s.most_failed.is_empty() {
            writeln!(out, "\n## Most failed tests\n")?;
            writeln!(out, "| Test | Not passed | Of |")?;
            writeln!(out, "|---|---:|---:|")?;
            for f in &s.most_failed {
                let name = if f.description.is_empty() {
                    format!("#{}", f.test_index)
                } else {
                    format!("#{} {}", f.test_index, f.description)
                };
                writeln!(
                    out,
                    "| {} | {} | {} |",
                    cell(&name, 80),
                    f.unpassed,
                    f.total
                )?;
            }
        }
        Ok(())
    }

    fn result(&mut self, r: &v1::Result) -> io::Result<()> {
        if r.status == v1::ResultStatus::Pass as i32 {
            return Ok(());
        }
        self.failures += 1;
        if self.failures > MAX_LISTED_FAILURES {
            return Ok(());
        }
        let out = &mut self.w;
        if self.failures == 1 {
            writeln!(out, "\n## Failures\n")?;
            writeln!(out, "| Task | Provider | Test | Status | Reason | Output |")?;
            writeln!(out, "|---:|---|---|---|---|---|")?;
        }
        let test = if r.test_description.is_empty() {
            &r.vars_json
        } else {
            &r.test_description
        };
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.task_index,
            cell(&r.provider_id, 40),
            cell(test, 60),
            result_status_name(r.status),
            cell(&r.reason, 120),
            cell(&r.output, 80)
        )
    }

    fn finish(&mut self) -> io::Result<()> {
        if self.failures > MAX_LISTED_FAILURES {
            writeln!(
                self.w,
                "\n…and {} more.",
                self.failures - MAX_LISTED_FAILURES
            )?;
        }
        self.w.flush()
    }
}
