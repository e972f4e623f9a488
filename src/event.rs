//! The channel between the collectors and the one writer (DESIGN §1, principle 1): the
//! message type every producer sends, its payloads, and the handle that sends them.
//!
//! Collectors send coalesced batches; the web sends user commands with a oneshot for
//! the reply. The channel is bounded (`channel_capacity`): collectors use
//! [`WriterHandle::try_send`] and keep coalescing when it is full, so they never wait on
//! the writer. This module is all that collectors and the writer share: a collector
//! imports `crate::event`, never `crate::store`, and `store` never imports `collect`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::flow::CtFlow;

/// Everything that may change the database.
#[derive(Debug)]
pub enum Event {
    /// What the conntrack tracker saw change since its previous batch.
    Flows(FlowBatch),
    /// DNS answers LAN clients received (packets or the dnsmasq log), oldest first.
    Dns(Vec<DnsObservation>),
    /// Server names LAN clients asked for in the first packet of a TLS connection
    /// (`collect::dns_packets`), for flows no DNS answer names.
    Tls(Vec<TlsName>),
    /// One router health reading (`collect::system`), folded into the minute rollups.
    /// Boxed: it is several times larger than the other variants.
    System(Box<SystemSample>),
    /// Reverse DNS and AS of remote hosts, resolved off the writer's path (`enrich`).
    Enrichment(Vec<HostEnrichment>),
    /// Refused WAN connection attempts per minute (`collect::nflog`), added to
    /// `drop_minutes`.
    Drops(Vec<DropCount>),
    /// LAN addresses seen with their MAC (`collect::identity`: neighbour table, DHCP
    /// leases); the writer keys devices by MAC (`store::devices`).
    Identity(Vec<Sighting>),
    /// A user action from the web UI; the writer answers on `reply` after commit.
    Command(Command, oneshot::Sender<CommandResult>),
}

/// One tick's worth of conntrack changes, already coalesced per flow.
#[derive(Debug, Default)]
pub struct FlowBatch {
    /// Flows whose counters or state changed, or that are new, with their *cumulative*
    /// counters. The writer computes deltas against what it has committed, so a
    /// restarted collector (which has forgotten what it sent) never double counts.
    pub changed: Vec<FlowChange>,
    /// Set after a complete table dump: every live entry was in `changed` of this or an
    /// earlier batch since the dump began, so stored live flows absent from that dump
    /// ended while nobody watched (netmon down, or an overrun lost their DESTROY).
    pub dump_complete: Option<DumpComplete>,
}

/// One flow's latest known state.
#[derive(Debug, Clone)]
pub struct FlowChange {
    pub flow: CtFlow,
    /// When netmon observed this state (unix ms). For an ended flow with a kernel stop
    /// timestamp, that timestamp.
    pub observed_ms: i64,
    /// The entry is gone (DESTROY seen, or absent from a dump).
    pub ended: bool,
}

/// Marks the end of a full dump; see [`FlowBatch::dump_complete`].
#[derive(Debug, Clone, Copy)]
pub struct DumpComplete {
    /// When the dump request was sent (unix ms). A stored live flow last seen before this
    /// and not refreshed by the dump is gone.
    pub started_ms: i64,
}

/// What one pass found for one remote host; the writer stores it
/// (`store::enrich::apply_enrichment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEnrichment {
    /// `remote_hosts.id`.
    pub host_id: i64,
    /// The reverse lookup, when rDNS is on and the host was due.
    pub rdns: Option<crate::enrich::rdns::PtrResult>,
    /// The ASN lookup, when an ASN database is loaded: `Some(None)` = not in the table.
    pub asn: Option<Option<crate::enrich::asn::AsnMatch>>,
    /// When it was looked up (unix ms).
    pub at_ms: i64,
}

/// Refused inbound connection attempts of one source to one port in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCount {
    /// Start of the minute (unix ms).
    pub minute_ms: i64,
    pub src: std::net::IpAddr,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    pub dst_port: u16,
    /// The interface the attempt arrived on.
    pub iface: String,
    pub attempts: u64,
}

/// Most changes in one `Event::Flows` message: a burst of 100 000 new flows becomes five
/// messages in one tick rather than one huge allocation the writer chews on at once.
pub const MAX_CHANGES_PER_BATCH: usize = 20_000;

