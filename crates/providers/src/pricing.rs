//! Token prices: a small built-in table of list prices and the promptfoo-style
//! `cost` / `inputCost` / `outputCost` config overrides.

use crate::{
    ProviderError,
    config::{self, ConfigMap},
};

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Price {
    pub const fn per_million(input: f64, output: f64) -> Self {
        Self {
            input_per_million: input,
            output_per_million: output,
        }
    }

    /// From per-token prices, as promptfoo configs write them.
    pub fn per_token(input: f64, output: f64) -> Self {
        Self::per_million(input * 1e6, output * 1e6)
    }

    pub fn cost_usd(&self, tokens_in: u32, tokens_out: u32) -> f64 {
        (f64::from(tokens_in) * self.input_per_million
            + f64::from(tokens_out) * self.output_per_million)
            / 1e6
    }
}

/// List prices, USD per 1M tokens (input, output), standard tier, as published
/// by OpenAI and Anthropic in June 2025. Update the date with the numbers.
const PRICES: &[(&str, Price)] = &[
    ("gpt-4.1", Price::per_million(2.00, 8.00)),
    ("gpt-4.1-mini", Price::per_million(0.40, 1.60)),
    ("gpt-4.1-nano", Price::per_million(0.10, 0.40)),
    ("gpt-4o", Price::per_million(2.50, 10.00)),
    ("gpt-4o-2024-05-13", Price::per_million(5.00, 15.00)),
    ("gpt-4o-mini", Price::per_million(0.15, 0.60)),
    ("o1", Price::per_million(15.00, 60.00)),
    ("o1-mini", Price::per_million(1.10, 4.40)),
    ("o3", Price::per_million(2.00, 8.00)),
    ("o3-mini", Price::per_million(1.10, 4.40)),
    ("o4-mini", Price::per_million(1.10, 4.40)),
    ("gpt-4-turbo", Price::per_million(10.00, 30.00)),
    ("gpt-4", Price::per_million(30.00, 60.00)),
    ("gpt-3.5-turbo", Price::per_million(0.50, 1.50)),
    ("gpt-3.5-turbo-instruct", Price::per_million(1.50, 2.00)),
    ("claude-opus-4", Price::per_million(15.00, 75.00)),
    ("claude-sonnet-4", Price::per_million(3.00, 15.00)),
    ("claude-3-7-sonnet", Price::per_million(3.00, 15.00)),
    ("claude-3-5-sonnet", Price::per_million(3.00, 15.00)),
    ("claude-3-5-haiku", Price::per_million(0.80, 4.00)),
    ("claude-3-opus", Price::per_million(15.00, 75.00)),
    ("claude-3-haiku", Price::per_million(0.25, 1.25)),
];

/// The list price of `model`. Dated snapshots and aliases
/// (`gpt-4o-mini-2024-07-18`, `claude-sonnet-4-20250514`, `claude-3-5-haiku-latest`)
/// take the price of the longest table entry they extend with a `-`.
pub fn price_for(model: &str) -> Option<Price> {
    PRICES
        .iter()
        .filter(|(name, _)| {
            model == *name
                || model
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('-'))
        })
        .max_by_key(|(name, _)| name.len())
        .map(|(_, price)| *price)
}

/// The price to charge for `model` under `config`: `inputCost`/`outputCost`
/// (per token) override, then `cost` (per token, both directions), then the table.
pub(crate) fn resolve(model: &str, config: &ConfigMap) -> Result<Option<Price>, ProviderError> {
    let both = config::number(config, "cost")?;
    let input = config::number(config, "inputCost")?.or(both);
    let output = config::number(config, "outputCost")?.or(both);
    let listed = price_for(model);
    Ok(match (input, output) {
        (None, None) => listed,
        (input, output) => Some(Price::per_token(
            input.unwrap_or_else(|| listed.map_or(0.0, |p| p.input_per_million / 1e6)),
            output.unwrap_or_else(|| listed.map_or(0.0, |p| p.output_per_million / 1e6)),
        )),
    })
}

