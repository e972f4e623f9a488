//! `/anomalies`: the scored hits (DESIGN §3 "Detection"), filterable by window, score,
//! code, device, acknowledgement and destination, sortable by time, score and count;
//! the "don't flag this" and "mute this for this device" actions that turn a hit into a
//! rule; `/api/hits`.
//!
//! Evidence, domains and device names are text others chose (a DHCP hostname, a DNS
//! name): they reach the page only through maud's escaping.

use axum::Form;
use axum::Json;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;

use super::api::ApiError;
use super::format::{self, time};
use super::help::meaning_text;
use super::layout::{
    Nav, code_select, csrf_field, device_select, page as shell, pager, with_query,
};
use super::saved;
use super::{AppState, WebError};
use crate::detect::Code;
use crate::detect::rules::{Action, RuleSpec};
use crate::event::{Command, CommandReply};
use crate::store;
use crate::store::detect::read::{AckState, Destination, HitFilter, HitPage, HitRow, HitSort};
use crate::store::devices::read::DeviceRow;
use crate::store::filter::MAX_PAGE;
use crate::store::filter::Window;
use crate::time::now_ms;
use crate::web::query::HitQuery;
use crate::web::query::MAX_DOMAIN_FILTER_CHARS;

const ANOMALIES: &str = "/anomalies";

/// `GET /anomalies?window=&min_score=&code=&device=&ack=&dst=&sort=&order=&page=&per_page=`.
pub async fn page(
    State(state): State<AppState>,
    query: Result<Query<HitQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let filter = HitFilter::parse(&query?.0)?;
    let f = filter.clone();
    let now = now_ms();
    let (hits, devices) = state
        .reads()
        .run(move |c| {
            Ok((
                store::detect::read::hits(c, &f, now)?,
                store::devices::read::devices(c)?,
            ))
        })
        .await?;
    Ok(render(&filter, &hits, &devices))
}

/// `GET /api/hits`, same parameters: `{total, page, per_page, hits: [...]}`; each hit
/// has `id`, `ts` and `last_ts` (first and latest occurrence, unix ms), `count`,
/// `device_id`, `device` (its name), `flow_id`, `remote_host_id`, `remote_ip`,
/// `proto`, `dport`, `domain`, `score`, `codes`, `reasons` (`[{code, weight,
/// evidence}]`), `alertable`, `incident_id` and `acked_at` (null while open).
pub async fn api(
    State(state): State<AppState>,
    query: Result<Query<HitQuery>, QueryRejection>,
) -> Result<Json<HitPage>, ApiError> {
    let filter = HitFilter::parse(&query?.0)?;
    let now = now_ms();
    let page = state
        .reads()
        .run(move |c| store::detect::read::hits(c, &filter, now))
        .await?;
    Ok(Json(page))
}

fn render(filter: &HitFilter, page: &HitPage, devices: &[DeviceRow]) -> Markup {
    let back = with_query(ANOMALIES, &filter.to_query());
    let first = u64::from(page.page - 1) * u64::from(page.per_page) + 1;
    let last = first + page.hits.len() as u64 - 1;
    shell(
        "Anomalies",
        Nav::Anomalies,
        false,
        html! {
            h1 { "Anomalies" }
            (filter_form(filter, devices))
            (saved::save_form(&with_query(ANOMALIES, &filter.with_page(1).to_query())))
            p.count {
                @if page.hits.is_empty() {
                    "No hits match."
                    @if page.total > 0 { " (page " (page.page) " is past the end)" }
                } @else {
                    (format::count(first)) "–" (format::count(last)) " of "
                    strong { (format::counted(page.total, "hit", "hits")) }
                }
                " · " a href="/help#codes" { "what the codes mean" }
            }
            div.scroll {
                table.data.hits {
                    thead { tr {
                        th { (sort_link(filter, HitSort::Time, "Time")) }
                        th { "Device" } th { "Destination" } th { "Port" }
                        th.num { (sort_link(filter, HitSort::Score, "Score")) }
                        th.num { (sort_link(filter, HitSort::Count, "Count")) }
                        th { "Codes" } th { "Evidence" } th { "Incident" } th { "Actions" }
                    } }
                    tbody {
                        @for h in &page.hits { (row(h, &back)) }
                    }
                }
            }
            @if page.pages() > 1 {
                (pager(page.page, page.pages().min(MAX_PAGE), |p| {
                    with_query(ANOMALIES, &filter.with_page(p).to_query())
                }))
            }
        },
    )
}

