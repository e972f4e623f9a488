//! Device identity: which MAC is behind each LAN address, and the name the
//! device gave itself in DHCP.
//!
//! ```text
//!  kernel neighbour table ─ RTM_NEWNEIGH events + a dump every DUMP_EVERY ─┐
//!  DHCP lease files ─ notify on their directories + a re-read every RESCAN ─┤
//!                                                                          ▼
//!                        changed (address, MAC, hostname) sightings, coalesced
//!                                                                          ▼
//!                     writer.try_send(Event::Identity(batch)) — never blocks
//! ```
//!
//! The writer keys devices by MAC (`store::devices`): a sighting attaches its address to
//! the MAC's device, merging a device netmon knew only by that address.
//!
//! Neighbour table (`include/uapi/linux/neighbour.h`, `rtnetlink.h`): a message is
//! `struct ndmsg` (12 bytes) then attributes; `NDA_DST` is the address, `NDA_LLADDR`
//! the link-layer address. Only entries whose MAC the kernel has confirmed or still
//! trusts count (`NUD_REACHABLE | STALE | DELAY | PROBE | PERMANENT`); `INCOMPLETE` and
//! `FAILED` carry no usable MAC. Every LAN client the router talks to is there — IPv6
//! privacy addresses included, each one appearing as the device starts using it — so
//! this source alone identifies devices with static or SLAAC addresses. The writer
//! ignores addresses outside the LAN (the WAN gateway is a neighbour too).
//!
//! Lease files, auto-detected per line:
//! - dnsmasq (`lease_update_file` in `src/lease.c`), as on OpenWrt (`/tmp/dhcp.leases`)
//!   and Debian (`/var/lib/misc/dnsmasq.leases`): `EXPIRY MAC IP HOSTNAME CLIENT-ID`,
//!   `*` for none; after a `duid SERVER-DUID` line, IPv6 leases
//!   `EXPIRY IAID IPV6 HOSTNAME CLIENT-DUID` whose MAC is inside the client's DUID when
//!   it is DUID-LLT or DUID-LL (RFC 8415 §11) of an Ethernet address.
//! - odhcpd's state file (`statefiles.c`), OpenWrt's DHCPv6 server (`/tmp/hosts/odhcpd`
//!   by default): `# IFACE DUID IAID HOSTNAME VALID ASSIGNED LEN ADDR/PLEN…`; newer
//!   odhcpd also serves DHCPv4 and writes `# IFACE MAC-HEX ipv4 HOSTNAME VALID HEX 32
//!   ADDR/32`. Its hosts-format lines (`ADDR\tNAME`) are skipped.
//!
//! Expired leases are skipped (dnsmasq drops them from the file on its next write).
//! Hostnames come from the client: stored verbatim up to [`MAX_HOSTNAME`] bytes (the
//! UI escapes them), never interpreted.

use std::collections::HashMap;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use neli::consts::socket::{Msg, NlFamily};
use neli::socket::NlSocket;
use neli::utils::Groups;

use crate::collect::netlink::{self, Attrs, NLM_F_REQUEST, NlMessages, ne_u16};
use crate::config::Config;
use crate::event::Event;
use crate::event::{MacTable, Sighting, SightingSource, WriterHandle};

/// A full neighbour dump this often, besides the events: an overrun socket loses
/// events, and entries that never change state send none.
const DUMP_EVERY: Duration = Duration::from_secs(60);
/// Lease files are re-read this often without a notify event (no inotify, a directory
/// that did not exist yet).
const RESCAN: Duration = Duration::from_secs(30);
/// An unchanged sighting is sent again this often, so `last_seen` of the address moves.
const REFRESH: Duration = Duration::from_secs(300);
/// Sightings waiting for the writer are flushed this often.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Most sightings kept while the writer is busy, and most addresses remembered.
const MAX_PENDING: usize = 4096;
const MAX_KNOWN: usize = 65536;
/// Lease files larger than this are not read (a router's has a few hundred lines).
const MAX_LEASE_FILE: u64 = 4 << 20;
/// DHCP hostnames longer than this are cut (a DNS name has at most 253 characters).
pub const MAX_HOSTNAME: usize = 253;

