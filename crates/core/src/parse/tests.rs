//! Parsing and validation of promptfoo suites: what is accepted, and the
//! exact field each rejection names.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::suite::AssertionKind;

fn parse(yaml: &str) -> Result<Suite, SuiteError> {
    parse_suite(yaml, SuiteFormat::Yaml)
}

fn err(yaml: &str) -> SuiteError {
    parse(yaml).expect_err("the suite should be rejected")
}

/// Wraps tests (YAML list items) into an otherwise valid suite.
fn with_tests(tests: &str) -> String {
    format!("prompts: ['Say {{{{x}}}}']\nproviders: [echo]\ntests:\n{tests}")
}

struct MapFiles(BTreeMap<&'static str, &'static str>);

impl FileResolver for MapFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0
            .get(path)
            .map(|s| (*s).to_owned())
            .ok_or_else(|| "no such file".to_owned())
    }

    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        let re = format!("^{}$", regex::escape(pattern).replace(r"\*", "[^/]*"));
        let re = Regex::new(&re).map_err(|e| e.to_string())?;
        Ok(self
            .0
            .keys()
            .filter(|k| re.is_match(k))
            .map(|k| (*k).to_owned())
            .collect())
    }
}

#[test]
fn parses_the_common_promptfoo_shape() {
    let suite = parse(
        r#"
# yaml-language-server: $schema=https://promptfoo.dev/config-schema.json
$schema: https://promptfoo.dev/config-schema.json
description: Demo
sharing: false
outputPath: out.json
env: {REGION: eu, RETRIES: 3}
evaluateOptions: {maxConcurrency: 4, repeat: 2, cache: false}
prompts:
  - 'Translate to {{language}}: {{input}}'
  - id: custom
    label: Short
    raw: 'Say {{input}}'
providers:
  - openai:gpt-4.1
  - id: anthropic:messages:claude
    label: Claude
    config: {temperature: 0, max_tokens: 100}
  - ollama:llama3: {config: {num_ctx: 4096}}
defaultTest:
  vars: {language: French}
  assert:
    - type: not-contains
      value: sorry
  metadata: {suite: demo}
tests:
  - description: greeting
    vars: {input: Hello}
    threshold: 0.5
    metadata: {case: 1}
    assert:
      - type: icontains
        value: bonjour
        weight: 2
        metric: accuracy
  - vars: {input: Bye, language: German}
"#,
    )
    .unwrap();
    assert_eq!(suite.description.as_deref(), Some("Demo"));
    assert_eq!(suite.env["RETRIES"], "3");
    assert_eq!((suite.max_concurrency, suite.repeat), (Some(4), Some(2)));

    assert_eq!(suite.prompts[0].raw, "Translate to {{language}}: {{input}}");
    assert_eq!(suite.prompts[0].label, suite.prompts[0].raw);
    assert_eq!(suite.prompts[0].id.len(), 64);
    assert_eq!(suite.prompts[1].id, "custom");
    assert_eq!(suite.prompts[1].label, "Short");

    assert_eq!(suite.providers[0].id, "openai:gpt-4.1");
    assert_eq!(suite.providers[1].label.as_deref(), Some("Claude"));
    assert_eq!(suite.providers[1].config["max_tokens"], json!(100));
    assert_eq!(suite.providers[2].id, "ollama:llama3");
    assert_eq!(suite.providers[2].config["num_ctx"], json!(4096));

    let first = &suite.tests[0];
    assert_eq!(first.description.as_deref(), Some("greeting"));
    assert_eq!(first.vars["language"], json!("French"));
    assert_eq!(first.threshold, Some(0.5));
    assert_eq!(first.metadata["suite"], json!("demo"));
    assert_eq!(first.metadata["case"], json!(1));
    // Default assertions come first.
    assert_eq!(first.assert[0].type_name(), "not-contains");
    assert_eq!(first.assert[1].kind, AssertionKind::Icontains);
    assert_eq!(first.assert[1].weight, 2.0);
    assert_eq!(first.assert[1].metric.as_deref(), Some("accuracy"));
    // Test vars override default vars.
    assert_eq!(suite.tests[1].vars["language"], json!("German"));
    assert_eq!(suite.tests[1].assert.len(), 1);
}

#[test]
fn single_strings_and_targets_are_accepted() {
    let suite = parse("prompts: 'Hi {{x}}'\ntargets: echo\ntests: [{vars: {x: a}}]").unwrap();
    assert_eq!(suite.prompts.len(), 1);
    assert_eq!(suite.providers[0].id, "echo");
}

#[test]
fn json_suites_are_detected() {
    let suite = parse_suite(
        r#"{"prompts": ["Hi {{x}}"], "providers": ["echo"], "tests": [{"vars": {"x": 1}}]}"#,
        SuiteFormat::Auto,
    )
    .unwrap();
    assert_eq!(suite.tests[0].vars["x"], json!(1));
}

#[test]
fn yaml_merge_keys_are_applied() {
    let suite = parse(
        "base: &base {x: a, y: b}\nprompts: ['{{x}}{{y}}']\nproviders: [echo]\ntests:\n  - vars: {<<: *base, y: c}\n",
    );
    // `base` is not a promptfoo key.
    assert_eq!(suite.unwrap_err().path, "base");
    let suite = parse(
        "prompts: ['{{x}}{{y}}']\nproviders: [echo]\ndefaultTest: {vars: &base {x: a, y: b}}\ntests:\n  - vars: {<<: *base, y: c}\n",
    )
    .unwrap();
    assert_eq!(suite.tests[0].vars["y"], json!("c"));
    assert_eq!(suite.tests[0].vars["x"], json!("a"));
}

