//! The one writer (DESIGN §1, principle 1).
//!
//! Exactly one thread owns the read-write SQLite connection. Everything that changes
//! the database — collector batches and user commands from the web — arrives as an
//! [`Event`] on one bounded channel. The writer blocks for the first event of a tick,
//! drains whatever else is already queued (up to `max_batch` events and
//! [`MAX_TX_CHANGES`] changes), applies it all in **one transaction**, commits, answers
//! commands, and publishes a [`Tick`] on a `watch` so pages and SSE streams know what
//! changed. Statements are prepared once and cached.
//!
//! Deltas are computed here, against what is committed: the writer keeps the live flows
//! (ident → row id and last committed counters) in memory, loaded from the database at
//! start. So a collector that restarted and re-reports a flow's cumulative counters adds
//! only what is new, and a `kill -9` never double counts nor duplicates a row.
//!
//! Under overload the channel fills; collectors then coalesce at the source (they never
//! wait). A failed commit is rolled back and counted
//! (`netmon_writer_failed_commits_total`), and the in-memory state is reloaded from the
//! database so it matches what is stored. What happens to the batch depends on why:
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
//!   [`RETRY_MAX`] of space returning. The held batch is what one tick drained (at most
//!   `max_batch` events and, but for one big message, [`MAX_TX_CHANGES`] changes). User
//!   commands are never held: they are answered with the error, and
//!   [`WriterHandle::command`] refuses new ones at once while writes fail rather than
//!   queueing behind the outage. `/healthz` shows the failure ([`WriteFailure`]).
//! - **Any other error** (a constraint, a bug: something in the batch itself) — the
//!   batch is dropped and its changes counted in `netmon_writer_dropped_changes_total`,
//!   so one bad batch can never stall storage. Live flows recover at their next change
//!   (collectors send cumulative counters); flows that ended in a dropped batch are lost.
//!
//! A held batch still failing at shutdown is dropped and counted the same way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, params};
use tokio::sync::watch;

use crate::config::Config;
use crate::detect::incident::Policy;
use crate::detect::notify::Notifier;
use crate::detect::rules::Rules;
use crate::detect::score::{Detector, OutboundFlow};
use crate::event::{
    Command, CommandReply, Event, FlowBatch, FlowChange, StorageStatus, Tick, WriterHandle,
    flow_changes,
};
use crate::flow::{Counters, CtFlow, Direction, Network};
use crate::store::dns::{DnsAcc, DnsState, apply_dns, write_dns_rollups};
use crate::store::reserve::Reserve;
use crate::store::retention::Retention;
use crate::store::schema;
use crate::store::snapshot::{self, Snapshots};

/// Most changes one transaction takes from the channel (a single message may carry more:
/// it is never split). A writer that fell behind — a slow router CPU, a flood — would
/// otherwise drain the whole channel into one transaction (64 messages, tens of
/// thousands of flows and random names): its pages all sit in the WAL until it commits
/// and the file grows by all of it before the storage budget's check after the commit,
/// so file plus WAL went far past `max_db_mb` (49 MiB against 16 in `tests/lab_flood.rs`
/// with the CPU busy elsewhere). A random-name flood costs ≈ 0.4 KiB of WAL per change;
/// this keeps one transaction near 3 MiB, within the WAL's share of the default budget.
/// Normal ticks stay one transaction.
pub const MAX_TX_CHANGES: usize = 8_000;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

/// First pause before a held batch is applied again; doubles per failure up to
/// [`RETRY_MAX`], which bounds how long writes lag behind storage coming back.
const RETRY_FIRST: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(8);

/// What one held change is taken to need in the write-ahead log when the storage budget
/// makes room for it: a random-name flood's ≈ 0.4 KiB per change (see [`MAX_TX_CHANGES`]),
/// rounded up.
const HELD_BYTES_PER_CHANGE: u64 = 512;

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

/// Remote-host ids kept in memory; past this the cache is cleared and refilled from the
/// `remote_hosts.ip` index, so memory stays bounded on a router talking to the world.
const REMOTE_HOST_CACHE_CAP: usize = 16_384;

