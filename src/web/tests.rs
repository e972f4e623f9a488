//! The router end to end: a temporary database built from `schema.sql` with rows
//! inserted directly, requests through `tower::ServiceExt::oneshot`, and a stand-in
//! writer thread that answers commands.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use metrics_exporter_prometheus::PrometheusBuilder;
use rusqlite::{Connection, params};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tower::ServiceExt as _;

use super::{AppState, router};
use crate::event::{Command, CommandReply, Event};
use crate::event::{Tick, WriterHandle};
use crate::store::read::ReadPool;
use crate::store::read::tests::{
    insert_flows, insert_queries, name_id, set_flow_domain, temp_db, tempdir::TempDir,
};

const NOW_ISH: i64 = 1_714_568_645_000;

/// Hostile DNS names, as the writer stores them (canonical text: printable ASCII stays,
/// other bytes become `\DDD`).
const EVIL_SCRIPT: &str = "<script>alert(1)</script>.evil.test";
const EVIL_SCRIPT_HTML: &str = "&lt;script&gt;alert(1)&lt;/script&gt;.evil.test";
const EVIL_ATTR: &str = "\"onmouseover=alert(1)";
const EVIL_ATTR_HTML: &str = "&quot;onmouseover=alert(1)";
const EVIL_BYTES: &str = "a\\000b\\255.evil.test";

struct Fixture {
    _dir: TempDir,
    state: AppState,
    app: Router,
    ticks: watch::Sender<Tick>,
    /// What the app sent to the writer.
    writer_rx: Receiver<Event>,
}

/// Devices 1 (named with markup, to test escaping) and 2; flows of every direction.
fn seed(conn: &Connection) {
    conn.execute_batch(
        "INSERT INTO devices (id, ip, mac, name, hostname, first_seen, last_seen, bytes_up, bytes_down, flows) VALUES
           (1, '10.0.0.5', 'aa:bb:cc:dd:ee:01', '<script>alert(1)</script>', 'laptop', 1000, 2000, 10, 20, 3),
           (2, '10.0.0.6', NULL, NULL, 'phone', 1000, 3000, 30, 40, 2);
         INSERT INTO remote_hosts (id, ip, rdns, first_seen, last_seen, bytes_up, bytes_down, flows) VALUES
           (1, '198.51.100.1', '<b>evil</b>.example', 1000, 5000, 1, 2, 2),
           (2, '198.51.100.2', NULL, 1000, 6000, 3, 4, 1);
         INSERT INTO remote_host_ports (remote_host_id, proto, port, first_seen, last_seen, flows) VALUES
           (1, 6, 443, 1000, 5000, 2);
         INSERT INTO device_minutes (device_id, minute, bytes_up, bytes_down, packets_up, packets_down, flows_new, unique_dsts, unique_ports) VALUES
           (1, 60000, 1, 2, 3, 4, 5, 6, 7), (1, 120000, 10, 20, 30, 40, 50, 60, 70);
         INSERT INTO remote_host_minutes (remote_host_id, minute, bytes_up, bytes_down, packets_up, packets_down, flows_new, unique_devices) VALUES
           (1, 60000, 1, 2, 3, 4, 5, 6);",
    )
    .unwrap();
    #[rustfmt::skip]
    insert_flows(conn, &[
        (1, "outbound", "10.0.0.5", "198.51.100.1", Some(443), 100, NOW_ISH, None, Some(1)),
        (2, "outbound", "10.0.0.6", "198.51.100.2", Some(80), 900, NOW_ISH - 1, None, Some(2)),
        (3, "router-local", "10.0.0.5", "10.0.0.1", Some(53), 50, NOW_ISH, None, Some(1)),
        (4, "lan", "10.0.0.5", "10.0.0.6", Some(22), 10, NOW_ISH, None, Some(1)),
        (5, "outbound", "10.0.0.5", "198.51.100.1", Some(443), 500, NOW_ISH - 9, Some(NOW_ISH - 5), Some(1)),
        (6, "inbound", "192.0.2.9", "10.0.0.6", Some(8080), 70, NOW_ISH - 2, None, Some(2)),
    ]);
    conn.execute("UPDATE flows SET remote_host_id = 1 WHERE id IN (1, 5)", [])
        .unwrap();
    // An ICMP flow: no ports.
    conn.execute(
        "INSERT INTO flows (id, ident, ct_id, family, proto, direction, src_ip, dst_ip, reply_src_ip, \
         reply_dst_ip, icmp_type, icmp_code, status, first_seen, last_seen) \
         VALUES (7, 7, 77, 4, 1, 'outbound', '10.0.0.6', '198.51.100.2', '198.51.100.2', \
         '203.0.113.1', 8, 0, 0, ?1, ?1)",
        params![NOW_ISH - 3],
    )
    .unwrap();
    seed_dns(conn);
}

/// Domains on flows 1 (stale, with a CNAME), 2 (other client), 6 and 7 (LIKE
/// metacharacters); host 1's names; device 1's queries and DNS minutes, timed against
/// the real clock because device pages chart the last hour.
fn seed_dns(conn: &Connection) {
    set_flow_domain(conn, 1, EVIL_SCRIPT, Some(EVIL_ATTR), 2);
    set_flow_domain(conn, 2, EVIL_BYTES, None, 3);
    set_flow_domain(conn, 6, "a_b.test", None, 1);
    set_flow_domain(conn, 7, "axb.test", None, 1);
    for (name, flows, device) in [(EVIL_SCRIPT, 9, 1), (EVIL_ATTR, 1, 2), (EVIL_BYTES, 5, 1)] {
        conn.execute(
            "INSERT INTO remote_host_domains (remote_host_id, qname_id, first_seen, last_seen, \
             flows, last_device_id) VALUES (1, ?, 1000, 5000, ?, ?)",
            params![name_id(conn, name), flows, device],
        )
        .unwrap();
    }
    let now = super::now_ms();
    #[rustfmt::skip]
    insert_queries(conn, &[
        (1, now - 1000, "10.0.0.5", Some(1), EVIL_SCRIPT, 1, Some(0), 1, Some(EVIL_ATTR)),
        (2, now - 2000, "10.0.0.5", Some(1), EVIL_BYTES, 28, Some(3), 0, None),
        (3, now - 3000, "10.0.0.6", Some(2), "shop.example.test", 1, None, 0, None),
        (4, now - 4000, "10.0.0.9", None, EVIL_ATTR, 65, Some(2), 0, None),
        (5, now - 5000, "10.0.0.5", Some(1), EVIL_SCRIPT, 1, Some(0), 1, Some(EVIL_ATTR)),
    ]);
    let minute = now / 60_000 * 60_000;
    conn.execute(
        "INSERT INTO dns_device_minutes (device_id, minute, queries, nxdomain, names) VALUES \
         (1, ?1, 30, 3, 4), (1, ?2, 10, 0, 2), (1, ?3, 100, 100, 1), (2, ?1, 5, 5, 1)",
        params![
            minute - 5 * 60_000,
            minute - 3 * 60_000,
            minute - 120 * 60_000
        ],
    )
    .unwrap();
}

/// The router with `auth = "none"`: everything but the login tests.
fn fixture() -> Fixture {
    fixture_with(super::Auth::open())
}

fn fixture_with(auth: super::Auth) -> Fixture {
    let (dir, conn) = temp_db("web");
    seed(&conn);
    drop(conn);
    let reads = ReadPool::open(&dir.db(), 2).unwrap();
    let (tx, writer_rx) = sync_channel(8);
    let writer = WriterHandle::new(tx, Arc::new(AtomicUsize::new(0)));
    let (ticks, ticks_rx) = watch::channel(Tick::default());
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    let state = AppState::new(reads, writer, ticks_rx, metrics, dir.db(), auth);
    Fixture {
        _dir: dir,
        app: router(state.clone()),
        state,
        ticks,
        writer_rx,
    }
}

/// The peer the server sees when a test does not say: a browser on the router itself,
/// as every request has one in production (`conn::serve`).
fn loopback_peer() -> ConnectInfo<SocketAddr> {
    ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 50000)))
}

