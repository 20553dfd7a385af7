//! Service configuration: the typed sections every Gauntlet binary reads, and
//! the layering rule that fills them (defaults, then an optional TOML file,
//! then `GAUNTLET_<SECTION>__<KEY>` environment variables). Pure: the caller
//! hands in the file text and the environment.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Errors from loading configuration; each names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file: {0}")]
    File(String),
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

/// Every section a Gauntlet process may read. Unused sections are ignored by
/// the services that do not need them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GauntletConfig {
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub gateway: GatewayConfig,
    pub worker: WorkerConfig,
    pub analytics: AnalyticsConfig,
    pub reports: ReportsConfig,
    pub monitor: MonitorConfig,
    pub grpc: GrpcConfig,
    pub reconcile: ReconcileConfig,
    pub auth: AuthConfig,
}

/// What every gRPC server and client of a Gauntlet process uses, so no
/// component accepts less than another sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    /// Largest message sent or accepted, in bytes (after decompression).
    /// Suites and report documents of any size still travel, in chunks.
    pub max_message_bytes: usize,
    /// Compress what clients send with gzip (servers always accept gzip and
    /// answer with it when the client asks). Worth it across a network; on
    /// loopback it only costs CPU, so the embedded stack turns it off.
    pub gzip: bool,
    /// PEM certificate chain the gRPC servers present, with `tls_key`: set
    /// both to serve TLS (clients then use `https://` URLs). Empty serves
    /// plaintext. With `tls_client_auth`, also the identity a service
    /// presents to the others, and the CLI to a server that asks.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// PEM CA certificates clients trust for `https://` servers (the CLI's
    /// `--ca-cert`); empty trusts the public web roots.
    pub tls_ca: String,
    /// Servers accept only clients with a certificate signed by `tls_ca`
    /// (mutual TLS between services).
    pub tls_client_auth: bool,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 16 * 1024 * 1024,
            gzip: true,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
            tls_client_auth: false,
        }
    }
}

/// The smallest `grpc.max_message_bytes` accepted: below this, ordinary
/// answers (a run summary, a page of results) would not fit.
pub const MIN_MESSAGE_BYTES: usize = 64 * 1024;

impl GauntletConfig {
    /// Checks what serde cannot: limits that would make the process unusable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.grpc.max_message_bytes < MIN_MESSAGE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "grpc.max_message_bytes: {} is less than the minimum of {MIN_MESSAGE_BYTES}",
                self.grpc.max_message_bytes
            )));
        }
        if self.gateway.max_suite_bytes == 0 {
            return Err(ConfigError::Invalid(
                "gateway.max_suite_bytes: must be more than 0".into(),
            ));
        }
        self.reconcile.validate(&self.worker)
    }
}

/// The reconciler (run by the gateway): finds runs that are not finished
/// yet but have nothing in flight — their batches dead-lettered, or lost —
/// and re-drives their missing work, or fails them with the reason once
/// the re-drives are spent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Look for stuck runs. Several gateways may all do it (they agree
    /// through the database on who re-drives a run).
    pub enabled: bool,
    /// Seconds between two looks.
    pub interval_secs: u64,
    /// A run counts as stuck after this many seconds without a sign of life
    /// (a result stored, a re-drive), and a dead letter is re-driven once it
    /// has been dead this long, so that the outage that killed it has had
    /// time to pass. More than `worker.store_retry_secs`: a worker holds a
    /// batch that long while it cannot write.
    pub stale_after_secs: u64,
    /// How many times one run's missing work is re-driven (dead-lettered
    /// batches put back, lost tasks published again) before the run fails.
    pub max_redrives: u32,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 30,
            stale_after_secs: 900,
            max_redrives: 3,
        }
    }
}

