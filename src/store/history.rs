//! The history store (DESIGN §4): what lasts across a reboot, on persistent storage,
//! written so that flash wear follows what changed, never the database's size.
//!
//! On a router the working database is in RAM (`/tmp`) and lost on reboot; flash is
//! small and wears out. So the writer mirrors the tables an owner expects to find after
//! a reboot — devices and their addresses, remote hosts with their names, ports and AS,
//! hour and day rollups, baselines, incidents, rules, saved searches — into a small
//! SQLite file on persistent storage (`persist_path`), once every `persist_interval_s`
//! and at a clean shutdown. Each sync is one transaction on that file that writes only
//! the rows whose stored form changed: the history keeps rollups time first and the
//! columns that change with every packet to the day (`history.sql`), so an interval's
//! writes are a few changed pages. Those are appended to the file's write-ahead log
//! (`synchronous = FULL`), which is copied into the file only once it holds
//! [`WAL_CHECKPOINT_BYTES`]: a page that changes in every sync reaches the file once
//! per checkpoint. The file is opened on SQLite's `unix-excl` VFS, which keeps the log's
//! index in heap memory (JFFS2 has no writable shared mmap for a `-shm` file). A power
//! cut loses at most one interval and never corrupts the file.
//!
//! After a reboot the RAM database is created empty and the history is loaded into it
//! (reading flash, not writing it); pages and the writer keep reading one database. The
//! history has its own budget (`persist_max_mb`): over it, the oldest hour rollups go
//! first, then the oldest host days, hosts long unseen, and the device days last.
//!
//! A whole-database snapshot from an older netmon at `persist_path` is migrated once:
//! restored into RAM as before, then rewritten as a history file in its place.
//!
//! A user whose `db_path` is already on persistent storage (a USB disk) needs no
//! history: with `persist = "auto"` it is on only when `db_path` is on tmpfs/ramfs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::config::{Config, Persist};
use crate::store::schema;
use crate::time::DAY_MS;

/// `statfs(2)` magic numbers of RAM-backed file systems (`linux/magic.h`).
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// The history file's layout; a file with another version is rebuilt from RAM after
/// its rows were loaded.
const HISTORY_VERSION: u32 = 1;
const HISTORY_SCHEMA: &str = include_str!(concat!(env!("OUT_DIR"), "/sql/history.sql"));
/// Small pages: an interval's scattered changes cost a kilobyte each, not four.
const PAGE_SIZE: u32 = 1024;
/// The history's write-ahead log is copied into the file once it is this big: each sync
/// appends its pages to the log, and pages that change in every sync (the current
/// hour's rollups, the devices) reach the file once per checkpoint, not once per sync.
const WAL_CHECKPOINT_BYTES: u64 = 256 << 10;
/// Pruning stops below this share of the budget, so it runs rarely.
const LOW_WATER_PCT: u64 = 85;
/// `meta` key: hours before this UTC day start are rolled into day rows.
const ROLLED_KEY: &str = "days_rolled_until";

/// One mirrored table: its history columns, and what they are made of in RAM.
struct Lasting {
    table: &'static str,
    /// The primary key (history and RAM agree on it).
    key: &'static str,
    /// Column expressions over the RAM table, in the order of the history's columns.
    select: &'static [&'static str],
    /// Rows of the RAM table that are history (`1` for all).
    filter: &'static str,
}

/// Day precision for columns that move with every packet.
macro_rules! day {
    ($c:literal) => {
        concat!($c, " - ", $c, " % 86400000")
    };
}

/// The columns of an hour or day rollup: its bucket and owner, then its counters.
macro_rules! rollup {
    ($bucket:literal, $id:literal) => {
        &[
            $bucket,
            $id,
            "bytes_up",
            "bytes_down",
            "packets_up",
            "packets_down",
            "flows_new",
        ]
    };
}

