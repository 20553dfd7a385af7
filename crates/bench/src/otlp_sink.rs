//! `gauntlet-bench otlp-sink`: an OTLP/gRPC trace receiver that counts what
//! it gets and keeps nothing, for measuring what exporting spans costs a
//! run (point `OTEL_EXPORTER_OTLP_ENDPOINT` at it).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

#[derive(Debug, clap::Args)]
pub struct SinkArgs {
    /// Where to take OTLP/gRPC.
    #[arg(long, default_value = "127.0.0.1:4317")]
    pub listen: SocketAddr,
}

#[derive(Clone, Default)]
struct Sink {
    spans: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves until interrupted, printing the spans received each second they
/// change.
pub async fn run(args: SinkArgs) -> anyhow::Result<()> {
    let sink = Sink::default();
    let counts = sink.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let spans = counts.spans.load(Ordering::Relaxed);
            if spans != last {
                eprintln!(
                    "otlp-sink: {spans} spans in {} requests",
                    counts.requests.load(Ordering::Relaxed)
                );
                last = spans;
            }
        }
    });
    eprintln!("otlp-sink: listening on {}", args.listen);
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink))
        .serve_with_shutdown(args.listen, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
