//! Reads of the DNS tables: the DNS log (`/dns`, `/api/dns`) and a device's DNS panel.

use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};
use serde::Serialize;

use crate::event::DnsSource;
use crate::store::addr::{addr_clause, ip_text};
use crate::store::devices::device_label_sql;
use crate::store::devices::read::{DeviceRow, devices};
use crate::store::filter::{AddrMatch, DEFAULT_PER_PAGE, Where, domain_clause, page_count};
use crate::store::rollups::read::MAX_MINUTES;

/// Which response codes the DNS log shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcodeMatch {
    /// This code (RFC 1035 §4.1.1, RFC 6895 §2.3: 0-4095 with extended codes).
    Code(u16),
    /// No answer was seen (`rcode IS NULL`).
    Unanswered,
}

/// A parsed, bounded DNS log filter; the default is every query, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsFilter {
    pub device_id: Option<i64>,
    pub client: Option<AddrMatch>,
    /// Canonical name (see [`parse_domain`]); subdomains match too.
    pub name: Option<String>,
    pub qtype: Option<u16>,
    pub rcode: Option<RcodeMatch>,
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
}

impl Default for DnsFilter {
    fn default() -> Self {
        DnsFilter {
            device_id: None,
            client: None,
            name: None,
            qtype: None,
            rcode: None,
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

impl DnsFilter {
    pub(crate) fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }
}

pub(crate) fn dns_where(f: &DnsFilter) -> Where {
    let mut w = Where::default();
    if let Some(id) = f.device_id {
        w.add("q.device_id = ?", [Value::Integer(id)]);
    }
    if let Some(m) = &f.client {
        addr_clause(&mut w, "q.client", m);
    }
    if let Some(name) = &f.name {
        domain_clause(&mut w, "q.qname_id", name);
    }
    if let Some(t) = f.qtype {
        w.add("q.qtype = ?", [Value::Integer(t.into())]);
    }
    match f.rcode {
        Some(RcodeMatch::Code(code)) => w.add("q.rcode = ?", [Value::Integer(code.into())]),
        Some(RcodeMatch::Unanswered) => w.add("q.rcode IS NULL", []),
        None => {}
    }
    w
}

/// One DNS query as the log page and `/api/dns` show it, names and device joined in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRow {
    pub id: i64,
    /// Unix ms of the answer, or of the query when none was seen.
    pub ts: i64,
    pub client: String,
    pub device_id: Option<i64>,
    /// The owner's name for the device, else its DHCP hostname.
    pub device_name: Option<String>,
    /// The name asked for (canonical text); `None` only if its `dns_names` row is gone.
    pub name: Option<String>,
    pub qtype: u16,
    /// `None`: no answer was seen.
    pub rcode: Option<u16>,
    /// Address records in the answer.
    pub answers: i64,
    /// The end of the CNAME chain, when there was one.
    pub canonical: Option<String>,
    pub source: DnsSource,
}

/// One page of the DNS log plus the total matching the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPage {
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
    pub queries: Vec<DnsRow>,
}

impl DnsPage {
    pub fn pages(&self) -> u32 {
        page_count(self.total, self.per_page)
    }
}

