//! `/incidents` (grouped alertable hits: filter, sort, acknowledge, clear),
//! `/incidents/{id}` (one incident explained: its reasons and what each code means, the
//! timeline of its hits, the flows and DNS answers behind them; acknowledge, mute,
//! notes), `/api/incidents`, and the "Alerts: N" badge every page shows.
//!
//! Every action is a POST form with the CSRF token that the writer applies
//! ([`Command::AckIncident`] …); then 303 back (POST-redirect-GET).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Form;
use axum::Json;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::anomalies::{BackForm, codes, destination, hit_actions, port_proto, score_badge};
use super::api::ApiError;
use super::format::{self, time};
use super::help::meaning;
use super::layout::{
    Nav, code_select, csrf_field, device_select, page as shell, pager, with_query,
};
use super::saved;
use super::{AppState, WebError};
use crate::detect::Code;
use crate::event::Command;
use crate::event::MAX_NOTES_CHARS;
use crate::store;
use crate::store::detect::read::{
    HitRow, IncidentDetail, IncidentFilter, IncidentPage, IncidentRow, IncidentSort, IncidentState,
};
use crate::store::devices::read::DeviceRow;
use crate::store::filter::MAX_PAGE;
use crate::store::filter::Window;
use crate::time::now_ms;
use crate::web::query::IncidentQuery;

const INCIDENTS: &str = "/incidents";

// ---------------------------------------------------------------------------------------
// The badge
// ---------------------------------------------------------------------------------------

tokio::task_local! {
    /// The current page's "Alerts: N" ([`badge`]); unset outside it.
    static OPEN_ALERTS: Option<u64>;
}

/// Open incidents (neither acknowledged nor muted) for the page being rendered; `None`
/// when not known (not a page, or the count failed).
pub fn open_alerts() -> Option<u64> {
    OPEN_ALERTS.try_with(|n| *n).ok().flatten()
}

/// The badge's count, cached per writer commit: pages cost no query while nothing was
/// committed, and at most one indexed count per commit otherwise.
#[derive(Default)]
pub struct AlertCount {
    cached: Mutex<Option<Cached>>,
}

#[derive(Clone, Copy)]
struct Cached {
    /// The commit ([`crate::event::Tick::seq`]) it was counted after.
    seq: u64,
    at: Instant,
    count: u64,
}

/// Mutes run out without a commit; a count is re-taken after this long regardless.
const ALERTS_MAX_AGE: Duration = Duration::from_secs(30);

impl AppState {
    async fn open_incidents(&self) -> Option<u64> {
        let seq = self.shared.ticks.borrow().seq;
        let lock = || {
            self.shared
                .alerts
                .cached
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        let cached = *lock();
        if let Some(c) = cached.filter(|c| c.seq == seq && c.at.elapsed() < ALERTS_MAX_AGE) {
            return Some(c.count);
        }
        let now = now_ms();
        match self
            .reads()
            .run(move |c| store::detect::read::open_incidents(c, now))
            .await
        {
            Ok(count) => {
                *lock() = Some(Cached {
                    seq,
                    at: Instant::now(),
                    count,
                });
                Some(count)
            }
            Err(e) => {
                log::warn!("web: counting open incidents: {e:#}");
                None
            }
        }
    }
}

/// Middleware: counts open incidents for full pages (not the API, fragments, assets,
/// the event stream or the login page) and makes the count available to the layout.
pub async fn badge(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let page = request.method() == Method::GET
        && !["/api/", "/fragment/", "/assets/"]
            .iter()
            .any(|p| path.starts_with(p))
        && !["/events", "/metrics", "/healthz", "/login"].contains(&path);
    let count = if page {
        state.open_incidents().await
    } else {
        None
    };
    OPEN_ALERTS.scope(count, next.run(request)).await
}

// ---------------------------------------------------------------------------------------
// The list
// ---------------------------------------------------------------------------------------

/// `GET /incidents?window=&state=&code=&device=&min_score=&sort=&order=&page=&per_page=`.
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<IncidentQuery>, QueryRejection>,
) -> Result<Markup, WebError> {
    let filter = IncidentFilter::parse(&query?.0)?;
    let f = filter.clone();
    let now = now_ms();
    let (page, devices) = state
        .reads()
        .run(move |c| {
            Ok((
                store::detect::read::incidents(c, &f, now)?,
                store::devices::read::devices(c)?,
            ))
        })
        .await?;
    Ok(render_list(&filter, &page, &devices, now))
}