/// The price of the provider a suite names with `id` and `config`, known
/// before the provider is built (run estimates): the model is what follows
/// the provider name and any API kind (`openai:chat:gpt-4.1`,
/// `openai:gpt-4.1`, `anthropic:messages:claude-sonnet-4`), with the same
/// config overrides as the provider's own pricing. `echo` and local Ollama
/// models cost nothing unless the config says otherwise.
pub fn for_provider(
    id: &str,
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<Price>, ProviderError> {
    let id = id.trim();
    let (vendor, rest) = id.split_once(':').unwrap_or((id, ""));
    let model = ["chat:", "completion:", "messages:"]
        .iter()
        .find_map(|kind| rest.strip_prefix(kind))
        .unwrap_or(rest);
    let price = resolve(model, config)?;
    Ok(match vendor {
        "echo" | "ollama" => price.or(Some(Price::per_million(0.0, 0.0))),
        _ => price,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn exact_and_dated_models_are_priced() {
        assert_eq!(price_for("gpt-4.1"), Some(Price::per_million(2.0, 8.0)));
        assert_eq!(
            price_for("gpt-4.1-mini-2025-04-14"),
            price_for("gpt-4.1-mini")
        );
        assert_eq!(
            price_for("gpt-4o-mini-2024-07-18"),
            Some(Price::per_million(0.15, 0.60))
        );
        assert_eq!(
            price_for("gpt-4o-2024-08-06"),
            Some(Price::per_million(2.5, 10.0))
        );
        assert_eq!(
            price_for("claude-sonnet-4-20250514"),
            Some(Price::per_million(3.0, 15.0))
        );
        assert_eq!(
            price_for("claude-3-5-haiku-latest"),
            Some(Price::per_million(0.8, 4.0))
        );
    }

    #[test]
    fn a_prefix_without_dash_boundary_is_not_a_match() {
        assert_eq!(price_for("gpt-4oops"), None);
        assert_eq!(price_for("o4"), None);
        assert_eq!(price_for("llama3"), None);
        assert_ne!(price_for("gpt-4o"), price_for("gpt-4"));
    }

    #[test]
    fn cost_is_tokens_times_price_per_million() {
        let p = price_for("gpt-4.1").unwrap();
        assert!(close(p.cost_usd(1_000_000, 0), 2.0));
        assert!(close(p.cost_usd(1000, 500), 0.002 + 0.004));
    }

    #[test]
    fn suite_providers_are_priced_by_their_model() {
        let none = serde_json::Map::new();
        let listed = price_for("gpt-4.1-mini");
        assert_eq!(
            for_provider("openai:chat:gpt-4.1-mini", &none).unwrap(),
            listed
        );
        assert_eq!(for_provider("openai:gpt-4.1-mini", &none).unwrap(), listed);
        assert_eq!(
            for_provider("anthropic:messages:claude-sonnet-4-20250514", &none).unwrap(),
            price_for("claude-sonnet-4")
        );
        assert_eq!(for_provider("openai:chat:mock-model", &none).unwrap(), None);
        assert_eq!(
            for_provider("echo", &none).unwrap(),
            Some(Price::per_million(0.0, 0.0))
        );
        let cfg = json!({"cost": 0.001});
        let priced = for_provider("openai:chat:mock-model", cfg.as_object().unwrap())
            .unwrap()
            .unwrap();
        assert!(close(priced.cost_usd(1, 1), 0.002));
    }

    #[test]
    fn config_costs_override_the_table() {
        let cfg = |v: serde_json::Value| v.as_object().unwrap().clone();
        let both = resolve("gpt-4.1", &cfg(json!({"cost": 0.001})))
            .unwrap()
            .unwrap();
        assert!(close(both.cost_usd(2, 3), 0.005));
        let split = resolve(
            "unknown",
            &cfg(json!({"inputCost": 0.001, "outputCost": 0.002})),
        )
        .unwrap()
        .unwrap();
        assert!(close(split.cost_usd(1, 1), 0.003));
        let only_out = resolve("gpt-4.1", &cfg(json!({"outputCost": 0.0})))
            .unwrap()
            .unwrap();
        assert!(close(only_out.cost_usd(1_000_000, 1_000_000), 2.0));
        assert_eq!(resolve("unknown", &cfg(json!({}))).unwrap(), None);
        assert!(resolve("gpt-4.1", &cfg(json!({"cost": "cheap"}))).is_err());
    }
}
