//! IPFIX flow export (RFC 7011 over UDP) to a standard collector: nfdump's nfcapd,
//! GoFlow2, ElastiFlow (DESIGN §6).
//!
//! ```text
//!  collect::conntrack ── FlowBatch ──► writer            (as before, never blocks)
//!          └── FlowTap::offer(changes) ── bounded queue ──► exporter thread
//!                                (try_send; full = dropped  │  FlowCache: per-flow
//!                                 and counted)              │  last-exported counters
//!                                                           ▼
//!                                   IPFIX messages ── non-blocking UDP ──► collector
//! ```
//!
//! Why it is shaped like this:
//! - **Same flows as the database.** The collector offers each batch to the exporter
//!   only after the writer's channel accepted it, so the exporter sees exactly the
//!   changes netmon stores (all directions, router-local included: a flow collector
//!   usually wants the router's own DNS and NTP too).
//! - **Nothing waits on the collector.** The tap is a bounded channel fed with
//!   `try_send`; the socket is non-blocking. A full queue or a failed send drops records
//!   and counts them (`netmon_export_drops_total{exporter="ipfix",reason=…}`); the
//!   conntrack collector and the writer never notice.
//! - **Deltas from cumulative counters.** Changes carry cumulative kernel counters; the
//!   cache keeps what it has exported per flow (keyed by `CtFlow::ident()`), so a lost
//!   update is made up by the next one, and records carry `octetDeltaCount`.
//! - **Slices.** A running flow is exported every `ipfix_active_timeout_s` with the bytes
//!   of that slice (flowEndReason 2, active timeout); its end goes out when conntrack
//!   ends it (1, idle timeout: UDP/ICMP expiry, TCP without a close) or when a TCP
//!   connection closes (3, end of flow; the entry lingers in TIME_WAIT for 120 s, and
//!   whatever it still counts goes out with its DESTROY). At shutdown the open slices go
//!   out (4, forced end); when the cache is full the least recently active flows go out
//!   early (5, lack of resources). The slices of one flow add up to its total.
//! - **Restarts do not double count.** A flow that was already running when the exporter
//!   started (kernel start timestamp earlier) is exported from its counters at that
//!   moment on: what it carried before was either sent by the previous netmon (its
//!   forced-end records at shutdown) or predates netmon altogether.
//!
//! Records follow `export.ipfix_flow_model` ([`record`]): by default each direction of a
//! connection is its own record, which every collector decodes; RFC 5103 biflows on
//! request. The source is the conntrack original tuple (the LAN address, before NAT);
//! post-NAT/NAPT addresses and ports come from the reply tuple; interfaces and the
//! device's MAC from [`sides`]. Templates go out in the first message, every
//! `ipfix_template_refresh_s` and every [`TEMPLATE_REFRESH_MESSAGES`] messages (RFC 7011
//! §10.3.6: over UDP a collector learns templates only by their resending).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics::Counter;

use crate::config::{Config, FlowModel};
use crate::event::{FlowChange, MacTable};
use crate::flow::{Counters, PROTO_TCP, Tuple};

mod record;
mod sides;

use record::{DataRecord, MessageHeader, Templates};
pub use record::{EndReason, FlowRecord};
use sides::Sides;

/// Templates are also re-sent after this many messages, so a collector that restarted
/// during a burst need not wait for the timer.
pub const TEMPLATE_REFRESH_MESSAGES: u64 = 128;
/// How often the cache is scanned for slices due (active timeout), and the longest a
/// record waits in the exporter before it is sent.
const SCAN_INTERVAL: Duration = Duration::from_millis(500);
/// A burst of messages is paced: after this many, the exporter waits [`PACE_GAP`]. A
/// collector's socket buffer (Linux's default `rmem_default`, 208 KiB) holds about 90
/// full messages; a scan after a burst of short flows makes a hundred or more, and a
/// collector busy for a few milliseconds would lose the rest. Paced, the exporter still
/// sends 8 000 messages (over 100 000 records) a second.
const PACE_MESSAGES: usize = 16;
const PACE_GAP: Duration = Duration::from_millis(2);

// ---------------------------------------------------------------------------------------
// The tap and the thread
// ---------------------------------------------------------------------------------------

/// The conntrack collector's handle to the exporter: offers each batch of changes that
/// reached the writer, never waiting. Cheap to clone.
#[derive(Clone)]
pub struct FlowTap {
    tx: SyncSender<Vec<FlowChange>>,
    /// `netmon_export_drops_total{exporter="ipfix",reason="queue_full"}`, in changes.
    dropped: Counter,
}

