//! `/drops`: who knocks — new connection attempts from the WAN the router refused
//! (`collect::nflog`), as top sources, top ports and refused attempts per minute over
//! the chart window; `/api/drops` is the same as JSON.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Serialize;

use super::api::ApiError;
use super::chart::{self, CountBar};
use super::devices::{WindowQuery, parse_window, window_links};
use super::format;
use super::layout::{Nav, page as shell};
use super::{AppState, WebError};
use crate::store::drops::{self as store, DropMinute, DropsSummary};
use crate::time::now_ms;

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
            p.count #drops-total { (format::counted(s.attempts, "refused attempt", "refused attempts")) " in this window" }
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

/// Refused attempts per minute over `[since_ms, until_ms)` ([`chart::count_chart`]);
/// minutes without a row are gaps (nothing was refused).
fn attempts_chart(minutes: &[DropMinute], since_ms: i64, until_ms: i64, label: &str) -> Markup {
    let bars: Vec<CountBar> = minutes
        .iter()
        .map(|m| CountBar {
            minute: m.minute,
            total: m.attempts,
            part: None,
            title: format!(
                "{}: {} refused attempts",
                format::utc_text(m.minute),
                m.attempts
            ),
        })
        .collect();
    let legend = html! { span.legend.q { "refused attempts" } };
    chart::count_chart(
        &bars,
        since_ms,
        until_ms,
        label,
        Some("drops-chart"),
        legend,
    )
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
        assert_eq!(chart::count_step(200), 50);
    }
}
