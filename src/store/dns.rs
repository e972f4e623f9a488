//! DNS in the writer: storing queries and answers, and giving each flow the name its
//! own client resolved to its destination (DESIGN §3).
//!
//! Attribution runs when a flow is first stored: the most recent answer that gave the
//! flow's destination address *to the flow's client* no later than the flow's start
//! decides its name — the name the client asked for, with the end of any CNAME chain
//! kept as the canonical name. Its confidence:
//!
//! - **exact** ([`MATCH_EXACT`]): that answer was still valid (TTL + slack) when the
//!   flow started;
//! - **stale** ([`MATCH_STALE`]): the client's answer had expired (a cached address);
//! - **other client** ([`MATCH_OTHER_CLIENT`]): only another client resolved the
//!   address — a guess, shown as one;
//! - none: no answer ever named the address.
//!
//! A TLS connection whose client named its server in the ClientHello
//! ([`crate::collect::dns_packets`] reads it from the connection's first data packet)
//! and that has no exact or stale match gets that name as **sni** ([`MATCH_SNI`]): the
//! name the client itself asked the server for, though no answer this router saw gave
//! the address (the device resolves by DNS-over-HTTPS or TLS, or a cached address).
//! The ClientHello follows the flow's first packet by one round trip and normally
//! reaches the writer before the conntrack collector's batch with the new flow: the
//! name waits in [`DnsState::tls_waiting`] for it, keyed by the connection's original
//! tuple. A name that comes later finds the stored row among its device's flows of the
//! last [`TLS_WAIT_MS`] and names it in place: no per-flow memory for the rare late one.
//!
//! The answer and the flow travel on different paths (NFQUEUE vs conntrack; the
//! conntrack collector coalesces per tick), so a flow can be stored a moment before the
//! answer that explains it. Flows stored without an exact match wait in
//! [`DnsState::pending`] for [`PENDING_MS`]; an answer arriving in that window upgrades
//! them in place.

pub mod read;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::num::NonZeroI64;

use rusqlite::{OptionalExtension, Transaction, params};

use crate::config;
use crate::event::{DnsObservation, TcpConn, TlsName};
use crate::idmap::{HashMapExt, IdMap, IdSet};
use crate::store::addr::{IpBlob, stored_ip};
use crate::store::resolvers::Resolvers;
use crate::time::MINUTE_MS;

pub const MATCH_EXACT: i64 = 1;
pub const MATCH_STALE: i64 = 2;
pub const MATCH_OTHER_CLIENT: i64 = 3;
pub const MATCH_SNI: i64 = 4;

/// The name of a `flows.dns_match` value, as the API and pages show it.
pub fn match_name(m: Option<i64>) -> &'static str {
    match m {
        Some(MATCH_EXACT) => "exact",
        Some(MATCH_STALE) => "stale",
        Some(MATCH_OTHER_CLIENT) => "other-client",
        Some(MATCH_SNI) => "sni",
        _ => "none",
    }
}

/// How long a flow stored without an exact match waits for a late answer.
const PENDING_MS: i64 = 30_000;
/// Most flows waiting at once; past it the oldest stop waiting (a burst of flows to
/// addresses nobody resolved must not grow the writer's memory).
const PENDING_CAP: usize = 100_000;
/// An answer observed up to this long after the flow's recorded start still explains it:
/// kernel start stamps and netmon's observation times come from different clocks'
/// readings, and the dnsmasq log has whole-second times.
const CLOCK_SKEW_MS: i64 = 1_000;
/// Most distinct answered addresses kept in memory (≈ 40 B each). Past it every new
/// flow is looked up in the database instead.
const ANSWERED_CAP: usize = 200_000;
/// Interned names kept in memory; past it the cache restarts (the table is the truth).
const NAME_CACHE_CAP: usize = 50_000;
/// How long a server name waits for its flow to be stored, and how far back a late one
/// looks for its flow.
const TLS_WAIT_MS: i64 = 10_000;
/// Most server names waiting at once; past it the oldest go.
const TLS_WAIT_CAP: usize = 10_000;

