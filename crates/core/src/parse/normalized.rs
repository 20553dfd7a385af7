//! Reading a suite in its normalized form: the [`Suite`] model's own serde
//! encoding, which `gauntlet run` sends after parsing the user's files, so
//! the gateway gets back exactly the suite the CLI read. The text comes
//! from a client, so everything the promptfoo parser guarantees about a
//! suite is checked again here, except rendering every prompt with every
//! test (the client did that; a prompt that fails to render for one test
//! still becomes that task's error, never a crash).

use crate::{
    error::SuiteError,
    parse::cases,
    suite::{Assertion, AssertionKind, Suite, TestCase},
    template::PromptRenderer,
};

/// Reads and checks a suite sent as [`to_normalized_json`].
pub fn parse_normalized(text: &str) -> Result<Suite, SuiteError> {
    let mut suite: Suite = serde_json::from_str(text).map_err(|err| {
        SuiteError::syntax(
            Some(err.line()),
            Some(err.column()),
            format!("invalid normalized suite: {err}"),
        )
    })?;
    check(&mut suite)?;
    Ok(suite)
}

/// The normalized form of `suite`: its serde encoding as JSON.
pub fn to_normalized_json(suite: &Suite) -> String {
    // A `Suite` holds only strings, numbers, maps and JSON values with
    // string keys, which always encode.
    serde_json::to_string(suite).expect("a suite always encodes as JSON")
}

fn check(suite: &mut Suite) -> Result<(), SuiteError> {
    let tests = std::mem::take(&mut suite.tests);
    let mut lines = NormalizedLines::from_header(std::mem::take(suite))?;
    let mut checked = Vec::with_capacity(tests.len());
    for test in tests {
        checked.push(lines.check_test(test)?);
    }
    *suite = lines.finish()?;
    suite.tests = checked;
    Ok(())
}

/// The first line of [`SuiteFormat::NormalizedJsonLines`]: `header` is a
/// suite whose tests travel on the lines after it, so its own `tests` is
/// empty.
pub fn normalized_header_line(header: &Suite) -> String {
    debug_assert!(header.tests.is_empty(), "the header carries no tests");
    serde_json::to_string(header).expect("a suite always encodes as JSON")
}

/// One test line of the normalized JSON lines form.
pub fn normalized_test_line(test: &TestCase) -> String {
    serde_json::to_string(test).expect("a test case always encodes as JSON")
}

/// Reads the normalized JSON lines form a line at a time, checking each
/// test as [`parse_normalized`] does, so a suite of any size is read
/// without holding it: the header first ([`NormalizedLines::header`]),
/// then every test line ([`NormalizedLines::test`]), then
/// [`NormalizedLines::finish`]. Errors name the test's index
/// (`tests[41].vars`) and, for a line that is not a test, its line number.
#[derive(Debug)]
pub struct NormalizedLines {
    header: Suite,
    /// `(prompt, var)` for every var some prompt uses.
    required: Vec<(usize, String)>,
    tests: usize,
}

impl NormalizedLines {
    /// Reads and checks the first line.
    pub fn header(line: &str) -> Result<Self, SuiteError> {
        let header: Suite = serde_json::from_str(line).map_err(|err| {
            SuiteError::syntax(
                Some(1),
                Some(err.column()),
                format!("invalid normalized suite header: {err}"),
            )
        })?;
        if !header.tests.is_empty() {
            return Err(SuiteError::at(
                "tests",
                "the header line carries no tests; send each on a line of its own",
            ));
        }
        Self::from_header(header)
    }

    fn from_header(header: Suite) -> Result<Self, SuiteError> {
        if header.prompts.is_empty() {
            return Err(SuiteError::at(
                "prompts",
                "the suite needs at least one prompt",
            ));
        }
        if header.providers.is_empty() {
            return Err(SuiteError::at(
                "providers",
                "the suite needs at least one provider",
            ));
        }
        if u32::try_from(header.prompts.len()).is_err() {
            return Err(SuiteError::at("prompts", "too many prompts"));
        }
        for (i, p) in header.providers.iter().enumerate() {
            if p.id.trim().is_empty() {
                return Err(SuiteError::at(format!("providers[{i}].id"), "is empty"));
            }
        }
        let renderer = PromptRenderer::new(&header)?;
        let required = (0..header.prompts.len())
            .flat_map(|k| renderer.variables(k).into_iter().map(move |v| (k, v)))
            .collect();
        Ok(Self {
            header,
            required,
            tests: 0,
        })
    }

    /// Reads and checks the next test line; `line_number` (1-based, the
    /// header being line 1) is named if the line is not a test case.
    pub fn test(&mut self, line: &str, line_number: usize) -> Result<TestCase, SuiteError> {
        let test: TestCase = serde_json::from_str(line).map_err(|err| {
            let mut e = SuiteError::at(
                format!("tests[{}]", self.tests),
                format!("invalid normalized test: {err}"),
            );
            (e.line, e.column) = (Some(line_number), Some(err.column()));
            e
        })?;
        self.check_test(test)
    }

    fn check_test(&mut self, mut test: TestCase) -> Result<TestCase, SuiteError> {
        let i = self.tests;
        if i >= cases::MAX_TESTS {
            return Err(SuiteError::at(
                "tests",
                format!("more than the limit of {} test cases", cases::MAX_TESTS),
            ));
        }
        for (k, var) in &self.required {
            if !test.vars.contains_key(var) {
                return Err(SuiteError::at(
                    format!("tests[{i}].vars"),
                    format!(
                        "prompt prompts[{k}] uses var `{var}`, which this test does not define"
                    ),
                ));
            }
        }
        if let Some(t) = test.threshold
            && !t.is_finite()
        {
            return Err(SuiteError::at(
                format!("tests[{i}].threshold"),
                "expected a finite number",
            ));
        }
        for (k, assertion) in test.assert.iter_mut().enumerate() {
            check_assertion(assertion, &format!("tests[{i}].assert[{k}]"))?;
        }
        self.tests += 1;
        Ok(test)
    }

    /// Test lines read so far.
    pub fn tests(&self) -> usize {
        self.tests
    }

    /// The header, once every test is read: a suite needs at least one.
    pub fn finish(self) -> Result<Suite, SuiteError> {
        if self.tests == 0 {
            return Err(SuiteError::at("tests", "the suite needs at least one test"));
        }
        Ok(self.header)
    }

    /// The header, read so far.
    pub fn suite(&self) -> &Suite {
        &self.header
    }
}

fn check_assertion(assertion: &mut Assertion, path: &str) -> Result<(), SuiteError> {
    if !assertion.weight.is_finite() || assertion.weight < 0.0 {
        return Err(SuiteError::at(
            format!("{path}.weight"),
            "expected a non-negative number",
        ));
    }
    if assertion.threshold.is_some_and(|t| !t.is_finite()) {
        return Err(SuiteError::at(
            format!("{path}.threshold"),
            "expected a finite number",
        ));
    }
    cases::check_set_shape(assertion, path)?;
    if assertion.kind == AssertionKind::AssertSet {
        for (k, member) in assertion.assert.iter_mut().enumerate() {
            check_assertion(member, &format!("{path}.assert[{k}]"))?;
        }
        return Ok(());
    }
    cases::validate(assertion, path)
}
