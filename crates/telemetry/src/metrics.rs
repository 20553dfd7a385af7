//! Process-wide counters, gauges and histograms on atomics, read back as a
//! flat [`snapshot`] (services return it from `Control.GetStatus`) or as the
//! Prometheus text exposition format ([`render_prometheus`], served on
//! `/metrics` by [`serve`]).
//!
//! Handles are cheap clones of an `Arc`; look a metric up once and keep the
//! handle on hot paths. A series is its name plus its labels, written the
//! Prometheus way in snapshot keys: `gauntlet_results_total{status="pass"}`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    future::Future,
    sync::{
        Arc, LazyLock, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::TelemetryError;

/// Content type of [`render_prometheus`]'s output.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds, in seconds, of histograms created without explicit ones:
/// model calls take from milliseconds (cache hits, mocks) to a minute.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn add(&self, delta: f64) {
        add_f64(&self.0, delta);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Counts observations into fixed buckets and keeps their sum.
#[derive(Debug, Clone)]
pub struct Histogram(Arc<HistogramCore>);

#[derive(Debug)]
struct HistogramCore {
    bounds: Vec<f64>,
    /// One count per bound, plus the overflow bucket; not cumulative.
    buckets: Vec<AtomicU64>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let buckets = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistogramCore {
            bounds,
            buckets,
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    pub fn observe(&self, value: f64) {
        let core = &self.0;
        let index = core.bounds.partition_point(|bound| *bound < value);
        core.buckets[index].fetch_add(1, Ordering::Relaxed);
        add_f64(&core.sum, value);
    }

    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new(LATENCY_BUCKETS)
    }
}

fn add_f64(cell: &AtomicU64, delta: f64) {
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + delta).to_bits())
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    /// Keyed by the rendered label set (`a="x",b="y"`, empty for none).
    series: BTreeMap<String, Series>,
}

/// A set of metric families. Services use the process-wide one through the
/// free functions of this module; tests can make their own.
#[derive(Debug, Default)]
pub struct Registry {
    families: RwLock<BTreeMap<String, Family>>,
}

static GLOBAL: LazyLock<Registry> = LazyLock::new(Registry::default);

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide registry.
    pub fn global() -> &'static Registry {
        &GLOBAL
    }

    pub fn counter(&self, name: &str) -> Counter {
        self.counter_with(name, &[])
    }

    pub fn counter_with(&self, name: &str, labels: &[(&str, &str)]) -> Counter {
        match self.series(name, labels, Kind::Counter, || {
            Series::Counter(Counter::default())
        }) {
            Some(Series::Counter(c)) => c,
            _ => Counter::default(),
        }
    }

    pub fn gauge(&self, name: &str) -> Gauge {
        self.gauge_with(name, &[])
    }

    pub fn gauge_with(&self, name: &str, labels: &[(&str, &str)]) -> Gauge {
        match self.series(
            name,
            labels,
            Kind::Gauge,
            || Series::Gauge(Gauge::default()),
        ) {
            Some(Series::Gauge(g)) => g,
            _ => Gauge::default(),
        }
    }

    /// A histogram with [`LATENCY_BUCKETS`].
    pub fn histogram(&self, name: &str) -> Histogram {
        self.histogram_with(name, &[], LATENCY_BUCKETS)
    }

    /// A histogram with its own bucket bounds; they are fixed by the first
    /// call for a series.
    pub fn histogram_with(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: &[f64],
    ) -> Histogram {
        match self.series(name, labels, Kind::Histogram, || {
            Series::Histogram(Histogram::new(buckets))
        }) {
            Some(Series::Histogram(h)) => h,
            _ => Histogram::new(buckets),
        }
    }

    /// The series `name{labels}`, created on first use. `None` when `name`
    /// is already registered as another kind: the caller gets a detached
    /// handle, because a metrics typo must not take a service down.
    fn series(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        kind: Kind,
        make: impl FnOnce() -> Series,
    ) -> Option<Series> {
        let name = sanitize_name(name);
        let labels = render_labels(labels);
        {
            let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(family) = families.get(&name) {
                if family.kind != kind {
                    warn_kind_conflict(&name, family.kind, kind);
                    return None;
                }
                if let Some(series) = family.series.get(&labels) {
                    return Some(series.clone());
                }
            }
        }
        let mut families = self
            .families
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let family = families.entry(name.clone()).or_insert_with(|| Family {
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            warn_kind_conflict(&name, family.kind, kind);
            return None;
        }
        Some(family.series.entry(labels).or_insert_with(make).clone())
    }

    /// Every series' current value. Histograms contribute `<name>_count` and
    /// `<name>_sum`.
    pub fn snapshot(&self) -> BTreeMap<String, f64> {
        let families = self.families.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = BTreeMap::new();
        for (name, family) in families.iter() {
            for (labels, series) in &family.series {
                match series {
                    Series::Counter(c) => {
                        out.insert(series_key(name, labels), c.get() as f64);
                    }
                    Series::Gauge(g) => {
                        out.insert(series_key(name, labels), g.get());
                    }
                    Series::Histogram(h) => {
                        out.insert(
                            series_key(&format!("{name}_count"), labels),
                            h.count() as f64,
                        );
                        out.insert(series_key(&format!("{name}_sum"), labels), h.sum());
                    }
                }
            }
        }
        out
    }

    /// The registry in the Prometheus text exposition format (0.0.4).
    pub fn render_prometheus(&self) -> String {
        render_merged(&[self])
    }
}

