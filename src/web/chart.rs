//! Per-minute charts as SVG with real axes, rendered on the server: traffic
//! ([`minutes_chart`]) and counts ([`count_chart`]: DNS queries, refused attempts).
//!
//! Received bytes grow up from the zero line, sent bytes grow down, on one scale, so
//! an upload and a download of the same size look the same size. Minutes without a
//! rollup row are gaps (nothing was seen), not interpolated. Axis times are UTC in the
//! markup; the script rewrites them to local time like every `<time>`.

use maud::{Markup, html};

use super::format;

/// One bar: start of the UTC minute (unix ms), bytes sent and received in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub minute: i64,
    pub up: i64,
    pub down: i64,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 22.0;
const MINUTE_MS: i64 = 60_000;

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
    [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440]
        .into_iter()
        .find(|m| minutes / m <= 6)
        .unwrap_or(1440)
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

/// A coordinate to one decimal: enough for a 720-unit viewBox, and keeps a day of
/// bars (1440 of them) from bloating the page with 15-digit floats.
fn r(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// An axis label: [`format::bytes`] without trailing zeros (`4 MiB`, `1.5 KiB`).
fn axis_label(v: i64) -> String {
    let text = format::bytes(v);
    match text.split_once(' ') {
        Some((num, unit)) if num.contains('.') => {
            format!("{} {unit}", num.trim_end_matches('0').trim_end_matches('.'))
        }
        _ => text,
    }
}

/// The chart of `bars` over `[since_ms, until_ms)`.
///
/// Both halves share one scale; each gets as many tick steps as its own maximum needs
/// (at least one), so a small upload under a large download does not waste half the
/// height.
pub fn minutes_chart(bars: &[Bar], since_ms: i64, until_ms: i64, label: &str) -> Markup {
    let start = since_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let span_minutes = ((until_ms - start) / MINUTE_MS).max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let bars: Vec<Bar> = bars.iter().copied().filter(|b| b.minute >= start).collect();
    let max_down = bars.iter().map(|b| b.down).max().unwrap_or(0).max(0);
    let max_up = bars.iter().map(|b| b.up).max().unwrap_or(0).max(0);
    // About four steps in all.
    let step = nice_step(max_down.saturating_add(max_up).div_euclid(2));
    let steps_down = (max_down / step + i64::from(max_down % step != 0)).max(1);
    let steps_up = (max_up / step + i64::from(max_up % step != 0)).max(1);
    let scale = plot_h / ((steps_down + steps_up) as f64 * step as f64);
    let mid = TOP + (steps_down * step) as f64 * scale;
    let bar_w = plot_w / span_minutes as f64;
    let x_of = |ms: i64| LEFT + (ms - start) as f64 / MINUTE_MS as f64 * bar_w;
    let labels = time_labels(start, span_minutes);
    // (y, label) of every gridline: received above the zero line, sent below.
    let ticks: Vec<(f64, String)> = (1..=steps_down)
        .map(|k| {
            (
                mid - (k * step) as f64 * scale,
                format!("↓ {}", axis_label(k * step)),
            )
        })
        .chain((1..=steps_up).map(|k| {
            (
                mid + (k * step) as f64 * scale,
                format!("↑ {}", axis_label(k * step)),
            )
        }))
        .collect();
    html! {
        figure.chart {
            div.scroll {
                svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(label) {
                    @for (y, text) in &ticks {
                        line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(r(*y)) y2=(r(*y)) {}
                        text.ylabel x=(LEFT - 4.0) y=(r(y + 3.5)) text-anchor="end" { (text) }
                    }
                    line.axis x1=(LEFT) x2=(WIDTH - RIGHT) y1=(r(mid)) y2=(r(mid)) {}
                    line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(HEIGHT - BOTTOM) {}
                    text.ylabel x=(LEFT - 4.0) y=(r(mid + 3.5)) text-anchor="end" { "0" }
                    @for ms in &labels {
                        @let x = r(x_of(*ms));
                        line.tick x1=(x) x2=(x) y1=(HEIGHT - BOTTOM) y2=(HEIGHT - BOTTOM + 4.0) {}
                        text.xlabel x=(x) y=(HEIGHT - 6.0) text-anchor="middle" data-ms=(ms) data-fmt="hm" {
                            (format::hh_mm_utc(*ms))
                        }
                    }
                    @for b in &bars {
                        @let x = r(x_of(b.minute));
                        @let w = r((bar_w - 1.0).max(1.0));
                        g {
                            title {
                                (format::utc_text(b.minute)) ": received " (format::bytes(b.down))
                                ", sent " (format::bytes(b.up))
                            }
                            rect.down x=(x) width=(w) y=(r(mid - b.down as f64 * scale))
                                height=(r(b.down as f64 * scale)) {}
                            rect.up x=(x) width=(w) y=(r(mid)) height=(r(b.up as f64 * scale)) {}
                        }
                    }
                }
            }
            figcaption {
                span.legend.down { "received" } " " span.legend.up { "sent" }
                " · bytes per minute · times in " span data-tz { "UTC" }
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
    let start = since_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let span_minutes = ((until_ms - start) / MINUTE_MS).max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let base = TOP + plot_h;
    let bars: Vec<&CountBar> = bars.iter().filter(|b| b.minute >= start).collect();
    let max = bars.iter().map(|b| b.total).max().unwrap_or(0).max(0);
    let step = count_step(max);
    let steps = (max / step + i64::from(max % step != 0)).max(1);
    let scale = plot_h / (steps * step) as f64;
    let bar_w = plot_w / span_minutes as f64;
    let x_of = |ms: i64| LEFT + (ms - start) as f64 / MINUTE_MS as f64 * bar_w;
    let labels = time_labels(start, span_minutes);
    html! {
        figure.chart id=[id] {
            div.scroll {
                svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img" aria-label=(label) {
                    @for k in 1..=steps {
                        @let y = r(base - (k * step) as f64 * scale);
                        line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y) y2=(y) {}
                        text.ylabel x=(LEFT - 4.0) y=(r(y + 3.5)) text-anchor="end" { (k * step) }
                    }
                    line.axis x1=(LEFT) x2=(WIDTH - RIGHT) y1=(r(base)) y2=(r(base)) {}
                    line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(r(base)) {}
                    text.ylabel x=(LEFT - 4.0) y=(r(base + 3.5)) text-anchor="end" { "0" }
                    @for ms in &labels {
                        @let x = r(x_of(*ms));
                        line.tick x1=(x) x2=(x) y1=(r(base)) y2=(r(base + 4.0)) {}
                        text.xlabel x=(x) y=(HEIGHT - 6.0) text-anchor="middle" data-ms=(ms) data-fmt="hm" {
                            (format::hh_mm_utc(*ms))
                        }
                    }
                    @for b in &bars {
                        @let x = r(x_of(b.minute));
                        @let w = r((bar_w - 1.0).max(1.0));
                        @let total = b.total.max(0);
                        @let part = b.part.map(|p| p.clamp(0, total));
                        @let rest_h = (total - part.unwrap_or(0)) as f64 * scale;
                        g {
                            title { (b.title) }
                            rect.q x=(x) width=(w) y=(r(base - rest_h)) height=(r(rest_h)) {}
                            @if let Some(p) = part {
                                @let part_h = p as f64 * scale;
                                rect.nx x=(x) width=(w) y=(r(base - rest_h - part_h)) height=(r(part_h)) {}
                            }
                        }
                    }
                }
            }
            figcaption {
                (legend) " · per minute · times in " span data-tz { "UTC" }
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
        assert_eq!(axis_label(4 << 20), "4 MiB");
        assert_eq!(axis_label(1536), "1.5 KiB");
    }
}
