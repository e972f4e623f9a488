//! Per-minute charts as SVG with real axes, rendered on the server: traffic
//! ([`minutes_chart`]) and counts ([`count_chart`]: DNS queries, refused attempts).
//!
//! Received bytes grow up from the zero line, sent bytes grow down, on one scale, so
//! an upload and a download of the same size look the same size. Minutes without a
//! rollup row are gaps (nothing was seen), not interpolated. Axis times are UTC in the
//! markup; the script rewrites them to local time like every `<time>`.

use maud::{Markup, html};

use super::format;
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS};

/// One bar: start of the UTC minute (unix ms), bytes sent and received in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub minute: i64,
    pub up: i64,
    pub down: i64,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
/// The value labels sit inside the plot, over its left end: a phone-width chart has no
/// room for a column of them.
const LEFT: f64 = 4.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 22.0;

/// A "nice" tick step for values up to `max` with about two steps: 1, 2 or 5 times a
/// power of ten of a binary unit (B, KiB, MiB…), so labels read `500 KiB`, not `488 KiB`.
pub fn nice_step(max: i64) -> i64 {
    let max = max.max(1);
    let mut unit: i64 = 1;
    // Stops at 1024^6 at most: max < 2^63 = 8 · 1024^6.
    while max / unit >= 1024 {
        unit *= 1024;
    }
    let target = max / 2 + max % 2; // two steps cover max
    let mut step = unit;
    for mult in [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] {
        step = unit.saturating_mul(mult);
        if step >= target {
            break;
        }
    }
    step
}

/// The x-axis label interval, in minutes, for a window: about six labels.
fn label_every(minutes: i64) -> i64 {
    [
        1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 4320, 10_080,
    ]
    .into_iter()
    .find(|m| minutes / m <= 6)
    .unwrap_or(10_080)
}

/// The minutes labelled on the time axis of a window of `span_minutes` from `start`.
fn time_labels(start: i64, span_minutes: i64) -> Vec<i64> {
    let every = label_every(span_minutes);
    let first_label = (start / (every * MINUTE_MS) + 1) * every * MINUTE_MS;
    (0..)
        .map(|i| first_label + i * every * MINUTE_MS)
        .take_while(|ms| *ms < start + span_minutes * MINUTE_MS)
        .collect()
}

/// How an axis label shows its time: `hm` within a day, `dhm` (day of month and time)
/// over days, `md` (month-day) when labels are whole days apart. The script rewrites
/// each to local time by the same name (`data-fmt`).
fn time_format(span_minutes: i64) -> (&'static str, fn(i64) -> String) {
    if span_minutes <= 1440 {
        ("hm", format::hh_mm_utc)
    } else if label_every(span_minutes) < 1440 {
        ("dhm", format::dd_hh_mm_utc)
    } else {
        ("md", format::mm_dd_utc)
    }
}

/// A coordinate to one decimal: enough for a 720-unit viewBox, and keeps a day of
/// bars (1440 of them) from bloating the page with 15-digit floats.
fn r(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// An axis label: [`format::bytes`] without trailing zeros (`4 MiB`, `1.5 KiB`).
fn axis_label(text: &str) -> String {
    match text.split_once(' ') {
        Some((num, unit)) if num.contains('.') => {
            format!("{} {unit}", num.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => text.to_owned(),
    }
}

/// What the y axis of a traffic chart measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Bytes moved in each bar's bucket (`bytes per minute`).
    BytesPerBucket,
    /// The bucket's mean rate in bits per second: comparable across bar widths, and
    /// what an internet plan is sold in.
    BitsPerSecond,
}

/// Everything about a chart but its bars.
#[derive(Clone, Debug)]
pub struct Frame<'a> {
    pub since_ms: i64,
    pub until_ms: i64,
    /// Width of one bar: a minute or an hour.
    pub bucket_ms: i64,
    /// The SVG's accessible name.
    pub label: &'a str,
    /// `id` of the figure, for pages that link to it.
    pub id: Option<&'a str>,
    /// Drag-select on the chart navigates to the selected range (`from`, `to`).
    pub zoom: bool,
}

impl Frame<'_> {
    fn per(&self) -> &'static str {
        if self.bucket_ms >= HOUR_MS {
            "per hour"
        } else {
            "per minute"
        }
    }
}

