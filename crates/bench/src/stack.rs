//! Gauntlet as a cluster of processes: one `gauntlet serve <service>` per
//! service (workers numbered, each one killable and restartable) over a
//! database, a broker and a Redis given by URL, configured through
//! `GAUNTLET_<SECTION>__<KEY>` variables as a deployment would be.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use gauntlet_cli::client::{self, Gateway};
use tempfile::TempDir;
use tokio::process::Command;

use crate::procs::{Procs, free_port, wait_serving};

/// Where the services keep their state.
#[derive(Debug, Clone)]
pub struct Backends {
    pub database_url: String,
    pub amqp_url: String,
    /// Empty: no Redis (L1 cache and in-process limits only).
    pub redis_url: String,
    pub redis_prefix: String,
}

/// How the cluster is shaped and tuned.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub workers: usize,
    /// `worker.max_in_flight`.
    pub max_in_flight: u32,
    /// `worker.prefetch`.
    pub prefetch: u32,
    /// `amqp.batch_size`.
    pub batch_size: u32,
    /// Also start analytics (GetRunSummary), reports and monitor.
    pub all_services: bool,
    /// `RUST_LOG` of every service.
    pub log: String,
    /// More `GAUNTLET_*` settings, applied to every service.
    pub env: Vec<(String, String)>,
    /// API keys on, as a deployment has them: a bootstrap key made for
    /// the run, which this process's clients send ([`auth_env`]).
    pub auth: bool,
}

/// The settings that turn API keys on for a bench cluster, with a fresh
/// bootstrap key (returned too) that a `gauntlet` command given these
/// variables sends. The per-key rate is set out of the way (a bench
/// measures throughput, not the limit), though every call still spends it
/// in Redis.
pub fn auth_env(on: bool) -> (Vec<(String, String)>, Option<String>) {
    if !on {
        return (
            vec![("GAUNTLET_AUTH__ENABLED".into(), "false".into())],
            None,
        );
    }
    let (_, key) = gauntlet_gateway::access::generate();
    let env = vec![
        ("GAUNTLET_AUTH__ENABLED".into(), "true".into()),
        ("GAUNTLET_AUTH__BOOTSTRAP_KEY".into(), key.clone()),
        ("GAUNTLET_AUTH__RATE_PER_MINUTE".into(), "1000000000".into()),
        ("GAUNTLET_API_KEY".into(), key.clone()),
    ];
    (env, Some(key))
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            max_in_flight: 256,
            prefetch: 16,
            batch_size: 50,
            all_services: false,
            log: "warn".into(),
            env: Vec::new(),
            auth: true,
        }
    }
}

pub struct Stack {
    /// The bootstrap key its clients call with, when keys are on.
    key: Option<String>,
    gauntlet: PathBuf,
    env: Vec<(String, String)>,
    procs: Procs,
    gateway_port: u16,
    worker_ports: Vec<u16>,
    logs: TempDir,
}

impl Stack {
    pub async fn start(
        gauntlet: &Path,
        backends: &Backends,
        opts: &StackOptions,
    ) -> anyhow::Result<Self> {
        let logs = tempfile::Builder::new()
            .prefix("gauntlet-bench-logs-")
            .tempdir()?;
        let gateway_port = free_port()?;
        let [analytics, reports, monitor] = [free_port()?, free_port()?, free_port()?];
        let url = |p: u16| format!("http://127.0.0.1:{p}");
        let mut env: Vec<(String, String)> = vec![
            (
                "GAUNTLET_DATABASE__URL".into(),
                backends.database_url.clone(),
            ),
            ("GAUNTLET_AMQP__URL".into(), backends.amqp_url.clone()),
            ("GAUNTLET_REDIS__URL".into(), backends.redis_url.clone()),
            (
                "GAUNTLET_REDIS__PREFIX".into(),
                backends.redis_prefix.clone(),
            ),
            (
                "GAUNTLET_GATEWAY__LISTEN".into(),
                format!("127.0.0.1:{gateway_port}"),
            ),
            (
                "GAUNTLET_ANALYTICS__LISTEN".into(),
                format!("127.0.0.1:{analytics}"),
            ),
            (
                "GAUNTLET_REPORTS__LISTEN".into(),
                format!("127.0.0.1:{reports}"),
            ),
            (
                "GAUNTLET_MONITOR__LISTEN".into(),
                format!("127.0.0.1:{monitor}"),
            ),
            ("GAUNTLET_GATEWAY__ANALYTICS_URL".into(), url(analytics)),
            ("GAUNTLET_GATEWAY__MONITOR_URL".into(), url(monitor)),
            ("GAUNTLET_REPORTS__ANALYTICS_URL".into(), url(analytics)),
            (
                "GAUNTLET_WORKER__MAX_IN_FLIGHT".into(),
                opts.max_in_flight.to_string(),
            ),
            (
                "GAUNTLET_WORKER__PREFETCH".into(),
                opts.prefetch.to_string(),
            ),
            (
                "GAUNTLET_AMQP__BATCH_SIZE".into(),
                opts.batch_size.to_string(),
            ),
            ("OPENAI_API_KEY".into(), "bench".into()),
            ("RUST_LOG".into(), opts.log.clone()),
        ];
        // No `/metrics` endpoints: nothing here scrapes them, and their
        // fixed default ports would collide between workers, and with
        // any other stack on this machine.
        for service in ["GATEWAY", "WORKER", "ANALYTICS", "REPORTS", "MONITOR"] {
            env.push((format!("GAUNTLET_{service}__METRICS_LISTEN"), String::new()));
        }
        // Each stack its own key: several may run in one process (tests).
        let (auth, key) = auth_env(opts.auth);
        env.extend(auth);
        env.extend(opts.env.iter().cloned());
        let mut stack = Self {
            key,
            gauntlet: gauntlet.to_path_buf(),
            env,
            procs: Procs::with_logs(logs.path()),
            gateway_port,
            worker_ports: Vec::new(),
            logs,
        };
        stack.serve("gateway", "gateway", &[])?;
        if opts.all_services {
            for service in ["analytics", "reports", "monitor"] {
                stack.serve(service, service, &[])?;
            }
        }
        for i in 0..opts.workers {
            stack.worker_ports.push(free_port()?);
            stack.start_worker(i)?;
        }
        // Services wait for their dependencies at start-up; a minute covers
        // a broker that is still booting.
        wait_serving(gateway_port, "gateway", Duration::from_secs(60))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", stack.procs.log_tail("gateway", 20)))?;
        if opts.all_services {
            wait_serving(analytics, "analytics", Duration::from_secs(60)).await?;
        }
        Ok(stack)
    }

