//! DNS answers from packets: the NFQUEUE collector.
//!
//! netmon's nftables table ([`crate::firewall`]) queues the DNS answers leaving towards
//! the LAN in conversations LAN clients started (conntrack's reply direction), after
//! the router's filters have let them through. This thread takes each one, copies its
//! bytes, **accepts it at once** and only then parses the copy: the client's answer
//! waits for one netlink round trip, never for parsing or the database. The rule has
//! `bypass` and the queue is bound fail-open, so when netmon is stopped, crashed or
//! behind, the kernel passes the packets on itself: DNS never depends on netmon.
//!
//! Parsing uses `simple-dns` after a plausibility check of the header's record counts
//! (a crafted count must not make the parser reserve megabytes); at most
//! [`MAX_ANSWERS`] records of an answer are kept, as from the dnsmasq log. Names become
//! canonical text ([`crate::dns_name::name_from_labels`]). Observations go to the writer
//! every [`FLUSH_EVERY`] or as soon as the queue is momentarily empty, so an answer is
//! normally stored before the flow it explains (which the conntrack collector holds for
//! up to a tick).
//!
//! Shutdown: `nfq` exposes no file descriptor to poll, so the thread blocks in `recv`.
//! netmon deletes the queue rule at exit; the thread is then idle and simply ends with
//! the process — it holds no state the writer needs (observations are flushed as soon
//! as the queue is empty).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use simple_dns::rdata::RData;
use simple_dns::{PacketFlag, RCODE};

use super::tls_names::{Hellos, tcp_segment};
use crate::config::Config;
use crate::dns_name::name_from_labels;
use crate::event::Event;
use crate::event::WriterHandle;
use crate::event::{AnswerData, DnsAnswer, DnsObservation, DnsSource, MAX_ANSWERS};

/// Longest an observation waits before it is sent to the writer.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Observations kept while the writer's channel is full; past it they are dropped and
/// counted.
const MAX_BUFFERED: usize = 20_000;
/// Kernel queue length: answers waiting for netmon's verdict. Past it the queue is
/// fail-open: the kernel accepts. netmon accepts each answer within microseconds, so
/// the queue is normally empty; the bound is what a *frozen* netmon (SIGSTOP, a stuck
/// thread) can hold back — at most this many answers, which their clients retry, while
/// every answer past them flows.
const QUEUE_MAX_LEN: u32 = 128;

/// Why a queued packet gave no observation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsPacketError {
    #[error("truncated or malformed IP/UDP/TCP header")]
    Header,
    #[error("not UDP or TCP (or behind an IPv6 extension header)")]
    Protocol,
    #[error("TCP segment without a whole DNS message")]
    TcpPartial,
    #[error("record counts larger than the packet")]
    Counts,
    #[error("malformed DNS message: {0}")]
    Dns(String),
    #[error("not a standard query response with one question")]
    NotAnswer,
}

/// One parsed IP packet carrying DNS: who it goes to, and the messages in it.
pub fn parse_packet(packet: &[u8], ts_ms: i64) -> Result<Vec<DnsObservation>, DnsPacketError> {
    let (_, client, proto, l4) = ip_payload(packet)?;
    parse_l4(client, proto, l4, ts_ms)
}

