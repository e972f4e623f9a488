//! Prometheus and IPFIX, proven in the router lab (`tests/lab/`).
//!
//! - `/metrics`, captured while the lab moves traffic, passes `promtool check metrics`
//!   (Debian's `prometheus` package), every series carries the `router` label, and the
//!   per-device counters equal what the database stores for the same flows, with the
//!   cardinality cap folding the rest into `device="other"`.
//! - nfdump's `nfcapd` listens on loopback inside the lab router; netmon exports IPFIX to
//!   it; `nfdump -r` lists the lab's flows with the right tuple, NAT translation, protocol
//!   and byte counts (IPv4, IPv6, UDP, and a throttled download exported in active-timeout
//!   slices that add up to its total), as RFC 5103 biflows. Then the collector is
//!   stopped: netmon keeps storing flows and counts the records it could not deliver.
//! - In the default uniflow model, nfcapd repeats every message to pmacct's `nfacctd`:
//!   both account a 5 MiB download within 1 % of the router's own counters in each
//!   direction, and nfdump decodes the interfaces, the device's MAC, NAT and TCP flags.
//!
//! Needs root and the packages `.ci/run` installs. Run with
//! `cargo build --bins && cargo test --test lab_export -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Where nfcapd listens inside the lab router.
const COLLECTOR: &str = "127.0.0.1:4739";

/// Fails early, naming the Debian package, when a collector-side tool is missing.
fn require_tools(tools: &[(&str, &str)]) {
    for (tool, package) in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "{tool} is missing: install the Debian package {package} (`.ci/run` does)"
        );
    }
}

/// One sample of a Prometheus text exposition: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// Every sample of metric `name` (exact name, so `_bucket`/`_sum` series are separate).
fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, parse_labels(rest.strip_suffix('}')?)),
                None => (series, BTreeMap::new()),
            };
            (metric == name).then(|| (labels, value.trim().parse().unwrap_or(f64::NAN)))
        })
        .collect()
}

/// `a="x",b="y"` (values may hold escaped quotes) → map.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = &after[end..];
    }
    out
}

/// The value of the sample of `name` whose labels include all of `want`.
fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples(text, name)
        .into_iter()
        .find(|(l, _)| {
            want.iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
}

/// Runs `promtool check metrics` on `text`; panics with its complaints.
fn promtool_check(text: &str, save_as: &Path) {
    std::fs::write(save_as, text).expect("save /metrics");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; .ci/run installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}) on {}:\n{}{}",
        out.status,
        save_as.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Per device, from the stored flows: (bytes up, bytes down, packets up, packets down),
/// "up" being what the device sent (the writer's orientation: the device initiated the
/// flow unless it is inbound).
fn stored_device_traffic(lab: &Lab) -> BTreeMap<i64, [u64; 4]> {
    let db = lab.db();
    db.busy_timeout(Duration::from_secs(5)).ok();
    let mut stmt = db
        .prepare(
            "SELECT device_id,
                 sum(CASE WHEN direction = 1 THEN bytes_down ELSE bytes_up END),
                 sum(CASE WHEN direction = 1 THEN bytes_up ELSE bytes_down END),
                 sum(CASE WHEN direction = 1 THEN packets_down ELSE packets_up END),
                 sum(CASE WHEN direction = 1 THEN packets_up ELSE packets_down END)
             FROM flows WHERE device_id IS NOT NULL GROUP BY device_id",
        )
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            [
                r.get::<_, i64>(1)? as u64,
                r.get::<_, i64>(2)? as u64,
                r.get::<_, i64>(3)? as u64,
                r.get::<_, i64>(4)? as u64,
            ],
        ))
    })
    .expect("query")
    .map(|r| r.expect("row"))
    .collect()
}

/// The labels netmon may have given a device's series: its name, its DHCP hostname, or
/// one of its addresses (the one in `devices.ip` when the series was created).
fn device_labels(lab: &Lab, id: i64) -> Vec<String> {
    let db = lab.db();
    let mut stmt = db
        .prepare(
            "SELECT nullif(trim(name), '') FROM devices WHERE id = ?1
             UNION ALL SELECT nullif(trim(hostname), '') FROM devices WHERE id = ?1
             UNION ALL SELECT ip FROM devices WHERE id = ?1
             UNION ALL SELECT ip FROM device_addrs WHERE device_id = ?1",
        )
        .expect("device labels");
    stmt.query_map([id], |r| r.get::<_, Option<String>>(0))
        .expect("device labels")
        .filter_map(|r| r.expect("device label"))
        .collect()
}

