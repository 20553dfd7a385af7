//! `gauntlet.internal.v1.Records`: the alerts and recent runs the monitor
//! keeps and reads through analytics (the monitor holds no database
//! credentials), and the one encoding of an alert on that wire, used by
//! both ends.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use gauntlet_proto::{
    Timestamp,
    internal::v1::{
        AlertRow, AlertRows, DeleteAlertRequest, ListAlertRowsRequest, RecentRunRow, RecentRunRows,
        RecentRunsRequest, RecordsAck, RecordsPing, RecordsPong, RunRef, records_server,
    },
};
use gauntlet_store::{AlertQuery, AlertRecord, AlertState, Store};
use tonic::{Request, Response, Status};

use crate::{convert::timestamp, internal, invalid, parse_id};

/// Projects × runs each that `RecentRuns` answers at most.
const MAX_RECENT: u32 = 1_000;

/// A time on the wire back to a time.
pub fn time(field: &str, t: Option<&Timestamp>) -> Result<Option<DateTime<Utc>>, Status> {
    t.map(|t| {
        DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
            .ok_or_else(|| invalid(field, format!("{}s is not a time", t.seconds)))
    })
    .transpose()
}

pub fn alert_row(a: &AlertRecord) -> AlertRow {
    AlertRow {
        id: a.id.to_string(),
        rule: a.rule.clone(),
        fingerprint: a.fingerprint.clone(),
        severity: a.severity.clone(),
        state: a.state.as_str().into(),
        labels: a.labels.clone().into_iter().collect(),
        value: a.value,
        threshold: a.threshold,
        summary: a.summary.clone(),
        started_at: Some(timestamp(a.started_at)),
        fired_at: a.fired_at.map(timestamp),
        resolved_at: a.resolved_at.map(timestamp),
        updated_at: Some(timestamp(a.updated_at)),
    }
}

pub fn alert_record(row: AlertRow) -> Result<AlertRecord, Status> {
    let required =
        |field: &str, t: Option<DateTime<Utc>>| t.ok_or_else(|| invalid(field, "is required"));
    Ok(AlertRecord {
        id: parse_id("id", &row.id)?,
        state: AlertState::parse(&row.state)
            .ok_or_else(|| invalid("state", format!("`{}` is not an alert state", row.state)))?,
        started_at: required("started_at", time("started_at", row.started_at.as_ref())?)?,
        fired_at: time("fired_at", row.fired_at.as_ref())?,
        resolved_at: time("resolved_at", row.resolved_at.as_ref())?,
        updated_at: required("updated_at", time("updated_at", row.updated_at.as_ref())?)?,
        rule: row.rule,
        fingerprint: row.fingerprint,
        severity: row.severity,
        labels: row.labels.into_iter().collect(),
        value: row.value,
        threshold: row.threshold,
        summary: row.summary,
    })
}

pub fn alert_query(q: &AlertQuery) -> ListAlertRowsRequest {
    ListAlertRowsRequest {
        active_only: q.active_only,
        severity: q.severity.clone().unwrap_or_default(),
        rule: q.rule.clone().unwrap_or_default(),
        limit: q.limit,
        before_started_at: q.before.map(|(at, _)| timestamp(at)),
        before_id: q.before.map(|(_, id)| id.to_string()).unwrap_or_default(),
    }
}

fn query_of(r: &ListAlertRowsRequest) -> Result<AlertQuery, Status> {
    let before = match time("before_started_at", r.before_started_at.as_ref())? {
        Some(at) => Some((at, parse_id("before_id", &r.before_id)?)),
        None => None,
    };
    Ok(AlertQuery {
        active_only: r.active_only,
        severity: (!r.severity.is_empty()).then(|| r.severity.clone()),
        rule: (!r.rule.is_empty()).then(|| r.rule.clone()),
        limit: r.limit,
        before,
    })
}

fn run_row(r: &gauntlet_store::RunRecord) -> RecentRunRow {
    RecentRunRow {
        id: r.id.to_string(),
        project_id: r.project_id.clone(),
        description: r.description.clone(),
        status: r.status.as_str().into(),
        created_at: Some(timestamp(r.created_at)),
    }
}

/// The Records service over a store (analytics serves it).
pub struct RecordsApi {
    store: Arc<dyn Store>,
}

impl RecordsApi {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl records_server::Records for RecordsApi {
    async fn put_alert(&self, request: Request<AlertRow>) -> Result<Response<RecordsAck>, Status> {
        let alert = alert_record(request.into_inner())?;
        self.store
            .put_alert(&alert)
            .await
            .map_err(|e| internal("put alert", e))?;
        Ok(Response::new(RecordsAck {}))
    }

    async fn delete_alert(
        &self,
        request: Request<DeleteAlertRequest>,
    ) -> Result<Response<RecordsAck>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        self.store
            .delete_alert(id)
            .await
            .map_err(|e| internal("delete alert", e))?;
        Ok(Response::new(RecordsAck {}))
    }

    async fn list_alerts(
        &self,
        request: Request<ListAlertRowsRequest>,
    ) -> Result<Response<AlertRows>, Status> {
        let query = query_of(request.get_ref())?;
        let alerts = self
            .store
            .list_alerts(&query)
            .await
            .map_err(|e| internal("list alerts", e))?;
        Ok(Response::new(AlertRows {
            alerts: alerts.iter().map(alert_row).collect(),
        }))
    }

    async fn recent_runs(
        &self,
        request: Request<RecentRunsRequest>,
    ) -> Result<Response<RecentRunRows>, Status> {
        let limit = request.get_ref().limit.clamp(1, MAX_RECENT);
        let projects = self
            .store
            .list_projects()
            .await
            .map_err(|e| internal("list projects", e))?;
        let mut runs = Vec::new();
        for project in projects {
            let listed = self
                .store
                .list_runs(&project.id, limit, None)
                .await
                .map_err(|e| internal("list runs", e))?;
            runs.extend(listed.iter().map(run_row));
        }
        Ok(Response::new(RecentRunRows { runs }))
    }

    async fn previous_completed_run(
        &self,
        request: Request<RunRef>,
    ) -> Result<Response<RecentRunRows>, Status> {
        let id = parse_id("run_id", &request.get_ref().run_id)?;
        let run = crate::existing_run(self.store.as_ref(), id).await?;
        let previous = self
            .store
            .previous_completed_run(&run)
            .await
            .map_err(|e| internal("previous completed run", e))?;
        Ok(Response::new(RecentRunRows {
            runs: previous.iter().map(run_row).collect(),
        }))
    }

    async fn ping(&self, _request: Request<RecordsPing>) -> Result<Response<RecordsPong>, Status> {
        self.store
            .ping()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(RecordsPong {
            backend: self.store.backend().into(),
        }))
    }
}