/// The plot geometry of a frame: where a bucket's bar starts and how wide it is.
struct Plot {
    start: i64,
    bucket_ms: i64,
    buckets: i64,
    bar_w: f64,
}

impl Plot {
    fn new(f: &Frame) -> Plot {
        let bucket_ms = f.bucket_ms.max(MINUTE_MS);
        let start = f.since_ms.div_euclid(bucket_ms) * bucket_ms;
        let buckets = ((f.until_ms - start + bucket_ms - 1) / bucket_ms).max(1);
        Plot {
            start,
            bucket_ms,
            buckets,
            bar_w: (WIDTH - LEFT - RIGHT) / buckets as f64,
        }
    }

    fn x_of(&self, ms: i64) -> f64 {
        LEFT + (ms - self.start) as f64 / self.bucket_ms as f64 * self.bar_w
    }

    fn end(&self) -> i64 {
        self.start + self.buckets * self.bucket_ms
    }
}

/// The `<svg>` attributes the script reads for hover values and zooming: the plot's
/// left and right edge in viewBox units and the time range they stand for.
fn svg_open(f: &Frame, p: &Plot, body: Markup) -> Markup {
    html! {
        svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(f.label)
            data-x0=(LEFT) data-x1=(WIDTH - RIGHT) data-t0=(p.start) data-t1=(p.end())
            data-bucket=(p.bucket_ms) data-zoom=[f.zoom.then_some("1")] {
            (body)
        }
    }
}

/// The time axis: ticks and labels the script localises.
fn time_axis(p: &Plot, base: f64) -> Markup {
    let span_minutes = p.buckets * p.bucket_ms / MINUTE_MS;
    let (fmt, text_of) = time_format(span_minutes);
    html! {
        @for ms in time_labels(p.start, span_minutes) {
            @let x = r(p.x_of(ms));
            line.tick x1=(x) x2=(x) y1=(r(base)) y2=(r(base + 4.0)) {}
            text.xlabel x=(x) y=(HEIGHT - 5.0) text-anchor=(x_anchor(x, WIDTH - RIGHT)) data-ms=(ms) data-fmt=(fmt) {
                (text_of(ms))
            }
        }
    }
}

/// How a time label at `x` is anchored: centred on its tick, but kept inside the chart
/// near either edge (at phone width a label is a sixth of the chart).
pub(super) fn x_anchor(x: f64, right: f64) -> &'static str {
    const ROOM: f64 = 40.0;
    if x - LEFT < ROOM {
        "start"
    } else if right - x < ROOM {
        "end"
    } else {
        "middle"
    }
}

/// A value label for the gridline at `y`, inside the plot at its left end: hanging under
/// the line (`below`), or standing on it.
pub(super) fn y_label(y: f64, below: bool, text: &str) -> Markup {
    html! {
        @if below {
            text.ylabel x=(LEFT + 3.0) y=(r(y + 3.0)) dominant-baseline="hanging" { (text) }
        } @else {
            text.ylabel x=(LEFT + 3.0) y=(r(y - 3.0)) { (text) }
        }
    }
}

/// The hover read-out under the chart: the script fills it (`textContent`) from the
/// nearest bar's `data-t` and `data-tip`.
fn tip() -> Markup {
    html! { p.tip aria-live="polite" hidden {} }
}

/// The chart of `bars` over `[since_ms, until_ms)`: minute bars, bytes per minute.
pub fn minutes_chart(bars: &[Bar], since_ms: i64, until_ms: i64, label: &str) -> Markup {
    let frame = Frame {
        since_ms,
        until_ms,
        bucket_ms: MINUTE_MS,
        label,
        id: None,
        zoom: false,
    };
    traffic_chart(bars, &frame, Unit::BytesPerBucket, None)
}

/// A device's usual upload per UTC hour of day (bytes per minute, the detector's p95
/// baseline), drawn over the "sent" half of a traffic chart as a dashed step line.
pub type Baseline = [i64; 24];

