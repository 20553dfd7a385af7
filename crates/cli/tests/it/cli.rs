//! The `gauntlet` binary as a user runs it: exit codes, output files, error
//! messages, embedded mode and `--server` mode.

use std::{path::Path, process::Output};

use crate::cluster::Cluster;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_gauntlet");

pub(crate) fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .parent()
        .unwrap()
}

fn quickstart() -> std::path::PathBuf {
    repo().join("examples/quickstart.yaml")
}

pub(crate) async fn gauntlet(args: &[&str], dir: &Path) -> Output {
    gauntlet_env(args, dir, &[]).await
}

/// `gauntlet ARGS` in `dir` with the environment variables `env` set.
pub(crate) async fn gauntlet_env(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("GAUNTLET_SERVER")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run the gauntlet binary")
}

pub(crate) fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test]
async fn quickstart_runs_embedded_prints_a_summary_and_exits_100() {
    let dir = tempfile::tempdir().unwrap();
    let qs = quickstart();
    let out = gauntlet(
        &[
            "run",
            qs.to_str().unwrap(),
            "-o",
            "out/results.json",
            "-o",
            "out/results.csv",
            "-o",
            "out/junit.xml",
            "-o",
            "out/report.md",
            "-o",
            "out/report.html",
        ],
        dir.path(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(
        out.status.code(),
        Some(100),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("echo"), "{stdout}");
    assert!(
        stdout.contains("4 passed, 2 failed, 0 errors of 6"),
        "{stdout}"
    );
    assert!(stdout.contains("run id: "), "{stdout}");
    assert!(dir.path().join(".gauntlet/gauntlet.db").exists());

    // JSON: every result with its verdict.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/results.json")).unwrap())
            .unwrap();
    let results = json["results"].as_array().unwrap();
    assert_eq!(results.len(), 6);
    let failed: Vec<_> = results.iter().filter(|r| r["status"] == "fail").collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed
            .iter()
            .all(|r| r["prompt"].as_str().unwrap().contains("Good morning"))
    );

    // CSV: a header and one row per result, fields intact.
    let mut csv = csv::Reader::from_path(dir.path().join("out/results.csv")).unwrap();
    let headers = csv.headers().unwrap().clone();
    let status_col = headers.iter().position(|h| h == "status").unwrap();
    let rows: Vec<_> = csv.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows.iter().filter(|r| &r[status_col] == "fail").count(), 2);

    // JUnit: well-formed XML with the right counts.
    let xml = std::fs::read_to_string(dir.path().join("out/junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("JUnit output is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("6"));
    assert_eq!(root.attribute("failures"), Some("2"));
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    let failures = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .count();
    assert_eq!((cases, failures), (6, 2));

    let md = std::fs::read_to_string(dir.path().join("out/report.md")).unwrap();
    assert!(md.contains("| echo |"), "{md}");
    let html = std::fs::read_to_string(dir.path().join("out/report.html")).unwrap();
    assert!(html.contains("<html") && html.contains("echo"));
}

#[tokio::test]
async fn exit_codes_follow_the_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let qs = quickstart();
    let qs = qs.to_str().unwrap();
    let custom = gauntlet(&["run", qs, "--fail-exit-code", "3"], dir.path()).await;
    assert_eq!(custom.status.code(), Some(3), "{:?}", text(&custom));
    // The first two tests pass with echo.
    let pass = gauntlet(&["run", qs, "--filter-first-n", "2"], dir.path()).await;
    assert_eq!(pass.status.code(), Some(0), "{:?}", text(&pass));
    let pattern = gauntlet(
        &["run", qs, "--filter-pattern", "real translation"],
        dir.path(),
    )
    .await;
    assert_eq!(pattern.status.code(), Some(100), "{:?}", text(&pattern));
    assert!(text(&pattern).0.contains("0 passed, 2 failed"));
}

