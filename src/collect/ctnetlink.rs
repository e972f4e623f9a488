//! The ctnetlink wire format: conntrack entries as the kernel sends them over
//! `NETLINK_NETFILTER`, read straight down the attribute tree into a [`CtFlow`]. Over
//! 800 lines: more than half is tests on real kernel captures and crafted messages.
//!
//! Ids and layouts come from `include/uapi/linux/netfilter/nfnetlink.h` and
//! `nfnetlink_conntrack.h`; which attributes appear in which message comes from
//! `net/netfilter/nf_conntrack_netlink.c` (`ctnetlink_conntrack_event`,
//! `ctnetlink_fill_info`).
//!
//! neli 0.7 has no ctnetlink module, so the message types, attribute ids and the
//! `nfgenmsg` header are declared here with neli's macros; neli builds the dump request.
//! Received messages are *not* decoded through neli: its `Nlattr` owns a `Vec` per
//! attribute (≈ 30 allocations per conntrack message, at up to 250 000 messages/s).
//! Instead [`super::netlink`] walks the received bytes in place and every parse
//! function returns plain `Copy` data, so parsing allocates nothing. All of it returns
//! [`ParseError`] on truncated or inconsistent input; nothing here panics on kernel bytes.
//!
//! Byte order: the netlink and attribute headers are host order; every ctnetlink value
//! (ports, ids, counters, timestamps, status, mark, zone) is big-endian
//! (`nla_put_be16/32/64` in the kernel), whether or not the sender set
//! `NLA_F_NET_BYTEORDER`. Nested attributes carry `NLA_F_NESTED` since Linux 5.2;
//! both flag bits are masked off the type before matching.

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::consts::genl::NlAttrType;
use neli::consts::nl::{NlType, NlmF};
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::types::{Buffer, GenlBuffer};
use neli::{FromBytesWithInput, Header, Size, ToBytes, neli_enum};

use super::netlink::{
    Attrs, FrameError, NFGENMSG_LEN, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN, NlMsg,
    array, be16, be32, be64, u8_of,
};
use crate::flow::{Counters, CtFlow, PROTO_ICMP, PROTO_ICMPV6, Tuple};

// ---------------------------------------------------------------------------------------
// Constants and attribute ids (declared as data, in header order)
// ---------------------------------------------------------------------------------------

/// `NFNL_SUBSYS_CTNETLINK` (`nfnetlink.h`): the high byte of every conntrack message type.
pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// `NFNETLINK_V0`: the only `nfgenmsg.version` there is.
pub const NFNETLINK_V0: u8 = 0;

/// `enum nfnetlink_groups` (`nfnetlink.h`): multicast groups of conntrack events.
/// Joining them needs `CAP_NET_ADMIN` (`nfnetlink_bind`).
pub const NFNLGRP_CONNTRACK_NEW: u32 = 1;
pub const NFNLGRP_CONNTRACK_UPDATE: u32 = 2;
pub const NFNLGRP_CONNTRACK_DESTROY: u32 = 3;

/// `NLM_F_CREATE` (`linux/netlink.h`): set by the kernel on NEW events only, which is how a
/// NEW tells itself apart from an UPDATE (both have type `IPCTNL_MSG_CT_NEW`).
pub const NLM_F_CREATE: u16 = 0x400;

const AF_UNSPEC: u8 = libc::AF_UNSPEC as u8;
const AF_INET: u8 = libc::AF_INET as u8;
const AF_INET6: u8 = libc::AF_INET6 as u8;

/// `enum cntl_msg_types` (`nfnetlink_conntrack.h`) combined with the subsystem byte.
/// `IPCTNL_MSG_CT_GET_CTRZERO` is deliberately absent: it zeroes the counters other tools
/// (nlbwmon, `conntrack -L`, ulogd) read too.
#[neli_enum(serialized_type = "u16")]
pub enum CtMsg {
    /// NEW and UPDATE events, and every entry of a dump.
    New = NFNL_SUBSYS_CTNETLINK << 8,
    /// Dump request (`NLM_F_REQUEST | NLM_F_DUMP`).
    Get = (NFNL_SUBSYS_CTNETLINK << 8) | 1,
    /// DESTROY events.
    Delete = (NFNL_SUBSYS_CTNETLINK << 8) | 2,
}
impl NlType for CtMsg {}

/// `enum ctattr_type`: top-level attributes of a conntrack message (the ones netmon reads).
#[neli_enum(serialized_type = "u16")]
pub enum CtAttr {
    TupleOrig = 1,
    TupleReply = 2,
    /// be32 `IPS_*` bits.
    Status = 3,
    Protoinfo = 4,
    /// be32.
    Mark = 8,
    CountersOrig = 9,
    CountersReply = 10,
    /// be32.
    Id = 12,
    /// be16; only present for a non-default zone (`ctnetlink_dump_zone_id`).
    Zone = 18,
    Timestamp = 20,
}
impl NlAttrType for CtAttr {}

/// `enum ctattr_tuple`.
#[neli_enum(serialized_type = "u16")]
pub enum TupleAttr {
    Ip = 1,
    Proto = 2,
    /// Per-direction zone; netmon keys on the entry's `CTA_ZONE` instead.
    Zone = 3,
}

/// `enum ctattr_ip`: raw address bytes (already network order).
#[neli_enum(serialized_type = "u16")]
pub enum IpAttr {
    V4Src = 1,
    V4Dst = 2,
    V6Src = 3,
    V6Dst = 4,
}

/// `enum ctattr_l4proto`.
#[neli_enum(serialized_type = "u16")]
pub enum ProtoAttr {
    /// u8, IANA protocol number.
    Num = 1,
    /// be16 each; also GRE keys and other "port-like" ids.
    SrcPort = 2,
    DstPort = 3,
    /// be16 / u8 / u8.
    IcmpId = 4,
    IcmpType = 5,
    IcmpCode = 6,
    Icmpv6Id = 7,
    Icmpv6Type = 8,
    Icmpv6Code = 9,
}

/// `enum ctattr_protoinfo`.
#[neli_enum(serialized_type = "u16")]
pub enum ProtoinfoAttr {
    Tcp = 1,
}

/// `enum ctattr_protoinfo_tcp`.
#[neli_enum(serialized_type = "u16")]
pub enum ProtoinfoTcpAttr {
    /// u8, `enum tcp_conntrack` (`nf_conntrack_tcp.h`).
    State = 1,
}

