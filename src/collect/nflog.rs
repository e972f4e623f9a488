//! Firewall drops: connection attempts from the WAN that the router refuses,
//! read from nfnetlink_log (NFLOG).
//!
//! netmon does not know the router's firewall (fw4, a hand-written ruleset, iptables)
//! and must not edit it. A chain placed after the router's filter chains cannot see a
//! dropped packet — `drop` ends its traversal — so "refused" is measured as a
//! difference instead. netmon's table logs every new TCP/UDP attempt arriving on a WAN
//! interface twice to one NFLOG group (`crate::firewall::drop_log_chains`):
//!
//! * `netmon-seen` at priority filter − 10, before the router's filter chains;
//! * `netmon-passed` at filter + 10, after them. `accept` ends only its own base chain,
//!   so every attempt the router let through reaches this rule; a dropped or rejected
//!   one never does.
//!
//! Both rules run in the same softirq pass over the same packet, so its `passed` message
//! follows its `seen` message on the socket. An attempt seen but not passed within
//! [`GRACE`] was refused. Attempts the router accepted — whether a service then answered
//! or not — are never counted. Retransmitted SYNs of a refused attempt are new attempts
//! to conntrack (the dropped entry was never confirmed) and count again, as they do in
//! any firewall log.
//!
//! Limits: both rules are rate-limited (`firewall.drop_log_rate` per second, the second
//! rule ten times that), so a flood is sampled, not counted in full, and netlink
//! traffic stays bounded. Pending attempts ([`MAX_PENDING`]) and distinct
//! (source, port) pairs per minute ([`MAX_KEYS`]) are capped in memory; the store caps
//! sources per minute. Messages that cannot be parsed are counted in
//! `netmon_nflog_messages_total{result}`.
//!
//! Message format: `include/uapi/linux/netfilter/nfnetlink_log.h`; a packet message is
//! `nfgenmsg` then attributes; `NFULA_PAYLOAD` starts at the network header.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::collect::capture::{CaptureStatus, Failure, Source};
use crate::collect::netlink::{
    self, Attrs, FrameError, NFGENMSG_LEN, NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, NLMSG_MIN_TYPE,
    NlMessages, be32, ne_i32, put_attr,
};
use crate::config::Config;
use crate::event::WriterHandle;
use crate::event::{DropCount, Event};
use crate::firewall::{PREFIX_PASSED, PREFIX_SEEN};

// nfnetlink.h / nfnetlink_log.h
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_TIMESTAMP: u16 = 3;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;

/// Bytes of each packet the kernel copies: an IPv6 header (40) and the ports.
pub const COPY_RANGE: u32 = 64;
/// How long a `seen` attempt waits for its `passed` message before it counts as refused.
/// They are sent microseconds apart; the margin covers a slow reader.
pub const GRACE: Duration = Duration::from_secs(2);
/// Attempts waiting for a verdict at most: more than the rate limit's burst, so only a
/// reader stalled for seconds sheds (counted as `result="overflow"`).
pub const MAX_PENDING: usize = 65_536;
/// Distinct (minute, source, protocol, port, interface) counts held between flushes.
pub const MAX_KEYS: usize = 20_000;
/// How often counts go to the writer.
const FLUSH_EVERY: Duration = Duration::from_secs(2);
/// How often a group another program held is tried again.
pub const REBIND_EVERY: Duration = Duration::from_secs(10);

/// Which of netmon's two rules logged a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Seen,
    Passed,
}

/// One logged packet, reduced to what a drop count needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedPacket {
    pub stage: Stage,
    pub in_ifindex: u32,
    /// Kernel timestamp (unix ms), when the kernel adds one.
    pub ts_ms: Option<i64>,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPPROTO_TCP (6) or IPPROTO_UDP (17).
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NflogError {
    #[error("truncated message or attribute")]
    Truncated,
    #[error("message from another logger (prefix not netmon's)")]
    Foreign,
    #[error("no packet payload or input interface")]
    Missing,
    #[error("payload is not IPv4/IPv6 TCP/UDP with ports")]
    Payload,
}

impl NflogError {
    fn label(&self) -> &'static str {
        match self {
            NflogError::Truncated => "truncated",
            NflogError::Foreign => "foreign",
            NflogError::Missing => "missing",
            NflogError::Payload => "bad-payload",
        }
    }
}

