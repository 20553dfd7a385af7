//! `tests` and `defaultTest`: merging defaults into each test, expanding
//! array vars into one test per combination (promptfoo's var expansion,
//! counted against the suite's limit before it is built; see `expansion`),
//! loading `file://` vars, and rendering and validating assertion values.

use std::collections::BTreeMap;

use minijinja::Environment;
use serde_json::{Map, Value};
use serde_yaml_ng::Value as Yaml;

use super::{
    Files, csv, entries,
    expansion::{self, TestBudget},
    expect_map, expect_str, extension, file_path,
    items::{JsonItems, YamlItems},
    join, kind, optional_bool, optional_number, optional_string, parse_yaml, to_json,
    unknown_key_message, with_origin,
};
use crate::{
    error::SuiteError,
    grading::{self, pattern, schema},
    suite::{Assertion, AssertionKind, GraderSpec, TestCase},
    template,
};

/// promptfoo assertion types Gauntlet knows about but does not grade.
const MODEL_GRADED: [&str; 22] = [
    "answer-relevance",
    "classifier",
    "context-faithfulness",
    "context-recall",
    "context-relevance",
    "conversation-relevance",
    "factuality",
    "g-eval",
    "llm-rubric",
    "model-graded-closedqa",
    "model-graded-factuality",
    "moderation",
    "similar",
    "similar:cosine",
    "similar:dot",
    "similar:euclidean",
    "search-rubric",
    "select-best",
    "max-score",
    "pi",
    "guardrails",
    "is-refusal",
];
const USER_CODE: [&str; 4] = ["javascript", "python", "ruby", "webhook"];

pub(super) use super::expansion::MAX_TESTS;

/// One test as written, with `defaultTest` merged in, before var expansion.
pub(super) struct SourceTest {
    /// `tests[3]`: where the test is in the suite (file rows count in order).
    pub path: String,
    /// `row 2 of file://tests.csv` for tests that came from a file.
    pub origin: Option<String>,
    description: Option<String>,
    vars: Vec<(String, Yaml)>,
    asserts: Vec<SourceAssertion>,
    threshold: Option<f64>,
    metadata: Map<String, Value>,
    expand_vars: bool,
}

impl SourceTest {
    pub(super) fn defines(&self, var: &str) -> bool {
        self.vars.iter().any(|(name, _)| name == var)
    }
}

struct SourceAssertion {
    /// `tests[3].assert[0]` or `defaultTest.assert[1]`.
    path: String,
    from_default: bool,
    assertion: Assertion,
}

/// A test or `defaultTest` mapping, parsed.
#[derive(Default)]
pub(super) struct RawTest {
    description: Option<String>,
    vars: Vec<(String, Yaml)>,
    asserts: Vec<(String, Assertion)>,
    threshold: Option<f64>,
    metadata: Map<String, Value>,
    options: BTreeMap<String, bool>,
    /// `options.provider`: who grades the model-graded assertions.
    grader: Option<GraderSpec>,
}

pub(super) fn parse_default(value: Option<&Yaml>, files: &Files) -> Result<RawTest, SuiteError> {
    let Some(value) = value else {
        return Ok(RawTest::default());
    };
    match value {
        Yaml::Null => Ok(RawTest::default()),
        Yaml::String(reference) => {
            let doc = load_yaml_file(reference, "defaultTest", files)?;
            parse_test(&doc, "defaultTest", true, files)
        }
        other => parse_test(other, "defaultTest", true, files),
    }
}

/// A suite's `tests`: a YAML value, or the items of an inline list still
/// as text (each is read into a tree only when its turn comes).
pub(super) enum TestsValue<'a> {
    Yaml(Yaml),
    JsonItems(JsonItems<'a>),
    YamlItems(YamlItems<'a>),
}

impl TestsValue<'_> {
    /// `tests: []`, which scenarios may stand in for.
    pub(super) fn is_empty_list(&self) -> bool {
        match self {
            TestsValue::Yaml(Yaml::Sequence(items)) => items.is_empty(),
            TestsValue::Yaml(_) => false,
            TestsValue::JsonItems(items) => items.clone().next().is_none(),
            TestsValue::YamlItems(items) => items.is_empty(),
        }
    }
}

/// The items of `tests`, one at a time.
enum TestItems<'a> {
    Tree(std::vec::IntoIter<Yaml>),
    Json(JsonItems<'a>),
    Yaml(YamlItems<'a>),
}

impl TestItems<'_> {
    /// Item `i`, read into a tree.
    fn next(&mut self, i: usize) -> Option<Result<Yaml, SuiteError>> {
        match self {
            TestItems::Tree(items) => items.next().map(Ok),
            TestItems::Json(items) => items.next().map(|raw| {
                serde_json::from_str(raw)
                    .map_err(|e| SuiteError::at(format!("tests[{i}]"), e.to_string()))
            }),
            TestItems::Yaml(items) => items.next(),
        }
    }
}

enum Phase<'a> {
    /// Neither `tests` nor `scenarios`.
    Missing,
    /// `tests` of another kind than a list or a file.
    Invalid(SuiteError),
    Tests(TestItems<'a>),
    Scenarios(Box<Scenarios>),
    Done,
}

/// A suite's test sources (each test as written, `defaultTest` merged in),
/// in order: the items of `tests`, a file's rows in turn, then the
/// scenarios' products. Each is read only when asked for, and claims its
/// var combinations from the suite's budget as it is read, so an oversized
/// suite is refused before its tests exist, and a large one never exists
/// whole.
pub(super) struct Sources<'a> {
    files: Files<'a>,
    default: RawTest,
    budget: TestBudget,
    phase: Phase<'a>,
    /// The file of `tests` (or of one of its items) being read.
    file: Option<FileItems<'a>>,
    scenarios: Option<Yaml>,
    /// Items of `tests` read so far.
    items: usize,
    /// Whether `tests` must yield a test (scenarios stand in for none).
    require_tests: bool,
    /// Sources produced by `tests` (they are named `tests[n]`) and in all.
    from_tests: usize,
    produced: usize,
    done: bool,
}