/// `enum ctattr_counters`. The 32-bit variants are "old, unused" per the header but cost
/// nothing to accept.
#[neli_enum(serialized_type = "u16")]
pub enum CountersAttr {
    Packets = 1,
    Bytes = 2,
    Packets32 = 3,
    Bytes32 = 4,
}

/// `enum ctattr_tstamp`: be64 nanoseconds since the unix epoch (`ktime_get_real_ns`).
#[neli_enum(serialized_type = "u16")]
pub enum TimestampAttr {
    Start = 1,
    /// Only on DESTROY, and back-dated to when the entry expired.
    Stop = 2,
}

/// `struct nfgenmsg` (`nfnetlink.h`) followed by its attributes, for neli's (de)serializer.
/// `res_id` is big-endian on the wire; ctnetlink ignores it (always 0 here).
#[derive(Debug, Clone, Size, ToBytes, FromBytesWithInput, Header)]
pub struct Nfgenmsg {
    /// `AF_*` of the entries; `AF_UNSPEC` in a dump request means "IPv4 and IPv6".
    pub family: u8,
    pub version: u8,
    pub res_id: u16,
    #[neli(
        input = "input.checked_sub(Self::header_size()).ok_or(neli::err::DeError::InvalidInput(input))?"
    )]
    pub attrs: GenlBuffer<u16, Buffer>,
}

/// A full table dump request for both address families: `IPCTNL_MSG_CT_GET` with
/// `NLM_F_REQUEST | NLM_F_DUMP` (what `conntrack -L` sends).
pub fn dump_request(seq: u32) -> Result<Vec<u8>, neli::err::SerError> {
    let payload = Nfgenmsg {
        family: AF_UNSPEC,
        version: NFNETLINK_V0,
        res_id: 0,
        attrs: GenlBuffer::new(),
    };
    let msg: Nlmsghdr<CtMsg, Nfgenmsg> = NlmsghdrBuilder::default()
        .nl_type(CtMsg::Get)
        .nl_flags(NlmF::REQUEST | NlmF::DUMP)
        .nl_seq(seq)
        .nl_payload(NlPayload::Payload(payload))
        .build()
        .map_err(|e| neli::err::SerError::new(e.to_string()))?;
    let mut buf = Cursor::new(Vec::with_capacity(msg.padded_size()));
    msg.to_bytes(&mut buf)?;
    Ok(buf.into_inner())
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a received message could not be read. Never fatal: the collector counts it
/// (`netmon_conntrack_parse_errors_total`) and goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The message or one of its attributes could not be framed, or a value has the
    /// wrong size.
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("unexpected address family {0}")]
    Family(u8),
    #[error("{0}")]
    Inconsistent(&'static str),
    #[error("message type {0:#06x} is not a conntrack entry")]
    NotConntrack(u16),
}

// ---------------------------------------------------------------------------------------
// What a message means
// ---------------------------------------------------------------------------------------

/// Which conntrack event a message is. Dump entries are sent as `IPCTNL_MSG_CT_NEW`
/// without `NLM_F_CREATE`, so they read as [`CtKind::Update`]; the collector knows a dump
/// entry by the socket it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKind {
    New,
    Update,
    Destroy,
}

/// One parsed conntrack message: the entry plus which optional parts were present.
///
/// What absence means is a kernel fact (`ctnetlink_conntrack_event`): NEW/UPDATE events
/// carry no counters and no timestamps (only DESTROY and dumps do), UPDATE carries
/// `CTA_PROTOINFO` only when it changed. `CTA_MARK` and `CTA_ZONE` are omitted when 0, so
/// for them absence *is* the value 0. See [`CtEntry::merged_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEntry {
    pub kind: CtKind,
    pub flow: CtFlow,
    pub has_status: bool,
    pub has_counters_orig: bool,
    pub has_counters_reply: bool,
}

impl CtEntry {
    /// This message's view of the entry, with what it did not carry taken from the
    /// previously known state of the same entry.
    pub fn merged_with(&self, previous: &CtFlow) -> CtFlow {
        let mut flow = self.flow.clone();
        if !self.has_status {
            flow.status = previous.status;
        }
        if !self.has_counters_orig {
            flow.counters.orig_bytes = previous.counters.orig_bytes;
            flow.counters.orig_packets = previous.counters.orig_packets;
        }
        if !self.has_counters_reply {
            flow.counters.reply_bytes = previous.counters.reply_bytes;
            flow.counters.reply_packets = previous.counters.reply_packets;
        }
        flow.tcp_state = flow.tcp_state.or(previous.tcp_state);
        flow.kernel_start_ms = flow.kernel_start_ms.or(previous.kernel_start_ms);
        flow.kernel_stop_ms = flow.kernel_stop_ms.or(previous.kernel_stop_ms);
        flow
    }
}

/// A message as the collector acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Entry(CtEntry),
    /// `NLMSG_DONE`: a dump is complete.
    Done,
    /// `NLMSG_ERROR` with error 0.
    Ack,
    /// `NLMSG_ERROR`: a positive errno (the kernel sends it negated).
    Error(i32),
    /// `NLMSG_NOOP`, `NLMSG_OVERRUN`, or another subsystem's message type.
    Ignored(u16),
}

/// Decodes one message of a datagram.
pub fn decode(msg: &NlMsg<'_>) -> Result<Decoded, ParseError> {
    match msg.ty {
        NLMSG_DONE => Ok(Decoded::Done),
        NLMSG_ERROR => {
            // struct nlmsgerr { int error; struct nlmsghdr msg; ... }
            let code = msg
                .error_code()
                .ok_or(ParseError::Frame(FrameError::Truncated("nlmsgerr")))?;
            Ok(if code == 0 {
                Decoded::Ack
            } else {
                Decoded::Error(code.saturating_neg())
            })
        }
        NLMSG_NOOP | NLMSG_OVERRUN => Ok(Decoded::Ignored(msg.ty)),
        ty => match CtMsg::from(ty) {
            CtMsg::New | CtMsg::Delete => parse_conntrack(msg).map(Decoded::Entry),
            _ => Ok(Decoded::Ignored(ty)),
        },
    }
}

// ---------------------------------------------------------------------------------------
// Parsing, one function per nested attribute
// ---------------------------------------------------------------------------------------