/// The DNS messages in an IP packet's L4 bytes (protocol `proto`), sent to `client`.
fn parse_l4(
    client: IpAddr,
    proto: u8,
    l4: &[u8],
    ts_ms: i64,
) -> Result<Vec<DnsObservation>, DnsPacketError> {
    match proto {
        17 => {
            let payload = l4.get(8..).ok_or(DnsPacketError::Header)?;
            Ok(vec![parse_message(payload, client, ts_ms)?])
        }
        6 => {
            let offset = usize::from(*l4.get(12).ok_or(DnsPacketError::Header)? >> 4) * 4;
            let mut data = l4.get(offset..).ok_or(DnsPacketError::Header)?;
            // DNS over TCP: each message has a two-byte length prefix (RFC 1035 4.2.2).
            // Only whole messages in one segment are read; answers big enough to span
            // segments are rare and counted.
            let mut out = Vec::new();
            while !data.is_empty() {
                let len = match data {
                    [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
                    _ => return Err(DnsPacketError::TcpPartial),
                };
                let msg = data.get(2..2 + len).ok_or(DnsPacketError::TcpPartial)?;
                out.push(parse_message(msg, client, ts_ms)?);
                data = &data[2 + len..];
            }
            Ok(out)
        }
        _ => Err(DnsPacketError::Protocol),
    }
}

/// Source and destination address, L4 protocol and L4 bytes of an IPv4 or IPv6 packet
/// (the TLS hellos of [`super::tls_names`] are read with it too).
pub(super) fn ip_payload(packet: &[u8]) -> Result<(IpAddr, IpAddr, u8, &[u8]), DnsPacketError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes(
                packet
                    .get(2..4)
                    .ok_or(DnsPacketError::Header)?
                    .try_into()
                    .map_err(|_| DnsPacketError::Header)?,
            ));
            if ihl < 20 || total < ihl || packet.len() < total {
                return Err(DnsPacketError::Header);
            }
            let src: [u8; 4] = packet[12..16]
                .try_into()
                .map_err(|_| DnsPacketError::Header)?;
            let dst: [u8; 4] = packet[16..20]
                .try_into()
                .map_err(|_| DnsPacketError::Header)?;
            Ok((
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                packet[9],
                &packet[ihl..total],
            ))
        }
        Some(6) => {
            let header = packet.get(..40).ok_or(DnsPacketError::Header)?;
            let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
            let l4 = packet.get(40..40 + len).ok_or(DnsPacketError::Header)?;
            let src: [u8; 16] = header[8..24]
                .try_into()
                .map_err(|_| DnsPacketError::Header)?;
            let dst: [u8; 16] = header[24..40]
                .try_into()
                .map_err(|_| DnsPacketError::Header)?;
            Ok((
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                header[6],
                l4,
            ))
        }
        _ => Err(DnsPacketError::Header),
    }
}

/// One DNS message sent to `client`.
fn parse_message(msg: &[u8], client: IpAddr, ts_ms: i64) -> Result<DnsObservation, DnsPacketError> {
    let header = msg
        .get(..12)
        .ok_or(DnsPacketError::Dns("shorter than a header".into()))?;
    let count = |i: usize| usize::from(u16::from_be_bytes([header[i], header[i + 1]]));
    // A question takes at least 5 bytes, a record at least 11: anything claiming more
    // than fits is hostile or broken, and is refused before the parser allocates.
    if count(4) * 5 + (count(6) + count(8) + count(10)) * 11 > msg.len() - 12 {
        return Err(DnsPacketError::Counts);
    }
    let packet = simple_dns::Packet::parse(msg).map_err(|e| DnsPacketError::Dns(e.to_string()))?;
    if !packet.has_flags(PacketFlag::RESPONSE)
        || packet.opcode() != simple_dns::OPCODE::StandardQuery
        || packet.questions.len() != 1
    {
        return Err(DnsPacketError::NotAnswer);
    }
    let question = &packet.questions[0];
    let kept = packet.answers.len().min(MAX_ANSWERS);
    if kept < packet.answers.len() {
        metrics::counter!("netmon_collector_drops_total", "stream" => "dns")
            .increment((packet.answers.len() - kept) as u64);
    }
    let answers = packet.answers[..kept]
        .iter()
        .filter_map(|rr| {
            let data = match &rr.rdata {
                RData::A(a) => AnswerData::Addr(IpAddr::V4(Ipv4Addr::from(a.address))),
                RData::AAAA(a) => AnswerData::Addr(IpAddr::V6(Ipv6Addr::from(a.address))),
                RData::CNAME(c) => AnswerData::Cname(name_from_labels(c.0.as_bytes())),
                _ => return None,
            };
            Some(DnsAnswer {
                name: name_from_labels(rr.name.as_bytes()),
                ttl: Some(rr.ttl),
                data,
            })
        })
        .collect();
    Ok(DnsObservation {
        ts_ms,
        client,
        qname: name_from_labels(question.qname.as_bytes()),
        qtype: u16::from(question.qtype),
        rcode: Some(rcode_number(packet.rcode())),
        answers,
        source: DnsSource::Packet,
    })
}

