//! Alert rules: the YAML file that declares them and their evaluation over
//! the scraped [`History`].
//!
//! A metric rule reads one metric over a window, per group of series, and
//! compares the result with a threshold:
//!
//! ```yaml
//! - name: ProviderThrottled
//!   severity: warning
//!   summary: "{{labels.provider}}: {{value}} of calls got 429 over 5 minutes"
//!   expr:
//!     metric: gauntlet_provider_requests_total
//!     match: {outcome: rate_limited}     # `!x` differs from x, `a|b` is either
//!     over: increase                     # last|avg|max|min|increase|rate|delta
//!     window: 5m
//!     by: [provider]                     # one alert per provider
//!     divide_by: {metric: gauntlet_provider_requests_total, over: increase, window: 5m}
//!   op: ">"
//!   threshold: 0.2
//!   and:                                 # more conditions, each per group
//!     - {metric: gauntlet_provider_requests_total, over: increase, window: 5m, by: [provider], op: ">=", threshold: 20}
//!   for: 2m                              # held this long before it fires
//!   cooldown: 10m                        # not again this soon after resolving
//!   labels: {team: platform}
//! ```
//!
//! `quantile: 0.95` reads a histogram (`metric` is its base name). A quality
//! rule instead compares each newly completed run of a suite with the run
//! before it: `quality: {drop_points: 10, significant: true}`.

use std::{
    collections::{BTreeMap, HashSet},
    fmt,
    time::{Duration, Instant},
};

use serde::{Deserialize, Deserializer};

use crate::history::{self, History, Over};

/// The rules shipped with Gauntlet: `deploy/monitor/rules.yml`.
pub const DEFAULT_RULES: &str = include_str!("../../../deploy/monitor/rules.yml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Gt => value > threshold,
            Self::Ge => value >= threshold,
            Self::Lt => value < threshold,
            Self::Le => value <= threshold,
            Self::Eq => value == threshold,
            Self::Ne => value != threshold,
        }
    }
}

/// How the series of one group become one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    #[default]
    Sum,
    Max,
    Min,
    Avg,
    Count,
}

fn default_over() -> Over {
    Over::Last
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}

/// One metric read over a window, per group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expr {
    pub metric: String,
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    #[serde(default = "default_over")]
    pub over: Over,
    /// Reads histogram `metric` (its `_bucket` series): the quantile of
    /// what was observed in the window.
    #[serde(default)]
    pub quantile: Option<f64>,
    #[serde(default = "default_window", deserialize_with = "duration")]
    pub window: Duration,
    /// Labels that make a group; none: one group of every series.
    #[serde(default)]
    pub by: Vec<String>,
    #[serde(default)]
    pub combine: Combine,
    /// The value is divided by this one's (of the same group; `by`
    /// defaults to this expression's).
    #[serde(default)]
    pub divide_by: Option<Box<Expr>>,
}

/// A further condition of a rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(flatten)]
    pub expr: Expr,
    pub op: Op,
    pub threshold: f64,
}

/// What a quality rule compares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityRule {
    /// Fires when a provider's pass rate on a suite falls by more than this
    /// many points from the suite's previous completed run.
    pub drop_points: f64,
    /// Only when analytics finds the drop significant (McNemar, Holm).
    #[serde(default = "yes")]
    pub significant: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    #[serde(default)]
    pub severity: Severity,
    /// `{{value}}`, `{{threshold}}` and `{{labels.NAME}}` are filled in.
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub expr: Option<Expr>,
    #[serde(default)]
    pub op: Option<Op>,
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default, rename = "and")]
    pub conditions: Vec<Condition>,
    #[serde(default, rename = "for", deserialize_with = "duration")]
    pub for_: Duration,
    #[serde(default, deserialize_with = "duration")]
    pub cooldown: Duration,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub quality: Option<QualityRule>,
}

/// A rule's verdict on one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The group's labels (with the rule's own): the alert's identity.
    pub labels: BTreeMap<String, String>,
    /// Labels that describe this evaluation, not the alert (the runs a
    /// quality rule compared).
    pub annotations: BTreeMap<String, String>,
    pub value: f64,
    pub holds: bool,
}

impl Instance {
    /// The rule and the labels: what identifies one alert across polls.
    pub fn fingerprint(&self, rule: &str) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{rule}{{{}}}", labels.join(","))
    }
}

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(String);

