//! Device identity in the database: devices keyed by MAC.
//!
//! A flow from a LAN address nobody has named yet creates a device known only by that
//! address ([`DeviceIds::for_originator`]). A sighting ([`crate::event::Sighting`]:
//! neighbour table or DHCP lease) then says which MAC owns the address:
//!
//! | the address belongs to      | the MAC has a device | result                        |
//! |-----------------------------|----------------------|-------------------------------|
//! | nobody                      | no                   | new device with that MAC      |
//! | nobody                      | yes                  | address added to it           |
//! | an address-only device      | no                   | that device gets the MAC      |
//! | an address-only device      | yes                  | **merged** into the MAC's one |
//! | the MAC's device            | —                    | `last_seen` moves             |
//! | another MAC's device        | —                    | address moves (reassigned)    |
//!
//! A merge moves everything — flows, rollups, DNS queries, addresses, lifetime totals,
//! the owner's name and notes — to the surviving device in the same transaction, so
//! history before the MAC was known stays with the device. A moved address keeps its
//! past flows with the device that used it then.
//!
//! Devices with a MAC gather every address they use: an IPv4 lease that changes, IPv6
//! privacy addresses that rotate daily. `devices.ip` shows the most recent IPv4 address
//! (else IPv6), the one a user recognises.

pub mod read;

/// What to call the device `d` in SQL, as [`read::DeviceRow::label`] does: its owner's
/// name, its DHCP hostname, its vendor and address, its address.
macro_rules! device_label_sql {
    () => {
        "coalesce(nullif(trim(d.name), ''), nullif(trim(d.hostname), ''), \
         nullif(trim(d.vendor), '') || ' ' || d.ip, d.ip)"
    };
}
pub(crate) use device_label_sql;

use std::collections::HashMap;
use std::net::IpAddr;

use rusqlite::{OptionalExtension, Transaction, params};

use crate::event::{Sighting, SightingSource, format_mac};
use crate::flow::Network;
use crate::idmap::IdMap;

/// A device folded into another; the writer rewrites its in-memory ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    pub from: i64,
    pub into: i64,
}

/// What one batch of sightings changed.
#[derive(Debug, Default)]
pub struct Applied {
    pub merges: Vec<Merge>,
    /// Any device row was created or changed (name, MAC, address).
    pub changed: bool,
}

/// Moves the `(device, bucket)` entries of device `from` to `into` after a merge,
/// folding each into an existing entry of the same bucket with `join`.
pub fn rekey<V: Default>(
    map: &mut IdMap<(i64, i64), V>,
    from: i64,
    into: i64,
    mut join: impl FnMut(&mut V, V),
) {
    let moved: Vec<(i64, i64)> = map.keys().filter(|(d, _)| *d == from).copied().collect();
    for key in moved {
        if let Some(v) = map.remove(&key) {
            join(map.entry((into, key.1)).or_default(), v);
        }
    }
}

/// The vendor label stored with a MAC: the IEEE registry's name, or that the address
/// is randomized.
fn vendor_of(mac: [u8; 6]) -> Option<String> {
    crate::enrich::oui::vendor(mac).label()
}

/// Whether one more device may be created with at most `max` devices; counts the
/// refusal when not. `count(*)` reads the smallest index of a table of at most `max`
/// rows, and devices are created rarely: no in-memory count to keep true across
/// rollbacks.
pub fn room_for_one_more(tx: &Transaction, max: u64) -> rusqlite::Result<bool> {
    let n: i64 = tx
        .prepare_cached("SELECT count(*) FROM devices")?
        .query_row([], |r| r.get(0))?;
    if u64::try_from(n).unwrap_or(0) < max {
        return Ok(true);
    }
    metrics::counter!("netmon_devices_refused_total").increment(1);
    Ok(false)
}