/// Started writer: the handle to send to it, the tick watch, and the thread.
pub struct WriterThread {
    pub handle: WriterHandle,
    pub ticks: watch::Receiver<Tick>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl WriterThread {
    /// Opens the database (creating and migrating it), loads the live-flow state and
    /// starts the writer thread. Errors are start-up errors (bad path, newer schema).
    pub fn start(config: &Config, network: Arc<RwLock<Network>>) -> anyhow::Result<WriterThread> {
        // A damaged file is moved aside first, so a snapshot (when there is one) takes
        // its place below.
        schema::quarantine_if_damaged(&config.db_path)?;
        snapshot::restore_if_missing(config)?;
        let conn = schema::open_rw(&config.db_path)?;
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
        let handle = WriterHandle::new(tx, depth.clone());
        let queued_flows = handle.queued_flows.clone();
        writer.storage = handle.storage.clone();
        if let Some(d) = &mut writer.detect {
            d.notifier = Some(crate::detect::notify::start(config));
        }
        let (tick_tx, ticks) = watch::channel(Tick {
            active_flows: writer.active_flows(),
            at_ms: crate::sys::now_ms(),
            ..Tick::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread_depth = depth.clone();
        let tick = Duration::from_millis(config.tick_ms);
        let max_batch = config.max_batch;
        let thread = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                let queued = Queued {
                    messages: thread_depth,
                    flow_changes: queued_flows,
                };
                writer.run(rx, queued, tick_tx, tick, max_batch, thread_stop);
            })
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

/// How long a closed TCP connection's conntrack entry may outlive it: the kernel's
/// default `nf_conntrack_tcp_timeout_time_wait` (120 s), plus a margin.
const LINGER_MS: i64 = 3 * MINUTE_MS;

/// What the writer remembers about a live flow so updates need no SELECT.
#[derive(Debug, Clone)]
struct LiveFlow {
    row_id: i64,
    /// Counters as last committed.
    counters: Counters,
    status: u32,
    tcp_state: Option<u8>,
    device_id: Option<i64>,
    remote_host_id: Option<i64>,
    /// The device's side of the counters: true when the device initiated the flow
    /// (orig = device's upload), false for inbound flows it answered.
    device_is_orig: bool,
    last_seen: i64,
    /// Set once the connection is over. A TCP connection in TIME_WAIT or CLOSE has
    /// ended for the user even though its conntrack entry lingers (120 s by default) to
    /// absorb stray packets; the row stays here until the entry's DESTROY so its last
    /// counters still land on it and the lingering entry never becomes a second row.
    ended_at: Option<i64>,
}

/// Per-device or per-host byte/packet deltas for one bucket.
#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    bytes_up: u64,
    bytes_down: u64,
    packets_up: u64,
    packets_down: u64,
    flows_new: u64,
}

impl Traffic {
    fn add(&mut self, c: &Counters, device_is_orig: bool) {
        let (up_b, up_p, down_b, down_p) = if device_is_orig {
            (c.orig_bytes, c.orig_packets, c.reply_bytes, c.reply_packets)
        } else {
            (c.reply_bytes, c.reply_packets, c.orig_bytes, c.orig_packets)
        };
        self.bytes_up += up_b;
        self.packets_up += up_p;
        self.bytes_down += down_b;
        self.packets_down += down_p;
    }
}

/// Sets for the true unique counts of one minute; kept only for recent minutes.
#[derive(Debug, Default)]
struct MinuteSets {
    dsts: HashSet<i64>,
    ports: HashSet<u16>,
}

/// Everything one transaction accumulates before it writes rollups.
#[derive(Default)]
struct TickAcc {
    device_minutes: HashMap<(i64, i64), Traffic>,
    device_hours: HashMap<(i64, i64), Traffic>,
    host_minutes: HashMap<(i64, i64), Traffic>,
    host_hours: HashMap<(i64, i64), Traffic>,
    /// Lifetime totals and last-seen per device/host.
    device_totals: HashMap<i64, (Traffic, i64)>,
    host_totals: HashMap<i64, (Traffic, i64)>,
    /// (remote host, proto, port) → (new flows, last seen).
    host_ports: HashMap<(i64, u8, u16), (u64, i64)>,
    /// New flows' (device, minute, remote host, destination port), for the unique counts.
    contacts: Vec<(i64, i64, Option<i64>, Option<u16>)>,
    dns: DnsAcc,
    tick: Tick,
}

struct Writer {
    conn: Connection,
    network: Arc<RwLock<Network>>,
    /// ident → live flow, exactly the rows with `ended_at IS NULL`.
    live: HashMap<i64, LiveFlow>,
    /// Live rows loaded at start that no collector report has refreshed yet. The first
    /// completed dump ends those: they vanished while netmon was down.
    unconfirmed: HashSet<i64>,
    /// LAN address → device id, and the bound on how many devices there may be.
    devices: DeviceIds,
    /// Remote address → remote host id (bounded, see [`REMOTE_HOST_CACHE_CAP`]).
    hosts: HashMap<IpAddr, i64>,
    device_sets: HashMap<(i64, i64), MinuteSets>,
    host_sets: HashMap<(i64, i64), HashSet<i64>>,
    /// DNS attribution state (names, flows waiting for a late answer).
    dns: DnsState,
    retention: Retention,
    snapshots: Option<Snapshots>,
    seq: u64,
    /// The data of a batch whose commit failed for a storage reason, to apply again
    /// before anything newer (see the module docs).
    held: Option<Held>,
    /// Storage failures in a row; sets the pause before the next attempt.
    failures: u32,
    storage: Arc<StorageStatus>,
    /// Detection (`None` with `[detect] enabled = false`).
    detect: Option<Detection>,
    /// When the in-memory maps were last shrunk (see [`Writer::shrink_if_sparse`]).
    shrunk_at: Instant,
    /// Room kept back on the database's file system for a full disk
    /// ([`crate::store::reserve`]): given up when commits keep failing, taken again
    /// when there is room.
    reserve: Reserve,
    /// Most changes one transaction takes: [`MAX_TX_CHANGES`], or fewer when the WAL's
    /// share of a small storage budget would not hold that many.
    tx_changes: usize,
}

/// How often the writer gives back what its maps grew to in a flood.
const SHRINK_EVERY: Duration = Duration::from_secs(10);

/// Detection's part of the writer: the engine scoring every new outbound flow from
/// memory during the tick (`crate::detect`), and its maintenance — baselines hourly,
/// pruning of old hits and incidents — run between ticks like retention.
struct Detection {
    engine: Detector,
    policy: Policy,
    /// Gets each incident a committed tick opened; `offer` never blocks. `None` in unit
    /// tests, which start no notifier thread.
    notifier: Option<Notifier>,
    baseline_every: Duration,
    baseline_days: u32,
    retention_days: u32,
    next_baseline: Instant,
    next_prune: Instant,
}

/// Hits and incidents are pruned this often (a cheap indexed DELETE).
const DETECT_PRUNE_EVERY: Duration = Duration::from_secs(600);

impl Detection {
    /// Loads the rules and the devices' memory and computes the first baselines.
    fn start(conn: &mut Connection, config: &Config) -> rusqlite::Result<Detection> {
        let c = &config.detect;
        let rules = crate::store::detect::load_rules(conn)?;
        let mut engine = Detector::new(c, Rules::new(rules));
        crate::store::detect::load_memory(conn, &mut engine)?;
        let now = crate::sys::now_ms();
        engine.set_baselines(crate::store::detect::recompute_baselines(
            conn,
            c.baseline_days,
            now,
        )?);
        let baseline_every = Duration::from_secs(c.baseline_interval_s);
        Ok(Detection {
            engine,
            policy: Policy::from_config(c),
            notifier: None,
            baseline_every,
            baseline_days: c.baseline_days,
            retention_days: c.retention_days,
            next_baseline: Instant::now() + baseline_every,
            next_prune: Instant::now(),
        })
    }

    /// Baselines and pruning when due (their own transactions, between ticks).
    fn maintain(&mut self, conn: &mut Connection) {
        let now = crate::sys::now_ms();
        if Instant::now() >= self.next_baseline {
            self.next_baseline = Instant::now() + self.baseline_every;
            let started = Instant::now();
            match crate::store::detect::recompute_baselines(conn, self.baseline_days, now) {
                Ok(b) => {
                    log::info!(
                        "detection baselines of {} devices recomputed in {:?}",
                        b.len(),
                        started.elapsed()
                    );
                    self.engine.set_baselines(b);
                }
                Err(e) => log::error!("recomputing detection baselines failed: {e}"),
            }
        }
        if Instant::now() >= self.next_prune {
            self.next_prune = Instant::now() + DETECT_PRUNE_EVERY;
            match crate::store::detect::prune(conn, self.retention_days, now) {
                Ok(0) => {}
                Ok(n) => log::info!("pruned {n} old hits and incidents"),
                Err(e) => log::error!("pruning hits and incidents failed: {e}"),
            }
        }
    }
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
        conn: Connection,
        network: Arc<RwLock<Network>>,
        config: &Config,
    ) -> anyhow::Result<Writer> {
        let mut writer = Writer {
            conn,
            network,
            live: HashMap::new(),
            unconfirmed: HashSet::new(),
            devices: DeviceIds {
                by_ip: HashMap::new(),
                max: config.retention.max_devices,
            },
            hosts: HashMap::new(),
            device_sets: HashMap::new(),
            host_sets: HashMap::new(),
            dns: DnsState::new(&config.dns),
            retention: Retention::new(&config.retention, &config.dns),
            snapshots: Snapshots::from_config(config),
            seq: 0,
            held: None,
            failures: 0,
            storage: Arc::default(),
            detect: None,
            shrunk_at: Instant::now(),
            reserve: Reserve::for_config(config),
            tx_changes: tx_changes(&config.retention),
        };
        writer.reserve.take_if_room();
        writer
            .reload()
            .context("loading live flows from the database")?;
        if config.detect.enabled {
            writer.detect = Some(
                Detection::start(&mut writer.conn, config)
                    .context("loading detection state from the database")?,
            );
        }
        writer.unconfirmed = writer.live.keys().copied().collect();
        writer
            .dns
            .load_answered(&writer.conn)
            .context("loading answered addresses from the database")?;
        Ok(writer)
    }

    /// Rebuilds the in-memory state from what is committed.
    fn reload(&mut self) -> rusqlite::Result<()> {
        self.live.clear();
        self.devices.by_ip.clear();
        self.hosts.clear();
        let mut stmt = self.conn.prepare(
            "SELECT f.ident, f.id, f.bytes_up, f.packets_up, f.bytes_down, f.packets_down,
                    f.status, f.state, f.device_id, f.remote_host_id, f.direction, f.last_seen,
                f.ended_at
             FROM flows f WHERE f.ended_at IS NULL
             UNION ALL
             -- Closed TCP connections whose conntrack entry may still linger.
             SELECT f.ident, f.id, f.bytes_up, f.packets_up, f.bytes_down, f.packets_down,
                f.status, f.state, f.device_id, f.remote_host_id, f.direction, f.last_seen,
                f.ended_at
             FROM flows f WHERE f.ended_at > ?1 AND f.kernel_stop IS NULL
                AND f.state IN ('TIME_WAIT', 'CLOSE')",
        )?;
        // A closed connection's entry lingers at most TIME_WAIT (120 s by default); a
        // longer look-back only reloads rows no DESTROY can still reach — after a flood
        // of short connections, hundreds of thousands of them (seconds and a GB of RAM
        // at start-up, measured by scripts/bench-ulogd).
        let lingering_since = crate::sys::now_ms() - LINGER_MS;
        let rows = stmt.query_map([lingering_since], |r| {
            let state: Option<String> = r.get(7)?;
            let direction: String = r.get(10)?;
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
                    tcp_state: state.as_deref().and_then(tcp_state_from_name),
                    device_id: r.get(8)?,
                    remote_host_id: r.get(9)?,
                    device_is_orig: Direction::parse(&direction) != Some(Direction::Inbound),
                    last_seen: r.get(11)?,
                    ended_at: r.get(12)?,
                },
            ))
        })?;
        for row in rows {
            let (ident, flow) = row?;
            self.live.insert(ident, flow);
        }
        drop(stmt);
        let mut stmt = self
            .conn
            .prepare("SELECT ip, device_id FROM device_addrs")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (ip, id) = row?;
            if let Ok(ip) = ip.parse() {
                self.devices.by_ip.insert(ip, id);
            }
        }
        Ok(())
    }

    fn run(
        &mut self,
        rx: Receiver<Event>,
        queued: Queued,
        tick_tx: watch::Sender<Tick>,
        tick: Duration,
        max_batch: usize,
        stop: Arc<AtomicBool>,
    ) {
        // Wake at least this often to notice `stop` and run retention.
        let wait = tick.min(Duration::from_millis(200));
        // A message taken off the channel that would have taken its transaction past
        // [`MAX_TX_CHANGES`]: the first of the next one. Still counted as queued.
        let mut carried: VecDeque<Event> = VecDeque::new();
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if let Some(held) = &self.held {
                // Storage is failing: take nothing new (it coalesces at its source) and
                // try the held batch again when its pause is over, or once at shutdown.
                let pause = held.retry_at.saturating_duration_since(Instant::now());
                if !pause.is_zero() && !stopping {
                    std::thread::sleep(pause.min(wait));
                    continue;
                }
                // Only after a failure: the rest of a batch whose front just committed
                // follows at once.
                if !stopping && self.failures > 0 {
                    self.make_room();
                }
                if let Some(tick) = self.retry_held() {
                    tick_tx.send_replace(tick);
                    // A long held batch goes in many commits: the budget checks each,
                    // as it checks every tick.
                    if let Err(e) = self.retention.run_if_due(&mut self.conn, &mut self.dns) {
                        log::error!("retention failed: {e:#}");
                    }
                }
                if stopping && let Some(held) = self.held.take() {
                    let queued: usize = carried.iter().map(changes_in).sum::<usize>()
                        + rx.try_iter().map(|e| changes_in(&e)).sum::<usize>();
                    let lost = held.changes + queued;
                    log::error!("stopping with {lost} changes that could not be stored");
                    metrics::counter!("netmon_writer_dropped_changes_total").increment(lost as u64);
                    break;
                }
                continue;
            }
            let first = match carried.pop_front() {
                Some(event) => Some(event),
                None => match rx.recv_timeout(wait) {
                    Ok(event) => Some(event),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut events: Vec<Event> = first.into_iter().collect();
            let mut changes: usize = events.iter().map(changes_in).sum();
            while events.len() < max_batch && changes < self.tx_changes {
                let next = match carried.pop_front() {
                    Some(event) => Ok(event),
                    None => rx.try_recv(),
                };
                match next {
                    Ok(event) if changes + changes_in(&event) > self.tx_changes => {
                        carried.push_front(event);
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
            if changes > self.tx_changes {
                let rest = split_front(&mut events, self.tx_changes);
                split = !rest.is_empty();
                for event in rest.into_iter().rev() {
                    carried.push_front(event);
                }
            }
            queued.taken(&events, split);
            if !events.is_empty() {
                if let Some(tick) = self.apply(events) {
                    tick_tx.send_replace(tick);
                }
            } else if stopping {
                break;
            }
            if let Err(e) = self.retention.run_if_due(&mut self.conn, &mut self.dns) {
                log::error!("retention failed: {e:#}");
            }
            if let Some(d) = &mut self.detect {
                d.maintain(&mut self.conn);
            }
            if let Some(s) = &mut self.snapshots {
                s.run_if_due(&self.conn, self.seq);
            }
            if self.shrunk_at.elapsed() >= SHRINK_EVERY {
                self.shrink_if_sparse();
                if self.held.is_none() {
                    self.reserve.take_if_room();
                }
            }
        }
        if let Some(s) = &mut self.snapshots {
            s.take_if_changed(&self.conn, self.seq);
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            log::warn!("final WAL checkpoint failed: {e}");
        }
    }

    /// Gives back what the in-memory maps grew to in a flood once they are mostly empty
    /// again ([`crate::sys::shrink_map`]).
    fn shrink_if_sparse(&mut self) {
        use crate::sys::{shrink_map, shrink_set};
        self.shrunk_at = Instant::now();
        let mut shrunk = shrink_map(&mut self.live);
        shrunk |= shrink_set(&mut self.unconfirmed);
        shrunk |= shrink_map(&mut self.devices.by_ip);
        shrunk |= shrink_map(&mut self.hosts);
        shrunk |= self.dns.shrink_if_sparse();
        if let Some(d) = &mut self.detect {
            shrunk |= d.engine.shrink_if_sparse();
        }
        if shrunk {
            crate::sys::release_free_heap();
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
            .make_room(&mut self.conn, &mut self.dns, room)
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
        // At most one transaction's worth, and half as much after each further failure.
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
            self.devices.by_ip.clear();
        }
        let started = Instant::now();
        let now = crate::sys::now_ms();
        let n_events = events.len();
        let mut acc = TickAcc::default();
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
        let mut results = Vec::with_capacity(commands.len());
        let mut sightings = Vec::new();
        let mut merges = Vec::new();
        let mut opened = Vec::new();
        // Only non-empty until the first dump completes; restored if this rolls back.
        let unconfirmed = (!self.unconfirmed.is_empty()).then(|| self.unconfirmed.clone());
        let result = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction()?;
            for event in &data {
                match event {
                    Event::Flows(batch) => {
                        apply_flow_batch(
                            &tx,
                            batch,
                            now,
                            &self.network,
                            &mut self.live,
                            &mut self.unconfirmed,
                            &mut self.devices,
                            &mut self.hosts,
                            &mut self.dns,
                            self.detect.as_mut().map(|d| &mut d.engine),
                            &mut acc,
                        )?;
                    }
                    Event::Dns(observations) => {
                        let net = self.network.read().unwrap_or_else(|p| p.into_inner());
                        // An answer proves nothing about its destination (it may be
                        // forged, or sent to a spoofed asker): it names a device that
                        // exists, never creates one.
                        let devices = &mut self.devices;
                        apply_dns(&tx, observations, &mut self.dns, &mut acc.dns, |ip, _| {
                            if net.is_lan(ip) {
                                devices.known(&tx, ip)
                            } else {
                                Ok(None)
                            }
                        })?;
                        if let Some(d) = &mut self.detect {
                            for obs in observations {
                                if let Some(&device) = self.devices.by_ip.get(&obs.client) {
                                    d.engine.dns_observed(device, obs.is_nxdomain(), obs.ts_ms);
                                }
                            }
                        }
                    }
                    Event::System(sample) => {
                        crate::store::system::apply_system(&tx, sample)?;
                    }
                    Event::Enrichment(found) => {
                        crate::store::enrich::apply_enrichment(&tx, found)?;
                        if let Some(d) = &mut self.detect {
                            crate::store::detect::note_enrichment(&mut d.engine, found);
                        }
                    }
                    Event::Drops(counts) => crate::store::drops::apply_drops(&tx, counts)?,
                    // Applied after the rollups: a merge then moves rows already written,
                    // and nothing of this tick still names the merged device.
                    Event::Identity(batch) => sightings.extend(batch.iter().cloned()),
                    Event::Command(..) => {}
                }
            }
            for command in commands {
                let engine = self.detect.as_mut().map(|d| &mut d.engine);
                results.push(apply_command(&tx, command, &mut acc, engine, now));
            }
            if let Some(d) = &mut self.detect {
                let candidates = d.engine.end_tick(now);
                opened = crate::store::detect::record(&tx, &d.policy, candidates)?;
                crate::store::detect::write_rule_uses(&tx, d.engine.take_rule_uses())?;
            }
            write_rollups(&tx, &mut acc, &mut self.device_sets, &mut self.host_sets)?;
            write_dns_rollups(&tx, &mut acc.dns, &self.dns)?;
            if !sightings.is_empty() {
                let net = self.network.read().unwrap_or_else(|p| p.into_inner());
                let applied = crate::store::devices::apply_sightings(
                    &tx,
                    &sightings,
                    &net,
                    &mut self.devices.by_ip,
                    self.devices.max,
                )?;
                acc.tick.devices_changed |= applied.changed;
                merges = applied.merges;
            }
            tx.commit()
        })();
        match result {
            Ok(()) => {
                let elapsed = started.elapsed();
                metrics::histogram!("netmon_writer_tick_seconds").record(elapsed.as_secs_f64());
                metrics::histogram!("netmon_writer_batch_events").record(changes as f64);
                metrics::counter!("netmon_writer_commits_total").increment(1);
                crate::export::prometheus::record_device_traffic(
                    &self.conn,
                    acc.device_totals.iter().map(|(&id, (t, _))| {
                        (id, [t.bytes_up, t.bytes_down, t.packets_up, t.packets_down])
                    }),
                );
                let active = self.active_flows();
                metrics::gauge!("netmon_active_flows").set(active as f64);
                for (reply, result) in reply_to.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
                self.failures = 0;
                self.storage.working();
                for m in merges {
                    self.remap_device(m.from, m.into);
                }
                if let Some(notifier) = self.detect.as_ref().and_then(|d| d.notifier.as_ref()) {
                    for incident in opened {
                        notifier.offer(incident);
                    }
                }
                self.prune_sets();
                self.dns.expire(now);
                self.seq += 1;
                acc.tick.seq = self.seq;
                acc.tick.at_ms = now;
                acc.tick.active_flows = active;
                Some(acc.tick)
            }
            Err(e) => {
                metrics::counter!("netmon_writer_failed_commits_total").increment(1);
                for reply in reply_to {
                    let _ = reply.send(Err(format!("database error: {e}")));
                }
                if let Some(unconfirmed) = unconfirmed {
                    self.unconfirmed = unconfirmed;
                }
                if let Err(e) = self.reload() {
                    log::error!("reloading writer state after a failed commit: {e}");
                }
                if let Some(d) = &mut self.detect {
                    // Rule commands of the batch changed the engine's rules; the table
                    // has the truth.
                    d.engine.rolled_back();
                    match crate::store::detect::load_rules(&self.conn) {
                        Ok(rules) => d.engine.rules = Rules::new(rules),
                        Err(e) => log::error!("reloading detection rules: {e}"),
                    }
                }
                self.dns.rolled_back();
                if is_storage_error(&e) && !data.is_empty() {
                    self.failures = self.failures.saturating_add(1);
                    let pause = RETRY_FIRST
                        .saturating_mul(1 << (self.failures - 1).min(8))
                        .min(RETRY_MAX);
                    log::error!(
                        "writer transaction of {n_events} events failed, rolled back: {e}; \
                         holding its {changes} changes and trying again in {pause:?} \
                         (failure {} in a row)",
                        self.failures
                    );
                    self.storage.failing(&e, changes);
                    self.held = Some(Held {
                        events: data,
                        changes,
                        retry_at: Instant::now() + pause,
                    });
                } else {
                    log::error!(
                        "writer transaction of {n_events} events failed, rolled back: {e}; \
                         its {changes} changes are dropped"
                    );
                    metrics::counter!("netmon_writer_dropped_changes_total")
                        .increment(changes as u64);
                }
                None
            }
        }
    }

    /// Device `from` was merged into `into` (committed): the in-memory state that names
    /// devices follows. (`self.devices` was kept true during the transaction; after a
    /// rollback `reload` rebuilds it.)
    fn remap_device(&mut self, from: i64, into: i64) {
        for f in self.live.values_mut() {
            if f.device_id == Some(from) {
                f.device_id = Some(into);
            }
        }
        crate::store::devices::rekey(&mut self.device_sets, from, into, |sets, more| {
            sets.dsts.extend(more.dsts);
            sets.ports.extend(more.ports);
        });
        for devices in self.host_sets.values_mut() {
            if devices.remove(&from) {
                devices.insert(into);
            }
        }
        self.dns.remap_device(from, into);
        crate::export::prometheus::merge_device_series(from, into);
        if let Some(d) = &mut self.detect {
            d.engine.remap_device(from, into);
        }
    }

    /// Live flows as the user sees them: not ended, not closed.
    fn active_flows(&self) -> u64 {
        self.live.values().filter(|f| f.ended_at.is_none()).count() as u64
    }

    /// Forgets unique-count sets of minutes that can no longer receive data: those
    /// more than two minutes older than the newest minute seen.
    fn prune_sets(&mut self) {
        let newest = self.device_sets.keys().map(|(_, m)| *m).max().unwrap_or(0);
        let keep_from = newest - 2 * MINUTE_MS;
        self.device_sets.retain(|(_, m), _| *m >= keep_from);
        self.host_sets.retain(|(_, m), _| *m >= keep_from);
        if self.hosts.len() > REMOTE_HOST_CACHE_CAP {
            self.hosts.clear();
        }
    }
}

/// What waits in the channel, as the writer's [`WriterHandle`]s count it.
struct Queued {
    messages: Arc<AtomicUsize>,
    flow_changes: Arc<AtomicUsize>,
}

impl Queued {
    /// The writer took `events` off the channel.
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
        Event::Identity(sightings) => sightings.len(),
        Event::Enrichment(found) => found.len(),
        Event::Drops(counts) => counts.len(),
        Event::System(_) => 1,
        Event::Command(..) => 0,
    }
}

