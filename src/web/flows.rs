//! `/flows` (and `/` until the overview takes it): the summary tiles and the live flows table with its filter form.
//!
//! The filter form is a plain GET form and every sort/page link carries the whole
//! filter, so any view is a link to share; "clear" is a link to `/flows`.

use axum::extract::{RawQuery, State};
use maud::{Markup, html};

use super::layout::{Nav, page as shell, with_query};
use super::{AppState, WebError, flow_table, format, saved};
use crate::detect::Code;
use crate::flow::proto_name;
use crate::store;
use crate::store::flows::read::{
    ALL_DIRECTIONS, DEFAULT_DIRECTIONS, FlowColumn, FlowFilter, FlowsPage, Show,
};
use crate::time::now_ms;
use crate::web::query::{MAX_DOMAIN_FILTER_CHARS, directions_param};

/// The window of the summary tiles.
const WINDOW_MS: i64 = 60 * 60_000;

pub async fn page(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Markup, WebError> {
    let filter = super::query::parse_flow_filter(query)?;
    let now = now_ms();
    let f = filter.clone();
    let data = state
        .reads()
        .run(move |c| store::flows::read::flows_page(c, &f, now - WINDOW_MS))
        .await?;
    Ok(render(&filter, &data, now))
}

fn render(filter: &FlowFilter, data: &FlowsPage, now: i64) -> Markup {
    let s = &data.summary;
    let fragment = with_query("/fragment/flows", &filter.to_query());
    shell(
        "Flows",
        Nav::Flows,
        true,
        html! {
            section.tiles aria-label="summary" {
                div.tile {
                    span.label title="every connection the router tracks: internet, LAN and the router's own" { "Active flows · all directions" }
                    span.value #tile-active { (s.active_flows) }
                }
                div.tile {
                    span.label { "Devices seen · 1 h" }
                    span.value { (format::count(s.devices_seen)) }
                }
                div.tile {
                    span.label { "New remote hosts · 1 h" }
                    span.value { (format::count(s.remote_hosts_new)) }
                }
                div.tile.up {
                    span.label { "Sent · 1 h" }
                    span.value { (format::bytes(s.bytes_up)) }
                }
                div.tile.down {
                    span.label { "Received · 1 h" }
                    span.value { (format::bytes(s.bytes_down)) }
                }
            }
            (show_switch(filter))
            (filter_form(filter, data))
            (saved::save_form(&with_query(flow_table::FLOWS_PAGE, &FlowFilter { page: 1, ..filter.clone() }.to_query())))
            section #flows-live data-src=(fragment) aria-live="off" {
                (flow_table::panel(filter, &data.flows, now))
            }
        },
    )
}

/// Active / all / ended as links (the "include ended" toggle), keeping the rest.
fn show_switch(filter: &FlowFilter) -> Markup {
    html! {
        nav.switch aria-label="flow lifetime" {
            @for (show, label) in [(Show::Active, "Active"), (Show::All, "Active + ended"), (Show::Ended, "Ended")] {
                @let target = FlowFilter { show, ..filter.with_page(1) };
                a href=(with_query(flow_table::FLOWS_PAGE, &target.to_query()))
                    aria-current=[(filter.show == show).then_some("true")] { (label) }
            }
        }
    }
}

