//! What a run will cost, estimated before it starts: prompt tokens from the
//! rendered prompts, completion tokens from each provider's `max_tokens` (or
//! a default answer size), priced per provider. Model-graded assertions make
//! calls of their own that are not counted here.

use gauntlet_core::{
    suite::{Suite, TestCase},
    template::PromptRenderer,
};
use gauntlet_providers::{estimate_tokens, pricing};

/// Completion tokens assumed for a provider whose config sets no `max_tokens`.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 256;
/// Most test × prompt pairs rendered for an estimate; a bigger suite is
/// sampled evenly and the sample scaled up.
const MAX_RENDERED: u64 = 5_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimate {
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub cost_usd: f64,
    /// Ids of providers with no known price (left out of `cost_usd`).
    pub unpriced: Vec<String>,
}

/// The estimate for `repeat` repetitions of `suite`, held whole.
#[cfg(test)]
pub fn estimate(suite: &Suite, repeat: u32) -> Estimate {
    let Some(mut estimator) = Estimator::new(suite) else {
        return Estimate::default();
    };
    for test in &suite.tests {
        estimator.add(test);
    }
    estimator.finish(suite, repeat)
}

/// An estimate built a test at a time, for suites read as they arrive: the
/// test × prompt pairs are sampled at a stride that doubles whenever the
/// sample reaches twice [`MAX_RENDERED`], so at most that many prompts are
/// held and a suite of any size costs at most a few thousand renders.
pub struct Estimator {
    renderer: PromptRenderer,
    prompts: u64,
    /// Pairs seen so far.
    pairs: u64,
    /// Every `stride`-th pair is sampled.
    stride: u64,
    /// `(pair, prompt tokens if it rendered)` of the sampled pairs.
    samples: Vec<(u64, Option<u64>)>,
}

impl Estimator {
    /// `None` when the suite's prompts do not compile (nothing can be estimated).
    pub fn new(header: &Suite) -> Option<Self> {
        Some(Self {
            renderer: PromptRenderer::new(header).ok()?,
            prompts: header.prompts.len() as u64,
            pairs: 0,
            stride: 1,
            samples: Vec::new(),
        })
    }

    pub fn add(&mut self, test: &TestCase) {
        for prompt in 0..self.prompts {
            if self.pairs.is_multiple_of(self.stride) {
                let tokens = self
                    .renderer
                    .render(prompt as usize, &test.vars)
                    .ok()
                    .map(|text| u64::from(estimate_tokens(&text)));
                self.samples.push((self.pairs, tokens));
                if self.samples.len() as u64 >= 2 * MAX_RENDERED {
                    self.stride *= 2;
                    let stride = self.stride;
                    self.samples.retain(|(pair, _)| pair.is_multiple_of(stride));
                }
            }
            self.pairs += 1;
        }
    }

    /// The estimate for `repeat` repetitions, priced with `header`'s providers.
    pub fn finish(self, header: &Suite, repeat: u32) -> Estimate {
        let pairs = self.pairs;
        let sampled = self.samples.len() as u64;
        if sampled == 0 {
            return Estimate::default();
        }
        let rendered = self.samples.iter().filter(|(_, t)| t.is_some()).count() as u64;
        let tokens: u64 = self.samples.iter().filter_map(|(_, t)| *t).sum();
        let suite = header;
        let scale = |n: u64| (n as f64 * pairs as f64 / sampled as f64).round() as u64;
        let repeat = u64::from(repeat.max(1));
        let prompt_tokens = scale(tokens) * repeat;
        let calls = scale(rendered) * repeat;

        let mut out = Estimate::default();
        for provider in &suite.providers {
            let max_out = ["max_tokens", "max_completion_tokens", "maxTokens"]
                .iter()
                .find_map(|k| provider.config.get(*k).and_then(serde_json::Value::as_u64))
                .unwrap_or(DEFAULT_OUTPUT_TOKENS);
            // `echo` answers with the prompt itself.
            let completion_tokens = if provider.id == "echo" {
                prompt_tokens
            } else {
                calls * max_out
            };
            out.tokens_in += prompt_tokens;
            out.tokens_out += completion_tokens;
            match pricing::for_provider(&provider.id, &provider.config) {
                Ok(Some(price)) => {
                    out.cost_usd += (prompt_tokens as f64 * price.input_per_million
                        + completion_tokens as f64 * price.output_per_million)
                        / 1e6;
                }
                _ => out.unpriced.push(provider.id.clone()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use gauntlet_core::parse::{SuiteFormat, parse_suite};

    use super::*;

    fn suite(yaml: &str) -> Suite {
        parse_suite(yaml, SuiteFormat::Yaml).unwrap()
    }

    #[test]
    fn prompt_tokens_come_from_rendered_prompts_and_output_from_max_tokens() {
        // "Say hi" renders to 6 characters, 2 tokens; "Say hello" to 9, 3 tokens.
        let s = suite(
            "prompts: ['Say {{ w }}']\n\
             providers:\n\
             - id: openai:chat:gpt-4.1\n  config: {max_tokens: 10}\n\
             - echo\n\
             tests:\n- vars: {w: hi}\n- vars: {w: hello}\n",
        );
        let e = estimate(&s, 2);
        // (2 + 3) tokens × 2 repeats, for each of 2 providers.
        assert_eq!(e.tokens_in, 20);
        // 2 tests × 2 repeats × 10 for gpt-4.1; echo sends back its 10.
        assert_eq!(e.tokens_out, 4 * 10 + 10);
        // gpt-4.1 is $2 in, $8 out per 1M tokens; echo is free.
        let expected = (10.0 * 2.0 + 40.0 * 8.0) / 1e6;
        assert!((e.cost_usd - expected).abs() < 1e-12, "{e:?}");
        assert!(e.unpriced.is_empty());
    }

    #[test]
    fn suite_prices_override_and_unknown_models_are_listed() {
        let s = suite(
            "prompts: ['abcd']\n\
             providers:\n\
             - id: openai:chat:mock-model\n  config: {cost: 0.001, max_tokens: 1}\n\
             - openai:chat:unknown-model\n\
             tests:\n- vars: {}\n",
        );
        let e = estimate(&s, 1);
        // 1 token in and 1 out at $0.001 each for the priced provider.
        assert!((e.cost_usd - 0.002).abs() < 1e-12, "{e:?}");
        assert_eq!(e.unpriced, vec!["openai:chat:unknown-model".to_string()]);
    }

    #[test]
    fn echo_answers_as_many_tokens_as_it_is_sent() {
        let s = suite(
            "prompts: ['Say {{ x }} twice please']\nproviders: [echo]\n\
             tests:\n  - vars: {x: hello}\n  - vars: {x: world}\n",
        );
        let e = estimate(&s, 1);
        assert!(e.tokens_in > 0);
        assert_eq!(e.tokens_out, e.tokens_in);
        assert_eq!(e.cost_usd, 0.0);
    }

    #[test]
    fn a_large_suite_is_sampled_and_scaled() {
        let mut yaml = String::from(
            "prompts: ['abcdefgh {{ n }}']\nproviders: [openai:chat:gpt-4.1]\ntests:\n",
        );
        for n in 0..12_000 {
            yaml.push_str(&format!("- vars: {{n: {}}}\n", n % 10));
        }
        let e = estimate(&suite(&yaml), 1);
        // Every prompt is 10 characters: 3 tokens.
        assert_eq!(e.tokens_in, 36_000);
        assert_eq!(e.tokens_out, 12_000 * DEFAULT_OUTPUT_TOKENS);
    }
}
