//! Everything a query string means: parsing the parameters pages and the JSON API take
//! into the typed, bounded filters the store reads ([`FlowFilter`], [`HostFilter`],
//! [`DnsFilter`]), and rendering a filter back into its canonical query string.
//!
//! Filters arrive as text ([`FlowQuery`], [`HostQuery`], [`DnsQuery`]); an invalid value
//! becomes a [`FilterError`] naming the parameter, never a query. The same filter
//! renders back to a canonical query string ([`FlowFilter::to_query`]), so every view is
//! a shareable link.

use std::net::IpAddr;

use serde::Deserialize;

use super::WebError;

use crate::detect::Code;
use crate::flow::{Direction, proto_from_name};
use crate::store::detect::read::{
    AckState, Destination, HitFilter, HitSort, IncidentFilter, IncidentSort, IncidentState,
};
use crate::store::dns::read::{DnsFilter, RcodeMatch};
use crate::store::filter::{
    AddrMatch, DEFAULT_PER_PAGE, MAX_PAGE, MAX_PER_PAGE, Order, TimeBound, Window,
};
use crate::store::flows::read::{
    ALL_DIRECTIONS, DEFAULT_DIRECTIONS, FlowColumn, FlowFilter, FlowSort, Show,
};
use crate::store::hosts::read::{DEFAULT_HOSTS_PER_PAGE, HostFilter, HostSort};

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

/// A flow query string that is not `key=value&…` text, or repeats a key other than
/// `cols`; the web layer answers it with a 400.
#[derive(Debug, thiserror::Error)]
pub enum QueryStringError {
    #[error("invalid query string: {0}")]
    Malformed(serde_urlencoded::de::Error),
    /// The pairs, re-encoded without `cols`, could not be written back as text.
    #[error("{0}")]
    Reencode(serde_urlencoded::ser::Error),
    /// A repeated key, or a value of the wrong shape for its field.
    #[error("Failed to deserialize query string: {0}")]
    Fields(serde_urlencoded::de::Error),
}

/// The flow filter of a request's query string (`cols=` may repeat: the form's column
/// checkboxes); a bad value is a 400 naming the parameter.
pub fn parse_flow_filter(raw: Option<String>) -> Result<FlowFilter, WebError> {
    let query = FlowQuery::from_query_string(raw.as_deref().unwrap_or(""))?;
    Ok(FlowFilter::parse(&query)?)
}

impl FlowQuery {
    /// Parses a raw query string. Like axum's `Query`, except that `cols` may repeat
    /// (a form's column checkboxes send one `cols=` each): its values are joined into
    /// the one comma list the canonical URL carries. Any other repeated key is an error.
    pub fn from_query_string(raw: &str) -> Result<FlowQuery, QueryStringError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(raw).map_err(QueryStringError::Malformed)?;
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
        let text = serde_urlencoded::to_string(&rest).map_err(QueryStringError::Reencode)?;
        let mut q: FlowQuery =
            serde_urlencoded::from_str(&text).map_err(QueryStringError::Fields)?;
        q.cols = cols;
        Ok(q)
    }
}

/// The column headings of the flows table.
impl FlowColumn {
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

/// The oldest age a bound may name: longer than any retention.
const MAX_AGE_DAYS: i64 = 3650;

/// `YYYY-MM-DD`, optionally `THH:MM` or `THH:MM:SS` (a space works for the `T`), with an
/// optional `Z`: always UTC. Returns unix ms and the canonical text.
/// Parsing of the time bound `from=`/`to=`.
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
}

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
    let ms = ((crate::time::days_from_civil(y, mo, da) * 24 + h) * 60 + mi) * 60_000 + se * 1000;
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
/// names are stored in ([`crate::dns::normalize_name`]: lowercase, `\DDD` escapes), so
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
    let canonical = crate::dns::normalize_name(text);
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
            min_score: parse_score(&q.min_score)?,
            code: parse_code(&q.code)?,
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

