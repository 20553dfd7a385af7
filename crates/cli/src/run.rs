//! `gauntlet run SUITE`: submit a suite (to the embedded stack, or to a
//! server with `--server`), show progress, print the summary, write result
//! files, and exit 0 when everything passed, 100 (or `--fail-exit-code`)
//! when anything failed, 130 when interrupted.

use gauntlet_config::GrpcConfig;
use std::{
    io::IsTerminal,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use futures::StreamExt;
use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1::{self, run_service_client::RunServiceClient};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::debug;

use crate::{client, compare, embedded, output, regressions, suite_file};

/// `gauntlet run --priority`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Interactive,
    Batch,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The suite: a promptfoo-style YAML or JSON file.
    pub suite: PathBuf,
    /// Submit to this gateway (http://HOST:PORT) instead of starting the
    /// embedded stack.
    #[arg(long, env = "GAUNTLET_SERVER")]
    pub server: Option<String>,
    /// Write results to FILE; the extension picks the format: .json,
    /// .jsonl, .csv, .md, .html or .xml (JUnit). Repeatable; written while
    /// paging through the results, so memory stays flat.
    #[arg(short, long = "output", value_name = "FILE")]
    pub outputs: Vec<PathBuf>,
    /// Run every test × prompt × provider this many times (default: the
    /// suite's `evaluateOptions.repeat`, else 1).
    #[arg(long)]
    pub repeat: Option<u32>,
    /// Most provider calls in flight (0: the worker's default, 256). The
    /// embedded stack sizes its worker to allow this many.
    #[arg(long, default_value_t = 0)]
    pub max_concurrency: u32,
    /// Do not use cached provider responses.
    #[arg(long)]
    pub no_cache: bool,
    /// Label the run (e.g. `nightly`, a branch or a build): shown by
    /// `gauntlet runs`, and `gauntlet trends --label` follows the runs
    /// that carry it.
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// Stop the run once its results have cost this many US dollars; it
    /// then ends `cost_limited` with the results it has.
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<f64>,
    /// Its place in its project's share of the workers: an interactive
    /// run gets four times the share of a batch (nightly) one.
    #[arg(long, value_enum, default_value = "interactive")]
    pub priority: Priority,
    /// Run only the first N tests.
    #[arg(long, value_name = "N")]
    pub filter_first_n: Option<usize>,
    /// Run only tests whose description (or vars) match this regex.
    #[arg(long, value_name = "REGEX")]
    pub filter_pattern: Option<String>,
    /// Exit code when any test fails or errors.
    #[arg(long, default_value_t = 100)]
    pub fail_exit_code: i32,
    /// Where the embedded stack keeps its database.
    #[arg(long, env = "GAUNTLET_DATA_DIR", default_value = ".gauntlet")]
    pub data_dir: PathBuf,
    /// After the run, check it against this run (`last`: the newest earlier
    /// completed run with the same suite description), print what
    /// `gauntlet regressions RUN --baseline BASELINE` prints, and exit 100
    /// on a regression.
    #[arg(long, value_name = "RUN_ID|last")]
    pub baseline: Option<String>,
}

/// Chunks of suite parsed ahead of the upload, at most.
const CHUNKS_AHEAD: usize = 4;

/// Exit code of an interrupted run (128 + SIGINT).
const INTERRUPTED: i32 = 130;

