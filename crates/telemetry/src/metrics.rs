//! Metrics: the `metrics` facade over `metrics-exporter-prometheus`
//! recorders, served as the Prometheus text format on `/metrics`.
//!
//! Two kinds of registry:
//! - **one per service** ([`Registry::new`]): what the service counts (its
//!   gRPC calls, its pool, its caches, its work), every series labelled
//!   `service="<name>"`. `gauntlet up` runs five services in one process;
//!   each keeps its own registry and serves it on its own port, so a
//!   Prometheus scraping all five counts nothing twice.
//! - **the process's** ([`Registry::global`]): installed as the `metrics`
//!   global recorder, so library code records with the `metrics::counter!`
//!   macros (the provider clients, the Redis breaker), plus the process's
//!   RSS, CPU and file descriptors. A process serves it on one endpoint
//!   only: its service's, or the worker's inside `gauntlet up`.
//!
//! [`parse`] reads the text format back (the monitor's scrapes, the Control
//! API's snapshot, tests).

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError},
};

pub use metrics::{Counter, Gauge, Histogram};
use metrics::{Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::TelemetryError;

/// Content type of the text this module renders.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds, in seconds, of every `*_seconds` histogram: from a cache
/// hit or a mock's answer (milliseconds) to a slow model call (a minute).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often a serving process folds its histograms' observations into
/// buckets ([`Registry::run_upkeep`]).
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The label every series of a registry carries: the service it counts for.
pub const SERVICE_LABEL: &str = "service";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

type Collector = Box<dyn Fn(&Registry) + Send + Sync>;

/// A set of series rendered together, labelled with one service's name.
pub struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    service: String,
    /// Run before each render, to set gauges that are read, not counted
    /// (pool sizes, breaker states).
    collectors: Mutex<Vec<Collector>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// The name the process registry labels its series with; set by
/// [`set_process_service`] before the first use, else `gauntlet`.
static PROCESS_SERVICE: OnceLock<String> = OnceLock::new();

/// Names the process for its registry's `service` label (the binary's
/// service, `gauntlet` for the CLI). Only the first call counts, and only
/// before [`Registry::global`] is first used.
pub fn set_process_service(name: &str) {
    let _ = PROCESS_SERVICE.set(name.to_owned());
}

static GLOBAL: LazyLock<Registry> = LazyLock::new(|| {
    let registry = Registry::new(PROCESS_SERVICE.get().map_or("gauntlet", String::as_str));
    registry.on_scrape(|r| r.collect_process());
    registry
});

/// Hands the `metrics` macros to the process registry.
struct Forward(&'static PrometheusRecorder);

impl Recorder for Forward {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.0.describe_counter(key, unit, description);
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.0.describe_gauge(key, unit, description);
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.0.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.0.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.0.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.0.register_histogram(key, metadata)
    }
}

impl Registry {
    /// A registry whose series all carry `service="<service>"`, with
    /// `gauntlet_build_info` set.
    pub fn new(service: &str) -> Self {
        let recorder = PrometheusBuilder::new()
            .add_global_label(SERVICE_LABEL, service)
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("the latency buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let registry = Self {
            recorder,
            handle,
            service: service.to_owned(),
            collectors: Mutex::new(Vec::new()),
        };
        registry
            .gauge_with(
                "gauntlet_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))],
            )
            .set(1.0);
        registry
    }

    /// The process registry, installed as the `metrics` global recorder on
    /// first use (a recorder installed by someone else first keeps the
    /// macros; this registry then holds only what is recorded on it).
    pub fn global() -> &'static Registry {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        let registry: &'static Registry = &GLOBAL;
        INSTALLED.get_or_init(|| {
            let _ = metrics::set_global_recorder(Forward(&registry.recorder));
        });
        registry
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    fn key(name: &str, labels: &[(&str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new((*k).to_owned(), (*v).to_owned()))
            .collect();
        Key::from_parts(name.to_owned(), labels)
    }

    pub fn counter(&self, name: &str) -> Counter {
        self.counter_with(name, &[])
    }

    pub fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> Counter {
        self.recorder
            .register_counter(&Self::key(name, labels), &METADATA)
    }

    pub fn gauge(&self, name: &str) -> Gauge {
        self.gauge_with(name, &[])
    }

    pub fn gauge_with(&self, name: &str, labels: &[(&str, &str)]) -> Gauge {
        self.recorder
            .register_gauge(&Self::key(name, labels), &METADATA)
    }

    /// A histogram; names ending `_seconds` get [`LATENCY_BUCKETS`].
    pub fn histogram(&self, name: &str) -> Histogram {
        self.histogram_with(name, &[])
    }

    pub fn histogram_with(&self, name: &str, labels: &[(&str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&Self::key(name, labels), &METADATA)
    }

    /// Runs `collect` before every render, to set what is read rather than
    /// counted.
    pub fn on_scrape(&self, collect: impl Fn(&Registry) + Send + Sync + 'static) {
        self.collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::new(collect));
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        for collect in self
            .collectors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            collect(self);
        }
        self.handle.render()
    }

    /// Folds the observations histograms hold into their buckets: the
    /// recorder keeps each one until then, so a registry nobody scrapes
    /// needs this every few seconds ([`UPKEEP_EVERY`]) to stay small.
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Every series as `name{label="value",…}` → value, labels sorted and
    /// without `service` (the Control API's view of one service).
    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        parse(&self.render())
            .into_iter()
            .map(|mut s| {
                s.labels.remove(SERVICE_LABEL);
                (s.key(), s.value)
            })
            .collect()
    }

    /// The process's RSS, CPU and fds (`process_*`), and what it may use.
    fn collect_process(&self) {
        static PROCESS: LazyLock<metrics_process::Collector> = LazyLock::new(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        });
        // The collector records through the macros, i.e. into the global
        // recorder: this registry when it is installed.
        PROCESS.collect();
        self.gauge("gauntlet_process_cpu_cores").set(cpu_cores());
        if let Some(limit) = memory_limit() {
            self.gauge("gauntlet_process_memory_limit_bytes")
                .set(limit as f64);
        }
    }
}

