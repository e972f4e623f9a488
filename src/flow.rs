//! What a flow *is* in netmon: the conntrack entry as the collector hands it to the
//! writer, and the one place that decides its direction (DESIGN §3).
//!
//! Everything here is plain data and pure functions, shared by the collector, the
//! writer, the tests and the benchmarks.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;

use ipnet::IpNet;

/// IANA protocol numbers netmon names; anything else is shown by number.
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// One direction of a conntrack entry (`CTA_TUPLE_ORIG` or `CTA_TUPLE_REPLY`).
///
/// Ports are `None` for protocols without ports; ICMP keeps its type/code/id instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// ICMP/ICMPv6 type, code and echo id (`CTA_PROTO_ICMP_*`), when the protocol has them.
    pub icmp: Option<(u8, u8, u16)>,
}

/// Cumulative kernel counters of one flow (`CTA_COUNTERS_ORIG` / `CTA_COUNTERS_REPLY`).
/// "orig" is what the initiator sent, "reply" what it received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub orig_bytes: u64,
    pub orig_packets: u64,
    pub reply_bytes: u64,
    pub reply_packets: u64,
}

impl Counters {
    /// The growth from `earlier` to `self`, clamped at zero per field: a counter that
    /// went backwards (entry reused, counters zeroed by another tool) contributes nothing
    /// rather than a huge wrapped value.
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            orig_bytes: self.orig_bytes.saturating_sub(earlier.orig_bytes),
            orig_packets: self.orig_packets.saturating_sub(earlier.orig_packets),
            reply_bytes: self.reply_bytes.saturating_sub(earlier.reply_bytes),
            reply_packets: self.reply_packets.saturating_sub(earlier.reply_packets),
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Counters::default()
    }
}

/// A conntrack entry as read from ctnetlink (event or dump), already parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtFlow {
    /// `CTA_ID`: the kernel's id for this entry. Unique among live entries only.
    pub ct_id: u32,
    /// 4 or 6.
    pub family: u8,
    /// IANA protocol number (`CTA_PROTO_NUM`).
    pub proto: u8,
    pub orig: Tuple,
    pub reply: Tuple,
    /// `CTA_STATUS` bits (`IPS_*` from `linux/netfilter/nf_conntrack_common.h`).
    pub status: u32,
    /// `CTA_PROTOINFO_TCP_STATE` for TCP.
    pub tcp_state: Option<u8>,
    pub mark: u32,
    pub zone: u16,
    pub counters: Counters,
    /// Kernel timestamps (`CTA_TIMESTAMP_START/STOP`), unix ms, when
    /// `nf_conntrack_timestamp=1`. `stop` is set only on DESTROY.
    pub kernel_start_ms: Option<i64>,
    pub kernel_stop_ms: Option<i64>,
}

impl CtFlow {
    /// Stable identity of a *live* conntrack entry: the kernel id plus what the kernel
    /// keys the entry on (zone, protocol, original tuple). The id alone is reused;
    /// the tuple alone repeats (same client port reused later). A new lifetime with the
    /// same identity is told apart by the writer because the previous one has ended.
    pub fn ident(&self) -> i64 {
        // FNV-1a over a fixed field order: deterministic across runs and builds, which
        // std's RandomState is not (a restart must recognise its open rows).
        let mut h = Fnv1a::default();
        self.ct_id.hash(&mut h);
        self.zone.hash(&mut h);
        self.family.hash(&mut h);
        self.proto.hash(&mut h);
        self.orig.hash(&mut h);
        h.finish() as i64
    }

    /// A TCP connection that has closed (`TIME_WAIT` or `CLOSE` in `enum tcp_conntrack`,
    /// `linux/netfilter/nf_conntrack_tcp.h`): over for the user, though conntrack keeps
    /// the entry (120 s for TIME_WAIT) to absorb stray packets.
    pub fn is_closed(&self) -> bool {
        self.proto == PROTO_TCP && matches!(self.tcp_state, Some(7 | 8))
    }

    /// TCP state name as `conntrack -L` prints it.
    pub fn state_name(&self) -> Option<&'static str> {
        self.tcp_state.map(tcp_state_name)
    }
}

/// The number of a TCP state name (`tcp_state_name`'s inverse).
pub fn tcp_state_from_name(name: &str) -> Option<u8> {
    (0u8..=9).find(|s| tcp_state_name(*s) == name)
}

/// Names of `enum tcp_conntrack` (`linux/netfilter/nf_conntrack_tcp.h`).
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        0 => "NONE",
        1 => "SYN_SENT",
        2 => "SYN_RECV",
        3 => "ESTABLISHED",
        4 => "FIN_WAIT",
        5 => "CLOSE_WAIT",
        6 => "LAST_ACK",
        7 => "TIME_WAIT",
        8 => "CLOSE",
        9 => "SYN_SENT2",
        _ => "UNKNOWN",
    }
}

