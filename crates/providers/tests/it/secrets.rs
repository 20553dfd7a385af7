use std::collections::HashMap;

use axum::{Json, Router, http::HeaderMap, routing::post};
use gauntlet_providers::{ProviderError, ProviderFactory};
use serde_json::{Value, json};

use crate::config;

/// A server that rejects every call and, like some careless gateways, quotes
/// the credential it was sent in the error.
async fn leaky_server() -> String {
    let app = Router::new().fallback(post(|headers: HeaderMap| async move {
        let sent: Vec<String> = ["x-api-key", "authorization"]
            .iter()
            .filter_map(|h| headers.get(*h)?.to_str().ok().map(str::to_owned))
            .collect();
        (
            axum::http::StatusCode::UNAUTHORIZED,
            Json(
                json!({"type": "error", "error": {"type": "authentication_error",
                   "message": format!("invalid credential: {}", sent.join(", "))}}),
            ),
        )
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn keys_never_show_in_errors_or_debug_output() {
    let url = leaky_server().await;
    let secret = "sk-very-secret-0123456789";
    let env = HashMap::from([
        ("ANTHROPIC_API_KEY".to_owned(), secret.to_owned()),
        ("OLLAMA_API_KEY".to_owned(), secret.to_owned()),
        ("SVC_TOKEN".to_owned(), secret.to_owned()),
    ]);
    let factory = ProviderFactory::new(env);
    let cases: [(&str, Value); 3] = [
        (
            "anthropic:messages:claude-sonnet-4",
            json!({"apiBaseUrl": url}),
        ),
        ("ollama:chat:llama3.2", json!({"apiBaseUrl": url})),
        (
            "http",
            json!({"url": format!("{url}/generate"), "body": {"q": "{{prompt}}"},
                   "headers": {"Authorization": "Bearer {{ env.SVC_TOKEN }}"}}),
        ),
    ];
    for (id, cfg) in cases {
        let provider = factory.build(id, &config(cfg)).unwrap();
        let err = provider.complete("x").await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Http { status: 401, .. }),
            "{id}: {err:?}"
        );
        let shown = format!("{err} {err:?} {provider:?}");
        assert!(!shown.contains(secret), "{id} leaked the key: {shown}");
        assert!(
            shown.contains("invalid credential: [redacted]"),
            "{id}: {shown}"
        );
    }
    assert!(!format!("{factory:?}").contains(secret));
}