/// Applies sightings of LAN addresses (others — the WAN gateway — are ignored) and
/// keeps `cache` (LAN address → device id) true. A sighting that would create a device
/// past `max_devices` is dropped and counted.
pub fn apply_sightings(
    tx: &Transaction,
    sightings: &[Sighting],
    net: &Network,
    cache: &mut HashMap<IpAddr, i64>,
    max_devices: u64,
) -> rusqlite::Result<Applied> {
    let mut applied = Applied::default();
    for s in sightings {
        if !net.is_lan(s.ip) {
            continue;
        }
        apply_one(tx, s, cache, max_devices, &mut applied)?;
    }
    if !applied.merges.is_empty() {
        metrics::counter!("netmon_device_merges_total").increment(applied.merges.len() as u64);
    }
    Ok(applied)
}

/// (Long: one sighting's cases (new MAC, known MAC, address moving, merge) in one place.)
fn apply_one(
    tx: &Transaction,
    s: &Sighting,
    cache: &mut HashMap<IpAddr, i64>,
    max_devices: u64,
    applied: &mut Applied,
) -> rusqlite::Result<()> {
    let mac = format_mac(s.mac);
    let ip = s.ip.to_string();
    let by_mac: Option<i64> = tx
        .prepare_cached("SELECT id FROM devices WHERE mac = ?1")?
        .query_row([&mac], |r| r.get(0))
        .optional()?;
    let by_ip: Option<(i64, Option<String>)> = tx
        .prepare_cached(
            "SELECT d.id, d.mac FROM device_addrs a JOIN devices d ON d.id = a.device_id
             WHERE a.ip = ?1",
        )?
        .query_row([&ip], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let creates = by_mac.is_none() && by_ip.as_ref().is_none_or(|(_, mac)| mac.is_some());
    if creates && !room_for_one_more(tx, max_devices)? {
        return Ok(());
    }
    // The address was already this device's (nothing moves).
    let same = matches!((by_mac, &by_ip), (Some(m), Some((d, _))) if m == *d);
    let device = match (by_mac, by_ip) {
        (Some(m), Some((d, _))) if m == d => m,
        (Some(m), Some((d, None))) => {
            merge(tx, d, m)?;
            applied.merges.push(Merge { from: d, into: m });
            for id in cache.values_mut().filter(|id| **id == d) {
                *id = m;
            }
            applied.changed = true;
            m
        }
        (None, Some((d, None))) => {
            tx.prepare_cached("UPDATE devices SET mac = ?2, vendor = ?3 WHERE id = ?1")?
                .execute(params![d, mac, vendor_of(s.mac)])?;
            applied.changed = true;
            d
        }
        (Some(m), Some((_, Some(_)))) => {
            move_addr(tx, &ip, m)?;
            applied.changed = true;
            m
        }
        (None, Some((_, Some(_)))) => {
            let m = create(tx, s, &mac)?;
            move_addr(tx, &ip, m)?;
            applied.changed = true;
            m
        }
        (Some(m), None) => {
            add_addr(tx, s.ip, m, s.at_ms)?;
            applied.changed = true;
            m
        }
        (None, None) => {
            let m = create(tx, s, &mac)?;
            add_addr(tx, s.ip, m, s.at_ms)?;
            applied.changed = true;
            m
        }
    };
    cache.insert(s.ip, device);
    tx.prepare_cached("UPDATE device_addrs SET last_seen = max(last_seen, ?2) WHERE ip = ?1")?
        .execute(params![ip, s.at_ms])?;
    if s.source == SightingSource::Dhcp
        && let Some(name) = &s.hostname
    {
        let n = tx
            .prepare_cached(
                "UPDATE devices SET hostname = ?2 WHERE id = ?1 AND hostname IS NOT ?2",
            )?
            .execute(params![device, name])?;
        applied.changed |= n > 0;
    }
    // The device's current address — what a user knows it by — is its newest IPv4
    // address: one it just started to use, or its DHCP lease (a stale neighbour entry
    // of an old address must not bring that one back).
    if same && s.source != SightingSource::Dhcp {
        return Ok(());
    }
    let n = tx
        .prepare_cached(
            "UPDATE devices SET ip = ?2 WHERE id = ?1 AND ip <> ?2
                 AND (?3 OR ip LIKE '%:%')",
        )?
        .execute(params![device, ip, s.ip.is_ipv4()])?;
    applied.changed |= n > 0;
    Ok(())
}

fn create(tx: &Transaction, s: &Sighting, mac: &str) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO devices (mac, ip, vendor, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![mac, s.ip.to_string(), vendor_of(s.mac), s.at_ms])?;
    Ok(tx.last_insert_rowid())
}

