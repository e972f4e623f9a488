//! Scoring: the reason codes, their triggers, and the per-device state they need.
//!
//! The writer calls [`Detector`] while it applies a tick — [`Detector::flow_started`]
//! for every new outbound flow (a LAN device to an internet host),
//! [`Detector::flow_updated`] when its counters grow, [`Detector::dns_observed`] for
//! every DNS answer a device got — and [`Detector::end_tick`] once before the commit.
//! Everything is answered from memory; the only SQL is the writer's own (loading the
//! state at start, resolving a flow's name id once per name). What comes out are
//! [`Candidate`]s: reasons for one flow or one device, which `incident` scores,
//! deduplicates and groups.
//!
//! Codes and triggers (weights from `[detect.weights]`, thresholds from `[detect]`):
//!
//! | code | per | fires when |
//! |---|---|---|
//! | NEW_DST | flow | the device never contacted this address (as far as it remembers) |
//! | DORMANT_DST | flow | it did, but not for `dormant_days` — checked *before* the contact is recorded |
//! | NEW_ASN | flow | the host's AS is known and new for the device |
//! | RARE_PORT | flow | a destination port outside `common_ports` the device never used |
//! | UNEXPECTED_PROTO | flow | an IP protocol outside `common_protos` |
//! | NO_RDNS | flow | the host is known to have no reverse DNS name (never alerts alone) |
//! | NEW_DOMAIN | flow | the flow's registrable domain is new for the device |
//! | DIRECT_IP | flow | a TCP/UDP flow to an address no DNS answer gave this client, and no TLS server name named |
//! | BEACON | flow | the last `beacon_intervals` intervals between connections to this destination are regular (CV < `beacon_max_cv`) |
//! | UPLOAD_HEAVY | flow | a flow sent ≥ `upload_min_bytes`, ≥ max(`upload_ratio_floor`, `volume_factor` × usual ratio) times what it received |
//! | HIGH_EGRESS | device | upload this minute > max(`egress_floor_bytes`, `volume_factor` × usual upload at this hour) |
//! | HIGH_FANOUT | device | new hosts in `scan_window_s` > max(`fanout_floor`, `volume_factor` × usual); each new host counted once |
//! | PORT_SCAN_LIKE | device | ≥ max(`scan_min_ports`, `volume_factor` × usual) ports on ≥ `scan_min_hosts` addresses in `scan_window_s`, no port over `scan_max_port_share` |
//! | NXDOMAIN_BURST | device | NXDOMAIN answers this minute ≥ max(`nxdomain_floor`, `volume_factor` × usual) |
//!
//! A device with less than `learning_hours` of history is *learning*: everything is new
//! to it and it has no usual, so the novelty codes (NEW_DST, DORMANT_DST, NEW_ASN,
//! NEW_DOMAIN) and the codes compared with its baseline (HIGH_EGRESS, HIGH_FANOUT,
//! UPLOAD_HEAVY, NXDOMAIN_BURST) stay quiet. PORT_SCAN_LIKE has absolute floors and
//! fires for a learning device too; so do the codes that need no history.
//!
//! Rules: an allow rule drops a flow from scoring entirely — no reasons, and it counts
//! towards none of the device's windows (a BitTorrent client allowed on its ports never
//! looks like a scan). A suppress rule removes its code from the reasons.
//!
//! Memory is bounded: at most `max_devices` device states (least recently active
//! evicted), and in each at most `max_destinations` remembered destinations, domains,
//! ports, ASNs, beacon destinations and window entries ([`Recent`], [`ScanWindow`]).
//! Something forgotten looks new again — the cost of a bound is a NEW_DST, never
//! unbounded growth. The writer's transaction can roll back after the state moved on;
//! a re-applied batch then finds its destinations known (a missed NEW_DST, never a
//! duplicate hit).
//!
//! (Long: every reason code's check beside the per-device memory it reads, ≈ 910 lines of
//! code; the rest are tests.)

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use crate::idmap::{HashMapExt, HashSetExt, IdIndexMap, IdMap, IdSet};

use super::baseline::Baseline;
use super::rules::{Rules, Target};
use super::{Code, Reason};
use crate::config;
use crate::time::DAY_MS;
use crate::time::minute_start;

/// Remote hosts whose enrichment (rDNS known, ASN) is kept; past it the map restarts
/// and fills again from the next enrichment results.
const HOST_INFO_CAP: usize = 100_000;
/// Name ids whose registrable domain is cached; past it the cache restarts.
const NAME_CACHE_CAP: usize = 20_000;

/// A new outbound flow, as the writer stored it.
#[derive(Debug, Clone, Copy)]
pub struct OutboundFlow<'a> {
    pub row_id: i64,
    pub device_id: i64,
    pub remote_host_id: Option<i64>,
    pub remote: IpAddr,
    pub proto: u8,
    pub dport: Option<u16>,
    /// Start, unix ms (the kernel's stamp when there is one).
    pub at: i64,
    /// The name this client resolved to the address, when it did.
    pub domain: Option<&'a str>,
    /// Whether an answer to *this* client gave the address (not only another client's).
    pub resolved: bool,
    /// Bytes sent and received so far.
    pub up: u64,
    pub down: u64,
}

/// Reasons about one flow or one device, before scoring and dedup (`incident`).
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub at: i64,
    pub device_id: i64,
    /// `None` for a device-level candidate.
    pub flow_id: Option<i64>,
    pub remote_host_id: Option<i64>,
    pub remote_ip: Option<IpAddr>,
    pub proto: Option<u8>,
    pub dport: Option<u16>,
    pub domain: Option<String>,
    pub reasons: Vec<Reason>,
}

/// What enrichment told about a remote host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// `Some(false)`: looked up, no PTR. `None`: not known yet.
    pub has_rdns: Option<bool>,
    pub asn: Option<u32>,
    pub org: Option<String>,
}

/// A map that remembers when each key was last seen and forgets the oldest tenth when
/// it grows past its cap (amortised O(log n) per insert).
#[derive(Debug, Clone)]
pub struct Recent<K, V = ()> {
    map: HashMap<K, (i64, V)>,
    cap: usize,
}

impl<K: Hash + Eq + Clone, V> Recent<K, V> {
    pub fn new(cap: usize) -> Self {
        Recent {
            map: HashMap::new(),
            cap,
        }
    }

