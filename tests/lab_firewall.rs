//! netmon must never weaken the router's firewall, and must not believe what the WAN
//! says unasked.
//!
//! 1. A WAN host using source port 53 (the port DNS answers come from) cannot reach a
//!    LAN service through a router whose forward policy is drop — with netmon running,
//!    stopped cleanly, and killed with SIGKILL (its queue rules left behind, nobody
//!    reading them) — for a router firewalled with iptables and one firewalled with
//!    nftables. Each scenario first checks its own premises: the probe reaches the
//!    service while the router has no firewall, a probe from another port is dropped
//!    once it has one, and DNS answers are captured (so the probe tests the real tap,
//!    not an absent one).
//! 2. Forged DNS answers sent from the WAN to LAN addresses — 300 to the real client,
//!    2 000 to random addresses of the LAN's IPv6 prefix — through a router that forwards
//!    them (no firewall at all) leave no DNS rows and no devices, while a real answer
//!    right after them is stored.
//!
//! This kernel has no nftables `queue` expression, so netmon's tap runs through its
//! iptables fallback here: the case that opened the firewall when the fallback sat in
//! the filter table.

mod common;

use std::time::Duration;

use common::*;

/// The LAN service the WAN must not reach.
const SERVICE_PORT: u16 = 2222;
/// The forged answer's name and address.
const FORGED_NAME: &str = "www.bank.test";
const FORGED_ADDR: &str = "198.51.100.66";
/// A free wan address (tests/lab/lab.sh) to send probes and forged answers from.
const ATTACKER4: &str = "203.0.113.54";
const ATTACKER6: &str = "2001:db8:77::54";

/// How the router of a scenario filters forwarded traffic.
#[derive(Clone, Copy, Debug)]
enum RouterFirewall {
    Iptables,
    Nftables,
}

/// Policy drop on forward; the LAN may start connections, replies come back.
fn firewall_router(lab: &Lab, kind: RouterFirewall) {
    match kind {
        RouterFirewall::Iptables => {
            for cmd in ["iptables", "ip6tables"] {
                lab.sh(
                    "rtr",
                    &format!(
                        "{cmd} -w -P FORWARD DROP && \
                         {cmd} -w -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT && \
                         {cmd} -w -A FORWARD -i br-lan -j ACCEPT"
                    ),
                );
            }
        }
        RouterFirewall::Nftables => {
            lab.sh(
                "rtr",
                "nft -f - <<'EOF'\n\
                 table inet rtr_filter {\n\
                 \tchain forward {\n\
                 \t\ttype filter hook forward priority filter; policy drop;\n\
                 \t\tct state established,related accept\n\
                 \t\tiifname \"br-lan\" accept\n\
                 \t}\n\
                 }\n\
                 EOF",
            );
        }
    }
}

/// A TCP attempt from the WAN (attacker address, source port `sport`) to the LAN
/// client's service: "open …", "closed" or "filtered".
fn probe(lab: &Lab, target: &str, sport: u16) -> String {
    let bind = if target.contains(':') {
        ATTACKER6
    } else {
        ATTACKER4
    };
    lab.client(
        "wan",
        &[
            "probe",
            target,
            &SERVICE_PORT.to_string(),
            "--sport",
            &sport.to_string(),
            "--bind",
            bind,
            "--timeout",
            "1.5",
        ],
    )
    .trim()
    .to_owned()
}

/// Every WAN probe from source port 53 is filtered, over both families.
fn assert_port_53_filtered(lab: &Lab, when: &str) {
    for target in [CLIENT4, CLIENT6] {
        let got = probe(lab, target, 53);
        assert_eq!(
            got,
            "filtered",
            "{when}: a WAN connection from port 53 to {target}:{SERVICE_PORT} got through; \
             iptables:\n{}\nnft:\n{}",
            lab.exec_ok("rtr", &["iptables-save"]),
            lab.exec_ok("rtr", &["nft", "list", "ruleset"])
        );
    }
}