/// Received bytes up from the zero line, sent bytes down, per `frame.bucket_ms` bucket
/// (`Bar::minute` is the bucket's start), with an optional baseline over the sent half.
///
/// Both halves share one scale; each gets as many tick steps as its own maximum needs
/// (at least one), so a small upload under a large download does not waste half the
/// height.
///
/// (Long: one SVG drawn top to bottom: axes, bars, lines, labels.)
pub fn traffic_chart(
    bars: &[Bar],
    frame: &Frame,
    unit: Unit,
    baseline: Option<&Baseline>,
) -> Markup {
    let p = Plot::new(frame);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let seconds = (p.bucket_ms / 1000).max(1);
    let per_unit = |v: i64| match unit {
        Unit::BytesPerBucket => v.max(0),
        // Rounded up: a minute of a few bytes is still traffic, not a missing bar.
        Unit::BitsPerSecond => (v.max(0).saturating_mul(8) + seconds - 1) / seconds,
    };
    let bars: Vec<Bar> = bars
        .iter()
        .filter(|b| b.minute >= p.start && b.minute < p.end())
        .map(|b| Bar {
            minute: b.minute,
            up: per_unit(b.up),
            down: per_unit(b.down),
        })
        .collect();
    // The baseline per bucket, in the chart's unit (bytes per minute × minutes per
    // bucket, or per second).
    let base_of = |ms: i64| -> Option<i64> {
        let b = baseline?;
        let hour = usize::try_from(ms.rem_euclid(DAY_MS) / HOUR_MS).ok()?;
        let per_minute = *b.get(hour)?;
        Some(match unit {
            Unit::BytesPerBucket => per_minute.saturating_mul(p.bucket_ms / MINUTE_MS),
            Unit::BitsPerSecond => per_minute.saturating_mul(8) / 60,
        })
    };
    let max_down = bars.iter().map(|b| b.down).max().unwrap_or(0);
    let max_base = (0..p.buckets)
        .filter_map(|i| base_of(p.start + i * p.bucket_ms))
        .max()
        .unwrap_or(0);
    let max_up = bars.iter().map(|b| b.up).max().unwrap_or(0).max(max_base);
    // About four steps in all.
    let half = max_down.saturating_add(max_up).div_euclid(2);
    let step = match unit {
        Unit::BytesPerBucket => nice_step(half),
        // 1, 2 or 5 times a power of ten, as bit rates are sold; two cover `half`.
        Unit::BitsPerSecond => count_step(half.saturating_mul(2)),
    };
    let steps_down = (max_down / step + i64::from(max_down % step != 0)).max(1);
    let steps_up = (max_up / step + i64::from(max_up % step != 0)).max(1);
    let scale = plot_h / ((steps_down + steps_up) as f64 * step as f64);
    let mid = TOP + (steps_down * step) as f64 * scale;
    let value = |v: i64| match unit {
        Unit::BytesPerBucket => format::bytes(v),
        Unit::BitsPerSecond => format::bit_rate(v as f64),
    };
    // (y, label) of every gridline: received above the zero line, sent below.
    let ticks: Vec<(f64, String)> = (1..=steps_down)
        .map(|k| {
            (
                mid - (k * step) as f64 * scale,
                format!("↓ {}", axis_label(&value(k * step))),
            )
        })
        .chain((1..=steps_up).map(|k| {
            (
                mid + (k * step) as f64 * scale,
                format!("↑ {}", axis_label(&value(k * step))),
            )
        }))
        .collect();
    // The baseline as one step line: a point at each hour boundary it changes at.
    let baseline_points: Option<String> = baseline.map(|_| {
        let mut points = String::new();
        let mut t = p.start;
        while t < p.end() {
            let next = (t.div_euclid(HOUR_MS) + 1) * HOUR_MS;
            let next = next.min(p.end());
            let y = r(mid + base_of(t).unwrap_or(0) as f64 * scale);
            points.push_str(&format!("{},{y} {},{y} ", r(p.x_of(t)), r(p.x_of(next))));
            t = next;
        }
        points.trim_end().to_owned()
    });
    let what = match unit {
        Unit::BytesPerBucket => format!("bytes {}", frame.per()),
        Unit::BitsPerSecond => format!(
            "bits per second, mean {}",
            frame.per().replace("per ", "of each ")
        ),
    };
    html! {
        figure.chart id=[frame.id] {
            div.scroll {
                (svg_open(frame, &p, html! {
                    @for (y, _) in &ticks {
                        line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(r(*y)) y2=(r(*y)) {}
                    }
                    line.axis x1=(LEFT) x2=(WIDTH - RIGHT) y1=(r(mid)) y2=(r(mid)) {}
                    line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(HEIGHT - BOTTOM) {}
                    (time_axis(&p, HEIGHT - BOTTOM))
                    @for b in &bars {
                        @let x = r(p.x_of(b.minute));
                        @let w = r((p.bar_w - 1.0).max(1.0));
                        @let tip = format!("↓ {} · ↑ {}", value(b.down), value(b.up));
                        g.bar data-t=(b.minute) data-tip=(tip) {
                            title { (format::utc_text(b.minute)) ": received " (value(b.down)) ", sent " (value(b.up)) }
                            rect.down x=(x) width=(w) y=(r(mid - b.down as f64 * scale))
                                height=(r(b.down as f64 * scale)) {}
                            rect.up x=(x) width=(w) y=(r(mid)) height=(r(b.up as f64 * scale)) {}
                        }
                    }
                    @if let Some(points) = &baseline_points {
                        polyline.baseline points=(points) fill="none" {}
                    }
                    // Over the bars, to stay readable (the labels' outline is the panel's colour).
                    @for (y, text) in &ticks {
                        (y_label(*y, *y < mid, text))
                    }
                }))
            }
            (tip())
            figcaption {
                span.legend.down { "received" } " " span.legend.up { "sent" }
                @if baseline_points.is_some() {
                    " " span.legend.baseline title="the device's usual upload for the hour of day (95th percentile of its active minutes)" { "usual upload" }
                }
                " · " (what) " · times in " span data-tz { "UTC" }
            }
        }
    }
}

