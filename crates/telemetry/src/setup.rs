//! The process-wide subscriber: `EnvFilter`-gated fmt logs, a
//! `tracing-opentelemetry` layer, the OTLP batch exporter when an endpoint is
//! configured, and the guard that flushes it.

use std::{
    io::IsTerminal,
    sync::{Mutex, PoisonError},
};

use opentelemetry::{KeyValue, global, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkError,
    propagation::TraceContextPropagator,
    resource::{EnvResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector},
    trace::SdkTracerProvider,
};
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing_subscriber::{
    EnvFilter, Layer, Registry, layer::SubscriberExt, util::SubscriberInitExt,
};

use crate::TelemetryError;

/// Log filter used when `RUST_LOG` is unset: our own code at `info`, the
/// chatty transport and driver crates only when something is wrong.
pub const DEFAULT_LOG_FILTER: &str = "info,h2=warn,hyper=warn,tower=warn,sqlx=warn,lapin=warn";

/// Span filter used when `GAUNTLET_TRACE_FILTER` is unset. The transport
/// crates the OTLP exporter itself runs on are off, so that exporting spans
/// never produces spans to export.
const DEFAULT_TRACE_FILTER: &str = "info,h2=off,hyper=off,hyper_util=off,tower=off,tonic=off,\
     sqlx=warn,lapin=warn,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

const LOG_FILTER_VAR: &str = "RUST_LOG";
/// Traces get their own filter so that quieting logs (`RUST_LOG=warn`) does
/// not silently cut every trace that passes through this process.
const TRACE_FILTER_VAR: &str = "GAUNTLET_TRACE_FILTER";
const LOG_FORMAT_VAR: &str = "GAUNTLET_LOG_FORMAT";

/// Instrumentation scope of every span this process exports.
const TRACER_NAME: &str = "gauntlet";

/// Whether spans leave this process (an OTLP endpoint is configured).
static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports its spans: set by the [`init`] call that
/// installed the subscriber when an OTLP endpoint is configured.
pub fn exporting() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether this process already installed its subscriber: `gauntlet up`
/// starts five services that each call [`init`].
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// What [`init`] reads from the environment, resolved once so the rules can
/// be tested without touching the process environment.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    service_name: String,
    /// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
    /// named the service: every span of the process is under that name.
    named_by_env: bool,
    log_filter: String,
    trace_filter: String,
    json_logs: bool,
    otlp_export: bool,
}

impl Settings {
    /// `var` returns a variable's value; empty values count as unset, as the
    /// OpenTelemetry specification asks.
    #[cfg(test)]
    fn resolve(default_service_name: &str, var: impl Fn(&str) -> Option<String>) -> Self {
        Self::resolve_with(default_service_name, DEFAULT_LOG_FILTER, var)
    }

    fn resolve_with(
        default_service_name: &str,
        default_log_filter: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());

        let named = var("OTEL_SERVICE_NAME").or_else(|| {
            var("OTEL_RESOURCE_ATTRIBUTES")
                .and_then(|attrs| service_name_attribute(&attrs).map(str::to_owned))
        });
        let named_by_env = named.is_some();
        let service_name = named.unwrap_or_else(|| default_service_name.to_owned());

        let sdk_disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        let otlp_selected =
            var("OTEL_TRACES_EXPORTER").is_none_or(|v| v.split(',').any(|e| e.trim() == "otlp"));
        let endpoint_set = var("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some();

        Self {
            service_name,
            named_by_env,
            log_filter: var(LOG_FILTER_VAR).unwrap_or_else(|| default_log_filter.to_owned()),
            trace_filter: var(TRACE_FILTER_VAR).unwrap_or_else(|| DEFAULT_TRACE_FILTER.to_owned()),
            json_logs: var(LOG_FORMAT_VAR).is_some_and(|v| v.trim().eq_ignore_ascii_case("json")),
            otlp_export: endpoint_set && otlp_selected && !sdk_disabled,
        }
    }
}

