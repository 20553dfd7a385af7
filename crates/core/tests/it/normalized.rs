//! The one hand-off between the CLI and the gateway: a suite parsed from
//! promptfoo's format, encoded in the model's own normalized form and read
//! back, is the identical suite, for every field the model has
//! (assert-set members, grader providers, thresholds, weights, metrics,
//! options, scenarios, prompt configs, provider configs with any float).

use gauntlet_core::{
    AssertionKind, Suite, SuiteFormat,
    parse::{
        NormalizedLines, normalized_header_line, normalized_test_line, parse_normalized,
        to_normalized_json,
    },
    parse_suite,
};
use proptest::prelude::*;
use serde_json::{Value, json};

fn word() -> impl Strategy<Value = String> {
    "[a-z]{1,8}"
}

/// Any finite float, so the text form must carry every digit.
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0.0f64..10.0),
        any::<f64>().prop_filter("finite", |f| f.is_finite()),
        Just(0.1 + 0.2),
    ]
}

fn unit() -> impl Strategy<Value = f64> {
    0.0f64..1.0
}

fn grader() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("openai:gpt-4.1-mini")),
        float().prop_map(|t| json!({"id": "openai:gpt-4.1", "config": {"temperature": t}})),
        Just(json!({
            "text": {"id": "anthropic:messages:claude-sonnet-4-5"},
            "embedding": {"id": "openai:embedding:text-embedding-3-small"}
        })),
    ]
}

/// Optional `weight`, `metric` and `threshold` on an assertion.
fn decorate(mut a: Value, weight: Option<f64>, metric: Option<String>) -> Value {
    if let Some(w) = weight {
        a["weight"] = json!(w.abs());
    }
    if let Some(m) = metric {
        a["metric"] = json!(m);
    }
    a
}

fn member() -> impl Strategy<Value = Value> {
    let plain = (
        prop::sample::select(vec![
            "contains",
            "icontains",
            "starts-with",
            "equals",
            "not-contains",
            "not-icontains",
            "regex",
        ]),
        word(),
    )
        .prop_map(|(kind, value)| json!({"type": kind, "value": value}));
    let listed =
        (word(), word()).prop_map(|(a, b)| json!({"type": "icontains-any", "value": [a, b]}));
    let latency = (1u32..10_000).prop_map(|t| json!({"type": "latency", "threshold": t}));
    let rubric = (word(), proptest::option::of(grader())).prop_map(|(v, g)| {
        let mut a = json!({"type": "llm-rubric", "value": format!("is {v}")});
        if let Some(g) = g {
            a["provider"] = g;
        }
        a
    });
    let similar =
        (word(), unit()).prop_map(|(v, t)| json!({"type": "similar", "value": v, "threshold": t}));
    let json_schema =
        Just(json!({"type": "is-json", "value": {"type": "object", "required": ["a"]}}));
    (
        prop_oneof![plain, listed, latency, rubric, similar, json_schema],
        proptest::option::of(float()),
        proptest::option::of(word()),
    )
        .prop_map(|(a, w, m)| decorate(a, w, m))
}

fn assertion() -> impl Strategy<Value = Value> {
    let set = (
        prop::collection::vec(member(), 1..4),
        proptest::option::of(unit()),
        proptest::option::of(float()),
        proptest::option::of(word()),
    )
        .prop_map(|(members, threshold, w, m)| {
            let mut set = json!({"type": "assert-set", "assert": members});
            if let Some(t) = threshold {
                set["threshold"] = json!(t);
            }
            decorate(set, w, m)
        });
    prop_oneof![3 => member(), 1 => set]
}

fn var_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        word().prop_map(Value::from),
        float().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ]
}

fn test_case() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(word()),
        var_value(),
        var_value(),
        prop::collection::vec(assertion(), 0..4),
        proptest::option::of(unit()),
        proptest::option::of((word(), float())),
        proptest::option::of(grader()),
    )
        .prop_map(
            |(description, q, n, asserts, threshold, metadata, grader)| {
                let mut t = json!({"vars": {"q": q, "n": n}, "assert": asserts});
                if let Some(d) = description {
                    t["description"] = json!(d);
                }
                if let Some(th) = threshold {
                    t["threshold"] = json!(th);
                }
                if let Some((k, v)) = metadata {
                    t["metadata"] = json!({ k: v });
                }
                if let Some(g) = grader {
                    t["options"] = json!({"provider": g});
                }
                t
            },
        )
}

fn document() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(word()),
        prop::collection::vec(test_case(), 1..5),
        proptest::option::of(prop::collection::vec(var_value(), 1..3)),
        proptest::option::of((1u32..50, 1u32..4)),
        float(),
        proptest::option::of(assertion()),
        any::<bool>(),
    )
        .prop_map(|(description, tests, scenario, evaluate, temperature, default_assert, listed_vars)| {
            let mut doc = json!({
                "prompts": [
                    "Answer {{q}}",
                    {"id": "second", "label": "with n", "raw": "{{q}} times {{n}}"}
                ],
                "providers": [
                    "echo",
                    {"id": "openai:gpt-4.1", "label": "gpt", "config": {"temperature": temperature, "max_tokens": 64}}
                ],
                "tests": tests,
                "env": {"REGION": "eu"},
            });
            if let Some(d) = description {
                doc["description"] = json!(d);
            }
            if let Some(a) = default_assert {
                doc["defaultTest"] = json!({"assert": [a], "vars": {"n": 0}});
            }
            if let Some(ns) = scenario {
                let config: Vec<Value> = ns.into_iter().map(|n| json!({"vars": {"n": n}})).collect();
                doc["scenarios"] = json!([{
                    "description": "scenario",
                    "config": config,
                    "tests": [{"vars": {"q": "from a scenario"}, "assert": [{"type": "contains", "value": "q"}]}],
                }]);
            }
            if listed_vars {
                // An array var expands into one test per item.
                doc["tests"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"vars": {"q": ["one", "two", "three"], "n": 1}}));
            }
            if let Some((c, r)) = evaluate {
                doc["evaluateOptions"] = json!({"maxConcurrency": c, "repeat": r});
            }
            doc
        })
}

