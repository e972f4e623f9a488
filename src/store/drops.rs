//! Firewall drops: folding refused-attempt counts ([`DropCount`], from `collect::nflog`)
//! into `drop_minutes` (run by the writer, inside its transaction), and the read-only
//! queries behind `/drops` and `/api/drops`.
//!
//! Bounds: the kernel rule is rate-limited, but a slow scan from a botnet can still bring
//! thousands of sources and ports per minute. Per minute at most
//! [`MAX_SOURCES_PER_MINUTE`] sources get rows of their own (later ones are added to
//! source `other`, keeping their port) and at most [`MAX_ROWS_PER_MINUTE`] rows exist
//! (past that, attempts go to `other` port 0), so one minute is never more than a few
//! hundred KiB whatever arrives.

use std::collections::HashMap;

use rusqlite::{Connection, Transaction, params};
use serde::Serialize;

use crate::event::DropCount;
use crate::flow::proto_name;
use crate::time::MINUTE_MS;

pub const MAX_SOURCES_PER_MINUTE: i64 = 256;
pub const MAX_ROWS_PER_MINUTE: i64 = 4096;
/// The source (and, with port 0, the row) overflow is added to.
pub const OTHER: &str = "other";
/// Rows in a top list.
pub const TOP: i64 = 20;

/// Adds one batch of counts.
pub fn apply_drops(tx: &Transaction, counts: &[DropCount]) -> rusqlite::Result<()> {
    // Per minute touched: (rows, distinct sources) so far, kept current as rows appear.
    let mut sizes: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut exists = tx.prepare_cached(
        "SELECT 1 FROM drop_minutes WHERE minute = ?1 AND src_ip = ?2 AND proto = ?3
             AND dst_port = ?4 AND iface = ?5",
    )?;
    let mut src_known =
        tx.prepare_cached("SELECT 1 FROM drop_minutes WHERE minute = ?1 AND src_ip = ?2 LIMIT 1")?;
    let mut upsert = tx.prepare_cached(
        "INSERT INTO drop_minutes (minute, src_ip, proto, dst_port, iface, attempts)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (minute, src_ip, proto, dst_port, iface)
         DO UPDATE SET attempts = attempts + excluded.attempts",
    )?;
    for c in counts {
        let minute = c.minute_ms - c.minute_ms.rem_euclid(MINUTE_MS);
        let attempts = i64::try_from(c.attempts).unwrap_or(i64::MAX);
        let size = match sizes.get_mut(&minute) {
            Some(s) => s,
            None => {
                let s = tx.query_row(
                    "SELECT count(*), count(DISTINCT src_ip) FROM drop_minutes WHERE minute = ?1",
                    [minute],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                sizes.entry(minute).or_insert(s)
            }
        };
        let mut src = c.src.to_string();
        let mut port = i64::from(c.dst_port);
        let proto = i64::from(c.proto);
        if !src_known.exists(params![minute, src])? {
            if size.1 >= MAX_SOURCES_PER_MINUTE {
                src = OTHER.into();
            } else {
                size.1 += 1;
            }
        }
        if !exists.exists(params![minute, src, proto, port, c.iface])? {
            if size.0 >= MAX_ROWS_PER_MINUTE {
                (src, port) = (OTHER.into(), 0);
            }
            if !exists.exists(params![minute, src, proto, port, c.iface])? {
                size.0 += 1;
            }
        }
        upsert.execute(params![minute, src, proto, port, c.iface, attempts])?;
    }
    Ok(())
}

// --- reads -------------------------------------------------------------------------------

/// One source over the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropSource {
    pub src_ip: String,
    pub attempts: i64,
    /// Distinct (protocol, port) pairs it tried.
    pub ports: i64,
    /// Up to ten of them, most tried first, as `tcp/22`.
    pub top_ports: Vec<String>,
    pub first_minute: i64,
    pub last_minute: i64,
}

/// One destination port over the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DropPort {
    pub proto: String,
    pub dst_port: i64,
    pub attempts: i64,
    pub sources: i64,
}

/// Refused attempts in one minute (all sources).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DropMinute {
    pub minute: i64,
    pub attempts: i64,
}

/// What `/drops` and `/api/drops` show for a window.
#[derive(Debug, Clone, Serialize)]
pub struct DropsSummary {
    pub attempts: i64,
    pub sources: Vec<DropSource>,
    pub ports: Vec<DropPort>,
    pub minutes: Vec<DropMinute>,
}