    /// When `key` was last seen.
    pub fn last(&self, key: &K) -> Option<i64> {
        self.map.get(key).map(|e| e.0)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|e| &mut e.1)
    }

    /// Records `key` at `at` (never moving its time backwards); returns its value.
    pub fn touch(&mut self, key: K, at: i64, init: impl FnOnce() -> V) -> &mut V {
        if !self.map.contains_key(&key) && self.map.len() >= self.cap {
            self.evict();
        }
        let e = self.map.entry(key).or_insert_with(|| (at, init()));
        e.0 = e.0.max(at);
        &mut e.1
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn evict(&mut self) {
        let mut times: Vec<i64> = self.map.values().map(|e| e.0).collect();
        let n = (self.cap / 10).max(1);
        let nth = n.min(times.len() - 1);
        let (_, cut, _) = times.select_nth_unstable(nth);
        let cut = *cut;
        self.map.retain(|_, e| e.0 > cut);
    }
}

/// The contacts of one device in the sliding scan window, with running counts so each
/// flow costs O(1): distinct ports and addresses, and hosts new to the device.
#[derive(Debug, Clone, Default)]
pub struct ScanWindow {
    entries: VecDeque<(i64, IpAddr, Option<u16>, bool)>,
    ports: IdMap<u16, u32>,
    hosts: HashMap<IpAddr, u32>,
    new_hosts: u32,
}

impl ScanWindow {
    fn push(&mut self, at: i64, ip: IpAddr, port: Option<u16>, new_host: bool, cap: usize) {
        if self.entries.len() >= cap {
            self.pop();
        }
        self.entries.push_back((at, ip, port, new_host));
        if let Some(p) = port {
            *self.ports.entry(p).or_default() += 1;
        }
        *self.hosts.entry(ip).or_default() += 1;
        self.new_hosts += u32::from(new_host);
    }

    fn pop(&mut self) {
        let Some((_, ip, port, new_host)) = self.entries.pop_front() else {
            return;
        };
        if let Some(p) = port
            && let Some(n) = self.ports.get_mut(&p)
        {
            *n -= 1;
            if *n == 0 {
                self.ports.remove(&p);
            }
        }
        if let Some(n) = self.hosts.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.hosts.remove(&ip);
            }
        }
        self.new_hosts -= u32::from(new_host);
    }

    fn expire(&mut self, before: i64) {
        while self.entries.front().is_some_and(|e| e.0 < before) {
            self.pop();
        }
    }

    /// The busiest port and its share of the window's connections that have a port.
    fn top_port(&self) -> Option<(u16, f64)> {
        let total: u32 = self.ports.values().sum();
        self.ports
            .iter()
            .max_by_key(|(p, n)| (**n, std::cmp::Reverse(**p)))
            .map(|(p, n)| (*p, f64::from(*n) / f64::from(total.max(1))))
    }
}

/// Everything the detector remembers about one device.
#[derive(Debug, Clone)]
pub struct DeviceState {
    last_active: i64,
    /// Remote address → last contact.
    pub dsts: Recent<IpAddr>,
    pub asns: Recent<u32>,
    /// Registrable domains contacted.
    pub domains: Recent<String>,
    /// (proto, destination port) used.
    pub ports: Recent<(u8, u16)>,
    /// (address, proto, port) → recent connection start times (at most
    /// `beacon_intervals + 1`).
    beacons: Recent<(IpAddr, u8, Option<u16>), VecDeque<i64>>,
    window: ScanWindow,
    /// The minute `egress` and `nxdomain` count.
    minute: i64,
    egress: u64,
    nxdomain: u64,
    /// What changed in this tick. A device-level code is a judgement on new activity:
    /// it is evaluated only when its own measure grew, so a device that crossed a line
    /// a moment ago is not flagged again for unrelated traffic after it.
    contacts_grew: bool,
    egress_grew: bool,
    nxdomain_grew: bool,
}

impl DeviceState {
    pub fn new(cap: usize) -> DeviceState {
        DeviceState {
            last_active: 0,
            dsts: Recent::new(cap),
            asns: Recent::new(cap),
            domains: Recent::new(cap),
            ports: Recent::new(cap),
            beacons: Recent::new(cap.min(1024)),
            window: ScanWindow::default(),
            minute: 0,
            egress: 0,
            nxdomain: 0,
            contacts_grew: false,
            egress_grew: false,
            nxdomain_grew: false,
        }
    }

    /// Moves the per-minute counters to `at`'s minute (a new minute starts at zero).
    fn roll_minute(&mut self, at: i64) {
        let m = minute_start(at);
        if m > self.minute {
            self.minute = m;
            self.egress = 0;
            self.nxdomain = 0;
        }
    }
}

/// What the detector keeps about a live scored flow, for its counter updates.
#[derive(Debug, Clone)]
struct FlowMeta {
    device_id: i64,
    /// An allow rule matched at start: the flow is not scored, ever.
    allowed: bool,
    remote_host_id: Option<i64>,
    remote: IpAddr,
    proto: u8,
    dport: Option<u16>,
    domain: Option<Arc<str>>,
    /// The start's reason codes ([`code_bit`]), repeated on an UPLOAD_HEAVY hit ("to a
    /// new destination"), their evidence written again from this record
    /// ([`start_evidence`]): a flow holds two bytes, not a string per reason.
    start_codes: u16,
    /// DORMANT_DST's evidence: days since the previous contact.
    dormant_days: u16,
    /// UPLOAD_HEAVY was evaluated positive once; a flow is flagged at most once.
    upload_flagged: bool,
}

/// What a flow's start-time evidence is written from, at its start and again when an
/// UPLOAD_HEAVY hit repeats it.
struct StartFacts<'a> {
    remote: IpAddr,
    proto: u8,
    dport: Option<u16>,
    asn: Option<u32>,
    org: Option<&'a str>,
    registrable: Option<&'a str>,
    dormant_days: u16,
}

/// The evidence of one of a flow's start codes (BEACON's is about the series and is
/// written where it is found).
fn start_evidence(code: Code, s: &StartFacts) -> String {
    let proto = crate::flow::proto_evidence_name(s.proto);
    match code {
        Code::NewDst => format!("first connection from this device to {}", s.remote),
        Code::DormantDst => format!("{} contacted again after {} days", s.remote, s.dormant_days),
        Code::NewAsn => format!(
            "first connection to AS{} ({})",
            s.asn.unwrap_or_default(),
            s.org.unwrap_or("unknown organisation")
        ),
        Code::RarePort => format!(
            "{proto} port {} is not a common port and new for this device",
            s.dport.unwrap_or_default()
        ),
        Code::UnexpectedProto => format!("IP protocol {} ({proto})", s.proto),
        Code::NoRdns => format!("{} has no reverse DNS name", s.remote),
        Code::NewDomain => format!(
            "first connection to a name under {}",
            s.registrable.unwrap_or_default()
        ),
        Code::DirectIp => format!(
            "{} was not the answer to any DNS query of this device",
            s.remote
        ),
        other => other.as_str().to_owned(),
    }
}

