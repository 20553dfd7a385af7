//! The Postgres backend: unchecked queries (the build needs no database),
//! multi-row inserts through UNNEST, keyset pagination.

use std::{str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gauntlet_config::DatabaseConfig;
use sqlx::{
    ConnectOptions, PgPool, Row,
    migrate::MigrateDatabase,
    postgres::{PgConnectOptions, PgPoolOptions, PgRow},
};
use uuid::Uuid;

use crate::{
    AUDIT_INSERT, AUDIT_LIST, AlertQuery, AlertRecord, AlertState, AssertionMetrics, AuditEvent,
    InsertOutcome, KEY_COLUMNS, KEY_PUT, KEY_REVOKE, KeyRecord, LATENCIES_LIVE, LATENCIES_ROLLED,
    LatencyCount, METRICS_LIVE, METRICS_ROLLED, MOST_FAILED_LIVE, MOST_FAILED_ROLLED, NewReport,
    NewResult, NewRun, OUTCOME_SELECT, Outcome, PROJECT_COLUMNS, PROJECT_INSERT, PROJECT_UPDATE,
    PROJECT_USAGE, PoolStats, ProjectRecord, ProjectUsage, Quotas, ROLL_UP, ReportOutcome,
    ReportRecord, ReportReuse, ReportStatus, Result, ResultMetrics, ResultRecord, ResultStatus,
    Role, RunCursor, RunRecord, RunStatus, SLOWEST_KEPT, Store, StoreError, TREND_LATENCIES_SELECT,
    TREND_METRICS_SELECT, TREND_PENDING, TaskRange, TestFailures, TrendMetrics, TrendQuery,
    TrendRow, model::report_outcome,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Postgres-backed [`Store`].
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

/// How `config` connects: statements logged at trace, slow ones warned
/// about, the pool's size and acquire timeout.
fn pool_options(config: &DatabaseConfig) -> Result<(PgConnectOptions, PgPoolOptions)> {
    let options = PgConnectOptions::from_str(&config.url)?
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(Duration::from_secs(config.acquire_timeout_secs));
    Ok((options, pool))
}

const RUN_COLUMNS: &str = "id, project_id, suite_id, description, label, status, options, \
     total_tasks, completed_tasks, passed, failed, errors, cost_usd, created_at, started_at, \
     finished_at, status_reason, active_at, redrives, redriven_at, rolled_up, trace_id";

/// A run's assertion outcomes grouped from its results (until it is rolled
/// up): a type or metric that is not a string is "", a verdict that is not
/// a boolean is a failure. Results with the same outcomes are grouped
/// first, as whole `jsonb` values, so each distinct set of outcomes is
/// taken apart once: a run's outcomes mostly repeat, and taking every
/// result's apart took 5.6 s at 1,000,000 results.
const ASSERTIONS_LIVE: &str = "SELECT r.provider_index, r.prompt_index, \
     CASE WHEN jsonb_typeof(a->'type') = 'string' THEN a->>'type' ELSE '' END AS kind, \
     CASE WHEN jsonb_typeof(a->'metric') = 'string' THEN a->>'metric' ELSE '' END AS metric, \
     COALESCE(CASE WHEN jsonb_typeof(a->'pass') = 'boolean' THEN (a->>'pass')::boolean END, false) \
       AS passed, SUM(r.n)::BIGINT AS n \
     FROM (SELECT provider_index, prompt_index, assertions, COUNT(*) AS n \
           FROM results WHERE run_id = $1 GROUP BY 1, 2, 3) r, \
          jsonb_array_elements(CASE WHEN jsonb_typeof(r.assertions) = 'array' \
                                    THEN r.assertions ELSE '[]' END) a \
     GROUP BY 1, 2, 3, 4, 5";

const RESULT_COLUMNS: &str = "run_id, task_index, project_id, test_index, prompt_index, \
     provider_index, repeat_index, provider_id, status, score, reason, rendered_prompt, output, \
     assertions, latency_ms, tokens_in, tokens_out, cost_usd, cached, error, trace_id, created_at";

impl PgStore {
    /// Whether the run has been rolled up ([`Store::roll_up`]); an unknown
    /// run has not.
    async fn rolled_up(&self, run_id: Uuid) -> Result<bool> {
        let rolled: Option<bool> = sqlx::query_scalar("SELECT rolled_up FROM runs WHERE id = $1")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(rolled.unwrap_or(false))
    }

    /// Connects a bounded pool. With `config.migrate`, creates the database if
    /// it does not exist and applies pending migrations.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self> {
        if config.migrate && !sqlx::Postgres::database_exists(&config.url).await? {
            sqlx::Postgres::create_database(&config.url).await?;
        }
        let (options, pool) = pool_options(config)?;
        let pool = pool
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let store = Self { pool };
        if config.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// A store whose pool connects on first use: made without Postgres up,
    /// its calls fail `Unavailable` until it is. Runs no migrations (for
    /// the monitor, which reports Postgres down rather than wait for it).
    pub fn connect_lazy(config: &DatabaseConfig) -> Result<Self> {
        let (options, pool) = pool_options(config)?;
        Ok(Self {
            pool: pool.connect_lazy_with(options),
        })
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The versions of this build's migrations the database has not
    /// applied yet, oldest first: empty when its schema is current (or
    /// newer, mid-upgrade). A service that does not migrate waits for this
    /// to be empty before it reports ready.
    pub async fn missing_migrations(&self) -> Result<Vec<i64>> {
        let applied: Vec<i64> = match sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(applied) => applied,
            // 42P01 undefined_table: nothing migrated yet.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
            .filter(|v| applied.binary_search(v).is_err())
            .collect())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn end_run(
        &self,
        run_id: Uuid,
        status: RunStatus,
        reason: &str,
    ) -> Result<Option<RunRecord>> {
        sqlx::query(
            "UPDATE runs SET status = $2, status_reason = $3, finished_at = now() \
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(run_id)
        .bind(status.as_str())
        .bind(reason)
        .execute(&self.pool)
        .await?;
        self.get_run(run_id).await
    }
}

/// One `run_metrics` row (also read joined with its run, for trends).
fn metrics_from_row(row: &PgRow) -> std::result::Result<ResultMetrics, sqlx::Error> {
    let status: i16 = row.try_get("status")?;
    let status = ResultStatus::from_i16(status).ok_or_else(|| corrupt_status(status))?;
    Ok(ResultMetrics {
        provider_index: row.try_get("provider_index")?,
        prompt_index: row.try_get("prompt_index")?,
        status,
        count: row.try_get("n")?,
        tokens_in: row.try_get("tokens_in")?,
        tokens_out: row.try_get("tokens_out")?,
        cost_usd: row.try_get("cost_usd")?,
        score_sum: row.try_get("score_sum")?,
        score_sq_sum: row.try_get("score_sq_sum")?,
    })
}

/// One `run_latencies` row.
fn latency_from_row(row: &PgRow) -> std::result::Result<LatencyCount, sqlx::Error> {
    Ok(LatencyCount {
        provider_index: row.try_get("provider_index")?,
        prompt_index: row.try_get("prompt_index")?,
        latency_ms: row.try_get("latency_ms")?,
        count: row.try_get("n")?,
    })
}

fn run_from_row(row: &PgRow) -> Result<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        suite_id: row.try_get("suite_id")?,
        description: row.try_get("description")?,
        label: row.try_get("label")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?,
        options: row.try_get("options")?,
        total_tasks: row.try_get("total_tasks")?,
        completed_tasks: row.try_get("completed_tasks")?,
        passed: row.try_get("passed")?,
        failed: row.try_get("failed")?,
        errors: row.try_get("errors")?,
        cost_usd: row.try_get("cost_usd")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        status_reason: row.try_get("status_reason")?,
        active_at: row.try_get("active_at")?,
        redrives: row.try_get("redrives")?,
        redriven_at: row.try_get("redriven_at")?,
        rolled_up: row.try_get("rolled_up")?,
        trace_id: row.try_get("trace_id")?,
    })
}

/// A stored result status no `ResultStatus` has, as an error decoding its
/// column (inside a row mapping, which can only fail with sqlx's errors).
fn pg_outcome(row: &PgRow) -> Result<Outcome, sqlx::Error> {
    let status: i16 = row.try_get("status")?;
    Ok(Outcome {
        test_index: row.try_get("test_index")?,
        prompt_index: row.try_get("prompt_index")?,
        provider_index: row.try_get("provider_index")?,
        repeat_index: row.try_get("repeat_index")?,
        status: ResultStatus::from_i16(status).ok_or_else(|| corrupt_status(status))?,
        score: row.try_get("score")?,
        latency_ms: row.try_get("latency_ms")?,
        cost_usd: row.try_get("cost_usd")?,
    })
}

/// Results whose outcomes `for_each_outcome` reads in one query, and
/// `roll_up` packs in one `run_outcomes` row.
const OUTCOMES_AT_ONCE: i64 = 50_000;

/// The outcomes of up to `$3` results of run `$1` after task `$2`, in task
/// order, each column packed as its values' binary send forms end to end
/// (big-endian, fixed width): a row costs the driver ~2 µs, and even an
/// array decodes element by element, where these are cut apart in place.
/// One definition for the live read and the roll-up's packing
/// (`run_outcomes`).
const OUTCOME_ARRAYS: &str = "SELECT COUNT(*) AS n, MIN(task_index) AS first_task, \
     MAX(task_index) AS last_task, \
     string_agg(int4send(test_index), ''::bytea) AS tests, \
     string_agg(int4send(prompt_index), ''::bytea) AS prompts, \
     string_agg(int4send(provider_index), ''::bytea) AS providers, \
     string_agg(int4send(repeat_index), ''::bytea) AS repeats, \
     string_agg(int2send(status), ''::bytea) AS statuses, \
     string_agg(float8send(score), ''::bytea) AS scores, \
     string_agg(int4send(latency_ms), ''::bytea) AS latencies, \
     string_agg(float8send(cost_usd), ''::bytea) AS costs \
     FROM (SELECT task_index, test_index, prompt_index, provider_index, repeat_index, \
             status, score, latency_ms, cost_usd \
           FROM results WHERE run_id = $1 AND task_index > $2 \
           ORDER BY task_index LIMIT $3) s";

/// Per provider × prompt, the latencies of `source` (rows of provider,
/// prompt, latency and count) and their counts, packed like
/// [`OUTCOME_ARRAYS`]' columns in latency order: what a summary reads, and
/// what a roll-up stores in `run_latency_packs`.
fn latency_packs(source: &str) -> String {
    format!(
        "SELECT provider_index, prompt_index, \
         string_agg(int4send(latency_ms), ''::bytea ORDER BY latency_ms) AS latencies, \
         string_agg(int8send(n), ''::bytea ORDER BY latency_ms) AS counts \
         FROM ({source}) s GROUP BY provider_index, prompt_index"
    )
}

/// Column `name` of `row`, packed by [`OUTCOME_ARRAYS`]: `n` values of
/// `N` bytes each.
fn packed<const N: usize>(row: &PgRow, name: &str, n: i64) -> Result<Vec<[u8; N]>> {
    let bytes: Vec<u8> = row.try_get::<Option<Vec<u8>>, _>(name)?.unwrap_or_default();
    if bytes.len() as i64 != n * N as i64 {
        return Err(StoreError::Corrupt(format!(
            "outcome column {name}: {} bytes for {n} results of {N}",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|c| c.try_into().expect("chunks of N"))
        .collect())
}

/// Hands each outcome of `row` (a row of [`OUTCOME_ARRAYS`]' columns) to
/// `each`, in order; returns how many.
fn each_outcome(row: &PgRow, each: &mut (dyn FnMut(Outcome) + Send)) -> Result<i64> {
    let n: i64 = row.try_get::<Option<i64>, _>("n")?.unwrap_or(0);
    if n == 0 {
        return Ok(0);
    }
    let int = |name: &str| -> Result<Vec<i32>> {
        Ok(packed::<4>(row, name, n)?
            .into_iter()
            .map(i32::from_be_bytes)
            .collect())
    };
    let float = |name: &str| -> Result<Vec<f64>> {
        Ok(packed::<8>(row, name, n)?
            .into_iter()
            .map(f64::from_be_bytes)
            .collect())
    };
    let (tests, prompts, providers, repeats, latencies) = (
        int("tests")?,
        int("prompts")?,
        int("providers")?,
        int("repeats")?,
        int("latencies")?,
    );
    let statuses: Vec<i16> = packed::<2>(row, "statuses", n)?
        .into_iter()
        .map(i16::from_be_bytes)
        .collect();
    let (scores, costs) = (float("scores")?, float("costs")?);
    for i in 0..n as usize {
        each(Outcome {
            test_index: tests[i],
            prompt_index: prompts[i],
            provider_index: providers[i],
            repeat_index: repeats[i],
            status: result_status(statuses[i])?,
            score: scores[i],
            latency_ms: latencies[i],
            cost_usd: costs[i],
        });
    }
    Ok(n)
}

/// `values`, one of a query's aggregated columns, if it has `n` of them.
fn same_length<T>(name: &str, values: Vec<T>, n: i64) -> Result<Vec<T>> {
    if values.len() as i64 == n {
        Ok(values)
    } else {
        Err(StoreError::Corrupt(format!(
            "aggregated column {name}: {} values for {n} rows",
            values.len()
        )))
    }
}

fn corrupt_status(v: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: "status".to_owned(),
        source: format!("result status {v}").into(),
    }
}

fn result_status(v: i16) -> Result<ResultStatus> {
    ResultStatus::from_i16(v).ok_or_else(|| StoreError::Corrupt(format!("result status {v}")))
}

fn result_from_row(row: &PgRow) -> Result<ResultRecord> {
    Ok(ResultRecord {
        run_id: row.try_get("run_id")?,
        created_at: row.try_get("created_at")?,
        result: NewResult {
            task_index: row.try_get("task_index")?,
            project_id: row.try_get("project_id")?,
            test_index: row.try_get("test_index")?,
            prompt_index: row.try_get("prompt_index")?,
            provider_index: row.try_get("provider_index")?,
            repeat_index: row.try_get("repeat_index")?,
            provider_id: row.try_get("provider_id")?,
            status: result_status(row.try_get("status")?)?,
            score: row.try_get("score")?,
            reason: row.try_get("reason")?,
            rendered_prompt: row.try_get("rendered_prompt")?,
            output: row.try_get("output")?,
            assertions: row.try_get("assertions")?,
            latency_ms: row.try_get("latency_ms")?,
            tokens_in: row.try_get("tokens_in")?,
            tokens_out: row.try_get("tokens_out")?,
            cost_usd: row.try_get("cost_usd")?,
            cached: row.try_get("cached")?,
            error: row.try_get("error")?,
            trace_id: row.try_get("trace_id")?,
        },
    })
}

fn report_from_row(row: &PgRow) -> Result<ReportRecord> {
    let status: String = row.try_get("status")?;
    let content: String = row.try_get("content")?;
    // A document stored whole before the `bytes` column has its size 0.
    let bytes = u64::try_from(row.try_get::<i64, _>("bytes")?)
        .unwrap_or(0)
        .max(content.len() as u64);
    Ok(ReportRecord {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        run_id: row.try_get("run_id")?,
        format: row.try_get("format")?,
        kind: row.try_get("kind")?,
        status: ReportStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("report status `{status}`")))?,
        content,
        bytes,
        parts: u32::try_from(row.try_get::<i32, _>("parts")?).unwrap_or(0),
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Inserts `report`, pending.
async fn insert_report<'e>(
    db: impl sqlx::PgExecutor<'e>,
    report: &NewReport,
) -> Result<ReportRecord> {
    let row = sqlx::query(
        "INSERT INTO reports (id, project_id, run_id, format, kind, status) \
         VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING *",
    )
    .bind(report.id)
    .bind(&report.project_id)
    .bind(report.run_id)
    .bind(&report.format)
    .bind(&report.kind)
    .fetch_one(db)
    .await?;
    report_from_row(&row)
}

/// The first key of the advisory locks that make `find_or_create_report`
/// one step ("rept").
const REPORT_LOCK_CLASS: i32 = 0x7265_7074;

/// The run's advisory-lock key for folding its tallies.
fn fold_key(run_id: Uuid) -> i64 {
    let bytes = run_id.as_bytes();
    // The random tail of a v7 (or any v4) id: runs created in the same
    // millisecond still get different keys.
    i64::from_le_bytes(bytes[8..16].try_into().expect("16-byte uuid"))
}

/// How [`fold`] takes the run's fold lock (held until its transaction ends).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Lock {
    /// Tried: if another transaction holds it, nothing is folded.
    Try,
    /// Waited for.
    Wait,
}

/// Counts of results newly stored.
#[derive(Clone, Copy, Default)]
struct Tally {
    completed: i64,
    passed: i64,
    failed: i64,
    errors: i64,
    cost_usd: f64,
}

impl Tally {
    /// The run's id and these counts, as `$1`…`$6` of a statement.
    fn arguments(&self, run_id: Uuid) -> Result<sqlx::postgres::PgArguments> {
        use sqlx::Arguments as _;
        let mut args = sqlx::postgres::PgArguments::default();
        args.add(run_id).map_err(sqlx::Error::Encode)?;
        for count in [self.completed, self.passed, self.failed, self.errors] {
            args.add(count).map_err(sqlx::Error::Encode)?;
        }
        args.add(self.cost_usd).map_err(sqlx::Error::Encode)?;
        Ok(args)
    }
}

/// Adds `own` and every waiting tally of the run to its counters: the run
/// after the fold, and whether the fold completed it; `None` if the lock
/// was tried and taken.
async fn fold(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    run_id: Uuid,
    lock: Lock,
    own: Tally,
) -> Result<Option<(RunRecord, bool)>> {
    if lock == Lock::Wait {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(fold_key(run_id))
            .execute(&mut **tx)
            .await?;
    } else {
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(fold_key(run_id))
            .fetch_one(&mut **tx)
            .await?;
        if !locked {
            return Ok(None);
        }
    }
    // `prev` takes the row lock and reads the status this update replaces
    // (NO KEY UPDATE, as the update itself: a plain FOR UPDATE would wait
    // on the key-share locks results' inserts hold); `finished_at` is the
    // moment of the update itself (`clock_timestamp`), not the start of the
    // transaction. `active_at` (indexed, for the reconciler) moves at most
    // once a second: an update that leaves every indexed column alone stays
    // a HOT update.
    let row = sqlx::query_with(&format!(
        "WITH t AS (DELETE FROM run_tallies WHERE run_id = $1 \
                    RETURNING completed, passed, failed, errors, cost_usd), \
              s AS (SELECT COALESCE(sum(completed), 0)::bigint + $2 AS c, \
                           COALESCE(sum(passed), 0)::bigint + $3 AS p, \
                           COALESCE(sum(failed), 0)::bigint + $4 AS f, \
                           COALESCE(sum(errors), 0)::bigint + $5 AS e, \
                           COALESCE(sum(cost_usd), 0)::float8 + $6 AS cost FROM t), \
              prev AS (SELECT status AS prev_status FROM runs WHERE id = $1 FOR NO KEY UPDATE) \
         UPDATE runs SET \
           completed_tasks = completed_tasks + s.c, passed = passed + s.p, \
           failed = failed + s.f, errors = errors + s.e, cost_usd = cost_usd + s.cost, \
           status = CASE WHEN status IN ('queued', 'running') AND completed_tasks + s.c >= total_tasks \
                         THEN 'completed' \
                         WHEN status = 'queued' THEN 'running' ELSE status END, \
           started_at = COALESCE(started_at, now()), \
           finished_at = CASE WHEN finished_at IS NULL AND completed_tasks + s.c >= total_tasks \
                              THEN clock_timestamp() ELSE finished_at END, \
           active_at = CASE WHEN s.c > 0 AND active_at < clock_timestamp() - interval '1 second' \
                            THEN clock_timestamp() ELSE active_at END \
         FROM prev, s WHERE id = $1 RETURNING {RUN_COLUMNS}, prev.prev_status"
    ), own.arguments(run_id)?)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("results for unknown run {run_id}")))?;
    let run = run_from_row(&row)?;
    let before: String = row.try_get("prev_status")?;
    let finished_now = run.status == RunStatus::Completed && before != "completed";
    Ok(Some((run, finished_now)))
}

