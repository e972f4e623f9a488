//! The writer's side of `flows`: one row per connection lifetime, inserted when the
//! conntrack tracker first reports it and updated with its cumulative counters.
//!
//! Deltas are computed here, against what is committed: [`Flows`] keeps the live flows
//! (ident → row id and last committed counters) in memory, loaded from the database at
//! start. So a collector that restarted and re-reports a flow's cumulative counters adds
//! only what is new, and a `kill -9` never double counts nor duplicates a row.

use std::net::IpAddr;
use std::num::NonZeroI64;

use rusqlite::{Connection, Transaction, params};

use crate::detect::score::{Detector, OutboundFlow};
use crate::event::{FlowBatch, FlowChange};
use crate::flow::{Counters, CtFlow, Direction, Network, PROTO_TCP};
use crate::idmap::{IdIndexMap, IdSet};
use crate::store::addr::IpBlob;
use crate::store::devices::DeviceIds;
use crate::store::dns::{DnsMatch, DnsState, MATCH_OTHER_CLIENT};
use crate::store::hosts::RemoteHosts;
use crate::store::rollups::{Contact, TickAcc};
use crate::store::table::Table;
use crate::time::{MINUTE_MS, minute_start};

/// How long a closed TCP connection's conntrack entry may outlive it: the kernel's
/// default `nf_conntrack_tcp_timeout_time_wait` (120 s), plus a margin.
const LINGER_MS: i64 = 3 * MINUTE_MS;

/// What the writer remembers about a live flow so updates need no SELECT.
#[derive(Debug, Clone)]
pub struct LiveFlow {
    row_id: i64,
    /// Counters as last committed.
    pub(crate) counters: Counters,
    status: u32,
    tcp_state: Option<u8>,
    // Row ids and times are never 0, so these take 8 bytes each, not 16: a flood holds
    // tens of thousands of live flows.
    device_id: Option<NonZeroI64>,
    remote_host_id: Option<NonZeroI64>,
    /// The device's side of the counters: true when the device initiated the flow
    /// (orig = device's upload), false for inbound flows it answered.
    device_is_orig: bool,
    last_seen: i64,
    /// Set once the connection is over. A TCP connection in TIME_WAIT or CLOSE has
    /// ended for the user even though its conntrack entry lingers (120 s by default) to
    /// absorb stray packets; the row stays here until the entry's DESTROY so its last
    /// counters still land on it and the lingering entry never becomes a second row.
    ended_at: Option<NonZeroI64>,
}

/// A row id or a time as [`LiveFlow`] holds it.
fn nz(v: Option<i64>) -> Option<NonZeroI64> {
    v.and_then(NonZeroI64::new)
}

/// The live flows, exactly the rows with `ended_at IS NULL` (and closed TCP connections
/// whose entry may still linger).
#[derive(Default)]
pub struct Flows {
    /// ident → live flow. Dense: a burst of live flows takes it to tens of thousands.
    pub live: IdIndexMap<i64, LiveFlow>,
    /// Live rows loaded at start that no collector report has refreshed yet. The first
    /// completed dump ends those: they vanished while netmon was down.
    unconfirmed: IdSet<i64>,
    /// `unconfirmed` as the current transaction found it, to restore on a rollback.
    /// Only non-empty until the first dump completes.
    unconfirmed_before: Option<IdSet<i64>>,
}

impl Table for Flows {
    fn begin(&mut self) {
        self.unconfirmed_before = (!self.unconfirmed.is_empty()).then(|| self.unconfirmed.clone());
    }

    /// Rows the transaction inserted or ended are not so: reload the live flows from
    /// what is committed.
    fn rolled_back(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if let Some(unconfirmed) = self.unconfirmed_before.take() {
            self.unconfirmed = unconfirmed;
        }
        self.load(conn)
    }

    fn committed(&mut self, _now: i64) {
        self.unconfirmed_before = None;
    }
}

/// Everything a flow write touches besides `flows`: the other families' state and the
/// transaction's accumulator.
pub struct FlowContext<'a> {
    pub net: &'a Network,
    /// Unix ms of the transaction.
    pub now: i64,
    pub devices: &'a mut DeviceIds,
    pub hosts: &'a mut RemoteHosts,
    pub dns: &'a mut DnsState,
    /// The detection engine (`None` with `[detect] enabled = false`).
    pub detect: Option<&'a mut Detector>,
    pub acc: &'a mut TickAcc,
}

