//! Store records to API messages, shared by the services that return them.

use crate::tests::TestHead;
use chrono::{DateTime, Utc};
use gauntlet_core::suite::Suite;
use gauntlet_proto::{Timestamp, v1};
use gauntlet_store::{ResultRecord, ResultStatus, RunRecord, RunStatus};

pub fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

pub fn run_status(s: RunStatus) -> v1::RunStatus {
    match s {
        RunStatus::Queued => v1::RunStatus::Queued,
        RunStatus::Running => v1::RunStatus::Running,
        RunStatus::Completed => v1::RunStatus::Completed,
        RunStatus::Cancelled => v1::RunStatus::Cancelled,
        RunStatus::Failed => v1::RunStatus::Failed,
        RunStatus::CostLimited => v1::RunStatus::CostLimited,
    }
}

pub fn result_status(s: ResultStatus) -> v1::ResultStatus {
    match s {
        ResultStatus::Pass => v1::ResultStatus::Pass,
        ResultStatus::Fail => v1::ResultStatus::Fail,
        ResultStatus::Error => v1::ResultStatus::Error,
    }
}

pub fn run(r: &RunRecord) -> v1::Run {
    v1::Run {
        id: r.id.to_string(),
        project_id: r.project_id.clone(),
        description: r.description.clone(),
        status: run_status(r.status) as i32,
        // 0: not known yet, while the suite's tests are still arriving.
        total_tasks: if r.is_uploading() {
            0
        } else {
            r.total_tasks as u64
        },
        completed_tasks: r.completed_tasks as u64,
        passed: r.passed as u64,
        failed: r.failed as u64,
        errors: r.errors as u64,
        cost_usd: r.cost_usd,
        label: r.label.clone(),
        created_at: Some(timestamp(r.created_at)),
        finished_at: r.finished_at.map(timestamp),
        status_reason: r.status_reason.clone(),
        trace_id: r.trace_id.clone(),
    }
}

/// Marks the current span as work on `run` (`gauntlet.run_id`) and, when
/// it is not in the run's trace, links it to the run's submission, so a
/// report or a summary asked for later leads back to the run's trace.
pub fn link_to_run(run: &RunRecord) {
    gauntlet_telemetry::set_attribute("gauntlet.run_id", run.id.to_string());
    if let Some(traceparent) = run.options.get("traceparent").and_then(|v| v.as_str()) {
        gauntlet_telemetry::propagation::link_current_to(traceparent);
    }
}

pub fn progress(r: &RunRecord) -> v1::RunProgress {
    v1::RunProgress {
        run_id: r.id.to_string(),
        status: run_status(r.status) as i32,
        // 0: not known yet, while the suite's tests are still arriving.
        total_tasks: if r.is_uploading() {
            0
        } else {
            r.total_tasks as u64
        },
        completed_tasks: r.completed_tasks as u64,
        passed: r.passed as u64,
        failed: r.failed as u64,
        errors: r.errors as u64,
        at: Some(timestamp(Utc::now())),
        status_reason: r.status_reason.clone(),
    }
}

/// Whether a progress message reports a run that has ended.
pub fn is_terminal(p: &v1::RunProgress) -> bool {
    v1::RunStatus::is_terminal_value(p.status)
}

/// Routing key of a run's events on the topic exchange.
pub fn event_key(run_id: &str, finished: bool) -> String {
    format!(
        "run.{run_id}.{}",
        if finished { "finished" } else { "progress" }
    )
}

/// A stored result as the API returns it; the prompt label comes from the
/// run's suite, vars and description from its `test` (see [`crate::tests`]).
pub fn result(r: &ResultRecord, suite: &Suite, test: Option<&TestHead>) -> v1::Result {
    let x = &r.result;
    let assertions = x
        .assertions
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|a| v1::AssertionResult {
                    r#type: a["type"].as_str().unwrap_or_default().to_string(),
                    pass: a["pass"].as_bool().unwrap_or(false),
                    score: a["score"].as_f64().unwrap_or(0.0),
                    reason: a["reason"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    v1::Result {
        run_id: r.run_id.to_string(),
        task_index: x.task_index as u64,
        test_index: x.test_index as u32,
        prompt_index: x.prompt_index as u32,
        provider_index: x.provider_index as u32,
        repeat_index: x.repeat_index as u32,
        provider_id: x.provider_id.clone(),
        prompt_label: suite
            .prompts
            .get(x.prompt_index as usize)
            .map(|p| p.label.clone())
            .unwrap_or_default(),
        vars_json: test
            .map(|t| serde_json::to_string(&t.vars).unwrap_or_default())
            .unwrap_or_default(),
        test_description: test.and_then(|t| t.description.clone()).unwrap_or_default(),
        rendered_prompt: x.rendered_prompt.clone(),
        output: x.output.clone(),
        status: result_status(x.status) as i32,
        score: x.score,
        reason: x.reason.clone(),
        assertions,
        latency_ms: x.latency_ms as u32,
        tokens_in: x.tokens_in as u32,
        tokens_out: x.tokens_out as u32,
        cost_usd: x.cost_usd,
        cached: x.cached,
        error: x.error.clone(),
        trace_id: x.trace_id.clone(),
    }
}
