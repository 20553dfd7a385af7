//! Talking to a Gauntlet gateway (a remote one, or the embedded stack on
//! loopback): connecting with a clear error, the message limits, streamed
//! submission (a suite's text, or its tests as normalized JSON lines while
//! they are parsed) and streamed report documents.

use std::time::Duration;

use futures::{Stream, StreamExt};
use gauntlet_config::{GauntletConfig, GrpcConfig};
use gauntlet_core::{
    Suite, TestCase,
    parse::{normalized_header_line, normalized_test_line},
};
use gauntlet_proto::v1::{
    self, access_service_client::AccessServiceClient, admin_service_client::AdminServiceClient,
    analytics_service_client::AnalyticsServiceClient, monitor_service_client::MonitorServiceClient,
    report_service_client::ReportServiceClient, run_service_client::RunServiceClient,
};
use gauntlet_service::{MessageLimits, limited};
use tonic::transport::{Channel, Endpoint};

/// The CLI's connection: every call runs in a CLIENT span whose context the
/// gateway continues, so one command is one trace.
pub type Conn = gauntlet_telemetry::grpc::TraceClient<Authorized<Channel>>;

/// The API key every call of this process sends (`--api-key`,
/// GAUNTLET_API_KEY), set once at start.
static API_KEY: std::sync::OnceLock<http::HeaderValue> = std::sync::OnceLock::new();

/// Sends `key` as `authorization: Bearer <key>` on every call from now on.
pub fn set_api_key(key: &str) -> anyhow::Result<()> {
    let _ = API_KEY.set(bearer(key)?);
    Ok(())
}

/// A channel whose calls carry an API key: its own, else the process's,
/// if there is one.
#[derive(Clone, Debug)]
pub struct Authorized<S> {
    inner: S,
    key: Option<http::HeaderValue>,
}

impl<S> Authorized<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, key: None }
    }
}

/// The header value of `key`.
fn bearer(key: &str) -> anyhow::Result<http::HeaderValue> {
    let mut value: http::HeaderValue = format!("Bearer {}", key.trim()).parse().map_err(|_| {
        anyhow::anyhow!("--api-key: not a key (it has characters a header cannot carry)")
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl<S, B> tower::Service<http::Request<B>> for Authorized<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(key) = self.key.as_ref().or(API_KEY.get()) {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, key.clone());
        }
        self.inner.call(request)
    }
}

/// A connection over `channel`.
pub fn conn(channel: Channel) -> Conn {
    Conn::new(Authorized::new(channel))
}

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
    pub runs: RunServiceClient<Conn>,
    pub analytics: AnalyticsServiceClient<Conn>,
    pub reports: ReportServiceClient<Conn>,
    pub admin: AdminServiceClient<Conn>,
    pub access: AccessServiceClient<Conn>,
    pub monitor: MonitorServiceClient<Conn>,
    pub limits: MessageLimits,
}

impl Gateway {
    pub fn new(channel: Channel, limits: MessageLimits) -> Self {
        Self::build(channel, limits, None)
    }

    /// The gateway's services as `key` calls them, whatever key this
    /// process sends otherwise (a tool acting for several projects).
    pub fn with_key(channel: Channel, limits: MessageLimits, key: &str) -> anyhow::Result<Self> {
        Ok(Self::build(channel, limits, Some(bearer(key)?)))
    }

    fn build(channel: Channel, limits: MessageLimits, key: Option<http::HeaderValue>) -> Self {
        let conn = |channel: Channel| {
            Conn::new(Authorized {
                inner: channel,
                key: key.clone(),
            })
        };
        Self {
            runs: limited!(RunServiceClient::new(conn(channel.clone())), limits),
            analytics: limited!(AnalyticsServiceClient::new(conn(channel.clone())), limits),
            reports: limited!(ReportServiceClient::new(conn(channel.clone())), limits),
            admin: limited!(AdminServiceClient::new(conn(channel.clone())), limits),
            access: limited!(AccessServiceClient::new(conn(channel.clone())), limits),
            monitor: limited!(MonitorServiceClient::new(conn(channel)), limits),
            limits,
        }
    }

