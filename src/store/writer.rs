//! The one writer (DESIGN §1, principle 1): a thin commit loop.
//!
//! **Single writer.** Exactly one thread owns the read-write SQLite connection.
//! Everything that changes the database — collector batches and user commands from the
//! web — arrives as an [`Event`] on one bounded channel ([`crate::event`]). Pages read
//! through their own read-only connections and never wait on it.
//!
//! **The tick.** The writer blocks for the first event of a tick, drains whatever else
//! is already queued, applies it all in **one transaction** ([`Tables::apply`]: each
//! event goes to the table family that owns its rows — flows, rollups, hosts, devices,
//! DNS, detection, …), commits, answers the commands, and publishes a [`Tick`] on a
//! `watch` so pages and SSE streams know what changed. Statements are prepared once and
//! cached. Each family keeps in-memory state beside its rows (the live flows, id caches,
//! open minutes' sets, the detection engine); the [`Table`](crate::store::table::Table) trait is how the loop tells
//! every one of them that a transaction began, committed or rolled back, so none can
//! outlive a rollback believing in rows that were never stored.
//!
//! **The batch bound.** A tick takes at most `max_batch` events and [`MAX_TX_CHANGES`]
//! changes (fewer when the storage budget's WAL share is small): a transaction sits in
//! the WAL whole, and the storage budget only sees it after the commit. One message
//! bigger than that (a conntrack dump) goes in parts, in order.
//!
//! **Overload.** Under overload the channel fills; collectors then coalesce at the
//! source (they never wait), and flow messages are refused past
//! [`crate::event::MAX_QUEUED_FLOW_CHANGES`]. A failed commit is rolled back and counted
//! (`netmon_writer_failed_commits_total`), and every family's in-memory state is made to
//! match the database again. What happens to the batch depends on why:
//!
//! - **Storage errors** (`SQLITE_FULL`, `SQLITE_IOERR`, busy, read-only: the disk is
//!   full or failing, not the batch) — the batch's data is *held* and applied again,
//!   before anything newer, after a pause that doubles from [`RETRY_FIRST`] to
//!   [`RETRY_MAX`]. Before each attempt retention and the storage budget run at once
//!   ([`crate::store::retention::Retention::make_room`]): a disk filled by netmon's own
//!   file and log gets room back from its oldest rows, with the held batch's size kept
//!   free. While a batch is held the writer takes nothing new from the channel:
//!   the channel fills and every collector keeps coalescing at its source under its own
//!   bound (the conntrack tracker's `max_tracked_flows`, the DNS and drop backlogs), where
//!   whatever does not fit is counted as a collector drop. So a short outage loses
//!   nothing, a long one costs no more memory than a burst does, and writes resume within
//!   [`RETRY_MAX`] of space returning. The held batch is what one tick drained. User
//!   commands are never held: they are answered with the error, and
//!   [`WriterHandle::command`] refuses new ones at once while writes fail rather than
//!   queueing behind the outage. `/healthz` shows the failure
//!   ([`crate::event::WriteFailure`]).
//! - **Any other error** (a constraint, a bug: something in the batch itself) — the
//!   batch is dropped and its changes counted in `netmon_writer_dropped_changes_total`,
//!   so one bad batch can never stall storage. Live flows recover at their next change
//!   (collectors send cumulative counters); flows that ended in a dropped batch are lost.
//!
//! A held batch still failing at shutdown is dropped and counted the same way.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{Connection, ErrorCode};
use tokio::sync::watch;

use crate::config::Config;
use crate::event::{
    CommandError, CommandResult, Event, FlowBatch, StorageStatus, Tick, WriterHandle, flow_changes,
};
use crate::export::prometheus::DeviceSeries;
use crate::flow::Network;
use crate::store::history::{self, History};
use crate::store::reserve::Reserve;
use crate::store::retention::Retention;
use crate::store::schema;
use crate::store::tables::{Tables, Written};

/// Most changes one transaction takes from the channel (a single message may carry more:
/// it is split, see [`split_front`]). A writer that fell behind — a slow router CPU, a
/// flood — would otherwise drain the whole channel into one transaction (64 messages,
/// tens of thousands of flows and random names): its pages all sit in the WAL until it
/// commits and the file grows by all of it before the storage budget's check after the
/// commit, so file plus WAL would go far past `max_db_mb` (`tests/lab_flood.rs`). A
/// random-name flood costs ≈ 0.4 KiB of WAL per change; this keeps one transaction near
/// 3 MiB, within the WAL's share of the default budget. Normal ticks stay one
/// transaction.
pub const MAX_TX_CHANGES: usize = 8_000;