// --- identity: LAN address ↔ MAC ----------------------------------------------------

/// Where an address ↔ MAC pairing was learnt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SightingSource {
    Neighbour,
    Dhcp,
}

/// One address seen with its MAC, and the DHCP hostname when a lease names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub ip: IpAddr,
    pub mac: [u8; 6],
    pub hostname: Option<String>,
    pub source: SightingSource,
    pub at_ms: i64,
}

/// The latest MAC sighted behind each address, for a reader that needs one per record
/// (the IPFIX exporter) without asking the writer. The device collector fills it; past
/// [`MacTable::MAX`] addresses it starts afresh, as the collector's own memory does.
#[derive(Debug, Default)]
pub struct MacTable(std::sync::RwLock<std::collections::HashMap<IpAddr, [u8; 6]>>);

impl MacTable {
    pub const MAX: usize = 65_536;

    pub fn get(&self, ip: IpAddr) -> Option<[u8; 6]> {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        map.get(&ip).copied()
    }

    pub fn set(&self, ip: IpAddr, mac: [u8; 6]) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= Self::MAX && !map.contains_key(&ip) {
            map.clear();
        }
        map.insert(ip, mac);
    }
}

/// `aa:bb:cc:dd:ee:ff`, the form the database stores.
pub fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

// --- DNS answers ----------------------------------------------------------------------

/// Where an observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsSource {
    /// A DNS response packet to a LAN client (NFQUEUE).
    Packet,
    /// dnsmasq's query log.
    Log,
}

impl DnsSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DnsSource::Packet => "packet",
            DnsSource::Log => "log",
        }
    }

    /// Where the query was seen, in the owner's words (pages; the API uses `as_str`).
    pub fn label(self) -> &'static str {
        match self {
            DnsSource::Packet => "DNS reply",
            DnsSource::Log => "dnsmasq log",
        }
    }

    /// The number `dns_queries.source` stores.
    pub fn code(self) -> i64 {
        match self {
            DnsSource::Packet => 0,
            DnsSource::Log => 1,
        }
    }

    /// The source a stored code names.
    pub fn from_code(code: i64) -> DnsSource {
        if code == 1 {
            DnsSource::Log
        } else {
            DnsSource::Packet
        }
    }
}

/// One query a LAN client made and the answer it got, as far as the source shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsObservation {
    /// When the answer (or, for an unanswered query, the query) was seen (unix ms).
    pub ts_ms: i64,
    /// The LAN client that asked.
    pub client: IpAddr,
    /// The name asked for, canonical ([`crate::dns_name`]).
    pub qname: String,
    /// Query type (1 A, 28 AAAA, 5 CNAME, 12 PTR, 65 HTTPS, …).
    pub qtype: u16,
    /// Response code (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED); `None` when the
    /// source saw the query but no answer.
    pub rcode: Option<u16>,
    /// The answer section in order: the CNAME chain, then addresses. Empty for
    /// NXDOMAIN and NODATA.
    pub answers: Vec<DnsAnswer>,
    pub source: DnsSource,
}

/// The server name of one TLS connection, from its client's ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsName {
    /// When the ClientHello passed (unix ms).
    pub ts_ms: i64,
    /// The connection: its original tuple as conntrack keys it.
    pub conn: TcpConn,
    /// The name, canonical ([`crate::dns_name`]).
    pub name: String,
}

/// A TCP connection's original tuple: (client, client port, server, server port). Unique
/// among live connections (in one conntrack zone).
pub type TcpConn = (IpAddr, u16, IpAddr, u16);

/// One record of an answer section that netmon uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    /// The record's owner name, canonical.
    pub name: String,
    /// Seconds; `None` when the source does not say (dnsmasq's log).
    pub ttl: Option<u32>,
    pub data: AnswerData,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerData {
    /// `name` is an alias of this (canonical) name.
    Cname(String),
    /// `name` has this address.
    Addr(IpAddr),
}

/// Records kept per answer, whichever source it came from; the rest are dropped and
/// counted. Real answers are far shorter (a CDN name has a few CNAMEs and addresses);
/// a crafted one must not make one observation hold thousands.
pub const MAX_ANSWERS: usize = 64;