/// The [`TOP`] sources and ports and the per-minute series from `since_ms` on.
pub fn drops_summary(conn: &Connection, since_ms: i64) -> rusqlite::Result<DropsSummary> {
    let since = since_ms - since_ms.rem_euclid(MINUTE_MS);
    let attempts = conn.query_row(
        "SELECT coalesce(sum(attempts), 0) FROM drop_minutes WHERE minute >= ?1",
        [since],
        |r| r.get(0),
    )?;
    let mut top_ports_of = conn.prepare_cached(
        "SELECT proto, dst_port, sum(attempts) AS n FROM drop_minutes
         WHERE minute >= ?1 AND src_ip = ?2 GROUP BY proto, dst_port
         ORDER BY n DESC, dst_port LIMIT 10",
    )?;
    let mut sources: Vec<DropSource> = conn
        .prepare_cached(
            "SELECT src_ip, sum(attempts) AS n, count(DISTINCT proto * 65536 + dst_port),
                    min(minute), max(minute)
             FROM drop_minutes WHERE minute >= ?1 GROUP BY src_ip
             ORDER BY n DESC, src_ip LIMIT ?2",
        )?
        .query_map(params![since, TOP], |r| {
            Ok(DropSource {
                src_ip: r.get(0)?,
                attempts: r.get(1)?,
                ports: r.get(2)?,
                top_ports: Vec::new(),
                first_minute: r.get(3)?,
                last_minute: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    for s in &mut sources {
        s.top_ports = top_ports_of
            .query_map(params![since, s.src_ip], |r| {
                Ok(format!("{}/{}", proto_name(r.get(0)?), r.get::<_, i64>(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
    }
    let ports = conn
        .prepare_cached(
            "SELECT proto, dst_port, sum(attempts) AS n, count(DISTINCT src_ip)
             FROM drop_minutes WHERE minute >= ?1 GROUP BY proto, dst_port
             ORDER BY n DESC, dst_port LIMIT ?2",
        )?
        .query_map(params![since, TOP], |r| {
            Ok(DropPort {
                proto: proto_name(r.get(0)?).into_owned(),
                dst_port: r.get(1)?,
                attempts: r.get(2)?,
                sources: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let minutes = conn
        .prepare_cached(
            "SELECT minute, sum(attempts) FROM drop_minutes WHERE minute >= ?1
             GROUP BY minute ORDER BY minute",
        )?
        .query_map([since], |r| {
            Ok(DropMinute {
                minute: r.get(0)?,
                attempts: r.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(DropsSummary {
        attempts,
        sources,
        ports,
        minutes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;

    fn count(minute_ms: i64, src: &str, port: u16, attempts: u64) -> DropCount {
        DropCount {
            minute_ms,
            src: src.parse().unwrap(),
            proto: 6,
            dst_port: port,
            iface: "wan".into(),
            attempts,
        }
    }

    #[test]
    fn drops_add_up_and_sources_overflow_into_other() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = schema::open_rw(&dir.path().join("t.db")).unwrap();
        let t0 = 1_700_000_040_000;
        let tx = conn.transaction().unwrap();
        let mut batch: Vec<DropCount> = (1000..1200)
            .map(|p| count(t0 + 5, "198.51.100.7", p, 1))
            .collect();
        batch.push(count(t0 + 70_000, "198.51.100.7", 22, 3));
        apply_drops(&tx, &batch).unwrap();
        apply_drops(&tx, &[count(t0, "198.51.100.7", 1000, 1)]).unwrap();
        // A scan from many sources in one minute: past the cap they are "other".
        let many: Vec<DropCount> = (0..300u32)
            .map(|i| {
                count(
                    t0 + 120_000,
                    &format!("10.9.{}.{}", i / 256, i % 256),
                    23,
                    1,
                )
            })
            .collect();
        apply_drops(&tx, &many).unwrap();
        tx.commit().unwrap();
        let s = drops_summary(&conn, t0).unwrap();
        assert_eq!(s.attempts, 200 + 3 + 1 + 300);
        assert_eq!(s.sources[0].src_ip, "198.51.100.7");
        assert_eq!((s.sources[0].attempts, s.sources[0].ports), (204, 201));
        assert_eq!(s.sources[0].top_ports[0], "tcp/22");
        let other = s.sources.iter().find(|x| x.src_ip == OTHER).unwrap();
        assert_eq!(other.attempts, 300 - MAX_SOURCES_PER_MINUTE);
        assert_eq!(
            s.minutes,
            [
                DropMinute {
                    minute: t0,
                    attempts: 201
                },
                DropMinute {
                    minute: t0 + 60_000,
                    attempts: 3
                },
                DropMinute {
                    minute: t0 + 120_000,
                    attempts: 300
                },
            ]
        );
        assert_eq!((s.ports[0].dst_port, s.ports[0].sources), (23, 257));
        dir.close().unwrap();
    }
}
