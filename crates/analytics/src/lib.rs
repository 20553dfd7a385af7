//! Analytics: turns a run's results (the source of truth) into summaries per
//! provider × prompt. Summaries are cached under a key that includes the
//! run's completed count and status, so a cached summary is never stale:
//! new results make a new key, and the TTL only bounds memory.

pub mod compare;
mod insights;
mod regressions;
pub mod stats;
mod summary;
mod trends;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, TryStreamExt};
use gauntlet_cache::Cache;
use gauntlet_config::{AnalyticsConfig, GauntletConfig};
use gauntlet_core::suite::Suite;
use gauntlet_proto::v1::{self, analytics_service_server::AnalyticsService};
use gauntlet_service::metrics::CacheCounters;
use gauntlet_service::{
    GrpcServer, connect_store, existing_run, internal, invalid, limits::answer, not_found, parse_id,
};
use gauntlet_store::{RunStatus, Store};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::warn;
use uuid::Uuid;

pub use summary::Summarizer;

/// Suite headers a trend reads at once.
const HEADERS_AT_ONCE: usize = 8;

/// L1 budget of the summary cache.
const L1_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub cache: Cache,
}

pub async fn serve(config: GauntletConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener = gauntlet_service::Listeners::bind(
        &config.analytics.listen,
        &config.analytics.metrics_listen,
    )
    .await?;
    let deps = gauntlet_service::while_starting("analytics", &config.grpc, &listener.grpc, async {
        Ok(Deps {
            store: connect_store(&config.database, &shutdown).await?,
            cache: Cache::new(&config.redis, L1_BYTES)?,
        })
    })
    .await?;
    run(config, deps, listener, shutdown).await
}

pub async fn run(
    config: GauntletConfig,
    deps: Deps,
    listener: impl Into<gauntlet_service::Listeners>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut server = GrpcServer::new("analytics", &config.grpc).await?;
    let limits = server.limits();
    gauntlet_service::metrics::watch_store(&server.metrics(), deps.store.clone(), shutdown.clone());
    let roller = (config.analytics.roll_up_every_secs > 0).then(|| {
        tokio::spawn(roll_up_completed(
            deps.store.clone(),
            config.analytics.roll_up_at,
            Duration::from_secs(config.analytics.roll_up_every_secs),
            shutdown.clone(),
        ))
    });
    // The monitor's alerts and recent runs: it has no database of its own.
    server.add_service(gauntlet_service::limited!(
        gauntlet_proto::internal::v1::records_server::RecordsServer::new(
            gauntlet_service::records::RecordsApi::new(deps.store.clone())
        ),
        limits
    ));
    server.add_service(gauntlet_service::limited!(
        v1::analytics_service_server::AnalyticsServiceServer::new(Analytics {
            cache_counts: CacheCounters::new(&server.metrics(), "analytics"),
            deps,
            config: config.analytics,
        }),
        limits
    ));
    let served = server.serve(listener.into(), shutdown).await;
    if let Some(roller) = roller {
        // Stops with the server; a roll-up under way is rolled back.
        let _ = roller.await;
    }
    served
}

/// Completed runs looked for per pass of the roller.
const ROLL_UP_PER_PASS: u32 = 8;

/// Every `every`, rolls up the completed runs of `roll_up_at` results or
/// more that are not yet, one at a time, so even their first summary
/// reads rollups. Several analytics replicas may look at once:
/// `Store::roll_up` claims a run, so each is rolled up once.
async fn roll_up_completed(
    store: Arc<dyn Store>,
    roll_up_at: u64,
    every: Duration,
    shutdown: CancellationToken,
) {
    let at_least = i64::try_from(roll_up_at).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let runs = match store.unrolled_runs(at_least, ROLL_UP_PER_PASS).await {
            Ok(runs) => runs,
            Err(error) => {
                warn!(%error, "looking for runs to roll up failed; trying again");
                continue;
            }
        };
        for id in runs {
            let rolled = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                rolled = store.roll_up(id) => rolled,
            };
            if let Err(error) = rolled {
                warn!(%error, run_id = %id, "rolling the run up failed; its summaries stay live");
            }
        }
    }
}

