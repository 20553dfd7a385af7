//! The SQLite backend for embedded mode: one file, WAL, the same behaviour as
//! [`PgStore`](crate::PgStore). Unchecked queries, chunked multi-row inserts,
//! keyset pagination.
//!
//! UUIDs are stored as hyphenated text and timestamps as fixed-width RFC 3339
//! text written here (not by SQLite), so that comparing the text compares the
//! values the way Postgres does.

use std::{path::Path, str::FromStr, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use gauntlet_config::DatabaseConfig;
use sqlx::{
    ConnectOptions, QueryBuilder, Row, Sqlite, SqlitePool,
    sqlite::{
        SqliteConnectOptions, SqliteError, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
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

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a writer waits for another writer's transaction before giving up
/// with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite's default limit on bound parameters per statement (since 3.32).
const MAX_PARAMS: usize = 32766;

/// Parameters bound per result row in `insert_results`.
const RESULT_PARAMS: usize = 22;

/// Rows per `INSERT` statement, so a batch never exceeds [`MAX_PARAMS`].
const RESULT_ROWS_PER_STATEMENT: usize = MAX_PARAMS / RESULT_PARAMS;
/// Rows of `suite_tests` per INSERT statement (three parameters each).
const TEST_ROWS_PER_STATEMENT: usize = MAX_PARAMS / 3;

/// SQLite-backed [`Store`].
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const RUN_COLUMNS: &str = "id, project_id, suite_id, description, label, status, options, \
     total_tasks, completed_tasks, passed, failed, errors, cost_usd, created_at, started_at, \
     finished_at, status_reason, active_at, redrives, redriven_at, rolled_up, trace_id";

/// A run's assertion outcomes grouped from its results (until it is rolled
/// up), read as the Postgres store reads them.
/// A run's assertion outcomes grouped by provider, prompt, type, metric and
/// verdict, as Postgres groups them: `type` and `metric` count when they
/// are strings (else as empty), `pass` when it is `true`; assertions that
/// are not an array count nothing, an outcome that is not an object counts
/// as untyped and failed (reading it as an object failed the whole read).
/// Results with the same outcomes are
/// grouped first, by their text: SQLite's JSON functions parse an outcome
/// again for every field they extract, which took 90-145 ms for 20,000
/// results of two assertions (most of an end-of-run summary), and a run's
/// outcomes mostly repeat (22-47 ms for the same run).
const ASSERTIONS_LIVE: &str = "SELECT r.provider_index, r.prompt_index, \
     CASE WHEN a.type <> 'object' THEN '' \
          WHEN json_type(a.value, '$.type') = 'text' THEN json_extract(a.value, '$.type') \
          ELSE '' END AS kind, \
     CASE WHEN a.type <> 'object' THEN '' \
          WHEN json_type(a.value, '$.metric') = 'text' THEN json_extract(a.value, '$.metric') \
          ELSE '' END AS metric, \
     CASE WHEN a.type <> 'object' THEN FALSE \
          ELSE json_type(a.value, '$.pass') = 'true' END AS passed, SUM(r.n) AS n \
     FROM (SELECT provider_index, prompt_index, assertions, COUNT(*) AS n \
           FROM results WHERE run_id = $1 GROUP BY 1, 2, 3) r, \
          json_each(CASE WHEN json_type(r.assertions) = 'array' \
                         THEN r.assertions ELSE '[]' END) a \
     GROUP BY 1, 2, 3, 4, 5";

fn parse_run_key(text: &str) -> Result<Uuid> {
    Uuid::parse_str(text).map_err(|e| StoreError::Corrupt(format!("run id `{text}`: {e}")))
}

const RESULT_COLUMNS: &str = "run_id, task_index, project_id, test_index, prompt_index, \
     provider_index, repeat_index, provider_id, status, score, reason, rendered_prompt, output, \
     assertions, latency_ms, tokens_in, tokens_out, cost_usd, cached, error, trace_id, created_at";

const REPORT_COLUMNS: &str = "id, project_id, run_id, format, kind, status, content, bytes, parts, error, created_at, \
     finished_at";

/// Connections of a store opened with [`SqliteStore::open`].
const EMBEDDED_CONNECTIONS: u32 = 4;

impl SqliteStore {
    /// Whether the run has been rolled up ([`Store::roll_up`]); an unknown
    /// run has not.
    async fn rolled_up(&self, run_id: Uuid) -> Result<bool> {
        let rolled: Option<bool> = sqlx::query_scalar("SELECT rolled_up FROM runs WHERE id = $1")
            .bind(uuid_text(run_id))
            .fetch_optional(&self.pool)
            .await?;
        Ok(rolled.unwrap_or(false))
    }

    /// Opens (creating if missing) the database at `config.url`, e.g.
    /// `sqlite:///var/lib/gauntlet/gauntlet.db` or `sqlite://data/gauntlet.db`.
    /// With `config.migrate`, applies pending migrations.
    ///
    /// `sqlite::memory:` gives a private in-memory database on a single
    /// connection, which is what keeps it alive.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(&config.url)?;
        let acquire_timeout = Duration::from_secs(config.acquire_timeout_secs);
        let in_memory = config.url.contains(":memory:") || config.url.contains("mode=memory");
        let store = if in_memory {
            Self::connect_in_memory(options, acquire_timeout).await?
        } else {
            Self::connect_file(options, config.max_connections, acquire_timeout).await?
        };
        if config.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Opens (creating if missing) the database file at `path` and applies
    /// pending migrations. Four connections: SQLite writes one at a time
    /// anyway, and each connection keeps its own page cache.
    pub async fn open(path: &Path) -> Result<Self> {
        let defaults = DatabaseConfig::default();
        let options = SqliteConnectOptions::new().filename(path);
        let store = Self::connect_file(
            options,
            EMBEDDED_CONNECTIONS,
            Duration::from_secs(defaults.acquire_timeout_secs),
        )
        .await?;
        store.migrate().await?;
        Ok(store)
    }

    /// A fresh, migrated database that lives as long as this store.
    pub async fn in_memory() -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")?;
        let store = Self::connect_in_memory(options, Duration::from_secs(10)).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn connect_file(
        options: SqliteConnectOptions,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Self> {
        // SQLite creates the file but not the directory it goes in.
        if let Some(dir) = options.get_filename().parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("creating directory {}: {e}", dir.display()))
            })?;
        }
        let options = common_options(options)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL loses at most the last transactions on power
            // loss, never consistency; results are redelivered anyway.
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self { pool })
    }

    async fn connect_in_memory(
        options: SqliteConnectOptions,
        acquire_timeout: Duration,
    ) -> Result<Self> {
        // An in-memory database dies with its last connection, and shared-cache
        // connections lock whole tables without waiting; so exactly one
        // connection, never closed while the pool lives.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(acquire_timeout)
            .connect_with(common_options(options))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction that takes the write lock up front (waiting up to
    /// the busy timeout), the SQLite analogue of `SELECT … FOR UPDATE`. A
    /// deferred transaction that reads first fails with `SQLITE_BUSY` instead
    /// of waiting when another writer got in between.
    ///
    /// It is begun on a task of its own, so a caller cut off (the worker's
    /// write timeout) cannot cut the BEGIN off: sqlx does not roll back a
    /// custom BEGIN cancelled after SQLite ran it, and the connection would
    /// go back to the pool with the write lock held for good, stalling every
    /// writer. Finished on its task, the transaction is simply dropped, and
    /// so rolled back, when nobody waits for it any more.
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>> {
        let pool = self.pool.clone();
        tokio::spawn(async move { pool.begin_with("BEGIN IMMEDIATE").await })
            .await
            .map_err(|e| StoreError::Unavailable(format!("beginning a write: {e}")))?
            .map_err(StoreError::from)
    }

    async fn end_run(
        &self,
        run_id: Uuid,
        status: RunStatus,
        reason: &str,
    ) -> Result<Option<RunRecord>> {
        sqlx::query(
            "UPDATE runs SET status = ?2, finished_at = ?3, status_reason = ?4 \
             WHERE id = ?1 AND status IN ('queued', 'running')",
        )
        .bind(uuid_text(run_id))
        .bind(status.as_str())
        .bind(ts_text(now()))
        .bind(reason)
        .execute(&self.pool)
        .await?;
        self.get_run(run_id).await
    }
}

fn common_options(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .log_statements(tracing::log::LevelFilter::Trace)
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2))
        // A page of results is up to 1000 rows; with sqlx's default of 50
        // rows in flight the worker thread and the reader hand over twenty
        // times a page, which cost more than the query itself.
        .row_buffer_size(1024)
}

