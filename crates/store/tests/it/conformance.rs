//! What every `Store` backend must do, written once and run against each
//! (quickwit's `metastore_test_suite!`): `conformance::postgres::*` on a
//! throwaway Postgres database, `conformance::sqlite::*` on a file in a
//! temporary directory.

use std::sync::Arc;

use gauntlet_store::{
    AlertQuery, AlertRecord, AlertState, AuditEvent, KeyRecord, NewReport, NewResult, NewRun,
    Outcome, PgStore, ProjectRecord, Quotas, RUN_REPORT, ReportOutcome, ReportReuse, ReportStatus,
    ResultStatus, Role, RunCursor, RunRecord, RunStatus, SqliteStore, Store, testing::TestDatabase,
};
use tempfile::TempDir;
use uuid::Uuid;

/// A store and whatever must outlive it.
struct Backend {
    store: Arc<dyn Store>,
    _database: Option<TestDatabase>,
    _dir: Option<TempDir>,
}

impl Backend {
    async fn postgres() -> Self {
        let db = TestDatabase::create().await;
        let store = PgStore::connect(&db.config).await.unwrap();
        Self {
            store: Arc::new(store),
            _database: Some(db),
            _dir: None,
        }
    }

    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("gauntlet.db"))
            .await
            .unwrap();
        Self {
            store: Arc::new(store),
            _database: None,
            _dir: Some(dir),
        }
    }
}

/// One `#[tokio::test]` per behaviour and backend, each on a fresh database.
macro_rules! conformance {
    ($($behaviour:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let backend = super::Backend::postgres().await;
                    super::$behaviour(backend.store.clone()).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $behaviour() {
                    let backend = super::Backend::sqlite().await;
                    super::$behaviour(backend.store.clone()).await;
                }
            )*
        }
    };
}

conformance!(
    a_created_run_reads_back_with_its_suite,
    unknown_ids_read_as_nothing,
    runs_list_newest_first_in_pages,
    redelivered_batch_inserts_nothing_and_leaves_the_run_alone,
    overlapping_batch_counts_only_its_new_rows,
    stored_tasks_name_exactly_the_stored_indexes_in_a_range,
    the_batch_bringing_the_last_task_completes_the_run,
    concurrent_overlapping_batches_count_each_task_once,
    a_batch_larger_than_one_statement_inserts_every_row,
    results_for_an_unknown_run_are_rejected,
    mark_running_moves_only_queued_runs,
    cancel_ends_only_unfinished_runs,
    fail_ends_only_unfinished_runs,
    late_results_do_not_revive_a_cancelled_run,
    run_cost_counts_only_rows_really_inserted,
    limit_ends_only_unfinished_runs_as_cost_limited,
    results_read_back_exactly_as_written,
    results_page_in_task_order_and_filter_by_status,
    result_metrics_cover_every_result_of_the_run,
    reports_move_from_pending_to_ready,
    the_report_answered_again_is_the_newest_unfailed_one_of_its_run_kind_and_format_since,
    reports_can_fail_with_an_error,
    a_report_stored_in_parts_reads_back_part_by_part,
    requests_at_the_same_moment_make_one_report,
    stale_runs_are_unfinished_runs_quiet_since_before,
    a_stored_result_makes_a_run_active_again,
    exactly_one_claim_of_a_redrive_wins,
    a_touched_run_is_active_again,
    missing_tasks_are_the_gaps_and_the_tail,
    suite_tests_read_back_by_range_and_are_stored_once,
    refused_and_orphaned_uploads_leave_no_tests,
    finishing_an_upload_sets_the_total_and_completes_a_run_already_done,
    outcomes_come_in_task_order_with_what_a_comparison_needs,
    a_rolled_up_run_reads_back_every_outcome_in_order,
    unrolled_runs_are_the_completed_ones_past_a_size_not_rolled_up_yet,
    outcomes_of_more_results_than_one_read_takes_come_whole_and_in_order,
    equal_tests_have_equal_digests_across_runs,
    assertion_metrics_count_each_type_metric_and_verdict,
    slowest_results_and_most_failed_tests,
    rollups_equal_the_results_after_concurrent_overlapping_batches,
    the_previous_and_the_latest_completed_runs_of_a_suite,
    trend_metrics_cover_the_completed_runs_of_a_suite_or_label_in_a_window,
    alerts_move_through_their_states_and_list_newest_first_by_filter,
    the_pool_reports_its_use,
    projects_keys_audit_events_and_usage,
);

pub(crate) fn new_run(total: i64) -> NewRun {
    NewRun {
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        id: Uuid::now_v7(),
        project_id: "default".into(),
        description: "demo".into(),
        label: "nightly".into(),
        source: "prompts: [hi]".into(),
        compiled: serde_json::json!({"prompts": ["hi"], "tests": [{"vars": {"n": 1.5}}]})
            .to_string(),
        options: serde_json::json!({"repeat": 1, "concurrency": 4}),
        total_tasks: total,
    }
}

pub(crate) fn result(task: i64, status: ResultStatus) -> NewResult {
    NewResult {
        trace_id: format!("{task:032x}"),
        task_index: task,
        project_id: "default".into(),
        test_index: task as i32,
        prompt_index: (task % 3) as i32,
        provider_index: (task % 2) as i32,
        repeat_index: 0,
        provider_id: "echo".into(),
        status,
        score: if status == ResultStatus::Pass {
            1.0
        } else {
            0.0
        },
        reason: "r".into(),
        rendered_prompt: format!("prompt {task}"),
        output: format!("out {task}"),
        assertions: serde_json::json!([{"type": "contains", "pass": true}]),
        latency_ms: 10 + task as i32,
        tokens_in: 3,
        tokens_out: 4,
        cost_usd: 0.001,
        cached: false,
        error: String::new(),
    }
}

/// Pass, fail, error, pass, … by task index.
pub(crate) fn cycling_status(task: i64) -> ResultStatus {
    match task % 3 {
        0 => ResultStatus::Pass,
        1 => ResultStatus::Fail,
        _ => ResultStatus::Error,
    }
}

pub(crate) fn counters(run: &RunRecord) -> (i64, i64, i64, i64) {
    (run.completed_tasks, run.passed, run.failed, run.errors)
}

async fn completed_run(store: &dyn Store) -> RunRecord {
    let run = store.create_run(new_run(1)).await.unwrap();
    let out = store
        .insert_results(run.id, &[result(0, ResultStatus::Pass)])
        .await
        .unwrap();
    assert_eq!(out.run.status, RunStatus::Completed);
    out.run
}

async fn a_created_run_reads_back_with_its_suite(store: Arc<dyn Store>) {
    let new = new_run(4);
    let run = store.create_run(new.clone()).await.unwrap();
    assert_eq!(run.id, new.id);
    assert_eq!(run.project_id, "default");
    assert_eq!(run.description, "demo");
    assert_eq!(run.label, "nightly");
    assert_eq!(run.options, new.options);
    assert_eq!(run.status, RunStatus::Queued);
    assert_eq!(run.total_tasks, 4);
    assert_eq!(counters(&run), (0, 0, 0, 0));
    assert_eq!((run.started_at, run.finished_at), (None, None));
    assert_eq!(run.status_reason, "");
    assert_eq!((run.redrives, run.redriven_at), (0, None));
    assert_eq!(run.active_at, run.created_at);

    assert_eq!(store.get_run(run.id).await.unwrap(), Some(run.clone()));
    let stored: serde_json::Value =
        serde_json::from_str(&store.get_suite(run.id).await.unwrap().unwrap()).unwrap();
    assert_eq!(
        stored,
        serde_json::from_str::<serde_json::Value>(&new.compiled).unwrap()
    );

    // Each run stores its own suite.
    let other = store.create_run(new_run(1)).await.unwrap();
    assert_ne!(other.suite_id, run.suite_id);

    // Several read at once, as they are; an unknown id reads as nothing.
    let mut both = store
        .get_runs(&[other.id, Uuid::now_v7(), run.id])
        .await
        .unwrap();
    both.sort_by_key(|r| r.id);
    assert_eq!(both, vec![run, other]);
    assert!(store.get_runs(&[]).await.unwrap().is_empty());
}

async fn unknown_ids_read_as_nothing(store: Arc<dyn Store>) {
    store.create_run(new_run(1)).await.unwrap();
    let unknown = Uuid::now_v7();
    assert_eq!(store.get_run(unknown).await.unwrap(), None);
    assert_eq!(store.get_suite(unknown).await.unwrap(), None);
    assert_eq!(store.get_report(unknown).await.unwrap(), None);
    assert_eq!(store.cancel_run(unknown).await.unwrap(), None);
    assert_eq!(store.fail_run(unknown, "lost").await.unwrap(), None);
    assert!(
        store
            .list_results(unknown, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(result_metrics(store.as_ref(), unknown).await.is_empty());
}

/// Every result's metrics, as the store hands them over one by one.
async fn result_metrics(store: &dyn Store, run_id: Uuid) -> Vec<gauntlet_store::ResultMetrics> {
    let mut out = Vec::new();
    store
        .for_each_result_metrics(run_id, &mut |m| out.push(m))
        .await
        .unwrap();
    out
}

/// (provider, prompt, latency) → answered results, from the store.
pub(crate) async fn latency_counts(
    store: &dyn Store,
    run_id: Uuid,
) -> std::collections::BTreeMap<(i32, i32, i32), i64> {
    let mut out = std::collections::BTreeMap::new();
    store
        .for_each_latency_count(run_id, &mut |l| {
            let key = (l.provider_index, l.prompt_index, l.latency_ms);
            assert!(out.insert(key, l.count).is_none(), "{key:?} twice");
        })
        .await
        .unwrap();
    out
}

async fn runs_list_newest_first_in_pages(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(store.create_run(new_run(1)).await.unwrap().id);
    }
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store.list_runs("default", 2, after).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        after = Some(RunCursor {
            created_at: last.created_at,
            id: last.id,
        });
        pages.push(page.iter().map(|r| r.id).collect::<Vec<_>>());
    }
    assert_eq!(
        pages,
        vec![vec![ids[4], ids[3]], vec![ids[2], ids[1]], vec![ids[0]]]
    );

    let page = store.list_runs("default", 10, None).await.unwrap();
    assert_eq!(page[0], store.get_run(ids[4]).await.unwrap().unwrap());
    assert!(store.list_runs("other", 10, None).await.unwrap().is_empty());
}