impl ReconcileConfig {
    fn validate(&self, worker: &WorkerConfig) -> Result<(), ConfigError> {
        if self.interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "reconcile.interval_secs: must be more than 0".into(),
            ));
        }
        if self.stale_after_secs <= worker.store_retry_secs {
            return Err(ConfigError::Invalid(format!(
                "reconcile.stale_after_secs: {} must be more than worker.store_retry_secs ({}), \
                 or a batch a worker still holds while the database is down would be re-driven",
                self.stale_after_secs, worker.store_retry_secs
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://…` in production, `sqlite://…` in embedded mode.
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout_secs: u64,
    /// Run migrations at start-up.
    pub migrate: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/gauntlet".into(),
            max_connections: 16,
            acquire_timeout_secs: 10,
            migrate: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    pub url: String,
    /// Task batches of this many tasks are published per message.
    pub batch_size: u32,
    /// Redeliveries of one message before it goes to the dead-letter queue.
    pub delivery_limit: u32,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            batch_size: 50,
            delivery_limit: 5,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Empty: L1 (in-process) cache only.
    pub url: String,
    /// Prefix of every key, so several deployments (or tests) share one Redis.
    pub prefix: String,
    pub pool_size: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "gauntlet".into(),
            pool_size: 16,
        }
    }
}

/// Who may call the gateway (issue 14): API keys, their cache and limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Every RPC of the gateway needs `authorization: Bearer <key>`. On by
    /// default; only embedded mode (`gauntlet run` without `--server`,
    /// `gauntlet up` on loopback) turns it off.
    pub enabled: bool,
    /// A key (`gk_live_<id>_<secret>`, see `gauntlet keys generate`) made an
    /// admin of the `default` project, the operators', at every start: the
    /// first key, from a secret. Empty: none.
    pub bootstrap_key: String,
    /// How long a gateway trusts what it read about a key, in seconds: a
    /// revoked key stops working within this.
    pub cache_secs: u64,
    /// RPCs a minute per key, unless the key has its own rate; 0: no limit.
    /// Kept in Redis (`redis.url`) so every gateway spends one budget.
    pub rate_per_minute: u64,
    /// WatchRun streams a key may hold open at once, per gateway.
    pub max_watch_streams: u32,
    /// Largest request a viewer or member key may send, in bytes (the
    /// suite of a SubmitRunStream counted whole); admins are held only to
    /// the server's limits. 0: only the server's limits.
    pub max_request_bytes: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bootstrap_key: String::new(),
            cache_secs: 5,
            rate_per_minute: 60_000,
            max_watch_streams: 64,
            max_request_bytes: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: String,
    /// Where `/metrics` is served (Prometheus text); empty serves none.
    pub metrics_listen: String,
    pub analytics_url: String,
    pub monitor_url: String,
    /// Largest suite text accepted by SubmitRun, in bytes.
    pub max_suite_bytes: usize,
    /// Tasks of the runs this gateway took that are kept on the task queue
    /// (or in workers' hands) at once; each run gets an equal share, at
    /// least one batch, and is topped up as its results land, so runs
    /// submitted together progress together. A run that fits its share
    /// goes out whole. The smaller, the sooner a new run's first tasks are
    /// worked on; too small starves the workers, so the gateway raises it
    /// to twice what the task queue's consumers hold at once (consumers ×
    /// `worker.prefetch` × `amqp.batch_size`). 0 publishes every run
    /// whole (first come, first served).
    pub dispatch_window_tasks: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7070".into(),
            metrics_listen: "127.0.0.1:9464".into(),
            analytics_url: "http://127.0.0.1:7072".into(),
            monitor_url: "http://127.0.0.1:7074".into(),
            max_suite_bytes: 16 * 1024 * 1024,
            dispatch_window_tasks: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    pub listen: String,
    /// Where `/metrics` is served (Prometheus text); empty serves none.
    pub metrics_listen: String,
    /// Unacknowledged task batches held at once.
    pub prefetch: u16,
    /// Provider calls in flight at once, across all batches. I/O-bound work:
    /// hundreds, not the number of cores.
    pub max_in_flight: usize,
    /// Seconds a SIGTERM waits for in-flight batches before nacking them.
    pub shutdown_grace_secs: u64,
    /// Serve repeated calls (same provider, parameters and prompt) from the
    /// response cache shared by all workers (in Redis when `redis.url` is
    /// set). A run's `no_cache` option (`--no-cache`) turns it off for that run.
    pub response_cache: bool,
    /// How long a cached answer is served, in seconds (promptfoo's default:
    /// 14 days); 0 turns the cache off like `response_cache = false`.
    pub response_cache_ttl_secs: u64,
    /// In-process (L1) part of the response cache, in MiB.
    pub response_cache_l1_mb: u64,
    /// Adapt the calls in flight to a provider and key to what it accepts:
    /// once per window of outcomes, down by a quarter when more than 30 %
    /// were 429s, else up by an eighth, up to `max_in_flight`.
    pub adaptive_concurrency: bool,
    /// The fewest outcomes in a window (a window is also at least the
    /// current limit, about one round trip).
    pub concurrency_grow_after: u32,
    /// How long a batch keeps retrying the write of answers it already has
    /// while the store is down (and the worker starts no new calls) before
    /// it gives the batch back. Covers a database restart or failover
    /// without paying for the same answers twice.
    pub store_retry_secs: u64,
    /// Share of a run's tasks (past its first `trace_first_tasks`) that get
    /// a span of their own, with a span per model call under it; decided
    /// per task, the same on every worker. A task that fails or errors
    /// always gets its span. 0 traces none but those, 1 traces all.
    pub trace_task_ratio: f64,
    /// A run's first tasks are all traced, so a small run's trace is whole.
    pub trace_first_tasks: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7071".into(),
            metrics_listen: "127.0.0.1:9465".into(),
            prefetch: 16,
            max_in_flight: 256,
            shutdown_grace_secs: 30,
            response_cache: true,
            response_cache_ttl_secs: 14 * 24 * 3600,
            response_cache_l1_mb: 64,
            adaptive_concurrency: true,
            concurrency_grow_after: 10,
            store_retry_secs: 600,
            trace_task_ratio: 0.01,
            trace_first_tasks: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    pub listen: String,
    /// Where `/metrics` is served (Prometheus text); empty serves none.
    pub metrics_listen: String,
    /// Cache lifetime of a summary of a run still running.
    pub live_ttl_secs: u64,
    /// Cache lifetime of a summary of a finished run.
    pub finished_ttl_secs: u64,
    /// Results from which a completed run is rolled up after its first
    /// summary (its later summaries read a few grouped rows instead of
    /// every result). Below it, grouping the results costs little (a
    /// 20,000-result run: ~0.1 s) and rolling up would compete with the
    /// command that asked; trends roll up every run they read.
    pub roll_up_at: u64,
    /// Seconds between two looks for completed runs of `roll_up_at` results
    /// or more not rolled up yet, which are then rolled up without waiting
    /// for a summary to ask; 0 leaves them to the first summary.
    pub roll_up_every_secs: u64,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7072".into(),
            metrics_listen: "127.0.0.1:9466".into(),
            live_ttl_secs: 30,
            finished_ttl_secs: 24 * 3600,
            roll_up_at: 100_000,
            roll_up_every_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConfig {
    pub listen: String,
    /// Where `/metrics` is served (Prometheus text); empty serves none.
    pub metrics_listen: String,
    pub analytics_url: String,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7073".into(),
            metrics_listen: "127.0.0.1:9467".into(),
            analytics_url: "http://127.0.0.1:7072".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    pub listen: String,
    /// Where `/metrics` is served (Prometheus text); empty serves none.
    pub metrics_listen: String,
    /// `name=url` pairs of the services' gRPC addresses, whose health is
    /// probed; comma-separated in the environment.
    pub targets: String,
    /// `name=url` pairs of the services' `/metrics`, scraped on every poll
    /// for the alert rules.
    pub metrics_targets: String,
    /// A YAML file of alert rules (`deploy/monitor/rules.yml` shows the
    /// format); empty uses the rules built in, which are that file.
    pub rules_file: String,
    /// URLs that get every alert that fires or resolves, as JSON POSTs;
    /// comma-separated.
    pub webhooks: String,
    /// Attempts of one webhook delivery before it is given up (with 1, 2,
    /// 4 … s between them).
    pub webhook_attempts: u32,
    /// Analytics, for the quality rules' comparisons of a suite's runs.
    pub analytics_url: String,
    pub poll_interval_ms: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7074".into(),
            metrics_listen: "127.0.0.1:9468".into(),
            targets: "gateway=http://127.0.0.1:7070,worker=http://127.0.0.1:7071,\
                      analytics=http://127.0.0.1:7072,reports=http://127.0.0.1:7073"
                .into(),
            metrics_targets: "gateway=http://127.0.0.1:9464/metrics,\
                              worker=http://127.0.0.1:9465/metrics,\
                              analytics=http://127.0.0.1:9466/metrics,\
                              reports=http://127.0.0.1:9467/metrics"
                .into(),
            rules_file: String::new(),
            webhooks: String::new(),
            webhook_attempts: 5,
            analytics_url: "http://127.0.0.1:7072".into(),
            poll_interval_ms: 2000,
        }
    }
}

