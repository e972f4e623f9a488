//! The conntrack collector against the real kernel, each test in a network namespace of
//! its own (no router lab): a connection seen new and then ended, and a burst of
//! one-packet flows. Both need root; without it the first is skipped and the second
//! fails.
//!
//! The burst is a load test, run by hand as root:
//! `cargo test --release --test lab_conntrack live_burst -- --ignored --nocapture`.
//! `NETMON_BURST_RCVBUF` sets the netlink receive buffer (default 8 MiB). It prints what
//! arrived and what it cost (the collector's counters, its thread's CPU time) and
//! asserts that no flow ends twice.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use netmon::collect::conntrack::ConntrackCollector;
use netmon::config::Config;
use netmon::event::Event;
use netmon::event::WriterHandle;
use netmon::flow::PROTO_TCP;

/// A named namespace (`ip netns add`) with `lo` up, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("nmct-{}-{tag}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns { name }
    }

    /// Conntrack timeouts of `secs` for the states a burst leaves behind, so its flows
    /// end (and their DESTROYs arrive) within the test.
    fn short_ct_timeouts(&self, secs: u32) {
        for name in [
            "tcp_timeout_time_wait",
            "tcp_timeout_close",
            "tcp_timeout_close_wait",
            "tcp_timeout_fin_wait",
            "tcp_timeout_last_ack",
            "udp_timeout",
            "udp_timeout_stream",
            "icmp_timeout",
            "icmpv6_timeout",
        ] {
            let setting = format!("net.netfilter.nf_conntrack_{name}={secs}");
            run(&[
                "ip", "netns", "exec", &self.name, "sysctl", "-q", "-w", &setting,
            ]);
        }
    }

    /// Loads an nftables ruleset: conntrack only tracks in a namespace once some rule
    /// needs it.
    fn nft(&self, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ruleset.as_bytes())
            .expect("write the ruleset");
        assert!(
            child.wait().expect("nft").success(),
            "nft refused the ruleset"
        );
    }

    /// Moves the calling thread into the namespace: sockets it opens, and
    /// `/proc/sys/net` as it sees it, are the namespace's.
    fn enter_current_thread(&self) {
        let f = std::fs::File::open(format!("/run/netns/{}", self.name)).expect("netns file");
        // SAFETY: f is an open namespace fd; setns only affects this thread.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(args: &[&str]) {
    output(args);
}

