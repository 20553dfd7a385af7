//! Bottlenecks and what to do about them, read off the scraped metrics:
//! - the task queue grows faster than the workers drain it;
//! - a provider throttles (a share of its calls get 429) or fails;
//! - a service's database pool is saturated or slow to hand out connections;
//! - a gRPC service answers slowly.

use std::{collections::BTreeMap, time::Instant};

use gauntlet_proto::v1;

use crate::{
    history::History,
    rules::{Expr, evaluate},
};

/// Names [`find`] reads (kept in the history whatever the rules read).
pub const METRICS: &[&str] = &[
    "gauntlet_queue_messages",
    "gauntlet_queue_consumers",
    "gauntlet_batches_processed_total",
    "gauntlet_worker_batches_in_flight",
    "gauntlet_worker_batch_capacity",
    "gauntlet_provider_requests_total",
    "gauntlet_db_pool_connections",
    "gauntlet_db_pool_max_connections",
    "gauntlet_db_pool_acquire_duration_seconds",
    "gauntlet_grpc_server_request_duration_seconds",
];

fn expr(yaml: &str) -> Expr {
    serde_yaml_ng::from_str(yaml).expect("the findings' expressions are valid")
}

/// The one value of an ungrouped expression.
fn one(history: &History, now: Instant, yaml: &str) -> Option<f64> {
    evaluate(&expr(yaml), history, now).into_values().next()
}

fn finding(
    kind: &str,
    severity: v1::AlertSeverity,
    summary: String,
    action: String,
    metrics: &[(&str, f64)],
) -> v1::Finding {
    v1::Finding {
        kind: kind.into(),
        summary,
        action,
        metrics: metrics
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect(),
        severity: severity as i32,
    }
}

