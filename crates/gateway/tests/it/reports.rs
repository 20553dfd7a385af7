//! `CreateReport` renders a finished run's report once per format: asked
//! again, it answers the report it made; a run still going gets a new
//! (partial) report each time.

use gauntlet_bus::QueueName;
use gauntlet_proto::v1::{self, report_service_client::ReportServiceClient};
use tonic::transport::Channel;

use crate::fixture::{Env, Fate, serve};

async fn create(
    reports: &mut ReportServiceClient<Channel>,
    run: &str,
    format: v1::ReportFormat,
) -> String {
    reports
        .create_report(v1::CreateReportRequest {
            run_id: run.into(),
            format: format as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

async fn queued(env: &Env) -> u64 {
    env.bus
        .queue_stats(QueueName::Reports)
        .await
        .unwrap()
        .messages
}

#[tokio::test]
async fn a_finished_run_is_rendered_once_per_format_and_a_live_one_each_time() {
    let env = Env::new().await;
    let (channel, shutdown) = serve(&env).await;
    let _stop = shutdown.drop_guard();
    let mut reports = ReportServiceClient::new(channel);
    let run = env.submit(4, 2).await;
    let id = run.id.to_string();

    // Going: two requests, two reports, two jobs.
    env.work(1, |_| Fate::Store).await;
    let (a, b) = (
        create(&mut reports, &id, v1::ReportFormat::Markdown).await,
        create(&mut reports, &id, v1::ReportFormat::Markdown).await,
    );
    assert_ne!(a, b);
    assert_eq!(queued(&env).await, 2);

    // Finished: the first request after its end makes one, the next
    // answer it again without a job.
    env.work(1, |_| Fate::Store).await;
    let first = create(&mut reports, &id, v1::ReportFormat::Markdown).await;
    assert!(![&a, &b].contains(&&first));
    assert_eq!(
        create(&mut reports, &id, v1::ReportFormat::Markdown).await,
        first
    );
    assert_eq!(queued(&env).await, 3);
    // Another format is another report.
    let json = create(&mut reports, &id, v1::ReportFormat::Json).await;
    assert_ne!(json, first);
    assert_eq!(queued(&env).await, 4);
}

#[tokio::test]
async fn a_rollup_takes_up_to_100_runs_and_names_a_bad_one() {
    let env = Env::new().await;
    let (channel, shutdown) = serve(&env).await;
    let _stop = shutdown.drop_guard();
    let mut reports = ReportServiceClient::new(channel);
    let run = env.submit(2, 1).await.id.to_string();
    let rollup = |others: Vec<String>| v1::CreateReportRequest {
        run_id: run.clone(),
        format: v1::ReportFormat::Markdown as i32,
        kind: v1::ReportKind::Rollup as i32,
        runs: others,
        ..Default::default()
    };
    // 100 runs in all (the same one again is allowed): queued.
    let made = reports
        .create_report(rollup(vec![run.clone(); 99]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(made.kind, v1::ReportKind::Rollup as i32);
    assert_eq!(queued(&env).await, 1);
    // 101: refused, nothing queued.
    let status = reports
        .create_report(rollup(vec![run.clone(); 100]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "runs: at most 100 runs in a roll-up");
    // A run that does not exist is named.
    let unknown = uuid::Uuid::now_v7().to_string();
    let status = reports
        .create_report(rollup(vec![run.clone(), unknown.clone()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert!(status.message().contains(&unknown), "{}", status.message());
    let status = reports
        .create_report(rollup(vec!["not-an-id".into()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("runs[0]:"),
        "{}",
        status.message()
    );
    assert_eq!(queued(&env).await, 1);
}

#[tokio::test]
async fn an_unknown_run_or_report_is_not_found_and_nothing_is_queued() {
    let env = Env::new().await;
    let (channel, shutdown) = serve(&env).await;
    let _stop = shutdown.drop_guard();
    let mut reports = ReportServiceClient::new(channel);
    let unknown = uuid::Uuid::now_v7().to_string();
    for kind in [
        v1::ReportKind::Run,
        v1::ReportKind::Comparison,
        v1::ReportKind::Rollup,
    ] {
        let status = reports
            .create_report(v1::CreateReportRequest {
                run_id: unknown.clone(),
                format: v1::ReportFormat::Html as i32,
                kind: kind as i32,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{kind:?}: {status:?}");
        assert!(status.message().contains(&unknown), "{}", status.message());
    }
    for rpc in ["get", "read"] {
        let request = v1::GetReportRequest {
            report_id: unknown.clone(),
        };
        let status = match rpc {
            "get" => reports.get_report(request).await.map(drop).unwrap_err(),
            _ => reports.read_report(request).await.map(drop).unwrap_err(),
        };
        assert_eq!(status.code(), tonic::Code::NotFound, "{rpc}: {status:?}");
    }
    let status = reports
        .create_report(v1::CreateReportRequest {
            run_id: "nope".into(),
            format: v1::ReportFormat::Html as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().starts_with("run_id:"),
        "{}",
        status.message()
    );
    assert_eq!(queued(&env).await, 0);
}
