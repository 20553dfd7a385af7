//! Suites uploaded as normalized JSON lines (`SubmitRunStream` with
//! `SUITE_FORMAT_NORMALIZED_JSON_LINES`), against the real services: the
//! gateway checks and stores them a test at a time, a refused or broken-off
//! upload leaves nothing behind, and results carry each test's own vars,
//! read back from the stored rows.

use std::time::Duration;

use gauntlet_core::{
    Suite, SuiteFormat,
    parse::{normalized_header_line, normalized_test_line},
    parse_suite,
};
use gauntlet_proto::v1::{self, submit_run_chunk::Part};
use gauntlet_store::{PgStore, Store};
use uuid::Uuid;

use crate::{cluster::Cluster, resilience::wait_for};

/// A suite of `n` echo tests, each asserting on its own var.
fn suite(n: usize) -> Suite {
    let mut yaml = String::from("prompts: ['Say {{word}}']\nproviders: [echo]\ntests:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - description: case {i}\n    vars: {{word: w{i}}}\n    assert: [{{type: contains, value: w{i}}}]\n"
        ));
    }
    parse_suite(&yaml, SuiteFormat::Yaml).unwrap()
}

/// The upload of `suite`, run `repeat` times, as header, data chunks of
/// `chunk` bytes and, if `trailer`, the trailer; `edit` may change the
/// text first.
fn upload(
    suite: &Suite,
    repeat: u32,
    chunk: usize,
    trailer: Option<u64>,
    edit: impl Fn(String) -> String,
) -> Vec<v1::SubmitRunChunk> {
    let header = Suite {
        tests: Vec::new(),
        ..suite.clone()
    };
    let mut text = normalized_header_line(&header);
    for test in &suite.tests {
        text.push('\n');
        text.push_str(&normalized_test_line(test));
    }
    let text = edit(text);
    let mut messages = vec![v1::SubmitRunChunk {
        part: Some(Part::Header(v1::SubmitRunHeader {
            format: v1::SuiteFormat::NormalizedJsonLines as i32,
            options: Some(v1::RunOptions {
                repeat,
                ..Default::default()
            }),
            suite_bytes: 0,
        })),
    }];
    messages.extend(text.as_bytes().chunks(chunk).map(|c| v1::SubmitRunChunk {
        part: Some(Part::Data(c.to_vec())),
    }));
    if let Some(tests) = trailer {
        messages.push(v1::SubmitRunChunk {
            part: Some(Part::Trailer(v1::SubmitRunTrailer { tests })),
        });
    }
    messages
}