impl MonitorConfig {
    /// The `name=url` pairs of `targets`.
    pub fn target_list(&self) -> Result<Vec<(String, String)>, ConfigError> {
        pairs("monitor.targets", &self.targets)
    }

    /// The `name=url` pairs of `metrics_targets`.
    pub fn metrics_target_list(&self) -> Result<Vec<(String, String)>, ConfigError> {
        pairs("monitor.metrics_targets", &self.metrics_targets)
    }

    /// The URLs of `webhooks`.
    pub fn webhook_list(&self) -> Vec<String> {
        self.webhooks
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// Comma-separated `name=url` pairs, the key named in errors.
fn pairs(key: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((name, url)) if !name.trim().is_empty() && !url.trim().is_empty() => {
                Ok((name.trim().to_string(), url.trim().to_string()))
            }
            _ => Err(ConfigError::Invalid(format!(
                "{key}: `{pair}` is not name=url"
            ))),
        })
        .collect()
}

/// Prefix of the environment variables that override configuration.
pub const ENV_PREFIX: &str = "GAUNTLET_";

/// Builds a `T` from its defaults, an optional TOML document and the
/// `GAUNTLET_<SECTION>__<KEY>` variables among `env` (later wins).
pub fn load<T: DeserializeOwned>(
    file_text: Option<&str>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, ConfigError> {
    let mut root = match file_text {
        Some(text) => text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::File(e.to_string()))?,
        None => toml::Table::new(),
    };
    for (var, raw) in env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            // Single-level GAUNTLET_* variables (GAUNTLET_LOG_FORMAT, …) belong to others.
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let entry = root
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(table) = entry.as_table_mut() else {
            return Err(ConfigError::Env {
                var,
                message: format!("`{section}` is not a section"),
            });
        };
        table.insert(key, env_value(&raw));
    }
    // The path of a bad value (`gateway.max_suite_bytes`) goes with its error.
    serde_path_to_error::deserialize(toml::Value::Table(root)).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().message().to_owned();
        ConfigError::Invalid(if path.is_empty() || path == "." {
            message
        } else {
            format!("{path}: {message}")
        })
    })
}

