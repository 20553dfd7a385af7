//! Golden verdicts for the deterministic assertion types and promptfoo's
//! grading semantics (`not-`, weights, thresholds, `metric`, `assert-set`).
//!
//! Each test is a promptfoo-style config graded against fixed outputs. Every
//! expected per-assertion pass/score and test pass/score was produced by
//! promptfoo 0.121.20 itself: the same tests run through its exported
//! `assertions.runAssertions` (node, `npm install promptfoo@0.121.20`) with
//! `latencyMs: 120`, `cost: 0.00123` and `finishReason: "stop"` unless a case
//! says otherwise, and checked against its handlers in
//! `src/assertions/*.ts` (`AssertionsResult` for weights, thresholds, named
//! scores and sets). None of them was copied from our own output.

use gauntlet_core::{Grade, ProviderOutput, Suite, SuiteFormat, grading::grade, parse_suite};

fn load(yaml: &str) -> Suite {
    parse_suite(yaml, SuiteFormat::Yaml).unwrap_or_else(|err| panic!("{err}"))
}

/// The output the promptfoo run used unless a case says otherwise.
fn out(text: &str) -> ProviderOutput {
    with(text, 120, 0.00123, Some("stop"))
}

fn with(text: &str, latency_ms: u32, cost_usd: f64, finish_reason: Option<&str>) -> ProviderOutput {
    ProviderOutput {
        text: text.to_owned(),
        latency_ms,
        cost_usd,
        finish_reason: finish_reason.map(str::to_owned),
    }
}

/// `Grade.named_scores` is exactly `want` (promptfoo's `namedScores`).
#[track_caller]
fn assert_named(grade: &Grade, want: &[(&str, f64)]) {
    let got: Vec<(&str, f64)> = grade
        .named_scores
        .iter()
        .map(|(name, score)| (name.as_str(), *score))
        .collect();
    assert_eq!(got.len(), want.len(), "named scores {got:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(
            g.0 == w.0 && close(g.1, w.1),
            "named scores {got:?}, promptfoo {want:?}"
        );
    }
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() < 1e-9
}

/// Grades `suite.tests[test]` and compares every outcome, in promptfoo's
/// order (a set is followed by its members), with `want`: (type, pass, score).
#[track_caller]
fn check(
    suite: &Suite,
    test: usize,
    output: &ProviderOutput,
    want: &[(&str, bool, f64)],
    pass: bool,
    score: f64,
) -> Grade {
    let grade = grade(&suite.tests[test], output);
    let at = format!("tests[{test}] on {:?}", output.text);
    let got: Vec<(&str, bool, f64)> = grade
        .assertions
        .iter()
        .map(|a| (a.kind.as_str(), a.pass, a.score))
        .collect();
    assert_eq!(got.len(), want.len(), "{at}: {got:?}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.0 == w.0 && g.1 == w.1 && close(g.2, w.2),
            "{at}: assertion {i}: got {g:?}, promptfoo {w:?} ({})",
            grade.assertions[i].reason
        );
    }
    assert_eq!(grade.pass, pass, "{at}: test pass ({})", grade.reason);
    assert!(
        close(grade.score, score),
        "{at}: test score {} vs {score}",
        grade.score
    );
    grade
}

