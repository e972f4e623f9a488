//! `/hosts` (internet peers of outbound and inbound flows) and `/hosts/{id}` (one host:
//! the domains it was reached as, ports contacted, traffic per minute, recent flows).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use maud::{Markup, html};

use super::chart::{self, Bar};
use super::devices::{WindowQuery, parse_window, recent_filter, window_links};
use super::format::{self, time};
use super::layout::{Nav, device_link, page as shell, pager, with_query};
use super::{AppState, WebError, flow_table, peers};
use crate::flow::proto_name;
use crate::store;
use crate::store::filter::{MAX_PAGE, Order};
use crate::store::flows::read::FlowFilter;
use crate::store::hosts::read::{HostDomain, HostFilter, HostSort};
use crate::time::now_ms;

/// (Long: a maud template: the page's markup reads top to bottom in one piece.)
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<crate::web::query::HostQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let filter = HostFilter::parse(&query?.0)?;
    let f = filter.clone();
    let page = state
        .reads()
        .run(move |c| store::hosts::read::remote_hosts(c, &f))
        .await?;
    let header = |label: &str, key: HostSort, class: &str| {
        let arrow = match (filter.sort == key, filter.order) {
            (true, Order::Asc) => " ▲",
            (true, Order::Desc) => " ▼",
            _ => "",
        };
        html! {
            th class=(class) {
                a href=(with_query("/hosts", &filter.with_sort(key).to_query())) { (label) (arrow) }
            }
        }
    };
    Ok(shell(
        "Remote hosts",
        Nav::Hosts,
        false,
        html! {
            h1 { "Remote hosts" }
            form.filters method="get" action="/hosts" {
                label {
                    span { "Search" }
                    input type="search" name="q" size="24" placeholder="address prefix, name or domain"
                        value=[filter.q.as_deref()];
                }
                @if filter.sort != HostSort::LastSeen || filter.order != Order::Desc {
                    input type="hidden" name="sort" value=(filter.sort.as_str());
                    input type="hidden" name="order" value=(filter.order.as_str());
                }
                button type="submit" { "Search" }
                a.clear href="/hosts" { "clear" }
            }
            p.count { (format::counted(page.total, "host", "hosts")) }
            div.scroll {
                table.data {
                    thead { tr {
                        th { "Address · domain" } th { "Reverse DNS" } th.opt { "AS / org" }
                        (header("First seen", HostSort::FirstSeen, "opt"))
                        (header("Last seen", HostSort::LastSeen, ""))
                        (header("Bytes ↑/↓", HostSort::Bytes, "num"))
                        (header("Flows", HostSort::Flows, "num opt"))
                    } }
                    tbody {
                        @for h in &page.hosts {
                            tr {
                                td.mono {
                                    a href={ "/hosts/" (h.id) } { (h.ip) }
                                    @if let Some(name) = &h.top_domain {
                                        span.sub.name title="the name most flows reached it as" { (name) }
                                    }
                                }
                                td.mono { (h.rdns.as_deref().unwrap_or("—")) }
                                td.opt { (as_org(h.asn, h.org.as_deref())) }
                                td.mono.opt { (time(h.first_seen)) }
                                td.mono { (time(h.last_seen)) }
                                td.num.mono {
                                    span.up { (format::bytes(h.bytes_up)) } " / "
                                    span.down { (format::bytes(h.bytes_down)) }
                                }
                                td.num.mono.opt { (format::count(h.flows)) }
                            }
                        }
                    }
                }
            }
            @if page.pages() > 1 {
                (pager(page.page, page.pages().min(MAX_PAGE), |p| {
                    with_query("/hosts", &filter.with_page(p).to_query())
                }))
            }
        },
    ))
}

