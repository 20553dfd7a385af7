//! Issue 8's front door, as a user meets it: suites of any size up to the
//! configured limit (streamed, so the message limit is not the suite
//! limit), the suite the gateway runs is exactly the one the CLI read
//! (assert-sets included), bombs refused at once, and every limit reached
//! end to end.

use std::{fmt::Write as _, path::Path, time::Instant};

use crate::{
    cli::{gauntlet, gauntlet_env, text},
    cluster::Cluster,
};

/// A suite of `n` echo cases, each asserting on its own var.
fn many_cases(n: usize) -> String {
    let mut s = String::from(
        "description: many cases\nprompts: ['Say {{word}} and {{filler}}']\nproviders: [echo]\ntests:\n",
    );
    for i in 0..n {
        // ~160 bytes a case: 40,000 cases is ~6.5 MB, past a 4 MiB message.
        writeln!(
            s,
            "  - description: case {i}\n    vars:\n      word: w{i}\n      filler: lorem ipsum dolor sit amet consectetur {i:08}\n    assert:\n      - type: contains\n        value: w{i}"
        )
        .unwrap();
    }
    s
}

/// `n` echo cases, each a var of about `bytes` bytes: large results.
fn wide_cases(n: usize, fill: char, bytes: usize) -> String {
    let mut suite = String::from("prompts: ['{{text}}']\nproviders: [echo]\ntests:\n");
    let text = fill.to_string().repeat(bytes);
    for i in 0..n {
        writeln!(suite, "  - vars:\n      text: '{i:04} {text}'").unwrap();
    }
    suite
}

