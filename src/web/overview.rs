//! `/`: the page a router owner opens first — headline tiles, charts of the
//! internet link, new flows and DNS, the busiest devices, the live flows, and panels of
//! top hosts, top domains, top senders, newest hosts and rare ports.
//!
//! Each panel has its own window (10 min … 30 days), chosen with plain GET links
//! (`/?w_hosts=24h`), so everything works without JavaScript. The choice is
//! remembered in a cookie the server sets on that GET ([`WINDOW_COOKIE`]): a cookie, not
//! a database row, because no GET may change the database. The cookie is read strictly
//! (bounded, known keys and values only); anything else in it is ignored.
//!
//! Live: every panel is also a fragment (`/fragment/overview/{panel}`) that the script
//! re-fetches when a commit touched what the panel shows (`data-topics`, the
//! [`Tick`](crate::event::Tick) fields).
//!
//! The charts can be zoomed to a range (`from`, `to` in unix ms, by drag-selecting on
//! the chart); ranges longer than [`overview::MINUTE_BUCKETS_UP_TO_MS`](crate::store::overview::MINUTE_BUCKETS_UP_TO_MS) get hour bars.
//!
//! (Long: one page of eight panels, each a small template over one store query; splitting
//! it would scatter one page over files.)

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::chart::{self, Bar, CountBar, Frame, Unit};
use super::format::{self, time_ago};
use super::layout::{Nav, device_link, page as shell, with_query};
use super::{AppState, WebError, flow_table, router_health::CONNTRACK_WARN};
use crate::event::{Role, SystemSample};
use crate::flow::proto_name;
use crate::store::filter::Window;
use crate::store::flows::read::{FlowFilter, FlowPage, Show};
use crate::store::overview::{
    self, CountBucket, DeviceRank, DeviceTraffic, DomainMeasure, DomainUse, HostTraffic,
    MAX_RANGE_MS, NewHost, PortUse, Range, SettledTops, TOP_N, Tiles, TrafficBucket,
};
use crate::store::saved;
use crate::time::now_ms;

/// The cookie remembering each panel's window: `charts:1h,hosts:24h,…`.
pub const WINDOW_COOKIE: &str = "netmon_w";
/// A year: a remembered choice should outlive browser restarts, not be forgotten weekly.
const WINDOW_COOKIE_MAX_AGE_S: u64 = 365 * 24 * 3600;
/// Longest cookie value read; a real one is under 80 bytes.
const MAX_COOKIE_CHARS: usize = 200;
/// Rows of the live flows table on the overview (the flows page has the rest).
const LIVE_FLOWS: u32 = 15;

/// The panels with a window of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// Tiles and charts share one window: the numbers explain the charts.
    Charts,
    Hosts,
    Domains,
    Devices,
    NewHosts,
    Ports,
}

impl Panel {
    pub const ALL: [Panel; 6] = [
        Panel::Charts,
        Panel::Hosts,
        Panel::Domains,
        Panel::Devices,
        Panel::NewHosts,
        Panel::Ports,
    ];

    /// The key in the cookie and, as `w_<key>`, the query parameter (`w` for charts).
    fn key(self) -> &'static str {
        match self {
            Panel::Charts => "charts",
            Panel::Hosts => "hosts",
            Panel::Domains => "domains",
            Panel::Devices => "devices",
            Panel::NewHosts => "new",
            Panel::Ports => "ports",
        }
    }

    fn param(self) -> &'static str {
        match self {
            Panel::Charts => "w",
            Panel::Hosts => "w_hosts",
            Panel::Domains => "w_domains",
            Panel::Devices => "w_devices",
            Panel::NewHosts => "w_new",
            Panel::Ports => "w_ports",
        }
    }

    fn default_window(self) -> Window {
        match self {
            Panel::Charts | Panel::Hosts | Panel::Domains | Panel::Devices => Window::H1,
            Panel::NewHosts | Panel::Ports => Window::H24,
        }
    }

    fn index(self) -> usize {
        Panel::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }
}

/// Each panel's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows([Window; 6]);

impl Default for Windows {
    fn default() -> Self {
        Windows(Panel::ALL.map(Panel::default_window))
    }
}

impl Windows {
    pub fn get(&self, p: Panel) -> Window {
        self.0[p.index()]
    }

    fn set(&mut self, p: Panel, w: Window) {
        self.0[p.index()] = w;
    }

    /// The defaults with `remembered` windows set.
    fn with(remembered: &[(Panel, Window)]) -> Windows {
        let mut windows = Windows::default();
        for (panel, w) in remembered {
            windows.set(*panel, *w);
        }
        windows
    }

