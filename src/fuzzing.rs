//! Fuzzing entry points: one function per parser of outside input, taking raw bytes.
//!
//! Both the `cargo fuzz` targets in `fuzz/fuzz_targets/` (nightly, libFuzzer) and the
//! corpus replay in `tests/fuzz_corpus.rs` (stable, CI) call these, so what the fuzzer
//! explored is exactly what CI replays. Each function feeds its bytes down the same path
//! the collector or page handler does and panics only when the parser breaks a promise
//! (a panic inside the parser, or a property asserted here). Errors are fine: hostile
//! input is expected to be rejected, not to take the daemon down.
//!
//! Adding a target: a function here, its name in [`TARGETS`], a
//! `fuzz/fuzz_targets/<name>.rs` calling it, and a `[[bin]]` in `fuzz/Cargo.toml`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::collect::tls_hello::{self, Hello, MAX_HELLO};
use crate::collect::{ctnetlink, dns_packets, dnsmasq, identity, netlink, nflog};
use crate::store::dns::read::DnsFilter;
use crate::store::flows::read::FlowFilter;
use crate::store::hosts::read::HostFilter;
use crate::web::query::{DnsQuery, FlowQuery, HostQuery};

/// A fixed "now" (2025-11-24T16:00:00Z, the lease tests' `NOW`) so a corpus file always
/// takes the same path.
const NOW_S: i64 = 1_764_000_000;

/// A fuzz target: its name (its `fuzz/corpus/<name>/` directory and its
/// `fuzz/fuzz_targets/<name>.rs` file) and the function it calls.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("ctnetlink", ctnetlink),
    ("nflog", nflog),
    ("neighbour", neighbour),
    ("leases", leases),
    ("dns_packet", dns_packet),
    ("dnsmasq_log", dnsmasq_log),
    ("config", config),
    ("query_string", query_string),
    ("tls_hello", tls_hello),
];

/// A conntrack datagram (dump reply or event), as `collect::conntrack` reads it:
/// split into netlink messages, decode each until the first one that cannot be framed.
pub fn ctnetlink(data: &[u8]) {
    for msg in netlink::NlMessages::new(data) {
        let Ok(msg) = msg else { break };
        let _ = ctnetlink::decode(&msg);
    }
}

/// An NFLOG datagram: split into messages and parse every body as a logged packet
/// (whatever its type, so the fuzzer need not find `NFULNL_MSG_PACKET` first).
pub fn nflog(data: &[u8]) {
    for msg in nflog::messages(data) {
        let Ok((_, body)) = msg else { break };
        let _ = nflog::parse_packet(body);
    }
}

/// An rtnetlink neighbour datagram, the way the device collector frames it, and the
/// bytes as one bare `ndmsg` payload (so short inputs reach the parser directly).
pub fn neighbour(data: &[u8]) {
    let _ = identity::parse_neighbour(data);
    for msg in netlink::NlMessages::new(data) {
        let Ok(msg) = msg else { break };
        let _ = identity::parse_neighbour(msg.payload);
    }
}

/// A DHCP lease file (dnsmasq or odhcpd format). The collector reads it as UTF-8 and
/// skips a file that is not; lossy decoding lets every input reach the parser.
pub fn leases(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = identity::parse_leases(&text, NOW_S);
}

/// An IP packet from the DNS NFQUEUE: parses, never loops, and every name it returns is
/// bounded and printable ASCII (what the pages and the database rely on).
pub fn dns_packet(data: &[u8]) {
    let Ok(observations) = dns_packets::parse_packet(data, 0) else {
        return;
    };
    for o in observations {
        for n in std::iter::once(&o.qname).chain(o.answers.iter().map(|a| &a.name)) {
            assert!(n.len() <= crate::dns_name::MAX_NAME_CHARS, "{n:?}");
            assert!(!n.chars().any(|c| c.is_control() || !c.is_ascii()), "{n:?}");
        }
    }
}