/// rtnetlink ids (`linux/rtnetlink.h`, `linux/neighbour.h`).
const RTM_NEWNEIGH: u16 = 28;
const RTM_GETNEIGH: u16 = 30;
const RTNLGRP_NEIGH: u32 = 3;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NDMSG_LEN: usize = 12;
const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x80;
const NLM_F_DUMP: u16 = 0x300;

/// A lease as a lease file states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    pub mac: [u8; 6],
    pub hostname: Option<String>,
}

/// A unicast Ethernet address a device could own: not all zero, not multicast.
fn usable_mac(mac: [u8; 6]) -> bool {
    mac != [0; 6] && mac[0] & 0x01 == 0
}

/// Bytes from hex text, with or without `:` between pairs.
fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
    if !digits.len().is_multiple_of(2) || digits.len() > 2 * 130 {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

fn mac_from(bytes: &[u8]) -> Option<[u8; 6]> {
    let mac: [u8; 6] = bytes.try_into().ok()?;
    usable_mac(mac).then_some(mac)
}

/// The Ethernet address inside a DUID-LLT (type 1) or DUID-LL (type 3) with hardware
/// type 1; other DUIDs (enterprise, UUID) name no MAC.
pub fn mac_from_duid(duid: &[u8]) -> Option<[u8; 6]> {
    match duid {
        [0, 1, 0, 1, _, _, _, _, mac @ ..] | [0, 3, 0, 1, mac @ ..] => mac_from(mac),
        _ => None,
    }
}

fn hostname(field: &str) -> Option<String> {
    let field = field.strip_prefix("broken\\x20").unwrap_or(field);
    if field.is_empty() || field == "*" || field == "-" {
        return None;
    }
    let mut end = field.len().min(MAX_HOSTNAME);
    while !field.is_char_boundary(end) {
        end -= 1;
    }
    Some(field[..end].to_owned())
}

/// Leases of one lease file (dnsmasq or odhcpd format, see the module header) that are
/// still valid at `now_s`. Lines that fit no format are skipped and counted in the
/// second value.
pub fn parse_leases(text: &str, now_s: i64) -> (Vec<Lease>, usize) {
    let mut leases = Vec::new();
    let mut skipped = 0;
    let mut dnsmasq_v6 = false;
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let parsed = if let Some(rest) = line.strip_prefix("# ") {
            odhcpd_line(rest, now_s)
        } else if line.starts_with("duid ") {
            dnsmasq_v6 = true;
            continue;
        } else if line.contains('\t') {
            // odhcpd's hosts lines.
            continue;
        } else {
            dnsmasq_line(line, dnsmasq_v6, now_s)
        };
        match parsed {
            Some(Some(lease)) => leases.push(lease),
            Some(None) => {}
            None => skipped += 1,
        }
    }
    (leases, skipped)
}

/// `Some(None)`: a well-formed line with nothing to report (expired, no MAC known).
fn dnsmasq_line(line: &str, v6: bool, now_s: i64) -> Option<Option<Lease>> {
    let f: Vec<&str> = line.split(' ').collect();
    let [expiry, id, ip, name, client] = f[..] else {
        return None;
    };
    let expiry: i64 = expiry.parse().ok()?;
    let ip: IpAddr = ip.parse().ok()?;
    if ip.is_ipv6() != v6 {
        return None;
    }
    if expiry != 0 && expiry < now_s {
        return Some(None);
    }
    let mac = if v6 {
        if client == "*" {
            return Some(None);
        }
        match mac_from_duid(&hex_bytes(client)?) {
            Some(mac) => mac,
            None => return Some(None),
        }
    } else {
        // Ethernet MACs only; other hardware types are written as "TYPE-xx:xx…".
        match hex_bytes(id).and_then(|b| mac_from(&b)) {
            Some(mac) => mac,
            None if id.contains('-') => return Some(None),
            None => return None,
        }
    };
    Some(Some(Lease {
        ip,
        mac,
        hostname: hostname(name),
    }))
}

