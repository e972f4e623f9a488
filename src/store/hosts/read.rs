//! Reads of the remote hosts: the hosts list (`/hosts`) and one host's page.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::store::devices::device_label_sql;
use crate::store::filter::{Order, Where, escape_like, page_count};
use crate::store::flows::read::{FlowFilter, FlowPage, flows};
use crate::store::rollups::read::{RemoteHostMinute, remote_host_minutes};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostSort {
    #[default]
    LastSeen,
    FirstSeen,
    Bytes,
    Flows,
}

impl HostSort {
    pub fn as_str(self) -> &'static str {
        match self {
            HostSort::LastSeen => "last_seen",
            HostSort::FirstSeen => "first_seen",
            HostSort::Bytes => "bytes",
            HostSort::Flows => "flows",
        }
    }
}

pub const DEFAULT_HOSTS_PER_PAGE: u32 = 100;

/// A parsed remote host list filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFilter {
    pub q: Option<String>,
    pub sort: HostSort,
    pub order: Order,
    pub page: u32,
    pub per_page: u32,
}

impl Default for HostFilter {
    fn default() -> Self {
        HostFilter {
            q: None,
            sort: HostSort::LastSeen,
            order: Order::Desc,
            page: 1,
            per_page: DEFAULT_HOSTS_PER_PAGE,
        }
    }
}

/// An internet peer with its lifetime totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHostRow {
    pub id: i64,
    pub ip: String,
    pub rdns: Option<String>,
    pub asn: Option<i64>,
    pub org: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub flows: i64,
    /// The name most flows reached it as ([`remote_host_domains`]' busiest).
    pub top_domain: Option<String>,
}

/// Every column of a host row, `h` being `remote_hosts`. The top domain is a lookup on
/// the `remote_host_domains` primary key (the host's few names), so it is only ever
/// computed for the rows a page returns.
const HOST_COLUMNS: &str = "h.id, h.ip, h.rdns, h.asn, h.org, h.first_seen, h.last_seen, \
     h.bytes_up, h.bytes_down, h.flows, \
     (SELECT n.name FROM remote_host_domains rd JOIN dns_names n ON n.id = rd.qname_id \
      WHERE rd.remote_host_id = h.id ORDER BY rd.flows DESC, rd.last_seen DESC LIMIT 1)";

/// `remote_hosts.rdns` as pages and the API show it: `''` (looked up, no PTR) becomes
/// "none"; NULL (not looked up yet) stays `None`.
pub(crate) fn rdns_text(stored: Option<String>) -> Option<String> {
    stored.map(|s| {
        if s == crate::store::enrich::RDNS_NONE {
            "none".to_owned()
        } else {
            s
        }
    })
}