/// Several registries as one exposition: a family in more than one keeps
/// the kind and, per label set, the value of the first registry holding it,
/// so the output never declares a family twice.
pub fn render_prometheus_merged(registries: &[&Registry]) -> String {
    render_merged(registries)
}

fn render_merged(registries: &[&Registry]) -> String {
    let guards: Vec<_> = registries
        .iter()
        .map(|r| r.families.read().unwrap_or_else(PoisonError::into_inner))
        .collect();
    let mut merged: BTreeMap<&str, (Kind, BTreeMap<&str, &Series>)> = BTreeMap::new();
    for families in &guards {
        for (name, family) in families.iter() {
            let (kind, series) = merged
                .entry(name.as_str())
                .or_insert_with(|| (family.kind, BTreeMap::new()));
            if *kind != family.kind {
                continue;
            }
            for (labels, s) in &family.series {
                series.entry(labels.as_str()).or_insert(s);
            }
        }
    }

    let mut out = String::new();
    for (name, (kind, series)) in merged {
        let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
        for (labels, series) in series {
            match series {
                Series::Counter(c) => {
                    let _ = writeln!(out, "{} {}", series_key(name, labels), c.get());
                }
                Series::Gauge(g) => {
                    let _ = writeln!(out, "{} {}", series_key(name, labels), format_f64(g.get()));
                }
                Series::Histogram(h) => render_histogram(&mut out, name, labels, h),
            }
        }
    }
    out
}

fn warn_kind_conflict(name: &str, registered: Kind, requested: Kind) {
    tracing::warn!(
        metric = name,
        registered = registered.as_str(),
        requested = requested.as_str(),
        "metric already registered as another type, updates to this handle are dropped"
    );
}

fn render_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let core = &h.0;
    let separator = if labels.is_empty() { "" } else { "," };
    let mut cumulative = 0u64;
    for (i, bucket) in core.buckets.iter().enumerate() {
        cumulative += bucket.load(Ordering::Relaxed);
        let le = core
            .bounds
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| format_f64(*b));
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "{} {}",
        series_key(&format!("{name}_sum"), labels),
        format_f64(h.sum())
    );
    // From the same bucket reads as `+Inf`, so the two always agree.
    let _ = writeln!(
        out,
        "{} {cumulative}",
        series_key(&format!("{name}_count"), labels)
    );
}

fn series_key(name: &str, labels: &str) -> String {
    if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{labels}}}")
    }
}

/// Prometheus spells infinities `+Inf`/`-Inf`; Rust's `Display` does not.
fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        v.to_string()
    }
}