fn add_addr(tx: &Transaction, ip: IpAddr, device: i64, at: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO device_addrs (ip, device_id, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
    )?
    .execute(params![ip.to_string(), device, at])?;
    crate::store::dns::claim_recent_queries(tx, ip, device, at)
}

fn move_addr(tx: &Transaction, ip: &str, device: i64) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE device_addrs SET device_id = ?2 WHERE ip = ?1")?
        .execute(params![ip, device])?;
    Ok(())
}

/// Deletes up to `n` devices that nothing but their own rollups refers to any more —
/// known only by an address (no MAC, no owner's name or notes), no flow or DNS query
/// row left, no hit, incident or rule — least recently seen first, with their
/// addresses and rollups, one statement per table. These are what a host forging
/// source addresses leaves behind; a real device has a MAC or comes back with new
/// rows. The newest device row is never deleted, so SQLite never hands its id out
/// again. Returns how many went.
pub fn prune_idle(tx: &Transaction, n: u64) -> rusqlite::Result<u64> {
    let ids: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM devices d
             WHERE mac IS NULL AND name IS NULL AND notes IS NULL
               AND id < (SELECT max(id) FROM devices)
               AND NOT EXISTS (SELECT 1 FROM flows WHERE device_id = d.id)
               AND NOT EXISTS (SELECT 1 FROM dns_queries WHERE device_id = d.id)
               AND NOT EXISTS (SELECT 1 FROM hits WHERE device_id = d.id)
               AND NOT EXISTS (SELECT 1 FROM incidents WHERE device_id = d.id)
               AND NOT EXISTS (SELECT 1 FROM rules WHERE device_id = d.id)
             ORDER BY last_seen LIMIT ?1",
        )?
        .query_map([i64::try_from(n).unwrap_or(i64::MAX)], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let list = serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into());
    for sql in [
        "DELETE FROM device_addrs WHERE device_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM device_minutes WHERE device_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM device_hours WHERE device_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM dns_device_minutes WHERE device_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM device_baselines WHERE device_id IN (SELECT value FROM json_each(?1))",
        "UPDATE remote_host_domains SET last_device_id = NULL
         WHERE last_device_id IN (SELECT value FROM json_each(?1))",
        "DELETE FROM devices WHERE id IN (SELECT value FROM json_each(?1))",
    ] {
        tx.prepare_cached(sql)?.execute([&list])?;
    }
    Ok(ids.len() as u64)
}

