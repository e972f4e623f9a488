//! `/router`: the router's own health — CPU, load, memory, storage, conntrack table
//! fill, uptime, temperatures, per-interface traffic — now and per minute over the
//! chart window; `/api/router` is the same as JSON.
//!
//! Current values come from the sampler's latest reading in memory (a
//! [`crate::collect::system::LatestSample`] held by the web state); the charts from the
//! minute rollups ([`crate::store::system`]). Percentages (CPU, memory, conntrack) get
//! a small bar chart of their own here ([`percent_chart`]); interface traffic reuses
//! the received/sent chart of device pages.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Serialize;

use super::api::ApiError;
use super::chart::{self, Bar};
use super::devices::{WindowQuery, parse_window, window_links};
use super::format::{self, time};
use super::layout::{Nav, page as shell};
use super::{AppState, WebError};
use crate::collect::offload::OffloadStatus;
use crate::event::{Role, SystemSample};
use crate::store::offload::{WanFlowBytes, wan_flow_bytes};
use crate::store::system::{self as store, InterfaceMinute, RouterMinutes, SystemMinute};
use crate::time::MINUTE_MS;
use crate::time::now_ms;

/// Conntrack fill above which the page warns: new connections are dropped at 100 %,
/// and a household's table fills in bursts (a torrent, a scan), so 80 % is the time to
/// raise `nf_conntrack_max` or find the culprit.
pub const CONNTRACK_WARN: f64 = 0.8;

/// `GET /api/router?window=<minutes>`.
#[derive(Serialize)]
pub struct RouterResponse {
    /// The latest sample (`null` before the first, a few seconds after start).
    pub current: Option<SystemSample>,
    /// `nf_conntrack_count / nf_conntrack_max` of `current`, 0–1.
    pub conntrack_fill: Option<f64>,
    pub window_minutes: i64,
    /// Start of the window (unix ms).
    pub since: i64,
    /// The router's minutes, oldest first.
    pub minutes: Vec<SystemMinute>,
    /// Every interface's minutes (WAN, then LAN, then others), oldest first per interface.
    pub interface_minutes: Vec<InterfaceMinute>,
    /// The latest flowtable check (`collect::offload`), `null` before the first.
    pub offload: Option<OffloadStatus>,
    /// WAN interface bytes against flow bytes over the window (`store::offload`).
    pub wan_flow: WanFlowBytes,
}

pub async fn api(
    State(state): State<AppState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Json<RouterResponse>, ApiError> {
    let window = parse_window(&query?.0)?;
    let since = now_ms() - window * 60_000;
    let minutes = state
        .reads()
        .run(move |c| store::router_minutes(c, since))
        .await?;
    let current = state.shared.system.borrow().as_ref().map(|s| (**s).clone());
    let wan_flow = state.reads().run(move |c| wan_flow_bytes(c, since)).await?;
    Ok(Json(RouterResponse {
        offload: state
            .shared
            .offload
            .borrow()
            .as_ref()
            .map(|s| (**s).clone()),
        wan_flow,
        conntrack_fill: current.as_ref().and_then(|s| s.conntrack).map(|c| c.fill()),
        current,
        window_minutes: window,
        since,
        minutes: minutes.system,
        interface_minutes: minutes.interfaces,
    }))
}

pub async fn page(
    State(state): State<AppState>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let window = parse_window(&query?.0)?;
    let now = now_ms();
    let since = now - window * 60_000;
    let data = state
        .reads()
        .run(move |c| store::router_minutes(c, since))
        .await?;
    let current = state.shared.system.borrow().clone();
    let offload = state.shared.offload.borrow().clone();
    let wan_flow = state.reads().run(move |c| wan_flow_bytes(c, since)).await?;
    let write_failure = state.shared.writer.write_failure();
    let budget = state.reads().run(crate::store::budget::status).await.ok();
    let db_file = super::health::db_size_bytes(&state.shared.db_path);
    Ok(shell(
        "Router",
        Nav::Router,
        false,
        html! {
            h1 { "Router" }
            @if let Some(f) = &write_failure { (write_failure_notice(f)) }
            (capture_notices(&state.shared.capture))
            @if let Some(b) = &budget { (budget_line(b, db_file)) }
            @match current.as_deref() {
                Some(s) => (current_section(s)),
                None => p.muted { "No reading yet: the first arrives within a few seconds of start." },
            }
            (offload_section(offload.as_deref(), &wan_flow))
            h2 { "History" }
            (window_links("/router", window))
            (history(&data, since, now))
        },
    ))
}

/// Flow offloading: a warning per flowtable without `counter`, and the WAN bytes / flow
/// bytes cross-check over the window.
fn offload_section(status: Option<&OffloadStatus>, wan_flow: &WanFlowBytes) -> Markup {
    html! {
        @if let Some(s) = status {
            @for ft in s.without_counter() {
                p.error #offload-warning {
                    "Flow offloading: flowtable " code { (ft.family) " " (ft.table) " " (ft.name) }
                    " has no " code { "counter" } " flag, so connections it offloads stop "
                    "counting in conntrack and netmon undercounts them. Add " code { "counter" }
                    " to the flowtable's declaration (current OpenWrt firewall4 does)."
                }
            }
        }
        p.count #wan-flow-ratio {
            "WAN interface bytes / flow bytes over this window: "
            @match wan_flow.ratio {
                Some(r) => { span.mono data-ratio=(format!("{r:.4}")) { (format!("{r:.3}")) } }
                None => "—",
            }
            " (" (format::bytes(wan_flow.wan_bytes)) " / " (format::bytes(wan_flow.flow_bytes)) ")"
            @if let Some(s) = status {
                @if s.flowtables.is_empty() && s.error.is_none() { " · no flowtable (no flow offloading)" }
            }
        }
    }
}