fn rcode_number(rcode: RCODE) -> u16 {
    match rcode {
        RCODE::Reserved => 4095,
        other => other as u16,
    }
}

/// The running packet collector.
pub struct DnsCapture {
    _thread: JoinHandle<()>,
}

impl DnsCapture {
    /// Binds the queue (fail-open) and starts the thread. Fails with a clear message when
    /// the kernel has no NFQUEUE support or netmon lacks CAP_NET_ADMIN.
    pub fn start(
        config: &Config,
        writer: WriterHandle,
        shutdown: Arc<AtomicBool>,
    ) -> anyhow::Result<DnsCapture> {
        let num = config.dns.queue_num;
        let mut queue = nfq::Queue::open().context("opening an NFQUEUE netlink socket")?;
        queue.bind(num).with_context(|| {
            format!(
                "binding NFQUEUE {num} (needs CAP_NET_ADMIN and the nfnetlink_queue module; \
                 another program may own this queue number: set dns.queue_num)"
            )
        })?;
        queue
            .set_fail_open(num, true)
            .context("setting the DNS queue fail-open")?;
        queue
            .set_queue_max_len(num, QUEUE_MAX_LEN)
            .context("setting the DNS queue length")?;
        describe_metrics();
        let thread = std::thread::Builder::new()
            .name("dns-capture".into())
            .spawn(move || run(queue, writer, shutdown))
            .context("starting the DNS capture thread")?;
        Ok(DnsCapture { _thread: thread })
    }
}

fn describe_metrics() {
    use metrics::describe_counter;
    describe_counter!(
        "netmon_dns_packets_total",
        "DNS answer packets taken from NFQUEUE, by result (parsed or the parse error)"
    );
    describe_counter!(
        "netmon_tls_hellos_total",
        "First data packets of TLS connections taken from NFQUEUE, by what they held \
         (name; ech-outer-name and ech-no-name: an encrypted ClientHello; no-name; partial: \
         the rest follows; not-tls; ...)"
    );
    describe_counter!(
        "netmon_tls_names_total",
        "TLS server names by what they did to their flow (named, named-late, dns-named and \
         unmatched: DNS had named it, or no flow was stored for it)"
    );
    describe_counter!(
        "netmon_dns_verdict_errors_total",
        "Queued DNS packets netmon failed to accept (the kernel's fail-open/bypass covers them)"
    );
}

