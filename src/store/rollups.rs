//! The traffic rollups: per-device and per-remote-host minutes and hours, lifetime
//! totals, and the ports each remote host was contacted on.
//!
//! The flow writes of a transaction add their deltas to a [`TickAcc`]; once the
//! transaction's events are applied, [`write_rollups`] writes one upsert per (entity,
//! bucket), never one per flow. The unique counts of a minute (destinations, ports,
//! devices) are true unions: [`Rollups`] keeps the sets of the minutes that can still
//! receive data across transactions.

pub mod read;

use crate::idmap::{IdMap, IdSet};

use rusqlite::{Transaction, params};

use crate::event::Tick;
use crate::flow::Counters;
use crate::store::dns::DnsAcc;
use crate::store::table::Table;
use crate::time::{MINUTE_MS, hour_start, minute_start};

/// Per-device or per-host byte/packet deltas for one bucket.
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub packets_up: u64,
    pub packets_down: u64,
    pub flows_new: u64,
}

impl Traffic {
    fn add(&mut self, c: &Counters, device_is_orig: bool) {
        let (up_b, up_p, down_b, down_p) = if device_is_orig {
            (c.orig_bytes, c.orig_packets, c.reply_bytes, c.reply_packets)
        } else {
            (c.reply_bytes, c.reply_packets, c.orig_bytes, c.orig_packets)
        };
        self.bytes_up += up_b;
        self.packets_up += up_p;
        self.bytes_down += down_b;
        self.packets_down += down_p;
    }
}

/// Sets for the true unique counts of one minute; kept only for recent minutes.
#[derive(Debug, Default)]
pub struct MinuteSets {
    dsts: IdSet<i64>,
    ports: IdSet<u16>,
}

/// A new flow of a device in one minute, for the unique counts.
#[derive(Debug, Clone, Copy)]
pub struct Contact {
    pub device: i64,
    pub minute: i64,
    pub remote_host: Option<i64>,
    /// The destination port of an outbound flow.
    pub port: Option<u16>,
}

/// Everything one transaction accumulates before it writes rollups.
#[derive(Default)]
pub struct TickAcc {
    device_minutes: IdMap<(i64, i64), Traffic>,
    device_hours: IdMap<(i64, i64), Traffic>,
    host_minutes: IdMap<(i64, i64), Traffic>,
    host_hours: IdMap<(i64, i64), Traffic>,
    /// Lifetime totals and last-seen per device/host.
    pub device_totals: IdMap<i64, (Traffic, i64)>,
    host_totals: IdMap<i64, (Traffic, i64)>,
    /// (remote host, proto, port) → (new flows, last seen).
    host_ports: IdMap<(i64, u8, u16), (u64, i64)>,
    contacts: Vec<Contact>,
    pub dns: DnsAcc,
    /// What the commit will publish; every family marks what it changed.
    pub tick: Tick,
}

impl TickAcc {
    /// Adds a flow's byte/packet delta to its device's and remote host's buckets.
    pub fn add_traffic(
        &mut self,
        device_id: Option<i64>,
        remote_host_id: Option<i64>,
        delta: &Counters,
        device_is_orig: bool,
        at: i64,
        new_flow: bool,
    ) {
        let (minute, hour) = (minute_start(at), hour_start(at));
        let flows_new = u64::from(new_flow);
        // "up" for a remote host is what the LAN sent to it, as for the device.
        let targets = [
            device_id.map(|d| {
                (
                    &mut self.device_minutes,
                    &mut self.device_hours,
                    &mut self.device_totals,
                    d,
                )
            }),
            remote_host_id.map(|h| {
                (
                    &mut self.host_minutes,
                    &mut self.host_hours,
                    &mut self.host_totals,
                    h,
                )
            }),
        ];
        for (minutes, hours, totals, id) in targets.into_iter().flatten() {
            for t in [
                minutes.entry((id, minute)).or_default(),
                hours.entry((id, hour)).or_default(),
            ] {
                t.add(delta, device_is_orig);
                t.flows_new += flows_new;
            }
            let (t, seen) = totals.entry(id).or_default();
            t.add(delta, device_is_orig);
            t.flows_new += flows_new;
            *seen = (*seen).max(at);
        }
    }