const LASTING: &[Lasting] = &[
    Lasting {
        table: "devices",
        key: "id",
        select: &[
            "id",
            "mac",
            "ip",
            "name",
            "hostname",
            "vendor",
            "notes",
            "first_seen",
            "last_seen",
            "encrypted_dns",
            "encrypted_dns_at",
        ],
        filter: "1",
    },
    Lasting {
        table: "device_addrs",
        key: "ip",
        select: &["ip", "device_id", "first_seen", day!("last_seen")],
        filter: "1",
    },
    Lasting {
        table: "device_baselines",
        key: "device_id",
        select: &[
            "device_id",
            "computed_at",
            "history_from",
            "minutes",
            "egress_p95",
            "fanout_p95",
            "ports_p95",
            "dns_p95",
            "nxdomain_p95",
            "upload_ratio_p95",
            "egress_by_hour",
        ],
        filter: "1",
    },
    Lasting {
        table: "device_hours",
        key: "hour, device_id",
        select: rollup!("hour", "device_id"),
        filter: "1",
    },
    Lasting {
        table: "device_days",
        key: "day, device_id",
        select: rollup!("day", "device_id"),
        filter: "1",
    },
    // Only the names a host link refers to: the rest are the raw DNS log's.
    Lasting {
        table: "dns_names",
        key: "id",
        select: &["id", "name"],
        filter: "id IN (SELECT qname_id FROM main.remote_host_domains)",
    },
    Lasting {
        table: "remote_hosts",
        key: "id",
        select: &[
            "id",
            "ip",
            "first_seen",
            day!("last_seen"),
            "rdns",
            "asn",
            "org",
            "notes",
        ],
        filter: "1",
    },
    Lasting {
        table: "remote_host_domains",
        key: "remote_host_id, qname_id",
        select: &[
            "remote_host_id",
            "qname_id",
            "first_seen",
            day!("last_seen"),
        ],
        filter: "1",
    },
    Lasting {
        table: "remote_host_ports",
        key: "remote_host_id, proto, port",
        select: &[
            "remote_host_id",
            "proto",
            "port",
            "first_seen",
            day!("last_seen"),
        ],
        filter: "1",
    },
    Lasting {
        table: "remote_host_hours",
        key: "hour, remote_host_id",
        select: rollup!("hour", "remote_host_id"),
        filter: "1",
    },
    Lasting {
        table: "remote_host_days",
        key: "day, remote_host_id",
        select: rollup!("day", "remote_host_id"),
        filter: "1",
    },
    Lasting {
        table: "incidents",
        key: "id",
        select: &[
            "id",
            "fingerprint",
            "device_id",
            "remote_ip",
            "proto",
            "dport",
            "codes",
            "title",
            "first_seen",
            "last_seen",
            "count",
            "max_score",
            "acked_at",
            "muted_until",
            "notes",
        ],
        filter: "1",
    },
    Lasting {
        table: "rules",
        key: "id",
        select: &[
            "id",
            "action",
            "code",
            "device_id",
            "remote",
            "asn",
            "org",
            "domain",
            "proto",
            "port_lo",
            "port_hi",
            "expires_at",
            "notes",
            "created_at",
            "matched",
            "last_matched",
        ],
        filter: "1",
    },
    Lasting {
        table: "saved_searches",
        key: "id",
        select: &["id", "name", "url", "pinned", "created_at", "updated_at"],
        filter: "1",
    },
    Lasting {
        table: "meta",
        key: "key",
        select: &["key", "value"],
        filter: "1",
    },
];

/// What a sync did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Rows written or deleted in the history file.
    pub rows: u64,
    /// Bytes this thread wrote to storage meanwhile (`/proc/thread-self/io`).
    pub bytes: u64,
    /// Remote hosts were pruned for the budget: caches of host ids are stale.
    pub hosts_pruned: bool,
}

/// The history store's schedule and budget; the writer thread owns it.
pub struct History {
    path: PathBuf,
    /// Where a new history file is assembled before it is copied to `path` (RAM).
    build_path: PathBuf,
    interval: Duration,
    next: Instant,
    /// The writer's commit sequence number the last sync saw: an idle router (a night
    /// without traffic) writes nothing to flash.
    synced_at_seq: Option<u64>,
    budget: u64,
}

