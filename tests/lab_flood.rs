//! Flood: one lab client resolves 200 000 random names and opens
//! 200 000 flows; the database stays under its budget, the other device's data survives,
//! and the UI still answers in under a second (`store::budget`).
//!
//! The second client (`lan2`) first makes a few hundred flows and a few dozen DNS
//! queries. Then the first client floods at [`RATE`]/s — random names under `flood.lab`
//! (the lab resolver answers every one with the wan server's address; netmon-loadgen's
//! `dns` mode) and one-packet UDP flows to that server (`udp` mode) at once — against a
//! [`BUDGET_MIB`] MiB budget with caps the flood exceeds many times over. Database file
//! plus WAL is sampled every 250 ms throughout.
//!
//! Runtime ≈ 1 min: lab up, ≈ 35 s of flood, the lab's 5 s UDP timeout, a settle.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The flood: names resolved and flows opened, each at `RATE` per second.
const FLOOD: u64 = 200_000;
const RATE: u64 = 6_000;
/// The test's storage budget and caps (small, so the flood exceeds them many times).
const BUDGET_MIB: u64 = 16;
const FLOWS_PER_DEVICE: i64 = 30_000;
const QUERIES_PER_DEVICE: i64 = 20_000;
const QUERIES_PER_DOMAIN: i64 = 5_000;
/// `store::budget::NAMES_PER_HOST`.
const NAMES_PER_HOST: i64 = 1_000;
/// What the other device does before the flood.
const OTHER_FLOWS: u64 = 300;
const OTHER_QUERIES: u64 = 40;
const PAGES: [&str; 8] = [
    "/flows",
    "/fragment/flows",
    "/dns",
    "/devices",
    "/hosts",
    "/router",
    "/api/flows",
    "/api/dns",
];

