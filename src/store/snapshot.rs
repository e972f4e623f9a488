//! Flash-friendly persistence (DESIGN §4).
//!
//! Flash wears out and a router's `/tmp` is RAM. So by default the live database is in
//! RAM and a consistent copy is written to persistent storage every `persist_interval_s`
//! (default 1 h) and at clean shutdown, and restored at start when the RAM copy is gone
//! (after a reboot). A power cut loses at most one interval and never corrupts: the copy
//! is made with `VACUUM INTO` (a transactionally consistent, compacted database) into a
//! temporary file that is fsync'ed and then renamed over the previous snapshot.
//!
//! A user whose `db_path` is already on persistent storage (a USB disk) needs no
//! snapshots: with `persist = "auto"` they are on only when `db_path` is on tmpfs/ramfs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use crate::config::{Config, Persist};

/// `statfs(2)` magic numbers of RAM-backed file systems (`linux/magic.h`).
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Periodic snapshots of the writer's database to persistent storage.
pub struct Snapshots {
    path: PathBuf,
    interval: Duration,
    next: Instant,
    /// The writer's commit sequence number the last snapshot saw: an idle router (a
    /// night without traffic) rewrites nothing to flash.
    taken_at_seq: Option<u64>,
}

impl Snapshots {
    /// The snapshot schedule `config` asks for, or `None` when snapshots are off.
    pub fn from_config(config: &Config) -> Option<Snapshots> {
        if !enabled(config) {
            return None;
        }
        let interval = Duration::from_secs(config.persist_interval_s);
        Some(Snapshots {
            path: config.persist_path.clone(),
            interval,
            next: Instant::now() + interval,
            taken_at_seq: None,
        })
    }

    /// Takes a snapshot when the interval has passed and something was committed since
    /// the last one (`seq` is the writer's commit counter).
    pub fn run_if_due(&mut self, conn: &Connection, seq: u64) {
        if Instant::now() < self.next {
            return;
        }
        self.next = Instant::now() + self.interval;
        self.take_if_changed(conn, seq);
    }

    /// Takes a snapshot now unless nothing was committed since the last one (used at
    /// shutdown too), logging the outcome.
    pub fn take_if_changed(&mut self, conn: &Connection, seq: u64) {
        if self.taken_at_seq == Some(seq) {
            metrics::counter!("netmon_snapshots_skipped_total").increment(1);
            return;
        }
        if self.take_logged(conn) {
            self.taken_at_seq = Some(seq);
        }
    }

    fn take_logged(&self, conn: &Connection) -> bool {
        let started = Instant::now();
        match take(conn, &self.path) {
            Ok(bytes) => {
                metrics::counter!("netmon_snapshots_total").increment(1);
                metrics::counter!("netmon_snapshot_bytes_written_total").increment(bytes);
                metrics::gauge!("netmon_snapshot_last_success_timestamp_seconds")
                    .set(crate::time::now_ms() as f64 / 1000.0);
                log::info!(
                    "snapshot: {} bytes to {} in {} ms",
                    bytes,
                    self.path.display(),
                    started.elapsed().as_millis()
                );
                true
            }
            Err(e) => {
                metrics::counter!("netmon_snapshot_failures_total").increment(1);
                log::error!("snapshot to {} failed: {e:#}", self.path.display());
                false
            }
        }
    }
}

/// Whether `config` turns snapshots on for its `db_path`.
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

/// True when `dir` (or its nearest existing ancestor) lives on tmpfs or ramfs.
fn is_ram_backed(dir: &Path) -> std::io::Result<bool> {
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"));
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // SAFETY: `st` is a plain C struct statfs fills; `c` is a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between libcs
    let kind = st.f_type as i64;
    Ok(kind == TMPFS_MAGIC || kind == RAMFS_MAGIC)
}

/// Writes a consistent copy of `conn`'s database to `dest`: `VACUUM INTO` a temporary
/// file next to it, fsync, rename over the old snapshot, fsync the directory. Returns the
/// bytes written.
pub fn take(conn: &Connection, dest: &Path) -> anyhow::Result<u64> {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dest.with_extension("snapshot-tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", tmp.display())),
    }
    let tmp_text = tmp.to_str().context("snapshot path is not valid UTF-8")?;
    conn.execute("VACUUM INTO ?1", [tmp_text])
        .with_context(|| format!("VACUUM INTO {}", tmp.display()))?;
    let file = std::fs::File::open(&tmp).with_context(|| format!("opening {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("fsync {}", tmp.display()))?;
    let bytes = file.metadata()?.len();
    drop(file);
    std::fs::rename(&tmp, dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))?;
    Ok(bytes)
}