/// The writer's DNS memory across ticks.
pub struct DnsState {
    assumed_ttl_ms: i64,
    slack_ms: i64,
    /// name → dns_names.id.
    names: HashMap<String, i64>,
    /// (client, destination) → flows stored recently without an exact match.
    pending: HashMap<(IpAddr, IpAddr), VecDeque<PendingFlow>>,
    /// Insertion order of `pending`, for expiry.
    pending_order: VecDeque<(i64, (IpAddr, IpAddr))>,
    pending_len: usize,
    /// Distinct names per (device, minute) of the open minutes, for true unions.
    name_sets: IdMap<(i64, i64), IdSet<i64>>,
    /// Every address some stored answer names, while `answered_complete`: a flow to any
    /// other address cannot have a name, and most flows (to addresses nobody resolved:
    /// peers, hard-coded IPs, scans) skip the two index lookups.
    answered: HashSet<IpAddr>,
    answered_complete: bool,
    /// Server names of TLS connections not stored yet, and when each came.
    tls_waiting: HashMap<TcpConn, (i64, Box<str>)>,
    /// Arrival order of `tls_waiting`, for expiry.
    tls_order: VecDeque<(i64, TcpConn)>,
    /// Encrypted and outside resolvers, and which devices use them.
    pub resolvers: Resolvers,
}

#[derive(Debug, Clone, Copy)]
struct PendingFlow {
    row_id: i64,
    first_seen: i64,
    // Row ids are never 0: 8 bytes each, not 16 (a flood makes tens of thousands wait).
    device_id: Option<NonZeroI64>,
    remote_host_id: Option<NonZeroI64>,
}

/// What one flow was matched to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsMatch {
    pub qname_id: i64,
    pub cname_id: Option<i64>,
    pub confidence: i64,
}

/// One remote host ↔ name link as one tick saw it: (first, last, flows, last device).
type HostDomain = (i64, i64, u64, Option<i64>);

/// One tick's DNS rollups.
#[derive(Default)]
pub struct DnsAcc {
    /// (device, minute) → (queries, NXDOMAIN answers).
    minutes: IdMap<(i64, i64), (u64, u64)>,
    /// (remote host, name) → what this tick saw of that link.
    host_domains: IdMap<(i64, i64), HostDomain>,
    pub queries: u64,
}

impl DnsState {
    /// Gives back what a flood grew the maps to ([`crate::memory::shrink_map`]).
    /// True when something was shrunk.
    pub fn shrink_if_sparse(&mut self) -> bool {
        use crate::memory::{shrink_map, shrink_set};
        let mut shrunk = shrink_map(&mut self.names);
        shrunk |= shrink_map(&mut self.pending);
        shrunk |= shrink_map(&mut self.name_sets);
        shrunk |= shrink_set(&mut self.answered);
        shrunk |= shrink_map(&mut self.tls_waiting);
        if self.pending_order.capacity() > 4 * self.pending_order.len().max(4096) {
            self.pending_order.shrink_to(2 * self.pending_order.len());
            shrunk = true;
        }
        shrunk
    }

    pub fn new(c: &config::Dns) -> DnsState {
        DnsState {
            assumed_ttl_ms: i64::from(c.log_assumed_ttl_s) * 1000,
            slack_ms: i64::from(c.attribution_slack_s) * 1000,
            names: HashMap::new(),
            pending: HashMap::new(),
            pending_order: VecDeque::new(),
            pending_len: 0,
            name_sets: IdMap::new(),
            answered: HashSet::new(),
            answered_complete: false,
            tls_waiting: HashMap::new(),
            tls_order: VecDeque::new(),
            resolvers: Resolvers::new(&c.encrypted_resolvers),
        }
    }

