//! DNS attribution in the lab: dnsmasq in the
//! router is the LAN's resolver and forwards to an authoritative dnsmasq in the wan;
//! netmon reads the answers from packets (NFQUEUE) and names each flow.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// How long a flow may take to be stored with its name.
const NAMED_WITHIN: Duration = Duration::from_secs(10);

fn resolve(lab: &Lab, ns: &str, server: &str, name: &str, qtype: &str) -> Vec<String> {
    lab.client(ns, &["dns", server, name, "--type", qtype])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn each_flow_carries_the_name_its_client_asked_for() {
    let lab = Lab::up("dnsname");
    let _nm = lab.start_netmon("");

    assert_eq!(
        resolve(&lab, "lan", RTR_LAN4, "shop.example.test", "A"),
        ["203.0.113.84"]
    );
    lab.download("lan", 47501, "http://203.0.113.84/small.bin");
    assert_eq!(
        resolve(&lab, "lan", RTR_LAN4, "cdn.example.test", "A"),
        ["203.0.113.85"]
    );
    lab.download("lan", 47502, "http://203.0.113.85/small.bin");
    // IPv6, asked over IPv6 and over TCP.
    assert_eq!(
        resolve(&lab, "lan", RTR_LAN6, "shop.example.test", "AAAA"),
        ["2001:db8:77::84"]
    );
    lab.download("lan", 47503, "http://[2001:db8:77::84]/small.bin");
    let tcp = lab.client("lan", &["dns", RTR_LAN4, "cdn.example.test", "--tcp"]);
    assert_eq!(tcp.trim(), "203.0.113.85");
    // A name that does not exist.
    let nx = lab.exec(
        "lan",
        &[
            "python3",
            &client_script(),
            "dns",
            RTR_LAN4,
            "nope.example.test",
        ],
    );
    assert!(String::from_utf8_lossy(&nx.stderr).contains("rcode 3"));

    assert_eq!(
        wait_named(&lab, "203.0.113.84", 47501, NAMED_WITHIN),
        exact("shop.example.test", None)
    );
    assert_eq!(
        wait_named(&lab, "203.0.113.85", 47502, NAMED_WITHIN),
        exact("cdn.example.test", Some("edge.cdn-provider.test"))
    );
    assert_eq!(
        wait_named(&lab, "2001:db8:77::84", 47503, NAMED_WITHIN),
        exact("shop.example.test", None)
    );

    // The queries themselves: answered, NXDOMAIN, the TCP one, each from its client.
    let count = |sql: &str| lab.db_i64(sql);
    assert!(wait_until(Duration::from_secs(5), || {
        count(
        "SELECT count(*) FROM dns_queries q JOIN dns_names n ON n.id = q.qname_id
         WHERE n.name = 'nope.example.test' AND q.rcode = 3 AND q.client = netmon_ip_blob('10.77.0.10')
           AND q.source = 0"
    ) == 1
    }));
    assert_eq!(
        count(
            "SELECT count(*) FROM dns_queries q JOIN dns_names n ON n.id = q.qname_id
             WHERE n.name = 'shop.example.test' AND q.qtype = 28 AND q.client = netmon_ip_blob('fd77::10')"
        ),
        1
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM dns_queries q JOIN dns_names n ON n.id = q.qname_id
             WHERE n.name = 'cdn.example.test' AND q.client = netmon_ip_blob('10.77.0.10')"
        ),
        2,
        "the UDP and the TCP query"
    );
    // TTLs from the authoritative server (300 s), possibly counted down by the cache.
    let ttl = count(
        "SELECT max(a.ttl) FROM dns_answers a JOIN dns_queries q ON q.id = a.query_id
         JOIN dns_names n ON n.id = q.qname_id
         WHERE n.name = 'shop.example.test' AND a.ip = netmon_ip_blob('203.0.113.84')",
    );
    assert!((250..=300).contains(&ttl), "ttl {ttl}");
    // Per-device minute rollups count the queries and the NXDOMAIN.
    assert!(wait_until(Duration::from_secs(5), || count(
        "SELECT coalesce(sum(queries), 0) FROM dns_device_minutes"
    ) >= 5));
    assert_eq!(count("SELECT sum(nxdomain) FROM dns_device_minutes"), 1);
    // The remote host knows the names it was reached as.
    assert_eq!(
        count(
            "SELECT count(*) FROM remote_host_domains d JOIN remote_hosts h ON h.id = d.remote_host_id
             JOIN dns_names n ON n.id = d.qname_id
             WHERE h.ip = '203.0.113.85' AND n.name = 'cdn.example.test' AND d.flows >= 1"
        ),
        1
    );
    let metrics = lab.metrics();
    let parsed = metric(&metrics, "netmon_dns_packets_total{result=\"parsed\"}");
    assert!(parsed.is_some_and(|n| n >= 5.0), "{metrics}");
}

