//! Over 800 lines: the overview's dozen panel queries and their query-plan tests belong
//! together; each reads a different rollup.
//!
//! The queries of the overview page (`/overview` and its `/fragment/overview/*`): the
//! headline numbers, the charts' series and the top-N panels.
//!
//! Every query reads rollups, never a scan of `flows` over a window: a router may hold a
//! million flows over 30 days, and every page must render in well under 50 ms. Short
//! windows (up to an hour, and chart ranges up to [`MINUTE_BUCKETS_UP_TO_MS`]) read the
//! minute rollups; long ones (24 h, 7 d, 30 d) the hour rollups (DESIGN §3), or — where
//! only minute rollups exist (interfaces, DNS per device) — the minute rows summed per
//! hour in SQL. Each query below names the index it walks (checked with `EXPLAIN QUERY
//! PLAN` in the tests).

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::devices::device_label_sql;
use crate::store::filter::Window;
use crate::time::{DAY_MS, HOUR_MS, MINUTE_MS, hour_start, minute_start};

/// A device counts as online when it was seen this recently: DHCP renewals and the
/// neighbour scan refresh `last_seen` of a quiet but present device within minutes.
pub const ONLINE_MS: i64 = 5 * MINUTE_MS;

/// Chart ranges up to this long get minute bars; longer ones hour bars (a minute bar of
/// a day-long chart is half a pixel wide, and a week of minute rows is 10 000 rows per
/// device).
pub const MINUTE_BUCKETS_UP_TO_MS: i64 = 6 * HOUR_MS;

/// Longest chart range accepted (a zoom's `from`/`to`): the hour rollups' useful span.
pub const MAX_RANGE_MS: i64 = 31 * DAY_MS;

/// Rows in each top-N panel.
pub const TOP_N: u32 = 10;

/// A chart's time range `[since, until)` and its bar width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub since: i64,
    pub until: i64,
    /// [`MINUTE_MS`] or [`HOUR_MS`].
    pub bucket_ms: i64,
}

impl Range {
    /// The range, with minute bars when it is short enough and hour bars otherwise.
    /// `since` is rounded down to its bucket so the first bar is whole.
    pub fn new(since: i64, until: i64) -> Range {
        let bucket_ms = if until - since <= MINUTE_BUCKETS_UP_TO_MS {
            MINUTE_MS
        } else {
            HOUR_MS
        };
        Range {
            since: since - since.rem_euclid(bucket_ms),
            until,
            bucket_ms,
        }
    }

    pub fn hourly(&self) -> bool {
        self.bucket_ms == HOUR_MS
    }
}

/// The overview's headline numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tiles {
    /// Devices seen in the last [`ONLINE_MS`].
    pub devices_online: u64,
    /// Live flows (`ended_at IS NULL`), every direction.
    pub active_flows: u64,
    /// Remote hosts first seen in the window.
    pub new_hosts: u64,
    /// Names first seen on a flow in the window (`remote_host_domains.first_seen`: a
    /// name only ever queried, never connected to, is not "new traffic").
    pub new_domains: u64,
    /// Incidents neither acknowledged nor muted.
    pub open_incidents: u64,
}

