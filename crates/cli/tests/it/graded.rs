//! Model-graded assertions through the whole cluster, with the mock model as
//! both the tested provider and the grader (its grader rules are in
//! `gauntlet-mockllm`'s `src/grader.rs`).

use std::{collections::HashMap, time::Duration};

use futures::StreamExt;
use gauntlet_proto::v1::{self, ResultStatus, RunStatus};

use crate::cluster::Cluster;

const SUITE: &str = r#"
description: model-graded assertions
prompts:
  - '{{ query }}'
providers:
  - id: openai:chat:mock-model
    label: mock
defaultTest:
  options:
    provider:
      text: openai:chat:mock-grader
      embedding: openai:embeddings:mock-embedder
tests:
  - description: passes
    vars: {query: What is the capital of France? Paris.}
    assert:
      - type: llm-rubric
        value: names "Paris"
      - type: not-llm-rubric
        value: names "London"
      - type: factuality
        value: Paris
      - type: model-graded-closedqa
        value: capital France
      - type: similar
        value: What is the capital of France? Paris.
      - type: answer-relevance
      - type: g-eval
        value: '"capital" "Paris"'
  - description: fails
    vars: {query: Tell me about Rome.}
    assert:
      - type: llm-rubric
        value: names "Paris"
      - type: factuality
        value: Paris is the capital of France
      - type: model-graded-closedqa
        value: Paris
      - type: similar:cosine
        value: bananas are a yellow fruit
        threshold: 0.9
  - description: grader down
    vars: {query: anything}
    assert:
      - type: contains
        value: anything
      - type: llm-rubric
        value: anything
        provider:
          id: openai:chat:mock-grader
          config:
            maxRetries: 1
            retryBaseDelayMs: 1
            breakerThreshold: 0
            headers: {x-mock-fault: "500"}
  - description: unknown grader
    vars: {query: anything}
    assert:
      - type: llm-rubric
        value: anything
        provider: nosuch:grader
  - description: unreadable grader answer
    vars: {query: anything}
    assert:
      - type: llm-rubric
        value: mock:garbled
  - description: chat model asked to embed
    vars: {query: anything}
    assert:
      - type: similar
        value: anything
        provider: openai:chat:mock-grader
"#;

