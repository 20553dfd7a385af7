use gauntlet_mockllm::MockConfig;
use serde_json::Value;

use crate::{chat, client, start, user};

async fn forced(server: &gauntlet_mockllm::MockServer, fault: &str) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", server.base_url()))
        .header("x-mock-fault", fault)
        .json(&user("hi"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn forced_429_carries_retry_after_and_error_body() {
    let server = start(MockConfig {
        retry_after_secs: 7,
        ..MockConfig::default()
    })
    .await;
    let resp = forced(&server, "429").await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(server.stats().faults_429, 1);
}

#[tokio::test]
async fn forced_500_and_none_override_the_rates() {
    let server = start(MockConfig {
        rate_429: 1.0,
        ..MockConfig::default()
    })
    .await;
    let resp = forced(&server, "500").await;
    assert_eq!(resp.status(), 500);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(forced(&server, "none").await.status(), 200);
    assert_eq!(forced(&server, "bogus").await.status(), 400);
}

#[tokio::test]
async fn rate_one_always_faults() {
    for (config, status) in [
        (
            MockConfig {
                rate_429: 1.0,
                ..MockConfig::default()
            },
            429,
        ),
        (
            MockConfig {
                rate_500: 1.0,
                ..MockConfig::default()
            },
            500,
        ),
    ] {
        let server = start(config).await;
        for _ in 0..25 {
            assert_eq!(chat(&server, user("x")).await.status(), status);
        }
        let s = server.stats();
        assert_eq!(s.ok, 0);
        assert_eq!(s.faults_429 + s.faults_500, 25);
    }
}

#[tokio::test]
async fn timeout_fault_hangs_then_answers_504() {
    let server = start(MockConfig {
        rate_timeout: 1.0,
        hang_ms: 250,
        ..MockConfig::default()
    })
    .await;
    let t = std::time::Instant::now();
    let resp = chat(&server, user("x")).await;
    assert_eq!(resp.status(), 504);
    assert!(t.elapsed().as_millis() >= 250);
    assert_eq!(server.stats().faults_timeout, 1);
}

#[tokio::test]
async fn a_client_timeout_fires_while_the_mock_hangs() {
    let server = start(MockConfig {
        hang_ms: 60_000,
        ..MockConfig::default()
    })
    .await;
    let err = client()
        .post(format!("{}/chat/completions", server.base_url()))
        .header("x-mock-fault", "timeout")
        .timeout(std::time::Duration::from_millis(200))
        .json(&user("x"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[tokio::test]
async fn seeded_fault_sequence_is_reproducible() {
    let config = MockConfig {
        rate_429: 0.3,
        rate_500: 0.3,
        seed: Some(1234),
        ..MockConfig::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let server = start(config.clone()).await;
        let mut seq = Vec::new();
        for _ in 0..30 {
            seq.push(chat(&server, user("x")).await.status().as_u16());
        }
        runs.push(seq);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&200) && runs[0].contains(&429) && runs[0].contains(&500));
}

#[tokio::test]
async fn a_true_cap_serves_its_rate_and_tells_the_rest_when_to_come_back() {
    let server = start(MockConfig {
        max_rps: 100,
        ..MockConfig::default()
    })
    .await;
    // 400 requests at once: the cap admits its burst (a tenth of a second's
    // worth) and its rate for as long as the flood lasts, and refuses the
    // rest with OpenAI's headers.
    let started = std::time::Instant::now();
    let answers = futures::future::join_all((0..400).map(|_| chat(&server, user("x")))).await;
    let most = 10 + (started.elapsed().as_secs_f64() * 100.0).ceil() as usize + 1;
    let ok = answers.iter().filter(|r| r.status() == 200).count();
    assert!(
        (5..=most).contains(&ok) && ok < 200,
        "{ok} admitted, at most {most}"
    );
    let refused = answers.iter().find(|r| r.status() == 429).unwrap();
    let headers = refused.headers();
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    // The burst: 100 ms worth at 10 ms a request, and one.
    assert_eq!(headers["x-ratelimit-limit-requests"], "11");
    let wait_ms: u64 = headers["retry-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait_ms), "retry-after-ms {wait_ms}");
    assert_eq!(headers["retry-after"], "1");
    let reset = header_ms(headers, "x-ratelimit-reset-requests");
    assert!(
        (100..=111).contains(&reset) && reset >= wait_ms,
        "reset {reset} ms"
    );
    assert_eq!(server.stats().faults_429, 400 - ok as u64);

    // A client that paces itself under the cap is never refused.
    server.reset_stats();
    let start = tokio::time::Instant::now();
    for i in 0..30u32 {
        tokio::time::sleep_until(start + std::time::Duration::from_millis(u64::from(i) * 15)).await;
        assert_eq!(chat(&server, user("x")).await.status(), 200, "request {i}");
    }
}

fn header_ms(headers: &reqwest::header::HeaderMap, name: &str) -> u64 {
    let text = headers[name].to_str().unwrap();
    text.strip_suffix("ms")
        .unwrap_or_else(|| panic!("{name}: {text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn answers_under_a_cap_say_what_is_left_as_openai_does() {
    // 20/s: 50 ms a request, a burst of three.
    let server = start(MockConfig {
        max_rps: 20,
        ..MockConfig::default()
    })
    .await;
    let mut served = Vec::new();
    let refused = loop {
        let resp = chat(&server, user("x")).await;
        let headers = resp.headers();
        assert_eq!(headers["x-ratelimit-limit-requests"], "3");
        let remaining: u64 = headers["x-ratelimit-remaining-requests"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let reset = header_ms(headers, "x-ratelimit-reset-requests");
        if resp.status() == 429 {
            break (remaining, reset);
        }
        assert_eq!(resp.status(), 200);
        served.push((remaining, reset));
        assert!(served.len() < 20, "never refused: {served:?}");
    };
    // The first answer spent one of three, which comes back within 50 ms.
    let (first_left, first_reset) = served[0];
    assert_eq!(first_left, 2, "{served:?}");
    assert!((1..=50).contains(&first_reset), "{served:?}");
    // The answer before the refusal said nothing was left (the next request
    // came later, so the bucket could only have grown), and when it would
    // be whole again: over the tolerance, within one more interval.
    let (last_left, last_reset) = *served.last().unwrap();
    assert_eq!(last_left, 0, "{served:?}");
    assert!((101..=150).contains(&last_reset), "{served:?}");
    assert_eq!(refused.0, 0);
    assert!(refused.1 > 100, "{refused:?}");
    // Without a cap there is no bucket to report.
    server.set_config(MockConfig::default());
    let resp = chat(&server, user("x")).await;
    assert!(
        resp.headers()
            .get("x-ratelimit-remaining-requests")
            .is_none()
    );
}