/// Reads and checks a rules file; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Rule>, RulesError> {
    let file: RulesFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        RulesError(format!("{origin}{at}: {e}"))
    })?;
    let mut names = HashSet::new();
    for (i, rule) in file.rules.iter().enumerate() {
        let at = format!("{origin}: rules[{i}] ({})", rule.name);
        if rule.name.trim().is_empty() {
            return Err(RulesError(format!("{origin}: rules[{i}].name is empty")));
        }
        if !names.insert((rule.name.clone(), rule.severity)) {
            return Err(RulesError(format!(
                "{at}: a rule of this name and severity comes twice"
            )));
        }
        match (&rule.expr, &rule.quality) {
            (Some(expr), None) => {
                if rule.op.is_none() || rule.threshold.is_none() {
                    return Err(RulesError(format!(
                        "{at}: a metric rule needs op and threshold"
                    )));
                }
                check_expr(expr, &format!("{at}.expr"))?;
                for (j, c) in rule.conditions.iter().enumerate() {
                    check_expr(&c.expr, &format!("{at}.and[{j}]"))?;
                }
            }
            (None, Some(q)) => {
                if !(q.drop_points > 0.0 && q.drop_points <= 100.0) {
                    return Err(RulesError(format!(
                        "{at}.quality.drop_points: {} is not in (0, 100]",
                        q.drop_points
                    )));
                }
            }
            _ => {
                return Err(RulesError(format!(
                    "{at}: give either expr (a metric rule) or quality, not both or neither"
                )));
            }
        }
    }
    Ok(file.rules)
}

fn check_expr(expr: &Expr, at: &str) -> Result<(), RulesError> {
    if expr.metric.trim().is_empty() {
        return Err(RulesError(format!("{at}.metric is empty")));
    }
    if let Some(q) = expr.quantile
        && !(0.0..=1.0).contains(&q)
    {
        return Err(RulesError(format!("{at}.quantile: {q} is not in [0, 1]")));
    }
    if expr.window.is_zero() {
        return Err(RulesError(format!("{at}.window: must be more than 0")));
    }
    if let Some(d) = &expr.divide_by {
        check_expr(d, &format!("{at}.divide_by"))?;
    }
    Ok(())
}

/// `500ms`, `30s`, `5m`, `1h`, `1d`, or a number of seconds.
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(f64),
        Text(String),
    }
    let parse = |text: &str| -> Option<Duration> {
        let text = text.trim();
        let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (n, unit) = text.split_at(split);
        let n: f64 = n.parse().ok()?;
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            "d" => n * 86400.0,
            _ => return None,
        };
        Duration::try_from_secs_f64(secs).ok()
    };
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom),
        Raw::Text(t) => parse(&t).ok_or_else(|| {
            serde::de::Error::custom(format!("`{t}` is not a duration (500ms, 30s, 5m, 1h, 1d)"))
        }),
    }
}

/// Every metric name the rules read (histograms by their base name).
pub fn metric_names<'a>(rules: impl IntoIterator<Item = &'a Rule>) -> HashSet<String> {
    fn add(expr: &Expr, names: &mut HashSet<String>) {
        names.insert(expr.metric.clone());
        if let Some(d) = &expr.divide_by {
            add(d, names);
        }
    }
    let mut names = HashSet::new();
    for rule in rules {
        if let Some(e) = &rule.expr {
            add(e, &mut names);
        }
        for c in &rule.conditions {
            add(&c.expr, &mut names);
        }
    }
    names
}

type Groups = BTreeMap<BTreeMap<String, String>, f64>;

fn project(labels: &BTreeMap<String, String>, by: &[String]) -> BTreeMap<String, String> {
    by.iter()
        .map(|k| (k.clone(), labels.get(k).cloned().unwrap_or_default()))
        .collect()
}