async fn redelivered_batch_inserts_nothing_and_leaves_the_run_alone(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(4)).await.unwrap();
    let batch = vec![result(0, ResultStatus::Pass), result(1, ResultStatus::Fail)];
    let first = store.insert_results(run.id, &batch).await.unwrap();
    assert_eq!(first.inserted, 2);
    assert!(!first.finished_now);
    assert_eq!(first.run.status, RunStatus::Running);
    assert!(first.run.started_at.is_some());
    assert_eq!(first.run.finished_at, None);
    assert_eq!(counters(&first.run), (2, 1, 1, 0));

    let again = store.insert_results(run.id, &batch).await.unwrap();
    assert_eq!(again.inserted, 0);
    assert!(!again.finished_now);
    assert_eq!(again.run, first.run);
    assert_eq!(store.get_run(run.id).await.unwrap(), Some(first.run));
    let stored = store.list_results(run.id, None, None, 10).await.unwrap();
    assert_eq!(stored.len(), 2);
}

async fn overlapping_batch_counts_only_its_new_rows(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(10)).await.unwrap();
    store
        .insert_results(
            run.id,
            &[result(0, ResultStatus::Pass), result(1, ResultStatus::Pass)],
        )
        .await
        .unwrap();

    // Task 1 again, this time as a failure: the first answer stands.
    let mut retried = result(1, ResultStatus::Fail);
    retried.output = "a different answer".into();
    let out = store
        .insert_results(
            run.id,
            &[
                retried,
                result(2, ResultStatus::Error),
                result(3, ResultStatus::Fail),
            ],
        )
        .await
        .unwrap();
    assert_eq!(out.inserted, 2);
    assert_eq!(counters(&out.run), (4, 2, 1, 1));

    let stored = store.list_results(run.id, None, None, 10).await.unwrap();
    assert_eq!(stored.len(), 4);
    assert_eq!(stored[1].result, result(1, ResultStatus::Pass));
}

async fn stored_tasks_name_exactly_the_stored_indexes_in_a_range(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(10)).await.unwrap();
    let other = store.create_run(new_run(10)).await.unwrap();
    let rows: Vec<_> = [1, 4, 5, 9]
        .into_iter()
        .map(|t| result(t, ResultStatus::Pass))
        .collect();
    store.insert_results(run.id, &rows).await.unwrap();
    store
        .insert_results(other.id, &[result(2, ResultStatus::Pass)])
        .await
        .unwrap();
    let mut stored = store.stored_tasks(run.id, 2, 9).await.unwrap();
    stored.sort_unstable();
    assert_eq!(stored, vec![4, 5, 9]);
    assert!(store.stored_tasks(run.id, 6, 8).await.unwrap().is_empty());
    assert_eq!(store.stored_tasks(other.id, 0, 9).await.unwrap(), vec![2]);
}

async fn the_batch_bringing_the_last_task_completes_the_run(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(3)).await.unwrap();
    let first = store
        .insert_results(
            run.id,
            &[result(0, ResultStatus::Pass), result(1, ResultStatus::Fail)],
        )
        .await
        .unwrap();
    assert!(!first.finished_now);
    assert_eq!(first.run.status, RunStatus::Running);

    let last = store
        .insert_results(run.id, &[result(2, ResultStatus::Error)])
        .await
        .unwrap();
    assert_eq!(last.inserted, 1);
    assert!(last.finished_now);
    assert_eq!(last.run.status, RunStatus::Completed);
    assert_eq!(counters(&last.run), (3, 1, 1, 1));
    let finished_at = last.run.finished_at.expect("a completed run has ended");
    assert!(finished_at >= last.run.started_at.unwrap());

    // Completion is reported once; a redelivery after it changes nothing.
    let again = store
        .insert_results(run.id, &[result(2, ResultStatus::Error)])
        .await
        .unwrap();
    assert_eq!(again.inserted, 0);
    assert!(!again.finished_now);
    assert_eq!(again.run, last.run);

    // A run can go from queued to completed in one batch.
    let run = store.create_run(new_run(2)).await.unwrap();
    let out = store
        .insert_results(
            run.id,
            &[result(0, ResultStatus::Pass), result(1, ResultStatus::Pass)],
        )
        .await
        .unwrap();
    assert!(out.finished_now);
    assert_eq!(out.run.status, RunStatus::Completed);
    assert!(out.run.started_at.is_some() && out.run.finished_at.is_some());
}

async fn concurrent_overlapping_batches_count_each_task_once(store: Arc<dyn Store>) {
    const TASKS: i64 = 40;
    let run = store.create_run(new_run(TASKS)).await.unwrap();
    // Eight batches of ten tasks, each overlapping the next by five.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let batch: Vec<_> = (i * 5..(i * 5 + 10).min(TASKS))
                .map(|t| result(t, cycling_status(t)))
                .collect();
            tokio::spawn(async move { store.insert_results(run.id, &batch).await.unwrap() })
        })
        .collect();
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.unwrap());
    }

    let inserted: u64 = outcomes.iter().map(|o| o.inserted).sum();
    assert_eq!(inserted, TASKS as u64);
    assert_eq!(outcomes.iter().filter(|o| o.finished_now).count(), 1);
    let run = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Completed);
    assert_eq!(counters(&run), (40, 14, 13, 13));
}

async fn a_batch_larger_than_one_statement_inserts_every_row(store: Arc<dyn Store>) {
    // More rows than fit in one SQLite statement's parameters, several times
    // over, plus a repeat of an early task at the very end.
    const TASKS: i64 = 5000;
    let run = store.create_run(new_run(TASKS)).await.unwrap();
    let mut batch: Vec<_> = (0..TASKS).map(|t| result(t, cycling_status(t))).collect();
    batch.push(result(7, ResultStatus::Pass));

    let out = store.insert_results(run.id, &batch).await.unwrap();
    assert_eq!(out.inserted, TASKS as u64);
    assert!(out.finished_now);
    assert_eq!(counters(&out.run), (5000, 1667, 1667, 1666));

    let stored = store
        .list_results(run.id, None, None, 10_000)
        .await
        .unwrap();
    let tasks: Vec<_> = stored.iter().map(|r| r.result.task_index).collect();
    assert_eq!(tasks, (0..TASKS).collect::<Vec<_>>());
    assert_eq!(stored[7].result.status, ResultStatus::Fail);
}

async fn results_for_an_unknown_run_are_rejected(store: Arc<dyn Store>) {
    let unknown = Uuid::now_v7();
    let err = store
        .insert_results(unknown, &[result(0, ResultStatus::Pass)])
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "retrying cannot help: {err}");
    assert!(
        store
            .list_results(unknown, None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn mark_running_moves_only_queued_runs(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(2)).await.unwrap();
    store.mark_running(run.id).await.unwrap();
    let running = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(running.status, RunStatus::Running);
    let started_at = running.started_at.expect("a running run has started");

    // A second worker touching the run keeps the first start time.
    store.mark_running(run.id).await.unwrap();
    let again = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(again.started_at, Some(started_at));

    let cancelled = store.create_run(new_run(2)).await.unwrap();
    store.cancel_run(cancelled.id).await.unwrap();
    store.mark_running(cancelled.id).await.unwrap();
    let still = store.get_run(cancelled.id).await.unwrap().unwrap();
    assert_eq!(still.status, RunStatus::Cancelled);
    assert_eq!(still.started_at, None);
}

async fn cancel_ends_only_unfinished_runs(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(2)).await.unwrap();
    let cancelled = store.cancel_run(run.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    assert!(cancelled.finished_at.is_some());
    assert_eq!(
        store.get_run(run.id).await.unwrap(),
        Some(cancelled.clone())
    );

    // Ending an ended run again changes nothing, not even its end time.
    assert_eq!(
        store.cancel_run(run.id).await.unwrap(),
        Some(cancelled.clone())
    );
    assert_eq!(
        store.fail_run(run.id, "lost").await.unwrap(),
        Some(cancelled)
    );

    let running = store.create_run(new_run(2)).await.unwrap();
    store.mark_running(running.id).await.unwrap();
    let cancelled = store.cancel_run(running.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);

    let done = completed_run(&*store).await;
    assert_eq!(store.cancel_run(done.id).await.unwrap(), Some(done));
}

async fn fail_ends_only_unfinished_runs(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(2)).await.unwrap();
    store.mark_running(run.id).await.unwrap();
    let failed = store
        .fail_run(run.id, "3 tasks were lost")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.status_reason, "3 tasks were lost");
    assert!(failed.finished_at.is_some());
    assert_eq!(
        store.cancel_run(run.id).await.unwrap(),
        Some(failed.clone())
    );
    assert_eq!(store.fail_run(run.id, "lost").await.unwrap(), Some(failed));

    let queued = store.create_run(new_run(2)).await.unwrap();
    let failed = store.fail_run(queued.id, "lost").await.unwrap().unwrap();
    assert_eq!(failed.status, RunStatus::Failed);

    let done = completed_run(&*store).await;
    assert_eq!(store.fail_run(done.id, "lost").await.unwrap(), Some(done));
}