async fn send(app: &Router, mut request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    if request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_none()
    {
        request.extensions_mut().insert(loopback_peer());
    }
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

async fn get(app: &Router, uri: &str) -> (StatusCode, HeaderMap, String) {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn get_json(app: &Router, uri: &str) -> serde_json::Value {
    let (status, headers, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    serde_json::from_str(&body).unwrap()
}

/// The CSRF token in a page's forms (`<input type="hidden" name="csrf" value="…">`).
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form with a CSRF field") + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_owned()
}

/// The CSRF token of `auth = "none"`, as the device page's rename form carries it.
async fn open_csrf(app: &Router) -> String {
    csrf_of(&get(app, "/devices/1").await.2)
}

fn flow_ids(v: &serde_json::Value) -> Vec<i64> {
    v["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn dashboard_hides_router_local_and_lan_by_default() {
    let fx = fixture();
    let (status, headers, body) = get(&fx.app, "/flows").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    for id in [1, 2, 6, 7] {
        assert!(
            body.contains(&format!("id=\"flow-{id}\"")),
            "flow {id} missing"
        );
    }
    for id in [3, 4, 5] {
        assert!(
            !body.contains(&format!("id=\"flow-{id}\"")),
            "flow {id} shown"
        );
    }
    // Selectable, and the fragment URL carries the filter.
    let (_, _, body) = get(&fx.app, "/flows?direction=router-local").await;
    assert!(body.contains("id=\"flow-3\"") && !body.contains("id=\"flow-1\""));
    assert!(
        body.contains("data-src=\"/fragment/flows?direction=router-local\""),
        "{body}"
    );
}

#[tokio::test]
async fn fragment_is_the_table_alone_with_the_same_filter() {
    let fx = fixture();
    let (status, _, body) = get(&fx.app, "/fragment/flows?show=ended").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("<html"), "{body}");
    assert!(
        body.contains("id=\"flow-5\"") && !body.contains("id=\"flow-1\""),
        "{body}"
    );
}

#[tokio::test]
async fn api_flows_shape() {
    let fx = fixture();
    let v = get_json(&fx.app, "/api/flows").await;
    assert_eq!(v["total"], 4);
    assert_eq!(v["page"], 1);
    assert_eq!(v["per_page"], 50);
    assert_eq!(v["total_capped"], false);
    assert_eq!(v["last_page"], true);
    assert_eq!(v.as_object().unwrap().len(), 6);
    assert_eq!(flow_ids(&v), vec![1, 2, 6, 7]);
    let first = v["flows"][0].as_object().unwrap();
    let mut keys: Vec<&str> = first.keys().map(String::as_str).collect();
    keys.sort();
    let mut expected = vec![
        "id",
        "ct_id",
        "family",
        "proto",
        "direction",
        "src_ip",
        "src_port",
        "dst_ip",
        "dst_port",
        "reply_src_ip",
        "reply_src_port",
        "reply_dst_ip",
        "reply_dst_port",
        "icmp_type",
        "icmp_code",
        "state",
        "status",
        "bytes_up",
        "bytes_down",
        "packets_up",
        "packets_down",
        "first_seen",
        "last_seen",
        "ended_at",
        "device_id",
        "device_name",
        "remote_host_id",
        "domain",
        "domain_canonical",
        "dns_match",
        "score",
    ];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(first["family"], 4);
    assert_eq!(first["proto"], "tcp");
    assert_eq!(first["direction"], "outbound");
    assert_eq!(first["dst_port"], 443);
    assert_eq!(first["ended_at"], serde_json::Value::Null);
    assert_eq!(first["device_name"], "<script>alert(1)</script>");
    assert_eq!(first["remote_host_id"], 1);
    assert_eq!(first["last_seen"], NOW_ISH);
    // Names verbatim in JSON, however hostile.
    assert_eq!(first["domain"], EVIL_SCRIPT);
    assert_eq!(first["domain_canonical"], EVIL_ATTR);
    assert_eq!(first["dns_match"], "stale");
    assert_eq!(v["flows"][1]["domain"], EVIL_BYTES);
    assert_eq!(v["flows"][1]["domain_canonical"], serde_json::Value::Null);
    assert_eq!(v["flows"][1]["dns_match"], "other-client");
    let icmp = &v["flows"][3];
    assert_eq!(icmp["proto"], "icmp");
    assert_eq!(icmp["src_port"], serde_json::Value::Null);
    assert_eq!(icmp["icmp_type"], 8);
    assert_eq!(icmp["device_id"], serde_json::Value::Null);
    assert_eq!(icmp["device_name"], serde_json::Value::Null);
    assert_eq!(
        (icmp["domain"].as_str(), icmp["dns_match"].as_str()),
        (Some("axb.test"), Some("exact"))
    );
    // Device 2 has no name: its DHCP hostname stands in.
    assert_eq!(v["flows"][1]["device_name"], "phone");
}

#[tokio::test]
async fn api_flows_filters_and_pagination() {
    let fx = fixture();
    let ids = |q: &'static str| {
        let app = fx.app.clone();
        async move { flow_ids(&get_json(&app, &format!("/api/flows?{q}")).await) }
    };
    assert_eq!(ids("direction=all").await, vec![4, 3, 1, 2, 6, 7]);
    assert_eq!(ids("direction=router-local,lan").await, vec![4, 3]);
    assert_eq!(ids("show=all&device=1").await, vec![1, 5]);
    assert_eq!(ids("show=ended").await, vec![5]);
    assert_eq!(ids("port=8080").await, vec![6]);
    assert_eq!(ids("proto=icmp").await, vec![7]);
    assert_eq!(ids("proto=1").await, vec![7]);
    assert_eq!(ids("dst=198.51.100.").await, vec![1, 2, 7]);
    assert_eq!(ids("src=10.0.0.6&dst=").await, vec![2, 7]);
    assert_eq!(ids("sort=bytes").await, vec![2, 1, 6, 7]);
    assert_eq!(ids("sort=bytes&order=asc").await, vec![7, 6, 1, 2]);

    let v = get_json(
        &fx.app,
        "/api/flows?direction=all&show=all&per_page=4&page=2",
    )
    .await;
    assert_eq!(
        (
            v["total"].as_i64(),
            v["page"].as_i64(),
            v["per_page"].as_i64()
        ),
        (Some(7), Some(2), Some(4))
    );
    assert_eq!(flow_ids(&v), vec![6, 7, 5]);
    let v = get_json(&fx.app, "/api/flows?page=9").await;
    assert_eq!((v["total"].as_i64(), flow_ids(&v).len()), (Some(4), 0));
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let fx = fixture();
    for (uri, param) in [
        ("/api/flows?per_page=0", "per_page"),
        ("/api/flows?per_page=501", "per_page"),
        ("/api/flows?page=0", "page"),
        ("/api/flows?direction=up", "direction"),
        ("/api/flows?show=live", "show"),
        ("/api/flows?sort=size", "sort"),
        ("/api/flows?port=http", "port"),
        ("/api/flows?proto=quic", "proto"),
        ("/api/flows?device=me", "device"),
        ("/api/hosts?sort=ip", "sort"),
        ("/api/flows?domain=.", "domain"),
        ("/api/dns?device=me", "device"),
        (
            "/api/dns?client=not-an-address-and-far-too-long-to-be-the-prefix-of-one-0123456789abcdef",
            "client",
        ),
        ("/api/dns?name=*.", "name"),
        ("/api/dns?type=BOGUS", "type"),
        ("/api/dns?type=TYPE99999", "type"),
        ("/api/dns?rcode=maybe", "rcode"),
        ("/api/dns?rcode=4096", "rcode"),
        ("/api/dns?page=0", "page"),
        ("/api/dns?per_page=501", "per_page"),
        ("/api/devices/1/minutes?since=yesterday", "since"),
    ] {
        let (status, headers, body) = get(&fx.app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json", "{uri}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"].as_str().unwrap().contains(&format!("`{param}`")),
            "{uri}: {body}"
        );
    }
    for (uri, param) in [
        ("/flows?order=sideways", "order"),
        ("/fragment/flows?per_page=9999", "per_page"),
        ("/devices/1?window=0", "window"),
        ("/hosts?page=x", "page"),
        ("/flows?domain=.", "domain"),
        ("/dns?type=QQ", "type"),
        ("/dns?rcode=NXDOMAINX", "rcode"),
    ] {
        let (status, headers, body) = get(&fx.app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(body.contains(&format!("`{param}`")), "{uri}: {body}");
    }
    let (status, _, _) = get(&fx.app, "/devices/abc").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = get(&fx.app, "/devices/999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = get(&fx.app, "/api/hosts/999/minutes").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, _) = get(&fx.app, "/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn device_names_and_rdns_are_escaped_everywhere() {
    let fx = fixture();
    for uri in [
        "/flows",
        "/fragment/flows",
        "/devices",
        "/devices/1",
        "/hosts",
        "/hosts/1",
        "/?device=1",
    ] {
        let (status, _, body) = get(&fx.app, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(!body.contains("<script>alert"), "{uri} has raw markup");
        assert!(!body.contains("<b>evil"), "{uri} has raw markup");
        if uri != "/hosts" {
            assert!(
                body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{uri}: {body}"
            );
        }
    }
    let (_, _, body) = get(&fx.app, "/hosts/1").await;
    assert!(body.contains("&lt;b&gt;evil&lt;/b&gt;.example"));
}

#[tokio::test]
async fn pages_have_no_inline_script_or_style() {
    let fx = fixture();
    for uri in [
        "/flows",
        "/devices",
        "/devices/1",
        "/hosts",
        "/hosts/1",
        "/dns",
        "/",
        "/?w=30d&w_hosts=7d&w_domains=30d",
        "/fragment/overview/charts",
        "/searches",
        "/settings",
        "/nope",
    ] {
        let (_, _, body) = get(&fx.app, uri).await;
        assert!(!body.contains(" style="), "{uri}");
        assert!(!body.contains("<style"), "{uri}");
        assert_eq!(
            body.matches("<script").count(),
            body.matches("<script src=").count(),
            "{uri}"
        );
    }
}

#[tokio::test]
async fn times_are_machine_readable_utc() {
    let fx = fixture();
    let (_, _, body) = get(&fx.app, "/flows").await;
    assert!(
        body.contains(&format!(
            "<time datetime=\"2024-05-01T13:04:05.000Z\" data-ms=\"{NOW_ISH}\">2024-05-01 13:04:05 UTC</time>"
        )),
        "{body}"
    );
}

#[tokio::test]
async fn rename_goes_through_the_writer_and_redirects() {
    let fx = fixture();
    let Fixture { app, writer_rx, .. } = fx;
    let writer = std::thread::spawn(move || {
        let event = writer_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a command");
        match event {
            Event::Command(Command::RenameDevice { device_id, name }, reply) => {
                reply.send(Ok(CommandReply::Done)).unwrap();
                (device_id, name)
            }
            other => panic!("unexpected {other:?}"),
        }
    });
    let csrf = open_csrf(&app).await;
    let request = Request::post("/devices/1/name")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from(format!(
            "name=%20Kid%27s+%3Ctablet%3E%20&csrf={csrf}"
        )))
        .unwrap();
    let (status, headers, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/devices/1");
    assert_eq!(writer.join().unwrap(), (1, "Kid's <tablet>".to_owned()));
}

#[tokio::test]
async fn notes_go_through_the_writer_and_bad_ones_do_not() {
    let fx = fixture();
    let Fixture { app, writer_rx, .. } = fx;
    let writer = std::thread::spawn(move || {
        let event = writer_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a command");
        let got = match event {
            Event::Command(Command::SetDeviceNotes { device_id, notes }, reply) => {
                reply.send(Ok(CommandReply::Done)).unwrap();
                (device_id, notes)
            }
            other => panic!("unexpected {other:?}"),
        };
        // Nothing else reaches the writer: the refused posts below stop in the handler.
        assert!(writer_rx.recv_timeout(Duration::from_millis(500)).is_err());
        got
    });
    let csrf = open_csrf(&app).await;
    let post = |body: String| {
        Request::post("/devices/1/notes")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("{body}&csrf={csrf}")))
            .unwrap()
    };
    let (status, headers, _) = send(
        &app,
        post("notes=under+the+TV%0D%0A%3Cb%3Ehall%3C%2Fb%3E".into()),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/devices/1");
    let long = format!("notes={}", "x".repeat(1001));
    assert_eq!(send(&app, post(long)).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        send(&app, post("notes=bell%07".into())).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        writer.join().unwrap(),
        (1, "under the TV\n<b>hall</b>".to_owned())
    );
}

#[tokio::test]
async fn rename_refusals_send_nothing() {
    let fx = fixture();
    let csrf = open_csrf(&fx.app).await;
    let form = |uri: &str, body: &str, site: Option<&str>| {
        let mut r =
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(site) = site {
            r = r.header("sec-fetch-site", site);
        }
        r.body(Body::from(format!("{body}&csrf={csrf}"))).unwrap()
    };
    let (status, _, _) = send(
        &fx.app,
        form("/devices/1/name", "name=x", Some("cross-site")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let cross_origin = Request::post("/devices/1/name")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::HOST, "192.168.1.1:8080")
        .header(header::ORIGIN, "http://evil.example")
        .body(Body::from("name=x"))
        .unwrap();
    assert_eq!(send(&fx.app, cross_origin).await.0, StatusCode::FORBIDDEN);
    let long = format!("name={}", "x".repeat(65));
    assert_eq!(
        send(&fx.app, form("/devices/1/name", &long, None)).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        send(&fx.app, form("/devices/1/name", "nom=x", None))
            .await
            .0
            .as_u16()
            / 100,
        4
    );
    assert_eq!(
        send(&fx.app, form("/devices/999/name", "name=x", None))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // No state change over GET.
    let (status, _, _) = get(&fx.app, "/devices/1/name?name=x").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        fx.writer_rx.try_recv().is_err(),
        "a refused rename reached the writer"
    );
}

#[tokio::test]
async fn rename_reports_a_stopped_writer() {
    let fx = fixture();
    let Fixture { app, writer_rx, .. } = fx;
    drop(writer_rx);
    let csrf = open_csrf(&app).await;
    let request = Request::post("/devices/1/name")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("name=x&csrf={csrf}")))
        .unwrap();
    let (status, _, body) = send(&app, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("not saved"), "{body}");
}

#[tokio::test]
async fn lists_and_minutes_api() {
    let fx = fixture();
    let v = get_json(&fx.app, "/api/devices").await;
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["id"], 2, "latest seen first");
    let mut keys: Vec<&str> = devices[1]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "addrs",
            "bytes_down",
            "bytes_up",
            "first_seen",
            "flows",
            "hostname",
            "id",
            "ip",
            "last_seen",
            "mac",
            "name",
            "notes",
            "vendor"
        ]
    );
    let v = get_json(&fx.app, "/api/hosts").await;
    assert_eq!(v["total"], 2);
    assert_eq!(v["hosts"][0]["ip"], "198.51.100.2");
    assert_eq!(v["hosts"][1]["rdns"], "<b>evil</b>.example");
    let v = get_json(&fx.app, "/api/hosts?q=evil").await;
    assert_eq!(v["total"], 1);
    let v = get_json(&fx.app, "/api/hosts?q=%25").await;
    assert_eq!(v["total"], 0, "LIKE wildcard is literal");
    // Any name a host was reached as finds it too.
    let v = get_json(&fx.app, "/api/hosts?q=onmouseover").await;
    assert_eq!(
        (v["total"].as_i64(), v["hosts"][0]["id"].as_i64()),
        (Some(1), Some(1))
    );
    let v = get_json(&fx.app, "/api/hosts?q=shop.example").await;
    assert_eq!(v["total"], 0);

    let v = get_json(&fx.app, "/api/devices/1/minutes?since=0").await;
    assert_eq!(
        v["minutes"][1],
        serde_json::json!({"device_id": 1, "minute": 120000, "bytes_up": 10, "bytes_down": 20,
            "packets_up": 30, "packets_down": 40, "flows_new": 50, "unique_dsts": 60, "unique_ports": 70})
    );
    let v = get_json(&fx.app, "/api/devices/1/minutes?since=100000").await;
    assert_eq!(v["minutes"].as_array().unwrap().len(), 1);
    let v = get_json(&fx.app, "/api/hosts/1/minutes?since=0").await;
    assert_eq!(v["minutes"][0]["unique_devices"], 6);
}

