//! The history store in the lab: the working database in RAM, what lasts mirrored to a
//! history file on "flash". A `kill -9` followed by the loss of the RAM database (a
//! reboot) restarts on the history: devices, names, rollups, incidents, rules, baselines
//! and saved searches are there, raw flows are not. And a power cut — the history on a
//! filesystem that really discards what was not fsync'ed (`tests/lab/cutfs.py`, which
//! also has no shared mmap, like JFFS2) — loses at most one interval and never corrupts
//! the file, 20 times out of 20.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// The shop's address in the lab's wan DNS zone.
const SHOP4: &str = "203.0.113.84";

/// Removes the RAM database and the router's connection table, as a reboot does (a
/// connection still in the table would be stored again by the next start's dump).
fn reboot(lab: &Lab) {
    lab.conntrack(&["-F"]);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", lab.db_path().display()));
    }
}

/// A writing connection to the RAM database, for the rows the owner adds in the UI.
fn db_rw(lab: &Lab) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(lab.db_path()).expect("the RAM database");
    c.busy_timeout(Duration::from_secs(5)).ok();
    // As netmon's own connection: rollups of hosts a test makes up.
    c.execute_batch("PRAGMA foreign_keys = OFF").ok();
    c
}

/// A read-only connection to the history file.
fn history(path: &Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    c.busy_timeout(Duration::from_secs(5)).ok();
    c
}

fn count(c: &rusqlite::Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// How many syncs netmon has finished.
fn syncs(lab: &Lab) -> f64 {
    metric(&lab.metrics(), "netmon_history_syncs_total").unwrap_or(0.0)
}

/// Waits until netmon has finished a sync that began after this call.
#[track_caller]
fn wait_for_a_sync(lab: &Lab, within: Duration) {
    let before = syncs(lab);
    assert!(
        wait_until(within, || syncs(lab) >= before + 2.0),
        "no history sync within {within:?}; log:\n{}",
        tail(&lab.netmon_log(), 30)
    );
}

#[test]
fn history_survives_kill9_and_a_reboot() {
    let lab = Lab::up("persist");
    let extra = "persist = \"on\"\npersist_interval_s = 5\n";
    let mut nm = lab.start_netmon(extra);
    let answer = lab.client("lan", &["dns", RTR_LAN4, "shop.example.test"]);
    assert_eq!(answer.trim(), SHOP4);
    for port in [47401, 47402] {
        lab.download("lan", port, &format!("http://{SHOP4}/small.bin"));
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            lab.db_i64("SELECT count(*) FROM flows WHERE dst_port = 80 AND qname_id IS NOT NULL")
                >= 2
        }),
        "the named downloads were not stored"
    );
    // What the owner adds in the UI, written as the UI's commands write it.
    let device = lab.db_i64(&format!(
        "SELECT device_id FROM device_addrs WHERE ip = '{CLIENT4}'"
    ));
    let now = now_ms();
    db_rw(&lab)
        .execute_batch(&format!(
            "UPDATE devices SET name = 'lab laptop' WHERE id = {device};
             INSERT INTO rules (action, domain, created_at) VALUES ('allow', 'example.test', {now});
             INSERT INTO incidents (fingerprint, device_id, codes, title, first_seen, last_seen, max_score)
                 VALUES ('lab', {device}, 'NEW_DST', 'lab laptop: a new destination', {now}, {now}, 60);
             INSERT INTO device_baselines (device_id, computed_at, history_from, minutes)
                 VALUES ({device}, {now}, {now}, 60)
                 ON CONFLICT (device_id) DO UPDATE SET minutes = 60;
             INSERT INTO saved_searches (name, url, created_at, updated_at)
                 VALUES ('shop', '/flows?domain=shop.example.test', {now}, {now});"
        ))
        .expect("the owner's rows");
    wait_for_a_sync(&lab, Duration::from_secs(20));
    let flash = lab.dir.join("persist.db");
    {
        let h = history(&flash);
        assert_eq!(
            count(
                &h,
                "SELECT count(*) FROM sqlite_master WHERE name = 'flows'"
            ),
            0
        );
        assert_eq!(
            count(&h, "SELECT count(*) FROM devices WHERE name = 'lab laptop'"),
            1
        );
        let mode: String = h
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
    let metrics = lab.metrics();
    assert!(metric(&metrics, "netmon_history_bytes_written_total").unwrap_or(0.0) > 0.0);

    nm.sigkill();
    reboot(&lab);
    let mut nm = lab.start_netmon(extra);
    assert_eq!(
        lab.db_i64("SELECT count(*) FROM flows WHERE dst_port = 80"),
        0,
        "raw data is RAM's"
    );
    let db = lab.db();
    assert_eq!(
        db.query_row(
            &format!("SELECT name FROM devices WHERE id = {device}"),
            [],
            |r| r.get::<_, String>(0)
        )
        .unwrap(),
        "lab laptop"
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM remote_hosts h JOIN remote_host_domains d ON d.remote_host_id = h.id
                 JOIN dns_names n ON n.id = d.qname_id
                 WHERE h.ip = '{SHOP4}' AND n.name = 'shop.example.test'"
            )
        ),
        1,
        "the host keeps its name"
    );
    assert!(
        count(
            &db,
            &format!(
                "SELECT coalesce(sum(bytes_down), 0) FROM device_hours WHERE device_id = {device}"
            )
        ) > 0,
        "the device's hour rollups"
    );
    assert!(
        count(
            &db,
            &format!("SELECT bytes_down FROM devices WHERE id = {device}")
        ) > 0,
        "the device's total, rebuilt from its rollups"
    );
    for table in ["rules", "incidents", "device_baselines", "saved_searches"] {
        assert!(
            count(&db, &format!("SELECT count(*) FROM {table}")) >= 1,
            "{table}"
        );
    }
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    assert!(
        std::fs::read_to_string(lab.netmon_log())
            .unwrap_or_default()
            .contains("of history from"),
        "netmon logged the load"
    );
    // The pages show it: the device by its name.
    assert!(lab.http_get("/devices").contains("lab laptop"));
    // And it keeps recording.
    lab.download("lan", 47410, &format!("http://{SHOP4}/small.bin"));
    assert!(
        wait_until(Duration::from_secs(5), || {
            lab.db_i64("SELECT count(*) FROM flows WHERE src_port = 47410") == 1
        }),
        "a flow after the restart was not recorded"
    );
    let (status, took) = nm.sigterm();
    assert!(
        status.is_some(),
        "netmon did not stop on SIGTERM ({took:?})"
    );
}