/// The storage failed, not the batch: the disk is full or failing, or another process
/// holds the database. Such a batch is worth holding and trying again.
/// Whether a start-up error came from a full disk.
fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<rusqlite::Error>()
            .is_some_and(|e| e.sqlite_error_code() == Some(ErrorCode::DiskFull))
    })
}

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

fn tcp_state_from_name(name: &str) -> Option<u8> {
    (0u8..=9).find(|s| crate::flow::tcp_state_name(*s) == name)
}

fn minute_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

fn hour_of(ms: i64) -> i64 {
    ms - ms.rem_euclid(HOUR_MS)
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

#[allow(clippy::too_many_arguments)]
fn apply_flow_batch(
    tx: &Transaction,
    batch: &FlowBatch,
    now: i64,
    network: &RwLock<Network>,
    live: &mut HashMap<i64, LiveFlow>,
    unconfirmed: &mut HashSet<i64>,
    devices: &mut DeviceIds,
    hosts: &mut HashMap<IpAddr, i64>,
    dns: &mut DnsState,
    mut detect: Option<&mut Detector>,
    acc: &mut TickAcc,
) -> rusqlite::Result<()> {
    let net = network.read().unwrap_or_else(|p| p.into_inner());
    for change in &batch.changed {
        let ident = change.flow.ident();
        unconfirmed.remove(&ident);
        if let Some(known) = live.get_mut(&ident) {
            update_flow(tx, known, change, detect.as_deref_mut(), acc)?;
            if change.ended {
                live.remove(&ident);
            }
        } else {
            let detect = detect.as_deref_mut();
            let flow = insert_flow(tx, &net, change, now, devices, hosts, dns, detect, acc)?;
            if !change.ended {
                live.insert(ident, flow);
            }
        }
    }
    if batch.dump_complete.is_some() && !unconfirmed.is_empty() {
        // Stored as live, absent from a full dump: the flow ended while nobody watched.
        // Its real end is unknown; its last observed activity is the honest bound.
        let mut end = tx.prepare_cached("UPDATE flows SET ended_at = last_seen WHERE id = ?1")?;
        let n = unconfirmed.len();
        for ident in unconfirmed.drain() {
            if let Some(flow) = live.remove(&ident)
                && flow.ended_at.is_none()
            {
                end.execute([flow.row_id])?;
                acc.tick.flows_ended += 1;
            }
        }
        metrics::counter!("netmon_flows_ended_while_down_total").increment(n as u64);
        log::info!("{n} flows stored as live had ended while netmon was not running");
    }
    Ok(())
}

fn update_flow(
    tx: &Transaction,
    known: &mut LiveFlow,
    change: &FlowChange,
    detect: Option<&mut Detector>,
    acc: &mut TickAcc,
) -> rusqlite::Result<()> {
    let flow = &change.flow;
    let delta = flow.counters.since(&known.counters);
    let ends_now = known.ended_at.is_none() && (change.ended || flow.is_closed());
    let changed = !delta.is_zero()
        || flow.status != known.status
        || flow.tcp_state != known.tcp_state
        || ends_now;
    if !changed {
        return Ok(());
    }
    // A counter that went backwards (zeroed by another tool) restarts the baseline.
    let observed = change.observed_ms.max(known.last_seen);
    let mut stmt = tx.prepare_cached(
        "UPDATE flows SET state = ?2, status = ?3, mark = ?4,
                bytes_up = ?5, packets_up = ?6, bytes_down = ?7, packets_down = ?8,
                last_seen = ?9, ended_at = ?10, kernel_stop = ?11
         WHERE id = ?1",
    )?;
    stmt.execute(params![
        known.row_id,
        flow.state_name(),
        flow.status,
        flow.mark,
        flow.counters.orig_bytes as i64,
        flow.counters.orig_packets as i64,
        flow.counters.reply_bytes as i64,
        flow.counters.reply_packets as i64,
        observed,
        known.ended_at.or(ends_now.then_some(observed)),
        flow.kernel_stop_ms,
    ])?;
    add_traffic(
        acc,
        known.device_id,
        known.remote_host_id,
        &delta,
        known.device_is_orig,
        observed,
        false,
    );
    if let Some(d) = detect
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
        known.ended_at = Some(observed);
        acc.tick.flows_ended += 1;
    } else {
        acc.tick.flows_updated += 1;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn insert_flow(
    tx: &Transaction,
    net: &Network,
    change: &FlowChange,
    now: i64,
    devices: &mut DeviceIds,
    hosts: &mut HashMap<IpAddr, i64>,
    dns: &mut DnsState,
    detect: Option<&mut Detector>,
    acc: &mut TickAcc,
) -> rusqlite::Result<LiveFlow> {
    let flow = &change.flow;
    let ended_at = (change.ended || flow.is_closed()).then_some(change.observed_ms);
    let direction = net.classify(&flow.orig, &flow.reply);
    let observed = change.observed_ms;
    let first_seen = flow.kernel_start_ms.unwrap_or(observed.min(now));
    let device = device_side(net, flow, direction);
    // Only a LAN address that started the flow can become a device here: an inbound
    // packet's destination may not exist (a scan of the LAN prefix, a forged flood).
    let device_id = match device {
        Some((ip, true)) => devices.for_originator(tx, ip, observed, &mut acc.tick)?,
        Some((ip, false)) => devices.known(tx, ip)?,
        None => None,
    };
    let device_is_orig = device.is_none_or(|(_, orig)| orig);
    let remote_ip = match direction {
        Direction::Outbound => Some(flow.orig.dst),
        Direction::Inbound => Some(flow.orig.src),
        _ => None,
    };
    let remote_host_id = match remote_ip {
        Some(ip) => Some(remote_host_for(tx, hosts, ip, observed, acc)?),
        None => None,
    };
    // The name behind an outbound flow: what its own client resolved (store::dns).
    let dns_client = match (direction, device) {
        (Direction::Outbound, Some((ip, true))) => Some(ip),
        _ => None,
    };
    let found = match dns_client {
        Some(client) => dns.attribute(tx, client, flow.orig.dst, first_seen)?,
        None => None,
    };
    let icmp = flow.orig.icmp;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO flows (ident, ct_id, family, proto, direction,
             src_ip, src_port, dst_ip, dst_port,
             reply_src_ip, reply_src_port, reply_dst_ip, reply_dst_port,
             icmp_type, icmp_code, icmp_id, state, status, mark, zone,
             bytes_up, packets_up, bytes_down, packets_down,
             first_seen, last_seen, ended_at, kernel_start, kernel_stop,
             device_id, remote_host_id, qname_id, cname_id, dns_match)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                 ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31,
                 ?32, ?33, ?34)",
    )?;
    stmt.execute(params![
        flow.ident(),
        flow.ct_id,
        flow.family,
        flow.proto,
        direction.as_str(),
        flow.orig.src.to_string(),
        flow.orig.sport,
        flow.orig.dst.to_string(),
        flow.orig.dport,
        flow.reply.src.to_string(),
        flow.reply.sport,
        flow.reply.dst.to_string(),
        flow.reply.dport,
        icmp.map(|i| i.0),
        icmp.map(|i| i.1),
        icmp.map(|i| i.2),
        flow.state_name(),
        flow.status,
        flow.mark,
        flow.zone,
        flow.counters.orig_bytes as i64,
        flow.counters.orig_packets as i64,
        flow.counters.reply_bytes as i64,
        flow.counters.reply_packets as i64,
        first_seen,
        observed,
        ended_at,
        flow.kernel_start_ms,
        flow.kernel_stop_ms,
        device_id,
        remote_host_id,
        found.map(|m| m.qname_id),
        found.and_then(|m| m.cname_id),
        found.map(|m| m.confidence),
    ])?;
    let row_id = tx.last_insert_rowid();
    if let Some(client) = dns_client {
        dns.flow_stored(
            &mut acc.dns,
            client,
            flow.orig.dst,
            (row_id, first_seen),
            (device_id, remote_host_id),
            found,
        );
    }
    metrics::counter!("netmon_flows_stored_total").increment(1);
    // Detection scores what the device itself started towards the internet.
    if let (Some(d), Some(_), Some(device_id), Some(remote)) =
        (detect, dns_client, device_id, remote_ip)
    {
        let domain = match found {
            Some(m) => crate::store::detect::flow_name(tx, d, m.qname_id)?,
            None => None,
        };
        let c = &flow.counters;
        d.flow_started(&OutboundFlow {
            row_id,
            device_id,
            remote_host_id,
            remote,
            proto: flow.proto,
            dport: flow.orig.dport,
            at: first_seen,
            domain: domain.as_deref(),
            resolved: found.is_some_and(|m| m.confidence != crate::store::dns::MATCH_OTHER_CLIENT),
            up: c.orig_bytes,
            down: c.reply_bytes,
        });
        if ended_at.is_some() {
            d.flow_updated(row_id, c.orig_bytes, c.reply_bytes, 0, observed, true);
        }
    }
    // Everything the flow carried so far happened since it started; count it now.
    add_traffic(
        acc,
        device_id,
        remote_host_id,
        &flow.counters,
        device_is_orig,
        observed,
        true,
    );
    if let (Some(host), Direction::Outbound, Some(port)) =
        (remote_host_id, direction, flow.orig.dport)
    {
        let e = acc.host_ports.entry((host, flow.proto, port)).or_default();
        e.0 += 1;
        e.1 = e.1.max(observed);
    }
    if let Some(device) = device_id {
        let port = flow.orig.dport.filter(|_| direction == Direction::Outbound);
        acc.contacts
            .push((device, minute_of(observed), remote_host_id, port));
    }
    if ended_at.is_some() {
        acc.tick.flows_ended += 1;
    }
    acc.tick.flows_new += 1;
    Ok(LiveFlow {
        row_id,
        counters: flow.counters,
        status: flow.status,
        tcp_state: flow.tcp_state,
        device_id,
        remote_host_id,
        device_is_orig,
        last_seen: observed,
        ended_at,
    })
}

