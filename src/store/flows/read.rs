//! Over 800 lines: the flow filter's SQL and the tests that pin its results and query
//! plans are one concern; a quarter of the file is those tests.
//!
//! Reads of the flows table: the flow filter (the SQL's input, built by
//! `crate::web::query` from a query string), the flows table page, the CSV export and the
//! `/flows` page's headline numbers.
//!
//! Query plans were checked with `EXPLAIN QUERY PLAN` against a million-flow table;
//! `tests::plans_use_indexes` keeps the hot ones honest.

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params_from_iter};

use crate::detect::Code;
use crate::flow::Direction;
use crate::store::addr::{addr_clause, ip_text};
use crate::store::devices::device_label_sql;
use crate::store::devices::read::{DeviceRow, devices};
use crate::store::filter::{
    AddrMatch, DEFAULT_PER_PAGE, Order, TimeBound, Where, domain_clause, page_count,
};
use crate::store::hosts::read::rdns_text;

/// A column of the flows table, as `cols=` names it. Carried in the filter so every
/// sort, page and filter link keeps the owner's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlowColumn {
    Device,
    Src,
    Domain,
    Dst,
    Proto,
    Dir,
    State,
    Score,
    Bytes,
    Age,
    LastSeen,
}

impl FlowColumn {
    /// Every column, in display order; the default is all of them.
    pub const ALL: [FlowColumn; 11] = [
        FlowColumn::Device,
        FlowColumn::Src,
        FlowColumn::Domain,
        FlowColumn::Dst,
        FlowColumn::Proto,
        FlowColumn::Dir,
        FlowColumn::State,
        FlowColumn::Score,
        FlowColumn::Bytes,
        FlowColumn::Age,
        FlowColumn::LastSeen,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FlowColumn::Device => "device",
            FlowColumn::Src => "src",
            FlowColumn::Domain => "domain",
            FlowColumn::Dst => "dst",
            FlowColumn::Proto => "proto",
            FlowColumn::Dir => "dir",
            FlowColumn::State => "state",
            FlowColumn::Score => "score",
            FlowColumn::Bytes => "bytes",
            FlowColumn::Age => "age",
            FlowColumn::LastSeen => "last_seen",
        }
    }
}

/// Which flows by lifetime: live ones (`ended_at IS NULL`), ended ones, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Show {
    #[default]
    Active,
    All,
    Ended,
}

impl Show {
    pub fn as_str(self) -> &'static str {
        match self {
            Show::Active => "active",
            Show::All => "all",
            Show::Ended => "ended",
        }
    }
}

/// Sort keys of the flows table. Ties are always broken by flow id in the same
/// direction, so rows keep their places across live refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowSort {
    #[default]
    LastSeen,
    /// Up + down bytes.
    Bytes,
    /// Time since `first_seen`: descending puts the longest-lived flows first.
    Age,
    /// Destination address, then port.
    Dst,
}

impl FlowSort {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowSort::LastSeen => "last_seen",
            FlowSort::Bytes => "bytes",
            FlowSort::Age => "age",
            FlowSort::Dst => "dst",
        }
    }

    /// The order a user expects on first click: biggest, oldest, latest first; addresses
    /// alphabetically.
    pub fn default_order(self) -> Order {
        match self {
            FlowSort::Dst => Order::Asc,
            _ => Order::Desc,
        }
    }
}

/// The directions a flow table shows by default: traffic with an internet peer.
/// Router-local and LAN↔LAN flows are kept but hidden unless asked for (DESIGN §3).
pub const DEFAULT_DIRECTIONS: [Direction; 2] = [Direction::Outbound, Direction::Inbound];

/// Every direction, in display order.
pub const ALL_DIRECTIONS: [Direction; 5] = [
    Direction::Outbound,
    Direction::Inbound,
    Direction::RouterLocal,
    Direction::Lan,
    Direction::Other,
];

