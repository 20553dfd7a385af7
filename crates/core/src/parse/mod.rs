//! Reads promptfoo suite files (YAML or JSON) into a validated [`Suite`].
//! Anything that would change results and that Gauntlet does not support is
//! an error naming the field, never a silent skip. Files a suite references
//! (`file://…`) come through a [`FileResolver`]; this crate does no I/O.

mod cases;
mod csv;
mod expansion;
mod items;
mod locate;
mod normalized;
mod prompts;
mod providers;
mod refs;

use std::{collections::BTreeMap, sync::OnceLock};

use regex::Regex;
use serde_json::Value;
use serde_yaml_ng::{Mapping, Value as Yaml};

pub use self::expansion::MAX_TESTS;
use crate::{
    error::SuiteError,
    js,
    suite::{Suite, TestCase},
    template::PromptRenderer,
};

pub use normalized::{
    NormalizedLines, normalized_header_line, normalized_test_line, parse_normalized,
    to_normalized_json,
};

/// Line and column (1-based) in a suite's YAML or JSON `text` of the field
/// at `path` (`providers[1].id`), or of its nearest ancestor found there.
pub fn field_position(text: &str, path: &str) -> Option<(usize, usize)> {
    locate::position(text, path)
}

/// How to read a suite's text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SuiteFormat {
    /// JSON when the first non-blank character is `{`, YAML otherwise.
    #[default]
    Auto,
    Yaml,
    Json,
}

/// Supplies the contents of files a suite references with `file://`.
pub trait FileResolver {
    /// The contents of `path` as written after `file://` (relative paths are
    /// relative to the suite file). The error is shown to the user.
    fn read(&self, path: &str) -> Result<String, String>;

    /// The contents of `path`, to be read in order a piece at a time (a
    /// JSONL test file of any size is read a line at a time). The default
    /// reads the whole file through [`FileResolver::read`].
    fn open(&self, path: &str) -> Result<Box<dyn std::io::BufRead + Send>, String> {
        let text = self.read(path)?;
        Ok(Box::new(std::io::Cursor::new(text.into_bytes())))
    }

    /// The files matching the glob `pattern` (as written after `file://`,
    /// e.g. `prompts/*.txt`), sorted, each in the form [`FileResolver::read`]
    /// accepts. Resolvers that cannot list files keep this default, which
    /// refuses with a message telling the user to list the files instead.
    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        Err(format!(
            "glob patterns (`{pattern}`) cannot be expanded here; list the files one by one"
        ))
    }
}

/// A resolver for suites submitted without their files: every reference fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFiles;

impl FileResolver for NoFiles {
    fn read(&self, _path: &str) -> Result<String, String> {
        Err(
            "the suite was submitted without the files it references; inline their content"
                .to_owned(),
        )
    }

    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        self.read(pattern).map(|_| Vec::new())
    }
}

/// Parses and validates a suite that references no files.
pub fn parse_suite(text: &str, format: SuiteFormat) -> Result<Suite, SuiteError> {
    parse_suite_with(text, format, &NoFiles)
}

/// Parses and validates a suite, reading referenced files through `files`.
pub fn parse_suite_with(
    text: &str,
    format: SuiteFormat,
    files: &dyn FileResolver,
) -> Result<Suite, SuiteError> {
    parse_suite_limited(text, format, files, MAX_TESTS)
}

/// [`parse_suite_with`], refusing a suite that expands into more than
/// `max_tests` test cases (array vars, scenarios); the limit is at most
/// [`MAX_TESTS`]. The count is known before any test is built, so a refusal
/// costs next to nothing.
pub fn parse_suite_limited(
    text: &str,
    format: SuiteFormat,
    files: &dyn FileResolver,
    max_tests: usize,
) -> Result<Suite, SuiteError> {
    let mut stream = parse_suite_stream(text, format, files, max_tests)?;
    let mut tests = Vec::new();
    let mut counted = false;
    while let Some(test) = stream.next() {
        tests.push(test?);
        // A stream counts its tests as they come; all of them at once are
        // counted before a test's many combinations are built, so a suite
        // over the limit costs a second read of its sources, not its tests.
        if !counted && stream.expanding() {
            counted = true;
            parse_suite_stream(text, format, files, max_tests)?.check_sources()?;
        }
    }
    Ok(Suite {
        tests,
        ..stream.header
    })
}

