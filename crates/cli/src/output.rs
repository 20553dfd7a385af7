//! What `gauntlet run` prints and writes: the summary table, and result files
//! chosen by extension (the same renderers the reports service uses),
//! written while the results are paged in so memory stays flat.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use anyhow::{Context, bail};
use gauntlet_proto::v1::{self, run_service_client::RunServiceClient};
use gauntlet_reports::render::{self, ResultSink};

use crate::client;

/// The result file formats, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Jsonl,
    Csv,
    Markdown,
    Html,
    Junit,
}

impl FileFormat {
    pub fn for_path(path: &Path) -> anyhow::Result<Self> {
        Ok(
            match path
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("json") => FileFormat::Json,
                Some("jsonl") => FileFormat::Jsonl,
                Some("csv") => FileFormat::Csv,
                Some("md" | "markdown") => FileFormat::Markdown,
                Some("html" | "htm") => FileFormat::Html,
                Some("xml") => FileFormat::Junit,
                _ => bail!(
                    "--output {}: unknown extension; use .json, .jsonl, .csv, .md, .html or .xml (JUnit)",
                    path.display()
                ),
            },
        )
    }

    pub fn render_format(self) -> render::Format {
        match self {
            FileFormat::Json => render::Format::Json,
            FileFormat::Jsonl => render::Format::Jsonl,
            FileFormat::Csv => render::Format::Csv,
            FileFormat::Markdown => render::Format::Markdown,
            FileFormat::Html => render::Format::Html,
            FileFormat::Junit => render::Format::Junit,
        }
    }
}

/// Results asked for per `ListResults` call.
const PAGE_SIZE: u32 = 1000;

/// Creates the result file `path`, and its directory; errors name them.
fn create_file(path: &Path) -> anyhow::Result<File> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    File::create(path).with_context(|| format!("cannot write {}", path.display()))
}

/// A result file being written.
struct OutputFile<'p> {
    path: &'p Path,
    sink: Box<dyn ResultSink + Send>,
}

impl OutputFile<'_> {
    /// Creates the file (and its directory) and the sink for its extension.
    fn create(path: &Path) -> anyhow::Result<OutputFile<'_>> {
        let format = FileFormat::for_path(path)?.render_format();
        Ok(OutputFile {
            path,
            sink: render::sink(format, BufWriter::new(create_file(path)?)),
        })
    }

    fn failed(&self, e: io::Error) -> anyhow::Error {
        anyhow::Error::new(e).context(format!("cannot write {}", self.path.display()))
    }
}

/// Every result file being written, fed the same results.
struct Files<'p>(Vec<OutputFile<'p>>);