/// At start: when the working database is missing (RAM was cleared by a reboot) and a
/// snapshot exists, copy the snapshot into place. A snapshot that fails SQLite's
/// `quick_check` is left alone and reported; netmon then starts empty rather than on
/// corrupt data. Returns whether a snapshot was restored.
pub fn restore_if_missing(config: &Config) -> anyhow::Result<bool> {
    if !enabled(config) || config.db_path.exists() || !config.persist_path.exists() {
        return Ok(false);
    }
    let snapshot = &config.persist_path;
    let check: String = Connection::open_with_flags(snapshot, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("PRAGMA quick_check", [], |r| r.get(0)))
        .with_context(|| format!("checking snapshot {}", snapshot.display()))?;
    if check != "ok" {
        anyhow::bail!(
            "snapshot {} is damaged ({check}); move it away to start with an empty database",
            snapshot.display()
        );
    }
    if let Some(dir) = config
        .db_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = config.db_path.with_extension("restore-tmp");
    std::fs::copy(snapshot, &tmp)
        .with_context(|| format!("copying {} to {}", snapshot.display(), tmp.display()))?;
    // `fs::copy` gives the copy the snapshot's mode, umask or not, and a snapshot from
    // an older netmon may be 0644: the working database gets a new database's mode.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o640))
            .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &config.db_path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), config.db_path.display()))?;
    log::info!(
        "restored {} from snapshot {}",
        config.db_path.display(),
        snapshot.display()
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;

    #[test]
    fn snapshot_is_consistent_and_restores_when_the_ram_copy_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            db_path: dir.path().join("ram/netmon.db"),
            persist: Persist::On,
            persist_path: dir.path().join("flash/netmon.db"),
            ..Config::default()
        };
        {
            let conn = schema::open_rw(&config.db_path).unwrap();
            conn.execute(
                "INSERT INTO devices (ip, first_seen, last_seen) VALUES ('10.0.0.2', 1, 1)",
                [],
            )
            .unwrap();
            let bytes = take(&conn, &config.persist_path).unwrap();
            assert!(bytes > 0);
            // Written after the snapshot: lost with the RAM copy, as documented.
            conn.execute(
                "INSERT INTO devices (ip, first_seen, last_seen) VALUES ('10.0.0.3', 2, 2)",
                [],
            )
            .unwrap();
        }
        assert!(
            !restore_if_missing(&config).unwrap(),
            "RAM copy still there"
        );
        std::fs::remove_file(&config.db_path).unwrap();
        let _ = std::fs::remove_file(config.db_path.with_extension("db-wal"));
        let _ = std::fs::remove_file(config.db_path.with_extension("db-shm"));
        assert!(restore_if_missing(&config).unwrap());
        let conn = schema::open_rw(&config.db_path).unwrap();
        let ips: Vec<String> = conn
            .prepare("SELECT ip FROM devices")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(ips, vec!["10.0.0.2".to_owned()]);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        dir.close().unwrap();
    }

    #[test]
    fn nothing_committed_since_the_last_snapshot_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            db_path: dir.path().join("ram.db"),
            persist: Persist::On,
            persist_path: dir.path().join("flash.db"),
            ..Config::default()
        };
        let conn = schema::open_rw(&config.db_path).unwrap();
        let mut s = Snapshots::from_config(&config).unwrap();
        s.take_if_changed(&conn, 1);
        assert!(config.persist_path.exists());
        std::fs::remove_file(&config.persist_path).unwrap();
        s.take_if_changed(&conn, 1);
        assert!(!config.persist_path.exists(), "idle: no flash write");
        s.take_if_changed(&conn, 2);
        assert!(config.persist_path.exists());
        dir.close().unwrap();
    }

    #[test]
    fn damaged_snapshot_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            db_path: dir.path().join("ram/netmon.db"),
            persist: Persist::On,
            persist_path: dir.path().join("flash.db"),
            ..Config::default()
        };
        std::fs::write(&config.persist_path, b"not a database at all, just text").unwrap();
        let err = format!("{:#}", restore_if_missing(&config).unwrap_err());
        assert!(err.contains("flash.db"), "{err}");
        assert!(!config.db_path.exists());
        dir.close().unwrap();
    }

    #[test]
    fn auto_is_on_only_for_ram_backed_paths() {
        let mut config = Config {
            persist: Persist::Auto,
            ..Config::default()
        };
        config.db_path = PathBuf::from("/dev/shm/netmon-test/netmon.db");
        assert!(enabled(&config), "/dev/shm is tmpfs");
        config.db_path = PathBuf::from("/proc/netmon.db");
        assert!(!enabled(&config), "procfs is not RAM storage for us");
    }
}