/// Parses and validates a suite's header (everything but its tests, as
/// [`parse_suite_limited`] gives it with `tests` empty) and returns it with
/// its tests still to come: [`SuiteStream`] reads, checks and builds them
/// one at a time, in the order `parse_suite_limited` lists them, so memory
/// holds the suite's text (and a test file's) but never all its tests. The
/// count against `max_tests` is kept as they come, and a test that expands
/// into many is counted before any of them is built.
pub fn parse_suite_stream<'a>(
    text: &'a str,
    format: SuiteFormat,
    files: &'a dyn FileResolver,
    max_tests: usize,
) -> Result<SuiteStream<'a>, SuiteError> {
    open(text, format, Files(files), max_tests).map_err(|err| locate::locate(text, err))
}

/// A suite's header and its tests, read as they are asked for (see
/// [`parse_suite_stream`]). Its items are exactly the tests of
/// [`parse_suite_limited`], or the first error, located in the suite's
/// text like every other, after which it ends.
pub struct SuiteStream<'a> {
    /// The suite without its tests.
    pub header: Suite,
    text: &'a str,
    files: Files<'a>,
    sources: cases::Sources<'a>,
    renderer: PromptRenderer,
    prompts: Vec<prompts::Entry>,
    vars: VarCheck,
    /// Each var file's value, read once for the whole suite.
    var_files: BTreeMap<String, Value>,
    /// The test source being expanded: its next combination and how many.
    current: Option<(cases::SourceTest, u64, u64)>,
    produced: usize,
    done: bool,
}

impl SuiteStream<'_> {
    fn next_test(&mut self) -> Option<Result<TestCase, SuiteError>> {
        loop {
            if let Some((source, next, count)) = &mut self.current
                && *next < *count
            {
                let n = *next;
                *next += 1;
                let test = match cases::build(
                    source,
                    n,
                    self.renderer.env(),
                    &self.files,
                    &mut self.var_files,
                ) {
                    Ok(test) => test,
                    Err(err) => return Some(Err(err)),
                };
                let i = self.produced;
                self.produced += 1;
                let rendered = i == 0
                    || (i + 1).saturating_mul(self.header.prompts.len()) <= DRY_RENDER_BUDGET;
                if rendered && let Err(err) = dry_render(&self.renderer, i, &test) {
                    let entry = prompt_entry(&err, &self.prompts);
                    return Some(Err(at_prompt(
                        self.text,
                        with_origin(err, entry.and_then(|p| p.origin.as_deref())),
                        entry,
                    )));
                }
                return Some(Ok(test));
            }
            let source = match self.sources.next()? {
                Ok(source) => source,
                Err(err) => return Some(Err(err)),
            };
            self.vars.see(&source);
            if self.vars.failing {
                return Some(Err(self.vars_error()));
            }
            let count = cases::combinations(&source);
            self.current = Some((source, 0, count));
        }
    }

    /// Whether the test source being built expands into several tests.
    fn expanding(&self) -> bool {
        matches!(&self.current, Some((_, _, count)) if *count > 1)
    }

    /// Reads every test source without building a test: their errors, an
    /// oversized suite's included, in the order the whole suite meets them.
    fn check_sources(mut self) -> Result<(), SuiteError> {
        let checked = (|| {
            for source in &mut self.sources {
                self.vars.see(&source?);
                if self.vars.failing {
                    return Err(self.vars_error());
                }
            }
            Ok(())
        })();
        checked.map_err(|err| locate::locate(self.text, err))
    }

    /// Some test leaves a prompt's var undefined: the error the whole suite
    /// gives, which needs every source read (an error among them first).
    fn vars_error(&mut self) -> SuiteError {
        for source in &mut self.sources {
            match source {
                Ok(source) => self.vars.see(&source),
                Err(err) => return err,
            }
        }
        let err = self.vars.error();
        let entry = prompt_entry(&err, &self.prompts);
        at_prompt(self.text, err, entry)
    }
}

impl Iterator for SuiteStream<'_> {
    type Item = Result<TestCase, SuiteError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.next_test();
        if !matches!(next, Some(Ok(_))) {
            self.done = true;
        }
        next.map(|test| test.map_err(|err| locate::locate(self.text, err)))
    }
}

