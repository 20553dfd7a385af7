//! What `gauntlet run` prints and writes: the summary table, and result files
//! chosen by extension (the same renderers the reports service uses).

use std::{io::Write, path::Path};

use anyhow::{Context, bail};
use gauntlet_proto::v1;
use gauntlet_reports::{ReportData, render};

/// The result file formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Csv,
    Markdown,
    Html,
    Junit,
}

impl FileFormat {
    pub fn for_path(path: &Path) -> anyhow::Result<Self> {
        Ok(
            match path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("json") => FileFormat::Json,
                Some("csv") => FileFormat::Csv,
                Some("md" | "markdown") => FileFormat::Markdown,
                Some("html" | "htm") => FileFormat::Html,
                Some("xml") => FileFormat::Junit,
                _ => bail!(
                    "--output {}: unknown extension; use .json, .csv, .md, .html or .xml (JUnit)",
                    path.display()
                ),
            },
        )
    }
}

pub fn write(path: &Path, data: &ReportData) -> anyhow::Result<()> {
    let text = match FileFormat::for_path(path)? {
        FileFormat::Json => render::json(data),
        FileFormat::Csv => render::csv(data),
        FileFormat::Markdown => render::markdown(data),
        FileFormat::Html => render::html(data),
        FileFormat::Junit => render::junit(data),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

fn clip(s: &str, max: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() > max {
        format!("{}…", one_line.chars().take(max - 1).collect::<String>())
    } else {
        one_line
    }
}

/// One line per failed or errored result (the first few of `total`): which
/// test, on which provider, and why.
pub fn failure_lines(
    failures: &[v1::Result],
    total: u64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    for r in failures {
        let status = if r.status == v1::ResultStatus::Error as i32 {
            "ERROR"
        } else {
            "FAIL"
        };
        let test = if r.test_description.is_empty() {
            format!("test {} {}", r.test_index, clip(&r.vars_json, 60))
        } else {
            clip(&r.test_description, 60)
        };
        let why = if r.reason.is_empty() {
            &r.error
        } else {
            &r.reason
        };
        writeln!(
            out,
            "{status:<5} {} · prompt {} · {test}: {}",
            clip(&r.provider_id, 32),
            r.prompt_index + 1,
            clip(why, 160)
        )?;
    }
    if total > failures.len() as u64 {
        writeln!(
            out,
            "… and {} more (see `gauntlet results RUN` or -o results.json)",
            total - failures.len() as u64
        )?;
    }
    writeln!(out)
}

/// The per provider × prompt table and the totals line.
pub fn summary_table(s: &v1::RunSummary, out: &mut impl Write) -> std::io::Result<()> {
    let header = [
        "provider",
        "prompt",
        "pass rate",
        "pass",
        "fail",
        "error",
        "p50 ms",
        "p95 ms",
        "tokens in",
        "tokens out",
        "cost $",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for g in &s.groups {
        let l = g.latency.unwrap_or_default();
        rows.push(vec![
            clip(&g.provider_id, 32),
            clip(&g.prompt_label, 40),
            pct(g.pass_rate),
            g.passed.to_string(),
            g.failed.to_string(),
            g.errors.to_string(),
            format!("{:.0}", l.p50_ms),
            format!("{:.0}", l.p95_ms),
            g.tokens_in.to_string(),
            g.tokens_out.to_string(),
            format!("{:.4}", g.cost_usd),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                // Text columns left, numbers right.
                if c < 2 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            writeln!(out, "{}", "-".repeat(total))?;
        }
    }
    writeln!(
        out,
        "\n{} passed, {} failed, {} errors of {} ({}); {} tokens in, {} out; ${:.4}",
        s.passed,
        s.failed,
        s.errors,
        s.total_tasks,
        pct(s.pass_rate),
        s.tokens_in,
        s.tokens_out,
        s.cost_usd
    )
}