fn sort_link(filter: &HitFilter, key: HitSort, label: &str) -> Markup {
    let current = filter.sort == key;
    html! {
        a href=(with_query(ANOMALIES, &filter.sorted_by(key).to_query()))
            aria-sort=[current.then_some(if filter.desc { "descending" } else { "ascending" })] {
            (label)
            @if current { (if filter.desc { " ↓" } else { " ↑" }) }
        }
    }
}

fn row(h: &HitRow, back: &str) -> Markup {
    html! {
        tr.acked[h.acked_at.is_some()] id={ "hit-" (h.id) } {
            td.mono {
                (time(h.last_ts))
                @if h.count > 1 { span.sub { "first " (time(h.ts)) } }
            }
            td { a href={ "/devices/" (h.device_id) } { (h.device) } }
            td.mono.name { (destination(h.remote_host_id, h.remote_ip.as_deref(), h.domain.as_deref())) }
            td.mono { (port_proto(h.dport, h.proto)) }
            td.num { (score_badge(h.score)) }
            td.num.mono { (format::count(h.count)) }
            td { (codes(&h.codes)) }
            td.evidence { (evidence(&h.reasons)) }
            td {
                @match h.incident_id {
                    Some(id) => a href={ "/incidents/" (id) } { "#" (id) },
                    None => span.muted { "—" },
                }
                @if h.acked_at.is_some() { span.sub { "acknowledged" } }
            }
            td.actions { (hit_actions(h, back)) }
        }
    }
}

/// A remote host as a link to its page: the domain when known, with the address under it.
pub fn destination(host_id: Option<i64>, ip: Option<&str>, domain: Option<&str>) -> Markup {
    let main = domain.or(ip);
    html! {
        @match (main, host_id) {
            (Some(text), Some(id)) => a href={ "/hosts/" (id) } { (text) },
            (Some(text), None) => (text),
            (None, _) => span.muted title="a device-level hit: no single destination" { "—" },
        }
        @if let (Some(_), Some(ip)) = (domain, ip) { span.sub { (ip) } }
    }
}

pub fn port_proto(port: Option<u16>, proto: Option<u8>) -> Markup {
    html! {
        @match (port, proto) {
            (Some(port), Some(proto)) => { (port) "/" (crate::flow::proto_name(proto)) },
            (None, Some(proto)) => (crate::flow::proto_name(proto)),
            (Some(port), None) => (port),
            (None, None) => span.muted { "—" },
        }
    }
}

/// A score 0–100, coloured: ≥ 70 high, ≥ 40 medium, below low.
pub fn score_badge(score: i64) -> Markup {
    let level = match score {
        70.. => "score-high",
        40..=69 => "score-mid",
        _ => "score-low",
    };
    html! { span class={ "score " (level) } { (score) } }
}

/// Codes as links to their explanation.
pub fn codes(codes: &[String]) -> Markup {
    html! {
        span.codes {
            @for c in codes {
                a.code href={ "/help#" (c) } title=(code_meaning_text(c)) { (c) }
            }
        }
    }
}

fn code_meaning_text(code: &str) -> String {
    Code::parse(code).map_or_else(String::new, meaning_text)
}

fn evidence(reasons: &[store::detect::read::StoredReason]) -> Markup {
    html! {
        ul.evidence {
            @for r in reasons {
                li { span.mono { (r.code) " +" (r.weight) } ": " (r.evidence) }
            }
        }
    }
}

/// "don't flag this" and "mute for this device" (both POST forms, back to `back`).
pub fn hit_actions(h: &HitRow, back: &str) -> Markup {
    let allow_what = h.domain.as_deref().or(h.remote_ip.as_deref());
    html! {
        @if let Some(what) = allow_what {
            form.inline method="post" action={ "/hits/" (h.id) "/allow" } {
                (csrf_field())
                button type="submit" title={ "never score " (what) " for " (h.device) " again" } { "don't flag this" }
            }
        }
        form.inline method="post" action={ "/hits/" (h.id) "/mute" } {
            (csrf_field())
            input type="hidden" name="back" value=(back);
            button.secondary type="submit" title={ "suppress " (h.codes.join(", ")) " for " (h.device) } { "mute for this device" }
        }
    }
}