/// First pause before a held batch is applied again; doubles per failure up to
/// [`RETRY_MAX`], which bounds how long writes lag behind storage coming back.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// What one change is taken to need in the write-ahead log, for the transaction bound
/// and when the storage budget makes room for a held batch: the most the lab flood's
/// transactions took per change, rounded up. A conntrack resync's updates and a
/// random-name flood's queries land on pages all over the flows table, the `dns_names`
/// index and their other indexes, so a transaction writes many pages per change.
const HELD_BYTES_PER_CHANGE: u64 = 2048;

/// How often the writer gives back what its maps grew to in a flood.
const SHRINK_EVERY: Duration = Duration::from_secs(10);

/// Changes per transaction: as many as fit in half the WAL's share at
/// [`HELD_BYTES_PER_CHANGE`] each, at most [`MAX_TX_CHANGES`], at least 500. A bigger
/// transaction sits in the WAL whole and takes the file system past the budget before
/// the budget's check sees it.
fn tx_changes(c: &crate::config::Retention) -> usize {
    let wal = crate::store::budget::Limits::from_config(c).wal_bytes();
    usize::try_from(wal / 2 / HELD_BYTES_PER_CHANGE)
        .unwrap_or(MAX_TX_CHANGES)
        .clamp(500, MAX_TX_CHANGES)
}

