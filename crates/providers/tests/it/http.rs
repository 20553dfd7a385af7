use gauntlet_mockllm::MockConfig;
use gauntlet_providers::ProviderError;
use serde_json::json;

use crate::{config, factory_for, mock};

#[tokio::test]
async fn json_body_template_and_response_path_against_chat_completions() {
    let server = mock(MockConfig::default()).await;
    let provider = factory_for(&server)
        .build(
            "http",
            &config(json!({
                "url": format!("{}/chat/completions", server.base_url()),
                "method": "POST",
                "body": {
                    "model": "gpt-4.1",
                    "messages": [{"role": "user", "content": "{{prompt}}"}]
                },
                "transformResponse": "json.choices[0].message.content"
            })),
        )
        .unwrap();
    let prompt = "say \"hi\"\nthen stop";
    let c = provider.complete(prompt).await.unwrap();
    assert_eq!(c.output, format!("ECHO: {prompt}"));
    assert!(c.tokens_in > 0 && c.tokens_out > 0);
    let stats = server.stats();
    assert_eq!((stats.chat, stats.ok), (1, 1));
    assert_eq!(stats.models.get("gpt-4.1"), Some(&1));
}

#[tokio::test]
async fn a_url_id_with_a_string_body_and_a_bare_response_path() {
    let server = mock(MockConfig::default()).await;
    let url = format!("{}/api/chat", server.root_url());
    let provider = factory_for(&server)
        .build(
            &url,
            &config(json!({
                "body": r#"{"model": "m", "stream": false, "messages": [{"role": "user", "content": "{{ prompt }}"}]}"#,
                "responsePath": "message.content"
            })),
        )
        .unwrap();
    assert_eq!(provider.id(), url);
    assert_eq!(
        provider.complete("hello").await.unwrap().output,
        "ECHO: hello"
    );
    assert_eq!(server.stats().ollama_chat, 1);
}

#[tokio::test]
async fn without_a_path_the_whole_answer_is_the_output() {
    let server = mock(MockConfig::default()).await;
    let provider = factory_for(&server)
        .build(
            "http",
            &config(json!({
                "url": format!("{}/healthz", server.root_url()),
                "method": "GET"
            })),
        )
        .unwrap();
    assert_eq!(provider.complete("ignored").await.unwrap().output, "ok");
}

#[tokio::test]
async fn errors_retry_like_any_provider_and_a_missing_path_is_a_decode_error() {
    let server = mock(MockConfig {
        rate_500: 1.0,
        ..MockConfig::default()
    })
    .await;
    let cfg = |path: &str| {
        config(json!({
            "url": format!("{}/chat/completions", server.base_url()),
            "body": {"model": "m", "messages": [{"role": "user", "content": "{{prompt}}"}]},
            "responsePath": path,
            "maxRetries": 2,
            "retryBaseDelayMs": 5
        }))
    };
    let provider = factory_for(&server)
        .build("http", &cfg("json.choices[0].message.content"))
        .unwrap();
    let err = provider.complete("x").await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Http { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(server.stats().chat, 3);

    server.set_config(MockConfig::default());
    let provider = factory_for(&server)
        .build("http", &cfg("json.output"))
        .unwrap();
    let err = provider.complete("x").await.unwrap_err();
    assert!(matches!(err, ProviderError::Decode(_)), "{err:?}");
    assert!(err.to_string().contains("json.output"), "{err}");
}
