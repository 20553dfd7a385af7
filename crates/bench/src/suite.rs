//! The suites the benchmarks submit: N cases, one prompt, one
//! OpenAI-compatible provider (the mock), a `contains` assertion each, so
//! every task passes when the mock echoes its prompt.

use std::fmt::Write;

#[derive(Debug, Clone)]
pub struct BenchSuite {
    pub cases: usize,
    /// The mock's OpenAI base URL, e.g. `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    /// Put in every prompt, so two runs never share a cached answer.
    pub nonce: Option<String>,
    /// The provider's per-request timeout (`timeout`, ms).
    pub timeout_ms: Option<u64>,
    /// The provider's `requestsPerMinute`, spent from the shared (Redis) budget.
    pub requests_per_minute: Option<u64>,
}

impl BenchSuite {
    pub fn new(cases: usize, base_url: &str) -> Self {
        Self {
            cases,
            base_url: base_url.to_string(),
            nonce: None,
            timeout_ms: None,
            requests_per_minute: None,
        }
    }

    fn prompt(&self) -> String {
        match &self.nonce {
            Some(n) => format!("Echo {n} case {{{{ i }}}}"),
            None => "Echo case {{ i }}".to_string(),
        }
    }

    /// The provider's config as `(key, value)` pairs, values in JSON (and
    /// YAML flow) syntax.
    fn provider_config(&self) -> Vec<(&'static str, String)> {
        let mut c = vec![("apiBaseUrl", format!("\"{}\"", self.base_url))];
        if let Some(t) = self.timeout_ms {
            c.push(("timeout", t.to_string()));
        }
        if let Some(r) = self.requests_per_minute {
            c.push(("requestsPerMinute", r.to_string()));
        }
        c
    }

    fn config_text(&self, quote_keys: bool) -> String {
        self.provider_config()
            .iter()
            .map(|(k, v)| {
                if quote_keys {
                    format!("\"{k}\":{v}")
                } else {
                    format!("{k}: {v}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The suite as JSON, the form `gauntlet run` submits (it reads the
    /// user's YAML and sends the validated suite as JSON).
    pub fn json(&self) -> String {
        let mut s = String::with_capacity(64 + self.cases * 80);
        let _ = write!(
            s,
            "{{\"description\":\"bench\",\"prompts\":[\"{}\"],\"providers\":[{{\"id\":\"openai:chat:bench\",\"config\":{{{}}}}}],\"tests\":[",
            self.prompt(),
            self.config_text(true)
        );
        for i in 0..self.cases {
            if i > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{{\"vars\":{{\"i\":\"{i}\"}},\"assert\":[{{\"type\":\"contains\",\"value\":\"case {i}\"}}]}}"
            );
        }
        s.push_str("]}");
        s
    }

    /// The same suite as YAML text.
    pub fn yaml(&self) -> String {
        let mut s = String::with_capacity(64 + self.cases * 80);
        let _ = write!(
            s,
            "description: bench\nprompts: ['{}']\nproviders:\n  - id: openai:chat:bench\n    config: {{ {} }}\ntests:\n",
            self.prompt(),
            self.config_text(false)
        );
        for i in 0..self.cases {
            let _ = writeln!(
                s,
                "  - vars: {{ i: '{i}' }}\n    assert: [{{ type: contains, value: 'case {i}' }}]"
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_describe_the_same_cases() {
        let mut suite = BenchSuite::new(3, "http://127.0.0.1:1/v1");
        suite.timeout_ms = Some(1000);
        suite.nonce = Some("n1".into());
        let json: serde_json::Value = serde_json::from_str(&suite.json()).unwrap();
        assert_eq!(json["tests"].as_array().unwrap().len(), 3);
        assert_eq!(json["prompts"][0], "Echo n1 case {{ i }}");
        assert_eq!(json["providers"][0]["config"]["timeout"], 1000);
        assert_eq!(json["tests"][2]["assert"][0]["value"], "case 2");
        let yaml = suite.yaml();
        assert!(
            yaml.contains("config: { apiBaseUrl: \"http://127.0.0.1:1/v1\", timeout: 1000 }"),
            "{yaml}"
        );
        assert_eq!(yaml.matches("- vars:").count(), 3);
    }
}
