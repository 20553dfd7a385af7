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
    suite::{Assertion, AssertionKind, Suite},
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
    if suite.prompts.is_empty() {
        return Err(SuiteError::at(
            "prompts",
            "the suite needs at least one prompt",
        ));
    }
    if suite.providers.is_empty() {
        return Err(SuiteError::at(
            "providers",
            "the suite needs at least one provider",
        ));
    }
    if suite.tests.is_empty() {
        return Err(SuiteError::at("tests", "the suite needs at least one test"));
    }
    if suite.tests.len() > cases::MAX_TESTS || u32::try_from(suite.prompts.len()).is_err() {
        return Err(SuiteError::at(
            "tests",
            format!(
                "{} test cases is more than the limit of {}",
                suite.tests.len(),
                cases::MAX_TESTS
            ),
        ));
    }
    for (i, p) in suite.providers.iter().enumerate() {
        if p.id.trim().is_empty() {
            return Err(SuiteError::at(format!("providers[{i}].id"), "is empty"));
        }
    }
    let renderer = PromptRenderer::new(suite)?;
    for k in 0..suite.prompts.len() {
        for var in renderer.variables(k) {
            if let Some(i) = suite.tests.iter().position(|t| !t.vars.contains_key(&var)) {
                return Err(SuiteError::at(
                    format!("tests[{i}].vars"),
                    format!(
                        "prompt prompts[{k}] uses var `{var}`, which this test does not define"
                    ),
                ));
            }
        }
    }
    for (i, test) in suite.tests.iter_mut().enumerate() {
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
    }
    Ok(())
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
