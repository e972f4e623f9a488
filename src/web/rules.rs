//! `/rules`: the allow and suppress rules — list (with how often each matched, its
//! expiry and its device), create, edit, delete — and `/api/rules`.
//!
//! The form is parsed into a [`RuleSpec`] here, field by field, so every mistake is
//! named next to the form (which keeps what was typed); the writer stores it
//! ([`Command::SaveRule`]) and answers with the rule's id.
//!
//! (Long: the rule form — parsing and validating every matcher field, and its template — is
//! one concept; ≈ 750 lines of code, the rest tests.)

use std::net::IpAddr;

use axum::Form;
use axum::Json;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::format::{self, time, time_opt};
use super::layout::{Nav, csrf_field, device_link, page as shell};
use super::{AppState, WebError};
use crate::detect::Code;
use crate::detect::rules::{Action, RuleSpec};
use crate::event::MAX_NOTES_CHARS;
use crate::event::{Command, CommandReply};
use crate::store;
use crate::store::detect::read::RuleRow;
use crate::store::devices::read::DeviceRow;
use crate::time::now_ms;
use crate::web::query::MAX_DOMAIN_FILTER_CHARS;

/// Longest organisation text accepted (characters).
const MAX_ORG_CHARS: usize = 100;

/// `GET /rules`: every rule and an empty form for a new one.
pub async fn list(State(state): State<AppState>) -> Result<Markup, WebError> {
    let (rules, devices) = state
        .reads()
        .run(|c| {
            Ok((
                store::detect::read::rules(c)?,
                store::devices::read::devices(c)?,
            ))
        })
        .await?;
    Ok(render_list(&rules, &devices, &RuleForm::default(), &[]))
}

/// `GET /api/rules`: `{rules: [...]}`; each rule has `id`, `action` (`allow` or
/// `suppress`), `code`, `device_id`, `device` (its name), `remote` (address or CIDR),
/// `asn`, `org`, `domain`, `proto`, `ports` (`[low, high]`), `expires_at`, `notes`,
/// `created_at`, `matched` (times it applied) and `last_matched`; null = any / never.
#[derive(Serialize)]
pub struct RulesResponse {
    pub rules: Vec<RuleRow>,
}

pub async fn api(State(state): State<AppState>) -> Result<Json<RulesResponse>, ApiError> {
    let rules = state.reads().run(store::detect::read::rules).await?;
    Ok(Json(RulesResponse { rules }))
}

