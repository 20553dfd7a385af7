//! `gauntlet compare` and the read commands on the embedded data directory,
//! as a user runs them right after `gauntlet run` (no server anywhere).
//! The `echo` provider answers with the prompt, so which tests pass is set
//! by the prompt: a prompt that adds "yes" passes every `contains: yes`.

use std::path::Path;

use crate::cli::{gauntlet, text};

/// A suite of `n` tests, `x0`…, whose one prompt is `prompt`; the tests in
/// reverse order when `reversed` (they still pair by content).
fn suite(prompt: &str, n: usize, reversed: bool) -> String {
    let mut indexes: Vec<usize> = (0..n).collect();
    if reversed {
        indexes.reverse();
    }
    let mut s = format!(
        "description: compare me\nprompts:\n  - '{prompt}'\nproviders:\n  - id: echo\ntests:\n"
    );
    for i in indexes {
        s += &format!(
            "  - description: case {i}\n    vars: {{ x: 'x{i}' }}\n    assert:\n      - type: contains\n        value: yes\n"
        );
    }
    s
}

/// Runs `suite` embedded in `dir` and returns its run id.
async fn run(dir: &Path, name: &str, suite: &str) -> String {
    std::fs::write(dir.join(name), suite).unwrap();
    let out = gauntlet(&["run", name], dir).await;
    let (stdout, stderr) = text(&out);
    assert!(
        matches!(out.status.code(), Some(0 | 100)),
        "{stdout}\n{stderr}"
    );
    stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("run id: "))
        .unwrap_or_else(|| panic!("no run id in:\n{stdout}"))
        .trim()
        .to_string()
}

#[tokio::test]
async fn compare_two_embedded_runs_finds_the_regression_and_gates_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A: every test passes. B: the same 30 tests in reverse order plus one
    // more, and a prompt that makes every one fail.
    let a = run(d, "a.yaml", &suite("{{ x }} yes", 30, false)).await;
    let b = run(d, "b.yaml", &suite("{{ x }}", 31, true)).await;

    // The read commands work on the data directory, no server needed.
    let out = gauntlet(&["runs"], d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(&a) && stdout.contains(&b), "{stdout}");

    let out = gauntlet(&["compare", &a, &b, "-o", "c.json"], d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("worse"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("c.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "gauntlet.compare/v1");
    assert_eq!(doc["partial"], false);
    let pairs = doc["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 1, "{doc:#}");
    let p = &pairs[0];
    // Matched by content: the 30 shared tests, whatever their order; the
    // extra test has no partner.
    assert_eq!(p["n_pairs"], 30, "{p:#}");
    assert_eq!(p["a_pass_rate"], 1.0);
    assert_eq!(p["b_pass_rate"], 0.0);
    assert_eq!(p["mcnemar"]["b"], 30);
    assert_eq!(p["mcnemar"]["c"], 0);
    // Exact two-sided binomial: 2 · 0.5^30.
    let expected = 2.0 * 0.5f64.powi(30);
    let got = p["mcnemar"]["p_value"].as_f64().unwrap();
    assert!((got - expected).abs() < 1e-15, "{got} vs {expected}");
    assert_eq!(p["verdict"], "worse");
    // Scores: pass 1, fail 0, on every pair: the difference is exactly -1.
    assert_eq!(p["score_diff"]["mean"], -1.0);
    assert_eq!(p["a"]["run_id"], a.as_str());
    assert_eq!(p["b"]["run_id"], b.as_str());

    // The gate: exit 100 on the regression, and 0 the other way round.
    let out = gauntlet(&["compare", &a, &b, "--fail-on-regression"], d).await;
    assert_eq!(out.status.code(), Some(100), "{:?}", text(&out));
    let out = gauntlet(
        &["compare", &b, &a, "--fail-on-regression", "-o", "c.md"],
        d,
    )
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("better"), "{stdout}");
    let md = std::fs::read_to_string(d.join("c.md")).unwrap();
    assert!(md.starts_with("### Comparison run "), "{md}");
    assert!(md.contains("| better |"), "{md}");
}

#[tokio::test]
async fn compare_within_one_run_by_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let two_prompts = suite("{{ x }} yes", 12, false).replace(
        "prompts:\n  - '{{ x }} yes'\n",
        "prompts:\n  - '{{ x }} yes'\n  - '{{ x }}'\n",
    );
    let id = run(d, "s.yaml", &two_prompts).await;
    let out = gauntlet(&["compare", &id, "--by", "prompt", "-o", "w.json"], d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("w.json")).unwrap()).unwrap();
    let p = &doc["pairs"][0];
    assert_eq!(p["a"]["prompt"], "{{ x }} yes", "{p:#}");
    assert_eq!(p["b"]["prompt"], "{{ x }}");
    assert_eq!(p["n_pairs"], 12);
    assert_eq!(
        (p["mcnemar"]["b"].clone(), p["mcnemar"]["c"].clone()),
        (12.into(), 0.into())
    );
    assert_eq!(p["verdict"], "worse");

    // One provider: nothing to compare by provider, and the user is told why.
    let out = gauntlet(&["compare", &id], d).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("has results for 1 provider"), "{stderr}");
}

