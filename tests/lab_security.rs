//! The web UI's security against a real netmon in the lab router. netmon runs with `[web] auth = "password"` and a hash made by
//! `netmon passwd` itself; every request goes over TCP to 127.0.0.1:8080 inside the
//! router namespace, like a browser's would.
//!
//! 1. `http_security`: every state-changing route answers 401/303-to-login without a
//!    session and 403 without a valid CSRF token (and works with one); crawling every
//!    GET route (read from `src/web/mod.rs`, so new routes are included) with a session
//!    leaves the database's contents unchanged; the security headers are on every
//!    response; `next=` open-redirect attempts land on `/`; repeated wrong passwords
//!    are throttled (429, `Retry-After`).
//! 2. `hostile_strings_are_stored_verbatim_and_rendered_inert`: DHCP hostnames, PTR
//!    names, DNS names (rows written into the database while netmon is stopped) and an
//!    AS organisation (through the real enrichment path: netmon's ASN table lookup)
//!    carrying HTML/JS/SQL payloads come back byte-exact from every JSON endpoint and
//!    only escaped from every page.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use serde_json::Value;

const PASSWORD: &str = "lab password 1234";

const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"><img src=x onerror=alert(1)>";
const SQL: &str = "'; DROP TABLE flows;--";
const PAYLOADS: [&str; 3] = [SCRIPT, IMG, SQL];

/// The CSP netmon must send (src/web/mod.rs `CSP`).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn assert_security_headers(what: &str, r: &HttpResponse) {
    let h = |name: &str| r.header(name).unwrap_or("");
    assert_eq!(h("content-security-policy"), CSP, "{what} ({})", r.status);
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    let cache = h("cache-control");
    if what.contains("/assets/") && r.status == 200 {
        assert!(
            cache == "no-cache" || cache.contains("immutable"),
            "{what}: {cache}"
        );
    } else {
        assert_eq!(cache, "no-store", "{what} ({})", r.status);
    }
}

/// Requests to netmon that check the security headers of every answer.
struct Client<'a> {
    lab: &'a Lab,
    seen: usize,
}

impl Client<'_> {
    fn req(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpResponse {
        let r = self
            .lab
            .http_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_security_headers(&format!("{method} {path}"), &r);
        self.seen += 1;
        r
    }

    fn get(&mut self, path: &str, session: Option<&WebSession>) -> HttpResponse {
        match session {
            Some(s) => self.req("GET", path, &[("Cookie", &s.cookie)], ""),
            None => self.req("GET", path, &[], ""),
        }
    }

    fn post_form(&mut self, path: &str, body: &str, session: Option<&WebSession>) -> HttpResponse {
        let form = ("Content-Type", "application/x-www-form-urlencoded");
        match session {
            Some(s) => self.req("POST", path, &[form, ("Cookie", &s.cookie)], body),
            None => self.req("POST", path, &[form], body),
        }
    }
}

/// The status line and headers of `/events` (a stream that never ends on its own).
fn events_head(lab: &Lab, session: &WebSession) -> String {
    let mut s = lab
        .connect_in("rtr", WEB.parse().expect("WEB"))
        .expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET /events HTTP/1.1\r\nHost: {WEB}\r\nCookie: {}\r\n\r\n",
        session.cookie
    )
    .expect("send");
    let mut buf = [0u8; 2048];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Every row of every table, as text, sorted; tables the collectors change on their
