//! Runs promptfoo's own example suites through our parser, renderer and
//! graders with promptfoo's mock model ("ECHO: " + prompt) and checks every
//! result against what promptfoo 0.121.20 recorded.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use gauntlet_core::{
    FileResolver, PromptRenderer, ProviderOutput, Suite, SuiteFormat, grade, parse_suite_with,
};
use serde::Deserialize;
use serde_json::Value;

fn peer_dir(name: &str) -> PathBuf {
    let root = std::env::var("GAUNTLET_PEER_SUITES")
        .unwrap_or_else(|_| "/work/shared/peer-suites".to_owned());
    Path::new(&root).join("promptfoo").join(name)
}

/// Reads referenced files relative to the suite's directory, as the CLI will.
struct Dir(PathBuf);

impl FileResolver for Dir {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.0.join(path)).map_err(|err| err.to_string())
    }
}

#[derive(Deserialize)]
struct Expected {
    provider: String,
    prompt_index: usize,
    vars: BTreeMap<String, Value>,
    rendered_prompt: String,
    output: String,
    success: bool,
    reason: Option<String>,
}

fn load(name: &str) -> (Suite, Vec<Expected>) {
    let dir = peer_dir(name);
    let text = std::fs::read_to_string(dir.join("promptfooconfig.yaml")).expect("peer suite");
    let suite = parse_suite_with(&text, SuiteFormat::Auto, &Dir(dir.clone()))
        .unwrap_or_else(|err| panic!("{name}: {err}"));
    let expected = std::fs::read_to_string(dir.join("expected-promptfoo-0.121.20.json")).unwrap();
    (suite, serde_json::from_str(&expected).unwrap())
}

/// promptfoo numbers result columns provider-major: column = provider × prompts + prompt.
fn check_against_promptfoo(name: &str) -> usize {
    let (suite, expected) = load(name);
    let renderer = PromptRenderer::new(&suite).unwrap();
    let prompts = suite.prompts.len();
    assert!(!expected.is_empty());
    for (n, want) in expected.iter().enumerate() {
        let provider = want.prompt_index / prompts;
        let prompt = want.prompt_index % prompts;
        assert_eq!(suite.providers[provider].id, want.provider, "{name} #{n}");
        let test = suite
            .tests
            .iter()
            .find(|t| t.vars == want.vars)
            .unwrap_or_else(|| panic!("{name} #{n}: no test with vars {:?}", want.vars));

        let rendered = renderer.render(prompt, &test.vars).unwrap();
        assert_eq!(
            rendered, want.rendered_prompt,
            "{name} #{n}: rendered prompt"
        );
        let output = format!("ECHO: {rendered}");
        assert_eq!(output, want.output, "{name} #{n}: output");

        let verdict = grade(
            test,
            &ProviderOutput {
                text: output,
                latency_ms: 10,
                cost_usd: 0.0,
                finish_reason: Some("stop".to_owned()),
            },
        );
        assert_eq!(verdict.pass, want.success, "{name} #{n}: verdict");
        if let Some(reason) = &want.reason {
            assert_eq!(&verdict.reason, reason, "{name} #{n}: reason");
        }
    }
    // Every (test, prompt, provider) combination promptfoo ran is accounted for.
    assert_eq!(
        suite.task_count(1) as usize,
        expected.len(),
        "{name}: task count"
    );
    expected.len()
}

#[test]
fn getting_started_matches_promptfoo() {
    assert_eq!(check_against_promptfoo("getting-started"), 8);
}

#[test]
fn simple_csv_matches_promptfoo() {
    assert_eq!(check_against_promptfoo("simple-csv"), 8);
}

#[test]
fn simple_csv_parses_prompts_file_and_csv_shorthand() {
    let (suite, _) = load("simple-csv");
    assert_eq!(
        suite.description.as_deref(),
        Some("A translator built with LLM")
    );
    assert_eq!(suite.prompts.len(), 2);
    assert!(
        suite.prompts[0]
            .raw
            .starts_with("You are a skilled translator")
    );
    assert!(
        suite.prompts[0]
            .raw
            .ends_with("matches the specified style.")
    );
    assert!(suite.prompts[0].label.starts_with("prompts.txt: You are"));
    assert_eq!(suite.providers[0].id, "openai:gpt-3.5-turbo");
    assert_eq!(suite.tests.len(), 4);
    let first = &suite.tests[0].assert[0];
    assert_eq!(first.type_name(), "icontains");
    assert_eq!(first.value, Some(Value::String("bonjour".to_owned())));
}

#[test]
fn suite_survives_a_json_round_trip() {
    let (suite, _) = load("getting-started");
    let stored = serde_json::to_string(&suite).unwrap();
    let reread: Suite = serde_json::from_str(&stored).unwrap();
    assert_eq!(reread, suite);
}

#[test]
fn simple_csv_without_its_files_names_the_reference() {
    let text =
        std::fs::read_to_string(peer_dir("simple-csv").join("promptfooconfig.yaml")).unwrap();
    let err = gauntlet_core::parse_suite(&text, SuiteFormat::Yaml).unwrap_err();
    assert_eq!(err.path, "prompts[0]");
    assert!(err.message.contains("file://prompts.txt"), "{err}");
}
