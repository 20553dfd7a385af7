//! Who may call the gateway: API keys, projects and roles, the per-key
//! rate limit and stream cap, the audit log, and `gauntlet.v1.AccessService`
//! that manages them.
//!
//! A key is `gk_live_<id>_<secret>`. The id names its row; the secret is
//! kept only as its SHA-256 (a key is 238 random bits, so a fast hash is
//! enough: there is nothing to guess) and compared in constant time. What a
//! gateway read about a key it trusts for `auth.cache_secs`: a revoked key
//! stops working within that.
//!
//! The [`KeyGate`] admits every call of the gateway's server: it finds the
//! caller's key, checks the method's role ([`required`]), spends one unit
//! of the key's rate and hands the handler a [`Caller`]. Handlers scope
//! everything to `Caller::project`: another project's object is `NotFound`,
//! as if it did not exist. Mutating calls, and every call the gate or a
//! handler refused for the caller's rights, go to the audit log.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use gauntlet_cache::limiter::{Charge, Decision, Rate, RateLimiter};
use gauntlet_config::AuthConfig;
use gauntlet_proto::v1::{self, access_service_server::AccessService};
use gauntlet_service::{
    DEFAULT_PROJECT, convert,
    gate::{Call, Gate},
    internal, invalid, not_found,
};
use gauntlet_store::{AuditEvent, KeyRecord, ProjectRecord, Quotas, Role, Store};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status};
use tracing::{info, warn};

/// What every key starts with.
pub const KEY_PREFIX: &str = "gk_live_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 40;
/// Audit events waiting for the database; past this they are dropped and
/// counted (`gauntlet_audit_events_dropped_total`) rather than hold calls.
const AUDIT_QUEUE: usize = 65_536;
/// Audit events written per insert.
const AUDIT_BATCH: usize = 256;
const DEFAULT_AUDIT_LIMIT: u32 = 100;
const MAX_AUDIT_LIMIT: u32 = 1_000;

/// A fresh key: its id and the whole token (shown once).
pub fn generate() -> (String, String) {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let mut take = |n: usize, lower: bool| -> String {
        (0..n)
            .map(|_| {
                let c = rng.sample(rand::distr::Alphanumeric) as char;
                if lower { c.to_ascii_lowercase() } else { c }
            })
            .collect()
    };
    let id = take(ID_LEN, true);
    let secret = take(SECRET_LEN, false);
    let token = format!("{KEY_PREFIX}{id}_{secret}");
    (id, token)
}

/// The id and secret of a token, if it has a key's shape.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(KEY_PREFIX)?.split_once('_')?;
    let shaped = id.len() == ID_LEN
        && secret.len() == SECRET_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric());
    shaped.then_some((id, secret))
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Who is calling, as the gate found them. Handlers get it with
/// [`Caller::of`]; a server without the gate (embedded mode) calls as an
/// operator.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Empty when the server has no gate.
    pub key_id: String,
    pub project: String,
    pub role: Role,
    /// Largest suite this caller may send (`auth.max_request_bytes`).
    pub max_request_bytes: Option<u64>,
    /// What the call acts on, for the audit log.
    target: Arc<Mutex<String>>,
    /// The key's WatchRun streams (per gateway).
    streams: Option<Arc<Streams>>,
}

impl Caller {
    fn open() -> Self {
        Self {
            key_id: String::new(),
            project: DEFAULT_PROJECT.into(),
            role: Role::Admin,
            max_request_bytes: None,
            target: Arc::default(),
            streams: None,
        }
    }

    /// The caller of `request`.
    pub fn of<T>(request: &Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(Caller::open)
    }

    /// An admin of the `default` project: creates projects, sees them all,
    /// reads the dead letters.
    pub fn is_operator(&self) -> bool {
        self.role == Role::Admin && self.project == DEFAULT_PROJECT
    }