    /// Loads the set of answered addresses (see [`DnsState::answered`]); over the cap, the
    /// set stays off and every flow is looked up.
    pub fn load_answered(&mut self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        self.answered.clear();
        let mut stmt = conn.prepare("SELECT DISTINCT ip FROM dns_answers")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            if let Some(ip) = stored_ip(row.get_ref(0)?) {
                self.answered.insert(ip);
            }
            if self.answered.len() > ANSWERED_CAP {
                self.answered = HashSet::new();
                self.answered_complete = false;
                return Ok(());
            }
        }
        self.answered_complete = true;
        Ok(())
    }

    fn note_answered(&mut self, ip: IpAddr) {
        if !self.answered_complete {
            return;
        }
        self.answered.insert(ip);
        if self.answered.len() > ANSWERED_CAP {
            // Retention shrinks the table, but the set cannot tell; a restart reloads it.
            self.answered = HashSet::new();
            self.answered_complete = false;
        }
    }

    /// The id of a canonical name, interned on first sight.
    fn name_id(&mut self, tx: &Transaction, name: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.names.get(name) {
            return Ok(*id);
        }
        let existing: Option<i64> = tx
            .prepare_cached("SELECT id FROM dns_names WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let id = match existing {
            Some(id) => id,
            None => {
                tx.prepare_cached("INSERT INTO dns_names (name) VALUES (?1)")?
                    .execute([name])?;
                tx.last_insert_rowid()
            }
        };
        if self.names.len() >= NAME_CACHE_CAP {
            self.names.clear();
        }
        self.names.insert(name.to_owned(), id);
        Ok(id)
    }

    /// Deletes, from the next window of up to `window` names after `after` (by id), the
    /// names nothing refers to any more: no query (as name, CNAME or registrable
    /// domain), no flow, no remote host link. Answers need no check: they go with their
    /// query. Returns how many went and where the next window starts (0: wrapped
    /// around). Never deletes the newest name, so SQLite (which gives a new row
    /// `max(id) + 1`) never hands a collected id to a new name; the in-memory name cache
    /// is dropped all the same, as it may hold collected ids.
    pub fn collect_names(
        &mut self,
        conn: &mut rusqlite::Connection,
        after: i64,
        window: i64,
    ) -> rusqlite::Result<(u64, i64)> {
        let upto: Option<i64> = conn.query_row(
            "SELECT max(id) FROM (SELECT id FROM dns_names WHERE id > ?1 ORDER BY id LIMIT ?2)",
            params![after, window],
            |r| r.get(0),
        )?;
        let Some(upto) = upto else {
            return Ok((0, 0));
        };
        let n = conn.execute(
            "DELETE FROM dns_names WHERE id IN (
                 SELECT n.id FROM dns_names n
                 WHERE n.id > ?1 AND n.id <= ?2
                   AND n.id < (SELECT max(id) FROM dns_names)
                   AND NOT EXISTS (SELECT 1 FROM dns_queries q WHERE q.qname_id = n.id)
                   AND NOT EXISTS (SELECT 1 FROM dns_queries q WHERE q.cname_id = n.id)
                   AND NOT EXISTS (SELECT 1 FROM dns_queries q WHERE q.domain_id = n.id)
                   AND NOT EXISTS (SELECT 1 FROM flows f WHERE f.qname_id = n.id)
                   AND NOT EXISTS (SELECT 1 FROM flows f WHERE f.cname_id = n.id)
                   AND NOT EXISTS (SELECT 1 FROM remote_host_domains d WHERE d.qname_id = n.id))",
            params![after, upto],
        )? as u64;
        if n > 0 {
            self.names.clear();
        }
        Ok((n, upto))
    }

    /// Forgets what no longer matters: waiting flows past [`PENDING_MS`] (or past the
    /// cap) and name sets of closed minutes. Called once per tick.
    pub fn expire(&mut self, now: i64) {
        let cutoff = now - PENDING_MS;
        while let Some(&(at, key)) = self.pending_order.front() {
            let over_cap = self.pending_len > PENDING_CAP;
            if at >= cutoff && !over_cap {
                break;
            }
            self.pending_order.pop_front();
            let Some(flows) = self.pending.get_mut(&key) else {
                continue;
            };
            // A pair's flows wait in arrival order, so the expired ones are at its front:
            // one pair with 100 000 waiting flows (a device that talks to one address on
            // many ports) costs a pop each, not a pass over all of them per expiry. (An
            // answer may have taken flows from the middle, so this entry of the order
            // need not be the front's own.)
            let before = flows.len();
            while flows.front().is_some_and(|f| f.first_seen < cutoff) {
                flows.pop_front();
            }
            if over_cap && flows.len() == before {
                flows.pop_front();
            }
            self.pending_len -= before - flows.len();
            if flows.is_empty() {
                self.pending.remove(&key);
            }
        }
        let tls_cutoff = now - TLS_WAIT_MS;
        while let Some(&(at, conn)) = self.tls_order.front() {
            if at >= tls_cutoff && self.tls_order.len() <= TLS_WAIT_CAP {
                break;
            }
            self.tls_order.pop_front();
            if self.tls_waiting.get(&conn).is_some_and(|w| w.0 == at) {
                self.tls_waiting.remove(&conn);
                metrics::counter!("netmon_tls_names_total", "result" => "unmatched").increment(1);
            }
        }
        let newest = self.name_sets.keys().map(|(_, m)| *m).max().unwrap_or(0);
        self.name_sets
            .retain(|(_, m), _| *m >= newest - 2 * MINUTE_MS);
    }

    /// The writer's transaction rolled back: forget what may name rows it created —
    /// interned name ids and flows waiting for a late answer. SQLite hands a rolled-back
    /// rowid to the next insert, so keeping them could name the wrong row.
    pub fn rolled_back(&mut self) {
        self.resolvers.rolled_back();
        self.names.clear();
        self.pending.clear();
        self.pending_order.clear();
        self.pending_len = 0;
    }

    /// Device `from` was merged into `into` (`store::devices`): waiting flows and the
    /// open minutes' name sets follow it.
    pub fn remap_device(&mut self, from: i64, into: i64) {
        for f in self.pending.values_mut().flatten() {
            if f.device_id.map(NonZeroI64::get) == Some(from) {
                f.device_id = NonZeroI64::new(into);
            }
        }
        crate::store::devices::rekey(&mut self.name_sets, from, into, |names, more| {
            names.extend(more)
        });
    }

    /// The name for a new outbound flow from `client` to `dst` starting at `first_seen`
    /// (see the module docs). A flow without an exact match waits for a late answer.
    pub fn attribute(
        &mut self,
        tx: &Transaction,
        client: IpAddr,
        dst: IpAddr,
        first_seen: i64,
    ) -> rusqlite::Result<Option<DnsMatch>> {
        if self.answered_complete && !self.answered.contains(&dst) {
            return Ok(None);
        }
        // Answers have no time of their own: the latest query id answered by then bounds
        // them (queries are stored as they arrive; a few late ones out of time order are
        // covered by looking at the last 64, and each candidate's time is checked).
        let by = first_seen + CLOCK_SKEW_MS;
        let Some(last_id) = tx
            .prepare_cached(
                "SELECT max(id) FROM (SELECT id FROM dns_queries WHERE ts <= ?1
                 ORDER BY ts DESC LIMIT 64)",
            )?
            .query_row([by], |r| r.get::<_, Option<i64>>(0))?
        else {
            return Ok(None);
        };
        // The client's own latest answer for the address (`dns_answers_client`: ip,
        // client, query), then anyone's (`dns_answers_ip`: ip, query).
        let dst_blob = IpBlob::new(dst);
        let own: Option<(i64, Option<i64>, i64, Option<i64>)> = tx
            .prepare_cached(
                "SELECT q.ts, a.ttl, q.qname_id, q.cname_id
                 FROM dns_answers a JOIN dns_queries q ON q.id = a.query_id
                 WHERE a.ip = ?1 AND a.client = ?2 AND a.query_id <= ?3 AND q.ts <= ?4
                 ORDER BY a.query_id DESC LIMIT 1",
            )?
            .query_row(params![dst_blob, IpBlob::new(client), last_id, by], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let found = match own {
            Some((ts, ttl, qname_id, cname_id)) => {
                let valid_until = ts + self.ttl_ms(ttl) + self.slack_ms;
                let confidence = if first_seen <= valid_until {
                    MATCH_EXACT
                } else {
                    MATCH_STALE
                };
                Some(DnsMatch {
                    qname_id,
                    cname_id,
                    confidence,
                })
            }
            None => tx
                .prepare_cached(
                    "SELECT q.qname_id, q.cname_id
                     FROM dns_answers a JOIN dns_queries q ON q.id = a.query_id
                     WHERE a.ip = ?1 AND a.query_id <= ?2 AND q.ts <= ?3
                     ORDER BY a.query_id DESC LIMIT 1",
                )?
                .query_row(params![dst_blob, last_id, by], |r| {
                    Ok(DnsMatch {
                        qname_id: r.get(0)?,
                        cname_id: r.get(1)?,
                        confidence: MATCH_OTHER_CLIENT,
                    })
                })
                .optional()?,
        };
        Ok(found)
    }

    /// The server name of a new TLS flow `conn` without an exact or stale match, when
    /// its ClientHello came first.
    pub fn tls_name(
        &mut self,
        tx: &Transaction,
        conn: TcpConn,
        found: Option<DnsMatch>,
    ) -> rusqlite::Result<Option<DnsMatch>> {
        if self.tls_waiting.is_empty() {
            return Ok(found);
        }
        let Some((_, name)) = self.tls_waiting.remove(&conn) else {
            return Ok(found);
        };
        self.resolvers.learn(&name, conn.2);
        if found.is_some_and(|m| matches!(m.confidence, MATCH_EXACT | MATCH_STALE)) {
            metrics::counter!("netmon_tls_names_total", "result" => "dns-named").increment(1);
            return Ok(found);
        }
        metrics::counter!("netmon_tls_names_total", "result" => "named").increment(1);
        Ok(Some(DnsMatch {
            qname_id: self.name_id(tx, &name)?,
            cname_id: None,
            confidence: MATCH_SNI,
        }))
    }

    /// Registers a stored flow: links its remote host to its name, and lets a flow
    /// without an exact match wait for a late answer.
    pub fn flow_stored(
        &mut self,
        acc: &mut DnsAcc,
        client: IpAddr,
        dst: IpAddr,
        flow: (i64, i64),
        row: (Option<i64>, Option<i64>),
        found: Option<DnsMatch>,
    ) {
        let (row_id, first_seen) = flow;
        let (device_id, remote_host_id) = row;
        if let (Some(m), Some(host)) = (found, remote_host_id) {
            link_host(acc, host, m.qname_id, first_seen, device_id);
        }
        if found.is_some_and(|m| m.confidence == MATCH_EXACT) {
            return;
        }
        self.pending
            .entry((client, dst))
            .or_default()
            .push_back(PendingFlow {
                row_id,
                first_seen,
                device_id: device_id.and_then(NonZeroI64::new),
                remote_host_id: remote_host_id.and_then(NonZeroI64::new),
            });
        self.pending_order.push_back((first_seen, (client, dst)));
        self.pending_len += 1;
    }

    fn ttl_ms(&self, ttl: Option<i64>) -> i64 {
        ttl.map_or(self.assumed_ttl_ms, |t| t.max(0) * 1000)
    }
}

