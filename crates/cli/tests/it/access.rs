//! API keys, projects, roles, scoping, rate limits, quotas, the audit log
//! and fair dispatch (issue 14), against a cluster over the real Postgres,
//! RabbitMQ and Redis with keys on, through clients that send
//! `authorization: Bearer <key>` as any gRPC client would.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use gauntlet_bus::QueueName;
use gauntlet_mockllm::{MockConfig, MockServer};
use gauntlet_proto::v1::{
    self, access_service_client::AccessServiceClient,
    analytics_service_client::AnalyticsServiceClient, report_service_client::ReportServiceClient,
    run_service_client::RunServiceClient,
};
use tonic::{
    Code, Request, Status, metadata::MetadataValue, service::interceptor::InterceptedService,
    transport::Channel,
};

use crate::{
    cli::{gauntlet_env, text},
    cluster::Cluster,
};

/// The bootstrap key of every cluster here: an admin of `default`.
const BOOT: &str = "gk_live_bootstrap000_0123456789abcdefghijABCDEFGHIJ0123456789";

#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

/// The gateway's clients as one key (or none) calls them.
struct As {
    runs: RunServiceClient<Authed>,
    access: AccessServiceClient<Authed>,
    analytics: AnalyticsServiceClient<Authed>,
    reports: ReportServiceClient<Authed>,
}

async fn as_key(cluster: &Cluster, key: Option<&str>) -> As {
    let bearer = Bearer(key.map(|k| format!("Bearer {k}").parse().unwrap()));
    let channel = cluster.channel().await;
    let authed = || InterceptedService::new(channel.clone(), bearer.clone());
    As {
        runs: RunServiceClient::new(authed()),
        access: AccessServiceClient::new(authed()),
        analytics: AnalyticsServiceClient::new(authed()),
        reports: ReportServiceClient::new(authed()),
    }
}

async fn keyed_cluster(tweak: impl FnOnce(&mut gauntlet_config::GauntletConfig)) -> Cluster {
    Cluster::start_with(|c| {
        c.auth.enabled = true;
        c.auth.bootstrap_key = BOOT.into();
        c.auth.cache_secs = 1;
        tweak(c);
    })
    .await
}

fn suite(mock_url: &str, tests: usize) -> String {
    let mut y = format!(
        "description: access {tests}\nprompts:\n  - 'Say {{{{ n }}}}'\n\
         providers:\n  - id: openai:chat:gpt-4o-mini\n    config:\n      apiBaseUrl: {mock_url}\n\
         tests:\n"
    );
    for i in 0..tests {
        y.push_str(&format!("  - vars:\n      n: {i}\n"));
    }
    y
}

async fn submit(
    client: &mut As,
    mock_url: &str,
    tests: usize,
    repeat: u32,
) -> Result<v1::SubmitRunResponse, Status> {
    client
        .runs
        .submit_run(v1::SubmitRunRequest {
            suite: suite(mock_url, tests),
            format: v1::SuiteFormat::Yaml as i32,
            options: Some(v1::RunOptions {
                repeat,
                ..Default::default()
            }),
        })
        .await
        .map(|r| r.into_inner())
}

async fn create_project(admin: &mut As, id: &str, quotas: v1::Quotas) {
    admin
        .access
        .create_project(v1::CreateProjectRequest {
            id: id.into(),
            name: format!("Project {id}"),
            quotas: Some(quotas),
            weight: 0,
        })
        .await
        .unwrap();
}

