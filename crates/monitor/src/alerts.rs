//! The life of an alert: pending while its rule's condition holds, firing
//! once it has held for the rule's `for`, resolved when it stops holding.
//! Every change is written to the store; firing and resolving are
//! published on the event bus (`alert.<rule>.firing|resolved`) and posted
//! to the configured webhooks, with retries.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, Utc};
use gauntlet_bus::{Bus, Message};
use gauntlet_store::{AlertQuery, AlertRecord, AlertState};

use crate::book::Book;
use gauntlet_telemetry::metrics::Registry;
use serde_json::json;
use tracing::{info, warn};
use uuid::Uuid;

use crate::rules::{Instance, Rule};

/// The longest an alert's write may wait for the store.
pub const STORE_WAIT: Duration = Duration::from_secs(2);

/// Where alerts go besides the store.
pub struct Notifier {
    pub bus: Arc<dyn Bus>,
    pub webhooks: Vec<String>,
    pub attempts: u32,
    pub http: reqwest::Client,
    /// Counts deliveries (`gauntlet_webhook_deliveries_total{outcome}`).
    pub registry: Arc<Registry>,
}

/// The alerts that are pending or firing, and what resolved lately.
pub struct Alerting {
    store: Option<Arc<dyn Book>>,
    notifier: Arc<Notifier>,
    registry: Arc<Registry>,
    active: HashMap<String, AlertRecord>,
    resolved_at: HashMap<String, DateTime<Utc>>,
    /// `gauntlet_alerts` series set last time, to zero those now empty.
    gauges: HashSet<(String, String, String)>,
}

impl Alerting {
    /// Picks up the alerts a previous monitor left active, so they resolve.
    pub async fn new(
        store: Option<Arc<dyn Book>>,
        notifier: Arc<Notifier>,
        registry: Arc<Registry>,
    ) -> Self {
        let mut active = HashMap::new();
        if let Some(store) = &store {
            match store
                .list_alerts(&AlertQuery {
                    active_only: true,
                    limit: 10_000,
                    ..Default::default()
                })
                .await
            {
                Ok(alerts) => {
                    for a in alerts {
                        active.insert(a.fingerprint.clone(), a);
                    }
                }
                Err(error) => warn!(%error, "cannot read the active alerts, starting afresh"),
            }
        }
        Self {
            store,
            notifier,
            registry,
            active,
            resolved_at: HashMap::new(),
            gauges: HashSet::new(),
        }
    }

    /// Shows every rule's `gauntlet_alerts` series, at 0 until it has alerts.
    pub fn seed(&mut self, rules: &[Rule]) {
        for rule in rules {
            for state in ["pending", "firing"] {
                self.gauges.insert((
                    rule.name.clone(),
                    rule.severity.as_str().to_owned(),
                    state.to_owned(),
                ));
            }
        }
        self.publish_counts();
    }

    /// The alerts pending or firing now.
    pub fn active(&self) -> impl Iterator<Item = &AlertRecord> {
        self.active.values()
    }

    /// Moves `rule`'s alerts on by its `instances` at `now`.
    pub async fn apply(&mut self, rule: &Rule, instances: &[Instance], now: DateTime<Utc>) {
        let severity = rule.severity.as_str();
        let identity = format!("{}:{severity}", rule.name);
        let by_fingerprint: HashMap<String, &Instance> = instances
            .iter()
            .map(|i| (i.fingerprint(&identity), i))
            .collect();
        let holding: HashMap<&String, &Instance> = by_fingerprint
            .iter()
            .filter(|(_, i)| i.holds)
            .map(|(fp, i)| (fp, *i))
            .collect();
        // What stopped holding (or has no data any more).
        let ended: Vec<String> = self
            .active
            .iter()
            .filter(|(fp, a)| {
                a.rule == rule.name && a.severity == severity && !holding.contains_key(*fp)
            })
            .map(|(fp, _)| fp.clone())
            .collect();
        for fp in ended {
            let Some(mut alert) = self.active.remove(&fp) else {
                continue;
            };
            if alert.state == AlertState::Pending {
                self.delete(alert.id).await;
                continue;
            }
            alert.state = AlertState::Resolved;
            alert.resolved_at = Some(now);
            alert.updated_at = now;
            if let Some(i) = by_fingerprint.get(&fp) {
                alert.value = i.value;
            }
            self.resolved_at.insert(fp, now);
            info!(rule = %alert.rule, summary = %alert.summary, "alert resolved");
            self.save(&alert).await;
            self.notify(&alert);
        }
        for (fp, instance) in holding {
            let summary = rule.summary_of(instance);
            let mut labels = instance.labels.clone();
            labels.extend(instance.annotations.clone());
            let alert = self
                .active
                .entry(fp.clone())
                .or_insert_with(|| AlertRecord {
                    id: Uuid::new_v4(),
                    rule: rule.name.clone(),
                    fingerprint: fp.clone(),
                    severity: severity.to_owned(),
                    state: AlertState::Pending,
                    labels: labels.clone(),
                    value: instance.value,
                    threshold: rule.threshold_value(),
                    summary: summary.clone(),
                    started_at: now,
                    fired_at: None,
                    resolved_at: None,
                    updated_at: now,
                });
            let changed = alert.value != instance.value || alert.labels != labels;
            alert.value = instance.value;
            alert.summary = summary;
            alert.labels = labels;
            let held = (now - alert.started_at).to_std().unwrap_or_default();
            let cooling = self
                .resolved_at
                .get(fp)
                .is_some_and(|at| (now - *at).to_std().unwrap_or_default() < rule.cooldown);
            let fires = alert.state == AlertState::Pending && held >= rule.for_ && !cooling;
            let new = alert.updated_at == now && alert.started_at == now;
            if fires {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(now);
            }
            if fires || new || changed {
                alert.updated_at = now;
                let alert = alert.clone();
                self.save(&alert).await;
                if fires {
                    warn!(rule = %alert.rule, severity, summary = %alert.summary, "alert firing");
                    self.notify(&alert);
                }
            }
        }
    }

