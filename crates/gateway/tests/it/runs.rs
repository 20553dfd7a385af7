//! `gauntlet.v1.RunService` reads follow a run to its end: what the gateway
//! keeps in memory of completed runs is never a page of a run still going.

use gauntlet_proto::v1::{self, run_service_client::RunServiceClient};
use tonic::transport::Channel;

use crate::fixture::{Env, Fate, serve};

async fn get(runs: &mut RunServiceClient<Channel>, id: &str) -> v1::Run {
    runs.get_run(v1::GetRunRequest { run_id: id.into() })
        .await
        .unwrap()
        .into_inner()
}

/// The task indexes of one page of results, and its next page token.
async fn page(runs: &mut RunServiceClient<Channel>, id: &str, token: &str) -> (Vec<u64>, String) {
    let page = runs
        .list_results(v1::ListResultsRequest {
            run_id: id.into(),
            page_size: 3,
            page_token: token.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    (
        page.results.iter().map(|r| r.task_index).collect(),
        page.next_page_token,
    )
}

#[tokio::test]
async fn reads_of_a_run_show_each_result_as_it_lands_and_stay_the_same_once_it_completed() {
    let env = Env::new().await;
    let (channel, shutdown) = serve(&env).await;
    let _stop = shutdown.drop_guard();
    let mut runs = RunServiceClient::new(channel);
    let run = env.submit(6, 2).await;
    let id = run.id.to_string();

    assert_eq!(get(&mut runs, &id).await.completed_tasks, 0);
    assert_eq!(page(&mut runs, &id, "").await, (vec![], String::new()));

    env.work(1, |_| Fate::Store).await;
    let going = get(&mut runs, &id).await;
    assert_eq!(going.completed_tasks, 2);
    assert_eq!(going.status, v1::RunStatus::Running as i32);
    assert_eq!(page(&mut runs, &id, "").await, (vec![0, 1], String::new()));

    env.work(1, |_| Fate::Store).await;
    assert_eq!(get(&mut runs, &id).await.completed_tasks, 4);
    assert_eq!(page(&mut runs, &id, "").await, (vec![0, 1, 2], "2".into()));
    assert_eq!(page(&mut runs, &id, "2").await, (vec![3], String::new()));

    env.work(1, |_| Fate::Store).await;
    for _ in 0..3 {
        let done = get(&mut runs, &id).await;
        assert_eq!(done.status, v1::RunStatus::Completed as i32);
        assert_eq!((done.completed_tasks, done.passed), (6, 6));
        assert!(done.finished_at.is_some());
        assert_eq!(page(&mut runs, &id, "").await, (vec![0, 1, 2], "2".into()));
        assert_eq!(page(&mut runs, &id, "2").await, (vec![3, 4, 5], "5".into()));
        assert_eq!(page(&mut runs, &id, "5").await, (vec![], String::new()));
    }
    let unknown = runs
        .list_results(v1::ListResultsRequest {
            run_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound, "{unknown:?}");
}