/// The DNS queries matching `filter`, newest first (ties by id), one page. As for
/// [`flows`], the page's ids are chosen on the indexes of `dns_queries` alone and only
/// those rows are joined to their names and device.
pub fn dns_queries(conn: &Connection, filter: &DnsFilter) -> rusqlite::Result<DnsPage> {
    let w = dns_where(filter);
    let total: i64 = conn
        .prepare_cached(&format!("SELECT count(*) FROM dns_queries q{}", w.sql()))?
        .query_row(params_from_iter(w.params.iter()), |r| r.get(0))?;
    let sql = format!(
        "SELECT q.id, q.ts, q.client, q.device_id, \
         {label}, \
         n.name, q.qtype, q.rcode, q.answers, c.name, q.source FROM \
         (SELECT q.id FROM dns_queries q{where_} ORDER BY q.ts DESC, q.id DESC LIMIT ? OFFSET ?) page \
         JOIN dns_queries q ON q.id = page.id \
         LEFT JOIN devices d ON d.id = q.device_id \
         LEFT JOIN dns_names n ON n.id = q.qname_id \
         LEFT JOIN dns_names c ON c.id = q.cname_id \
         ORDER BY q.ts DESC, q.id DESC",
        label = device_label_sql!(),
        where_ = w.sql(),
    );
    let mut params = w.params;
    params.push(Value::Integer(filter.per_page.into()));
    params.push(Value::Integer(filter.offset()));
    let queries = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(params.iter()), |r| {
            Ok(DnsRow {
                id: r.get(0)?,
                ts: r.get(1)?,
                client: ip_text(r.get_ref(2)?).unwrap_or_default(),
                device_id: r.get(3)?,
                device_name: r.get(4)?,
                name: r.get(5)?,
                qtype: r.get(6)?,
                rcode: r.get(7)?,
                answers: r.get(8)?,
                canonical: r.get(9)?,
                source: DnsSource::from_code(r.get(10)?),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(DnsPage {
        total: u64::try_from(total).unwrap_or(0),
        page: filter.page,
        per_page: filter.per_page,
        queries,
    })
}

/// A name a device asked for, with how often and when last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainCount {
    pub name: String,
    pub queries: i64,
    pub last_seen: i64,
}

/// Names a device page lists.
pub const MAX_TOP_DOMAINS: u32 = 25;

/// The names a device asked for most since `since_ms`, busiest first. Counted on the
/// `(device_id, ts)` index over that device's queries only; names are joined to the
/// winners alone.
pub fn device_top_domains(
    conn: &Connection,
    id: i64,
    since_ms: i64,
) -> rusqlite::Result<Vec<DomainCount>> {
    conn.prepare_cached(
        "SELECT n.name, t.queries, t.last_seen FROM \
         (SELECT qname_id, count(*) AS queries, max(ts) AS last_seen FROM dns_queries \
          WHERE device_id = ? AND ts >= ? GROUP BY qname_id \
          ORDER BY queries DESC, last_seen DESC, qname_id LIMIT ?) t \
         JOIN dns_names n ON n.id = t.qname_id \
         ORDER BY t.queries DESC, t.last_seen DESC, t.qname_id",
    )?
    .query_map(params![id, since_ms, MAX_TOP_DOMAINS], |r| {
        Ok(DomainCount {
            name: r.get(0)?,
            queries: r.get(1)?,
            last_seen: r.get(2)?,
        })
    })?
    .collect()
}

/// One row of `dns_device_minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DnsMinute {
    /// Start of the UTC minute, unix ms.
    pub minute: i64,
    pub queries: i64,
    pub nxdomain: i64,
    /// Distinct names asked that minute.
    pub names: i64,
}

/// A device's DNS minute rollups from `since_ms` on, oldest first; at most
/// [`MAX_MINUTES`] (the latest ones when there are more).
pub fn device_dns_minutes(
    conn: &Connection,
    id: i64,
    since_ms: i64,
) -> rusqlite::Result<Vec<DnsMinute>> {
    let mut rows = conn
        .prepare_cached(
            "SELECT minute, queries, nxdomain, names FROM dns_device_minutes \
             WHERE device_id = ? AND minute >= ? ORDER BY minute DESC LIMIT ?",
        )?
        .query_map(params![id, since_ms, MAX_MINUTES], |r| {
            Ok(DnsMinute {
                minute: r.get(0)?,
                queries: r.get(1)?,
                nxdomain: r.get(2)?,
                names: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.reverse();
    Ok(rows)
}

/// The DNS part of a device page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDns {
    /// Over the top-domains window (a day).
    pub top_domains: Vec<DomainCount>,
    /// Over the page's chart window.
    pub minutes: Vec<DnsMinute>,
}

impl DeviceDns {
    /// Queries and NXDOMAIN answers over the chart window (the same minutes the chart
    /// shows, so the ratio and the bars always agree).
    pub fn totals(&self) -> (i64, i64) {
        self.minutes
            .iter()
            .fold((0, 0), |(q, nx), m| (q + m.queries, nx + m.nxdomain))
    }
}

/// The DNS log: one page of queries, and the devices for its filter menu.
#[derive(Debug, Clone)]
pub struct DnsLog {
    pub queries: DnsPage,
    pub devices: Vec<DeviceRow>,
}

pub fn dns_log(conn: &Connection, filter: &DnsFilter) -> rusqlite::Result<DnsLog> {
    Ok(DnsLog {
        queries: dns_queries(conn, filter)?,
        devices: devices(conn)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::devices::read::device_page;
    use crate::store::flows::read::FlowFilter;
    use crate::store::testdata::{dns_query as dq, seeded};
    use crate::store::testdata::{insert_queries, tempdir};

    fn dns_seeded() -> (tempdir::TempDir, Connection) {
        let (dir, conn) = seeded();
        #[rustfmt::skip]
        insert_queries(&conn, &[
            (1, 1000, "10.0.0.5", Some(1), "shop.example.test", 1, Some(0), 1, None),
            (2, 2000, "10.0.0.5", Some(1), "cdn.example.test", 1, Some(0), 2, Some("edge.cdn-provider.test")),
            (3, 3000, "10.0.0.6", Some(2), "nx.example.test", 28, Some(3), 0, None),
            (4, 3000, "10.0.0.5", Some(1), "a.shop.example.test", 28, None, 0, None),
            (5, 4000, "10.0.0.9", None, "xshop.example.test", 65, Some(2), 0, None),
            (6, 5000, "10.0.0.5", Some(1), "shop.example.test", 1, Some(0), 1, None),
        ]);
        (dir, conn)
    }

    fn dns_ids(conn: &Connection, pairs: &[(&str, &str)]) -> Vec<i64> {
        let f = DnsFilter::parse(&dq(pairs)).unwrap();
        dns_queries(conn, &f)
            .unwrap()
            .queries
            .iter()
            .map(|q| q.id)
            .collect()
    }

    #[test]
    fn dns_log_rows_and_filters() {
        let (_d, conn) = dns_seeded();
        let page = dns_queries(&conn, &DnsFilter::default()).unwrap();
        assert_eq!(page.total, 6);
        assert_eq!(
            page.queries.iter().map(|q| q.id).collect::<Vec<_>>(),
            vec![6, 5, 4, 3, 2, 1]
        );
        let cdn = &page.queries[4];
        assert_eq!(cdn.name.as_deref(), Some("cdn.example.test"));
        assert_eq!(cdn.canonical.as_deref(), Some("edge.cdn-provider.test"));
        assert_eq!(cdn.device_name.as_deref(), Some("laptop"));
        assert_eq!((cdn.qtype, cdn.rcode, cdn.answers), (1, Some(0), 2));
        assert_eq!(page.queries[1].device_id, None);
        assert_eq!(dns_ids(&conn, &[("device", "1")]), vec![6, 4, 2, 1]);
        assert_eq!(dns_ids(&conn, &[("client", "10.0.0.6")]), vec![3]);
        assert_eq!(
            dns_ids(&conn, &[("client", "10.0.0.")]),
            vec![6, 5, 4, 3, 2, 1]
        );
        assert_eq!(
            dns_ids(&conn, &[("name", "shop.example.test")]),
            vec![6, 4, 1]
        );
        assert_eq!(
            dns_ids(&conn, &[("name", "example.test")]),
            vec![6, 5, 4, 3, 2, 1]
        );
        assert_eq!(dns_ids(&conn, &[("type", "AAAA")]), vec![4, 3]);
        assert_eq!(dns_ids(&conn, &[("rcode", "NXDOMAIN")]), vec![3]);
        assert_eq!(dns_ids(&conn, &[("rcode", "none")]), vec![4]);
        assert_eq!(
            dns_ids(&conn, &[("rcode", "NOERROR"), ("device", "1")]),
            vec![6, 2, 1]
        );
        let p2 = dns_queries(
            &conn,
            &DnsFilter::parse(&dq(&[("per_page", "4"), ("page", "2")])).unwrap(),
        )
        .unwrap();
        assert_eq!((p2.total, p2.pages(), p2.queries.len()), (6, 2, 2));
    }

    #[test]
    fn device_dns_top_domains_minutes_and_ratio() {
        let (_d, conn) = dns_seeded();
        let top = device_top_domains(&conn, 1, 0).unwrap();
        let names: Vec<(&str, i64, i64)> = top
            .iter()
            .map(|t| (t.name.as_str(), t.queries, t.last_seen))
            .collect();
        assert_eq!(
            names,
            vec![
                ("shop.example.test", 2, 5000),
                ("a.shop.example.test", 1, 3000),
                ("cdn.example.test", 1, 2000),
            ]
        );
        // The window bounds it.
        assert_eq!(device_top_domains(&conn, 1, 2500).unwrap().len(), 2);
        conn.execute_batch(
            "INSERT INTO dns_device_minutes (device_id, minute, queries, nxdomain, names) VALUES
               (1, 0, 100, 100, 1), (1, 60000, 30, 3, 5), (1, 120000, 10, 0, 2), (2, 60000, 7, 7, 1);",
        )
        .unwrap();
        let minutes = device_dns_minutes(&conn, 1, 60_000).unwrap();
        assert_eq!(
            minutes.iter().map(|m| m.minute).collect::<Vec<_>>(),
            vec![60_000, 120_000]
        );
        let dns = DeviceDns {
            top_domains: top,
            minutes,
        };
        assert_eq!(dns.totals(), (40, 3));
        let page = device_page(&conn, 1, &FlowFilter::default(), 60_000, 0)
            .unwrap()
            .unwrap();
        assert_eq!(page.dns.totals(), (40, 3));
        assert_eq!(page.dns.top_domains.len(), 3);
    }
}