/// One bar of a [`count_chart`]: a minute, its count, the part of it drawn on top in
/// the alert colour (`None` for a single-series chart), and its tooltip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountBar {
    pub minute: i64,
    pub total: i64,
    pub part: Option<i64>,
    pub title: String,
}

/// A round count step (1, 2 or 5 times a power of ten) of which four cover `max`.
pub fn count_step(max: i64) -> i64 {
    let max = max.max(1);
    let target = max / 4 + i64::from(max % 4 != 0);
    let mut power: i64 = 1;
    loop {
        for mult in [1, 2, 5] {
            let step = power.saturating_mul(mult);
            if step >= target {
                return step;
            }
        }
        power = power.saturating_mul(10);
    }
}

/// Counts per minute over `[since_ms, until_ms)` in the frame and styles of the traffic
/// chart, so the two line up on one page: each bar a minute's count (`rect.q`), its
/// `part` stacked on top (`rect.nx`). Minutes without a bar are gaps. `legend` names
/// the series in the caption; `id` marks the figure for pages that link to it.
pub fn count_chart(
    bars: &[CountBar],
    since_ms: i64,
    until_ms: i64,
    label: &str,
    id: Option<&str>,
    legend: Markup,
) -> Markup {
    let frame = Frame {
        since_ms,
        until_ms,
        bucket_ms: MINUTE_MS,
        label,
        id,
        zoom: false,
    };
    counts_chart(bars, &frame, legend)
}

