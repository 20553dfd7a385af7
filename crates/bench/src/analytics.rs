//! `gauntlet-bench analytics`: seeds two runs of N results each into a
//! throwaway Postgres database (bulk insert through the store, as workers
//! write), then times `GetRunSummary` and `CompareRuns` through the
//! analytics service, cold (no cache: each call computes) and cached, and
//! DetectRegressions of B against A, and GetTrends over both.

use std::{sync::Arc, time::Instant};

use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1::{self, analytics_service_client::AnalyticsServiceClient};
use gauntlet_store::{NewResult, NewRun, PgStore, ResultStatus, Store, testing::TestDatabase};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(clap::Args, Debug)]
pub struct AnalyticsArgs {
    /// Results in each of the two runs.
    #[arg(long, default_value_t = 1_000_000)]
    pub results: u64,
    /// Calls timed per figure.
    #[arg(long, default_value_t = 20)]
    pub calls: usize,
    /// Results per insert call (a worker's batch is far smaller than the
    /// default; the rollup costs more per result in small batches).
    #[arg(long, default_value_t = 5_000)]
    pub batch: usize,
}

/// Tests × 2 providers × 2 prompts × 1 repeat = results.
const PROVIDERS: u64 = 2;
const PROMPTS: u64 = 2;

fn suite_json() -> String {
    serde_json::json!({
        "description": "bench",
        "prompts": [
            {"id": "p0", "label": "prompt zero", "raw": "{{q}}"},
            {"id": "p1", "label": "prompt one", "raw": "Q: {{q}}"}
        ],
        "providers": [{"id": "openai:a"}, {"id": "openai:b"}],
        "tests": []
    })
    .to_string()
}

/// A deterministic pseudo-random stream (SplitMix64), so both runs and
/// every rerun see the same data.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// One run of `results` results; `pass_per_mille` of them pass.
async fn seed(
    store: &dyn Store,
    results: u64,
    pass_per_mille: u64,
    salt: u64,
    batch: usize,
) -> anyhow::Result<(Uuid, f64)> {
    let tests = results / (PROVIDERS * PROMPTS);
    let run = NewRun {
        trace_id: String::new(),
        id: Uuid::now_v7(),
        project_id: "default".into(),
        description: "bench".into(),
        label: String::new(),
        source: String::new(),
        compiled: suite_json(),
        options: serde_json::json!({"repeat": 1}),
        total_tasks: (tests * PROVIDERS * PROMPTS) as i64,
    };
    let bodies: Vec<String> = (0..tests)
        .map(|t| format!("{{\"vars\":{{\"q\":\"question {t}\"}},\"assert\":[]}}"))
        .collect();
    for (i, chunk) in bodies.chunks(5_000).enumerate() {
        store.put_tests(run.id, (i * 5_000) as i64, chunk).await?;
    }
    let run = store.create_run(run).await?;
    let started = Instant::now();
    let mut rows = Vec::with_capacity(batch);
    for task in 0..run.total_tasks {
        let t = task as u64;
        let r = mix(t ^ salt);
        let pass = r % 1000 < pass_per_mille;
        let status = if pass {
            ResultStatus::Pass
        } else if r.is_multiple_of(97) {
            ResultStatus::Error
        } else {
            ResultStatus::Fail
        };
        rows.push(NewResult {
            trace_id: String::new(),
            task_index: task,
            project_id: "default".into(),
            test_index: (t / (PROVIDERS * PROMPTS)) as i32,
            prompt_index: ((t / PROVIDERS) % PROMPTS) as i32,
            provider_index: (t % PROVIDERS) as i32,
            repeat_index: 0,
            provider_id: format!("openai:{}", if t.is_multiple_of(2) { "a" } else { "b" }),
            status,
            score: if pass { 1.0 } else { 0.0 },
            reason: String::new(),
            rendered_prompt: String::new(),
            output: "an answer of some forty characters or so".into(),
            assertions: serde_json::json!([
                {"type": "contains", "pass": pass, "score": if pass { 1.0 } else { 0.0 }, "reason": ""},
                {"type": "llm-rubric", "metric": "tone", "pass": !r.is_multiple_of(3), "score": 0.5, "reason": ""}
            ]),
            latency_ms: 200 + (r >> 20) as i32 % 1800,
            tokens_in: 30,
            tokens_out: 60,
            cost_usd: 0.0001,
            cached: false,
            error: String::new(),
        });
        if rows.len() == batch {
            store.insert_results(run.id, &rows).await?;
            rows.clear();
        }
    }
    if !rows.is_empty() {
        store.insert_results(run.id, &rows).await?;
    }
    let per_result_us = started.elapsed().as_secs_f64() * 1e6 / results as f64;
    Ok((run.id, per_result_us))
}

fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.95))
}

/// Times `calls` calls of `f`.
async fn time<F, Fut>(calls: usize, mut f: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    let mut ms = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        f().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(percentiles(ms))
}