async fn create_key(admin: &mut As, project: &str, role: v1::Role) -> (String, String) {
    let created = admin
        .access
        .create_key(v1::CreateKeyRequest {
            project_id: project.into(),
            role: role as i32,
            name: format!("{project} {role:?}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (created.key.unwrap().id, created.secret)
}

async fn finished(client: &mut As, run_id: &str, within: Duration) -> v1::Run {
    let deadline = Instant::now() + within;
    loop {
        let run = client
            .runs
            .get_run(v1::GetRunRequest {
                run_id: run_id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        if run.status != v1::RunStatus::Queued as i32 && run.status != v1::RunStatus::Running as i32
        {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} did not finish within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    match result {
        Ok(value) => panic!("expected a refusal, got {value:?}"),
        Err(status) => status.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_roles_and_projects_scope_every_call_and_the_audit_log_keeps_score() {
    let cluster = keyed_cluster(|_| {}).await;
    let mock = cluster.mock.base_url();

    // No key, a made-up key, a malformed header: Unauthenticated.
    let mut nobody = as_key(&cluster, None).await;
    let status = nobody
        .runs
        .list_runs(v1::ListRunsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("Bearer"), "{}", status.message());
    let mut forged = as_key(
        &cluster,
        Some("gk_live_bootstrap000_0123456789abcdefghijABCDEFGHIJ012345678X"),
    )
    .await;
    assert_eq!(
        code(forged.runs.list_runs(v1::ListRunsRequest::default()).await),
        Code::Unauthenticated
    );

    // The operator makes two projects and their keys.
    let mut boot = as_key(&cluster, Some(BOOT)).await;
    create_project(&mut boot, "team-a", v1::Quotas::default()).await;
    create_project(&mut boot, "team-b", v1::Quotas::default()).await;
    let (_, a_admin) = create_key(&mut boot, "team-a", v1::Role::Admin).await;
    let (a_member_id, a_member) = create_key(&mut boot, "team-a", v1::Role::Member).await;
    let (_, a_viewer) = create_key(&mut boot, "team-a", v1::Role::Viewer).await;
    let (b_member_id, b_member) = create_key(&mut boot, "team-b", v1::Role::Member).await;
    let mut a_admin = as_key(&cluster, Some(&a_admin)).await;
    let mut a = as_key(&cluster, Some(&a_member)).await;
    let mut a_viewer = as_key(&cluster, Some(&a_viewer)).await;
    let mut b = as_key(&cluster, Some(&b_member)).await;

    // Only operators make projects; a project admin's keys stay in it.
    assert_eq!(
        code(
            a_admin
                .access
                .create_project(v1::CreateProjectRequest {
                    id: "team-c".into(),
                    ..Default::default()
                })
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(
            a_admin
                .access
                .create_key(v1::CreateKeyRequest {
                    project_id: "team-b".into(),
                    role: v1::Role::Admin as i32,
                    ..Default::default()
                })
                .await
        ),
        Code::NotFound
    );

    // A viewer reads but may not submit; members may not manage keys.
    let denied = submit(&mut a_viewer, &mock, 2, 1).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("member"), "{}", denied.message());
    assert_eq!(
        code(a.access.list_keys(v1::ListKeysRequest::default()).await),
        Code::PermissionDenied
    );

    let run_a = submit(&mut a, &mock, 3, 1).await.unwrap();
    let run_b = submit(&mut b, &mock, 2, 1).await.unwrap();
    assert_eq!(run_a.run.as_ref().unwrap().total_tasks, 3);
    finished(&mut a, &run_a.run_id, Duration::from_secs(60)).await;
    finished(&mut b, &run_b.run_id, Duration::from_secs(60)).await;
    let report_b = b
        .reports
        .create_report(v1::CreateReportRequest {
            run_id: run_b.run_id.clone(),
            format: v1::ReportFormat::Markdown as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // A's keys see only A's runs, and B's ids answer NotFound everywhere,
    // exactly as ids that do not exist.
    let listed = a_viewer
        .runs
        .list_runs(v1::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [run_a.run_id.as_str()]
    );
    let theirs = run_b.run_id.clone();
    let made_up = uuid::Uuid::now_v7().to_string();
    for id in [&theirs, &made_up] {
        let run_id = id.clone();
        let answers = [
            code(
                a.runs
                    .get_run(v1::GetRunRequest {
                        run_id: run_id.clone(),
                    })
                    .await,
            ),
            code(
                a.runs
                    .cancel_run(v1::CancelRunRequest {
                        run_id: run_id.clone(),
                    })
                    .await,
            ),
            code(
                a.runs
                    .watch_run(v1::WatchRunRequest {
                        run_id: run_id.clone(),
                    })
                    .await,
            ),
            code(
                a.runs
                    .list_results(v1::ListResultsRequest {
                        run_id: run_id.clone(),
                        ..Default::default()
                    })
                    .await,
            ),
            code(
                a.analytics
                    .get_run_summary(v1::GetRunSummaryRequest {
                        run_id: run_id.clone(),
                    })
                    .await,
            ),
            code(
                a.analytics
                    .compare_runs(v1::CompareRunsRequest {
                        run_a: run_a.run_id.clone(),
                        run_b: run_id.clone(),
                        ..Default::default()
                    })
                    .await,
            ),
            code(
                a.analytics
                    .detect_regressions(v1::DetectRegressionsRequest {
                        run_id: run_id.clone(),
                        ..Default::default()
                    })
                    .await,
            ),
            code(
                a.analytics
                    .get_insights(v1::GetInsightsRequest {
                        run_id: run_id.clone(),
                        ..Default::default()
                    })
                    .await,
            ),
            code(
                a.reports
                    .create_report(v1::CreateReportRequest {
                        run_id: run_id.clone(),
                        format: v1::ReportFormat::Json as i32,
                        ..Default::default()
                    })
                    .await,
            ),
        ];
        assert!(
            answers.iter().all(|c| *c == Code::NotFound),
            "{id}: {answers:?}"
        );
    }
    assert_eq!(
        code(
            a.reports
                .get_report(v1::GetReportRequest {
                    report_id: report_b.id.clone(),
                })
                .await
        ),
        Code::NotFound
    );
    let mut read = a
        .reports
        .read_report(v1::GetReportRequest {
            report_id: report_b.id.clone(),
        })
        .await;
    if let Ok(stream) = &mut read {
        // A stream that opened must fail at once.
        let first = stream.get_mut().next().await.unwrap();
        assert_eq!(first.unwrap_err().code(), Code::NotFound);
    } else {
        assert_eq!(read.unwrap_err().code(), Code::NotFound);
    }
    // Their own run is theirs to read.
    a.analytics
        .get_run_summary(v1::GetRunSummaryRequest {
            run_id: run_a.run_id.clone(),
        })
        .await
        .unwrap();

    // Keys: A's admin sees A's keys only and cannot revoke B's.
    let keys = a_admin
        .access
        .list_keys(v1::ListKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.project_id == "team-a"));
    assert_eq!(
        code(
            a_admin
                .access
                .revoke_key(v1::RevokeKeyRequest {
                    id: b_member_id.clone(),
                })
                .await
        ),
        Code::NotFound
    );

    // A revoked key stops working within auth.cache_secs (1 s here).
    a.runs
        .list_runs(v1::ListRunsRequest::default())
        .await
        .unwrap();
    a_admin
        .access
        .revoke_key(v1::RevokeKeyRequest {
            id: a_member_id.clone(),
        })
        .await
        .unwrap();
    let revoked = Instant::now();
    loop {
        match a.runs.list_runs(v1::ListRunsRequest::default()).await {
            Err(s) if s.code() == Code::Unauthenticated => break,
            Err(s) => panic!("{s:?}"),
            Ok(_) => {
                assert!(
                    revoked.elapsed() < Duration::from_millis(2_500),
                    "a revoked key still works after {:?}",
                    revoked.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!("revoked key refused after {:?}", revoked.elapsed());

    // An expiring key works, then does not.
    let short = boot
        .access
        .create_key(v1::CreateKeyRequest {
            project_id: "team-a".into(),
            role: v1::Role::Viewer as i32,
            ttl_secs: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut short = as_key(&cluster, Some(&short.secret)).await;
    short
        .runs
        .list_runs(v1::ListRunsRequest::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(
        code(short.runs.list_runs(v1::ListRunsRequest::default()).await),
        Code::Unauthenticated
    );

    // The audit log: A's submissions and denials, the revocation; none of
    // B's. Written in the background: wait for the last one.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = a_admin
            .access
            .list_audit_events(v1::ListAuditEventsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .events;
        if events
            .iter()
            .any(|e| e.method.ends_with("/RevokeKey") && e.outcome == "ok")
            || Instant::now() > deadline
        {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let has = |method: &str, outcome: &str, target: &str| {
        events.iter().any(|e| {
            e.method.ends_with(method)
                && e.outcome == outcome
                && (target.is_empty() || e.target == target)
        })
    };
    assert!(has("/SubmitRun", "ok", &run_a.run_id), "{events:#?}");
    assert!(has("/SubmitRun", "permission_denied", ""), "{events:#?}");
    assert!(has("/CancelRun", "not_found", &theirs), "{events:#?}");
    assert!(has("/RevokeKey", "ok", &a_member_id), "{events:#?}");
    assert!(has("/RevokeKey", "not_found", &b_member_id), "{events:#?}");
    assert!(
        events
            .iter()
            .all(|e| e.project_id == "team-a" && !e.peer.is_empty()),
        "{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.target == run_b.run_id && e.outcome == "ok"),
        "B's submission is not in A's log"
    );
    // Calls without a valid key are in the operators' log.
    let operators = boot
        .access
        .list_audit_events(v1::ListAuditEventsRequest {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        operators
            .iter()
            .any(|e| e.key_id.is_empty() && e.outcome == "unauthenticated"),
        "{operators:#?}"
    );
    // Newest first, paged by id.
    assert!(events.windows(2).all(|w| w[0].id > w[1].id));
    // Viewers do not read the log.
    assert_eq!(
        code(
            a_viewer
                .access
                .list_audit_events(v1::ListAuditEventsRequest::default())
                .await
        ),
        Code::PermissionDenied
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_stream_caps_and_quotas_refuse_before_anything_is_queued() {
    // A slow mock, so runs stay running while quotas are checked.
    let slow = MockServer::start(MockConfig {
        latency_ms: 300,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let cluster = keyed_cluster(|c| {
        c.auth.max_watch_streams = 1;
        c.auth.max_request_bytes = 4_000;
    })
    .await;
    let mut boot = as_key(&cluster, Some(BOOT)).await;
    create_project(
        &mut boot,
        "capped",
        v1::Quotas {
            max_concurrent_runs: Some(1),
            max_tasks_per_run: Some(10),
            max_tasks_per_day: Some(15),
            monthly_budget_usd: None,
        },
    )
    .await;
    let (_, key) = create_key(&mut boot, "capped", v1::Role::Member).await;
    let mut capped = as_key(&cluster, Some(&key)).await;
    let tasks_queued = || async {
        cluster
            .bus
            .queue_stats(QueueName::Tasks)
            .await
            .unwrap()
            .messages
    };

    // Past the per-run quota: refused, nothing stored, nothing queued.
    let refused = submit(&mut capped, &slow.base_url(), 11, 1)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("max_tasks_per_run of 10"),
        "{}",
        refused.message()
    );
    // Through the CLI, which streams the suite: refused before the run
    // opens, with the quota named.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.yaml"), suite(&slow.base_url(), 12)).unwrap();
    let out = gauntlet_env(
        &["run", "s.yaml", "--server", &cluster.stack.url()],
        dir.path(),
        &[("GAUNTLET_API_KEY", key.as_str())],
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("max_tasks_per_run of 10"), "{stderr}");
    assert_eq!(tasks_queued().await, 0);
    assert_eq!(slow.stats().requests, 0, "no task of a refused run ran");
    assert!(
        capped
            .runs
            .list_runs(v1::ListRunsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .runs
            .is_empty()
    );

    // One run at a time: a second is refused while the first runs.
    let first = submit(&mut capped, &slow.base_url(), 10, 1).await.unwrap();
    let second = submit(&mut capped, &slow.base_url(), 1, 1)
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::ResourceExhausted);
    assert!(
        second.message().contains("max_concurrent_runs is 1"),
        "{}",
        second.message()
    );

    // WatchRun: one stream a key here.
    let mut watching = capped
        .runs
        .watch_run(v1::WatchRunRequest {
            run_id: first.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let over = capped
        .runs
        .watch_run(v1::WatchRunRequest {
            run_id: first.run_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    assert!(
        over.message().contains("auth.max_watch_streams"),
        "{}",
        over.message()
    );
    while watching.next().await.is_some() {}
    drop(watching);
    finished(&mut capped, &first.run_id, Duration::from_secs(60)).await;
    // The stream ended: its slot is free again.
    let again = capped
        .runs
        .watch_run(v1::WatchRunRequest {
            run_id: first.run_id.clone(),
        })
        .await;
    assert!(again.is_ok(), "{:?}", again.err());

    // Per day: 10 used of 15, so 5 more, and 6 is too many.
    let day = submit(&mut capped, &slow.base_url(), 6, 1)
        .await
        .unwrap_err();
    assert_eq!(day.code(), Code::ResourceExhausted);
    assert!(
        day.message()
            .contains("max_tasks_per_day of 15 (5 left today)"),
        "{}",
        day.message()
    );

    // A member's request size cap (auth.max_request_bytes).
    let big = capped
        .runs
        .submit_run(v1::SubmitRunRequest {
            suite: format!("{}# {}\n", suite(&slow.base_url(), 1), "x".repeat(5_000)),
            format: v1::SuiteFormat::Yaml as i32,
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(big.code(), Code::InvalidArgument);
    assert!(
        big.message().contains("auth.max_request_bytes"),
        "{}",
        big.message()
    );
    // The same cap on the CLI's streamed submission: a suite of few tasks
    // but many bytes (long test descriptions) is refused, nothing queued.
    let mut wide = suite(&slow.base_url(), 0);
    for i in 0..3 {
        wide.push_str(&format!(
            "  - description: '{}'\n    vars:\n      n: {i}\n",
            "y".repeat(2_000)
        ));
    }
    std::fs::write(dir.path().join("wide.yaml"), wide).unwrap();
    let out = gauntlet_env(
        &["run", "wide.yaml", "--server", &cluster.stack.url()],
        dir.path(),
        &[("GAUNTLET_API_KEY", key.as_str())],
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("auth.max_request_bytes"), "{stderr}");
    assert_eq!(tasks_queued().await, 0);

    // The monthly budget, against the estimate: a fraction of a cent left.
    boot.access
        .update_project(v1::UpdateProjectRequest {
            id: "capped".into(),
            quotas: Some(v1::Quotas {
                monthly_budget_usd: Some(0.000_001),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let queued_before = slow.stats().requests;
    let costly = submit(&mut capped, &slow.base_url(), 5, 1)
        .await
        .unwrap_err();
    assert_eq!(costly.code(), Code::ResourceExhausted);
    assert!(
        costly.message().contains("monthly_budget_usd"),
        "{}",
        costly.message()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(slow.stats().requests, queued_before);
    assert_eq!(tasks_queued().await, 0);

    // The per-key rate: 60 a minute is one a second, burst one.
    let rated = boot
        .access
        .create_key(v1::CreateKeyRequest {
            project_id: "capped".into(),
            role: v1::Role::Viewer as i32,
            rate_per_minute: 60,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut rated = as_key(&cluster, Some(&rated.secret)).await;
    let mut limited = None;
    for _ in 0..5 {
        if let Err(s) = rated.runs.list_runs(v1::ListRunsRequest::default()).await {
            limited = Some(s);
            break;
        }
    }
    let limited = limited.expect("the fifth call in a row is over one a second");
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let pushback: u64 = limited
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("retry information")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1_000).contains(&pushback), "{pushback}");
    tokio::time::sleep(Duration::from_millis(pushback + 50)).await;
    rated
        .runs
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect("allowed again after the pushback");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_run_of_one_project_is_not_starved_by_a_huge_run_of_another() {
    let mock = MockServer::start(MockConfig {
        latency_ms: 50,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    // A small run waits behind at most about one dispatch window of the
    // big run's tasks. This whole cluster is one debug-built process on
    // two cores here (a few hundred tasks a second), so the window is
    // sized to that; `gauntlet-bench load fair-share` measures the
    // released binaries with the default window (BENCHMARKS.md).
    let cluster = keyed_cluster(|c| {
        c.worker.max_in_flight = 256;
        c.worker.prefetch = 8;
        c.gateway.dispatch_window_tasks = 1_000;
    })
    .await;
    let mut boot = as_key(&cluster, Some(BOOT)).await;
    create_project(&mut boot, "big", v1::Quotas::default()).await;
    create_project(&mut boot, "small", v1::Quotas::default()).await;
    let (_, big) = create_key(&mut boot, "big", v1::Role::Member).await;
    let (_, small) = create_key(&mut boot, "small", v1::Role::Member).await;
    let mut big = as_key(&cluster, Some(&big)).await;
    let mut small = as_key(&cluster, Some(&small)).await;

    // 2,000 tests × 100 repeats: 200,000 tasks.
    let huge = submit(&mut big, &mock.base_url(), 2_000, 100)
        .await
        .unwrap();
    assert_eq!(huge.total_tasks, 200_000);
    // Let it fill the queue first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let tiny = submit(&mut small, &mock.base_url(), 200, 1).await.unwrap();
    let done = finished(&mut small, &tiny.run_id, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert_eq!(done.status, v1::RunStatus::Completed as i32);
    let huge_now = big
        .runs
        .get_run(v1::GetRunRequest {
            run_id: huge.run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    eprintln!(
        "200-task run of project small: {took:?}, while project big's 200,000-task run had {} done",
        huge_now.completed_tasks
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(
        huge_now.status,
        v1::RunStatus::Running as i32,
        "the huge run is still going"
    );
    big.runs
        .cancel_run(v1::CancelRunRequest {
            run_id: huge.run_id.clone(),
        })
        .await
        .unwrap();
    cluster.stop().await;
}

/// `gauntlet ARGS --server URL` with `key` as GAUNTLET_API_KEY: exit code,
/// stdout, stderr.
async fn cli(
    url: &str,
    dir: &std::path::Path,
    args: &[&str],
    key: Option<&str>,
) -> (Option<i32>, String, String) {
    let mut all = args.to_vec();
    all.extend(["--server", url]);
    let env: Vec<(&str, &str)> = key
        .map(|k| vec![("GAUNTLET_API_KEY", k)])
        .unwrap_or_default();
    let out = gauntlet_env(&all, dir, &env).await;
    let (stdout, stderr) = text(&out);
    (out.status.code(), stdout, stderr)
}

/// `gauntlet serve gateway` with nothing said about keys: locked. The CLI
/// then manages projects, keys and the audit log as a user would, and a
/// key it made works, and stops working once revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_gateway_is_locked_by_default_and_the_cli_manages_its_keys() {
    use crate::cli::{BIN, free_port, gauntlet_env};
    let db = gauntlet_store::testing::TestDatabase::create().await;
    let vhost = gauntlet_bus::testing::TestVhost::create().await;
    let port = free_port();
    let metrics = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let prefix = format!("gauntlet-test-{}", uuid::Uuid::new_v4().simple());
    let analytics = free_port();
    let _gateway = tokio::process::Command::new(BIN)
        .args(["serve", "gateway"])
        .env_remove("GAUNTLET_SERVER")
        .env("GAUNTLET_DATABASE__URL", &db.config.url)
        .env("GAUNTLET_AMQP__URL", &vhost.url)
        .env("GAUNTLET_REDIS__PREFIX", &prefix)
        .env("GAUNTLET_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "GAUNTLET_GATEWAY__METRICS_LISTEN",
            format!("127.0.0.1:{metrics}"),
        )
        .env("GAUNTLET_AUTH__BOOTSTRAP_KEY", BOOT)
        .env(
            "GAUNTLET_GATEWAY__ANALYTICS_URL",
            format!("http://127.0.0.1:{analytics}"),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // Up, as the operator sees it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while cli(&url, dir, &["runs"], Some(BOOT)).await.0 != Some(0) {
        assert!(Instant::now() < deadline, "the gateway did not come up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Without a key: one clear line, exit 1.
    let (code, _, stderr) = cli(&url, dir, &["runs"], None).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("needs an API key") && stderr.contains("GAUNTLET_API_KEY"),
        "{stderr}"
    );
    let (code, stdout, stderr) = cli(
        &url,
        dir,
        // README's command, with a weight.
        &[
            "projects",
            "create",
            "team-x",
            "--max-concurrent-runs",
            "2",
            "--max-tasks-per-day",
            "1000000",
            "--monthly-budget-usd",
            "200",
            "--weight",
            "3",
        ],
        Some(BOOT),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("project team-x"), "{stdout}");
    assert!(stdout.contains("concurrent runs      0 of 2"), "{stdout}");
    assert!(stdout.contains("weight               3"), "{stdout}");
    assert!(
        stdout.contains("tasks, last 24 h     0 of 1000000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cost this month      $0.0000 of $200.00"),
        "{stdout}"
    );
    let (code, key, stderr) = cli(
        &url,
        dir,
        &[
            "keys",
            "create",
            "--project",
            "team-x",
            "--role",
            "admin",
            "--name",
            "lead",
        ],
        Some(BOOT),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let key = key.trim().to_string();
    assert!(key.starts_with("gk_live_"), "{key}");
    assert!(stderr.contains("admin of project team-x"), "{stderr}");
    let id = key["gk_live_".len().."gk_live_".len() + 12].to_string();
    // The project's admin makes its own keys (README: a member's, for 90
    // days), shows the project and sets its quotas; those not given are
    // lifted.
    let (code, member, stderr) = cli(
        &url,
        dir,
        &[
            "keys", "create", "--role", "member", "--ttl", "90d", "--name", "ci",
        ],
        Some(&key),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    let member = member.trim().to_string();
    assert!(
        stderr.contains("member of project team-x, expires"),
        "{stderr}"
    );
    let (code, stdout, stderr) = cli(&url, dir, &["projects", "show"], Some(&key)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("project team-x") && stdout.contains("0 of 2"),
        "{stdout}"
    );
    let (code, stdout, stderr) = cli(
        &url,
        dir,
        &["projects", "set", "--max-concurrent-runs", "7"],
        Some(&key),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("concurrent runs      0 of 7"), "{stdout}");
    assert!(
        stdout.contains("tasks, last 24 h     0 of none"),
        "{stdout}"
    );
    // The member runs a suite at batch priority (README), through a worker.
    let mock = gauntlet_mockllm::MockServer::start(Default::default())
        .await
        .unwrap();
    let _worker = tokio::process::Command::new(BIN)
        .args(["serve", "worker"])
        .env("GAUNTLET_DATABASE__URL", &db.config.url)
        .env("GAUNTLET_AMQP__URL", &vhost.url)
        .env("GAUNTLET_REDIS__PREFIX", &prefix)
        .env(
            "GAUNTLET_WORKER__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("GAUNTLET_WORKER__METRICS_LISTEN", "")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _analytics = tokio::process::Command::new(BIN)
        .args(["serve", "analytics"])
        .env("GAUNTLET_DATABASE__URL", &db.config.url)
        .env("GAUNTLET_REDIS__PREFIX", &prefix)
        .env(
            "GAUNTLET_ANALYTICS__LISTEN",
            format!("127.0.0.1:{analytics}"),
        )
        .env("GAUNTLET_ANALYTICS__METRICS_LISTEN", "")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    std::fs::write(dir.join("nightly.yaml"), suite(&mock.base_url(), 3)).unwrap();
    let (code, stdout, stderr) = cli(
        &url,
        dir,
        &["run", "nightly.yaml", "--priority", "batch"],
        Some(&member),
    )
    .await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let store = gauntlet_store::PgStore::connect(&db.config).await.unwrap();
    let runs = gauntlet_store::Store::list_runs(&store, "team-x", 10, None)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, gauntlet_store::RunStatus::Completed);
    assert_eq!(runs[0].completed_tasks, 3);
    assert_eq!(
        runs[0].options["priority"], "batch",
        "the run's options keep its priority: {}",
        runs[0].options
    );
    // The metric ARCHITECTURE names for dropped audit events is served
    // from the start.
    let scraped = crate::cli::scrape(metrics).await;
    assert!(
        scraped
            .lines()
            .any(|l| l.starts_with("gauntlet_audit_events_dropped_total") && l.ends_with(" 0")),
        "{scraped}"
    );
    let (code, stdout, _) = cli(&url, dir, &["keys", "list"], Some(&key)).await;
    assert_eq!(code, Some(0));
    assert!(stdout.contains(&id) && stdout.contains("lead"), "{stdout}");
    assert!(!stdout.contains(&key[25..]), "secrets are never listed");
    let (code, stdout, _) = cli(&url, dir, &["projects", "list"], Some(&key)).await;
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("team-x") && !stdout.contains("default"),
        "{stdout}"
    );
    // Their audit log has their own key's creation? No: that was the
    // operator's call, in the operator's project. Theirs shows their
    // refused call.
    let (code, _, stderr) = cli(&url, dir, &["dlq", "list"], Some(&key)).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("operator"), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, stdout, stderr) = cli(&url, dir, &["audit", "--json"], Some(&key)).await;
        assert_eq!(code, Some(0), "{stderr}");
        if stdout.contains("ListDeadLetters") {
            let line = stdout
                .lines()
                .find(|l| l.contains("ListDeadLetters"))
                .unwrap();
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["outcome"], "permission_denied");
            assert_eq!(event["key"], id.as_str());
            assert_eq!(event["project"], "team-x");
            break;
        }
        assert!(Instant::now() < deadline, "no audit event: {stdout}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, stdout, stderr) = cli(&url, dir, &["keys", "revoke", &id], Some(BOOT)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("revoked key {id}")), "{stdout}");
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (code, _, stderr) = cli(&url, dir, &["runs"], Some(&key)).await;
        if code == Some(1) {
            assert!(stderr.contains("not valid"), "{stderr}");
            break;
        }
        assert!(Instant::now() < deadline, "revoked key still works");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A key generated offline has the shape the gateway takes.
    let out = gauntlet_env(&["keys", "generate"], dir, &[]).await;
    let generated = text(&out).0.trim().to_string();
    assert!(
        generated.starts_with("gk_live_") && generated.len() == "gk_live_".len() + 12 + 1 + 40,
        "{generated}"
    );
}

/// `gauntlet up` beyond loopback without keys: refused unless --insecure.
#[tokio::test]
async fn up_beyond_loopback_needs_keys_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::cli::free_port();
    let listen = format!("0.0.0.0:{port}");
    let out = gauntlet_env(
        &["up"],
        dir.path(),
        &[
            ("GAUNTLET_GATEWAY__LISTEN", listen.as_str()),
            ("GAUNTLET_AUTH__ENABLED", "false"),
        ],
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
    // Keys on but none to start with (a new SQLite database): refused too.
    let out = gauntlet_env(
        &["up"],
        dir.path(),
        &[("GAUNTLET_GATEWAY__LISTEN", listen.as_str())],
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("auth.bootstrap_key"), "{stderr}");
}