/// How the working database came to be, decided before it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// History is off.
    Off,
    /// The RAM database was there (netmon restarted without a reboot): it is newer
    /// than the history.
    Kept,
    /// The RAM database was gone: it is created empty and the history loaded into it.
    Fresh,
    /// An older netmon's whole-database snapshot was restored into RAM; the history
    /// file replaces it.
    Migrated,
}

/// Before the working database is opened: moves a damaged history file aside, and
/// after a reboot restores an older netmon's snapshot (the migration's first half).
pub fn before_open(config: &Config) -> anyhow::Result<Start> {
    if !enabled(config) {
        return Ok(Start::Off);
    }
    let path = &config.persist_path;
    if let Some(moved) = schema::quarantine_if_damaged(path)? {
        log::error!(
            "history {} was damaged and is kept as {}; starting a new history",
            path.display(),
            moved.display()
        );
    }
    if config.db_path.exists() {
        return Ok(Start::Kept);
    }
    if path.exists() && is_snapshot(path)? {
        restore_snapshot(path, &config.db_path)?;
        return Ok(Start::Migrated);
    }
    Ok(Start::Fresh)
}

impl History {
    /// Opens the history for the working database `conn` opened after `start`: loads
    /// it into a fresh RAM database, and writes a new file where there is none, an old
    /// snapshot, or another layout. `None` when history is off.
    pub fn open(
        config: &Config,
        conn: &mut Connection,
        start: Start,
    ) -> anyhow::Result<Option<History>> {
        if start == Start::Off {
            return Ok(None);
        }
        // Detaching the history after a sync must not copy its log into the file.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )?;
        let interval = Duration::from_secs(config.persist_interval_s);
        let mut history = History {
            path: config.persist_path.clone(),
            build_path: config.db_path.with_extension("history-build"),
            interval,
            next: Instant::now() + interval,
            synced_at_seq: None,
            budget: u64::from(config.persist_max_mb) << 20,
        };
        let version = if history.path.exists() && start != Start::Migrated {
            Some(history_version(&history.path)?)
        } else {
            None
        };
        if start == Start::Fresh && version.is_some() {
            let rows = load(conn, &history.path)
                .with_context(|| format!("loading history from {}", history.path.display()))?;
            log::info!(
                "loaded {rows} rows of history from {}",
                history.path.display()
            );
        }
        if version != Some(HISTORY_VERSION) {
            history.rebuild(conn)?;
        }
        Ok(Some(history))
    }

    /// Syncs when the interval has passed and something was committed since the last
    /// sync (`seq` is the writer's commit counter).
    pub fn sync_if_due(&mut self, conn: &mut Connection, seq: u64) -> Option<Synced> {
        if Instant::now() < self.next {
            return None;
        }
        self.next = Instant::now() + self.interval;
        self.sync_if_changed(conn, seq)
    }

    /// Syncs now unless nothing was committed since the last sync (also at shutdown),
    /// logging the outcome.
    pub fn sync_if_changed(&mut self, conn: &mut Connection, seq: u64) -> Option<Synced> {
        if self.synced_at_seq == Some(seq) {
            metrics::counter!("netmon_history_syncs_skipped_total").increment(1);
            return None;
        }
        let started = Instant::now();
        match self.sync(conn) {
            Ok(s) => {
                self.synced_at_seq = Some(seq);
                metrics::counter!("netmon_history_syncs_total").increment(1);
                metrics::counter!("netmon_history_rows_written_total").increment(s.rows);
                metrics::counter!("netmon_history_bytes_written_total").increment(s.bytes);
                metrics::gauge!("netmon_history_last_success_timestamp_seconds")
                    .set(crate::time::now_ms() as f64 / 1000.0);
                log::debug!(
                    "history: {} rows, {} bytes to {} in {} ms",
                    s.rows,
                    s.bytes,
                    self.path.display(),
                    started.elapsed().as_millis()
                );
                Some(s)
            }
            Err(e) => {
                metrics::counter!("netmon_history_failures_total").increment(1);
                log::error!("history sync to {} failed: {e:#}", self.path.display());
                // Whatever the failure left attached goes; the next sync starts clean.
                let _ = conn.execute_batch("ROLLBACK");
                let _ = conn.execute_batch("DETACH DATABASE history");
                None
            }
        }
    }