/// A code's bit in [`FlowMeta::start_codes`].
const _: () = assert!(Code::ALL.len() <= 16);
fn code_bit(code: Code) -> u16 {
    1 << (code as u16)
}

/// The detection engine the writer owns (see the module docs).
pub struct Detector {
    /// Shared so scoring a flow can hold it while it changes a device's state (an
    /// `Arc` clone per flow, not a copy of the lists).
    cfg: Arc<config::Detect>,
    devices: IdMap<i64, DeviceState>,
    hosts: IdMap<i64, HostInfo>,
    baselines: IdMap<i64, Baseline>,
    pub rules: Rules,
    /// Live outbound flows by row id; entries leave when the flow ends (the writer's
    /// live-flow bound holds for this map too).
    flows: IdIndexMap<i64, FlowMeta>,
    /// qname id → the name, for flows' domains.
    names: IdMap<i64, String>,
    /// Devices with new contacts, bytes or DNS answers in this tick.
    touched: IdSet<i64>,
    out: Vec<Candidate>,
    /// rule id → (times applied this tick, last time).
    rule_uses: IdMap<i64, (u64, i64)>,
    /// DNS answers reach netmon (the tap or dnsmasq's log works): without them every
    /// flow would look like DIRECT_IP, so the code is not raised.
    pub dns_answers_seen: bool,
}

impl Detector {
    pub fn new(cfg: &config::Detect, rules: Rules) -> Detector {
        Detector {
            cfg: Arc::new(cfg.clone()),
            devices: IdMap::new(),
            hosts: IdMap::new(),
            baselines: IdMap::new(),
            rules,
            flows: IdIndexMap::default(),
            names: IdMap::new(),
            touched: IdSet::new(),
            out: Vec::new(),
            rule_uses: IdMap::new(),
            dns_answers_seen: true,
        }
    }

    pub fn config(&self) -> &config::Detect {
        &self.cfg
    }