    /// `gauntlet_alerts{alertname,severity,state}`: how many are pending
    /// and firing.
    pub fn publish_counts(&mut self) {
        let mut counts: BTreeMap<(String, String, String), f64> = BTreeMap::new();
        for a in self.active.values() {
            *counts
                .entry((
                    a.rule.clone(),
                    a.severity.clone(),
                    a.state.as_str().to_owned(),
                ))
                .or_default() += 1.0;
        }
        for key in self.gauges.iter() {
            counts.entry(key.clone()).or_insert(0.0);
        }
        self.gauges = counts.keys().cloned().collect();
        for ((rule, severity, state), n) in counts {
            self.registry
                .gauge_with(
                    "gauntlet_alerts",
                    &[
                        ("alertname", &rule),
                        ("severity", &severity),
                        ("state", &state),
                    ],
                )
                .set(n);
        }
    }

    /// Writes `alert`; a store that does not answer within [`STORE_WAIT`]
    /// is skipped (the next change writes the alert whole), so a database
    /// outage does not stall the polls that report it.
    async fn save(&self, alert: &AlertRecord) {
        let Some(store) = &self.store else { return };
        match tokio::time::timeout(STORE_WAIT, store.put_alert(alert)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, rule = %alert.rule, "cannot store the alert"),
            Err(_) => warn!(rule = %alert.rule, "the store did not answer; alert not stored"),
        }
    }

    async fn delete(&self, id: Uuid) {
        let Some(store) = &self.store else { return };
        match tokio::time::timeout(STORE_WAIT, store.delete_alert(id)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => warn!(%error, "cannot delete a pending alert that cleared"),
            Err(_) => warn!("the store did not answer; a cleared pending alert stays stored"),
        }
    }

    fn notify(&self, alert: &AlertRecord) {
        let notifier = self.notifier.clone();
        let body = alert_json(alert);
        let rule = alert.rule.clone();
        let state = alert.state.as_str();
        tokio::spawn(async move {
            let key = format!("alert.{rule}.{state}");
            let message = Message {
                payload: body.to_string().into_bytes(),
                headers: Vec::new(),
            };
            if let Err(error) = notifier.bus.publish_event(&key, message).await {
                warn!(%error, %key, "cannot publish the alert event");
            }
            for url in &notifier.webhooks {
                deliver(&notifier, url, &body).await;
            }
        });
    }
}

/// An alert as webhooks and the event bus get it.
pub fn alert_json(alert: &AlertRecord) -> serde_json::Value {
    json!({
        "id": alert.id,
        "rule": alert.rule,
        "severity": alert.severity,
        "state": alert.state.as_str(),
        "labels": alert.labels,
        "value": alert.value,
        "threshold": alert.threshold,
        "summary": alert.summary,
        "started_at": alert.started_at,
        "fired_at": alert.fired_at,
        "resolved_at": alert.resolved_at,
    })
}

/// POSTs `body` to `url` until it answers 2xx, `attempts` times at most,
/// waiting 1, 2, 4 … s (at most 30 s) between tries.
async fn deliver(notifier: &Notifier, url: &str, body: &serde_json::Value) {
    let registry = &notifier.registry;
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=notifier.attempts.max(1) {
        let outcome = notifier
            .http
            .post(url)
            .json(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match outcome {
            Ok(r) if r.status().is_success() => {
                registry
                    .counter_with(
                        "gauntlet_webhook_deliveries_total",
                        &[("outcome", "delivered")],
                    )
                    .increment(1);
                return;
            }
            Ok(r) => warn!(%url, attempt, status = %r.status(), "webhook refused the alert"),
            Err(error) => warn!(%url, attempt, %error, "webhook unreachable"),
        }
        if attempt < notifier.attempts {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    }
    registry
        .counter_with(
            "gauntlet_webhook_deliveries_total",
            &[("outcome", "given_up")],
        )
        .increment(1);
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use gauntlet_bus::MemoryBus;

    use super::*;

    #[tokio::test]
    async fn a_webhook_delivery_is_retried_until_the_receiver_takes_it() {
        // Refuses twice, then accepts.
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let registry = Arc::new(Registry::new("monitor"));
        let notifier = Notifier {
            bus: Arc::new(MemoryBus::new(3)),
            webhooks: vec![url.clone()],
            attempts: 5,
            http: reqwest::Client::new(),
            registry: registry.clone(),
        };
        deliver(&notifier, &url, &json!({"rule": "X"})).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let counts = registry.snapshot();
        assert_eq!(
            counts["gauntlet_webhook_deliveries_total{outcome=\"delivered\"}"],
            1.0
        );

        // A receiver that never takes it: given up after the attempts.
        let notifier = Notifier {
            attempts: 2,
            webhooks: vec!["http://127.0.0.1:9/hook".into()],
            ..notifier
        };
        deliver(&notifier, "http://127.0.0.1:9/hook", &json!({})).await;
        assert_eq!(
            registry.snapshot()["gauntlet_webhook_deliveries_total{outcome=\"given_up\"}"],
            1.0
        );
    }
}
