//! How this worker builds the provider clients of a run: each attempt under
//! the cluster's shared rate limits and this worker's adaptive concurrency
//! for its provider and key, and the whole call behind the response cache
//! shared by all workers (unless the run opted out).

use std::{sync::Arc, time::Duration};

use gauntlet_cache::Cache;
use gauntlet_config::WorkerConfig;
use gauntlet_providers::{
    Provider, ProviderFactory,
    cache::{CachedProvider, Lookup, LookupHook},
    limit::{AdaptiveOptions, AttemptLimits, ProviderLimits},
};
use gauntlet_telemetry::metrics::Registry;
use serde_json::{Map, Value};

pub struct ProviderCalls {
    factory: Arc<ProviderFactory>,
    limits: ProviderLimits,
    /// The shared cache and how long answers live in it; `None` when off.
    responses: Option<(Cache, Duration)>,
    hook: Option<LookupHook>,
}

impl ProviderCalls {
    /// Plain clients: no shared limits, no cache (tests, tools).
    pub fn direct(factory: Arc<ProviderFactory>) -> Self {
        Self {
            factory,
            limits: ProviderLimits::new(
                Arc::new(gauntlet_cache::limiter::LocalLimiter::new()),
                None,
            ),
            responses: None,
            hook: None,
        }
    }

    /// Limits from `cache`'s rate limiter (Redis-backed when it has Redis),
    /// answers cached in `cache`, hits and misses counted in `metrics`.
    pub fn new(
        factory: Arc<ProviderFactory>,
        config: &WorkerConfig,
        cache: &Cache,
        metrics: &Registry,
    ) -> Self {
        let adaptive = config.adaptive_concurrency.then_some(AdaptiveOptions {
            max_in_flight: config.max_in_flight,
            grow_after: config.concurrency_grow_after,
        });
        let responses = (config.response_cache && config.response_cache_ttl_secs > 0).then(|| {
            (
                cache.clone(),
                Duration::from_secs(config.response_cache_ttl_secs),
            )
        });
        let counts = gauntlet_service::metrics::CacheCounters::new(metrics, "responses");
        Self {
            factory,
            limits: ProviderLimits::new(cache.rate_limiter(), adaptive),
            responses,
            hook: Some(Arc::new(move |lookup| {
                counts.record(matches!(lookup, Lookup::Hit));
            })),
        }
    }

    /// The client for suite provider `id` with `config`; `use_cache` false
    /// for a run that asked for fresh answers. Each attempt waits for
    /// `attempts` (the store gate, the run's and the worker's calls in
    /// flight) and holds its slots only while it runs.
    pub fn build(
        &self,
        id: &str,
        config: &Map<String, Value>,
        use_cache: bool,
        attempts: &AttemptLimits,
    ) -> Result<Arc<dyn Provider>, String> {
        let provider = self
            .limits
            .build(&self.factory, id, config, attempts)
            .map_err(|e| e.to_string())?;
        Ok(match &self.responses {
            // Echo answers locally: a cache round trip would only cost.
            Some((cache, ttl)) if use_cache && id.trim() != "echo" => {
                let cached = CachedProvider::new(provider, id, config, cache.clone(), *ttl);
                Arc::new(match &self.hook {
                    Some(hook) => cached.on_lookup(hook.clone()),
                    None => cached,
                })
            }
            _ => provider,
        })
    }
}