fn open<'a>(
    text: &'a str,
    format: SuiteFormat,
    files: Files<'a>,
    max_tests: usize,
) -> Result<SuiteStream<'a>, SuiteError> {
    // The tests are most of a large suite: they are left in the text and
    // read one at a time (`items`), unless the suite's `$ref`s or aliases
    // may reach into them; then the whole tree is read, and each test is
    // still dropped as soon as it is parsed.
    let (mut doc, tests_value) = match split_json(text, format) {
        Some((rest, tests)) => (Yaml::Mapping(rest), tests),
        None => match split_yaml(text, format) {
            Some((rest, items)) => (
                Yaml::Mapping(rest),
                Some(cases::TestsValue::YamlItems(items)),
            ),
            None => {
                let mut doc = load_document(text, format)?;
                refs::resolve(&mut doc)?;
                let tests = match &mut doc {
                    Yaml::Mapping(map) => map.shift_remove("tests").map(cases::TestsValue::Yaml),
                    _ => None,
                };
                (doc, tests)
            }
        },
    };
    let scenarios_value = match &mut doc {
        Yaml::Mapping(map) => map.shift_remove("scenarios"),
        _ => None,
    };
    let map = match &doc {
        Yaml::Mapping(map) => map,
        Yaml::Null => return Err(SuiteError::at("", "the suite is empty")),
        other => {
            return Err(SuiteError::at(
                "",
                format!(
                    "a suite must be a mapping with `prompts`, `providers` and `tests`, not {}",
                    kind(other)
                ),
            ));
        }
    };
    let mut description = None;
    let mut prompts_value = None;
    let mut providers_value: Option<(&str, &Yaml)> = None;
    let mut default_value = None;
    let mut env = BTreeMap::new();
    let mut max_concurrency = None;
    let mut repeat = None;
    for (key, value) in entries(map, "")? {
        match key {
            "description" => description = optional_string(value, key)?,
            "prompts" => prompts_value = Some(value),
            "providers" | "targets" => {
                if let Some((other, _)) = providers_value {
                    return Err(SuiteError::at(
                        key,
                        format!(
                            "`{other}` is already given; use either `providers` or `targets`, not both"
                        ),
                    ));
                }
                providers_value = Some((key, value));
            }
            "defaultTest" => default_value = Some(value),
            "env" => env = parse_env(value)?,
            "evaluateOptions" => {
                (max_concurrency, repeat) = parse_evaluate_options(value)?;
            }
            // Output and UI settings that do not change results; assertion
            // templates were already substituted where `$ref` names them.
            "sharing" | "outputPath" | "writeLatestResults" | "tags" | "metadata" | "tracing"
            | "assertionTemplates" => {}
            k if k.starts_with('$') => {}
            "nunjucksFilters" => {
                return Err(unsupported(
                    key,
                    "custom Nunjucks filters are JavaScript, which Gauntlet does not run",
                ));
            }
            "extensions" => {
                return Err(unsupported(
                    key,
                    "extension hooks are user code, which Gauntlet does not run",
                ));
            }
            "derivedMetrics" => return Err(unsupported(key, "derived metrics are not supported")),
            "redteam" => return Err(unsupported(key, "red-team generation is not supported")),
            "commandLineOptions" => {
                return Err(unsupported(
                    key,
                    "`commandLineOptions` are not supported; pass options to the gauntlet CLI",
                ));
            }
            other => {
                return Err(SuiteError::at(
                    other,
                    unknown_key_message(
                        other,
                        &[
                            "description",
                            "prompts",
                            "providers",
                            "targets",
                            "tests",
                            "defaultTest",
                            "scenarios",
                            "env",
                            "evaluateOptions",
                            "assertionTemplates",
                        ],
                    ),
                ));
            }
        }
    }

    let prompts = prompts::parse(prompts_value, &files)?;
    let providers = providers::parse(providers_value)?;
    let default = cases::parse_default(default_value, &files)?;
    if u32::try_from(prompts.len()).is_err() {
        return Err(SuiteError::at("prompts", "the suite has too many prompts"));
    }
    let header = Suite {
        description,
        prompts: prompts.iter().map(|p| p.prompt.clone()).collect(),
        providers,
        tests: Vec::new(),
        env,
        max_concurrency,
        repeat,
    };
    let renderer = PromptRenderer::new(&header).map_err(|err| {
        let entry = prompt_entry(&err, &prompts);
        at_prompt(
            text,
            with_origin(err, entry.and_then(|p| p.origin.as_deref())),
            entry,
        )
    })?;
    // `tests` and `scenarios` claim their test cases from one budget as
    // they are read, so an oversized product is refused before it exists.
    let sources = cases::Sources::new(
        tests_value,
        scenarios_value,
        default,
        files,
        expansion::TestBudget::new(max_tests),
    );
    let vars = VarCheck::new(&renderer, &prompts);
    let mut stream = SuiteStream {
        header,
        text,
        files,
        sources,
        renderer,
        prompts,
        vars,
        var_files: BTreeMap::new(),
        current: None,
        produced: 0,
        done: false,
    };
    if stream.vars.failing {
        return Err(stream.vars_error());
    }
    Ok(stream)
}