/// The device series in a scrape: label → [bytes up, bytes down, packets up, packets down].
fn device_series(text: &str) -> BTreeMap<String, [u64; 4]> {
    let mut out: BTreeMap<String, [u64; 4]> = BTreeMap::new();
    for (i, (metric, direction)) in [
        ("netmon_device_bytes_total", "up"),
        ("netmon_device_bytes_total", "down"),
        ("netmon_device_packets_total", "up"),
        ("netmon_device_packets_total", "down"),
    ]
    .into_iter()
    .enumerate()
    {
        for (labels, v) in samples(text, metric) {
            if labels.get("direction").map(String::as_str) == Some(direction) {
                let device = labels.get("device").cloned().unwrap_or_default();
                out.entry(device).or_default()[i] = v as u64;
            }
        }
    }
    out
}

// -------------------------------------------------------------------------------------

/// Item 1: promtool accepts a scrape taken during traffic; every series has the router
/// label; per-device counters equal the stored flows; the cap folds devices into "other".
#[test]
fn prometheus_scrape_passes_promtool_and_device_counters_match_stored_flows() {
    require_tools(&[("promtool", "prometheus")]);
    let lab = Lab::up_with("prom", 2);
    let _nm = lab.start_netmon(
        "dump_interval_s = 1\n[export]\nrouter_label = \"lab-rtr\"\nmax_device_series = 1\n",
    );
    // Both clients known by MAC, with every address they use, before their traffic:
    // a flow stored before the router's neighbour table names its MAC belongs to an
    // address-only device that merges later, and the merge moves stored flows but not
    // traffic already counted in `other` (see `merge_device_series`).
    lab.sh(
        "lan",
        &format!("ping -c1 -W2 {RTR_LAN4}; ping -c1 -W2 {RTR_LAN6}"),
    );
    lab.sh("lan2", &format!("ping -c1 -W2 {RTR_LAN4}"));
    let identified = wait_until(Duration::from_secs(15), || {
        lab.db_i64(&format!(
            "SELECT count(DISTINCT a.device_id) * 10 + count(*) FROM device_addrs a
             JOIN devices d ON d.id = a.device_id
             WHERE d.mac IS NOT NULL AND a.ip IN ('{CLIENT4}', '{CLIENT6}', '{CLIENT2_4}')"
        )) == 23
    });
    assert!(identified, "the lab clients were not identified by MAC");
    lab.download("lan", 46101, &format!("http://{WAN4}/small.bin"));
    lab.download("lan", 46102, &format!("http://[{WAN6}]/small.bin"));
    let udp = lab.client(
        "lan2",
        &[
            "udp", WAN4, "7", "--count", "5", "--size", "500", "--sport", "46103",
        ],
    );
    let udp: Value = serde_json::from_str(udp.trim()).expect("client.py udp JSON");
    assert_eq!(udp["received"], 5, "UDP echo: {udp}");
    // Scrape while a throttled download runs (≈ 2 s at 20 Mbit/s).
    lab.shape("20mbit");
    let curl = lab.spawn_download("lan2", 46104, &format!("http://{WAN4}/big.bin"));
    std::thread::sleep(Duration::from_millis(1200));
    let during = lab.metrics();
    let out = curl.wait_with_output().expect("curl");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lab.unshape();

    promtool_check(&during, &lab.dir.join("metrics-during-traffic.txt"));
    for line in during
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            line.contains("router=\"lab-rtr\""),
            "series without the router label: {line}"
        );
    }
    assert!(
        sample(
            &during,
            "netmon_writer_tick_seconds_bucket",
            &[("le", "0.01")]
        )
        .is_some(),
        "the writer tick is a histogram with seconds buckets:\n{}",
        truncate(&during, 4000)
    );
    let entries = sample(&during, "netmon_conntrack_entries", &[]).unwrap_or(-1.0);
    let limit = sample(&during, "netmon_conntrack_entries_limit", &[]).unwrap_or(-1.0);
    assert!(
        entries >= 1.0 && limit >= entries,
        "conntrack fill {entries}/{limit}"
    );
    for (iface, role) in [("br-lan", "lan"), ("wan", "wan")] {
        let rx = sample(
            &during,
            "netmon_interface_bytes_total",
            &[("interface", iface), ("role", role), ("direction", "rx")],
        );
        assert!(
            rx.is_some_and(|v| v > 0.0),
            "interface {iface} ({role}) rx bytes: {rx:?}"
        );
    }

    let final_counts = wait_until(Duration::from_secs(10), || {
        lab.db_i64(
            "SELECT count(*) FROM flows WHERE src_port = 46104 AND ended_at IS NOT NULL \
             AND bytes_down >= 5242880",
        ) == 1
    });
    assert!(
        final_counts,
        "the big download's flow did not end with its final counters"
    );
    // Quiet now: the counters must equal the stored flows, read between two identical
    // scrapes (so no commit slipped in between).
    let mut last = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        let before = device_series(&lab.metrics());
        let stored = stored_device_traffic(&lab);
        let after = device_series(&lab.metrics());
        if before != after {
            return false;
        }
        let mut expected: BTreeMap<String, [u64; 4]> = BTreeMap::new();
        let own: Vec<&String> = after.keys().filter(|k| *k != "other").collect();
        for (id, t) in &stored {
            // A series is named when it is created, after the device's address at that
            // moment when it has no name (`devices.ip` can move to a newer address later).
            let labels = device_labels(&lab, *id);
            let key = own
                .iter()
                .find(|l| labels.contains(l))
                .map_or_else(|| "other".to_owned(), |l| (*l).clone());
            let e = expected.entry(key).or_default();
            for (e, t) in e.iter_mut().zip(t) {
                *e += t;
            }
        }
        last = format!("metrics {after:?}\nstored {expected:?} (per device id {stored:?})");
        own.len() == 1 && stored.len() >= 2 && expected == after
    });
    assert!(
        ok,
        "per-device counters must equal the stored flows (one device series, cap 1, the \
         rest in \"other\"):\n{last}"
    );
    eprintln!("device series match stored flows: {last}");
}