fn count(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> rusqlite::Result<u64> {
    let n: i64 = conn.prepare_cached(sql)?.query_row(p, |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Indexes: `devices_last_seen`, `flows_active`, `remote_hosts_first_seen`,
/// `remote_host_domains_name` (one pass over a table of a row per host and name, bounded
/// by the storage budget), `incidents_open`.
pub fn tiles(conn: &Connection, now: i64, since: i64) -> rusqlite::Result<Tiles> {
    Ok(Tiles {
        devices_online: count(
            conn,
            "SELECT count(*) FROM devices WHERE last_seen >= ?",
            [now - ONLINE_MS],
        )?,
        active_flows: count(
            conn,
            "SELECT count(*) FROM flows WHERE ended_at IS NULL",
            [],
        )?,
        new_hosts: count(
            conn,
            "SELECT count(*) FROM remote_hosts WHERE first_seen >= ?",
            [since],
        )?,
        new_domains: count(
            conn,
            "SELECT count(*) FROM (SELECT qname_id FROM remote_host_domains \
             GROUP BY qname_id HAVING min(first_seen) >= ?)",
            [since],
        )?,
        open_incidents: crate::store::detect::read::open_incidents(conn, now)?,
    })
}

/// One bar of a traffic series: bucket start, bytes sent (`up`) and received (`down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficBucket {
    pub t: i64,
    pub up: i64,
    pub down: i64,
}

/// WAN bytes per bucket from `interface_minutes` (index `interface_minutes_minute`):
/// what crossed the internet link, NAT and all, which is what the owner pays for.
/// Received on the WAN is "down", sent is "up".
pub fn wan_traffic(conn: &Connection, r: &Range) -> rusqlite::Result<Vec<TrafficBucket>> {
    conn.prepare_cached(
        "SELECT minute - minute % ?1 AS t, sum(tx_bytes), sum(rx_bytes) FROM interface_minutes \
         WHERE minute >= ?2 AND minute < ?3 AND role = 'wan' GROUP BY t ORDER BY t",
    )?
    .query_map(params![r.bucket_ms, r.since, r.until], |row| {
        Ok(TrafficBucket {
            t: row.get(0)?,
            up: row.get(1)?,
            down: row.get(2)?,
        })
    })?
    .collect()
}

/// One bar of a count series, with an optional highlighted part (NXDOMAIN of DNS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountBucket {
    pub t: i64,
    pub total: i64,
    pub part: Option<i64>,
}

/// New flows per bucket from the device rollups (`device_minutes_minute` or
/// `device_hours_hour`), never from `flows`.
pub fn flows_started(conn: &Connection, r: &Range) -> rusqlite::Result<Vec<CountBucket>> {
    let sql = if r.hourly() {
        "SELECT hour AS t, sum(flows_new) FROM device_hours \
         WHERE hour >= ?1 AND hour < ?2 GROUP BY t ORDER BY t"
    } else {
        "SELECT minute AS t, sum(flows_new) FROM device_minutes \
         WHERE minute >= ?1 AND minute < ?2 GROUP BY t ORDER BY t"
    };
    conn.prepare_cached(sql)?
        .query_map(params![r.since, r.until], |row| {
            Ok(CountBucket {
                t: row.get(0)?,
                total: row.get(1)?,
                part: None,
            })
        })?
        .collect()
}

/// DNS queries (and NXDOMAIN answers) per bucket from `dns_device_minutes`. The table's
/// key is (device, minute) and it has no index on the minute alone, so the query walks
/// the key once per device (`device_id IN (SELECT id FROM devices)`) instead of scanning.
pub fn dns_queries(conn: &Connection, r: &Range) -> rusqlite::Result<Vec<CountBucket>> {
    conn.prepare_cached(
        "SELECT minute - minute % ?1 AS t, sum(queries), sum(nxdomain) FROM dns_device_minutes \
         WHERE device_id IN (SELECT id FROM devices) AND minute >= ?2 AND minute < ?3 \
         GROUP BY t ORDER BY t",
    )?
    .query_map(params![r.bucket_ms, r.since, r.until], |row| {
        Ok(CountBucket {
            t: row.get(0)?,
            total: row.get(1)?,
            part: Some(row.get(2)?),
        })
    })?
    .collect()
}

/// A device's traffic in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTraffic {
    pub device_id: i64,
    /// The device's label (as `DeviceRow::label`), `None` for a device row since pruned.
    pub label: Option<String>,
    pub bytes_up: i64,
    pub bytes_down: i64,
}

/// How [`top_devices`] ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRank {
    /// Bytes both ways: the "top talkers".
    Total,
    /// Bytes sent: what leaves the house.
    Egress,
}

/// The busiest devices of a window from `device_minutes` / `device_hours` (their time
/// indexes; a window's rows, grouped by device).
pub fn top_devices(
    conn: &Connection,
    since: i64,
    hourly: bool,
    rank: DeviceRank,
    limit: u32,
) -> rusqlite::Result<Vec<DeviceTraffic>> {
    // Through the key, one range per device (`device_id IN …`): rows are stored in key
    // order, so this reads the window's rows in place, where the time index would look
    // each one up again.
    let (table, col, since) = if hourly {
        ("device_hours", "hour", hour_start(since))
    } else {
        ("device_minutes", "minute", minute_start(since))
    };
    let order = match rank {
        DeviceRank::Total => "up + down",
        DeviceRank::Egress => "up",
    };
    let sql = format!(
        "SELECT t.device_id, t.up, t.down, \
           {label} \
         FROM (SELECT device_id, sum(bytes_up) AS up, sum(bytes_down) AS down FROM {table} \
               WHERE device_id IN (SELECT id FROM devices) AND {col} >= ?1 \
               GROUP BY device_id) t \
         LEFT JOIN devices d ON d.id = t.device_id \
         WHERE {order} > 0 ORDER BY {order} DESC, t.device_id LIMIT ?2",
        label = device_label_sql!()
    );
    conn.prepare_cached(&sql)?
        .query_map(params![since, limit], |row| {
            Ok(DeviceTraffic {
                device_id: row.get(0)?,
                bytes_up: row.get(1)?,
                bytes_down: row.get(2)?,
                label: row.get(3)?,
            })
        })?
        .collect()
}

