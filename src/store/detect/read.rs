//! Over 800 lines: an incident page reads hits, incidents and rules together, and a
//! fifth of the file is their tests.
//!
//! Reads of the detection tables: hits (`/anomalies`, `/api/hits`), incidents
//! (`/incidents`, `/incidents/{id}`, the "Alerts: N" badge) and rules (`/rules`), over the
//! tables of `migrations/0006_detect.sql`.
//!
//! The filters are built by `crate::web::query` from a query string; every value reaches
//! SQLite as a bound parameter, and user text in `LIKE` is escaped.

use std::net::IpAddr;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use serde::{Deserialize, Serialize};

use crate::detect::Code;
use crate::detect::rules::RuleSpec;
use crate::store::addr::{blob_or_text, ip_text};
use crate::store::devices::device_label_sql;
use crate::store::filter::{DEFAULT_PER_PAGE, Window, escape_like, page_count};

/// Most rules listed (a household has a handful; this bounds a runaway script).
pub const MAX_RULES: u32 = 1000;
/// Hits, flows and DNS answers shown on one incident page.
pub const MAX_INCIDENT_HITS: u32 = 200;
pub const MAX_INCIDENT_FLOWS: u32 = 100;
pub const MAX_INCIDENT_ANSWERS: u32 = 100;
/// DNS answers are looked for from this long before an incident's first hit.
const ANSWERS_BEFORE_MS: i64 = 60 * 60_000;

/// What to call the row's device (as `DeviceRow::label`), "a removed device" for a device
/// row that is gone, NULL for a row of no device (a rule for every device).
const DEVICE_LABEL: &str = concat!(
    "CASE WHEN x.device_id IS NOT NULL THEN coalesce(",
    device_label_sql!(),
    ", 'a removed device') END"
);

/// Where a hit went: an exact remote address, or a domain and its subdomains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Ip(IpAddr),
    Domain(String),
}

// ---------------------------------------------------------------------------------------
// Hits (`/anomalies`, `/api/hits`)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckState {
    #[default]
    All,
    Open,
    Acked,
}

impl AckState {
    pub fn as_str(self) -> &'static str {
        match self {
            AckState::All => "all",
            AckState::Open => "open",
            AckState::Acked => "acked",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HitSort {
    #[default]
    Time,
    Score,
    Count,
}

impl HitSort {
    pub const ALL: [HitSort; 3] = [HitSort::Time, HitSort::Score, HitSort::Count];

    pub fn as_str(self) -> &'static str {
        match self {
            HitSort::Time => "time",
            HitSort::Score => "score",
            HitSort::Count => "count",
        }
    }

    fn column(self) -> &'static str {
        match self {
            HitSort::Time => "x.last_ts",
            HitSort::Score => "x.score",
            HitSort::Count => "x.count",
        }
    }
}

/// A parsed, bounded hit filter; the default is the last 24 h, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitFilter {
    /// Hits seen (`last_ts`) within this window.
    pub window: Window,
    pub min_score: Option<u32>,
    pub code: Option<Code>,
    pub device_id: Option<i64>,
    pub ack: AckState,
    pub dst: Option<Destination>,
    pub sort: HitSort,
    pub desc: bool,
    pub page: u32,
    pub per_page: u32,
}