async fn run_cost_counts_only_rows_really_inserted(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(3)).await.unwrap();
    assert_eq!(run.cost_usd, 0.0);
    let priced = |task: i64, cost: f64| NewResult {
        cost_usd: cost,
        ..result(task, ResultStatus::Pass)
    };
    let first = store
        .insert_results(run.id, &[priced(0, 0.25), priced(1, 0.5)])
        .await
        .unwrap();
    assert!((first.run.cost_usd - 0.75).abs() < 1e-9, "{first:?}");
    // A redelivered row costs nothing twice; its new cost is ignored.
    let again = store
        .insert_results(run.id, &[priced(1, 9.0), priced(2, 0.125)])
        .await
        .unwrap();
    assert_eq!(again.inserted, 1);
    assert!((again.run.cost_usd - 0.875).abs() < 1e-9, "{again:?}");
    assert_eq!(store.get_run(run.id).await.unwrap(), Some(again.run));
}

async fn limit_ends_only_unfinished_runs_as_cost_limited(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(3)).await.unwrap();
    store
        .insert_results(run.id, &[result(0, ResultStatus::Pass)])
        .await
        .unwrap();
    let limited = store.limit_run(run.id).await.unwrap().unwrap();
    assert_eq!(limited.status, RunStatus::CostLimited);
    assert!(limited.status.is_terminal());
    assert!(limited.finished_at.is_some());
    assert_eq!(store.get_run(run.id).await.unwrap(), Some(limited.clone()));

    // Ending it again, either way, changes nothing.
    assert_eq!(
        store.limit_run(run.id).await.unwrap(),
        Some(limited.clone())
    );
    assert_eq!(
        store.cancel_run(run.id).await.unwrap(),
        Some(limited.clone())
    );

    // Results in flight when the cap was reached are kept and counted, but
    // the last one does not turn the run `completed`.
    let late = store
        .insert_results(
            run.id,
            &[result(1, ResultStatus::Pass), result(2, ResultStatus::Fail)],
        )
        .await
        .unwrap();
    assert_eq!(late.run.status, RunStatus::CostLimited);
    assert_eq!(late.run.completed_tasks, 3);
    assert!(!late.finished_now);
    assert_eq!(late.run.finished_at, limited.finished_at);

    let cancelled = store.create_run(new_run(2)).await.unwrap();
    let cancelled = store.cancel_run(cancelled.id).await.unwrap().unwrap();
    assert_eq!(
        store.limit_run(cancelled.id).await.unwrap(),
        Some(cancelled)
    );
    let done = completed_run(&*store).await;
    assert_eq!(store.limit_run(done.id).await.unwrap(), Some(done));
    assert_eq!(store.limit_run(Uuid::now_v7()).await.unwrap(), None);
}

async fn late_results_do_not_revive_a_cancelled_run(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(2)).await.unwrap();
    let cancelled = store.cancel_run(run.id).await.unwrap().unwrap();
    let out = store
        .insert_results(
            run.id,
            &[result(0, ResultStatus::Pass), result(1, ResultStatus::Pass)],
        )
        .await
        .unwrap();
    assert_eq!(out.run.status, RunStatus::Cancelled);
    assert!(!out.finished_now);
    assert_eq!(out.run.finished_at, cancelled.finished_at);
    // The results themselves are kept: they were paid for.
    assert_eq!(
        store
            .list_results(run.id, None, None, 10)
            .await
            .unwrap()
            .len(),
        2
    );
}

async fn results_read_back_exactly_as_written(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(2)).await.unwrap();
    let plain = result(0, ResultStatus::Pass);
    let odd = NewResult {
        trace_id: String::new(),
        task_index: 1,
        project_id: "default".into(),
        test_index: 7,
        prompt_index: 2,
        provider_index: 3,
        repeat_index: 4,
        provider_id: "openai:gpt-4o-mini".into(),
        status: ResultStatus::Error,
        score: 0.375,
        reason: "timed out after 30 s".into(),
        rendered_prompt: "Übersetze: \"hello\"\n\t— 🙂".into(),
        output: String::new(),
        assertions: serde_json::json!([
            {"type": "llm-rubric", "pass": false, "score": 0.25, "detail": {"why": ["a", "b"]}},
            {"type": "latency", "pass": true, "threshold": null}
        ]),
        latency_ms: 30_000,
        tokens_in: 1_234_567,
        tokens_out: 0,
        cost_usd: 0.000_012_345,
        cached: true,
        error: "deadline exceeded".into(),
    };
    store
        .insert_results(run.id, &[plain.clone(), odd.clone()])
        .await
        .unwrap();

    let stored = store.list_results(run.id, None, None, 10).await.unwrap();
    let rows: Vec<_> = stored.iter().map(|r| r.result.clone()).collect();
    assert_eq!(rows, vec![plain, odd]);
    assert!(stored.iter().all(|r| r.run_id == run.id));
    let read = store.get_run(run.id).await.unwrap().unwrap();
    assert!(
        stored
            .iter()
            .all(|r| Some(r.created_at) <= read.finished_at)
    );
    // The run's and each result's trace ids come back as written.
    assert_eq!(run.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(read.trace_id, run.trace_id);
    assert_eq!(stored[0].result.trace_id, format!("{:032x}", 0));
}

async fn results_page_in_task_order_and_filter_by_status(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(10)).await.unwrap();
    // Inserted out of order, to see the store sort them.
    let rows: Vec<_> = (0..10)
        .rev()
        .map(|i| {
            let status = if i % 3 == 0 {
                ResultStatus::Fail
            } else {
                ResultStatus::Pass
            };
            result(i, status)
        })
        .collect();
    store.insert_results(run.id, &rows).await.unwrap();
    let other = store.create_run(new_run(10)).await.unwrap();
    store
        .insert_results(other.id, &[result(0, ResultStatus::Fail)])
        .await
        .unwrap();

    let tasks = |page: Vec<gauntlet_store::ResultRecord>| -> Vec<i64> {
        page.iter().map(|r| r.result.task_index).collect()
    };
    let page = store.list_results(run.id, None, None, 4).await.unwrap();
    assert_eq!(tasks(page), vec![0, 1, 2, 3]);
    let page = store.list_results(run.id, None, Some(3), 4).await.unwrap();
    assert_eq!(page[0].result, rows[5]);
    assert_eq!(tasks(page), vec![4, 5, 6, 7]);
    let page = store.list_results(run.id, None, Some(7), 4).await.unwrap();
    assert_eq!(tasks(page), vec![8, 9]);
    assert!(
        store
            .list_results(run.id, None, Some(9), 4)
            .await
            .unwrap()
            .is_empty()
    );

    let fails = store
        .list_results(run.id, Some(ResultStatus::Fail), None, 100)
        .await
        .unwrap();
    assert_eq!(tasks(fails), vec![0, 3, 6, 9]);
    let fails = store
        .list_results(run.id, Some(ResultStatus::Fail), Some(3), 2)
        .await
        .unwrap();
    assert_eq!(tasks(fails), vec![6, 9]);
    assert!(
        store
            .list_results(run.id, Some(ResultStatus::Error), None, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn result_metrics_cover_every_result_of_the_run(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(8)).await.unwrap();
    let mut rows: Vec<_> = (0..6).map(|t| result(t, cycling_status(t))).collect();
    // Two more like task 0 (provider, prompt, status), one of them with
    // its latency too.
    for t in [6, 7] {
        rows.push(NewResult {
            latency_ms: if t == 6 { rows[0].latency_ms } else { 99 },
            status: rows[0].status,
            provider_index: rows[0].provider_index,
            prompt_index: rows[0].prompt_index,
            tokens_in: 10 * t as i32,
            cost_usd: 0.5,
            ..result(t, rows[0].status)
        });
    }
    store.insert_results(run.id, &rows).await.unwrap();
    let other = store.create_run(new_run(1)).await.unwrap();
    store
        .insert_results(other.id, &[result(0, ResultStatus::Pass)])
        .await
        .unwrap();

    // Groups: provider × prompt × status, tokens, cost and scores summed.
    let mut want = std::collections::BTreeMap::new();
    for r in &rows {
        let e = want
            .entry((r.provider_index, r.prompt_index, r.status as i16))
            .or_insert((0i64, 0i64, 0i64, 0f64, 0f64, 0f64));
        e.0 += 1;
        e.1 += i64::from(r.tokens_in);
        e.2 += i64::from(r.tokens_out);
        e.3 += r.cost_usd;
        e.4 += r.score;
        e.5 += r.score * r.score;
    }
    let metrics = result_metrics(store.as_ref(), run.id).await;
    assert_eq!(metrics.len(), want.len(), "{metrics:?}");
    for m in &metrics {
        let w = want[&(m.provider_index, m.prompt_index, m.status as i16)];
        assert_eq!(
            (m.count, m.tokens_in, m.tokens_out),
            (w.0, w.1, w.2),
            "{m:?}"
        );
        assert!((m.cost_usd - w.3).abs() < 1e-9, "{m:?}");
        assert_eq!((m.score_sum, m.score_sq_sum), (w.4, w.5), "{m:?}");
    }
    assert_eq!(metrics.iter().map(|m| m.count).sum::<i64>(), 8);

    // Latencies: answered results only (tasks 2 and 5 errored).
    let mut want = std::collections::BTreeMap::new();
    for r in rows.iter().filter(|r| r.status != ResultStatus::Error) {
        *want
            .entry((r.provider_index, r.prompt_index, r.latency_ms))
            .or_insert(0i64) += 1;
    }
    assert_eq!(want.values().sum::<i64>(), 6);
    assert_eq!(
        want[&(
            rows[0].provider_index,
            rows[0].prompt_index,
            rows[0].latency_ms
        )],
        2
    );
    assert_eq!(latency_counts(store.as_ref(), run.id).await, want);
}

async fn reports_move_from_pending_to_ready(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(1)).await.unwrap();
    let id = Uuid::now_v7();
    let report = store
        .create_report(NewReport {
            id,
            project_id: "default".into(),
            run_id: run.id,
            format: "markdown".into(),
            kind: RUN_REPORT.into(),
        })
        .await
        .unwrap();
    assert_eq!(report.id, id);
    assert_eq!(report.run_id, run.id);
    assert_eq!(report.project_id, "default");
    assert_eq!(report.format, "markdown");
    assert_eq!(report.status, ReportStatus::Pending);
    assert_eq!((report.content.as_str(), report.error.as_str()), ("", ""));
    assert_eq!(report.finished_at, None);
    assert_eq!(store.get_report(id).await.unwrap(), Some(report.clone()));

    store
        .finish_report(id, ReportOutcome::Ready("# hi\n\n| a | b |".into()))
        .await
        .unwrap();
    let got = store.get_report(id).await.unwrap().unwrap();
    assert_eq!(got.status, ReportStatus::Ready);
    assert_eq!(got.content, "# hi\n\n| a | b |");
    assert_eq!(got.error, "");
    assert_eq!(got.created_at, report.created_at);
    assert!(got.finished_at.is_some_and(|t| t >= report.created_at));
}

