//! `gauntlet.v1.RunService`.

use std::{pin::Pin, sync::Arc};

use chrono::{DateTime, Utc};
use futures::Stream;
use gauntlet_config::GauntletConfig;
use gauntlet_core::suite::Suite;
use gauntlet_proto::v1::{self, run_service_server::RunService};
use gauntlet_service::{
    MessageLimits, convert, internal, invalid, limits::answer, not_found, parse_id, run_in,
};
use gauntlet_store::{ResultStatus, RunCursor, RunStatus};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{Deps, access::Caller, submit, watch};

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub struct RunApi {
    config: Arc<GauntletConfig>,
    deps: Deps,
    /// Puts the tasks of the runs it takes on the queue.
    dispatcher: crate::dispatch::Dispatcher,
    shutdown: CancellationToken,
    /// Validates provider ids at submission.
    providers: gauntlet_providers::ProviderFactory,
    /// Suite headers (prompts and providers, not tests) of recent runs, for
    /// filling result rows, with their stored size: the cache is bounded by
    /// bytes ([`SUITE_CACHE_BYTES`]), since a header can be large (prompts,
    /// a run stored before tests became rows holds its tests too).
    suites: moka::future::Cache<Uuid, (Arc<Suite>, u32)>,
    /// Completed runs as answered, and their result pages: nothing about a
    /// completed run changes any more (a redelivered batch adds nothing), so
    /// reading them again costs no query. A run that is still going,
    /// failed or was cancelled is read afresh every time: results may
    /// still land after a cancel.
    completed: moka::future::Cache<Uuid, (Arc<str>, v1::Run)>,
    pages: moka::future::Cache<PageKey, Arc<v1::ListResultsResponse>>,
    limits: MessageLimits,
}

/// A `ListResults` request, as far as its answer depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PageKey {
    run: Uuid,
    status: Option<ResultStatus>,
    after: Option<i64>,
    limit: u32,
}

impl RunApi {
    pub fn new(
        config: Arc<GauntletConfig>,
        deps: Deps,
        dispatcher: crate::dispatch::Dispatcher,
        shutdown: CancellationToken,
    ) -> Self {
        let limits = MessageLimits::new(&config.grpc);
        Self {
            config,
            deps,
            dispatcher,
            shutdown,
            providers: gauntlet_providers::ProviderFactory::from_process_env(),
            suites: suite_cache(SUITE_CACHE_BYTES),
            completed: moka::future::Cache::new(COMPLETED_RUNS_KEPT),
            pages: page_cache(PAGE_CACHE_BYTES),
            limits,
        }
    }

    /// Run `id` of `project` as answered, and whether it has completed
    /// (from memory if it had already). Another project's run is
    /// `NotFound`.
    async fn run(&self, id: Uuid, project: &str) -> Result<(v1::Run, bool), Status> {
        if let Some((owner, run)) = self.completed.get(&id).await {
            if &*owner != project {
                return Err(not_found("run", id));
            }
            return Ok((run, true));
        }
        let record = run_in(self.deps.store.as_ref(), id, project).await?;
        let run = convert::run(&record);
        let completed = record.status == RunStatus::Completed;
        if completed {
            self.completed
                .insert(id, (record.project_id.as_str().into(), run.clone()))
                .await;
        }
        Ok((run, completed))
    }

    fn submission<'a>(&'a self, caller: &'a Caller) -> submit::Submission<'a> {
        submit::Submission {
            deps: &self.deps,
            providers: &self.providers,
            dispatcher: &self.dispatcher,
            caller,
            max_bytes: self.config.gateway.max_suite_bytes,
        }
    }

    /// Refuses a suite of `bytes` over `caller`'s request size cap.
    fn check_request_cap(caller: &Caller, field: &str, bytes: u64) -> Result<(), Status> {
        match caller.max_request_bytes {
            Some(cap) if bytes > cap => Err(invalid(
                field,
                format!(
                    "the suite is {bytes} bytes, more than key {}'s limit of {cap} \
                     (auth.max_request_bytes)",
                    caller.key_id
                ),
            )),
            _ => Ok(()),
        }
    }