/// own ([`is_traffic_table`]) are left out, except the ended flows.
fn db_contents(lab: &Lab) -> BTreeMap<String, Vec<String>> {
    let db = lab.db();
    db.busy_timeout(Duration::from_secs(5)).ok();
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        let sql = if t == "flows" {
            "SELECT * FROM flows WHERE ended_at IS NOT NULL".to_owned()
        } else if is_traffic_table(&t) {
            continue;
        } else {
            format!("SELECT * FROM \"{t}\"")
        };
        let mut stmt = db.prepare(&sql).unwrap();
        let n = stmt.column_count();
        let mut rows: Vec<String> = stmt
            .query_map([], |r| {
                let mut cells = Vec::with_capacity(n);
                for i in 0..n {
                    let v: rusqlite::types::Value = r.get(i)?;
                    cells.push(format!("{v:?}"));
                }
                Ok(cells.join("|"))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.sort();
        out.insert(t, rows);
    }
    out
}

/// Tables the collectors change with time and traffic alone (including the crawl's
/// own loopback connections to netmon, which conntrack reports like any other) and
/// that no page or API handler reaches: handlers change data only by sending the
/// writer a `Command`, which no GET handler does. Live flows, the per-minute and
/// per-hour rollups, router health samples, firewall drops. Ended flows are compared
/// all the same (an ended flow never changes).
fn is_traffic_table(t: &str) -> bool {
    t == "flows"
        || t.ends_with("_minutes")
        || t.ends_with("_hours")
        || t.starts_with("system")
        || t.starts_with("drop")
}

fn diff(a: &BTreeMap<String, Vec<String>>, b: &BTreeMap<String, Vec<String>>) -> String {
    let mut out = String::new();
    for (t, rows) in a {
        let other = b.get(t).cloned().unwrap_or_default();
        if *rows != other {
            let gone: Vec<_> = rows.iter().filter(|r| !other.contains(r)).take(5).collect();
            let new: Vec<_> = other.iter().filter(|r| !rows.contains(r)).take(5).collect();
            out.push_str(&format!(
                "table {t}: before-only {gone:?}\n  after-only {new:?}\n"
            ));
        }
    }
    out
}

#[test]
fn http_security() {
    let lab = Lab::up("sec");
    let web = password_web(PASSWORD);
    let _nm = lab.start_netmon(&format!("[enrich]\nrdns = false\n{web}"));
    // Some traffic, so there are a device, a remote host and ended flows to show.
    lab.download("lan", 46001, &format!("http://{WAN4}/small.bin"));
    assert!(
        wait_until(Duration::from_secs(10), || {
            lab.db_i64("SELECT count(*) FROM devices") > 0
                && lab.db_i64("SELECT count(*) FROM remote_hosts") > 0
                && lab.db_i64(
                    "SELECT count(*) FROM flows WHERE ended_at IS NOT NULL AND dst_port = 80",
                ) > 0
        }),
        "no device/host/ended flow stored"
    );
    let device = lab.db_i64("SELECT min(id) FROM devices");
    let host = lab.db_i64("SELECT min(id) FROM remote_hosts");
    let mut c = Client { lab: &lab, seen: 0 };

    // --- no session ------------------------------------------------------------------
    let r = c.get("/", None);
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/login?next=/"))
    );
    let r = c.get("/hosts?q=a", None);
    assert_eq!(r.header("location"), Some("/login?next=/hosts%3Fq%3Da"));
    let r = c.get("/api/flows", None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(c.get("/healthz", None).status, 200);
    assert_eq!(c.get("/metrics", None).status, 200);
    assert_eq!(c.get("/login", None).status, 200);
    assert_eq!(c.get("/assets/netmon.css", None).status, 200);
    assert_eq!(c.get("/nope", None).status, 303);

    // --- login -------------------------------------------------------------------------
    let r = c.post_form("/login", "password=wrong", None);
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    let r = c.post_form(
        "/login",
        &format!("password={}", form_encode(PASSWORD)),
        None,
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let cookie = r.header("set-cookie").expect("session cookie").to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie.split(';').any(|a| a.trim() == attr),
            "{attr}: {cookie}"
        );
    }
    let s = lab.login(PASSWORD).expect("login");
    assert_eq!(s.csrf.len(), 64, "{s:?}");

    // --- every state-changing route: 401/303 without a session, 403 without the token --
    let name_before: Option<String> = lab
        .db()
        .query_row("SELECT name FROM devices WHERE id = ?1", [device], |r| {
            r.get(0)
        })
        .unwrap();
    let mut state_changing = 0;
    for (path, methods) in declared_routes() {
        for method in methods.iter().filter(|m| **m != "GET") {
            if path == "/login" {
                continue;
            }
            state_changing += 1;
            let uri = path.replace("{id}", &device.to_string());
            let form = ("Content-Type", "application/x-www-form-urlencoded");
            let body = format!("name=pwned&csrf={}", s.csrf);
            let r = c.req(method, &uri, &[form], &body);
            if uri.starts_with("/api/") {
                assert_eq!(r.status, 401, "{method} {uri} without a session");
            } else {
                assert_eq!(
                    (r.status, r.header("location")),
                    (303, Some("/login")),
                    "{method} {uri} without a session"
                );
            }
            let cookie = ("Cookie", s.cookie.as_str());
            let wrong = "f".repeat(64);
            for (what, headers, body) in [
                ("no token", vec![form, cookie], "name=pwned".to_owned()),
                (
                    "wrong field",
                    vec![form, cookie],
                    format!("name=pwned&csrf={wrong}"),
                ),
                (
                    "wrong header",
                    vec![form, cookie, ("X-CSRF-Token", wrong.as_str())],
                    "name=pwned".to_owned(),
                ),
                (
                    "json body",
                    vec![("Content-Type", "application/json"), cookie],
                    format!("{{\"csrf\":\"{}\"}}", s.csrf),
                ),
            ] {
                let r = c.req(method, &uri, &headers, &body);
                assert_eq!(r.status, 403, "{method} {uri} with {what}: {}", r.body);
            }
            // A cross-site form post is refused even with the token.
            let r = c.req(
                method,
                &uri,
                &[form, cookie, ("Sec-Fetch-Site", "cross-site")],
                &body,
            );
            assert_eq!(r.status, 403, "{method} {uri} cross-site");
        }
    }
    assert!(state_changing >= 2, "no state-changing routes found");
    let name_now: Option<String> = lab
        .db()
        .query_row("SELECT name FROM devices WHERE id = ?1", [device], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        name_now, name_before,
        "a refused request changed the device"
    );
    // With the token the rename works (the checks above are not vacuous).
    let r = c.post_form(
        &format!("/devices/{device}/name"),
        &format!("name=lab+laptop&csrf={}", s.csrf),
        Some(&s),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(wait_until(Duration::from_secs(5), || {
        lab.db()
            .query_row("SELECT name FROM devices WHERE id = ?1", [device], |r| {
                r.get::<_, Option<String>>(0)
            })
            .ok()
            .flatten()
            .as_deref()
            == Some("lab laptop")
    }));

    // --- crawl every GET route: the database does not change ----------------------------
    std::thread::sleep(Duration::from_secs(2)); // the rename's commit and the download's flows settle
    let before = db_contents(&lab);
    let queries = [
        "",
        "?page=1&per_page=500",
        "?window=1440",
        "?since=0",
        "?show=all&direction=all&sort=bytes&order=asc",
        "?q=203.0&name=test&domain=test&device=1&client=10.",
        "?page=99999",
        "?name=%00%27%22%3C",
    ];
    let mut crawled = 0;
    for (path, methods) in declared_routes() {
        if !methods.contains(&"GET") {
            continue;
        }
        if path == "/events" {
            let head = events_head(&lab, &s);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-security-policy: default-src 'self'"),
                "{head}"
            );
            continue;
        }
        let ids = if path.contains("{id}") {
            let id = if path.contains("hosts") { host } else { device };
            vec![id.to_string(), "999999".into()]
        } else {
            vec![String::new()]
        };
        for id in &ids {
            for q in queries {
                let uri = format!(
                    "{}{q}",
                    path.replace("{id}", id).replace("{*path}", "netmon.js")
                );
                let r = c.get(&uri, Some(&s));
                assert!(
                    r.status < 500,
                    "GET {uri}: {} {}",
                    r.status,
                    truncate(&r.body, 500)
                );
                assert_ne!(r.status, 401, "GET {uri} with a session");
                crawled += 1;
            }
        }
    }
    assert!(crawled > 150, "crawled only {crawled}");
    std::thread::sleep(Duration::from_secs(1)); // anything a GET had caused would be committed now
    let after = db_contents(&lab);
    assert!(
        before == after,
        "GET requests changed the database:\n{}",
        diff(&before, &after)
    );
    assert!(before.contains_key("devices") && before.contains_key("remote_hosts"));
    // The comparison does see a change made the legitimate way (a POST).
    let r = c.post_form(
        &format!("/devices/{device}/name"),
        &format!("name=renamed&csrf={}", s.csrf),
        Some(&s),
    );
    assert_eq!(r.status, 303);
    assert!(
        wait_until(Duration::from_secs(5), || db_contents(&lab) != after),
        "the database comparison missed a rename"
    );

    // --- open redirects after login -------------------------------------------------------
    for next in [
        "//evil.test",
        "/\\evil.test",
        "https://evil.test",
        "/%2F%2Fevil.test",
        "%2F%2Fevil.test",
        "javascript:alert(1)",
    ] {
        let body = format!(
            "password={}&next={}",
            form_encode(PASSWORD),
            form_encode(next)
        );
        let r = c.post_form("/login", &body, None);
        assert_eq!(r.status, 303, "next={next}");
        assert_eq!(r.header("location"), Some("/"), "next={next}");
        let r = c.get(&format!("/login?next={}", form_encode(next)), Some(&s));
        assert_eq!(r.header("location"), Some("/"), "GET next={next}");
    }
    let body = format!("password={}&next=%2Fdns%3Fname%3Dx", form_encode(PASSWORD));
    assert_eq!(
        c.post_form("/login", &body, None).header("location"),
        Some("/dns?name=x")
    );

    // --- logout -----------------------------------------------------------------------------
    let r = c.post_form("/logout", "", Some(&s));
    assert_eq!(r.status, 403, "logout without the token");
    let r = c.post_form("/logout", &format!("csrf={}", s.csrf), Some(&s));
    assert_eq!((r.status, r.header("location")), (303, Some("/login")));
    assert_eq!(c.get("/", Some(&s)).status, 303, "the session is gone");

    // --- throttling (last: it locks this address out) ----------------------------------------
    for i in 0..5 {
        let r = c.post_form("/login", &format!("password=guess{i}"), None);
        assert_eq!(r.status, 401, "attempt {i}");
    }
    for password in ["guess", PASSWORD] {
        let r = c.post_form(
            "/login",
            &format!("password={}", form_encode(password)),
            None,
        );
        assert_eq!(r.status, 429, "{}", r.body);
        let retry: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=2).contains(&retry), "{retry}");
        assert!(r.header("set-cookie").is_none());
    }
    assert!(c.seen > 200);
}

