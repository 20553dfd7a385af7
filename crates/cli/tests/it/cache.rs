//! The response cache shared by all workers, end to end: a second identical
//! run is answered from the cache without calling the model, marked
//! `cached`, and counted; `no_cache` calls the model again.

use std::time::Duration;

use futures::StreamExt;
use gauntlet_proto::{
    internal::v1::{GetStatusRequest, control_client::ControlClient},
    v1::{self, ResultStatus, RunStatus},
};

use crate::cluster::Cluster;

const CASES: u64 = 30;

/// One mock-model provider; case 0 has a prompt (and so an answer) over
/// 1 KB, which is stored compressed.
fn suite(mock_url: &str) -> String {
    let mut y = format!(
        "description: response cache\n\
         prompts:\n  - 'Repeat {{{{ word }}}} {{{{ n }}}}'\n\
         providers:\n  - id: openai:chat:mock-model\n    config:\n      apiBaseUrl: {mock_url}\n      temperature: 0\n\
         tests:\n"
    );
    for n in 0..CASES {
        let word = if n == 0 {
            "long ".repeat(300)
        } else {
            "word".into()
        };
        y.push_str(&format!(
            "  - vars:\n      word: '{}'\n      n: {n}\n    assert:\n      - type: contains\n        value: '{n}'\n",
            word.trim()
        ));
    }
    y
}

/// Submits the suite, waits for the run to end, returns its results.
async fn run_once(cluster: &Cluster, no_cache: bool) -> Vec<v1::Result> {
    let mut runs = cluster.runs().await;
    let submitted = runs
        .submit_run(v1::SubmitRunRequest {
            suite: suite(&cluster.mock.base_url()),
            format: v1::SuiteFormat::Yaml as i32,
            options: Some(v1::RunOptions {
                no_cache,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut stream = runs
        .watch_run(v1::WatchRunRequest {
            run_id: submitted.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut last = None;
    while let Some(item) = tokio::time::timeout_at(deadline, stream.next())
        .await
        .expect("run finishes within 120 s")
    {
        last = Some(item.unwrap());
    }
    let last = last.expect("at least one progress message");
    assert_eq!(last.status, RunStatus::Completed as i32, "{last:?}");
    let results = runs
        .list_results(v1::ListResultsRequest {
            run_id: submitted.run_id,
            status: ResultStatus::Unspecified as i32,
            page_size: 200,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .results;
    assert_eq!(results.len() as u64, CASES);
    assert!(
        results
            .iter()
            .all(|r| r.status == ResultStatus::Pass as i32),
        "{results:?}"
    );
    results
}

pub(crate) async fn worker_metric(cluster: &Cluster, name: &str) -> f64 {
    control_metric(cluster.worker(), name).await
}

/// A metric of the service whose Control API listens on `addr`.
pub(crate) async fn control_metric(addr: impl std::fmt::Display, name: &str) -> f64 {
    let mut control = ControlClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let status = control
        .get_status(GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    status.metrics.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_identical_run_is_served_from_the_cache_without_calling_the_model() {
    let cluster = Cluster::start().await;

    let first = run_once(&cluster, false).await;
    assert!(first.iter().all(|r| !r.cached));
    assert_eq!(cluster.mock.stats().chat, CASES);

    let second = run_once(&cluster, false).await;
    assert!(second.iter().all(|r| r.cached), "{second:?}");
    assert_eq!(
        cluster.mock.stats().chat,
        CASES,
        "a cached run calls the model zero times"
    );
    // The same answers, long (compressed) one included.
    let output = |rs: &[v1::Result], task: u64| {
        rs.iter()
            .find(|r| r.task_index == task)
            .unwrap()
            .output
            .clone()
    };
    for task in 0..CASES {
        assert_eq!(output(&first, task), output(&second, task));
    }
    assert!(output(&second, 0).len() > 1024);
    assert_eq!(
        worker_metric(
            &cluster,
            "gauntlet_cache_requests_total{cache=\"responses\",result=\"hit\"}"
        )
        .await,
        CASES as f64
    );
    assert_eq!(
        worker_metric(
            &cluster,
            "gauntlet_cache_requests_total{cache=\"responses\",result=\"miss\"}"
        )
        .await,
        CASES as f64
    );

    // `--no-cache`: the model is called again, and nothing is marked cached.
    let third = run_once(&cluster, true).await;
    assert!(third.iter().all(|r| !r.cached));
    assert_eq!(cluster.mock.stats().chat, 2 * CASES);

    cluster.stop().await;
}
