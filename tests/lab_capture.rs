//! A broken capture source is named everywhere, with its cause and fix, while netmon
//! keeps monitoring flows — proven in the router lab (`tests/lab/`). Each test breaks one
//! source the way it breaks on a real router:
//!
//! - `a_dns_tap_whose_queue_is_taken_is_reported_broken`: another program binds the
//!   NFQUEUE number first.
//! - `a_dnsmasq_log_missing_at_start_or_deleted_is_reported_until_it_is_back`: the log
//!   file is gone when netmon starts, then dnsmasq writes it again (ok), then it is
//!   deleted while netmon runs (broken) and dnsmasq writes a new one (ok).
//! - `an_nflog_group_held_by_another_program_is_reported_and_flows_go_on`: another
//!   program binds the NFLOG group first (`client.py nflog-bind`); netmon starts
//!   anyway, still stores flows, and takes the group over once the other program ends.
//! - `conntrack_events_switched_off_while_running_is_reported_until_switched_on`:
//!   `sysctl -w net.netfilter.nf_conntrack_events=0` in the router's namespace while
//!   netmon runs, then back on.
//!
//! Each asserts that the overview's Collector tile (red, naming the source), the health
//! page (`/settings`), `/router`, `/healthz` (`problems`, `capture`) and
//! `netmon_capture_ok{source}` in `/metrics` say which source is broken and why.
//!
//! Needs root and the packages `.ci/run` installs. Run one with e.g.
//! `cargo test --test lab_capture nflog -- --nocapture`.

mod common;

use std::io::BufRead;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// How long a change may take to show: the sysctl check runs every 10 s, the dnsmasq log
/// is looked at every 2 s.
const NOTICED: Duration = Duration::from_secs(30);

fn healthz(lab: &Lab) -> Value {
    let (status, body) = lab.http("/healthz").expect("GET /healthz");
    assert_eq!(status, 200, "/healthz: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/healthz ({e}): {body}"))
}

/// The `/healthz` problem about `part`, if listed.
fn problem<'a>(health: &'a Value, part: &str) -> Option<&'a Value> {
    health["problems"]
        .as_array()?
        .iter()
        .find(|p| p["part"] == part)
}

/// The overview's Collector tile: the `<a>` element around its label.
fn collector_tile(overview: &str) -> String {
    let label = overview
        .find(">Collector<")
        .unwrap_or_else(|| panic!("no Collector tile: {}", truncate(overview, 3000)));
    let start = overview[..label].rfind("<a ").expect("the tile's <a>");
    let end = label + overview[label..].find("</a>").expect("the tile's </a>");
    overview[start..end].to_owned()
}

/// The `netmon_capture_ok` series of `source`.
fn capture_ok(lab: &Lab, source: &str) -> Option<f64> {
    metric(
        &lab.metrics(),
        &format!("netmon_capture_ok{{source=\"{source}\"}}"),
    )
}

/// Whether `/healthz` says `source` is in `state` (off, ok, broken).
fn state_is(lab: &Lab, source: &str, state: &str) -> bool {
    healthz(lab)["capture"][source]["state"] == state
}

/// Asserts that every place says `source` (tile label `label`) is broken, with an error
/// containing `error_has` and a fix containing `fix_has`.
fn assert_reported_broken(lab: &Lab, source: &str, label: &str, error_has: &str, fix_has: &str) {
    let health = healthz(lab);
    eprintln!("{source}: /healthz {health}");
    assert_eq!(health["ok"], false, "{health}");
    assert_eq!(health["capture"][source]["state"], "broken", "{health}");
    assert!(
        health["capture"][source]["since_ms"].as_i64().is_some(),
        "{health}"
    );
    let p = problem(&health, source).unwrap_or_else(|| panic!("no {source} problem: {health}"));
    assert!(
        p["error"].as_str().is_some_and(|e| e.contains(error_has)),
        "error must contain {error_has:?}: {health}"
    );
    assert!(
        p["fix"].as_str().is_some_and(|f| f.contains(fix_has)),
        "fix must contain {fix_has:?}: {health}"
    );
    let tile = collector_tile(&lab.http_get("/"));
    assert!(
        tile.contains("alert") && tile.contains("broken: ") && tile.contains(label),
        "the Collector tile must be red and name {label}: {tile}"
    );
    for page in ["/settings", "/router"] {
        let html = lab.http_get(page);
        let id = format!("id=\"capture-broken-{source}\"");
        let notice = html
            .find(&id)
            .map(|at| &html[at..at + html[at..].find("</p>").unwrap_or(0)])
            .unwrap_or_else(|| panic!("{page} has no {id}: {}", truncate(&html, 3000)));
        assert!(
            notice.contains(error_has) && notice.contains(fix_has),
            "{page}: the notice must say {error_has:?} and {fix_has:?}: {notice}"
        );
    }
    assert_eq!(
        capture_ok(lab, source),
        Some(0.0),
        "netmon_capture_ok{{source=\"{source}\"}} while broken"
    );
}

