//! TLS server name benchmark:
//!
//! 1. **parse**: real ClientHellos (the parser's fixtures: one segment, split over two
//!    segments, a post-quantum-sized hello) wrapped in IPv4/TCP packets through
//!    [`Hellos::packet`], what the NFQUEUE thread does with each queued packet after
//!    accepting it;
//! 2. **latency** (as root, with the lab's prerequisites): the time a LAN client takes
//!    for a whole TLS connection (handshake, one echoed line, close) to a wan server by
//!    address: without netmon, with netmon but `dns.tls_names = false`, and with netmon
//!    queueing each ClientHello — median and 99th percentile, what the queue adds over
//!    netmon without it, and how many packets per connection it queued.
//!
//! Run: `cargo bench --bench tls` (env `HELLOS`, `CONNECTIONS` override 300 000 packets
//! and 1 000 connections). Under `cargo test --all-targets` a small run proves the path.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use netmon::collect::tls_names::Hellos;

const HELLO: &[u8] = include_bytes!("../src/collect/fixtures/tls/hello-video.example.test.bin");
const BIG: &[u8] = include_bytes!("../src/collect/fixtures/tls/hello-big-cdn.example.test.bin");

/// IPv4/TCP from 10.77.x.y:`sport` to 203.0.113.87:443 carrying `payload` at `seq`.
fn packet(client: u16, sport: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let total = 40 + payload.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ];
    p.extend_from_slice(&[10, 77, (client >> 8) as u8, client as u8, 203, 0, 113, 87]);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&443u16.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    p.extend_from_slice(payload);
    p
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let hellos = common::env_or("HELLOS", if full { 300_000 } else { 3_000 });
    let connections = common::env_or("CONNECTIONS", if full { 1_000 } else { 30 });

    // A third of the connections send the big hello in two segments.
    let mut packets = Vec::with_capacity(hellos);
    for i in 0..hellos {
        let (client, sport) = ((i / 60_000) as u16, (i % 60_000) as u16 + 1024);
        if i % 3 == 2 {
            let cut = 1200.min(BIG.len() / 2);
            packets.push(packet(client, sport, 1, &BIG[..cut]));
            packets.push(packet(client, sport, 1 + cut as u32, &BIG[cut..]));
        } else {
            packets.push(packet(client, sport, 1, HELLO));
        }
    }
    let mut reader = Hellos::default();
    let mut named = 0;
    let started = Instant::now();
    for (i, p) in packets.iter().enumerate() {
        std::hint::black_box(reader.packet(p, i as i64));
        if reader.names.len() >= 1000 {
            named += reader.names.len();
            reader.names.clear();
        }
    }
    let parse_s = started.elapsed().as_secs_f64();
    named += reader.names.len();
    // What this measures is reading names: every hello must have given one.
    assert_eq!(named, hellos, "names read of {hellos} hellos");
    println!(
        "tls parse: {} packets ({hellos} hellos) in {parse_s:.3} s = {:.2} µs/packet",
        packets.len(),
        parse_s * 1e6 / packets.len() as f64
    );

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("tls latency: skipped (needs root for the lab)");
        return;
    }
    latency(connections);
}

/// Median/p99 of `connections` TLS connections from a LAN client, without and with
/// netmon.
fn latency(connections: usize) {
    let lab = common::Lab::up("tlsbench");
    let _server = lab.tls_server(&["203.0.113.87:443"]);
    let bench = |label: &str| -> Vec<u64> {
        let out = lab.client(
            "lan",
            &[
                "tlsbench",
                "203.0.113.87",
                "443",
                "--sni",
                "video.example.test",
                "--count",
                &connections.to_string(),
            ],
        );
        let us = common::sorted_us(&out);
        println!(
            "tls latency {label}: {connections} connections, median {} µs, p99 {} µs",
            common::percentile(&us, 0.5),
            common::percentile(&us, 0.99)
        );
        us
    };
    bench("without netmon");
    let nm = lab.start_netmon("[dns]\ntls_names = false\n");
    let without = bench("with netmon, tls_names = false");
    drop(nm);
    let nm = lab.start_netmon("");
    let (user0, system0) = thread_cpu_ms(nm.pid, "dns-capture");
    let with = bench("with netmon queueing ClientHellos");
    let (user1, system1) = thread_cpu_ms(nm.pid, "dns-capture");
    let metrics = lab.metrics();
    let queued: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("netmon_tls_hellos_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let named = common::metric(&metrics, "netmon_tls_hellos_total{result=\"name\"}").unwrap_or(0.0);
    // What this measures is the queue: every connection's hello must have been read.
    assert!(
        named >= connections as f64,
        "netmon read {named} names of {connections} connections"
    );
    drop(nm);
    let cpu = if user1 + system1 == user0 + system0 {
        "below the scheduler tick's resolution at this count".to_owned()
    } else {
        format!(
            "{:.1} µs in netmon, {:.1} µs in the kernel (its receive and verdict calls; the \
             verdict carries the packet on through the stack)",
            (user1 - user0) as f64 * 1000.0 / queued,
            (system1 - system0) as f64 * 1000.0 / queued
        )
    };
    println!(
        "tls queued: {queued} packets for {connections} connections ({:.2} per connection); \
         the queue thread's CPU per queued packet: {cpu}",
        queued / connections as f64
    );
    println!(
        "tls latency added by the queue: median {} µs, p99 {} µs",
        common::percentile(&with, 0.5) as i64 - common::percentile(&without, 0.5) as i64,
        common::percentile(&with, 0.99) as i64 - common::percentile(&without, 0.99) as i64
    );
}

/// User and system CPU time (ms, at the kernel's tick resolution) of the thread named
/// `name` of process `pid` (`/proc/PID/task/TID/stat`, fields 14 and 15).
fn thread_cpu_ms(pid: u32, name: &str) -> (u64, u64) {
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("netmon's threads");
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).expect("stat");
        // Fields after the command (which may hold spaces) start at the state, field 3.
        let rest = &stat[stat.rfind(')').expect("stat's command") + 2..];
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        return (f[11] * 1000 / tick, f[12] * 1000 / tick);
    }
    panic!("netmon has no thread {name}");
}