    /// One sync: rolls finished days, then writes what changed in one transaction, and
    /// prunes when the file is over its budget.
    pub fn sync(&mut self, conn: &mut Connection) -> anyhow::Result<Synced> {
        roll_days(conn, crate::time::now_ms()).context("rolling hours into days")?;
        let written_before = thread_write_bytes();
        attach(conn, &self.path)?;
        let result = (|| -> anyhow::Result<Synced> {
            conn.execute_batch(
                "PRAGMA history.journal_mode = WAL;
                 PRAGMA history.synchronous = FULL;",
            )?;
            let mut synced = Synced {
                rows: mirror(conn)?,
                ..Synced::default()
            };
            let pruned = prune_to_budget(conn, self.budget)?;
            synced.rows += pruned.rows;
            synced.hosts_pruned = pruned.hosts;
            if file_len(&wal_of(&self.path)) > WAL_CHECKPOINT_BYTES {
                conn.query_row("PRAGMA history.wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            }
            Ok(synced)
        })();
        let detached = conn.execute_batch("DETACH DATABASE history");
        let mut synced = result?;
        detached.context("detaching the history")?;
        synced.bytes = thread_write_bytes().saturating_sub(written_before);
        metrics::gauge!("netmon_history_file_bytes").set(file_len(&self.path) as f64);
        Ok(synced)
    }

    /// Writes a whole new history file from the RAM database: assembled in RAM, pruned
    /// to the budget there, then copied to persistent storage, fsync'ed and renamed
    /// into place, so flash never holds more than the budget nor a half-written file.
    fn rebuild(&mut self, conn: &mut Connection) -> anyhow::Result<()> {
        roll_days(conn, crate::time::now_ms()).context("rolling hours into days")?;
        remove_if_there(&self.build_path)?;
        attach(conn, &self.build_path)?;
        let built = (|| -> anyhow::Result<()> {
            conn.execute_batch(&format!(
                "PRAGMA history.page_size = {PAGE_SIZE};
                 PRAGMA history.auto_vacuum = INCREMENTAL;
                 PRAGMA history.journal_mode = OFF;"
            ))?;
            let tx = conn.transaction()?;
            tx.execute_batch(&in_history(HISTORY_SCHEMA))?;
            tx.execute_batch(&format!("PRAGMA history.user_version = {HISTORY_VERSION}"))?;
            tx.commit()?;
            mirror(conn)?;
            prune_to_budget(conn, self.budget)?;
            Ok(())
        })();
        let detached = conn.execute_batch("DETACH DATABASE history");
        built.with_context(|| format!("building history in {}", self.build_path.display()))?;
        detached?;
        let bytes = install(&self.build_path, &self.path)?;
        remove_if_there(&self.build_path)?;
        metrics::counter!("netmon_history_bytes_written_total").increment(bytes);
        log::info!("history written to {} ({bytes} bytes)", self.path.display());
        Ok(())
    }
}

/// Whether `config` turns the history store on for its `db_path`.
pub fn enabled(config: &Config) -> bool {
    match config.persist {
        Persist::Off => false,
        Persist::On => true,
        Persist::Auto => {
            let dir = config.db_path.parent().unwrap_or(Path::new("/"));
            is_ram_backed(dir).unwrap_or(false)
        }
    }
}

/// For `netmon check-config`: the history's budget is more than its file system has
/// free (counting what the history file already takes), so it would fill the flash.
pub fn budget_warning(config: &Config) -> Option<String> {
    if !enabled(config) {
        return None;
    }
    let path = &config.persist_path;
    let dir = path.parent().unwrap_or(Path::new("/"));
    let existing = dir.ancestors().find(|d| d.exists())?;
    let (_, free) = crate::disk::statvfs(existing).ok()?;
    let room = free + file_len(path);
    let budget = u64::from(config.persist_max_mb) << 20;
    (budget > room).then(|| {
        format!(
            "persist_max_mb = {} but the file system of persist_path ({}) has {} KiB free: \
             the history would fill it. Lower persist_max_mb or move persist_path",
            config.persist_max_mb,
            path.display(),
            room >> 10
        )
    })
}

/// True when `dir` (or its nearest existing ancestor) lives on tmpfs or ramfs.
fn is_ram_backed(dir: &Path) -> std::io::Result<bool> {
    Ok(matches!(
        crate::disk::fs_type(dir)?,
        TMPFS_MAGIC | RAMFS_MAGIC
    ))
}

/// `sql` with every `CREATE TABLE name` made `CREATE TABLE history.name`.
fn in_history(sql: &str) -> String {
    sql.replace("CREATE TABLE ", "CREATE TABLE history.")
}

/// `path` as an SQLite URI on the `unix-excl` VFS: an exclusive lock, and the
/// write-ahead log's index in heap memory instead of a shared-memory `-shm` file, which
/// JFFS2 cannot map.
fn uri(path: &Path) -> anyhow::Result<String> {
    use std::fmt::Write;
    let text = path.to_str().context("history path is not valid UTF-8")?;
    let mut uri = String::from("file:");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            uri.push(char::from(b));
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push_str("?vfs=unix-excl");
    Ok(uri)
}

fn attach(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    conn.execute("ATTACH DATABASE ?1 AS history", [uri(path)?])
        .with_context(|| format!("opening history {}", path.display()))?;
    Ok(())
}

/// A connection to an existing history file (or an older netmon's snapshot), to read
/// it. Read-write, because `unix-excl` keeps the log's index in heap memory only for a
/// connection that may lock the file exclusively; a read-only one wants `-shm`.
fn open_existing(path: &Path) -> anyhow::Result<Connection> {
    Connection::open_with_flags(
        uri(path)?,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI,
    )
    .with_context(|| format!("opening {}", path.display()))
}

/// The history file's layout version; an older netmon's snapshot is not one.
fn history_version(path: &Path) -> anyhow::Result<u32> {
    open_existing(path)?
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .with_context(|| format!("reading {}", path.display()))
}

/// An older netmon's whole-database snapshot: it has the raw flows table.
fn is_snapshot(path: &Path) -> anyhow::Result<bool> {
    let c = open_existing(path)?;
    let n: i64 = c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'flows'",
        [],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Copies an older netmon's snapshot into place as the working database. One that
/// fails SQLite's `quick_check` is refused: netmon does not start on corrupt data.
fn restore_snapshot(snapshot: &Path, db_path: &Path) -> anyhow::Result<()> {
    let check: String = Connection::open_with_flags(snapshot, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("PRAGMA quick_check", [], |r| r.get(0)))
        .with_context(|| format!("checking snapshot {}", snapshot.display()))?;
    if check != "ok" {
        anyhow::bail!(
            "snapshot {} is damaged ({check}); move it away to start with an empty database",
            snapshot.display()
        );
    }
    if let Some(dir) = db_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = db_path.with_extension("restore-tmp");
    std::fs::copy(snapshot, &tmp)
        .with_context(|| format!("copying {} to {}", snapshot.display(), tmp.display()))?;
    // `fs::copy` gives the copy the snapshot's mode, umask or not, and a snapshot from
    // an older netmon may be 0644: the working database gets a new database's mode.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640))
            .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, db_path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), db_path.display()))?;
    log::info!(
        "restored {} from the snapshot {} of an older netmon; it becomes the history store",
        db_path.display(),
        snapshot.display()
    );
    Ok(())
}