impl Flows {
    /// Loads the live flows from the database; at start, every one of them waits for a
    /// collector report (see [`Flows::unconfirmed`]).
    pub fn start(conn: &Connection) -> rusqlite::Result<Flows> {
        let mut flows = Flows::default();
        flows.load(conn)?;
        flows.unconfirmed = flows.live.keys().copied().collect();
        Ok(flows)
    }

    /// Rebuilds the live flows from what is committed.
    fn load(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        self.live.clear();
        let mut stmt = conn.prepare(
            "SELECT f.ident, f.id, f.bytes_up, f.packets_up, f.bytes_down, f.packets_down,
                    f.status, f.state, f.device_id, f.remote_host_id, f.direction, f.last_seen,
                f.ended_at
             FROM flows f WHERE f.ended_at IS NULL
             UNION ALL
             -- Closed TCP connections whose conntrack entry may still linger (a flow's
             -- end is never after its last activity: the last_seen index finds them;
             -- ident is 0 once the entry is gone).
             SELECT f.ident, f.id, f.bytes_up, f.packets_up, f.bytes_down, f.packets_down,
                f.status, f.state, f.device_id, f.remote_host_id, f.direction, f.last_seen,
                f.ended_at
             FROM flows f WHERE f.last_seen > ?1 AND f.ended_at > ?1 AND f.ident != 0
                AND f.state IN (7, 8)",
        )?;
        // A closed connection's entry lingers at most TIME_WAIT (120 s by default); a
        // longer look-back only reloads rows no DESTROY can still reach — after a flood
        // of short connections, hundreds of thousands of them, which would cost seconds
        // and a GB of RAM at start-up.
        let lingering_since = crate::time::now_ms() - LINGER_MS;
        let rows = stmt.query_map([lingering_since], |r| {
            let state: Option<u8> = r.get(7)?;
            let direction = Direction::from_code(r.get(10)?);
            Ok((
                r.get::<_, i64>(0)?,
                LiveFlow {
                    row_id: r.get(1)?,
                    counters: Counters {
                        orig_bytes: r.get::<_, i64>(2)? as u64,
                        orig_packets: r.get::<_, i64>(3)? as u64,
                        reply_bytes: r.get::<_, i64>(4)? as u64,
                        reply_packets: r.get::<_, i64>(5)? as u64,
                    },
                    status: r.get::<_, i64>(6)? as u32,
                    tcp_state: state,
                    device_id: nz(r.get(8)?),
                    remote_host_id: nz(r.get(9)?),
                    device_is_orig: direction != Direction::Inbound,
                    last_seen: r.get(11)?,
                    ended_at: nz(r.get(12)?),
                },
            ))
        })?;
        for row in rows {
            let (ident, flow) = row?;
            self.live.insert(ident, flow);
        }
        Ok(())
    }

    /// Live flows as the user sees them: not ended, not closed.
    pub fn active(&self) -> u64 {
        self.live.values().filter(|f| f.ended_at.is_none()).count() as u64
    }

    /// Device `from` was merged into `into` (committed): live flows follow.
    pub fn remap_device(&mut self, from: i64, into: i64) {
        for f in self.live.values_mut() {
            if f.device_id.map(NonZeroI64::get) == Some(from) {
                f.device_id = NonZeroI64::new(into);
            }
        }
    }

    /// Gives back what the maps grew to in a flood ([`crate::memory::shrink_map`]).
    pub fn shrink_if_sparse(&mut self) -> bool {
        crate::memory::shrink_index_map(&mut self.live)
            | crate::memory::shrink_set(&mut self.unconfirmed)
    }

    /// Applies one batch of the conntrack tracker: new flows become rows, known ones
    /// get their counters, and a completed dump ends the rows it did not refresh.
    pub fn apply_batch(
        &mut self,
        tx: &Transaction,
        batch: &FlowBatch,
        ctx: &mut FlowContext,
    ) -> rusqlite::Result<()> {
        for change in &batch.changed {
            let ident = change.flow.ident();
            self.unconfirmed.remove(&ident);
            if let Some(known) = self.live.get_mut(&ident) {
                update_flow(tx, known, change, ctx)?;
                if change.ended {
                    self.live.swap_remove(&ident);
                }
            } else {
                let flow = insert_flow(tx, change, ctx)?;
                if !change.ended {
                    self.live.insert(ident, flow);
                }
            }
        }
        if batch.dump_complete.is_some() && !self.unconfirmed.is_empty() {
            self.end_unconfirmed(tx, ctx.acc)?;
        }
        Ok(())
    }