fn odhcpd_line(rest: &str, now_s: i64) -> Option<Option<Lease>> {
    let f: Vec<&str> = rest.split(' ').filter(|s| !s.is_empty()).collect();
    if f.len() < 7 {
        return None;
    }
    let (id, kind, name, valid) = (f[1], f[2], f[3], f[4]);
    // "broken\x20NAME" is one field in odhcpd's output.
    let valid: i64 = valid.parse().ok()?;
    if valid == 0 || (valid > 0 && valid < now_s) {
        return Some(None);
    }
    let mac = if kind == "ipv4" {
        mac_from(&hex_bytes(id)?)
    } else {
        mac_from_duid(&hex_bytes(id)?)
    };
    let Some(mac) = mac else {
        return Some(None);
    };
    // The first address of the lease (a lease may hold several; each is a sighting of
    // its own only via the neighbour table, which sees the ones in use).
    let ip = f[7..]
        .iter()
        .find_map(|a| a.split('/').next()?.parse::<IpAddr>().ok())?;
    Some(Some(Lease {
        ip,
        mac,
        hostname: hostname(name),
    }))
}

/// One neighbour message: (address, MAC) when the entry holds a usable MAC.
pub fn parse_neighbour(payload: &[u8]) -> Option<(IpAddr, [u8; 6])> {
    let hdr = payload.get(..NDMSG_LEN)?;
    let state = ne_u16(&hdr[8..10]);
    if state & NUD_USABLE == 0 {
        return None;
    }
    let (mut ip, mut mac) = (None, None);
    for attr in Attrs::new(payload.get(NDMSG_LEN..)?) {
        let (kind, value) = attr.ok()?;
        match kind {
            NDA_DST => {
                ip = match value.len() {
                    4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?))),
                    16 => Some(IpAddr::V6(Ipv6Addr::from(
                        <[u8; 16]>::try_from(value).ok()?,
                    ))),
                    _ => None,
                }
            }
            NDA_LLADDR => mac = mac_from(value),
            _ => {}
        }
    }
    Some((ip?, mac?))
}

/// `RTM_GETNEIGH` dump request for every family.
fn dump_request(seq: u32) -> Vec<u8> {
    netlink::request(
        RTM_GETNEIGH,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &[0; NDMSG_LEN],
    )
}

/// What was last sent per address, so only changes (and a slow refresh) reach the writer.
#[derive(Default)]
struct Coalescer {
    sent: HashMap<IpAddr, ([u8; 6], Option<String>, Instant)>,
    pending: Vec<Sighting>,
    dropped: u64,
    /// Shared with readers that need a MAC per address (the IPFIX exporter).
    macs: Arc<MacTable>,
}

impl Coalescer {
    fn offer(&mut self, s: Sighting, now: Instant) {
        let fresh = match self.sent.get(&s.ip) {
            // A neighbour sighting carries no hostname: keep the lease's.
            Some((mac, name, at)) => {
                *mac != s.mac
                    || (s.hostname.is_some() && *name != s.hostname)
                    || now.duration_since(*at) >= REFRESH
            }
            None => true,
        };
        if !fresh {
            return;
        }
        self.macs.set(s.ip, s.mac);
        if self.sent.len() >= MAX_KNOWN && !self.sent.contains_key(&s.ip) {
            self.sent.clear();
        }
        let name = match (&s.hostname, self.sent.get(&s.ip)) {
            (None, Some((mac, name, _))) if *mac == s.mac => name.clone(),
            _ => s.hostname.clone(),
        };
        self.sent.insert(s.ip, (s.mac, name, now));
        if self.pending.len() >= MAX_PENDING {
            self.dropped += 1;
            return;
        }
        self.pending.push(s);
    }