#[tokio::test]
async fn health_and_metrics() {
    let fx = fixture();
    fx.ticks.send_replace(Tick {
        seq: 7,
        at_ms: NOW_ISH,
        active_flows: 6,
        ..Tick::default()
    });
    let v = get_json(&fx.app, "/healthz").await;
    assert_eq!(v["ok"], true);
    assert_eq!(v["last_commit_seq"], 7);
    assert_eq!(v["last_commit_ms"], NOW_ISH);
    assert!(v["db_size_bytes"].as_u64().unwrap() > 0);
    let (status, headers, _) = get(&fx.app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/plain; version=0.0.4");
}

#[tokio::test]
async fn assets_are_embedded_and_cacheable() {
    let fx = fixture();
    let url = super::assets::url("netmon.css");
    let (status, headers, body) = get(&fx.app, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/css");
    assert!(
        headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(body.contains("--emerald"));
    let etag = headers[header::ETAG].clone();
    let request = Request::get("/assets/netmon.js")
        .header(header::IF_NONE_MATCH, etag)
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&fx.app, request).await;
    // A different file: its own ETag, so a full answer that must be revalidated.
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    let css_etag = get(&fx.app, "/assets/netmon.css").await.1[header::ETAG].clone();
    let request = Request::get("/assets/netmon.css")
        .header(header::IF_NONE_MATCH, css_etag)
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&fx.app, request).await.0, StatusCode::NOT_MODIFIED);
    assert_eq!(
        get(&fx.app, "/assets/missing.css").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn events_stream_sends_a_tick_per_commit() {
    let fx = fixture();
    fx.ticks.send_replace(Tick {
        seq: 1,
        ..Tick::default()
    });
    let response = fx
        .app
        .clone()
        .oneshot(Request::get("/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    // The tick from before the connection is not news.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), body.next())
            .await
            .is_err()
    );
    fx.ticks.send_replace(Tick {
        seq: 2,
        flows_new: 3,
        active_flows: 9,
        ..Tick::default()
    });
    let frame = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.to_vec()).unwrap();
    assert!(text.starts_with("event: tick\ndata: {"), "{text}");
    assert!(
        text.contains("\"seq\":2") && text.contains("\"flows_new\":3"),
        "{text}"
    );
    // Shutdown ends the stream.
    fx.state.shared.shutdown.send_replace(true);
    let end = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap();
    assert!(end.is_none());
}

#[tokio::test]
async fn serve_stops_gracefully_with_an_open_event_stream() {
    use std::io::{Read, Write};
    let fx = fixture();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve(
        vec![listener],
        None,
        fx.state.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    // A plain blocking client on its own thread; it keeps the stream open.
    let (conn, head) = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = conn.read(&mut buf).unwrap();
        (conn, String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    drop(conn);
}

#[tokio::test]
async fn flows_show_the_domain_column() {
    let fx = fixture();
    let (_, _, body) = get(&fx.app, "/flows").await;
    assert!(body.contains("<th>Domain</th>"), "{body}");
    assert!(body.contains(EVIL_SCRIPT_HTML), "{body}");
    // The CNAME target below, and confidence markers that explain themselves.
    assert!(body.contains(&format!("→ {EVIL_ATTR_HTML}")), "{body}");
    assert!(
        body.contains("class=\"dns-conf stale\" title=\"stale: "),
        "{body}"
    );
    assert!(
        body.contains("class=\"dns-conf other-client\" title=\"other client: "),
        "{body}"
    );
    assert_eq!(
        body.matches("class=\"dns-conf").count(),
        2,
        "exact gets no marker"
    );
    // The name links to the flows of that domain, keeping the current filter.
    assert!(body.contains("href=\"/flows?domain=axb.test\""), "{body}");
    let (_, _, body) = get(&fx.app, "/flows?show=all").await;
    assert!(
        body.contains("href=\"/flows?show=all&amp;domain=axb.test\""),
        "{body}"
    );
    // The filter form keeps the value; the live fragment carries it.
    let (_, _, body) = get(&fx.app, "/flows?domain=A_B.test.").await;
    assert!(body.contains("name=\"domain\""), "{body}");
    assert!(body.contains("value=\"a_b.test\""), "{body}");
    assert!(
        body.contains("data-src=\"/fragment/flows?domain=a_b.test\""),
        "{body}"
    );
    assert!(
        body.contains("id=\"flow-6\"") && !body.contains("id=\"flow-7\""),
        "{body}"
    );
    // Device and host pages show it too.
    let (_, _, body) = get(&fx.app, "/devices/1").await;
    assert!(body.contains("<th>Domain</th>"), "{body}");
}

#[tokio::test]
async fn flows_domain_filter_is_a_label_suffix_match() {
    let fx = fixture();
    let ids = |q: &'static str| {
        let app = fx.app.clone();
        async move { flow_ids(&get_json(&app, &format!("/api/flows?{q}")).await) }
    };
    assert_eq!(ids("domain=evil.test").await, vec![1, 2]);
    assert_eq!(ids("domain=EVIL.TEST.").await, vec![1, 2]);
    assert_eq!(ids("domain=*.evil.test").await, vec![1, 2]);
    assert_eq!(ids("domain=vil.test").await, Vec::<i64>::new());
    assert_eq!(ids("domain=a%5C000b%5C255.evil.test").await, vec![2]);
    assert_eq!(ids("domain=test").await, vec![1, 2, 6, 7]);
    // `_` and `%` are literal, not LIKE wildcards.
    assert_eq!(ids("domain=a_b.test").await, vec![6]);
    assert_eq!(ids("domain=axb.test").await, vec![7]);
    assert_eq!(ids("domain=%25.test").await, Vec::<i64>::new());
    assert_eq!(ids("domain=_.test").await, Vec::<i64>::new());
    assert_eq!(ids("domain=a%25").await, Vec::<i64>::new());
    assert_eq!(ids("domain=evil.test&device=2").await, vec![2]);
    let long = format!("/api/flows?domain={}", "a".repeat(254));
    let (status, _, body) = get(&fx.app, &long).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("`domain`") && body.contains("253"), "{body}");
    let ok = format!("/api/flows?domain={}", "a".repeat(253));
    assert_eq!(get(&fx.app, &ok).await.0, StatusCode::OK);
}

/// Every page a hostile DNS name reaches shows it as text; JSON carries it verbatim.
#[tokio::test]
async fn dns_names_are_escaped_everywhere() {
    let fx = fixture();
    for (uri, expect) in [
        (
            "/flows",
            &[EVIL_SCRIPT_HTML, EVIL_ATTR_HTML, EVIL_BYTES][..],
        ),
        (
            "/fragment/flows",
            &[EVIL_SCRIPT_HTML, EVIL_ATTR_HTML, EVIL_BYTES],
        ),
        ("/flows?domain=evil.test", &[EVIL_SCRIPT_HTML, EVIL_BYTES]),
        ("/hosts", &[EVIL_SCRIPT_HTML]),
        ("/hosts/1", &[EVIL_SCRIPT_HTML, EVIL_ATTR_HTML, EVIL_BYTES]),
        (
            "/devices/1",
            &[EVIL_SCRIPT_HTML, EVIL_ATTR_HTML, EVIL_BYTES],
        ),
        ("/dns", &[EVIL_SCRIPT_HTML, EVIL_ATTR_HTML, EVIL_BYTES]),
        (
            "/dns?name=evil.test",
            &[EVIL_SCRIPT_HTML, EVIL_ATTR_HTML, EVIL_BYTES],
        ),
        ("/dns?name=%22onmouseover%3Dalert(1)", &[EVIL_ATTR_HTML]),
    ] {
        let (status, _, body) = get(&fx.app, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert!(!body.contains("<script>alert"), "{uri} has raw markup");
        assert!(!body.contains(EVIL_ATTR), "{uri} has a raw quote");
        for text in expect {
            assert!(body.contains(text), "{uri} lacks {text}: {body}");
        }
        // In links, names are percent-encoded.
        assert_eq!(
            body.matches("<script").count(),
            body.matches("<script src=").count(),
            "{uri}"
        );
    }
    let v = get_json(&fx.app, "/api/dns").await;
    let names: Vec<&str> = v["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            EVIL_SCRIPT,
            EVIL_BYTES,
            "shop.example.test",
            EVIL_ATTR,
            EVIL_SCRIPT
        ]
    );
    assert_eq!(v["queries"][0]["canonical_name"], EVIL_ATTR);
    let v = get_json(&fx.app, "/api/hosts").await;
    assert_eq!(v["hosts"][1]["top_domain"], EVIL_SCRIPT);
    assert_eq!(v["hosts"][0]["top_domain"], serde_json::Value::Null);
}

#[tokio::test]
async fn host_page_lists_its_domains() {
    let fx = fixture();
    let (_, _, body) = get(&fx.app, "/hosts/1").await;
    assert!(body.contains("<h2>Domains</h2>"), "{body}");
    // Busiest first, each linked to this host's flows of that name, last device linked.
    let script = body.find(EVIL_SCRIPT_HTML).unwrap();
    let bytes = body.find(EVIL_BYTES).unwrap();
    assert!(script < bytes, "{body}");
    assert!(
        body.contains(
            "href=\"/flows?show=all&amp;direction=all&amp;host=1&amp;domain=a%5C000b%5C255.evil.test\""
        ),
        "{body}"
    );
    assert!(body.contains("<a href=\"/devices/2\">phone</a>"), "{body}");
    let (_, _, body) = get(&fx.app, "/hosts/2").await;
    assert!(
        body.contains("No DNS answer has named this address"),
        "{body}"
    );
}

#[tokio::test]
async fn device_page_dns_section() {
    let fx = fixture();
    let (status, _, body) = get(&fx.app, "/devices/1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<h2>DNS</h2>"), "{body}");
    // The last hour: 30 + 10 queries, 3 NXDOMAIN; the minute two hours ago is outside.
    assert!(
        body.contains("<strong>40</strong> queries in the last 1 h"),
        "{body}"
    );
    assert!(
        body.contains("<strong id=\"nxdomain-ratio\">7.5 %</strong> (3 of 40)"),
        "{body}"
    );
    assert_eq!(body.matches("<rect class=\"nx\"").count(), 2, "{body}");
    let (_, _, day) = get(&fx.app, "/devices/1?window=1440").await;
    assert!(
        day.contains("<strong id=\"nxdomain-ratio\">73.6 %</strong> (103 of 140)"),
        "{day}"
    );
    // Top domains over a day: the script name twice, linked to the device's log for it.
    let top = &body[body.find("Top domains").unwrap()..];
    let script = top.find(EVIL_SCRIPT_HTML).unwrap();
    assert!(script < top.find(EVIL_BYTES).unwrap(), "{top}");
    assert!(
        top.contains(
            "href=\"/dns?device=1&amp;name=%3Cscript%3Ealert%281%29%3C%2Fscript%3E.evil.test\""
        ),
        "{top}"
    );
    assert!(top.contains("<td class=\"num mono\">2</td>"), "{top}");
    let (_, _, body) = get(&fx.app, "/devices/2").await;
    assert!(
        body.contains("title=\"this device's queries for it\">shop.example.test</a>"),
        "{body}"
    );
    assert!(
        body.contains("<strong id=\"nxdomain-ratio\">100.0 %</strong> (5 of 5)"),
        "{body}"
    );
}

#[tokio::test]
async fn dns_log_page_and_api() {
    let fx = fixture();
    let (status, _, body) = get(&fx.app, "/dns").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("<a href=\"/dns\" aria-current=\"page\">DNS</a>"),
        "{body}"
    );
    for id in 1..=5 {
        assert!(body.contains(&format!("id=\"dns-{id}\"")), "{id}: {body}");
    }
    assert!(body.find("id=\"dns-1\"").unwrap() < body.find("id=\"dns-5\"").unwrap());
    assert!(body.contains(">no answer</span>"), "{body}");
    assert!(
        body.contains("<span class=\"rcode rcode-nxdomain\">NXDOMAIN</span>"),
        "{body}"
    );
    assert!(
        body.contains("<span class=\"rcode rcode-servfail\">SERVFAIL</span>"),
        "{body}"
    );
    assert!(
        body.contains(">HTTPS</td>") && body.contains(">AAAA</td>"),
        "{body}"
    );
    // Client: the device's name, its address filtering the log; a bare address otherwise.
    assert!(body.contains("<a href=\"/devices/2\">phone</a>"), "{body}");
    assert!(body.contains("href=\"/dns?client=10.0.0.9\""), "{body}");
    // Name: the flows of that domain.
    assert!(
        body.contains("href=\"/flows?show=all&amp;domain=shop.example.test\""),
        "{body}"
    );
    let (_, _, body) = get(&fx.app, "/dns?rcode=none&type=a").await;
    assert!(
        body.contains("id=\"dns-3\"") && !body.contains("id=\"dns-1\""),
        "{body}"
    );
    assert!(body.contains("<option value=\"none\" selected>"), "{body}");
    assert!(body.contains("<option value=\"A\" selected>"), "{body}");

    let ids = |q: &'static str| {
        let app = fx.app.clone();
        async move {
            let v = get_json(&app, &format!("/api/dns?{q}")).await;
            v["queries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q["id"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("").await, vec![1, 2, 3, 4, 5]);
    assert_eq!(ids("device=1").await, vec![1, 2, 5]);
    assert_eq!(ids("client=10.0.0.9").await, vec![4]);
    assert_eq!(ids("client=10.0.0.").await, vec![1, 2, 3, 4, 5]);
    assert_eq!(ids("name=evil.test").await, vec![1, 2, 5]);
    assert_eq!(ids("name=example.test").await, vec![3]);
    assert_eq!(ids("name=xample.test").await, Vec::<i64>::new());
    assert_eq!(ids("name=%25").await, Vec::<i64>::new());
    assert_eq!(ids("type=AAAA").await, vec![2]);
    assert_eq!(ids("type=type1").await, vec![1, 3, 5]);
    assert_eq!(ids("rcode=NXDOMAIN").await, vec![2]);
    assert_eq!(ids("rcode=noerror&device=1").await, vec![1, 5]);
    assert_eq!(ids("rcode=none").await, vec![3]);
    assert_eq!(ids("per_page=2&page=3").await, vec![5]);

    let v = get_json(&fx.app, "/api/dns?per_page=2").await;
    assert_eq!(
        (
            v["total"].as_i64(),
            v["page"].as_i64(),
            v["per_page"].as_i64()
        ),
        (Some(5), Some(1), Some(2))
    );
    let q = v["queries"][0].as_object().unwrap();
    let mut keys: Vec<&str> = q.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "answers",
            "canonical_name",
            "client",
            "device_id",
            "device_name",
            "id",
            "name",
            "rcode",
            "source",
            "ts",
            "type"
        ]
    );
    assert_eq!(q["type"], "A");
    assert_eq!(q["rcode"], "NOERROR");
    assert_eq!(q["device_name"], "<script>alert(1)</script>");
    assert_eq!(q["source"], "packet");
    let v = get_json(&fx.app, "/api/dns?rcode=none").await;
    assert_eq!(v["queries"][0]["rcode"], serde_json::Value::Null);
    assert_eq!(v["queries"][0]["device_name"], "phone");
}

