//! Who talked to whom: a device's top destinations and ports, a remote host's devices —
//! the "investigation" sections of the device and host pages.
//!
//! There is no per-(device, host) rollup, so these read `flows` through the
//! `flows_device_last_seen (device_id, last_seen, …)` / `flows_remote (remote_host_id,
//! first_seen)` indexes, newest first, and stop after [`MAX_FLOWS_SCANNED`] flows: a page costs
//! the same for a device with 50 flows a day as for one with 50 000, and says when it
//! looked at only the latest ones.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::store::devices::device_label_sql;

/// The most flows one section reads: bounds the scan on a router-class CPU whatever the
/// device's history.
pub const MAX_FLOWS_SCANNED: i64 = 20_000;
/// Rows shown per section.
pub const TOP_N: i64 = 10;

/// One remote host a device talked to, with the traffic of the flows read.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerHost {
    pub remote_host_id: i64,
    pub ip: String,
    /// The name the device's latest flow with a name reached the host as.
    pub domain: Option<String>,
    pub rdns: Option<String>,
    pub org: Option<String>,
    pub flows: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub last_seen: i64,
}

/// A destination port (with protocol) a device used.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerPort {
    pub proto: u8,
    pub port: Option<u16>,
    pub flows: i64,
    pub hosts: i64,
    pub bytes: i64,
}

/// A device that talked to a remote host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PeerDevice {
    pub device_id: i64,
    pub label: String,
    pub flows: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub last_seen: i64,
}

/// A section's rows and how many flows they were computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers<T> {
    pub rows: Vec<T>,
    /// Flows read; equal to [`MAX_FLOWS_SCANNED`] when older ones were left out.
    pub scanned: i64,
}

impl<T> Peers<T> {
    pub fn capped(&self) -> bool {
        self.scanned >= MAX_FLOWS_SCANNED
    }
}

/// A device's flows since `since_ms` (at most the latest [`MAX_FLOWS_SCANNED`]).
const DEVICE_FLOWS: &str =
    "SELECT remote_host_id, proto, dst_port, bytes_up, bytes_down, last_seen,
            qname_id
     FROM flows WHERE device_id = ?1 AND last_seen >= ?2 AND first_seen >= ?2
     ORDER BY last_seen DESC LIMIT ?3";

/// A remote host's flows since `since_ms` (at most the latest [`MAX_FLOWS_SCANNED`]).
const HOST_FLOWS: &str = "SELECT device_id, bytes_up, bytes_down, last_seen
     FROM flows WHERE remote_host_id = ?1 AND first_seen >= ?2
     ORDER BY first_seen DESC LIMIT ?3";

