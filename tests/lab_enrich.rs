//! Enrichment of remote hosts: the lab's authoritative
//! DNS serves a PTR for 203.0.113.84 (shop.example.test) and none for .88; netmon asks
//! the router's dnsmasq (which forwards the wan's reverse zone) with its own client,
//! shows the name and "none", and does not ask about .88 again before the negative TTL
//! — not on later passes and not after a restart. AS numbers come from a small CSV.

mod common;

use std::time::Duration;

use common::*;

/// Queries for `qname` the router's dnsmasq received (its log has one `query[PTR]`
/// line per query, cached or not).
fn ptr_queries(lab: &Lab, qname: &str) -> usize {
    let log = std::fs::read_to_string(lab.dir.join("dnsmasq-queries.log")).unwrap_or_default();
    let needle = format!("query[PTR] {qname} ");
    log.lines().filter(|l| l.contains(&needle)).count()
}

/// `rdns` of the host `ip` in `/api/hosts`, once it has one.
fn api_rdns(lab: &Lab, ip: &str) -> Option<String> {
    let v = lab.api(&format!("/api/hosts?q={ip}"));
    v["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["ip"] == ip)
        .and_then(|h| h["rdns"].as_str().map(str::to_owned))
}

fn db_host(lab: &Lab, ip: &str) -> (Option<String>, Option<i64>, Option<String>) {
    let db = lab.db();
    db.busy_timeout(Duration::from_secs(5)).ok();
    db.query_row(
        "SELECT rdns, asn, org FROM remote_hosts WHERE ip = ?1",
        [ip],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap_or((None, None, None))
}

#[test]
fn remote_hosts_get_reverse_dns_and_as() {
    let lab = Lab::up("enrich");
    let csv = lab.dir.join("asn.csv");
    std::fs::write(
        &csv,
        "# a small ip-location-db style table\n\
         203.0.113.0,203.0.113.85,64500,\"Lab Transit, Inc.\"\n\
         203.0.113.86,203.0.113.255,64501,Lab Hosting\n\
         2001:db8:77::,2001:db8:77::ffff,64502,Lab Six\n",
    )
    .unwrap();
    let extra = format!(
        "[enrich]\nresolver = \"10.77.0.1\"\nasn_db = \"{}\"\n",
        csv.display()
    );
    let mut netmon = lab.start_netmon(&extra);
    lab.download("lan", 47801, "http://203.0.113.84/small.bin");
    lab.download("lan", 47802, "http://203.0.113.88/small.bin");

    let named = wait_for(Duration::from_secs(30), || {
        let a = api_rdns(&lab, "203.0.113.84")?;
        let b = api_rdns(&lab, "203.0.113.88")?;
        Some((a, b))
    });
    let Some((shop, none)) = named else {
        panic!(
            "no rDNS for both hosts within 30 s: .84 {:?}, .88 {:?}; netmon log:\n{}",
            db_host(&lab, "203.0.113.84"),
            db_host(&lab, "203.0.113.88"),
            netmon.log_tail(40)
        );
    };
    assert_eq!(shop, "shop.example.test");
    assert_eq!(none, "none");
    assert_eq!(
        db_host(&lab, "203.0.113.84"),
        (
            Some("shop.example.test".into()),
            Some(64500),
            Some("Lab Transit, Inc.".into())
        )
    );
    assert_eq!(
        db_host(&lab, "203.0.113.88"),
        (Some(String::new()), Some(64501), Some("Lab Hosting".into()))
    );
    let hosts = lab.api("/api/hosts?per_page=500");
    let api_host = |ip: &str| {
        hosts["hosts"]
            .as_array()
            .and_then(|a| a.iter().find(|h| h["ip"] == ip).cloned())
            .unwrap_or_else(|| panic!("{ip} not in /api/hosts: {hosts}"))
    };
    assert_eq!(api_host("203.0.113.84")["asn"], 64500);
    assert_eq!(api_host("203.0.113.88")["org"], "Lab Hosting");
    let page = lab.http_get("/hosts");
    assert!(
        page.contains("shop.example.test") && page.contains("AS64501 Lab Hosting"),
        "hosts page lacks rDNS/AS:\n{}",
        truncate(&page, 3000)
    );

    // Negative caching: .88 was asked once; several passes later, still once.
    let q88 = "88.113.0.203.in-addr.arpa";
    assert_eq!(ptr_queries(&lab, q88), 1, "first lookup of .88");
    std::thread::sleep(Duration::from_secs(10));
    lab.download("lan", 47803, "http://203.0.113.88/small.bin");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        ptr_queries(&lab, q88),
        1,
        ".88 was asked again before its negative TTL"
    );
    let metrics = lab.metrics();
    let sent = metric_sum(&metrics, "netmon_rdns_queries_total").unwrap_or(0.0);
    assert!(
        (2.0..=3.0).contains(&sent),
        "netmon_rdns_queries_total {sent}"
    );

    // The expiry is in the database: a restarted netmon does not ask either.
    let (status, _) = netmon.sigterm();
    assert!(
        status.is_some_and(|s| s.success()),
        "netmon stopped with {status:?}"
    );
    let _netmon = lab.start_netmon(&extra);
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(
        ptr_queries(&lab, q88),
        1,
        ".88 was asked again after a restart"
    );
    assert_eq!(ptr_queries(&lab, "84.113.0.203.in-addr.arpa"), 1);
}

/// What a full ASN table adds to netmon's memory (acceptance 5): netmon's peak RSS
/// (VmHWM) in the lab without and then with `asn_db`, each after the same idle time.
/// Ignored by default; needs the table:
/// `ASN_DB=/var/tmp/asn.csv cargo test --test lab_enrich -- --ignored --nocapture`.
#[test]
#[ignore]
fn full_asn_table_rss() {
    let Some(db) = std::env::var_os("ASN_DB") else {
        eprintln!("ASN_DB not set: nothing to measure");
        return;
    };
    let lab = Lab::up("enrrss");
    let mut peaks = Vec::new();
    for (port, extra) in [47810, 47811].into_iter().zip([
        "[enrich]\nrdns = false\n".to_owned(),
        format!(
            "[enrich]\nrdns = false\nasn_db = \"{}\"\n",
            std::path::Path::new(&db).display()
        ),
    ]) {
        let mut netmon = lab.start_netmon(&extra);
        lab.download("lan", port, "http://203.0.113.84/small.bin");
        std::thread::sleep(Duration::from_secs(5));
        peaks.push(netmon.peak_rss());
        netmon.sigterm();
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "netmon peak RSS: {:.1} MiB without asn_db, {:.1} MiB with {} (+{:.1} MiB)",
        mib(peaks[0]),
        mib(peaks[1]),
        std::path::Path::new(&db).display(),
        mib(peaks[1].saturating_sub(peaks[0]))
    );
    assert!(peaks[1] > peaks[0]);
}