impl FlowTap {
    /// Hands `changes` to the exporter, or drops and counts them when its queue is full
    /// (the exporter fell behind) or it is gone. A dropped update is made up by the
    /// flow's next one (counters are cumulative); a dropped end leaves the flow in the
    /// exporter's cache until it is evicted.
    pub fn offer(&self, changes: Vec<FlowChange>) {
        if let Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) =
            self.tx.try_send(changes)
        {
            self.dropped.increment(c.len() as u64);
        }
    }
}

/// The running exporter thread. It ends when every [`FlowTap`] is dropped (the
/// collector stopped), after exporting what it still holds.
pub struct IpfixExporter {
    thread: JoinHandle<()>,
}

impl IpfixExporter {
    /// Starts the exporter if `[export] ipfix_collector` is set; `None` when it is off.
    /// The queue holds `channel_capacity` batches, like the writer's channel.
    /// `macs` is the device collector's address → MAC table, for the records' MACs.
    pub fn start(
        config: &Config,
        macs: Arc<MacTable>,
    ) -> anyhow::Result<Option<(IpfixExporter, FlowTap)>> {
        let e = &config.export;
        if e.ipfix_collector.is_empty() {
            return Ok(None);
        }
        let collector: SocketAddr = e.ipfix_collector.parse().with_context(|| {
            format!(
                "export.ipfix_collector = \"{}\": not an address:port",
                e.ipfix_collector
            )
        })?;
        let transport = Transport::new(
            collector,
            e.ipfix_flow_model,
            e.ipfix_observation_domain,
            e.ipfix_max_message_bytes,
            Duration::from_secs(e.ipfix_template_refresh_s),
        )?;
        let cache = FlowCache::new(
            config.max_tracked_flows,
            e.ipfix_active_timeout_s as i64 * 1000,
            crate::time::now_ms(),
        );
        let sides = Sides::new(config, macs);
        let (tx, rx) = std::sync::mpsc::sync_channel(config.channel_capacity);
        let thread = std::thread::Builder::new()
            .name("netmon-ipfix".into())
            .spawn(move || run(rx, cache, sides, transport))
            .context("starting the IPFIX exporter thread")?;
        log::info!(
            "IPFIX export to {collector} ({:?} records, observation domain {}, active timeout {} s)",
            e.ipfix_flow_model,
            e.ipfix_observation_domain,
            e.ipfix_active_timeout_s
        );
        let tap = FlowTap {
            tx,
            dropped: metrics::counter!("netmon_export_drops_total", "exporter" => "ipfix", "reason" => "queue_full"),
        };
        Ok(Some((IpfixExporter { thread }, tap)))
    }

    /// Waits for the thread; call after the collector (which holds the tap) stopped.
    pub fn join(self) {
        if self.thread.join().is_err() {
            log::error!("IPFIX exporter thread panicked");
        }
    }
}

fn run(
    rx: Receiver<Vec<FlowChange>>,
    mut cache: FlowCache,
    mut sides: Sides,
    mut transport: Transport,
) {
    let tracked = metrics::gauge!("netmon_export_tracked_flows", "exporter" => "ipfix");
    let mut records = Vec::new();
    let mut next_scan = Instant::now() + SCAN_INTERVAL;
    loop {
        let wait = next_scan.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(changes) => cache.apply_all(changes, &mut records),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_scan {
            cache.expire(crate::time::now_ms(), &mut records);
            next_scan = Instant::now() + SCAN_INTERVAL;
            sides.refresh();
            transport.send(&records, &sides);
            records.clear();
            tracked.set(cache.len() as f64);
        }
    }
    cache.finish(&mut records);
    transport.send(&records, &sides);
    tracked.set(0.0);
    log::info!(
        "IPFIX exporter stopped; {} records in {} messages sent, {} dropped",
        transport.stats.records,
        transport.stats.messages,
        transport.stats.dropped
    );
}

// ---------------------------------------------------------------------------------------
// The flow cache: deltas and slices
// ---------------------------------------------------------------------------------------