impl<'p> Files<'p> {
    fn begin(paths: &'p [PathBuf], summary: &v1::RunSummary) -> anyhow::Result<Self> {
        let mut files = paths
            .iter()
            .map(|p| OutputFile::create(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for f in &mut files {
            f.sink.begin(summary).map_err(|e| f.failed(e))?;
        }
        Ok(Self(files))
    }

    fn result(&mut self, r: &v1::Result) -> anyhow::Result<()> {
        for f in &mut self.0 {
            f.sink.result(r).map_err(|e| f.failed(e))?;
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        for f in &mut self.0 {
            f.sink.finish().map_err(|e| f.failed(e))?;
        }
        Ok(())
    }
}

/// Writes the run's results to every file of `paths`, each in the format its
/// extension names, a page of results at a time: no file's document and no
/// more than one page of results are ever held in memory.
pub async fn write_files(
    paths: &[PathBuf],
    summary: &v1::RunSummary,
    runs: &RunServiceClient<crate::client::Conn>,
    run_id: &str,
) -> anyhow::Result<()> {
    let mut files = Files::begin(paths, summary)?;
    let pages = client::result_pages(
        runs.clone(),
        run_id.to_owned(),
        v1::ResultStatus::Unspecified,
        PAGE_SIZE,
    );
    futures::pin_mut!(pages);
    while let Some(page) = futures::StreamExt::next(&mut pages).await {
        let page = page.map_err(|s| client::status_message("list results", &s))?;
        for r in &page.results {
            files.result(r)?;
        }
    }
    files.finish()
}

/// A run's result files, rendered while it runs: the results stored so far
/// without a gap, in task order, are fed to every file's sink as they
/// come, so once the run ends only the last few are left to fetch and
/// render. Memory stays flat (a sink writes as it goes, or spills), and the
/// paging and rendering that took most of the time spent on the files
/// after the run (a 20,000-result run: 40 pages) are done while it goes.
pub struct Spool {
    task: tokio::task::JoinHandle<anyhow::Result<Vec<Staged>>>,
    ended: tokio::sync::watch::Sender<bool>,
}

/// A result file whose results are rendered before its head. The head
/// needs the run's summary, known only at the end, and a sink's results do
/// not depend on it (see [`ResultSink`]): so the sink writes into a
/// temporary file first; at the end it is pointed at the real file, writes
/// its head there, the body is copied after it, and `finish` writes the rest.
pub struct Staged {
    path: PathBuf,
    sink: Box<dyn ResultSink + Send>,
    out: Redirect,
}

/// The writer under a staged sink: the temporary body, then the real file.
#[derive(Clone)]
struct Redirect(Arc<Mutex<BufWriter<File>>>);

impl Redirect {
    fn lock(&self) -> MutexGuard<'_, BufWriter<File>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Points the writer at `file`; returns the body written so far.
    fn redirect(&self, file: File) -> io::Result<File> {
        let body = std::mem::replace(&mut *self.lock(), BufWriter::new(file));
        body.into_inner().map_err(io::IntoInnerError::into_error)
    }

    /// Copies `body` after what was written since [`Self::redirect`].
    fn append(&self, mut body: File) -> io::Result<()> {
        use std::io::Seek;
        let mut out = self.lock();
        out.flush()?;
        body.rewind()?;
        io::copy(&mut body, out.get_mut()).map(drop)
    }
}

impl Write for Redirect {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.lock().write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.lock().flush()
    }
}

impl Staged {
    fn new(path: &Path) -> anyhow::Result<Self> {
        let format = FileFormat::for_path(path)?.render_format();
        let body = tempfile::tempfile().context("cannot create a temporary file")?;
        let out = Redirect(Arc::new(Mutex::new(BufWriter::new(body))));
        Ok(Self {
            path: path.to_owned(),
            sink: render::sink(format, out.clone()),
            out,
        })
    }

    fn result(&mut self, r: &v1::Result) -> anyhow::Result<()> {
        self.sink
            .result(r)
            .with_context(|| format!("cannot write the temporary copy of {}", self.path.display()))
    }

    /// Writes the file: the head, the results rendered so far, the tail.
    fn write(mut self, summary: &v1::RunSummary) -> anyhow::Result<()> {
        let failed = |e: io::Error| {
            anyhow::Error::new(e).context(format!("cannot write {}", self.path.display()))
        };
        let body = self
            .out
            .redirect(create_file(&self.path)?)
            .map_err(failed)?;
        self.sink.begin(summary).map_err(failed)?;
        self.out.append(body).map_err(failed)?;
        self.sink.finish().map_err(failed)
    }
}

/// A run's results put in task order as pages of them arrive while it
/// runs. Results are stored out of order (many calls are in flight), so a
/// page can stop at a gap: what it holds past the gap is kept, and only
/// the gap is asked for next, not the page again.
#[derive(Default)]
struct InOrder {
    /// The next task index to hand on.
    next: u64,
    /// Results fetched past a gap, in task order (at most [`PAGES_AHEAD`]
    /// pages).
    held: std::collections::VecDeque<v1::Result>,
}

/// One `ListResults` call: the results after the task before `first`, at
/// most `size`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Ask {
    first: u64,
    size: u32,
}

impl Ask {
    fn token(self) -> String {
        self.first
            .checked_sub(1)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }
}

/// Pages asked for at once while the spool is behind. A page's round trip,
/// not its rendering, bounds how fast the spool follows a run (a page of
/// 1,000 took 50–120 ms while an embedded run's writes shared the store,
/// rendering it 3–10 ms), so the next pages are asked for together, each
/// for its own range of tasks.
const PAGES_AHEAD: u64 = 4;

impl InOrder {
    /// The `ListResults` calls to make next: the gap before what is held,
    /// or, with nothing held, `pages` consecutive pages (each for its own
    /// [`PAGE_SIZE`] tasks; see [`Self::join`]). Once the run has `ended`,
    /// what is held is dropped and asked for again: its own gaps may have
    /// filled since.
    fn ask(&mut self, ended: bool, pages: u64) -> Vec<Ask> {
        if ended {
            self.held.clear();
        }
        match self.held.front() {
            Some(h) => vec![Ask {
                first: self.next,
                size: (h.task_index.saturating_sub(self.next)).clamp(1, u64::from(PAGE_SIZE))
                    as u32,
            }],
            None => (0..pages.max(1))
                .map(|k| Ask {
                    first: self.next + k * u64::from(PAGE_SIZE),
                    size: PAGE_SIZE,
                })
                .collect(),
        }
    }

