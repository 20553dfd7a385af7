//! Private instances of the backing services, for scenarios that stop,
//! restart or kill them: a Postgres cluster made with `initdb`, a RabbitMQ
//! node of its own name, ports and data directory, and a `redis-server`.
//! Each lives in a temporary directory and is stopped when dropped; the
//! shared services on the standard ports are never touched.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use tempfile::TempDir;

use crate::procs::{self, free_port, port_open, signal, wait_port, wait_port_closed};

/// A program the private instances need, looked up where Debian and most
/// distributions put it, then on `PATH`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    match name {
        "initdb" | "pg_ctl" | "postgres" => {
            // The newest installed major version first.
            let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
                .unwrap_or_default();
            versions.sort_by_key(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(0)
            });
            candidates.extend(versions.into_iter().rev().map(|v| v.join("bin").join(name)));
        }
        // The scripts themselves, not Debian's /usr/sbin wrappers, which
        // switch to the rabbitmq user and drop our environment.
        "rabbitmq-server" | "rabbitmqctl" => {
            candidates.push(Path::new("/usr/lib/rabbitmq/bin").join(name));
        }
        _ => {}
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// The programs a private instance of each kind needs, missing ones named.
pub fn missing_programs(kinds: &[Kind]) -> Vec<&'static str> {
    kinds
        .iter()
        .flat_map(|k| k.programs().iter().copied())
        .filter(|p| find_program(p).is_none())
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    RabbitMq,
    Redis,
}

impl Kind {
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Kind::Postgres => &["initdb", "pg_ctl"],
            Kind::RabbitMq => &["rabbitmq-server", "rabbitmqctl"],
            Kind::Redis => &["redis-server"],
        }
    }
}

fn program(name: &str) -> anyhow::Result<PathBuf> {
    find_program(name)
        .with_context(|| format!("{name} is not installed (not found in /usr/lib or on PATH)"))
}

async fn run(cmd: &mut tokio::process::Command, what: &str) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---- Postgres ----

/// A Postgres cluster of its own: `initdb` into a temporary directory,
/// served on a free port of 127.0.0.1 with its socket in that directory.
/// As root (Postgres refuses to run as root) it runs as the `postgres` user.
pub struct PrivatePostgres {
    dir: TempDir,
    port: u16,
    pg_ctl: PathBuf,
    run_as: Option<&'static str>,
}

impl PrivatePostgres {
    pub async fn start() -> anyhow::Result<Self> {
        let initdb = program("initdb")?;
        let pg_ctl = program("pg_ctl")?;
        let dir = tempfile::Builder::new()
            .prefix("gauntlet-fault-pg-")
            .tempdir()?;
        let run_as = procs::is_root().then_some("postgres");
        if let Some(user) = run_as {
            run(
                tokio::process::Command::new("chown")
                    .arg(format!("{user}:"))
                    .arg(dir.path()),
                "chown",
            )
            .await?;
        }
        let pg = Self {
            port: free_port()?,
            dir,
            pg_ctl,
            run_as,
        };
        let data = pg.data_dir();
        pg.command(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .await
            .context("cannot run initdb")
            .and_then(|o| {
                anyhow::ensure!(
                    o.status.success(),
                    "initdb failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                Ok(())
            })?;
        // A benchmark database: durability is not what is under test, and
        // fsyncs on a shared disk only add noise.
        std::fs::write(
            data.join("postgresql.auto.conf"),
            format!(
                "listen_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n\
                 fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n",
                pg.port,
                pg.dir.path().display()
            ),
        )?;
        pg.start_again().await?;
        Ok(pg)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &Path) -> tokio::process::Command {
        match self.run_as {
            Some(user) => {
                let mut c = tokio::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(program);
                c
            }
            None => tokio::process::Command::new(program),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the stopped (or killed) server and waits until it accepts
    /// connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        run(
            self.command(&self.pg_ctl)
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.dir.path().join("postgres.log"))
                .args(["-w", "-t", "60", "start"]),
            "pg_ctl start",
        )
        .await?;
        wait_port(self.port, "private postgres", Duration::from_secs(30)).await
    }

    /// A clean shutdown (`-m fast`: sessions are disconnected).
    pub async fn stop(&self) -> anyhow::Result<()> {
        run(
            self.command(&self.pg_ctl)
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "-t", "60", "stop"]),
            "pg_ctl stop",
        )
        .await?;
        Ok(())
    }

    /// Log of the server, for a failed scenario's report.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("postgres.log"), lines)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&self.pg_ctl);
                c
            }
            None => std::process::Command::new(&self.pg_ctl),
        };
        let _ = cmd
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---- RabbitMQ ----

