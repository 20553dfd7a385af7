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