    /// The answers to [`Self::ask`]'s calls as one page, in task order, and
    /// whether more results may be stored after it. A page of several is
    /// kept to its own range (across a gap it runs into the next one's),
    /// and the pages after one the gateway ended early (at its message
    /// budget) are dropped, so no range is left unasked: once a run has
    /// ended, [`Self::take`] takes a gap as for good.
    fn join(answers: Vec<(Ask, v1::ListResultsResponse)>) -> (Vec<v1::Result>, bool) {
        let single = answers.len() == 1;
        let mut results = Vec::new();
        for (ask, page) in answers {
            let end = ask.first + u64::from(PAGE_SIZE);
            let more = !page.next_page_token.is_empty();
            let covered = page.results.last().is_some_and(|r| r.task_index + 1 >= end);
            results.extend(
                page.results
                    .into_iter()
                    .filter(|r| single || r.task_index < end),
            );
            // Past a page that was not full (nothing was stored after it
            // when it was read) or that ended early, the rest waits.
            if !(more && covered) {
                return (results, more);
            }
        }
        (results, true)
    }

    /// Hands on, in task order, the results of `page` (asked for with
    /// [`Self::ask`]) and those held, up to the first gap; once the run
    /// has `ended` gaps are for good and everything goes.
    fn take(
        &mut self,
        page: Vec<v1::Result>,
        ended: bool,
        mut each: impl FnMut(&v1::Result) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let front = self.held.front().map(|h| h.task_index);
        // What fills the gap comes before the held results; anything the
        // page repeats of them is dropped.
        let mut merged: Vec<v1::Result> = page
            .into_iter()
            .filter(|r| front.is_none_or(|f| r.task_index < f))
            .collect();
        merged.extend(self.held.drain(..));
        let mut results = merged.into_iter();
        while let Some(r) = results.next() {
            if !ended && r.task_index != self.next {
                self.held.push_back(r);
                self.held.extend(results);
                break;
            }
            each(&r)?;
            self.next = r.task_index + 1;
        }
        Ok(())
    }
}

/// How long to wait before looking again when the next result in task
/// order is not stored yet.
const SPOOL_POLL: std::time::Duration = std::time::Duration::from_millis(25);

impl Spool {
    /// Starts following the results of `run_id` for the files `paths`.
    pub fn start(
        runs: RunServiceClient<crate::client::Conn>,
        run_id: String,
        paths: &[PathBuf],
    ) -> anyhow::Result<Self> {
        let (ended, mut ended_rx) = tokio::sync::watch::channel(false);
        let mut files = paths
            .iter()
            .map(|p| Staged::new(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        // In the command's span: its result pages are part of its trace.
        let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut order = InOrder::default();
            let (mut pages, mut fetched) = (0u64, 0u64);
            // Whether the last answer ended at a full page: the spool is
            // behind the run, and asks for pages ahead.
            let mut behind = true;
            loop {
                // Read before the page: once the run has ended, every
                // result there will be is stored, and gaps are for good.
                let ended = *ended_rx.borrow_and_update();
                let asks = order.ask(ended, if behind { PAGES_AHEAD } else { 1 });
                let answers = futures::future::try_join_all(asks.into_iter().map(|ask| {
                    let mut runs = runs.clone();
                    let run_id = &run_id;
                    async move {
                        client::result_page(
                            &mut runs,
                            run_id,
                            v1::ResultStatus::Unspecified,
                            ask.size,
                            ask.token(),
                        )
                        .await
                        .map(|page| (ask, page))
                    }
                }))
                .await
                .map_err(|s| client::status_message("list results", &s))?;
                pages += answers.len() as u64;
                let (page, more) = InOrder::join(answers);
                fetched += page.len() as u64;
                behind = more;
                order.take(page, ended, |r| {
                    files.iter_mut().try_for_each(|f| f.result(r))
                })?;
                if ended {
                    if !more && order.held.is_empty() {
                        tracing::debug!(pages, fetched, rendered = order.next, "results spooled");
                        return Ok(files);
                    }
                } else if !order.held.is_empty() || !more {
                    // Waiting on the next result in order.
                    tokio::select! {
                        _ = ended_rx.changed() => {}
                        _ = tokio::time::sleep(SPOOL_POLL) => {}
                    }
                }
            }
        }));
        Ok(Self { task, ended })
    }