/// Whether `e` is SQLite saying another connection holds a lock
/// (`SQLITE_BUSY`, `SQLITE_LOCKED` and their extended codes).
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.try_downcast_ref::<SqliteError>())
        .and_then(sqlx::error::DatabaseError::code)
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| matches!(code & 0xff, 5 | 6))
}

/// Now, at the precision Postgres keeps, so both backends hand back the same
/// kind of value.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Fixed width, so text order is time order.
fn ts_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn uuid_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn get_uuid(row: &SqliteRow, column: &str) -> Result<Uuid> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt(format!("{column} `{text}`: {e}")))
}

fn parse_ts(column: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("{column} `{text}`: {e}")))
}

fn get_ts(row: &SqliteRow, column: &str) -> Result<DateTime<Utc>> {
    let text: String = row.try_get(column)?;
    parse_ts(column, &text)
}

fn get_opt_ts(row: &SqliteRow, column: &str) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| parse_ts(column, &t)).transpose()
}

fn get_json(row: &SqliteRow, column: &str) -> Result<serde_json::Value> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A stored result status no `ResultStatus` has, as an error decoding its
/// column (inside a row mapping, which can only fail with sqlx's errors).
fn sqlite_outcome(row: &SqliteRow) -> Result<Outcome, sqlx::Error> {
    let status: i64 = row.try_get("status")?;
    Ok(Outcome {
        test_index: row.try_get("test_index")?,
        prompt_index: row.try_get("prompt_index")?,
        provider_index: row.try_get("provider_index")?,
        repeat_index: row.try_get("repeat_index")?,
        status: i16::try_from(status)
            .ok()
            .and_then(ResultStatus::from_i16)
            .ok_or_else(|| corrupt_status(status))?,
        score: row.try_get("score")?,
        latency_ms: row.try_get("latency_ms")?,
        cost_usd: row.try_get("cost_usd")?,
    })
}

fn corrupt_status(v: impl std::fmt::Display) -> sqlx::Error {
    sqlx::Error::ColumnDecode {
        index: "status".to_owned(),
        source: format!("result status {v}").into(),
    }
}

fn result_status(row: &SqliteRow) -> Result<ResultStatus> {
    let v: i64 = row.try_get("status")?;
    i16::try_from(v)
        .ok()
        .and_then(ResultStatus::from_i16)
        .ok_or_else(|| StoreError::Corrupt(format!("result status {v}")))
}