/// Protocol name for display and the API (`tcp`, `udp`, `icmp`, `icmpv6`, else the number).
pub fn proto_name(proto: u8) -> std::borrow::Cow<'static, str> {
    match proto {
        PROTO_TCP => "tcp".into(),
        PROTO_UDP => "udp".into(),
        PROTO_ICMP => "icmp".into(),
        PROTO_ICMPV6 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        n => n.to_string().into(),
    }
}

/// The protocol as detection evidence spells it (`GRE`, `ICMPv6`), `other` when it has
/// no name there. Stored in `hits.reasons`, so its spelling is part of the saved data.
pub fn proto_evidence_name(proto: u8) -> &'static str {
    match proto {
        PROTO_ICMP => "ICMP",
        PROTO_TCP => "TCP",
        PROTO_UDP => "UDP",
        47 => "GRE",
        50 => "ESP",
        PROTO_ICMPV6 => "ICMPv6",
        132 => "SCTP",
        _ => "other",
    }
}

/// Inverse of [`proto_name`] for filters: a name or a number.
pub fn proto_from_name(s: &str) -> Option<u8> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Some(PROTO_TCP),
        "udp" => Some(PROTO_UDP),
        "icmp" => Some(PROTO_ICMP),
        "icmpv6" | "ipv6-icmp" => Some(PROTO_ICMPV6),
        "sctp" => Some(132),
        "udplite" => Some(136),
        "gre" => Some(47),
        "esp" => Some(50),
        other => other.parse().ok(),
    }
}

/// How a flow relates to the LAN, decided once when the writer first sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// A LAN device talking to the internet: the flows a router owner asks about.
    Outbound,
    /// The internet reaching a LAN device (port forward, or a routed IPv6 prefix).
    Inbound,
    /// The router itself is an endpoint: LAN→router DNS/SSH, router→internet (NTP,
    /// upstream DNS), internet→router.
    RouterLocal,
    /// LAN to LAN, or LAN to another private/link-local/multicast address.
    Lan,
    /// Neither end is on the LAN nor the router (transit between other interfaces).
    Other,
}

impl Direction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
            Direction::RouterLocal => "router-local",
            Direction::Lan => "lan",
            Direction::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Direction> {
        Some(match s {
            "outbound" => Direction::Outbound,
            "inbound" => Direction::Inbound,
            "router-local" => Direction::RouterLocal,
            "lan" => Direction::Lan,
            "other" => Direction::Other,
            _ => return None,
        })
    }

    /// The number `flows.direction` stores: outbound and inbound, nearly every row,
    /// are 0 and 1, which a SQLite record holds in no bytes at all.
    pub fn code(&self) -> i64 {
        match self {
            Direction::Outbound => 0,
            Direction::Inbound => 1,
            Direction::RouterLocal => 2,
            Direction::Lan => 3,
            Direction::Other => 4,
        }
    }

    /// The direction a stored code names; an unknown one is `Other`.
    pub fn from_code(code: i64) -> Direction {
        match code {
            0 => Direction::Outbound,
            1 => Direction::Inbound,
            2 => Direction::RouterLocal,
            3 => Direction::Lan,
            _ => Direction::Other,
        }
    }

    /// Only these two have a remote peer worth a `remote_hosts` row.
    pub fn has_remote_peer(&self) -> bool {
        matches!(self, Direction::Outbound | Direction::Inbound)
    }
}

/// Addresses that are never "the internet": private, loopback, link-local, CGNAT,
/// multicast, broadcast, unspecified, ULA (RFC 1918, 6598, 3927, 4193, 4291, 5771).
pub const NON_REMOTE_NETS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// The router's view of address space: which subnets are the LAN and which addresses
/// are the router's own. Built from config plus the interfaces' addresses.
#[derive(Clone, Debug, Default)]
pub struct Network {
    pub lan_subnets: Vec<IpNet>,
    /// Every address configured on the router (all interfaces, WAN included).
    pub router_addrs: Vec<IpAddr>,
    pub non_remote: Vec<IpNet>,
}

impl Network {
    pub fn new(lan_subnets: Vec<IpNet>, router_addrs: Vec<IpAddr>) -> Network {
        let non_remote = NON_REMOTE_NETS
            .iter()
            .map(|s| s.parse().expect("static CIDR list is valid"))
            .collect();
        Network {
            lan_subnets,
            router_addrs,
            non_remote,
        }
    }

    pub fn is_lan(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        !self.is_router(ip) && self.lan_subnets.iter().any(|n| n.contains(&ip))
    }

    pub fn is_router(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        self.router_addrs.contains(&ip)
    }

    /// True for addresses on the internet side: not private, not LAN, not the router.
    pub fn is_remote(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        !self.is_router(ip)
            && !self.lan_subnets.iter().any(|n| n.contains(&ip))
            && !self.non_remote.iter().any(|n| n.contains(&ip))
    }

