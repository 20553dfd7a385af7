//! Gauntlet's observability plumbing: the process-wide `tracing` registry with
//! optional OTLP export ([`init`]), W3C trace-context propagation that any
//! transport can carry ([`propagation`]), the gRPC client interceptor and
//! server layer built on it ([`grpc`]), and metrics in the Prometheus text
//! format ([`metrics`], with the gRPC server's in [`grpc_metrics`]).

mod export;
pub mod grpc;
pub mod grpc_metrics;
pub mod metrics;
pub mod propagation;
mod setup;

pub use export::Service;

pub use propagation::set_attribute;

pub use setup::{DEFAULT_LOG_FILTER, TelemetryGuard, exporting, init, init_with_log_filter};

/// The variable holding a link template for traces, e.g.
/// `http://localhost:16686/trace/{trace_id}` (Jaeger's UI).
pub const TRACE_URL_VAR: &str = "GAUNTLET_TRACE_URL";

/// The link to `trace_id` that `GAUNTLET_TRACE_URL` makes, its
/// `{trace_id}` replaced (or the id appended when the template has none).
/// None when the variable or the id is empty.
pub fn trace_link(trace_id: &str) -> Option<String> {
    let template = std::env::var(TRACE_URL_VAR).ok()?;
    link_from(template.trim(), trace_id)
}

fn link_from(template: &str, trace_id: &str) -> Option<String> {
    if template.is_empty() || trace_id.is_empty() {
        return None;
    }
    Some(if template.contains("{trace_id}") {
        template.replace("{trace_id}", trace_id)
    } else {
        format!("{template}{trace_id}")
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_trace_link_fills_the_template() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            super::link_from("http://localhost:16686/trace/{trace_id}", id).as_deref(),
            Some("http://localhost:16686/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(
            super::link_from("http://j/trace/", id).as_deref(),
            Some("http://j/trace/4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(super::link_from("", id), None);
        assert_eq!(super::link_from("http://j/{trace_id}", ""), None);
    }
}

/// Everything that can go wrong while setting up or tearing down telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A log or trace filter variable holds directives `EnvFilter` rejects.
    #[error("environment variable {var}: invalid filter `{directives}`: {message}")]
    Filter {
        var: &'static str,
        directives: String,
        message: String,
    },
    /// The tonic OTLP exporter spawns its connection onto the current Tokio
    /// runtime, so it cannot be built outside one.
    #[error(
        "OTEL_EXPORTER_OTLP_ENDPOINT is set but init was called outside a Tokio runtime; \
         call it from inside one"
    )]
    NoRuntime,
    #[error("building the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("shutting down the tracer provider: {0}")]
    Shutdown(#[from] opentelemetry_sdk::error::OTelSdkError),
    #[error("metrics endpoint: {0}")]
    Io(#[from] std::io::Error),
}
