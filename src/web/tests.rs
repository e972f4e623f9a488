//! The router end to end: a temporary database built from `schema.sql` with rows
//! inserted directly, requests through `tower::ServiceExt::oneshot`, and a stand-in
//! writer thread that answers commands.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, sync_channel};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use metrics_exporter_prometheus::PrometheusBuilder;
use rusqlite::{Connection, params};
use tokio::sync::watch;
use tokio_stream::StreamExt as _;
use tower::ServiceExt as _;

use super::{AppState, router};
use crate::event::{Command, CommandReply, Event};
use crate::store::read::ReadPool;
use crate::store::read::tests::{
    insert_flows, insert_queries, name_id, set_flow_domain, temp_db, tempdir::TempDir,
};
use crate::store::writer::{Tick, WriterHandle};

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

fn fixture() -> Fixture {
    let (dir, conn) = temp_db("web");
    seed(&conn);
    drop(conn);
    let reads = ReadPool::open(&dir.db(), 2).unwrap();
    let (tx, writer_rx) = sync_channel(8);
    let writer = WriterHandle::new(tx, Arc::new(AtomicUsize::new(0)));
    let (ticks, ticks_rx) = watch::channel(Tick::default());
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    let state = AppState::new(reads, writer, ticks_rx, metrics, dir.db());
    Fixture {
        _dir: dir,
        app: router(state.clone()),
        state,
        ticks,
        writer_rx,
    }
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
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
    let (status, headers, body) = get(&fx.app, "/").await;
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
    let (_, _, body) = get(&fx.app, "/?direction=router-local").await;
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
    assert_eq!(v.as_object().unwrap().len(), 4);
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
        ("/?order=sideways", "order"),
        ("/fragment/flows?per_page=9999", "per_page"),
        ("/devices/1?window=0", "window"),
        ("/hosts?page=x", "page"),
        ("/?domain=.", "domain"),
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
        "/",
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
        "/",
        "/devices",
        "/devices/1",
        "/hosts",
        "/hosts/1",
        "/dns",
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
    let (_, _, body) = get(&fx.app, "/").await;
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
    let request = Request::post("/devices/1/name")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "same-origin")
        .body(Body::from("name=%20Kid%27s+%3Ctablet%3E%20"))
        .unwrap();
    let (status, headers, _) = send(&app, request).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/devices/1");
    assert_eq!(writer.join().unwrap(), (1, "Kid's <tablet>".to_owned()));
}

#[tokio::test]
async fn rename_refusals_send_nothing() {
    let fx = fixture();
    let form = |uri: &str, body: &str, site: Option<&str>| {
        let mut r =
            Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        if let Some(site) = site {
            r = r.header("sec-fetch-site", site);
        }
        r.body(Body::from(body.to_owned())).unwrap()
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
    let request = Request::post("/devices/1/name")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("name=x"))
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
            "bytes_down",
            "bytes_up",
            "first_seen",
            "flows",
            "hostname",
            "id",
            "ip",
            "last_seen",
            "mac",
            "name"
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
    let server = tokio::spawn(super::serve(vec![listener], fx.state.clone(), async {
        let _ = stop_rx.await;
    }));
    // A plain blocking client on its own thread; it keeps the stream open.
    let (conn, head) = tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
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
    let (_, _, body) = get(&fx.app, "/").await;
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
    assert!(body.contains("href=\"/?domain=axb.test\""), "{body}");
    let (_, _, body) = get(&fx.app, "/?show=all").await;
    assert!(
        body.contains("href=\"/?show=all&amp;domain=axb.test\""),
        "{body}"
    );
    // The filter form keeps the value; the live fragment carries it.
    let (_, _, body) = get(&fx.app, "/?domain=A_B.test.").await;
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
        ("/", &[EVIL_SCRIPT_HTML, EVIL_ATTR_HTML, EVIL_BYTES][..]),
        (
            "/fragment/flows",
            &[EVIL_SCRIPT_HTML, EVIL_ATTR_HTML, EVIL_BYTES],
        ),
        ("/?domain=evil.test", &[EVIL_SCRIPT_HTML, EVIL_BYTES]),
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
            "href=\"/?show=all&amp;direction=all&amp;host=1&amp;domain=a%5C000b%5C255.evil.test\""
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
        body.contains("href=\"/?show=all&amp;domain=shop.example.test\""),
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
