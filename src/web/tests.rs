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
use crate::store::read::tests::{insert_flows, temp_db, tempdir::TempDir};
use crate::store::writer::{Tick, WriterHandle};

const NOW_ISH: i64 = 1_714_568_645_000;

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
    let icmp = &v["flows"][3];
    assert_eq!(icmp["proto"], "icmp");
    assert_eq!(icmp["src_port"], serde_json::Value::Null);
    assert_eq!(icmp["icmp_type"], 8);
    assert_eq!(icmp["device_id"], serde_json::Value::Null);
    assert_eq!(icmp["device_name"], serde_json::Value::Null);
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
    for uri in ["/", "/devices", "/devices/1", "/hosts", "/hosts/1", "/nope"] {
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
