//! Opening the database and bringing its schema up to date.
//!
//! `schema.sql` is version 1. Later versions append forward-only migration scripts
//! (`migrations/NNNN_*.sql`) to [`MIGRATIONS`]; `PRAGMA user_version` records how many have been applied, so a new
//! binary opens any older database and an old binary refuses a newer one.

use std::path::Path;

use anyhow::{Context, bail};
use rusqlite::Connection;

/// Migration `i` brings a database from `user_version = i` to `i + 1`. The scripts are
/// embedded without their comments (`build.rs`).
pub const MIGRATIONS: &[&str] = &[
    include_str!(concat!(env!("OUT_DIR"), "/sql/schema.sql")),
    include_str!(concat!(env!("OUT_DIR"), "/sql/migrations/0002_dns.sql")),
    include_str!(concat!(env!("OUT_DIR"), "/sql/migrations/0003_system.sql")),
    include_str!(concat!(env!("OUT_DIR"), "/sql/migrations/0004_drops.sql")),
    include_str!(concat!(env!("OUT_DIR"), "/sql/migrations/0005_enrich.sql")),
    include_str!(concat!(env!("OUT_DIR"), "/sql/migrations/0006_detect.sql")),
    include_str!(concat!(env!("OUT_DIR"), "/sql/migrations/0007_flood.sql")),
    include_str!(concat!(
        env!("OUT_DIR"),
        "/sql/migrations/0008_flow_indexes.sql"
    )),
    include_str!(concat!(
        env!("OUT_DIR"),
        "/sql/migrations/0009_saved_searches.sql"
    )),
    include_str!(concat!(
        env!("OUT_DIR"),
        "/sql/migrations/0010_lean_flows.sql"
    )),
    include_str!(concat!(
        env!("OUT_DIR"),
        "/sql/migrations/0011_compact_flows.sql"
    )),
    include_str!(concat!(
        env!("OUT_DIR"),
        "/sql/migrations/0012_compact_dns.sql"
    )),
    include_str!(concat!(
        env!("OUT_DIR"),
        "/sql/migrations/0013_encrypted_dns.sql"
    )),
    include_str!(concat!(
        env!("OUT_DIR"),
        "/sql/migrations/0014_day_rollups.sql"
    )),
];

/// How long the writer's connection waits for a lock (readers never take one that
/// blocks it in WAL mode; this covers checkpoints and a second process by mistake).
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The schema version this binary writes.
pub const VERSION: u32 = MIGRATIONS.len() as u32;

/// Moves a database that SQLite cannot read aside — `<db>.corrupt-<unix time>`, with its
/// `-wal` and `-shm` — and says so loudly, so the caller starts on a fresh (or restored)
/// one instead of failing forever or wiping the owner's history silently. Returns the
/// quarantined path. A missing file, or one that is merely locked or unreadable (an
/// I/O or permission problem, which moving would not fix), is left alone.
///
/// The check is what opening costs anyway — the header, the schema and the version —
/// not a full `integrity_check`, which reads every page (seconds on a large database)
/// and would make every start slow; damage deeper inside surfaces as failed commits.
pub fn quarantine_if_damaged(path: &Path) -> anyhow::Result<Option<std::path::PathBuf>> {
    if !path.exists() {
        return Ok(None);
    }
    let readable = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| {
            c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))?;
            c.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                r.get::<_, i64>(0)
            })
        });
    let damage = match readable {
        Ok(_) => return Ok(None),
        Err(rusqlite::Error::SqliteFailure(e, msg))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ) =>
        {
            msg.unwrap_or_else(|| e.to_string())
        }
        Err(_) => return Ok(None),
    };
    let stamp = crate::time::now_ms() / 1000;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let target = path.with_file_name(format!("{name}.corrupt-{stamp}"));
    std::fs::rename(path, &target).with_context(|| {
        format!(
            "database {} is damaged ({damage}) and cannot be moved aside",
            path.display()
        )
    })?;
    for suffix in ["-wal", "-shm"] {
        let side = path.with_file_name(format!("{name}{suffix}"));
        if side.exists() {
            let _ = std::fs::rename(
                &side,
                target.with_file_name(format!("{name}.corrupt-{stamp}{suffix}")),
            );
        }
    }
    log::error!(
        "database {} is damaged ({damage}): moved it to {} (kept for recovery) and starting \
         a new database",
        path.display(),
        target.display()
    );
    Ok(Some(target))
}