/// One `run_metrics` row (also read joined with its run, for trends).
fn metrics_from_row(row: &SqliteRow) -> std::result::Result<ResultMetrics, sqlx::Error> {
    let status: i64 = row.try_get("status")?;
    let status = i16::try_from(status)
        .ok()
        .and_then(ResultStatus::from_i16)
        .ok_or_else(|| corrupt_status(status))?;
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
fn latency_from_row(row: &SqliteRow) -> std::result::Result<LatencyCount, sqlx::Error> {
    Ok(LatencyCount {
        provider_index: row.try_get("provider_index")?,
        prompt_index: row.try_get("prompt_index")?,
        latency_ms: row.try_get("latency_ms")?,
        count: row.try_get("n")?,
    })
}

fn run_from_row(row: &SqliteRow) -> Result<RunRecord> {
    let status: String = row.try_get("status")?;
    Ok(RunRecord {
        id: get_uuid(row, "id")?,
        project_id: row.try_get("project_id")?,
        suite_id: get_uuid(row, "suite_id")?,
        description: row.try_get("description")?,
        label: row.try_get("label")?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("run status `{status}`")))?,
        options: get_json(row, "options")?,
        total_tasks: row.try_get("total_tasks")?,
        completed_tasks: row.try_get("completed_tasks")?,
        passed: row.try_get("passed")?,
        failed: row.try_get("failed")?,
        errors: row.try_get("errors")?,
        cost_usd: row.try_get("cost_usd")?,
        created_at: get_ts(row, "created_at")?,
        started_at: get_opt_ts(row, "started_at")?,
        finished_at: get_opt_ts(row, "finished_at")?,
        status_reason: row.try_get("status_reason")?,
        active_at: get_ts(row, "active_at")?,
        redrives: row.try_get("redrives")?,
        redriven_at: get_opt_ts(row, "redriven_at")?,
        rolled_up: row.try_get("rolled_up")?,
        trace_id: row.try_get("trace_id")?,
    })
}