/// `expr`'s value per group at `now`; groups without data are absent.
pub fn evaluate(expr: &Expr, history: &History, now: Instant) -> Groups {
    let mut values: BTreeMap<BTreeMap<String, String>, Vec<f64>> = BTreeMap::new();
    if let Some(q) = expr.quantile {
        // Per group and bound: the observations of the window.
        let mut buckets: BTreeMap<BTreeMap<String, String>, BTreeMap<String, f64>> =
            BTreeMap::new();
        let name = format!("{}_bucket", expr.metric);
        for (key, points) in history.select(&name, &expr.matchers, expr.window, now) {
            let Some(le) = key.labels.get("le") else {
                continue;
            };
            let Some(seen) = Over::Increase.apply(&points) else {
                continue;
            };
            *buckets
                .entry(project(&key.labels, &expr.by))
                .or_default()
                .entry(le.clone())
                .or_default() += seen;
        }
        let mut out = Groups::new();
        for (group, by_le) in buckets {
            let mut b: Vec<(f64, f64)> = by_le
                .into_iter()
                .filter_map(|(le, n)| {
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().ok()?
                    };
                    Some((bound, n))
                })
                .collect();
            if let Some(v) = history::quantile(q, &mut b) {
                out.insert(group, v);
            }
        }
        return divide(expr, out, history, now);
    }
    for (key, points) in history.select(&expr.metric, &expr.matchers, expr.window, now) {
        if let Some(v) = expr.over.apply(&points) {
            values
                .entry(project(&key.labels, &expr.by))
                .or_default()
                .push(v);
        }
    }
    let combined = values
        .into_iter()
        .map(|(group, vs)| {
            let v = match expr.combine {
                Combine::Sum => vs.iter().sum(),
                Combine::Max => vs.iter().copied().fold(f64::MIN, f64::max),
                Combine::Min => vs.iter().copied().fold(f64::MAX, f64::min),
                Combine::Avg => vs.iter().sum::<f64>() / vs.len() as f64,
                Combine::Count => vs.len() as f64,
            };
            (group, v)
        })
        .collect();
    divide(expr, combined, history, now)
}

fn divide(expr: &Expr, groups: Groups, history: &History, now: Instant) -> Groups {
    let Some(d) = &expr.divide_by else {
        return groups;
    };
    let mut d = (**d).clone();
    if d.by.is_empty() {
        d.by = expr.by.clone();
    }
    let denominators = evaluate(&d, history, now);
    groups
        .into_iter()
        .filter_map(|(group, v)| {
            let denominator = *denominators.get(&project(&group, &d.by))?;
            (denominator != 0.0).then(|| (group, v / denominator))
        })
        .collect()
}

impl Rule {
    /// The rule's verdict on every group it has data for (metric rules).
    pub fn instances(&self, history: &History, now: Instant) -> Vec<Instance> {
        let (Some(expr), Some(op), Some(threshold)) = (&self.expr, self.op, self.threshold) else {
            return Vec::new();
        };
        let conditions: Vec<(&Condition, Groups)> = self
            .conditions
            .iter()
            .map(|c| (c, evaluate(&c.expr, history, now)))
            .collect();
        evaluate(expr, history, now)
            .into_iter()
            .map(|(group, value)| {
                let holds = op.holds(value, threshold)
                    && conditions.iter().all(|(c, values)| {
                        values
                            .get(&project(&group, &c.expr.by))
                            .is_some_and(|v| c.op.holds(*v, c.threshold))
                    });
                let mut labels = group;
                labels.extend(self.labels.clone());
                Instance {
                    labels,
                    annotations: BTreeMap::new(),
                    value,
                    holds,
                }
            })
            .collect()
    }

    pub fn threshold_value(&self) -> f64 {
        match (&self.quality, self.threshold) {
            (Some(q), _) => q.drop_points,
            (None, t) => t.unwrap_or(0.0),
        }
    }

    /// The summary with the instance's figures.
    pub fn summary_of(&self, instance: &Instance) -> String {
        let mut text = if self.summary.is_empty() {
            format!("{} is {{{{value}}}}", self.name)
        } else {
            self.summary.clone()
        };
        text = text
            .replace("{{value}}", &Figure(instance.value).to_string())
            .replace("{{threshold}}", &Figure(self.threshold_value()).to_string());
        for (k, v) in instance.labels.iter().chain(&instance.annotations) {
            text = text.replace(&format!("{{{{labels.{k}}}}}"), v);
        }
        text
    }
}

/// A figure for people: integers as such, others with up to 3 decimals.
struct Figure(f64);

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            write!(f, "{}", self.0 as i64)
        } else {
            let text = format!("{:.3}", self.0);
            f.write_str(text.trim_end_matches('0').trim_end_matches('.'))
        }
    }
}

#[cfg(test)]
mod tests {
    use gauntlet_telemetry::metrics::parse as parse_text;