    /// Connects to a remote gateway with `config`'s limits.
    pub async fn connect(url: &str, config: &GauntletConfig) -> anyhow::Result<Self> {
        Ok(Self::new(
            connect(url, &config.grpc).await?,
            limits(config, true),
        ))
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
        let chunk = chunk_size(&self.limits);
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

    /// Submits a suite as normalized JSON lines
    /// (`SUITE_FORMAT_NORMALIZED_JSON_LINES`, size not declared) from
    /// `chunks` as they come (see [`encode_lines`]), so the suite is parsed
    /// while it is uploaded and never held whole; its [`Lines::End`] is
    /// the trailer. An `Err` (the suite broke off) ends the upload with an
    /// abort in place of the trailer, carrying the error's text: the
    /// gateway refuses the suite, and a run it had already opened fails
    /// with that text as its reason. The error is returned, once the
    /// gateway has answered, as [`SubmitError::Suite`].
    pub async fn submit_lines<S>(
        &mut self,
        chunks: S,
        options: v1::RunOptions,
    ) -> Result<v1::SubmitRunResponse, SubmitError>
    where
        S: Stream<Item = anyhow::Result<Lines>> + Send + 'static,
    {
        use v1::submit_run_chunk::Part;
        let header = v1::SubmitRunChunk {
            part: Some(Part::Header(v1::SubmitRunHeader {
                format: v1::SuiteFormat::NormalizedJsonLines as i32,
                options: Some(options),
                suite_bytes: 0,
            })),
        };
        let (broke, mut broken) = tokio::sync::oneshot::channel();
        let data = futures::stream::unfold(
            (Box::pin(chunks), Some(broke)),
            |(mut chunks, mut broke)| async move {
                // After an abort, `broke` is spent and the stream ends.
                let sender = broke.take()?;
                let part = match chunks.next().await? {
                    Ok(Lines::Data(bytes)) => Part::Data(bytes),
                    Ok(Lines::End { tests }) => Part::Trailer(v1::SubmitRunTrailer { tests }),
                    Err(err) => {
                        let reason = format!("{err:#}");
                        let _ = sender.send(err);
                        return Some((
                            v1::SubmitRunChunk {
                                part: Some(Part::Abort(reason)),
                            },
                            (chunks, None),
                        ));
                    }
                };
                Some((
                    v1::SubmitRunChunk { part: Some(part) },
                    (chunks, Some(sender)),
                ))
            },
        );
        let response = self
            .runs
            .submit_run_stream(futures::stream::iter([header]).chain(data))
            .await;
        if let Ok(err) = broken.try_recv() {
            return Err(SubmitError::Suite(err));
        }
        response
            .map(tonic::Response::into_inner)
            .map_err(SubmitError::Status)
    }

    /// Writes a ready report's document to `out` as it arrives, whether it
    /// came inline or must be streamed (a chunk at a time: the document is
    /// never held whole). Returns the bytes written.
    pub async fn write_report(
        &mut self,
        report: v1::Report,
        out: &mut (dyn std::io::Write + Send),
    ) -> anyhow::Result<u64> {
        if !report.content.is_empty() || report.content_bytes == 0 {
            out.write_all(report.content.as_bytes())?;
            return Ok(report.content.len() as u64);
        }
        let mut stream = self
            .reports
            .read_report(v1::GetReportRequest {
                report_id: report.id.clone(),
            })
            .await
            .map_err(|s| status_message("read report", &s))?
            .into_inner();
        let mut written = 0u64;
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| status_message("read report", &s))?
        {
            out.write_all(&chunk.data)?;
            written += chunk.data.len() as u64;
        }
        anyhow::ensure!(
            written == report.content_bytes,
            "report {} arrived with {written} of its {} bytes",
            report.id,
            report.content_bytes
        );
        Ok(written)
    }
}

/// Bytes of suite per `SubmitRunStream` message.
const SUBMIT_CHUNK: usize = 1024 * 1024;

/// Bytes of suite per `SubmitRunStream` message under `limits`.
pub fn chunk_size(limits: &MessageLimits) -> usize {
    SUBMIT_CHUNK.min(limits.payload_budget()).max(1)
}

/// Why [`Gateway::submit_lines`] started no run.
#[derive(Debug)]
pub enum SubmitError {
    /// The suite broke off while it was read (the call was cancelled).
    Suite(anyhow::Error),
    /// The gateway refused the suite, or could not be reached.
    Status(tonic::Status),
}

/// A suite in normalized JSON lines, as [`encode_lines`] hands it on.
#[derive(Debug, PartialEq)]
pub enum Lines {
    /// The next bytes of text.
    Data(Vec<u8>),
    /// The end: how many test lines there were (the upload's trailer).
    End { tests: u64 },
}