async fn run_to_end(cluster: &Cluster, suite: &str) -> String {
    let mut runs = cluster.runs().await;
    let run_id = runs
        .submit_run(v1::SubmitRunRequest {
            suite: suite.to_owned(),
            format: v1::SuiteFormat::Yaml as i32,
            options: None,
        })
        .await
        .expect("the suite is accepted")
        .into_inner()
        .run_id;
    let mut stream = runs
        .watch_run(v1::WatchRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Some(item) = tokio::time::timeout_at(deadline, stream.next())
        .await
        .expect("the run finishes within 120 s")
    {
        last = Some(item.unwrap());
    }
    let last = last.expect("progress");
    assert_eq!(last.status, RunStatus::Completed as i32, "{last:?}");
    run_id
}

/// Results by test description.
async fn results(cluster: &Cluster, run_id: &str) -> HashMap<String, v1::Result> {
    let page = cluster
        .runs()
        .await
        .list_results(v1::ListResultsRequest {
            run_id: run_id.into(),
            status: ResultStatus::Unspecified as i32,
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    page.results
        .into_iter()
        .map(|r| (r.test_description.clone(), r))
        .collect()
}

fn verdicts(r: &v1::Result) -> Vec<(&str, bool)> {
    r.assertions
        .iter()
        .map(|a| (a.r#type.as_str(), a.pass))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_graded_assertions_pass_fail_and_error_through_the_cluster() {
    assert_eq!(
        gauntlet_core::grading::model::GRADER_MARKER,
        gauntlet_mockllm::GRADER_MARKER,
        "the mock recognises the grader prompts"
    );
    let cluster = Cluster::start().await;
    let run_id = run_to_end(&cluster, SUITE).await;
    let results = results(&cluster, &run_id).await;
    assert_eq!(results.len(), 6);

    let passes = &results["passes"];
    assert_eq!(passes.output, "ECHO: What is the capital of France? Paris.");
    assert_eq!(
        verdicts(passes),
        vec![
            ("llm-rubric", true),
            ("not-llm-rubric", true),
            ("factuality", true),
            ("model-graded-closedqa", true),
            ("similar", true),
            ("answer-relevance", true),
            ("g-eval", true),
        ],
        "{passes:#?}"
    );
    assert_eq!(passes.status, ResultStatus::Pass as i32, "{passes:#?}");
    let g_eval = &passes.assertions[6];
    assert_eq!(g_eval.score, 1.0);
    let similar = &passes.assertions[4];
    assert!(similar.score >= 0.75 && similar.score < 1.0, "{similar:?}");
    assert!(similar.reason.starts_with("Similarity "), "{similar:?}");

    let fails = &results["fails"];
    assert_eq!(
        verdicts(fails),
        vec![
            ("llm-rubric", false),
            ("factuality", false),
            ("model-graded-closedqa", false),
            ("similar:cosine", false),
        ],
        "{fails:#?}"
    );
    assert_eq!(fails.status, ResultStatus::Fail as i32, "{fails:#?}");
    assert!(fails.error.is_empty());

    // Grader failures are errors, never fails.
    let down = &results["grader down"];
    assert_eq!(down.status, ResultStatus::Error as i32, "{down:#?}");
    assert!(down.error.contains("500"), "{}", down.error);
    assert_eq!(
        verdicts(down),
        vec![("contains", true), ("llm-rubric", false)]
    );
    assert!(down.assertions[1].reason.starts_with("Grader error: "));
    // The tested call still happened and is kept.
    assert_eq!(down.output, "ECHO: anything");

    let unknown = &results["unknown grader"];
    assert_eq!(unknown.status, ResultStatus::Error as i32, "{unknown:#?}");
    assert!(unknown.error.contains("nosuch:grader"), "{}", unknown.error);

    let garbled = &results["unreadable grader answer"];
    assert_eq!(garbled.status, ResultStatus::Error as i32, "{garbled:#?}");
    assert!(garbled.error.contains("JSON"), "{}", garbled.error);

    let chat_embed = &results["chat model asked to embed"];
    assert_eq!(
        chat_embed.status,
        ResultStatus::Error as i32,
        "{chat_embed:#?}"
    );
    assert!(
        chat_embed.error.contains("cannot embed"),
        "{}",
        chat_embed.error
    );

    // Every grader call went to the mock: 4 rounds of chat and embeddings.
    let stats = cluster.mock.stats();
    assert!(stats.embeddings >= 3, "{stats:?}");
    cluster.stop().await;
}

/// Grader calls are built like the run's own calls: a second identical run
/// is answered from the shared response cache, graders included, without a
/// single call to the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grader_calls_share_the_response_cache() {
    const CACHED: &str = r#"
prompts: ['{{ query }}']
providers: [openai:chat:mock-model]
defaultTest:
  options:
    provider: openai:chat:mock-grader
tests:
  - description: rubric
    vars: {query: The capital of France is Paris.}
    assert:
      - type: llm-rubric
        value: names "Paris"
      - type: factuality
        value: Paris
"#;
    let cluster = Cluster::start().await;
    let first = run_to_end(&cluster, CACHED).await;
    let calls = cluster.mock.stats().chat;
    // The tested call and two grader calls.
    assert_eq!(calls, 3);
    let second = run_to_end(&cluster, CACHED).await;
    assert_eq!(
        cluster.mock.stats().chat,
        calls,
        "second run called the model"
    );
    let (a, b) = (
        results(&cluster, &first).await,
        results(&cluster, &second).await,
    );
    assert_eq!(verdicts(&a["rubric"]), verdicts(&b["rubric"]));
    assert_eq!(
        b["rubric"].status,
        ResultStatus::Pass as i32,
        "{:?}",
        b["rubric"]
    );
    assert!(b["rubric"].cached);
    cluster.stop().await;
}
