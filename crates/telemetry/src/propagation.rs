//! W3C trace-context propagation as plain `(name, value)` pairs, so any
//! transport can carry it: gRPC metadata ([`crate::grpc`]), AMQP headers (the
//! bus converts the pairs to and from its field tables), HTTP headers.
//!
//! Always the W3C `traceparent`/`tracestate` format, independent of the
//! global propagator, so both ends agree even where [`crate::init`] never ran.

use std::collections::HashMap;

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header carrying trace id, parent span id and flags.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";
/// A `traceparent` value that work should link to, not continue: a message
/// carrying it starts a trace of its own ([`as_link`]).
pub const LINK: &str = "gauntlet-link";

/// `pairs` with the trace context turned into a [`LINK`]: the receiver
/// starts a new trace that links to this one.
pub fn as_link(pairs: &[(String, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .filter(|(k, _)| k != TRACESTATE)
        .map(|(k, v)| {
            if k == TRACEPARENT {
                (LINK.to_owned(), v.clone())
            } else {
                (k.clone(), v.clone())
            }
        })
        .collect()
}

/// The context a [`LINK`] among `pairs` names (no valid span when none).
pub fn extract_link<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Context {
    let link = pairs
        .into_iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(LINK))
        .map(|(_, v)| v);
    match link {
        Some(value) => extract([(TRACEPARENT, value)]),
        None => Context::new(),
    }
}

/// The trace context of the current `tracing` span, as W3C header pairs.
/// Empty when there is no current span or no OpenTelemetry layer.
pub fn inject_current() -> Vec<(String, String)> {
    if let Ok(pairs) = UNSAMPLED.try_with(inject_context) {
        return pairs;
    }
    inject_context(&tracing::Span::current().context())
}

tokio::task_local! {
    /// Set while work the sampling left out runs: the context it passes on.
    static UNSAMPLED: Context;
}

/// Runs `work` as work the sampling left out: it makes no spans of its own
/// ([`spans_wanted`] is false in it), and what it calls sees `cx` (an
/// unsampled context: the trace id, flags `00`).
pub async fn unsampled<F: std::future::Future>(cx: Context, work: F) -> F::Output {
    UNSAMPLED.scope(cx, work).await
}

/// Whether fine-grained spans (a task's, a model call's, a store or Redis
/// call's) are worth making here: spans leave this process, the current
/// work was not left out by the sampling, and there is a traced span to
/// hang them under. Making them costs microseconds each, which a 100,000-task
/// run feels.
pub fn spans_wanted() -> bool {
    crate::exporting() && UNSAMPLED.try_with(|_| ()).is_err() && !tracing::Span::current().is_none()
}

/// The trace context of `cx` as W3C header pairs (`traceparent`, and
/// `tracestate` when it is not empty). Empty when `cx` holds no valid span.
pub fn inject_context(cx: &Context) -> Vec<(String, String)> {
    let mut pairs = Pairs(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(cx, &mut pairs);
    pairs.0
}

/// Writes the W3C pairs of `cx` into HTTP `headers` (a gRPC request's, a
/// vendor call's), replacing any already there.
pub fn inject_into(cx: &Context, headers: &mut http::HeaderMap) {
    for (name, value) in inject_context(cx) {
        // The propagator emits only valid header names and values; a pair
        // that somehow is not is dropped rather than failing the call.
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
}

/// [`inject_into`] with the current context ([`inject_current`]'s).
pub fn inject_current_into(headers: &mut http::HeaderMap) {
    if let Ok(()) = UNSAMPLED.try_with(|cx| inject_into(cx, headers)) {
        return;
    }
    inject_into(&tracing::Span::current().context(), headers);
}

/// A context carrying the remote span described by W3C header pairs. Names
/// are matched case-insensitively; a missing or malformed `traceparent`
/// yields a context without a valid span.
pub fn extract<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Context {
    let headers = Headers(
        pairs
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect(),
    );
    TraceContextPropagator::new().extract(&headers)
}

/// Makes the remote span in `cx` the parent of `span`.
///
/// Call it before the span is first entered; the parent of a started span
/// cannot change. A `cx` without a valid span is ignored, so a message that
/// arrived without trace context keeps the span's local parent instead of
/// starting a new trace.
pub fn set_parent(span: &tracing::Span, cx: Context) {
    if !cx.span().span_context().is_valid() {
        return;
    }
    // Fails only where there is no OpenTelemetry layer or the span is already
    // started; either way the span simply keeps its local parent.
    let _ = span.set_parent(cx);
}

/// Sets `key = value` on the OpenTelemetry span of the current `tracing`
/// span (in a gRPC handler: the request's SERVER span). Attributes not
/// declared as fields are set this way; numbers stay numbers.
pub fn set_attribute(key: &'static str, value: impl Into<opentelemetry::Value>) {
    tracing::Span::current().set_attribute(key, value);
}

/// The current span's W3C `traceparent` (`00-<trace>-<span>-<flags>`), to
/// keep with work that later spans link to; None outside a traced span.
pub fn current_traceparent() -> Option<String> {
    inject_current()
        .into_iter()
        .find(|(name, _)| name == TRACEPARENT)
        .map(|(_, value)| value)
}

/// Links the current span to the span a `traceparent` names (a run's
/// submission, kept with the run): work done later for a run, in a trace of
/// its own, leads back to the run's. A malformed or empty value adds no link.
pub fn link_current_to(traceparent: &str) {
    let cx = extract([(TRACEPARENT, traceparent)]);
    let remote = cx.span().span_context().clone();
    let current = tracing::Span::current();
    // Work already in the run's trace needs no link to it.
    if remote.is_valid() && current.context().span().span_context().trace_id() != remote.trace_id()
    {
        current.add_link(remote);
    }
}

/// Makes `span` the entry point of `service`'s work: its parent is the
/// remote span in `cx` (or none), and it and everything under it are
/// exported under `service`'s name ([`crate::Service`]), also where one
/// process runs several services. Call it before the span is first entered.
pub fn set_parent_in(service: &'static str, span: &tracing::Span, cx: Context) {
    let cx = if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::new()
    };
    let _ = span.set_parent(cx.with_value(crate::Service(service)));
}

/// The trace id of the current span in its W3C hex form, for log lines and
/// error messages that a user can paste into Jaeger.
pub fn current_trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

struct Pairs(Vec<(String, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACESTATE && value.is_empty() {
            return;
        }
        self.0.push((key.to_owned(), value));
    }
}

struct Headers<'a>(HashMap<String, &'a str>);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).copied()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// A subscriber with an OpenTelemetry layer whose provider exports
    /// nothing: enough for spans to carry ids.
    fn subscriber() -> impl tracing::Subscriber + Send + Sync {
        let provider = SdkTracerProvider::builder().build();
        tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
    }

    const TRACEPARENT_VALUE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn injected_context_extracts_to_the_same_trace() {
        tracing::subscriber::with_default(subscriber(), || {
            let span = tracing::info_span!("publish");
            let _entered = span.enter();
            let pairs = inject_current();
            let sent = span.context().span().span_context().clone();
            assert!(sent.is_valid());

            let received = extract(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let received = received.span().span_context().clone();
            assert_eq!(received.trace_id(), sent.trace_id());
            assert_eq!(received.span_id(), sent.span_id());
            assert!(received.is_remote());
            assert_eq!(
                current_trace_id().as_deref(),
                Some(sent.trace_id().to_string().as_str())
            );
        });
    }

    #[test]
    fn extracted_parent_carries_the_trace_into_a_new_span() {
        tracing::subscriber::with_default(subscriber(), || {
            let cx = extract([("TraceParent", TRACEPARENT_VALUE), ("x-other", "1")]);
            let span = tracing::info_span!("process");
            set_parent(&span, cx);
            let _entered = span.enter();

            let pairs = inject_current();
            let traceparent = &pairs.iter().find(|(k, _)| k == TRACEPARENT).unwrap().1;
            assert!(
                traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
                "{traceparent}"
            );
            // The new span is a child, not the remote span itself.
            assert!(!traceparent.contains("00f067aa0ba902b7"), "{traceparent}");
        });
    }

    #[test]
    fn missing_context_keeps_the_local_parent() {
        tracing::subscriber::with_default(subscriber(), || {
            let outer = tracing::info_span!("consumer");
            let _outer = outer.enter();
            let outer_trace = outer.context().span().span_context().trace_id();

            let inner = tracing::info_span!("process");
            set_parent(&inner, extract([("traceparent", "garbage")]));
            let _inner = inner.enter();
            assert_eq!(
                inner.context().span().span_context().trace_id(),
                outer_trace
            );
        });
    }

    #[test]
    fn tracestate_travels_with_traceparent() {
        let cx = extract([
            ("traceparent", TRACEPARENT_VALUE),
            ("tracestate", "vendor=abc"),
        ]);
        let sc = cx.span().span_context().clone();
        assert_eq!(
            sc.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
        );
        assert_eq!(sc.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
        let pairs = inject_context(&cx);
        assert_eq!(
            pairs,
            vec![
                (TRACEPARENT.to_owned(), TRACEPARENT_VALUE.to_owned()),
                (TRACESTATE.to_owned(), "vendor=abc".to_owned()),
            ]
        );
    }

    #[test]
    fn nothing_is_injected_outside_a_traced_span() {
        assert!(inject_current().is_empty());
        assert!(inject_context(&Context::new()).is_empty());
        assert_eq!(current_trace_id(), None);
    }
}