/// Folds device `from` into `into`: every row that names `from` names `into` after,
/// rollups of the same bucket are added up, and `from` is deleted.
pub fn merge(tx: &Transaction, from: i64, into: i64) -> rusqlite::Result<()> {
    // Sums for counters; the larger value for the per-minute unique counts (the true
    // union is unknown once stored, and the larger is a lower bound of it).
    const ROLLUPS: [(&str, &str, &str); 3] = [
        (
            "device_minutes",
            "minute, bytes_up, bytes_down, packets_up, packets_down, flows_new, unique_dsts, \
             unique_ports",
            "bytes_up = bytes_up + excluded.bytes_up, bytes_down = bytes_down + excluded.bytes_down,
             packets_up = packets_up + excluded.packets_up,
             packets_down = packets_down + excluded.packets_down,
             flows_new = flows_new + excluded.flows_new,
             unique_dsts = max(unique_dsts, excluded.unique_dsts),
             unique_ports = max(unique_ports, excluded.unique_ports)",
        ),
        (
            "device_hours",
            "hour, bytes_up, bytes_down, packets_up, packets_down, flows_new",
            "bytes_up = bytes_up + excluded.bytes_up, bytes_down = bytes_down + excluded.bytes_down,
             packets_up = packets_up + excluded.packets_up,
             packets_down = packets_down + excluded.packets_down,
             flows_new = flows_new + excluded.flows_new",
        ),
        (
            "dns_device_minutes",
            "minute, queries, nxdomain, names",
            "queries = queries + excluded.queries, nxdomain = nxdomain + excluded.nxdomain,
             names = max(names, excluded.names)",
        ),
    ];
    for (table, columns, update) in ROLLUPS {
        let key = columns.split(',').next().unwrap_or_default();
        // `WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.
        tx.execute(
            &format!(
                "INSERT INTO {table} (device_id, {columns})
                 SELECT ?2, {columns} FROM {table} WHERE device_id = ?1 AND true
                 ON CONFLICT (device_id, {key}) DO UPDATE SET {update}"
            ),
            params![from, into],
        )?;
        tx.execute(&format!("DELETE FROM {table} WHERE device_id = ?1"), [from])?;
    }
    for sql in [
        "UPDATE flows SET device_id = ?2 WHERE device_id = ?1",
        "UPDATE dns_queries SET device_id = ?2 WHERE device_id = ?1",
        "UPDATE remote_host_domains SET last_device_id = ?2 WHERE last_device_id = ?1",
        "UPDATE device_addrs SET device_id = ?2 WHERE device_id = ?1",
        // Detection: the device's hits, incidents and device-scoped rules are the
        // survivor's (its anomalies page and incident list would lose them otherwise);
        // a baseline moves only when the survivor has none (the next hourly
        // recomputation covers the merged history either way).
        "UPDATE hits SET device_id = ?2 WHERE device_id = ?1",
        "UPDATE incidents SET device_id = ?2 WHERE device_id = ?1",
        "UPDATE rules SET device_id = ?2 WHERE device_id = ?1",
        "UPDATE OR IGNORE device_baselines SET device_id = ?2 WHERE device_id = ?1",
        "UPDATE devices SET
             first_seen = min(first_seen, (SELECT first_seen FROM devices WHERE id = ?1)),
             last_seen = max(last_seen, (SELECT last_seen FROM devices WHERE id = ?1)),
             bytes_up = bytes_up + (SELECT bytes_up FROM devices WHERE id = ?1),
             bytes_down = bytes_down + (SELECT bytes_down FROM devices WHERE id = ?1),
             flows = flows + (SELECT flows FROM devices WHERE id = ?1),
             name = coalesce(name, (SELECT name FROM devices WHERE id = ?1)),
             hostname = coalesce(hostname, (SELECT hostname FROM devices WHERE id = ?1)),
             notes = coalesce(notes, (SELECT notes FROM devices WHERE id = ?1))
         WHERE id = ?2",
    ] {
        tx.prepare_cached(sql)?.execute(params![from, into])?;
    }
    tx.prepare_cached("DELETE FROM device_baselines WHERE device_id = ?1")?
        .execute([from])?;
    tx.prepare_cached("DELETE FROM devices WHERE id = ?1")?
        .execute([from])?;
    Ok(())
}

// --- the writer's device ids ------------------------------------------------------------

/// LAN address → device id (a cache of `device_addrs`), and how many devices there may
/// be.
pub struct DeviceIds {
    pub by_ip: HashMap<IpAddr, i64>,
    /// `[retention] max_devices`.
    pub max: u64,
}

impl crate::store::table::Table for DeviceIds {
    /// Devices and addresses of the rolled-back transaction do not exist: reload the
    /// cache from `device_addrs`.
    fn rolled_back(&mut self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        self.load(conn)
    }
}

impl DeviceIds {
    pub fn new(max: u64) -> DeviceIds {
        DeviceIds {
            by_ip: HashMap::new(),
            max,
        }
    }

