//! Deployment as a user meets it: a service's health means ready (its
//! dependencies connected, the database migrated), and `gauntlet health
//! --service` is the probe the compose file and a container use.

use std::process::Output;

use gauntlet_proto::internal::v1::{GetStatusRequest, control_client::ControlClient};
use gauntlet_store::{PgStore, testing::TestDatabase};

use crate::{
    cli::{BIN, free_port, gauntlet, text},
    monitoring::eventually,
};

/// `gauntlet health --server URL --service NAME`.
async fn probe(url: &str, service: &str) -> Output {
    let dir = std::env::temp_dir();
    gauntlet(&["health", "--server", url, "--service", service], &dir).await
}

/// A service that does not migrate (`database.migrate=false`, as every
/// service but the gateway is deployed) answers NOT_SERVING, and every
/// call but health UNAVAILABLE, while its database lacks the schema; once
/// the migrations are in, it serves. The probe tells the service it
/// expects from another one at the same address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_is_not_serving_until_its_database_is_migrated() {
    let db = TestDatabase::create().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _analytics = tokio::process::Command::new(BIN)
        .args(["serve", "analytics"])
        .env("GAUNTLET_DATABASE__URL", &db.config.url)
        .env("GAUNTLET_DATABASE__MIGRATE", "false")
        .env("GAUNTLET_REDIS__URL", "")
        .env("GAUNTLET_ANALYTICS__LISTEN", format!("127.0.0.1:{port}"))
        .env("GAUNTLET_ANALYTICS__METRICS_LISTEN", "")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let answer = eventually(30, "an answer from the starting service", async || {
        let out = probe(&url, "analytics").await;
        let (stdout, _) = text(&out);
        (!stdout.contains("UNREACHABLE")).then_some(out)
    })
    .await;
    let (stdout, stderr) = text(&answer);
    assert_eq!(answer.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("analytics: NOT_SERVING"), "{stdout}");

    let mut control = ControlClient::connect(url.clone()).await.unwrap();
    let refused = control
        .get_status(GetStatusRequest {})
        .await
        .expect_err("a starting service serves nothing but health");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("analytics is starting"),
        "{refused:?}"
    );

    // The schema does not come by waiting: still not serving.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let out = probe(&url, "analytics").await;
    assert!(
        !out.status.success() && text(&out).0.contains("NOT_SERVING"),
        "{:?}",
        text(&out)
    );

    // What the gateway does at its start.
    PgStore::connect(&db.config).await.unwrap();
    eventually(30, "analytics serving once migrated", async || {
        let out = probe(&url, "analytics").await;
        (out.status.success() && text(&out).0.contains("analytics: SERVING")).then_some(())
    })
    .await;
    let mut control = ControlClient::connect(url.clone()).await.unwrap();
    let status = control.get_status(GetStatusRequest {}).await.unwrap();
    assert_eq!(status.into_inner().name, "analytics");

    // The whole server ("") serves; a probe expecting another service
    // here fails, naming it.
    assert!(probe(&url, "").await.status.success());
    let wrong = probe(&url, "gateway").await;
    let (stdout, _) = text(&wrong);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stdout.contains("NOT_FOUND: no service named `gateway`"),
        "{stdout}"
    );
}

/// A gateway whose broker is not there (yet) is up but not ready: the
/// probe says NOT_SERVING, not UNREACHABLE, and the CLI's calls are told
/// the gateway is starting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_without_its_broker_is_not_serving() {
    let db = TestDatabase::create().await;
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _gateway = tokio::process::Command::new(BIN)
        .args(["serve", "gateway"])
        .env("GAUNTLET_DATABASE__URL", &db.config.url)
        .env(
            "GAUNTLET_AMQP__URL",
            format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()),
        )
        .env("GAUNTLET_REDIS__URL", "")
        .env("GAUNTLET_AUTH__ENABLED", "false")
        .env("GAUNTLET_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env("GAUNTLET_GATEWAY__METRICS_LISTEN", "")
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let answer = eventually(30, "an answer from the starting gateway", async || {
        let out = probe(&url, "gateway").await;
        (!text(&out).0.contains("UNREACHABLE")).then_some(out)
    })
    .await;
    assert_eq!(answer.status.code(), Some(1));
    assert!(
        text(&answer).0.contains("gateway: NOT_SERVING"),
        "{:?}",
        text(&answer)
    );
    let dir = tempfile::tempdir().unwrap();
    let runs = gauntlet(&["runs", "--server", &url], dir.path()).await;
    let (stdout, stderr) = text(&runs);
    assert!(!runs.status.success(), "{stdout}");
    assert!(stderr.contains("gateway is starting"), "{stderr}");
}

