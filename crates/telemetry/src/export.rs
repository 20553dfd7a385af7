//! The span processor that sends finished spans to the OTLP collector:
//! batched on a task of its own, never holding up the code that ends a
//! span, counting what it could not send, and giving up within
//! [`SHUTDOWN_WAIT`] at shutdown however the collector behaves.
//!
//! It also names each span's service. One process may run several services
//! (`gauntlet up`, and `gauntlet run` without `--server`); each entry point
//! marks its context with [`Service`], the spans under it inherit it (their
//! parent context carries it, or their parent span, local or across an
//! in-process call, had it), and each service's spans are exported under a
//! resource with its own `service.name`.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use opentelemetry::{
    Context,
    trace::{SpanId, TraceContextExt as _},
};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{Span, SpanData, SpanExporter as _, SpanProcessor},
};
use tokio::{runtime::Handle, sync::mpsc};

/// Longest the process waits at shutdown for its last spans to leave.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(1);

/// Marks a context (and every span started under it) as work of one
/// service: `Context::current().with_value(Service("gauntlet-worker"))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service(pub &'static str);

/// Batching limits, from the standard `OTEL_BSP_*` variables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Batching {
    /// Spans waiting to be sent; more are dropped (and counted).
    pub queue: usize,
    /// Spans per export request.
    pub batch: usize,
    /// Longest a span waits before its batch goes out.
    pub delay: Duration,
    /// Longest one export may take.
    pub timeout: Duration,
}

impl Batching {
    pub(crate) fn from_env(var: impl Fn(&str) -> Option<String>) -> Self {
        let number = |name: &str, default: u64| {
            var(name)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|v| *v > 0)
                .unwrap_or(default)
        };
        let queue = number("OTEL_BSP_MAX_QUEUE_SIZE", 8192) as usize;
        Self {
            queue,
            batch: (number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512) as usize).min(queue),
            delay: Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 1000)),
            timeout: Duration::from_millis(number("OTEL_BSP_EXPORT_TIMEOUT", 10_000)),
        }
    }
}

/// Builds the exporter for one service's spans.
pub(crate) type MakeExporter =
    Box<dyn Fn(&str) -> Option<opentelemetry_otlp::SpanExporter> + Send + Sync>;

/// Asks the sending task; it answers on the channel when done.
enum Control {
    Flush(std::sync::mpsc::SyncSender<()>),
    Shutdown(std::sync::mpsc::SyncSender<()>),
}

/// See the module documentation.
pub(crate) struct Exporting {
    spans: mpsc::Sender<(&'static str, SpanData)>,
    control: mpsc::UnboundedSender<Control>,
    /// The service of each started span not yet ended, for its children.
    open: Mutex<HashMap<SpanId, &'static str>>,
    default: &'static str,
    /// Whether [`Service`] marks name services; not when the environment
    /// named this process's service (`OTEL_SERVICE_NAME`).
    marks: bool,
    dropped_full: metrics::Counter,
}

impl std::fmt::Debug for Exporting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporting")
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl Exporting {
    /// Starts the sending task on `runtime`; `make` builds the exporter of
    /// a service (on that runtime) the first time it has spans.
    pub(crate) fn start(
        runtime: &Handle,
        default: &'static str,
        marks: bool,
        batching: Batching,
        make: MakeExporter,
    ) -> Self {
        let (spans, spans_rx) = mpsc::channel(batching.queue);
        let (control, control_rx) = mpsc::unbounded_channel();
        let dropped = |reason: &'static str| {
            let counter =
                metrics::counter!("gauntlet_trace_spans_dropped_total", "reason" => reason);
            // At 0 from the start, so a rule's increase() sees the first drop.
            counter.increment(0);
            counter
        };
        let sender = Sender {
            make,
            exporters: HashMap::new(),
            batching,
            exported: metrics::counter!("gauntlet_trace_spans_exported_total"),
            dropped_failed: dropped("export_failed"),
        };
        runtime.spawn(sender.run(spans_rx, control_rx));
        Self {
            spans,
            control,
            open: Mutex::new(HashMap::new()),
            default,
            marks,
            dropped_full: dropped("queue_full"),
        }
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<SpanId, &'static str>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the task and waits at most `wait` for its answer, blocking:
    /// the caller may be on the runtime the task needs (inside
    /// `block_in_place`, as the guard's drop is).
    fn ask(
        &self,
        make: impl FnOnce(std::sync::mpsc::SyncSender<()>) -> Control,
        wait: Duration,
    ) -> OTelSdkResult {
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        if self.control.send(make(done)).is_err() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        answer
            .recv_timeout(wait)
            .map_err(|_| OTelSdkError::Timeout(wait))
    }
}

impl SpanProcessor for Exporting {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        use opentelemetry::trace::Span as _;
        let id = span.span_context().span_id();
        let parent = cx.span().span_context().span_id();
        let mut open = self.open();
        let service = cx
            .get::<Service>()
            .filter(|_| self.marks)
            .map(|s| s.0)
            .or_else(|| open.get(&parent).copied())
            .unwrap_or(self.default);
        open.insert(id, service);
    }