#[test]
fn syntax_errors_carry_line_and_column() {
    let e = err("prompts: [a\nproviders: b: c\n");
    assert_eq!(e.path, "");
    assert!(e.line.is_some() && e.column.is_some());
    assert!(
        e.to_string()
            .starts_with(&format!("line {} column", e.line.unwrap())),
        "{e}"
    );
    assert!(e.message.starts_with("invalid YAML"), "{e}");
    assert!(!e.message.contains(" at line "), "{e}");

    let e = parse_suite("{\"prompts\": [}", SuiteFormat::Json).unwrap_err();
    assert_eq!((e.line, e.column), (Some(1), Some(14)));
    assert!(e.message.starts_with("invalid JSON"), "{e}");
}

#[test]
fn missing_sections_are_named() {
    assert_eq!(err("providers: [echo]\ntests: [{}]").path, "prompts");
    assert_eq!(err("prompts: [a]\ntests: [{}]").path, "providers");
    assert_eq!(err("prompts: [a]\nproviders: [echo]").path, "tests");
    assert_eq!(
        err("prompts: []\nproviders: [echo]\ntests: [{}]").path,
        "prompts"
    );
    assert_eq!(
        err("prompts: [a]\nproviders: []\ntests: [{}]").path,
        "providers"
    );
    let e = err("prompts: [a]\nproviders: [echo]\ntests: []");
    assert_eq!(
        e.to_string(),
        "line 3 column 1: tests: the suite needs at least one test"
    );
    assert_eq!(err("").message, "the suite is empty");
    assert_eq!(err("- a").path, "");
}

#[test]
fn unknown_and_unsupported_top_level_keys() {
    let e = err("prompts: [a]\nprovider: [echo]\ntests: [{}]");
    assert_eq!(e.path, "provider");
    assert!(e.message.contains("did you mean `providers`"), "{e}");
    let e = err("prompts: [a]\nproviders: [echo]\ntests: [{}]\nredteam: {}");
    assert_eq!(e.path, "redteam");
    assert!(e.message.contains("not supported"), "{e}");
    let e = err("prompts: [a]\nproviders: [echo]\ntargets: [echo]\ntests: [{}]");
    assert_eq!(e.path, "targets");
    let e = err("prompts: [a]\nproviders: [echo]\ntests: [{}]\nevaluateOptions: {timeoutMs: 5}");
    assert_eq!(e.path, "evaluateOptions.timeoutMs");
    let e =
        err("prompts: [a]\nproviders: [echo]\ntests: [{}]\nevaluateOptions: {maxConcurrency: 0}");
    assert_eq!(e.path, "evaluateOptions.maxConcurrency");
}

#[test]
fn unknown_assertion_type_suggests_close_names() {
    let e = err(&with_tests(
        "  - vars: {x: a}\n  - vars: {x: b}\n    assert:\n      - type: contians\n        value: a\n",
    ));
    assert_eq!(e.path, "tests[1].assert[0].type");
    assert!(
        e.message.contains("unknown assertion type `contians`"),
        "{e}"
    );
    assert!(e.message.contains("did you mean `contains`"), "{e}");
    assert!(
        e.message.contains("Supported types: equals, contains"),
        "{e}"
    );

    let e = err(&with_tests(
        "  - vars: {x: a}\n    assert: [{type: not-icontain, value: a}]\n",
    ));
    assert!(e.message.contains("`not-icontains`"), "{e}");
}

#[test]
fn unsupported_assertion_types_say_why() {
    let e = err(&with_tests(
        "  - vars: {x: a}\n    assert: [{type: javascript, value: 'output.length > 1'}]\n",
    ));
    assert_eq!(e.path, "tests[0].assert[0].type");
    assert!(e.message.contains("user code"), "{e}");
    let e = err(&with_tests(
        "  - vars: {x: a}\n    assert: [{type: not-python, value: 'len(output) > 1'}]\n",
    ));
    assert!(e.message.contains("user code"), "{e}");
    let e = err(&with_tests(
        "  - vars: {x: a}\n    assert: [{type: contains, value: a, transform: 'output.trim()'}]\n",
    ));
    assert_eq!(e.path, "tests[0].assert[0].transform");
    let e = err(&with_tests("  - vars: {x: a}\n    assert: [{value: a}]\n"));
    assert_eq!(e.path, "tests[0].assert[0].type");
}

#[test]
fn invalid_regex_points_at_the_value() {
    let e = err(&with_tests(
        "  - vars: {x: a}\n    assert:\n      - type: contains\n        value: a\n      - type: regex\n        value: 'a(b'\n",
    ));
    assert_eq!(e.path, "tests[0].assert[1].value");
    assert!(e.message.starts_with("invalid regex"), "{e}");
    let e = err(&with_tests(
        "  - vars: {x: a}\n    assert: [{type: regex, value: 'a(?=b)'}]\n",
    ));
    assert!(e.message.contains("look-around"), "{e}");
}