async fn reports_can_fail_with_an_error(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(1)).await.unwrap();
    let id = Uuid::now_v7();
    store
        .create_report(NewReport {
            id,
            project_id: "default".into(),
            run_id: run.id,
            format: "junit".into(),
            kind: RUN_REPORT.into(),
        })
        .await
        .unwrap();
    store
        .finish_report(id, ReportOutcome::Failed("run has no results".into()))
        .await
        .unwrap();
    let got = store.get_report(id).await.unwrap().unwrap();
    assert_eq!(got.status, ReportStatus::Failed);
    assert_eq!(got.error, "run has no results");
    assert_eq!(got.content, "");
    assert!(got.finished_at.is_some());
}

async fn a_report_stored_in_parts_reads_back_part_by_part(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(1)).await.unwrap();
    let new = |format: &str| NewReport {
        id: Uuid::now_v7(),
        project_id: "default".into(),
        run_id: run.id,
        format: format.into(),
        kind: RUN_REPORT.into(),
    };
    let report = store.create_report(new("html")).await.unwrap();
    assert_eq!((report.bytes, report.parts), (0, 0));
    let big = vec![b'x'; 300_000];
    store.put_report_part(report.id, 0, b"stale").await.unwrap();
    // A redelivered job renders again: the part is replaced.
    store.put_report_part(report.id, 0, &big).await.unwrap();
    store
        .put_report_part(report.id, 1, b"<tail>")
        .await
        .unwrap();
    store
        .finish_report(
            report.id,
            ReportOutcome::Stored {
                bytes: 300_006,
                parts: 2,
            },
        )
        .await
        .unwrap();
    let got = store.get_report(report.id).await.unwrap().unwrap();
    assert_eq!(got.status, ReportStatus::Ready);
    assert_eq!(
        (got.bytes, got.parts, got.content.as_str()),
        (300_006, 2, "")
    );
    assert_eq!(store.report_part(report.id, 0).await.unwrap(), Some(big));
    assert_eq!(
        store.report_part(report.id, 1).await.unwrap().as_deref(),
        Some(&b"<tail>"[..])
    );
    assert_eq!(store.report_part(report.id, 2).await.unwrap(), None);

    // A document stored whole tells its size too.
    let whole = store.create_report(new("markdown")).await.unwrap();
    store
        .finish_report(whole.id, ReportOutcome::Ready("# é".into()))
        .await
        .unwrap();
    let got = store.get_report(whole.id).await.unwrap().unwrap();
    assert_eq!((got.bytes, got.parts), (4, 0));

    // A report that fails half way keeps none of its parts.
    let failed = store.create_report(new("csv")).await.unwrap();
    store.put_report_part(failed.id, 0, b"a,b\n").await.unwrap();
    store
        .finish_report(failed.id, ReportOutcome::Failed("store went away".into()))
        .await
        .unwrap();
    assert_eq!(store.report_part(failed.id, 0).await.unwrap(), None);
    let got = store.get_report(failed.id).await.unwrap().unwrap();
    assert_eq!((got.bytes, got.parts), (0, 0));
}

async fn requests_at_the_same_moment_make_one_report(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(1)).await.unwrap();
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let reuse = ReportReuse {
        since: long_ago,
        pending_since: long_ago,
    };
    let new = |format: &str| NewReport {
        id: Uuid::now_v7(),
        project_id: "default".into(),
        run_id: run.id,
        format: format.into(),
        kind: RUN_REPORT.into(),
    };
    let asked: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let report = new("html");
            tokio::spawn(async move { store.find_or_create_report(report, reuse).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for a in asked {
        answers.push(a.await.unwrap());
    }
    assert_eq!(answers.iter().filter(|(_, created)| *created).count(), 1);
    let id = answers[0].0.id;
    assert!(answers.iter().all(|(r, _)| r.id == id));

    // Another format is another report; a failed one is made again; a
    // pending one older than `pending_since` too.
    let (json, created) = store
        .find_or_create_report(new("json"), reuse)
        .await
        .unwrap();
    assert!(created && json.id != id);
    store
        .finish_report(json.id, ReportOutcome::Failed("boom".into()))
        .await
        .unwrap();
    let (again, created) = store
        .find_or_create_report(new("json"), reuse)
        .await
        .unwrap();
    assert!(created && again.id != json.id);
    let later = ReportReuse {
        since: long_ago,
        pending_since: a_moment_later().await,
    };
    let (fresh, created) = store
        .find_or_create_report(new("json"), later)
        .await
        .unwrap();
    assert!(
        created && fresh.id != again.id,
        "a stale pending report is made again"
    );
    store
        .finish_report(fresh.id, ReportOutcome::Ready("{}".into()))
        .await
        .unwrap();
    let (ready, created) = store
        .find_or_create_report(new("json"), later)
        .await
        .unwrap();
    assert!(
        !created && ready.id == fresh.id,
        "a ready one is answered however old"
    );
}

/// A moment strictly after everything written so far (timestamps have
/// microsecond precision).
async fn a_moment_later() -> chrono::DateTime<chrono::Utc> {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let t = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    t
}

async fn stale_runs_are_unfinished_runs_quiet_since_before(store: Arc<dyn Store>) {
    let queued = store.create_run(new_run(3)).await.unwrap();
    let running = store.create_run(new_run(3)).await.unwrap();
    store.mark_running(running.id).await.unwrap();
    let cancelled = store.create_run(new_run(3)).await.unwrap();
    store.cancel_run(cancelled.id).await.unwrap();
    let failed = store.create_run(new_run(3)).await.unwrap();
    store.fail_run(failed.id, "lost").await.unwrap();
    completed_run(&*store).await;
    let cutoff = a_moment_later().await;
    let young = store.create_run(new_run(3)).await.unwrap();

    let stale = store.stale_runs(cutoff, 100).await.unwrap();
    let ids: Vec<Uuid> = stale.iter().map(|r| r.id).collect();
    // Quietest first; ended runs and runs active since the cutoff are not stale.
    assert_eq!(ids, [queued.id, running.id]);
    assert_eq!(store.stale_runs(cutoff, 1).await.unwrap().len(), 1);
    assert!(
        store
            .stale_runs(queued.created_at, 100)
            .await
            .unwrap()
            .is_empty()
    );
    let later = a_moment_later().await;
    let all: Vec<Uuid> = store
        .stale_runs(later, 100)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(all, [queued.id, running.id, young.id]);
}

async fn a_stored_result_makes_a_run_active_again(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(3)).await.unwrap();
    // `active_at` may trail the last stored result by up to a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let cutoff = a_moment_later().await;
    let out = store
        .insert_results(run.id, &[result(0, ResultStatus::Pass)])
        .await
        .unwrap();
    assert!(out.run.active_at > cutoff, "{out:?}");
    assert!(store.stale_runs(cutoff, 10).await.unwrap().is_empty());

    // A redelivered batch that stores nothing is no sign of life.
    let cutoff = a_moment_later().await;
    let again = store
        .insert_results(run.id, &[result(0, ResultStatus::Pass)])
        .await
        .unwrap();
    assert_eq!(again.inserted, 0);
    assert_eq!(again.run.active_at, out.run.active_at);
    let stale = store.stale_runs(cutoff, 10).await.unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].id, run.id);
}

