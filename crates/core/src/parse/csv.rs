//! promptfoo's CSV test files (one test per row, `__expected` columns in the
//! `type:value` shorthand) turned into the same mappings a YAML test would be.

use std::sync::OnceLock;

use regex::Regex;
use serde_yaml_ng::{Mapping, Value as Yaml};

/// Every promptfoo base assertion type, for recognising shorthand prefixes.
pub(super) const PROMPTFOO_TYPES: [&str; 65] = [
    "answer-relevance",
    "bleu",
    "classifier",
    "contains",
    "contains-all",
    "contains-any",
    "contains-html",
    "contains-json",
    "contains-sql",
    "contains-xml",
    "context-faithfulness",
    "context-recall",
    "context-relevance",
    "conversation-relevance",
    "cost",
    "equals",
    "factuality",
    "finish-reason",
    "g-eval",
    "gleu",
    "guardrails",
    "icontains",
    "icontains-all",
    "icontains-any",
    "is-html",
    "is-json",
    "is-refusal",
    "is-sql",
    "is-valid-function-call",
    "is-valid-openai-function-call",
    "is-valid-openai-tools-call",
    "is-xml",
    "javascript",
    "latency",
    "levenshtein",
    "llm-rubric",
    "pi",
    "meteor",
    "model-graded-closedqa",
    "model-graded-factuality",
    "moderation",
    "perplexity",
    "perplexity-score",
    "python",
    "regex",
    "rouge-n",
    "ruby",
    "similar",
    "similar:cosine",
    "similar:dot",
    "similar:euclidean",
    "starts-with",
    "tool-call-f1",
    "skill-used",
    "trajectory:goal-success",
    "trajectory:tool-args-match",
    "trajectory:step-count",
    "trajectory:tool-sequence",
    "trajectory:tool-used",
    "trace-error-spans",
    "trace-span-count",
    "trace-span-duration",
    "search-rubric",
    "webhook",
    "word-count",
];

const ARRAY_TYPES: [&str; 4] = [
    "contains-all",
    "contains-any",
    "icontains-all",
    "icontains-any",
];
const RAW_TYPES: [&str; 2] = ["contains-json", "is-json"];
const THRESHOLD_TYPES: [&str; 13] = [
    "answer-relevance",
    "classifier",
    "context-faithfulness",
    "context-recall",
    "context-relevance",
    "cost",
    "latency",
    "levenshtein",
    "perplexity-score",
    "perplexity",
    "rouge-n",
    "similar",
    "starts-with",
];

fn s(text: &str) -> Yaml {
    Yaml::String(text.to_owned())
}

fn assertion(kind: &str, value: Option<Yaml>, threshold: Option<f64>) -> Yaml {
    let mut map = Mapping::new();
    map.insert(s("type"), s(kind));
    if let Some(value) = value {
        map.insert(s("value"), value);
    }
    if let Some(threshold) = threshold {
        map.insert(s("threshold"), Yaml::from(threshold));
    }
    Yaml::Mapping(map)
}

/// promptfoo's `assertionFromString`: `icontains:bonjour`, `not-regex:^a`,
/// `similar(0.9):text`, `llm-rubric:…`; anything else is an `equals`.
pub(super) fn assertion_from_string(expected: &str) -> Yaml {
    for (prefix, kind) in [
        ("javascript:", "javascript"),
        ("fn:", "javascript"),
        ("eval:", "javascript"),
        ("grade:", "llm-rubric"),
        ("llm-rubric:", "llm-rubric"),
        ("python:", "python"),
    ] {
        if let Some(rest) = expected.strip_prefix(prefix) {
            // promptfoo trims code, not rubrics.
            let rest = if kind == "llm-rubric" {
                rest
            } else {
                rest.trim()
            };
            return assertion(kind, Some(s(rest)), None);
        }
    }
    if let Some(file) = expected.strip_prefix("file://") {
        let kind = if file.ends_with(".py") || file.contains(".py:") {
            "python"
        } else {
            "javascript"
        };
        return assertion(kind, Some(s(file)), None);
    }
    static SHORTHAND: OnceLock<Regex> = OnceLock::new();
    let re = SHORTHAND.get_or_init(|| {
        let types = PROMPTFOO_TYPES
            .iter()
            .map(|t| regex::escape(t))
            .collect::<Vec<_>>()
            .join("|");
        Regex::new(&format!(
            r"^(not-)?({types})(?:\((\d+(?:\.\d+)?)\))?(?::([\s\S]*))?$"
        ))
        .expect("static regex")
    });
    let Some(caps) = re.captures(expected) else {
        return assertion("equals", Some(s(expected)), None);
    };
    let base = &caps[2];
    let kind = format!("{}{base}", caps.get(1).map_or("", |m| m.as_str()));
    let value = caps.get(4).map(|m| m.as_str());
    if ARRAY_TYPES.contains(&base) {
        // An empty value stays an (empty) string, as in promptfoo.
        let items = value.map(|v| {
            if v.is_empty() {
                s(v)
            } else {
                Yaml::Sequence(v.split(',').map(|item| s(item.trim())).collect())
            }
        });
        return assertion(&kind, items, None);
    }
    if RAW_TYPES.contains(&base) {
        return assertion(&kind, value.map(s), None);
    }
    let value = value.map(|v| s(v.trim()));
    if THRESHOLD_TYPES.contains(&base) {
        let threshold = caps
            .get(3)
            .and_then(|m| m.as_str().parse::<f64>().ok())
            .unwrap_or(if base == "similar" { 0.8 } else { 0.75 });
        return assertion(&kind, value, Some(threshold));
    }
    assertion(&kind, value, None)
}