/// A parsed, bounded flow filter. Build with [`FlowFilter::parse`]; the default is the
/// `/flows` page's view (active internet flows, latest first, 50 per page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowFilter {
    pub show: Show,
    /// Sorted, deduplicated, never empty. All five means no direction condition.
    pub directions: Vec<Direction>,
    pub src: Option<AddrMatch>,
    pub dst: Option<AddrMatch>,
    pub device_id: Option<i64>,
    pub remote_host_id: Option<i64>,
    /// Matches the original source or destination port.
    pub port: Option<u16>,
    pub proto: Option<u8>,
    /// Canonical name (see [`parse_domain`]): the flow's asked-for name is this name or
    /// one of its subdomains.
    pub domain: Option<String>,
    /// A TCP state name.
    pub state: Option<&'static str>,
    /// A hit tied to the flow (`hits.flow_id`) scored at least this.
    pub min_score: Option<u32>,
    /// A hit tied to the flow carries this reason code.
    pub code: Option<Code>,
    /// The flow was active at or after this time (`last_seen >= from`).
    pub from: Option<TimeBound>,
    /// The flow started at or before this time (`first_seen <= to`).
    pub to: Option<TimeBound>,
    /// Bytes up + down at least this.
    pub min_bytes: Option<u64>,
    /// Visible table columns, in display order, never empty.
    pub columns: Vec<FlowColumn>,
    pub sort: FlowSort,
    pub order: Order,
    /// 1-based; ignored when `last_page`.
    pub page: u32,
    /// `page=last`: the final page, found by reading the sort backwards (the count
    /// stops at [`COUNT_PAGES`] pages, so its number may be unknown).
    pub last_page: bool,
    pub per_page: u32,
}

