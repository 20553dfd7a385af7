//! The JUnit report. CI systems want one `<testsuite>` per provider ×
//! prompt with its counts in the opening tag, while results arrive in task
//! order, interleaved across suites; so each suite's testcases are set
//! aside, its counts kept, and the document is written by `finish`. The
//! counts are those of the testcases written, so the tags always agree
//! with the body even when the summary was read at another moment.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{self, Write},
};

use gauntlet_proto::v1;

use super::{ResultSink, spill::Spill, xml_text};

#[derive(Default)]
struct Counts {
    tests: u64,
    failures: u64,
    errors: u64,
    latency_ms: u64,
}

impl Counts {
    fn add(&mut self, r: &v1::Result) {
        self.tests += 1;
        if r.status == v1::ResultStatus::Fail as i32 {
            self.failures += 1;
        } else if r.status == v1::ResultStatus::Error as i32 {
            self.errors += 1;
        }
        self.latency_ms += u64::from(r.latency_ms);
    }

    fn secs(&self) -> f64 {
        self.latency_ms as f64 / 1000.0
    }
}

struct Suite {
    /// The suite's group in the spill.
    group: usize,
    /// `provider / prompt` of its first result.
    name: String,
    counts: Counts,
}

pub(super) struct Junit<W> {
    w: W,
    name: String,
    /// By `(provider_index, prompt_index)`, the order suites are written in.
    suites: BTreeMap<(u32, u32), Suite>,
    all: Counts,
    cases: Spill,
    case: String,
}

impl<W: Write> Junit<W> {
    pub(super) fn new(w: W, budget: usize) -> Self {
        Self {
            w,
            name: String::new(),
            suites: BTreeMap::new(),
            all: Counts::default(),
            cases: Spill::new(budget),
            case: String::new(),
        }
    }
}

impl<W: Write> ResultSink for Junit<W> {
    fn begin(&mut self, s: &v1::RunSummary) -> io::Result<()> {
        self.name = if s.description.is_empty() {
            "gauntlet".to_string()
        } else {
            s.description.clone()
        };
        Ok(())
    }

    fn result(&mut self, r: &v1::Result) -> io::Result<()> {
        let next = self.suites.len();
        let suite = self
            .suites
            .entry((r.provider_index, r.prompt_index))
            .or_insert_with(|| Suite {
                group: next,
                name: format!("{} / {}", r.provider_id, r.prompt_label),
                counts: Counts::default(),
            });
        suite.counts.add(r);
        self.all.add(r);

        let out = &mut self.case;
        out.clear();
        let mut case = if r.test_description.is_empty() {
            format!("test {}", r.test_index)
        } else {
            r.test_description.clone()
        };
        if r.repeat_index > 0 {
            let _ = write!(case, " (repeat {})", r.repeat_index);
        }
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
            xml_text(&case),
            xml_text(&r.provider_id),
            f64::from(r.latency_ms) / 1000.0
        );
        match v1::ResultStatus::try_from(r.status) {
            Ok(v1::ResultStatus::Fail) => {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                    xml_text(&r.reason),
                    xml_text(&r.output)
                );
            }
            Ok(v1::ResultStatus::Error) => {
                let message = if r.error.is_empty() {
                    &r.reason
                } else {
                    &r.error
                };
                let _ = writeln!(
                    out,
                    ">\n      <error message=\"{}\"/>\n    </testcase>",
                    xml_text(message)
                );
            }
            _ => out.push_str("/>\n"),
        }
        self.cases.append(suite.group, self.case.as_bytes())
    }

    fn finish(&mut self) -> io::Result<()> {
        let out = &mut self.w;
        out.write_all(b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")?;
        writeln!(
            out,
            "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">",
            xml_text(&self.name),
            self.all.tests,
            self.all.failures,
            self.all.errors,
            self.all.secs()
        )?;
        for suite in self.suites.values() {
            writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"0\" time=\"{:.3}\">",
                xml_text(&suite.name),
                suite.counts.tests,
                suite.counts.failures,
                suite.counts.errors,
                suite.counts.secs()
            )?;
            io::copy(&mut self.cases.reader(suite.group), out)?;
            out.write_all(b"  </testsuite>\n")?;
        }
        out.write_all(b"</testsuites>\n")?;
        out.flush()
    }
}
