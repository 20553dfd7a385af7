//! The HTML report opened in headless Chromium, as a person would open it:
//! driven over WebDriver (fantoccini and Debian's `chromedriver`), with
//! nothing of the page's own code used to check it.
//!
//! Chromium and chromedriver come from Debian's `chromium` and
//! `chromium-driver` packages, which `scripts/test.sh` installs. Without
//! them this test fails under `CI=true` and is skipped (with a message)
//! elsewhere. `GAUNTLET_SCREENSHOTS=1` also writes `docs/report-run.png`.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use fantoccini::{Client, ClientBuilder, Locator};
use gauntlet_proto::v1;
use gauntlet_reports::{ReportData, render};
use serde_json::{Value, json};

const PROVIDERS: [&str; 2] = ["openai:chat:gpt-4o-mini", "anthropic:messages:claude"];
const PROMPTS: [&str; 2] = ["Answer: {{question}}", "Be brief. {{question}}"];
const TESTS: u32 = 60;
const XSS: &str = "<script>alert(1)</script><img src=x onerror=\"document.title='pwned'\">";

/// 60 tests × 2 prompts × 2 providers. Every seventh test fails with one
/// provider; test 33's output is an attack.
fn run() -> ReportData {
    let mut results = Vec::new();
    for test in 0..TESTS {
        for (q, prompt) in PROMPTS.iter().enumerate() {
            for (p, provider) in PROVIDERS.iter().enumerate() {
                let fails = test % 7 == 3 && p == 1;
                let output = if test == 33 {
                    XSS.to_owned()
                } else {
                    format!("The answer to question {test} is {}.", test * 2)
                };
                results.push(v1::Result {
                    run_id: "run-b".into(),
                    task_index: results.len() as u64,
                    test_index: test,
                    prompt_index: q as u32,
                    provider_index: p as u32,
                    provider_id: (*provider).into(),
                    prompt_label: (*prompt).into(),
                    vars_json: format!("{{\"question\":\"what is {test} doubled?\"}}"),
                    output,
                    status: if fails {
                        v1::ResultStatus::Fail
                    } else {
                        v1::ResultStatus::Pass
                    } as i32,
                    score: if fails { 0.0 } else { 1.0 },
                    reason: if fails {
                        "Expected output to contain \"doubled\"".into()
                    } else {
                        String::new()
                    },
                    assertions: vec![v1::AssertionResult {
                        r#type: "contains".into(),
                        pass: !fails,
                        score: if fails { 0.0 } else { 1.0 },
                        reason: String::new(),
                    }],
                    latency_ms: 40 + (test * 37 + p as u32 * 300) % 900,
                    tokens_in: 12,
                    tokens_out: 9,
                    cost_usd: 0.00002 * (p + 1) as f64,
                    test_description: format!("doubles {test}"),
                    ..Default::default()
                });
            }
        }
    }
    let interval = |rate: f64| v1::Interval {
        estimate: rate,
        low: (rate - 0.08).max(0.0),
        high: (rate + 0.05).min(1.0),
    };
    let group = |p: usize, q: usize| {
        let rate = if p == 1 { 51.0 / 60.0 } else { 1.0 };
        v1::GroupSummary {
            provider_index: p as u32,
            provider_id: PROVIDERS[p].into(),
            prompt_index: q as u32,
            prompt_label: PROMPTS[q].into(),
            total: 60,
            passed: (rate * 60.0) as u64,
            failed: 60 - (rate * 60.0) as u64,
            pass_rate: rate,
            pass_rate_interval: Some(interval(rate)),
            cost_usd: 0.0012 * (p + 1) as f64,
            ..Default::default()
        }
    };
    let stats = |name: &str, rate: f64| v1::AssertionStats {
        name: name.into(),
        passed: (rate * 240.0) as u64,
        failed: 240 - (rate * 240.0) as u64,
        pass_rate: Some(interval(rate)),
    };
    ReportData {
        summary: v1::RunSummary {
            run_id: "0193a5c2-7f1e-7c3a-9a51-4be0e5a1d2c9".into(),
            status: v1::RunStatus::Completed as i32,
            description: "Arithmetic answers".into(),
            total_tasks: results.len() as u64,
            completed_tasks: results.len() as u64,
            passed: 222,
            failed: 18,
            pass_rate: 222.0 / 240.0,
            pass_rate_interval: Some(interval(222.0 / 240.0)),
            groups: (0..2)
                .flat_map(|p| (0..2).map(move |q| group(p, q)))
                .collect(),
            assertion_types: vec![stats("contains", 222.0 / 240.0)],
            metrics: vec![stats("accuracy", 0.9)],
            latency: Some(v1::LatencyStats {
                p50_ms: 420.0,
                p95_ms: 900.0,
                ..Default::default()
            }),
            tokens_in: 2880,
            tokens_out: 2160,
            cost_usd: 0.0072,
            ..Default::default()
        },
        results,
    }
}