/// A conntrack message (`IPCTNL_MSG_CT_NEW` / `_DELETE`): `nfgenmsg`, then `CTA_*`.
///
/// (Long: one match over the top-level CTA_* attributes, as the kernel's policy table lists
/// them.)
pub fn parse_conntrack(msg: &NlMsg<'_>) -> Result<CtEntry, ParseError> {
    let kind = match CtMsg::from(msg.ty) {
        CtMsg::Delete => CtKind::Destroy,
        CtMsg::New if msg.flags & NLM_F_CREATE != 0 => CtKind::New,
        CtMsg::New => CtKind::Update,
        _ => return Err(ParseError::NotConntrack(msg.ty)),
    };
    let Some(nfgen) = msg.payload.get(..NFGENMSG_LEN) else {
        return Err(ParseError::Frame(FrameError::Truncated("nfgenmsg")));
    };
    let family = match nfgen[0] {
        AF_INET => 4,
        AF_INET6 => 6,
        other => return Err(ParseError::Family(other)),
    };

    let mut orig = None;
    let mut reply = None;
    let mut ct_id = None;
    let mut entry = CtEntry {
        kind,
        flow: CtFlow {
            ct_id: 0,
            family,
            proto: 0,
            orig: EMPTY_TUPLE,
            reply: EMPTY_TUPLE,
            status: 0,
            tcp_state: None,
            mark: 0,
            zone: 0,
            counters: Counters::default(),
            kernel_start_ms: None,
            kernel_stop_ms: None,
        },
        has_status: false,
        has_counters_orig: false,
        has_counters_reply: false,
    };
    let flow = &mut entry.flow;
    for attr in Attrs::new(&msg.payload[NFGENMSG_LEN..]) {
        let (ty, p) = attr?;
        match CtAttr::from(ty) {
            CtAttr::TupleOrig => orig = Some(parse_tuple(p, family)?),
            CtAttr::TupleReply => reply = Some(parse_tuple(p, family)?),
            CtAttr::Status => {
                flow.status = be32(p, "CTA_STATUS")?;
                entry.has_status = true;
            }
            CtAttr::Protoinfo => flow.tcp_state = parse_protoinfo(p)?,
            CtAttr::Mark => flow.mark = be32(p, "CTA_MARK")?,
            CtAttr::CountersOrig => {
                let (packets, bytes) = parse_counters(p)?;
                flow.counters.orig_packets = packets;
                flow.counters.orig_bytes = bytes;
                entry.has_counters_orig = true;
            }
            CtAttr::CountersReply => {
                let (packets, bytes) = parse_counters(p)?;
                flow.counters.reply_packets = packets;
                flow.counters.reply_bytes = bytes;
                entry.has_counters_reply = true;
            }
            CtAttr::Id => ct_id = Some(be32(p, "CTA_ID")?),
            CtAttr::Zone => flow.zone = be16(p, "CTA_ZONE")?,
            CtAttr::Timestamp => {
                let (start, stop) = parse_timestamp(p)?;
                flow.kernel_start_ms = start;
                flow.kernel_stop_ms = stop;
            }
            _ => {}
        }
    }
    let (orig_proto, orig) = orig.ok_or(ParseError::Missing("CTA_TUPLE_ORIG"))?;
    let (reply_proto, reply) = reply.ok_or(ParseError::Missing("CTA_TUPLE_REPLY"))?;
    if orig_proto != reply_proto {
        return Err(ParseError::Inconsistent(
            "CTA_TUPLE_ORIG and CTA_TUPLE_REPLY name different protocols",
        ));
    }
    flow.ct_id = ct_id.ok_or(ParseError::Missing("CTA_ID"))?;
    flow.proto = orig_proto;
    flow.orig = orig;
    flow.reply = reply;
    Ok(entry)
}

const EMPTY_TUPLE: Tuple = Tuple {
    src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    sport: None,
    dport: None,
    icmp: None,
};

/// `CTA_TUPLE_ORIG` / `CTA_TUPLE_REPLY` → (protocol, tuple).
pub fn parse_tuple(buf: &[u8], family: u8) -> Result<(u8, Tuple), ParseError> {
    let mut ips = None;
    let mut proto = None;
    for attr in Attrs::new(buf) {
        let (ty, p) = attr?;
        match TupleAttr::from(ty) {
            TupleAttr::Ip => ips = Some(parse_tuple_ip(p, family)?),
            TupleAttr::Proto => proto = Some(parse_tuple_proto(p)?),
            _ => {}
        }
    }
    let (src, dst) = ips.ok_or(ParseError::Missing("CTA_TUPLE_IP"))?;
    let l4 = proto.ok_or(ParseError::Missing("CTA_TUPLE_PROTO"))?;
    Ok((
        l4.num,
        Tuple {
            src,
            dst,
            sport: l4.sport,
            dport: l4.dport,
            icmp: l4.icmp,
        },
    ))
}

/// `CTA_TUPLE_IP` → (source, destination); the family must match `nfgenmsg`'s.
pub fn parse_tuple_ip(buf: &[u8], family: u8) -> Result<(IpAddr, IpAddr), ParseError> {
    let mut src = None;
    let mut dst = None;
    for attr in Attrs::new(buf) {
        let (ty, p) = attr?;
        let (slot, addr) = match IpAttr::from(ty) {
            IpAttr::V4Src => (
                &mut src,
                IpAddr::V4(Ipv4Addr::from(array::<4>(p, "CTA_IP_V4_SRC")?)),
            ),
            IpAttr::V4Dst => (
                &mut dst,
                IpAddr::V4(Ipv4Addr::from(array::<4>(p, "CTA_IP_V4_DST")?)),
            ),
            IpAttr::V6Src => (
                &mut src,
                IpAddr::V6(Ipv6Addr::from(array::<16>(p, "CTA_IP_V6_SRC")?)),
            ),
            IpAttr::V6Dst => (
                &mut dst,
                IpAddr::V6(Ipv6Addr::from(array::<16>(p, "CTA_IP_V6_DST")?)),
            ),
            _ => continue,
        };
        if addr.is_ipv4() != (family == 4) {
            return Err(ParseError::Inconsistent(
                "CTA_TUPLE_IP address family differs from nfgenmsg",
            ));
        }
        *slot = Some(addr);
    }
    Ok((
        src.ok_or(ParseError::Missing("CTA_IP_*_SRC"))?,
        dst.ok_or(ParseError::Missing("CTA_IP_*_DST"))?,
    ))
}