pub struct Analytics {
    deps: Deps,
    config: AnalyticsConfig,
    cache_counts: CacheCounters,
}

#[tonic::async_trait]
impl AnalyticsService for Analytics {
    async fn get_run_summary(
        &self,
        request: Request<v1::GetRunSummaryRequest>,
    ) -> Result<Response<v1::RunSummary>, Status> {
        gauntlet_telemetry::set_attribute("gauntlet.run_id", request.get_ref().run_id.clone());
        let id = parse_id("run_id", &request.get_ref().run_id)?;
        // Nothing about a completed run changes any more: its summary is
        // answered from the cache without reading the run.
        let completed_key = format!("summary:{id}:completed");
        if let Some(summary) = self.cached::<v1::RunSummary>(&completed_key).await {
            return Ok(answer(summary));
        }
        let run = existing_run(self.deps.store.as_ref(), id).await?;
        let key = if run.status == RunStatus::Completed {
            completed_key
        } else {
            format!(
                "summary:{id}:{}:{}",
                run.completed_tasks,
                run.status.as_str()
            )
        };
        if let Some(summary) = self.cached::<v1::RunSummary>(&key).await {
            return Ok(answer(summary));
        }
        let suite = self.header(id).await?;
        let store = self.deps.store.as_ref();
        // Five reads of rollups at once: a summary waits for the slowest,
        // not the sum.
        let mut summarizer = Summarizer::default();
        let (mut metrics, mut latencies, mut assertions) = (Vec::new(), Vec::new(), Vec::new());
        let mut add_metrics = |m| metrics.push(m);
        let mut add_latency = |l| latencies.push(l);
        let mut add_assertions = |m| assertions.push(m);
        let ((), (), (), slowest, most_failed) = tokio::try_join!(
            store.for_each_result_metrics(id, &mut add_metrics),
            store.for_each_latency_count(id, &mut add_latency),
            store.for_each_assertion_metrics(id, &mut add_assertions),
            store.slowest_results(id, summary::LISTED),
            store.most_failed_tests(id, summary::LISTED),
        )
        .map_err(|e| internal("summary reads", e))?;
        metrics.iter().for_each(|m| summarizer.add(m));
        latencies.iter().for_each(|l| summarizer.add_latency(l));
        assertions.iter().for_each(|m| summarizer.add_assertions(m));
        let listed = slowest
            .iter()
            .map(|(_, o)| o.test_index as u32)
            .chain(most_failed.iter().map(|f| f.test_index as u32));
        let heads = self.heads(id, &suite, listed).await?;
        let summary = summarizer.finish(
            &run,
            &suite,
            summary::Cases {
                slowest,
                most_failed,
                heads,
            },
        );
        self.remember(&key, &summary, run.status.is_terminal())
            .await;
        let big = u64::try_from(run.completed_tasks).unwrap_or(0) >= self.config.roll_up_at;
        if run.status == RunStatus::Completed && !run.rolled_up && big {
            // Roll the run up for the next summaries (a no-op if another
            // summary did meanwhile).
            let store = self.deps.store.clone();
            tokio::spawn(async move {
                if let Err(error) = store.roll_up(id).await {
                    warn!(%error, run_id = %id, "rolling the run up failed; its summaries stay live");
                }
            });
        }
        Ok(answer(summary))
    }

