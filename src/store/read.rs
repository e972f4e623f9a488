//! Every query the web pages and the JSON API make, and the pool of read-only
//! connections they run on (DESIGN §1 principle 1: readers never write).
//!
//! The writer owns the only read-write connection; pages read through [`ReadPool`], a
//! handful of `SQLITE_OPEN_READ_ONLY` connections used inside `spawn_blocking`, so a
//! slow query never stalls the async runtime and, thanks to WAL, never blocks a commit.
//!
//! Filters arrive as query-string text ([`FlowQuery`], [`HostQuery`], [`DnsQuery`]) and
//! are parsed into typed, bounded filters ([`FlowFilter`], [`HostFilter`], [`DnsFilter`])
//! before any SQL is built:
//! an invalid value becomes a [`FilterError`] naming the parameter, never a query.
//! The same filter renders back to a canonical query string
//! ([`FlowFilter::to_query`]), so every view is a shareable link.
//!
//! Page functions ([`dashboard`], [`device_page`], [`remote_host_page`], [`dns_log`]) gather
//! everything one page shows; [`ReadPool::run`] wraps each call in one read
//! transaction, so a page's numbers all come from the same snapshot.
//!
//! Query plans were checked with `EXPLAIN QUERY PLAN` against a million-flow table;
//! `tests::plans_use_indexes` keeps the hot ones honest.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params, params_from_iter};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::detect::Code;
use crate::flow::{Direction, proto_from_name};

// ---------------------------------------------------------------------------------------
// The pool
// ---------------------------------------------------------------------------------------

/// A small pool of read-only connections to the database file. Cheap to clone.
///
/// Why a pool and not one connection behind a mutex: page renders overlap (the dashboard,
/// its live fragment, an API scrape), and each SQLite connection is single-threaded.
/// Why not more than a few: every connection keeps its own page cache, and a router has
/// 128 MB of RAM.
#[derive(Clone)]
pub struct ReadPool {
    shared: Arc<PoolShared>,
}

struct PoolShared {
    path: PathBuf,
    /// Idle connections. A `std` mutex: it is held only to push or pop, never across
    /// an await or a query.
    idle: Mutex<Vec<Connection>>,
    /// One permit per connection: bounds concurrent queries to the pool size. The permit
    /// moves into the blocking task, so a request the client abandoned still holds its
    /// slot until its query really finishes and the pool never grows past `size`.
    permits: Arc<Semaphore>,
}

/// How long a reader waits on a lock. In WAL mode readers are normally never blocked;
/// the rare exceptions (WAL recovery after a crash, a `TRUNCATE` checkpoint) are short.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache per read connection, in KiB (SQLite's negative `cache_size` unit).
const READ_CACHE_KIB: i64 = 2048;

/// Distinct SQL texts cached per connection. Flow filters build their WHERE clause from
/// the parameters present, so there are a few dozen shapes; the cache keeps the common
/// ones prepared.
const STATEMENT_CACHE: usize = 48;

impl ReadPool {
    /// Opens `size` (at least 1) read-only connections now, so a missing or unreadable
    /// database is reported at start-up rather than on the first page view.
    pub fn open(db_path: &Path, size: usize) -> anyhow::Result<ReadPool> {
        let size = size.max(1);
        let mut conns = Vec::with_capacity(size);
        for _ in 0..size {
            conns.push(open_read_connection(db_path).with_context(|| {
                format!("opening {} read-only for the web UI", db_path.display())
            })?);
        }
        // WAL is a property of the file, set by the writer; a read-only connection cannot
        // set it. Without it readers and the writer block each other, so say so.
        let mode: String = conns[0]
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .with_context(|| format!("reading the journal mode of {}", db_path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            log::warn!(
                "{} is in journal_mode={mode}, not WAL: page views will block commits",
                db_path.display()
            );
        }
        Ok(ReadPool {
            shared: Arc::new(PoolShared {
                path: db_path.to_owned(),
                idle: Mutex::new(conns),
                permits: Arc::new(Semaphore::new(size)),
            }),
        })
    }

    /// Runs `f` on a pooled connection on tokio's blocking thread pool, inside one read
    /// transaction (one consistent snapshot for everything `f` reads).
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let permit = self
            .shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .context("read pool closed")?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            // A connection is lost only if a query panicked; replace it lazily.
            let conn = match conn {
                Some(conn) => conn,
                None => {
                    open_read_connection(&shared.path).context("reopening a read connection")?
                }
            };
            let result = in_read_transaction(&conn, f);
            shared
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result.context("database read failed")
        })
        .await
        .context("database read task failed")?
    }
}

fn open_read_connection(path: &Path) -> rusqlite::Result<Connection> {
    // NO_MUTEX: a connection is used by one thread at a time (the pool hands it out).
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Belt and braces on top of READ_ONLY: even a bug here cannot become a second writer.
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "cache_size", -READ_CACHE_KIB)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    register_functions(&conn)?;
    Ok(conn)
}

fn in_read_transaction<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.execute_batch("BEGIN")?;
    let result = f(conn);
    // Nothing was written: COMMIT and ROLLBACK both just end the snapshot.
    let end = conn.execute_batch(if result.is_ok() { "COMMIT" } else { "ROLLBACK" });
    let value = result?;
    end?;
    Ok(value)
}

// ---------------------------------------------------------------------------------------
// Filters
// ---------------------------------------------------------------------------------------

/// An invalid query-string value; the message names the parameter, the value and the
/// accepted form, and the web layer turns it into a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid query parameter `{param}` = {value:?}: expected {expected}")]
pub struct FilterError {
    pub param: &'static str,
    pub value: String,
    pub expected: &'static str,
}

fn bad(param: &'static str, value: &str, expected: &'static str) -> FilterError {
    FilterError {
        param,
        value: value.chars().take(100).collect(),
        expected,
    }
}

/// Largest page size: bounds the rows one request renders (DESIGN §1 principle 7).
pub const MAX_PER_PAGE: u32 = 500;
pub const DEFAULT_PER_PAGE: u32 = 50;
/// Largest page number accepted; deeper offsets are a scan the router should not do.
pub const MAX_PAGE: u32 = 10_000;

/// The flow filter parameters as they arrive in a query string (pages and API alike).
/// Empty values (what an untouched GET form field sends) mean "not set".
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FlowQuery {
    pub show: Option<String>,
    pub direction: Option<String>,
    pub src: Option<String>,
    pub dst: Option<String>,
    pub device: Option<String>,
    pub host: Option<String>,
    pub port: Option<String>,
    pub proto: Option<String>,
    /// A domain: the flows whose asked-for name is it or ends in `.` + it.
    pub domain: Option<String>,
    /// A TCP state name (`ESTABLISHED`, `TIME_WAIT`, …).
    pub state: Option<String>,
    /// Flows with a detection hit scoring at least this (0-100).
    pub min_score: Option<String>,
    /// Flows with a detection hit carrying this reason code.
    pub code: Option<String>,
    /// Flows active at or after this time: ISO UTC (`2026-12-04T21:00Z`) or an age (`1h`).
    pub from: Option<String>,
    /// Flows that started at or before this time (same forms as `from`).
    pub to: Option<String>,
    /// Flows that moved at least this many bytes (up + down; `k`, `M`, `G` suffixes).
    pub min_bytes: Option<String>,
    /// The table columns to show, a comma list of [`FlowColumn`] keys.
    pub cols: Option<String>,
    pub sort: Option<String>,
    pub order: Option<String>,
    /// A page number, or `last`.
    pub page: Option<String>,
    pub per_page: Option<String>,
}

