//! The detection pages end to end: anomalies, incidents, one incident, rules, their JSON
//! forms, the "Alerts: N" badge and the actions — over the shared HTTP fixture
//! (`common::http`) seeded with hits, incidents and rules, and a stand-in writer thread
//! that answers commands.

mod common;

use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use netmon::config::Config;
use netmon::detect::Code;
use netmon::detect::rules::Action;
use netmon::event::Tick;
use netmon::event::{Command, CommandReply, Event};
use rusqlite::Connection;
use tempfile::TempDir;
use tokio::sync::watch;

use common::http::{open_auth, send};
use common::now_ms;

const EVIL: &str = "<script>alert(1)</script>";
const EVIL_HTML: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

/// The shared HTTP fixture on this file's seed, the writer's channel kept for
/// [`Fixture::writer`].
struct Fixture {
    _dir: TempDir,
    app: Router,
    ticks: watch::Sender<Tick>,
    writer_rx: Option<Receiver<Event>>,
    /// A second connection for changes between requests.
    conn: Connection,
}

/// Device 1 (hostile name), device 2; hits 1 (flow-level, open, incident 1, hostile
/// evidence and domain), 2 (device-level port scan, incident 2, acknowledged), 3 (old);
/// incidents 1 (open), 2 (acknowledged), 3 (muted); one rule; a flow and a DNS answer
/// behind hit 1.
fn seed(conn: &Connection, now: i64) {
    conn.execute_batch(&format!(
        "INSERT INTO devices (id, ip, name, hostname, first_seen, last_seen) VALUES
           (1, '10.0.0.5', '{EVIL}', 'laptop', 0, 0), (2, '10.0.0.6', NULL, 'tv', 0, 0);
         INSERT INTO remote_hosts (id, ip, first_seen, last_seen) VALUES (1, '198.51.100.1', 0, 0);
         INSERT INTO flows (id, ident, ct_id, proto, direction, src_ip, src_port, dst_ip,
                            dst_port, reply_dst_ip, status, first_seen, last_seen, device_id,
                            remote_host_id)
           VALUES (9, 9, 9, 6, 0, netmon_ip_blob('10.0.0.5'), 40000, netmon_ip_blob('198.51.100.1'),
                   8443, netmon_ip_blob('203.0.113.1'), 0, {a}, {a}, 1, 1);
         INSERT INTO dns_names (id, name) VALUES (50, 'x.evil.test');
         INSERT INTO dns_queries (id, ts, client, device_id, qname_id, qtype, answers, source)
           VALUES (1, {a}, netmon_ip_blob('10.0.0.5'), 1, 50, 1, 1, 0);
         INSERT INTO dns_answers (query_id, ip, client, ttl)
           VALUES (1, netmon_ip_blob('198.51.100.1'), netmon_ip_blob('10.0.0.5'), 60);
         INSERT INTO hits (id, ts, last_ts, count, device_id, flow_id, remote_host_id, remote_ip, proto,
                           dport, domain, score, codes, reasons, fingerprint, alertable, incident_id, acked_at)
           VALUES
           (1, {a}, {a}, 3, 1, 9, 1, '198.51.100.1', 6, 8443, 'x.evil.test', 75, 'NEW_DST,RARE_PORT',
            '[{{\"code\":\"RARE_PORT\",\"weight\":25,\"evidence\":\"port 8443 {EVIL}\"}},
              {{\"code\":\"NEW_DST\",\"weight\":50,\"evidence\":\"first contact\"}}]', 'f1', 1, 1, NULL),
           (2, {b}, {b}, 1, 2, NULL, NULL, NULL, NULL, NULL, NULL, 90, 'PORT_SCAN_LIKE',
            '[{{\"code\":\"PORT_SCAN_LIKE\",\"weight\":90,\"evidence\":\"45 ports on 30 hosts\"}}]', 'f2', 1, 2, {b}),
           (3, {old}, {old}, 1, 1, NULL, NULL, '198.51.100.3', 17, 53, NULL, 40, 'NEW_DST', '[]', 'f3', 0, NULL, NULL);
         INSERT INTO incidents (id, fingerprint, device_id, remote_ip, proto, dport, codes, title,
                                first_seen, last_seen, count, max_score, acked_at, muted_until, notes)
           VALUES
           (1, 'i1', 1, '198.51.100.1', 6, 8443, 'NEW_DST,RARE_PORT', 'rare port to {EVIL}', {a}, {a}, 3, 75, NULL, NULL, '{EVIL}'),
           (2, 'i2', 2, NULL, NULL, NULL, 'PORT_SCAN_LIKE', 'port scan', {b}, {b}, 1, 90, {b}, NULL, ''),
           (3, 'i3', 2, NULL, NULL, NULL, 'BEACON', 'beacon', {a}, {a}, 1, 70, NULL, {future}, '');
         INSERT INTO rules (id, action, code, device_id, remote, port_lo, port_hi, notes, created_at, matched)
           VALUES (4, 'allow', NULL, 2, NULL, 6881, 6889, '{EVIL}', {a}, 12);",
        a = now - 60_000,
        b = now - 120_000,
        old = now - 3 * 86_400_000,
        future = now + 3_600_000,
    ))
    .unwrap();
}

fn fixture() -> Fixture {
    fixture_with(None)
}

/// The fixture, its server knowing `config` (the settings page shows it).
fn fixture_with(config: Option<Config>) -> Fixture {
    let http = common::http::Fixture::build("web-detect", open_auth(), config, |conn| {
        seed(conn, now_ms())
    });
    let conn = common::seed::open(&http.db());
    let common::http::Fixture {
        dir,
        app,
        ticks,
        writer_rx,
        ..
    } = http;
    Fixture {
        _dir: dir,
        app,
        ticks,
        writer_rx: Some(writer_rx),
        conn,
    }
}

impl Fixture {
    /// A stand-in writer answering every command (with `id` when given), collecting them until
    /// the app side is dropped or `count` arrived.
    fn writer(&mut self, count: usize, id: Option<i64>) -> JoinHandle<Vec<Command>> {
        let rx = self.writer_rx.take().expect("one writer per fixture");
        std::thread::spawn(move || {
            let mut commands = Vec::new();
            while commands.len() < count {
                match rx.recv_timeout(Duration::from_secs(5)) {
                    Ok(Event::Command(command, answer)) => {
                        let r = id.map_or(CommandReply::Done, CommandReply::Id);
                        answer.send(Ok(r)).unwrap();
                        commands.push(command);
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(_) => break,
                }
            }
            commands
        })
    }

    /// Nothing reached the writer.
    fn assert_no_command(&self) {
        if let Some(rx) = &self.writer_rx {
            assert!(rx.try_recv().is_err(), "a command reached the writer");
        }
    }
}

async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let (status, _, body) = send(app, Request::get(uri).body(Body::empty()).unwrap()).await;
    (status, body)
}

async fn get_ok(app: &Router, uri: &str) -> String {
    let (status, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

async fn get_json(app: &Router, uri: &str) -> serde_json::Value {
    serde_json::from_str(&get_ok(app, uri).await).unwrap()
}

/// The CSRF token of `auth = "none"`, from any page form.
async fn csrf(app: &Router) -> String {
    let html = get_ok(app, "/rules").await;
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a CSRF field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

async fn post(app: &Router, uri: &str, body: &str) -> (StatusCode, HeaderMap, String) {
    let body = format!("{body}&csrf={}", csrf(app).await);
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(body))
        .unwrap();
    send(app, request).await
}

fn location(headers: &HeaderMap) -> &str {
    headers[header::LOCATION].to_str().unwrap()
}

#[tokio::test]
async fn anomalies_page_filters_sorts_and_escapes() {
    let fx = fixture();
    let html = get_ok(&fx.app, "/anomalies").await;
    assert!(
        html.contains("id=\"hit-1\"") && html.contains("id=\"hit-2\""),
        "{html}"
    );
    assert!(!html.contains("id=\"hit-3\""), "outside the 24 h window");
    assert!(!html.contains(EVIL) && html.contains(EVIL_HTML));
    assert!(html.contains("class=\"score score-high\""));
    assert!(html.contains("href=\"/hosts/1\">x.evil.test</a>"), "{html}");
    assert!(html.contains("8443/tcp"));
    assert!(html.contains("action=\"/hits/1/allow\"") && html.contains("action=\"/hits/1/mute\""));
    // A device-level hit has nothing single to allow.
    assert!(!html.contains("action=\"/hits/2/allow\""));
    let html = get_ok(
        &fx.app,
        "/anomalies?window=7d&code=NEW_DST&sort=score&order=asc",
    )
    .await;
    let (one, three) = (
        html.find("id=\"hit-1\"").unwrap(),
        html.find("id=\"hit-3\"").unwrap(),
    );
    assert!(three < one, "ascending score");
    assert!(!html.contains("id=\"hit-2\""));
    for (uri, filter) in [
        ("/anomalies?dst=evil.test", Some(1)),
        ("/anomalies?dst=198.51.100.1", Some(1)),
        ("/anomalies?ack=acked", Some(2)),
        ("/anomalies?device=2", Some(2)),
        ("/anomalies?min_score=80", Some(2)),
        ("/anomalies?dst=%25", None),
    ] {
        let html = get_ok(&fx.app, uri).await;
        for id in [1, 2] {
            assert_eq!(
                html.contains(&format!("id=\"hit-{id}\"")),
                filter == Some(id),
                "{uri}"
            );
        }
    }
    for (uri, param) in [
        ("/anomalies?window=2h", "window"),
        ("/anomalies?min_score=x", "min_score"),
        ("/anomalies?code=NOPE", "code"),
        ("/anomalies?sort=bytes", "sort"),
        ("/api/hits?ack=maybe", "ack"),
    ] {
        let (status, body) = get(&fx.app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains(&format!("`{param}`")), "{uri}: {body}");
    }
}

#[tokio::test]
async fn json_forms() {
    let fx = fixture();
    let v = get_json(&fx.app, "/api/hits?window=30d&sort=score").await;
    assert_eq!(v["total"], 3);
    let hit = &v["hits"][0];
    assert_eq!(hit["id"], 2);
    assert_eq!(hit["codes"], serde_json::json!(["PORT_SCAN_LIKE"]));
    assert_eq!(hit["reasons"][0]["evidence"], "45 ports on 30 hosts");
    assert_eq!(hit["remote_ip"], serde_json::Value::Null);
    assert_eq!(
        get_json(&fx.app, "/api/incidents?state=all").await["total"],
        3
    );
    let v = get_json(&fx.app, "/api/incidents?state=all&device=1").await;
    assert_eq!(
        v["incidents"][0]["title"].as_str().unwrap(),
        format!("rare port to {EVIL}")
    );
    let v = get_json(&fx.app, "/api/incidents").await;
    assert_eq!(v["total"], 1, "open only by default");
    let v = get_json(&fx.app, "/api/rules").await;
    let rule = &v["rules"][0];
    assert_eq!(rule["id"], 4);
    assert_eq!(rule["action"], "allow");
    assert_eq!(rule["ports"], serde_json::json!([6881, 6889]));
    assert_eq!(rule["device"], "tv");
    assert_eq!(rule["matched"], 12);
}

#[tokio::test]
async fn incidents_list_and_badge() {
    let fx = fixture();
    let html = get_ok(&fx.app, "/incidents").await;
    assert!(html.contains("id=\"incident-1\""));
    assert!(!html.contains("id=\"incident-2\"") && !html.contains("id=\"incident-3\""));
    assert!(!html.contains(EVIL));
    // One open incident: the acknowledged and the muted one do not count.
    assert!(html.contains("Alerts: <strong>1</strong>"), "{html}");
    assert!(html.contains("class=\"alerts alerting\""));
    let html = get_ok(&fx.app, "/incidents?state=muted").await;
    assert!(html.contains("id=\"incident-3\"") && html.contains("muted"));
    let html = get_ok(&fx.app, "/incidents?state=all&sort=score").await;
    let pos = |id: i64| html.find(&format!("id=\"incident-{id}\"")).unwrap();
    assert!(
        pos(2) < pos(1) && pos(1) < pos(3),
        "by score, highest first"
    );
    // The badge is on every page, and counted once per commit.
    assert!(
        get_ok(&fx.app, "/devices")
            .await
            .contains("Alerts: <strong>1</strong>")
    );
    fx.conn
        .execute("UPDATE incidents SET acked_at = 1 WHERE id = 1", [])
        .unwrap();
    assert!(
        get_ok(&fx.app, "/help")
            .await
            .contains("Alerts: <strong>1</strong>"),
        "cached"
    );
    fx.ticks.send_modify(|t| t.seq += 1);
    let html = get_ok(&fx.app, "/help").await;
    assert!(html.contains("Alerts: <strong>0</strong>"), "{html}");
    assert!(!html.contains("alerting"));
    // Not on the API.
    assert!(!get_ok(&fx.app, "/api/incidents").await.contains("Alerts"));
}

#[tokio::test]
async fn an_incident_explains_itself_with_the_evidence_its_title_has() {
    let fx = fixture();
    let now = now_ms();
    // Incident 3 (a beacon, no destination of its own): the title follows the latest hit
    // on the incident's destination; a later hit elsewhere does not change what Why says.
    fx.conn
        .execute_batch(&format!(
            "INSERT INTO hits (ts, last_ts, count, device_id, remote_ip, proto, dport, score,
                               codes, reasons, fingerprint, alertable, incident_id)
             VALUES ({a}, {b}, 9, 2, NULL, NULL, NULL, 60, 'BEACON',
                     '[{{\"code\":\"BEACON\",\"weight\":60,\"evidence\":\"13 connections every 2.6 s\"}}]',
                     'b1', 1, 3),
                    ({b}, {b}, 1, 2, '198.51.100.9', 6, 80, 60, 'BEACON',
                     '[{{\"code\":\"BEACON\",\"weight\":60,\"evidence\":\"13 connections every 2.4 s\"}}]',
                     'b2', 1, 3);",
            a = now - 50_000,
            b = now - 10_000,
        ))
        .unwrap();
    let html = get_ok(&fx.app, "/incidents/3").await;
    assert!(html.contains("13 connections every 2.6 s"), "{html}");
    assert!(!html.contains("every 2.4 s"), "{html}");
}

#[tokio::test]
async fn incident_page_explains_itself() {
    let fx = fixture();
    let html = get_ok(&fx.app, "/incidents/1").await;
    assert!(!html.contains(EVIL) && html.contains(EVIL_HTML));
    // Reasons with weight, evidence and meaning.
    assert!(
        html.contains("RARE_PORT</a><span class=\"weight\"> +25</span>"),
        "{html}"
    );
    assert!(html.contains("port 8443 &lt;script&gt;"));
    assert!(html.contains("never used"), "the meaning of RARE_PORT");
    assert!(html.contains("<code>common_ports</code>"), "{html}");
    // Timeline, the flow and the DNS answer.
    assert!(html.contains("id=\"hit-1\""));
    assert!(html.contains("198.51.100.1:8443"), "{html}");
    assert!(html.contains("x.evil.test"));
    assert!(html.contains("60 s"), "the answer's TTL");
    for action in [
        "/incidents/1/ack",
        "/incidents/1/mute",
        "/incidents/1/notes",
        "/hits/1/allow",
    ] {
        assert!(html.contains(&format!("action=\"{action}\"")), "{action}");
    }
    assert_eq!(get(&fx.app, "/incidents/99").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        get(&fx.app, "/incidents/x").await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn help_documents_every_code() {
    let fx = fixture();
    let html = get_ok(&fx.app, "/help").await;
    for c in Code::ALL {
        assert!(html.contains(&format!("<tr id=\"{c}\">")), "{c}");
    }
}

/// An attribute like ` onclick=` anywhere.
fn has_event_handler(html: &str) -> bool {
    html.match_indices(" on").any(|(i, _)| {
        let rest = &html[i + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    })
}

#[tokio::test]
async fn pages_have_no_inline_script_or_style() {
    let fx = fixture();
    for uri in [
        "/anomalies",
        "/incidents?state=all",
        "/incidents/1",
        "/rules",
        "/rules/4",
        "/help",
    ] {
        let html = get_ok(&fx.app, uri).await;
        assert_eq!(html.matches("<script").count(), 1, "{uri}");
        assert!(html.contains("<script src=\"/assets/"), "{uri}");
        assert!(!html.contains("style="), "{uri}");
        assert!(!html.contains("<style"), "{uri}");
        assert!(
            !has_event_handler(&html),
            "{uri}: an event handler attribute"
        );
    }
}

#[tokio::test]
async fn incident_actions_go_through_the_writer() {
    let mut fx = fixture();
    let writer = fx.writer(4, None);
    let (status, headers, _) = post(
        &fx.app,
        "/incidents/1/ack",
        "back=%2Fincidents%3Fstate%3Dall",
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/incidents?state=all");
    let (status, headers, _) = post(&fx.app, "/incidents/1/mute", "hours=24").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/incidents/1");
    let (status, _, _) = post(&fx.app, "/incidents/1/notes", "notes=+seen+it%0D%0Aok+").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, headers, _) = post(&fx.app, "/incidents/ack-all", "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/incidents");
    let commands = writer.join().unwrap();
    assert!(matches!(
        commands[0],
        Command::AckIncident { incident_id: 1 }
    ));
    match &commands[1] {
        Command::MuteIncident {
            incident_id: 1,
            until_ms,
        } => {
            let hours = (until_ms - now_ms()) as f64 / 3_600_000.0;
            assert!((23.9..=24.0).contains(&hours), "{hours}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&commands[2], Command::SetIncidentNotes { incident_id: 1, notes } if notes == "seen it\nok")
    );
    assert!(matches!(commands[3], Command::AckAllIncidents));
}

#[tokio::test]
async fn refused_incident_actions_send_nothing() {
    let fx = fixture();
    for (uri, body, status) in [
        ("/incidents/99/ack", "", StatusCode::NOT_FOUND),
        ("/incidents/1/mute", "hours=2", StatusCode::BAD_REQUEST),
        ("/incidents/1/mute", "", StatusCode::BAD_REQUEST),
        ("/incidents/1/notes", "notes=a%07b", StatusCode::BAD_REQUEST),
        ("/hits/99/allow", "", StatusCode::NOT_FOUND),
        ("/hits/2/allow", "", StatusCode::BAD_REQUEST),
        ("/rules/99/delete", "", StatusCode::NOT_FOUND),
        ("/rules/99", "action=allow&ports=443", StatusCode::NOT_FOUND),
    ] {
        let (got, _, body) = post(&fx.app, uri, body).await;
        assert_eq!(got, status, "{uri}: {body}");
    }
    // Nothing to clear: no command either.
    fx.conn
        .execute("DELETE FROM incidents WHERE acked_at IS NOT NULL", [])
        .unwrap();
    let (status, _, _) = post(&fx.app, "/incidents/clear-acked", "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    fx.assert_no_command();
}

#[tokio::test]
async fn allow_and_mute_this_make_rules() {
    let mut fx = fixture();
    let writer = fx.writer(3, Some(7));
    let (status, headers, _) = post(&fx.app, "/hits/1/allow", "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/rules#rule-7");
    let (status, headers, _) =
        post(&fx.app, "/hits/1/mute", "back=%2Fanomalies%3Fwindow%3D7d").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/anomalies?window=7d");
    let commands = writer.join().unwrap();
    let Command::SaveRule {
        id: None,
        rule,
        reevaluate: true,
    } = &commands[0]
    else {
        panic!("{:?}", commands[0]);
    };
    assert_eq!(rule.action, Action::Allow);
    assert_eq!(rule.device_id, Some(1));
    assert_eq!(rule.domain.as_deref(), Some("x.evil.test"));
    assert_eq!(rule.remote, None);
    let muted: Vec<_> = commands[1..]
        .iter()
        .map(|c| match c {
            Command::SaveRule {
                id: None,
                rule,
                reevaluate,
            } => {
                assert_eq!(rule.action, Action::Suppress);
                assert_eq!(rule.device_id, Some(1));
                assert_eq!(rule.domain.as_deref(), Some("x.evil.test"));
                (rule.code, *reevaluate)
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        muted,
        [(Some(Code::NewDst), false), (Some(Code::RarePort), true)]
    );
}

#[tokio::test]
async fn rules_list_create_edit_delete() {
    let mut fx = fixture();
    let html = get_ok(&fx.app, "/rules").await;
    assert!(html.contains("id=\"rule-4\"") && html.contains("port 6881-6889"));
    assert!(!html.contains(EVIL) && html.contains(EVIL_HTML));
    let html = get_ok(&fx.app, "/rules/4").await;
    assert!(html.contains("value=\"6881-6889\""), "{html}");
    assert!(html.contains("action=\"/rules/4/delete\""));
    assert_eq!(get(&fx.app, "/rules/99").await.0, StatusCode::NOT_FOUND);
    // A bad form comes back with what is wrong and what was typed; nothing is sent.
    let (status, _, html) = post(&fx.app, "/rules", "action=allow&ports=9-1&remote=%3Cb%3E").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("port (443) or a range"), "{html}");
    assert!(html.contains("value=\"&lt;b&gt;\""), "{html}");
    assert!(html.contains("aria-invalid=\"true\""));
    fx.assert_no_command();
    let writer = fx.writer(3, Some(8));
    let (status, headers, _) = post(
        &fx.app,
        "/rules",
        "action=allow&device=2&ports=6881-6889&proto=tcp&expires=7d&notes=torrent&reevaluate=on",
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/rules#rule-8");
    let (status, _, _) = post(
        &fx.app,
        "/rules/4",
        "action=suppress&code=NO_RDNS&org=Cloudflare",
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, headers, _) = post(&fx.app, "/rules/4/delete", "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/rules");
    let commands = writer.join().unwrap();
    match &commands[0] {
        Command::SaveRule {
            id: None,
            rule,
            reevaluate: true,
        } => {
            assert_eq!(rule.device_id, Some(2));
            assert_eq!(rule.ports, Some((6881, 6889)));
            assert_eq!(rule.proto, Some(6));
            assert!(rule.expires_at.is_some());
        }
        other => panic!("{other:?}"),
    }
    match &commands[1] {
        Command::SaveRule {
            id: Some(4),
            rule,
            reevaluate: false,
        } => {
            assert_eq!(rule.code, Some(Code::NoRdns));
            assert_eq!(rule.org.as_deref(), Some("Cloudflare"));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(commands[2], Command::DeleteRule { rule_id: 4 }));
}

// --- saved searches (they share this fixture: a seeded DB and a stand-in writer) ------

#[tokio::test]
async fn saved_searches_list_pinned_first_and_escape_names() {
    let fx = fixture();
    fx.conn
        .execute_batch(&format!(
            "INSERT INTO saved_searches (id, name, url, pinned, created_at, updated_at) VALUES
               (1, 'zz NXDOMAIN', '/dns?rcode=NXDOMAIN', 1, 1, 1),
               (2, '{EVIL}', '/flows?port=22', 0, 1, 1),
               (3, 'aa scans', '/anomalies?code=PORT_SCAN_LIKE', 0, 1, 1);"
        ))
        .unwrap();
    let html = get_ok(&fx.app, "/searches").await;
    let at = |id: i64| html.find(&format!("id=\"search-{id}\"")).unwrap();
    // '<' sorts before letters.
    assert!(at(1) < at(2) && at(2) < at(3), "pinned first, then by name");
    assert!(!html.contains(EVIL) && html.contains(EVIL_HTML));
    assert!(html.contains("href=\"/dns?rcode=NXDOMAIN\""));
    assert!(html.contains("action=\"/searches/1/pin\"") && html.contains("Unpin"));
    let json = get_json(&fx.app, "/api/searches").await;
    assert_eq!(json["searches"][0]["pinned"], true);
    assert_eq!(json["searches"][1]["name"], EVIL, "verbatim in JSON");
}

#[tokio::test]
async fn list_pages_offer_to_save_their_own_url() {
    let fx = fixture();
    let html = get_ok(&fx.app, "/dns?rcode=NXDOMAIN&page=3").await;
    assert!(
        html.contains("action=\"/searches\"")
            && html.contains("name=\"url\" value=\"/dns?rcode=NXDOMAIN\""),
        "the save form carries the filter from page 1: {html}"
    );
    for page in ["/anomalies", "/incidents"] {
        let html = get_ok(&fx.app, page).await;
        assert!(html.contains("class=\"save-search\""), "{page}");
    }
}

#[tokio::test]
async fn saving_a_search_checks_name_and_url_before_the_writer() {
    let mut fx = fixture();
    let writer = fx.writer(4, Some(7));
    for bad in [
        "name=x&url=%2F%2Fevil.test%2Fflows",
        "name=x&url=javascript%3Aalert(1)",
        "name=x&url=%2Flogin",
        "name=+&url=%2Fflows",
    ] {
        let (status, _, body) = post(&fx.app, "/searches", bad).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (status, headers, _) = post(
        &fx.app,
        "/searches",
        "name=SSH&url=http%3A%2F%2F192.168.1.1%3A8080%2Fflows%3Fport%3D22",
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location(&headers), "/searches#search-7");
    fx.conn
        .execute(
            "INSERT INTO saved_searches (id, name, url, pinned, created_at, updated_at)
             VALUES (7, 'SSH', '/flows?port=22', 0, 1, 1)",
            [],
        )
        .unwrap();
    let (status, _, _) = post(&fx.app, "/searches/7", "name=Secure+shell").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = post(&fx.app, "/searches/7/pin", "pinned=1").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (status, _, _) = post(&fx.app, "/searches/7/pin", "pinned=yes").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = post(&fx.app, "/searches/8/delete", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = post(&fx.app, "/searches/7/delete", "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    drop(fx.app);
    let commands = writer.join().unwrap();
    let texts: Vec<String> = commands.iter().map(|c| format!("{c:?}")).collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert!(
        texts[0].contains("CreateSearch") && texts[0].contains("\"/flows?port=22\""),
        "{texts:?}"
    );
    assert!(texts[1].contains("RenameSearch") && texts[1].contains("Secure shell"));
    assert!(texts[2].contains("PinSearch") && texts[2].contains("pinned: true"));
    assert!(texts[3].contains("DeleteSearch"));
}

#[tokio::test]
async fn device_and_host_pages_show_who_talked_to_whom() {
    let fx = fixture();
    let html = get_ok(&fx.app, "/devices/1").await;
    for section in ["Top destinations", "Ports", "Incidents"] {
        assert!(
            html.contains(&format!("<h2>{section}</h2>")),
            "{section}: {html}"
        );
    }
    assert!(
        html.contains("href=\"/hosts/1\""),
        "its destination links to the host"
    );
    assert!(html.contains("8443/tcp"), "its port");
    assert!(html.contains("href=\"/incidents/1\""), "its incident");
    assert!(!html.contains(EVIL) && html.contains(EVIL_HTML));
    let html = get_ok(&fx.app, "/devices/2").await;
    assert!(html.contains("No flows in the last 24 h."));
    assert!(
        html.contains("href=\"/incidents/2\""),
        "acknowledged ones too"
    );
    let html = get_ok(&fx.app, "/hosts/1").await;
    assert!(html.contains("<h2>Devices</h2>") && html.contains("href=\"/devices/1\""));
    assert!(
        !html.contains(EVIL) && html.contains(EVIL_HTML),
        "the device's name, escaped"
    );
}

#[tokio::test]
async fn settings_page_shows_counters_storage_and_the_config_without_secrets() {
    let mut config = Config::default();
    config.web.password_hash = "$argon2id$v=19$secret-hash".into();
    config.web.metrics_token = "token-123".into();
    config.notify.webhook_url = "http://192.0.2.7:8080/message?token=gotify-secret".into();
    let fx = fixture_with(Some(config));
    let html = get_ok(&fx.app, "/settings").await;
    assert!(html.contains("<h1>Health and settings</h1>"), "{html}");
    assert!(html.contains("Collectors and counters") && html.contains("id=\"status\""));
    assert!(html.contains("max_db_mb"), "the retention settings");
    for secret in ["secret-hash", "token-123", "gotify-secret"] {
        assert!(!html.contains(secret), "{secret} shown");
    }
    assert!(html.contains("http://192.0.2.7:8080/(not shown)"));
    let fx = fixture();
    let html = get_ok(&fx.app, "/settings").await;
    assert!(html.contains("The configuration is not available"));
}
