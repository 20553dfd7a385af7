//! Gauntlet's repositories: suites, runs, results and reports. `Store` is the
//! one interface the services use; `PgStore` is the production backend and
//! `SqliteStore` the embedded one, held to the same behaviour by one
//! conformance suite (`tests/it/conformance.rs`).
//!
//! Results are the source of truth. Their key, (run_id, task_index), is what
//! makes a redelivered task batch insert nothing the second time.

mod model;
mod postgres;
mod sqlite;
mod trace;

/// A run's metrics per provider × prompt × status: grouped from its results
/// (`LIVE`) until it is rolled up, then from `run_metrics`; the same SQL on
/// both backends.
pub(crate) const METRICS_LIVE: &str = "SELECT provider_index, prompt_index, status, \
     COUNT(*) AS n, SUM(tokens_in) AS tokens_in, SUM(tokens_out) AS tokens_out, \
     SUM(cost_usd) AS cost_usd, SUM(score) AS score_sum, SUM(score * score) AS score_sq_sum \
     FROM results WHERE run_id = $1 GROUP BY provider_index, prompt_index, status";
pub(crate) const METRICS_ROLLED: &str = "SELECT provider_index, prompt_index, status, \
     n, tokens_in, tokens_out, cost_usd, score_sum, score_sq_sum \
     FROM run_metrics WHERE run_id = $1";

/// A run's answered results per provider × prompt × latency, likewise.
pub(crate) const LATENCIES_LIVE: &str = "SELECT provider_index, prompt_index, latency_ms, \
     COUNT(*) AS n FROM results WHERE run_id = $1 AND status <> 3 \
     GROUP BY provider_index, prompt_index, latency_ms";
pub(crate) const LATENCIES_ROLLED: &str =
    "SELECT provider_index, prompt_index, latency_ms, n FROM run_latencies WHERE run_id = $1";

/// The tests that did not always pass, most unpassed first, likewise.
pub(crate) const MOST_FAILED_LIVE: &str = "SELECT test_index, \
     SUM(CASE WHEN status <> 1 THEN 1 ELSE 0 END) AS unpassed, COUNT(*) AS total \
     FROM results WHERE run_id = $1 GROUP BY test_index \
     HAVING SUM(CASE WHEN status <> 1 THEN 1 ELSE 0 END) > 0 \
     ORDER BY unpassed DESC, test_index LIMIT $2";
pub(crate) const MOST_FAILED_ROLLED: &str = "SELECT test_index, unpassed, total \
     FROM run_test_tallies WHERE run_id = $1 ORDER BY unpassed DESC, test_index LIMIT $2";

/// Slowest answered results kept by a roll-up; a longer list is read live.
pub(crate) const SLOWEST_KEPT: u32 = 100;

/// Rolling a run up (`Store::roll_up`), but for the assertions (their JSON
/// differs per backend): each statement reads the run's results once.
pub(crate) const ROLL_UP: [&str; 4] = [
    "INSERT INTO run_metrics (run_id, provider_index, prompt_index, status, n, tokens_in, \
       tokens_out, cost_usd, score_sum, score_sq_sum) \
     SELECT run_id, provider_index, prompt_index, status, COUNT(*), SUM(tokens_in), \
       SUM(tokens_out), SUM(cost_usd), SUM(score), SUM(score * score) \
     FROM results WHERE run_id = $1 GROUP BY run_id, provider_index, prompt_index, status",
    "INSERT INTO run_latencies (run_id, provider_index, prompt_index, latency_ms, n) \
     SELECT run_id, provider_index, prompt_index, latency_ms, COUNT(*) \
     FROM results WHERE run_id = $1 AND status <> 3 \
     GROUP BY run_id, provider_index, prompt_index, latency_ms",
    "INSERT INTO run_test_tallies (run_id, test_index, unpassed, total) \
     SELECT run_id, test_index, SUM(CASE WHEN status <> 1 THEN 1 ELSE 0 END), COUNT(*) \
     FROM results WHERE run_id = $1 GROUP BY run_id, test_index \
     HAVING SUM(CASE WHEN status <> 1 THEN 1 ELSE 0 END) > 0",
    "INSERT INTO run_slowest (run_id, task_index) \
     SELECT run_id, task_index FROM results WHERE run_id = $1 AND status <> 3 \
     ORDER BY latency_ms DESC, task_index LIMIT 100",
];

