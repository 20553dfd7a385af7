//! The load and soak suite: the real services (one `gauntlet serve` process
//! per service) over the shared local Postgres, RabbitMQ and Redis, in a
//! database, virtual host and key prefix of their own, with the mock model
//! in this process.
//!
//! - `api`: reads (`ListRuns`, `GetRun`, `ListResults`, `GetRunSummary`) at a
//!   fixed arrival rate, open loop ([`arrivals`]): each request is timed from
//!   the moment it was due, so a slow answer cannot hide the requests queued
//!   behind it (no coordinated omission).
//! - `many-runs`: many runs submitted at once, all completing, with the
//!   spread of their progress along the way.
//! - `spike`: submissions at a base rate, ten times it for a while, and back.
//! - `soak`: mixed load for a long time, sampling RSS, open descriptors and
//!   database connections of every service (a leak check).

pub mod api;
pub mod runs;
pub mod soak;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context;
use gauntlet_bus::testing::TestVhost;
use gauntlet_cli::client::Gateway;
use gauntlet_mockllm::{MockConfig, MockServer};
use gauntlet_proto::v1;
use gauntlet_store::testing::TestDatabase;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::{
    stack::{Backends, Stack, StackOptions},
    suite::BenchSuite,
    table::Table,
};

/// What every load scenario shares.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Provider calls in flight per worker (`worker.max_in_flight`).
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: u32,
    /// Latency of every mock answer.
    #[arg(long, default_value_t = 20)]
    pub latency_ms: u64,
    /// Tasks per queue message.
    #[arg(long, default_value_t = 50)]
    pub batch_size: u32,
    /// `RUST_LOG` of the services.
    #[arg(long, default_value = "warn")]
    pub log: String,
    /// Where `gauntlet` is (default: next to this binary).
    #[arg(long, env = "GAUNTLET_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Serve without API keys (to measure what keys, scoping and the
    /// per-key rate limit cost; a deployment has them on).
    #[arg(long)]
    pub no_auth: bool,
}

/// The services, their backends and the mock, started for one scenario.
pub struct Env {
    pub stack: Stack,
    pub mock: MockServer,
    pub backends: Backends,
    pub db: TestDatabase,
    _vhost: TestVhost,
}