/// Writes a suite as normalized JSON lines (`header`'s line, then a line
/// per test) in chunks of `chunk` bytes (the last one shorter), handing
/// each to `send` as soon as it is full, then [`Lines::End`]; `send`
/// answers false when nobody takes them any more. A test's error is handed
/// on (after the lines before it, whole) in place of the rest and ends the
/// suite without [`Lines::End`]. Returns how many tests were written.
pub fn encode_lines(
    header: &Suite,
    tests: impl Iterator<Item = anyhow::Result<TestCase>>,
    chunk: usize,
    send: impl FnMut(anyhow::Result<Lines>) -> bool,
) -> u64 {
    let chunk = chunk.max(1);
    let mut out = Chunks {
        size: FIRST_CHUNK.min(chunk),
        chunk,
        buf: Vec::new(),
        send,
    };
    if !out.write(normalized_header_line(header).as_bytes()) {
        return 0;
    }
    let mut written = 0;
    for test in tests {
        match test {
            Ok(test) => {
                if !out.write(b"\n") || !out.write(normalized_test_line(&test).as_bytes()) {
                    return written;
                }
                written += 1;
            }
            Err(err) => {
                // Whole lines first, so the gateway hears of an upload cut
                // short, not of a broken line.
                if out.buf.is_empty() || (out.send)(Ok(Lines::Data(out.buf))) {
                    (out.send)(Err(err));
                }
                return written;
            }
        }
    }
    if out.buf.is_empty() || (out.send)(Ok(Lines::Data(out.buf))) {
        (out.send)(Ok(Lines::End { tests: written }));
    }
    written
}

/// Bytes of the first chunk: the first tests reach the gateway (which
/// opens the run at its first few) without waiting for a whole chunk to be
/// read; each chunk after doubles, up to the full size.
const FIRST_CHUNK: usize = 16 * 1024;

/// Bytes gathered into chunks, each twice the last up to `chunk`.
struct Chunks<F> {
    /// The size of the chunk being gathered.
    size: usize,
    chunk: usize,
    buf: Vec<u8>,
    send: F,
}

impl<F: FnMut(anyhow::Result<Lines>) -> bool> Chunks<F> {
    /// False once `send` refused a chunk.
    fn write(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.buf.capacity() == 0 {
                self.buf.reserve_exact(self.size);
            }
            let (now, later) = bytes.split_at((self.size - self.buf.len()).min(bytes.len()));
            self.buf.extend_from_slice(now);
            bytes = later;
            if self.buf.len() == self.size {
                self.size = self.size.saturating_mul(2).min(self.chunk);
                if !(self.send)(Ok(Lines::Data(std::mem::take(&mut self.buf)))) {
                    return false;
                }
            }
        }
        true
    }
}

/// One `ListResults` page: up to `page_size` of a run's stored results
/// (those of `status`, or all with `ResultStatus::Unspecified`) after the
/// task of `page_token` (empty: from the first), in task order.
pub async fn result_page(
    runs: &mut RunServiceClient<Conn>,
    run_id: &str,
    status: v1::ResultStatus,
    page_size: u32,
    page_token: String,
) -> Result<v1::ListResultsResponse, tonic::Status> {
    runs.list_results(v1::ListResultsRequest {
        run_id: run_id.to_owned(),
        status: status as i32,
        page_size,
        page_token,
    })
    .await
    .map(tonic::Response::into_inner)
}

/// Every [`result_page`] of a run in turn, as a stream: however large the
/// run, one page is held at a time. Ends after the last page, or with the
/// first error.
pub fn result_pages(
    runs: RunServiceClient<Conn>,
    run_id: String,
    status: v1::ResultStatus,
    page_size: u32,
) -> impl Stream<Item = Result<v1::ListResultsResponse, tonic::Status>> {
    futures::stream::try_unfold(Some(String::new()), move |token| {
        let mut runs = runs.clone();
        let run_id = run_id.clone();
        async move {
            let Some(token) = token else {
                return Ok(None);
            };
            let page = result_page(&mut runs, &run_id, status, page_size, token).await?;
            let next = (!page.next_page_token.is_empty()).then(|| page.next_page_token.clone());
            Ok(Some((page, next)))
        }
    })
}