fn results_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn assert_set_suite_gets_the_verdicts_promptfoo_gives() {
    // The four assert-set tests of core's golden WEIGHTS suite, whose
    // verdicts and scores promptfoo 0.121.20 produced for the output "abc";
    // `echo` answers the prompt, so the output is "abc" here too.
    let suite = r#"
prompts: [abc]
providers: [echo]
tests:
  - description: assert-set with threshold, weight and metric
    assert:
      - type: equals
        value: abc
        metric: exact
      - type: assert-set
        threshold: 0.5
        weight: 2
        metric: group
        assert:
          - type: contains
            value: a
            metric: inner
          - type: contains
            value: z
  - description: assert-set without threshold fails when a member fails
    assert:
      - type: contains
        value: b
      - type: assert-set
        assert:
          - type: contains
            value: a
          - type: contains
            value: y
            weight: 3
  - description: a set whose threshold is missed fails the test
    assert:
      - type: assert-set
        threshold: 0.9
        assert:
          - type: starts-with
            value: ab
          - type: contains
            value: z
          - type: contains
            value: c
  - description: a weight-0 set still fails the test
    assert:
      - type: contains
        value: a
      - type: assert-set
        weight: 0
        assert:
          - type: contains
            value: z
"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sets.yaml"), suite).unwrap();
    let out = gauntlet(&["run", "sets.yaml", "-o", "out.json"], dir.path()).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(100), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed, 3 failed, 0 errors of 4"),
        "{stdout}"
    );

    let doc = results_json(&dir.path().join("out.json"));
    let results = doc["results"].as_array().unwrap();
    let verdicts: Vec<(String, f64)> = results
        .iter()
        .map(|r| {
            (
                r["status"].as_str().unwrap().to_owned(),
                r["score"].as_f64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("pass", 0.6666666666666666),
        ("fail", 0.625),
        ("fail", 0.6666666666666666),
        ("fail", 1.0),
    ];
    for (i, ((status, score), (want_status, want_score))) in
        verdicts.iter().zip(expected).enumerate()
    {
        assert_eq!(status, want_status, "test {i}: {verdicts:?}");
        assert!((score - want_score).abs() < 1e-9, "test {i}: {verdicts:?}");
    }
    // The set's own verdict is reported with its members.
    let first: Vec<String> = results[0]["assertions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["type"].as_str().unwrap().to_owned())
        .collect();
    assert!(first.iter().any(|t| t == "assert-set"), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_thousand_cases_run_embedded_past_the_old_message_limit() {
    let dir = tempfile::tempdir().unwrap();
    let suite = many_cases(40_000);
    assert!(suite.len() > 6_000_000, "{} bytes", suite.len());
    std::fs::write(dir.path().join("big.yaml"), &suite).unwrap();
    let out = gauntlet(
        &[
            "run",
            "big.yaml",
            "-o",
            "out.json",
            "-o",
            "out.jsonl",
            "-o",
            "junit.xml",
        ],
        dir.path(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("40000 passed, 0 failed, 0 errors of 40000"),
        "{stdout}"
    );
    let doc = results_json(&dir.path().join("out.json"));
    assert_eq!(doc["results"].as_array().unwrap().len(), 40_000);
    // JSONL: one result a line, in task order.
    let lines = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let indices: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["task_index"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(indices, (0..40_000).collect::<Vec<u64>>());
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    let xml = roxmltree::Document::parse(&junit).unwrap();
    let cases = xml
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    assert_eq!(cases, 40_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_thousand_cases_run_against_the_real_services() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.yaml"), many_cases(40_000)).unwrap();
    let url = cluster.stack.url();
    let out = gauntlet(
        &["run", "big.yaml", "--server", &url, "-o", "out.json"],
        dir.path(),
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("40000 passed, 0 failed, 0 errors of 40000"),
        "{stdout}"
    );
    let doc = results_json(&dir.path().join("out.json"));
    assert_eq!(doc["results"].as_array().unwrap().len(), 40_000);
    cluster.stop().await;
}

/// A suite of one test whose var is `bytes` long.
fn one_huge_case(bytes: usize) -> String {
    format!(
        "prompts: ['Say {{{{word}}}}']\nproviders: [echo]\ntests:\n  - vars: {{word: '{}'}}\n",
        "x".repeat(bytes)
    )
}

/// `gauntlet run` uploads a suite as JSON lines, where
/// `gateway.max_suite_bytes` bounds each line (a test), not the suite: a
/// suite of many small tests passes a limit it is larger than, and a test
/// larger than it is refused naming the limit.
#[tokio::test]
async fn a_suite_over_the_suite_limit_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let limit = [("GAUNTLET_GATEWAY__MAX_SUITE_BYTES", "100000")];
    std::fs::write(dir.path().join("many.yaml"), many_cases(2_000)).unwrap();
    let out = gauntlet_env(&["run", "many.yaml"], dir.path(), &limit).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    std::fs::write(dir.path().join("big.yaml"), one_huge_case(150_000)).unwrap();
    let out = gauntlet_env(&["run", "big.yaml"], dir.path(), &limit).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("big.yaml"), "{stderr}");
    assert!(
        stderr.contains("longer than 100000 bytes (gateway.max_suite_bytes)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_config_file_given_with_config_sets_the_embedded_limits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.yaml"), one_huge_case(150_000)).unwrap();
    std::fs::write(
        dir.path().join("gauntlet.toml"),
        "[gateway]\nmax_suite_bytes = 100000\n",
    )
    .unwrap();
    let out = gauntlet_env(
        &["run", "big.yaml", "--config", "gauntlet.toml"],
        dir.path(),
        &[],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("longer than 100000 bytes (gateway.max_suite_bytes)"),
        "{stderr}"
    );

    // A config file that does not parse is named, and nothing runs.
    std::fs::write(
        dir.path().join("bad.toml"),
        "[gateway]\nmax_suite_bytes = \"big\"\n",
    )
    .unwrap();
    let out = gauntlet_env(&["run", "big.yaml", "-c", "bad.toml"], dir.path(), &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("bad.toml"), "{stderr}");
    assert!(stderr.contains("max_suite_bytes"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smallest_message_limit_still_carries_large_suites_and_results() {
    // With 64 KiB messages, a ~330 KB suite must stream in chunks and
    // ~2 MB of results (each echoing a 1 KB prompt) must come back in
    // pages that each fit, yet every result reaches the file.
    let dir = tempfile::tempdir().unwrap();
    let suite = wide_cases(300, 'x', 1000);
    std::fs::write(dir.path().join("wide.yaml"), &suite).unwrap();
    let out = gauntlet_env(
        &["run", "wide.yaml", "-o", "out.json", "-o", "out.csv"],
        dir.path(),
        &[("GAUNTLET_GRPC__MAX_MESSAGE_BYTES", "65536")],
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let doc = results_json(&dir.path().join("out.json"));
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 300);
    let indices: Vec<u64> = results
        .iter()
        .map(|r| r["task_index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, (0..300).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_var_product_bomb_is_refused_at_once_with_the_field_and_count() {
    // 737 bytes that expand into 20^8 test cases.
    let items = (0..20)
        .map(|i| format!("v{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut suite = String::from("prompts: ['{{a}}']\nproviders: [echo]\ntests:\n  - vars:\n");
    for var in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        writeln!(suite, "      {var}: [{items}]").unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bomb.yaml"), &suite).unwrap();
    let started = Instant::now();
    let out = gauntlet(&["run", "bomb.yaml"], dir.path()).await;
    let elapsed = started.elapsed();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("bomb.yaml:4"), "{stderr}");
    assert!(stderr.contains("tests[0].vars"), "{stderr}");
    assert!(stderr.contains("25600000000"), "{stderr}");
    // Generous for a debug build on a loaded machine; the product itself
    // would take minutes and gigabytes.
    assert!(elapsed.as_secs() < 10, "took {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_larger_than_a_message_is_streamed_whole() {
    // Services and CLI at the smallest message limit: the JSON report of
    // 300 results of 1 KB each cannot travel in GetReport, so the CLI
    // reads it through ReadReport.
    let limit = gauntlet_config::MIN_MESSAGE_BYTES;
    let cluster = Cluster::start_with(|c| c.grpc.max_message_bytes = limit).await;
    let dir = tempfile::tempdir().unwrap();
    let suite = wide_cases(300, 'y', 1000);
    std::fs::write(dir.path().join("wide.yaml"), &suite).unwrap();
    let url = cluster.stack.url();
    let limit = limit.to_string();
    let var = "GAUNTLET_GRPC__MAX_MESSAGE_BYTES";
    let run = gauntlet_env(
        &["run", "wide.yaml", "--server", &url],
        dir.path(),
        &[(var, &limit)],
    )
    .await;
    let (stdout, stderr) = text(&run);
    assert_eq!(run.status.code(), Some(0), "{stdout}\n{stderr}");
    let run_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("run id: "))
        .unwrap()
        .trim()
        .to_owned();
    let report = gauntlet_env(
        &[
            "report",
            &run_id,
            "--format",
            "json",
            "--server",
            &url,
            "-o",
            "report.json",
        ],
        dir.path(),
        &[(var, &limit)],
    )
    .await;
    assert_eq!(report.status.code(), Some(0), "{:?}", text(&report));
    let bytes = std::fs::read(dir.path().join("report.json")).unwrap();
    assert!(
        bytes.len() > 2 * gauntlet_config::MIN_MESSAGE_BYTES,
        "{} bytes",
        bytes.len()
    );
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["results"].as_array().unwrap().len(), 300);
    cluster.stop().await;
}
