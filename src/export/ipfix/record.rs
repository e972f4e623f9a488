//! IPFIX templates and data records (RFC 7011 §3), in either flow model.
//!
//! - **Uniflow** (the default): each direction of a connection is its own data record.
//!   The initiator's record is the original tuple as conntrack saw it; the responder's
//!   has source and destination swapped, so a download is a record whose destination is
//!   the device. Every collector decodes this (nfdump, pmacct, GoFlow2, ElastiFlow).
//! - **Biflow** (RFC 5103): one record per connection, the reply direction's counters
//!   and TCP flags in reverse elements (enterprise 29305). Half the records, but a
//!   collector that skips enterprise elements counts the upload only.
//!
//! In both, the source and destination are the inside view (the LAN address, before
//! NAT) and the post-NAT/NAPT elements the outside view (the router's WAN address and
//! port, what the far end saw), the way NAT devices report translations.
//! `ingressInterface`/`egressInterface` and the MAC addresses come from [`super::sides`]:
//! a device's MAC is `sourceMacAddress` of what it sends (as the frame arrived) and
//! `postDestinationMacAddress` of what it receives (as the frame left the router).

use std::net::{IpAddr, Ipv4Addr};

use crate::config::FlowModel;
use crate::flow::{Counters, PROTO_TCP, Tuple};

/// IANA Private Enterprise Number of RFC 5103 reverse information elements.
const REVERSE_PEN: u32 = 29305;
/// IPFIX version number (RFC 7011 §3.1).
const VERSION: u16 = 10;
pub const MESSAGE_HEADER_LEN: usize = 16;
pub const SET_HEADER_LEN: usize = 4;
pub const TEMPLATE_SET_ID: u16 = 2;

/// One field specifier: information element id, length, and whether it is an RFC 5103
/// reverse element (enterprise bit set, PEN 29305).
type Field = (u16, u16, bool);

/// IANA IPFIX information elements used (https://www.iana.org/assignments/ipfix).
mod ie {
    pub const OCTET_DELTA_COUNT: u16 = 1;
    pub const PACKET_DELTA_COUNT: u16 = 2;
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    pub const TCP_CONTROL_BITS: u16 = 6;
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    pub const INGRESS_INTERFACE: u16 = 10;
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    pub const EGRESS_INTERFACE: u16 = 14;
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    pub const ICMP_TYPE_CODE_IPV4: u16 = 32;
    pub const SOURCE_MAC_ADDRESS: u16 = 56;
    pub const POST_DESTINATION_MAC_ADDRESS: u16 = 57;
    pub const FLOW_END_REASON: u16 = 136;
    pub const ICMP_TYPE_CODE_IPV6: u16 = 139;
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    pub const POST_NAT_SOURCE_IPV4_ADDRESS: u16 = 225;
    pub const POST_NAT_DESTINATION_IPV4_ADDRESS: u16 = 226;
    pub const POST_NAPT_SOURCE_TRANSPORT_PORT: u16 = 227;
    pub const POST_NAPT_DESTINATION_TRANSPORT_PORT: u16 = 228;
    pub const POST_NAT_SOURCE_IPV6_ADDRESS: u16 = 281;
    pub const POST_NAT_DESTINATION_IPV6_ADDRESS: u16 = 282;
}

/// TCP header flags (`tcpControlBits`, RFC 7125).
const FIN: u16 = 0x01;
const SYN: u16 = 0x02;
const ACK: u16 = 0x10;

/// flowEndReason values (IANA registry, RFC 5102 §5.11.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EndReason {
    IdleTimeout = 1,
    ActiveTimeout = 2,
    EndOfFlow = 3,
    ForcedEnd = 4,
    LackOfResources = 5,
}

/// One slice of one connection, both directions, as the flow cache produces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub proto: u8,
    pub orig: Tuple,
    pub reply: Tuple,
    /// Bytes and packets of this slice, both directions.
    pub delta: Counters,
    pub start_ms: i64,
    pub end_ms: i64,
    pub end_reason: EndReason,
    /// Conntrack's TCP state at the end of the slice.
    pub tcp_state: Option<u8>,
    /// The slice begins with the connection (its handshake is in it).
    pub opening: bool,
}

/// Where one end of a connection is: the router's interface towards it (0: the router
/// itself or unknown) and its MAC when it is a LAN device netmon has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Side {
    pub ifindex: u32,
    pub mac: Option<[u8; 6]>,
}