fn filter_form(filter: &HitFilter, devices: &[DeviceRow]) -> Markup {
    html! {
        form.filters method="get" action=(ANOMALIES) {
            label {
                span { "Window" }
                select name="window" {
                    @for window in Window::ALL {
                        option value=(window.as_str()) selected[filter.window == window] { (window.as_str()) }
                    }
                }
            }
            label {
                span { "Min score" }
                input type="number" name="min_score" min="0" max="100" size="4"
                    value=[filter.min_score];
            }
            (code_select(filter.code))
            (device_select(devices, filter.device_id))
            label {
                span { "State" }
                select name="ack" {
                    @for (state, label) in [(AckState::All, "all"), (AckState::Open, "not acknowledged"), (AckState::Acked, "acknowledged")] {
                        option value=(state.as_str()) selected[filter.ack == state] { (label) }
                    }
                }
            }
            label {
                span { "Destination" }
                input type="search" name="dst" size="22" maxlength=(MAX_DOMAIN_FILTER_CHARS)
                    placeholder="IP or domain" title="a remote address, or a domain and its subdomains"
                    value=[filter.dst.as_ref().map(|d| match d {
                        Destination::Ip(ip) => ip.to_string(),
                        Destination::Domain(name) => name.clone(),
                    })];
            }
            @if filter.sort != HitSort::Time { input type="hidden" name="sort" value=(filter.sort.as_str()); }
            @if !filter.desc { input type="hidden" name="order" value="asc"; }
            @if filter.per_page != HitFilter::default().per_page {
                input type="hidden" name="per_page" value=(filter.per_page);
            }
            button type="submit" { "Filter" }
            a.clear href=(ANOMALIES) { "clear" }
        }
    }
}

/// The form of the hit and incident actions: where to go afterwards.
#[derive(Debug, Default, Deserialize)]
pub struct BackForm {
    pub back: Option<String>,
}

/// `POST /hits/{id}/allow`: an allow rule for the hit's domain (when known) or remote
/// address, for the hit's device; open incidents are re-checked. 303 to the new rule.
pub async fn allow(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    let hit = load_hit(&state, id).await?;
    let mut rule = RuleSpec {
        action: Action::Allow,
        device_id: Some(hit.device_id),
        notes: format!("allowed from hit {id}"),
        ..RuleSpec::default()
    };
    match (
        &hit.domain,
        hit.remote_ip
            .as_deref()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok()),
    ) {
        (Some(domain), _) => rule.domain = Some(domain.clone()),
        (None, Some(ip)) => rule.remote = Some(ipnet::IpNet::from(ip)),
        (None, None) => {
            return Err(WebError::BadRequest(format!(
                "hit {id} has no single destination to allow; add a rule on /rules instead"
            )));
        }
    }
    let rule_id = save_rule(&state, rule, true).await?;
    Ok(Redirect::to(&format!("/rules#rule-{rule_id}")))
}

/// `POST /hits/{id}/mute` (form `back`): a suppress rule per code of the hit, for its
/// device and — when the hit has one — its destination. 303 back.
pub async fn mute(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<BackForm>, FormRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    let Form(form) = form?;
    let hit = load_hit(&state, id).await?;
    let codes: Vec<Code> = hit.codes.iter().filter_map(|c| Code::parse(c)).collect();
    if codes.is_empty() {
        return Err(WebError::BadRequest(format!(
            "hit {id} has no codes to mute"
        )));
    }
    let remote = match &hit.domain {
        Some(_) => None,
        None => hit
            .remote_ip
            .as_deref()
            .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
            .map(ipnet::IpNet::from),
    };
    let last = codes.len() - 1;
    for (i, code) in codes.into_iter().enumerate() {
        let rule = RuleSpec {
            action: Action::Suppress,
            code: Some(code),
            device_id: Some(hit.device_id),
            remote,
            domain: hit.domain.clone(),
            notes: format!("muted from hit {id}"),
            ..RuleSpec::default()
        };
        // Re-checking open incidents once, after the last rule, is enough.
        save_rule(&state, rule, i == last).await?;
    }
    Ok(Redirect::to(&super::login::safe_next(
        form.back.as_deref().or(Some(ANOMALIES)),
    )))
}

async fn load_hit(state: &AppState, id: i64) -> Result<HitRow, WebError> {
    state
        .reads()
        .run(move |c| store::detect::read::hit(c, id))
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no hit with id {id}")))
}

/// Saves a rule through the writer; its id.
pub async fn save_rule(
    state: &AppState,
    rule: RuleSpec,
    reevaluate: bool,
) -> Result<i64, WebError> {
    let reply = state
        .shared
        .writer
        .command(Command::SaveRule {
            id: None,
            rule: Box::new(rule),
            reevaluate,
        })
        .await
        .map_err(WebError::command("rule not saved"))?;
    match reply {
        CommandReply::Id(id) => Ok(id),
        CommandReply::Done => Err(WebError::Internal(anyhow::anyhow!(
            "the writer saved a rule without saying its id"
        ))),
    }
}