/// [`count_chart`] with any bucket width (`CountBar::minute` is the bucket's start).
pub fn counts_chart(bars: &[CountBar], frame: &Frame, legend: Markup) -> Markup {
    let p = Plot::new(frame);
    let plot_h = HEIGHT - TOP - BOTTOM;
    let base = TOP + plot_h;
    let bars: Vec<&CountBar> = bars
        .iter()
        .filter(|b| b.minute >= p.start && b.minute < p.end())
        .collect();
    let max = bars.iter().map(|b| b.total).max().unwrap_or(0).max(0);
    let step = count_step(max);
    let steps = (max / step + i64::from(max % step != 0)).max(1);
    let scale = plot_h / (steps * step) as f64;
    html! {
        figure.chart id=[frame.id] {
            div.scroll {
                (svg_open(frame, &p, html! {
                    @for k in 1..=steps {
                        @let y = r(base - (k * step) as f64 * scale);
                        line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y) y2=(y) {}
                    }
                    line.axis x1=(LEFT) x2=(WIDTH - RIGHT) y1=(r(base)) y2=(r(base)) {}
                    line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(r(base)) {}
                    (time_axis(&p, base))
                    @for b in &bars {
                        @let x = r(p.x_of(b.minute));
                        @let w = r((p.bar_w - 1.0).max(1.0));
                        @let total = b.total.max(0);
                        @let part = b.part.map(|v| v.clamp(0, total));
                        @let rest_h = (total - part.unwrap_or(0)) as f64 * scale;
                        g.bar data-t=(b.minute) data-tip=(b.title) {
                            title { (b.title) }
                            rect.q x=(x) width=(w) y=(r(base - rest_h)) height=(r(rest_h)) {}
                            @if let Some(v) = part {
                                @let part_h = v as f64 * scale;
                                rect.nx x=(x) width=(w) y=(r(base - rest_h - part_h)) height=(r(part_h)) {}
                            }
                        }
                    }
                    // Over the bars, to stay readable (the labels' outline is the panel's colour).
                    @for k in 1..=steps {
                        (y_label(base - (k * step) as f64 * scale, true, &(k * step).to_string()))
                    }
                }))
            }
            (tip())
            figcaption {
                (legend) " · " (frame.per()) " · times in " span data-tz { "UTC" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_steps_are_round() {
        assert_eq!(count_step(0), 1);
        assert_eq!(count_step(4), 1);
        assert_eq!(count_step(5), 2);
        assert_eq!(count_step(37), 10);
        assert_eq!(count_step(1000), 500);
        for max in [1, 9, 99, 12_345, i64::MAX / 8] {
            assert!(count_step(max) * 4 >= max, "{max}");
        }
    }

    #[test]
    fn steps_are_round_in_binary_units() {
        assert_eq!(nice_step(0), 1);
        assert_eq!(nice_step(9), 5);
        assert_eq!(nice_step(1000), 500);
        assert_eq!(nice_step(1500), 1024);
        assert_eq!(nice_step(900 * 1024), 500 * 1024);
        assert_eq!(nice_step(3 << 20), 2 << 20);
        // Two steps always cover the maximum.
        for max in [1, 7, 1023, 1025, 77_777, 5 << 30, i64::MAX / 4] {
            assert!(nice_step(max) * 2 >= max, "{max}");
        }
    }

    #[test]
    fn chart_has_axes_and_bars() {
        let since = 1_714_568_400_000; // 13:00 UTC
        let bars = [
            Bar {
                minute: since + 60_000,
                up: 10,
                down: 1000,
            },
            Bar {
                minute: since + 5 * 60_000,
                up: 2000,
                down: 0,
            },
        ];
        let svg = minutes_chart(&bars, since, since + 60 * 60_000, "test").into_string();
        assert_eq!(svg.matches("<rect class=\"down\"").count(), 2);
        assert!(svg.contains("13:10"), "{svg}");
        // 1000 B down, 2000 B up: a 1 KiB step, one step down, two up.
        assert!(svg.contains("↓ 1 KiB") && svg.contains("↑ 2 KiB"), "{svg}");
        assert!(!svg.contains("↓ 2 KiB"), "{svg}");
        assert!(
            svg.contains("y1=\"71.3\""),
            "coordinates are rounded: {svg}"
        );
        assert_eq!(axis_label("4.00 MiB"), "4 MiB");
        assert_eq!(axis_label("1.50 KiB"), "1.5 KiB");
        assert_eq!(axis_label("500 bit/s"), "500 bit/s");
    }

    #[test]
    fn rates_are_bits_per_second_in_round_decimal_steps() {
        let since = 1_733_300_000_000 - 1_733_300_000_000 % MINUTE_MS;
        // 7.5 MB received in a minute is 1 Mbit/s; 75 kB sent is 10 kbit/s.
        let bars = [Bar {
            minute: since + 5 * MINUTE_MS,
            up: 75_000,
            down: 7_500_000,
        }];
        let frame = Frame {
            since_ms: since,
            until_ms: since + 60 * MINUTE_MS,
            bucket_ms: MINUTE_MS,
            label: "test",
            id: None,
            zoom: false,
        };
        let svg = traffic_chart(&bars, &frame, Unit::BitsPerSecond, None).into_string();
        assert!(svg.contains("↓ 1.00 Mbit/s · ↑ 10.0 kbit/s"), "{svg}");
        assert!(
            svg.contains("↓ 500 kbit/s") && svg.contains("↓ 1 Mbit/s"),
            "{svg}"
        );
        assert!(svg.contains("bits per second"), "{svg}");
        assert!(!svg.contains("B/s"), "{svg}");
    }
}