// --- security: login, sessions, CSRF, headers (issue 7, acceptance 1) -----------------

const PASSWORD: &str = "correct horse battery";

/// One hash for every test (argon2id costs real time by design).
fn password_hash() -> String {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| crate::passwd::hash(PASSWORD).unwrap())
        .clone()
}

fn password_fixture_with(metrics_token: &str) -> Fixture {
    let web = crate::config::Web {
        auth: crate::config::WebAuth::Password,
        password_hash: password_hash(),
        metrics_token: metrics_token.into(),
        ..crate::config::Web::default()
    };
    fixture_with(super::Auth::from_config(&web, false).unwrap())
}

fn password_fixture() -> Fixture {
    password_fixture_with("")
}

/// Every route `router()` declares, with its methods, read from `mod.rs` itself so a
/// route added later is covered by these tests without editing them.
fn declared_routes() -> Vec<(String, Vec<&'static str>)> {
    let routes: Vec<_> = include_str!("mod.rs")
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix(".route(\"")?;
            let (path, handlers) = rest.split_once('"')?;
            let methods = [
                ("get(", "GET"),
                ("post(", "POST"),
                ("put(", "PUT"),
                ("delete(", "DELETE"),
                ("patch(", "PATCH"),
            ]
            .into_iter()
            .filter(|(call, _)| handlers.contains(call))
            .map(|(_, m)| m)
            .collect();
            Some((path.to_owned(), methods))
        })
        .collect();
    assert!(
        routes.len() > 20,
        "router() routes not found in mod.rs: {routes:?}"
    );
    routes
}