/// Replaces what the exposition format forbids in a metric name
/// (`[a-zA-Z_:][a-zA-Z0-9_:]*`) with `_`.
fn sanitize_name(name: &str) -> String {
    sanitize(name, |c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn sanitize(name: &str, allowed: impl Fn(char) -> bool) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// `a="x",b="y"`, sorted by label name so the same set always makes the same
/// series; a repeated name keeps its first value.
fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut sorted: Vec<(String, &str)> = labels
        .iter()
        .map(|(k, v)| (sanitize(k, |c| c.is_ascii_alphanumeric() || c == '_'), *v))
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.dedup_by(|later, earlier| later.0 == earlier.0);
    let mut out = String::new();
    for (i, (name, value)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// A counter in the process-wide registry.
pub fn counter(name: &str) -> Counter {
    Registry::global().counter(name)
}

/// A labelled counter in the process-wide registry.
pub fn counter_with(name: &str, labels: &[(&str, &str)]) -> Counter {
    Registry::global().counter_with(name, labels)
}

/// A gauge in the process-wide registry.
pub fn gauge(name: &str) -> Gauge {
    Registry::global().gauge(name)
}

/// A labelled gauge in the process-wide registry.
pub fn gauge_with(name: &str, labels: &[(&str, &str)]) -> Gauge {
    Registry::global().gauge_with(name, labels)
}

/// A histogram with [`LATENCY_BUCKETS`] in the process-wide registry.
pub fn histogram(name: &str) -> Histogram {
    Registry::global().histogram(name)
}

/// A labelled histogram with [`LATENCY_BUCKETS`] in the process-wide registry.
pub fn histogram_with(name: &str, labels: &[(&str, &str)]) -> Histogram {
    Registry::global().histogram_with(name, labels, LATENCY_BUCKETS)
}

/// Every series of the process-wide registry.
pub fn snapshot() -> BTreeMap<String, f64> {
    Registry::global().snapshot()
}

/// The process-wide registry in the Prometheus text format.
pub fn render_prometheus() -> String {
    Registry::global().render_prometheus()
}

/// An axum router answering `GET /metrics` with the process-wide registry
/// followed by `extra` ones (a service's own, say), for services that already
/// serve HTTP to merge.
pub fn router(extra: Vec<Arc<Registry>>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let mut registries: Vec<&Registry> = vec![Registry::global()];
            registries.extend(extra.iter().map(Arc::as_ref));
            let body = render_prometheus_merged(&registries);
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
    extra: Vec<Arc<Registry>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TelemetryError> {
    axum::serve(listener, router(extra))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_in_exposition_format() {
        let registry = Registry::new();
        registry
            .counter_with("gauntlet_results_total", &[("status", "pass")])
            .inc_by(10);
        registry
            .counter_with("gauntlet_results_total", &[("status", "fail")])
            .inc_by(3);
        registry.counter("gauntlet_tasks_processed_total").inc();
        registry.gauge("gauntlet_task_queue_messages").set(42.5);

        assert_eq!(
            registry.render_prometheus(),
            "# TYPE gauntlet_results_total counter\n\
             gauntlet_results_total{status=\"fail\"} 3\n\
             gauntlet_results_total{status=\"pass\"} 10\n\
             # TYPE gauntlet_task_queue_messages gauge\n\
             gauntlet_task_queue_messages 42.5\n\
             # TYPE gauntlet_tasks_processed_total counter\n\
             gauntlet_tasks_processed_total 1\n"
        );
    }

    #[test]
    fn renders_cumulative_histogram_buckets() {
        let registry = Registry::new();
        let h = registry.histogram_with(
            "gauntlet_provider_request_duration_seconds",
            &[("provider", "openai")],
            &[0.1, 1.0],
        );
        h.observe(0.05);
        h.observe(0.5);
        h.observe(0.5);
        h.observe(7.0);
        h.observe(1.0);

        assert_eq!(
            registry.render_prometheus(),
            "# TYPE gauntlet_provider_request_duration_seconds histogram\n\
             gauntlet_provider_request_duration_seconds_bucket{provider=\"openai\",le=\"0.1\"} 1\n\
             gauntlet_provider_request_duration_seconds_bucket{provider=\"openai\",le=\"1\"} 4\n\
             gauntlet_provider_request_duration_seconds_bucket{provider=\"openai\",le=\"+Inf\"} 5\n\
             gauntlet_provider_request_duration_seconds_sum{provider=\"openai\"} 9.05\n\
             gauntlet_provider_request_duration_seconds_count{provider=\"openai\"} 5\n"
        );
        let snapshot = registry.snapshot();
        assert_eq!(
            snapshot["gauntlet_provider_request_duration_seconds_count{provider=\"openai\"}"],
            5.0
        );
    }

    #[test]
    fn label_values_are_escaped_and_label_order_does_not_matter() {
        let registry = Registry::new();
        registry
            .counter_with("calls", &[("model", "a\"b\\c\nd"), ("b", "1")])
            .inc();
        registry
            .counter_with("calls", &[("b", "1"), ("model", "a\"b\\c\nd")])
            .inc();
        let text = registry.render_prometheus();
        assert!(
            text.contains("calls{b=\"1\",model=\"a\\\"b\\\\c\\nd\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn invalid_names_are_sanitised() {
        let registry = Registry::new();
        registry.gauge("9 lives.total").set(1.0);
        registry.counter_with("ok", &[("bad-label", "v")]).inc();
        let snapshot = registry.snapshot();
        assert_eq!(snapshot["_9_lives_total"], 1.0);
        assert_eq!(snapshot["ok{bad_label=\"v\"}"], 1.0);
    }

    #[test]
    fn special_gauge_values_use_prometheus_spelling() {
        let registry = Registry::new();
        registry.gauge("up").set(f64::INFINITY);
        registry.gauge("down").set(f64::NEG_INFINITY);
        registry.gauge("unknown").set(f64::NAN);
        let text = registry.render_prometheus();
        assert!(text.contains("up +Inf\n"), "{text}");
        assert!(text.contains("down -Inf\n"), "{text}");
        assert!(text.contains("unknown NaN\n"), "{text}");
    }

    #[test]
    fn handles_share_one_series_and_snapshot_sees_updates() {
        let registry = Registry::new();
        let a = registry.counter("gauntlet_tasks_processed_total");
        let b = registry.counter("gauntlet_tasks_processed_total");
        a.inc_by(2);
        b.inc_by(3);
        let g = registry.gauge("inflight");
        g.add(5.0);
        g.add(-2.0);
        let snapshot = registry.snapshot();
        assert_eq!(snapshot["gauntlet_tasks_processed_total"], 5.0);
        assert_eq!(snapshot["inflight"], 3.0);
    }

    #[test]
    fn a_name_reused_as_another_kind_keeps_the_first_kind() {
        let registry = Registry::new();
        registry.counter("requests").inc_by(4);
        registry.gauge("requests").set(100.0);
        assert_eq!(registry.snapshot()["requests"], 4.0);
        assert!(
            registry
                .render_prometheus()
                .starts_with("# TYPE requests counter\n")
        );
    }

    #[test]
    fn merged_rendering_declares_each_family_once() {
        let a = Registry::new();
        let b = Registry::new();
        a.counter_with("gauntlet_results_total", &[("status", "pass")])
            .inc_by(5);
        b.counter_with("gauntlet_results_total", &[("status", "fail")])
            .inc_by(1);
        b.counter_with("gauntlet_results_total", &[("status", "pass")])
            .inc_by(100);
        b.gauge("only_in_b").set(1.0);

        assert_eq!(
            render_prometheus_merged(&[&a, &b]),
            "# TYPE gauntlet_results_total counter\n\
             gauntlet_results_total{status=\"fail\"} 1\n\
             gauntlet_results_total{status=\"pass\"} 5\n\
             # TYPE only_in_b gauge\n\
             only_in_b 1\n"
        );
    }

    #[test]
    fn global_functions_share_the_process_registry() {
        counter("metrics_test_global_total").inc_by(7);
        assert_eq!(snapshot()["metrics_test_global_total"], 7.0);
        assert!(render_prometheus().contains("metrics_test_global_total 7\n"));
    }

    #[tokio::test]
    async fn serves_the_registry_on_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        gauge("metrics_test_served").set(3.0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let own = Arc::new(Registry::new());
        own.counter("metrics_test_service_total").inc_by(2);
        // Also in the global registry: rendered once, with the global value.
        own.gauge("metrics_test_served").set(99.0);
        let server = tokio::spawn(serve(listener, vec![own], async {
            let _ = stopped.await;
        }));

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(
            response.contains("content-type: text/plain; version=0.0.4"),
            "{response}"
        );
        assert!(response.contains("metrics_test_served 3\n"), "{response}");
        assert!(
            response.contains("metrics_test_service_total 2\n"),
            "{response}"
        );
        assert_eq!(
            response.matches("# TYPE metrics_test_served gauge").count(),
            1,
            "{response}"
        );

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
