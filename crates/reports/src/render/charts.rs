//! The HTML report's charts, drawn as inline SVG by plotters' SVG backend:
//! bars with 95 % interval whiskers (pass rate by provider × prompt, per
//! assertion type and metric), the latency histogram, and cost against pass
//! rate. Every chart is a complete `<svg>` element with no external
//! reference (plotters' text is `<text>` in a generic font family), so the
//! page stays self-contained.

use plotters::{
    coord::Shift,
    element::{Circle, ErrorBar, Rectangle, Text},
    prelude::*,
};

/// One bar: its label, its value and, when known, its interval.
pub(crate) struct Bar {
    pub label: String,
    pub value: f64,
    pub interval: Option<(f64, f64)>,
    /// Drawn in the lighter colour: the baseline beside its candidate.
    pub light: bool,
}

/// One point of a scatter chart.
pub(crate) struct Point {
    pub label: String,
    pub x: f64,
    pub y: f64,
}

const WIDTH: u32 = 640;
const HEIGHT: u32 = 320;
const LABEL_CHARS: usize = 36;
/// Bars drawn at most; the rest are named in the chart's caption.
pub(crate) const MAX_BARS: usize = 24;

const BAR: RGBColor = RGBColor(0x3b, 0x6e, 0xa8);
const LIGHT: RGBColor = RGBColor(0x9d, 0xb8, 0xd6);
const NEGATIVE: RGBColor = RGBColor(0xb3, 0x26, 0x1e);
const WHISKER: RGBColor = RGBColor(0x22, 0x22, 0x22);
const GRID: RGBColor = RGBColor(0xe2, 0xe2, 0xe2);
const POINT: RGBColor = RGBColor(0xb0, 0x3a, 0x2e);

fn short(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        label.to_owned()
    } else {
        let mut s: String = label.chars().take(LABEL_CHARS - 1).collect();
        s.push('…');
        s
    }
}

/// Draws into a fresh SVG string; `None` if plotters fails (it never should
/// with the SVG backend, which only writes to the string).
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> Option<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).ok()?;
        draw(&root).ok()?;
        root.present().ok()?;
    }
    Some(out)
}

/// Horizontal bars over `bars` (at most [`MAX_BARS`]) with values from 0 to
/// 1 drawn as percentages, whiskers where a bar has an interval, the labels
/// on the left; the chart grows with the number of bars.
pub(crate) fn rates(bars: &[Bar], x_desc: &str) -> Option<String> {
    horizontal(bars, 0.0..1.0, x_desc, &|x| format!("{:.0}%", x * 100.0))
}

/// Horizontal bars from 0 to a value that may be negative (differences),
/// over a range symmetric about 0 that holds every bar and whisker.
pub(crate) fn diffs(bars: &[Bar], x_desc: &str) -> Option<String> {
    let reach = bars
        .iter()
        .flat_map(|b| {
            [
                b.value,
                b.interval.map_or(0.0, |i| i.0),
                b.interval.map_or(0.0, |i| i.1),
            ]
        })
        .map(f64::abs)
        .filter(|x| x.is_finite())
        .fold(0.0, f64::max);
    let reach = if reach > 0.0 { reach * 1.1 } else { 1.0 };
    horizontal(bars, -reach..reach, x_desc, &|x| format!("{x:+.2}"))
}