/// The rows of a promptfoo test CSV as test mappings (with their 1-based
/// row), read one record at a time: a file of a million rows never exists
/// as a million mappings.
pub(super) struct CsvTests {
    reader: ::csv::Reader<std::io::Cursor<Vec<u8>>>,
    headers: Vec<String>,
    record: ::csv::StringRecord,
    row: usize,
}

impl CsvTests {
    /// Reads the header row of `text`.
    pub(super) fn new(mut text: String) -> Result<Self, String> {
        if text.starts_with('\u{feff}') {
            text.drain(..'\u{feff}'.len_utf8());
        }
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(std::io::Cursor::new(text.into_bytes()));
        let headers = reader
            .headers()
            .map_err(|err| format!("invalid CSV: {err}"))?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        Ok(Self {
            reader,
            headers,
            record: ::csv::StringRecord::new(),
            row: 0,
        })
    }
}

impl Iterator for CsvTests {
    type Item = Result<(usize, Yaml), String>;

    fn next(&mut self) -> Option<Self::Item> {
        self.row += 1;
        let row = self.row;
        match self.reader.read_record(&mut self.record) {
            Ok(false) => None,
            Ok(true) => Some(test_from_row(&self.headers, &self.record).map(|test| (row, test))),
            Err(err) => Some(Err(format!("invalid CSV at row {row}: {err}"))),
        }
    }
}

