//! Faults netmon must ride out, in the lab:
//! 1. dnsmasq's lease file and query log vanish and reappear (`/tmp` cleaned, dnsmasq
//!    restarted): netmon notices, counts, and reads the new files — a new lease becomes
//!    a device, new log lines name flows;
//! 2. a netlink overrun (a tiny receive buffer and a burst of flows): counted, a resync
//!    dump follows, and flows that ended meanwhile are closed — no row stays "live";
//! 3. stuck and slow web clients (half-sent requests, an event stream never read, a
//!    page never read) do not stall the server, and their sockets are closed after the
//!    idle timeout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const NAMED_WITHIN: Duration = Duration::from_secs(10);

fn resolve_and_fetch(lab: &Lab, ns: &str, name: &str, want: &str, sport: u16) {
    let answer = lab.client(ns, &["dns", RTR_LAN4, name, "--type", "A"]);
    assert_eq!(answer.trim(), want, "{name}");
    lab.download(ns, sport, &format!("http://{want}/small.bin"));
}

fn device_with_mac(lab: &Lab, mac: &str) -> Option<Value> {
    let v = lab.api("/api/devices");
    v["devices"]
        .as_array()?
        .iter()
        .find(|d| d["mac"] == mac)
        .cloned()
}

/// `lab.sh dhcp` for LAN client `client` with `host` and `mac`.
fn dhcp(lab: &Lab, client: u32, host: &str, mac: &str) {
    let client = client.to_string();
    lab.lab_sh(&["dhcp", &lab.name, &client, host, mac]);
}

fn metric_or_zero(lab: &Lab, series: &str) -> f64 {
    metric(&lab.metrics(), series).unwrap_or(0.0)
}