/// The `service.name` entry of an `OTEL_RESOURCE_ATTRIBUTES` value
/// (`key=value` pairs separated by commas).
fn service_name_attribute(attrs: &str) -> Option<&str> {
    attrs
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| key.trim() == "service.name")
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// Installs the process-wide tracing subscriber and returns the guard that
/// flushes exported spans when dropped.
///
/// - Logs: fmt to stderr (stdout belongs to CLI output), compact text, or
///   JSON when `GAUNTLET_LOG_FORMAT=json`; filtered by `RUST_LOG`
///   (default [`DEFAULT_LOG_FILTER`]).
/// - Traces: a `tracing-opentelemetry` layer, filtered by
///   `GAUNTLET_TRACE_FILTER` (default `info` minus the exporter's own
///   transport crates). It is always installed so trace context keeps flowing
///   through this process; spans leave the process, through the OTLP/gRPC
///   batch exporter, only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
///   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, unless
///   `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER` excludes `otlp`.
///   The other `OTEL_*` variables (headers, timeout, sampler, batch sizes,
///   `OTEL_RESOURCE_ATTRIBUTES`) are read by the SDK; `OTEL_SERVICE_NAME`
///   overrides `service_name`.
/// - Propagation: the W3C `TraceContextPropagator` becomes the global one.
///
/// Only the first call in a process installs anything; later calls (and a
/// call in a process where someone else installed a subscriber) return an
/// inactive guard. With export enabled this must run inside a Tokio runtime,
/// because the gRPC exporter's channel lives on it.
pub fn init(service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    init_with_log_filter(service_name, DEFAULT_LOG_FILTER)
}

/// [`init`] with another log filter for when `RUST_LOG` is unset: a CLI
/// whose output is its own report wants only warnings from the services it
/// runs in-process.
pub fn init_with_log_filter(
    service_name: &str,
    default_log_filter: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if *installed {
        return Ok(TelemetryGuard::inactive());
    }
    // The process registry takes the `metrics` macros from here on, its
    // series labelled with the service (`gauntlet` for the CLI's own).
    crate::metrics::set_process_service(
        service_name
            .strip_prefix("gauntlet-")
            .unwrap_or(service_name),
    );
    crate::metrics::Registry::global();

    let settings = Settings::resolve_with(service_name, default_log_filter, |name| {
        std::env::var(name).ok()
    });
    let log_filter = parse_filter(LOG_FILTER_VAR, &settings.log_filter)?;
    let trace_filter = parse_filter(TRACE_FILTER_VAR, &settings.trace_filter)?;
    let provider = tracer_provider(&settings)?;

    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(TRACER_NAME))
        .with_filter(trace_filter);
    let subscriber = tracing_subscriber::registry()
        .with(fmt_layer(settings.json_logs).with_filter(log_filter))
        .with(otel_layer);

    // Whatever happens next, retrying cannot succeed where this failed.
    *installed = true;
    if let Err(error) = subscriber.try_init() {
        // The current owner of the global subscriber (a test harness, an
        // embedding application) keeps it; this provider would be unreachable.
        let _ = provider.shutdown();
        tracing::info!(%error, "a tracing subscriber is already installed, keeping it");
        return Ok(TelemetryGuard::inactive());
    }
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(provider.clone());

    if settings.otlp_export {
        EXPORTING.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(protocol) = std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL")
            && !protocol.is_empty()
            && protocol != "grpc"
        {
            tracing::warn!(%protocol, "only the grpc OTLP protocol is supported, exporting with grpc");
        }
        tracing::info!(service = %settings.service_name, "exporting spans over otlp");
    }
    Ok(TelemetryGuard {
        provider: Some(provider),
    })
}

fn parse_filter(var: &'static str, directives: &str) -> Result<EnvFilter, TelemetryError> {
    EnvFilter::try_new(directives).map_err(|e| TelemetryError::Filter {
        var,
        directives: directives.to_owned(),
        message: e.to_string(),
    })
}

fn fmt_layer(json: bool) -> Box<dyn Layer<Registry> + Send + Sync> {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if json {
        layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        layer
            .compact()
            .with_ansi(std::io::stderr().is_terminal())
            .boxed()
    }
}

fn tracer_provider(settings: &Settings) -> Result<SdkTracerProvider, TelemetryError> {
    // Ours first, then the environment's detectors, so OTEL_RESOURCE_ATTRIBUTES
    // can override anything except the resolved service name.
    let resource = Resource::builder_empty()
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_detectors(&[
            Box::new(SdkProvidedResourceDetector),
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ])
        .with_service_name(settings.service_name.clone())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if !settings.otlp_export {
        // No processor: spans still get ids (so context propagates and shows
        // up in logs) but are dropped when they end.
        return Ok(builder.build());
    }
    let Ok(runtime) = Handle::try_current() else {
        return Err(TelemetryError::NoRuntime);
    };
    // Built now, so a bad endpoint or header fails here and not silently.
    let first = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()?;
    let default: &'static str = Box::leak(settings.service_name.clone().into_boxed_str());
    let first = Mutex::new(Some(first));
    let make: crate::export::MakeExporter = Box::new(move |service| {
        let mut exporter = match first.lock().unwrap_or_else(PoisonError::into_inner).take() {
            Some(exporter) => exporter,
            None => match opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
            {
                Ok(exporter) => exporter,
                Err(error) => {
                    tracing::warn!(%error, service, "cannot build the span exporter");
                    return None;
                }
            },
        };
        opentelemetry_sdk::trace::SpanExporter::set_resource(
            &mut exporter,
            &crate::export::resource_for(&resource, service),
        );
        Some(exporter)
    });
    let processor = crate::export::Exporting::start(
        &runtime,
        default,
        !settings.named_by_env,
        crate::export::Batching::from_env(|name| std::env::var(name).ok()),
        make,
    );
    Ok(builder.with_span_processor(processor).build())
}