#[tokio::test]
async fn read_commands_without_data_or_run_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = gauntlet(&["runs"], d).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no embedded runs in .gauntlet"), "{stderr}");
    // No database was made by asking.
    assert!(!d.join(".gauntlet").exists());

    let id = run(d, "a.yaml", &suite("{{ x }} yes", 2, false)).await;
    let unknown = "01890a5d-ac96-774b-bcce-b302099a8057";
    let out = gauntlet(&["compare", &id, unknown], d).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("run {unknown} not found")),
        "{stderr}"
    );
    let out = gauntlet(&["compare", &id, "not-an-id"], d).await;
    let (_, stderr) = text(&out);
    assert!(
        stderr.contains("run_b: `not-an-id` is not a valid id"),
        "{stderr}"
    );
    let out = gauntlet(&["compare", &id, "--alpha", "2"], d).await;
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}

/// Thirty tests under one prompt: 0–4 pass with either prompt, 5–24 need
/// the prompt to add "yes" (`contains`, metric `recall`), 25–29 need it
/// not to (`not-contains`).
fn regress_suite(prompt: &str) -> String {
    let mut s = format!(
        "description: regress me\nprompts:\n  - '{prompt}'\nproviders:\n  - id: echo\ntests:\n"
    );
    for i in 0..30 {
        let (x, kind) = match i {
            0..5 => (format!("x{i} yes"), "contains"),
            5..25 => (format!("x{i}"), "contains"),
            _ => (format!("x{i}"), "not-contains"),
        };
        let metric = if kind == "contains" {
            "\n        metric: recall"
        } else {
            ""
        };
        s += &format!(
            "  - description: case {i}\n    vars: {{ x: '{x}' }}\n    assert:\n      - type: {kind}\n        value: yes{metric}\n"
        );
    }
    s
}