    /// A new outbound flow to `port` of a remote host.
    pub fn add_host_port(&mut self, host: i64, proto: u8, port: u16, at: i64) {
        let e = self.host_ports.entry((host, proto, port)).or_default();
        e.0 += 1;
        e.1 = e.1.max(at);
    }

    /// A new flow of a device, for the minute's unique counts.
    pub fn add_contact(&mut self, contact: Contact) {
        self.contacts.push(contact);
    }
}

/// The unique-count sets of the minutes that can still receive data. They outlive a
/// transaction (a minute spans many) and are left as they are by a rollback: a held
/// batch adds the same contacts again when it is retried, and a set counts each once.
#[derive(Default)]
pub struct Rollups {
    device_sets: IdMap<(i64, i64), MinuteSets>,
    host_sets: IdMap<(i64, i64), IdSet<i64>>,
}

impl Table for Rollups {
    /// Forgets unique-count sets of minutes that can no longer receive data: those
    /// more than two minutes older than the newest minute seen.
    fn committed(&mut self, _now: i64) {
        let newest = self.device_sets.keys().map(|(_, m)| *m).max().unwrap_or(0);
        let keep_from = newest - 2 * MINUTE_MS;
        self.device_sets.retain(|(_, m), _| *m >= keep_from);
        self.host_sets.retain(|(_, m), _| *m >= keep_from);
    }
}

impl Rollups {
    /// Device `from` was merged into `into` (committed): its sets follow.
    pub fn remap_device(&mut self, from: i64, into: i64) {
        crate::store::devices::rekey(&mut self.device_sets, from, into, |sets, more| {
            sets.dsts.extend(more.dsts);
            sets.ports.extend(more.ports);
        });
        for devices in self.host_sets.values_mut() {
            if devices.remove(&from) {
                devices.insert(into);
            }
        }
    }

    /// Writes the tick's accumulated rollups: one upsert per (entity, bucket), never one
    /// per flow.
    pub fn write(&mut self, tx: &Transaction, acc: &mut TickAcc) -> rusqlite::Result<()> {
        let uniques = self.count_uniques(acc);
        write_device_minutes(tx, acc, uniques.devices)?;
        write_host_minutes(tx, acc, uniques.hosts)?;
        write_hours(tx, acc)?;
        write_totals(tx, acc)?;
        write_host_ports(tx, acc)
    }

    /// True unions per minute: the sets live across ticks for the open minutes; the row
    /// takes the larger of what it has and the set size, so a restart mid-minute never
    /// lowers a count already stored.
    fn count_uniques(&mut self, acc: &mut TickAcc) -> Uniques {
        let mut uniques = Uniques::default();
        for c in acc.contacts.drain(..) {
            let sets = self.device_sets.entry((c.device, c.minute)).or_default();
            if let Some(h) = c.remote_host {
                sets.dsts.insert(h);
                let devs = self.host_sets.entry((h, c.minute)).or_default();
                devs.insert(c.device);
                uniques.hosts.insert((h, c.minute), devs.len());
            }
            if let Some(p) = c.port {
                sets.ports.insert(p);
            }
            uniques
                .devices
                .insert((c.device, c.minute), (sets.dsts.len(), sets.ports.len()));
        }
        uniques
    }
}

/// The unique counts of this transaction's minutes: per (device, minute) destinations
/// and ports, per (remote host, minute) devices.
#[derive(Default)]
struct Uniques {
    devices: IdMap<(i64, i64), (usize, usize)>,
    hosts: IdMap<(i64, i64), usize>,
}