/// `tests/lab/cutfs.py` mounted on `mount`, backed by `backing`; unmounted on drop.
struct CutFs {
    child: Option<Child>,
    mount: PathBuf,
}

impl CutFs {
    fn mount(backing: &Path, mount: &Path, seed: u64) -> CutFs {
        std::fs::create_dir_all(backing).expect("backing dir");
        std::fs::create_dir_all(mount).expect("mount point");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/cutfs.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(backing)
            .arg(mount)
            .args(["--seed", &seed.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 tests/lab/cutfs.py (python3-fusepy)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("cutfs output");
        let fs = CutFs {
            child: Some(child),
            mount: mount.to_owned(),
        };
        assert_eq!(line.trim(), "ready", "cutfs did not mount");
        fs
    }

    /// The power goes: what was not fsync'ed is lost (but a random prefix of it).
    /// Returns what cutfs says it kept and dropped.
    fn cut(mut self) -> String {
        let child = self.child.take().expect("mounted");
        // SAFETY: plain kill(2) of the process this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGUSR1) };
        let out = child.wait_with_output().expect("cutfs exit");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

impl Drop for CutFs {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mount)
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_power_cut_loses_at_most_one_interval_and_never_corrupts_the_history() {
    let lab = Lab::up("pwrcut");
    let backing = lab.dir.join("flash-backing");
    let mount = lab.dir.join("flash");
    let path = mount.join("history.db");
    let extra = format!(
        "persist = \"on\"\npersist_interval_s = 2\npersist_path = \"{}\"\n",
        path.display()
    );
    let mut seed = now_ms() as u64;
    let mut cuts_that_dropped = 0;
    // Markers (saved searches) that a finished sync made durable, and must survive.
    let mut durable: Vec<String> = Vec::new();
    for round in 0..20 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let fs = CutFs::mount(&backing, &mount, seed >> 33);
        let mut nm = lab.start_netmon(&extra);
        // Every marker made durable in an earlier round came back.
        let db = db_rw(&lab);
        for name in &durable {
            assert_eq!(
                count(
                    &db,
                    &format!("SELECT count(*) FROM saved_searches WHERE name = '{name}'")
                ),
                1,
                "round {round}: {name} was lost; log:\n{}",
                tail(&lab.netmon_log(), 30)
            );
        }
        let now = now_ms();
        let add = |name: &str| {
            db.execute(
                "INSERT INTO saved_searches (name, url, created_at, updated_at)
                 VALUES (?1, '/flows', ?2, ?2)",
                rusqlite::params![name, now],
            )
            .expect("marker");
        };
        let synced = format!("synced {round}");
        add(&synced);
        lab.download("lan", 47500 + round, "http://203.0.113.80/small.bin");
        wait_for_a_sync(&lab, Duration::from_secs(20));
        durable.push(synced);
        // A change still in the interval when the power goes, with an hour of 20 000
        // hosts' rollups so that the next sync takes a while; the power goes in the
        // middle of its commit, while its pages are being appended to the log.
        add(&format!("pending {round}"));
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
             INSERT OR REPLACE INTO remote_host_hours (remote_host_id, hour, bytes_up, bytes_down)
             SELECT 100000 + i, ?1, i, i FROM n",
            [(now / 3_600_000 - 1000 - i64::from(round)) * 3_600_000],
        )
        .expect("an hour of rollups");
        // Unsynced: the log as netmon sees it (through the mount) is longer than what
        // reached the flash (the backing file).
        let wal = "history.db-wal";
        let len = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while len(mount.join(wal)) <= len(backing.join(wal)) {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: no sync was writing; log:\n{}",
                tail(&lab.netmon_log(), 30)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis((seed >> 40) % 30));
        nm.sigkill();
        let said = fs.cut();
        if said
            .lines()
            .any(|l| l.contains("dropped") && !l.ends_with("dropped 0"))
        {
            cuts_that_dropped += 1;
        }
        // The file as the flash holds it after the cut (a clean mount that drops
        // nothing more): intact, with everything synced.
        let fs = CutFs::mount(&backing, &mount, 0);
        {
            // Read-write: a hot journal the cut left is rolled back, as netmon's next
            // start would.
            // On the VFS netmon uses: cutfs has no shared memory for a -shm file.
            let h = rusqlite::Connection::open_with_flags(
                format!("file:{}?vfs=unix-excl", path.display()),
                rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_URI,
            )
            .expect("history after the cut");
            let check: String = h
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .expect("integrity_check");
            assert_eq!(check, "ok", "round {round} (cut: {said})");
        }
        drop(fs);
        reboot(&lab);
    }
    eprintln!("{cuts_that_dropped} of 20 cuts dropped unsynced writes");
    assert!(
        cuts_that_dropped > 0,
        "no cut fell in the middle of a sync: the test proved nothing"
    );
}
