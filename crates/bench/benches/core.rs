//! The per-task CPU work of a worker: parsing a suite, rendering a prompt,
//! grading an output. `cargo bench -p gauntlet-bench --bench core`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gauntlet_core::{
    PromptRenderer,
    grading::{ProviderOutput, grade},
    parse::{SuiteFormat, parse_suite},
};

fn suite_yaml(tests: usize) -> String {
    let mut s = String::from(
        "prompts:\n  - 'Translate to {{ language }}: {{ text }}'\n  - 'Say {{ text | upper }} in {{ language }}'\nproviders: [echo]\ntests:\n",
    );
    for i in 0..tests {
        s.push_str(&format!(
            "  - vars: {{ language: French, text: 'hello number {i}' }}\n    assert:\n      - {{ type: icontains, value: 'number {i}' }}\n      - {{ type: regex, value: '\\d+' }}\n      - {{ type: not-contains, value: ERROR }}\n"
        ));
    }
    s
}

fn benches(c: &mut Criterion) {
    let text = suite_yaml(1000);
    let mut g = c.benchmark_group("suite");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("parse_1000_tests", |b| {
        b.iter(|| parse_suite(black_box(&text), SuiteFormat::Yaml).unwrap())
    });
    g.finish();

    let suite = parse_suite(&text, SuiteFormat::Yaml).unwrap();
    let renderer = PromptRenderer::new(&suite).unwrap();
    let mut g = c.benchmark_group("task");
    g.throughput(Throughput::Elements(1));
    g.bench_function("render", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % 1000;
            renderer.render(i % 2, &suite.tests[i].vars).unwrap()
        })
    });
    let output = ProviderOutput {
        text: "ECHO: Translate to French: hello number 500".into(),
        latency_ms: 50,
        cost_usd: 0.0,
        finish_reason: Some("stop".into()),
    };
    g.bench_function("grade_3_assertions", |b| {
        b.iter(|| grade(black_box(&suite.tests[500]), black_box(&output)))
    });
    g.finish();
}

criterion_group!(core, benches);
criterion_main!(core);