/// Started writer: the handle to send to it, the tick watch, and the thread.
pub struct WriterThread {
    pub handle: WriterHandle,
    pub ticks: watch::Receiver<Tick>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl WriterThread {
    /// Opens the database (creating and migrating it), loads the live-flow state and
    /// starts the writer thread. `device_series` gets every commit's per-device traffic
    /// (`None` where no Prometheus recorder is installed). Errors are start-up errors (bad
    /// path, newer schema).
    /// `capture` tells detection whether DNS answers reach netmon (`None`: assume they
    /// do, for benchmarks).
    pub fn start(
        config: &Config,
        network: Arc<RwLock<Network>>,
        device_series: Option<DeviceSeries>,
        capture: Option<crate::collect::capture::CaptureStatus>,
    ) -> anyhow::Result<WriterThread> {
        // A damaged file is moved aside first: netmon starts on the history instead.
        schema::quarantine_if_damaged(&config.db_path)?;
        let start = history::before_open(config)?;
        let mut conn = schema::open_rw(&config.db_path)?;
        let history = History::open(config, &mut conn, start)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(config.channel_capacity);
        let depth = Arc::new(AtomicUsize::new(0));
        // Loading state reads the WAL a killed run left, which needs room for its index:
        // on a full disk that room is the reserve's.
        let mut writer = match Writer::new(conn, network.clone(), config) {
            Err(e) if is_disk_full(&e) && Reserve::for_config(config).release() => {
                Writer::new(schema::open_rw(&config.db_path)?, network, config)?
            }
            result => result?,
        };
        writer.history = history;
        let handle = WriterHandle::new(tx, depth.clone());
        writer.storage = handle.storage.clone();
        writer.device_series = device_series;
        if let Some(d) = &mut writer.tables.detect {
            d.notifier = Some(crate::detect::notify::start(config));
            d.capture = capture;
        }
        let (tick_tx, ticks) = watch::channel(Tick {
            active_flows: writer.tables.flows.active(),
            at_ms: crate::time::now_ms(),
            ..Tick::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let tick = Duration::from_millis(config.tick_ms);
        let inbox = Inbox {
            rx,
            queued: Queued {
                messages: depth,
                flow_changes: handle.queued_flows.clone(),
            },
            carried: VecDeque::new(),
            max_batch: config.max_batch,
            // Wake at least this often to notice `stop` and run retention.
            wait: tick.min(Duration::from_millis(200)),
        };
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || writer.run(inbox, tick_tx, thread_stop))
            .context("starting the writer thread")?;
        Ok(WriterThread {
            handle,
            ticks,
            stop,
            thread,
        })
    }

    /// Asks the writer to commit what is queued and stop; returns when it has.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.handle);
        if self.thread.join().is_err() {
            log::error!("writer thread panicked");
        }
    }
}

struct Writer {
    conn: Connection,
    /// Every table family's in-memory state, and which family each event goes to.
    tables: Tables,
    retention: Retention,
    /// The history store on persistent storage (`None` when it is off).
    history: Option<History>,
    seq: u64,
    /// The data of a batch whose commit failed for a storage reason, to apply again
    /// before anything newer (see the module docs).
    held: Option<Held>,
    /// Storage failures in a row; sets the pause before the next attempt.
    failures: u32,
    storage: Arc<StorageStatus>,
    /// When the in-memory maps were last shrunk (see [`Tables::shrink_if_sparse`]).
    shrunk_at: Instant,
    /// Room kept back on the database's file system for a full disk
    /// ([`crate::store::reserve`]): given up when commits keep failing, taken again
    /// when there is room.
    reserve: Reserve,
    /// Most changes one transaction takes: [`MAX_TX_CHANGES`], or fewer when the WAL's
    /// share of a small storage budget would not hold that many.
    tx_changes: usize,
    /// Per-device Prometheus series, fed after each commit (`None` without a recorder).
    device_series: Option<DeviceSeries>,
    /// `netmon_writer_failed_commits_total` and `netmon_writer_dropped_changes_total`,
    /// registered when the writer starts so they read 0 until something fails: a counter
    /// that first appears at its first increment hides that increment from Prometheus's
    /// `rate()`, and leaves a dashboard panel with no data where it should show 0.
    failed_commits: metrics::Counter,
    dropped_changes: metrics::Counter,
}

/// A batch waiting for storage to work again.
struct Held {
    /// Data events only: commands were answered when the batch failed.
    events: Vec<Event>,
    changes: usize,
    retry_at: Instant,
}

impl Writer {
    fn new(
        mut conn: Connection,
        network: Arc<RwLock<Network>>,
        config: &Config,
    ) -> anyhow::Result<Writer> {
        let reserve = Reserve::for_config(config);
        reserve.take_if_room();
        let tables = Tables::load(&mut conn, network, config)?;
        Ok(Writer {
            conn,
            tables,
            retention: Retention::new(&config.retention, &config.dns),
            history: None,
            seq: 0,
            held: None,
            failures: 0,
            storage: Arc::default(),
            shrunk_at: Instant::now(),
            reserve,
            tx_changes: tx_changes(&config.retention),
            device_series: None,
            failed_commits: metrics::counter!("netmon_writer_failed_commits_total"),
            dropped_changes: metrics::counter!("netmon_writer_dropped_changes_total"),
        })
    }

    fn run(&mut self, mut inbox: Inbox, tick_tx: watch::Sender<Tick>, stop: Arc<AtomicBool>) {
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if self.held.is_some() {
                if self.write_held(stopping, inbox.wait, &tick_tx) {
                    continue;
                }
                if let Some(held) = self.held.take() {
                    let lost = held.changes + inbox.drain_changes();
                    log::error!("stopping with {lost} changes that could not be stored");
                    self.dropped_changes.increment(lost as u64);
                    break;
                }
                continue;
            }
            let Some(events) = inbox.next_batch(self.tx_changes) else {
                break; // every sender is gone
            };
            if !events.is_empty() {
                if let Some(tick) = self.apply(events) {
                    tick_tx.send_replace(tick);
                }
            } else if stopping {
                break;
            }
            self.between_ticks();
        }
        if let Some(h) = &mut self.history {
            h.sync_if_changed(&mut self.conn, self.seq);
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            log::warn!("final WAL checkpoint failed: {e}");
        }
    }

