//! Flood-proof storage: a total size budget and per-device / per-domain row
//! caps, so one flooding client or domain can never fill the disk, push other devices'
//! history out, or stall the writer. (Pi-hole's database grew to 1.6 GB from one
//! flooding domain and took DNS down.)
//!
//! The writer runs a [`Budget`] pass between ticks (through [`super::retention`]) every
//! [`CHECK_EVERY`], right after any tick that took the database over its high-water
//! mark (checked after every tick), right after the next tick while a pass ran out of
//! time with work left, and before each new attempt of a batch the writer holds because
//! storage failed ([`Budget::make_room`]: the disk is full, often of netmon's own file
//! and log, and only pruning gives it room back). A pass, in order:
//!
//! 1. **Budget** — the hard bound. `max_db_mb` covers the main file, its write-ahead
//!    log and the storage reserve: a quarter is the WAL's (`journal_size_limit` at half
//!    of that, `wal_autocheckpoint` at a quarter; the rest is room for one big
//!    transaction), [`Limits::reserve_bytes`] the reserve's, the rest the file's. Bytes in use come from the header (`page_count` −
//!    `freelist_count`: no table scan), which is why the check can run after every
//!    tick. Above [`HIGH_PERCENT`] of the file's share raw rows go until usage is below
//!    [`LOW_PERCENT`] (hysteresis: a pass does real work, not one row per tick); both
//!    marks come down while ticks are big or the WAL has grown past its share
//!    ([`marks`]), so file plus WAL stay within the budget under a flood too. Rows
//!    always go from the **heaviest holder** — the device with the most raw bytes, and
//!    of its rows the kind (flows or queries) it holds most of. Trimming the largest
//!    first is max-min fair, down to a floor: a holder with less than half its equal
//!    share of the file (file share / 2 / holders) is never trimmed for size, so when
//!    what fills the file is not raw rows (a flood's names and rollups), a quiet device
//!    keeps its history rather than going to zero with the flooder. With no holder
//!    above the floor, idle address-only devices go, then minute rollups older than an
//!    hour, oldest minute first (the hour rollups keep their totals: that is the
//!    downsampling); past that, a warning.
//! 2. **Caps.** A device (rows without one — the router's own flows, inbound flows to
//!    it, DNS from non-LAN clients — count as one more "device") holding more than
//!    `max_flows_per_device` flow rows or `max_dns_queries_per_device` DNS query rows, a
//!    registrable domain with more than `max_dns_queries_per_domain` query rows, or a
//!    remote host linked to more than [`NAMES_PER_HOST`] names loses **its own oldest**
//!    rows (a query goes with its answers). The flow cap counts and prunes ended flows
//!    only: live ones are bounded by the kernel's table and `max_tracked_flows`.
//! 3. **Names.** `dns_names` rows nothing refers to any more are collected, a window of
//!    ids at a time ([`DnsState::collect_names`]), once something was pruned.
//! 4. Freed pages are reused by new rows; only when the file has outgrown its share are
//!    they handed back (`incremental_vacuum`, bounded: its page moves go through the WAL).
//!
//! **Evict, not refuse.** Past a cap netmon keeps the newest rows and drops that
//! holder's oldest, rather than refusing new ones: the owner investigating a flood sees
//! what it does *now*; the insert path stays unchanged (no per-row decision, no
//! in-memory counts to keep true across rollbacks); and nothing becomes invisible —
//! every flow and query was counted into the rollups (`device_minutes`, `device_hours`,
//! `dns_device_minutes`, device totals) when it was stored, and a pruned live flow's
//! later traffic still reaches them (the writer keeps the flow in memory and its row
//! update simply finds no row). The price is writing rows that are later deleted,
//! bounded like all other pruning. What was pruned is counted in
//! `netmon_storage_pruned_rows_total{reason, table}` and, persisted in `meta`, shown on
//! the router page.
//!
//! **Bounded work.** Deletes run in transactions of at most [`CHUNK`] rows by primary
//! key, and a pass stops at [`PASS_TIME`] (the names collector gets at least one window
//! per pass, so a flood cannot starve it). A pass that ran out of time is followed by
//! another right after the next tick, which may take as long as the writer spent on
//! that tick (up to [`MAX_PASS_TIME`]): deleting a row costs about what inserting it
//! did, so under a sustained flood pruning gets up to half the writer's time and keeps
//! pace. Ingest slows instead of the disk filling; the channel then fills and the
//! collectors coalesce or drop at their source, counted as always.
//!
//! **Live flows stay.** A burst the kernel's conntrack table holds (50 000 live UDP flows
//! from one client) must not cost the owner the rows of connections that are still open:
//! neither a cap nor the budget's marks prune a live flow. Only when the main file is
//! one tick's growth from the most it may take (`max_db_mb` less the WAL at its recent
//! peak, at least its share, and the reserve: [`Marks::file`]), with no ended row left
//! to give, do live rows go, oldest first, counted like every other pruned row. How many
//! live flows fit is then a matter of bytes per flow.
//!
//! Pruning never deletes a table's newest row, so SQLite (which numbers a new row
//! `max(rowid) + 1`) never hands out again an id the writer still remembers (live
//! flows, flows waiting for a late DNS answer, cached names).
//!
//! (Long: the size budget, the per-holder flood caps and the pruning order they share, ≈ 1
//! 050 lines of code; the rest are tests.)

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};

use crate::config;
use crate::store::dns::DnsState;

/// How often the budget and the caps are checked when the last pass finished its work.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Longest one pass may run (checked between chunks) when the last one finished its work:
/// the writer's ticks go on between passes.
pub const PASS_TIME: Duration = Duration::from_millis(200);
/// Longest one pass may run while catching up (see [`Budget::run_if_due`]).
pub const MAX_PASS_TIME: Duration = Duration::from_secs(1);
/// Rows deleted per transaction.
pub const CHUNK: u64 = 1_000;
/// Names looked at per collector window (≈ 6 index probes each).
const NAMES_WINDOW: i64 = 10_000;
/// Most names one remote host keeps links to (`remote_host_domains`). A host reached
/// under more names is a wildcard or a flood; the most recently used names stay.
pub const NAMES_PER_HOST: u64 = 1_000;
/// Above this share of the file's budget, pruning starts…
pub const HIGH_PERCENT: u64 = 80;
/// …and goes on until usage is below this share.
pub const LOW_PERCENT: u64 = 65;
/// Rough bytes per row including its index entries, to rank holders only
/// (`cargo bench --bench ingest`: 282–292 B of database per flow; `--bench dns`: 315 B
/// per query with its answer).
const FLOW_ROW_BYTES: u64 = 290;
const QUERY_ROW_BYTES: u64 = 315;
/// Minute rollups younger than this are never pruned for size.
const RECENT_ROLLUPS_MS: i64 = 3_600_000;
/// Most free pages handed back to the file system per pass. Incremental vacuum moves
/// pages from the end of the file into free slots, and those moves go through the WAL:
/// a small bound keeps a pass from making the WAL spike it is meant to make room for.
const VACUUM_PAGES: i64 = 256;
const META_KEY: &str = "storage_pruned";
const LOG_EVERY: Duration = Duration::from_secs(60);