fn host_row(row: &Row) -> rusqlite::Result<RemoteHostRow> {
    Ok(RemoteHostRow {
        id: row.get(0)?,
        ip: row.get(1)?,
        rdns: rdns_text(row.get(2)?),
        asn: row.get(3)?,
        org: row.get(4)?,
        first_seen: row.get(5)?,
        last_seen: row.get(6)?,
        bytes_up: row.get(7)?,
        bytes_down: row.get(8)?,
        flows: row.get(9)?,
        top_domain: row.get(10)?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPage {
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
    pub hosts: Vec<RemoteHostRow>,
}

impl HostPage {
    pub fn pages(&self) -> u32 {
        page_count(self.total, self.per_page)
    }
}

/// Remote hosts matching `filter` (address prefix, or a substring of the reverse-DNS
/// name or of a name the host was reached as), one page.
/// Like [`flows`], the page's ids are chosen first and only they get their top domain.
pub fn remote_hosts(conn: &Connection, filter: &HostFilter) -> rusqlite::Result<HostPage> {
    let mut w = Where::default();
    if let Some(text) = &filter.q {
        let e = escape_like(text);
        w.add(
            "(ip LIKE ? ESCAPE '\\' OR rdns LIKE ? ESCAPE '\\' OR id IN \
             (SELECT rd.remote_host_id FROM remote_host_domains rd WHERE rd.qname_id IN \
              (SELECT id FROM dns_names WHERE name LIKE ? ESCAPE '\\')))",
            [
                Value::Text(format!("{e}%")),
                Value::Text(format!("%{e}%")),
                Value::Text(format!("%{e}%")),
            ],
        );
    }
    let total: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM remote_hosts{}", w.sql()))?
        .query_row(params_from_iter(w.params.iter()), |r| r.get(0))?;
    let dir = filter.order.as_str();
    let key = match filter.sort {
        HostSort::LastSeen => "last_seen",
        HostSort::FirstSeen => "first_seen",
        HostSort::Bytes => "bytes_up + bytes_down",
        HostSort::Flows => "flows",
    };
    let sql = format!(
        "SELECT {HOST_COLUMNS} FROM \
         (SELECT id FROM remote_hosts{where_} ORDER BY {key} {dir}, id {dir} LIMIT ? OFFSET ?) page \
         JOIN remote_hosts h ON h.id = page.id \
         ORDER BY {key} {dir}, h.id {dir}",
        where_ = w.sql(),
    );
    let mut params = w.params;
    params.push(Value::Integer(filter.per_page.into()));
    params.push(Value::Integer(
        i64::from(filter.page - 1) * i64::from(filter.per_page),
    ));
    let hosts = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(params.iter()), host_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(HostPage {
        total: u64::try_from(total).unwrap_or(0),
        page: filter.page,
        per_page: filter.per_page,
        hosts,
    })
}

pub fn remote_host(conn: &Connection, id: i64) -> rusqlite::Result<Option<RemoteHostRow>> {
    conn.prepare_cached(&format!(
        "SELECT {HOST_COLUMNS} FROM remote_hosts h WHERE h.id = ?"
    ))?
    .query_row([id], host_row)
    .optional()
}

/// A port of a remote host that LAN devices contacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub proto: u8,
    pub port: u16,
    pub first_seen: i64,
    pub last_seen: i64,
    pub flows: i64,
}

/// Ports of a remote host, busiest first (bounded: a scanned host can have thousands).
pub fn remote_host_ports(conn: &Connection, id: i64) -> rusqlite::Result<Vec<HostPort>> {
    conn.prepare_cached(
        "SELECT proto, port, first_seen, last_seen, flows FROM remote_host_ports \
         WHERE remote_host_id = ? ORDER BY flows DESC, proto, port LIMIT 200",
    )?
    .query_map([id], |r| {
        Ok(HostPort {
            proto: r.get(0)?,
            port: r.get(1)?,
            first_seen: r.get(2)?,
            last_seen: r.get(3)?,
            flows: r.get(4)?,
        })
    })?
    .collect()
}

/// A name a remote host was reached as, from `remote_host_domains`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDomain {
    pub name: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub flows: i64,
    pub last_device_id: Option<i64>,
    /// What to call that device (see [`DeviceRow::label`]).
    pub last_device_label: Option<String>,
}

/// Most names a host page lists. A CDN address serves many names; the busiest matter.
pub const MAX_HOST_DOMAINS: u32 = 200;

/// The names a remote host was reached as, busiest first.
pub fn remote_host_domains(conn: &Connection, id: i64) -> rusqlite::Result<Vec<HostDomain>> {
    conn.prepare_cached(concat!(
        "SELECT n.name, rd.first_seen, rd.last_seen, rd.flows, rd.last_device_id, ",
        device_label_sql!(),
        " FROM remote_host_domains rd JOIN dns_names n ON n.id = rd.qname_id \
         LEFT JOIN devices d ON d.id = rd.last_device_id \
         WHERE rd.remote_host_id = ? ORDER BY rd.flows DESC, rd.last_seen DESC LIMIT ?",
    ))?
    .query_map(params![id, MAX_HOST_DOMAINS], |r| {
        Ok(HostDomain {
            name: r.get(0)?,
            first_seen: r.get(1)?,
            last_seen: r.get(2)?,
            flows: r.get(3)?,
            last_device_id: r.get(4)?,
            last_device_label: r.get(5)?,
        })
    })?
    .collect()
}

/// A remote host's page: the host, its ports and domains, its recent flows and its
/// minutes.
#[derive(Debug, Clone)]
pub struct RemoteHostPage {
    pub host: RemoteHostRow,
    pub ports: Vec<HostPort>,
    pub domains: Vec<HostDomain>,
    pub flows: FlowPage,
    pub minutes: Vec<RemoteHostMinute>,
}

/// `None` when there is no such host. `flows` is forced to this host.
pub fn remote_host_page(
    conn: &Connection,
    id: i64,
    flows_filter: &FlowFilter,
    since_ms: i64,
) -> rusqlite::Result<Option<RemoteHostPage>> {
    let Some(host) = remote_host(conn, id)? else {
        return Ok(None);
    };
    let filter = FlowFilter {
        remote_host_id: Some(id),
        ..flows_filter.clone()
    };
    Ok(Some(RemoteHostPage {
        ports: remote_host_ports(conn, id)?,
        domains: remote_host_domains(conn, id)?,
        flows: flows(conn, &filter)?,
        minutes: remote_host_minutes(conn, id, since_ms)?,
        host,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdata::{name_id, seeded};

    #[test]
    fn hosts_carry_their_domains() {
        let (_d, conn) = seeded();
        conn.execute(
            "INSERT INTO remote_hosts (id, ip, first_seen, last_seen) VALUES \
             (1, '198.51.100.1', 100, 5000), (2, '198.51.100.2', 3000, 6000)",
            [],
        )
        .unwrap();
        let a = name_id(&conn, "a.example.test");
        let b = name_id(&conn, "b.example.test");
        conn.execute(
            "INSERT INTO remote_host_domains (remote_host_id, qname_id, first_seen, last_seen, \
             flows, last_device_id) VALUES (1, ?1, 100, 4000, 2, 1), (1, ?2, 200, 5000, 7, 2)",
            params![a, b],
        )
        .unwrap();
        let page = remote_hosts(&conn, &HostFilter::default()).unwrap();
        assert_eq!(
            page.hosts.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(page.hosts[0].top_domain, None);
        assert_eq!(page.hosts[1].top_domain.as_deref(), Some("b.example.test"));
        let sorted = remote_hosts(
            &conn,
            &HostFilter {
                sort: HostSort::FirstSeen,
                order: Order::Asc,
                ..HostFilter::default()
            },
        )
        .unwrap();
        assert_eq!(
            sorted.hosts.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        let domains = remote_host_domains(&conn, 1).unwrap();
        assert_eq!(
            domains,
            vec![
                HostDomain {
                    name: "b.example.test".into(),
                    first_seen: 200,
                    last_seen: 5000,
                    flows: 7,
                    last_device_id: Some(2),
                    last_device_label: Some("10.0.0.6".into()),
                },
                HostDomain {
                    name: "a.example.test".into(),
                    first_seen: 100,
                    last_seen: 4000,
                    flows: 2,
                    last_device_id: Some(1),
                    last_device_label: Some("laptop".into()),
                },
            ]
        );
        let host = remote_host(&conn, 1).unwrap().unwrap();
        assert_eq!(host.top_domain.as_deref(), Some("b.example.test"));
    }
}