fn test_from_row(headers: &[String], record: &::csv::StringRecord) -> Result<Yaml, String> {
    let mut vars = Mapping::new();
    let mut asserts: Vec<Yaml> = Vec::new();
    let mut options = Mapping::new();
    let mut metadata = Mapping::new();
    let mut test = Mapping::new();
    let mut metric = None;
    let mut per_assert_threshold: Vec<(usize, f64)> = Vec::new();
    for (key, value) in headers.iter().zip(record.iter()) {
        let key = key.as_str();
        if key.starts_with("__expected") {
            if !value.trim().is_empty() {
                asserts.push(assertion_from_string(value.trim()));
            }
        } else if let Some(name) = key.strip_prefix("__metadata:") {
            if value.trim().is_empty() {
                continue;
            }
            if let Some(name) = name.strip_suffix("[]") {
                let items = split_unescaped_commas(value);
                metadata.insert(
                    s(name),
                    Yaml::Sequence(items.iter().map(|i| s(i)).collect()),
                );
            } else {
                metadata.insert(s(name), s(value));
            }
        } else if let Some(spec) = key.strip_prefix("__config:") {
            let (target, config_key) = spec.split_once(':').ok_or_else(|| {
                format!("invalid column `{key}`; expected `__config:__expected<N>:threshold`")
            })?;
            let index = match target.strip_prefix("__expected") {
                Some("") => 0,
                Some(n) => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(|n| n - 1)
                    .ok_or_else(|| format!("invalid column `{key}`"))?,
                None => return Err(format!("invalid column `{key}`")),
            };
            if config_key != "threshold" {
                return Err(format!(
                    "invalid column `{key}`: the only config key is `threshold`"
                ));
            }
            let threshold = value
                .trim()
                .parse::<f64>()
                .map_err(|_| format!("column `{key}`: `{value}` is not a number"))?;
            per_assert_threshold.push((index, threshold));
            metadata.insert(s(config_key), Yaml::from(threshold));
        } else {
            match key {
                "__prefix" => {
                    options.insert(s("prefix"), s(value));
                }
                "__suffix" => {
                    options.insert(s("suffix"), s(value));
                }
                "__description" => {
                    test.insert(s("description"), s(value));
                }
                "__providerOutput" => {
                    test.insert(s("providerOutput"), s(value));
                }
                "__metric" => metric = Some(value.to_owned()),
                "__threshold" => {
                    if let Some(t) = parse_float(value).filter(|t| *t != 0.0) {
                        test.insert(s("threshold"), Yaml::from(t));
                    }
                }
                // promptfoo warns and ignores a `__metadata` column without a key.
                "__metadata" => {}
                _ => {
                    vars.insert(s(key), s(value));
                }
            }
        }
    }
    for (i, a) in asserts.iter_mut().enumerate() {
        let Yaml::Mapping(map) = a else { continue };
        if let Some(metric) = &metric {
            map.insert(s("metric"), s(metric));
        }
        if let Some((_, t)) = per_assert_threshold
            .iter()
            .rev()
            .find(|(index, _)| *index == i)
        {
            map.insert(s("threshold"), Yaml::from(*t));
        }
    }
    test.insert(s("vars"), Yaml::Mapping(vars));
    test.insert(s("assert"), Yaml::Sequence(asserts));
    if !options.is_empty() {
        test.insert(s("options"), Yaml::Mapping(options));
    }
    if !metadata.is_empty() {
        test.insert(s("metadata"), Yaml::Mapping(metadata));
    }
    Ok(Yaml::Mapping(test))
}

/// `a, b\, c` → `["a", "b, c"]`.
fn split_unescaped_commas(value: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                current.push(',');
                chars.next();
            }
            ',' => items.push(std::mem::take(&mut current).trim().to_owned()),
            other => current.push(other),
        }
    }
    items.push(current.trim().to_owned());
    items
}

