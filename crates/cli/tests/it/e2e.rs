use std::time::Duration;

use futures::StreamExt;
use gauntlet_bus::{Message, QueueName};
use gauntlet_cli::client;
use gauntlet_proto::{
    internal::v1::{GetStatusRequest, TaskBatch, control_client::ControlClient},
    v1::{self, ResultStatus, RunStatus},
};
use prost::Message as _;
use tonic::Code;

use crate::cluster::Cluster;

const CASES: usize = 200;

/// What each case asserts, and so which verdict each provider must get.
/// The mock model answers "ECHO: <prompt>", the echo provider "<prompt>".
#[derive(Clone, Copy)]
enum Case {
    /// Fails for both.
    Missing,
    /// Passes for the mock only.
    EchoPrefix,
    /// Passes for both.
    Mentions,
}

fn case(i: usize) -> Case {
    if i.is_multiple_of(4) {
        Case::Missing
    } else if i.is_multiple_of(5) {
        Case::EchoPrefix
    } else {
        Case::Mentions
    }
}

fn suite_yaml(mock_url: &str, cases: usize) -> String {
    let mut y = format!(
        "description: e2e {cases} cases x 2 providers\n\
         prompts:\n  - 'Say {{{{ word }}}} number {{{{ n }}}}'\n\
         providers:\n  - id: openai:chat:mock-model\n    label: mock\n    config:\n      apiBaseUrl: {mock_url}\n  - echo\n\
         tests:\n"
    );
    for i in 0..cases {
        let assertion = match case(i) {
            Case::Missing => {
                "      - type: contains\n        value: never-there\n        metric: presence\n"
                    .to_string()
            }
            Case::EchoPrefix => "      - type: regex\n        value: '^ECHO: Say'\n".to_string(),
            Case::Mentions => {
                format!("      - type: icontains\n        value: 'SAY HELLO NUMBER {i}'\n")
            }
        };
        y.push_str(&format!(
            "  - vars:\n      word: hello\n      n: {i}\n    assert:\n{assertion}"
        ));
    }
    y
}

/// (passes, fails) expected for (mock, echo).
fn expected(cases: usize) -> ((u64, u64), (u64, u64)) {
    let (mut mock, mut echo) = ((0, 0), (0, 0));
    for i in 0..cases {
        match case(i) {
            Case::Missing => {
                mock.1 += 1;
                echo.1 += 1;
            }
            Case::EchoPrefix => {
                mock.0 += 1;
                echo.1 += 1;
            }
            Case::Mentions => {
                mock.0 += 1;
                echo.0 += 1;
            }
        }
    }
    (mock, echo)
}