    /// Names what the call acts on in its audit event.
    pub fn target(&self, target: impl ToString) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = target.to_string();
    }

    /// `project` if it is the caller's (or the caller is an operator and
    /// it exists to them); another project is `NotFound`.
    pub fn scope<'a>(&'a self, project: &'a str) -> Result<&'a str, Status> {
        if project.is_empty() || project == self.project {
            Ok(&self.project)
        } else if self.is_operator() {
            Ok(project)
        } else {
            Err(not_found("project", project))
        }
    }

    /// A WatchRun stream slot, held until the guard drops, or
    /// `ResourceExhausted` at `auth.max_watch_streams`.
    pub fn watch_slot(&self) -> Result<Option<StreamGuard>, Status> {
        let Some(streams) = &self.streams else {
            return Ok(None);
        };
        let mut open = streams.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(self.key_id.clone()).or_default();
        if *count >= streams.max {
            return Err(Status::resource_exhausted(format!(
                "key {} already has {} WatchRun streams open, the most it may \
                 (auth.max_watch_streams)",
                self.key_id, streams.max
            )));
        }
        *count += 1;
        Ok(Some(StreamGuard {
            streams: streams.clone(),
            key_id: self.key_id.clone(),
        }))
    }
}

/// WatchRun streams open per key.
#[derive(Debug)]
struct Streams {
    max: u32,
    open: Mutex<HashMap<String, u32>>,
}

/// One open WatchRun stream; dropping it frees the slot.
pub struct StreamGuard {
    streams: Arc<Streams>,
    key_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut open = self
            .streams
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key_id);
            }
        }
    }
}

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health, reflection, the internal status API.
    Open,
    Role(Role),
    /// An admin of the `default` project.
    Operator,
}

/// The role `method` needs, and whether it changes anything (audited even
/// when it succeeds). Methods this table does not know need an operator.
pub fn required(method: &str) -> (Need, bool) {
    let (service, name) = method
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or(("", ""));
    use Role::*;
    match (service, name) {
        ("grpc.health.v1.Health", _)
        | ("grpc.reflection.v1.ServerReflection", _)
        | ("grpc.reflection.v1alpha.ServerReflection", _)
        | ("gauntlet.internal.v1.Control", "GetStatus") => (Need::Open, false),
        ("gauntlet.v1.RunService", "SubmitRun" | "SubmitRunStream" | "CancelRun") => {
            (Need::Role(Member), true)
        }
        ("gauntlet.v1.RunService", "GetRun" | "ListRuns" | "WatchRun" | "ListResults") => {
            (Need::Role(Viewer), false)
        }
        ("gauntlet.v1.AnalyticsService", _) | ("gauntlet.v1.MonitorService", _) => {
            (Need::Role(Viewer), false)
        }
        ("gauntlet.v1.ReportService", "CreateReport") => (Need::Role(Member), true),
        ("gauntlet.v1.ReportService", "GetReport" | "ReadReport") => (Need::Role(Viewer), false),
        ("gauntlet.v1.AdminService", "ListDeadLetters") => (Need::Operator, false),
        ("gauntlet.v1.AdminService", "RedriveDeadLetters") => (Need::Operator, true),
        ("gauntlet.v1.AccessService", "ListProjects" | "GetProject") => (Need::Role(Viewer), false),
        ("gauntlet.v1.AccessService", "CreateProject") => (Need::Operator, true),
        ("gauntlet.v1.AccessService", "UpdateProject" | "CreateKey" | "RevokeKey") => {
            (Need::Role(Admin), true)
        }
        ("gauntlet.v1.AccessService", "ListKeys" | "ListAuditEvents") => (Need::Role(Admin), false),
        _ => (Need::Operator, true),
    }
}

/// How long units of a key's rate taken from Redis ahead of its calls
/// may be spent here. Units left over are lost: a key is never served past
/// its rate, at worst refused a little early when its calls move between
/// gateway replicas.
const LEASE_FOR: Duration = Duration::from_secs(1);

/// Units of a key's rate taken from Redis at once: a tenth of a second's
/// worth, one for rates under 600 a minute (those stay exact, one Redis
/// step a call). At the default 60,000 a minute a busy key costs one Redis
/// round trip per 100 calls instead of one per call.
fn lease_size(per_minute: u64) -> u64 {
    (per_minute / 600).max(1)
}

/// Units of one key's rate this gateway holds.
struct Lease {
    left: u64,
    until: Instant,
}

/// The gateway's gate: API keys, roles, rates, audit.
pub struct KeyGate {
    store: Arc<dyn Store>,
    keys: moka::future::Cache<String, Option<Arc<KeyRecord>>>,
    limiter: Arc<dyn RateLimiter>,
    /// Per key id: units taken from the limiter, not yet spent.
    leases: Mutex<HashMap<String, Lease>>,
    config: AuthConfig,
    streams: Arc<Streams>,
    audit: mpsc::Sender<AuditEvent>,
    dropped: Arc<AtomicU64>,
}

