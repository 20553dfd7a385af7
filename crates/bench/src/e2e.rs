//! `gauntlet-bench e2e`: N test cases against the project's mock model at a
//! given latency and concurrency, through the real binaries, embedded
//! (`gauntlet up` over SQLite and the in-process bus) or distributed (one
//! `gauntlet serve <service>` process per service over RabbitMQ, Postgres
//! and Redis). Prints tests/s, task latency percentiles and the peak RSS of
//! every process.

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::ValueEnum;
use futures::StreamExt;
use gauntlet_cli::client::{self, Gateway};
use gauntlet_proto::v1;
use tokio::process::Command;

use crate::{
    procs::{self, Procs, cpu_secs, free_port, peak_rss_kib, wait_port, wait_serving},
    suite::BenchSuite,
};

const WAIT: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct E2eArgs {
    #[arg(long, value_enum, default_value = "embedded")]
    mode: Mode,
    /// Test cases (one prompt, one provider: N tasks).
    #[arg(long, short = 'n', default_value_t = 20_000)]
    cases: usize,
    /// Latency of every mock answer.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Provider calls in flight (worker.max_in_flight and the run's limit).
    #[arg(long, default_value_t = 1000)]
    concurrency: u32,
    /// Tasks per queue message.
    #[arg(long, default_value_t = 100)]
    batch_size: u32,
    /// Unacknowledged batches per worker (default: enough for twice the
    /// concurrency).
    #[arg(long)]
    prefetch: Option<u32>,
    /// Submit the suite as YAML text instead of JSON.
    #[arg(long)]
    yaml: bool,
    /// Measure the user's command instead of the engine: write the suite as
    /// YAML and time `gauntlet run suite.yaml -o out.json` (embedded, or
    /// `--server` against the distributed services), from its start to its
    /// exit, with its peak RSS and the time until the mock got its first call.
    #[arg(long)]
    via_cli: bool,
    /// With `--via-cli`: keep the command's phase timings
    /// (`RUST_LOG=gauntlet_cli=debug`) in this file.
    #[arg(long, value_name = "FILE", requires = "via_cli")]
    cli_log: Option<PathBuf>,
    /// Share of the mock's answers that are 429s (with `Retry-After`).
    #[arg(long, default_value_t = 0.0)]
    mock_rate_429: f64,
    /// The `Retry-After` of the mock's 429s, in seconds.
    #[arg(long, default_value_t = 1)]
    mock_retry_after_secs: u64,
    /// A true provider cap: the mock serves at most this many requests per
    /// second and answers the rest 429 (0: none).
    #[arg(long, default_value_t = 0)]
    mock_max_rps: u64,
    /// Where `gauntlet` and `gauntlet-mockllm` are (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Distributed: serve without API keys (to measure what keys, scoping
    /// and the per-key rate limit cost; a deployment has them on).
    #[arg(long)]
    no_auth: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Embedded,
    Distributed,
}