impl Default for FlowFilter {
    fn default() -> Self {
        FlowFilter {
            show: Show::Active,
            directions: DEFAULT_DIRECTIONS.to_vec(),
            src: None,
            dst: None,
            device_id: None,
            remote_host_id: None,
            port: None,
            proto: None,
            domain: None,
            state: None,
            min_score: None,
            code: None,
            from: None,
            to: None,
            min_bytes: None,
            columns: FlowColumn::ALL.to_vec(),
            sort: FlowSort::LastSeen,
            order: FlowSort::LastSeen.default_order(),
            page: 1,
            last_page: false,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

/// `now` resolves relative time bounds (`from=1h`).
fn flow_where(f: &FlowFilter, now: i64) -> Where {
    let mut w = Where::default();
    match f.show {
        Show::Active => w.add("f.ended_at IS NULL", []),
        Show::Ended => w.add("f.ended_at IS NOT NULL", []),
        Show::All => {}
    }
    if f.directions.len() < ALL_DIRECTIONS.len() {
        let marks = vec!["?"; f.directions.len()].join(",");
        w.add(
            format!("f.direction IN ({marks})"),
            f.directions.iter().map(|d| Value::Integer(d.code())),
        );
    }
    if let Some(m) = &f.src {
        addr_clause(&mut w, "f.src_ip", m);
    }
    if let Some(m) = &f.dst {
        addr_clause(&mut w, "f.dst_ip", m);
    }
    if let Some(id) = f.device_id {
        w.add("f.device_id = ?", [Value::Integer(id)]);
    }
    if let Some(id) = f.remote_host_id {
        w.add("f.remote_host_id = ?", [Value::Integer(id)]);
    }
    if let Some(port) = f.port {
        w.add(
            "(f.src_port = ? OR f.dst_port = ?)",
            [Value::Integer(port.into()), Value::Integer(port.into())],
        );
    }
    if let Some(proto) = f.proto {
        w.add("f.proto = ?", [Value::Integer(proto.into())]);
    }
    if let Some(name) = &f.domain {
        domain_clause(&mut w, "f.qname_id", name);
    }
    if let Some(state) = f.state {
        let code = crate::flow::tcp_state_from_name(state).map_or(-1, i64::from);
        w.add("f.state = ?", [Value::Integer(code)]);
    }
    if f.min_score.is_some() || f.code.is_some() {
        hit_clause(&mut w, f);
    }
    if let Some(from) = &f.from {
        w.add("f.last_seen >= ?", [Value::Integer(from.at(now))]);
    }
    if let Some(to) = &f.to {
        w.add("f.first_seen <= ?", [Value::Integer(to.at(now))]);
    }
    if let Some(bytes) = f.min_bytes {
        // Through `flows_bytes` only when sorting by bytes: as a range it matches half
        // the table, and SQLite would rather sort that half than walk the sort's index
        // (`+ 0` keeps the term off the index).
        let term = if f.sort == FlowSort::Bytes {
            "f.bytes_up + f.bytes_down >= ?"
        } else {
            "f.bytes_up + f.bytes_down + 0 >= ?"
        };
        w.add(
            term,
            [Value::Integer(i64::try_from(bytes).unwrap_or(i64::MAX))],
        );
    }
    w
}

/// `min_score=` and `code=`: the flow has a hit (`hits.flow_id`) scoring at least that,
/// or carrying that code.
fn hit_clause(w: &mut Where, f: &FlowFilter) {
    // Hits name the flow that caused them (`hits.flow_id`); the few matching hits
    // drive the lookup, not a scan of the flows.
    // With a device or host filter, their covering index checks the list without a
    // row lookup per hit (`+` keeps the hit list from driving the join, which would
    // look up every hit's flow row).
    let id = if f.device_id.is_some() || f.remote_host_id.is_some() {
        "+f.id"
    } else {
        "f.id"
    };
    let mut clause = format!("{id} IN (SELECT h.flow_id FROM hits h WHERE h.flow_id IS NOT NULL");
    let mut params = Vec::new();
    if let Some(score) = f.min_score {
        clause.push_str(" AND h.score >= ?");
        params.push(Value::Integer(score.into()));
    }
    if let Some(code) = f.code {
        clause.push_str(" AND ");
        clause.push_str(&crate::store::detect::read::code_clause("h.codes"));
        params.push(crate::store::detect::read::code_param(code));
    }
    clause.push(')');
    w.add(clause, params);
}

/// The index a flows page walks, when the filter has nothing selective to start from.
///
/// Without one, SQLite's cost model prefers reading the whole table and sorting it over
/// walking the sort's index with a row lookup per candidate — right for "every row",
/// badly wrong for "the first 50" (a `state=` filter became a 1-million-row sort). The
/// index order stops at the LIMIT. A device, host, domain, hit or time filter narrows
/// the candidates first and is left to the planner, as is the live view (its partial
/// index holds only the live flows) and the destination sort (no index).
fn sort_index(f: &FlowFilter) -> Option<&'static str> {
    let narrowed = f.device_id.is_some()
        || f.remote_host_id.is_some()
        || f.domain.is_some()
        || f.min_score.is_some()
        || f.code.is_some()
        || f.from.is_some()
        || f.to.is_some();
    if narrowed || f.show == Show::Active {
        return None;
    }
    match f.sort {
        FlowSort::LastSeen => Some("flows_last_seen"),
        FlowSort::Bytes => Some("flows_bytes"),
        FlowSort::Age => Some("flows_first_seen"),
        FlowSort::Dst => None,
    }
}

fn flow_order_by(f: &FlowFilter) -> String {
    flow_order_in(f.sort, f.order)
}

/// The ORDER BY of `sort` in `order`, ties broken by id the same way.
fn flow_order_in(sort: FlowSort, order: Order) -> String {
    let dir = order.as_str();
    match sort {
        FlowSort::LastSeen => format!("f.last_seen {dir}, f.id {dir}"),
        FlowSort::Bytes => format!("f.bytes_up + f.bytes_down {dir}, f.id {dir}"),
        // Oldest first is "largest age first": age runs opposite to first_seen.
        FlowSort::Age => {
            let inv = order.reverse().as_str();
            format!("f.first_seen {inv}, f.id {inv}")
        }
        FlowSort::Dst => format!("f.dst_ip {dir}, f.dst_port {dir}, f.id {dir}"),
    }
}

/// One flow as pages and the API show it, with its device's display name and the
/// remote host's reverse-DNS name joined in (no per-row lookups). Serialises as one
/// flow of `/api/flows`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FlowRow {
    pub id: i64,
    pub ct_id: i64,
    pub family: i64,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, … or the number, in JSON.
    #[serde(serialize_with = "proto_as_name")]
    pub proto: u8,
    /// As stored: outbound | inbound | router-local | lan | other.
    pub direction: String,
    pub src_ip: String,
    pub src_port: Option<u16>,
    pub dst_ip: String,
    pub dst_port: Option<u16>,
    pub reply_src_ip: String,
    pub reply_src_port: Option<u16>,
    pub reply_dst_ip: String,
    pub reply_dst_port: Option<u16>,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub state: Option<String>,
    pub status: i64,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub packets_up: i64,
    pub packets_down: i64,
    pub first_seen: i64,
    pub last_seen: i64,
    pub ended_at: Option<i64>,
    pub device_id: Option<i64>,
    /// The owner's name for the device, else its DHCP hostname.
    pub device_name: Option<String>,
    pub remote_host_id: Option<i64>,
    /// Shown on pages; not part of the flow API.
    #[serde(skip)]
    pub remote_rdns: Option<String>,
    /// The name the flow's client asked for when it resolved the destination (canonical
    /// text, see [`crate::dns_name`]); for a CNAME chain, the start of the chain.
    pub domain: Option<String>,
    /// The end of the CNAME chain, when there was one.
    pub domain_canonical: Option<String>,
    /// How sure the domain is: `exact`, `stale`, `other-client`, `sni` (the TLS server name) or `none`
    /// ([`crate::store::dns::match_name`]).
    pub dns_match: &'static str,
    /// The highest score of the detection hits this flow caused, if any.
    pub score: Option<i64>,
}

/// The reply tuple is stored only where NAT changed it (`migrations/0011`).
const FLOW_COLUMNS: &str = concat!(
    "f.id, f.ct_id, f.proto, f.direction, \
     f.src_ip, f.src_port, f.dst_ip, f.dst_port, \
     coalesce(f.reply_src_ip, f.dst_ip), coalesce(f.reply_src_port, f.dst_port), \
     coalesce(f.reply_dst_ip, f.src_ip), coalesce(f.reply_dst_port, f.src_port), \
     f.icmp_type, f.icmp_code, f.state, f.status, \
     f.bytes_up, f.bytes_down, f.packets_up, f.packets_down, \
     f.first_seen, f.last_seen, f.ended_at, \
     f.device_id, ",
    device_label_sql!(),
    ", f.remote_host_id, r.rdns, qn.name, cn.name, f.dns_match, \
     (SELECT max(h.score) FROM hits h WHERE h.flow_id = f.id)"
);

fn flow_row(row: &Row) -> rusqlite::Result<FlowRow> {
    let ip =
        |i: usize| -> rusqlite::Result<String> { Ok(ip_text(row.get_ref(i)?).unwrap_or_default()) };
    let src_ip = ip(4)?;
    Ok(FlowRow {
        id: row.get(0)?,
        ct_id: row.get(1)?,
        family: if src_ip.contains(':') { 6 } else { 4 },
        proto: row.get(2)?,
        direction: Direction::from_code(row.get(3)?).as_str().to_owned(),
        src_ip,
        src_port: row.get(5)?,
        dst_ip: ip(6)?,
        dst_port: row.get(7)?,
        reply_src_ip: ip(8)?,
        reply_src_port: row.get(9)?,
        reply_dst_ip: ip(10)?,
        reply_dst_port: row.get(11)?,
        icmp_type: row.get(12)?,
        icmp_code: row.get(13)?,
        state: row
            .get::<_, Option<u8>>(14)?
            .map(|s| crate::flow::tcp_state_name(s).to_owned()),
        status: row.get(15)?,
        bytes_up: row.get(16)?,
        bytes_down: row.get(17)?,
        packets_up: row.get(18)?,
        packets_down: row.get(19)?,
        first_seen: row.get(20)?,
        last_seen: row.get(21)?,
        ended_at: row.get(22)?,
        device_id: row.get(23)?,
        device_name: row.get(24)?,
        remote_host_id: row.get(25)?,
        remote_rdns: rdns_text(row.get(26)?),
        domain: row.get(27)?,
        domain_canonical: row.get(28)?,
        dns_match: crate::store::dns::match_name(row.get(29)?),
        score: row.get(30)?,
    })
}

fn proto_as_name<S: serde::Serializer>(proto: &u8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::flow::proto_name(*proto))
}