    /// The run has ended: renders the results not rendered yet.
    pub async fn finish(self) -> anyhow::Result<Spooled> {
        let _ = self.ended.send(true);
        let files = self.task.await.context("spooling results")??;
        Ok(Spooled(files))
    }
}

/// Every result of a run, rendered into each file's body.
pub struct Spooled(Vec<Staged>);

impl Spooled {
    /// Writes every file, `summary` at its head.
    pub fn write_files(self, summary: &v1::RunSummary) -> anyhow::Result<()> {
        self.0.into_iter().try_for_each(|f| f.write(summary))
    }
}

pub(crate) fn pct(r: f64) -> String {
    format!("{:.1}%", r * 100.0)
}

/// A rate with its interval: `66.7% [30.0–90.3]`.
fn with_interval(rate: f64, interval: Option<&v1::Interval>) -> String {
    match interval {
        Some(i) if i.high > 0.0 => {
            format!("{} [{:.1}–{:.1}]", pct(rate), 100.0 * i.low, 100.0 * i.high)
        }
        _ => pct(rate),
    }
}

/// `s` on one line, at most `max` characters (cut with …).
pub(crate) use gauntlet_reports::render::one_line as clip;

/// One line per failed or errored result (the first few of `total`): which
/// test, on which provider, and why.
pub fn failure_lines(
    failures: &[v1::Result],
    total: u64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if failures.is_empty() {
        return Ok(());
    }
    for r in failures {
        let status = if r.status == v1::ResultStatus::Error as i32 {
            "ERROR"
        } else {
            "FAIL"
        };
        let test = if r.test_description.is_empty() {
            format!("test {} {}", r.test_index, clip(&r.vars_json, 60))
        } else {
            clip(&r.test_description, 60)
        };
        let why = if r.reason.is_empty() {
            &r.error
        } else {
            &r.reason
        };
        writeln!(
            out,
            "{status:<5} {} · prompt {} · {test}: {}",
            clip(&r.provider_id, 32),
            r.prompt_index + 1,
            clip(why, 160)
        )?;
    }
    if total > failures.len() as u64 {
        writeln!(
            out,
            "… and {} more (see `gauntlet results RUN` or -o results.json)",
            total - failures.len() as u64
        )?;
    }
    writeln!(out)
}

/// The per provider × prompt table and the totals line.
pub fn summary_table(s: &v1::RunSummary, out: &mut impl Write) -> std::io::Result<()> {
    let header = [
        "provider",
        "prompt",
        "pass rate [95% CI]",
        "pass",
        "fail",
        "error",
        "p50 ms",
        "p95 ms",
        "tokens in",
        "tokens out",
        "cost $",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for g in &s.groups {
        let l = g.latency.unwrap_or_default();
        rows.push(vec![
            clip(&g.provider_id, 32),
            clip(&g.prompt_label, 40),
            with_interval(g.pass_rate, g.pass_rate_interval.as_ref()),
            g.passed.to_string(),
            g.failed.to_string(),
            g.errors.to_string(),
            format!("{:.0}", l.p50_ms),
            format!("{:.0}", l.p95_ms),
            g.tokens_in.to_string(),
            g.tokens_out.to_string(),
            format!("{:.4}", g.cost_usd),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                // Text columns left, numbers right.
                if c < 2 {
                    format!("{cell:<w$}", w = widths[c])
                } else {
                    format!("{cell:>w$}", w = widths[c])
                }
            })
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
        if i == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            writeln!(out, "{}", "-".repeat(total))?;
        }
    }
    writeln!(
        out,
        "\n{} passed, {} failed, {} errors of {} ({}); {} tokens in, {} out; ${:.4}",
        s.passed,
        s.failed,
        s.errors,
        s.total_tasks,
        pct(s.pass_rate),
        s.tokens_in,
        s.tokens_out,
        s.cost_usd
    )?;
    if !s.metrics.is_empty() {
        let metrics: Vec<String> = s
            .metrics
            .iter()
            .map(|m| {
                let rate = m.pass_rate.unwrap_or_default();
                format!(
                    "{} {} ({}/{})",
                    clip(&m.name, 32),
                    with_interval(rate.estimate, Some(&rate)),
                    m.passed,
                    m.passed + m.failed
                )
            })
            .collect();
        writeln!(out, "metrics: {}", metrics.join(", "))?;
    }
    Ok(())
}