/// Tests in [`run`] with a failing cell.
fn failing_tests() -> Vec<u32> {
    (0..TESTS).filter(|t| t % 7 == 3).collect()
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Starts chromedriver and a headless Chromium session, or says why not.
async fn browser() -> Option<(Driver, Client)> {
    let (Some(driver), Some(chromium)) = (
        find(&["chromedriver"]),
        find(&["chromium", "chromium-browser"]),
    ) else {
        let why = "chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)";
        if std::env::var_os("CI").is_some_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Driver(
        Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--hide-scrollbars"],
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return Some((child, client)),
            Err(e) if started.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no WebDriver session after 30 s: {e}"),
        }
    }
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
}

async fn eval(client: &Client, script: &str) -> Value {
    client
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

async fn rows(client: &Client) -> Vec<String> {
    let v = eval(
        client,
        "return Array.from(document.querySelectorAll('#gx-matrix tbody tr'))
            .map(tr => tr.querySelector('th div').textContent);",
    )
    .await;
    serde_json::from_value(v).unwrap()
}

fn write_page(dir: &Path, data: &ReportData) -> String {
    let path = dir.join("report.html");
    std::fs::write(&path, render::html(data)).unwrap();
    format!("file://{}", path.display())
}

#[tokio::test]
async fn the_html_report_works_in_a_real_browser() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = run();
    client.goto(&write_page(dir.path(), &data)).await.unwrap();
    client
        .wait()
        .for_element(Locator::Css("#gx-matrix[data-ready=true]"))
        .await
        .expect("the matrix script ran");

    // Every chart is drawn, with marks inside its plotting area.
    let charts = eval(
        &client,
        "return Array.from(document.querySelectorAll('#charts figure')).map(f => {
            const svg = f.querySelector('svg');
            const box = svg.getBoundingClientRect();
            const marks = Array.from(svg.querySelectorAll('rect, circle'))
                .filter(e => (e.getAttribute('fill') || '').toUpperCase() !== '#FFFFFF')
                .filter(e => { const b = e.getBBox(); return b.width > 0 && b.height > 0; });
            return {id: f.id, width: box.width, height: box.height, marks: marks.length};
        });",
    )
    .await;
    let charts = charts.as_array().unwrap();
    let ids: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "chart-pass-rate",
            "chart-latency",
            "chart-cost",
            "chart-metrics"
        ]
    );
    for c in charts {
        assert!(
            c["width"].as_f64().unwrap() > 300.0 && c["height"].as_f64().unwrap() > 60.0,
            "{c}"
        );
        assert!(c["marks"].as_u64().unwrap() >= 2, "blank chart: {c}");
    }

    // Tests as rows, provider × prompt as columns, 25 rows a page.
    let heads = eval(
        &client,
        "return Array.from(document.querySelectorAll('#gx-matrix thead th')).map(th => th.textContent);",
    )
    .await;
    let heads: Vec<String> = serde_json::from_value(heads).unwrap();
    assert_eq!(
        heads.len(),
        1 + PROVIDERS.len() * PROMPTS.len(),
        "{heads:?}"
    );
    assert_eq!(heads[1], format!("{}{}", PROVIDERS[0], PROMPTS[0]));
    let first = rows(&client).await;
    assert_eq!(first.len(), 25);
    assert!(first[0].starts_with("#0 doubles 0"), "{first:?}");
    let cells = eval(
        &client,
        "return document.querySelectorAll('#gx-matrix tbody tr:first-child td').length;",
    )
    .await;
    assert_eq!(cells, 4);
    click(&client, "#gx-next").await;
    let second = rows(&client).await;
    assert!(second[0].starts_with("#25 "), "{second:?}");

    // "Failures only" leaves exactly the tests with a failing cell.
    click(&client, "#gx-fails").await;
    let failing = rows(&client).await;
    let want: Vec<String> = failing_tests()
        .iter()
        .map(|t| format!("#{t} doubles {t}"))
        .collect();
    assert_eq!(failing, want);
    click(&client, "#gx-fails").await;

    // The attack's text is shown as text, and nothing of it ran.
    client
        .find(Locator::Css("#gx-search"))
        .await
        .unwrap()
        .send_keys("onerror")
        .await
        .unwrap();
    client
        .wait()
        .for_element(Locator::XPath(
            "//table[@id='gx-matrix']/tbody/tr[count(../tr)=1]",
        ))
        .await
        .expect("the search leaves one row");
    let shown = eval(
        &client,
        "return document.querySelector('#gx-matrix tbody tr td pre').textContent;",
    )
    .await;
    assert_eq!(shown, XSS);
    assert_eq!(client.title().await.unwrap(), "Arithmetic answers");
    assert!(
        client.get_alert_text().await.is_err(),
        "an alert is open: the output ran"
    );
    let injected = eval(
        &client,
        "return document.querySelectorAll('#gx-matrix img, #gx-matrix script').length;",
    )
    .await;
    assert_eq!(injected, 0);

    if std::env::var_os("GAUNTLET_SCREENSHOTS").is_some() {
        client.set_window_size(1400, 2000).await.unwrap();
        client.goto(&write_page(dir.path(), &data)).await.unwrap();
        client
            .wait()
            .for_element(Locator::Css("#gx-matrix[data-ready=true]"))
            .await
            .unwrap();
        let png = client.screenshot().await.unwrap();
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("report-run.png"), png).unwrap();
    }
    client.close().await.unwrap();
}

