//! Where the monitor keeps its alerts and reads the recent runs its quality
//! rules compare: the store itself in embedded mode ([`StoreBook`]), and as
//! a service analytics' `gauntlet.internal.v1.Records` ([`RemoteBook`]), so
//! the monitor holds no database credentials.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gauntlet_proto::internal::v1::{
    DeleteAlertRequest, RecentRunRow, RecentRunsRequest, RecordsPing, RunRef,
    records_client::RecordsClient,
};
use gauntlet_service::records::{alert_query, alert_record, alert_row, time};
use gauntlet_store::{AlertQuery, AlertRecord, RunRecord, RunStatus, Store};
use tonic::{Status, transport::Channel};
use uuid::Uuid;

/// A run, as the quality rules need it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentRun {
    pub id: Uuid,
    pub project_id: String,
    pub description: String,
    pub completed: bool,
    pub created_at: DateTime<Utc>,
}

impl From<&RunRecord> for RecentRun {
    fn from(r: &RunRecord) -> Self {
        Self {
            id: r.id,
            project_id: r.project_id.clone(),
            description: r.description.clone(),
            completed: r.status == RunStatus::Completed,
            created_at: r.created_at,
        }
    }
}

#[async_trait]
pub trait Book: Send + Sync + 'static {
    async fn put_alert(&self, alert: &AlertRecord) -> anyhow::Result<()>;
    async fn delete_alert(&self, id: Uuid) -> anyhow::Result<()>;
    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, Status>;
    /// The newest `limit` runs of every project.
    async fn recent_runs(&self, limit: u32) -> anyhow::Result<Vec<RecentRun>>;
    /// The completed run of `run`'s project and suite before it.
    async fn previous_completed_run(&self, run: &RecentRun) -> anyhow::Result<Option<RecentRun>>;
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), String>;
    /// The database, as health checks name it.
    fn backend(&self) -> String;
}

/// The store itself (embedded mode).
pub struct StoreBook(pub Arc<dyn Store>);

#[async_trait]
impl Book for StoreBook {
    async fn put_alert(&self, alert: &AlertRecord) -> anyhow::Result<()> {
        Ok(self.0.put_alert(alert).await?)
    }

    async fn delete_alert(&self, id: Uuid) -> anyhow::Result<()> {
        Ok(self.0.delete_alert(id).await?)
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, Status> {
        self.0
            .list_alerts(query)
            .await
            .map_err(|e| gauntlet_service::internal("list alerts", e))
    }

    async fn recent_runs(&self, limit: u32) -> anyhow::Result<Vec<RecentRun>> {
        let mut out = Vec::new();
        for project in self.0.list_projects().await? {
            out.extend(
                self.0
                    .list_runs(&project.id, limit, None)
                    .await?
                    .iter()
                    .map(RecentRun::from),
            );
        }
        Ok(out)
    }

    async fn previous_completed_run(&self, run: &RecentRun) -> anyhow::Result<Option<RecentRun>> {
        let Some(record) = self.0.get_run(run.id).await? else {
            return Ok(None);
        };
        Ok(self
            .0
            .previous_completed_run(&record)
            .await?
            .as_ref()
            .map(RecentRun::from))
    }

    async fn ping(&self) -> Result<(), String> {
        self.0.ping().await.map_err(|e| e.to_string())
    }

    fn backend(&self) -> String {
        self.0.backend().into()
    }
}

/// Analytics' Records service (the monitor as a service).
pub struct RemoteBook {
    client: RecordsClient<Channel>,
    /// What analytics said its database is, at the last ping.
    backend: Mutex<String>,
}

impl RemoteBook {
    pub fn new(client: RecordsClient<Channel>) -> Self {
        Self {
            client,
            backend: Mutex::new("postgres".into()),
        }
    }
}

fn run_of(row: RecentRunRow) -> anyhow::Result<RecentRun> {
    Ok(RecentRun {
        id: Uuid::parse_str(&row.id)?,
        completed: row.status == RunStatus::Completed.as_str(),
        created_at: time("created_at", row.created_at.as_ref())?
            .ok_or_else(|| anyhow::anyhow!("a run without its creation time"))?,
        project_id: row.project_id,
        description: row.description,
    })
}

#[async_trait]
impl Book for RemoteBook {
    async fn put_alert(&self, alert: &AlertRecord) -> anyhow::Result<()> {
        self.client.clone().put_alert(alert_row(alert)).await?;
        Ok(())
    }

    async fn delete_alert(&self, id: Uuid) -> anyhow::Result<()> {
        self.client
            .clone()
            .delete_alert(DeleteAlertRequest { id: id.to_string() })
            .await?;
        Ok(())
    }

    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, Status> {
        let rows = self
            .client
            .clone()
            .list_alerts(alert_query(query))
            .await
            .map_err(|s| gauntlet_service::internal("list alerts", s))?
            .into_inner();
        rows.alerts.into_iter().map(alert_record).collect()
    }

    async fn recent_runs(&self, limit: u32) -> anyhow::Result<Vec<RecentRun>> {
        let rows = self
            .client
            .clone()
            .recent_runs(RecentRunsRequest { limit })
            .await?
            .into_inner();
        rows.runs.into_iter().map(run_of).collect()
    }

    async fn previous_completed_run(&self, run: &RecentRun) -> anyhow::Result<Option<RecentRun>> {
        let rows = self
            .client
            .clone()
            .previous_completed_run(RunRef {
                run_id: run.id.to_string(),
            })
            .await?
            .into_inner();
        rows.runs.into_iter().next().map(run_of).transpose()
    }

    async fn ping(&self) -> Result<(), String> {
        let pong = self
            .client
            .clone()
            .ping(RecordsPing {})
            .await
            .map_err(|s| format!("through analytics: {}", s.message()))?
            .into_inner();
        *self.backend.lock().unwrap_or_else(PoisonError::into_inner) = pong.backend;
        Ok(())
    }

    fn backend(&self) -> String {
        self.backend
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