    /// The panels' windows the request's cookie holds: valid ones only, nothing for an
    /// item missing, unknown, repeated past the bound or malformed.
    fn remembered(headers: &HeaderMap) -> Vec<(Panel, Window)> {
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == WINDOW_COOKIE)
            .map(|(_, value)| value.trim());
        let Some(value) = value.filter(|v| v.len() <= MAX_COOKIE_CHARS) else {
            return Vec::new();
        };
        value
            .split(',')
            .take(Panel::ALL.len() * 2)
            .filter_map(|item| {
                let (key, w) = item.split_once(':')?;
                let panel = Panel::ALL.into_iter().find(|p| p.key() == key)?;
                Some((panel, Window::parse(w)?))
            })
            .collect()
    }

    /// The cookie's value: every panel, in a fixed order.
    pub fn cookie_value(&self) -> String {
        Panel::ALL
            .iter()
            .map(|p| format!("{}:{}", p.key(), self.get(*p).as_str()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The overview's query string as it arrives. Empty values mean "not set".
#[derive(Debug, Default, Deserialize)]
pub struct OverviewQuery {
    pub w: Option<String>,
    pub w_hosts: Option<String>,
    pub w_domains: Option<String>,
    pub w_devices: Option<String>,
    pub w_new: Option<String>,
    pub w_ports: Option<String>,
    /// A zoomed chart range, unix ms.
    pub from: Option<String>,
    pub to: Option<String>,
}

/// What a request asks for: the windows (cookie overridden by the query) and, when
/// zoomed, the charts' range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub windows: Windows,
    /// Some window came from the query string: remember the new choice.
    pub chose: bool,
    /// The charts' window is the default: neither asked for nor remembered.
    pub charts_default: bool,
    pub zoom: Option<(i64, i64)>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl View {
    pub fn parse(q: &OverviewQuery, headers: &HeaderMap, now: i64) -> Result<View, WebError> {
        let remembered = Windows::remembered(headers);
        let mut windows = Windows::with(&remembered);
        let mut chose = false;
        let charts_default =
            given(&q.w).is_none() && !remembered.iter().any(|(p, _)| *p == Panel::Charts);
        for panel in Panel::ALL {
            let value = match panel {
                Panel::Charts => &q.w,
                Panel::Hosts => &q.w_hosts,
                Panel::Domains => &q.w_domains,
                Panel::Devices => &q.w_devices,
                Panel::NewHosts => &q.w_new,
                Panel::Ports => &q.w_ports,
            };
            if let Some(text) = given(value) {
                let w = Window::parse(text).ok_or_else(|| {
                    WebError::BadRequest(format!(
                        "invalid query parameter `{}` = {:?}: expected one of 10m, 1h, 24h, 7d, 30d",
                        panel.param(),
                        text.chars().take(100).collect::<String>()
                    ))
                })?;
                windows.set(panel, w);
                chose = true;
            }
        }
        let ms = |param: &str, v: &Option<String>| -> Result<Option<i64>, WebError> {
            given(v)
                .map(|text| {
                    text.parse::<i64>()
                        .ok()
                        .filter(|t| (0..=now + 86_400_000).contains(t))
                        .ok_or_else(|| {
                            WebError::BadRequest(format!(
                                "invalid query parameter `{param}` = {:?}: expected a time in unix milliseconds",
                                text.chars().take(100).collect::<String>()
                            ))
                        })
                })
                .transpose()
        };
        let zoom = match (ms("from", &q.from)?, ms("to", &q.to)?) {
            (None, None) => None,
            (Some(from), Some(to)) if to - from >= 60_000 && to - from <= MAX_RANGE_MS => {
                Some((from, to))
            }
            (Some(_), Some(_)) => {
                return Err(WebError::BadRequest(format!(
                    "invalid query parameters `from`/`to`: expected `to` at least a minute and at most {} days after `from`",
                    MAX_RANGE_MS / 86_400_000
                )));
            }
            _ => {
                return Err(WebError::BadRequest(
                    "invalid query parameters `from`/`to`: give both or neither".into(),
                ));
            }
        };
        Ok(View {
            windows,
            chose,
            charts_default,
            zoom,
        })
    }

    /// A new install's first minutes fill the charts instead of their right tenth: while
    /// the charts' window is the default and netmon's history (its first interface
    /// minute) is younger than the shortest window, the charts show that window.
    fn fit_new_install(mut self, conn: &rusqlite::Connection, now: i64) -> rusqlite::Result<View> {
        let shortest = Window::ALL[0];
        if self.charts_default
            && self.zoom.is_none()
            && self.windows.get(Panel::Charts).ms() > shortest.ms()
        {
            let first: Option<i64> =
                conn.query_row("SELECT min(minute) FROM interface_minutes", [], |r| {
                    r.get(0)
                })?;
            if first.is_none_or(|first| now - first < shortest.ms()) {
                self.windows.set(Panel::Charts, shortest);
            }
        }
        Ok(self)
    }

    /// The charts' range: the zoom, else the charts window up to now.
    fn range(&self, now: i64) -> Range {
        match self.zoom {
            Some((from, to)) => Range::new(from, to),
            None => Range::new(now - self.windows.get(Panel::Charts).ms(), now),
        }
    }
}

/// Everything the overview shows, read in one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Overview {
    pub tiles: Tiles,
    pub wan: Vec<TrafficBucket>,
    pub flows_started: Vec<CountBucket>,
    pub dns: Vec<CountBucket>,
    pub talkers: Vec<DeviceTraffic>,
    pub flows: Option<FlowPage>,
    pub hosts: Vec<HostTraffic>,
    pub domains: (Option<DomainMeasure>, Vec<DomainUse>),
    pub egress: Vec<DeviceTraffic>,
    pub new_hosts: Vec<NewHost>,
    pub ports: Vec<PortUse>,
}

/// What a fragment (or the whole page) needs read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Tiles,
    Charts,
    Flows,
    Panel(Panel),
    All,
}

impl Part {
    fn parse(name: &str) -> Option<Part> {
        Some(match name {
            "tiles" => Part::Tiles,
            "charts" => Part::Charts,
            "flows" => Part::Flows,
            "hosts" => Part::Panel(Panel::Hosts),
            "domains" => Part::Panel(Panel::Domains),
            "devices" => Part::Panel(Panel::Devices),
            "new" => Part::Panel(Panel::NewHosts),
            "ports" => Part::Panel(Panel::Ports),
            _ => return None,
        })
    }
}

fn live_filter() -> FlowFilter {
    FlowFilter {
        per_page: LIVE_FLOWS,
        ..FlowFilter::default()
    }
}

fn read_part(
    conn: &rusqlite::Connection,
    part: Part,
    view: &View,
    now: i64,
    settled: &SettledTops,
) -> rusqlite::Result<Overview> {
    let mut o = Overview::default();
    let want = |p: Part| part == Part::All || part == p;
    let w = |p: Panel| view.windows.get(p);
    let since = |p: Panel| now - w(p).ms();
    if want(Part::Tiles) {
        o.tiles = overview::tiles(conn, now, since(Panel::Charts))?;
    }
    if want(Part::Charts) {
        let range = view.range(now);
        o.wan = overview::wan_traffic(conn, &range)?;
        o.flows_started = overview::flows_started(conn, &range)?;
        if range.until - range.since <= DNS_CHART_MAX_MS {
            o.dns = overview::dns_queries(conn, &range)?;
        }
        o.talkers =
            overview::top_devices(conn, range.since, range.hourly(), DeviceRank::Total, TOP_N)?;
    }
    if want(Part::Flows) {
        o.flows = Some(crate::store::flows::read::flows(conn, &live_filter())?);
    }
    if want(Part::Panel(Panel::Hosts)) {
        let (since, hourly) = (since(Panel::Hosts), w(Panel::Hosts).hourly());
        o.hosts = overview::top_hosts(conn, now, since, hourly, TOP_N, settled)?;
    }
    if want(Part::Panel(Panel::Domains)) {
        let (m, rows) =
            overview::top_domains(conn, since(Panel::Domains), w(Panel::Domains), TOP_N)?;
        o.domains = (Some(m), rows);
    }
    if want(Part::Panel(Panel::Devices)) {
        o.egress = overview::top_devices(
            conn,
            since(Panel::Devices),
            w(Panel::Devices).hourly(),
            DeviceRank::Egress,
            TOP_N,
        )?;
    }
    if want(Part::Panel(Panel::NewHosts)) {
        o.new_hosts = overview::newest_hosts(conn, since(Panel::NewHosts), TOP_N)?;
    }
    if want(Part::Panel(Panel::Ports)) {
        o.ports = overview::rare_ports(conn, since(Panel::Ports), w(Panel::Ports).hourly(), TOP_N)?;
    }
    Ok(o)
}

/// `GET /`.
pub async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<OverviewQuery>, QueryRejection>,
) -> Result<Response, WebError> {
    let now = now_ms();
    let view = View::parse(&query?.0, &headers, now)?;
    let settled = state.shared.settled_tops.clone();
    // The pinned searches come from the same read (one pool connection, one snapshot).
    let (data, pinned, view) = state
        .reads()
        .run(move |c| {
            let view = view.fit_new_install(c, now)?;
            let o = read_part(c, Part::All, &view, now, &settled)?;
            Ok((o, saved::pinned(c)?, view))
        })
        .await?;
    let health = Health::of(&state, now);
    let body = shell(
        "Overview",
        Nav::Overview,
        true,
        html! {
            h1.sr { "Overview" }
            (super::saved::pinned_links(&pinned))
            section #ov-tiles data-src=(fragment_src("tiles", &view)) data-topics=(TOPICS_TILES) {
                (tiles(&data.tiles, &view, &health))
            }
            section #ov-charts data-src=[(view.zoom.is_none()).then(|| fragment_src("charts", &view))]
                data-topics=(TOPICS_CHARTS) data-every=(CHARTS_EVERY_MS) {
                (charts(&data, &view, now))
            }
            div.panels {
                section.panel #ov-flows data-src="/fragment/overview/flows" data-topics=(TOPICS_FLOWS) {
                    (live_flows(data.flows.as_ref(), now))
                }
                @for p in [Panel::Hosts, Panel::Domains, Panel::Devices, Panel::NewHosts, Panel::Ports] {
                    section.panel id={ "ov-" (p.key()) } data-src=(fragment_src(p.key(), &view))
                        data-topics=(topics(p))
                        data-every=[view.windows.get(p).hourly().then_some(LONG_WINDOW_EVERY_MS)] {
                        (panel(p, &data, &view))
                    }
                }
            }
        },
    );
    let mut response = body.into_response();
    if view.chose {
        let cookie = format!(
            "{WINDOW_COOKIE}={}; Path=/; Max-Age={WINDOW_COOKIE_MAX_AGE_S}; HttpOnly; SameSite=Strict{}",
            view.windows.cookie_value(),
            if state.auth().secure_cookie() {
                "; Secure"
            } else {
                ""
            }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(response)
}

/// `GET /fragment/overview/{part}`: one panel alone (same query and cookie as the page).
pub async fn fragment(
    State(state): State<AppState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<OverviewQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let Path(name) = name?;
    let part = Part::parse(&name)
        .ok_or_else(|| WebError::NotFound(format!("no overview panel {name:?}")))?;
    let now = now_ms();
    let view = View::parse(&query?.0, &headers, now)?;
    let v = view.clone();
    let settled = state.shared.settled_tops.clone();
    let data = state
        .reads()
        .run(move |c| read_part(c, part, &v, now, &settled))
        .await?;
    Ok(match part {
        Part::Tiles => tiles(&data.tiles, &view, &Health::of(&state, now)),
        Part::Charts => charts(&data, &view, now),
        Part::Flows => live_flows(data.flows.as_ref(), now),
        Part::Panel(p) => panel(p, &data, &view),
        Part::All => html! {},
    })
}

/// DNS counts exist only per device and minute (no hour rollup): a week of them is
/// 400 000 rows on a busy router, too many for one page view. Longer ranges show a note.
const DNS_CHART_MAX_MS: i64 = 24 * 3_600_000;

/// The charts' bars are minute (or hour) rollups: refreshing them more than a few times
/// a minute redraws the same picture at the router's expense.
const CHARTS_EVERY_MS: u32 = 15_000;
/// Panels over a day or more barely move between commits; at most twice a minute.
const LONG_WINDOW_EVERY_MS: u32 = 30_000;

/// Which tick fields make a part stale (the script re-fetches it only then).
const TOPICS_TILES: &str = "flows_new flows_ended devices_changed remote_hosts_changed";
const TOPICS_CHARTS: &str = "flows_new flows_updated";
const TOPICS_FLOWS: &str = "flows_new flows_updated flows_ended devices_changed";

fn topics(p: Panel) -> &'static str {
    match p {
        Panel::Charts => TOPICS_CHARTS,
        Panel::Hosts | Panel::Devices => {
            "flows_updated flows_new devices_changed remote_hosts_changed"
        }
        Panel::Domains => "flows_new",
        Panel::NewHosts => "remote_hosts_changed",
        Panel::Ports => "flows_new",
    }
}