/// Loads a history file into the empty RAM database, table by table, by the columns
/// both have (a history written by an older layout loads what it holds); then rebuilds
/// the totals the history does not keep from the rollups. Returns the rows loaded.
fn load(conn: &mut Connection, path: &Path) -> anyhow::Result<u64> {
    attach(conn, path)?;
    let loaded = (|| -> anyhow::Result<u64> {
        let tx = conn.transaction()?;
        let mut rows = 0;
        for t in LASTING {
            let theirs = columns(&tx, "history", t.table)?;
            if theirs.is_empty() {
                continue;
            }
            let ours = columns(&tx, "main", t.table)?;
            let both: Vec<&str> = theirs
                .iter()
                .filter(|c| ours.contains(c))
                .map(String::as_str)
                .collect();
            let list = both.join(", ");
            rows += tx.execute(
                &format!(
                    "INSERT OR REPLACE INTO main.{0} ({list}) SELECT {list} FROM history.{0}",
                    t.table
                ),
                [],
            )? as u64;
        }
        rebuild_totals(&tx)?;
        tx.commit()?;
        Ok(rows)
    })();
    conn.execute_batch("DETACH DATABASE history")?;
    loaded
}

/// The column names of `schema.table` (none when it has no such table).
fn columns(conn: &Connection, schema: &str, table: &str) -> rusqlite::Result<Vec<String>> {
    conn.prepare(&format!("PRAGMA {schema}.table_info({table})"))?
        .query_map([], |r| r.get(1))?
        .collect()
}

