//! The page shell every page shares: head (embedded CSS/JS, no inline script or style:
//! the Content-Security-Policy forbids both), navigation, logout, and the error page;
//! [`csrf_field`] for every form that posts.

use axum::http::StatusCode;
use maud::{DOCTYPE, Markup, html};

use super::{assets, auth, incidents};

/// Which navigation entry is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Flows,
    Devices,
    Hosts,
    Dns,
    Router,
    Drops,
    Anomalies,
    Incidents,
    Rules,
    Searches,
    Settings,
    Help,
    None,
}

/// A full HTML page. `live` adds the live-update status and pause button, which the
/// script reveals (they do nothing without it).
pub fn page(title: &str, nav: Nav, live: bool, body: Markup) -> Markup {
    let viewer = auth::viewer();
    shell(
        title,
        html! {
            header.top {
                a.brand href="/" { "netmon" }
                nav {
                    a href="/" aria-current=[(nav == Nav::Overview).then_some("page")] { "Overview" }
                    a href="/flows" aria-current=[(nav == Nav::Flows).then_some("page")] { "Flows" }
                    a href="/devices" aria-current=[(nav == Nav::Devices).then_some("page")] { "Devices" }
                    a href="/hosts" aria-current=[(nav == Nav::Hosts).then_some("page")] { "Hosts" }
                    a href="/dns" aria-current=[(nav == Nav::Dns).then_some("page")] { "DNS" }
                    a href="/router" aria-current=[(nav == Nav::Router).then_some("page")] { "Router" }
                    a href="/drops" aria-current=[(nav == Nav::Drops).then_some("page")] { "Drops" }
                    a href="/anomalies" aria-current=[(nav == Nav::Anomalies).then_some("page")] { "Anomalies" }
                    a href="/incidents" aria-current=[(nav == Nav::Incidents).then_some("page")] { "Incidents" }
                    a href="/rules" aria-current=[(nav == Nav::Rules).then_some("page")] { "Rules" }
                    a href="/searches" aria-current=[(nav == Nav::Searches).then_some("page")] { "Saved" }
                    a href="/settings" aria-current=[(nav == Nav::Settings).then_some("page")] { "Health" }
                    a href="/help" aria-current=[(nav == Nav::Help).then_some("page")] { "Help" }
                }
                @if let Some(n) = incidents::open_alerts() {
                    a.alerts.alerting[n > 0] #alerts href="/incidents" title="open incidents: neither acknowledged nor muted" {
                        "Alerts: " strong { (n) }
                    }
                }
                @if live {
                    span.live-controls {
                        span #live-status .live.off hidden { "live" }
                        select #live-rate hidden aria-label="refresh rate" title="how often changed panels are refreshed" {
                            option value="live" { "live" }
                            option value="5s" { "every 5 s" }
                            option value="30s" { "every 30 s" }
                        }
                        button #live-toggle type="button" hidden { "Pause" }
                    }
                }
                @if viewer.logged_in {
                    form.logout method="post" action="/logout" {
                        (csrf_field())
                        button type="submit" { "Log out" }
                    }
                }
            }
            main { (body) }
        },
    )
}

/// A page without navigation: the login and setup pages.
pub fn plain_page(title: &str, body: Markup) -> Markup {
    shell(title, html! { main.plain { (body) } })
}

fn shell(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="dark";
                title { (title) " · netmon" }
                link rel="stylesheet" href=(assets::url("netmon.css"));
                link rel="icon" type="image/svg+xml" href=(assets::url("favicon.svg"));
                script src=(assets::url("netmon.js")) defer {}
            }
            body { (body) }
        }
    }
}

/// The hidden CSRF field every `method="post"` form must contain: without it the
/// request is refused (403) before it reaches the handler (see `auth::gate`).
pub fn csrf_field() -> Markup {
    html! { input type="hidden" name=(auth::CSRF_FIELD) value=(auth::csrf_token()); }
}

/// The page for a failed request: the status and the message (which names the bad
/// parameter for a 400).
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    let title = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("error")
    );
    page(
        &title,
        Nav::None,
        false,
        html! {
            h1 { (title) }
            p.error { (message) }
            p { a href="/flows" { "Back to the flows" } }
        },
    )
}

