//! SubmitRun: validate, store, expand into task batches, publish with
//! confirms. Nothing is stored for a suite that fails validation.

use gauntlet_bus::{Message, QueueName};
use gauntlet_core::{
    parse::{SuiteFormat, parse_suite},
    suite::Suite,
};
use gauntlet_proto::{internal::v1::TaskBatch, v1};
use gauntlet_providers::{ProviderError, ProviderFactory};
use gauntlet_service::{convert, internal, invalid};
use gauntlet_store::NewRun;
use prost::Message as _;
use tonic::Status;
use tracing::{info, warn};
use uuid::Uuid;

use crate::{DEFAULT_PROJECT, Deps, estimate::estimate};

/// Most repeats a run may ask for.
const MAX_REPEAT: u32 = 1000;
/// Most tasks one run may expand into.
const MAX_TASKS: u64 = 10_000_000;
/// Messages per publish call, so a huge run does not hold one giant batch of
/// unconfirmed publishes.
const PUBLISH_CHUNK: usize = 500;

/// Parses and validates the suite text of a request.
pub fn validate(
    req: &v1::SubmitRunRequest,
    max_bytes: usize,
    providers: &ProviderFactory,
) -> Result<Suite, Status> {
    if req.suite.trim().is_empty() {
        return Err(invalid("suite", "is empty"));
    }
    if req.suite.len() > max_bytes {
        return Err(invalid(
            "suite",
            format!(
                "is {} bytes, more than the limit of {max_bytes}",
                req.suite.len()
            ),
        ));
    }
    let format = match v1::SuiteFormat::try_from(req.format) {
        Ok(v1::SuiteFormat::Yaml) => SuiteFormat::Yaml,
        Ok(v1::SuiteFormat::Json) => SuiteFormat::Json,
        Ok(v1::SuiteFormat::Unspecified) => SuiteFormat::Auto,
        Err(_) => return Err(invalid("format", format!("unknown value {}", req.format))),
    };
    let suite =
        parse_suite(&req.suite, format).map_err(|e| Status::invalid_argument(e.to_string()))?;
    // An id no worker could serve is the client's mistake. Other build errors
    // (a key missing here) may be fine where the workers run.
    for (i, p) in suite.providers.iter().enumerate() {
        if let Err(e @ ProviderError::Unsupported(_)) = providers.build(&p.id, &p.config) {
            return Err(invalid(&format!("providers[{i}].id"), e));
        }
    }
    Ok(suite)
}

pub async fn submit(
    deps: &Deps,
    providers: &ProviderFactory,
    batch_size: u32,
    max_bytes: usize,
    req: v1::SubmitRunRequest,
) -> Result<v1::SubmitRunResponse, Status> {
    let suite = validate(&req, max_bytes, providers)?;
    let options = req.options.unwrap_or_default();
    let repeat = if options.repeat == 0 {
        1
    } else {
        options.repeat
    };
    if repeat > MAX_REPEAT {
        return Err(invalid(
            "options.repeat",
            format!("{repeat} is more than {MAX_REPEAT}"),
        ));
    }
    let max_cost = options.max_cost_usd;
    if !max_cost.is_finite() || max_cost < 0.0 {
        return Err(invalid(
            "options.max_cost_usd",
            format!("{max_cost} is not a non-negative amount of US dollars"),
        ));
    }
    let total = suite.task_count(repeat);
    if total == 0 {
        return Err(invalid("suite", "expands into no tasks"));
    }
    if total > MAX_TASKS {
        return Err(invalid(
            "suite",
            format!("expands into {total} tasks, more than {MAX_TASKS}"),
        ));
    }

    let estimate = estimate(&suite, repeat);
    let run_id = Uuid::now_v7();
    let compiled = serde_json::to_string(&suite)
        .map_err(|e| internal("encode suite", anyhow::Error::from(e)))?;
    let run = deps
        .store
        .create_run(NewRun {
            id: run_id,
            project_id: DEFAULT_PROJECT.into(),
            description: suite.description.clone().unwrap_or_default(),
            label: options.label.clone(),
            source: req.suite,
            compiled,
            options: serde_json::json!({
                "repeat": repeat,
                "max_concurrency": options.max_concurrency,
                "no_cache": options.no_cache,
                // Read by workers, which stop the run once its results cost this much.
                "max_cost_usd": (max_cost > 0.0).then_some(max_cost),
                "estimated_cost_usd": estimate.cost_usd,
            }),
            total_tasks: total as i64,
        })
        .await
        .map_err(|e| internal("create run", e))?;

    let headers = gauntlet_telemetry::propagation::inject_current();
    let batch_size = u64::from(batch_size.max(1));
    let messages: Vec<Message> = (0..total)
        .step_by(batch_size as usize)
        .map(|first| Message {
            payload: TaskBatch {
                run_id: run_id.to_string(),
                project_id: DEFAULT_PROJECT.into(),
                first_task: first,
                count: (total - first).min(batch_size) as u32,
            }
            .encode_to_vec(),
            headers: headers.clone(),
        })
        .collect();
    let batches = messages.len();
    for chunk in messages.chunks(PUBLISH_CHUNK) {
        if let Err(e) = deps.bus.publish(QueueName::Tasks, chunk.to_vec()).await {
            // The run is stored but cannot be fed: end it visibly rather than
            // leave it queued forever.
            warn!(run_id = %run_id, error = %e, "publishing tasks failed, failing run");
            let _ = deps.store.fail_run(run_id).await;
            return Err(internal("publish tasks", e));
        }
    }
    info!(
        run_id = %run_id,
        tasks = total,
        batches,
        estimated_cost_usd = estimate.cost_usd,
        "run submitted"
    );
    Ok(v1::SubmitRunResponse {
        run_id: run_id.to_string(),
        total_tasks: total,
        run: Some(convert::run(&run)),
        estimated_tokens_in: estimate.tokens_in,
        estimated_tokens_out: estimate.tokens_out,
        estimated_cost_usd: estimate.cost_usd,
        unpriced_providers: estimate.unpriced,
    })
}