/// IPFIX biflows (RFC 5103) to nfcapd, then with nfcapd stopped.
#[test]
fn ipfix_export_to_nfcapd_lists_the_flows_and_survives_a_stopped_collector() {
    require_tools(&[("nfcapd", "nfdump"), ("nfdump", "nfdump")]);
    let lab = Lab::up("ipfix");
    let flowdir = lab.dir.join("nfcapd");
    let nfcapd = start_nfcapd(&lab, &flowdir, None);
    // Router-side truth for the long download.
    lab.nft_add_counter(
        "long_down",
        &format!("ip daddr {CLIENT4} tcp sport 80 tcp dport 46204"),
    );
    lab.nft_add_counter("long_up", &format!("ip saddr {CLIENT4} tcp sport 46204"));
    let nm = lab.start_netmon(&format!(
        "dump_interval_s = 1\n[export]\nipfix_collector = \"{COLLECTOR}\"\n\
         ipfix_flow_model = \"biflow\"\n\
         ipfix_observation_domain = 77\nipfix_active_timeout_s = 2\n\
         ipfix_template_refresh_s = 5\n"
    ));

    lab.download("lan", 46201, &format!("http://{WAN4}/small.bin"));
    lab.download("lan", 46202, &format!("http://[{WAN6}]/small.bin"));
    let udp = lab.client(
        "lan",
        &[
            "udp", WAN4, "7", "--count", "10", "--size", "1000", "--sport", "46203",
        ],
    );
    let udp: Value = serde_json::from_str(udp.trim()).expect("client.py udp JSON");
    assert_eq!(udp["received"], 10, "UDP echo: {udp}");
    lab.shape("3mbit"); // 5 MiB ≈ 14 s: seven 2 s slices
    let long = lab.download("lan", 46204, &format!("http://{WAN4}/big.bin"));
    lab.unshape();
    assert_eq!(long.body, BIG_FILE);

    // Everything ended and stored (UDP ends when its conntrack entry expires, ~10 s).
    let stored = |sport: u16| -> Option<(u64, u64, String)> {
        let db = lab.db();
        db.query_row(
            "SELECT bytes_up, bytes_down, coalesce(reply_dst_port, src_port),
                    netmon_ip(coalesce(reply_dst_ip, src_ip)) FROM flows
             WHERE src_port = ?1 AND ended_at IS NOT NULL",
            [sport],
            |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    r.get::<_, i64>(1)? as u64,
                    format!("{}:{}", r.get::<_, String>(3)?, r.get::<_, i64>(2)?),
                ))
            },
        )
        .ok()
    };
    let all_ended = wait_until(Duration::from_secs(40), || {
        (46201..=46204).all(|p| stored(p).is_some())
    });
    assert!(
        all_ended,
        "the lab's flows did not all end in netmon's database"
    );
    // The exporter sends within half a second of a change; give it a moment.
    std::thread::sleep(Duration::from_secs(2));
    let metrics_before_stop = lab.metrics();

    let records = stop_nfcapd_and_read(nfcapd, &flowdir);
    let text = serde_json::to_string_pretty(&records).unwrap_or_default();
    std::fs::write(lab.dir.join("nfdump.json"), text.as_bytes()).ok();
    let addr = |r: &Value, side: &str| -> String {
        r[format!("{side}4_addr")]
            .as_str()
            .or_else(|| r[format!("{side}6_addr")].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let of_port = |sport: u16| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| r["src_port"].as_u64() == Some(u64::from(sport)))
            .collect()
    };
    let sum = |rs: &[&Value], key: &str| -> u64 { rs.iter().filter_map(|r| r[key].as_u64()).sum() };
    let show = |rs: &[&Value]| {
        rs.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };

    for (sport, proto, src, dst, dport, what) in [
        (46201, 6, CLIENT4, WAN4, 80, "IPv4 HTTP download"),
        (46202, 6, CLIENT6, WAN6, 80, "IPv6 HTTP download"),
        (46203, 17, CLIENT4, WAN4, UDP_ECHO_PORT, "UDP echo"),
        (46204, 6, CLIENT4, WAN4, 80, "long throttled download"),
    ] {
        let rs = of_port(sport);
        assert!(
            !rs.is_empty(),
            "{what}: nfdump lists no record from port {sport}; {} records:\n{}",
            records.len(),
            truncate(&text, 4000)
        );
        for r in &rs {
            assert_eq!(r["proto"].as_u64(), Some(proto), "{what}: {r}");
            assert_eq!(addr(r, "src"), src, "{what}: {r}");
            assert_eq!(addr(r, "dst"), dst, "{what}: {r}");
            assert_eq!(
                r["dst_port"].as_u64(),
                Some(u64::from(dport)),
                "{what}: {r}"
            );
        }
        let (up, down, reply_dst) = stored(sport).expect("stored");
        let (exp_up, exp_down) = (sum(&rs, "in_bytes"), sum(&rs, "out_bytes"));
        assert_eq!(
            (exp_up, exp_down),
            (up, down),
            "{what}: exported bytes (in, out) must add up to the stored flow's (up, down); \
             records:\n{}",
            show(&rs)
        );
        if src == CLIENT4 {
            // NAT: the post-NAT source is the router's WAN address and the reply port.
            let r = rs[0];
            let xlt = format!(
                "{}:{}",
                r["src4_xlt_ip"].as_str().unwrap_or_default(),
                r["src_xlt_port"].as_str().unwrap_or_default()
            );
            assert_eq!(xlt, reply_dst, "{what}: post-NAT source: {r}");
            assert!(xlt.starts_with(RTR_WAN4), "{what}: {r}");
        }
    }
    // UDP: 10 datagrams of 1000 bytes each way, + 8 UDP + 20 IPv4 header bytes.
    let udp_rs = of_port(46203);
    assert_eq!(sum(&udp_rs, "in_bytes"), 10 * 1028, "{}", show(&udp_rs));
    assert_eq!(sum(&udp_rs, "out_bytes"), 10 * 1028, "{}", show(&udp_rs));
    assert_eq!(sum(&udp_rs, "in_packets"), 10, "{}", show(&udp_rs));

    // The long download: several active-timeout slices that add up to its total, which
    // is the router's own count for the flow within 1 % each way.
    let long_rs = of_port(46204);
    assert!(
        long_rs.len() >= 3,
        "a ~14 s download with a 2 s active timeout must be exported in several slices, \
         got {}:\n{}",
        long_rs.len(),
        show(&long_rs)
    );
    let long_down = sum(&long_rs, "out_bytes");
    let truth_down = lab.nft_counter("long_down").1;
    assert!(
        long_down.abs_diff(truth_down) <= truth_down / 100,
        "long download: slices sum to {long_down} bytes down, the router counted \
         {truth_down} (±1 %)"
    );
    let truth_up = lab.nft_counter("long_up").1;
    let long_up = sum(&long_rs, "in_bytes");
    assert!(
        long_up.abs_diff(truth_up) <= truth_up / 100,
        "long download: slices sum to {long_up} bytes up, the router counted {truth_up} \
         (±1 %)"
    );
    assert!(
        long_down >= BIG_FILE,
        "the slices carry less than the 5 MiB body: {long_down}"
    );
    eprintln!(
        "long download exported in {} slices: {}",
        long_rs.len(),
        long_rs
            .iter()
            .map(|r| format!("{}..{} {} B", r["first"], r["last"], r["out_bytes"]))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Volume: what IPFIX costs per flow, from netmon's own export counters.
    let records_sent =
        metric_sum(&metrics_before_stop, "netmon_export_records_total").unwrap_or(0.0);
    let bytes_sent = metric_sum(&metrics_before_stop, "netmon_export_bytes_total").unwrap_or(0.0);
    let messages_sent =
        metric_sum(&metrics_before_stop, "netmon_export_messages_total").unwrap_or(0.0);
    eprintln!(
        "IPFIX sent before the collector stopped: {records_sent} records, {messages_sent} \
         messages, {bytes_sent} bytes (nfdump read {} records)",
        records.len()
    );

    // --- Item 3: collector stopped. netmon keeps storing flows and counts drops. ---
    let stored_before = lab.db_i64("SELECT count(*) FROM flows");
    for port in 46210..46215 {
        lab.download("lan", port, &format!("http://{WAN4}/small.bin"));
        std::thread::sleep(Duration::from_millis(700));
    }
    let drops = wait_for(Duration::from_secs(15), || {
        let m = lab.metrics();
        sample(
            &m,
            "netmon_export_drops_total",
            &[("exporter", "ipfix"), ("reason", "send_error")],
        )
        .filter(|v| *v > 0.0)
    });
    assert!(
        drops.is_some(),
        "with nfcapd stopped, netmon_export_drops_total{{exporter=\"ipfix\",reason=\"send_error\"}} \
         must count the undeliverable records:\n{}",
        lab.metrics()
    );
    let stored_after = wait_for(Duration::from_secs(10), || {
        let n = lab.db_i64("SELECT count(*) FROM flows WHERE src_port BETWEEN 46210 AND 46214");
        (n == 5).then_some(n)
    });
    assert!(
        stored_after.is_some(),
        "netmon must keep storing flows with the collector gone (had {stored_before})"
    );
    let (status, _) = lab.http("/healthz").expect("healthz");
    assert_eq!(status, 200);
    let mut nm = nm;
    assert!(nm.is_running(), "netmon exited: {}", nm.log_tail(40));
    let (exit, took) = nm.sigterm();
    assert!(
        exit.is_some_and(|s| s.success()),
        "netmon did not stop cleanly on SIGTERM ({exit:?} after {took:?}): {}",
        tail(&lab.netmon_log(), 40)
    );
    eprintln!(
        "collector stopped: {} records counted as dropped; SIGTERM exit took {took:?}",
        drops.unwrap_or(0.0)
    );
}

