//! A whole Gauntlet cluster in this process over the real local Postgres,
//! RabbitMQ and Redis (its own database, vhost and key prefix), with the
//! project's mock model as the vendor.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use gauntlet_bus::{AmqpBus, Bus, testing::TestVhost};
use gauntlet_cache::Cache;
use gauntlet_cli::embedded::{Backends, Stack};
use gauntlet_config::GauntletConfig;
use gauntlet_mockllm::{MockConfig, MockServer};
use gauntlet_proto::v1::{
    analytics_service_client::AnalyticsServiceClient, monitor_service_client::MonitorServiceClient,
    report_service_client::ReportServiceClient, run_service_client::RunServiceClient,
};
use gauntlet_providers::ProviderFactory;
use gauntlet_store::{PgStore, testing::TestDatabase};
use tonic::transport::Channel;

pub struct Cluster {
    pub stack: Stack,
    pub mock: MockServer,
    pub bus: Arc<dyn Bus>,
    _db: TestDatabase,
    _vhost: TestVhost,
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A cluster whose configuration `tweak` adjusts first (limits, say).
    pub async fn start_with(tweak: impl FnOnce(&mut GauntletConfig)) -> Self {
        let db = TestDatabase::create().await;
        let vhost = TestVhost::create().await;
        let mock = MockServer::start(MockConfig::default()).await.unwrap();

        let mut config = GauntletConfig::default();
        config.database = db.config.clone();
        config.amqp.url = vhost.url.clone();
        config.amqp.batch_size = 25;
        config.redis.url = std::env::var("GAUNTLET_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        config.redis.prefix = format!("gauntlet-test-{}", uuid::Uuid::new_v4().simple());
        config.monitor.poll_interval_ms = 200;
        config.worker.shutdown_grace_secs = 5;
        // API keys are the access tests' business (they turn them on).
        config.auth.enabled = false;
        tweak(&mut config);

        let bus: Arc<dyn Bus> = Arc::new(
            AmqpBus::connect(&config.amqp.url, config.amqp.delivery_limit)
                .await
                .unwrap(),
        );
        let env =
            std::collections::HashMap::from([("OPENAI_BASE_URL".to_string(), mock.base_url())]);
        let backends = Backends {
            store: Arc::new(PgStore::connect(&config.database).await.unwrap()),
            bus: bus.clone(),
            cache: Cache::new(&config.redis, 1 << 24).unwrap(),
            providers: Arc::new(ProviderFactory::new(env)),
        };
        let stack = Stack::start_with(config, backends).await.unwrap();
        Self {
            stack,
            mock,
            bus,
            _db: db,
            _vhost: vhost,
        }
    }

    pub fn worker(&self) -> SocketAddr {
        self.stack.worker
    }

    /// The URL of this cluster's own database.
    pub fn database_url(&self) -> String {
        self._db.config.url.clone()
    }

    /// The name of this cluster's own RabbitMQ vhost.
    pub fn vhost_name(&self) -> String {
        self._vhost.name.clone()
    }

    pub async fn channel(&self) -> Channel {
        let endpoint = tonic::transport::Endpoint::from_shared(self.stack.url()).unwrap();
        for _ in 0..50 {
            if let Ok(ch) = endpoint.connect().await {
                return ch;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway did not come up");
    }

    pub async fn runs(&self) -> RunServiceClient<gauntlet_cli::client::Conn> {
        RunServiceClient::new(gauntlet_cli::client::conn(self.channel().await))
    }

    pub async fn analytics(&self) -> AnalyticsServiceClient<Channel> {
        AnalyticsServiceClient::new(self.channel().await)
    }

    pub async fn reports(&self) -> ReportServiceClient<Channel> {
        ReportServiceClient::new(self.channel().await)
    }

    pub async fn monitor(&self) -> MonitorServiceClient<Channel> {
        MonitorServiceClient::new(self.channel().await)
    }

    /// Graceful shutdown of every service; fails if any service failed.
    pub async fn stop(self) {
        self.stack
            .shutdown()
            .await
            .expect("every service stops cleanly");
    }
}