impl<'a> Sources<'a> {
    pub(super) fn new(
        tests: Option<TestsValue<'a>>,
        scenarios: Option<Yaml>,
        default: RawTest,
        files: Files<'a>,
        budget: TestBudget,
    ) -> Self {
        // promptfoo runs a suite's scenarios after its tests; with
        // scenarios, `tests` may be left out (or empty).
        let skip_tests =
            scenarios.is_some() && tests.as_ref().is_none_or(TestsValue::is_empty_list);
        let mut file = None;
        let phase = match tests {
            _ if skip_tests => Phase::Tests(TestItems::Tree(Vec::new().into_iter())),
            None => Phase::Missing,
            Some(TestsValue::JsonItems(items)) => Phase::Tests(TestItems::Json(items)),
            Some(TestsValue::YamlItems(items)) => Phase::Tests(TestItems::Yaml(items)),
            Some(TestsValue::Yaml(Yaml::Sequence(items))) => {
                Phase::Tests(TestItems::Tree(items.into_iter()))
            }
            Some(TestsValue::Yaml(Yaml::String(reference))) => {
                file = Some(FileItems::new(reference, "tests".to_owned(), files));
                Phase::Tests(TestItems::Tree(Vec::new().into_iter()))
            }
            Some(TestsValue::Yaml(Yaml::Null)) => {
                Phase::Tests(TestItems::Tree(Vec::new().into_iter()))
            }
            Some(TestsValue::Yaml(other)) => Phase::Invalid(SuiteError::at(
                "tests",
                format!("expected a list of tests, found {}", kind(&other)),
            )),
        };
        Self {
            files,
            default,
            budget,
            phase,
            file,
            scenarios,
            items: 0,
            require_tests: !skip_tests,
            from_tests: 0,
            produced: 0,
            done: false,
        }
    }

    /// A test of `tests` (or a row of its files), parsed and claimed.
    fn read_test(&mut self, doc: &Yaml, origin: Option<String>) -> Result<SourceTest, SuiteError> {
        let path = format!("tests[{}]", self.from_tests);
        let raw = parse_test(doc, &path, false, &self.files)
            .map_err(|e| with_origin(e, origin.as_deref()))?;
        let source = merge(path, origin, raw, &self.default);
        claim(&source, &mut self.budget)?;
        self.from_tests += 1;
        Ok(source)
    }

    fn advance(&mut self) -> Option<Result<SourceTest, SuiteError>> {
        loop {
            if let Some(file) = &mut self.file {
                match file.next() {
                    Some(Ok((doc, origin))) => return Some(self.read_test(&doc, Some(origin))),
                    Some(Err(err)) => return Some(Err(err)),
                    None => self.file = None,
                }
            }
            match &mut self.phase {
                Phase::Missing => {
                    return Some(Err(SuiteError::at(
                        "tests",
                        "missing; the suite needs at least one test",
                    )));
                }
                Phase::Invalid(err) => return Some(Err(err.clone())),
                Phase::Tests(items) => {
                    let i = self.items;
                    match items.next(i) {
                        Some(Ok(item)) => {
                            self.items += 1;
                            match item {
                                Yaml::String(reference) => {
                                    self.file = Some(FileItems::new(
                                        reference,
                                        format!("tests[{i}]"),
                                        self.files,
                                    ));
                                }
                                Yaml::Mapping(_) => return Some(self.read_test(&item, None)),
                                other => {
                                    return Some(Err(SuiteError::at(
                                        format!("tests[{i}]"),
                                        format!(
                                            "expected a test (a mapping) or a file reference, found {}",
                                            kind(&other)
                                        ),
                                    )));
                                }
                            }
                        }
                        Some(Err(err)) => return Some(Err(err)),
                        None => {
                            if self.require_tests && self.from_tests == 0 {
                                return Some(Err(SuiteError::at(
                                    "tests",
                                    "the suite needs at least one test",
                                )));
                            }
                            self.phase = match self.scenarios.take() {
                                Some(value) => match Scenarios::new(value) {
                                    Ok(scenarios) => Phase::Scenarios(Box::new(scenarios)),
                                    Err(err) => return Some(Err(err)),
                                },
                                None => Phase::Done,
                            };
                        }
                    }
                }
                Phase::Scenarios(scenarios) => {
                    match scenarios.next(&self.default, &self.files, &mut self.budget) {
                        Some(source) => return Some(source),
                        None => {
                            self.phase = Phase::Done;
                            if self.produced == 0 {
                                return Some(Err(SuiteError::at(
                                    "scenarios",
                                    "the suite needs at least one test or scenario",
                                )));
                            }
                        }
                    }
                }
                Phase::Done => return None,
            }
        }
    }
}

impl Iterator for Sources<'_> {
    type Item = Result<SourceTest, SuiteError>;

    /// Ends after the first error.
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.advance();
        match &next {
            Some(Ok(_)) => self.produced += 1,
            _ => self.done = true,
        }
        next
    }
}

/// promptfoo's `scenarios`: each scenario runs every test of its `tests`
/// (one empty test when absent) once per entry of its `config`, the entry's
/// vars, assertions and metadata under the test's own. Each scenario's
/// product is counted against the budget before any of it is built, then
/// built one test at a time.
struct Scenarios {
    items: std::iter::Enumerate<std::vec::IntoIter<Yaml>>,
    current: Option<Scenario>,
}

struct Scenario {
    path: String,
    configs: Vec<Yaml>,
    /// Each test's path, mapping and file.
    tests: Vec<(String, Yaml, Option<String>)>,
    /// The next config entry and test, and the entry, parsed.
    config: usize,
    test: usize,
    data: Option<RawTest>,
}

impl Scenarios {
    fn new(value: Yaml) -> Result<Self, SuiteError> {
        let items = match value {
            Yaml::Null => Vec::new(),
            Yaml::Sequence(items) => items,
            other => {
                return Err(SuiteError::at(
                    "scenarios",
                    format!("expected a list of scenarios, found {}", kind(&other)),
                ));
            }
        };
        Ok(Self {
            items: items.into_iter().enumerate(),
            current: None,
        })
    }

