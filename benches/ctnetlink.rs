//! ctnetlink parse throughput: the captured conntrack messages (`src/collect/fixtures/`)
//! walked and fully parsed in place by `collect::ctnetlink`, against neli decoding only
//! the top level of the same datagrams (the library the in-place walker replaced on the
//! hot path, so the baseline says what the walker buys).
//!
//! Run: `cargo bench --bench ctnetlink` (2 s per side); without `--bench` (as
//! `cargo test --benches` runs it) a short smoke run of a few rounds.

use std::io::Cursor;
use std::time::{Duration, Instant};

use neli::FromBytesWithInput as _;
use netmon::collect::ctnetlink::{Decoded, Nfgenmsg, decode};
use netmon::collect::netlink::NlMessages;

const EVENTS: &str = include_str!("../src/collect/fixtures/events.hex");
const DUMP: &str = include_str!("../src/collect/fixtures/dump.hex");

/// One datagram per non-comment line of hex.
fn unhex(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).expect("fixture is hex"))
                .collect()
        })
        .collect()
}

/// neli's view of a datagram: per message, the number of top-level attributes.
fn neli_attr_counts(datagram: &[u8]) -> Result<Vec<Option<usize>>, neli::err::DeError> {
    let buf: neli::types::NlBuffer<u16, Nfgenmsg> =
        neli::types::NlBuffer::from_bytes_with_input(&mut Cursor::new(datagram), datagram.len())?;
    Ok(buf
        .into_iter()
        .map(|m| m.get_payload().map(|p| p.attrs.as_ref().len()))
        .collect())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let budget = if full {
        Duration::from_secs(2)
    } else {
        Duration::from_millis(50)
    };
    let datagrams: Vec<Vec<u8>> = unhex(EVENTS).into_iter().chain(unhex(DUMP)).collect();
    let per_round: usize = datagrams.iter().map(|d| NlMessages::new(d).count()).sum();
    let time = |f: &mut dyn FnMut() -> usize| {
        let start = Instant::now();
        let (mut rounds, mut sink) = (0u64, 0usize);
        while start.elapsed() < budget {
            sink = sink.wrapping_add(f());
            rounds += 1;
        }
        std::hint::black_box(sink);
        (rounds * per_round as u64) as f64 / start.elapsed().as_secs_f64()
    };
    let ours = time(&mut || {
        let mut n = 0;
        for d in &datagrams {
            for m in NlMessages::new(std::hint::black_box(d)) {
                if let Ok(Ok(Decoded::Entry(e))) = m.map(|m| decode(&m)) {
                    n += e.flow.ct_id as usize;
                }
            }
        }
        n
    });
    let neli = time(&mut || {
        datagrams
            .iter()
            .map(|d| neli_attr_counts(d).map(|v| v.len()).unwrap_or(0))
            .sum()
    });
    println!(
        "ctnetlink parse: {:.0} messages/s ({:.0} ns/message) full parse in place; \
         neli top-level decode only: {:.0} messages/s",
        ours,
        1e9 / ours,
        neli
    );
}