    fn on_end(&self, span: SpanData) {
        let service = self
            .open()
            .remove(&span.span_context.span_id())
            .unwrap_or(self.default);
        if span.span_context.is_sampled() && self.spans.try_send((service, span)).is_err() {
            self.dropped_full.increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Control::Flush, SHUTDOWN_WAIT)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.ask(Control::Shutdown, timeout.min(SHUTDOWN_WAIT))
    }
}

/// The sending task's state.
struct Sender {
    make: MakeExporter,
    exporters: HashMap<&'static str, Option<opentelemetry_otlp::SpanExporter>>,
    batching: Batching,
    exported: metrics::Counter,
    dropped_failed: metrics::Counter,
}

impl Sender {
    async fn run(
        mut self,
        mut spans: mpsc::Receiver<(&'static str, SpanData)>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        let mut pending: HashMap<&'static str, Vec<SpanData>> = HashMap::new();
        let mut held = 0;
        let mut tick = tokio::time::interval(self.batching.delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                span = spans.recv() => match span {
                    Some((service, span)) => {
                        pending.entry(service).or_default().push(span);
                        held += 1;
                        if held >= self.batching.batch {
                            self.send(&mut pending).await;
                            held = 0;
                        }
                    }
                    None => break,
                },
                _ = tick.tick(), if held > 0 => {
                    self.send(&mut pending).await;
                    held = 0;
                }
                asked = control.recv() => match asked {
                    Some(Control::Flush(done)) => {
                        while let Ok((service, span)) = spans.try_recv() {
                            pending.entry(service).or_default().push(span);
                        }
                        self.send(&mut pending).await;
                        held = 0;
                        let _ = done.send(());
                    }
                    Some(Control::Shutdown(done)) => {
                        spans.close();
                        while let Ok((service, span)) = spans.try_recv() {
                            pending.entry(service).or_default().push(span);
                        }
                        self.send(&mut pending).await;
                        for exporter in self.exporters.values_mut().flatten() {
                            let _ = exporter.shutdown_with_timeout(SHUTDOWN_WAIT);
                        }
                        let _ = done.send(());
                        return;
                    }
                    None => break,
                },
            }
        }
        self.send(&mut pending).await;
    }

    /// Sends each service's pending spans; what cannot be sent is dropped
    /// and counted.
    async fn send(&mut self, pending: &mut HashMap<&'static str, Vec<SpanData>>) {
        for (service, spans) in pending.iter_mut() {
            if spans.is_empty() {
                continue;
            }
            let batch = std::mem::take(spans);
            let n = batch.len() as u64;
            let exporter = self
                .exporters
                .entry(service)
                .or_insert_with(|| (self.make)(service));
            let sent = match exporter {
                Some(exporter) => {
                    tokio::time::timeout(self.batching.timeout, exporter.export(batch)).await
                }
                None => Ok(Err(OTelSdkError::InternalFailure("no exporter".into()))),
            };
            match sent {
                Ok(Ok(())) => self.exported.increment(n),
                Ok(Err(error)) => {
                    self.dropped_failed.increment(n);
                    tracing::debug!(%error, spans = n, "exporting spans failed");
                }
                Err(_) => {
                    self.dropped_failed.increment(n);
                    tracing::debug!(spans = n, "exporting spans timed out");
                }
            }
        }
    }
}

/// A resource for `service`: `base` with its `service.name`.
pub(crate) fn resource_for(base: &Resource, service: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes(
            base.iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(service.to_owned())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_reads_the_standard_variables_and_keeps_defaults_for_bad_ones() {
        let vars: HashMap<&str, &str> = [
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
        ]
        .into();
        let b = Batching::from_env(|name| vars.get(name).map(|v| v.to_string()));
        assert_eq!(b.queue, 100);
        // A batch is never larger than the queue.
        assert_eq!(b.batch, 100);
        assert_eq!(b.delay, Duration::from_millis(1000));
        assert_eq!(b.timeout, Duration::from_millis(10_000));
    }
}