async fn watch_to_end(cluster: &Cluster, run_id: &str) -> Vec<v1::RunProgress> {
    let mut runs = cluster.runs().await;
    let mut stream = runs
        .watch_run(v1::WatchRunRequest {
            run_id: run_id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while let Some(item) = tokio::time::timeout_at(deadline, stream.next())
        .await
        .expect("run finishes within 120 s")
    {
        seen.push(item.unwrap());
    }
    seen
}

async fn all_results(cluster: &Cluster, run_id: &str, status: ResultStatus) -> Vec<v1::Result> {
    client::result_pages(cluster.runs().await, run_id.into(), status, 150)
        .map(|page| page.unwrap().results)
        .concat()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_by_2_run_flows_end_to_end_with_known_verdicts() {
    let cluster = Cluster::start().await;
    let mut runs = cluster.runs().await;
    let started = std::time::Instant::now();
    let submitted = runs
        .submit_run(v1::SubmitRunRequest {
            suite: suite_yaml(&cluster.mock.base_url(), CASES),
            format: v1::SuiteFormat::Yaml as i32,
            options: None,
        })
        .await
        .expect("valid suite is accepted")
        .into_inner();
    assert_eq!(submitted.total_tasks, (CASES * 2) as u64);

    let progress = watch_to_end(&cluster, &submitted.run_id).await;
    let last = progress.last().expect("at least one progress message");
    assert_eq!(last.status, RunStatus::Completed as i32, "{last:?}");
    assert_eq!(last.completed_tasks, 400);
    eprintln!(
        "200x2 run: {} progress messages, finished in {:?}",
        progress.len(),
        started.elapsed()
    );
    // Progress never goes backwards.
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].completed_tasks <= w[1].completed_tasks)
    );

    let results = all_results(&cluster, &submitted.run_id, ResultStatus::Unspecified).await;
    assert_eq!(results.len(), 400, "exactly one result per task");
    let mut tasks: Vec<u64> = results.iter().map(|r| r.task_index).collect();
    tasks.dedup();
    assert_eq!(tasks.len(), 400);
    let sample = results
        .iter()
        .find(|r| r.provider_id == "mock" && r.test_index == 7)
        .unwrap();
    assert_eq!(sample.output, "ECHO: Say hello number 7");
    assert!(sample.tokens_in > 0 && sample.tokens_out > 0);

    let ((mock_pass, mock_fail), (echo_pass, echo_fail)) = expected(CASES);
    let summary = cluster
        .analytics()
        .await
        .get_run_summary(v1::GetRunSummaryRequest {
            run_id: submitted.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.passed, mock_pass + echo_pass);
    assert_eq!(summary.failed, mock_fail + echo_fail);
    assert_eq!(summary.errors, 0);
    let group = |name: &str| {
        summary
            .groups
            .iter()
            .find(|g| g.provider_id == name)
            .unwrap_or_else(|| panic!("group for {name} in {:?}", summary.groups))
    };
    assert_eq!(
        (group("mock").passed, group("mock").failed),
        (mock_pass, mock_fail)
    );
    assert_eq!(
        (group("echo").passed, group("echo").failed),
        (echo_pass, echo_fail)
    );
    assert!(group("mock").latency.unwrap().p50_ms >= 0.0);

    // Per assertion type and named metric, each with its pass rate.
    let missing = (0..CASES)
        .filter(|&i| matches!(case(i), Case::Missing))
        .count() as u64;
    let prefixed = (0..CASES)
        .filter(|&i| matches!(case(i), Case::EchoPrefix))
        .count() as u64;
    let stats = |list: &[v1::AssertionStats], name: &str| {
        let s = list
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} in {list:?}"));
        (s.passed, s.failed)
    };
    assert_eq!(
        stats(&summary.assertion_types, "contains"),
        (0, 2 * missing)
    );
    assert_eq!(
        stats(&summary.assertion_types, "regex"),
        (prefixed, prefixed)
    );
    assert_eq!(stats(&summary.metrics, "presence"), (0, 2 * missing));
    assert_eq!(summary.metrics.len(), 1, "{:?}", summary.metrics);
    assert_eq!(
        stats(&group("echo").assertion_types, "regex"),
        (0, prefixed)
    );
    // The pass rate's Wilson interval, and the mean score (1 a pass, 0 a
    // fail) with its own.
    let rate = summary.pass_rate_interval.unwrap();
    assert_eq!(rate.estimate, summary.pass_rate);
    assert!(
        rate.low < rate.estimate && rate.estimate < rate.high,
        "{rate:?}"
    );
    let score = summary.score.unwrap();
    assert!(
        (score.estimate - summary.pass_rate).abs() < 1e-12,
        "{score:?}"
    );
    assert!(score.low < score.estimate && score.estimate < score.high);
    // The cases that failed most: the Missing ones fail on both
    // providers, named by their vars, in test order.
    let first = &summary.most_failed[0];
    assert_eq!((first.test_index, first.unpassed, first.total), (0, 2, 2));
    assert_eq!(first.description, "n=0, word=hello");
    assert_eq!(summary.most_failed.len(), 10);
    assert_eq!(summary.slowest.len(), 10);
    assert!(
        summary
            .slowest
            .windows(2)
            .all(|w| w[0].latency_ms >= w[1].latency_ms)
    );

    let fails = all_results(&cluster, &submitted.run_id, ResultStatus::Fail).await;
    assert_eq!(fails.len() as u64, mock_fail + echo_fail);

    // A Markdown report through the reports service names both providers,
    // and its completion is announced on the event exchange.
    let mut events = cluster.bus.subscribe("report.*.*").await.unwrap();
    let mut reports = cluster.reports().await;
    let report = reports
        .create_report(v1::CreateReportRequest {
            run_id: submitted.run_id.clone(),
            format: v1::ReportFormat::Markdown as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ready = loop {
        let r = reports
            .get_report(v1::GetReportRequest {
                report_id: report.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        if r.status != v1::ReportStatus::Pending as i32 {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        ready.status,
        v1::ReportStatus::Ready as i32,
        "{}",
        ready.error
    );
    assert!(ready.content.contains("| mock |"), "{}", ready.content);
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("a report event within 10 s")
        .unwrap();
    assert_eq!(event.routing_key, format!("report.{}.ready", report.id));
    let job = gauntlet_proto::internal::v1::ReportJob::decode(event.payload.as_slice()).unwrap();
    assert_eq!(job.run_id, submitted.run_id);
    assert!(ready.content.contains("| echo |"), "{}", ready.content);

    // The monitor sees every service serving and the drained task queue.
    let mut monitor = cluster.monitor().await;
    let health = loop {
        let h = monitor
            .get_system_health(v1::GetSystemHealthRequest {})
            .await
            .unwrap()
            .into_inner();
        if h.healthy || started.elapsed() > Duration::from_secs(150) {
            break h;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(health.healthy, "{health:?}");
    assert_eq!(health.services.len(), 4);
    let tasks_queue = health
        .queues
        .iter()
        .find(|q| q.name == "gauntlet.tasks")
        .unwrap();
    assert_eq!(tasks_queue.messages, 0);
    assert_eq!(tasks_queue.consumers, 1);

    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_batch_inserts_nothing_twice() {
    let cluster = Cluster::start().await;
    let mut runs = cluster.runs().await;
    let submitted = runs
        .submit_run(v1::SubmitRunRequest {
            suite: suite_yaml(&cluster.mock.base_url(), 10),
            format: v1::SuiteFormat::Unspecified as i32,
            options: Some(v1::RunOptions {
                no_cache: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let progress = watch_to_end(&cluster, &submitted.run_id).await;
    let before = progress.last().unwrap().clone();
    assert_eq!(before.completed_tasks, 20);

    let mut control = ControlClient::connect(format!("http://{}", cluster.worker()))
        .await
        .unwrap();
    let batches = |s: &gauntlet_proto::internal::v1::ServiceStatus| {
        s.metrics
            .get("gauntlet_batches_processed_total")
            .copied()
            .unwrap_or(0.0)
    };
    let processed_before = batches(
        &control
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner(),
    );

    // The same tasks again, as a broker redelivery after a lost ack would.
    cluster
        .bus
        .publish(
            QueueName::Tasks,
            vec![Message {
                payload: TaskBatch {
                    run_id: submitted.run_id.clone(),
                    project_id: "default".into(),
                    first_task: 0,
                    count: 20,
                    ..TaskBatch::default()
                }
                .encode_to_vec(),
                headers: vec![],
            }],
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = control
            .get_status(GetStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        if batches(&status) > processed_before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "duplicate batch never processed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The worker really did the work again (no cache): the mock was called
    // for the duplicate tasks of its provider…
    assert_eq!(cluster.mock.stats().chat, 20);

    // …and yet nothing was inserted twice and no counter moved.
    let results = all_results(&cluster, &submitted.run_id, ResultStatus::Unspecified).await;
    assert_eq!(results.len(), 20);
    let after = runs
        .get_run(v1::GetRunRequest {
            run_id: submitted.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.completed_tasks, 20);
    assert_eq!(
        (after.passed, after.failed, after.errors),
        (before.passed, before.failed, before.errors)
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_suites_are_rejected_with_field_paths_and_nothing_is_stored() {
    let cluster = Cluster::start().await;
    let mut runs = cluster.runs().await;
    let cases = [
        (
            "prompts: ['Hi {{name}}']\nproviders: [echo]\ntests:\n  - vars: {name: a}\n    assert:\n      - type: contains\n        value: a\n  - vars: {name: b}\n    assert:\n      - type: contians\n        value: b\n",
            "tests[1].assert[0].type",
        ),
        (
            "prompts: ['Hi {{name}} {{ lang }}']\nproviders: [echo]\ntests:\n  - vars: {name: a}\n",
            "lang",
        ),
        ("prompts: ['Hi']\nproviders: [echo]\ntests: []\n", "tests"),
        ("prompts: ['Hi'\nproviders: [echo]\n", "line"),
        (
            "prompts: ['Hi']\nproviders: [nosuch:provider]\ntests:\n  - vars: {}\n",
            "providers[0]",
        ),
    ];
    for (suite, needle) in cases {
        let err = runs
            .submit_run(v1::SubmitRunRequest {
                suite: suite.into(),
                format: v1::SuiteFormat::Unspecified as i32,
                options: None,
            })
            .await
            .expect_err(suite);
        assert_eq!(err.code(), Code::InvalidArgument, "{suite}: {err:?}");
        assert!(
            err.message().contains(needle),
            "message for {suite:?} should name {needle}: {}",
            err.message()
        );
    }
    let listed = runs
        .list_runs(v1::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.runs.is_empty(), "a rejected suite stores nothing");
    assert_eq!(
        cluster
            .bus
            .queue_stats(QueueName::Tasks)
            .await
            .unwrap()
            .messages,
        0
    );

    let missing = runs
        .get_run(v1::GetRunRequest {
            run_id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let malformed = runs
        .get_run(v1::GetRunRequest {
            run_id: "not-an-id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().contains("run_id"));
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_public_services() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let cluster = Cluster::start().await;
    let mut client = ServerReflectionClient::new(cluster.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "gauntlet.v1.RunService",
        "gauntlet.v1.AnalyticsService",
        "gauntlet.v1.ReportService",
        "gauntlet.v1.MonitorService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    cluster.stop().await;
}

/// Python's grpcio-reflection with a fresh descriptor pool (a client we did
/// not write) resolves every method of every service from reflection alone.
/// `scripts/test.sh` installs it; without it the test says so and passes,
/// except under `CI=true`, where a missing client is a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_resolves_every_method_from_reflection() {
    let have = std::process::Command::new("python3")
        .args(["-c", "import grpc_reflection, google.protobuf"])
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert!(
            std::env::var("CI").is_err(),
            "CI needs python3 with grpcio-reflection (scripts/test.sh installs it)"
        );
        eprintln!("skipped: python3 with grpcio-reflection is not installed");
        return;
    }
    let cluster = Cluster::start().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts/checks/reflection_client.py");
    let target = cluster.stack.url().trim_start_matches("http://").to_owned();
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&target)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("resolved"), "{stdout}");
    cluster.stop().await;
}