/// `GET /rules/{id}`: the rule in an edit form, and its delete button.
pub async fn edit(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Markup, WebError> {
    let Path(id) = id?;
    let (rule, devices) = state
        .reads()
        .run(move |c| {
            Ok((
                store::detect::read::rule(c, id)?,
                store::devices::read::devices(c)?,
            ))
        })
        .await?;
    let rule = rule.ok_or_else(|| WebError::NotFound(format!("no rule with id {id}")))?;
    Ok(render_edit(
        &rule,
        &devices,
        &RuleForm::from_row(&rule),
        &[],
    ))
}

/// `POST /rules`: creates a rule; 303 to the list, or the form again with what is
/// wrong (400).
pub async fn create(
    State(state): State<AppState>,
    form: Result<Form<RuleForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Form(form) = form?;
    save(&state, None, form).await
}

/// `POST /rules/{id}`: replaces rule `id`, like [`create`].
pub async fn update(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<RuleForm>, FormRejection>,
) -> Result<Response, WebError> {
    let Path(id) = id?;
    let Form(form) = form?;
    save(&state, Some(id), form).await
}

async fn save(state: &AppState, id: Option<i64>, form: RuleForm) -> Result<Response, WebError> {
    let (existing, devices) = state
        .reads()
        .run(move |c| {
            let rule = id
                .map(|id| store::detect::read::rule(c, id))
                .transpose()?
                .flatten();
            Ok((rule, store::devices::read::devices(c)?))
        })
        .await?;
    if let (Some(id), None) = (id, &existing) {
        return Err(WebError::NotFound(format!("no rule with id {id}")));
    }
    let (rule, reevaluate) = match form.parse(now_ms(), &devices) {
        Ok(parsed) => parsed,
        Err(errors) => {
            let page = match &existing {
                Some(row) => render_edit(row, &devices, &form, &errors),
                None => {
                    let rules = state.reads().run(store::detect::read::rules).await?;
                    render_list(&rules, &devices, &form, &errors)
                }
            };
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let reply = state
        .shared
        .writer
        .command(Command::SaveRule {
            id,
            rule: Box::new(rule),
            reevaluate,
        })
        .await
        .map_err(WebError::command("rule not saved"))?;
    let saved = match reply {
        CommandReply::Id(saved) => saved,
        CommandReply::Done => id.unwrap_or_default(),
    };
    Ok(Redirect::to(&format!("/rules#rule-{saved}")).into_response())
}

/// `POST /rules/{id}/delete`.
pub async fn delete(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Redirect, WebError> {
    let Path(id) = id?;
    let exists = state
        .reads()
        .run(move |c| store::detect::read::rule(c, id))
        .await?
        .is_some();
    if !exists {
        return Err(WebError::NotFound(format!("no rule with id {id}")));
    }
    state
        .shared
        .writer
        .command(Command::DeleteRule { rule_id: id })
        .await
        .map_err(WebError::command("rule not deleted"))?;
    Ok(Redirect::to("/rules"))
}

// ---------------------------------------------------------------------------------------
// The form
// ---------------------------------------------------------------------------------------

/// The rule form as posted: text, parsed by [`RuleForm::parse`]. Empty = any.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RuleForm {
    /// `allow` or `suppress`.
    pub action: String,
    /// Suppress only: a code, or empty for every code.
    pub code: String,
    /// A device id, or empty for every device.
    pub device: String,
    /// An address or CIDR prefix.
    pub remote: String,
    /// An AS number (`AS` prefix allowed).
    pub asn: String,
    pub org: String,
    pub domain: String,
    /// `443` or `6881-6889`.
    pub ports: String,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
    pub proto: String,
    /// A duration (`30m`, `12h`, `7d`, `2w`) from now, or a UTC date (`2026-12-31`) or
    /// time (`2026-12-31T18:00`); empty = never.
    pub expires: String,
    pub notes: String,
    /// The checkbox: present when ticked.
    pub reevaluate: Option<String>,
}

/// A form field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The form field's name (`action`, `ports`, …).
    pub field: &'static str,
    /// What to fix, for the person filling in the form.
    pub problem: String,
}

impl RuleForm {
    fn from_row(r: &RuleRow) -> RuleForm {
        let s = &r.spec;
        RuleForm {
            action: action_str(s.action).into(),
            code: s.code.map(|c| c.as_str().to_owned()).unwrap_or_default(),
            device: s.device_id.map(|d| d.to_string()).unwrap_or_default(),
            remote: s.remote.map(|n| remote_text(&n)).unwrap_or_default(),
            asn: s.asn.map(|a| a.to_string()).unwrap_or_default(),
            org: s.org.clone().unwrap_or_default(),
            domain: s.domain.clone().unwrap_or_default(),
            ports: s.ports.map(ports_text).unwrap_or_default(),
            proto: s
                .proto
                .map(|p| crate::flow::proto_name(p).into_owned())
                .unwrap_or_default(),
            // Minutes, UTC: what `parse_expiry` reads back.
            expires: s
                .expires_at
                .map(|ms| format::iso_utc(ms)[..16].to_owned())
                .unwrap_or_default(),
            notes: s.notes.clone(),
            reevaluate: None,
        }
    }

    /// The rule and the "re-evaluate" choice, or every field that is wrong.
    ///
    /// (Long: one check per form field, in the form's order, each naming its field.)
    pub fn parse(
        &self,
        now: i64,
        devices: &[DeviceRow],
    ) -> Result<(RuleSpec, bool), Vec<FieldError>> {
        let mut errors: Vec<FieldError> = Vec::new();
        let mut check = |field: &'static str, result: Result<(), String>| {
            if let Err(e) = result {
                errors.push(FieldError { field, problem: e });
            }
        };
        let mut spec = RuleSpec::default();
        check(
            "action",
            match self.action.trim() {
                "allow" => Ok(()),
                "suppress" => {
                    spec.action = Action::Suppress;
                    Ok(())
                }
                _ => Err("choose allow or suppress".into()),
            },
        );
        check(
            "code",
            match text(&self.code) {
                None => Ok(()),
                Some(c) => Code::parse(&c.to_ascii_uppercase())
                    .map(|c| spec.code = Some(c))
                    .ok_or_else(|| format!("{c:?} is not a reason code (see /help)")),
            },
        );
        check(
            "device",
            match text(&self.device) {
                None => Ok(()),
                Some(d) => d
                    .parse::<i64>()
                    .ok()
                    .filter(|id| devices.iter().any(|dev| dev.id == *id))
                    .map(|id| spec.device_id = Some(id))
                    .ok_or_else(|| format!("no device with id {d:?}")),
            },
        );
        check(
            "remote",
            match text(&self.remote) {
                None => Ok(()),
                Some(r) => r
                    .parse::<ipnet::IpNet>()
                    .map(|n| n.trunc())
                    .or_else(|_| r.parse::<IpAddr>().map(ipnet::IpNet::from))
                    .map(|n| spec.remote = Some(n))
                    .map_err(|_| {
                        format!("{r:?}: give an address (203.0.113.7) or a prefix (203.0.113.0/24, 2001:db8::/32)")
                    }),
            },
        );
        check(
            "asn",
            match text(&self.asn) {
                None => Ok(()),
                Some(a) => a
                    .trim_start_matches(['A', 'a'])
                    .trim_start_matches(['S', 's'])
                    .parse::<u32>()
                    .map(|n| spec.asn = Some(n))
                    .map_err(|_| format!("{a:?}: give an AS number like 13335 or AS13335")),
            },
        );
        check(
            "org",
            match text(&self.org) {
                None => Ok(()),
                Some(o) if o.chars().count() > MAX_ORG_CHARS || o.chars().any(char::is_control) => {
                    Err(format!(
                        "at most {MAX_ORG_CHARS} characters, no control characters"
                    ))
                }
                Some(o) => {
                    spec.org = Some(o.to_owned());
                    Ok(())
                }
            },
        );
        check(
            "domain",
            match text(&self.domain) {
                None => Ok(()),
                Some(d) => crate::web::query::parse_domain("domain", d)
                    .map(|name| spec.domain = Some(name))
                    .map_err(|_| {
                        format!(
                            "{d:?}: give a name like example.com (its subdomains match too), \
                             at most {MAX_DOMAIN_FILTER_CHARS} characters"
                        )
                    }),
            },
        );
        check(
            "ports",
            match text(&self.ports) {
                None => Ok(()),
                Some(p) => parse_ports(p).map(|r| spec.ports = Some(r)),
            },
        );
        check(
            "proto",
            match text(&self.proto) {
                None => Ok(()),
                Some(p) => crate::flow::proto_from_name(p)
                    .or_else(|| p.parse::<u8>().ok())
                    .map(|n| spec.proto = Some(n))
                    .ok_or_else(|| {
                        format!("{p:?}: give tcp, udp, icmp, icmpv6 or a number from 0 to 255")
                    }),
            },
        );
        check(
            "expires",
            match text(&self.expires) {
                None => Ok(()),
                Some(e) => parse_expiry(e, now).map(|at| spec.expires_at = Some(at)),
            },
        );
        let notes = self.notes.trim().replace("\r\n", "\n");
        check(
            "notes",
            if notes.chars().count() > MAX_NOTES_CHARS {
                Err(format!("at most {MAX_NOTES_CHARS} characters"))
            } else if notes
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                Err("control characters are not allowed".into())
            } else {
                spec.notes = notes;
                Ok(())
            },
        );
        if errors.is_empty() {
            let matches_something = spec.device_id.is_some()
                || spec.remote.is_some()
                || spec.asn.is_some()
                || spec.org.is_some()
                || spec.domain.is_some()
                || spec.ports.is_some()
                || spec.proto.is_some();
            if spec.action == Action::Allow && !matches_something {
                errors.push(FieldError {
                    field: "action",
                    problem: "an allow rule needs something to match (a device, address, AS, \
                        organisation, domain, port or protocol): one matching everything would \
                        switch detection off"
                        .into(),
                });
            } else if spec.action == Action::Suppress && !matches_something && spec.code.is_none() {
                errors.push(FieldError {
                    field: "code",
                    problem: "a suppress rule without a code needs something to match: one \
                        matching everything would switch detection off"
                        .into(),
                });
            } else if let Err(e) = spec.validate() {
                errors.push(FieldError {
                    field: "action",
                    problem: e.to_string(),
                });
            }
        }
        if errors.is_empty() {
            Ok((spec, self.reevaluate.is_some()))
        } else {
            Err(errors)
        }
    }
}