    /// The one place that decides direction (DESIGN §3).
    ///
    /// The original tuple says who initiated; the reply tuple's source says who really
    /// answered after DNAT (a port forward is addressed to the router's WAN address but
    /// answered by a LAN host).
    pub fn classify(&self, orig: &Tuple, reply: &Tuple) -> Direction {
        let (src, dst, responder) = (orig.src, orig.dst, reply.src);
        if self.is_lan(src) {
            if self.is_remote(responder) && self.is_remote(dst) {
                Direction::Outbound
            } else if self.is_router(dst) && self.is_router(responder) {
                Direction::RouterLocal
            } else if self.is_remote(responder) {
                // DNAT'ed to the internet (e.g. a transparent proxy elsewhere).
                Direction::Outbound
            } else {
                Direction::Lan
            }
        } else if self.is_router(src) {
            Direction::RouterLocal
        } else if self.is_lan(responder) || self.is_lan(dst) {
            if self.is_remote(src) {
                Direction::Inbound
            } else {
                Direction::Lan
            }
        } else if self.is_router(dst) {
            Direction::RouterLocal
        } else {
            Direction::Other
        }
    }
}

/// `::ffff:a.b.c.d` compares as the IPv4 address it carries.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// 64-bit FNV-1a: tiny, deterministic, good enough to key a few hundred thousand flows.
#[derive(Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> Network {
        Network::new(
            vec![
                "10.77.1.0/24".parse().unwrap(),
                "fd77:1::/64".parse().unwrap(),
            ],
            vec![
                "10.77.1.1".parse().unwrap(),
                "203.0.113.1".parse().unwrap(),
                "fd77:1::1".parse().unwrap(),
            ],
        )
    }

    fn t(src: &str, dst: &str) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: Some(1000),
            dport: Some(80),
            icmp: None,
        }
    }

    #[test]
    fn outbound_nat() {
        let n = net();
        let orig = t("10.77.1.10", "203.0.113.80");
        let reply = t("203.0.113.80", "203.0.113.1");
        assert_eq!(n.classify(&orig, &reply), Direction::Outbound);
    }

    #[test]
    fn outbound_v6_routed() {
        let n = net();
        let orig = t("fd77:1::10", "2001:db8::80");
        let reply = t("2001:db8::80", "fd77:1::10");
        assert_eq!(n.classify(&orig, &reply), Direction::Outbound);
    }

    #[test]
    fn lan_to_router_is_router_local() {
        let n = net();
        let orig = t("10.77.1.10", "10.77.1.1");
        let reply = t("10.77.1.1", "10.77.1.10");
        assert_eq!(n.classify(&orig, &reply), Direction::RouterLocal);
    }

    #[test]
    fn router_originated_is_router_local() {
        let n = net();
        let orig = t("203.0.113.1", "198.51.100.53");
        let reply = t("198.51.100.53", "203.0.113.1");
        assert_eq!(n.classify(&orig, &reply), Direction::RouterLocal);
    }

    #[test]
    fn port_forward_is_inbound() {
        let n = net();
        let orig = t("198.51.100.7", "203.0.113.1");
        let reply = t("10.77.1.10", "198.51.100.7");
        assert_eq!(n.classify(&orig, &reply), Direction::Inbound);
    }

    #[test]
    fn lan_to_lan_and_private() {
        let n = net();
        assert_eq!(
            n.classify(
                &t("10.77.1.10", "10.77.1.11"),
                &t("10.77.1.11", "10.77.1.10")
            ),
            Direction::Lan
        );
        assert_eq!(
            n.classify(
                &t("10.77.1.10", "192.168.100.1"),
                &t("192.168.100.1", "203.0.113.1")
            ),
            Direction::Lan
        );
        assert_eq!(
            n.classify(
                &t("10.77.1.10", "239.255.255.250"),
                &t("239.255.255.250", "10.77.1.10")
            ),
            Direction::Lan
        );
    }

    #[test]
    fn wan_to_router_is_router_local() {
        let n = net();
        let orig = t("198.51.100.7", "203.0.113.1");
        let reply = t("203.0.113.1", "198.51.100.7");
        assert_eq!(n.classify(&orig, &reply), Direction::RouterLocal);
    }

    #[test]
    fn mapped_v4_is_v4() {
        let n = net();
        assert!(n.is_lan("::ffff:10.77.1.10".parse().unwrap()));
        assert!(!n.is_remote("::ffff:192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn counters_since_clamps() {
        let a = Counters {
            orig_bytes: 10,
            orig_packets: 1,
            reply_bytes: 5,
            reply_packets: 1,
        };
        let b = Counters {
            orig_bytes: 4,
            orig_packets: 2,
            reply_bytes: 9,
            reply_packets: 1,
        };
        assert_eq!(
            a.since(&b),
            Counters {
                orig_bytes: 6,
                orig_packets: 0,
                reply_bytes: 0,
                reply_packets: 0
            }
        );
    }
}
