//! `/devices` (the LAN devices) and `/devices/{id}` (one device: details, rename form,
//! traffic per minute, DNS — top domains, queries per minute, NXDOMAIN ratio — and
//! recent flows), and the rename action.

use axum::Form;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;

use super::chart::{self, Bar};
use super::format::{self, time};
use super::layout::with_query;
use super::layout::{Nav, page as shell};
use super::{AppState, WebError, dns, flow_table, peers};
use crate::event::Command;
use crate::event::MAX_NOTES_CHARS;
use crate::store;
use crate::store::detect::read::{IncidentFilter, IncidentState};
use crate::store::devices::read::DeviceRow;
use crate::store::dns::read::{DeviceDns, DnsFilter};
use crate::store::filter::Window;
use crate::store::flows::read::{ALL_DIRECTIONS, FlowFilter, Show};
use crate::time::now_ms;
use crate::web::query::MAX_DOMAIN_FILTER_CHARS;

pub async fn list(State(state): State<AppState>) -> Result<Markup, WebError> {
    let devices = state.reads().run(store::devices::read::devices).await?;
    Ok(shell(
        "Devices",
        Nav::Devices,
        false,
        html! {
            h1 { "Devices" }
            @if devices.is_empty() {
                p.muted { "No LAN device has been seen yet." }
            } @else {
                div.scroll {
                    table.data {
                        thead { tr {
                            th { "Device" } th { "Address" } th.opt { "MAC" } th.opt { "Vendor" }
                            th.opt { "First seen" } th { "Last seen" }
                            th.num { "Sent" } th.num { "Received" } th.num.opt { "Flows" }
                        } }
                        tbody {
                            @for d in &devices { (list_row(d)) }
                        }
                    }
                }
                @if devices.len() as u32 >= store::devices::read::MAX_DEVICES {
                    p.muted { "Showing the " (store::devices::read::MAX_DEVICES) " most recently seen." }
                }
            }
        },
    ))
}

fn list_row(d: &DeviceRow) -> Markup {
    html! {
        tr {
            td {
                a href={ "/devices/" (d.id) } { (d.label()) }
                @if let (Some(name), Some(host)) = (&d.name, &d.hostname) {
                    @if !name.is_empty() && name != host { span.sub { (host) } }
                }
            }
            td.mono { (d.ip) }
            td.mono.opt { (d.mac.as_deref().unwrap_or("—")) }
            td.opt { (d.vendor.as_deref().unwrap_or("—")) }
            td.mono.opt { (time(d.first_seen)) }
            td.mono { (time(d.last_seen)) }
            td.num.mono.up { (format::bytes(d.bytes_up)) }
            td.num.mono.down { (format::bytes(d.bytes_down)) }
            td.num.mono.opt { (format::count(d.flows)) }
        }
    }
}

/// `?window=<minutes>` of the traffic chart on device and host pages.
#[derive(Debug, Default, Deserialize)]
pub struct WindowQuery {
    pub window: Option<String>,
}

/// Chart windows offered as links; any value from 1 to 1440 minutes is accepted.
pub const WINDOWS: [(i64, &str); 4] = [(60, "1 h"), (360, "6 h"), (720, "12 h"), (1440, "24 h")];
const DEFAULT_WINDOW: i64 = 60;

/// The window of a device's top domains: a day shows its habits, not just this hour.
const TOP_DOMAINS_WINDOW_MS: i64 = 24 * 60 * 60_000;

/// "1 h", "6 h", …, or minutes for a window not offered as a link.
fn window_label(minutes: i64) -> String {
    WINDOWS.iter().find(|(m, _)| *m == minutes).map_or_else(
        || format!("{minutes} min"),
        |(_, label)| (*label).to_owned(),
    )
}

/// The window in minutes. A day at most: minute bars past that are thinner than a pixel.
pub fn parse_window(q: &WindowQuery) -> Result<i64, WebError> {
    match q.window.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(DEFAULT_WINDOW),
        Some(s) => s.parse::<i64>().ok().filter(|m| (1..=1440).contains(m)).ok_or_else(|| {
            WebError::BadRequest(format!(
                "invalid query parameter `window` = {s:?}: expected a number of minutes from 1 to 1440"
            ))
        }),
    }
}

/// The filter behind a device or host page's "recent flows": every direction (its
/// DNS and LAN traffic matter here), live and ended, latest first.
pub fn recent_filter() -> FlowFilter {
    FlowFilter {
        show: Show::All,
        directions: ALL_DIRECTIONS.to_vec(),
        ..FlowFilter::default()
    }
}

/// Links to the other chart windows.
pub fn window_links(base: &str, current: i64) -> Markup {
    html! {
        nav.switch aria-label="chart window" {
            @for (minutes, label) in WINDOWS {
                a href={ (base) "?window=" (minutes) } aria-current=[(minutes == current).then_some("true")] { (label) }
            }
        }
    }
}