/// The prompt an error at `prompts[k]` is about.
fn prompt_entry<'a>(err: &SuiteError, prompts: &'a [prompts::Entry]) -> Option<&'a prompts::Entry> {
    err.path
        .strip_prefix("prompts[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|k| k.parse::<usize>().ok())
        .and_then(|k| prompts.get(k))
}

/// Points an error about the prompt `entry` (numbered after file prompts are
/// split) at the item of `prompts` it came from.
fn at_prompt(text: &str, mut err: SuiteError, entry: Option<&prompts::Entry>) -> SuiteError {
    if let Some(entry) = entry
        && err.line.is_none()
        && let Some((line, column)) = locate::position(text, &entry.item)
    {
        err.line = Some(line);
        err.column = Some(column);
    }
    err
}

/// Most prompt renderings checked at load time: every prompt is rendered
/// with the vars of each test while tests × prompts stays within it, and
/// with the first test's always, so huge suites still load quickly.
const DRY_RENDER_BUDGET: usize = 100_000;

/// Renders every prompt with test `i`'s vars, so failures that only show
/// when rendering (an unknown filter, `load` of text that is not JSON) are
/// reported before any task is queued.
fn dry_render(renderer: &PromptRenderer, i: usize, test: &TestCase) -> Result<(), SuiteError> {
    for k in 0..renderer.prompt_count() {
        if let Err(err) = renderer.render(k, &test.vars) {
            let which = match &test.description {
                Some(d) => format!("test case {i} (`{d}`)"),
                None => format!("test case {i}"),
            };
            return Err(SuiteError::at(
                format!("prompts[{k}]"),
                format!("cannot render with the vars of {which}: {}", err.message),
            ));
        }
    }
    Ok(())
}

/// Every var a prompt uses must be defined by every test. Kept as test
/// sources stream by: for each prompt's var, whether some test defines it
/// and the first that does not.
struct VarCheck {
    uses: Vec<VarUse>,
    /// An error is certain (then the rest of the sources is read for it).
    failing: bool,
}

struct VarUse {
    prompt: usize,
    var: String,
    /// ` (from prompts/a.txt)`, or empty.
    from: String,
    defined: bool,
    /// The first test without it: its path and origin.
    missing: Option<(String, Option<String>)>,
}

impl VarCheck {
    fn new(renderer: &PromptRenderer, prompts: &[prompts::Entry]) -> Self {
        let mut uses = Vec::new();
        for (k, entry) in prompts.iter().enumerate() {
            let from = entry
                .origin
                .as_deref()
                .map(|o| format!(" (from {o})"))
                .unwrap_or_default();
            for var in renderer.variables(k) {
                uses.push(VarUse {
                    prompt: k,
                    var,
                    from: from.clone(),
                    defined: false,
                    missing: None,
                });
            }
        }
        let failing = uses.iter().any(|u| u.var == "_conversation");
        Self { uses, failing }
    }

    fn see(&mut self, test: &cases::SourceTest) {
        for used in &mut self.uses {
            if test.defines(&used.var) {
                used.defined = true;
            } else if used.missing.is_none() {
                used.missing = Some((test.path.clone(), test.origin.clone()));
                self.failing = true;
            }
        }
    }

