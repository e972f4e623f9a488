//! Names from TLS in the lab: a LAN client connects by address (no DNS) to a TLS server
//! in the wan, naming its server in the ClientHello; netmon queues that one packet and
//! names the flow "sni". A connection whose name DNS gave keeps the exact match, a
//! connection to port 853 shows its device as using encrypted DNS, and a netmon killed
//! with -9 leaves TLS working (the queue rule's bypass).

mod common;

use std::time::Duration;

use common::*;

/// How long a flow may take to be stored with its name.
const NAMED_WITHIN: Duration = Duration::from_secs(10);
/// The wan address the TLS server listens on (v4 and v6).
const TLS4: &str = "203.0.113.87";
const TLS6: &str = "2001:db8:77::87";

/// A named flow as `Named` holds it, matched by SNI.
fn sni(domain: &str) -> Named {
    Named {
        domain: Some(domain.into()),
        canonical: None,
        dns_match: Some(4),
    }
}

/// The TLS echo server on TLS4 and TLS6, ports 443 and 853.
fn tls_server(lab: &Lab) -> Server {
    lab.tls_server(&[
        &format!("{TLS4}:443"),
        &format!("[{TLS6}]:443"),
        &format!("{TLS4}:853"),
        &format!("[{TLS6}]:853"),
    ])
}

/// One TLS connection from the lan client by address, naming `name`; true when the
/// handshake and the echo worked.
fn tls(lab: &Lab, host: &str, port: u16, name: &str, sport: u16) -> bool {
    let (port, sport) = (port.to_string(), sport.to_string());
    let out = lab.exec(
        "lan",
        &[
            "python3",
            &client_script(),
            "tls",
            host,
            &port,
            "--sni",
            name,
            "--sport",
            &sport,
        ],
    );
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "netmon-lab"
}

#[test]
fn a_connection_by_address_is_named_by_its_tls_server_name() {
    let lab = Lab::up("tlsname");
    let _server = tls_server(&lab);
    let _nm = lab.start_netmon("");

    // By address, over IPv4 and IPv6: no DNS answer names these flows. The name is
    // stored with the flow in the writer's next batch.
    assert!(tls(&lab, TLS4, 443, "video.example.test", 47601));
    assert_eq!(
        wait_named(&lab, TLS4, 47601, NAMED_WITHIN),
        sni("video.example.test")
    );
    assert!(tls(&lab, TLS6, 443, "Video.Example.Test", 47602));
    assert_eq!(
        wait_named(&lab, TLS6, 47602, NAMED_WITHIN),
        sni("video.example.test")
    );

    // A name DNS gave keeps its exact match, whatever the ClientHello says.
    let answer = lab.client("lan", &["dns", RTR_LAN4, "shop.example.test"]);
    assert_eq!(answer.trim(), "203.0.113.84");
    let _shop = lab.tls_server(&["203.0.113.84:443"]);
    assert!(wait_until(Duration::from_secs(5), || tls(
        &lab,
        "203.0.113.84",
        443,
        "other.example.test",
        47603
    )));
    assert_eq!(
        wait_named(&lab, "203.0.113.84", 47603, NAMED_WITHIN),
        exact("shop.example.test", None)
    );

    // The names are flows' names everywhere: the API says "sni", the domain filter
    // finds the flow, the remote host knows the name.
    let flows = lab.api_flows("domain=video.example.test&show=all");
    let rows = flows["flows"].as_array().expect("flows");
    assert!(
        rows.iter()
            .any(|f| f["dst_port"] == 443 && f["dns_match"] == "sni"),
        "{flows}"
    );
    assert_eq!(
        lab.db_i64(
            "SELECT count(*) FROM remote_host_domains d JOIN remote_hosts h ON h.id = d.remote_host_id
             JOIN dns_names n ON n.id = d.qname_id
             WHERE h.ip = '203.0.113.87' AND n.name = 'video.example.test'"
        ),
        1
    );
    // Firefox's canary, as the OpenWrt package configures dnsmasq: NXDOMAIN.
    let canary = lab.exec(
        "lan",
        &[
            "python3",
            &client_script(),
            "dns",
            RTR_LAN4,
            "use-application-dns.net",
        ],
    );
    assert!(
        String::from_utf8_lossy(&canary.stderr).contains("rcode 3"),
        "{canary:?}"
    );
    let metrics = lab.metrics();
    let hellos = metric(&metrics, "netmon_tls_hellos_total{result=\"name\"}");
    assert!(hellos.is_some_and(|n| n >= 3.0), "{metrics}");
}

#[test]
fn port_853_shows_encrypted_dns_and_a_killed_netmon_leaves_tls_working() {
    let lab = Lab::up("tlsdot");
    let _server = tls_server(&lab);
    let mut nm = lab.start_netmon("");

    assert!(tls(&lab, TLS4, 853, "dns.example.test", 47611));
    assert_eq!(
        wait_named(&lab, TLS4, 47611, NAMED_WITHIN),
        sni("dns.example.test")
    );
    let device = lab.db_i64("SELECT id FROM devices WHERE ip = '10.77.0.10'");
    assert!(wait_until(Duration::from_secs(5), || {
        lab.db_i64(
            "SELECT count(*) FROM devices WHERE id IN (SELECT id FROM devices WHERE ip = '10.77.0.10')
             AND encrypted_dns = 'DNS-over-TLS via 203.0.113.87'",
        ) == 1
    }));
    let page = lab.http_get(&format!("/devices/{device}"));
    assert!(
        page.contains("ENCRYPTED_DNS") && page.contains("DNS-over-TLS via 203.0.113.87"),
        "{page}"
    );
    let metrics = lab.metrics();
    assert!(
        metric(&metrics, "netmon_encrypted_dns_flows_total{kind=\"dot\"}")
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // kill -9: the queue rule stays, nobody reads the queue; bypass lets every
    // ClientHello through.
    nm.sigkill();
    for (i, host) in [TLS4, TLS6, TLS4, TLS6].into_iter().enumerate() {
        assert!(
            tls(&lab, host, 443, "video.example.test", 47620 + i as u16),
            "TLS to {host} after netmon was killed"
        );
    }
}
