//! DNS on the pages end to end: the flows' domain column and filter, host and device
//! DNS sections, the `/dns` log and its API; hostile names escaped everywhere.

mod common;

use axum::http::StatusCode;

use common::http::*;

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
    // Where each query was seen, in words: not the internal "packet".
    assert!(body.contains(">DNS reply</td>"), "{body}");
    assert!(!body.contains(">packet</td>"), "{body}");
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