impl FlowQuery {
    /// Parses a raw query string. Like axum's `Query`, except that `cols` may repeat
    /// (a form's column checkboxes send one `cols=` each): its values are joined into
    /// the one comma list the canonical URL carries. Any other repeated key is an error.
    pub fn from_query_string(raw: &str) -> Result<FlowQuery, String> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw).map_err(|e| format!("invalid query string: {e}"))?;
        let mut cols: Option<String> = None;
        let mut rest = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            if k == "cols" {
                match &mut cols {
                    Some(c) if !v.is_empty() => {
                        c.push(',');
                        c.push_str(&v);
                    }
                    Some(_) => {}
                    None => cols = Some(v),
                }
            } else {
                rest.push((k, v));
            }
        }
        let text = serde_urlencoded::to_string(&rest).map_err(|e| e.to_string())?;
        let mut q: FlowQuery = serde_urlencoded::from_str(&text)
            .map_err(|e| format!("Failed to deserialize query string: {e}"))?;
        q.cols = cols;
        Ok(q)
    }
}

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

    pub fn label(self) -> &'static str {
        match self {
            FlowColumn::Device => "Device",
            FlowColumn::Src => "Source",
            FlowColumn::Domain => "Domain",
            FlowColumn::Dst => "Destination",
            FlowColumn::Proto => "Proto",
            FlowColumn::Dir => "Dir",
            FlowColumn::State => "State",
            FlowColumn::Score => "Score",
            FlowColumn::Bytes => "Bytes ↑/↓",
            FlowColumn::Age => "Age",
            FlowColumn::LastSeen => "Last seen",
        }
    }
}

fn parse_columns(text: &str) -> Result<Vec<FlowColumn>, FilterError> {
    const EXPECTED: &str =
        "a comma list of device, src, domain, dst, proto, dir, state, score, bytes, age, last_seen";
    let mut cols = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let col = FlowColumn::ALL
            .into_iter()
            .find(|c| c.as_str() == part)
            .ok_or_else(|| bad("cols", text, EXPECTED))?;
        cols.push(col);
    }
    if cols.is_empty() {
        return Err(bad("cols", text, EXPECTED));
    }
    cols.sort();
    cols.dedup();
    Ok(cols)
}

/// A time bound of the flow filter. An age stays an age in the URL, so a shared
/// "last hour" link means the last hour whenever it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeBound {
    /// This many milliseconds before the query runs; `text` is how the URL says it.
    Ago { ms: i64, text: String },
    /// Unix ms; `text` is the canonical ISO form (`2026-12-04T21:00:00Z`).
    At { ms: i64, text: String },
}

/// The oldest age a bound may name: longer than any retention.
const MAX_AGE_DAYS: i64 = 3650;

impl TimeBound {
    fn parse(param: &'static str, text: &str) -> Result<TimeBound, FilterError> {
        const EXPECTED: &str =
            "an age such as 30m, 1h, 7d, or a UTC time such as 2026-12-04T21:00Z";
        let err = || bad(param, text, EXPECTED);
        let t = text.trim();
        if let Some(unit) = t.chars().last().filter(|c| "smhd".contains(*c))
            && t.len() > 1
            && t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit())
        {
            let n: i64 = t[..t.len() - 1].parse().map_err(|_| err())?;
            let unit_ms = match unit {
                's' => 1000,
                'm' => 60_000,
                'h' => 3_600_000,
                _ => 86_400_000,
            };
            if n > MAX_AGE_DAYS * 86_400_000 / unit_ms {
                return Err(err());
            }
            return Ok(TimeBound::Ago {
                ms: n * unit_ms,
                text: format!("{n}{unit}"),
            });
        }
        let (ms, canonical) = parse_utc(t).ok_or_else(err)?;
        Ok(TimeBound::At {
            ms,
            text: canonical,
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            TimeBound::Ago { text, .. } | TimeBound::At { text, .. } => text,
        }
    }