async fn exactly_one_claim_of_a_redrive_wins(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(3)).await.unwrap();
    assert_eq!(run.redriven_at, None);
    let cutoff = a_moment_later().await;
    let (a, b) = tokio::join!(
        store.claim_redrive(run.id, 0, cutoff),
        store.claim_redrive(run.id, 0, cutoff)
    );
    let winners: Vec<RunRecord> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    let claimed = &winners[0];
    assert_eq!(claimed.redrives, 1);
    assert!(claimed.active_at > cutoff);
    assert_eq!(claimed.redriven_at, Some(claimed.active_at));
    assert_eq!(store.get_run(run.id).await.unwrap().as_ref(), Some(claimed));

    // The next claim must have seen the first, and come after it.
    let later = a_moment_later().await;
    assert_eq!(store.claim_redrive(run.id, 0, later).await.unwrap(), None);
    assert_eq!(store.claim_redrive(run.id, 1, cutoff).await.unwrap(), None);
    let second = store.claim_redrive(run.id, 1, later).await.unwrap();
    assert_eq!(second.unwrap().redrives, 2);
    // An ended run takes no more.
    store.fail_run(run.id, "lost").await.unwrap();
    let much_later = a_moment_later().await;
    let ended = store.claim_redrive(run.id, 2, much_later).await.unwrap();
    assert_eq!(ended, None);
    let unknown = store.claim_redrive(Uuid::now_v7(), 0, much_later).await;
    assert_eq!(unknown.unwrap(), None);
}

async fn a_touched_run_is_active_again(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(3)).await.unwrap();
    let cutoff = a_moment_later().await;
    store.touch_run(run.id).await.unwrap();
    let touched = store.get_run(run.id).await.unwrap().unwrap();
    assert!(touched.active_at > cutoff);
    assert_eq!(touched.redrives, 0);
    assert!(store.stale_runs(cutoff, 10).await.unwrap().is_empty());

    // An ended run keeps its last sign of life.
    let done = completed_run(&*store).await;
    store.touch_run(done.id).await.unwrap();
    assert_eq!(store.get_run(done.id).await.unwrap(), Some(done));
}

