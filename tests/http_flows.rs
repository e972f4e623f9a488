//! The flow search end to end: the `/flows` page and its table fragment, `/api/flows`
//! and its CSV export — filters, paging, columns, and 400s that name the parameter.

mod common;

use axum::http::{StatusCode, header};
use rusqlite::Connection;

use common::http::*;

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
    let conn = Connection::open(fx.db()).unwrap();
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