/// Two providers compared across runs: one regressed, one held.
fn comparison() -> gauntlet_reports::comparison::ComparisonData {
    let arm = |run: &str, provider: &str| v1::Arm {
        run_id: run.into(),
        provider: provider.into(),
        prompt: String::new(),
    };
    let pair =
        |provider: &str, a: f64, b: f64, verdict: v1::Verdict, p: f64, d: (f64, f64, f64)| {
            v1::PairComparison {
                a: Some(arm("run-a", provider)),
                b: Some(arm("run-b", provider)),
                n_pairs: 240,
                a_pass_rate: a,
                b_pass_rate: b,
                mcnemar: Some(v1::McNemarTest {
                    b: 30,
                    c: 4,
                    p_value: p,
                    p_value_adjusted: p * 2.0,
                }),
                score_diff: Some(v1::MeanDiff {
                    mean: d.0,
                    ci_low: d.1,
                    ci_high: d.2,
                }),
                verdict: verdict as i32,
                ..Default::default()
            }
        };
    let summary = |id: &str, description: &str, rate: f64| v1::RunSummary {
        run_id: id.into(),
        description: description.into(),
        status: v1::RunStatus::Completed as i32,
        pass_rate: rate,
        ..Default::default()
    };
    gauntlet_reports::comparison::ComparisonData {
        comparison: v1::Comparison {
            run_a: "run-a".into(),
            run_b: "run-b".into(),
            alpha: 0.05,
            pairs: vec![
                pair(
                    PROVIDERS[0],
                    0.95,
                    0.84,
                    v1::Verdict::Worse,
                    0.00001,
                    (-0.11, -0.16, -0.06),
                ),
                pair(
                    PROVIDERS[1],
                    0.86,
                    0.88,
                    v1::Verdict::NoSignificantDifference,
                    0.4,
                    (0.02, -0.03, 0.07),
                ),
            ],
            ..Default::default()
        },
        a: summary("run-a", "Nightly <main>", 0.905),
        b: Some(summary("run-b", "Nightly <candidate>", 0.86)),
    }
}

#[tokio::test]
async fn the_comparison_report_works_in_a_real_browser() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("comparison.html");
    std::fs::write(&path, gauntlet_reports::comparison::html(&comparison())).unwrap();
    client
        .goto(&format!("file://{}", path.display()))
        .await
        .unwrap();
    let charts = eval(
        &client,
        "return Array.from(document.querySelectorAll('#charts figure')).map(f => {
            const marks = Array.from(f.querySelectorAll('svg rect'))
                .filter(e => (e.getAttribute('fill') || '').toUpperCase() !== '#FFFFFF')
                .filter(e => { const b = e.getBBox(); return b.width > 0 && b.height > 0; });
            return [f.id, marks.length];
        });",
    )
    .await;
    assert_eq!(
        charts,
        json!([["chart-compare-rates", 4], ["chart-compare-scores", 2]])
    );
    let rows = eval(
        &client,
        "return Array.from(document.querySelectorAll('#verdicts tr')).slice(1)
            .map(tr => [tr.className, tr.lastElementChild.textContent]);",
    )
    .await;
    assert_eq!(
        rows,
        json!([["fail", "worse"], ["same", "no significant difference"]])
    );
    assert_eq!(
        client.title().await.unwrap(),
        "Comparison run run-a (A) vs run run-b (B), alpha 0.05 (Holm-corrected McNemar)"
    );
    let heading = eval(&client, "return document.querySelector('h1').textContent;").await;
    assert_eq!(heading, "Nightly <main> → Nightly <candidate>");
    if std::env::var_os("GAUNTLET_SCREENSHOTS").is_some() {
        client.set_window_size(1400, 1000).await.unwrap();
        let png = client.screenshot().await.unwrap();
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        std::fs::write(docs.join("report-comparison.png"), png).unwrap();
    }
    client.close().await.unwrap();
}