#[test]
fn two_clients_one_address_each_keeps_its_own_name() {
    let lab = Lab::up_with("dnstwo", 2);
    let _nm = lab.start_netmon("");
    assert_eq!(
        resolve(&lab, "lan", RTR_LAN4, "alpha.example.test", "A"),
        ["203.0.113.86"]
    );
    assert_eq!(
        resolve(&lab, "lan2", RTR_LAN4, "beta.example.test", "A"),
        ["203.0.113.86"]
    );
    lab.download("lan", 47511, "http://203.0.113.86/small.bin");
    lab.download("lan2", 47512, "http://203.0.113.86/small.bin");
    assert_eq!(
        wait_named(&lab, "203.0.113.86", 47511, NAMED_WITHIN),
        exact("alpha.example.test", None)
    );
    assert_eq!(
        wait_named(&lab, "203.0.113.86", 47512, NAMED_WITHIN),
        exact("beta.example.test", None)
    );
    // lan2 reaches an address only lan resolved: a guess, and labelled one.
    assert_eq!(
        resolve(&lab, "lan", RTR_LAN4, "shop.example.test", "A"),
        ["203.0.113.84"]
    );
    lab.download("lan2", 47513, "http://203.0.113.84/small.bin");
    assert_eq!(
        wait_named(&lab, "203.0.113.84", 47513, NAMED_WITHIN),
        Named {
            domain: Some("shop.example.test".into()),
            canonical: None,
            dns_match: Some(3),
        }
    );
    // An address nobody resolved has no name.
    lab.download("lan", 47514, "http://203.0.113.88/small.bin");
    assert!(wait_until(Duration::from_secs(10), || named(
        &lab,
        "203.0.113.88",
        47514
    )
    .is_some()));
    assert_eq!(named(&lab, "203.0.113.88", 47514).unwrap().domain, None);
}