/// The CPUs this process may use: its cgroup's quota when it has one (a
/// 500m limit is 0.5), else the CPUs it may run on.
fn cpu_cores() -> f64 {
    let quota = std::fs::read_to_string("/sys/fs/cgroup/cpu.max")
        .ok()
        .and_then(|s| cgroup_cpus(&s));
    quota.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from) as f64)
}

/// `cpu.max` (`<quota> <period>`, or `max <period>` for none) as CPUs.
fn cgroup_cpus(text: &str) -> Option<f64> {
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?;
    let period: f64 = parts.next()?.parse().ok()?;
    (period > 0.0).then(|| quota / period)
}

/// The memory this process may use: its cgroup's limit when it has one,
/// else the machine's RAM.
fn memory_limit() -> Option<u64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    cgroup.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    })
}

/// One sample of the text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// `name{a="x",b="y"}` with the labels sorted (just `name` without any).
    pub fn key(&self) -> String {
        if self.labels.is_empty() {
            return self.name.clone();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The samples of a Prometheus text exposition; comments and lines that do
/// not parse are skipped (a scrape is read for what it holds, not judged).
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        let end;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || c.is_whitespace() {
                    chars.next();
                } else {
                    break;
                }
            }
            let (start, c) = *chars.peek()?;
            if c == '}' {
                end = start + 1;
                break;
            }
            let eq = body[start..].find('=')? + start;
            let label = body[start..eq].trim().to_owned();
            // Advance to the opening quote.
            while let Some((i, _)) = chars.peek() {
                if *i > eq {
                    break;
                }
                chars.next();
            }
            let (_, quote) = chars.next()?;
            if quote != '"' {
                return None;
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.insert(label, value);
        }
        rest = &body[end..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// What one `/metrics` endpoint serves: its service's registry, and the
/// process registry when this endpoint is the process's.
#[derive(Clone)]
pub struct Endpoint {
    pub registry: Arc<Registry>,
    pub process: bool,
}

impl Endpoint {
    pub fn render(&self) -> String {
        let mut text = self.registry.render();
        if self.process {
            text.push_str(&Registry::global().render());
        }
        text
    }
}

/// An axum router answering `GET /metrics`.
pub fn router(endpoint: Endpoint) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let body = endpoint.render();
            async move {
                (
                    [(http::header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
                    body,
                )
            }
        }),
    )
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    endpoint: Endpoint,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TelemetryError> {
    axum::serve(listener, router(endpoint))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_renders_its_series_with_its_service_label() {
        let registry = Registry::new("worker");
        registry
            .counter_with("gauntlet_tests_completed_total", &[("status", "pass")])
            .increment(10);
        registry
            .counter_with("gauntlet_tests_completed_total", &[("status", "fail")])
            .increment(3);
        registry.gauge("gauntlet_worker_batches_in_flight").set(4.5);
        let snapshot = registry.snapshot();
        assert_eq!(
            snapshot["gauntlet_tests_completed_total{status=\"pass\"}"],
            10.0
        );
        assert_eq!(
            snapshot["gauntlet_tests_completed_total{status=\"fail\"}"],
            3.0
        );
        assert_eq!(snapshot["gauntlet_worker_batches_in_flight"], 4.5);
        assert_eq!(snapshot["gauntlet_build_info{version=\"0.1.0\"}"], 1.0);
        let text = registry.render();
        assert!(
            text.contains("gauntlet_tests_completed_total{service=\"worker\",status=\"pass\"} 10"),
            "{text}"
        );
    }

    #[test]
    fn seconds_histograms_have_cumulative_latency_buckets() {
        let registry = Registry::new("gateway");
        let h = registry.histogram_with(
            "gauntlet_provider_request_duration_seconds",
            &[("provider", "openai")],
        );
        for v in [0.05, 0.5, 0.5, 7.0, 1.0] {
            h.record(v);
        }
        let snapshot = registry.snapshot();
        let bucket = |le: &str| {
            snapshot[&format!(
                "gauntlet_provider_request_duration_seconds_bucket{{le=\"{le}\",provider=\"openai\"}}"
            )]
        };
        assert_eq!(bucket("0.05"), 1.0);
        assert_eq!(bucket("1"), 4.0);
        assert_eq!(bucket("+Inf"), 5.0);
        assert_eq!(
            snapshot["gauntlet_provider_request_duration_seconds_count{provider=\"openai\"}"],
            5.0
        );
        assert!(
            (snapshot["gauntlet_provider_request_duration_seconds_sum{provider=\"openai\"}"]
                - 9.05)
                .abs()
                < 1e-9
        );
    }

    #[test]
    fn label_values_survive_escaping_both_ways() {
        let registry = Registry::new("x");
        registry
            .counter_with("calls", &[("model", "a\"b\\c\nd"), ("b", "1")])
            .increment(2);
        let samples = parse(&registry.render());
        let calls = samples.iter().find(|s| s.name == "calls").unwrap();
        assert_eq!(calls.label("model"), Some("a\"b\\c\nd"));
        assert_eq!(calls.label("b"), Some("1"));
        assert_eq!(calls.value, 2.0);
    }

    #[test]
    fn a_cgroup_quota_is_read_as_cpus() {
        assert_eq!(cgroup_cpus("50000 100000\n"), Some(0.5));
        assert_eq!(cgroup_cpus("200000 100000"), Some(2.0));
        assert_eq!(cgroup_cpus("max 100000\n"), None);
    }

    #[test]
    fn parse_reads_what_other_exporters_write() {
        let text = "# HELP up whether\n# TYPE up gauge\nup 1\n\
                    rabbitmq_queue_messages{vhost=\"/\", queue=\"q\",} 12 1700000000000\n\
                    h_bucket{le=\"+Inf\"} 3\nbroken{ 1\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert_eq!(samples[0].key(), "up");
        assert_eq!(samples[1].label("queue"), Some("q"));
        assert_eq!(samples[1].value, 12.0);
        assert_eq!(samples[2].label("le"), Some("+Inf"));
    }

    #[test]
    fn the_process_registry_holds_macro_records_and_process_metrics() {
        let global = Registry::global();
        metrics::counter!("metrics_test_global_total").increment(7);
        let endpoint = Endpoint {
            registry: Arc::new(Registry::new("worker")),
            process: true,
        };
        let samples = parse(&endpoint.render());
        let value = |name: &str| samples.iter().find(|s| s.name == name).map(|s| s.value);
        assert_eq!(value("metrics_test_global_total"), Some(7.0));
        assert!(value("process_resident_memory_bytes").unwrap() > 0.0);
        assert!(value("gauntlet_process_cpu_cores").unwrap() >= 1.0);
        assert!(value("gauntlet_process_memory_limit_bytes").unwrap() > 0.0);
        assert_eq!(global.service(), "gauntlet");
    }
}