fn as_org(asn: Option<i64>, org: Option<&str>) -> String {
    match (asn, org) {
        (Some(a), Some(o)) => format!("AS{a} {o}"),
        (Some(a), None) => format!("AS{a}"),
        (None, Some(o)) => o.to_owned(),
        (None, None) => "—".to_owned(),
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
    let data = state
        .reads()
        .run(move |c| {
            let Some(page) = store::hosts::read::remote_host_page(c, id, &recent_filter(), since)?
            else {
                return Ok(None);
            };
            let devices = store::peers::host_devices(c, id, now - peers::WINDOW_MS)?;
            Ok(Some((page, devices)))
        })
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no remote host with id {id}")))?;
    let (data, devices) = data;
    let h = &data.host;
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
        remote_host_id: Some(id),
        ..recent_filter()
    };
    Ok(shell(
        &h.ip,
        Nav::Hosts,
        false,
        html! {
            h1.mono { (h.ip) }
            section.cols {
                dl.facts {
                    dt { "Domain" } dd.mono.name { (h.top_domain.as_deref().unwrap_or("—")) }
                    dt { "Reverse DNS" } dd.mono { (h.rdns.as_deref().unwrap_or("—")) }
                    dt { "AS / org" } dd { (as_org(h.asn, h.org.as_deref())) }
                    dt { "First seen" } dd.mono { (time(h.first_seen)) }
                    dt { "Last seen" } dd.mono { (time(h.last_seen)) }
                    dt { "Sent to it" } dd.mono.up { (format::bytes(h.bytes_up)) }
                    dt { "Received from it" } dd.mono.down { (format::bytes(h.bytes_down)) }
                    dt { "Flows" } dd.mono { (format::count(h.flows)) }
                }
                div {
                    h2 { "Ports" }
                    @if data.ports.is_empty() {
                        p.muted { "None recorded." }
                    } @else {
                        table.data.narrow {
                            thead { tr {
                                th { "Port" } th.num { "Flows" } th.opt { "First seen" } th { "Last seen" }
                            } }
                            tbody {
                                @for p in &data.ports {
                                    tr {
                                        td.mono { (p.port) "/" (proto_name(p.proto)) }
                                        td.num.mono { (format::count(p.flows)) }
                                        td.mono.opt { (time(p.first_seen)) }
                                        td.mono { (time(p.last_seen)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (peers::host_devices(&devices))
            @if let Some(snippet) = block_snippet(&h.ip) {
                details.block #block-host {
                    summary { "Block this host on the router" }
                    p.muted {
                        "Run on the router. The " code { "nft" } " rule takes effect at once and is gone "
                        "at the next firewall reload; the " code { "uci" } " rule is the permanent form."
                    }
                    pre.snippet { (snippet) }
                }
            }
            h2 { "Domains" }
            (domains(id, &data.domains))
            h2 { "Traffic" }
            (window_links(&format!("/hosts/{id}"), window))
            (chart::minutes_chart(&bars, since, now, &format!("traffic with {} per minute", h.ip)))
            details {
                summary { "Per-minute table (" (data.minutes.len()) " minutes with traffic)" }
                div.scroll {
                    table.data {
                        thead { tr {
                            th { "Minute" } th.num { "Received" } th.num { "Sent" }
                            th.num { "Packets ↓/↑" } th.num { "New flows" } th.num { "Devices" }
                        } }
                        tbody {
                            @for m in data.minutes.iter().rev() {
                                tr {
                                    td.mono { (time(m.minute)) }
                                    td.num.mono.down { (format::bytes(m.bytes_down)) }
                                    td.num.mono.up { (format::bytes(m.bytes_up)) }
                                    td.num.mono { (m.packets_down) " / " (m.packets_up) }
                                    td.num.mono { (m.flows_new) }
                                    td.num.mono { (m.unique_devices) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Recent flows" }
            (flow_table::recent(&data.flows, &full_view, now))
        },
    ))
}

/// Commands that stop LAN devices reaching `ip`: an nftables rule for fw4's `forward`
/// chain and the OpenWrt firewall rule (uci) that survives reloads. `None` unless `ip`
/// is an address (it is text from the database; the snippet must be a valid command).
///
/// `insert`, not `add`: fw4's `forward` chain accepts established traffic and jumps to
/// the zone chains (which accept LAN → WAN) before anything appended would be reached;
/// inserted first, the rule also cuts connections already open.
pub fn block_snippet(ip: &str) -> Option<String> {
    let addr: std::net::IpAddr = ip.parse().ok()?;
    let (nft_family, uci_family) = match addr {
        std::net::IpAddr::V4(_) => ("ip", "ipv4"),
        std::net::IpAddr::V6(_) => ("ip6", "ipv6"),
    };
    Some(format!(
        "# nftables (fw4), until the next firewall reload:\n\
         nft insert rule inet fw4 forward {nft_family} daddr {addr} counter drop\n\
         \n\
         # OpenWrt firewall, permanent:\n\
         uci add firewall rule\n\
         uci set firewall.@rule[-1].name='netmon: block {addr}'\n\
         uci set firewall.@rule[-1].src='lan'\n\
         uci set firewall.@rule[-1].dest='wan'\n\
         uci set firewall.@rule[-1].dest_ip='{addr}'\n\
         uci set firewall.@rule[-1].family='{uci_family}'\n\
         uci set firewall.@rule[-1].proto='all'\n\
         uci set firewall.@rule[-1].target='DROP'\n\
         uci commit firewall\n\
         /etc/init.d/firewall reload\n"
    ))
}

/// The names LAN devices reached the host as, each linked to the flows it names here.
fn domains(id: i64, domains: &[HostDomain]) -> Markup {
    let flows_of = |name: &str| {
        let base = FlowFilter {
            remote_host_id: Some(id),
            ..recent_filter()
        };
        flow_table::domain_href(name, Some(&base))
    };
    html! {
        @if domains.is_empty() {
            p.muted { "No DNS answer has named this address (yet)." }
        } @else {
            div.scroll {
                table.data.narrow {
                    thead { tr {
                        th { "Name" } th.num { "Flows" } th.opt { "First seen" } th { "Last seen" }
                        th { "Last device" }
                    } }
                    tbody {
                        @for d in domains {
                            tr {
                                td.mono.name {
                                    @match flows_of(&d.name) {
                                        Some(href) => a href=(href) { (d.name) },
                                        None => (d.name),
                                    }
                                }
                                td.num.mono { (format::count(d.flows)) }
                                td.mono.opt { (time(d.first_seen)) }
                                td.mono { (time(d.last_seen)) }
                                td {
                                    @match d.last_device_id {
                                        Some(dev) => (device_link(dev, d.last_device_label.as_deref())),
                                        None => span.muted { "—" },
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if domains.len() as u32 >= store::hosts::read::MAX_HOST_DOMAINS {
                p.muted { "The " (store::hosts::read::MAX_HOST_DOMAINS) " busiest shown." }
            }
        }
    }
}