/// What the exporter remembers per flow.
#[derive(Debug, Clone)]
struct Cached {
    proto: u8,
    orig: Tuple,
    reply: Tuple,
    tcp_state: Option<u8>,
    /// Cumulative counters already exported (or, for a flow older than the exporter,
    /// its counters when first seen).
    exported: Counters,
    /// Latest cumulative counters.
    current: Counters,
    /// Where the open slice begins (unix ms).
    slice_start_ms: i64,
    /// When the counters last changed (unix ms): the end of the open slice.
    last_seen_ms: i64,
    /// The open slice begins with the connection (no record of it went out yet, and
    /// the exporter saw it begin).
    opening: bool,
    /// The TCP connection closed and its end was exported; the entry waits for the
    /// DESTROY (after TIME_WAIT) so that event is not taken for a new flow.
    closed: bool,
}

impl Cached {
    fn record(&mut self, end_ms: i64, end_reason: EndReason) -> FlowRecord {
        let record = FlowRecord {
            proto: self.proto,
            orig: self.orig,
            reply: self.reply,
            delta: self.current.since(&self.exported),
            start_ms: self.slice_start_ms,
            end_ms: end_ms.max(self.slice_start_ms),
            end_reason,
            tcp_state: self.tcp_state,
            opening: self.opening,
        };
        self.opening = false;
        self.exported = self.current;
        self.slice_start_ms = record.end_ms;
        record
    }

    fn has_delta(&self) -> bool {
        !self.current.since(&self.exported).is_zero()
    }
}

/// Per-flow export state, bounded by `cap` entries.
struct FlowCache {
    flows: HashMap<i64, Cached>,
    cap: usize,
    active_timeout_ms: i64,
    /// When the exporter started (unix ms); flows whose kernel start is earlier are
    /// exported from their first-seen counters on.
    started_ms: i64,
}

/// A TCP connection's end was seen in a state only a FIN or RST leads to
/// (`enum tcp_conntrack`: FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE).
fn end_reason(proto: u8, tcp_state: Option<u8>) -> EndReason {
    if proto == PROTO_TCP && matches!(tcp_state, Some(4..=8)) {
        EndReason::EndOfFlow
    } else {
        EndReason::IdleTimeout
    }
}

/// Counters that went backwards: the identity was reused by a new lifetime whose first
/// report we missed.
fn went_backwards(now: &Counters, before: &Counters) -> bool {
    now.orig_bytes < before.orig_bytes
        || now.reply_bytes < before.reply_bytes
        || now.orig_packets < before.orig_packets
        || now.reply_packets < before.reply_packets
}

impl FlowCache {
    fn new(cap: usize, active_timeout_ms: i64, started_ms: i64) -> FlowCache {
        FlowCache {
            flows: HashMap::new(),
            cap: cap.max(16),
            active_timeout_ms: active_timeout_ms.max(1),
            started_ms,
        }
    }

    fn len(&self) -> usize {
        self.flows.len()
    }

    fn apply_all(&mut self, changes: Vec<FlowChange>, out: &mut Vec<FlowRecord>) {
        for change in changes {
            self.apply(change, out);
        }
    }

    /// One flow change from the collector; records that are due go to `out`.
    fn apply(&mut self, change: FlowChange, out: &mut Vec<FlowRecord>) {
        let ident = change.flow.ident();
        let flow = &change.flow;
        if let Some(c) = self.flows.get_mut(&ident)
            && went_backwards(&flow.counters, &c.current)
        {
            // The old lifetime ended unseen; send what it had and start afresh.
            if c.has_delta() && !c.closed {
                let reason = end_reason(c.proto, c.tcp_state);
                out.push(c.record(c.last_seen_ms, reason));
            }
            self.flows.remove(&ident);
        }
        let Some(c) = self.flows.get_mut(&ident) else {
            self.insert(ident, change, out);
            return;
        };
        if flow.counters != c.current {
            c.last_seen_ms = c.last_seen_ms.max(change.observed_ms);
        }
        c.current = flow.counters;
        c.tcp_state = flow.tcp_state;
        c.reply = flow.reply;
        if change.ended {
            if !c.closed || c.has_delta() {
                let reason = end_reason(c.proto, c.tcp_state);
                let end = if c.closed {
                    c.last_seen_ms
                } else {
                    change.observed_ms
                };
                out.push(c.record(end, reason));
            }
            self.flows.remove(&ident);
        } else if !c.closed && flow.is_closed() {
            c.closed = true;
            out.push(c.record(change.observed_ms, EndReason::EndOfFlow));
        }
    }