fn link_host(acc: &mut DnsAcc, host: i64, qname_id: i64, at: i64, device: Option<i64>) {
    let e = acc
        .host_domains
        .entry((host, qname_id))
        .or_insert((at, at, 0, device));
    e.0 = e.0.min(at);
    if at >= e.1 {
        e.1 = at;
        e.3 = device.or(e.3);
    }
    e.2 += 1;
}

/// How far back a new device claims the DNS queries its address made before it was
/// known: the neighbour sighting or first flow of a new device follows its first
/// queries by a tick or two.
const CLAIM_MS: i64 = 5 * MINUTE_MS;

/// Gives the recent queries of `client` that have no device to `device`, the device
/// that now owns that address (answers never create devices; see `apply_dns`), and
/// counts them into its per-minute rollup as if it had owned them all along.
pub fn claim_recent_queries(
    tx: &Transaction,
    client: IpAddr,
    device: i64,
    at: i64,
) -> rusqlite::Result<()> {
    let since = at - CLAIM_MS;
    let client = IpBlob::new(client);
    tx.prepare_cached(
        "INSERT INTO dns_device_minutes (device_id, minute, queries, nxdomain, names)
         SELECT ?1, ts - ts % 60000, count(*), sum(rcode = 3), count(DISTINCT qname_id)
         FROM dns_queries WHERE ts >= ?2 AND client = ?3 AND device_id IS NULL
         GROUP BY 2
         ON CONFLICT (device_id, minute) DO UPDATE SET
             queries = queries + excluded.queries,
             nxdomain = nxdomain + excluded.nxdomain,
             names = max(names, excluded.names)",
    )?
    .execute(params![device, since, client])?;
    tx.prepare_cached(
        "UPDATE dns_queries SET device_id = ?1
         WHERE ts >= ?2 AND client = ?3 AND device_id IS NULL",
    )?
    .execute(params![device, since, client])?;
    Ok(())
}

