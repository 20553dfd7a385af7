//! `gauntlet-bench render`: time and peak memory to render every report
//! format for 1k to 1M results. Each (format, size) renders in a child
//! process of its own, so its peak resident set (VmHWM) is its own: the
//! child generates results one at a time (as the service pages them in)
//! and streams them through the format's sink into a file.

use std::{
    io::{BufWriter, Write as _},
    path::PathBuf,
    process::Command,
    time::Instant,
};

use anyhow::Context;
use gauntlet_proto::v1;
use gauntlet_reports::render::{self, Format};

use crate::{procs, table::Table};

#[derive(clap::Args)]
pub struct RenderArgs {
    /// Result counts to render (repeatable).
    #[arg(long, default_values_t = [1_000u64, 10_000, 100_000, 1_000_000])]
    results: Vec<u64>,
    /// Formats: html, json, jsonl, csv, md, junit (repeatable; default all).
    #[arg(long)]
    format: Vec<String>,
    /// Bytes of each result's output.
    #[arg(long, default_value_t = 200)]
    output_bytes: usize,
    /// Internal: render one (format, size) into this file and print figures.
    #[arg(long, hide = true)]
    child: Option<PathBuf>,
}

const FORMATS: [(&str, Format); 6] = [
    ("html", Format::Html),
    ("json", Format::Json),
    ("jsonl", Format::Jsonl),
    ("csv", Format::Csv),
    ("md", Format::Markdown),
    ("junit", Format::Junit),
];

/// Results of a suite of 4 providers × 2 prompts, in task order, with one
/// failing in seven.
fn result(i: u64, output_bytes: usize) -> v1::Result {
    let fails = i.is_multiple_of(7);
    let mut output = format!("Answer {i}: ");
    while output.len() < output_bytes {
        output.push_str("lorem ipsum <b>dolor</b> & sit amet ");
    }
    output.truncate(output_bytes);
    v1::Result {
        run_id: "bench".into(),
        task_index: i,
        test_index: (i / 8) as u32,
        prompt_index: (i / 4 % 2) as u32,
        provider_index: (i % 4) as u32,
        provider_id: format!("openai:chat:model-{}", i % 4),
        prompt_label: format!("prompt {}", i / 4 % 2),
        vars_json: format!("{{\"question\":\"q{}\",\"n\":{}}}", i / 8, i % 13),
        rendered_prompt: format!("Answer the question q{}", i / 8),
        output,
        status: if fails {
            v1::ResultStatus::Fail
        } else {
            v1::ResultStatus::Pass
        } as i32,
        score: if fails { 0.0 } else { 1.0 },
        reason: if fails {
            "Expected output to contain \"42\"".into()
        } else {
            String::new()
        },
        assertions: vec![
            v1::AssertionResult {
                r#type: "contains".into(),
                pass: !fails,
                score: 1.0,
                reason: String::new(),
            },
            v1::AssertionResult {
                r#type: "latency".into(),
                pass: true,
                score: 1.0,
                reason: String::new(),
            },
        ],
        latency_ms: (i * 37 % 2000) as u32,
        tokens_in: 30,
        tokens_out: 50,
        cost_usd: 0.00003,
        test_description: format!("question {}", i / 8),
        ..Default::default()
    }
}

fn summary(n: u64) -> v1::RunSummary {
    v1::RunSummary {
        run_id: "bench".into(),
        status: v1::RunStatus::Completed as i32,
        description: "render benchmark".into(),
        total_tasks: n,
        completed_tasks: n,
        passed: n - n.div_ceil(7),
        failed: n.div_ceil(7),
        groups: (0..4)
            .flat_map(|p| {
                (0..2).map(move |q| v1::GroupSummary {
                    provider_index: p,
                    provider_id: format!("openai:chat:model-{p}"),
                    prompt_index: q,
                    prompt_label: format!("prompt {q}"),
                    total: n / 8,
                    pass_rate: 6.0 / 7.0,
                    ..Default::default()
                })
            })
            .collect(),
        ..Default::default()
    }
}

fn child(args: &RenderArgs, path: &PathBuf) -> anyhow::Result<()> {
    let (_, format) = formats(&args.format)?[0];
    let n = args.results[0];
    let before = procs::peak_rss_kib(std::process::id()).unwrap_or(0);
    let started = Instant::now();
    let file = std::fs::File::create(path)?;
    let mut sink = render::sink(format, BufWriter::new(file));
    sink.begin(&summary(n))?;
    for i in 0..n {
        sink.result(&result(i, args.output_bytes))?;
    }
    sink.finish()?;
    drop(sink);
    let secs = started.elapsed().as_secs_f64();
    let peak = procs::peak_rss_kib(std::process::id()).unwrap_or(0);
    let bytes = std::fs::metadata(path)?.len();
    println!("{secs} {before} {peak} {bytes}");
    std::io::stdout().flush()?;
    Ok(())
}

fn formats(names: &[String]) -> anyhow::Result<Vec<(&'static str, Format)>> {
    if names.is_empty() {
        return Ok(FORMATS.to_vec());
    }
    names
        .iter()
        .map(|name| {
            FORMATS
                .iter()
                .find(|(n, _)| n == name)
                .copied()
                .with_context(|| {
                    format!("unknown format `{name}`; known: html, json, jsonl, csv, md, junit")
                })
        })
        .collect()
}

pub fn run(args: RenderArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.child {
        return child(&args, path);
    }
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let mut table = Table::new(&[
        "format",
        "results",
        "render s",
        "results/s",
        "peak RSS MiB",
        "RSS before MiB",
        "document MiB",
    ]);
    for (name, _) in formats(&args.format)? {
        for &n in &args.results {
            let path = dir.path().join(format!("report-{n}.{name}"));
            let out = Command::new(&exe)
                .args(["render", "--format", name, "--results", &n.to_string()])
                .args(["--output-bytes", &args.output_bytes.to_string()])
                .arg("--child")
                .arg(&path)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "{name} × {n}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout)?;
            let f: Vec<f64> = text
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .with_context(|| format!("child printed `{text}`"))?;
            let [secs, before, peak, bytes] = f[..] else {
                anyhow::bail!("child printed `{text}`");
            };
            table.row(vec![
                name.to_string(),
                n.to_string(),
                format!("{secs:.3}"),
                format!("{:.0}", n as f64 / secs),
                format!("{:.1}", peak / 1024.0),
                format!("{:.1}", before / 1024.0),
                format!("{:.1}", bytes / 1048576.0),
            ]);
            let _ = std::fs::remove_file(&path);
            eprintln!("{name} × {n}: {secs:.3} s, peak {:.1} MiB", peak / 1024.0);
        }
    }
    println!("{table}");
    Ok(())
}
