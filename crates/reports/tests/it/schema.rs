//! `docs/report-json.md` names every field the JSON report writes, and no
//! field it does not.

use std::collections::BTreeSet;

use gauntlet_proto::v1;
use gauntlet_reports::{ReportData, render};
use serde_json::Value;

/// The backticked names in the first column of the table under `heading`.
fn documented(doc: &str, heading: &str) -> BTreeSet<String> {
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("no section `{heading}`"));
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let first = l.split('|').nth(1).unwrap();
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_documented_fields_are_the_written_fields() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/report-json.md"
    ))
    .unwrap();
    let data = ReportData {
        summary: v1::RunSummary::default(),
        results: vec![v1::Result::default()],
    };
    let json: Value = serde_json::from_str(&render::json(&data)).unwrap();
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(keys(&json), documented(&doc, "The document"));
    assert_eq!(keys(&json["results"][0]), documented(&doc, "A result"));
    assert_eq!(json["schema"], render::SCHEMA);
    assert!(doc.starts_with(&format!("# The JSON report, `{}`", render::SCHEMA)));
}
