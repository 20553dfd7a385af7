//! Feeds arbitrary text to the suite parser as YAML, JSON and auto-detected.
//! A small fixed set of referenced files lets inputs reach file prompts,
//! CSV tests, file vars and globs too. The parser must return, never panic.

#![no_main]

use gauntlet_core::{FileResolver, SuiteFormat, parse_suite_with};
use libfuzzer_sys::fuzz_target;

struct Fixtures;

impl FileResolver for Fixtures {
    fn read(&self, path: &str) -> Result<String, String> {
        let ext = path.rsplit('.').next().unwrap_or_default();
        Ok(match ext {
            "txt" => "Hi {{x}}\n---\nBye {{ x | upper }}\n",
            "md" => "# {{x}}\n",
            "json" => r#"[{"role": "user", "content": "{{x}}"}]"#,
            "yaml" | "yml" => "- vars: {x: [a, b]}\n  assert: [{type: contains, value: '{{x}}'}]\n",
            "jsonl" => "{\"vars\": {\"x\": \"c\"}}\n",
            "csv" => "x,__expected,__expected2\na,contains:a,\"icontains-any:A,b\"\nb,not-regex:^z,\n",
            _ => return Err("no such file".to_owned()),
        }
        .to_owned())
    }

    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        let ext = pattern.rsplit('.').next().unwrap_or("txt");
        Ok(vec![format!("a.{ext}"), format!("b.{ext}")])
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for format in [SuiteFormat::Auto, SuiteFormat::Yaml, SuiteFormat::Json] {
            let _ = parse_suite_with(text, format, &Fixtures);
        }
    }
});
