//! TLS server names from packets: the first data a LAN client sends on a new TLS
//! connection, queued by netmon's table ([`crate::firewall`], `dns.tls_names`) to the
//! DNS queue and accepted at once like the answers ([`super::dns_packets`]).
//!
//! The packet is read before source NAT, so its addresses and ports are the connection's
//! original tuple, which is how the writer finds the flow the name belongs to
//! ([`crate::event::TcpConn`]). (NFQUEUE can attach the conntrack entry's id instead,
//! but only on kernels built with `CONFIG_NETFILTER_NETLINK_GLUE_CT`, which many are
//! not.) The ClientHello is parsed by
//! [`super::tls_hello`]; one that spans two segments (a post-quantum key share makes it
//! ≈ 1.8 KB) is kept here until the next segment, at most [`MAX_PARTIAL`] connections
//! and [`PARTIAL_MS`] at a time. Results are counted in `netmon_tls_hellos_total` by
//! what the packet held: a name; an encrypted ClientHello (ECH) with its outer name —
//! the provider's public name under real ECH, the site itself under Chrome's GREASE ECH —
//! or without one; no name (a connection by address); or something else.

use std::collections::HashMap;
use std::net::IpAddr;

use super::tls_hello::{self, Hello, MAX_HELLO};
use crate::event::{TcpConn, TlsName};
use crate::flow::PROTO_TCP;

/// Connections whose ClientHello is waiting for its next segment, at most: with at most
/// [`MAX_HELLO`] bytes each, 1 MiB in the worst case (a real split hello is ≈ 2 KB, and
/// waits one round trip).
pub const MAX_PARTIAL: usize = 64;
/// How long the first part of a ClientHello waits for the rest.
pub const PARTIAL_MS: i64 = 5_000;

/// The TCP segment of one queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    pub conn: TcpConn,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// The TCP segment in an IPv4 or IPv6 packet; `None` for anything else (another
/// protocol, an IPv6 extension header, a truncated header).
pub fn segment(packet: &[u8]) -> Option<Segment<'_>> {
    let (src, dst, proto, l4) = super::dns_packets::ip_payload(packet).ok()?;
    tcp_segment(src, dst, proto, l4)
}

/// The TCP segment in an IP packet's L4 bytes (protocol `proto`, from `src` to `dst`);
/// `None` for another protocol or a truncated header.
pub fn tcp_segment(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Option<Segment<'_>> {
    if proto != PROTO_TCP {
        return None;
    }
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    let seq = u32::from_be_bytes(l4.get(4..8)?.try_into().ok()?);
    let offset = usize::from(*l4.get(12)? >> 4) * 4;
    if offset < 20 {
        return None;
    }
    Some(Segment {
        conn: (src, sport, dst, dport),
        seq,
        payload: l4.get(offset..)?,
    })
}

/// The first part of a ClientHello.
struct Partial {
    since_ms: i64,
    /// Sequence number the next segment must start at.
    next_seq: u32,
    bytes: Vec<u8>,
}

/// ClientHellos being read, and the names read.
#[derive(Default)]
pub struct Hellos {
    partial: HashMap<TcpConn, Partial>,
    /// Names for the writer.
    pub names: Vec<TlsName>,
}