    fn insert(&mut self, ident: i64, change: FlowChange, out: &mut Vec<FlowRecord>) {
        let flow = change.flow;
        let older_than_us = flow.kernel_start_ms.is_some_and(|s| s < self.started_ms);
        let mut c = Cached {
            proto: flow.proto,
            orig: flow.orig,
            reply: flow.reply,
            tcp_state: flow.tcp_state,
            exported: if older_than_us {
                flow.counters
            } else {
                Counters::default()
            },
            current: flow.counters,
            slice_start_ms: if older_than_us {
                change.observed_ms
            } else {
                flow.kernel_start_ms.unwrap_or(change.observed_ms)
            },
            last_seen_ms: change.observed_ms,
            opening: !older_than_us,
            closed: false,
        };
        if change.ended {
            if !older_than_us || c.has_delta() {
                out.push(c.record(change.observed_ms, end_reason(c.proto, c.tcp_state)));
            }
            return;
        }
        if flow.is_closed() {
            c.closed = true;
            out.push(c.record(change.observed_ms, EndReason::EndOfFlow));
        }
        if self.flows.len() >= self.cap {
            self.evict(out);
        }
        self.flows.insert(ident, c);
    }

    /// Makes room: the least recently active eighth of the cache goes out early.
    fn evict(&mut self, out: &mut Vec<FlowRecord>) {
        let mut by_age: Vec<(i64, i64)> = self
            .flows
            .iter()
            .map(|(ident, c)| (c.last_seen_ms, *ident))
            .collect();
        let n = (self.cap / 8).max(1).min(by_age.len());
        if n == 0 {
            return;
        }
        by_age.select_nth_unstable(n - 1);
        for (_, ident) in &by_age[..n] {
            if let Some(mut c) = self.flows.remove(ident)
                && !c.closed
                && c.has_delta()
            {
                out.push(c.record(c.last_seen_ms, EndReason::LackOfResources));
            }
        }
    }

    /// Active timeout: running flows whose open slice is `active_timeout` old and has
    /// traffic are exported and a new slice begins. A slice without traffic is not
    /// sent; it is moved up to the flow's last activity instead, so the next slice
    /// starts no earlier than its bytes can have.
    fn expire(&mut self, now_ms: i64, out: &mut Vec<FlowRecord>) {
        for c in self.flows.values_mut() {
            if c.closed || now_ms - c.slice_start_ms < self.active_timeout_ms {
                continue;
            }
            if c.has_delta() {
                out.push(c.record(c.last_seen_ms, EndReason::ActiveTimeout));
            } else {
                c.slice_start_ms = c.slice_start_ms.max(c.last_seen_ms);
            }
        }
    }

