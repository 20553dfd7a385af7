//! Child processes of a benchmark: starting them with their stderr in a log
//! file, signalling one by name, and reading what they use (RSS, CPU time,
//! open file descriptors) from `/proc`.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// A port nothing listens on right now (bound to port 0, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Waits until something accepts connections on `port`, for at most `within`.
pub async fn wait_port(port: u16, what: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what} did not listen on port {port} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the gRPC server on `port` says SERVING (`grpc.health.v1`,
/// the whole server). An open port is not enough: a service answers
/// NOT_SERVING, and every other call UNAVAILABLE, while it connects to its
/// dependencies and waits for migrations.
pub async fn wait_serving(port: u16, what: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if serving(port).await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{what} did not serve on port {port} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn serving(port: u16) -> bool {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
    else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(1))
        .connect()
        .await
    else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

/// Waits until nothing accepts connections on `port` any more.
pub async fn wait_port_closed(port: u16, what: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        if tokio::time::Instant::now() >= deadline {
            bail!("{what} still listens on port {port} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size of a live process, from /proc (VmHWM).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:")
}

/// Current resident set size of a live process, from /proc (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS:")
}

/// Open file descriptors of a live process (sockets included).
pub fn open_fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// CPU seconds (user + system) a live process has used, from /proc.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks (100 per second on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Whether this process runs as root (some servers refuse to).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Sends `signal` (a name such as `TERM` or `KILL`) to `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .context("cannot run kill")?;
    anyhow::ensure!(status.success(), "kill -s {signal} {pid} failed");
    Ok(())
}

/// Where `gauntlet` and `gauntlet-mockllm` are: `dir` if given, else the
/// directory of the running executable, or its parent (a test binary lives
/// in `target/<profile>/deps`).
pub fn bin_dir(dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = dir {
        return Ok(d);
    }
    let exe = std::env::current_exe()?;
    let here = exe.parent().context("binary has no directory")?;
    if here.join("gauntlet").exists() || !here.ends_with("deps") {
        return Ok(here.to_path_buf());
    }
    Ok(here.parent().unwrap_or(here).to_path_buf())
}

/// `dir/name`, or an error saying how to build it.
pub fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    anyhow::ensure!(
        p.exists(),
        "{} not found; build it first: cargo build --release -p gauntlet-cli -p gauntlet-mockllm \
         (or point --bin-dir / GAUNTLET_BIN_DIR at the directory that has it)",
        p.display()
    );
    Ok(p)
}

/// Named child processes, each killed when this is dropped.
pub struct Procs {
    children: Vec<(String, Child)>,
    logs: Option<PathBuf>,
}

impl Procs {
    /// Children whose stderr is discarded.
    pub fn new() -> Self {
        Self {
            children: Vec::new(),
            logs: None,
        }
    }

    /// Children whose stderr goes to `dir/<name>.log` (appended, so a
    /// restarted process keeps its predecessor's lines).
    pub fn with_logs(dir: &Path) -> Self {
        Self {
            children: Vec::new(),
            logs: Some(dir.to_path_buf()),
        }
    }

    pub fn spawn(&mut self, name: &str, cmd: &mut Command) -> anyhow::Result<u32> {
        let stderr = match &self.logs {
            Some(dir) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join(format!("{name}.log")))?,
            ),
            None => Stdio::null(),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().context("child has no pid")?;
        self.children.push((name.to_string(), child));
        Ok(pid)
    }

    /// The pid of the live child called `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, c)| c.id())
    }

    /// Names and pids of the children still running.
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .filter_map(|(n, c)| Some((n.clone(), c.id()?)))
            .collect()
    }

    /// SIGKILLs the child called `name` and reaps it.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let at = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .with_context(|| format!("no process called {name}"))?;
        let (_, mut child) = self.children.remove(at);
        child.kill().await.with_context(|| format!("kill {name}"))
    }

    /// The last `lines` lines of `name`'s log.
    pub fn log_tail(&self, name: &str, lines: usize) -> String {
        let Some(dir) = &self.logs else {
            return String::new();
        };
        let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Peak RSS (KiB) and CPU seconds of every process still running.
    pub fn usage(&self) -> BTreeMap<String, (u64, f64)> {
        self.children
            .iter()
            .filter_map(|(n, c)| {
                let pid = c.id()?;
                Some((n.clone(), (peak_rss_kib(pid)?, cpu_secs(pid)?)))
            })
            .collect()
    }

    /// SIGTERM to every child, then waits for each (at most 30 s).
    pub async fn stop(mut self) {
        for (_, c) in &self.children {
            if let Some(pid) = c.id() {
                let _ = signal(pid, "TERM");
            }
        }
        for (_, c) in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(30), c.wait()).await;
        }
    }
}

impl Default for Procs {
    fn default() -> Self {
        Self::new()
    }
}
