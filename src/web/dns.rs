//! `/dns`: the DNS log, Pi-hole style — every query a LAN client made, newest first,
//! filterable by device, client address, name (with subdomains), type and response
//! code; and the queries-per-minute chart device pages show.
//!
//! Names are attacker-chosen text (any printable ASCII, `\DDD` for the rest): they only
//! ever reach the page through maud's escaping, and links carry them percent-encoded.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use maud::{Markup, html};

use super::chart::{self, CountBar};
use super::format::{self, time};
use super::layout::{Nav, device_link, device_select, page as shell, pager, with_query};
use super::saved;
use super::{AppState, WebError, flow_table};
use crate::dns_name::{qtype_name, rcode_name};
use crate::store;
use crate::store::dns::read::{DnsFilter, DnsLog, DnsMinute, DnsRow, RcodeMatch};
use crate::store::filter::MAX_PAGE;
use crate::web::query::MAX_DOMAIN_FILTER_CHARS;

const DNS: &str = "/dns";

/// `GET /dns?device=&client=&name=&type=&rcode=&page=&per_page=`.
pub async fn page(
    State(state): State<AppState>,
    query: Result<Query<crate::web::query::DnsQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let filter = DnsFilter::parse(&query?.0)?;
    let f = filter.clone();
    let data = state
        .reads()
        .run(move |c| store::dns::read::dns_log(c, &f))
        .await?;
    Ok(render(&filter, &data))
}

fn render(filter: &DnsFilter, data: &DnsLog) -> Markup {
    let page = &data.queries;
    let first = u64::from(page.page - 1) * u64::from(page.per_page) + 1;
    let last = first + page.queries.len() as u64 - 1;
    shell(
        "DNS",
        Nav::Dns,
        false,
        html! {
            h1 { "DNS queries" }
            (filter_form(filter, data))
            (saved::save_form(&with_query(DNS, &filter.with_page(1).to_query())))
            p.count {
                @if page.queries.is_empty() {
                    "No queries match."
                    @if page.total > 0 { " (page " (page.page) " is past the end)" }
                } @else {
                    (format::count(first)) "–" (format::count(last)) " of "
                    strong { (format::count(page.total)) } " queries, newest first"
                }
            }
            div.scroll {
                table.data.dns {
                    thead { tr {
                        th { "Time" } th { "Client" } th { "Name" } th { "Type" } th { "Status" }
                        th.num.opt { "Answers" } th.opt { "Canonical name" } th.opt { "Seen in" }
                    } }
                    tbody {
                        @for q in &page.queries { (row(q)) }
                    }
                }
            }
            @if page.pages() > 1 {
                (pager(page.page, page.pages().min(MAX_PAGE), |p| {
                    with_query(DNS, &filter.with_page(p).to_query())
                }))
            }
        },
    )
}

fn row(q: &DnsRow) -> Markup {
    let by_client = DnsFilter {
        client: Some(store::filter::AddrMatch::Exact(q.client.clone())),
        ..DnsFilter::default()
    };
    let client_href = with_query(DNS, &by_client.to_query());
    html! {
        tr id={ "dns-" (q.id) } {
            td.mono { (time(q.ts)) }
            td {
                @match (q.device_id, &q.device_name) {
                    (Some(id), name) => {
                        (device_link(id, name.as_deref()))
                        a.sub.mono href=(client_href) title="this client's queries" { (q.client) }
                    }
                    (None, _) => a.mono href=(client_href) title="this client's queries" { (q.client) },
                }
            }
            td.mono.name {
                @match &q.name {
                    Some(name) => @match flow_table::domain_href(name, None) {
                        Some(href) => a href=(href) title="flows to this domain" { (name) },
                        None => (name),
                    },
                    None => span.muted { "?" },
                }
            }
            td.mono { (qtype_name(q.qtype)) }
            td.mono { (status(q.rcode)) }
            td.num.mono.opt { (q.answers) }
            td.mono.name.opt {
                @match &q.canonical {
                    Some(c) => (c),
                    None => span.muted { "—" },
                }
            }
            td.opt.muted { (q.source.label()) }
        }
    }
}

/// The response code as text, coloured by class; "no answer" when none was seen.
fn status(rcode: Option<u16>) -> Markup {
    match rcode {
        Some(code) => {
            let name = rcode_name(code);
            html! { span class={ "rcode rcode-" (name.to_ascii_lowercase()) } { (name) } }
        }
        None => html! {
            span.rcode.rcode-none title="the query was seen, its answer was not" { "no answer" }
        },
    }
}