    /// Shutdown: every open slice with traffic goes out as a forced end.
    fn finish(&mut self, out: &mut Vec<FlowRecord>) {
        for (_, mut c) in self.flows.drain() {
            if !c.closed && c.has_delta() {
                out.push(c.record(c.last_seen_ms, EndReason::ForcedEnd));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Transport: one non-blocking UDP socket
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    records: u64,
    messages: u64,
    dropped: u64,
}

struct Transport {
    socket: UdpSocket,
    collector: SocketAddr,
    /// `connect` failed (no route yet, e.g. WAN down at boot); retried before each send.
    connected: bool,
    model: FlowModel,
    templates: Templates,
    /// The data records of one send, kept to reuse their allocation.
    data: Vec<DataRecord>,
    max_len: usize,
    header: MessageHeader,
    template_refresh: Duration,
    templates_sent: Option<Instant>,
    messages_since_templates: u64,
    /// Data records of the previous message: an ICMP "port unreachable" for it shows up
    /// as `ECONNREFUSED` on the next send, so it was lost too.
    last_records: u32,
    stats: Stats,
    records: Counter,
    messages: Counter,
    bytes: Counter,
    send_errors: Counter,
    last_error_log: Option<Instant>,
}

impl Transport {
    fn new(
        collector: SocketAddr,
        model: FlowModel,
        observation_domain: u32,
        max_len: usize,
        template_refresh: Duration,
    ) -> anyhow::Result<Transport> {
        let local: SocketAddr = match collector {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local)
            .with_context(|| format!("opening a UDP socket for IPFIX export to {collector}"))?;
        socket
            .set_nonblocking(true)
            .context("making the IPFIX socket non-blocking")?;
        let label = |reason: &'static str| metrics::counter!("netmon_export_drops_total", "exporter" => "ipfix", "reason" => reason);
        let mut t = Transport {
            socket,
            collector,
            connected: false,
            model,
            templates: Templates::new(model),
            data: Vec::new(),
            max_len,
            header: MessageHeader {
                observation_domain,
                sequence: 0,
            },
            template_refresh,
            templates_sent: None,
            messages_since_templates: 0,
            last_records: 0,
            stats: Stats::default(),
            records: metrics::counter!("netmon_export_records_total", "exporter" => "ipfix"),
            messages: metrics::counter!("netmon_export_messages_total", "exporter" => "ipfix"),
            bytes: metrics::counter!("netmon_export_bytes_total", "exporter" => "ipfix"),
            send_errors: label("send_error"),
            last_error_log: None,
        };
        t.connect();
        Ok(t)
    }

    /// A connected UDP socket reports the collector's ICMP errors (`ECONNREFUSED`),
    /// which is how an absent collector becomes a counted drop.
    fn connect(&mut self) -> bool {
        if !self.connected {
            match self.socket.connect(self.collector) {
                Ok(()) => self.connected = true,
                Err(e) => self.log_error(&e),
            }
        }
        self.connected
    }

    fn templates_due(&mut self) -> bool {
        let due = self
            .templates_sent
            .is_none_or(|t| t.elapsed() >= self.template_refresh)
            || self.messages_since_templates >= TEMPLATE_REFRESH_MESSAGES;
        if due {
            self.templates_sent = Some(Instant::now());
            self.messages_since_templates = 0;
        }
        due
    }

    /// Sends `records` (and templates when due), with each end's interface and MAC
    /// from `sides`. Never blocks: what cannot be sent now is dropped and counted.
    fn send(&mut self, records: &[FlowRecord], sides: &Sides) {
        let mut templates = self.templates_due();
        if records.is_empty() && !templates {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        for r in records {
            let (initiator, responder) = (sides.of(r.orig.src), sides.of(r.reply.src));
            r.data_records(self.model, initiator, responder, &mut data);
        }
        // Templates go in the first message of the call only.
        let messages =
            self.templates
                .encode_messages(&data, self.max_len, &mut self.header, || {
                    std::mem::take(&mut templates)
                });
        data.clear();
        self.data = data;
        for (i, (msg, n)) in messages.into_iter().enumerate() {
            if i > 0 && i % PACE_MESSAGES == 0 {
                std::thread::sleep(PACE_GAP);
            }
            self.messages_since_templates += 1;
            if !self.connect() {
                self.drop_records(u64::from(n));
                // Templates must go again once the socket works.
                self.templates_sent = None;
                continue;
            }
            match self.socket.send(&msg) {
                Ok(_) => {
                    self.stats.records += u64::from(n);
                    self.stats.messages += 1;
                    self.records.increment(u64::from(n));
                    self.messages.increment(1);
                    self.bytes.increment(msg.len() as u64);
                    self.last_records = n;
                }
                Err(e) => {
                    let lost = if e.kind() == io::ErrorKind::ConnectionRefused {
                        n + std::mem::take(&mut self.last_records)
                    } else {
                        n
                    };
                    self.drop_records(u64::from(lost));
                    // The collector may have lost its templates too (restarted).
                    self.templates_sent = None;
                    self.log_error(&e);
                }
            }
        }
    }

    fn drop_records(&mut self, n: u64) {
        self.stats.dropped += n;
        self.send_errors.increment(n);
    }

    fn log_error(&mut self, e: &io::Error) {
        if self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            self.last_error_log = Some(Instant::now());
            log::warn!(
                "IPFIX export to {}: {e}; records are dropped and counted \
                 (netmon_export_drops_total) until the collector answers",
                self.collector
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::record::tests::tuple;
    use super::*;
    use crate::flow::{CtFlow, PROTO_UDP};

    fn flow(ct_id: u32, proto: u8, start_ms: Option<i64>) -> CtFlow {
        CtFlow {
            ct_id,
            family: 4,
            proto,
            orig: tuple("10.77.0.10", 40000, "203.0.113.80", 80),
            reply: tuple("203.0.113.80", 80, "203.0.113.1", 61000),
            status: 0,
            tcp_state: (proto == PROTO_TCP).then_some(3),
            mark: 0,
            zone: 0,
            counters: Counters::default(),
            kernel_start_ms: start_ms,
            kernel_stop_ms: None,
        }
    }

    fn change(f: &CtFlow, bytes: (u64, u64), at: i64, ended: bool) -> FlowChange {
        let mut flow = f.clone();
        flow.counters = Counters {
            orig_bytes: bytes.0,
            orig_packets: bytes.0 / 100,
            reply_bytes: bytes.1,
            reply_packets: bytes.1 / 1000,
        };
        FlowChange {
            flow,
            observed_ms: at,
            ended,
        }
    }

    #[test]
    fn slices_of_a_long_flow_add_up_to_its_total() {
        let mut cache = FlowCache::new(1000, 2_000, 1_000);
        let f = flow(1, PROTO_TCP, Some(1_500));
        let mut out = Vec::new();
        cache.apply(change(&f, (100, 1_000), 2_000, false), &mut out);
        cache.expire(2_500, &mut out);
        assert!(out.is_empty(), "not due yet");
        cache.apply(change(&f, (300, 50_000), 3_600, false), &mut out);
        cache.expire(3_600, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end_reason, EndReason::ActiveTimeout);
        assert_eq!((out[0].start_ms, out[0].end_ms), (1_500, 3_600));
        // Nothing moved: no record, and the slice start moves up to the last activity.
        cache.expire(9_000, &mut out);
        assert_eq!(out.len(), 1);
        let mut closed = change(&f, (400, 90_000), 10_000, false);
        closed.flow.tcp_state = Some(7);
        cache.apply(closed, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].end_reason, EndReason::EndOfFlow);
        assert_eq!(out[1].start_ms, 3_600);
        // TIME_WAIT expires: a few more bytes ride on the DESTROY.
        let mut gone = change(&f, (452, 90_000), 130_000, true);
        gone.flow.tcp_state = Some(7);
        cache.apply(gone, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(cache.len(), 0);
        let sum = out.iter().fold(Counters::default(), |mut s, r| {
            s.orig_bytes += r.delta.orig_bytes;
            s.reply_bytes += r.delta.reply_bytes;
            s
        });
        assert_eq!((sum.orig_bytes, sum.reply_bytes), (452, 90_000));
    }

    #[test]
    fn a_flow_older_than_the_exporter_counts_from_first_sight() {
        let mut cache = FlowCache::new(1000, 60_000, 10_000);
        let f = flow(2, PROTO_UDP, Some(5_000));
        let mut out = Vec::new();
        cache.apply(change(&f, (1_000, 2_000), 10_100, false), &mut out);
        cache.apply(change(&f, (1_500, 2_600), 12_000, true), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].delta.orig_bytes, out[0].delta.reply_bytes),
            (500, 600)
        );
        assert_eq!(out[0].end_reason, EndReason::IdleTimeout);
        assert_eq!(out[0].start_ms, 10_100);
    }

    #[test]
    fn a_short_flow_is_one_record_and_a_reused_identity_a_new_flow() {
        let mut cache = FlowCache::new(1000, 60_000, 0);
        let f = flow(3, PROTO_UDP, Some(100));
        let mut out = Vec::new();
        cache.apply(change(&f, (64, 64), 150, true), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].start_ms, out[0].end_ms), (100, 150));
        cache.apply(change(&f, (1_000, 1_000), 200, false), &mut out);
        // Its end was lost; the same identity comes back with smaller counters.
        cache.apply(change(&f, (10, 10), 300, false), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].delta.orig_bytes, 1_000);
        cache.finish(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].end_reason, EndReason::ForcedEnd);
        assert_eq!(out[2].delta.orig_bytes, 10);
    }

