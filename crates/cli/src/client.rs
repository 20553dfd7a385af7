//! Talking to a Gauntlet gateway (a remote one, or the embedded stack on
//! loopback): connecting with a clear error, the message limits, streamed
//! submission and streamed report documents.

use std::time::Duration;

use anyhow::Context;
use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1::{
    self, admin_service_client::AdminServiceClient,
    analytics_service_client::AnalyticsServiceClient, report_service_client::ReportServiceClient,
    run_service_client::RunServiceClient,
};
use gauntlet_service::{MessageLimits, limited};
use tonic::transport::{Channel, Endpoint};

/// The `grpc` section of the configuration (`GAUNTLET_GRPC__*`), which the
/// services read too, so the CLI sends nothing they refuse. `remote` is
/// false for the embedded stack on loopback, where gzip would only cost CPU.
pub fn limits(config: &GauntletConfig, remote: bool) -> MessageLimits {
    MessageLimits {
        gzip: remote && config.grpc.gzip,
        ..MessageLimits::new(&config.grpc)
    }
}

/// The gateway's services over one channel, with the message limits applied.
#[derive(Clone)]
pub struct Gateway {
    pub runs: RunServiceClient<Channel>,
    pub analytics: AnalyticsServiceClient<Channel>,
    pub reports: ReportServiceClient<Channel>,
    pub admin: AdminServiceClient<Channel>,
    pub limits: MessageLimits,
}

impl Gateway {
    pub fn new(channel: Channel, limits: MessageLimits) -> Self {
        Self {
            runs: limited!(RunServiceClient::new(channel.clone()), limits),
            analytics: limited!(AnalyticsServiceClient::new(channel.clone()), limits),
            reports: limited!(ReportServiceClient::new(channel.clone()), limits),
            admin: limited!(AdminServiceClient::new(channel), limits),
            limits,
        }
    }

    /// Connects to a remote gateway with `config`'s limits.
    pub async fn connect(url: &str, config: &GauntletConfig) -> anyhow::Result<Self> {
        Ok(Self::new(connect(url).await?, limits(config, true)))
    }

    /// Submits a suite of any size up to the gateway's suite limit, in
    /// chunks that each fit in one message.
    pub async fn submit(
        &mut self,
        suite: String,
        format: v1::SuiteFormat,
        options: v1::RunOptions,
    ) -> Result<v1::SubmitRunResponse, tonic::Status> {
        use v1::submit_run_chunk::Part;
        let bytes = std::sync::Arc::new(suite.into_bytes());
        let chunk = SUBMIT_CHUNK.min(self.limits.payload_budget()).max(1);
        let header = v1::SubmitRunChunk {
            part: Some(Part::Header(v1::SubmitRunHeader {
                format: format as i32,
                options: Some(options),
                suite_bytes: bytes.len() as u64,
            })),
        };
        let len = bytes.len();
        let data = (0..len).step_by(chunk).map(move |at| v1::SubmitRunChunk {
            part: Some(Part::Data(bytes[at..(at + chunk).min(len)].to_vec())),
        });
        let messages = futures::stream::iter(std::iter::once(header).chain(data));
        self.runs
            .submit_run_stream(messages)
            .await
            .map(tonic::Response::into_inner)
    }

    /// A ready report's document, whether it came inline or must be streamed.
    pub async fn report_content(&mut self, report: v1::Report) -> anyhow::Result<Vec<u8>> {
        if !report.content.is_empty() || report.content_bytes == 0 {
            return Ok(report.content.into_bytes());
        }
        let mut stream = self
            .reports
            .read_report(v1::GetReportRequest {
                report_id: report.id.clone(),
            })
            .await
            .map_err(|s| status_message("read report", &s))?
            .into_inner();
        let mut out = Vec::with_capacity(report.content_bytes.min(1 << 30) as usize);
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| status_message("read report", &s))?
        {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }
}

/// Bytes of suite per `SubmitRunStream` message.
const SUBMIT_CHUNK: usize = 1024 * 1024;

/// Connects to the gateway at `url`, failing fast with one clear line.
pub async fn connect(url: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("`{url}` is not a valid server URL (expected http://HOST:PORT)"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    endpoint.connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the Gauntlet server at {url}: {}",
            root_cause(&e)
        )
    })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A gRPC status as a user-facing message.
pub fn status_message(what: &str, s: &tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition => {
            anyhow::anyhow!("{}", s.message())
        }
        tonic::Code::Unavailable => anyhow::anyhow!("{what}: server unavailable: {}", s.message()),
        _ => anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code()),
    }
}