    fn flush(&mut self, writer: &WriterHandle) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.pending);
        metrics::counter!("netmon_device_sightings_total").increment(batch.len() as u64);
        if let Err(Event::Identity(back)) = writer.try_send(Event::Identity(batch)) {
            self.pending = back;
        }
    }
}

/// A lease file and what its last read found.
struct LeaseFile {
    path: PathBuf,
    /// (device, inode, length, modification time) of the last read, to skip unchanged
    /// files. The inode makes a re-created file new even with the same size and time.
    stamp: Option<(u64, u64, u64, std::time::SystemTime)>,
    /// Whether the file was there at the last check: a disappearance is logged and
    /// counted once, and its return logged.
    present: bool,
    watch: crate::collect::file_watch::FileWatch,
}

impl LeaseFile {
    /// The file's leases when it changed since the last read; `None` when unchanged or
    /// missing (a lease file vanishing changes nothing stored: devices keep their MAC;
    /// when it comes back — dnsmasq restarted, `/tmp` cleaned — it is read again).
    fn read_if_changed(&mut self, now_s: i64) -> Option<Vec<Lease>> {
        use std::os::unix::fs::MetadataExt;
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(_) => {
                if self.present {
                    self.present = false;
                    metrics::counter!("netmon_source_file_vanished_total", "source" => "leases")
                        .increment(1);
                    log::info!(
                        "devices: {} is gone; devices keep what it said, and it is read again                          when it reappears",
                        self.path.display()
                    );
                }
                return None;
            }
        };
        if !self.present {
            self.present = true;
            if self.stamp.is_some() {
                log::info!("devices: {} is back; reading it", self.path.display());
            }
        }
        let stamp = (meta.dev(), meta.ino(), meta.len(), meta.modified().ok()?);
        if self.stamp == Some(stamp) {
            return None;
        }
        if meta.len() > MAX_LEASE_FILE {
            if self.stamp.is_none() {
                log::warn!(
                    "devices: {} is {} bytes, more than a lease file has; not read",
                    self.path.display(),
                    meta.len()
                );
            }
            self.stamp = Some(stamp);
            return None;
        }
        let mut text = String::new();
        let read = std::fs::File::open(&self.path)
            .and_then(|f| f.take(MAX_LEASE_FILE).read_to_string(&mut text));
        if let Err(e) = read {
            log::warn!("devices: reading {}: {e}", self.path.display());
            return None;
        }
        self.stamp = Some(stamp);
        let (leases, skipped) = parse_leases(&text, now_s);
        if skipped > 0 {
            metrics::counter!("netmon_lease_lines_skipped_total").increment(skipped as u64);
            log::debug!(
                "devices: {} lines of {} fit no lease format",
                skipped,
                self.path.display()
            );
        }
        Some(leases)
    }
}

/// The device-identity thread: neighbour table and lease files.
pub struct DeviceCollector {
    thread: JoinHandle<()>,
}