/// The filter form above the table. Over 80 lines: one maud template that reads top to
/// bottom as the form appears on the page.
///
/// (Long: a maud template: the page's markup reads top to bottom in one piece.)
fn filter_form(filter: &FlowFilter, data: &FlowsPage) -> Markup {
    let dir_value = directions_param(&filter.directions);
    let default_dirs = filter.directions == DEFAULT_DIRECTIONS;
    let known_dir = default_dirs
        || filter.directions.len() == 1
        || filter.directions.len() == ALL_DIRECTIONS.len();
    let device_known = filter
        .device_id
        .is_none_or(|id| data.devices.iter().any(|d| d.id == id));
    let protos: [u8; 4] = [6, 17, 1, 58];
    let proto_known = filter.proto.is_none_or(|p| protos.contains(&p));
    html! {
        form.filters method="get" action=(flow_table::FLOWS_PAGE) {
            @if filter.show != Show::Active {
                input type="hidden" name="show" value=(filter.show.as_str());
            }
            label {
                span { "Device" }
                select name="device" {
                    option value="" { "any" }
                    @for d in &data.devices {
                        option value=(d.id) selected[filter.device_id == Some(d.id)] { (d.label()) }
                    }
                    @if !device_known {
                        @if let Some(id) = filter.device_id {
                            option value=(id) selected { "a removed device" }
                        }
                    }
                }
            }
            label {
                span { "Source" }
                input type="search" name="src" size="16" placeholder="IP or prefix"
                    value=[filter.src.as_ref().map(|m| m.as_str())];
            }
            label {
                span { "Destination" }
                input type="search" name="dst" size="16" placeholder="IP or prefix"
                    value=[filter.dst.as_ref().map(|m| m.as_str())];
            }
            label {
                span { "Domain" }
                input type="search" name="domain" size="20" maxlength=(MAX_DOMAIN_FILTER_CHARS)
                    placeholder="example.com" title="this domain and its subdomains"
                    value=[filter.domain.as_deref()];
            }
            label {
                span { "Port" }
                input type="text" name="port" size="5" inputmode="numeric" pattern="[0-9]*"
                    value=[filter.port];
            }
            label {
                span { "Proto" }
                select name="proto" {
                    option value="" { "any" }
                    @for p in protos {
                        option value=(proto_name(p)) selected[filter.proto == Some(p)] { (proto_name(p)) }
                    }
                    @if !proto_known {
                        @if let Some(p) = filter.proto {
                            option value=(p) selected { (proto_name(p)) }
                        }
                    }
                }
            }
            label {
                span { "Direction" }
                select name="direction" {
                    option value="" selected[default_dirs] { "internet (out + in)" }
                    @for d in ALL_DIRECTIONS {
                        option value=(d.as_str()) selected[filter.directions == [d]] { (d.as_str()) }
                    }
                    option value="all" selected[filter.directions.len() == ALL_DIRECTIONS.len()] { "all" }
                    @if !known_dir {
                        option value=(dir_value) selected { (dir_value) }
                    }
                }
            }
            label {
                span { "State" }
                input type="text" name="state" size="11" placeholder="ESTABLISHED"
                    title="TCP state: ESTABLISHED, SYN_SENT, TIME_WAIT, …"
                    value=[filter.state];
            }
            label {
                span { "Min score" }
                input type="text" name="min_score" size="3" inputmode="numeric" pattern="[0-9]*"
                    title="flows with a detection hit scoring at least this (0-100)"
                    value=[filter.min_score];
            }
            label {
                span { "Reason" }
                select name="code" {
                    option value="" { "any" }
                    @for c in Code::ALL {
                        option value=(c.as_str()) selected[filter.code == Some(c)] { (c.as_str()) }
                    }
                }
            }
            label {
                span { "From" }
                input type="text" name="from" size="17" placeholder="1h, or a time" data-local-time
                    title="active at or after: an age (30m, 1h, 7d) or a date and time in your time zone (2026-12-04 21:00)"
                    value=[filter.from.as_ref().map(|t| t.as_str())];
            }
            label {
                span { "To" }
                input type="text" name="to" size="17" placeholder="now" data-local-time
                    title="started at or before: an age (30m, 1h, 7d) or a date and time in your time zone (2026-12-04 21:00); empty: now"
                    value=[filter.to.as_ref().map(|t| t.as_str())];
            }
            label {
                span { "Min bytes" }
                input type="text" name="min_bytes" size="8" placeholder="10M"
                    title="up + down, e.g. 500k, 10M, 2GiB"
                    value=[filter.min_bytes];
            }
            fieldset.cols {
                legend { "Columns" }
                @for c in FlowColumn::ALL {
                    label {
                        input type="checkbox" name="cols" value=(c.as_str())
                            checked[filter.columns.contains(&c)];
                        " " (c.label())
                    }
                }
            }
            // Keep what the form has no field for.
            @if let Some(id) = filter.remote_host_id {
                input type="hidden" name="host" value=(id);
            }
            @let d = FlowFilter::default();
            @if filter.sort != d.sort || filter.order != d.order {
                input type="hidden" name="sort" value=(filter.sort.as_str());
                input type="hidden" name="order" value=(filter.order.as_str());
            }
            @if filter.per_page != d.per_page {
                input type="hidden" name="per_page" value=(filter.per_page);
            }
            button type="submit" { "Filter" }
            a.clear href=(flow_table::FLOWS_PAGE) { "clear" }
        }
    }
}