    /// Storage is failing: take nothing new (it coalesces at its source) and try the
    /// held batch again when its pause is over, or once at shutdown. Returns false when
    /// the loop should give up on the held batch (stopping).
    fn write_held(
        &mut self,
        stopping: bool,
        wait: Duration,
        tick_tx: &watch::Sender<Tick>,
    ) -> bool {
        if let Some(held) = &self.held {
            let pause = held.retry_at.saturating_duration_since(Instant::now());
            if !pause.is_zero() && !stopping {
                std::thread::sleep(pause.min(wait));
                return true;
            }
        }
        // Only after a failure: the rest of a batch whose front just committed follows
        // at once.
        if !stopping && self.failures > 0 {
            self.make_room();
        }
        if let Some(tick) = self.retry_held() {
            tick_tx.send_replace(tick);
            // A long held batch goes in many commits: the budget checks each, as it
            // checks every tick.
            if let Err(e) = self
                .retention
                .run_if_due(&mut self.conn, &mut self.tables.dns)
            {
                log::error!("retention failed: {e:#}");
            }
        }
        !stopping
    }

    /// Retention, detection upkeep, history syncs and shrinking, when due.
    fn between_ticks(&mut self) {
        if let Err(e) = self
            .retention
            .run_if_due(&mut self.conn, &mut self.tables.dns)
        {
            log::error!("retention failed: {e:#}");
        }
        if let Some(d) = &mut self.tables.detect {
            d.maintain(&mut self.conn);
        }
        if let Some(h) = &mut self.history
            && h.sync_if_due(&mut self.conn, self.seq)
                .is_some_and(|s| s.hosts_pruned)
        {
            self.tables.hosts.forget();
        }
        if self.shrunk_at.elapsed() >= SHRINK_EVERY {
            self.shrunk_at = Instant::now();
            if self.tables.shrink_if_sparse() {
                // The flood also filled SQLite's page cache: hand it back with the maps.
                if let Err(e) = self.conn.execute_batch("PRAGMA shrink_memory;") {
                    log::debug!("shrink_memory: {e}");
                }
                crate::memory::release_free_heap();
            }
            if self.held.is_none() {
                self.reserve.take_if_room();
            }
        }
    }

    /// Before a held batch is tried again: retention and the storage budget's pass, at
    /// once and with room for the held batch kept free (see the module docs). Without
    /// this a disk filled by netmon's own file and log stays full: nothing else deletes.
    fn make_room(&mut self) {
        // A first failure may be passing (another program's file, freed a moment
        // later); one that repeats gets the reserve, without which a full disk stays
        // wedged (see `crate::store::reserve`).
        if self.failures >= 2 {
            self.reserve.release();
        }
        let room = self
            .held
            .as_ref()
            .map_or(0, |h| h.changes as u64 * HELD_BYTES_PER_CHANGE);
        if let Err(e) = self
            .retention
            .make_room(&mut self.conn, &mut self.tables.dns, room)
        {
            log::error!("retention while writes fail: {e:#}");
        }
    }

    /// Applies the held batch again (see the module docs): at most one transaction's
    /// worth of changes ([`Writer::tx_changes`] — a held batch can be bigger, as one
    /// collector message may be), and half as much after each further failure: a
    /// transaction's pages sit in the WAL until it commits, so a smaller one needs less
    /// of a full disk. The rest stays held, in order, and follows at once.
    fn retry_held(&mut self) -> Option<Tick> {
        let mut held = self.held.take()?;
        let limit = self.tx_changes >> self.failures.saturating_sub(1).min(16);
        let rest = if held.changes > limit {
            split_front(&mut held.events, limit)
        } else {
            Vec::new()
        };
        let rest_changes: usize = rest.iter().map(changes_in).sum();
        log::info!("writing {} held changes again", held.changes - rest_changes);
        let tick = self.apply(held.events);
        if !rest.is_empty() {
            match &mut self.held {
                // The first half failed again and is held: the rest goes behind it.
                Some(first) => {
                    first.events.extend(rest);
                    first.changes += rest_changes;
                }
                None => {
                    self.held = Some(Held {
                        events: rest,
                        changes: rest_changes,
                        retry_at: Instant::now(),
                    });
                }
            }
        }
        tick
    }