/// Runs one section's query — `?1` the device or host, `?2` the start, `?3` the scan
/// bound, `?4` the rows shown, its column `scanned_col` the flows read — mapping each
/// row. With no rows, the flows read are counted apart (no row carries the count).
fn section<T>(
    c: &Connection,
    sql: &str,
    id: i64,
    since_ms: i64,
    scanned_col: usize,
    flows_sql: &str,
    map: impl Fn(&rusqlite::Row) -> rusqlite::Result<T>,
) -> rusqlite::Result<Peers<T>> {
    let mut scanned = 0;
    let rows = c
        .prepare_cached(sql)?
        .query_map(params![id, since_ms, MAX_FLOWS_SCANNED, TOP_N], |r| {
            scanned = r.get(scanned_col)?;
            map(r)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if rows.is_empty() {
        scanned = c
            .prepare_cached(&format!("SELECT count(*) FROM ({flows_sql})"))?
            .query_row(params![id, since_ms, MAX_FLOWS_SCANNED], |r| r.get(0))?;
    }
    Ok(Peers { rows, scanned })
}

/// The remote hosts a device exchanged the most bytes with since `since_ms`.
pub fn device_top_hosts(
    c: &Connection,
    device_id: i64,
    since_ms: i64,
) -> rusqlite::Result<Peers<PeerHost>> {
    let sql = format!(
        "WITH f AS ({DEVICE_FLOWS})
         SELECT h.id, h.ip, h.rdns, h.org, count(*), sum(f.bytes_up), sum(f.bytes_down), max(f.last_seen),
                (SELECT count(*) FROM f),
                (SELECT n.name FROM f AS g JOIN dns_names n ON n.id = g.qname_id
                 WHERE g.remote_host_id = h.id ORDER BY g.last_seen DESC LIMIT 1)
         FROM f JOIN remote_hosts h ON h.id = f.remote_host_id
         GROUP BY h.id ORDER BY sum(f.bytes_up) + sum(f.bytes_down) DESC, h.id LIMIT ?4"
    );
    section(c, &sql, device_id, since_ms, 8, DEVICE_FLOWS, |r| {
        Ok(PeerHost {
            remote_host_id: r.get(0)?,
            ip: r.get(1)?,
            rdns: r.get(2)?,
            org: r.get(3)?,
            flows: r.get(4)?,
            bytes_up: r.get(5)?,
            bytes_down: r.get(6)?,
            last_seen: r.get(7)?,
            domain: r.get(9)?,
        })
    })
}

/// The destination ports a device used most since `since_ms` (ICMP: no port).
pub fn device_top_ports(
    c: &Connection,
    device_id: i64,
    since_ms: i64,
) -> rusqlite::Result<Peers<PeerPort>> {
    let sql = format!(
        "WITH f AS ({DEVICE_FLOWS})
         SELECT proto, dst_port, count(*), count(DISTINCT remote_host_id), sum(bytes_up + bytes_down),
                (SELECT count(*) FROM f)
         FROM f GROUP BY proto, dst_port ORDER BY count(*) DESC, proto, dst_port LIMIT ?4"
    );
    section(c, &sql, device_id, since_ms, 5, DEVICE_FLOWS, |r| {
        Ok(PeerPort {
            proto: r.get(0)?,
            port: r.get(1)?,
            flows: r.get(2)?,
            hosts: r.get(3)?,
            bytes: r.get(4)?,
        })
    })
}

/// The devices that talked to a remote host since `since_ms`, most bytes first.
pub fn host_devices(
    c: &Connection,
    host_id: i64,
    since_ms: i64,
) -> rusqlite::Result<Peers<PeerDevice>> {
    let sql = format!(
        "WITH f AS ({HOST_FLOWS})
         SELECT d.id, {label}, count(*), sum(f.bytes_up), sum(f.bytes_down),
                max(f.last_seen), (SELECT count(*) FROM f)
         FROM f JOIN devices d ON d.id = f.device_id
         GROUP BY d.id ORDER BY sum(f.bytes_up) + sum(f.bytes_down) DESC, d.id LIMIT ?4",
        label = device_label_sql!()
    );
    section(c, &sql, host_id, since_ms, 6, HOST_FLOWS, |r| {
        Ok(PeerDevice {
            device_id: r.get(0)?,
            label: r.get(1)?,
            flows: r.get(2)?,
            bytes_up: r.get(3)?,
            bytes_down: r.get(4)?,
            last_seen: r.get(5)?,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdata::temp_db;

    fn seed(c: &Connection) {
        c.execute_batch(
            "INSERT INTO devices (id, ip, name, first_seen, last_seen, bytes_up, bytes_down, flows)
               VALUES (1, '10.0.0.2', 'laptop', 0, 0, 0, 0, 0), (2, '10.0.0.3', NULL, 0, 0, 0, 0, 0);
             INSERT INTO remote_hosts (id, ip, first_seen, last_seen, rdns, org, bytes_up, bytes_down, flows)
               VALUES (1, '198.51.100.1', 0, 0, 'a.example', 'Org A', 0, 0, 0),
                      (2, '198.51.100.2', 0, 0, NULL, NULL, 0, 0, 0);",
        )
        .unwrap();
        let mut ins = c
            .prepare(
                "INSERT INTO flows (ident, ct_id, proto, direction, src_ip, src_port, dst_ip, dst_port,
                                    reply_dst_ip, status, bytes_up, packets_up, bytes_down,
                                    packets_down, first_seen, last_seen, device_id, remote_host_id)
                 VALUES (?1, ?1, ?2, 0, netmon_ip_blob('10.0.0.2'), 1000,
                         netmon_ip_blob('198.51.100.1'), ?3, netmon_ip_blob('203.0.113.1'), 0,
                         ?4, 1, ?5, 1, ?6, ?6, ?7, ?8)",
            )
            .unwrap();
        // device 1: 3 flows to host 1 on 443 (big), 1 to host 2 on 53/udp, 1 old one.
        // id, proto, port, bytes up, bytes down, time, device, host
        type Row = (i64, u8, Option<u16>, i64, i64, i64, i64, i64);
        let rows: [Row; 6] = [
            (1, 6, Some(443), 1000, 50_000, 5_000, 1, 1),
            (2, 6, Some(443), 10, 10, 5_100, 1, 1),
            (3, 6, Some(443), 10, 10, 5_200, 1, 1),
            (4, 17, Some(53), 60, 200, 5_300, 1, 2),
            (5, 6, Some(22), 9, 9, 10, 1, 2),
            (6, 1, None, 64, 64, 5_400, 2, 1),
        ];
        for (id, proto, port, up, down, t, dev, host) in rows {
            ins.execute(params![id, proto, port, up, down, t, dev, host])
                .unwrap();
        }
    }

    #[test]
    fn device_destinations_and_ports_within_the_window() {
        let (_d, c) = temp_db("peers-device");
        seed(&c);
        let hosts = device_top_hosts(&c, 1, 1_000).unwrap();
        assert_eq!(hosts.scanned, 4, "the old flow is outside the window");
        assert!(!hosts.capped());
        assert_eq!(hosts.rows.len(), 2);
        assert_eq!((hosts.rows[0].remote_host_id, hosts.rows[0].flows), (1, 3));
        assert_eq!(
            (hosts.rows[0].bytes_up, hosts.rows[0].bytes_down),
            (1020, 50_020)
        );
        assert_eq!(hosts.rows[0].rdns.as_deref(), Some("a.example"));
        assert_eq!(hosts.rows[0].domain, None, "no flow had a name");
        // Its flows get names: the latest named one's is the host's.
        c.execute_batch(
            "INSERT INTO dns_names (id, name) VALUES (7, 'old.example'), (8, 'new.example');
             UPDATE flows SET qname_id = 7 WHERE id = 1;
             UPDATE flows SET qname_id = 8 WHERE id = 2;",
        )
        .unwrap();
        let hosts = device_top_hosts(&c, 1, 1_000).unwrap();
        assert_eq!(hosts.rows[0].domain.as_deref(), Some("new.example"));
        let ports = device_top_ports(&c, 1, 1_000).unwrap();
        assert_eq!(
            ports.rows[0],
            PeerPort {
                proto: 6,
                port: Some(443),
                flows: 3,
                hosts: 1,
                bytes: 51_040
            }
        );
        assert_eq!(ports.rows[1].port, Some(53));
        assert_eq!(ports.rows.len(), 2);
        let none = device_top_hosts(&c, 1, 100_000).unwrap();
        assert_eq!((none.rows.len(), none.scanned), (0, 0));
    }

    #[test]
    fn host_devices_by_bytes_with_their_labels() {
        let (_d, c) = temp_db("peers-host");
        seed(&c);
        let devices = host_devices(&c, 1, 0).unwrap();
        assert_eq!(devices.rows.len(), 2);
        assert_eq!(
            (devices.rows[0].label.as_str(), devices.rows[0].flows),
            ("laptop", 3)
        );
        assert_eq!(devices.rows[1].label, "10.0.0.3", "no name: its address");
    }
}