pub async fn run(args: E2eArgs) -> anyhow::Result<()> {
    let bin_dir = procs::bin_dir(args.bin_dir.clone())?;
    let gauntlet = procs::binary(&bin_dir, "gauntlet")?;
    let mockllm = procs::binary(&bin_dir, "gauntlet-mockllm")?;
    let tmp = tempfile::tempdir()?;
    let mut procs = Procs::new();

    let mock_port = free_port()?;
    procs.spawn(
        "mockllm",
        Command::new(&mockllm).args([
            "--listen",
            &format!("127.0.0.1:{mock_port}"),
            "--latency-ms",
            &args.latency_ms.to_string(),
            "--rate-429",
            &args.mock_rate_429.to_string(),
            "--retry-after-secs",
            &args.mock_retry_after_secs.to_string(),
            "--max-rps",
            &args.mock_max_rps.to_string(),
        ]),
    )?;
    wait_port(mock_port, "mockllm", WAIT).await?;
    let mock_url = format!("http://127.0.0.1:{mock_port}");

    let prefetch = args
        .prefetch
        .unwrap_or((args.concurrency / args.batch_size.max(1) * 2).clamp(2, 1000));
    let gateway_port = free_port()?;
    let common: Vec<(String, String)> = vec![
        (
            "GAUNTLET_GATEWAY__LISTEN".into(),
            format!("127.0.0.1:{gateway_port}"),
        ),
        (
            "GAUNTLET_WORKER__MAX_IN_FLIGHT".into(),
            args.concurrency.to_string(),
        ),
        ("GAUNTLET_WORKER__PREFETCH".into(), prefetch.to_string()),
        (
            "GAUNTLET_AMQP__BATCH_SIZE".into(),
            args.batch_size.to_string(),
        ),
        ("OPENAI_API_KEY".into(), "bench".into()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    let mut common = common;
    if args.mode == Mode::Distributed {
        let (auth, key) = crate::stack::auth_env(!args.no_auth);
        common.extend(auth);
        // One cluster in this process: its clients send the key.
        if let Some(key) = key {
            client::set_api_key(&key)?;
        }
    }
    // Throwaway database and vhost for the distributed run, dropped at the end.
    let mut _db = None;
    let mut _vhost = None;
    match args.mode {
        Mode::Embedded if args.via_cli => {}
        Mode::Embedded => {
            procs.spawn(
                "gauntlet up (all services)",
                Command::new(&gauntlet)
                    .args(["up", "--data-dir"])
                    .arg(tmp.path().join("data"))
                    .envs(common.iter().cloned()),
            )?;
        }
        Mode::Distributed => {
            let db = gauntlet_store::testing::TestDatabase::create().await;
            let vhost = gauntlet_bus::testing::TestVhost::create().await;
            let ports: Vec<u16> = (0..4).map(|_| free_port()).collect::<Result<_, _>>()?;
            let url = |p: u16| format!("http://127.0.0.1:{p}");
            let mut env = common.clone();
            env.extend([
                ("GAUNTLET_DATABASE__URL".into(), db.config.url.clone()),
                ("GAUNTLET_AMQP__URL".into(), vhost.url.clone()),
                (
                    "GAUNTLET_REDIS__PREFIX".into(),
                    format!("gauntlet-bench-{}", uuid::Uuid::new_v4().simple()),
                ),
                (
                    "GAUNTLET_WORKER__LISTEN".into(),
                    format!("127.0.0.1:{}", ports[0]),
                ),
                (
                    "GAUNTLET_ANALYTICS__LISTEN".into(),
                    format!("127.0.0.1:{}", ports[1]),
                ),
                (
                    "GAUNTLET_REPORTS__LISTEN".into(),
                    format!("127.0.0.1:{}", ports[2]),
                ),
                (
                    "GAUNTLET_MONITOR__LISTEN".into(),
                    format!("127.0.0.1:{}", ports[3]),
                ),
                ("GAUNTLET_GATEWAY__ANALYTICS_URL".into(), url(ports[1])),
                ("GAUNTLET_GATEWAY__MONITOR_URL".into(), url(ports[3])),
                ("GAUNTLET_REPORTS__ANALYTICS_URL".into(), url(ports[1])),
            ]);
            for service in ["gateway", "worker", "analytics", "reports", "monitor"] {
                procs.spawn(
                    service,
                    Command::new(&gauntlet)
                        .args(["serve", service])
                        .envs(env.iter().cloned()),
                )?;
            }
            _db = Some(db);
            _vhost = Some(vhost);
        }
    }
    if args.via_cli {
        let server =
            (args.mode == Mode::Distributed).then(|| format!("http://127.0.0.1:{gateway_port}"));
        if server.is_some() {
            wait_serving(gateway_port, "gateway", WAIT).await?;
        }
        let result = via_cli(
            &args,
            &gauntlet,
            &mock_url,
            mock_port,
            server,
            &common,
            tmp.path(),
        )
        .await;
        let usage = procs.usage();
        procs.stop().await;
        let run = result?;
        println!(
            "via cli: mode={} cases={} latency_ms={} concurrency={}",
            match args.mode {
                Mode::Embedded => "embedded",
                Mode::Distributed => "distributed",
            },
            args.cases,
            args.latency_ms,
            args.concurrency
        );
        println!(
            "`gauntlet run suite.yaml -o out.json`: wall {:.2} s, {:.0} tests/s, first provider call after {} ms, exit {}",
            run.wall.as_secs_f64(),
            args.cases as f64 / run.wall.as_secs_f64(),
            run.first_call
                .map_or("-".into(), |d| d.as_millis().to_string()),
            run.exit
        );
        println!(
            "peak RSS gauntlet run: {:.1} MB, CPU {:.2} s",
            run.peak_kib as f64 / 1024.0,
            run.cpu_secs
        );
        for (name, (kib, cpu)) in usage {
            println!(
                "peak RSS {name}: {:.1} MB, CPU {cpu:.2} s",
                kib as f64 / 1024.0
            );
        }
        return Ok(());
    }
    wait_serving(gateway_port, "gateway", WAIT).await?;
    let result = drive(&args, &mock_url, gateway_port).await;
    let usage = procs.usage();
    procs.stop().await;
    let (elapsed, summary) = result?;

    let rate = args.cases as f64 / elapsed.as_secs_f64();
    let latency = summary.latency.unwrap_or_default();
    println!(
        "mode={} cases={} latency_ms={} concurrency={} batch={}",
        match args.mode {
            Mode::Embedded => "embedded",
            Mode::Distributed => "distributed",
        },
        args.cases,
        args.latency_ms,
        args.concurrency,
        args.batch_size
    );
    println!(
        "wall {:.2} s, {:.0} tests/s, {} passed, {} failed, {} errors",
        elapsed.as_secs_f64(),
        rate,
        summary.passed,
        summary.failed,
        summary.errors
    );
    println!(
        "task latency p50 {:.1} ms, p99 {:.1} ms",
        latency.p50_ms, latency.p99_ms
    );
    for (name, (kib, cpu)) in usage {
        println!(
            "peak RSS {name}: {:.1} MB, CPU {cpu:.2} s",
            kib as f64 / 1024.0
        );
    }
    Ok(())
}

/// What the user's command did.
struct CliRun {
    wall: Duration,
    first_call: Option<Duration>,
    peak_kib: u64,
    cpu_secs: f64,
    exit: i32,
}

/// Requests the mock has answered so far, from its `/stats` (plain HTTP/1.0).
async fn mock_requests(port: u16) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    conn.write_all(b"GET /stats HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_millis(200), conn.read_to_string(&mut body))
        .await
        .ok()?
        .ok()?;
    let at = body.find("\"requests\":")? + "\"requests\":".len();
    let digits: String = body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Runs `gauntlet run suite.yaml -o out.json` as a user would, sampling its
/// peak RSS and CPU from /proc until it exits.
async fn via_cli(
    args: &E2eArgs,
    gauntlet: &std::path::Path,
    mock_url: &str,
    mock_port: u16,
    server: Option<String>,
    env: &[(String, String)],
    dir: &std::path::Path,
) -> anyhow::Result<CliRun> {
    let suite_path = dir.join("suite.yaml");
    std::fs::write(
        &suite_path,
        BenchSuite::new(args.cases, &format!("{mock_url}/v1")).yaml(),
    )?;
    let mut cmd = Command::new(gauntlet);
    cmd.arg("run")
        .arg(&suite_path)
        .arg("-o")
        .arg(dir.join("out.json"))
        .args([
            "--no-cache",
            "--max-concurrency",
            &args.concurrency.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.join("cli-data"))
        .envs(env.iter().cloned())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(log) = &args.cli_log {
        let file = std::fs::File::create(log)
            .with_context(|| format!("cannot write {}", log.display()))?;
        cmd.env("RUST_LOG", "gauntlet_cli=debug,warn").stderr(file);
    }
    if let Some(url) = &server {
        cmd.args(["--server", url]);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start gauntlet run")?;
    let pid = child.id().context("child has no pid")?;
    let (mut peak_kib, mut cpu, mut first_call) = (0, 0.0, None);
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(c) = cpu_secs(pid) {
            cpu = c;
        }
        if first_call.is_none() && mock_requests(mock_port).await.is_some_and(|n| n > 0) {
            first_call = Some(started.elapsed());
        }
        tokio::select! {
            status = child.wait() => break status?,
            _ = tokio::time::sleep(Duration::from_millis(if first_call.is_none() { 5 } else { 25 })) => {}
        }
    };
    Ok(CliRun {
        wall: started.elapsed(),
        first_call,
        peak_kib,
        cpu_secs: cpu,
        exit: status.code().unwrap_or(-1),
    })
}

/// Shares of the run's tasks whose completion time `drive` reports.
const SHARES: [f64; 3] = [0.5, 0.9, 0.99];

/// Submits the suite, follows the run to its end, returns the time from
/// submit to the final event and the run's summary.
async fn drive(
    args: &E2eArgs,
    mock_url: &str,
    gateway_port: u16,
) -> anyhow::Result<(Duration, v1::RunSummary)> {
    // The CLI's own client: the suite streams in chunks, so its size is
    // bounded by gateway.max_suite_bytes, not by one message.
    let mut gateway = Gateway::new(
        client::connect(
            &format!("http://127.0.0.1:{gateway_port}"),
            &gauntlet_config::GrpcConfig::default(),
        )
        .await?,
        client::limits(&gauntlet_config::load(None, std::env::vars())?, false),
    );
    let suite = BenchSuite::new(args.cases, &format!("{mock_url}/v1"));
    let text = if args.yaml {
        suite.yaml()
    } else {
        suite.json()
    };
    let started = Instant::now();
    let submitted = gateway
        .submit(
            text,
            if args.yaml {
                v1::SuiteFormat::Yaml
            } else {
                v1::SuiteFormat::Json
            },
            v1::RunOptions {
                max_concurrency: args.concurrency,
                no_cache: true,
                ..Default::default()
            },
        )
        .await
        .context("submit")?;
    let mut runs = gateway.runs.clone();
    let mut stream = runs
        .watch_run(v1::WatchRunRequest {
            run_id: submitted.run_id.clone(),
        })
        .await?
        .into_inner();
    let mut reached = [None; SHARES.len()];
    while let Some(p) = stream.next().await {
        let p = p?;
        for (at, share) in reached.iter_mut().zip(SHARES) {
            if at.is_none() && p.completed_tasks as f64 >= share * args.cases as f64 {
                *at = Some(started.elapsed());
            }
        }
        if v1::RunStatus::is_terminal_value(p.status) {
            break;
        }
    }
    let elapsed = started.elapsed();
    // How fast the bulk went, apart from the last stragglers (under 429s
    // with `Retry-After`, the unluckiest task's chain of waits sets the end).
    let shares = SHARES
        .iter()
        .zip(reached)
        .filter_map(|(share, at)| {
            at.map(|at| {
                format!(
                    "{:.0} % done after {:.2} s ({:.0} tests/s)",
                    share * 100.0,
                    at.as_secs_f64(),
                    share * args.cases as f64 / at.as_secs_f64()
                )
            })
        })
        .collect::<Vec<_>>();
    println!("{}", shares.join(", "));
    let summary = gateway
        .analytics
        .get_run_summary(v1::GetRunSummaryRequest {
            run_id: submitted.run_id,
        })
        .await?
        .into_inner();
    Ok((elapsed, summary))
}