/// Adds a flow's byte/packet delta to its device's and remote host's buckets.
fn add_traffic(
    acc: &mut TickAcc,
    device_id: Option<i64>,
    remote_host_id: Option<i64>,
    delta: &Counters,
    device_is_orig: bool,
    at: i64,
    new_flow: bool,
) {
    let (minute, hour) = (minute_of(at), hour_of(at));
    let flows_new = u64::from(new_flow);
    // "up" for a remote host is what the LAN sent to it, as for the device.
    let targets = [
        device_id.map(|d| {
            (
                &mut acc.device_minutes,
                &mut acc.device_hours,
                &mut acc.device_totals,
                d,
            )
        }),
        remote_host_id.map(|h| {
            (
                &mut acc.host_minutes,
                &mut acc.host_hours,
                &mut acc.host_totals,
                h,
            )
        }),
    ];
    for (minutes, hours, totals, id) in targets.into_iter().flatten() {
        for t in [
            minutes.entry((id, minute)).or_default(),
            hours.entry((id, hour)).or_default(),
        ] {
            t.add(delta, device_is_orig);
            t.flows_new += flows_new;
        }
        let (t, seen) = totals.entry(id).or_default();
        t.add(delta, device_is_orig);
        t.flows_new += flows_new;
        *seen = (*seen).max(at);
    }
}

/// The row id cached for `ip`, else looked up with `select` (one `?1` = the address as
/// text), else made by `create`; the answer is cached.
fn id_for_ip(
    tx: &Transaction,
    cache: &mut HashMap<IpAddr, i64>,
    ip: IpAddr,
    select: &str,
    create: impl FnOnce(&str) -> rusqlite::Result<i64>,
) -> rusqlite::Result<i64> {
    if let Some(id) = cache.get(&ip) {
        return Ok(*id);
    }
    let text = ip.to_string();
    let existing: Option<i64> = tx
        .prepare_cached(select)?
        .query_row([&text], |r| r.get(0))
        .optional()?;
    let id = match existing {
        Some(id) => id,
        None => create(&text)?,
    };
    cache.insert(ip, id);
    Ok(id)
}

/// LAN address → device id (a cache of `device_addrs`), and how many devices there may
/// be.
struct DeviceIds {
    by_ip: HashMap<IpAddr, i64>,
    /// `[retention] max_devices`.
    max: u64,
}

impl DeviceIds {
    /// The device that owns `ip`, if there is one.
    fn known(&mut self, tx: &Transaction, ip: IpAddr) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = self.by_ip.get(&ip) {
            return Ok(Some(*id));
        }
        let id: Option<i64> = tx
            .prepare_cached("SELECT device_id FROM device_addrs WHERE ip = ?1")?
            .query_row([ip.to_string()], |r| r.get(0))
            .optional()?;
        if let Some(id) = id {
            self.by_ip.insert(ip, id);
        }
        Ok(id)
    }

    /// The device of a LAN address that started a flow, created on first sight unless
    /// there are `max` devices already (then counted and left without one).
    fn for_originator(
        &mut self,
        tx: &Transaction,
        ip: IpAddr,
        at: i64,
        tick: &mut Tick,
    ) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = self.known(tx, ip)? {
            return Ok(Some(id));
        }
        if !crate::store::devices::room_for_one_more(tx, self.max)? {
            return Ok(None);
        }
        let text = ip.to_string();
        tx.prepare_cached("INSERT INTO devices (ip, first_seen, last_seen) VALUES (?1, ?2, ?2)")?
            .execute(params![text, at])?;
        let id = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO device_addrs (ip, device_id, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
        )?
        .execute(params![text, id, at])?;
        crate::store::dns::claim_recent_queries(tx, &text, id, at)?;
        tick.devices_changed = true;
        self.by_ip.insert(ip, id);
        Ok(Some(id))
    }
}

/// The remote host row for an internet address, created on first sight.
fn remote_host_for(
    tx: &Transaction,
    hosts: &mut HashMap<IpAddr, i64>,
    ip: IpAddr,
    at: i64,
    acc: &mut TickAcc,
) -> rusqlite::Result<i64> {
    let select = "SELECT id FROM remote_hosts WHERE ip = ?1";
    id_for_ip(tx, hosts, ip, select, |text| {
        tx.prepare_cached(
            "INSERT INTO remote_hosts (ip, first_seen, last_seen) VALUES (?1, ?2, ?2)",
        )?
        .execute(params![text, at])?;
        acc.tick.remote_hosts_changed = true;
        Ok(tx.last_insert_rowid())
    })
}