async fn missing_tasks_are_the_gaps_and_the_tail(store: Arc<dyn Store>) {
    let range = |first, count| gauntlet_store::TaskRange { first, count };
    let run = store.create_run(new_run(12)).await.unwrap();
    assert_eq!(
        store.missing_tasks(run.id, 100).await.unwrap(),
        [range(0, 12)]
    );
    let rows: Vec<NewResult> = [1, 2, 5, 6, 7, 9]
        .into_iter()
        .map(|t| result(t, ResultStatus::Pass))
        .collect();
    store.insert_results(run.id, &rows).await.unwrap();
    assert_eq!(
        store.missing_tasks(run.id, 100).await.unwrap(),
        [range(0, 1), range(3, 2), range(8, 1), range(10, 2)]
    );
    assert_eq!(
        store.missing_tasks(run.id, 2).await.unwrap(),
        [range(0, 1), range(3, 2)]
    );
    let rest: Vec<NewResult> = [0, 3, 4, 8, 10, 11]
        .into_iter()
        .map(|t| result(t, ResultStatus::Pass))
        .collect();
    let out = store.insert_results(run.id, &rest).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Completed);
    assert!(store.missing_tasks(run.id, 100).await.unwrap().is_empty());
    assert!(
        store
            .missing_tasks(Uuid::now_v7(), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn suite_tests_read_back_by_range_and_are_stored_once(store: Arc<dyn Store>) {
    let run = new_run(4);
    let body = |i: i64| format!("{{\"vars\":{{\"i\":{i}}}}}");
    // More rows than one SQLite statement binds, written before the run.
    let tests: Vec<String> = (0..12_000).map(body).collect();
    store.put_tests(run.id, 0, &tests[..5000]).await.unwrap();
    store.put_tests(run.id, 5000, &tests[5000..]).await.unwrap();
    // A test written again (a retried chunk) keeps its first body.
    store
        .put_tests(run.id, 7, &["{}".to_owned()])
        .await
        .unwrap();
    let run = store.create_run(run).await.unwrap();

    let got = store.get_tests(run.id, 6, 9).await.unwrap();
    assert_eq!(got, (6..=9).map(|i| (i, body(i))).collect::<Vec<_>>());
    let all = store.get_tests(run.id, 0, 20_000).await.unwrap();
    assert_eq!(all.len(), 12_000);
    assert_eq!(all.last().unwrap(), &(11_999, body(11_999)));
    // Another run's tests are not mixed in.
    let other = new_run(1);
    store.put_tests(other.id, 0, &[body(99)]).await.unwrap();
    assert_eq!(store.get_tests(run.id, 0, 0).await.unwrap(), [(0, body(0))]);
    assert!(
        store
            .get_tests(Uuid::now_v7(), 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn refused_and_orphaned_uploads_leave_no_tests(store: Arc<dyn Store>) {
    let tests = ["{}".to_owned(), "{}".to_owned()];
    // A refused upload removes its rows.
    let refused = Uuid::now_v7();
    store.put_tests(refused, 0, &tests).await.unwrap();
    assert_eq!(store.delete_tests(refused).await.unwrap(), 2);
    assert!(store.get_tests(refused, 0, 10).await.unwrap().is_empty());

    // An upload cut short by a crash is swept once it is old enough; a
    // run's tests, and uploads newer than the cut, are kept.
    let orphan = Uuid::now_v7();
    store.put_tests(orphan, 0, &tests).await.unwrap();
    let run = store.create_run(new_run(2)).await.unwrap();
    store.put_tests(run.id, 0, &tests).await.unwrap();
    let cut = Uuid::now_v7();
    let newer = Uuid::now_v7();
    store.put_tests(newer, 0, &tests).await.unwrap();
    assert_eq!(store.sweep_orphan_tests(cut).await.unwrap(), 2);
    assert!(store.get_tests(orphan, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.get_tests(run.id, 0, 10).await.unwrap().len(), 2);
    assert_eq!(store.get_tests(newer, 0, 10).await.unwrap().len(), 2);
}

async fn finishing_an_upload_sets_the_total_and_completes_a_run_already_done(
    store: Arc<dyn Store>,
) {
    // Created while its tests still arrive: the total is not known yet.
    let open = store.create_run(new_run(i64::MAX)).await.unwrap();
    let rows: Vec<NewResult> = (0..3).map(|t| result(t, ResultStatus::Pass)).collect();
    let out = store.insert_results(open.id, &rows).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Running);
    // Every task was in before the upload ended: it completes now.
    let options = serde_json::json!({"repeat": 1, "tests": 3});
    let run = store
        .finish_upload(open.id, 3, options.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((run.total_tasks, run.status), (3, RunStatus::Completed));
    assert_eq!(run.options, options);
    assert!(run.finished_at.is_some());

    // Tasks still to come: it keeps running and completes with the last.
    let open = store.create_run(new_run(i64::MAX)).await.unwrap();
    store.insert_results(open.id, &rows[..1]).await.unwrap();
    let run = store
        .finish_upload(open.id, 3, options.clone())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((run.total_tasks, run.status), (3, RunStatus::Running));
    assert!(run.finished_at.is_none());
    let out = store.insert_results(open.id, &rows[1..]).await.unwrap();
    assert_eq!(out.run.status, RunStatus::Completed);
    assert!(out.finished_now);

    // A run that failed meanwhile stays failed.
    let open = store.create_run(new_run(i64::MAX)).await.unwrap();
    store.fail_run(open.id, "bad test").await.unwrap();
    let run = store
        .finish_upload(open.id, 3, options)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(
        store
            .finish_upload(Uuid::now_v7(), 1, serde_json::json!({}))
            .await
            .unwrap()
            .is_none()
    );
}

async fn outcomes_come_in_task_order_with_what_a_comparison_needs(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(40)).await.unwrap();
    let mut rows: Vec<NewResult> = (0..40).map(|t| result(t, cycling_status(t))).collect();
    for r in &mut rows {
        r.repeat_index = (r.task_index % 4) as i32;
        r.score = r.task_index as f64 / 8.0;
        r.cost_usd = r.task_index as f64 * 0.25;
    }
    // Stored out of order, in two batches.
    rows.reverse();
    store.insert_results(run.id, &rows[..17]).await.unwrap();
    store.insert_results(run.id, &rows[17..]).await.unwrap();
    let mut got = Vec::new();
    store
        .for_each_outcome(run.id, &mut |o| got.push(o))
        .await
        .unwrap();
    rows.reverse();
    let want: Vec<Outcome> = rows
        .iter()
        .map(|r| Outcome {
            test_index: r.test_index,
            prompt_index: r.prompt_index,
            provider_index: r.provider_index,
            repeat_index: r.repeat_index,
            status: r.status,
            score: r.score,
            latency_ms: r.latency_ms,
            cost_usd: r.cost_usd,
        })
        .collect();
    assert_eq!(got, want);
    let mut none = 0;
    store
        .for_each_outcome(Uuid::now_v7(), &mut |_| none += 1)
        .await
        .unwrap();
    assert_eq!(none, 0);

    // Rolled up, the same outcomes read back (Postgres packs them then).
    assert!(store.roll_up(run.id).await.unwrap());
    let mut rolled = Vec::new();
    store
        .for_each_outcome(run.id, &mut |o| rolled.push(o))
        .await
        .unwrap();
    assert_eq!(rolled, want);
}

/// A completed run of more results than one packed chunk holds (50,000),
/// rolled up: every outcome once, in task order, across the chunks'
/// edges.
async fn a_rolled_up_run_reads_back_every_outcome_in_order(store: Arc<dyn Store>) {
    const TASKS: i64 = 100_001;
    let run = store.create_run(new_run(TASKS)).await.unwrap();
    let rows: Vec<NewResult> = (0..TASKS)
        .map(|t| {
            let mut r = result(t, cycling_status(t));
            r.latency_ms = (t % 977) as i32;
            r.score = (t % 7) as f64 / 7.0;
            r
        })
        .collect();
    for chunk in rows.chunks(20_000).rev() {
        store.insert_results(run.id, chunk).await.unwrap();
    }
    assert!(store.roll_up(run.id).await.unwrap());
    let (got, want) = (
        outcome_keys(store.as_ref(), run.id).await,
        result_keys(&rows),
    );
    assert_eq!(got.len(), want.len());
    assert!(got == want, "outcomes out of order or changed");
}

/// What each outcome of `run_id` says, in the order `for_each_outcome`
/// hands them over.
pub(crate) async fn outcome_keys(
    store: &dyn Store,
    run_id: Uuid,
) -> Vec<(i32, i32, ResultStatus, f64)> {
    let mut got = Vec::new();
    store
        .for_each_outcome(run_id, &mut |o| {
            got.push((o.test_index, o.latency_ms, o.status, o.score))
        })
        .await
        .unwrap();
    got
}

/// The same of results as written.
pub(crate) fn result_keys(rows: &[NewResult]) -> Vec<(i32, i32, ResultStatus, f64)> {
    rows.iter()
        .map(|r| (r.test_index, r.latency_ms, r.status, r.score))
        .collect()
}

/// More results than Postgres reads in one query (50,000), with gaps (a
/// run not finished), stored out of order: every outcome once, in task
/// order.
async fn outcomes_of_more_results_than_one_read_takes_come_whole_and_in_order(
    store: Arc<dyn Store>,
) {
    let tasks: Vec<i64> = (0..50_100).filter(|t| t % 1000 != 7).collect();
    let run = store.create_run(new_run(50_100)).await.unwrap();
    let rows: Vec<NewResult> = tasks
        .iter()
        .map(|&t| {
            let mut r = result(t, cycling_status(t));
            r.latency_ms = (t % 977) as i32;
            r
        })
        .collect();
    for chunk in rows.chunks(10_000).rev() {
        store.insert_results(run.id, chunk).await.unwrap();
    }
    let (got, want) = (
        outcome_keys(store.as_ref(), run.id).await,
        result_keys(&rows),
    );
    assert_eq!(got.len(), want.len());
    assert!(got == want, "outcomes out of order or changed");
}

async fn equal_tests_have_equal_digests_across_runs(store: Arc<dyn Store>) {
    let (a, b) = (new_run(3), new_run(2));
    let (x, y) = (
        "{\"vars\":{\"q\":1}}".to_owned(),
        "{\"vars\":{\"q\":2}}".to_owned(),
    );
    store
        .put_tests(a.id, 0, &[x.clone(), y.clone(), x.clone()])
        .await
        .unwrap();
    store
        .put_tests(b.id, 0, &[y.clone(), x.clone()])
        .await
        .unwrap();
    let (dx, dy) = (
        gauntlet_store::test_digest(&x),
        gauntlet_store::test_digest(&y),
    );
    assert_ne!(dx, dy);
    assert_eq!(
        store.test_digests(a.id).await.unwrap(),
        [(0, dx), (1, dy), (2, dx)]
    );
    assert_eq!(store.test_digests(b.id).await.unwrap(), [(0, dy), (1, dx)]);
    assert!(store.test_digests(Uuid::now_v7()).await.unwrap().is_empty());
}

async fn assertion_metrics_count_each_type_metric_and_verdict(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(9)).await.unwrap();
    let rows: Vec<NewResult> = (0..6)
        .map(|t| {
            let mut r = result(t, ResultStatus::Pass);
            r.provider_index = 0;
            r.prompt_index = 0;
            r.assertions = serde_json::json!([
                {"type": "contains", "pass": t % 2 == 0, "score": 1.0, "reason": ""},
                {"type": "llm-rubric", "metric": "tone", "pass": t < 2, "score": 0.5, "reason": ""},
            ]);
            r
        })
        .collect();
    // Shapes a writer of this version does not produce but a stored row
    // may hold: read the same way by both backends.
    let odd = [
        serde_json::json!({"type": "contains", "pass": true}),
        serde_json::Value::Null,
        serde_json::json!([
            {"type": "con\"tains", "metric": "töne", "pass": true},
            {"type": 7, "metric": null, "pass": "true"},
            {"metric": ["tone"], "pass": true},
            "contains",
        ]),
    ];
    let rows = rows
        .into_iter()
        .chain(odd.into_iter().enumerate().map(|(i, a)| {
            let mut r = result(6 + i as i64, ResultStatus::Pass);
            r.provider_index = 0;
            r.prompt_index = 0;
            r.assertions = a;
            r
        }));
    store
        .insert_results(run.id, &rows.collect::<Vec<_>>())
        .await
        .unwrap();
    let mut got = Vec::new();
    store
        .for_each_assertion_metrics(run.id, &mut |m| {
            got.push((m.kind, m.metric, m.passed, m.count))
        })
        .await
        .unwrap();
    got.sort();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        got,
        [
            (s(""), s(""), false, 2),
            (s(""), s(""), true, 1),
            (s("con\"tains"), s("töne"), true, 1),
            (s("contains"), s(""), false, 3),
            (s("contains"), s(""), true, 3),
            (s("llm-rubric"), s("tone"), false, 4),
            (s("llm-rubric"), s("tone"), true, 2),
        ]
    );
}

async fn slowest_results_and_most_failed_tests(store: Arc<dyn Store>) {
    let run = store.create_run(new_run(12)).await.unwrap();
    // Tests 0..4, three results each; test t fails t times; errors are
    // the slowest but are not listed as slow.
    let rows: Vec<NewResult> = (0..12)
        .map(|task| {
            let test = task / 3;
            let k = task % 3;
            let status = if k < test.min(3) {
                if k == 0 {
                    ResultStatus::Error
                } else {
                    ResultStatus::Fail
                }
            } else {
                ResultStatus::Pass
            };
            let mut r = result(task, status);
            r.test_index = test as i32;
            r.latency_ms = if status == ResultStatus::Error {
                10_000
            } else {
                100 + task as i32
            };
            r
        })
        .collect();
    store.insert_results(run.id, &rows).await.unwrap();
    // Grouped from the results, then from the run's rollups.
    for rolled in [false, true] {
        if rolled {
            assert!(store.roll_up(run.id).await.unwrap());
        }
        let slow = store.slowest_results(run.id, 3).await.unwrap();
        let tasks: Vec<i64> = slow.iter().map(|(t, _)| *t).collect();
        assert_eq!(tasks, [11, 10, 8]);
        assert_eq!(slow[0].1.latency_ms, 111);
        let failed = store.most_failed_tests(run.id, 10).await.unwrap();
        let got: Vec<_> = failed
            .iter()
            .map(|f| (f.test_index, f.unpassed, f.total))
            .collect();
        assert_eq!(got, [(3, 3, 3), (2, 2, 3), (1, 1, 3)]);
        assert_eq!(store.most_failed_tests(run.id, 1).await.unwrap().len(), 1);
    }
}

/// The rollups a summary reads (`run_metrics`, `run_assertions`,
/// `run_test_tallies`) equal what the stored results give when grouped
/// directly, after concurrent batches that overlap and a redelivery: a row
/// skipped as already stored adds nothing.
async fn rollups_equal_the_results_after_concurrent_overlapping_batches(store: Arc<dyn Store>) {
    const TASKS: i64 = 120;
    let run = store.create_run(new_run(TASKS)).await.unwrap();
    let row = |t: i64| {
        let mut r = result(t, cycling_status(t * 7 / 5));
        // A test's four results land in different batches; latencies
        // repeat so groups have several members.
        r.test_index = (t % 30) as i32;
        r.latency_ms = 50 + (t % 7) as i32;
        r.score = (t % 4) as f64 / 4.0;
        r.assertions = serde_json::json!([
            {"type": "contains", "pass": t % 2 == 0},
            {"type": "llm-rubric", "metric": if t % 3 == 0 { "tone" } else { "facts" }, "pass": t % 5 != 0},
        ]);
        r
    };
    // Twelve batches of fifteen, each overlapping the next by five, then
    // the first one again.
    let mut batches: Vec<Vec<NewResult>> = (0..12)
        .map(|i| (i * 10..(i * 10 + 15).min(TASKS)).map(row).collect())
        .collect();
    batches.push((0..15).map(row).collect());
    let handles: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let store = store.clone();
            tokio::spawn(async move { store.insert_results(run.id, &batch).await.unwrap() })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    let stored: Vec<NewResult> = (0..TASKS).map(row).collect();

    // Read while the run is not rolled up (grouped from the results), then
    // from the rollups: the same figures.
    assert!(!store.roll_up(Uuid::now_v7()).await.unwrap());
    for rolled in [false, true] {
        if rolled {
            assert!(store.roll_up(run.id).await.unwrap());
            assert!(!store.roll_up(run.id).await.unwrap(), "rolled up twice");
        }
        let record = store.get_run(run.id).await.unwrap().unwrap();
        assert_eq!(record.rolled_up, rolled);
        rollups_match(store.as_ref(), run.id, &stored).await;
    }
}

/// What a summary reads of `run_id` equals `stored` grouped directly.
async fn rollups_match(store: &dyn Store, run_id: Uuid, stored: &[NewResult]) {
    use std::collections::BTreeMap;
    const TASKS: i64 = 120;
    let run = store.get_run(run_id).await.unwrap().unwrap();
    // Metrics, grouped by (provider, prompt, status).
    let mut want = BTreeMap::new();
    for r in stored {
        let e = want
            .entry((r.provider_index, r.prompt_index, r.status as i16))
            .or_insert((0i64, 0i64, 0i64, 0f64, 0f64, 0f64));
        e.0 += 1;
        e.1 += i64::from(r.tokens_in);
        e.2 += i64::from(r.tokens_out);
        e.3 += r.cost_usd;
        e.4 += r.score;
        e.5 += r.score * r.score;
    }
    let got: BTreeMap<_, _> = result_metrics(store, run.id)
        .await
        .into_iter()
        .map(|m| {
            let key = (m.provider_index, m.prompt_index, m.status as i16);
            (
                key,
                (
                    m.count,
                    m.tokens_in,
                    m.tokens_out,
                    m.cost_usd,
                    m.score_sum,
                    m.score_sq_sum,
                ),
            )
        })
        .collect();
    assert_eq!(got.len(), want.len());
    for (key, w) in &want {
        let g = got[key];
        assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2), "{key:?}");
        for (a, b) in [(g.3, w.3), (g.4, w.4), (g.5, w.5)] {
            assert!((a - b).abs() < 1e-9, "{key:?}: {a} != {b}");
        }
    }
    assert_eq!(got.values().map(|g| g.0).sum::<i64>(), TASKS);

    // Latencies of the answered results.
    let mut want = BTreeMap::new();
    for r in stored.iter().filter(|r| r.status != ResultStatus::Error) {
        *want
            .entry((r.provider_index, r.prompt_index, r.latency_ms))
            .or_insert(0i64) += 1;
    }
    assert_eq!(latency_counts(store, run.id).await, want);

    // Assertion tallies.
    let mut want = BTreeMap::new();
    for r in stored {
        for a in r.assertions.as_array().unwrap() {
            let key = (
                r.provider_index,
                r.prompt_index,
                a["type"].as_str().unwrap().to_owned(),
                a.get("metric")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_owned(),
                a["pass"].as_bool().unwrap(),
            );
            *want.entry(key).or_insert(0i64) += 1;
        }
    }
    let mut got = BTreeMap::new();
    store
        .for_each_assertion_metrics(run.id, &mut |m| {
            let key = (m.provider_index, m.prompt_index, m.kind, m.metric, m.passed);
            assert!(got.insert(key, m.count).is_none(), "a group twice");
        })
        .await
        .unwrap();
    assert_eq!(got, want);

    // Per-test tallies: every test that did not always pass, most first.
    let mut tallies = BTreeMap::new();
    for r in stored {
        let e = tallies.entry(r.test_index).or_insert((0i64, 0i64));
        e.0 += i64::from(r.status != ResultStatus::Pass);
        e.1 += 1;
    }
    let mut want: Vec<(i32, i64, i64)> = tallies
        .into_iter()
        .filter(|(_, (unpassed, _))| *unpassed > 0)
        .map(|(t, (u, n))| (t, u, n))
        .collect();
    want.sort_by_key(|&(t, u, _)| (std::cmp::Reverse(u), t));
    let got: Vec<_> = store
        .most_failed_tests(run.id, 1000)
        .await
        .unwrap()
        .iter()
        .map(|f| (f.test_index, f.unpassed, f.total))
        .collect();
    assert_eq!(got, want);
    assert!(got.iter().all(|&(_, _, total)| total == 4));
}

async fn the_previous_and_the_latest_completed_runs_of_a_suite(store: Arc<dyn Store>) {
    let first = completed_run(store.as_ref()).await;
    let other_suite = store
        .create_run(NewRun {
            description: "another suite".into(),
            ..new_run(1)
        })
        .await
        .unwrap();
    store
        .insert_results(other_suite.id, &[result(0, ResultStatus::Pass)])
        .await
        .unwrap();
    let unfinished = store.create_run(new_run(2)).await.unwrap();
    let second = completed_run(store.as_ref()).await;
    let latest = store.create_run(new_run(5)).await.unwrap();
    let second_id = second.id;

    let previous = |run: RunRecord| {
        let store = store.clone();
        async move {
            store
                .previous_completed_run(&run)
                .await
                .unwrap()
                .map(|r| r.id)
        }
    };
    assert_eq!(previous(latest).await, Some(second.id));
    assert_eq!(previous(unfinished).await, Some(first.id));
    assert_eq!(previous(second).await, Some(first.id));
    assert_eq!(previous(first).await, None);

    // The newest completed run of the suite, whatever came after it.
    let latest = |description: &'static str| {
        let store = store.clone();
        async move {
            store
                .latest_completed_run("default", description)
                .await
                .unwrap()
                .map(|r| r.id)
        }
    };
    assert_eq!(latest("demo").await, Some(second_id));
    assert_eq!(latest("another suite").await, Some(other_suite.id));
    assert_eq!(latest("no such suite").await, None);
}