    async fn compare_runs(
        &self,
        request: Request<v1::CompareRunsRequest>,
    ) -> Result<Response<v1::Comparison>, Status> {
        gauntlet_telemetry::set_attribute("gauntlet.run_a", request.get_ref().run_a.clone());
        gauntlet_telemetry::set_attribute("gauntlet.run_b", request.get_ref().run_b.clone());
        let req = request.into_inner();
        let a = parse_id("run_a", &req.run_a)?;
        let b = optional_id("run_b", &req.run_b)?;
        if b == Some(a) {
            return Err(invalid(
                "run_b",
                "is run_a: leave it empty to compare within one run",
            ));
        }
        let alpha = alpha(req.alpha)?;
        let by_proto = v1::CompareBy::try_from(req.by)
            .map_err(|_| invalid("by", format!("{} is not a CompareBy", req.by)))?;
        let by = compare::By::from_proto(by_proto, b.is_some());
        let run_a = existing_run(self.deps.store.as_ref(), a).await?;
        let run_b = match b {
            Some(b) => Some(existing_run(self.deps.store.as_ref(), b).await?),
            None => None,
        };
        let key = format!(
            "compare:{}:{}:{by:?}:{alpha}:{}",
            progress(&run_a),
            run_b.as_ref().map(progress).unwrap_or_default(),
            req.seed
        );
        if let Some(c) = self.cached::<v1::Comparison>(&key).await {
            return Ok(Response::new(c));
        }
        // Both runs are read at once.
        let (side_a, side_b) = tokio::try_join!(self.side(a, b.is_some()), async {
            match b {
                Some(b) => self.side(b, true).await.map(|(side, _)| Some(side)),
                None => Ok(None),
            }
        })?;
        // Off the async threads: a million results a side take a while.
        let seed = req.seed;
        let pairs = tokio::task::spawn_blocking(move || {
            compare::compare(&side_a.0, side_b.as_ref(), by, alpha, seed)
        })
        .await
        .map_err(|e| internal("compare", anyhow::Error::from(e)))?
        .map_err(|r| Status::failed_precondition(r.0))?;
        let partial =
            !run_a.status.is_terminal() || run_b.as_ref().is_some_and(|r| !r.status.is_terminal());
        let comparison = v1::Comparison {
            run_a: req.run_a,
            run_b: req.run_b,
            by: by_proto as i32,
            alpha,
            seed: req.seed,
            partial,
            pairs,
        };
        self.remember(&key, &comparison, !partial).await;
        Ok(Response::new(comparison))
    }

    async fn get_insights(
        &self,
        request: Request<v1::GetInsightsRequest>,
    ) -> Result<Response<v1::Insights>, Status> {
        gauntlet_telemetry::set_attribute("gauntlet.run_id", request.get_ref().run_id.clone());
        let req = request.into_inner();
        let id = parse_id("run_id", &req.run_id)?;
        let alpha = alpha(req.alpha)?;
        let max_listed = listed_at_most(req.max_listed, insights::DEFAULT_LISTED);
        let store = self.deps.store.as_ref();
        let run = existing_run(store, id).await?;
        let key = format!("insights:{}:{alpha}:{max_listed}", progress(&run));
        if let Some(i) = self.cached::<v1::Insights>(&key).await {
            return Ok(Response::new(i));
        }
        let (side, suite) = self.side(id, false).await?;
        let mut found = insights::insights(&side, alpha, 0, max_listed);
        found.partial = !run.status.is_terminal();
        let heads = self.heads(id, &suite, insights::listed(&found)).await?;
        insights::name_cases(&mut found, |t| summary::case_name(heads.get(t)));
        self.remember(&key, &found, !found.partial).await;
        Ok(Response::new(found))
    }

    async fn get_trends(
        &self,
        request: Request<v1::GetTrendsRequest>,
    ) -> Result<Response<v1::Trends>, Status> {
        gauntlet_telemetry::set_attribute("gauntlet.suite", request.get_ref().description.clone());
        let project = gauntlet_service::project_of(&request);
        self.trends(request.into_inner(), &project)
            .await
            .map(Response::new)
    }

