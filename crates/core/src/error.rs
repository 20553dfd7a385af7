//! The crate's error types: [`SuiteError`] for everything wrong with a suite
//! (it names the offending field so callers can answer `InvalidArgument`), and
//! [`TemplateError`] for a prompt that fails to render at run time.

use std::fmt;

/// A suite that cannot be run. `path` names the field (`tests[3].assert[0].type`,
/// empty for the whole document). `line`/`column` (1-based) point into the
/// suite's own text where the field can be found there; `file` is set instead
/// when the fault lies in a file the suite references (`tests.csv`, as written
/// after `file://`), whose place the message then gives (`row 2 of …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SuiteError {
    pub path: String,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub file: Option<String>,
}

impl SuiteError {
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
            file: None,
        }
    }

    pub fn syntax(line: Option<usize>, column: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            path: String::new(),
            message: message.into(),
            line,
            column,
            file: None,
        }
    }
}

impl fmt::Display for SuiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line} column {column}: ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            _ => {}
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// A prompt that could not be rendered with one test's vars.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("prompts[{prompt}]: {message}")]
pub struct TemplateError {
    pub prompt: usize,
    pub message: String,
}