    fn next(
        &mut self,
        default: &RawTest,
        files: &Files,
        budget: &mut TestBudget,
    ) -> Option<Result<SourceTest, SuiteError>> {
        loop {
            if let Some(scenario) = &mut self.current {
                match scenario.next(default, files, budget) {
                    Some(source) => return Some(source),
                    None => self.current = None,
                }
            }
            let (i, item) = self.items.next()?;
            match Scenario::open(i, &item, files, budget) {
                Ok(scenario) => self.current = Some(scenario),
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

impl Scenario {
    fn open(i: usize, item: &Yaml, files: &Files, budget: &TestBudget) -> Result<Self, SuiteError> {
        let spath = format!("scenarios[{i}]");
        let mut configs = None;
        let mut tests = Vec::new();
        for (key, v) in entries(expect_map(item, &spath)?, &spath)? {
            let field = join(&spath, key);
            match key {
                "description" => {
                    optional_string(v, &field)?;
                }
                "config" => match v {
                    Yaml::Sequence(list) => configs = Some(list.clone()),
                    other => {
                        return Err(SuiteError::at(
                            field,
                            format!("expected a list of test settings, found {}", kind(other)),
                        ));
                    }
                },
                "tests" => {
                    let list: Vec<&Yaml> = match v {
                        Yaml::Sequence(list) => list.iter().collect(),
                        Yaml::Null => Vec::new(),
                        single => vec![single],
                    };
                    for (j, test) in list.into_iter().enumerate() {
                        let tpath = format!("{field}[{j}]");
                        match test {
                            Yaml::String(reference) => {
                                for row in FileItems::new(reference.clone(), tpath.clone(), *files)
                                {
                                    let (doc, origin) = row?;
                                    tests.push((tpath.clone(), doc, Some(origin)));
                                }
                            }
                            other => tests.push((tpath, other.clone(), None)),
                        }
                    }
                }
                other => {
                    return Err(SuiteError::at(
                        field,
                        unknown_key_message(other, &["description", "config", "tests"]),
                    ));
                }
            }
        }
        let configs = configs.ok_or_else(|| {
            SuiteError::at(
                join(&spath, "config"),
                "missing; a scenario needs a `config` list",
            )
        })?;
        if tests.is_empty() {
            tests.push((
                format!("{spath}.tests[0]"),
                Yaml::Mapping(Default::default()),
                None,
            ));
        }
        budget.check(
            &spath,
            expansion::product(configs.len(), tests.len()),
            &format!(
                "crosses {} config entries with {} tests into",
                configs.len(),
                tests.len()
            ),
        )?;
        Ok(Self {
            path: spath,
            configs,
            tests,
            config: 0,
            test: 0,
            data: None,
        })
    }

    fn next(
        &mut self,
        default: &RawTest,
        files: &Files,
        budget: &mut TestBudget,
    ) -> Option<Result<SourceTest, SuiteError>> {
        let entry = self.configs.get(self.config)?;
        let cpath = format!("{}.config[{}]", self.path, self.config);
        let data = match &mut self.data {
            Some(data) => data,
            slot @ None => match parse_test(entry, &cpath, false, files) {
                Ok(data) => slot.insert(data),
                Err(err) => return Some(Err(err)),
            },
        };
        let (tpath, doc, origin) = &self.tests[self.test];
        let source = parse_test(doc, tpath, false, files)
            .map_err(|e| with_origin(e, origin.as_deref()))
            .and_then(|test| {
                let mut vars = data.vars.clone();
                for (name, value) in test.vars {
                    match vars.iter_mut().find(|(n, _)| *n == name) {
                        Some(slot) => slot.1 = value,
                        None => vars.push((name, value)),
                    }
                }
                let mut metadata = data.metadata.clone();
                metadata.extend(test.metadata);
                // promptfoo takes a test's options from the test alone.
                let combined = RawTest {
                    description: test.description.or_else(|| data.description.clone()),
                    vars,
                    asserts: data.asserts.iter().cloned().chain(test.asserts).collect(),
                    threshold: test.threshold.or(data.threshold),
                    metadata,
                    options: test.options,
                    grader: test.grader,
                };
                let origin = Some(match origin {
                    Some(file) => format!("{cpath}, {file}"),
                    None => cpath.clone(),
                });
                let source = merge(tpath.clone(), origin, combined, default);
                claim(&source, budget)?;
                Ok(source)
            });
        self.test += 1;
        if self.test == self.tests.len() {
            self.test = 0;
            self.config += 1;
            self.data = None;
        }
        Some(source)
    }
}

/// Claims a test's var combinations from `budget`, before any is built.
fn claim(source: &SourceTest, budget: &mut TestBudget) -> Result<(), SuiteError> {
    let count = expansion::count(&expansion::choices(&source.vars, source.expand_vars));
    let path = if count == Some(1) {
        source.path.clone()
    } else {
        join(&source.path, "vars")
    };
    budget
        .take(&path, count)
        .map_err(|e| with_origin(e, source.origin.as_deref()))
}

fn merge(path: String, origin: Option<String>, raw: RawTest, default: &RawTest) -> SourceTest {
    let mut vars = default.vars.clone();
    for (name, value) in raw.vars {
        match vars.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => vars.push((name, value)),
        }
    }
    let mut options = default.options.clone();
    options.extend(raw.options);
    // Sized exactly: a Vec grown from empty reserves four slots, and an
    // assertion is a few hundred bytes, which adds up over 20,000 tests.
    let mut asserts = Vec::with_capacity(default.asserts.len() + raw.asserts.len());
    if !options
        .get("disableDefaultAsserts")
        .copied()
        .unwrap_or(false)
    {
        asserts.extend(default.asserts.iter().map(|(p, a)| SourceAssertion {
            path: p.clone(),
            from_default: true,
            assertion: a.clone(),
        }));
    }
    asserts.extend(raw.asserts.into_iter().map(|(p, a)| SourceAssertion {
        path: p,
        from_default: false,
        assertion: a,
    }));
    // The test's grading provider replaces defaultTest's, and both yield to
    // an assertion's own `provider`.
    let grader = raw.grader.or_else(|| default.grader.clone());
    if let Some(grader) = &grader {
        for sa in &mut asserts {
            inherit_grader(&mut sa.assertion, grader);
        }
    }
    let mut metadata = default.metadata.clone();
    metadata.extend(raw.metadata);
    SourceTest {
        path,
        origin,
        description: raw.description,
        vars,
        asserts,
        threshold: raw.threshold.or(default.threshold),
        metadata,
        expand_vars: !options.get("disableVarExpansion").copied().unwrap_or(false),
    }
}

fn inherit_grader(assertion: &mut Assertion, grader: &GraderSpec) {
    if assertion.kind.is_model_graded() && assertion.provider.is_none() {
        assertion.provider = Some(grader.clone());
    }
    for member in &mut assertion.assert {
        inherit_grader(member, grader);
    }
}

/// promptfoo's grading `provider` (on an assertion or in a test's `options`).
fn parse_grader(value: &Yaml, path: &str) -> Result<GraderSpec, SuiteError> {
    GraderSpec::from_json(&to_json(value, path)?).map_err(|err| SuiteError::at(path, err))
}

fn rubric_prompt_unsupported(path: String) -> SuiteError {
    SuiteError::at(
        path,
        "`rubricPrompt` is not supported; Gauntlet grades with its own grader prompts",
    )
}

fn parse_test(
    value: &Yaml,
    path: &str,
    is_default: bool,
    files: &Files,
) -> Result<RawTest, SuiteError> {
    let map = expect_map(value, path)?;
    let mut test = RawTest::default();
    for (key, v) in entries(map, path)? {
        let field = join(path, key);
        match key {
            "description" => test.description = optional_string(v, &field)?,
            "vars" => test.vars = parse_vars(v, &field, files)?,
            "assert" => test.asserts = parse_asserts(v, &field)?,
            "threshold" => test.threshold = optional_number(v, &field)?,
            "metadata" => match to_json(v, &field)? {
                Value::Object(map) => test.metadata = map,
                Value::Null => {}
                _ => {
                    return Err(SuiteError::at(
                        field,
                        format!("expected a mapping, found {}", kind(v)),
                    ));
                }
            },
            "options" => {
                test.options = parse_options(v, &field)?;
                if let Some(provider) = v.get("provider").filter(|p| !p.is_null()) {
                    test.grader = Some(parse_grader(provider, &join(&field, "provider"))?);
                }
            }
            "provider" | "providers" => {
                return Err(SuiteError::at(
                    field,
                    "choosing providers per test is not supported; every test runs on every provider",
                ));
            }
            "prompts" => {
                return Err(SuiteError::at(
                    field,
                    "choosing prompts per test is not supported; every test runs with every prompt",
                ));
            }
            "providerOutput" => {
                return Err(SuiteError::at(
                    field,
                    "precomputed provider outputs are not supported",
                ));
            }
            "assertScoringFunction" => {
                return Err(SuiteError::at(
                    field,
                    "custom scoring functions are user code, which Gauntlet does not run",
                ));
            }
            other => {
                let known: &[&str] = if is_default {
                    &["vars", "assert", "options", "threshold", "metadata"]
                } else {
                    &[
                        "description",
                        "vars",
                        "assert",
                        "options",
                        "threshold",
                        "metadata",
                    ]
                };
                return Err(SuiteError::at(field, unknown_key_message(other, known)));
            }
        }
    }
    Ok(test)
}

fn parse_vars(value: &Yaml, path: &str, files: &Files) -> Result<Vec<(String, Yaml)>, SuiteError> {
    let owned;
    let map = match value {
        Yaml::Null => return Ok(Vec::new()),
        Yaml::String(reference) => {
            owned = load_yaml_file(reference, path, files)?;
            expect_map(&owned, path)?
        }
        other => expect_map(other, path)?,
    };
    let mut vars = Vec::with_capacity(map.len());
    for (key, v) in map {
        let name = match key {
            Yaml::String(s) => s.clone(),
            Yaml::Number(_) | Yaml::Bool(_) => crate::js::value_to_string(&to_json(key, path)?),
            other => {
                return Err(SuiteError::at(
                    path,
                    format!("var names must be strings, found {}", kind(other)),
                ));
            }
        };
        if v.is_null() {
            return Err(SuiteError::at(
                join(path, &name),
                "a var cannot be null; use an empty string",
            ));
        }
        vars.push((name, v.clone()));
    }
    Ok(vars)
}

fn parse_options(value: &Yaml, path: &str) -> Result<BTreeMap<String, bool>, SuiteError> {
    let mut options = BTreeMap::new();
    if value.is_null() {
        return Ok(options);
    }
    for (key, v) in entries(expect_map(value, path)?, path)? {
        let field = join(path, key);
        match key {
            "disableVarExpansion" | "disableDefaultAsserts" => {
                options.insert(key.to_owned(), optional_bool(v, &field)?);
            }
            // Scheduling; `provider` is read by `parse_test`.
            "runSerially" | "disableConversationVar" | "provider" => {}
            "rubricPrompt" => return Err(rubric_prompt_unsupported(field)),
            "prefix" | "suffix" => {
                return Err(SuiteError::at(
                    field,
                    format!("the test option `{key}` is not supported; write it into the prompt"),
                ));
            }
            "transform" | "postprocess" | "transformVars" => {
                return Err(SuiteError::at(
                    field,
                    format!("`{key}` is user code, which Gauntlet does not run"),
                ));
            }
            other => {
                return Err(SuiteError::at(
                    field,
                    format!(
                        "the test option `{other}` is not supported (supported: disableVarExpansion, disableDefaultAsserts, runSerially)"
                    ),
                ));
            }
        }
    }
    Ok(options)
}

fn parse_asserts(value: &Yaml, path: &str) -> Result<Vec<(String, Assertion)>, SuiteError> {
    let items = match value {
        Yaml::Null => return Ok(Vec::new()),
        Yaml::Sequence(items) => items,
        other => {
            return Err(SuiteError::at(
                path,
                format!("expected a list of assertions, found {}", kind(other)),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            let apath = format!("{path}[{j}]");
            parse_assertion(item, &apath).map(|a| (apath, a))
        })
        .collect()
}

fn parse_assertion(value: &Yaml, path: &str) -> Result<Assertion, SuiteError> {
    let map = expect_map(value, path)?;
    let mut kind_value = None;
    let mut assertion = Assertion::new(AssertionKind::Equals, None);
    for (key, v) in entries(map, path)? {
        let field = join(path, key);
        match key {
            "type" => kind_value = Some(resolve_type(expect_str(v, &field)?, &field)?),
            "value" => {
                let json = to_json(v, &field)?;
                assertion.value = (!json.is_null()).then_some(json);
            }
            "threshold" => assertion.threshold = optional_number(v, &field)?,
            "weight" => {
                let weight = optional_number(v, &field)?.unwrap_or(1.0);
                if weight < 0.0 {
                    return Err(SuiteError::at(field, "a weight cannot be negative"));
                }
                assertion.weight = weight;
            }
            "metric" => assertion.metric = optional_string(v, &field)?,
            "provider" => {
                if !v.is_null() {
                    assertion.provider = Some(parse_grader(v, &field)?);
                }
            }
            "rubricPrompt" => return Err(rubric_prompt_unsupported(field)),
            "transform" | "contextTransform" => {
                return Err(SuiteError::at(
                    field,
                    format!("`{key}` is user code, which Gauntlet does not run"),
                ));
            }
            "config" | "normalizeUnicode" => {
                return Err(SuiteError::at(
                    field,
                    format!("the assertion option `{key}` is not supported"),
                ));
            }
            "assert" => {
                assertion.assert = parse_asserts(v, &field)?
                    .into_iter()
                    .map(|(_, member)| member)
                    .collect();
            }
            other => {
                return Err(SuiteError::at(
                    field,
                    unknown_key_message(
                        other,
                        &[
                            "type",
                            "value",
                            "threshold",
                            "weight",
                            "metric",
                            "assert",
                            "provider",
                        ],
                    ),
                ));
            }
        }
    }
    let (kind, negate) = kind_value.ok_or_else(|| {
        SuiteError::at(
            join(path, "type"),
            "missing; every assertion needs a `type`",
        )
    })?;
    assertion.kind = kind;
    assertion.negate = negate;
    check_set_shape(&assertion, path)?;
    Ok(assertion)
}

/// `assert` belongs to `assert-set` alone, which needs members, takes no
/// `value` or `not-`, and (as in promptfoo) does not nest.
pub(super) fn check_set_shape(assertion: &Assertion, path: &str) -> Result<(), SuiteError> {
    let is_set = assertion.kind == AssertionKind::AssertSet;
    if !is_set {
        if !assertion.assert.is_empty() {
            return Err(SuiteError::at(
                join(path, "assert"),
                "only `assert-set` assertions take an `assert` list",
            ));
        }
        return Ok(());
    }
    if assertion.negate {
        return Err(SuiteError::at(
            join(path, "type"),
            "`assert-set` cannot be negated; negate its members instead",
        ));
    }
    if assertion.value.is_some() {
        return Err(SuiteError::at(
            join(path, "value"),
            "`assert-set` takes its assertions in `assert`, not `value`",
        ));
    }
    if assertion.assert.is_empty() {
        return Err(SuiteError::at(
            join(path, "assert"),
            "`assert-set` needs a non-empty `assert` list",
        ));
    }
    if let Some(k) = assertion
        .assert
        .iter()
        .position(|m| m.kind == AssertionKind::AssertSet)
    {
        return Err(SuiteError::at(
            format!("{}[{k}].type", join(path, "assert")),
            "an `assert-set` cannot contain another `assert-set`",
        ));
    }
    Ok(())
}

fn supported_list() -> String {
    AssertionKind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn resolve_type(name: &str, path: &str) -> Result<(AssertionKind, bool), SuiteError> {
    let (negate, base) = match name.strip_prefix("not-") {
        Some(base) => (true, base),
        None => (false, name),
    };
    if let Some(kind) = AssertionKind::from_name(base) {
        return Ok((kind, negate));
    }
    let supported = supported_list();
    if USER_CODE.contains(&base) {
        return Err(SuiteError::at(
            path,
            format!(
                "`{name}` assertions run user code, which Gauntlet does not support; supported types: {supported} (each also with `not-`)"
            ),
        ));
    }
    if MODEL_GRADED.contains(&base) {
        return Err(SuiteError::at(
            path,
            format!(
                "`{name}` assertions need a grading model, which Gauntlet does not support yet; supported types: {supported} (each also with `not-`)"
            ),
        ));
    }
    if base == "assert-set" || csv::PROMPTFOO_TYPES.contains(&base) || base == "human" {
        return Err(SuiteError::at(
            path,
            format!(
                "the assertion type `{name}` is not supported; supported types: {supported} (each also with `not-`)"
            ),
        ));
    }
    let prefix = if negate { "not-" } else { "" };
    let mut close: Vec<(f64, &str)> = AssertionKind::ALL
        .iter()
        .map(|k| {
            (
                strsim::normalized_damerau_levenshtein(base, k.name()),
                k.name(),
            )
        })
        .filter(|(score, _)| *score >= 0.5)
        .collect();
    close.sort_by(|a, b| b.0.total_cmp(&a.0));
    let suggestion = if close.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = close
            .iter()
            .take(3)
            .map(|(_, n)| format!("`{prefix}{n}`"))
            .collect();
        format!("; did you mean {}?", names.join(" or "))
    };
    Err(SuiteError::at(
        path,
        format!(
            "unknown assertion type `{name}`{suggestion} Supported types: {supported} (each also with `not-`)"
        ),
    ))
}

fn load_yaml_file(reference: &str, path: &str, files: &Files) -> Result<Yaml, SuiteError> {
    match extension(reference).as_str() {
        "yaml" | "yml" | "json" => {}
        other => {
            return Err(SuiteError::at(
                path,
                format!("`{reference}`: expected a .yaml, .yml or .json file, not `.{other}`"),
            ));
        }
    }
    let text = files.read(reference, path)?;
    parse_yaml(&text)
        .map_err(|err| SuiteError::at(path, format!("`{reference}` is not valid YAML/JSON: {err}")))
}

/// The tests of a `file://` reference, one record at a time: a `.csv` (a
/// row each), `.jsonl` (a line each), or `.yaml`/`.yml`/`.json` (a list of
/// tests, or one test) file, or each file a glob matches in turn. Each
/// comes with its origin (`row 2 of file://tests.csv`).
pub(super) struct FileItems<'a> {
    files: Files<'a>,
    /// The field the reference is in, for errors.
    path: String,
    /// References still to read, the next last.
    pending: Vec<String>,
    current: Option<Records>,
}

enum Records {
    Csv {
        rows: csv::CsvTests,
        file: String,
    },
    /// Read a line at a time, so a file of any size costs a line.
    Jsonl {
        reader: Box<dyn std::io::BufRead + Send>,
        /// The line being read, and the number of the last one.
        buf: String,
        line: usize,
        file: String,
    },
    List {
        items: std::iter::Enumerate<std::vec::IntoIter<Yaml>>,
        file: String,
    },
    One(Option<(Yaml, String)>),
}

impl<'a> FileItems<'a> {
    pub(super) fn new(reference: String, path: String, files: Files<'a>) -> Self {
        Self {
            files,
            path,
            pending: vec![reference],
            current: None,
        }
    }
}

impl Iterator for FileItems<'_> {
    type Item = Result<(Yaml, String), SuiteError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(records) = &mut self.current {
                match records.next(&self.path) {
                    Some(record) => return Some(record),
                    None => self.current = None,
                }
            }
            let reference = self.pending.pop()?;
            let references = match self.files.expand(&reference, &self.path) {
                Ok(references) => references,
                Err(err) => return Some(Err(err)),
            };
            if references.len() != 1 || references[0] != reference {
                self.pending.extend(references.into_iter().rev());
                continue;
            }
            match Records::open(&reference, &self.path, &self.files) {
                Ok(records) => self.current = Some(records),
                Err(err) => return Some(Err(err)),
            }
        }
    }
}

impl Records {
    fn open(reference: &str, path: &str, files: &Files) -> Result<Self, SuiteError> {
        let file = format!("file://{}", file_path(reference));
        match extension(reference).as_str() {
            "csv" => {
                let text = files.read(reference, path)?;
                let rows = csv::CsvTests::new(text)
                    .map_err(|err| SuiteError::at(path, format!("`{file}`: {err}")))?;
                Ok(Records::Csv { rows, file })
            }
            "jsonl" => Ok(Records::Jsonl {
                reader: files.open(reference, path)?,
                buf: String::new(),
                line: 0,
                file,
            }),
            "yaml" | "yml" | "json" => match load_yaml_file(reference, path, files)? {
                Yaml::Sequence(items) => Ok(Records::List {
                    items: items.into_iter().enumerate(),
                    file,
                }),
                map @ Yaml::Mapping(_) => Ok(Records::One(Some((map, file)))),
                other => Err(SuiteError::at(
                    path,
                    format!("`{file}` must hold a list of tests, not {}", kind(&other)),
                )),
            },
            other => Err(SuiteError::at(
                path,
                format!(
                    "`{reference}`: test files of type `.{other}` are not supported (use .csv, .yaml, .json or .jsonl)"
                ),
            )),
        }
    }