/// A part's fragment URL with the windows in effect, so a refresh shows the same view
/// even where cookies are off.
fn fragment_src(part: &str, view: &View) -> String {
    // Every value is a window name or a number: nothing to escape.
    let mut q: Vec<String> = Vec::new();
    let panel = match part {
        "tiles" | "charts" => Some(Panel::Charts),
        _ => Panel::ALL.into_iter().find(|p| p.key() == part),
    };
    if let Some(p) = panel {
        q.push(format!("{}={}", p.param(), view.windows.get(p).as_str()));
    }
    if let (Some((from, to)), "charts") = (view.zoom, part) {
        q.push(format!("from={from}&to={to}"));
    }
    with_query(&format!("/fragment/overview/{part}"), &q.join("&"))
}

/// The window links of a panel: plain GET links to the page, remembered by the cookie.
fn window_switch(p: Panel, view: &View) -> Markup {
    let current = view.windows.get(p);
    let zoomed = p == Panel::Charts && view.zoom.is_some();
    html! {
        nav.switch.windows aria-label="window" {
            @for w in Window::ALL {
                a href={ "/?" (p.param()) "=" (w.as_str()) }
                    aria-current=[(w == current && !zoomed).then_some("true")] { (w.as_str()) }
            }
        }
    }
}

/// The state of collection, from memory: no query.
struct Health {
    /// Age of the writer's last commit (ms), `None` before the first.
    commit_age: Option<i64>,
    write_failing: bool,
    /// The tile labels of the broken capture sources (`collect::capture`), e.g. `NFLOG`.
    broken_sources: Vec<&'static str>,
    queue: usize,
    sample: Option<std::sync::Arc<SystemSample>>,
}