/// The budget and caps, from `[retention]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Main file plus WAL.
    pub budget_bytes: u64,
    pub flows_per_device: u64,
    pub queries_per_device: u64,
    pub queries_per_domain: u64,
}

impl Limits {
    pub fn from_config(c: &config::Retention) -> Limits {
        Limits {
            budget_bytes: c.max_db_mb << 20,
            flows_per_device: c.max_flows_per_device,
            queries_per_device: c.max_dns_queries_per_device,
            queries_per_domain: c.max_dns_queries_per_domain,
        }
    }

    /// The write-ahead log's share: a quarter. It holds the commits since the last
    /// checkpoint; SQLite checkpoints at a quarter of it and truncates the file back to
    /// half of it. The rest is room for one big transaction: a tick of a random-name
    /// flood dirties pages all over the `dns_names` index, and its whole transaction
    /// sits in the WAL until the checkpoint after it (measured: 4–5 MiB per tick at
    /// 6 000 names and 6 000 flows per second, `tests/lab_flood.rs`).
    pub fn wal_bytes(&self) -> u64 {
        self.budget_bytes / 4
    }

    /// The storage reserve's share ([`crate::store::reserve`]): what a checkpoint may
    /// need the file to grow by on a full disk — half the WAL's share, from 512 KiB to
    /// 2 MiB, and never more than an eighth of the budget.
    pub fn reserve_bytes(&self) -> u64 {
        (self.wal_bytes() / 2)
            .clamp(512 << 10, 2 << 20)
            .min(self.budget_bytes / 8)
    }

    /// The main file's share: what the WAL and the reserve leave.
    pub fn file_bytes(&self) -> u64 {
        self.budget_bytes - self.wal_bytes() - self.reserve_bytes()
    }

    pub fn high_water(&self) -> u64 {
        self.file_bytes() / 100 * HIGH_PERCENT
    }

    pub fn low_water(&self) -> u64 {
        self.file_bytes() / 100 * LOW_PERCENT
    }
}

/// Where pruning starts and stops (bytes in use), and the most the main file may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    pub high: u64,
    pub low: u64,
    pub file: u64,
}

/// The marks for the moment: the configured ones ([`Limits::high_water`],
/// [`Limits::low_water`]), lowered so that the WAL's recent peak and twice the most one
/// tick added lately still fit in the budget — a big tick's transaction goes to the WAL
/// whole, whatever `journal_size_limit` says, and the file grows by what a tick adds
/// before the next check sees it. Never below a quarter of the file's share: one burst
/// must not empty the database.
pub fn marks(l: &Limits, wal_peak: u64, growth: u64) -> Marks {
    let file = l
        .budget_bytes
        .saturating_sub(wal_peak.max(l.wal_bytes()) + l.reserve_bytes());
    let high = l
        .high_water()
        .min(file.saturating_sub(2 * growth))
        .max(l.file_bytes() / 4);
    // Hysteresis below a lowered high mark, but never a low mark so far under it that a
    // pass prunes every holder to nothing: at most the configured ratio below.
    let low = high
        .saturating_sub(l.high_water() - l.low_water())
        .max(high / HIGH_PERCENT * LOW_PERCENT);
    Marks { high, low, file }
}

/// Which rows a holder gives up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Flows,
    Queries,
}

/// A device's raw rows (key `None`: rows without a device).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub flows: u64,
    pub queries: u64,
}

impl Holding {
    pub fn bytes(&self) -> u64 {
        self.flows * FLOW_ROW_BYTES + self.queries * QUERY_ROW_BYTES
    }
}

/// Who gives up rows next under the budget: the holder with the most bytes, and of its
/// rows the kind it holds more bytes of, among holders of more than `floor` bytes. Ties
/// go to the lower device id, so the choice is stable. `None` when nobody is above it.
pub fn heaviest_above(
    holdings: &HashMap<Option<i64>, Holding>,
    floor: u64,
) -> Option<(Option<i64>, Kind)> {
    let (device, h) = holdings
        .iter()
        .filter(|(_, h)| h.flows + h.queries > 0 && h.bytes() > floor)
        .max_by(|(da, a), (db, b)| a.bytes().cmp(&b.bytes()).then(db.cmp(da)))?;
    let kind = if h.flows * FLOW_ROW_BYTES >= h.queries * QUERY_ROW_BYTES {
        Kind::Flows
    } else {
        Kind::Queries
    };
    let kind = match kind {
        Kind::Flows if h.flows == 0 => Kind::Queries,
        Kind::Queries if h.queries == 0 => Kind::Flows,
        k => k,
    };
    Some((*device, kind))
}

/// Rows over a cap, at most one chunk: what to delete next.
pub fn next_chunk(count: u64, cap: u64) -> u64 {
    count.saturating_sub(cap).min(CHUNK)
}

/// What pruning removed, by reason; kept across restarts in `meta` for the router page.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Pruned {
    pub device_cap_flows: u64,
    pub device_cap_queries: u64,
    pub domain_cap_queries: u64,
    pub host_names: u64,
    pub budget_flows: u64,
    pub budget_queries: u64,
    pub budget_rollups: u64,
    /// Devices known only by an address that nothing refers to any more
    /// ([`crate::store::devices::prune_idle`]).
    pub budget_devices: u64,
    /// `dns_names` rows nothing referred to any more (housekeeping, not a flood).
    pub names: u64,
    /// Unix ms of the latest pass that pruned for a cap or the budget.
    pub last_ms: i64,
}

impl Pruned {
    /// Rows pruned because of a cap or the budget.
    pub fn flood_rows(&self) -> u64 {
        self.device_cap_flows
            + self.device_cap_queries
            + self.domain_cap_queries
            + self.host_names
            + self.budget_flows
            + self.budget_queries
            + self.budget_rollups
            + self.budget_devices
    }

    fn add(&mut self, o: &Pruned) {
        self.device_cap_flows += o.device_cap_flows;
        self.device_cap_queries += o.device_cap_queries;
        self.domain_cap_queries += o.domain_cap_queries;
        self.host_names += o.host_names;
        self.budget_flows += o.budget_flows;
        self.budget_queries += o.budget_queries;
        self.budget_rollups += o.budget_rollups;
        self.budget_devices += o.budget_devices;
        self.names += o.names;
        self.last_ms = self.last_ms.max(o.last_ms);
    }

    fn record_metrics(&self) {
        for (reason, table, n) in [
            ("device_cap", "flows", self.device_cap_flows),
            ("device_cap", "dns_queries", self.device_cap_queries),
            ("domain_cap", "dns_queries", self.domain_cap_queries),
            ("host_names", "remote_host_domains", self.host_names),
            ("budget", "flows", self.budget_flows),
            ("budget", "dns_queries", self.budget_queries),
            ("budget", "rollups", self.budget_rollups),
            ("budget", "devices", self.budget_devices),
            ("unreferenced", "dns_names", self.names),
        ] {
            if n > 0 {
                metrics::counter!("netmon_storage_pruned_rows_total",
                    "reason" => reason, "table" => table)
                .increment(n);
            }
        }
    }
}