/// The runs a trend covers ([`TrendQuery`]), joined to a rollup `m`; the
/// same SQL on both backends but for the timestamps' type.
macro_rules! trend_select {
    ($columns:literal, $table:literal) => {
        concat!(
            "SELECT r.id AS run_id, r.created_at AS run_created_at, ",
            $columns,
            " FROM runs r JOIN ",
            $table,
            " m ON m.run_id = r.id \
             WHERE r.project_id = $1 AND r.status = 'completed' AND r.rolled_up \
             AND (CAST($2 AS TEXT) IS NULL OR r.description = $2) \
             AND (CAST($3 AS TEXT) IS NULL OR r.label = $3) \
             AND r.created_at >= $4 AND r.created_at < $5 \
             ORDER BY r.created_at, r.id"
        )
    };
}
/// The completed runs a trend covers that are not rolled up yet.
pub(crate) const TREND_PENDING: &str = "SELECT r.id AS run_id FROM runs r \
     WHERE r.project_id = $1 AND r.status = 'completed' AND NOT r.rolled_up \
     AND (CAST($2 AS TEXT) IS NULL OR r.description = $2) \
     AND (CAST($3 AS TEXT) IS NULL OR r.label = $3) \
     AND r.created_at >= $4 AND r.created_at < $5";
pub(crate) const TREND_METRICS_SELECT: &str = trend_select!(
    "m.provider_index, m.prompt_index, m.status, m.n, m.tokens_in, m.tokens_out, \
     m.cost_usd, m.score_sum, m.score_sq_sum",
    "run_metrics"
);
pub(crate) const TREND_LATENCIES_SELECT: &str = trend_select!(
    "m.provider_index, m.prompt_index, m.latency_ms, m.n",
    "run_latencies"
);

/// The columns of an [`Outcome`], the same SQL on both backends (`WHERE
/// run_id = …` and the order follow).
pub(crate) const OUTCOME_SELECT: &str = "SELECT test_index, prompt_index, provider_index, \
     repeat_index, status, score, latency_ms, cost_usd FROM results";

/// Projects, keys, audit events and usage (issue 14): the same SQL on both
/// backends; timestamps are bound and read as each backend stores them.
pub(crate) const PROJECT_COLUMNS: &str = "id, name, max_concurrent_runs, max_tasks_per_run, \
     max_tasks_per_day, monthly_budget_usd, weight, created_at";
pub(crate) const PROJECT_INSERT: &str = "INSERT INTO projects (id, name, max_concurrent_runs, \
     max_tasks_per_run, max_tasks_per_day, monthly_budget_usd, weight, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING";
pub(crate) const PROJECT_UPDATE: &str = "UPDATE projects SET name = $2, max_concurrent_runs = $3, \
     max_tasks_per_run = $4, max_tasks_per_day = $5, monthly_budget_usd = $6, weight = $7 \
     WHERE id = $1";
pub(crate) const PROJECT_USAGE: &str = "SELECT \
     (SELECT COUNT(*) FROM runs WHERE project_id = $1 AND status IN ('queued', 'running')) \
       AS active_runs, \
     (SELECT CAST(COALESCE(SUM(total_tasks), 0) AS BIGINT) FROM runs WHERE project_id = $1 AND created_at >= $2) \
       AS tasks_since, \
     (SELECT COALESCE(SUM(cost_usd), 0.0) FROM runs WHERE project_id = $1 AND created_at >= $3) \
       AS cost_since";
pub(crate) const KEY_COLUMNS: &str = "id, project_id, role, name, secret_sha256, rate_per_minute, \
     created_at, expires_at, revoked_at";
pub(crate) const KEY_PUT: &str = "INSERT INTO api_keys (id, project_id, role, name, secret_sha256, \
     rate_per_minute, created_at, expires_at, revoked_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO UPDATE SET \
     project_id = $2, role = $3, name = $4, secret_sha256 = $5, rate_per_minute = $6, \
     expires_at = $8, revoked_at = $9";
pub(crate) const KEY_REVOKE: &str = "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) \
     WHERE project_id = $1 AND id = $2";

pub(crate) const AUDIT_INSERT: &str = "INSERT INTO audit_events \
     (at, project_id, key_id, method, target, outcome, peer) VALUES ($1, $2, $3, $4, $5, $6, $7)";
pub(crate) const AUDIT_LIST: &str = "SELECT id, at, project_id, key_id, method, target, outcome, \
     peer FROM audit_events WHERE project_id = $1 AND (CAST($2 AS BIGINT) IS NULL OR id < $2) \
     ORDER BY id DESC LIMIT $3";