/// Devices' and hosts' lifetime totals, which the history leaves out (they change with
/// every packet): the sum of their day rows and of the hour rows not yet rolled.
fn rebuild_totals(conn: &Connection) -> rusqlite::Result<()> {
    let rolled = rolled_until(conn)?.unwrap_or(0);
    for (table, days, hours, id) in [
        ("devices", "device_days", "device_hours", "device_id"),
        (
            "remote_hosts",
            "remote_host_days",
            "remote_host_hours",
            "remote_host_id",
        ),
    ] {
        conn.execute(
            &format!(
                "WITH t AS (
                     SELECT {id} AS id, sum(bytes_up) AS up, sum(bytes_down) AS down,
                            sum(flows_new) AS flows
                     FROM (SELECT {id}, bytes_up, bytes_down, flows_new FROM main.{days}
                           UNION ALL
                           SELECT {id}, bytes_up, bytes_down, flows_new FROM main.{hours}
                           WHERE hour >= ?1)
                     GROUP BY {id})
                 UPDATE main.{table} SET bytes_up = t.up, bytes_down = t.down, flows = t.flows
                 FROM t WHERE t.id = {table}.id"
            ),
            [rolled],
        )?;
    }
    Ok(())
}

fn rolled_until(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT CAST(value AS INTEGER) FROM main.meta WHERE key = ?1",
        [ROLLED_KEY],
        |r| r.get(0),
    )
    .optional()
}

/// Sums every finished UTC day not rolled yet from the hour rows into day rows.
pub fn roll_days(conn: &mut Connection, now: i64) -> rusqlite::Result<()> {
    let today = now - now.rem_euclid(DAY_MS);
    let tx = conn.transaction()?;
    let from = match rolled_until(&tx)? {
        Some(from) => from,
        None => tx
            .query_row(
                "SELECT min(h) FROM (SELECT min(hour) AS h FROM device_hours
                                 UNION ALL SELECT min(hour) FROM remote_host_hours)",
                [],
                |r| {
                    Ok(r.get::<_, Option<i64>>(0)?
                        .map(|h| h - h.rem_euclid(DAY_MS)))
                },
            )?
            .unwrap_or(today),
    };
    if from >= today {
        return Ok(());
    }
    for (days, hours, id) in [
        ("device_days", "device_hours", "device_id"),
        ("remote_host_days", "remote_host_hours", "remote_host_id"),
    ] {
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO {days}
                     ({id}, day, bytes_up, bytes_down, packets_up, packets_down, flows_new)
                 SELECT {id}, hour - hour % {DAY_MS}, sum(bytes_up), sum(bytes_down),
                        sum(packets_up), sum(packets_down), sum(flows_new)
                 FROM {hours} WHERE hour >= ?1 AND hour < ?2
                 GROUP BY 1, 2"
            ),
            params![from, today],
        )?;
    }
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![ROLLED_KEY, today.to_string()],
    )?;
    tx.commit()
}