    async fn suite(&self, run_id: Uuid) -> Result<Arc<Suite>, Status> {
        let store = self.deps.store.clone();
        self.suites
            .try_get_with(run_id, async move {
                let value = store
                    .get_suite(run_id)
                    .await
                    .map_err(|e| internal("get suite", e))?
                    .ok_or_else(|| not_found("run", run_id))?;
                let suite: Suite = serde_json::from_str(&value)
                    .map_err(|e| internal("decode suite", anyhow::Error::from(e)))?;
                let bytes = u32::try_from(value.len()).unwrap_or(u32::MAX);
                Ok::<_, Status>((Arc::new(suite), bytes))
            })
            .await
            .map(|(suite, _)| suite)
            .map_err(|e: Arc<Status>| (*e).clone())
    }
}

/// Bytes of stored suite text the gateway keeps parsed, at most (the
/// parsed form takes a few times its text).
const SUITE_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Completed runs whose answer the gateway keeps (a few hundred bytes each).
const COMPLETED_RUNS_KEPT: u64 = 20_000;

/// Encoded bytes of completed runs' result pages the gateway keeps.
const PAGE_CACHE_BYTES: u64 = 32 * 1024 * 1024;

fn page_cache(bytes: u64) -> moka::future::Cache<PageKey, Arc<v1::ListResultsResponse>> {
    moka::future::Cache::builder()
        .weigher(|_, page: &Arc<v1::ListResultsResponse>| {
            u32::try_from(prost::Message::encoded_len(page.as_ref()))
                .unwrap_or(u32::MAX)
                .max(1)
        })
        .max_capacity(bytes)
        .build()
}

/// A cache of parsed suites holding at most `bytes` of their stored text.
fn suite_cache(bytes: u64) -> moka::future::Cache<Uuid, (Arc<Suite>, u32)> {
    moka::future::Cache::builder()
        .weigher(|_, (_, bytes): &(Arc<Suite>, u32)| (*bytes).max(1))
        .max_capacity(bytes)
        .build()
}

fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn run_cursor(token: &str) -> Result<Option<RunCursor>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid("page_token", "is not a token this server issued");
    let (micros, id) = token.split_once('_').ok_or_else(bad)?;
    let micros: i64 = micros.parse().map_err(|_| bad())?;
    Ok(Some(RunCursor {
        created_at: DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(bad)?,
        id: Uuid::parse_str(id).map_err(|_| bad())?,
    }))
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<v1::RunProgress, Status>> + Send>>;

#[tonic::async_trait]
impl RunService for RunApi {
    async fn submit_run(
        &self,
        request: Request<v1::SubmitRunRequest>,
    ) -> Result<Response<v1::SubmitRunResponse>, Status> {
        let caller = Caller::of(&request);
        Self::check_request_cap(&caller, "suite", request.get_ref().suite.len() as u64)?;
        let resp = submit::submit(self.submission(&caller), request.into_inner()).await?;
        caller.target(&resp.run_id);
        Ok(Response::new(resp))
    }

    async fn submit_run_stream(
        &self,
        request: Request<tonic::Streaming<v1::SubmitRunChunk>>,
    ) -> Result<Response<v1::SubmitRunResponse>, Status> {
        let caller = Caller::of(&request);
        let max_bytes = self.config.gateway.max_suite_bytes;
        let mut stream = request.into_inner();
        let header = submit::read_header(&mut stream).await?;
        Self::check_request_cap(&caller, "header.suite_bytes", header.suite_bytes)?;
        if header.format == v1::SuiteFormat::NormalizedJsonLines as i32 {
            let resp = submit::submit_lines(self.submission(&caller), header, stream, |bytes| {
                Self::check_request_cap(&caller, "data", bytes)
            })
            .await?;
            caller.target(&resp.run_id);
            return Ok(Response::new(resp));
        }
        let req = submit::read_text(header, stream, max_bytes).await?;
        let resp = submit::submit(self.submission(&caller), req).await?;
        caller.target(&resp.run_id);
        Ok(Response::new(resp))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let caller = Caller::of(&request);
        let id = parse_id("run_id", &request.get_ref().run_id)?;
        Ok(answer(self.run(id, &caller.project).await?.0))
    }

    async fn list_runs(
        &self,
        request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let limit = page_size(req.page_size);
        let after = run_cursor(&req.page_token)?;
        let runs = self
            .deps
            .store
            .list_runs(&caller.project, limit, after)
            .await
            .map_err(|e| internal("list runs", e))?;
        let next_page_token = match runs.last() {
            Some(last) if runs.len() as u32 == limit => {
                format!("{}_{}", last.created_at.timestamp_micros(), last.id)
            }
            _ => String::new(),
        };
        Ok(answer(v1::ListRunsResponse {
            runs: runs.iter().map(convert::run).collect(),
            next_page_token,
        }))
    }

