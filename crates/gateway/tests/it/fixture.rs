//! A store and a bus, runs created straight in the store with their batches
//! on the queue, and a stand-in worker that stores, drops or dead-letters
//! the batches it takes.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use gauntlet_bus::{Bus, Delivery, DeliveryStream, MemoryBus, Message, QueueName};
use gauntlet_config::GauntletConfig;
use gauntlet_gateway::Deps;
use gauntlet_proto::internal::v1::TaskBatch;
use gauntlet_store::{NewResult, NewRun, RunRecord, SqliteStore, Store};
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

pub struct Env {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
}

impl Env {
    pub async fn new() -> Self {
        Self {
            store: Arc::new(SqliteStore::in_memory().await.unwrap()),
            bus: Arc::new(MemoryBus::new(2)),
        }
    }

    pub fn deps(&self) -> Deps {
        Deps {
            store: self.store.clone(),
            bus: self.bus.clone(),
        }
    }

    /// A run of `total` tasks with its batches of `batch` tasks queued, as
    /// SubmitRun leaves it.
    pub async fn submit(&self, total: u64, batch: u64) -> RunRecord {
        let run = self
            .store
            .create_run(NewRun {
                trace_id: String::new(),
                id: Uuid::now_v7(),
                project_id: "default".into(),
                description: "stuck".into(),
                label: String::new(),
                source: String::new(),
                compiled: serde_json::to_string(&gauntlet_core::suite::Suite::default()).unwrap(),
                options: serde_json::json!({"repeat": 1}),
                total_tasks: total as i64,
            })
            .await
            .unwrap();
        let messages = (0..total)
            .step_by(batch as usize)
            .map(|first| Message {
                payload: TaskBatch {
                    run_id: run.id.to_string(),
                    project_id: "default".into(),
                    first_task: first,
                    count: (total - first).min(batch) as u32,
                    ..TaskBatch::default()
                }
                .encode_to_vec(),
                headers: vec![],
            })
            .collect();
        self.bus.publish(QueueName::Tasks, messages).await.unwrap();
        run
    }

    pub async fn run(&self, id: Uuid) -> RunRecord {
        self.store.get_run(id).await.unwrap().unwrap()
    }

    pub async fn dead(&self) -> u64 {
        self.bus
            .dead_letter_stats(QueueName::Tasks)
            .await
            .unwrap()
            .messages
    }

    pub async fn ready(&self) -> u64 {
        self.bus
            .queue_stats(QueueName::Tasks)
            .await
            .unwrap()
            .messages
    }

    /// Takes the next `n` batches and does to each what `fate` says.
    pub async fn work(&self, n: usize, fate: impl Fn(&TaskBatch) -> Fate) -> Vec<Taken> {
        let mut stream = self.bus.consume(QueueName::Tasks, 1).await.unwrap();
        let mut taken = Vec::new();
        for _ in 0..n {
            let delivery = next(&mut stream).await;
            let batch = TaskBatch::decode(delivery.payload.as_slice()).unwrap();
            taken.push(Taken {
                batch: batch.clone(),
                redelivered: delivery.redelivered,
                delivery_count: delivery.delivery_count,
                redrives: delivery
                    .header(gauntlet_bus::REDRIVES_HEADER)
                    .map(str::to_string),
            });
            match fate(&batch) {
                Fate::Store => {
                    self.store_tasks(
                        &batch,
                        batch.first_task..batch.first_task + u64::from(batch.count),
                    )
                    .await;
                    delivery.ack().await.unwrap();
                }
                Fate::StoreOnly(tasks) => {
                    self.store_tasks(&batch, tasks).await;
                    delivery.ack().await.unwrap();
                }
                Fate::Drop => delivery.ack().await.unwrap(),
                Fate::DeadLetter => delivery.dead_letter().await.unwrap(),
            }
        }
        taken
    }

    async fn store_tasks(&self, batch: &TaskBatch, tasks: std::ops::Range<u64>) {
        let run_id = Uuid::parse_str(&batch.run_id).unwrap();
        let rows: Vec<NewResult> = tasks.map(|t| result(t as i64)).collect();
        self.store.insert_results(run_id, &rows).await.unwrap();
    }
}

/// A gateway on a loopback port over `env`'s store and bus, with the
/// reconciler off so the queues stay as the test leaves them; it stops when
/// the token is cancelled.
pub async fn serve(env: &Env) -> (Channel, CancellationToken) {
    serve_with(env, |_| {}).await
}

/// [`serve`], with `configure` applied to its configuration.
pub async fn serve_with(
    env: &Env,
    configure: impl FnOnce(&mut GauntletConfig),
) -> (Channel, CancellationToken) {
    let mut config = GauntletConfig::default();
    config.reconcile.enabled = false;
    config.auth.enabled = false;
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(gauntlet_gateway::run(
        config,
        env.deps(),
        listener,
        shutdown.clone(),
    ));
    let endpoint = tonic::transport::Endpoint::from_shared(url).unwrap();
    for _ in 0..50 {
        if let Ok(channel) = endpoint.connect().await {
            return (channel, shutdown);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not come up");
}

/// What the stand-in worker does with a batch.
pub enum Fate {
    /// Stores a result for each of its tasks and acks it.
    Store,
    /// Stores results for these tasks only, and acks it (a bug loses the rest).
    StoreOnly(std::ops::Range<u64>),
    /// Acks it without storing anything (lost).
    Drop,
    /// Gives up on it.
    DeadLetter,
}

/// A batch as the stand-in worker received it.
#[derive(Debug, Clone)]
pub struct Taken {
    pub batch: TaskBatch,
    pub redelivered: bool,
    pub delivery_count: u32,
    pub redrives: Option<String>,
}

impl Taken {
    pub fn range(&self) -> (u64, u32) {
        (self.batch.first_task, self.batch.count)
    }
}

async fn next(stream: &mut DeliveryStream) -> Delivery {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a batch in time")
        .expect("stream open")
        .expect("delivery ok")
}

pub fn result(task: i64) -> NewResult {
    gauntlet_store::testing::passing_result(task)
}

/// Every stored task index of the run, in order.
pub async fn stored(store: &dyn Store, run_id: Uuid) -> Vec<i64> {
    store
        .list_results(run_id, None, None, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.result.task_index)
        .collect()
}