    /// Unix ms, ages counted back from `now`.
    pub fn at(&self, now: i64) -> i64 {
        match self {
            TimeBound::Ago { ms, .. } => now - ms,
            TimeBound::At { ms, .. } => *ms,
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD`, optionally `THH:MM` or `THH:MM:SS` (a space works for the `T`), with an
/// optional `Z`: always UTC. Returns unix ms and the canonical text.
fn parse_utc(text: &str) -> Option<(i64, String)> {
    let t = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix('z'))
        .unwrap_or(text);
    let (date, time) = match t.split_once(['T', 't', ' ']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let num = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next()?, 4)?, num(d.next()?, 2)?, num(d.next()?, 2)?);
    if d.next().is_some() || !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) {
        return None;
    }
    let month_days = [
        31,
        if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
            29
        } else {
            28
        },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if da < 1 || da > month_days[(mo - 1) as usize] {
        return None;
    }
    let (h, mi, se) = match time {
        None => (0, 0, 0),
        Some(tm) => {
            let mut p = tm.split(':');
            let h = num(p.next()?, 2)?;
            let mi = num(p.next()?, 2)?;
            let se = match p.next() {
                Some(s) => num(s, 2)?,
                None => 0,
            };
            if p.next().is_some() || h > 23 || mi > 59 || se > 59 {
                return None;
            }
            (h, mi, se)
        }
    };
    let ms = ((days_from_civil(y, mo, da) * 24 + h) * 60 + mi) * 60_000 + se * 1000;
    Some((
        ms,
        format!("{y:04}-{mo:02}-{da:02}T{h:02}:{mi:02}:{se:02}Z"),
    ))
}

/// Bytes: a whole number with an optional `k`, `M`, `G`, `T` (powers of 1000) or `Ki`,
/// `Mi`, `Gi`, `Ti` (powers of 1024) and an optional trailing `B`.
fn parse_bytes(text: &str) -> Result<u64, FilterError> {
    let err = || {
        bad(
            "min_bytes",
            text,
            "a byte count such as 1000000, 500k, 10M or 2GiB",
        )
    };
    let t = text.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        _ => return Err(err()),
    };
    n.checked_mul(mult)
        .filter(|b| i64::try_from(*b).is_ok())
        .ok_or_else(err)
}

/// TCP state names as conntrack reports them ([`crate::flow::tcp_state_name`]).
const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

fn parse_state(text: &str) -> Result<&'static str, FilterError> {
    let upper = text.to_ascii_uppercase();
    TCP_STATES
        .into_iter()
        .find(|s| *s == upper)
        .ok_or_else(|| {
            bad(
                "state",
                text,
                "a TCP state: ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, NONE",
            )
        })
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }

    pub fn reverse(self) -> Order {
        match self {
            Order::Asc => Order::Desc,
            Order::Desc => Order::Asc,
        }
    }
}

/// An address filter: a complete address matches exactly (in canonical form, so
/// `2001:DB8::0:1` finds `2001:db8::1`); a CIDR network (`10.0.0.0/8`, `2001:db8::/32`)
/// matches the addresses inside it, v4 and v6 alike; anything else is a text prefix
/// (`192.168.1.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrMatch {
    Exact(String),
    /// Canonical network text (host bits cleared: `10.1.2.3/8` becomes `10.0.0.0/8`).
    Net(String),
    Prefix(String),
}

impl AddrMatch {
    fn parse(param: &'static str, text: &str) -> Result<AddrMatch, FilterError> {
        let text = text.trim();
        if text.len() > 64 {
            return Err(bad(
                param,
                text,
                "an IP address or its first characters (at most 64)",
            ));
        }
        if text.contains('/') {
            return text
                .parse::<ipnet::IpNet>()
                .map(|net| AddrMatch::Net(net.trunc().to_string()))
                .map_err(|_| {
                    bad(
                        param,
                        text,
                        "a CIDR network such as 10.0.0.0/8 or 2001:db8::/32",
                    )
                });
        }
        Ok(match text.parse::<std::net::IpAddr>() {
            Ok(ip) => AddrMatch::Exact(ip.to_string()),
            Err(_) => AddrMatch::Prefix(text.to_owned()),
        })
    }

    /// The text as the user should see it again in the form.
    pub fn as_str(&self) -> &str {
        match self {
            AddrMatch::Exact(s) | AddrMatch::Net(s) | AddrMatch::Prefix(s) => s,
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
/// dashboard's view (active internet flows, latest first, 50 per page).
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

/// `Some(trimmed)` for a present, non-blank value.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn parse_id(param: &'static str, v: &str) -> Result<i64, FilterError> {
    v.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| bad(param, v, "a positive id number"))
}

fn parse_page(v: &Option<String>) -> Result<u32, FilterError> {
    given(v).map_or(Ok(1), |s| {
        s.parse::<u32>()
            .ok()
            .filter(|p| (1..=MAX_PAGE).contains(p))
            .ok_or_else(|| bad("page", s, "a page number from 1 to 10000"))
    })
}

fn parse_per_page(v: &Option<String>, default: u32) -> Result<u32, FilterError> {
    given(v).map_or(Ok(default), |s| {
        s.parse::<u32>()
            .ok()
            .filter(|p| (1..=MAX_PER_PAGE).contains(p))
            .ok_or_else(|| bad("per_page", s, "a number of rows from 1 to 500"))
    })
}

/// Longest domain filter accepted, in characters: the longest DNS name in presentation
/// form (RFC 1035 §2.3.4: 255 octets on the wire).
pub const MAX_DOMAIN_FILTER_CHARS: usize = 253;

/// A domain filter (`domain=` on flows, `name=` on the DNS log) in the canonical form
/// names are stored in ([`crate::dns_name::normalize_name`]: lowercase, `\DDD` escapes), so
/// `Shop.Example.TEST.` finds `shop.example.test`. Leading dots and a leading `*.` are
/// dropped: `*.example.test` and `.example.test` mean what `example.test` means.
pub fn parse_domain(param: &'static str, text: &str) -> Result<String, FilterError> {
    const EXPECTED: &str = "a domain name such as example.com (at most 253 characters)";
    if text.chars().count() > MAX_DOMAIN_FILTER_CHARS {
        return Err(bad(param, text, EXPECTED));
    }
    // `*.` and leading dots in any mix and number ("..*..x"), all of them, and from the
    // canonical form (`\*.x` decodes to `*.x`): a filter must accept its own `to_query`
    // unchanged (both found by fuzzing).
    let canonical = crate::dns_name::normalize_name(text);
    let mut bare = canonical.as_str();
    loop {
        let next = bare.trim_start_matches('.');
        let next = next.strip_prefix("*.").unwrap_or(next);
        if next.len() == bare.len() {
            break;
        }
        bare = next;
    }
    let name = bare.to_owned();
    // The bound holds for the canonical form too: control bytes grow fourfold when
    // escaped (`\000`), and a filter must accept its own `to_query` (found by fuzzing).
    if name.is_empty() || name == "*" || name.chars().count() > MAX_DOMAIN_FILTER_CHARS {
        return Err(bad(param, text, EXPECTED));
    }
    Ok(name)
}

fn parse_order(v: &Option<String>, default: Order) -> Result<Order, FilterError> {
    match given(v) {
        None => Ok(default),
        Some("asc") => Ok(Order::Asc),
        Some("desc") => Ok(Order::Desc),
        Some(s) => Err(bad("order", s, "`asc` or `desc`")),
    }
}

/// `direction=`: one name, a comma list, or `all`.
pub fn parse_directions(text: &str) -> Result<Vec<Direction>, FilterError> {
    const EXPECTED: &str = "`all` or a comma list of outbound, inbound, router-local, lan, other";
    if text == "all" {
        return Ok(ALL_DIRECTIONS.to_vec());
    }
    let mut dirs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        dirs.push(Direction::parse(part).ok_or_else(|| bad("direction", text, EXPECTED))?);
    }
    if dirs.is_empty() {
        return Err(bad("direction", text, EXPECTED));
    }
    dirs.sort_by_key(|d| ALL_DIRECTIONS.iter().position(|a| a == d));
    dirs.dedup();
    Ok(dirs)
}

/// The query-string value for a set of directions (`all`, or a comma list).
pub fn directions_param(dirs: &[Direction]) -> String {
    if dirs.len() == ALL_DIRECTIONS.len() {
        "all".to_owned()
    } else {
        dirs.iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl FlowFilter {
    /// Parses and bounds every parameter; the first invalid one is the error.
    pub fn parse(q: &FlowQuery) -> Result<FlowFilter, FilterError> {
        let show = match given(&q.show) {
            None | Some("active") => Show::Active,
            Some("all") => Show::All,
            Some("ended") => Show::Ended,
            Some(s) => return Err(bad("show", s, "`active`, `all` or `ended`")),
        };
        let directions = match given(&q.direction) {
            None => DEFAULT_DIRECTIONS.to_vec(),
            Some(s) => parse_directions(s)?,
        };
        let src = given(&q.src)
            .map(|s| AddrMatch::parse("src", s))
            .transpose()?;
        let dst = given(&q.dst)
            .map(|s| AddrMatch::parse("dst", s))
            .transpose()?;
        let device_id = given(&q.device)
            .map(|s| parse_id("device", s))
            .transpose()?;
        let remote_host_id = given(&q.host).map(|s| parse_id("host", s)).transpose()?;
        let port = given(&q.port)
            .map(|s| {
                s.parse::<u16>()
                    .map_err(|_| bad("port", s, "a port number from 0 to 65535"))
            })
            .transpose()?;
        let proto = given(&q.proto)
            .map(|s| {
                proto_from_name(s).ok_or_else(|| {
                    bad(
                        "proto",
                        s,
                        "tcp, udp, icmp, icmpv6 or a protocol number 0-255",
                    )
                })
            })
            .transpose()?;
        let domain = given(&q.domain)
            .map(|s| parse_domain("domain", s))
            .transpose()?;
        let sort = match given(&q.sort) {
            None | Some("last_seen") => FlowSort::LastSeen,
            Some("bytes") => FlowSort::Bytes,
            Some("age") => FlowSort::Age,
            Some("dst") => FlowSort::Dst,
            Some(s) => return Err(bad("sort", s, "`bytes`, `age`, `dst` or `last_seen`")),
        };
        let order = parse_order(&q.order, sort.default_order())?;
        let last_page = given(&q.page) == Some("last");
        Ok(FlowFilter {
            show,
            directions,
            src,
            dst,
            device_id,
            remote_host_id,
            port,
            proto,
            domain,
            state: given(&q.state).map(parse_state).transpose()?,
            min_score: super::read_detect::parse_score(&q.min_score)?,
            code: super::read_detect::parse_code(&q.code)?,
            from: given(&q.from)
                .map(|s| TimeBound::parse("from", s))
                .transpose()?,
            to: given(&q.to)
                .map(|s| TimeBound::parse("to", s))
                .transpose()?,
            min_bytes: given(&q.min_bytes).map(parse_bytes).transpose()?,
            columns: match given(&q.cols) {
                None => FlowColumn::ALL.to_vec(),
                Some(s) => parse_columns(s)?,
            },
            sort,
            order,
            page: if last_page { 1 } else { parse_page(&q.page)? },
            last_page,
            per_page: parse_per_page(&q.per_page, DEFAULT_PER_PAGE)?,
        })
    }

    /// The canonical query string (without `?`), leaving out defaults, so links stay
    /// short and a filter round-trips: `parse(to_query(f)) == f`.
    pub fn to_query(&self) -> String {
        let d = FlowFilter::default();
        let mut q = QueryString::default();
        if self.show != d.show {
            q.push("show", self.show.as_str());
        }
        if self.directions != d.directions {
            q.push("direction", &directions_param(&self.directions));
        }
        if let Some(src) = &self.src {
            q.push("src", src.as_str());
        }
        if let Some(dst) = &self.dst {
            q.push("dst", dst.as_str());
        }
        if let Some(id) = self.device_id {
            q.push("device", &id.to_string());
        }
        if let Some(id) = self.remote_host_id {
            q.push("host", &id.to_string());
        }
        if let Some(port) = self.port {
            q.push("port", &port.to_string());
        }
        if let Some(proto) = self.proto {
            q.push("proto", &crate::flow::proto_name(proto));
        }
        if let Some(domain) = &self.domain {
            q.push("domain", domain);
        }
        if let Some(state) = self.state {
            q.push("state", state);
        }
        if let Some(score) = self.min_score {
            q.push("min_score", &score.to_string());
        }
        if let Some(code) = self.code {
            q.push("code", code.as_str());
        }
        if let Some(from) = &self.from {
            q.push("from", from.as_str());
        }
        if let Some(to) = &self.to {
            q.push("to", to.as_str());
        }
        if let Some(bytes) = self.min_bytes {
            q.push("min_bytes", &bytes.to_string());
        }
        if self.columns != d.columns {
            let cols: Vec<&str> = self.columns.iter().map(|c| c.as_str()).collect();
            q.push("cols", &cols.join(","));
        }
        if self.sort != d.sort {
            q.push("sort", self.sort.as_str());
        }
        if self.order != self.sort.default_order() {
            q.push("order", self.order.as_str());
        }
        if self.last_page {
            q.push("page", "last");
        } else if self.page != 1 {
            q.push("page", &self.page.to_string());
        }
        if self.per_page != d.per_page {
            q.push("per_page", &self.per_page.to_string());
        }
        q.0
    }

    /// This filter on another page.
    pub fn with_page(&self, page: u32) -> FlowFilter {
        FlowFilter {
            page,
            last_page: false,
            ..self.clone()
        }
    }

    /// This filter on its last page.
    pub fn with_last_page(&self) -> FlowFilter {
        FlowFilter {
            page: 1,
            last_page: true,
            ..self.clone()
        }
    }

    /// This filter sorted by `sort`: a second click on the current key flips the order.
    /// Back to page 1, since the rows there change.
    pub fn with_sort(&self, sort: FlowSort) -> FlowFilter {
        let order = if self.sort == sort {
            self.order.reverse()
        } else {
            sort.default_order()
        };
        FlowFilter {
            sort,
            order,
            page: 1,
            last_page: false,
            ..self.clone()
        }
    }
}

/// A `key=value&…` builder with percent-encoding (RFC 3986 unreserved characters pass).
#[derive(Default)]
struct QueryString(String);

impl QueryString {
    fn push(&mut self, key: &str, value: &str) {
        if !self.0.is_empty() {
            self.0.push('&');
        }
        self.0.push_str(key);
        self.0.push('=');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                self.0.push(b as char);
            } else {
                self.0.push_str(&format!("%{b:02X}"));
            }
        }
    }
}

/// Remote host list parameters as they arrive in a query string.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HostQuery {
    /// Address prefix, or reverse-DNS name or domain text (substring).
    pub q: Option<String>,
    pub sort: Option<String>,
    pub order: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

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

impl HostFilter {
    pub fn parse(q: &HostQuery) -> Result<HostFilter, FilterError> {
        let text = given(&q.q).map(str::to_owned);
        if let Some(t) = &text
            && t.len() > 253
        {
            return Err(bad(
                "q",
                t,
                "an address or name fragment (at most 253 characters)",
            ));
        }
        let sort = match given(&q.sort) {
            None | Some("last_seen") => HostSort::LastSeen,
            Some("first_seen") => HostSort::FirstSeen,
            Some("bytes") => HostSort::Bytes,
            Some("flows") => HostSort::Flows,
            Some(s) => {
                return Err(bad(
                    "sort",
                    s,
                    "`last_seen`, `first_seen`, `bytes` or `flows`",
                ));
            }
        };
        Ok(HostFilter {
            q: text,
            sort,
            order: parse_order(&q.order, Order::Desc)?,
            page: parse_page(&q.page)?,
            per_page: parse_per_page(&q.per_page, DEFAULT_HOSTS_PER_PAGE)?,
        })
    }

    /// Canonical query string without defaults (see [`FlowFilter::to_query`]).
    pub fn to_query(&self) -> String {
        let mut qs = QueryString::default();
        if let Some(t) = &self.q {
            qs.push("q", t);
        }
        if self.sort != HostSort::LastSeen {
            qs.push("sort", self.sort.as_str());
        }
        if self.order != Order::Desc {
            qs.push("order", self.order.as_str());
        }
        if self.page != 1 {
            qs.push("page", &self.page.to_string());
        }
        if self.per_page != DEFAULT_HOSTS_PER_PAGE {
            qs.push("per_page", &self.per_page.to_string());
        }
        qs.0
    }

    pub fn with_page(&self, page: u32) -> HostFilter {
        HostFilter {
            page,
            ..self.clone()
        }
    }

    /// Sorted by `sort`, descending first; a second click flips the order.
    pub fn with_sort(&self, sort: HostSort) -> HostFilter {
        let order = if self.sort == sort {
            self.order.reverse()
        } else {
            Order::Desc
        };
        HostFilter {
            sort,
            order,
            page: 1,
            ..self.clone()
        }
    }
}

/// DNS log parameters as they arrive in a query string (`/dns` and `/api/dns`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DnsQuery {
    /// A device id.
    pub device: Option<String>,
    /// The asking address: complete, or its first characters.
    pub client: Option<String>,
    /// A domain: the name asked for is it or one of its subdomains.
    pub name: Option<String>,
    /// A query type: `A`, `AAAA`, `HTTPS`, … or `TYPEnnn`.
    #[serde(rename = "type")]
    pub qtype: Option<String>,
    /// A response code name (`NXDOMAIN`, …), or `none` for queries no answer was seen to.
    pub rcode: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

/// Which response codes the DNS log shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcodeMatch {
    /// This code (RFC 1035 §4.1.1, RFC 6895 §2.3: 0-4095 with extended codes).
    Code(u16),
    /// No answer was seen (`rcode IS NULL`).
    Unanswered,
}

impl RcodeMatch {
    /// The query-string value: the code's name, or `none`.
    pub fn as_param(self) -> String {
        match self {
            RcodeMatch::Code(code) => crate::dns_name::rcode_name(code),
            RcodeMatch::Unanswered => "none".to_owned(),
        }
    }
}

/// Response codes an answer header can carry with EDNS (12 bits).
const MAX_RCODE: u16 = 4095;

fn parse_rcode(text: &str) -> Result<RcodeMatch, FilterError> {
    const EXPECTED: &str = "NOERROR, NXDOMAIN, SERVFAIL, REFUSED, FORMERR, NOTIMP, a code 0-4095, or `none` (no answer seen)";
    let upper = text.to_ascii_uppercase();
    if upper == "NONE" {
        return Ok(RcodeMatch::Unanswered);
    }
    upper
        .strip_prefix("RCODE")
        .unwrap_or(&upper)
        .parse::<u16>()
        .ok()
        .or_else(|| (0..=5).find(|&c| crate::dns_name::rcode_name(c) == upper))
        .filter(|c| *c <= MAX_RCODE)
        .map(RcodeMatch::Code)
        .ok_or_else(|| bad("rcode", text, EXPECTED))
}

fn parse_qtype(text: &str) -> Result<u16, FilterError> {
    text.parse::<u16>()
        .ok()
        .or_else(|| crate::dns_name::qtype_from_name(text))
        .ok_or_else(|| {
            bad(
                "type",
                text,
                "a query type such as A, AAAA, HTTPS, MX, TXT, or TYPEnnn",
            )
        })
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
    /// Parses and bounds every parameter; the first invalid one is the error.
    pub fn parse(q: &DnsQuery) -> Result<DnsFilter, FilterError> {
        Ok(DnsFilter {
            device_id: given(&q.device)
                .map(|s| parse_id("device", s))
                .transpose()?,
            client: given(&q.client)
                .map(|s| AddrMatch::parse("client", s))
                .transpose()?,
            name: given(&q.name)
                .map(|s| parse_domain("name", s))
                .transpose()?,
            qtype: given(&q.qtype).map(parse_qtype).transpose()?,
            rcode: given(&q.rcode).map(parse_rcode).transpose()?,
            page: parse_page(&q.page)?,
            per_page: parse_per_page(&q.per_page, DEFAULT_PER_PAGE)?,
        })
    }

    /// Canonical query string without defaults: `parse(to_query(f)) == f`.
    pub fn to_query(&self) -> String {
        let mut q = QueryString::default();
        if let Some(id) = self.device_id {
            q.push("device", &id.to_string());
        }
        if let Some(client) = &self.client {
            q.push("client", client.as_str());
        }
        if let Some(name) = &self.name {
            q.push("name", name);
        }
        if let Some(t) = self.qtype {
            q.push("type", &crate::dns_name::qtype_name(t));
        }
        if let Some(r) = self.rcode {
            q.push("rcode", &r.as_param());
        }
        if self.page != 1 {
            q.push("page", &self.page.to_string());
        }
        if self.per_page != DEFAULT_PER_PAGE {
            q.push("per_page", &self.per_page.to_string());
        }
        q.0
    }

    pub fn with_page(&self, page: u32) -> DnsFilter {
        DnsFilter {
            page,
            ..self.clone()
        }
    }

    fn offset(&self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.per_page)
    }
}

/// `LIKE` pattern text with `%`, `_` and the escape character itself escaped, for use
/// with `ESCAPE '\'`: user text is matched literally, never as a wildcard.
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A WHERE clause built from `?` placeholders and their values, in order.
#[derive(Default)]
struct Where {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Where {
    fn add(&mut self, clause: impl Into<String>, params: impl IntoIterator<Item = Value>) {
        self.clauses.push(clause.into());
        self.params.extend(params);
    }

