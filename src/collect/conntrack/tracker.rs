//! The flow tracker: the latest state of every conntrack entry, which of them the writer
//! has not been told about, and how a table dump reconciles what events missed. Over 800
//! lines: half of it is tests against a fake writer.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use indexmap::IndexMap;

use super::{CLOSE_HOLD_MS, MAX_CHANGES_PER_BATCH, Stats};
use crate::collect::ctnetlink::{CtEntry, CtKind};
use crate::event::WriterHandle;
use crate::event::{DumpComplete, Event, FlowBatch, FlowChange};
use crate::export::ipfix::FlowTap;
use crate::flow::CtFlow;

/// `CtFlow::ident()` is already a 64-bit FNV hash, so the table hashes it with one
/// multiply instead of SipHash. Flooding is not a concern: the ident covers the kernel's
/// conntrack id, which a remote sender cannot choose (`nf_ct_get_id`, a keyed siphash).
#[derive(Default, Clone, Copy)]
pub(super) struct IdentHasher(u64);

impl Hasher for IdentHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.0 = (v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(super) type IdentBuild = BuildHasherDefault<IdentHasher>;

/// One flow as the tracker knows it.
#[derive(Debug, Clone)]
pub(super) struct Tracked {
    pub(super) flow: CtFlow,
    /// When this state was observed (unix ms); for an ended flow its end time.
    pub(super) observed_ms: i64,
    pub(super) ended: bool,
    /// Changed since the last batch that reached the writer (and listed in `dirty`).
    pub(super) dirty: bool,
    /// The dump generation current when the entry was first tracked.
    pub(super) created_gen: u32,
    /// The last dump generation that listed the entry.
    pub(super) seen_gen: u32,
    /// Closed (TIME_WAIT/CLOSE) by an event, waiting for a dump that began after the
    /// close (generation > `.1`) to bring its counters; not flushed before `.0` (unix ms)
    /// unless that dump came. See [`CLOSE_HOLD_MS`].
    pub(super) hold: Option<(i64, u32)>,
}

/// The in-memory flow table: latest state per conntrack entry, and which entries the
/// writer has not been told about yet.
///
/// Dump generations: `generation` increases when a dump begins. When it completes, a live
/// entry tracked before it began (`created_gen < generation`) that it did not list
/// (`seen_gen != generation`) has ended without us seeing its DESTROY (lost in an overrun,
/// or the flow was older than netmon and never announced).
pub(super) struct Tracker {
    /// Dense: a flood fills it to the cap, and a hash table's buckets at that size are
    /// twice the entries' worth.
    pub(super) flows: IndexMap<i64, Tracked, IdentBuild>,
    /// Idents with `dirty` set, each once, in the order they changed.
    pub(super) dirty: Vec<i64>,
    /// Ends of lifetimes whose identity a new lifetime took before the end was sent;
    /// they go out first in the next batch.
    pub(super) displaced: Vec<FlowChange>,
    pub(super) cap: usize,
    pub(super) generation: u32,
    /// A TCP connection reached TIME_WAIT/CLOSE since the last dump began: its final
    /// counters are only in a dump (see [`CLOSE_DUMP_MIN_GAP`]).
    pub(super) closes_pending: bool,
    pub(super) dump: Option<DumpPass>,
    /// DESTROYs received while a dump runs: the dump may still list those entries from
    /// a part of the table it read before they went, and must not bring them back.
    pub(super) destroyed_in_dump: HashSet<i64, IdentBuild>,
    /// A refreshing dump completed; its marker goes on the batch after its entries.
    pub(super) pending_dump_complete: Option<i64>,
    /// Until the writer has one `DumpComplete`, dumps refresh every entry they list; see
    /// [`Tracker::begin_dump`].
    pub(super) dump_complete_delivered: bool,
    pub(super) stats: Stats,
    /// The IPFIX exporter's tap: sees exactly the batches the writer accepted.
    pub(super) export: Option<FlowTap>,
}

pub(super) struct DumpPass {
    pub(super) started_ms: i64,
    pub(super) refresh: bool,
}

impl Tracker {
    pub(super) fn new(cap: usize) -> Tracker {
        Tracker {
            flows: IndexMap::with_capacity_and_hasher(cap.min(16_384), IdentBuild::default()),
            dirty: Vec::new(),
            displaced: Vec::new(),
            cap,
            generation: 0,
            closes_pending: false,
            dump: None,
            destroyed_in_dump: HashSet::default(),
            pending_dump_complete: None,
            dump_complete_delivered: false,
            stats: Stats::default(),
            export: None,
        }
    }

    pub(super) fn mark_dirty(dirty: &mut Vec<i64>, ident: i64, t: &mut Tracked) {
        if !t.dirty {
            t.dirty = true;
            dirty.push(ident);
        }
    }

    /// A NEW, UPDATE or DESTROY event.
    pub(super) fn apply_event(&mut self, entry: CtEntry, now_ms: i64) {
        match entry.kind {
            CtKind::New => self.stats.events_new += 1,
            CtKind::Update => self.stats.events_update += 1,
            CtKind::Destroy => self.stats.events_destroy += 1,
        }
        if entry.kind == CtKind::Destroy {
            self.destroy(entry, now_ms);
        } else {
            self.upsert(entry, now_ms, false);
        }
    }

    /// One entry of the running dump.
    pub(super) fn apply_dump(&mut self, entry: CtEntry, now_ms: i64) {
        if entry.kind == CtKind::Destroy {
            // Not sent in dumps; if it ever is, it still means the entry is gone.
            self.destroy(entry, now_ms);
        } else {
            self.upsert(entry, now_ms, true);
        }
    }

    /// DESTROY: the entry is gone; its final counters and (back-dated) stop time are in
    /// the message when accounting and timestamps are on. An unknown flow (older than
    /// netmon and not dumped yet, or dropped at the cap) is still reported as ended.
    pub(super) fn destroy(&mut self, entry: CtEntry, now_ms: i64) {
        let ident = entry.flow.ident();
        let observed_ms = entry.flow.kernel_stop_ms.unwrap_or(now_ms);
        if self.dump.is_some() && self.destroyed_in_dump.len() < self.cap {
            self.destroyed_in_dump.insert(ident);
        }
        if let Some(t) = self.flows.get_mut(&ident) {
            if t.ended {
                // The end of a second lifetime with this identity (its NEW was lost).
                Self::displace(&mut self.displaced, &mut self.stats, self.cap, t);
                t.flow = entry.flow;
            } else {
                t.flow = entry.merged_with(&t.flow);
            }
            t.ended = true;
            t.hold = None;
            t.observed_ms = observed_ms;
            Self::mark_dirty(&mut self.dirty, ident, t);
        } else if self.flows.len() < self.cap.saturating_mul(2) {
            // Ended entries leave at the next successful send, so they may briefly take
            // the table past the cap; twice the cap bounds even a writer that stalls.
            self.insert(ident, entry.flow, observed_ms, false, true);
        } else {
            self.stats.drops += 1;
        }
    }

    /// Queues the (unsent) end of `t`'s lifetime before `t` is reused for the next one.
    pub(super) fn displace(
        displaced: &mut Vec<FlowChange>,
        stats: &mut Stats,
        cap: usize,
        t: &Tracked,
    ) {
        if displaced.len() < cap {
            displaced.push(FlowChange {
                flow: t.flow.clone(),
                observed_ms: t.observed_ms,
                ended: true,
            });
        } else {
            stats.drops += 1;
        }
    }

    /// NEW, UPDATE or a dump entry: absent fields keep their previous value.
    pub(super) fn upsert(&mut self, entry: CtEntry, now_ms: i64, from_dump: bool) {
        let ident = entry.flow.ident();
        let generation = self.generation;
        let refresh = from_dump && self.dump.as_ref().is_some_and(|d| d.refresh);
        if let Some(t) = self.flows.get_mut(&ident) {
            if t.ended {
                if from_dump {
                    // A dump part read before the DESTROY we already have.
                    return;
                }
                // An event for an entry whose end is not sent yet: a new lifetime with the
                // same identity. The kernel's id hashes the entry's address and tuple
                // (`nf_ct_get_id`), and the slab reuses a freed entry at once, so a
                // fixed-port UDP flow (NTP, a DNS forwarder) can end and restart within one
                // tick. Keep the old end, to be sent ahead of the new lifetime.
                Self::displace(&mut self.displaced, &mut self.stats, self.cap, t);
                t.flow = entry.flow;
                t.observed_ms = now_ms;
                t.ended = false;
                t.created_gen = generation;
                t.seen_gen = 0;
                t.hold = None;
                Self::mark_dirty(&mut self.dirty, ident, t);
                return;
            }
            let merged = entry.merged_with(&t.flow);
            // A held close keeps its close time: the counters the dump brings are what
            // moved before the connection closed.
            let keep_time = t.hold.is_some();
            if from_dump {
                t.seen_gen = generation;
                if t.hold
                    .is_some_and(|(_, gen_at_close)| generation != gen_at_close)
                {
                    t.hold = None;
                }
            } else if merged.is_closed() && !t.flow.is_closed() {
                self.closes_pending = true;
                t.hold = Some((now_ms + CLOSE_HOLD_MS, generation));
            }
            if merged != t.flow || refresh {
                t.flow = merged;
                if !keep_time {
                    t.observed_ms = now_ms;
                }
                Self::mark_dirty(&mut self.dirty, ident, t);
            }
            return;
        }
        if from_dump && self.destroyed_in_dump.contains(&ident) {
            return;
        }
        if self.flows.len() >= self.cap {
            self.stats.drops += 1;
            return;
        }
        self.insert(ident, entry.flow, now_ms, from_dump, false);
    }

    pub(super) fn insert(
        &mut self,
        ident: i64,
        flow: CtFlow,
        observed_ms: i64,
        from_dump: bool,
        ended: bool,
    ) {
        self.flows.insert(
            ident,
            Tracked {
                flow,
                observed_ms,
                ended,
                dirty: true,
                created_gen: self.generation,
                seen_gen: if from_dump { self.generation } else { 0 },
                hold: None,
            },
        );
        self.dirty.push(ident);
    }

    /// A dump request was sent.
    ///
    /// While no `DumpComplete` has reached the writer (i.e. the start-up dump, or a retry
    /// of it), the dump *refreshes*: every entry it lists is sent even if unchanged, so
    /// the batch carrying `dump_complete` truthfully says "every live flow was in this or
    /// an earlier batch since the dump began" (`event::FlowBatch`), and the writer can end
    /// stored flows that vanished while netmon was down. Later dumps (periodic, resync)
    /// send only what changed and reconcile against this table instead: re-sending every
    /// idle flow each `dump_interval_s` would cost the writer a row update per flow for
    /// nothing.
    pub(super) fn begin_dump(&mut self, started_ms: i64) {
        self.generation = self.generation.wrapping_add(1);
        self.destroyed_in_dump.clear();
        self.dump = Some(DumpPass {
            started_ms,
            refresh: !self.dump_complete_delivered && self.pending_dump_complete.is_none(),
        });
    }

    /// The dump completed: reconcile. Returns how many flows it found ended.
    pub(super) fn end_dump(&mut self, now_ms: i64) -> u64 {
        let Some(pass) = self.dump.take() else {
            return 0;
        };
        let generation = self.generation;
        let mut ended = 0;
        for (ident, t) in self.flows.iter_mut() {
            if !t.ended && t.created_gen != generation && t.seen_gen != generation {
                t.ended = true;
                t.observed_ms = now_ms;
                Self::mark_dirty(&mut self.dirty, *ident, t);
                ended += 1;
            }
        }
        self.stats.reconciled_ends += ended;
        self.destroyed_in_dump.clear();
        if pass.refresh {
            self.pending_dump_complete = Some(pass.started_ms);
        }
        ended
    }

    /// The dump failed or was incomplete: it proves nothing about absent entries.
    pub(super) fn abort_dump(&mut self) {
        self.dump = None;
        self.destroyed_in_dump.clear();
    }

    /// Sends everything dirty (in messages of at most [`MAX_CHANGES_PER_BATCH`]). Returns
    /// true when all of it, and any pending dump marker, reached the channel. What did not
    /// fit stays dirty and is coalesced into the next tick's batch.
    ///
    /// (Long: one batch assembled in the order the writer relies on (displaced ends,
    /// changes, dump marker).)
    pub(super) fn flush(&mut self, writer: &WriterHandle) -> bool {
        if self.dirty.is_empty()
            && self.displaced.is_empty()
            && self.pending_dump_complete.is_none()
        {
            return true;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        // Just-closed flows waiting for their counters stay dirty for a later tick.
        let now_ms = crate::time::now_ms();
        let mut held = Vec::new();
        dirty.retain(|ident| {
            let waiting = self
                .flows
                .get(ident)
                .and_then(|t| t.hold)
                .is_some_and(|(until, _)| now_ms < until);
            if waiting {
                held.push(*ident);
            }
            !waiting
        });
        if dirty.is_empty() && self.displaced.is_empty() && self.pending_dump_complete.is_none() {
            self.dirty = held;
            return true;
        }
        let mut start = 0;
        loop {
            let end = (start + MAX_CHANGES_PER_BATCH).min(dirty.len());
            let chunk = &dirty[start..end];
            let last = end == dirty.len();
            // Displaced ends precede everything, in the first message.
            let mut changed = std::mem::take(&mut self.displaced);
            let displaced = changed.len();
            // Exactly what the message carries: in a flood several full messages are in
            // flight at once, and a vector grown by doubling would be up to half slack.
            changed.reserve_exact(chunk.len());
            changed.extend(
                chunk
                    .iter()
                    .filter_map(|ident| self.flows.get(ident))
                    .map(|t| FlowChange {
                        flow: t.flow.clone(),
                        observed_ms: t.observed_ms,
                        ended: t.ended,
                    }),
            );
            let dump_complete = if last {
                self.pending_dump_complete
                    .map(|started_ms| DumpComplete { started_ms })
            } else {
                None
            };
            let batch = FlowBatch {
                changed,
                dump_complete,
            };
            // Cloned only when exporting; offered only once the writer took the batch.
            let offered = self.export.as_ref().map(|_| batch.changed.clone());
            if let Err(event) = writer.try_send(Event::Flows(batch)) {
                self.stats.channel_full += 1;
                if displaced > 0
                    && let Event::Flows(mut batch) = event
                {
                    batch.changed.truncate(displaced);
                    self.displaced = batch.changed;
                }
                dirty.drain(..start);
                dirty.extend(held);
                self.dirty = dirty;
                return false;
            }
            if let (Some(tap), Some(changes)) = (&self.export, offered) {
                tap.offer(changes);
            }
            for ident in chunk {
                if let Some(t) = self.flows.get_mut(ident) {
                    t.dirty = false;
                    if t.ended {
                        self.flows.swap_remove(ident);
                    }
                }
            }
            if last {
                if dump_complete.is_some() {
                    self.pending_dump_complete = None;
                    self.dump_complete_delivered = true;
                }
                dirty.clear();
                dirty.extend(held);
                self.dirty = dirty;
                self.shrink_if_sparse();
                return true;
            }
            start = end;
        }
    }

    /// Gives back the table's buckets once a flood is over ([`crate::memory::shrink_map`]):
    /// a flood takes the table to twice `max_tracked_flows` (the ended flows of a burst
    /// wait here for the writer), ≈ 63 MiB of buckets at the default cap.
    pub(super) fn shrink_if_sparse(&mut self) {
        let flows = crate::memory::shrink_index_map(&mut self.flows);
        crate::memory::shrink_set(&mut self.destroyed_in_dump);
        if self.dirty.capacity() > 4 * self.dirty.len().max(1024) {
            self.dirty.shrink_to(self.dirty.len());
        }
        if self.displaced.is_empty() {
            self.displaced.shrink_to_fit();
        }
        if flows {
            crate::memory::release_free_heap();
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::flow::{Counters, PROTO_TCP, Tuple};
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc::{Receiver, sync_channel};

    pub(crate) fn flow(ct_id: u32, sport: u16) -> CtFlow {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 80));
        let nat = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        CtFlow {
            ct_id,
            family: 4,
            proto: PROTO_TCP,
            orig: Tuple {
                src: a,
                dst: b,
                sport: Some(sport),
                dport: Some(443),
                icmp: None,
            },
            reply: Tuple {
                src: b,
                dst: nat,
                sport: Some(443),
                dport: Some(sport),
                icmp: None,
            },
            status: 0x8,
            tcp_state: Some(1),
            mark: 0,
            zone: 0,
            counters: Counters::default(),
            kernel_start_ms: None,
            kernel_stop_ms: None,
        }
    }

    pub(crate) fn ev(kind: CtKind, flow: CtFlow) -> CtEntry {
        let counters = kind == CtKind::Destroy;
        CtEntry {
            kind,
            flow,
            has_status: true,
            has_counters_orig: counters,
            has_counters_reply: counters,
        }
    }

    /// A dump entry: counters, start time, no stop.
    pub(crate) fn dumped(mut flow: CtFlow, bytes: u64) -> CtEntry {
        flow.counters = Counters {
            orig_bytes: bytes,
            orig_packets: 1,
            reply_bytes: bytes,
            reply_packets: 1,
        };
        flow.kernel_start_ms = Some(1_000);
        CtEntry {
            kind: CtKind::Update,
            flow,
            has_status: true,
            has_counters_orig: true,
            has_counters_reply: true,
        }
    }

    pub(crate) fn writer(capacity: usize) -> (WriterHandle, Receiver<Event>) {
        let (tx, rx) = sync_channel(capacity);
        (WriterHandle::new(tx, Arc::new(AtomicUsize::new(0))), rx)
    }

    pub(crate) fn batches(rx: &Receiver<Event>) -> Vec<FlowBatch> {
        rx.try_iter()
            .map(|e| match e {
                Event::Flows(b) => b,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    pub(crate) fn changes(rx: &Receiver<Event>) -> Vec<FlowChange> {
        batches(rx).into_iter().flat_map(|b| b.changed).collect()
    }

    #[test]
    fn events_coalesce_into_one_change_per_flow() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let mut f = flow(1, 1000);
        t.apply_event(ev(CtKind::New, f.clone()), 10);
        for state in [2, 3] {
            f.tcp_state = Some(state);
            t.apply_event(ev(CtKind::Update, f.clone()), 20);
        }
        t.apply_event(ev(CtKind::New, flow(2, 2000)), 30);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].flow.tcp_state, Some(3));
        assert_eq!((c[0].observed_ms, c[0].ended), (20, false));
        // Nothing changed: nothing sent. An UPDATE that changes nothing: nothing sent.
        assert!(t.flush(&w));
        t.apply_event(ev(CtKind::Update, f.clone()), 40);
        assert!(t.flush(&w));
        assert!(batches(&rx).is_empty());
        assert_eq!((t.stats.events_new, t.stats.events_update), (2, 3));
    }

    #[test]
    fn a_closed_flow_waits_for_the_dump_that_brings_its_counters() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let f = flow(1, 1000);
        t.apply_event(ev(CtKind::New, f.clone()), 10);
        assert!(t.flush(&w));
        assert_eq!(changes(&rx).len(), 1);
        let mut closed = f.clone();
        closed.tcp_state = Some(7); // TIME_WAIT, from an UPDATE without counters
        let closed_at = crate::time::now_ms();
        t.apply_event(ev(CtKind::Update, closed.clone()), closed_at);
        assert!(t.closes_pending);
        assert!(t.flush(&w));
        assert!(rx.try_recv().is_err(), "held until its counters arrive");
        t.begin_dump(20);
        t.apply_dump(dumped(closed, 5_000_000), 21);
        t.end_dump(22);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].flow.tcp_state, Some(7));
        assert_eq!(c[0].flow.counters.orig_bytes, 5_000_000);
        assert_eq!(
            c[0].observed_ms, closed_at,
            "the close time, not the dump's"
        );
    }

    #[test]
    fn update_without_counters_keeps_counters() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let f = flow(1, 1000);
        t.apply_event(ev(CtKind::New, f.clone()), 10);
        t.begin_dump(15);
        t.apply_dump(dumped(f.clone(), 500), 16);
        t.end_dump(17);
        let mut later = f.clone();
        later.tcp_state = Some(4);
        t.apply_event(ev(CtKind::Update, later), 20);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].flow.tcp_state, Some(4));
        assert_eq!(c[0].flow.counters.orig_bytes, 500);
        assert_eq!(c[0].flow.kernel_start_ms, Some(1_000));
    }

    #[test]
    fn destroy_carries_final_counters_and_kernel_stop_time() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        t.apply_event(ev(CtKind::New, flow(1, 1000)), 10);
        assert!(t.flush(&w));
        let mut end = flow(1, 1000);
        end.counters.orig_bytes = 9_999;
        end.kernel_stop_ms = Some(12);
        t.apply_event(ev(CtKind::Destroy, end), 50);
        assert!(t.flush(&w));
        let c = changes(&rx);
        let last = c.last().expect("changes");
        assert!(last.ended);
        assert_eq!(
            (last.observed_ms, last.flow.counters.orig_bytes),
            (12, 9_999)
        );
        assert!(
            t.flows.is_empty(),
            "ended flows leave after a successful send"
        );
    }

    #[test]
    fn destroy_of_unknown_flow_is_sent_as_ended() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        t.apply_event(ev(CtKind::Destroy, flow(7, 7000)), 99);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 1);
        assert!(c[0].ended);
        assert_eq!((c[0].flow.ct_id, c[0].observed_ms), (7, 99));
        assert!(t.flows.is_empty());
    }

    #[test]
    fn cap_drops_new_flows_and_counts_but_still_reports_their_end() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(2);
        for i in 0..3 {
            t.apply_event(ev(CtKind::New, flow(i, 1000 + i as u16)), 10);
        }
        assert_eq!((t.flows.len(), t.stats.drops), (2, 1));
        t.apply_event(ev(CtKind::Update, flow(2, 1002)), 11);
        assert_eq!(t.stats.drops, 2);
        t.apply_event(ev(CtKind::Destroy, flow(2, 1002)), 12);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 3);
        assert!(c.iter().any(|c| c.flow.ct_id == 2 && c.ended));
        assert_eq!(t.flows.len(), 2);
    }

    #[test]
    fn dump_reconciles_flows_it_no_longer_lists() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let (a, b, c) = (flow(1, 1000), flow(2, 2000), flow(3, 3000));
        t.apply_event(ev(CtKind::New, a.clone()), 10);
        t.apply_event(ev(CtKind::New, b.clone()), 10);
        assert!(t.flush(&w));
        changes(&rx);
        t.begin_dump(100);
        t.apply_dump(dumped(a.clone(), 10), 101);
        t.apply_event(ev(CtKind::New, c.clone()), 102); // born during the dump
        assert_eq!(t.end_dump(103), 1);
        assert_eq!(t.stats.reconciled_ends, 1);
        assert!(t.flush(&w));
        let got = batches(&rx);
        assert_eq!(got.len(), 1);
        let ended: Vec<u32> = got[0]
            .changed
            .iter()
            .filter(|c| c.ended)
            .map(|c| c.flow.ct_id)
            .collect();
        assert_eq!(ended, vec![2]);
        assert_eq!(
            got[0]
                .changed
                .iter()
                .find(|c| c.ended)
                .map(|c| c.observed_ms),
            Some(103)
        );
        // The first complete dump is marked for the writer.
        assert_eq!(got[0].dump_complete.map(|d| d.started_ms), Some(100));
        assert_eq!(t.flows.len(), 2);
    }

    #[test]
    fn only_the_first_dump_refreshes_unchanged_flows() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let a = flow(1, 1000);
        for (round, started) in [(0, 100), (1, 200)] {
            t.begin_dump(started);
            t.apply_dump(dumped(a.clone(), 10), started + 1);
            t.end_dump(started + 2);
            assert!(t.flush(&w));
            let got = batches(&rx);
            if round == 0 {
                assert_eq!(got.len(), 1);
                assert_eq!(got[0].changed.len(), 1);
                assert!(got[0].dump_complete.is_some());
            } else {
                assert!(got.is_empty(), "an unchanged flow is not re-sent: {got:?}");
            }
        }
        // A flow the first dump listed unchanged since an event is still sent with it.
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        t.apply_event(ev(CtKind::New, a.clone()), 10);
        assert!(t.flush(&w));
        changes(&rx);
        t.begin_dump(50);
        let mut same = ev(CtKind::Update, a.clone());
        same.kind = CtKind::Update;
        t.apply_dump(same, 51);
        t.end_dump(52);
        assert!(t.flush(&w));
        let got = batches(&rx);
        assert_eq!(got[0].changed.len(), 1);
        assert_eq!(got[0].changed[0].observed_ms, 51);
    }

    #[test]
    fn a_stale_dump_entry_does_not_revive_a_destroyed_flow() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let a = flow(1, 1000);
        t.apply_event(ev(CtKind::New, a.clone()), 10);
        t.begin_dump(20);
        t.apply_event(ev(CtKind::Destroy, a.clone()), 21);
        t.apply_dump(dumped(a.clone(), 5), 22); // read before the DESTROY, arrives after
        assert!(t.flush(&w));
        t.apply_dump(dumped(a.clone(), 5), 23); // and again after the end was sent
        t.end_dump(24);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 1);
        assert!(c[0].ended);
        assert!(t.flows.is_empty());
    }

    #[test]
    fn a_failed_dump_ends_nothing() {
        let mut t = Tracker::new(1024);
        t.apply_event(ev(CtKind::New, flow(1, 1000)), 10);
        t.begin_dump(20);
        t.abort_dump();
        assert_eq!(t.end_dump(30), 0);
        assert!(t.flows.values().all(|f| !f.ended));
        assert!(t.pending_dump_complete.is_none());
    }

    #[test]
    fn a_full_channel_keeps_changes_and_coalesces_them() {
        let (w, rx) = writer(1);
        let mut t = Tracker::new(1024);
        w.try_send(Event::Flows(FlowBatch::default()))
            .expect("room for one");
        let mut f = flow(1, 1000);
        t.apply_event(ev(CtKind::New, f.clone()), 10);
        assert!(!t.flush(&w));
        assert_eq!(t.stats.channel_full, 1);
        f.tcp_state = Some(3);
        t.apply_event(ev(CtKind::Update, f.clone()), 20);
        t.apply_event(ev(CtKind::Destroy, flow(9, 9000)), 21);
        assert!(!t.flush(&w));
        assert_eq!(t.stats.channel_full, 2);
        assert_eq!(batches(&rx).len(), 1, "the filler");
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].flow.tcp_state, Some(3));
        assert!(c[1].ended);
        assert_eq!(t.flows.len(), 1);
    }

    #[test]
    fn large_batches_are_split_and_the_dump_marker_goes_last() {
        let n = MAX_CHANGES_PER_BATCH * 2 + 5;
        let (w, rx) = writer(2);
        let mut t = Tracker::new(n * 2);
        t.begin_dump(1);
        for i in 0..n as u32 {
            t.apply_dump(dumped(flow(i, (i % 60_000) as u16), 1), 2);
        }
        t.end_dump(3);
        // Room for two of three messages: the third stays, with the marker.
        assert!(!t.flush(&w));
        let first = batches(&rx);
        assert_eq!(first.len(), 2);
        assert!(
            first
                .iter()
                .all(|b| b.changed.len() == MAX_CHANGES_PER_BATCH)
        );
        assert!(first.iter().all(|b| b.dump_complete.is_none()));
        assert_eq!(t.dirty.len(), 5);
        w.all_taken();
        assert!(t.flush(&w));
        let rest = batches(&rx);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].changed.len(), 5);
        assert_eq!(rest[0].dump_complete.map(|d| d.started_ms), Some(1));
    }

    #[test]
    fn a_dump_marker_is_sent_even_with_nothing_changed() {
        let (w, rx) = writer(2);
        let mut t = Tracker::new(1024);
        t.begin_dump(5);
        t.end_dump(6);
        assert!(t.flush(&w));
        let b = batches(&rx);
        assert_eq!(b.len(), 1);
        assert!(b[0].changed.is_empty());
        assert_eq!(b[0].dump_complete.map(|d| d.started_ms), Some(5));
    }

    #[test]
    fn a_reused_identity_keeps_both_lifetimes_in_order() {
        let (w, rx) = writer(8);
        let mut t = Tracker::new(1024);
        let mut old = flow(1, 123);
        t.apply_event(ev(CtKind::New, old.clone()), 10);
        assert!(t.flush(&w));
        changes(&rx);
        old.counters.orig_bytes = 76;
        old.kernel_stop_ms = Some(20);
        t.apply_event(ev(CtKind::Destroy, old), 21);
        // Same id and tuple again before the end went out (slab reuse, fixed ports).
        t.apply_event(ev(CtKind::New, flow(1, 123)), 22);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!(c.len(), 2);
        assert!(c[0].ended && c[0].flow.counters.orig_bytes == 76);
        assert!(!c[1].ended && c[1].flow.counters.orig_bytes == 0);
        assert_eq!(c[1].observed_ms, 22);
        assert_eq!(t.flows.len(), 1);
        // A full channel keeps the displaced end too.
        let (w, rx) = writer(1);
        w.try_send(Event::Flows(FlowBatch::default()))
            .expect("room for one");
        t.apply_event(ev(CtKind::Destroy, flow(1, 123)), 30);
        t.apply_event(ev(CtKind::New, flow(1, 123)), 31);
        assert!(!t.flush(&w));
        assert_eq!(t.displaced.len(), 1);
        batches(&rx);
        assert!(t.flush(&w));
        let c = changes(&rx);
        assert_eq!((c.len(), c[0].ended, c[1].ended), (2, true, false));
    }
}