impl From<FrameError> for NflogError {
    fn from(_: FrameError) -> NflogError {
        NflogError::Truncated
    }
}

/// A big-endian field of the logged packet's own headers at byte `at`.
fn be16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Splits a datagram into netlink messages: (type, body after the 16-byte header).
pub fn messages(datagram: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), NflogError>> {
    NlMessages::new(datagram).map(|m| m.map(|m| (m.ty, m.payload)).map_err(NflogError::from))
}

/// Parses one `NFULNL_MSG_PACKET` body (after the netlink header).
pub fn parse_packet(body: &[u8]) -> Result<LoggedPacket, NflogError> {
    let attrs = body.get(NFGENMSG_LEN..).ok_or(NflogError::Truncated)?;
    let (mut prefix, mut ifindex, mut ts_ms, mut payload) = (None, None, None, None);
    for attr in Attrs::new(attrs) {
        let (kind, value) = attr?;
        match kind {
            NFULA_PREFIX => {
                let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                prefix = Some(&value[..end]);
            }
            NFULA_IFINDEX_INDEV => ifindex = be32(value, "NFULA_IFINDEX_INDEV").ok(),
            // struct nfulnl_msg_packet_timestamp { __aligned_be64 sec, usec; }
            NFULA_TIMESTAMP => {
                if let (Some(s), Some(us)) = (value.get(..8), value.get(8..16)) {
                    let s = i64::from_be_bytes(s.try_into().map_err(|_| NflogError::Truncated)?);
                    let us = i64::from_be_bytes(us.try_into().map_err(|_| NflogError::Truncated)?);
                    ts_ms = Some(s.saturating_mul(1000).saturating_add(us / 1000));
                }
            }
            NFULA_PAYLOAD => payload = Some(value),
            _ => {}
        }
    }
    let stage = match prefix {
        Some(p) if p == PREFIX_SEEN.as_bytes() => Stage::Seen,
        Some(p) if p == PREFIX_PASSED.as_bytes() => Stage::Passed,
        _ => return Err(NflogError::Foreign),
    };
    let (Some(in_ifindex), Some(payload)) = (ifindex, payload) else {
        return Err(NflogError::Missing);
    };
    let (src, dst, proto, l4) = ip_header(payload).ok_or(NflogError::Payload)?;
    if proto != 6 && proto != 17 {
        return Err(NflogError::Payload);
    }
    Ok(LoggedPacket {
        stage,
        in_ifindex,
        ts_ms,
        src,
        dst,
        proto,
        src_port: be16_at(l4, 0).ok_or(NflogError::Payload)?,
        dst_port: be16_at(l4, 2).ok_or(NflogError::Payload)?,
    })
}

/// Addresses, protocol and transport header of an IPv4 or IPv6 packet. IPv6 extension
/// headers are not walked: a new TCP/UDP connection's first packet carries none in
/// practice, and one that does is counted as a bad payload, not misread.
fn ip_header(p: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let src: [u8; 4] = p.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            // A non-first fragment has no ports.
            if be16_at(p, 6)? & 0x1fff != 0 || ihl < 20 {
                return None;
            }
            Some((
                Ipv4Addr::from(src).into(),
                Ipv4Addr::from(dst).into(),
                *p.get(9)?,
                p.get(ihl..)?,
            ))
        }
        6 => {
            let src: [u8; 16] = p.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            Some((
                Ipv6Addr::from(src).into(),
                Ipv6Addr::from(dst).into(),
                *p.get(6)?,
                p.get(40..)?,
            ))
        }
        _ => None,
    }
}

/// The part of an attempt that identifies it between its two log messages.
type AttemptKey = (IpAddr, IpAddr, u8, u16, u16);

/// Pairs `seen` with `passed` messages and counts the attempts left unpaired per minute.
/// Pure (time is passed in), so the unit tests drive it with fixtures.
#[derive(Debug, Default)]
pub struct DropTracker {
    /// Attempts seen, by 5-tuple: (when seen, unix ms; input interface index).
    pending: HashMap<AttemptKey, (i64, u32)>,
    /// Refused attempts per (minute, source, protocol, port, interface index).
    counts: HashMap<(i64, IpAddr, u8, u16, u32), u64>,
    /// Attempts shed because `pending` or `counts` was full.
    pub overflow: u64,
}