fn parse_usd(text: &str) -> Result<f64, String> {
    match text.trim().trim_start_matches('$').parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{text}` is not a positive amount of US dollars")),
    }
}

/// A dollar amount with enough digits to tell small estimates apart.
fn usd(v: f64) -> String {
    if v == 0.0 || v >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

pub async fn run(args: RunArgs, config: GauntletConfig) -> anyhow::Result<i32> {
    // Phase timings for `RUST_LOG=gauntlet_cli=debug`.
    let started = Instant::now();
    let ms = || started.elapsed().as_millis() as u64;
    let pattern = args
        .filter_pattern
        .as_deref()
        .map(|p| regex::Regex::new(p).with_context(|| format!("--filter-pattern `{p}`")))
        .transpose()?;
    for path in &args.outputs {
        output::FileFormat::for_path(path)?;
    }
    let file = suite_file::open(
        &args.suite,
        suite_file::Filters {
            first_n: args.filter_first_n,
            pattern,
        },
    )?;
    // The suite is parsed on a thread of its own while it is uploaded, a
    // test at a time, as normalized JSON lines (the model's own encoding,
    // every file already inlined): memory holds its text and a few chunks,
    // never all its tests. Its header and first test are read before
    // connecting, so a suite broken there starts nothing; an error further
    // on ends the upload without its trailer (`Gateway::submit_lines`).
    let limits = client::limits(&config, args.server.is_some());
    let chunk = client::chunk_size(&limits);
    let (ready, header) = tokio::sync::oneshot::channel();
    let (chunks, chunks_rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let tests = match file.tests() {
            Ok(tests) => tests,
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        let shape = (
            tests.header.prompts.len(),
            tests.header.providers.len(),
            tests.header.repeat,
        );
        if ready.send(Ok(shape)).is_ok() {
            let tests_read = client::encode_lines(&tests.header, tests.tests, chunk, |c| {
                chunks.blocking_send(c).is_ok()
            });
            debug!(tests_read, "suite read");
        }
    });
    let (prompts, providers, suite_repeat) = header.await.context("the suite reader stopped")??;
    let repeat = repeats(args.repeat, suite_repeat);
    debug!(elapsed_ms = ms(), "suite header read");
    let (mut gateway, stack) = match &args.server {
        Some(url) => (client::Gateway::connect(url, &config).await?, None),
        None => {
            let stack =
                embedded::Stack::start(config, &args.data_dir, args.max_concurrency).await?;
            let channel = client::connect(&stack.url(), &GrpcConfig::default()).await?;
            (client::Gateway::new(channel, limits), Some(stack))
        }
    };
    debug!(elapsed_ms = ms(), "connected");
    let runs = &mut gateway.runs.clone();
    let mut analytics = gateway.analytics.clone();

    let chunks = futures::stream::unfold(chunks_rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let submitted = gateway
        .submit_lines(
            chunks,
            v1::RunOptions {
                repeat,
                max_concurrency: args.max_concurrency,
                no_cache: args.no_cache,
                label: args.label.clone().unwrap_or_default(),
                max_cost_usd: args.max_cost.unwrap_or(0.0),
                priority: match args.priority {
                    Priority::Interactive => v1::RunPriority::Interactive,
                    Priority::Batch => v1::RunPriority::Batch,
                } as i32,
            },
        )
        .await
        .map_err(|err| match err {
            client::SubmitError::Suite(err) => err,
            client::SubmitError::Status(s) => anyhow::anyhow!(
                "{}: {}",
                args.suite.display(),
                client::status_message("submit", &s)
            ),
        })?;
    // The tests were counted as they streamed by, on the gateway.
    let per_test = (prompts as u64)
        .saturating_mul(providers as u64)
        .saturating_mul(u64::from(repeat));
    let tests = submitted
        .total_tasks
        .checked_div(per_test)
        .unwrap_or_default();
    let run_id = submitted.run_id.clone();
    debug!(elapsed_ms = ms(), "run submitted");
    let unpriced = if submitted.unpriced_providers.is_empty() {
        String::new()
    } else {
        format!(" + unpriced {}", submitted.unpriced_providers.join(", "))
    };
    eprintln!(
        "run {run_id}: {} tasks ({} tests × {} prompts × {} providers × {} repeats), \
         est. {}{unpriced} for ~{} tokens in, ~{} out",
        submitted.total_tasks,
        tests,
        prompts,
        providers,
        repeat,
        usd(submitted.estimated_cost_usd),
        submitted.estimated_tokens_in,
        submitted.estimated_tokens_out,
    );

    // The result files are rendered while the run goes.
    let spool = if args.outputs.is_empty() {
        None
    } else {
        Some(output::Spool::start(
            runs.clone(),
            run_id.clone(),
            &args.outputs,
        )?)
    };
    let (interrupted, status, reason, unpassed) =
        follow(runs, &run_id, submitted.total_tasks).await?;
    debug!(elapsed_ms = ms(), "run ended");
    let cost_limited = status == Some(v1::RunStatus::CostLimited);
    let failed = status == Some(v1::RunStatus::Failed);
    if interrupted || cost_limited {
        settle(runs, &run_id).await;
    }
    if cost_limited {
        eprintln!(
            "run stopped: its results reached the cost cap of {}",
            usd(args.max_cost.unwrap_or(0.0))
        );
    }
    if failed {
        eprintln!("run failed: {reason}");
    }

    // The summary, the last results and the failures listed are fetched at
    // once.
    let summary = async {
        analytics
            .get_run_summary(v1::GetRunSummaryRequest {
                run_id: run_id.clone(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| client::status_message("summary", &s))
            .inspect(|_| debug!(elapsed_ms = ms(), "summary fetched"))
    };
    let spooled = async {
        match spool {
            Some(spool) => {
                let spooled = spool.finish().await.map(Some);
                debug!(elapsed_ms = ms(), "last results rendered");
                spooled
            }
            None => Ok(None),
        }
    };
    let failures = async {
        // After a cancel, results written since the last event count too.
        if unpassed > 0 || interrupted || cost_limited {
            first_failures(&mut runs.clone(), &run_id).await
        } else {
            Ok(Vec::new())
        }
    };
    let (summary, spooled, failures) = tokio::join!(summary, spooled, failures);
    let (summary, spooled, failures) = (summary?, spooled?, failures?);
    debug!(elapsed_ms = ms(), "summary and last results fetched");
    let mut stdout = std::io::stdout().lock();
    output::failure_lines(&failures, summary.failed + summary.errors, &mut stdout)?;
    output::summary_table(&summary, &mut stdout)?;
    drop(stdout);
    let regressed = match &args.baseline {
        Some(baseline) if !interrupted && !failed => {
            against_baseline(&mut gateway, baseline, &run_id).await?
        }
        _ => false,
    };

    // The files are written while the embedded stack stops: it is no
    // longer needed.
    let written = spooled.map(|spooled| {
        let summary = summary.clone();
        tokio::task::spawn_blocking(move || spooled.write_files(&summary))
    });
    if let Some(stack) = stack {
        drop(gateway);
        stack.stop().await;
        debug!(elapsed_ms = ms(), "embedded stack stopped");
    }
    if let Some(written) = written {
        written.await.context("writing result files")??;
        debug!(elapsed_ms = ms(), "result files written");
        for path in &args.outputs {
            eprintln!("wrote {}", path.display());
        }
    }
    println!("run id: {run_id}");
    // Where its story is told, when its spans went anywhere.
    let trace_id = &submitted.trace_id;
    if !trace_id.is_empty() {
        match gauntlet_telemetry::trace_link(trace_id) {
            Some(link) => println!("trace: {link}"),
            None if gauntlet_telemetry::exporting() => println!("trace id: {trace_id}"),
            None => {}
        }
    }
    Ok(if interrupted {
        INTERRUPTED
    } else if failed {
        // Not a verdict on the suite: the run could not be carried out.
        1
    } else if regressed {
        compare::REGRESSION_EXIT
    } else if cost_limited || summary.failed + summary.errors > 0 {
        args.fail_exit_code
    } else {
        0
    })
}

/// `--baseline`: checks the run against its baseline (DetectRegressions)
/// and prints what `gauntlet regressions` prints; true on a regression.
/// `last` with no earlier completed run of the suite says so and is no
/// regression.
async fn against_baseline(
    gateway: &mut client::Gateway,
    baseline: &str,
    run_id: &str,
) -> anyhow::Result<bool> {
    let request = v1::DetectRegressionsRequest {
        run_id: run_id.to_owned(),
        baseline_run_id: if baseline == "last" {
            String::new()
        } else {
            baseline.to_owned()
        },
        ..Default::default()
    };
    let found = match gateway.analytics.detect_regressions(request).await {
        Ok(found) => found.into_inner(),
        Err(s) if baseline == "last" && s.code() == tonic::Code::FailedPrecondition => {
            eprintln!("baseline: {}", s.message());
            return Ok(false);
        }
        Err(s) => return Err(client::status_message("baseline comparison", &s)),
    };
    print!("{}", regressions::text(&found));
    Ok(found.regressed)
}

/// How many times each test × prompt × provider runs: `--repeat`, else the
/// suite's `evaluateOptions.repeat`, else once.
fn repeats(flag: Option<u32>, suite: Option<u32>) -> u32 {
    flag.or(suite).unwrap_or(1).max(1)
}

/// `gauntlet validate SUITE`: every test read and checked as `run` reads
/// it (and encoded as it would be sent), nothing started.
pub fn validate(path: &std::path::Path) -> anyhow::Result<()> {
    let file = suite_file::open(path, suite_file::Filters::default())?;
    let tests = file.tests()?;
    let (prompts, providers) = (tests.header.prompts.len(), tests.header.providers.len());
    let mut broken = None;
    let read = client::encode_lines(&tests.header, tests.tests, 1 << 20, |chunk| match chunk {
        Err(err) => {
            broken = Some(err);
            false
        }
        Ok(_) => true,
    });
    if let Some(err) = broken {
        return Err(err);
    }
    let shape = gauntlet_core::suite::TaskShape {
        tests: read,
        prompts: prompts as u64,
        providers: providers as u64,
        // As `run` uses it without `--repeat`.
        repeat: repeats(None, tests.header.repeat),
    };
    println!(
        "{}: valid: {read} tests × {prompts} prompts × {providers} providers{} = {} tasks",
        path.display(),
        if shape.repeat > 1 {
            format!(" × {} repeats", shape.repeat)
        } else {
            String::new()
        },
        shape.count()
    );
    Ok(())
}

/// Failures listed above the summary, at most.
const LISTED_FAILURES: u32 = 10;

/// The first failed and errored results, in task order.
async fn first_failures(
    runs: &mut RunServiceClient<crate::client::Conn>,
    run_id: &str,
) -> anyhow::Result<Vec<v1::Result>> {
    let mut out = Vec::new();
    for status in [v1::ResultStatus::Fail, v1::ResultStatus::Error] {
        let page = client::result_page(runs, run_id, status, LISTED_FAILURES, String::new())
            .await
            .map_err(|s| client::status_message("list results", &s))?;
        out.extend(page.results);
    }
    out.sort_by_key(|r| r.task_index);
    out.truncate(LISTED_FAILURES as usize);
    Ok(out)
}

/// After a cancel, workers write what they finished within a moment: wait
/// until the stored count stops moving (at most a few seconds), so the
/// partial summary and the result files agree with what is kept.
async fn settle(runs: &mut RunServiceClient<crate::client::Conn>, run_id: &str) {
    let mut last = None;
    for _ in 0..20 {
        let completed = runs
            .get_run(v1::GetRunRequest {
                run_id: run_id.into(),
            })
            .await
            .ok()
            .map(|r| r.into_inner().completed_tasks);
        if completed.is_some() && completed == last {
            return;
        }
        last = completed;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

/// How progress is shown: a bar on a terminal, periodic lines otherwise.
enum View {
    Bar(ProgressBar),
    Lines { last: Instant },
}

impl View {
    fn new(total: u64) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} {per_sec} ETA {eta}",
                )
                .expect("static template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            View::Bar(bar)
        } else {
            View::Lines {
                last: Instant::now() - Duration::from_secs(60),
            }
        }
    }

    fn update(&mut self, p: &v1::RunProgress, force: bool) {
        let msg = format!("✓ {} ✗ {} ! {}", p.passed, p.failed, p.errors);
        match self {
            View::Bar(bar) => {
                bar.set_length(p.total_tasks);
                bar.set_position(p.completed_tasks);
                bar.set_message(msg);
            }
            View::Lines { last } => {
                if force || last.elapsed() >= Duration::from_secs(2) {
                    *last = Instant::now();
                    eprintln!(
                        "progress: {}/{} done, {} passed, {} failed, {} errors",
                        p.completed_tasks, p.total_tasks, p.passed, p.failed, p.errors
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let View::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Follows the run to its end. Ctrl-C cancels the run (results already
/// written stay) and keeps following until the server confirms the end;
/// returns whether that happened, the final status, why it ended so, and
/// how many results failed or errored.
async fn follow(
    runs: &mut RunServiceClient<crate::client::Conn>,
    run_id: &str,
    total: u64,
) -> anyhow::Result<(bool, Option<v1::RunStatus>, String, u64)> {
    let mut stream = runs
        .watch_run(v1::WatchRunRequest {
            run_id: run_id.into(),
        })
        .await
        .map_err(|s| client::status_message("watch", &s))?
        .into_inner();
    let mut view = View::new(total);
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                view.finish();
                eprintln!("interrupted: cancelling run {run_id}");
                runs.cancel_run(v1::CancelRunRequest { run_id: run_id.into() })
                    .await
                    .map_err(|s| client::status_message("cancel", &s))?;
            }
            item = stream.next() => match item {
                Some(Ok(p)) => {
                    let status = v1::RunStatus::try_from(p.status);
                    let done = status.is_ok_and(v1::RunStatus::is_terminal);
                    view.update(&p, done);
                    if done {
                        view.finish();
                        return Ok((interrupted, status.ok(), p.status_reason, p.failed + p.errors));
                    }
                }
                Some(Err(s)) => {
                    view.finish();
                    return Err(client::status_message("watch", &s));
                }
                None => {
                    view.finish();
                    anyhow::bail!("the server ended the progress stream before the run finished");
                }
            }
        }
    }
}