/// Stores one batch of observations. `device_of` gives the device of a LAN client
/// (creating it on first sight), `None` for other clients.
pub fn apply_dns(
    tx: &Transaction,
    observations: &[DnsObservation],
    state: &mut DnsState,
    acc: &mut DnsAcc,
    mut device_of: impl FnMut(IpAddr, i64) -> rusqlite::Result<Option<i64>>,
) -> rusqlite::Result<()> {
    for obs in observations {
        let qname_id = state.name_id(tx, &obs.qname)?;
        let cname_id = match obs.canonical_name() {
            Some(name) => Some(state.name_id(tx, name)?),
            None => None,
        };
        let domain_id = state.name_id(tx, crate::dns_name::registrable_domain(&obs.qname))?;
        let device_id = device_of(obs.client, obs.ts_ms)?;
        let client = IpBlob::new(obs.client);
        let addresses: Vec<(IpAddr, Option<u32>)> = obs.addresses().collect();
        tx.prepare_cached(
            "INSERT INTO dns_queries (ts, client, device_id, qname_id, qtype, rcode, answers,
                 cname_id, source, domain_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            obs.ts_ms,
            client,
            device_id,
            qname_id,
            obs.qtype,
            obs.rcode,
            addresses.len() as i64,
            cname_id,
            obs.source.code(),
            domain_id
        ])?;
        let query_id = tx.last_insert_rowid();
        acc.queries += 1;
        if let Some(device) = device_id {
            let minute = obs.ts_ms - obs.ts_ms.rem_euclid(MINUTE_MS);
            let m = acc.minutes.entry((device, minute)).or_default();
            m.0 += 1;
            m.1 += u64::from(obs.is_nxdomain());
            state
                .name_sets
                .entry((device, minute))
                .or_default()
                .insert(qname_id);
        }
        // A DNS-over-HTTPS resolver's bootstrap answer teaches its addresses.
        let resolver = state.resolvers.is_resolver(&obs.qname);
        // An address listed twice in one answer is one row.
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO dns_answers (query_id, ip, client, ttl)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for &(ip, ttl) in &addresses {
            state.note_answered(ip);
            if resolver {
                state.resolvers.learn(&obs.qname, ip);
            }
            insert.execute(params![query_id, IpBlob::new(ip), client, ttl])?;
            upgrade_waiting(tx, state, acc, obs, ip, (qname_id, cname_id), ttl)?;
        }
    }
    Ok(())
}