/// The digest of a stored test (its JSON body, the model's one encoding):
/// equal bodies, equal digests, on every platform and version (XXH3 is
/// specified). Stored beside the body, it lets two runs' test cases be
/// matched without reading them.
pub fn test_digest(body: &str) -> i64 {
    xxhash_rust::xxh3::xxh3_64(body.as_bytes()) as i64
}

#[cfg(feature = "testing")]
pub mod testing;

pub use model::*;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What can go wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying later may succeed (a restart, a dropped connection,
    /// another SQLite writer holding the lock past the busy timeout, a
    /// Postgres shutting down or refusing connections for now).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Database(e) => {
                matches!(
                    e,
                    sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
                ) || sqlite::is_busy(e)
                    || e.as_database_error()
                        .and_then(|d| d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
                        .is_some_and(|d| postgres_code_is_transient(d.code()))
            }
            _ => false,
        }
    }
}

/// Postgres SQLSTATEs that a retry may get past: class 08 (the connection
/// failed), 57P01–57P03 (the server is shutting down, crashed, or is not
/// accepting connections yet), 53300 (too many connections), 40001 and
/// 40P01 (a serialization failure or deadlock: the transaction may simply
/// be run again).
fn postgres_code_is_transient(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01"
        )
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The repositories every service needs, over one database.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn ping(&self) -> Result<()>;

    /// Stores the suite and its run in one transaction.
    async fn create_run(&self, run: NewRun) -> Result<RunRecord>;
    async fn get_run(&self, run_id: Uuid) -> Result<Option<RunRecord>>;
    /// The runs of `run_ids` that exist, in no particular order: one query.
    async fn get_runs(&self, run_ids: &[Uuid]) -> Result<Vec<RunRecord>>;
    /// Newest first; `after` is the last run of the previous page.
    async fn list_runs(
        &self,
        project_id: &str,
        limit: u32,
        after: Option<RunCursor>,
    ) -> Result<Vec<RunRecord>>;
    /// The compiled suite of a run, as stored by `create_run`.
    /// JSON text: callers decode it straight into their `Suite`.
    /// The newest completed run of `run`'s project created before it whose
    /// suite has the same description: the baseline "the last run of this
    /// suite" means.
    async fn previous_completed_run(&self, run: &RunRecord) -> Result<Option<RunRecord>>;
    /// The newest completed run of `project_id` whose suite has
    /// `description`: what a trend report of that suite is "as of".
    async fn latest_completed_run(
        &self,
        project_id: &str,
        description: &str,
    ) -> Result<Option<RunRecord>>;
    async fn get_suite(&self, run_id: Uuid) -> Result<Option<String>>;
    /// Stores tests `first..first + tests.len()` of the suite of run
    /// `run_id` (each the JSON of one `TestCase`), before or after the run
    /// itself; a test already stored is left as it is.
    async fn put_tests(&self, run_id: Uuid, first: i64, tests: &[String]) -> Result<()>;
    /// The stored tests `first..=last` of the run's suite, as
    /// `(test_index, JSON)` in index order.
    async fn get_tests(&self, run_id: Uuid, first: i64, last: i64) -> Result<Vec<(i64, String)>>;
    /// Removes the tests stored for `run_id` when the upload they came in
    /// was refused or cut short (the run was never created).
    async fn delete_tests(&self, run_id: Uuid) -> Result<u64>;
    /// Removes the tests of uploads that never became a run, for run ids
    /// (UUIDv7, so time-ordered) below `before`. Returns the rows removed.
    async fn sweep_orphan_tests(&self, before: Uuid) -> Result<u64>;
    /// Closes the upload of a run created before all its tests had arrived
    /// (`total_tasks` then stands for "not known yet"): sets its real
    /// `total_tasks` and `options`, and completes it if every task is in
    /// already. A run that has ended keeps its status. Returns the run as
    /// it now stands.
    async fn finish_upload(
        &self,
        run_id: Uuid,
        total_tasks: i64,
        options: serde_json::Value,
    ) -> Result<Option<RunRecord>>;
    /// Queued → running, the first time a worker touches the run.
    async fn mark_running(&self, run_id: Uuid) -> Result<()>;
    /// Ends a run that has not ended yet. Returns the run as it now stands.
    async fn cancel_run(&self, run_id: Uuid) -> Result<Option<RunRecord>>;
    /// Ends a run that cannot proceed as `failed`, with `reason` (shown to
    /// users) as its `status_reason`; only a run that has not ended yet.
    /// Returns the run as it now stands.
    async fn fail_run(&self, run_id: Uuid, reason: &str) -> Result<Option<RunRecord>>;
    /// Ends a run whose results reached its cost cap as `cost_limited`; like
    /// `cancel_run`, only a run that has not ended yet. Returns the run as it
    /// now stands.
    async fn limit_run(&self, run_id: Uuid) -> Result<Option<RunRecord>>;

    /// Runs not ended yet whose last sign of life (`active_at`) is before
    /// `before`, quietest first, at most `limit`.
    async fn stale_runs(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<RunRecord>>;
    /// Up to `limit` completed runs of at least `min_completed` results not
    /// rolled up yet, the longest finished first: what analytics' roller
    /// rolls up ([`Store::roll_up`]) without waiting for a read.
    async fn unrolled_runs(&self, min_completed: i64, limit: u32) -> Result<Vec<Uuid>>;
    /// Counts one re-drive of the run's missing work and makes it active
    /// now — if it has not ended, still has `seen` re-drives, and was not
    /// re-driven since `not_since`: of several reconcilers that look at the
    /// same stall exactly one wins. Returns the run as it now stands, or
    /// `None` when it did not win.
    async fn claim_redrive(
        &self,
        run_id: Uuid,
        seen: i32,
        not_since: DateTime<Utc>,
    ) -> Result<Option<RunRecord>>;
    /// Makes a run that has not ended active now (its work was just
    /// re-driven by hand), so the reconciler leaves it alone for a while.
    async fn touch_run(&self, run_id: Uuid) -> Result<()>;
    /// The task indexes of the run with no stored result, as ranges in task
    /// order, at most `limit` of them.
    async fn missing_tasks(&self, run_id: Uuid, limit: u32) -> Result<Vec<TaskRange>>;

    /// Inserts the rows that are not there yet and bumps the run's counters by
    /// what was really inserted (`cost_usd` included), in one transaction. A
    /// run whose every task is in becomes `completed`; one that got any new
    /// row is active now.
    async fn insert_results(&self, run_id: Uuid, rows: &[NewResult]) -> Result<InsertOutcome>;
    /// Results in task order; `after_task` is the last task of the previous page.
    async fn list_results(
        &self,
        run_id: Uuid,
        status: Option<ResultStatus>,
        after_task: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ResultRecord>>;
    /// The task indexes in `first..=last` that have a result (in any order).
    async fn stored_tasks(&self, run_id: Uuid, first: i64, last: i64) -> Result<Vec<i64>>;
    /// What statistics need of a run's results, grouped by provider,
    /// prompt, status and latency (see [`ResultMetrics`]), handed to `each`
    /// a group at a time as they arrive: a run of any size is summarized
    /// without its results ever being held together.
    async fn for_each_result_metrics(
        &self,
        run_id: Uuid,
        each: &mut (dyn FnMut(ResultMetrics) + Send),
    ) -> Result<()>;
    /// The run's assertion outcomes grouped by provider, prompt, assertion
    /// type, metric and verdict (see [`AssertionMetrics`]), handed to
    /// `each` a group at a time.
    /// Rolls a completed run up: what its summary and trends read is
    /// grouped from its results once and kept (`run_metrics`,
    /// `run_latencies`, `run_assertions`, `run_test_tallies`,
    /// `run_slowest`), in one transaction that marks it rolled up. Until
    /// then those reads group the results each time. True if this call
    /// rolled it up; false if it was already, or is not completed (or not
    /// there).
    async fn roll_up(&self, run_id: Uuid) -> Result<bool>;

    /// A run's answered (not errored) results counted per provider ×
    /// prompt × latency.
    async fn for_each_latency_count(
        &self,
        run_id: Uuid,
        each: &mut (dyn FnMut(LatencyCount) + Send),
    ) -> Result<()>;

    /// The rollup rows (groups, then latencies) of every completed run
    /// `query` covers, oldest run first; runs not rolled up yet are rolled
    /// up first.
    async fn for_each_trend_metrics(
        &self,
        query: &TrendQuery,
        each: &mut (dyn FnMut(TrendMetrics) + Send),
    ) -> Result<()>;

    async fn for_each_assertion_metrics(
        &self,
        run_id: Uuid,
        each: &mut (dyn FnMut(AssertionMetrics) + Send),
    ) -> Result<()>;
    /// The run's `limit` slowest results that are not errors, slowest
    /// first (ties in task order), with their task index.
    async fn slowest_results(&self, run_id: Uuid, limit: u32) -> Result<Vec<(i64, Outcome)>>;
    /// The run's `limit` test cases with the most results that did not
    /// pass, most first (ties in test order); tests that always passed are
    /// not listed.
    async fn most_failed_tests(&self, run_id: Uuid, limit: u32) -> Result<Vec<TestFailures>>;
    /// Every result of the run as an [`Outcome`], in task order, handed to
    /// `each` as they arrive.
    async fn for_each_outcome(
        &self,
        run_id: Uuid,
        each: &mut (dyn FnMut(Outcome) + Send),
    ) -> Result<()>;
    /// The [`test_digest`] of every stored test of the run's suite, as
    /// `(test_index, digest)` in index order.
    async fn test_digests(&self, run_id: Uuid) -> Result<Vec<(i64, i64)>>;

    async fn create_report(&self, report: NewReport) -> Result<ReportRecord>;
    async fn get_report(&self, report_id: Uuid) -> Result<Option<ReportRecord>>;
    /// `CreateReport` for runs that have all ended, in one step no other
    /// call can interleave with: the newest report of `report`'s run, kind
    /// and format that [`ReportReuse`] accepts, or else `report`, created.
    /// The flag says whether it was created.
    async fn find_or_create_report(
        &self,
        report: NewReport,
        reuse: ReportReuse,
    ) -> Result<(ReportRecord, bool)>;
    async fn finish_report(&self, report_id: Uuid, outcome: ReportOutcome) -> Result<()>;
    /// Stores part `part` of a report's document (again, if a redelivered
    /// job renders it twice).
    async fn put_report_part(&self, report_id: Uuid, part: u32, data: &[u8]) -> Result<()>;
    /// Part `part` of a report's document, if stored.
    async fn report_part(&self, report_id: Uuid, part: u32) -> Result<Option<Vec<u8>>>;

    /// Writes an alert as it is now (inserted, or updated by id).
    async fn put_alert(&self, alert: &AlertRecord) -> Result<()>;

    /// Forgets an alert (one that was pending and never fired).
    async fn delete_alert(&self, alert_id: Uuid) -> Result<()>;

    /// Alerts by `query`, newest first.
    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>>;

    /// Creates a project (its quotas and weight as given); `Ok(None)` if
    /// one with its id exists.
    async fn create_project(&self, project: &ProjectRecord) -> Result<Option<ProjectRecord>>;

    async fn get_project(&self, project_id: &str) -> Result<Option<ProjectRecord>>;

    /// Every project, by id.
    async fn list_projects(&self) -> Result<Vec<ProjectRecord>>;

    /// Sets a project's name, quotas and weight; `false` if it does not exist.
    async fn update_project(&self, project: &ProjectRecord) -> Result<bool>;

    /// What `project_id` has in use: active runs, tasks of the runs created
    /// since `day_start`, cost of those created since `month_start`.
    async fn project_usage(
        &self,
        project_id: &str,
        day_start: DateTime<Utc>,
        month_start: DateTime<Utc>,
    ) -> Result<ProjectUsage>;

    /// Stores a key, replacing one with its id (the bootstrap key is put
    /// again on every start).
    async fn put_key(&self, key: &KeyRecord) -> Result<()>;

    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>>;

    /// A project's keys, newest first, revoked ones too.
    async fn list_keys(&self, project_id: &str) -> Result<Vec<KeyRecord>>;

    /// Revokes `key_id` of `project_id` at `at`; `false` if the project has
    /// no such key. Revoking twice keeps the first time.
    async fn revoke_key(&self, project_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<bool>;

    /// Appends audit events.
    async fn record_audit(&self, events: &[AuditEvent]) -> Result<()>;

    /// A project's audit events, newest first, those before `before_id` if
    /// given.
    async fn list_audit(
        &self,
        project_id: &str,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditEvent>>;

    /// The database behind the store, as health checks name it.
    fn backend(&self) -> &'static str;

    /// The connection pool's size and use; `None` for a store without one.
    fn pool_stats(&self) -> Option<PoolStats> {
        None
    }

    /// How long getting a connection from the pool takes now (the
    /// connection goes straight back).
    async fn time_acquire(&self) -> Result<std::time::Duration>;
}
