//! Test data for the store's and the web's tests: a fresh database, a temp directory,
//! and inserters for flows and DNS queries with only the fields that tell rows apart.

use rusqlite::{Connection, params};

use crate::store::pool::register_functions;
use crate::web::query::{DnsQuery, FlowQuery};

/// A fresh database file at the current schema version, in WAL mode like the
/// writer's.
pub(crate) fn temp_db(name: &str) -> (tempdir::TempDir, Connection) {
    let dir = tempdir::TempDir::new(name);
    let conn = Connection::open(dir.db()).unwrap();
    conn.pragma_update(None, "journal_mode", "wal").unwrap();
    crate::store::schema::migrate(&conn).unwrap();
    register_functions(&conn).unwrap();
    (dir, conn)
}

/// A per-test directory under the system temp dir, removed on drop (no extra crate).
pub(crate) mod tempdir {
    use std::path::PathBuf;

    /// A per-test directory holding the database; `tempfile` removes it on drop.
    pub struct TempDir(tempfile::TempDir);

    impl TempDir {
        pub fn new(name: &str) -> TempDir {
            let dir = tempfile::Builder::new()
                .prefix(&format!("netmon-test-{name}-"))
                .tempdir()
                .unwrap();
            TempDir(dir)
        }

        pub fn db(&self) -> PathBuf {
            self.0.path().join("netmon.db")
        }
    }
}

/// The fields that tell test flows apart: id, direction, src, dst, dst port, bytes up
/// (down is twice that), last_seen, ended_at, device id.
pub(crate) type TestFlow<'a> = (
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
pub(crate) fn insert_flows(conn: &Connection, flows: &[TestFlow]) {
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
                crate::flow::Direction::parse(direction)
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

/// Two devices and four flows covering the directions and lifetimes the flow filters
/// tell apart.
pub(crate) fn seeded() -> (tempdir::TempDir, Connection) {
    let (dir, conn) = temp_db("read-seeded");
    conn.execute(
        "INSERT INTO devices (id, ip, name, first_seen, last_seen) VALUES \
         (1, '10.0.0.5', 'laptop', 0, 1000), (2, '10.0.0.6', NULL, 0, 2000)",
        [],
    )
    .unwrap();
    #[rustfmt::skip]
    insert_flows(&conn, &[
        (1, "outbound", "10.0.0.5", "198.51.100.1", Some(443), 100, 5000, None, Some(1)),
        (2, "outbound", "10.0.0.6", "198.51.100.2", Some(80), 900, 6000, None, Some(2)),
        (3, "router-local", "10.0.0.5", "10.0.0.1", Some(53), 50, 7000, None, Some(1)),
        (4, "lan", "10.0.0.5", "10.0.0.6", Some(22), 10, 7000, None, Some(1)),
        (5, "outbound", "10.0.0.5", "198.51.100.1", Some(443), 500, 4000, Some(4500), Some(1)),
        (6, "inbound", "192.0.2.9", "10.0.0.6", Some(8080), 70, 6000, None, Some(2)),
        (7, "outbound", "10.0.0.9", "198.51.100.3", None, 5, 3000, None, None),
    ]);
    (dir, conn)
}

/// The id of `name` in `dns_names`, inserting it when new.
pub(crate) fn name_id(conn: &Connection, name: &str) -> i64 {
    conn.execute("INSERT OR IGNORE INTO dns_names (name) VALUES (?)", [name])
        .unwrap();
    conn.query_row("SELECT id FROM dns_names WHERE name = ?", [name], |r| {
        r.get(0)
    })
    .unwrap()
}

/// A DNS query row: (id, ts, client, device id, name, qtype, rcode, answers, cname).
pub(crate) type TestQuery<'a> = (
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

pub(crate) fn insert_queries(conn: &Connection, rows: &[TestQuery]) {
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
pub(crate) fn set_flow_domain(
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

/// A flow query string's parameters, from `(key, value)` pairs.
pub(crate) fn flow_query(pairs: &[(&str, &str)]) -> FlowQuery {
    let mut q = FlowQuery::default();
    for (k, v) in pairs {
        let v = Some(v.to_string());
        match *k {
            "show" => q.show = v,
            "direction" => q.direction = v,
            "src" => q.src = v,
            "dst" => q.dst = v,
            "device" => q.device = v,
            "host" => q.host = v,
            "port" => q.port = v,
            "proto" => q.proto = v,
            "domain" => q.domain = v,
            "sort" => q.sort = v,
            "order" => q.order = v,
            "page" => q.page = v,
            "per_page" => q.per_page = v,
            _ => panic!("unknown key {k}"),
        }
    }
    q
}

/// A DNS log query string's parameters, from `(key, value)` pairs.
pub(crate) fn dns_query(pairs: &[(&str, &str)]) -> DnsQuery {
    let mut q = DnsQuery::default();
    for (k, v) in pairs {
        let v = Some(v.to_string());
        match *k {
            "device" => q.device = v,
            "client" => q.client = v,
            "name" => q.name = v,
            "type" => q.qtype = v,
            "rcode" => q.rcode = v,
            "page" => q.page = v,
            "per_page" => q.per_page = v,
            _ => panic!("unknown key {k}"),
        }
    }
    q
}

/// Percent-decoding of a canonical query string value (the inverse of the URL builder).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