/// One IPFIX data record, whichever template carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRecord {
    v6: bool,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    proto: u8,
    icmp: u16,
    post_src: IpAddr,
    post_dst: IpAddr,
    post_sport: u16,
    post_dport: u16,
    octets: u64,
    packets: u64,
    flags: u16,
    /// Biflow only: the reply direction.
    rev_octets: u64,
    rev_packets: u64,
    rev_flags: u16,
    ingress: u32,
    egress: u32,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    start_ms: u64,
    end_ms: u64,
    end_reason: u8,
}

/// TCP flags of a slice's packets per direction (initiator, responder), as conntrack's
/// state (`enum tcp_conntrack`) implies them: SYN in the slice that opened the
/// connection (the responder's once it answered, SYN_RECV on), ACK once the handshake
/// went on, FIN once both sides closed (LAST_ACK, TIME_WAIT). Conntrack does not say
/// which side sent a lone FIN or a reset, so those are not claimed.
fn tcp_flags(r: &FlowRecord) -> (u16, u16) {
    let Some(state) = r.tcp_state.filter(|_| r.proto == PROTO_TCP) else {
        return (0, 0);
    };
    let answered = matches!(state, 2..=8);
    let (mut fwd, mut rev) = (0, 0);
    if r.opening {
        fwd |= SYN;
        if answered {
            rev |= SYN;
        }
    }
    if answered {
        rev |= ACK;
    }
    if matches!(state, 3..=8) {
        fwd |= ACK;
    }
    if matches!(state, 6 | 7) {
        fwd |= FIN;
        rev |= FIN;
    }
    (fwd, rev)
}

fn icmp_type_code(t: &Tuple) -> u16 {
    t.icmp
        .map_or(0, |(ty, code, _)| u16::from(ty) << 8 | u16::from(code))
}

impl FlowRecord {
    /// The data records of this slice: in the uniflow model the initiator's direction
    /// and, when it carried traffic, the responder's; in the biflow model one record.
    /// `initiator` is where `orig.src` is, `responder` where `reply.src` (the host that
    /// really answered, after DNAT) is.
    pub fn data_records(
        &self,
        model: FlowModel,
        initiator: Side,
        responder: Side,
        out: &mut Vec<DataRecord>,
    ) {
        let (flags, rev_flags) = tcp_flags(self);
        let (o, r) = (&self.orig, &self.reply);
        let forward = DataRecord {
            v6: !(o.src.is_ipv4() && o.dst.is_ipv4()),
            src: o.src,
            dst: o.dst,
            sport: o.sport.unwrap_or(0),
            dport: o.dport.unwrap_or(0),
            proto: self.proto,
            icmp: icmp_type_code(o),
            // The reply tuple is what the far end sees: its destination is the
            // translated source.
            post_src: r.dst,
            post_dst: r.src,
            post_sport: r.dport.or(o.sport).unwrap_or(0),
            post_dport: r.sport.or(o.dport).unwrap_or(0),
            octets: self.delta.orig_bytes,
            packets: self.delta.orig_packets,
            flags,
            rev_octets: 0,
            rev_packets: 0,
            rev_flags: 0,
            ingress: initiator.ifindex,
            egress: responder.ifindex,
            src_mac: initiator.mac.unwrap_or_default(),
            dst_mac: responder.mac.unwrap_or_default(),
            start_ms: self.start_ms.max(0) as u64,
            end_ms: self.end_ms.max(0) as u64,
            end_reason: self.end_reason as u8,
        };
        let d = &self.delta;
        match model {
            FlowModel::Biflow => out.push(DataRecord {
                rev_octets: d.reply_bytes,
                rev_packets: d.reply_packets,
                rev_flags,
                ..forward
            }),
            FlowModel::Uniflow => {
                let replied = d.reply_bytes > 0 || d.reply_packets > 0;
                let sent = d.orig_bytes > 0 || d.orig_packets > 0;
                let reverse = replied.then(|| DataRecord {
                    src: forward.dst,
                    dst: forward.src,
                    sport: forward.dport,
                    dport: forward.sport,
                    icmp: icmp_type_code(r),
                    post_src: forward.post_dst,
                    post_dst: forward.post_src,
                    post_sport: forward.post_dport,
                    post_dport: forward.post_sport,
                    octets: d.reply_bytes,
                    packets: d.reply_packets,
                    flags: rev_flags,
                    ingress: forward.egress,
                    egress: forward.ingress,
                    src_mac: forward.dst_mac,
                    dst_mac: forward.src_mac,
                    ..forward.clone()
                });
                // The initiator's record goes out even empty when nothing moved at all
                // (accounting off), so the connection is still seen.
                if sent || !replied {
                    out.push(forward);
                }
                out.extend(reverse);
            }
        }
    }
}

