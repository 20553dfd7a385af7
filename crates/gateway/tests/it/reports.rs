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