/// The trend and roll-up pages: every chart drawn with marks.
#[tokio::test]
async fn the_trend_and_rollup_reports_draw_their_charts() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let day = 86_400;
    let mut points = (0..5)
        .flat_map(|d| {
            PROVIDERS.iter().enumerate().map(move |(p, provider)| {
                let rate = 0.7 + 0.05 * d as f64 - 0.1 * p as f64;
                v1::TrendPoint {
                    provider: (*provider).into(),
                    start: Some(prost_types::Timestamp {
                        seconds: 1_795_910_400 + d * day,
                        nanos: 0,
                    }),
                    runs: 2,
                    total: 200,
                    passed: (rate * 200.0) as u64,
                    pass_rate: Some(v1::Interval {
                        estimate: rate,
                        low: rate - 0.06,
                        high: rate + 0.06,
                    }),
                    p95_latency_ms: 400.0 + 30.0 * d as f64,
                    cost_usd: 0.01 * (p + 1) as f64,
                }
            })
        })
        .collect::<Vec<_>>();
    // By provider, then by time, as GetTrends answers.
    points.sort_by(|a, b| a.provider.cmp(&b.provider));
    let trend = gauntlet_reports::trend::html(&gauntlet_reports::trend::TrendData {
        trends: v1::Trends {
            description: "Arithmetic answers".into(),
            bucket: v1::TrendBucket::Day as i32,
            points,
            ..Default::default()
        },
        run_id: "run-b".into(),
    });
    let rollup = gauntlet_reports::rollup::html(&gauntlet_reports::rollup::RollupData {
        runs: vec![run().summary, comparison().a],
    });
    for (name, page, want) in [
        (
            "trend",
            trend,
            json!([
                ["chart-trend-pass-rate", true],
                ["chart-trend-latency", true],
                ["chart-trend-cost", true]
            ]),
        ),
        ("rollup", rollup, json!([["chart-rollup-pass-rate", true]])),
    ] {
        let path = dir.path().join(format!("{name}.html"));
        std::fs::write(&path, page).unwrap();
        client
            .goto(&format!("file://{}", path.display()))
            .await
            .unwrap();
        // Drawn: a line or bar with a size inside each chart.
        let charts = eval(
            &client,
            "return Array.from(document.querySelectorAll('#charts figure')).map(f => [f.id,
                Array.from(f.querySelectorAll('svg polyline, svg rect, svg circle'))
                    .filter(e => (e.getAttribute('fill') || '').toUpperCase() !== '#FFFFFF')
                    .some(e => { const b = e.getBBox(); return b.width > 2 && b.height > 2; })]);",
        )
        .await;
        assert_eq!(charts, want, "{name}");
    }
    client.close().await.unwrap();
}

/// A matrix of 450 tests: three JSON chunks of 200 rows. The page count,
/// the last page, and a filter reach rows in every chunk.
#[tokio::test]
async fn the_matrix_pages_and_filters_across_its_chunks() {
    let Some((_driver, client)) = browser().await else {
        return;
    };
    const ROWS: u32 = 450;
    let mut data = run();
    data.results = (0..ROWS)
        .map(|t| v1::Result {
            task_index: u64::from(t),
            test_index: t,
            provider_id: PROVIDERS[0].into(),
            // Test 7, 207 and 407: one failure in each chunk.
            status: if t % 200 == 7 {
                v1::ResultStatus::Fail
            } else {
                v1::ResultStatus::Pass
            } as i32,
            output: format!("answer {t}"),
            test_description: format!("case {t}"),
            ..Default::default()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let page = render::html(&data);
    assert_eq!(page.matches("class=\"gx-rows\">[").count(), 3);
    client.goto(&write_page(dir.path(), &data)).await.unwrap();
    client
        .wait()
        .for_element(Locator::Css("#gx-matrix[data-ready=true]"))
        .await
        .unwrap();
    let status = eval(
        &client,
        "return document.querySelector('#gx-page').textContent;",
    )
    .await;
    assert_eq!(status, "page 1 of 18 · 450 of 450 rows");
    for _ in 0..17 {
        click(&client, "#gx-next").await;
    }
    let last = rows(&client).await;
    assert_eq!(last.first().map(String::as_str), Some("#425 case 425"));
    assert_eq!(last.last().map(String::as_str), Some("#449 case 449"));
    click(&client, "#gx-fails").await;
    assert_eq!(
        rows(&client).await,
        ["#7 case 7", "#207 case 207", "#407 case 407"]
    );
    client.close().await.unwrap();
}