/// JavaScript's `parseFloat`: the longest numeric prefix, NaN as `None`.
fn parse_float(value: &str) -> Option<f64> {
    static NUMBER: OnceLock<Regex> = OnceLock::new();
    let re = NUMBER.get_or_init(|| {
        Regex::new(r"^[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
            .expect("static regex")
    });
    re.find(value.trim_start())
        .and_then(|m| m.as_str().parse().ok())
}

/// Every row of a test CSV at once, for the unit tests.
#[cfg(test)]
fn tests_from_csv(text: &str) -> Result<Vec<(usize, Yaml)>, String> {
    CsvTests::new(text.to_owned())?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<'a>(value: &'a Yaml, key: &str) -> Option<&'a Yaml> {
        value.as_mapping().and_then(|m| m.get(key))
    }

    #[test]
    fn shorthand_types_values_and_thresholds() {
        let a = assertion_from_string("icontains:bonjour");
        assert_eq!(field(&a, "type").unwrap(), "icontains");
        assert_eq!(field(&a, "value").unwrap(), "bonjour");

        let a = assertion_from_string("not-contains-any: a, b ,c");
        assert_eq!(field(&a, "type").unwrap(), "not-contains-any");
        assert_eq!(
            field(&a, "value").unwrap(),
            &Yaml::Sequence(vec![s("a"), s("b"), s("c")])
        );

        let a = assertion_from_string("levenshtein(3):hello");
        assert_eq!(field(&a, "threshold").unwrap(), &Yaml::from(3.0));
        let a = assertion_from_string("starts-with:Hi");
        assert_eq!(field(&a, "threshold").unwrap(), &Yaml::from(0.75));

        let a = assertion_from_string("is-json");
        assert_eq!(field(&a, "type").unwrap(), "is-json");
        assert!(field(&a, "value").is_none());

        let a = assertion_from_string("grade:is polite");
        assert_eq!(field(&a, "type").unwrap(), "llm-rubric");
    }

    #[test]
    fn text_that_is_not_shorthand_means_equals() {
        for text in ["Paris", "answer: 42", "containsx:y"] {
            let a = assertion_from_string(text);
            assert_eq!(field(&a, "type").unwrap(), "equals", "{text}");
            assert_eq!(field(&a, "value").unwrap(), text);
        }
    }

    #[test]
    fn csv_rows_become_tests() {
        let csv = "language, body ,__expected1,__expected2,__metric,__threshold,__description,__metadata:tags[],__config:__expected2:threshold\n\
                   French,\"Hello, world\",icontains:bonjour,\"contains-all:a,b\",accuracy,0.5,greeting,\"x, y\\, z\",3\n";
        let tests = tests_from_csv(csv).unwrap();
        assert_eq!(tests.len(), 1);
        let (row, test) = &tests[0];
        assert_eq!(*row, 1);
        let vars = field(test, "vars").unwrap();
        assert_eq!(field(vars, "language").unwrap(), "French");
        assert_eq!(field(vars, "body").unwrap(), "Hello, world");
        let asserts = field(test, "assert").unwrap().as_sequence().unwrap();
        assert_eq!(asserts.len(), 2);
        assert_eq!(field(&asserts[0], "metric").unwrap(), "accuracy");
        assert_eq!(field(&asserts[1], "threshold").unwrap(), &Yaml::from(3.0));
        assert_eq!(field(test, "threshold").unwrap(), &Yaml::from(0.5));
        assert_eq!(field(test, "description").unwrap(), "greeting");
        let tags = field(field(test, "metadata").unwrap(), "tags").unwrap();
        assert_eq!(tags, &Yaml::Sequence(vec![s("x"), s("y, z")]));
    }

    #[test]
    fn ragged_csv_is_an_error_naming_the_row() {
        let err = tests_from_csv("a,b\n1,2\n3\n").unwrap_err();
        assert!(err.contains("row 2"), "{err}");
    }

    #[test]
    fn parse_float_reads_a_numeric_prefix() {
        assert_eq!(parse_float("0.5abc"), Some(0.5));
        assert_eq!(parse_float(" 2"), Some(2.0));
        assert_eq!(parse_float("abc"), None);
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const SCALAR_TYPES: [&str; 6] = [
        "equals",
        "contains",
        "icontains",
        "regex",
        "finish-reason",
        "word-count",
    ];

    fn text(value: &Yaml) -> &str {
        value.as_str().unwrap_or_default()
    }

    proptest! {
        #[test]
        fn any_text_reads_as_one_typed_assertion(expected in any::<String>()) {
            let a = assertion_from_string(&expected);
            let kind = a.as_mapping().and_then(|m| m.get("type")).map(text).unwrap_or_default();
            prop_assert!(!kind.is_empty());
        }

        #[test]
        fn scalar_shorthand_round_trips(
            negate in any::<bool>(),
            kind in prop::sample::select(SCALAR_TYPES.to_vec()),
            value in "[^\\s](.*[^\\s])?",
        ) {
            let not = if negate { "not-" } else { "" };
            let a = assertion_from_string(&format!("{not}{kind}:{value}"));
            let map = a.as_mapping().unwrap();
            prop_assert_eq!(text(&map["type"]), format!("{not}{kind}"));
            prop_assert_eq!(text(&map["value"]), value.as_str());
        }

        #[test]
        fn list_shorthand_splits_on_commas(
            kind in prop::sample::select(ARRAY_TYPES.to_vec()),
            items in prop::collection::vec("[a-zA-Z0-9_]([a-zA-Z0-9 _]*[a-zA-Z0-9_])?", 1..5),
        ) {
            let a = assertion_from_string(&format!("{kind}:{}", items.join(", ")));
            let values: Vec<&str> = a.as_mapping().unwrap()["value"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(text)
                .collect();
            prop_assert_eq!(values, items.iter().map(String::as_str).collect::<Vec<_>>());
        }

        /// No assertion type starts with a capital or a digit, so such text is
        /// an `equals` of itself, untrimmed.
        #[test]
        fn text_without_a_type_prefix_is_an_exact_equals(value in "[A-Z0-9].*") {
            let a = assertion_from_string(&value);
            let map = a.as_mapping().unwrap();
            prop_assert_eq!(text(&map["type"]), "equals");
            prop_assert_eq!(text(&map["value"]), value.as_str());
        }

        #[test]
        fn csv_text_never_panics(text in any::<String>()) {
            let _ = tests_from_csv(&text);
        }
    }
}