    async fn cancel_run(
        &self,
        request: Request<v1::CancelRunRequest>,
    ) -> Result<Response<v1::Run>, Status> {
        let caller = Caller::of(&request);
        let id = parse_id("run_id", &request.get_ref().run_id)?;
        caller.target(id);
        run_in(self.deps.store.as_ref(), id, &caller.project).await?;
        let run = self
            .deps
            .store
            .cancel_run(id)
            .await
            .map_err(|e| internal("cancel run", e))?
            .ok_or_else(|| not_found("run", id))?;
        gauntlet_service::events::publish_progress(self.deps.bus.as_ref(), &run).await;
        Ok(Response::new(convert::run(&run)))
    }

    type WatchRunStream = ProgressStream;

    async fn watch_run(
        &self,
        request: Request<v1::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let caller = Caller::of(&request);
        let id = parse_id("run_id", &request.get_ref().run_id)?;
        let slot = caller.watch_slot()?;
        let stream = watch::watch(
            self.deps.clone(),
            id,
            &caller.project,
            slot,
            self.shutdown.clone(),
        )
        .await?;
        Ok(Response::new(stream))
    }

    async fn list_results(
        &self,
        request: Request<v1::ListResultsRequest>,
    ) -> Result<Response<v1::ListResultsResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        let id = parse_id("run_id", &req.run_id)?;
        let status = match v1::ResultStatus::try_from(req.status) {
            Ok(v1::ResultStatus::Unspecified) => None,
            Ok(v1::ResultStatus::Pass) => Some(ResultStatus::Pass),
            Ok(v1::ResultStatus::Fail) => Some(ResultStatus::Fail),
            Ok(v1::ResultStatus::Error) => Some(ResultStatus::Error),
            Err(_) => return Err(invalid("status", format!("unknown value {}", req.status))),
        };
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(
                req.page_token
                    .parse::<i64>()
                    .map_err(|_| invalid("page_token", "is not a token this server issued"))?,
            )
        };
        let limit = page_size(req.page_size);
        let key = PageKey {
            run: id,
            status,
            after,
            limit,
        };
        let (_, completed) = self.run(id, &caller.project).await?;
        if completed && let Some(page) = self.pages.get(&key).await {
            return Ok(answer(page.as_ref().clone()));
        }
        let suite = self.suite(id).await?;
        let rows = self
            .deps
            .store
            .list_results(id, status, after, limit)
            .await
            .map_err(|e| internal("list results", e))?;
        // A page ends early rather than grow past one message: results
        // carry whole prompts and outputs, so 1000 of them can be large.
        let tests = gauntlet_service::tests::read(
            self.deps.store.as_ref(),
            id,
            &suite,
            rows.iter().map(|r| r.result.test_index as u32),
        )
        .await
        .map_err(|e| internal("read tests", e))?;
        let budget = self.limits.payload_budget();
        let mut results = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        for row in &rows {
            let result = convert::result(row, &suite, tests.get(row.result.test_index as u32));
            let size = prost::Message::encoded_len(&result) + 8;
            if !results.is_empty() && bytes + size > budget {
                break;
            }
            bytes += size;
            results.push(result);
        }
        let next_page_token = match results.last() {
            Some(last) if results.len() < rows.len() || rows.len() as u32 == limit => {
                last.task_index.to_string()
            }
            _ => String::new(),
        };
        let page = v1::ListResultsResponse {
            results,
            next_page_token,
        };
        if completed {
            self.pages.insert(key, Arc::new(page.clone())).await;
        }
        Ok(answer(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Arc<Suite> {
        Arc::new(Suite::default())
    }

    #[tokio::test]
    async fn the_suite_cache_is_bounded_by_the_suites_size_not_their_number() {
        let cache = suite_cache(1_000_000);
        for _ in 0..40 {
            cache.insert(Uuid::new_v4(), (header(), 100_000)).await;
            cache.run_pending_tasks().await;
        }
        assert!(
            cache.weighted_size() <= 1_000_000,
            "{}",
            cache.weighted_size()
        );
        assert!(cache.entry_count() <= 10, "{}", cache.entry_count());
        // Small headers: hundreds fit.
        let cache = suite_cache(1_000_000);
        for _ in 0..300 {
            cache.insert(Uuid::new_v4(), (header(), 500)).await;
        }
        cache.run_pending_tasks().await;
        assert_eq!(cache.entry_count(), 300);
    }
}
