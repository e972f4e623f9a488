//! Reads of the per-minute rollups: a device's and a remote host's traffic minutes.

use rusqlite::{Connection, params};
use serde::Serialize;

/// Most minute rows one request returns: seven days, the default minute retention.
pub const MAX_MINUTES: u32 = 7 * 24 * 60;

/// One row of `device_minutes`, every column (the API returns it as is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceMinute {
    pub device_id: i64,
    /// Start of the UTC minute, unix ms.
    pub minute: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub packets_up: i64,
    pub packets_down: i64,
    pub flows_new: i64,
    pub unique_dsts: i64,
    pub unique_ports: i64,
}

/// A device's minute rollups from `since_ms` on, oldest first; at most [`MAX_MINUTES`]
/// (the latest ones when there are more).
pub fn device_minutes(
    conn: &Connection,
    id: i64,
    since_ms: i64,
) -> rusqlite::Result<Vec<DeviceMinute>> {
    let mut rows = conn
        .prepare_cached(
            "SELECT device_id, minute, bytes_up, bytes_down, packets_up, packets_down, \
             flows_new, unique_dsts, unique_ports FROM device_minutes \
             WHERE device_id = ? AND minute >= ? ORDER BY minute DESC LIMIT ?",
        )?
        .query_map(params![id, since_ms, MAX_MINUTES], |r| {
            Ok(DeviceMinute {
                device_id: r.get(0)?,
                minute: r.get(1)?,
                bytes_up: r.get(2)?,
                bytes_down: r.get(3)?,
                packets_up: r.get(4)?,
                packets_down: r.get(5)?,
                flows_new: r.get(6)?,
                unique_dsts: r.get(7)?,
                unique_ports: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.reverse();
    Ok(rows)
}

/// One row of `remote_host_minutes`, every column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemoteHostMinute {
    pub remote_host_id: i64,
    pub minute: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub packets_up: i64,
    pub packets_down: i64,
    pub flows_new: i64,
    pub unique_devices: i64,
}

/// A remote host's minute rollups from `since_ms` on, oldest first (see
/// [`device_minutes`]).
pub fn remote_host_minutes(
    conn: &Connection,
    id: i64,
    since_ms: i64,
) -> rusqlite::Result<Vec<RemoteHostMinute>> {
    let mut rows = conn
        .prepare_cached(
            "SELECT remote_host_id, minute, bytes_up, bytes_down, packets_up, packets_down, \
             flows_new, unique_devices FROM remote_host_minutes \
             WHERE remote_host_id = ? AND minute >= ? ORDER BY minute DESC LIMIT ?",
        )?
        .query_map(params![id, since_ms, MAX_MINUTES], |r| {
            Ok(RemoteHostMinute {
                remote_host_id: r.get(0)?,
                minute: r.get(1)?,
                bytes_up: r.get(2)?,
                bytes_down: r.get(3)?,
                packets_up: r.get(4)?,
                packets_down: r.get(5)?,
                flows_new: r.get(6)?,
                unique_devices: r.get(7)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.reverse();
    Ok(rows)
}
