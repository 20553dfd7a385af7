use gauntlet_mockllm::MockConfig;
use serde_json::{Value, json};

use crate::{client, start};

async fn post(server: &gauntlet_mockllm::MockServer, path: &str, body: Value) -> (u16, Value) {
    let resp = client()
        .post(format!("{}{path}", server.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn vector(v: &Value) -> Vec<f64> {
    v["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[tokio::test]
async fn legacy_completions_echo_each_prompt() {
    let server = start(MockConfig::default()).await;
    let (status, v) = post(
        &server,
        "/completions",
        json!({"model": "m", "prompt": "Say hi"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "ECHO: Say hi");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 2);

    let (_, v) = post(
        &server,
        "/completions",
        json!({"model": "m", "prompt": ["one", "two words here"], "max_tokens": 2}),
    )
    .await;
    assert_eq!(v["choices"][0]["text"], "ECHO: on");
    assert_eq!(v["choices"][1]["text"], "ECHO: tw");
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][1]["finish_reason"], "length");
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let server = start(MockConfig::default()).await;
    let (status, v) = post(
        &server,
        "/embeddings",
        json!({"model": "text-embedding-3-small", "input": ["the cat sat on the mat", "The cat sat on the mat!", "stock market report"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let vs: Vec<Vec<f64>> = data.iter().map(vector).collect();
    for x in &vs {
        assert_eq!(x.len(), 64);
        assert!((dot(x, x) - 1.0).abs() < 1e-4);
    }
    assert!(dot(&vs[0], &vs[1]) > 0.999, "same words, same vector");
    assert!(dot(&vs[0], &vs[2]) < 0.9);

    let (_, again) = post(
        &server,
        "/embeddings",
        json!({"model": "x", "input": "the cat sat on the mat"}),
    )
    .await;
    assert_eq!(vector(&again["data"][0]), vs[0]);

    let (_, wide) = post(
        &server,
        "/embeddings",
        json!({"model": "x", "input": "a", "dimensions": 256}),
    )
    .await;
    assert_eq!(vector(&wide["data"][0]).len(), 256);
    let (status, _) = post(&server, "/embeddings", json!({"model": "x", "input": []})).await;
    assert_eq!(status, 400);
}