fn result_from_row(row: &SqliteRow) -> Result<ResultRecord> {
    Ok(ResultRecord {
        run_id: get_uuid(row, "run_id")?,
        created_at: get_ts(row, "created_at")?,
        result: NewResult {
            task_index: row.try_get("task_index")?,
            project_id: row.try_get("project_id")?,
            test_index: row.try_get("test_index")?,
            prompt_index: row.try_get("prompt_index")?,
            provider_index: row.try_get("provider_index")?,
            repeat_index: row.try_get("repeat_index")?,
            provider_id: row.try_get("provider_id")?,
            status: result_status(row)?,
            score: row.try_get("score")?,
            reason: row.try_get("reason")?,
            rendered_prompt: row.try_get("rendered_prompt")?,
            output: row.try_get("output")?,
            assertions: get_json(row, "assertions")?,
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

/// Inserts `report`, pending.
async fn insert_report<'e>(
    db: impl sqlx::SqliteExecutor<'e>,
    report: &NewReport,
) -> Result<ReportRecord> {
    let row = sqlx::query(&format!(
        "INSERT INTO reports (id, project_id, run_id, format, status, created_at, kind) \
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6) RETURNING {REPORT_COLUMNS}"
    ))
    .bind(uuid_text(report.id))
    .bind(&report.project_id)
    .bind(uuid_text(report.run_id))
    .bind(&report.format)
    .bind(ts_text(now()))
    .bind(&report.kind)
    .fetch_one(db)
    .await?;
    report_from_row(&row)
}

fn report_from_row(row: &SqliteRow) -> Result<ReportRecord> {
    let status: String = row.try_get("status")?;
    let content: String = row.try_get("content")?;
    // A document stored whole before the `bytes` column has its size 0.
    let bytes = u64::try_from(row.try_get::<i64, _>("bytes")?)
        .unwrap_or(0)
        .max(content.len() as u64);
    Ok(ReportRecord {
        id: get_uuid(row, "id")?,
        project_id: row.try_get("project_id")?,
        run_id: get_uuid(row, "run_id")?,
        format: row.try_get("format")?,
        kind: row.try_get("kind")?,
        status: ReportStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("report status `{status}`")))?,
        content,
        bytes,
        parts: u32::try_from(row.try_get::<i32, _>("parts")?).unwrap_or(0),
        error: row.try_get("error")?,
        created_at: get_ts(row, "created_at")?,
        finished_at: get_opt_ts(row, "finished_at")?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_project(&self, project: &ProjectRecord) -> Result<Option<ProjectRecord>> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "INSERT", "projects"),
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
                    .bind(ts_text(project.created_at))
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
            crate::trace::db_span("sqlite", "SELECT", "projects"),
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
            crate::trace::db_span("sqlite", "SELECT", "projects"),
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
            crate::trace::db_span("sqlite", "UPDATE", "projects"),
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
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "runs"), async {
            let row = sqlx::query(PROJECT_USAGE)
                .bind(project_id)
                .bind(ts_text(day_start))
                .bind(ts_text(month_start))
                .fetch_one(&self.pool)
                .await?;
            Ok(ProjectUsage {
                active_runs: row.try_get("active_runs")?,
                tasks_since: row.try_get("tasks_since")?,
                cost_since: row.try_get("cost_since")?,
            })
        })
        .await
    }

    async fn put_key(&self, key: &KeyRecord) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "UPSERT", "api_keys"),
            async {
                sqlx::query(KEY_PUT)
                    .bind(&key.id)
                    .bind(&key.project_id)
                    .bind(key.role.as_str())
                    .bind(&key.name)
                    .bind(&key.secret_sha256)
                    .bind(key.rate_per_minute)
                    .bind(ts_text(key.created_at))
                    .bind(key.expires_at.map(ts_text))
                    .bind(key.revoked_at.map(ts_text))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            },
        )
        .await
    }

    async fn get_key(&self, key_id: &str) -> Result<Option<KeyRecord>> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "SELECT", "api_keys"),
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
            crate::trace::db_span("sqlite", "SELECT", "api_keys"),
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
            crate::trace::db_span("sqlite", "UPDATE", "api_keys"),
            async {
                let updated = sqlx::query(KEY_REVOKE)
                    .bind(project_id)
                    .bind(key_id)
                    .bind(ts_text(at))
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
            crate::trace::db_span("sqlite", "INSERT", "audit_events"),
            async {
                let mut tx = self.pool.begin().await?;
                for e in events {
                    sqlx::query(AUDIT_INSERT)
                        .bind(ts_text(e.at))
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
            crate::trace::db_span("sqlite", "SELECT", "audit_events"),
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
                            at: get_ts(row, "at")?,
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
        crate::trace::traced(crate::trace::db_span("sqlite", "UPSERT", "alerts"), async {
            let opt = |t: Option<DateTime<Utc>>| t.map(ts_text);
            sqlx::query(
                "INSERT INTO alerts (id, rule, fingerprint, severity, state, labels, value, threshold, \
                 summary, started_at, fired_at, resolved_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
                 ON CONFLICT (id) DO UPDATE SET state = ?5, value = ?7, summary = ?9, \
                 fired_at = ?11, resolved_at = ?12, updated_at = ?13",
            )
            .bind(uuid_text(alert.id))
            .bind(&alert.rule)
            .bind(&alert.fingerprint)
            .bind(&alert.severity)
            .bind(alert.state.as_str())
            .bind(serde_json::to_string(&alert.labels).unwrap_or_default())
            .bind(alert.value)
            .bind(alert.threshold)
            .bind(&alert.summary)
            .bind(ts_text(alert.started_at))
            .bind(opt(alert.fired_at))
            .bind(opt(alert.resolved_at))
            .bind(ts_text(alert.updated_at))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn delete_alert(&self, alert_id: Uuid) -> Result<()> {
        crate::trace::traced(crate::trace::db_span("sqlite", "DELETE", "alerts"), async {
            sqlx::query("DELETE FROM alerts WHERE id = ?1")
                .bind(uuid_text(alert_id))
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "alerts"), async {
            let (before_at, before_id) = query.before.unzip();
            let rows = sqlx::query(
                "SELECT * FROM alerts WHERE (?1 = 0 OR state <> 'resolved') \
                 AND (?2 IS NULL OR severity = ?2) AND (?3 IS NULL OR rule = ?3) \
                 AND (?4 IS NULL OR started_at < ?4 OR (started_at = ?4 AND id < ?5)) \
                 ORDER BY started_at DESC, id DESC LIMIT ?6",
            )
            .bind(query.active_only)
            .bind(query.severity.as_deref())
            .bind(query.rule.as_deref())
            .bind(before_at.map(ts_text))
            .bind(before_id.map(uuid_text))
            .bind(i64::from(query.limit.max(1)))
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let state: String = row.try_get("state")?;
                    let labels: String = row.try_get("labels")?;
                    Ok(AlertRecord {
                        id: get_uuid(row, "id")?,
                        rule: row.try_get("rule")?,
                        fingerprint: row.try_get("fingerprint")?,
                        severity: row.try_get("severity")?,
                        state: AlertState::parse(&state)
                            .ok_or_else(|| StoreError::Corrupt(format!("alert state `{state}`")))?,
                        labels: serde_json::from_str(&labels)
                            .map_err(|e| StoreError::Corrupt(format!("alert labels: {e}")))?,
                        value: row.try_get("value")?,
                        threshold: row.try_get("threshold")?,
                        summary: row.try_get("summary")?,
                        started_at: get_ts(row, "started_at")?,
                        fired_at: get_opt_ts(row, "fired_at")?,
                        resolved_at: get_opt_ts(row, "resolved_at")?,
                        updated_at: get_ts(row, "updated_at")?,
                    })
                })
                .collect()
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
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
        crate::trace::traced(crate::trace::db_span("sqlite", "INSERT", "runs"), async {
            let created_at = ts_text(now());
            let mut tx = self.begin_write().await?;
            let suite_id = uuid_text(Uuid::now_v7());
            sqlx::query(
                "INSERT INTO suites (id, project_id, description, source, compiled, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(&suite_id)
            .bind(&run.project_id)
            .bind(&run.description)
            .bind(&run.source)
            .bind(&run.compiled)
            .bind(&created_at)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(&format!(
                "INSERT INTO runs (id, project_id, suite_id, description, label, status, options, \
                   total_tasks, created_at, active_at, trace_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?8, ?9) RETURNING {RUN_COLUMNS}"
            ))
            .bind(uuid_text(run.id))
            .bind(&run.project_id)
            .bind(&suite_id)
            .bind(&run.description)
            .bind(&run.label)
            .bind(run.options.to_string())
            .bind(run.total_tasks)
            .bind(&created_at)
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
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "runs"), async {
            sqlx::query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"))
                .bind(uuid_text(run_id))
                .fetch_optional(&self.pool)
                .await?
                .as_ref()
                .map(run_from_row)
                .transpose()
        })
        .await
    }

    async fn unrolled_runs(&self, min_completed: i64, limit: u32) -> Result<Vec<Uuid>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "runs"), async {
            sqlx::query(
                "SELECT id FROM runs WHERE status = 'completed' AND NOT rolled_up \
                 AND completed_tasks >= ?1 ORDER BY finished_at, id LIMIT ?2",
            )
            .bind(min_completed)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|row| get_uuid(row, "id"))
            .collect()
        })
        .await
    }

    async fn get_runs(&self, run_ids: &[Uuid]) -> Result<Vec<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "runs"), async {
            let ids: Vec<String> = run_ids.iter().map(|id| uuid_text(*id)).collect();
            sqlx::query(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE id IN (SELECT value FROM json_each(?1))"
            ))
            .bind(serde_json::Value::from(ids).to_string())
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(run_from_row)
            .collect()
        })
        .await
    }

    async fn list_runs(
        &self,
        project_id: &str,
        limit: u32,
        after: Option<RunCursor>,
    ) -> Result<Vec<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "runs"), async {
            let rows = match after {
                None => {
                    sqlx::query(&format!(
                        "SELECT {RUN_COLUMNS} FROM runs WHERE project_id = ?1 \
                         ORDER BY created_at DESC, id DESC LIMIT ?2"
                    ))
                    .bind(project_id)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                }
                Some(c) => {
                    sqlx::query(&format!(
                        "SELECT {RUN_COLUMNS} FROM runs WHERE project_id = ?1 \
                         AND (created_at, id) < (?2, ?3) \
                         ORDER BY created_at DESC, id DESC LIMIT ?4"
                    ))
                    .bind(project_id)
                    .bind(ts_text(c.created_at))
                    .bind(uuid_text(c.id))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?
                }
            };
            rows.iter().map(run_from_row).collect()
        })
        .await
    }

    async fn previous_completed_run(&self, run: &RunRecord) -> Result<Option<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "runs"), async {
            let row = sqlx::query(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE project_id = ?1 AND description = ?2 \
                 AND status = 'completed' AND (created_at, id) < (?3, ?4) \
                 ORDER BY created_at DESC, id DESC LIMIT 1"
            ))
            .bind(&run.project_id)
            .bind(&run.description)
            .bind(ts_text(run.created_at))
            .bind(uuid_text(run.id))
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(run_from_row).transpose()
        })
        .await
    }

    async fn latest_completed_run(
        &self,
        project_id: &str,
        description: &str,
    ) -> Result<Option<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "runs"), async {
            let row = sqlx::query(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE project_id = ?1 AND description = ?2 \
                 AND status = 'completed' ORDER BY created_at DESC, id DESC LIMIT 1"
            ))
            .bind(project_id)
            .bind(description)
            .fetch_optional(&self.pool)
            .await?;
            row.as_ref().map(run_from_row).transpose()
        })
        .await
    }

    async fn get_suite(&self, run_id: Uuid) -> Result<Option<String>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "suites"), async {
            sqlx::query(
                "SELECT s.compiled FROM suites s JOIN runs r ON r.suite_id = s.id WHERE r.id = ?1",
            )
            .bind(uuid_text(run_id))
            .fetch_optional(&self.pool)
            .await?
            .map(|row| row.try_get::<String, _>("compiled"))
            .transpose()
            .map_err(StoreError::from)
        })
        .await
    }

    async fn put_tests(&self, run_id: Uuid, first: i64, tests: &[String]) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "INSERT", "suite_tests"),
            async {
                if tests.is_empty() {
                    return Ok(());
                }
                let run_key = uuid_text(run_id);
                let mut tx = self.begin_write().await?;
                let mut index = first;
                for chunk in tests.chunks(TEST_ROWS_PER_STATEMENT) {
                    let mut insert = QueryBuilder::<Sqlite>::new(
                        "INSERT INTO suite_tests (run_id, test_index, body, digest) ",
                    );
                    insert.push_values(chunk, |mut values, body| {
                        values
                            .push_bind(run_key.as_str())
                            .push_bind(index)
                            .push_bind(body.as_str())
                            .push_bind(crate::test_digest(body));
                        index += 1;
                    });
                    insert.push(" ON CONFLICT (run_id, test_index) DO NOTHING");
                    insert.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            },
        )
        .await
    }

    async fn get_tests(&self, run_id: Uuid, first: i64, last: i64) -> Result<Vec<(i64, String)>> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "SELECT", "suite_tests"),
            async {
                let rows = sqlx::query(
                    "SELECT test_index, body FROM suite_tests \
                 WHERE run_id = ?1 AND test_index BETWEEN ?2 AND ?3 ORDER BY test_index",
                )
                .bind(uuid_text(run_id))
                .bind(first)
                .bind(last)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| Ok((row.try_get("test_index")?, row.try_get("body")?)))
                    .collect()
            },
        )
        .await
    }

    async fn delete_tests(&self, run_id: Uuid) -> Result<u64> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "DELETE", "suite_tests"),
            async {
                Ok(sqlx::query("DELETE FROM suite_tests WHERE run_id = ?1")
                    .bind(uuid_text(run_id))
                    .execute(&self.pool)
                    .await?
                    .rows_affected())
            },
        )
        .await
    }

    async fn sweep_orphan_tests(&self, before: Uuid) -> Result<u64> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "DELETE", "suite_tests"),
            async {
                Ok(sqlx::query(
                    "DELETE FROM suite_tests WHERE run_id < ?1 \
                 AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = suite_tests.run_id)",
                )
                .bind(uuid_text(before))
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
        crate::trace::traced(crate::trace::db_span("sqlite", "UPDATE", "runs"), async {
            sqlx::query(&format!(
                "UPDATE runs SET total_tasks = ?2, options = ?3, \
                   status = CASE WHEN status IN ('queued', 'running') AND completed_tasks >= ?2 \
                                 THEN 'completed' ELSE status END, \
                   finished_at = CASE WHEN status IN ('queued', 'running') AND completed_tasks >= ?2 \
                                      THEN ?4 ELSE finished_at END \
                 WHERE id = ?1 RETURNING {RUN_COLUMNS}"
            ))
            .bind(uuid_text(run_id))
            .bind(total_tasks)
            .bind(options.to_string())
            .bind(ts_text(now()))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(run_from_row)
            .transpose()
        })
        .await
    }

    async fn mark_running(&self, run_id: Uuid) -> Result<()> {
        crate::trace::traced(crate::trace::db_span("sqlite", "UPDATE", "runs"), async {
            sqlx::query(
                "UPDATE runs SET status = 'running', started_at = ?2 \
                 WHERE id = ?1 AND status = 'queued'",
            )
            .bind(uuid_text(run_id))
            .bind(ts_text(now()))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn cancel_run(&self, run_id: Uuid) -> Result<Option<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "UPDATE", "runs"), async {
            self.end_run(run_id, RunStatus::Cancelled, "").await
        })
        .await
    }

    async fn fail_run(&self, run_id: Uuid, reason: &str) -> Result<Option<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "UPDATE", "runs"), async {
            self.end_run(run_id, RunStatus::Failed, reason).await
        })
        .await
    }

    async fn limit_run(&self, run_id: Uuid) -> Result<Option<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "UPDATE", "runs"), async {
            self.end_run(run_id, RunStatus::CostLimited, "").await
        })
        .await
    }

    async fn stale_runs(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "runs"), async {
            let rows = sqlx::query(&format!(
                "SELECT {RUN_COLUMNS} FROM runs \
                 WHERE status IN ('queued', 'running') AND active_at < ?1 \
                 ORDER BY active_at, id LIMIT ?2"
            ))
            .bind(ts_text(before))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(run_from_row).collect()
        })
        .await
    }

    async fn claim_redrive(
        &self,
        run_id: Uuid,
        seen: i32,
        not_since: DateTime<Utc>,
    ) -> Result<Option<RunRecord>> {
        crate::trace::traced(crate::trace::db_span("sqlite", "UPDATE", "runs"), async {
            sqlx::query(&format!(
                "UPDATE runs SET redrives = redrives + 1, active_at = ?3, redriven_at = ?3 \
                 WHERE id = ?1 AND redrives = ?2 AND status IN ('queued', 'running') \
                   AND (redriven_at IS NULL OR redriven_at < ?4) \
                 RETURNING {RUN_COLUMNS}"
            ))
            .bind(uuid_text(run_id))
            .bind(seen)
            .bind(ts_text(now()))
            .bind(ts_text(not_since))
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(run_from_row)
            .transpose()
        })
        .await
    }

    async fn touch_run(&self, run_id: Uuid) -> Result<()> {
        crate::trace::traced(crate::trace::db_span("sqlite", "UPDATE", "runs"), async {
            sqlx::query(
                "UPDATE runs SET active_at = ?2 WHERE id = ?1 AND status IN ('queued', 'running')",
            )
            .bind(uuid_text(run_id))
            .bind(ts_text(now()))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn missing_tasks(&self, run_id: Uuid, limit: u32) -> Result<Vec<TaskRange>> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "SELECT", "results"),
            async {
                // As in Postgres: the gaps between consecutive stored tasks, and
                // the tail after the last one.
                let rows = sqlx::query(
                    "WITH stored AS ( \
                   SELECT task_index, lag(task_index, 1, -1) OVER (ORDER BY task_index) AS prev \
                   FROM results WHERE run_id = ?1 \
                 ), gaps AS ( \
                   SELECT prev + 1 AS first, task_index - prev - 1 AS count FROM stored \
                   WHERE task_index > prev + 1 \
                   UNION ALL \
                   SELECT COALESCE(max(r.task_index), -1) + 1, \
                          runs.total_tasks - COALESCE(max(r.task_index), -1) - 1 \
                   FROM runs LEFT JOIN results r ON r.run_id = runs.id \
                   WHERE runs.id = ?1 GROUP BY runs.total_tasks \
                 ) \
                 SELECT first, count FROM gaps WHERE count > 0 ORDER BY first LIMIT ?2",
                )
                .bind(uuid_text(run_id))
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
            },
        )
        .await
    }

    async fn insert_results(&self, run_id: Uuid, rows: &[NewResult]) -> Result<InsertOutcome> {
        crate::trace::traced(crate::trace::db_span("sqlite", "INSERT", "results"), async {
            let run_key = uuid_text(run_id);
            let now = ts_text(now());
            // Owns the write lock until commit, so concurrent batches of one run
            // serialize their counter updates and exactly one sees it complete.
            let mut tx = self.begin_write().await?;
            let before = sqlx::query("SELECT status FROM runs WHERE id = ?1")
                .bind(&run_key)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("results for unknown run {run_id}")))?;
            let before_status: String = before.try_get("status")?;

            let (mut pass, mut fail, mut err) = (0i64, 0i64, 0i64);
            let mut cost = 0f64;
            for chunk in rows.chunks(RESULT_ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO results (run_id, task_index, project_id, test_index, prompt_index, \
                       provider_index, repeat_index, provider_id, status, score, reason, \
                       rendered_prompt, output, assertions, latency_ms, tokens_in, tokens_out, \
                       cost_usd, cached, error, trace_id, created_at) ",
                );
                insert.push_values(chunk, |mut values, r| {
                    values
                        .push_bind(run_key.as_str())
                        .push_bind(r.task_index)
                        .push_bind(r.project_id.as_str())
                        .push_bind(r.test_index)
                        .push_bind(r.prompt_index)
                        .push_bind(r.provider_index)
                        .push_bind(r.repeat_index)
                        .push_bind(r.provider_id.as_str())
                        .push_bind(r.status as i64)
                        .push_bind(r.score)
                        .push_bind(r.reason.as_str())
                        .push_bind(r.rendered_prompt.as_str())
                        .push_bind(r.output.as_str())
                        .push_bind(r.assertions.to_string())
                        .push_bind(r.latency_ms)
                        .push_bind(r.tokens_in)
                        .push_bind(r.tokens_out)
                        .push_bind(r.cost_usd)
                        .push_bind(r.cached)
                        .push_bind(r.error.as_str())
                        .push_bind(r.trace_id.as_str())
                        .push_bind(now.as_str());
                });
                // RETURNING yields only the rows really inserted, not the ones
                // DO NOTHING skipped.
                insert.push(" ON CONFLICT (run_id, task_index) DO NOTHING RETURNING status, cost_usd");
                for row in insert.build().fetch_all(&mut *tx).await? {
                    cost += row.try_get::<f64, _>("cost_usd")?;
                    match result_status(&row)? {
                        ResultStatus::Pass => pass += 1,
                        ResultStatus::Fail => fail += 1,
                        ResultStatus::Error => err += 1,
                    }
                }
            }

            let inserted = pass + fail + err;
            let row = sqlx::query(&format!(
                "UPDATE runs SET \
                   completed_tasks = completed_tasks + ?2, passed = passed + ?3, \
                   failed = failed + ?4, errors = errors + ?5, cost_usd = cost_usd + ?7, \
                   status = CASE WHEN status IN ('queued', 'running') AND completed_tasks + ?2 >= total_tasks \
                                 THEN 'completed' \
                                 WHEN status = 'queued' THEN 'running' ELSE status END, \
                   started_at = COALESCE(started_at, ?6), \
                   finished_at = CASE WHEN finished_at IS NULL AND completed_tasks + ?2 >= total_tasks \
                                      THEN ?6 ELSE finished_at END, \
                   active_at = CASE WHEN ?2 > 0 THEN ?6 ELSE active_at END \
                 WHERE id = ?1 RETURNING {RUN_COLUMNS}"
            ))
            .bind(&run_key)
            .bind(inserted)
            .bind(pass)
            .bind(fail)
            .bind(err)
            .bind(&now)
            .bind(cost)
            .fetch_one(&mut *tx)
            .await?;
            let run = run_from_row(&row)?;
            tx.commit().await?;
            let finished_now = run.status == RunStatus::Completed && before_status != "completed";
            Ok(InsertOutcome {
                inserted: inserted as u64,
                run,
                finished_now,
            })
        })
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
            crate::trace::db_span("sqlite", "SELECT", "results"),
            async {
                let rows = sqlx::query(&format!(
                    "SELECT {RESULT_COLUMNS} FROM results \
                 WHERE run_id = ?1 AND (?2 IS NULL OR status = ?2) AND task_index > ?3 \
                 ORDER BY task_index LIMIT ?4"
                ))
                .bind(uuid_text(run_id))
                .bind(status.map(|s| s as i64))
                .bind(after_task.unwrap_or(-1))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(result_from_row).collect()
            },
        )
        .await
    }

    async fn stored_tasks(&self, run_id: Uuid, first: i64, last: i64) -> Result<Vec<i64>> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "SELECT", "results"),
            async {
                Ok(sqlx::query_scalar(
                "SELECT task_index FROM results WHERE run_id = ?1 AND task_index BETWEEN ?2 AND ?3",
            )
            .bind(uuid_text(run_id))
            .bind(first)
            .bind(last)
            .fetch_all(&self.pool)
            .await?)
            },
        )
        .await
    }

    async fn roll_up(&self, run_id: Uuid) -> Result<bool> {
        crate::trace::traced(crate::trace::db_span("sqlite", "INSERT", "rollups"), async {
            let mut tx = self.begin_write().await?;
            let claimed = sqlx::query(
                "UPDATE runs SET rolled_up = TRUE WHERE id = $1 AND status = 'completed' AND NOT rolled_up",
            )
            .bind(uuid_text(run_id))
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
                sqlx::query(sql)
                    .bind(uuid_text(run_id))
                    .execute(&mut *tx)
                    .await?;
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
            crate::trace::db_span("sqlite", "SELECT", "results"),
            async {
                use futures::TryStreamExt;
                let sql = if self.rolled_up(run_id).await? {
                    METRICS_ROLLED
                } else {
                    METRICS_LIVE
                };
                let mut rows = sqlx::query(sql)
                    .bind(uuid_text(run_id))
                    .try_map(|row: SqliteRow| metrics_from_row(&row))
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
            crate::trace::db_span("sqlite", "SELECT", "results"),
            async {
                use futures::TryStreamExt;
                let sql = if self.rolled_up(run_id).await? {
                    LATENCIES_ROLLED
                } else {
                    LATENCIES_LIVE
                };
                let mut rows = sqlx::query(sql)
                    .bind(uuid_text(run_id))
                    .try_map(|row: SqliteRow| latency_from_row(&row))
                    .fetch(&self.pool);
                while let Some(m) = rows.try_next().await? {
                    each(m);
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
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "runs"), async {
            use futures::TryStreamExt;
            let pending: Vec<String> = sqlx::query_scalar(TREND_PENDING)
                .bind(query.project_id.as_str())
                .bind(query.description.as_deref())
                .bind(query.label.as_deref())
                .bind(ts_text(query.since))
                .bind(ts_text(query.until))
                .fetch_all(&self.pool)
                .await?;
            for run in pending {
                self.roll_up(parse_run_key(&run)?).await?;
            }
            for (sql, latencies) in [
                (TREND_METRICS_SELECT, false),
                (TREND_LATENCIES_SELECT, true),
            ] {
                let mut rows = sqlx::query(sql)
                    .bind(query.project_id.as_str())
                    .bind(query.description.as_deref())
                    .bind(query.label.as_deref())
                    .bind(ts_text(query.since))
                    .bind(ts_text(query.until))
                    .fetch(&self.pool);
                while let Some(row) = rows.try_next().await? {
                    each(TrendMetrics {
                        run_id: get_uuid(&row, "run_id")?,
                        created_at: get_ts(&row, "run_created_at")?,
                        row: if latencies {
                            TrendRow::Latency(latency_from_row(&row)?)
                        } else {
                            TrendRow::Metrics(metrics_from_row(&row)?)
                        },
                    });
                }
            }
            Ok(())
        })
        .await
    }

    async fn for_each_assertion_metrics(
        &self,
        run_id: Uuid,
        each: &mut (dyn FnMut(AssertionMetrics) + Send),
    ) -> Result<()> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "SELECT", "results"),
            async {
                use futures::TryStreamExt;
                let sql = if self.rolled_up(run_id).await? {
                    "SELECT provider_index, prompt_index, kind, metric, passed, n \
                 FROM run_assertions WHERE run_id = $1"
                } else {
                    ASSERTIONS_LIVE
                };
                let mut rows = sqlx::query(sql)
                    .bind(uuid_text(run_id))
                    .try_map(|row: SqliteRow| {
                        Ok(AssertionMetrics {
                            provider_index: row.try_get("provider_index")?,
                            prompt_index: row.try_get("prompt_index")?,
                            kind: row.try_get("kind")?,
                            metric: row.try_get("metric")?,
                            passed: row.try_get::<i64, _>("passed")? != 0,
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
        crate::trace::traced(crate::trace::db_span("sqlite", "SELECT", "results"), async {
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
                .bind(uuid_text(run_id))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|row| Ok((row.try_get("task_index")?, sqlite_outcome(row)?)))
                .collect()
        })
        .await
    }

    async fn most_failed_tests(&self, run_id: Uuid, limit: u32) -> Result<Vec<TestFailures>> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "SELECT", "results"),
            async {
                let sql = if self.rolled_up(run_id).await? {
                    MOST_FAILED_ROLLED
                } else {
                    MOST_FAILED_LIVE
                };
                let rows = sqlx::query(sql)
                    .bind(uuid_text(run_id))
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
            crate::trace::db_span("sqlite", "SELECT", "results"),
            async {
                use futures::TryStreamExt;
                let sql = format!("{OUTCOME_SELECT} WHERE run_id = ?1 ORDER BY task_index");
                let mut rows = sqlx::query(&sql)
                    .bind(uuid_text(run_id))
                    .try_map(|row: SqliteRow| sqlite_outcome(&row))
                    .fetch(&self.pool);
                while let Some(o) = rows.try_next().await? {
                    each(o);
                }
                Ok(())
            },
        )
        .await
    }

    async fn test_digests(&self, run_id: Uuid) -> Result<Vec<(i64, i64)>> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "SELECT", "suite_tests"),
            async {
                // A row stored before digests were has its body read instead.
                let rows = sqlx::query(
                    "SELECT test_index, digest, CASE WHEN digest IS NULL THEN body END AS body \
                 FROM suite_tests WHERE run_id = ?1 ORDER BY test_index",
                )
                .bind(uuid_text(run_id))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        let digest: Option<i64> = row.try_get("digest")?;
                        let digest = match digest {
                            Some(d) => d,
                            None => crate::test_digest(row.try_get("body")?),
                        };
                        Ok((row.try_get("test_index")?, digest))
                    })
                    .collect()
            },
        )
        .await
    }

    async fn create_report(&self, report: NewReport) -> Result<ReportRecord> {
        crate::trace::traced(
            crate::trace::db_span("sqlite", "INSERT", "reports"),
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
            crate::trace::db_span("sqlite", "INSERT", "reports"),
            async {
                // The write lock, taken first, makes the look and the insert one.
                let mut tx = self.begin_write().await?;
                let found = sqlx::query(&format!(
                    "SELECT {REPORT_COLUMNS} FROM reports WHERE run_id = ?1 AND format = ?2 \
                 AND kind = ?3 AND created_at >= ?4 \
                 AND (status = 'ready' OR (status = 'pending' AND created_at >= ?5)) \
                 ORDER BY created_at DESC, id DESC LIMIT 1"
                ))
                .bind(uuid_text(report.run_id))
                .bind(&report.format)
                .bind(&report.kind)
                .bind(ts_text(reuse.since))
                .bind(ts_text(reuse.pending_since))
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
            crate::trace::db_span("sqlite", "SELECT", "reports"),
            async {
                sqlx::query(&format!(
                    "SELECT {REPORT_COLUMNS} FROM reports WHERE id = ?1"
                ))
                .bind(uuid_text(report_id))
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
            crate::trace::db_span("sqlite", "UPDATE", "reports"),
            async {
                let (status, content, bytes, parts, error) = report_outcome(outcome);
                let mut tx = self.pool.begin().await?;
                if status == ReportStatus::Failed {
                    sqlx::query("DELETE FROM report_parts WHERE report_id = ?1")
                        .bind(uuid_text(report_id))
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                "UPDATE reports SET status = ?2, content = ?3, bytes = ?4, parts = ?5, error = ?6, \
                 finished_at = ?7 WHERE id = ?1",
            )
            .bind(uuid_text(report_id))
            .bind(status.as_str())
            .bind(content)
            .bind(bytes)
            .bind(parts)
            .bind(error)
            .bind(ts_text(now()))
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
            crate::trace::db_span("sqlite", "INSERT", "report_parts"),
            async {
                sqlx::query(
                    "INSERT INTO report_parts (report_id, part, data) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (report_id, part) DO UPDATE SET data = excluded.data",
                )
                .bind(uuid_text(report_id))
                .bind(i64::from(part))
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
            crate::trace::db_span("sqlite", "SELECT", "report_parts"),
            async {
                Ok(sqlx::query_scalar(
                    "SELECT data FROM report_parts WHERE report_id = ?1 AND part = ?2",
                )
                .bind(uuid_text(report_id))
                .bind(i64::from(part))
                .fetch_optional(&self.pool)
                .await?)
            },
        )
        .await
    }
}

fn project_from_row(row: &SqliteRow) -> Result<ProjectRecord> {
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
        created_at: get_ts(row, "created_at")?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<KeyRecord> {
    let role: String = row.try_get("role")?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Corrupt(format!("key role `{role}`")))?,
        name: row.try_get("name")?,
        secret_sha256: row.try_get("secret_sha256")?,
        rate_per_minute: row.try_get("rate_per_minute")?,
        created_at: get_ts(row, "created_at")?,
        expires_at: get_opt_ts(row, "expires_at")?,
        revoked_at: get_opt_ts(row, "revoked_at")?,
    })
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, SqliteConnection};

    use super::*;

    #[tokio::test]
    async fn a_locked_database_is_a_transient_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gauntlet.db");
        let store = SqliteStore::open(&path).await.unwrap();

        let mut holder =
            SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(&path))
                .await
                .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();

        // A second writer that does not wait gets SQLITE_BUSY at once.
        let mut impatient = SqliteConnection::connect_with(
            &SqliteConnectOptions::new()
                .filename(&path)
                .busy_timeout(Duration::ZERO),
        )
        .await
        .unwrap();
        let busy = sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut impatient)
            .await
            .unwrap_err();
        assert!(StoreError::from(busy).is_transient());
        holder.close().await.unwrap();

        // A constraint violation is not worth retrying.
        let run = NewRun {
            trace_id: String::new(),
            id: Uuid::now_v7(),
            project_id: "default".into(),
            description: String::new(),
            label: String::new(),
            source: String::new(),
            compiled: "{}".into(),
            options: serde_json::json!({}),
            total_tasks: 1,
        };
        store.create_run(run.clone()).await.unwrap();
        let duplicate = store.create_run(run).await.unwrap_err();
        assert!(!duplicate.is_transient(), "{duplicate}");
    }
}