async fn trend_metrics_cover_the_completed_runs_of_a_suite_or_label_in_a_window(
    store: Arc<dyn Store>,
) {
    use gauntlet_store::{TrendQuery, TrendRow};
    let completed = |description: &str, label: &str, latency: i32| {
        let store = store.clone();
        let run = NewRun {
            description: description.into(),
            label: label.into(),
            ..new_run(2)
        };
        async move {
            let run = store.create_run(run).await.unwrap();
            let rows: Vec<_> = (0..2)
                .map(|t| NewResult {
                    latency_ms: latency,
                    provider_index: 0,
                    prompt_index: 0,
                    ..result(t, ResultStatus::Pass)
                })
                .collect();
            store.insert_results(run.id, &rows).await.unwrap();
            run
        }
    };
    let first = completed("demo", "nightly", 100).await;
    let other = completed("other", "nightly", 200).await;
    store.create_run(new_run(2)).await.unwrap(); // "demo", never finished
    let second = completed("demo", "weekly", 300).await;

    let now = chrono::Utc::now();
    let query = |description: Option<&str>, label: Option<&str>, hours: (i64, i64)| TrendQuery {
        project_id: "default".into(),
        description: description.map(str::to_owned),
        label: label.map(str::to_owned),
        since: now + chrono::Duration::hours(hours.0),
        until: now + chrono::Duration::hours(hours.1),
    };
    let read = |q: TrendQuery| {
        let store = store.clone();
        async move {
            let mut got = Vec::new();
            store
                .for_each_trend_metrics(&q, &mut |m| match m.row {
                    TrendRow::Metrics(g) => got.push((m.run_id, -1, g.count)),
                    TrendRow::Latency(l) => got.push((m.run_id, l.latency_ms, l.count)),
                })
                .await
                .unwrap();
            got
        }
    };
    // Each run's group (latency -1 here), then each run's latencies.
    assert_eq!(
        read(query(Some("demo"), None, (-1, 1))).await,
        [
            (first.id, -1, 2),
            (second.id, -1, 2),
            (first.id, 100, 2),
            (second.id, 300, 2)
        ]
    );
    assert_eq!(
        read(query(None, Some("nightly"), (-1, 1))).await,
        [
            (first.id, -1, 2),
            (other.id, -1, 2),
            (first.id, 100, 2),
            (other.id, 200, 2)
        ]
    );
    assert_eq!(
        read(query(Some("demo"), Some("weekly"), (-1, 1))).await,
        [(second.id, -1, 2), (second.id, 300, 2)]
    );
    assert!(read(query(Some("demo"), None, (-3, -1))).await.is_empty());
    let runs = read(query(Some("demo"), None, (-1, 1))).await;
    let created = store.get_run(runs[0].0).await.unwrap().unwrap().created_at;
    assert!(created >= now - chrono::Duration::hours(1) && created < now);
}

async fn unrolled_runs_are_the_completed_ones_past_a_size_not_rolled_up_yet(store: Arc<dyn Store>) {
    let complete = |total: i64| {
        let store = store.clone();
        async move {
            let run = store.create_run(new_run(total)).await.unwrap();
            let rows: Vec<NewResult> = (0..total).map(|t| result(t, ResultStatus::Pass)).collect();
            store.insert_results(run.id, &rows).await.unwrap();
            run.id
        }
    };
    let first = complete(3).await;
    let small = complete(1).await;
    let second = complete(4).await;
    // Going, not completed.
    let going = store.create_run(new_run(5)).await.unwrap();
    store
        .insert_results(going.id, &[result(0, ResultStatus::Pass)])
        .await
        .unwrap();

    assert_eq!(store.unrolled_runs(3, 10).await.unwrap(), [first, second]);
    assert_eq!(store.unrolled_runs(3, 1).await.unwrap(), [first]);
    assert!(store.roll_up(first).await.unwrap());
    assert_eq!(store.unrolled_runs(3, 10).await.unwrap(), [second]);
    assert_eq!(store.unrolled_runs(1, 10).await.unwrap(), [small, second]);
}

async fn the_report_answered_again_is_the_newest_unfailed_one_of_its_run_kind_and_format_since(
    store: Arc<dyn Store>,
) {
    let run = store.create_run(new_run(1)).await.unwrap();
    let long_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let ask = |format: &'static str, kind: &'static str, since| {
        let store = store.clone();
        let report = NewReport {
            id: Uuid::now_v7(),
            project_id: "default".into(),
            run_id: run.id,
            format: format.into(),
            kind: kind.into(),
        };
        let reuse = ReportReuse {
            since,
            pending_since: long_ago,
        };
        async move {
            let (report, created) = store.find_or_create_report(report, reuse).await.unwrap();
            (report.id, created)
        }
    };
    let (first, created) = ask("markdown", RUN_REPORT, long_ago).await;
    assert!(created);
    // Still rendering counts.
    assert_eq!(ask("markdown", RUN_REPORT, long_ago).await, (first, false));
    let (json, created) = ask("json", RUN_REPORT, long_ago).await;
    assert!(created && json != first);
    store
        .finish_report(first, ReportOutcome::Failed("boom".into()))
        .await
        .unwrap();
    let (second, created) = ask("markdown", RUN_REPORT, long_ago).await;
    assert!(created && second != first, "a failed report is made again");
    store
        .finish_report(second, ReportOutcome::Ready("# ok".into()))
        .await
        .unwrap();
    assert_eq!(ask("markdown", RUN_REPORT, long_ago).await, (second, false));
    // A comparison of the same run and format is another report.
    let compare = "compare b=- by=provider alpha=0.05";
    let (compared, created) = ask("markdown", compare, long_ago).await;
    assert!(created && compared != second);
    assert_eq!(ask("markdown", compare, long_ago).await, (compared, false));
    assert_eq!(ask("markdown", RUN_REPORT, long_ago).await, (second, false));
    // Made before `since`: made again.
    let later = a_moment_later().await;
    let (third, created) = ask("markdown", RUN_REPORT, later).await;
    assert!(created && third != second);
}