    /// The error for the first prompt and var at fault, once every test
    /// was seen.
    fn error(&self) -> SuiteError {
        for used in &self.uses {
            let (k, var, from) = (used.prompt, &used.var, &used.from);
            if var == "_conversation" {
                return SuiteError::at(
                    format!("prompts[{k}]"),
                    format!(
                        "uses `_conversation` (multi-turn history), which Gauntlet does not support{from}"
                    ),
                );
            }
            if !used.defined {
                return SuiteError::at(
                    format!("prompts[{k}]"),
                    format!("uses var `{var}`, which no test defines{from}"),
                );
            }
            if let Some((path, origin)) = &used.missing {
                return with_origin(
                    SuiteError::at(
                        format!("{path}.vars"),
                        format!(
                            "prompt prompts[{k}] uses var `{var}`, which this test does not define"
                        ),
                    ),
                    origin.as_deref(),
                );
            }
        }
        SuiteError::at("prompts", "a prompt uses a var some test does not define")
    }
}

/// A JSON suite object without `$ref`s, split into everything but `tests`
/// (as a tree) and the items of `tests` (as text, read one at a time). `None` when the text is
/// not that: the whole-document path then parses it, errors included.
fn split_json(
    text: &str,
    format: SuiteFormat,
) -> Option<(serde_yaml_ng::Mapping, Option<cases::TestsValue<'_>>)> {
    #[derive(serde::Deserialize)]
    struct Split<'a> {
        #[serde(borrow, default)]
        tests: Option<&'a serde_json::value::RawValue>,
        #[serde(flatten)]
        rest: serde_yaml_ng::Mapping,
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let json = match format {
        SuiteFormat::Json => true,
        SuiteFormat::Yaml => false,
        SuiteFormat::Auto => text.trim_start().starts_with('{'),
    };
    if !json || text.contains("\"$ref\"") {
        return None;
    }
    let split: Split<'_> = serde_json::from_str(text).ok()?;
    let tests = match split.tests {
        None => None,
        Some(raw) if raw.get().trim_start().starts_with('[') => Some(cases::TestsValue::JsonItems(
            items::JsonItems::new(raw.get()),
        )),
        Some(raw) => Some(cases::TestsValue::Yaml(
            serde_json::from_str(raw.get()).ok()?,
        )),
    };
    Some((split.rest, tests))
}

/// A YAML suite without `$ref`s split like [`split_json`] (see `items`).
fn split_yaml(
    text: &str,
    format: SuiteFormat,
) -> Option<(serde_yaml_ng::Mapping, items::YamlItems<'_>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let yaml = match format {
        SuiteFormat::Json => false,
        SuiteFormat::Yaml => true,
        SuiteFormat::Auto => !text.trim_start().starts_with('{'),
    };
    if !yaml || text.contains("$ref") {
        return None;
    }
    items::split_yaml(text)
}

fn load_document(text: &str, format: SuiteFormat) -> Result<Yaml, SuiteError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let json = match format {
        SuiteFormat::Json => true,
        SuiteFormat::Yaml => false,
        SuiteFormat::Auto => text.trim_start().starts_with('{'),
    };
    if json {
        serde_json::from_str::<Yaml>(text).map_err(|err| {
            SuiteError::syntax(
                Some(err.line()),
                Some(err.column()),
                format!("invalid JSON: {}", strip_location(&err.to_string())),
            )
        })
    } else {
        parse_yaml(text).map_err(|err| {
            let location = err.location();
            SuiteError::syntax(
                location.as_ref().map(|l| l.line()),
                location.as_ref().map(|l| l.column()),
                format!("invalid YAML: {}", strip_location(&err.to_string())),
            )
        })
    }
}

/// YAML with merge keys (`<<: *anchor`) applied, as js-yaml does.
fn parse_yaml(text: &str) -> Result<Yaml, serde_yaml_ng::Error> {
    let mut value: Yaml = serde_yaml_ng::from_str(text)?;
    value.apply_merge()?;
    Ok(value)
}

fn strip_location(message: &str) -> String {
    static LOCATION: OnceLock<Regex> = OnceLock::new();
    let re = LOCATION.get_or_init(|| {
        Regex::new(r"\s+at (line \d+ column \d+|position \d+)").expect("static regex")
    });
    re.replace_all(message, "").into_owned()
}