/// Environment values are strings; numbers and booleans are recognised so
/// `GAUNTLET_WORKER__PREFETCH=32` fills a `u16`.
fn env_value(raw: &str) -> toml::Value {
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = raw.parse::<f64>()
        && raw.contains('.')
    {
        return toml::Value::Float(f);
    }
    toml::Value::String(raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn env_overrides_file_which_overrides_defaults() {
        let file = "[worker]\nprefetch = 8\nmax_in_flight = 10\n";
        let cfg: GauntletConfig = load(
            Some(file),
            env(&[("GAUNTLET_WORKER__PREFETCH", "32"), ("PATH", "/bin")]),
        )
        .unwrap();
        assert_eq!(cfg.worker.prefetch, 32);
        assert_eq!(cfg.worker.max_in_flight, 10);
        assert_eq!(cfg.worker.shutdown_grace_secs, 30);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = load::<GauntletConfig>(None, env(&[("GAUNTLET_WORKER__PREFECH", "3")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("prefech"), "{err}");
    }

    #[test]
    fn wrong_type_is_reported() {
        let err = load::<GauntletConfig>(None, env(&[("GAUNTLET_WORKER__PREFETCH", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("worker.prefetch: invalid type"), "{err}");
        let err = load::<GauntletConfig>(Some("[gateway]\nmax_suite_bytes = \"big\"\n"), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("gateway.max_suite_bytes: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn message_limit_below_the_minimum_is_named() {
        let cfg: GauntletConfig =
            load(None, env(&[("GAUNTLET_GRPC__MAX_MESSAGE_BYTES", "1000")])).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("grpc.max_message_bytes"), "{err}");
        assert!(GauntletConfig::default().validate().is_ok());
    }

    #[test]
    fn reconcile_keys_are_checked_and_named() {
        let zero: GauntletConfig =
            load(None, env(&[("GAUNTLET_RECONCILE__INTERVAL_SECS", "0")])).unwrap();
        let err = zero.validate().unwrap_err().to_string();
        assert!(err.contains("reconcile.interval_secs"), "{err}");

        let hasty: GauntletConfig =
            load(None, env(&[("GAUNTLET_RECONCILE__STALE_AFTER_SECS", "60")])).unwrap();
        let err = hasty.validate().unwrap_err().to_string();
        assert!(err.contains("reconcile.stale_after_secs"), "{err}");
        assert!(err.contains("worker.store_retry_secs (600)"), "{err}");

        let quick: GauntletConfig = load(
            None,
            env(&[
                ("GAUNTLET_RECONCILE__STALE_AFTER_SECS", "5"),
                ("GAUNTLET_WORKER__STORE_RETRY_SECS", "2"),
                ("GAUNTLET_RECONCILE__MAX_REDRIVES", "0"),
            ]),
        )
        .unwrap();
        quick.validate().unwrap();
        assert_eq!(quick.reconcile.max_redrives, 0);
        assert!(quick.reconcile.enabled);
    }

    #[test]
    fn monitor_targets_parse_and_reject_garbage() {
        let cfg = MonitorConfig {
            targets: "a=http://x:1, b=http://y:2".into(),
            ..Default::default()
        };
        assert_eq!(
            cfg.target_list().unwrap(),
            vec![
                ("a".to_string(), "http://x:1".to_string()),
                ("b".to_string(), "http://y:2".to_string())
            ]
        );
        let bad = MonitorConfig {
            targets: "nonsense".into(),
            ..Default::default()
        };
        assert!(bad.target_list().is_err());
    }
}