#[tokio::test]
async fn bad_input_gets_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = gauntlet(&["run", "nope.yaml"], dir.path()).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing).1.contains("nope.yaml"),
        "{:?}",
        text(&missing)
    );

    std::fs::write(
        dir.path().join("broken.yaml"),
        "prompts: ['a'\nproviders: [echo]\n",
    )
    .unwrap();
    let broken = gauntlet(&["run", "broken.yaml"], dir.path()).await;
    assert_eq!(broken.status.code(), Some(1));
    let err = text(&broken).1;
    assert!(err.contains("broken.yaml:"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("broken.yaml:2:") || l.contains("broken.yaml:1:")),
        "file:line:col in {err}"
    );

    std::fs::write(
        dir.path().join("typo.yaml"),
        "prompts: ['a']\nproviders: [echo]\ntests:\n  - assert: [{type: contans, value: a}]\n",
    )
    .unwrap();
    let typo = gauntlet(&["run", "typo.yaml"], dir.path()).await;
    assert_eq!(typo.status.code(), Some(1));
    // File, line and column, the field path, and the closest names.
    let err = text(&typo).1;
    assert!(
        err.starts_with("error: typo.yaml:4:") && err.contains(": tests[0].assert[0].type: "),
        "{err}"
    );
    assert!(err.contains("did you mean `contains`"), "{err}");

    let usage = gauntlet(&["run", "x.yaml", "--no-such-flag"], dir.path()).await;
    assert_eq!(usage.status.code(), Some(2));

    let unreachable = gauntlet(
        &[
            "run",
            quickstart().to_str().unwrap(),
            "--server",
            "http://127.0.0.1:1",
        ],
        dir.path(),
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(1));
    let err = text(&unreachable).1;
    assert!(
        err.contains("cannot reach the Gauntlet server at http://127.0.0.1:1"),
        "{err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "one line, no stack trace: {err}"
    );

    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let data_dir = gauntlet(
        &[
            "run",
            quickstart().to_str().unwrap(),
            "--data-dir",
            file.join("sub").to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    assert_eq!(data_dir.status.code(), Some(1));
    assert!(
        text(&data_dir).1.contains("data directory"),
        "{:?}",
        text(&data_dir)
    );

    let bad_output = gauntlet(
        &["run", quickstart().to_str().unwrap(), "-o", "r.pdf"],
        dir.path(),
    )
    .await;
    assert_eq!(bad_output.status.code(), Some(1));
    assert!(text(&bad_output).1.contains("r.pdf"));
}

/// A suite is uploaded while it is parsed: one broken far past its first
/// megabyte still reports its error as `file:line:col: field.path`, and
/// the upload ends without its trailer, so the gateway runs nothing of it.
#[tokio::test]
async fn a_suite_broken_half_way_reports_its_error_and_its_run_fails_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = String::from("prompts: ['Say {{w}}']\nproviders: [echo]\ntests:\n");
    for i in 0..30_000 {
        let kind = if i == 25_000 { "containz" } else { "contains" };
        yaml.push_str(&format!(
            "  - description: case {i}\n    vars: {{w: w{i}}}\n    assert: [{{type: {kind}, value: w{i}}}]\n"
        ));
    }
    std::fs::write(dir.path().join("half.yaml"), yaml).unwrap();
    let out = gauntlet(&["run", "half.yaml", "--data-dir", "data"], dir.path()).await;
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{err}");
    // One error line, the user's file:line:col first. On a loaded machine
    // the embedded worker may also log a slow write (its first tests ran
    // while the rest were read): a WARN line, not an error.
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].starts_with("error: half.yaml:75006:15: tests[25000].assert[0].type: unknown assertion type `containz`"),
        "{err}"
    );
    assert!(
        err.lines()
            .all(|l| l.starts_with("error: ") || l.contains(" WARN ")),
        "{err}"
    );
    assert!(!err.contains("run "), "no run was announced: {err}");
    assert!(stdout.is_empty(), "{stdout}");
    // The gateway had opened the run at the first tests (they were being
    // called while the rest was read): it failed, with the user's error as
    // its reason, keeping the results it has.
    let out = gauntlet(&["runs", "--data-dir", "data"], dir.path()).await;
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{err}");
    assert!(stdout.contains(" failed "), "{stdout}");
    assert!(
        stdout.contains(
            "its suite was refused: abort: the client stopped the upload: half.yaml:75006:15: \
             tests[25000].assert[0].type: unknown assertion type `containz`"
        ),
        "{stdout}"
    );
}