/// `GET /api/incidents`, same parameters: `{total, page, per_page, incidents: [...]}`;
/// each incident has `id`, `device_id`, `device`, `remote_ip`, `proto`, `dport`,
/// `codes`, `title`, `first_seen`, `last_seen` (unix ms), `count`, `max_score`,
/// `acked_at`, `muted_until` and `notes`.
pub async fn api(
    State(state): State<AppState>,
    query: Result<Query<IncidentQuery>, QueryRejection>,
) -> Result<Json<IncidentPage>, ApiError> {
    let filter = IncidentFilter::parse(&query?.0)?;
    let now = now_ms();
    let page = state
        .reads()
        .run(move |c| store::detect::read::incidents(c, &filter, now))
        .await?;
    Ok(Json(page))
}

fn render_list(
    filter: &IncidentFilter,
    page: &IncidentPage,
    devices: &[DeviceRow],
    now: i64,
) -> Markup {
    let back = with_query(INCIDENTS, &filter.to_query());
    shell(
        "Incidents",
        Nav::Incidents,
        false,
        html! {
            h1 { "Incidents" }
            (filter_form(filter, devices))
            (saved::save_form(&with_query(INCIDENTS, &filter.with_page(1).to_query())))
            div.bulk {
                form.inline method="post" action="/incidents/ack-all" {
                    (csrf_field())
                    button type="submit" title="acknowledge every incident not yet acknowledged" { "Acknowledge all" }
                }
                form.inline method="post" action="/incidents/clear-acked" {
                    (csrf_field())
                    button.secondary type="submit" title="delete acknowledged incidents and their hits" { "Clear acknowledged" }
                }
            }
            p.count {
                @if page.incidents.is_empty() {
                    "No incidents match."
                    @if page.total > 0 { " (page " (page.page) " is past the end)" }
                } @else {
                    strong { (format::counted(page.total, "incident", "incidents")) }
                }
            }
            div.scroll {
                table.data.incidents {
                    thead { tr {
                        th { (sort_link(filter, IncidentSort::Last, "Last seen")) }
                        th.opt { (sort_link(filter, IncidentSort::First, "First seen")) }
                        th { "Device" } th { "Incident" } th { "Codes" }
                        th.num { (sort_link(filter, IncidentSort::Count, "Hits")) }
                        th.num { (sort_link(filter, IncidentSort::Score, "Score")) }
                        th { "State" } th { "" }
                    } }
                    tbody {
                        @for i in &page.incidents {
                            tr.acked[i.acked_at.is_some()] id={ "incident-" (i.id) } {
                                td.mono { (time(i.last_seen)) }
                                td.mono.opt { (time(i.first_seen)) }
                                td { a href={ "/devices/" (i.device_id) } { (i.device) } }
                                td { a href={ "/incidents/" (i.id) } { (i.title) } }
                                td { (codes(&i.codes)) }
                                td.num.mono { (format::count(i.count)) }
                                td.num { (score_badge(i.max_score)) }
                                td { (state_text(i, now)) }
                                td.actions {
                                    @if i.acked_at.is_none() {
                                        (ack_form(i.id, &back))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if page.pages() > 1 {
                (pager(page.page, page.pages().min(MAX_PAGE), |p| {
                    with_query(INCIDENTS, &filter.with_page(p).to_query())
                }))
            }
        },
    )
}

fn state_text(i: &IncidentRow, now: i64) -> Markup {
    html! {
        @if let Some(at) = i.acked_at {
            span.state.acked { "acknowledged" } span.sub { (time(at)) }
        } @else if i.muted(now) {
            span.state.muted { "muted" } span.sub { "until " (super::format::time_opt(i.muted_until)) }
        } @else {
            span.state.open { "open" }
        }
    }
}

fn ack_form(id: i64, back: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/incidents/" (id) "/ack" } {
            (csrf_field())
            input type="hidden" name="back" value=(back);
            button type="submit" { "Acknowledge" }
        }
    }
}

fn sort_link(filter: &IncidentFilter, key: IncidentSort, label: &str) -> Markup {
    let current = filter.sort == key;
    html! {
        a href=(with_query(INCIDENTS, &filter.sorted_by(key).to_query()))
            aria-sort=[current.then_some(if filter.desc { "descending" } else { "ascending" })] {
            (label)
            @if current { (if filter.desc { " ↓" } else { " ↑" }) }
        }
    }
}

fn filter_form(filter: &IncidentFilter, devices: &[DeviceRow]) -> Markup {
    html! {
        form.filters method="get" action=(INCIDENTS) {
            label {
                span { "Window" }
                select name="window" {
                    @for window in Window::ALL {
                        option value=(window.as_str()) selected[filter.window == window] { (window.as_str()) }
                    }
                }
            }
            label {
                span { "State" }
                select name="state" {
                    @for s in IncidentState::ALL {
                        option value=(s.as_str()) selected[filter.state == s] { (s.as_str()) }
                    }
                }
            }
            (code_select(filter.code))
            (device_select(devices, filter.device_id))
            label {
                span { "Min score" }
                input type="number" name="min_score" min="0" max="100" size="4"
                    value=[filter.min_score];
            }
            @if filter.sort != IncidentSort::Last { input type="hidden" name="sort" value=(filter.sort.as_str()); }
            @if !filter.desc { input type="hidden" name="order" value="asc"; }
            @if filter.per_page != IncidentFilter::default().per_page {
                input type="hidden" name="per_page" value=(filter.per_page);
            }
            button type="submit" { "Filter" }
            a.clear href=(INCIDENTS) { "clear" }
        }
    }
}

// ---------------------------------------------------------------------------------------
// One incident
// ---------------------------------------------------------------------------------------

/// `GET /incidents/{id}`.
pub async fn page(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Markup, WebError> {
    let Path(id) = id?;
    let detail = state
        .reads()
        .run(move |c| store::detect::read::incident_detail(c, id))
        .await?
        .ok_or_else(|| WebError::NotFound(format!("no incident with id {id}")))?;
    Ok(render_page(&detail, now_ms()))
}

/// Mute choices: hours, label.
const MUTES: [(i64, &str); 3] = [(1, "1 h"), (24, "24 h"), (168, "7 d")];

/// (Long: a maud template: the page's markup reads top to bottom in one piece.)
fn render_page(d: &IncidentDetail, now: i64) -> Markup {
    let i = &d.incident;
    let here = format!("/incidents/{}", i.id);
    shell(
        &i.title,
        Nav::Incidents,
        false,
        html! {
            h1 { (i.title) }
            section.cols {
                dl.facts {
                    dt { "Device" } dd { a href={ "/devices/" (i.device_id) } { (i.device) } }
                    dt { "Destination" } dd.mono {
                        @match &i.remote_ip {
                            Some(ip) => (ip),
                            None => span.muted { "— (device-level)" },
                        }
                        @if i.dport.is_some() || i.proto.is_some() { " " (port_proto(i.dport, i.proto)) }
                    }
                    dt { "Codes" } dd { (codes(&i.codes)) }
                    dt { "First seen" } dd.mono { (time(i.first_seen)) }
                    dt { "Last seen" } dd.mono { (time(i.last_seen)) }
                    dt { "Hits" } dd.mono { (format::count(i.count)) }
                    dt { "Max score" } dd { (score_badge(i.max_score)) }
                    dt { "State" } dd { (state_text(i, now)) }
                }
                div {
                    div.bulk {
                        @if i.acked_at.is_none() { (ack_form(i.id, &here)) }
                        @for (hours, label) in MUTES {
                            form.inline method="post" action={ "/incidents/" (i.id) "/mute" } {
                                (csrf_field())
                                input type="hidden" name="hours" value=(hours);
                                button.secondary type="submit" { "Mute " (label) }
                            }
                        }
                        @if i.muted(now) {
                            form.inline method="post" action={ "/incidents/" (i.id) "/mute" } {
                                (csrf_field())
                                input type="hidden" name="hours" value="0";
                                button.secondary type="submit" { "Unmute" }
                            }
                        }
                    }
                    form.notes method="post" action={ "/incidents/" (i.id) "/notes" } {
                        (csrf_field())
                        label {
                            span { "Notes" }
                            textarea name="notes" rows="3" cols="32" maxlength=(MAX_NOTES_CHARS) { (i.notes) }
                        }
                        button type="submit" { "Save notes" }
                    }
                }
            }
            h2 { "Why" }
            (explanation(d))
            h2 { "Timeline" }
            @if d.hits.is_empty() {
                p.muted { "No hits are stored for this incident any more (retention)." }
            } @else {
                div.scroll {
                    table.data.hits {
                        thead { tr {
                            th { "Time" } th { "Destination" } th { "Port" } th.num { "Score" }
                            th.num { "Count" } th { "Codes" } th { "Actions" }
                        } }
                        tbody {
                            @for h in &d.hits {
                                tr.acked[h.acked_at.is_some()] id={ "hit-" (h.id) } {
                                    td.mono {
                                        (time(h.ts))
                                        @if h.count > 1 { span.sub { "last " (time(h.last_ts)) } }
                                    }
                                    td.mono.name { (destination(h.remote_host_id, h.remote_ip.as_deref(), h.domain.as_deref())) }
                                    td.mono { (port_proto(h.dport, h.proto)) }
                                    td.num { (score_badge(h.score)) }
                                    td.num.mono { (format::count(h.count)) }
                                    td { (codes(&h.codes)) }
                                    td.actions { (hit_actions(h, &here)) }
                                }
                            }
                        }
                    }
                }
                @if d.hits.len() as u32 >= store::detect::read::MAX_INCIDENT_HITS {
                    p.muted { "The first " (store::detect::read::MAX_INCIDENT_HITS) " hits." }
                }
            }
            h2 { "Flows" }
            @if d.device_window {
                p.muted {
                    "Device-level codes have no single flow: these are the device's outbound flows from "
                    (store::detect::read::DEVICE_FLOWS_BEFORE_MS / 60_000) " minutes before the first hit to the last"
                    @if d.flows.len() as u32 >= store::detect::read::MAX_INCIDENT_FLOWS { " (the first " (store::detect::read::MAX_INCIDENT_FLOWS) ")" }
                    "."
                }
            }
            @if d.flows.is_empty() {
                p.muted { "No stored flow (they may have aged out)." }
            } @else {
                div.scroll {
                    table.data {
                        thead { tr {
                            th { "Started" } th { "Source" } th { "Destination" } th { "Domain" }
                            th { "Proto" } th.num { "Sent" } th.num { "Received" } th { "Ended" }
                        } }
                        tbody {
                            @for f in &d.flows {
                                tr {
                                    td.mono { (time(f.first_seen)) }
                                    td.mono { (format::endpoint(&f.src_ip, f.src_port)) }
                                    td.mono { (format::endpoint(&f.dst_ip, f.dst_port)) }
                                    td.mono.name { (f.domain.as_deref().unwrap_or("—")) }
                                    td.mono { (crate::flow::proto_name(f.proto)) @if let Some(s) = &f.state { " " span.muted { (s) } } }
                                    td.num.mono.up { (format::bytes(f.bytes_up)) }
                                    td.num.mono.down { (format::bytes(f.bytes_down)) }
                                    td.mono { (super::format::time_opt(f.ended_at)) }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "DNS answers" }
            @if d.answers.is_empty() {
                p.muted { "The device got no DNS answer for these addresses from an hour before the incident to its end." }
            } @else {
                div.scroll {
                    table.data.narrow {
                        thead { tr { th { "Time" } th { "Client" } th { "Name" } th { "Canonical" } th { "Address" } th.num { "TTL" } } }
                        tbody {
                            @for a in &d.answers {
                                tr {
                                    td.mono { (time(a.ts)) }
                                    td.mono { (a.client) }
                                    td.mono.name { (a.name) }
                                    td.mono.name { (a.canonical.as_deref().unwrap_or("—")) }
                                    td.mono { (a.ip) }
                                    td.num.mono { @match a.ttl { Some(t) => { (t) " s" }, None => "—" } }
                                }
                            }
                        }
                    }
                }
            }
            p { a href=(with_query("/anomalies", &format!("device={}&window=30d", i.device_id))) { "All hits of this device" } }
        },
    )
}

/// Each code of the incident: the highest weight it carried in a hit, its evidence, and
/// what the code means. The evidence is the latest of a hit on the incident's own
/// destination where there is one — the one the title was written from, so the two say
/// the same numbers — else the latest of any hit.
fn explanation(d: &IncidentDetail) -> Markup {
    let own = |h: &&HitRow| h.remote_ip == d.incident.remote_ip;
    let mut hits: Vec<&HitRow> = d.hits.iter().collect();
    // The evidence that counts comes last.
    hits.sort_by_key(|h| (own(h), h.last_ts, h.id));
    let mut reasons: Vec<(String, i64, String)> = Vec::new();
    for h in hits {
        for r in &h.reasons {
            match reasons.iter_mut().find(|(c, _, _)| *c == r.code) {
                Some(entry) => {
                    entry.1 = entry.1.max(r.weight);
                    entry.2 = r.evidence.clone();
                }
                None => reasons.push((r.code.clone(), r.weight, r.evidence.clone())),
            }
        }
    }
    html! {
        @if reasons.is_empty() {
            p.muted { "No reasons are stored for this incident's hits." }
        } @else {
            dl.reasons {
                @for (code, weight, evidence) in &reasons {
                    dt {
                        a.code href={ "/help#" (code) } { (code) }
                        span.weight { " +" (weight) }
                    }
                    dd {
                        (evidence)
                        @if let Some(c) = Code::parse(code) { span.sub { (meaning(c)) } }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Actions
// ---------------------------------------------------------------------------------------

async fn require_incident(state: &AppState, id: i64) -> Result<(), WebError> {
    let exists = state
        .reads()
        .run(move |c| store::detect::read::incident(c, id))
        .await?
        .is_some();
    if exists {
        Ok(())
    } else {
        Err(WebError::NotFound(format!("no incident with id {id}")))
    }
}

async fn run(state: &AppState, command: Command, what: &str) -> Result<(), WebError> {
    state
        .shared
        .writer
        .command(command)
        .await
        .map(|_| ())
        .map_err(WebError::command(&format!("{what} not saved")))
}

fn back_to(form: &BackForm, default: &str) -> Redirect {
    Redirect::to(&super::login::safe_next(
        form.back.as_deref().or(Some(default)),
    ))
}

/// `POST /incidents/{id}/ack` (form `back`): acknowledges it and its hits.
pub async fn ack(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<BackForm>, FormRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    let Form(form) = form?;
    require_incident(&state, id).await?;
    run(
        &state,
        Command::AckIncident { incident_id: id },
        "acknowledgement",
    )
    .await?;
    Ok(back_to(&form, &format!("/incidents/{id}")))
}

/// `POST /incidents/ack-all`: acknowledges every incident not yet acknowledged.
pub async fn ack_all(State(state): State<AppState>) -> Result<Redirect, WebError> {
    let unacked = state
        .reads()
        .run(store::detect::read::unacked_incidents)
        .await?;
    if unacked > 0 {
        run(&state, Command::AckAllIncidents, "acknowledgement").await?;
    }
    Ok(Redirect::to(INCIDENTS))
}

/// `POST /incidents/clear-acked`: deletes acknowledged incidents and their hits.
pub async fn clear_acked(State(state): State<AppState>) -> Result<Redirect, WebError> {
    let acked = state
        .reads()
        .run(store::detect::read::acked_incidents)
        .await?;
    if acked > 0 {
        run(&state, Command::ClearAcknowledged, "clearing").await?;
    }
    Ok(Redirect::to(INCIDENTS))
}

#[derive(Debug, Deserialize)]
pub struct MuteForm {
    pub hours: String,
}

/// `POST /incidents/{id}/mute` (form `hours`: 1, 24 or 168; 0 unmutes).
pub async fn mute(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<MuteForm>, FormRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    let Form(form) = form?;
    let hours = form
        .hours
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|h| *h == 0 || MUTES.iter().any(|(m, _)| m == h))
        .ok_or_else(|| {
            WebError::BadRequest(format!(
                "invalid form field `hours` = {:?}: expected 1, 24 or 168 (0 unmutes)",
                form.hours.chars().take(20).collect::<String>()
            ))
        })?;
    require_incident(&state, id).await?;
    let until_ms = if hours == 0 {
        0
    } else {
        now_ms() + hours * 3_600_000
    };
    run(
        &state,
        Command::MuteIncident {
            incident_id: id,
            until_ms,
        },
        "mute",
    )
    .await?;
    Ok(Redirect::to(&format!("/incidents/{id}")))
}

#[derive(Debug, Deserialize)]
pub struct NotesForm {
    pub notes: String,
}

/// `POST /incidents/{id}/notes` (form `notes`; tabs and line breaks are the only
/// control characters kept).
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
    require_incident(&state, id).await?;
    run(
        &state,
        Command::SetIncidentNotes {
            incident_id: id,
            notes,
        },
        "notes",
    )
    .await?;
    Ok(Redirect::to(&format!("/incidents/{id}")))
}