fn parse_env(value: &Yaml) -> Result<BTreeMap<String, String>, SuiteError> {
    let mut env = BTreeMap::new();
    if value.is_null() {
        return Ok(env);
    }
    for (key, v) in entries(expect_map(value, "env")?, "env")? {
        let path = join("env", key);
        let text = match v {
            Yaml::String(s) => s.clone(),
            Yaml::Bool(_) | Yaml::Number(_) => js::value_to_string(&to_json(v, &path)?),
            Yaml::Null => String::new(),
            other => {
                return Err(SuiteError::at(
                    path,
                    format!("expected a string, found {}", kind(other)),
                ));
            }
        };
        env.insert(key.to_owned(), text);
    }
    Ok(env)
}

fn parse_evaluate_options(value: &Yaml) -> Result<(Option<u32>, Option<u32>), SuiteError> {
    let mut max_concurrency = None;
    let mut repeat = None;
    if value.is_null() {
        return Ok((None, None));
    }
    for (key, v) in entries(expect_map(value, "evaluateOptions")?, "evaluateOptions")? {
        let path = join("evaluateOptions", key);
        match key {
            "maxConcurrency" => max_concurrency = Some(positive_u32(v, &path)?),
            "repeat" => repeat = Some(positive_u32(v, &path)?),
            // Pacing, caching and display: results do not depend on them.
            "delay"
            | "cache"
            | "showProgressBar"
            | "generateSuggestions"
            | "interactiveProviders"
            | "silent" => {}
            "timeoutMs" | "maxEvalTimeMs" => {
                return Err(unsupported(
                    &path,
                    "timeouts are set on the Gauntlet worker, not in the suite",
                ));
            }
            other => {
                return Err(SuiteError::at(
                    path,
                    format!(
                        "evaluate option `{other}` is not supported (supported: maxConcurrency, repeat, delay, cache)"
                    ),
                ));
            }
        }
    }
    Ok((max_concurrency, repeat))
}

/// Resolver wrapper that turns failures into field errors.
#[derive(Clone, Copy)]
pub(super) struct Files<'a>(&'a dyn FileResolver);

impl Files<'_> {
    /// `reference` itself, or the files its glob pattern matches (each as
    /// `file://…`), for the field at `path`.
    pub(super) fn expand(&self, reference: &str, path: &str) -> Result<Vec<String>, SuiteError> {
        let file = file_path(reference);
        if !is_glob(file) {
            return Ok(vec![reference.to_owned()]);
        }
        let matches = self.0.glob(file).map_err(|err| {
            SuiteError::at(
                path,
                format!("cannot expand the glob `file://{file}`: {err}"),
            )
        })?;
        if matches.is_empty() {
            return Err(SuiteError::at(
                path,
                format!("no file matches `file://{file}`"),
            ));
        }
        Ok(matches.into_iter().map(|m| format!("file://{m}")).collect())
    }

    /// Reads `reference` (with or without `file://`) for the field at `path`.
    pub(super) fn read(&self, reference: &str, path: &str) -> Result<String, SuiteError> {
        let file = single_file(reference, path)?;
        self.0
            .read(file)
            .map_err(|err| SuiteError::at(path, format!("cannot read `file://{file}`: {err}")))
    }

    /// Opens `reference` to be read a piece at a time, for the field at `path`.
    pub(super) fn open(
        &self,
        reference: &str,
        path: &str,
    ) -> Result<Box<dyn std::io::BufRead + Send>, SuiteError> {
        let file = single_file(reference, path)?;
        self.0
            .open(file)
            .map_err(|err| SuiteError::at(path, format!("cannot read `file://{file}`: {err}")))
    }
}

/// The file `reference` names; a glob is refused where one file is meant.
fn single_file<'r>(reference: &'r str, path: &str) -> Result<&'r str, SuiteError> {
    let file = file_path(reference);
    if is_glob(file) {
        return Err(SuiteError::at(
            path,
            format!(
                "glob patterns in file references (`{reference}`) are not supported; list the files"
            ),
        ));
    }
    Ok(file)
}

pub(super) fn is_glob(file: &str) -> bool {
    file.contains(['*', '?', '[', '{'])
}

pub(super) fn file_path(reference: &str) -> &str {
    reference.strip_prefix("file://").unwrap_or(reference)
}