/// Lines of `iptables-save`/`ip6tables-save` that mention netmon's chain.
fn netmon_xt_lines(lab: &Lab) -> Vec<String> {
    ["iptables-save", "ip6tables-save"]
        .iter()
        .flat_map(|cmd| {
            lab.exec_ok("rtr", &[cmd])
                .lines()
                .filter(|l| l.contains("NETMON_DNS"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn packet_queries(lab: &Lab, qname: &str) -> i64 {
    lab.db_i64(&format!(
        "SELECT count(*) FROM dns_queries q JOIN dns_names n ON n.id = q.qname_id
         WHERE n.name = '{qname}' AND q.source = 0"
    ))
}

/// A child process killed and reaped when dropped, also when the test fails.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port_53_scenario(tag: &str, kind: RouterFirewall) {
    let lab = Lab::up(tag);
    lab.sh("wan", "ip route add 10.77.0.0/24 via 203.0.113.1");
    let _service = Reaped(lab.spawn(
        "lan",
        &[
            "socat",
            &format!("TCP6-LISTEN:{SERVICE_PORT},ipv6only=0,reuseaddr,fork"),
            "SYSTEM:echo service",
        ],
    ));
    assert!(
        wait_until(Duration::from_secs(5), || lab
            .exec_ok("lan", &["ss", "-Hltn"])
            .contains(&format!(":{SERVICE_PORT}"))),
        "the LAN service did not start"
    );
    // Without any firewall the probe passes: the scenario can see a hole.
    assert!(probe(&lab, CLIENT4, 53).starts_with("open"));
    firewall_router(&lab, kind);
    assert_eq!(
        probe(&lab, CLIENT6, 5300),
        "filtered",
        "{kind:?} does not filter"
    );
    if let RouterFirewall::Iptables = kind {
        // What an older netmon left in the filter table after a crash: a jump before
        // the router's rules that accepts every port-53 packet. Start-up removes it.
        lab.sh(
            "rtr",
            "iptables -w -N NETMON_DNS && iptables -w -I FORWARD 1 -j NETMON_DNS && \
             iptables -w -A NETMON_DNS -p tcp --sport 53 -j NFQUEUE --queue-num 5353 --queue-bypass",
        );
        assert!(
            probe(&lab, CLIENT4, 53).starts_with("open"),
            "the leftover jump should open the firewall"
        );
    }

    let mut nm = lab.start_netmon("");
    assert_port_53_filtered(&lab, "netmon running");
    assert!(
        !netmon_xt_lines(&lab)
            .iter()
            .any(|l| l.contains("FORWARD") || l.contains("OUTPUT")),
        "a filter-table jump is left: {:?}",
        netmon_xt_lines(&lab)
    );
    // The tap works: an answer from the router's resolver and one from an outside
    // resolver the client asked directly (forwarded through the firewall) are stored.
    assert_eq!(
        lab.client("lan", &["dns", RTR_LAN4, "shop.example.test"])
            .trim(),
        "203.0.113.84"
    );
    assert_eq!(
        lab.client("lan", &["dns", "203.0.113.53", "alpha.example.test"])
            .trim(),
        "203.0.113.86"
    );
    assert!(
        wait_until(Duration::from_secs(10), || packet_queries(
            &lab,
            "shop.example.test"
        ) == 1
            && packet_queries(&lab, "alpha.example.test") == 1),
        "DNS answers were not captured from packets; log:\n{}",
        nm.log_tail(40)
    );
    assert_port_53_filtered(&lab, "netmon running, DNS captured");
    assert_eq!(probe(&lab, CLIENT4, 5300), "filtered");

    let (status, _) = nm.sigterm();
    assert!(status.is_some_and(|s| s.success()), "netmon did not stop");
    assert!(
        netmon_xt_lines(&lab).is_empty(),
        "{:?}",
        netmon_xt_lines(&lab)
    );
    assert_port_53_filtered(&lab, "netmon stopped");

    let mut nm = lab.start_netmon("");
    nm.sigkill();
    if let RouterFirewall::Iptables = kind {
        // Killed: nothing cleaned up, the queue rules stay with nobody reading them.
        assert!(!netmon_xt_lines(&lab).is_empty());
    }
    assert_port_53_filtered(&lab, "netmon killed");
    // DNS keeps working through the orphaned rules (bypass).
    assert_eq!(
        lab.client("lan", &["dns", RTR_LAN4, "beta.example.test"])
            .trim(),
        "203.0.113.86"
    );
}

#[test]
fn wan_port_53_stays_out_of_an_iptables_router() {
    port_53_scenario("fwipt", RouterFirewall::Iptables);
}

#[test]
fn wan_port_53_stays_out_of_an_nftables_router() {
    port_53_scenario("fwnft", RouterFirewall::Nftables);
}

#[test]
fn forged_wan_answers_are_neither_believed_nor_devices() {
    let lab = Lab::up("forged");
    lab.sh("wan", "ip route add 10.77.0.0/24 via 203.0.113.1");
    let nm = lab.start_netmon("");
    // The real client is known before the flood (its neighbour entry or first flow).
    assert_eq!(
        lab.client("lan", &["dns", RTR_LAN4, "shop.example.test"])
            .trim(),
        "203.0.113.84"
    );
    assert!(wait_until(Duration::from_secs(10), || packet_queries(
        &lab,
        "shop.example.test"
    ) == 1));

    let sent: u32 = lab
        .client(
            "wan",
            &[
                "forge",
                ATTACKER4,
                FORGED_NAME,
                FORGED_ADDR,
                "--to",
                CLIENT4,
                "--count",
                "300",
            ],
        )
        .trim()
        .parse()
        .expect("forge count");
    assert_eq!(sent, 300);
    let sent6: u32 = lab
        .client(
            "wan",
            &[
                "forge",
                ATTACKER6,
                FORGED_NAME,
                FORGED_ADDR,
                "--to-prefix6",
                "fd77::",
                "--count",
                "2000",
            ],
        )
        .trim()
        .parse()
        .expect("forge count");
    assert!(
        sent6 > 1000,
        "only {sent6} forged IPv6 answers left the wan"
    );
    // The forgeries reached the router and were forwarded (no firewall here): the
    // router's conntrack saw them.
    assert!(
        lab.conntrack_entries(&["-p", "udp", "--orig-port-src", "53"])
            .len()
            > 100,
        "the forged answers never reached the router"
    );

    // A real answer after the flood is stored: the tap was listening all along.
    assert_eq!(
        lab.client("lan", &["dns", RTR_LAN4, "cdn.example.test"])
            .trim(),
        "203.0.113.85"
    );
    assert!(
        wait_until(Duration::from_secs(10), || packet_queries(
            &lab,
            "cdn.example.test"
        ) == 1),
        "log:\n{}",
        nm.log_tail(40)
    );
    // Give any forged answer that was queued time to be committed too.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.db_i64(&format!(
            "SELECT count(*) FROM dns_queries q JOIN dns_names n ON n.id = q.qname_id
             WHERE n.name = '{FORGED_NAME}'"
        )),
        0,
        "forged answers were stored"
    );
    assert_eq!(
        lab.db_i64(&format!(
            "SELECT count(*) FROM dns_answers WHERE ip = netmon_ip_blob('{FORGED_ADDR}')"
        )),
        0
    );
    // Only the real client is a device; no forged destination became one.
    let strangers =
        format!("SELECT count(*) FROM device_addrs WHERE ip NOT IN ('{CLIENT4}', '{CLIENT6}')");
    assert_eq!(
        lab.db_i64(&strangers),
        0,
        "{} devices in all",
        lab.db_i64("SELECT count(*) FROM devices")
    );
}