/// A service whose own server fails once it has its dependencies (here
/// its TLS CA emptied while it waited for migrations) exits with the
/// error, so its supervisor restarts it, instead of living on without a
/// listener (the gateway used to, waiting on its dispatcher).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_whose_server_fails_exits_with_the_error() {
    let db = TestDatabase::create().await;
    let vhost = gauntlet_bus::testing::TestVhost::create().await;
    let certs = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("bash")
        .arg(crate::cli::repo().join("scripts/dev-certs.sh"))
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = free_port();
    let url = format!("https://127.0.0.1:{port}");
    let mut gateway = tokio::process::Command::new(BIN)
        .args(["serve", "gateway"])
        .env("GAUNTLET_DATABASE__URL", &db.config.url)
        .env("GAUNTLET_DATABASE__MIGRATE", "false")
        .env("GAUNTLET_AMQP__URL", &vhost.url)
        .env("GAUNTLET_REDIS__URL", "")
        .env("GAUNTLET_AUTH__ENABLED", "false")
        .env("GAUNTLET_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env("GAUNTLET_GATEWAY__METRICS_LISTEN", "")
        .env("GAUNTLET_GRPC__TLS_CERT", certs.path().join("tls.crt"))
        .env("GAUNTLET_GRPC__TLS_KEY", certs.path().join("tls.key"))
        .env("GAUNTLET_GRPC__TLS_CA", certs.path().join("ca.crt"))
        .env("GAUNTLET_GRPC__TLS_CLIENT_AUTH", "true")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Waiting for migrations: bound, not serving.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(gateway.try_wait().unwrap().is_none(), "{url} gave up early");
    std::fs::write(certs.path().join("ca.crt"), "").unwrap();
    PgStore::connect(&db.config).await.unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), gateway.wait())
        .await
        .expect("the gateway lives on after its server failed")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(gateway.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(stderr.contains("grpc server failed"), "{stderr}");
}

/// Each overlay test starts a whole stack of debug builds: under `cargo
/// test` (one process) they take turns, so the machine's other timing
/// tests are not starved.
static OVERLAYS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The manifests as a cluster would run them, run here: the dev overlay is
/// rendered (`kubectl kustomize`), each Deployment of our image is started
/// as its real binary with the container's command, args and environment
/// (envFrom ConfigMaps and Secrets, env, in Kubernetes' order), with every
/// in-cluster host and port mapped to 127.0.0.1 through the same keys:
/// Gauntlet's Services to a free local port each, Postgres, RabbitMQ and
/// Redis to this test's own database, vhost and key prefix. Each waits on
/// its own readiness probe's port, then the overlay's smoke Job runs its
/// suite through the gateway. So the manifests' ports, variable names,
/// commands and probes are the ones the code reads and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_overlay_runs_a_suite_as_deployed() {
    let _one_at_a_time = OVERLAYS.lock().await;
    let Some(docs) = manifests::render("k8s/overlays/dev") else {
        return;
    };
    let db = TestDatabase::create().await;
    let vhost = gauntlet_bus::testing::TestVhost::create().await;
    let work = tempfile::tempdir().unwrap();
    let cluster = manifests::Local::new(&docs, &db.config.url, &vhost.url, work.path());

    let running = cluster.bring_up().await;
    let jobs = cluster.jobs();
    assert!(!jobs.is_empty(), "the dev overlay has no smoke Job");
    for job in jobs {
        let out = cluster.run_job(job).await;
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "the smoke Job {} failed:\n{stdout}\n{stderr}",
            manifests::name(job)
        );
    }
    // The suite went through the gateway to the workers and the mock.
    let store = PgStore::connect(&db.config).await.unwrap();
    let runs =
        gauntlet_store::Store::list_runs(&store, gauntlet_service::DEFAULT_PROJECT, 10, None)
            .await
            .unwrap();
    let run = runs.first().expect("the smoke Job stored no run");
    assert_eq!(run.status, gauntlet_store::RunStatus::Completed, "{run:?}");
    assert!(
        run.total_tasks > 0 && run.completed_tasks == run.total_tasks,
        "{run:?}"
    );
    drop(running);
}