fn run(mut queue: nfq::Queue, writer: WriterHandle, shutdown: Arc<AtomicBool>) {
    let mut pending: Vec<DnsObservation> = Vec::new();
    let mut hellos = Hellos::default();
    let mut last_flush = Instant::now();
    let mut copy = Vec::with_capacity(4096);
    let parsed = metrics::counter!("netmon_dns_packets_total", "result" => "parsed");
    let drops = metrics::counter!("netmon_collector_drops_total", "stream" => "dns");
    let mut blocking = true;
    queue.set_nonblocking(false);
    while !shutdown.load(Ordering::Relaxed) {
        match queue.recv() {
            Ok(mut msg) => {
                copy.clear();
                copy.extend_from_slice(msg.get_payload());
                msg.set_verdict(nfq::Verdict::Accept);
                if let Err(e) = queue.verdict(msg) {
                    metrics::counter!("netmon_dns_verdict_errors_total").increment(1);
                    log::warn!("accepting a queued DNS packet: {e}");
                }
                let now = crate::time::now_ms();
                // One read of the IP header for either rule's packet. The TLS rule queues
                // TCP from LAN clients; only the answer rule queues packets from port 53.
                let ip = ip_payload(&copy);
                let hello = ip.as_ref().ok().and_then(|&(src, dst, proto, l4)| {
                    tcp_segment(src, dst, proto, l4).filter(|s| s.conn.1 != 53)
                });
                if let Some(seg) = hello {
                    let result = hellos.read(seg, now);
                    metrics::counter!("netmon_tls_hellos_total", "result" => result).increment(1);
                } else {
                    match ip.and_then(|(_, client, proto, l4)| parse_l4(client, proto, l4, now)) {
                        Ok(obs) => {
                            parsed.increment(1);
                            pending.extend(obs);
                        }
                        Err(e) => {
                            let kind = match e {
                                DnsPacketError::Header => "bad-header",
                                DnsPacketError::Protocol => "other-protocol",
                                DnsPacketError::TcpPartial => "tcp-partial",
                                DnsPacketError::Counts => "bad-counts",
                                DnsPacketError::Dns(_) => "malformed",
                                DnsPacketError::NotAnswer => "not-an-answer",
                            };
                            metrics::counter!("netmon_dns_packets_total", "result" => kind)
                                .increment(1);
                        }
                    }
                }
                // Drain what is already queued without sleeping, then flush.
                if blocking {
                    queue.set_nonblocking(true);
                    blocking = false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                flush(&writer, &mut pending, &mut hellos, &drops);
                last_flush = Instant::now();
                queue.set_nonblocking(false);
                blocking = true;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("reading the DNS queue: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if last_flush.elapsed() >= FLUSH_EVERY || pending.len() >= 1024 {
            flush(&writer, &mut pending, &mut hellos, &drops);
            last_flush = Instant::now();
        }
    }
}

/// Sends what is pending; keeps it when the channel is full (up to [`MAX_BUFFERED`]).
fn flush(
    writer: &WriterHandle,
    pending: &mut Vec<DnsObservation>,
    hellos: &mut Hellos,
    drops: &metrics::Counter,
) {
    hellos.expire(crate::time::now_ms());
    send(
        writer,
        pending,
        Event::Dns,
        |e| match e {
            Event::Dns(back) => Some(back),
            _ => None,
        },
        drops,
    );
    send(
        writer,
        &mut hellos.names,
        Event::Tls,
        |e| match e {
            Event::Tls(back) => Some(back),
            _ => None,
        },
        drops,
    );
}

/// Sends `pending` as one event; keeps it when the channel is full, dropping (and
/// counting) the oldest past [`MAX_BUFFERED`].
fn send<T>(
    writer: &WriterHandle,
    pending: &mut Vec<T>,
    event: fn(Vec<T>) -> Event,
    back: fn(Event) -> Option<Vec<T>>,
    drops: &metrics::Counter,
) {
    if pending.is_empty() {
        return;
    }
    if let Err(e) = writer.try_send(event(std::mem::take(pending)))
        && let Some(mut kept) = back(e)
    {
        if kept.len() > MAX_BUFFERED {
            let excess = kept.len() - MAX_BUFFERED;
            kept.drain(..excess);
            drops.increment(excess as u64);
        }
        *pending = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wraps a DNS message in IPv4/UDP from 10.0.0.1:53 to 10.0.0.2.
    pub(crate) fn udp4(msg: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + msg.len();
        let mut p = vec![
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
        p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        let ulen = 8 + msg.len();
        p.extend_from_slice(&[0, 53, 0x9c, 0x40, (ulen >> 8) as u8, ulen as u8, 0, 0]);
        p.extend_from_slice(msg);
        p
    }

    fn name(labels: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in labels {
            out.push(l.len() as u8);
            out.extend_from_slice(l);
        }
        out.push(0);
        out
    }

    /// A response: header, one question (`qname`, A), then `answers` raw.
    fn response(qname: &[u8], rcode: u8, ancount: u16, answers: &[u8]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80 | rcode, 0, 1];
        m.extend_from_slice(&ancount.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        m.extend_from_slice(qname);
        m.extend_from_slice(&[0, 1, 0, 1]);
        m.extend_from_slice(answers);
        m
    }

    fn rr(owner: &[u8], rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
        let mut r = owner.to_vec();
        r.extend_from_slice(&rtype.to_be_bytes());
        r.extend_from_slice(&[0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        r.extend_from_slice(rdata);
        r
    }

    #[test]
    fn cname_chain_and_addresses() {
        let q = name(&[b"CDN", b"example", b"test"]);
        let target = name(&[b"edge", b"cdn-provider", b"test"]);
        let mut answers = rr(&[0xc0, 12], 5, 300, &target);
        // Owner of the A record: the CNAME target, by pointer into the first answer's
        // rdata (offset 12 + question (22) + rr header (12) = 46).
        answers.extend(rr(&[0xc0, 46], 1, 120, &[203, 0, 113, 85]));
        let msg = response(&q, 0, 2, &answers);
        let obs = parse_packet(&udp4(&msg), 7).unwrap();
        assert_eq!(obs.len(), 1);
        let o = &obs[0];
        assert_eq!(o.client, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(o.qname, "cdn.example.test");
        assert_eq!(o.qtype, 1);
        assert_eq!(o.rcode, Some(0));
        assert_eq!(o.canonical_name(), Some("edge.cdn-provider.test"));
        let addrs: Vec<_> = o.addresses().collect();
        assert_eq!(addrs, vec![("203.0.113.85".parse().unwrap(), Some(120))]);
    }

    #[test]
    fn an_answer_keeps_at_most_max_answers_records() {
        let q = name(&[b"many", b"example", b"test"]);
        let mut answers = Vec::new();
        for i in 0..100u8 {
            answers.extend(rr(&[0xc0, 12], 1, 60, &[203, 0, 113, i]));
        }
        let msg = response(&q, 0, 100, &answers);
        let o = &parse_packet(&udp4(&msg), 0).unwrap()[0];
        assert_eq!(o.answers.len(), MAX_ANSWERS);
        assert_eq!(o.addresses().last().unwrap().0.to_string(), "203.0.113.63");
    }

    #[test]
    fn nxdomain_has_no_answers() {
        let msg = response(&name(&[b"nope", b"example", b"test"]), 3, 0, &[]);
        let o = &parse_packet(&udp4(&msg), 0).unwrap()[0];
        assert!(o.is_nxdomain());
        assert!(o.answers.is_empty());
    }

    #[test]
    fn hostile_names_are_escaped() {
        let long = [b'a'; 63];
        let q = name(&[
            b"<script>alert(1)</script>",
            b"x.y",
            b"\xff\x00",
            &long,
            b"test",
        ]);
        let msg = response(&q, 0, 0, &[]);
        let o = &parse_packet(&udp4(&msg), 0).unwrap()[0];
        assert!(
            o.qname
                .starts_with("<script>alert(1)</script>.x\\.y.\\255\\000.aaa"),
            "{}",
            o.qname
        );
        assert!(!o.qname.chars().any(|c| c.is_control()));
    }

    #[test]
    fn compression_loop_is_an_error_not_a_hang() {
        // The question name points at itself.
        let mut m = vec![
            0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ];
        assert!(parse_packet(&udp4(&m), 0).is_err());
        // Two pointers at each other in an answer owner.
        m = response(
            &name(&[b"a"]),
            0,
            1,
            &rr(&[0xc0, 0x1f], 1, 1, &[1, 2, 3, 4]),
        );
        assert!(parse_packet(&udp4(&m), 0).is_err());
    }

    #[test]
    fn absurd_counts_are_refused_before_parsing() {
        let mut msg = response(&name(&[b"a"]), 0, 0, &[]);
        msg[6] = 0xff;
        msg[7] = 0xff;
        assert_eq!(parse_packet(&udp4(&msg), 0), Err(DnsPacketError::Counts));
    }

    #[test]
    fn queries_are_not_answers() {
        let mut msg = response(&name(&[b"a"]), 0, 0, &[]);
        msg[2] = 0x01; // QR = 0
        assert_eq!(parse_packet(&udp4(&msg), 0), Err(DnsPacketError::NotAnswer));
    }

    #[test]
    fn tcp_segment_with_two_messages() {
        let one = response(&name(&[b"a", b"test"]), 0, 0, &[]);
        let two = response(&name(&[b"b", b"test"]), 3, 0, &[]);
        let mut payload = Vec::new();
        for m in [&one, &two] {
            payload.extend_from_slice(&(m.len() as u16).to_be_bytes());
            payload.extend_from_slice(m);
        }
        let total = 40 + 20 + payload.len();
        let mut p = vec![0x60, 0, 0, 0, 0, (total - 40) as u8, 6, 64];
        p.extend_from_slice(&[0; 16]);
        let mut dst = [0u8; 16];
        dst[0] = 0xfd;
        dst[15] = 0x10;
        p.extend_from_slice(&dst);
        p.extend_from_slice(&[
            0, 53, 0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x18, 0, 0, 0, 0, 0, 0,
        ]);
        p.extend_from_slice(&payload);
        let obs = parse_packet(&p, 0).unwrap();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].client, "fd00::10".parse::<IpAddr>().unwrap());
        assert_eq!(obs[1].qname, "b.test");
        // Cut in the middle of the second message: partial.
        assert_eq!(
            parse_packet(&p[..p.len() - 3], 0).map(|_| ()).unwrap_err(),
            DnsPacketError::Header
        );
    }

    /// Fuzzing the packet parser's entry point: whatever the bytes, `parse_packet`
    /// returns (never panics, never loops), and every name it returns is canonical.
    /// CI runs proptest's default 256 cases per strategy; the long run in the README
    /// sets `PROPTEST_CASES`. `cargo fuzz run dns_packet` (see `src/fuzzing.rs`) drives
    /// the same check with coverage guidance.
    mod fuzz {
        use proptest::prelude::*;

        use super::*;

        fn seed() -> Vec<u8> {
            let q = name(&[b"cdn", b"example", b"test"]);
            let target = name(&[b"edge", b"cdn-provider", b"test"]);
            let mut answers = rr(&[0xc0, 12], 5, 300, &target);
            answers.extend(rr(&[0xc0, 46], 1, 120, &[203, 0, 113, 85]));
            answers.extend(rr(
                &[0xc0, 46],
                28,
                120,
                &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ));
            response(&q, 0, 3, &answers)
        }

        /// The `dns_packet` fuzz target's check, so proptest and libFuzzer agree.
        fn check(packet: &[u8]) {
            crate::fuzzing::dns_packet(packet);
        }

        proptest! {
            #[test]
            fn any_bytes(packet in proptest::collection::vec(any::<u8>(), 0..1600)) {
                check(&packet);
            }

            #[test]
            fn any_dns_message(msg in proptest::collection::vec(any::<u8>(), 0..1200)) {
                check(&udp4(&msg));
            }

            #[test]
            fn mutated_answer(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
                              cut in any::<prop::sample::Index>()) {
                let mut msg = seed();
                for (at, byte) in edits {
                    let i = at.index(msg.len());
                    msg[i] = byte;
                }
                let keep = 12 + cut.index(msg.len() - 11);
                msg.truncate(keep);
                check(&udp4(&msg));
            }
        }
    }
}