#[tokio::test]
async fn validate_counts_the_tasks_or_names_the_first_broken_test() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tests.csv"),
        "w,__expected\na,contains:a\nb,contains:b\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ok.yaml"),
        "prompts: ['Say {{w}}', 'Shout {{w}}']\nproviders: [echo]\nevaluateOptions: {repeat: 3}\n\
         tests:\n  - vars: {w: x}\n  - file://tests.csv\n",
    )
    .unwrap();
    let out = gauntlet(&["validate", "ok.yaml"], dir.path()).await;
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{err}");
    assert_eq!(
        stdout,
        "ok.yaml: valid: 3 tests × 2 prompts × 1 providers × 3 repeats = 18 tasks\n"
    );
    assert!(
        !dir.path().join(".gauntlet").exists(),
        "nothing was started"
    );
    // `run` makes the tasks `validate` counted, the suite's repeat included.
    let out = gauntlet(&["run", "ok.yaml", "--data-dir", "data"], dir.path()).await;
    let (stdout, err) = text(&out);
    assert!(
        err.contains(": 18 tasks (3 tests × 2 prompts × 1 providers × 3 repeats)"),
        "{stdout}{err}"
    );

    std::fs::write(
        dir.path().join("bad.yaml"),
        "prompts: ['Say {{w}}']\nproviders: [echo]\ntests:\n  - vars: {w: x}\n  - vars: {w: y}\n    assert: [{type: containz, value: y}]\n",
    )
    .unwrap();
    let out = gauntlet(&["validate", "bad.yaml"], dir.path()).await;
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{err}");
    assert!(
        err.starts_with(
            "error: bad.yaml:6:15: tests[1].assert[0].type: unknown assertion type `containz`"
        ),
        "{err}"
    );
    assert!(stdout.is_empty(), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_mode_gives_the_same_summary_against_the_real_services() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let qs = quickstart();
    let url = cluster.stack.url();
    let remote = gauntlet(
        &[
            "run",
            qs.to_str().unwrap(),
            "--server",
            &url,
            "-o",
            "remote.json",
        ],
        dir.path(),
    )
    .await;
    let local = gauntlet(
        &["run", qs.to_str().unwrap(), "-o", "local.json"],
        dir.path(),
    )
    .await;
    assert_eq!(remote.status.code(), Some(100), "{:?}", text(&remote));
    assert_eq!(local.status.code(), Some(100));
    let totals = |o: &Output| -> String {
        text(o)
            .0
            .lines()
            .find(|l| l.contains(" passed, "))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(totals(&remote), totals(&local));
    assert!(totals(&remote).starts_with("4 passed, 2 failed, 0 errors of 6"));
    let verdicts = |file: &str| -> Vec<(u64, String)> {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(file)).unwrap()).unwrap();
        doc["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["task_index"].as_u64().unwrap(),
                    r["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(verdicts("remote.json"), verdicts("local.json"));
    let remote_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("remote.json")).unwrap()).unwrap();
    assert_eq!(remote_json["passed"], 4);
    assert_eq!(remote_json["failed"], 2);

    // The server-side commands see the same run.
    let run_id = text(&remote)
        .0
        .lines()
        .find_map(|l| l.strip_prefix("run id: "))
        .unwrap()
        .to_string();
    let report = gauntlet(&["report", &run_id, "--server", &url], dir.path()).await;
    assert_eq!(report.status.code(), Some(0), "{:?}", text(&report));
    assert!(text(&report).0.contains("| echo |"));
    let runs = gauntlet(&["runs", "--server", &url], dir.path()).await;
    assert!(text(&runs).0.contains(&run_id));
    cluster.stop().await;
}

/// Waits, up to 60 s, until the gRPC server at `url` says SERVING: a
/// service answers NOT_SERVING, and every other call UNAVAILABLE, until its
/// dependencies are connected.
pub(crate) async fn wait_serving(url: &str) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap();
        if let Ok(channel) = endpoint.connect().await
            && HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} did not serve within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The Prometheus text a process serves on `127.0.0.1:{port}/metrics`.
pub(crate) async fn scrape(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("scrape port {port}: {e}"))
        .text()
        .await
        .unwrap()
}

/// A free loopback port (bound, then released for the child to take).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("child still running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -s {name} {pid}");
}

/// Reads the child's stderr until a line contains `needle`; returns what it read.
async fn wait_for_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    needle: &str,
) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no line with `{needle}` in:\n{seen}");
    seen
}