impl RcodeMatch {
    /// The query-string value: the code's name, or `none`.
    pub fn as_param(self) -> String {
        match self {
            RcodeMatch::Code(code) => crate::dns::rcode_name(code),
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
        .or_else(|| (0..=5).find(|&c| crate::dns::rcode_name(c) == upper))
        .filter(|c| *c <= MAX_RCODE)
        .map(RcodeMatch::Code)
        .ok_or_else(|| bad("rcode", text, EXPECTED))
}

fn parse_qtype(text: &str) -> Result<u16, FilterError> {
    text.parse::<u16>()
        .ok()
        .or_else(|| crate::dns::qtype_from_name(text))
        .ok_or_else(|| {
            bad(
                "type",
                text,
                "a query type such as A, AAAA, HTTPS, MX, TXT, or TYPEnnn",
            )
        })
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
            q.push("type", &crate::dns::qtype_name(t));
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
}

// ---------------------------------------------------------------------------------------
// Detection pages: hits (`/anomalies`) and incidents (`/incidents`)
// ---------------------------------------------------------------------------------------

impl Window {
    /// The window a URL or the remembering cookie names.
    pub fn parse(text: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.as_str() == text)
    }
}

fn parse_window(v: &Option<String>) -> Result<Window, FilterError> {
    given(v).map_or(Ok(Window::DEFAULT), |s| {
        Window::parse(s).ok_or_else(|| bad("window", s, "one of 10m, 1h, 24h, 7d, 30d"))
    })
}

pub(crate) fn parse_score(v: &Option<String>) -> Result<Option<u32>, FilterError> {
    given(v)
        .map(|s| {
            s.parse::<u32>()
                .ok()
                .filter(|n| *n <= 100)
                .ok_or_else(|| bad("min_score", s, "a score from 0 to 100"))
        })
        .transpose()
}

pub(crate) fn parse_code(v: &Option<String>) -> Result<Option<Code>, FilterError> {
    given(v)
        .map(|s| {
            Code::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
                bad(
                    "code",
                    s,
                    "a reason code such as PORT_SCAN_LIKE (see /help)",
                )
            })
        })
        .transpose()
}

fn parse_device(v: &Option<String>) -> Result<Option<i64>, FilterError> {
    given(v)
        .map(|s| {
            s.parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| bad("device", s, "a device id (a positive number)"))
        })
        .transpose()
}

fn parse_desc(v: &Option<String>) -> Result<bool, FilterError> {
    match given(v) {
        None | Some("desc") => Ok(true),
        Some("asc") => Ok(false),
        Some(s) => Err(bad("order", s, "asc or desc")),
    }
}

impl Destination {
    fn parse(text: &str) -> Result<Destination, FilterError> {
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(Destination::Ip(ip)),
            Err(_) => parse_domain("dst", text).map(Destination::Domain),
        }
    }

    fn as_param(&self) -> String {
        match self {
            Destination::Ip(ip) => ip.to_string(),
            Destination::Domain(d) => d.clone(),
        }
    }
}

/// `/anomalies` parameters as they arrive; empty values mean "not set".
#[derive(Debug, Clone, Default, Deserialize)]
pub struct HitQuery {
    pub window: Option<String>,
    pub min_score: Option<String>,
    pub code: Option<String>,
    pub device: Option<String>,
    /// `open` (not acknowledged), `acked`, or all.
    pub ack: Option<String>,
    /// A remote address, or a domain (subdomains match).
    pub dst: Option<String>,
    /// `time`, `score` or `count`.
    pub sort: Option<String>,
    pub order: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

impl HitFilter {
    pub fn parse(q: &HitQuery) -> Result<HitFilter, FilterError> {
        Ok(HitFilter {
            window: parse_window(&q.window)?,
            min_score: parse_score(&q.min_score)?,
            code: parse_code(&q.code)?,
            device_id: parse_device(&q.device)?,
            ack: match given(&q.ack) {
                None | Some("all") => AckState::All,
                Some("open") => AckState::Open,
                Some("acked") => AckState::Acked,
                Some(s) => return Err(bad("ack", s, "open, acked or all")),
            },
            dst: given(&q.dst).map(Destination::parse).transpose()?,
            sort: match given(&q.sort) {
                None => HitSort::Time,
                Some(s) => HitSort::ALL
                    .into_iter()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| bad("sort", s, "time, score or count"))?,
            },
            desc: parse_desc(&q.order)?,
            page: parse_page(&q.page)?,
            per_page: parse_per_page(&q.per_page, DEFAULT_PER_PAGE)?,
        })
    }

    /// Canonical query string without defaults: `parse(to_query(f)) == f`.
    pub fn to_query(&self) -> String {
        let mut q = QueryString::default();
        if self.window != Window::DEFAULT {
            q.push("window", self.window.as_str());
        }
        if let Some(s) = self.min_score {
            q.push("min_score", &s.to_string());
        }
        if let Some(c) = self.code {
            q.push("code", c.as_str());
        }
        if let Some(d) = self.device_id {
            q.push("device", &d.to_string());
        }
        if self.ack != AckState::All {
            q.push("ack", self.ack.as_str());
        }
        if let Some(d) = &self.dst {
            q.push("dst", &d.as_param());
        }
        if self.sort != HitSort::Time {
            q.push("sort", self.sort.as_str());
        }
        if !self.desc {
            q.push("order", "asc");
        }
        if self.page != 1 {
            q.push("page", &self.page.to_string());
        }
        if self.per_page != DEFAULT_PER_PAGE {
            q.push("per_page", &self.per_page.to_string());
        }
        q.0
    }

    pub fn with_page(&self, page: u32) -> HitFilter {
        HitFilter {
            page,
            ..self.clone()
        }
    }

