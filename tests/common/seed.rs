//! Rows for the HTTP tests' databases, inserted directly (no writer): a fresh database at
//! the current schema, and the flow and DNS rows most pages show.
//!
//! The same helpers exist as unit-test helpers of the store; integration tests cannot
//! use the library's `#[cfg(test)]` items, so these are their own copy.

use std::path::Path;

use rusqlite::{Connection, params};
use tempfile::TempDir;

/// The database file inside a test's temporary directory.
pub fn db_path(dir: &TempDir) -> std::path::PathBuf {
    dir.path().join("netmon.db")
}

/// A fresh database file at the current schema version in its own temporary directory,
/// in WAL mode like the writer's.
pub fn temp_db(name: &str) -> (TempDir, Connection) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("netmon-test-{name}-"))
        .tempdir()
        .unwrap();
    let conn = open(&db_path(&dir));
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    netmon::store::schema::migrate(&conn).unwrap();
    (dir, conn)
}

/// A connection to a test database, with netmon's SQL functions as the read pool has
/// them.
pub fn open(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    netmon::store::pool::register_functions(&conn).unwrap();
    conn
}

/// The fields that tell test flows apart: id, direction, src, dst, dst port, bytes up
/// (down is twice that), last_seen, ended_at, device id.
pub type TestFlow<'a> = (
    i64,
    &'a str,
    &'a str,
    &'a str,
    Option<u16>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

/// Inserts test flows; the fields not in [`TestFlow`] are fixed (TCP, v4, started a
/// minute before `last_seen`, source port 40000 + id).
pub fn insert_flows(conn: &Connection, flows: &[TestFlow]) {
    for (id, direction, src, dst, dport, bytes, last_seen, ended_at, device_id) in flows {
        conn.execute(
            "INSERT INTO flows (id, ident, ct_id, proto, direction, src_ip, src_port, \
             dst_ip, dst_port, reply_dst_ip, state, status, bytes_up, bytes_down, \
             packets_up, packets_down, first_seen, last_seen, ended_at, device_id) \
             VALUES (?1, ?1, ?1 + 1000, 6, ?2, netmon_ip_blob(?3), 40000 + ?1, \
                     netmon_ip_blob(?4), ?5, netmon_ip_blob('203.0.113.1'), 3, 14, ?6, ?6 * 2, \
                     10, 20, ?7 - 60000, ?7, ?8, ?9)",
            params![
                id,
                netmon::flow::Direction::parse(direction)
                    .expect("a direction name")
                    .code(),
                src,
                dst,
                dport,
                bytes,
                last_seen,
                ended_at,
                device_id
            ],
        )
        .unwrap();
    }
}

/// The id of `name` in `dns_names`, inserting it when new.
pub fn name_id(conn: &Connection, name: &str) -> i64 {
    conn.execute("INSERT OR IGNORE INTO dns_names (name) VALUES (?)", [name])
        .unwrap();
    conn.query_row("SELECT id FROM dns_names WHERE name = ?", [name], |r| {
        r.get(0)
    })
    .unwrap()
}

/// A DNS query row: (id, ts, client, device id, name, qtype, rcode, answers, cname).
pub type TestQuery<'a> = (
    i64,
    i64,
    &'a str,
    Option<i64>,
    &'a str,
    u16,
    Option<u16>,
    i64,
    Option<&'a str>,
);

pub fn insert_queries(conn: &Connection, rows: &[TestQuery]) {
    for (id, ts, client, device, name, qtype, rcode, answers, cname) in rows {
        let qname = name_id(conn, name);
        let cname = cname.map(|c| name_id(conn, c));
        conn.execute(
            "INSERT INTO dns_queries (id, ts, client, device_id, qname_id, qtype, rcode, \
             answers, cname_id, source) \
             VALUES (?, ?, netmon_ip_blob(?), ?, ?, ?, ?, ?, ?, 0)",
            params![id, ts, client, device, qname, qtype, rcode, answers, cname],
        )
        .unwrap();
    }
}

/// Sets a flow's domain (and CNAME target) and match confidence.
pub fn set_flow_domain(
    conn: &Connection,
    flow: i64,
    name: &str,
    cname: Option<&str>,
    dns_match: i64,
) {
    let qname = name_id(conn, name);
    let cname = cname.map(|c| name_id(conn, c));
    conn.execute(
        "UPDATE flows SET qname_id = ?, cname_id = ?, dns_match = ? WHERE id = ?",
        params![qname, cname, dns_match, flow],
    )
    .unwrap();
}