/// Runs a command to completion and returns its stdout.
fn output(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("run a lab command");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Opens the collector inside a fresh namespace, makes a TCP connection there and
/// expects to see it as a new flow, then as ended.
#[test]
fn live_collector_sees_new_and_destroy_in_a_netns() {
    if !is_root() {
        eprintln!("skipped live_collector_sees_new_and_destroy_in_a_netns: needs root");
        return;
    }
    let ns = Netns::new("live");
    ns.short_ct_timeouts(1);
    // Conntrack only runs in a namespace where some rule needs it.
    ns.nft("table inet netmon_t {\n chain out {\n type filter hook output priority 0;\n ct state new counter\n }\n}\n");
    let config = Config {
        tick_ms: 100,
        dump_interval_s: 1,
        netlink_rcvbuf_bytes: 1 << 20,
        ..Config::default()
    };
    let (tx, rx) = sync_channel(1024);
    let w = WriterHandle::new(tx, Arc::new(AtomicUsize::new(0)));
    let shutdown = Arc::new(AtomicBool::new(false));
    let stop = shutdown.clone();
    let name = ns.name.clone();
    let (collector, port) = std::thread::spawn(move || {
        let inside = Netns { name };
        inside.enter_current_thread();
        std::mem::forget(inside); // owned by the test; must not be deleted here
        let collector =
            ConntrackCollector::start(&config, w, None, stop, Default::default()).expect("start");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("addr").port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(b"ping").expect("write");
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).expect("read");
        server.write_all(b"pong").expect("write");
        client.read_exact(&mut buf).expect("read");
        (collector, port)
    })
    .join()
    .expect("namespace thread");

    let (mut saw_new, mut saw_end, mut saw_dump_complete) = (None, None, false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while saw_end.is_none() && Instant::now() < deadline {
        let Ok(Event::Flows(batch)) = rx.recv_timeout(Duration::from_millis(500)) else {
            continue;
        };
        saw_dump_complete |= batch.dump_complete.is_some();
        for c in batch.changed {
            if c.flow.proto == PROTO_TCP && c.flow.orig.dport == Some(port) {
                // The first report of the flow: live, or already ended when its close
                // was held back until the DESTROY came.
                saw_new.get_or_insert(c.clone());
                if c.ended {
                    saw_end = Some(c);
                }
            }
        }
    }
    shutdown.store(true, Ordering::Relaxed);
    collector.join();
    let acct = output(&[
        "ip",
        "netns",
        "exec",
        &ns.name,
        "sysctl",
        "-n",
        "net.netfilter.nf_conntrack_acct",
    ]);

    let new = saw_new.expect("NEW seen");
    assert_eq!(new.flow.orig.src, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let end = saw_end.expect("DESTROY seen");
    assert_eq!(end.flow.ct_id, new.flow.ct_id);
    assert!(saw_dump_complete, "start-up dump completed");
    assert_eq!(
        acct.trim(),
        "1",
        "start() enabled accounting in the namespace"
    );
    assert!(
        end.flow.counters.orig_packets >= 3,
        "{:?}",
        end.flow.counters
    );
    assert!(end.flow.kernel_stop_ms.is_some());
}

/// CPU seconds (user + system) used so far by this process's thread named `name`.
fn thread_cpu(name: &str) -> f64 {
    let ticks = 100.0; // USER_HZ
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in dir.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let num = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        return (num(11) + num(12)) / ticks;
    }
    0.0
}

#[test]
#[ignore = "load test; run by hand as root with --release --nocapture"]
fn live_burst() {
    assert!(is_root(), "needs root");
    // The collector's counters, printed at the end.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("metrics recorder");
    let ns = Netns::new("burst");
    ns.short_ct_timeouts(1);
    ns.nft("table inet netmon_t {\n chain out {\n type filter hook output priority 0;\n ct state new counter\n }\n}\n");
    let rcvbuf = std::env::var("NETMON_BURST_RCVBUF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8 << 20);
    let config = Config {
        netlink_rcvbuf_bytes: rcvbuf,
        max_tracked_flows: 1 << 20,
        ..Config::default()
    };
    let (tx, rx) = sync_channel(4096);
    let w = WriterHandle::new(tx, Arc::new(AtomicUsize::new(0)));
    let shutdown = Arc::new(AtomicBool::new(false));
    let stop = shutdown.clone();
    let name = ns.name.clone();
    let seconds = 4;
    let (collector, sent, cpu) = std::thread::spawn(move || {
        let inside = Netns { name };
        inside.enter_current_thread();
        std::mem::forget(inside); // owned by the test; must not be deleted here
        let collector =
            ConntrackCollector::start(&config, w, None, stop, Default::default()).expect("start");
        let sink = std::net::UdpSocket::bind("0.0.0.0:9999").expect("sink");
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").expect("sender");
        let cpu0 = thread_cpu("netmon-ct");
        let start = Instant::now();
        let mut sent = 0u32;
        // Each destination 127.a.b.c is a new flow; the sink's buffer overflows,
        // which drops packets only after conntrack confirmed them.
        while start.elapsed() < Duration::from_secs(seconds) {
            for _ in 0..1000 {
                sent += 1;
                let ip = Ipv4Addr::from(0x7f00_0000 | (sent & 0x00ff_ffff));
                let _ = tx.send_to(b"x", (ip, 9999));
            }
        }
        drop(sink);
        (collector, sent, cpu0)
    })
    .join()
    .expect("namespace thread");
    // Let the flows expire and their DESTROYs arrive (GC, then the periodic dump).
    let mut ended = 0u64;
    let mut new = 0u64;
    let mut ends: HashMap<i64, u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < deadline && ended < u64::from(sent) {
        if let Ok(Event::Flows(b)) = rx.recv_timeout(Duration::from_millis(200)) {
            for c in b.changed {
                if c.ended {
                    ended += 1;
                    *ends.entry(c.flow.ident()).or_default() += 1;
                } else {
                    new += 1;
                }
            }
        }
    }
    let cpu = thread_cpu("netmon-ct") - cpu;
    shutdown.store(true, Ordering::Relaxed);
    collector.join();
    let counters: Vec<String> = recorder
        .render()
        .lines()
        .filter(|l| l.contains("conntrack") && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let twice = ends.values().filter(|n| **n > 1).count();
    println!(
        "burst: sent {sent} one-packet flows in {seconds} s ({:.0}/s); collector: {}; \
         writer got {new} live + {ended} ended changes ({} distinct ended, {twice} ended \
         more than once); collector thread CPU {cpu:.2} s",
        f64::from(sent) / seconds as f64,
        counters.join(", "),
        ends.len()
    );
    assert_eq!(twice, 0, "a flow must end once");
}