impl KeyGate {
    /// A gate over `store`'s keys, spending rates in `limiter`, writing
    /// the audit log in the background until `shutdown`.
    pub fn new(
        store: Arc<dyn Store>,
        limiter: Arc<dyn RateLimiter>,
        config: AuthConfig,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        let (audit, queue) = mpsc::channel(AUDIT_QUEUE);
        tokio::spawn(write_audit(store.clone(), queue, shutdown));
        // Served at 0 from the start, so an alert on it has a series.
        metrics::counter!("gauntlet_audit_events_dropped_total").increment(0);
        Self {
            keys: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(config.cache_secs))
                .build(),
            store,
            limiter,
            leases: Mutex::default(),
            streams: Arc::new(Streams {
                max: config.max_watch_streams,
                open: Mutex::default(),
            }),
            config,
            audit,
            dropped: Arc::default(),
        }
    }

    /// The stored key `id`, through the cache (absent keys are cached too,
    /// so a flood of made-up ids costs one read each per lifetime).
    async fn key(&self, id: &str) -> Result<Option<Arc<KeyRecord>>, Status> {
        if let Some(key) = self.keys.get(id).await {
            return Ok(key);
        }
        let key = self
            .store
            .get_key(id)
            .await
            .map_err(|e| internal("read API key", e))?
            .map(Arc::new);
        self.keys.insert(id.to_owned(), key.clone()).await;
        Ok(key)
    }

    /// Spends one unit of `key_id`'s lease, if it holds one.
    fn spend_leased(&self, key_id: &str) -> bool {
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        match leases.get_mut(key_id) {
            Some(lease) if lease.left > 0 && Instant::now() < lease.until => {
                lease.left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Holds `units` of `key_id`'s rate for [`LEASE_FOR`].
    fn lease(&self, key_id: &str, units: u64) {
        let now = Instant::now();
        let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
        if leases.len() >= 10_000 {
            leases.retain(|_, lease| lease.until > now);
        }
        leases.insert(
            key_id.to_owned(),
            Lease {
                left: units,
                until: now + LEASE_FOR,
            },
        );
    }

    fn record(&self, event: AuditEvent) {
        if self.audit.try_send(event).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!("gauntlet_audit_events_dropped_total").increment(1);
            if dropped.is_power_of_two() {
                warn!(dropped, "audit log queue full, events dropped");
            }
        }
    }

    fn refuse(&self, call: &Call<'_>, key: Option<&KeyRecord>, status: Status) -> Status {
        self.record(AuditEvent {
            id: 0,
            at: Utc::now(),
            // A call without a valid key belongs to no project: the
            // operators' log shows it.
            project_id: key.map_or_else(|| DEFAULT_PROJECT.into(), |k| k.project_id.clone()),
            key_id: key.map(|k| k.id.clone()).unwrap_or_default(),
            method: call.method.to_owned(),
            target: String::new(),
            outcome: outcome(status.code()),
            peer: call.peer.map(|p| p.to_string()).unwrap_or_default(),
        });
        status
    }

    async fn admit_call(&self, call: &Call<'_>) -> Result<http::Extensions, Status> {
        let (need, _) = required(call.method);
        if need == Need::Open {
            return Ok(http::Extensions::new());
        }
        let Some(token) = bearer(call.headers) else {
            return Err(self.refuse(
                call,
                None,
                Status::unauthenticated(
                    "this gateway needs an API key: send `authorization: Bearer <key>` \
                     (gauntlet --api-key or GAUNTLET_API_KEY)",
                ),
            ));
        };
        let invalid_key =
            || Status::unauthenticated("the API key is not valid: unknown, revoked or expired");
        let Some((id, secret)) = parse(token) else {
            return Err(self.refuse(call, None, invalid_key()));
        };
        let Some(key) = self.key(id).await? else {
            return Err(self.refuse(call, None, invalid_key()));
        };
        let matches: bool = digest(secret).ct_eq(&key.secret_sha256).into();
        if !matches {
            return Err(self.refuse(call, None, invalid_key()));
        }
        if !key.is_live(Utc::now()) {
            return Err(self.refuse(call, Some(&key), invalid_key()));
        }
        let allowed = match need {
            Need::Open => true,
            Need::Role(role) => key.role >= role,
            Need::Operator => key.role == Role::Admin && key.project_id == DEFAULT_PROJECT,
        };
        if !allowed {
            let what = match need {
                Need::Role(role) => format!("the {} role", role.as_str()),
                _ => "an operator (an admin of the default project)".into(),
            };
            return Err(self.refuse(
                call,
                Some(&key),
                Status::permission_denied(format!(
                    "key {} is a {} of project {}; {} needs {what}",
                    key.id,
                    key.role.as_str(),
                    key.project_id,
                    call.method
                )),
            ));
        }
        let per_minute = key
            .rate_per_minute
            .map_or(self.config.rate_per_minute, |r| r.max(0) as u64);
        if per_minute > 0 && !self.spend_leased(&key.id) {
            let bucket = format!("apikey:{}", key.id);
            let take = |cost: u64| Charge {
                key: &bucket,
                rate: Rate::per_minute(per_minute),
                cost: cost as i64,
            };
            let size = lease_size(per_minute);
            let mut decision = self.limiter.try_acquire(&[take(size)]).await;
            let mut granted = size;
            if size > 1 && matches!(decision, Decision::Wait(_)) {
                // Not a lease's worth left: this call's unit may be.
                decision = self.limiter.try_acquire(&[take(1)]).await;
                granted = 1;
            }
            if let Decision::Granted { .. } = decision
                && granted > 1
            {
                self.lease(&key.id, granted - 1);
            }
            if let Decision::Wait(wait) = decision {
                let millis = wait.as_millis().max(1);
                let mut status = Status::resource_exhausted(format!(
                    "key {} is over its rate of {per_minute} calls a minute; retry in {millis} ms",
                    key.id
                ));
                if let Ok(value) = millis.to_string().parse() {
                    // gRPC's retry pushback header, which gRPC clients honour.
                    status
                        .metadata_mut()
                        .insert("grpc-retry-pushback-ms", value);
                }
                return Err(self.refuse(call, Some(&key), status));
            }
        }
        let caller = Caller {
            key_id: key.id.clone(),
            project: key.project_id.clone(),
            role: key.role,
            max_request_bytes: (key.role < Role::Admin && self.config.max_request_bytes > 0)
                .then_some(self.config.max_request_bytes),
            target: Arc::default(),
            streams: Some(self.streams.clone()),
        };
        let mut extensions = http::Extensions::new();
        extensions.insert(caller);
        extensions.insert(Peer(call.peer.map(|p| p.to_string()).unwrap_or_default()));
        Ok(extensions)
    }

    /// Makes `auth.bootstrap_key` an admin of the `default` project.
    pub async fn bootstrap(store: &dyn Store, token: &str) -> anyhow::Result<()> {
        let Some((id, secret)) = parse(token) else {
            anyhow::bail!(
                "auth.bootstrap_key: not a key (`{KEY_PREFIX}` then 12 lowercase letters or \
                 digits, `_`, 40 letters or digits); make one with `gauntlet keys generate`"
            );
        };
        let existing = store.get_key(id).await?;
        store
            .put_key(&KeyRecord {
                id: id.to_owned(),
                project_id: DEFAULT_PROJECT.into(),
                role: Role::Admin,
                name: "bootstrap".into(),
                secret_sha256: digest(secret),
                rate_per_minute: None,
                created_at: existing.as_ref().map_or_else(Utc::now, |k| k.created_at),
                expires_at: None,
                // Revoked stays revoked: rotate the secret to a new key.
                revoked_at: existing.and_then(|k| k.revoked_at),
            })
            .await?;
        info!(
            key_id = id,
            "bootstrap key is an admin of the default project"
        );
        Ok(())
    }
}

/// The caller's address, for the audit events handlers write.
#[derive(Clone, Debug)]
struct Peer(String);

impl Gate for KeyGate {
    fn admit<'a>(
        &'a self,
        call: Call<'a>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<http::Extensions, Status>> + Send + 'a>> {
        Box::pin(async move { self.admit_call(&call).await })
    }

    fn answered(&self, method: &str, admitted: &http::Extensions, code: Code) {
        let (_, mutating) = required(method);
        let denied = matches!(
            code,
            Code::PermissionDenied | Code::Unauthenticated | Code::ResourceExhausted
        );
        if !(mutating || denied) {
            return;
        }
        let Some(caller) = admitted.get::<Caller>() else {
            return;
        };
        let target = caller
            .target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.record(AuditEvent {
            id: 0,
            at: Utc::now(),
            project_id: caller.project.clone(),
            key_id: caller.key_id.clone(),
            method: method.to_owned(),
            target,
            outcome: outcome(code),
            peer: admitted
                .get::<Peer>()
                .map(|p| p.0.clone())
                .unwrap_or_default(),
        });
    }
}

fn outcome(code: Code) -> String {
    if code == Code::Ok {
        return "ok".into();
    }
    // `PermissionDenied` → `permission_denied`.
    let name = format!("{code:?}");
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Writes queued audit events in batches until `shutdown`, then what is left.
async fn write_audit(
    store: Arc<dyn Store>,
    mut queue: mpsc::Receiver<AuditEvent>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::with_capacity(AUDIT_BATCH);
    loop {
        let got = tokio::select! {
            n = queue.recv_many(&mut batch, AUDIT_BATCH) => n,
            _ = shutdown.cancelled() => {
                queue.close();
                queue.recv_many(&mut batch, AUDIT_QUEUE).await
            }
        };
        if got == 0 {
            return;
        }
        // A database that is down holds the batch (and, behind it, fills
        // the queue) until it is back.
        let mut waited = Duration::from_millis(100);
        while let Err(e) = store.record_audit(&batch).await {
            if shutdown.is_cancelled() && !e.is_transient() {
                break;
            }
            warn!(error = %e, events = batch.len(), "writing the audit log failed; retrying");
            tokio::time::sleep(waited).await;
            waited = (waited * 2).min(Duration::from_secs(5));
            if shutdown.is_cancelled() && waited >= Duration::from_secs(5) {
                break;
            }
        }
        batch.clear();
    }
}

/// `gauntlet.v1.AccessService`.
pub struct AccessApi {
    store: Arc<dyn Store>,
}

impl AccessApi {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    async fn project_message(&self, p: ProjectRecord) -> Result<v1::Project, Status> {
        let now = Utc::now();
        let usage = self
            .store
            .project_usage(&p.id, now - chrono::Duration::days(1), month_start(now))
            .await
            .map_err(|e| internal("project usage", e))?;
        Ok(v1::Project {
            id: p.id,
            name: p.name,
            quotas: Some(quotas_message(&p.quotas)),
            weight: p.weight.max(1) as u32,
            created_at: Some(convert::timestamp(p.created_at)),
            active_runs: usage.active_runs.max(0) as u64,
            tasks_last_day: usage.tasks_since.max(0) as u64,
            cost_this_month_usd: usage.cost_since,
        })
    }

    async fn project(&self, id: &str) -> Result<ProjectRecord, Status> {
        self.store
            .get_project(id)
            .await
            .map_err(|e| internal("get project", e))?
            .ok_or_else(|| not_found("project", id))
    }
}

/// The first instant of `now`'s month (UTC).
pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{Datelike as _, TimeZone as _};
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

fn quotas_message(q: &Quotas) -> v1::Quotas {
    v1::Quotas {
        max_concurrent_runs: q.max_concurrent_runs.map(|n| n.max(0) as u64),
        max_tasks_per_run: q.max_tasks_per_run.map(|n| n.max(0) as u64),
        max_tasks_per_day: q.max_tasks_per_day.map(|n| n.max(0) as u64),
        monthly_budget_usd: q.monthly_budget_usd,
    }
}

fn quotas_from(q: Option<v1::Quotas>) -> Result<Quotas, Status> {
    let q = q.unwrap_or_default();
    let count = |field: &str, n: Option<u64>| -> Result<Option<i64>, Status> {
        n.map(|n| i64::try_from(n).map_err(|_| invalid(field, format!("{n} is too large"))))
            .transpose()
    };
    if let Some(budget) = q.monthly_budget_usd
        && !(budget.is_finite() && budget >= 0.0)
    {
        return Err(invalid(
            "quotas.monthly_budget_usd",
            format!("{budget} is not a cost in USD"),
        ));
    }
    Ok(Quotas {
        max_concurrent_runs: count("quotas.max_concurrent_runs", q.max_concurrent_runs)?,
        max_tasks_per_run: count("quotas.max_tasks_per_run", q.max_tasks_per_run)?,
        max_tasks_per_day: count("quotas.max_tasks_per_day", q.max_tasks_per_day)?,
        monthly_budget_usd: q.monthly_budget_usd,
    })
}

fn weight_from(weight: u32) -> Result<i32, Status> {
    match weight {
        0 => Ok(1),
        1..=1000 => Ok(weight as i32),
        _ => Err(invalid("weight", format!("{weight} is more than 1000"))),
    }
}

fn key_message(k: &KeyRecord) -> v1::ApiKey {
    v1::ApiKey {
        id: k.id.clone(),
        project_id: k.project_id.clone(),
        role: match k.role {
            Role::Viewer => v1::Role::Viewer,
            Role::Member => v1::Role::Member,
            Role::Admin => v1::Role::Admin,
        } as i32,
        name: k.name.clone(),
        created_at: Some(convert::timestamp(k.created_at)),
        expires_at: k.expires_at.map(convert::timestamp),
        revoked_at: k.revoked_at.map(convert::timestamp),
        rate_per_minute: k.rate_per_minute.map_or(0, |r| r.max(0) as u64),
    }
}

/// A project id: lowercase letters, digits and '-', 1-63 characters.
fn valid_project_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
}

#[tonic::async_trait]
impl AccessService for AccessApi {
    async fn create_project(
        &self,
        request: Request<v1::CreateProjectRequest>,
    ) -> Result<Response<v1::Project>, Status> {
        let caller = Caller::of(&request);
        let req = request.into_inner();
        caller.target(&req.id);
        if !valid_project_id(&req.id) {
            return Err(invalid(
                "id",
                format!(
                    "`{}` is not a project id (lowercase letters, digits and '-', 1-63 characters)",
                    req.id
                ),
            ));
        }
        let project = ProjectRecord {
            name: if req.name.is_empty() {
                req.id.clone()
            } else {
                req.name
            },
            id: req.id,
            quotas: quotas_from(req.quotas)?,
            weight: weight_from(req.weight)?,
            created_at: Utc::now(),
        };
        let created = self
            .store
            .create_project(&project)
            .await
            .map_err(|e| internal("create project", e))?
            .ok_or_else(|| {
                Status::already_exists(format!("project {} already exists", project.id))
            })?;
        Ok(Response::new(self.project_message(created).await?))
    }

    async fn list_projects(
        &self,
        request: Request<v1::ListProjectsRequest>,
    ) -> Result<Response<v1::ListProjectsResponse>, Status> {
        let caller = Caller::of(&request);
        let records = if caller.is_operator() {
            self.store
                .list_projects()
                .await
                .map_err(|e| internal("list projects", e))?
        } else {
            vec![self.project(&caller.project).await?]
        };
        let mut projects = Vec::with_capacity(records.len());
        for p in records {
            projects.push(self.project_message(p).await?);
        }
        Ok(Response::new(v1::ListProjectsResponse { projects }))
    }

    async fn get_project(
        &self,
        request: Request<v1::GetProjectRequest>,
    ) -> Result<Response<v1::Project>, Status> {
        let caller = Caller::of(&request);
        let id = caller.scope(&request.get_ref().id)?.to_owned();
        let project = self.project(&id).await?;
        Ok(Response::new(self.project_message(project).await?))
    }

    async fn update_project(
        &self,
        request: Request<v1::UpdateProjectRequest>,
    ) -> Result<Response<v1::Project>, Status> {
        let caller = Caller::of(&request);
        let req = request.get_ref();
        let id = caller.scope(&req.id)?.to_owned();
        caller.target(&id);
        let mut project = self.project(&id).await?;
        if !req.name.is_empty() {
            project.name = req.name.clone();
        }
        project.quotas = quotas_from(req.quotas)?;
        project.weight = weight_from(req.weight)?;
        if !self
            .store
            .update_project(&project)
            .await
            .map_err(|e| internal("update project", e))?
        {
            return Err(not_found("project", &id));
        }
        Ok(Response::new(self.project_message(project).await?))
    }

    async fn create_key(
        &self,
        request: Request<v1::CreateKeyRequest>,
    ) -> Result<Response<v1::CreatedKey>, Status> {
        let caller = Caller::of(&request);
        let req = request.get_ref();
        let project = caller.scope(&req.project_id)?.to_owned();
        // An operator's project of choice must exist; the caller's does.
        self.project(&project).await?;
        let role = match v1::Role::try_from(req.role).unwrap_or(v1::Role::Unspecified) {
            v1::Role::Viewer => Role::Viewer,
            v1::Role::Member => Role::Member,
            v1::Role::Admin => Role::Admin,
            v1::Role::Unspecified => {
                return Err(invalid("role", "is required: viewer, member or admin"));
            }
        };
        let rate = match req.rate_per_minute {
            0 => None,
            n => Some(i64::try_from(n).map_err(|_| invalid("rate_per_minute", "is too large"))?),
        };
        let now = Utc::now();
        let expires_at = match req.ttl_secs {
            0 => None,
            secs => Some(
                i64::try_from(secs)
                    .ok()
                    .and_then(chrono::Duration::try_seconds)
                    .and_then(|ttl| now.checked_add_signed(ttl))
                    .ok_or_else(|| invalid("ttl_secs", format!("{secs} is too long")))?,
            ),
        };
        let (id, token) = generate();
        let Some((_, secret)) = parse(&token) else {
            return Err(Status::internal("a generated key did not parse"));
        };
        let key = KeyRecord {
            id: id.clone(),
            project_id: project,
            role,
            name: req.name.clone(),
            secret_sha256: digest(secret),
            rate_per_minute: rate,
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        self.store
            .put_key(&key)
            .await
            .map_err(|e| internal("create key", e))?;
        caller.target(&id);
        Ok(Response::new(v1::CreatedKey {
            key: Some(key_message(&key)),
            secret: token,
        }))
    }

    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        let caller = Caller::of(&request);
        let project = caller.scope(&request.get_ref().project_id)?;
        let keys = self
            .store
            .list_keys(project)
            .await
            .map_err(|e| internal("list keys", e))?;
        Ok(Response::new(v1::ListKeysResponse {
            keys: keys.iter().map(key_message).collect(),
        }))
    }

    async fn revoke_key(
        &self,
        request: Request<v1::RevokeKeyRequest>,
    ) -> Result<Response<v1::ApiKey>, Status> {
        let caller = Caller::of(&request);
        let id = request.get_ref().id.clone();
        caller.target(&id);
        if id.is_empty() {
            return Err(invalid("id", "is required"));
        }
        // Operators revoke any key; others only their project's.
        let key = self
            .store
            .get_key(&id)
            .await
            .map_err(|e| internal("get key", e))?
            .filter(|k| caller.is_operator() || k.project_id == caller.project)
            .ok_or_else(|| not_found("key", &id))?;
        self.store
            .revoke_key(&key.project_id, &id, Utc::now())
            .await
            .map_err(|e| internal("revoke key", e))?;
        let key = self
            .store
            .get_key(&id)
            .await
            .map_err(|e| internal("get key", e))?
            .ok_or_else(|| not_found("key", &id))?;
        Ok(Response::new(key_message(&key)))
    }

    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        let caller = Caller::of(&request);
        let req = request.get_ref();
        let limit = match req.limit {
            0 => DEFAULT_AUDIT_LIMIT,
            n if n > MAX_AUDIT_LIMIT => {
                return Err(invalid(
                    "limit",
                    format!("{n} is more than {MAX_AUDIT_LIMIT}"),
                ));
            }
            n => n,
        };
        let before = (req.before_id > 0).then_some(req.before_id);
        let events = self
            .store
            .list_audit(&caller.project, limit, before)
            .await
            .map_err(|e| internal("list audit events", e))?;
        Ok(Response::new(v1::ListAuditEventsResponse {
            events: events
                .into_iter()
                .map(|e| v1::AuditEvent {
                    id: e.id,
                    at: Some(convert::timestamp(e.at)),
                    project_id: e.project_id,
                    key_id: e.key_id,
                    method: e.method,
                    target: e.target,
                    outcome: e.outcome,
                    peer: e.peer,
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_others_do_not() {
        let (id, token) = generate();
        let (parsed, secret) = parse(&token).expect("a generated key parses");
        assert_eq!(parsed, id);
        assert_eq!(secret.len(), SECRET_LEN);
        assert_ne!(generate().1, token, "keys are random");
        for bad in [
            "",
            "gk_live_",
            "gk_test_abcdefghijkl_0123456789012345678901234567890123456789",
            "gk_live_ABCDEFGHIJKL_0123456789012345678901234567890123456789",
            "gk_live_abcdefghijkl_01234567890123456789012345678901234567",
            "gk_live_abcdefghijkl_0123456789012345678901234567890123456789x",
            "gk_live_abcdefghijkl_01234567890123456789012345678901234567-9",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn every_public_method_has_a_role_and_unknown_ones_need_an_operator() {
        use gauntlet_proto::FILE_DESCRIPTOR_SET;
        let set = <prost_types::FileDescriptorSet as prost::Message>::decode(FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        for file in set.file {
            let package = file.package().to_owned();
            for service in file.service {
                for method in &service.method {
                    let path = format!("/{package}.{}/{}", service.name(), method.name());
                    let (need, _) = required(&path);
                    if package == "gauntlet.v1" {
                        assert!(
                            !(need == Need::Operator
                                && !path.contains("Admin")
                                && !path.contains("CreateProject")),
                            "{path} falls to the default"
                        );
                        assert_ne!(need, Need::Open, "{path}");
                    }
                }
            }
        }
        assert_eq!(required("/gauntlet.v1.RunService/Nope").0, Need::Operator);
        assert_eq!(
            required("/gauntlet.internal.v1.Control/GetStatus").0,
            Need::Open
        );
        assert_eq!(outcome(Code::PermissionDenied), "permission_denied");
        assert_eq!(outcome(Code::Ok), "ok");
    }

    /// A limiter that counts its steps (Redis round trips, in a gateway).
    struct Counting {
        inner: gauntlet_cache::limiter::LocalLimiter,
        steps: AtomicU64,
    }

    #[tonic::async_trait]
    impl RateLimiter for Counting {
        async fn try_acquire(&self, charges: &[Charge<'_>]) -> Decision {
            self.steps.fetch_add(1, Ordering::Relaxed);
            self.inner.try_acquire(charges).await
        }

        async fn charge(&self, charges: &[Charge<'_>]) {
            self.inner.charge(charges).await
        }
    }

    /// A key at 6,000 calls a minute takes ten units from the limiter at a
    /// time and spends them here; a key at 60 still takes one a call, and
    /// its burst of one refuses the second call at once.
    #[tokio::test]
    async fn a_busy_key_spends_its_rate_from_a_lease_and_a_small_rate_stays_exact() {
        let store = Arc::new(gauntlet_store::SqliteStore::in_memory().await.unwrap());
        let limiter = Arc::new(Counting {
            inner: gauntlet_cache::limiter::LocalLimiter::new(),
            steps: AtomicU64::new(0),
        });
        let gate = KeyGate::new(
            store.clone(),
            limiter.clone(),
            AuthConfig::default(),
            tokio_util::sync::CancellationToken::new(),
        );
        let key = |rate: i64| {
            let (id, token) = generate();
            let (_, secret) = parse(&token).unwrap();
            let record = KeyRecord {
                id,
                project_id: DEFAULT_PROJECT.into(),
                role: Role::Viewer,
                name: String::new(),
                secret_sha256: digest(secret),
                rate_per_minute: Some(rate),
                created_at: Utc::now(),
                expires_at: None,
                revoked_at: None,
            };
            (record, token)
        };
        let (busy, busy_token) = key(6_000);
        let (small, small_token) = key(60);
        store.put_key(&busy).await.unwrap();
        store.put_key(&small).await.unwrap();
        let call = |token: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
            headers
        };
        let admit = async |headers: &http::HeaderMap| {
            gate.admit(Call {
                method: "/gauntlet.v1.RunService/ListRuns",
                headers,
                peer: None,
            })
            .await
        };

        let busy_call = call(&busy_token);
        for i in 0..30 {
            assert!(admit(&busy_call).await.is_ok(), "call {i}");
        }
        assert_eq!(
            limiter.steps.load(Ordering::Relaxed),
            3,
            "one step per ten calls"
        );

        let small_call = call(&small_token);
        assert!(admit(&small_call).await.is_ok());
        let refused = admit(&small_call).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(
            limiter.steps.load(Ordering::Relaxed),
            5,
            "one step per call"
        );
    }

    #[test]
    fn month_start_is_the_first_of_the_month() {
        let now = "2026-11-29T21:55:04Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(month_start(now).to_rfc3339(), "2026-11-01T00:00:00+00:00");
    }
}
