//! SubmitRun: validate, store, expand into task batches, publish with
//! confirms. Nothing is stored for a suite that fails validation.

use gauntlet_bus::{Message, QueueName};
use gauntlet_core::{
    parse::{SuiteFormat, parse_normalized, parse_suite},
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

/// A suite larger than `max_bytes` is refused before it is read: `field`
/// names where the size came from.
pub fn check_size(field: &str, bytes: u64, max_bytes: usize) -> Result<(), Status> {
    if bytes > max_bytes as u64 {
        return Err(invalid(
            field,
            format!(
                "is {bytes} bytes, more than the limit of {max_bytes} (gateway.max_suite_bytes)"
            ),
        ));
    }
    Ok(())
}

/// Parses and validates the suite text of a request.
pub fn validate(
    suite: &str,
    format: i32,
    max_bytes: usize,
    providers: &ProviderFactory,
) -> Result<Suite, Status> {
    if suite.trim().is_empty() {
        return Err(invalid("suite", "is empty"));
    }
    check_size("suite", suite.len() as u64, max_bytes)?;
    let parsed = match v1::SuiteFormat::try_from(format) {
        Ok(v1::SuiteFormat::Yaml) => parse_suite(suite, SuiteFormat::Yaml),
        Ok(v1::SuiteFormat::Json) => parse_suite(suite, SuiteFormat::Json),
        Ok(v1::SuiteFormat::Unspecified) => parse_suite(suite, SuiteFormat::Auto),
        Ok(v1::SuiteFormat::NormalizedJson) => parse_normalized(suite),
        Err(_) => return Err(invalid("format", format!("unknown value {format}"))),
    };
    let suite = parsed.map_err(|e| Status::invalid_argument(e.to_string()))?;
    // An id no worker could serve is the client's mistake. Other build errors
    // (a key missing here) may be fine where the workers run.
    for (i, p) in suite.providers.iter().enumerate() {
        if let Err(e @ ProviderError::Unsupported(_)) = providers.build(&p.id, &p.config) {
            return Err(invalid(&format!("providers[{i}].id"), e));
        }
    }
    Ok(suite)
}

/// Reads a `SubmitRunStream` into the request it stands for. The declared
/// size is checked against `max_bytes` before anything is buffered, and the
/// chunks must add up to exactly that size.
pub async fn read_stream(
    mut stream: tonic::Streaming<v1::SubmitRunChunk>,
    max_bytes: usize,
) -> Result<v1::SubmitRunRequest, Status> {
    use v1::submit_run_chunk::Part;
    let header = match stream.message().await? {
        Some(v1::SubmitRunChunk {
            part: Some(Part::Header(header)),
        }) => header,
        Some(_) => return Err(invalid("header", "the first message must be the header")),
        None => return Err(invalid("header", "the stream is empty")),
    };
    check_size("header.suite_bytes", header.suite_bytes, max_bytes)?;
    let declared = header.suite_bytes as usize;
    let mut text = Vec::with_capacity(declared);
    while let Some(chunk) = stream.message().await? {
        match chunk.part {
            Some(Part::Data(data)) => {
                if text.len() + data.len() > declared {
                    return Err(invalid(
                        "data",
                        format!(
                            "the chunks are longer than the {declared} bytes the header declares"
                        ),
                    ));
                }
                text.extend_from_slice(&data);
            }
            Some(Part::Header(_)) => return Err(invalid("header", "sent more than once")),
            None => {}
        }
    }
    if text.len() != declared {
        return Err(invalid(
            "data",
            format!(
                "the chunks add up to {} bytes, not the {declared} the header declares",
                text.len()
            ),
        ));
    }
    let suite = String::from_utf8(text).map_err(|e| {
        invalid(
            "data",
            format!(
                "the suite is not UTF-8 (at byte {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })?;
    Ok(v1::SubmitRunRequest {
        suite,
        format: header.format,
        options: header.options,
    })
}

pub async fn submit(
    deps: &Deps,
    providers: &ProviderFactory,
    batch_size: u32,
    max_bytes: usize,
    req: v1::SubmitRunRequest,
) -> Result<v1::SubmitRunResponse, Status> {
    let suite = validate(&req.suite, req.format, max_bytes, providers)?;
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
            source: if req.format == v1::SuiteFormat::NormalizedJson as i32 {
                String::new()
            } else {
                req.suite
            },
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
                ..TaskBatch::default()
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
            let _ = deps
                .store
                .fail_run(run_id, "its tasks could not be queued")
                .await;
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
