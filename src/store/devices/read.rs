//! Reads of the devices: the device list (every filter menu) and one device's page.

use std::borrow::Cow;

use rusqlite::{Connection, OptionalExtension, Row};

use crate::store::dns::read::{DeviceDns, device_dns_minutes, device_top_domains};
use crate::store::flows::read::{FlowFilter, FlowPage, flows};
use crate::store::rollups::read::{DeviceMinute, device_minutes};

/// A LAN device with its lifetime totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRow {
    pub id: i64,
    pub ip: String,
    pub mac: Option<String>,
    pub name: Option<String>,
    pub hostname: Option<String>,
    pub vendor: Option<String>,
    /// The owner's notes.
    pub notes: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub flows: i64,
    /// Its addresses, most recently used first (at most 16: a phone collects a new
    /// IPv6 privacy address a day).
    pub addrs: Vec<String>,
    /// The resolver it last used around the router's (e.g. "DNS-over-HTTPS via
    /// dns.google") and when (`store::resolvers`).
    pub encrypted_dns: Option<(String, i64)>,
}

impl DeviceRow {
    /// What to call the device: its owner's name, its DHCP hostname, its vendor and
    /// address, else its address (as [`super::device_label_sql`] in queries).
    pub fn label(&self) -> Cow<'_, str> {
        fn given(s: &Option<String>) -> Option<&str> {
            s.as_deref().map(str::trim).filter(|s| !s.is_empty())
        }
        match (
            given(&self.name),
            given(&self.hostname),
            given(&self.vendor),
        ) {
            (Some(name), _, _) | (None, Some(name), _) => Cow::Borrowed(name),
            (None, None, Some(vendor)) => Cow::Owned(format!("{vendor} {}", self.ip)),
            (None, None, None) => Cow::Borrowed(&self.ip),
        }
    }
}

const DEVICE_COLUMNS: &str = "id, ip, mac, name, hostname, vendor, first_seen, last_seen, \
     bytes_up, bytes_down, flows, notes, \
     (SELECT group_concat(ip, ' ') FROM (SELECT ip FROM device_addrs a \
         WHERE a.device_id = devices.id ORDER BY a.last_seen DESC LIMIT 16)), \
     encrypted_dns, encrypted_dns_at";

fn device_row(row: &Row) -> rusqlite::Result<DeviceRow> {
    Ok(DeviceRow {
        id: row.get(0)?,
        ip: row.get(1)?,
        mac: row.get(2)?,
        name: row.get(3)?,
        hostname: row.get(4)?,
        vendor: row.get(5)?,
        first_seen: row.get(6)?,
        last_seen: row.get(7)?,
        bytes_up: row.get(8)?,
        bytes_down: row.get(9)?,
        flows: row.get(10)?,
        notes: row.get(11)?,
        addrs: row
            .get::<_, Option<String>>(12)?
            .map(|a| a.split(' ').map(str::to_owned).collect())
            .unwrap_or_default(),
        encrypted_dns: match (row.get(13)?, row.get(14)?) {
            (Some(what), Some(at)) => Some((what, at)),
            _ => None,
        },
    })
}

/// Most devices a list shows. A home LAN has tens; the cap only guards against a
/// pathological table (e.g. a scan through a /16 creating an IP-keyed device per address).
pub const MAX_DEVICES: u32 = 1000;

/// Devices, most recently seen first.
pub fn devices(conn: &Connection) -> rusqlite::Result<Vec<DeviceRow>> {
    conn.prepare_cached(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY last_seen DESC, id DESC LIMIT ?"
    ))?
    .query_map([MAX_DEVICES], device_row)?
    .collect()
}

pub fn device(conn: &Connection, id: i64) -> rusqlite::Result<Option<DeviceRow>> {
    conn.prepare_cached(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = ?"
    ))?
    .query_row([id], device_row)
    .optional()
}

/// An address a device has used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAddr {
    pub ip: String,
    pub first_seen: i64,
    pub last_seen: i64,
}

/// A device's addresses, latest first (bounded: a device rarely has more than a few).
pub fn device_addrs(conn: &Connection, id: i64) -> rusqlite::Result<Vec<DeviceAddr>> {
    conn.prepare_cached(
        "SELECT ip, first_seen, last_seen FROM device_addrs WHERE device_id = ? \
         ORDER BY last_seen DESC LIMIT 100",
    )?
    .query_map([id], |r| {
        Ok(DeviceAddr {
            ip: r.get(0)?,
            first_seen: r.get(1)?,
            last_seen: r.get(2)?,
        })
    })?
    .collect()
}

/// A device's page: the device, its addresses, its recent flows, its minutes and its
/// DNS.
#[derive(Debug, Clone)]
pub struct DevicePage {
    pub device: DeviceRow,
    pub addrs: Vec<DeviceAddr>,
    pub flows: FlowPage,
    pub minutes: Vec<DeviceMinute>,
    pub dns: DeviceDns,
}

/// `None` when there is no such device. `flows` is forced to this device. Minutes (of
/// traffic and DNS) are read from `since_ms`, top domains from `domains_since_ms`.
pub fn device_page(
    conn: &Connection,
    id: i64,
    flows_filter: &FlowFilter,
    since_ms: i64,
    domains_since_ms: i64,
) -> rusqlite::Result<Option<DevicePage>> {
    let Some(device) = device(conn, id)? else {
        return Ok(None);
    };
    let filter = FlowFilter {
        device_id: Some(id),
        ..flows_filter.clone()
    };
    Ok(Some(DevicePage {
        addrs: device_addrs(conn, id)?,
        flows: flows(conn, &filter)?,
        minutes: device_minutes(conn, id, since_ms)?,
        dns: DeviceDns {
            top_domains: device_top_domains(conn, id, domains_since_ms)?,
            minutes: device_dns_minutes(conn, id, since_ms)?,
        },
        device,
    }))
}

#[cfg(test)]
impl DeviceRow {
    /// A device known only by its id and address, for tests to fill in.
    pub fn bare(id: i64, ip: &str) -> DeviceRow {
        DeviceRow {
            id,
            ip: ip.to_owned(),
            mac: None,
            name: None,
            hostname: None,
            vendor: None,
            notes: None,
            first_seen: 0,
            last_seen: 0,
            bytes_up: 0,
            bytes_down: 0,
            flows: 0,
            addrs: Vec::new(),
            encrypted_dns: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_is_name_then_hostname_then_vendor_and_address() {
        let device = |name: Option<&str>, hostname: Option<&str>, vendor: Option<&str>| DeviceRow {
            name: name.map(str::to_owned),
            hostname: hostname.map(str::to_owned),
            vendor: vendor.map(str::to_owned),
            ..DeviceRow::bare(7, "10.0.0.7")
        };
        assert_eq!(device(Some("tv"), Some("lgtv"), Some("LG")).label(), "tv");
        assert_eq!(device(Some(" "), Some("nas"), None).label(), "nas");
        assert_eq!(
            device(None, Some(""), Some("Espressif")).label(),
            "Espressif 10.0.0.7"
        );
        assert_eq!(device(None, None, None).label(), "10.0.0.7");
    }
}
