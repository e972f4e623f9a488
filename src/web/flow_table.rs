//! The flows table: rendered on the `/flows` page, on device and host pages, and alone
//! as `/fragment/flows` — the fragment the script swaps in after a commit that touched
//! flows. One template for all, so the live view and a page load are identical.

use axum::extract::{RawQuery, State};
use maud::{Markup, html};

use super::format::{self, time_opt};
use super::layout::{device_link, numbered_pager, with_query};
use super::{AppState, WebError};
use crate::flow::proto_name;
use crate::store;
use crate::store::filter::Order;
use crate::store::flows::read::{FlowColumn, FlowFilter, FlowPage, FlowRow, FlowSort, Show};
use crate::time::now_ms;
use crate::web::query::{MAX_DOMAIN_FILTER_CHARS, parse_flow_filter};

/// `GET /fragment/flows?<flows page query>`: the flows panel alone, no page shell.
pub async fn fragment(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Markup, WebError> {
    let filter = parse_flow_filter(query)?;
    let f = filter.clone();
    let page = state
        .reads()
        .run(move |c| store::flows::read::flows(c, &f))
        .await?;
    Ok(panel(&filter, &page, now_ms()))
}

/// Where the flow search page lives: sort and page links of the interactive table,
/// and every "these flows" link on other pages, go there. (`/` serves the same page
/// until the overview takes it; links never point at `/` so they survive that.)
pub const FLOWS_PAGE: &str = "/flows";

/// The flows page's table with its count line, sortable headers and pager.
pub fn panel(filter: &FlowFilter, page: &FlowPage, now: i64) -> Markup {
    let what = match filter.show {
        Show::Active => "active flows",
        Show::All => "flows",
        Show::Ended => "ended flows",
    };
    let total = if page.capped {
        format!("{}+", format::count(page.total))
    } else {
        format::count(page.total)
    };
    html! {
        p.count {
            @if page.flows.is_empty() {
                "No " (what) " match."
                @if page.total > 0 { " (page " (page.page) " is past the end)" }
            } @else if page.last && page.capped {
                "The last " (page.flows.len()) " of " strong { (total) } " " (what)
            } @else {
                @let first = u64::from(page.page - 1) * u64::from(page.per_page) + 1;
                (format::count(first)) "–" (format::count(first + page.flows.len() as u64 - 1))
                " of " strong { (total) } " " (what)
            }
            " · "
            a href=(with_query(CSV_EXPORT, &FlowFilter { page: 1, last_page: false, ..filter.clone() }.to_query()))
                download title={ "at most " (format::count(u64::from(store::flows::read::EXPORT_MAX_ROWS))) " rows" }
            { "CSV" }
        }
        (table(&page.flows, now, Some(filter)))
        @if page.pages() > 1 || page.capped || page.page > 1 {
            (numbered_pager(page.page, page.pages(), page.capped, page.last, |p| {
                with_query(FLOWS_PAGE, &filter.with_page(p).to_query())
            }, &with_query(FLOWS_PAGE, &filter.with_last_page().to_query())))
        }
    }
}

/// The CSV export of the flows page's filter.
pub const CSV_EXPORT: &str = "/api/flows.csv";

/// A column header that sorts by `key` when `sorting` is given.
fn sort_header(label: &str, key: FlowSort, sorting: Option<&FlowFilter>, class: &str) -> Markup {
    html! {
        th class=(class) {
            @match sorting {
                Some(f) => {
                    @let arrow = if f.sort == key {
                        match f.order { Order::Asc => " ▲", Order::Desc => " ▼" }
                    } else { "" };
                    a href=(with_query(FLOWS_PAGE, &f.with_sort(key).to_query()))
                        aria-sort=[(f.sort == key).then_some(match f.order {
                            Order::Asc => "ascending",
                            Order::Desc => "descending",
                        })]
                    { (label) (arrow) }
                }
                None => { (label) }
            }
        }
    }
}

/// The table itself. `sorting`: the current filter, to make headers sort links and to
/// choose the columns (every column without one).
pub fn table(rows: &[FlowRow], now: i64, sorting: Option<&FlowFilter>) -> Markup {
    let all = FlowColumn::ALL;
    let cols: &[FlowColumn] = sorting.map_or(&all[..], |f| &f.columns);
    html! {
        div.scroll {
            table.data.flows {
                thead {
                    tr {
                        @for c in cols { (header(*c, sorting)) }
                    }
                }
                tbody {
                    @for f in rows { (row(f, now, sorting, cols)) }
                }
            }
        }
    }
}

fn header(c: FlowColumn, sorting: Option<&FlowFilter>) -> Markup {
    let label = c.label();
    match c {
        FlowColumn::Dst => sort_header(label, FlowSort::Dst, sorting, ""),
        FlowColumn::Bytes => sort_header(label, FlowSort::Bytes, sorting, "num"),
        FlowColumn::Age => sort_header(label, FlowSort::Age, sorting, "num opt"),
        FlowColumn::LastSeen => sort_header(label, FlowSort::LastSeen, sorting, ""),
        FlowColumn::Dir | FlowColumn::State => html! { th.opt { (label) } },
        FlowColumn::Score => html! { th.num { (label) } },
        _ => html! { th { (label) } },
    }
}

fn row(f: &FlowRow, now: i64, sorting: Option<&FlowFilter>, cols: &[FlowColumn]) -> Markup {
    html! {
        tr.ended[f.ended_at.is_some()] id={ "flow-" (f.id) } {
            @for c in cols { (cell(f, *c, now, sorting)) }
        }
    }
}

fn cell(f: &FlowRow, c: FlowColumn, now: i64, sorting: Option<&FlowFilter>) -> Markup {
    // The remote peer is the destination of an outbound flow and the source of an
    // inbound one; link whichever it is to its host page.
    let remote_is_src = f.direction == "inbound";
    let host_href = f.remote_host_id.map(|id| format!("/hosts/{id}"));
    match c {
        FlowColumn::Device => html! {
            td {
                @match f.device_id {
                    Some(id) => (device_link(id, f.device_name.as_deref())),
                    None => span.muted { "—" },
                }
            }
        },
        FlowColumn::Src => html! {
            td.mono {
                (endpoint(&f.src_ip, f.src_port, host_href.as_deref().filter(|_| remote_is_src)))
                @if remote_is_src { (rdns(f)) }
            }
        },
        FlowColumn::Domain => html! { td.domain { (domain(f, sorting)) } },
        FlowColumn::Dst => html! {
            td.mono {
                (endpoint(&f.dst_ip, f.dst_port, host_href.as_deref().filter(|_| !remote_is_src)))
                // DNAT (port forward, transparent proxy): who really answered.
                @if f.reply_src_ip != f.dst_ip {
                    span.sub { "→ " (format::endpoint(&f.reply_src_ip, f.reply_src_port)) }
                }
                @if !remote_is_src { (rdns(f)) }
            }
        },
        FlowColumn::Proto => html! {
            td.mono {
                (proto_name(f.proto))
                @if let (Some(t), Some(c)) = (f.icmp_type, f.icmp_code) {
                    span.sub { "type " (t) "/" (c) }
                }
            }
        },
        FlowColumn::Dir => html! {
            td.opt { span class={ "dir dir-" (f.direction) } { (f.direction) } }
        },
        FlowColumn::State => html! {
            td.opt.mono {
                @if let Some(ended) = f.ended_at {
                    span.badge.ended title={ "ended " (format::utc_text(ended)) } { "ended" }
                } @else {
                    (f.state.as_deref().unwrap_or("live"))
                }
            }
        },
        FlowColumn::Score => html! {
            td.num.mono {
                @match f.score {
                    Some(score) => a href={ "/anomalies?window=30d&dst=" (f.dst_ip) } title="highest score of this flow's detection hits" { (score) },
                    None => span.muted { "—" },
                }
            }
        },
        FlowColumn::Bytes => html! {
            td.num.mono {
                span.up title={ (f.bytes_up) " bytes, " (f.packets_up) " packets sent" } {
                    (format::bytes(f.bytes_up))
                }
                " / "
                span.down title={ (f.bytes_down) " bytes, " (f.packets_down) " packets received" } {
                    (format::bytes(f.bytes_down))
                }
            }
        },
        FlowColumn::Age => html! {
            td.num.opt.mono title={ "started " (format::utc_text(f.first_seen)) } {
                (format::duration(f.ended_at.unwrap_or(now) - f.first_seen))
            }
        },
        FlowColumn::LastSeen => html! { td.mono { (time_opt(Some(f.last_seen))) } },
    }
}

fn endpoint(ip: &str, port: Option<u16>, href: Option<&str>) -> Markup {
    let text = format::endpoint(ip, port);
    html! {
        @match href {
            Some(href) => a href=(href) { (text) },
            None => (text),
        }
    }
}

/// The name the flow's device asked for, linked to the flows of that domain, with a
/// marker when the match is less than exact and the CNAME target below. Names are
/// attacker-chosen text: they only ever go through maud's escaping.
fn domain(f: &FlowRow, sorting: Option<&FlowFilter>) -> Markup {
    let Some(name) = &f.domain else {
        return html! { span.muted { "—" } };
    };
    html! {
        @match domain_href(name, sorting) {
            Some(href) => a.name href=(href) { (name) },
            None => span.name { (name) },
        }
        (confidence(f.dns_match))
        @if let Some(canonical) = f.domain_canonical.as_deref().filter(|c| *c != name.as_str()) {
            span.sub.name title="canonical name (end of the CNAME chain)" { "→ " (canonical) }
        }
    }
}

/// The flows view filtered to `name` and its subdomains, keeping the rest of the
/// current filter (or, from a device or host page, every flow). `None` for a name too
/// long to be a filter (escaped bytes can make one).
pub fn domain_href(name: &str, sorting: Option<&FlowFilter>) -> Option<String> {
    if name.chars().count() > MAX_DOMAIN_FILTER_CHARS {
        return None;
    }
    let base = sorting.cloned().unwrap_or_else(|| FlowFilter {
        show: Show::All,
        ..FlowFilter::default()
    });
    let target = FlowFilter {
        domain: Some(name.to_owned()),
        page: 1,
        last_page: false,
        ..base
    };
    Some(with_query(FLOWS_PAGE, &target.to_query()))
}

/// A small marker for a domain that is a guess, with a title saying why.
fn confidence(dns_match: &str) -> Markup {
    let why = match dns_match {
        "stale" => {
            "stale: this device resolved the name to this address, but that answer had \
             expired (TTL) when the flow started"
        }
        "other-client" => {
            "other client: another device resolved the name to this address; this device's \
             own lookup was not seen"
        }
        "sni" => {
            "TLS name: the device named this server in its TLS handshake (SNI); no DNS answer \
             this router saw gave the address (encrypted DNS, or a cached address)"
        }
        _ => return html! {},
    };
    let mark = if dns_match == "sni" { "TLS" } else { "?" };
    html! {
        span class={ "dns-conf " (dns_match) } title=(why) aria-label=(why) { (mark) }
    }
}

fn rdns(f: &FlowRow) -> Markup {
    html! {
        @if let Some(name) = &f.remote_rdns {
            span.sub.rdns { (name) }
        }
    }
}

/// A short read-only table of recent flows (device and host pages), with a link to the
/// full, filterable view on the `/flows` page.
pub fn recent(page: &FlowPage, full_view: &FlowFilter, now: i64) -> Markup {
    let all = FlowFilter {
        page: 1,
        last_page: false,
        ..full_view.clone()
    };
    html! {
        p.count {
            (format::count(page.total)) @if page.capped { "+" } " flows · "
            a href=(with_query(FLOWS_PAGE, &all.to_query())) { "open in the flows view" }
        }
        (table(&page.flows, now, None))
        @if page.flows.is_empty() { p.muted { "None recorded." } }
        @else if page.total > page.flows.len() as u64 { p.muted { "Latest " (page.flows.len()) " shown." } }
    }
}