/// The budget's state in the writer.
pub struct Budget {
    limits: Limits,
    next: Instant,
    /// The WAL pragmas are set on the writer's connection at the first pass.
    configured: bool,
    /// Since the names collector last completed a sweep, something it could free was
    /// pruned (here or by the age limits).
    names_dirty: bool,
    /// Where the collector's next window starts (a `dns_names` id; 0 = from the start).
    names_after: i64,
    /// Totals since the database was created (loaded from `meta`).
    totals: Option<Pruned>,
    /// When the previous pass ended, if it ran out of time with work left.
    behind_since: Option<Instant>,
    /// Bytes in use at the previous check, and the most they grew between two checks
    /// lately (decaying by 1/64 per check): what one tick may add (see [`marks`]).
    last_used: u64,
    growth: u64,
    /// When pruning was last logged.
    logged: Option<Instant>,
    /// The largest WAL file seen lately, decaying by 1/256 per check (a minute or so):
    /// once a flood has shown how big its ticks are, the file keeps room for them.
    wal_peak: u64,
    /// The budget is recorded in `meta` for the router page (retried each pass: on a
    /// full disk the first attempt fails).
    recorded: bool,
    /// Set during [`Budget::make_room`]: freed pages all go back to the file system.
    making_room: bool,
    /// While making room on a full disk: prune until this many bytes are in use, whatever
    /// the marks say (the file system, not the budget, is what is short).
    must_reach: Option<u64>,
    /// Device rows were deleted since the writer last asked ([`Budget::take_devices_pruned`]).
    devices_pruned: bool,
}

impl Budget {
    pub fn new(c: &config::Retention) -> Budget {
        Budget {
            limits: Limits::from_config(c),
            next: Instant::now(),
            configured: false,
            // A database restored from a snapshot may hold names nothing refers to.
            names_dirty: true,
            names_after: 0,
            totals: None,
            behind_since: None,
            logged: None,
            last_used: 0,
            growth: 0,
            wal_peak: 0,
            recorded: false,
            making_room: false,
            must_reach: None,
            devices_pruned: false,
        }
    }

    /// Commits fail for a storage reason (the disk is full) and a batch of about `room`
    /// bytes waits to be written. On a full file system nothing may grow: neither the
    /// log (a write past its allocation fails) nor the file (a checkpoint that copies a
    /// page past its end fails). So the room must be made *inside* the two files:
    ///
    /// - `wal_checkpoint(RESTART)` first: once every frame is copied to the file, the next
    ///   write starts the log over inside its existing allocation (`sqlite3WalCheckpoint`,
    ///   wal.c), so the pass's deletes fit;
    /// - a pass that prunes until at least `room` bytes of the file are free pages, below
    ///   the marks if need be: the held batch's rows then reuse those pages, and its
    ///   checkpoint copies them in place;
    /// - `wal_checkpoint(RESTART)` again, and no page handed back and no log truncated:
    ///   what the file system got back, another program could take.
    ///
    /// Deletes go in transactions of [`CHUNK`] rows, so no step needs much room at once.
    pub fn make_room(&mut self, conn: &mut Connection, dns: &mut DnsState, room: u64) {
        let before = (
            used_bytes(conn).unwrap_or(0),
            file_bytes(conn),
            wal_bytes(conn),
        );
        let pruned_before = self.totals.map_or(0, |t| t.flood_rows());
        self.growth = self.growth.max(room);
        self.making_room = true;
        let restarted = checkpoint(conn, "RESTART", WAL_TRUNCATE_WAIT);
        let (pages, free, size) = page_counts(conn).unwrap_or((0, 0, 0));
        let in_file_free = (free * size) as u64;
        if in_file_free < room {
            let used = (pages * size) as u64 - in_file_free;
            self.must_reach = Some(used.saturating_sub(room - in_file_free));
        }
        self.next = Instant::now();
        self.run_if_due(conn, dns);
        self.making_room = false;
        self.must_reach = None;
        let restarted_after = checkpoint(conn, "RESTART", WAL_TRUNCATE_WAIT);
        let after = (
            used_bytes(conn).unwrap_or(0),
            file_bytes(conn),
            wal_bytes(conn),
        );
        log::info!(
            "storage full: making room for {} KiB: pruned {} rows; in use {} → {} KiB, file \
             {} → {} KiB, WAL {} → {} KiB (checkpoints: before {restarted}, after \
             {restarted_after})",
            room >> 10,
            self.totals.map_or(0, |t| t.flood_rows()) - pruned_before,
            before.0 >> 10,
            after.0 >> 10,
            before.1 >> 10,
            after.1 >> 10,
            before.2 >> 10,
            after.2 >> 10,
        );
    }

    /// Whether device rows were deleted since the last call: the writer then forgets
    /// its cached address → device ids (they are read again from `device_addrs`).
    pub fn take_devices_pruned(&mut self) -> bool {
        std::mem::take(&mut self.devices_pruned)
    }

    /// Rows were deleted elsewhere (the age limits): names may have lost their last user.
    pub fn rows_deleted(&mut self) {
        self.names_dirty = true;
    }

    /// One pass when due (see the module docs). Errors are logged, never fatal: the
    /// next pass tries again.
    pub fn run_if_due(&mut self, conn: &mut Connection, dns: &mut DnsState) {
        let now = Instant::now();
        // Between passes only the size is checked, after every tick: header reads and
        // one stat of the WAL.
        let used = used_bytes(conn).unwrap_or(self.last_used);
        self.growth = used
            .saturating_sub(self.last_used)
            .max(self.growth - self.growth / 64);
        // The peak is what the WAL reached, measured before it is truncated: the marks
        // must leave room for the next spike like it.
        let wal = wal_bytes(conn);
        self.wal_peak = wal.max(self.wal_peak - self.wal_peak / 256);
        if !self.making_room {
            truncate_wal_if_over(conn, &self.limits, wal);
        }
        self.last_used = used;
        if now < self.next && used <= self.marks().high {
            return;
        }
        let started = Instant::now();
        // Catching up, a pass may take as long as the writer spent on everything else
        // since the previous one (half its time), up to MAX_PASS_TIME.
        let time = match self.behind_since {
            Some(end) => started.duration_since(end).clamp(PASS_TIME, MAX_PASS_TIME),
            None => PASS_TIME,
        };
        let behind = match self.pass(conn, dns, crate::time::now_ms(), started + time) {
            Ok(behind) => behind,
            Err(e) => {
                log::error!("storage budget pass failed: {e}");
                false
            }
        };
        metrics::histogram!("netmon_storage_pass_seconds").record(started.elapsed().as_secs_f64());
        // The pass's deletes went to the WAL too (kept while making room: see make_room).
        if !self.making_room {
            truncate_wal_if_over(conn, &self.limits, wal_bytes(conn));
        }
        let end = Instant::now();
        self.last_used = used_bytes(conn).unwrap_or(self.last_used);
        self.behind_since = behind.then_some(end);
        self.next = if behind { end } else { end + CHECK_EVERY };
    }