/// A RabbitMQ node of its own (`gauntlet-fault-<pid>-<n>@localhost`) with
/// its own AMQP and distribution ports, data, logs, cookie and no plugins.
pub struct PrivateRabbitMq {
    dir: TempDir,
    node: String,
    port: u16,
    dist_port: u16,
    server: PathBuf,
    ctl: PathBuf,
}

impl PrivateRabbitMq {
    pub async fn start() -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = tempfile::Builder::new()
            .prefix("gauntlet-fault-rmq-")
            .tempdir()?;
        let rabbit = Self {
            node: format!("gauntlet-fault-{}-{n}@localhost", std::process::id()),
            port: free_port()?,
            dist_port: free_port()?,
            server: program("rabbitmq-server")?,
            ctl: program("rabbitmqctl")?,
            dir,
        };
        let d = rabbit.dir.path();
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.1 = 127.0.0.1:{}\nloopback_users = none\n",
                rabbit.port
            ),
        )?;
        std::fs::write(d.join("enabled_plugins"), "[].\n")?;
        // Its own Erlang cookie, read from $HOME by the server and rabbitmqctl.
        let cookie = d.join(".erlang.cookie");
        std::fs::write(
            &cookie,
            format!("GAUNTLETFAULT{}", uuid::Uuid::new_v4().simple()),
        )?;
        std::fs::set_permissions(&cookie, std::os::unix::fs::PermissionsExt::from_mode(0o400))?;
        rabbit.start_again().await?;
        Ok(rabbit)
    }

    fn env(&self, cmd: &mut tokio::process::Command) {
        let d = self.dir.path();
        cmd.current_dir(d)
            .env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            // Not the system's rabbitmq-env.conf, which names the shared node.
            .env("RABBITMQ_CONF_ENV_FILE", d.join("rabbitmq-env.conf"))
            .env("RABBITMQ_PID_FILE", d.join("rabbitmq.pid"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// amqp:// URL of its default virtual host.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Starts the node (detached) and waits until it takes AMQP connections.
    pub async fn start_again(&self) -> anyhow::Result<()> {
        let mut cmd = tokio::process::Command::new(&self.server);
        self.env(&mut cmd);
        run(cmd.arg("-detached"), "rabbitmq-server -detached").await?;
        wait_port(self.port, "private rabbitmq", Duration::from_secs(90))
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n{}", self.log_tail(30)))
    }

    /// `rabbitmqctl stop`: a clean shutdown of the node.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let mut cmd = tokio::process::Command::new(&self.ctl);
        self.env(&mut cmd);
        run(cmd.args(["-n", &self.node, "stop"]), "rabbitmqctl stop").await?;
        wait_port_closed(self.port, "private rabbitmq", Duration::from_secs(30)).await
    }

    /// SIGKILL of the node's Erlang VM.
    pub async fn kill(&self) -> anyhow::Result<()> {
        let pid = self.pid().context("private rabbitmq has no pid file")?;
        signal(pid, "KILL")?;
        wait_port_closed(self.port, "private rabbitmq", Duration::from_secs(10)).await
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("rabbitmq.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self
            .dir
            .path()
            .join("log")
            .join(format!("{}.log", self.node));
        tail(&log, lines)
    }
}

impl Drop for PrivateRabbitMq {
    fn drop(&mut self) {
        // No clean stop needed: the node and its data are thrown away.
        if let Some(pid) = self.pid()
            && port_open(self.port)
        {
            let _ = signal(pid, "KILL");
        }
    }
}

// ---- Redis ----

/// A `redis-server` of its own on a free port, keeping nothing on disk.
pub struct PrivateRedis {
    port: u16,
    program: PathBuf,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    pub async fn start() -> anyhow::Result<Self> {
        let mut redis = Self {
            port: free_port()?,
            program: program("redis-server")?,
            child: None,
        };
        redis.start_again().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        let child = tokio::process::Command::new(&self.program)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start redis-server")?;
        self.child = Some(child);
        wait_port(self.port, "private redis", Duration::from_secs(15)).await
    }

    /// SIGKILL: everything it held is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
