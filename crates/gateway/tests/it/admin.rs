//! `gauntlet.v1.AdminService` over gRPC: a gateway on a loopback port over
//! the embedded backends, with the reconciler off so the dead letters stay
//! where the test put them.

use gauntlet_proto::v1::{self, admin_service_client::AdminServiceClient};
use gauntlet_store::RunStatus;
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};

use crate::fixture::{Env, Fate, serve, stored};

struct Gateway {
    env: Env,
    admin: AdminServiceClient<Channel>,
    shutdown: CancellationToken,
}

impl Gateway {
    async fn start() -> Self {
        let env = Env::new().await;
        let (channel, shutdown) = serve(&env).await;
        Self {
            env,
            admin: AdminServiceClient::new(channel),
            shutdown,
        }
    }

    async fn list(
        &self,
        run_id: &str,
        limit: u32,
    ) -> Result<v1::ListDeadLettersResponse, tonic::Status> {
        self.admin
            .clone()
            .list_dead_letters(v1::ListDeadLettersRequest {
                run_id: run_id.into(),
                limit,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn redrive(
        &self,
        run_id: &str,
        all: bool,
    ) -> Result<v1::RedriveDeadLettersResponse, tonic::Status> {
        self.admin
            .clone()
            .redrive_dead_letters(v1::RedriveDeadLettersRequest {
                run_id: run_id.into(),
                all,
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn assert_invalid(status: tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "names {field}: {status:?}"
    );
}

#[tokio::test]
async fn dead_letters_are_listed_with_their_run_tasks_and_reason() {
    let gw = Gateway::start().await;
    let run = gw.env.submit(25, 10).await;
    gw.env
        .work(3, |b| {
            if b.first_task == 0 {
                Fate::Store
            } else {
                Fate::DeadLetter
            }
        })
        .await;
    let other = gw.env.submit(5, 10).await;
    gw.env.work(1, |_| Fate::DeadLetter).await;

    let all = gw.list("", 0).await.unwrap();
    assert_eq!(all.total, 3);
    let seen: Vec<(String, u64, u32)> = all
        .dead_letters
        .iter()
        .map(|d| (d.run_id.clone(), d.first_task, d.task_count))
        .collect();
    assert_eq!(
        seen,
        [
            (run.id.to_string(), 10, 10),
            (run.id.to_string(), 20, 5),
            (other.id.to_string(), 0, 5)
        ]
    );
    for d in &all.dead_letters {
        assert_eq!(d.reason, "rejected");
        assert_eq!(d.delivery_count, 1);
        assert_eq!(d.redrives, 0);
        assert!(d.dead_lettered_at.is_some());
    }
    assert_eq!(
        all.dead_letters[0].run_status,
        v1::RunStatus::Running as i32
    );
    assert_eq!(all.dead_letters[2].run_status, v1::RunStatus::Queued as i32);

    let mine = gw.list(&other.id.to_string(), 0).await.unwrap();
    assert_eq!(mine.dead_letters.len(), 1);
    assert_eq!(mine.total, 3);
    assert_eq!(gw.list("", 1).await.unwrap().dead_letters.len(), 1);
    // Listing moves nothing.
    assert_eq!(gw.env.dead().await, 3);

    assert_invalid(gw.list("nope", 0).await.unwrap_err(), "run_id");
    assert_invalid(gw.list("", 1_000_000).await.unwrap_err(), "limit");
}

#[tokio::test]
async fn redrive_puts_one_runs_batches_back_or_all_of_them() {
    let gw = Gateway::start().await;
    let run = gw.env.submit(20, 10).await;
    gw.env.work(2, |_| Fate::DeadLetter).await;
    let other = gw.env.submit(10, 10).await;
    gw.env.work(1, |_| Fate::DeadLetter).await;

    let one = gw.redrive(&run.id.to_string(), false).await.unwrap();
    assert_eq!((one.redriven, one.tasks), (2, 20));
    assert_eq!(one.run_ids, [run.id.to_string()]);
    assert_eq!(gw.env.dead().await, 1);
    let taken = gw.env.work(2, |_| Fate::Store).await;
    assert!(taken.iter().all(|t| t.delivery_count == 0 && t.redelivered));
    assert_eq!(gw.env.run(run.id).await.status, RunStatus::Completed);
    assert_eq!(
        stored(&*gw.env.store, run.id).await,
        (0..20).collect::<Vec<_>>()
    );

    let rest = gw.redrive("", true).await.unwrap();
    assert_eq!((rest.redriven, rest.tasks), (1, 10));
    assert_eq!(rest.run_ids, [other.id.to_string()]);
    assert_eq!(gw.env.dead().await, 0);
    assert_eq!(gw.env.ready().await, 1);
    // Nothing left: nothing to do.
    let none = gw.redrive("", true).await.unwrap();
    assert_eq!(none.redriven, 0);
}

#[tokio::test]
async fn redrive_refuses_what_it_cannot_do_naming_the_field() {
    let gw = Gateway::start().await;
    let run = gw.env.submit(10, 10).await;
    gw.env.work(1, |_| Fate::DeadLetter).await;

    assert_invalid(gw.redrive("", false).await.unwrap_err(), "run_id");
    assert_invalid(
        gw.redrive(&run.id.to_string(), true).await.unwrap_err(),
        "all",
    );
    assert_invalid(gw.redrive("not-a-run", false).await.unwrap_err(), "run_id");
    let unknown = gw
        .redrive(&uuid::Uuid::now_v7().to_string(), false)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");

    gw.env.store.cancel_run(run.id).await.unwrap();
    let ended = gw.redrive(&run.id.to_string(), false).await.unwrap_err();
    assert_eq!(ended.code(), Code::FailedPrecondition, "{ended:?}");
    assert!(ended.message().contains("cancelled"), "{ended:?}");
    // Refusals move nothing.
    assert_eq!(gw.env.dead().await, 1);
}