/// (Long: a maud template: the page's markup reads top to bottom in one piece.)
pub async fn page(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    query: Result<Query<WindowQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let Path(id) = id?;
    let window = parse_window(&query?.0)?;
    let now = now_ms();
    let since = now - window * 60_000;
    let (data, peers) = state
        .reads()
        .run(move |c| {
            let Some(page) = store::devices::read::device_page(
                c,
                id,
                &recent_filter(),
                since,
                now - TOP_DOMAINS_WINDOW_MS,
            )?
            else {
                return Ok(None);
            };
            Ok(Some((page, device_peers(c, id, now)?)))
        })
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no device with id {id}")))?;
    // The detector's usual upload for this device, drawn over its traffic chart.
    let baseline = state
        .reads()
        .run(move |c| crate::store::overview::egress_baseline(c, id))
        .await?;
    let d = &data.device;
    let bars: Vec<Bar> = data
        .minutes
        .iter()
        .map(|m| Bar {
            minute: m.minute,
            up: m.bytes_up,
            down: m.bytes_down,
        })
        .collect();
    let full_view = FlowFilter {
        device_id: Some(id),
        ..recent_filter()
    };
    Ok(shell(
        &d.label(),
        Nav::Devices,
        false,
        html! {
            h1 { (d.label()) }
            section.cols {
                dl.facts {
                    dt { "Address" } dd.mono { (d.ip) }
                    dt { "MAC" } dd.mono { (d.mac.as_deref().unwrap_or("—")) }
                    dt { "DHCP hostname" } dd { (d.hostname.as_deref().unwrap_or("—")) }
                    @if let Some(v) = &d.vendor { dt { "Vendor" } dd { (v) } }
                    dt { "First seen" } dd.mono { (time(d.first_seen)) }
                    dt { "Last seen" } dd.mono { (time(d.last_seen)) }
                    dt { "Sent" } dd.mono.up { (format::bytes(d.bytes_up)) }
                    dt { "Received" } dd.mono.down { (format::bytes(d.bytes_down)) }
                    dt { "Flows" } dd.mono { (format::count(d.flows)) }
                    @if let Some((what, at)) = &d.encrypted_dns {
                        dt { "DNS" }
                        dd.encrypted-dns {
                            span.code title="ENCRYPTED_DNS: informational, never scored" { "ENCRYPTED_DNS" }
                            " uses " (what) " (last " (time(*at)) "): "
                            @if what.starts_with("DNS-over") {
                                "its lookups are encrypted, so its flows are named by their TLS \
                                 server names only"
                            } @else {
                                "its lookups bypass the router's resolver"
                            }
                        }
                    }
                }
                div {
                    form.rename method="post" action={ "/devices/" (id) "/name" } {
                        (super::layout::csrf_field())
                        label {
                            span { "Name" }
                            input type="text" name="name" maxlength=(MAX_NAME_CHARS) size="24"
                                placeholder=(d.hostname.as_deref().unwrap_or(&d.ip))
                                value=[d.name.as_deref()];
                        }
                        button type="submit" { "Rename" }
                        p.muted { "An empty name clears it." }
                    }
                    form.notes method="post" action={ "/devices/" (id) "/notes" } {
                        (super::layout::csrf_field())
                        label {
                            span { "Notes" }
                            textarea name="notes" rows="3" cols="32" maxlength=(MAX_NOTES_CHARS) {
                                (d.notes.as_deref().unwrap_or(""))
                            }
                        }
                        button type="submit" { "Save notes" }
                    }
                }
            }
            @if data.addrs.len() > 1 {
                h2 { "Addresses" }
                table.data.narrow {
                    thead { tr { th { "Address" } th { "First seen" } th { "Last seen" } } }
                    tbody {
                        @for a in &data.addrs {
                            tr { td.mono { (a.ip) } td.mono { (time(a.first_seen)) } td.mono { (time(a.last_seen)) } }
                        }
                    }
                }
            }
            h2 { "Traffic" }
            (window_links(&format!("/devices/{id}"), window))
            (chart::traffic_chart(&bars, &chart::Frame {
                since_ms: since,
                until_ms: now,
                bucket_ms: 60_000,
                label: &format!("traffic of {} per minute", d.label()),
                id: Some("device-traffic"),
                zoom: false,
            }, chart::Unit::BytesPerBucket, baseline.as_ref()))
            details {
                summary { "Per-minute table (" (data.minutes.len()) " minutes with traffic)" }
                div.scroll {
                    table.data {
                        thead { tr {
                            th { "Minute" } th.num { "Received" } th.num { "Sent" }
                            th.num { "Packets ↓/↑" } th.num { "New flows" }
                            th.num { "Hosts" } th.num { "Ports" }
                        } }
                        tbody {
                            @for m in data.minutes.iter().rev() {
                                tr {
                                    td.mono { (time(m.minute)) }
                                    td.num.mono.down { (format::bytes(m.bytes_down)) }
                                    td.num.mono.up { (format::bytes(m.bytes_up)) }
                                    td.num.mono { (m.packets_down) " / " (m.packets_up) }
                                    td.num.mono { (m.flows_new) }
                                    td.num.mono { (m.unique_dsts) }
                                    td.num.mono { (m.unique_ports) }
                                }
                            }
                        }
                    }
                }
            }
            (peers::device_sections(id, &peers, now))
            h2 { "DNS" }
            (dns_section(id, &d.label(), &data.dns, window, since, now))
            h2 { "Recent flows" }
            (flow_table::recent(&data.flows, &full_view, now))
        },
    ))
}

