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
    let mut suite =
        parse_suite_with(&text, format, &Relative(dir)).map_err(|e| match (e.line, e.column) {
            (Some(l), Some(c)) => anyhow::anyhow!("{}:{l}:{c}: {}", path.display(), e.message),
            (Some(l), None) => anyhow::anyhow!("{}:{l}: {}", path.display(), e.message),
            _ => anyhow::anyhow!("{}: {e}", path.display()),
        })?;
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