/// Where pmacct's nfacctd listens inside the lab router (nfcapd repeats to it).
const PMACCT_PORT: u16 = 4740;

/// Starts nfcapd on [`COLLECTOR`] inside the lab router writing to `flowdir`, optionally
/// repeating every packet it receives to `repeat` ("address/port"); returns once it
/// listens.
fn start_nfcapd(lab: &Lab, flowdir: &Path, repeat: Option<&str>) -> std::process::Child {
    std::fs::create_dir_all(flowdir).expect("flow dir");
    let dir = flowdir.display().to_string();
    let mut args = vec![
        "nfcapd",
        "-w",
        &dir,
        "-b",
        "127.0.0.1",
        "-p",
        "4739",
        "-t",
        "3600",
    ];
    if let Some(to) = repeat {
        args.extend(["-R", to]);
    }
    let nfcapd = lab.spawn("rtr", &args);
    let listening = wait_until(Duration::from_secs(10), || {
        lab.sh("rtr", "ss -Hlun 'sport = :4739'").contains("4739")
    });
    assert!(listening, "nfcapd does not listen on {COLLECTOR}");
    nfcapd
}

/// Stops nfcapd (SIGTERM closes its file) and returns what `nfdump -o json` lists.
fn stop_nfcapd_and_read(nfcapd: std::process::Child, flowdir: &Path) -> Vec<Value> {
    // SAFETY: kill(2) on our own child (`ip netns exec` execs nfcapd in place).
    unsafe { libc::kill(nfcapd.id() as libc::pid_t, libc::SIGTERM) };
    let said = nfcapd.wait_with_output().expect("nfcapd");
    let dump = Command::new("nfdump")
        .arg("-R")
        .arg(flowdir)
        .args(["-o", "json"])
        .output()
        .expect("run nfdump");
    let text = String::from_utf8_lossy(&dump.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "nfdump -o json ({e}): {}\nstderr: {}\nnfcapd said: {}{}",
            truncate(&text, 3000),
            String::from_utf8_lossy(&dump.stderr),
            String::from_utf8_lossy(&said.stdout),
            String::from_utf8_lossy(&said.stderr)
        )
    })
}

