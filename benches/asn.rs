//! ASN table benchmark: load time, RSS the table adds, and
//! lookups per second, on a full real database when `ASN_DB` names one.
//!
//! Get the database (ip-location-db's `asn` CSV from the npm registry, CC BY 4.0):
//!
//! ```sh
//! cd /var/tmp && npm pack @ip-location-db/asn && tar xzf ip-location-db-asn-*.tgz
//! cat package/asn-ipv4.csv package/asn-ipv6.csv > asn.csv   # or scripts/asn-update
//! ASN_DB=/var/tmp/asn.csv cargo bench --bench asn
//! ```
//!
//! `ASN_DB` may also name a `.mmdb` (GeoLite2-ASN, DB-IP ASN Lite, ip-location-db's asn
//! mmdb, or the CSV above converted with `src/enrich/fixtures/make_mmdb.py asn.csv
//! asn.mmdb`); the format is detected as netmon does.
//!
//! Without `ASN_DB` it runs on a generated table of `RANGES` (default 20 000) ranges, a
//! smoke run that proves the path, then on the same table converted to `.mmdb` by
//! `make_mmdb.py` (skipped when `python3` is missing). `LOOKUPS` (default 2 000 000;
//! 200 000 without `--bench`) sets the number of lookups, on addresses spread over the
//! whole IPv4 space plus one IPv6 lookup in eight.

use std::hint::black_box;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use netmon::enrich::asn::AsnDb;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of this process now (bytes), from /proc/self/status: anonymous (heap;
/// a router has no swap, so this is what counts) and file-backed (mapped pages: page
/// cache, shared with the file and reclaimable).
fn rss_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    (
        netmon::memory::self_status_bytes(&status, "RssAnon:"),
        netmon::memory::self_status_bytes(&status, "RssFile:"),
    )
}

/// "+A anon, +F file" MiB between two `rss_bytes()` readings.
fn rss_added(before: (u64, u64), after: (u64, u64)) -> String {
    format!(
        "+{:.1} MiB anon, +{:.1} MiB file",
        mib(after.0.saturating_sub(before.0)),
        mib(after.1.saturating_sub(before.1))
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// A CSV of `n` disjoint /24-ish IPv4 ranges and `n / 4` IPv6 /48s, a few thousand ASes.
fn generated_table(n: usize) -> PathBuf {
    let path = std::env::temp_dir().join(format!("netmon-bench-asn-{}.csv", std::process::id()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create table"));
    let step = (u32::MAX / n as u32).max(512);
    for i in 0..n as u32 {
        let start = Ipv4Addr::from(i * step);
        let end = Ipv4Addr::from(i * step + 255);
        let asn = 64_512 + i % 3000;
        writeln!(out, "{start},{end},{asn},\"Org {}, Inc.\"", i % 3000).expect("write");
    }
    for i in 0..(n / 4) as u128 {
        let start = Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 80));
        let end = Ipv6Addr::from(u128::from(start) | ((1u128 << 80) - 1));
        writeln!(out, "{start},{end},{},Six {i}", 65_000 + i % 500).expect("write");
    }
    out.flush().expect("flush");
    path
}

/// `csv` converted to `.mmdb` by the fixture writer; `None` (with the reason printed)
/// when python3 cannot run it.
fn generated_mmdb(csv: &Path) -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/enrich/fixtures/make_mmdb.py");
    let out = csv.with_extension("mmdb");
    match std::process::Command::new("python3")
        .arg(&script)
        .arg(csv)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Some(out),
        Ok(s) => {
            println!("asn mmdb: skipped ({} exited with {s})", script.display());
            None
        }
        Err(e) => {
            println!("asn mmdb: skipped (python3: {e})");
            None
        }
    }
}

/// A fixed pseudo-random walk over the address space (xorshift), the same every run.
fn addresses(n: usize) -> Vec<IpAddr> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 8 == 7 {
                IpAddr::V6(Ipv6Addr::from(
                    (0x2000u128 << 112) | (u128::from(x) << 40) | u128::from(x >> 40),
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from((x >> 16) as u32))
            }
        })
        .collect()
}

fn bench(path: &Path, label: &str, addrs: &[IpAddr]) {
    let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len());
    let rss_before = rss_bytes();
    let started = Instant::now();
    let db = AsnDb::load(path).unwrap_or_else(|e| panic!("{e:#}"));
    let load_s = started.elapsed().as_secs_f64();
    let rss_loaded = rss_bytes();

    let started = Instant::now();
    let mut found = 0usize;
    for ip in addrs {
        if black_box(db.lookup(*ip)).is_some() {
            found += 1;
        }
    }
    let lookup_s = started.elapsed().as_secs_f64();
    let rss_looked_up = rss_bytes();
    assert!(found > 0, "no address found in {}", path.display());

    println!(
        "asn table: {} ({label}, {:.1} MiB file), {} ranges/networks, {} unreadable lines",
        path.display(),
        mib(file_bytes),
        db.len(),
        db.malformed_lines
    );
    println!(
        "load: {:.2} s; RSS added: {} after load, {} after the lookups (table heap: \
         {:.1} MiB, mapped file: {:.1} MiB)",
        load_s,
        rss_added(rss_before, rss_loaded),
        rss_added(rss_before, rss_looked_up),
        mib(db.heap_bytes() as u64),
        mib(db.mapped_bytes() as u64)
    );
    println!(
        "lookups: {} in {:.3} s = {:.2} M/s ({found} found)",
        addrs.len(),
        lookup_s,
        addrs.len() as f64 / lookup_s / 1e6
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let addrs = addresses(env_or("LOOKUPS", if full { 2_000_000 } else { 200_000 }));
    if let Some(p) = std::env::var_os("ASN_DB") {
        bench(Path::new(&p), "ASN_DB", &addrs);
        return;
    }
    let csv = generated_table(env_or("RANGES", 20_000));
    bench(&csv, "generated", &addrs);
    if let Some(mmdb) = generated_mmdb(&csv) {
        bench(&mmdb, "generated, make_mmdb.py", &addrs);
        let _ = std::fs::remove_file(&mmdb);
    }
    let _ = std::fs::remove_file(&csv);
}
