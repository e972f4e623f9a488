//! Router health, proven in the router lab (`tests/lab/`).
//!
//! netmon runs inside the lab router sampling every second. The test reads the same
//! sources itself — `/proc` for the kernel-wide values, `/sys/class/net` and
//! `/proc/sys/net/netfilter` *inside the router namespace* for the per-namespace ones,
//! `statvfs` for the file systems — and compares them with `/api/router` within
//! tolerances that allow for the second between netmon's sample and the test's read.
//! Then a throttled download from the wan crosses the router: the WAN interface's rates
//! must show the shaper's rate, and its minute rows the bytes curl received (±10 %).
//!
//! Needs root and the packages `.ci/run` installs. Run with
//! `cargo build --bins && cargo test --test lab_router -- --nocapture`.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The shaper's rate in the download test, and the same in bytes per second.
const SHAPE: &str = "4mbit";
const SHAPE_BYTES_PER_S: f64 = 500_000.0;

/// A `/proc/meminfo` field in bytes.
fn meminfo(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/meminfo"))
        * 1024
}

/// First number of a `/proc` file (load1 of loadavg, uptime of uptime).
fn first_f64(path: &str) -> f64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("cannot read a number from {path}"))
}

/// (busy, total) ticks of `/proc/stat`'s `cpu` line, counted as netmon documents it.
fn cpu_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let n: Vec<u64> = text
        .lines()
        .next()
        .expect("cpu line")
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|v| v.parse().expect("number"))
        .collect();
    let total: u64 = n.iter().sum();
    (total - n[3] - n[4], total)
}

/// (size, available) bytes of the file system holding `path`.
fn statvfs(path: &std::path::Path) -> (u64, u64) {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: zeroed statvfs is valid; `c` is NUL-terminated; `s` is a valid out-pointer.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0, "statvfs");
    let frsize = s.f_frsize;
    (s.f_blocks * frsize, s.f_bavail * frsize)
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in:\n{}", pretty(v)))
}

fn interface<'a>(current: &'a Value, name: &str) -> &'a Value {
    current["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("no interface {name} in:\n{}", pretty(current)))
}

/// An interface counter from the router's sysfs (a second source: netmon reads
/// `/proc/net/dev`).
fn sys_counter(lab: &Lab, iface: &str, counter: &str) -> u64 {
    lab.exec_ok(
        "rtr",
        &[
            "cat",
            &format!("/sys/class/net/{iface}/statistics/{counter}"),
        ],
    )
    .trim()
    .parse()
    .expect("counter")
}

fn wan_rx_in_minutes(lab: &Lab) -> i64 {
    lab.db_i64("SELECT coalesce(sum(rx_bytes), 0) FROM interface_minutes WHERE interface = 'wan'")
}