/// A pager's « first and ‹ prev: links from page 2 on, greyed text on page 1.
fn first_prev(page: u32, href: &impl Fn(u32) -> String) -> Markup {
    html! {
        @if page > 1 {
            a href=(href(1)) rel="first" { "« first" }
            a href=(href(page - 1)) rel="prev" { "‹ prev" }
        } @else {
            span.muted { "« first" }
            span.muted { "‹ prev" }
        }
    }
}

/// A pager's next › and last »: links to `(next, last)`, greyed text on the last page.
fn next_last(links: Option<(String, String)>) -> Markup {
    html! {
        @if let Some((next, last)) = links {
            a href=(next) rel="next" { "next ›" }
            a href=(last) rel="last" { "last »" }
        } @else {
            span.muted { "next ›" }
            span.muted { "last »" }
        }
    }
}

/// "Previous · page N of M · Next" with links built by `href(page)`.
pub fn pager(page: u32, pages: u32, href: impl Fn(u32) -> String) -> Markup {
    html! {
        nav.pager aria-label="pages" {
            (first_prev(page, &href))
            span { "page " (page) " of " (pages) }
            (next_last((page < pages).then(|| (href(page + 1), href(pages)))))
        }
    }
}

/// Numbered pagination: « first · ‹ prev · the pages around the current one · next › ·
/// last ». `pages` is what the count knows of; when `more` (the count stopped at its
/// cap), pages past it exist, and "last" is `last_href` (the view read backwards)
/// rather than a number. `on_last`: the page shown is the last one.
pub fn numbered_pager(
    page: u32,
    pages: u32,
    more: bool,
    on_last: bool,
    href: impl Fn(u32) -> String,
    last_href: &str,
) -> Markup {
    /// Pages linked on each side of the current one.
    const AROUND: u32 = 2;
    let lo = page.saturating_sub(AROUND).max(1);
    let hi = page.saturating_add(AROUND).min(pages);
    html! {
        nav.pager aria-label="pages" {
            (first_prev(page, &href))
            @if lo > 1 { span.muted { "…" } }
            @for p in lo..=hi {
                @if p == page && !(on_last && more) {
                    span aria-current="page" { strong { (p) } }
                } @else {
                    a href=(href(p)) { (p) }
                }
            }
            @if on_last && more {
                span.muted { "…" }
                span aria-current="page" { strong { "last" } }
            } @else if hi < pages || more {
                span.muted { "…" }
            }
            (next_last((!on_last).then(|| (href(page + 1), last_href.to_owned()))))
        }
    }
}

/// A link with a `?query`, or the bare path when the query is empty.
pub fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// The "Device" select of a filter form: every device by name, and the chosen one even
/// when it is not in the list (a shared URL naming a device since merged or pruned).
/// A device's name linking to its page; a row whose device is gone (`label` None: its
/// row was removed) still links, to the page that says so.
pub fn device_link(id: i64, label: Option<&str>) -> Markup {
    html! {
        @match label {
            Some(l) => a href={ "/devices/" (id) } { (l) },
            None => a.muted href={ "/devices/" (id) } { "a removed device" },
        }
    }
}

pub fn device_select(
    devices: &[crate::store::devices::read::DeviceRow],
    selected: Option<i64>,
) -> Markup {
    let known = selected.is_none_or(|id| devices.iter().any(|d| d.id == id));
    html! {
        label {
            span { "Device" }
            select name="device" {
                option value="" { "any" }
                @for d in devices {
                    option value=(d.id) selected[selected == Some(d.id)] { (d.label()) }
                }
                @if !known {
                    @if let Some(id) = selected {
                        option value=(id) selected { "a removed device" }
                    }
                }
            }
        }
    }
}

/// The "Code" select of the detection filter forms.
pub fn code_select(selected: Option<crate::detect::Code>) -> Markup {
    html! {
        label {
            span { "Code" }
            select name="code" {
                option value="" { "any" }
                @for c in crate::detect::Code::ALL {
                    option value=(c.as_str()) selected[selected == Some(c)] { (c.as_str()) }
                }
            }
        }
    }
}