impl DropTracker {
    pub fn observe(&mut self, p: &LoggedPacket, now_ms: i64) {
        let key = (p.src, p.dst, p.proto, p.src_port, p.dst_port);
        match p.stage {
            Stage::Passed => {
                self.pending.remove(&key);
            }
            Stage::Seen => {
                if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&key) {
                    self.overflow += 1;
                    return;
                }
                // A second `seen` of the same tuple (a retransmitted SYN) before the first
                // expired: the first was refused (an accepted one would have passed).
                if let Some(old) = self
                    .pending
                    .insert(key, (p.ts_ms.unwrap_or(now_ms), p.in_ifindex))
                {
                    self.count(key, old);
                }
            }
        }
    }

    /// Moves attempts older than [`GRACE`] from pending to the counts.
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = now_ms - GRACE.as_millis() as i64;
        let expired: Vec<(AttemptKey, (i64, u32))> = self
            .pending
            .iter()
            .filter(|(_, (at, _))| *at <= cutoff)
            .map(|(k, v)| (*k, *v))
            .collect();
        for (key, v) in expired {
            self.pending.remove(&key);
            self.count(key, v);
        }
    }

    fn count(&mut self, (src, _, proto, _, dport): AttemptKey, (at, ifindex): (i64, u32)) {
        let k = (at - at.rem_euclid(60_000), src, proto, dport, ifindex);
        if self.counts.len() >= MAX_KEYS && !self.counts.contains_key(&k) {
            self.overflow += 1;
            return;
        }
        *self.counts.entry(k).or_insert(0) += 1;
    }

    /// Takes the counts, naming interfaces with `iface`.
    pub fn take(&mut self, iface: impl Fn(u32) -> String) -> Vec<DropCount> {
        let mut out: Vec<DropCount> = self
            .counts
            .drain()
            .map(
                |((minute_ms, src, proto, dst_port, ifx), attempts)| DropCount {
                    minute_ms,
                    src,
                    proto,
                    dst_port,
                    iface: iface(ifx),
                    attempts,
                },
            )
            .collect();
        out.sort_by_key(|a| (a.minute_ms, a.src, a.dst_port));
        out
    }
}

/// Interface name of an index (`if_indextoname`), or the index itself once the
/// interface is gone (a PPPoE session that reconnected).
fn ifname(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf is IF_NAMESIZE bytes, as if_indextoname(3) requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("if{index}");
    }
    // SAFETY: on success the kernel wrote a NUL-terminated name into buf.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A config request for log group `group`: `attr` is one NFULA_CFG_* attribute.
fn config_request(group: u16, seq: u32, attr_type: u16, value: &[u8]) -> Vec<u8> {
    // nfgenmsg: family AF_UNSPEC, version 0, res_id = group (big endian)
    let mut body = vec![0, 0];
    body.extend_from_slice(&group.to_be_bytes());
    put_attr(&mut body, attr_type, value);
    netlink::request(
        (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        &body,
    )
}

/// Sends a config request and waits for its ack (an `NLMSG_ERROR` with error 0).
fn configure(sock: &NlSocket, request: &[u8], what: &str) -> anyhow::Result<()> {
    sock.send(request, Msg::empty())
        .with_context(|| format!("nflog: sending {what}"))?;
    let mut buf = vec![0u8; 8192];
    for _ in 0..16 {
        let (n, _) = sock
            .recv(&mut buf[..], Msg::empty())
            .with_context(|| format!("nflog: waiting for the answer to {what}"))?;
        for msg in messages(&buf[..n.min(buf.len())]) {
            let Ok((kind, body)) = msg else { continue };
            if kind == NLMSG_ERROR {
                let errno = body.get(..4).map(ne_i32).unwrap_or(0);
                if errno == 0 {
                    return Ok(());
                }
                anyhow::bail!(
                    "nflog: {what} refused: {} (is another logger, e.g. ulogd, bound to this \
                     group? change firewall.drop_log_group)",
                    io::Error::from_raw_os_error(-errno)
                );
            }
        }
    }
    anyhow::bail!("nflog: no answer to {what}")
}

/// What is wrong when binding the group failed with `error`, and the owner's next step.
/// The kernel refuses a bind (`EPERM`, `nfulnl_recv_config`) while another netlink socket
/// holds the group.
fn bind_failure(group: u16, error: &anyhow::Error) -> Failure {
    let error = format!("{error:#}");
    let step = if error.contains("refused") {
        format!(
            "stop the other program that reads NFLOG group {group} (ulogd, a second netmon, a \
             packet logger) — netmon takes the group over within {} s — or set \
             firewall.drop_log_group to a free group (with firewall.manage = false, in your \
             firewall's log rules too) and restart netmon",
            REBIND_EVERY.as_secs()
        )
    } else {
        "run netmon with CAP_NET_ADMIN and load the kernel's NFLOG support (modprobe \
         nfnetlink_log; OpenWrt: kmod-nfnetlink-log)"
            .to_owned()
    };
    Failure {
        error,
        fix: format!("{step} (or set firewall.drop_log_rate = 0 to run without counting drops)"),
    }
}

/// Opens a netlink socket bound to NFLOG group `group`, copying [`COPY_RANGE`] bytes.
fn bind(group: u16) -> anyhow::Result<NlSocket> {
    let sock = NlSocket::new(NlFamily::Netfilter).context("nflog: opening a netlink socket")?;
    sock.bind(None, Groups::empty())
        .context("nflog: binding the netlink socket")?;
    configure(
        &sock,
        &config_request(group, 1, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]),
        &format!("binding NFLOG group {group}"),
    )?;
    // struct nfulnl_msg_config_mode { __be32 copy_range; __u8 copy_mode; __u8 _pad; }
    let mut mode = COPY_RANGE.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    configure(
        &sock,
        &config_request(group, 2, NFULA_CFG_MODE, &mode),
        "setting the NFLOG copy mode",
    )?;
    crate::collect::netlink::set_receive_timeout(&sock, Duration::from_millis(500), "nflog");
    Ok(sock)
}