/// Flows stored just before this answer arrived, from its client to one of its
/// addresses and starting after it, get its name as an exact match.
fn upgrade_waiting(
    tx: &Transaction,
    state: &mut DnsState,
    acc: &mut DnsAcc,
    obs: &DnsObservation,
    ip: IpAddr,
    names: (i64, Option<i64>),
    ttl: Option<u32>,
) -> rusqlite::Result<()> {
    let Some(waiting) = state.pending.get_mut(&(obs.client, ip)) else {
        return Ok(());
    };
    let valid_until =
        obs.ts_ms + ttl.map_or(state.assumed_ttl_ms, |t| i64::from(t) * 1000) + state.slack_ms;
    let mut update = tx.prepare_cached(
        "UPDATE flows SET qname_id = ?2, cname_id = ?3, dns_match = ?4 WHERE id = ?1",
    )?;
    let before = waiting.len();
    let mut upgraded = Vec::new();
    waiting.retain(|f| {
        let explains = f.first_seen + CLOCK_SKEW_MS >= obs.ts_ms && f.first_seen <= valid_until;
        if explains {
            upgraded.push(*f);
        }
        !explains
    });
    state.pending_len -= before - waiting.len();
    if waiting.is_empty() {
        state.pending.remove(&(obs.client, ip));
    }
    for f in upgraded {
        update.execute(params![f.row_id, names.0, names.1, MATCH_EXACT])?;
        if let Some(host) = f.remote_host_id {
            link_host(
                acc,
                host.get(),
                names.0,
                f.first_seen,
                f.device_id.map(NonZeroI64::get),
            );
        }
        metrics::counter!("netmon_dns_late_attributions_total").increment(1);
    }
    Ok(())
}