/// What `CTA_TUPLE_PROTO` says about layer 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4 {
    pub num: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// (type, code, echo id) for ICMP and ICMPv6.
    pub icmp: Option<(u8, u8, u16)>,
}

/// `CTA_TUPLE_PROTO`: protocol number, ports, or ICMP/ICMPv6 type, code and id
/// (`nf_ct_port_tuple_to_nlattr`, `icmp_tuple_to_nlattr`, `icmpv6_tuple_to_nlattr`, which
/// always emit all three ICMP attributes).
pub fn parse_tuple_proto(buf: &[u8]) -> Result<L4, ParseError> {
    let mut num = None;
    let (mut sport, mut dport) = (None, None);
    let (mut icmp_id, mut icmp_type, mut icmp_code) = (None, None, None);
    for attr in Attrs::new(buf) {
        let (ty, p) = attr?;
        match ProtoAttr::from(ty) {
            ProtoAttr::Num => num = Some(u8_of(p, "CTA_PROTO_NUM")?),
            ProtoAttr::SrcPort => sport = Some(be16(p, "CTA_PROTO_SRC_PORT")?),
            ProtoAttr::DstPort => dport = Some(be16(p, "CTA_PROTO_DST_PORT")?),
            ProtoAttr::IcmpId => icmp_id = Some(be16(p, "CTA_PROTO_ICMP_ID")?),
            ProtoAttr::IcmpType => icmp_type = Some(u8_of(p, "CTA_PROTO_ICMP_TYPE")?),
            ProtoAttr::IcmpCode => icmp_code = Some(u8_of(p, "CTA_PROTO_ICMP_CODE")?),
            ProtoAttr::Icmpv6Id => icmp_id = Some(be16(p, "CTA_PROTO_ICMPV6_ID")?),
            ProtoAttr::Icmpv6Type => icmp_type = Some(u8_of(p, "CTA_PROTO_ICMPV6_TYPE")?),
            ProtoAttr::Icmpv6Code => icmp_code = Some(u8_of(p, "CTA_PROTO_ICMPV6_CODE")?),
            _ => {}
        }
    }
    let num = num.ok_or(ParseError::Missing("CTA_PROTO_NUM"))?;
    let icmp = match (icmp_type, icmp_code, icmp_id) {
        (None, None, None) => None,
        (Some(t), Some(c), Some(id)) => Some((t, c, id)),
        _ => {
            return Err(ParseError::Missing(
                "one of CTA_PROTO_ICMP{,V6}_TYPE/CODE/ID",
            ));
        }
    };
    if icmp.is_some() && num != PROTO_ICMP && num != PROTO_ICMPV6 {
        return Err(ParseError::Inconsistent(
            "ICMP attributes on a non-ICMP tuple",
        ));
    }
    Ok(L4 {
        num,
        sport,
        dport,
        icmp,
    })
}

/// `CTA_PROTOINFO` → the TCP state, when it is TCP (DCCP and SCTP are ignored).
pub fn parse_protoinfo(buf: &[u8]) -> Result<Option<u8>, ParseError> {
    let mut state = None;
    for attr in Attrs::new(buf) {
        let (ty, p) = attr?;
        if ProtoinfoAttr::from(ty) == ProtoinfoAttr::Tcp {
            state = parse_protoinfo_tcp(p)?;
        }
    }
    Ok(state)
}

/// `CTA_PROTOINFO_TCP` → `CTA_PROTOINFO_TCP_STATE`.
pub fn parse_protoinfo_tcp(buf: &[u8]) -> Result<Option<u8>, ParseError> {
    let mut state = None;
    for attr in Attrs::new(buf) {
        let (ty, p) = attr?;
        if ProtoinfoTcpAttr::from(ty) == ProtoinfoTcpAttr::State {
            state = Some(u8_of(p, "CTA_PROTOINFO_TCP_STATE")?);
        }
    }
    Ok(state)
}

/// `CTA_COUNTERS_ORIG` / `_REPLY` → (packets, bytes). Present only with
/// `nf_conntrack_acct=1` *when the entry was created*.
pub fn parse_counters(buf: &[u8]) -> Result<(u64, u64), ParseError> {
    let (mut packets, mut bytes) = (None, None);
    for attr in Attrs::new(buf) {
        let (ty, p) = attr?;
        match CountersAttr::from(ty) {
            CountersAttr::Packets => packets = Some(be64(p, "CTA_COUNTERS_PACKETS")?),
            CountersAttr::Bytes => bytes = Some(be64(p, "CTA_COUNTERS_BYTES")?),
            CountersAttr::Packets32 => {
                packets = Some(u64::from(be32(p, "CTA_COUNTERS32_PACKETS")?))
            }
            CountersAttr::Bytes32 => bytes = Some(u64::from(be32(p, "CTA_COUNTERS32_BYTES")?)),
            _ => {}
        }
    }
    Ok((
        packets.ok_or(ParseError::Missing("CTA_COUNTERS_PACKETS"))?,
        bytes.ok_or(ParseError::Missing("CTA_COUNTERS_BYTES"))?,
    ))
}

/// `CTA_TIMESTAMP` → (start, stop) in unix ms. A zero stamp means "not set".
pub fn parse_timestamp(buf: &[u8]) -> Result<(Option<i64>, Option<i64>), ParseError> {
    let (mut start, mut stop) = (None, None);
    for attr in Attrs::new(buf) {
        let (ty, p) = attr?;
        match TimestampAttr::from(ty) {
            TimestampAttr::Start => start = ns_to_ms(be64(p, "CTA_TIMESTAMP_START")?),
            TimestampAttr::Stop => stop = ns_to_ms(be64(p, "CTA_TIMESTAMP_STOP")?),
            _ => {}
        }
    }
    Ok((start, stop))
}

fn ns_to_ms(ns: u64) -> Option<i64> {
    // u64::MAX ns / 1e6 fits an i64 with room to spare.
    (ns != 0).then_some((ns / 1_000_000) as i64)
}