#[test]
fn assertion_values_are_checked_per_type() {
    let cases = [
        ("{type: contains}", "tests[0].assert[0].value"),
        ("{type: contains, value: ''}", "tests[0].assert[0].value"),
        (
            "{type: contains, value: {a: 1}}",
            "tests[0].assert[0].value",
        ),
        ("{type: equals}", "tests[0].assert[0].value"),
        (
            "{type: contains-any, value: [a, [b]]}",
            "tests[0].assert[0].value[1]",
        ),
        (
            "{type: contains-all, value: '\"open'}",
            "tests[0].assert[0].value",
        ),
        ("{type: latency}", "tests[0].assert[0].threshold"),
        ("{type: cost, value: 0.1}", "tests[0].assert[0].threshold"),
        (
            "{type: word-count, value: {min: 5, max: 2}}",
            "tests[0].assert[0].value",
        ),
        (
            "{type: word-count, value: many}",
            "tests[0].assert[0].value",
        ),
        (
            "{type: is-json, value: {type: object, oneOf: []}}",
            "tests[0].assert[0].value",
        ),
        ("{type: is-json, value: '42'}", "tests[0].assert[0].value"),
        (
            "{type: contains, value: a, weight: -1}",
            "tests[0].assert[0].weight",
        ),
        (
            "{type: contains, value: a, threshold: high}",
            "tests[0].assert[0].threshold",
        ),
    ];
    for (assertion, path) in cases {
        let e = err(&with_tests(&format!(
            "  - vars: {{x: a}}\n    assert: [{assertion}]\n"
        )));
        assert_eq!(e.path, path, "{assertion}: {e}");
    }
}

#[test]
fn is_json_schema_text_is_parsed_at_load_time() {
    let suite = parse(&with_tests(
        "  - vars: {x: a}\n    assert:\n      - type: is-json\n        value: |\n          type: object\n          required: [name]\n",
    ))
    .unwrap();
    assert_eq!(
        suite.tests[0].assert[0].value,
        Some(json!({"type": "object", "required": ["name"]}))
    );
}

#[test]
fn prompt_var_missing_from_one_test_names_that_test() {
    let e = err(
        "prompts:\n  - 'Translate to {{language}}: {{input}}'\nproviders: [echo]\ntests:\n  - vars: {language: French, input: a}\n  - vars: {language: German, input: b}\n  - vars: {input: c}\n",
    );
    assert_eq!(e.path, "tests[2].vars");
    assert_eq!(
        e.to_string(),
        "line 7 column 5: tests[2].vars: prompt prompts[0] uses var `language`, which this test does not define"
    );
}

#[test]
fn prompt_var_no_test_defines_names_the_prompt() {
    let e = err(
        "prompts: ['a', 'Hello {{ name }}{{ env.X }}']\nproviders: [echo]\ntests: [{vars: {x: 1}}]",
    );
    assert_eq!(e.path, "prompts[1]");
    assert_eq!(e.message, "uses var `name`, which no test defines");
}

#[test]
fn default_vars_count_as_defined() {
    parse("prompts: ['{{a}}{{b}}']\nproviders: [echo]\ndefaultTest: {vars: {a: 1}}\ntests: [{vars: {b: 2}}]").unwrap();
}

#[test]
fn template_syntax_error_names_the_prompt() {
    let e = err("prompts: ['ok', 'Hi {{ name']\nproviders: [echo]\ntests: [{vars: {name: x}}]");
    assert_eq!(e.path, "prompts[1]");
    assert!(
        e.message.starts_with("invalid template: syntax error"),
        "{e}"
    );
}

#[test]
fn file_references_need_a_resolver() {
    let e = err("prompts: [file://prompts.txt]\nproviders: [echo]\ntests: [{}]");
    assert_eq!(e.path, "prompts[0]");
    assert!(
        e.message.contains("cannot read `file://prompts.txt`"),
        "{e}"
    );
    let e = err("prompts: [a]\nproviders: [echo]\ntests: file://tests.csv");
    assert_eq!(e.path, "tests");
    let e = err("prompts: [a]\nproviders: [echo]\ntests: [file://tests/*.yaml]");
    assert_eq!(e.path, "tests[0]");
    assert!(e.message.contains("glob"), "{e}");
    let e = err("prompts: [a]\nproviders: [file://provider.yaml]\ntests: [{}]");
    assert_eq!(e.path, "providers[0]");
}