    /// The same filter sorted by `sort` (descending, or flipped when it already is).
    pub fn sorted_by(&self, sort: HitSort) -> HitFilter {
        HitFilter {
            sort,
            desc: self.sort != sort || !self.desc,
            page: 1,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct IncidentQuery {
    pub window: Option<String>,
    /// `open` (default), `acked`, `muted` or `all`.
    pub state: Option<String>,
    pub code: Option<String>,
    pub device: Option<String>,
    pub min_score: Option<String>,
    /// `last` (default), `first`, `score` or `count`.
    pub sort: Option<String>,
    pub order: Option<String>,
    pub page: Option<String>,
    pub per_page: Option<String>,
}

impl IncidentFilter {
    pub fn parse(q: &IncidentQuery) -> Result<IncidentFilter, FilterError> {
        Ok(IncidentFilter {
            window: parse_window(&q.window)?,
            state: match given(&q.state) {
                None => IncidentState::Open,
                Some(s) => IncidentState::ALL
                    .into_iter()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| bad("state", s, "open, acked, muted or all"))?,
            },
            code: parse_code(&q.code)?,
            device_id: parse_device(&q.device)?,
            min_score: parse_score(&q.min_score)?,
            sort: match given(&q.sort) {
                None => IncidentSort::Last,
                Some(s) => IncidentSort::ALL
                    .into_iter()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| bad("sort", s, "last, first, score or count"))?,
            },
            desc: parse_desc(&q.order)?,
            page: parse_page(&q.page)?,
            per_page: parse_per_page(&q.per_page, DEFAULT_PER_PAGE)?,
        })
    }

    pub fn to_query(&self) -> String {
        let mut q = QueryString::default();
        if self.window != Window::DEFAULT {
            q.push("window", self.window.as_str());
        }
        if self.state != IncidentState::Open {
            q.push("state", self.state.as_str());
        }
        if let Some(c) = self.code {
            q.push("code", c.as_str());
        }
        if let Some(d) = self.device_id {
            q.push("device", &d.to_string());
        }
        if let Some(s) = self.min_score {
            q.push("min_score", &s.to_string());
        }
        if self.sort != IncidentSort::Last {
            q.push("sort", self.sort.as_str());
        }
        if !self.desc {
            q.push("order", "asc");
        }
        if self.page != 1 {
            q.push("page", &self.page.to_string());
        }
        if self.per_page != DEFAULT_PER_PAGE {
            q.push("per_page", &self.per_page.to_string());
        }
        q.0
    }

    pub fn with_page(&self, page: u32) -> IncidentFilter {
        IncidentFilter {
            page,
            ..self.clone()
        }
    }

    pub fn sorted_by(&self, sort: IncidentSort) -> IncidentFilter {
        IncidentFilter {
            sort,
            desc: self.sort != sort || !self.desc,
            page: 1,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdata::{dns_query as dq, flow_query as q};

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
    fn with_sort_flips_on_second_click() {
        let f = FlowFilter::default().with_page(4);
        let b = f.with_sort(FlowSort::Bytes);
        assert_eq!((b.sort, b.order, b.page), (FlowSort::Bytes, Order::Desc, 1));
        assert_eq!(b.with_sort(FlowSort::Bytes).order, Order::Asc);
        assert_eq!(f.with_sort(FlowSort::Dst).order, Order::Asc);
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

    #[test]
    fn filters_round_trip_and_name_bad_values() {
        let q = HitQuery {
            window: Some("1h".into()),
            code: Some("BEACON".into()),
            dst: Some("Example.COM".into()),
            sort: Some("score".into()),
            page: Some("2".into()),
            ..HitQuery::default()
        };
        let f = HitFilter::parse(&q).unwrap();
        let text = f.to_query();
        assert_eq!(
            text,
            "window=1h&code=BEACON&dst=example.com&sort=score&page=2"
        );
        let back: HitQuery = serde_urlencoded::from_str(&text).unwrap();
        assert_eq!(HitFilter::parse(&back).unwrap(), f);
        for (q, param) in [
            (
                HitQuery {
                    window: Some("2h".into()),
                    ..HitQuery::default()
                },
                "window",
            ),
            (
                HitQuery {
                    min_score: Some("101".into()),
                    ..HitQuery::default()
                },
                "min_score",
            ),
            (
                HitQuery {
                    code: Some("NOPE".into()),
                    ..HitQuery::default()
                },
                "code",
            ),
            (
                HitQuery {
                    ack: Some("x".into()),
                    ..HitQuery::default()
                },
                "ack",
            ),
            (
                HitQuery {
                    page: Some("0".into()),
                    ..HitQuery::default()
                },
                "page",
            ),
        ] {
            assert_eq!(HitFilter::parse(&q).unwrap_err().param, param);
        }
        let f = IncidentFilter::parse(&IncidentQuery {
            state: Some("all".into()),
            sort: Some("count".into()),
            order: Some("asc".into()),
            ..IncidentQuery::default()
        })
        .unwrap();
        assert_eq!(f.to_query(), "state=all&sort=count&order=asc");
        assert_eq!(
            IncidentFilter::parse(&IncidentQuery {
                state: Some("closed".into()),
                ..IncidentQuery::default()
            })
            .unwrap_err()
            .param,
            "state"
        );
    }
}