/// A template: its id, its fields in record order, and the length of its records.
#[derive(Debug)]
pub struct Template {
    pub id: u16,
    fields: Vec<Field>,
    pub record_len: usize,
}

impl Template {
    fn new(model: FlowModel, v6: bool) -> Template {
        use ie::*;
        let (addr, src, dst, icmp, post_src, post_dst) = if v6 {
            (
                16,
                SOURCE_IPV6_ADDRESS,
                DESTINATION_IPV6_ADDRESS,
                ICMP_TYPE_CODE_IPV6,
                POST_NAT_SOURCE_IPV6_ADDRESS,
                POST_NAT_DESTINATION_IPV6_ADDRESS,
            )
        } else {
            (
                4,
                SOURCE_IPV4_ADDRESS,
                DESTINATION_IPV4_ADDRESS,
                ICMP_TYPE_CODE_IPV4,
                POST_NAT_SOURCE_IPV4_ADDRESS,
                POST_NAT_DESTINATION_IPV4_ADDRESS,
            )
        };
        let mut fields = vec![
            (src, addr, false),
            (dst, addr, false),
            (SOURCE_TRANSPORT_PORT, 2, false),
            (DESTINATION_TRANSPORT_PORT, 2, false),
            (PROTOCOL_IDENTIFIER, 1, false),
            (icmp, 2, false),
            (post_src, addr, false),
            (post_dst, addr, false),
            (POST_NAPT_SOURCE_TRANSPORT_PORT, 2, false),
            (POST_NAPT_DESTINATION_TRANSPORT_PORT, 2, false),
            (OCTET_DELTA_COUNT, 8, false),
            (PACKET_DELTA_COUNT, 8, false),
            (TCP_CONTROL_BITS, 2, false),
        ];
        if model == FlowModel::Biflow {
            fields.extend([
                (OCTET_DELTA_COUNT, 8, true),
                (PACKET_DELTA_COUNT, 8, true),
                (TCP_CONTROL_BITS, 2, true),
            ]);
        }
        fields.extend([
            (INGRESS_INTERFACE, 4, false),
            (EGRESS_INTERFACE, 4, false),
            (SOURCE_MAC_ADDRESS, 6, false),
            (POST_DESTINATION_MAC_ADDRESS, 6, false),
            (FLOW_START_MILLISECONDS, 8, false),
            (FLOW_END_MILLISECONDS, 8, false),
            (FLOW_END_REASON, 1, false),
        ]);
        // Each model has its own ids, so a collector never applies one model's template
        // to the other's records after a configuration change.
        let id = match (model, v6) {
            (FlowModel::Biflow, false) => 256,
            (FlowModel::Biflow, true) => 257,
            (FlowModel::Uniflow, false) => 258,
            (FlowModel::Uniflow, true) => 259,
        };
        let record_len = fields.iter().map(|f| usize::from(f.1)).sum();
        Template {
            id,
            fields,
            record_len,
        }
    }

    /// Appends this template's record to a Template Set.
    fn encode(&self, out: &mut Vec<u8>) {
        put16(out, self.id);
        put16(out, self.fields.len() as u16);
        for &(element, len, reverse) in &self.fields {
            if reverse {
                put16(out, element | 0x8000);
                put16(out, len);
                out.extend_from_slice(&REVERSE_PEN.to_be_bytes());
            } else {
                put16(out, element);
                put16(out, len);
            }
        }
    }