/// pmacct's per-flow totals from its print plugin's CSV files:
/// (src, dst, src port, dst port) → bytes.
fn pmacct_totals(dir: &Path) -> BTreeMap<(String, String, u16, u16), u64> {
    let mut out = BTreeMap::new();
    let Ok(files) = std::fs::read_dir(dir) else {
        return out;
    };
    for file in files.flatten() {
        let text = std::fs::read_to_string(file.path()).unwrap_or_default();
        let mut header: Vec<String> = Vec::new();
        for line in text.lines() {
            let cols: Vec<&str> = line.split(',').map(str::trim).collect();
            if cols.first() == Some(&"SRC_IP") {
                header = cols.iter().map(|c| (*c).to_owned()).collect();
                continue;
            }
            let col = |name: &str| {
                header
                    .iter()
                    .position(|h| h == name)
                    .and_then(|i| cols.get(i))
                    .copied()
                    .unwrap_or_default()
            };
            let key = (
                col("SRC_IP").to_owned(),
                col("DST_IP").to_owned(),
                col("SRC_PORT").parse().unwrap_or(0),
                col("DST_PORT").parse().unwrap_or(0),
            );
            *out.entry(key).or_default() += col("BYTES").parse::<u64>().unwrap_or(0);
        }
    }
    out
}