    /// Applies one batch of events in one transaction and returns the published tick.
    /// Data is applied in arrival order, then the user commands; on a storage error the
    /// data is held for [`Writer::retry_held`].
    fn apply(&mut self, events: Vec<Event>) -> Option<Tick> {
        // The storage budget deleted devices: their cached ids must not be handed out.
        if self.retention.take_devices_pruned() {
            self.tables.devices.by_ip.clear();
        }
        let started = Instant::now();
        let now = crate::time::now_ms();
        let n_events = events.len();
        let mut data = Vec::with_capacity(events.len());
        let (mut commands, mut reply_to) = (Vec::new(), Vec::new());
        for event in events {
            match event {
                Event::Command(command, reply) => {
                    commands.push(command);
                    reply_to.push(reply);
                }
                event => data.push(event),
            }
        }
        let changes: usize = data.iter().map(changes_in).sum();
        self.tables.begin();
        let result = (|| {
            let tx = self.conn.transaction()?;
            let written = self.tables.apply(&tx, &data, commands, now)?;
            tx.commit()?;
            Ok(written)
        })();
        match result {
            Ok(written) => {
                let elapsed = started.elapsed();
                metrics::histogram!("netmon_writer_tick_seconds").record(elapsed.as_secs_f64());
                metrics::histogram!("netmon_writer_batch_events").record(changes as f64);
                metrics::counter!("netmon_writer_commits_total").increment(1);
                Some(self.committed(written, reply_to, now))
            }
            Err(e) => {
                self.failed_commits.increment(1);
                for reply in reply_to {
                    let _ = reply.send(Err(CommandError::Storage(format!("database error: {e}"))));
                }
                self.tables.rolled_back(&self.conn);
                self.rolled_back(&e, data, changes, n_events);
                None
            }
        }
    }

    /// After a commit: answer the commands, let every family follow, and build the tick.
    fn committed(
        &mut self,
        written: Written,
        reply_to: Vec<tokio::sync::oneshot::Sender<CommandResult>>,
        now: i64,
    ) -> Tick {
        let Written {
            mut acc,
            replies,
            merges,
        } = written;
        if let Some(series) = &mut self.device_series {
            let conn = &self.conn;
            series.record(
                acc.device_totals.iter().map(|(&id, (t, _))| {
                    (id, [t.bytes_up, t.bytes_down, t.packets_up, t.packets_down])
                }),
                |id| crate::store::devices::metric_label(conn, id),
            );
            for m in &merges {
                series.merge(m.from, m.into);
            }
        }
        let active = self.tables.flows.active();
        metrics::gauge!("netmon_active_flows").set(active as f64);
        for (reply, result) in reply_to.into_iter().zip(replies) {
            let _ = reply.send(result);
        }
        self.failures = 0;
        self.storage.working();
        self.tables.committed(&merges, now);
        self.seq += 1;
        acc.tick.seq = self.seq;
        acc.tick.at_ms = now;
        acc.tick.active_flows = active;
        acc.tick
    }

    /// After a rollback: hold the data for a retry when storage failed, else drop it.
    fn rolled_back(&mut self, e: &rusqlite::Error, data: Vec<Event>, changes: usize, n: usize) {
        if is_storage_error(e) && !data.is_empty() {
            self.failures = self.failures.saturating_add(1);
            let pause = RETRY_FIRST
                .saturating_mul(1 << (self.failures - 1).min(8))
                .min(RETRY_MAX);
            log::error!(
                "writer transaction of {n} events failed, rolled back: {e}; \
                 holding its {changes} changes and trying again in {pause:?} \
                 (failure {} in a row)",
                self.failures
            );
            self.storage.failing(e, changes);
            self.held = Some(Held {
                events: data,
                changes,
                retry_at: Instant::now() + pause,
            });
        } else {
            log::error!(
                "writer transaction of {n} events failed, rolled back: {e}; \
                 its {changes} changes are dropped"
            );
            self.dropped_changes.increment(changes as u64);
        }
    }
}

/// The receiving end of the channel, as the loop reads it.
struct Inbox {
    rx: Receiver<Event>,
    queued: Queued,
    /// Messages taken off the channel that would have taken their transaction past the
    /// bound: the first of the next one. Still counted as queued.
    carried: VecDeque<Event>,
    max_batch: usize,
    /// Longest wait for a first event: the loop wakes at least this often to notice
    /// `stop` and run retention.
    wait: Duration,
}