fn write_device_minutes(
    tx: &Transaction,
    acc: &TickAcc,
    mut uniques: IdMap<(i64, i64), (usize, usize)>,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO device_minutes (device_id, minute, bytes_up, bytes_down, packets_up,
             packets_down, flows_new, unique_dsts, unique_ports)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT (device_id, minute) DO UPDATE SET
             bytes_up = bytes_up + excluded.bytes_up,
             bytes_down = bytes_down + excluded.bytes_down,
             packets_up = packets_up + excluded.packets_up,
             packets_down = packets_down + excluded.packets_down,
             flows_new = flows_new + excluded.flows_new,
             unique_dsts = max(unique_dsts, excluded.unique_dsts),
             unique_ports = max(unique_ports, excluded.unique_ports)",
    )?;
    for (&(device, minute), t) in &acc.device_minutes {
        let (dsts, ports) = uniques.remove(&(device, minute)).unwrap_or_default();
        stmt.execute(params![
            device,
            minute,
            t.bytes_up as i64,
            t.bytes_down as i64,
            t.packets_up as i64,
            t.packets_down as i64,
            t.flows_new as i64,
            dsts as i64,
            ports as i64
        ])?;
    }
    Ok(())
}

fn write_host_minutes(
    tx: &Transaction,
    acc: &TickAcc,
    mut uniques: IdMap<(i64, i64), usize>,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO remote_host_minutes (remote_host_id, minute, bytes_up, bytes_down,
             packets_up, packets_down, flows_new, unique_devices)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (remote_host_id, minute) DO UPDATE SET
             bytes_up = bytes_up + excluded.bytes_up,
             bytes_down = bytes_down + excluded.bytes_down,
             packets_up = packets_up + excluded.packets_up,
             packets_down = packets_down + excluded.packets_down,
             flows_new = flows_new + excluded.flows_new,
             unique_devices = max(unique_devices, excluded.unique_devices)",
    )?;
    for (&(host, minute), t) in &acc.host_minutes {
        let devs = uniques.remove(&(host, minute)).unwrap_or_default();
        stmt.execute(params![
            host,
            minute,
            t.bytes_up as i64,
            t.bytes_down as i64,
            t.packets_up as i64,
            t.packets_down as i64,
            t.flows_new as i64,
            devs as i64
        ])?;
    }
    Ok(())
}

fn write_hours(tx: &Transaction, acc: &TickAcc) -> rusqlite::Result<()> {
    for (table, key, map) in [
        ("device_hours", "device_id", &acc.device_hours),
        ("remote_host_hours", "remote_host_id", &acc.host_hours),
    ] {
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {table} ({key}, hour, bytes_up, bytes_down, packets_up, packets_down, flows_new)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT ({key}, hour) DO UPDATE SET
                 bytes_up = bytes_up + excluded.bytes_up,
                 bytes_down = bytes_down + excluded.bytes_down,
                 packets_up = packets_up + excluded.packets_up,
                 packets_down = packets_down + excluded.packets_down,
                 flows_new = flows_new + excluded.flows_new"
        ))?;
        for (&(id, hour), t) in map {
            stmt.execute(params![
                id,
                hour,
                t.bytes_up as i64,
                t.bytes_down as i64,
                t.packets_up as i64,
                t.packets_down as i64,
                t.flows_new as i64
            ])?;
        }
    }
    Ok(())
}

fn write_totals(tx: &Transaction, acc: &TickAcc) -> rusqlite::Result<()> {
    for (table, map) in [
        ("devices", &acc.device_totals),
        ("remote_hosts", &acc.host_totals),
    ] {
        let mut stmt = tx.prepare_cached(&format!(
            "UPDATE {table} SET bytes_up = bytes_up + ?2, bytes_down = bytes_down + ?3,
                 flows = flows + ?4, last_seen = max(last_seen, ?5)
             WHERE id = ?1"
        ))?;
        for (&id, (t, seen)) in map {
            stmt.execute(params![
                id,
                t.bytes_up as i64,
                t.bytes_down as i64,
                t.flows_new as i64,
                seen
            ])?;
        }
    }
    Ok(())
}

fn write_host_ports(tx: &Transaction, acc: &TickAcc) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO remote_host_ports (remote_host_id, proto, port, first_seen, last_seen, flows)
         VALUES (?1, ?2, ?3, ?4, ?4, ?5)
         ON CONFLICT (remote_host_id, proto, port) DO UPDATE SET
             last_seen = max(last_seen, excluded.last_seen), flows = flows + excluded.flows",
    )?;
    for (&(host, proto, port), &(flows, seen)) in &acc.host_ports {
        stmt.execute(params![host, proto, port, seen, flows as i64])?;
    }
    Ok(())
}
