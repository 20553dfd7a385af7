//! Reading a suite file for the CLI: `file://` references resolved relative
//! to the suite, errors prefixed with the file (and line:col for syntax
//! errors), provider ids checked, and test filters applied. The header is
//! parsed first and the tests follow one at a time, so a suite of a million
//! tests never exists whole here; they travel to the gateway as normalized
//! JSON lines while they are read (see `run` and `client`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gauntlet_core::{
    Suite, SuiteError, TestCase,
    parse::{FileResolver, MAX_TESTS, SuiteFormat, field_position, parse_suite_stream},
};
use gauntlet_providers::{ProviderError, ProviderFactory};

use crate::suite_text::SuiteText;

struct Relative(PathBuf);

impl FileResolver for Relative {
    fn read(&self, path: &str) -> Result<String, String> {
        let full = self.0.join(path);
        std::fs::read_to_string(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
    }

    fn open(&self, path: &str) -> Result<Box<dyn std::io::BufRead + Send>, String> {
        let full = self.0.join(path);
        let file = std::fs::File::open(&full)
            .map_err(|e| format!("cannot read {}: {e}", full.display()))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, file)))
    }

    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        // The suite's directory is taken literally, whatever characters it holds.
        let full = if Path::new(pattern).is_absolute() {
            pattern.to_owned()
        } else {
            let dir = self.0.to_str().ok_or_else(|| {
                format!(
                    "the suite's directory {} is not valid UTF-8",
                    self.0.display()
                )
            })?;
            format!("{}/{pattern}", glob::Pattern::escape(dir))
        };
        let mut found = Vec::new();
        for entry in glob::glob(&full).map_err(|e| format!("invalid glob `{pattern}`: {e}"))? {
            let path = entry.map_err(|e| format!("cannot list {pattern}: {e}"))?;
            if !path.is_file() {
                continue;
            }
            // Hand back paths relative to the suite, as `read` takes them.
            let relative = path.strip_prefix(&self.0).unwrap_or(&path);
            found.push(relative.to_string_lossy().into_owned());
        }
        found.sort();
        Ok(found)
    }
}

/// `file:line:col: field.path: message`, naming the referenced file when
/// the error is inside one.
fn located(suite: &Path, dir: &Path, e: &gauntlet_core::SuiteError) -> anyhow::Error {
    let mut at = match &e.file {
        Some(f) => dir
            .join(f.trim_start_matches("file://"))
            .display()
            .to_string(),
        None => suite.display().to_string(),
    };
    if let Some(line) = e.line {
        at.push_str(&format!(":{line}"));
        if let Some(column) = e.column {
            at.push_str(&format!(":{column}"));
        }
    }
    if e.path.is_empty() {
        anyhow::anyhow!("{at}: {}", e.message)
    } else {
        anyhow::anyhow!("{at}: {}: {}", e.path, e.message)
    }
}

/// Tests read between two hand-backs of a mapped suite's pages.
const RELEASE_EVERY: usize = 16_384;

/// Which tests of the suite to run.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub first_n: Option<usize>,
    pub pattern: Option<regex::Regex>,
}

/// A suite file read into memory (its text; its tests are parsed as they
/// are asked for, see [`SuiteFile::tests`]).
pub struct SuiteFile {
    path: PathBuf,
    files: Relative,
    text: SuiteText,
    format: SuiteFormat,
    filters: Filters,
}

/// A suite's header (everything but its tests) and its tests, filtered, one
/// at a time; an error ends them.
pub struct Tests<'a> {
    pub header: Suite,
    pub tests: Box<dyn Iterator<Item = anyhow::Result<TestCase>> + 'a>,
}

/// Reads the suite at `path`; parsing waits for [`SuiteFile::tests`].
pub fn open(path: &Path, filters: Filters) -> anyhow::Result<SuiteFile> {
    let text =
        SuiteText::read(path).with_context(|| format!("cannot read suite {}", path.display()))?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => SuiteFormat::Json,
        Some("yaml" | "yml") => SuiteFormat::Yaml,
        _ => SuiteFormat::Auto,
    };
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(SuiteFile {
        path: path.to_path_buf(),
        files: Relative(dir),
        text,
        format,
        filters,
    })
}

impl SuiteFile {
    /// Parses the header and checks its provider ids; the tests that pass
    /// the filters follow, parsed as they are taken. Fails, as the whole
    /// suite would, when no test passes them (the first is read here).
    pub fn tests(&self) -> anyhow::Result<Tests<'_>> {
        let (path, dir) = (self.path.as_path(), self.files.0.as_path());
        let text = self.text.as_str();
        let stream = parse_suite_stream(text, self.format, &self.files, MAX_TESTS)
            .map_err(|e| located(path, dir, &e))?;
        // Finding the tests may have read the whole text (a JSON suite is
        // checked whole first); those pages go back before the tests come.
        self.text.release();
        let header = stream.header.clone();
        // The gateway refuses ids no worker could serve; say so here, where
        // the error can point at the line.
        let providers = ProviderFactory::from_process_env();
        for (i, p) in header.providers.iter().enumerate() {
            if let Err(e @ ProviderError::Unsupported(_)) = providers.build(&p.id, &p.config) {
                let mut err = SuiteError::at(format!("providers[{i}].id"), e.to_string());
                if let Some((line, column)) = field_position(text, &err.path) {
                    (err.line, err.column) = (Some(line), Some(column));
                }
                return Err(located(path, dir, &err));
            }
        }
        let pattern = self.filters.pattern.clone();
        let mut read = 0usize;
        let mut tests = stream
            .inspect(move |_| {
                // A large suite's pages parsed so far go back to the kernel.
                read += 1;
                if read.is_multiple_of(RELEASE_EVERY) {
                    self.text.release();
                }
            })
            .map(move |test| test.map_err(|e| located(path, dir, &e)))
            .filter(move |test| match (test, &pattern) {
                (Ok(test), Some(re)) => {
                    let text = test
                        .description
                        .clone()
                        .unwrap_or_else(|| serde_json::to_string(&test.vars).unwrap_or_default());
                    re.is_match(&text)
                }
                _ => true,
            })
            .take(self.filters.first_n.unwrap_or(usize::MAX))
            .peekable();
        if let Some(Err(_)) = tests.peek()
            && let Some(Err(err)) = tests.next()
        {
            return Err(err);
        }
        if tests.peek().is_none() {
            bail!("{}: no test matches the filters", path.display());
        }
        Ok(Tests {
            header,
            tests: Box::new(tests),
        })
    }
}