/// A hit, an incident and a rule whose free text (title, evidence, domain, notes, org)
/// carries the payloads, written while netmon is stopped. Returns (incident id, rule id).
fn seed_hostile_detection(lab: &Lab, device: i64) -> (i64, i64) {
    let db = rusqlite::Connection::open(lab.db_path()).expect("open the database");
    db.busy_timeout(Duration::from_secs(5)).ok();
    let now = now_ms();
    let reasons = serde_json::json!([
        {"code": "RARE_PORT", "weight": 25, "evidence": SCRIPT},
        {"code": "NEW_DST", "weight": 30, "evidence": IMG},
    ])
    .to_string();
    db.execute(
        "INSERT INTO incidents (fingerprint, device_id, remote_ip, proto, dport, codes, title,
                                first_seen, last_seen, count, max_score, notes)
         VALUES ('fp-hostile', ?1, '198.51.100.10', 6, 4444, 'NEW_DST,RARE_PORT', ?2, ?3, ?3, 1, 55, ?4)",
        rusqlite::params![device, SCRIPT, now - 5000, SQL],
    )
    .unwrap();
    let incident = db.last_insert_rowid();
    db.execute(
        "INSERT INTO hits (ts, last_ts, count, device_id, remote_ip, proto, dport, domain, score,
                           codes, reasons, fingerprint, alertable, incident_id)
         VALUES (?1, ?1, 1, ?2, '198.51.100.10', 6, 4444, ?3, 55, 'NEW_DST,RARE_PORT', ?4, 'fp-hostile', 1, ?5)",
        rusqlite::params![now - 5000, device, IMG, reasons, incident],
    )
    .unwrap();
    db.execute(
        "INSERT INTO rules (action, device_id, org, notes, created_at) VALUES ('allow', ?1, ?2, ?3, ?4)",
        rusqlite::params![device, SQL, SCRIPT, now],
    )
    .unwrap();
    (incident, db.last_insert_rowid())
}

