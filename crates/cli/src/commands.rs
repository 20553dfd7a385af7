//! The subcommands that talk to a running server: `watch`, `results`,
//! `report`, `runs` (`dlq` has a module of its own).

use std::{path::PathBuf, time::Duration};

use anyhow::Context;
use futures::StreamExt;
use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1;

use crate::{client, target::Target};

pub async fn watch(config: &GauntletConfig, target: &Target, run_id: &str) -> anyhow::Result<()> {
    target
        .with_gateway(config, async |gateway| {
            let runs = &mut gateway.runs;
            let mut stream = runs
                .watch_run(v1::WatchRunRequest {
                    run_id: run_id.into(),
                })
                .await
                .map_err(|s| client::status_message("watch", &s))?
                .into_inner();
            while let Some(p) = stream.next().await {
                let p = p.map_err(|s| client::status_message("watch", &s))?;
                println!(
                    "{} {}/{} done, {} passed, {} failed, {} errors",
                    v1::RunStatus::label_of(p.status),
                    p.completed_tasks,
                    p.total_tasks,
                    p.passed,
                    p.failed,
                    p.errors
                );
                if !p.status_reason.is_empty() {
                    println!("  {}", p.status_reason);
                }
            }
            Ok(())
        })
        .await
}

pub async fn runs(config: &GauntletConfig, target: &Target, limit: u32) -> anyhow::Result<()> {
    target
        .with_gateway(config, async |gateway| {
            let client_ = &mut gateway.runs;
            let page = client_
                .list_runs(v1::ListRunsRequest {
                    page_size: limit,
                    page_token: String::new(),
                })
                .await
                .map_err(|s| client::status_message("list runs", &s))?
                .into_inner();
            println!(
                "{:<36}  {:<9}  {:>11}  {:>6}  {:>6}  {:>6}  description",
                "run", "status", "done", "pass", "fail", "error"
            );
            for r in page.runs {
                println!(
                    "{:<36}  {:<9}  {:>11}  {:>6}  {:>6}  {:>6}  {}",
                    r.id,
                    v1::RunStatus::label_of(r.status),
                    format!("{}/{}", r.completed_tasks, r.total_tasks),
                    r.passed,
                    r.failed,
                    r.errors,
                    if r.label.is_empty() {
                        r.description
                    } else {
                        format!("{} [{}]", r.description, r.label)
                    }
                );
                if !r.status_reason.is_empty() {
                    println!("  {}", r.status_reason);
                }
            }
            Ok(())
        })
        .await
}

