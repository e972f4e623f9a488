//! Router health minute rollups: folding a [`SystemSample`] into `system_minutes` and
//! `interface_minutes` (run by the writer, inside its transaction), and the read-only
//! queries behind `/router` and `/api/router`.
//!
//! A sample lands in the minute it was taken in. CPU is a running mean (every sample
//! covers an equal interval, so the mean of the samples is the minute's busy share);
//! memory used, conntrack entries and temperature keep the minute's peak, because a
//! router owner wants to see the moment the table nearly filled, not an average that
//! hides it. Interface rows add the sample's counter deltas, so a minute's bytes are
//! what the kernel counted in it (give or take the sample at the minute's edge).

use rusqlite::{Connection, Transaction, params};
use serde::Serialize;

use crate::event::SystemSample;
use crate::time::MINUTE_MS;

/// Folds one sample into its minute rows.
pub fn apply_system(tx: &Transaction, s: &SystemSample) -> rusqlite::Result<()> {
    let minute = s.at_ms - s.at_ms.rem_euclid(MINUTE_MS);
    let cpu_pct = s.cpu_ratio.map(|r| r * 100.0);
    let mem_used = s.memory.map(|m| clamp_i64(m.used_bytes()));
    let mem_total = s.memory.map(|m| clamp_i64(m.total_bytes));
    let temp_max = s.temperatures.iter().map(|t| t.celsius).reduce(f64::max);
    // max(a, NULL) is NULL in SQLite, so every peak goes through coalesce.
    tx.prepare_cached(
        "INSERT INTO system_minutes (minute, samples, cpu_samples, cpu_pct, cpu_pct_max, load1,
             mem_total_bytes, mem_used_bytes, ct_count, ct_max, temp_max_c)
         VALUES (?1, 1, ?2 IS NOT NULL, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (minute) DO UPDATE SET
             samples = samples + 1,
             cpu_pct = CASE WHEN excluded.cpu_pct IS NULL THEN cpu_pct
                 ELSE (coalesce(cpu_pct, 0) * cpu_samples + excluded.cpu_pct) / (cpu_samples + 1) END,
             cpu_samples = cpu_samples + (excluded.cpu_pct IS NOT NULL),
             cpu_pct_max = max(coalesce(cpu_pct_max, excluded.cpu_pct_max),
                               coalesce(excluded.cpu_pct_max, cpu_pct_max)),
             load1 = coalesce(excluded.load1, load1),
             mem_total_bytes = coalesce(excluded.mem_total_bytes, mem_total_bytes),
             mem_used_bytes = max(coalesce(mem_used_bytes, excluded.mem_used_bytes),
                                  coalesce(excluded.mem_used_bytes, mem_used_bytes)),
             ct_count = max(coalesce(ct_count, excluded.ct_count),
                            coalesce(excluded.ct_count, ct_count)),
             ct_max = coalesce(excluded.ct_max, ct_max),
             temp_max_c = max(coalesce(temp_max_c, excluded.temp_max_c),
                              coalesce(excluded.temp_max_c, temp_max_c))",
    )?
    .execute(params![
        minute,
        cpu_pct,
        s.load.map(|l| l.one),
        mem_total,
        mem_used,
        s.conntrack.map(|c| clamp_i64(c.count)),
        s.conntrack.map(|c| clamp_i64(c.max)),
        temp_max,
    ])?;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO interface_minutes (interface, minute, role, rx_bytes, tx_bytes,
             rx_packets, tx_packets)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (interface, minute) DO UPDATE SET
             role = excluded.role,
             rx_bytes = rx_bytes + excluded.rx_bytes,
             tx_bytes = tx_bytes + excluded.tx_bytes,
             rx_packets = rx_packets + excluded.rx_packets,
             tx_packets = tx_packets + excluded.tx_packets",
    )?;
    for iface in &s.interfaces {
        let Some(d) = iface.delta else {
            continue; // first sample or a reset: nothing measured yet
        };
        stmt.execute(params![
            iface.name,
            minute,
            iface.role.as_str(),
            clamp_i64(d.rx_bytes),
            clamp_i64(d.tx_bytes),
            clamp_i64(d.rx_packets),
            clamp_i64(d.tx_packets),
        ])?;
    }
    Ok(())
}

/// SQLite integers are signed 64-bit.
fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// --- reads -------------------------------------------------------------------------------

/// One row of `system_minutes`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SystemMinute {
    pub minute: i64,
    pub samples: i64,
    pub cpu_pct: Option<f64>,
    pub cpu_pct_max: Option<f64>,
    pub load1: Option<f64>,
    pub mem_total_bytes: Option<i64>,
    pub mem_used_bytes: Option<i64>,
    pub ct_count: Option<i64>,
    pub ct_max: Option<i64>,
    pub temp_max_c: Option<f64>,
}

/// One row of `interface_minutes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceMinute {
    pub interface: String,
    pub role: String,
    pub minute: i64,
    pub rx_bytes: i64,
    pub tx_bytes: i64,
    pub rx_packets: i64,
    pub tx_packets: i64,
}