#[test]
fn files_are_read_through_the_resolver() {
    let files = MapFiles(BTreeMap::from([
        ("p.txt", "First {{topic}}\n---\nSecond {{topic}}\n"),
        (
            "t.yaml",
            "- vars: {topic: cats}\n  assert: [{type: contains, value: cats}]\n- vars: {topic: file://topic.txt}\n",
        ),
        ("topic.txt", "dogs\n"),
        (
            "more.csv",
            "topic,__expected\nbirds,\"contains-any:bird, tweet\"\n",
        ),
        ("style.yaml", "tone: formal\nsize: 2.0\n"),
    ]));
    let suite = parse_suite_with(
        "prompts: [file://p.txt]\nproviders: [echo]\ntests:\n  - file://t.yaml\n  - more.csv\n  - vars: {topic: fish, style: file://style.yaml}\n",
        SuiteFormat::Yaml,
        &files,
    )
    .unwrap();
    assert_eq!(suite.prompts.len(), 2);
    assert_eq!(suite.prompts[1].raw, "Second {{topic}}");
    assert_eq!(suite.prompts[1].label, "p.txt: Second {{topic}}");
    assert_eq!(suite.tests.len(), 4);
    assert_eq!(suite.tests[1].vars["topic"], json!("dogs"));
    assert_eq!(suite.tests[2].vars["topic"], json!("birds"));
    assert_eq!(
        suite.tests[2].assert[0].value,
        Some(json!(["bird", "tweet"]))
    );
    assert_eq!(
        suite.tests[3].vars["style"],
        json!(r#"{"size":2,"tone":"formal"}"#)
    );
}

#[test]
fn errors_in_file_tests_say_where_they_came_from() {
    let files = MapFiles(BTreeMap::from([(
        "t.csv",
        "x,__expected\na,python:len(output) > 1\n",
    )]));
    let e = parse_suite_with(
        "prompts: ['{{x}}']\nproviders: [echo]\ntests: file://t.csv\n",
        SuiteFormat::Yaml,
        &files,
    )
    .unwrap_err();
    assert_eq!(e.path, "tests[0].assert[0].type");
    assert!(e.message.ends_with("(in row 1 of file://t.csv)"), "{e}");
}

#[test]
fn array_vars_expand_into_one_test_per_combination() {
    let suite = parse(
        "prompts: ['{{lang}} {{tone}} {{n}}']\nproviders: [echo]\ntests:\n  - vars: {lang: [fr, de], tone: [warm, cold], n: [1, 2]}\n  - vars: {lang: [es], tone: x, n: 0}\n    options: {disableVarExpansion: true}\n",
    )
    .unwrap();
    let combos: Vec<(String, String)> = suite
        .tests
        .iter()
        .map(|t| (t.vars["lang"].to_string(), t.vars["tone"].to_string()))
        .collect();
    assert_eq!(suite.tests.len(), 5);
    // The last array var varies fastest, as in promptfoo.
    assert_eq!(combos[0], ("\"fr\"".into(), "\"warm\"".into()));
    assert_eq!(combos[1], ("\"fr\"".into(), "\"cold\"".into()));
    assert_eq!(combos[2], ("\"de\"".into(), "\"warm\"".into()));
    // Lists of non-strings are single values.
    assert_eq!(suite.tests[0].vars["n"], json!([1, 2]));
    assert_eq!(suite.tests[4].vars["lang"], json!(["es"]));
}

#[test]
fn assertion_values_are_rendered_with_test_vars() {
    let suite = parse(
        "prompts: ['{{q}}']\nproviders: [echo]\ndefaultTest:\n  assert: [{type: icontains, value: '{{ expected }}'}]\ntests:\n  - vars: {q: a, expected: Paris}\n    assert: [{type: contains-any, value: ['{{ expected | upper }}', x]}]\n",
    )
    .unwrap();
    assert_eq!(suite.tests[0].assert[0].value, Some(json!("Paris")));
    assert_eq!(suite.tests[0].assert[1].value, Some(json!(["PARIS", "x"])));

    let e = err(
        "prompts: ['{{q}}']\nproviders: [echo]\ndefaultTest:\n  assert: [{type: icontains, value: '{{ expected }}'}]\ntests:\n  - vars: {q: a, expected: Paris}\n  - vars: {q: b}\n",
    );
    assert_eq!(e.path, "defaultTest.assert[0].value");
    assert_eq!(
        e.message,
        "uses var `expected`, which tests[1] does not define"
    );
}

#[test]
fn disable_default_asserts_skips_them() {
    let suite = parse(
        "prompts: [a]\nproviders: [echo]\ndefaultTest: {assert: [{type: contains, value: a}]}\ntests:\n  - options: {disableDefaultAsserts: true}\n  - {}\n",
    )
    .unwrap();
    assert!(suite.tests[0].assert.is_empty());
    assert_eq!(suite.tests[1].assert.len(), 1);
}

#[test]
fn unsupported_test_fields_are_named() {
    let cases = [
        (
            "  - vars: {x: a}\n    provider: openai:gpt-4\n",
            "tests[0].provider",
        ),
        (
            "  - vars: {x: a}\n    options: {prefix: 'Q: '}\n",
            "tests[0].options.prefix",
        ),
        (
            "  - vars: {x: a}\n    options: {temperature: 0}\n",
            "tests[0].options.temperature",
        ),
        ("  - vars: {x: a}\n    varz: {}\n", "tests[0].varz"),
        ("  - vars: {x: ~}\n", "tests[0].vars.x"),
        ("  - vars: {x: file://script.py}\n", "tests[0].vars.x"),
        ("  - 42\n", "tests[0]"),
    ];
    for (tests, path) in cases {
        assert_eq!(err(&with_tests(tests)).path, path, "{tests}");
    }
}

#[test]
fn provider_objects_are_validated() {
    let e = err("prompts: [a]\nproviders:\n  - label: x\n    config: {}\ntests: [{}]");
    assert_eq!(e.path, "providers[0]");
    let e = err("prompts: [a]\nproviders:\n  - id: echo\n    prompts: [p1]\ntests: [{}]");
    assert_eq!(e.path, "providers[0].prompts");
    let e = err("prompts: [a]\nproviders:\n  - id: echo\n    confg: {}\ntests: [{}]");
    assert_eq!(e.path, "providers[0].confg");
    assert!(e.message.contains("did you mean `config`"), "{e}");
}

#[test]
fn prompt_objects_and_duplicate_ids() {
    let e =
        err("prompts:\n  - {id: a, raw: x}\n  - {id: a, raw: y}\nproviders: [echo]\ntests: [{}]");
    assert_eq!(e.path, "prompts[1]");
    let e = err("prompts:\n  - {raw: x, config: {temperature: 1}}\nproviders: [echo]\ntests: [{}]");
    assert_eq!(e.path, "prompts[0].config");
    // Identical prompts still get distinct ids.
    let suite = parse("prompts: [same, same]\nproviders: [echo]\ntests: [{}]").unwrap();
    assert_ne!(suite.prompts[0].id, suite.prompts[1].id);
}

#[test]
fn legacy_prompt_map_uses_values_as_labels() {
    let suite =
        parse("prompts: {'Hi {{x}}': greeting}\nproviders: [echo]\ntests: [{vars: {x: 1}}]")
            .unwrap();
    assert_eq!(suite.prompts[0].raw, "Hi {{x}}");
    assert_eq!(suite.prompts[0].label, "greeting");
}

#[test]
fn conversation_var_is_reported_as_unsupported() {
    let e = err("prompts: ['{{ _conversation }}']\nproviders: [echo]\ntests: [{}]");
    assert_eq!(e.path, "prompts[0]");
    assert!(e.message.contains("_conversation"), "{e}");
}

#[test]
fn display_joins_path_and_message() {
    assert_eq!(
        SuiteError::at("tests[0]", "bad").to_string(),
        "tests[0]: bad"
    );
    assert_eq!(SuiteError::at("", "bad").to_string(), "bad");
    assert_eq!(
        SuiteError::syntax(Some(3), Some(7), "invalid YAML: x").to_string(),
        "line 3 column 7: invalid YAML: x"
    );
}

#[test]
fn scenarios_cross_each_config_with_each_test() {
    let suite = parse(
        r#"
prompts: ['{{greeting}} in {{language}}']
providers: [echo]
defaultTest:
  assert: [{type: contains, value: '{{greeting}}'}]
scenarios:
  - description: languages
    config:
      - vars: {language: French}
        assert: [{type: icontains, value: fr}]
      - vars: {language: German, greeting: Hallo}
    tests:
      - description: hi
        vars: {greeting: Hi}
      - vars: {greeting: Bye}
        assert: [{type: starts-with, value: B}]
"#,
    )
    .unwrap();
    assert_eq!(suite.tests.len(), 4);
    let vars: Vec<(String, String)> = suite
        .tests
        .iter()
        .map(|t| {
            (
                t.vars["language"].to_string(),
                t.vars["greeting"].to_string(),
            )
        })
        .collect();
    assert_eq!(vars[0], ("\"French\"".into(), "\"Hi\"".into()));
    // The test's vars win over the config entry's.
    assert_eq!(vars[2], ("\"German\"".into(), "\"Hi\"".into()));
    assert_eq!(suite.tests[0].description.as_deref(), Some("hi"));
    // defaultTest's, then the config entry's, then the test's assertions.
    let types: Vec<String> = suite.tests[1]
        .assert
        .iter()
        .map(|a| a.type_name())
        .collect();
    assert_eq!(types, ["contains", "icontains", "starts-with"]);
    assert_eq!(suite.tests[1].assert[0].value, Some(json!("Bye")));
    assert_eq!(suite.tests[3].assert.len(), 2);
}

#[test]
fn scenarios_stand_in_for_tests_and_report_their_own_paths() {
    let suite = parse(
        "prompts: ['{{x}}']\nproviders: [echo]\nscenarios:\n  - config: [{vars: {x: a}}, {vars: {x: b}}]\n",
    )
    .unwrap();
    assert_eq!(suite.tests.len(), 2);
    let e = err("prompts: [a]\nproviders: [echo]\nscenarios:\n  - tests: [{}]\n");
    assert_eq!(e.path, "scenarios[0].config");
    let e = err(
        "prompts: [a]\nproviders: [echo]\nscenarios:\n  - config:\n      - vars: {x: a}\n        assert: [{type: regex, value: '('}]\n",
    );
    assert_eq!(e.path, "scenarios[0].config[0].assert[0].value");
    assert_eq!((e.line, e.column), (Some(6), Some(32)));
}

#[test]
fn assertion_templates_are_substituted_before_validation() {
    let suite = parse(
        r#"
assertionTemplates:
  polite: {type: icontains, value: please}
  starts: {type: starts-with, value: '{{x}}'}
prompts: ['{{x}}']
providers: [echo]
tests:
  - vars: {x: Hi}
    assert:
      - $ref: '#/assertionTemplates/polite'
      - {$ref: '#/assertionTemplates/starts', weight: 3}
"#,
    )
    .unwrap();
    let a = &suite.tests[0].assert;
    assert_eq!(a[0].kind, AssertionKind::Icontains);
    assert_eq!(a[1].value, Some(json!("Hi")));
    assert_eq!(a[1].weight, 3.0);

    let e = err(
        "assertionTemplates: {bad: {type: contians, value: a}}\nprompts: [a]\nproviders: [echo]\ntests:\n  - assert: [{$ref: '#/assertionTemplates/bad'}]\n",
    );
    assert_eq!(e.path, "tests[0].assert[0].type");
    assert!(e.message.contains("did you mean `contains`"), "{e}");
    let e = err("prompts: [a]\nproviders: [echo]\ntests:\n  - assert: [{$ref: '#/nope'}]\n");
    assert_eq!(e.path, "tests[0].assert[0].$ref");
    assert_eq!(e.line, Some(4));
}

#[test]
fn yaml_and_markdown_prompt_files() {
    let files = MapFiles(BTreeMap::from([
        (
            "chat.yaml",
            "- role: system\n  content: Be brief.\n- role: user\n  content: '{{q}}'\n",
        ),
        ("p.md", "# Task\n{{q}}\n"),
    ]));
    let suite = parse_suite_with(
        "prompts: [file://chat.yaml, file://p.md]\nproviders: [echo]\ntests: [{vars: {q: hi}}]\n",
        SuiteFormat::Yaml,
        &files,
    )
    .unwrap();
    assert_eq!(
        suite.prompts[0].raw,
        r#"[{"role":"system","content":"Be brief."},{"role":"user","content":"{{q}}"}]"#
    );
    assert!(suite.prompts[0].label.starts_with("chat.yaml: [{"));
    assert_eq!(suite.prompts[1].raw, "# Task\n{{q}}\n");
    let rendered = PromptRenderer::new(&suite)
        .unwrap()
        .render(0, &suite.tests[0].vars)
        .unwrap();
    assert!(rendered.contains(r#""content": "hi""#), "{rendered}");
}

#[test]
fn globs_expand_through_the_resolver() {
    let files = MapFiles(BTreeMap::from([
        ("prompts/a.txt", "A {{x}}"),
        ("prompts/b.txt", "B {{x}}\n---\nC {{x}}"),
        ("prompts/skip.md", "no"),
        ("tests/1.yaml", "- vars: {x: one}"),
        ("tests/2.csv", "x\ntwo\nthree\n"),
    ]));
    let suite = parse_suite_with(
        "prompts: [file://prompts/*.txt]\nproviders: [echo]\ntests: [file://tests/*]\n",
        SuiteFormat::Yaml,
        &files,
    )
    .unwrap();
    let raws: Vec<&str> = suite.prompts.iter().map(|p| p.raw.as_str()).collect();
    assert_eq!(raws, ["A {{x}}", "B {{x}}", "C {{x}}"]);
    assert_eq!(suite.tests.len(), 3);
    assert_eq!(suite.tests[2].vars["x"], json!("three"));

    let e = parse_suite_with(
        "prompts: [file://none/*.txt]\nproviders: [echo]\ntests: [{}]\n",
        SuiteFormat::Yaml,
        &files,
    )
    .unwrap_err();
    assert_eq!(e.path, "prompts[0]");
    assert!(e.message.contains("no file matches"), "{e}");
    assert_eq!((e.line, e.column), (Some(1), Some(11)));
}

#[test]
fn errors_carry_the_line_and_column_of_their_field() {
    let e = err(&with_tests(
        "  - vars: {x: a}\n  - vars: {x: b}\n    assert:\n      - type: contains\n        value: a\n      - type: regex\n        value: 'a(b'\n",
    ));
    assert_eq!(e.path, "tests[1].assert[1].value");
    assert_eq!((e.line, e.column), (Some(10), Some(9)));
    assert!(
        e.to_string()
            .starts_with("line 10 column 9: tests[1].assert[1].value: invalid regex")
    );

    let e = parse_suite(
        "{\n  \"prompts\": [\"a\"],\n  \"providers\": [\"echo\"],\n  \"tests\": [{\"vars\": {\"x\": null}}]\n}",
        SuiteFormat::Json,
    )
    .unwrap_err();
    assert_eq!(e.path, "tests[0].vars.x");
    assert_eq!((e.line, e.column), (Some(4), Some(23)));
}

#[test]
fn errors_inside_referenced_files_name_the_file() {
    let files = MapFiles(BTreeMap::from([
        (
            "t.yaml",
            "- vars: {x: a}\n  assert: [{type: regex, value: '('}]\n",
        ),
        ("bad.csv", "x,y\n1,2\n3\n"),
        ("p.txt", "Hi {{ x"),
    ]));
    let parse_with = |text: &str| parse_suite_with(text, SuiteFormat::Yaml, &files).unwrap_err();
    let e = parse_with(
        "prompts: ['{{x}}']\nproviders: [echo]\ntests: [{vars: {x: 1}}, file://t.yaml]\n",
    );
    assert_eq!(e.file.as_deref(), Some("t.yaml"));
    assert_eq!(e.line, None);
    assert!(e.message.ends_with("(in item 0 of file://t.yaml)"), "{e}");

    // A ragged row is named, at the reference that loads the file.
    let e = parse_with("prompts: [a]\nproviders: [echo]\ntests: file://bad.csv\n");
    assert_eq!(e.path, "tests");
    assert!(e.message.contains("row 2"), "{e}");
    assert_eq!(e.line, Some(3));

    let e = parse_with("prompts:\n  - file://p.txt\nproviders: [echo]\ntests: [{vars: {x: 1}}]\n");
    assert_eq!(e.path, "prompts[0]");
    assert_eq!(e.file.as_deref(), Some("p.txt"));
    assert_eq!((e.line, e.column), (Some(2), Some(5)));
}

#[test]
fn template_errors_in_assertion_values_are_reported_at_parse_time() {
    let e = err(&with_tests(
        "  - vars: {x: a}\n    assert: [{type: contains, value: '{{ x'}]\n",
    ));
    assert_eq!(e.path, "tests[0].assert[0].value");
    assert!(e.message.starts_with("invalid template"), "{e}");
    let e = err(&with_tests(
        "  - vars: {x: a}\n    assert: [{type: contains, value: '{{ y }}'}]\n",
    ));
    assert!(e.message.contains("`y`"), "{e}");
    let e =
        err("prompts: ['a', '{{ x | nosuchfilter }}']\nproviders: [echo]\ntests: [{vars: {x: 1}}]");
    assert_eq!(e.path, "prompts[1]");
    assert!(e.message.contains("test case 0"), "{e}");
    assert!(e.message.contains("nosuchfilter"), "{e}");
    assert_eq!((e.line, e.column), (Some(1), Some(16)));
}

#[test]
fn provider_config_passes_through_untouched() {
    let suite = parse(
        r#"
prompts: [a]
providers:
  - id: openai:chat:gpt-4.1
    label: main
    config:
      temperature: 0.2
      max_tokens: 256
      top_p: 0.9
      stop: ['###']
      seed: 7
      response_format: {type: json_object}
      apiBaseUrl: http://localhost:8080/v1
      apiKeyEnvar: MY_KEY
tests: [{}]
"#,
    )
    .unwrap();
    let config = &suite.providers[0].config;
    assert_eq!(
        serde_json::Value::Object(config.clone()),
        json!({
            "temperature": 0.2, "max_tokens": 256, "top_p": 0.9, "stop": ["###"], "seed": 7,
            "response_format": {"type": "json_object"},
            "apiBaseUrl": "http://localhost:8080/v1", "apiKeyEnvar": "MY_KEY",
        })
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Any bytes, or YAML-shaped text built from suite keys and punctuation.
    fn suite_like() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("prompts".to_owned()),
            Just("providers".to_owned()),
            Just("tests".to_owned()),
            Just("defaultTest".to_owned()),
            Just("scenarios".to_owned()),
            Just("config".to_owned()),
            Just("vars".to_owned()),
            Just("assert".to_owned()),
            Just("type".to_owned()),
            Just("value".to_owned()),
            Just("$ref".to_owned()),
            Just("'#/a'".to_owned()),
            Just("echo".to_owned()),
            Just("{{x}}".to_owned()),
            Just("regex".to_owned()),
            Just("contains".to_owned()),
            Just("file://x.txt".to_owned()),
            prop::sample::select(vec![
                ": ", "\n", "\n  ", "- ", "[", "]", "{", "}", ", ", "&a ", "*a", "<<: "
            ])
            .prop_map(str::to_owned),
            "[a-z0-9 ]{0,6}",
        ];
        prop_oneof![
            prop::collection::vec(token, 0..40).prop_map(|t| t.concat()),
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(text in suite_like()) {
            let _ = parse_suite(&text, SuiteFormat::Auto);
            let _ = parse_suite(&text, SuiteFormat::Json);
        }

        /// Count = product of list lengths, and every combination appears once.
        #[test]
        fn array_vars_expand_to_every_combination_once(
            lists in prop::collection::vec(prop::collection::vec("[a-z]{1,4}", 1..4), 1..4),
        ) {
            let lists: Vec<Vec<String>> = lists
                .into_iter()
                .map(|mut l| { l.sort(); l.dedup(); l })
                .collect();
            let names: Vec<String> = (0..lists.len()).map(|i| format!("v{i}")).collect();
            let vars = names
                .iter()
                .zip(&lists)
                .map(|(n, l)| format!("{n}: [{}]", l.join(", ")))
                .collect::<Vec<_>>()
                .join(", ");
            let prompt: String = names.iter().map(|n| format!("{{{{{n}}}}}")).collect();
            let suite = parse(&format!(
                "prompts: ['{prompt}']\nproviders: [echo]\ntests: [{{vars: {{{vars}}}}}]\n"
            ))
            .unwrap();
            let expected: usize = lists.iter().map(Vec::len).product();
            prop_assert_eq!(suite.tests.len(), expected);
            let mut seen = std::collections::BTreeSet::new();
            for test in &suite.tests {
                let combo: Vec<String> = names.iter().map(|n| test.vars[n].to_string()).collect();
                for (value, list) in combo.iter().zip(&lists) {
                    let bare = value.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                    let known = list.iter().any(|l| bare == Some(l.as_str()));
                    prop_assert!(known, "{} is not one of {:?}", value, list);
                }
                prop_assert!(seen.insert(combo));
            }
        }
    }
}

#[test]
fn json_suites_parse_like_their_yaml_and_keep_error_paths() {
    // JSON without `$ref`s reads its tests one at a time (`split_json`).
    let yaml = "description: d\nprompts: ['Say {{ x }}']\nproviders: [echo]\n\
                defaultTest:\n  assert: [{type: contains, value: Say}]\n\
                tests:\n  - vars: {x: [a, b]}\n    assert: [{type: icontains, value: say}]\n\
                \x20 - description: two\n    vars: {x: c}\n";
    let value: serde_json::Value = serde_yaml_ng::from_str(yaml).unwrap();
    let json = serde_json::to_string_pretty(&value).unwrap();
    let from_yaml = parse_suite(yaml, SuiteFormat::Yaml).unwrap();
    assert_eq!(from_yaml.tests.len(), 3);
    assert_eq!(parse_suite(&json, SuiteFormat::Json).unwrap(), from_yaml);
    assert_eq!(parse_suite(&json, SuiteFormat::Auto).unwrap(), from_yaml);

    let err = parse_suite(&json.replace("icontains", "icontans"), SuiteFormat::Json).unwrap_err();
    assert_eq!(err.path, "tests[0].assert[0].type");
    assert!(err.line.is_some(), "{err:?}");
    let err = parse_suite(&json.replace("\"vars\"", "\"varz\""), SuiteFormat::Json).unwrap_err();
    assert!(err.path.starts_with("tests[0]"), "{err:?}");
    let err = parse_suite(
        "{\"prompts\": [\"a\"], \"providers\": [\"echo\"], \"tests\": 3}",
        SuiteFormat::Json,
    )
    .unwrap_err();
    assert_eq!(err.path, "tests");
}

#[test]
fn a_small_product_expands_to_exactly_its_count_in_promptfoo_order() {
    // 3 × 4 × 5 = 60, with a scalar var between the lists.
    let yaml = "prompts: ['{{a}}{{b}}{{s}}{{c}}']\nproviders: [echo]\ntests:\n  - vars: {a: [a0, a1, a2], b: [b0, b1, b2, b3], s: fixed, c: [c0, c1, c2, c3, c4]}\n";
    let suite = parse(yaml).unwrap();
    assert_eq!(suite.tests.len(), 60);
    let mut expected = Vec::new();
    for a in 0..3 {
        for b in 0..4 {
            for c in 0..5 {
                expected.push(json!([
                    format!("a{a}"),
                    format!("b{b}"),
                    "fixed",
                    format!("c{c}")
                ]));
            }
        }
    }
    let got: Vec<serde_json::Value> = suite
        .tests
        .iter()
        .map(|t| json!([t.vars["a"], t.vars["b"], t.vars["s"], t.vars["c"]]))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn a_caller_may_lower_the_test_limit() {
    let yaml = "prompts: ['{{a}}{{b}}']\nproviders: [echo]\ntests:\n  - vars: {a: [a0, a1, a2], b: [b0, b1, b2, b3]}\n  - vars: {a: x, b: y}\n";
    let limited = |max| parse_suite_limited(yaml, SuiteFormat::Yaml, &NoFiles, max);
    assert_eq!(limited(13).unwrap().tests.len(), 13);
    let e = limited(12).unwrap_err();
    assert_eq!(e.path, "tests[1]");
    assert_eq!(
        e.message,
        "expands into 1 test case, which with the 12 before it is more than the limit of 12"
    );
    let e = limited(11).unwrap_err();
    assert_eq!(e.path, "tests[0].vars");
    assert_eq!(
        e.message,
        "expands into 12 test cases, more than the limit of 11"
    );
    // The limit can be lowered, never raised.
    assert_eq!(limited(usize::MAX).unwrap().tests.len(), 13);
    assert_eq!(MAX_TESTS, 1_000_000);
}

#[test]
fn scenarios_count_against_the_same_limit_as_tests() {
    let yaml = "prompts: ['{{x}}']\nproviders: [echo]\ntests:\n  - vars: {x: [a, b]}\nscenarios:\n  - config: [{vars: {x: c}}, {vars: {x: d}}]\n    tests: [{}, {}]\n";
    let limited = |max| parse_suite_limited(yaml, SuiteFormat::Yaml, &NoFiles, max);
    assert_eq!(limited(6).unwrap().tests.len(), 6);
    let e = limited(5).unwrap_err();
    assert_eq!(e.path, "scenarios[0]");
    assert_eq!(
        e.message,
        "crosses 2 config entries with 2 tests into 4 test cases, which with the 2 before it is more than the limit of 5"
    );
}

mod expansion_properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// For any list sizes, with scalar vars and lists of non-strings
        /// among them, the tests are exactly the product of the list
        /// lengths, in promptfoo's order (the last list turns fastest).
        #[test]
        fn expanded_tests_are_the_product_of_the_list_sizes_in_order(
            sizes in prop::collection::vec(0usize..6, 1..5),
        ) {
            // Size 0 stands for a scalar var; a list of numbers also stays whole.
            let names: Vec<String> = (0..sizes.len()).map(|i| format!("v{i}")).collect();
            let vars = names
                .iter()
                .zip(&sizes)
                .map(|(n, &size)| match size {
                    0 => format!("{n}: s"),
                    1 if n == "v0" => format!("{n}: [1, 2]"),
                    _ => {
                        let items: Vec<String> = (0..size).map(|k| format!("{n}_{k}")).collect();
                        format!("{n}: [{}]", items.join(", "))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            let prompt: String = names.iter().map(|n| format!("{{{{{n}}}}}")).collect();
            let suite = parse(&format!(
                "prompts: ['{prompt}']\nproviders: [echo]\ntests: [{{vars: {{{vars}}}}}]\n"
            ))
            .unwrap();
            let lengths: Vec<usize> = sizes
                .iter()
                .enumerate()
                .map(|(i, &size)| if size == 0 || (size == 1 && i == 0) { 1 } else { size })
                .collect();
            let expected: usize = lengths.iter().product();
            prop_assert_eq!(suite.tests.len(), expected);
            for (t, test) in suite.tests.iter().enumerate() {
                // The odometer digit of each var at test `t`.
                let mut rest = t;
                for (i, n) in names.iter().enumerate().rev() {
                    let digit = rest % lengths[i];
                    rest /= lengths[i];
                    let want = match sizes[i] {
                        0 => json!("s"),
                        1 if i == 0 => json!([1, 2]),
                        _ => json!(format!("{n}_{digit}")),
                    };
                    prop_assert_eq!(&test.vars[n], &want, "test {}", t);
                }
            }
        }
    }
}