    /// A device's state, created (and the least recently active evicted) as needed.
    pub fn device(&mut self, device_id: i64, at: i64) -> &mut DeviceState {
        if !self.devices.contains_key(&device_id) && self.devices.len() >= self.cfg.max_devices {
            let oldest = self
                .devices
                .iter()
                .min_by_key(|(_, s)| s.last_active)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.devices.remove(&id);
            }
        }
        let cap = self.cfg.max_destinations;
        let state = self
            .devices
            .entry(device_id)
            .or_insert_with(|| DeviceState::new(cap));
        state.last_active = state.last_active.max(at);
        state
    }

    pub fn set_baselines(&mut self, baselines: impl IntoIterator<Item = Baseline>) {
        self.baselines = baselines.into_iter().map(|b| (b.device_id, b)).collect();
    }

    pub fn baseline(&self, device_id: i64) -> Option<&Baseline> {
        self.baselines.get(&device_id)
    }

    pub fn set_host(&mut self, host_id: i64, info: HostInfo) {
        if self.hosts.len() >= HOST_INFO_CAP && !self.hosts.contains_key(&host_id) {
            self.hosts.clear();
        }
        self.hosts.insert(host_id, info);
    }

    pub fn host_mut(&mut self, host_id: i64) -> &mut HostInfo {
        if self.hosts.len() >= HOST_INFO_CAP && !self.hosts.contains_key(&host_id) {
            self.hosts.clear();
        }
        self.hosts.entry(host_id).or_default()
    }

    pub fn cached_name(&self, qname_id: i64) -> Option<&str> {
        self.names.get(&qname_id).map(String::as_str)
    }

    /// Gives back what a flood grew the maps to ([`crate::memory::shrink_map`]).
    /// True when something was shrunk.
    pub fn shrink_if_sparse(&mut self) -> bool {
        let flows = crate::memory::shrink_index_map(&mut self.flows);
        let names = crate::memory::shrink_map(&mut self.names);
        crate::memory::shrink_map(&mut self.hosts) | flows | names
    }

    pub fn cache_name(&mut self, qname_id: i64, name: String) {
        if self.names.len() >= NAME_CACHE_CAP {
            self.names.clear();
        }
        self.names.insert(qname_id, name);
    }

    /// Whether the device is still learning (see the module docs).
    pub fn learning(&self, device_id: i64, now: i64) -> bool {
        self.baselines
            .get(&device_id)
            .is_none_or(|b| b.learning(now, self.cfg.learning_hours))
    }

    /// Device `from` was merged into `into`: `into` keeps its state, `from`'s goes.
    pub fn remap_device(&mut self, from: i64, into: i64) {
        self.devices.remove(&from);
        self.rules.remap_device(from, into);
        for f in self.flows.values_mut() {
            if f.device_id == from {
                f.device_id = into;
            }
        }
    }

    /// The writer's transaction rolled back: this tick's candidates and rule uses were
    /// never stored, and flow row ids may be handed out again. The live flows' upload
    /// tracking starts over (a flow live across a failed commit is not checked for
    /// UPLOAD_HEAVY); nothing else names a row.
    pub fn rolled_back(&mut self) {
        self.flows.clear();
        self.out.clear();
        self.touched.clear();
        self.rule_uses.clear();
    }

    /// Rule uses of this tick, for `rules.matched`.
    pub fn take_rule_uses(&mut self) -> IdMap<i64, (u64, i64)> {
        std::mem::take(&mut self.rule_uses)
    }

    fn used_rule(&mut self, id: i64, at: i64) {
        let e = self.rule_uses.entry(id).or_insert((0, at));
        e.0 += 1;
        e.1 = e.1.max(at);
    }

    fn reason(&self, code: Code, evidence: String) -> Reason {
        Reason {
            code,
            weight: self.cfg.weights.of(code),
            evidence,
        }
    }

    /// Drops the reasons a suppress rule removes for `target`.
    fn suppress(&mut self, target: &Target, reasons: Vec<Reason>, now: i64) -> Vec<Reason> {
        let mut kept = Vec::with_capacity(reasons.len());
        for r in reasons {
            match self.rules.suppressing(target, r.code, now) {
                Some(id) => self.used_rule(id, now),
                None => kept.push(r),
            }
        }
        kept
    }

    /// Scores a new outbound flow and records it in its device's state.
    ///
    /// (Long: every per-flow reason code in turn against the device's memory; split, each
    /// check would need that whole state passed.)
    pub fn flow_started(&mut self, f: &OutboundFlow) {
        let host = f
            .remote_host_id
            .and_then(|h| self.hosts.get(&h))
            .cloned()
            .unwrap_or_default();
        let target = Target {
            device_id: f.device_id,
            remote: Some(f.remote),
            asn: host.asn,
            org: host.org.as_deref(),
            domain: f.domain,
            proto: Some(f.proto),
            port: f.dport,
        };
        if let Some(id) = self.rules.allowing(&target, f.at) {
            self.used_rule(id, f.at);
            self.flows.insert(
                f.row_id,
                FlowMeta {
                    device_id: f.device_id,
                    allowed: true,
                    remote_host_id: f.remote_host_id,
                    remote: f.remote,
                    proto: f.proto,
                    dport: f.dport,
                    domain: None,
                    start_codes: 0,
                    dormant_days: 0,
                    upload_flagged: false,
                },
            );
            return;
        }
        let learning = self.learning(f.device_id, f.at);
        let cfg = self.cfg.clone();
        let mut found: Vec<(Code, String)> = Vec::new();
        let registrable = f.domain.map(registrable_domain);
        let mut facts = StartFacts {
            remote: f.remote,
            proto: f.proto,
            dport: f.dport,
            asn: host.asn,
            org: host.org.as_deref(),
            registrable: registrable.as_deref(),
            dormant_days: 0,
        };
        let dns_answers_seen = self.dns_answers_seen;
        let state = self.device(f.device_id, f.at);

        // Novelty, decided before this contact is recorded (the replaced system touched
        // last_seen first, so DORMANT_DST could never fire).
        let before = state.dsts.last(&f.remote);
        let new_host = before.is_none();
        match before {
            None if !learning => found.push((Code::NewDst, start_evidence(Code::NewDst, &facts))),
            Some(last) if !learning && f.at - last > i64::from(cfg.dormant_days) * DAY_MS => {
                facts.dormant_days = u16::try_from((f.at - last) / DAY_MS).unwrap_or(u16::MAX);
                found.push((Code::DormantDst, start_evidence(Code::DormantDst, &facts)));
            }
            _ => {}
        }
        state.dsts.touch(f.remote, f.at, || ());
        if let Some(asn) = host.asn {
            if !learning && state.asns.last(&asn).is_none() {
                found.push((Code::NewAsn, start_evidence(Code::NewAsn, &facts)));
            }
            state.asns.touch(asn, f.at, || ());
        }
        if let Some(port) = f.dport {
            if !cfg.common_ports.contains(&port) && state.ports.last(&(f.proto, port)).is_none() {
                found.push((Code::RarePort, start_evidence(Code::RarePort, &facts)));
            }
            state.ports.touch((f.proto, port), f.at, || ());
        }
        if !cfg.common_protos.contains(&f.proto) {
            found.push((
                Code::UnexpectedProto,
                start_evidence(Code::UnexpectedProto, &facts),
            ));
        }
        if host.has_rdns == Some(false) {
            found.push((Code::NoRdns, start_evidence(Code::NoRdns, &facts)));
        }
        if let Some(domain) = &registrable {
            if !learning && state.domains.last(domain).is_none() {
                found.push((Code::NewDomain, start_evidence(Code::NewDomain, &facts)));
            }
            state.domains.touch(domain.clone(), f.at, || ());
        }
        if dns_answers_seen && !f.resolved && matches!(f.proto, 6 | 17) {
            found.push((Code::DirectIp, start_evidence(Code::DirectIp, &facts)));
        }
        let starts = state
            .beacons
            .touch((f.remote, f.proto, f.dport), f.at, VecDeque::new);
        if let Some(evidence) = beacon(starts, f.at, &cfg) {
            found.push((Code::Beacon, evidence));
        }
        state
            .window
            .push(f.at, f.remote, f.dport, new_host, cfg.max_destinations);
        state.contacts_grew = true;
        self.touched.insert(f.device_id);

        let reasons: Vec<Reason> = found
            .into_iter()
            .map(|(code, evidence)| self.reason(code, evidence))
            .collect();
        let reasons = self.suppress(&target, reasons, f.at);
        // The start's reasons travel with the flow; BEACON is about the series, not
        // this flow's destination, so it is not repeated on a later upload hit.
        let start_codes = reasons
            .iter()
            .filter(|r| r.code != Code::Beacon)
            .fold(0, |bits, r| bits | code_bit(r.code));
        let dormant_days = facts.dormant_days;
        self.flows.insert(
            f.row_id,
            FlowMeta {
                device_id: f.device_id,
                allowed: false,
                remote_host_id: f.remote_host_id,
                remote: f.remote,
                proto: f.proto,
                dport: f.dport,
                domain: f.domain.map(Arc::from),
                start_codes,
                dormant_days,
                upload_flagged: false,
            },
        );
        if !reasons.is_empty() {
            self.out.push(Candidate {
                at: f.at,
                device_id: f.device_id,
                flow_id: Some(f.row_id),
                remote_host_id: f.remote_host_id,
                remote_ip: Some(f.remote),
                proto: Some(f.proto),
                dport: f.dport,
                domain: f.domain.map(str::to_owned),
                reasons,
            });
        }
        if f.up > 0 || f.down > 0 {
            self.flow_updated(f.row_id, f.up, f.down, f.up, f.at, false);
        }
    }

    /// A scored flow's counters grew (`up`/`down` cumulative, `delta_up` new upload) or
    /// it ended. Feeds the device's minute upload and evaluates UPLOAD_HEAVY.
    pub fn flow_updated(
        &mut self,
        row_id: i64,
        up: u64,
        down: u64,
        delta_up: u64,
        at: i64,
        ended: bool,
    ) {
        let Some(meta) = self.flows.get(&row_id) else {
            return;
        };
        if meta.allowed {
            if ended {
                self.flows.swap_remove(&row_id);
            }
            return;
        }
        let device_id = meta.device_id;
        let learning = self.learning(device_id, at);
        let usual_ratio = self
            .baselines
            .get(&device_id)
            .map_or(0.0, |b| b.upload_ratio_p95);
        let state = self.device(device_id, at);
        state.roll_minute(at);
        if minute_start(at) == state.minute && delta_up > 0 {
            state.egress += delta_up;
            state.egress_grew = true;
        }
        self.touched.insert(device_id);
        let cfg = &self.cfg;
        let meta = self.flows.get_mut(&row_id).expect("looked up above");
        let needed = cfg.upload_ratio_floor.max(cfg.volume_factor * usual_ratio);
        let ratio = up as f64 / down.max(1) as f64;
        if !learning && !meta.upload_flagged && up >= cfg.upload_min_bytes && ratio >= needed {
            meta.upload_flagged = true;
            let evidence = format!(
                "sent {} and received {} ({ratio:.0}×; usual for this device {usual_ratio:.2}×)",
                bytes(up),
                bytes(down)
            );
            let meta = meta.clone();
            let host = meta
                .remote_host_id
                .and_then(|h| self.hosts.get(&h))
                .cloned()
                .unwrap_or_default();
            let registrable = meta.domain.as_deref().map(registrable_domain);
            let facts = StartFacts {
                remote: meta.remote,
                proto: meta.proto,
                dport: meta.dport,
                asn: host.asn,
                org: host.org.as_deref(),
                registrable: registrable.as_deref(),
                dormant_days: meta.dormant_days,
            };
            let mut reasons: Vec<Reason> = Code::ALL
                .into_iter()
                .filter(|c| meta.start_codes & code_bit(*c) != 0)
                .map(|c| self.reason(c, start_evidence(c, &facts)))
                .collect();
            reasons.push(self.reason(Code::UploadHeavy, evidence));
            let target = Target {
                device_id,
                remote: Some(meta.remote),
                asn: host.asn,
                org: host.org.as_deref(),
                domain: meta.domain.as_deref(),
                proto: Some(meta.proto),
                port: meta.dport,
            };
            let reasons = self.suppress(&target, reasons, at);
            if reasons.iter().any(|r| r.code == Code::UploadHeavy) {
                self.out.push(Candidate {
                    at,
                    device_id,
                    flow_id: Some(row_id),
                    remote_host_id: meta.remote_host_id,
                    remote_ip: Some(meta.remote),
                    proto: Some(meta.proto),
                    dport: meta.dport,
                    domain: meta.domain.as_deref().map(str::to_owned),
                    reasons,
                });
            }
        }
        if ended {
            self.flows.swap_remove(&row_id);
        }
    }

    /// One DNS answer to a device (for NXDOMAIN_BURST).
    pub fn dns_observed(&mut self, device_id: i64, nxdomain: bool, at: i64) {
        if !nxdomain {
            return;
        }
        let state = self.device(device_id, at);
        state.roll_minute(at);
        if minute_start(at) == state.minute {
            state.nxdomain += 1;
            state.nxdomain_grew = true;
        }
        self.touched.insert(device_id);
    }

    /// Evaluates the device-level codes of every device touched in this tick and hands
    /// over the tick's candidates.
    pub fn end_tick(&mut self, now: i64) -> Vec<Candidate> {
        let mut touched: Vec<i64> = self.touched.drain().collect();
        touched.sort_unstable();
        for device_id in touched {
            let found = self.device_codes(device_id, now);
            if found.is_empty() {
                continue;
            }
            let target = Target {
                device_id,
                ..Target::default()
            };
            for (code, evidence) in found {
                let reason = self.reason(code, evidence);
                // One candidate per code: each is its own device-level hit.
                let reasons = self.suppress(&target, vec![reason], now);
                if !reasons.is_empty() {
                    self.out.push(Candidate {
                        at: now,
                        device_id,
                        flow_id: None,
                        remote_host_id: None,
                        remote_ip: None,
                        proto: None,
                        dport: None,
                        domain: None,
                        reasons,
                    });
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// (Long: every per-device reason code against one device's window.)
    fn device_codes(&mut self, device_id: i64, now: i64) -> Vec<(Code, String)> {
        let cfg = self.cfg.clone();
        let learning = self.learning(device_id, now);
        let baseline = self.baselines.get(&device_id).cloned();
        let Some(state) = self.devices.get_mut(&device_id) else {
            return Vec::new();
        };
        let window_ms = (cfg.scan_window_s * 1000) as i64;
        state.window.expire(now - window_ms);
        state.roll_minute(now);
        let mut found = Vec::new();
        let (contacts, egress, nxdomain) = (
            std::mem::take(&mut state.contacts_grew),
            std::mem::take(&mut state.egress_grew),
            std::mem::take(&mut state.nxdomain_grew),
        );
        let usual = |v: u64| -> u64 {
            match (&baseline, learning) {
                (Some(_), false) => (v as f64 * cfg.volume_factor).ceil() as u64,
                _ => 0,
            }
        };
        let w = &state.window;
        let minutes = cfg.scan_window_s / 60;
        let span = if minutes > 0 {
            format!("{minutes} min")
        } else {
            format!("{} s", cfg.scan_window_s)
        };
        let need_ports =
            u64::from(cfg.scan_min_ports).max(usual(baseline.as_ref().map_or(0, |b| b.ports_p95)));
        if contacts
            && w.ports.len() as u64 >= need_ports
            && w.hosts.len() as u64 >= u64::from(cfg.scan_min_hosts)
            && let Some((port, share)) = w.top_port()
            && share <= cfg.scan_max_port_share
        {
            let mut sample: Vec<String> = w
                .entries
                .iter()
                .rev()
                .filter_map(|(_, ip, p, _)| p.map(|p| format_endpoint(*ip, p)))
                .take(5)
                .collect();
            sample.reverse();
            found.push((
                Code::PortScanLike,
                format!(
                    "{} ports on {} addresses in {span} (busiest port {port}: {:.0}% of \
                     connections; latest {})",
                    w.ports.len(),
                    w.hosts.len(),
                    share * 100.0,
                    sample.join(", ")
                ),
            ));
        }
        if let (Some(b), false) = (&baseline, learning) {
            let need = u64::from(cfg.fanout_floor).max(usual(b.fanout_p95));
            if contacts && u64::from(w.new_hosts) > need {
                found.push((
                    Code::HighFanout,
                    format!(
                        "{} new hosts in {span} (usual at most {}, limit {need})",
                        w.new_hosts, b.fanout_p95
                    ),
                ));
            }
            let usual_egress = b.egress_at(now);
            let need = cfg.egress_floor_bytes.max(usual(usual_egress));
            if egress && state.egress > need {
                found.push((
                    Code::HighEgress,
                    format!(
                        "uploaded {} this minute (usual at most {} per minute at this hour)",
                        bytes(state.egress),
                        bytes(usual_egress)
                    ),
                ));
            }
            let need = u64::from(cfg.nxdomain_floor).max(usual(b.nxdomain_p95));
            if nxdomain && state.nxdomain >= need {
                found.push((
                    Code::NxdomainBurst,
                    format!(
                        "{} NXDOMAIN answers this minute (usual at most {})",
                        state.nxdomain, b.nxdomain_p95
                    ),
                ));
            }
        }
        found
    }
}

/// BEACON: appends `at` to a destination's recent starts and checks their regularity.
fn beacon(starts: &mut VecDeque<i64>, at: i64, cfg: &config::Detect) -> Option<String> {
    let n = cfg.beacon_intervals as usize;
    starts.push_back(at);
    while starts.len() > n + 1 {
        starts.pop_front();
    }
    if starts.len() < n + 1 {
        return None;
    }
    let intervals: Vec<f64> = starts
        .iter()
        .zip(starts.iter().skip(1))
        .map(|(a, b)| (b - a) as f64 / 1000.0)
        .collect();
    let mean = intervals.iter().sum::<f64>() / n as f64;
    if mean < cfg.beacon_min_interval_s || mean <= 0.0 {
        return None;
    }
    let var = intervals.iter().map(|i| (i - mean).powi(2)).sum::<f64>() / n as f64;
    let cv = var.sqrt() / mean;
    (cv < cfg.beacon_max_cv).then(|| {
        format!(
            "{} connections every {mean:.1} s (variation {:.1}%, limit {:.0}%)",
            n + 1,
            cv * 100.0,
            cfg.beacon_max_cv * 100.0
        )
    })
}

/// The registrable part of a name ("www.shop.example.co.uk" → "example.co.uk"), lower
/// case: the same heuristic the per-domain storage cap groups by
/// ([`crate::dns_name::registrable_domain`]), so NEW_DOMAIN and the cap agree on what
/// one site is.
pub fn registrable_domain(name: &str) -> String {
    crate::dns_name::registrable_domain(&name.to_ascii_lowercase()).to_owned()
}

fn format_endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Bytes as a person reads them (decimal units, as the rest of the UI).
fn bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", n as f64 / 1e6),
        _ => format!("{:.1} GB", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::{Action, Rule, RuleSpec};

    const T0: i64 = 1_700_000_000_000;
    const DAY: i64 = DAY_MS;

    fn cfg() -> config::Detect {
        config::Detect::default()
    }

    /// A detector whose device 1 has two days of history (not learning) with the given
    /// baseline tweaks.
    fn seasoned(tweak: impl FnOnce(&mut Baseline)) -> Detector {
        let mut d = Detector::new(&cfg(), Rules::default());
        let mut b = Baseline {
            device_id: 1,
            computed_at: T0,
            history_from: T0 - 2 * DAY,
            minutes: 2000,
            egress_p95: 100_000,
            fanout_p95: 5,
            ports_p95: 3,
            dns_p95: 20,
            nxdomain_p95: 1,
            upload_ratio_p95: 0.1,
            egress_by_hour: [0; 24],
        };
        tweak(&mut b);
        d.set_baselines([b]);
        d
    }

    fn learning() -> Detector {
        Detector::new(&cfg(), Rules::default())
    }

    fn flow(row: i64, ip: &str, port: u16, at: i64) -> OutboundFlow<'static> {
        OutboundFlow {
            row_id: row,
            device_id: 1,
            remote_host_id: Some(row),
            remote: ip.parse().unwrap(),
            proto: 6,
            dport: Some(port),
            at,
            domain: None,
            resolved: true,
            up: 0,
            down: 0,
        }
    }

    fn codes(cands: &[Candidate]) -> Vec<Code> {
        let mut c: Vec<Code> = cands
            .iter()
            .flat_map(|c| c.reasons.iter().map(|r| r.code))
            .collect();
        c.sort();
        c.dedup();
        c
    }

    fn has(cands: &[Candidate], code: Code) -> bool {
        codes(cands).contains(&code)
    }

    #[test]
    fn new_dst_fires_once_and_not_while_learning() {
        let mut d = seasoned(|_| {});
        d.flow_started(&flow(1, "198.51.100.1", 443, T0));
        let first = d.end_tick(T0);
        assert!(has(&first, Code::NewDst), "{first:?}");
        d.flow_started(&flow(2, "198.51.100.1", 443, T0 + 1000));
        assert!(!has(&d.end_tick(T0 + 1000), Code::NewDst));
        let mut l = learning();
        l.flow_started(&flow(1, "198.51.100.1", 443, T0));
        assert!(!has(&l.end_tick(T0), Code::NewDst));
    }

    #[test]
    fn dormant_dst_is_decided_before_the_contact_is_recorded() {
        let mut d = seasoned(|_| {});
        d.device(1, T0)
            .dsts
            .touch("198.51.100.2".parse().unwrap(), T0 - 6 * DAY, || ());
        d.device(1, T0)
            .dsts
            .touch("198.51.100.3".parse().unwrap(), T0 - 4 * DAY, || ());
        d.flow_started(&flow(1, "198.51.100.2", 443, T0));
        let c = d.end_tick(T0);
        assert!(has(&c, Code::DormantDst), "{c:?}");
        assert!(c[0].reasons[0].evidence.contains("6 days"));
        // Four days is within dormant_days (5): boundary not reached.
        d.flow_started(&flow(2, "198.51.100.3", 443, T0));
        assert!(!has(&d.end_tick(T0), Code::DormantDst));
        // The contact above was recorded: a second one is not dormant.
        d.flow_started(&flow(3, "198.51.100.2", 443, T0 + 1));
        assert!(!has(&d.end_tick(T0 + 1), Code::DormantDst));
    }

    #[test]
    fn new_asn_needs_a_known_as_new_to_the_device() {
        let mut d = seasoned(|_| {});
        for host in [1, 2] {
            d.set_host(
                host,
                HostInfo {
                    has_rdns: Some(true),
                    asn: Some(64500),
                    org: Some("Example".into()),
                },
            );
        }
        d.flow_started(&flow(1, "198.51.100.1", 443, T0));
        assert!(has(&d.end_tick(T0), Code::NewAsn));
        d.flow_started(&flow(2, "198.51.100.2", 443, T0));
        assert!(!has(&d.end_tick(T0), Code::NewAsn));
        // Unknown AS (host 3 not enriched): nothing to say.
        d.flow_started(&flow(3, "198.51.100.3", 443, T0));
        assert!(!has(&d.end_tick(T0), Code::NewAsn));
    }

    #[test]
    fn rare_port_is_uncommon_and_new_for_the_device() {
        let mut d = learning();
        d.flow_started(&flow(1, "198.51.100.1", 4444, T0));
        let c = d.end_tick(T0);
        assert!(has(&c, Code::RarePort), "{c:?}");
        d.flow_started(&flow(2, "198.51.100.2", 4444, T0));
        assert!(!has(&d.end_tick(T0), Code::RarePort));
        d.flow_started(&flow(3, "198.51.100.3", 443, T0));
        assert!(!has(&d.end_tick(T0), Code::RarePort));
    }

    #[test]
    fn unexpected_proto_outside_the_common_list() {
        let mut d = learning();
        let mut gre = flow(1, "198.51.100.1", 0, T0);
        gre.proto = 47;
        gre.dport = None;
        d.flow_started(&gre);
        assert!(has(&d.end_tick(T0), Code::UnexpectedProto));
        let mut icmp = gre;
        icmp.row_id = 2;
        icmp.proto = 1;
        d.flow_started(&icmp);
        assert!(!has(&d.end_tick(T0), Code::UnexpectedProto));
    }

    #[test]
    fn no_rdns_only_when_known_to_have_none() {
        let mut d = learning();
        d.set_host(
            1,
            HostInfo {
                has_rdns: Some(false),
                ..HostInfo::default()
            },
        );
        d.flow_started(&flow(1, "198.51.100.1", 443, T0));
        assert!(has(&d.end_tick(T0), Code::NoRdns));
        // Host 2 not looked up yet: unknown is not "none".
        d.flow_started(&flow(2, "198.51.100.2", 443, T0));
        assert!(!has(&d.end_tick(T0), Code::NoRdns));
    }

    #[test]
    fn new_domain_compares_registrable_domains() {
        assert_eq!(
            registrable_domain("www.Shop.Example.co.uk."),
            "example.co.uk"
        );
        assert_eq!(registrable_domain("a.b.example.com"), "example.com");
        assert_eq!(registrable_domain("localhost"), "localhost");
        let mut d = seasoned(|_| {});
        let mut f = flow(1, "198.51.100.1", 443, T0);
        f.domain = Some("www.example.com");
        d.flow_started(&f);
        assert!(has(&d.end_tick(T0), Code::NewDomain));
        let mut g = flow(2, "198.51.100.2", 443, T0);
        g.domain = Some("cdn.example.com");
        d.flow_started(&g);
        assert!(!has(&d.end_tick(T0), Code::NewDomain));
    }

    #[test]
    fn direct_ip_for_unresolved_tcp_and_udp_only() {
        let mut d = learning();
        let mut f = flow(1, "198.51.100.1", 443, T0);
        f.resolved = false;
        d.flow_started(&f);
        assert!(has(&d.end_tick(T0), Code::DirectIp));
        d.flow_started(&flow(2, "198.51.100.2", 443, T0));
        assert!(!has(&d.end_tick(T0), Code::DirectIp));
        let mut ping = f;
        ping.row_id = 3;
        ping.proto = 1;
        ping.dport = None;
        d.flow_started(&ping);
        assert!(!has(&d.end_tick(T0), Code::DirectIp));
        // No DNS answers reach netmon (the tap and the log broken or off): every flow
        // would be unresolved, so none is DIRECT_IP.
        d.dns_answers_seen = false;
        let mut blind = flow(4, "198.51.100.4", 443, T0);
        blind.resolved = false;
        d.flow_started(&blind);
        assert!(!has(&d.end_tick(T0), Code::DirectIp));
    }

    #[test]
    fn beacon_needs_enough_regular_intervals() {
        let mut d = learning();
        // 13 starts every 5 s ± 4 %: 12 intervals, CV well under 0.1.
        let jitter = [0, 200, -150, 100, -200, 50, 150, -100, 0, 200, -200, 100, 0];
        let mut cands = Vec::new();
        for (i, j) in jitter.iter().enumerate() {
            let at = T0 + i as i64 * 5000 + j;
            d.flow_started(&flow(i as i64 + 1, "198.51.100.1", 80, at));
            cands.push(d.end_tick(at));
        }
        assert!(cands[..12].iter().all(|c| !has(c, Code::Beacon)));
        assert!(has(&cands[12], Code::Beacon), "{:?}", cands[12]);
        // Random intervals (1–10 s): no beacon.
        let mut r = learning();
        let gaps = [
            1000, 9000, 2500, 7000, 1500, 8000, 3000, 6500, 1200, 9500, 4000, 2000,
        ];
        let mut at = T0;
        for (i, g) in gaps.iter().enumerate() {
            at += g;
            r.flow_started(&flow(i as i64 + 1, "198.51.100.1", 80, at));
            assert!(!has(&r.end_tick(at), Code::Beacon));
        }
    }

    #[test]
    fn beacon_boundary_cv_and_burst() {
        let mut c = cfg();
        c.beacon_intervals = 4;
        // Intervals 4, 6, 4, 6 s: CV = 0.2 → none.
        let mut starts = VecDeque::new();
        let mut hit = None;
        for at in [0, 4000, 10_000, 14_000, 20_000] {
            hit = beacon(&mut starts, at, &c);
        }
        assert!(hit.is_none());
        // Exactly regular but 1 s apart: a burst, below beacon_min_interval_s.
        let mut starts = VecDeque::new();
        for at in [0, 1000, 2000, 3000, 4000] {
            hit = beacon(&mut starts, at, &c);
        }
        assert!(hit.is_none());
        let mut starts = VecDeque::new();
        for at in [0, 3000, 6000, 9000, 12_000] {
            hit = beacon(&mut starts, at, &c);
        }
        assert!(hit.is_some());
    }

    #[test]
    fn port_scan_fires_once_per_tick_for_a_learning_device() {
        let mut d = learning();
        for i in 0..40u16 {
            let ip = format!("203.0.113.{}", 100 + i % 25);
            d.flow_started(&flow(i64::from(i) + 1, &ip, 1000 + i, T0 + i64::from(i)));
        }
        let c = d.end_tick(T0 + 100);
        let scans: Vec<&Candidate> = c
            .iter()
            .filter(|c| c.reasons.iter().any(|r| r.code == Code::PortScanLike))
            .collect();
        assert_eq!(scans.len(), 1, "{c:?}");
        assert!(scans[0].flow_id.is_none());
        assert!(
            scans[0].reasons[0]
                .evidence
                .starts_with("40 ports on 25 addresses")
        );
    }

    #[test]
    fn https_to_many_sites_is_not_a_scan() {
        let mut d = learning();
        for i in 0..30 {
            let ip = format!("203.0.113.{}", 100 + i);
            d.flow_started(&flow(i64::from(i) + 1, &ip, 443, T0));
        }
        assert!(!has(&d.end_tick(T0), Code::PortScanLike));
        // Many ports but one dominating (90 % on 443) is not a scan either.
        let mut d = learning();
        for i in 0..200u16 {
            let ip = format!("203.0.113.{}", 100 + i % 30);
            let port = if i % 10 == 0 { 2000 + i } else { 443 };
            d.flow_started(&flow(i64::from(i) + 1, &ip, port, T0));
        }
        assert!(!has(&d.end_tick(T0), Code::PortScanLike));
        // 19 ports: below the floor.
        let mut d = learning();
        for i in 0..19u16 {
            let ip = format!("203.0.113.{}", 100 + i);
            d.flow_started(&flow(i64::from(i) + 1, &ip, 1000 + i, T0));
        }
        assert!(!has(&d.end_tick(T0), Code::PortScanLike));
    }

    #[test]
    fn high_fanout_counts_each_new_host_once() {
        let mut d = seasoned(|_| {});
        // 30 new hosts, each contacted ten times: 30 is not above the floor of 30.
        for round in 0..10 {
            for i in 0..30 {
                let ip = format!("198.51.100.{}", i + 1);
                d.flow_started(&flow(round * 100 + i + 1, &ip, 443, T0 + round));
            }
        }
        assert!(!has(&d.end_tick(T0 + 10), Code::HighFanout));
        d.flow_started(&flow(5000, "198.51.100.200", 443, T0 + 20));
        let c = d.end_tick(T0 + 20);
        assert!(has(&c, Code::HighFanout), "{c:?}");
        let mut l = learning();
        for i in 0..40 {
            l.flow_started(&flow(i + 1, &format!("198.51.100.{}", i + 1), 443, T0));
        }
        assert!(!has(&l.end_tick(T0), Code::HighFanout));
    }

    #[test]
    fn high_egress_against_the_time_of_day_baseline() {
        let mut d = seasoned(|b| b.egress_p95 = 5_000_000);
        let mut f = flow(1, "198.51.100.1", 443, T0);
        f.up = 15_000_000;
        d.flow_started(&f);
        // 15 MB ≤ 3 × 5 MB: within the usual.
        assert!(!has(&d.end_tick(T0), Code::HighEgress));
        d.flow_updated(1, 15_000_001, 0, 1, T0 + 1, false);
        assert!(has(&d.end_tick(T0 + 1), Code::HighEgress));
        // Other traffic in the same minute that uploads nothing is not flagged again.
        d.flow_started(&flow(2, "198.51.100.2", 443, T0 + 2));
        assert!(!has(&d.end_tick(T0 + 2), Code::HighEgress));
        // Below the absolute floor (10 MB) nothing fires whatever the baseline.
        let mut low = seasoned(|b| b.egress_p95 = 10);
        let mut f = flow(1, "198.51.100.1", 443, T0);
        f.up = 9_000_000;
        low.flow_started(&f);
        assert!(!has(&low.end_tick(T0), Code::HighEgress));
    }

    #[test]
    fn upload_heavy_vs_the_devices_ratio() {
        let mut d = seasoned(|_| {});
        d.flow_started(&flow(1, "198.51.100.1", 9001, T0));
        d.flow_updated(1, 50_000_000, 1_000_000, 50_000_000, T0 + 5000, false);
        let c = d.end_tick(T0 + 5000);
        let up: Vec<&Candidate> = c
            .iter()
            .filter(|c| c.reasons.iter().any(|r| r.code == Code::UploadHeavy))
            .collect();
        assert_eq!(up.len(), 1);
        // It repeats the start's reasons, with the start's evidence: a new destination.
        let new_dst = up[0].reasons.iter().find(|r| r.code == Code::NewDst);
        assert_eq!(
            new_dst.map(|r| r.evidence.as_str()),
            Some("first connection from this device to 198.51.100.1")
        );
        let started = c
            .iter()
            .find(|c| !c.reasons.iter().any(|r| r.code == Code::UploadHeavy))
            .expect("the start's candidate");
        for r in up[0].reasons.iter().filter(|r| r.code != Code::UploadHeavy) {
            assert!(started.reasons.contains(r), "{r:?} not as at the start");
        }
        // Flagged once per flow.
        d.flow_updated(1, 60_000_000, 1_000_000, 10_000_000, T0 + 6000, true);
        assert!(!has(&d.end_tick(T0 + 6000), Code::UploadHeavy));
        // 9.9× is under the floor of 10×.
        let mut d = seasoned(|_| {});
        d.flow_started(&flow(1, "198.51.100.1", 9001, T0));
        d.flow_updated(1, 49_500_000, 5_000_000, 49_500_000, T0, false);
        assert!(!has(&d.end_tick(T0), Code::UploadHeavy));
        // A device that usually uploads 5× as much as it downloads needs 15×.
        let mut d = seasoned(|b| b.upload_ratio_p95 = 5.0);
        d.flow_started(&flow(1, "198.51.100.1", 9001, T0));
        d.flow_updated(1, 50_000_000, 4_000_000, 50_000_000, T0, false);
        assert!(!has(&d.end_tick(T0), Code::UploadHeavy));
    }

    #[test]
    fn nxdomain_burst_vs_baseline_and_floor() {
        let mut d = seasoned(|b| b.nxdomain_p95 = 2);
        for _ in 0..19 {
            d.dns_observed(1, true, T0);
        }
        d.dns_observed(1, false, T0);
        assert!(!has(&d.end_tick(T0), Code::NxdomainBurst));
        d.dns_observed(1, true, T0);
        assert!(has(&d.end_tick(T0), Code::NxdomainBurst));
        let mut l = learning();
        for _ in 0..100 {
            l.dns_observed(1, true, T0);
        }
        assert!(!has(&l.end_tick(T0), Code::NxdomainBurst));
    }

    #[test]
    fn allow_drops_the_flow_and_suppress_removes_a_code() {
        let rules = Rules::new(vec![
            Rule {
                id: 1,
                spec: RuleSpec {
                    action: Action::Allow,
                    device_id: Some(1),
                    ports: Some((6881, 6889)),
                    ..RuleSpec::default()
                },
            },
            Rule {
                id: 2,
                spec: RuleSpec {
                    action: Action::Suppress,
                    code: Some(Code::DirectIp),
                    ..RuleSpec::default()
                },
            },
        ]);
        let mut d = Detector::new(&cfg(), rules);
        for i in 0..50u16 {
            let mut f = flow(
                i64::from(i) + 1,
                &format!("203.0.113.{}", i + 1),
                6881 + i % 9,
                T0,
            );
            f.resolved = false;
            d.flow_started(&f);
        }
        assert!(d.end_tick(T0).is_empty());
        let mut f = flow(100, "203.0.113.200", 7000, T0);
        f.resolved = false;
        d.flow_started(&f);
        let c = d.end_tick(T0);
        assert_eq!(codes(&c), vec![Code::RarePort]);
        let uses = d.take_rule_uses();
        assert_eq!(uses[&1].0, 50);
        assert_eq!(uses[&2].0, 1);
    }

    #[test]
    fn state_is_bounded() {
        let mut c = cfg();
        c.max_destinations = 100;
        c.max_devices = 3;
        let mut d = Detector::new(&c, Rules::default());
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xC633_6400 + i));
            let mut f = flow(i64::from(i), "198.51.100.1", 443, T0 + i64::from(i));
            f.remote = ip;
            f.device_id = i64::from(i % 5);
            d.flow_started(&f);
            d.flow_updated(i64::from(i), 1, 1, 1, T0 + i64::from(i), true);
        }
        assert!(d.devices.len() <= 3);
        assert!(d.devices.values().all(|s| s.dsts.len() <= 100));
        assert!(d.devices.values().all(|s| s.window.entries.len() <= 100));
        assert!(d.flows.is_empty());
    }
}
