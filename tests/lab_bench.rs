//! CI smoke version of the side-by-side benchmark (the full one is
//! `scripts/bench-ulogd`, with ulogd2 next to netmon): 10 s of one-packet UDP flows at
//! 5 000 new flows/s from the LAN client through the lab router, netmon alone. At least
//! 99.9 % of the flows the router counted must be stored, and as many marked ended once
//! their conntrack entries expire, so a regression in completeness fails CI.
//!
//! Runtime ≈ 25 s: lab up (≈ 3 s), 10 s of load, the lab's 5 s UDP timeout plus
//! conntrack's garbage collection for the entries to end.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Flows per second and seconds of load.
const RATE: u64 = 5_000;
const SECONDS: u64 = 10;
/// Destination ports of the flood: every (source port, destination port) pair once, so
/// every datagram is a new conntrack entry (see netmon-loadgen's `udp` mode). The wan
/// has no listener there; the router forwards them all the same.
const PORTS: (u16, u16) = (10_000, 59_999);

#[test]
fn udp_flood_5k_per_s_for_10_s_is_stored_completely() {
    let lab = Lab::up("bench");
    // Completeness of ingest is what is measured, so nothing may be pruned on purpose:
    // 50 000 flows (≈ 14 MiB of rows, plus the WAL of 5 000-flow ticks) is more than the
    // default 32 MiB budget keeps with its headroom, and at the per-device cap (as in
    // `scripts/bench-ulogd`, which gives ulogd2 an unbounded database too).
    let nm = lab.start_netmon("[retention]\nmax_db_mb = 4096\nmax_flows_per_device = 100000000");
    let before = lab.nft_counter("new_udp").0;
    let report = lab.loadgen(
        "lan",
        &[
            "--mode",
            "udp",
            "--target",
            &format!("{WAN4}:{LOADGEN_UDP_PORT}"),
            "--ports",
            &format!("{}-{}", PORTS.0, PORTS.1),
            "--rate",
            &RATE.to_string(),
            "--duration",
            &SECONDS.to_string(),
        ],
    );
    let created = lab.nft_counter("new_udp").0 - before;
    let started = report["started"].as_u64().unwrap_or(0);
    eprintln!("bench smoke: loadgen {report}; router counted {created} new UDP connections");
    assert!(
        report.get("warning").is_none(),
        "loadgen reused flows: {report}"
    );
    // The point is completeness at a known rate: a machine too busy to produce it would
    // make the test pass on less load than it claims.
    assert!(
        created >= RATE * SECONDS * 9 / 10,
        "the lab produced only {created} new UDP flows in {SECONDS} s (want ≈ {}): {report}",
        RATE * SECONDS
    );

    let need = (created as f64 * 0.999).ceil() as i64;
    let flood = format!(
        "SELECT count(*) FROM flows WHERE proto = 17 AND dst_port BETWEEN {} AND {}",
        PORTS.0, PORTS.1
    );
    let mut stored = 0;
    wait_until(Duration::from_secs(10), || {
        stored = lab.db_i64(&flood);
        stored >= need
    });
    let metrics = lab.metrics();
    let overruns = metric(&metrics, "netmon_conntrack_overruns_total");
    let resyncs = metric(&metrics, "netmon_conntrack_resync_dumps_total");
    let pruned = metrics
        .lines()
        .filter(|l| {
            l.starts_with("netmon_storage_pruned_rows_total{") && l.contains("table=\"flows\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b);
    eprintln!(
        "bench smoke: stored {stored} of {created} ({:.3} %); overruns {overruns:?}, \
         resync dumps {resyncs:?}, flow rows pruned {pruned}",
        100.0 * stored as f64 / created.max(1) as f64
    );
    assert_eq!(
        pruned, 0.0,
        "the storage budget or a cap pruned flows: the count would not measure ingest"
    );
    assert!(
        stored >= need,
        "netmon stored {stored} of the {created} UDP flows the router forwarded \
         (loadgen started {started}): need ≥ 99.9 % ({need})"
    );
    assert!(
        stored <= created as i64,
        "netmon stored {stored} flows but the router saw only {created} new connections"
    );

    // The entries expire 5 s after their one packet (LAB_CT_TIMEOUTS=short); every
    // DESTROY must reach the database as an end.
    let waited = Instant::now();
    let mut ended = 0;
    wait_until(Duration::from_secs(20), || {
        ended = lab.db_i64(&format!("{flood} AND ended_at IS NOT NULL"));
        ended >= need
    });
    eprintln!(
        "bench smoke: {ended} ended after {:?} more; netmon peak RSS {} KiB",
        waited.elapsed(),
        nm.peak_rss() / 1024
    );
    assert!(
        ended >= need,
        "only {ended} of the {stored} stored flows were marked ended within 20 s of the \
         flood (need {need}): DESTROY events lost?"
    );
}