/// Past this without a commit, collection looks stalled: the writer commits at least
/// every few seconds on a router with any traffic (the system sampler alone does).
const STALLED_MS: i64 = 60_000;

impl Health {
    fn of(state: &AppState, now: i64) -> Health {
        let tick = state.shared.ticks.borrow().clone();
        Health {
            commit_age: (tick.seq > 0).then(|| now - tick.at_ms),
            write_failing: state.shared.writer.write_failure().is_some(),
            broken_sources: (state.shared.capture.broken_sources().iter())
                .map(|s| s.source.label())
                .collect(),
            queue: state.shared.writer.depth(),
            sample: state.shared.system.borrow().clone(),
        }
    }
}

fn tile(href: &str, label: Markup, value: Markup, class: &str, id: Option<&str>) -> Markup {
    html! {
        a.tile class=(class) href=(href) {
            span.label { (label) }
            span.value id=[id] { (value) }
        }
    }
}

fn tiles(t: &Tiles, view: &View, health: &Health) -> Markup {
    let w = view.windows.get(Panel::Charts).as_str();
    let wan = health.sample.as_deref().map(|s| {
        s.interfaces.iter().filter(|i| i.role == Role::Wan).fold(
            (0.0, 0.0, false),
            |(rx, tx, any), i| {
                (
                    rx + i.rx_bytes_per_s.unwrap_or(0.0),
                    tx + i.tx_bytes_per_s.unwrap_or(0.0),
                    any || i.rx_bytes_per_s.is_some(),
                )
            },
        )
    });
    let conntrack = health.sample.as_deref().and_then(|s| s.conntrack);
    let (health_text, health_class) = match (health.write_failing, health.commit_age) {
        (true, _) => ("write failing".to_owned(), "warn"),
        // Red: part of what netmon should see is not seen; the health page says why.
        (false, _) if !health.broken_sources.is_empty() => (
            format!("broken: {}", health.broken_sources.join(", ")),
            "alert",
        ),
        (false, None) => ("starting".to_owned(), ""),
        (false, Some(age)) if age > STALLED_MS => {
            (format!("stalled {}", format::duration(age)), "warn")
        }
        (false, Some(_)) => ("ok".to_owned(), "ok"),
    };
    html! {
        div.tiles.ov aria-label="summary" {
            (tile("/devices", html! { "Devices online" }, html! { (format::count(t.devices_online)) }, "", None))
            (tile("/flows?direction=all", html! { "Active flows · all directions" }, html! { (format::count(t.active_flows)) }, "", Some("tile-active")))
            (tile("/hosts?sort=first_seen", html! { "New hosts · " (w) }, html! { (format::count(t.new_hosts)) }, "", None))
            (tile("/dns", html! { "New domains · " (w) }, html! { (format::count(t.new_domains)) }, "", None))
            @match wan {
                Some((rx, tx, true)) => {
                    (tile("/router", html! { "WAN ↓ / ↑" }, html! {
                        span.down { (rate(rx)) } span.sub { "↑ " span.up { (rate(tx)) } }
                    }, "", None))
                }
                _ => (tile("/router", html! { "WAN ↓ / ↑" }, html! { span.muted { "—" } }, "", None)),
            }
            @match conntrack {
                Some(c) => {
                    (tile("/router", html! { "Conntrack table" }, html! {
                        (format!("{:.0} %", c.fill() * 100.0))
                        span.sub { (format::count(c.count)) " / " (format::count(c.max)) }
                    }, if c.fill() >= CONNTRACK_WARN { "warn" } else { "" }, None))
                }
                None => (tile("/router", html! { "Conntrack table" }, html! { span.muted { "—" } }, "", None)),
            }
            (tile("/incidents", html! { "Open incidents" }, html! { (format::count(t.open_incidents)) },
                if t.open_incidents > 0 { "alert" } else { "" }, None))
            (tile("/settings", html! { "Collector" }, html! {
                (health_text)
                @if health.queue > 0 { span.sub { (health.queue) " queued" } }
            }, health_class, None))
        }
    }
}