impl PgStore {
    /// After a write whose fold found the lock taken: folds if `tally` (the
    /// write's own row, or any of the run's with `None`) still waits,
    /// waiting for the lock. The folder that held it may have read the
    /// tallies before this write committed; waiting for it once is enough,
    /// since this fold then sees every committed tally.
    async fn fold_after(
        &self,
        run_id: Uuid,
        tally: Option<i64>,
    ) -> Result<Option<(RunRecord, bool)>> {
        let waiting: bool = match tally {
            Some(id) => {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM run_tallies WHERE id = $1)")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM run_tallies WHERE run_id = $1)")
                    .bind(run_id)
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        if !waiting {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        let folded = fold(&mut tx, run_id, Lock::Wait, Tally::default()).await?;
        tx.commit().await?;
        Ok(folded)
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create_project(&self, project: &ProjectRecord) -> Result<Option<ProjectRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "INSERT", "projects"),
            async {
                let q = &project.quotas;
                let inserted = sqlx::query(PROJECT_INSERT)
                    .bind(&project.id)
                    .bind(&project.name)
                    .bind(q.max_concurrent_runs)
                    .bind(q.max_tasks_per_run)
                    .bind(q.max_tasks_per_day)
                    .bind(q.monthly_budget_usd)
                    .bind(project.weight)
                    .bind(project.created_at)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok((inserted == 1).then(|| project.clone()))
            },
        )
        .await
    }

    async fn get_project(&self, project_id: &str) -> Result<Option<ProjectRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "projects"),
            async {
                sqlx::query(&format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects WHERE id = $1"
                ))
                .bind(project_id)
                .fetch_optional(&self.pool)
                .await?
                .map(|row| project_from_row(&row))
                .transpose()
            },
        )
        .await
    }

    async fn list_projects(&self) -> Result<Vec<ProjectRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "projects"),
            async {
                sqlx::query(&format!(
                    "SELECT {PROJECT_COLUMNS} FROM projects ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(project_from_row)
                .collect()
            },
        )
        .await
    }

    async fn update_project(&self, project: &ProjectRecord) -> Result<bool> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPDATE", "projects"),
            async {
                let q = &project.quotas;
                let updated = sqlx::query(PROJECT_UPDATE)
                    .bind(&project.id)
                    .bind(&project.name)
                    .bind(q.max_concurrent_runs)
                    .bind(q.max_tasks_per_run)
                    .bind(q.max_tasks_per_day)
                    .bind(q.monthly_budget_usd)
                    .bind(project.weight)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(updated == 1)
            },
        )
        .await
    }

    async fn project_usage(
        &self,
        project_id: &str,
        day_start: DateTime<Utc>,
        month_start: DateTime<Utc>,
    ) -> Result<ProjectUsage> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "runs"),
            async {
                let row = sqlx::query(PROJECT_USAGE)
                    .bind(project_id)
                    .bind(day_start)
                    .bind(month_start)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(ProjectUsage {
                    active_runs: row.try_get("active_runs")?,
                    tasks_since: row.try_get("tasks_since")?,
                    cost_since: row.try_get("cost_since")?,
                })
            },
        )
        .await
    }

    async fn put_key(&self, key: &KeyRecord) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPSERT", "api_keys"),
            async {
                sqlx::query(KEY_PUT)
                    .bind(&key.id)
                    .bind(&key.project_id)
                    .bind(key.role.as_str())
                    .bind(&key.name)
                    .bind(&key.secret_sha256)
                    .bind(key.rate_per_minute)
                    .bind(key.created_at)
                    .bind(key.expires_at)
                    .bind(key.revoked_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            },
        )
        .await
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "api_keys"),
            async {
                sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
                    .bind(key_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(|row| key_from_row(&row))
                    .transpose()
            },
        )
        .await
    }

    async fn list_keys(&self, project_id: &str) -> Result<Vec<KeyRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "api_keys"),
            async {
                sqlx::query(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE project_id = $1 \
                     ORDER BY created_at DESC, id"
                ))
                .bind(project_id)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(key_from_row)
                .collect()
            },
        )
        .await
    }

    async fn revoke_key(&self, project_id: &str, key_id: &str, at: DateTime<Utc>) -> Result<bool> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPDATE", "api_keys"),
            async {
                let updated = sqlx::query(KEY_REVOKE)
                    .bind(project_id)
                    .bind(key_id)
                    .bind(at)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(updated == 1)
            },
        )
        .await
    }

    async fn record_audit(&self, events: &[AuditEvent]) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "INSERT", "audit_events"),
            async {
                let mut tx = self.pool.begin().await?;
                for e in events {
                    sqlx::query(AUDIT_INSERT)
                        .bind(e.at)
                        .bind(&e.project_id)
                        .bind(&e.key_id)
                        .bind(&e.method)
                        .bind(&e.target)
                        .bind(&e.outcome)
                        .bind(&e.peer)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            },
        )
        .await
    }

    async fn list_audit(
        &self,
        project_id: &str,
        limit: u32,
        before_id: Option<i64>,
    ) -> Result<Vec<AuditEvent>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "audit_events"),
            async {
                sqlx::query(AUDIT_LIST)
                    .bind(project_id)
                    .bind(before_id)
                    .bind(i64::from(limit.max(1)))
                    .fetch_all(&self.pool)
                    .await?
                    .iter()
                    .map(|row| {
                        Ok(AuditEvent {
                            id: row.try_get("id")?,
                            at: row.try_get("at")?,
                            project_id: row.try_get("project_id")?,
                            key_id: row.try_get("key_id")?,
                            method: row.try_get("method")?,
                            target: row.try_get("target")?,
                            outcome: row.try_get("outcome")?,
                            peer: row.try_get("peer")?,
                        })
                    })
                    .collect()
            },
        )
        .await
    }

    async fn put_alert(&self, alert: &AlertRecord) -> Result<()> {
        crate::trace::traced(crate::trace::db_span("postgresql", "UPSERT", "alerts"), async {
            sqlx::query(
                "INSERT INTO alerts (id, rule, fingerprint, severity, state, labels, value, threshold, \
                 summary, started_at, fired_at, resolved_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (id) DO UPDATE SET state = $5, value = $7, summary = $9, \
                 fired_at = $11, resolved_at = $12, updated_at = $13",
            )
            .bind(alert.id)
            .bind(&alert.rule)
            .bind(&alert.fingerprint)
            .bind(&alert.severity)
            .bind(alert.state.as_str())
            .bind(serde_json::to_value(&alert.labels).unwrap_or_default())
            .bind(alert.value)
            .bind(alert.threshold)
            .bind(&alert.summary)
            .bind(alert.started_at)
            .bind(alert.fired_at)
            .bind(alert.resolved_at)
            .bind(alert.updated_at)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn delete_alert(&self, alert_id: Uuid) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "DELETE", "alerts"),
            async {
                sqlx::query("DELETE FROM alerts WHERE id = $1")
                    .bind(alert_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            },
        )
        .await
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "alerts"),
            async {
                let (before_at, before_id) = query.before.unzip();
                let rows = sqlx::query(
                    "SELECT * FROM alerts WHERE ($1 = false OR state <> 'resolved') \
                 AND ($2::text IS NULL OR severity = $2) AND ($3::text IS NULL OR rule = $3) \
                 AND ($4::timestamptz IS NULL OR (started_at, id) < ($4, $5)) \
                 ORDER BY started_at DESC, id DESC LIMIT $6",
                )
                .bind(query.active_only)
                .bind(query.severity.as_deref())
                .bind(query.rule.as_deref())
                .bind(before_at)
                .bind(before_id)
                .bind(i64::from(query.limit.max(1)))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let state: String = row.try_get("state")?;
                        let labels: serde_json::Value = row.try_get("labels")?;
                        Ok(AlertRecord {
                            id: row.try_get("id")?,
                            rule: row.try_get("rule")?,
                            fingerprint: row.try_get("fingerprint")?,
                            severity: row.try_get("severity")?,
                            state: AlertState::parse(&state).ok_or_else(|| {
                                StoreError::Corrupt(format!("alert state `{state}`"))
                            })?,
                            labels: serde_json::from_value(labels)
                                .map_err(|e| StoreError::Corrupt(format!("alert labels: {e}")))?,
                            value: row.try_get("value")?,
                            threshold: row.try_get("threshold")?,
                            summary: row.try_get("summary")?,
                            started_at: row.try_get("started_at")?,
                            fired_at: row.try_get("fired_at")?,
                            resolved_at: row.try_get("resolved_at")?,
                            updated_at: row.try_get("updated_at")?,
                        })
                    })
                    .collect()
            },
        )
        .await
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn pool_stats(&self) -> Option<PoolStats> {
        Some(PoolStats {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max: self.pool.options().get_max_connections(),
        })
    }

    async fn time_acquire(&self) -> Result<std::time::Duration> {
        let started = std::time::Instant::now();
        drop(self.pool.acquire().await?);
        Ok(started.elapsed())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_run(&self, run: NewRun) -> Result<RunRecord> {
        crate::trace::traced(crate::trace::db_span("postgresql", "INSERT", "runs"), async {
            let mut tx = self.pool.begin().await?;
            let suite_id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO suites (id, project_id, description, source, compiled) \
                 VALUES ($1, $2, $3, $4, $5::jsonb)",
            )
            .bind(suite_id)
            .bind(&run.project_id)
            .bind(&run.description)
            .bind(&run.source)
            .bind(&run.compiled)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(&format!(
                "INSERT INTO runs (id, project_id, suite_id, description, label, status, options, total_tasks, trace_id) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $8) RETURNING {RUN_COLUMNS}"
            ))
            .bind(run.id)
            .bind(&run.project_id)
            .bind(suite_id)
            .bind(&run.description)
            .bind(&run.label)
            .bind(&run.options)
            .bind(run.total_tasks)
            .bind(&run.trace_id)
            .fetch_one(&mut *tx)
            .await?;
            let record = run_from_row(&row)?;
            tx.commit().await?;
            Ok(record)
        })
        .await
    }

    async fn get_run(&self, run_id: Uuid) -> Result<Option<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "runs"),
            async {
                sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"))
                    .bind(run_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(run_from_row)
                    .transpose()
            },
        )
        .await
    }

    async fn unrolled_runs(&self, min_completed: i64, limit: u32) -> Result<Vec<Uuid>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "runs"),
            async {
                Ok(sqlx::query_scalar(
                    "SELECT id FROM runs WHERE status = 'completed' AND NOT rolled_up \
                 AND completed_tasks >= $1 ORDER BY finished_at, id LIMIT $2",
                )
                .bind(min_completed)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?)
            },
        )
        .await
    }

    async fn get_runs(&self, run_ids: &[Uuid]) -> Result<Vec<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "runs"),
            async {
                sqlx::query(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE id = ANY($1)"
                ))
                .bind(run_ids)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(run_from_row)
                .collect()
            },
        )
        .await
    }

    async fn list_runs(
        &self,
        project_id: &str,
        limit: u32,
        after: Option<RunCursor>,
    ) -> Result<Vec<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "runs"),
            async {
                let rows = match after {
                    None => {
                        sqlx::query(&format!(
                            "SELECT {RUN_COLUMNS} FROM runs WHERE project_id = $1 \
                         ORDER BY created_at DESC, id DESC LIMIT $2"
                        ))
                        .bind(project_id)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                    }
                    Some(c) => {
                        sqlx::query(&format!(
                            "SELECT {RUN_COLUMNS} FROM runs WHERE project_id = $1 \
                         AND (created_at, id) < ($2, $3) \
                         ORDER BY created_at DESC, id DESC LIMIT $4"
                        ))
                        .bind(project_id)
                        .bind(c.created_at)
                        .bind(c.id)
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?
                    }
                };
                rows.iter().map(run_from_row).collect()
            },
        )
        .await
    }

    async fn previous_completed_run(&self, run: &RunRecord) -> Result<Option<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "runs"),
            async {
                let row = sqlx::query(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE project_id = $1 AND description = $2 \
                 AND status = 'completed' AND (created_at, id) < ($3, $4) \
                 ORDER BY created_at DESC, id DESC LIMIT 1"
                ))
                .bind(&run.project_id)
                .bind(&run.description)
                .bind(run.created_at)
                .bind(run.id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(run_from_row).transpose()
            },
        )
        .await
    }

    async fn latest_completed_run(
        &self,
        project_id: &str,
        description: &str,
    ) -> Result<Option<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "runs"),
            async {
                let row = sqlx::query(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs WHERE project_id = $1 AND description = $2 \
                 AND status = 'completed' ORDER BY created_at DESC, id DESC LIMIT 1"
                ))
                .bind(project_id)
                .bind(description)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(run_from_row).transpose()
            },
        )
        .await
    }

    async fn get_suite(&self, run_id: Uuid) -> Result<Option<String>> {
        crate::trace::traced(crate::trace::db_span("postgresql", "SELECT", "suites"), async {
            let row = sqlx::query(
                "SELECT s.compiled::text AS compiled FROM suites s JOIN runs r ON r.suite_id = s.id WHERE r.id = $1",
            )
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?;
            Ok(row.map(|r| r.try_get("compiled")).transpose()?)
        })
        .await
    }

    async fn put_tests(&self, run_id: Uuid, first: i64, tests: &[String]) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "INSERT", "suite_tests"),
            async {
                if tests.is_empty() {
                    return Ok(());
                }
                let digests: Vec<i64> = tests.iter().map(|t| crate::test_digest(t)).collect();
                sqlx::query(
                    "INSERT INTO suite_tests (run_id, test_index, body, digest) \
                 SELECT $1, $2 + t.i - 1, t.body, t.digest \
                 FROM UNNEST($3::text[], $4::int8[]) WITH ORDINALITY AS t(body, digest, i) \
                 ON CONFLICT (run_id, test_index) DO NOTHING",
                )
                .bind(run_id)
                .bind(first)
                .bind(tests)
                .bind(&digests)
                .execute(&self.pool)
                .await?;
                Ok(())
            },
        )
        .await
    }

    async fn get_tests(&self, run_id: Uuid, first: i64, last: i64) -> Result<Vec<(i64, String)>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "suite_tests"),
            async {
                let rows = sqlx::query(
                    "SELECT test_index, body FROM suite_tests \
                 WHERE run_id = $1 AND test_index BETWEEN $2 AND $3 ORDER BY test_index",
                )
                .bind(run_id)
                .bind(first)
                .bind(last)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            i64::from(row.try_get::<i32, _>("test_index")?),
                            row.try_get("body")?,
                        ))
                    })
                    .collect()
            },
        )
        .await
    }

    async fn delete_tests(&self, run_id: Uuid) -> Result<u64> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "DELETE", "suite_tests"),
            async {
                Ok(sqlx::query("DELETE FROM suite_tests WHERE run_id = $1")
                    .bind(run_id)
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            },
        )
        .await
    }

    async fn sweep_orphan_tests(&self, before: Uuid) -> Result<u64> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "DELETE", "suite_tests"),
            async {
                Ok(sqlx::query(
                    "DELETE FROM suite_tests t WHERE t.run_id < $1 \
                 AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = t.run_id)",
                )
                .bind(before)
                .execute(&self.pool)
                .await?
                .rows_affected())
            },
        )
        .await
    }

    async fn finish_upload(
        &self,
        run_id: Uuid,
        total_tasks: i64,
        options: serde_json::Value,
    ) -> Result<Option<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("postgresql", "UPDATE", "runs"), async {
            // The row lock orders this against the result writes: whichever
            // comes last sees every task in and completes the run.
            sqlx::query(&format!(
                "UPDATE runs SET total_tasks = $2, options = $3, \
                   status = CASE WHEN status IN ('queued', 'running') AND completed_tasks >= $2 \
                                 THEN 'completed' ELSE status END, \
                   finished_at = CASE WHEN status IN ('queued', 'running') AND completed_tasks >= $2 \
                                      THEN clock_timestamp() ELSE finished_at END \
                 WHERE id = $1 RETURNING {RUN_COLUMNS}"
            ))
            .bind(run_id)
            .bind(total_tasks)
            .bind(&options)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(run_from_row)
            .transpose()
        })
        .await
    }

    async fn mark_running(&self, run_id: Uuid) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPDATE", "runs"),
            async {
                sqlx::query(
                    "UPDATE runs SET status = 'running', started_at = now() \
                 WHERE id = $1 AND status = 'queued'",
                )
                .bind(run_id)
                .execute(&self.pool)
                .await?;
                Ok(())
            },
        )
        .await
    }

    async fn cancel_run(&self, run_id: Uuid) -> Result<Option<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPDATE", "runs"),
            async { self.end_run(run_id, RunStatus::Cancelled, "").await },
        )
        .await
    }

    async fn fail_run(&self, run_id: Uuid, reason: &str) -> Result<Option<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPDATE", "runs"),
            async { self.end_run(run_id, RunStatus::Failed, reason).await },
        )
        .await
    }

    async fn limit_run(&self, run_id: Uuid) -> Result<Option<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPDATE", "runs"),
            async { self.end_run(run_id, RunStatus::CostLimited, "").await },
        )
        .await
    }

    async fn stale_runs(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "runs"),
            async {
                // Tallies a writer left behind when it stopped between its commit
                // and its fold are folded first, so a run whose every result is
                // stored is not taken for stuck (or is found complete).
                let orphaned: Vec<Uuid> = sqlx::query_scalar(
                    "SELECT DISTINCT t.run_id FROM run_tallies t JOIN runs r ON r.id = t.run_id \
                 WHERE r.status IN ('queued', 'running') AND r.active_at < $1",
                )
                .bind(before)
                .fetch_all(&self.pool)
                .await?;
                for run_id in orphaned {
                    self.fold_after(run_id, None).await?;
                }
                let rows = sqlx::query(&format!(
                    "SELECT {RUN_COLUMNS} FROM runs \
                 WHERE status IN ('queued', 'running') AND active_at < $1 \
                 ORDER BY active_at, id LIMIT $2"
                ))
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(run_from_row).collect()
            },
        )
        .await
    }

    async fn claim_redrive(
        &self,
        run_id: Uuid,
        seen: i32,
        not_since: DateTime<Utc>,
    ) -> Result<Option<RunRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPDATE", "runs"),
            async {
                sqlx::query(&format!(
                "UPDATE runs SET redrives = redrives + 1, active_at = t.now, redriven_at = t.now \
                 FROM (SELECT clock_timestamp() AS now) t \
                 WHERE id = $1 AND redrives = $2 AND status IN ('queued', 'running') \
                   AND (redriven_at IS NULL OR redriven_at < $3) \
                 RETURNING {RUN_COLUMNS}"
            ))
            .bind(run_id)
            .bind(seen)
            .bind(not_since)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(run_from_row)
            .transpose()
            },
        )
        .await
    }

    async fn touch_run(&self, run_id: Uuid) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPDATE", "runs"),
            async {
                sqlx::query(
                    "UPDATE runs SET active_at = clock_timestamp() \
                 WHERE id = $1 AND status IN ('queued', 'running')",
                )
                .bind(run_id)
                .execute(&self.pool)
                .await?;
                Ok(())
            },
        )
        .await
    }

    async fn missing_tasks(&self, run_id: Uuid, limit: u32) -> Result<Vec<TaskRange>> {
        crate::trace::traced(crate::trace::db_span("postgresql", "SELECT", "results"), async {
            // Gaps between consecutive stored tasks (an index-only walk of the
            // primary key), and the tail after the last one.
            let rows = sqlx::query(
                "WITH stored AS ( \
                   SELECT task_index, lag(task_index, 1, -1::bigint) OVER (ORDER BY task_index) AS prev \
                   FROM results WHERE run_id = $1 \
                 ), gaps AS ( \
                   SELECT prev + 1 AS first, task_index - prev - 1 AS count FROM stored \
                   WHERE task_index > prev + 1 \
                   UNION ALL \
                   SELECT COALESCE(max(r.task_index), -1) + 1, \
                          runs.total_tasks - COALESCE(max(r.task_index), -1) - 1 \
                   FROM runs LEFT JOIN results r ON r.run_id = runs.id \
                   WHERE runs.id = $1 GROUP BY runs.total_tasks \
                 ) \
                 SELECT first, count FROM gaps WHERE count > 0 ORDER BY first LIMIT $2",
            )
            .bind(run_id)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(TaskRange {
                        first: row.try_get("first")?,
                        count: row.try_get("count")?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn insert_results(&self, run_id: Uuid, rows: &[NewResult]) -> Result<InsertOutcome> {
        crate::trace::traced(crate::trace::db_span("postgresql", "INSERT", "results"), async {
            let n = rows.len();
            let mut task_index = Vec::with_capacity(n);
            let mut project_id = Vec::with_capacity(n);
            let mut test_index = Vec::with_capacity(n);
            let mut prompt_index = Vec::with_capacity(n);
            let mut provider_index = Vec::with_capacity(n);
            let mut repeat_index = Vec::with_capacity(n);
            let mut provider_id = Vec::with_capacity(n);
            let mut status = Vec::with_capacity(n);
            let mut score = Vec::with_capacity(n);
            let mut reason = Vec::with_capacity(n);
            let mut rendered_prompt = Vec::with_capacity(n);
            let mut output = Vec::with_capacity(n);
            let mut assertions = Vec::with_capacity(n);
            let mut latency_ms = Vec::with_capacity(n);
            let mut tokens_in = Vec::with_capacity(n);
            let mut tokens_out = Vec::with_capacity(n);
            let mut cost_usd = Vec::with_capacity(n);
            let mut cached = Vec::with_capacity(n);
            let mut error = Vec::with_capacity(n);
            let mut trace_id = Vec::with_capacity(n);
            for r in rows {
                task_index.push(r.task_index);
                project_id.push(r.project_id.as_str());
                test_index.push(r.test_index);
                prompt_index.push(r.prompt_index);
                provider_index.push(r.provider_index);
                repeat_index.push(r.repeat_index);
                provider_id.push(r.provider_id.as_str());
                status.push(r.status as i16);
                score.push(r.score);
                reason.push(r.reason.as_str());
                rendered_prompt.push(r.rendered_prompt.as_str());
                output.push(r.output.as_str());
                assertions.push(r.assertions.to_string());
                latency_ms.push(r.latency_ms);
                tokens_in.push(r.tokens_in);
                tokens_out.push(r.tokens_out);
                cost_usd.push(r.cost_usd);
                cached.push(r.cached);
                error.push(r.error.as_str());
                trace_id.push(r.trace_id.as_str());
            }

            // The rows go in with this write's counts beside them, and no lock
            // on the run: the counts wait in `run_tallies` until a fold adds
            // them to the run's counters (see `fold`, `fold_after`). Writes of
            // one run never wait on each other to store their results; a plain
            // counter update here held the run's row through each commit and
            // made them queue.
            let mut tx = self.pool.begin().await?;
            let rows_inserted = sqlx::query(
                "INSERT INTO results (run_id, task_index, project_id, test_index, prompt_index, \
                   provider_index, repeat_index, provider_id, status, score, reason, rendered_prompt, \
                   output, assertions, latency_ms, tokens_in, tokens_out, cost_usd, cached, error, trace_id) \
                 SELECT $1, ti, pid, te, pr, pv, rp, prov, st, sc, re, rpt, outp, asr::jsonb, lat, tin, tout, cost, ca, er, tr \
                 FROM UNNEST($2::bigint[], $3::text[], $4::int[], $5::int[], $6::int[], $7::int[], \
                             $8::text[], $9::smallint[], $10::float8[], $11::text[], $12::text[], \
                             $13::text[], $14::text[], $15::int[], $16::int[], $17::int[], \
                             $18::float8[], $19::bool[], $20::text[], $21::text[]) \
                   AS u(ti, pid, te, pr, pv, rp, prov, st, sc, re, rpt, outp, asr, lat, tin, tout, cost, ca, er, tr) \
                 ON CONFLICT (run_id, task_index) DO NOTHING \
                 RETURNING status, cost_usd",
            )
            .bind(run_id)
            .bind(&task_index)
            .bind(&project_id)
            .bind(&test_index)
            .bind(&prompt_index)
            .bind(&provider_index)
            .bind(&repeat_index)
            .bind(&provider_id)
            .bind(&status)
            .bind(&score)
            .bind(&reason)
            .bind(&rendered_prompt)
            .bind(&output)
            .bind(&assertions)
            .bind(&latency_ms)
            .bind(&tokens_in)
            .bind(&tokens_out)
            .bind(&cost_usd)
            .bind(&cached)
            .bind(&error)
            .bind(&trace_id)
            .fetch_all(&mut *tx)
            .await?;

            let (mut pass, mut fail, mut err) = (0i64, 0i64, 0i64);
            let mut cost = 0f64;
            for row in &rows_inserted {
                cost += row.try_get::<f64, _>("cost_usd")?;
                match result_status(row.try_get("status")?)? {
                    ResultStatus::Pass => pass += 1,
                    ResultStatus::Fail => fail += 1,
                    ResultStatus::Error => err += 1,
                }
            }
            let inserted = rows_inserted.len() as i64;
            let own = Tally {
                completed: inserted,
                passed: pass,
                failed: fail,
                errors: err,
                cost_usd: cost,
            };
            // Counted at once if no other write of the run is folding (a write
            // that inserts nothing, a redelivery, still folds: a writer may have
            // stopped between its commit and its fold); else left as a tally.
            let folded = fold(&mut tx, run_id, Lock::Try, own).await?;
            let tally: Option<i64> = if folded.is_none() && inserted > 0 {
                Some(
                    sqlx::query_scalar_with(
                        "INSERT INTO run_tallies (run_id, completed, passed, failed, errors, cost_usd) \
                         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                        own.arguments(run_id)?,
                    )
                    .fetch_one(&mut *tx)
                    .await?,
                )
            } else {
                None
            };
            tx.commit().await?;
            let folded = match folded {
                Some(folded) => Some(folded),
                // Another write was folding, maybe without this one's counts.
                None if tally.is_some() => self.fold_after(run_id, tally).await?,
                None => None,
            };
            let (run, finished_now) = match folded {
                Some(folded) => folded,
                // Another write folded this one's counts: the run as it stands.
                None => (
                    self.get_run(run_id).await?.ok_or_else(|| {
                        StoreError::Corrupt(format!("results for unknown run {run_id}"))
                    })?,
                    false,
                ),
            };
            Ok(InsertOutcome {
                inserted: inserted as u64,
                run,
                finished_now,
            })
        })
        .await
    }

    async fn stored_tasks(&self, run_id: Uuid, first: i64, last: i64) -> Result<Vec<i64>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "results"),
            async {
                Ok(sqlx::query_scalar(
                "SELECT task_index FROM results WHERE run_id = $1 AND task_index BETWEEN $2 AND $3",
            )
            .bind(run_id)
            .bind(first)
            .bind(last)
            .fetch_all(&self.pool)
            .await?)
            },
        )
        .await
    }

    async fn list_results(
        &self,
        run_id: Uuid,
        status: Option<ResultStatus>,
        after_task: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ResultRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "results"),
            async {
                let rows = sqlx::query(&format!(
                    "SELECT {RESULT_COLUMNS} FROM results \
                 WHERE run_id = $1 AND ($2::smallint IS NULL OR status = $2) AND task_index > $3 \
                 ORDER BY task_index LIMIT $4"
                ))
                .bind(run_id)
                .bind(status.map(|s| s as i16))
                .bind(after_task.unwrap_or(-1))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(result_from_row).collect()
            },
        )
        .await
    }

    async fn roll_up(&self, run_id: Uuid) -> Result<bool> {
        crate::trace::traced(crate::trace::db_span("postgresql", "INSERT", "rollups"), async {
            let mut tx = self.pool.begin().await?;
            let claimed = sqlx::query(
                "UPDATE runs SET rolled_up = TRUE WHERE id = $1 AND status = 'completed' AND NOT rolled_up",
            )
            .bind(run_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if claimed == 0 {
                return Ok(false);
            }
            let assertions = format!(
                "INSERT INTO run_assertions (run_id, provider_index, prompt_index, kind, metric, passed, n) \
                 SELECT $1, s.* FROM ({ASSERTIONS_LIVE}) s"
            );
            for sql in ROLL_UP.iter().copied().chain([assertions.as_str()]) {
                sqlx::query(sql).bind(run_id).execute(&mut *tx).await?;
            }
            // Its latencies and outcomes, packed (the outcomes a chunk at a
            // time).
            sqlx::query(&format!(
                "INSERT INTO run_latency_packs (run_id, provider_index, prompt_index, latencies, counts) \
                 SELECT $1, p.* FROM ({}) p",
                latency_packs(LATENCIES_ROLLED)
            ))
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            let pack = format!(
                "INSERT INTO run_outcomes (run_id, first_task, last_task, n, tests, prompts, \
                 providers, repeats, statuses, scores, latencies, costs) \
                 SELECT $1, first_task, last_task, n, tests, prompts, providers, repeats, \
                 statuses, scores, latencies, costs FROM ({OUTCOME_ARRAYS}) o WHERE n > 0 \
                 RETURNING n::BIGINT AS n, last_task"
            );
            let mut after = -1i64;
            while let Some(row) = sqlx::query(&pack)
                .bind(run_id)
                .bind(after)
                .bind(OUTCOMES_AT_ONCE)
                .fetch_optional(&mut *tx)
                .await?
            {
                if row.try_get::<i64, _>("n")? < OUTCOMES_AT_ONCE {
                    break;
                }
                after = row.try_get("last_task")?;
            }
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    async fn for_each_result_metrics(
        &self,
        run_id: Uuid,
        each: &mut (dyn FnMut(ResultMetrics) + Send),
    ) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "results"),
            async {
                use futures::TryStreamExt;
                let sql = if self.rolled_up(run_id).await? {
                    METRICS_ROLLED
                } else {
                    METRICS_LIVE
                };
                let mut rows = sqlx::query(sql)
                    .bind(run_id)
                    .try_map(|row: PgRow| metrics_from_row(&row))
                    .fetch(&self.pool);
                while let Some(m) = rows.try_next().await? {
                    each(m);
                }
                Ok(())
            },
        )
        .await
    }

    async fn for_each_latency_count(
        &self,
        run_id: Uuid,
        each: &mut (dyn FnMut(LatencyCount) + Send),
    ) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "results"),
            async {
                // One row per provider × prompt with its latencies packed: a row a
                // latency costs the driver ~2 µs, thousands of them a summary's
                // whole budget. A rolled-up run's were packed at its roll-up.
                let rolled_up = self.rolled_up(run_id).await?;
                let mut rows = Vec::new();
                if rolled_up {
                    rows = sqlx::query(
                        "SELECT provider_index, prompt_index, latencies, counts \
                     FROM run_latency_packs WHERE run_id = $1",
                    )
                    .bind(run_id)
                    .fetch_all(&self.pool)
                    .await?;
                }
                if rows.is_empty() {
                    // Live, or rolled up before latencies were packed.
                    let source = if rolled_up {
                        LATENCIES_ROLLED
                    } else {
                        LATENCIES_LIVE
                    };
                    rows = sqlx::query(&latency_packs(source))
                        .bind(run_id)
                        .fetch_all(&self.pool)
                        .await?;
                }
                for row in &rows {
                    let (provider_index, prompt_index) =
                        (row.try_get("provider_index")?, row.try_get("prompt_index")?);
                    let latencies: Vec<u8> = row.try_get("latencies")?;
                    let n = (latencies.len() / 4) as i64;
                    let latencies = packed::<4>(row, "latencies", n)?;
                    let counts = packed::<8>(row, "counts", n)?;
                    for (latency, count) in latencies.into_iter().zip(counts) {
                        each(LatencyCount {
                            provider_index,
                            prompt_index,
                            latency_ms: i32::from_be_bytes(latency),
                            count: i64::from_be_bytes(count),
                        });
                    }
                }
                Ok(())
            },
        )
        .await
    }

    async fn for_each_trend_metrics(
        &self,
        query: &TrendQuery,
        each: &mut (dyn FnMut(TrendMetrics) + Send),
    ) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "runs"),
            async {
                use futures::TryStreamExt;
                let pending: Vec<Uuid> = sqlx::query_scalar(TREND_PENDING)
                    .bind(query.project_id.as_str())
                    .bind(query.description.as_deref())
                    .bind(query.label.as_deref())
                    .bind(query.since)
                    .bind(query.until)
                    .fetch_all(&self.pool)
                    .await?;
                for run in pending {
                    self.roll_up(run).await?;
                }
                for (sql, latencies) in [
                    (TREND_METRICS_SELECT, false),
                    (TREND_LATENCIES_SELECT, true),
                ] {
                    let mut rows = sqlx::query(sql)
                        .bind(query.project_id.as_str())
                        .bind(query.description.as_deref())
                        .bind(query.label.as_deref())
                        .bind(query.since)
                        .bind(query.until)
                        .fetch(&self.pool);
                    while let Some(row) = rows.try_next().await? {
                        each(TrendMetrics {
                            run_id: row.try_get("run_id")?,
                            created_at: row.try_get("run_created_at")?,
                            row: if latencies {
                                TrendRow::Latency(latency_from_row(&row)?)
                            } else {
                                TrendRow::Metrics(metrics_from_row(&row)?)
                            },
                        });
                    }
                }
                Ok(())
            },
        )
        .await
    }

    async fn for_each_assertion_metrics(
        &self,
        run_id: Uuid,
        each: &mut (dyn FnMut(AssertionMetrics) + Send),
    ) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "results"),
            async {
                use futures::TryStreamExt;
                let sql = if self.rolled_up(run_id).await? {
                    "SELECT provider_index, prompt_index, kind, metric, passed, n \
                 FROM run_assertions WHERE run_id = $1"
                } else {
                    ASSERTIONS_LIVE
                };
                let mut rows = sqlx::query(sql)
                    .bind(run_id)
                    .try_map(|row: PgRow| {
                        Ok(AssertionMetrics {
                            provider_index: row.try_get("provider_index")?,
                            prompt_index: row.try_get("prompt_index")?,
                            kind: row.try_get("kind")?,
                            metric: row.try_get("metric")?,
                            passed: row.try_get("passed")?,
                            count: row.try_get("n")?,
                        })
                    })
                    .fetch(&self.pool);
                while let Some(m) = rows.try_next().await? {
                    each(m);
                }
                Ok(())
            },
        )
        .await
    }

    async fn slowest_results(&self, run_id: Uuid, limit: u32) -> Result<Vec<(i64, Outcome)>> {
        crate::trace::traced(crate::trace::db_span("postgresql", "SELECT", "results"), async {
            let from = if limit <= SLOWEST_KEPT && self.rolled_up(run_id).await? {
                "AND task_index IN (SELECT task_index FROM run_slowest WHERE run_id = $1)"
            } else {
                ""
            };
            let sql = format!(
                "{} WHERE run_id = $1 AND status <> 3 {from} ORDER BY latency_ms DESC, task_index LIMIT $2",
                OUTCOME_SELECT.replacen("SELECT ", "SELECT task_index, ", 1)
            );
            let rows = sqlx::query(&sql)
                .bind(run_id)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|row| Ok((row.try_get("task_index")?, pg_outcome(row)?)))
                .collect()
        })
        .await
    }

    async fn most_failed_tests(&self, run_id: Uuid, limit: u32) -> Result<Vec<TestFailures>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "results"),
            async {
                let sql = if self.rolled_up(run_id).await? {
                    MOST_FAILED_ROLLED
                } else {
                    MOST_FAILED_LIVE
                };
                let rows = sqlx::query(sql)
                    .bind(run_id)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok(TestFailures {
                            test_index: row.try_get("test_index")?,
                            unpassed: row.try_get("unpassed")?,
                            total: row.try_get("total")?,
                        })
                    })
                    .collect()
            },
        )
        .await
    }

    async fn for_each_outcome(
        &self,
        run_id: Uuid,
        each: &mut (dyn FnMut(Outcome) + Send),
    ) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "results"),
            async {
                if self.rolled_up(run_id).await? {
                    // Packed at its roll-up; a run rolled up before outcomes were
                    // packed has none, and is read from its results below.
                    use futures::TryStreamExt;
                    let mut rows = sqlx::query(
                    "SELECT n::BIGINT AS n, tests, prompts, providers, repeats, statuses, scores, \
                     latencies, costs FROM run_outcomes WHERE run_id = $1 ORDER BY first_task",
                )
                .bind(run_id)
                .fetch(&self.pool);
                    let mut packed = false;
                    while let Some(row) = rows.try_next().await? {
                        each_outcome(&row, each)?;
                        packed = true;
                    }
                    if packed {
                        return Ok(());
                    }
                }
                let mut after = -1i64;
                loop {
                    let row = sqlx::query(OUTCOME_ARRAYS)
                        .bind(run_id)
                        .bind(after)
                        .bind(OUTCOMES_AT_ONCE)
                        .fetch_one(&self.pool)
                        .await?;
                    if each_outcome(&row, each)? < OUTCOMES_AT_ONCE {
                        return Ok(());
                    }
                    after = row.try_get("last_task")?;
                }
            },
        )
        .await
    }

    async fn test_digests(&self, run_id: Uuid) -> Result<Vec<(i64, i64)>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "suite_tests"),
            async {
                // As two arrays: a row costs the driver ~2 µs, and a comparison of
                // 250,000 tests read them for half a second.
                let row = sqlx::query(
                    "SELECT array_agg(test_index) AS tests, array_agg(digest) AS digests \
                 FROM (SELECT test_index, digest FROM suite_tests \
                       WHERE run_id = $1 AND digest IS NOT NULL ORDER BY test_index) s",
                )
                .bind(run_id)
                .fetch_one(&self.pool)
                .await?;
                let tests: Vec<i32> = row
                    .try_get::<Option<Vec<i32>>, _>("tests")?
                    .unwrap_or_default();
                let digests: Vec<i64> = row
                    .try_get::<Option<Vec<i64>>, _>("digests")?
                    .unwrap_or_default();
                let digests = same_length("digests", digests, tests.len() as i64)?;
                let mut out: Vec<(i64, i64)> =
                    tests.into_iter().map(i64::from).zip(digests).collect();
                // A row stored before digests were has its body read instead.
                let legacy = sqlx::query(
                    "SELECT test_index, body FROM suite_tests WHERE run_id = $1 AND digest IS NULL",
                )
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?;
                if !legacy.is_empty() {
                    for row in &legacy {
                        out.push((
                            i64::from(row.try_get::<i32, _>("test_index")?),
                            crate::test_digest(row.try_get("body")?),
                        ));
                    }
                    out.sort_unstable_by_key(|&(index, _)| index);
                }
                Ok(out)
            },
        )
        .await
    }

    async fn create_report(&self, report: NewReport) -> Result<ReportRecord> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "INSERT", "reports"),
            async { insert_report(&self.pool, &report).await },
        )
        .await
    }

    async fn find_or_create_report(
        &self,
        report: NewReport,
        reuse: ReportReuse,
    ) -> Result<(ReportRecord, bool)> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "INSERT", "reports"),
            async {
                let mut tx = self.pool.begin().await?;
                // One request at a time per run, kind and format (a key space of
                // its own: the two-int form never meets the runs' one-bigint locks).
                sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
                    .bind(REPORT_LOCK_CLASS)
                    .bind(format!(
                        "{}|{}|{}",
                        report.run_id, report.kind, report.format
                    ))
                    .execute(&mut *tx)
                    .await?;
                let found = sqlx::query(
                    "SELECT * FROM reports WHERE run_id = $1 AND format = $2 AND kind = $3 \
                 AND created_at >= $4 \
                 AND (status = 'ready' OR (status = 'pending' AND created_at >= $5)) \
                 ORDER BY created_at DESC, id DESC LIMIT 1",
                )
                .bind(report.run_id)
                .bind(&report.format)
                .bind(&report.kind)
                .bind(reuse.since)
                .bind(reuse.pending_since)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(row) = found {
                    return Ok((report_from_row(&row)?, false));
                }
                let created = insert_report(&mut *tx, &report).await?;
                tx.commit().await?;
                Ok((created, true))
            },
        )
        .await
    }

    async fn get_report(&self, report_id: Uuid) -> Result<Option<ReportRecord>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "reports"),
            async {
                sqlx::query("SELECT * FROM reports WHERE id = $1")
                    .bind(report_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .as_ref()
                    .map(report_from_row)
                    .transpose()
            },
        )
        .await
    }

    async fn finish_report(&self, report_id: Uuid, outcome: ReportOutcome) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "UPDATE", "reports"),
            async {
                let (status, content, bytes, parts, error) = report_outcome(outcome);
                let mut tx = self.pool.begin().await?;
                if status == ReportStatus::Failed {
                    sqlx::query("DELETE FROM report_parts WHERE report_id = $1")
                        .bind(report_id)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                "UPDATE reports SET status = $2, content = $3, bytes = $4, parts = $5, error = $6, \
                 finished_at = now() WHERE id = $1",
            )
            .bind(report_id)
            .bind(status.as_str())
            .bind(content)
            .bind(bytes)
            .bind(parts)
            .bind(error)
            .execute(&mut *tx)
            .await?;
                tx.commit().await?;
                Ok(())
            },
        )
        .await
    }

    async fn put_report_part(&self, report_id: Uuid, part: u32, data: &[u8]) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "INSERT", "report_parts"),
            async {
                sqlx::query(
                    "INSERT INTO report_parts (report_id, part, data) VALUES ($1, $2, $3) \
                 ON CONFLICT (report_id, part) DO UPDATE SET data = excluded.data",
                )
                .bind(report_id)
                .bind(part as i32)
                .bind(data)
                .execute(&self.pool)
                .await?;
                Ok(())
            },
        )
        .await
    }

    async fn report_part(&self, report_id: Uuid, part: u32) -> Result<Option<Vec<u8>>> {
        crate::trace::traced(
            crate::trace::db_span("postgresql", "SELECT", "report_parts"),
            async {
                Ok(sqlx::query_scalar(
                    "SELECT data FROM report_parts WHERE report_id = $1 AND part = $2",
                )
                .bind(report_id)
                .bind(part as i32)
                .fetch_optional(&self.pool)
                .await?)
            },
        )
        .await
    }
}

fn project_from_row(row: &PgRow) -> Result<ProjectRecord> {
    Ok(ProjectRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        quotas: Quotas {
            max_concurrent_runs: row.try_get("max_concurrent_runs")?,
            max_tasks_per_run: row.try_get("max_tasks_per_run")?,
            max_tasks_per_day: row.try_get("max_tasks_per_day")?,
            monthly_budget_usd: row.try_get("monthly_budget_usd")?,
        },
        weight: row.try_get("weight")?,
        created_at: row.try_get("created_at")?,
    })
}

fn key_from_row(row: &PgRow) -> Result<KeyRecord> {
    let role: String = row.try_get("role")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("key role `{role}`")))?,
        name: row.try_get("name")?,
        secret_sha256: row.try_get("secret_sha256")?,
        rate_per_minute: row.try_get("rate_per_minute")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}