/// Starts analytics over `store` with an L1 cache of `cache_bytes` (0: no
/// cache) and returns a client.
async fn analytics(
    store: Arc<dyn Store>,
    cache_bytes: u64,
    shutdown: &CancellationToken,
) -> anyhow::Result<AnalyticsServiceClient<tonic::transport::Channel>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let mut config = GauntletConfig::default();
    config.grpc.max_message_bytes = 64 << 20;
    let deps = gauntlet_analytics::Deps {
        store,
        cache: gauntlet_cache::Cache::local(cache_bytes),
    };
    tokio::spawn(gauntlet_analytics::run(
        config,
        deps,
        listener,
        shutdown.clone(),
    ));
    for _ in 0..100 {
        if let Ok(c) = AnalyticsServiceClient::connect(url.clone()).await {
            return Ok(c.max_decoding_message_size(64 << 20));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::bail!("analytics did not start")
}

/// Each store read of a summary of `run` alone, the best of `calls`.
async fn store_reads(store: &dyn Store, run: Uuid, calls: usize) -> anyhow::Result<String> {
    let mut reads = Vec::new();
    macro_rules! read {
        ($name:literal, $call:expr) => {{
            let mut best = f64::MAX;
            for _ in 0..calls.max(1) {
                let t = Instant::now();
                $call;
                best = best.min(t.elapsed().as_secs_f64() * 1000.0);
            }
            reads.push(format!("{} {best:.2} ms", $name));
        }};
    }
    read!("run", store.get_run(run).await?);
    read!("suite", store.get_suite(run).await?);
    read!(
        "metrics",
        store.for_each_result_metrics(run, &mut |_| ()).await?
    );
    read!(
        "latencies",
        store.for_each_latency_count(run, &mut |_| ()).await?
    );
    read!(
        "assertions",
        store.for_each_assertion_metrics(run, &mut |_| ()).await?
    );
    read!("slowest", store.slowest_results(run, 10).await?);
    read!("most-failed", store.most_failed_tests(run, 10).await?);
    read!("10 tests", store.get_tests(run, 1000, 1009).await?);
    Ok(reads.join(", "))
}

pub async fn run(args: AnalyticsArgs) -> anyhow::Result<()> {
    let db = TestDatabase::create().await;
    let store: Arc<dyn Store> = Arc::new(PgStore::connect(&db.config).await?);
    eprintln!(
        "seeding 2 runs of {} results into {}",
        args.results, db.config.url
    );
    let batch = args.batch.max(1);
    let (a, write_a) = seed(store.as_ref(), args.results, 800, 1, batch).await?;
    let (b, write_b) = seed(store.as_ref(), args.results, 780, 2, batch).await?;
    println!(
        "write: {:.1} µs per result stored (insert_results, {batch} a call; runs {a}, {b}) — {:.1} µs for B",
        write_a, write_b
    );
    println!(
        "store reads of a summary, each alone, before the roll-up: {}",
        store_reads(store.as_ref(), a, args.calls).await?
    );
    for run in [a, b] {
        let t = Instant::now();
        store.roll_up(run).await?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "roll-up of run {run}: {:.2} s ({:.1} µs a result)",
            s,
            s * 1e6 / args.results as f64
        );
    }
    println!(
        "store reads of a summary, each alone, rolled up: {}",
        store_reads(store.as_ref(), a, args.calls).await?
    );
    // What a comparison reads: each run's outcomes and test digests.
    let outcomes = |run: Uuid| {
        let store = store.clone();
        async move {
            let mut n = 0u64;
            store.for_each_outcome(run, &mut |_| n += 1).await?;
            let digests = store.test_digests(run).await?;
            anyhow::Ok((n, digests.len()))
        }
    };
    let t = Instant::now();
    let (n, tests) = outcomes(a).await?;
    let alone = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    tokio::try_join!(outcomes(a), outcomes(b))?;
    let both = t.elapsed().as_secs_f64() * 1e3;
    println!(
        "store reads of a comparison: {n} outcomes and {tests} test digests of one run {alone:.0} ms, of both at once {both:.0} ms"
    );
    let shutdown = CancellationToken::new();
    for (label, cache) in [("cold", 0), ("cached", 64 << 20)] {
        let client = analytics(store.clone(), cache, &shutdown).await?;
        let (p50, p95) = time(args.calls, || {
            let mut c = client.clone();
            async move {
                c.get_run_summary(v1::GetRunSummaryRequest {
                    run_id: a.to_string(),
                })
                .await
                .map(|_| ())
            }
        })
        .await?;
        println!("GetRunSummary {label}: p50 {p50:.1} ms, p95 {p95:.1} ms");
        let (p50, p95) = time(args.calls.clamp(1, 5), || {
            let mut c = client.clone();
            async move {
                c.compare_runs(v1::CompareRunsRequest {
                    run_a: a.to_string(),
                    run_b: b.to_string(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
            }
        })
        .await?;
        println!("CompareRuns {label}: p50 {p50:.1} ms, p95 {p95:.1} ms");
        let (p50, p95) = time(args.calls.clamp(1, 5), || {
            let mut c = client.clone();
            async move {
                c.detect_regressions(v1::DetectRegressionsRequest {
                    run_id: b.to_string(),
                    baseline_run_id: a.to_string(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
            }
        })
        .await?;
        println!("DetectRegressions {label}: p50 {p50:.1} ms, p95 {p95:.1} ms");
        let (p50, p95) = time(args.calls, || {
            let mut c = client.clone();
            async move {
                c.get_trends(v1::GetTrendsRequest {
                    description: "bench".into(),
                    bucket: v1::TrendBucket::Hour as i32,
                    ..Default::default()
                })
                .await
                .map(|_| ())
            }
        })
        .await?;
        println!("GetTrends (both runs, hourly) {label}: p50 {p50:.1} ms, p95 {p95:.1} ms");
    }
    shutdown.cancel();
    Ok(())
}