pub async fn results(
    config: &GauntletConfig,
    target: &Target,
    run_id: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    target
        .with_gateway(config, async |gateway| {
            if let Some(path) = output {
                let summary = gateway
                    .analytics
                    .get_run_summary(v1::GetRunSummaryRequest {
                        run_id: run_id.into(),
                    })
                    .await
                    .map_err(|s| client::status_message("summary", &s))?
                    .into_inner();
                crate::output::write_files(
                    std::slice::from_ref(&path),
                    &summary,
                    &gateway.runs,
                    run_id,
                )
                .await?;
                eprintln!("wrote {}", path.display());
                return Ok(());
            }
            // Printed a page at a time, so a huge run needs no more memory than a page.
            let pages = client::result_pages(
                gateway.runs.clone(),
                run_id.into(),
                v1::ResultStatus::Unspecified,
                1000,
            );
            futures::pin_mut!(pages);
            while let Some(page) = pages.next().await {
                let page = page.map_err(|s| client::status_message("list results", &s))?;
                for r in page.results {
                    let status = match v1::ResultStatus::try_from(r.status) {
                        Ok(v1::ResultStatus::Pass) => "PASS",
                        Ok(v1::ResultStatus::Fail) => "FAIL",
                        _ => "ERROR",
                    };
                    println!(
                        "{:>6} {:<5} {:<24} {}",
                        r.task_index,
                        status,
                        r.provider_id,
                        if r.reason.is_empty() {
                            &r.output
                        } else {
                            &r.reason
                        }
                    );
                }
            }
            Ok(())
        })
        .await
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum ReportFormat {
    /// Also `md`, as the file extension.
    #[value(alias = "md")]
    Markdown,
    Json,
    Html,
    Csv,
    Junit,
}

/// What `gauntlet report` renders.
pub enum ReportOf {
    Run(String),
    Comparison {
        a: String,
        b: Option<String>,
        by: Option<crate::compare::By>,
        alpha: f64,
    },
    Trend {
        suite: String,
        bucket: crate::trends::Bucket,
    },
    /// Several runs, the first one's id as the report's run.
    Rollup(Vec<String>),
}

pub async fn report(
    config: &GauntletConfig,
    target: &Target,
    what: ReportOf,
    format: ReportFormat,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    target
        .with_gateway(config, async |gateway| {
            let mut reports = gateway.reports.clone();
            let format = match format {
                ReportFormat::Markdown => v1::ReportFormat::Markdown,
                ReportFormat::Json => v1::ReportFormat::Json,
                ReportFormat::Html => v1::ReportFormat::Html,
                ReportFormat::Csv => v1::ReportFormat::Csv,
                ReportFormat::Junit => v1::ReportFormat::Junit,
            };
            let request = match &what {
                ReportOf::Run(run_id) => v1::CreateReportRequest {
                    run_id: run_id.clone(),
                    format: format as i32,
                    kind: v1::ReportKind::Run as i32,
                    ..Default::default()
                },
                ReportOf::Comparison { a, b, by, alpha } => v1::CreateReportRequest {
                    run_id: a.clone(),
                    format: format as i32,
                    kind: v1::ReportKind::Comparison as i32,
                    compare_to: b.clone().unwrap_or_default(),
                    by: crate::compare::by_proto(*by) as i32,
                    alpha: *alpha,
                    ..Default::default()
                },
                ReportOf::Rollup(runs) => v1::CreateReportRequest {
                    run_id: runs[0].clone(),
                    format: format as i32,
                    kind: v1::ReportKind::Rollup as i32,
                    runs: runs[1..].to_vec(),
                    ..Default::default()
                },
                ReportOf::Trend { suite, bucket } => v1::CreateReportRequest {
                    format: format as i32,
                    kind: v1::ReportKind::Trend as i32,
                    suite: suite.clone(),
                    bucket: bucket.proto() as i32,
                    ..Default::default()
                },
            };
            let created = reports
                .create_report(request)
                .await
                .map_err(|s| client::status_message("create report", &s))?
                .into_inner();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
            // Asked every 10 to 50 ms for the first 5 s (most reports take
            // well under a second, and a poll is one row read), then every
            // quarter second.
            let asked = tokio::time::Instant::now();
            let mut pause = Duration::from_millis(10);
            let report = loop {
                let r = reports
                    .get_report(v1::GetReportRequest {
                        report_id: created.id.clone(),
                    })
                    .await
                    .map_err(|s| client::status_message("get report", &s))?
                    .into_inner();
                if r.status != v1::ReportStatus::Pending as i32 {
                    break r;
                }
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "report {} still pending after 5 minutes",
                    created.id
                );
                tokio::time::sleep(pause).await;
                pause = if asked.elapsed() < Duration::from_secs(5) {
                    (pause * 3 / 2).min(Duration::from_millis(50))
                } else {
                    Duration::from_millis(250)
                };
            };
            anyhow::ensure!(
                report.status == v1::ReportStatus::Ready as i32,
                "report failed: {}",
                report.error
            );
            match output {
                Some(path) => {
                    let failed = || format!("cannot write {}", path.display());
                    let file = std::fs::File::create(&path).with_context(failed)?;
                    let mut out = std::io::BufWriter::new(file);
                    gateway
                        .write_report(report, &mut out)
                        .await
                        .with_context(failed)?;
                    std::io::Write::flush(&mut out).with_context(failed)?;
                    eprintln!("wrote {}", path.display());
                }
                None => {
                    let mut out = std::io::stdout();
                    gateway.write_report(report, &mut out).await?;
                    std::io::Write::flush(&mut out)?;
                }
            }
            Ok(())
        })
        .await
}
