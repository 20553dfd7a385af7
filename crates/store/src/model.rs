//! Rows as the services see them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Mirrors `gauntlet.v1.RunStatus`; stored as snake_case text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Completed,
    Cancelled,
    Failed,
    /// Stopped when its results' cost reached the run's `max_cost_usd`.
    CostLimited,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Failed => "failed",
            RunStatus::CostLimited => "cost_limited",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "completed" => RunStatus::Completed,
            "cancelled" => RunStatus::Cancelled,
            "failed" => RunStatus::Failed,
            "cost_limited" => RunStatus::CostLimited,
            _ => return None,
        })
    }

    /// A run in a terminal state takes no more results into its counters.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Completed
                | RunStatus::Cancelled
                | RunStatus::Failed
                | RunStatus::CostLimited
        )
    }
}

/// Mirrors `gauntlet.v1.ResultStatus`; stored as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResultStatus {
    Pass = 1,
    Fail = 2,
    Error = 3,
}

impl ResultStatus {
    pub fn from_i16(v: i16) -> Option<Self> {
        Some(match v {
            1 => ResultStatus::Pass,
            2 => ResultStatus::Fail,
            3 => ResultStatus::Error,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: Uuid,
    pub project_id: String,
    pub description: String,
    pub label: String,
    /// The suite text as submitted; empty when it was submitted in the
    /// normalized form, which `compiled` already holds.
    pub source: String,
    /// The validated, normalized suite workers execute, as JSON text
    /// (serialized straight from the suite: a 20,000-test suite as a
    /// `serde_json::Value` tree would cost tens of megabytes more).
    pub compiled: String,
    pub options: serde_json::Value,
    pub total_tasks: i64,
    /// The W3C trace id (32 hex digits) of the submission's span, or empty
    /// when the submission was not traced.
    pub trace_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub id: Uuid,
    pub project_id: String,
    pub suite_id: Uuid,
    pub description: String,
    pub label: String,
    pub status: RunStatus,
    pub options: serde_json::Value,
    pub total_tasks: i64,
    pub completed_tasks: i64,
    pub passed: i64,
    pub failed: i64,
    pub errors: i64,
    /// Sum of the stored results' `cost_usd`, bumped with the counters.
    pub cost_usd: f64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the run ended as it did; empty unless it `failed`.
    pub status_reason: String,
    /// Its last sign of life: created, a result stored (Postgres moves it
    /// at most once a second, to keep the run's counter updates HOT), its
    /// missing work re-driven. What the reconciler measures staleness from.
    pub active_at: DateTime<Utc>,
    /// How many times its missing work was re-driven,
    pub redrives: i32,
    /// and when last.
    pub redriven_at: Option<DateTime<Utc>>,
    /// Its results are rolled up ([`Store::roll_up`](crate::Store::roll_up)).
    pub rolled_up: bool,
    /// The trace id of its submission ([`NewRun::trace_id`]).
    pub trace_id: String,
}

/// The `total_tasks` of a run created while its tests still arrive: more
/// than any run has, so it cannot complete before its upload ends
/// ([`Store::finish_upload`](crate::Store::finish_upload) sets the real one).
pub const UPLOADING_TOTAL: i64 = i64::MAX;

impl RunRecord {
    /// Its tests are still arriving: the total is not known yet.
    pub fn is_uploading(&self) -> bool {
        self.total_tasks == UPLOADING_TOTAL
    }
}

/// Contiguous task indexes `first .. first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskRange {
    pub first: i64,
    pub count: i64,
}

impl TaskRange {
    pub fn end(&self) -> i64 {
        self.first + self.count
    }
}

/// Position of the last run of a page, for keyset pagination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunCursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewResult {
    pub task_index: i64,
    pub project_id: String,
    pub test_index: i32,
    pub prompt_index: i32,
    pub provider_index: i32,
    pub repeat_index: i32,
    pub provider_id: String,
    pub status: ResultStatus,
    pub score: f64,
    pub reason: String,
    pub rendered_prompt: String,
    pub output: String,
    /// Per-assertion outcomes, as a JSON array.
    pub assertions: serde_json::Value,
    pub latency_ms: i32,
    pub tokens_in: i32,
    pub tokens_out: i32,
    pub cost_usd: f64,
    pub cached: bool,
    pub error: String,
    /// The W3C trace id of the span its task ran in (empty when untraced):
    /// the run's own for the batches parented to its submission, another
    /// for the later batches of a large run, which only link to it.
    pub trace_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResultRecord {
    pub run_id: Uuid,
    pub result: NewResult,
    pub created_at: DateTime<Utc>,
}

/// The results of a run that share a provider, a prompt and a status: how
/// many, and their tokens, cost and scores summed. Their latencies are
/// counted apart ([`LatencyCount`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultMetrics {
    pub provider_index: i32,
    pub prompt_index: i32,
    pub status: ResultStatus,
    /// Results in the group, at least 1.
    pub count: i64,
    pub tokens_in: i64,
    pub tokens_out: i64,
    pub cost_usd: f64,
    /// Σ score and Σ score² of the group's results.
    pub score_sum: f64,
    pub score_sq_sum: f64,
}

/// How many answered (passed or failed, not errored) results of a run's
/// provider × prompt took exactly `latency_ms`: a run of a million results
/// has a few thousand of these, and its percentiles are exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyCount {
    pub provider_index: i32,
    pub prompt_index: i32,
    pub latency_ms: i32,
    pub count: i64,
}