    /// Fills the cache from `device_addrs`.
    pub fn load(&mut self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        self.by_ip.clear();
        let mut stmt = conn.prepare("SELECT ip, device_id FROM device_addrs")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (ip, id) = row?;
            if let Ok(ip) = ip.parse() {
                self.by_ip.insert(ip, id);
            }
        }
        Ok(())
    }

    /// The device that owns `ip`, if there is one.
    pub fn known(&mut self, tx: &Transaction, ip: IpAddr) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = self.by_ip.get(&ip) {
            return Ok(Some(*id));
        }
        let id: Option<i64> = tx
            .prepare_cached("SELECT device_id FROM device_addrs WHERE ip = ?1")?
            .query_row([ip.to_string()], |r| r.get(0))
            .optional()?;
        if let Some(id) = id {
            self.by_ip.insert(ip, id);
        }
        Ok(id)
    }

    /// The device of a LAN address that started a flow, created on first sight unless
    /// there are `max` devices already (then counted and left without one).
    pub fn for_originator(
        &mut self,
        tx: &Transaction,
        ip: IpAddr,
        at: i64,
        tick: &mut crate::event::Tick,
    ) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = self.known(tx, ip)? {
            return Ok(Some(id));
        }
        if !room_for_one_more(tx, self.max)? {
            return Ok(None);
        }
        let text = ip.to_string();
        tx.prepare_cached("INSERT INTO devices (ip, first_seen, last_seen) VALUES (?1, ?2, ?2)")?
            .execute(params![text, at])?;
        let id = tx.last_insert_rowid();
        tx.prepare_cached(
            "INSERT INTO device_addrs (ip, device_id, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
        )?
        .execute(params![text, id, at])?;
        crate::store::dns::claim_recent_queries(tx, ip, id, at)?;
        tick.devices_changed = true;
        self.by_ip.insert(ip, id);
        Ok(Some(id))
    }

    /// Applies sightings (see [`apply_sightings`]) and keeps the cache true.
    pub fn apply_sightings(
        &mut self,
        tx: &Transaction,
        sightings: &[Sighting],
        net: &Network,
    ) -> rusqlite::Result<Applied> {
        apply_sightings(tx, sightings, net, &mut self.by_ip, self.max)
    }

    /// Gives back what the cache grew to in a flood ([`crate::memory::shrink_map`]).
    pub fn shrink_if_sparse(&mut self) -> bool {
        crate::memory::shrink_map(&mut self.by_ip)
    }
}

// --- the label of a device's Prometheus series ------------------------------------------

/// What a device's Prometheus series is called: what the UI shows at that moment
/// ([`device_label_sql`]; the address is `devices.ip`: its newest IPv4 address, or an
/// IPv6 one while it has none). The exporter asks once per
/// device and keeps the answer until netmon restarts, so a rename or a new address does
/// not split a series mid-run.
pub fn metric_label(conn: &rusqlite::Connection, device_id: i64) -> String {
    let row: rusqlite::Result<Option<String>> = conn
        .prepare_cached(concat!(
            "SELECT ",
            device_label_sql!(),
            " FROM devices d WHERE d.id = ?1"
        ))
        .and_then(|mut s| s.query_row([device_id], |r| r.get(0)).optional());
    row.ok()
        .flatten()
        .unwrap_or_else(|| format!("device {device_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn device_label_prefers_name_then_hostname_then_vendor_and_address() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE devices (id INTEGER PRIMARY KEY, ip TEXT NOT NULL, name TEXT,
                 hostname TEXT, vendor TEXT);
             INSERT INTO devices VALUES (1, '10.0.0.1', 'tv', 'lgtv', 'LG'),
                 (2, '10.0.0.2', ' ', 'nas', NULL), (3, '10.0.0.3', NULL, '', 'Espressif'),
                 (4, '10.0.0.4', NULL, NULL, ' ');",
        )
        .unwrap();
        assert_eq!(metric_label(&conn, 1), "tv");
        assert_eq!(metric_label(&conn, 2), "nas");
        assert_eq!(metric_label(&conn, 3), "Espressif 10.0.0.3");
        assert_eq!(metric_label(&conn, 4), "10.0.0.4");
        assert_eq!(metric_label(&conn, 9), "device 9");
    }
}