    fn sql(&self) -> String {
        if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        }
    }
}

fn addr_clause(w: &mut Where, column: &str, m: &AddrMatch) {
    match m {
        AddrMatch::Exact(ip) => w.add(format!("{column} = ?"), [Value::Text(ip.clone())]),
        AddrMatch::Net(net) => w.add(
            format!("{IN_NETWORK}({column}, ?)"),
            [Value::Text(net.clone())],
        ),
        AddrMatch::Prefix(p) => w.add(
            format!("{column} LIKE ? ESCAPE '\\'"),
            [Value::Text(format!("{}%", escape_like(p)))],
        ),
    }
}

/// `column` (a `dns_names` id) is `name` or a subdomain of it. The label boundary is
/// the `.` in the pattern: `shop.test` matches `a.shop.test`, never `xshop.test`; the
/// name's own `%`, `_` and `\` are literal. `dns_names` holds each name once, so the
/// suffix scan runs over distinct names, not over flows or queries.
fn domain_clause(w: &mut Where, column: &str, name: &str) {
    w.add(
        format!("{column} IN (SELECT id FROM dns_names WHERE name = ? OR name LIKE ? ESCAPE '\\')"),
        [
            Value::Text(name.to_owned()),
            Value::Text(format!("%.{}", escape_like(name))),
        ],
    );
}

/// The SQL function `netmon_in_network(ip_text, cidr_text)`: 1 when the address is
/// inside the network, else 0 (also for text that is not an address). Addresses are
/// stored as text, so a CIDR cannot be a text range; registered on every read
/// connection ([`register_functions`]).
const IN_NETWORK: &str = "netmon_in_network";

/// Registers the SQL functions the read queries use. Deterministic, so SQLite may
/// evaluate them once per distinct argument.
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    use rusqlite::types::ValueRef;
    conn.create_scalar_function(
        IN_NETWORK,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            // The network is the same for every row of a statement: parsed once and
            // kept as SQLite auxiliary data. A bad one matches nothing.
            let net =
                ctx.get_or_create_aux(1, |v| -> Result<Option<ipnet::IpNet>, rusqlite::Error> {
                    Ok(v.as_str().ok().and_then(|s| s.parse().ok()))
                })?;
            let inside = match (ctx.get_raw(0), net.as_ref()) {
                (ValueRef::Text(ip), Some(net)) => std::str::from_utf8(ip)
                    .ok()
                    .and_then(|ip| ip.parse::<std::net::IpAddr>().ok())
                    .is_some_and(|ip| net.contains(&ip)),
                _ => false,
            };
            Ok(inside)
        },
    )
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
            f.directions
                .iter()
                .map(|d| Value::Text(d.as_str().to_owned())),
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
        w.add("f.state = ?", [Value::Text(state.to_owned())]);
    }
    if f.min_score.is_some() || f.code.is_some() {
        // Hits name the flow that caused them (`hits.flow_id`); the few matching hits
        // drive the lookup, not a scan of the flows.
        // With a device or host filter, their covering index checks the list without a
        // row lookup per hit (`+` keeps the list from driving: 3 000 lookups, 27 ms → 7).
        let id = if f.device_id.is_some() || f.remote_host_id.is_some() {
            "+f.id"
        } else {
            "f.id"
        };
        let mut clause =
            format!("{id} IN (SELECT h.flow_id FROM hits h WHERE h.flow_id IS NOT NULL");
        let mut params = Vec::new();
        if let Some(score) = f.min_score {
            clause.push_str(" AND h.score >= ?");
            params.push(Value::Integer(score.into()));
        }
        if let Some(code) = f.code {
            clause.push_str(" AND ");
            clause.push_str(&super::read_detect::code_clause("h.codes"));
            params.push(super::read_detect::code_param(code));
        }
        clause.push(')');
        w.add(clause, params);
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

fn dns_where(f: &DnsFilter) -> Where {
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

// ---------------------------------------------------------------------------------------
// Rows
// ---------------------------------------------------------------------------------------

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
    /// How sure the domain is: `exact`, `stale`, `other-client` or `none`
    /// ([`crate::store::dns::match_name`]).
    pub dns_match: &'static str,
    /// The highest score of the detection hits this flow caused, if any.
    pub score: Option<i64>,
}

const FLOW_COLUMNS: &str = "f.id, f.ct_id, f.family, f.proto, f.direction, \
     f.src_ip, f.src_port, f.dst_ip, f.dst_port, \
     f.reply_src_ip, f.reply_src_port, f.reply_dst_ip, f.reply_dst_port, \
     f.icmp_type, f.icmp_code, f.state, f.status, \
     f.bytes_up, f.bytes_down, f.packets_up, f.packets_down, \
     f.first_seen, f.last_seen, f.ended_at, \
     f.device_id, coalesce(nullif(d.name, ''), nullif(d.hostname, '')), \
     f.remote_host_id, r.rdns, qn.name, cn.name, f.dns_match, \
     (SELECT max(h.score) FROM hits h WHERE h.flow_id = f.id)";

fn flow_row(row: &Row) -> rusqlite::Result<FlowRow> {
    Ok(FlowRow {
        id: row.get(0)?,
        ct_id: row.get(1)?,
        family: row.get(2)?,
        proto: row.get(3)?,
        direction: row.get(4)?,
        src_ip: row.get(5)?,
        src_port: row.get(6)?,
        dst_ip: row.get(7)?,
        dst_port: row.get(8)?,
        reply_src_ip: row.get(9)?,
        reply_src_port: row.get(10)?,
        reply_dst_ip: row.get(11)?,
        reply_dst_port: row.get(12)?,
        icmp_type: row.get(13)?,
        icmp_code: row.get(14)?,
        state: row.get(15)?,
        status: row.get(16)?,
        bytes_up: row.get(17)?,
        bytes_down: row.get(18)?,
        packets_up: row.get(19)?,
        packets_down: row.get(20)?,
        first_seen: row.get(21)?,
        last_seen: row.get(22)?,
        ended_at: row.get(23)?,
        device_id: row.get(24)?,
        device_name: row.get(25)?,
        remote_host_id: row.get(26)?,
        remote_rdns: rdns_text(row.get(27)?),
        domain: row.get(28)?,
        domain_canonical: row.get(29)?,
        dns_match: crate::store::dns::match_name(row.get(30)?),
        score: row.get(31)?,
    })
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
    /// `packet` or `log`.
    pub source: String,
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
         coalesce(nullif(d.name, ''), nullif(d.hostname, '')), \
         n.name, q.qtype, q.rcode, q.answers, c.name, q.source FROM \
         (SELECT q.id FROM dns_queries q{where_} ORDER BY q.ts DESC, q.id DESC LIMIT ? OFFSET ?) page \
         JOIN dns_queries q ON q.id = page.id \
         LEFT JOIN devices d ON d.id = q.device_id \
         LEFT JOIN dns_names n ON n.id = q.qname_id \
         LEFT JOIN dns_names c ON c.id = q.cname_id \
         ORDER BY q.ts DESC, q.id DESC",
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
                client: r.get(2)?,
                device_id: r.get(3)?,
                device_name: r.get(4)?,
                name: r.get(5)?,
                qtype: r.get(6)?,
                rcode: r.get(7)?,
                answers: r.get(8)?,
                canonical: r.get(9)?,
                source: r.get(10)?,
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

/// Pages needed for `total` rows, `per_page` at a time (at least one, even when empty).
fn page_count(total: u64, per_page: u32) -> u32 {
    let per = u64::from(per_page.max(1));
    u32::try_from(total.div_ceil(per))
        .unwrap_or(u32::MAX)
        .max(1)
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
    let now = crate::sys::now_ms();
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
    let w = flow_where(filter, crate::sys::now_ms());
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
}

impl DeviceRow {
    /// What to call the device: its owner's name, its DHCP hostname, else its address.
    pub fn label(&self) -> &str {
        [&self.name, &self.hostname]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .find(|s| !s.is_empty())
            .unwrap_or(&self.ip)
    }
}

const DEVICE_COLUMNS: &str = "id, ip, mac, name, hostname, vendor, first_seen, last_seen, \
     bytes_up, bytes_down, flows, notes, \
     (SELECT group_concat(ip, ' ') FROM (SELECT ip FROM device_addrs a \
         WHERE a.device_id = devices.id ORDER BY a.last_seen DESC LIMIT 16))";

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
fn rdns_text(stored: Option<String>) -> Option<String> {
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
    conn.prepare_cached(
        "SELECT n.name, rd.first_seen, rd.last_seen, rd.flows, rd.last_device_id, \
         coalesce(nullif(d.name, ''), nullif(d.hostname, ''), d.ip) \
         FROM remote_host_domains rd JOIN dns_names n ON n.id = rd.qname_id \
         LEFT JOIN devices d ON d.id = rd.last_device_id \
         WHERE rd.remote_host_id = ? ORDER BY rd.flows DESC, rd.last_seen DESC LIMIT ?",
    )?
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

/// The dashboard's headline numbers over a window ending now.
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

// ---------------------------------------------------------------------------------------
// Pages: everything one page shows, read from one snapshot
// ---------------------------------------------------------------------------------------

/// The dashboard: summary tiles, the flows table, and the devices for its filter menu.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub summary: Summary,
    pub flows: FlowPage,
    pub devices: Vec<DeviceRow>,
}

pub fn dashboard(
    conn: &Connection,
    filter: &FlowFilter,
    since_ms: i64,
) -> rusqlite::Result<Dashboard> {
    Ok(Dashboard {
        summary: summary(conn, since_ms)?,
        flows: flows(conn, filter)?,
        devices: devices(conn)?,
    })
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
pub(crate) mod tests {
    use super::*;

    /// A fresh database file at the current schema version, in WAL mode like the
    /// writer's.
    pub(crate) fn temp_db(name: &str) -> (tempdir::TempDir, Connection) {
        let dir = tempdir::TempDir::new(name);
        let conn = Connection::open(dir.db()).unwrap();
        conn.pragma_update(None, "journal_mode", "wal").unwrap();
        crate::store::schema::migrate(&conn).unwrap();
        register_functions(&conn).unwrap();
        (dir, conn)
    }

    /// A per-test directory under the system temp dir, removed on drop (no extra crate).
    pub(crate) mod tempdir {
        use std::path::PathBuf;

        pub struct TempDir(PathBuf);

        impl TempDir {
            pub fn new(name: &str) -> TempDir {
                let path = std::env::temp_dir().join(format!(
                    "netmon-test-{}-{}-{:?}",
                    name,
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&path);
                std::fs::create_dir_all(&path).unwrap();
                TempDir(path)
            }

            pub fn db(&self) -> PathBuf {
                self.0.join("netmon.db")
            }
        }

        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// The fields that tell test flows apart: id, direction, src, dst, dst port, bytes up
    /// (down is twice that), last_seen, ended_at, device id.
    pub(crate) type TestFlow<'a> = (
        i64,
        &'a str,
        &'a str,
        &'a str,
        Option<u16>,
        i64,
        i64,
        Option<i64>,
        Option<i64>,
    );

    /// Inserts test flows; the fields not in [`TestFlow`] are fixed (TCP, v4, started a
    /// minute before `last_seen`, source port 40000 + id).
    pub(crate) fn insert_flows(conn: &Connection, flows: &[TestFlow]) {
        for (id, direction, src, dst, dport, bytes, last_seen, ended_at, device_id) in flows {
            conn.execute(
                "INSERT INTO flows (id, ident, ct_id, family, proto, direction, src_ip, src_port, \
                 dst_ip, dst_port, reply_src_ip, reply_src_port, reply_dst_ip, reply_dst_port, \
                 state, status, bytes_up, bytes_down, packets_up, packets_down, \
                 first_seen, last_seen, ended_at, device_id) \
                 VALUES (?1, ?1, ?1 + 1000, 4, 6, ?2, ?3, 40000 + ?1, ?4, ?5, ?4, ?5, \
                         '203.0.113.1', 40000 + ?1, 'ESTABLISHED', 14, ?6, ?6 * 2, 10, 20, \
                         ?7 - 60000, ?7, ?8, ?9)",
                params![
                    id, direction, src, dst, dport, bytes, last_seen, ended_at, device_id
                ],
            )
            .unwrap();
        }
    }

    fn q(pairs: &[(&str, &str)]) -> FlowQuery {
        let mut q = FlowQuery::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "show" => q.show = v,
                "direction" => q.direction = v,
                "src" => q.src = v,
                "dst" => q.dst = v,
                "device" => q.device = v,
                "host" => q.host = v,
                "port" => q.port = v,
                "proto" => q.proto = v,
                "domain" => q.domain = v,
                "sort" => q.sort = v,
                "order" => q.order = v,
                "page" => q.page = v,
                "per_page" => q.per_page = v,
                _ => panic!("unknown key {k}"),
            }
        }
        q
    }

    #[test]
    fn filter_defaults_and_empty_values() {
        let f = FlowFilter::parse(&q(&[("src", ""), ("port", " "), ("direction", "")])).unwrap();
        assert_eq!(f, FlowFilter::default());
        assert_eq!(f.to_query(), "");
    }

    #[test]
    fn search_filters_parse_bound_and_round_trip() {
        let text = "show=ended&src=10.1.2.3/8&dst=2001:DB8::5/32&state=time_wait&min_score=70\
                    &code=rare_port&from=90m&to=2026-12-04T21:00&min_bytes=10Mi\
                    &cols=bytes,device&page=last";
        let f = FlowFilter::parse(&FlowQuery::from_query_string(text).unwrap()).unwrap();
        assert_eq!(f.src, Some(AddrMatch::Net("10.0.0.0/8".into())));
        assert_eq!(f.dst, Some(AddrMatch::Net("2001:db8::/32".into())));
        assert_eq!(f.state, Some("TIME_WAIT"));
        assert_eq!((f.min_score, f.code), (Some(70), Some(Code::RarePort)));
        assert_eq!(
            f.from.as_ref().map(|t| t.at(10_000_000)),
            Some(10_000_000 - 5_400_000)
        );
        assert_eq!(f.to.as_ref().map(|t| t.at(0)), Some(1_796_418_000_000));
        assert_eq!(f.min_bytes, Some(10 << 20));
        assert_eq!(f.columns, vec![FlowColumn::Device, FlowColumn::Bytes]);
        assert!(f.last_page);
        let canonical = f.to_query();
        assert_eq!(
            canonical,
            "show=ended&src=10.0.0.0%2F8&dst=2001%3Adb8%3A%3A%2F32&state=TIME_WAIT&min_score=70\
             &code=RARE_PORT&from=90m&to=2026-12-04T21%3A00%3A00Z&min_bytes=10485760\
             &cols=device%2Cbytes&page=last"
        );
        let again = FlowFilter::parse(&FlowQuery::from_query_string(&canonical).unwrap()).unwrap();
        assert_eq!(again, f);
        // Repeated `cols` (checkboxes) join; other repeated keys are refused.
        let f =
            FlowFilter::parse(&FlowQuery::from_query_string("cols=dst&cols=&cols=src").unwrap())
                .unwrap();
        assert_eq!(f.columns, vec![FlowColumn::Src, FlowColumn::Dst]);
        assert!(FlowQuery::from_query_string("port=1&port=2").is_err());
        // Dates are checked, not wrapped.
        for bad in [
            "2026-02-30",
            "2026-12-04T24:00",
            "1969-12-31",
            "12h30m",
            "-1h",
        ] {
            assert!(TimeBound::parse("from", bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_utc("2024-02-29Z").map(|t| t.0),
            Some(1_709_164_800_000)
        );
    }

    #[test]
    fn filter_round_trips_through_query_string() {
        let f = FlowFilter::parse(&q(&[
            ("show", "all"),
            ("direction", "lan,outbound,lan"),
            ("src", "10.0.0."),
            ("dst", "2001:DB8::1"),
            ("port", "443"),
            ("proto", "UDP"),
            ("domain", "Shop.Example.TEST."),
            ("sort", "bytes"),
            ("order", "asc"),
            ("page", "3"),
            ("per_page", "20"),
        ]))
        .unwrap();
        assert_eq!(f.directions, vec![Direction::Outbound, Direction::Lan]);
        assert_eq!(f.dst, Some(AddrMatch::Exact("2001:db8::1".into())));
        assert_eq!(f.src, Some(AddrMatch::Prefix("10.0.0.".into())));
        assert_eq!(f.proto, Some(17));
        assert_eq!(f.domain.as_deref(), Some("shop.example.test"));
        let text = f.to_query();
        assert_eq!(
            text,
            "show=all&direction=outbound%2Clan&src=10.0.0.&dst=2001%3Adb8%3A%3A1&port=443\
             &proto=udp&domain=shop.example.test&sort=bytes&order=asc&page=3&per_page=20"
        );
        // Decode the way a browser/axum would and parse again.
        let back: Vec<(String, String)> = text
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), percent_decode(v))
            })
            .collect();
        let pairs: Vec<(&str, &str)> = back.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(FlowFilter::parse(&q(&pairs)).unwrap(), f);
    }

    fn percent_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn bad_values_name_the_parameter() {
        for (k, v) in [
            ("show", "live"),
            ("direction", "sideways"),
            ("direction", ","),
            ("device", "x"),
            ("device", "0"),
            ("port", "70000"),
            ("proto", "quic"),
            ("sort", "size"),
            ("order", "up"),
            ("page", "0"),
            ("page", "-1"),
            ("per_page", "501"),
            ("per_page", "0"),
            ("domain", "."),
            ("domain", "*."),
            ("domain", &"a".repeat(254)),
        ] {
            let e = FlowFilter::parse(&q(&[(k, v)])).unwrap_err();
            assert_eq!(e.param, k, "{e}");
            assert!(e.to_string().contains(&format!("`{k}`")), "{e}");
        }
    }

    #[test]
    fn like_escapes_wildcards() {
        assert_eq!(escape_like(r"a%b_c\d"), r"a\%b\_c\\d");
    }

    #[test]
    fn with_sort_flips_on_second_click() {
        let f = FlowFilter::default().with_page(4);
        let b = f.with_sort(FlowSort::Bytes);
        assert_eq!((b.sort, b.order, b.page), (FlowSort::Bytes, Order::Desc, 1));
        assert_eq!(b.with_sort(FlowSort::Bytes).order, Order::Asc);
        assert_eq!(f.with_sort(FlowSort::Dst).order, Order::Asc);
    }

    fn seeded() -> (tempdir::TempDir, Connection) {
        let (dir, conn) = temp_db("read-seeded");
        conn.execute(
            "INSERT INTO devices (id, ip, name, first_seen, last_seen) VALUES \
             (1, '10.0.0.5', 'laptop', 0, 1000), (2, '10.0.0.6', NULL, 0, 2000)",
            [],
        )
        .unwrap();
        #[rustfmt::skip]
        insert_flows(&conn, &[
            (1, "outbound", "10.0.0.5", "198.51.100.1", Some(443), 100, 5000, None, Some(1)),
            (2, "outbound", "10.0.0.6", "198.51.100.2", Some(80), 900, 6000, None, Some(2)),
            (3, "router-local", "10.0.0.5", "10.0.0.1", Some(53), 50, 7000, None, Some(1)),
            (4, "lan", "10.0.0.5", "10.0.0.6", Some(22), 10, 7000, None, Some(1)),
            (5, "outbound", "10.0.0.5", "198.51.100.1", Some(443), 500, 4000, Some(4500), Some(1)),
            (6, "inbound", "192.0.2.9", "10.0.0.6", Some(8080), 70, 6000, None, Some(2)),
            (7, "outbound", "10.0.0.9", "198.51.100.3", None, 5, 3000, None, None),
        ]);
        (dir, conn)
    }

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

    #[tokio::test]
    async fn pool_reads_and_refuses_writes() {
        let (dir, _conn) = seeded();
        let pool = ReadPool::open(&dir.db(), 2).unwrap();
        let page = pool
            .run(|c| flows(c, &FlowFilter::default()))
            .await
            .unwrap();
        assert_eq!(page.total, 4);
        let err = pool
            .run(|c| c.execute("DELETE FROM flows", []))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("readonly"), "{err:#}");
        // The pool still works after an error.
        let n = pool.run(|c| devices(c).map(|d| d.len())).await.unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn missing_database_is_an_error_naming_the_file() {
        let err = ReadPool::open(Path::new("/nonexistent/netmon.db"), 1)
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("/nonexistent/netmon.db"),
            "{err:#}"
        );
    }

    #[test]
    fn domain_filter_is_canonical_and_bounded() {
        let p = |s: &str| parse_domain("domain", s);
        assert_eq!(p("Shop.Example.TEST.").unwrap(), "shop.example.test");
        assert_eq!(p("*.example.test").unwrap(), "example.test");
        assert_eq!(p(".example.test").unwrap(), "example.test");
        assert_eq!(p("caf\u{e9}.test").unwrap(), "caf\\195\\169.test");
        assert_eq!(p("a\\000b.test").unwrap(), "a\\000b.test");
        assert!(p(&"a".repeat(253)).is_ok());
        let e = p(&"a".repeat(254)).unwrap_err();
        assert!(e.to_string().contains("at most 253"), "{e}");
        // 101 characters, 386 once escaped: refused, so a filter that parses always
        // survives its canonical query string.
        let e = p(&format!("a{}.test", "\0".repeat(95))).unwrap_err();
        assert!(e.to_string().contains("at most 253"), "{e}");
    }

    /// The id of `name` in `dns_names`, inserting it when new.
    pub(crate) fn name_id(conn: &Connection, name: &str) -> i64 {
        conn.execute("INSERT OR IGNORE INTO dns_names (name) VALUES (?)", [name])
            .unwrap();
        conn.query_row("SELECT id FROM dns_names WHERE name = ?", [name], |r| {
            r.get(0)
        })
        .unwrap()
    }

    /// A DNS query row: (id, ts, client, device id, name, qtype, rcode, answers, cname).
    pub(crate) type TestQuery<'a> = (
        i64,
        i64,
        &'a str,
        Option<i64>,
        &'a str,
        u16,
        Option<u16>,
        i64,
        Option<&'a str>,
    );

    pub(crate) fn insert_queries(conn: &Connection, rows: &[TestQuery]) {
        for (id, ts, client, device, name, qtype, rcode, answers, cname) in rows {
            let qname = name_id(conn, name);
            let cname = cname.map(|c| name_id(conn, c));
            conn.execute(
                "INSERT INTO dns_queries (id, ts, client, device_id, qname_id, qtype, rcode, \
                 answers, cname_id, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'packet')",
                params![id, ts, client, device, qname, qtype, rcode, answers, cname],
            )
            .unwrap();
        }
    }

    /// Sets a flow's domain (and CNAME target) and match confidence.
    pub(crate) fn set_flow_domain(
        conn: &Connection,
        flow: i64,
        name: &str,
        cname: Option<&str>,
        dns_match: i64,
    ) {
        let qname = name_id(conn, name);
        let cname = cname.map(|c| name_id(conn, c));
        conn.execute(
            "UPDATE flows SET qname_id = ?, cname_id = ?, dns_match = ? WHERE id = ?",
            params![qname, cname, dns_match, flow],
        )
        .unwrap();
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

    fn dq(pairs: &[(&str, &str)]) -> DnsQuery {
        let mut q = DnsQuery::default();
        for (k, v) in pairs {
            let v = Some(v.to_string());
            match *k {
                "device" => q.device = v,
                "client" => q.client = v,
                "name" => q.name = v,
                "type" => q.qtype = v,
                "rcode" => q.rcode = v,
                "page" => q.page = v,
                "per_page" => q.per_page = v,
                _ => panic!("unknown key {k}"),
            }
        }
        q
    }

    #[test]
    fn dns_filter_parses_round_trips_and_names_bad_parameters() {
        assert_eq!(
            DnsFilter::parse(&dq(&[("name", "")])).unwrap(),
            DnsFilter::default()
        );
        let f = DnsFilter::parse(&dq(&[
            ("device", "3"),
            ("client", "10.0.0."),
            ("name", "Example.TEST"),
            ("type", "aaaa"),
            ("rcode", "nxdomain"),
            ("page", "2"),
            ("per_page", "10"),
        ]))
        .unwrap();
        assert_eq!(f.qtype, Some(28));
        assert_eq!(f.rcode, Some(RcodeMatch::Code(3)));
        assert_eq!(
            f.to_query(),
            "device=3&client=10.0.0.&name=example.test&type=AAAA&rcode=NXDOMAIN&page=2&per_page=10"
        );
        let text = f.to_query();
        let back: Vec<(String, String)> = text
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), percent_decode(v))
            })
            .collect();
        let pairs: Vec<(&str, &str)> = back.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(DnsFilter::parse(&dq(&pairs)).unwrap(), f);
        let parse = |k, v| DnsFilter::parse(&dq(&[(k, v)])).unwrap();
        assert_eq!(parse("rcode", "none").rcode, Some(RcodeMatch::Unanswered));
        assert_eq!(parse("rcode", "2").rcode, Some(RcodeMatch::Code(2)));
        assert_eq!(parse("type", "TYPE65").qtype, Some(65));
        assert_eq!(parse("type", "https").qtype, Some(65));
        assert_eq!(
            parse("client", "2001:DB8::1").client,
            Some(AddrMatch::Exact("2001:db8::1".into()))
        );
        for (k, v) in [
            ("device", "x"),
            ("device", "0"),
            ("client", &"1".repeat(65)),
            ("name", "."),
            ("name", &"a".repeat(254)),
            ("type", "AAAAA"),
            ("type", "TYPE70000"),
            ("rcode", "BOGUS"),
            ("rcode", "4096"),
            ("page", "0"),
            ("per_page", "501"),
        ] {
            let e = DnsFilter::parse(&dq(&[(k, v)])).unwrap_err();
            assert_eq!(e.param, k, "{e}");
            assert!(e.to_string().contains(&format!("`{k}`")), "{e}");
        }
    }

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
        assert!(list.contains("flows_device"), "{list}");
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