impl DnsObservation {
    /// NXDOMAIN: the name does not exist.
    pub fn is_nxdomain(&self) -> bool {
        self.rcode == Some(3)
    }

    /// The end of the CNAME chain starting at `qname`, when it differs from `qname`.
    pub fn canonical_name(&self) -> Option<&str> {
        let mut name = self.qname.as_str();
        // A chain is at most as long as the answer section; that bounds loops.
        for _ in 0..self.answers.len() {
            let next = self.answers.iter().find_map(|a| match &a.data {
                AnswerData::Cname(target) if a.name == name => Some(target.as_str()),
                _ => None,
            });
            match next {
                Some(target) => name = target,
                None => break,
            }
        }
        (name != self.qname).then_some(name)
    }

    /// Every address in the answer with its TTL.
    pub fn addresses(&self) -> impl Iterator<Item = (IpAddr, Option<u32>)> + '_ {
        self.answers.iter().filter_map(|a| match a.data {
            AnswerData::Addr(ip) => Some((ip, a.ttl)),
            AnswerData::Cname(_) => None,
        })
    }
}

// --- router health -------------------------------------------------------------------

/// What an interface is to the router, from `wan_interfaces` / `lan_interfaces`: one of
/// them, a port of a bridge that is one (`lan1` of `br-lan`), or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Wan,
    Lan,
    WanPort,
    LanPort,
    Other,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Wan => "wan",
            Role::Lan => "lan",
            Role::WanPort => "wan_port",
            Role::LanPort => "lan_port",
            Role::Other => "other",
        }
    }

    /// The role as the pages name it, from its stored text.
    pub fn label(stored: &str) -> &'static str {
        match stored {
            "wan" => "WAN",
            "lan" => "LAN",
            "wan_port" => "WAN port",
            "lan_port" => "LAN port",
            _ => "neither LAN nor WAN",
        }
    }
}

/// One reading of everything. Optional parts are `None` when the kernel does not
/// expose them (no conntrack module loaded, no `/proc/meminfo` in a sandbox) or, for
/// rates, on the first sample.
#[derive(Debug, Clone, Serialize)]
pub struct SystemSample {
    /// When it was taken (unix ms).
    pub at_ms: i64,
    /// Time since the previous sample (ms, monotonic): what the rates are over.
    pub interval_ms: Option<i64>,
    /// Busy share of all CPUs over the interval, 0–1.
    pub cpu_ratio: Option<f64>,
    pub load: Option<Load>,
    pub memory: Option<Memory>,
    pub filesystems: Vec<Filesystem>,
    pub interfaces: Vec<InterfaceSample>,
    pub conntrack: Option<Conntrack>,
    /// Seconds since boot.
    pub uptime_s: Option<f64>,
    pub temperatures: Vec<Temperature>,
}

/// `/proc/loadavg`: runnable (and uninterruptible) tasks averaged over 1, 5, 15 min.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Load {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

/// `/proc/meminfo`, in bytes. `available` is the kernel's estimate of what can be
/// allocated without swapping (`MemAvailable`), the honest "free" on a router whose
/// page cache fills RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl Memory {
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes)
    }
}

/// One file system netmon depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Filesystem {
    /// `database` (the one holding `db_path`), `overlay` (OpenWrt's writable flash,
    /// `/overlay`) or `root` (`/`, where there is no overlay).
    pub name: &'static str,
    pub path: String,
    pub size_bytes: u64,
    /// Space an unprivileged process may still use (`f_bavail`, df's "Avail").
    pub free_bytes: u64,
}

/// The kernel's cumulative counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InterfaceCounters {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

impl InterfaceCounters {
    /// `self - prev`, or `None` when any counter went backwards (reset or wrap).
    pub fn since(&self, prev: &InterfaceCounters) -> Option<InterfaceCounters> {
        Some(InterfaceCounters {
            rx_bytes: self.rx_bytes.checked_sub(prev.rx_bytes)?,
            tx_bytes: self.tx_bytes.checked_sub(prev.tx_bytes)?,
            rx_packets: self.rx_packets.checked_sub(prev.rx_packets)?,
            tx_packets: self.tx_packets.checked_sub(prev.tx_packets)?,
        })
    }