    /// Stored as live, absent from a full dump: the flow ended while nobody watched.
    /// Its real end is unknown; its last observed activity is the honest bound.
    fn end_unconfirmed(&mut self, tx: &Transaction, acc: &mut TickAcc) -> rusqlite::Result<()> {
        let mut end =
            tx.prepare_cached("UPDATE flows SET ended_at = last_seen, ident = 0 WHERE id = ?1")?;
        let n = self.unconfirmed.len();
        for ident in self.unconfirmed.drain() {
            if let Some(flow) = self.live.swap_remove(&ident)
                && flow.ended_at.is_none()
            {
                end.execute([flow.row_id])?;
                acc.tick.flows_ended += 1;
            }
        }
        metrics::counter!("netmon_flows_ended_while_down_total").increment(n as u64);
        log::info!("{n} flows stored as live had ended while netmon was not running");
        Ok(())
    }
}

fn update_flow(
    tx: &Transaction,
    known: &mut LiveFlow,
    change: &FlowChange,
    ctx: &mut FlowContext,
) -> rusqlite::Result<()> {
    let flow = &change.flow;
    let delta = flow.counters.since(&known.counters);
    let ends_now = known.ended_at.is_none() && (change.ended || flow.is_closed());
    let changed = !delta.is_zero()
        || flow.status != known.status
        || flow.tcp_state != known.tcp_state
        || ends_now
        || change.ended;
    if !changed {
        return Ok(());
    }
    // A counter that went backwards (zeroed by another tool) restarts the baseline.
    let observed = change.observed_ms.max(known.last_seen);
    let mut stmt = tx.prepare_cached(
        "UPDATE flows SET state = ?2, status = ?3, mark = ?4,
                bytes_up = ?5, packets_up = ?6, bytes_down = ?7, packets_down = ?8,
                last_seen = ?9, ended_at = ?10, ident = ident * ?11
         WHERE id = ?1",
    )?;
    stmt.execute(params![
        known.row_id,
        flow.tcp_state,
        flow.status,
        flow.mark,
        flow.counters.orig_bytes as i64,
        flow.counters.orig_packets as i64,
        flow.counters.reply_bytes as i64,
        flow.counters.reply_packets as i64,
        observed,
        known
            .ended_at
            .map(NonZeroI64::get)
            .or(ends_now.then_some(observed)),
        // The entry is gone: nothing will report it again.
        i64::from(!change.ended),
    ])?;
    ctx.acc.add_traffic(
        known.device_id.map(NonZeroI64::get),
        known.remote_host_id.map(NonZeroI64::get),
        &delta,
        known.device_is_orig,
        observed,
        false,
    );
    if let Some(d) = ctx.detect.as_deref_mut()
        && known.device_is_orig
    {
        // The engine knows its scored flows by row id and ignores the others.
        let c = &flow.counters;
        d.flow_updated(
            known.row_id,
            c.orig_bytes,
            c.reply_bytes,
            delta.orig_bytes,
            observed,
            ends_now || change.ended,
        );
    }
    known.counters = flow.counters;
    known.status = flow.status;
    known.tcp_state = flow.tcp_state;
    known.last_seen = observed;
    if ends_now {
        known.ended_at = NonZeroI64::new(observed);
        ctx.acc.tick.flows_ended += 1;
    } else {
        ctx.acc.tick.flows_updated += 1;
    }
    Ok(())
}

/// Who a new flow is between, as its row records it.
struct NewFlow {
    direction: Direction,
    /// Unix ms: the kernel's start timestamp, else when netmon first saw it.
    first_seen: i64,
    observed: i64,
    ended_at: Option<i64>,
    device_id: Option<i64>,
    device_is_orig: bool,
    remote_ip: Option<IpAddr>,
    remote_host_id: Option<i64>,
    /// The LAN client whose DNS answers name the flow: set for outbound flows a device
    /// started.
    dns_client: Option<IpAddr>,
    /// The name behind it, when one was found.
    found: Option<DnsMatch>,
}

