use gauntlet_mockllm::MockConfig;
use gauntlet_providers::ProviderError;
use serde_json::json;

use crate::{build, mock};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn embedding_models_embed_every_text_in_order() {
    let server = mock(MockConfig::default()).await;
    let provider = build(
        &server,
        "openai:embeddings:text-embedding-3-small",
        json!({}),
    );
    let texts = [
        "the capital of France is Paris",
        "Paris is the capital of France",
        "bananas are yellow",
    ]
    .map(str::to_owned);
    let e = provider.embed(&texts).await.unwrap();
    assert_eq!(e.vectors.len(), 3);
    assert!(e.vectors.iter().all(|v| v.len() == 64));
    assert!(e.tokens_in > 0);
    // The mock embeds bags of words: same words, same vector.
    assert!(cosine(&e.vectors[0], &e.vectors[1]) > 0.999);
    assert!(cosine(&e.vectors[0], &e.vectors[2]) < 0.9);
    let stats = server.stats();
    assert_eq!((stats.embeddings, stats.chat), (1, 0));

    let sized = build(
        &server,
        "openai:embedding:text-embedding-3-large",
        json!({"dimensions": 8}),
    );
    let e = sized.embed(&texts[..1]).await.unwrap();
    assert_eq!(e.vectors[0].len(), 8);
}

#[tokio::test]
async fn chat_models_do_not_embed_and_embedding_models_do_not_complete() {
    let server = mock(MockConfig::default()).await;
    let chat = build(&server, "openai:chat:mock", json!({}));
    let err = chat.embed(&["x".to_owned()]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("openai:chat:mock"), "{err}");
    let embedder = build(&server, "openai:embeddings:e", json!({}));
    let err = embedder.complete("x").await.unwrap_err();
    assert!(matches!(err, ProviderError::Unsupported(_)), "{err:?}");
    assert_eq!(server.stats().requests, 0);
}

#[tokio::test]
async fn embedding_calls_are_retried_like_completions() {
    let server = mock(MockConfig {
        rate_500: 1.0,
        ..MockConfig::default()
    })
    .await;
    let provider = build(
        &server,
        "openai:embeddings:e",
        json!({"maxRetries": 1, "retryBaseDelayMs": 1}),
    );
    let err = provider.embed(&["x".to_owned()]).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Http { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(server.stats().embeddings, 2);
}