    /// Appends one data record in this template's field order.
    fn encode_record(&self, out: &mut Vec<u8>, d: &DataRecord) {
        use ie::*;
        for &(element, len, reverse) in &self.fields {
            match (element, reverse) {
                (SOURCE_IPV4_ADDRESS, _) => put_v4(out, d.src),
                (DESTINATION_IPV4_ADDRESS, _) => put_v4(out, d.dst),
                (POST_NAT_SOURCE_IPV4_ADDRESS, _) => put_v4(out, v4_or(d.post_src, d.src)),
                (POST_NAT_DESTINATION_IPV4_ADDRESS, _) => {
                    put_v4(out, v4_or(d.post_dst, d.dst));
                }
                (SOURCE_IPV6_ADDRESS, _) => put_v6(out, d.src),
                (DESTINATION_IPV6_ADDRESS, _) => put_v6(out, d.dst),
                (POST_NAT_SOURCE_IPV6_ADDRESS, _) => put_v6(out, d.post_src),
                (POST_NAT_DESTINATION_IPV6_ADDRESS, _) => put_v6(out, d.post_dst),
                (SOURCE_TRANSPORT_PORT, _) => put16(out, d.sport),
                (DESTINATION_TRANSPORT_PORT, _) => put16(out, d.dport),
                (POST_NAPT_SOURCE_TRANSPORT_PORT, _) => put16(out, d.post_sport),
                (POST_NAPT_DESTINATION_TRANSPORT_PORT, _) => put16(out, d.post_dport),
                (PROTOCOL_IDENTIFIER, _) => out.push(d.proto),
                (ICMP_TYPE_CODE_IPV4 | ICMP_TYPE_CODE_IPV6, _) => put16(out, d.icmp),
                (OCTET_DELTA_COUNT, false) => put64(out, d.octets),
                (PACKET_DELTA_COUNT, false) => put64(out, d.packets),
                (TCP_CONTROL_BITS, false) => put16(out, d.flags),
                (OCTET_DELTA_COUNT, true) => put64(out, d.rev_octets),
                (PACKET_DELTA_COUNT, true) => put64(out, d.rev_packets),
                (TCP_CONTROL_BITS, true) => put16(out, d.rev_flags),
                (INGRESS_INTERFACE, _) => out.extend_from_slice(&d.ingress.to_be_bytes()),
                (EGRESS_INTERFACE, _) => out.extend_from_slice(&d.egress.to_be_bytes()),
                (SOURCE_MAC_ADDRESS, _) => out.extend_from_slice(&d.src_mac),
                (POST_DESTINATION_MAC_ADDRESS, _) => out.extend_from_slice(&d.dst_mac),
                (FLOW_START_MILLISECONDS, _) => put64(out, d.start_ms),
                (FLOW_END_MILLISECONDS, _) => put64(out, d.end_ms),
                (FLOW_END_REASON, _) => out.push(d.end_reason),
                _ => out.resize(out.len() + usize::from(len), 0),
            }
        }
    }
}

/// The IPv4 and IPv6 templates of one flow model.
#[derive(Debug)]
pub struct Templates {
    pub v4: Template,
    pub v6: Template,
}

impl Templates {
    pub fn new(model: FlowModel) -> Templates {
        Templates {
            v4: Template::new(model, false),
            v6: Template::new(model, true),
        }
    }

    fn of(&self, d: &DataRecord) -> &Template {
        if d.v6 { &self.v6 } else { &self.v4 }
    }

    /// Appends a Template Set with both templates.
    pub fn encode_set(&self, out: &mut Vec<u8>) {
        let start = out.len();
        put16(out, TEMPLATE_SET_ID);
        put16(out, 0);
        self.v4.encode(out);
        self.v6.encode(out);
        patch_len(out, start);
    }

    /// Packs records into messages of at most `max_len` bytes: a header, optionally the
    /// template set, then data sets (one per run of records with the same template).
    /// Returns each message with the number of data records in it.
    pub fn encode_messages(
        &self,
        records: &[DataRecord],
        max_len: usize,
        header: &mut MessageHeader,
        mut templates: impl FnMut() -> bool,
    ) -> Vec<(Vec<u8>, u32)> {
        let mut messages = Vec::new();
        let mut i = 0;
        loop {
            let with_templates = templates();
            if i >= records.len() && !with_templates {
                break;
            }
            let mut msg = Vec::with_capacity(max_len);
            msg.extend_from_slice(&[0; MESSAGE_HEADER_LEN]);
            if with_templates {
                self.encode_set(&mut msg);
            }
            let mut n = 0u32;
            let mut set: Option<(u16, usize)> = None;
            while let Some(r) = records.get(i) {
                let template = self.of(r);
                let new_set = set.is_none_or(|(open, _)| open != template.id);
                let need = template.record_len + if new_set { SET_HEADER_LEN } else { 0 };
                if msg.len() + need > max_len && n > 0 {
                    break;
                }
                if new_set {
                    if let Some((_, start)) = set {
                        patch_len(&mut msg, start);
                    }
                    set = Some((template.id, msg.len()));
                    put16(&mut msg, template.id);
                    put16(&mut msg, 0);
                }
                template.encode_record(&mut msg, r);
                n += 1;
                i += 1;
            }
            if let Some((_, start)) = set {
                patch_len(&mut msg, start);
            }
            header.write(&mut msg, n);
            messages.push((msg, n));
            if i >= records.len() {
                break;
            }
        }
        messages
    }
}