/// Counting stops after this many pages' worth of flows (1 000 at the default 50 a
/// page, 10 000 at 500). An exact `count(*)` over a million-flow filter costs seconds,
/// and a filter no index narrows (a CIDR, a state) costs a row visit per candidate
/// until the cap is reached, so the cap is what bounds the count. Past it the page says
/// "1 000+", the pager numbers what is known, and `page=last` reads the sort backwards.
pub const COUNT_PAGES: u32 = 20;

/// One page of flows plus how many match the filter (for pagination).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowPage {
    /// Exact up to [`COUNT_PAGES`] pages; that many rows with `capped` past it.
    pub total: u64,
    /// More than [`COUNT_PAGES`] pages of flows match.
    pub capped: bool,
    /// The page shown, 1-based; for `page=last` past the cap, the last page whose
    /// number is known plus one (it is "last", not a number).
    pub page: u32,
    /// The page is the last one (`page=last`, or the count shows nothing follows).
    pub last: bool,
    pub per_page: u32,
    pub flows: Vec<FlowRow>,
}

impl FlowPage {
    /// Pages the count knows of (all of them unless `capped`).
    pub fn pages(&self) -> u32 {
        page_count(self.total, self.per_page)
    }
}

/// The flows matching `filter`, one page, sorted with ties broken by id.
///
/// The page's ids are chosen first in a subquery and only those ~50 rows are joined to
/// their device, remote host, domain names and hit score: the sort never drags joined
/// columns through a million-row scan. The count reads at most [`COUNT_PAGES`] pages
/// and one row.
pub fn flows(conn: &Connection, filter: &FlowFilter) -> rusqlite::Result<FlowPage> {
    let now = crate::time::now_ms();
    let w = flow_where(filter, now);
    let cap = i64::from(COUNT_PAGES) * i64::from(filter.per_page);
    let mut count_params = w.params.clone();
    count_params.push(Value::Integer(cap + 1));
    // The sort's index for the count too: it covers the cheap filters, and left alone
    // SQLite 3.54 counted `min_bytes=` on flows_bytes from the small end (500 000
    // entries before the first match).
    let indexed = sort_index(filter).map_or(String::new(), |i| format!(" INDEXED BY {i}"));
    let counted: i64 = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM (SELECT 1 FROM flows f{indexed}{} LIMIT ?)",
            w.sql()
        ))?
        .query_row(params_from_iter(count_params.iter()), |r| r.get(0))?;
    let capped = counted > cap;
    let total = u64::try_from(counted.min(cap)).unwrap_or(0);
    let known_pages = page_count(total, filter.per_page);
    let per = i64::from(filter.per_page);
    // The last page: by number when the count is exact, else the first page of the
    // reversed order, turned back round.
    let (page, backwards, limit, offset) = if filter.last_page && capped {
        (known_pages.saturating_add(1), true, per, 0)
    } else {
        let page = if filter.last_page {
            known_pages
        } else {
            filter.page
        };
        (page, false, per, i64::from(page - 1) * per)
    };
    let order = if backwards {
        flow_order_in(filter.sort, filter.order.reverse())
    } else {
        flow_order_by(filter)
    };
    let sql = format!(
        "SELECT {FLOW_COLUMNS} FROM \
         (SELECT f.id FROM flows f{indexed}{where_} ORDER BY {order} LIMIT ? OFFSET ?) page \
         JOIN flows f ON f.id = page.id \
         LEFT JOIN devices d ON d.id = f.device_id \
         LEFT JOIN remote_hosts r ON r.id = f.remote_host_id \
         LEFT JOIN dns_names qn ON qn.id = f.qname_id \
         LEFT JOIN dns_names cn ON cn.id = f.cname_id \
         ORDER BY {order}",
        where_ = w.sql(),
    );
    let mut params = w.params;
    params.push(Value::Integer(limit));
    params.push(Value::Integer(offset));
    let mut rows = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(params.iter()), flow_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if backwards {
        rows.reverse();
    }
    Ok(FlowPage {
        total,
        capped,
        page,
        last: backwards || (!capped && page >= known_pages),
        per_page: filter.per_page,
        flows: rows,
    })
}