fn count_sets(suite: &Suite) -> usize {
    suite
        .tests
        .iter()
        .flat_map(|t| &t.assert)
        .filter(|a| a.kind == AssertionKind::AssertSet)
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn parse_encode_parse_gives_the_identical_suite(doc in document()) {
        let text = doc.to_string();
        let suite = parse_suite(&text, SuiteFormat::Json)
            .unwrap_or_else(|e| panic!("generated suite refused: {e}\n{text}"));
        let normalized = to_normalized_json(&suite);
        let back = parse_normalized(&normalized)
            .unwrap_or_else(|e| panic!("normalized suite refused: {e}\n{normalized}"));
        prop_assert_eq!(count_sets(&back), count_sets(&suite));
        prop_assert_eq!(&back, &suite);
        // And the encoding is stable: a second trip changes nothing.
        prop_assert_eq!(to_normalized_json(&back), normalized);

        // The JSON lines form (large suites, a test at a time) reads back
        // the identical suite too.
        let back = read_lines(&lines(&suite))
            .unwrap_or_else(|e| panic!("normalized lines refused: {e}"));
        prop_assert_eq!(&back, &suite);
    }
}

/// `suite` in the normalized JSON lines form.
fn lines(suite: &Suite) -> String {
    let header = Suite {
        tests: Vec::new(),
        ..suite.clone()
    };
    let mut text = normalized_header_line(&header);
    for test in &suite.tests {
        text.push('\n');
        text.push_str(&normalized_test_line(test));
    }
    text
}

fn read_lines(text: &str) -> Result<Suite, gauntlet_core::SuiteError> {
    let mut lines = text.lines();
    let mut reader = NormalizedLines::header(lines.next().unwrap_or_default())?;
    let mut tests = Vec::new();
    for (i, line) in lines.enumerate() {
        tests.push(reader.test(line, i + 2)?);
    }
    let mut suite = reader.finish()?;
    suite.tests = tests;
    Ok(suite)
}

#[test]
fn normalized_lines_are_checked_a_test_at_a_time() {
    let suite = parse_suite(
        "prompts: ['{{q}}']\nproviders: [echo]\ntests:\n  - vars: {q: a}\n  - vars: {q: b}\n",
        SuiteFormat::Yaml,
    )
    .unwrap();
    let text = lines(&suite);
    assert_eq!(read_lines(&text).unwrap(), suite);

    // A test missing a prompt's var is named by its index.
    let bad = text.replace("{\"q\":\"b\"}", "{\"r\":\"b\"}");
    let err = read_lines(&bad).unwrap_err();
    assert_eq!(err.path, "tests[1].vars", "{err}");
    // A line that is not a test names its line.
    let err = read_lines(&format!("{text}\n[1, 2]")).unwrap_err();
    assert_eq!(
        (err.path.as_str(), err.line),
        ("tests[2]", Some(4)),
        "{err}"
    );
    // No test at all, or tests inside the header, are refused.
    let header = text.lines().next().unwrap();
    assert_eq!(read_lines(header).unwrap_err().path, "tests");
    let err = NormalizedLines::header(&to_normalized_json(&suite)).unwrap_err();
    assert_eq!(err.path, "tests", "{err}");
}

#[test]
fn a_normalized_suite_is_checked_like_a_parsed_one() {
    let suite = parse_suite(
        "prompts: ['{{q}}']\nproviders: [echo]\ntests:\n  - vars: {q: a}\n    assert:\n      - type: assert-set\n        assert:\n          - type: contains\n            value: a\n",
        SuiteFormat::Yaml,
    )
    .unwrap();
    let mut doc: Value = serde_json::from_str(&to_normalized_json(&suite)).unwrap();

    // An emptied assert-set is refused with the field's path.
    let mut emptied = doc.clone();
    emptied["tests"][0]["assert"][0]["assert"] = json!([]);
    let err = parse_normalized(&emptied.to_string()).unwrap_err();
    assert_eq!(err.path, "tests[0].assert[0].assert", "{err}");

    // So is an invalid regex, and a var no test defines.
    let mut regex = doc.clone();
    regex["tests"][0]["assert"][0]["assert"][0] = json!({"kind": "regex", "value": "a("});
    let err = parse_normalized(&regex.to_string()).unwrap_err();
    assert_eq!(err.path, "tests[0].assert[0].assert[0].value", "{err}");

    doc["prompts"][0]["raw"] = json!("{{ missing }}");
    let err = parse_normalized(&doc.to_string()).unwrap_err();
    assert!(err.message.contains("`missing`"), "{err}");

    let err = parse_normalized("{\"prompts\": 3}").unwrap_err();
    assert_eq!(err.line, Some(1), "{err}");
}