/// Stores server names from TLS ClientHellos: a stored flow without an exact or stale
/// match is named in place; the name of a flow not stored yet waits for it
/// ([`DnsState::tls_name`]). `device_of` gives a LAN client's device, if it has one
/// (a client without one has no stored flow).
pub fn apply_tls(
    tx: &Transaction,
    names: &[TlsName],
    state: &mut DnsState,
    acc: &mut DnsAcc,
    device_of: impl Fn(IpAddr) -> Option<i64>,
) -> rusqlite::Result<()> {
    for tls in names {
        let (client, sport, server, dport) = tls.conn;
        let device = device_of(client);
        // The device's flows of the last seconds, through flows_device_last_seen.
        let stored: Option<(i64, Option<i64>)> = match device {
            Some(device) => tx
                .prepare_cached(
                    "SELECT id, remote_host_id FROM flows
                     WHERE device_id = ?1 AND last_seen >= ?2 AND dst_port = ?3
                       AND src_port = ?4 AND proto = 6 AND dst_ip = ?5 AND src_ip = ?6
                     ORDER BY last_seen DESC LIMIT 1",
                )?
                .query_row(
                    params![
                        device,
                        tls.ts_ms - TLS_WAIT_MS,
                        dport,
                        sport,
                        IpBlob::new(server),
                        IpBlob::new(client)
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
            None => None,
        };
        let Some((row_id, remote_host_id)) = stored else {
            let name = tls.name.as_str().into();
            if state
                .tls_waiting
                .insert(tls.conn, (tls.ts_ms, name))
                .is_none()
            {
                state.tls_order.push_back((tls.ts_ms, tls.conn));
            }
            continue;
        };
        state.resolvers.learn(&tls.name, server);
        let qname_id = state.name_id(tx, &tls.name)?;
        let named = tx
            .prepare_cached(
                "UPDATE flows SET qname_id = ?2, cname_id = NULL, dns_match = ?3
                 WHERE id = ?1 AND (dns_match IS NULL OR dns_match = ?4)",
            )?
            .execute(params![row_id, qname_id, MATCH_SNI, MATCH_OTHER_CLIENT])?;
        let result = if named == 0 {
            "dns-named"
        } else {
            "named-late"
        };
        metrics::counter!("netmon_tls_names_total", "result" => result).increment(1);
        if named > 0
            && let Some(host) = remote_host_id
        {
            link_host(acc, host, qname_id, tls.ts_ms, device);
        }
    }
    Ok(())
}

/// Writes the tick's DNS rollups: per-device minutes and remote host ↔ name links.
pub fn write_dns_rollups(
    tx: &Transaction,
    acc: &mut DnsAcc,
    state: &DnsState,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO dns_device_minutes (device_id, minute, queries, nxdomain, names)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (device_id, minute) DO UPDATE SET
             queries = queries + excluded.queries,
             nxdomain = nxdomain + excluded.nxdomain,
             names = max(names, excluded.names)",
    )?;
    for (&(device, minute), &(queries, nx)) in &acc.minutes {
        let names = state
            .name_sets
            .get(&(device, minute))
            .map_or(0, HashSet::len);
        stmt.execute(params![
            device,
            minute,
            queries as i64,
            nx as i64,
            names as i64
        ])?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO remote_host_domains (remote_host_id, qname_id, first_seen, last_seen,
             flows, last_device_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (remote_host_id, qname_id) DO UPDATE SET
             first_seen = min(first_seen, excluded.first_seen),
             last_device_id = CASE WHEN excluded.last_seen >= last_seen
                 THEN coalesce(excluded.last_device_id, last_device_id) ELSE last_device_id END,
             last_seen = max(last_seen, excluded.last_seen),
             flows = flows + excluded.flows",
    )?;
    for (&(host, name), &(first, last, flows, device)) in &acc.host_domains {
        stmt.execute(params![host, name, first, last, flows as i64, device])?;
    }
    metrics::counter!("netmon_dns_queries_stored_total").increment(acc.queries);
    Ok(())
}

// --- the writer's DNS state across a transaction ---------------------------------------

impl crate::store::table::Table for DnsState {
    fn rolled_back(&mut self, _conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        DnsState::rolled_back(self);
        Ok(())
    }

    /// Answers and waiting flows past their time are forgotten.
    fn committed(&mut self, now: i64) {
        self.expire(now);
    }
}