/// `gauntlet up --data-dir state` in `dir` on a free port, with `env` set,
/// once it says it is up: the child, its stderr lines, the banner, its URL.
async fn start_up(
    dir: &Path,
    env: &[(&str, &str)],
) -> (
    tokio::process::Child,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    String,
    String,
) {
    use tokio::io::AsyncBufReadExt;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut up = tokio::process::Command::new(BIN)
        .args(["up", "--data-dir", "state"])
        .current_dir(dir)
        .env("GAUNTLET_GATEWAY__LISTEN", &addr)
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(up.stderr.take().unwrap()).lines();
    let banner = wait_for_line(&mut lines, "gauntlet is up").await;
    assert!(banner.contains(&addr), "{banner}");
    (up, lines, banner, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_grpc_clients_with_embedded_backends_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut up, _lines, banner, url) = start_up(dir.path(), &[]).await;
    assert!(banner.contains("SQLite"), "{banner}");

    let qs = quickstart();
    let run = gauntlet(&["run", qs.to_str().unwrap(), "--server", &url], dir.path()).await;
    let (stdout, stderr) = text(&run);
    assert_eq!(run.status.code(), Some(100), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("4 passed, 2 failed, 0 errors of 6"),
        "{stdout}"
    );
    let run_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run id: "))
        .unwrap()
        .to_string();

    let listed = gauntlet(&["runs", "--server", &url], dir.path()).await;
    assert!(text(&listed).0.contains(&run_id), "{:?}", text(&listed));
    let results = gauntlet(
        &["results", &run_id, "--server", &url, "-o", "r.json"],
        dir.path(),
    )
    .await;
    assert_eq!(results.status.code(), Some(0), "{:?}", text(&results));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(doc["results"].as_array().unwrap().len(), 6);
    assert!(dir.path().join("state/gauntlet.db").exists());

    // The reports service renders through the in-process report queue.
    let report = gauntlet(
        &[
            "report",
            &run_id,
            "--format",
            "junit",
            "--server",
            &url,
            "-o",
            "junit.xml",
        ],
        dir.path(),
    )
    .await;
    assert_eq!(report.status.code(), Some(0), "{:?}", text(&report));
    let xml = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    let doc = roxmltree::Document::parse(&xml).expect("well-formed JUnit XML");
    assert_eq!(doc.root_element().attribute("tests"), Some("6"));
    assert_eq!(doc.root_element().attribute("failures"), Some("2"));

    signal(&up, "TERM");
    let status = tokio::time::timeout(std::time::Duration::from_secs(30), up.wait())
        .await
        .expect("up stops within 30 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `analytics.roll_up_at`, end to end: a completed run of that many
/// results is rolled up after its first summary (`gauntlet run` asks for
/// one), a smaller one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_of_roll_up_at_results_is_rolled_up_after_its_summary_a_smaller_one_is_not() {
    use gauntlet_store::{SqliteStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let env = [("GAUNTLET_ANALYTICS__ROLL_UP_AT", "6")];
    let (mut up, _lines, _, url) = start_up(dir.path(), &env).await;
    let qs = quickstart();
    let mut ids = Vec::new();
    // 2 tests × 2 prompts, then the whole quickstart: 3 × 2.
    for first in [&["--filter-first-n", "2"][..], &[]] {
        let args = [&["run", qs.to_str().unwrap(), "--server", &url][..], first].concat();
        let run = gauntlet(&args, dir.path()).await;
        let (stdout, stderr) = text(&run);
        assert!(stdout.contains("run id: "), "{stdout}\n{stderr}");
        ids.push(
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("run id: "))
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        );
    }
    let store = SqliteStore::open(&dir.path().join("state/gauntlet.db"))
        .await
        .unwrap();
    let rolled = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let run = store.get_run(ids[1]).await.unwrap().unwrap();
            if run.rolled_up {
                return run.completed_tasks;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the 6-result run is rolled up within 30 s of its summary");
    assert_eq!(rolled, 6);
    let small = store.get_run(ids[0]).await.unwrap().unwrap();
    assert_eq!((small.completed_tasks, small.rolled_up), (4, false));
    signal(&up, "TERM");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), up.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_run_prints_a_partial_summary_and_keeps_results() {
    use tokio::io::AsyncBufReadExt;

    let mock = gauntlet_mockllm::MockServer::start(gauntlet_mockllm::MockConfig {
        latency_ms: 200,
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tests: String = (0..40)
        .map(|i| {
            format!("  - vars: {{ n: '{i}' }}\n    assert: [{{ type: contains, value: '{i}' }}]\n")
        })
        .collect();
    std::fs::write(
        dir.path().join("slow.yaml"),
        format!("prompts: ['Count {{{{ n }}}}']\nproviders: ['openai:chat:mock']\ntests:\n{tests}"),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "run",
            "slow.yaml",
            "--max-concurrency",
            "2",
            "-o",
            "out.json",
        ])
        .current_dir(dir.path())
        .env("OPENAI_BASE_URL", mock.base_url())
        .env("OPENAI_API_KEY", "test")
        .env_remove("GAUNTLET_SERVER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    wait_for_line(&mut lines, "40 tasks").await;
    // Two calls at a time, 200 ms each: some results are in, most are not.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    signal(&child, "INT");
    let rest = tokio::spawn(async move {
        let mut s = String::new();
        while let Ok(Some(l)) = lines.next_line().await {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the run ends after Ctrl-C")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = rest.await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(stderr.contains("interrupted: cancelling run"), "{stderr}");
    assert!(stdout.contains("run id: "), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out.json")).unwrap()).unwrap();
    assert_eq!(doc["status"], "cancelled", "{doc}");
    let kept = doc["results"].as_array().unwrap().len();
    assert!(kept > 0 && kept < 40, "{kept} results kept of 40");
    assert_eq!(doc["passed"].as_u64().unwrap() as usize, kept);
}

/// `gauntlet report` (the reports service, its document stored in parts and
/// streamed back in chunks smaller than a part) and `gauntlet results -o`
/// write the very bytes `gauntlet run -o` wrote for the same run, in every
/// format, for documents of several parts.
#[tokio::test]
async fn report_writes_the_same_documents_as_run_o_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("topic\n");
    for i in 0..300 {
        // Echoed back: 300 outputs of ~8 KB make every format but Markdown
        // and JUnit larger than one stored part (1 MiB).
        csv.push_str(&format!("t{i} {}<&>\n", "lorem ipsum ".repeat(700)));
    }
    std::fs::write(dir.path().join("tests.csv"), csv).unwrap();
    std::fs::write(
        dir.path().join("suite.yaml"),
        "description: parts\nprompts: ['Say {{topic}}']\nproviders: [echo]\n\
         tests: file://tests.csv\ndefaultTest:\n  assert:\n    - type: contains\n      value: t1\n",
    )
    .unwrap();
    let formats = [
        ("html", "html"),
        ("json", "json"),
        ("csv", "csv"),
        ("markdown", "md"),
        ("junit", "xml"),
    ];
    let mut args = vec!["run", "suite.yaml"];
    let files: Vec<String> = formats
        .iter()
        .map(|(_, ext)| format!("run.{ext}"))
        .collect();
    for f in &files {
        args.extend(["-o", f.as_str()]);
    }
    let out = gauntlet(&args, dir.path()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(100), "{stdout}\n{stderr}");
    let run_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run id: "))
        .expect("run id printed")
        .trim()
        .to_owned();
    for ((format, ext), run_file) in formats.iter().zip(&files) {
        let report_file = format!("report.{ext}");
        // Messages of 1 MiB: a document over it is streamed by ReadReport,
        // each stored part in two chunks; a smaller one comes inline.
        let out = gauntlet_env(
            &["report", &run_id, "--format", format, "-o", &report_file],
            dir.path(),
            &[("GAUNTLET_GRPC__MAX_MESSAGE_BYTES", "1048576")],
        )
        .await;
        assert!(out.status.success(), "{format}: {:?}", text(&out));
        let want = std::fs::read(dir.path().join(run_file)).unwrap();
        let got = std::fs::read(dir.path().join(&report_file)).unwrap();
        if *format != "markdown" && *format != "junit" {
            assert!(want.len() > 1 << 20, "{format}: only {} bytes", want.len());
        }
        assert!(
            got == want,
            "{format}: the report ({} bytes) differs from `run -o` ({} bytes)",
            got.len(),
            want.len()
        );
        // And `gauntlet results RUN -o FILE`, paging ListResults.
        let results_file = format!("results.{ext}");
        let out = gauntlet(&["results", &run_id, "-o", &results_file], dir.path()).await;
        assert!(out.status.success(), "{format}: {:?}", text(&out));
        let listed = std::fs::read(dir.path().join(&results_file)).unwrap();
        assert!(
            listed == want,
            "{format}: `results -o` ({} bytes) differs from `run -o` ({} bytes)",
            listed.len(),
            want.len()
        );
    }
}

/// `gauntlet report --compare A B`: the comparison report in every format,
/// through the reports service, with the verdict a user expects when B
/// fails what A passed.
#[tokio::test]
async fn report_compare_renders_the_verdicts_of_two_runs() {
    let dir = tempfile::tempdir().unwrap();
    let tests: String = (0..40)
        .map(|i| format!("  - vars: {{topic: t{i}}}\n"))
        .collect();
    for (name, prompt) in [("a", "Say {{topic}}"), ("b", "Say nothing")] {
        std::fs::write(
            dir.path().join(format!("{name}.yaml")),
            format!(
                "description: compare {name}\nprompts: ['{prompt}']\nproviders: [echo]\n\
                 defaultTest:\n  assert:\n    - type: contains\n      value: '{{{{topic}}}}'\n\
                 tests:\n{tests}"
            ),
        )
        .unwrap();
    }
    let mut runs = Vec::new();
    for name in ["a", "b"] {
        let out = gauntlet(&["run", &format!("{name}.yaml")], dir.path()).await;
        let (stdout, stderr) = text(&out);
        assert!(
            matches!(out.status.code(), Some(0 | 100)),
            "{stdout}\n{stderr}"
        );
        runs.push(
            stdout
                .lines()
                .find_map(|l| l.strip_prefix("run id: "))
                .unwrap()
                .trim()
                .to_owned(),
        );
    }
    let report = |format: &'static str, file: &'static str| {
        let dir = dir.path().to_owned();
        let (a, b) = (runs[0].clone(), runs[1].clone());
        async move {
            let out = gauntlet(
                &[
                    "report",
                    "--compare",
                    &a,
                    &b,
                    "--by",
                    "provider",
                    "--format",
                    format,
                    "-o",
                    file,
                ],
                &dir,
            )
            .await;
            assert!(out.status.success(), "{format}: {:?}", text(&out));
            std::fs::read_to_string(dir.join(file)).unwrap()
        }
    };
    let md = report("markdown", "c.md").await;
    assert!(
        md.contains(&format!("run {} (A) vs run {} (B)", runs[0], runs[1])),
        "{md}"
    );
    assert!(
        md.contains("| echo | echo | 40 | 100.0% → 0.0% | 40/0 |"),
        "{md}"
    );
    assert!(md.contains("| worse |"), "{md}");

    let json: serde_json::Value = serde_json::from_str(&report("json", "c.json").await).unwrap();
    assert_eq!(json["schema"], "gauntlet.compare/v1");
    assert_eq!(json["pairs"][0]["verdict"], "worse");
    assert!(
        json["pairs"][0]["mcnemar"]["p_value_adjusted"]
            .as_f64()
            .unwrap()
            < 1e-9
    );

    let xml = report("junit", "c.xml").await;
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.root_element().attribute("failures"), Some("1"));

    let csv = report("csv", "c.csv").await;
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.lines().nth(1).unwrap().ends_with(",worse"), "{csv}");

    let html = report("html", "c.html").await;
    assert!(html.contains("id=\"chart-compare-rates\""), "{html}");
    assert!(html.contains("id=\"chart-compare-scores\""));
    assert!(html.contains("compare a → compare b"), "{html}");

    // Asked again for the same runs, kind and format: the same report.
    let again = report("markdown", "c2.md").await;
    assert_eq!(again, md);

    // Both runs rolled up in one report.
    let rollup = |format: &'static str, file: &'static str| {
        let dir = dir.path().to_owned();
        let (a, b) = (runs[0].clone(), runs[1].clone());
        async move {
            let out = gauntlet(
                &["report", "--runs", &a, &b, "--format", format, "-o", file],
                &dir,
            )
            .await;
            assert!(out.status.success(), "{format}: {:?}", text(&out));
            std::fs::read_to_string(dir.join(file)).unwrap()
        }
    };
    let md = rollup("md", "r.md").await;
    assert!(
        md.starts_with("# Roll-up of 2 runs\n\n40 passed, 40 failed, 0 errors (50.0% pass rate)"),
        "{md}"
    );
    assert!(
        md.contains(&format!(
            "| compare a | `{}` | completed | 100.0% |",
            runs[0]
        )),
        "{md}"
    );
    assert!(
        md.contains(&format!("| compare b | `{}` | completed | 0.0% |", runs[1])),
        "{md}"
    );
    let xml = rollup("junit", "r.xml").await;
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert_eq!(doc.root_element().attribute("tests"), Some("2"));
    assert_eq!(doc.root_element().attribute("failures"), Some("1"));
    let html = rollup("html", "r.html").await;
    assert!(html.contains("id=\"chart-rollup-pass-rate\""), "{html}");
    let json: serde_json::Value = serde_json::from_str(&rollup("json", "r.json").await).unwrap();
    assert_eq!(json["schema"], "gauntlet.rollup/v1");
    assert_eq!(json["runs"][1]["run_id"], runs[1].as_str());
}

/// `gauntlet report --trend SUITE`: the suite's runs over time through the
/// reports service; a suite with no run and JUnit are refused by name.
#[tokio::test]
async fn report_trend_renders_a_suites_runs_over_time() {
    let dir = tempfile::tempdir().unwrap();
    let tests: String = (0..20)
        .map(|i| format!("  - vars: {{topic: t{i}}}\n"))
        .collect();
    std::fs::write(
        dir.path().join("s.yaml"),
        format!(
            "description: trend <suite>\nprompts: ['Say {{{{topic}}}}']\nproviders: [echo]\n\
             defaultTest:\n  assert:\n    - type: contains\n      value: t1\n\
             tests:\n{tests}"
        ),
    )
    .unwrap();
    for _ in 0..2 {
        let out = gauntlet(&["run", "s.yaml"], dir.path()).await;
        assert!(
            matches!(out.status.code(), Some(0 | 100)),
            "{:?}",
            text(&out)
        );
    }
    let report = |format: &'static str, file: &'static str| {
        let dir = dir.path().to_owned();
        async move {
            let out = gauntlet(
                &[
                    "report", "--trend", "s.yaml", "--bucket", "day", "--format", format, "-o",
                    file,
                ],
                &dir,
            )
            .await;
            assert!(out.status.success(), "{format}: {:?}", text(&out));
            std::fs::read_to_string(dir.join(file)).unwrap()
        }
    };
    // As the README writes it: `--format md`.
    let md = report("md", "t.md").await;
    assert!(md.starts_with("# Trend: trend <suite>\n"), "{md}");
    assert!(md.contains("## echo"), "{md}");
    // Two runs of 20 results, 11 passing each (t1, t10–t19), in one day.
    assert!(md.contains("| 2 | 40 | 55.0% |"), "{md}");

    let json: serde_json::Value = serde_json::from_str(&report("json", "t.json").await).unwrap();
    assert_eq!(json["schema"], "gauntlet.trends/v1");
    assert_eq!(json["points"][0]["runs"], 2);
    assert_eq!(json["points"][0]["passed"], 22);
    assert_eq!(json["points"][0]["pass_rate"]["estimate"], 0.55);

    let html = report("html", "t.html").await;
    assert!(html.contains("id=\"chart-trend-pass-rate\""), "{html}");
    assert!(
        html.contains("<title>Trend: trend &lt;suite&gt;</title>"),
        "{html}"
    );

    let out = gauntlet(
        &["report", "--trend", "s.yaml", "--format", "junit"],
        dir.path(),
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("format: JUNIT is for run and comparison reports"),
        "{:?}",
        text(&out)
    );
    let out = gauntlet(&["report", "--trend", "no such suite"], dir.path()).await;
    assert!(!out.status.success());
    assert!(
        text(&out)
            .1
            .contains("suite: no completed run of a suite described `no such suite`"),
        "{:?}",
        text(&out)
    );
}
