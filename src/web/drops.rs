//! `/drops`: who knocks — new connection attempts from the WAN the router refused
//! (`collect::nflog`), as top sources, top ports and refused attempts per minute over
//! the chart window; `/api/drops` is the same as JSON.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Serialize;

use super::api::ApiError;
use super::devices::{WindowQuery, parse_window, window_links};
use super::format;
use super::layout::{Nav, page as shell};
use super::{AppState, WebError, now_ms};
use crate::store::drops::{self as store, DropMinute, DropsSummary};

/// `GET /api/drops?window=<minutes>`.
#[derive(Serialize)]
pub struct DropsResponse {
    pub window_minutes: i64,
    /// Start of the window (unix ms).
    pub since: i64,
    #[serde(flatten)]
    pub summary: DropsSummary,
}

pub async fn api(
    State(state): State<AppState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Json<DropsResponse>, ApiError> {
    let window = parse_window(&query?.0)?;
    let since = now_ms() - window * 60_000;
    let summary = state
        .reads()
        .run(move |c| store::drops_summary(c, since))
        .await?;
    Ok(Json(DropsResponse {
        window_minutes: window,
        since,
        summary,
    }))
}

pub async fn page(
    State(state): State<AppState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let window = parse_window(&query?.0)?;
    let now = now_ms();
    let since = now - window * 60_000;
    let s = state
        .reads()
        .run(move |c| store::drops_summary(c, since))
        .await?;
    Ok(shell(
        "Firewall drops",
        Nav::Drops,
        false,
        html! {
            h1 { "Firewall drops" }
            p.muted {
                "New connection attempts from the WAN that the router's firewall refused, "
                "as logged by netmon's rate-limited rules (" code { "[firewall] drop_log_rate" } ")."
            }
            (window_links("/drops", window))
            p.count #drops-total { (format::count(s.attempts)) " refused attempts in this window" }
            (attempts_chart(&s.minutes, since, now, "refused attempts per minute"))
            section.cols {
                div {
                    h2 { "Top sources" }
                    table.data #drop-sources {
                        thead { tr { th { "Source" } th.num { "Attempts" } th.num { "Ports" } th { "Most tried" } th { "Last" } } }
                        tbody {
                            @for src in &s.sources {
                                tr {
                                    td.mono { (src.src_ip) }
                                    td.num.mono { (format::count(src.attempts)) }
                                    td.num.mono { (format::count(src.ports)) }
                                    td.mono { (src.top_ports.join(" ")) }
                                    td { (format::time(src.last_minute)) }
                                }
                            }
                        }
                    }
                }
                div {
                    h2 { "Top ports" }
                    table.data.narrow #drop-ports {
                        thead { tr { th { "Port" } th.num { "Attempts" } th.num { "Sources" } } }
                        tbody {
                            @for p in &s.ports {
                                tr {
                                    td.mono { (p.proto) "/" (p.dst_port) }
                                    td.num.mono { (format::count(p.attempts)) }
                                    td.num.mono { (format::count(p.sources)) }
                                }
                            }
                        }
                    }
                }
            }
            @if s.sources.is_empty() {
                p.muted { "No refused attempts recorded in this window." }
            }
        },
    ))
}

// Chart: a copy of the count chart of `web::dns::queries_chart` (one series instead of
// two), kept here because that one is drawn for DNS minutes.

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 22.0;
const MINUTE_MS: i64 = 60_000;

/// A round count step (1, 2 or 5 times a power of ten) of which four cover `max`.
fn count_step(max: i64) -> i64 {
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

fn label_every(minutes: i64) -> i64 {
    [1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440]
        .into_iter()
        .find(|m| minutes / m <= 6)
        .unwrap_or(1440)
}

fn r(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Refused attempts per minute over `[since_ms, until_ms)`; minutes without a row are
/// gaps (nothing was refused).
fn attempts_chart(minutes: &[DropMinute], since_ms: i64, until_ms: i64, label: &str) -> Markup {
    let start = since_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
    let span_minutes = ((until_ms - start) / MINUTE_MS).max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let base = TOP + plot_h;
    let bars: Vec<&DropMinute> = minutes.iter().filter(|m| m.minute >= start).collect();
    let max = bars.iter().map(|m| m.attempts).max().unwrap_or(0).max(0);
    let step = count_step(max);
    let steps = (max / step + i64::from(max % step != 0)).max(1);
    let scale = plot_h / (steps * step) as f64;
    let bar_w = plot_w / span_minutes as f64;
    let x_of = |ms: i64| LEFT + (ms - start) as f64 / MINUTE_MS as f64 * bar_w;
    let every = label_every(span_minutes);
    let first_label = (start / (every * MINUTE_MS) + 1) * every * MINUTE_MS;
    let labels: Vec<i64> = (0..)
        .map(|i| first_label + i * every * MINUTE_MS)
        .take_while(|ms| *ms < start + span_minutes * MINUTE_MS)
        .collect();
    html! {
        figure.chart #drops-chart {
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
                    @for m in &bars {
                        @let h = m.attempts.max(0) as f64 * scale;
                        g {
                            title { (format::utc_text(m.minute)) ": " (m.attempts) " refused attempts" }
                            rect.q x=(r(x_of(m.minute))) width=(r((bar_w - 1.0).max(1.0))) y=(r(base - h)) height=(r(h)) {}
                        }
                    }
                }
            }
            figcaption {
                span.legend.q { "refused attempts" } " · per minute · times in " span data-tz { "UTC" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_draws_one_bar_per_minute() {
        let since = 1_714_568_400_000;
        let minutes = [
            DropMinute {
                minute: since + 60_000,
                attempts: 200,
            },
            DropMinute {
                minute: since + 120_000,
                attempts: 3,
            },
        ];
        let svg = attempts_chart(&minutes, since, since + 3_600_000, "t").into_string();
        assert_eq!(svg.matches("<rect class=\"q\"").count(), 2);
        assert!(svg.contains("200 refused attempts"), "{svg}");
        assert_eq!(count_step(200), 50);
    }
}