impl DeviceCollector {
    pub fn start(
        config: &Config,
        writer: WriterHandle,
        macs: Arc<MacTable>,
        shutdown: Arc<AtomicBool>,
    ) -> anyhow::Result<DeviceCollector> {
        let sock = if config.devices.neighbours {
            let sock =
                NlSocket::new(NlFamily::Route).context("devices: opening a netlink socket")?;
            sock.bind(None, Groups::new_groups(&[RTNLGRP_NEIGH]))
                .context("devices: joining the neighbour event group")?;
            crate::collect::netlink::set_receive_timeout(
                &sock,
                Duration::from_millis(500),
                "devices",
            );
            Some(sock)
        } else {
            None
        };
        let (wake_tx, wake_rx) = sync_channel::<()>(1);
        let files = config
            .devices
            .lease_files
            .iter()
            .map(|path| LeaseFile {
                path: path.clone(),
                stamp: None,
                present: false,
                watch: crate::collect::file_watch::FileWatch::new(path, wake_tx.clone(), "devices"),
            })
            .collect();
        let thread = std::thread::Builder::new()
            .name("devices".into())
            .spawn(move || run(sock, files, wake_tx, wake_rx, writer, macs, &shutdown))
            .context("starting the device identity thread")?;
        Ok(DeviceCollector { thread })
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn run(
    sock: Option<NlSocket>,
    mut files: Vec<LeaseFile>,
    // Kept so the channel never disconnects when no file could be watched.
    _wake_tx: SyncSender<()>,
    wake_rx: std::sync::mpsc::Receiver<()>,
    writer: WriterHandle,
    macs: Arc<MacTable>,
    shutdown: &AtomicBool,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut co = Coalescer {
        macs,
        ..Coalescer::default()
    };
    let mut seq = 0u32;
    let mut last_dump: Option<Instant> = None;
    let mut last_scan: Option<Instant> = None;
    let mut last_flush = Instant::now();
    let mut reported_drops = 0;
    while !shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        let woken = wake_rx.try_recv().is_ok();
        if woken || last_scan.is_none_or(|t| now.duration_since(t) >= RESCAN) {
            last_scan = Some(now);
            let now_ms = crate::time::now_ms();
            let now_s = now_ms / 1000;
            for file in &mut files {
                if !woken {
                    // The periodic re-read: re-watch a directory that came back.
                    file.watch.refresh();
                }
                for lease in file.read_if_changed(now_s).into_iter().flatten() {
                    co.offer(
                        Sighting {
                            ip: lease.ip,
                            mac: lease.mac,
                            hostname: lease.hostname,
                            source: SightingSource::Dhcp,
                            at_ms: now_ms,
                        },
                        now,
                    );
                }
            }
        }
        match &sock {
            Some(sock) => {
                if last_dump.is_none_or(|t| now.duration_since(t) >= DUMP_EVERY) {
                    last_dump = Some(now);
                    seq = seq.wrapping_add(1);
                    if let Err(e) = sock.send(dump_request(seq), Msg::empty()) {
                        log::warn!("devices: requesting the neighbour table: {e}");
                    }
                }
                receive(sock, &mut buf, &mut co);
            }
            // Lease files only: wait for a change.
            None => {
                if wake_rx.recv_timeout(Duration::from_millis(500)).is_ok() {
                    last_scan = None;
                }
            }
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            last_flush = Instant::now();
            co.flush(&writer);
            if co.dropped > reported_drops {
                log::warn!(
                    "devices: {} sightings dropped (writer busy)",
                    co.dropped - reported_drops
                );
                reported_drops = co.dropped;
            }
        }
    }
    co.flush(&writer);
}

/// Reads what the socket holds (waits at most its receive timeout).
fn receive(sock: &NlSocket, buf: &mut [u8], co: &mut Coalescer) {
    match sock.recv(&mut buf[..], Msg::empty()) {
        Ok((n, _)) => {
            let (now, now_ms) = (Instant::now(), crate::time::now_ms());
            for msg in NlMessages::new(&buf[..n.min(buf.len())]) {
                let Ok(msg) = msg else {
                    metrics::counter!("netmon_neighbour_messages_total", "result" => "malformed")
                        .increment(1);
                    break;
                };
                if msg.ty != RTM_NEWNEIGH {
                    continue;
                }
                if let Some((ip, mac)) = parse_neighbour(msg.payload) {
                    co.offer(
                        Sighting {
                            ip,
                            mac,
                            hostname: None,
                            source: SightingSource::Neighbour,
                            at_ms: now_ms,
                        },
                        now,
                    );
                }
            }
        }
        // Lost events (an overrun): the next dump brings them back.
        Err(e) => crate::collect::netlink::on_recv_error(
            &e,
            "netmon_neighbour_messages_total",
            "devices: reading neighbour events",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::format_mac;

    const NOW: i64 = 1_764_000_000;

    #[test]
    fn dnsmasq_v4_and_v6_leases() {
        let text = "\
1764003600 3c:22:fb:12:34:56 10.77.0.100 laptop 01:3c:22:fb:12:34:56
0 b8:27:eb:aa:bb:cc 10.77.0.101 * *
1763000000 dc:a6:32:00:00:01 10.77.0.102 expired *
1764003600 06-00:11:22:33:44:55 10.77.0.103 tokenring *
duid 00:01:00:01:2c:3b:4d:5e:02:77:00:00:00:01
1764003600 305419896 fd77::abc phone 00:01:00:01:2c:3b:4d:5e:3c:22:fb:ab:cd:ef
1764003600 1 fd77::abd en-duid 00:02:00:00:ab:11:01:02:03:04
";
        let (leases, skipped) = parse_leases(text, NOW);
        assert_eq!(skipped, 0);
        assert_eq!(
            leases,
            vec![
                Lease {
                    ip: "10.77.0.100".parse().unwrap(),
                    mac: [0x3c, 0x22, 0xfb, 0x12, 0x34, 0x56],
                    hostname: Some("laptop".into()),
                },
                Lease {
                    ip: "10.77.0.101".parse().unwrap(),
                    mac: [0xb8, 0x27, 0xeb, 0xaa, 0xbb, 0xcc],
                    hostname: None,
                },
                Lease {
                    ip: "fd77::abc".parse().unwrap(),
                    mac: [0x3c, 0x22, 0xfb, 0xab, 0xcd, 0xef],
                    hostname: Some("phone".into()),
                },
            ]
        );
    }

    #[test]
    fn odhcpd_state_file() {
        let text = "\
# br-lan 000100012c3b4d5e3c22fbabcdef 1e laptop 1764003600 4a2 128 fd77::4a2/128 fd77:1::4a2/128
fd77::4a2\tlaptop.lan\tlaptop
# br-lan 00030001b827eb000001 2 - -1 4a3 128 fd77::4a3/128
# br-lan 000400aabbccddeeff00112233445566778899 3 uuid 1764003600 4a4 128 fd77::4a4/128
# br-lan 3c22fb123456 ipv4 broken\\x20pc 1764003600 a4d0064 32 10.77.0.100/32
# br-lan 000100012c3b4d5e3c22fbabcdef 1f old 1700000000 4a5 128 fd77::4a5/128
";
        let (leases, skipped) = parse_leases(text, NOW);
        assert_eq!(skipped, 0);
        let got: Vec<(String, String, Option<String>)> = leases
            .iter()
            .map(|l| (l.ip.to_string(), format_mac(l.mac), l.hostname.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "fd77::4a2".into(),
                    "3c:22:fb:ab:cd:ef".into(),
                    Some("laptop".into())
                ),
                ("fd77::4a3".into(), "b8:27:eb:00:00:01".into(), None),
                (
                    "10.77.0.100".into(),
                    "3c:22:fb:12:34:56".into(),
                    Some("pc".into())
                ),
            ]
        );
    }

    #[test]
    fn garbage_lines_are_counted_never_fatal() {
        let text = "not a lease\n1 2 3\n99999999999999999999 aa:bb 1.2.3.4 x y\n\
                    1764003600 3c:22:fb:12:34:56 10.77.0.100 ok *\n# br-lan\n\0\u{7f}\n";
        let (leases, skipped) = parse_leases(text, NOW);
        assert_eq!(leases.len(), 1);
        assert_eq!(skipped, 5);
    }

    #[test]
    fn hostile_hostnames_are_kept_verbatim_but_bounded() {
        let long = "x".repeat(400);
        let text = format!(
            "1764003600 3c:22:fb:12:34:56 10.77.0.100 <script>alert(1)</script> *\n\
             1764003600 3c:22:fb:12:34:57 10.77.0.101 {long} *\n"
        );
        let (leases, _) = parse_leases(&text, NOW);
        assert_eq!(
            leases[0].hostname.as_deref(),
            Some("<script>alert(1)</script>")
        );
        assert_eq!(leases[1].hostname.as_ref().unwrap().len(), MAX_HOSTNAME);
    }

    #[test]
    fn duid_kinds() {
        let llt = hex_bytes("000100012c3b4d5e3c22fbabcdef").unwrap();
        assert_eq!(
            mac_from_duid(&llt),
            Some([0x3c, 0x22, 0xfb, 0xab, 0xcd, 0xef])
        );
        let ll = hex_bytes("00:03:00:01:b8:27:eb:00:00:01").unwrap();
        assert_eq!(mac_from_duid(&ll), Some([0xb8, 0x27, 0xeb, 0, 0, 1]));
        // Not Ethernet (hardware type 6), enterprise DUID, multicast MAC, too short.
        for d in [
            "000100062c3b4d5e3c22fbabcdef",
            "00020000ab1101020304",
            "00030001010203040506",
            "000300013c22fb",
        ] {
            assert_eq!(mac_from_duid(&hex_bytes(d).unwrap()), None, "{d}");
        }
    }

    fn neigh(state: u16, dst: &[u8], lladdr: Option<&[u8]>) -> Vec<u8> {
        let mut m = vec![if dst.len() == 4 { 2 } else { 10 }, 0, 0, 0];
        m.extend_from_slice(&3i32.to_ne_bytes());
        m.extend_from_slice(&state.to_ne_bytes());
        m.extend_from_slice(&[0, 1]);
        let mut attr = |kind: u16, v: &[u8]| {
            m.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(v);
            while m.len() % 4 != 0 {
                m.push(0);
            }
        };
        attr(NDA_DST, dst);
        if let Some(l) = lladdr {
            attr(NDA_LLADDR, l);
        }
        m
    }

    #[test]
    fn neighbour_messages() {
        let mac = [0x3c, 0x22, 0xfb, 1, 2, 3];
        let v4 = neigh(0x02, &[10, 77, 0, 10], Some(&mac));
        assert_eq!(
            parse_neighbour(&v4),
            Some(("10.77.0.10".parse().unwrap(), mac))
        );
        let v6: [u8; 16] = "fd77::10".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(
            parse_neighbour(&neigh(0x04, &v6, Some(&mac))),
            Some(("fd77::10".parse().unwrap(), mac))
        );
        // INCOMPLETE / FAILED, no lladdr, zero MAC, truncated.
        assert_eq!(
            parse_neighbour(&neigh(0x01, &[10, 77, 0, 10], Some(&mac))),
            None
        );
        assert_eq!(
            parse_neighbour(&neigh(0x20, &[10, 77, 0, 10], Some(&mac))),
            None
        );
        assert_eq!(parse_neighbour(&neigh(0x02, &[10, 77, 0, 10], None)), None);
        assert_eq!(
            parse_neighbour(&neigh(0x02, &[10, 77, 0, 10], Some(&[0; 6]))),
            None
        );
        for cut in 0..v4.len() {
            let _ = parse_neighbour(&v4[..cut]);
        }
    }

    #[test]
    fn coalescer_sends_changes_and_keeps_lease_names() {
        let mut co = Coalescer::default();
        let now = Instant::now();
        let s = |mac: u8, name: Option<&str>| Sighting {
            ip: "10.77.0.10".parse().unwrap(),
            mac: [0x3c, 0x22, 0xfb, 0, 0, mac],
            hostname: name.map(str::to_owned),
            source: SightingSource::Dhcp,
            at_ms: 0,
        };
        co.offer(s(1, Some("laptop")), now);
        co.offer(s(1, None), now);
        co.offer(s(1, Some("laptop")), now);
        assert_eq!(co.pending.len(), 1);
        co.offer(s(2, None), now);
        co.offer(s(2, None), now + REFRESH);
        assert_eq!(co.pending.len(), 3);
    }
}