/// Tiles, storage, interfaces and sensors of one sample.
///
/// (Long: a maud template: the page's markup reads top to bottom in one piece.)
fn current_section(s: &SystemSample) -> Markup {
    let ct_fill = s.conntrack.map(|c| c.fill());
    let ct_warn = ct_fill.is_some_and(|f| f > CONNTRACK_WARN);
    html! {
        p.count { "Read " (time(s.at_ms)) }
        section.tiles aria-label="router health" {
            div.tile {
                span.label { "CPU" }
                span.value #router-cpu { (opt_pct(s.cpu_ratio)) }
            }
            div.tile {
                span.label { "Load 1 / 5 / 15 min" }
                span.value #router-load {
                    @match s.load {
                        Some(l) => { (format!("{:.2} {:.2} {:.2}", l.one, l.five, l.fifteen)) }
                        None => "—",
                    }
                }
            }
            div.tile {
                span.label { "Memory used" }
                span.value #router-memory {
                    @match s.memory {
                        Some(m) => {
                            (format::ratio(to_i64(m.used_bytes()), to_i64(m.total_bytes)))
                            span.sub { (format::bytes(to_i64(m.used_bytes()))) " of " (format::bytes(to_i64(m.total_bytes))) }
                        }
                        None => "—",
                    }
                }
            }
            div.tile.warn[ct_warn] {
                span.label { "Conntrack table" }
                span.value #router-conntrack {
                    @match s.conntrack {
                        Some(c) => {
                            (format::ratio(to_i64(c.count), to_i64(c.max)))
                            span.sub { (format::count(c.count)) " of " (format::count(c.max)) " entries" }
                        }
                        None => "—",
                    }
                }
            }
            div.tile {
                span.label { "Uptime" }
                span.value #router-uptime {
                    @match s.uptime_s {
                        Some(u) => { (format::duration((u * 1000.0) as i64)) }
                        None => "—",
                    }
                }
            }
            @if let Some(t) = s.temperatures.iter().max_by(|a, b| a.celsius.total_cmp(&b.celsius)) {
                div.tile {
                    span.label { "Hottest sensor" }
                    span.value #router-temperature { (format!("{:.1} °C", t.celsius)) }
                }
            }
        }
        @if ct_warn {
            p.error #conntrack-warning {
                "The conntrack table is over " (format!("{:.0}", CONNTRACK_WARN * 100.0)) " % full: "
                "when it fills, the router drops new connections. Raise "
                code { "net.netfilter.nf_conntrack_max" } " or find the device opening so many."
            }
        }
        section.cols {
            div {
                h2 { "Storage" }
                table.data.narrow {
                    thead { tr { th { "File system" } th { "Path" } th.num { "Size" } th.num { "Free" } th.num { "Used" } } }
                    tbody {
                        @for f in &s.filesystems {
                            tr {
                                td { (f.name) }
                                td.mono { (f.path) }
                                td.num.mono { (format::bytes(to_i64(f.size_bytes))) }
                                td.num.mono { (format::bytes(to_i64(f.free_bytes))) }
                                td.num.mono { (format::ratio(to_i64(f.size_bytes.saturating_sub(f.free_bytes)), to_i64(f.size_bytes))) }
                            }
                        }
                    }
                }
            }
            @if !s.temperatures.is_empty() {
                div {
                    h2 { "Temperatures" }
                    table.data.narrow {
                        thead { tr { th { "Sensor" } th.num { "°C" } } }
                        tbody {
                            @for t in &s.temperatures {
                                tr { td.mono { (t.sensor) } td.num.mono { (format!("{:.1}", t.celsius)) } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Interfaces" }
        div.scroll {
            table.data #router-interfaces {
                thead { tr {
                    th { "Interface" } th { "Role" } th.num { "Receiving" } th.num { "Sending" }
                    th.num.opt { "Received" } th.num.opt { "Sent" }
                } }
                tbody {
                    @for i in &s.interfaces {
                        tr {
                            td.mono { (i.name) }
                            td { span class={ "role role-" (i.role.as_str()) } { (Role::label(i.role.as_str())) } }
                            td.num.mono.down { (rate(i.rx_bytes_per_s)) }
                            td.num.mono.up { (rate(i.tx_bytes_per_s)) }
                            td.num.mono.opt { (format::bytes(to_i64(i.counters.rx_bytes))) }
                            td.num.mono.opt { (format::bytes(to_i64(i.counters.tx_bytes))) }
                        }
                    }
                }
            }
        }
    }
}

/// The minute charts: CPU, memory, conntrack fill, then each interface.
fn history(data: &RouterMinutes, since: i64, now: i64) -> Markup {
    let cpu: Vec<Point> = data
        .system
        .iter()
        .filter_map(|m| {
            Some(Point {
                minute: m.minute,
                pct: m.cpu_pct?,
                detail: format!(
                    "CPU {:.1} % (peak {:.1} %)",
                    m.cpu_pct?,
                    m.cpu_pct_max.unwrap_or(0.0)
                ),
            })
        })
        .collect();
    let memory: Vec<Point> = data
        .system
        .iter()
        .filter_map(|m| {
            let (used, total) = (m.mem_used_bytes?, m.mem_total_bytes.filter(|t| *t > 0)?);
            Some(Point {
                minute: m.minute,
                pct: used as f64 * 100.0 / total as f64,
                detail: format!(
                    "memory used (peak) {} of {}",
                    format::bytes(used),
                    format::bytes(total)
                ),
            })
        })
        .collect();
    let conntrack: Vec<Point> = data
        .system
        .iter()
        .filter_map(|m| {
            let (count, max) = (m.ct_count?, m.ct_max.filter(|t| *t > 0)?);
            Some(Point {
                minute: m.minute,
                pct: count as f64 * 100.0 / max as f64,
                detail: format!(
                    "conntrack entries (peak) {} of {}",
                    format::count(count),
                    format::count(max)
                ),
            })
        })
        .collect();
    let mut interfaces: Vec<(&str, &str, Vec<Bar>)> = Vec::new();
    for m in &data.interfaces {
        if interfaces
            .last()
            .is_none_or(|(name, _, _)| *name != m.interface)
        {
            interfaces.push((&m.interface, &m.role, Vec::new()));
        }
        if let Some((_, _, bars)) = interfaces.last_mut() {
            bars.push(Bar {
                minute: m.minute,
                up: m.tx_bytes,
                down: m.rx_bytes,
            });
        }
    }
    html! {
        h3 { "CPU" }
        (percent_chart(&cpu, since, now, None, "CPU busy per minute"))
        h3 { "Memory used" }
        (percent_chart(&memory, since, now, None, "memory used per minute"))
        h3 { "Conntrack table fill" }
        (percent_chart(&conntrack, since, now, Some(CONNTRACK_WARN * 100.0), "conntrack table fill per minute"))
        @for (name, role, bars) in &interfaces {
            h3 { "Interface " span.mono { (name) } " " span class={ "role role-" (role) } { (Role::label(role)) } }
            (chart::minutes_chart(bars, since, now, &format!("traffic of interface {name} per minute")))
        }
        @if interfaces.is_empty() {
            p.muted { "No interface traffic recorded in this window yet." }
        }
    }
}

/// One bar of a [`percent_chart`].
struct Point {
    minute: i64,
    pct: f64,
    /// The bar's tooltip.
    detail: String,
}

const W: f64 = 720.0;
const H: f64 = 160.0;
const LEFT: f64 = 4.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 22.0;

/// Per-minute percentages (0–100) as bars on a fixed 0–100 % scale, so charts of
/// different windows and routers compare at a glance. Bars above `warn` (and a dashed
/// line at it) are drawn in the warning colour.
fn percent_chart(points: &[Point], since: i64, now: i64, warn: Option<f64>, label: &str) -> Markup {
    let start = since - since.rem_euclid(MINUTE_MS);
    let span = ((now - start) / MINUTE_MS).max(1);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let bar_w = plot_w / span as f64;
    let x_of = |ms: i64| LEFT + (ms - start) as f64 / MINUTE_MS as f64 * bar_w;
    let y_of = |pct: f64| TOP + plot_h * (1.0 - pct.clamp(0.0, 100.0) / 100.0);
    let every = [1, 2, 5, 10, 15, 30, 60, 120, 180, 360]
        .into_iter()
        .find(|m| span / m <= 6)
        .unwrap_or(360);
    let first_label = (start / (every * MINUTE_MS) + 1) * every * MINUTE_MS;
    let labels: Vec<i64> = (0..)
        .map(|i| first_label + i * every * MINUTE_MS)
        .take_while(|ms| *ms < start + span * MINUTE_MS)
        .collect();
    let r = |v: f64| (v * 10.0).round() / 10.0;
    html! {
        figure.chart.pct {
            div.scroll {
                svg viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(label) {
                    @for pct in [25.0, 50.0, 75.0, 100.0] {
                        line.grid x1=(LEFT) x2=(W - RIGHT) y1=(r(y_of(pct))) y2=(r(y_of(pct))) {}
                    }
                    line.axis x1=(LEFT) x2=(W - RIGHT) y1=(r(y_of(0.0))) y2=(r(y_of(0.0))) {}
                    line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(H - BOTTOM) {}
                    @for ms in &labels {
                        @let x = r(x_of(*ms));
                        line.tick x1=(x) x2=(x) y1=(H - BOTTOM) y2=(H - BOTTOM + 4.0) {}
                        text.xlabel x=(x) y=(H - 5.0) text-anchor=(chart::x_anchor(x, W - RIGHT)) data-ms=(ms) data-fmt="hm" {
                            (format::hh_mm_utc(*ms))
                        }
                    }
                    @for p in points.iter().filter(|p| p.minute >= start) {
                        @let hot = warn.is_some_and(|w| p.pct > w);
                        g {
                            title { (format::utc_text(p.minute)) ": " (p.detail) }
                            rect.pct.hot[hot] x=(r(x_of(p.minute))) width=(r((bar_w - 1.0).max(1.0)))
                                y=(r(y_of(p.pct))) height=(r(y_of(0.0) - y_of(p.pct))) {}
                        }
                    }
                    @if let Some(w) = warn {
                        line.limit x1=(LEFT) x2=(W - RIGHT) y1=(r(y_of(w))) y2=(r(y_of(w))) {}
                    }
                    @for pct in [25.0, 50.0, 75.0, 100.0] {
                        (chart::y_label(y_of(pct), true, &format!("{pct} %")))
                    }
                }
            }
            figcaption {
                "per minute · times in " span data-tz { "UTC" }
                @if let Some(w) = warn { " · dashed line: warning at " (w) " %" }
            }
        }
    }
}

/// A link's rate, in bits per second (`format::bit_rate`).
fn rate(bytes_per_s: Option<f64>) -> String {
    bytes_per_s.map_or_else(|| "—".to_owned(), |b| format::bit_rate(b * 8.0))
}

fn opt_pct(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "—".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The storage budget (`store::budget`): what the database takes against its budget and
/// what flood protection pruned to keep it there.
/// One notice per broken capture source, for the router and health pages
/// (`collect::capture`): which source, since when, what the owner loses, what is wrong
/// and the fix.
pub(super) fn capture_notices(capture: &crate::collect::capture::CaptureStatus) -> Markup {
    html! {
        @for s in capture.broken_sources() {
            @if let Some(f) = s.failure() {
                p.error id={ "capture-broken-" (s.source.name()) } {
                    (s.source.title()) " is broken since " (time(s.since_ms)) ", so "
                    (s.source.loss()) ": " (f.error) ". Fix: " (f.fix) "."
                }
            }
        }
    }
}

/// The storage failure notice of the router and health pages.
pub(super) fn write_failure_notice(f: &crate::event::WriteFailure) -> Markup {
    html! {
        p.error #write-failure {
            "Writing to the database fails since " (time(f.since_ms)) ": " (f.error)
            ". netmon keeps collecting in memory (" (f.held_changes) " changes waiting) "
            "and stores them by itself once the database's file system has room again."
        }
    }
}

pub(super) fn budget_line(b: &crate::store::budget::BudgetStatus, file_bytes: u64) -> Markup {
    let p = &b.pruned;
    let over = b.budget_bytes > 0 && file_bytes > b.budget_bytes;
    html! {
        p #storage-budget class=(if over { "error" } else { "muted" }) {
            "Database " (format::bytes(to_i64(file_bytes))) " on disk (with its log), "
            (format::bytes(to_i64(b.used_bytes))) " in use; budget "
            (format::bytes(to_i64(b.budget_bytes))) " (retention.max_db_mb). "
            @if p.flood_rows() > 0 {
                "Flood protection pruned " (format::count(p.flood_rows())) " rows ("
                (format::count(p.device_cap_flows + p.device_cap_queries)) " over a device's cap, "
                (format::count(p.domain_cap_queries)) " over a domain's, "
                (format::count(p.budget_flows + p.budget_queries + p.budget_rollups + p.budget_devices)) " for size), latest "
                (time(p.last_ms)) "; their traffic still counts in charts and totals."
            } @else {
                "Nothing pruned for size or caps so far."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        Conntrack, Filesystem, InterfaceCounters, InterfaceSample, Load, Memory, Role,
    };

    #[test]
    fn rates_read_as_link_speeds() {
        assert_eq!(rate(None), "—");
        assert_eq!(rate(Some(1_000_000.0)), "8.00 Mbit/s");
        assert_eq!(rate(Some(125.0)), "1.00 kbit/s");
        assert_eq!(rate(Some(12.0)), "96.0 bit/s");
    }

    fn sample(ct: u64) -> SystemSample {
        SystemSample {
            at_ms: 1_714_568_400_000,
            interval_ms: Some(5000),
            cpu_ratio: Some(0.25),
            load: Some(Load {
                one: 0.5,
                five: 0.4,
                fifteen: 0.3,
            }),
            memory: Some(Memory {
                total_bytes: 128 << 20,
                available_bytes: 96 << 20,
            }),
            filesystems: vec![Filesystem {
                name: "overlay",
                path: "/overlay".into(),
                size_bytes: 10 << 20,
                free_bytes: 5 << 20,
            }],
            interfaces: vec![InterfaceSample {
                name: "wan".into(),
                role: Role::Wan,
                counters: InterfaceCounters::default(),
                delta: None,
                rx_bytes_per_s: Some(1_000_000.0),
                tx_bytes_per_s: None,
            }],
            conntrack: Some(Conntrack {
                count: ct,
                max: 1000,
            }),
            uptime_s: Some(3661.0),
            temperatures: vec![],
        }
    }

    #[test]
    fn conntrack_fill_above_80_percent_warns() {
        let calm = current_section(&sample(500)).into_string();
        assert!(calm.contains("50.0 %") && calm.contains("25.0 %"), "{calm}");
        assert!(
            calm.contains("8.00 Mbit/s") && calm.contains("1h 01m"),
            "{calm}"
        );
        assert!(!calm.contains("conntrack-warning"));
        let full = current_section(&sample(850)).into_string();
        assert!(full.contains("conntrack-warning"), "{full}");
        assert!(full.contains("class=\"tile warn\""), "{full}");
    }

    #[test]
    fn percent_chart_marks_bars_over_the_warning() {
        let since = 1_714_568_400_000;
        let p = |minute, pct| Point {
            minute,
            pct,
            detail: String::new(),
        };
        let svg = percent_chart(
            &[p(since, 10.0), p(since + 60_000, 90.0)],
            since,
            since + 60 * 60_000,
            Some(80.0),
            "t",
        )
        .into_string();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert_eq!(svg.matches("class=\"pct hot\"").count(), 1, "{svg}");
        assert!(svg.contains("class=\"limit\""));
    }
}
