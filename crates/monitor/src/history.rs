//! The samples the monitor has scraped, per series, over the longest window
//! a rule looks at, and the window functions rules apply to them.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use gauntlet_telemetry::metrics::Sample;

/// One series: its name and labels (the scrape target's among them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// Samples by series, each kept for `keep`.
#[derive(Debug)]
pub struct History {
    keep: Duration,
    /// Only these names are kept (what some rule or finding reads).
    wanted: HashSet<String>,
    series: HashMap<SeriesKey, VecDeque<(Instant, f64)>>,
    /// When each target was last scraped.
    scraped: HashMap<String, Instant>,
}

impl History {
    pub fn new(keep: Duration, wanted: HashSet<String>) -> Self {
        Self {
            keep,
            wanted,
            series: HashMap::new(),
            scraped: HashMap::new(),
        }
    }

    /// Whether `name` (or the histogram it is a part of) is kept.
    fn wants(&self, name: &str) -> bool {
        self.wanted.contains(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|b| self.wanted.contains(b))
            })
    }

    /// Adds one scrape of `target` taken at `at`.
    ///
    /// A counter first seen in this scrape although the target was scraped
    /// before was created in between: it is taken to have been 0 at the
    /// previous scrape, so what it counted since is not lost to `increase`
    /// (a run that starts and ends between two scrapes still counts).
    pub fn ingest(&mut self, target: &str, at: Instant, samples: Vec<Sample>) {
        let before = self.scraped.insert(target.to_owned(), at);
        for sample in samples {
            if !self.wants(&sample.name) || sample.value.is_nan() {
                continue;
            }
            let counter = ["_total", "_count", "_sum", "_bucket"]
                .iter()
                .any(|s| sample.name.ends_with(s));
            let mut labels = sample.labels;
            labels.insert("target".into(), target.into());
            let key = SeriesKey {
                name: sample.name,
                labels,
            };
            let points = self.series.entry(key).or_default();
            if points.is_empty()
                && counter
                && let Some(before) = before
            {
                points.push_back((before, 0.0));
            }
            points.push_back((at, sample.value));
        }
    }

    /// Drops what is older than `keep` and the series left empty.
    pub fn prune(&mut self, now: Instant) {
        let keep = self.keep;
        self.series.retain(|_, points| {
            while points
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > keep)
            {
                points.pop_front();
            }
            !points.is_empty()
        });
    }

    /// The series named `name` whose labels include `matchers` (a value
    /// starting `!` must differ), with their points in the last `window`.
    pub fn select<'a>(
        &'a self,
        name: &'a str,
        matchers: &'a BTreeMap<String, String>,
        window: Duration,
        now: Instant,
    ) -> impl Iterator<Item = (&'a SeriesKey, Vec<(Instant, f64)>)> + 'a {
        self.series.iter().filter_map(move |(key, points)| {
            if key.name != name || !matches(&key.labels, matchers) {
                return None;
            }
            let recent: Vec<(Instant, f64)> = points
                .iter()
                .filter(|(at, _)| now.saturating_duration_since(*at) <= window)
                .copied()
                .collect();
            (!recent.is_empty()).then_some((key, recent))
        })
    }
}

/// Whether `labels` meet `matchers`: `a` equal, `a|b` either, `!a` and
/// `!a|b` neither (a missing label is the empty value).
pub fn matches(labels: &BTreeMap<String, String>, matchers: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|(name, want)| {
        let have = labels.get(name).map_or("", String::as_str);
        match want.strip_prefix('!') {
            Some(not) => !not.split('|').any(|v| v == have),
            None => want.split('|').any(|v| v == have),
        }
    })
}

/// How a window of one series becomes one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Over {
    /// The newest value.
    Last,
    Avg,
    Max,
    Min,
    /// How much a counter grew (a reset counts from 0).
    Increase,
    /// [`Over::Increase`] per second across the window's points.
    Rate,
    /// Newest minus oldest (a gauge's change).
    Delta,
}

impl Over {
    /// The value of `points` (oldest first); `None` when it takes two
    /// points and there is one.
    pub fn apply(self, points: &[(Instant, f64)]) -> Option<f64> {
        let values = points.iter().map(|(_, v)| *v);
        match self {
            Self::Last => points.last().map(|(_, v)| *v),
            Self::Avg => Some(values.sum::<f64>() / points.len().max(1) as f64),
            Self::Max => values.reduce(f64::max),
            Self::Min => values.reduce(f64::min),
            Self::Increase => (points.len() >= 2).then(|| increase(points)),
            Self::Rate => {
                let span = points
                    .last()?
                    .0
                    .saturating_duration_since(points.first()?.0);
                (points.len() >= 2 && !span.is_zero())
                    .then(|| increase(points) / span.as_secs_f64())
            }
            Self::Delta => (points.len() >= 2).then(|| points[points.len() - 1].1 - points[0].1),
        }
    }
}