impl Inbox {
    /// The next tick's events: the first one to arrive within [`Inbox::wait`] (none:
    /// empty) and whatever else is queued, up to `max_batch` events and `max_changes`
    /// changes. `None` once every sender is gone.
    fn next_batch(&mut self, max_changes: usize) -> Option<Vec<Event>> {
        let first = match self.carried.pop_front() {
            Some(event) => Some(event),
            None => match self.rx.recv_timeout(self.wait) {
                Ok(event) => Some(event),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return None,
            },
        };
        let mut events: Vec<Event> = first.into_iter().collect();
        let mut changes: usize = events.iter().map(changes_in).sum();
        while events.len() < self.max_batch && changes < max_changes {
            let next = match self.carried.pop_front() {
                Some(event) => Ok(event),
                None => self.rx.try_recv(),
            };
            match next {
                Ok(event) if changes + changes_in(&event) > max_changes => {
                    self.carried.push_front(event);
                    break;
                }
                Ok(event) => {
                    changes += changes_in(&event);
                    events.push(event);
                }
                Err(_) => break,
            }
        }
        // One message bigger than a transaction (a conntrack dump, a collector that
        // coalesced through a stall) goes in parts: a transaction sits in the WAL
        // whole, and the budget only sees it after the commit.
        let mut split = false;
        if changes > max_changes {
            let rest = split_front(&mut events, max_changes);
            split = !rest.is_empty();
            for event in rest.into_iter().rev() {
                self.carried.push_front(event);
            }
        }
        self.queued.taken(&events, split);
        Some(events)
    }

    /// Changes still waiting (carried and queued), emptying the channel: at shutdown
    /// with storage failing, what is lost.
    fn drain_changes(&mut self) -> usize {
        self.carried
            .drain(..)
            .map(|e| changes_in(&e))
            .sum::<usize>()
            + self.rx.try_iter().map(|e| changes_in(&e)).sum::<usize>()
    }
}

/// What waits in the channel, as the writer's [`WriterHandle`]s count it.
struct Queued {
    messages: Arc<AtomicUsize>,
    flow_changes: Arc<AtomicUsize>,
}

impl Queued {
    /// `events` left the queue; with `split`, the last one is the front part of a message
    /// whose rest is still queued (it leaves the message count with its last part).
    fn taken(&self, events: &[Event], split: bool) {
        let flows: usize = events.iter().map(flow_changes).sum();
        self.flow_changes.fetch_sub(flows, Ordering::Relaxed);
        let messages = events.len() - usize::from(split && !events.is_empty());
        let depth = self
            .messages
            .fetch_sub(messages, Ordering::Relaxed)
            .saturating_sub(messages);
        metrics::gauge!("netmon_channel_depth").set(depth as f64);
    }
}

/// Keeps in `events` a front of at most `max_changes` changes (at least one change) and
/// returns the rest, in order. A flow message past the bound is split between its
/// changes; its dump-complete marker goes with the second part (it holds once all of
/// them are applied).
fn split_front(events: &mut Vec<Event>, max_changes: usize) -> Vec<Event> {
    let max_changes = max_changes.max(1);
    let mut taken = 0;
    for i in 0..events.len() {
        let c = changes_in(&events[i]);
        if taken + c <= max_changes {
            taken += c;
            continue;
        }
        let mut rest = events.split_off(i + 1);
        let keep = max_changes - taken;
        if let Event::Flows(batch) = &mut events[i]
            && keep > 0
            && batch.changed.len() > keep
        {
            let tail = batch.changed.split_off(keep);
            rest.insert(
                0,
                Event::Flows(FlowBatch {
                    changed: tail,
                    dump_complete: batch.dump_complete.take(),
                }),
            );
        } else if i > 0 {
            rest.insert(0, events.remove(i));
        }
        return rest;
    }
    Vec::new()
}

/// Changes an event carries, as counted in the writer's metrics.
fn changes_in(event: &Event) -> usize {
    match event {
        Event::Flows(_) => flow_changes(event),
        Event::Dns(observations) => observations.len(),
        Event::Tls(names) => names.len(),
        Event::Identity(sightings) => sightings.len(),
        Event::Enrichment(found) => found.len(),
        Event::Drops(counts) => counts.len(),
        Event::System(_) => 1,
        Event::Command(..) => 0,
    }
}

/// Whether a start-up error came from a full disk.
fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .is_some_and(|e| e.sqlite_error_code() == Some(ErrorCode::DiskFull))
    })
}

/// The storage failed, not the batch: the disk is full or failing, or another process
/// holds the database. Such a batch is worth holding and trying again.
fn is_storage_error(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
        )
    )
}
#[cfg(test)]
mod tests;
