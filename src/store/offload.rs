//! The flow-offloading cross-check: bytes the WAN interfaces moved
//! (`interface_minutes`, role `wan`, from the kernel's interface counters) against bytes
//! netmon's flows counted (`device_minutes`, from conntrack's counters) over the same
//! minutes. Offloaded flows that conntrack no longer counts push the ratio well above 1;
//! without offloading it stays near 1 (link-layer headers and the router's own traffic
//! make it slightly higher, LAN-only traffic to the router slightly lower).

use crate::time::MINUTE_MS;
use rusqlite::Connection;
use serde::Serialize;

/// WAN interface bytes and flow bytes over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WanFlowBytes {
    pub wan_bytes: i64,
    pub flow_bytes: i64,
    /// `wan_bytes / flow_bytes`; `None` without flow bytes.
    pub ratio: Option<f64>,
}

/// The cross-check from `since_ms` on. Flow minutes before the first WAN interface row
/// do not count (the sampler starts after the conntrack dump, and a database may hold
/// flows from before interface sampling existed). Both sums run to the end of the
/// window, not per minute: a flow's bytes land in the minute conntrack reported them
/// (a dump or its end), which may be a minute after the interface counted them.
pub fn wan_flow_bytes(conn: &Connection, since_ms: i64) -> rusqlite::Result<WanFlowBytes> {
    let since = since_ms - since_ms.rem_euclid(MINUTE_MS);
    let (wan_bytes, flow_bytes): (i64, i64) = conn.query_row(
        "WITH first AS (SELECT min(minute) AS m FROM interface_minutes
                        WHERE role = 'wan' AND minute >= ?1)
         SELECT
             (SELECT coalesce(sum(rx_bytes + tx_bytes), 0) FROM interface_minutes
              WHERE role = 'wan' AND minute >= ?1),
             (SELECT coalesce(sum(bytes_up + bytes_down), 0) FROM device_minutes, first
              WHERE minute >= ?1 AND minute >= first.m)",
        [since],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(WanFlowBytes {
        wan_bytes,
        flow_bytes,
        ratio: (flow_bytes > 0).then(|| wan_bytes as f64 / flow_bytes as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema;

    #[test]
    fn ratio_from_the_first_wan_minute() {
        let dir = tempfile::tempdir().unwrap();
        let conn = schema::open_rw(&dir.path().join("t.db")).unwrap();
        let t0 = 1_700_000_040_000;
        conn.execute_batch(&format!(
            "INSERT INTO interface_minutes (interface, minute, role, rx_bytes, tx_bytes)
                 VALUES ('wan', {t0}, 'wan', 1010, 10), ('wan', {t1}, 'wan', 5000, 0),
                        ('br-lan', {t0}, 'lan', 999, 999);
             INSERT INTO device_minutes (device_id, minute, bytes_up, bytes_down)
                 VALUES (1, {t0}, 10, 600), (2, {t1}, 0, 5390), (1, {tp}, 77, 77);",
            tp = t0 - 60_000,
            t1 = t0 + 60_000
        ))
        .unwrap();
        let got = wan_flow_bytes(&conn, t0).unwrap();
        assert_eq!((got.wan_bytes, got.flow_bytes), (6020, 6000));
        assert!((got.ratio.unwrap() - 6020.0 / 6000.0).abs() < 1e-9);
        let before = wan_flow_bytes(&conn, t0 - 60_000).unwrap();
        assert_eq!(
            before.flow_bytes, 6000,
            "flows before interface sampling are left out"
        );
        dir.close().unwrap();
    }
}