/// A remote host's traffic in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTraffic {
    pub id: i64,
    pub ip: String,
    pub rdns: Option<String>,
    pub org: Option<String>,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub flows_new: i64,
}

/// The busiest remote hosts of a window from `remote_host_minutes` (windows up to an
/// hour, through their time index) or `remote_host_hours` (long windows, see
/// [`SettledTops`]).
pub fn top_hosts(
    conn: &Connection,
    now: i64,
    since: i64,
    hourly: bool,
    limit: u32,
    settled: &SettledTops,
) -> rusqlite::Result<Vec<HostTraffic>> {
    let sums = if hourly {
        top_host_hours(conn, now, hour_start(since), limit, settled)?
    } else {
        // Minute windows (an hour at most) hold few rows: the time index is the short way.
        let since = minute_start(since);
        conn.prepare_cached(
            "SELECT remote_host_id, sum(bytes_up) AS up, sum(bytes_down) AS down, \
                    sum(flows_new) FROM remote_host_minutes \
                    INDEXED BY remote_host_minutes_minute WHERE minute >= ?1 \
             GROUP BY remote_host_id ORDER BY up + down DESC, remote_host_id LIMIT ?2",
        )?
        .query_map(params![since, limit], HostSum::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    let mut host =
        conn.prepare_cached("SELECT ip, NULLIF(rdns, ''), org FROM remote_hosts WHERE id = ?1")?;
    let mut out = Vec::with_capacity(sums.len());
    for s in sums {
        // A host is never deleted while it has rollups; `optional` only guards a race
        // with a future pruning of hosts.
        let Some((ip, rdns, org)) = host
            .query_row([s.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?
        else {
            continue;
        };
        out.push(HostTraffic {
            id: s.id,
            ip,
            rdns,
            org,
            bytes_up: s.up,
            bytes_down: s.down,
            flows_new: s.flows,
        });
    }
    Ok(out)
}

/// One remote host's sums over part of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostSum {
    id: i64,
    up: i64,
    down: i64,
    flows: i64,
}

impl HostSum {
    fn from_row(row: &rusqlite::Row) -> rusqlite::Result<HostSum> {
        Ok(HostSum {
            id: row.get(0)?,
            up: row.get(1)?,
            down: row.get(2)?,
            flows: row.get(3)?,
        })
    }

    /// Adds (`sign` 1) or takes away (`sign` -1) another part of the same host's sums.
    fn add(&mut self, other: &HostSum, sign: i64) {
        self.up += sign * other.up;
        self.down += sign * other.down;
        self.flows += sign * other.flows;
    }

    fn total(&self) -> i64 {
        self.up.saturating_add(self.down)
    }

    /// The panel's order: most bytes first, ties by id (as the SQL orders them).
    fn rank(&self) -> (std::cmp::Reverse<i64>, i64) {
        (std::cmp::Reverse(self.total()), self.id)
    }
}

/// Each remote host's sums over the *settled* hours of the long windows — every hour
/// before the last one — kept until the hour turns.
///
/// Summing a month of `remote_host_hours` is a million rows on a busy router — most of
/// the overview's work at 30 d — yet those rows stop changing once their hour is over: the writer adds a delta to the hour it is
/// observed in. So each request adds only the last two hours' rows to the settled sums
/// (the hour before the current one is read live too, for a tick committed just after
/// the hour turned). When the hour turns, the window moves by one hour: the new settled
/// sums are the old ones plus the hour that settled, minus the hour that left the window
/// — two hours of rows, not the month again. The result is the plain sum over the window,
/// exactly.
///
/// A full read happens at start, after an hour without a request for the window, and
/// whenever the oldest hour row is younger than the window's start: retention may have
/// removed rows inside the window (`hour_rollups_days` shorter than it), which the sums
/// must forget though no hour boundary announces them. (On a router younger than the
/// window that is every hour, over less than the window's rows.)
///
/// Cost: 44 bytes per host with traffic in the window (20 000 hosts ≈ 0.9 MiB per
/// window, three windows at most).
#[derive(Debug, Default)]
pub struct SettledTops {
    /// One entry per long window for the current hour; a `std` mutex, held only to look
    /// up or store, never across a query.
    cached: std::sync::Mutex<Vec<Arc<Settled>>>,
}

#[derive(Debug)]
struct Settled {
    since: i64,
    split: i64,
    /// Every host with rows in `[since, split)`, by id (for lookups)…
    by_id: Vec<SettledSum>,
    /// …and their indexes in `by_id` in the panel's order.
    ranked: Vec<u32>,
    /// Built from the previous hour's entry (for the unit test).
    rolled: bool,
}

/// One host's sums over settled hours, and how many hour rows they sum: a host leaves
/// the window when its last row does, whatever its sums are.
#[derive(Debug, Clone, Copy)]
struct SettledSum {
    sum: HostSum,
    rows: i64,
}

impl SettledSum {
    fn from_row(row: &rusqlite::Row) -> rusqlite::Result<SettledSum> {
        Ok(SettledSum {
            sum: HostSum::from_row(row)?,
            rows: row.get(4)?,
        })
    }
}

impl Settled {
    fn new(since: i64, split: i64, mut by_id: Vec<SettledSum>, rolled: bool) -> Settled {
        by_id.sort_unstable_by_key(|h| h.sum.id);
        let mut ranked: Vec<u32> = (0..by_id.len() as u32).collect();
        ranked.sort_unstable_by_key(|&i| by_id[i as usize].sum.rank());
        Settled {
            since,
            split,
            by_id,
            ranked,
            rolled,
        }
    }

    /// Every host's sums over the hour rows in `[since, split)`.
    fn read(conn: &Connection, since: i64, split: i64) -> rusqlite::Result<Settled> {
        Ok(Settled::new(
            since,
            split,
            host_hours(conn, since, split)?,
            false,
        ))
    }

    /// The window one hour on from `self`: plus the hour that settled, minus the hour
    /// that left. `None` when retention has removed rows inside `self`'s window (see
    /// [`SettledTops`]): those rows are still in its sums and no hour boundary says so.
    fn rolled(&self, conn: &Connection) -> rusqlite::Result<Option<Settled>> {
        let oldest: Option<i64> =
            conn.query_row("SELECT min(hour) FROM remote_host_hours", [], |r| r.get(0))?;
        if oldest.is_none_or(|h| h > self.since) {
            return Ok(None);
        }
        let (since, split) = (self.since + HOUR_MS, self.split + HOUR_MS);
        let mut by_id: HashMap<i64, SettledSum> =
            self.by_id.iter().map(|h| (h.sum.id, *h)).collect();
        for (from, to, sign) in [(self.split, split, 1), (self.since, since, -1)] {
            for hour in hour_sums(conn, from, to)? {
                let e = by_id.entry(hour.sum.id).or_insert(SettledSum {
                    sum: HostSum {
                        up: 0,
                        down: 0,
                        flows: 0,
                        ..hour.sum
                    },
                    rows: 0,
                });
                e.sum.add(&hour.sum, sign);
                e.rows += sign * hour.rows;
            }
        }
        let by_id = by_id.into_values().filter(|h| h.rows > 0).collect();
        Ok(Some(Settled::new(since, split, by_id, true)))
    }

    fn get(&self, id: i64) -> Option<&HostSum> {
        let i = self.by_id.binary_search_by_key(&id, |h| h.sum.id).ok()?;
        Some(&self.by_id[i].sum)
    }
}

/// The long windows: 24 h, 7 d, 30 d.
const SETTLED_ENTRIES: usize = 3;

enum Lookup {
    Hit(Arc<Settled>),
    Previous(Arc<Settled>),
    Miss,
}

impl SettledTops {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Settled>>> {
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry of `(since, split)`, else the one an hour before it to roll forward.
    fn get(&self, since: i64, split: i64) -> Lookup {
        let mut cached = self.lock();
        // Entries of an hour before the previous one are never asked for again.
        cached.retain(|s| s.split >= split - HOUR_MS);
        if let Some(s) = cached.iter().find(|s| (s.since, s.split) == (since, split)) {
            return Lookup::Hit(s.clone());
        }
        cached
            .iter()
            .find(|s| (s.since, s.split) == (since - HOUR_MS, split - HOUR_MS))
            .map_or(Lookup::Miss, |s| Lookup::Previous(s.clone()))
    }

    fn put(&self, entry: Arc<Settled>) {
        let mut cached = self.lock();
        // The previous hour's entry of the same window goes (its window started an hour
        // earlier), and every entry older than that.
        cached.retain(|s| {
            s.split >= entry.split - HOUR_MS
                && s.since != entry.since - HOUR_MS
                && s.since != entry.since
        });
        if cached.len() >= SETTLED_ENTRIES {
            cached.remove(0);
        }
        cached.push(entry);
    }
}

/// [`top_hosts`] over hour rollups from `since` (an hour's start) to now.
fn top_host_hours(
    conn: &Connection,
    now: i64,
    since: i64,
    limit: u32,
    cache: &SettledTops,
) -> rusqlite::Result<Vec<HostSum>> {
    let split = hour_start(now) - HOUR_MS;
    if split <= since {
        return Ok(host_hours(conn, since, i64::MAX)?
            .into_iter()
            .map(|h| h.sum)
            .take(limit as usize)
            .collect());
    }
    let settled = match cache.get(since, split) {
        Lookup::Hit(s) => s,
        lookup => {
            let rolled = match lookup {
                Lookup::Previous(previous) => previous.rolled(conn)?,
                _ => None,
            };
            let s = Arc::new(match rolled {
                Some(s) => s,
                None => Settled::read(conn, since, split)?,
            });
            log::debug!(
                "top hosts since {since}: settled sums of {} hosts {}",
                s.by_id.len(),
                if s.rolled {
                    "rolled on an hour"
                } else {
                    "read"
                }
            );
            cache.put(s.clone());
            s
        }
    };
    let recent = hour_sums(conn, split, i64::MAX)?;
    let moved: std::collections::HashSet<i64> = recent.iter().map(|h| h.sum.id).collect();
    // The top of the hosts without recent rows (their sums are final)…
    let mut top: Vec<HostSum> = settled
        .ranked
        .iter()
        .map(|&i| settled.by_id[i as usize].sum)
        .filter(|h| !moved.contains(&h.id))
        .take(limit as usize)
        .collect();
    // …and every host with recent rows, settled sums added.
    top.extend(recent.into_iter().map(|h| {
        let mut h = h.sum;
        if let Some(s) = settled.get(h.id) {
            h.add(s, 1);
        }
        h
    }));
    top.sort_unstable_by_key(HostSum::rank);
    top.truncate(limit as usize);
    Ok(top)
}

/// Every host's sums over the hour rows in `[since, until)`, most bytes first, through
/// the key for the hosts seen since `since` (`remote_hosts_last_seen`): the time index
/// would look each of a month's rows up again.
fn host_hours(conn: &Connection, since: i64, until: i64) -> rusqlite::Result<Vec<SettledSum>> {
    conn.prepare_cached(
        "SELECT remote_host_id, sum(bytes_up) AS up, sum(bytes_down) AS down, \
                sum(flows_new), count(*) FROM remote_host_hours \
         WHERE remote_host_id IN (SELECT id FROM remote_hosts WHERE last_seen >= ?1) \
           AND hour >= ?1 AND hour < ?2 \
         GROUP BY remote_host_id ORDER BY up + down DESC, remote_host_id",
    )?
    .query_map(params![since, until], SettledSum::from_row)?
    .collect()
}

/// Every host's sums over the hour rows in `[since, until)`, a span of one or two hours,
/// through the time index.
fn hour_sums(conn: &Connection, since: i64, until: i64) -> rusqlite::Result<Vec<SettledSum>> {
    conn.prepare_cached(
        "SELECT remote_host_id, sum(bytes_up), sum(bytes_down), sum(flows_new), count(*) \
         FROM remote_host_hours INDEXED BY remote_host_hours_hour \
         WHERE hour >= ?1 AND hour < ?2 GROUP BY remote_host_id",
    )?
    .query_map(params![since, until], SettledSum::from_row)?
    .collect()
}

/// A name and how often it was used in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainUse {
    pub name: String,
    pub count: i64,
}

/// What [`top_domains`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainMeasure {
    /// DNS queries in the window (windows up to a day).
    Queries,
    /// Flows to the name over the retained history, for names used in the window.
    Flows,
}

/// The most used names of a window. Up to a day: DNS queries counted in the window
/// (`dns_queries_ts`). Longer windows would count hundreds of thousands of queries —
/// there is no DNS rollup per name — so they rank names last reached in the window by
/// their flow count (`remote_host_domains` of the hosts seen in the window).
pub fn top_domains(
    conn: &Connection,
    since: i64,
    window: Window,
    limit: u32,
) -> rusqlite::Result<(DomainMeasure, Vec<DomainUse>)> {
    let (measure, sql) = if window.ms() <= DAY_MS {
        (
            DomainMeasure::Queries,
            "SELECT n.name, t.c FROM (SELECT qname_id, count(*) AS c FROM dns_queries \
             INDEXED BY dns_queries_ts WHERE ts >= ?1 GROUP BY qname_id ORDER BY c DESC, qname_id LIMIT ?2) t \
             JOIN dns_names n ON n.id = t.qname_id ORDER BY t.c DESC, n.name",
        )
    } else {
        (
            DomainMeasure::Flows,
            "SELECT n.name, t.c FROM (SELECT qname_id, sum(flows) AS c FROM remote_host_domains \
             WHERE remote_host_id IN (SELECT id FROM remote_hosts WHERE last_seen >= ?1) \
               AND last_seen >= ?1 GROUP BY qname_id ORDER BY c DESC, qname_id LIMIT ?2) t \
             JOIN dns_names n ON n.id = t.qname_id ORDER BY t.c DESC, n.name",
        )
    };
    let rows = conn
        .prepare_cached(sql)?
        .query_map(params![since, limit], |row| {
            Ok(DomainUse {
                name: row.get(0)?,
                count: row.get(1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((measure, rows))
}

/// A remote host first seen recently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHost {
    pub id: i64,
    pub ip: String,
    pub rdns: Option<String>,
    pub org: Option<String>,
    pub first_seen: i64,
    /// The name most flows reached it as, when one is known.
    pub domain: Option<String>,
}

/// The newest remote hosts first seen in the window (`remote_hosts_first_seen`).
pub fn newest_hosts(conn: &Connection, since: i64, limit: u32) -> rusqlite::Result<Vec<NewHost>> {
    conn.prepare_cached(
        "SELECT h.id, h.ip, NULLIF(h.rdns, ''), h.org, h.first_seen, \
           (SELECT n.name FROM remote_host_domains d JOIN dns_names n ON n.id = d.qname_id \
            WHERE d.remote_host_id = h.id ORDER BY d.flows DESC LIMIT 1) \
         FROM remote_hosts h WHERE h.first_seen >= ?1 ORDER BY h.first_seen DESC, h.id DESC LIMIT ?2",
    )?
    .query_map(params![since, limit], |row| {
        Ok(NewHost {
            id: row.get(0)?,
            ip: row.get(1)?,
            rdns: row.get(2)?,
            org: row.get(3)?,
            first_seen: row.get(4)?,
            domain: row.get(5)?,
        })
    })?
    .collect()
}

/// A destination port used in a window, with its lifetime use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortUse {
    pub proto: u8,
    pub port: u16,
    /// Flows to it: in the window (short windows), or on the (host, port) pairs used in
    /// the window over their history (long windows).
    pub flows: i64,
    /// Remote hosts it was contacted on.
    pub hosts: i64,
    pub last_seen: i64,
}

/// Rare ports: destination ports of outbound flows in the window, fewest flows first —
/// the one-off port among the usual 443s is what an owner looks for. Windows up to an
/// hour count the window's flows (`flows_first_seen`: a few thousand rows at most);
/// longer ones never touch `flows` and count `remote_host_ports` (a row per host and
/// port, one pass, bounded by the storage budget) over the pairs used in the window.
pub fn rare_ports(
    conn: &Connection,
    since: i64,
    hourly: bool,
    limit: u32,
) -> rusqlite::Result<Vec<PortUse>> {
    let sql = if hourly {
        "SELECT proto, port, sum(flows) AS f, count(*), max(last_seen) AS l FROM remote_host_ports \
         WHERE last_seen >= ?1 GROUP BY proto, port ORDER BY f ASC, l DESC LIMIT ?2"
    } else {
        "SELECT proto, dst_port, count(*) AS f, count(DISTINCT remote_host_id), max(last_seen) AS l \
         FROM flows WHERE first_seen >= ?1 AND direction = 0 AND dst_port IS NOT NULL \
         GROUP BY proto, dst_port ORDER BY f ASC, l DESC LIMIT ?2"
    };
    conn.prepare_cached(sql)?
        .query_map(params![since, limit], |row| {
            Ok(PortUse {
                proto: row.get(0)?,
                port: row.get(1)?,
                flows: row.get(2)?,
                hosts: row.get(3)?,
                last_seen: row.get(4)?,
            })
        })?
        .collect()
}

/// A device's baseline egress per UTC hour of day (bytes up per active minute, p95), as
/// the detector learnt it; `None` before the first baseline. Zero hours had too few
/// samples of their own and fall back to the overall p95 (as the detector does).
pub fn egress_baseline(conn: &Connection, device_id: i64) -> rusqlite::Result<Option<[i64; 24]>> {
    use rusqlite::OptionalExtension as _;
    let row: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT egress_by_hour, egress_p95 FROM device_baselines WHERE device_id = ?1",
        )?
        .query_row([device_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((json, overall)) = row else {
        return Ok(None);
    };
    let by_hour: Vec<i64> = serde_json::from_str(&json).unwrap_or_default();
    if by_hour.len() != 24 && overall <= 0 {
        return Ok(None);
    }
    let mut out = [overall.max(0); 24];
    for (slot, v) in out.iter_mut().zip(by_hour) {
        if v > 0 {
            *slot = v;
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdata::temp_db;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows.join("\n")
    }

    /// No window query scans a big table: each one searches an index.
    #[test]
    fn window_queries_use_indexes() {
        let (_dir, conn) = temp_db("overview-plan");
        for (sql, want) in [
            (
                "SELECT minute - minute % 60000 AS t, sum(tx_bytes) FROM interface_minutes \
                 WHERE minute >= 1 AND minute < 2 AND role = 'wan' GROUP BY t",
                "interface_minutes_minute",
            ),
            (
                "SELECT hour, sum(flows_new) FROM device_hours WHERE hour >= 1 AND hour < 2 GROUP BY hour",
                "device_hours_hour",
            ),
            (
                "SELECT minute, sum(flows_new) FROM device_minutes WHERE minute >= 1 AND minute < 2 GROUP BY minute",
                "device_minutes_minute",
            ),
            (
                "SELECT minute, sum(queries) FROM dns_device_minutes \
                 WHERE device_id IN (SELECT id FROM devices) AND minute >= 1 AND minute < 2 GROUP BY minute",
                "SEARCH dns_device_minutes USING PRIMARY KEY (device_id=? AND minute>? AND minute<?)",
            ),
            (
                "SELECT id FROM remote_hosts WHERE first_seen >= 1 ORDER BY first_seen DESC",
                "remote_hosts_first_seen",
            ),
            (
                "SELECT remote_host_id, sum(bytes_up) FROM remote_host_hours \
                 WHERE remote_host_id IN (SELECT id FROM remote_hosts WHERE last_seen >= 1) \
                   AND hour >= 1 GROUP BY remote_host_id",
                "SEARCH remote_host_hours USING PRIMARY KEY (remote_host_id=? AND hour>?)",
            ),
            (
                "SELECT proto, dst_port, count(*) FROM flows WHERE first_seen >= 1 \
                 AND direction = 0 AND dst_port IS NOT NULL GROUP BY proto, dst_port",
                "flows_first_seen",
            ),
        ] {
            let p = plan(&conn, sql);
            assert!(p.contains(want), "{sql}\n{p}");
            assert!(!p.contains("SCAN flows"), "{sql}\n{p}");
        }
    }

    /// The long windows' ranking (settled hours kept per hour, recent hours added per
    /// request) is the plain sum over the window, as the rows of the last two hours keep
    /// changing under the same cached ranking — with ties, hosts gone quiet, hosts new in
    /// the last hour, and windows with fewer hosts than the panel's rows.
    #[test]
    fn long_window_top_hosts_match_the_plain_sum() {
        let (_dir, conn) = temp_db("overview-settled");
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut now = 40 * DAY_MS + 17 * MINUTE_MS;
        for id in 1..=300 {
            conn.execute(
                "INSERT INTO remote_hosts (id, ip, first_seen, last_seen) VALUES (?1, ?2, 0, ?3)",
                params![id, format!("198.51.100.{id}"), now],
            )
            .unwrap();
        }
        let mut add = |conn: &Connection, now: i64, hosts: u64, from_h: i64, to_h: i64, rows| {
            let hour = hour_start(now);
            for _ in 0..rows {
                let id = 1 + rand(hosts) as i64;
                let h = hour - HOUR_MS * (from_h + rand((to_h - from_h + 1) as u64) as i64);
                // Coarse byte counts, so ties happen.
                let (up, down) = (rand(4) as i64 * 1000, rand(4) as i64 * 1000);
                conn.execute(
                    "INSERT INTO remote_host_hours (remote_host_id, hour, bytes_up, bytes_down, flows_new)
                     VALUES (?1, ?2, ?3, ?4, 1)
                     ON CONFLICT (remote_host_id, hour) DO UPDATE SET
                       bytes_up = bytes_up + excluded.bytes_up,
                       bytes_down = bytes_down + excluded.bytes_down,
                       flows_new = flows_new + 1",
                    params![id, h, up, down],
                )
                .unwrap();
            }
        };
        let plain = |conn: &Connection, since: i64, limit: u32| -> Vec<HostSum> {
            let all = host_hours(conn, hour_start(since), i64::MAX).unwrap();
            all.into_iter()
                .map(|h| h.sum)
                .take(limit as usize)
                .collect()
        };
        let cache = SettledTops::default();
        let check = |conn: &Connection, now: i64, what: &str| {
            for window in [Window::H24, Window::D7, Window::D30] {
                for limit in [3, 10, 500] {
                    let since = now - window.ms();
                    let got: Vec<HostSum> = top_hosts(conn, now, since, true, limit, &cache)
                        .unwrap()
                        .iter()
                        .map(|h| HostSum {
                            id: h.id,
                            up: h.bytes_up,
                            down: h.bytes_down,
                            flows: h.flows_new,
                        })
                        .collect();
                    assert_eq!(
                        got,
                        plain(conn, since, limit),
                        "{what}, {window:?}, top {limit}"
                    );
                }
            }
        };
        // A quiet start: fewer hosts than the widest panel.
        add(&conn, now, 40, 2, 24 * 35, 200);
        check(&conn, now, "history only");
        // The recent hours move; the settled ranking stays cached.
        for round in 0..20 {
            add(&conn, now, 300, 0, 1, 30);
            check(&conn, now, &format!("round {round}"));
        }
        // One host's last two hours lift it from nowhere to first place.
        conn.execute(
            "INSERT INTO remote_host_hours (remote_host_id, hour, bytes_up, bytes_down, flows_new)
             VALUES (299, ?1, 1000000000, 0, 1)",
            [hour_start(now)],
        )
        .unwrap();
        check(&conn, now, "a new heavy host");
        assert_eq!(cache.lock().len(), SETTLED_ENTRIES, "one entry per window");
        // The hours turn: each window's settled sums roll on by one hour (an hour with
        // rows settles, older rows leave, hosts whose last row left drop out)…
        for turn in 0..4 {
            now += HOUR_MS;
            add(&conn, now, 300, 0, 1, 30);
            check(&conn, now, &format!("hour turn {turn}"));
            assert!(
                cache.lock().iter().all(|s| s.rolled),
                "turn {turn}: rolled on, not read again"
            );
            add(&conn, now, 300, 0, 1, 30);
            check(&conn, now, &format!("hour turn {turn}, later"));
        }
        // …until retention removes rows inside a window: that one is read again.
        conn.execute(
            "DELETE FROM remote_host_hours WHERE hour < ?1",
            [now - 20 * DAY_MS],
        )
        .unwrap();
        now += HOUR_MS;
        add(&conn, now, 300, 0, 1, 30);
        check(&conn, now, "retention inside the 30-day window");
        let mut entries: Vec<(i64, bool)> =
            cache.lock().iter().map(|s| (s.since, s.rolled)).collect();
        entries.sort_unstable();
        assert_eq!(
            entries.iter().map(|e| e.1).collect::<Vec<_>>(),
            [false, true, true],
            "30 d read again, 7 d and 24 h rolled on"
        );
        assert_eq!(cache.lock().len(), SETTLED_ENTRIES, "one entry per window");
    }

    #[test]
    fn windows_round_trip_and_pick_rollups() {
        for w in Window::ALL {
            assert_eq!(Window::parse(w.as_str()), Some(w));
        }
        assert_eq!(Window::parse("2h"), None);
        assert!(!Window::H1.hourly() && Window::H24.hourly());
        let r = Range::new(90_000, 90_000 + HOUR_MS);
        assert_eq!((r.since, r.bucket_ms), (60_000, MINUTE_MS));
        assert!(Range::new(0, 7 * HOUR_MS).hourly());
    }

    #[test]
    fn series_and_tops_read_the_rollups() {
        let (_dir, conn) = temp_db("overview-data");
        conn.execute_batch(
            "INSERT INTO devices (id, ip, name, first_seen, last_seen) VALUES
               (1, '10.0.0.5', 'laptop', 0, 1000), (2, '10.0.0.6', NULL, 0, 1000);
             INSERT INTO device_minutes (device_id, minute, bytes_up, bytes_down, flows_new) VALUES
               (1, 60000, 100, 1000, 3), (2, 60000, 500, 10, 1), (1, 120000, 1, 1, 2);
             INSERT INTO device_hours (device_id, hour, bytes_up, bytes_down, flows_new) VALUES
               (1, 0, 101, 1001, 5), (2, 0, 500, 10, 1);
             INSERT INTO interface_minutes (interface, minute, role, rx_bytes, tx_bytes) VALUES
               ('wan', 60000, 'wan', 7, 3), ('lan', 60000, 'lan', 99, 99), ('wan', 120000, 'wan', 1, 2);
             INSERT INTO dns_device_minutes (device_id, minute, queries, nxdomain, names) VALUES
               (1, 60000, 4, 1, 2), (2, 60000, 6, 0, 1);",
        )
        .unwrap();
        let r = Range::new(0, 180_000);
        assert_eq!(
            wan_traffic(&conn, &r).unwrap(),
            [
                TrafficBucket {
                    t: 60_000,
                    up: 3,
                    down: 7
                },
                TrafficBucket {
                    t: 120_000,
                    up: 2,
                    down: 1
                }
            ]
        );
        let flows: Vec<_> = flows_started(&conn, &r)
            .unwrap()
            .iter()
            .map(|b| (b.t, b.total))
            .collect();
        assert_eq!(flows, [(60_000, 4), (120_000, 2)]);
        let dns = dns_queries(&conn, &r).unwrap();
        assert_eq!((dns[0].total, dns[0].part), (10, Some(1)));
        let talkers = top_devices(&conn, 0, false, DeviceRank::Total, 10).unwrap();
        assert_eq!(talkers[0].label.as_deref(), Some("laptop"));
        let egress = top_devices(&conn, 0, true, DeviceRank::Egress, 10).unwrap();
        assert_eq!(egress[0].device_id, 2);
        assert_eq!(egress[0].label.as_deref(), Some("10.0.0.6"));
    }
}