/// The production overlay as deployed, with the Secrets its README has
/// you create (the TLS one from `scripts/dev-certs.sh`): every service
/// serves mutual TLS, its readiness exec probe (`gauntlet health` over
/// https in the container's environment) passes, every declared port is
/// served, and a suite runs through the gateway for a client presenting a
/// certificate and the bootstrap key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_overlay_serves_mutual_tls_as_deployed() {
    let _one_at_a_time = OVERLAYS.lock().await;
    let Some(mut docs) = manifests::render("k8s/overlays/production") else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let made = std::process::Command::new("bash")
        .arg(crate::cli::repo().join("scripts/dev-certs.sh"))
        .arg(certs.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pem = |file: &str| std::fs::read_to_string(certs.path().join(file)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let generated = gauntlet(&["keys", "generate"], dir.path()).await;
    let key = text(&generated).0.trim().to_string();
    let secret = |name: &str, data: &[(&str, String)]| {
        let mut doc = serde_yaml_ng::Mapping::new();
        doc.insert("apiVersion".into(), "v1".into());
        doc.insert("kind".into(), "Secret".into());
        let mut meta = serde_yaml_ng::Mapping::new();
        meta.insert("name".into(), name.into());
        doc.insert("metadata".into(), meta.into());
        let mut string_data = serde_yaml_ng::Mapping::new();
        for (k, v) in data {
            string_data.insert((*k).into(), v.as_str().into());
        }
        doc.insert("stringData".into(), string_data.into());
        serde_yaml_ng::Value::Mapping(doc)
    };
    // What k8s/README.md's production steps create by hand (hosts outside
    // the cluster; the test maps each by its scheme to its own backends).
    docs.extend([
        secret(
            "gauntlet-secrets",
            &[
                (
                    "GAUNTLET_AMQP__URL",
                    "amqp://gauntlet:pw@rabbitmq.example.internal:5672/%2f".into(),
                ),
                (
                    "GAUNTLET_REDIS__URL",
                    "redis://:pw@redis.example.internal:6379".into(),
                ),
            ],
        ),
        secret(
            "gauntlet-database",
            &[(
                "GAUNTLET_DATABASE__URL",
                "postgres://gauntlet:pw@postgres.example.internal:5432/gauntlet".into(),
            )],
        ),
        secret(
            "gauntlet-bootstrap-key",
            &[("GAUNTLET_AUTH__BOOTSTRAP_KEY", key.clone())],
        ),
        secret(
            "gauntlet-tls",
            &[
                ("tls.crt", pem("tls.crt")),
                ("tls.key", pem("tls.key")),
                ("ca.crt", pem("ca.crt")),
            ],
        ),
    ]);
    let db = TestDatabase::create().await;
    let vhost = gauntlet_bus::testing::TestVhost::create().await;
    let work = tempfile::tempdir().unwrap();
    let cluster = manifests::Local::new(&docs, &db.config.url, &vhost.url, work.path());
    let running = cluster.bring_up().await;

    let mock = gauntlet_mockllm::MockServer::start(Default::default())
        .await
        .unwrap();
    std::fs::write(
        dir.path().join("suite.yaml"),
        format!(
            "description: production overlay\nprompts:\n  - 'Say {{{{ n }}}}'\n\
             providers:\n  - id: openai:chat:gpt-4o-mini\n    config:\n      apiBaseUrl: {}\n\
             tests:\n  - vars: {{n: 1}}\n  - vars: {{n: 2}}\n",
            mock.base_url()
        ),
    )
    .unwrap();
    let server = format!("https://127.0.0.1:{}", cluster.local_port("gateway", 7070));
    let ca = certs.path().join("ca.crt");
    let cert = certs.path().join("tls.crt");
    let tls_key = certs.path().join("tls.key");
    let run = crate::cli::gauntlet_env(
        &[
            "run",
            "suite.yaml",
            "--server",
            &server,
            "--ca-cert",
            &ca.to_string_lossy(),
        ],
        dir.path(),
        &[
            ("GAUNTLET_API_KEY", key.as_str()),
            ("GAUNTLET_GRPC__TLS_CERT", &cert.to_string_lossy()),
            ("GAUNTLET_GRPC__TLS_KEY", &tls_key.to_string_lossy()),
        ],
    )
    .await;
    let (stdout, stderr) = text(&run);
    assert!(run.status.success(), "{stdout}\n{stderr}");
    assert_eq!(mock.stats().requests, 2, "{stdout}");
    drop(running);
}

/// Reading rendered manifests and running them on this machine.
mod manifests {
    use std::{
        collections::{BTreeMap, HashMap},
        path::{Path, PathBuf},
        process::{Output, Stdio},
        sync::Mutex,
        time::Duration,
    };

    use base64::Engine;
    use serde::Deserialize;
    use serde_yaml_ng::Value;
    use tokio::process::{Child, Command};

    use crate::cli::{BIN, free_port, repo};

    /// `kubectl kustomize <overlay>` as YAML documents; None (skipped) when
    /// no kubectl is installed, except under CI, where it must be.
    pub fn render(overlay: &str) -> Option<Vec<Value>> {
        let out = std::process::Command::new("kubectl")
            .args(["kustomize", &repo().join(overlay).to_string_lossy()])
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!(
                    "kubectl is needed to render {overlay} ({e}); scripts/check-deploy.sh installs it"
                )
            }
            Err(e) => {
                eprintln!("skipped: no kubectl to render {overlay} ({e})");
                return None;
            }
        };
        assert!(
            out.status.success(),
            "kubectl kustomize {overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        Some(
            serde_yaml_ng::Deserializer::from_str(&text)
                .map(|doc| Value::deserialize(doc).unwrap())
                .filter(|doc: &Value| !doc.is_null())
                .collect(),
        )
    }

    pub fn name(doc: &Value) -> &str {
        doc["metadata"]["name"].as_str().unwrap_or("")
    }

    fn kind(doc: &Value) -> &str {
        doc["kind"].as_str().unwrap_or("")
    }

    fn seq(v: &Value) -> &[Value] {
        v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
    }

    fn strings(v: &Value) -> Vec<String> {
        seq(v)
            .iter()
            .map(|s| match s {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
            })
            .collect()
    }

    /// The rendered objects, and where each in-cluster address is here.
    pub struct Local<'a> {
        docs: &'a [Value],
        database_url: String,
        amqp_url: String,
        redis_prefix: String,
        work: PathBuf,
        /// Gauntlet's binaries under the names the image has them by.
        bin: PathBuf,
        /// (Deployment, container port) → local port.
        ports: Mutex<HashMap<(String, i64), u16>>,
    }

    impl<'a> Local<'a> {
        pub fn new(docs: &'a [Value], database_url: &str, amqp_url: &str, work: &Path) -> Self {
            let bin = work.join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let built = Path::new(BIN).parent().unwrap();
            for program in ["gauntlet", "gauntlet-mockllm"] {
                let real = built.join(program);
                assert!(
                    real.exists(),
                    "{} is not built: cargo build -p gauntlet-cli -p gauntlet-mockllm",
                    real.display()
                );
                std::os::unix::fs::symlink(&real, bin.join(program)).unwrap();
            }
            Self {
                docs,
                database_url: database_url.to_string(),
                amqp_url: amqp_url.to_string(),
                redis_prefix: format!("smoke-{}", uuid::Uuid::new_v4().simple()),
                work: work.to_path_buf(),
                bin,
                ports: Mutex::new(HashMap::new()),
            }
        }

        fn of_kind(&self, wanted: &str) -> Vec<&'a Value> {
            self.docs.iter().filter(|d| kind(d) == wanted).collect()
        }

        fn object(&self, wanted: &str, object: &str) -> Option<&'a Value> {
            self.docs
                .iter()
                .find(|d| kind(d) == wanted && name(d) == object)
        }

        /// The Deployments that run our image (the others, Postgres and
        /// the like, are this machine's own services).
        pub fn ours(&self) -> Vec<&'a Value> {
            self.of_kind("Deployment")
                .into_iter()
                .filter(|d| {
                    seq(&d["spec"]["template"]["spec"]["containers"])
                        .iter()
                        .any(is_ours)
                })
                .collect()
        }

        pub fn jobs(&self) -> Vec<&'a Value> {
            self.of_kind("Job")
        }

        /// The local port standing for `port` of `deployment`'s pods.
        pub fn local_port(&self, deployment: &str, port: i64) -> u16 {
            *self
                .ports
                .lock()
                .unwrap()
                .entry((deployment.to_string(), port))
                .or_insert_with(unclaimed_port)
        }

        /// The Deployment a Service selects, and the container port its
        /// `port` targets.
        fn service_target(&self, service: &str, port: i64) -> Option<(&'a Value, i64)> {
            let svc = self.object("Service", service)?;
            let selector = svc["spec"]["selector"].as_mapping()?;
            let deployment = self.of_kind("Deployment").into_iter().find(|d| {
                let labels = &d["spec"]["template"]["metadata"]["labels"];
                selector.iter().all(|(k, v)| &labels[k] == v)
            })?;
            let spec = seq(&svc["spec"]["ports"])
                .iter()
                .find(|p| p["port"].as_i64() == Some(port))?;
            let target = match &spec["targetPort"] {
                Value::Number(n) => n.as_i64()?,
                Value::String(named) => container_port(deployment, named)?,
                _ => port,
            };
            Some((deployment, target))
        }

        /// `value` with every in-cluster address replaced by where it is
        /// here; `own` is the Deployment the value is given to (its listen
        /// addresses).
        fn map_value(&self, own: Option<&str>, value: &str) -> String {
            let listen = regex::Regex::new(r"^0\.0\.0\.0:(\d+)$").unwrap();
            if let (Some(own), Some(c)) = (own, listen.captures(value)) {
                let port = c[1].parse().unwrap();
                return format!("127.0.0.1:{}", self.local_port(own, port));
            }
            let url = regex::Regex::new(
                r"(?P<scheme>[a-z][a-z0-9+.-]*)://(?P<auth>[^@/\s,]*@)?(?P<host>[a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(?P<port>\d+)(?P<rest>[^,\s]*)",
            )
            .unwrap();
            url.replace_all(value, |c: &regex::Captures| {
                let scheme = &c["scheme"];
                let host = &c["host"];
                let port: i64 = c["port"].parse().unwrap();
                match scheme {
                    // The container itself (an exec probe's target).
                    _ if matches!(host, "localhost" | "127") && own.is_some() => format!(
                        "{scheme}://127.0.0.1:{}{}",
                        self.local_port(own.unwrap(), port),
                        &c["rest"]
                    ),
                    "postgres" | "postgresql" => self.database_url.clone(),
                    "amqp" | "amqps" => self.amqp_url.clone(),
                    "redis" | "rediss" => "redis://127.0.0.1:6379".to_string(),
                    _ => match self.service_target(host, port) {
                        Some((deployment, target)) => format!(
                            "{scheme}://127.0.0.1:{}{}",
                            self.local_port(name(deployment), target),
                            &c["rest"]
                        ),
                        // A Service we do not run (Jaeger): a port nobody
                        // serves.
                        None => format!("{scheme}://127.0.0.1:{}{}", free_port(), &c["rest"]),
                    },
                }
            })
            .into_owned()
        }

        /// The container's environment as the kubelet builds it: envFrom
        /// in order, then env, each value mapped.
        fn environment(&self, own: Option<&str>, container: &Value) -> BTreeMap<String, String> {
            let mut env = BTreeMap::new();
            for from in seq(&container["envFrom"]) {
                let optional = |r: &Value| r["optional"].as_bool().unwrap_or(false);
                if from["configMapRef"].is_mapping() {
                    let r = &from["configMapRef"];
                    match self.object("ConfigMap", r["name"].as_str().unwrap()) {
                        Some(map) => env.extend(config_map(map)),
                        None => assert!(optional(r), "no ConfigMap {:?}", r["name"]),
                    }
                }
                if from["secretRef"].is_mapping() {
                    let r = &from["secretRef"];
                    match self.object("Secret", r["name"].as_str().unwrap()) {
                        Some(secret) => env.extend(secret_data(secret)),
                        None => assert!(optional(r), "no Secret {:?}", r["name"]),
                    }
                }
            }
            for var in seq(&container["env"]) {
                let key = var["name"].as_str().unwrap().to_string();
                let value = if let Some(v) = var["value"].as_str() {
                    Some(v.to_string())
                } else if var["valueFrom"]["configMapKeyRef"].is_mapping() {
                    let r = &var["valueFrom"]["configMapKeyRef"];
                    self.object("ConfigMap", r["name"].as_str().unwrap())
                        .and_then(|m| config_map(m).remove(r["key"].as_str().unwrap()))
                } else if var["valueFrom"]["secretKeyRef"].is_mapping() {
                    let r = &var["valueFrom"]["secretKeyRef"];
                    self.object("Secret", r["name"].as_str().unwrap())
                        .and_then(|s| secret_data(s).remove(r["key"].as_str().unwrap()))
                } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some(format!("smoke-{path}"))
                } else {
                    Some(String::new())
                };
                // $(VAR) refers to a variable defined before.
                let value = value.map(|v| {
                    let mut v = v;
                    for (k, earlier) in &env {
                        v = v.replace(&format!("$({k})"), earlier);
                    }
                    v
                });
                if let Some(value) = value {
                    env.insert(key, value);
                }
            }
            for value in env.values_mut() {
                *value = self.map_value(own, value);
            }
            if env.contains_key("GAUNTLET_REDIS__PREFIX") {
                env.insert("GAUNTLET_REDIS__PREFIX".into(), self.redis_prefix.clone());
            }
            env
        }

        /// A container as a local process: the image's entrypoint (tini
        /// -- gauntlet) unless the container names a command, mounted
        /// ConfigMaps written to files under the work directory.
        fn command(&self, own: Option<&str>, pod: &Value, container: &Value) -> Command {
            let mut argv = strings(&container["command"]);
            if argv.is_empty() {
                argv.push("gauntlet".into());
            }
            argv.extend(strings(&container["args"]));
            // The image's PID 1.
            if argv[0].ends_with("tini") {
                argv.remove(0);
                if argv.first().is_some_and(|a| a == "--") {
                    argv.remove(0);
                }
            }
            let mounts = self.mounts(pod, container);
            let argv: Vec<String> = argv
                .iter()
                .map(|a| mounted(&mounts, &self.map_value(own, a)))
                .collect();
            let mut command = Command::new(resolve(&self.bin, &argv[0]));
            command
                .args(&argv[1..])
                .env_clear()
                .env("PATH", format!("{}:/usr/bin:/bin", self.bin.display()))
                .env("HOME", &self.work)
                .envs(
                    self.environment(own, container)
                        .into_iter()
                        .map(|(k, v)| (k, mounted(&mounts, &v))),
                )
                .current_dir(&self.work)
                .stdin(Stdio::null())
                .kill_on_drop(true);
            command
        }

        /// The container's ConfigMap and Secret volumes, written out:
        /// (mount path, local directory).
        fn mounts(&self, pod: &Value, container: &Value) -> Vec<(String, PathBuf)> {
            let mut out = Vec::new();
            for mount in seq(&container["volumeMounts"]) {
                let volume_name = mount["name"].as_str().unwrap();
                let Some(volume) = seq(&pod["volumes"])
                    .iter()
                    .find(|v| v["name"].as_str() == Some(volume_name))
                else {
                    continue;
                };
                let files: BTreeMap<String, String> =
                    if let Some(cm) = volume["configMap"]["name"].as_str() {
                        self.object("ConfigMap", cm)
                            .map(config_map)
                            .unwrap_or_default()
                    } else if let Some(secret) = volume["secret"]["secretName"].as_str() {
                        self.object("Secret", secret)
                            .map(secret_data)
                            .unwrap_or_default()
                    } else {
                        BTreeMap::new()
                    };
                let dir = self.work.join("volumes").join(volume_name);
                // Written once: a probe's process must not rewrite a file a
                // service is reading (a CA read empty fails its TLS).
                if !dir.exists() {
                    let partial = dir.with_extension("partial");
                    std::fs::create_dir_all(&partial).unwrap();
                    for (file, content) in files {
                        std::fs::write(partial.join(file), content).unwrap();
                    }
                    std::fs::rename(&partial, &dir).unwrap();
                }
                let path = mount["mountPath"].as_str().unwrap().to_string();
                match mount["subPath"].as_str() {
                    Some(sub) => out.push((path, dir.join(sub))),
                    None => out.push((path, dir)),
                }
            }
            // Longest first, so /a/b is replaced before /a.
            out.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
            out
        }

        /// Starts every Deployment of ours, waits until each is ready
        /// (its own probes), and checks every port a container declares is
        /// served, `metrics` ports with the service's own series. The
        /// processes live as long as what is returned.
        pub async fn bring_up(&self) -> Vec<Vec<Child>> {
            let mut running = Vec::new();
            for deployment in self.ours() {
                running.push(self.start(deployment).await);
            }
            for deployment in self.ours() {
                self.wait_ready(deployment).await;
            }
            for deployment in self.ours() {
                self.check_ports(deployment).await;
            }
            running
        }

        /// Starts `deployment`'s containers (one replica).
        pub async fn start(&self, deployment: &Value) -> Vec<Child> {
            let own = name(deployment);
            let pod = &deployment["spec"]["template"]["spec"];
            let mut children = Vec::new();
            for container in seq(&pod["containers"]) {
                let log = std::fs::File::create(self.work.join(format!("{own}.log"))).unwrap();
                let child = self
                    .command(Some(own), pod, container)
                    .stdout(log.try_clone().unwrap())
                    .stderr(log)
                    .spawn()
                    .unwrap_or_else(|e| panic!("start {own}: {e}"));
                children.push(child);
            }
            children
        }

        /// Waits until `deployment`'s readiness probe passes on its local
        /// port, then checks its startup and liveness probes pass too.
        pub async fn wait_ready(&self, deployment: &Value) {
            let own = name(deployment);
            let container = &seq(&deployment["spec"]["template"]["spec"]["containers"])[0];
            let probe = &container["readinessProbe"];
            assert!(probe.is_mapping(), "{own} has no readinessProbe");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            while let Err(why) = self.passes(deployment, container, probe).await {
                if tokio::time::Instant::now() > deadline {
                    let log = std::fs::read_to_string(self.work.join(format!("{own}.log")))
                        .unwrap_or_default();
                    let sockets = std::process::Command::new("ss")
                        .args(["-ltnp"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    let procs = std::process::Command::new("pgrep")
                        .args(["-af", "serve"])
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    panic!(
                        "{own} never became ready ({why}); its log:\n{log}\nSOCKETS\n{sockets}\nPROCS\n{procs}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            for other in ["startupProbe", "livenessProbe"] {
                let probe = &container[other];
                if probe.is_mapping()
                    && let Err(why) = self.passes(deployment, container, probe).await
                {
                    panic!("{own}: the {other} fails on a ready container: {why}");
                }
            }
        }

        /// Whether `probe` of `container` passes now: gRPC health through
        /// `gauntlet health --service`, an HTTP GET, a TCP connection, or
        /// the exec command in the container's environment.
        async fn passes(
            &self,
            deployment: &Value,
            container: &Value,
            probe: &Value,
        ) -> Result<(), String> {
            let own = name(deployment);
            let port_of = |p: &Value| match p {
                Value::Number(n) => n.as_i64().unwrap(),
                Value::String(named) => container_port(deployment, named)
                    .unwrap_or_else(|| panic!("{own}: no container port {named}")),
                other => panic!("{own}: probe port {other:?}"),
            };
            let exited = |out: Output| match out.status.success() {
                true => Ok(()),
                false => Err(format!("{:?}", crate::cli::text(&out))),
            };
            if probe["grpc"].is_mapping() {
                let port = self.local_port(own, port_of(&probe["grpc"]["port"]));
                let service = probe["grpc"]["service"].as_str().unwrap_or("");
                exited(
                    Command::new(BIN)
                        .args([
                            "health",
                            "--server",
                            &format!("http://127.0.0.1:{port}"),
                            "--service",
                            service,
                        ])
                        .output()
                        .await
                        .unwrap(),
                )
            } else if probe["httpGet"].is_mapping() {
                let port = self.local_port(own, port_of(&probe["httpGet"]["port"]));
                let path = probe["httpGet"]["path"].as_str().unwrap_or("/");
                match reqwest::get(format!("http://127.0.0.1:{port}{path}")).await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("GET {path}: {}", r.status())),
                    Err(e) => Err(format!("GET {path}: {e}")),
                }
            } else if probe["exec"].is_mapping() {
                // The probe's command in the container: its env, mounts.
                let mut probing = container.clone();
                probing["command"] = probe["exec"]["command"].clone();
                if let Some(fields) = probing.as_mapping_mut() {
                    fields.remove("args");
                }
                exited(
                    self.command(Some(own), &deployment["spec"]["template"]["spec"], &probing)
                        .output()
                        .await
                        .unwrap(),
                )
            } else if probe["tcpSocket"].is_mapping() {
                let port = self.local_port(own, port_of(&probe["tcpSocket"]["port"]));
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("connect to {port}: {e}"))
            } else {
                panic!("{own}: a probe this test cannot run: {probe:?}")
            }
        }

        /// Each declared container port accepts connections; one named
        /// `metrics` answers `GET /metrics` with `gauntlet_` series labelled
        /// with the service.
        pub async fn check_ports(&self, deployment: &Value) {
            let own = name(deployment);
            for container in seq(&deployment["spec"]["template"]["spec"]["containers"]) {
                for port in seq(&container["ports"]) {
                    let number = port["containerPort"].as_i64().unwrap();
                    let local = self.local_port(own, number);
                    if port["name"].as_str() == Some("metrics") {
                        let body = crate::cli::scrape(local).await;
                        assert!(
                            body.contains(&format!("service=\"{own}\"")),
                            "{own}: /metrics on port {number} has no series of service {own}"
                        );
                    } else {
                        tokio::net::TcpStream::connect(("127.0.0.1", local))
                            .await
                            .unwrap_or_else(|e| panic!("{own}: port {number} not served: {e}"));
                    }
                }
            }
        }

        /// Runs `job`'s init containers, then its containers, each to its
        /// end (within five minutes); the output of the last.
        pub async fn run_job(&self, job: &Value) -> Output {
            let pod = &job["spec"]["template"]["spec"];
            let mut last = None;
            for container in seq(&pod["initContainers"])
                .iter()
                .chain(seq(&pod["containers"]))
            {
                let out = tokio::time::timeout(
                    Duration::from_secs(300),
                    self.command(None, pod, container).output(),
                )
                .await
                .unwrap_or_else(|_| panic!("{} did not finish", name(job)))
                .unwrap();
                if !out.status.success() {
                    return out;
                }
                last = Some(out);
            }
            last.expect("a Job with no container")
        }
    }

    /// A free port below the kernel's ephemeral range (32768 and up): a
    /// service started here binds it a while after it is chosen, and in
    /// between a concurrent test's client connection could take an
    /// ephemeral one as its source port.
    fn unclaimed_port() -> u16 {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // A block of 100 ports per test process (nextest runs each test in
        // a process of its own, with consecutive ids), so two tests never
        // hand out the same port.
        let block = 20_000 + (std::process::id() % 120) * 100;
        let _ = NEXT.compare_exchange(0, block, Ordering::Relaxed, Ordering::Relaxed);
        loop {
            let port = block + (NEXT.fetch_add(1, Ordering::Relaxed) - block) % 100;
            let port = port as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }

    /// `value` with a leading mount path replaced by the local directory
    /// standing for it (`mounts` is longest first).
    fn mounted(mounts: &[(String, PathBuf)], value: &str) -> String {
        for (path, local) in mounts {
            if let Some(rest) = value.strip_prefix(path.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{}{rest}", local.display());
            }
        }
        value.to_string()
    }

    fn is_ours(container: &Value) -> bool {
        let image = container["image"].as_str().unwrap_or("");
        let image = image.rsplit('/').next().unwrap_or(image);
        image.starts_with("gauntlet:") || image == "gauntlet"
    }

    fn container_port(deployment: &Value, named: &str) -> Option<i64> {
        seq(&deployment["spec"]["template"]["spec"]["containers"])
            .iter()
            .flat_map(|c| seq(&c["ports"]))
            .find(|p| p["name"].as_str() == Some(named))
            .and_then(|p| p["containerPort"].as_i64())
    }

    fn config_map(map: &Value) -> BTreeMap<String, String> {
        string_map(&map["data"])
    }

    fn string_map(map: &Value) -> BTreeMap<String, String> {
        map.as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_string(),
                    v.as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn secret_data(secret: &Value) -> BTreeMap<String, String> {
        let mut out: BTreeMap<String, String> = secret["data"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(
                        v.as_str()
                            .unwrap_or("")
                            .split_whitespace()
                            .collect::<String>(),
                    )
                    .unwrap();
                (
                    k.as_str().unwrap().to_string(),
                    String::from_utf8(bytes).unwrap(),
                )
            })
            .collect();
        out.extend(string_map(&secret["stringData"]));
        out
    }

    /// A program name as the image resolves it: tini is PID 1 only.
    fn resolve(bin: &Path, program: &str) -> PathBuf {
        let base = program.rsplit('/').next().unwrap_or(program);
        match base {
            "gauntlet" | "gauntlet-mockllm" => bin.join(base),
            _ => PathBuf::from(program),
        }
    }
}