/// Makes the attached history hold what the RAM tables hold, in one transaction:
/// deletes the rows RAM no longer has, then writes the rows whose stored form is new
/// or changed. Returns the rows deleted and written.
fn mirror(conn: &mut Connection) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut rows = 0;
    for t in LASTING {
        rows += mirror_table(&tx, t)?;
    }
    tx.commit()?;
    Ok(rows)
}

fn mirror_table(conn: &Connection, t: &Lasting) -> rusqlite::Result<u64> {
    let Lasting {
        table,
        key,
        select,
        filter,
    } = t;
    let cols = history_columns(t);
    let exprs = select.join(", ");
    let deleted = conn.execute(
        &format!(
            "DELETE FROM history.{table} WHERE ({key}) NOT IN
                 (SELECT {key} FROM main.{table} WHERE {filter})"
        ),
        [],
    )?;
    let written = conn.execute(
        &format!(
            "INSERT OR REPLACE INTO history.{table} ({cols})
             SELECT {exprs} FROM main.{table} WHERE {filter}
             EXCEPT SELECT {cols} FROM history.{table}"
        ),
        [],
    )?;
    Ok((deleted + written) as u64)
}

/// The history's column names: each select expression's first word.
fn history_columns(t: &Lasting) -> String {
    t.select
        .iter()
        .map(|e| e.split_whitespace().next().unwrap_or(e))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What pruning for the budget removed.
#[derive(Debug, Default)]
struct Pruned {
    rows: u64,
    hosts: bool,
}

/// One way to make room, in the order [`PRUNE_STEPS`] tries them.
enum Step {
    /// Deletes the rows of a table's oldest day (never the days kept whatever the
    /// budget).
    Oldest {
        table: &'static str,
        column: &'static str,
    },
    /// Deletes the longest-unseen hosts ([`prune_hosts`]).
    Hosts,
}

/// Hour rows first (the days keep their sums), then hosts' oldest days, then hosts long
/// unseen with everything about them, and the devices' days last. Each step deletes the
/// same rows from the RAM tables and from the history.
const PRUNE_STEPS: &[Step] = &[
    Step::Oldest {
        table: "remote_host_hours",
        column: "hour",
    },
    Step::Oldest {
        table: "device_hours",
        column: "hour",
    },
    Step::Oldest {
        table: "remote_host_days",
        column: "day",
    },
    Step::Hosts,
    Step::Oldest {
        table: "device_days",
        column: "day",
    },
];

/// Remote hosts pruned per step: the longest unseen, with nothing left of them in the
/// rollups or the flows.
const HOSTS_PER_STEP: i64 = 500;

/// While the history file uses more than its budget, removes the oldest history step
/// by step (see [`PRUNE_STEPS`]), then gives the freed pages back to the file system.
fn prune_to_budget(conn: &mut Connection, budget: u64) -> rusqlite::Result<Pruned> {
    let mut pruned = Pruned::default();
    let low = (budget * LOW_WATER_PCT / 100).saturating_sub(WAL_CHECKPOINT_BYTES);
    if used_bytes(conn)? <= low {
        return Ok(pruned);
    }
    // Today's and yesterday's rows stay whatever the budget: they are what the owner
    // is looking at.
    let now = crate::time::now_ms();
    let keep_from = now - now.rem_euclid(DAY_MS) - DAY_MS;
    let mut steps = PRUNE_STEPS.iter();
    let mut step = steps.next();
    while let Some(s) = step {
        if used_bytes(conn)? <= low {
            break;
        }
        let removed = match s {
            Step::Oldest { table, column } => prune_oldest_day(conn, table, column, keep_from)?,
            Step::Hosts => {
                let n = prune_hosts(conn, keep_from)?;
                pruned.hosts |= n > 0;
                n
            }
        };
        if removed == 0 {
            step = steps.next();
        }
        pruned.rows += removed;
    }
    if pruned.rows > 0 {
        // Names only the pruned hosts' links used.
        pruned.rows += mirror(conn)?;
        crate::store::budget::incremental_vacuum_of(conn, "history", 0)?;
    }
    if used_bytes(conn)? > budget {
        log::warn!(
            "history is over its budget of {} KiB with only the last two days left",
            budget >> 10
        );
    }
    Ok(pruned)
}

/// Deletes the first day of `table`'s rows, in RAM and in the history, unless it is
/// not before `keep_from`. Returns the rows deleted.
fn prune_oldest_day(
    conn: &mut Connection,
    table: &str,
    column: &str,
    keep_from: i64,
) -> rusqlite::Result<u64> {
    let oldest: Option<i64> = conn.query_row(
        &format!("SELECT min({column}) FROM main.{table}"),
        [],
        |r| r.get(0),
    )?;
    let Some(oldest) = oldest else { return Ok(0) };
    let before = (oldest - oldest.rem_euclid(DAY_MS) + DAY_MS).min(keep_from);
    if oldest >= before {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut n = 0;
    for db in ["main", "history"] {
        n += tx.execute(
            &format!("DELETE FROM {db}.{table} WHERE {column} < ?1"),
            [before],
        )?;
    }
    tx.commit()?;
    Ok(n as u64)
}

/// The longest-unseen remote hosts with no flows, hours or days left, and their names
/// and ports, in RAM and in the history. Returns the rows deleted.
fn prune_hosts(conn: &mut Connection, keep_from: i64) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute(
        "CREATE TEMP TABLE IF NOT EXISTS prune_hosts (id INTEGER PRIMARY KEY)",
        [],
    )?;
    tx.execute("DELETE FROM temp.prune_hosts", [])?;
    tx.execute(
        "INSERT INTO temp.prune_hosts
         SELECT id FROM main.remote_hosts h
         WHERE last_seen < ?1
           AND NOT EXISTS (SELECT 1 FROM main.flows f WHERE f.remote_host_id = h.id)
           AND NOT EXISTS (SELECT 1 FROM main.remote_host_hours r WHERE r.remote_host_id = h.id)
           AND NOT EXISTS (SELECT 1 FROM main.remote_host_days r WHERE r.remote_host_id = h.id)
         ORDER BY last_seen LIMIT ?2",
        params![keep_from, HOSTS_PER_STEP],
    )?;
    let mut n = 0;
    for (db, table, id) in [
        ("main", "remote_host_domains", "remote_host_id"),
        ("main", "remote_host_ports", "remote_host_id"),
        ("main", "remote_host_minutes", "remote_host_id"),
        ("main", "remote_hosts", "id"),
        ("history", "remote_host_domains", "remote_host_id"),
        ("history", "remote_host_ports", "remote_host_id"),
        ("history", "remote_hosts", "id"),
    ] {
        n += tx.execute(
            &format!("DELETE FROM {db}.{table} WHERE {id} IN (SELECT id FROM temp.prune_hosts)"),
            [],
        )?;
    }
    tx.commit()?;
    Ok(n as u64)
}

/// Bytes of pages in use in the attached history (the file less its free pages).
fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    crate::store::budget::used_bytes_of(conn, "history")
}

/// Copies the built file to `dest` on persistent storage: a temporary file next to it,
/// fsync, rename over the old one, fsync the directory. Returns the bytes written.
fn install(built: &Path, dest: &Path) -> anyhow::Result<u64> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dest.with_extension("history-tmp");
    remove_if_there(&tmp)?;
    std::fs::copy(built, &tmp)
        .with_context(|| format!("copying {} to {}", built.display(), tmp.display()))?;
    let file = std::fs::File::open(&tmp).with_context(|| format!("opening {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("fsync {}", tmp.display()))?;
    let bytes = file.metadata()?.len();
    drop(file);
    // The log of the old file must not be applied to the new one.
    remove_if_there(&wal_of(dest))?;
    std::fs::rename(&tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))?;
    Ok(bytes)
}

fn wal_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn remove_if_there(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Bytes the calling thread caused to be written to storage so far (`write_bytes` of
/// `/proc/thread-self/io`); 0 where the kernel does not say.
fn thread_write_bytes() -> u64 {
    std::fs::read_to_string("/proc/thread-self/io")
        .ok()
        .and_then(|s| crate::memory::proc_field(&s, "write_bytes:"))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