    async fn detect_regressions(
        &self,
        request: Request<v1::DetectRegressionsRequest>,
    ) -> Result<Response<v1::Regressions>, Status> {
        gauntlet_telemetry::set_attribute("gauntlet.run_id", request.get_ref().run_id.clone());
        let req = request.into_inner();
        let id = parse_id("run_id", &req.run_id)?;
        let baseline_id = optional_id("baseline_run_id", &req.baseline_run_id)?;
        if baseline_id == Some(id) {
            return Err(invalid(
                "baseline_run_id",
                "is run_id: a run is no baseline for itself",
            ));
        }
        let alpha = alpha(req.alpha)?;
        let max_listed = listed_at_most(req.max_listed, regressions::DEFAULT_LISTED);
        let store = self.deps.store.as_ref();
        let run = existing_run(store, id).await?;
        let baseline = match baseline_id {
            Some(b) => existing_run(store, b).await?,
            None => store
                .previous_completed_run(&run)
                .await
                .map_err(|e| internal("previous run", e))?
                .ok_or_else(|| {
                    Status::failed_precondition(format!(
                        "run {id} has no baseline: no completed run of the suite \"{}\" was created before it; name one in baseline_run_id",
                        run.description
                    ))
                })?,
        };
        let key = format!(
            "regressions:{}:{}:{alpha}:{}:{max_listed}",
            progress(&run),
            progress(&baseline),
            req.seed
        );
        if let Some(r) = self.cached::<v1::Regressions>(&key).await {
            return Ok(Response::new(r));
        }
        let ((side_a, _), (side_b, suite)) =
            tokio::try_join!(self.side(baseline.id, true), self.side(id, true))?;
        // Off the async threads: a million results a side take a while.
        let seed = req.seed;
        let (pairs, flips) = tokio::task::spawn_blocking(move || {
            compare::regressions(&side_a, &side_b, alpha, seed)
        })
        .await
        .map_err(|e| internal("compare", anyhow::Error::from(e)))?
        .map_err(|r| Status::failed_precondition(r.0))?;
        let (mut baseline_tallies, mut run_tallies) =
            (regressions::Tallies::new(), regressions::Tallies::new());
        let (mut add_a, mut add_b) = (
            |m| regressions::tally(&mut baseline_tallies, &m),
            |m| regressions::tally(&mut run_tallies, &m),
        );
        tokio::try_join!(
            store.for_each_assertion_metrics(baseline.id, &mut add_a),
            store.for_each_assertion_metrics(id, &mut add_b),
        )
        .map_err(|e| internal("assertion tallies", e))?;
        let shifts = regressions::shifts(&baseline_tallies, &run_tallies, alpha);
        let heads = self
            .heads(id, &suite, regressions::listed(&flips, max_listed))
            .await?;
        let partial = !run.status.is_terminal() || !baseline.status.is_terminal();
        let regressed = regressions::regressed(&pairs, &shifts);
        let found = v1::Regressions {
            run_id: id.to_string(),
            baseline_run_id: baseline.id.to_string(),
            alpha,
            partial,
            comparison: Some(v1::Comparison {
                run_a: baseline.id.to_string(),
                run_b: id.to_string(),
                by: v1::CompareBy::Unspecified as i32,
                alpha,
                seed: req.seed,
                partial,
                pairs,
            }),
            pass_to_fail_count: flips.pass_to_fail.len() as u64,
            fail_to_pass_count: flips.fail_to_pass.len() as u64,
            pass_to_fail: regressions::cases(&flips.pass_to_fail, max_listed, &heads),
            fail_to_pass: regressions::cases(&flips.fail_to_pass, max_listed, &heads),
            metrics: shifts,
            regressed,
        };
        self.remember(&key, &found, !partial).await;
        Ok(Response::new(found))
    }
}