    fn serve(
        &mut self,
        name: &str,
        service: &str,
        env: &[(String, String)],
    ) -> anyhow::Result<u32> {
        self.procs.spawn(
            name,
            Command::new(&self.gauntlet)
                .args(["serve", service])
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .envs(self.env.iter().cloned())
                .envs(env.iter().cloned()),
        )
    }

    pub fn worker_name(i: usize) -> String {
        format!("worker-{i}")
    }

    /// Starts worker `i` (again, after a kill: same port, same log).
    pub fn start_worker(&mut self, i: usize) -> anyhow::Result<u32> {
        let port = self.worker_ports[i];
        self.serve(
            &Self::worker_name(i),
            "worker",
            &[(
                "GAUNTLET_WORKER__LISTEN".into(),
                format!("127.0.0.1:{port}"),
            )],
        )
    }

    /// SIGKILL of worker `i`.
    pub async fn kill_worker(&mut self, i: usize) -> anyhow::Result<()> {
        self.procs.kill(&Self::worker_name(i)).await
    }

    pub fn workers(&self) -> usize {
        self.worker_ports.len()
    }

    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    /// A client of the gateway (run, analytics and report services).
    pub async fn gateway(&self) -> anyhow::Result<Gateway> {
        let channel = client::connect(&self.gateway_url(), &gauntlet_config::GrpcConfig::default())
            .await
            .context("connect to the gateway")?;
        let limits = client::limits(&gauntlet_config::load(None, std::env::vars())?, false);
        match &self.key {
            Some(key) => Gateway::with_key(channel, limits, key),
            None => Ok(Gateway::new(channel, limits)),
        }
    }

    /// A client acting for a new project `id` (made by the bootstrap key,
    /// an operator) through a member key of its own. Needs keys on.
    pub async fn project_gateway(&self, id: &str) -> anyhow::Result<Gateway> {
        let mut operator = self.gateway().await?;
        operator
            .access
            .create_project(gauntlet_proto::v1::CreateProjectRequest {
                id: id.into(),
                ..Default::default()
            })
            .await
            .context("create project (are keys on?)")?;
        let key = operator
            .access
            .create_key(gauntlet_proto::v1::CreateKeyRequest {
                project_id: id.into(),
                role: gauntlet_proto::v1::Role::Member as i32,
                rate_per_minute: 1_000_000_000,
                ..Default::default()
            })
            .await
            .context("create key")?
            .into_inner()
            .secret;
        let channel = client::connect(&self.gateway_url(), &gauntlet_config::GrpcConfig::default())
            .await
            .context("connect to the gateway")?;
        Gateway::with_key(
            channel,
            client::limits(&gauntlet_config::load(None, std::env::vars())?, false),
            &key,
        )
    }

    /// Names and pids of the live service processes.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.procs.pids()
    }

    /// Peak RSS (KiB) and CPU seconds of each live service process.
    pub fn usage(&self) -> std::collections::BTreeMap<String, (u64, f64)> {
        self.procs.usage()
    }

    /// The end of every service's log, for a report of what went wrong.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut names: Vec<String> = std::fs::read_dir(self.logs.path())
            .map(|d| {
                d.filter_map(|e| {
                    let name = e.ok()?.file_name().into_string().ok()?;
                    Some(name.strip_suffix(".log")?.to_string())
                })
                .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|n| format!("--- {n} ---\n{}", self.procs.log_tail(n, lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGTERM to every service, then waits for them.
    pub async fn stop(self) {
        self.procs.stop().await;
    }
}
