//! SubmitRun: validate, store, expand into task batches, publish with
//! confirms. A suite's tests are stored as rows while it is read (a
//! JSON-lines upload is checked and stored a test at a time, so no suite
//! is ever held whole); the run itself is created only once every test
//! passed, and the rows of a refused or broken-off upload are removed.

use gauntlet_core::{
    parse::{NormalizedLines, SuiteFormat, normalized_test_line, parse_normalized, parse_suite},
    suite::{Suite, TestCase},
};
use gauntlet_proto::v1;
use gauntlet_providers::{ProviderError, ProviderFactory};
use gauntlet_service::{convert, internal, invalid};
use gauntlet_store::{NewRun, UPLOADING_TOTAL};
use tonic::Status;
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    Deps,
    access::Caller,
    dispatch::Dispatcher,
    estimate::{Estimate, Estimator},
    quota::{Allowance, allowance},
};

/// Most repeats a run may ask for.
const MAX_REPEAT: u32 = 1000;
/// Longest run label, in characters: a name, not a document.
const MAX_LABEL_CHARS: usize = 200;
/// Tests stored per write while a suite is read.
const TESTS_PER_WRITE: usize = 1000;
/// Tests in the first write of a run opened while its tests arrive; each
/// write after it holds twice as many, up to [`TESTS_PER_WRITE`].
const FIRST_WRITE: usize = 16;
/// Bytes of tests held before they are written, whatever their count.
const TEST_BYTES_PER_WRITE: usize = 1 << 20;

/// A suite larger than `max_bytes` is refused before it is read: `field`
/// names where the size came from.
pub fn check_size(field: &str, bytes: u64, max_bytes: usize) -> Result<(), Status> {
    if bytes > max_bytes as u64 {
        return Err(invalid(
            field,
            format!(
                "is {bytes} bytes, more than the limit of {max_bytes} (gateway.max_suite_bytes)"
            ),
        ));
    }
    Ok(())
}

/// Parses and validates the suite text of a request.
pub fn validate(
    suite: &str,
    format: i32,
    max_bytes: usize,
    providers: &ProviderFactory,
) -> Result<Suite, Status> {
    if suite.trim().is_empty() {
        return Err(invalid("suite", "is empty"));
    }
    check_size("suite", suite.len() as u64, max_bytes)?;
    let parsed = match v1::SuiteFormat::try_from(format) {
        Ok(v1::SuiteFormat::Yaml) => parse_suite(suite, SuiteFormat::Yaml),
        Ok(v1::SuiteFormat::Json) => parse_suite(suite, SuiteFormat::Json),
        Ok(v1::SuiteFormat::Unspecified) => parse_suite(suite, SuiteFormat::Auto),
        Ok(v1::SuiteFormat::NormalizedJson) => parse_normalized(suite),
        Ok(v1::SuiteFormat::NormalizedJsonLines) => {
            return Err(invalid(
                "format",
                "SUITE_FORMAT_NORMALIZED_JSON_LINES is read a test at a time: send it through SubmitRunStream",
            ));
        }
        Err(_) => return Err(invalid("format", format!("unknown value {format}"))),
    };
    let suite = parsed.map_err(|e| Status::invalid_argument(e.to_string()))?;
    check_providers(&suite, providers)?;
    Ok(suite)
}

/// An id no worker could serve is the client's mistake. Other build errors
/// (a key missing here) may be fine where the workers run.
fn check_providers(suite: &Suite, providers: &ProviderFactory) -> Result<(), Status> {
    for (i, p) in suite.providers.iter().enumerate() {
        if let Err(e @ ProviderError::Unsupported(_)) = providers.build(&p.id, &p.config) {
            return Err(invalid(&format!("providers[{i}].id"), e));
        }
    }
    Ok(())
}

/// What a `SubmitRunStream` starts with.
pub async fn read_header(
    stream: &mut tonic::Streaming<v1::SubmitRunChunk>,
) -> Result<v1::SubmitRunHeader, Status> {
    use v1::submit_run_chunk::Part;
    match stream.message().await? {
        Some(v1::SubmitRunChunk {
            part: Some(Part::Header(header)),
        }) => Ok(header),
        Some(_) => Err(invalid("header", "the first message must be the header")),
        None => Err(invalid("header", "the stream is empty")),
    }
}