fn apply_command(
    tx: &Transaction,
    command: Command,
    acc: &mut TickAcc,
    detect: Option<&mut Detector>,
    now: i64,
) -> Result<CommandReply, String> {
    match command {
        Command::RenameDevice { device_id, name } => {
            let name = name.trim();
            if name.chars().count() > 64 {
                return Err("a device name has at most 64 characters".into());
            }
            let name = (!name.is_empty()).then_some(name);
            let n = tx
                .prepare_cached("UPDATE devices SET name = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![device_id, name]))
                .map_err(|e| format!("database error: {e}"))?;
            if n == 0 {
                return Err(format!("no device with id {device_id}"));
            }
            acc.tick.devices_changed = true;
            Ok(CommandReply::Done)
        }
        Command::SetDeviceNotes { device_id, notes } => {
            let notes = notes.trim();
            if notes.chars().count() > MAX_NOTES_CHARS {
                return Err(format!(
                    "device notes have at most {MAX_NOTES_CHARS} characters"
                ));
            }
            let notes = (!notes.is_empty()).then_some(notes);
            let n = tx
                .prepare_cached("UPDATE devices SET notes = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![device_id, notes]))
                .map_err(|e| format!("database error: {e}"))?;
            if n == 0 {
                return Err(format!("no device with id {device_id}"));
            }
            acc.tick.devices_changed = true;
            Ok(CommandReply::Done)
        }
        Command::CreateSearch { .. }
        | Command::RenameSearch { .. }
        | Command::PinSearch { .. }
        | Command::DeleteSearch { .. } => crate::store::saved::apply_command(tx, command, now),
        // Incidents and rules (`store::detect`); rules also when detection is off, so
        // they are in place when it is turned on.
        other => crate::store::detect::apply_command(tx, other, detect, now),
    }
}

/// Longest device notes accepted (characters): a few lines about where the device is
/// and whose it is.
pub const MAX_NOTES_CHARS: usize = 1000;

/// Writes the tick's accumulated rollups: one upsert per (entity, bucket), never one
/// per flow.
fn write_rollups(
    tx: &Transaction,
    acc: &mut TickAcc,
    device_sets: &mut HashMap<(i64, i64), MinuteSets>,
    host_sets: &mut HashMap<(i64, i64), HashSet<i64>>,
) -> rusqlite::Result<()> {
    // True unions per minute: the sets live across ticks for the open minutes; the row
    // takes the larger of what it has and the set size, so a restart mid-minute never
    // lowers a count already stored.
    let mut uniques: HashMap<(i64, i64), (usize, usize)> = HashMap::new();
    let mut host_uniques: HashMap<(i64, i64), usize> = HashMap::new();
    for (device, minute, host, port) in acc.contacts.drain(..) {
        let sets = device_sets.entry((device, minute)).or_default();
        if let Some(h) = host {
            sets.dsts.insert(h);
            let devs = host_sets.entry((h, minute)).or_default();
            devs.insert(device);
            host_uniques.insert((h, minute), devs.len());
        }
        if let Some(p) = port {
            sets.ports.insert(p);
        }
        uniques.insert((device, minute), (sets.dsts.len(), sets.ports.len()));
    }

    let mut stmt = tx.prepare_cached(
        "INSERT INTO device_minutes (device_id, minute, bytes_up, bytes_down, packets_up,
             packets_down, flows_new, unique_dsts, unique_ports)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (device_id, minute) DO UPDATE SET
             bytes_up = bytes_up + excluded.bytes_up,
             bytes_down = bytes_down + excluded.bytes_down,
             packets_up = packets_up + excluded.packets_up,
             packets_down = packets_down + excluded.packets_down,
             flows_new = flows_new + excluded.flows_new,
             unique_dsts = max(unique_dsts, excluded.unique_dsts),
             unique_ports = max(unique_ports, excluded.unique_ports)",
    )?;
    for (&(device, minute), t) in &acc.device_minutes {
        let (dsts, ports) = uniques.remove(&(device, minute)).unwrap_or_default();
        stmt.execute(params![
            device,
            minute,
            t.bytes_up as i64,
            t.bytes_down as i64,
            t.packets_up as i64,
            t.packets_down as i64,
            t.flows_new as i64,
            dsts as i64,
            ports as i64
        ])?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO remote_host_minutes (remote_host_id, minute, bytes_up, bytes_down,
             packets_up, packets_down, flows_new, unique_devices)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (remote_host_id, minute) DO UPDATE SET
             bytes_up = bytes_up + excluded.bytes_up,
             bytes_down = bytes_down + excluded.bytes_down,
             packets_up = packets_up + excluded.packets_up,
             packets_down = packets_down + excluded.packets_down,
             flows_new = flows_new + excluded.flows_new,
             unique_devices = max(unique_devices, excluded.unique_devices)",
    )?;
    for (&(host, minute), t) in &acc.host_minutes {
        let devs = host_uniques.remove(&(host, minute)).unwrap_or_default();
        stmt.execute(params![
            host,
            minute,
            t.bytes_up as i64,
            t.bytes_down as i64,
            t.packets_up as i64,
            t.packets_down as i64,
            t.flows_new as i64,
            devs as i64
        ])?;
    }
    for (table, key, map) in [
        ("device_hours", "device_id", &acc.device_hours),
        ("remote_host_hours", "remote_host_id", &acc.host_hours),
    ] {
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {table} ({key}, hour, bytes_up, bytes_down, packets_up, packets_down, flows_new)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT ({key}, hour) DO UPDATE SET
                 bytes_up = bytes_up + excluded.bytes_up,
                 bytes_down = bytes_down + excluded.bytes_down,
                 packets_up = packets_up + excluded.packets_up,
                 packets_down = packets_down + excluded.packets_down,
                 flows_new = flows_new + excluded.flows_new"
        ))?;
        for (&(id, hour), t) in map {
            stmt.execute(params![
                id,
                hour,
                t.bytes_up as i64,
                t.bytes_down as i64,
                t.packets_up as i64,
                t.packets_down as i64,
                t.flows_new as i64
            ])?;
        }
    }
    for (table, map) in [
        ("devices", &acc.device_totals),
        ("remote_hosts", &acc.host_totals),
    ] {
        let mut stmt = tx.prepare_cached(&format!(
            "UPDATE {table} SET bytes_up = bytes_up + ?2, bytes_down = bytes_down + ?3,
                 flows = flows + ?4, last_seen = max(last_seen, ?5)
             WHERE id = ?1"
        ))?;
        for (&id, (t, seen)) in map {
            stmt.execute(params![
                id,
                t.bytes_up as i64,
                t.bytes_down as i64,
                t.flows_new as i64,
                seen
            ])?;
        }
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO remote_host_ports (remote_host_id, proto, port, first_seen, last_seen, flows)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)
         ON CONFLICT (remote_host_id, proto, port) DO UPDATE SET
             last_seen = max(last_seen, excluded.last_seen), flows = flows + excluded.flows",
    )?;
    for (&(host, proto, port), &(flows, seen)) in &acc.host_ports {
        stmt.execute(params![host, proto, port, seen, flows as i64])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DumpComplete;
    use crate::event::MAX_QUEUED_FLOW_CHANGES;
    use crate::flow::Tuple;
    use tokio::sync::oneshot;

    fn network() -> Arc<RwLock<Network>> {
        Arc::new(RwLock::new(Network::new(
            vec![
                "10.77.0.0/24".parse().unwrap(),
                "fd77::/64".parse().unwrap(),
            ],
            vec!["10.77.0.1".parse().unwrap(), "203.0.113.1".parse().unwrap()],
        )))
    }

    pub(crate) fn tcp_flow(ct_id: u32, src: &str, sport: u16, dst: &str, dport: u16) -> CtFlow {
        let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let nat: IpAddr = if src.is_ipv4() {
            "203.0.113.1".parse().unwrap()
        } else {
            src
        };
        CtFlow {
            ct_id,
            family: if src.is_ipv4() { 4 } else { 6 },
            proto: PROTO_TCP_NUM,
            orig: Tuple {
                src,
                dst,
                sport: Some(sport),
                dport: Some(dport),
                icmp: None,
            },
            reply: Tuple {
                src: dst,
                dst: nat,
                sport: Some(dport),
                dport: Some(sport),
                icmp: None,
            },
            status: 0x8,
            tcp_state: Some(3),
            mark: 0,
            zone: 0,
            counters: Counters::default(),
            kernel_start_ms: None,
            kernel_stop_ms: None,
        }
    }
    const PROTO_TCP_NUM: u8 = 6;

    fn change(flow: &CtFlow, at: i64, ended: bool) -> FlowChange {
        FlowChange {
            flow: flow.clone(),
            observed_ms: at,
            ended,
        }
    }

    fn batch(changes: Vec<FlowChange>) -> Event {
        Event::Flows(FlowBatch {
            changed: changes,
            dump_complete: None,
        })
    }

    fn writer(path: &Path) -> Writer {
        let config = Config {
            db_path: path.to_owned(),
            ..Config::default()
        };
        Writer::new(schema::open_rw(path).unwrap(), network(), &config).unwrap()
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    use std::path::Path;

    #[test]
    fn deltas_land_in_the_minute_they_were_observed() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;
        let mut f = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
        f.counters = Counters {
            orig_bytes: 100,
            orig_packets: 2,
            reply_bytes: 1000,
            reply_packets: 2,
        };
        w.apply(vec![batch(vec![change(&f, t0 + 1000, false)])])
            .unwrap();
        f.counters = Counters {
            orig_bytes: 300,
            orig_packets: 5,
            reply_bytes: 61_000,
            reply_packets: 50,
        };
        w.apply(vec![batch(vec![change(&f, t0 + MINUTE_MS + 5, false)])])
            .unwrap();
        f.counters.reply_bytes = 121_000;
        let tick = w
            .apply(vec![batch(vec![change(&f, t0 + 2 * MINUTE_MS + 5, true)])])
            .unwrap();
        assert_eq!(tick.flows_ended, 1);
        assert_eq!(tick.active_flows, 0);

        let c = &w.conn;
        let minutes: Vec<(i64, i64, i64)> = c
            .prepare("SELECT minute, bytes_up, bytes_down FROM device_minutes ORDER BY minute")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            minutes,
            vec![
                (t0, 100, 1000),
                (t0 + MINUTE_MS, 200, 60_000),
                (t0 + 2 * MINUTE_MS, 0, 60_000)
            ]
        );
        assert_eq!(
            count(c, "SELECT sum(bytes_down) FROM remote_host_minutes"),
            121_000
        );
        assert_eq!(count(c, "SELECT bytes_down FROM flows"), 121_000);
        assert_eq!(
            count(c, "SELECT ended_at FROM flows"),
            t0 + 2 * MINUTE_MS + 5
        );
        assert_eq!(count(c, "SELECT direction = 'outbound' FROM flows"), 1);
        assert_eq!(count(c, "SELECT bytes_down FROM devices"), 121_000);
        assert_eq!(
            count(c, "SELECT flows FROM remote_host_ports WHERE port = 80"),
            1
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn restart_resumes_live_flows_without_duplicates_or_double_counting() {
        let dir = schema::tests::tempdir();
        let path = dir.join("t.db");
        let now = crate::sys::now_ms();
        let mut f = tcp_flow(7, "10.77.0.10", 40001, "198.51.100.80", 443);
        let gone = tcp_flow(8, "10.77.0.10", 40002, "198.51.100.81", 443);
        f.counters.reply_bytes = 5000;
        {
            let mut w = writer(&path);
            w.apply(vec![batch(vec![
                change(&f, now, false),
                change(&gone, now, false),
            ])])
            .unwrap();
        }
        // "kill -9": the new writer reloads both as live, then the collector's start-up
        // dump reports only `f`, with grown counters.
        let mut w = writer(&path);
        assert_eq!(w.live.len(), 2);
        f.counters.reply_bytes = 8000;
        let ev = Event::Flows(FlowBatch {
            changed: vec![change(&f, now + 10, false)],
            dump_complete: Some(DumpComplete {
                started_ms: now + 5,
            }),
        });
        let tick = w.apply(vec![ev]).unwrap();
        assert_eq!(tick.flows_new, 0);
        assert_eq!(tick.flows_ended, 1);
        let c = &w.conn;
        assert_eq!(count(c, "SELECT count(*) FROM flows"), 2);
        assert_eq!(
            count(c, "SELECT count(*) FROM flows WHERE ended_at IS NULL"),
            1
        );
        assert_eq!(count(c, "SELECT sum(bytes_down) FROM device_minutes"), 8000);
        assert_eq!(
            count(c, "SELECT bytes_down FROM flows WHERE ct_id = 7"),
            8000
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reused_ident_after_end_is_a_new_lifetime() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let f = tcp_flow(9, "10.77.0.10", 40003, "198.51.100.80", 80);
        w.apply(vec![batch(vec![change(&f, 1000, false)])]).unwrap();
        w.apply(vec![batch(vec![change(&f, 2000, true)])]).unwrap();
        w.apply(vec![batch(vec![change(&f, 3000, false)])]).unwrap();
        assert_eq!(count(&w.conn, "SELECT count(*) FROM flows"), 2);
        assert_eq!(
            count(&w.conn, "SELECT count(*) FROM flows WHERE ended_at IS NULL"),
            1
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn router_local_and_lan_flows_create_no_remote_host() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let mut dns = tcp_flow(10, "10.77.0.10", 40004, "10.77.0.1", 53);
        dns.reply.src = "10.77.0.1".parse().unwrap();
        dns.reply.dst = "10.77.0.10".parse().unwrap();
        let mut lan = tcp_flow(11, "10.77.0.10", 40005, "10.77.0.11", 22);
        lan.reply.dst = "10.77.0.10".parse().unwrap();
        w.apply(vec![batch(vec![
            change(&dns, 1000, false),
            change(&lan, 1000, false),
        ])])
        .unwrap();
        let c = &w.conn;
        assert_eq!(count(c, "SELECT count(*) FROM remote_hosts"), 0);
        assert_eq!(
            count(
                c,
                "SELECT count(*) FROM flows WHERE direction = 'router-local'"
            ),
            1
        );
        assert_eq!(
            count(c, "SELECT count(*) FROM flows WHERE direction = 'lan'"),
            1
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unique_counts_are_unions_across_ticks() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;
        let a = tcp_flow(20, "10.77.0.10", 40010, "198.51.100.1", 443);
        let b = tcp_flow(21, "10.77.0.10", 40011, "198.51.100.2", 443);
        let c2 = tcp_flow(22, "10.77.0.10", 40012, "198.51.100.1", 8443);
        w.apply(vec![batch(vec![change(&a, t0 + 1, false)])])
            .unwrap();
        w.apply(vec![batch(vec![change(&b, t0 + 2, false)])])
            .unwrap();
        w.apply(vec![batch(vec![change(&c2, t0 + 3, false)])])
            .unwrap();
        let (dsts, ports, flows): (i64, i64, i64) = w
            .conn
            .query_row(
                "SELECT unique_dsts, unique_ports, flows_new FROM device_minutes",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((dsts, ports, flows), (2, 2, 3));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rename_command_is_applied_and_answered() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let f = tcp_flow(30, "10.77.0.10", 40020, "198.51.100.80", 80);
        w.apply(vec![batch(vec![change(&f, 1000, false)])]).unwrap();
        let (tx, mut rx) = oneshot::channel();
        let cmd = Command::RenameDevice {
            device_id: 1,
            name: " <b>laptop</b> ".into(),
        };
        let tick = w.apply(vec![Event::Command(cmd, tx)]).unwrap();
        assert!(tick.devices_changed);
        assert_eq!(rx.try_recv().unwrap(), Ok(CommandReply::Done));
        let name: String = w
            .conn
            .query_row("SELECT name FROM devices", [], |r| r.get(0))
            .unwrap();
        assert_eq!(name, "<b>laptop</b>");
        let (tx, mut rx) = oneshot::channel();
        w.apply(vec![Event::Command(
            Command::RenameDevice {
                device_id: 99,
                name: "x".into(),
            },
            tx,
        )]);
        assert!(rx.try_recv().unwrap().is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn closed_tcp_connection_ends_at_close_and_lingering_entry_is_not_a_new_row() {
        let dir = schema::tests::tempdir();
        let path = dir.join("t.db");
        let now = crate::sys::now_ms();
        let mut f = tcp_flow(40, "10.77.0.10", 40030, "198.51.100.80", 80);
        {
            let mut w = writer(&path);
            w.apply(vec![batch(vec![change(&f, now, false)])]).unwrap();
            f.tcp_state = Some(7); // TIME_WAIT, from an UPDATE event without counters
            let tick = w
                .apply(vec![batch(vec![change(&f, now + 100, false)])])
                .unwrap();
            assert_eq!((tick.flows_ended, tick.active_flows), (1, 0));
            f.counters.reply_bytes = 9000; // the next dump brings the final counters
            w.apply(vec![batch(vec![change(&f, now + 600, false)])])
                .unwrap();
            let (ended, bytes): (i64, i64) = w
                .conn
                .query_row("SELECT ended_at, bytes_down FROM flows", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .unwrap();
            assert_eq!((ended, bytes), (now + 100, 9000));
        }
        // Restart while the entry lingers: the dump reports it again, still one row.
        let mut w = writer(&path);
        w.apply(vec![batch(vec![change(&f, now + 1000, false)])])
            .unwrap();
        w.apply(vec![batch(vec![change(&f, now + 2000, true)])])
            .unwrap();
        assert_eq!(count(&w.conn, "SELECT count(*) FROM flows"), 1);
        assert_eq!(count(&w.conn, "SELECT ended_at FROM flows"), now + 100);
        assert_eq!(
            count(&w.conn, "SELECT sum(bytes_down) FROM device_minutes"),
            9000
        );
        assert!(w.live.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    // --- DNS attribution (store::dns) -----------------------------------------------

    fn answer(client: &str, name: &str, ip: &str, ttl: u32, at: i64) -> Event {
        use crate::event::{AnswerData, DnsAnswer, DnsObservation, DnsSource};
        Event::Dns(vec![DnsObservation {
            ts_ms: at,
            client: client.parse().unwrap(),
            qname: name.into(),
            qtype: 1,
            rcode: Some(0),
            answers: vec![DnsAnswer {
                name: name.into(),
                ttl: Some(ttl),
                data: AnswerData::Addr(ip.parse().unwrap()),
            }],
            source: DnsSource::Packet,
        }])
    }

    fn flow_name(conn: &Connection, sport: u16) -> (Option<String>, Option<i64>) {
        conn.query_row(
            "SELECT n.name, f.dns_match FROM flows f LEFT JOIN dns_names n ON n.id = f.qname_id
             WHERE f.src_port = ?1",
            [sport],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
    }

    #[test]
    fn flows_get_their_own_clients_name_with_a_confidence() {
        let dir = crate::store::schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let t = crate::sys::now_ms() - 600_000;
        w.apply(vec![
            answer("10.77.0.10", "a.test", "198.51.100.7", 60, t),
            answer("10.77.0.11", "b.test", "198.51.100.7", 60, t + 1_000),
            answer("10.77.0.10", "old.test", "198.51.100.8", 60, t),
        ])
        .unwrap();
        let f1 = tcp_flow(1, "10.77.0.10", 40001, "198.51.100.7", 443);
        let f2 = tcp_flow(2, "10.77.0.11", 40002, "198.51.100.7", 443);
        let f3 = tcp_flow(3, "10.77.0.12", 40003, "198.51.100.7", 443);
        // Starts 5 min after an answer with TTL 60 s + 60 s slack: expired.
        let f4 = tcp_flow(4, "10.77.0.10", 40004, "198.51.100.8", 443);
        let f5 = tcp_flow(5, "10.77.0.10", 40005, "198.51.100.9", 443);
        w.apply(vec![batch(vec![
            change(&f1, t + 2_000, false),
            change(&f2, t + 2_000, false),
            change(&f3, t + 2_000, false),
            change(&f4, t + 300_000, false),
            change(&f5, t + 2_000, false),
        ])])
        .unwrap();
        assert_eq!(flow_name(&w.conn, 40001), (Some("a.test".into()), Some(1)));
        assert_eq!(flow_name(&w.conn, 40002), (Some("b.test".into()), Some(1)));
        assert_eq!(flow_name(&w.conn, 40003), (Some("b.test".into()), Some(3)));
        assert_eq!(
            flow_name(&w.conn, 40004),
            (Some("old.test".into()), Some(2))
        );
        assert_eq!(flow_name(&w.conn, 40005), (None, None));
        assert_eq!(
            count(
                &w.conn,
                "SELECT count(*) FROM remote_host_domains d JOIN dns_names n ON n.id = d.qname_id
                 WHERE n.name IN ('a.test', 'b.test')"
            ),
            2
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_answer_arriving_after_its_flow_still_names_it() {
        let dir = crate::store::schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let t = crate::sys::now_ms() - 10_000;
        let f = tcp_flow(1, "10.77.0.10", 40001, "198.51.100.7", 443);
        let g = tcp_flow(2, "10.77.0.10", 40002, "198.51.100.7", 443);
        // g started before the answer: the answer cannot explain it.
        w.apply(vec![batch(vec![change(&g, t - 5_000, false)])])
            .unwrap();
        w.apply(vec![batch(vec![change(&f, t + 20, false)])])
            .unwrap();
        assert_eq!(flow_name(&w.conn, 40001), (None, None));
        w.apply(vec![answer(
            "10.77.0.10",
            "late.test",
            "198.51.100.7",
            60,
            t,
        )])
        .unwrap();
        assert_eq!(
            flow_name(&w.conn, 40001),
            (Some("late.test".into()), Some(1))
        );
        assert_eq!(flow_name(&w.conn, 40002), (None, None));
        assert_eq!(
            count(&w.conn, "SELECT sum(queries) FROM dns_device_minutes"),
            1
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn device_notes_are_set_cleared_and_bounded() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let f = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
        w.apply(vec![batch(vec![change(&f, 1_700_000_000_000, false)])])
            .unwrap();
        let id = count(&w.conn, "SELECT id FROM devices");
        let run = |w: &mut Writer, notes: String| {
            let (tx, mut rx) = oneshot::channel();
            let cmd = Command::SetDeviceNotes {
                device_id: id,
                notes,
            };
            w.apply(vec![Event::Command(cmd, tx)]).unwrap();
            rx.try_recv().unwrap()
        };
        assert_eq!(
            run(&mut w, "  in the hall\nblue case ".into()),
            Ok(CommandReply::Done)
        );
        let notes: Option<String> = w
            .conn
            .query_row("SELECT notes FROM devices", [], |r| r.get(0))
            .unwrap();
        assert_eq!(notes.as_deref(), Some("in the hall\nblue case"));
        assert!(run(&mut w, "x".repeat(MAX_NOTES_CHARS + 1)).is_err());
        assert_eq!(run(&mut w, String::new()), Ok(CommandReply::Done));
        assert_eq!(count(&w.conn, "SELECT notes IS NULL FROM devices"), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn sighting(ip: &str, mac: u8, hostname: Option<&str>, at: i64) -> Event {
        use crate::event::{Sighting, SightingSource};
        Event::Identity(vec![Sighting {
            ip: ip.parse().unwrap(),
            mac: [0x3c, 0x22, 0xfb, 0, 0, mac],
            hostname: hostname.map(str::to_owned),
            source: SightingSource::Dhcp,
            at_ms: at,
        }])
    }

    #[test]
    fn answers_and_inbound_packets_make_no_device_and_devices_are_bounded() {
        let dir = schema::tests::tempdir();
        let config = Config {
            db_path: dir.join("t.db"),
            retention: crate::config::Retention {
                max_devices: 10,
                ..Default::default()
            },
            ..Config::default()
        };
        let mut w = Writer::new(
            schema::open_rw(&config.db_path).unwrap(),
            network(),
            &config,
        )
        .unwrap();
        let t0 = 1_700_000_000_000;
        let devices = |w: &Writer| count(&w.conn, "SELECT count(*) FROM devices");
        // An answer to an address nobody has seen is stored without a device.
        w.apply(vec![answer(
            "fd77::99",
            "shop.example.test",
            "203.0.113.84",
            300,
            t0,
        )])
        .unwrap();
        assert_eq!(devices(&w), 0);
        // An inbound flow to an unknown LAN address: no device either.
        let mut inbound = tcp_flow(1, "198.51.100.7", 53, "fd77::98", 2222);
        inbound.reply.dst = inbound.orig.src;
        w.apply(vec![batch(vec![change(&inbound, t0 + 10, false)])])
            .unwrap();
        assert_eq!(devices(&w), 0);
        assert_eq!(
            count(
                &w.conn,
                "SELECT count(*) FROM flows WHERE device_id IS NULL"
            ),
            1
        );
        // The address starts a flow of its own: now it is a device, and claims the
        // queries it made a moment before.
        let out = tcp_flow(2, "fd77::99", 40000, "2001:db8:77::84", 443);
        w.apply(vec![batch(vec![change(&out, t0 + 20, false)])])
            .unwrap();
        assert_eq!(devices(&w), 1);
        assert_eq!(
            count(
                &w.conn,
                "SELECT count(*) FROM dns_queries WHERE device_id IS NOT NULL"
            ),
            1
        );
        // A sighting (neighbour table, lease) makes a device too; past the cap neither
        // path does.
        for i in 0..20u8 {
            let ip = format!("10.77.0.{}", 100 + i);
            w.apply(vec![sighting(&ip, i, None, t0 + 30)]).unwrap();
            let f = tcp_flow(
                100 + u32::from(i),
                &format!("fd77::{}", 200 + i),
                40000,
                "2001:db8:77::84",
                443,
            );
            w.apply(vec![batch(vec![change(&f, t0 + 40, false)])])
                .unwrap();
        }
        assert_eq!(devices(&w), 10);
    }

    #[test]
    fn idle_address_only_devices_are_pruned_in_bulk() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let t0 = 1_700_000_000_000;
        let flows: Vec<FlowChange> = (1..=50u16)
            .map(|i| {
                let src = format!("fd77::{i:x}");
                let f = tcp_flow(u32::from(i), &src, 40000, "2001:db8:77::84", 443);
                change(&f, t0, true)
            })
            .collect();
        w.apply(vec![batch(flows)]).unwrap();
        w.apply(vec![sighting("10.77.0.5", 1, Some("laptop"), t0 + 1)])
            .unwrap();
        w.conn
            .execute("UPDATE devices SET name = 'tv' WHERE ip = 'fd77::2'", [])
            .unwrap();
        // Retention took every flow but one device's.
        w.conn
            .execute(
                "DELETE FROM flows WHERE device_id <> (SELECT id FROM devices WHERE ip = 'fd77::3')",
                [],
            )
            .unwrap();
        let tx = w.conn.transaction().unwrap();
        let pruned = crate::store::devices::prune_idle(&tx, 1000).unwrap();
        tx.commit().unwrap();
        assert_eq!(pruned, 48);
        let left: Vec<String> = w
            .conn
            .prepare("SELECT ip FROM devices ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        // The named one, the one with a flow, and the one with a MAC (also the newest).
        assert_eq!(left, ["fd77::2", "fd77::3", "10.77.0.5"]);
        assert_eq!(count(&w.conn, "SELECT count(*) FROM device_addrs"), 3);
        // The pruned devices' rollups went with them (the MAC's device had no traffic).
        assert_eq!(
            count(
                &w.conn,
                "SELECT count(DISTINCT device_id) FROM device_minutes"
            ),
            2
        );
    }

    #[test]
    fn devices_are_keyed_by_mac_and_address_only_history_merges_in() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let t0 = 1_700_000_000_000 - 1_700_000_000_000 % MINUTE_MS;
        // Two addresses, no MAC known yet: two address-only devices with traffic.
        let mut a = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
        a.counters.orig_bytes = 100;
        let mut b = tcp_flow(2, "10.77.0.11", 40001, "198.51.100.80", 80);
        b.counters.orig_bytes = 50;
        w.apply(vec![batch(vec![
            change(&a, t0 + 1000, false),
            change(&b, t0 + 1000, false),
        ])])
        .unwrap();
        w.conn
            .execute(
                "UPDATE devices SET name = 'kitchen' WHERE ip = '10.77.0.11'",
                [],
            )
            .unwrap();
        assert_eq!(count(&w.conn, "SELECT count(*) FROM devices"), 2);

        // The lease names .10's MAC: that device takes it (no new device).
        let tick = w
            .apply(vec![sighting("10.77.0.10", 1, Some("laptop"), t0 + 2000)])
            .unwrap();
        assert!(tick.devices_changed);
        assert_eq!(count(&w.conn, "SELECT count(*) FROM devices"), 2);
        let laptop = count(
            &w.conn,
            "SELECT id FROM devices WHERE mac = '3c:22:fb:00:00:01'",
        );
        assert_eq!(
            count(
                &w.conn,
                &format!("SELECT hostname = 'laptop' FROM devices WHERE id = {laptop}")
            ),
            1
        );
        // Detection rows of .11's device: a hit, an incident, a device-scoped rule.
        let kitchen = count(&w.conn, "SELECT id FROM devices WHERE ip = '10.77.0.11'");
        w.conn
            .execute_batch(&format!(
                "INSERT INTO hits (ts, last_ts, device_id, score, codes, reasons, fingerprint)
                   VALUES (1, 1, {kitchen}, 60, 'NEW_DST', '[]', 'h');
                 INSERT INTO incidents (fingerprint, device_id, codes, title, first_seen, last_seen, max_score)
                   VALUES ('i', {kitchen}, 'NEW_DST', 't', 1, 1, 60);
                 INSERT INTO rules (action, device_id, port_lo, port_hi, created_at)
                   VALUES ('allow', {kitchen}, 6881, 6889, 1);"
            ))
            .unwrap();
        // Its address changes to .11 (same MAC): .11's address-only device merges in —
        // its flow, rollups, totals, the owner's name and its detection rows — and is gone.
        w.apply(vec![sighting("10.77.0.11", 1, None, t0 + 3000)])
            .unwrap();
        let c = &w.conn;
        assert_eq!(count(c, "SELECT count(*) FROM devices"), 1);
        for table in ["hits", "incidents", "rules"] {
            assert_eq!(
                count(c, &format!("SELECT device_id FROM {table}")),
                laptop,
                "{table} follow the merge"
            );
        }
        assert_eq!(
            count(
                c,
                &format!("SELECT count(*) FROM flows WHERE device_id = {laptop}")
            ),
            2
        );
        assert_eq!(
            count(
                c,
                &format!("SELECT bytes_up FROM device_minutes WHERE device_id = {laptop}")
            ),
            150
        );
        assert_eq!(count(c, "SELECT bytes_up FROM devices"), 150);
        assert_eq!(count(c, "SELECT name = 'kitchen' FROM devices"), 1);
        assert_eq!(
            count(
                c,
                &format!("SELECT count(*) FROM device_addrs WHERE device_id = {laptop}")
            ),
            2
        );
        // Later counters of the merged device's live flow land on the survivor.
        b.counters.orig_bytes = 80;
        w.apply(vec![batch(vec![change(&b, t0 + 4000, false)])])
            .unwrap();
        assert_eq!(
            count(
                &w.conn,
                &format!("SELECT bytes_up FROM device_minutes WHERE device_id = {laptop}")
            ),
            180
        );
        // .11 is handed to another MAC: the address moves, its past flows stay.
        w.apply(vec![sighting("10.77.0.11", 2, Some("phone"), t0 + 5000)])
            .unwrap();
        let c = &w.conn;
        let phone = count(c, "SELECT id FROM devices WHERE mac = '3c:22:fb:00:00:02'");
        assert_ne!(phone, laptop);
        assert_eq!(
            count(
                c,
                "SELECT device_id FROM device_addrs WHERE ip = '10.77.0.11'"
            ),
            phone
        );
        assert_eq!(
            count(
                c,
                &format!("SELECT count(*) FROM flows WHERE device_id = {laptop}")
            ),
            2
        );
        let mut n = tcp_flow(3, "10.77.0.11", 40002, "198.51.100.80", 80);
        n.counters.orig_bytes = 7;
        w.apply(vec![batch(vec![change(&n, t0 + 6000, false)])])
            .unwrap();
        assert_eq!(
            count(
                &w.conn,
                &format!("SELECT count(*) FROM flows WHERE device_id = {phone}")
            ),
            1
        );
        // Sightings outside the LAN (the WAN gateway) are not devices.
        w.apply(vec![sighting("203.0.113.80", 9, None, t0 + 7000)])
            .unwrap();
        assert_eq!(count(&w.conn, "SELECT count(*) FROM devices"), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    // --- failed commits ----------------------------------------------------------------

    /// Caps the database at its current size: the next page SQLite allocates fails with
    /// `SQLITE_FULL`, as on a full disk (`PRAGMA max_page_count`).
    fn fill_disk(w: &Writer) {
        let pages = count(&w.conn, "PRAGMA page_count");
        count(&w.conn, &format!("PRAGMA max_page_count = {pages}"));
    }

    fn free_disk(w: &Writer) {
        count(&w.conn, "PRAGMA max_page_count = 1000000000");
    }

    #[test]
    fn a_full_disk_holds_the_batch_and_a_later_retry_stores_it_once() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let t0 = crate::sys::now_ms();
        let mut long = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 443);
        long.counters.reply_bytes = 1000;
        w.apply(vec![batch(vec![change(&long, t0, false)])])
            .unwrap();

        fill_disk(&w);
        // Enough new rows to need new pages: the long flow's update, a flow that ended,
        // and 400 new ones.
        long.counters.reply_bytes = 5000;
        let ended = tcp_flow(2, "10.77.0.10", 40001, "198.51.100.81", 80);
        let mut changes = vec![
            change(&long, t0 + 100, false),
            change(&ended, t0 + 100, true),
        ];
        for i in 0..400 {
            let f = tcp_flow(100 + i, "10.77.0.10", 41000 + i as u16, "198.51.100.82", 80);
            changes.push(change(&f, t0 + 100, false));
        }
        let (tx, mut reply) = oneshot::channel();
        let rename = Command::RenameDevice {
            device_id: 1,
            name: "laptop".into(),
        };
        assert!(
            w.apply(vec![batch(changes), Event::Command(rename, tx)])
                .is_none()
        );
        // The command is answered with the error, the data is held, and it shows.
        assert!(reply.try_recv().unwrap().is_err());
        assert_eq!(w.held.as_ref().map(|h| h.changes), Some(402));
        let failure = w.storage.failure().expect("the failure is visible");
        assert_eq!(failure.held_changes, 402);
        assert!(failure.error.contains("full"), "{failure:?}");
        assert_eq!(count(&w.conn, "SELECT count(*) FROM flows"), 1);
        assert_eq!(w.live[&long.ident()].counters.reply_bytes, 1000);

        // Still full: the retry fails, the batch stays held, the pause grows.
        let first_retry = w.held.as_ref().unwrap().retry_at;
        assert!(w.retry_held().is_none());
        assert!(w.held.as_ref().unwrap().retry_at > first_retry);
        assert_eq!(w.failures, 2);

        // Room again: one retry stores everything once, with the right deltas.
        free_disk(&w);
        let tick = w.retry_held().expect("the retry commits");
        assert_eq!((tick.flows_new, tick.flows_ended), (401, 1));
        assert!(w.held.is_none() && w.storage.failure().is_none());
        let c = &w.conn;
        assert_eq!(count(c, "SELECT count(*) FROM flows"), 402);
        assert_eq!(
            count(c, "SELECT count(*) FROM flows WHERE ended_at IS NOT NULL"),
            1
        );
        assert_eq!(
            count(c, "SELECT bytes_down FROM flows WHERE ct_id = 1"),
            5000
        );
        assert_eq!(count(c, "SELECT sum(bytes_down) FROM device_minutes"), 5000);
        assert_eq!(count(c, "SELECT flows FROM devices"), 402);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The channel is bounded by the flow changes it holds, not only by messages: past
    /// MAX_QUEUED_FLOW_CHANGES a flow message comes back (the collector coalesces it),
    /// other events still go, and what the writer takes makes room again.
    #[test]
    fn a_held_front_is_split_in_order_with_the_dump_marker_last() {
        let flows = |from: u32, n: u32| {
            let changes = (from..from + n)
                .map(|i| {
                    change(
                        &tcp_flow(i, "10.77.0.10", i as u16, "198.51.100.80", 443),
                        1,
                        false,
                    )
                })
                .collect();
            batch(changes)
        };
        let mut events = vec![flows(1, 10), flows(11, 10)];
        let rest = split_front(&mut events, 15);
        let sizes = |e: &[Event]| e.iter().map(changes_in).collect::<Vec<_>>();
        assert_eq!((sizes(&events), sizes(&rest)), (vec![10, 5], vec![5]));
        let mut one = vec![flows(1, 8)];
        let rest = split_front(&mut one, 3);
        assert_eq!((sizes(&one), sizes(&rest)), (vec![3], vec![5]));
        assert!(split_front(&mut one, 3).is_empty());
    }

    /// A disk full of netmon's own rows: the held batch gets room from the storage
    /// budget before its next attempt, with nothing freed from outside.
    #[test]
    fn a_held_batch_gets_room_from_the_budget_on_a_disk_full_of_old_rows() {
        let dir = schema::tests::tempdir();
        let path = dir.join("t.db");
        let mut config = Config {
            db_path: path.clone(),
            ..Config::default()
        };
        config.retention.max_db_mb = 4;
        config.retention.max_flows_per_device = 1_000_000;
        let mut w = Writer::new(schema::open_rw(&path).unwrap(), network(), &config).unwrap();
        let t0 = crate::sys::now_ms() - 3_600_000;
        // ≈ 3.5 MiB of ended flows: past the budget's high mark.
        for b in 0..6u32 {
            let changes = (0..2_000u32)
                .map(|i| {
                    let n = b * 2_000 + i;
                    let f = tcp_flow(
                        n + 1,
                        "10.77.0.10",
                        (n % 60_000) as u16 + 1,
                        "198.51.100.80",
                        443,
                    );
                    change(&f, t0 + i64::from(n), true)
                })
                .collect();
            w.apply(vec![batch(changes)]).expect("commit");
        }
        let before = count(&w.conn, "SELECT count(*) FROM flows");
        fill_disk(&w);
        let changes = (0..400u32)
            .map(|i| {
                let f = tcp_flow(
                    100_000 + i,
                    "10.77.0.10",
                    2_000 + i as u16,
                    "198.51.100.81",
                    80,
                );
                change(&f, t0 + 3_000_000, false)
            })
            .collect();
        assert!(w.apply(vec![batch(changes)]).is_none());
        assert!(w.held.is_some() && w.storage.failure().is_some());

        // The file may not grow (`max_page_count`): only pruning makes room.
        w.make_room();
        let tick = w.retry_held().expect("the retry after making room commits");
        assert_eq!(tick.flows_new, 400);
        assert!(w.held.is_none() && w.storage.failure().is_none());
        let after = count(&w.conn, "SELECT count(*) FROM flows");
        assert!(after < before, "nothing pruned: {before} → {after} flows");
        assert_eq!(
            count(&w.conn, "SELECT count(*) FROM flows WHERE ct_id >= 100000"),
            400
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn queued_flow_changes_are_bounded() {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        let handle = WriterHandle::new(tx, Arc::default());
        let f = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
        let full = || batch(vec![change(&f, 1, false); MAX_QUEUED_FLOW_CHANGES / 2]);
        assert!(handle.try_send(full()).is_ok());
        assert!(handle.try_send(full()).is_ok());
        assert!(handle.try_send(batch(vec![change(&f, 1, false)])).is_err());
        assert!(
            handle.try_send(Event::Drops(Vec::new())).is_ok(),
            "not a flow message"
        );
        let queued = Queued {
            messages: handle.depth.clone(),
            flow_changes: handle.queued_flows.clone(),
        };
        let taken: Vec<Event> = vec![rx.recv().unwrap()];
        queued.taken(&taken, false);
        assert_eq!(handle.depth(), 2);
        assert!(handle.try_send(batch(vec![change(&f, 1, false)])).is_ok());
        // A message larger than the bound still goes when nothing waits.
        let (tx, _rx) = std::sync::mpsc::sync_channel(4);
        let handle = WriterHandle::new(tx, Arc::default());
        let huge = batch(vec![change(&f, 1, false); MAX_QUEUED_FLOW_CHANGES + 1]);
        assert!(handle.try_send(huge).is_ok());
    }

    #[test]
    fn a_batch_failing_for_another_reason_is_dropped_not_held() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        w.conn
            .execute_batch("DROP TABLE remote_host_ports")
            .unwrap();
        let f = tcp_flow(1, "10.77.0.10", 40000, "198.51.100.80", 80);
        assert!(
            w.apply(vec![batch(vec![change(&f, 1_700_000_000_000, false)])])
                .is_none()
        );
        assert!(w.held.is_none(), "a bad batch must never stall the writer");
        assert!(w.storage.failure().is_none());
        assert!(w.live.is_empty(), "state follows the rollback");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn commands_are_refused_at_once_while_writes_fail() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        let handle = WriterHandle::new(tx, Arc::default());
        let full = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        );
        handle.storage.failing(&full, 7);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let rename = Command::RenameDevice {
            device_id: 1,
            name: "x".into(),
        };
        let answer = rt.block_on(handle.command(rename)).unwrap_err();
        assert!(answer.contains("not accepting writes"), "{answer}");
        assert_eq!(handle.write_failure().map(|f| f.held_changes), Some(7));
        handle.storage.working();
        assert!(handle.write_failure().is_none());
    }

    /// A port scan through the writer: one device-level hit and one incident, repeats
    /// fold into them; a suppress rule with `reevaluate` acknowledges the open incident;
    /// ack, mute and clear work on the tables.
    #[test]
    fn a_scan_is_one_incident_and_rules_and_commands_apply() {
        let dir = schema::tests::tempdir();
        let mut w = writer(&dir.join("t.db"));
        let now = crate::sys::now_ms();
        let scan = |w: &mut Writer, from: u16| {
            let changes = (from..from + 40)
                .map(|i| {
                    let dst = format!("203.0.113.{}", 100 + i % 25);
                    let f = tcp_flow(u32::from(i) + 1, "10.77.0.10", 30000 + i, &dst, 1000 + i);
                    change(&f, now, true)
                })
                .collect();
            w.apply(vec![batch(changes)]).unwrap();
        };
        let command = |w: &mut Writer, cmd: Command| {
            let (tx, mut rx) = oneshot::channel();
            w.apply(vec![Event::Command(cmd, tx)]).unwrap();
            rx.try_recv().unwrap()
        };
        scan(&mut w, 0);
        let (fp, codes): (String, String) = w
            .conn
            .query_row("SELECT fingerprint, codes FROM hits", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(
            (fp.as_str(), codes.as_str()),
            ("1|device|PORT_SCAN_LIKE", "PORT_SCAN_LIKE")
        );
        scan(&mut w, 40);
        assert_eq!(count(&w.conn, "SELECT count(*) FROM incidents"), 1);
        assert_eq!(count(&w.conn, "SELECT count FROM incidents"), 2);
        assert_eq!(count(&w.conn, "SELECT count FROM hits"), 2);
        // The learning device's scan flows alone (RARE_PORT + DIRECT_IP) are no hits.
        assert_eq!(count(&w.conn, "SELECT count(*) FROM hits"), 1);

        let rule = crate::detect::rules::RuleSpec {
            action: crate::detect::rules::Action::Suppress,
            code: Some(crate::detect::Code::PortScanLike),
            device_id: Some(1),
            ..Default::default()
        };
        let reply = command(
            &mut w,
            Command::SaveRule {
                id: None,
                rule: Box::new(rule),
                reevaluate: true,
            },
        );
        assert_eq!(reply, Ok(CommandReply::Id(1)));
        let notes: String = w
            .conn
            .query_row(
                "SELECT notes FROM incidents WHERE acked_at IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(notes.contains("rule #1"), "{notes}");
        assert_eq!(
            count(&w.conn, "SELECT count(*) FROM hits WHERE acked_at IS NULL"),
            0
        );
        scan(&mut w, 80);
        assert_eq!(
            count(&w.conn, "SELECT count FROM hits"),
            2,
            "suppressed: no repeat"
        );
        assert_eq!(count(&w.conn, "SELECT matched FROM rules"), 1);

        let reply = command(
            &mut w,
            Command::MuteIncident {
                incident_id: 1,
                until_ms: now + 3_600_000,
            },
        );
        assert_eq!(reply, Ok(CommandReply::Done));
        assert_eq!(
            count(&w.conn, "SELECT muted_until FROM incidents"),
            now + 3_600_000
        );
        let reply = command(&mut w, Command::AckIncident { incident_id: 9 });
        assert!(reply.is_err());
        let reply = command(&mut w, Command::ClearAcknowledged);
        assert_eq!(reply, Ok(CommandReply::Done));
        assert_eq!(count(&w.conn, "SELECT count(*) FROM incidents"), 0);
        assert_eq!(count(&w.conn, "SELECT count(*) FROM hits"), 0);
        let reply = command(&mut w, Command::DeleteRule { rule_id: 1 });
        assert_eq!(reply, Ok(CommandReply::Done));
        scan(&mut w, 120);
        assert_eq!(
            count(&w.conn, "SELECT count(*) FROM incidents"),
            1,
            "rule gone"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