/// The per-message header fields that persist across messages.
pub struct MessageHeader {
    pub observation_domain: u32,
    /// Data records sent before this message (RFC 7011 §3.1: templates do not count).
    pub sequence: u32,
}

impl MessageHeader {
    fn write(&mut self, msg: &mut [u8], records: u32) {
        let len = msg.len() as u16;
        let export_time = (crate::time::now_ms() / 1000) as u32;
        msg[0..2].copy_from_slice(&VERSION.to_be_bytes());
        msg[2..4].copy_from_slice(&len.to_be_bytes());
        msg[4..8].copy_from_slice(&export_time.to_be_bytes());
        msg[8..12].copy_from_slice(&self.sequence.to_be_bytes());
        msg[12..16].copy_from_slice(&self.observation_domain.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(records);
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// `ip` when it is IPv4, else `fallback` (a translated address of the other family
/// cannot go in an IPv4 element).
fn v4_or(ip: IpAddr, fallback: IpAddr) -> IpAddr {
    if ip.is_ipv4() { ip } else { fallback }
}

fn put_v4(out: &mut Vec<u8>, ip: IpAddr) {
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    };
    out.extend_from_slice(&v4.octets());
}

fn put_v6(out: &mut Vec<u8>, ip: IpAddr) {
    let v6 = match ip {
        IpAddr::V6(v6) => v6,
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
    };
    out.extend_from_slice(&v6.octets());
}

/// Writes the length of the set or message that begins at `start` into its bytes 2..4.
fn patch_len(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u16;
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A tuple from text, for the exporter's tests.
    pub(in crate::export::ipfix) fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport: Some(sport),
            dport: Some(dport),
            icmp: None,
        }
    }

    /// A NATed download: 10.77.0.10:40000 → 203.0.113.80:80, leaving as 203.0.113.1:61000.
    fn download(state: u8, opening: bool) -> FlowRecord {
        FlowRecord {
            proto: PROTO_TCP,
            orig: tuple("10.77.0.10", 40000, "203.0.113.80", 80),
            reply: tuple("203.0.113.80", 80, "203.0.113.1", 61000),
            delta: Counters {
                orig_bytes: 1234,
                orig_packets: 10,
                reply_bytes: 5_678_901,
                reply_packets: 4000,
            },
            start_ms: 1_700_000_000_000,
            end_ms: 1_700_000_005_000,
            end_reason: EndReason::EndOfFlow,
            tcp_state: Some(state),
            opening,
        }
    }

    const LAN: Side = Side {
        ifindex: 3,
        mac: Some([0x02, 0, 0, 0, 0, 0x10]),
    };
    const WAN: Side = Side {
        ifindex: 2,
        mac: None,
    };