/// A counter's growth over `points`: each drop is a restart from 0.
fn increase(points: &[(Instant, f64)]) -> f64 {
    points
        .windows(2)
        .map(|w| {
            let (before, after) = (w[0].1, w[1].1);
            if after >= before {
                after - before
            } else {
                after
            }
        })
        .sum()
}

/// The `q` quantile of a histogram from `(upper bound, cumulative count)`
/// buckets, interpolated within the bucket it falls in, as Prometheus'
/// `histogram_quantile` does; `None` without observations.
pub fn quantile(q: f64, buckets: &mut [(f64, f64)]) -> Option<f64> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for &(bound, count) in buckets.iter() {
        if count >= rank {
            if bound.is_infinite() {
                // Past the last finite bound: its bound is the best guess.
                return Some(lower);
            }
            let in_bucket = count - below;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(lower + (bound - lower) * (rank - below) / in_bucket);
        }
        lower = bound;
        below = count;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(values: &[f64]) -> Vec<(Instant, f64)> {
        let start = Instant::now();
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (start + Duration::from_secs(i as u64), *v))
            .collect()
    }

    #[test]
    fn window_functions() {
        let p = points(&[5.0, 8.0, 2.0, 6.0]);
        assert_eq!(Over::Last.apply(&p), Some(6.0));
        assert_eq!(Over::Max.apply(&p), Some(8.0));
        assert_eq!(Over::Min.apply(&p), Some(2.0));
        assert_eq!(Over::Avg.apply(&p), Some(5.25));
        // 5→8 is 3, the drop to 2 is a restart (2), 2→6 is 4.
        assert_eq!(Over::Increase.apply(&p), Some(9.0));
        assert_eq!(Over::Rate.apply(&p), Some(3.0));
        assert_eq!(Over::Delta.apply(&p), Some(1.0));
        assert_eq!(Over::Rate.apply(&points(&[1.0])), None);
    }

    #[test]
    fn a_counter_born_between_two_scrapes_counts_from_zero() {
        let wanted = ["calls_total", "depth"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut h = History::new(Duration::from_secs(60), wanted);
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        h.ingest("w", at(0), gauntlet_telemetry::metrics::parse("depth 1\n"));
        // Born and done between the scrapes: 12 calls, and a new gauge.
        h.ingest(
            "w",
            at(2),
            gauntlet_telemetry::metrics::parse("calls_total 12\ndepth 1\nother_depth 5\n"),
        );
        let none = BTreeMap::new();
        let (_, calls) = h
            .select("calls_total", &none, Duration::from_secs(60), at(2))
            .next()
            .unwrap();
        assert_eq!(Over::Increase.apply(&calls), Some(12.0));
        // On a target's first scrape nothing is assumed.
        h.ingest(
            "v",
            at(2),
            gauntlet_telemetry::metrics::parse("calls_total 7\n"),
        );
        let v: BTreeMap<String, String> = [("target".to_string(), "v".to_string())].into();
        let (_, calls) = h
            .select("calls_total", &v, Duration::from_secs(60), at(2))
            .next()
            .unwrap();
        assert_eq!(Over::Increase.apply(&calls), None);
    }

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        // 100 observations: 50 under 0.1, 40 more under 1, 10 under 5.
        let mut b = vec![
            (0.1, 50.0),
            (1.0, 90.0),
            (5.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(0.5, &mut b).unwrap() - 0.1).abs() < 1e-9);
        assert!((quantile(0.95, &mut b).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(quantile(0.5, &mut [(1.0, 0.0)]), None);
    }

    #[test]
    fn matchers_take_equal_and_not_equal() {
        let labels: BTreeMap<String, String> =
            [("grpc_code".to_string(), "Internal".to_string())].into();
        let want = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(matches(&labels, &want("grpc_code", "!OK")));
        assert!(!matches(&labels, &want("grpc_code", "OK")));
        assert!(matches(&labels, &want("missing", "!x")));
        assert!(matches(&labels, &want("grpc_code", "Unknown|Internal")));
        assert!(!matches(&labels, &want("grpc_code", "!Unknown|Internal")));
    }
}