/// Decodes a datagram through neli's own (allocating) decoder and returns, per message,
/// the number of top-level attributes neli saw (`None` for control messages). Tests use it
/// to cross-check [`super::netlink::Attrs`] on real captures; the throughput test uses it as the baseline
/// the in-place walker is measured against.
#[cfg(test)]
pub fn neli_attr_counts(datagram: &[u8]) -> Result<Vec<Option<usize>>, neli::err::DeError> {
    let buf: neli::types::NlBuffer<u16, Nfgenmsg> =
        neli::types::NlBuffer::from_bytes_with_input(&mut Cursor::new(datagram), datagram.len())?;
    Ok(buf
        .into_iter()
        .map(|m| m.get_payload().map(|p| p.attrs.as_ref().len()))
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::collect::netlink::{
        NLA_F_NESTED, NLA_F_NET_BYTEORDER, NLA_HDRLEN, NLA_TYPE_MASK, NLMSG_HDRLEN, NlMessages,
        align4, le_capture_in_host_order, ne_u16, ne_u32,
    };

    /// The datagrams of a hex capture (one per line, taken on x86-64), in this CPU's byte
    /// order.
    pub(crate) fn unhex(text: &str) -> Vec<Vec<u8>> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let le: Vec<u8> = (0..l.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&l[i..i + 2], 16).expect("fixture is hex"))
                    .collect();
                le_capture_in_host_order(&le)
            })
            .collect()
    }

    const EVENTS: &str = include_str!("fixtures/events.hex");
    const DUMP: &str = include_str!("fixtures/dump.hex");

    // `IPS_*` bits (`linux/netfilter/nf_conntrack_common.h`).
    const IPS_SEEN_REPLY: u32 = 1 << 1;
    const IPS_ASSURED: u32 = 1 << 2;
    const IPS_CONFIRMED: u32 = 1 << 3;
    const IPS_SRC_NAT: u32 = 1 << 4;
    const IPS_DYING: u32 = 1 << 9;

    fn entries(text: &str) -> Vec<CtEntry> {
        let mut out = Vec::new();
        for d in unhex(text) {
            for m in NlMessages::new(&d) {
                let m = m.expect("fixture frames");
                if let Decoded::Entry(e) = decode(&m).expect("fixture decodes") {
                    out.push(e);
                }
            }
        }
        out
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// All messages of the flow `pick` selects (by its DESTROY), in order.
    fn lifecycle(all: &[CtEntry], pick: impl Fn(&CtEntry) -> bool) -> Vec<CtEntry> {
        let destroy = all
            .iter()
            .find(|e| e.kind == CtKind::Destroy && pick(e))
            .expect("flow has a DESTROY in the fixture");
        let id = destroy.flow.ident();
        all.iter()
            .filter(|e| e.flow.ident() == id)
            .cloned()
            .collect()
    }

    #[test]
    fn every_fixture_message_parses_and_agrees_with_neli() {
        let mut messages = 0;
        for text in [EVENTS, DUMP] {
            for d in unhex(text) {
                let neli = neli_attr_counts(&d).expect("neli decodes the capture");
                let ours: Vec<Option<usize>> = NlMessages::new(&d)
                    .map(|m| {
                        let m = m.expect("frames");
                        let d = decode(&m).expect("decodes");
                        matches!(d, Decoded::Entry(_)).then(|| {
                            Attrs::new(&m.payload[NFGENMSG_LEN..])
                                .inspect(|a| assert!(a.is_ok(), "{a:?}"))
                                .count()
                        })
                    })
                    .collect();
                assert_eq!(neli.len(), ours.len());
                for (n, o) in neli.iter().zip(&ours) {
                    if let Some(o) = o {
                        assert_eq!(Some(*o), *n, "top-level attribute count");
                    }
                }
                messages += ours.len();
            }
        }
        assert!(messages >= 35, "{messages}");
    }

    #[test]
    fn icmp_v4_through_masquerade() {
        let all = entries(EVENTS);
        let life = lifecycle(&all, |e| e.flow.proto == PROTO_ICMP);
        let (new, end) = (&life[0], life.last().expect("non-empty"));
        assert_eq!(new.kind, CtKind::New);
        assert!(!new.has_counters_orig && new.flow.kernel_start_ms.is_none());
        let f = &end.flow;
        assert_eq!((f.family, f.proto), (4, PROTO_ICMP));
        assert_eq!((f.orig.src, f.orig.dst), (ip("10.99.1.2"), ip("192.0.2.2")));
        // Masquerade: the reply goes to the router's WAN address.
        assert_eq!(
            (f.reply.src, f.reply.dst),
            (ip("192.0.2.2"), ip("192.0.2.1"))
        );
        let (t, c, id) = f.orig.icmp.expect("icmp");
        assert_eq!((t, c), (8, 0));
        assert_eq!(f.reply.icmp, Some((0, 0, id)));
        assert_eq!((f.orig.sport, f.orig.dport), (None, None));
        // ping -c 2: 2 × (20 IP + 8 ICMP + 56 data) each way.
        assert_eq!(
            f.counters,
            Counters {
                orig_bytes: 168,
                orig_packets: 2,
                reply_bytes: 168,
                reply_packets: 2
            }
        );
        assert_eq!(
            f.status & (IPS_SRC_NAT | IPS_DYING),
            IPS_SRC_NAT | IPS_DYING
        );
        let (start, stop) = (
            f.kernel_start_ms.expect("start"),
            f.kernel_stop_ms.expect("stop"),
        );
        assert!(start > 1_600_000_000_000 && stop > start && stop - start < 10_000);
        assert!(end.has_status && end.has_counters_orig && end.has_counters_reply);
    }

    #[test]
    fn icmpv6_routed_without_nat() {
        let all = entries(EVENTS);
        let life = lifecycle(&all, |e| e.flow.proto == PROTO_ICMPV6);
        let f = &life.last().expect("non-empty").flow;
        assert_eq!(f.family, 6);
        assert_eq!(
            (f.orig.src, f.orig.dst),
            (ip("fd99:1::2"), ip("2001:db8:99::2"))
        );
        assert_eq!((f.reply.src, f.reply.dst), (f.orig.dst, f.orig.src));
        let (t, c, id) = f.orig.icmp.expect("icmpv6");
        assert_eq!((t, c), (128, 0));
        assert_eq!(f.reply.icmp, Some((129, 0, id)));
        // 2 × (40 IPv6 + 8 ICMPv6 + 56 data) each way.
        assert_eq!((f.counters.orig_bytes, f.counters.reply_bytes), (208, 208));
        assert_eq!(f.status & IPS_SRC_NAT, 0);
    }

    #[test]
    fn udp_with_mark_and_zone() {
        let all = entries(EVENTS);
        let echo = lifecycle(&all, |e| e.flow.orig.dport == Some(5353));
        let f = &echo.last().expect("non-empty").flow;
        assert_eq!(f.proto, crate::flow::PROTO_UDP);
        assert_eq!(f.mark, 42);
        assert_eq!(f.zone, 0);
        assert_eq!(f.reply.sport, Some(5353));
        assert_eq!(f.reply.dport, f.orig.sport);
        // "hello\n": 20 IP + 8 UDP + 6 each way.
        assert_eq!((f.counters.orig_packets, f.counters.orig_bytes), (1, 34));
        assert_eq!((f.counters.reply_packets, f.counters.reply_bytes), (1, 34));
        assert_ne!(f.status & IPS_SEEN_REPLY, 0);

        let zoned = lifecycle(&all, |e| e.flow.orig.dport == Some(7777));
        let f = &zoned.last().expect("non-empty").flow;
        assert_eq!(f.zone, 7);
        assert_eq!(f.mark, 0);
        // "zone\n", never answered.
        assert_eq!((f.counters.orig_packets, f.counters.orig_bytes), (1, 33));
        assert_eq!(f.counters.reply_packets, 0);
        assert_eq!(f.status & IPS_SEEN_REPLY, 0);
        assert!(zoned.iter().all(|e| e.flow.zone == 7));
    }

    #[test]
    fn tcp_v4_lifecycle_states_and_counters() {
        let all = entries(EVENTS);
        let life = lifecycle(&all, |e| {
            e.flow.family == 4 && e.flow.orig.dport == Some(8080)
        });
        assert_eq!(life[0].kind, CtKind::New);
        assert_eq!(life[0].flow.tcp_state, Some(1), "SYN_SENT");
        assert!(
            life[1..life.len() - 1]
                .iter()
                .all(|e| e.kind == CtKind::Update)
        );
        assert!(
            life.iter().any(|e| e.flow.tcp_state == Some(3)),
            "ESTABLISHED"
        );
        let end = life.last().expect("non-empty");
        assert_eq!(end.kind, CtKind::Destroy);
        let f = &end.flow;
        assert_eq!(f.state_name(), Some("TIME_WAIT"));
        assert_eq!(
            (f.reply.src, f.reply.dst),
            (ip("192.0.2.2"), ip("192.0.2.1"))
        );
        assert_eq!(f.reply.sport, Some(8080));
        assert_eq!(f.reply.dport, f.orig.sport);
        assert!(f.counters.orig_packets >= 5 && f.counters.reply_packets >= 3);
        assert!(f.counters.orig_bytes > 200 && f.counters.reply_bytes > 150);
        let want = IPS_SEEN_REPLY | IPS_ASSURED | IPS_CONFIRMED | IPS_SRC_NAT | IPS_DYING;
        assert_eq!(f.status & want, want);
        // Every message of one flow has the same identity.
        assert!(
            life.iter()
                .all(|e| e.flow.ct_id == f.ct_id && e.flow.orig == f.orig)
        );
    }

    #[test]
    fn tcp_v6_lifecycle() {
        let all = entries(EVENTS);
        let life = lifecycle(&all, |e| e.flow.orig.dport == Some(8086));
        let f = &life.last().expect("non-empty").flow;
        assert_eq!((f.family, f.proto), (6, crate::flow::PROTO_TCP));
        assert_eq!(
            (f.orig.src, f.orig.dst),
            (ip("fd99:1::2"), ip("2001:db8:99::2"))
        );
        assert_eq!((f.reply.src, f.reply.dst), (f.orig.dst, f.orig.src));
        assert_eq!(f.tcp_state, Some(7));
        assert!(f.counters.orig_bytes > 300 && f.kernel_stop_ms.is_some());
    }

    #[test]
    fn dump_lists_live_flows_with_counters_and_start_times() {
        let dump = unhex(DUMP);
        let last = dump.last().expect("dump datagrams");
        let ends_with_done = NlMessages::new(last)
            .last()
            .is_some_and(|m| m.is_ok_and(|m| decode(&m) == Ok(Decoded::Done)));
        assert!(ends_with_done);
        let all = entries(DUMP);
        // Every flow of the capture (see fixtures/README.md) is live at the dump.
        assert!(all.len() >= 7, "{}", all.len());
        assert!(
            all.iter()
                .any(|e| e.flow.proto == PROTO_ICMPV6 && e.flow.family == 6)
        );
        assert!(all.iter().any(|e| e.flow.zone == 7));
        assert!(all.iter().any(|e| e.flow.mark == 42));
        for e in &all {
            assert_eq!(
                e.kind,
                CtKind::Update,
                "dump entries are NEW without NLM_F_CREATE"
            );
            assert!(e.has_status && e.has_counters_orig && e.has_counters_reply);
            assert!(e.flow.kernel_start_ms.is_some() && e.flow.kernel_stop_ms.is_none());
        }
        let established = all
            .iter()
            .find(|e| e.flow.tcp_state == Some(3))
            .expect("the long connection is established");
        assert_eq!(established.flow.orig.dport, Some(8080));
        assert!(established.flow.counters.orig_packets >= 3);
        assert!(established.flow.counters.reply_bytes > 0);
    }

    #[test]
    fn dump_request_is_ct_get_dump_for_both_families() {
        let req = dump_request(7).expect("serializes");
        assert_eq!(req.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        assert_eq!(ne_u32(&req[0..4]) as usize, req.len());
        assert_eq!(
            ne_u16(&req[4..6]),
            0x0101,
            "IPCTNL_MSG_CT_GET, never GET_CTRZERO"
        );
        let flags = ne_u16(&req[6..8]);
        assert_eq!(flags, libc::NLM_F_REQUEST as u16 | libc::NLM_F_DUMP as u16);
        assert_eq!(ne_u32(&req[8..12]), 7);
        assert_eq!(&req[16..20], &[0, 0, 0, 0], "AF_UNSPEC, v0, res_id 0");
    }

    // ---- crafted messages --------------------------------------------------------------

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let len = (NLA_HDRLEN + payload.len()) as u16;
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    /// An attribute header alone, for lengths that do not match a payload.
    fn attr_header(len: u16, ty: u16) -> Vec<u8> {
        [len.to_ne_bytes(), ty.to_ne_bytes()].concat()
    }

    fn nest(ty: u16, children: &[Vec<u8>]) -> Vec<u8> {
        attr(ty | NLA_F_NESTED, &children.concat())
    }

    fn message(ty: u16, flags: u16, family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let body = attrs.concat();
        let len = (NLMSG_HDRLEN + NFGENMSG_LEN + body.len()) as u32;
        let mut v = len.to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&1u32.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(&[family, 0, 0, 0]);
        v.extend_from_slice(&body);
        v
    }

    fn v4_tuple(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<Vec<u8>> {
        vec![
            nest(1, &[attr(1, &src), attr(2, &dst)]),
            nest(
                2,
                &[
                    attr(1, &[6]),
                    attr(2, &sport.to_be_bytes()),
                    attr(3, &dport.to_be_bytes()),
                ],
            ),
        ]
    }

    /// A DESTROY of a TCP flow, with 32-bit counters and `NLA_F_NET_BYTEORDER` set on the
    /// id, as an older kernel or another sender might write it.
    fn crafted_destroy() -> Vec<Vec<u8>> {
        vec![
            nest(1, &v4_tuple([10, 0, 0, 2], [1, 2, 3, 4], 40000, 443)),
            nest(2, &v4_tuple([1, 2, 3, 4], [5, 6, 7, 8], 443, 40001)),
            attr(3, &0x19eu32.to_be_bytes()),
            nest(4, &[nest(1, &[attr(1, &[7]), attr(2, &[7])])]),
            attr(8, &5u32.to_be_bytes()),
            nest(
                9,
                &[
                    attr(3, &10u32.to_be_bytes()),
                    attr(4, &1000u32.to_be_bytes()),
                ],
            ),
            nest(
                10,
                &[
                    attr(1, &20u64.to_be_bytes()),
                    attr(2, &30_000u64.to_be_bytes()),
                ],
            ),
            attr(12 | NLA_F_NET_BYTEORDER, &0xdead_beefu32.to_be_bytes()),
            attr(18, &3u16.to_be_bytes()),
            nest(
                20,
                &[
                    attr(1, &1_700_000_000_123_456_789u64.to_be_bytes()),
                    attr(2, &1_700_000_060_000_000_000u64.to_be_bytes()),
                ],
            ),
            attr(99, &[1, 2, 3]), // unknown attributes are skipped
        ]
    }

    fn parse_one(bytes: &[u8]) -> Result<CtEntry, ParseError> {
        let mut it = NlMessages::new(bytes);
        let m = it
            .next()
            .ok_or(ParseError::Frame(FrameError::Truncated("nothing")))??;
        match decode(&m)? {
            Decoded::Entry(e) => Ok(e),
            other => panic!("not an entry: {other:?}"),
        }
    }

    #[test]
    fn crafted_message_parses_every_field() {
        let e = parse_one(&message(0x0102, 0, 2, &crafted_destroy())).expect("parses");
        assert_eq!(e.kind, CtKind::Destroy);
        let f = &e.flow;
        assert_eq!(f.ct_id, 0xdead_beef);
        assert_eq!((f.orig.sport, f.orig.dport), (Some(40000), Some(443)));
        assert_eq!((f.reply.src, f.reply.dst), (ip("1.2.3.4"), ip("5.6.7.8")));
        assert_eq!(
            (f.status, f.tcp_state, f.mark, f.zone),
            (0x19e, Some(7), 5, 3)
        );
        assert_eq!(
            f.counters,
            Counters {
                orig_packets: 10,
                orig_bytes: 1000,
                reply_packets: 20,
                reply_bytes: 30_000
            }
        );
        assert_eq!(f.kernel_start_ms, Some(1_700_000_000_123));
        assert_eq!(f.kernel_stop_ms, Some(1_700_000_060_000));
    }

    #[test]
    fn new_and_update_are_told_apart_by_nlm_f_create() {
        let attrs = crafted_destroy();
        let new = parse_one(&message(0x0100, NLM_F_CREATE | 0x200, 2, &attrs)).expect("new");
        let upd = parse_one(&message(0x0100, 0, 2, &attrs)).expect("update");
        assert_eq!((new.kind, upd.kind), (CtKind::New, CtKind::Update));
    }

    #[test]
    fn merged_with_keeps_what_the_message_lacked() {
        let mut prev = parse_one(&message(0x0100, 0, 2, &crafted_destroy()))
            .expect("p")
            .flow;
        prev.kernel_stop_ms = None;
        // An UPDATE with a new TCP state and no counters, status or timestamps.
        let mut attrs = crafted_destroy();
        attrs.retain(|a| ![3u16, 9, 10, 20].contains(&(ne_u16(&a[2..4]) & NLA_TYPE_MASK)));
        attrs[2] = nest(4, &[nest(1, &[attr(1, &[8])])]);
        let upd = parse_one(&message(0x0100, 0, 2, &attrs)).expect("update");
        assert!(!upd.has_status && !upd.has_counters_orig && !upd.has_counters_reply);
        let merged = upd.merged_with(&prev);
        assert_eq!(merged.tcp_state, Some(8));
        assert_eq!(merged.counters, prev.counters);
        assert_eq!(merged.status, prev.status);
        assert_eq!(merged.kernel_start_ms, prev.kernel_start_ms);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let good = crafted_destroy();
        let with = |i: usize, a: Vec<u8>| {
            let mut v = good.clone();
            v[i] = a;
            message(0x0102, 0, 2, &v)
        };
        let without = |ty: u16| {
            let v: Vec<_> = good
                .iter()
                .filter(|a| ne_u16(&a[2..4]) & NLA_TYPE_MASK != ty)
                .cloned()
                .collect();
            message(0x0102, 0, 2, &v)
        };
        let cases: Vec<(&str, Vec<u8>, ParseError)> = vec![
            ("no CTA_ID", without(12), ParseError::Missing("CTA_ID")),
            (
                "no reply tuple",
                without(2),
                ParseError::Missing("CTA_TUPLE_REPLY"),
            ),
            (
                "3-byte port",
                with(
                    0,
                    nest(
                        1,
                        &[
                            nest(1, &[attr(1, &[10, 0, 0, 2]), attr(2, &[1, 2, 3, 4])]),
                            nest(2, &[attr(1, &[6]), attr(2, &[0, 80, 0])]),
                        ],
                    ),
                ),
                ParseError::Frame(FrameError::Length {
                    what: "CTA_PROTO_SRC_PORT",
                    len: 3,
                    expected: 2,
                }),
            ),
            (
                "IPv6 address in an IPv4 entry",
                with(
                    0,
                    nest(
                        1,
                        &[
                            nest(1, &[attr(3, &[0; 16]), attr(4, &[0; 16])]),
                            nest(2, &[attr(1, &[6])]),
                        ],
                    ),
                ),
                ParseError::Inconsistent("CTA_TUPLE_IP address family differs from nfgenmsg"),
            ),
            (
                "ICMP id without type and code",
                with(
                    0,
                    nest(
                        1,
                        &[
                            nest(1, &[attr(1, &[10, 0, 0, 2]), attr(2, &[1, 2, 3, 4])]),
                            nest(2, &[attr(1, &[1]), attr(4, &[0, 1])]),
                        ],
                    ),
                ),
                ParseError::Missing("one of CTA_PROTO_ICMP{,V6}_TYPE/CODE/ID"),
            ),
            (
                "5-byte counter",
                with(5, nest(9, &[attr(1, &[0; 5]), attr(2, &[0; 8])])),
                ParseError::Frame(FrameError::Length {
                    what: "CTA_COUNTERS_PACKETS",
                    len: 5,
                    expected: 8,
                }),
            ),
            (
                "counters without bytes",
                with(5, nest(9, &[attr(1, &[0; 8])])),
                ParseError::Missing("CTA_COUNTERS_BYTES"),
            ),
            (
                "nla_len 2",
                with(7, [attr_header(2, 12), vec![0; 4]].concat()),
                ParseError::Frame(FrameError::Length {
                    what: "nla_len",
                    len: 2,
                    expected: 4,
                }),
            ),
            (
                "nla_len past the end",
                with(10, attr_header(200, 99)),
                ParseError::Frame(FrameError::Truncated("attribute")),
            ),
            (
                "AF_BRIDGE",
                message(0x0102, 0, 7, &good),
                ParseError::Family(7),
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(parse_one(&bytes), Err(want), "{what}");
        }
        // Framing errors.
        let msg = message(0x0102, 0, 2, &good);
        let mut short_len = msg.clone();
        short_len[0..4].copy_from_slice(&8u32.to_ne_bytes());
        assert!(matches!(
            parse_one(&short_len),
            Err(ParseError::Frame(FrameError::Length {
                what: "nlmsg_len",
                ..
            }))
        ));
        assert_eq!(
            parse_one(&msg[..10]),
            Err(ParseError::Frame(FrameError::Truncated(
                "netlink message header"
            )))
        );
        assert_eq!(
            parse_one(&msg[..40]),
            Err(ParseError::Frame(FrameError::Truncated("netlink message")))
        );
        let mut no_nfgen = msg[..NLMSG_HDRLEN + 2].to_vec();
        no_nfgen[0..4].copy_from_slice(&(NLMSG_HDRLEN as u32 + 2).to_ne_bytes());
        assert_eq!(
            parse_one(&no_nfgen),
            Err(ParseError::Frame(FrameError::Truncated("nfgenmsg")))
        );
    }

    /// Every real message cut at every length, with `nlmsg_len` left alone (framing must
    /// fail) and fixed up to the cut (parsing must fail unless the cut falls exactly
    /// between top-level attributes).
    #[test]
    fn truncated_real_messages_are_errors() {
        for text in [EVENTS, DUMP] {
            for d in unhex(text) {
                let msgs: Vec<NlMsg<'_>> =
                    NlMessages::new(&d).map(|m| m.expect("frames")).collect();
                for m in msgs.iter().filter(|m| m.ty >> 8 == NFNL_SUBSYS_CTNETLINK) {
                    let mut whole = Vec::new();
                    let len = (NLMSG_HDRLEN + m.payload.len()) as u32;
                    whole.extend_from_slice(&len.to_ne_bytes());
                    whole.extend_from_slice(&m.ty.to_ne_bytes());
                    whole.extend_from_slice(&m.flags.to_ne_bytes());
                    whole.extend_from_slice(&[0; 8]);
                    whole.extend_from_slice(m.payload);
                    let mut boundaries = vec![NLMSG_HDRLEN + NFGENMSG_LEN];
                    let mut at = NLMSG_HDRLEN + NFGENMSG_LEN;
                    for a in Attrs::new(&m.payload[NFGENMSG_LEN..]) {
                        let (_, p) = a.expect("attr");
                        at += NLA_HDRLEN + p.len();
                        boundaries.push(at);
                        at = align4(at);
                        boundaries.push(at);
                    }
                    for cut in 0..whole.len() {
                        let piece = &whole[..cut];
                        assert!(parse_one(piece).is_err(), "cut at {cut} framed");
                        let mut fixed = piece.to_vec();
                        if cut >= 4 {
                            fixed[0..4].copy_from_slice(&(cut as u32).to_ne_bytes());
                        }
                        let r = parse_one(&fixed);
                        if !boundaries.contains(&cut) {
                            assert!(r.is_err(), "cut at {cut} of {} parsed: {r:?}", whole.len());
                        }
                    }
                }
            }
        }
    }

    /// Random corruption of real messages never panics.
    #[test]
    fn corrupted_real_messages_never_panic() {
        let datagrams: Vec<Vec<u8>> = unhex(EVENTS).into_iter().chain(unhex(DUMP)).collect();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut ok, mut err) = (0, 0);
        for _ in 0..50_000 {
            let mut d = datagrams[next() as usize % datagrams.len()].clone();
            for _ in 0..1 + next() % 4 {
                let i = next() as usize % d.len();
                d[i] ^= 1 << (next() % 8);
            }
            for m in NlMessages::new(&d) {
                match m.map_err(ParseError::from).and_then(|m| decode(&m)) {
                    Ok(_) => ok += 1,
                    Err(_) => err += 1,
                }
            }
        }
        assert!(ok > 0 && err > 0, "ok {ok} err {err}");
        // Pure garbage too.
        for len in 0..200 {
            let d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            for m in NlMessages::new(&d) {
                let _ = m.map_err(ParseError::from).and_then(|m| decode(&m));
            }
        }
    }
}
