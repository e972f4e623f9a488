//! The flow filter's query string (`/flows`, `/fragment/flows`, the CSV export, the
//! device and host pages' flow tables, `/api/flows`).

use super::{
    FilterError, QueryString, bad, given, parse_code, parse_domain, parse_id, parse_order,
    parse_page, parse_per_page, parse_score,
};
use crate::flow::{Direction, proto_from_name};
use crate::store::filter::{AddrMatch, DEFAULT_PER_PAGE, TimeBound};
use crate::store::flows::read::{
    ALL_DIRECTIONS, DEFAULT_DIRECTIONS, FlowColumn, FlowFilter, FlowSort, Show,
};
use crate::web::WebError;
use serde::Deserialize;

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
    /// Rows per page; `limit` is the name API clients reach for first (both at once is a
    /// repeated key: 400).
    #[serde(alias = "limit")]
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
    ///
    /// (Long: one parse per flow-filter parameter, each naming its key.)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Code;
    use crate::store::filter::Order;
    use crate::store::testdata::{flow_query as q, percent_decode};
    use crate::web::query::parse_utc;

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
            "2026-12-04+01:00",
            "2026-12-04 21:00+15:00",
            "2026-12-04 21:00+01:60",
            "2026-12-04 21:00Z+01:00",
            // Six bytes from the end is inside a character.
            "2026-12-04 2\u{67451}l=~",
        ] {
            assert!(TimeBound::parse("from", bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_utc("2024-02-29Z").map(|t| t.0),
            Some(1_709_164_800_000)
        );
        // A local time with its offset is the same instant, shown in UTC.
        for (local, utc) in [
            ("2026-12-04 22:00+01:00", "2026-12-04T21:00:00Z"),
            ("2026-12-04T16:30:05-04:30", "2026-12-04T21:00:05Z"),
            ("2026-12-05 00:30+05:30", "2026-12-04T19:00:00Z"),
            ("2026-12-04T21:00", "2026-12-04T21:00:00Z"),
        ] {
            assert_eq!(
                parse_utc(local).map(|t| t.1).as_deref(),
                Some(utc),
                "{local}"
            );
        }
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
    fn limit_is_per_page_and_both_at_once_is_refused() {
        let q = FlowQuery::from_query_string("limit=5").unwrap();
        assert_eq!(FlowFilter::parse(&q).unwrap().per_page, 5);
        assert!(FlowQuery::from_query_string("limit=5&per_page=7").is_err());
    }

    #[test]
    fn with_sort_flips_on_second_click() {
        let f = FlowFilter::default().with_page(4);
        let b = f.with_sort(FlowSort::Bytes);
        assert_eq!((b.sort, b.order, b.page), (FlowSort::Bytes, Order::Desc, 1));
        assert_eq!(b.with_sort(FlowSort::Bytes).order, Order::Asc);
        assert_eq!(f.with_sort(FlowSort::Dst).order, Order::Asc);
    }
}
