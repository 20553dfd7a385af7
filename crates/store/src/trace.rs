//! A CLIENT span per store call, with the OpenTelemetry database
//! conventions: `db.system.name`, `db.operation.name` and
//! `db.collection.name` (never the statement's parameters).

use std::future::Future;

use tracing::{Instrument as _, Span, field::Empty};

/// The span of one store call, or none outside a traced span: the
/// monitor's and the metrics' periodic reads would otherwise each start a
/// trace of their own.
pub(crate) fn db_span(
    system: &'static str,
    operation: &'static str,
    collection: &'static str,
) -> Span {
    if !gauntlet_telemetry::propagation::spans_wanted() {
        return Span::none();
    }
    tracing::info_span!(
        "db.query",
        otel.name = %format_args!("{operation} {collection}"),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        db.system.name = system,
        db.operation.name = operation,
        db.collection.name = collection,
    )
}

/// Runs `call` in `span`, marking the span failed when the call fails.
pub(crate) async fn traced<T>(
    span: Span,
    call: impl Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    let result = call.instrument(span.clone()).await;
    if let Err(error) = &result {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", error.to_string().as_str());
    }
    result
}