fn pct(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

/// What limits the fleet now, worst first.
pub fn find(history: &History, now: Instant) -> Vec<v1::Finding> {
    let mut out = Vec::new();
    workers(history, now, &mut out);
    providers(history, now, &mut out);
    database(history, now, &mut out);
    grpc(history, now, &mut out);
    out.sort_by_key(|f| std::cmp::Reverse(f.severity));
    out
}

fn workers(history: &History, now: Instant, out: &mut Vec<v1::Finding>) {
    let queued = one(
        history,
        now,
        "{metric: gauntlet_queue_messages, match: {queue: gauntlet.tasks}, over: last, window: 1m}",
    );
    let Some(queued) = queued else { return };
    let workers = one(
        history,
        now,
        "{metric: gauntlet_queue_consumers, match: {queue: gauntlet.tasks}, over: last, window: 1m}",
    )
    .unwrap_or(0.0);
    if workers == 0.0 {
        if queued > 0.0 {
            out.push(finding(
                "workers",
                v1::AlertSeverity::Critical,
                format!("{queued} task batches wait and no worker consumes gauntlet.tasks"),
                "start workers (gauntlet serve worker, or scale the worker Deployment up)".into(),
                &[("queue_messages", queued), ("workers", 0.0)],
            ));
        }
        return;
    }
    // Batches per second: arriving (growth plus drain) against drained.
    let growth = one(
        history,
        now,
        "{metric: gauntlet_queue_messages, match: {queue: gauntlet.tasks}, over: delta, window: 2m}",
    )
    .unwrap_or(0.0);
    let span = 120.0;
    let drain = one(
        history,
        now,
        "{metric: gauntlet_batches_processed_total, over: rate, window: 2m}",
    )
    .unwrap_or(0.0);
    let saturation = one(
        history,
        now,
        "{metric: gauntlet_worker_batches_in_flight, over: avg, window: 2m, \
         divide_by: {metric: gauntlet_worker_batch_capacity, over: last, window: 2m}}",
    )
    .unwrap_or(0.0);
    let growth_per_sec = growth / span;
    if growth_per_sec > 0.0 && queued > 0.0 && saturation >= 0.9 {
        let needed = if drain > 0.0 {
            (workers * (drain + growth_per_sec) / drain).ceil()
        } else {
            workers + 1.0
        };
        out.push(finding(
            "workers",
            v1::AlertSeverity::Warning,
            format!(
                "the task queue grows faster than workers drain it: +{growth_per_sec:.2} \
                 batches/s with {workers} workers draining {drain:.2}/s at {} of capacity",
                pct(saturation)
            ),
            format!("scale workers to {needed}"),
            &[
                ("queue_messages", queued),
                ("queue_growth_per_second", growth_per_sec),
                ("drained_per_second", drain),
                ("workers", workers),
                ("worker_saturation", saturation),
                ("workers_needed", needed),
            ],
        ));
    }
}

fn providers(history: &History, now: Instant, out: &mut Vec<v1::Finding>) {
    let calls = evaluate(
        &expr(
            "{metric: gauntlet_provider_requests_total, over: increase, window: 5m, by: [provider]}",
        ),
        history,
        now,
    );
    let of = |outcome: &str| {
        evaluate(
            &expr(&format!(
                "{{metric: gauntlet_provider_requests_total, match: {{outcome: {outcome}}}, \
                 over: increase, window: 5m, by: [provider]}}"
            )),
            history,
            now,
        )
    };
    let (limited, failed) = (of("rate_limited"), of("error"));
    for (group, total) in calls {
        if total < 10.0 {
            continue;
        }
        let provider = group.get("provider").cloned().unwrap_or_default();
        let throttled = limited.get(&group).copied().unwrap_or(0.0) / total;
        let errors = failed.get(&group).copied().unwrap_or(0.0) / total;
        let metrics = [
            ("calls_5m", total),
            ("rate_limited_share", throttled),
            ("error_share", errors),
        ];
        if throttled >= 0.1 {
            out.push(finding(
                "provider",
                v1::AlertSeverity::Warning,
                format!(
                    "provider {provider} is throttling: {} of its last {total} calls got 429",
                    pct(throttled)
                ),
                format!(
                    "lower {provider}'s concurrency (maxConcurrency) or raise its RPM \
                     (requestsPerMinute) to what the key allows"
                ),
                &metrics,
            ));
        }
        if errors >= 0.1 {
            out.push(finding(
                "provider",
                v1::AlertSeverity::Warning,
                format!("provider {provider} fails {} of its calls", pct(errors)),
                format!("check {provider}'s status and the worker logs for its errors"),
                &metrics,
            ));
        }
    }
}

fn database(history: &History, now: Instant, out: &mut Vec<v1::Finding>) {
    let used = evaluate(
        &expr(
            "{metric: gauntlet_db_pool_connections, match: {state: in_use}, over: avg, window: 2m, \
             by: [service], divide_by: {metric: gauntlet_db_pool_max_connections, over: last, window: 2m}}",
        ),
        history,
        now,
    );
    let waits = evaluate(
        &expr(
            "{metric: gauntlet_db_pool_acquire_duration_seconds, quantile: 0.95, window: 5m, by: [service]}",
        ),
        history,
        now,
    );
    for (group, share) in used {
        let wait = waits.get(&group).copied().unwrap_or(0.0);
        if share >= 0.9 || wait >= 0.1 {
            let service = group.get("service").cloned().unwrap_or_default();
            out.push(finding(
                "database",
                v1::AlertSeverity::Warning,
                format!(
                    "the DB pool of {service} is saturated: {} of its connections in use, \
                     {:.0} ms to get one (p95)",
                    pct(share),
                    wait * 1000.0
                ),
                "raise database.pool_size (GAUNTLET_DATABASE__POOL_SIZE), within what Postgres' \
                 max_connections allows for every replica"
                    .into(),
                &[("pool_in_use_share", share), ("acquire_p95_seconds", wait)],
            ));
        }
    }
}

fn grpc(history: &History, now: Instant, out: &mut Vec<v1::Finding>) {
    let p95 = evaluate(
        &expr(
            "{metric: gauntlet_grpc_server_request_duration_seconds, quantile: 0.95, window: 5m, \
             by: [service, grpc_service]}",
        ),
        history,
        now,
    );
    for (group, seconds) in p95 {
        if seconds >= 1.0 {
            let service = group.get("grpc_service").cloned().unwrap_or_default();
            out.push(finding(
                "grpc",
                v1::AlertSeverity::Warning,
                format!("{service} answers slowly: p95 {seconds:.2} s over 5 minutes"),
                "see GetBottlenecks' other findings (database, workers) and the service's traces"
                    .into(),
                &[("p95_seconds", seconds)],
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, time::Duration};

    use gauntlet_telemetry::metrics::parse;

    use super::*;

    #[test]
    fn a_growing_queue_with_saturated_workers_recommends_more_workers() {
        let wanted: HashSet<String> = METRICS.iter().map(|s| s.to_string()).collect();
        let mut h = History::new(Duration::from_secs(600), wanted);
        let start = Instant::now();
        // Two workers at capacity drain 1 batch/s while 2/s arrive.
        for i in 0..13u64 {
            let text = format!(
                "gauntlet_queue_messages{{queue=\"gauntlet.tasks\"}} {}\n\
                 gauntlet_queue_consumers{{queue=\"gauntlet.tasks\"}} 2\n\
                 gauntlet_batches_processed_total {}\n\
                 gauntlet_worker_batches_in_flight 16\ngauntlet_worker_batch_capacity 16\n\
                 gauntlet_provider_requests_total{{provider=\"openai\",outcome=\"ok\"}} {}\n\
                 gauntlet_provider_requests_total{{provider=\"openai\",outcome=\"rate_limited\"}} {}\n",
                200 + i * 10,
                i * 10,
                i * 20,
                i * 10,
            );
            h.ingest("w", start + Duration::from_secs(i * 10), parse(&text));
        }
        let now = start + Duration::from_secs(120);
        let found = find(&h, now);
        let workers = found.iter().find(|f| f.kind == "workers").unwrap();
        // Arriving 2/s (1 growth + 1 drained) against 1/s drained: twice the workers.
        assert_eq!(workers.action, "scale workers to 4", "{workers:?}");
        assert_eq!(workers.metrics["workers_needed"], 4.0);
        let provider = found.iter().find(|f| f.kind == "provider").unwrap();
        assert!(provider.summary.contains("33 %"), "{provider:?}");
        assert!(provider.action.contains("requestsPerMinute"));
    }
}