/// One rollup row of a run a trend covers.
#[derive(Debug, Clone, PartialEq)]
pub enum TrendRow {
    Metrics(ResultMetrics),
    Latency(LatencyCount),
}

/// Which completed runs a trend covers: one project's, of one suite (by
/// its description) or one label or both, created in `[since, until)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendQuery {
    pub project_id: String,
    pub description: Option<String>,
    pub label: Option<String>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// One rollup row of one run a trend covers.
#[derive(Debug, Clone, PartialEq)]
pub struct TrendMetrics {
    pub run_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub row: TrendRow,
}

/// A run's assertion outcomes that share a provider, a prompt, an
/// assertion type, a named metric and a verdict: how many.
#[derive(Debug, Clone, PartialEq)]
pub struct AssertionMetrics {
    pub provider_index: i32,
    pub prompt_index: i32,
    /// The promptfoo type, `not-` prefix included.
    pub kind: String,
    /// The assertion's `metric:` name; empty when it has none.
    pub metric: String,
    pub passed: bool,
    pub count: i64,
}

/// How often one test case did not pass, over its prompts, providers and
/// repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct TestFailures {
    pub test_index: i32,
    /// Results that failed or errored.
    pub unpassed: i64,
    pub total: i64,
}

/// One result as a comparison needs it: where it sits in its run and how
/// it did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub test_index: i32,
    pub prompt_index: i32,
    pub provider_index: i32,
    pub repeat_index: i32,
    pub status: ResultStatus,
    pub score: f64,
    pub latency_ms: i32,
    pub cost_usd: f64,
}

/// What one `insert_results` call changed.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertOutcome {
    /// Rows really inserted (a redelivered batch inserts 0).
    pub inserted: u64,
    /// The run after its counters were bumped.
    pub run: RunRecord,
    /// True when this call moved the run to `completed`.
    pub finished_now: bool,
}

#[derive(Debug, Clone)]
pub struct NewReport {
    pub id: Uuid,
    pub project_id: String,
    pub run_id: Uuid,
    pub format: String,
    /// [`RUN_REPORT`], or what else the report is of (a comparison's key):
    /// with the run and format, what makes two requests the same report.
    pub kind: String,
}

/// Which earlier report [`Store::find_or_create_report`] answers again: one
/// created at or after `since` (when the last of its runs ended) that is
/// ready, or pending and created at or after `pending_since` (older pending
/// ones lost their job).
///
/// [`Store::find_or_create_report`]: crate::Store::find_or_create_report
#[derive(Debug, Clone, Copy)]
pub struct ReportReuse {
    pub since: DateTime<Utc>,
    pub pending_since: DateTime<Utc>,
}