/// Tests stored for uploads that have no run (and removes them).
async fn orphan_tests(cluster: &Cluster) -> u64 {
    let config = gauntlet_config::DatabaseConfig {
        url: cluster.database_url(),
        ..Default::default()
    };
    let store = PgStore::connect(&config).await.unwrap();
    store.sweep_orphan_tests(Uuid::max()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_lines_upload_runs_every_test_with_its_own_vars() {
    let cluster = Cluster::start().await;
    let mut runs = cluster.runs().await;
    // 2,500 tests in 7 KB chunks: lines cut across chunks, stored in
    // several writes.
    let suite = suite(2500);
    let submitted = runs
        .submit_run_stream(futures::stream::iter(upload(
            &suite,
            1,
            7000,
            Some(2500),
            |t| t,
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.total_tasks, 2500);
    let run_id = submitted.run_id;
    let run = wait_for(
        &mut runs,
        &run_id,
        Duration::from_secs(60),
        "completed",
        |r| r.status == v1::RunStatus::Completed as i32,
    )
    .await;
    assert_eq!((run.passed, run.failed, run.errors), (2500, 0, 0));

    // Every result names its own test's description and vars, read back
    // from the stored test rows, page after page.
    let mut seen = 0;
    let mut page_token = String::new();
    loop {
        let page = runs
            .list_results(v1::ListResultsRequest {
                run_id: run_id.clone(),
                page_size: 1000,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for r in &page.results {
            let i = r.test_index;
            assert_eq!(r.test_description, format!("case {i}"));
            assert_eq!(r.vars_json, format!("{{\"word\":\"w{i}\"}}"));
            assert_eq!(r.rendered_prompt, format!("Say w{i}"));
            seen += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen, 2500);
    assert_eq!(orphan_tests(&cluster).await, 0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_or_broken_off_upload_leaves_no_run_and_no_tests() {
    // Run twice, the suite runs only once every test is in (a task's index
    // depends on the test count), so a refused one leaves nothing.
    let cluster = Cluster::start().await;
    let mut runs = cluster.runs().await;
    let suite = suite(3000);

    let mut refused = async |trailer, edit: fn(String) -> String| {
        let messages = upload(&suite, 2, 64 * 1024, trailer, edit);
        runs.submit_run_stream(futures::stream::iter(messages))
            .await
            .unwrap_err()
    };
    // Cut short: the client stops before its trailer.
    let status = refused(None, |t| t).await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("trailer"), "{status:?}");

    // A trailer that does not count what arrived.
    let status = refused(Some(2999), |t| t).await;
    assert!(status.message().contains("3000 arrived"), "{status:?}");

    // Test 2,345 of 3,000 (line 2,347) lacks the prompt's var: refused
    // naming it, after the tests before it were stored.
    let status = refused(Some(3000), |t| {
        t.replace("{\"word\":\"w2345\"}", "{\"other\":\"w2345\"}")
    })
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("tests[2345].vars"), "{status:?}");
    assert!(status.message().contains("`word`"), "{status:?}");

    // A line that is not a test is named by its line.
    let status = refused(Some(3001), |t| format!("{t}\n[1, 2]")).await;
    assert!(status.message().contains("tests[3000]"), "{status:?}");
    assert!(status.message().contains("3002"), "{status:?}");

    let listed = runs
        .list_runs(v1::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.runs.is_empty(), "{:?}", listed.runs);
    assert_eq!(orphan_tests(&cluster).await, 0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_starts_while_its_tests_arrive_and_a_refused_one_keeps_its_results() {
    let cluster = Cluster::start().await;
    let mut runs = cluster.runs().await;
    let suite = suite(3000);

    // Run once, the run starts with its first tests: the first results
    // are in before the last test is sent.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let call = tokio::spawn({
        let mut runs = runs.clone();
        async move {
            runs.submit_run_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        }
    });
    let mut messages = upload(&suite, 1, 4096, Some(3000), |t| t).into_iter();
    let last = messages.len() - 2;
    for message in messages.by_ref().take(last) {
        tx.send(message).await.unwrap();
    }
    let run = wait_for_a_run(&mut runs).await;
    assert_eq!(run.total_tasks, 0, "not known while tests arrive: {run:?}");
    let run = wait_for(
        &mut runs,
        &run.id,
        Duration::from_secs(30),
        "results",
        |r| r.completed_tasks > 0,
    )
    .await;
    assert_eq!(run.status, v1::RunStatus::Running as i32, "{run:?}");
    for message in messages {
        tx.send(message).await.unwrap();
    }
    drop(tx);
    let submitted = call.await.unwrap().unwrap().into_inner();
    assert_eq!(
        (submitted.run_id.as_str(), submitted.total_tasks),
        (run.id.as_str(), 3000)
    );
    let run = wait_for(
        &mut runs,
        &run.id,
        Duration::from_secs(60),
        "completed",
        |r| r.status == v1::RunStatus::Completed as i32,
    )
    .await;
    assert_eq!((run.total_tasks, run.passed), (3000, 3000));

    // Refused half way: the run ends failed, naming the test, and keeps
    // the results of the tests before it.
    let status = runs
        .submit_run_stream(futures::stream::iter(upload(
            &suite,
            1,
            64 * 1024,
            Some(3000),
            |t| t.replace("{\"word\":\"w2345\"}", "{\"other\":\"w2345\"}"),
        )))
        .await
        .unwrap_err();
    assert!(status.message().contains("tests[2345].vars"), "{status:?}");
    let listed = runs
        .list_runs(v1::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let failed = listed.runs.iter().find(|r| r.id != run.id).unwrap();
    assert_eq!(failed.status, v1::RunStatus::Failed as i32, "{failed:?}");
    assert!(
        failed.status_reason.contains("tests[2345].vars"),
        "{failed:?}"
    );
    // Its total is what was published: whole writes of tests before 2345.
    assert!(
        failed.total_tasks > 0 && failed.total_tasks <= 2345,
        "{failed:?}"
    );
    assert_eq!(orphan_tests(&cluster).await, 0);
    cluster.stop().await;
}

/// The first run listed, once there is one.
async fn wait_for_a_run(
    runs: &mut gauntlet_proto::v1::run_service_client::RunServiceClient<gauntlet_cli::client::Conn>,
) -> v1::Run {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let listed = runs
            .list_runs(v1::ListRunsRequest::default())
            .await
            .unwrap()
            .into_inner();
        if let Some(run) = listed.runs.into_iter().next() {
            return run;
        }
        assert!(std::time::Instant::now() < deadline, "no run was created");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