/// The device's destinations and ports of the last day, and its latest incidents.
fn device_peers(
    c: &rusqlite::Connection,
    id: i64,
    now: i64,
) -> rusqlite::Result<peers::DevicePeers> {
    let since = now - peers::WINDOW_MS;
    let filter = IncidentFilter {
        device_id: Some(id),
        state: IncidentState::All,
        window: Window::D30,
        per_page: 10,
        ..IncidentFilter::default()
    };
    Ok(peers::DevicePeers {
        hosts: store::peers::device_top_hosts(c, id, since)?,
        ports: store::peers::device_top_ports(c, id, since)?,
        incidents: store::detect::read::incidents(c, &filter, now)?.incidents,
    })
}

/// Queries per minute and the NXDOMAIN ratio over the chart window, and the names the
/// device asked for most over the last day, each linked to its queries in the DNS log.
fn dns_section(id: i64, label: &str, dns: &DeviceDns, window: i64, since: i64, now: i64) -> Markup {
    let (queries, nxdomain) = dns.totals();
    let log_of = |name: Option<&str>| {
        let f = DnsFilter {
            device_id: Some(id),
            name: name.map(str::to_owned),
            ..DnsFilter::default()
        };
        with_query("/dns", &f.to_query())
    };
    html! {
        p.count #dns-totals {
            strong { (format::count(queries)) } " queries in the last " (window_label(window)) " · NXDOMAIN "
            strong #nxdomain-ratio { (format::ratio(nxdomain, queries)) }
            @if queries > 0 { " (" (format::count(nxdomain)) " of " (format::count(queries)) ")" }
            " · " a href=(log_of(None)) { "DNS log of this device" }
        }
        (dns::queries_chart(&dns.minutes, since, now, &format!("DNS queries of {label} per minute")))
        h3 { "Top domains · 24 h" }
        @if dns.top_domains.is_empty() {
            p.muted { "No DNS query seen in the last 24 hours." }
        } @else {
            div.scroll {
                table.data.narrow.top-domains {
                    thead { tr { th { "Name" } th.num { "Queries" } th { "Last seen" } } }
                    tbody {
                        @for t in &dns.top_domains {
                            tr {
                                td.mono.name {
                                    @if t.name.chars().count() <= MAX_DOMAIN_FILTER_CHARS {
                                        a href=(log_of(Some(&t.name))) title="this device's queries for it" { (t.name) }
                                    } @else {
                                        (t.name)
                                    }
                                }
                                td.num.mono { (format::count(t.queries)) }
                                td.mono { (time(t.last_seen)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Longest device name accepted (characters). Long enough for "Grandma's tablet
/// (living room)", short enough to keep tables readable.
pub const MAX_NAME_CHARS: usize = 64;

#[derive(Debug, Deserialize)]
pub struct RenameForm {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct NotesForm {
    pub notes: String,
}

/// `POST /devices/{id}/notes`: like [`rename`], for the owner's notes (several lines;
/// tabs and line breaks are the only control characters kept).
pub async fn notes(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<NotesForm>, FormRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    let Form(form) = form?;
    let notes = form.notes.trim().replace("\r\n", "\n");
    if notes.chars().count() > MAX_NOTES_CHARS {
        return Err(WebError::BadRequest(format!(
            "invalid form field `notes`: at most {MAX_NOTES_CHARS} characters"
        )));
    }
    if notes
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(WebError::BadRequest(
            "invalid form field `notes`: control characters are not allowed".into(),
        ));
    }
    state
        .shared
        .writer
        .command(Command::SetDeviceNotes {
            device_id: id,
            notes,
        })
        .await
        .map_err(WebError::command("notes not saved"))?;
    Ok(Redirect::to(&format!("/devices/{id}")))
}

/// `POST /devices/{id}/name`: the writer applies the rename and commits; then 303 back
/// to the device page (POST-redirect-GET, so a reload does not post again).
pub async fn rename(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<RenameForm>, FormRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    let Form(form) = form?;
    let name = form.name.trim().to_owned();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(WebError::BadRequest(format!(
            "invalid form field `name`: at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(WebError::BadRequest(
            "invalid form field `name`: control characters are not allowed".into(),
        ));
    }
    let exists = state
        .reads()
        .run(move |c| store::devices::read::device(c, id))
        .await?
        .is_some();
    if !exists {
        return Err(WebError::NotFound(format!("no device with id {id}")));
    }
    state
        .shared
        .writer
        .command(Command::RenameDevice {
            device_id: id,
            name,
        })
        .await
        .map_err(WebError::command("rename not saved"))?;
    Ok(Redirect::to(&format!("/devices/{id}")))
}
