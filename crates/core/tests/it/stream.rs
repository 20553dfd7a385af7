//! `parse_suite_stream` against the parse it replaced: its header and tests
//! are what `parse_suite_with` gives, and a suite whose tests are read item
//! by item (the split path) parses exactly as the same suite read as one
//! document (the path aliases and `$ref`s still take), errors included.

use std::{collections::BTreeMap, path::Path};

use gauntlet_core::{
    FileResolver, Suite, SuiteError, SuiteFormat, parse::parse_suite_limited, parse_suite_stream,
    parse_suite_with,
};

use super::suite_format::Dir;

struct MapFiles(BTreeMap<&'static str, &'static str>);

impl FileResolver for MapFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0
            .get(path)
            .map(|s| (*s).to_owned())
            .ok_or_else(|| format!("no file {path}"))
    }
}

/// The stream's header with its tests collected, or its first error.
fn streamed(text: &str, files: &dyn FileResolver, max_tests: usize) -> Result<Suite, SuiteError> {
    let mut stream = parse_suite_stream(text, SuiteFormat::Auto, files, max_tests)?;
    let mut tests = Vec::new();
    for test in stream.by_ref() {
        tests.push(test?);
    }
    assert!(stream.next().is_none(), "a stream ends after its end");
    Ok(Suite {
        tests,
        ..stream.header
    })
}

/// The same suite, made to take the whole-document path: an alias (YAML)
/// or the text `"$ref"` (JSON) anywhere keeps it from being split.
fn whole(text: &str) -> String {
    match text.strip_prefix('{') {
        Some(rest) => format!("{{\"$unsplit\": \"$ref\",{rest}"),
        None => format!("{text}\n$a: &a 1\n$b: *a\n"),
    }
}

fn check(name: &str, text: &str, files: &dyn FileResolver, max_tests: usize) {
    let collected = parse_suite_limited(text, SuiteFormat::Auto, files, max_tests);
    assert_eq!(
        streamed(text, files, max_tests),
        collected,
        "{name}: stream vs collected"
    );
    assert_eq!(
        parse_suite_limited(&whole(text), SuiteFormat::Auto, files, max_tests),
        collected,
        "{name}: read whole vs item by item"
    );
}

#[test]
fn peer_suites_and_fixtures_stream_as_they_parse() {
    let root = std::env::var("GAUNTLET_PEER_SUITES")
        .unwrap_or_else(|_| "/work/shared/peer-suites".to_owned());
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dirs = [
        Path::new(&root).join("promptfoo/getting-started"),
        Path::new(&root).join("promptfoo/simple-csv"),
        fixtures.join("suite-format"),
    ];
    for dir in dirs {
        let text = std::fs::read_to_string(dir.join("promptfooconfig.yaml")).unwrap();
        let files = Dir(dir.clone());
        let suite = parse_suite_with(&text, SuiteFormat::Auto, &files).unwrap();
        assert!(!suite.tests.is_empty());
        check(&dir.display().to_string(), &text, &files, usize::MAX);
    }
}

const FILES: [(&str, &str); 4] = [
    (
        "t.csv",
        "x,__expected\nfrom csv 1,contains:csv\nfrom csv 2,icontains:CSV\n",
    ),
    (
        "t.jsonl",
        "{\"vars\": {\"x\": \"line 1\"}}\n\n{\"vars\": {\"x\": \"line 3\"}, \"assert\": [{\"type\": \"contains\", \"value\": \"{{x}}\"}]}\n",
    ),
    ("t.yaml", "- vars: {x: yaml 0}\n- vars: {x: yaml 1}\n"),
    ("v.txt", "from a file\n"),
];