/// Opens (creating if needed) the read-write connection the writer owns, with the
/// pragmas a router wants: WAL so readers never block the writer, `synchronous=NORMAL`
/// (a power cut loses at most the last commits, never consistency), a small page cache,
/// and incremental auto-vacuum so retention can hand pages back to the file system.
pub fn open_rw(path: &Path) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating database directory {}", dir.display()))?;
    }
    let conn =
        Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
    // auto_vacuum only takes effect before the first table exists, and on an existing
    // database the pragma is a write (it sets the header's incremental-vacuum flag in a
    // transaction, pragma.c): on a full disk that write fails with SQLITE_FULL, and
    // netmon could never start to prune. So it is set on a new file only. The others
    // write nothing once the file is in WAL mode: a full disk opens, and the writer's
    // storage budget makes room (`store::budget`).
    let fresh: i64 = conn
        .query_row("SELECT count(*) = 0 FROM sqlite_master", [], |r| r.get(0))
        .with_context(|| format!("reading the schema of {}", path.display()))?;
    if fresh == 1 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
            .with_context(|| format!("setting auto_vacuum on {}", path.display()))?;
    }
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA cache_size = -8192;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = OFF;",
    )
    .with_context(|| format!("setting pragmas on {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(64);
    // The query planner stability guarantee: a statement's plan does not depend on the
    // values bound to it. Without it SQLite re-prepares a cached statement whenever a
    // parameter it once looked at changes (a range bound the planner compared with a
    // partial index's condition): every device's first flow re-prepared the two
    // statements that give it its recent DNS queries, an eighth of the writer's
    // instructions in the ingest benchmark's fixed batch. The writer's statements are
    // written for the plan they need (an index on each filter).
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    migrate(&conn).with_context(|| format!("migrating {}", path.display()))?;
    Ok(conn)
}

/// Applies every migration the database has not seen yet, each in its own transaction.
pub fn migrate(conn: &Connection) -> anyhow::Result<()> {
    // The migration to compact flows converts addresses; test and writer SQL use them.
    super::addr::register(conn)?;
    let current: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > VERSION {
        bail!(
            "database schema version {current} is newer than this netmon understands ({VERSION}); \
             upgrade netmon or point db_path at another file"
        );
    }
    for (i, script) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let next = i as u32 + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {next};\nCOMMIT;"
        ))
        .with_context(|| format!("applying schema migration to version {next}"))?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_damaged_database_is_quarantined_never_wiped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // Not a database at all.
        std::fs::write(&path, b"these are not the pages you are looking for").unwrap();
        let moved = quarantine_if_damaged(&path).unwrap().expect("quarantined");
        assert!(!path.exists());
        assert_eq!(
            std::fs::read(&moved).unwrap(),
            b"these are not the pages you are looking for"
        );
        // A real database whose schema page is overwritten.
        drop(open_rw(&path).unwrap());
        let mut bytes = std::fs::read(&path).unwrap();
        for b in &mut bytes[100..1024] {
            *b = 0xa5;
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(quarantine_if_damaged(&path).unwrap().is_some());
        // Healthy and missing files stay where they are.
        drop(open_rw(&path).unwrap());
        assert_eq!(quarantine_if_damaged(&path).unwrap(), None);
        assert!(path.exists());
        assert_eq!(
            quarantine_if_damaged(&dir.path().join("none.db")).unwrap(),
            None
        );
        dir.close().unwrap();
    }

    #[test]
    fn fresh_database_gets_current_version_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = open_rw(&path).unwrap();
            let v: u32 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, VERSION);
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
        // Reopening applies nothing twice.
        let conn = open_rw(&path).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'flows'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        dir.close().unwrap();
    }

    /// Every released schema version upgrades to the current one with its data. Version 1
    /// is the first release; each later migration adds its own starting point here.
    #[test]
    fn every_released_version_migrates_to_current_keeping_data() {
        for from in 1..=VERSION {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.db");
            {
                let conn = Connection::open(&path).unwrap();
                super::super::addr::register(&conn).unwrap();
                for (i, script) in MIGRATIONS.iter().take(from as usize).enumerate() {
                    conn.execute_batch(script).unwrap();
                    conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                        .unwrap();
                }
                conn.execute_batch(
                    "INSERT INTO devices (ip, name, first_seen, last_seen) VALUES ('10.0.0.9', 'nas', 1, 2);
                     INSERT INTO remote_hosts (ip, first_seen, last_seen) VALUES ('198.51.100.1', 1, 2);",
                )
                .unwrap();
                // Before version 12, a DNS query and its answer held text.
                if (2..12).contains(&from) {
                    conn.execute_batch(
                        "INSERT INTO dns_names (id, name) VALUES (5, 'nas.example');
                         INSERT INTO dns_queries (id, ts, client, device_id, qname_id, qtype,
                             rcode, answers, source)
                         VALUES (3, 1, '10.0.0.9', 1, 5, 1, 0, 1, 'log');
                         INSERT INTO dns_answers (ip, client, ts, ttl, qname_id, query_id)
                         VALUES ('198.51.100.1', '10.0.0.9', 1, 60, 5, 3);",
                    )
                    .unwrap();
                }
                if from >= 12 {
                    conn.execute_batch(
                        "INSERT INTO dns_names (id, name) VALUES (5, 'nas.example');
                         INSERT INTO dns_queries (id, ts, client, device_id, qname_id, qtype,
                             rcode, answers, source)
                         VALUES (3, 1, netmon_ip_blob('10.0.0.9'), 1, 5, 1, 0, 1, 1);
                         INSERT INTO dns_answers (query_id, ip, client, ttl)
                         VALUES (3, netmon_ip_blob('198.51.100.1'), netmon_ip_blob('10.0.0.9'), 60);",
                    )
                    .unwrap();
                }
                // Before version 11, a flow row held text; a live TCP flow, SNATed.
                if from < 11 {
                    conn.execute_batch(
                        "INSERT INTO flows (ident, ct_id, family, proto, direction, src_ip, src_port,
                             dst_ip, dst_port, reply_src_ip, reply_src_port, reply_dst_ip,
                             reply_dst_port, state, status, first_seen, last_seen, device_id,
                             remote_host_id)
                         VALUES (42, 7, 4, 6, 'outbound', '10.0.0.9', 40000, '198.51.100.1', 443,
                             '198.51.100.1', 443, '203.0.113.1', 40000, 'ESTABLISHED', 8, 1, 2, 1,
                             1);",
                    )
                    .unwrap();
                } else {
                    conn.execute_batch(
                        "INSERT INTO flows (ident, ct_id, proto, direction, src_ip, src_port,
                             dst_ip, dst_port, reply_dst_ip, state, status, first_seen,
                             last_seen, device_id, remote_host_id)
                         VALUES (42, 7, 6, 0, netmon_ip_blob('10.0.0.9'), 40000,
                             netmon_ip_blob('198.51.100.1'), 443, netmon_ip_blob('203.0.113.1'),
                             3, 8, 1, 2, 1, 1);",
                    )
                    .unwrap();
                }
            }
            let conn = open_rw(&path).unwrap();
            let v: u32 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, VERSION, "from version {from}");
            let (name, ident): (String, i64) = conn
                .query_row(
                    "SELECT d.name, f.ident FROM flows f JOIN devices d ON d.id = f.device_id",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!((name.as_str(), ident), ("nas", 42), "from version {from}");
            // Every version reads back as the API shows it.
            let page = crate::store::flows::read::flows(
                &conn,
                &crate::store::flows::read::FlowFilter::default(),
            )
            .unwrap();
            let f = &page.flows[0];
            assert_eq!(
                (
                    f.direction.as_str(),
                    f.src_ip.as_str(),
                    f.dst_ip.as_str(),
                    f.reply_src_ip.as_str(),
                    f.reply_src_port,
                    f.reply_dst_ip.as_str(),
                    f.reply_dst_port,
                    f.state.as_deref(),
                    f.family,
                ),
                (
                    "outbound",
                    "10.0.0.9",
                    "198.51.100.1",
                    "198.51.100.1",
                    Some(443),
                    "203.0.113.1",
                    Some(40000),
                    Some("ESTABLISHED"),
                    4
                ),
                "from version {from}"
            );
            if from >= 2 {
                let q = &crate::store::dns::read::dns_queries(
                    &conn,
                    &crate::store::dns::read::DnsFilter::default(),
                )
                .unwrap()
                .queries[0];
                assert_eq!(
                    (q.client.as_str(), q.source.as_str(), q.name.as_deref()),
                    ("10.0.0.9", "log", Some("nas.example")),
                    "from version {from}"
                );
                let answer: (String, i64) = conn
                    .query_row(
                        "SELECT netmon_ip(a.ip), a.ttl FROM dns_answers a
                         JOIN dns_queries q ON q.id = a.query_id
                         WHERE q.client = ?1 AND a.client = q.client",
                        [crate::store::addr::IpBlob::new("10.0.0.9".parse().unwrap())],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .unwrap();
                assert_eq!(answer, ("198.51.100.1".into(), 60), "from version {from}");
            }
            if from < 11 {
                // Only what NAT changed is stored, as the writer stores it.
                let (reply_src, reply_dst_port): (Option<Vec<u8>>, Option<i64>) = conn
                    .query_row("SELECT reply_src_ip, reply_dst_port FROM flows", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .unwrap();
                assert_eq!((reply_src, reply_dst_port), (None, None));
            }
            dir.close().unwrap();
        }
    }

    #[test]
    fn newer_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        open_rw(&path)
            .unwrap()
            .execute_batch("PRAGMA user_version = 999")
            .unwrap();
        let err = format!("{:#}", open_rw(&path).unwrap_err());
        assert!(err.contains("newer"), "{err}");
        dir.close().unwrap();
    }
}