    #[test]
    fn a_full_cache_evicts_the_least_recently_active() {
        let mut cache = FlowCache::new(16, 60_000, 0);
        let mut out = Vec::new();
        for id in 0..17u32 {
            let f = flow(100 + id, PROTO_UDP, Some(1));
            cache.apply(change(&f, (10, 10), i64::from(id), false), &mut out);
        }
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(
            out.iter()
                .all(|r| r.end_reason == EndReason::LackOfResources)
        );
        assert_eq!(cache.len(), 15);
    }

    #[test]
    fn an_absent_collector_is_counted_not_waited_for() {
        // A port nobody listens on: the kernel answers with ICMP port unreachable.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let mut t =
            Transport::new(addr, FlowModel::Uniflow, 1, 1400, Duration::from_secs(60)).unwrap();
        let sides = Sides::new(&Config::default(), Arc::default());
        let r = FlowRecord {
            proto: PROTO_UDP,
            orig: tuple("10.77.0.10", 1, "203.0.113.80", 2),
            reply: tuple("203.0.113.80", 2, "203.0.113.1", 1),
            delta: Counters::default(),
            start_ms: 0,
            end_ms: 0,
            end_reason: EndReason::IdleTimeout,
            tcp_state: None,
            opening: true,
        };
        let started = Instant::now();
        for _ in 0..20 {
            t.send(std::slice::from_ref(&r), &sides);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(t.stats.dropped > 0, "drops counted");
    }
}