/// Most rows one CSV export holds (the export says so). Bounds the time a read
/// connection is held and what a click can make the router produce.
pub const EXPORT_MAX_ROWS: u32 = 100_000;

/// Every flow matching `filter` in its order (its page ignored), at most `max_rows`,
/// each handed to `sink`; `sink` returning `false` stops early (the client went away).
/// Returns how many rows were handed over. One statement, rows joined as they stream:
/// memory stays one row, whatever the count.
pub fn flows_export(
    conn: &Connection,
    filter: &FlowFilter,
    max_rows: u32,
    mut sink: impl FnMut(&FlowRow) -> bool,
) -> rusqlite::Result<u32> {
    let w = flow_where(filter, crate::time::now_ms());
    let order = flow_order_by(filter);
    let indexed = sort_index(filter).map_or(String::new(), |i| format!(" INDEXED BY {i}"));
    let sql = format!(
        "SELECT {FLOW_COLUMNS} FROM flows f{indexed} \
         LEFT JOIN devices d ON d.id = f.device_id \
         LEFT JOIN remote_hosts r ON r.id = f.remote_host_id \
         LEFT JOIN dns_names qn ON qn.id = f.qname_id \
         LEFT JOIN dns_names cn ON cn.id = f.cname_id{where_} \
         ORDER BY {order} LIMIT ?",
        where_ = w.sql(),
    );
    let mut params = w.params;
    params.push(Value::Integer(max_rows.into()));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params_from_iter(params.iter()))?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        n += 1;
        if !sink(&flow_row(row)?) {
            break;
        }
    }
    Ok(n)
}

