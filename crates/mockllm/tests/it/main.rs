//! Integration tests for the mock model server, over real HTTP.

mod admin;
mod chat;
mod faults;
mod native_endpoints;
mod other_endpoints;

use gauntlet_mockllm::{MockConfig, MockServer};
use serde_json::{Value, json};

async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.expect("mock starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn chat(server: &MockServer, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", server.base_url()))
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

fn user(content: &str) -> Value {
    json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": content}]})
}