impl Analytics {
    async fn trends(&self, req: v1::GetTrendsRequest, project: &str) -> Result<v1::Trends, Status> {
        let bucket = v1::TrendBucket::try_from(req.bucket)
            .map_err(|_| invalid("bucket", format!("{} is not a TrendBucket", req.bucket)))?;
        if req.description.is_empty() && req.label.is_empty() {
            return Err(invalid(
                "description",
                "name the suite by its description, or give a label",
            ));
        }
        let time = |field: &str, t: Option<gauntlet_proto::Timestamp>| {
            t.map(|t| {
                chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                    .ok_or_else(|| invalid(field, format!("{}s is not a time", t.seconds)))
            })
            .transpose()
        };
        let length = trends::length(bucket);
        let until = time("until", req.until)?.unwrap_or_else(chrono::Utc::now);
        let since = time("since", req.since)?.unwrap_or(until - length * trends::DEFAULT_BUCKETS);
        if since >= until {
            return Err(invalid(
                "since",
                format!("{since} is not before until ({until})"),
            ));
        }
        let spans = (until - since).num_seconds() / length.num_seconds().max(1);
        if spans > trends::MAX_BUCKETS {
            return Err(invalid(
                "since",
                format!(
                    "{since} to {until} is {spans} buckets; at most {} (use a longer bucket)",
                    trends::MAX_BUCKETS
                ),
            ));
        }
        let query = gauntlet_store::TrendQuery {
            project_id: project.into(),
            description: Some(req.description.clone()).filter(|d| !d.is_empty()),
            label: Some(req.label.clone()).filter(|l| !l.is_empty()),
            since,
            until,
        };
        let mut trend = trends::Trend::new(bucket);
        self.deps
            .store
            .for_each_trend_metrics(&query, &mut |row| trend.add(&row))
            .await
            .map_err(|e| internal("trend metrics", e))?;
        // Each run's provider names, from its suite header: several read
        // at once, as a trend spans many runs.
        let names: std::collections::BTreeMap<Uuid, Vec<String>> =
            futures::stream::iter(trend.runs())
                .map(|run| async move {
                    let labels = self.labels(run).await?;
                    let names = labels.providers.iter().map(|p| p.name().to_owned());
                    Ok::<_, Status>((run, names.collect()))
                })
                .buffer_unordered(HEADERS_AT_ONCE)
                .try_collect()
                .await?;
        let only = Some(req.provider.as_str()).filter(|p| !p.is_empty());
        Ok(v1::Trends {
            description: req.description,
            label: req.label,
            bucket: bucket as i32,
            since: Some(gauntlet_service::convert::timestamp(since)),
            until: Some(gauntlet_service::convert::timestamp(until)),
            points: trend.finish(&names, only),
        })
    }
}

/// The significance level when a request names none.
pub const DEFAULT_ALPHA: f64 = 0.05;

/// An id a request may leave empty.
fn optional_id(field: &str, text: &str) -> Result<Option<Uuid>, Status> {
    match text {
        "" => Ok(None),
        text => parse_id(field, text).map(Some),
    }
}

/// A request's `max_listed`: 0 means `default`.
fn listed_at_most(asked: u32, default: u32) -> usize {
    (if asked == 0 { default } else { asked }) as usize
}

/// A request's `alpha`: 0 is the default, else it must be in (0, 1).
fn alpha(x: f64) -> Result<f64, Status> {
    match x {
        0.0 => Ok(DEFAULT_ALPHA),
        x if x > 0.0 && x < 1.0 => Ok(x),
        x => Err(invalid("alpha", format!("{x} is not in (0, 1)"))),
    }
}

/// A run's key in the cache: a new result or status makes a new key.
fn progress(r: &gauntlet_store::RunRecord) -> String {
    format!("{}:{}:{}", r.id, r.completed_tasks, r.status.as_str())
}

impl Analytics {
    /// An answer cached under `key`, if any (one that no longer decodes is
    /// none).
    async fn cached<M: prost::Message + Default>(&self, key: &str) -> Option<M> {
        let answer = match self.deps.cache.get(key).await {
            Some(bytes) => M::decode(&*bytes).ok(),
            None => None,
        };
        self.cache_counts.record(answer.is_some());
        answer
    }

    /// Caches an answer: a day when its runs have ended (their figures no
    /// longer change; the key changes with their progress anyway), else
    /// the live TTL, which only bounds memory.
    async fn remember<M: prost::Message>(&self, key: &str, answer: &M, ended: bool) {
        let ttl = if ended {
            self.config.finished_ttl_secs
        } else {
            self.config.live_ttl_secs
        };
        self.deps
            .cache
            .set(key, &answer.encode_to_vec(), Duration::from_secs(ttl))
            .await;
    }

    /// The heads (description, vars) of tests `indexes` of run `id`, to
    /// name the cases an answer lists.
    async fn heads(
        &self,
        id: Uuid,
        suite: &Suite,
        indexes: impl IntoIterator<Item = u32>,
    ) -> Result<gauntlet_service::tests::Tests<gauntlet_service::tests::TestHead>, Status> {
        gauntlet_service::tests::read(self.deps.store.as_ref(), id, suite, indexes)
            .await
            .map_err(|e| internal("test heads", e))
    }

