//! The web UI in a real browser: headless Chromium from Debian, driven over
//! the DevTools protocol (`tests/browser/mod.rs`), against netmon running in the lab with
//! real traffic behind it. One lab and one browser for the whole walk, to keep CI short.
//!
//! - Every page loads with its key content, without a console error, an uncaught
//!   exception or a CSP violation (those arrive as browser log errors).
//! - Hostile strings — a device name typed into the rename form, DHCP hostnames, DNS names
//!   and PTR names carrying `<script>`/`"onmouseover=` payloads — render as text: no
//!   page has an element or attribute the payloads would have injected, and the marker
//!   they would set never appears.
//! - Filters apply and clear (the form resets), pagination moves through pages, a
//!   device is renamed inline, an incident is acknowledged, a search is saved and
//!   opened again from the saved searches; the overview remembers a panel's window.
//! - Live: with the overview open, a new lab connection appears in the flows table
//!   within 2 s without a page reload, and an idle overview makes no requests at all
//!   for 30 s (no polling: updates arrive on the one SSE stream).
//! - Layout, at desktop width and at a 390 px phone: no element reaches past the viewport's
//!   sides unless a scroll container holds it, chart text is drawn at 10 px or more, and
//!   no device is labelled by its id (`#3`). Every page at both widths is saved as a
//!   screenshot in `target/ui-screenshots/` (CI keeps them as artifacts).

mod browser;
mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use browser::Browser;
use common::*;
use serde_json::json;

/// Each payload sets `window.__xss` if it ever runs.
const PAYLOADS: [&str; 3] = [
    "<script>window.__xss=1</script>",
    "\"onmouseover=\"window.__xss=1\" x=\"",
    "<img src=x onerror=\"window.__xss=1\">",
];

/// Elements or attributes a payload could have injected; empty when the page is clean.
const INJECTED: &str = r#"(() => {
  const bad = [];
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      if (a.name.startsWith('on')) bad.push(el.tagName + '[' + a.name + ']');
    }
  }
  for (const s of document.scripts) {
    if (!s.src || new URL(s.src).pathname.indexOf('/assets/') !== 0) bad.push('script ' + s.outerHTML.slice(0, 80));
  }
  if (document.querySelector('img[src="x"]')) bad.push('img[src=x]');
  if (window.__xss !== undefined) bad.push('a payload ran');
  return bad;
})()"#;

/// What breaks the layout on the open page: elements past the viewport's left or right
/// edge outside any scroll (or clipping) container, chart text under 10 CSS px as drawn,
/// and device links labelled `#<id>`.
const LAYOUT: &str = r#"(() => {
  const vw = document.documentElement.clientWidth;
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.classList.length ? '.' + [...el.classList].join('.') : '');
  const held = el => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      if (['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(a).overflowX)) return true;
    }
    return false;
  };
  const overflow = [];
  const page = document.documentElement.scrollWidth;
  if (page > vw + 1) overflow.push('the page is ' + page + ' px wide in a ' + vw + ' px viewport');
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if ((r.right > vw + 1 || r.left < -1) && !held(el)) {
      overflow.push(name(el) + ' spans ' + Math.round(r.left) + '..' + Math.round(r.right));
    }
  }
  const small_text = [];
  for (const svg of document.querySelectorAll('svg[viewBox]')) {
    const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
    for (const t of svg.querySelectorAll('text')) {
      const px = parseFloat(getComputedStyle(t).fontSize) * scale;
      if (px < 10) small_text.push(t.textContent + ' at ' + px.toFixed(1) + ' px');
    }
  }
  const id_labels = [...document.querySelectorAll('a[href^="/devices/"]')]
    .map(a => a.textContent.trim()).filter(t => /^#\d+$/.test(t));
  return { overflow: overflow.slice(0, 8), small_text: small_text.slice(0, 8), id_labels };
})()"#;

/// Opens every page of `pages` at `width` × `height` (a phone when `mobile`), asserts
/// [`LAYOUT`] finds nothing, and saves each as `<name>-<tag>.png`.
fn layout_walk(b: &mut Browser, pages: &[(&str, String)], width: u32, height: u32, mobile: bool) {
    let tag = if mobile { "phone" } else { "desktop" };
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
    );
    let shots = screenshots();
    let mut broken = Vec::new();
    for (name, path) in pages {
        b.goto(&format!("http://{WEB}{path}"));
        b.pump(Duration::from_millis(300));
        let found = b.eval(LAYOUT);
        if found != json!({ "overflow": [], "small_text": [], "id_labels": [] }) {
            broken.push(format!("{path}: {found}"));
        }
        b.screenshot(&shots.join(format!("{name}-{tag}.png")));
    }
    b.call("Emulation.clearDeviceMetricsOverride", json!({}));
    assert!(
        broken.is_empty(),
        "layout at {width} px ({tag}):\n{}",
        broken.join("\n")
    );
}

