//! MAC vendor lookup speed (`enrich::oui::vendor`): every universally administered
//! unicast OUI prefix once (the ones the table is searched for; locally administered and
//! group addresses are labelled from their bits), registered and unknown alike, as a
//! device list of mixed hardware brings them.
//!
//! Run: `cargo bench --bench oui`; without `--bench` (as `cargo test --benches` runs it)
//! a smoke run over 1/256 of the prefixes.

use std::time::Instant;

use netmon::enrich::oui::{Vendor, vendor};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let step = if full { 1 } else { 256 };
    let started = Instant::now();
    let (mut found, mut lookups) = (0usize, 0usize);
    for prefix in (0..1u32 << 24).step_by(step) {
        let [_, a, b, c] = prefix.to_be_bytes();
        // Bit 0 of the first octet: group; bit 1: locally administered.
        if a & 0b11 != 0 {
            continue;
        }
        let mac = [a, b, c, 0x12, 0x34, 0x56];
        found += usize::from(matches!(vendor(std::hint::black_box(mac)), Vendor::Name(_)));
        lookups += 1;
    }
    let per = started.elapsed().as_nanos() as f64 / lookups as f64;
    println!("{lookups} lookups, {found} found: {per:.0} ns per lookup");
}