#[test]
fn lease_file_and_dnsmasq_log_vanish_and_reappear() {
    let lab = Lab::up_with("vanish", 2);
    let leases = lab.dir.join("dnsmasq.leases");
    let log = lab.dir.join("dnsmasq-queries.log");
    let mut nm = lab.start_netmon(&format!(
        "[dns]\npacket_capture = false\nlog_file = \"{}\"\n\n[devices]\nlease_files = [\"{}\"]\n",
        log.display(),
        leases.display()
    ));
    // Before: a lease makes a device, the log names a flow.
    dhcp(&lab, 1, "laptop", "3c:22:fb:12:34:56");
    assert!(
        wait_until(Duration::from_secs(10), || device_with_mac(
            &lab,
            "3c:22:fb:12:34:56"
        )
        .is_some()),
        "the first lease made no device"
    );
    resolve_and_fetch(&lab, "lan", "shop.example.test", "203.0.113.84", 47711);
    assert_eq!(
        wait_named(&lab, "203.0.113.84", 47711, NAMED_WITHIN),
        exact("shop.example.test", None)
    );

    // Both files vanish (dnsmasq keeps writing to the unlinked ones).
    std::fs::remove_file(&leases).expect("rm leases");
    std::fs::remove_file(&log).expect("rm log");
    let gone = |source: &str| {
        metric_or_zero(
            &lab,
            &format!("netmon_source_file_vanished_total{{source=\"{source}\"}}"),
        )
    };
    assert!(
        wait_until(Duration::from_secs(40), || gone("leases") >= 1.0
            && gone("dnsmasq_log") >= 1.0),
        "the vanished files were not noticed: leases {}, log {}; log:\n{}",
        gone("leases"),
        gone("dnsmasq_log"),
        tail(&lab.netmon_log(), 30)
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(nm.is_running(), "netmon exited when its files vanished");
    assert!(matches!(lab.http("/healthz"), Ok((200, _))));

    // dnsmasq restarts: both files are back (new inodes), and new things happen.
    lab.lab_sh(&["dnsmasq", &lab.name, "file-extra"]);
    assert!(
        leases.exists() && log.exists(),
        "dnsmasq did not re-create its files"
    );
    dhcp(&lab, 2, "raspberrypi", "b8:27:eb:aa:bb:cc");
    // The neighbour table may show the MAC a moment before the lease file's line with
    // the hostname is read: wait for the lease's sighting itself.
    let mut pi = None;
    assert!(
        wait_until(Duration::from_secs(40), || {
            pi = device_with_mac(&lab, "b8:27:eb:aa:bb:cc");
            pi.as_ref()
                .is_some_and(|d| d.to_string().contains("raspberrypi"))
        }),
        "a lease in the re-created lease file made no device with its hostname: {pi:?}; \
         log:\n{}",
        tail(&lab.netmon_log(), 30)
    );
    resolve_and_fetch(&lab, "lan", "cdn.example.test", "203.0.113.85", 47712);
    assert_eq!(
        wait_named(&lab, "203.0.113.85", 47712, NAMED_WITHIN),
        exact("cdn.example.test", Some("edge.cdn-provider.test")),
        "a flow named from the re-created log"
    );
    let text = std::fs::read_to_string(lab.netmon_log()).unwrap_or_default();
    assert!(
        text.contains("is gone") && text.contains("reading the new file from its start"),
        "the vanishing and the new log are logged:\n{}",
        tail(&lab.netmon_log(), 40)
    );
    assert!(nm.is_running());
    let (status, _) = nm.sigterm();
    assert!(status.is_some_and(|s| s.success()), "clean stop");
}

#[test]
fn netlink_overrun_is_counted_resynced_and_leaves_no_live_rows() {
    let lab = Lab::up("overrun");
    // The smallest receive buffer netmon accepts (the kernel doubles it: 128 KiB), and no
    // periodic dump: only an overrun's resync dump can reconcile.
    let mut nm = lab.start_netmon("netlink_rcvbuf_bytes = 65536\ndump_interval_s = 3600\n");
    let report = lab.loadgen(
        "lan",
        &[
            "--mode",
            "udp",
            "--target",
            &format!("{WAN4}:{BURST_PORT}"),
            "--rate",
            "40000",
            "--count",
            "40000",
            "--duration",
            "3",
            "--threads",
            "2",
        ],
    );
    eprintln!("overrun: loadgen {report}");
    // The lab's UDP timeout is 5 s: the kernel's garbage collector then destroys them in
    // bursts, the other half of the overrun.
    let overruns = || metric_or_zero(&lab, "netmon_conntrack_overruns_total");
    let resyncs = || metric_or_zero(&lab, "netmon_conntrack_resync_dumps_total");
    assert!(
        wait_until(Duration::from_secs(20), || overruns() >= 1.0),
        "no overrun with a 64 KiB buffer and 40 000 flows; metrics:\n{}",
        lab.metrics()
            .lines()
            .filter(|l| l.starts_with("netmon_conntrack"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        wait_until(Duration::from_secs(20), || resyncs() >= 1.0),
        "{} overruns but no resync dump",
        overruns()
    );
    // Every burst flow has ended in the kernel…
    let in_kernel = || {
        lab.conntrack_entries(&["-p", "udp", "--dport", &BURST_PORT.to_string()])
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(60), || in_kernel() == 0),
        "{} burst flows still in conntrack",
        in_kernel()
    );
    // …and so in netmon: no row stays live, whatever events were lost.
    let live_sql = format!(
        "SELECT count(*) FROM flows WHERE proto = 17 AND dst_port = {BURST_PORT} \
         AND ended_at IS NULL"
    );
    let stored = lab.db_i64(&format!(
        "SELECT count(*) FROM flows WHERE proto = 17 AND dst_port = {BURST_PORT}"
    ));
    assert!(stored > 0, "no burst flow stored");
    let mut live = -1;
    let closed = wait_until(Duration::from_secs(60), || {
        live = lab.db_i64(&live_sql);
        live == 0
    });
    assert!(
        closed,
        "{live} of {stored} burst flows still live in netmon after they ended in the kernel \
         ({} overruns, {} resync dumps); log:\n{}",
        overruns(),
        resyncs(),
        tail(&lab.netmon_log(), 30)
    );
    assert!(nm.is_running(), "netmon exited");
    assert!(matches!(lab.http("/healthz"), Ok((200, _))));
    let (status, _) = nm.sigterm();
    assert!(status.is_some_and(|s| s.success()), "clean stop");
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// GET `path`: must answer 200 within `limit`.
#[track_caller]
fn answers_quickly(lab: &Lab, path: &str, limit: Duration) {
    let t0 = Instant::now();
    let got = lab.http(path);
    let took = t0.elapsed();
    assert!(
        matches!(got, Ok((200, _))),
        "GET {path} while clients stall: {:?}",
        got.map(|(s, b)| (s, truncate(&b, 200)))
    );
    assert!(took < limit, "GET {path} took {took:?} while clients stall");
}

#[test]
fn stuck_and_slow_web_clients_cannot_stall_the_server() {
    let lab = Lab::up("stall");
    let mut nm = lab.start_netmon("");
    let pid = nm.pid;
    // Some flows, so pages have rows.
    lab.download("lan", 47721, "http://203.0.113.84/small.bin");
    answers_quickly(&lab, "/flows", Duration::from_secs(2));
    let baseline = fd_count(pid);
    let addr = WEB.parse().expect("WEB");

    // 200 connections that send half a request and stall.
    let mut stalled: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut s = lab.connect_in("rtr", addr).expect("connect");
            write!(s, "GET /?n={i} HTTP/1.1\r\nHost: {WEB}\r\nX-Slow: ").expect("half request");
            s
        })
        .collect();
    // An event stream that is never read.
    let mut sse = lab.connect_in("rtr", addr).expect("connect sse");
    write!(sse, "GET /events HTTP/1.1\r\nHost: {WEB}\r\n\r\n").expect("sse request");
    // A page asked for and never read.
    let mut reader = lab.connect_in("rtr", addr).expect("connect page");
    write!(
        reader,
        "GET /api/flows?show=all&direction=all&per_page=500 HTTP/1.1\r\nHost: {WEB}\r\n\r\n"
    )
    .expect("page request");

    // The server answers others at once.
    for _ in 0..5 {
        answers_quickly(&lab, "/healthz", Duration::from_secs(1));
        answers_quickly(&lab, "/flows", Duration::from_secs(1));
    }
    assert!(
        fd_count(pid) >= baseline + 200,
        "the stalled connections are open: {} fds, {baseline} before",
        fd_count(pid)
    );
    // After the idle timeout (20 s) the half-sent requests are closed by the server.
    std::thread::sleep(Duration::from_secs(23));
    let mut closed = 0;
    for s in &mut stalled {
        s.set_read_timeout(Some(Duration::from_millis(200))).ok();
        let mut buf = [0u8; 512];
        // EOF, or a reset: either way the server let go.
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Ok(_) => closed += 1, // an error response, then close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(_) => {}
        }
    }
    assert_eq!(closed, 200, "half-sent requests closed by the server");
    // Only the live event stream may still hold a socket (it keeps writing).
    let now = fd_count(pid);
    assert!(
        now <= baseline + 3,
        "fds back to normal after the idle timeout: {now} now, {baseline} before"
    );
    assert!(
        metric_or_zero(&lab, "netmon_web_connections_timed_out_total") >= 200.0,
        "idle closes are counted"
    );
    answers_quickly(&lab, "/healthz", Duration::from_secs(1));
    drop(stalled);
    drop(sse);
    drop(reader);
    assert!(nm.is_running());
    let (status, _) = nm.sigterm();
    assert!(status.is_some_and(|s| s.success()), "clean stop");
}
