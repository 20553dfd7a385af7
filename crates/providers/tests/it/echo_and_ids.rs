use std::collections::HashMap;

use gauntlet_providers::{ProviderError, ProviderFactory};
use serde_json::Map;

#[tokio::test]
async fn echo_returns_the_prompt_with_estimated_tokens() {
    let provider = ProviderFactory::new(HashMap::new())
        .build("echo", &Map::new())
        .unwrap();
    assert_eq!(provider.id(), "echo");
    let c = provider
        .complete("Translate to French: Hello world")
        .await
        .unwrap();
    assert_eq!(c.output, "Translate to French: Hello world");
    assert_eq!((c.tokens_in, c.tokens_out), (8, 8));
    assert_eq!((c.latency_ms, c.cost_usd), (0, 0.0));
}

#[test]
fn unknown_id_error_names_it_and_the_supported_prefixes() {
    let err = ProviderFactory::new(HashMap::new())
        .build("vertex:gemini-2.5-pro", &Map::new())
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported(_)));
    assert!(!err.is_retryable());
    let text = err.to_string();
    for needle in [
        "vertex:gemini-2.5-pro",
        "openai:chat:<model>",
        "openai:completion:<model>",
        "openai:<model>",
        "echo",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
}

#[test]
fn the_public_api_needs_a_key() {
    let err = ProviderFactory::new(HashMap::new())
        .build("openai:gpt-4.1", &Map::new())
        .unwrap_err();
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("OPENAI_API_KEY"));
}