fn text(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

fn action_str(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Suppress => "suppress",
    }
}

/// What a rule does, in the owner's words: these are not firewall actions, nothing is
/// let through or dropped; a rule only stops netmon flagging what it matches.
fn action_label(a: Action) -> &'static str {
    match a {
        Action::Allow => "don't flag",
        Action::Suppress => "don't flag code",
    }
}

/// An address alone when the prefix is a single host.
fn remote_text(n: &ipnet::IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn ports_text((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    let port = |s: &str| s.trim().parse::<u16>().ok().filter(|p| *p > 0);
    let range = match text.split_once('-') {
        Some((lo, hi)) => port(lo).zip(port(hi)),
        None => port(text).map(|p| (p, p)),
    };
    range.filter(|(lo, hi)| lo <= hi).ok_or_else(|| {
        format!("{text:?}: give a port (443) or a range, lowest first (6881-6889), from 1 to 65535")
    })
}

/// A duration from `now` (`30m`, `12h`, `7d`, `2w`) or a UTC date or minute
/// (`2026-12-31`, `2026-12-31T18:00`, optionally with `Z`); must be in the future.
fn parse_expiry(text: &str, now: i64) -> Result<i64, String> {
    const EXPECTED: &str = "give a duration from now (30m, 12h, 7d, 2w) or a UTC date or time \
        (2026-12-31 or 2026-12-31T18:00)";
    let duration = text.len().checked_sub(1).and_then(|i| {
        let (n, unit) = text.split_at(i);
        let n = n
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))?;
        let unit_ms = match unit {
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        Some(now + n * unit_ms)
    });
    let at = duration
        .or_else(|| utc_ms(text.trim_end_matches(['Z', 'z'])))
        .ok_or_else(|| format!("{text:?}: {EXPECTED}"))?;
    if at <= now {
        return Err(format!("{text:?} is in the past: {EXPECTED}"));
    }
    Ok(at)
}

/// `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM` (UTC) as unix ms.
fn utc_ms(text: &str) -> Option<i64> {
    let (date, clock) = match text.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts
        .next()?
        .parse()
        .ok()
        .filter(|y| (1970..=9999).contains(y))?;
    let month: i64 = parts
        .next()?
        .parse()
        .ok()
        .filter(|m| (1..=12).contains(m))?;
    let day: i64 = parts
        .next()?
        .parse()
        .ok()
        .filter(|d| (1..=31).contains(d))?;
    let minutes = match clock {
        None => 0,
        Some(c) => {
            let (h, m) = c.split_once(':')?;
            let h: i64 = h.parse().ok().filter(|h| (0..24).contains(h))?;
            let m: i64 = m.parse().ok().filter(|m| (0..60).contains(m))?;
            h * 60 + m
        }
    };
    let days = crate::time::days_from_civil(year, month, day);
    // Reject dates that do not exist (2026-02-30) by converting back.
    let back = format::iso_utc(days * 86_400_000);
    (back[..10] == *date).then_some(days * 86_400_000 + minutes * 60_000)
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

fn render_list(
    rules: &[RuleRow],
    devices: &[DeviceRow],
    form: &RuleForm,
    errors: &[FieldError],
) -> Markup {
    let now = now_ms();
    shell(
        "Rules",
        Nav::Rules,
        false,
        html! {
            h1 { "Rules" }
            p.muted {
                "Allow rules drop matching flows from scoring; suppress rules remove a code. "
                a href="/help#rules" { "How rules match" }
            }
            @if rules.is_empty() {
                p.muted { "No rules yet." }
            } @else {
                div.scroll {
                    table.data.rules {
                        thead { tr {
                            th { "#" } th { "Action" } th { "Device" } th { "Matches" } th { "Code" }
                            th.num { "Matched" } th { "Last matched" } th { "Expires" } th { "Notes" } th { "" }
                        } }
                        tbody {
                            @for r in rules {
                                tr.expired[r.spec.expires_at.is_some_and(|e| e <= now)] id={ "rule-" (r.id) } {
                                    td.mono { a href={ "/rules/" (r.id) } { (r.id) } }
                                    td { span class={ "action action-" (action_str(r.spec.action)) } { (action_label(r.spec.action)) } }
                                    td {
                                        @match r.spec.device_id {
                                            Some(id) => (device_link(id, r.device.as_deref())),
                                            None => span.muted { "every device" },
                                        }
                                    }
                                    td.mono { (matches(&r.spec)) }
                                    td.mono {
                                        @match (r.spec.action, r.spec.code) {
                                            (Action::Allow, _) => span.muted { "—" },
                                            (Action::Suppress, Some(c)) => a href={ "/help#" (c.as_str()) } { (c.as_str()) },
                                            (Action::Suppress, None) => "every code",
                                        }
                                    }
                                    td.num.mono { (format::count(r.matched)) }
                                    td.mono { (time_opt(r.last_matched)) }
                                    td.mono {
                                        @match r.spec.expires_at {
                                            Some(at) => {
                                                (time(at))
                                                @if at <= now { span.sub { "expired" } }
                                            }
                                            None => span.muted { "never" },
                                        }
                                    }
                                    td.notes { (r.spec.notes) }
                                    td.actions { a href={ "/rules/" (r.id) } { "edit" } }
                                }
                            }
                        }
                    }
                }
                @if rules.len() as u32 >= store::detect::read::MAX_RULES {
                    p.muted { "The first " (store::detect::read::MAX_RULES) " rules." }
                }
            }
            h2 #new { "New rule" }
            (rule_form("/rules", devices, form, errors, "Create rule"))
        },
    )
}

fn render_edit(
    rule: &RuleRow,
    devices: &[DeviceRow],
    form: &RuleForm,
    errors: &[FieldError],
) -> Markup {
    let title = format!("Rule {}", rule.id);
    shell(
        &title,
        Nav::Rules,
        false,
        html! {
            h1 { (title) }
            p.muted {
                "Created " (time(rule.created_at)) " · matched " (format::counted(rule.matched, "time", "times"))
                @if let Some(at) = rule.last_matched { ", last " (time(at)) }
                " · " a href="/rules" { "all rules" }
            }
            (rule_form(&format!("/rules/{}", rule.id), devices, form, errors, "Save rule"))
            form.inline.delete method="post" action={ "/rules/" (rule.id) "/delete" } {
                (csrf_field())
                button.danger type="submit" { "Delete rule" }
            }
        },
    )
}

/// What a rule matches, in a line.
fn matches(s: &RuleSpec) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &s.remote {
        parts.push(remote_text(r));
    }
    if let Some(d) = &s.domain {
        parts.push(format!("*.{d}"));
    }
    if let Some(a) = s.asn {
        parts.push(format!("AS{a}"));
    }
    if let Some(o) = &s.org {
        parts.push(format!("org ~ {o}"));
    }
    if let Some(p) = s.ports {
        parts.push(format!("port {}", ports_text(p)));
    }
    if let Some(p) = s.proto {
        parts.push(crate::flow::proto_name(p).into_owned());
    }
    if parts.is_empty() {
        "anything".into()
    } else {
        parts.join(" · ")
    }
}

/// (Long: a maud template: the page's markup reads top to bottom in one piece.)
fn rule_form(
    action: &str,
    devices: &[DeviceRow],
    f: &RuleForm,
    errors: &[FieldError],
    submit: &str,
) -> Markup {
    let invalid = |field: &str| errors.iter().any(|e| e.field == field).then_some("true");
    html! {
        @if !errors.is_empty() {
            ul.errors role="alert" {
                @for e in errors {
                    li { strong { (e.field) } ": " (e.problem) }
                }
            }
        }
        form.rule method="post" action=(action) {
            (csrf_field())
            label {
                span { "Action" }
                select name="action" aria-invalid=[invalid("action")] {
                    option value="allow" selected[f.action == "allow"] { "don't flag (never score)" }
                    option value="suppress" selected[f.action == "suppress"] { "don't flag one code" }
                }
            }
            label {
                span { "Code (suppress)" }
                select name="code" aria-invalid=[invalid("code")] {
                    option value="" { "every code" }
                    @for c in Code::ALL {
                        option value=(c.as_str()) selected[f.code.eq_ignore_ascii_case(c.as_str())] { (c.as_str()) }
                    }
                }
            }
            label {
                span { "Device" }
                select name="device" aria-invalid=[invalid("device")] {
                    option value="" { "every device" }
                    @for d in devices {
                        option value=(d.id) selected[f.device == d.id.to_string()] { (d.label()) }
                    }
                }
            }
            label {
                span { "Remote IP or CIDR" }
                input type="text" name="remote" size="20" maxlength="64" placeholder="203.0.113.0/24"
                    value=(f.remote) aria-invalid=[invalid("remote")];
            }
            label {
                span { "ASN" }
                input type="text" name="asn" size="9" maxlength="12" placeholder="AS13335"
                    value=(f.asn) aria-invalid=[invalid("asn")];
            }
            label {
                span { "Organisation" }
                input type="text" name="org" size="16" maxlength=(MAX_ORG_CHARS) placeholder="part of the AS name"
                    value=(f.org) aria-invalid=[invalid("org")];
            }
            label {
                span { "Domain suffix" }
                input type="text" name="domain" size="20" maxlength=(MAX_DOMAIN_FILTER_CHARS) placeholder="example.com"
                    value=(f.domain) aria-invalid=[invalid("domain")];
            }
            label {
                span { "Port or range" }
                input type="text" name="ports" size="11" maxlength="11" placeholder="6881-6889"
                    value=(f.ports) aria-invalid=[invalid("ports")];
            }
            label {
                span { "Protocol" }
                input type="text" name="proto" size="6" maxlength="8" placeholder="tcp"
                    value=(f.proto) aria-invalid=[invalid("proto")];
            }
            label {
                span { "Expires" }
                input type="text" name="expires" size="16" maxlength="20" placeholder="7d or 2026-12-31"
                    title="a duration from now (30m, 12h, 7d, 2w) or a UTC date or time; empty: never"
                    value=(f.expires) aria-invalid=[invalid("expires")];
            }
            label.wide {
                span { "Notes" }
                textarea name="notes" rows="2" cols="40" maxlength=(MAX_NOTES_CHARS) aria-invalid=[invalid("notes")] { (f.notes) }
            }
            label.check {
                input type="checkbox" name="reevaluate" value="on" checked[f.reevaluate.is_some()];
                span { "re-evaluate open incidents" }
            }
            button type="submit" { (submit) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_714_568_645_000; // 2024-05-01 13:04:05 UTC

    fn device(id: i64) -> DeviceRow {
        DeviceRow::bare(id, "10.0.0.5")
    }

    fn form(f: impl FnOnce(&mut RuleForm)) -> RuleForm {
        let mut form = RuleForm {
            action: "allow".into(),
            ..RuleForm::default()
        };
        f(&mut form);
        form
    }

    #[test]
    fn a_bittorrent_rule() {
        let f = form(|f| {
            f.device = "3".into();
            f.ports = "6881-6889".into();
            f.proto = "TCP".into();
            f.expires = "7d".into();
            f.reevaluate = Some("on".into());
        });
        let (spec, reevaluate) = f.parse(NOW, &[device(3)]).unwrap();
        assert!(reevaluate);
        assert_eq!(spec.device_id, Some(3));
        assert_eq!(spec.ports, Some((6881, 6889)));
        assert_eq!(spec.proto, Some(6));
        assert_eq!(spec.expires_at, Some(NOW + 7 * 86_400_000));
    }

    #[test]
    fn fields_parse_to_the_spec_and_back() {
        let f = form(|f| {
            f.action = "suppress".into();
            f.code = "no_rdns".into();
            f.remote = "198.51.100.77/24".into();
            f.asn = "AS13335".into();
            f.org = "Cloudflare".into();
            f.domain = "*.Example.COM".into();
            f.ports = "443".into();
            f.expires = "2030-01-02T03:04Z".into();
            f.notes = "cdn\r\nsee ticket".into();
        });
        let (spec, reevaluate) = f.parse(NOW, &[]).unwrap();
        assert!(!reevaluate);
        assert_eq!(spec.action, Action::Suppress);
        assert_eq!(spec.code, Some(Code::NoRdns));
        assert_eq!(spec.remote, Some("198.51.100.0/24".parse().unwrap()));
        assert_eq!(spec.asn, Some(13335));
        assert_eq!(spec.domain.as_deref(), Some("example.com"));
        assert_eq!(spec.ports, Some((443, 443)));
        assert_eq!(spec.expires_at, Some(1_893_553_440_000));
        assert_eq!(spec.notes, "cdn\nsee ticket");
        let row = RuleRow {
            id: 1,
            spec: spec.clone(),
            device: None,
            created_at: 0,
            matched: 0,
            last_matched: None,
        };
        let back = RuleForm::from_row(&row);
        assert_eq!(back.expires, "2030-01-02T03:04");
        assert_eq!(back.parse(NOW, &[]).unwrap().0, spec);
        // A single address reads back without /32.
        let f = form(|f| f.remote = "2001:db8::1".into());
        let spec = f.parse(NOW, &[]).unwrap().0;
        assert_eq!(remote_text(&spec.remote.unwrap()), "2001:db8::1");
    }

    #[test]
    fn every_bad_field_is_named() {
        let f = RuleForm {
            action: "block".into(),
            code: "NOPE".into(),
            device: "9".into(),
            remote: "10.0.0.300".into(),
            asn: "ASX".into(),
            org: "a\u{7}".into(),
            domain: ".".into(),
            ports: "9-1".into(),
            proto: "sctp2".into(),
            expires: "2020-01-01".into(),
            notes: "x".repeat(MAX_NOTES_CHARS + 1),
            reevaluate: None,
        };
        let errors = f.parse(NOW, &[device(3)]).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "action", "code", "device", "remote", "asn", "org", "domain", "ports", "proto",
                "expires", "notes"
            ]
        );
        for bad in ["2026-02-30", "5x", "0d", "tomorrow", "2030-01-01T25:00"] {
            assert!(parse_expiry(bad, NOW).is_err(), "{bad}");
        }
        assert_eq!(parse_expiry("2024-05-02", NOW), Ok(1_714_608_000_000));
        for bad in ["0", "65536", "1-", "x"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_that_would_switch_detection_off_are_refused() {
        let errors = form(|_| {}).parse(NOW, &[]).unwrap_err();
        assert_eq!(errors[0].field, "action");
        let errors = form(|f| f.action = "suppress".into())
            .parse(NOW, &[])
            .unwrap_err();
        assert_eq!(errors[0].field, "code");
        // An allow rule with a code: the engine's own check.
        let errors = form(|f| {
            f.code = "BEACON".into();
            f.ports = "443".into();
        })
        .parse(NOW, &[])
        .unwrap_err();
        assert!(errors[0].problem.contains("takes no code"), "{errors:?}");
    }
}