    /// One pass; `Ok(true)` when it stopped at `deadline` with work left.
    pub fn pass(
        &mut self,
        conn: &mut Connection,
        dns: &mut DnsState,
        now_ms: i64,
        deadline: Instant,
    ) -> rusqlite::Result<bool> {
        if !self.configured {
            self.configure(conn)?;
        }
        if !self.recorded {
            // Not fatal: on a full disk this waits until the pass below made room.
            match record_budget(conn, self.limits.budget_bytes) {
                Ok(()) => self.recorded = true,
                Err(e) => log::debug!("storage budget: recording the budget in meta: {e}"),
            }
        }
        let mut p = Pruned::default();
        // The budget first: it is the hard bound, and it prunes the heaviest holder —
        // which, in a flood, is the one over its cap anyway.
        let mut behind = self.enforce_budget(conn, &mut p, now_ms, deadline)?;
        if !behind {
            behind = self.enforce_caps(conn, &mut p, deadline)?;
        }
        if p.flood_rows() > 0 {
            self.names_dirty = true;
            p.last_ms = now_ms;
        }
        // At least one window per pass, so a flood of names cannot outrun the collector.
        let mut first = true;
        while self.names_dirty && (first || Instant::now() < deadline) {
            first = false;
            let (n, next) = dns.collect_names(conn, self.names_after, NAMES_WINDOW)?;
            p.names += n;
            self.names_after = next;
            if next == 0 {
                self.names_dirty = false;
            }
        }
        behind |= self.names_dirty;
        self.give_back_pages(conn)?;
        let used = used_bytes(conn)?;
        metrics::gauge!("netmon_db_used_bytes").set(used as f64);
        metrics::gauge!("netmon_db_budget_bytes").set(self.limits.budget_bytes as f64);
        if p != Pruned::default() {
            p.record_metrics();
            self.save(conn, &p)?;
            // A flood prunes every pass: one line a minute is enough.
            if p.flood_rows() > 0 && self.logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                self.logged = Some(Instant::now());
                log::info!(
                    "storage budget: {} KiB in use of {} MiB; pruned so far {:?}",
                    used >> 10,
                    self.limits.budget_bytes >> 20,
                    self.totals.unwrap_or_default()
                );
            }
        }
        Ok(behind)
    }

    fn marks(&self) -> Marks {
        marks(&self.limits, self.wal_peak, self.growth)
    }

    fn configure(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        let wal = self.limits.wal_bytes() as i64;
        // Both return a row; query_row reads and discards it. The WAL file is truncated
        // back to half its share after a checkpoint, and checkpointed at a quarter: the
        // other half is room for a big tick's transaction.
        conn.query_row(
            &format!("PRAGMA journal_size_limit = {}", wal / 2),
            [],
            |_| Ok(()),
        )?;
        let pages = (wal / 4 / page.max(512)).max(16);
        conn.query_row(&format!("PRAGMA wal_autocheckpoint = {pages}"), [], |_| {
            Ok(())
        })?;
        self.configured = true;
        Ok(())
    }

    /// Step 1 of the module docs. `Ok(true)`: out of time.
    fn enforce_caps(
        &mut self,
        conn: &mut Connection,
        p: &mut Pruned,
        deadline: Instant,
    ) -> rusqlite::Result<bool> {
        let l = self.limits;
        let over =
            |conn: &Connection, sql: &str, cap: u64| -> rusqlite::Result<Vec<(Option<i64>, u64)>> {
                let mut stmt = conn.prepare_cached(sql)?;
                let rows = stmt.query_map([cap as i64], |r| {
                    Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, i64>(1)? as u64))
                })?;
                rows.collect()
            };
        // The grouped counts read a whole index; a table whose rowids span no more than
        // the cap cannot have a holder over it, which two index probes tell.
        let caps: [(&str, Option<&str>, u64, Cap); 4] = [
            (
                "SELECT device_id, count(*) FROM flows WHERE ended_at IS NOT NULL
                 GROUP BY device_id HAVING count(*) > ?1",
                Some("flows"),
                l.flows_per_device,
                Cap::DeviceFlows,
            ),
            (
                "SELECT device_id, count(*) FROM dns_queries GROUP BY device_id
                 HAVING count(*) > ?1",
                Some("dns_queries"),
                l.queries_per_device,
                Cap::DeviceQueries,
            ),
            (
                "SELECT domain_id, count(*) FROM dns_queries WHERE domain_id IS NOT NULL
                 GROUP BY domain_id HAVING count(*) > ?1",
                Some("dns_queries"),
                l.queries_per_domain,
                Cap::DomainQueries,
            ),
            (
                "SELECT remote_host_id, count(*) FROM remote_host_domains
                 GROUP BY remote_host_id HAVING count(*) > ?1",
                None,
                NAMES_PER_HOST,
                Cap::HostNames,
            ),
        ];
        for (sql, rows_table, cap, which) in caps {
            if let Some(table) = rows_table
                && rowid_span(conn, table)? <= cap
            {
                continue;
            }
            for (holder, mut count) in over(conn, sql, cap)? {
                while count > cap {
                    if Instant::now() >= deadline {
                        return Ok(true);
                    }
                    let n = which.prune(conn, holder, next_chunk(count, cap))?;
                    which.count(p, n);
                    if n == 0 {
                        break;
                    }
                    count -= n;
                }
            }
        }
        Ok(false)
    }

    /// Step 2 of the module docs. `Ok(true)`: out of time.
    ///
    /// (Long: the pruning order (raw rows, then rollups, then devices) must read as one
    /// sequence.)
    fn enforce_budget(
        &mut self,
        conn: &mut Connection,
        p: &mut Pruned,
        now_ms: i64,
        deadline: Instant,
    ) -> rusqlite::Result<bool> {
        let mut marks = self.marks();
        if let Some(target) = self.must_reach {
            marks.high = marks.high.min(target);
            marks.low = marks.low.min(target);
        }
        if used_bytes(conn)? <= marks.high {
            return Ok(false);
        }
        let mut holdings = holdings(conn)?;
        let floor = self.limits.file_bytes() / 2 / (holdings.len().max(1) as u64);
        loop {
            let used = used_bytes(conn)?;
            if used <= marks.low {
                break;
            }
            if Instant::now() >= deadline {
                return Ok(true);
            }
            let Some((holder, kind)) = heaviest_above(&holdings, floor) else {
                // No holder above the floor: devices that are only an address and nothing
                // refers to any more (what forged source addresses leave), then old minute
                // rollups.
                let tx = conn.transaction()?;
                let gone = crate::store::devices::prune_idle(&tx, CHUNK)?;
                tx.commit()?;
                if gone > 0 {
                    p.budget_devices += gone;
                    self.devices_pruned = true;
                    continue;
                }
                let n = prune_oldest_rollup_minute(conn, now_ms - RECENT_ROLLUPS_MS)?;
                p.budget_rollups += n;
                if n == 0 {
                    // Over the budget itself only when the file's share is exceeded;
                    // above the (load-lowered) low mark alone is no news.
                    let level = if used > self.limits.file_bytes() {
                        log::Level::Warn
                    } else {
                        log::Level::Debug
                    };
                    log::log!(
                        level,
                        "the database uses {} KiB, above the {} KiB the storage budget prunes down to \
                         under this load ({} MiB, retention.max_db_mb), with no holder above its floor or old minute \
                         rollups left to prune",
                        used >> 10,
                        marks.low >> 10,
                        self.limits.budget_bytes >> 20
                    );
                    return Ok(false);
                }
                continue;
            };
            let h = holdings.entry(holder).or_default();
            match kind {
                Kind::Flows => {
                    // Live rows only when the hard bound itself is at stake: one more
                    // tick would take the file past what it may hold.
                    let live = if used + self.growth > marks.file {
                        Live::Prune
                    } else {
                        Live::Keep
                    };
                    let n = prune_flows(conn, holder, CHUNK, live)?;
                    p.budget_flows += n;
                    // Fewer than asked: only the table's newest row is left, or the
                    // counts went stale; either way this holder has no more to give.
                    h.flows = if n < CHUNK {
                        0
                    } else {
                        h.flows.saturating_sub(n)
                    };
                }
                Kind::Queries => {
                    let n = prune_queries(conn, QueryHolder::Device(holder), CHUNK)?;
                    p.budget_queries += n;
                    h.queries = if n < CHUNK {
                        0
                    } else {
                        h.queries.saturating_sub(n)
                    };
                }
            }
        }
        Ok(false)
    }

    /// Hands free pages back to the file system, bounded, when the main file has
    /// outgrown its share or the disk is full ([`Budget::make_room`]); otherwise they
    /// stay for new rows to reuse.
    fn give_back_pages(&self, conn: &Connection) -> rusqlite::Result<()> {
        let (pages, free, size) = page_counts(conn)?;
        if free > 0 && !self.making_room && (pages * size) as u64 > self.marks().file {
            incremental_vacuum(conn, free.min(VACUUM_PAGES))?;
        }
        Ok(())
    }

    fn save(&mut self, conn: &Connection, p: &Pruned) -> rusqlite::Result<()> {
        let totals = match &mut self.totals {
            Some(t) => t,
            None => self.totals.insert(load_totals(conn)?),
        };
        totals.add(p);
        let text = serde_json::to_string(totals).unwrap_or_default();
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![META_KEY, text],
        )?;
        Ok(())
    }
}

