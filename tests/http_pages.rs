//! The other pages end to end: the overview and its panels, device and host pages,
//! lists and minute APIs, health and metrics, assets; escaping and no inline script on
//! every page.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use netmon::event::Tick;
use rusqlite::Connection;

use common::http::*;
use common::now_ms;

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
    let url = netmon::web::assets::url("netmon.css");
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

// --- the overview ------------------------------------------------------------------------

/// Rollups, a new host, WAN minutes and a baseline timed against the real clock (the
/// overview's windows end now).
fn seed_overview(fx: &Fixture) {
    let conn = Connection::open(fx.db()).unwrap();
    let now = now_ms();
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
    assert!(body.contains("bit/s"), "a rate axis, in bits");
    assert!(body.contains("class=\"bar\" data-t="), "hover data on bars");
    // 6 000 000 B received in one minute = 100 000 B/s = 800 kbit/s.
    assert!(body.contains("↓ 800 kbit/s"), "WAN rate tooltip");
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
    let now = now_ms();
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
    assert_eq!(
        netmon::web::hosts::block_snippet("198.51.100.7; rm -rf /"),
        None
    );
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