/// The flow model every collector reads: a 5 MiB download through the NAT router is
/// accounted within 1 % in both directions by nfdump and by pmacct's nfacctd (which
/// ignores RFC 5103 reverse elements), fed the same messages (nfcapd repeats them).
/// The records also carry the interfaces, the device's MAC and TCP flags.
#[test]
fn ipfix_uniflow_download_counts_both_directions_in_nfdump_and_pmacct() {
    require_tools(&[
        ("nfcapd", "nfdump"),
        ("nfdump", "nfdump"),
        ("nfacctd", "pmacct"),
    ]);
    let lab = Lab::up("uniflow");
    let pm_dir = lab.dir.join("pmacct");
    std::fs::create_dir_all(&pm_dir).expect("pmacct dir");
    let pm_conf = lab.dir.join("nfacctd.conf");
    std::fs::write(
        &pm_conf,
        format!(
            "daemonize: false\nnfacctd_ip: 127.0.0.1\nnfacctd_port: {PMACCT_PORT}\n\
             plugins: print[flows]\n\
             aggregate[flows]: src_host, dst_host, src_port, dst_port, proto\n\
             print_output[flows]: csv\nprint_refresh_time[flows]: 1\n\
             print_output_file[flows]: {}/flows-%s.csv\n",
            pm_dir.display()
        ),
    )
    .expect("write nfacctd.conf");
    let pm_conf_s = pm_conf.display().to_string();
    let nfacctd = lab.spawn("rtr", &["nfacctd", "-f", &pm_conf_s]);
    let listening = wait_until(Duration::from_secs(10), || {
        lab.sh("rtr", &format!("ss -Hlun 'sport = :{PMACCT_PORT}'"))
            .contains(&PMACCT_PORT.to_string())
    });
    assert!(listening, "nfacctd does not listen on port {PMACCT_PORT}");
    let flowdir = lab.dir.join("nfcapd");
    let nfcapd = start_nfcapd(&lab, &flowdir, Some(&format!("127.0.0.1/{PMACCT_PORT}")));

    lab.nft_add_counter(
        "uni_down",
        &format!("ip daddr {CLIENT4} tcp sport 80 tcp dport 46301"),
    );
    lab.nft_add_counter("uni_up", &format!("ip saddr {CLIENT4} tcp sport 46301"));
    // The default flow model; counters read every second and a 2 s active timeout
    // split the download into slices.
    let _nm = lab.start_netmon(&format!(
        "dump_interval_s = 1\n[export]\nipfix_collector = \"{COLLECTOR}\"\n\
         ipfix_active_timeout_s = 2\n"
    ));
    // The router learns the client's MAC (neighbour table) before the download.
    lab.sh("lan", &format!("ping -c 1 -W 2 {RTR_LAN4}"));
    std::thread::sleep(Duration::from_secs(1));
    lab.shape("8mbit"); // 5 MiB ≈ 5 s: a few slices
    let got = lab.download("lan", 46301, &format!("http://{WAN4}/big.bin"));
    lab.unshape();
    assert_eq!(got.body, BIG_FILE);

    let truth = |name: &str| lab.nft_counter(name).1;
    let within_1pct = |got: u64, truth: u64| got.abs_diff(truth) <= truth / 100;
    // pmacct prints its cache every second; wait until both directions add up.
    let key = |up: bool| {
        let (c, w) = (CLIENT4.to_owned(), WAN4.to_owned());
        if up {
            (c, w, 46301, 80)
        } else {
            (w, c, 80, 46301)
        }
    };
    let pm = wait_for(Duration::from_secs(20), || {
        let t = pmacct_totals(&pm_dir);
        let (up, down) = (
            t.get(&key(true)).copied().unwrap_or(0),
            t.get(&key(false)).copied().unwrap_or(0),
        );
        (within_1pct(up, truth("uni_up")) && within_1pct(down, truth("uni_down")))
            .then_some((up, down))
    });
    let (truth_up, truth_down) = (truth("uni_up"), truth("uni_down"));
    let Some((pm_up, pm_down)) = pm else {
        panic!(
            "pmacct's nfacctd must account the download within 1 % each way (router: \
             {truth_up} B up, {truth_down} B down); it has {:?}",
            pmacct_totals(&pm_dir)
        );
    };
    // What it printed is read: stop it at once (on SIGTERM it lingers for a minute;
    // its plugin processes go with the lab).
    // SAFETY: kill(2) on our own child (`ip netns exec` execs nfacctd in place).
    unsafe { libc::kill(nfacctd.id() as libc::pid_t, libc::SIGKILL) };
    let _ = nfacctd.wait_with_output();

    let records = stop_nfcapd_and_read(nfcapd, &flowdir);
    let addr = |r: &Value, side: &str| r[format!("{side}4_addr")].as_str().map(str::to_owned);
    let of = |src: &str, sport: u16| -> Vec<&Value> {
        records
            .iter()
            .filter(|r| {
                addr(r, "src").as_deref() == Some(src)
                    && r["src_port"].as_u64() == Some(u64::from(sport))
            })
            .collect()
    };
    let sum = |rs: &[&Value]| -> u64 { rs.iter().filter_map(|r| r["in_bytes"].as_u64()).sum() };
    let (up_rs, down_rs) = (of(CLIENT4, 46301), of(WAN4, 80));
    let (nf_up, nf_down) = (sum(&up_rs), sum(&down_rs));
    let show = |rs: &[&Value]| {
        rs.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        within_1pct(nf_up, truth_up) && within_1pct(nf_down, truth_down),
        "nfdump must account the download within 1 % each way (router: {truth_up} B up, \
         {truth_down} B down; nfdump {nf_up} up, {nf_down} down):\n{}\n{}",
        show(&up_rs),
        show(&down_rs)
    );
    assert!(
        down_rs.len() >= 2,
        "a ~5 s download with a 2 s active timeout is several slices:\n{}",
        show(&down_rs)
    );
    // No reverse elements in this model: nfdump's "out" counters stay empty.
    assert!(
        records
            .iter()
            .all(|r| r["out_bytes"].as_u64().unwrap_or(0) == 0),
        "uniflow records carry no reverse counters:\n{}",
        show(&records.iter().collect::<Vec<_>>())
    );
    // Interfaces, MAC, NAT and TCP flags, as nfdump decodes them.
    let ifindex = |name: &str| -> u64 {
        lab.sh("rtr", &format!("cat /sys/class/net/{name}/ifindex"))
            .trim()
            .parse()
            .expect("ifindex")
    };
    let (lan_if, wan_if) = (ifindex("br-lan"), ifindex("wan"));
    let client_mac = "02:77:00:00:00:10";
    for r in &up_rs {
        assert_eq!(r["dst_port"].as_u64(), Some(80), "{r}");
        assert_eq!(
            r["input_snmp"].as_u64(),
            Some(lan_if),
            "upload enters br-lan: {r}"
        );
        assert_eq!(
            r["output_snmp"].as_u64(),
            Some(wan_if),
            "upload leaves wan: {r}"
        );
        assert_eq!(r["in_src_mac"].as_str(), Some(client_mac), "{r}");
        assert_eq!(
            r["src4_xlt_ip"].as_str(),
            Some(RTR_WAN4),
            "post-NAT source: {r}"
        );
    }
    for r in &down_rs {
        assert_eq!(addr(r, "dst").as_deref(), Some(CLIENT4), "{r}");
        assert_eq!(r["dst_port"].as_u64(), Some(46301), "{r}");
        assert_eq!(
            r["input_snmp"].as_u64(),
            Some(wan_if),
            "download enters wan: {r}"
        );
        assert_eq!(
            r["output_snmp"].as_u64(),
            Some(lan_if),
            "download leaves br-lan: {r}"
        );
        assert_eq!(r["out_dst_mac"].as_str(), Some(client_mac), "{r}");
        assert_eq!(
            r["dst4_xlt_ip"].as_str(),
            Some(RTR_WAN4),
            "the outside view: {r}"
        );
    }
    let flags = |rs: &[&Value]| -> String {
        rs.iter()
            .filter_map(|r| r["tcp_flags"].as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (up_flags, down_flags) = (flags(&up_rs), flags(&down_rs));
    assert!(
        up_flags.contains('S') && up_flags.contains('A') && up_flags.contains('F'),
        "the upload's slices show SYN, ACK and FIN: {up_flags}"
    );
    assert!(
        down_flags.contains('S') && down_flags.contains('A'),
        "the download's slices show SYN and ACK: {down_flags}"
    );
    eprintln!(
        "uniflow: router {truth_up} B up / {truth_down} B down; nfdump {nf_up} / {nf_down} \
         ({} + {} records); pmacct {pm_up} / {pm_down}",
        up_rs.len(),
        down_rs.len()
    );
}

/// The figure for the README: IPFIX bytes per 1 000 short flows, measured with the
/// load generator (1 000 TCP connections) against a running nfcapd.
#[test]
fn ipfix_volume_per_thousand_flows() {
    require_tools(&[("nfcapd", "nfdump"), ("nfdump", "nfdump")]);
    let lab = Lab::up("ipfixvol");
    let flowdir = lab.dir.join("nfcapd");
    let nfcapd = start_nfcapd(&lab, &flowdir, None);
    let _nm = lab.start_netmon(&format!("[export]\nipfix_collector = \"{COLLECTOR}\"\n"));
    std::thread::sleep(Duration::from_secs(1));
    let m0 = lab.metrics();
    let report = lab.loadgen(
        "lan",
        &[
            "--mode",
            "tcp",
            "--target",
            &format!("{WAN4}:{BURST_PORT}"),
            "--rate",
            "1000",
            "--count",
            "1000",
            "--duration",
            "5",
        ],
    );
    let completed = report["completed"].as_u64().unwrap_or(0);
    assert!(completed >= 990, "loadgen: {report}");
    let got = |m: &str, name: &str| metric_sum(m, name).unwrap_or(0.0);
    // The default model: a record per direction, and every connection was answered.
    let expected = 2.0 * completed as f64;
    let start = Instant::now();
    let mut m1 = lab.metrics();
    while got(&m1, "netmon_export_records_total") - got(&m0, "netmon_export_records_total")
        < expected
        && start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(500));
        m1 = lab.metrics();
    }
    let records = got(&m1, "netmon_export_records_total") - got(&m0, "netmon_export_records_total");
    let bytes = got(&m1, "netmon_export_bytes_total") - got(&m0, "netmon_export_bytes_total");
    let messages =
        got(&m1, "netmon_export_messages_total") - got(&m0, "netmon_export_messages_total");
    assert!(
        records >= expected,
        "exported {records} records for {completed} connections (two each)"
    );
    let per_1000 = bytes / completed as f64 * 1000.0;
    let wire_per_1000 = (bytes + messages * 28.0) / completed as f64 * 1000.0;
    eprintln!(
        "IPFIX volume: {completed} connections, {records} records in {messages} messages, \
         {bytes} bytes of UDP payload → {per_1000:.0} bytes per 1 000 connections \
         ({wire_per_1000:.0} with IPv4/UDP headers)"
    );
    let listed = stop_nfcapd_and_read(nfcapd, &flowdir);
    let burst = listed
        .iter()
        .filter(|r| r["dst_port"].as_u64() == Some(u64::from(BURST_PORT)))
        .count();
    assert!(
        burst as u64 >= completed,
        "nfdump lists {burst} of the {completed} connections"
    );
}

