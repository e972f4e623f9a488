//! DNS benchmark:
//!
//! 1. **parse**: realistic response packets (IPv4/UDP, A answers, a third with a CNAME
//!    chain) through `parse_packet`, the NFQUEUE collector's parser;
//! 2. **store**: the parsed observations through the real writer into a file database
//!    (queries, answers, names, per-device minutes);
//! 3. **latency** (as root, with the lab's prerequisites): the time a LAN client waits
//!    for a cached answer from the router's dnsmasq without netmon, then with netmon
//!    queueing every answer — median and 99th percentile, and what netmon adds.
//!
//! Run: `cargo bench --bench dns` (env `ANSWERS`, `QUERIES` override 200 000 answers
//! and 5 000 queries). Under `cargo test --all-targets` a small run proves the path.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use netmon::collect::dns_packets::parse_packet;
use netmon::config::Config;
use netmon::event::Event;
use netmon::flow::Network;
use netmon::store::writer::WriterThread;
use simple_dns::rdata::{A, CNAME, RData};
use simple_dns::{CLASS, Name, Packet, PacketFlag, Question, ResourceRecord};

/// Response `i`: client 10.77.x.y asks `host{i}.site{i%500}.test`; every third answer
/// goes through a CNAME.
fn packet(i: usize) -> Vec<u8> {
    let qname = format!("host{i}.site{}.test", i % 500);
    let target = format!("edge{}.cdn.test", i % 97);
    let mut p = Packet::new_reply(i as u16);
    p.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
    p.questions.push(Question::new(
        Name::new_unchecked(&qname),
        simple_dns::TYPE::A.into(),
        CLASS::IN.into(),
        false,
    ));
    let addr = u32::from(Ipv4Addr::new(
        198,
        51,
        (i / 250 % 100) as u8,
        (i % 250) as u8,
    ));
    let owner = if i.is_multiple_of(3) {
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked(&qname),
            CLASS::IN,
            300,
            RData::CNAME(CNAME(Name::new_unchecked(&target))),
        ));
        target.as_str()
    } else {
        qname.as_str()
    };
    p.answers.push(ResourceRecord::new(
        Name::new_unchecked(owner),
        CLASS::IN,
        300,
        RData::A(A { address: addr }),
    ));
    let msg = p.build_bytes_vec_compressed().expect("building a response");
    let client = [10, 77, (i / 200 % 4) as u8, (10 + i % 200) as u8];
    let total = 28 + msg.len();
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        17,
        0,
        0,
    ];
    ip.extend_from_slice(&[10, 77, 0, 1]);
    ip.extend_from_slice(&client);
    let ulen = 8 + msg.len();
    ip.extend_from_slice(&[0, 53, 0x9c, 0x40, (ulen >> 8) as u8, ulen as u8, 0, 0]);
    ip.extend_from_slice(&msg);
    ip
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let answers = common::env_or("ANSWERS", if full { 200_000 } else { 10_000 });
    let queries = common::env_or("QUERIES", if full { 5_000 } else { 300 });

    let packets: Vec<Vec<u8>> = (0..answers).map(packet).collect();
    let started = Instant::now();
    let mut observations = Vec::with_capacity(answers);
    for p in &packets {
        observations.extend(parse_packet(p, 1_700_000_000_000).expect("parsing a response"));
    }
    let parse_s = started.elapsed().as_secs_f64();
    assert_eq!(observations.len(), answers);

    let dir = std::env::temp_dir().join(format!("netmon-bench-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating bench dir");
    let config = Config {
        db_path: dir.join("bench.db"),
        channel_capacity: 8,
        ..Config::default()
    };
    let network = Arc::new(RwLock::new(Network::new(
        vec!["10.77.0.0/16".parse().unwrap()],
        vec![IpAddr::from([10, 77, 0, 1])],
    )));
    let writer = WriterThread::start(&config, network, None, None).expect("starting writer");
    let handle = writer.handle.clone();
    let started = Instant::now();
    let mut it = observations.into_iter().peekable();
    while it.peek().is_some() {
        let mut event = Event::Dns(it.by_ref().take(1000).collect());
        loop {
            match handle.try_send(event) {
                Ok(()) => break,
                Err(back) => {
                    event = back;
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
            }
        }
    }
    drop(handle);
    writer.stop();
    let store_s = started.elapsed().as_secs_f64();
    let db = rusqlite::Connection::open(dir.join("bench.db")).expect("open bench db");
    let stored: i64 = db
        .query_row("SELECT count(*) FROM dns_queries", [], |r| r.get(0))
        .expect("count");
    assert_eq!(stored as usize, answers, "every answer stored");
    let size = std::fs::metadata(dir.join("bench.db")).map_or(0, |m| m.len());
    std::fs::remove_dir_all(&dir).ok();
    println!(
        "dns parse: {answers} responses in {parse_s:.3} s = {:.0} responses/s",
        answers as f64 / parse_s
    );
    println!(
        "dns store: {answers} answers in {store_s:.2} s = {:.0} answers/s; db {:.1} MB ({:.0} B/answer)",
        answers as f64 / store_s,
        size as f64 / 1e6,
        size as f64 / answers as f64
    );

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("dns latency: skipped (needs root for the lab)");
        return;
    }
    latency(queries);
}

/// Median/p99 of `queries` cached lookups from a LAN client, without and with netmon.
fn latency(queries: usize) {
    let lab = common::Lab::up("dnsbench");
    let bench = |label: &str| -> Vec<u64> {
        // Warm dnsmasq's cache, then measure.
        lab.client("lan", &["dns", common::RTR_LAN4, "shop.example.test"]);
        let out = lab.client(
            "lan",
            &[
                "dnsbench",
                common::RTR_LAN4,
                "shop.example.test",
                "--count",
                &queries.to_string(),
            ],
        );
        let us = common::sorted_us(&out);
        println!(
            "dns latency {label}: {queries} queries, median {} µs, p99 {} µs",
            common::percentile(&us, 0.5),
            common::percentile(&us, 0.99)
        );
        us
    };
    let without = bench("without netmon");
    let nm = lab.start_netmon("");
    let with = bench("with netmon (NFQUEUE)");
    let parsed = common::metric(
        &lab.metrics(),
        "netmon_dns_packets_total{result=\"parsed\"}",
    )
    .unwrap_or(0.0);
    assert!(
        parsed >= queries as f64,
        "netmon saw {parsed} of {queries} answers"
    );
    drop(nm);
    println!(
        "dns latency added by netmon: median {} µs, p99 {} µs",
        common::percentile(&with, 0.5) as i64 - common::percentile(&without, 0.5) as i64,
        common::percentile(&with, 0.99) as i64 - common::percentile(&without, 0.99) as i64
    );
}
