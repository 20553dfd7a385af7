//! Integration tests: providers against the Gauntlet mock model server (and a
//! tiny capture server for what the mock does not expose).

mod anthropic;
mod breaker;
mod echo_and_ids;
mod embeddings;
mod http;
mod ollama;
mod openai;
mod pause;
mod retries;
mod secrets;

use std::{collections::HashMap, sync::Arc};

use gauntlet_mockllm::{MockConfig, MockServer};
use gauntlet_providers::{Provider, ProviderFactory};
use serde_json::{Map, Value};

async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("mock starts")
}

/// A factory whose OpenAI base URL is the mock, with no API key (as for a local model).
fn factory_for(server: &MockServer) -> ProviderFactory {
    ProviderFactory::new(HashMap::from([(
        "OPENAI_BASE_URL".to_owned(),
        server.base_url(),
    )]))
}

/// A factory whose OpenAI, Anthropic and Ollama base URLs all point at the mock.
fn factory_for_all(server: &MockServer) -> ProviderFactory {
    ProviderFactory::new(HashMap::from([
        ("OPENAI_BASE_URL".to_owned(), server.base_url()),
        ("ANTHROPIC_BASE_URL".to_owned(), server.root_url()),
        ("OLLAMA_BASE_URL".to_owned(), server.root_url()),
    ]))
}

fn config(v: Value) -> Map<String, Value> {
    v.as_object().expect("config is an object").clone()
}

fn build(server: &MockServer, id: &str, cfg: Value) -> Arc<dyn Provider> {
    factory_for(server)
        .build(id, &config(cfg))
        .expect("provider builds")
}