/// Every string anywhere in a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

#[test]
fn hostile_strings_are_stored_verbatim_and_rendered_inert() {
    let lab = Lab::up("hostile");
    // The AS organisation comes through netmon's own ASN lookup: the wan's range has a
    // hostile org name in the table.
    let csv = lab.dir.join("asn.csv");
    std::fs::write(
        &csv,
        format!(
            "203.0.113.0,203.0.113.255,64500,\"{}\"\n",
            IMG.replace('"', "\"\"")
        ),
    )
    .unwrap();
    let web = password_web(PASSWORD);
    let extra = format!(
        "[enrich]\nrdns = false\nasn_db = \"{}\"\n{web}",
        csv.display()
    );
    let mut nm = lab.start_netmon(&extra);
    lab.download("lan", 46101, &format!("http://{WAN4}/small.bin"));
    assert!(
        wait_until(Duration::from_secs(15), || lab.db_i64(&format!(
            "SELECT count(*) FROM remote_hosts WHERE ip = '{WAN4}' AND org IS NOT NULL"
        )) > 0),
        "the wan host got no AS organisation"
    );
    nm.sigterm();
    let (devices, hosts) = lab.seed_hostile(&PAYLOADS);
    let (incident, rule) = seed_hostile_detection(&lab, devices[0]);
    let _nm = lab.start_netmon(&extra);
    let s = lab.login(PASSWORD).expect("login");

    // Stored verbatim (and the SQL payload did nothing).
    let org: String = lab
        .db()
        .query_row("SELECT org FROM remote_hosts WHERE ip = ?1", [WAN4], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(org, IMG, "the org from the ASN table, byte for byte");
    for (i, payload) in PAYLOADS.iter().enumerate() {
        let hostname: String = lab
            .db()
            .query_row(
                "SELECT hostname FROM devices WHERE id = ?1",
                [devices[i]],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(hostname, *payload);
    }
    assert!(
        lab.db_i64("SELECT count(*) FROM flows") >= 3,
        "flows table intact"
    );

    let mut c = Client { lab: &lab, seen: 0 };
    let mut pages: Vec<String> = vec![
        "/flows".into(),
        "/flows?show=all&direction=all".into(),
        "/fragment/flows?show=all&direction=all".into(),
        "/?w=30d&w_hosts=7d&w_domains=30d&w_devices=24h&w_new=30d&w_ports=30d".into(),
        "/fragment/overview/new?w_new=30d".into(),
        "/devices".into(),
        "/hosts".into(),
        "/hosts?q=evil".into(),
        "/dns".into(),
        "/dns?name=evil.test".into(),
        "/router".into(),
        "/drops".into(),
        "/nope".into(),
    ];
    for d in &devices {
        pages.push(format!("/devices/{d}"));
        pages.push(format!("/flows?device={d}&show=all&direction=all"));
        pages.push(format!("/dns?device={d}"));
    }
    for h in &hosts {
        pages.push(format!("/hosts/{h}"));
    }
    let wan_host = lab.db_i64(&format!("SELECT id FROM remote_hosts WHERE ip = '{WAN4}'"));
    pages.push(format!("/hosts/{wan_host}"));
    pages.extend([
        "/anomalies?window=30d".to_owned(),
        "/incidents?state=all&window=30d".to_owned(),
        format!("/incidents/{incident}"),
        "/rules".to_owned(),
        format!("/rules/{rule}"),
        "/help".to_owned(),
        "/searches".to_owned(),
        "/settings".to_owned(),
    ]);
    // Every GET page route is covered (the list above names one of each).
    for (path, methods) in declared_routes() {
        let page = methods.contains(&"GET")
            && !path.starts_with("/api/")
            && ![
                "/events",
                "/healthz",
                "/metrics",
                "/assets/{*path}",
                "/login",
            ]
            .contains(&path.as_str());
        if page {
            let prefix = path.split('{').next().unwrap_or("");
            assert!(
                pages.iter().any(|p| p.starts_with(prefix)),
                "page route {path} not in the hostile-string crawl"
            );
        }
    }
    let mut shown = BTreeMap::<&str, usize>::new();
    for page in &pages {
        let r = c.get(page, Some(&s));
        assert!(
            r.status == 200 || page == "/nope",
            "GET {page}: {}",
            r.status
        );
        let body = &r.body;
        for raw in [
            "<script>alert",
            "<img src=x",
            "onerror=alert(1)>",
            "\"><img",
        ] {
            assert!(
                !body.contains(raw),
                "GET {page}: raw payload {raw:?} in the page:\n{}",
                truncate(body, 3000)
            );
        }
        if body.contains("&lt;script&gt;alert(1)&lt;/script&gt;") {
            *shown.entry("script").or_default() += 1;
        }
        if body.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;") {
            *shown.entry("img").or_default() += 1;
        }
        if body.contains(SQL) || body.contains("&#39;; DROP TABLE flows;--") {
            *shown.entry("sql").or_default() += 1;
        }
    }
    // Each payload is shown (escaped) on the pages that list it.
    for (page, must) in [
        (
            "/devices",
            vec![
                "&lt;script&gt;alert(1)&lt;/script&gt;",
                "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
                SQL,
            ],
        ),
        (
            "/hosts",
            vec![
                "&lt;script&gt;alert(1)&lt;/script&gt;",
                "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;",
                SQL,
            ],
        ),
        (
            "/dns",
            vec!["&lt;script&gt;alert(1)&lt;/script&gt;.evil.test", SQL],
        ),
    ] {
        let body = c.get(page, Some(&s)).body;
        for m in must {
            assert!(
                body.contains(m),
                "{page} does not show {m:?}:\n{}",
                truncate(&body, 3000)
            );
        }
    }
    let host_page = c.get(&format!("/hosts/{}", hosts[0]), Some(&s)).body;
    assert!(
        host_page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "PTR on the host page"
    );
    assert!(
        host_page.contains("&quot;&gt;&lt;img"),
        "org on the host page"
    );
    let wan_page = c.get(&format!("/hosts/{wan_host}"), Some(&s)).body;
    assert!(
        wan_page.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
        "ASN org:\n{}",
        truncate(&wan_page, 3000)
    );
    assert!(shown.len() == 3, "payloads shown: {shown:?}");

    // JSON: the exact strings, served as JSON (never sniffed as HTML).
    let mut apis = vec![
        "/api/devices".to_owned(),
        "/api/hosts?per_page=500".into(),
        "/api/dns?per_page=500".into(),
        "/api/flows?show=all&direction=all&per_page=500".into(),
        "/api/router".into(),
        "/api/drops".into(),
    ];
    for d in &devices {
        apis.push(format!("/api/devices/{d}/minutes?since=0"));
    }
    for h in &hosts {
        apis.push(format!("/api/hosts/{h}/minutes?since=0"));
    }
    let mut all = Vec::new();
    for api in &apis {
        let r = c.get(api, Some(&s));
        assert_eq!(r.status, 200, "GET {api}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"), "{api}");
        let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{api}: {e}"));
        strings(&v, &mut all);
    }
    for payload in PAYLOADS {
        assert!(
            all.iter().any(|s| s == payload),
            "JSON lacks {payload:?} exactly"
        );
        let name = format!("{payload}.evil.test");
        assert!(all.contains(&name), "JSON lacks the DNS name {name:?}");
    }
    // The script builds no HTML from data (only the server-rendered fragment).
    let js = c.get("/assets/netmon.js", None).body;
    assert_eq!(
        js.matches("innerHTML").count(),
        1,
        "netmon.js innerHTML uses"
    );
    assert!(
        !js.contains("outerHTML")
            && !js.contains("insertAdjacentHTML")
            && !js.contains("document.write")
    );
}