    pub(crate) fn add(&mut self, other: &InterfaceCounters) {
        self.rx_bytes = self.rx_bytes.saturating_add(other.rx_bytes);
        self.tx_bytes = self.tx_bytes.saturating_add(other.tx_bytes);
        self.rx_packets = self.rx_packets.saturating_add(other.rx_packets);
        self.tx_packets = self.tx_packets.saturating_add(other.tx_packets);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InterfaceSample {
    pub name: String,
    pub role: Role,
    /// Cumulative, as the kernel reports them.
    pub counters: InterfaceCounters,
    /// Since the previous sample; `None` on the first sample of this interface and after
    /// a reset. What the writer adds to the minute rollups.
    pub delta: Option<InterfaceCounters>,
    /// Bytes per second over the interval (`delta` / `interval_ms`).
    pub rx_bytes_per_s: Option<f64>,
    pub tx_bytes_per_s: Option<f64>,
}

/// The conntrack table of netmon's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Conntrack {
    /// `net.netfilter.nf_conntrack_count`
    pub count: u64,
    /// `net.netfilter.nf_conntrack_max`: past it the kernel drops new connections
    /// ("nf_conntrack: table full, dropping packet").
    pub max: u64,
}

impl Conntrack {
    /// Fill, 0–1 (0 when `max` is 0).
    pub fn fill(&self) -> f64 {
        if self.max == 0 {
            0.0
        } else {
            self.count as f64 / self.max as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Temperature {
    /// `thermal/<zone type>` or `hwmon/<chip name>/<label>`.
    pub sensor: String,
    pub celsius: f64,
}

// --- user commands -------------------------------------------------------------------

/// Longest notes accepted on a device, an incident or a rule (characters): a few lines
/// about where the device is and whose it is.
pub const MAX_NOTES_CHARS: usize = 1000;

/// User actions that change the database (more arrive with later features).
#[derive(Debug)]
pub enum Command {
    /// Give a device a name of the owner's choosing (empty clears it).
    RenameDevice {
        device_id: i64,
        name: String,
    },
    /// Replace the owner's notes on a device (empty clears them).
    SetDeviceNotes {
        device_id: i64,
        notes: String,
    },
    /// Acknowledge an incident and its hits.
    AckIncident {
        incident_id: i64,
    },
    /// Acknowledge every open incident (and their hits).
    AckAllIncidents,
    /// Delete every acknowledged incident and its hits.
    ClearAcknowledged,
    /// Silence an incident (no notifications, no badge) until `until_ms`; 0 unmutes.
    MuteIncident {
        incident_id: i64,
        until_ms: i64,
    },
    /// Replace the owner's notes on an incident.
    SetIncidentNotes {
        incident_id: i64,
        notes: String,
    },
    /// Create (`id: None`) or replace an allow/suppress rule; answered with its id.
    /// `reevaluate` re-checks open incidents against the rule set afterwards.
    SaveRule {
        id: Option<i64>,
        /// Boxed: a rule is many times the size of every other command.
        rule: Box<crate::detect::rules::RuleSpec>,
        reevaluate: bool,
    },
    DeleteRule {
        rule_id: i64,
    },
    /// Save a search (a page URL) under a name; answered with its id. Checked by
    /// [`crate::store::saved::check_name`] and [`crate::store::saved::check_url`].
    CreateSearch {
        name: String,
        url: String,
    },
    RenameSearch {
        search_id: i64,
        name: String,
    },
    /// Pin (list first, show on the overview) or unpin a saved search.
    PinSearch {
        search_id: i64,
        pinned: bool,
    },
    DeleteSearch {
        search_id: i64,
    },
}

/// What the writer answers a command with.
pub type CommandResult = Result<CommandReply, CommandError>;

/// Why a command was not applied. The kind tells the web what to answer (404, 400 or
/// 503); the text is for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command names a row that does not exist.
    #[error("no {what} with id {id}")]
    NotFound { what: &'static str, id: i64 },
    /// The command itself is refused: a value out of bounds, a list that is full.
    #[error("{0}")]
    Invalid(String),
    /// The database did not take the write (a storage error, the writer stopping):
    /// nothing is wrong with the command, and it may work later.
    #[error("{0}")]
    Storage(String),
}

impl From<rusqlite::Error> for CommandError {
    fn from(e: rusqlite::Error) -> CommandError {
        CommandError::Storage(format!("database error: {e}"))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum CommandReply {
    Done,
    /// The row a command created or changed (e.g. a rule's id).
    Id(i64),
}

// --- the handle ----------------------------------------------------------------------

/// What the writer publishes on its `tokio::sync::watch` after every commit, so pages
/// and the SSE stream know whether anything they show changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tick {
    /// Increments with every commit.
    pub seq: u64,
    /// Commit time, unix ms.
    pub at_ms: i64,
    /// Flow rows inserted / updated / ended in this commit.
    pub flows_new: u64,
    pub flows_updated: u64,
    pub flows_ended: u64,
    /// Devices or remote hosts were created or renamed in this commit.
    pub devices_changed: bool,
    pub remote_hosts_changed: bool,
    /// Live flows after this commit.
    pub active_flows: u64,
}

/// Cheap clonable sender to the writer. Collectors use [`WriterHandle::try_send`] and
/// coalesce when it fails; the web uses [`WriterHandle::command`].
#[derive(Clone)]
pub struct WriterHandle {
    tx: SyncSender<Event>,
    /// Messages sent but not yet taken by the writer (std's channel has no `len`).
    pub(crate) depth: Arc<AtomicUsize>,
    /// Flow changes sent but not yet taken by the writer: the channel's real weight (see
    /// [`MAX_QUEUED_FLOW_CHANGES`]).
    pub(crate) queued_flows: Arc<AtomicUsize>,
    /// Whether commits are failing for a storage reason; set by the writer thread.
    pub(crate) storage: Arc<StorageStatus>,
}

/// The writer's view of its storage, shared with the web through [`WriterHandle`]:
/// atomics and a short-held lock, so `/healthz` never waits on the writer. No 64-bit
/// atomic: 32-bit MIPS and PowerPC routers have none, so the outage's start time sits
/// behind the lock with its error. Only the writer thread writes here.
#[derive(Default)]
pub(crate) struct StorageStatus {
    /// Commits are failing; checked on every commit without taking the lock.
    failing: AtomicBool,
    /// Changes of the held batch (see `store::writer`).
    held_changes: AtomicUsize,
    /// Since when (unix ms, the first failed commit) and why (as SQLite words it).
    outage: Mutex<(i64, String)>,
}

/// Commits are failing for a storage reason (disk full, I/O error): since when, why, and
/// how many changes wait in the writer for the next attempt. Shown by `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WriteFailure {
    pub since_ms: i64,
    pub error: String,
    pub held_changes: usize,
}

impl StorageStatus {
    pub(crate) fn failing(&self, error: &rusqlite::Error, held_changes: usize) {
        {
            let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
            if !self.failing.load(Ordering::Acquire) {
                outage.0 = crate::time::now_ms();
            }
            outage.1 = error.to_string();
        }
        self.held_changes.store(held_changes, Ordering::Relaxed);
        // Set last, so a reader that sees it finds the outage filled in.
        self.failing.store(true, Ordering::Release);
        metrics::gauge!("netmon_writer_held_changes").set(held_changes as f64);
    }

    pub(crate) fn working(&self) {
        if self.failing.swap(false, Ordering::AcqRel) {
            self.held_changes.store(0, Ordering::Relaxed);
            metrics::gauge!("netmon_writer_held_changes").set(0.0);
        }
    }

    pub(crate) fn failure(&self) -> Option<WriteFailure> {
        if !self.failing.load(Ordering::Acquire) {
            return None;
        }
        let (since_ms, error) = self
            .outage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Some(WriteFailure {
            since_ms,
            error,
            held_changes: self.held_changes.load(Ordering::Relaxed),
        })
    }
}

/// Most flow changes waiting in the channel. The channel is bounded in messages
/// (`channel_capacity`), but a flow message may carry up to [`MAX_CHANGES_PER_BATCH`]
/// changes, each a copy of the flow: a channel of 64 full messages would hold over a
/// million copies, hundreds of MiB — an OOM kill on a 128 MB router. Past this many, a
/// flow message is refused like a full channel, and the collector keeps the
/// changes coalesced in its tracker (bounded by `max_tracked_flows`), where a flow
/// updated again costs nothing more. Two full messages (≈ 6 MiB of changes): the writer
/// always has the next one waiting.
pub const MAX_QUEUED_FLOW_CHANGES: usize = 2 * MAX_CHANGES_PER_BATCH;

impl WriterHandle {
    /// A handle on the sending side of the writer's channel; `depth` counts the events
    /// queued and not yet taken. The writer thread makes the real one; tests and
    /// benchmarks make one around a channel they read themselves.
    pub fn new(tx: SyncSender<Event>, depth: Arc<AtomicUsize>) -> WriterHandle {
        WriterHandle {
            tx,
            depth,
            queued_flows: Arc::default(),
            storage: Arc::default(),
        }
    }

    /// `Some` while commits fail for a storage reason (see `store::writer`).
    pub fn write_failure(&self) -> Option<WriteFailure> {
        self.storage.failure()
    }

    /// Never blocks. On `Err` the event comes back: the channel is full (keep it and
    /// coalesce) or the writer is gone (shutting down).
    pub fn try_send(&self, event: Event) -> Result<(), Event> {
        let flows = flow_changes(&event);
        if flows > 0 {
            // Checked, then added after the send: the one conntrack thread sends flows,
            // so the bound holds.
            let queued = self.queued_flows.load(Ordering::Relaxed);
            if queued > 0 && queued + flows > MAX_QUEUED_FLOW_CHANGES {
                return Err(event);
            }
        }
        match self.tx.try_send(event) {
            Ok(()) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                self.queued_flows.fetch_add(flows, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(e)) | Err(TrySendError::Disconnected(e)) => Err(e),
        }
    }

    /// Tests that read the channel themselves stand in for the writer: everything sent
    /// so far was taken.
    #[cfg(test)]
    pub(crate) fn all_taken(&self) {
        self.depth.store(0, Ordering::Relaxed);
        self.queued_flows.store(0, Ordering::Relaxed);
    }

    /// Messages waiting for the writer.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Runs a user command through the writer and waits for its commit. Refused at once
    /// while commits fail for a storage reason: the writer takes nothing new then, and the
    /// user is better served by the reason than by a page that hangs.
    pub async fn command(&self, command: Command) -> CommandResult {
        if let Some(f) = self.write_failure() {
            return Err(CommandError::Storage(format!(
                "the database is not accepting writes ({}); netmon retries on its own, \
                 try again once the storage has room",
                f.error
            )));
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let tx = self.tx.clone();
        let depth = self.depth.clone();
        // A full channel means the writer is busy for a moment; wait for room on a
        // blocking thread rather than failing the user's click.
        tokio::task::spawn_blocking(move || {
            tx.send(Event::Command(command, reply_tx))
                .map(|()| {
                    depth.fetch_add(1, Ordering::Relaxed);
                })
                .map_err(|_| CommandError::Storage("netmon is shutting down".to_owned()))
        })
        .await
        .map_err(|e| CommandError::Storage(e.to_string()))??;
        reply_rx
            .await
            .map_err(|_| CommandError::Storage("the writer stopped before answering".to_owned()))?
    }
}

/// Flow changes an event carries: what [`MAX_QUEUED_FLOW_CHANGES`] bounds.
pub(crate) fn flow_changes(event: &Event) -> usize {
    match event {
        Event::Flows(batch) => batch.changed.len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_name_follows_the_chain() {
        let obs = DnsObservation {
            ts_ms: 0,
            client: "10.0.0.2".parse().unwrap(),
            qname: "cdn.example.test".into(),
            qtype: 1,
            rcode: Some(0),
            answers: vec![
                DnsAnswer {
                    name: "cdn.example.test".into(),
                    ttl: Some(60),
                    data: AnswerData::Cname("edge.cdn-provider.test".into()),
                },
                DnsAnswer {
                    name: "edge.cdn-provider.test".into(),
                    ttl: Some(60),
                    data: AnswerData::Addr("203.0.113.81".parse().unwrap()),
                },
            ],
            source: DnsSource::Packet,
        };
        assert_eq!(obs.canonical_name(), Some("edge.cdn-provider.test"));
        assert_eq!(obs.addresses().count(), 1);
    }
}
