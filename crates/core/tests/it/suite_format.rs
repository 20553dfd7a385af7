//! Golden suites: hand-written promptfoo-style configs under
//! `tests/fixtures/<name>/`, each beside the structure it must parse to
//! (`expected.json`, compared as a subset so new model fields do not break it).

use std::path::{Path, PathBuf};

use gauntlet_core::{FileResolver, PromptRenderer, SuiteFormat, parse_suite_with};
use serde_json::Value;

pub(crate) struct Dir(pub(crate) PathBuf);

impl FileResolver for Dir {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.0.join(path)).map_err(|err| err.to_string())
    }

    /// Enough globbing for the fixtures: `*` in the last path segment.
    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        let (dir, name) = pattern.rsplit_once('/').unwrap_or(("", pattern));
        let (prefix, suffix) = name.split_once('*').ok_or("no `*` in the pattern")?;
        let mut found: Vec<String> = std::fs::read_dir(self.0.join(dir))
            .map_err(|err| err.to_string())?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter(|f| f.starts_with(prefix) && f.ends_with(suffix))
            .map(|f| {
                if dir.is_empty() {
                    f
                } else {
                    format!("{dir}/{f}")
                }
            })
            .collect();
        found.sort();
        Ok(found)
    }
}

/// Every key of `expected` is in `actual` with a matching value; arrays match
/// element by element and must have the same length.
fn assert_subset(expected: &Value, actual: &Value, at: &str) {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, value) in want {
                let got = got
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key}: missing in {actual}"));
                assert_subset(value, got, &format!("{at}.{key}"));
            }
        }
        (Value::Array(want), Value::Array(got)) => {
            assert_eq!(want.len(), got.len(), "{at}: {actual}");
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                assert_subset(w, g, &format!("{at}[{i}]"));
            }
        }
        (Value::Number(w), Value::Number(g)) => {
            assert_eq!(w.as_f64(), g.as_f64(), "{at}");
        }
        _ => assert_eq!(expected, actual, "{at}"),
    }
}

fn golden(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(dir.join("promptfooconfig.yaml")).unwrap();
    let suite = parse_suite_with(&text, SuiteFormat::Auto, &Dir(dir.clone()))
        .unwrap_or_else(|err| panic!("{name}: {err}"));
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert_subset(&expected, &serde_json::to_value(&suite).unwrap(), name);
    // Every prompt renders with every test's vars.
    let renderer = PromptRenderer::new(&suite).unwrap();
    for test in &suite.tests {
        for k in 0..suite.prompts.len() {
            renderer.render(k, &test.vars).unwrap();
        }
    }
}

#[test]
fn suite_format_golden_uses_every_feature() {
    golden("suite-format");
}