fn screenshots() -> PathBuf {
    PathBuf::from(REPO).join("target/ui-screenshots")
}

/// Opens `path`, checks its heading and `texts`, the absence of injected markup and
/// of errors; returns the page's visible text.
#[track_caller]
fn visit(b: &mut Browser, path: &str, heading: &str, texts: &[&str]) -> String {
    let from = b.events.len();
    b.goto(&format!("http://{WEB}{path}"));
    b.pump(Duration::from_millis(300));
    let h1 = b.eval("document.querySelector('main h1, h1')?.textContent ?? ''");
    assert!(
        h1.as_str().unwrap_or("").contains(heading),
        "{path}: heading {h1} lacks {heading:?}"
    );
    let text = b.eval("document.body.innerText");
    let text = text.as_str().unwrap_or("").to_owned();
    for t in texts {
        assert!(text.contains(t), "{path}: no {t:?} on the page:\n{text}");
    }
    let injected = b.eval(INJECTED);
    assert_eq!(injected, json!([]), "{path}: injected markup");
    let errors = b.errors_since(from);
    assert!(errors.is_empty(), "{path}: browser errors: {errors:#?}");
    text
}

#[test]
fn ui_pages_filters_rename_live_updates_and_xss_in_chromium() {
    let lab = Lab::up("uib");
    let mut nm = lab.start_netmon("[enrich]\nrdns = false\n");
    // Real traffic: DNS lookups through the router's dnsmasq and a download.
    for i in 0..24 {
        let got = lab.client(
            "lan",
            &["dns", RTR_LAN4, &format!("n{i}.wan.lab"), "--type", "A"],
        );
        assert_eq!(got.trim(), WAN4, "n{i}.wan.lab");
    }
    lab.download("lan", 47001, &format!("http://{WAN4}/small.bin"));
    assert!(
        wait_until(Duration::from_secs(15), || {
            lab.db_i64("SELECT count(*) FROM dns_queries") >= 24
                && lab.db_i64("SELECT count(*) FROM flows WHERE dst_port = 80") >= 1
        }),
        "netmon stored no DNS queries or flows"
    );
    // Hostile DHCP hostnames, PTR names and DNS names, written while netmon is stopped.
    nm.sigterm();
    let (devices, hosts) = lab.seed_hostile(&PAYLOADS);
    // An open incident with a hostile title, for the incident pages and the ack.
    let incident: i64 = {
        let db = rusqlite::Connection::open(lab.db_path()).expect("open the database");
        db.execute(
            "INSERT INTO incidents (fingerprint, device_id, remote_ip, proto, dport, codes, title,
                                    first_seen, last_seen, count, max_score)
             VALUES ('ui-test', ?1, '198.51.100.10', 6, 443, 'NEW_DST,RARE_PORT', ?2, ?3, ?3, 2, 75)",
            rusqlite::params![devices[0], format!("rare port to {}", PAYLOADS[0]), now_ms() - 5_000],
        )
        .expect("seed an incident");
        db.last_insert_rowid()
    };
    let _nm = lab.start_netmon("[enrich]\nrdns = false\n");
    let client: i64 = lab.db_i64(&format!(
        "SELECT device_id FROM device_addrs WHERE ip = '{CLIENT4}'"
    ));
    let wan: i64 = lab.db_i64(&format!("SELECT id FROM remote_hosts WHERE ip = '{WAN4}'"));

    let mut b = Browser::start(&lab, 1280, 900);

    // --- every page ----------------------------------------------------------------------
    visit(&mut b, "/flows", "", &[CLIENT4]);
    visit(&mut b, "/devices", "Devices", &[CLIENT4, PAYLOADS[0]]);
    visit(&mut b, &format!("/devices/{client}"), "", &[CLIENT4]);
    visit(&mut b, "/hosts", "Remote hosts", &[WAN4]);
    visit(&mut b, &format!("/hosts/{wan}"), WAN4, &[".wan.lab"]);
    visit(&mut b, "/dns", "DNS queries", &["n3.wan.lab"]);

    // --- the overview: a panel's window is remembered across reloads; hover values ----
    visit(
        &mut b,
        "/",
        "Overview",
        &["Internet link", "Top remote hosts"],
    );
    b.click("#ov-hosts nav.switch a[href='/?w_hosts=24h']", true);
    b.goto(&format!("http://{WEB}/"));
    let current = |b: &mut Browser, panel: &str| {
        b.eval(&format!(
            "document.querySelector('#{panel} nav.switch a[aria-current=true]')?.textContent ?? null"
        ))
    };
    assert_eq!(
        current(&mut b, "ov-hosts"),
        json!("24h"),
        "the hosts window is remembered"
    );
    assert_eq!(
        current(&mut b, "ov-domains"),
        json!("1h"),
        "other panels keep theirs"
    );
    assert_eq!(
        b.eval("document.querySelector('#ov-hosts').getAttribute('data-src')"),
        json!("/fragment/overview/hosts?w_hosts=24h")
    );
    let at = b.eval(
        "(() => { const r = document.querySelector('#chart-wan svg').getBoundingClientRect(); \
         return [r.left + r.width * 0.95, r.top + r.height / 2]; })()",
    );
    b.call(
        "Input.dispatchMouseEvent",
        json!({ "type": "mouseMoved", "x": at[0], "y": at[1] }),
    );
    b.pump(Duration::from_millis(200));
    let tip = b.eval(
        "(() => { const t = document.querySelector('#chart-wan .tip'); return t.hidden ? '' : t.textContent; })()",
    );
    assert!(
        tip.as_str().is_some_and(|t| t.contains(" · ")),
        "no hover read-out: {tip}"
    );
    let errors = b.errors_since(0);
    assert!(
        errors.is_empty(),
        "browser errors on the overview: {errors:#?}"
    );
    visit(&mut b, "/router", "Router", &[]);
    visit(&mut b, "/drops", "Firewall drops", &[]);
    for (i, id) in devices.iter().enumerate() {
        visit(&mut b, &format!("/devices/{id}"), PAYLOADS[i], &[]);
    }
    for (i, id) in hosts.iter().enumerate() {
        visit(&mut b, &format!("/hosts/{id}"), "", &[PAYLOADS[i]]);
    }
    // Pages added by later issues are walked too once their routes exist.
    for (path, heading) in [
        ("/anomalies", "Anomalies"),
        ("/incidents", "Incidents"),
        ("/rules", "Rules"),
        ("/searches", "Saved searches"),
        ("/settings", "Health and settings"),
        ("/help", ""),
    ] {
        visit(&mut b, path, heading, &[]);
    }
    visit(
        &mut b,
        "/settings",
        "Health and settings",
        &["netmon_collector_drops_total", "max_db_mb"],
    );

    // --- acknowledge an incident ----------------------------------------------------------
    visit(
        &mut b,
        "/incidents",
        "Incidents",
        &[&format!("rare port to {}", PAYLOADS[0])],
    );
    visit(
        &mut b,
        &format!("/incidents/{incident}"),
        "",
        &[PAYLOADS[0]],
    );
    b.click(
        &format!("form[action='/incidents/{incident}/ack'] button[type=submit]"),
        true,
    );
    let acked = lab.db_i64(&format!(
        "SELECT acked_at IS NOT NULL FROM incidents WHERE id = {incident}"
    ));
    assert_eq!(acked, 1, "the incident was not acknowledged");
    b.goto(&format!("http://{WEB}/incidents/{incident}"));
    let text = b.eval("document.body.innerText");
    assert!(
        text.as_str().unwrap_or("").contains("acknowledged"),
        "the incident page does not say acknowledged: {text}"
    );

    // --- save a search and open it from the list ------------------------------------------
    b.goto(&format!("http://{WEB}/dns?name=n5.wan.lab"));
    b.fill("form.save-search input[name=name]", "fifth name");
    b.click("form.save-search button[type=submit]", true);
    let saved = visit(
        &mut b,
        "/searches",
        "Saved searches",
        &["/dns?name=n5.wan.lab"],
    );
    assert_eq!(
        b.eval("document.querySelector('table.saved input[name=name]')?.value"),
        json!("fifth name"),
        "the saved search's name (in its rename field): {saved}"
    );
    b.click("table.saved td.url a", true);
    assert_eq!(
        b.eval("new URL(location.href).searchParams.get('name')"),
        json!("n5.wan.lab"),
        "the saved search opens its filter"
    );

    // --- a filter applies and clears; pages move ------------------------------------------
    visit(&mut b, "/dns?per_page=10", "DNS queries", &[]);
    b.fill("form.filters input[name=name]", "n7.wan.lab");
    b.click("form.filters button[type=submit]", true);
    let rows =
        b.eval("[...document.querySelectorAll('main table tbody tr')].map(r => r.innerText)");
    let rows = rows.as_array().expect("rows").clone();
    assert!(!rows.is_empty(), "the name filter found nothing");
    assert!(
        rows.iter()
            .all(|r| r.as_str().unwrap_or("").contains("n7.wan.lab")),
        "rows outside the filter: {rows:?}"
    );
    assert_eq!(
        b.eval("new URL(location.href).searchParams.get('name')"),
        json!("n7.wan.lab"),
        "the filter is in the URL (shareable)"
    );
    b.click("form.filters a.clear", true);
    assert_eq!(
        b.eval("document.querySelector('form.filters input[name=name]').value"),
        json!(""),
        "clear resets the form"
    );
    assert_eq!(b.eval("location.search"), json!(""), "clear resets the URL");
    b.goto(&format!("http://{WEB}/dns?per_page=10"));
    let first = b.eval("document.querySelector('nav.pager span:not(.muted)')?.textContent");
    assert_eq!(first, json!("page 1 of 3"), "24+ queries in pages of 10");
    b.click("nav.pager a[rel=next]", true);
    assert_eq!(
        b.eval("document.querySelector('nav.pager span:not(.muted)')?.textContent"),
        json!("page 2 of 3")
    );
    b.click("nav.pager a[rel=last]", true);
    assert_eq!(
        b.eval("new URL(location.href).searchParams.get('page')"),
        json!("3")
    );

    // --- time filters in the browser's time zone -------------------------------------------
    b.call(
        "Emulation.setTimezoneOverride",
        json!({ "timezoneId": "Europe/Berlin" }),
    );
    b.goto(&format!("http://{WEB}/flows?show=all"));
    b.fill("form.filters input[name=from]", "2026-12-04 22:00");
    b.click("form.filters button[type=submit]", true);
    assert_eq!(
        b.eval("new URL(location.href).searchParams.get('from')"),
        json!("2026-12-04T22:00:00+01:00"),
        "a local time is sent with the browser's offset"
    );
    assert_eq!(
        b.eval("document.querySelector('form.filters input[name=from]').value"),
        json!("2026-12-04 22:00"),
        "the server's UTC time is shown local again"
    );
    b.call("Emulation.setTimezoneOverride", json!({ "timezoneId": "" }));

    // --- rename inline, with a hostile name -----------------------------------------------
    let name = "<b onmouseover=\"window.__xss=1\">lab laptop</b>";
    b.goto(&format!("http://{WEB}/devices/{client}"));
    b.fill("form.rename input[name=name]", name);
    b.click("form.rename button[type=submit]", true);
    let stored: String = lab
        .db()
        .query_row("SELECT name FROM devices WHERE id = ?1", [client], |r| {
            r.get(0)
        })
        .expect("renamed");
    assert_eq!(stored, name, "stored verbatim");
    for path in [
        "/flows".to_owned(),
        "/devices".into(),
        format!("/devices/{client}"),
        "/dns".into(),
    ] {
        visit(&mut b, &path, "", &[name]);
    }

    // --- every page at desktop and phone width ---------------------------------------------
    let pages: Vec<(&str, String)> = vec![
        ("overview", "/".into()),
        ("flows", "/flows".into()),
        ("devices", "/devices".into()),
        ("device", format!("/devices/{client}")),
        ("hosts", "/hosts".into()),
        ("host", format!("/hosts/{wan}")),
        ("dns", "/dns".into()),
        ("router", "/router".into()),
        ("drops", "/drops".into()),
        ("anomalies", "/anomalies".into()),
        ("incidents", "/incidents".into()),
        ("incident", format!("/incidents/{incident}")),
        ("rules", "/rules".into()),
        ("searches", "/searches".into()),
        ("settings", "/settings".into()),
        ("help", "/help".into()),
    ];
    layout_walk(&mut b, &pages, 1280, 900, false);
    layout_walk(&mut b, &pages, 390, 844, true);

    // --- live updates without polling -----------------------------------------------------
    b.goto(&format!("http://{WEB}/flows"));
    assert!(
        b.wait_js(
            "document.getElementById('live-status')?.textContent === 'live'",
            Duration::from_secs(10)
        ),
        "the overview's live stream did not connect"
    );
    let from = b.events.len();
    let sport = 47123;
    let started = Instant::now();
    let hold = lab.hold_tcp("lan", 20, &[format!("{WAN4}:{SINK_PORT}:{sport}")]);
    let shown = b.wait_js(
        &format!("document.getElementById('flows-live').innerText.includes(':{sport}')"),
        Duration::from_secs(5),
    );
    let took = started.elapsed();
    assert!(
        shown,
        "the new connection never appeared in the live flows table"
    );
    assert!(
        took <= Duration::from_secs(2),
        "the new connection took {took:?} to appear (want ≤ 2 s)"
    );
    let navigations = b.events[from..]
        .iter()
        .filter(|e| e["method"] == "Page.frameNavigated")
        .count();
    assert_eq!(navigations, 0, "the page reloaded");
    drop(hold);
    // Idle: the held connection ended; let its end settle, then count requests.
    b.pump(Duration::from_secs(5));
    let quiet_from = b.events.len();
    b.pump(Duration::from_secs(30));
    let requests = b.requests_since(quiet_from);
    assert!(
        requests.is_empty(),
        "an idle overview made requests (polling?): {requests:?}"
    );
    let errors = b.errors_since(0);
    assert!(errors.is_empty(), "browser errors: {errors:#?}");
}
