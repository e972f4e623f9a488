//! DNS attribution from dnsmasq's query log: packet capture
//! off, netmon follows the lab resolver's log in each format while it is rotated by
//! rename and by copytruncate, across a netmon restart, and each flow still carries the
//! name its own client asked for.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// How long a flow may take to be stored with its name (the log arrives ~0.5 s late).
const NAMED_WITHIN: Duration = Duration::from_secs(15);

/// One query from a LAN client to the router's resolver; the addresses it got.
fn resolve(lab: &Lab, ns: &str, name: &str, qtype: &str) -> Vec<String> {
    lab.client(ns, &["dns", RTR_LAN4, name, "--type", qtype])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Resolves `name` from `ns`, then downloads from the address it got, from `sport`.
#[track_caller]
fn resolve_and_fetch(lab: &Lab, ns: &str, name: &str, want: &str, sport: u16) {
    assert_eq!(resolve(lab, ns, name, "A"), [want], "{name}");
    lab.download(ns, sport, &format!("http://{want}/small.bin"));
}

/// Queries stored from the log for (client, name, qtype).
fn log_queries(lab: &Lab, client: &str, name: &str, qtype: u16) -> i64 {
    lab.db_i64(&format!(
        "SELECT count(*) FROM dns_queries q JOIN dns_names n ON n.id = q.qname_id
         WHERE n.name = '{name}' AND q.client = netmon_ip_blob('{client}') AND q.qtype = {qtype}
           AND q.source = 1"
    ))
}

/// Restarts the lab resolver logging as `mode` (`tests/lab/lab.sh dnsmasq`).
fn dnsmasq_mode(lab: &Lab, mode: &str) {
    lab.lab_sh(&["dnsmasq", &lab.name, mode]);
}

fn dnsmasq_pid(lab: &Lab) -> i32 {
    std::fs::read_to_string(lab.dir.join("dnsmasq.pid"))
        .expect("dnsmasq.pid")
        .trim()
        .parse()
        .expect("a pid")
}

fn config(log: &Path) -> String {
    format!(
        "[dns]\npacket_capture = false\nlog_file = \"{}\"\n\n[firewall]\nmanage = false\n",
        log.display()
    )
}

fn file_len(path: &PathBuf) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn log_source_names_flows_across_formats_rotations_and_restarts() {
    let lab = Lab::up_with("dnslog", 2);
    let log = lab.dir.join("dnsmasq-queries.log");
    let mut nm = lab.start_netmon(&config(&log));
    // dnsmasq's own file with log-queries=extra (the lab's default).
    resolve_and_fetch(&lab, "lan", "shop.example.test", "203.0.113.84", 47601);
    resolve_and_fetch(&lab, "lan", "cdn.example.test", "203.0.113.85", 47602);
    // Two clients, two names, one address: each flow carries its own client's name.
    resolve_and_fetch(&lab, "lan", "alpha.example.test", "203.0.113.86", 47603);
    resolve_and_fetch(&lab, "lan2", "beta.example.test", "203.0.113.86", 47604);
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
        wait_named(&lab, "203.0.113.84", 47601, NAMED_WITHIN),
        exact("shop.example.test", None)
    );
    assert_eq!(
        wait_named(&lab, "203.0.113.85", 47602, NAMED_WITHIN),
        exact("cdn.example.test", Some("edge.cdn-provider.test"))
    );
    assert_eq!(
        wait_named(&lab, "203.0.113.86", 47603, NAMED_WITHIN),
        exact("alpha.example.test", None)
    );
    assert_eq!(
        wait_named(&lab, "203.0.113.86", 47604, NAMED_WITHIN),
        exact("beta.example.test", None)
    );
    assert!(wait_until(Duration::from_secs(5), || log_queries(
        &lab,
        "10.77.0.10",
        "nope.example.test",
        1
    ) == 1));
    assert_eq!(
        lab.db_i64(
            "SELECT count(*) FROM dns_queries q JOIN dns_names n ON n.id = q.qname_id
             WHERE n.name = 'nope.example.test' AND q.rcode = 3"
        ),
        1
    );
    assert_eq!(log_queries(&lab, "10.77.0.11", "beta.example.test", 1), 1);

    // Rotation by rename while dnsmasq writes: it keeps writing to the renamed file
    // until SIGUSR2 makes it reopen the path.
    let rotated = lab.dir.join("dnsmasq-queries.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    resolve_and_fetch(&lab, "lan", "wan.lab", "203.0.113.80", 47610);
    assert!(file_len(&rotated) > 0);
    // SAFETY: kill(2) on the lab's dnsmasq.
    assert_eq!(unsafe { libc::kill(dnsmasq_pid(&lab), libc::SIGUSR2) }, 0);
    assert!(wait_until(Duration::from_secs(5), || log.exists()));
    resolve_and_fetch(&lab, "lan", "shop.example.test", "203.0.113.84", 47611);
    assert_eq!(
        wait_named(&lab, "203.0.113.80", 47610, NAMED_WITHIN),
        exact("wan.lab", None)
    );
    assert_eq!(
        wait_named(&lab, "203.0.113.84", 47611, NAMED_WITHIN),
        exact("shop.example.test", None)
    );

    // dnsmasq's own file without extra.
    dnsmasq_mode(&lab, "file");
    resolve_and_fetch(&lab, "lan2", "files.lab", "203.0.113.81", 47620);
    resolve_and_fetch(&lab, "lan", "cdn.example.test", "203.0.113.85", 47621);
    assert_eq!(
        wait_named(&lab, "203.0.113.81", 47620, NAMED_WITHIN),
        exact("files.lab", None)
    );
    assert_eq!(
        wait_named(&lab, "203.0.113.85", 47621, NAMED_WITHIN),
        exact("cdn.example.test", Some("edge.cdn-provider.test"))
    );

    // Rotation by copytruncate while dnsmasq writes (it appends, so it writes at the
    // new end).
    let before = file_len(&log);
    std::fs::copy(&log, lab.dir.join("dnsmasq-queries.log.2")).expect("copy");
    lab.sh("rtr", &format!("truncate -s 0 {}", log.display()));
    resolve_and_fetch(&lab, "lan2", "shop.example.test", "203.0.113.84", 47630);
    assert!(file_len(&log) < before, "the truncated log is shorter");
    assert_eq!(
        wait_named(&lab, "203.0.113.84", 47630, NAMED_WITHIN),
        exact("shop.example.test", None)
    );
    let metrics = lab.metrics();
    let m = |name: &str, label: &str| metric(&metrics, &format!("{name}{{{label}}}"));
    assert_eq!(
        m("netmon_dnsmasq_log_rotations_total", r#"kind="rename""#),
        Some(1.0)
    );
    assert_eq!(
        m("netmon_dnsmasq_log_rotations_total", r#"kind="truncate""#),
        Some(1.0)
    );
    let parsed = m("netmon_dnsmasq_log_lines_total", r#"result="parsed""#);
    assert!(parsed.is_some_and(|n| n >= 20.0), "{metrics}");
    assert_eq!(
        m("netmon_dnsmasq_log_lines_total", r#"result="malformed""#),
        Some(0.0)
    );
    assert_eq!(
        m("netmon_collector_drops_total", r#"stream="dnsmasq_log""#),
        Some(0.0)
    );

    // A netmon restart: what dnsmasq logs while netmon is down is read at start (the
    // offset was saved), and nothing read before is stored twice.
    let shop_before = log_queries(&lab, "10.77.0.10", "shop.example.test", 1);
    assert_eq!(shop_before, 2);
    nm.sigterm();
    assert!(lab.db_path().with_extension("dnsmasq-offset").exists());
    assert_eq!(
        resolve(&lab, "lan", "alpha.example.test", "A"),
        ["203.0.113.86"]
    );
    let mut nm = lab.start_netmon(&config(&log));
    lab.download("lan", 47640, "http://203.0.113.86/small.bin");
    assert_eq!(
        wait_named(&lab, "203.0.113.86", 47640, NAMED_WITHIN),
        exact("alpha.example.test", None)
    );
    assert_eq!(log_queries(&lab, "10.77.0.10", "alpha.example.test", 1), 2);
    assert_eq!(
        log_queries(&lab, "10.77.0.10", "shop.example.test", 1),
        shop_before,
        "no line read twice"
    );

    // Syslog relayed in rsyslog's traditional format (`Nov 24 … HOST dnsmasq[…]: …`).
    nm.sigterm();
    dnsmasq_mode(&lab, "syslog-extra");
    let syslog = lab.dir.join("dnsmasq-syslog.log");
    assert!(wait_until(Duration::from_secs(5), || syslog.exists()));
    let _nm = lab.start_netmon(&config(&syslog));
    resolve_and_fetch(&lab, "lan2", "beta.example.test", "203.0.113.86", 47650);
    assert_eq!(
        wait_named(&lab, "203.0.113.86", 47650, NAMED_WITHIN),
        exact("beta.example.test", None)
    );

    // Packet capture was off throughout: every query came from the log.
    assert_eq!(
        lab.db_i64("SELECT count(*) FROM dns_queries WHERE source <> 1"),
        0
    );
}