fn insert_flow(
    tx: &Transaction,
    change: &FlowChange,
    ctx: &mut FlowContext,
) -> rusqlite::Result<LiveFlow> {
    let flow = &change.flow;
    let new = classify(tx, change, ctx)?;
    let row_id = insert_row(tx, change, &new)?;
    if let Some(client) = new.dns_client {
        ctx.dns.flow_stored(
            &mut ctx.acc.dns,
            client,
            flow.orig.dst,
            (row_id, new.first_seen),
            (new.device_id, new.remote_host_id),
            new.found,
        );
    }
    metrics::counter!("netmon_flows_stored_total").increment(1);
    if let (Some(_), Some(device)) = (new.dns_client, new.device_id)
        && let Some(what) = ctx
            .dns
            .resolvers
            .classify(flow.proto, flow.orig.dport, flow.orig.dst)
    {
        ctx.dns.resolvers.note(tx, device, what, new.first_seen)?;
    }
    score_new_flow(tx, flow, row_id, &new, ctx)?;
    count_new_flow(flow, &new, ctx.acc);
    Ok(LiveFlow {
        row_id,
        counters: flow.counters,
        status: flow.status,
        tcp_state: flow.tcp_state,
        device_id: nz(new.device_id),
        remote_host_id: nz(new.remote_host_id),
        device_is_orig: new.device_is_orig,
        last_seen: new.observed,
        ended_at: nz(new.ended_at),
    })
}

/// Direction, device, remote host and DNS name of a flow not seen before; creates the
/// device and remote host rows it is the first to show.
fn classify(
    tx: &Transaction,
    change: &FlowChange,
    ctx: &mut FlowContext,
) -> rusqlite::Result<NewFlow> {
    let flow = &change.flow;
    let net = ctx.net;
    let ended_at = (change.ended || flow.is_closed()).then_some(change.observed_ms);
    let direction = net.classify(&flow.orig, &flow.reply);
    let observed = change.observed_ms;
    let first_seen = flow.kernel_start_ms.unwrap_or(observed.min(ctx.now));
    let device = device_side(net, flow, direction);
    // Only a LAN address that started the flow can become a device here: an inbound
    // packet's destination may not exist (a scan of the LAN prefix, a forged flood).
    let device_id = match device {
        Some((ip, true)) => ctx
            .devices
            .for_originator(tx, ip, observed, &mut ctx.acc.tick)?,
        Some((ip, false)) => ctx.devices.known(tx, ip)?,
        None => None,
    };
    let device_is_orig = device.is_none_or(|(_, orig)| orig);
    let remote_ip = match direction {
        Direction::Outbound => Some(flow.orig.dst),
        Direction::Inbound => Some(flow.orig.src),
        _ => None,
    };
    let remote_host_id = match remote_ip {
        Some(ip) => Some(ctx.hosts.for_ip(tx, ip, observed, &mut ctx.acc.tick)?),
        None => None,
    };
    // The name behind an outbound flow: what its own client resolved (store::dns).
    let dns_client = match (direction, device) {
        (Direction::Outbound, Some((ip, true))) => Some(ip),
        _ => None,
    };
    let found = match dns_client {
        Some(client) => ctx.dns.attribute(tx, client, flow.orig.dst, first_seen)?,
        None => None,
    };
    // A TLS connection's ClientHello names the server when DNS did not.
    let found = match (dns_client, flow.proto, flow.orig.sport, flow.orig.dport) {
        (Some(client), PROTO_TCP, Some(sport), Some(dport)) => {
            ctx.dns
                .tls_name(tx, (client, sport, flow.orig.dst, dport), found)?
        }
        _ => found,
    };
    Ok(NewFlow {
        direction,
        first_seen,
        observed,
        ended_at,
        device_id,
        device_is_orig,
        remote_ip,
        remote_host_id,
        dns_client,
        found,
    })
}