    /// Reads the record at `at` field by field: (element, reverse) → bytes.
    fn fields<'a>(t: &Template, msg: &'a [u8], at: usize) -> Vec<((u16, bool), &'a [u8])> {
        let mut at = at;
        t.fields
            .iter()
            .map(|&(id, len, rev)| {
                let v = &msg[at..at + usize::from(len)];
                at += usize::from(len);
                ((id, rev), v)
            })
            .collect()
    }

    fn value<'a>(f: &[((u16, bool), &'a [u8])], id: u16, rev: bool) -> &'a [u8] {
        f.iter()
            .find(|(k, _)| *k == (id, rev))
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no element {id} (reverse {rev})"))
    }

    fn num(b: &[u8]) -> u64 {
        b.iter().fold(0, |n, &x| n << 8 | u64::from(x))
    }

    #[test]
    fn uniflow_sends_each_direction_as_its_own_record() {
        let mut out = Vec::new();
        download(7, true).data_records(FlowModel::Uniflow, LAN, WAN, &mut out);
        assert_eq!(out.len(), 2);
        let (up, down) = (&out[0], &out[1]);
        assert_eq!((up.src, up.dst), (ip("10.77.0.10"), ip("203.0.113.80")));
        assert_eq!((up.sport, up.dport), (40000, 80));
        assert_eq!((up.post_src, up.post_sport), (ip("203.0.113.1"), 61000));
        assert_eq!((up.octets, up.packets), (1234, 10));
        assert_eq!((up.ingress, up.egress), (3, 2));
        assert_eq!(up.src_mac, LAN.mac.unwrap());
        // The download: the device is the destination, the NAT view swapped with it.
        assert_eq!((down.src, down.dst), (ip("203.0.113.80"), ip("10.77.0.10")));
        assert_eq!((down.sport, down.dport), (80, 40000));
        assert_eq!((down.post_dst, down.post_dport), (ip("203.0.113.1"), 61000));
        assert_eq!((down.post_src, down.post_sport), (ip("203.0.113.80"), 80));
        assert_eq!((down.octets, down.packets), (5_678_901, 4000));
        assert_eq!((down.ingress, down.egress), (2, 3));
        assert_eq!((down.src_mac, down.dst_mac), ([0; 6], LAN.mac.unwrap()));
        assert_eq!((up.rev_octets, down.rev_octets), (0, 0));
        // Closed after both FINs, handshake in this slice.
        assert_eq!(up.flags, SYN | ACK | FIN);
        assert_eq!(down.flags, SYN | ACK | FIN);
    }

    #[test]
    fn uniflow_skips_a_silent_direction_but_never_the_whole_connection() {
        let mut r = download(1, true);
        r.delta.reply_bytes = 0;
        r.delta.reply_packets = 0;
        let mut out = Vec::new();
        r.data_records(FlowModel::Uniflow, LAN, WAN, &mut out);
        assert_eq!(out.len(), 1, "no answer: the initiator's record only");
        assert_eq!(out[0].flags, SYN, "SYN_SENT: a SYN and nothing else");
        r.delta = Counters::default();
        out.clear();
        r.data_records(FlowModel::Uniflow, LAN, WAN, &mut out);
        assert_eq!(out.len(), 1, "no counters at all: still one record");
    }

    #[test]
    fn tcp_flags_follow_the_conntrack_state() {
        let flags = |state, opening| tcp_flags(&download(state, opening));
        assert_eq!(flags(1, true), (SYN, 0));
        assert_eq!(flags(2, true), (SYN, SYN | ACK));
        assert_eq!(flags(3, true), (SYN | ACK, SYN | ACK));
        assert_eq!(flags(3, false), (ACK, ACK), "a later slice has no SYN");
        assert_eq!(flags(4, false), (ACK, ACK), "one FIN, sender unknown");
        assert_eq!(flags(7, false), (ACK | FIN, ACK | FIN));
        let mut udp = download(3, true);
        udp.proto = 17;
        assert_eq!(tcp_flags(&udp), (0, 0));
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn messages_follow_rfc7011_and_stay_under_the_size_limit() {
        for model in [FlowModel::Uniflow, FlowModel::Biflow] {
            let templates = Templates::new(model);
            let mut header = MessageHeader {
                observation_domain: 7,
                sequence: 0,
            };
            let v4 = download(7, true);
            let v6 = FlowRecord {
                orig: tuple("fd77::10", 40001, "2001:db8:77::80", 80),
                reply: tuple("2001:db8:77::80", 80, "fd77::10", 40001),
                ..v4.clone()
            };
            let mut records = Vec::new();
            for i in 0..40 {
                let r = if i % 3 == 0 { &v6 } else { &v4 };
                r.data_records(model, LAN, WAN, &mut records);
            }
            let per_flow = if model == FlowModel::Uniflow { 2 } else { 1 };
            assert_eq!(records.len(), 40 * per_flow);
            let mut first = true;
            let messages = templates
                .encode_messages(&records, 1400, &mut header, || std::mem::take(&mut first));
            assert!(messages.len() > 2);
            let total: u32 = messages.iter().map(|(_, n)| n).sum();
            assert_eq!(total as usize, records.len());
            assert_eq!(header.sequence as usize, records.len());
            let mut seq = 0u32;
            let mut v4_seen = None;
            for (i, (msg, n)) in messages.iter().enumerate() {
                assert!(msg.len() <= 1400);
                assert_eq!(u16::from_be_bytes([msg[0], msg[1]]), 10);
                assert_eq!(usize::from(u16::from_be_bytes([msg[2], msg[3]])), msg.len());
                assert_eq!(u32::from_be_bytes(msg[8..12].try_into().unwrap()), seq);
                assert_eq!(u32::from_be_bytes(msg[12..16].try_into().unwrap()), 7);
                seq += n;
                // Walk the sets: lengths must tile the message exactly.
                let mut at = MESSAGE_HEADER_LEN;
                let mut data = 0;
                while at < msg.len() {
                    let id = u16::from_be_bytes([msg[at], msg[at + 1]]);
                    let len = usize::from(u16::from_be_bytes([msg[at + 2], msg[at + 3]]));
                    assert!(len >= SET_HEADER_LEN);
                    if id == TEMPLATE_SET_ID {
                        assert_eq!(i, 0, "templates only in the first");
                    } else if id == templates.v4.id {
                        v4_seen.get_or_insert((i, at + SET_HEADER_LEN));
                        data += (len - SET_HEADER_LEN) / templates.v4.record_len;
                    } else if id == templates.v6.id {
                        data += (len - SET_HEADER_LEN) / templates.v6.record_len;
                    } else {
                        panic!("unexpected set {id}");
                    }
                    at += len;
                }
                assert_eq!(at, msg.len());
                assert_eq!(data as u32, *n);
            }
            // The first IPv4 record, field by field.
            let (i, at) = v4_seen.expect("an IPv4 data set");
            let f = fields(&templates.v4, &messages[i].0, at);
            assert_eq!(value(&f, ie::SOURCE_IPV4_ADDRESS, false), [10, 77, 0, 10]);
            assert_eq!(
                value(&f, ie::DESTINATION_IPV4_ADDRESS, false),
                [203, 0, 113, 80]
            );
            assert_eq!(num(value(&f, ie::SOURCE_TRANSPORT_PORT, false)), 40000);
            assert_eq!(num(value(&f, ie::PROTOCOL_IDENTIFIER, false)), 6);
            assert_eq!(
                value(&f, ie::POST_NAT_SOURCE_IPV4_ADDRESS, false),
                [203, 0, 113, 1]
            );
            assert_eq!(
                num(value(&f, ie::POST_NAPT_SOURCE_TRANSPORT_PORT, false)),
                61000
            );
            assert_eq!(num(value(&f, ie::OCTET_DELTA_COUNT, false)), 1234);
            assert_eq!(num(value(&f, ie::TCP_CONTROL_BITS, false)), 0x13);
            assert_eq!(num(value(&f, ie::INGRESS_INTERFACE, false)), 3);
            assert_eq!(num(value(&f, ie::EGRESS_INTERFACE, false)), 2);
            assert_eq!(value(&f, ie::SOURCE_MAC_ADDRESS, false), LAN.mac.unwrap());
            assert_eq!(
                num(value(&f, ie::FLOW_START_MILLISECONDS, false)),
                1_700_000_000_000
            );
            assert_eq!(
                num(value(&f, ie::FLOW_END_REASON, false)),
                EndReason::EndOfFlow as u64
            );
            if model == FlowModel::Biflow {
                assert_eq!(num(value(&f, ie::OCTET_DELTA_COUNT, true)), 5_678_901);
                assert_eq!(num(value(&f, ie::PACKET_DELTA_COUNT, true)), 4000);
            }
        }
    }

    #[test]
    fn templates_declare_reverse_elements_only_for_biflows() {
        let pen = REVERSE_PEN.to_be_bytes();
        let reverse = |model| {
            let mut set = Vec::new();
            let t = Templates::new(model);
            t.encode_set(&mut set);
            assert_eq!(u16::from_be_bytes([set[0], set[1]]), TEMPLATE_SET_ID);
            assert_eq!(usize::from(u16::from_be_bytes([set[2], set[3]])), set.len());
            (
                set.windows(8).filter(|w| w[4..8] == pen).count(),
                t.v4.record_len,
                t.v6.record_len,
            )
        };
        assert_eq!(reverse(FlowModel::Uniflow), (0, 82, 130));
        assert_eq!(reverse(FlowModel::Biflow), (6, 100, 148));
    }
}