/// The `/flows` page's headline numbers over a window ending now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Live flows right now (`ended_at IS NULL`), every direction.
    pub active_flows: u64,
    /// Devices with `last_seen` in the window.
    pub devices_seen: u64,
    /// Remote hosts first seen in the window.
    pub remote_hosts_new: u64,
    /// LAN traffic in the window, from the per-device minute rollups (deltas, so a long
    /// download counts in the minutes it happened).
    pub bytes_up: i64,
    pub bytes_down: i64,
}

pub fn summary(conn: &Connection, since_ms: i64) -> rusqlite::Result<Summary> {
    let count = |sql: &str, p: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<u64> {
        let n: i64 = conn.prepare_cached(sql)?.query_row(p, |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    };
    let (bytes_up, bytes_down) = conn
        .prepare_cached(
            "SELECT coalesce(sum(bytes_up), 0), coalesce(sum(bytes_down), 0) \
             FROM device_minutes WHERE minute >= ?",
        )?
        .query_row([since_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(Summary {
        active_flows: count("SELECT count(*) FROM flows WHERE ended_at IS NULL", &[])?,
        devices_seen: count(
            "SELECT count(*) FROM devices WHERE last_seen >= ?",
            &[&since_ms],
        )?,
        remote_hosts_new: count(
            "SELECT count(*) FROM remote_hosts WHERE first_seen >= ?",
            &[&since_ms],
        )?,
        bytes_up,
        bytes_down,
    })
}

/// The `/flows` page: summary tiles, the flows table, and the devices for its filter menu.
#[derive(Debug, Clone)]
pub struct FlowsPage {
    pub summary: Summary,
    pub flows: FlowPage,
    pub devices: Vec<DeviceRow>,
}

pub fn flows_page(
    conn: &Connection,
    filter: &FlowFilter,
    since_ms: i64,
) -> rusqlite::Result<FlowsPage> {
    Ok(FlowsPage {
        summary: summary(conn, since_ms)?,
        flows: flows(conn, filter)?,
        devices: devices(conn)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dns::read::{DnsFilter, dns_where};
    use crate::store::testdata::flow_query as q;
    use crate::store::testdata::{seeded, set_flow_domain};

    fn ids(page: &FlowPage) -> Vec<i64> {
        page.flows.iter().map(|f| f.id).collect()
    }

    fn run(conn: &Connection, pairs: &[(&str, &str)]) -> FlowPage {
        flows(conn, &FlowFilter::parse(&q(pairs)).unwrap()).unwrap()
    }

    #[test]
    fn flows_default_is_active_internet_latest_first() {
        let (_d, conn) = seeded();
        let page = run(&conn, &[]);
        // 6 and 2 tie on last_seen: the higher id comes first, every time.
        assert_eq!(ids(&page), vec![6, 2, 1, 7]);
        assert_eq!(page.total, 4);
        assert_eq!(page.flows[2].device_name.as_deref(), Some("laptop"));
        assert_eq!(page.flows[3].device_name, None);
    }

    #[test]
    fn flows_filters() {
        let (_d, conn) = seeded();
        assert_eq!(ids(&run(&conn, &[("show", "all")])), vec![6, 2, 1, 5, 7]);
        assert_eq!(ids(&run(&conn, &[("show", "ended")])), vec![5]);
        assert_eq!(
            ids(&run(&conn, &[("direction", "all")])),
            vec![4, 3, 6, 2, 1, 7]
        );
        assert_eq!(ids(&run(&conn, &[("direction", "router-local")])), vec![3]);
        assert_eq!(
            ids(&run(&conn, &[("device", "1"), ("show", "all")])),
            vec![1, 5]
        );
        assert_eq!(ids(&run(&conn, &[("port", "8080")])), vec![6]);
        assert_eq!(ids(&run(&conn, &[("port", "40002")])), vec![2]);
        assert_eq!(
            ids(&run(&conn, &[("dst", "198.51.100.1"), ("show", "all")])),
            vec![1, 5]
        );
        assert_eq!(ids(&run(&conn, &[("src", "10.0.0.")])), vec![2, 1, 7]);
        assert_eq!(ids(&run(&conn, &[("src", "10.0.0.9")])), vec![7]);
        assert_eq!(ids(&run(&conn, &[("proto", "udp")])), Vec::<i64>::new());
        assert_eq!(ids(&run(&conn, &[("proto", "6")])), vec![6, 2, 1, 7]);
        // A LIKE wildcard in user text is literal.
        assert_eq!(ids(&run(&conn, &[("src", "10.0.0_")])), Vec::<i64>::new());
        assert_eq!(ids(&run(&conn, &[("src", "%")])), Vec::<i64>::new());
    }

    #[test]
    fn flows_sorting() {
        let (_d, conn) = seeded();
        assert_eq!(ids(&run(&conn, &[("sort", "bytes")])), vec![2, 1, 6, 7]);
        assert_eq!(
            ids(&run(&conn, &[("sort", "bytes"), ("order", "asc")])),
            vec![7, 6, 1, 2]
        );
        // Age descending = oldest first.
        assert_eq!(ids(&run(&conn, &[("sort", "age")])), vec![7, 1, 2, 6]);
        assert_eq!(ids(&run(&conn, &[("sort", "dst")])), vec![6, 1, 2, 7]);
    }

    #[test]
    fn flows_pagination() {
        let (_d, conn) = seeded();
        let p1 = run(
            &conn,
            &[("direction", "all"), ("show", "all"), ("per_page", "3")],
        );
        let p3 = run(
            &conn,
            &[
                ("direction", "all"),
                ("show", "all"),
                ("per_page", "3"),
                ("page", "3"),
            ],
        );
        assert_eq!((p1.total, p1.pages(), ids(&p1)), (7, 3, vec![4, 3, 6]));
        assert_eq!(ids(&p3), vec![7]);
    }

    #[test]
    fn summary_counts() {
        let (_d, conn) = seeded();
        conn.execute(
            "INSERT INTO remote_hosts (id, ip, first_seen, last_seen) VALUES \
             (1, '198.51.100.1', 100, 5000), (2, '198.51.100.2', 3000, 6000)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO device_minutes (device_id, minute, bytes_up, bytes_down) VALUES \
             (1, 0, 1, 2), (1, 60000, 10, 20), (2, 60000, 100, 200)",
            [],
        )
        .unwrap();
        let s = summary(&conn, 1500).unwrap();
        assert_eq!(
            s,
            Summary {
                active_flows: 6,
                devices_seen: 1,
                remote_hosts_new: 1,
                bytes_up: 110,
                bytes_down: 220
            }
        );
    }

    #[test]
    fn flows_carry_their_domain() {
        let (_d, conn) = seeded();
        set_flow_domain(
            &conn,
            1,
            "cdn.example.test",
            Some("edge.cdn-provider.test"),
            1,
        );
        set_flow_domain(&conn, 2, "shop.example.test", None, 3);
        let page = run(&conn, &[]);
        let by_id = |id| page.flows.iter().find(|f| f.id == id).unwrap();
        let f1 = by_id(1);
        assert_eq!(f1.domain.as_deref(), Some("cdn.example.test"));
        assert_eq!(
            f1.domain_canonical.as_deref(),
            Some("edge.cdn-provider.test")
        );
        assert_eq!(f1.dns_match, "exact");
        assert_eq!(by_id(2).dns_match, "other-client");
        assert_eq!(
            (by_id(7).domain.as_deref(), by_id(7).dns_match),
            (None, "none")
        );
    }

    #[test]
    fn domain_filter_matches_the_name_and_its_subdomains_only() {
        let (_d, conn) = seeded();
        set_flow_domain(&conn, 1, "shop.example.test", None, 1);
        set_flow_domain(&conn, 2, "a.shop.example.test", None, 2);
        set_flow_domain(&conn, 6, "xshop.example.test", None, 1);
        set_flow_domain(&conn, 7, "a_b.test", None, 1);
        set_flow_domain(&conn, 5, "axb.test", None, 1);
        let all = |d: &str| ids(&run(&conn, &[("domain", d), ("show", "all")]));
        assert_eq!(all("shop.example.test"), vec![2, 1]);
        assert_eq!(all("SHOP.example.test."), vec![2, 1]);
        assert_eq!(all("a.shop.example.test"), vec![2]);
        assert_eq!(all("example.test"), vec![6, 2, 1]);
        assert_eq!(all("hop.example.test"), Vec::<i64>::new());
        // LIKE metacharacters in the filter are literal.
        assert_eq!(all("a_b.test"), vec![7]);
        assert_eq!(all("axb.test"), vec![5]);
        assert_eq!(all("%.test"), Vec::<i64>::new());
        assert_eq!(all("%"), Vec::<i64>::new());
        assert_eq!(all("_.test"), Vec::<i64>::new());
        assert_eq!(all("test"), vec![6, 2, 1, 5, 7]);
        // Combined with the other conditions.
        assert_eq!(
            ids(&run(&conn, &[("domain", "test"), ("device", "2")])),
            vec![6, 2]
        );
    }

    /// Index use for the queries every page view makes. A `SCAN f` (full table scan) on
    /// a million-row `flows` table costs a router seconds.
    #[test]
    fn plans_use_indexes() {
        let (_d, conn) = seeded();
        let plan = |sql: &str, params: &[Value]| -> String {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            stmt.query_map(params_from_iter(params.iter()), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let f = FlowFilter::default();
        let w = flow_where(&f, 0);
        let count = plan(
            &format!("SELECT count(*) FROM flows f{}", w.sql()),
            &w.params,
        );
        assert!(!count.contains("SCAN f\n") && count != "SCAN f", "{count}");
        let summary = plan("SELECT count(*) FROM flows WHERE ended_at IS NULL", &[]);
        assert!(summary.contains("USING"), "{summary}");
        let dev = FlowFilter {
            device_id: Some(1),
            show: Show::All,
            ..FlowFilter::default()
        };
        let w = flow_where(&dev, 0);
        let list = plan(
            &format!(
                "SELECT f.id FROM flows f{} ORDER BY {} LIMIT 50",
                w.sql(),
                flow_order_by(&dev)
            ),
            &w.params,
        );
        assert!(list.contains("flows_device_last_seen"), "{list}");
        // The DNS log: newest first straight off an index, with or without a device.
        for (f, index) in [
            (DnsFilter::default(), "dns_queries_ts"),
            (
                DnsFilter {
                    device_id: Some(1),
                    ..DnsFilter::default()
                },
                "dns_queries_device",
            ),
        ] {
            let w = dns_where(&f);
            let list = plan(
                &format!(
                    "SELECT q.id FROM dns_queries q{} ORDER BY q.ts DESC, q.id DESC LIMIT 50",
                    w.sql()
                ),
                &w.params,
            );
            assert!(
                list.contains(index) && !list.contains("TEMP B-TREE"),
                "{list}"
            );
        }
        let domain = FlowFilter {
            domain: Some("example.test".into()),
            show: Show::All,
            ..FlowFilter::default()
        };
        let w = flow_where(&domain, 0);
        let count = plan(
            &format!("SELECT count(*) FROM flows f{}", w.sql()),
            &w.params,
        );
        assert!(count.contains("flows_qname"), "{count}");
    }
}