fn file_len(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn wal_len(lab: &Lab) -> u64 {
    let mut wal = lab.db_path().into_os_string();
    wal.push("-wal");
    file_len(std::path::Path::new(&wal))
}

/// Database file + WAL; the largest seen, as (total, WAL), is kept in `peak`.
fn on_disk(lab: &Lab, peak: &mut (u64, u64)) -> u64 {
    let (file, wal) = (file_len(&lab.db_path()), wal_len(lab));
    if file + wal > peak.0 {
        *peak = (file + wal, wal);
    }
    file + wal
}

/// Each page's status and time to answer, slowest first.
fn time_pages(lab: &Lab) -> Vec<(&'static str, u16, Duration)> {
    let mut out: Vec<_> = PAGES
        .iter()
        .map(|p| {
            let t = Instant::now();
            let status = lab.http(p).map(|(s, _)| s).unwrap_or(0);
            (*p, status, t.elapsed())
        })
        .collect();
    out.sort_by_key(|(_, _, d)| std::cmp::Reverse(*d));
    out
}

fn assert_fast(when: &str, timings: &[(&str, u16, Duration)]) {
    eprintln!("flood: pages {when}: {timings:?}");
    for (page, status, took) in timings {
        assert_eq!(*status, 200, "{page} {when}: status {status}");
        assert!(
            *took < Duration::from_secs(1),
            "{page} took {took:?} {when} (want < 1 s)"
        );
    }
}

#[test]
fn a_flooding_client_stays_within_budget_and_others_survive() {
    let lab = Lab::up_with("flood", 2);
    let nm = lab.start_netmon(&format!(
        "[retention]\nmax_db_mb = {BUDGET_MIB}\nmax_flows_per_device = {FLOWS_PER_DEVICE}\n\
         max_dns_queries_per_device = {QUERIES_PER_DEVICE}\n\
         max_dns_queries_per_domain = {QUERIES_PER_DOMAIN}\n"
    ));
    let budget = BUDGET_MIB << 20;

    // --- the other device: flows and DNS before the flood -------------------------------
    let other = lab.loadgen(
        "lan2",
        &[
            "--mode",
            "tcp",
            "--target",
            &format!("{WAN4}:{BURST_PORT}"),
            "--rate",
            "300",
            "--count",
            &OTHER_FLOWS.to_string(),
            "--duration",
            "5",
            "--sports",
            "40000-40999",
            "--threads",
            "1",
        ],
    );
    let other_dns = lab.loadgen(
        "lan2",
        &[
            "--mode",
            "dns",
            "--target",
            &format!("{RTR_LAN4}:53"),
            "--domain",
            "other.wan.lab",
            "--rate",
            "100",
            "--count",
            &OTHER_QUERIES.to_string(),
            "--duration",
            "5",
            "--threads",
            "1",
        ],
    );
    eprintln!("flood: other device: {other}; {other_dns}");
    let other_flows_sql =
        format!("SELECT count(*) FROM flows WHERE src_ip = netmon_ip_blob('{CLIENT2_4}')");
    let other_dns_sql =
        format!("SELECT count(*) FROM dns_queries WHERE client = netmon_ip_blob('{CLIENT2_4}')");
    assert!(
        wait_until(Duration::from_secs(20), || {
            lab.db_i64(&other_flows_sql) >= OTHER_FLOWS as i64
                && lab.db_i64(&other_dns_sql) >= OTHER_QUERIES as i64
        }),
        "the other device's {OTHER_FLOWS} flows and {OTHER_QUERIES} queries were not stored: \
         {} flows, {} queries",
        lab.db_i64(&other_flows_sql),
        lab.db_i64(&other_dns_sql)
    );
    let other_flows_before = lab.db_i64(&other_flows_sql);
    let other_dns_before = lab.db_i64(&other_dns_sql);
    let other_names_sql = format!(
        "SELECT count(*) FROM dns_queries q JOIN dns_names n ON n.id = q.qname_id \
         WHERE q.client = netmon_ip_blob('{CLIENT2_4}')"
    );
    let m0 = lab.metrics();

    // --- the flood ----------------------------------------------------------------------
    let secs = (FLOOD as f64 / RATE as f64 + 5.0).to_string();
    let started = Instant::now();
    let dns_flood = lab.spawn(
        "lan",
        &[
            LOADGEN,
            "run",
            "--mode",
            "dns",
            "--target",
            &format!("{RTR_LAN4}:53"),
            "--domain",
            "flood.lab",
            "--rate",
            &RATE.to_string(),
            "--count",
            &FLOOD.to_string(),
            "--duration",
            &secs,
            "--threads",
            "2",
        ],
    );
    let flow_flood = lab.spawn(
        "lan",
        &[
            LOADGEN,
            "run",
            "--mode",
            "udp",
            "--target",
            &format!("{WAN4}:{LOADGEN_UDP_PORT}"),
            "--ports",
            "10000-59999",
            "--rate",
            &RATE.to_string(),
            "--count",
            &FLOOD.to_string(),
            "--duration",
            &secs,
        ],
    );
    let mut peak = (0u64, 0u64);
    let mut during = None;
    let mut dns_flood = Some(dns_flood);
    let mut flow_flood = Some(flow_flood);
    let mut reports = Vec::new();
    let mut last_print = Instant::now();
    while dns_flood.is_some() || flow_flood.is_some() {
        let disk = on_disk(&lab, &mut peak);
        if last_print.elapsed() >= Duration::from_secs(3) {
            last_print = Instant::now();
            eprintln!(
                "flood: {:5.1} s: {} KiB on disk (WAL {} KiB; peak {} KiB, WAL {} KiB then)",
                started.elapsed().as_secs_f64(),
                disk / 1024,
                wal_len(&lab) / 1024,
                peak.0 / 1024,
                peak.1 / 1024
            );
        }
        if during.is_none() && started.elapsed() > Duration::from_secs(15) {
            during = Some(time_pages(&lab));
        }
        for child in [&mut dns_flood, &mut flow_flood] {
            if let Some(c) = child
                && c.try_wait().ok().flatten().is_some()
            {
                let out = child
                    .take()
                    .expect("some")
                    .wait_with_output()
                    .expect("loadgen");
                reports.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let flood_s = started.elapsed();
    eprintln!("flood: loadgen after {flood_s:?}: {reports:?}");
    let report = |mode: &str| -> serde_json::Value {
        reports
            .iter()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(r).ok())
            .find(|r| r["mode"] == mode)
            .unwrap_or_else(|| panic!("no {mode} loadgen report in {reports:?}"))
    };
    let (dns_report, udp_report) = (report("dns"), report("udp"));
    let answered = dns_report["completed"].as_u64().unwrap_or(0);
    let opened = udp_report["started"].as_u64().unwrap_or(0);
    assert!(
        answered >= FLOOD * 9 / 10 && opened >= FLOOD * 9 / 10,
        "the lab did not produce the flood: {answered} names answered, {opened} flows \
         opened (want ≈ {FLOOD} each)"
    );

    // --- after: let the flows end (5 s UDP timeout) and the budget catch up -------------
    let flood_flows_sql =
        format!("SELECT count(*) FROM flows WHERE src_ip = netmon_ip_blob('{CLIENT4}')");
    let flood_domain_sql = "SELECT count(*) FROM dns_queries q JOIN dns_names d \
                            ON d.id = q.domain_id WHERE d.name = 'flood.lab'";
    let settled = wait_until(Duration::from_secs(30), || {
        on_disk(&lab, &mut peak);
        lab.db_i64(&flood_flows_sql) <= FLOWS_PER_DEVICE
            && lab.db_i64(flood_domain_sql) <= QUERIES_PER_DOMAIN
            && lab.db_i64(&format!("{flood_flows_sql} AND ended_at IS NULL")) == 0
    });
    std::thread::sleep(Duration::from_secs(3));
    on_disk(&lab, &mut peak);
    let after = time_pages(&lab);
    let m1 = lab.metrics();
    let used = lab.db_i64(
        "SELECT (p.page_count - f.freelist_count) * s.page_size \
         FROM pragma_page_count() p, pragma_freelist_count() f, pragma_page_size() s",
    ) as u64;
    let flood_flows = lab.db_i64(&flood_flows_sql);
    let flood_domain = lab.db_i64(flood_domain_sql);
    let names = lab.db_i64("SELECT count(*) FROM dns_names");
    let host_links = lab.db_i64(
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM remote_host_domains \
         GROUP BY remote_host_id)",
    );
    let delta =
        |name: &str| metric_sum(&m1, name).unwrap_or(0.0) - metric_sum(&m0, name).unwrap_or(0.0);
    let stored_flows = delta("netmon_flows_stored_total");
    let stored_queries = delta("netmon_dns_queries_stored_total");
    let pruned = delta("netmon_storage_pruned_rows_total");
    // The rollups still count the whole flood: every stored flow and query, pruned or not.
    let rolled_flows = lab.db_i64(&format!(
        "SELECT coalesce(sum(m.flows_new), 0) FROM device_minutes m JOIN device_addrs a \
         ON a.device_id = m.device_id WHERE a.ip = '{CLIENT4}'"
    ));
    let rolled_queries = lab.db_i64(&format!(
        "SELECT coalesce(sum(m.queries), 0) FROM dns_device_minutes m JOIN device_addrs a \
         ON a.device_id = m.device_id WHERE a.ip = '{CLIENT4}'"
    ));
    eprintln!(
        "flood: {answered} names answered, {opened} flows opened in {flood_s:?}; netmon \
         stored {stored_flows} flows and {stored_queries} queries, pruned {pruned} rows; \
         after: {flood_flows} flood flows kept (cap {FLOWS_PER_DEVICE}), {flood_domain} \
         flood.lab queries (cap {QUERIES_PER_DOMAIN}), {names} names, ≤ {host_links} names \
         per host; rollups count {rolled_flows} flows, {rolled_queries} queries of the \
         flooding device; DB peak {} KiB on disk (file + WAL; WAL {} KiB then), now {} KiB, {} KiB in use, \
         budget {} KiB; netmon peak RSS {} KiB",
        peak.0 / 1024,
        peak.1 / 1024,
        on_disk(&lab, &mut peak) / 1024,
        used / 1024,
        budget / 1024,
        nm.peak_rss() / 1024
    );
    if let Some(during) = &during {
        assert_fast("during the flood", during);
    }
    assert_fast("after the flood", &after);

    assert!(
        settled,
        "the caps were not reached within 30 s of the flood's end"
    );
    assert!(
        peak.0 <= budget,
        "the database reached {} KiB on disk (file + WAL), over its {BUDGET_MIB} MiB budget",
        peak.0 / 1024
    );
    assert!(used <= budget, "{} KiB in use", used / 1024);
    assert_eq!(
        lab.db_i64(&other_flows_sql),
        other_flows_before,
        "the other device lost flows"
    );
    assert_eq!(
        lab.db_i64(&other_dns_sql),
        other_dns_before,
        "the other device lost DNS queries"
    );
    assert_eq!(
        lab.db_i64(&other_names_sql),
        other_dns_before,
        "the other device's queries lost their names"
    );
    assert!(flood_flows <= FLOWS_PER_DEVICE);
    assert!(flood_domain <= QUERIES_PER_DOMAIN);
    assert!(host_links <= NAMES_PER_HOST);
    // Names are collected once nothing refers to them: what is left is what the kept
    // queries, flows and host links name (plus the other device's and the domains).
    assert!(
        names <= QUERIES_PER_DOMAIN + FLOWS_PER_DEVICE + NAMES_PER_HOST + 1_000,
        "{names} DNS names kept"
    );
    assert!(
        stored_flows >= opened as f64 * 0.9 && stored_queries >= answered as f64 * 0.9,
        "netmon stored only {stored_flows} flows and {stored_queries} queries of the flood"
    );
    assert!(
        rolled_flows as f64 >= stored_flows - OTHER_FLOWS as f64 - 100.0
            && rolled_queries as f64 >= stored_queries - OTHER_QUERIES as f64 - 100.0,
        "the rollups lost part of the flood: {rolled_flows} flows, {rolled_queries} queries"
    );
    assert!(
        pruned > 0.0
            && metric_sum(&m1, "netmon_storage_pruned_rows_total").is_some_and(|v| v > 0.0),
        "no pruning counted"
    );
    let router = lab.http_get("/router");
    assert!(
        router.contains("storage-budget") && router.contains("Flood protection pruned"),
        "the router page does not show the pruning"
    );
}