/// The shipped Grafana dashboard: every query parses (promtool, as a recording rule with
/// Grafana's variables filled in) and uses only metric names netmon describes.
#[test]
fn grafana_dashboard_queries_parse_and_use_netmon_metrics() {
    require_tools(&[("promtool", "prometheus")]);
    let path = Path::new(REPO).join("packaging/grafana-netmon.json");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read dashboard"))
            .expect("dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let described = std::fs::read_to_string(Path::new(REPO).join("src/export/prometheus.rs"))
        .expect("read prometheus.rs");
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e.replace("$__rate_interval", "1m").replace("$router", ".*");
        rules.push_str(&format!(
            "      - record: netmon:dashboard_{i}\n        expr: '{}'\n",
            e.replace('\'', "''")
        ));
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("netmon_") || w.starts_with("process_"))
        {
            let base = name.strip_suffix("_bucket").unwrap_or(name);
            assert!(
                described.contains(&format!("\"{base}\"")),
                "the dashboard queries {name}, which src/export/prometheus.rs does not describe"
            );
        }
    }
    let file = tempfile::Builder::new()
        .prefix("netmon-grafana-")
        .suffix(".yml")
        .tempfile()
        .expect("temp file");
    std::fs::write(file.path(), rules).expect("write rules");
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(file.path())
        .output()
        .expect("run promtool (Debian package prometheus; .ci/run installs it)");
    assert!(
        out.status.success(),
        "promtool rejects a dashboard query:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