/// Connects to the gateway at `url`, failing fast with one clear line:
/// TLS for `https://` (trusting `grpc.tls_ca`, the `--ca-cert`, else the
/// public roots; presenting `grpc.tls_cert`/`tls_key` when set).
pub async fn connect(url: &str, grpc: &GrpcConfig) -> anyhow::Result<Channel> {
    if Endpoint::from_shared(url.to_string()).is_err() {
        anyhow::bail!(
            "`{url}` is not a valid server URL (expected http://HOST:PORT or https://HOST:PORT)"
        );
    }
    let endpoint = gauntlet_service::tls::endpoint("--server", url, grpc)?
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

#[cfg(test)]
mod tests {
    use gauntlet_core::{SuiteFormat, parse_suite};

    use super::*;

    fn suite(n: usize) -> Suite {
        let mut yaml = String::from("prompts: ['Say {{w}}']\nproviders: [echo]\ntests:\n");
        for i in 0..n {
            yaml.push_str(&format!("  - vars: {{w: word {i}}}\n"));
        }
        parse_suite(&yaml, SuiteFormat::Yaml).unwrap()
    }

    /// Everything `encode_lines` hands on, and how many tests it wrote.
    fn encoded(
        suite: &Suite,
        tests: Vec<anyhow::Result<TestCase>>,
        chunk: usize,
    ) -> (Vec<anyhow::Result<Lines>>, u64) {
        let header = Suite {
            tests: Vec::new(),
            ..suite.clone()
        };
        let mut out = Vec::new();
        let written = encode_lines(&header, tests.into_iter(), chunk, |c| {
            out.push(c);
            true
        });
        (out, written)
    }

    fn text(parts: &[anyhow::Result<Lines>]) -> String {
        let mut bytes = Vec::new();
        for part in parts {
            if let Ok(Lines::Data(data)) = part {
                bytes.extend_from_slice(data);
            }
        }
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn chunks_add_up_to_the_header_line_and_a_line_per_test_then_the_count() {
        let suite = suite(50);
        let (parts, written) = encoded(&suite, suite.tests.iter().cloned().map(Ok).collect(), 100);
        assert_eq!(written, 50);
        let (last, data) = parts.split_last().unwrap();
        assert_eq!(last.as_ref().unwrap(), &Lines::End { tests: 50 });
        for part in data {
            let Ok(Lines::Data(bytes)) = part else {
                panic!("{part:?}")
            };
            assert!(!bytes.is_empty() && bytes.len() <= 100);
        }
        let mut want = normalized_header_line(&Suite {
            tests: Vec::new(),
            ..suite.clone()
        });
        for test in &suite.tests {
            want.push('\n');
            want.push_str(&normalized_test_line(test));
        }
        assert_eq!(text(data), want);
        // The gateway's reader takes it back whole.
        let mut lines = want.lines();
        let mut reader =
            gauntlet_core::parse::NormalizedLines::header(lines.next().unwrap()).unwrap();
        let back: Vec<TestCase> = lines
            .enumerate()
            .map(|(i, line)| reader.test(line, i + 2).unwrap())
            .collect();
        assert_eq!(back, suite.tests);
    }

    #[test]
    fn the_first_chunks_are_small_so_the_run_can_start_early_and_grow_to_the_full_size() {
        let suite = suite(20_000);
        let full = 256 * 1024;
        let (parts, _) = encoded(&suite, suite.tests.iter().cloned().map(Ok).collect(), full);
        let sizes: Vec<usize> = parts
            .iter()
            .filter_map(|p| match p {
                Ok(Lines::Data(d)) => Some(d.len()),
                _ => None,
            })
            .collect();
        assert!(sizes.len() > 6, "{sizes:?}");
        let (last, whole) = sizes.split_last().unwrap();
        assert!(*last <= full);
        assert_eq!(
            whole,
            [16, 32, 64, 128]
                .iter()
                .map(|k| k * 1024)
                .chain(std::iter::repeat(full))
                .take(whole.len())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_broken_suite_ends_with_its_error_after_whole_lines_and_no_count() {
        let suite = suite(10);
        let mut tests: Vec<anyhow::Result<TestCase>> =
            suite.tests.iter().take(4).cloned().map(Ok).collect();
        tests.push(Err(anyhow::anyhow!(
            "suite.yaml:9:5: tests[4].vars: broken"
        )));
        tests.extend(suite.tests.iter().skip(5).cloned().map(Ok));
        let (parts, written) = encoded(&suite, tests, 64);
        assert_eq!(written, 4);
        let (last, data) = parts.split_last().unwrap();
        assert_eq!(
            last.as_ref().unwrap_err().to_string(),
            "suite.yaml:9:5: tests[4].vars: broken"
        );
        assert!(data.iter().all(|p| matches!(p, Ok(Lines::Data(_)))));
        let text = text(data);
        assert_eq!(text.lines().count(), 5, "the header and 4 whole tests");
        assert!(text.ends_with('}'));
    }

    #[test]
    fn a_receiver_gone_stops_the_encoding() {
        let suite = suite(100);
        let header = Suite {
            tests: Vec::new(),
            ..suite.clone()
        };
        let mut calls = 0;
        let written = encode_lines(&header, suite.tests.into_iter().map(Ok), 10, |_| {
            calls += 1;
            calls < 3
        });
        assert_eq!(calls, 3);
        assert!(written < 5, "{written}");
    }
}
