//! Quality rules: each newly completed run of a suite is compared with the
//! suite's previous completed run, provider by provider, by analytics
//! (paired McNemar with Holm's correction), and a provider whose pass rate
//! fell by more than the rule's points (significantly, if the rule asks)
//! holds the rule for that suite and provider until a later run does not.
//! Every project's runs are watched; an alert is labelled with its project.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
};

use gauntlet_proto::v1::{self, analytics_service_client::AnalyticsServiceClient};
use tonic::transport::Channel;
use tracing::warn;
use uuid::Uuid;

use crate::{
    book::{Book, RecentRun},
    rules::{Instance, QualityRule},
};

/// Recent runs looked at per check.
const RECENT_RUNS: u32 = 50;

pub struct Quality {
    store: Arc<dyn Book>,
    analytics: AnalyticsServiceClient<Channel>,
    /// Runs already compared (or with nothing to compare with), of those
    /// the last check listed.
    seen: HashSet<Uuid>,
    /// The newest verdict per suite: its instances, one per provider.
    verdicts: HashMap<String, Vec<Instance>>,
}

impl Quality {
    pub fn new(store: Arc<dyn Book>, analytics: AnalyticsServiceClient<Channel>) -> Self {
        Self {
            store,
            analytics,
            seen: HashSet::new(),
            verdicts: HashMap::new(),
        }
    }

    /// Compares the completed runs not compared yet, oldest first, and
    /// returns the rule's instances: the newest verdict of every suite.
    pub async fn check(&mut self, rule: &QualityRule) -> Vec<Instance> {
        let runs = match self.store.recent_runs(RECENT_RUNS).await {
            Ok(runs) => runs,
            Err(error) => {
                warn!(%error, "quality rules: cannot list the recent runs");
                return self.instances();
            }
        };
        // Only the runs still among the newest can come up again.
        let listed: HashSet<Uuid> = runs.iter().map(|r| r.id).collect();
        self.seen.retain(|id| listed.contains(id));
        let mut fresh: Vec<RecentRun> = runs
            .into_iter()
            .filter(|r| r.completed && !self.seen.contains(&r.id))
            .collect();
        fresh.sort_by_key(|r| r.created_at);
        for run in fresh {
            match self.compare(rule, &run).await {
                Ok(Some(instances)) => {
                    self.verdicts
                        .insert(format!("{}/{}", run.project_id, run.description), instances);
                }
                Ok(None) => {}
                // Tried again at the next check.
                Err(error) => {
                    warn!(%error, run_id = %run.id, "quality rules: cannot compare the run");
                    continue;
                }
            }
            self.seen.insert(run.id);
        }
        self.instances()
    }

    fn instances(&self) -> Vec<Instance> {
        self.verdicts.values().flatten().cloned().collect()
    }

    async fn compare(
        &mut self,
        rule: &QualityRule,
        run: &RecentRun,
    ) -> anyhow::Result<Option<Vec<Instance>>> {
        let Some(baseline) = self.store.previous_completed_run(run).await? else {
            return Ok(None);
        };
        let comparison = self
            .analytics
            .compare_runs(v1::CompareRunsRequest {
                run_a: baseline.id.to_string(),
                run_b: run.id.to_string(),
                by: v1::CompareBy::Provider as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        let suite = if run.description.is_empty() {
            "(unnamed)".to_owned()
        } else {
            run.description.clone()
        };
        Ok(Some(
            comparison
                .pairs
                .iter()
                .filter(|p| p.verdict != v1::Verdict::NoData as i32)
                .map(|p| {
                    let drop = (p.a_pass_rate - p.b_pass_rate) * 100.0;
                    let significant = p.verdict == v1::Verdict::Worse as i32;
                    let provider = p.b.as_ref().map_or("", |b| b.provider.as_str());
                    Instance {
                        labels: BTreeMap::from([
                            ("suite".to_owned(), suite.clone()),
                            ("provider".to_owned(), provider.to_owned()),
                            ("project".to_owned(), run.project_id.clone()),
                        ]),
                        annotations: BTreeMap::from([
                            ("baseline".to_owned(), baseline.id.to_string()),
                            ("run".to_owned(), run.id.to_string()),
                        ]),
                        value: (drop * 10.0).round() / 10.0,
                        holds: drop > rule.drop_points && (significant || !rule.significant),
                    }
                })
                .collect(),
        ))
    }
}