/// Reads the rest of a `SubmitRunStream` carrying a whole suite text into
/// the request it stands for. The declared size is checked against
/// `max_bytes` before anything is buffered, and the chunks must add up to
/// exactly that size.
pub async fn read_text(
    header: v1::SubmitRunHeader,
    mut stream: tonic::Streaming<v1::SubmitRunChunk>,
    max_bytes: usize,
) -> Result<v1::SubmitRunRequest, Status> {
    use v1::submit_run_chunk::Part;
    check_size("header.suite_bytes", header.suite_bytes, max_bytes)?;
    let declared = header.suite_bytes as usize;
    let mut text = Vec::with_capacity(declared);
    while let Some(chunk) = stream.message().await? {
        match chunk.part {
            Some(Part::Data(data)) => {
                if text.len() + data.len() > declared {
                    return Err(invalid(
                        "data",
                        format!(
                            "the chunks are longer than the {declared} bytes the header declares"
                        ),
                    ));
                }
                text.extend_from_slice(&data);
            }
            Some(Part::Header(_)) => return Err(invalid("header", "sent more than once")),
            Some(Part::Trailer(_)) => {
                return Err(invalid(
                    "trailer",
                    "only a SUITE_FORMAT_NORMALIZED_JSON_LINES upload ends with one",
                ));
            }
            Some(Part::Abort(reason)) => return Err(aborted(&reason)),
            None => {}
        }
    }
    if text.len() != declared {
        return Err(invalid(
            "data",
            format!(
                "the chunks add up to {} bytes, not the {declared} the header declares",
                text.len()
            ),
        ));
    }
    let suite = String::from_utf8(text).map_err(|e| {
        invalid(
            "data",
            format!(
                "the suite is not UTF-8 (at byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok(v1::SubmitRunRequest {
        suite,
        format: header.format,
        options: header.options,
    })
}

/// The run options of a request, checked; `repeat` is at least 1.
fn check_options(options: Option<v1::RunOptions>) -> Result<v1::RunOptions, Status> {
    let mut options = options.unwrap_or_default();
    options.repeat = options.repeat.max(1);
    if options.repeat > MAX_REPEAT {
        return Err(invalid(
            "options.repeat",
            format!("{} is more than {MAX_REPEAT}", options.repeat),
        ));
    }
    let label_chars = options.label.chars().count();
    if label_chars > MAX_LABEL_CHARS {
        return Err(invalid(
            "options.label",
            format!("{label_chars} characters; at most {MAX_LABEL_CHARS}"),
        ));
    }
    let max_cost = options.max_cost_usd;
    if !max_cost.is_finite() || max_cost < 0.0 {
        return Err(invalid(
            "options.max_cost_usd",
            format!("{max_cost} is not a non-negative amount of US dollars"),
        ));
    }
    Ok(options)
}

/// A suite's tests on their way into the store: written in chunks as they
/// come, estimated as they pass, counted against the task limit. The run
/// id is chosen before the first test, as the rows are keyed by it.
struct Intake<'a> {
    deps: &'a Deps,
    dispatcher: &'a Dispatcher,
    /// Its project and what the run may use.
    allowance: Allowance,
    run_id: Uuid,
    /// Tasks per test: prompts × providers × repeat.
    tasks_per_test: u64,
    estimator: Option<Estimator>,
    pending: Vec<String>,
    pending_bytes: usize,
    /// Tests received, written or pending.
    tests: u64,
    /// Set once the run exists while tests still arrive: each write then
    /// releases the tasks of the tests it stored to the dispatcher.
    open: bool,
    /// Tests held before the next write: small at first, so the first
    /// tasks of an open run go out at once, then up to [`TESTS_PER_WRITE`].
    write_at: usize,
}

impl<'a> Intake<'a> {
    fn new(
        deps: &'a Deps,
        dispatcher: &'a Dispatcher,
        allowance: Allowance,
        header: &Suite,
        repeat: u32,
    ) -> Self {
        Self {
            deps,
            dispatcher,
            allowance,
            run_id: Uuid::now_v7(),
            tasks_per_test: header.prompts.len() as u64
                * header.providers.len() as u64
                * u64::from(repeat),
            estimator: Estimator::new(header),
            pending: Vec::with_capacity(TESTS_PER_WRITE),
            pending_bytes: 0,
            tests: 0,
            open: false,
            write_at: TESTS_PER_WRITE,
        }
    }

    /// Creates the run now, before its tests have all arrived, so its
    /// first tasks run while the rest is read. Only for a single repeat:
    /// a task's index then does not depend on how many tests there are.
    async fn open_run(&mut self, header: &Suite, options: &v1::RunOptions) -> Result<(), Status> {
        debug_assert_eq!(options.repeat, 1);
        self.deps
            .store
            .create_run(new_run(
                self.run_id,
                &self.allowance.project,
                header,
                options,
                String::new(),
                UPLOADING_TOTAL,
                run_options(options, None, None),
            ))
            .await
            .map_err(|e| internal("create run", e))?;
        self.dispatcher.open(self.run_id, &self.allowance);
        self.open = true;
        self.write_at = FIRST_WRITE;
        Ok(())
    }

    async fn push(&mut self, test: &TestCase) -> Result<(), Status> {
        self.tests += 1;
        let total = self.tests.saturating_mul(self.tasks_per_test);
        if total > self.allowance.max_tasks {
            return Err(self.allowance.too_many_tasks());
        }
        if let Some(estimator) = &mut self.estimator {
            estimator.add(test);
        }
        let line = normalized_test_line(test);
        self.pending_bytes += line.len();
        self.pending.push(line);
        if self.pending.len() >= self.write_at || self.pending_bytes >= TEST_BYTES_PER_WRITE {
            self.flush().await?;
            self.write_at = (self.write_at * 2).min(TESTS_PER_WRITE);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Status> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let first = self.tests - self.pending.len() as u64;
        self.deps
            .store
            .put_tests(self.run_id, first as i64, &self.pending)
            .await
            .map_err(|e| internal("store tests", e))?;
        self.pending.clear();
        self.pending_bytes = 0;
        if self.open {
            self.dispatcher
                .release(self.run_id, self.tests * self.tasks_per_test)
                .await?;
        }
        Ok(())
    }

    /// Removes what was stored of a suite that will not run. A run already
    /// open ends `failed` with `reason`, keeping what it has.
    async fn abandon(&self, reason: &Status) {
        if self.open {
            // Its total becomes the tasks that were published.
            let why = format!("its suite was refused: {}", reason.message());
            let stored = self.tests - self.pending.len() as u64;
            let published = self.dispatcher.published(self.run_id).await;
            self.dispatcher.forget(self.run_id);
            let store = &self.deps.store;
            let ended = match store.fail_run(self.run_id, &why).await {
                Ok(_) => store
                    .finish_upload(
                        self.run_id,
                        published as i64,
                        serde_json::json!({"repeat": 1, "tests": stored}),
                    )
                    .await
                    .map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = ended {
                warn!(run_id = %self.run_id, error = %e, "cannot fail a run whose suite was refused");
            }
            return;
        }
        if let Err(e) = self.deps.store.delete_tests(self.run_id).await {
            // The reconciler sweeps them later (`sweep_orphan_tests`).
            warn!(run_id = %self.run_id, error = %e, "cannot remove the tests of a refused suite");
        }
    }

    fn estimate(&mut self, header: &Suite, repeat: u32) -> Estimate {
        self.estimator
            .take()
            .map(|e| e.finish(header, repeat))
            .unwrap_or_default()
    }
}

/// Who submits a suite, and where it goes.
#[derive(Clone, Copy)]
pub struct Submission<'a> {
    pub deps: &'a Deps,
    pub providers: &'a ProviderFactory,
    pub dispatcher: &'a Dispatcher,
    pub caller: &'a Caller,
    /// `gateway.max_suite_bytes`.
    pub max_bytes: usize,
}

/// Submits a suite sent whole (YAML, JSON or normalized JSON): parsed and
/// checked at once, then stored a chunk of tests at a time.
pub async fn submit(
    s: Submission<'_>,
    req: v1::SubmitRunRequest,
) -> Result<v1::SubmitRunResponse, Status> {
    let Submission {
        deps,
        providers,
        dispatcher,
        caller,
        max_bytes,
    } = s;
    let mut suite = validate(&req.suite, req.format, max_bytes, providers)?;
    let options = check_options(req.options)?;
    let tests = std::mem::take(&mut suite.tests);
    if tests.is_empty() {
        return Err(invalid("suite", "expands into no tasks"));
    }
    let allowance = allowance(deps, caller, &options).await?;
    let mut intake = Intake::new(deps, dispatcher, allowance, &suite, options.repeat);
    let stored = async {
        for test in &tests {
            intake.push(test).await?;
        }
        intake.flush().await
    }
    .await;
    drop(tests);
    if let Err(status) = stored {
        intake.abandon(&status).await;
        return Err(status);
    }
    let source = if req.format == v1::SuiteFormat::NormalizedJson as i32 {
        String::new()
    } else {
        req.suite
    };
    start(deps, intake, suite, options, source).await
}

/// Submits a suite sent as normalized JSON lines through `stream` (the
/// header message already read): every line is checked as it arrives
/// (`max_bytes` bounds each line, not the suite) and its test stored, so
/// the gateway holds a chunk of tests at a time, whatever the suite's size.
pub async fn submit_lines(
    s: Submission<'_>,
    header: v1::SubmitRunHeader,
    mut stream: tonic::Streaming<v1::SubmitRunChunk>,
    check_received: impl Fn(u64) -> Result<(), Status>,
) -> Result<v1::SubmitRunResponse, Status> {
    let Submission {
        deps,
        providers,
        dispatcher,
        caller,
        max_bytes,
    } = s;
    use v1::submit_run_chunk::Part;
    // The suite's bytes so far, for the caller's request size cap.
    let mut suite_bytes = 0u64;
    if header.suite_bytes != 0 {
        check_size("header.suite_bytes", header.suite_bytes, usize::MAX)?;
    }
    let options = check_options(header.options)?;
    let allowance = allowance(deps, caller, &options).await?;
    let mut lines = LineSplitter::new(max_bytes);
    // The header line, before anything is stored.
    let mut reader = loop {
        match stream.message().await? {
            Some(v1::SubmitRunChunk {
                part: Some(Part::Data(data)),
            }) => {
                suite_bytes += data.len() as u64;
                check_received(suite_bytes)?;
                lines.push(&data);
                if let Some((_, line)) = lines.next_line()? {
                    let reader = NormalizedLines::header(line)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    check_providers(reader.suite(), providers)?;
                    break reader;
                }
            }
            Some(_) => return Err(invalid("data", "the suite's header line must come first")),
            None => {
                return Err(invalid(
                    "data",
                    "the stream ended before the suite's header line",
                ));
            }
        }
    };
    let early = allowance.may_open_early();
    let mut intake = Intake::new(deps, dispatcher, allowance, reader.suite(), options.repeat);
    if options.repeat == 1 && early {
        intake.open_run(reader.suite(), &options).await?;
    }
    let received = async {
        let mut trailer = None;
        let mut ended = false;
        loop {
            while let Some((number, line)) = lines.next_line()? {
                let test = reader
                    .test(line, number)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                intake.push(&test).await?;
            }
            if ended {
                break;
            }
            match stream.message().await? {
                Some(chunk) => match chunk.part {
                    Some(Part::Data(_)) if trailer.is_some() => {
                        return Err(invalid("data", "sent after the trailer"));
                    }
                    Some(Part::Data(data)) => {
                        suite_bytes += data.len() as u64;
                        check_received(suite_bytes)?;
                        lines.push(&data);
                    }
                    Some(Part::Trailer(t)) => {
                        // What is left unterminated is the last line.
                        trailer = Some(t);
                        lines.finish();
                    }
                    Some(Part::Header(_)) => {
                        return Err(invalid("header", "sent more than once"));
                    }
                    Some(Part::Abort(reason)) => return Err(aborted(&reason)),
                    None => {}
                },
                None => {
                    lines.finish();
                    ended = true;
                }
            }
        }
        let Some(trailer) = trailer else {
            return Err(invalid(
                "trailer",
                "the stream ended without its trailer: the upload was cut short",
            ));
        };
        if trailer.tests != reader.tests() as u64 {
            return Err(invalid(
                "trailer.tests",
                format!(
                    "says {} tests, but {} arrived",
                    trailer.tests,
                    reader.tests()
                ),
            ));
        }
        intake.flush().await
    }
    .await;
    let header = match received.and_then(|()| {
        reader
            .finish()
            .map_err(|e| Status::invalid_argument(e.to_string()))
    }) {
        Ok(header) => header,
        Err(status) => {
            intake.abandon(&status).await;
            return Err(status);
        }
    };
    start(deps, intake, header, options, String::new()).await
}

/// Characters of a client's abort reason kept (it becomes the run's
/// `status_reason`).
const MAX_ABORT_CHARS: usize = 2000;

/// The answer to a client that stopped its upload for `reason`.
fn aborted(reason: &str) -> Status {
    invalid(
        "abort",
        format!(
            "the client stopped the upload: {}",
            bounded(reason, MAX_ABORT_CHARS)
        ),
    )
}

/// `text` cut to at most `max` characters, marked with `…` if cut.
fn bounded(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Splits a byte stream into lines of at most `max_bytes`, counting them.
struct LineSplitter {
    buffer: Vec<u8>,
    /// Where the next line starts in `buffer`.
    at: usize,
    max_bytes: usize,
    /// The number (1-based) of the line last returned.
    number: usize,
    /// The stream has ended: what is left is the last line.
    ended: bool,
}

impl LineSplitter {
    fn new(max_bytes: usize) -> Self {
        Self {
            buffer: Vec::new(),
            at: 0,
            max_bytes,
            number: 0,
            ended: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.at > 0 {
            self.buffer.drain(..self.at);
            self.at = 0;
        }
        self.buffer.extend_from_slice(data);
    }

    /// Marks the end of the text: what is left is the last line.
    fn finish(&mut self) {
        self.ended = true;
    }

    /// The next complete, non-blank line, with its number.
    fn next_line(&mut self) -> Result<Option<(usize, &str)>, Status> {
        loop {
            let rest = &self.buffer[self.at..];
            let (line, used) = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => (&rest[..end], end + 1),
                None if self.ended && !rest.is_empty() => (rest, rest.len()),
                None => {
                    if rest.len() > self.max_bytes {
                        return Err(self.too_long());
                    }
                    return Ok(None);
                }
            };
            if line.len() > self.max_bytes {
                return Err(self.too_long());
            }
            let start = self.at;
            self.at += used;
            self.number += 1;
            let line = &self.buffer[start..start + line.len()];
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let number = self.number;
            return std::str::from_utf8(line)
                .map(|l| Some((number, l)))
                .map_err(|e| {
                    invalid(
                        "data",
                        format!("line {number} is not UTF-8 (at byte {})", e.valid_up_to()),
                    )
                });
        }
    }

    fn too_long(&self) -> Status {
        invalid(
            "data",
            format!(
                "line {} is longer than {} bytes (gateway.max_suite_bytes)",
                self.number + 1,
                self.max_bytes
            ),
        )
    }
}

/// The stored options of a run: what workers read (`repeat`, `tests`,
/// limits, the cost cap) and the estimate. `tests` is `None` while they
/// still arrive.
fn run_options(
    options: &v1::RunOptions,
    tests: Option<u64>,
    estimate: Option<&Estimate>,
) -> serde_json::Value {
    let max_cost = options.max_cost_usd;
    serde_json::json!({
        "repeat": options.repeat,
        "tests": tests,
        "max_concurrency": options.max_concurrency,
        "no_cache": options.no_cache,
        // Its share of the dispatch window against its project's other
        // runs (quota::priority_factor); kept so the run says how it ran.
        "priority": match v1::RunPriority::try_from(options.priority) {
            Ok(v1::RunPriority::Batch) => "batch",
            _ => "interactive",
        },
        // Read by workers, which stop the run once its results cost this much.
        "max_cost_usd": (max_cost > 0.0).then_some(max_cost),
        "estimated_cost_usd": estimate.map(|e| e.cost_usd),
        // The submission's span (called in it): what work done for the run
        // later, in traces of its own (reports, big runs' batches), links to.
        "traceparent": gauntlet_telemetry::propagation::current_traceparent(),
    })
}

fn new_run(
    id: Uuid,
    project: &str,
    header: &Suite,
    options: &v1::RunOptions,
    source: String,
    total_tasks: i64,
    stored_options: serde_json::Value,
) -> NewRun {
    NewRun {
        id,
        project_id: project.into(),
        description: header.description.clone().unwrap_or_default(),
        label: options.label.clone(),
        source,
        compiled: gauntlet_core::parse::normalized_header_line(header),
        options: stored_options,
        total_tasks,
        // Called in the submission's span: the run's trace.
        trace_id: gauntlet_telemetry::propagation::current_trace_id().unwrap_or_default(),
    }
}

/// Starts the run of a suite whose tests are all stored: creates it and
/// publishes its task batches, or, for a run opened while its tests
/// arrived (whose batches are out already), sets its real total.
async fn start(
    deps: &Deps,
    mut intake: Intake<'_>,
    header: Suite,
    options: v1::RunOptions,
    source: String,
) -> Result<v1::SubmitRunResponse, Status> {
    let total = intake.tests * intake.tasks_per_test;
    if total == 0 {
        let status = invalid("suite", "expands into no tasks");
        intake.abandon(&status).await;
        return Err(status);
    }
    let estimate = intake.estimate(&header, options.repeat);
    let run_id = intake.run_id;
    let stored_options = run_options(&options, Some(intake.tests), Some(&estimate));
    if !intake.open
        && let Err(status) = intake.allowance.check_cost(estimate.cost_usd)
    {
        intake.abandon(&status).await;
        return Err(status);
    }
    let run = if intake.open {
        let run = deps
            .store
            .finish_upload(run_id, total as i64, stored_options)
            .await
            .map_err(|e| internal("finish upload", e))?
            .ok_or_else(|| internal("finish upload", anyhow::anyhow!("run {run_id} vanished")))?;
        if run.status.is_terminal() {
            // Every task was done before the upload ended.
            gauntlet_service::events::publish_progress(deps.bus.as_ref(), &run).await;
        }
        run
    } else {
        let created = deps
            .store
            .create_run(new_run(
                run_id,
                &intake.allowance.project,
                &header,
                &options,
                source,
                total as i64,
                stored_options,
            ))
            .await;
        let run = match created {
            Ok(run) => run,
            Err(e) => {
                let status = internal("create run", e);
                intake.abandon(&status).await;
                return Err(status);
            }
        };
        intake.dispatcher.open(run_id, &intake.allowance);
        intake.dispatcher.release(run_id, total).await?;
        run
    };
    let published = intake.dispatcher.published(run_id).await;
    info!(
        run_id = %run_id,
        tasks = total,
        published,
        estimated_cost_usd = estimate.cost_usd,
        "run submitted"
    );
    Ok(v1::SubmitRunResponse {
        run_id: run_id.to_string(),
        total_tasks: total,
        run: Some(convert::run(&run)),
        estimated_tokens_in: estimate.tokens_in,
        estimated_tokens_out: estimate.tokens_out,
        estimated_cost_usd: estimate.cost_usd,
        unpriced_providers: estimate.unpriced,
        trace_id: run.trace_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_reason_is_kept_whole_up_to_its_bound_and_cut_on_a_character() {
        let short = aborted("s.yaml:3:1: tests[0]: bad");
        assert_eq!(
            short.message(),
            "abort: the client stopped the upload: s.yaml:3:1: tests[0]: bad"
        );
        let long = aborted(&"é".repeat(MAX_ABORT_CHARS + 5));
        let kept = long.message().rsplit_once(": ").unwrap().1;
        assert_eq!(kept.chars().count(), MAX_ABORT_CHARS + 1);
        assert!(kept.ends_with("é…"));
    }

    fn drain(lines: &mut LineSplitter) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        while let Some((n, line)) = lines.next_line().unwrap() {
            out.push((n, line.to_owned()));
        }
        out
    }

    #[test]
    fn lines_are_split_across_chunks_numbered_and_bounded() {
        let mut lines = LineSplitter::new(8);
        lines.push(b"ab");
        assert!(drain(&mut lines).is_empty());
        lines.push(b"c\n\n  \nde");
        // Blank lines count, but are not returned.
        assert_eq!(drain(&mut lines), [(1, "abc".to_owned())]);
        lines.push(b"f\nlast");
        assert_eq!(drain(&mut lines), [(4, "def".to_owned())]);
        lines.finish();
        assert_eq!(drain(&mut lines), [(5, "last".to_owned())]);

        // A line longer than the limit is refused as soon as it is, even
        // before its end arrives, naming its line.
        let mut lines = LineSplitter::new(8);
        lines.push(b"ok\n0123456789");
        assert_eq!(lines.next_line().unwrap(), Some((1, "ok")));
        let err = lines.next_line().unwrap_err();
        assert!(
            err.message().contains("line 2 is longer than 8 bytes"),
            "{err:?}"
        );
    }
}