/// A declared path with its parameters filled in (ids of seeded rows, a real asset).
fn concrete(path: &str, id: &str) -> String {
    path.replace("{id}", id).replace("{*path}", "netmon.css")
}

fn form_post(uri: &str, body: &str) -> axum::http::request::Builder {
    let _ = body;
    Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
}

fn post_form(uri: &str, body: &str, cookie: Option<&str>) -> Request<Body> {
    let mut r = form_post(uri, body);
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    r.body(Body::from(body.to_owned())).unwrap()
}

fn get_with(uri: &str, cookie: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

/// Logs in; the `Cookie` header value and the session's CSRF token.
async fn login(app: &Router) -> (String, String) {
    let (status, headers, body) = send(
        app,
        post_form("/login", &format!("password={PASSWORD}&next=%2F"), None),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_owned();
    let (status, _, page) = send(app, get_with("/devices/1", &cookie)).await;
    assert_eq!(status, StatusCode::OK);
    (cookie, csrf_of(&page))
}

#[tokio::test]
async fn login_sets_a_strict_session_cookie() {
    let fx = password_fixture();
    let (status, _, body) = get(&fx.app, "/login?next=/hosts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("type=\"password\""), "{body}");
    assert!(body.contains("name=\"next\" value=\"/hosts\""), "{body}");
    let (status, headers, _) = send(
        &fx.app,
        post_form(
            "/login",
            &format!("password={PASSWORD}&next=%2Fhosts%3Fq%3Da"),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/hosts?q=a");
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    let (pair, attrs) = cookie.split_once(';').unwrap();
    let id = pair.strip_prefix("netmon_session=").unwrap();
    assert!(
        id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cookie}"
    );
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=86400"] {
        assert!(
            attrs.split(';').any(|a| a.trim() == attr),
            "{attr} missing: {cookie}"
        );
    }
    assert!(!cookie.contains("Secure"), "no TLS, no Secure: {cookie}");
    // Logged in: the pages answer, /login sends on.
    assert_eq!(send(&fx.app, get_with("/", pair)).await.0, StatusCode::OK);
    let (status, headers, _) = send(&fx.app, get_with("/login?next=/dns", pair)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/dns");
    // A wrong password: 401, the form again, no cookie.
    let (status, headers, body) = send(&fx.app, post_form("/login", "password=wrong", None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(body.contains("Wrong password"), "{body}");
    // A made-up session id is no session.
    let fake = format!("netmon_session={}", "a".repeat(64));
    assert_eq!(
        send(&fx.app, get_with("/", &fake)).await.0,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn open_redirects_on_login_land_on_local_paths() {
    let fx = password_fixture();
    let (cookie, _) = login(&fx.app).await;
    for next in [
        "//evil.test",
        "/\\evil.test",
        "https://evil.test",
        "/%2F%2Fevil.test",
        "%2F%2Fevil.test",
        "/%5Cevil.test",
        "http:evil.test",
        "javascript:alert(1)",
        "/\t/evil.test",
    ] {
        let encoded = super::login::encode_component(next);
        let (status, headers, _) = send(
            &fx.app,
            post_form(
                "/login",
                &format!("password={PASSWORD}&next={encoded}"),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{next}");
        assert_eq!(headers[header::LOCATION], "/", "POST next={next}");
        let (_, headers, _) = send(
            &fx.app,
            get_with(&format!("/login?next={encoded}"), &cookie),
        )
        .await;
        assert_eq!(headers[header::LOCATION], "/", "GET next={next}");
        // The login form never carries it either.
        let (_, _, body) = get(&fx.app, &format!("/login?next={encoded}")).await;
        assert!(body.contains("name=\"next\" value=\"/\""), "{next}: {body}");
    }
}

#[tokio::test]
async fn every_route_needs_a_session_except_the_open_ones() {
    let fx = password_fixture();
    for (path, methods) in declared_routes() {
        if !methods.contains(&"GET") || path == "/events" {
            continue;
        }
        let uri = concrete(&path, "1");
        let (status, headers, body) = get(&fx.app, &uri).await;
        match path.as_str() {
            "/healthz" | "/metrics" | "/login" | "/assets/{*path}" => {
                assert_eq!(status, StatusCode::OK, "{uri}: {body}")
            }
            p if p.starts_with("/api/") || p.starts_with("/fragment/") => {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(v["error"].as_str().unwrap().contains("login"), "{body}");
            }
            _ => {
                assert_eq!(status, StatusCode::SEE_OTHER, "{uri}");
                let to = headers[header::LOCATION].to_str().unwrap();
                assert_eq!(
                    to,
                    format!("/login?next={}", super::login::encode_component(&uri))
                );
            }
        }
    }
    let (status, _, _) = get(&fx.app, "/events").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Unknown pages too: nothing about the UI leaks before login.
    assert_eq!(get(&fx.app, "/nope").await.0, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn every_state_changing_route_needs_a_session_and_a_csrf_token() {
    let fx = password_fixture();
    let (cookie, csrf) = login(&fx.app).await;
    let mut checked = 0;
    for (path, methods) in declared_routes() {
        for method in methods.iter().filter(|m| **m != "GET") {
            if path == "/login" {
                continue; // the login itself: no session to protect yet
            }
            checked += 1;
            // 999: no such row, so a request that gets through changes nothing.
            let uri = concrete(&path, "999");
            let request =
                |cookie: Option<&str>, field: Option<&str>, header_token: Option<&str>| {
                    let mut r = Request::builder()
                        .method(*method)
                        .uri(&uri)
                        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                    if let Some(c) = cookie {
                        r = r.header(header::COOKIE, c);
                    }
                    if let Some(t) = header_token {
                        r = r.header("x-csrf-token", t);
                    }
                    let body = match field {
                        Some(t) => format!("name=x&csrf={t}"),
                        None => "name=x".to_owned(),
                    };
                    r.body(Body::from(body)).unwrap()
                };
            // No session: a page form goes to the login, an API call gets 401.
            let (status, headers, _) = send(&fx.app, request(None, Some(&csrf), None)).await;
            if path.starts_with("/api/") {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
            } else {
                assert_eq!(status, StatusCode::SEE_OTHER, "{method} {uri}");
                assert_eq!(headers[header::LOCATION], "/login", "{method} {uri}");
            }
            // A session, but no token, a wrong one, or another session's.
            let wrong = "0".repeat(64);
            for (field, header_token) in [
                (None, None),
                (Some(wrong.as_str()), None),
                (None, Some(wrong.as_str())),
                (Some(""), None),
                (Some(csrf.as_str()), Some(wrong.as_str())),
            ] {
                let (status, _, body) =
                    send(&fx.app, request(Some(&cookie), field, header_token)).await;
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {uri} field {field:?} header {header_token:?}: {body}"
                );
            }
            // The right token (field or header) reaches the handler.
            for (field, header_token) in [(Some(csrf.as_str()), None), (None, Some(csrf.as_str()))]
            {
                let (status, _, body) =
                    send(&fx.app, request(Some(&cookie), field, header_token)).await;
                assert!(
                    ![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&status),
                    "{method} {uri}: {status} {body}"
                );
            }
        }
    }
    assert!(checked >= 2, "no state-changing routes found");
    assert!(
        fx.writer_rx.try_recv().is_err(),
        "a refused request reached the writer"
    );
    // Another session's token is no good either.
    let (other_cookie, other_csrf) = login(&fx.app).await;
    assert_ne!(other_csrf, csrf);
    let r = post_form(
        "/devices/1/name",
        &format!("name=x&csrf={csrf}"),
        Some(&other_cookie),
    );
    assert_eq!(send(&fx.app, r).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let fx = password_fixture();
    let (cookie, csrf) = login(&fx.app).await;
    let (_, _, page) = send(&fx.app, get_with("/", &cookie)).await;
    assert!(
        page.contains("action=\"/logout\""),
        "a logout button on every page"
    );
    let (status, headers, _) = send(
        &fx.app,
        post_form("/logout", &format!("csrf={csrf}"), Some(&cookie)),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");
    let cleared = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cleared.starts_with("netmon_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(
        send(&fx.app, get_with("/", &cookie)).await.0,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn login_is_throttled_after_repeated_failures() {
    let fx = password_fixture();
    for i in 0..crate::web::throttle::FREE_FAILURES {
        let (status, _, _) = send(&fx.app, post_form("/login", "password=guess", None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // Locked out: even the right password is not checked now.
    for password in ["guess", PASSWORD] {
        let (status, headers, body) = send(
            &fx.app,
            post_form("/login", &format!("password={password}"), None),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let retry: u64 = headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert!(headers.get(header::SET_COOKIE).is_none());
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _, _) = send(
        &fx.app,
        post_form("/login", &format!("password={PASSWORD}"), None),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "after the lockout the password works"
    );
}

/// (method, uri, cookie?, body) of responses of every kind: pages, API, assets, open
/// routes, redirects, 400, 401, 403, 404, 405, 413.
async fn assorted_responses(fx: &Fixture) -> Vec<(String, StatusCode, HeaderMap)> {
    let (cookie, csrf) = login(&fx.app).await;
    let mut out = Vec::new();
    let mut push = |what: String, (status, headers, _): (StatusCode, HeaderMap, String)| {
        out.push((what, status, headers));
    };
    for uri in [
        "/",
        "/devices/1",
        "/api/flows",
        "/hosts?page=0",
        "/nope",
        "/devices/1/name",
        "/healthz",
        "/metrics",
        "/login",
    ] {
        push(
            format!("GET {uri} (session)"),
            send(&fx.app, get_with(uri, &cookie)).await,
        );
    }
    for uri in [
        "/",
        "/api/flows",
        "/login",
        "/healthz",
        "/assets/netmon.css",
        "/assets/nope.css",
        &super::assets::url("netmon.js"),
    ] {
        push(format!("GET {uri}"), get(&fx.app, uri).await);
    }
    push(
        "POST rename, no token".into(),
        send(
            &fx.app,
            post_form("/devices/1/name", "name=x", Some(&cookie)),
        )
        .await,
    );
    push(
        "POST rename, no session".into(),
        send(&fx.app, post_form("/devices/1/name", "name=x", None)).await,
    );
    push(
        "POST rename, too big".into(),
        send(
            &fx.app,
            post_form(
                "/devices/1/name",
                &format!("csrf={csrf}&name={}", "x".repeat(20_000)),
                Some(&cookie),
            ),
        )
        .await,
    );
    push(
        "POST login, wrong".into(),
        send(&fx.app, post_form("/login", "password=nope", None)).await,
    );
    out
}

#[tokio::test]
async fn security_headers_are_on_every_response() {
    let fx = password_fixture();
    let responses = assorted_responses(&fx).await;
    let statuses: std::collections::BTreeSet<u16> =
        responses.iter().map(|r| r.1.as_u16()).collect();
    for s in [200, 303, 400, 401, 403, 404, 405, 413] {
        assert!(statuses.contains(&s), "no {s} response among {statuses:?}");
    }
    for (what, status, headers) in &responses {
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            super::CSP,
            "{what} ({status})"
        );
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer", "{what}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{what}");
        let cache = headers[header::CACHE_CONTROL].to_str().unwrap();
        if what.contains("/assets/") && *status == StatusCode::OK {
            assert!(
                cache == "no-cache" || cache.contains("immutable"),
                "{what}: {cache}"
            );
        } else {
            assert_eq!(cache, "no-store", "{what} ({status})");
        }
    }
    let csp = super::CSP;
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{directive}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
}

#[tokio::test]
async fn without_a_password_only_the_setup_page_answers() {
    let web = crate::config::Web::default();
    let fx = fixture_with(super::Auth::from_config(&web, false).unwrap());
    for uri in ["/", "/devices", "/api/flows", "/login"] {
        let (status, _, body) = get(&fx.app, uri).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert!(body.contains("netmon passwd"), "{uri}: {body}");
    }
    let (status, _, _) = send(&fx.app, post_form("/login", "password=anything", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(get(&fx.app, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(&fx.app, "/metrics").await.0, StatusCode::OK);
    assert_eq!(get(&fx.app, "/assets/netmon.css").await.0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_token_when_set() {
    let token = "s3cret-token-0123456789";
    let fx = password_fixture_with(token);
    let (status, headers, _) = get(&fx.app, "/metrics").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let with = |t: &str| {
        Request::get("/metrics")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&fx.app, with("wrong")).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&fx.app, with(token)).await.0, StatusCode::OK);
    // /healthz stays open.
    assert_eq!(get(&fx.app, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn metrics_without_a_token_answers_only_loopback() {
    let from = |peer: &str| {
        let mut r = Request::get("/metrics").body(Body::empty()).unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        r
    };
    for fx in [password_fixture(), fixture()] {
        for local in [
            "127.0.0.1:5000",
            "127.8.9.1:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert_eq!(
                send(&fx.app, from(local)).await.0,
                StatusCode::OK,
                "{local}"
            );
        }
        for lan in [
            "10.77.0.10:5000",
            "[fd77::10]:5000",
            "[::ffff:10.0.0.1]:5000",
            "0.0.0.0:1",
        ] {
            let (status, _, body) = send(&fx.app, from(lan)).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{lan}");
            assert!(body.contains("metrics_token"), "{body}");
            assert!(!body.contains("netmon_"), "no metrics leak: {body}");
        }
        // No peer known at all: refused too.
        let r = Request::get("/metrics").body(Body::empty()).unwrap();
        let response = fx.app.clone().oneshot(r).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
    }
    // With a token, the token decides, from any address.
    let token = "s3cret-token-0123456789";
    let fx = password_fixture_with(token);
    let mut r = from("10.77.0.10:5000");
    r.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    assert_eq!(send(&fx.app, r).await.0, StatusCode::OK);
    assert_eq!(
        send(&fx.app, from("127.0.0.1:5000")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn open_mode_answers_only_to_addresses_and_localhost() {
    let fx = fixture();
    let with_host = |host: &str| {
        Request::get("/")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send(&fx.app, with_host("127.0.0.1:8080")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&fx.app, with_host("localhost:8080")).await.0,
        StatusCode::OK
    );
    // A DNS-rebinding page reaches the loopback UI under its own name.
    assert_eq!(
        send(&fx.app, with_host("rebind.evil.test:8080")).await.0,
        StatusCode::FORBIDDEN
    );
    // Open mode still wants the CSRF token on a POST.
    let r = post_form("/devices/1/name", "name=x", None);
    assert_eq!(send(&fx.app, r).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn request_bodies_are_bounded() {
    let fx = password_fixture();
    let (cookie, csrf) = login(&fx.app).await;
    let big = format!("name={}", "x".repeat(20_000));
    // Token in the form: the gate refuses to buffer it.
    let r = post_form(
        "/devices/1/name",
        &format!("csrf={csrf}&{big}"),
        Some(&cookie),
    );
    assert_eq!(send(&fx.app, r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // Token in the header: the form extractor's limit.
    let r = form_post("/devices/1/name", &big)
        .header(header::COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .body(Body::from(big.clone()))
        .unwrap();
    assert_eq!(send(&fx.app, r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    let r = post_form("/login", &format!("password={}", "x".repeat(20_000)), None);
    assert_eq!(send(&fx.app, r).await.0, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn get_routes_never_reach_the_writer() {
    let fx = password_fixture();
    let (cookie, _) = login(&fx.app).await;
    let mut crawled = 0;
    for (path, methods) in declared_routes() {
        if !methods.contains(&"GET") || path == "/events" {
            continue;
        }
        for id in ["1", "2"] {
            for query in [
                "",
                "?page=1&per_page=500",
                "?window=1440",
                "?since=0",
                "?show=all&direction=all&sort=bytes",
            ] {
                let uri = format!("{}{query}", concrete(&path, id));
                let (status, _, body) = send(&fx.app, get_with(&uri, &cookie)).await;
                assert!(status.as_u16() < 500, "{uri}: {status} {body}");
                crawled += 1;
            }
        }
    }
    assert!(crawled > 100);
    assert!(
        fx.writer_rx.try_recv().is_err(),
        "a GET sent a command to the writer"
    );
}

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

#[test]
fn tls_config_reads_pem_and_der_and_names_bad_files() {
    super::tls::server_config(&tls_fixture("cert.pem"), &tls_fixture("key.pem")).unwrap();
    super::tls::server_config(&tls_fixture("cert.der"), &tls_fixture("key.der")).unwrap();
    let e = super::tls::server_config(&tls_fixture("cert.pem"), &tls_fixture("README"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("web.tls_key") && e.contains("README"), "{e}");
    let e = super::tls::server_config(&tls_fixture("missing.pem"), &tls_fixture("key.pem"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("web.tls_cert") && e.contains("missing.pem"),
        "{e}"
    );
}

/// HTTPS end to end: `serve` with the DER pair (as OpenWrt's uhttpd has them), curl as
/// the client; the session cookie is `Secure`.
#[tokio::test]
async fn serve_speaks_tls_and_marks_the_cookie_secure() {
    let web = crate::config::Web {
        auth: crate::config::WebAuth::Password,
        password_hash: password_hash(),
        ..crate::config::Web::default()
    };
    let fx = fixture_with(super::Auth::from_config(&web, true).unwrap());
    let tls = super::tls::server_config(&tls_fixture("cert.der"), &tls_fixture("key.der")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve(
        vec![listener],
        Some(tls),
        fx.state.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let curl = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "5", "-o", "/dev/null", "-D", "-"])
                .args(&args)
                .output()
                .expect("curl (the TLS test needs it; .ci/run installs it)");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let url = format!("https://127.0.0.1:{port}/login");
    let head = curl(vec!["-k".into(), url.clone()]).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy"),
        "{head}"
    );
    // Verified against the certificate itself, by name.
    let head = curl(vec![
        "--cacert".into(),
        tls_fixture("cert.pem").display().to_string(),
        "--resolve".into(),
        format!("localhost:{port}:127.0.0.1"),
        format!("https://localhost:{port}/healthz"),
    ])
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = curl(vec![
        "-k".into(),
        "--data-urlencode".into(),
        format!("password={PASSWORD}"),
        url,
    ])
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 303"), "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("; Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Plain HTTP on the TLS port gets nothing.
    let head = curl(vec![format!("http://127.0.0.1:{port}/healthz")])
        .await
        .unwrap();
    assert!(!head.contains("200"), "{head}");
    stop_tx.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), server).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
}

#[tokio::test]
async fn flows_page_lives_at_flows_and_links_there() {
    let fx = fixture();
    let (status, _, flows) = get(&fx.app, "/flows").await;
    assert_eq!(status, StatusCode::OK);
    // `/` is the overview, which links to the flow search.
    let (status, _, root) = get(&fx.app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(root.contains("href=\"/flows\""), "{root}");
    // Nav, form, clear, sort and CSV links all point at /flows (or its API).
    for needle in [
        "href=\"/flows\" aria-current=\"page\"",
        "action=\"/flows\"",
        "href=\"/flows?sort=dst\"",
        "href=\"/api/flows.csv\"",
        "data-src=\"/fragment/flows\"",
    ] {
        assert!(flows.contains(needle), "{needle}: {flows}");
    }
    assert!(!flows.contains("href=\"/?"), "{flows}");
    // Device and host pages link to their flows on /flows.
    let (_, _, device) = get(&fx.app, "/devices/1").await;
    assert!(
        device.contains("href=\"/flows?show=all&amp;direction=all&amp;device=1\""),
        "{device}"
    );
}

#[tokio::test]
async fn flow_search_filters_answer_and_bad_values_name_the_parameter() {
    let fx = fixture();
    let ids = |q: &'static str| {
        let app = fx.app.clone();
        async move { flow_ids(&get_json(&app, &format!("/api/flows?show=all&direction=all&{q}")).await) }
    };
    assert_eq!(ids("src=10.0.0.0/30").await, Vec::<i64>::new());
    assert_eq!(ids("src=10.0.0.4/30").await, vec![4, 3, 1, 2, 7, 5]);
    assert_eq!(
        ids("src=10.0.0.4/30&state=established").await,
        vec![4, 3, 1, 2, 5]
    );
    assert_eq!(ids("dst=198.51.100.0/24&sort=dst").await, vec![1, 5, 7, 2]);
    assert_eq!(ids("src=192.0.2.9").await, vec![6]);
    assert_eq!(ids("src=2001:db8::/32").await, Vec::<i64>::new());
    assert_eq!(ids("min_bytes=500&sort=bytes").await, vec![2, 5]);
    assert_eq!(ids("to=1970-01-01").await, Vec::<i64>::new());
    assert_eq!(ids("from=1970-01-01T00:00Z&per_page=2").await, vec![4, 3]);
    // A page past the count, and `page=last`.
    let v = get_json(
        &fx.app,
        "/api/flows?show=all&direction=all&per_page=4&page=last",
    )
    .await;
    assert_eq!(
        (v["page"].as_u64(), v["last_page"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(flow_ids(&v), vec![6, 7, 5]);
    for (uri, param) in [
        ("/api/flows?src=10.0.0.0/33", "src"),
        ("/api/flows?dst=10.0.0.0/x", "dst"),
        ("/api/flows?state=SLEEPING", "state"),
        ("/api/flows?min_score=101", "min_score"),
        ("/api/flows?code=NOPE", "code"),
        ("/api/flows?from=yesterday", "from"),
        ("/api/flows?to=2026-13-01", "to"),
        ("/api/flows?from=99999d", "from"),
        ("/api/flows?min_bytes=10X", "min_bytes"),
        ("/api/flows?cols=device,nope", "cols"),
        ("/flows?page=first", "page"),
        ("/api/flows.csv?min_bytes=-1", "min_bytes"),
    ] {
        let (status, _, body) = get(&fx.app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert!(body.contains(&format!("`{param}`")), "{uri}: {body}");
    }
}

#[tokio::test]
async fn flow_columns_are_chosen_by_cols_and_kept_in_links() {
    let fx = fixture();
    // The form's checkboxes send one `cols=` each.
    let (status, _, body) = get(&fx.app, "/flows?cols=dst&cols=device&cols=bytes").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("<th>Device</th>"), "{body}");
    assert!(!body.contains("<th>Domain</th>"), "{body}");
    assert!(!body.contains("<th>Proto</th>"), "{body}");
    assert!(
        body.contains("href=\"/flows?cols=device%2Cdst%2Cbytes&amp;sort=dst\""),
        "{body}"
    );
    assert!(
        body.contains("name=\"cols\" value=\"bytes\" checked"),
        "{body}"
    );
    assert!(
        !body.contains("name=\"cols\" value=\"proto\" checked"),
        "{body}"
    );
}

#[tokio::test]
async fn csv_export_quotes_and_defuses_hostile_text() {
    let fx = fixture();
    let conn = Connection::open(fx._dir.db()).unwrap();
    conn.execute(
        "UPDATE devices SET name = '=HYPERLINK(\"http://x\",\"a,b\")' WHERE id = 2",
        [],
    )
    .unwrap();
    drop(conn);
    let (status, headers, body) = get(&fx.app, "/api/flows.csv?show=all&direction=all").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(headers["x-netmon-row-limit"], "100000");
    let lines: Vec<&str> = body.split("\r\n").collect();
    assert!(lines[0].starts_with("id,first_seen,last_seen,ended_at,device_id,device,"));
    assert_eq!(lines.len(), 1 + 7 + 1, "{body}");
    assert!(
        body.contains(",\"'=HYPERLINK(\"\"http://x\"\",\"\"a,b\"\")\","),
        "{body}"
    );
    // Names verbatim otherwise; a quote forces quoting.
    assert!(body.contains("\"\"\"onmouseover=alert(1)\""), "{body}");
    // The filter applies.
    let (_, _, one) = get(&fx.app, "/api/flows.csv?src=192.0.2.9").await;
    assert_eq!(
        one.split("\r\n").filter(|l| !l.is_empty()).count(),
        2,
        "{one}"
    );
}

// --- the overview ------------------------------------------------------------------------

/// Rollups, a new host, WAN minutes and a baseline timed against the real clock (the
/// overview's windows end now).
fn seed_overview(fx: &Fixture) {
    let conn = Connection::open(fx._dir.db()).unwrap();
    let now = super::now_ms();
    let minute = now / 60_000 * 60_000;
    let hour = now / 3_600_000 * 3_600_000;
    conn.execute_batch(&format!(
        "UPDATE devices SET last_seen = {now} WHERE id = 2;
         UPDATE remote_hosts SET last_seen = {now} WHERE id IN (1, 2);
         INSERT INTO remote_hosts (id, ip, rdns, first_seen, last_seen, bytes_up, bytes_down, flows) VALUES
           (3, '2001:db8::7', 'new.example', {now} - 120000, {now}, 5, 6, 1);
         INSERT INTO remote_host_ports (remote_host_id, proto, port, first_seen, last_seen, flows) VALUES
           (3, 17, 5353, {now} - 120000, {now} - 60000, 1);
         INSERT INTO device_minutes (device_id, minute, bytes_up, bytes_down, flows_new) VALUES
           (1, {minute} - 120000, 7000, 90000, 4), (2, {minute} - 60000, 3000, 100, 2);
         INSERT INTO device_hours (device_id, hour, bytes_up, bytes_down, flows_new) VALUES
           (1, {hour}, 7000, 90000, 4), (2, {hour}, 3000, 100, 2);
         INSERT INTO remote_host_minutes (remote_host_id, minute, bytes_up, bytes_down, flows_new) VALUES
           (1, {minute} - 120000, 7000, 90000, 4), (3, {minute} - 60000, 10, 20, 1);
         INSERT INTO remote_host_hours (remote_host_id, hour, bytes_up, bytes_down, flows_new) VALUES
           (2, {hour} - 7200000, 1, 999999, 1);
         INSERT INTO interface_minutes (interface, minute, role, rx_bytes, tx_bytes) VALUES
           ('wan', {minute} - 120000, 'wan', 6000000, 600000);
         INSERT INTO device_baselines (device_id, computed_at, history_from, minutes, egress_p95, egress_by_hour)
           VALUES (1, {now}, 0, 100, 5000, '[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24]');"
    ))
    .unwrap();
}

#[tokio::test]
async fn overview_has_linked_tiles_charts_live_flows_and_panels() {
    let fx = fixture();
    seed_overview(&fx);
    let (status, headers, body) = get(&fx.app, "/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers.get(header::SET_COOKIE).is_none(),
        "nothing chosen, nothing set"
    );
    assert!(
        body.contains(r#"<a href="/" aria-current="page">Overview</a>"#),
        "nav"
    );
    for href in [
        "/devices",
        "/flows",
        "/hosts?sort=first_seen",
        "/dns",
        "/router",
        "/incidents",
    ] {
        assert!(
            body.contains("class=\"tile") && body.contains(&format!("href=\"{href}\"")),
            "tile {href}"
        );
    }
    for id in [
        "ov-tiles",
        "ov-charts",
        "ov-flows",
        "ov-hosts",
        "ov-domains",
        "ov-devices",
        "ov-new",
        "ov-ports",
    ] {
        assert!(body.contains(&format!("id=\"{id}\"")), "{id}");
    }
    // Fragments and what makes them stale.
    assert!(
        body.contains(r#"data-src="/fragment/overview/hosts?w_hosts=1h""#),
        "{body}"
    );
    assert!(body.contains("data-topics=\"flows_new"), "topics");
    // Charts: WAN as a rate with hover data; zoomable; axis labels the script localises.
    assert!(body.contains("id=\"chart-wan\"") && body.contains("data-zoom=\"1\""));
    assert!(body.contains("/s"), "a rate axis");
    assert!(body.contains("class=\"bar\" data-t="), "hover data on bars");
    // 6 000 000 B received in one minute = 100 000 B/s.
    assert!(body.contains("↓ 97.7 KiB/s"), "WAN rate tooltip");
    // Panels: the device label is escaped, hosts link to their pages, flows to /flows.
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!body.contains("<script>alert(1)"));
    assert!(body.contains("href=\"/hosts/3\""), "newest host");
    assert!(body.contains("5353/udp"), "rare port");
    assert!(
        body.contains("href=\"/flows?device=1\""),
        "talker links to its flows"
    );
    assert!(body.contains("data-rel"), "relative ages");
    assert!(body.contains("id=\"flow-1\""), "live flows");
    for w in ["10m", "1h", "24h", "7d", "30d"] {
        assert!(
            body.contains(&format!("href=\"/?w_ports={w}\"")),
            "window {w}"
        );
    }
}

#[tokio::test]
async fn overview_remembers_each_panel_window_in_a_strict_cookie() {
    let fx = fixture();
    seed_overview(&fx);
    let (status, headers, body) = get(&fx.app, "/?w_hosts=24h").await;
    assert_eq!(status, StatusCode::OK);
    let set = headers[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.starts_with("netmon_w="), "{set}");
    assert!(
        set.contains("hosts:24h") && set.contains("domains:1h"),
        "{set}"
    );
    for attr in ["Path=/", "Max-Age=31536000", "HttpOnly", "SameSite=Strict"] {
        assert!(set.contains(attr), "{attr}: {set}");
    }
    // 24 h of hours: host 2's hour rollup is in, and the 24h link is current.
    assert!(
        body.contains("href=\"/hosts/2\""),
        "24 h reads the hour rollups"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let (_, headers, body) = send(
        &fx.app,
        Request::get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(headers.get(header::SET_COOKIE).is_none());
    assert!(
        body.contains(r#"<a href="/?w_hosts=24h" aria-current="true">24h</a>"#),
        "remembered"
    );
    assert!(body.contains(r#"<a href="/?w_domains=1h" aria-current="true">1h</a>"#));
    // The fragment reads the same cookie.
    let (_, _, frag) = send(
        &fx.app,
        Request::get("/fragment/overview/hosts")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(frag.contains(r#"aria-current="true">24h</a>"#), "{frag}");
    // Junk in the cookie is ignored, not an error.
    let (status, _, body) = send(
        &fx.app,
        Request::get("/")
            .header(header::COOKIE, "netmon_w=hosts:forever,<b>:1h,ports:7d")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"<a href="/?w_ports=7d" aria-current="true">7d</a>"#));
    assert!(body.contains(r#"<a href="/?w_hosts=1h" aria-current="true">1h</a>"#));
}

#[tokio::test]
async fn overview_refuses_bad_windows_and_ranges_naming_them() {
    let fx = fixture();
    for (uri, param) in [
        ("/?w_hosts=2h", "`w_hosts`"),
        ("/?w=1y", "`w`"),
        ("/?from=1000", "`from`/`to`"),
        ("/?from=abc&to=5", "`from`"),
        ("/?from=0&to=1000", "`from`/`to`"),
        ("/fragment/overview/ports?w_ports=x", "`w_ports`"),
    ] {
        let (status, headers, body) = get(&fx.app, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains(param), "{uri}: {body}");
        assert!(headers.get(header::SET_COOKIE).is_none(), "{uri}");
    }
}

#[tokio::test]
async fn overview_fragments_are_panels_alone() {
    let fx = fixture();
    seed_overview(&fx);
    for part in [
        "tiles", "charts", "flows", "hosts", "domains", "devices", "new", "ports",
    ] {
        let (status, _, body) =
            get(&fx.app, &format!("/fragment/overview/{part}?w_hosts=7d")).await;
        assert_eq!(status, StatusCode::OK, "{part}: {body}");
        assert!(
            !body.contains("<html") && !body.contains("<nav aria"),
            "{part}"
        );
    }
    let (_, _, charts) = get(&fx.app, "/fragment/overview/charts?w=30d").await;
    assert!(
        charts.contains("covers up to a day"),
        "no DNS chart over a month"
    );
    assert!(
        charts.contains("data-bucket=\"3600000\""),
        "30 d: hour bars"
    );
    assert!(
        charts.contains("data-fmt=\"md\""),
        "day labels over a month"
    );
    let now = super::now_ms();
    let (_, _, zoom) = get(
        &fx.app,
        &format!(
            "/fragment/overview/charts?from={}&to={now}",
            now - 30 * 60_000
        ),
    )
    .await;
    assert!(
        zoom.contains("data-bucket=\"60000\"") && zoom.contains("reset"),
        "{zoom}"
    );
    let (status, _, _) = get(&fx.app, "/fragment/overview/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn host_page_offers_a_block_snippet() {
    let fx = fixture();
    seed_overview(&fx);
    let (_, _, body) = get(&fx.app, "/hosts/1").await;
    assert!(
        body.contains("nft insert rule inet fw4 forward ip daddr 198.51.100.1 counter drop"),
        "{body}"
    );
    assert!(
        body.contains("uci set firewall.@rule[-1].dest_ip=&#39;198.51.100.1&#39;")
            || body.contains("uci set firewall.@rule[-1].dest_ip='198.51.100.1'")
    );
    let (_, _, body) = get(&fx.app, "/hosts/3").await;
    assert!(body.contains("ip6 daddr 2001:db8::7 counter drop"), "v6");
    assert!(body.contains("family=") && body.contains("ipv6"));
    assert_eq!(super::hosts::block_snippet("198.51.100.7; rm -rf /"), None);
}

#[tokio::test]
async fn device_chart_overlays_the_egress_baseline() {
    let fx = fixture();
    seed_overview(&fx);
    let (_, _, body) = get(&fx.app, "/devices/1").await;
    assert!(body.contains("<polyline class=\"baseline\""), "{body}");
    assert!(body.contains("usual upload"));
    let (_, _, body) = get(&fx.app, "/devices/2").await;
    assert!(!body.contains("class=\"baseline\""), "no baseline, no line");
}
