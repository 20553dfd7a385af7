//! Puts each run's task batches on the task queue a window at a time, so
//! runs submitted together progress together.
//!
//! The task queue is first in, first out: a run published whole in one go
//! sits in front of every run submitted after it, which then waits for it
//! to end. Instead the gateway that took a run keeps its tasks
//! ([`Paced::ready`]: the ones whose tests are stored) and publishes only
//! its share of the window at once: the window divided by the runs it is
//! feeding, at least one batch. The window starts at its floor,
//! [`GatewayConfig::dispatch_window_tasks`] or, if more, twice what the
//! task queue's consumers hold at once (consumers × `worker.prefetch` ×
//! `amqp.batch_size`), so a fleet scaled out is not starved by a window
//! sized for a few workers. It then follows the queue ([`adapt`]): tasks
//! waiting out a provider's `Retry-After` count as in flight but occupy
//! no one, so while runs are held back by their share and the queue runs
//! dry the window grows (by a quarter a pass, up to [`MAX_GROWTH`] × its
//! floor), and while more than the floor waits on the queue it shrinks
//! back. The queue is read every pass that holds a run back, and every
//! [`LOOK_EVERY`] passes otherwise. A pass
//! every [`TICK`] reads how far those runs have got (one query; while
//! every run it feeds is out whole, only every [`LOOK_EVERY`] passes, to
//! forget those that ended) and tops
//! each up to its share again, so the queue holds a few batches of every
//! run, interleaved in the order they come back, and a new run's first
//! batches wait behind at most about one window of work. A run whose tasks
//! all fit in its share goes out whole at once, as before; a window of 0
//! turns pacing off.
//!
//! What is not published yet lives only in this gateway. If it stops, its
//! runs' remaining tasks are neither stored nor queued, and the reconciler
//! publishes them once the run has been quiet for `stale_after_secs` while
//! the task queue is empty (`Store::missing_tasks`): late, never lost.
//!
//! [`GatewayConfig::dispatch_window_tasks`]: gauntlet_config::GatewayConfig::dispatch_window_tasks

use std::{
    collections::HashMap,
    ops::Range,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use gauntlet_bus::{Message, QueueName};
use gauntlet_config::GauntletConfig;
use gauntlet_proto::internal::v1::TaskBatch;
use gauntlet_service::internal;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;
use uuid::Uuid;

use crate::{Deps, quota::Allowance};

/// How often the runs being fed are read and topped up.
pub const TICK: Duration = Duration::from_millis(50);
/// Messages per publish call, so a huge run does not hold one giant batch
/// of unconfirmed publishes.
const PUBLISH_CHUNK: usize = 500;
/// Passes between two warnings that publishing still fails.
const WARN_EVERY: u32 = 50;
/// Passes between two reads of the task queue while no run is held back.
pub const LOOK_EVERY: u32 = 20;
/// How far above its floor the window may grow.
pub const MAX_GROWTH: u64 = 16;

/// The runs this gateway feeds. Cheap to clone: all clones share them.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    deps: Deps,
    batch_size: u64,
    /// `gateway.dispatch_window_tasks`: 0 publishes every task as soon as
    /// its test is stored.
    configured: u64,
    /// Batches a worker holds at once (`worker.prefetch`).
    prefetch: u64,
    /// Tasks kept on the queue (or in workers' hands) across all runs: see
    /// [`floor`] and [`adapt`].
    window: AtomicU64,
    /// Passes made.
    passes: AtomicU32,
    runs: Mutex<HashMap<Uuid, Fed>>,
}

/// A run being fed, with what its share is weighed by.
#[derive(Clone)]
struct Fed {
    project: Arc<str>,
    /// Its project's weight against other projects.
    project_weight: u32,
    /// Its weight against its project's other runs (its priority).
    factor: u32,
    paced: Arc<tokio::sync::Mutex<Paced>>,
}