    fn next(&mut self, path: &str) -> Option<Result<(Yaml, String), SuiteError>> {
        match self {
            Records::Csv { rows, file } => Some(
                rows.next()?
                    .map(|(row, test)| (test, format!("row {row} of {file}")))
                    .map_err(|err| SuiteError::at(path, format!("`{file}`: {err}"))),
            ),
            Records::Jsonl {
                reader,
                buf,
                line,
                file,
            } => loop {
                buf.clear();
                *line += 1;
                match reader.read_line(buf) {
                    Ok(0) => return None,
                    Ok(_) => {}
                    Err(err) => {
                        let n = *line;
                        // Nothing after an unreadable line can be trusted.
                        *reader = Box::new(std::io::empty());
                        return Some(Err(SuiteError::at(
                            path,
                            format!("`{file}` line {n}: cannot read: {err}"),
                        )));
                    }
                }
                let this = buf.strip_suffix('\n').unwrap_or(buf);
                let this = this.strip_suffix('\r').unwrap_or(this);
                if this.trim().is_empty() {
                    continue;
                }
                let n = *line;
                return Some(
                    serde_json::from_str::<Yaml>(this)
                        .map(|test| (test, format!("line {n} of {file}")))
                        .map_err(|err| {
                            SuiteError::at(path, format!("`{file}` line {n}: invalid JSON: {err}"))
                        }),
                );
            },
            Records::List { items, file } => {
                let (i, test) = items.next()?;
                Some(Ok((test, format!("item {i} of {file}"))))
            }
            Records::One(one) => one.take().map(Ok),
        }
    }
}

/// The number of var combinations `source` expands into (claimed already).
pub(super) fn combinations(source: &SourceTest) -> u64 {
    expansion::count(&expansion::choices(&source.vars, source.expand_vars)).unwrap_or_default()
}

/// Combination `n` of `source`'s vars as a test case: file vars loaded,
/// assertion values rendered over its vars and validated. `cache` holds
/// each var file's value across the suite.
pub(super) fn build(
    source: &SourceTest,
    n: u64,
    env: &Environment<'static>,
    files: &Files,
    cache: &mut BTreeMap<String, Value>,
) -> Result<TestCase, SuiteError> {
    let origin = source.origin.as_deref();
    let choices = expansion::choices(&source.vars, source.expand_vars);
    let mut vars = BTreeMap::new();
    for (name, value) in expansion::combination(&choices, n) {
        let path = format!("{}.vars.{name}", source.path);
        let json = load_var(value, &path, files, cache).map_err(|e| with_origin(e, origin))?;
        vars.insert(name.clone(), json);
    }
    let mut ctx = None;
    let mut asserts = Vec::with_capacity(source.asserts.len());
    for sa in &source.asserts {
        let who = if sa.from_default {
            source.path.clone()
        } else {
            "this test".to_owned()
        };
        let mut assertion = sa.assertion.clone();
        prepare(&mut assertion, &sa.path, &who, env, &vars, &mut ctx)
            .map_err(|e| with_origin(e, if sa.from_default { None } else { origin }))?;
        asserts.push(assertion);
    }
    Ok(TestCase {
        description: source.description.clone(),
        vars,
        assert: asserts,
        threshold: source.threshold,
        metadata: source.metadata.clone(),
    })
}

/// A var value as JSON; `file://` strings are replaced by the file's content
/// as promptfoo does at render time. `cache` holds each file's value, so a
/// file var shared by many tests is read and parsed once.
fn load_var(
    value: &Yaml,
    path: &str,
    files: &Files,
    cache: &mut BTreeMap<String, Value>,
) -> Result<Value, SuiteError> {
    let Some(reference) = value.as_str().filter(|s| s.starts_with("file://")) else {
        if let Some(s) = value.as_str().filter(|s| s.starts_with("package:")) {
            return Err(SuiteError::at(
                path,
                format!(
                    "`{s}`: vars computed by packages are user code, which Gauntlet does not run"
                ),
            ));
        }
        return to_json(value, path);
    };
    let ext = extension(reference);
    match ext.as_str() {
        "js" | "cjs" | "mjs" | "ts" | "py" => {
            return Err(SuiteError::at(
                path,
                format!(
                    "`{reference}`: vars computed by scripts are user code, which Gauntlet does not run"
                ),
            ));
        }
        "pdf" | "jpg" | "jpeg" | "png" | "gif" | "bmp" | "webp" | "svg" | "mp4" | "webm"
        | "ogg" | "mov" | "avi" | "wmv" | "mkv" | "m4v" | "mp3" | "wav" => {
            return Err(SuiteError::at(
                path,
                format!(
                    "`{reference}`: binary file vars (images, audio, video, PDF) are not supported"
                ),
            ));
        }
        _ => {}
    }
    if let Some(value) = cache.get(reference) {
        return Ok(value.clone());
    }
    let text = files.read(reference, path)?;
    let value = if ext == "yaml" || ext == "yml" {
        let parsed = parse_yaml(&text).map_err(|err| {
            SuiteError::at(path, format!("`{reference}` is not valid YAML: {err}"))
        })?;
        let json = to_json(&parsed, path)?;
        Value::String(crate::js::normalize_numbers(json).to_string())
    } else {
        Value::String(text.trim().to_owned())
    };
    cache.insert(reference.to_owned(), value.clone());
    Ok(value)
}

/// promptfoo renders string assertion values (and strings in list values)
/// as templates over the test's vars.
fn render_value(
    assertion: &mut Assertion,
    path: &str,
    who: &str,
    env: &Environment<'static>,
    vars: &BTreeMap<String, Value>,
    ctx: &mut Option<minijinja::Value>,
) -> Result<(), SuiteError> {
    let vpath = format!("{path}.value");
    let mut render = |text: &mut String| -> Result<(), SuiteError> {
        if !template::has_template_syntax(text) {
            return Ok(());
        }
        let used = template::template_variables(env, text).map_err(|err| {
            SuiteError::at(
                &vpath,
                format!("invalid template: {}", template::describe(&err)),
            )
        })?;
        if let Some(missing) = used.iter().find(|v| !vars.contains_key(*v)) {
            return Err(SuiteError::at(
                &vpath,
                format!("uses var `{missing}`, which {who} does not define"),
            ));
        }
        let ctx = ctx.get_or_insert_with(|| template::context(env, vars));
        *text = template::render_str(env, text, ctx).map_err(|err| {
            SuiteError::at(
                &vpath,
                format!("cannot render: {}", template::describe(&err)),
            )
        })?;
        Ok(())
    };
    match &mut assertion.value {
        Some(Value::String(text)) => render(text)?,
        Some(Value::Array(items)) => {
            for item in items {
                if let Value::String(text) = item {
                    render(text)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Renders and validates an assertion, or each member of an `assert-set`.
fn prepare(
    assertion: &mut Assertion,
    path: &str,
    who: &str,
    env: &Environment<'static>,
    vars: &BTreeMap<String, Value>,
    ctx: &mut Option<minijinja::Value>,
) -> Result<(), SuiteError> {
    if assertion.kind == AssertionKind::AssertSet {
        for (k, member) in assertion.assert.iter_mut().enumerate() {
            prepare(member, &format!("{path}.assert[{k}]"), who, env, vars, ctx)?;
        }
        return Ok(());
    }
    render_value(assertion, path, who, env, vars, ctx)?;
    validate(assertion, path)
}

/// Checks an assertion's (rendered) value so grading cannot meet a bad one.
pub(super) fn validate(assertion: &mut Assertion, path: &str) -> Result<(), SuiteError> {
    let vpath = format!("{path}.value");
    let name = assertion.type_name();
    let is_scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    match assertion.kind {
        AssertionKind::Equals => {
            if assertion.value.is_none() {
                return Err(SuiteError::at(vpath, format!("`{name}` needs a `value`")));
            }
        }
        AssertionKind::Contains
        | AssertionKind::Icontains
        | AssertionKind::StartsWith
        | AssertionKind::Levenshtein
        | AssertionKind::FinishReason
        | AssertionKind::Regex => {
            let ok = match &assertion.value {
                Some(Value::String(s)) => !s.is_empty(),
                Some(v) => is_scalar(v),
                None => false,
            };
            if !ok {
                return Err(SuiteError::at(
                    vpath,
                    format!("`{name}` needs a non-empty string `value`"),
                ));
            }
            if assertion.kind == AssertionKind::Regex {
                let source =
                    crate::js::value_to_string(assertion.value.as_ref().unwrap_or(&Value::Null));
                pattern::compile(&source)
                    .map_err(|err| SuiteError::at(vpath, format!("invalid regex: {err}")))?;
            }
        }
        AssertionKind::ContainsAny
        | AssertionKind::ContainsAll
        | AssertionKind::IcontainsAny
        | AssertionKind::IcontainsAll => {
            grading::list(assertion.value.as_ref(), &name)
                .map_err(|err| SuiteError::at(&vpath, err))?;
            if let Some(Value::Array(items)) = &assertion.value
                && let Some(i) = items.iter().position(|v| !is_scalar(v))
            {
                return Err(SuiteError::at(format!("{vpath}[{i}]"), "expected a string"));
            }
        }
        AssertionKind::IsJson => {
            if let Some(schema) = grading::json_schema(assertion.value.as_ref())
                .map_err(|err| SuiteError::at(&vpath, err))?
            {
                schema::check(&schema).map_err(|err| {
                    SuiteError::at(&vpath, format!("unsupported JSON schema: {err}"))
                })?;
                assertion.value = Some(schema);
            }
        }
        AssertionKind::Latency | AssertionKind::Cost => {
            if assertion.threshold.is_none() {
                let unit = if assertion.kind == AssertionKind::Latency {
                    "the maximum latency in milliseconds"
                } else {
                    "the maximum cost in USD"
                };
                let hint = if assertion.value.is_some() {
                    " (not `value`)"
                } else {
                    ""
                };
                return Err(SuiteError::at(
                    format!("{path}.threshold"),
                    format!("`{name}` needs a `threshold`{hint}: {unit}"),
                ));
            }
        }
        AssertionKind::WordCount => {
            grading::word_bounds(assertion.value.as_ref())
                .map_err(|err| SuiteError::at(vpath, err))?;
        }
        AssertionKind::ContainsJson => {
            if let Some(schema) = grading::json_schema(assertion.value.as_ref())
                .map_err(|err| SuiteError::at(&vpath, err))?
            {
                schema::check(&schema).map_err(|err| {
                    SuiteError::at(&vpath, format!("unsupported JSON schema: {err}"))
                })?;
                assertion.value = Some(schema);
            }
        }
        AssertionKind::IsXml | AssertionKind::ContainsXml => {
            let required = grading::xml_required(assertion.value.as_ref())
                .map_err(|err| SuiteError::at(&vpath, err))?;
            if required.iter().any(|e| e.is_empty()) {
                return Err(SuiteError::at(
                    vpath,
                    format!("`{name}` needs element paths like `root.child`, not empty names"),
                ));
            }
        }
        AssertionKind::IsHtml | AssertionKind::ContainsHtml | AssertionKind::IsRefusal => {}
        AssertionKind::IsSql | AssertionKind::ContainsSql => {
            grading::sql::options(assertion.value.as_ref())
                .map_err(|err| SuiteError::at(vpath, err))?;
        }
        AssertionKind::RougeN => {
            if !matches!(&assertion.value, Some(Value::String(s)) if !s.is_empty()) {
                return Err(SuiteError::at(
                    vpath,
                    format!("`{name}` needs the reference text as a string `value`"),
                ));
            }
        }
        AssertionKind::Bleu | AssertionKind::Gleu => {
            grading::references(assertion.value.as_ref(), &name)
                .map_err(|err| SuiteError::at(vpath, err))?;
        }
        AssertionKind::IsValidOpenaiToolsCall | AssertionKind::IsValidOpenaiFunctionCall => {
            let tools = assertion.kind == AssertionKind::IsValidOpenaiToolsCall;
            grading::tools::declarations(assertion.value.as_ref(), tools)
                .map_err(|err| SuiteError::at(vpath, format!("`{name}` {err}")))?;
        }
        // Members are validated one by one (see `prepare`).
        AssertionKind::AssertSet => {}
        AssertionKind::LlmRubric => {
            let ok = match &assertion.value {
                Some(Value::String(s)) => !s.trim().is_empty(),
                Some(Value::Object(_)) => true,
                _ => false,
            };
            if !ok {
                return Err(SuiteError::at(
                    vpath,
                    format!("`{name}` needs the rubric as a string (or object) `value`"),
                ));
            }
        }
        AssertionKind::ModelGradedClosedqa | AssertionKind::Factuality => {
            let ok = match &assertion.value {
                Some(Value::String(s)) => !s.trim().is_empty(),
                Some(v) => is_scalar(v),
                None => false,
            };
            if !ok {
                let what = if assertion.kind == AssertionKind::Factuality {
                    "the reference answer"
                } else {
                    "the criterion"
                };
                return Err(SuiteError::at(
                    vpath,
                    format!("`{name}` needs {what} as a string `value`"),
                ));
            }
        }
        AssertionKind::GEval
        | AssertionKind::Similar
        | AssertionKind::SimilarCosine
        | AssertionKind::SimilarDot
        | AssertionKind::SimilarEuclidean => match &assertion.value {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::Array(items)) if !items.is_empty() => {
                if let Some(i) = items.iter().position(|v| !is_scalar(v)) {
                    return Err(SuiteError::at(format!("{vpath}[{i}]"), "expected a string"));
                }
            }
            _ => {
                return Err(SuiteError::at(
                    vpath,
                    format!("`{name}` needs a string or a non-empty list of strings `value`"),
                ));
            }
        },
        // Compares the output with the `query` var or the prompt; no value.
        AssertionKind::AnswerRelevance => {}
    }
    if assertion.provider.is_some() && !assertion.kind.is_model_graded() {
        return Err(SuiteError::at(
            format!("{path}.provider"),
            format!("`{name}` is not model-graded, so it takes no grading `provider`"),
        ));
    }
    Ok(())
}