/// Query types offered in the menu; any other is accepted as typed (`TYPE65`).
const TYPES: [u16; 10] = [1, 28, 65, 5, 15, 16, 12, 33, 64, 255];

/// Response codes offered in the menu.
const RCODES: [(RcodeMatch, &str); 5] = [
    (RcodeMatch::Code(0), "NOERROR"),
    (RcodeMatch::Code(3), "NXDOMAIN"),
    (RcodeMatch::Code(2), "SERVFAIL"),
    (RcodeMatch::Code(5), "REFUSED"),
    (RcodeMatch::Unanswered, "no answer"),
];

fn filter_form(filter: &DnsFilter, data: &DnsLog) -> Markup {
    let type_known = filter.qtype.is_none_or(|t| TYPES.contains(&t));
    let rcode_known = filter
        .rcode
        .is_none_or(|r| RCODES.iter().any(|(k, _)| *k == r));
    html! {
        form.filters method="get" action=(DNS) {
            (device_select(&data.devices, filter.device_id))
            label {
                span { "Client" }
                input type="search" name="client" size="16" placeholder="IP or prefix"
                    value=[filter.client.as_ref().map(|m| m.as_str())];
            }
            label {
                span { "Name" }
                input type="search" name="name" size="24" maxlength=(MAX_DOMAIN_FILTER_CHARS)
                    placeholder="example.com" title="this name and its subdomains"
                    value=[filter.name.as_deref()];
            }
            label {
                span { "Type" }
                select name="type" {
                    option value="" { "any" }
                    @for t in TYPES {
                        option value=(qtype_name(t)) selected[filter.qtype == Some(t)] { (qtype_name(t)) }
                    }
                    @if !type_known {
                        @if let Some(t) = filter.qtype {
                            option value=(qtype_name(t)) selected { (qtype_name(t)) }
                        }
                    }
                }
            }
            label {
                span { "Status" }
                select name="rcode" {
                    option value="" { "any" }
                    @for (r, label) in RCODES {
                        option value=(r.as_param()) selected[filter.rcode == Some(r)] { (label) }
                    }
                    @if !rcode_known {
                        @if let Some(r) = filter.rcode {
                            option value=(r.as_param()) selected { (r.as_param()) }
                        }
                    }
                }
            }
            @if filter.per_page != DnsFilter::default().per_page {
                input type="hidden" name="per_page" value=(filter.per_page);
            }
            button type="submit" { "Filter" }
            a.clear href=(DNS) { "clear" }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Queries per minute
// ---------------------------------------------------------------------------------------

/// Queries per minute over `[since_ms, until_ms)` ([`chart::count_chart`]): each bar a
/// minute's queries, its NXDOMAIN part on top. Minutes without a row are gaps (no query
/// was seen).
pub fn queries_chart(minutes: &[DnsMinute], since_ms: i64, until_ms: i64, label: &str) -> Markup {
    let bars: Vec<CountBar> = minutes
        .iter()
        .map(|m| CountBar {
            minute: m.minute,
            total: m.queries,
            part: Some(m.nxdomain),
            title: format!(
                "{}: {} queries, {} NXDOMAIN, {} names",
                format::utc_text(m.minute),
                m.queries,
                m.nxdomain,
                m.names
            ),
        })
        .collect();
    let legend = html! { span.legend.q { "queries" } " " span.legend.nx { "NXDOMAIN" } };
    chart::count_chart(&bars, since_ms, until_ms, label, None, legend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_stacks_nxdomain_on_queries() {
        let since = 1_714_568_400_000; // 13:00 UTC
        let minutes = [
            DnsMinute {
                minute: since + 60_000,
                queries: 8,
                nxdomain: 2,
                names: 3,
            },
            DnsMinute {
                minute: since - 60_000, // before the window: left out
                queries: 99,
                nxdomain: 0,
                names: 1,
            },
        ];
        let svg = queries_chart(&minutes, since, since + 60 * 60_000, "q").into_string();
        assert_eq!(svg.matches("<rect class=\"q\"").count(), 1);
        assert_eq!(svg.matches("<rect class=\"nx\"").count(), 1);
        assert!(svg.contains("8 queries, 2 NXDOMAIN, 3 names"), "{svg}");
        // Max 8: steps of 2, the top gridline labelled 8.
        assert!(
            svg.contains(">8</text>") && !svg.contains(">10</text>"),
            "{svg}"
        );
        assert!(svg.contains("13:10"), "{svg}");
    }
}
