//! Ingest benchmark: synthetic conntrack batches through the real writer into a file
//! database, as the collector would send them at a high flow rate.
//!
//! Each flow is reported three times — new (with counters), updated, ended — which is
//! what a short TCP connection costs the writer. Batches are one tick's worth of changes.
//!
//! It measures the insert path, so nothing may be pruned: the size budget and the
//! per-device cap are lifted, and the run fails if the database does not end with
//! exactly one row per flow.
//!
//! Run: `cargo bench --bench ingest` (env `FLOWS`, `BATCH`, `DB_DIR` override the
//! defaults: 300 000 flows, 10 000 changes per batch, a temp dir under /var/tmp; `KEEP_DB=1`
//! keeps the database, e.g. as the 1 GB one `scripts/bench-ulogd startup` starts on).
//!
//! `--callgrind` (or env `CALLGRIND=1`): a fixed small run — 2 000 flows in batches of
//! 500, each batch its own transaction — whose instruction count under
//! `valgrind --tool=callgrind` is the writer's cost in a number that noisy, shared
//! machines reproduce (wall-clock rates there vary by ±25 %). The README's "Measured"
//! section has the command and the latest count.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use netmon::config::Config;
use netmon::event::{Event, FlowBatch, FlowChange};
use netmon::flow::{Counters, CtFlow, Network, PROTO_TCP, Tuple};
use netmon::store::writer::WriterThread;

/// The callgrind run: small enough for valgrind (≈ 50× slower) to finish in seconds,
/// large enough that start-up (schema, statements) is not most of the count.
const CALLGRIND_FLOWS: usize = 2_000;
const CALLGRIND_BATCH: usize = 500;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn flow(i: usize) -> CtFlow {
    let device: IpAddr = format!("10.77.{}.{}", (i / 200) % 4, 10 + i % 200)
        .parse()
        .unwrap();
    let remote: IpAddr = format!("198.51.{}.{}", (i / 250) % 100, i % 250)
        .parse()
        .unwrap();
    let sport = 1024 + (i % 60_000) as u16;
    CtFlow {
        ct_id: i as u32,
        family: 4,
        proto: PROTO_TCP,
        orig: Tuple {
            src: device,
            dst: remote,
            sport: Some(sport),
            dport: Some(443),
            icmp: None,
        },
        reply: Tuple {
            src: remote,
            dst: "203.0.113.1".parse().unwrap(),
            sport: Some(443),
            dport: Some(sport),
            icmp: None,
        },
        status: 0x19e,
        tcp_state: Some(3),
        mark: 0,
        zone: 0,
        counters: Counters {
            orig_bytes: 120,
            orig_packets: 2,
            reply_bytes: 60,
            reply_packets: 1,
        },
        kernel_start_ms: None,
        kernel_stop_ms: None,
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a smoke
    // test, where a small run proves the path without spending CI minutes.
    let full = std::env::args().any(|a| a == "--bench");
    let callgrind =
        std::env::args().any(|a| a == "--callgrind") || std::env::var_os("CALLGRIND").is_some();
    let (flows, batch) = if callgrind {
        (CALLGRIND_FLOWS, CALLGRIND_BATCH)
    } else {
        (
            env_or("FLOWS", if full { 300_000 } else { 20_000 }),
            env_or("BATCH", 10_000),
        )
    };
    let base = std::env::var("DB_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let dir =
        std::path::Path::new(&base).join(format!("netmon-bench-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating bench dir");
    let mut config = Config {
        db_path: dir.join("bench.db"),
        channel_capacity: 8,
        ..Config::default()
    };
    config.retention.max_db_mb = 1 << 20;
    config.retention.max_flows_per_device = 100_000_000;
    let network = Arc::new(RwLock::new(Network::new(
        vec!["10.77.0.0/16".parse().unwrap()],
        vec!["10.77.0.1".parse().unwrap(), "203.0.113.1".parse().unwrap()],
    )));
    let writer = WriterThread::start(&config, network, None, None).expect("starting writer");
    let handle = writer.handle.clone();
    let mut ticks = writer.ticks.clone();
    let now = netmon::time::now_ms();

    // Stage: new; then update (more bytes); then end. Each stage in `batch`-sized chunks.
    let started = Instant::now();
    let mut changes = 0usize;
    for stage in 0..3 {
        for chunk_start in (0..flows).step_by(batch) {
            let mut changed = Vec::with_capacity(batch);
            for i in chunk_start..(chunk_start + batch).min(flows) {
                let mut f = flow(i);
                if stage > 0 {
                    f.counters.orig_bytes += 500;
                    f.counters.reply_bytes += 20_000;
                    f.tcp_state = Some(if stage == 1 { 3 } else { 7 });
                }
                changed.push(FlowChange {
                    flow: f,
                    observed_ms: now + stage as i64 * 1000,
                    ended: stage == 2,
                });
            }
            changes += changed.len();
            let mut event = Event::Flows(FlowBatch {
                changed,
                dump_complete: None,
            });
            loop {
                match handle.try_send(event) {
                    Ok(()) => break,
                    Err(back) => {
                        event = back;
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                }
            }
            if callgrind {
                // Wait for the writer's commit: one transaction per batch, however the
                // two threads were scheduled, so the count is the same on every run.
                while !ticks.has_changed().unwrap_or(true) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                ticks.borrow_and_update();
            }
        }
    }
    drop(handle);
    writer.stop();
    let elapsed = started.elapsed().as_secs_f64();
    let size = std::fs::metadata(dir.join("bench.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    let (_, peak) = netmon::memory::rss_bytes();
    let conn = rusqlite::Connection::open(dir.join("bench.db")).expect("opening the bench db");
    let (rows, ended): (i64, i64) = conn
        .query_row("SELECT count(*), count(ended_at) FROM flows", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("counting flows");
    assert_eq!(
        (rows, ended),
        (flows as i64, flows as i64),
        "the database should hold every flow once, ended: anything else is not the insert path"
    );
    println!(
        "ingest: {flows} flows, {changes} changes in {elapsed:.2} s = {:.0} changes/s, {:.0} flows/s (new+update+end); \
         db {:.1} MB ({:.0} B/flow); peak RSS {:.1} MB",
        changes as f64 / elapsed,
        flows as f64 / elapsed,
        size as f64 / 1e6,
        size as f64 / flows as f64,
        peak as f64 / 1e6
    );
    if std::env::var_os("KEEP_DB").is_some() {
        println!("ingest: database kept: {}", dir.join("bench.db").display());
    } else {
        std::fs::remove_dir_all(&dir).ok();
    }
}