/// Asserts that `source` is ok again everywhere it was reported broken.
fn assert_ok_again(lab: &Lab, source: &str, label: &str) {
    assert!(
        wait_until(NOTICED, || state_is(lab, source, "ok")),
        "{source} not ok again: {}\n{}",
        healthz(lab),
        tail(&lab.netmon_log(), 30)
    );
    let health = healthz(lab);
    assert!(problem(&health, source).is_none(), "{health}");
    assert!(!collector_tile(&lab.http_get("/")).contains(label));
    assert!(
        !lab.http_get("/settings")
            .contains(&format!("capture-broken-{source}"))
    );
    assert_eq!(capture_ok(lab, source), Some(1.0));
}

#[test]
fn a_dns_tap_whose_queue_is_taken_is_reported_broken() {
    let lab = Lab::up("capdns");
    // Another program binds netmon's queue number first (per network namespace).
    let queue_num = 5353;
    let _other = lab.in_router(|| {
        let mut q = nfq::Queue::open().expect("open an NFQUEUE socket");
        q.bind(queue_num).expect("bind the queue before netmon");
        q
    });
    let _nm = lab.start_netmon("");
    assert_reported_broken(
        &lab,
        "dns_tap",
        "DNS tap",
        &format!("NFQUEUE {queue_num}"),
        "dns.queue_num",
    );
    assert_eq!(
        metric(&lab.metrics(), "netmon_dns_capture_active"),
        Some(0.0)
    );
    // Only the tap: the other sources are fine.
    let health = healthz(&lab);
    assert_eq!(health["capture"]["conntrack"]["state"], "ok", "{health}");
    assert_eq!(health["capture"]["nflog"]["state"], "ok", "{health}");
    assert_eq!(health["capture"]["dnsmasq_log"]["state"], "off", "{health}");
}

#[test]
fn a_dnsmasq_log_missing_at_start_or_deleted_is_reported_until_it_is_back() {
    let lab = Lab::up("caplog");
    // The lab's resolver logs every query to this file (`lab.sh`).
    let log = lab.dir.join("dnsmasq-queries.log");
    std::fs::remove_file(&log).expect("remove the dnsmasq log");
    let _nm = lab.start_netmon(&format!(
        "[dns]\npacket_capture = false\nlog_file = \"{}\"\n",
        log.display()
    ));
    assert!(
        wait_until(NOTICED, || state_is(&lab, "dnsmasq_log", "broken")),
        "{}",
        healthz(&lab)
    );
    assert_reported_broken(
        &lab,
        "dnsmasq_log",
        "dnsmasq log",
        "No such file or directory",
        "log-queries",
    );
    let health = healthz(&lab);
    assert!(
        problem(&health, "dnsmasq_log").is_some_and(|p| p["error"]
            .as_str()
            .is_some_and(|e| e.contains(&log.display().to_string()))),
        "the error must name the file: {health}"
    );

    // dnsmasq starts logging there: read, and ok again.
    lab.lab_sh(&["dnsmasq", &lab.name, "file-extra"]);
    lab.client("lan", &["dns", RTR_LAN4, "shop.example.test"]);
    assert_ok_again(&lab, "dnsmasq_log", "dnsmasq log");
    assert!(
        wait_until(NOTICED, || lab.db_i64(
            "SELECT count(*) FROM dns_queries q JOIN dns_names n ON n.id = q.qname_id \
             WHERE n.name = 'shop.example.test'"
        ) > 0),
        "the query of the recovered log is not stored"
    );

    // Deleted while netmon runs (dnsmasq writes on into the deleted file): broken.
    std::fs::remove_file(&log).expect("remove the dnsmasq log");
    assert!(
        wait_until(NOTICED, || state_is(&lab, "dnsmasq_log", "broken")),
        "{}",
        healthz(&lab)
    );
    assert_reported_broken(
        &lab,
        "dnsmasq_log",
        "dnsmasq log",
        "deleted or moved away",
        "log-queries",
    );
    // dnsmasq restarted (as after a config change): a new file, ok again.
    lab.lab_sh(&["dnsmasq", &lab.name, "file-extra"]);
    assert_ok_again(&lab, "dnsmasq_log", "dnsmasq log");
}

