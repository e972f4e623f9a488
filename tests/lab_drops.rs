//! Firewall drops, proven in the router lab (`tests/lab/`).
//!
//! The lab router's firewall refuses new TCP connections from the wan to its ports
//! 1000–1999 (`nft_rules` in `lab.sh`) and accepts everything else. From one wan
//! address the test SYN-scans 200 of those ports (non-blocking connects, closed after
//! half a second — before the first SYN retransmission, so each port is one attempt),
//! then makes connections the firewall accepts: five to a listener on port 7070 and
//! five to the closed port 7071 (answered with a reset, but accepted by the firewall).
//! `/api/drops` must show that source with 200 attempts on 200 ports and a per-minute
//! series adding up to them; the accepted connections must not be counted, while
//! netmon did see them pass (`netmon_nflog_messages_total{result="passed"}`).
//!
//! Needs root and the packages `.ci/run` installs. Run with
//! `cargo build --bins && cargo test --test lab_drops -- --nocapture`.

mod common;

use std::time::Duration;

use common::*;

/// The scanning wan address (one of the wan namespace's extra addresses).
const SCANNER: &str = "203.0.113.81";
const ALLOWED_PORT: u16 = 7070;
const CLOSED_PORT: u16 = 7071;

const SCAN: &str = r#"
import socket, sys, time
src, dst = sys.argv[1], sys.argv[2]
socks = []
for port in range(1000, 1200):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.setblocking(False)
    try:
        s.connect((dst, port))
    except BlockingIOError:
        pass
    socks.append(s)
time.sleep(0.5)
for s in socks:
    s.close()
accepted = refused = 0
for port in [int(p) for p in sys.argv[3:]] * 5:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0))
    s.settimeout(3)
    try:
        s.connect((dst, port))
        accepted += 1
    except ConnectionRefusedError:
        refused += 1
    s.close()
print(accepted, refused)
"#;

const LISTEN: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.close()
"#;

/// Sum of the samples of `name` that carry `label` (e.g. `result="passed"`).
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn syn_scan_from_the_wan_is_counted_and_accepted_connections_are_not() {
    require_lab_prerequisites();
    let lab = Lab::up("drops");
    let _netmon = lab.start_netmon("");
    let mut listener = lab.spawn(
        "rtr",
        &["python3", "-c", LISTEN, RTR_WAN4, &ALLOWED_PORT.to_string()],
    );
    {
        use std::io::BufRead;
        let out = listener.stdout.take().expect("listener stdout");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("listener starts");
        assert_eq!(line.trim(), "ready");
    }
    let out = lab.exec_ok(
        "wan",
        &[
            "python3",
            "-c",
            SCAN,
            SCANNER,
            RTR_WAN4,
            &ALLOWED_PORT.to_string(),
            &CLOSED_PORT.to_string(),
        ],
    );
    assert_eq!(out.trim(), "5 5", "accepted / refused connections");

    // Counts reach the writer after the grace period and the collector's flush.
    let source = wait_for(Duration::from_secs(20), || {
        let v = lab.api("/api/drops?window=10");
        let s = v["sources"]
            .as_array()?
            .iter()
            .find(|s| s["src_ip"] == SCANNER)?
            .clone();
        (s["attempts"].as_i64()? >= 200).then_some((v, s))
    });
    let Some((v, s)) = source else {
        panic!(
            "no drops from {SCANNER}: {:#}",
            lab.api("/api/drops?window=10")
        );
    };
    println!("{s:#}");
    assert_eq!(s["attempts"], 200, "{s:#}");
    assert_eq!(s["ports"], 200, "{s:#}");
    let ports: Vec<i64> = v["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .filter_map(|p| p["dst_port"].as_i64())
        .collect();
    assert!(ports.iter().all(|p| (1000..1200).contains(p)), "{ports:?}");
    let minutes: i64 = v["minutes"]
        .as_array()
        .expect("minutes")
        .iter()
        .filter_map(|m| m["attempts"].as_i64())
        .sum();
    assert_eq!(minutes, v["attempts"].as_i64().unwrap_or(-1));
    assert_eq!(v["attempts"], 200, "only the scan was refused: {v:#}");

    // The accepted connections were logged as passed, never stored as drops.
    let db = rusqlite::Connection::open_with_flags(
        lab.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("open the database");
    let allowed: i64 = db
        .query_row(
            "SELECT count(*) FROM drop_minutes WHERE dst_port IN (?1, ?2)",
            [ALLOWED_PORT, CLOSED_PORT],
            |r| r.get(0),
        )
        .expect("query");
    assert_eq!(allowed, 0);
    let metrics = lab.http_get("/metrics");
    assert!(
        metric(&metrics, "netmon_nflog_messages_total", "result=\"passed\"") >= 10.0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "netmon_firewall_drops_total", "proto=\"tcp\"") >= 200.0,
        "{metrics}"
    );
    let page = lab.http_get("/drops");
    assert!(
        page.contains(SCANNER) && page.contains("drops-chart"),
        "{page}"
    );
    let _ = listener.kill();
    let _ = listener.wait();
}

/// The cross-check half: with no flowtable, what the WAN interface
/// moved and what netmon's flows counted agree within 5 % over a plain download, and
/// `/router` says there is no flowtable.
#[test]
fn wan_interface_bytes_match_flow_bytes_without_offloading() {
    require_lab_prerequisites();
    let lab = Lab::up("wanratio");
    let _netmon = lab.start_netmon("dump_interval_s = 1\n[system]\nsample_interval_s = 1\n");
    // Let the sampler write its first WAN minute row before the traffic.
    assert!(wait_until(Duration::from_secs(10), || {
        lab.api("/api/router?window=10")["interface_minutes"]
            .as_array()
            .is_some_and(|m| m.iter().any(|r| r["role"] == "wan"))
    }));
    for port in [41_100, 41_101] {
        let dl = lab.download("lan", port, &format!("http://{WAN4}/big.bin"));
        assert_eq!(dl.body, BIG_FILE);
    }
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(20), || {
        last = lab.api("/api/router?window=10");
        last["wan_flow"]["ratio"]
            .as_f64()
            .is_some_and(|r| (r - 1.0).abs() <= 0.05)
            && last["wan_flow"]["flow_bytes"].as_i64() >= Some(2 * BIG_FILE as i64)
    });
    println!("{:#}", last["wan_flow"]);
    assert!(
        ok,
        "WAN bytes / flow bytes not within 5 %: {:#}",
        last["wan_flow"]
    );
    assert_eq!(last["offload"]["flowtables"], serde_json::json!([]));
    let page = lab.http_get("/router");
    assert!(
        page.contains("wan-flow-ratio") && page.contains("no flowtable"),
        "{page}"
    );
    assert!(!page.contains("offload-warning"));
}