impl Default for HitFilter {
    fn default() -> Self {
        HitFilter {
            window: Window::DEFAULT,
            min_score: None,
            code: None,
            device_id: None,
            ack: AckState::All,
            dst: None,
            sort: HitSort::Time,
            desc: true,
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

/// One reason of a stored hit (`hits.reasons` JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReason {
    pub code: String,
    pub weight: i64,
    pub evidence: String,
}

/// A `hits` row with its device's name.
#[derive(Debug, Clone, Serialize)]
pub struct HitRow {
    pub id: i64,
    pub ts: i64,
    pub last_ts: i64,
    pub count: i64,
    pub device_id: i64,
    pub device: String,
    pub flow_id: Option<i64>,
    pub remote_host_id: Option<i64>,
    pub remote_ip: Option<String>,
    pub proto: Option<u8>,
    pub dport: Option<u16>,
    pub domain: Option<String>,
    pub score: i64,
    pub codes: Vec<String>,
    pub reasons: Vec<StoredReason>,
    pub alertable: bool,
    pub incident_id: Option<i64>,
    pub acked_at: Option<i64>,
}

const HIT_COLUMNS: &str = "x.id, x.ts, x.last_ts, x.count, x.device_id, x.flow_id, \
    x.remote_host_id, x.remote_ip, x.proto, x.dport, x.domain, x.score, x.codes, x.reasons, \
    x.alertable, x.incident_id, x.acked_at";

fn codes_list(text: String) -> Vec<String> {
    text.split(',')
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn hit_row(r: &Row) -> rusqlite::Result<HitRow> {
    let reasons: String = r.get(13)?;
    Ok(HitRow {
        id: r.get(0)?,
        ts: r.get(1)?,
        last_ts: r.get(2)?,
        count: r.get(3)?,
        device_id: r.get(4)?,
        flow_id: r.get(5)?,
        remote_host_id: r.get(6)?,
        remote_ip: r.get(7)?,
        proto: r.get(8)?,
        dport: r.get(9)?,
        domain: r.get(10)?,
        score: r.get(11)?,
        codes: codes_list(r.get(12)?),
        // Written by the engine; a row it cannot have written shows no reasons rather
        // than failing the page.
        reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        alertable: r.get(14)?,
        incident_id: r.get(15)?,
        acked_at: r.get(16)?,
        device: r.get(17)?,
    })
}

/// `codes` (sorted, comma-separated) contains `code`.
pub(crate) fn code_clause(column: &str) -> String {
    format!("(',' || {column} || ',') LIKE ? ESCAPE '\\'")
}

pub(crate) fn code_param(code: Code) -> Value {
    Value::Text(format!("%,{},%", escape_like(code.as_str())))
}

fn hits_where(f: &HitFilter, now: i64) -> (String, Vec<Value>) {
    let mut clauses = vec!["x.last_ts >= ?".to_owned()];
    let mut params = vec![Value::Integer(now - f.window.ms())];
    if let Some(s) = f.min_score {
        clauses.push("x.score >= ?".into());
        params.push(Value::Integer(s.into()));
    }
    if let Some(c) = f.code {
        clauses.push(code_clause("x.codes"));
        params.push(code_param(c));
    }
    if let Some(d) = f.device_id {
        clauses.push("x.device_id = ?".into());
        params.push(Value::Integer(d));
    }
    match f.ack {
        AckState::All => {}
        AckState::Open => clauses.push("x.acked_at IS NULL".into()),
        AckState::Acked => clauses.push("x.acked_at IS NOT NULL".into()),
    }
    match &f.dst {
        None => {}
        Some(Destination::Ip(ip)) => {
            clauses.push("x.remote_ip = ?".into());
            params.push(Value::Text(ip.to_string()));
        }
        Some(Destination::Domain(d)) => {
            clauses.push("(x.domain = ? OR x.domain LIKE ? ESCAPE '\\')".into());
            params.push(Value::Text(d.clone()));
            params.push(Value::Text(format!("%.{}", escape_like(d))));
        }
    }
    (clauses.join(" AND "), params)
}

/// One page of hits.
#[derive(Debug, Clone, Serialize)]
pub struct HitPage {
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
    pub hits: Vec<HitRow>,
}

impl HitPage {
    pub fn pages(&self) -> u32 {
        page_count(self.total, self.per_page)
    }
}

pub fn hits(conn: &Connection, f: &HitFilter, now: i64) -> rusqlite::Result<HitPage> {
    let (clause, mut params) = hits_where(f, now);
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM hits x WHERE {clause}"))?
        .query_row(params_from_iter(params.iter()), |r| r.get(0))?;
    let order = if f.desc { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT {HIT_COLUMNS}, {DEVICE_LABEL} FROM hits x LEFT JOIN devices d ON d.id = x.device_id \
         WHERE {clause} ORDER BY {} {order}, x.id {order} LIMIT ? OFFSET ?",
        f.sort.column()
    );
    params.push(Value::Integer(f.per_page.into()));
    params.push(Value::Integer(
        i64::from(f.page - 1) * i64::from(f.per_page),
    ));
    let hits = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(params.iter()), hit_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(HitPage {
        total: u64::try_from(total).unwrap_or(0),
        page: f.page,
        per_page: f.per_page,
        hits,
    })
}

pub fn hit(conn: &Connection, id: i64) -> rusqlite::Result<Option<HitRow>> {
    conn.prepare_cached(&format!(
        "SELECT {HIT_COLUMNS}, {DEVICE_LABEL} FROM hits x LEFT JOIN devices d ON d.id = x.device_id \
         WHERE x.id = ?"
    ))?
    .query_row([id], hit_row)
    .optional()
}

// ---------------------------------------------------------------------------------------
// Incidents (`/incidents`, `/api/incidents`, `/incidents/{id}`, the badge)
// ---------------------------------------------------------------------------------------

/// Which incidents by state. Open: neither acknowledged nor muted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncidentState {
    #[default]
    Open,
    Acked,
    Muted,
    All,
}

impl IncidentState {
    pub const ALL: [IncidentState; 4] = [
        IncidentState::Open,
        IncidentState::Acked,
        IncidentState::Muted,
        IncidentState::All,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acked => "acked",
            IncidentState::Muted => "muted",
            IncidentState::All => "all",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncidentSort {
    #[default]
    Last,
    First,
    Score,
    Count,
}

impl IncidentSort {
    pub const ALL: [IncidentSort; 4] = [
        IncidentSort::Last,
        IncidentSort::First,
        IncidentSort::Score,
        IncidentSort::Count,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentSort::Last => "last",
            IncidentSort::First => "first",
            IncidentSort::Score => "score",
            IncidentSort::Count => "count",
        }
    }

    fn column(self) -> &'static str {
        match self {
            IncidentSort::Last => "x.last_seen",
            IncidentSort::First => "x.first_seen",
            IncidentSort::Score => "x.max_score",
            IncidentSort::Count => "x.count",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentFilter {
    /// Incidents seen (`last_seen`) within this window.
    pub window: Window,
    pub state: IncidentState,
    pub code: Option<Code>,
    pub device_id: Option<i64>,
    pub min_score: Option<u32>,
    pub sort: IncidentSort,
    pub desc: bool,
    pub page: u32,
    pub per_page: u32,
}

impl Default for IncidentFilter {
    fn default() -> Self {
        IncidentFilter {
            window: Window::DEFAULT,
            state: IncidentState::Open,
            code: None,
            device_id: None,
            min_score: None,
            sort: IncidentSort::Last,
            desc: true,
            page: 1,
            per_page: DEFAULT_PER_PAGE,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentRow {
    pub id: i64,
    pub device_id: i64,
    pub device: String,
    pub remote_ip: Option<String>,
    pub proto: Option<u8>,
    pub dport: Option<u16>,
    pub codes: Vec<String>,
    pub title: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub count: i64,
    pub max_score: i64,
    pub acked_at: Option<i64>,
    pub muted_until: Option<i64>,
    pub notes: String,
}

impl IncidentRow {
    /// Muted at `now` (and not acknowledged).
    pub fn muted(&self, now: i64) -> bool {
        self.acked_at.is_none() && self.muted_until.is_some_and(|m| m > now)
    }
}

const INCIDENT_COLUMNS: &str = "x.id, x.device_id, x.remote_ip, x.proto, x.dport, x.codes, \
    x.title, x.first_seen, x.last_seen, x.count, x.max_score, x.acked_at, x.muted_until, x.notes";

fn incident_row(r: &Row) -> rusqlite::Result<IncidentRow> {
    Ok(IncidentRow {
        id: r.get(0)?,
        device_id: r.get(1)?,
        remote_ip: r.get(2)?,
        proto: r.get(3)?,
        dport: r.get(4)?,
        codes: codes_list(r.get(5)?),
        title: r.get(6)?,
        first_seen: r.get(7)?,
        last_seen: r.get(8)?,
        count: r.get(9)?,
        max_score: r.get(10)?,
        acked_at: r.get(11)?,
        muted_until: r.get(12)?,
        notes: r.get(13)?,
        device: r.get(14)?,
    })
}

/// "Open": not acknowledged, not muted at `?` (uses `incidents_open`).
const OPEN: &str = "x.acked_at IS NULL AND (x.muted_until IS NULL OR x.muted_until <= ?)";

fn incidents_where(f: &IncidentFilter, now: i64) -> (String, Vec<Value>) {
    let mut clauses = vec!["x.last_seen >= ?".to_owned()];
    let mut params = vec![Value::Integer(now - f.window.ms())];
    match f.state {
        IncidentState::Open => {
            clauses.push(OPEN.into());
            params.push(Value::Integer(now));
        }
        IncidentState::Acked => clauses.push("x.acked_at IS NOT NULL".into()),
        IncidentState::Muted => {
            clauses.push("x.acked_at IS NULL AND x.muted_until > ?".into());
            params.push(Value::Integer(now));
        }
        IncidentState::All => {}
    }
    if let Some(c) = f.code {
        clauses.push(code_clause("x.codes"));
        params.push(code_param(c));
    }
    if let Some(d) = f.device_id {
        clauses.push("x.device_id = ?".into());
        params.push(Value::Integer(d));
    }
    if let Some(s) = f.min_score {
        clauses.push("x.max_score >= ?".into());
        params.push(Value::Integer(s.into()));
    }
    (clauses.join(" AND "), params)
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentPage {
    pub total: u64,
    pub page: u32,
    pub per_page: u32,
    pub incidents: Vec<IncidentRow>,
}

impl IncidentPage {
    pub fn pages(&self) -> u32 {
        page_count(self.total, self.per_page)
    }
}

pub fn incidents(
    conn: &Connection,
    f: &IncidentFilter,
    now: i64,
) -> rusqlite::Result<IncidentPage> {
    let (clause, mut params) = incidents_where(f, now);
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM incidents x WHERE {clause}"))?
        .query_row(params_from_iter(params.iter()), |r| r.get(0))?;
    let order = if f.desc { "DESC" } else { "ASC" };
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS}, {DEVICE_LABEL} FROM incidents x \
         LEFT JOIN devices d ON d.id = x.device_id \
         WHERE {clause} ORDER BY {} {order}, x.id {order} LIMIT ? OFFSET ?",
        f.sort.column()
    );
    params.push(Value::Integer(f.per_page.into()));
    params.push(Value::Integer(
        i64::from(f.page - 1) * i64::from(f.per_page),
    ));
    let incidents = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(params.iter()), incident_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(IncidentPage {
        total: u64::try_from(total).unwrap_or(0),
        page: f.page,
        per_page: f.per_page,
        incidents,
    })
}

pub fn incident(conn: &Connection, id: i64) -> rusqlite::Result<Option<IncidentRow>> {
    conn.prepare_cached(&format!(
        "SELECT {INCIDENT_COLUMNS}, {DEVICE_LABEL} FROM incidents x \
         LEFT JOIN devices d ON d.id = x.device_id WHERE x.id = ?"
    ))?
    .query_row([id], incident_row)
    .optional()
}

/// Incidents neither acknowledged nor muted at `now`: the "Alerts: N" badge. One range
/// of the `incidents_open` index (`acked_at IS NULL`), so it stays cheap however many
/// acknowledged incidents are kept.
pub fn open_incidents(conn: &Connection, now: i64) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM incidents x WHERE {OPEN}"))?
        .query_row([now], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Incidents not acknowledged, muted or not (what "acknowledge all" would change).
pub fn unacked_incidents(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM incidents WHERE acked_at IS NULL")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Acknowledged incidents (what "clear acknowledged" would delete).
pub fn acked_incidents(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM incidents WHERE acked_at IS NOT NULL")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// A flow behind an incident's hits.
#[derive(Debug, Clone, Serialize)]
pub struct CauseFlow {
    pub id: i64,
    pub proto: u8,
    pub src_ip: String,
    pub src_port: Option<u16>,
    pub dst_ip: String,
    pub dst_port: Option<u16>,
    pub domain: Option<String>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub ended_at: Option<i64>,
    pub bytes_up: i64,
    pub bytes_down: i64,
    pub state: Option<String>,
}

/// A DNS answer the incident's device got for one of its remote addresses.
#[derive(Debug, Clone, Serialize)]
pub struct CauseAnswer {
    pub ts: i64,
    pub client: String,
    pub ip: String,
    pub name: String,
    pub canonical: Option<String>,
    pub ttl: Option<i64>,
}

/// Everything the incident page shows.
#[derive(Debug, Clone)]
pub struct IncidentDetail {
    pub incident: IncidentRow,
    /// Oldest first (a timeline).
    pub hits: Vec<HitRow>,
    pub flows: Vec<CauseFlow>,
    /// The hits are device-level (a scan, a fan-out: no flow of their own), so `flows`
    /// are the device's outbound flows from [`DEVICE_FLOWS_BEFORE_MS`] before the first
    /// hit to the last.
    pub device_window: bool,
    pub answers: Vec<CauseAnswer>,
}

/// How far before a device-level incident its device's flows are shown: the default
/// scan window (`[detect] scan_window_s`).
pub const DEVICE_FLOWS_BEFORE_MS: i64 = 10 * 60_000;
/// Remote addresses whose DNS answers the incident page looks up.
const MAX_ANSWER_ADDRS: usize = 50;

const CAUSE_FLOW_COLUMNS: &str = "f.id, f.proto, f.src_ip, f.src_port, f.dst_ip, f.dst_port, \
    n.name, f.first_seen, f.last_seen, f.ended_at, f.bytes_up, f.bytes_down, f.state";

fn cause_flow(r: &Row) -> rusqlite::Result<CauseFlow> {
    Ok(CauseFlow {
        id: r.get(0)?,
        proto: r.get(1)?,
        src_ip: ip_text(r.get_ref(2)?).unwrap_or_default(),
        src_port: r.get(3)?,
        dst_ip: ip_text(r.get_ref(4)?).unwrap_or_default(),
        dst_port: r.get(5)?,
        domain: r.get(6)?,
        first_seen: r.get(7)?,
        last_seen: r.get(8)?,
        ended_at: r.get(9)?,
        bytes_up: r.get(10)?,
        bytes_down: r.get(11)?,
        state: r
            .get::<_, Option<u8>>(12)?
            .map(|s| crate::flow::tcp_state_name(s).to_owned()),
    })
}

pub fn incident_detail(conn: &Connection, id: i64) -> rusqlite::Result<Option<IncidentDetail>> {
    let Some(incident) = incident(conn, id)? else {
        return Ok(None);
    };
    let hits = incident_hits(conn, id)?;
    let device_window = !hits.is_empty() && hits.iter().all(|h| h.flow_id.is_none());
    let flows = cause_flows(conn, &incident, device_window)?;
    let answers = cause_answers(conn, &incident, &hits, &flows)?;
    Ok(Some(IncidentDetail {
        incident,
        hits,
        flows,
        device_window,
        answers,
    }))
}

/// The incident's hits, oldest first.
fn incident_hits(conn: &Connection, id: i64) -> rusqlite::Result<Vec<HitRow>> {
    conn.prepare_cached(&format!(
        "SELECT {HIT_COLUMNS}, {DEVICE_LABEL} FROM hits x \
         LEFT JOIN devices d ON d.id = x.device_id \
         WHERE x.incident_id = ? ORDER BY x.ts, x.id LIMIT ?"
    ))?
    .query_map(params![id, MAX_INCIDENT_HITS], hit_row)?
    .collect()
}

/// The flows behind the incident: those its hits name, or — when no hit names a flow
/// (`device_window`) — the device's outbound flows around the incident.
fn cause_flows(
    conn: &Connection,
    incident: &IncidentRow,
    device_window: bool,
) -> rusqlite::Result<Vec<CauseFlow>> {
    let id = incident.id;
    Ok(if device_window {
        // `flows_device_last_seen` (device_id, last_seen, …): a flow's last activity is
        // never before its start.
        conn.prepare_cached(&format!(
            "SELECT {CAUSE_FLOW_COLUMNS} FROM flows f LEFT JOIN dns_names n ON n.id = f.qname_id \
             WHERE f.device_id = ?1 AND f.last_seen >= ?2 AND f.first_seen BETWEEN ?2 AND ?3 \
               AND f.direction = 0 \
             ORDER BY f.first_seen, f.id LIMIT ?4"
        ))?
        .query_map(
            params![
                incident.device_id,
                incident.first_seen - DEVICE_FLOWS_BEFORE_MS,
                incident.last_seen,
                MAX_INCIDENT_FLOWS
            ],
            cause_flow,
        )?
        .collect::<rusqlite::Result<_>>()?
    } else {
        conn.prepare_cached(&format!(
            "SELECT {CAUSE_FLOW_COLUMNS} FROM flows f LEFT JOIN dns_names n ON n.id = f.qname_id \
             WHERE f.id IN (SELECT flow_id FROM hits WHERE incident_id = ? AND flow_id IS NOT NULL) \
             ORDER BY f.first_seen, f.id LIMIT ?"
        ))?
        .query_map(params![id, MAX_INCIDENT_FLOWS], cause_flow)?
        .collect::<rusqlite::Result<_>>()?
    })
}

/// The DNS answers that led the device to the addresses involved.
fn cause_answers(
    conn: &Connection,
    incident: &IncidentRow,
    hits: &[HitRow],
    flows: &[CauseFlow],
) -> rusqlite::Result<Vec<CauseAnswer>> {
    // The answers this device got for the remote addresses involved, from an hour before
    // the incident began to its end (`dns_answers_ip`: ip, query).
    let mut addrs: Vec<String> = Vec::new();
    let involved = [incident.remote_ip.clone()]
        .into_iter()
        .flatten()
        .chain(hits.iter().filter_map(|h| h.remote_ip.clone()))
        .chain(flows.iter().map(|f| f.dst_ip.clone()));
    for ip in involved {
        if addrs.len() < MAX_ANSWER_ADDRS && !addrs.contains(&ip) {
            addrs.push(ip);
        }
    }
    Ok(if addrs.is_empty() {
        Vec::new()
    } else {
        let placeholders = vec!["?"; addrs.len()].join(", ");
        let mut values: Vec<Value> = addrs.iter().map(|ip| blob_or_text(ip)).collect();
        values.extend([
            Value::Integer(incident.device_id),
            Value::Integer(incident.first_seen - ANSWERS_BEFORE_MS),
            Value::Integer(incident.last_seen),
            Value::Integer(MAX_INCIDENT_ANSWERS.into()),
        ]);
        // Not cached: one SQL text per number of addresses.
        conn.prepare(&format!(
            "SELECT x.ts, x.client, a.ip, q.name, c.name, a.ttl FROM dns_answers a \
             JOIN dns_queries x ON x.id = a.query_id \
             JOIN dns_names q ON q.id = x.qname_id LEFT JOIN dns_names c ON c.id = x.cname_id \
             WHERE a.ip IN ({placeholders}) AND x.device_id = ? AND x.ts BETWEEN ? AND ? \
             ORDER BY x.ts DESC LIMIT ?"
        ))?
        .query_map(params_from_iter(values.iter()), |r| {
            Ok(CauseAnswer {
                ts: r.get(0)?,
                client: ip_text(r.get_ref(1)?).unwrap_or_default(),
                ip: ip_text(r.get_ref(2)?).unwrap_or_default(),
                name: r.get(3)?,
                canonical: r.get(4)?,
                ttl: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?
    })
}

// ---------------------------------------------------------------------------------------
// Rules (`/rules`, `/api/rules`)
// ---------------------------------------------------------------------------------------

/// A `rules` row.
#[derive(Debug, Clone, Serialize)]
pub struct RuleRow {
    pub id: i64,
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// The scoped device's name (`None`: every device).
    pub device: Option<String>,
    pub created_at: i64,
    pub matched: i64,
    pub last_matched: Option<i64>,
}

const RULE_COLUMNS: &str = "x.id, x.action, x.code, x.device_id, x.remote, x.asn, x.org, \
    x.domain, x.proto, x.port_lo, x.port_hi, x.expires_at, x.notes, x.created_at, x.matched, \
    x.last_matched";

fn rule_row(r: &Row) -> rusqlite::Result<RuleRow> {
    let spec = super::rule_spec(r)?;
    Ok(RuleRow {
        id: r.get(0)?,
        device: spec.device_id.map(|_| r.get(16)).transpose()?,
        spec,
        created_at: r.get(13)?,
        matched: r.get(14)?,
        last_matched: r.get(15)?,
    })
}

/// Every rule (up to [`MAX_RULES`]), oldest first.
pub fn rules(conn: &Connection) -> rusqlite::Result<Vec<RuleRow>> {
    conn.prepare_cached(&format!(
        "SELECT {RULE_COLUMNS}, {DEVICE_LABEL} FROM rules x \
         LEFT JOIN devices d ON d.id = x.device_id ORDER BY x.id LIMIT ?"
    ))?
    .query_map([MAX_RULES], rule_row)?
    .collect()
}

pub fn rule(conn: &Connection, id: i64) -> rusqlite::Result<Option<RuleRow>> {
    conn.prepare_cached(&format!(
        "SELECT {RULE_COLUMNS}, {DEVICE_LABEL} FROM rules x \
         LEFT JOIN devices d ON d.id = x.device_id WHERE x.id = ?"
    ))?
    .query_row([id], rule_row)
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::Action;
    use crate::store::testdata::temp_db;
    use crate::web::query::{HitQuery, IncidentQuery};

    const NOW: i64 = 1_714_568_645_000;

    fn seed(conn: &Connection) {
        conn.execute_batch(&format!(
            "INSERT INTO devices (id, ip, name, hostname, first_seen, last_seen) VALUES
               (1, '10.0.0.5', NULL, 'laptop', 0, 0), (2, '10.0.0.6', 'tv', NULL, 0, 0);
             INSERT INTO hits (id, ts, last_ts, count, device_id, remote_ip, proto, dport, domain,
                               score, codes, reasons, fingerprint, alertable, incident_id, acked_at) VALUES
               (1, {a}, {a}, 1, 1, '198.51.100.1', 6, 8443, 'x.cdn.example', 60, 'NEW_DST,RARE_PORT',
                '[{{\"code\":\"RARE_PORT\",\"weight\":25,\"evidence\":\"port 8443\"}}]', 'f1', 1, 1, NULL),
               (2, {b}, {b}, 5, 2, '198.51.100.2', 17, 53, 'a_b.test', 90, 'PORT_SCAN_LIKE',
                '[]', 'f2', 1, 2, {b}),
               (3, {old}, {old}, 1, 1, '198.51.100.3', 6, 22, NULL, 40, 'NEW_DST', '[]', 'f3', 0, NULL, NULL);
             INSERT INTO incidents (id, fingerprint, device_id, remote_ip, codes, title, first_seen,
                                    last_seen, count, max_score, acked_at, muted_until) VALUES
               (1, 'i1', 1, '198.51.100.1', 'NEW_DST,RARE_PORT', 'rare port', {a}, {a}, 1, 60, NULL, NULL),
               (2, 'i2', 2, NULL, 'PORT_SCAN_LIKE', 'scan', {b}, {b}, 5, 90, {b}, NULL),
               (3, 'i3', 1, NULL, 'BEACON', 'beacon', {a}, {a}, 2, 70, NULL, {future});
             INSERT INTO rules (id, action, code, device_id, remote, port_lo, port_hi, created_at) VALUES
               (1, 'suppress', 'NO_RDNS', 2, '198.51.100.0/24', 6881, 6889, 0),
               (2, 'allow', NULL, NULL, '198.51.100.7', NULL, NULL, 0);",
            a = NOW - 60_000,
            b = NOW - 120_000,
            old = NOW - 3 * 86_400_000,
            future = NOW + 3_600_000,
        ))
        .unwrap();
    }

    fn hit_ids(conn: &Connection, q: HitQuery) -> Vec<i64> {
        let f = HitFilter::parse(&q).unwrap();
        hits(conn, &f, NOW)
            .unwrap()
            .hits
            .iter()
            .map(|h| h.id)
            .collect()
    }

    #[test]
    fn hit_filters_and_sorts() {
        let (_dir, conn) = temp_db("detect-hits");
        seed(&conn);
        let q = |f: fn(&mut HitQuery)| {
            let mut q = HitQuery::default();
            f(&mut q);
            q
        };
        assert_eq!(hit_ids(&conn, HitQuery::default()), [1, 2]);
        assert_eq!(
            hit_ids(&conn, q(|q| q.window = Some("7d".into()))),
            [1, 2, 3]
        );
        assert_eq!(hit_ids(&conn, q(|q| q.sort = Some("score".into()))), [2, 1]);
        assert_eq!(
            hit_ids(
                &conn,
                q(|q| {
                    q.sort = Some("count".into());
                    q.order = Some("asc".into());
                })
            ),
            [1, 2]
        );
        assert_eq!(
            hit_ids(&conn, q(|q| q.code = Some("rare_port".into()))),
            [1]
        );
        assert_eq!(hit_ids(&conn, q(|q| q.min_score = Some("61".into()))), [2]);
        assert_eq!(hit_ids(&conn, q(|q| q.ack = Some("acked".into()))), [2]);
        assert_eq!(hit_ids(&conn, q(|q| q.device = Some("1".into()))), [1]);
        assert_eq!(
            hit_ids(&conn, q(|q| q.dst = Some("198.51.100.2".into()))),
            [2]
        );
        assert_eq!(
            hit_ids(&conn, q(|q| q.dst = Some("cdn.example".into()))),
            [1]
        );
        assert_eq!(hit_ids(&conn, q(|q| q.dst = Some("a_b.test".into()))), [2]);
        // LIKE metacharacters are literal.
        assert_eq!(
            hit_ids(&conn, q(|q| q.dst = Some("%".into()))),
            Vec::<i64>::new()
        );
        let h = hit(&conn, 1).unwrap().unwrap();
        assert_eq!(h.device, "laptop");
        assert_eq!(h.codes, ["NEW_DST", "RARE_PORT"]);
        assert_eq!(h.reasons[0].evidence, "port 8443");
    }

    #[test]
    fn incident_states_and_badge() {
        let (_dir, conn) = temp_db("detect-incidents");
        seed(&conn);
        let ids = |state: &str| {
            let f = IncidentFilter::parse(&IncidentQuery {
                state: Some(state.into()),
                ..IncidentQuery::default()
            })
            .unwrap();
            incidents(&conn, &f, NOW)
                .unwrap()
                .incidents
                .iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("open"), [1]);
        assert_eq!(ids("acked"), [2]);
        assert_eq!(ids("muted"), [3]);
        assert_eq!(ids("all"), [3, 1, 2]);
        assert_eq!(open_incidents(&conn, NOW).unwrap(), 1);
        // The mute ran out.
        assert_eq!(open_incidents(&conn, NOW + 7_200_000).unwrap(), 2);
        assert_eq!(acked_incidents(&conn).unwrap(), 1);
        let plan: String = conn
            .query_row(
                &format!("EXPLAIN QUERY PLAN SELECT COUNT(*) FROM incidents x WHERE {OPEN}"),
                [NOW],
                |r| r.get(3),
            )
            .unwrap();
        assert!(plan.contains("incidents_open"), "{plan}");
    }

    #[test]
    fn incident_detail_gathers_hits_flows_and_answers() {
        let (_dir, conn) = temp_db("detect-detail");
        seed(&conn);
        conn.execute_batch(&format!(
            "INSERT INTO flows (id, ident, ct_id, proto, direction, src_ip, src_port, dst_ip,
                                dst_port, reply_dst_ip, status, first_seen, last_seen, device_id)
               VALUES (9, 9, 9, 6, 0, netmon_ip_blob('10.0.0.5'), 40000,
                       netmon_ip_blob('198.51.100.1'), 8443, netmon_ip_blob('203.0.113.1'), 0,
                       {a}, {a}, 1);
             UPDATE hits SET flow_id = 9 WHERE id = 1;
             INSERT INTO dns_names (id, name) VALUES (50, 'x.cdn.example');
             INSERT INTO dns_queries (id, ts, client, device_id, qname_id, qtype, answers, source)
               VALUES (1, {a}, netmon_ip_blob('10.0.0.5'), 1, 50, 1, 1, 0),
                      (2, {a}, netmon_ip_blob('10.0.0.6'), 2, 50, 1, 1, 0),
                      (3, {early}, netmon_ip_blob('10.0.0.5'), 1, 50, 1, 1, 0);
             INSERT INTO dns_answers (query_id, ip, client, ttl) VALUES
               (1, netmon_ip_blob('198.51.100.1'), netmon_ip_blob('10.0.0.5'), 60),
               (2, netmon_ip_blob('198.51.100.1'), netmon_ip_blob('10.0.0.6'), 60),
               (3, netmon_ip_blob('198.51.100.1'), netmon_ip_blob('10.0.0.5'), 60);",
            a = NOW - 60_000,
            early = NOW - 60_000 - 2 * 3_600_000,
        ))
        .unwrap();
        let d = incident_detail(&conn, 1).unwrap().unwrap();
        assert_eq!(d.incident.device, "laptop");
        assert_eq!(d.hits.len(), 1);
        assert_eq!(d.flows.len(), 1);
        assert_eq!(d.flows[0].domain, None);
        assert_eq!(d.answers.len(), 1, "{:?}", d.answers);
        assert_eq!(d.answers[0].client, "10.0.0.5");
        assert!(!d.device_window);
        assert!(incident_detail(&conn, 99).unwrap().is_none());
        // A device-level incident: the device's outbound flows around it instead.
        conn.execute_batch(&format!(
            "INSERT INTO flows (id, ident, ct_id, proto, direction, src_ip, src_port, dst_ip,
                                dst_port, reply_dst_ip, status, first_seen, last_seen, device_id)
               VALUES (10, 10, 10, 6, 0, netmon_ip_blob('10.0.0.6'), 40001,
                       netmon_ip_blob('198.51.100.9'), 22, netmon_ip_blob('203.0.113.1'), 0,
                       {b}, {b}, 2),
                      (11, 11, 11, 6, 0, netmon_ip_blob('10.0.0.6'), 40002,
                       netmon_ip_blob('198.51.100.9'), 23, netmon_ip_blob('203.0.113.1'), 0,
                       {long_before}, {long_before}, 2),
                      (12, 12, 12, 17, 2, netmon_ip_blob('10.0.0.6'), 40003,
                       netmon_ip_blob('10.0.0.1'), 53, NULL, 0, {b}, {b}, 2);
             INSERT INTO dns_queries (id, ts, client, device_id, qname_id, qtype, answers, source)
               VALUES (4, {b}, netmon_ip_blob('10.0.0.6'), 2, 50, 1, 1, 0);
             INSERT INTO dns_answers (query_id, ip, client, ttl) VALUES
               (4, netmon_ip_blob('198.51.100.9'), netmon_ip_blob('10.0.0.6'), 60);",
            b = NOW - 120_000,
            long_before = NOW - 120_000 - DEVICE_FLOWS_BEFORE_MS - 1,
        ))
        .unwrap();
        let d = incident_detail(&conn, 2).unwrap().unwrap();
        assert!(d.device_window);
        assert_eq!(d.flows.iter().map(|f| f.id).collect::<Vec<_>>(), [10]);
        assert_eq!(d.answers.len(), 1);
        assert_eq!(d.answers[0].ip, "198.51.100.9");
    }

    #[test]
    fn rules_read_back_as_specs() {
        let (_dir, conn) = temp_db("detect-rules");
        seed(&conn);
        let rules = rules(&conn).unwrap();
        assert_eq!(rules.len(), 2);
        let r = &rules[0];
        assert_eq!(r.spec.action, Action::Suppress);
        assert_eq!(r.spec.code, Some(Code::NoRdns));
        assert_eq!(r.spec.ports, Some((6881, 6889)));
        assert_eq!(r.spec.remote, Some("198.51.100.0/24".parse().unwrap()));
        assert_eq!(r.device.as_deref(), Some("tv"));
        assert_eq!(
            rules[1].spec.remote,
            Some("198.51.100.7/32".parse().unwrap())
        );
        assert_eq!(rules[1].device, None);
        assert!(rule(&conn, 3).unwrap().is_none());
    }
}