/// Lower-case extension of a file reference, without the dot.
pub(super) fn extension(reference: &str) -> String {
    let file = file_path(reference);
    let name = file.rsplit(['/', '\\']).next().unwrap_or(file);
    name.rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default()
}

pub(super) fn kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a list",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn unsupported(path: &str, message: &str) -> SuiteError {
    SuiteError::at(path, message)
}

/// Notes the file (`row 2 of file://t.csv`) an error's field came from.
pub(super) fn with_origin(mut err: SuiteError, origin: Option<&str>) -> SuiteError {
    if let Some(origin) = origin {
        err.message = format!("{} (in {origin})", err.message);
        if err.file.is_none()
            && let Some(at) = origin.find("file://")
        {
            err.file = Some(origin[at + "file://".len()..].to_owned());
        }
    }
    err
}

pub(super) fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let suggestion = known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    format!(
        "unknown key `{key}`{suggestion} (expected one of: {})",
        known.join(", ")
    )
}

pub(super) fn expect_map<'a>(value: &'a Yaml, path: &str) -> Result<&'a Mapping, SuiteError> {
    match value {
        Yaml::Mapping(map) => Ok(map),
        other => Err(SuiteError::at(
            path,
            format!("expected a mapping, found {}", kind(other)),
        )),
    }
}

/// Entries of a mapping whose keys must be strings.
pub(super) fn entries<'a>(
    map: &'a Mapping,
    path: &str,
) -> Result<Vec<(&'a str, &'a Yaml)>, SuiteError> {
    map.iter()
        .map(|(k, v)| match k.as_str() {
            Some(key) => Ok((key, v)),
            None => Err(SuiteError::at(
                path,
                format!("keys must be strings, found {}", kind(k)),
            )),
        })
        .collect()
}

pub(super) fn expect_str<'a>(value: &'a Yaml, path: &str) -> Result<&'a str, SuiteError> {
    value
        .as_str()
        .ok_or_else(|| SuiteError::at(path, format!("expected a string, found {}", kind(value))))
}

/// A string field that also accepts numbers (YAML `description: 2024`).
pub(super) fn optional_string(value: &Yaml, path: &str) -> Result<Option<String>, SuiteError> {
    match value {
        Yaml::Null => Ok(None),
        Yaml::String(s) => Ok(Some(s.clone())),
        Yaml::Number(_) | Yaml::Bool(_) => Ok(Some(js::value_to_string(&to_json(value, path)?))),
        other => Err(SuiteError::at(
            path,
            format!("expected a string, found {}", kind(other)),
        )),
    }
}

pub(super) fn optional_number(value: &Yaml, path: &str) -> Result<Option<f64>, SuiteError> {
    match value {
        Yaml::Null => Ok(None),
        Yaml::Number(n) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => Err(SuiteError::at(path, "expected a finite number")),
        },
        other => Err(SuiteError::at(
            path,
            format!("expected a number, found {}", kind(other)),
        )),
    }
}

pub(super) fn optional_bool(value: &Yaml, path: &str) -> Result<bool, SuiteError> {
    match value {
        Yaml::Null => Ok(false),
        Yaml::Bool(b) => Ok(*b),
        other => Err(SuiteError::at(
            path,
            format!("expected true or false, found {}", kind(other)),
        )),
    }
}

fn positive_u32(value: &Yaml, path: &str) -> Result<u32, SuiteError> {
    value
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| SuiteError::at(path, "expected a positive whole number"))
}

/// A YAML value as JSON, with JavaScript's rules for non-string keys.
pub(super) fn to_json(value: &Yaml, path: &str) -> Result<Value, SuiteError> {
    Ok(match value {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
                    .ok_or_else(|| SuiteError::at(path, "`.nan` and `.inf` are not valid values"))?
            }
        }
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| to_json(item, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Null => "null".to_owned(),
                    Yaml::Bool(_) | Yaml::Number(_) => js::value_to_string(&to_json(k, path)?),
                    other => {
                        return Err(SuiteError::at(
                            path,
                            format!("mapping keys must be strings, found {}", kind(other)),
                        ));
                    }
                };
                let child = join(path, &key);
                out.insert(key, to_json(v, &child)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(tagged) => {
            return Err(SuiteError::at(
                path,
                format!("YAML tags (`{}`) are not supported", tagged.tag),
            ));
        }
    })
}

#[cfg(test)]
mod tests;