/// A link's rate from bytes per second: `9.68 Mbit/s`.
fn rate(bytes_per_s: f64) -> String {
    format::bit_rate(bytes_per_s * 8.0)
}

/// (Long: a maud template: the page's markup reads top to bottom in one piece.)
fn charts(o: &Overview, view: &View, now: i64) -> Markup {
    let range = view.range(now);
    let frame = |label: &'static str, id: &'static str| Frame {
        since_ms: range.since,
        until_ms: range.until,
        bucket_ms: range.bucket_ms,
        label,
        id: Some(id),
        zoom: true,
    };
    let wan: Vec<Bar> = o
        .wan
        .iter()
        .map(|b| Bar {
            minute: b.t,
            up: b.up,
            down: b.down,
        })
        .collect();
    let per = if range.hourly() { "hour" } else { "minute" };
    let flows: Vec<CountBar> = o
        .flows_started
        .iter()
        .map(|b| CountBar {
            minute: b.t,
            total: b.total,
            part: None,
            title: format!("{} new flows", format::count(b.total)),
        })
        .collect();
    let dns: Vec<CountBar> = o
        .dns
        .iter()
        .map(|b| CountBar {
            minute: b.t,
            total: b.total,
            part: b.part,
            title: format!(
                "{} queries, {} NXDOMAIN",
                format::count(b.total),
                format::count(b.part.unwrap_or(0))
            ),
        })
        .collect();
    html! {
        div.chart-head {
            (window_switch(Panel::Charts, view))
            @if let Some((from, to)) = view.zoom {
                span.zoomed { "zoomed: " (format::time(from)) " – " (format::time(to)) " " a href="/" { "reset" } }
            } @else {
                span.muted.hint { "drag across a chart to zoom" }
            }
        }
        div.charts {
            div {
                h2 { "Internet link" }
                (chart::traffic_chart(&wan, &frame("WAN throughput", "chart-wan"), Unit::BitsPerSecond, None))
            }
            div {
                h2 { "New flows" }
                (chart::counts_chart(&flows, &frame("new flows", "chart-flows"),
                    html! { span.legend.q { "new flows per " (per) } }))
            }
            div {
                h2 { "DNS queries" }
                @if range.until - range.since <= DNS_CHART_MAX_MS {
                    (chart::counts_chart(&dns, &frame("DNS queries", "chart-dns"),
                        html! { span.legend.q { "queries" } " " span.legend.nx { "NXDOMAIN" } }))
                } @else {
                    p.muted.note {
                        "DNS is counted per minute only, so its chart covers up to a day: "
                        a href="/?w=24h" { "the last 24 h" } "."
                    }
                }
            }
            div {
                h2 { "Top talkers" }
                (talkers(&o.talkers))
            }
        }
    }
}

