//! Gauntlet's observability plumbing: the process-wide `tracing` registry with
//! optional OTLP export ([`init`]), W3C trace-context propagation that any
//! transport can carry ([`propagation`]), the gRPC client interceptor and
//! server layer built on it ([`grpc`]), and metrics in the Prometheus text
//! format ([`metrics`], with the gRPC server's in [`grpc_metrics`]).

pub mod grpc;
pub mod grpc_metrics;
pub mod metrics;
pub mod propagation;
mod setup;

pub use setup::{DEFAULT_LOG_FILTER, TelemetryGuard, init, init_with_log_filter};

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