/// The caps of step 1.
#[derive(Clone, Copy)]
enum Cap {
    DeviceFlows,
    DeviceQueries,
    DomainQueries,
    HostNames,
}

impl Cap {
    fn prune(self, conn: &mut Connection, holder: Option<i64>, n: u64) -> rusqlite::Result<u64> {
        match (self, holder) {
            (Cap::DeviceFlows, d) => prune_flows(conn, d, n, Live::Keep),
            (Cap::DeviceQueries, d) => prune_queries(conn, QueryHolder::Device(d), n),
            (Cap::DomainQueries, Some(d)) => prune_queries(conn, QueryHolder::Domain(d), n),
            (Cap::HostNames, Some(h)) => prune_host_names(conn, h, n),
            _ => Ok(0),
        }
    }

    fn count(self, p: &mut Pruned, n: u64) {
        match self {
            Cap::DeviceFlows => p.device_cap_flows += n,
            Cap::DeviceQueries => p.device_cap_queries += n,
            Cap::DomainQueries => p.domain_cap_queries += n,
            Cap::HostNames => p.host_names += n,
        }
    }
}

/// Raw rows per device (and `None`: rows without one).
fn holdings(conn: &Connection) -> rusqlite::Result<HashMap<Option<i64>, Holding>> {
    let mut out: HashMap<Option<i64>, Holding> = HashMap::new();
    for (sql, kind) in [
        (
            "SELECT device_id, count(*) FROM flows GROUP BY device_id",
            Kind::Flows,
        ),
        (
            "SELECT device_id, count(*) FROM dns_queries GROUP BY device_id",
            Kind::Queries,
        ),
    ] {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (device, n): (Option<i64>, i64) = (r.get(0)?, r.get(1)?);
            let h = out.entry(device).or_default();
            match kind {
                Kind::Flows => h.flows = n as u64,
                Kind::Queries => h.queries = n as u64,
            }
        }
    }
    Ok(out)
}

/// At least the number of rows of `table`: the span of its rowids.
fn rowid_span(conn: &Connection, table: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached(&format!(
        "SELECT ifnull((SELECT max(rowid) FROM {table}) - (SELECT min(rowid) FROM {table}) + 1, 0)"
    ))?
    .query_row([], |r| r.get::<_, i64>(0))
    .map(|n| n.max(0) as u64)
}

fn select_ids(
    conn: &Connection,
    sql: &str,
    key: Option<i64>,
    n: u64,
) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![key, n as i64], |r| r.get(0))?;
    rows.collect()
}

/// Runs each statement (one `?1` = an id) for every id, in one transaction.
fn delete_ids(conn: &mut Connection, statements: &[&str], ids: &[i64]) -> rusqlite::Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let tx = conn.transaction()?;
    for sql in statements {
        let mut stmt = tx.prepare_cached(sql)?;
        for id in ids {
            stmt.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(ids.len() as u64)
}

/// Whether pruning may take live flow rows once the ended ones are gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    Keep,
    Prune,
}

/// Deletes up to `n` of a device's flow rows (`Some(None)`: flows without a device),
/// idle longest first (by `last_seen`, through `flows_device_last_seen`): ended ones,
/// then (with [`Live::Prune`]) live ones. A pruned live flow
/// keeps being tracked by the writer; its later counter updates find no row and still
/// reach the rollups.
pub fn prune_flows(
    conn: &mut Connection,
    device: Option<i64>,
    n: u64,
    live: Live,
) -> rusqlite::Result<u64> {
    let mut ids = select_ids(
        conn,
        "SELECT id FROM flows WHERE device_id IS ?1 AND ended_at IS NOT NULL
             AND id < (SELECT max(id) FROM flows)
         ORDER BY last_seen LIMIT ?2",
        device,
        n,
    )?;
    if live == Live::Prune && (ids.len() as u64) < n {
        ids.extend(select_ids(
            conn,
            "SELECT id FROM flows WHERE device_id IS ?1 AND ended_at IS NULL
                 AND id < (SELECT max(id) FROM flows)
             ORDER BY last_seen LIMIT ?2",
            device,
            n - ids.len() as u64,
        )?);
    }
    delete_ids(conn, &["DELETE FROM flows WHERE id = ?1"], &ids)
}

/// Whose DNS queries to prune.
#[derive(Debug, Clone, Copy)]
pub enum QueryHolder {
    Device(Option<i64>),
    /// A registrable domain (`dns_queries.domain_id`).
    Domain(i64),
}

/// Deletes up to `n` of a holder's DNS queries, oldest first, with their answers.
pub fn prune_queries(conn: &mut Connection, holder: QueryHolder, n: u64) -> rusqlite::Result<u64> {
    let ids = match holder {
        QueryHolder::Device(d) => select_ids(
            conn,
            "SELECT id FROM dns_queries WHERE device_id IS ?1
                 AND id < (SELECT max(id) FROM dns_queries)
             ORDER BY ts LIMIT ?2",
            d,
            n,
        )?,
        QueryHolder::Domain(d) => select_ids(
            conn,
            "SELECT id FROM dns_queries WHERE domain_id = ?1
                 AND id < (SELECT max(id) FROM dns_queries)
             ORDER BY ts LIMIT ?2",
            Some(d),
            n,
        )?,
    };
    delete_ids(
        conn,
        &[
            "DELETE FROM dns_answers WHERE query_id = ?1",
            "DELETE FROM dns_queries WHERE id = ?1",
        ],
        &ids,
    )
}

