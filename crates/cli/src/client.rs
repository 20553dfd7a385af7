//! Talking to a Gauntlet gateway (a remote one, or the embedded stack on
//! loopback): connecting with a clear error, and reading whole result sets.

use std::time::Duration;

use anyhow::Context;
use gauntlet_proto::v1::{self, run_service_client::RunServiceClient};
use tonic::transport::{Channel, Endpoint};

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
        tonic::Code::InvalidArgument => anyhow::anyhow!("{}", s.message()),
        tonic::Code::NotFound => anyhow::anyhow!("{}", s.message()),
        tonic::Code::Unavailable => anyhow::anyhow!("{what}: server unavailable: {}", s.message()),
        _ => anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code()),
    }
}

/// Every result of a run, in task order.
pub async fn all_results(
    runs: &mut RunServiceClient<Channel>,
    run_id: &str,
) -> anyhow::Result<Vec<v1::Result>> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = runs
            .list_results(v1::ListResultsRequest {
                run_id: run_id.into(),
                status: v1::ResultStatus::Unspecified as i32,
                page_size: 1000,
                page_token: token,
            })
            .await
            .map_err(|s| status_message("list results", &s))?
            .into_inner();
        out.extend(page.results);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}