#[tokio::test]
async fn a_run_checked_against_the_last_run_of_its_suite_lists_what_flipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The first run of the suite has no baseline: said, and not a
    // regression (it exits 100 for its five failing not-contains cases).
    std::fs::write(d.join("a.yaml"), regress_suite("{{ x }} yes")).unwrap();
    let out = gauntlet(&["run", "a.yaml", "--baseline", "last"], d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(100), "{stdout}\n{stderr}");
    assert!(stderr.contains("has no baseline"), "{stderr}");
    let a = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("run id: "))
        .unwrap()
        .trim()
        .to_string();

    // B drops the "yes": 20 cases flip to fail, 5 to pass.
    std::fs::write(d.join("b.yaml"), regress_suite("{{ x }}")).unwrap();
    let out = gauntlet(&["run", "b.yaml", "--baseline", "last"], d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(100), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("flipped: 20 pass → fail, 5 fail → pass"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pass → fail: test 5: case 5 (echo"),
        "{stdout}"
    );
    assert!(stdout.contains("… and 10 more pass → fail"), "{stdout}");
    assert!(stdout.contains("metric recall: 100.0% → 20.0%"), "{stdout}");
    assert!(stdout.contains("verdict: REGRESSION"), "{stdout}");
    let b = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("run id: "))
        .unwrap()
        .trim()
        .to_string();

    let out = gauntlet(&["regressions", &b, "--max-listed", "3", "-o", "r.json"], d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("r.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "gauntlet.regressions/v1");
    assert_eq!(doc["baseline_run_id"], a.as_str(), "{doc:#}");
    assert_eq!(doc["regressed"], true);
    assert_eq!(doc["pass_to_fail_count"], 20);
    assert_eq!(doc["fail_to_pass_count"], 5);
    let listed: Vec<_> = doc["pass_to_fail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["test_index"].as_u64().unwrap(),
                c["description"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [(5, "case 5"), (6, "case 6"), (7, "case 7")]);
    assert_eq!(doc["fail_to_pass"][0]["description"], "case 25");
    assert_eq!(doc["fail_to_pass"][0]["score"], 1.0);
    let pair = &doc["comparison"]["pairs"][0];
    assert_eq!(pair["n_pairs"], 30);
    assert_eq!(
        (pair["mcnemar"]["b"].clone(), pair["mcnemar"]["c"].clone()),
        (20.into(), 5.into())
    );
    assert_eq!(pair["verdict"], "worse");
    let shift = |kind: &str, name: &str| {
        doc["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["kind"] == kind && m["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {doc:#}"))
            .clone()
    };
    let recall = shift("metric", "recall");
    assert_eq!(recall["baseline_pass_rate"]["estimate"], 1.0);
    assert_eq!(recall["pass_rate"]["estimate"], 0.2);
    assert_eq!(
        (recall["baseline_total"].clone(), recall["total"].clone()),
        (25.into(), 25.into())
    );
    assert_eq!(recall["significant"], true);
    assert_eq!(
        shift("assertion_type", "not-contains")["pass_rate"]["estimate"],
        1.0
    );

    // The gate, and the same regression in Markdown.
    let out = gauntlet(
        &["regressions", &b, "--fail-on-regression", "-o", "r.md"],
        d,
    )
    .await;
    assert_eq!(out.status.code(), Some(100), "{:?}", text(&out));
    let md = std::fs::read_to_string(d.join("r.md")).unwrap();
    assert!(
        md.contains("**Regression** — 20 pass → fail, 5 fail → pass"),
        "{md}"
    );
    assert!(md.contains("| metric recall | 100.0% | 20.0% |"), "{md}");

    // B as A's baseline (given): the other way round, better overall, but
    // `not-contains` fell from 5 of 5 to 0 of 5 (p = 0.0016, last in
    // Holm's order): a regression at alpha 0.05, not at 0.001.
    let args = ["regressions", &a, "--baseline", &b, "--fail-on-regression"];
    let out = gauntlet(&args, d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(100), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("flipped: 5 pass → fail, 20 fail → pass"),
        "{stdout}"
    );
    assert!(stdout.contains("better"), "{stdout}");
    assert!(
        stdout.contains("not-contains: 100.0% → 0.0% (n 5 → 5), p (Holm) 0.0016  ← significant"),
        "{stdout}"
    );
    let out = gauntlet(&[&args[..], &["--alpha", "0.001"]].concat(), d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("verdict: no significant regression"),
        "{stdout}"
    );

    // No baseline to be found, and a run as its own baseline: said.
    let out = gauntlet(&["regressions", &a], d).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has no baseline: no completed run of the suite \"regress me\""),
        "{stderr}"
    );
    let out = gauntlet(&["regressions", &a, "--baseline", &a], d).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("baseline_run_id"), "{stderr}");
}

#[tokio::test]
async fn trends_of_a_suite_count_its_completed_runs_per_provider() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a.yaml"), regress_suite("{{ x }} yes")).unwrap();
    std::fs::write(d.join("b.yaml"), regress_suite("{{ x }}")).unwrap();
    let out = gauntlet(&["run", "a.yaml"], d).await;
    assert_eq!(out.status.code(), Some(100), "{:?}", text(&out));
    let out = gauntlet(&["run", "b.yaml", "--label", "nightly"], d).await;
    assert_eq!(out.status.code(), Some(100), "{:?}", text(&out));
    // Another suite's run is not counted.
    run(d, "other.yaml", &suite("{{ x }} yes", 4, false)).await;

    // By the suite file (its description), then by the description.
    let out = gauntlet(&["trends", "a.yaml", "--bucket", "hour", "-o", "t.json"], d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("Trends of \"regress me\" from "),
        "{stdout}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("t.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "gauntlet.trends/v1");
    assert_eq!(doc["bucket"], "hour");
    let points = doc["points"].as_array().unwrap();
    // Both runs, in one hour unless the test ran across one.
    assert!(matches!(points.len(), 1 | 2), "{doc:#}");
    let sum = |key: &str| points.iter().map(|p| p[key].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        (sum("runs"), sum("total"), sum("passed")),
        (2, 60, 35),
        "{doc:#}"
    );
    assert!(points.iter().all(|p| p["provider"] == "echo"));
    if points.len() == 1 {
        let rate = &points[0]["pass_rate"];
        assert!((rate["estimate"].as_f64().unwrap() - 35.0 / 60.0).abs() < 1e-12);
        assert!(rate["low"].as_f64().unwrap() < rate["estimate"].as_f64().unwrap());
        assert!(stdout.contains("35/60"), "{stdout}");
    }

    // The labelled run alone, of this suite or of every suite; listed
    // with its label.
    for query in [
        &["regress me", "--label", "nightly"][..],
        &["", "--label", "nightly"],
    ] {
        let args = [&["trends"][..], query, &["-o", "l.json"]].concat();
        let out = gauntlet(&args, d).await;
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("l.json")).unwrap()).unwrap();
        let points = doc["points"].as_array().unwrap();
        let sum = |key: &str| points.iter().map(|p| p[key].as_u64().unwrap()).sum::<u64>();
        assert_eq!((sum("runs"), sum("total")), (1, 30), "{query:?}: {doc:#}");
    }
    let out = gauntlet(&["runs"], d).await;
    let (stdout, _) = text(&out);
    assert_eq!(
        stdout.matches("regress me [nightly]").count(),
        1,
        "{stdout}"
    );
    let long = "n".repeat(201);
    let out = gauntlet(&["run", "b.yaml", "--label", &long], d).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("options.label: 201 characters; at most 200"),
        "{stderr}"
    );

    let out = gauntlet(&["trends", "regress me", "--provider", "nobody"], d).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout.contains("no completed runs in that time"),
        "{stdout}"
    );

    // Bad input is named.
    std::fs::write(
        d.join("nameless.yaml"),
        "prompts: [hi]\nproviders: [echo]\ntests:\n  - vars: {}\n",
    )
    .unwrap();
    let out = gauntlet(&["trends", "nameless.yaml"], d).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nameless.yaml: the suite has no description"),
        "{stderr}"
    );
    let out = gauntlet(&["trends", "regress me", "--since", "yesterday"], d).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`yesterday` is neither an RFC 3339 time nor a span"),
        "{stderr}"
    );
    let out = gauntlet(
        &["trends", "regress me", "--bucket", "hour", "--since", "60d"],
        d,
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("since") && stderr.contains("1440 buckets; at most 1000"),
        "{stderr}"
    );
}