/// Keeps the tracer provider alive; dropping it (or [`TelemetryGuard::shutdown`])
/// exports the spans still queued and stops the exporter.
///
/// Drop it on a multi-threaded Tokio runtime or outside any runtime: the
/// exporter's connection is driven by the runtime, so flushing from a
/// current-thread runtime's only thread can only wait out the timeout.
#[must_use = "dropping the guard shuts telemetry down"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    fn inactive() -> Self {
        Self { provider: None }
    }

    /// Whether this guard belongs to the call that installed the subscriber.
    /// Inactive guards (later [`init`] calls) do nothing when dropped.
    pub fn is_active(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports queued spans and stops the exporter, reporting failures that
    /// dropping the guard could only log.
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        match self.provider.take() {
            Some(provider) => shutdown_provider(&provider),
            None => Ok(()),
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = shutdown_provider(&provider)
        {
            tracing::warn!(%error, "flushing spans at shutdown failed");
        }
    }
}

fn shutdown_provider(provider: &SdkTracerProvider) -> Result<(), TelemetryError> {
    let shutdown = || provider.shutdown_with_timeout(crate::export::SHUTDOWN_WAIT);
    // The batch exporter's last export runs on the runtime; blocking a worker
    // thread without telling Tokio would stall the tasks it needs.
    let result = match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(shutdown)
        }
        _ => shutdown(),
    };
    match result {
        Ok(()) | Err(OTelSdkError::AlreadyShutdown) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn resolve(vars: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve("gateway", |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_log_compact_and_export_nothing() {
        let s = resolve(&[]);
        assert_eq!(s.service_name, "gateway");
        assert_eq!(s.log_filter, DEFAULT_LOG_FILTER);
        assert!(!s.json_logs);
        assert!(!s.otlp_export);
    }

    #[test]
    fn otel_service_name_beats_resource_attributes_and_argument() {
        let s = resolve(&[
            ("OTEL_SERVICE_NAME", "edge"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=attr,deployment.environment=prod",
            ),
        ]);
        assert_eq!(s.service_name, "edge");
        let s = resolve(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod, service.name = attr",
        )]);
        assert_eq!(s.service_name, "attr");
        let s = resolve(&[("OTEL_SERVICE_NAME", "")]);
        assert_eq!(s.service_name, "gateway");
    }

    #[test]
    fn endpoint_turns_export_on_unless_disabled() {
        assert!(resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317")]).otlp_export);
        assert!(
            resolve(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://jaeger:4317")]).otlp_export
        );
        assert!(!resolve(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]).otlp_export);
        assert!(
            !resolve(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ])
            .otlp_export
        );
        assert!(
            !resolve(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ])
            .otlp_export
        );
    }

    #[test]
    fn json_format_and_filters_come_from_the_environment() {
        let s = resolve(&[
            ("GAUNTLET_LOG_FORMAT", "JSON"),
            ("RUST_LOG", "debug"),
            ("GAUNTLET_TRACE_FILTER", "gauntlet_worker=trace"),
        ]);
        assert!(s.json_logs);
        assert_eq!(s.log_filter, "debug");
        assert_eq!(s.trace_filter, "gauntlet_worker=trace");
    }

    #[test]
    fn default_filters_parse() {
        parse_filter(LOG_FILTER_VAR, DEFAULT_LOG_FILTER).unwrap();
        parse_filter(TRACE_FILTER_VAR, DEFAULT_TRACE_FILTER).unwrap();
    }

    #[test]
    fn bad_filter_names_its_variable() {
        let err = parse_filter(LOG_FILTER_VAR, "info,gauntlet=loud")
            .unwrap_err()
            .to_string();
        assert!(err.contains("RUST_LOG"), "{err}");
    }
}