fn horizontal(
    bars: &[Bar],
    range: std::ops::Range<f64>,
    x_desc: &str,
    x_label: &dyn Fn(&f64) -> String,
) -> Option<String> {
    let (lo, hi) = (range.start, range.end);
    let bars = &bars[..bars.len().min(MAX_BARS)];
    // A segmented 0..=last has one segment per bar (plotters draws no label
    // on a range of one value, so one bar gets an empty slot below it).
    let last = bars.len().max(2) as i32 - 1;
    let height = 70 + 26 * (last as u32 + 1);
    svg((WIDTH, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(230)
            .build_cartesian_2d(lo..hi, (0..last).into_segmented())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(6)
            .y_labels(bars.len().max(1))
            .x_desc(x_desc)
            .x_label_formatter(x_label)
            // The first bar on top.
            .y_label_formatter(&|y| match y {
                SegmentValue::CenterOf(i) => bars
                    .get((last - *i) as usize)
                    .map(|b| short(&b.label))
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_style(("sans-serif", 12))
            .x_label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 12))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(bars.iter().enumerate().map(|(i, b)| {
                let i = last - i as i32;
                let mut r = Rectangle::new(
                    [
                        (0.0_f64.clamp(lo, hi), SegmentValue::Exact(i)),
                        (b.value.clamp(lo, hi), SegmentValue::Exact(i + 1)),
                    ],
                    match (b.value < 0.0, b.light) {
                        (true, _) => NEGATIVE,
                        (false, true) => LIGHT,
                        (false, false) => BAR,
                    }
                    .filled(),
                );
                r.set_margin(4, 4, 0, 0);
                r
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(bars.iter().enumerate().filter_map(|(i, b)| {
                let (low, high) = b.interval?;
                Some(ErrorBar::new_horizontal(
                    SegmentValue::CenterOf(last - i as i32),
                    low.clamp(lo, hi),
                    b.value.clamp(lo, hi),
                    high.clamp(lo, hi),
                    WHISKER.stroke_width(1),
                    8,
                ))
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Vertical bars of counts, one per labelled bucket, in order.
pub(crate) fn histogram(buckets: &[(String, u64)], x_desc: &str, y_desc: &str) -> Option<String> {
    let last = buckets.len().max(2) as i32 - 1;
    let y_max = buckets.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64 * 1.1;
    svg((WIDTH, HEIGHT), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d((0..last).into_segmented(), 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .y_labels(6)
            .x_labels(buckets.len().max(1))
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => buckets
                    .get(*i as usize)
                    .map(|b| b.0.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(buckets.iter().enumerate().map(|(i, b)| {
                let i = i as i32;
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), b.1 as f64),
                    ],
                    BAR.filled(),
                );
                r.set_margin(0, 0, 3, 3);
                r
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// One line of a time chart: a label and its points `(x, y, interval)`, x
/// in seconds since the epoch.
pub(crate) struct Series {
    pub label: String,
    pub points: Vec<TimePoint>,
}

/// `(x, y, interval)`.
pub(crate) type TimePoint = (f64, f64, Option<(f64, f64)>);

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x3b, 0x6e, 0xa8),
    RGBColor(0xb0, 0x3a, 0x2e),
    RGBColor(0x2e, 0x8b, 0x57),
    RGBColor(0x8e, 0x5b, 0xb0),
    RGBColor(0xc7, 0x7c, 0x0e),
    RGBColor(0x44, 0x44, 0x44),
];

/// Lines over time, one per series (at most six, in the palette's colours,
/// with a legend), whiskers where a point has an interval; y from 0 to
/// `y_max` (1 and percentages when `percent`), x labelled by `x_label`.
pub(crate) fn lines(
    series: &[Series],
    y_desc: &str,
    percent: bool,
    x_label: &dyn Fn(&f64) -> String,
) -> Option<String> {
    let series = &series[..series.len().min(PALETTE.len())];
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if x_min > x_max {
        return None;
    }
    // A single bucket still gets a width.
    let pad = ((x_max - x_min) * 0.05).max(3600.0);
    let y_max = if percent {
        1.05
    } else {
        let top = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        if top > 0.0 { top * 1.15 } else { 1.0 }
    };
    svg((WIDTH, HEIGHT), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x_min - pad..x_max + pad, 0.0..y_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(x_label)
            .y_label_formatter(&|y| {
                if percent {
                    format!("{:.0}%", y * 100.0)
                } else {
                    format!("{y:.4}")
                }
            })
            .y_desc(y_desc)
            .draw()
            .map_err(|e| e.to_string())?;
        for (s, colour) in series.iter().zip(PALETTE) {
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|p| (p.0, p.1)),
                    colour.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(short(&s.label))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 12, y + 4)], colour.filled())
                });
            chart
                .draw_series(
                    s.points
                        .iter()
                        .map(|p| Circle::new((p.0, p.1), 3, colour.filled())),
                )
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(s.points.iter().filter_map(|p| {
                    let (low, high) = p.2?;
                    Some(ErrorBar::new_vertical(
                        p.0,
                        low,
                        p.1,
                        high,
                        colour.stroke_width(1),
                        6,
                    ))
                }))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .label_font(("sans-serif", 11))
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Cost (x) against pass rate (y), one labelled point per provider × prompt.
pub(crate) fn scatter(points: &[Point], x_desc: &str) -> Option<String> {
    let x_max = points.iter().map(|p| p.x).fold(0.0, f64::max);
    // Room on the right for the last point's label.
    let x_max = if x_max > 0.0 { x_max * 1.6 } else { 1.0 };
    // Points at the same place get their labels one under the other.
    let mut seen: Vec<(f64, f64)> = Vec::new();
    let offsets: Vec<i32> = points
        .iter()
        .map(|p| {
            let n = seen.iter().filter(|&&q| q == (p.x, p.y)).count();
            seen.push((p.x, p.y));
            n as i32 * 13
        })
        .collect();
    svg((WIDTH, HEIGHT), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..1.05)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .x_labels(6)
            .y_labels(6)
            .x_desc(x_desc)
            .y_desc("pass rate")
            .y_label_formatter(&|y| format!("{:.0}%", y * 100.0))
            .x_label_formatter(&|x| format!("{x:.4}"))
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(points.iter().zip(&offsets).map(|(p, &dy)| {
                EmptyElement::at((p.x, p.y.clamp(0.0, 1.0)))
                    + Circle::new((0, 0), 5, POINT.filled())
                    + Text::new(short(&p.label), (8, dy - 4), ("sans-serif", 11).into_font())
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, value: f64) -> Bar {
        Bar {
            label: label.into(),
            value,
            interval: Some((value * 0.8, (value * 1.2).min(1.0))),
            light: false,
        }
    }

    #[test]
    fn a_bar_chart_is_one_svg_with_a_bar_and_a_label_per_item() {
        let svg = rates(
            &[bar("openai / p1", 0.5), bar("echo / p1", 0.9)],
            "pass rate",
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("openai / p1") && svg.contains("echo / p1"));
        assert!(!svg.contains("href"), "nothing external");
    }

    #[test]
    fn labels_are_escaped_and_shortened() {
        let svg = rates(&[bar("<script>alert(1)</script> and a long tail", 0.5)], "").unwrap();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
    }

    #[test]
    fn a_scatter_draws_every_point() {
        let points: Vec<Point> = (0..3)
            .map(|i| Point {
                label: format!("g{i}"),
                x: f64::from(i) * 0.01,
                y: 0.3 * f64::from(i),
            })
            .collect();
        let svg = scatter(&points, "cost $").unwrap();
        assert_eq!(svg.matches("<circle").count(), 3, "{svg}");
    }
}
