//! The monitor: polls the gRPC health of every service and the depth of the
//! work queues on an interval, and answers `GetSystemHealth` from the latest
//! snapshot (polling at once if there is none yet).

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use chrono::Utc;
use gauntlet_bus::{Bus, QueueName};
use gauntlet_config::GauntletConfig;
use gauntlet_proto::v1::{self, monitor_service_server::MonitorService};
use gauntlet_service::{GrpcServer, connect_bus, convert};
use gauntlet_telemetry::metrics::Registry;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::{debug, warn};

/// How long one health probe may take before the target counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Deps {
    pub bus: Arc<dyn Bus>,
}

struct Target {
    name: String,
    endpoint: String,
    client: HealthClient<Channel>,
}

pub async fn serve(config: GauntletConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let listener =
        gauntlet_service::Listeners::bind(&config.monitor.listen, &config.monitor.metrics_listen)
            .await?;
    let deps = Deps {
        bus: connect_bus(&config.amqp, &shutdown).await?,
    };
    run(config, deps, listener, shutdown).await
}

pub async fn run(
    config: GauntletConfig,
    deps: Deps,
    listener: impl Into<gauntlet_service::Listeners>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut targets = Vec::new();
    for (name, url) in config.monitor.target_list()? {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .with_context(|| format!("monitor.targets: `{url}` is not a valid URL"))?
            .connect_timeout(PROBE_TIMEOUT)
            .connect_lazy();
        targets.push(Target {
            name,
            endpoint: url,
            client: gauntlet_service::limited!(
                HealthClient::new(channel),
                gauntlet_service::MessageLimits::new(&config.grpc)
            ),
        });
    }
    let monitor = Monitor {
        inner: Arc::new(Inner {
            targets,
            bus: deps.bus,
            latest: RwLock::new(None),
        }),
    };
    let poller = monitor.clone();
    let interval = Duration::from_millis(config.monitor.poll_interval_ms.max(100));
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => { poller.poll().await; }
            }
        }
    });
    let mut server = GrpcServer::new("monitor", &config.grpc).await?;
    let limits = server.limits();
    server.add_service(gauntlet_service::limited!(
        v1::monitor_service_server::MonitorServiceServer::new(monitor),
        limits
    ));
    server.serve(listener.into(), shutdown).await
}

#[derive(Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

struct Inner {
    targets: Vec<Target>,
    bus: Arc<dyn Bus>,
    latest: RwLock<Option<v1::SystemHealth>>,
}

async fn probe(target: &Target) -> v1::ServiceHealth {
    let started = std::time::Instant::now();
    let mut client = target.client.clone();
    let outcome = tokio::time::timeout(
        PROBE_TIMEOUT,
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await;
    let (status, detail) = match outcome {
        Ok(Ok(resp)) => match resp.into_inner().status() {
            ServingStatus::Serving => (v1::ServingStatus::Serving, String::new()),
            other => (
                v1::ServingStatus::NotServing,
                format!("reports {}", other.as_str_name()),
            ),
        },
        Ok(Err(status)) => (v1::ServingStatus::Unreachable, status.message().to_string()),
        Err(_) => (
            v1::ServingStatus::Unreachable,
            format!("no answer within {} ms", PROBE_TIMEOUT.as_millis()),
        ),
    };
    v1::ServiceHealth {
        name: target.name.clone(),
        endpoint: target.endpoint.clone(),
        status: status as i32,
        detail,
        probe_ms: started.elapsed().as_secs_f64() * 1000.0,
        checked_at: Some(convert::timestamp(Utc::now())),
    }
}

impl Monitor {
    async fn poll(&self) -> v1::SystemHealth {
        let services = futures::future::join_all(self.inner.targets.iter().map(probe)).await;
        let mut queues = Vec::new();
        // Work waiting for workers: new batches and handed-back ones.
        let mut task_messages = None;
        for q in QueueName::ALL {
            match self.inner.bus.queue_stats(q).await {
                Ok(stats) => {
                    if matches!(q, QueueName::Tasks | QueueName::Retries) {
                        *task_messages.get_or_insert(0) += stats.messages;
                    }
                    queues.push(v1::QueueStats {
                        name: q.as_str().into(),
                        messages: stats.messages,
                        consumers: stats.consumers,
                    })
                }
                Err(error) => warn!(%error, queue = q.as_str(), "cannot read queue depth"),
            }
        }
        if let Some(messages) = task_messages {
            Registry::global()
                .gauge("gauntlet_task_queue_messages")
                .set(messages as f64);
        }
        let healthy = services
            .iter()
            .all(|s| s.status == v1::ServingStatus::Serving as i32);
        for s in services
            .iter()
            .filter(|s| s.status != v1::ServingStatus::Serving as i32)
        {
            debug!(service = %s.name, detail = %s.detail, "service not serving");
        }
        let health = v1::SystemHealth {
            healthy,
            services,
            queues,
            checked_at: Some(convert::timestamp(Utc::now())),
        };
        *self.inner.latest.write().await = Some(health.clone());
        health
    }
}

#[tonic::async_trait]
impl MonitorService for Monitor {
    async fn get_system_health(
        &self,
        _request: Request<v1::GetSystemHealthRequest>,
    ) -> Result<Response<v1::SystemHealth>, Status> {
        if let Some(h) = self.inner.latest.read().await.clone() {
            return Ok(Response::new(h));
        }
        Ok(Response::new(self.poll().await))
    }
}