#[tokio::test]
async fn insights_name_the_recommended_provider_and_the_cases_failing_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Two echo providers, two repeats; tests 0-7 pass, 8-11 can pass
    // nowhere (the output never holds "zzz").
    let mut s = String::from(
        "description: insights\nprompts:\n  - '{{ x }}'\nproviders:\n  - id: echo\n    label: a\n  - id: echo\n    label: b\nevaluateOptions:\n  repeat: 2\ntests:\n",
    );
    for i in 0..12 {
        let want = if i < 8 { format!("x{i}") } else { "zzz".into() };
        s += &format!(
            "  - description: case {i}\n    vars: {{ x: 'x{i}' }}\n    assert:\n      - type: contains\n        value: '{want}'\n"
        );
    }
    let id = run(d, "s.yaml", &s).await;
    let out = gauntlet(&["insights", &id, "--max-listed", "3", "-o", "i.json"], d).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("recommended: a: the best pass rate (66.7%)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failing on every provider and prompt: 4"),
        "{stdout}"
    );
    assert!(stdout.contains("  test 8: case 8 (4 results)"), "{stdout}");
    assert!(stdout.contains("flaky (repeats disagree): 0"), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("i.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "gauntlet.insights/v1");
    assert_eq!(doc["partial"], false);
    assert_eq!(doc["recommended_provider"], "a");
    let providers = doc["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 2);
    assert_eq!(
        (
            providers[0]["total"].clone(),
            providers[0]["passed"].clone()
        ),
        (24.into(), 16.into())
    );
    // Identical answers: b is not worse (no discordant pair, p = 1).
    assert_eq!(providers[1]["p_vs_best"], 1.0);
    assert_eq!(providers[1]["significantly_worse"], false);
    assert_eq!(doc["failing_everywhere_count"], 4);
    let listed: Vec<_> = doc["failing_everywhere"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["description"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["case 8", "case 9", "case 10"]);

    let out = gauntlet(&["insights", "not-a-run"], d).await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run_id"), "{stderr}");
}