#[test]
fn exact_and_substring_types_follow_promptfoo() {
    let suite = load(EXACT);
    check(
        &suite,
        0,
        &out("Paris"),
        &[
            ("equals", true, 1.0),
            ("not-equals", true, 1.0),
            ("equals", false, 0.0),
        ],
        false,
        0.6666666666666666,
    );
    check(
        &suite,
        0,
        &out("paris"),
        &[
            ("equals", false, 0.0),
            ("not-equals", false, 0.0),
            ("equals", true, 1.0),
        ],
        false,
        0.3333333333333333,
    );
    check(
        &suite,
        1,
        &out("{\"b\": {\"c\": null}, \"a\": [1, 2.0]}"),
        &[("equals", true, 1.0), ("not-equals", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        1,
        &out("not json"),
        &[("equals", false, 0.0), ("not-equals", true, 1.0)],
        false,
        0.5,
    );
    check(
        &suite,
        2,
        &out("The capital of France is Paris."),
        &[
            ("contains", true, 1.0),
            ("contains", false, 0.0),
            ("icontains", true, 1.0),
            ("not-contains", true, 1.0),
            ("not-icontains", false, 0.0),
        ],
        false,
        0.6,
    );
    check(
        &suite,
        3,
        &out("The capital of France is Paris."),
        &[
            ("contains-any", true, 1.0),
            ("contains-any", false, 0.0),
            ("contains-all", true, 1.0),
            ("contains-all", false, 0.0),
            ("icontains-any", true, 1.0),
            ("icontains-all", true, 1.0),
            ("not-contains-any", true, 1.0),
            ("not-contains-all", true, 1.0),
            ("not-icontains-all", false, 0.0),
        ],
        false,
        0.6666666666666666,
    );
    check(
        &suite,
        4,
        &out("The capital of France is Paris."),
        &[
            ("starts-with", true, 1.0),
            ("starts-with", false, 0.0),
            ("not-starts-with", true, 1.0),
            ("regex", true, 1.0),
            ("regex", false, 0.0),
            ("not-regex", true, 1.0),
        ],
        false,
        0.6666666666666666,
    );
}

#[test]
fn structure_types_follow_promptfoo() {
    let suite = load(STRUCTURE);
    check(
        &suite,
        0,
        &out("{\"name\": \"Ada\", \"age\": 36}"),
        &[
            ("is-json", true, 1.0),
            ("is-json", true, 1.0),
            ("is-json", false, 0.0),
            ("not-is-json", false, 0.0),
            ("contains-json", true, 1.0),
            ("contains-json", true, 1.0),
            ("not-contains-json", false, 0.0),
        ],
        false,
        0.5714285714285714,
    );
    check(
        &suite,
        0,
        &out("Here you go: {\"name\": \"Ada\", \"age\": \"36\"} hope it helps"),
        &[
            ("is-json", false, 0.0),
            ("is-json", false, 0.0),
            ("is-json", false, 0.0),
            ("not-is-json", true, 1.0),
            ("contains-json", true, 1.0),
            ("contains-json", false, 0.0),
            ("not-contains-json", false, 0.0),
        ],
        false,
        0.2857142857142857,
    );
    check(
        &suite,
        0,
        &out("no json here"),
        &[
            ("is-json", false, 0.0),
            ("is-json", false, 0.0),
            ("is-json", false, 0.0),
            ("not-is-json", true, 1.0),
            ("contains-json", false, 0.0),
            ("contains-json", false, 0.0),
            ("not-contains-json", true, 1.0),
        ],
        false,
        0.2857142857142857,
    );
    check(
        &suite,
        1,
        &out("<analysis><sentiment>positive</sentiment><score>0.9</score></analysis>"),
        &[
            ("is-xml", true, 1.0),
            ("is-xml", true, 1.0),
            ("is-xml", false, 0.0),
            ("not-is-xml", false, 0.0),
            ("contains-xml", true, 1.0),
            ("contains-xml", true, 1.0),
            ("not-contains-xml", false, 0.0),
        ],
        false,
        0.5714285714285714,
    );
    check(
        &suite,
        1,
        &out("Result: <analysis><sentiment>negative</sentiment></analysis> done"),
        &[
            ("is-xml", false, 0.0),
            ("is-xml", false, 0.0),
            ("is-xml", false, 0.0),
            ("not-is-xml", true, 1.0),
            ("contains-xml", true, 1.0),
            ("contains-xml", false, 0.0),
            ("not-contains-xml", false, 0.0),
        ],
        false,
        0.2857142857142857,
    );
    check(
        &suite,
        1,
        &out("<analysis><sentiment>positive</analysis>"),
        &[
            ("is-xml", false, 0.0),
            ("is-xml", false, 0.0),
            ("is-xml", false, 0.0),
            ("not-is-xml", true, 1.0),
            ("contains-xml", false, 0.0),
            ("contains-xml", false, 0.0),
            ("not-contains-xml", true, 1.0),
        ],
        false,
        0.2857142857142857,
    );
    check(
        &suite,
        2,
        &out("<div><p>Hello <b>world</b></p></div>"),
        &[
            ("is-html", true, 1.0),
            ("contains-html", true, 1.0),
            ("not-is-html", false, 0.0),
            ("not-contains-html", false, 0.0),
        ],
        false,
        0.5,
    );
    check(
        &suite,
        2,
        &out("Here is a snippet: <p>Hello</p> and <br> more text"),
        &[
            ("is-html", false, 0.0),
            ("contains-html", true, 1.0),
            ("not-is-html", true, 1.0),
            ("not-contains-html", false, 0.0),
        ],
        false,
        0.5,
    );
    check(
        &suite,
        2,
        &out("No markup here, just 3 < 4 and 5 > 2."),
        &[
            ("is-html", false, 0.0),
            ("contains-html", false, 0.0),
            ("not-is-html", true, 1.0),
            ("not-contains-html", true, 1.0),
        ],
        false,
        0.5,
    );
    check(
        &suite,
        3,
        &out("SELECT id, name FROM users WHERE id = 1"),
        &[
            ("is-sql", true, 1.0),
            ("is-sql", true, 1.0),
            ("is-sql", false, 0.0),
            ("contains-sql", true, 1.0),
            ("not-is-sql", false, 0.0),
            ("not-contains-sql", false, 0.0),
        ],
        false,
        0.5,
    );
    check(
        &suite,
        3,
        &out("SELECT * FORM users"),
        &[
            ("is-sql", false, 0.0),
            ("is-sql", false, 0.0),
            ("is-sql", false, 0.0),
            ("contains-sql", false, 0.0),
            ("not-is-sql", true, 1.0),
            ("not-contains-sql", true, 1.0),
        ],
        false,
        0.3333333333333333,
    );
    check(
        &suite,
        3,
        &out("Try this:\n```sql\nSELECT name FROM orders;\n```\n"),
        &[
            ("is-sql", false, 0.0),
            ("is-sql", false, 0.0),
            ("is-sql", false, 0.0),
            ("contains-sql", true, 1.0),
            ("not-is-sql", true, 1.0),
            ("not-contains-sql", false, 0.0),
        ],
        false,
        0.3333333333333333,
    );
    check(
        &suite,
        4,
        &out("SELECT name FROM users LIMIT 5"),
        &[
            ("is-sql", true, 1.0),
            ("is-sql", true, 1.0),
            ("is-sql", true, 1.0),
        ],
        true,
        1.0,
    );
}

#[test]
fn text_metrics_score_and_threshold_like_promptfoo() {
    // Scored types report their score (1 − score under `not-`); levenshtein
    // and word-count are pass/fail. Defaults: levenshtein 5, rouge-n 0.75,
    // bleu and gleu 0.5.
    let suite = load(TEXT);
    check(
        &suite,
        0,
        &out("sitting"),
        &[
            ("levenshtein", true, 1.0),
            ("levenshtein", false, 0.0),
            ("not-levenshtein", true, 1.0),
        ],
        false,
        0.6666666666666666,
    );
    check(
        &suite,
        0,
        &out("kitten"),
        &[
            ("levenshtein", true, 1.0),
            ("levenshtein", true, 1.0),
            ("not-levenshtein", false, 0.0),
        ],
        false,
        0.6666666666666666,
    );
    check(
        &suite,
        1,
        &out("The cat sat on the mat."),
        &[
            ("rouge-n", true, 0.8235294117647058),
            ("rouge-n", false, 0.8235294117647058),
            ("not-rouge-n", true, 0.17647058823529416),
        ],
        false,
        0.6078431372549019,
    );
    check(
        &suite,
        1,
        &out("A dog ran in the park."),
        &[
            ("rouge-n", false, 0.2352941176470588),
            ("rouge-n", false, 0.2352941176470588),
            ("not-rouge-n", true, 0.7647058823529412),
        ],
        false,
        0.411764705882353,
    );
    check(
        &suite,
        2,
        &out("the cat sat on the mat"),
        &[
            ("bleu", false, 0.010573712634405643),
            ("bleu", false, 0.010573712634405643),
            ("not-bleu", true, 0.9894262873655943),
        ],
        false,
        0.33685790421146855,
    );
    check(
        &suite,
        2,
        &out("the cat is on the mat"),
        &[
            ("bleu", true, 1.0),
            ("bleu", true, 1.0),
            ("not-bleu", false, 0.0),
        ],
        false,
        0.6666666666666666,
    );
    check(
        &suite,
        3,
        &out("the cat sat on the mat"),
        &[
            ("gleu", true, 0.5),
            ("gleu", true, 0.5),
            ("not-gleu", false, 0.5),
        ],
        false,
        0.5,
    );
    check(
        &suite,
        3,
        &out("The cat is on the mat."),
        &[
            ("gleu", true, 1.0),
            ("gleu", true, 1.0),
            ("not-gleu", false, 0.0),
        ],
        false,
        0.6666666666666666,
    );
    check(
        &suite,
        4,
        &out("one two  three\nfour"),
        &[
            ("word-count", true, 1.0),
            ("word-count", false, 0.0),
            ("word-count", true, 1.0),
            ("not-word-count", true, 1.0),
        ],
        false,
        0.75,
    );
}

#[test]
fn response_properties_follow_promptfoo() {
    let suite = load(RESPONSE);
    check(
        &suite,
        0,
        &out("x"),
        &[
            ("latency", true, 1.0),
            ("latency", false, 0.0),
            ("not-latency", true, 1.0),
            ("cost", true, 1.0),
            ("cost", false, 0.0),
            ("not-cost", true, 1.0),
            ("finish-reason", true, 1.0),
            ("finish-reason", false, 0.0),
            ("not-finish-reason", true, 1.0),
        ],
        false,
        0.6666666666666666,
    );
    check(
        &suite,
        0,
        &with("x", 250, 0.05, Some("length")),
        &[
            ("latency", false, 0.0),
            ("latency", false, 0.0),
            ("not-latency", true, 1.0),
            ("cost", false, 0.0),
            ("cost", false, 0.0),
            ("not-cost", true, 1.0),
            ("finish-reason", false, 0.0),
            ("finish-reason", true, 1.0),
            ("not-finish-reason", false, 0.0),
        ],
        false,
        0.3333333333333333,
    );
}

#[test]
fn refusals_and_tool_calls() {
    // An empty answer counts as a refusal but scores 0.
    let suite = load(REFUSAL);
    check(
        &suite,
        0,
        &out("I'm sorry, but I can't help with that."),
        &[("is-refusal", true, 1.0), ("not-is-refusal", false, 0.0)],
        false,
        0.5,
    );
    check(
        &suite,
        0,
        &out("As an AI language model, I have no opinions."),
        &[("is-refusal", true, 1.0), ("not-is-refusal", false, 0.0)],
        false,
        0.5,
    );
    check(
        &suite,
        0,
        &out("Paris is the capital of France."),
        &[("is-refusal", false, 0.0), ("not-is-refusal", true, 1.0)],
        false,
        0.5,
    );
    check(
        &suite,
        0,
        &out("   "),
        &[("is-refusal", true, 0.0), ("not-is-refusal", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        0,
        &out("Honestly I can’t assist with that."),
        &[("is-refusal", true, 1.0), ("not-is-refusal", false, 0.0)],
        false,
        0.5,
    );
    check(
        &suite,
        0,
        &out("This cannot helpfully be summarized."),
        &[("is-refusal", false, 0.0), ("not-is-refusal", true, 1.0)],
        false,
        0.5,
    );

    let suite = load(TOOLS);
    check(
        &suite,
        0,
        &out(
            "[{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}}]",
        ),
        &[("is-valid-openai-tools-call", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        0,
        &out(
            "{\"tool_calls\": [{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\", \\\"unit\\\": \\\"c\\\"}\"}}]}",
        ),
        &[("is-valid-openai-tools-call", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        0,
        &out(
            "[{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"unit\\\": \\\"k\\\"}\"}}]",
        ),
        &[("is-valid-openai-tools-call", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        0,
        &out(
            "[{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_time\", \"arguments\": \"{}\"}}]",
        ),
        &[("is-valid-openai-tools-call", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        0,
        &out("[]"),
        &[("is-valid-openai-tools-call", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        0,
        &out("It is sunny in Paris."),
        &[("is-valid-openai-tools-call", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        1,
        &out("{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 1, \\\"b\\\": 2}\"}"),
        &[("is-valid-openai-function-call", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        1,
        &out(
            "{\"function_call\": {\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 1, \\\"b\\\": \\\"two\\\"}\"}}",
        ),
        &[("is-valid-openai-function-call", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        1,
        &out("{\"name\": \"sub\", \"arguments\": \"{}\"}"),
        &[("is-valid-openai-function-call", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        1,
        &out("add(1, 2)"),
        &[("is-valid-openai-function-call", false, 0.0)],
        false,
        0.0,
    );
}

#[test]
fn weights_metrics_thresholds_and_assert_sets() {
    // promptfoo's `AssertionsResult`: score = Σ weight·score / Σ weight; with a
    // test threshold the test passes on score ≥ threshold, otherwise only when
    // nothing failed; a weight-0 assertion is forced to pass (`runAssertion`)
    // but a weight-0 set is not (sets never go through `runAssertion`); named
    // scores are weighted means, a set's own named scores joining its
    // parent's with their weights scaled by the set's weight.
    let suite = load(WEIGHTS);
    check(
        &suite,
        0,
        &out("abc"),
        &[("contains", true, 1.0), ("contains", false, 0.0)],
        false,
        0.75,
    );
    check(
        &suite,
        1,
        &out("abc"),
        &[("contains", true, 1.0), ("contains", false, 0.0)],
        true,
        0.75,
    );
    check(
        &suite,
        2,
        &out("abc"),
        &[("contains", true, 1.0), ("contains", false, 0.0)],
        false,
        0.75,
    );
    check(
        &suite,
        3,
        &out("abc"),
        &[("contains", true, 0.0), ("contains", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        4,
        &out("abc"),
        &[("not-contains", true, 0.0)],
        true,
        0.0,
    );
    check(
        &suite,
        5,
        &out("the cat sat on the mat"),
        &[
            ("rouge-n", false, 0.8),
            ("bleu", true, 1.0),
            ("levenshtein", true, 1.0),
        ],
        true,
        0.95,
    );
    let grade = check(
        &suite,
        6,
        &out("abc"),
        &[
            ("contains", true, 1.0),
            ("contains", false, 0.0),
            ("regex", true, 1.0),
            ("icontains", true, 1.0),
        ],
        false,
        0.6,
    );
    assert_named(&grade, &[("accuracy", 1.0 / 3.0), ("format", 1.0)]);
    let grade = check(
        &suite,
        7,
        &out("abc"),
        &[
            ("equals", true, 1.0),
            ("assert-set", true, 0.5),
            ("contains", true, 1.0),
            ("contains", false, 0.0),
        ],
        true,
        0.6666666666666666,
    );
    assert_named(&grade, &[("exact", 1.0), ("group", 0.5), ("inner", 1.0)]);
    check(
        &suite,
        8,
        &out("abc"),
        &[
            ("contains", true, 1.0),
            ("assert-set", false, 0.25),
            ("contains", true, 1.0),
            ("contains", false, 0.0),
        ],
        false,
        0.625,
    );
    let grade = check(
        &suite,
        9,
        &out("abc"),
        &[
            ("contains", false, 0.0),
            ("assert-set", true, 1.0),
            ("contains", true, 1.0),
            ("contains", true, 0.0),
        ],
        false,
        0.5,
    );
    assert_named(&grade, &[("group", 1.0), ("side", 0.0)]);
    check(
        &suite,
        10,
        &out("abc"),
        &[
            ("assert-set", false, 0.6666666666666666),
            ("starts-with", true, 1.0),
            ("contains", false, 0.0),
            ("contains", true, 1.0),
        ],
        false,
        0.6666666666666666,
    );
    check(
        &suite,
        11,
        &out("abc"),
        &[
            ("contains", true, 1.0),
            ("assert-set", false, 0.0),
            ("contains", false, 0.0),
        ],
        false,
        1.0,
    );
}

#[test]
fn assert_set_shape_is_checked_at_parse_time() {
    // promptfoo's schema (`AssertionSetSchema`) takes `type: assert-set`,
    // `assert`, `weight`, `metric`, `threshold` and `config`; its members are
    // `AssertionSchema`, whose types exclude `assert-set`, and there is no
    // `not-assert-set` type. promptfoo would silently drop a set's `value`;
    // we reject it instead (issue 4: no silent skips).
    let config = |assertion: &str| {
        format!("prompts: [Answer briefly.]\nproviders: [echo]\ntests:\n  - assert:\n{assertion}")
    };
    let nested = config(
        "      - type: assert-set\n        assert:\n          - type: contains\n            value: a\n          - type: assert-set\n            assert:\n              - type: contains\n                value: b\n",
    );
    let err = parse_suite(&nested, SuiteFormat::Yaml).unwrap_err();
    assert_eq!(err.path, "tests[0].assert[0].assert[1].type", "{err}");
    assert!(
        err.message.contains("cannot contain another `assert-set`"),
        "{err}"
    );

    let negated = config(
        "      - type: not-assert-set\n        assert:\n          - type: contains\n            value: a\n",
    );
    let err = parse_suite(&negated, SuiteFormat::Yaml).unwrap_err();
    assert_eq!(err.path, "tests[0].assert[0].type", "{err}");
    assert!(err.message.contains("cannot be negated"), "{err}");

    let valued = config(
        "      - type: assert-set\n        value: a\n        assert:\n          - type: contains\n            value: a\n",
    );
    let err = parse_suite(&valued, SuiteFormat::Yaml).unwrap_err();
    assert_eq!(err.path, "tests[0].assert[0].value", "{err}");

    // The set's own keys are accepted and kept.
    let fine = config(
        "      - type: assert-set\n        threshold: 0.5\n        weight: 2\n        metric: group\n        assert:\n          - type: contains\n            value: a\n",
    );
    let suite = load(&fine);
    let set = &suite.tests[0].assert[0];
    assert_eq!(set.type_name(), "assert-set");
    assert_eq!(set.threshold, Some(0.5));
    assert_eq!(set.weight, 2.0);
    assert_eq!(set.metric.as_deref(), Some("group"));
    assert_eq!(set.assert.len(), 1);
}

// The tests below hold cases where our grading once disagreed with promptfoo
// 0.121.20: the last two were fixed to promptfoo's verdicts; the first is a
// deliberate, documented difference.

#[test]
fn not_prefix_inverts_tool_calls_unlike_promptfoo() {
    // A deliberate difference: promptfoo's `handleIsValidOpenAiToolsCall` and
    // `handleIsValidFunctionCall` never read `inverse`, so there
    // `not-is-valid-openai-*-call` grades exactly like the plain type (every
    // verdict below would be the opposite). Issue 4 asks for `not-` on every
    // type, so Gauntlet inverts these too.
    let suite = load(TOOLS_NOT);
    check(
        &suite,
        0,
        &out(
            "[{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\"}\"}}]",
        ),
        &[("not-is-valid-openai-tools-call", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        0,
        &out(
            "{\"tool_calls\": [{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"city\\\": \\\"Paris\\\", \\\"unit\\\": \\\"c\\\"}\"}}]}",
        ),
        &[("not-is-valid-openai-tools-call", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        0,
        &out(
            "[{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"unit\\\": \\\"k\\\"}\"}}]",
        ),
        &[("not-is-valid-openai-tools-call", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        0,
        &out(
            "[{\"id\": \"call_1\", \"type\": \"function\", \"function\": {\"name\": \"get_time\", \"arguments\": \"{}\"}}]",
        ),
        &[("not-is-valid-openai-tools-call", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        0,
        &out("[]"),
        &[("not-is-valid-openai-tools-call", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        0,
        &out("It is sunny in Paris."),
        &[("not-is-valid-openai-tools-call", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        1,
        &out("{\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 1, \\\"b\\\": 2}\"}"),
        &[("not-is-valid-openai-function-call", false, 0.0)],
        false,
        0.0,
    );
    check(
        &suite,
        1,
        &out(
            "{\"function_call\": {\"name\": \"add\", \"arguments\": \"{\\\"a\\\": 1, \\\"b\\\": \\\"two\\\"}\"}}",
        ),
        &[("not-is-valid-openai-function-call", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        1,
        &out("{\"name\": \"sub\", \"arguments\": \"{}\"}"),
        &[("not-is-valid-openai-function-call", true, 1.0)],
        true,
        1.0,
    );
    check(
        &suite,
        1,
        &out("add(1, 2)"),
        &[("not-is-valid-openai-function-call", true, 1.0)],
        true,
        1.0,
    );
}

#[test]
fn not_finish_reason_passes_without_a_finish_reason() {
    // promptfoo's `handleFinishReason`: with no finish reason, `pass = !!inverse`.
    let suite = load(NO_FINISH);
    check(
        &suite,
        0,
        &with("x", 120, 0.00123, None),
        &[
            ("finish-reason", false, 0.0),
            ("not-finish-reason", true, 1.0),
        ],
        false,
        0.5,
    );
}

#[test]
fn sql_dialects_reject_foreign_syntax_like_promptfoo() {
    // node-sql-parser accepts `TOP` and `[name]` only for TransactSQL.
    let suite = load(DIALECT);
    check(
        &suite,
        0,
        &out("SELECT TOP 5 name FROM users"),
        &[
            ("is-sql", true, 1.0),
            ("is-sql", false, 0.0),
            ("is-sql", false, 0.0),
        ],
        false,
        0.3333333333333333,
    );
    check(
        &suite,
        0,
        &out("SELECT [name] FROM users"),
        &[
            ("is-sql", true, 1.0),
            ("is-sql", false, 0.0),
            ("is-sql", false, 0.0),
        ],
        false,
        0.3333333333333333,
    );
}

const EXACT: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  - description: equals compares strings exactly, or JSON deeply
    assert:
      - type: equals
        value: Paris
      - type: not-equals
        value: paris
      - type: equals
        value: paris
  - description: equals with an object value parses the output as JSON
    assert:
      - type: equals
        value: {a: [1, 2], b: {c: null}}
      - type: not-equals
        value: {a: [2, 1], b: {c: null}}
  - description: contains and icontains
    assert:
      - type: contains
        value: Paris
      - type: contains
        value: paris
      - type: icontains
        value: PARIS
      - type: not-contains
        value: London
      - type: not-icontains
        value: paris
  - description: any and all, as lists or comma-separated strings
    assert:
      - type: contains-any
        value: [London, Paris]
      - type: contains-any
        value: Rome, Berlin
      - type: contains-all
        value: [capital, Paris]
      - type: contains-all
        value: capital, Rome
      - type: icontains-any
        value: [PARIS, ROME]
      - type: icontains-all
        value: THE, FRANCE
      - type: not-contains-any
        value: [Rome, Berlin]
      - type: not-contains-all
        value: [Paris, Rome]
      - type: not-icontains-all
        value: [paris, france]
  - description: starts-with and regex
    assert:
      - type: starts-with
        value: The capital
      - type: starts-with
        value: the
      - type: not-starts-with
        value: Paris
      - type: regex
        value: '^The \w+ of'
      - type: regex
        value: '\d+'
      - type: not-regex
        value: 'London|Rome'
"#;

const STRUCTURE: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  - description: is-json, with and without a schema
    assert:
      - type: is-json
      - type: is-json
        value:
          type: object
          required: [name, age]
          properties:
            age: {type: integer, minimum: 0}
      - type: is-json
        value: {type: object, required: [email]}
      - type: not-is-json
      - type: contains-json
      - type: contains-json
        value:
          type: object
          properties:
            age: {type: integer}
      - type: not-contains-json
  - description: is-xml and contains-xml with required elements
    assert:
      - type: is-xml
      - type: is-xml
        value:
          requiredElements: [analysis.sentiment, analysis.score]
      - type: is-xml
        value: analysis.topic
      - type: not-is-xml
      - type: contains-xml
        value: [analysis.sentiment]
      - type: contains-xml
        value:
          requiredElements: [analysis.score]
      - type: not-contains-xml
  - description: is-html and contains-html
    assert:
      - type: is-html
      - type: contains-html
      - type: not-is-html
      - type: not-contains-html
  - description: is-sql and contains-sql
    assert:
      - type: is-sql
      - type: is-sql
        value:
          databaseType: MySQL
          allowedTables: ['select::null::users']
      - type: is-sql
        value:
          allowedTables: ['select::null::orders']
      - type: contains-sql
      - type: not-is-sql
      - type: not-contains-sql
  - description: databaseType picks the dialect
    assert:
      - type: is-sql
        value: {databaseType: TransactSQL}
      - type: is-sql
        value: {databaseType: MySQL}
      - type: is-sql
        value: {databaseType: PostgresQL}
"#;

const TEXT: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  - description: levenshtein distance against a default threshold of 5
    assert:
      - type: levenshtein
        value: kitten
      - type: levenshtein
        value: kitten
        threshold: 2
      - type: not-levenshtein
        value: kitten
        threshold: 2
  - description: rouge-n, default threshold 0.75
    assert:
      - type: rouge-n
        value: The cat sat on the mat by the door.
      - type: rouge-n
        value: The cat sat on the mat by the door.
        threshold: 0.9
      - type: not-rouge-n
        value: The cat sat on the mat by the door.
        threshold: 0.9
  - description: bleu, default threshold 0.5
    assert:
      - type: bleu
        value: [the cat is on the mat, there is a cat on the mat]
      - type: bleu
        value: [the cat is on the mat, there is a cat on the mat]
        threshold: 0.3
      - type: not-bleu
        value: the cat is on the mat
        threshold: 0.3
  - description: gleu, default threshold 0.5
    assert:
      - type: gleu
        value: [the cat is on the mat, there is a cat on the mat]
      - type: gleu
        value: the cat is on the mat
        threshold: 0.3
      - type: not-gleu
        value: the cat is on the mat
        threshold: 0.3
  - description: word-count
    assert:
      - type: word-count
        value: 4
      - type: word-count
        value: {min: 2, max: 3}
      - type: word-count
        value: {max: 10}
      - type: not-word-count
        value: 5
"#;

const RESPONSE: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  - description: latency, cost, finish-reason
    assert:
      - type: latency
        threshold: 200
      - type: latency
        threshold: 100
      - type: not-latency
        threshold: 100
      - type: cost
        threshold: 0.002
      - type: cost
        threshold: 0.001
      - type: not-cost
        threshold: 0.001
      - type: finish-reason
        value: stop
      - type: finish-reason
        value: length
      - type: not-finish-reason
        value: length
"#;

const REFUSAL: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  - description: is-refusal
    assert:
      - type: is-refusal
      - type: not-is-refusal
"#;

const TOOLS: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  # promptfoo reads the declarations from the provider's `tools`/`functions`
  # config; our graders see no provider, so the value carries them (see
  # grading/tools.rs). The harness gave promptfoo the same lists as config.
  - description: tool calls checked against the declared tools
    assert:
      - type: is-valid-openai-tools-call
        value: &tools
          tools:
            - type: function
              function:
                name: get_weather
                parameters:
                  type: object
                  properties:
                    city: {type: string}
                    unit: {type: string, enum: [c, f]}
                  required: [city]
  - description: function calls checked against the declared functions
    assert:
      - type: is-valid-openai-function-call
        value: &functions
          functions:
            - name: add
              parameters:
                type: object
                properties:
                  a: {type: number}
                  b: {type: number}
                required: [a, b]
"#;

const WEIGHTS: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  - description: weights without a test threshold
    assert:
      - type: contains
        value: a
        weight: 3
      - type: contains
        value: z
  - description: test threshold met by the weighted score
    threshold: 0.75
    assert:
      - type: contains
        value: a
        weight: 3
      - type: contains
        value: z
  - description: test threshold missed
    threshold: 0.8
    assert:
      - type: contains
        value: a
        weight: 3
      - type: contains
        value: z
  - description: weight 0 records a score and cannot fail
    assert:
      - type: contains
        value: z
        weight: 0
      - type: contains
        value: a
  - description: only weight-0 assertions
    assert:
      - type: not-contains
        value: a
        weight: 0
  - description: scored types carry their score into the test score
    threshold: 0.5
    assert:
      - type: rouge-n
        value: the cat sat on the mat by the door
        threshold: 0.9
      - type: bleu
        value: the cat sat on the mat
        weight: 2
      - type: levenshtein
        value: the cat sat on the mat
        threshold: 1
  - description: metric named scores
    assert:
      - type: contains
        value: a
        metric: accuracy
      - type: contains
        value: z
        metric: accuracy
        weight: 2
      - type: regex
        value: '^a'
        metric: format
      - type: icontains
        value: B
  - description: assert-set with threshold, weight and metric
    assert:
      - type: equals
        value: abc
        metric: exact
      - type: assert-set
        threshold: 0.5
        weight: 2
        metric: group
        assert:
          - type: contains
            value: a
            metric: inner
          - type: contains
            value: z
  - description: assert-set without threshold fails when a member fails
    assert:
      - type: contains
        value: b
      - type: assert-set
        assert:
          - type: contains
            value: a
          - type: contains
            value: y
            weight: 3
  - description: assert-set members with weight 0, and a test threshold
    threshold: 0.6
    assert:
      - type: contains
        value: q
      - type: assert-set
        metric: group
        assert:
          - type: contains
            value: a
          - type: contains
            value: z
            weight: 0
            metric: side
  - description: a set whose threshold is missed fails the test
    assert:
      - type: assert-set
        threshold: 0.9
        assert:
          - type: starts-with
            value: ab
          - type: contains
            value: z
          - type: contains
            value: c
  - description: a weight-0 set still fails the test
    assert:
      - type: contains
        value: a
      - type: assert-set
        weight: 0
        assert:
          - type: contains
            value: z
"#;

const TOOLS_NOT: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  # promptfoo reads the declarations from the provider's `tools`/`functions`
  # config; our graders see no provider, so the value carries them (see
  # grading/tools.rs). The harness gave promptfoo the same lists as config.
  - description: tool calls checked against the declared tools
    assert:
      - type: not-is-valid-openai-tools-call
        value: &tools
          tools:
            - type: function
              function:
                name: get_weather
                parameters:
                  type: object
                  properties:
                    city: {type: string}
                    unit: {type: string, enum: [c, f]}
                  required: [city]
  - description: function calls checked against the declared functions
    assert:
      - type: not-is-valid-openai-function-call
        value: &functions
          functions:
            - name: add
              parameters:
                type: object
                properties:
                  a: {type: number}
                  b: {type: number}
                required: [a, b]
"#;

const NO_FINISH: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  - assert:
      - type: finish-reason
        value: stop
      - type: not-finish-reason
        value: stop
"#;

const DIALECT: &str = r#"
prompts: [Answer briefly.]
providers: [echo]
tests:
  - assert:
      - type: is-sql
        value: {databaseType: TransactSQL}
      - type: is-sql
        value: {databaseType: MySQL}
      - type: is-sql
        value: {databaseType: PostgresQL}
"#;
