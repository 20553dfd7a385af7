//! Reading a suite file for the CLI: `file://` references resolved relative
//! to the suite, errors prefixed with the file (and line:col for syntax
//! errors), test filters applied, and the result turned back into a
//! self-contained promptfoo-shaped document the gateway accepts.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use gauntlet_core::{
    Suite,
    parse::{FileResolver, SuiteFormat, parse_suite_with},
};
use serde_json::{Map, Value, json};

struct Relative(PathBuf);

impl FileResolver for Relative {
    fn read(&self, path: &str) -> Result<String, String> {
        let full = self.0.join(path);
        std::fs::read_to_string(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
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

/// Which tests of the suite to run.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pub first_n: Option<usize>,
    pub pattern: Option<regex::Regex>,
}

pub fn load(path: &Path, filters: &Filters) -> anyhow::Result<Suite> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read suite {}", path.display()))?;
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("json") => SuiteFormat::Json,
        Some("yaml" | "yml") => SuiteFormat::Yaml,
        _ => SuiteFormat::Auto,
    };
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut suite = parse_suite_with(&text, format, &Relative(dir.clone()))
        .map_err(|e| located(path, &dir, &e))?;
    if let Some(re) = &filters.pattern {
        suite.tests.retain(|t| {
            let text = t
                .description
                .clone()
                .unwrap_or_else(|| serde_json::to_string(&t.vars).unwrap_or_default());
            re.is_match(&text)
        });
    }
    if let Some(n) = filters.first_n {
        suite.tests.truncate(n);
    }
    if suite.tests.is_empty() {
        bail!("{}: no test matches the filters", path.display());
    }
    Ok(suite)
}

/// A promptfoo-shaped JSON document that parses back into `suite`, with
/// every file already inlined, for submitting to a server that cannot read
/// the user's files.
pub fn to_document(suite: &Suite) -> Value {
    let mut doc = Map::new();
    if let Some(d) = &suite.description {
        doc.insert("description".into(), json!(d));
    }
    doc.insert(
        "prompts".into(),
        suite
            .prompts
            .iter()
            .map(|p| json!({"id": p.id, "label": p.label, "raw": p.raw}))
            .collect(),
    );
    doc.insert(
        "providers".into(),
        suite
            .providers
            .iter()
            .map(|p| {
                let mut m = Map::new();
                m.insert("id".into(), json!(p.id));
                if let Some(l) = &p.label {
                    m.insert("label".into(), json!(l));
                }
                if !p.config.is_empty() {
                    m.insert("config".into(), Value::Object(p.config.clone()));
                }
                Value::Object(m)
            })
            .collect(),
    );
    doc.insert(
        "tests".into(),
        suite
            .tests
            .iter()
            .map(|t| {
                let mut m = Map::new();
                if let Some(d) = &t.description {
                    m.insert("description".into(), json!(d));
                }
                m.insert("vars".into(), json!(t.vars));
                let asserts: Vec<Value> = t
                    .assert
                    .iter()
                    .map(|a| {
                        let mut x = Map::new();
                        x.insert("type".into(), json!(a.type_name()));
                        if let Some(v) = &a.value {
                            x.insert("value".into(), v.clone());
                        }
                        x.insert("weight".into(), json!(a.weight));
                        if let Some(th) = a.threshold {
                            x.insert("threshold".into(), json!(th));
                        }
                        if let Some(metric) = &a.metric {
                            x.insert("metric".into(), json!(metric));
                        }
                        Value::Object(x)
                    })
                    .collect();
                m.insert("assert".into(), Value::Array(asserts));
                if let Some(th) = t.threshold {
                    m.insert("threshold".into(), json!(th));
                }
                if !t.metadata.is_empty() {
                    m.insert("metadata".into(), Value::Object(t.metadata.clone()));
                }
                Value::Object(m)
            })
            .collect(),
    );
    if !suite.env.is_empty() {
        doc.insert("env".into(), json!(suite.env));
    }
    Value::Object(doc)
}