/// The flows page filtered by `filter`.
fn flows_href(filter: &FlowFilter) -> String {
    with_query("/flows", &filter.to_query())
}

/// A proportional bar as SVG (the CSP forbids `style=`; `width` is an attribute):
/// received in emerald, sent in amber after it.
fn share_bar(down: i64, up: i64, max: i64) -> Markup {
    let max = max.max(1) as f64;
    let d = (down.max(0) as f64 / max * 100.0 * 10.0).round() / 10.0;
    let u = (up.max(0) as f64 / max * 100.0 * 10.0).round() / 10.0;
    html! {
        svg.share viewBox="0 0 100 6" preserveAspectRatio="none" aria-hidden="true" {
            rect.down x="0" y="0" width=(d) height="6" {}
            rect.up x=(d) y="0" width=(u) height="6" {}
        }
    }
}

fn talkers(rows: &[DeviceTraffic]) -> Markup {
    let max = rows
        .iter()
        .map(|d| d.bytes_up + d.bytes_down)
        .max()
        .unwrap_or(0);
    html! {
        @if rows.is_empty() {
            p.muted { "No device traffic in this range." }
        } @else {
            table.data.bars {
                tbody {
                    @for d in rows {
                        tr {
                            td.label { (device_link(d.device_id, d.label.as_deref())) }
                            td.barcell { (share_bar(d.bytes_down, d.bytes_up, max)) }
                            td.num.mono {
                                a href=(flows_href(&FlowFilter { device_id: Some(d.device_id), ..FlowFilter::default() })) {
                                    (format::bytes(d.bytes_up + d.bytes_down))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn live_flows(page: Option<&FlowPage>, now: i64) -> Markup {
    html! {
        div.panel-head {
            h2 { "Live flows" }
            a href="/flows" { "all flows →" }
        }
        @match page {
            Some(p) if !p.flows.is_empty() => {
                p.count { "newest activity of " strong { (format::count(p.total)) } " active internet flows (the tile above counts LAN and the router's own too)" }
                (flow_table::table(&p.flows, now, None))
            }
            // The tile counts every direction; this table, like the flows page, only
            // internet traffic (router-local DNS and LAN flows are on /flows).
            _ => p.muted { "No active internet flows (router-local and LAN flows are on " a href="/flows?direction=all" { "the flows page" } ")." },
        }
    }
}

fn panel(p: Panel, o: &Overview, view: &View) -> Markup {
    let (title, more, more_href) = match p {
        Panel::Charts => ("Charts", "", "/"),
        Panel::Hosts => ("Top remote hosts", "all hosts →", "/hosts?sort=bytes"),
        Panel::Domains => ("Top domains", "DNS log →", "/dns"),
        Panel::Devices => ("Top devices by upload", "devices →", "/devices"),
        Panel::NewHosts => (
            "Newest remote hosts",
            "all hosts →",
            "/hosts?sort=first_seen",
        ),
        Panel::Ports => ("Rare ports", "all flows →", "/flows"),
    };
    html! {
        div.panel-head {
            h2 { (title) }
            (window_switch(p, view))
            a href=(more_href) { (more) }
        }
        @match p {
            Panel::Hosts => (hosts(&o.hosts)),
            Panel::Domains => (domains(o.domains.0, &o.domains.1)),
            Panel::Devices => (egress(&o.egress)),
            Panel::NewHosts => (new_hosts(&o.new_hosts)),
            Panel::Ports => (ports(&o.ports)),
            Panel::Charts => {},
        }
    }
}

fn empty(what: &str) -> Markup {
    html! { p.muted.empty { "No " (what) " in this window." } }
}

fn hosts(rows: &[HostTraffic]) -> Markup {
    let max = rows
        .iter()
        .map(|h| h.bytes_up + h.bytes_down)
        .max()
        .unwrap_or(0);
    html! {
        @if rows.is_empty() { (empty("remote host traffic")) } @else {
            table.data.top {
                colgroup { col.c-name; col.c-bar; col.c-num; }
                thead { tr { th { "Host" } th { } th.num { "Bytes ↓/↑" } } }
                tbody {
                    @for h in rows {
                        tr {
                            td.mono.name {
                                a href={ "/hosts/" (h.id) } { (h.ip) }
                                @if let Some(n) = h.rdns.as_deref().or(h.org.as_deref()) { span.sub { (n) } }
                            }
                            td.barcell { (share_bar(h.bytes_down, h.bytes_up, max)) }
                            td.num.mono { span.down { (format::bytes(h.bytes_down)) } span.sub.up { (format::bytes(h.bytes_up)) } }
                        }
                    }
                }
            }
        }
    }
}

fn domains(measure: Option<DomainMeasure>, rows: &[DomainUse]) -> Markup {
    let what = match measure {
        Some(DomainMeasure::Flows) => "Flows",
        _ => "Queries",
    };
    html! {
        @if rows.is_empty() { (empty("DNS names")) } @else {
            table.data.top {
                colgroup { col.c-name; col.c-num; }
                thead { tr { th { "Name" } th.num title=[(measure == Some(DomainMeasure::Flows)).then_some("flows to the name over the kept history, for names used in this window")] { (what) } } }
                tbody {
                    @for d in rows {
                        tr {
                            td.mono.name {
                                @if d.name.chars().count() <= crate::web::query::MAX_DOMAIN_FILTER_CHARS {
                                    a href=(flows_href(&FlowFilter { domain: Some(d.name.clone()), show: Show::All, ..FlowFilter::default() })) { (d.name) }
                                } @else { (d.name) }
                            }
                            td.num.mono { (format::count(d.count)) }
                        }
                    }
                }
            }
        }
    }
}

fn egress(rows: &[DeviceTraffic]) -> Markup {
    let max = rows.iter().map(|d| d.bytes_up).max().unwrap_or(0);
    html! {
        @if rows.is_empty() { (empty("uploads")) } @else {
            table.data.top {
                colgroup { col.c-name; col.c-bar; col.c-num; }
                thead { tr { th { "Device" } th { } th.num { "Sent" } } }
                tbody {
                    @for d in rows {
                        tr {
                            td.name { (device_link(d.device_id, d.label.as_deref())) }
                            td.barcell { (share_bar(0, d.bytes_up, max)) }
                            td.num.mono.up { (format::bytes(d.bytes_up)) }
                        }
                    }
                }
            }
        }
    }
}

fn new_hosts(rows: &[NewHost]) -> Markup {
    html! {
        @if rows.is_empty() { (empty("new remote hosts")) } @else {
            table.data.top {
                colgroup { col.c-name; col.c-time; }
                thead { tr { th { "Host" } th { "First seen" } } }
                tbody {
                    @for h in rows {
                        tr {
                            td.mono.name {
                                a href={ "/hosts/" (h.id) } { (h.ip) }
                                @if let Some(n) = h.domain.as_deref().or(h.rdns.as_deref()).or(h.org.as_deref()) {
                                    span.sub { (n) }
                                }
                            }
                            td.mono { (time_ago(h.first_seen)) }
                        }
                    }
                }
            }
        }
    }
}

fn ports(rows: &[PortUse]) -> Markup {
    html! {
        @if rows.is_empty() { (empty("ports")) } @else {
            table.data.top {
                colgroup { col.c-name; col.c-num; col.c-num; col.c-time; }
                thead { tr { th { "Port" } th.num { "Flows" } th.num { "Hosts" } th { "Last used" } } }
                tbody {
                    @for p in rows {
                        tr {
                            td.mono {
                                a href=(flows_href(&FlowFilter { port: Some(p.port), proto: Some(p.proto), show: Show::All, ..FlowFilter::default() })) {
                                    (p.port) "/" (proto_name(p.proto))
                                }
                            }
                            td.num.mono { (format::count(p.flows)) }
                            td.num.mono { (format::count(p.hosts)) }
                            td.mono { (time_ago(p.last_seen)) }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The windows a request with these cookies gets.
    fn from_cookie(headers: &HeaderMap) -> Windows {
        Windows::with(&Windows::remembered(headers))
    }

    fn cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn cookie_is_read_strictly() {
        let w = from_cookie(&cookie("a=b; netmon_w=hosts:24h,ports:30d; x=y"));
        assert_eq!(w.get(Panel::Hosts), Window::H24);
        assert_eq!(w.get(Panel::Ports), Window::D30);
        assert_eq!(w.get(Panel::Domains), Panel::Domains.default_window());
        // Junk keys, values and shapes are ignored, not errors.
        let w = from_cookie(&cookie(
            "netmon_w=hosts:2h,nope:1h,,domains,domains:7d:x,devices:7d",
        ));
        assert_eq!(w.get(Panel::Hosts), Window::H1);
        assert_eq!(w.get(Panel::Domains), Window::H1);
        assert_eq!(w.get(Panel::Devices), Window::D7);
        // Too long: ignored as a whole.
        let long = format!("netmon_w=hosts:24h{}", ",x".repeat(200));
        assert_eq!(from_cookie(&cookie(&long)), Windows::default());
        let round = from_cookie(&cookie(&format!("netmon_w={}", w.cookie_value())));
        assert_eq!(round, w);
    }

    #[test]
    fn a_new_install_starts_at_the_shortest_window_unless_one_was_chosen() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE interface_minutes (interface TEXT, minute INTEGER)")
            .unwrap();
        let now = 1_000 * 60_000;
        let charts = |q: &OverviewQuery, headers: &HeaderMap| {
            View::parse(q, headers, now)
                .unwrap()
                .fit_new_install(&conn, now)
                .unwrap()
                .windows
                .get(Panel::Charts)
        };
        let none = OverviewQuery::default();
        let chosen = OverviewQuery {
            w: Some("1h".into()),
            ..OverviewQuery::default()
        };
        // Nothing recorded yet, then five minutes of it: 10m.
        assert_eq!(charts(&none, &HeaderMap::new()), Window::ALL[0]);
        conn.execute(
            "INSERT INTO interface_minutes VALUES ('wan', ?1)",
            [now - 5 * 60_000],
        )
        .unwrap();
        assert_eq!(charts(&none, &HeaderMap::new()), Window::ALL[0]);
        // Asked for, or remembered: as asked.
        assert_eq!(charts(&chosen, &HeaderMap::new()), Window::H1);
        assert_eq!(charts(&none, &cookie("netmon_w=charts:24h")), Window::H24);
        // Older history: the default.
        conn.execute(
            "INSERT INTO interface_minutes VALUES ('wan', ?1)",
            [now - 30 * 60_000],
        )
        .unwrap();
        assert_eq!(charts(&none, &HeaderMap::new()), Window::H1);
    }

    #[test]
    fn query_overrides_the_cookie_and_bad_values_name_the_parameter() {
        let q = OverviewQuery {
            w_domains: Some("7d".into()),
            ..OverviewQuery::default()
        };
        let v = View::parse(&q, &cookie("netmon_w=hosts:24h"), 1_000_000_000).unwrap();
        assert!(v.chose);
        assert_eq!(v.windows.get(Panel::Hosts), Window::H24);
        assert_eq!(v.windows.get(Panel::Domains), Window::D7);
        let q = OverviewQuery {
            w_ports: Some("5y".into()),
            ..OverviewQuery::default()
        };
        let e = View::parse(&q, &HeaderMap::new(), 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`w_ports`"), "{e}");
        let q = OverviewQuery {
            from: Some("1000".into()),
            ..OverviewQuery::default()
        };
        assert!(View::parse(&q, &HeaderMap::new(), 10_000_000).is_err());
        let q = OverviewQuery {
            from: Some("0".into()),
            to: Some("25200000".into()),
            ..OverviewQuery::default()
        };
        let v = View::parse(&q, &HeaderMap::new(), 10_000_000).unwrap();
        assert_eq!(v.zoom, Some((0, 25_200_000)));
        assert!(v.range(10_000_000).hourly());
        assert!(!v.chose);
    }
}
