//! Grading a task's output, model-graded assertions included: asks
//! `gauntlet_core::grading::model` which grader calls are needed, makes them
//! (each under the worker-wide in-flight limit, with grader clients built
//! once per run), and grades with the answers. A grader call that fails
//! after its retries makes the result an `error`, never a `fail`. What the
//! grader calls cost is added to the result's `cost_usd`; its tokens are
//! not counted in the result's token columns (those are the tested call's).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures::future::join_all;
use gauntlet_core::{
    grading::{
        ProviderOutput,
        model::{self, Graded, ModelAnswer, ModelAnswers, ModelCall, ModelRequest},
    },
    suite::{ProviderSpec, TestCase},
};
use gauntlet_providers::Provider;
use tokio::sync::Semaphore;
use tracing::warn;

use crate::calls::ProviderCalls;

/// More rounds than any assertion needs (two); a guard against a loop.
const MAX_ROUNDS: usize = 4;

/// A grader client, or why it could not be built.
type Built = Result<Arc<dyn Provider>, String>;

/// A run's grader clients, built on first use and kept with the run plan.
/// They are built like the run's own clients: grader calls spend the same
/// cluster-wide rate limits and share the response cache.
pub struct Graders {
    calls: Arc<ProviderCalls>,
    use_cache: bool,
    /// By provider id and config.
    built: Mutex<HashMap<String, Built>>,
}

impl Graders {
    pub fn new(calls: Arc<ProviderCalls>, use_cache: bool) -> Self {
        Self {
            calls,
            use_cache,
            built: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, spec: &ProviderSpec) -> Built {
        let key = format!(
            "{}\n{}",
            spec.id,
            serde_json::Value::Object(spec.config.clone())
        );
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        built
            .entry(key)
            .or_insert_with(|| {
                self.calls
                    .build(&spec.id, &spec.config, self.use_cache, &Default::default())
            })
            .clone()
    }
}

/// A grade and what its grader calls cost.
pub struct Grading {
    pub graded: Graded,
    pub cost_usd: f64,
}

/// Grades `output` (the answer to `prompt`) against `test`.
pub async fn grade(
    graders: &Graders,
    in_flight: &Semaphore,
    test: &TestCase,
    prompt: &str,
    output: &ProviderOutput,
) -> Grading {
    let mut answers = ModelAnswers::default();
    let mut cost_usd = 0.0;
    for _ in 0..MAX_ROUNDS {
        let checks = model::model_checks(test, prompt, output, &answers);
        if checks.is_empty() {
            break;
        }
        let rounds = join_all(checks.iter().map(|check| {
            join_all(
                check
                    .requests
                    .iter()
                    .map(|request| call(graders, in_flight, request)),
            )
        }))
        .await;
        for (check, results) in checks.iter().zip(rounds) {
            let got = results
                .into_iter()
                .map(|(answer, cost)| {
                    cost_usd += cost;
                    answer
                })
                .collect();
            answers.record(check, got);
        }
    }
    Grading {
        graded: model::grade(test, output, &answers),
        cost_usd,
    }
}

/// One grader call: the answer and its cost.
async fn call(
    graders: &Graders,
    in_flight: &Semaphore,
    request: &ModelRequest,
) -> (ModelAnswer, f64) {
    let id = &request.provider.id;
    let provider = match graders.get(&request.provider) {
        Ok(p) => p,
        Err(e) => return (ModelAnswer::error(format!("grader `{id}`: {e}")), 0.0),
    };
    let Ok(_permit) = in_flight.acquire().await else {
        return (ModelAnswer::error("the worker is shutting down"), 0.0);
    };
    let result = match &request.call {
        ModelCall::Complete { prompt } => provider
            .complete(prompt)
            .await
            .map(|c| (ModelAnswer::text(c.output), c.cost_usd)),
        ModelCall::Embed { texts } => provider
            .embed(texts)
            .await
            .map(|e| (ModelAnswer::Embeddings { vectors: e.vectors }, e.cost_usd)),
    };
    result.unwrap_or_else(|error| {
        warn!(grader = %id, error = %error, "grader call failed");
        (ModelAnswer::error(format!("grader `{id}`: {error}")), 0.0)
    })
}