    use super::*;

    #[test]
    fn the_shipped_rules_parse_and_cover_what_the_issue_asks() {
        let rules = parse(DEFAULT_RULES, "deploy/monitor/rules.yml").unwrap();
        let names: HashSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        for name in [
            "CpuHigh",
            "MemoryHigh",
            "GrpcLatencyHigh",
            "GrpcErrorRateHigh",
            "TaskQueueBacklog",
            "TaskQueueGrowing",
            "NoWorkers",
            "DeadLetters",
            "ProviderThrottled",
            "ProviderErrors",
            "PassRateDrop",
        ] {
            assert!(names.contains(name), "{name} missing");
        }
    }

    #[test]
    fn errors_name_the_file_line_and_rule() {
        let e = parse("rules:\n  - name: X\n    op: '>'\n", "r.yml").unwrap_err();
        assert!(e.to_string().contains("r.yml: rules[0] (X)"), "{e}");
        let e = parse("rules:\n  - name: X\n    bogus: 1\n", "r.yml").unwrap_err();
        assert!(e.to_string().starts_with("r.yml:3:"), "{e}");
        let e = parse(
            "rules:\n  - name: X\n    expr: {metric: m, window: 5 minutes}\n    op: '>'\n    threshold: 1\n",
            "r.yml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
    }

    fn history(scrapes: &[&str]) -> (History, Instant) {
        let mut h = History::new(
            Duration::from_secs(3600),
            ["q", "calls", "lat"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
        let start = Instant::now();
        for (i, text) in scrapes.iter().enumerate() {
            h.ingest(
                "t",
                start + Duration::from_secs(i as u64 * 10),
                parse_text(text),
            );
        }
        (
            h,
            start + Duration::from_secs((scrapes.len() as u64 - 1) * 10),
        )
    }

    #[test]
    fn a_ratio_rule_is_evaluated_per_group_with_its_conditions() {
        let (h, now) = history(&[
            "calls{p=\"a\",o=\"ok\"} 0\ncalls{p=\"a\",o=\"429\"} 0\ncalls{p=\"b\",o=\"ok\"} 0\ncalls{p=\"b\",o=\"429\"} 0\n",
            "calls{p=\"a\",o=\"ok\"} 10\ncalls{p=\"a\",o=\"429\"} 30\ncalls{p=\"b\",o=\"ok\"} 40\ncalls{p=\"b\",o=\"429\"} 0\n",
        ]);
        let rule = &parse(
            "rules:\n- name: Throttled\n  expr:\n    metric: calls\n    match: {o: '429'}\n    over: increase\n    window: 1m\n    by: [p]\n    divide_by: {metric: calls, over: increase, window: 1m}\n  op: '>'\n  threshold: 0.2\n  and:\n    - {metric: calls, over: increase, window: 1m, by: [p], op: '>=', threshold: 20}\n  summary: '{{labels.p}} got {{value}}'\n",
            "t",
        )
        .unwrap()[0];
        let instances = rule.instances(&h, now);
        assert_eq!(instances.len(), 2, "{instances:?}");
        let a = instances.iter().find(|i| i.labels["p"] == "a").unwrap();
        assert_eq!((a.value, a.holds), (0.75, true));
        assert_eq!(rule.summary_of(a), "a got 0.75");
        let b = instances.iter().find(|i| i.labels["p"] == "b").unwrap();
        assert_eq!((b.value, b.holds), (0.0, false));
    }

    #[test]
    fn a_quantile_rule_reads_the_window_of_a_histogram() {
        let (h, now) = history(&[
            "lat_bucket{le=\"0.1\"} 100\nlat_bucket{le=\"1\"} 100\nlat_bucket{le=\"+Inf\"} 100\n",
            // 20 more, 10 of them over 0.1 s and under 1 s.
            "lat_bucket{le=\"0.1\"} 110\nlat_bucket{le=\"1\"} 120\nlat_bucket{le=\"+Inf\"} 120\n",
        ]);
        let expr: Expr =
            serde_yaml_ng::from_str("{metric: lat, quantile: 0.95, window: 1m}").unwrap();
        let groups = evaluate(&expr, &h, now);
        let p95 = groups[&BTreeMap::new()];
        assert!((p95 - 0.91).abs() < 1e-9, "{p95}");
    }
}