impl Env {
    pub async fn start(args: &CommonArgs) -> anyhow::Result<Self> {
        let dir = crate::procs::bin_dir(args.bin_dir.clone())?;
        let gauntlet = crate::procs::binary(&dir, "gauntlet")?;
        let db = TestDatabase::create().await;
        let vhost = TestVhost::create().await;
        let backends = Backends {
            database_url: db.config.url.clone(),
            amqp_url: vhost.url.clone(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: format!("gauntlet-load-{}", uuid::Uuid::new_v4().simple()),
        };
        let mock = MockServer::start(MockConfig {
            latency_ms: args.latency_ms,
            ..MockConfig::default()
        })
        .await?;
        let stack = Stack::start(
            &gauntlet,
            &backends,
            &StackOptions {
                workers: args.workers,
                max_in_flight: args.max_in_flight,
                prefetch: (args.max_in_flight / args.batch_size.max(1) * 2).clamp(2, 1000),
                batch_size: args.batch_size,
                all_services: true,
                log: args.log.clone(),
                env: Vec::new(),
                auth: !args.no_auth,
            },
        )
        .await?;
        Ok(Self {
            stack,
            mock,
            backends,
            db,
            _vhost: vhost,
        })
    }

    pub async fn stop(self) {
        self.stack.stop().await;
    }

    /// A suite of `cases` against this environment's mock.
    pub fn suite(&self, cases: usize) -> BenchSuite {
        let mut s = BenchSuite::new(cases, &self.mock.base_url());
        s.nonce = Some(uuid::Uuid::new_v4().simple().to_string());
        s
    }
}

/// Submits a run of `cases` (no response cache) and returns its id.
pub async fn submit(gateway: &mut Gateway, suite: &BenchSuite) -> Result<String, tonic::Status> {
    gateway
        .submit(
            suite.json(),
            v1::SuiteFormat::Json,
            v1::RunOptions {
                no_cache: true,
                ..Default::default()
            },
        )
        .await
        .map(|r| r.run_id)
}

/// Every run of the (dedicated) database, newest first, page by page.
pub async fn list_runs(gateway: &mut Gateway) -> anyhow::Result<Vec<v1::Run>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = gateway
            .runs
            .list_runs(v1::ListRunsRequest {
                page_size: 1000,
                page_token: token.clone(),
            })
            .await
            .context("ListRuns")?
            .into_inner();
        out.extend(page.runs);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Waits until every run in `ids` has ended, for at most `within`;
/// returns the runs and when each was first seen ended.
pub async fn wait_all(
    gateway: &mut Gateway,
    ids: &[String],
    within: Duration,
) -> anyhow::Result<(BTreeMap<String, v1::Run>, BTreeMap<String, Instant>)> {
    let deadline = Instant::now() + within;
    let mut ended_at = BTreeMap::new();
    loop {
        let runs: BTreeMap<String, v1::Run> = list_runs(gateway)
            .await?
            .into_iter()
            .filter(|r| ids.contains(&r.id))
            .map(|r| (r.id.clone(), r))
            .collect();
        let now = Instant::now();
        for r in runs.values() {
            if v1::RunStatus::is_terminal_value(r.status) {
                ended_at.entry(r.id.clone()).or_insert(now);
            }
        }
        if ended_at.len() == ids.len() || now >= deadline {
            return Ok((runs, ended_at));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Latencies of the answered requests (µs) and the count of errors, by
/// request name.
type ByName = BTreeMap<&'static str, (Histogram<u64>, u64)>;

/// Latency histograms (µs) and error counts, by name.
#[derive(Clone, Default)]
pub struct Latencies {
    inner: Arc<Mutex<ByName>>,
    pub in_flight: Arc<AtomicU64>,
}

impl Latencies {
    pub fn record(&self, name: &'static str, latency: Duration, ok: bool) {
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (h, errors) = map.entry(name).or_insert_with(|| {
            (
                Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"),
                0,
            )
        });
        if ok {
            h.saturating_record(latency.as_micros().max(1) as u64);
        } else {
            *errors += 1;
        }
    }

    pub fn snapshot(&self) -> ByName {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One row per name and a total: count, errors, p50/p95/p99/max in ms.
    pub fn table(&self, secs: f64) -> Table {
        let mut t = Table::new(&[
            "request", "ok", "errors", "rate /s", "p50 ms", "p95 ms", "p99 ms", "max ms",
        ]);
        let snap = self.snapshot();
        let mut total: Option<Histogram<u64>> = None;
        let mut total_errors = 0;
        let ms =
            |h: &Histogram<u64>, q: f64| format!("{:.2}", h.value_at_quantile(q) as f64 / 1000.0);
        for (name, (h, errors)) in &snap {
            t.row(vec![
                name.to_string(),
                h.len().to_string(),
                errors.to_string(),
                format!("{:.0}", (h.len() + errors) as f64 / secs),
                ms(h, 0.5),
                ms(h, 0.95),
                ms(h, 0.99),
                format!("{:.2}", h.max() as f64 / 1000.0),
            ]);
            total_errors += errors;
            match &mut total {
                Some(t) => {
                    let _ = t.add(h);
                }
                None => total = Some(h.clone()),
            }
        }
        if let Some(h) = total.filter(|_| snap.len() > 1) {
            t.row(vec![
                "all".into(),
                h.len().to_string(),
                total_errors.to_string(),
                format!("{:.0}", (h.len() + total_errors) as f64 / secs),
                ms(&h, 0.5),
                ms(&h, 0.95),
                ms(&h, 0.99),
                format!("{:.2}", h.max() as f64 / 1000.0),
            ]);
        }
        t
    }

    /// The quantile `q` of everything recorded, and the errors, over all names.
    pub fn overall(&self, q: f64) -> (Duration, u64, u64) {
        let snap = self.snapshot();
        let mut total: Option<Histogram<u64>> = None;
        let mut errors = 0;
        for (h, e) in snap.values() {
            errors += e;
            match &mut total {
                Some(t) => {
                    let _ = t.add(h);
                }
                None => total = Some(h.clone()),
            }
        }
        let h = total.unwrap_or_else(|| Histogram::new(3).expect("valid histogram"));
        (
            Duration::from_micros(h.value_at_quantile(q)),
            h.len(),
            errors,
        )
    }
}

/// Open-loop arrivals: calls `start(i, due)` for i = 0, 1, … at `rate` per
/// second from now for `duration`, each at its due time (a late timer fires
/// every request that has come due at once). `start` must not wait for the
/// request it starts; the request measures its latency from `due`.
pub async fn arrivals(rate: f64, duration: Duration, mut start: impl FnMut(u64, Instant)) -> u64 {
    let begin = Instant::now();
    let n = (rate * duration.as_secs_f64()).round() as u64;
    let interval_ns = (1e9 / rate).round() as u64;
    for i in 0..n {
        let due = begin + Duration::from_nanos(i * interval_ns);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        start(i, due);
    }
    n
}

/// Percentile `q` (0..=1) of `values` (sorted in place).
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let at = ((values.len() - 1) as f64 * q).round() as usize;
    values[at]
}

/// Increments on creation, decrements on drop: requests in flight.
pub struct InFlight(Arc<AtomicU64>);

impl InFlight {
    pub fn new(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until no request is in flight, for at most `within`.
pub async fn drain(counter: &AtomicU64, within: Duration) {
    let deadline = Instant::now() + within;
    while counter.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn arrivals_are_due_at_fixed_intervals_whatever_the_caller_does() {
        let mut dues = Vec::new();
        let n = arrivals(100.0, Duration::from_millis(100), |i, due| {
            // A slow caller delays the calls, never their due times.
            std::thread::sleep(Duration::from_millis(if i == 2 { 30 } else { 0 }));
            dues.push(due);
        })
        .await;
        assert_eq!(n, 10);
        assert_eq!(dues[3] - dues[0], Duration::from_millis(30));
        assert_eq!(dues[9] - dues[0], Duration::from_millis(90));
    }

    #[test]
    fn latencies_count_errors_apart_from_the_histogram() {
        let l = Latencies::default();
        l.record("a", Duration::from_millis(2), true);
        l.record("a", Duration::from_millis(4), true);
        l.record("b", Duration::from_millis(100), false);
        let (p100, ok, errors) = l.overall(1.0);
        assert_eq!((ok, errors), (2, 1));
        assert!(p100 >= Duration::from_millis(4) && p100 < Duration::from_micros(4100));
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0], 0.5), 2.0);
    }
}