/// One run being fed.
#[derive(Debug)]
struct Paced {
    run_id: Uuid,
    project: Arc<str>,
    /// Trace context of its submission, carried by every batch.
    headers: Vec<(String, String)>,
    /// Tasks `0..ready` may go out: their tests are stored.
    ready: u64,
    /// Tasks `0..dispatched` went out (the broker confirmed them).
    dispatched: u64,
    /// Tasks with a stored result, as last read.
    done: u64,
}

impl Dispatcher {
    pub fn new(deps: Deps, config: &GauntletConfig) -> Self {
        let batch_size = u64::from(config.amqp.batch_size.max(1));
        let configured = config.gateway.dispatch_window_tasks;
        Self {
            inner: Arc::new(Inner {
                deps,
                batch_size,
                configured,
                prefetch: u64::from(config.worker.prefetch),
                window: AtomicU64::new(configured),
                passes: AtomicU32::new(0),
                runs: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Starts feeding `run_id` (stored, with no task ready yet). Called in
    /// the submission's span: its batches carry that trace context.
    pub fn open(&self, run_id: Uuid, allowance: &Allowance) {
        let project: Arc<str> = allowance.project.as_str().into();
        let paced = Paced {
            run_id,
            project: project.clone(),
            headers: gauntlet_telemetry::propagation::inject_current(),
            ready: 0,
            dispatched: 0,
            done: 0,
        };
        self.runs().insert(
            run_id,
            Fed {
                project,
                project_weight: allowance.project_weight.max(1),
                factor: allowance.factor.max(1),
                paced: Arc::new(tokio::sync::Mutex::new(paced)),
            },
        );
    }

    /// Tasks `0..ready` of `run_id` may now go out: publishes its share of
    /// them at once. If the broker refuses them the run ends `failed` (it
    /// is stored but cannot be fed) and the error is returned. A run no
    /// longer fed (it ended) gets nothing.
    pub async fn release(&self, run_id: Uuid, ready: u64) -> Result<(), Status> {
        let Some(run) = self.fed(run_id) else {
            return Ok(());
        };
        let mut paced = run.lock().await;
        paced.ready = paced.ready.max(ready);
        let share = self
            .shares()
            .get(&run_id)
            .copied()
            .unwrap_or(self.inner.batch_size);
        let sent = match self.room(&paced, share) {
            Some(tasks) => self.send(vec![(paced, tasks)]).await,
            None => Ok(()),
        };
        if let Err(e) = sent {
            self.forget(run_id);
            warn!(run_id = %run_id, error = %e, "publishing tasks failed, failing run");
            let _ = self
                .inner
                .deps
                .store
                .fail_run(run_id, "its tasks could not be queued")
                .await;
            return Err(internal("publish tasks", e));
        }
        Ok(())
    }

    /// Tasks of `run_id` published so far.
    pub async fn published(&self, run_id: Uuid) -> u64 {
        match self.fed(run_id) {
            Some(run) => run.lock().await.dispatched,
            None => 0,
        }
    }

    /// Stops feeding `run_id`: what is not published stays unpublished.
    pub fn forget(&self, run_id: Uuid) {
        self.runs().remove(&run_id);
    }

    /// Tops up the runs it feeds every [`TICK`] until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = 0u32;
        loop {
            tokio::select! {
                // Stopped is stopped: no pass after it, even if one is due.
                biased;
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.pass().await {
                Ok(()) => failing = 0,
                Err(e) => {
                    if failing.is_multiple_of(WARN_EVERY) {
                        warn!(error = %e, passes = failing + 1, "feeding runs failed; trying again");
                    }
                    failing += 1;
                }
            }
        }
    }

    /// One pass: reads the runs it feeds, forgets those that ended and
    /// tops up the others. While every run it feeds is out whole, it reads
    /// them only every [`LOOK_EVERY`] passes, to forget the ended ones.
    pub async fn pass(&self) -> anyhow::Result<()> {
        let passes = self.inner.passes.fetch_add(1, Ordering::Relaxed);
        let fed: Vec<_> = self.runs().values().map(|f| f.paced.clone()).collect();
        let waiting = fed.iter().any(|run| {
            // One its submission holds is being released: it may wait.
            run.try_lock()
                .map_or(true, |paced| paced.dispatched < paced.ready)
        });
        if fed.is_empty() || !(waiting || passes.is_multiple_of(LOOK_EVERY)) {
            return Ok(());
        }
        let ids: Vec<Uuid> = self.runs().keys().copied().collect();
        let records = self.inner.deps.store.get_runs(&ids).await?;
        let mut done: HashMap<Uuid, u64> = HashMap::with_capacity(records.len());
        for record in records {
            if !record.status.is_terminal() {
                done.insert(record.id, record.completed_tasks.max(0) as u64);
            }
        }
        for id in &ids {
            if !done.contains_key(id) {
                // Ended (or gone): nothing of it is published any more.
                self.forget(*id);
            }
        }
        let fed: Vec<_> = done
            .into_iter()
            .filter_map(|(id, done)| Some((self.fed(id)?, done)))
            .collect();
        let mut locked = Vec::with_capacity(fed.len());
        for (run, done) in &fed {
            // A run its submission is publishing is topped up by it.
            let Ok(mut paced) = run.try_lock() else {
                continue;
            };
            paced.done = paced.done.max(*done);
            locked.push(paced);
        }
        if self.inner.configured > 0 {
            let shares = self.shares();
            let held_back = locked.iter().any(|paced| {
                let share = shares.get(&paced.run_id).copied().unwrap_or(0);
                paced.dispatched < paced.ready
                    && paced.dispatched.saturating_sub(paced.done) >= share
            });
            if held_back || passes.is_multiple_of(LOOK_EVERY) {
                self.size_window(held_back).await;
            }
        }
        let shares = self.shares();
        let topped = locked
            .into_iter()
            .filter_map(|paced| {
                let share = shares.get(&paced.run_id).copied()?;
                let tasks = self.room(&paced, share)?;
                Some((paced, tasks))
            })
            .collect();
        self.send(topped).await
    }

    /// Publishes `tasks` of each run, every run's batches together (a
    /// pass costs one confirm round trip however many runs it tops up), a
    /// few hundred messages a call; each run's `dispatched` moves once all
    /// are confirmed.
    async fn send<P>(&self, topped: Vec<(P, Range<u64>)>) -> anyhow::Result<()>
    where
        P: std::ops::DerefMut<Target = Paced>,
    {
        let messages: Vec<Message> = topped
            .iter()
            .flat_map(|(paced, tasks)| self.messages(paced, tasks.clone()))
            .collect();
        let mut messages = messages.into_iter();
        loop {
            let chunk: Vec<Message> = messages.by_ref().take(PUBLISH_CHUNK).collect();
            if chunk.is_empty() {
                break;
            }
            self.inner.deps.bus.publish(QueueName::Tasks, chunk).await?;
        }
        for (mut paced, tasks) in topped {
            paced.dispatched = tasks.end;
        }
        Ok(())
    }

    /// Sizes the window to the task queue: its consumers and what waits on
    /// it (kept as it was if the broker cannot say).
    async fn size_window(&self, held_back: bool) {
        if let Ok(stats) = self.inner.deps.bus.queue_stats(QueueName::Tasks).await {
            let inner = &self.inner;
            let floor = floor(
                inner.configured,
                stats.consumers,
                inner.prefetch,
                inner.batch_size,
            );
            let waiting = stats.messages.saturating_mul(inner.batch_size);
            let window = adapt(self.window(), floor, waiting, held_back);
            inner.window.store(window, Ordering::Relaxed);
        }
    }

    /// Tasks kept on the queue across all runs now.
    pub fn window(&self) -> u64 {
        self.inner.window.load(Ordering::Relaxed)
    }

    /// Each run's share of the window ([`shares`]).
    fn shares(&self) -> HashMap<Uuid, u64> {
        let runs = self.runs();
        shares(
            self.window(),
            self.inner.batch_size,
            runs.iter()
                .map(|(id, fed)| (*id, &*fed.project, fed.project_weight, fed.factor)),
        )
    }

    /// The ready tasks of `paced` its share has room for, if any: whole
    /// batches, the last one cut at `ready`.
    fn room(&self, paced: &Paced, share: u64) -> Option<Range<u64>> {
        let in_flight = paced.dispatched.saturating_sub(paced.done);
        if paced.dispatched >= paced.ready || in_flight >= share {
            return None;
        }
        let batch = self.inner.batch_size;
        let room = (share - in_flight).div_ceil(batch).saturating_mul(batch);
        Some(paced.dispatched..paced.ready.min(paced.dispatched.saturating_add(room)))
    }

    /// The batches of `tasks` of `paced`'s run.
    fn messages(&self, paced: &Paced, tasks: Range<u64>) -> impl Iterator<Item = Message> + use<> {
        let batch = self.inner.batch_size;
        let end = tasks.end;
        let run_id = paced.run_id.to_string();
        let project = paced.project.clone();
        let headers = paced.headers.clone();
        let linked = gauntlet_telemetry::propagation::as_link(&headers);
        tasks.step_by(batch as usize).map(move |first| Message {
            payload: TaskBatch {
                run_id: run_id.clone(),
                project_id: project.to_string(),
                first_task: first,
                count: (end - first).min(batch) as u32,
                ..TaskBatch::default()
            }
            .encode_to_vec(),
            // Past its first tasks, a run's batches only link to its trace.
            headers: if first < gauntlet_service::TRACE_PARENTED_TASKS {
                headers.clone()
            } else {
                linked.clone()
            },
        })
    }

    fn fed(&self, run_id: Uuid) -> Option<Arc<tokio::sync::Mutex<Paced>>> {
        self.runs().get(&run_id).map(|f| f.paced.clone())
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Fed>> {
        self.inner
            .runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Each run's share of `window`: the window is split between the projects
/// with runs being fed by their weights, and each project's part between
/// its runs by their factors (priorities), so a project's many or huge
/// runs take its part and no more. Every share is at least one batch; a
/// window of 0 (no pacing) gives every run all it has.
pub fn shares<'a>(
    window: u64,
    batch_size: u64,
    runs: impl Iterator<Item = (Uuid, &'a str, u32, u32)> + Clone,
) -> HashMap<Uuid, u64> {
    if window == 0 {
        return runs.map(|(id, ..)| (id, u64::MAX)).collect();
    }
    // Per project: its weight and the sum of its runs' factors.
    let mut projects: HashMap<&str, (u128, u128)> = HashMap::new();
    for (_, project, weight, factor) in runs.clone() {
        let entry = projects.entry(project).or_insert((0, 0));
        entry.0 = entry.0.max(u128::from(weight.max(1)));
        entry.1 += u128::from(factor.max(1));
    }
    let total: u128 = projects.values().map(|(weight, _)| weight).sum();
    runs.map(|(id, project, _, factor)| {
        let (weight, factors) = projects[project];
        let share = u128::from(window) * weight * u128::from(factor.max(1)) / (total * factors);
        (id, (share.min(u128::from(u64::MAX)) as u64).max(batch_size))
    })
    .collect()
}

/// The window's floor: `configured` tasks, or twice what `consumers`
/// holding `prefetch` batches of `batch_size` tasks each hold at once, if
/// more; 0 (no pacing) stays 0.
pub fn floor(configured: u64, consumers: u32, prefetch: u64, batch_size: u64) -> u64 {
    if configured == 0 {
        return 0;
    }
    let held = u64::from(consumers)
        .saturating_mul(prefetch)
        .saturating_mul(batch_size);
    configured.max(held.saturating_mul(2))
}

/// The next window after `window`, with `waiting` tasks on the queue:
/// grown by a quarter (up to [`MAX_GROWTH`] × `floor`) when runs are held
/// back by their share while less than a quarter of the floor waits (the
/// workers are running dry: what is in flight is mostly waiting out a
/// provider), shrunk by an eighth towards `floor` while more than the floor
/// waits (a new run would wait behind it), else kept.
pub fn adapt(window: u64, floor: u64, waiting: u64, held_back: bool) -> u64 {
    let window = window.max(floor);
    if held_back && waiting < floor / 4 {
        (window + window / 4).min(floor.saturating_mul(MAX_GROWTH))
    } else if waiting > floor {
        (window - window / 8).max(floor)
    } else {
        window
    }
}

#[cfg(test)]
mod tests {
    use super::{MAX_GROWTH, adapt, floor, shares};
    use uuid::Uuid;

    #[test]
    fn projects_split_the_window_by_weight_and_their_runs_by_priority() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        // Project a has three runs (one interactive, two batch), b one.
        let runs = [
            (ids[0], "a", 1, 4),
            (ids[1], "a", 1, 1),
            (ids[2], "a", 1, 1),
            (ids[3], "b", 1, 4),
        ];
        let got = shares(12_000, 50, runs.iter().copied());
        // b's one run has half the window, however many runs a has.
        assert_eq!(got[&ids[3]], 6_000);
        // a's half: 4 : 1 : 1.
        assert_eq!(
            (got[&ids[0]], got[&ids[1]], got[&ids[2]]),
            (4_000, 1_000, 1_000)
        );
        // Weights: b at 3 has three quarters.
        let runs = [(ids[0], "a", 1, 4), (ids[3], "b", 3, 4)];
        let got = shares(12_000, 50, runs.iter().copied());
        assert_eq!((got[&ids[0]], got[&ids[3]]), (3_000, 9_000));
        // At least a batch each, and no pacing means no limit.
        let many: Vec<_> = (0..1000).map(|_| (Uuid::new_v4(), "a", 1, 1)).collect();
        assert!(
            shares(5_000, 50, many.iter().copied())
                .values()
                .all(|&s| s == 50)
        );
        assert_eq!(shares(0, 50, runs.iter().copied())[&ids[0]], u64::MAX);
    }

    #[test]
    fn the_floor_grows_with_the_fleet_past_its_setting_and_never_turns_pacing_on() {
        // Two workers holding 16 batches of 50: 1,600 tasks, under 5,000.
        assert_eq!(floor(5_000, 2, 16, 50), 5_000);
        // Twenty: 16,000 held, so 32,000 kept out.
        assert_eq!(floor(5_000, 20, 16, 50), 32_000);
        // Nobody consuming: the setting.
        assert_eq!(floor(5_000, 0, 16, 50), 5_000);
        // Pacing off stays off.
        assert_eq!(floor(0, 20, 16, 50), 0);
    }

    #[test]
    fn the_window_grows_while_the_queue_runs_dry_and_shrinks_back_while_it_is_deep() {
        // Held back with an empty queue: a quarter more each pass, up to
        // its ceiling.
        let mut w = 5_000;
        let mut grown = vec![];
        for _ in 0..3 {
            w = adapt(w, 5_000, 0, true);
            grown.push(w);
        }
        assert_eq!(grown, [6_250, 7_812, 9_765]);
        assert_eq!(adapt(79_000, 5_000, 0, true), 5_000 * MAX_GROWTH);
        // Enough waiting, or nobody held back: kept.
        assert_eq!(adapt(9_765, 5_000, 2_000, true), 9_765);
        assert_eq!(adapt(9_765, 5_000, 0, false), 9_765);
        // Deep: an eighth less a pass, never under the floor.
        assert_eq!(adapt(9_765, 5_000, 6_000, true), 8_545);
        assert_eq!(adapt(5_100, 5_000, 6_000, false), 5_000);
        // A floor raised by the fleet lifts the window with it.
        assert_eq!(adapt(5_000, 32_000, 20_000, false), 32_000);
    }
}