/// Deletes up to `n` of a remote host's name links, least recently used first.
fn prune_host_names(conn: &mut Connection, host: i64, n: u64) -> rusqlite::Result<u64> {
    let names = select_ids(
        conn,
        "SELECT qname_id FROM remote_host_domains WHERE remote_host_id = ?1
         ORDER BY last_seen LIMIT ?2",
        Some(host),
        n,
    )?;
    if names.is_empty() {
        return Ok(0);
    }
    let tx = conn.transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "DELETE FROM remote_host_domains WHERE remote_host_id = ?1 AND qname_id = ?2",
        )?;
        for name in &names {
            stmt.execute([host, *name])?;
        }
    }
    tx.commit()?;
    Ok(names.len() as u64)
}

/// Tables of per-minute rollups, pruned for size only as a last resort (their hourly
/// rollups, where there are any, keep the totals).
const MINUTE_ROLLUPS: [&str; 6] = [
    "remote_host_minutes",
    "device_minutes",
    "dns_device_minutes",
    "system_minutes",
    "interface_minutes",
    "drop_minutes",
];

/// Deletes the oldest minute (before `before`) of every minute rollup table.
fn prune_oldest_rollup_minute(conn: &Connection, before: i64) -> rusqlite::Result<u64> {
    let mut total = 0;
    for table in MINUTE_ROLLUPS {
        let oldest: Option<i64> =
            conn.query_row(&format!("SELECT min(minute) FROM {table}"), [], |r| {
                r.get(0)
            })?;
        if let Some(m) = oldest.filter(|m| *m < before) {
            total += conn.execute(&format!("DELETE FROM {table} WHERE minute = ?1"), [m])? as u64;
        }
    }
    Ok(total)
}

/// `PRAGMA incremental_vacuum(pages)` run to its end: each row it returns is one page
/// handed back, and `execute_batch` steps a statement once — one page.
pub fn incremental_vacuum(conn: &Connection, pages: i64) -> rusqlite::Result<()> {
    incremental_vacuum_of(conn, "main", pages)
}

/// [`incremental_vacuum`] of the attached database `schema`.
pub fn incremental_vacuum_of(conn: &Connection, schema: &str, pages: i64) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA {schema}.incremental_vacuum({pages})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// The budget in `meta`, where the router page reads it.
fn record_budget(conn: &Connection, budget_bytes: u64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('storage_budget_bytes', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [budget_bytes.to_string()],
    )?;
    Ok(())
}

/// (page_count, freelist_count, page_size).
fn page_counts(conn: &Connection) -> rusqlite::Result<(i64, i64, i64)> {
    page_counts_of(conn, "main")
}

/// [`page_counts`] of the attached database `schema`.
fn page_counts_of(conn: &Connection, schema: &str) -> rusqlite::Result<(i64, i64, i64)> {
    let pragma = |name: &str| -> rusqlite::Result<i64> {
        conn.query_row(&format!("PRAGMA {schema}.{name}"), [], |r| r.get(0))
    };
    Ok((
        pragma("page_count")?,
        pragma("freelist_count")?,
        pragma("page_size")?,
    ))
}

/// Longest the writer waits for readers to leave the WAL when it truncates it: page
/// reads take milliseconds, and the writer must not stall behind a slow one.
const WAL_TRUNCATE_WAIT: Duration = Duration::from_millis(250);

/// How long the truncation waits for readers once the WAL is past its whole share: the
/// budget is the hard bound, so the writer holds its next tick (its channel buffers the
/// collectors) until the pages' snapshots end — a page answers within a second.
const WAL_OVER_SHARE_WAIT: Duration = Duration::from_secs(1);

/// A WAL past half its share of the budget is checkpointed and truncated right away.
/// SQLite's automatic checkpoints are passive: while readers (the web pages) keep
/// snapshots open, they cannot reset the WAL, and under a flood every tick appends to
/// it — the lab flood grew it to 7 MiB of a 16 MiB budget. `TRUNCATE` waits (briefly)
/// for those readers, copies every frame back and empties the file, so file plus WAL
/// stay within the budget. Busy after the wait: tried again after the next tick.
fn truncate_wal_if_over(conn: &Connection, limits: &Limits, wal: u64) {
    // At half its share (where `journal_size_limit` truncates it anyway): the next
    // tick and pass then start from an empty WAL, and their transactions fit the rest.
    if limits.budget_bytes == 0 || wal <= limits.wal_bytes() / 2 {
        return;
    }
    let wait = if wal > limits.wal_bytes() {
        WAL_OVER_SHARE_WAIT
    } else {
        WAL_TRUNCATE_WAIT
    };
    if checkpoint(conn, "TRUNCATE", wait) {
        metrics::counter!("netmon_storage_wal_truncations_total").increment(1);
    }
}

/// `PRAGMA wal_checkpoint(MODE)`, waiting at most `wait` for readers; true when it
/// completed.
fn checkpoint(conn: &Connection, mode: &str, wait: Duration) -> bool {
    let _ = conn.busy_timeout(wait);
    let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        r.get::<_, i64>(0)
    });
    let _ = conn.busy_timeout(crate::store::schema::BUSY_TIMEOUT);
    match result {
        Ok(0) => true,
        Ok(_) => {
            log::debug!("storage budget: WAL checkpoint busy (readers); again after the next tick");
            false
        }
        Err(e) => {
            log::warn!("storage budget: WAL checkpoint ({mode}) failed: {e}");
            false
        }
    }
}

/// Size of the connection's main database file.
fn file_bytes(conn: &Connection) -> u64 {
    conn.path()
        .filter(|p| !p.is_empty())
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

/// Size of the connection's write-ahead log file (0 without one).
fn wal_bytes(conn: &Connection) -> u64 {
    conn.path()
        .filter(|p| !p.is_empty())
        .and_then(|p| std::fs::metadata(format!("{p}-wal")).ok())
        .map_or(0, |m| m.len())
}

/// Bytes the database really uses: allocated pages minus free ones.
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    used_bytes_of(conn, "main")
}

/// [`used_bytes`] of the attached database `schema`.
pub fn used_bytes_of(conn: &Connection, schema: &str) -> rusqlite::Result<u64> {
    let (pages, free, size) = page_counts_of(conn, schema)?;
    Ok(((pages - free).max(0) * size) as u64)
}

fn load_totals(conn: &Connection) -> rusqlite::Result<Pruned> {
    let text: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [META_KEY], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

/// What the router page shows about the budget (read-only connection).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BudgetStatus {
    /// `retention.max_db_mb` in bytes, as the writer last applied it (0: not yet).
    pub budget_bytes: u64,
    /// Pages in use.
    pub used_bytes: u64,
    /// What pruning removed since the database was created.
    pub pruned: Pruned,
}