impl Hellos {
    /// Reads one queued packet; returns what it held, as `netmon_tls_hellos_total`
    /// counts it.
    pub fn packet(&mut self, packet: &[u8], now_ms: i64) -> &'static str {
        match segment(packet) {
            Some(seg) => self.read(seg, now_ms),
            None => "bad-header",
        }
    }

    /// Reads the TCP segment of one queued packet, as [`Hellos::packet`].
    pub fn read(&mut self, seg: Segment, now_ms: i64) -> &'static str {
        let conn = seg.conn;
        let next_seq = seg.seq.wrapping_add(seg.payload.len() as u32);
        let hello = match self.partial.remove(&conn) {
            Some(mut first) if first.next_seq == seg.seq => {
                first.bytes.extend_from_slice(seg.payload);
                let hello = tls_hello::parse(&first.bytes);
                if matches!(hello, Hello::Incomplete { .. }) {
                    first.next_seq = next_seq;
                    return self.wait(conn, first, &hello);
                }
                hello
            }
            // A retransmission of what is kept, or a gap: start over from this segment.
            Some(_) | None => {
                let hello = tls_hello::parse(seg.payload);
                if matches!(hello, Hello::Incomplete { .. }) {
                    let first = Partial {
                        since_ms: now_ms,
                        next_seq,
                        bytes: seg.payload.to_vec(),
                    };
                    return self.wait(conn, first, &hello);
                }
                hello
            }
        };
        let (name, result) = match hello {
            Hello::Name(name) => (name, "name"),
            // The outer name: the site itself when the ECH extension is Chrome's GREASE,
            // the provider's public name with real ECH (which hides the site). The wire
            // cannot tell them apart; either is the name the connection shows.
            Hello::Encrypted { outer: Some(name) } => (name, "ech-outer-name"),
            Hello::Encrypted { outer: None } => return "ech-no-name",
            Hello::NoName => return "no-name",
            Hello::Incomplete { .. } | Hello::NotHello => return "not-tls",
        };
        self.names.push(TlsName {
            ts_ms: now_ms,
            conn,
            name,
        });
        result
    }

    /// Keeps the first part of a ClientHello for the next segment, when it can.
    fn wait(&mut self, conn: TcpConn, first: Partial, hello: &Hello) -> &'static str {
        if matches!(hello, Hello::Incomplete { needed } if *needed > MAX_HELLO) {
            return "too-long";
        }
        if self.partial.len() >= MAX_PARTIAL {
            let now = first.since_ms;
            self.partial.retain(|_, p| now - p.since_ms < PARTIAL_MS);
            if self.partial.len() >= MAX_PARTIAL {
                return "partial-dropped";
            }
        }
        self.partial.insert(conn, first);
        "partial"
    }

    /// Forgets first parts whose rest never came.
    pub fn expire(&mut self, now_ms: i64) {
        if !self.partial.is_empty() {
            self.partial.retain(|_, p| now_ms - p.since_ms < PARTIAL_MS);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    const HELLO: &[u8] = include_bytes!("fixtures/tls/hello-video.example.test.bin");

    /// IPv4/TCP from 10.0.0.2:40000 to 192.0.2.7:443 with sequence number `seq`.
    fn tcp4(seq: u32, payload: &[u8]) -> Vec<u8> {
        let total = 20 + 20 + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&[10, 0, 0, 2, 192, 0, 2, 7]);
        p.extend_from_slice(&40000u16.to_be_bytes());
        p.extend_from_slice(&443u16.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(payload);
        p
    }

    /// [`tcp4`] from source port `port`.
    fn from_port(port: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = tcp4(1, payload);
        p[20..22].copy_from_slice(&port.to_be_bytes());
        p
    }

    /// The same over IPv6, from fd00::2 to 2001:db8::7.
    fn tcp6(seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[6, 64]);
        p.extend_from_slice(&"fd00::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&tcp4(seq, payload)[20..]);
        p
    }

    #[test]
    fn a_hello_in_one_segment_names_its_connection() {
        for (packet, client, server) in [
            (tcp4(7, HELLO), "10.0.0.2", "192.0.2.7"),
            (tcp6(7, HELLO), "fd00::2", "2001:db8::7"),
        ] {
            let mut h = Hellos::default();
            assert_eq!(h.packet(&packet, 1_000), "name");
            assert_eq!(
                h.names,
                [TlsName {
                    ts_ms: 1_000,
                    conn: (client.parse().unwrap(), 40000, server.parse().unwrap(), 443),
                    name: "video.example.test".into(),
                }]
            );
        }
    }

    #[test]
    fn a_hello_split_over_two_segments_is_joined() {
        // Inside the session id: long before the server name.
        let cut = 60;
        let mut h = Hellos::default();
        assert_eq!(h.packet(&tcp4(100, &HELLO[..cut]), 0), "partial");
        // A retransmission of the first part starts over; it does not duplicate bytes.
        assert_eq!(h.packet(&tcp4(100, &HELLO[..cut]), 5), "partial");
        assert_eq!(h.packet(&tcp4(100 + cut as u32, &HELLO[cut..]), 10), "name");
        assert_eq!(h.names[0].name, "video.example.test");
        assert!(h.partial.is_empty());
        // The rest without its start, or after the start expired, names nothing.
        let mut h = Hellos::default();
        assert_eq!(h.packet(&tcp4(100, &HELLO[..cut]), 0), "partial");
        h.expire(PARTIAL_MS);
        assert_eq!(
            h.packet(&tcp4(100 + cut as u32, &HELLO[cut..]), PARTIAL_MS),
            "not-tls"
        );
        assert!(h.names.is_empty());
    }

    #[test]
    fn waiting_hellos_are_bounded() {
        let mut h = Hellos::default();
        for port in 0..MAX_PARTIAL as u16 {
            assert_eq!(h.packet(&from_port(port, &HELLO[..50]), 0), "partial");
        }
        assert_eq!(
            h.packet(&from_port(9999, &HELLO[..50]), 1),
            "partial-dropped"
        );
        // Once the old ones are past their time, there is room again.
        assert_eq!(
            h.packet(&from_port(9999, &HELLO[..50]), PARTIAL_MS),
            "partial"
        );
        assert_eq!(h.partial.len(), 1);
    }

    #[test]
    fn other_packets_are_counted_not_named() {
        let mut h = Hellos::default();
        assert_eq!(h.packet(&tcp4(1, b"GET / HTTP/1.1\r\n\r\n"), 0), "not-tls");
        assert_eq!(h.packet(&HELLO[..30], 0), "bad-header");
        let mut udp = tcp4(1, HELLO);
        udp[9] = 17;
        assert_eq!(h.packet(&udp, 0), "bad-header");
        for n in 0..60 {
            // Truncated headers never panic.
            let _ = h.packet(&tcp4(1, HELLO)[..n], 0);
            let _ = h.packet(&tcp6(1, HELLO)[..n], 0);
        }
        assert!(h.names.is_empty());
    }
}