/// dnsmasq log text, line by line as the log follower hands it over (lossy UTF-8, like
/// the collector), through the line parser and the query/answer assembler.
pub fn dnsmasq_log(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parser = dnsmasq::LineParser::new(dnsmasq::Zone::Fixed(0));
    let mut assembler = dnsmasq::Assembler::new();
    let start = Instant::now();
    let mut now = start;
    for line in text.split('\n') {
        now += Duration::from_millis(100);
        if let dnsmasq::Parsed::Entry { ts_ms, entry, .. } = parser.parse(line, NOW_S) {
            assembler.push(ts_ms, entry, now);
        }
        assembler.tick(now);
    }
    assembler.tick(now + Duration::from_secs(3600));
    assembler.finish();
}

/// The config file. TOML is text: input that is not UTF-8 is refused before parsing,
/// as `Config::load` does.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::Config::parse(text, Path::new("fuzz.toml"));
}

/// A page or API query string, deserialised like axum's `Query` extractor
/// (`serde_urlencoded::from_str`) into each typed query, then bounded by its filter.
/// A filter that parses must survive its own canonical query string unchanged.
pub fn query_string(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(q) = serde_urlencoded::from_str::<FlowQuery>(query)
        && let Ok(f) = FlowFilter::parse(&q)
    {
        let again = serde_urlencoded::from_str::<FlowQuery>(&f.to_query())
            .expect("canonical flow query deserialises");
        assert_eq!(FlowFilter::parse(&again).ok(), Some(f), "{query:?}");
    }
    if let Ok(q) = serde_urlencoded::from_str::<HostQuery>(query)
        && let Ok(f) = HostFilter::parse(&q)
    {
        let again = serde_urlencoded::from_str::<HostQuery>(&f.to_query())
            .expect("canonical host query deserialises");
        assert_eq!(HostFilter::parse(&again).ok(), Some(f), "{query:?}");
    }
    if let Ok(q) = serde_urlencoded::from_str::<DnsQuery>(query)
        && let Ok(f) = DnsFilter::parse(&q)
    {
        let again = serde_urlencoded::from_str::<DnsQuery>(&f.to_query())
            .expect("canonical DNS query deserialises");
        assert_eq!(DnsFilter::parse(&again).ok(), Some(f), "{query:?}");
    }
}

/// A client's first bytes on a TLS port (its first TCP payload, or the first ones
/// joined), through `collect::tls_hello::parse`. A name is a hostname in canonical form; `Incomplete` asks for
/// more than it was given; and a name must not depend on where TCP cut the hello: when
/// the whole input names a site, every prefix names the same site or asks for more, and
/// when it is a hello without a name, every prefix asks for at most the whole.
pub fn tls_hello(data: &[u8]) {
    let data = data.get(..MAX_HELLO).unwrap_or(data);
    let whole = tls_hello::parse(data);
    check_hello(&whole, data.len());
    if !matches!(whole, Hello::Name(_) | Hello::NoName) {
        return;
    }
    // Every cut of a short input, about 64 of a long one (each parse reads the prefix).
    let step = (data.len() / 64).max(1);
    for cut in (1..data.len()).step_by(step) {
        let part = tls_hello::parse(&data[..cut]);
        check_hello(&part, cut);
        match (&whole, &part) {
            (Hello::NoName, Hello::Incomplete { needed }) => {
                assert!(*needed <= data.len(), "cut {cut}: {part:?}");
            }
            (Hello::Name(_), Hello::Incomplete { .. }) => {}
            _ => assert_eq!(part, whole, "cut {cut}"),
        }
    }
}

/// What every answer of `tls_hello::parse` for `len` bytes promises.
fn check_hello(hello: &Hello, len: usize) {
    match hello {
        Hello::Name(name) | Hello::Encrypted { outer: Some(name) } => {
            assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
            assert_eq!(&crate::dns_name::normalize_name(name), name);
        }
        Hello::Incomplete { needed } => assert!(*needed > len, "{needed} for {len} bytes"),
        Hello::Encrypted { outer: None } | Hello::NoName | Hello::NotHello => {}
    }
}