/// Suites covering what the split reads: block, flow and indentless lists,
/// comments, block scalars, defaultTest, array vars, files of each kind,
/// scenarios, and errors in every phase.
const SUITES: [(&str, &str); 16] = [
    (
        "block",
        "description: d\nprompts: ['Say {{x}} {{y}}']\nproviders: [echo]\ndefaultTest:\n  vars: {y: dflt}\n  assert: [{type: contains, value: '{{y}}'}]\ntests:\n  # first\n  - vars: {x: [a, b, c]}\n  - description: |\n      two\n      lines\n    vars:\n      x: >\n        folded\n        text\n  -\n    vars: {x: 'file://v.txt'}\n  - file://t.csv\n  - \"file://t.jsonl\"\n  - 'file://t.yaml'\n  - {vars: {x: flow,\n           y: 2}}\nenv: {A: b}\n",
    ),
    (
        "indentless, tests first",
        "tests:\n- vars: {x: 1}\n- vars:\n    x: 2\nprompts: ['{{x}}']\nproviders: [echo]\n",
    ),
    (
        "flow",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests: [{vars: {x: 1}}, 'file://t.csv', {vars: {x: [p, q]}}]\n",
    ),
    (
        "json",
        "{\"prompts\": [\"{{x}}\"], \"providers\": [\"echo\"], \"tests\": [{\"vars\": {\"x\": [\"a\", \"b\"]}}, \"file://t.jsonl\", {\"vars\": {\"x\": \"c\"}, \"assert\": [{\"type\": \"equals\", \"value\": \"{{x}}\"}]}]}",
    ),
    (
        "scenarios",
        "prompts: ['{{x}} {{y}}']\nproviders: [echo]\ntests: []\nscenarios:\n  - config: [{vars: {y: 1}}, {vars: {y: 2}}]\n    tests: [{vars: {x: a}}, file://t.csv]\n",
    ),
    (
        "tests then scenarios",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests:\n  - vars: {x: t}\nscenarios:\n  - config: [{vars: {x: s}}]\n",
    ),
    (
        "tests is a file",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests: file://t.csv\n",
    ),
    (
        "bad assertion type",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests:\n  - vars: {x: 1}\n  - vars: {x: 2}\n    assert:\n      - type: containz\n",
    ),
    (
        "a test without a var",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests:\n  - vars: {x: 1}\n  - vars: {y: 2}\n  - vars: {x: 3}\n",
    ),
    (
        "no test defines a var",
        "prompts: ['{{x}}', '{{z}}']\nproviders: [echo]\ntests:\n  - vars: {x: 1}\n  - vars: {y: 2}\n",
    ),
    (
        "an item that is not a test",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests:\n  - vars: {x: 1}\n  - 42\n",
    ),
    (
        "a missing file",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests:\n  - vars: {x: 1}\n  - file://none.csv\n",
    ),
    (
        "over the limit",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests:\n  - vars: {x: [a, b, c]}\n  - vars: {x: [a, b, c]}\n",
    ),
    (
        "a render error",
        "prompts: ['{{x | nofilter}}']\nproviders: [echo]\ntests:\n  - vars: {x: 1}\n",
    ),
    (
        "a duplicate key in an item",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests:\n  - vars: {x: 1}\n  - vars: {x: 1}\n    vars: {x: 2}\n",
    ),
    (
        "an empty list without scenarios",
        "prompts: ['{{x}}']\nproviders: [echo]\ntests: []\n",
    ),
];

#[test]
fn suites_stream_as_they_parse_and_split_as_they_read_whole() {
    let files = MapFiles(FILES.into_iter().collect());
    for (name, text) in SUITES {
        check(name, text, &files, 5);
    }
    // The valid ones are valid.
    for name in [
        "block",
        "indentless, tests first",
        "flow",
        "json",
        "scenarios",
    ] {
        let text = SUITES.iter().find(|(n, _)| *n == name).unwrap().1;
        let suite = parse_suite_limited(text, SuiteFormat::Auto, &files, usize::MAX)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert!(suite.tests.len() >= 2, "{name}");
    }
}

#[test]
fn errors_in_the_stream_are_located_in_the_suite() {
    let files = MapFiles(FILES.into_iter().collect());
    let text = SUITES[7].1;
    let err = streamed(text, &files, 100).unwrap_err();
    assert_eq!(err.path, "tests[1].assert[0].type");
    assert_eq!((err.line, err.column), (Some(7), Some(9)));
    // The test before it came first.
    let mut stream = parse_suite_stream(text, SuiteFormat::Auto, &files, 100).unwrap();
    assert!(stream.next().unwrap().is_ok());
    assert_eq!(stream.next().unwrap().unwrap_err(), err);
    assert!(stream.next().is_none());
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// A var value in one of YAML's spellings.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,8}",
            "-?[0-9]{1,4}(\\.[0-9]{1,2})?",
            Just("yes".to_owned()),
            Just("0x1F".to_owned()),
            Just("'it''s: # not a comment'".to_owned()),
            Just("\"tab\\there \\u00e9\"".to_owned()),
            Just("[a, b]".to_owned()),
            Just("{k: v}".to_owned()),
            Just("~".to_owned()),
            Just("émoji ✓".to_owned()),
        ]
    }

    /// One item of `tests:` (or a comment between items), as block YAML.
    fn item() -> impl Strategy<Value = String> {
        prop_oneof![
            (scalar(), "[a-z ]{0,12}")
                .prop_map(|(x, d)| format!("  - vars:\n      x: {x}\n    description: '{d}'\n")),
            scalar().prop_map(|x| format!(
                "  - {{vars: {{x: {x}}}, assert: [{{type: contains, value: '{{{{x}}}}'}}]}}\n"
            )),
            scalar().prop_map(|x| format!("  -\n    vars:\n      x: {x}\n")),
            Just("  - vars:\n      x: |\n        two\n         lines\n".to_owned()),
            Just("  - vars:\n      x: >-\n        folded\n        text\n".to_owned()),
            Just("  # a comment\n".to_owned()),
            Just("  - file://t.csv\n".to_owned()),
            Just("  - 42\n".to_owned()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn suites_split_as_they_read_whole(items in proptest::collection::vec(item(), 1..8)) {
            let files = MapFiles(FILES.into_iter().collect());
            let text = format!(
                "prompts: ['Say {{{{x}}}}']\nproviders: [echo]\ntests:\n{}",
                items.concat()
            );
            let split = parse_suite_limited(&text, SuiteFormat::Auto, &files, 100);
            let whole = parse_suite_limited(&whole(&text), SuiteFormat::Auto, &files, 100);
            prop_assert_eq!(&split, &whole, "{}", text);
            prop_assert_eq!(streamed(&text, &files, 100), split);
        }
    }
}