/// `client.py nflog-bind GROUP` in the router: holds the group until killed (the lab's
/// teardown ends it if the test does not).
struct NflogHolder(std::process::Child);

impl NflogHolder {
    fn start(lab: &Lab, group: u16) -> NflogHolder {
        let script = client_script();
        let mut child = lab.spawn(
            "rtr",
            &["python3", &script, "nflog-bind", &group.to_string()],
        );
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read nflog-bind");
        assert_eq!(line.trim(), "ready", "nflog-bind {group} did not bind");
        NflogHolder(child)
    }
}

impl Drop for NflogHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_nflog_group_held_by_another_program_is_reported_and_flows_go_on() {
    let lab = Lab::up("capnflog");
    let group = 5354;
    let holder = NflogHolder::start(&lab, group);
    let _nm = lab.start_netmon(&format!("[firewall]\ndrop_log_group = {group}\n"));
    assert_reported_broken(
        &lab,
        "nflog",
        "NFLOG",
        &format!("binding NFLOG group {group} refused"),
        "firewall.drop_log_group",
    );
    // Flows are still monitored.
    let sport = 46_211;
    lab.client(
        "lan",
        &[
            "udp",
            WAN4,
            &UDP_ECHO_PORT.to_string(),
            "--count",
            "3",
            "--size",
            "200",
            "--sport",
            &sport.to_string(),
        ],
    );
    assert!(
        wait_until(NOTICED, || lab.db_i64(&format!(
            "SELECT count(*) FROM flows WHERE proto = 17 AND src_port = {sport}"
        )) > 0),
        "no flow stored with nflog broken\n{}",
        tail(&lab.netmon_log(), 30)
    );
    let health = healthz(&lab);
    assert_eq!(health["capture"]["conntrack"]["state"], "ok", "{health}");
    // The other program ends: netmon binds the group (it tries every 10 s).
    drop(holder);
    assert_ok_again(&lab, "nflog", "NFLOG");
}

#[test]
fn conntrack_events_switched_off_while_running_is_reported_until_switched_on() {
    const EVENTS: &str = "net.netfilter.nf_conntrack_events";
    let lab = Lab::up("capct");
    // netmon sets only accounting and timestamps at start; off, so nothing it does at
    // start hides a sysctl.
    let _nm = lab.start_netmon("enable_conntrack_sysctls = false\n");
    let before = lab
        .exec_ok("rtr", &["sysctl", "-n", EVENTS])
        .trim()
        .to_owned();
    assert_ne!(before, "0", "events are off in a fresh lab router");
    assert!(
        wait_until(NOTICED, || state_is(&lab, "conntrack", "ok")),
        "conntrack not ok at start: {}",
        healthz(&lab)
    );
    lab.exec_ok("rtr", &["sysctl", "-w", &format!("{EVENTS}=0")]);
    assert!(
        wait_until(NOTICED, || state_is(&lab, "conntrack", "broken")),
        "events off not noticed: {}",
        healthz(&lab)
    );
    assert_reported_broken(
        &lab,
        "conntrack",
        "conntrack",
        &format!("{EVENTS} is 0"),
        &format!("sysctl -w {EVENTS}=1"),
    );
    lab.exec_ok("rtr", &["sysctl", "-w", &format!("{EVENTS}={before}")]);
    assert_ok_again(&lab, "conntrack", "conntrack");
}