/// Inserts the flow's row; returns its id.
fn insert_row(tx: &Transaction, change: &FlowChange, new: &NewFlow) -> rusqlite::Result<i64> {
    let flow = &change.flow;
    let icmp = flow.orig.icmp;
    let found = new.found;
    let (orig, reply) = (&flow.orig, &flow.reply);
    let mut stmt = tx.prepare_cached(
        "INSERT INTO flows (ident, ct_id, proto, direction,
             src_ip, src_port, dst_ip, dst_port,
             reply_src_ip, reply_src_port, reply_dst_ip, reply_dst_port,
             icmp_type, icmp_code, icmp_id, state, status, mark, zone,
             bytes_up, packets_up, bytes_down, packets_down,
             first_seen, last_seen, ended_at,
             device_id, remote_host_id, qname_id, cname_id, dns_match)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31)",
    )?;
    stmt.execute(params![
        // A flow first reported by its DESTROY has no entry left to recognise.
        if change.ended { 0 } else { flow.ident() },
        flow.ct_id,
        flow.proto,
        new.direction.code(),
        IpBlob::new(orig.src),
        orig.sport,
        IpBlob::new(orig.dst),
        orig.dport,
        // The reply tuple only where NAT changed it.
        (reply.src != orig.dst).then(|| IpBlob::new(reply.src)),
        reply.sport.filter(|p| Some(*p) != orig.dport),
        (reply.dst != orig.src).then(|| IpBlob::new(reply.dst)),
        reply.dport.filter(|p| Some(*p) != orig.sport),
        icmp.map(|i| i.0),
        icmp.map(|i| i.1),
        icmp.map(|i| i.2),
        flow.tcp_state,
        flow.status,
        flow.mark,
        flow.zone,
        flow.counters.orig_bytes as i64,
        flow.counters.orig_packets as i64,
        flow.counters.reply_bytes as i64,
        flow.counters.reply_packets as i64,
        new.first_seen,
        new.observed,
        new.ended_at,
        new.device_id,
        new.remote_host_id,
        found.map(|m| m.qname_id),
        found.and_then(|m| m.cname_id),
        found.map(|m| m.confidence),
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Detection scores what the device itself started towards the internet.
fn score_new_flow(
    tx: &Transaction,
    flow: &CtFlow,
    row_id: i64,
    new: &NewFlow,
    ctx: &mut FlowContext,
) -> rusqlite::Result<()> {
    let (Some(d), Some(_), Some(device_id), Some(remote)) = (
        ctx.detect.as_deref_mut(),
        new.dns_client,
        new.device_id,
        new.remote_ip,
    ) else {
        return Ok(());
    };
    let domain = match new.found {
        Some(m) => crate::store::detect::flow_name(tx, d, m.qname_id)?,
        None => None,
    };
    let c = &flow.counters;
    d.flow_started(&OutboundFlow {
        row_id,
        device_id,
        remote_host_id: new.remote_host_id,
        remote,
        proto: flow.proto,
        dport: flow.orig.dport,
        at: new.first_seen,
        domain: domain.as_deref(),
        resolved: new
            .found
            .is_some_and(|m| m.confidence != MATCH_OTHER_CLIENT),
        up: c.orig_bytes,
        down: c.reply_bytes,
    });
    if new.ended_at.is_some() {
        d.flow_updated(row_id, c.orig_bytes, c.reply_bytes, 0, new.observed, true);
    }
    Ok(())
}

/// Everything the flow carried so far happened since it started; count it now.
fn count_new_flow(flow: &CtFlow, new: &NewFlow, acc: &mut TickAcc) {
    acc.add_traffic(
        new.device_id,
        new.remote_host_id,
        &flow.counters,
        new.device_is_orig,
        new.observed,
        true,
    );
    if let (Some(host), Direction::Outbound, Some(port)) =
        (new.remote_host_id, new.direction, flow.orig.dport)
    {
        acc.add_host_port(host, flow.proto, port, new.observed);
    }
    if let Some(device) = new.device_id {
        let port = flow
            .orig
            .dport
            .filter(|_| new.direction == Direction::Outbound);
        acc.add_contact(Contact {
            device,
            minute: minute_start(new.observed),
            remote_host: new.remote_host_id,
            port,
        });
    }
    if new.ended_at.is_some() {
        acc.tick.flows_ended += 1;
    }
    acc.tick.flows_new += 1;
}

/// The LAN side of a flow: whose device it is, and whether that device initiated it.
fn device_side(net: &Network, flow: &CtFlow, direction: Direction) -> Option<(IpAddr, bool)> {
    match direction {
        Direction::Inbound => {
            if net.is_lan(flow.reply.src) {
                Some((flow.reply.src, false))
            } else {
                Some((flow.orig.dst, false))
            }
        }
        _ if net.is_lan(flow.orig.src) => Some((flow.orig.src, true)),
        Direction::Lan if net.is_lan(flow.orig.dst) => Some((flow.orig.dst, false)),
        _ => None,
    }
}