#[test]
fn dns_keeps_working_when_netmon_is_killed() {
    let lab = Lab::up("dnskill");
    let mut nm = lab.start_netmon("");
    // The queue rule: in `table inet netmon`, or, on a kernel without nftables' queue
    // expression (this CI's), in iptables' chain NETMON_DNS; nft lists both.
    let queue_rules = || {
        lab.exec_ok("rtr", &["nft", "list", "ruleset"])
            .lines()
            .filter(|l| l.contains("queue num 5353 bypass"))
            .count()
    };
    assert!(
        queue_rules() >= 2,
        "{}",
        lab.exec_ok("rtr", &["nft", "list", "ruleset"])
    );
    assert_eq!(
        resolve(&lab, "lan", RTR_LAN4, "shop.example.test", "A"),
        ["203.0.113.84"]
    );
    assert!(wait_until(Duration::from_secs(5), || lab
        .db_i64("SELECT count(*) FROM dns_queries")
        >= 1));

    nm.sigkill();
    // kill -9 ran no cleanup: the queue rule is still there, with nobody reading.
    assert!(queue_rules() >= 2);
    for i in 0..30 {
        let name = if i % 2 == 0 {
            "shop.example.test"
        } else {
            "cdn.example.test"
        };
        let out = lab.exec("lan", &["python3", &client_script(), "dns", RTR_LAN4, name]);
        assert!(
            out.status.success(),
            "query {i} failed with netmon dead: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = lab.exec(
        "lan",
        &[
            "python3",
            &client_script(),
            "dns",
            RTR_LAN6,
            "shop.example.test",
            "--type",
            "AAAA",
            "--tcp",
        ],
    );
    assert!(
        out.status.success(),
        "TCP over IPv6 failed with netmon dead"
    );

    // A restart replaces what the killed run left (no duplicate rules: two in nftables,
    // DNS answers and TLS hellos; or three per address family in iptables); a clean
    // stop removes everything.
    let mut nm = lab.start_netmon("");
    let after_restart = queue_rules();
    assert!(
        (2..=6).contains(&after_restart),
        "{after_restart} queue rules after a restart"
    );
    nm.sigterm();
    let out = lab.exec("rtr", &["nft", "list", "table", "inet", "netmon"]);
    assert!(!out.status.success(), "table left behind after SIGTERM");
    assert_eq!(queue_rules(), 0, "queue rules left behind after SIGTERM");
}

#[test]
fn hostile_names_are_stored_safely_and_rendered_inert() {
    let lab = Lab::up("dnsevil");
    let evil = lab.spawn(
        "wan",
        &[
            "python3",
            &format!("{}/tests/lab/evil_dns.py", env!("CARGO_MANIFEST_DIR")),
            "203.0.113.54",
        ],
    );
    let _evil = KillOnDrop(evil);
    std::thread::sleep(Duration::from_millis(300));
    let _nm = lab.start_netmon("");

    // The answer chain carries markup (a CNAME to `<script>…`); the question carries a
    // 63-byte label, escaped bytes and a dot inside a label; the longest legal name.
    let label63 = "a".repeat(63);
    let long = format!("{label63}.{label63}.{label63}.{}.evil.test", "b".repeat(51));
    assert_eq!(long.len(), 253);
    let hostile_q = "x\\.y.caf\\195\\169.\\000\\255.evil.test";
    for name in [long.as_str(), hostile_q, &format!("{label63}.evil.test")] {
        let out = lab.exec("lan", &["python3", &client_script(), "dns", RTR_LAN4, name]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Last before the download: the flow's name is this one.
    assert_eq!(
        resolve(&lab, "lan", RTR_LAN4, "cname.evil.test", "A"),
        ["203.0.113.87"]
    );
    lab.download("lan", 47521, "http://203.0.113.87/small.bin");
    let n = wait_named(&lab, "203.0.113.87", 47521, NAMED_WITHIN);
    assert_eq!(n.dns_match, Some(1));
    let stored: Vec<String> = {
        let db = lab.db();
        let mut s = db.prepare("SELECT name FROM dns_names").unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let canonical = "<script>alert(1)</script>.\"onmouseover=x.evil.test";
    for want in [
        canonical,
        long.as_str(),
        "x\\.y.caf\\195\\169.\\000\\255.evil.test",
    ] {
        assert!(stored.iter().any(|s| s == want), "{want} not in {stored:?}");
    }
    assert!(stored.iter().all(|s| !s.chars().any(char::is_control)));

    // Pages that show names: markup is text, never markup.
    let pages = [
        "/flows".to_owned(),
        "/dns".to_owned(),
        "/flows?show=all".to_owned(),
        format!(
            "/hosts/{}",
            lab.db_i64("SELECT id FROM remote_hosts WHERE ip = '203.0.113.87'")
        ),
        format!(
            "/devices/{}",
            lab.db_i64("SELECT device_id FROM device_addrs WHERE ip = '10.77.0.10'")
        ),
    ];
    for page in &pages {
        let (status, body) = lab.http(page).expect("GET");
        if status == 404 {
            continue; // a page this build does not have
        }
        assert_eq!(status, 200, "{page}");
        assert!(
            !body.contains("<script>alert(1)"),
            "{page} renders the name as markup"
        );
        assert!(
            !body.contains("\"onmouseover"),
            "{page} lets a name break out of an attribute"
        );
    }
    let body = lab.http_get("/dns");
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "/dns does not show the name"
    );
    // JSON carries the name verbatim.
    let flows = lab.all_flows();
    let flow: &Value = flows
        .iter()
        .find(|f| f["dst_ip"] == "203.0.113.87" && f["src_port"] == 47521)
        .expect("flow in the API");
    assert_eq!(flow["domain"], "cname.evil.test");
    assert_eq!(flow["domain_canonical"], canonical);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