/// The running collector thread.
pub struct NflogCollector {
    thread: JoinHandle<()>,
}

impl NflogCollector {
    /// Binds NFLOG group `firewall.drop_log_group` and starts the reader thread. The
    /// socket exists before netmon's table is loaded, so no logged attempt is missed.
    /// A group that cannot be bound (another program holds it) is reported broken in
    /// `capture` and tried again every [`REBIND_EVERY`] on the thread: drops are lost,
    /// flows are not. Errs only when the thread cannot start.
    pub fn start(
        config: &Config,
        writer: WriterHandle,
        shutdown: Arc<AtomicBool>,
        capture: CaptureStatus,
    ) -> anyhow::Result<NflogCollector> {
        let group = config.firewall.drop_log_group;
        let first = bind(group).map_err(|e| {
            let failure = bind_failure(group, &e);
            capture.fail(Source::Nflog, failure.clone());
            failure
        });
        if first.is_ok() {
            capture.ok(Source::Nflog);
        }
        metrics::describe_counter!(
            "netmon_nflog_messages_total",
            "NFLOG messages read, by result (seen, passed or the parse error)"
        );
        metrics::describe_counter!(
            "netmon_firewall_drops_total",
            "New inbound WAN connection attempts the router refused (as logged), by protocol"
        );
        let thread = std::thread::Builder::new()
            .name("nflog".into())
            .spawn(move || {
                let sock = match first {
                    Ok(sock) => sock,
                    Err(failure) => match rebind(group, failure, &capture, &shutdown) {
                        Some(sock) => sock,
                        None => return,
                    },
                };
                run(sock, writer, shutdown)
            })
            .context("starting the nflog thread")?;
        Ok(NflogCollector { thread })
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Tries to bind `group` every [`REBIND_EVERY`] until it works (the socket) or netmon
/// stops (`None`). `failure` is what the first attempt reported; a success clears it,
/// but not a different failure reported since (netmon's table missing).
fn rebind(
    group: u16,
    failure: Failure,
    capture: &CaptureStatus,
    shutdown: &AtomicBool,
) -> Option<NlSocket> {
    loop {
        let next = std::time::Instant::now() + REBIND_EVERY;
        while std::time::Instant::now() < next {
            if shutdown.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        match bind(group) {
            Ok(sock) => {
                capture.recovered(Source::Nflog, &failure);
                return Some(sock);
            }
            Err(e) => log::debug!("nflog: group {group} still not bound: {e:#}"),
        }
    }
}

fn run(sock: NlSocket, writer: WriterHandle, shutdown: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut tracker = DropTracker::default();
    let mut pending: Vec<DropCount> = Vec::new();
    let mut last_flush = std::time::Instant::now();
    let mut reported_overflow = 0;
    while !shutdown.load(Ordering::Relaxed) {
        match sock.recv(&mut buf[..], Msg::empty()) {
            Ok((n, _)) => {
                let now = crate::time::now_ms();
                for msg in messages(&buf[..n.min(buf.len())]) {
                    // The kernel ends a batch of messages with NLMSG_DONE (control
                    // types are below NLMSG_MIN_TYPE, 16): not a packet, not an error.
                    if matches!(msg, Ok((kind, _)) if kind < NLMSG_MIN_TYPE) {
                        continue;
                    }
                    let result = msg.and_then(|(kind, body)| {
                        if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                            return Err(NflogError::Foreign);
                        }
                        parse_packet(body)
                    });
                    let label = match &result {
                        Ok(p) if p.stage == Stage::Seen => "seen",
                        Ok(_) => "passed",
                        Err(e) => e.label(),
                    };
                    metrics::counter!("netmon_nflog_messages_total", "result" => label)
                        .increment(1);
                    if let Ok(p) = result {
                        tracker.observe(&p, now);
                    }
                }
            }
            Err(e) => crate::collect::netlink::on_recv_error(
                &e,
                "netmon_nflog_messages_total",
                "nflog: reading",
            ),
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            last_flush = std::time::Instant::now();
            tracker.expire(crate::time::now_ms());
            flush(&writer, &mut tracker, &mut pending);
            if tracker.overflow > reported_overflow {
                log::warn!(
                    "nflog: {} attempts not counted (too many at once)",
                    tracker.overflow - reported_overflow
                );
                reported_overflow = tracker.overflow;
            }
        }
    }
    // Shutting down: what is still pending had its grace period or never will.
    tracker.expire(i64::MAX);
    flush(&writer, &mut tracker, &mut pending);
}

fn flush(writer: &WriterHandle, tracker: &mut DropTracker, pending: &mut Vec<DropCount>) {
    let fresh = tracker.take(ifname);
    for d in &fresh {
        let proto = if d.proto == 6 { "tcp" } else { "udp" };
        metrics::counter!("netmon_firewall_drops_total", "proto" => proto).increment(d.attempts);
    }
    pending.extend(fresh);
    if pending.is_empty() {
        return;
    }
    if let Err(Event::Drops(mut back)) = writer.try_send(Event::Drops(std::mem::take(pending))) {
        // Writer busy: keep a bounded backlog for the next flush.
        back.truncate(MAX_KEYS);
        *pending = back;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an NFULNL_MSG_PACKET netlink message as the kernel sends it.
    pub(crate) fn packet_message(prefix: &str, ifindex: u32, payload: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut attr = |kind: u16, value: &[u8]| {
            attrs.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            attrs.extend_from_slice(&kind.to_ne_bytes());
            attrs.extend_from_slice(value);
            attrs.resize(attrs.len().next_multiple_of(4), 0);
        };
        attr(1, &[0x08, 0x00, 1, 0]); // NFULA_PACKET_HDR: ETH_P_IP, hook input
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        attr(NFULA_PREFIX, &p);
        attr(NFULA_IFINDEX_INDEV, &ifindex.to_be_bytes());
        let mut ts = 1_700_000_000i64.to_be_bytes().to_vec();
        ts.extend_from_slice(&250_000i64.to_be_bytes());
        attr(NFULA_TIMESTAMP, &ts);
        attr(NFULA_PAYLOAD, payload);
        let len = 16 + 4 + attrs.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[2, 0, 0x14, 0xea]); // AF_INET, v0, group 5354
        m.extend_from_slice(&attrs);
        m
    }

    fn syn4(src: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&[203, 0, 113, 1]);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    fn parse_one(m: &[u8]) -> Result<LoggedPacket, NflogError> {
        let (kind, body) = messages(m).next().unwrap()?;
        assert_eq!(kind, NFNL_SUBSYS_ULOG << 8);
        parse_packet(body)
    }

    #[test]
    fn parses_a_logged_syn() {
        let m = packet_message("netmon-seen", 3, &syn4([198, 51, 100, 7], 40000, 22));
        let p = parse_one(&m).unwrap();
        assert_eq!(p.stage, Stage::Seen);
        assert_eq!(p.in_ifindex, 3);
        assert_eq!(p.ts_ms, Some(1_700_000_000_250));
        assert_eq!(p.src, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!((p.proto, p.src_port, p.dst_port), (6, 40000, 22));
    }

    #[test]
    fn ipv6_and_foreign_prefixes() {
        let mut p = vec![0x60, 0, 0, 0, 0, 20, 17, 64];
        p.extend_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[0x30, 0x39, 0, 53, 0, 8, 0, 0]);
        let m = packet_message("netmon-passed", 2, &p);
        let got = parse_one(&m).unwrap();
        assert_eq!(
            (got.stage, got.proto, got.dst_port),
            (Stage::Passed, 17, 53)
        );
        let m = packet_message("ulogd", 2, &p);
        assert_eq!(parse_one(&m), Err(NflogError::Foreign));
    }

    #[test]
    fn malformed_input_is_an_error_never_a_panic() {
        let m = packet_message("netmon-seen", 3, &syn4([1, 2, 3, 4], 1, 2));
        for cut in 0..m.len() {
            let mut t = m[..cut].to_vec();
            if t.len() >= 4 {
                t[..4].copy_from_slice(&(cut as u32).to_ne_bytes());
            }
            for msg in messages(&t) {
                let _ = msg.and_then(|(_, b)| parse_packet(b));
            }
        }
        for flip in 0..m.len() {
            let mut t = m.clone();
            t[flip] ^= 0xff;
            for msg in messages(&t) {
                let _ = msg.and_then(|(_, b)| parse_packet(b));
            }
        }
    }

    /// The datagrams of `fixtures/nflog/` (see its README), unframed.
    fn captured() -> Vec<Vec<u8>> {
        let mut rest: &[u8] = include_bytes!("fixtures/nflog/wan-syn-dropped-and-accepted.bin");
        let mut out = Vec::new();
        while rest.len() >= 4 {
            let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push(crate::collect::netlink::le_capture_in_host_order(
                &rest[4..4 + n],
            ));
            rest = &rest[4 + n..];
        }
        out
    }

    #[test]
    fn captured_kernel_messages_pair_up() {
        let mut t = DropTracker::default();
        let mut packets = Vec::new();
        for d in captured() {
            for (kind, body) in messages(&d).map(Result::unwrap) {
                if kind < NLMSG_MIN_TYPE {
                    continue; // NLMSG_DONE ends the batch
                }
                assert_eq!(kind, NFNL_SUBSYS_ULOG << 8);
                let p = parse_packet(body).unwrap();
                t.observe(&p, 0);
                packets.push(p);
            }
        }
        let stages: Vec<(Stage, u16)> = packets.iter().map(|p| (p.stage, p.dst_port)).collect();
        assert_eq!(
            stages,
            [
                (Stage::Seen, 1022),
                (Stage::Seen, 7071),
                (Stage::Passed, 7071)
            ]
        );
        assert!(
            packets
                .iter()
                .all(|p| p.src == IpAddr::from([203, 0, 113, 81]) && p.proto == 6)
        );
        t.expire(i64::MAX);
        let counts = t.take(|_| "wan".into());
        assert_eq!(counts.len(), 1, "{counts:?}");
        assert_eq!((counts[0].dst_port, counts[0].attempts), (1022, 1));
    }

    #[test]
    fn seen_without_passed_is_a_drop_and_passed_is_not() {
        let mut t = DropTracker::default();
        let now = 1_700_000_000_250;
        for port in 1000..1200 {
            let m = packet_message(
                "netmon-seen",
                3,
                &syn4([198, 51, 100, 7], 40000 + port, port),
            );
            t.observe(&parse_one(&m).unwrap(), now);
        }
        for stage in ["netmon-seen", "netmon-passed"] {
            let m = packet_message(stage, 3, &syn4([198, 51, 100, 7], 50000, 7070));
            t.observe(&parse_one(&m).unwrap(), now);
        }
        t.expire(now + 1000);
        assert!(
            t.take(|i| format!("if{i}")).is_empty(),
            "still within grace"
        );
        t.expire(now + 3000);
        let counts = t.take(|i| format!("if{i}"));
        assert_eq!(counts.len(), 200);
        assert!(counts.iter().all(|c| c.attempts == 1 && c.dst_port < 1200));
        assert_eq!(counts[0].iface, "if3");
        assert_eq!(counts[0].minute_ms, 1_699_999_980_000);
    }
}