async fn alerts_move_through_their_states_and_list_newest_first_by_filter(store: Arc<dyn Store>) {
    let at = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
    let alert = |rule: &str, severity: &str, started: i64| AlertRecord {
        id: Uuid::new_v4(),
        rule: rule.into(),
        fingerprint: format!("{rule}{{queue=\"gauntlet.tasks\"}}"),
        severity: severity.into(),
        state: AlertState::Pending,
        labels: [("queue".to_string(), "gauntlet.tasks".to_string())].into(),
        value: 150.0,
        threshold: 100.0,
        summary: "150 task batches waiting".into(),
        started_at: at(started),
        fired_at: None,
        resolved_at: None,
        updated_at: at(started),
    };
    let mut backlog = alert("TaskQueueBacklog", "warning", 0);
    let mut dead = alert("DeadLetters", "critical", 10);
    let noise = alert("CpuHigh", "warning", 20);
    for a in [&backlog, &dead, &noise] {
        store.put_alert(a).await.unwrap();
    }
    // Pending that never fired goes; the others fire, one resolves.
    store.delete_alert(noise.id).await.unwrap();
    backlog.state = AlertState::Firing;
    backlog.fired_at = Some(at(5));
    backlog.updated_at = at(5);
    store.put_alert(&backlog).await.unwrap();
    dead.state = AlertState::Firing;
    dead.fired_at = Some(at(10));
    store.put_alert(&dead).await.unwrap();
    backlog.state = AlertState::Resolved;
    backlog.resolved_at = Some(at(30));
    backlog.value = 3.0;
    store.put_alert(&backlog).await.unwrap();

    let list = async |query: AlertQuery| store.list_alerts(&query).await.unwrap();
    let ten = AlertQuery {
        limit: 10,
        ..Default::default()
    };
    let all = list(ten.clone()).await;
    assert_eq!(
        all,
        vec![dead.clone(), backlog.clone()],
        "newest first, every field kept"
    );
    let active = list(AlertQuery {
        active_only: true,
        ..ten.clone()
    })
    .await;
    assert_eq!(active, vec![dead.clone()]);
    let warnings = list(AlertQuery {
        severity: Some("warning".into()),
        ..ten.clone()
    })
    .await;
    assert_eq!(warnings, vec![backlog.clone()]);
    let by_rule = list(AlertQuery {
        rule: Some("DeadLetters".into()),
        ..ten
    })
    .await;
    assert_eq!(by_rule, vec![dead.clone()]);
    // Pages: one at a time, the second after the first.
    let one = AlertQuery {
        limit: 1,
        ..Default::default()
    };
    let first = list(one.clone()).await;
    let second = list(AlertQuery {
        before: Some((first[0].started_at, first[0].id)),
        ..one
    })
    .await;
    assert_eq!((first, second), (vec![dead], vec![backlog]));
}

async fn the_pool_reports_its_use(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    let stats = store.pool_stats().expect("both backends pool connections");
    assert!(stats.max >= 1 && stats.size <= stats.max, "{stats:?}");
    assert!(stats.idle <= stats.size, "{stats:?}");
    let took = store.time_acquire().await.unwrap();
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
}

async fn projects_keys_audit_events_and_usage(store: Arc<dyn Store>) {
    use chrono::{Duration, SubsecRound, Utc};
    let now = Utc::now().trunc_subsecs(6);
    // The default project is there from the first migration.
    let default = store.get_project("default").await.unwrap().unwrap();
    assert_eq!((default.weight, default.quotas), (1, Quotas::default()));
    let mut team = ProjectRecord {
        id: "team-a".into(),
        name: "Team A".into(),
        quotas: Quotas {
            max_concurrent_runs: Some(2),
            max_tasks_per_run: None,
            max_tasks_per_day: Some(1_000),
            monthly_budget_usd: Some(12.5),
        },
        weight: 3,
        created_at: now,
    };
    assert_eq!(
        store.create_project(&team).await.unwrap().as_ref(),
        Some(&team)
    );
    assert_eq!(
        store.create_project(&team).await.unwrap(),
        None,
        "ids are unique"
    );
    assert_eq!(
        store.get_project("team-a").await.unwrap().as_ref(),
        Some(&team)
    );
    team.quotas.max_tasks_per_run = Some(50);
    team.quotas.monthly_budget_usd = None;
    team.weight = 1;
    assert!(store.update_project(&team).await.unwrap());
    assert_eq!(
        store.get_project("team-a").await.unwrap().as_ref(),
        Some(&team)
    );
    let nobody = ProjectRecord {
        id: "nobody".into(),
        ..team.clone()
    };
    assert!(!store.update_project(&nobody).await.unwrap());
    let ids: Vec<String> = store
        .list_projects()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(ids, ["default", "team-a"]);

    // Keys: stored as given, replaced by id, listed newest first, revoked once.
    let key = |id: &str, at| KeyRecord {
        id: id.into(),
        project_id: "team-a".into(),
        role: Role::Member,
        name: format!("key {id}"),
        secret_sha256: vec![7; 32],
        rate_per_minute: Some(600),
        created_at: at,
        expires_at: Some(at + Duration::days(90)),
        revoked_at: None,
    };
    let old = key("aaaaaaaaaaaa", now - Duration::seconds(10));
    let new = key("bbbbbbbbbbbb", now);
    store.put_key(&old).await.unwrap();
    store.put_key(&new).await.unwrap();
    assert_eq!(
        store.get_key("aaaaaaaaaaaa").await.unwrap().as_ref(),
        Some(&old)
    );
    assert_eq!(store.get_key("cccccccccccc").await.unwrap(), None);
    let listed = store.list_keys("team-a").await.unwrap();
    assert_eq!(listed, [new.clone(), old.clone()]);
    assert!(store.list_keys("default").await.unwrap().is_empty());
    let replaced = KeyRecord {
        role: Role::Admin,
        rate_per_minute: None,
        ..old.clone()
    };
    store.put_key(&replaced).await.unwrap();
    assert_eq!(
        store.get_key(&old.id).await.unwrap().unwrap().role,
        Role::Admin
    );
    assert!(
        !store.revoke_key("default", &old.id, now).await.unwrap(),
        "not its project"
    );
    assert!(store.revoke_key("team-a", &old.id, now).await.unwrap());
    store
        .revoke_key("team-a", &old.id, now + Duration::hours(1))
        .await
        .unwrap();
    let revoked = store.get_key(&old.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(now), "the first revocation stands");
    assert!(!revoked.is_live(now + Duration::seconds(1)));
    assert!(new.is_live(now) && !new.is_live(now + Duration::days(91)));

    // The audit log: per project, newest first, paged by id.
    let event = |n: i64, project: &str| AuditEvent {
        id: 0,
        at: now + Duration::seconds(n),
        project_id: project.into(),
        key_id: "bbbbbbbbbbbb".into(),
        method: "/gauntlet.v1.RunService/SubmitRun".into(),
        target: format!("run-{n}"),
        outcome: "ok".into(),
        peer: "127.0.0.1:5000".into(),
    };
    store
        .record_audit(&[event(1, "team-a"), event(2, "default"), event(3, "team-a")])
        .await
        .unwrap();
    store.record_audit(&[event(4, "team-a")]).await.unwrap();
    let page = store.list_audit("team-a", 2, None).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["run-4", "run-3"]
    );
    assert_eq!(page[0].at, now + Duration::seconds(4));
    assert_eq!(page[0].peer, "127.0.0.1:5000");
    let rest = store
        .list_audit("team-a", 10, Some(page[1].id))
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        ["run-1"]
    );

    // Usage: active runs, tasks since a time, cost since a time.
    let mut a = new_run(40);
    a.project_id = "team-a".into();
    let a = store.create_run(a).await.unwrap();
    let mut b = new_run(60);
    b.project_id = "team-a".into();
    let b = store.create_run(b).await.unwrap();
    store
        .insert_results(b.id, &[result(0, ResultStatus::Pass)])
        .await
        .unwrap();
    store.cancel_run(b.id).await.unwrap();
    store.create_run(new_run(1_000)).await.unwrap();
    let usage = store
        .project_usage("team-a", now - Duration::days(1), now - Duration::days(1))
        .await
        .unwrap();
    assert_eq!(usage.active_runs, 1, "the cancelled run is not active");
    assert_eq!(usage.tasks_since, 100);
    let cost = result(0, ResultStatus::Pass).cost_usd;
    assert!((usage.cost_since - cost).abs() < 1e-12, "{usage:?}");
    let later = store
        .project_usage(
            "team-a",
            a.created_at + Duration::days(1),
            a.created_at + Duration::days(1),
        )
        .await
        .unwrap();
    assert_eq!((later.tasks_since, later.cost_since), (0, 0.0));
}