/// The router's minutes from `since_ms` (unix ms) on, oldest first.
pub fn system_minutes(conn: &Connection, since_ms: i64) -> rusqlite::Result<Vec<SystemMinute>> {
    let mut stmt = conn.prepare_cached(
        "SELECT minute, samples, cpu_pct, cpu_pct_max, load1, mem_total_bytes, mem_used_bytes,
                ct_count, ct_max, temp_max_c
         FROM system_minutes WHERE minute >= ?1 ORDER BY minute",
    )?;
    let since = since_ms - since_ms.rem_euclid(MINUTE_MS);
    stmt.query_map([since], |r| {
        Ok(SystemMinute {
            minute: r.get(0)?,
            samples: r.get(1)?,
            cpu_pct: r.get(2)?,
            cpu_pct_max: r.get(3)?,
            load1: r.get(4)?,
            mem_total_bytes: r.get(5)?,
            mem_used_bytes: r.get(6)?,
            ct_count: r.get(7)?,
            ct_max: r.get(8)?,
            temp_max_c: r.get(9)?,
        })
    })?
    .collect()
}

/// Every interface's minutes from `since_ms` on, by interface (WAN first, then LAN,
/// then others, by name), oldest first within each.
pub fn interface_minutes(
    conn: &Connection,
    since_ms: i64,
) -> rusqlite::Result<Vec<InterfaceMinute>> {
    let mut stmt = conn.prepare_cached(
        "SELECT interface, role, minute, rx_bytes, tx_bytes, rx_packets, tx_packets
         FROM interface_minutes WHERE minute >= ?1
         ORDER BY CASE role WHEN 'wan' THEN 0 WHEN 'lan' THEN 1 ELSE 2 END, interface, minute",
    )?;
    let since = since_ms - since_ms.rem_euclid(MINUTE_MS);
    stmt.query_map([since], |r| {
        Ok(InterfaceMinute {
            interface: r.get(0)?,
            role: r.get(1)?,
            minute: r.get(2)?,
            rx_bytes: r.get(3)?,
            tx_bytes: r.get(4)?,
            rx_packets: r.get(5)?,
            tx_packets: r.get(6)?,
        })
    })?
    .collect()
}

/// What `/router` and `/api/router` read in one snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct RouterMinutes {
    pub system: Vec<SystemMinute>,
    pub interfaces: Vec<InterfaceMinute>,
}

pub fn router_minutes(conn: &Connection, since_ms: i64) -> rusqlite::Result<RouterMinutes> {
    Ok(RouterMinutes {
        system: system_minutes(conn, since_ms)?,
        interfaces: interface_minutes(conn, since_ms)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Conntrack, InterfaceCounters, InterfaceSample, Memory, Role, Temperature};
    use crate::store::schema;

    fn sample(at_ms: i64, cpu: Option<f64>, used: u64, ct: u64, rx: Option<u64>) -> SystemSample {
        SystemSample {
            at_ms,
            interval_ms: Some(5000),
            cpu_ratio: cpu,
            load: None,
            memory: Some(Memory {
                total_bytes: 1000,
                available_bytes: 1000 - used,
            }),
            filesystems: vec![],
            interfaces: vec![InterfaceSample {
                name: "wan".into(),
                role: Role::Wan,
                counters: InterfaceCounters::default(),
                delta: rx.map(|rx| InterfaceCounters {
                    rx_bytes: rx,
                    tx_bytes: 1,
                    rx_packets: 2,
                    tx_packets: 3,
                }),
                rx_bytes_per_s: None,
                tx_bytes_per_s: None,
            }],
            conntrack: Some(Conntrack {
                count: ct,
                max: 100,
            }),
            uptime_s: None,
            temperatures: vec![Temperature {
                sensor: "thermal/x".into(),
                celsius: 40.0 + ct as f64,
            }],
        }
    }

    #[test]
    fn samples_fold_into_minute_means_peaks_and_sums() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = schema::open_rw(&dir.path().join("t.db")).unwrap();
        let t0 = 1_700_000_040_000; // a minute boundary
        let tx = conn.transaction().unwrap();
        apply_system(&tx, &sample(t0 + 1_000, None, 100, 5, None)).unwrap();
        apply_system(&tx, &sample(t0 + 6_000, Some(0.2), 300, 9, Some(1000))).unwrap();
        apply_system(&tx, &sample(t0 + 11_000, Some(0.4), 200, 7, Some(500))).unwrap();
        apply_system(&tx, &sample(t0 + 61_000, Some(0.1), 50, 1, Some(7))).unwrap();
        tx.commit().unwrap();
        let m = system_minutes(&conn, t0 + 30_000).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].minute, t0);
        assert_eq!(m[0].samples, 3);
        assert!((m[0].cpu_pct.unwrap() - 30.0).abs() < 1e-9, "{m:?}");
        assert!((m[0].cpu_pct_max.unwrap() - 40.0).abs() < 1e-9);
        assert_eq!(m[0].mem_used_bytes, Some(300));
        assert_eq!((m[0].ct_count, m[0].ct_max), (Some(9), Some(100)));
        assert_eq!(m[0].temp_max_c, Some(49.0));
        assert_eq!(m[1].mem_used_bytes, Some(50));
        let i = interface_minutes(&conn, t0).unwrap();
        assert_eq!(
            i.iter()
                .map(|r| (r.minute, r.rx_bytes, r.tx_packets))
                .collect::<Vec<_>>(),
            [(t0, 1500, 6), (t0 + 60_000, 7, 3)]
        );
        assert_eq!(i[0].role, "wan");
        dir.close().unwrap();
    }
}