/// The kind of a run's own report.
pub const RUN_REPORT: &str = "run";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportStatus {
    Pending,
    Ready,
    Failed,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Pending => "pending",
            ReportStatus::Ready => "ready",
            ReportStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ReportStatus::Pending,
            "ready" => ReportStatus::Ready,
            "failed" => ReportStatus::Failed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReportRecord {
    pub id: Uuid,
    pub project_id: String,
    pub run_id: Uuid,
    pub format: String,
    /// As [`NewReport::kind`].
    pub kind: String,
    pub status: ReportStatus,
    /// The whole document, for one stored whole ([`ReportOutcome::Ready`]);
    /// empty when it is stored in parts.
    pub content: String,
    /// The document's size in bytes, however it is stored.
    pub bytes: u64,
    /// Parts the document is stored in ([`Store::report_part`] reads them);
    /// 0 when it is in `content`.
    ///
    /// [`Store::report_part`]: crate::Store::report_part
    pub parts: u32,
    pub error: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A finished report's columns: status, content, bytes, parts, error.
pub(crate) fn report_outcome(outcome: ReportOutcome) -> (ReportStatus, String, i64, i32, String) {
    match outcome {
        ReportOutcome::Ready(content) => {
            let bytes = content.len() as i64;
            (ReportStatus::Ready, content, bytes, 0, String::new())
        }
        ReportOutcome::Stored { bytes, parts } => (
            ReportStatus::Ready,
            String::new(),
            i64::try_from(bytes).unwrap_or(i64::MAX),
            i32::try_from(parts).unwrap_or(i32::MAX),
            String::new(),
        ),
        ReportOutcome::Failed(error) => (ReportStatus::Failed, String::new(), 0, 0, error),
    }
}

#[derive(Debug, Clone)]
pub enum ReportOutcome {
    /// The document, stored whole.
    Ready(String),
    /// The document was stored with [`Store::put_report_part`] as parts
    /// `0..parts`, `bytes` in all.
    ///
    /// [`Store::put_report_part`]: crate::Store::put_report_part
    Stored { bytes: u64, parts: u32 },
    /// Its parts, if any, are deleted.
    Failed(String),
}

/// Where an alert stands: its condition holds but not yet for its rule's
/// `for` (pending), it has held that long (firing), or it stopped holding
/// after firing (resolved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "firing" => Self::Firing,
            "resolved" => Self::Resolved,
            _ => return None,
        })
    }
}

/// One episode of an alert: from its condition first holding to its
/// resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRecord {
    pub id: Uuid,
    pub rule: String,
    /// The rule and the labels of the series group: one alert of a rule per
    /// suite, provider, queue…
    pub fingerprint: String,
    pub severity: String,
    pub state: AlertState,
    pub labels: std::collections::BTreeMap<String, String>,
    /// The value that last met (or, once resolved, last failed) the rule.
    pub value: f64,
    pub threshold: f64,
    pub summary: String,
    pub started_at: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// Which alerts [`Store::list_alerts`] returns, newest first.
///
/// [`Store::list_alerts`]: crate::Store::list_alerts
#[derive(Debug, Clone, Default)]
pub struct AlertQuery {
    /// Only pending and firing ones.
    pub active_only: bool,
    pub severity: Option<String>,
    pub rule: Option<String>,
    pub limit: u32,
    /// Those that started before this alert (its `started_at` and id): the
    /// page after the one that ended with it.
    pub before: Option<(DateTime<Utc>, Uuid)>,
}

/// How a database pool is used right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}

/// What a key may do in its project. Ordered: each role may do what the
/// ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Read.
    Viewer,
    /// Read, submit and cancel.
    Member,
    /// Everything in the project: keys, quotas, the project itself.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "viewer" => Role::Viewer,
            "member" => Role::Member,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

/// A project's limits; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quotas {
    pub max_concurrent_runs: Option<i64>,
    pub max_tasks_per_run: Option<i64>,
    /// Over any 24 hours.
    pub max_tasks_per_day: Option<i64>,
    /// Per calendar month (UTC).
    pub monthly_budget_usd: Option<f64>,
}

/// A project: the unit of scoping, quotas and fair share.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectRecord {
    pub id: String,
    pub name: String,
    pub quotas: Quotas,
    /// Its share of the dispatch window against other busy projects.
    pub weight: i32,
    pub created_at: DateTime<Utc>,
}

/// An API key as stored: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub project_id: String,
    pub role: Role,
    pub name: String,
    pub secret_sha256: Vec<u8>,
    /// Its own RPC rate; `None` takes the configured default.
    pub rate_per_minute: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// Neither revoked nor expired at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// One audited call: who, what, on what, how it ended, when, from where.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Assigned by the store (0 for one not stored yet); newer is larger.
    pub id: i64,
    pub at: DateTime<Utc>,
    pub project_id: String,
    /// Empty for a call that presented no valid key.
    pub key_id: String,
    /// The gRPC method, `/gauntlet.v1.RunService/SubmitRun`.
    pub method: String,
    pub target: String,
    /// `ok`, or the gRPC code's name (`permission_denied`, …).
    pub outcome: String,
    pub peer: String,
}

/// What a project has in use, for its quotas.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProjectUsage {
    /// Runs queued or running.
    pub active_runs: i64,
    /// Tasks of the runs created since the `day_start` asked for.
    pub tasks_since: i64,
    /// What the runs created since the `month_start` asked for cost.
    pub cost_since: f64,
}