#[test]
fn router_health_matches_proc_sys_and_lab_traffic() {
    let lab = Lab::up("rhealth");
    let mut netmon = lab.start_netmon("[system]\nsample_interval_s = 1\n");

    // A second sample carries CPU and rates.
    let ready = wait_until(Duration::from_secs(10), || {
        lab.api("/api/router")["current"]["cpu_ratio"].is_number()
    });
    assert!(
        ready,
        "no sample with CPU in 10 s; log:\n{}",
        netmon.log_tail(40)
    );

    // --- kernel-wide values, read by the test from /proc ----------------------------
    let t0 = cpu_ticks();
    let v = lab.api("/api/router");
    let cur = &v["current"];
    let age_s = (now_ms() as f64 - num(cur, &["at_ms"])) / 1000.0;
    assert!((0.0..3.0).contains(&age_s), "sample is {age_s} s old");
    let total = meminfo("MemTotal");
    assert_eq!(num(cur, &["memory", "total_bytes"]) as u64, total);
    let available = meminfo("MemAvailable") as f64;
    let api_available = num(cur, &["memory", "available_bytes"]);
    assert!(
        (api_available - available).abs() <= 0.03 * total as f64,
        "MemAvailable: netmon {api_available}, /proc {available}"
    );
    let load1 = first_f64("/proc/loadavg");
    let api_load1 = num(cur, &["load", "one"]);
    assert!(
        (api_load1 - load1).abs() <= 0.5 + 0.25 * load1,
        "load1: netmon {api_load1}, /proc {load1}"
    );
    let uptime = first_f64("/proc/uptime");
    let api_uptime = num(cur, &["uptime_s"]) + age_s;
    assert!(
        (api_uptime - uptime).abs() <= 2.0,
        "uptime: netmon {api_uptime}, /proc {uptime}"
    );
    // CPU: netmon's per-second samples over three seconds against the test's own
    // reading of /proc/stat over the same three seconds. Other tests and builds share
    // the machine, so the tolerance is wide; a wrong formula (idle counted as busy,
    // per-CPU instead of total) is far outside it.
    let mut cpu_samples: BTreeMap<i64, f64> = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let v = lab.api("/api/router");
        if let (Some(at), Some(r)) = (
            v["current"]["at_ms"].as_i64(),
            v["current"]["cpu_ratio"].as_f64(),
        ) {
            assert!((0.0..=1.0).contains(&r), "cpu_ratio {r}");
            cpu_samples.insert(at, r);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let t1 = cpu_ticks();
    let test_cpu = (t1.0 - t0.0) as f64 / (t1.1 - t0.1).max(1) as f64;
    let api_cpu = cpu_samples.values().sum::<f64>() / cpu_samples.len().max(1) as f64;
    assert!(
        cpu_samples.len() >= 2 && (api_cpu - test_cpu).abs() <= 0.3,
        "CPU: netmon {cpu_samples:?} (mean {api_cpu}), /proc/stat {test_cpu}"
    );

    // --- file systems ---------------------------------------------------------------
    let fs = cur["filesystems"].as_array().expect("filesystems");
    let db = fs
        .iter()
        .find(|f| f["name"] == "database")
        .expect("database fs");
    assert_eq!(db["path"], lab.dir.display().to_string());
    let (size, free) = statvfs(&lab.dir);
    assert_eq!(num(db, &["size_bytes"]) as u64, size);
    let api_free = num(db, &["free_bytes"]);
    assert!(
        (api_free - free as f64).abs() <= (0.02 * size as f64).max(256.0 * 1048576.0),
        "free: netmon {api_free}, statvfs {free}"
    );
    let root = fs
        .iter()
        .find(|f| f["name"] == "root" || f["name"] == "overlay")
        .expect("root or overlay fs");
    let root_path = root["path"].as_str().expect("path");
    assert_eq!(
        num(root, &["size_bytes"]) as u64,
        statvfs(std::path::Path::new(root_path)).0
    );

    // --- temperatures: every readable thermal zone is reported ------------------------
    let zones = std::fs::read_dir("/sys/class/thermal")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
                .filter(|e| std::fs::read_to_string(e.path().join("temp")).is_ok())
                .count()
        })
        .unwrap_or(0);
    let temps = cur["temperatures"].as_array().map_or(0, Vec::len);
    assert!(
        temps >= zones.min(16),
        "{zones} thermal zones, netmon reports {temps}"
    );

    // --- interfaces: roles, and counters against the router's sysfs ------------------
    assert_eq!(interface(cur, "wan")["role"], "wan");
    assert_eq!(interface(cur, "br-lan")["role"], "lan");
    assert_eq!(
        interface(cur, "lan1")["role"],
        "lan_port",
        "a port of br-lan"
    );
    assert!(
        cur["interfaces"]
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i["name"] != "lo")),
        "loopback is not an interface of the router's traffic"
    );
    let v = lab.api("/api/router");
    let wan = interface(&v["current"], "wan");
    let sys_rx = sys_counter(&lab, "wan", "rx_bytes");
    let api_rx = num(wan, &["counters", "rx_bytes"]) as u64;
    assert!(
        api_rx <= sys_rx && sys_rx - api_rx <= 64 << 10,
        "wan rx_bytes: netmon {api_rx}, sysfs {sys_rx}"
    );

    // --- a throttled download: the WAN rate is the shaper's rate ---------------------
    lab.shape(SHAPE);
    // The previous sample's deltas are committed (1 s samples, 250 ms ticks).
    std::thread::sleep(Duration::from_millis(1600));
    let rx_before = wan_rx_in_minutes(&lab);
    let started = now_ms();
    let mut curl = lab.spawn_download("lan", 41_000, &format!("http://{WAN4}/big.bin"));
    let mut rates: BTreeMap<i64, f64> = BTreeMap::new();
    while curl.try_wait().expect("curl").is_none() {
        let v = lab.api("/api/router");
        let wan = interface(&v["current"], "wan");
        if let (Some(at), Some(r)) = (
            v["current"]["at_ms"].as_i64(),
            wan["rx_bytes_per_s"].as_f64(),
        ) {
            rates.insert(at, r);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let ended = now_ms();
    let out = curl.wait_with_output().expect("curl output");
    assert!(out.status.success(), "curl failed: {out:?}");
    let dl = Download::parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(dl.body, BIG_FILE);
    lab.unshape();
    // Samples wholly inside the steady part of the transfer.
    assert!(
        ended - started > 5_000,
        "the {SHAPE} download took only {} ms: is the shaper on?",
        ended - started
    );
    let steady: Vec<f64> = rates
        .range(started + 2_000..ended - 1_000)
        .map(|(_, r)| *r)
        .collect();
    assert!(
        steady.len() >= 3,
        "too few samples during the download: {rates:?}"
    );
    let mut sorted = steady.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        (median / SHAPE_BYTES_PER_S - 1.0).abs() <= 0.10,
        "wan rx rate during a {SHAPE} download: median {median} B/s of {steady:?}"
    );
    // The minute rows add up to what crossed the WAN: the download plus its TCP/IP
    // and Ethernet headers (about 4.6 % at a 1500-byte MTU).
    std::thread::sleep(Duration::from_millis(2000));
    let rx_after = wan_rx_in_minutes(&lab);
    let stored = (rx_after - rx_before) as f64;
    let ratio = stored / dl.down() as f64;
    assert!(
        (ratio - 1.0).abs() <= 0.10,
        "wan rx in interface_minutes {stored} B for a {} B download (ratio {ratio:.3})",
        dl.down()
    );

    eprintln!(
        "wan rx during a {SHAPE} download: median {median:.0} B/s over {} samples; \
         minute rows {stored} B for {} B downloaded (ratio {ratio:.3})",
        steady.len(),
        dl.down()
    );

    // --- conntrack fill, in the router's own namespace --------------------------------
    // The download left a TIME_WAIT entry, so the router's table is not empty.
    let ct = |name: &str| -> u64 {
        lab.exec_ok("rtr", &["cat", &format!("/proc/sys/net/netfilter/{name}")])
            .trim()
            .parse()
            .expect("sysctl value")
    };
    let v = lab.api("/api/router");
    let (count, max) = (ct("nf_conntrack_count"), ct("nf_conntrack_max"));
    let api_count = num(&v, &["current", "conntrack", "count"]) as u64;
    assert_eq!(num(&v, &["current", "conntrack", "max"]) as u64, max);
    assert!(count >= 1, "the router's table holds the download's entry");
    assert!(
        api_count.abs_diff(count) <= 3,
        "nf_conntrack_count: netmon {api_count}, router {count}"
    );
    let fill = num(&v, &["conntrack_fill"]);
    assert!((fill - api_count as f64 / max as f64).abs() < 1e-9);

    // --- minute rows, the page and the metrics ----------------------------------------
    let samples = lab.db_i64("SELECT coalesce(sum(samples), 0) FROM system_minutes");
    assert!(samples >= 8, "{samples} samples in system_minutes");
    assert_eq!(
        lab.db_i64("SELECT max(ct_max) FROM system_minutes"),
        max as i64
    );
    assert!(
        lab.db_i64(
            "SELECT count(*) FROM interface_minutes WHERE interface = 'wan' AND role = 'wan'"
        ) > 0
    );
    let minutes = v["minutes"].as_array().expect("minutes");
    assert!(
        minutes
            .iter()
            .any(|m| m["cpu_pct"].is_number() && m["mem_used_bytes"].is_number()),
        "{}",
        pretty(&v["minutes"])
    );
    let page = lab.http_get("/router");
    for needle in [
        "Conntrack table",
        "Interfaces",
        "br-lan",
        "role-wan",
        "<svg",
    ] {
        assert!(page.contains(needle), "/router lacks {needle}");
    }
    let metrics = lab.metrics();
    for name in [
        "netmon_router_cpu_ratio",
        "netmon_router_load1",
        "netmon_router_memory_bytes",
        "netmon_router_filesystem_bytes",
        "netmon_router_uptime_seconds",
        "netmon_conntrack_entries",
        "netmon_interface_bytes_total",
    ] {
        assert!(
            metric_sum(&metrics, name).is_some() && metrics.contains(&format!("# HELP {name} ")),
            "/metrics lacks {name} or its HELP"
        );
    }
    let total_metric = metrics
        .lines()
        .find(|l| l.starts_with("netmon_router_memory_bytes{") && l.contains("kind=\"total\""))
        .and_then(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .expect("memory total series");
    assert_eq!(total_metric as u64, total);

    // The sampler sleeps on a channel: stopping does not wait for its next sample.
    let (status, took) = netmon.sigterm();
    assert!(
        status.is_some_and(|s| s.success()),
        "netmon did not exit cleanly"
    );
    assert!(took < Duration::from_secs(2), "stopping took {took:?}");
}