    /// The run's suite header as far as answers need it: its providers and
    /// prompts.
    async fn header(&self, id: Uuid) -> Result<Suite, Status> {
        let labels = self.labels(id).await?;
        Ok(Suite {
            prompts: labels.prompts,
            providers: labels.providers,
            ..Suite::default()
        })
    }

    /// The labels of the run's providers and prompts (only the suite's
    /// header is read).
    async fn labels(&self, id: Uuid) -> Result<Labels, Status> {
        let suite_json = self
            .deps
            .store
            .get_suite(id)
            .await
            .map_err(|e| internal("get suite", e))?
            .ok_or_else(|| not_found("run", id))?;
        serde_json::from_str(&suite_json)
            .map_err(|e| internal("decode suite", anyhow::Error::from(e)))
    }

    /// A run as a comparison reads it, its tests matched by content when
    /// it is compared with another run, and its header (to name cases).
    async fn side(&self, id: Uuid, by_content: bool) -> Result<(compare::Side, Suite), Status> {
        let suite = self.header(id).await?;
        let store = self.deps.store.as_ref();
        let test_keys = if by_content {
            let digests = store
                .test_digests(id)
                .await
                .map_err(|e| internal("test digests", e))?;
            compare::TestKeys::from_digests(&digests)
        } else {
            compare::TestKeys::Index
        };
        let mut outcomes = Vec::new();
        store
            .for_each_outcome(id, &mut |o| outcomes.push(o))
            .await
            .map_err(|e| internal("outcomes", e))?;
        let side = compare::Side {
            run_id: id.to_string(),
            providers: suite
                .providers
                .iter()
                .map(|p| p.name().to_owned())
                .collect(),
            prompts: suite.prompts.iter().map(|p| p.label.clone()).collect(),
            test_keys,
            outcomes,
        };
        Ok((side, suite))
    }
}

/// The part of a stored suite a summary needs.
#[derive(serde::Deserialize)]
struct Labels {
    prompts: Vec<gauntlet_core::suite::Prompt>,
    providers: Vec<gauntlet_core::suite::ProviderSpec>,
}

#[cfg(test)]
mod roller_tests {
    use std::{sync::Arc, time::Duration};

    use gauntlet_store::{NewRun, SqliteStore, Store};
    use tokio_util::sync::CancellationToken;
    use uuid::Uuid;

    async fn completed_run(store: &dyn Store, results: i64) -> Uuid {
        let run = store
            .create_run(NewRun {
                trace_id: String::new(),
                id: Uuid::now_v7(),
                project_id: "default".into(),
                description: "rolled".into(),
                label: String::new(),
                source: String::new(),
                compiled: "{}".into(),
                options: serde_json::json!({"repeat": 1}),
                total_tasks: results,
            })
            .await
            .unwrap();
        let rows: Vec<_> = (0..results)
            .map(gauntlet_store::testing::passing_result)
            .collect();
        let out = store.insert_results(run.id, &rows).await.unwrap();
        assert!(out.finished_now);
        run.id
    }

    async fn rolled_up(store: &dyn Store, id: Uuid) -> bool {
        store.get_run(id).await.unwrap().unwrap().rolled_up
    }

    #[tokio::test]
    async fn completed_runs_past_the_threshold_are_rolled_up_without_a_read() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let (big, small) = (
            completed_run(store.as_ref(), 3).await,
            completed_run(store.as_ref(), 2).await,
        );
        let shutdown = CancellationToken::new();
        let roller = tokio::spawn(super::roll_up_completed(
            store.clone(),
            3,
            Duration::from_millis(50),
            shutdown.clone(),
        ));
        let mut waited = Duration::ZERO;
        while !rolled_up(store.as_ref(), big).await {
            assert!(waited < Duration::from_secs(5), "not rolled up in 5 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += Duration::from_millis(50);
        }
        // A few more passes: the run under the threshold stays live.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!rolled_up(store.as_ref(), small).await);
        shutdown.cancel();
        roller.await.unwrap();
    }
}