pub fn status(conn: &Connection) -> rusqlite::Result<BudgetStatus> {
    let budget: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'storage_budget_bytes'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    Ok(BudgetStatus {
        budget_bytes: budget.and_then(|b| b.parse().ok()).unwrap_or(0),
        used_bytes: used_bytes(conn)?,
        pruned: load_totals(conn)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;
    use crate::store::testdata::tempdir::TempDir;

    fn db(name: &str) -> (TempDir, Connection) {
        let dir = TempDir::new(name);
        let conn = schema::open_rw(&dir.db()).unwrap();
        (dir, conn)
    }

    fn limits(budget_bytes: u64, flows: u64, queries: u64, domain: u64) -> Limits {
        Limits {
            budget_bytes,
            flows_per_device: flows,
            queries_per_device: queries,
            queries_per_domain: domain,
        }
    }

    fn budget(l: Limits) -> Budget {
        Budget {
            limits: l,
            ..Budget::new(&config::Retention::default())
        }
    }

    /// `n` flows of `device` starting at `t0` (one per ms), ended unless `live`.
    fn flows(conn: &mut Connection, device: Option<i64>, n: i64, t0: i64, live: bool) {
        let tx = conn.transaction().unwrap();
        {
            let mut stmt = tx
                .prepare(
                    "INSERT INTO flows (ident, ct_id, proto, direction, src_ip, src_port,
                         dst_ip, dst_port, reply_dst_ip, status, first_seen,
                         last_seen, ended_at, device_id, bytes_up)
                     VALUES (?1, 1, 6, 0, netmon_ip_blob('10.77.0.10'), 40000,
                         netmon_ip_blob('203.0.113.80'), 443, netmon_ip_blob('203.0.113.1'), 14,
                         ?2, ?2, ?3, ?4, 1234)",
                )
                .unwrap();
            for i in 0..n {
                let t = t0 + i;
                stmt.execute(params![
                    t * 1000 + device.unwrap_or(0),
                    t,
                    (!live).then_some(t + 1),
                    device
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    /// `n` answered queries by `device` for `<i>.<domain>`, interned like the writer does.
    fn queries(conn: &mut Connection, device: i64, domain: &str, n: i64, t0: i64) {
        let tx = conn.transaction().unwrap();
        {
            let name_id = |name: &str| -> i64 {
                tx.execute("INSERT OR IGNORE INTO dns_names (name) VALUES (?1)", [name])
                    .unwrap();
                tx.query_row("SELECT id FROM dns_names WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .unwrap()
            };
            let domain_id = name_id(domain);
            for i in 0..n {
                let q = name_id(&format!("n{i}.{domain}"));
                tx.execute(
                    "INSERT INTO dns_queries (ts, client, device_id, qname_id, qtype, rcode,
                         answers, source, domain_id)
                     VALUES (?1, netmon_ip_blob('10.77.0.10'), ?2, ?3, 1, 0, 1, 0, ?4)",
                    params![t0 + i, device, q, domain_id],
                )
                .unwrap();
                let query_id = tx.last_insert_rowid();
                tx.execute(
                    "INSERT INTO dns_answers (query_id, ip, client, ttl)
                     VALUES (?1, netmon_ip_blob('203.0.113.80'), netmon_ip_blob('10.77.0.10'), 60)",
                    params![query_id],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn pass(b: &mut Budget, conn: &mut Connection) -> Pruned {
        let mut dns = DnsState::new(&config::Dns::default());
        let before = load_totals(conn).unwrap();
        // Generous time: the tests check what is pruned, not how fast.
        while b
            .pass(
                conn,
                &mut dns,
                1_000_000,
                Instant::now() + Duration::from_secs(10),
            )
            .unwrap()
        {}
        let mut after = load_totals(conn).unwrap();
        after.device_cap_flows -= before.device_cap_flows;
        after.device_cap_queries -= before.device_cap_queries;
        after.domain_cap_queries -= before.domain_cap_queries;
        after.budget_flows -= before.budget_flows;
        after.budget_queries -= before.budget_queries;
        after.names -= before.names;
        after
    }

    #[test]
    fn the_heaviest_holder_gives_up_its_biggest_kind_first() {
        let mut h = HashMap::new();
        assert_eq!(heaviest_above(&h, 0), None);
        h.insert(
            Some(1),
            Holding {
                flows: 100,
                queries: 10,
            },
        );
        h.insert(
            Some(2),
            Holding {
                flows: 10,
                queries: 500,
            },
        );
        h.insert(
            None,
            Holding {
                flows: 50,
                queries: 0,
            },
        );
        assert_eq!(heaviest_above(&h, 0), Some((Some(2), Kind::Queries)));
        h.insert(
            Some(2),
            Holding {
                flows: 10,
                queries: 0,
            },
        );
        assert_eq!(heaviest_above(&h, 0), Some((Some(1), Kind::Flows)));
        // Equal holders: the lower id, every time.
        h.insert(
            Some(2),
            Holding {
                flows: 100,
                queries: 10,
            },
        );
        assert_eq!(heaviest_above(&h, 0), Some((Some(1), Kind::Flows)));
        // A holder with only queries gives queries even if flows would rank first.
        h.clear();
        h.insert(
            Some(3),
            Holding {
                flows: 0,
                queries: 1,
            },
        );
        assert_eq!(heaviest_above(&h, 0), Some((Some(3), Kind::Queries)));
    }

    #[test]
    fn limits_split_the_budget_between_file_and_log() {
        let l = Limits::from_config(&config::Retention {
            max_db_mb: 32,
            ..config::Retention::default()
        });
        assert_eq!(l.wal_bytes(), 8 << 20);
        assert_eq!(l.reserve_bytes(), 2 << 20);
        assert_eq!(l.file_bytes(), 22 << 20);
        assert!(l.low_water() < l.high_water() && l.high_water() < l.file_bytes());
        // Quiet: the configured marks. A big WAL or big ticks lower them, to a floor.
        let m = marks(&l, 0, 0);
        assert_eq!(
            (m.high, m.low, m.file),
            (l.high_water(), l.low_water(), 22 << 20)
        );
        let m = marks(&l, 12 << 20, 4 << 20);
        assert_eq!(m.file, 18 << 20);
        assert_eq!(m.high, 10 << 20);
        assert!(m.low < m.high);
        assert_eq!(marks(&l, 30 << 20, 30 << 20).high, (22 << 20) / 4);
        // A small budget keeps a smaller reserve, an eighth at most.
        let small = Limits::from_config(&config::Retention {
            max_db_mb: 4,
            ..config::Retention::default()
        });
        assert_eq!(small.reserve_bytes(), 512 << 10);
        assert_eq!(next_chunk(10, 20), 0);
        assert_eq!(next_chunk(25, 20), 5);
        assert_eq!(next_chunk(100_000, 20), CHUNK);
    }

    #[test]
    fn a_device_over_its_flow_cap_loses_its_own_oldest_ended_flows_never_live_ones() {
        let (_dir, mut conn) = db("budget-flow-cap");
        flows(&mut conn, Some(2), 300, 0, false); // the other device, older than the flood
        flows(&mut conn, Some(1), 2_000, 10_000, false);
        flows(&mut conn, Some(1), 500, 20_000, true);
        flows(&mut conn, None, 50, 30_000, false);
        let mut b = budget(limits(1 << 30, 1_000, 1_000, 1_000));
        let p = pass(&mut b, &mut conn);
        // The cap counts ended rows: 2 000 of them, 1 000 over.
        assert_eq!(p.device_cap_flows, 1_000);
        let ended_1 = "SELECT count(*) FROM flows WHERE device_id = 1 AND ended_at IS NOT NULL";
        let live_1 = "SELECT count(*) FROM flows WHERE device_id = 1 AND ended_at IS NULL";
        assert_eq!(count(&conn, ended_1), 1_000);
        assert_eq!(count(&conn, live_1), 500);
        // What is left of the ended ones is the newest.
        assert_eq!(
            count(
                &conn,
                "SELECT min(first_seen) FROM flows WHERE device_id = 1"
            ),
            10_000 + 1_000
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM flows WHERE device_id = 2"),
            300
        );
        assert_eq!(
            count(&conn, "SELECT count(*) FROM flows WHERE device_id IS NULL"),
            50
        );

        // A burst of live flows far past the cap costs none of them.
        flows(&mut conn, Some(1), 5_000, 40_000, true);
        let p = pass(&mut b, &mut conn);
        assert_eq!(p.device_cap_flows, 0);
        assert_eq!(count(&conn, live_1), 5_500);
        assert_eq!(count(&conn, ended_1), 1_000);
    }

    #[test]
    fn the_newest_row_of_a_table_is_never_pruned() {
        let (_dir, mut conn) = db("budget-newest");
        flows(&mut conn, Some(1), 150, 0, false);
        let newest = count(&conn, "SELECT max(id) FROM flows");
        assert_eq!(
            prune_flows(&mut conn, Some(1), 1_000, Live::Prune).unwrap(),
            149
        );
        assert_eq!(count(&conn, "SELECT id FROM flows"), newest);
    }

    #[test]
    fn a_flooding_domain_is_capped_and_its_names_collected() {
        let (_dir, mut conn) = db("budget-domain-cap");
        queries(&mut conn, 2, "example.com", 50, 0);
        queries(&mut conn, 1, "flood.lab", 3_000, 1_000);
        let names_before = count(&conn, "SELECT count(*) FROM dns_names");
        let mut b = budget(limits(1 << 30, 100_000, 100_000, 500));
        let p = pass(&mut b, &mut conn);
        assert_eq!(p.domain_cap_queries, 2_500);
        let flood = "SELECT count(*) FROM dns_queries q JOIN dns_names d ON d.id = q.domain_id
                     WHERE d.name = 'flood.lab'";
        assert_eq!(count(&conn, flood), 500);
        // The newest stayed; answers went with their queries.
        assert_eq!(
            count(&conn, "SELECT min(ts) FROM dns_queries WHERE device_id = 1"),
            1_000 + 2_500
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM dns_answers a
                 WHERE NOT EXISTS (SELECT 1 FROM dns_queries q WHERE q.id = a.query_id)"
            ),
            0
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM dns_queries WHERE device_id = 2"
            ),
            50
        );
        // Unused names are gone, used ones (and the domains) stay.
        assert_eq!(p.names, 2_500);
        assert_eq!(
            count(&conn, "SELECT count(*) FROM dns_names"),
            names_before - 2_500
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM dns_names WHERE name LIKE '%.example.com'"
            ),
            50
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM dns_queries q
                 WHERE NOT EXISTS (SELECT 1 FROM dns_names n WHERE n.id = q.qname_id)
                    OR NOT EXISTS (SELECT 1 FROM dns_names n WHERE n.id = q.domain_id)"
            ),
            0
        );
    }

    #[test]
    fn a_name_still_used_by_a_flow_or_a_host_link_is_kept() {
        let (_dir, mut conn) = db("budget-names-used");
        queries(&mut conn, 1, "flood.lab", 4, 0);
        let id = |name: &str| -> i64 {
            conn.query_row("SELECT id FROM dns_names WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .unwrap()
        };
        let (n0, n1) = (id("n0.flood.lab"), id("n1.flood.lab"));
        flows(&mut conn, Some(1), 1, 0, false);
        conn.execute("UPDATE flows SET qname_id = ?1", [n0])
            .unwrap();
        conn.execute(
            "INSERT INTO remote_host_domains (remote_host_id, qname_id, first_seen, last_seen)
             VALUES (1, ?1, 0, 0)",
            [n1],
        )
        .unwrap();
        conn.execute("DELETE FROM dns_queries", []).unwrap();
        let mut dns = DnsState::new(&config::Dns::default());
        let (n, _) = dns.collect_names(&mut conn, 0, 1_000).unwrap();
        // The domain and n2 go; n0 (a flow) and n1 (a host link) stay, and so does n3,
        // the newest name, which is never collected.
        let left: Vec<String> = conn
            .prepare("SELECT name FROM dns_names ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(n, 2, "{left:?}");
        assert_eq!(
            left,
            ["n0.flood.lab", "n1.flood.lab", "n3.flood.lab"]
                .map(String::from)
                .to_vec()
        );
    }

    #[test]
    fn over_budget_the_heaviest_device_is_pruned_and_the_others_survive() {
        let (_dir, mut conn) = db("budget-size");
        flows(&mut conn, Some(2), 500, 0, false);
        queries(&mut conn, 2, "example.com", 200, 0);
        for k in 0..8 {
            flows(&mut conn, Some(1), 5_000, 10_000 + k * 5_000, false);
        }
        queries(&mut conn, 1, "flood.lab", 5_000, 100_000);
        let used = used_bytes(&conn).unwrap();
        // A budget the flood is well over, but the small device fits in many times.
        let l = limits(used * 100 / 85 / 2, 1_000_000, 1_000_000, 1_000_000);
        assert!(used > l.high_water());
        let mut b = budget(l);
        let p = pass(&mut b, &mut conn);
        assert!(p.budget_flows + p.budget_queries > 0, "{p:?}");
        assert!(used_bytes(&conn).unwrap() <= l.low_water());
        assert_eq!(
            count(&conn, "SELECT count(*) FROM flows WHERE device_id = 2"),
            500
        );
        assert_eq!(
            count(
                &conn,
                "SELECT count(*) FROM dns_queries WHERE device_id = 2"
            ),
            200
        );
        assert!(count(&conn, "SELECT count(*) FROM flows WHERE device_id = 1") < 40_000);
        // The totals are kept for the router page.
        let s = status(&conn).unwrap();
        assert_eq!(s.pruned.budget_flows, p.budget_flows);
        assert_eq!(s.budget_bytes, l.budget_bytes);
    }

    #[test]
    fn a_pass_stops_at_its_deadline_and_says_it_is_behind() {
        let (_dir, mut conn) = db("budget-deadline");
        flows(&mut conn, Some(1), 5_000, 0, false);
        let mut b = budget(limits(1 << 30, 100, 100, 100));
        let mut dns = DnsState::new(&config::Dns::default());
        assert!(b.pass(&mut conn, &mut dns, 0, Instant::now()).unwrap());
        assert!(count(&conn, "SELECT count(*) FROM flows") > 100);
    }
}