/// Writes a command's `-o` file and says so on stderr.
pub(crate) fn write_file(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use gauntlet_reports::ReportData;

    use super::*;

    /// Results already in memory written to `path` at once, head first.
    fn write(path: &Path, data: &ReportData) -> anyhow::Result<()> {
        let paths = [path.to_owned()];
        let mut files = Files::begin(&paths, &data.summary)?;

        for r in &data.results {
            files.result(r)?;
        }
        files.finish()
    }

    fn data() -> ReportData {
        ReportData {
            summary: v1::RunSummary {
                run_id: "r1".into(),
                ..Default::default()
            },
            results: (0..3)
                .map(|i| v1::Result {
                    task_index: i,
                    provider_id: "echo".into(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn jsonl_is_a_known_extension_and_unknown_ones_are_listed() {
        assert_eq!(
            FileFormat::for_path(Path::new("out.JSONL")).unwrap(),
            FileFormat::Jsonl
        );
        let e = FileFormat::for_path(Path::new("out.txt")).unwrap_err();
        assert!(e.to_string().contains(".jsonl"), "{e}");
    }

    #[test]
    fn write_creates_the_directory_and_one_jsonl_line_per_result() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/out.jsonl");
        write(&path, &data()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let tasks: Vec<u64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["task_index"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(tasks, [0, 1, 2]);
    }

    /// A store stand-in for `InOrder`: `ListResults` over the results
    /// stored so far, a page ending early after `budget` results (as the
    /// gateway ends one at its message budget).
    fn list(
        stored: &std::collections::BTreeSet<u64>,
        ask: Ask,
        budget: usize,
    ) -> v1::ListResultsResponse {
        let rows: Vec<u64> = stored
            .range(ask.first..)
            .take(ask.size as usize)
            .copied()
            .collect();
        let results: Vec<v1::Result> = rows
            .iter()
            .take(budget)
            .map(|&t| v1::Result {
                task_index: t,
                ..Default::default()
            })
            .collect();
        let next_page_token = match results.last() {
            Some(last) if results.len() < rows.len() || rows.len() == ask.size as usize => {
                last.task_index.to_string()
            }
            _ => String::new(),
        };
        v1::ListResultsResponse {
            results,
            next_page_token,
        }
    }

    /// One turn of the spool's loop over `stored`: asks, joins, hands on.
    /// Whether more may be stored past what it read.
    fn turn(
        order: &mut InOrder,
        stored: &std::collections::BTreeSet<u64>,
        ended: bool,
        pages: u64,
        budget: usize,
        got: &mut Vec<u64>,
    ) -> (bool, usize) {
        let answers = order
            .ask(ended, pages)
            .into_iter()
            .map(|ask| (ask, list(stored, ask, budget)))
            .collect();
        let (page, more) = InOrder::join(answers);
        let fetched = page.len();
        order
            .take(page, ended, |r| {
                got.push(r.task_index);
                Ok(())
            })
            .unwrap();
        (more, fetched)
    }

    #[test]
    fn results_stored_out_of_order_are_handed_on_once_each_in_order() {
        // 5,000 tasks finishing in a shuffled order, up to 300 apart.
        let n = 5000u64;
        let mut finish: Vec<u64> = (0..n).collect();
        let mut seed = 7u64;
        for i in 0..finish.len() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let j = (i + (seed >> 33) as usize % 300).min(finish.len() - 1);
            finish.swap(i, j);
        }
        // One page at a time and pages ahead; whole pages and pages the
        // gateway ends early.
        for (ahead, budget) in [
            (1, usize::MAX),
            (PAGES_AHEAD, usize::MAX),
            (PAGES_AHEAD, 170),
        ] {
            let mut stored = std::collections::BTreeSet::new();
            let mut order = InOrder::default();
            let mut got = Vec::new();
            let (mut behind, mut fetched) = (true, 0);
            for chunk in finish.chunks(137) {
                stored.extend(chunk.iter().copied());
                // A few polls between two chunks being stored.
                for _ in 0..3 {
                    let pages = if behind { ahead } else { 1 };
                    let (more, n) = turn(&mut order, &stored, false, pages, budget, &mut got);
                    (behind, fetched) = (more, fetched + n);
                    assert!(
                        order.held.len() <= (PAGES_AHEAD * u64::from(PAGE_SIZE)) as usize,
                        "{}",
                        order.held.len()
                    );
                }
            }
            loop {
                let pages = if behind { ahead } else { 1 };
                let (more, n) = turn(&mut order, &stored, true, pages, budget, &mut got);
                (behind, fetched) = (more, fetched + n);
                if !more && order.held.is_empty() {
                    break;
                }
            }
            assert_eq!(got, (0..n).collect::<Vec<_>>(), "{ahead} {budget}");
            // A gap costs its own size, not another page.
            assert!(
                fetched < 2 * n as usize,
                "{fetched} fetched ({ahead} {budget})"
            );
        }
    }

    #[test]
    fn pages_asked_for_at_once_leave_no_range_unread_when_one_ends_early() {
        // A run that has ended with tasks that never stored a result: its
        // gaps are for good, so a page that ended early must not let the
        // range after it pass for a gap.
        let stored: std::collections::BTreeSet<u64> = (0..5000).filter(|t| t % 7 != 3).collect();
        for budget in [usize::MAX, 999, 250, 1] {
            let mut order = InOrder::default();
            let mut got = Vec::new();
            while turn(&mut order, &stored, true, PAGES_AHEAD, budget, &mut got).0 {}
            assert_eq!(got, stored.iter().copied().collect::<Vec<_>>(), "{budget}");
        }
    }

    #[test]
    fn once_the_run_has_ended_gaps_are_skipped() {
        let stored: std::collections::BTreeSet<u64> = [0, 1, 3, 4, 7].into();
        let mut order = InOrder::default();
        let mut got = Vec::new();
        assert_eq!(
            order.ask(false, PAGES_AHEAD)[1],
            Ask {
                first: PAGE_SIZE.into(),
                size: PAGE_SIZE
            },
            "pages ahead, each for its own range"
        );
        turn(&mut order, &stored, false, 1, usize::MAX, &mut got);
        assert_eq!(got, [0, 1]);
        assert_eq!(
            order.ask(false, PAGES_AHEAD),
            [Ask { first: 2, size: 1 }],
            "only the gap is asked for"
        );
        turn(&mut order, &stored, true, 1, usize::MAX, &mut got);
        assert_eq!(got, [0, 1, 3, 4, 7]);
        assert!(order.held.is_empty());
    }

    #[test]
    fn files_rendered_before_their_head_is_known_match_files_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = data();
        d.summary.description = "staged".into();
        d.summary.passed = 2;
        d.results[1].status = v1::ResultStatus::Fail as i32;
        d.results[1].vars_json = r#"{"x":"1"}"#.into();
        for ext in ["json", "jsonl", "csv", "md", "html", "xml"] {
            let direct = dir.path().join(format!("direct.{ext}"));
            write(&direct, &d).unwrap();
            let staged_path = dir.path().join(format!("sub/staged.{ext}"));
            let mut staged = Staged::new(&staged_path).unwrap();
            for r in &d.results {
                staged.result(r).unwrap();
            }
            staged.write(&d.summary).unwrap();
            assert_eq!(
                std::fs::read_to_string(&staged_path).unwrap(),
                std::fs::read_to_string(&direct).unwrap(),
                "{ext}"
            );
        }
    }

    #[test]
    fn an_unwritable_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken.json");
        std::fs::create_dir(&path).unwrap();
        let e = write(&path, &data()).unwrap_err();
        assert!(
            format!("{e:#}").starts_with(&format!("cannot write {}: ", path.display())),
            "{e:#}"
        );
    }
}
